"""The event log keeps a bounded window in memory and the whole history in its file."""
from __future__ import annotations

import asyncio
import os
import threading

import pytest

from labkit.net.events import Event, EventLog


def test_memory_holds_a_window_and_the_file_the_history(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", window=10)
    for i in range(35):
        log.emit("mail.example.com", "mta", "accepted", n=i, rcpts=("a@example.com",))
    assert len(log) == 35 and len(log._recent) == 10
    assert [e["n"] for e in log] == list(range(35))
    assert [e["n"] for e in log.since(30)] == [30, 31, 32, 33, 34]
    assert [e["n"] for e in log.since(3)][:2] == [3, 4]
    assert log.select("accepted", n=2)[0]["rcpts"] == ["a@example.com"]  # read back as JSON gave it
    assert log.wait_for("accepted", n=1, timeout=0.1)["n"] == 1
    assert [e["n"] for e in EventLog.read(tmp_path / "events.jsonl")] == list(range(35))
    log.close()


def test_a_kept_sandbox_keeps_its_earlier_events_apart(tmp_path):
    first = EventLog(tmp_path / "events.jsonl", window=2)
    for i in range(5):
        first.emit("h", "r", "old", n=i)
    first.close()
    log = EventLog(tmp_path / "events.jsonl", window=2)
    for i in range(4):
        log.emit("h", "r", "new", n=i)
    assert [(e.kind, e["n"]) for e in log] == [("new", i) for i in range(4)]
    assert len(EventLog.read(tmp_path / "events.jsonl")) == 9
    log.close()


def test_events_emitted_in_one_loop_step_are_written_together(tmp_path, monkeypatch):
    log = EventLog(tmp_path / "events.jsonl")
    writes = []
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(len(data)) or real(fd, data))

    async def step() -> None:
        for i in range(5):
            log.emit("h", "r", "k", n=i)
        assert writes == []
        await asyncio.sleep(0)

    asyncio.run(step())
    assert len(writes) == 1
    log.emit("h", "r", "outside a loop")  # written at once
    assert len(writes) == 2 and len(EventLog.read(tmp_path / "events.jsonl")) == 6
    log.close()


def test_wait_for_wakes_on_a_new_event(tmp_path):
    log = EventLog(tmp_path / "events.jsonl", window=3)
    for i in range(10):
        log.emit("h", "r", "noise", n=i)
    threading.Timer(0.05, log.emit, ("h", "r", "wanted"), {"n": 99}).start()
    assert log.wait_for("wanted", timeout=5)["n"] == 99
    with pytest.raises(TimeoutError, match="no 'absent' event"):
        log.wait_for("absent", timeout=0.05)
    log.close()


def test_without_a_file_every_event_stays_in_memory():
    log = EventLog()
    for i in range(3000):
        log.emit("h", "r", "k", n=i)
    assert len(list(log)) == 3000 and isinstance(next(iter(log)), Event)


def _seen(i: int):
    from labkit.core.auth.dmarc import ReportRow
    from labkit.core.auth.reports import Seen

    return Seen(f"127.0.30.{i % 3}", 1700000000.0 + i, "example.com", "v=DMARC1; p=none; rua=mailto:d@example.com",
                ReportRow(f"127.0.30.{i % 3}", 1, "example.com", "none", "pass", "pass"))


def test_the_providers_seen_keeps_a_window_and_reads_the_rest_back(tmp_path):
    from labkit.core.auth.reports import aggregate_reports, report_xml
    from labkit.net.smtp.seen import SeenLog

    seen = SeenLog(tmp_path / "inbox-seen.jsonl", window=4)
    for i in range(30):
        seen.append(_seen(i))
    assert len(seen) == 30 and len(seen.recent) == 4
    [(domain, rua, message)] = aggregate_reports(seen.take(), org_name="mx.inbox.example.org", reporter="r@x")
    assert report_xml(message).count("<count>10</count>") == 3  # three sources, ten messages each
    assert len(seen) == 0
    for i in range(3):
        seen.append(_seen(i))
    assert [s.client_ip for s in seen.take()] == ["127.0.30.0", "127.0.30.1", "127.0.30.2"]  # from memory
    assert list(seen.take()) == []
    seen.close()
