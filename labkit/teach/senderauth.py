"""Sender authentication in a running lab: publish records, follow one message, draw what happened.

The checks themselves live in :mod:`labkit.core.auth` (pure, over bytes and a resolver). This module
ties them to a running :class:`labkit.Lab`, for chapters 10-13:

- :func:`publish`, :func:`unpublish`, :func:`published` — put a TXT record (SPF, DKIM, DMARC) in
  the lab DNS, take it away, and ask the lab DNS what it answers now;
- :func:`send_from_host` — send as a lab *server* does (its own address, its own name in HELO),
  not as the learner's PC: what a host that is not yours does when it forges your From;
- :func:`journey` -> :class:`Journey` — one message's way to the provider, read from what the lab
  measured: its ``Received:`` lines, the provider's ``Authentication-Results`` and "assessed"
  event (where it was filed and why), and in real mode OpenDKIM's log line for it. A Journey is
  a table of the checks (:meth:`Journey.table`) and a picture (:meth:`Journey.diagram`);
- :func:`outcomes` — several journeys side by side, coloured by result;
- :func:`aggregate_reports_received` and :func:`report_picture` — the DMARC aggregate reports that
  reached a ``rua=`` mailbox, and a bar chart of them (:func:`labkit.core.auth.dmarc.report_svg`);
- :func:`send_failure_reports` — failure reports (RFC 6591) for the messages the provider found
  failing DMARC, sent to the domain's ``ruf=`` address, as receivers that send them do;
- :func:`show_original` and :func:`postmaster_dashboard` — the provider's own views: one message's
  "show original" summary and source, and the sending domain's authentication and spam rates.

Nothing here prints or stores a secret. Importing this module does no I/O.
"""
from __future__ import annotations

import email
import email.policy
import html
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.auth.dkim import verify
from ..core.auth.dmarc import (DMARCResult, evaluate_dmarc, failure_report, parse_aggregate_report,
                               parse_dmarc_tags, parse_failure_report, report_counts, report_svg)
from ..core.auth.reports import report_xml
from ..core.auth.results import authentication_results, lookup_txt, parse_authentication_results
from ..core.auth.spf import evaluate_spf
from ..core.dns import find_zone
from ..core.trace import Hop, hops
from ..errors import ConfigError, LabStateError
from ..i18n import N_, _
from ..net.clients.smtp import send_message
from .display import Diagram, Table

if TYPE_CHECKING:  # the lab floor, for type hints only
    from ..lab.lab import Lab

#: The provider's checks, in the order a reader meets them, and how the reader calls them.
METHODS = {"spf": "SPF", "dkim": "DKIM", "dmarc": "DMARC", "iprev": "reverse DNS"}
#: Colours of a result word: green for pass, red for a failure, grey for "nothing to say".
COLOURS = {"pass": ("#c8e6c9", "#2e7d32"), "fail": ("#ffcdd2", "#c62828"), "softfail": ("#ffe0b2", "#ef6c00"),
           "permerror": ("#ffcdd2", "#c62828"), "temperror": ("#fff9c4", "#f9a825"),
           "neutral": ("#eeeeee", "#757575"), "none": ("#eeeeee", "#757575")}
FOLDER_COLOURS = {"INBOX": ("#c8e6c9", "#2e7d32"), "Spam": ("#ffe0b2", "#ef6c00"), "Rejected": ("#ffcdd2", "#c62828")}


# --------------------------------------------------------------------------- records in the lab DNS


def _zone(lab: Lab, name: str):
    if not lab.running:
        raise LabStateError("the lab is not running; call lab.start() first")
    zone = find_zone(lab.zones, name)
    if zone is None:
        raise ConfigError("name", f"{name!r} is in none of the lab's zones",
                          "publish under example.com, isp.example.net, inbox.example.org or verifier.example.org")
    return zone


def publish(lab: Lab, name: str, text: str | Iterable[str]) -> list[str]:
    """Publish the TXT record(s) ``text`` at ``name`` in the lab DNS, replacing what was there.

    Served at once (the lab DNS reads its zones live). Returns the records now at ``name``.
    A long record is split into 255-octet strings when served (:func:`labkit.core.dns.split_txt`).
    """
    values = [text] if isinstance(text, str) else list(text)
    if not values or not all(isinstance(v, str) and v for v in values):
        raise ConfigError("text", "give the record's text (a non-empty str, or a list of them)")
    _zone(lab, name).replace(name, "TXT", values)
    return values


