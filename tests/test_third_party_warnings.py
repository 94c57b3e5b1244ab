"""A third-party deprecation in code labkit does not call never reaches a reader.

cryptography 51 deprecates DSA; dnspython's DNSSEC module touches its DSA classes when it is
imported, and checkdmarc imports that module. labkit imports checkdmarc in one place
(``labkit.core.auth.results.import_checkdmarc``) and silences exactly that warning there, by message
and module. These tests hold with whatever versions are installed (the lock, or the newest
releases in ``make test-latest``): the notebook, the lab's replies and its log stay clean, and
labkit's own warnings still fail the suite.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import processes_mentioning

ROOT = Path(__file__).resolve().parent.parent
WARNING_TEXT = re.compile(r"\w*Warning\b|DSA is deprecated")


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NO_COLOR": "1"})


def test_checkdmarc_imports_cleanly_under_warnings_as_errors():
    done = _run("-W", "error", "-c",
                "from labkit.core.auth import dmarc, spf; print(dmarc.organizational_domain('mail.example.com'))")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "example.com"
    assert not WARNING_TEXT.search(done.stderr), done.stderr


def test_the_filter_is_narrow():
    from labkit.core.auth.results import IMPORT_WARNINGS_NOT_OURS

    for message, module in IMPORT_WARNINGS_NOT_OURS:
        assert not re.match(module, "labkit.core.auth.results"), "never silence labkit's own modules"
        assert message != ".*" and module != ".*"
    # the same message raised by labkit itself is not silenced
    done = _run("-W", "error", "-c",
                "import warnings; from labkit.core.auth.results import import_checkdmarc; "
                "import_checkdmarc('checkdmarc.utils'); warnings.warn('DSA is deprecated', UserWarning)")
    assert done.returncode != 0 and "UserWarning: DSA is deprecated" in done.stderr


def test_the_lab_daemon_log_carries_no_warning(tmp_path):
    lab = tmp_path / "lab"
    up = _run("-m", "labkit", "up", "--dir", str(lab), "--json")
    assert up.returncode == 0, up.stderr
    try:
        sent = _run("-m", "labkit", "send", "--dir", str(lab), "--from", "alice@isp.example.net",
                    "--to", "bob@inbox.example.org", "--via", "smarthost", "--subject", "warnings check")
        assert sent.returncode == 0, sent.stderr
        assert "451" not in sent.stdout
        box = _run("-m", "labkit", "mailbox", "--dir", str(lab), "--json", "--wait", "10",
                   "bob@inbox.example.org")
        if box.returncode != 0 and "--wait" in box.stderr:  # no --wait option: look until it is there
            for _ in range(100):
                box = _run("-m", "labkit", "mailbox", "--dir", str(lab), "--json", "bob@inbox.example.org")
                if "warnings check" in box.stdout:
                    break
        assert "warnings check" in box.stdout, box.stdout + box.stderr
        # the provider checked DMARC (checkdmarc loaded inside the lab process)
        messages = json.loads(box.stdout)["messages"]
        raw = [Path(m["path"]).read_text(errors="replace") for m in messages]
        assert any(re.search(r"Authentication-Results:.*dmarc=", r, re.DOTALL) for r in raw), raw
    finally:
        down = _run("-m", "labkit", "down", "--dir", str(lab))
    assert down.returncode == 0, down.stderr
    assert not processes_mentioning(str(lab))
    logs = list((lab / "log").glob("*.log"))
    assert logs, "the lab wrote no log"
    for log in logs:
        text = log.read_text(errors="replace")
        assert not WARNING_TEXT.search(text), f"{log.name}: {WARNING_TEXT.search(text).group(0)}"


def test_chapter_00_outputs_carry_no_warning(tmp_path):
    nb = nbformat.read(ROOT / "notebooks" / "00_welcome.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = out.get("text", "")
            elif out.get("output_type") == "error":
                text = f"{out.get('ename')}: {out.get('evalue')}"
            else:
                text = "\n".join(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
            assert out.get("name") != "stderr" or not text.strip(), f"cell {i} wrote to stderr: {text[:500]}"
            found = WARNING_TEXT.search(text)
            assert not found, f"cell {i} shows {found.group(0)!r}: {text[:500]}"
