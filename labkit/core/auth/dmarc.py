"""DMARC (RFC 7489): does the visible From domain stand behind the message, and what to do if not.

SPF checks the envelope sender and DKIM the ``d=`` of a signature; neither looks at the
``From:`` the reader sees. DMARC ties them to it: a message passes when SPF passes for a
domain *aligned* with From, or a DKIM signature passes for a ``d=`` aligned with From.
Relaxed alignment (the default) needs the same organizational domain (``mail.example.com``
and ``example.com`` align); strict needs the very same name. The From domain's owner
publishes what a receiver should do with mail that fails: ``p=none`` (only report),
``quarantine`` (Spam folder) or ``reject``.

- :func:`dmarc_record` builds a record, :func:`check_dmarc_record` checks one with checkdmarc;
- :func:`organizational_domain`, :func:`aligned` — alignment, offline (the public suffix list
  packaged with ``publicsuffixlist``; nothing is downloaded);
- :func:`evaluate_dmarc` — the receiver's evaluation of one message;
- :func:`aggregate_report` / :func:`parse_aggregate_report` — the daily XML report (RFC 7489
  appendix C) a receiver sends to ``rua=``; :func:`report_counts` and :func:`report_svg` make it
  a picture;
- :func:`failure_report` — a per-message failure report (RFC 6591, ARF) to ``ruf=``.
"""
from __future__ import annotations

import datetime as _dt
import email.utils
import html
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any, Iterable

import dns.resolver

from ...errors import ConfigError, ParseError
from ...i18n import N_
from ..dns import normalize_name
from .dkim import parse_tags
from .results import AuthResult, fresh_checkdmarc, import_checkdmarc, lookup_txt, run_checkdmarc

POLICIES = ("none", "quarantine", "reject")
#: What each policy asks of a receiver, for the reader.
POLICY_MEANING = {
    "none": N_("deliver as usual and only report (monitoring)"),
    "quarantine": N_("treat as suspicious: put it in the Spam folder"),
    "reject": N_("refuse it during the SMTP dialogue"),
}


class DMARCResult(AuthResult):
    """DMARC for one message (``method == "dmarc"``).

    ``details``: ``from_domain``, ``org_domain``, ``record``, ``location`` (where the record was
    found), ``policy`` (the one that applies: p= or sp=), ``disposition`` (what to do:
    none / quarantine / reject), ``adkim``, ``aspf``, ``spf_aligned``, ``dkim_aligned``,
    ``spf_domain``, ``dkim_domains``, ``warnings``.
    """

    METHOD = "dmarc"

    @property
    def disposition(self) -> str:
        return self.details.get("disposition", "none")

    @property
    def policy(self) -> str:
        return self.details.get("policy", "")


class DMARCRecordCheck(AuthResult):
    """The check of a published DMARC record (``method == "dmarc-record"``)."""

    METHOD = "dmarc-record"


# --------------------------------------------------------------------------- records


def dmarc_record(policy: str = "none", *, subdomain_policy: str | None = None, rua: Iterable[str] = (),
                 ruf: Iterable[str] = (), adkim: str = "r", aspf: str = "r", fo: str | None = None) -> str:
    """A DMARC record (published at ``_dmarc.DOMAIN``) from typed values.

    >>> dmarc_record("quarantine", rua=["dmarc@example.com"])
    'v=DMARC1; p=quarantine; rua=mailto:dmarc@example.com'
    >>> dmarc_record("reject", adkim="s", aspf="s")
    'v=DMARC1; p=reject; adkim=s; aspf=s'
    """
    for name, value in (("p", policy), ("sp", subdomain_policy)):
        if value is not None and value not in POLICIES:
            raise ConfigError(f"dmarc {name}", f"{value!r} is not a policy", f"choose one of {', '.join(POLICIES)}")
    for name, value in (("adkim", adkim), ("aspf", aspf)):
        if value not in ("r", "s"):
            raise ConfigError(f"dmarc {name}", f"{value!r} is not r (relaxed) or s (strict)")
    tags = ["v=DMARC1", f"p={policy}"]
    if subdomain_policy:
        tags.append(f"sp={subdomain_policy}")
    if adkim != "r":
        tags.append(f"adkim={adkim}")
    if aspf != "r":
        tags.append(f"aspf={aspf}")
    for name, addresses in (("rua", rua), ("ruf", ruf)):
        uris = [a if a.startswith("mailto:") else f"mailto:{a}" for a in addresses]
        for uri in uris:
            if "@" not in uri or any(c in uri for c in " ;,"):
                raise ConfigError(f"dmarc {name}", f"{uri!r} is not a mailto: address")
        if uris:
            tags.append(f"{name}={','.join(uris)}")
    if fo:
        tags.append(f"fo={fo}")
    return "; ".join(tags)


