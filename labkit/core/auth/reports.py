"""What the big provider and the verifier send back: DMARC aggregate reports and auth reports.

Pure functions over verdicts (:class:`labkit.core.auth.verdict.Verdict`): they build messages and
send nothing. The lab's ``inbox`` role keeps a verdict for each message it filed; the
``verifier`` role answers each message with :func:`verifier_report`, as
check-auth@verifier.port25.com does for the memo's author.
"""
from __future__ import annotations

import email as _email
import email.policy
import email.utils
import gzip
import re
import textwrap
import time
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from typing import Any, Iterable

from ...errors import ParseError
from .dmarc import ReportRow, aggregate_report, count_rows, parse_dmarc_tags, report_row


@dataclass(frozen=True)
class Seen:
    """One message the provider assessed, as much of it as an aggregate report counts: where it
    came from, when, the From domain and the DMARC record that applied, and its report row.
    (Not the whole verdict: a provider that assessed 20,000 messages keeps them on disk, and
    this is what a line there holds.)"""

    client_ip: str
    time: float
    from_domain: str  #: "" when DMARC could not read a From domain
    record: str  #: the DMARC record that applied ("" when there is none)
    row: ReportRow

    @classmethod
    def of(cls, client_ip: str, verdict: Any, when: float) -> "Seen":
        """What a report needs of ``verdict`` (a :class:`labkit.core.auth.verdict.Verdict`)."""
        d = verdict.dmarc.details
        return cls(client_ip, when, d.get("from_domain") or "", d.get("record") or "",
                   report_row(client_ip, verdict.spf, verdict.dkim, verdict.dmarc))

    def as_dict(self) -> dict[str, Any]:
        return {"client_ip": self.client_ip, "time": self.time, "from_domain": self.from_domain,
                "record": self.record, "row": asdict(self.row)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Seen":
        return cls(d["client_ip"], d["time"], d["from_domain"], d["record"], ReportRow(**d["row"]))


def rua_addresses(record: str) -> list[str]:
    """The ``mailto:`` addresses of a DMARC record's ``rua=`` tag (size limits ``!10m`` dropped)."""
    tags = parse_dmarc_tags(record)
    out = []
    for uri in tags.get("rua", "").split(","):
        uri = uri.strip()
        if uri.lower().startswith("mailto:"):
            out.append(uri[7:].split("!")[0])
    return out


def aggregate_reports(seen: Iterable[Seen], *, org_name: str, reporter: str, begin: float | None = None,
                      end: float | None = None) -> list[tuple[str, str, bytes]]:
    """One aggregate report per From domain that publishes DMARC with ``rua=``.

    Returns ``(domain, rua address, message bytes)`` for each address: an RFC 5322 message from
    ``reporter`` with the RFC 7489 XML report gzipped and attached, named
    ``receiver!domain!begin!end.xml.gz`` as RFC 7489 §7.2.1.1 asks.
    """
    by_domain: dict[str, tuple[str, float, int, list[ReportRow]]] = {}  # record, first, messages, rows
    for s in seen:  # one pass, keeping counts only: the messages may be many, and streamed from disk
        if s.record and s.from_domain:
            record, first, n, rows = by_domain.get(s.from_domain, ("", s.time, 0, []))
            rows.append(s.row)
            if len(rows) > 1024:
                rows[:] = count_rows(rows)
            by_domain[s.from_domain] = (s.record, min(first, s.time), n + 1, rows)
    out = []
    now = time.time()
    for domain, (record, first, n, rows) in sorted(by_domain.items()):
        addresses = rua_addresses(record)
        if not addresses:
            continue
        b = int(begin if begin is not None else first)
        e = int(end if end is not None else now)
        report_id = f"{org_name}-{domain}-{b}-{e}"
        xml = aggregate_report(org_name=org_name, email_address=reporter, report_id=report_id, domain=domain,
                               published=parse_dmarc_tags(record), rows=count_rows(rows), begin=b, end=e)
        for rua in addresses:
            msg = EmailMessage()
            msg["From"] = reporter
            msg["To"] = rua
            msg["Subject"] = f"Report Domain: {domain} Submitter: {org_name} Report-ID: <{report_id}>"
            msg["Date"] = email.utils.formatdate(localtime=True)
            msg["Message-ID"] = email.utils.make_msgid(domain=org_name)
            msg.set_content(f"This is a DMARC aggregate report from {org_name} for {domain}, "
                            f"covering {n} message(s).\n")
            msg.add_attachment(gzip.compress(xml.encode(), mtime=0), maintype="application", subtype="gzip",
                               filename=f"{org_name}!{domain}!{b}!{e}.xml.gz")
            out.append((domain, rua, msg.as_bytes()))
    return out


def report_xml(message: bytes) -> str:
    """The XML of an aggregate report message (its ``.xml.gz`` or ``.xml`` attachment)."""
    msg = _email.message_from_bytes(message, policy=email.policy.default)
    for part in msg.iter_attachments():
        name = part.get_filename() or ""
        data = part.get_content()
        if name.endswith(".gz"):
            return gzip.decompress(data).decode()
        if name.endswith(".xml"):
            return data if isinstance(data, str) else data.decode()
    raise ParseError("this message has no .xml.gz or .xml attachment: it is not a DMARC aggregate report")


def verifier_report(verdict: Any, *, to: str, sender: str, client_ip: str, helo: str, mail_from: str,
                    subject: str, tls: bool, verifier: str = "check-auth@verifier.example.org") -> bytes:
    """The verifier's answer: a summary table of each check, then the details, as text."""
    rows = [("SPF check", verdict.spf.result, verdict.spf.reason),
            ("DKIM check", verdict.dkim.result, verdict.dkim.reason),
            ("DMARC check", verdict.dmarc.result, verdict.dmarc.reason),
            ("iprev check", verdict.iprev.result, verdict.iprev.reason),
            ("HELO check", "pass" if verdict.iprev.details.get("helo_matches") else "fail",
             f"HELO {helo or '(none)'}; reverse DNS {', '.join(verdict.iprev.details.get('ptr') or []) or '(none)'}"),
            ("TLS", "pass" if tls else "fail", "the message came over TLS" if tls else "the message came in clear")]
    width = max(len(r[0]) for r in rows)
    lines = [
        "This is the Mail Lab verifier (the memo's check-auth@verifier.port25.com).",
        f"It checked the message you sent to {verifier}.",
        "",
        "==========================================================",
        "Summary of Results",
        "==========================================================",
        *[f"{name.ljust(width)} : {result}" for name, result, _ in rows],
        "",
        "==========================================================",
        "Details",
        "==========================================================",
        f"Source IP:    {client_ip}",
        f"HELO:         {helo}",
        f"MAIL FROM:    {mail_from}",
        f"Subject:      {subject}",
        "",
        *[f"{name}: {result}\n    {reason}" for name, result, reason in rows],
        "",
        "Where a big provider would file it: " + verdict.folder,
        *[f"  - {r}" for r in verdict.reasons[:3]],
        "",
        "Authentication-Results: " + ";\n    ".join(p.strip() for p in verdict.authentication_results.split(";")),
    ]
    # SMTP lines stay under 1000 octets (RFC 5321 4.5.3.1.6): wrap long reasons for the reader
    lines = [w for line in "\n".join(lines).split("\n")
             for w in (textwrap.wrap(line, 100, subsequent_indent="      ") or [""])]
    msg = EmailMessage()
    msg["From"] = verifier
    msg["To"] = to
    msg["Subject"] = f"Authentication Report: {subject}"[:200]
    msg["Date"] = email.utils.formatdate(localtime=True)
    msg["Message-ID"] = email.utils.make_msgid(domain=sender)
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834: no loops of automatic answers
    text = "\n".join(lines) + "\n"
    msg.set_content(text, cte="7bit" if text.isascii() else "quoted-printable")  # readable as it is
    return msg.as_bytes()


def verifier_results(text: str) -> dict[str, str]:
    """The "Summary of Results" of a verifier report: ``{"spf": "pass", "dkim": ..., "dmarc": ..., ...}``."""
    out = {}
    for name, word in re.findall(r"^(SPF|DKIM|DMARC|iprev|HELO) check\s*:\s*(\S+)", text, re.MULTILINE):
        out[name.lower()] = word
    return out
