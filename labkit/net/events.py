"""What happened in the lab, as structured events: one JSON object a line in the sandbox.

Servers emit events (connect, tls, auth, accepted, relayed, deferred, bounced, delivered...);
notebooks and tests read them back to prove what happened rather than trusting prose. Events
never hold a password: the AUTH mechanism and user name are recorded, never the secret.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
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


class EventLog:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

    def emit(self, host: str, role: str, kind: str, **details: Any) -> Event:
        ev = Event(time.time(), host, role, kind, details)
        with self._cond:
            self._events.append(ev)
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(asdict(ev), default=str) + "\n")
            self._cond.notify_all()
        return ev

    def __iter__(self) -> Iterator[Event]:
        with self._lock:
            return iter(list(self._events))

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def select(self, kind: str | None = None, role: str | None = None, **match: Any) -> list[Event]:
        """Events of ``kind`` at ``role`` whose details contain every ``match`` item."""
        return [e for e in self if (kind is None or e.kind == kind) and (role is None or e.role == role)
                and all(e.details.get(k) == v for k, v in match.items())]

    def wait_for(self, kind: str, role: str | None = None, timeout: float = 10, **match: Any) -> Event:
        """Block until an event matching the filter exists; return the first. TimeoutError if not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self._events:
                    if e.kind == kind and (role is None or e.role == role) and \
                            all(e.details.get(k) == v for k, v in match.items()):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    want = ", ".join(f"{k}={v!r}" for k, v in match.items())
                    raise TimeoutError(f"no {kind!r} event{' at ' + role if role else ''}"
                                       f"{' with ' + want if want else ''} within {timeout} s")
                self._cond.wait(left)

    @staticmethod
    def read(path: str | Path) -> list[Event]:
        """Read the events a (possibly other) process wrote to ``path``."""
        out = []
        p = Path(path)
        if not p.exists():
            return out
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                out.append(Event(d["time"], d["host"], d["role"], d["kind"], d.get("details", {})))
        return out