def parse_dmarc_tags(text: str) -> dict[str, str]:
    """The tags of a DMARC record (lower-case names); ``ValueError`` if it is not one.

    The tag=value syntax is DKIM's (RFC 7489 §6.4 refers to RFC 6376 §3.2).
    """
    text = text.strip()
    if not text.startswith("v=DMARC1"):
        raise ParseError("a DMARC record starts with v=DMARC1")
    return {name.lower(): value for name, value in parse_tags(text).items()}


def check_dmarc_record(domain: str, resolver: dns.resolver.Resolver) -> DMARCRecordCheck:
    """Check the DMARC record of ``domain`` with checkdmarc: found, one only, its syntax and tag
    values, report addresses; ``details`` holds checkdmarc's report (``tags``, ``warnings``)."""
    check_dmarc = import_checkdmarc("checkdmarc.dmarc").check_dmarc

    domain = normalize_name(domain, "domain")
    record, _location, problem = _find_record(domain, resolver)
    if problem.startswith("temperror:"):
        return DMARCRecordCheck.make("temperror", N_('the DMARC record of {domain} could not be read: {split}').format(
            domain=domain, split=problem.split(':', 1)[1]), domain=domain)
    if record is None and not problem:
        # (asked here first: checkdmarc's walk up to the top-level domain meets the lab DNS's
        # REFUSED for names outside the lab, where the internet would say NXDOMAIN)
        return DMARCRecordCheck.make("none", N_('{domain} publishes no DMARC record (at _dmarc.{domain} or at its '
                                                'organizational domain)').format(domain=domain), domain=domain)

    def valid(report: dict[str, Any]) -> str:
        p = report["tags"]["p"]["value"]
        return N_('the DMARC record of {domain} (at _dmarc.{location}) is valid: p={p}, {get}').format(
            domain=domain, location=report['location'], p=p, get=POLICY_MEANING.get(p, ''))

    return run_checkdmarc(DMARCRecordCheck, check_dmarc, "DMARC", domain, resolver, valid)


# --------------------------------------------------------------------------- alignment


def organizational_domain(domain: str) -> str:
    """The registered ("organizational") domain of ``domain`` from the public suffix list:
    ``mail.example.com`` -> ``example.com``. Offline: the list shipped with publicsuffixlist."""
    return import_checkdmarc("checkdmarc.utils").get_base_domain(domain.rstrip(".").lower())


def aligned(from_domain: str, other: str, mode: str = "r") -> bool:
    """RFC 7489 §3.1: strict (``s``) needs the same name; relaxed (``r``) the same organizational domain."""
    if not from_domain or not other:
        return False
    a, b = from_domain.rstrip(".").lower(), other.rstrip(".").lower()
    if mode == "s":
        return a == b
    return organizational_domain(a) == organizational_domain(b)


