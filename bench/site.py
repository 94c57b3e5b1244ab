"""Benchmarks of the path from the lab to your host: `labkit bundle` and `labkit doctor --lab`.

    .venv/bin/python bench/site.py [--runs N] [--real]

Prints medians of:
  labkit bundle --site examples/mail-site.toml --out DIR   (the command's wall time, and the write alone)
  labkit doctor --lab DIR                                  (the command's wall time, and the checks alone)
against a rehearsal started with `labkit up --site` (embedded mode; --real: real Postfix and OpenDKIM,
as root). Targets on a 2-core machine: bundle <= 1 s, doctor --lab <= 2 s (wall, Python start included).
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labkit.lab.site import EXAMPLE, bundle, doctor, load
from labkit.lab.state import running_state

LABKIT = [sys.executable, "-m", "labkit"]


def median_ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:8.1f} ms  (min {min(xs) * 1000:.1f}, max {max(xs) * 1000:.1f}, n={len(xs)})"


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    took = time.perf_counter() - t
    if proc.returncode not in (0,):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout[-400:]}")
    return took


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--real", action="store_true", help="rehearse with real Postfix and OpenDKIM (root)")
    a = ap.parse_args()
    profile = load(EXAMPLE)
    work = Path(tempfile.mkdtemp(prefix="bench-site-"))
    wall, alone = [], []
    for i in range(a.runs):
        wall.append(timed([*LABKIT, "bundle", "--site", str(EXAMPLE), "--out", str(work / f"cli-{i}")]))
        t = time.perf_counter()
        bundle.write(profile, work / f"py-{i}")
        alone.append(time.perf_counter() - t)
    print(f"labkit bundle (command)        {median_ms(wall)}")
    print(f"bundle.write (in process)      {median_ms(alone)}")
    lab_dir = (Path("/var/lib/mail-lab") / f"bench-site-{os.getpid()}") if a.real else work / "lab"
    up = subprocess.run([*LABKIT, "up", "--site", str(EXAMPLE), "--dir", str(lab_dir)] + (["--real"] if a.real else []),
                        capture_output=True, text=True)
    if up.returncode:
        raise SystemExit(f"labkit up --site: {up.stderr.strip()}")
    try:
        wall, alone = [], []
        st, _ = running_state(lab_dir)
        for _ in range(a.runs):
            wall.append(timed([*LABKIT, "doctor", "--lab", str(lab_dir)]))
            t = time.perf_counter()
            findings = doctor.examine_lab(st)
            alone.append(time.perf_counter() - t)
        print(f"labkit doctor --lab (command)  {median_ms(wall)}   [{len(findings)} checks, "
              f"{'real' if a.real else 'embedded'} mode]")
        print(f"doctor.examine_lab (in process){median_ms(alone)}")
    finally:
        subprocess.run([*LABKIT, "down", "--dir", str(lab_dir)], capture_output=True)
        shutil.rmtree(lab_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
