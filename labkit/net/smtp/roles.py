"""The lab's SMTP servers: one thin aiosmtpd shell per role, around the pure policy.

===========  ====================  =====  =================================================
role         host                  plays  what it does
===========  ====================  =====  =================================================
mta          mail.example.com      25     your MTA: mail for example.com into Maildir;
                                          relays only for AUTH or mynetworks, via the
                                          smarthost (the memo's Postfix ``relayhost``)
submission   mail.example.com      587    your MSA: STARTTLS, then AUTH, then mail
submissions  mail.example.com      465    the same with implicit TLS (RFC 8314)
mda          mail.example.com      24     your MDA: LMTP (RFC 2033) into the Maildirs; real
                                          Postfix hands local mail to it (virtual_transport)
smarthost    mail.isp.example.net  587    the ISP: STARTTLS and AUTH required; relays by MX
inbox        mx.inbox.example.org  25     the big provider's MX: its own domain only
verifier     verifier.example.org  25     the verifier's MX: its own domain only
===========  ====================  =====  =================================================

Everything a role decides is a pure function you can call yourself:
:func:`labkit.core.smtp.policy.relay_decision` (who may send where), and in
:mod:`labkit.core.smtp.rules` what each role is (:data:`ROLES`), :func:`op25b_decision` (is
port 25 blocked for this client?), :func:`injected_failure` (the lab's ``tempfail@``,
``550@`` and ``timeout@`` recipients) and :func:`received_header` (the trace line each hop
adds). The servers only wire them to sockets and report what happened as events, with the
host's FQDN and the role:

* ``listening`` (address, port, standard_port) once the socket is bound;
* ``connect`` (peer, peer_name), ``tls`` (version, cipher, implicit), ``auth`` (success,
  mechanism, user: never the password);
* ``rejected`` (command, reply) for every 4xx/5xx reply, aiosmtpd's own included; and, saying
  why, ``relay-denied`` (rcpt, reason), ``op25b`` (reason), ``stall`` (a ``timeout@`` recipient);
* ``accepted`` (queue_id, mail_from, rcpts, tls, auth_user, size), ``delivered`` (mailbox);
* ``error`` (what) when something inside the server went wrong: it answers 451 and goes on;
* from the queue: ``queued``, ``relayed``, ``deferred``, ``bounced``, ``bounce-sent``.

    server = await start_role("smarthost", ctx)        # on the lab's event loop
    print(server.host, server.port)                    # 127.0.30.25 and an ephemeral port
    await server.close()

Servers run on aiosmtpd's :class:`aiosmtpd.smtp.SMTP` protocol, started with
``loop.create_server`` rather than aiosmtpd's ``Controller`` (whose readiness probe cannot
cope with port 0). This module is the one place that does so for SMTP; how a server listens,
registers its port and closes is :class:`labkit.net.serverbase.LabServer`, which the POP3 and IMAP
servers share.
"""
from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import logging
import time
import warnings
from email.parser import BytesHeaderParser
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from ...core.auth import reports as provider
from ...core.auth.reports import Seen
from ...core.auth.verdict import assess
from ...core.smtp.address import check_path
from ...core.smtp.policy import RECIPIENT_LIMIT, TOO_MANY_RECIPIENTS, relay_decision, user_unknown
from ...core.smtp.rules import (RoleSpec, enhanced_reply, injected_failure, op25b_decision, received_header,
                                role_spec, with_type)
from ...core.world import World
from ...errors import ConfigError
from ..mailbox import maildir
from ..serverbase import LabServer, tls_info
from .queue import Relayhost, RelayQueue, new_queue_id
from .seen import SeenLog

if TYPE_CHECKING:
    from ..context import LabContext

#: Largest message accepted, in octets: Postfix's default ``message_size_limit``.
DATA_SIZE_LIMIT = 10_240_000
#: Seconds an idle client may keep a connection (RFC 5321 §4.5.3.2.7 says at least 5 minutes).
IDLE_TIMEOUT = 300


def _subject(content: bytes) -> str:
    """The Subject of a message as it came (unfolded, undecoded), for the lab's events; "" if none."""
    head = content.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    unfolded = head.replace(b"\n ", b" ").replace(b"\n\t", b" ")
    for line in unfolded.split(b"\n"):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"subject":
            return value.strip().decode("utf-8", "replace")
    return ""


