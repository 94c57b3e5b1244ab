"""Chapter 01 exercises: who does what (MUA, MSA, MTA, MDA) on the lab hosts."""
from __future__ import annotations

from pathlib import Path

from ...core.trace import hops
from ...i18n import N_
from ...lab.lab import Lab
from ...result import Result
from ..agents import msa_roles
from . import exercise


def _norm(value: object) -> str:
    return str(value or "").strip().rstrip(".").lower()


@exercise("01.1")
def _second_received(lab: Lab, host: str | None = None, address: str = "bob@inbox.example.org") -> Result:
    """Which host added the second Received: line, counting from the bottom (the second hop)?"""
    msgs = lab.mailbox(address)
    if not msgs:
        return Result(False, N_('{address} holds no message yet; send one through the submission port first '
                                "(lab.send(..., via='submission'))").format(address=address))
    hs = hops(Path(msgs[-1]["path"]).read_bytes())
    if len(hs) < 2:
        return Result(False, N_('the newest message in {address} has only {len} Received: line(s); send one that '
                                "crosses several hosts (via='submission')").format(address=address, len=len(hs)))
    want = hs[1].by
    if _norm(host) == want:
        return Result(True, N_('right: {want} added the second Received: line (the second hop), when it received the '
                               'message from {from_helo}').format(want=want, from_helo=hs[1].from_helo), {"host": want})
    if _norm(host) == hs[-2].by and len(hs) > 2:
        return Result(False, N_('{host!r} added the second line from the top; the path is read from the bottom up, so '
                                'start with the oldest (lowest) Received: line').format(host=host))
    return Result(False, N_("{host!r} is not it: read the newest message's Received: lines from the bottom up and "
                            "take the 'by' part of the second one").format(host=host))


@exercise("01.2")
def _msa_role(lab: Lab, role: str | None = None, address: str = "alice@example.com") -> Result:
    """Which lab role is the MSA for ``address``?"""
    roles = msa_roles(lab.world, address)
    answer = _norm(role)
    if answer in roles:
        others = [r for r in roles if r != answer]
        also = f" ({', '.join(others)} is the same MSA with implicit TLS on 465)" if others else ""
        return Result(True, N_("right: {answer} takes {address}'s new mail after AUTH{also}").format(
            answer=answer, address=address, also=also), {"roles": roles})
    if answer in ("mta", "inbox", "verifier"):
        return Result(False, N_('{answer} is an MTA: it takes mail for its own domains from anyone, with no login; an '
                                'MSA is where {address} logs in to send new mail').format(
                                    answer=answer, address=address))
    if answer == "smarthost":
        return Result(False, N_("the smarthost is the ISP's MSA, for the ISP's account; {address} logs in at a service "
                                'of its own server mail.example.com').format(address=address))
    return Result(False, N_('{role!r} is not a lab role that is an MSA for {address}; look at the agents table for '
                            'the role on port 587 of mail.example.com').format(role=role, address=address))


@exercise("01.3")
def _port25_refusal(lab: Lab, host: str | None = None, code: int | None = None) -> Result:
    """Which lab host refused the port-25 connection from home (OP25B), and with what code?"""
    refusals = [e for e in lab.events.select("rejected") if e.get("command") == "CONNECT"]
    if not refusals:
        return Result(False, N_('no port-25 connection has been refused yet: try sending from home straight to the '
                                "provider's MX (lab.send(..., via='inbox', source='pc', auth=False))"))
    last = refusals[-1]
    want_code = int(str(last.get("reply", "0"))[:3])
    host_ok = _norm(host) in (last.host, last.role)
    try:
        code_ok = int(code) == want_code  # type: ignore[arg-type]
    except (TypeError, ValueError):
        code_ok = False
    if host_ok and code_ok:
        return Result(True, N_('right: {host} ({role}) answered {want_code} at connect time: OP25B, port 25 from the '
                               'home network is blocked').format(
                                   host=last.host, role=last.role, want_code=want_code), {"reply": last.get("reply")})
    wrong = []
    if not host_ok:
        wrong.append(f"the host {host!r} (look at who the connection went to)")
    if not code_ok:
        wrong.append(f"the code {code!r} (read the first three digits of the reply)")
    return Result(False, N_('not quite: ') + " and ".join(wrong))
