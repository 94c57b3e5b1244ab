"""Who does what: the agents of Internet mail, and which lab program plays each one.

RFC 5598 (Internet Mail Architecture) names the parts a message meets on its way:

===========  ================================================================================
MUA          Mail User Agent: the program a person writes and reads mail with (§4.2.1)
MSA          Message Submission Agent: takes new mail from MUAs, checks who they are, and
             hands it to the MTAs (§4.3.1; the service itself is RFC 6409, port 587)
MTA          Mail Transfer Agent: relays the message host to host with SMTP (§4.3.2)
MDA          Mail Delivery Agent: puts the message into the recipient's mailbox (§4.3.3)
mailbox      the Message Store (MS) the recipient's MUA reads from (§4.2.2)
===========  ================================================================================

:func:`follow` reads one delivered message and the lab's events back into that story, one
:class:`Step` per agent, with the evidence for each (a ``Received:`` line or a lab event).
It is pure: it takes the raw message and a list of events, so it is tested without sockets.
:func:`follow_mailbox` does the same for a message in a running lab's mailbox.

    from labkit import agents
    steps = agents.follow_mailbox(lab, "bob@inbox.example.org")
    agents.steps_table(steps)            # a table: agent, host, what it did, evidence
    agents.path_mermaid(steps)           # a picture: one box per host, one node per agent
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.smtp.rules import ROLES
from ..core.trace import Hop, hops
from ..errors import NotFound
from .display import Diagram, Table
from ..i18n import N_

if TYPE_CHECKING:
    from ..core.world import World
    from ..lab.lab import Lab
    from ..net.events import Event

__all__ = [
    "AGENTS",
    "REAL_PROGRAMS",
    "ROLE_AGENTS",
    "Agent",
    "Step",
    "agent_rows",
    "follow",
    "follow_mailbox",
    "msa_roles",
    "path_mermaid",
    "steps_table",
]


@dataclass(frozen=True)
class Agent:
    """One kind of mail program, as RFC 5598 defines it."""

    short: str  #: ``MUA``, ``MSA``, ``MTA``, ``MDA`` or ``mailbox``
    name: str
    does: str
    source: str  #: where it is defined
    examples: str


AGENTS: dict[str, Agent] = {
    "MUA": Agent("MUA", "Mail User Agent", "writes and submits a person's mail; later reads it from the mailbox",
                 "RFC 5598 §4.2.1", "Thunderbird, Outlook, mutt; in the lab, this notebook on pc.example.com"),
    "MSA": Agent("MSA", "Message Submission Agent",
                 "accepts new mail from MUAs on port 587 (or 465), after AUTH, and applies the site's policy",
                 "RFC 5598 §4.3.1, RFC 6409", "Postfix's submission service; the lab's submission role"),
    "MTA": Agent("MTA", "Mail Transfer Agent",
                 "relays the message towards its destination with SMTP, choosing the next hop (MX or relayhost)",
                 "RFC 5598 §4.3.2, RFC 5321", "Postfix smtpd/qmgr/smtp, Exim, Sendmail; the lab's mta, smarthost, inbox"),
    "MDA": Agent("MDA", "Mail Delivery Agent", "stores the message in the recipient's mailbox",
                 "RFC 5598 §4.3.3", "Postfix local/virtual, Dovecot LDA/LMTP; the lab's Maildir delivery"),
    "mailbox": Agent("mailbox", "Message Store", "holds delivered messages until the MUA reads them (POP3, IMAP)",
                     "RFC 5598 §4.2.2", "a Maildir folder, one file per message"),
}

#: The agents each lab role plays.
ROLE_AGENTS: dict[str, tuple[str, ...]] = {
    "mta": ("MTA", "MDA"),  # receives for example.com and stores it; relays for trusted clients
    "submission": ("MSA",),  # hands what it accepts to the MTA queue of the same host
    "submissions": ("MSA",),
    "mda": ("MDA",),  # takes mail over LMTP and files it into the Maildirs
    "pop3": (), "pop3s": (), "imap": (), "imaps": (),  # mailbox access: the MUA reads from here
    "smarthost": ("MSA", "MTA"),  # the ISP's submission server, which then relays by MX
    "inbox": ("MTA", "MDA"),  # the provider's MX, which stores into its users' mailboxes
    "verifier": ("MTA", "MDA"),
    "dns": (),
}

#: What plays each role on a real host (and in the lab's real mode).
REAL_PROGRAMS: dict[str, str] = {
    "mta": "Postfix smtpd on port 25, then local/virtual (or Dovecot LMTP) as the MDA",
    "submission": "Postfix smtpd as the 'submission' service of master.cf (port 587)",
    "submissions": "Postfix smtpd as the 'submissions' service of master.cf (port 465)",
    "pop3": "Dovecot's pop3 service (port 110, STLS)", "pop3s": "Dovecot's pop3s service (port 995)",
    "imap": "Dovecot's imap service (port 143, STARTTLS)", "imaps": "Dovecot's imaps service (port 993)",
    "mda": "Dovecot's LMTP server (or Postfix local/virtual); the lab's real Postfix hands it mail over LMTP",
    "smarthost": "the ISP's own MSA and MTA (mail.so-net.ne.jp:587 in the memo)",
    "inbox": "the provider's MX servers, then its own MDA (Gmail in the memo)",
    "verifier": "check-auth@verifier.port25.com in the memo",
    "dns": "the public DNS; MyDNS in the memo",
}


def agent_rows(lab: Lab) -> list[dict[str, Any]]:
    """One row per lab service: which host plays it and which agents it is (for a table)."""
    rows = []
    for row in lab.hosts_table():
        role = row["role"]
        rows.append({"role": role, "host": row["host"], "address": row["address"],
                     "plays port": row["plays port"],
                     "agents": ", ".join(ROLE_AGENTS.get(role, ())) or "(not a mail agent)",
                     "on a real host": REAL_PROGRAMS.get(role, "")})
    return rows


def msa_roles(world: World, address: str) -> list[str]:
    """The lab roles that are an MSA for ``address``: submission services where it may log in.

    An MSA requires AUTH before it takes mail (RFC 6409 §4.3 leaves the choice to the site;
    every modern one requires it) and the account must be one it knows.
    """
    address = address.strip().lower()
    found = []
    for svc in world.services:
        spec = ROLES.get(svc.role)
        if spec is None or not spec.auth_required:
            continue
        if address in {u.lower() for u in world.logins(svc.role)}:
            found.append(svc.role)
    return found


@dataclass(frozen=True)
class Step:
    """What one agent did with the message."""

    agent: str  #: ``MUA``, ``MSA``, ``MTA``, ``MDA`` or ``mailbox``
    host: str  #: the FQDN of the lab host
    role: str  #: the lab role (``submission``, ``smarthost``...; '' for the MUA)
    action: str  #: what it did, in words
    evidence: str  #: the Received: line or the event that shows it
    how: str = ""  #: how the message reached it: ``ESMTPSA``, ``queue``, ``Maildir``...


def _events_list(events: Iterable[Event]) -> list[Event]:
    return list(events)


def _first(events: list[Event], kind: str, host: str | None = None, **match: Any) -> Event | None:
    for e in events:
        if e.kind == kind and (host is None or e.host == host) and \
                all(e.details.get(k) == v for k, v in match.items()):
            return e
    return None


def _standard_ports(events: list[Event]) -> dict[tuple[str, str], int]:
    return {(e.host, e.role): e.details.get("standard_port") for e in events if e.kind == "listening"}


def _received_text(hop: Hop) -> str:
    return "Received: " + " ".join(hop.raw.split())


def follow(message: bytes | str, events: Iterable[Event], mailbox: str = "") -> list[Step]:
    """The agents a delivered message met, in order, from its ``Received:`` lines and the events.

    Each ``Received:`` line names the host that received the message and the queue id it gave
    it; the lab's ``accepted`` event with that id says which role took it and whether the
    client logged in (an MSA takes mail only after AUTH; an MTA from anyone, for its own
    domains). ``relayed`` and ``delivered`` events with the same id say where it went next:
    on to another MTA, or into a mailbox (the MDA's work). ``mailbox`` names the address whose
    copy this is (only used in the words).
    """
    evs = _events_list(events)
    ports = _standard_ports(evs)
    hs = hops(message)
    steps: list[Step] = []
    if not hs:
        return steps
    first = hs[0]
    steps.append(Step("MUA", first.from_helo or first.from_name or "unknown", "",
                      f"wrote the message and submitted it from {first.from_ip or 'an unknown address'}",
                      f"the oldest Received: line says 'from {first.from_helo} [{first.from_ip}]'"))
    for hop in hs:
        accepted = _first(evs, "accepted", host=hop.by, queue_id=hop.id) if hop.id else None
        role = accepted.role if accepted else ""
        port = ports.get((hop.by, role)) if role else None
        user = accepted.get("auth_user") if accepted else None
        on_port = f" on port {port}" if port else ""
        if user:
            steps.append(Step("MSA", hop.by, role,
                              f"accepted the submission{on_port} after AUTH as {user}",
                              _received_text(hop), hop.with_ or "SMTP"))
        else:
            rcpts = accepted.get("rcpts", []) if accepted else []
            domains = sorted({r.rpartition("@")[2] for r in rcpts})
            what = f" for {', '.join(domains)}" if domains else ""
            steps.append(Step("MTA", hop.by, role, f"received the message{on_port} from {hop.from_helo}{what}, "
                                                   "no login needed", _received_text(hop), hop.with_ or "SMTP"))
        relayed = _first(evs, "relayed", host=hop.by, queue_id=hop.id) if hop.id else None
        if relayed is not None:
            steps.append(Step("MTA", hop.by, role,
                              f"relayed it to {relayed.get('via')} ({relayed.get('address')})",
                              f"event 'relayed' of queue id {hop.id}: {relayed.get('reply')}", "queue"))
        delivered = _first(evs, "delivered", host=hop.by, queue_id=hop.id) if hop.id else None
        if delivered is not None:
            to = delivered.get("to") or mailbox
            path = delivered.get("mailbox") or ""
            steps.append(Step("MDA", hop.by, role, f"stored it in the Maildir of {to}",
                              f"event 'delivered' of queue id {hop.id}", "local delivery"))
            steps.append(Step("mailbox", hop.by, role, f"holds it as {Path(path).name}" if path else "holds it",
                              f"the file {path}" if path else "", "Maildir"))
    return steps


def follow_mailbox(lab: Lab, address: str, index: int = -1) -> list[Step]:
    """:func:`follow` for message ``index`` (default: the newest) in a lab mailbox."""
    messages = lab.mailbox(address)
    if not messages:
        raise NotFound(f"{address} holds no message yet; send one and wait for it "
                          "(lab.wait_for_mail(address))")
    raw = Path(messages[index]["path"]).read_bytes()
    return follow(raw, lab.events, mailbox=address)


def steps_table(steps: list[Step]) -> Table:
    """The steps as a table (HTML in Jupyter)."""
    return Table([{"#": i, N_("agent"): s.agent, N_("host"): s.host, N_("lab role"): s.role or "-",
                   N_("what it did"): s.action, N_("evidence"): s.evidence} for i, s in enumerate(steps, 1)])


def _label(text: str) -> str:
    return re.sub(r'[<>;#"{}\[\]|]', " ", text).strip()


def path_mermaid(steps: list[Step]) -> Diagram:
    """A Mermaid flowchart of the steps: one box per host, one node per agent inside it."""
    lines = ["flowchart LR"]
    groups: list[tuple[str, list[int]]] = []
    for i, s in enumerate(steps):
        if groups and groups[-1][0] == s.host:
            groups[-1][1].append(i)
        else:
            groups.append((s.host, [i]))
    for g, (host, members) in enumerate(groups):
        lines.append(f'    subgraph h{g}["{_label(host)}"]')
        for i in members:
            s = steps[i]
            extra = f"<br/>{_label(s.role)}" if s.role and s.agent in ("MSA", "MTA") and \
                (i == 0 or steps[i - 1].host != s.host) else ""
            lines.append(f'        s{i}["{_label(s.agent)}{extra}"]')
        lines.append("    end")
    for i in range(1, len(steps)):
        how = _label(steps[i].how) or "next"
        lines.append(f"    s{i - 1} -->|{how}| s{i}")
    return Diagram("\n".join(lines))
