"""The big mailbox provider's decision: Inbox, Spam or Rejected, and why.

:func:`assess` plays ``mx.inbox.example.org`` (the memo's Gmail). It checks SPF, DKIM and DMARC
(:mod:`labkit.core.auth.spf`, :mod:`labkit.core.auth.dkim`, :mod:`labkit.core.auth.dmarc`), the sending
host's reverse DNS and TLS, then applies the domain's DMARC policy and, in spirit, the sender
requirements Gmail and Yahoo published for 2024:

- every sender: SPF or DKIM must pass; the sending IP needs a PTR name that resolves back to
  it and matches its HELO ("forward-confirmed reverse DNS"); the connection uses TLS;
- bulk senders (``bulk=True``): a DMARC record must exist, and From must align with SPF or DKIM.

It is pure given a resolver: it asks only the DNS you pass, changes nothing and sends nothing.
Every reason is one plain sentence.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import dns.exception
import dns.resolver
import dns.reversename

from ...i18n import N_
from .dkim import DKIMResult, verify
from .dmarc import DMARCResult, evaluate_dmarc
from .results import AuthResult, authentication_results
from .spf import SPFResult, evaluate_spf

FOLDERS = ("Inbox", "Spam", "Rejected")


class IPRevResult(AuthResult):
    """Forward-confirmed reverse DNS of the client (RFC 8601 ``iprev``), plus whether it matches HELO.

    ``details``: ``client_ip``, ``ptr`` (names found), ``confirmed`` (the name that resolves
    back), ``helo``, ``helo_matches``.
    """

    METHOD = "iprev"


@dataclass(frozen=True)
class Verdict:
    """Where the provider files a message: ``folder`` is ``Inbox``, ``Spam`` or ``Rejected``;
    ``reasons`` are plain sentences, the deciding ones first; the results of each check; and
    the ``Authentication-Results`` header value the provider adds."""

    folder: str
    reasons: list[str]
    spf: SPFResult
    dkim: DKIMResult
    dmarc: DMARCResult
    iprev: IPRevResult
    authentication_results: str
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.folder == "Inbox"

    def __str__(self) -> str:
        return f"{self.folder}: " + " ".join(self.reasons)


def check_iprev(client_ip: str, helo: str, *, resolver: dns.resolver.Resolver) -> IPRevResult:
    """Does ``client_ip`` have a PTR name that resolves back to it, and is that name the HELO name?"""
    details = {"client_ip": client_ip, "helo": helo, "ptr": [], "confirmed": "", "helo_matches": False}
    try:
        answer = resolver.resolve(dns.reversename.from_address(client_ip), "PTR", search=False)
        names = [r.target.to_text(omit_final_dot=True).lower() for r in answer]
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return IPRevResult.make("fail", f"{client_ip} has no reverse DNS (PTR) name", **details)
    except (dns.exception.DNSException, ValueError) as exc:
        return IPRevResult.make("temperror", f"the reverse DNS of {client_ip} could not be read ({type(exc).__name__})",
                                **details)
    details["ptr"] = names
    for name in names:
        try:
            forward = [r.address for r in resolver.resolve(name + ".", "A", search=False)]
        except dns.exception.DNSException:
            continue
        if client_ip in forward:
            details["confirmed"] = name
            break
    if not details["confirmed"]:
        return IPRevResult.make("fail", f"{client_ip} is named {', '.join(names)} in reverse DNS, but that name does "
                                        f"not resolve back to {client_ip}", **details)
    name = details["confirmed"]
    details["helo_matches"] = name == (helo or "").rstrip(".").lower()
    if not details["helo_matches"]:
        return IPRevResult.make("pass", f"{client_ip} is {name} in both directions of DNS, but it said HELO "
                                        f"{helo or '(nothing)'}", **details)
    return IPRevResult.make("pass", f"{client_ip} is {name} in both directions of DNS, and that is its HELO name",
                            **details)


def assess(message: bytes, *, mail_from: str, helo: str, client_ip: str, resolver: dns.resolver.Resolver,
           tls: bool = True, bulk: bool = False, authserv_id: str = "mx.inbox.example.org") -> Verdict:
    """Decide where the provider files ``message``, received from ``client_ip`` (which said
    ``HELO helo`` and ``MAIL FROM:<mail_from>``, over TLS or not).

    In order: a From header DMARC cannot read, or a DMARC failure under ``p=reject``, is
    **Rejected**; a DMARC failure under ``p=quarantine``, neither SPF nor DKIM passing, reverse
    DNS missing or not matching HELO, no TLS, and for bulk senders a missing DMARC record or no
    alignment, send it to **Spam**; otherwise **Inbox**.
    """
    spf = evaluate_spf(client_ip, mail_from, helo, resolver=resolver)
    dkim = verify(message, resolver=resolver)
    dmarc = evaluate_dmarc(message, spf, dkim, resolver=resolver)
    iprev = check_iprev(client_ip, helo, resolver=resolver)
    header = authentication_results(authserv_id, spf=spf, dkim=dkim, dmarc=dmarc, iprev=iprev)

    rejected: list[str] = []
    spam: list[str] = []
    notes: list[str] = []

    if dmarc.details.get("malformed_from"):
        rejected.append(N_('The message is refused because {reason}, and RFC 5322 requires exactly one From '
                           'address.').format(reason=dmarc.reason[len('DMARC cannot be checked: '):]))
    elif dmarc.result == "fail" and dmarc.policy == "reject":
        rejected.append(N_('The message is refused because it fails DMARC ({why}) and {from_domain} asks '
                           'receivers to reject such mail (p=reject).').format(
                               why=dmarc.details['why'], from_domain=dmarc.details['from_domain']))
    elif dmarc.result == "fail" and dmarc.policy == "quarantine":
        spam.append(N_('The message goes to Spam because it fails DMARC ({why}) and {from_domain} asks '
                       'receivers to quarantine such mail (p=quarantine).').format(
                           why=dmarc.details['why'], from_domain=dmarc.details['from_domain']))
    elif dmarc.result == "fail":
        notes.append(N_('The message fails DMARC, but {from_domain} only asks for reports (p=none), so DMARC '
                        'alone does not move it.').format(from_domain=dmarc.details['from_domain']))
    elif dmarc.result == "permerror":
        notes.append(N_('DMARC could not be evaluated: {reason}.').format(reason=dmarc.reason))

    if not spf.ok and not dkim.ok:
        spam.append(N_('Neither SPF ({result}) nor DKIM ({result2}) passed, so nothing shows who really sent '
                       'it; the big providers require at least one of them since 2024.').format(
                           result=spf.result, result2=dkim.result))
    if iprev.result != "pass":
        spam.append(N_('The sending host has no forward-confirmed reverse DNS: {reason}.').format(reason=iprev.reason))
    elif not iprev.details["helo_matches"]:
        spam.append(N_("The sending host's reverse DNS name does not match its HELO: {reason}.").format(
            reason=iprev.reason))
    if not tls:
        spam.append(N_('The message came over a connection without TLS, which the big providers require of '
                       'senders.'))
    if bulk:
        if dmarc.result == "none":
            spam.append(N_('A bulk sender must publish a DMARC record, and {get} has none.').format(
                get=dmarc.details.get('from_domain')))
        elif dmarc.result != "pass" and not dmarc.details.get("malformed_from"):
            spam.append(N_("A bulk sender's From domain must align with SPF or DKIM (DMARC pass), and it does not."))

    findings = [N_("SPF {result}: {reason}.").format(result=spf.result, reason=spf.reason),
                N_("DKIM {result}: {reason}.").format(result=dkim.result, reason=dkim.reason),
                N_("DMARC {result}: {reason}.").format(result=dmarc.result, reason=dmarc.reason)]
    if rejected:
        folder, reasons = "Rejected", rejected + spam
    elif spam:
        folder, reasons = "Spam", spam
    else:
        folder = "Inbox"
        if spf.result == dkim.result == dmarc.result == "pass":
            reasons = [N_("Every check the provider makes passed, so the message goes to the Inbox.")]
        else:
            reasons = [f"No check failed (SPF {spf.result}, DKIM {dkim.result}, DMARC {dmarc.result}): with nothing "
                       "against it, the message goes to the Inbox."]
    return Verdict(folder, reasons + notes + findings, spf, dkim, dmarc, iprev, header, notes)