def from_domain(message: bytes) -> tuple[str | None, str]:
    """The domain of the message's single From address, or ``(None, why not)``.

    RFC 7489 §6.6.1: DMARC needs exactly one From header with exactly one address.
    """
    try:
        msg = message_from_bytes(message, policy=policy.compat32)
        values = msg.get_all("From") or []
    except Exception as exc:  # noqa: BLE001
        return None, f"the message cannot be parsed ({type(exc).__name__})"
    if not values:
        return None, "the message has no From header"
    if len(values) > 1:
        return None, f"the message has {len(values)} From headers"
    addresses = [a for _n, a in email.utils.getaddresses([str(values[0])]) if a]
    if len(addresses) != 1:
        return None, f"the From header holds {len(addresses)} addresses, not one ({str(values[0])[:60]!r})"
    address = addresses[0]
    if "@" not in address:
        return None, f"the From address {address!r} has no domain"
    domain = address.rsplit("@", 1)[1].strip().rstrip(">").lower()
    try:
        return normalize_name(domain, "From domain"), ""
    except ConfigError:
        return None, f"the From domain {domain!r} is not a valid domain name"


# --------------------------------------------------------------------------- evaluation


def _find_record(domain: str, resolver: dns.resolver.Resolver) -> tuple[str | None, str, str]:
    """(record, location, problem) per RFC 7489 §6.6.3: at the From domain, else the organizational domain.
    ``problem`` is ``temperror:...`` or ``permerror:...`` or empty."""
    places = [domain]
    org = organizational_domain(domain)
    if org != domain:
        places.append(org)
    for place in places:
        found = lookup_txt(resolver, f"_dmarc.{place}")
        if found.temporary:
            return None, place, f"temperror:DNS did not answer for _dmarc.{place} ({found.outcome})"
        records = [r.decode("utf-8", "replace") for r in found.records if r.startswith(b"v=DMARC1")]
        if len(records) > 1:
            return None, place, f"permerror:_dmarc.{place} holds {len(records)} DMARC records; it must hold one"
        if records:
            return records[0], place, ""
    return None, org, ""


def _validate(record: str, location: str, resolver: dns.resolver.Resolver) -> tuple[dict[str, str] | None, list[str], str]:
    """Tags of the record, checkdmarc's warnings, and a syntax problem (empty if none)."""
    checkdmarc_dmarc = import_checkdmarc("checkdmarc.dmarc")
    DMARCError, DMARCSyntaxError = checkdmarc_dmarc.DMARCError, checkdmarc_dmarc.DMARCSyntaxError
    parse_dmarc_record = checkdmarc_dmarc.parse_dmarc_record

    warnings: list[str] = []
    fresh_checkdmarc()
    try:
        parsed = parse_dmarc_record(record, location, resolver=resolver, timeout=resolver.lifetime, retries=0)
        warnings = list(parsed.get("warnings", []))
    except DMARCSyntaxError as exc:
        return None, warnings, str(exc)
    except (DMARCError, Exception) as exc:  # noqa: BLE001 - e.g. an unverified report address: not fatal
        warnings.append(str(exc))
    try:
        tags = parse_dmarc_tags(record)
    except ValueError as exc:
        return None, warnings, str(exc)
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        return None, warnings, f"p={p or '(missing)'} is not none, quarantine or reject"
    return tags, warnings, ""


