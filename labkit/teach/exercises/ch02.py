"""Chapter 02 exercises: SMTP by hand (envelope and header, reply codes, dot-stuffing)."""
from __future__ import annotations

import email
import email.policy
import email.utils
from pathlib import Path

from ...i18n import N_
from ...lab.lab import Lab
from ...result import Result
from . import exercise


def _find(lab: Lab, address: str, subject: str):
    """The newest message in ``address``'s mailbox with this Subject (parsed), or None."""
    found = lab.mailbox(address, subject)
    if not found:
        return None
    return email.message_from_bytes(Path(found[-1]["path"]).read_bytes(), policy=email.policy.default)


@exercise("02.1")
def _envelope_only(lab: Lab, address: str | None = None, subject: str | None = None) -> Result:
    """A message in ``address``'s mailbox whose headers do not name ``address``: it came by the envelope."""
    if not address or not subject:
        return Result(False, N_("give the recipient you put only in the envelope and the Subject: check('02.1', lab, "
                                'address=..., subject=...)'))
    msg = _find(lab, address, subject)
    if msg is None:
        return Result(False, N_("{address}'s mailbox holds no message with Subject {subject!r}; add RCPT "
                                'TO:<{address}> to the envelope and send it').format(address=address, subject=subject))
    named = [a.lower() for _, a in email.utils.getaddresses(
        [str(v) for h in ("To", "Cc", "Bcc") for v in (msg.get_all(h) or [])])]
    if address.lower() in named:
        return Result(False, N_('the message arrived, but its headers name {address}; leave it out of To: and Cc: and '
                                'give it only in RCPT TO').format(address=address))
    return Result(True, N_('right: {address} got the message although no header names it; the envelope (RCPT TO), '
                           'not the To: header, decides who gets a message').format(address=address),
                  {"to": str(msg.get("To", ""))})


@exercise("02.2")
def _rcpt_550(lab: Lab, code: int | None = None) -> Result:
    """What reply code does ``RCPT TO:<550@example.com>`` get? (Ask the lab first.)"""
    seen = [e for e in lab.events.select("rejected", command="RCPT") if "<550@" in str(e.get("reply", ""))]
    if not seen:
        return Result(False, N_('the lab has not seen RCPT TO:<550@example.com> yet; ask mail.example.com (lab.mta) '
                                'yourself first'))
    want = int(str(seen[-1].get("reply"))[:3])
    try:
        given = int(code)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return Result(False, N_('{code!r} is not a reply code; give the three digits as a number').format(code=code))
    if given == want:
        return Result(True, N_('right: {want}, a permanent failure (5xx): the sender must not retry').format(want=want),
                      {"reply": seen[-1].get("reply")})
    if given // 100 == 4:
        return Result(False, N_('{given} is a temporary failure (4xx), what tempfail@ gets; read the reply to 550@ '
                                'again').format(given=given))
    return Result(False, N_('{given} is not the code the server answered; read the first three '
                            'digits of its reply').format(given=given))


@exercise("02.3")
def _lone_dot(lab: Lab, address: str = "alice@example.com", subject: str | None = None) -> Result:
    """A message whose body holds a line that is a single '.', delivered intact."""
    if not subject:
        return Result(False, N_("give the Subject of your message: check('02.3', lab, subject=...)"))
    msg = _find(lab, address, subject)
    if msg is None:
        return Result(False, N_("{address}'s mailbox holds no message with Subject {subject!r}; send it first").format(
            address=address, subject=subject))
    body = msg.get_body(preferencelist=("plain",))
    text = body.get_content() if body is not None else str(msg.get_payload())
    lines = text.splitlines()
    if "." not in lines:
        return Result(False, N_("the message arrived, but no line of its body is a single '.'; put one in the middle "
                                "of the body (the client dot-stuffs it as '..')"))
    after = lines[lines.index(".") + 1:]
    if not any(ln.strip() for ln in after):
        return Result(False, N_("the body has a '.' line, but nothing after it; add a line after the dot to prove the "
                                'message was not cut there'))
    return Result(True, N_("right: the lone '.' and the lines after it arrived; the client sent it as '..' and "
                           'the server removed the extra dot (RFC 5321 §4.5.2)'))