def unpublish(lab: Lab, name: str) -> int:
    """Remove every TXT record at ``name`` from the lab DNS; return how many there were."""
    return _zone(lab, name).remove(name, "TXT")


def published(lab: Lab, name: str) -> list[str]:
    """What the lab DNS answers for TXT at ``name`` now (each record's strings joined), as a
    receiver sees it; ``[]`` when there is none."""
    return [r.decode("utf-8", "replace") for r in lookup_txt(lab.resolver(), name).records]


# --------------------------------------------------------------------------- sending as a server


def send_from_host(lab: Lab, host: str, mail_from: str, rcpt_to: str | list[str], *, via: str = "inbox",
                   message: bytes | str | None = None, subject: str | None = None, body: str | None = None):
    """Send straight to the lab service ``via`` from lab host ``host`` (a key: ``verifier``, ``inbox``...),
    as a mail server does: from its own address, with its own name in HELO, no AUTH.

    ``lab.send`` speaks as the learner's PC (HELO pc.example.com); a server that hands mail to a
    provider says its own name, which the provider compares with its reverse DNS. Returns the
    SendResult (with the transcript). ``mail_from=""`` sends with the null sender (``MAIL FROM:<>``),
    as reports and bounces do.
    """
    lab_ctx = lab.ctx
    if not lab.running or lab_ctx is None:
        raise LabStateError("the lab is not running; call lab.start() first")
    h = lab.world.host(host)
    svc = lab.services[via]
    return send_message(svc.host, svc.port, mail_from=mail_from,
                        rcpt_to=[rcpt_to] if isinstance(rcpt_to, str) else list(rcpt_to),
                        message=message, subject=subject, body=body, helo=h.name,
                        implicit_tls=svc.protocol == "smtps", cafile=str(lab_ctx.ca_path),
                        server_hostname=svc.name, source_address=(h.address, 0),
                        timeout=lab.options.smtp_timeout, server_name=f"{svc.name}:{svc.standard_port}")


def questions_diagram(queries: Iterable[Any], asker: str = "the receiver", server: str = "lab DNS") -> Diagram:
    """A Mermaid sequence diagram of DNS questions (:meth:`labkit.Lab.dns_queries` entries, or any
    objects with ``name``, ``type`` and ``rcode``): what a check asked, in order, and what it got."""
    lines = ["sequenceDiagram", f"    participant R as {_m(asker)}", f"    participant D as {_m(server)}"]
    count = 0
    for q in queries:
        count += 1
        lines.append(f"    R->>D: {count}. {_m(q.type)} {_m(q.name)}?")
        lines.append(f"    D-->>R: {_m(q.rcode)}")
    if not count:
        lines.append("    Note over R,D: no question was asked")
    return Diagram("\n".join(lines))


def wait_for_subject(lab: Lab, address: str, subject: str, timeout: float = 10) -> dict[str, Any]:
    """Wait until ``address``'s mailbox (any folder) holds a message with ``subject``; return the newest."""
    return lab.wait_for_mail(address, subject=subject, timeout=timeout)[-1]


# --------------------------------------------------------------------------- one message's journey


@dataclass(frozen=True)
class Check:
    """One check the provider made: ``method`` (spf, dkim, dmarc, iprev), its result word and reason."""

    method: str
    result: str
    reason: str
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.result == "pass"