def evaluate_dmarc(message: bytes, spf=None, dkim=None, *, resolver: dns.resolver.Resolver) -> DMARCResult:
    """DMARC for ``message`` given its SPF and DKIM results (:mod:`labkit.core.auth.spf`, :mod:`labkit.core.auth.dkim`).

    ``pass`` when SPF passed for a domain aligned with From, or a DKIM signature passed for an
    aligned ``d=``; ``fail`` otherwise, with the policy the domain asks for; ``none`` when the
    From domain publishes no record; ``permerror`` for a broken record or a message whose From
    cannot be read; ``temperror`` when DNS did not answer.
    """
    domain, problem = from_domain(message)
    if domain is None:
        return DMARCResult.make("permerror", N_('DMARC cannot be checked: {problem} (RFC 7489 §6.6.1 needs '
                                                'exactly one From address)').format(problem=problem),
                                from_domain="", policy="", disposition="reject", malformed_from=True)
    org = organizational_domain(domain)
    spf_domain = ""
    if spf is not None:
        spf_domain = spf.details.get("domain", "") if spf.ok else ""
    dkim_domains = dkim.passing_domains() if dkim is not None and hasattr(dkim, "passing_domains") else []
    details: dict[str, Any] = {"from_domain": domain, "org_domain": org, "spf_domain": spf_domain,
                               "dkim_domains": dkim_domains, "record": None, "location": None,
                               "policy": "", "disposition": "none", "warnings": []}
    record, location, problem = _find_record(domain, resolver)
    details["location"] = location
    if problem:
        word, text = problem.split(":", 1)
        return DMARCResult.make(word, text, **details)
    if record is None:
        return DMARCResult.make("none", N_('{domain} publishes no DMARC record (_dmarc.{domain}{value})').format(
            domain=domain, value='' if org == domain else f' or _dmarc.{org}'), **details)
    details["record"] = record
    tags, warnings, syntax = _validate(record, location, resolver)
    details["warnings"] = warnings
    if tags is None:
        return DMARCResult.make("permerror", N_('the DMARC record at _dmarc.{location} is broken: {syntax}').format(
            location=location, syntax=syntax), **details)
    adkim = tags.get("adkim", "r").lower() if tags.get("adkim", "r").lower() in ("r", "s") else "r"
    aspf = tags.get("aspf", "r").lower() if tags.get("aspf", "r").lower() in ("r", "s") else "r"
    policy = tags["p"].lower()
    if location != domain:
        sp = tags.get("sp", "").lower()
        policy = sp if sp in POLICIES else policy
    spf_aligned = bool(spf_domain) and aligned(domain, spf_domain, aspf)
    dkim_aligned = [d for d in dkim_domains if aligned(domain, d, adkim)]
    details.update(policy=policy, adkim=adkim, aspf=aspf, spf_aligned=spf_aligned,
                   dkim_aligned=bool(dkim_aligned), tags=tags)
    mode = {"r": "relaxed", "s": "strict"}
    if spf_aligned or dkim_aligned:
        how = []
        if dkim_aligned:
            how.append(N_("DKIM passed for d={domain}").format(domain=dkim_aligned[0]))
        if spf_aligned:
            how.append(N_("SPF passed for {spf_domain}").format(spf_domain=spf_domain))
        return DMARCResult.make("pass", N_('{join}, aligned with From {domain} ({mode} alignment)').format(
            join=' and '.join(how), domain=domain, mode=mode[adkim if dkim_aligned else aspf]), **details)
    details["disposition"] = policy
    why = []
    if spf_domain:
        why.append(N_("SPF passed for {spf_domain}, which is not aligned ({mode})").format(
            spf_domain=spf_domain, mode=mode[aspf]))
    if dkim_domains:
        why.append(N_("DKIM passed for d={domains}, not aligned ({mode})").format(
            domains=', '.join(dkim_domains), mode=mode[adkim]))
    if not why:
        why.append(N_("neither SPF nor DKIM passed"))
    details["why"] = "; ".join(why)
    return DMARCResult.make("fail", N_('From {domain} is not vouched for: {join}; its policy p={policy} asks receivers '
                                       'to '
                                       '{POLICY_MEANING}').format(
                                           domain=domain, join='; '.join(why), policy=policy,
                                           POLICY_MEANING=POLICY_MEANING[policy]), **details)


# --------------------------------------------------------------------------- aggregate reports


@dataclass(frozen=True)
class ReportRow:
    """One ``<record>`` of an aggregate report: messages from one source with one outcome."""

    source_ip: str
    count: int
    header_from: str
    disposition: str  # none / quarantine / reject
    dkim: str  # DMARC's view: pass (aligned pass) or fail
    spf: str
    envelope_from: str = ""
    dkim_domain: str = ""
    dkim_result: str = "none"
    dkim_selector: str = ""
    spf_domain: str = ""
    spf_result: str = "none"


