"""Is this server a stepping stone (踏み台)? A battery of relay attempts, each tried for real.

The memo: 「メールサーバを構築するときに、最も気をつけなければならないのは、踏み台にされてSPAMを
全世界にばらまくのに利用されないか、ということだ。」 (*When you build a mail server, the first
thing to watch is that it is not used as a stepping stone to spread spam all over the world.*)

An open relay accepts mail from a stranger for a stranger. Spammers do not only try the plain
case: over the years they have found address forms that some servers mistook for local mail
and then routed onward. :data:`BATTERY` lists them, one :class:`Attempt` each:

==============  ===============================================  ==========================
attempt         RCPT TO (with the lab's names)                   the trick
==============  ===============================================  ==========================
third-party     ``<bob@inbox.example.org>``                      plain relaying
null-sender     ``MAIL FROM:<>`` then the same                   bounces must get through
percent-hack    ``<bob%inbox.example.org@example.com>``          ``%`` routes onward
bang-path       ``<inbox.example.org!bob@example.com>``          UUCP ``!`` routing
source-route    ``<@example.com:bob@inbox.example.org>``         RFC 821 source route
quoted-local    ``<"bob@inbox.example.org"@example.com>``        ``@`` hidden in quotes
double-at       ``<bob@inbox.example.org@example.com>``          two ``@``
ip-literal      ``<bob@[127.0.40.25]>``                          an address, not a domain
==============  ===============================================  ==========================

:func:`run_attempt` tries one over a fresh connection (EHLO, MAIL FROM, RCPT TO, then RSET and
QUIT: never DATA, so even an accepted attempt sends nothing); :func:`run_battery` tries them
all from a given source address and returns a :class:`BatteryReport`, which Jupyter shows as a
table coloured by outcome. :func:`run_against_lab` aims it at a running lab's ``mta`` (real
Postfix in real mode, the embedded MTA otherwise) from :data:`STRANGER`.

A refusal is any ``4xx`` or ``5xx`` reply, at MAIL or at RCPT; the reply is kept with the
result. Nothing here depends on which server answers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..core.world import distinct_loopback_available
from ..errors import NotFound
from ..net.clients.smtp import RawSMTP
from .display import Table, escape_html

if TYPE_CHECKING:  # the lab floor, for type hints only
    from ..lab.lab import Lab

#: An address no lab host uses: a stranger somewhere on the Internet (all of 127/8 is loopback).
STRANGER = "127.0.66.6"
#: The name the stranger gives in EHLO.
STRANGER_HELO = "stranger.example.net"


@dataclass(frozen=True)
class Attempt:
    """One relay attempt: the envelope a spammer would send, and what trick it plays."""

    key: str  #: short name, e.g. ``percent-hack``
    mail_from: str  #: what follows ``MAIL FROM:`` (with the angle brackets)
    rcpt_to: str  #: what follows ``RCPT TO:`` (with the angle brackets)
    trick: str  #: what the attempt hopes the server gets wrong

    @property
    def commands(self) -> tuple[str, str]:
        return (f"MAIL FROM:{self.mail_from}", f"RCPT TO:{self.rcpt_to}")


def battery(local_domain: str = "example.com", target: str = "bob@inbox.example.org",
            target_ip: str = "127.0.40.25", spammer: str = "spammer@example.net") -> tuple[Attempt, ...]:
    """The battery aimed at a server for ``local_domain``, trying to reach ``target``.

    ``target_ip`` is the address of the target's mail server (for the IP-literal attempt).
    """
    user, _, domain = target.partition("@")
    return (
        Attempt("third-party", f"<{spammer}>", f"<{target}>",
                "a stranger asks us to carry mail for another stranger"),
        Attempt("null-sender", "<>", f"<{target}>",
                "the null sender of bounces, which servers must accept, used to slip through"),
        Attempt("percent-hack", f"<{spammer}>", f"<{user}%{domain}@{local_domain}>",
                "looks local; a server that rewrites user%domain to user@domain relays it"),
        Attempt("bang-path", f"<{spammer}>", f"<{domain}!{user}@{local_domain}>",
                "looks local; UUCP's host!user routing sends it on to the host"),
        Attempt("source-route", f"<{spammer}>", f"<@{local_domain}:{target}>",
                "RFC 821 source route: 'via us, to them' (RFC 5321 says ignore the route)"),
        Attempt("quoted-local", f"<{spammer}>", f'<"{target}"@{local_domain}>',
                "the real recipient hidden in a quoted local part"),
        Attempt("double-at", f"<{spammer}>", f"<{target}@{local_domain}>",
                "two @: a careless parser sees our domain at the end and routes on"),
        Attempt("ip-literal", f"<{spammer}>", f"<{user}@[{target_ip}]>",
                "an address literal instead of a domain: is that 'local'?"),
    )


#: The battery with the lab's names: our domain example.com, the target bob@inbox.example.org.
BATTERY: tuple[Attempt, ...] = battery()

#: Not a relay attempt: mail for our own domain, which the server must accept (proves it listens).
LOCAL_CONTROL = Attempt("local-control", "<spammer@example.net>", "<alice@example.com>",
                        "not a trick: mail for our own domain must be accepted from anyone")


@dataclass
class AttemptResult:
    """What the server said to one attempt."""

    attempt: Attempt
    refused: bool  #: a 4xx or 5xx reply at MAIL FROM or RCPT TO (or at the greeting)
    stage: str  #: where it ended: ``greeting``, ``EHLO``, ``MAIL``, ``RCPT``
    reply: Any  #: the deciding :class:`labkit.core.transcript.Reply`
    transcript: Any = field(repr=False, default=None)

    @property
    def accepted(self) -> bool:
        return not self.refused

    @property
    def key(self) -> str:
        return self.attempt.key

    def as_row(self) -> dict[str, str]:
        return {"attempt": self.attempt.key, "MAIL FROM": self.attempt.mail_from, "RCPT TO": self.attempt.rcpt_to,
                "outcome": "refused" if self.refused else "ACCEPTED", "at": self.stage,
                "reply": " ".join(str(self.reply).split())}


def run_attempt(host: str, port: int, attempt: Attempt, *, source_address: str | None = None,
                helo: str = STRANGER_HELO, timeout: float = 10.0, server_name: str | None = None) -> AttemptResult:
    """Try one attempt over a new connection; never send DATA (nothing is relayed)."""
    with RawSMTP(host, port, source_address=source_address, timeout=timeout, server_name=server_name) as s:
        banner = s.connect()
        if banner.code != 220:
            s.close()
            return AttemptResult(attempt, True, "greeting", banner, s.transcript)
        reply = s.ehlo(helo)
        if not reply.ok:
            s.quit()
            return AttemptResult(attempt, True, "EHLO", reply, s.transcript)
        mail_cmd, rcpt_cmd = attempt.commands
        reply = s.command(mail_cmd)
        stage = "MAIL"
        if reply.ok:
            reply = s.command(rcpt_cmd)
            stage = "RCPT"
        refused = reply.code >= 400
        s.rset()
        s.quit()
    return AttemptResult(attempt, refused, stage, reply, s.transcript)


@dataclass
class BatteryReport:
    """The results of a battery against one server from one source address."""

    server: str
    source: str | None
    results: list[AttemptResult]

    @property
    def all_refused(self) -> bool:
        return bool(self.results) and all(r.refused for r in self.results)

    @property
    def accepted(self) -> list[AttemptResult]:
        return [r for r in self.results if r.accepted]

    @property
    def refused(self) -> list[AttemptResult]:
        return [r for r in self.results if r.refused]

    def __getitem__(self, key: str) -> AttemptResult:
        for r in self.results:
            if r.attempt.key == key:
                return r
        raise NotFound(f"no attempt {key!r}; attempts are {', '.join(r.attempt.key for r in self.results)}")

    def __iter__(self):
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    def __str__(self) -> str:
        return (f"{self.server} from {self.source or 'this machine'}: {len(self.refused)} of {len(self.results)} "
                f"attempts refused" + (f"; ACCEPTED: {', '.join(r.key for r in self.accepted)}" if self.accepted else ""))

    def rows(self) -> list[dict[str, str]]:
        return [r.as_row() for r in self.results]

    def table(self):
        """A plain :class:`labkit.teach.display.Table` (Markdown/text); Jupyter shows the coloured HTML."""
        return Table(self.rows())

    def to_html(self) -> str:
        cols = ["attempt", "MAIL FROM", "RCPT TO", "outcome", "at", "reply"]
        head = "".join(f'<th style="text-align:left">{c}</th>' for c in cols)
        body = []
        for r in self.results:
            row = r.as_row()
            bg = "#dafbe1" if r.refused else "#ffebe9"  # green: refused, as it must be; red: relayed
            tds = "".join(f'<td style="text-align:left;font-family:monospace">{escape_html(row[c])}</td>'
                          if c != "outcome" else
                          f'<td style="text-align:left;font-weight:bold;color:{"#1a7f37" if r.refused else "#cf222e"}">'
                          f'{escape_html(row[c])}</td>' for c in cols)
            body.append(f'<tr style="background:{bg}" title="{escape_html(r.attempt.trick)}">{tds}</tr>')
        caption = escape_html(str(self))
        return (f'<table class="labkit-table"><caption style="text-align:left">{caption}</caption>'
                f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return str(self) + "\n" + repr(self.table())


def run_battery(host: str, port: int, *, source_address: str | None = None,
                attempts: tuple[Attempt, ...] | list[Attempt] = BATTERY, helo: str = STRANGER_HELO,
                timeout: float = 10.0, server_name: str | None = None) -> BatteryReport:
    """Try every attempt against ``host:port`` from ``source_address``; one connection each."""
    results = [run_attempt(host, port, a, source_address=source_address, helo=helo, timeout=timeout,
                           server_name=server_name) for a in attempts]
    return BatteryReport(server_name or f"{host}:{port}", source_address, results)


def run_against_lab(lab: Lab, source: str = STRANGER, *, role: str = "mta",
                    attempts: tuple[Attempt, ...] | list[Attempt] | None = None) -> BatteryReport:
    """The battery against a running lab's ``role`` (real Postfix in real mode), from ``source``.

    ``source`` is an address or a lab host key (``"pc"``, ``"inbox"``...). The attempts are
    aimed at the domains the role delivers, to bob at the mailbox provider.
    """
    world = lab.world
    svc = lab.services[role]
    try:
        address: str | None = world.host(source).address
    except KeyError:
        address = source

    if not distinct_loopback_available():
        address = None  # every lab host shares 127.0.0.1 here (not Linux): connect from it
    if attempts is None:
        local = world.local_domains(role)[0] if world.local_domains(role) else "example.com"
        inbox = world.host(world.service("inbox").host)
        attempts = battery(local_domain=local, target=f"bob@{world.local_domains('inbox')[0]}",
                           target_ip=inbox.address)
    return run_battery(svc.host, svc.port, source_address=address, attempts=attempts,
                       timeout=lab.options.smtp_timeout, server_name=f"{svc.name}:{svc.standard_port}")


__all__ = ["BATTERY", "LOCAL_CONTROL", "STRANGER", "STRANGER_HELO", "Attempt", "AttemptResult", "BatteryReport",
           "battery", "run_against_lab", "run_attempt", "run_battery"]
