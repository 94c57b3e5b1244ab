"""DNS as a mail system sees it: zones shown two ways, and where a sending MTA delivers.

- :class:`ZoneView` shows one zone as the memo's MyDNS "DOMAIN INFO" table (Hostname / Type /
  Content) beside the same records as zone-file text (RFC 1035 §5), so a reader sees that they
  are one thing written two ways;
- :func:`delivery_plan` asks the lab DNS what a sending MTA asks (RFC 5321 §5.1): the MX
  records of the recipient's domain, then the address of each exchanger, and returns the
  order in which it will try them, as a :class:`Plan` with a table and a picture;
- :func:`queries_table` shows what the lab DNS was asked (``lab.dns_queries()``);
- :func:`reverse_name` is the PTR lookup a receiving server makes for a client's address;
- :func:`dig` and :func:`nslookup` build the memo's command lines for the lab DNS, for
  :func:`labkit.real.tools.run`.

    from labkit import dnsview, tools
    dnsview.ZoneView(zone)                                     # MyDNS table | zone file
    plan = dnsview.delivery_plan(lab.resolver(), "inbox.example.org")
    plan.targets                                               # [(10, 'mx.inbox.example.org', '127.0.40.25')]
    tools.run(dnsview.dig(lab.dns, "mx", "inbox.example.org", "+short"))
"""
from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import dns.exception
import dns.reversename

from ..core.dns.resolver import DNSLookupError, NullMXError, _failure, addresses, mx_hosts
from ..core.dns.zone import Zone, relative_name
from .display import Diagram, Table
from ..i18n import N_

if TYPE_CHECKING:
    import dns.resolver


__all__ = [
    "Plan",
    "PlanStep",
    "ZoneView",
    "delivery_plan",
    "dig",
    "mydns_rows",
    "nslookup",
    "queries_table",
    "reverse_name",
]


# --------------------------------------------------------------------------- the zone, two ways


def mydns_rows(zone: Zone, include_ns: bool = False) -> list[dict[str, str]]:
    """The zone as the memo's MyDNS table: Hostname (relative to the domain; blank for the
    domain itself), Type, Content. MyDNS manages SOA and NS itself, so they are left out
    unless ``include_ns``."""
    rows = []
    for row in zone.table():
        if row.type == "NS" and not include_ns:
            continue
        host = relative_name(row.hostname, zone.origin)
        rows.append({"Hostname": "" if host == "@" else host, "Type": row.type, "Content": row.content})
    return rows


class ZoneView:
    """One zone two ways: the MyDNS table on the left, the zone file on the right."""

    def __init__(self, zone: Zone, include_ns: bool = False):
        self.zone = zone
        self.include_ns = include_ns

    def rows(self) -> list[dict[str, str]]:
        return mydns_rows(self.zone, self.include_ns)

    def to_html(self) -> str:
        table = Table(self.rows(), ["Hostname", "Type", "Content"]).to_html()
        text = html.escape(self.zone.to_text())
        cell = "vertical-align:top;padding:0 1em 0 0;text-align:left"
        return ('<table class="labkit-zoneview" style="border:none"><tr>'
                f'<th style="{cell}">MyDNS DOMAIN INFO: {html.escape(self.zone.origin)}</th>'
                f'<th style="{cell}">zone file (RFC 1035 §5)</th></tr><tr>'
                f'<td style="{cell}">{table}<div style="opacity:0.7">A blank Hostname is the '
                f'domain itself ({html.escape(self.zone.origin)}).</div></td>'
                f'<td style="{cell}"><pre style="margin:0">{text}</pre></td></tr></table>')

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return repr(Table(self.rows(), ["Hostname", "Type", "Content"])) + "\n\n" + self.zone.to_text()


# --------------------------------------------------------------------------- where mail goes


@dataclass(frozen=True)
class PlanStep:
    """One question a sending MTA asks, and what it makes of the answer."""

    question: str  #: ``MX inbox.example.org?``
    answer: str
    decision: str


@dataclass
class Plan:
    """How a sending MTA delivers to ``domain``: the questions, and the servers to try in order.

    ``targets`` lists ``(preference, host, address)`` in the order they are tried; ``outcome``
    is ``deliver``, ``bounce`` (the domain cannot get mail: it does not exist, or says "null MX")
    or ``defer`` (DNS did not answer, or no exchanger has an address: try again later).
    """

    domain: str
    steps: list[PlanStep] = field(default_factory=list)
    targets: list[tuple[int, str, str]] = field(default_factory=list)
    outcome: str = "deliver"
    reason: str = ""

    def rows(self) -> list[dict[str, Any]]:
        return [{"#": i, "question": s.question, "answer": s.answer, "decision": s.decision}
                for i, s in enumerate(self.steps, 1)]

    def table(self) -> Table:
        return Table(self.rows())

    def _repr_html_(self) -> str:
        head = f"<p><b>Mail for {html.escape(self.domain)}</b>: {html.escape(self.outcome)}" \
               f"{' (' + html.escape(self.reason) + ')' if self.reason else ''}</p>"
        return head + self.table().to_html()

    def __repr__(self) -> str:
        return f"Mail for {self.domain}: {self.outcome}" + (f" ({self.reason})" if self.reason else "") + \
            "\n" + repr(self.table())

    def to_mermaid(self) -> Diagram:
        """A flowchart: the domain, its MX hosts by preference, their addresses, in try order."""
        def lab(text: str) -> str:
            return re.sub(r'[<>;#"{}\[\]|]', " ", text).strip()

        lines = ["flowchart LR", f'    d["mail for {lab(self.domain)}"]']
        if not self.targets:
            lines.append(f'    x["{lab(self.outcome)}: {lab(self.reason)}"]')
            lines.append("    d --> x")
            return Diagram("\n".join(lines))
        ordinal = {1: "1st", 2: "2nd", 3: "3rd"}
        hosts: dict[str, int] = {}
        for pref, host, _ in self.targets:
            if host not in hosts:
                hosts[host] = len(hosts)
                lines.append(f'    m{hosts[host]}["MX {pref}<br/>{lab(host)}"]')
                lines.append(f"    d -->|{ordinal.get(len(hosts), str(len(hosts)) + 'th')}| m{hosts[host]}")
        for i, (_, host, address) in enumerate(self.targets):
            lines.append(f'    a{i}["{lab(address)} port 25"]')
            lines.append(f"    m{hosts[host]} -->|A| a{i}")
        return Diagram("\n".join(lines))