def report_row(ip: str, spf: Any, dkim: Any, dmarc: DMARCResult) -> ReportRow:
    """The report row (``count=1``) of one message from ``ip`` with these results."""
    d = dmarc.details
    sig = next(iter(dkim.signatures), None) if dkim is not None and hasattr(dkim, "signatures") else None
    return ReportRow(
        source_ip=ip, count=1, header_from=d.get("from_domain", ""),
        disposition=d.get("disposition", "none") if dmarc.result == "fail" else "none",
        dkim="pass" if d.get("dkim_aligned") else "fail", spf="pass" if d.get("spf_aligned") else "fail",
        envelope_from=(spf.details.get("domain", "") if spf is not None else ""),
        dkim_domain=sig.details.get("domain", "") if sig else "", dkim_result=sig.result if sig else "none",
        dkim_selector=sig.details.get("selector", "") if sig else "",
        spf_domain=spf.details.get("domain", "") if spf is not None else "",
        spf_result=spf.result if spf is not None else "none")


def count_rows(rows: Iterable[ReportRow]) -> list[ReportRow]:
    """Equal rows counted into one, in the order first seen."""
    counts: dict[ReportRow, int] = {}
    for row in rows:
        key = ReportRow(**{**row.__dict__, "count": 1})
        counts[key] = counts.get(key, 0) + row.count
    return [ReportRow(**{**row.__dict__, "count": n}) for row, n in counts.items()]


def rows_from_results(results: Iterable[tuple[str, Any, Any, DMARCResult]]) -> list[ReportRow]:
    """Group ``(source_ip, spf_result, dkim_result, dmarc_result)`` per message into report rows."""
    return count_rows(report_row(ip, spf, dkim, dmarc) for ip, spf, dkim, dmarc in results)


def _text(parent: ET.Element, tag: str, value: Any) -> ET.Element:
    child = ET.SubElement(parent, tag)
    child.text = str(value)
    return child


def aggregate_report(*, org_name: str, email_address: str, report_id: str, domain: str, published: dict[str, str],
                     rows: Iterable[ReportRow], begin: int, end: int) -> str:
    """An aggregate report (RFC 7489 appendix C) as XML text.

    ``org_name``/``email_address`` name the receiver that writes it (``inbox.example.org``),
    ``domain`` and ``published`` (the tags of its record) the domain it is about, ``begin`` and
    ``end`` the period (seconds since 1970), ``rows`` what was seen (:func:`rows_from_results`).
    """
    feedback = ET.Element("feedback")
    meta = ET.SubElement(feedback, "report_metadata")
    _text(meta, "org_name", org_name)
    _text(meta, "email", email_address)
    _text(meta, "report_id", report_id)
    period = ET.SubElement(meta, "date_range")
    _text(period, "begin", int(begin))
    _text(period, "end", int(end))
    policy = ET.SubElement(feedback, "policy_published")
    _text(policy, "domain", domain)
    _text(policy, "adkim", published.get("adkim", "r"))
    _text(policy, "aspf", published.get("aspf", "r"))
    _text(policy, "p", published.get("p", "none"))
    _text(policy, "sp", published.get("sp", published.get("p", "none")))
    _text(policy, "pct", published.get("pct", "100"))
    for row in rows:
        record = ET.SubElement(feedback, "record")
        r = ET.SubElement(record, "row")
        _text(r, "source_ip", row.source_ip)
        _text(r, "count", row.count)
        evaluated = ET.SubElement(r, "policy_evaluated")
        _text(evaluated, "disposition", row.disposition)
        _text(evaluated, "dkim", row.dkim)
        _text(evaluated, "spf", row.spf)
        identifiers = ET.SubElement(record, "identifiers")
        if row.envelope_from:
            _text(identifiers, "envelope_from", row.envelope_from)
        _text(identifiers, "header_from", row.header_from)
        auth = ET.SubElement(record, "auth_results")
        if row.dkim_domain:
            dk = ET.SubElement(auth, "dkim")
            _text(dk, "domain", row.dkim_domain)
            _text(dk, "result", row.dkim_result)
            if row.dkim_selector:
                _text(dk, "selector", row.dkim_selector)
        sp = ET.SubElement(auth, "spf")
        _text(sp, "domain", row.spf_domain or row.header_from)
        _text(sp, "result", row.spf_result)
    ET.indent(feedback)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(feedback, encoding="unicode") + "\n"


