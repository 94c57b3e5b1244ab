"""The rules of the lab's SMTP roles, as pure data and functions (the servers that follow them
are :mod:`labkit.net.smtp.roles`).

What each role offers and requires (:class:`RoleSpec`, :data:`ROLES`), the ``Received:`` line
each hop adds (:func:`received_header`, RFC 5321 §4.4), Outbound Port 25 Blocking
(:func:`op25b_decision`) and the lab's failure-injection recipients (:func:`injected_failure`).
Who may relay where is :func:`labkit.core.smtp.policy.relay_decision`.
"""
from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from typing import Any

from ...errors import ConfigError
from ...result import Result
from ..world import World


@dataclass(frozen=True)
class RoleSpec:
    """How a role behaves: what it offers, requires, and where it sends mail on."""

    role: str
    implicit_tls: bool = False  #: TLS from the first byte (port 465)
    require_starttls: bool = False  #: no MAIL before STARTTLS (RFC 3207 §4)
    auth: bool = False  #: offers SMTP AUTH (only after TLS)
    auth_required: bool = False  #: no MAIL before AUTH (530 5.7.0)
    relay: str | None = None  #: ``"relayhost"``, ``"mx"`` or None (no relaying at all)
    op25b: bool = False  #: refuses port-25 clients from the ISP's home network
    lmtp: bool = False  #: speaks LMTP (LHLO; one reply per recipient after DATA)
    assess: bool = False  #: checks SPF, DKIM, DMARC, reverse DNS and TLS; files to Inbox or Spam
    reply_report: bool = False  #: answers each message with an authentication report (verifier)


ROLES: dict[str, RoleSpec] = {
    "mta": RoleSpec("mta", auth=True, relay="relayhost"),
    "submission": RoleSpec("submission", require_starttls=True, auth=True, auth_required=True,
                           relay="relayhost"),
    "submissions": RoleSpec("submissions", implicit_tls=True, auth=True, auth_required=True,
                            relay="relayhost"),
    "smarthost": RoleSpec("smarthost", require_starttls=True, auth=True, auth_required=True,
                          relay="mx"),
    "mda": RoleSpec("mda", lmtp=True),
    "inbox": RoleSpec("inbox", op25b=True, assess=True),
    "verifier": RoleSpec("verifier", op25b=True, reply_report=True),
}


def role_spec(role: str) -> RoleSpec:
    """The :class:`RoleSpec` of ``role``; ConfigError lists the roles if it is unknown."""
    try:
        return ROLES[role]
    except KeyError:
        raise ConfigError("role", f"no SMTP role {role!r}", f"choose one of {', '.join(ROLES)}") from None


def with_type(*, esmtp: bool, tls: bool, authenticated: bool) -> str:
    """The ``with`` word of a Received: line (RFC 3848): SMTP, ESMTP, ESMTPS, ESMTPA, ESMTPSA."""
    if not esmtp:
        return "SMTP"
    return "ESMTP" + ("S" if tls else "") + ("A" if authenticated else "")


def received_header(*, helo: str, peer_ip: str, peer_name: str | None, by: str, protocol: str,
                    queue_id: str, rcpts: list[str], tls: dict[str, Any] | None = None,
                    date: str | None = None) -> bytes:
    """The trace header a server puts on top of each message it accepts (RFC 5321 §4.4).

    Read bottom-up, the Received: lines of a message are its path across the servers::

        Received: from pc.example.com (pc.example.com [127.0.20.100])
                (using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)
                by mail.example.com (Mail Lab) with ESMTPSA id 4F2A9C01B3
                for <bob@inbox.example.org>; Tue, 02 Jan 2024 10:00:00 +0900

    ``peer_name`` is the reverse-DNS name of the client (None if unknown); ``for`` is only
    given for a single recipient, as Postfix does, so as not to reveal the others.
    """
    lines = [f"Received: from {helo or 'unknown'} ({peer_name or 'unknown'} [{peer_ip}])"]
    if tls:
        lines.append(f"\t(using {tls.get('version', 'TLS')} with cipher {tls.get('cipher', '?')})")
    lines.append(f"\tby {by} (Mail Lab) with {protocol} id {queue_id}")
    stamp = date or email.utils.formatdate(localtime=True)
    if len(rcpts) == 1:
        lines.append(f"\tfor <{rcpts[0]}>; {stamp}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{stamp}")
    text = "\r\n".join(lines) + "\r\n"
    return text.encode("ascii", "backslashreplace")