@dataclass(frozen=True)
class Journey:
    """Where one message went and why, from what the lab measured.

    ``folder``: ``INBOX``, ``Spam`` (or another folder the provider filed it in), or ``Rejected``
    (refused with 550 during SMTP, so no copy exists). ``reasons``: the provider's sentences,
    the deciding ones first. ``checks``: method -> :class:`Check` (from the provider's
    ``Authentication-Results``). ``hops``: the ``Received:`` lines, oldest first. ``signatures``:
    ``(d=, s=)`` of each DKIM-Signature the message carried. ``opendkim``: OpenDKIM's log line for
    it in real mode ("DKIM-Signature field added ..."), ``""`` if it logged none, ``None`` when no
    OpenDKIM ran.
    """

    subject: str
    address: str
    folder: str
    reasons: list[str]
    checks: dict[str, Check]
    authentication_results: str = ""
    hops: list[Hop] = field(default_factory=list)
    signatures: list[tuple[str, str]] = field(default_factory=list)
    queue_id: str = ""  #: the provider's queue id (its Received line's ``id``)
    path: str = ""  #: the stored message (empty when rejected)
    opendkim: str | None = None
    mail_from: str = ""

    @property
    def ok(self) -> bool:
        """True when the message reached the Inbox."""
        return self.folder == "INBOX"

    def result(self, method: str) -> str:
        """The result word of ``method`` (``spf``, ``dkim``, ``dmarc``, ``iprev``), ``none`` if absent."""
        check = self.checks.get(method)
        return check.result if check else "none"

    def __str__(self) -> str:
        words = ", ".join(f"{METHODS.get(m, m)} {c.result}" for m, c in self.checks.items())
        return f"{self.subject!r} -> {self.folder} ({words}): {_(self.reasons[0]) if self.reasons else ''}"

    def table(self) -> Table:
        """The checks as a table: check, result, what was checked, reason."""
        rows = []
        for method, c in self.checks.items():
            what = ", ".join(f"{k}={v}" for k, v in c.properties.items())
            rows.append({"check": METHODS.get(method, method), "result": c.result, "checked": what,
                         "reason": _(c.reason)})
        rows.append({"check": _(N_("filed in")), "result": self.folder, "checked": self.address,
                     "reason": _(self.reasons[0]) if self.reasons else ""})
        return Table(rows, [N_("check"), N_("result"), N_("checked"), N_("reason")])

    def mermaid(self) -> str:
        """A Mermaid flowchart: the hosts it passed, each check at the provider, the folder."""
        lines = ["flowchart LR"]
        nodes: list[str] = []
        first = self.hops[0] if self.hops else None
        sender = self.mail_from or "sender"
        lines.append(f'    s["{_m(sender)}<br/>{_m(first.from_helo if first else "")}"]')
        prev = "s"
        for i, h in enumerate(self.hops, 1):
            label = _m(h.by)
            if i == 1 and self.signatures and (self.opendkim or self.opendkim is None):
                d, s = self.signatures[-1]
                label += f"<br/>signed d={_m(d)} s={_m(s)}"
            if self.opendkim:
                label += "<br/>OpenDKIM logged it" if i == 1 else ""
            lines.append(f'    h{i}["{label}"]')
            lines.append(f"    {prev} -->|{_m(h.with_ or 'SMTP')}| h{i}")
            nodes.append(f"h{i}")
            prev = f"h{i}"
        if not self.hops:  # rejected: no Received lines to read; the provider is still the last host
            lines.append('    h1["the provider"]')
            lines.append("    s --> h1")
            prev = "h1"
        for method, c in self.checks.items():
            lines.append(f'    c_{method}["{_m(METHODS.get(method, method))}: {_m(c.result)}"]:::{_klass(c.result)}')
            lines.append(f"    {prev} --> c_{method}")
            lines.append(f"    c_{method} --> f")
        folder = {"INBOX": "Inbox", "Rejected": "Rejected (550)"}.get(self.folder, self.folder)
        lines.append(f'    f(["{_m(folder)}"]):::{_folder_klass(self.folder)}')
        if not self.checks:
            lines.append(f"    {prev} --> f")
        for name, (fill, stroke) in (("pass", COLOURS["pass"]), ("fail", COLOURS["fail"]),
                                     ("soft", COLOURS["softfail"]), ("other", COLOURS["none"])):
            lines.append(f"    classDef {name} fill:{fill},stroke:{stroke},color:#000")
        return "\n".join(lines)

    def diagram(self) -> Diagram:
        """:meth:`mermaid` as a picture Jupyter draws."""
        return Diagram(self.mermaid())

    def _repr_markdown_(self) -> str:
        return self.diagram()._repr_markdown_() + "\n\n" + self.table().to_markdown()


