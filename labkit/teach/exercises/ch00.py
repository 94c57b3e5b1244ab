"""Chapter 00 exercises: the lab tour."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.trace import hops
from ...i18n import N_
from ...lab.lab import Lab
from ...result import Result
from . import exercise


@exercise("00.1")
def _port_587(lab: Lab, answer: Any = None) -> Result:
    want = lab.smarthost.port
    if answer == want:
        return Result(True, N_("right: port {want} plays the ISP's submission port 587").format(want=want))
    return Result(False, N_("{answer!r} is not it; look at the 'lab port' column of the smarthost row").format(
        answer=answer))


@exercise("00.2")
def _subject_arrived(lab: Lab, subject: str = "Exercise 2", address: str = "bob@inbox.example.org") -> Result:
    got = lab.mailbox(address, subject)
    if got:
        return Result(True, N_('right: {address} holds a message with Subject {subject!r}').format(
            address=address, subject=subject), {"message": got[0]})
    return Result(False, N_('{address} holds no message with Subject {subject!r}; send it through the smarthost '
                            "(via='smarthost') and wait for it").format(address=address, subject=subject))


@exercise("00.3")
def _received_lines(lab: Lab, count: int | None = None, top_by: str | None = None,
                    address: str = "bob@inbox.example.org") -> Result:
    msgs = lab.mailbox(address)
    if not msgs:
        return Result(False, N_('{address} holds no message yet; send one first').format(address=address))
    hs = hops(Path(msgs[-1]["path"]).read_bytes())
    want = (len(hs), hs[-1].by if hs else "")
    if (count, top_by) == want:
        return Result(True, N_('right: {want} Received lines; the top one was added by {want2}').format(
            want=want[0], want2=want[1]))
    return Result(False, N_('({count!r}, {top_by!r}) is not it: count the Received: lines of the newest message '
                            "and read the 'by' of the top one").format(count=count, top_by=top_by))