def _ascii(text: str) -> str:
    """A reply line safe to send without SMTPUTF8: ASCII, no line break."""
    return " ".join(text.split()).encode("ascii", "backslashreplace").decode()


def _peer_ip(peer: Any) -> str | None:
    if isinstance(peer, (tuple, list)) and peer:
        return str(peer[0])
    return None


def _host_by_address(world: World, address: str | None) -> Any:
    """The one lab host at ``address`` (None if none or several share it)."""
    hosts = [h for h in world.hosts if h.address == address]
    return hosts[0] if len(hosts) == 1 else None


def _mynetworks(world: World, host_key: str) -> tuple[str, ...]:
    """The host's own address as a /32, unless other lab hosts share it (a flattened world)."""
    address = world.host(host_key).address
    if sum(1 for h in world.hosts if h.address == address) > 1:
        return ()
    return (str(ipaddress.ip_network(address)),)


def _smarthost_relayhost(ctx: "LabContext") -> Relayhost:
    """The memo's ``relayhost = [mail.isp.example.net]:587`` with its ``sasl_passwd`` login."""
    world = ctx.world
    isp = world.host(world.service("smarthost").host)
    logins = world.logins("smarthost")
    if not logins:
        raise ConfigError("world accounts", "no account may log in at the smarthost",
                          "add an Account with role 'smarthost' and a password")
    user, password = next(iter(logins.items()))
    return Relayhost(isp.address, isp.name, world.service("smarthost").standard_port, user, password)


# ---------------------------------------------------------------------------------------------
# The shell

class _LabSMTP(SMTP):
    """aiosmtpd's SMTP protocol, plus: a refusal at connect time (OP25B), every 4xx/5xx reply
    reported as an event, enhanced status codes on every reply (aiosmtpd leaves some without),
    and each connection known to its server so close() can end it."""

    def __init__(self, handler: "_Connection", role_server: "RoleServer", **kwargs: Any):
        super().__init__(handler, **kwargs)
        self._role_server = role_server
        #: the greeting and the answers to HELO/EHLO/LHLO carry no enhanced code (RFC 2034 §3)
        self._greeted = False
        self._in_helo = False

    def connection_made(self, transport: Any) -> None:
        first = self.transport is None  # STARTTLS calls this again with the TLS transport
        super().connection_made(transport)
        if first:
            self._role_server._connections.add(self)

    def connection_lost(self, error: Exception | None) -> None:
        self._role_server._connections.discard(self)
        super().connection_lost(error)

    async def push(self, status: Any) -> None:
        if isinstance(status, str) and self._greeted and not self._in_helo:
            status = enhanced_reply(status)
        await super().push(status)
        self._greeted = True  # the greeting is the first reply
        self.event_handler.replied(status if isinstance(status, str) else status.decode(errors="replace"))

    async def _plainly(self, command: Any, arg: str) -> None:
        self._in_helo = True
        try:
            await command(arg)
        finally:
            self._in_helo = False

    @functools.wraps(SMTP.smtp_HELO)  # keeps aiosmtpd's syntax line for HELP
    async def smtp_HELO(self, arg: str) -> None:
        await self._plainly(super().smtp_HELO, arg)

    @functools.wraps(SMTP.smtp_EHLO)
    async def smtp_EHLO(self, arg: str) -> None:
        await self._plainly(super().smtp_EHLO, arg)

    async def _handle_client(self) -> None:
        refusal = self.event_handler.greet(self)
        if refusal is not None:
            await self.push(refusal)
            if self.transport is not None:
                self.transport.close()
            return
        await super()._handle_client()


class _LabLMTP(_LabSMTP):
    """The same shell speaking LMTP (RFC 2033): LHLO instead of HELO/EHLO, no greeting name
    check, and after DATA one reply per accepted recipient (the handler joins them)."""

    async def smtp_LHLO(self, arg: str) -> None:
        if not arg:
            await self.push("501 Syntax: LHLO hostname")
            return
        await super().smtp_EHLO(arg)

    async def smtp_HELO(self, arg: str) -> None:
        await self.push('500 5.5.1 Error: command "HELO" not recognized (this is LMTP: say LHLO)')

    async def smtp_EHLO(self, arg: str) -> None:
        await self.push('500 5.5.1 Error: command "EHLO" not recognized (this is LMTP: say LHLO)')