def op25b_decision(world: World, server_address: str, peer_ip: str | None) -> Result:
    """Outbound Port 25 Blocking: may ``peer_ip`` talk to a port-25 server at ``server_address``?

    ISPs block port 25 from their home customers to anywhere but their own servers, so that
    infected PCs cannot send spam directly; customers send through the ISP's submission server
    (587, with AUTH). In a lab where every host shares one address (``world.flattened()``) the
    home network holds the servers too, and the rule is off.
    """
    if world.in_home_network(server_address):
        return Result(True, f"OP25B does not apply: the server {server_address} is itself in the "
                            f"home network {world.home_network}")
    if peer_ip and world.in_home_network(peer_ip):
        return Result(False, f"{peer_ip} is in the ISP's home network {world.home_network}, whose "
                             "port-25 traffic to other networks the ISP blocks (OP25B)",
                      {"reply": f"554 5.7.1 Port 25 from the ISP's home network ({world.home_network}) "
                                "is blocked by the ISP (OP25B); send through the smarthost on 587 "
                                "with AUTH"})
    return Result(True, f"{peer_ip} is outside the home network {world.home_network}")


#: Recipient local parts that make a lab server fail on purpose.
INJECTED = ("tempfail", "550", "timeout")


def injected_failure(address: str) -> str | None:
    """``tempfail``, ``550`` or ``timeout`` for the lab's failure-injection recipients, else None.

    ``tempfail@`` gets ``451 4.3.0`` at RCPT, ``550@`` gets ``550 5.1.1``, ``timeout@`` makes the
    server stall before answering. They act where the recipient is delivered (its own domain),
    so that mail passing through a relay meets the failure one hop later, in the relay's queue.
    """
    local = address.rpartition("@")[0].lower()
    return local if local in INJECTED else None


#: Enhanced status codes (RFC 3463) for replies that come without one, as Postfix words them:
#: by the start of the reply text first, else by the reply code.
_ENHANCED_BY_TEXT = (
    ("530 Must issue a STARTTLS", "5.7.0"), ("554 Command refused due to lack of security", "5.7.0"),
    ("503 Already authenticated", "5.5.1"), ("552 Error: message size exceeds", "5.3.4"),
    ("552 Error: Too much mail data", "5.3.4"), ("500 Line too long", "5.5.6"),
    ("500 Command line too long", "5.5.6"), ("553 ", "5.1.3"),
)
_ENHANCED_BY_CODE = {
    "211": "2.0.0", "214": "2.0.0", "220": "2.0.0", "221": "2.0.0", "235": "2.7.0", "250": "2.0.0",
    "251": "2.1.5", "252": "2.0.0", "421": "4.4.2", "450": "4.2.0", "451": "4.3.0", "452": "4.3.1",
    "454": "4.7.0", "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
    "530": "5.7.0", "534": "5.7.9", "535": "5.7.8", "538": "5.7.11", "550": "5.0.0", "552": "5.3.4",
    "554": "5.0.0", "555": "5.5.4",
}
_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?:\s|$)")


def enhanced_reply(reply: str) -> str:
    """``reply`` with an enhanced status code (RFC 2034, RFC 3463) after its reply code.

    The lab's servers announce ENHANCEDSTATUSCODES, so every 2xx, 4xx and 5xx reply carries
    one, as Postfix's do: ``530 Must issue a STARTTLS command first`` becomes ``530 5.7.0 Must
    issue a STARTTLS command first``. Replies that have one keep it; 3xx (``354``, ``334``)
    never get one. Each line of a multi-line reply is done alike.
    """
    if "\r\n" in reply:
        return "\r\n".join(enhanced_reply(line) for line in reply.split("\r\n"))
    code = reply[:3]
    if not code.isdigit() or code[0] not in "245" or _HAS_ENHANCED.match(reply):
        return reply
    status = next((s for prefix, s in _ENHANCED_BY_TEXT if reply.startswith(prefix)), None) \
        or _ENHANCED_BY_CODE.get(code, f"{code[0]}.0.0")
    sep, text = reply[3:4] or " ", reply[4:]
    return f"{code}{sep}{status}" + (f" {text}" if text else "")
