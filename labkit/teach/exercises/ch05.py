"""Chapter 05 exercises: STARTTLS, SMTP AUTH (SASL PLAIN), 587 versus 465, OP25B.

No checker here prints, returns or logs a password or an AUTH PLAIN string.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ...core.trace import hops
from ...i18n import N_
from ...lab.lab import Lab
from ...net.clients.smtp import RawSMTP, auth_plain_string
from ...result import Result
from ..sasl import check_plain
from . import arrived, exercise

ISP_USER = "alice@isp.example.net"


def _password(lab: Lab, user: str) -> str | None:
    account = lab.world.account(user) if lab.world is not None else None
    return account.password if account else None


def _smarthost_session(lab: Lab, **kwargs):
    svc = lab.smarthost
    return RawSMTP(svc.host, svc.port, source_address=lab.world.host("pc").address,
                   server_name=f"{svc.name}:{svc.standard_port}", timeout=lab.options.smtp_timeout,
                   cafile=str(lab.ca_path), **kwargs)


@exercise("05.1")
def _auth_plain(lab: Lab, answer: str | None = None, user: str = ISP_USER) -> Result:
    """The AUTH PLAIN string of the ISP account, built by hand: decoded and compared, then
    tried at the smarthost (after STARTTLS). Neither the string nor the password is echoed."""
    if not isinstance(answer, str):
        return Result(False, N_('pass answer= the AUTH PLAIN string (a str of base64)'))
    password = _password(lab, user)
    if password is None:
        return Result(False, N_('{user} is not a lab account with a password').format(user=user))
    verdict = check_plain(answer, user, password)
    if not verdict.ok:
        return verdict
    with _smarthost_session(lab) as s:  # prove it: log in with it, over TLS
        s.connect()
        s.ehlo("pc.example.com")
        s.starttls()
        s.ehlo("pc.example.com")
        reply = s.command(f"AUTH PLAIN {answer.strip()}")
        s.quit()
    if reply.code != 235:
        return Result(False, N_('it decodes right, but the smarthost answered {code} to it').format(code=reply.code))
    return Result(True, N_('right: {reason}; the smarthost answered 235 to it after STARTTLS').format(
        reason=verdict.reason))


@exercise("05.2")
def _auth_before_tls(lab: Lab, answer: Any = None) -> Result:
    """The reply code the smarthost gives to AUTH before STARTTLS; the checker asks it itself."""
    try:
        code = int(answer)
    except (TypeError, ValueError):
        return Result(False, N_('{answer!r} is not a reply code; give the three digits, e.g. answer=250').format(
            answer=answer))
    with _smarthost_session(lab) as s:
        s.connect()
        s.ehlo("pc.example.com")
        # a throw-away login that is no account: nothing secret goes out in clear
        measured = s.command(f"AUTH PLAIN {auth_plain_string('probe@example.invalid', 'not-a-password')}")
        s.quit()
    if code == measured.code:
        return Result(True, N_("right: AUTH before STARTTLS gets '{measured}' (RFC 4954: no PLAIN without TLS; 530 = "
                               "'must issue STARTTLS first')").format(measured=measured), {"reply": str(measured)})
    if code == 235:
        return Result(False, N_('235 would mean the password was accepted in clear; the smarthost refuses that. Send '
                                'AUTH before STARTTLS with RawSMTP and read the code'))
    return Result(False, N_('{code} is not what the smarthost answers; send AUTH before STARTTLS with RawSMTP and '
                            'read the code').format(code=code))


def _connections(events, role: str) -> list[list[Any]]:
    """Events at ``role``, cut into connections at each ``connect`` (the lab runs them in turn)."""
    conns: list[list[Any]] = []
    for e in events:
        if e.role != role:
            continue
        if e.kind == "connect":
            conns.append([e])
        elif conns:
            conns[-1].append(e)
    return conns


@exercise("05.3")
def _implicit_tls(lab: Lab, subject: str = "Exercise 3") -> Result:
    """The message with ``subject`` submitted on submissions (465): its connection started TLS
    before any SMTP command. In the lab's events, ``tls`` (implicit) comes right after ``connect``."""
    conns = [c for c in _connections(lab.events, "submissions")
             if any(e.kind == "accepted" and e.get("subject") == subject for e in c)]
    if not conns:
        return Result(False, f"the submissions service (465) accepted no message with Subject {subject!r} yet; "
                      f"send one with lab.send(..., via='submissions', subject={subject!r})")
    conn = conns[-1]
    kinds = [e.kind for e in conn]
    if len(kinds) > 1 and kinds[1] == "tls" and conn[1].get("implicit") is True:
        acc = next(e for e in conn if e.kind == "accepted" and e.get("subject") == subject)
        return Result(True, f"right: at submissions the connection from {conn[0].get('peer')} was TLS "
                      f"({conn[1].get('version')}) before the greeting and before any command; "
                      f"then AUTH as {acc.get('auth_user')} and message {acc.get('queue_id')}",
                      {"events": kinds})
    return Result(False, N_('the events of that connection were {kinds}: TLS did not come first').format(kinds=kinds))


@exercise("05.4")
def _op25b(lab: Lab, subject: str = "Past OP25B", address: str = "bob@inbox.example.org",
           timeout: float = 5) -> Result:
    """A message from the home network (your server or PC) in bob's mailbox that got past OP25B:
    handed to the ISP's smarthost with TLS and AUTH, then relayed to the provider's MX.
    Waits up to ``timeout`` seconds for it to arrive (relaying takes a moment)."""
    msgs = arrived(lab, address, subject, timeout)
    if not msgs:
        blocked = lab.events.select("op25b")
        hint = (" (the inbox MX refused a home connection on port 25: that is OP25B)" if blocked else "")
        return Result(False, N_("{address} holds no message with Subject {subject!r}{hint}; from home (source='home') "
                                'send through the smarthost with AUTH').format(
                                    address=address, subject=subject, hint=hint))
    hs = hops(Path(msgs[-1]["path"]).read_bytes())
    isp = lab.smarthost.name
    at_isp = [h for h in hs if h.by == isp]
    if not at_isp:
        return Result(False, N_("that message did not go through the ISP's smarthost {isp} (its hops: {value}); from "
                                'home, mail goes out through it').format(
                                    isp=isp, value=' -> '.join(h.by for h in hs) or 'none'))
    h = at_isp[0]
    if not lab.world.in_home_network(h.from_ip):
        return Result(False, N_('it reached the smarthost from {from_ip}, which is not in the home network '
                                "{home_network}: send with source='home'").format(
                                    from_ip=h.from_ip, home_network=lab.world.home_network))
    if h.with_.upper() != "ESMTPSA":
        return Result(False, N_('the smarthost received it with {v_with}, not ESMTPSA (TLS and AUTH)').format(
            v_with=h.with_))
    return Result(True, N_('right: from home ({from_ip}) -> {isp} (ESMTPSA: STARTTLS and AUTH on 587) -> {by}; '
                           'port 25 from home was never needed').format(
                               from_ip=h.from_ip, isp=isp, by=hs[-1].by), {"hops": [x.by for x in hs]})