def _m(text: str) -> str:
    """Text safe inside a Mermaid node label."""
    return re.sub(r'[<>;#"{}\[\]|()]', " ", str(text)).strip()


def _klass(result: str) -> str:
    return {"pass": "pass", "fail": "fail", "permerror": "fail", "softfail": "soft",
            "temperror": "soft"}.get(result, "other")


def _folder_klass(folder: str) -> str:
    return {"INBOX": "pass", "Rejected": "fail"}.get(folder, "soft")


def _parse_checks(value: str) -> dict[str, Check]:
    parsed = parse_authentication_results(value)
    checks: dict[str, Check] = {}
    for r in parsed["results"]:
        method = r["method"]
        if method in checks and (checks[method].ok or r["result"] != "pass"):
            continue  # several DKIM signatures: keep a passing one if any
        checks[method] = Check(method, r["result"], r["reason"] or "", dict(r["properties"]))
    return {m: checks[m] for m in sorted(checks, key=lambda m: list(METHODS).index(m) if m in METHODS else 9)}


def _signatures(msg: email.message.Message) -> list[tuple[str, str]]:
    out = []
    for value in msg.get_all("DKIM-Signature") or []:
        tags = dict(re.findall(r"\b([a-z]+)\s*=\s*([^;]*)", " ".join(str(value).split())))
        out.append((tags.get("d", "").strip(), tags.get("s", "").strip()))
    return out


def _opendkim_line(lab: Lab, hs: list[Hop]) -> str | None:
    runner = lab.opendkim_runner
    if runner is None:
        return None
    mine = [h.id for h in hs if h.by == lab.world.host("home").name]
    for event in runner.events():
        if event.queue_id and event.queue_id in mine and event.kind == "signed":
            return event.text
    return ""


