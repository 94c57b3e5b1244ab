"""What happened in the lab, as structured events: one JSON object a line in the sandbox.

Servers emit events (connect, tls, auth, accepted, relayed, deferred, bounced, delivered...);
notebooks and tests read them back to prove what happened rather than trusting prose. Events
never hold a password: the AUTH mechanism and user name are recorded, never the secret.

A lab that runs all afternoon emits hundreds of thousands of events, so the log keeps only the
latest :attr:`EventLog.WINDOW` in memory and the whole history in its file
(``SANDBOX/log/events.jsonl``): iterating, :meth:`EventLog.select` and :meth:`EventLog.wait_for`
read the older ones back from the file as they go, so memory stays flat however long the lab
runs. Events read back from the file carry their details as JSON gave them (a tuple comes back
as a list, a path as a string). Writes are batched: the events emitted while the lab's event
loop handles one thing (a connection, a command) go to the file in one write when it is done;
an event emitted outside an event loop is written at once, and reading the log writes what is
pending first, so the file is never behind what a reader can see.
"""
from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator


@dataclass(frozen=True)
class Event:
    time: float
    host: str  #: FQDN of the lab host
    role: str  #: the service role (``smarthost``, ``inbox``...)
    kind: str  #: ``connect``, ``tls``, ``auth``, ``accepted``, ``rejected``, ``relayed``, ...
    details: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.details[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.details.get(key, default)

    def to_json(self) -> str:
        """One line of the event log (without its line end)."""
        return json.dumps({"time": self.time, "host": self.host, "role": self.role, "kind": self.kind,
                           "details": self.details}, default=str)

    @classmethod
    def from_json(cls, line: str | bytes) -> "Event":
        d = json.loads(line)
        return cls(d["time"], d["host"], d["role"], d["kind"], d.get("details", {}))


def _matches(e: Event, kind: str | None, role: str | None, match: dict[str, Any]) -> bool:
    return (kind is None or e.kind == kind) and (role is None or e.role == role) \
        and all(e.details.get(k) == v for k, v in match.items())


class EventLog:
    """The lab's events: emit them, iterate over them, select and wait for them.

    ``path``: the file that holds the whole history (appended to: a kept sandbox keeps the
    events of its earlier runs, which this log does not count as its own). Without a path,
    every event stays in memory.
    """

    #: how many of the latest events are kept in memory
    WINDOW = 2000
    #: at most this many events wait for one write
    BATCH = 512

    def __init__(self, path: str | Path | None = None, *, window: int | None = None):
        self.path = Path(path) if path else None
        self._recent: deque[Event] = deque(maxlen=(window or self.WINDOW) if self.path else None)
        self._count = 0  #: events emitted so far
        self._pending: list[Event] = []  #: emitted, not yet written
        self._flush_scheduled: set[asyncio.AbstractEventLoop] = set()
        self._fd: int | None = None
        self._start = 0  #: where this log's events begin in the file
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        if self.path is not None:
            self._open()

    def _open(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._start = os.fstat(self._fd).st_size

    # -- writing ----------------------------------------------------------------------------

    def emit(self, host: str, role: str, kind: str, **details: Any) -> Event:
        ev = Event(time.time(), host, role, kind, details)
        with self._cond:
            self._recent.append(ev)
            self._count += 1
            if self.path is not None:
                self._pending.append(ev)
                if len(self._pending) >= self.BATCH or not self._schedule_flush():
                    self._write_pending()
            self._cond.notify_all()
        return ev

    def _schedule_flush(self) -> bool:
        """Write the pending events once the running event loop is done with what it does now;
        False when there is no running loop (then the caller writes at once). Each loop that
        emits gets its own call (a notebook's cells run inside the kernel's loop, which would
        otherwise hold the lab loop's events until the cell ends)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if loop not in self._flush_scheduled:
            try:
                loop.call_soon(self._flush_for, loop)
            except RuntimeError:  # the loop is closing
                return False
            self._flush_scheduled.add(loop)
        return True

    def _flush_for(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._flush_scheduled.discard(loop)
            self._write_pending()

    def _write_pending(self) -> None:
        if not self._pending:
            return
        data = "".join(e.to_json() + "\n" for e in self._pending).encode("utf-8")
        self._pending = []
        if self._fd is None:
            self._open()
        assert self._fd is not None
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]

    def flush(self) -> None:
        """Write the events still waiting for their batch."""
        with self._lock:
            self._write_pending()

    def close(self) -> None:
        """Write what is pending and close the file (a later event opens it again)."""
        with self._lock:
            self._write_pending()
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def _snapshot(self, start: int = 0) -> tuple[int, list[Event], int]:
        """(count, the events numbered from ``max(start, first in memory)``, first in memory)."""
        with self._lock:
            self._write_pending()
            first = self._count - len(self._recent)
            skip = max(0, start - first)
            recent = list(self._recent)[skip:] if skip else list(self._recent)
            return self._count, recent, first

    def _from_file(self, start: int, stop: int) -> Iterator[Event]:
        """The events numbered ``start`` to ``stop - 1``, read back from the file."""
        if start >= stop or self.path is None:
            return
        with open(self.path, "rb") as f:
            f.seek(self._start)
            for i, line in enumerate(f):
                if i >= stop:
                    return
                if i >= start:
                    yield Event.from_json(line)

    def since(self, start: int) -> Iterator[Event]:
        """The events numbered ``start`` and later (``start = len(log)`` taken earlier gives
        what happened since then), oldest first."""
        count, recent, first = self._snapshot(start)
        yield from self._from_file(start, first)
        yield from recent

    def __iter__(self) -> Iterator[Event]:
        return self.since(0)

    def select(self, kind: str | None = None, role: str | None = None, **match: Any) -> list[Event]:
        """Events of ``kind`` at ``role`` whose details contain every ``match`` item."""
        return [e for e in self if _matches(e, kind, role, match)]

    def wait_for(self, kind: str, role: str | None = None, timeout: float = 10, **match: Any) -> Event:
        """Block until an event matching the filter exists; return the first. TimeoutError if not."""
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            for e in self.since(checked):
                if _matches(e, kind, role, match):
                    return e
                checked += 1
            with self._cond:
                left = deadline - time.monotonic()
                if left <= 0:
                    want = ", ".join(f"{k}={v!r}" for k, v in match.items())
                    raise TimeoutError(f"no {kind!r} event{' at ' + role if role else ''}"
                                       f"{' with ' + want if want else ''} within {timeout} s")
                if self._count == checked:
                    self._cond.wait(left)

    @staticmethod
    def stream(path: str | Path) -> Iterator[Event]:
        """The events a (possibly other) process wrote to ``path``, read as they are needed."""
        p = Path(path)
        if not p.exists():
            return
        with open(p, "rb") as f:
            for line in f:
                if line.strip():
                    yield Event.from_json(line)

    @staticmethod
    def read(path: str | Path) -> list[Event]:
        """Read the events a (possibly other) process wrote to ``path``."""
        return list(EventLog.stream(path))
