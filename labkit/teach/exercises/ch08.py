"""Chapter 08 exercises: debugging the relay by hand, and the break-it / fix-it steps.

Checkers read the maillog, the queue and the lab's events; none shows the ISP password.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ...errors import RealModeUnavailable
from ...i18n import N_
from ...lab.lab import Lab
from ...real.tools import run
from ...result import Result
from .. import breakfix
from . import exercise


def _runner(lab: Lab | None):
    runner = lab.postfix_runner if lab is not None else None
    if runner is None:
        raise RealModeUnavailable("this exercise needs the real-mode lab: Lab(real=True)")
    return runner


@exercise("08.1")
def _wrong_password_code(lab: Lab | None, answer: Any = None) -> Result:
    """The reply code the ISP gave when Postfix logged in with a wrong password (from the maillog)."""
    try:
        runner = _runner(lab)
    except RealModeUnavailable as e:
        return Result(False, str(e))
    failed = [e for e in runner.events() if e.kind == "status" and e.get("sasl_failed")]
    if not failed:
        return Result(False, N_('the maillog shows no refused login yet: run breakfix.wrong_password(lab) first'))
    m = re.search(r"said: (\d{3})", failed[-1].get("reason", ""))
    measured = int(m.group(1)) if m else None
    try:
        code = int(answer)
    except (TypeError, ValueError):
        return Result(False, N_('{answer!r} is not a reply code; give three digits').format(answer=answer))
    if code == measured:
        return Result(True, N_('right: {measured} (RFC 4954: authentication credentials invalid); Postfix logged '
                               'status={get}, so the message waits in the queue').format(
                                   measured=measured, get=failed[-1].get('status')),
                      {"line": failed[-1].line})
    return Result(False, N_("{code} is not it; find the line with 'SASL authentication failed' in "
                            'lab.postfix_runner.maillog_text()').format(code=code))


@exercise("08.2")
def _nothing_lost(lab: Lab | None, queue_id: str | None = None) -> Result:
    """A message that was deferred (the ISP down, a wrong password...) and was then sent."""
    try:
        runner = _runner(lab)
    except RealModeUnavailable as e:
        return Result(False, str(e))
    if not queue_id:
        return Result(False, N_('pass queue_id= the id Postfix gave the message (the last word of its 250 reply)'))
    mine = [e for e in runner.events() if e.kind == "status" and e.queue_id == queue_id]
    states = [e.get("status") for e in mine]
    if "deferred" not in states:
        return Result(False, N_('{queue_id} was never deferred (its log: {value}); make it wait first').format(
            queue_id=queue_id, value=states or 'nothing'))
    if "sent" not in states:
        waiting = any(q.queue_id == queue_id for q in runner.queue())
        return Result(False, N_('{queue_id} has not been sent yet').format(
            queue_id=queue_id) + (N_(' (it waits in the queue: fix the cause, then postqueue -f)') if waiting else ""))
    if states.index("sent") < states.index("deferred"):
        return Result(False, N_('{queue_id} was sent before it was deferred: that is another story').format(
            queue_id=queue_id))
    if any(q.queue_id == queue_id for q in runner.queue()):
        return Result(False, N_('{queue_id} is still in the queue').format(queue_id=queue_id))
    return Result(True, N_('right: {queue_id} was deferred {count} time(s), waited in the queue, and was sent '
                           'once the cause was fixed: nothing lost').format(
                               queue_id=queue_id, count=states.count('deferred')), {"states": states})


@exercise("08.3")
def _tls_required(lab: Lab | None) -> Result:
    """Postfix's current configuration, tried against an ISP whose STARTTLS is stripped: no AUTH
    may cross in clear. The checker strips STARTTLS, sends one probe, restores STARTTLS and
    delivers the probe before it answers."""
    try:
        runner = _runner(lab)
    except RealModeUnavailable as e:
        return Result(False, str(e))
    before = len(lab.events)
    seen = len(runner.events())
    lab.strip_starttls("smarthost", True)
    try:
        qid = breakfix.send_probe(lab, "Exercise 08.3: STARTTLS stripped")
        ev = breakfix._wait_new_status(runner, qid, seen)
    finally:
        lab.strip_starttls("smarthost", False)
    clear = [e for e in list(lab.events)[before:] if e.role == "smarthost" and e.kind == "auth"
             and e.get("tls") is False]
    level = lab.postfix_config.smtp_tls_security_level
    if clear:
        breakfix._deliver_waiting(lab, runner)
        return Result(False, N_('with smtp_tls_security_level = {level} the ISP received AUTH without TLS: the '
                                'password crossed in clear. Apply a level that requires TLS '
                                '(breakfix.apply_config)').format(level=level))
    if ev.get("status") != "deferred" or "TLS is required" not in ev.get("reason", ""):
        breakfix._deliver_waiting(lab, runner)
        return Result(False, N_('the probe {qid} was {get} ({get2}); expected Postfix to defer it because TLS was not '
                                'offered').format(qid=qid, get=ev.get('status'), get2=ev.get('reason')))
    delivered = breakfix._deliver_waiting(lab, runner)
    return Result(True, N_('right: with smtp_tls_security_level = {level}, Postfix deferred {qid} ("TLS is '
                           'required, but was not offered") and sent no AUTH; with STARTTLS back it was '
                           'delivered').format(level=level, qid=qid),
                  {"queue_id": qid, "delivered": delivered})


@exercise("08.4")
def _map_rebuilt(lab: Lab | None) -> Result:
    """sasl_passwd.db is up to date: not older than sasl_passwd, and postmap -q finds in it exactly
    what the text file says (compared here, never shown)."""
    cfg = lab.postfix_config if lab is not None else None
    if cfg is None:
        return Result(False, N_('this exercise needs the real-mode lab: Lab(real=True)'))
    text = Path(cfg.sasl_passwd_path)
    db = text.with_name(text.name + ".db")
    if not db.exists():
        return Result(False, N_('there is no {name}: run postmap on {text}').format(name=db.name, text=text))
    if text.stat().st_mtime_ns > db.stat().st_mtime_ns:
        return Result(False, N_('{name} was changed after {name2} was built: Postfix still reads the old password from '
                                'the .db. Run postmap').format(name=text.name, name2=db.name))
    entries = {}
    for line in text.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            entries[key] = value.strip()
    for key, value in entries.items():
        got = run(["postmap", "-c", cfg.config_directory, "-q", key, f"{cfg.map_type}:{text}"])
        if not got.ok or got.stdout.strip() != value:
            return Result(False, N_("the map's entry for {key!r} is not what {name} says: run postmap").format(
                key=key, name=text.name))
    return Result(True, N_('right: {name} is newer than {name2} and holds the same {len} entr{value} (values not '
                           'shown)').format(
                               name=db.name, name2=text.name, len=len(entries),
                               value='y' if len(entries) == 1 else 'ies'))
