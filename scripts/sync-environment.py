#!/usr/bin/env python3
"""Write environment.yml's pip section from requirements.lock (run by `make lock`).

conda cannot install a hash-checked lock together with the project itself (pip refuses an
editable install in hash-checking mode), so environment.yml carries the lock's pins and
markers without the hashes, then `-e .`. tests/test_packaging.py checks that the two agree.

Usage: python3 scripts/sync-environment.py [--check]
  --check   exit 1 (saying which pins differ) instead of rewriting environment.yml
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
ENV = ROOT / "environment.yml"

HEADER = """\
# conda environment for Mail Lab (conda, mamba or micromamba):
#   conda env create -f environment.yml && conda activate mail-lab
# Python comes from conda-forge; every Python package comes from the package index through pip,
# at exactly the versions of requirements.lock (markers kept: one file for Python 3.10+ on
# every platform). `make lock` rewrites the pip section from the lock; do not edit it by hand.
# The hashes stay in requirements.lock: pip refuses an editable install in hash-checking mode.
# tests/test_packaging.py installs this pip section into a fresh venv (no conda client there).
name: mail-lab
channels:
  - conda-forge
dependencies:
  - python>=3.10
  - pip
  - pip:
"""


def locked_pins(text: str) -> list[str]:
    """The requirement lines of a uv/pip-tools lock, without hashes or comments."""
    pins = []
    for line in text.splitlines():
        if not line or line[0] in " #-":
            continue
        pins.append(line.rstrip(" \\").strip())
    return pins


def environment_pins(text: str) -> list[str]:
    """The pip section's requirement lines of environment.yml (the project itself left out)."""
    section = text[text.index("  - pip:\n"):]
    pins = []
    for line in section.splitlines()[1:]:
        m = re.match(r'^      - (?:"(.*)"|(\S.*))$', line)
        if m:
            pins.append(m.group(1) or m.group(2))
    return [p for p in pins if p != "-e ."]


def render(pins: list[str]) -> str:
    lines = [f'      - "{p}"' for p in pins]
    return HEADER + "\n".join(lines + ["      - -e ."]) + "\n"


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    pins = locked_pins(LOCK.read_text())
    if argv and argv[0] == "--check":
        have = environment_pins(ENV.read_text())
        if have != pins:
            diff = sorted(set(have) ^ set(pins))
            print(f"environment.yml and requirements.lock differ: {diff[:5]} ... run: make lock",
                  file=sys.stderr)
            return 1
        return 0
    ENV.write_text(render(pins))
    print(f"environment.yml: {len(pins)} pins from requirements.lock")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
