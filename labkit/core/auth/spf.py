"""SPF (RFC 7208): which hosts may send mail for a domain, and whether this one did.

- :func:`spf_record` builds a record from typed values (``v=spf1 ip4:127.0.20.25 mx -all``);
- :func:`check_spf_record` checks a published record with checkdmarc: its syntax, one record
  per name, the limit of 10 DNS-querying terms and of 2 "void" lookups (RFC 7208 §4.6.4);
- :func:`evaluate_spf` evaluates a message's sender with pyspf, as a receiving server does:
  the client's IP address, the ``MAIL FROM`` address and the ``HELO`` name.

The memo publishes its record at the host name ``_spf`` (ERRATA.md #6). That is not where
SPF looks: a receiver reads the record at the ``MAIL FROM`` domain itself (or the ``HELO``
name when ``MAIL FROM`` is empty), RFC 7208 §4.1. A record at ``_spf.example.com`` counts only
when the domain's own record includes it (``include:_spf.example.com``);
:func:`evaluate_spf` says so in its reason when it finds one there.

Every lookup goes to the resolver you pass (``lab.resolver()``); nothing else is asked.
"""
from __future__ import annotations

import ipaddress
from typing import Iterable

import dns.exception
import dns.resolver

from ..dns import normalize_name
from ...errors import ConfigError
from .results import AuthResult, field_libraries, import_checkdmarc, lookup_txt, run_checkdmarc

#: RFC 7208 §4.6.4: at most 10 terms that cause DNS lookups (include, a, mx, ptr, exists, redirect).
MAX_LOOKUPS = 10
#: RFC 7208 §4.6.4: at most 2 lookups that find nothing (NXDOMAIN or no answer).
MAX_VOID_LOOKUPS = 2
#: The qualifiers of ``all``: what a host matching nothing else gets.
ALL_QUALIFIERS = {
    "-": "fail: mail from any other host is not authorized",
    "~": "softfail: probably not authorized (accept, but mark)",
    "?": "neutral: the domain says nothing about other hosts",
    "+": "pass: any host may send (never do this)",
}


class SPFResult(AuthResult):
    """The SPF result of one message (``method == "spf"``).

    ``details`` holds ``client_ip``, ``mail_from``, ``helo``, ``identity`` (``mailfrom`` or
    ``helo``), ``domain`` (whose record was evaluated), ``mechanism`` (the term that matched),
    ``lookups``, ``void_lookups``, ``smtp_code`` and ``explanation`` (pyspf's own words).
    """

    METHOD = "spf"

    @property
    def domain(self) -> str:
        return self.details.get("domain", "")


class SPFRecordCheck(AuthResult):
    """The check of a published SPF record (``method == "spf-record"``); ``ok`` when it is usable."""

    METHOD = "spf-record"


# --------------------------------------------------------------------------- building


def spf_record(*, ip4: Iterable[str] = (), ip6: Iterable[str] = (), a: bool | Iterable[str] = False,
               mx: bool | Iterable[str] = False, include: Iterable[str] = (), all: str = "-") -> str:
    """An SPF record from typed values, mechanisms in the usual order.

    >>> spf_record(ip4=["127.0.20.25"], mx=True)
    'v=spf1 ip4:127.0.20.25 mx -all'
    >>> spf_record(include=["_spf.example.com"], all="~")
    'v=spf1 include:_spf.example.com ~all'

    ``a``/``mx`` are ``True`` for the domain's own A/MX, or names of other domains. ``all`` is
    the qualifier for every other host (see :data:`ALL_QUALIFIERS`).
    """
    terms = ["v=spf1"]
    for value in ip4:
        terms.append("ip4:" + _network(value, 4))
    for value in ip6:
        terms.append("ip6:" + _network(value, 6))
    for mech, value in (("a", a), ("mx", mx)):
        if value is True:
            terms.append(mech)
        elif value:
            terms += [f"{mech}:{normalize_name(n, f'spf {mech}')}" for n in value]
    terms += [f"include:{normalize_name(n, 'spf include')}" for n in include]
    if all not in ALL_QUALIFIERS:
        raise ConfigError("spf all", f"{all!r} is not a qualifier",
                          "use '-' (fail), '~' (softfail), '?' (neutral); RFC 7208 §4.6.2")
    terms.append(f"{all}all")
    record = " ".join(terms)
    lookups = sum(t.split(":")[0] in ("a", "mx", "include") for t in terms)
    if lookups > MAX_LOOKUPS:
        raise ConfigError("spf record", f"has {lookups} terms that query DNS, more than {MAX_LOOKUPS}",
                          "RFC 7208 §4.6.4: receivers return permerror; use ip4:/ip6: terms instead")
    return record


def _network(value: str, version: int) -> str:
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ConfigError(f"spf ip{version}", f"{value!r} is not an address or network") from None
    if net.version != version:
        raise ConfigError(f"spf ip{version}", f"{value!r} is an IPv{net.version} address",
                          f"use ip{net.version}: for it")
    full = 32 if version == 4 else 128
    return str(net.network_address) if net.prefixlen == full else str(net)


# --------------------------------------------------------------------------- checking a record