class _Connection:
    """The aiosmtpd handler of one client connection: its hooks call the pure policy."""

    def __init__(self, server: "RoleServer"):
        self.server = server
        self.ctx = server.ctx
        self.spec = server.spec
        self.peer_ip: str | None = None
        self.peer_name: str | None = None
        self.tls: dict[str, Any] | None = None
        self.command: str | None = None  #: the command being answered, for "rejected" events
        self.actions: dict[str, str] = {}  #: recipient -> "deliver" / "relay"
        self.rcpt_count = 0  #: RCPT commands accepted in this transaction (duplicates too)

    # -- events -------------------------------------------------------------------------
    def emit(self, kind: str, **details: Any) -> None:
        self.ctx.events.emit(self.server.hostname, self.spec.role, kind, peer=self.peer_ip, **details)

    def replied(self, status: str) -> None:
        if status[:1] in ("4", "5"):
            self.emit("rejected", command=self.command, reply=status)
        self.command = None

    # -- connection ---------------------------------------------------------------------
    def greet(self, smtp: SMTP) -> str | None:
        self.peer_ip = _peer_ip(smtp.session.peer if smtp.session else None)
        host = _host_by_address(self.ctx.world, self.peer_ip)
        self.peer_name = host.name if host else None
        self.emit("connect", peer_name=self.peer_name, port=self.server.port,
                  standard_port=self.server.standard_port)
        ssl_object = smtp.transport.get_extra_info("ssl_object") if smtp.transport else None
        if ssl_object is not None:
            self.tls = tls_info(ssl_object, implicit=True)
            self.emit("tls", **self.tls)
        if self.spec.op25b:
            verdict = op25b_decision(self.ctx.world, self.server.host, self.peer_ip)
            if not verdict:
                self.command = "CONNECT"
                self.emit("op25b", reason=verdict.reason)
                return verdict.details["reply"]
        return None

    def handle_STARTTLS(self, server: SMTP, session: Session, envelope: Envelope) -> bool:
        self.tls = tls_info((session.ssl or {}).get("ssl_object"), implicit=False)
        self.emit("tls", **self.tls)
        return True

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        session.host_name = hostname
        if not self.spec.auth:
            responses = [r for r in responses if not r[4:].upper().startswith("AUTH")]
        # every later reply carries an RFC 3463 code (enhanced_reply), as Postfix's do
        return responses[:-1] + ["250-ENHANCEDSTATUSCODES"] + responses[-1:]

    # -- AUTH ---------------------------------------------------------------------------
    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        """Check a login against the role's lab accounts. Never records the password."""
        self.command = "AUTH"
        user = None
        ok = False
        if isinstance(auth_data, LoginPassword):
            user = auth_data.login.decode("utf-8", "replace")
            expected = self.server.logins.get(user.lower())
            ok = expected is not None and hmac.compare_digest(
                auth_data.password, expected.encode("utf-8"))
        self.emit("auth", success=ok, mechanism=mechanism, user=user, tls=self.tls is not None)
        if ok:
            return AuthResult(success=True, auth_data=user)
        # handled=False: aiosmtpd then sends the 535 itself (with handled=True it sends nothing)
        return AuthResult(success=False, handled=False,
                          message="535 5.7.8 Authentication credentials invalid")

    # -- envelope -------------------------------------------------------------------------
    def _user(self, session: Session) -> str | None:
        return session.auth_data if session.authenticated else None

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        self.command = "MAIL"
        if self.spec.auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        checked = check_path(address, allow_null=True)
        if not checked:
            return _ascii(checked.details["reply"])
        envelope.mail_from = address  # "<>" for the null sender: aiosmtpd needs it non-empty
        envelope.mail_options.extend(mail_options)
        self.actions = {}
        self.rcpt_count = 0
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        self.command = "RCPT"
        if self.rcpt_count >= RECIPIENT_LIMIT:  # every RCPT accepted counts, as in Postfix
            return TOO_MANY_RECIPIENTS
        if any(r.lower() == address.lower() for r in envelope.rcpt_tos):
            self.rcpt_count += 1
            return "250 2.1.5 Ok"  # the same recipient again: one copy is delivered, as Postfix does
        relay_ok = self.spec.relay is not None
        decision = relay_decision(address, local_domains=self.server.local_domains,
                                  client_ip=self.peer_ip,
                                  authenticated=bool(session.authenticated) and relay_ok,
                                  mynetworks=self.server.mynetworks if relay_ok else ())
        if not decision:
            self.emit("relay-denied", rcpt=address, reason=decision.reason)
            return _ascii(decision.details["reply"])
        action = decision.details["action"]
        if action == "deliver":
            failure = injected_failure(address)
            if failure == "tempfail":
                return f"451 4.3.0 <{address}>: temporary failure (the lab's tempfail@); try again later"
            if failure == "550":
                return f"550 5.1.1 <{address}>: Recipient address rejected: no such user (the lab's 550@)"
            if failure == "timeout":
                self.emit("stall", rcpt=address, seconds=self.ctx.options.timeout_stall)
                await asyncio.sleep(self.ctx.options.timeout_stall)
            try:
                maildir.mailbox_folder(self.ctx, decision.details["address"])
            except ConfigError as e:
                return _ascii(f"550 5.1.3 <{address}>: {e.reason}")
            if failure is None and decision.details["address"].lower() not in self.server.mailboxes:
                self.emit("user-unknown", rcpt=address)
                return _ascii(user_unknown(address))
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        self.actions[address] = action
        self.rcpt_count += 1
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.command = "DATA"
        queue_id = new_queue_id()
        mail_from = "" if envelope.mail_from == "<>" else (envelope.mail_from or "")
        rcpts = list(envelope.rcpt_tos)
        user = self._user(session)
        header = received_header(
            helo=session.host_name or "", peer_ip=self.peer_ip or "unknown", peer_name=self.peer_name,
            by=self.server.hostname, queue_id=queue_id, rcpts=rcpts, tls=self.tls,
            protocol=with_type(esmtp=session.extended_smtp, tls=self.tls is not None,
                               authenticated=bool(session.authenticated)))
        message = header + (envelope.original_content or b"")
        subject = _subject(envelope.original_content or b"")
        self.emit("accepted", queue_id=queue_id, mail_from=mail_from, rcpts=rcpts,
                  tls=self.tls is not None, auth_user=user, size=len(message), subject=subject)
        local = [r for r in rcpts if self.actions.get(r) == "deliver"]
        onward = [r for r in rcpts if self.actions.get(r) == "relay"]
        if self.spec.lmtp:
            return self._deliver_each(queue_id, local, message)
        folder = None
        verdict = None
        if (self.spec.assess or self.spec.reply_report) and local:
            verdict = await self._assess(message, mail_from, session.host_name or "")
        if self.spec.assess and verdict is not None:
            self.emit("assessed", queue_id=queue_id, subject=subject, folder=verdict.folder, reasons=verdict.reasons,
                      spf=verdict.spf.result, dkim=verdict.dkim.result, dmarc=verdict.dmarc.result,
                      iprev=verdict.iprev.result, authentication_results=verdict.authentication_results)
            # counted in the next DMARC aggregate report, refused or not (disposition reject)
            self.server.seen.append(Seen.of(self.peer_ip or "", verdict, time.time()))
            if verdict.folder == "Rejected":
                return _ascii(f"550 5.7.1 {verdict.reasons[0]}")[:500]
            folded = ";\r\n\t".join(part.strip() for part in verdict.authentication_results.split(";"))
            message = f"Authentication-Results: {folded}\r\n".encode("ascii", "backslashreplace") + message
            folder = verdict.folder if verdict.folder != "Inbox" else None
        try:
            for rcpt in local:
                d = maildir.deliver(self.ctx, rcpt, message, folder)
                self.emit("delivered", queue_id=queue_id, to=rcpt, mailbox=str(d.path), key=d.key,
                          folder=folder or "INBOX")
            if onward:
                await self.server.queue.submit(mail_from, onward, message, queue_id)
            if self.spec.reply_report and verdict is not None and mail_from:
                await self._reply_report(verdict, message, mail_from, session.host_name or "", local[0])
        except (OSError, ConfigError, RuntimeError) as e:
            self.emit("error", queue_id=queue_id,
                      what=f"could not store message {queue_id}: {type(e).__name__}: {e}")
            return "451 4.3.0 Error: could not store the message; try again later"
        return f"250 2.0.0 Ok: queued as {queue_id}"

    async def _reply_report(self, verdict: Any, message: bytes, mail_from: str, helo: str, rcpt: str) -> None:
        """The verifier answers the sender with what it found (from the null sender, RFC 3834)."""
        headers = BytesHeaderParser().parsebytes(message)
        if (headers.get("Auto-Submitted") or "no").lower() != "no":
            return  # never answer an automatic message: no loops
        report = provider.verifier_report(verdict, to=mail_from, sender=self.server.hostname,
                                          client_ip=self.peer_ip or "", helo=helo, mail_from=mail_from,
                                          subject=str(headers.get("Subject") or ""), tls=self.tls is not None,
                                          verifier=rcpt)
        qid = await self.server.queue.submit("", [mail_from], report)
        self.emit("report-sent", queue_id=qid, to=mail_from, summary={
            "spf": verdict.spf.result, "dkim": verdict.dkim.result, "dmarc": verdict.dmarc.result,
            "iprev": verdict.iprev.result})

    async def _assess(self, message: bytes, mail_from: str, helo: str) -> Any:
        """The provider's checks (labkit.core.auth.verdict.assess), off the loop; they ask the lab
        DNS by a call when it runs in this process (``ctx.resolver(local=True)``)."""
        resolver = self.ctx.resolver(local=True)
        return await asyncio.get_running_loop().run_in_executor(None, functools.partial(
            assess, message, mail_from=mail_from, helo=helo, client_ip=self.peer_ip or "",
            resolver=resolver, tls=self.tls is not None, authserv_id=self.server.hostname))

    def _deliver_each(self, queue_id: str, rcpts: list[str], message: bytes) -> str:
        """LMTP: deliver to each recipient on its own and answer for each (RFC 2033 §4.2)."""
        replies = []
        for rcpt in rcpts:
            try:
                d = maildir.deliver(self.ctx, rcpt, message)
            except (OSError, ConfigError) as e:
                self.emit("error", queue_id=queue_id, to=rcpt,
                          what=f"could not deliver to {rcpt}: {type(e).__name__}: {e}")
                replies.append(f"451 4.3.0 <{rcpt}> could not be stored; try again later")
                continue
            self.emit("delivered", queue_id=queue_id, to=rcpt, mailbox=str(d.path), key=d.key)
            replies.append(f"250 2.0.0 <{rcpt}> delivered to its Maildir as {d.key}")
        return "\r\n".join(replies)  # one reply line per recipient, each a whole reply

    async def handle_exception(self, error: Exception) -> str:
        """Any error in a hook: report it as an event, answer a temporary failure, keep serving."""
        self.emit("error", command=self.command,
                  what=f"{type(error).__name__}: {error}" + (f" (caused by {error.__cause__!r})"
                                                              if error.__cause__ else ""))
        return "451 4.3.0 Error: internal error in the lab server; the lab's event log has details"