def parse_aggregate_report(xml_text: str | bytes) -> dict[str, Any]:
    """Read an aggregate report back: ``{"org_name", "report_id", "begin", "end", "domain",
    "policy": {...}, "rows": [ReportRow, ...]}``. ``ValueError`` says what is missing."""
    try:
        root = ET.fromstring(xml_text)
    except ET.ParseError as exc:
        raise ParseError(f"not XML: {exc}") from None
    if root.tag != "feedback":
        raise ParseError(f"the root element is <{root.tag}>, not <feedback>")

    def get(node: ET.Element | None, path: str, default: str = "") -> str:
        found = node.find(path) if node is not None else None
        return (found.text or "").strip() if found is not None else default

    meta = root.find("report_metadata")
    published = root.find("policy_published")
    if meta is None or published is None:
        raise ParseError("a report needs <report_metadata> and <policy_published>")
    rows = []
    for record in root.findall("record"):
        dk = record.find("auth_results/dkim")
        rows.append(ReportRow(
            source_ip=get(record, "row/source_ip"), count=int(get(record, "row/count", "0") or 0),
            header_from=get(record, "identifiers/header_from"),
            envelope_from=get(record, "identifiers/envelope_from"),
            disposition=get(record, "row/policy_evaluated/disposition", "none"),
            dkim=get(record, "row/policy_evaluated/dkim", "fail"), spf=get(record, "row/policy_evaluated/spf", "fail"),
            dkim_domain=get(dk, "domain"), dkim_result=get(dk, "result", "none"), dkim_selector=get(dk, "selector"),
            spf_domain=get(record, "auth_results/spf/domain"),
            spf_result=get(record, "auth_results/spf/result", "none")))
    return {
        "org_name": get(meta, "org_name"), "email": get(meta, "email"), "report_id": get(meta, "report_id"),
        "begin": int(get(meta, "date_range/begin", "0") or 0), "end": int(get(meta, "date_range/end", "0") or 0),
        "domain": get(published, "domain"),
        "policy": {tag: get(published, tag) for tag in ("adkim", "aspf", "p", "sp", "pct") if get(published, tag)},
        "rows": rows,
    }