def journey(lab: Lab, subject: str, address: str = "bob@inbox.example.org", *, after: int = 0,
            timeout: float = 10) -> Journey:
    """Follow the message with ``subject`` to ``address`` at the provider: where it was filed and why.

    Waits up to ``timeout`` seconds for it to arrive. A message the provider refused (550 under
    ``p=reject``) leaves no copy: then the newest "assessed" event with folder Rejected among the
    lab events numbered ``after`` or later (``after=len(lab.events)`` taken before sending) is it.
    Raises :class:`TimeoutError` saying what to look at when neither is found.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = lab.mailbox(address, subject)
        if found:
            return _from_copy(lab, found[-1], subject, address)
        rejected = [e for e in list(lab.events)[after:] if e.kind == "assessed" and e.role == "inbox"
                    and e.get("folder") == "Rejected"]
        if rejected and after:
            return _from_event(lab, rejected[-1], subject, address)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no message with Subject {subject!r} reached {address} within {timeout} s, and no "
                               f"refusal was recorded after event #{after}; look at lab.events.select('deferred') "
                               "and ('bounced'), and in real mode at lab.postfix_runner.maillog_text()")
        time.sleep(0.02)


def _from_copy(lab: Lab, info: Mapping[str, Any], subject: str, address: str) -> Journey:
    raw = Path(info["path"]).read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    hs = hops(raw)
    provider = lab.world.host("inbox").name
    queue_id = next((h.id for h in reversed(hs) if h.by == provider), "")
    value = " ".join(str(msg.get("Authentication-Results", "")).split())
    checks = _parse_checks(value) if value else {}
    event = next((e for e in lab.events.select("assessed", role="inbox") if e.get("queue_id") == queue_id), None)
    reasons = list(event.get("reasons", [])) if event is not None else []
    folder = info.get("folder") or "INBOX"
    mail_from = checks["spf"].properties.get("smtp.mailfrom", "") if "spf" in checks else ""
    return Journey(subject, address, folder, reasons, checks, value, hs, _signatures(msg), queue_id,
                   str(info["path"]), _opendkim_line(lab, hs), mail_from)


def _from_event(lab: Lab, event: Any, subject: str, address: str) -> Journey:
    value = event.get("authentication_results", "")
    checks = _parse_checks(value) if value else {}
    mail_from = checks["spf"].properties.get("smtp.mailfrom", "") if "spf" in checks else ""
    return Journey(subject, address, "Rejected", list(event.get("reasons", [])), checks, value, [], [],
                   event.get("queue_id", ""), "", None, mail_from)


# --------------------------------------------------------------------------- several journeys


class Outcomes:
    """Several journeys side by side (a scenario a row), each result coloured: HTML in Jupyter."""

    COLUMNS = ("spf", "dkim", "dmarc", "iprev")

    def __init__(self, journeys: Mapping[str, Journey]):
        self.journeys = dict(journeys)

    def rows(self) -> list[dict[str, str]]:
        return [{"scenario": name, **{METHODS[m]: j.result(m) for m in self.COLUMNS}, "folder": j.folder,
                 "why": j.reasons[0] if j.reasons else ""} for name, j in self.journeys.items()]

    def _repr_html_(self) -> str:
        head = "".join(f'<th style="text-align:left">{html.escape(_(c))}</th>'
                       for c in (N_("scenario"), *(METHODS[m] for m in self.COLUMNS), N_("folder"), N_("why")))
        body = []
        for row in self.rows():
            cells = [f'<td style="text-align:left">{html.escape(row["scenario"])}</td>']
            for m in self.COLUMNS:
                word = row[METHODS[m]]
                fill, _stroke = COLOURS.get(word, COLOURS["none"])
                cells.append(f'<td style="background:{fill};color:#000">{html.escape(word)}</td>')
            fill, _stroke = FOLDER_COLOURS.get(row["folder"], FOLDER_COLOURS["Spam"])
            cells.append(f'<td style="background:{fill};color:#000"><b>{html.escape(row["folder"])}</b></td>')
            cells.append(f'<td style="text-align:left">{html.escape(_(row["why"]))}</td>')
            body.append("<tr>" + "".join(cells) + "</tr>")
        return (f'<table class="labkit-table"><thead><tr>{head}</tr></thead><tbody>'
                + "".join(body) + "</tbody></table>")

    def __repr__(self) -> str:
        return repr(Table(self.rows()))


def outcomes(journeys: Mapping[str, Journey]) -> Outcomes:
    """``{"scenario": Journey}`` as one coloured table (what each check said, where it was filed)."""
    return Outcomes(journeys)


# --------------------------------------------------------------------------- DMARC reports


class Picture:
    """An SVG picture Jupyter shows as it is (``.svg`` holds the text)."""

    def __init__(self, svg: str):
        self.svg = svg

    def _repr_svg_(self) -> str:
        return self.svg

    def __repr__(self) -> str:
        return f"<Picture: {len(self.svg)} characters of SVG>"


def aggregate_reports_received(lab: Lab, address: str = "dmarc@example.com") -> list[dict[str, Any]]:
    """Every DMARC aggregate report in ``address``'s mailbox, read back
    (:func:`labkit.core.auth.dmarc.parse_aggregate_report`), oldest first; each also has ``path``."""
    reports = []
    for info in lab.mailbox(address):
        if not str(info.get("subject", "")).startswith("Report Domain:"):
            continue
        report = parse_aggregate_report(report_xml(Path(info["path"]).read_bytes()))
        report["path"] = info["path"]
        reports.append(report)
    return reports


def merge_reports(reports: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several aggregate reports as one (their rows together), for one chart."""
    reports = list(reports)
    if not reports:
        raise ConfigError("reports", "none to merge", "send some with lab.send_dmarc_reports() first")
    return {**reports[-1], "rows": [row for r in reports for row in r["rows"]],
            "report_id": ", ".join(r["report_id"] for r in reports)}


def report_picture(report: Mapping[str, Any]) -> Picture:
    """A bar chart of an aggregate report: messages per source IP that passed and failed DMARC."""
    return Picture(report_svg(report_counts(dict(report))))


def report_table(report: Mapping[str, Any]) -> Table:
    """The rows of an aggregate report as a table (source, count, what DMARC and each check said)."""
    return Table([{"source_ip": r.source_ip, "count": r.count, "header_from": r.header_from,
                   "disposition": r.disposition, "DKIM aligned": r.dkim, "SPF aligned": r.spf,
                   "dkim d=": r.dkim_domain, "dkim result": r.dkim_result, "spf domain": r.spf_domain,
                   "spf result": r.spf_result} for r in report["rows"]])


