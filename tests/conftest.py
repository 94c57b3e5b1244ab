"""Shared test helpers.

Real tools and daemons (dig, swaks, openssl, postfix...) come from
``scripts/install-system-packages.sh``. Where one is missing a test skips with a one-line
reason, except when ``LABKIT_REQUIRE_REAL=1`` (as in CI), where it fails instead.
"""
from __future__ import annotations

import builtins
import os
import re
import shutil
import threading
import time

import pytest

REQUIRE_REAL = os.environ.get("LABKIT_REQUIRE_REAL") == "1"


def require_tool(name: str) -> str:
    """Path of the command ``name``; skip (or fail under LABKIT_REQUIRE_REAL=1) if missing."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path:
        return path
    msg = f"{name} is not installed (run: sudo scripts/install-system-packages.sh)"
    if REQUIRE_REAL:
        pytest.fail(msg + " and LABKIT_REQUIRE_REAL=1 forbids skipping", pytrace=False)
    pytest.skip(msg)


def require_real_postfix() -> None:
    """Skip (or fail under LABKIT_REQUIRE_REAL=1) unless real Postfix can run here: root and installed."""
    for tool in ("postfix", "postconf", "postmap", "postqueue", "sendmail"):
        require_tool(tool)
    if os.geteuid() != 0:
        msg = "real Postfix runs from the sandbox as root, and this test runs as another user"
        if REQUIRE_REAL:
            pytest.fail(msg + " while LABKIT_REQUIRE_REAL=1 forbids skipping", pytrace=False)
        pytest.skip(msg)


def _pids() -> list[int]:
    from pathlib import Path

    return [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()]


def processes_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (a lab folder, a config file)."""
    found = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def real_lab(**options):
    """A started real-mode Lab (``Lab(real=True, **options)``) for a module fixture: yields it,
    stops it, and proves that no Postfix, OpenDKIM or other process of its sandbox is left."""
    from labkit import Lab

    require_real_postfix()
    lab = Lab(real=True, **options)
    try:
        lab.start()
        yield lab
    finally:
        config_dir = lab.postfix_config.config_directory if lab.postfix_config else None
        dkim_conf = lab.opendkim_config.conf_path if lab.opendkim_config else None
        folder = lab.dir
        lab.stop()
        if config_dir:
            assert not postfix_processes(config_dir), "a Postfix process outlived lab.stop()"
        if dkim_conf:
            assert not processes_mentioning(dkim_conf), "an OpenDKIM process outlived lab.stop()"
        if folder:
            assert not processes_mentioning(str(folder)), "a process of the lab outlived lab.stop()"


def postfix_processes(config_dir: str) -> list[int]:
    """Processes of the Postfix run from ``config_dir``: they carry MAIL_CONFIG=DIR in their
    environment (readable here: the tests run as root on the host)."""
    needle = f"MAIL_CONFIG={config_dir}".encode()
    found = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            pass
    return found


_PTRACE_ONLY = re.compile(r"/proc/\d+/(environ|fd)(/|$)")


def deny_ptrace_reads(monkeypatch) -> None:
    """Make this process as blind as a container's root without CAP_SYS_PTRACE.

    There, ``/proc/PID/environ`` and ``/proc/PID/fd`` of a daemon that became another user
    cannot be read; here every such read raises PermissionError, so a runner that needed them
    would fail on this host too.
    """
    def guard(real):
        def call(path, *args, **kw):
            if isinstance(path, (str, bytes, os.PathLike)) and _PTRACE_ONLY.match(os.fsdecode(path)):
                raise PermissionError(13, "Permission denied (no CAP_SYS_PTRACE)", os.fsdecode(path))
            return real(path, *args, **kw)
        return call
    for module, name in ((builtins, "open"), (os, "scandir"), (os, "readlink"), (os, "listdir")):
        monkeypatch.setattr(module, name, guard(getattr(module, name)))


def assert_no_threads_left(before: set[threading.Thread], settle: float = 0.05) -> None:
    """Fail if a thread started since ``before`` (``set(threading.enumerate())``) still runs,
    ``settle`` seconds from now: whatever a test started, it must also have stopped."""
    time.sleep(settle)
    left = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert not left, f"threads left running: {left}"


# -- the book: built in the background while the other tests run -----------------------------

BOOK_TEST = "tests/test_book.py::test_every_page_in_chromium"
_book_build: dict = {}


def pytest_collection_modifyitems(session, config, items):
    """When the book's browser test is collected, run it last and start building the book now,
    in the background at a lower priority (book/build.py executes every chapter): most of the
    suite waits on sockets, so the build costs the run little. The test's fixture waits for it."""
    late = [i for i in items if i.nodeid.endswith(BOOK_TEST)]
    if not late or config.option.collectonly or os.environ.get("PYTEST_XDIST_WORKER"):
        return  # with parallel workers the test builds the book itself, while the others go on
    items[:] = [i for i in items if i not in late] + late
    if len(items) > len(late):   # anything else to overlap with
        start_book_build()


def start_book_build() -> None:
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if "proc" in _book_build or not (root / "node_modules" / "mermaid").exists():
        return
    log = (root / "book" / "_build")
    log.mkdir(parents=True, exist_ok=True)
    out = open(log / "background-build.log", "wb")
    _book_build["proc"] = subprocess.Popen([sys.executable, str(root / "book" / "build.py")], cwd=root,
                                           stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                           preexec_fn=lambda: os.nice(10))
    _book_build["log"] = log / "background-build.log"
    _book_build["out"] = out


def book_build_result(timeout: float) -> tuple[int, str] | None:
    """(exit status, output) of the background build, waiting for it; None if none was started."""
    proc = _book_build.get("proc")
    if proc is None:
        return None
    try:
        rc = proc.wait(timeout)
    except Exception:
        proc.kill()
        proc.wait()
        raise
    finally:
        _book_build["out"].close()
    return rc, _book_build["log"].read_text(errors="replace")