def check_spf_record(domain: str, resolver: dns.resolver.Resolver) -> SPFRecordCheck:
    """Check the SPF record published at ``domain`` with checkdmarc (asking only ``resolver``).

    Finds a missing record, two records at one name, syntax errors, more than 10 DNS-querying
    terms and more than 2 void lookups, each in one sentence; ``details`` holds checkdmarc's
    report (``record``, ``dns_lookups``, ``void_dns_lookups``, ``parsed``, ``warnings``).
    """
    check_spf = import_checkdmarc("checkdmarc.spf").check_spf

    domain = normalize_name(domain, "domain")
    found = lookup_txt(resolver, domain)
    if found.temporary:
        return SPFRecordCheck.make("temperror", f"the SPF record of {domain} could not be read: DNS said "
                                                f"{found.outcome}", domain=domain, outcome=found.outcome)
    if not any(r.lower().startswith(b"v=spf1") for r in found.records):
        return SPFRecordCheck.make("none", f"{domain} publishes no SPF record ({found.outcome})",
                                   domain=domain, outcome=found.outcome)
    return run_checkdmarc(SPFRecordCheck, check_spf, "SPF", domain, resolver,
                          lambda report: f"the SPF record of {domain} is valid: "
                                         f"{report.get('dns_lookups') or 0} of {MAX_LOOKUPS} DNS lookups used")


# --------------------------------------------------------------------------- evaluating a sender


def _reason(result: str, ip: str, domain: str, identity: str, mechanism: str | None, explanation: str) -> str:
    who = "MAIL FROM" if identity == "mailfrom" else "HELO"
    if result == "pass":
        return f"{ip} is allowed to send mail for {domain} ({who} domain): its SPF record matched {mechanism}"
    if result == "fail":
        return (f"{ip} is not allowed to send mail for {domain} ({who} domain): its SPF record ends "
                f"with {mechanism or '-all'}, which says reject everything else")
    if result == "softfail":
        return (f"{ip} is probably not allowed to send mail for {domain} ({who} domain): its SPF "
                f"record ends with {mechanism or '~all'}, accept but treat as suspicious")
    if result == "neutral":
        return f"the SPF record of {domain} says nothing about {ip} ({mechanism or '?all'})"
    if result == "none":
        return f"{domain} publishes no SPF record (a TXT record starting v=spf1 at {domain} itself)"
    if result == "temperror":
        return f"the SPF record of {domain} could not be read because DNS did not answer ({explanation}); try again later"
    return f"the SPF record of {domain} is broken, so SPF cannot say anything: {explanation}"


def evaluate_spf(client_ip: str, mail_from: str, helo: str, *, resolver: dns.resolver.Resolver) -> SPFResult:
    """Evaluate SPF for a message as a receiver does (RFC 7208 §2.4), with pyspf.

    ``client_ip`` is the address the message came from, ``mail_from`` the envelope sender
    (``MAIL FROM:<...>``; empty for a bounce, then the ``HELO`` name is checked instead),
    ``helo`` the name the client gave in ``HELO``/``EHLO``. The result is one of ``pass``,
    ``fail``, ``softfail``, ``neutral``, ``none``, ``temperror`` (DNS did not answer) or
    ``permerror`` (the record is broken: a syntax error, two records, more than 10 lookups,
    more than 2 void lookups), with a reason; never an exception for bad DNS data.
    """
    import spf

    try:
        ipaddress.ip_address(client_ip)
    except ValueError:
        raise ConfigError("client_ip", f"{client_ip!r} is not an IP address",
                          "give the address the SMTP client connected from") from None
    mail_from = (mail_from or "").strip().strip("<>")
    helo = (helo or "").strip()
    query = spf.query(i=client_ip, s=mail_from, h=helo, timeout=resolver.lifetime)
    try:
        with field_libraries(resolver):
            result, code, explanation = query.check()
    except (dns.exception.DNSException, OSError) as exc:  # pyspf lets some escape
        result, code, explanation = "temperror", 451, f"DNS error: {exc}"
    except Exception as exc:  # noqa: BLE001 - a library bug must not stop the mail flow
        result, code, explanation = "temperror", 451, f"pyspf failed: {type(exc).__name__}: {exc}"
    domain = query.d or query.o or helo
    identity = query.ident
    mechanism = query.mechanism
    if isinstance(mechanism, (list, tuple)):
        mechanism = " ".join(str(m) for m in mechanism)
    reason = _reason(result, client_ip, domain, identity, mechanism, explanation)
    details = {
        "client_ip": client_ip, "mail_from": mail_from, "helo": helo, "identity": identity,
        "domain": domain, "mechanism": mechanism, "lookups": query.lookups,
        "void_lookups": query.void_lookups, "smtp_code": code, "explanation": explanation,
    }
    if result == "none":
        hint = _misplaced_record(domain, resolver)
        if hint:
            reason += f". {hint}"
            details["misplaced_record"] = f"_spf.{domain}"
    return SPFResult.make(result, reason, **details)


def _misplaced_record(domain: str, resolver: dns.resolver.Resolver) -> str:
    """If ``_spf.DOMAIN`` holds an SPF record, say why it did not count (ERRATA.md #6)."""
    try:
        answer = resolver.resolve(f"_spf.{domain}.", "TXT", search=False)
    except (dns.exception.DNSException, ValueError):
        return ""
    for rdata in answer:
        if b"".join(rdata.strings).lower().startswith(b"v=spf1"):
            return (f"There is one at _spf.{domain}, but SPF never looks there on its own: it reads "
                    f"the record at the MAIL FROM domain {domain} itself (RFC 7208 §4.1); publish "
                    f"'v=spf1 include:_spf.{domain} -all' at {domain}")
    return ""