class _QuietLoginDataWarning(logging.Filter):
    """aiosmtpd logs "Session.login_data is deprecated" on every successful AUTH, from its own
    code, and a warning about AUTH without TLS at each connection to a stripped ISP (which is
    the exercise); neither says anything to a learner, so both are dropped (nothing else is)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return "login_data is deprecated" not in text and "auth_require_tls" not in text


def _quiet_aiosmtpd() -> None:
    logger = logging.getLogger("mail.log")
    if not any(isinstance(f, _QuietLoginDataWarning) for f in logger.filters):
        logger.addFilter(_QuietLoginDataWarning())


class RoleServer(LabServer):
    """A running role: ``.role``, ``.host``, ``.port``, ``.hostname``; ``await .close()``."""

    def __init__(self, ctx: "LabContext", spec: RoleSpec, host_key: str, bind: str):
        world = ctx.world
        self.ctx = ctx
        self.spec = spec
        self.role = spec.role
        self.host_key = host_key
        self.host = bind
        self._setup_listener()
        self.hostname = world.host(host_key).name
        self.standard_port = world.service(spec.role).standard_port
        self.local_domains = world.local_domains(spec.role)
        self.mailboxes = frozenset(world.mailboxes(self.local_domains))  #: the addresses that exist here
        self.mynetworks = _mynetworks(world, host_key)
        self.logins = {u.lower(): p for u, p in world.logins(spec.role).items()} if spec.auth else {}
        self.queue: RelayQueue | None = None
        if spec.relay is not None or spec.assess or spec.reply_report:
            # relaying roles send on; the provider sends DMARC reports, the verifier its answers
            relayhost = _smarthost_relayhost(ctx) if spec.relay == "relayhost" else None
            self.queue = RelayQueue(ctx, host_key, spec.role, relayhost=relayhost,
                                    local_domains=self.local_domains)
        #: what the provider assessed since its last DMARC reports (labkit.core.auth.reports.Seen)
        self.seen = SeenLog(ctx.sandbox / "log" / f"{spec.role}-seen.jsonl" if spec.assess else None)
        #: play a man in the middle that removes STARTTLS (ERRATA 8): no STARTTLS offered, and
        #: AUTH taken in clear, so a client that does not insist on TLS gives its password away.
        #: Read at each new connection.
        self.strip_starttls = False
        self._connections: set[_LabSMTP] = set()

    def __repr__(self) -> str:
        return f"<RoleServer {self.role} {self.hostname} at {self.host}:{self.port} (plays {self.standard_port})>"

    async def _start(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        creds = self.ctx.credentials.get(self.host_key)
        if creds is None:
            raise ConfigError("credentials", f"no TLS key and certificate for lab host {self.host_key!r} "
                                             f"({self.hostname})", "issue them with labkit.core.pki.issue_host")
        tls = creds.server_context()
        spec = self.spec

        protocol = _LabLMTP if spec.lmtp else _LabSMTP

        def factory() -> _LabSMTP:
            handler = _Connection(self)
            stripped = self.strip_starttls and not spec.implicit_tls
            with warnings.catch_warnings():
                # a stripped ISP takes AUTH in clear on purpose (strip_starttls); aiosmtpd warns
                # about exactly that at every connection, which is the lesson, not news
                warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS",
                                        category=UserWarning)
                return _make(handler, stripped)

        def _make(handler: "_Connection", stripped: bool) -> _LabSMTP:
            return protocol(handler, self, hostname=self.hostname, ident=f"{'LMTP' if spec.lmtp else 'ESMTP'} Mail Lab ({spec.role})",
                            tls_context=None if spec.implicit_tls or stripped else tls,
                            require_starttls=spec.require_starttls and not stripped,
                            auth_required=spec.auth_required and not spec.implicit_tls,
                            auth_require_tls=not spec.implicit_tls and not stripped,
                            auth_exclude_mechanism=() if spec.auth else ("LOGIN", "PLAIN"),
                            authenticator=handler.authenticate, data_size_limit=DATA_SIZE_LIMIT,
                            timeout=IDLE_TIMEOUT, loop=loop)

        await self._listen(factory, port, ssl=tls if spec.implicit_tls else None)
        if self.queue is not None:
            await self.queue.start()
        self._announce()

    async def close(self) -> None:
        """Stop listening, end open connections, stop the queue (its spool stays). Idempotent."""
        await super().close()

    async def _end_connections(self) -> None:
        for conn in list(self._connections):
            if conn.transport is not None:
                conn.transport.close()
        if self.queue is not None:
            await self.queue.close()
        self.seen.close()

    def _open_connections(self) -> set[_LabSMTP]:
        return self._connections


async def start_role(role: str, ctx: "LabContext", host: str | None = None, port: int = 0) -> RoleServer:
    """Start ``role`` on the running loop; listen on ``host`` (default: the role's lab address).

    Registers ``ctx.ports[(host, standard_port)] = port`` so that other lab clients find it.
    Closes what it started if anything fails on the way.
    """
    spec = role_spec(role)
    host_key = ctx.world.service(role).host
    server = RoleServer(ctx, spec, host_key, host or ctx.world.host(host_key).address)
    _quiet_aiosmtpd()
    return await server._start_or_close(port)