def delivery_plan(resolver: dns.resolver.Resolver, domain: str) -> Plan:
    """Ask what a sending MTA asks to deliver mail for ``domain`` (RFC 5321 §5.1).

    1. ``MX domain?`` — the exchangers, lowest preference number first (equal numbers: any
       order, to share the load). No MX but an address: the domain itself is the exchanger
       ("implicit MX"). A null MX (``0 .``, RFC 7505) or a domain that does not exist: bounce.
    2. ``A host?`` for each exchanger, in that order.
    3. Connect to port 25 of each address in turn, until one answers; if none does, keep the
       message queued and try again later.
    """
    plan = Plan(domain)
    try:
        mx = mx_hosts(resolver, domain)
    except NullMXError:
        plan.steps.append(PlanStep(f"MX {domain}?", "0 . (a null MX)",
                                   "the domain accepts no mail (RFC 7505): bounce at once"))
        plan.outcome, plan.reason = "bounce", "null MX"
        return plan
    except DNSLookupError as e:
        permanent = e.outcome in ("NXDOMAIN", "no MX and no A/AAAA record")
        plan.steps.append(PlanStep(f"MX {domain}?", e.outcome,
                                   "no such domain: bounce" if permanent else "DNS failed: keep it queued, retry"))
        plan.outcome, plan.reason = ("bounce" if permanent else "defer"), e.outcome
        return plan
    if mx == [(0, domain)]:
        plan.steps.append(PlanStep(f"MX {domain}?", "no MX record",
                                   "the domain has an address: it is its own exchanger (implicit MX)"))
    else:
        plan.steps.append(PlanStep(f"MX {domain}?", ", ".join(f"{p} {h}" for p, h in mx),
                                   "try the lowest preference number first: " + " then ".join(h for _, h in mx)))
    for pref, host in mx:
        try:
            found = addresses(resolver, host)
        except DNSLookupError as e:
            plan.steps.append(PlanStep(f"A {host}?", e.outcome, "no address: skip this exchanger"))
            continue
        plan.steps.append(PlanStep(f"A {host}?", ", ".join(found), f"connect to port 25 of {', '.join(found)}"))
        plan.targets += [(pref, host, a) for a in found]
    if not plan.targets:
        plan.outcome, plan.reason = "defer", "no exchanger has an address"
    else:
        order = " -> ".join(f"{h} ({a})" for _, h, a in plan.targets)
        plan.steps.append(PlanStep("(connect)", order, "the first that answers gets the message; if none "
                                                       "does, the message waits in the queue"))
    return plan


# --------------------------------------------------------------------------- queries, PTR, commands


def queries_table(queries: Iterable[Any]) -> Table:
    """What the lab DNS was asked (``lab.dns_queries()``, or a slice of it), as a table."""
    return Table([{"#": i, N_("asked over"): q.transport, N_("by"): q.client, N_("name"): q.name, N_("type"): q.type,
                   N_("answer"): q.rcode} for i, q in enumerate(queries, 1)],
                 ["#", N_("asked over"), N_("by"), N_("name"), N_("type"), N_("answer")])


def reverse_name(resolver: dns.resolver.Resolver, address: str) -> str:
    """The name an address maps back to (its PTR record), without the final dot.

    ``127.0.40.25`` is asked as ``25.40.0.127.in-addr.arpa`` (the octets reversed, RFC 1035
    §3.5). Raises :class:`labkit.core.dns.DNSLookupError` when there is none.
    """
    qname = dns.reversename.from_address(address)
    try:
        answer = resolver.resolve(qname, "PTR", search=False)
    except dns.exception.DNSException as exc:
        raise _failure(resolver, qname.to_text(omit_final_dot=True), "PTR", exc) from None
    return str(answer[0].target).rstrip(".").lower()


def _server(service: Any) -> tuple[str, int]:
    host, port = getattr(service, "host", None), getattr(service, "port", None)
    if host is None and isinstance(service, (tuple, list)):
        host, port = service
    if host is None or port is None:
        raise TypeError("give the lab DNS service (lab.dns) or a (host, port) pair")
    return str(host), int(port)


def dig(service: Any, *args: str) -> list[str]:
    """``dig @HOST -p PORT ARGS...`` aimed at the lab DNS (``service`` is ``lab.dns``)."""
    host, port = _server(service)
    return ["dig", f"@{host}", "-p", str(port), *args]


def nslookup(service: Any, name: str, rtype: str = "A") -> list[str]:
    """``nslookup -port=PORT -type=TYPE NAME HOST``: the memo's ``nslookup -type=TXT ...``
    aimed at the lab DNS."""
    host, port = _server(service)
    return ["nslookup", f"-port={port}", f"-type={rtype}", name, host]