def failure_report_for(lab: Lab, message: bytes, *, client_ip: str, mail_from: str, helo: str,
                       reporter: str | None = None) -> list[tuple[str, bytes]]:
    """The failure reports (RFC 6591) a receiver would send about ``message``: one per ``ruf=``
    address of its From domain's DMARC record, ``[]`` when it passes DMARC or asks for none.

    The checks are made again as the provider made them (same client, MAIL FROM and HELO).
    """
    resolver = lab.resolver()
    spf = evaluate_spf(client_ip, mail_from, helo, resolver=resolver)
    dkim = verify(message, resolver=resolver)
    dmarc = evaluate_dmarc(message, spf, dkim, resolver=resolver)
    if dmarc.result != "fail" or not dmarc.details.get("record"):
        return []
    tags = parse_dmarc_tags(dmarc.details["record"])
    addresses = [u.strip()[7:].split("!")[0] for u in tags.get("ruf", "").split(",")
                 if u.strip().lower().startswith("mailto:")]
    provider = lab.world.host("inbox")
    reporter = reporter or f"dmarc-reports@{lab.world.local_domains('inbox')[0]}"
    header = authentication_results(provider.name, spf=spf, dkim=dkim, dmarc=dmarc)
    return [(to, failure_report(message, dmarc, reporter=reporter, to=to, source_ip=client_ip,
                                mail_from=mail_from, authentication_results=header)) for to in addresses]


def send_failure_reports(lab: Lab, address: str = "bob@inbox.example.org", *, after: int = 0) -> list[dict[str, Any]]:
    """Send failure reports for the messages the provider filed for ``address`` that failed DMARC.

    For each such message (the provider recorded ``dmarc=fail`` for it), whose From domain asks
    for them (``ruf=`` in its DMARC record as published now), the provider's host sends an RFC 6591
    report from the null sender to that address through the domain's MX. What failed, and why, is
    taken from the provider's own ``Authentication-Results``, not checked again. ``after``: only
    messages whose "assessed" event is numbered ``after`` or later. Returns ``[{"subject", "to",
    "ok", "reply"}]``.
    """
    wanted = {e.get("queue_id") for e in list(lab.events)[after:] if e.kind == "assessed" and e.role == "inbox"
              and e.get("dmarc") == "fail"}
    provider = lab.world.host("inbox")
    reporter = f"dmarc-reports@{lab.world.local_domains('inbox')[0]}"
    sent = []
    for info in lab.mailbox(address):
        raw = Path(info["path"]).read_bytes()
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        value = " ".join(str(msg.get("Authentication-Results", "")).split())
        ids = [h.id for h in hops(raw) if h.by == provider.name]
        if not value or not ids or ids[-1] not in wanted:
            continue
        props: dict[str, str] = {}
        dmarc_clause: dict[str, Any] = {}
        for r in parse_authentication_results(value)["results"]:
            props.update(r["properties"])
            if r["method"] == "dmarc":
                dmarc_clause = r
        domain = props.get("header.from", "")
        records = [t for t in published(lab, f"_dmarc.{domain}") if t.startswith("v=DMARC1")] if domain else []
        if not dmarc_clause or len(records) != 1:
            continue
        tags = parse_dmarc_tags(records[0])
        dmarc = DMARCResult.make("fail", dmarc_clause.get("reason") or "DMARC failed", from_domain=domain,
                                 record=records[0])
        for uri in tags.get("ruf", "").split(","):
            if not uri.strip().lower().startswith("mailto:"):
                continue
            to = uri.strip()[7:].split("!")[0]
            report = failure_report(_without_provider_lines(raw), dmarc, reporter=reporter, to=to,
                                    source_ip=props.get("policy.iprev", ""),
                                    mail_from=props.get("smtp.mailfrom", ""), authentication_results=value)
            via = "mta" if to.rsplit("@", 1)[1] in lab.world.local_domains("mda") else "inbox"
            result = send_from_host(lab, "inbox", "", to, via=via, message=report)
            sent.append({"subject": info.get("subject"), "to": to, "ok": result.ok, "reply": str(result.reply)})
    return sent


