"""labkit.real.procs: processes seen from /proc/PID/stat and cmdline, waiting for them to end, SIGKILL
after a bound; all of it without reading another process's environ or fd (no ptrace rights)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import deny_ptrace_reads

from labkit.real.procs import (
    ProcStat,
    cmdline,
    descendants,
    describe,
    pid_alive,
    pids,
    proc_stat,
    process_table,
    send_signal,
    wait_gone,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")


@pytest.fixture
def spawn():
    """Start a child process (killed and reaped at the end of the test, whatever happens)."""
    started: list[subprocess.Popen] = []

    def start(*argv: str, **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.DEVNULL)
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, **kw)
        started.append(proc)
        return proc
    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def _until(check, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_proc_stat_of_this_process():
    info = proc_stat(os.getpid())
    assert isinstance(info, ProcStat)
    assert info.ppid == os.getppid() and info.session == os.getsid(0)
    assert info.name == Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert not info.zombie and info.state in "RSD"
    assert os.getpid() in pids() and process_table()[os.getpid()] == info


def test_a_name_with_parentheses_and_spaces_is_read_whole(spawn):
    # a process may name itself anything (prctl PR_SET_NAME), ")" and spaces included
    child = spawn(sys.executable, "-c", "import ctypes, time; ctypes.CDLL(None).prctl(15, b'a) (b c', 0, 0, 0); "
                  "print(flush=True); time.sleep(30)", stdout=subprocess.PIPE)
    child.stdout.readline()
    child.stdout.close()
    info = proc_stat(child.pid)
    assert info is not None and info.name == "a) (b c" and info.ppid == os.getpid()
    assert cmdline(child.pid).startswith(f"{sys.executable} -c import ctypes")


def test_a_process_that_is_gone():
    proc = subprocess.Popen(["true"])
    proc.wait(5)
    assert proc_stat(proc.pid) is None and cmdline(proc.pid) == "" and not pid_alive(proc.pid)
    send_signal(proc.pid, signal.SIGTERM)  # quiet
    assert not pid_alive(0) and not pid_alive(-1)
    assert pid_alive(os.getpid()) and pid_alive(1)


def test_a_zombie_is_not_alive(spawn):
    child = spawn("true")
    _until(lambda: (proc_stat(child.pid) or ProcStat("", "Z", 0, 0)).zombie)  # exited, not reaped
    assert proc_stat(child.pid).zombie and not pid_alive(child.pid)
    assert cmdline(child.pid) == ""
    child.wait(5)


def test_descendants_and_sessions(spawn):
    shell = spawn("sh", "-c", "sleep 30 & sleep 31 & wait", start_new_session=True)

    def found() -> set[int]:
        return descendants(process_table(), [shell.pid]) - {shell.pid}
    _until(lambda: len(found()) == 2)
    table = process_table()
    kids = found()
    assert {cmdline(p) for p in kids} == {"sleep 30", "sleep 31"}
    assert {p for p, info in table.items() if info.session == shell.pid} == kids | {shell.pid}
    assert descendants(table, []) == set()
    for pid in kids:
        send_signal(pid, signal.SIGKILL)


def test_wait_gone_returns_what_is_left_or_kills_it(spawn):
    child = spawn(sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                  "print(flush=True); time.sleep(30)", stdout=subprocess.PIPE)
    child.stdout.readline()  # SIGTERM is ignored from here on
    child.stdout.close()

    def find() -> list[tuple[int, str]]:
        return [(child.pid, cmdline(child.pid))] if child.poll() is None else []
    send_signal(child.pid, signal.SIGTERM)
    began = time.monotonic()
    left = wait_gone(find, 0.2)
    assert time.monotonic() - began >= 0.2 and [pid for pid, _ in left] == [child.pid]
    assert describe(left) == f"{child.pid} {left[0][1]}" and "time.sleep(30)" in left[0][1]
    reaped = []
    assert wait_gone(find, 0.1, kill=True, before_each=lambda: reaped.append(1), began=began) == []
    assert child.returncode == -signal.SIGKILL and reaped
    assert wait_gone(find, 5) == []  # nothing to wait for: at once


def test_nothing_needs_ptrace_rights(spawn, monkeypatch):
    """As in the docker image (no CAP_SYS_PTRACE): no environ, no fd, and all still works."""
    child = spawn("sleep", "30")
    deny_ptrace_reads(monkeypatch)
    with pytest.raises(PermissionError):
        open(f"/proc/{child.pid}/environ", "rb")  # noqa: SIM115 - the guard is on
    assert process_table()[child.pid].ppid == os.getpid()
    assert cmdline(child.pid) == "sleep 30" and pid_alive(child.pid)
    assert descendants(process_table(), [os.getpid()]) >= {child.pid}


def test_registry_finds_a_daemons_session_and_never_a_reused_pid(tmp_path):
    import subprocess

    from labkit.real.procs import DaemonRecord, Registry, start_time

    reg = Registry(tmp_path / "run")
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & sleep 30"], start_new_session=True)
    try:
        rec = reg.record("demo", proc.pid, f"kill {proc.pid}")
        assert rec is not None and rec.start_time == start_time(proc.pid)
        deadline = time.monotonic() + 5
        while len(rec.processes()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(rec.processes()) == 3  # the shell and both sleeps: one session
        assert reg.status()["demo"]["running"] is True
        # the same pid with another start time is another program: nothing of ours
        assert DaemonRecord("demo", proc.pid, rec.start_time + 1, "", "").processes() == []
        stopped = reg.stop_all(timeout=2)
        assert {pid for pid, _ in stopped} >= {proc.pid}
        proc.wait(5)
        assert reg.records() == [] and reg.leftovers() == []
        assert rec.processes() == []
    finally:
        proc.kill()
        proc.wait()
