"""Project-wide pytest hooks (tests/ and the notebooks that nbval runs).

A chapter that needs real daemons says so in its notebook metadata:
``"labkit": {"requires": ["postfix"]}``. Where they cannot run (no root, not installed), its
cells skip with one line saying why; under ``LABKIT_REQUIRE_REAL=1`` (CI) they run anyway and
fail loudly instead.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

_TOOLS = {"postfix": ("postfix", "postconf", "postmap"), "opendkim": ("opendkim",), "dovecot": ("dovecot",)}


def _missing(requires: list[str]) -> str | None:
    for need in requires:
        for tool in _TOOLS.get(need, (need,)):
            if not (shutil.which(tool) or os.path.exists(f"/usr/sbin/{tool}")):
                return f"{tool} is not installed (run: sudo scripts/install-system-packages.sh)"
    if requires and os.geteuid() != 0:
        return "real daemons run from the sandbox as root"
    return None


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LABKIT_REQUIRE_REAL") == "1":
        return
    reasons: dict[Path, str | None] = {}
    for item in items:
        path = Path(str(item.fspath))
        if path.suffix != ".ipynb":
            continue
        if path not in reasons:
            meta = json.loads(path.read_text(encoding="utf-8")).get("metadata", {})
            reasons[path] = _missing(list(meta.get("labkit", {}).get("requires", [])))
        if reasons[path]:
            item.add_marker(pytest.mark.skip(reason=f"{path.name} needs real daemons: {reasons[path]}"))
