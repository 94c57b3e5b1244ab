"""Follow a message: its ``Received:`` lines read back as hops, and a picture of its path.

Each MTA that handles a message prepends one ``Received:`` line (RFC 5321 §4.4), so the lines
read bottom-up tell the path from the sender to the mailbox. Pure functions over the message.
"""
from __future__ import annotations

import email
import email.policy
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

_FROM = re.compile(r"\bfrom\s+(?P<helo>\S+)(?:\s+\((?P<info>[^)]*)\))?", re.I)
_BY = re.compile(r"\bby\s+(?P<by>\S+)", re.I)
_WITH = re.compile(r"\bwith\s+(?P<with>\S+)", re.I)
_ID = re.compile(r"\bid\s+(?P<id>[^\s;]+)", re.I)
_IP = re.compile(r"\[(?:IPv6:)?(?P<ip>[0-9A-Fa-f:.]+)\]")


@dataclass(frozen=True)
class Hop:
    """One ``Received:`` line: who handed the message (``from``) to whom (``by``), and how."""

    from_helo: str
    from_ip: str
    from_name: str  #: the reverse-DNS name the receiver saw, if it says one
    by: str
    with_: str  #: SMTP, ESMTP, ESMTPS (TLS), ESMTPA (AUTH), ESMTPSA (both): RFC 3848
    id: str
    date: str
    raw: str

    @property
    def tls(self) -> bool:
        return "S" in self.with_.upper().replace("SMTP", "")

    @property
    def authenticated(self) -> bool:
        return self.with_.upper().endswith("A")


def parse_received(value: str) -> Hop:
    """Read one ``Received:`` header value into a :class:`Hop` (missing parts are '')."""
    v = " ".join(value.split())
    clauses, _, date = v.rpartition(";")
    if not _:
        clauses, date = v, ""
    m = _FROM.search(clauses)
    helo = m.group("helo") if m else ""
    info = (m.group("info") or "") if m else ""
    ipm = _IP.search(info)
    name = info.split("[")[0].strip() if info else ""
    bare = re.sub(r"\([^()]*\)", " ", clauses)  # comments such as "(using TLSv1.3 with cipher ...)"
    return Hop(helo, ipm.group("ip") if ipm else "", name, _group(_BY, bare, "by"),
               _group(_WITH, bare, "with"), _group(_ID, bare, "id"), date.strip(), value)


def _group(rx: re.Pattern, text: str, name: str) -> str:
    m = rx.search(text)
    return m.group(name) if m else ""


def hops(message: bytes | str | email.message.Message) -> list[Hop]:
    """The message's hops in the order they happened: the oldest (bottom) ``Received:`` first."""
    if isinstance(message, (bytes, str)):
        parse = email.message_from_bytes if isinstance(message, bytes) else email.message_from_string
        message = parse(message, policy=email.policy.default)
    return [parse_received(str(v)) for v in reversed(message.get_all("Received") or [])]


def hop_seconds(hs: list[Hop]) -> list[float | None]:
    """Seconds from the first hop's date to each hop's date (None where a date is unreadable)."""
    out: list[float | None] = []
    t0 = None
    for h in hs:
        try:
            t = parsedate_to_datetime(h.date).timestamp()
        except (TypeError, ValueError):
            out.append(None)
            continue
        t0 = t if t0 is None else t0
        out.append(t - t0)
    return out


def _safe(s: str) -> str:
    return re.sub(r'[<>;#"{}\[\]|]', " ", s).strip()


def path_mermaid(hs: list[Hop], sender: str = "", mailbox: str = "") -> str:
    """A Mermaid flowchart of the path: sender -> each receiving host -> mailbox."""
    lines = ["flowchart LR"]
    nodes = []
    if sender:
        nodes.append(("n0", f"{_safe(sender)}"))
    for i, h in enumerate(hs, 1):
        label = _safe(h.by)
        nodes.append((f"n{i}", label))
    if mailbox:
        nodes.append((f"n{len(hs) + 1}", f"mailbox {_safe(mailbox)}"))
    for nid, label in nodes:
        lines.append(f'    {nid}["{label}"]')
    edges = []
    for i, h in enumerate(hs, 1):
        if i == 1 and not sender:
            continue
        how = _safe(h.with_) or "SMTP"
        edges.append(f"    n{i - 1} -->|{how}| n{i}")
    if mailbox:
        edges.append(f"    n{len(hs)} -->|delivered| n{len(hs) + 1}")
    return "\n".join(lines + edges)
