"""Processes of the real daemons, seen from ``/proc`` without any privilege beyond root.

The runners of real Postfix and Dovecot (:mod:`labkit.real.postfix.runner`,
:mod:`labkit.real.dovecot.runner`) must find every process of their instance, wait for them to end,
and kill what a stop left behind. In a container, root lacks CAP_SYS_PTRACE, so it cannot read
``/proc/PID/environ`` or ``/proc/PID/fd`` of a daemon that became another user. What anyone may
read is enough:

* ``/proc/PID/stat``: the process name, its state (``Z`` for a zombie), its parent pid and its
  session (:func:`proc_stat`, :func:`process_table`, :func:`descendants`);
* ``/proc/PID/cmdline``: the command line, or the title a daemon gives itself (:func:`cmdline`,
  and :func:`live` for a runner's list of ``(pid, command line)``).

Then :func:`wait_gone` polls until a runner's own search finds nothing (optionally with
SIGKILL after a bound), and :func:`pid_alive` / :func:`send_signal` act on one pid.
:class:`DaemonRunner` is the little the runners share beyond that: ``running`` and ``with``.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import NamedTuple, Self

#: Seconds between two looks at /proc while waiting.
POLL = 0.01


class ProcStat(NamedTuple):
    """What ``/proc/PID/stat`` says about a process (fields 2 to 6 of proc(5))."""

    name: str  #: the command name (at most 15 characters), without its parentheses
    state: str  #: ``R``, ``S``, ``D``, ``Z`` (zombie: exited, not yet reaped)...
    ppid: int  #: the parent's pid
    session: int  #: the session id (the pid of the session's leader)

    @property
    def zombie(self) -> bool:
        return self.state == "Z"


def proc_stat(pid: int) -> ProcStat | None:
    """:class:`ProcStat` of a process, from ``/proc/PID/stat``; None when there is no such process.

    That file is readable by anyone (unlike ``environ`` or ``fd`` of another user's process).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the name is in parentheses and may itself hold spaces or parentheses: split at the last ')'
    name = text[text.find("(") + 1:text.rfind(")")]
    fields = text[text.rfind(")") + 2:].split()
    if len(fields) < 4:
        return None
    return ProcStat(name, fields[0], int(fields[1]), int(fields[3]))


def cmdline(pid: int) -> str:
    """The command line of a process, arguments joined by spaces ("" if it is gone or has none:
    a zombie, a kernel thread). A daemon that sets its process title shows that title."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def pids() -> list[int]:
    """Every pid in ``/proc`` at this moment (some may be gone by the time you look)."""
    return [int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()]


def process_table() -> dict[int, ProcStat]:
    """``pid -> ProcStat`` of every process (zombies included)."""
    table = {}
    for pid in pids():
        info = proc_stat(pid)
        if info is not None:
            table[pid] = info
    return table


def live(table: dict[int, ProcStat],
         keep: Callable[[int, ProcStat, str], bool] | None = None) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the processes in ``table``, by pid: zombies (they hold nothing)
    are left out, and so is any that ``keep(pid, stat, command line)`` refuses. A process
    without a command line is shown by its name."""
    found = []
    for pid in sorted(table):
        info = table[pid]
        if info.zombie:
            continue
        cmd = cmdline(pid)
        if keep is None or keep(pid, info, cmd):
            found.append((pid, cmd or info.name))
    return found


def descendants(table: dict[int, ProcStat], roots: Iterable[int]) -> set[int]:
    """``roots`` and every process below them in ``table`` (children, grandchildren...)."""
    ours = set(roots)
    while True:
        more = {p for p, info in table.items() if info.ppid in ours} - ours
        if not more:
            return ours
        ours |= more


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs: it exists and is not a zombie (exited, not yet reaped)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def send_signal(pid: int, sig: int) -> None:
    """``kill(pid, sig)``, quiet if the process has gone (or is not ours to signal)."""
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def describe(procs: Iterable[tuple[int, str]]) -> str:
    """``"PID CMD; PID CMD"``: processes as an error message names them."""
    return "; ".join(f"{pid} {cmd}" for pid, cmd in procs)


def wait_gone(find: Callable[[], list[tuple[int, str]]], timeout: float, *, kill: bool = False,
              kill_wait: float = 5.0, before_each: Callable[[], None] | None = None,
              began: float | None = None) -> list[tuple[int, str]]:
    """Look with ``find()`` every few milliseconds until it finds no process; return ``[]``.

    After ``timeout`` seconds (counted from ``began``, a ``time.monotonic()``, or from now) what
    ``find()`` still lists is returned, or, with ``kill=True``, sent SIGKILL and given
    ``kill_wait`` more seconds first. ``before_each()`` runs before every look (to reap a child).
    """
    deadline = (time.monotonic() if began is None else began) + timeout
    killed = False
    while True:
        if before_each is not None:
            before_each()
        left = find()
        if not left:
            return []
        now = time.monotonic()
        if now >= deadline:
            if not kill or killed:
                return left
            for pid, _cmd in left:
                send_signal(pid, signal.SIGKILL)
            killed = True
            deadline = now + kill_wait
        time.sleep(POLL)


class DaemonRunner:
    """What the runners of the real daemons have in common, whatever the daemon.

    A subclass has ``master_pid()`` (None when the daemon is not running), ``start()`` (which
    returns the runner) and ``stop()`` (safe to call twice, and after a failed start). Then
    ``running`` says whether the master is alive, and ``with runner:`` starts it and stops it
    at the end, also when the start fails half-way (what it had started is stopped).
    """

    def master_pid(self) -> int | None:  # pragma: no cover - subclasses
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.master_pid() is not None

    @staticmethod
    def _read_log(path: Path | None) -> str:
        """The text of a log file ("" when there is none, or none yet)."""
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")

    def __enter__(self) -> Self:
        try:
            return self.start()  # type: ignore[attr-defined]
        except BaseException:
            self.stop()  # type: ignore[attr-defined]
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()  # type: ignore[attr-defined]