def report_counts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Data ready to plot: messages per source IP and DMARC outcome (pass when DKIM or SPF aligned-passed).

    ``[{"source_ip": "127.0.20.25", "result": "pass", "count": 3}, ...]``, sorted by IP then result.
    """
    totals: dict[tuple[str, str], int] = {}
    for row in report["rows"]:
        outcome = "pass" if "pass" in (row.dkim, row.spf) else "fail"
        totals[(row.source_ip, outcome)] = totals.get((row.source_ip, outcome), 0) + row.count
    return [{"source_ip": ip, "result": res, "count": n} for (ip, res), n in sorted(totals.items())]


def report_svg(counts: list[dict[str, Any]], *, width: int = 480) -> str:
    """A horizontal bar chart (SVG text) of :func:`report_counts`: green pass, red fail, per source IP."""
    ips = sorted({c["source_ip"] for c in counts})
    most = max([c["count"] for c in counts], default=1) or 1
    bar_h, label_w = 18, 120
    height = 20 + len(ips) * (2 * bar_h + 8)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
             f'font-size="12"><title>DMARC results per source IP</title>']
    y = 10
    for ip in ips:
        parts.append(f'<text x="0" y="{y + bar_h + 4}">{html.escape(ip)}</text>')
        for i, outcome in enumerate(("pass", "fail")):
            n = sum(c["count"] for c in counts if c["source_ip"] == ip and c["result"] == outcome)
            w = int((width - label_w - 60) * n / most)
            colour = "#2e7d32" if outcome == "pass" else "#c62828"
            top = y + i * bar_h
            parts.append(f'<rect x="{label_w}" y="{top}" width="{w}" height="{bar_h - 2}" fill="{colour}">'
                         f'<title>{outcome}: {n}</title></rect>')
            parts.append(f'<text x="{label_w + w + 4}" y="{top + bar_h - 5}">{outcome} {n}</text>')
        y += 2 * bar_h + 8
    parts.append("</svg>")
    return "".join(parts)


# --------------------------------------------------------------------------- failure reports


def failure_report(message: bytes, dmarc: DMARCResult, *, reporter: str, to: str, source_ip: str,
                   mail_from: str = "", authentication_results: str = "",
                   when: _dt.datetime | None = None) -> bytes:
    """A DMARC failure report (RFC 6591 over ARF, RFC 5965): a ``multipart/report`` of a
    human-readable part, a ``message/feedback-report`` part and the failed message's headers
    (only the headers, as many receivers send, to disclose less)."""
    when = when or _dt.datetime.now(_dt.timezone.utc)
    domain = dmarc.details.get("from_domain", "") or "unknown"
    report = EmailMessage()
    report["From"] = reporter
    report["To"] = to
    report["Subject"] = f"DMARC failure report for {domain}"
    report["Date"] = email.utils.format_datetime(when)
    report["Message-ID"] = email.utils.make_msgid(domain=reporter.rsplit("@", 1)[-1])
    report.set_content(f"A message claiming to be from {domain} failed DMARC at {reporter.rsplit('@', 1)[-1]}.\n"
                       f"Reason: {dmarc.reason}\n")
    fields = [
        ("Feedback-Type", "auth-failure"),
        ("User-Agent", "labkit/0.1"),
        ("Version", "1"),
        ("Original-Mail-From", f"<{mail_from}>" if mail_from else "<>"),
        ("Arrival-Date", email.utils.format_datetime(when)),
        ("Source-IP", source_ip),
        ("Reported-Domain", domain),
        ("Auth-Failure", "dmarc"),
    ]
    if authentication_results:
        fields.append(("Authentication-Results", " ".join(authentication_results.split())))
    feedback = "".join(f"{name}: {value}\r\n" for name, value in fields)
    head = message.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in message else message.split(b"\n\n", 1)[0]
    report.make_mixed()
    report.replace_header("Content-Type", 'multipart/report; report-type="feedback-report"')
    fb = EmailMessage()
    fb.set_payload(feedback)
    fb["Content-Type"] = "message/feedback-report"
    headers_part = EmailMessage()
    headers_part.set_payload(head.decode("utf-8", "replace").replace("\r\n", "\n") + "\n")
    headers_part["Content-Type"] = "text/rfc822-headers"
    report.attach(fb)
    report.attach(headers_part)
    return report.as_bytes()


def parse_failure_report(data: bytes) -> dict[str, str]:
    """The fields of the ``message/feedback-report`` part of a failure report (RFC 5965), names
    lower-case. Python's email package reads that part as a message of its own and folds a long
    field over several lines when it writes it back; the lines are joined again here."""
    msg = message_from_bytes(data, policy=policy.default)
    for part in msg.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            items = [(k, str(v)) for sub in payload for k, v in sub.items()]
        else:
            text = re.sub(r"\r?\n[ \t]+", " ", str(payload))
            items = [tuple(x.strip() for x in line.split(":", 1)) for line in text.splitlines() if ":" in line]
        return {k.strip().lower(): " ".join(v.split()) for k, v in items}
    raise ParseError("no message/feedback-report part: this is not a failure report")