def _without_provider_lines(raw: bytes) -> bytes:
    """The message as it reached the provider: its own Authentication-Results line taken off."""
    head, sep, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
    lines = head.split(b"\n")
    out: list[bytes] = []
    skipping = False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                out.append(line)
            continue
        skipping = line.lower().startswith(b"authentication-results:") and not out
        if not skipping:
            out.append(line)
    return (b"\n".join(out) + sep + body).replace(b"\n", b"\r\n")


def failure_reports_received(lab: Lab, address: str = "dmarc@example.com") -> list[dict[str, str]]:
    """The failure reports in ``address``'s mailbox: the fields of each ``message/feedback-report``
    part (names lower-case, folded lines joined), plus ``subject``."""
    out = []
    for info in lab.mailbox(address):
        if str(info.get("subject", "")).startswith("DMARC failure report"):
            data = Path(info["path"]).read_bytes()
            out.append({"subject": info.get("subject", ""), "original-subject": _reported_subject(data),
                        **feedback_fields(data)})
    return out


def _reported_subject(report: bytes) -> str:
    """The Subject of the reported message, from the report's ``text/rfc822-headers`` part."""
    msg = email.message_from_bytes(report, policy=email.policy.default)
    for part in msg.walk():
        if part.get_content_type() == "text/rfc822-headers":
            headers = email.message_from_string(str(part.get_payload()), policy=email.policy.default)
            return str(headers.get("Subject", ""))
    return ""


def feedback_fields(report: bytes) -> dict[str, str]:
    """The fields of the ``message/feedback-report`` part of an ARF report (RFC 5965), names
    lower-case: :func:`labkit.core.auth.dmarc.parse_failure_report`."""
    return parse_failure_report(report)



# --------------------------------------------------------------------------- the provider's own views


@dataclass(frozen=True)
class Original:
    """The provider's "show original" view of one stored message: a summary table (as a big mailbox
    provider shows it above the source: Message ID, dates, From, To, Subject, then SPF, DKIM and
    DMARC with the domain and address each was checked for), then the raw header lines."""

    rows: list[dict[str, str]]
    headers: str

    def row(self, name: str) -> str:
        return next((r["value"] for r in self.rows if r["field"] == name), "")

    def __str__(self) -> str:
        width = max(len(r["field"]) for r in self.rows)
        return "\n".join(f"{r['field']:<{width}}  {r['value']}" for r in self.rows) + "\n\n" + self.headers

    def _repr_html_(self) -> str:
        body = "".join(f'<tr><th style="text-align:left">{html.escape(r["field"])}</th>'
                       f'<td style="text-align:left">{html.escape(r["value"])}</td></tr>' for r in self.rows)
        return (f'<table class="labkit-table">{body}</table>'
                f'<pre style="white-space:pre-wrap;font-size:85%">{html.escape(self.headers)}</pre>')


def show_original(lab: Lab, subject: str, address: str = "bob@inbox.example.org") -> Original:
    """The provider's "show original" view of the message with ``subject`` in ``address``'s mailbox."""
    j = journey(lab, subject, address)
    if not j.path:
        raise LabStateError(f"{subject!r} was refused (550): the provider keeps no copy to show")
    raw = Path(j.path).read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    client = j.hops[-1].from_ip if j.hops else ""

    def verdict(method: str, detail: str) -> str:
        c = j.checks.get(method)
        return f"'{c.result.upper()}'{detail}" if c else "(not checked)"

    spf = j.checks.get("spf")
    dkim = j.checks.get("dkim")
    rows = [("Message ID", str(msg.get("Message-ID", ""))), ("Created at", str(msg.get("Date", ""))),
            ("From", str(msg.get("From", ""))), ("To", str(msg.get("To", ""))),
            ("Subject", str(msg.get("Subject", ""))),
            ("SPF", verdict("spf", f" with IP {client}" + (f" (MAIL FROM domain {spf.properties.get('smtp.mailfrom', '').rsplit('@', 1)[-1]})"
                                                             if spf else ""))),
            ("DKIM", verdict("dkim", f" with domain {dkim.properties.get('header.d', dkim.properties.get('header.i', ''))}"
                             if dkim else "")),
            ("DMARC", verdict("dmarc", "")),
            ("Filed in", j.folder)]
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("utf-8", "replace")
    return Original([{"field": k, "value": v} for k, v in rows], head)


