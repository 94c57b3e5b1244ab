"""What the provider assessed since its last DMARC aggregate reports: a bounded window in
memory, the whole history in a file (``SANDBOX/log/ROLE-seen.jsonl``, one JSON object a line).

The provider counts every message it assessed into its next aggregate reports
(:func:`labkit.core.auth.reports.aggregate_reports`). A classroom lab may assess tens of
thousands between two reports, so each one is kept as the small :class:`Seen` record a report
needs and written to the file; :meth:`SeenLog.take` reads them back, as they are counted.
"""
from __future__ import annotations

import json
import os
import threading
from collections import deque
from pathlib import Path
from typing import Iterator

from ...core.auth.reports import Seen


class SeenLog:
    """The provider's messages since its last reports. ``path=None`` keeps them all in memory."""

    #: how many of the latest are kept in memory (for a look at ``recent``)
    WINDOW = 1000

    def __init__(self, path: str | os.PathLike | None = None, *, window: int | None = None):
        self.path = Path(path) if path is not None else None
        self._recent: deque[Seen] = deque(maxlen=(window or self.WINDOW) if self.path else None)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._count = 0  #: messages appended
        self._taken = 0  #: messages already handed to a report
        self._end = 0  #: where the next line goes in the file
        self._taken_at = 0  #: where the messages not yet reported begin in the file

    def append(self, seen: Seen) -> None:
        with self._lock:
            self._recent.append(seen)
            self._count += 1
            if self.path is None:
                return
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                self._end = self._taken_at = os.fstat(self._fd).st_size
            line = (json.dumps(seen.as_dict(), separators=(",", ":")) + "\n").encode("utf-8")
            os.write(self._fd, line)
            self._end += len(line)

    def __len__(self) -> int:
        """How many messages the next reports would count."""
        return self._count - self._taken

    @property
    def recent(self) -> list[Seen]:
        """The latest messages (at most :attr:`WINDOW` when there is a file), oldest first."""
        with self._lock:
            return list(self._recent)

    def take(self) -> Iterator[Seen]:
        """The messages not yet reported, oldest first, read as they are needed; from now on
        they count as reported."""
        with self._lock:
            n = self._count - self._taken
            start, stop = self._taken_at, self._end
            self._taken, self._taken_at = self._count, self._end
            in_memory = list(self._recent)[-n:] if 0 < n <= len(self._recent) else None
        if n <= 0:
            return iter(())
        if in_memory is not None or self.path is None:
            return iter(in_memory or [])
        return self._read(start, stop)

    def _read(self, start: int, stop: int) -> Iterator[Seen]:
        assert self.path is not None
        with open(self.path, "rb") as f:
            f.seek(start)
            while f.tell() < stop:
                line = f.readline()
                if not line:
                    return
                yield Seen.from_dict(json.loads(line))

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
