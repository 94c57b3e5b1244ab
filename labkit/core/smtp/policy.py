"""Who may send mail where: the relay decision of an MTA. Pure: no I/O.

An *open relay* accepts mail from anyone, to anyone, and is abused for spam within hours of
going online. The memo's Postfix avoids it with (postconf(5))::

    /etc/postfix/main.cf:
        mydestination = example.com               # the domains we deliver here ourselves
        mynetworks = 127.0.0.0/8                  # clients we trust to relay
        smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,
                                   reject_unauth_destination
        allow_untrusted_routing = no              # the default: no %-hack, !path, "@" tricks

:func:`relay_decision` is that rule as one function: a recipient is accepted when its domain is
one of ours (and its local part asks for no onward routing), or when the client is trusted
(it authenticated with SMTP AUTH, or its address is in ``mynetworks``). Everything else is
refused with Postfix's "Relay access denied", and the reason says which rule decided.

    >>> relay_decision("bob@example.com", local_domains=["example.com"],
    ...                client_ip="192.0.2.7", authenticated=False, mynetworks=[]).ok
    True
    >>> print(relay_decision("eve@other.example.net", local_domains=["example.com"],
    ...                      client_ip="192.0.2.7", authenticated=False, mynetworks=[]).reason)
    relay access denied: other.example.net is not a local domain and the client is neither authenticated nor in mynetworks
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

from ...errors import ConfigError
from ...result import Result
from .address import Mailbox, check_path

#: Postfix's answer to an unauthorised relay attempt (smtpd(8), reject_unauth_destination).
RELAY_DENIED = "554 5.7.1 Relay access denied"

#: Recipients per message, a lab choice (Postfix's smtpd_recipient_limit defaults to 1000): the
#: embedded servers and the lab's real Postfix both answer ``452 4.5.3`` past it.
RECIPIENT_LIMIT = 100
TOO_MANY_RECIPIENTS = "452 4.5.3 Error: too many recipients"


def user_unknown(address: str) -> str:
    """Postfix's refusal of an address of a local domain that has no mailbox (virtual_mailbox_maps)."""
    return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown in virtual mailbox table"


def parse_networks(mynetworks: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """``["127.0.0.0/8", "::1"]`` as network objects; ConfigError names a bad entry."""
    if isinstance(mynetworks, str):
        mynetworks = mynetworks.replace(",", " ").split()
    nets = []
    for item in mynetworks:
        try:
            nets.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ConfigError("mynetworks", f"{item!r} is not an address or a network",
                              "write addresses or CIDR blocks such as 127.0.0.0/8") from None
    return tuple(nets)


def in_networks(client_ip: str | None, mynetworks: Iterable[str]) -> bool:
    """Whether ``client_ip`` lies in one of ``mynetworks`` (False for a missing or bad address)."""
    if not client_ip:
        return False
    try:
        ip = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in parse_networks(mynetworks))


def normalise_domains(domains: Iterable[str]) -> frozenset[str]:
    """Lower-case, drop a trailing dot: how domains are compared everywhere in the policy."""
    if isinstance(domains, str):
        domains = [domains]
    return frozenset(d.rstrip(".").lower() for d in domains if d)


def relay_decision(rcpt: str | Mailbox, *, local_domains: Iterable[str], client_ip: str | None,
                   authenticated: bool, mynetworks: Iterable[str]) -> Result:
    """May this client give us mail for ``rcpt``? ``ok`` means accept the RCPT.

    ``details`` always holds ``reply`` (the SMTP reply for RCPT) and, when accepted, ``action``:
    ``"deliver"`` (the domain is ours: into a local mailbox) or ``"relay"`` (send it on), and
    ``mailbox`` (the parsed :class:`Mailbox`). The order of the checks is the lesson:

    1. the address must parse (else ``501 5.1.3``);
    2. a domain of ours is delivered here, unless its local part holds ``@``, ``%`` or ``!``:
       those ask us to route it onward (Postfix ``allow_untrusted_routing = no``), refused;
    3. any other domain, and every address literal such as ``[127.0.0.1]``, is a relay: allowed
       only to a client that authenticated or is in ``mynetworks``.

    A source route (``<@a:user@b>``) is ignored, as RFC 5321 §3.3 says: only ``user@b`` counts.
    """
    if isinstance(rcpt, Mailbox):
        box = rcpt
    else:
        parsed = check_path(rcpt)
        if not parsed:
            return parsed
        box = parsed.details["mailbox"]
    if box.null:
        return Result(False, "the null path <> cannot be a recipient",
                      {"reply": "501 5.1.3 Bad recipient address syntax: <> is only a sender"})
    ours = normalise_domains(local_domains)
    details = {"mailbox": box, "address": box.address, "domain": box.domain}
    if box.route:
        details["route_ignored"] = box.route

    if box.literal is None and box.domain in ours:
        if box.routing_characters:
            chars = " ".join(box.routing_characters)
            return Result(False, f"relay access denied: the local part of {box.address} holds {chars}, "
                                 f"which asks {box.domain} to route the mail onward "
                                 "(sender-specified routing is refused, as Postfix's "
                                 "allow_untrusted_routing = no does)",
                          {**details, "reply": f"{RELAY_DENIED} (sender-specified routing: {chars})"})
        return Result(True, f"{box.domain} is a local domain: deliver to the mailbox {box.address}",
                      {**details, "action": "deliver", "reply": "250 2.1.5 Ok"})

    what = (f"{box.domain} is an address literal, never a local domain" if box.literal is not None
            else f"{box.domain} is not a local domain")
    if authenticated:
        return Result(True, f"{what}, but the client authenticated (SMTP AUTH): relay it",
                      {**details, "action": "relay", "reply": "250 2.1.5 Ok"})
    if in_networks(client_ip, mynetworks):
        return Result(True, f"{what}, but the client {client_ip} is in mynetworks: relay it",
                      {**details, "action": "relay", "reply": "250 2.1.5 Ok"})
    return Result(False, f"relay access denied: {what} and the client is neither authenticated "
                         "nor in mynetworks",
                  {**details, "reply": f"{RELAY_DENIED} for {box.path}"})