@dataclass(frozen=True)
class Dashboard:
    """A postmaster dashboard for one sending domain, over every message the provider assessed from it:
    how many; the share that passed SPF, DKIM and DMARC (a provider's "authentication" page); the
    share it filed as spam, and the share it refused (its "delivery errors"); the share that came
    over TLS ("encryption"). Percentages of ``messages``."""

    domain: str
    messages: int
    rates: dict[str, float]

    def table(self) -> Table:
        return Table([{"measure": k, "percent": f"{v:.0f}%"} for k, v in self.rates.items()], ["measure", "percent"])

    def svg(self, width: int = 480) -> str:
        """The rates as a horizontal bar chart (0-100 %), green for the good ones, orange and red for the others."""
        bar_h, label_w = 20, 150
        height = 30 + len(self.rates) * (bar_h + 6)
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
                 f'font-size="12"><title>postmaster dashboard for {html.escape(self.domain)}</title>'
                 f'<text x="0" y="14" font-weight="bold">{html.escape(self.domain)}: {self.messages} messages</text>']
        y = 24
        for name, value in self.rates.items():
            w = int((width - label_w - 50) * value / 100)
            colour = "#c62828" if name in ("refused", "spam rate") else "#2e7d32"
            parts.append(f'<text x="0" y="{y + bar_h - 6}">{html.escape(name)}</text>')
            parts.append(f'<rect x="{label_w}" y="{y}" width="{w}" height="{bar_h - 2}" fill="{colour}">'
                         f'<title>{html.escape(name)}: {value:.0f}%</title></rect>')
            parts.append(f'<text x="{label_w + w + 4}" y="{y + bar_h - 6}">{value:.0f}%</text>')
            y += bar_h + 6
        parts.append("</svg>")
        return "".join(parts)

    def picture(self) -> Picture:
        return Picture(self.svg())

    def __str__(self) -> str:
        return f"{self.domain}: {self.messages} messages; " + ", ".join(f"{k} {v:.0f}%" for k, v in self.rates.items())

    def _repr_svg_(self) -> str:
        return self.svg()


def postmaster_dashboard(lab: Lab, domain: str = "example.com") -> Dashboard:
    """What the provider's postmaster pages would show the owner of ``domain``, from the lab's
    "assessed" events for messages whose From is in ``domain``."""
    marker = f"header.from={domain.lower()}"
    seen = [e for e in lab.events.select("assessed", role="inbox") if marker in e.get("authentication_results", "").lower()]
    tls = {e.get("queue_id"): e.get("tls") for e in lab.events.select("accepted", role="inbox")}
    n = len(seen)

    def share(test) -> float:
        return 100.0 * sum(1 for e in seen if test(e)) / n if n else 0.0

    rates = {"SPF pass": share(lambda e: e.get("spf") == "pass"),
             "DKIM pass": share(lambda e: e.get("dkim") == "pass"),
             "DMARC pass": share(lambda e: e.get("dmarc") == "pass"),
             "authenticated": share(lambda e: "pass" in (e.get("spf"), e.get("dkim"))),
             "spam rate": share(lambda e: e.get("folder") == "Spam"),
             "refused": share(lambda e: e.get("folder") == "Rejected"),
             "over TLS": share(lambda e: bool(tls.get(e.get("queue_id"))))}
    return Dashboard(domain, n, rates)


__all__ = ["Check", "Dashboard", "Journey", "Original", "Outcomes", "Picture", "aggregate_reports_received",
           "failure_report_for", "failure_reports_received", "feedback_fields", "journey", "merge_reports",
           "outcomes", "postmaster_dashboard", "publish", "published", "questions_diagram", "report_picture",
           "report_table", "send_failure_reports", "send_from_host", "show_original", "unpublish",
           "wait_for_subject"]
