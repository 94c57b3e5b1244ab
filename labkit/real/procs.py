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

import json
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


# --------------------------------------------------------------------------------------------
# The sandbox's register of daemons: what `labkit down` stops whatever became of the lab process


def start_time(pid: int) -> int | None:
    """When a process started, in clock ticks since boot (field 22 of ``/proc/PID/stat``).

    With the pid it names one process for good: a pid given to another program later comes with
    another start time. None when there is no such process.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text[text.rfind(")") + 2:].split()
    try:
        return int(fields[19])  # field 22 counted from 1, the first two (pid, name) cut off
    except (IndexError, ValueError):
        return None


class DaemonRecord(NamedTuple):
    """One daemon as the register keeps it: enough to find and stop it from another process."""

    name: str  #: postfix, dovecot, opendkim
    pid: int  #: the daemon's leader: it leads a session of its own, which its children share
    start_time: int  #: field 22 of /proc/PID/stat when it was recorded
    command: str  #: its command line then
    stop: str  #: the command a person would type to stop it

    def alive(self) -> bool:
        """Whether the recorded process itself still runs (same pid, same start time, no zombie)."""
        return start_time(self.pid) == self.start_time and pid_alive(self.pid)

    def processes(self, table: dict[int, ProcStat] | None = None) -> list[tuple[int, str]]:
        """``(pid, command line)`` of every live process of this daemon: the leader if it is still
        the recorded one, every member of its session and their descendants.

        A session's number is the leader's pid, and Linux gives no new process a pid still used as
        a session (or group) id: while any member lives, the number is still ours. If the pid is
        held by a process with another start time, the session ended long ago and nothing is ours.
        """
        table = process_table() if table is None else table
        if self.pid in table and start_time(self.pid) != self.start_time:
            return []
        members = {p for p, info in table.items() if p == self.pid or info.session == self.pid}
        ours = descendants(table, members)
        return live({p: table[p] for p in ours if p in table})


class Registry:
    """``SANDBOX/run/daemons.json``: every real daemon the lab started, recorded the moment it starts.

    ``labkit down`` reads it to stop the daemons even when the lab process was killed (``kill -9``)
    or is stopped (``kill -STOP``); ``labkit up`` and ``Lab.start()`` read it to find what an
    earlier run left. A daemon stopped cleanly is forgotten.
    """

    FILE = "daemons.json"

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / self.FILE

    def __repr__(self) -> str:
        return f"Registry({str(self.folder)!r})"

    def records(self) -> list[DaemonRecord]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            return []
        out = []
        for item in data if isinstance(data, list) else []:
            try:
                out.append(DaemonRecord(str(item["name"]), int(item["pid"]), int(item["start_time"]),
                                        str(item.get("command", "")), str(item.get("stop", ""))))
            except (KeyError, TypeError, ValueError):
                continue
        return out

    def _write(self, records: list[DaemonRecord]) -> None:
        from ..files import write_atomic

        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps([r._asdict() for r in records], indent=2) + "\n")

    def record(self, name: str, pid: int, stop: str) -> DaemonRecord | None:
        """Note ``pid`` as the daemon ``name`` (replacing an earlier record of that name)."""
        began = start_time(pid)
        if began is None:
            return None  # it is gone already: nothing to stop later
        rec = DaemonRecord(name, pid, began, cmdline(pid) or name, stop)
        self._write([r for r in self.records() if r.name != name] + [rec])
        return rec

    def forget(self, name: str) -> None:
        left = [r for r in self.records() if r.name != name]
        if left:
            self._write(left)
        else:
            self.path.unlink(missing_ok=True)

    def leftovers(self) -> list[tuple[DaemonRecord, list[tuple[int, str]]]]:
        """Each recorded daemon that still has a live process, with those processes."""
        table = process_table()
        found = []
        for rec in self.records():
            procs = rec.processes(table)
            if procs:
                found.append((rec, procs))
        return found

    def status(self) -> dict[str, dict[str, object]]:
        """``name -> {"pid", "running", "processes"}``: what ``labkit status`` shows of each daemon."""
        table = process_table()
        out: dict[str, dict[str, object]] = {}
        for rec in self.records():
            info = table.get(rec.pid)
            running = info is not None and not info.zombie and start_time(rec.pid) == rec.start_time
            out[rec.name] = {"pid": rec.pid, "running": running, "processes": len(rec.processes(table))}
        return out

    def stop_all(self, timeout: float = 5.0) -> list[tuple[int, str]]:
        """Stop every process of every recorded daemon (SIGTERM, SIGKILL after ``timeout``);
        return those that were running. Raises :class:`LabStateError` naming any left."""
        from ..errors import LabStateError

        stopped: list[tuple[int, str]] = []
        records = self.records()
        for rec in records:
            procs = rec.processes()
            stopped += procs
            for pid, _cmd in procs:
                send_signal(pid, signal.SIGTERM)
                send_signal(pid, signal.SIGCONT)  # a stopped process handles SIGTERM only once continued

        def find() -> list[tuple[int, str]]:
            table = process_table()
            return [p for rec in records for p in rec.processes(table)]

        left = wait_gone(find, timeout, kill=True, kill_wait=5)
        if left:
            raise LabStateError(f"processes of {self.folder.parent} are still there after SIGKILL: {describe(left)}")
        for rec in records:
            self.forget(rec.name)
        return stopped
