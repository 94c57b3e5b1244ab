"""The outbound queue of a lab MTA: spool, deliver, retry, bounce.

An MTA that accepts a message takes responsibility for it (RFC 5321 §6.1): it writes the
message to disk *before* it answers ``250``, then delivers it in the background. What Postfix
calls the ``deferred`` queue is the same idea: a message whose delivery failed for a temporary
reason waits on disk and is tried again later, with growing pauses, until it is delivered, fails
for good, or has waited too long. A message that fails for good goes back to its sender as a
*bounce*: a delivery status notification (RFC 3464) from ``MAILER-DAEMON``, sent with the null
reverse-path ``<>`` so that a bounce is never bounced again.

How a reply decides the outcome of each recipient (RFC 5321 §4.2.1)::

    2xx                               relayed   the next hop took responsibility
    4xx, refused, timeout, TLS fault  deferred  try again after retry_first, 2x, 4x ... retry_max
    5xx                               bounced   tell the sender, forget the message
    still deferred after queue_lifetime         bounced (like Postfix's maximal_queue_lifetime)

Where a message goes next:

* by MX (the smarthost, any MTA without a relayhost): ask DNS for the MX records of the
  recipient's domain (RFC 5321 §5.1), then the A record of each exchanger, and connect to its
  port 25. In the lab, "port 25 at 127.0.40.25" is whatever ephemeral port plays it
  (:meth:`labkit.net.context.LabContext.port_for`); if nothing does, that is "connection refused".
* to a fixed *relayhost*, as the memo's ``relayhost = [mail.isp.example.net]:587`` with
  ``smtp_sasl_auth_enable`` and ``smtp_tls_security_level = secure``: STARTTLS is required and
  the certificate must name the relayhost; then SMTP AUTH.

The client side is :mod:`smtplib`, run in worker threads so that the lab's event loop (which
also runs the servers being talked to) never blocks. Every step is reported as an event:
``queued``, ``relayed``, ``deferred``, ``bounced``, ``delivered``, ``error``. Passwords never
appear in them.
"""
from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import re
import secrets
import smtplib
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from ...core.dns.resolver import mx_hosts
from ...core.pki import client_context
from ...errors import DestinationError, DNSLookupError, LabStateError, NullMXError, ParseError
from ...files import write_atomic
from ..mailbox import maildir

if TYPE_CHECKING:
    from ..context import LabContext

RELAYED, DEFERRED, BOUNCED, DELIVERED = "relayed", "deferred", "bounced", "delivered"


# ---------------------------------------------------------------------------------------------
# Values

@dataclass(frozen=True)
class Relayhost:
    """A fixed next hop for every message (Postfix ``relayhost``), with STARTTLS and AUTH.

    ``port`` None means "whatever plays ``standard_port`` at ``address`` in this lab", looked
    up at each attempt, so the relayhost may start after the queue.
    """

    address: str
    name: str  #: the host name its certificate must carry (``smtp_tls_secure_cert_match``)
    standard_port: int = 587
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    port: int | None = None
    require_tls: bool = True

    def __str__(self) -> str:
        return f"[{self.name}]:{self.standard_port}"


@dataclass(frozen=True)
class Target:
    """One server to try: its name (for TLS and the reports), address and port."""

    name: str
    address: str
    standard_port: int = 25
    port: int | None = None


@dataclass
class QueuedMessage:
    """A message in the queue: its envelope and its bytes."""

    queue_id: str
    mail_from: str  #: ``""`` for the null reverse-path of a bounce
    rcpts: list[str]  #: recipients still to deliver
    data: bytes = field(repr=False)
    arrival: float = field(default_factory=time.time)
    attempts: int = 0
    role: str = ""  #: the role whose queue holds it

    @property
    def is_bounce(self) -> bool:
        return self.mail_from == ""


@dataclass(frozen=True)
class RcptResult:
    """What one delivery attempt did for one recipient."""

    rcpt: str
    outcome: str  #: ``relayed``, ``deferred``, ``bounced`` or ``delivered``
    reply: str  #: the server's reply, or what went wrong before there was one
    via: str = ""  #: the host name of the server (or the mailbox path for ``delivered``)
    address: str = ""
    port: int | None = None
    tls: bool = False
    auth_user: str | None = None
    status: str = ""  #: the RFC 3463 status code, for a bounce (``5.1.1``)


# ---------------------------------------------------------------------------------------------
# Pure helpers

def new_queue_id() -> str:
    """A Postfix-like queue id: 10 upper-case hex digits."""
    return secrets.token_hex(5).upper()


def outcome_for(code: int) -> str:
    """``relayed`` for 2xx, ``bounced`` for 5xx, ``deferred`` for anything else."""
    if 200 <= code < 300:
        return RELAYED
    if 500 <= code < 600:
        return BOUNCED
    return DEFERRED


def backoff(attempts: int, first: float, maximum: float) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: first, 2x, 4x ..., at most max."""
    return min(first * (2 ** max(attempts - 1, 0)), maximum)


_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


def enhanced_status(code: int, text: str) -> str:
    """The RFC 3463 status at the start of a reply text, or ``X.0.0`` from the basic code."""
    m = _STATUS.match(text)
    if m:
        return m.group(0)
    return f"{code // 100 if code >= 200 else 4}.0.0"


def reply_text(code: int, message: bytes | str) -> str:
    """``550 5.1.1 No such user`` from smtplib's (code, message), on one line."""
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    return f"{code} {' '.join(message.split())}".strip()


def headers_of(message: bytes) -> bytes:
    """The header section of a message (up to the first empty line)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        head, found, _ = message.partition(sep)
        if found:
            return head + sep[: len(sep) // 2]
    return message


def build_bounce(*, reporting_mta: str, queue_id: str, original_from: str,
                 failed: Iterable[RcptResult], original: bytes, arrival: float,
                 now: float | None = None, boundary: str | None = None) -> bytes:
    """A delivery status notification (RFC 3464) for ``failed`` recipients, as bytes.

    Three parts in a ``multipart/report`` (RFC 6522): a note for people, the machine-readable
    ``message/delivery-status``, and the headers of the original message. It comes from
    ``MAILER-DAEMON`` and is to be sent with the null reverse-path ``MAIL FROM:<>``.
    """
    now = time.time() if now is None else now
    boundary = boundary or f"{queue_id}.{int(now)}/{reporting_mta}"
    failed = list(failed)
    lines_for_people = "\n".join(f"<{r.rcpt}>: {r.via + ' said: ' if r.via else ''}{r.reply}"
                                 for r in failed)
    per_rcpt = "\n\n".join(
        "\n".join([f"Final-Recipient: rfc822; {r.rcpt}",
                   "Action: failed",
                   f"Status: {r.status or '5.0.0'}",
                   *([f"Remote-MTA: dns; {r.via}"] if r.via else []),
                   f"Diagnostic-Code: smtp; {r.reply}"])
        for r in failed)
    text = f"""\
From: MAILER-DAEMON@{reporting_mta} (Mail Delivery System)
To: <{original_from}>
Subject: Undelivered Mail Returned to Sender
Date: {email.utils.formatdate(now, localtime=True)}
Message-ID: <{int(now)}.{queue_id}.bounce@{reporting_mta}>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="{boundary}"

This is a MIME-encapsulated message.

--{boundary}
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host {reporting_mta}.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

{lines_for_people}

--{boundary}
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; {reporting_mta}
X-Queue-ID: {queue_id}
Arrival-Date: {email.utils.formatdate(arrival, localtime=True)}

{per_rcpt}

--{boundary}
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

"""
    body = text.encode("utf-8", "replace") + maildir.to_lf(headers_of(original))
    body += f"\n--{boundary}--\n".encode()
    return maildir.to_crlf(body)


def encode_spool(msg: QueuedMessage) -> bytes:
    """A spool file: one JSON line with the envelope, then the message bytes as received."""
    envelope = {"queue_id": msg.queue_id, "mail_from": msg.mail_from, "rcpts": msg.rcpts,
                "arrival": msg.arrival, "attempts": msg.attempts, "role": msg.role}
    return json.dumps(envelope).encode() + b"\n" + msg.data


def decode_spool(raw: bytes) -> QueuedMessage:
    """Read back what :func:`encode_spool` wrote (ValueError if it is not a spool file)."""
    head, nl, data = raw.partition(b"\n")
    if not nl:
        raise ParseError("no envelope line")
    env = json.loads(head)
    return QueuedMessage(env["queue_id"], env["mail_from"], list(env["rcpts"]), data,
                         float(env["arrival"]), int(env["attempts"]), env.get("role", ""))


# ---------------------------------------------------------------------------------------------
# One SMTP transaction (blocking: runs in a worker thread)

@dataclass
class _Session:
    """What the client learnt on one connection, for the reports."""

    tls: bool = False
    auth_user: str | None = None
    reached: bool = False  #: True once the server greeted us with 220


def _starttls(smtp: smtplib.SMTP, context: ssl.SSLContext, server_name: str) -> None:
    """STARTTLS by hand: send the command, then wrap the socket, checking ``server_name``.

    (smtplib's own ``starttls()`` checks the name given to ``connect()``, which in the lab is
    an IP address; the certificate names the host.) RFC 3207 §4.2: everything learnt before
    is forgotten, so EHLO is sent again.
    """
    code, message = smtp.docmd("STARTTLS")
    if code != 220:
        raise smtplib.SMTPResponseException(code, message)
    smtp.sock = context.wrap_socket(smtp.sock, server_hostname=server_name)
    smtp.file = None
    smtp.helo_resp = smtp.ehlo_resp = None
    smtp.esmtp_features = {}
    smtp.does_esmtp = False
    smtp.ehlo()


def _describe_failure(stage: str, error: BaseException, timeout: float) -> tuple[str, str]:
    """(text, status) for a failure that left no SMTP reply."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted during {stage}: {error.verify_message}", "4.7.5"
    if isinstance(error, ssl.SSLError):
        return f"TLS failed during {stage}: {error.reason or error}", "4.7.0"
    # smtplib turns a timeout while reading a reply into SMTPServerDisconnected: look beneath
    if isinstance(error, (socket.timeout, TimeoutError)) or isinstance(error.__context__, TimeoutError):
        return f"timed out after {timeout:g} s waiting for the reply to {stage}", "4.4.2"
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused during {stage}", "4.4.1"
    if isinstance(error, smtplib.SMTPServerDisconnected):
        return f"the server closed the connection during {stage}", "4.4.2"
    if isinstance(error, smtplib.SMTPResponseException):
        return f"{stage}: {reply_text(error.smtp_code, error.smtp_error)}", \
            enhanced_status(error.smtp_code, reply_text(error.smtp_code, error.smtp_error)[4:])
    return f"{type(error).__name__} during {stage}: {error}", "4.0.0"


def smtp_transaction(target: Target, port: int, mail_from: str, rcpts: list[str], data: bytes, *,
                     helo: str, source: str | None, tls_context: ssl.SSLContext,
                     login: tuple[str, str] | None = None, require_tls: bool = False,
                     timeout: float = 10.0,
                     track: Callable[[smtplib.SMTP, bool], None] | None = None,
                     ) -> tuple[list[RcptResult], _Session]:
    """Hand ``data`` to one server for ``rcpts``; return a result per recipient.

    Blocking. STARTTLS is used whenever the server offers it (and required if
    ``require_tls``); AUTH if ``login`` is given. ``track(smtp, True/False)`` lets the caller
    find the open connection, to cut it when the queue closes.
    """
    session = _Session()
    results: dict[str, RcptResult] = {}

    def result(rcpt: str, code: int, text: str) -> RcptResult:
        outcome = outcome_for(code)
        return RcptResult(rcpt, outcome, text, target.name, target.address, port, session.tls,
                          session.auth_user, enhanced_status(code, text[4:]) if outcome != RELAYED else "")

    stage = f"connect to {target.address} port {port}"
    smtp = smtplib.SMTP(local_hostname=helo, timeout=timeout,
                        source_address=(source, 0) if source else None)
    if track:
        track(smtp, True)
    try:
        code, message = smtp.connect(target.address, port)
        if code != 220:  # refused in its greeting (OP25B, a busy server): try the next one
            text = reply_text(code, message)
            return [RcptResult(r, DEFERRED, f"the server refused the connection: {text}", target.name,
                               target.address, port, status=enhanced_status(code, text[4:]))
                    for r in rcpts], session
        session.reached = True
        stage = "EHLO"
        code, _ = smtp.ehlo()
        if code != 250:
            stage = "HELO"
            smtp.helo()
        if smtp.has_extn("starttls"):
            stage = "STARTTLS"
            _starttls(smtp, tls_context, target.name)
            session.tls = True
        elif require_tls:
            return [RcptResult(r, DEFERRED, f"{target.name} does not offer STARTTLS and TLS is "
                                            "required for this next hop", target.name, target.address,
                               port, status="4.7.4") for r in rcpts], session
        if login:
            stage = "AUTH"
            try:
                smtp.login(*login)
            except smtplib.SMTPAuthenticationError as e:  # a wrong password is retried: Postfix too
                text = reply_text(e.smtp_code, e.smtp_error)
                return [RcptResult(r, DEFERRED, f"SASL authentication failed as {login[0]}: {text}",
                                   target.name, target.address, port, session.tls, status="4.7.8")
                        for r in rcpts], session
            session.auth_user = login[0]
        stage = f"MAIL FROM:<{mail_from}>"
        code, message = smtp.mail(mail_from)
        if code != 250:
            text = reply_text(code, message)
            return [result(r, code, text) for r in rcpts], session
        accepted = []
        for rcpt in rcpts:
            stage = f"RCPT TO:<{rcpt}>"
            code, message = smtp.rcpt(rcpt)
            if code in (250, 251):
                accepted.append(rcpt)
            else:
                results[rcpt] = result(rcpt, code, reply_text(code, message))
        if accepted:
            stage = "DATA"
            try:
                code, message = smtp.data(data)
            except smtplib.SMTPDataError as e:  # no 354: the reply to DATA itself
                code, message = e.smtp_code, e.smtp_error
            text = reply_text(code, message)
            for rcpt in accepted:
                results[rcpt] = result(rcpt, code, text)
        else:
            stage = "RSET"
            smtp.rset()
        stage = "QUIT"
        with contextlib.suppress(smtplib.SMTPServerDisconnected):  # the mail is handed over already
            smtp.quit()
        return [results[r] for r in rcpts], session
    except (OSError, smtplib.SMTPException) as e:
        text, status = _describe_failure(stage, e, timeout)
        return [results.get(r) or RcptResult(r, DEFERRED, text, target.name, target.address, port,
                                             session.tls, session.auth_user, status)
                for r in rcpts], session
    finally:
        smtp.close()
        if track:
            track(smtp, False)


def resolve_targets(resolver, domain: str) -> list[Target]:
    """The servers to try for ``domain``: its MX hosts by preference, each with its addresses.

    Blocking (DNS). The MX hosts are :func:`labkit.core.dns.resolver.mx_hosts`, the lookup
    chapter 03 teaches (with the "implicit MX" of RFC 5321 §5.1); a null MX (``MX 0 .``,
    RFC 7505) or a domain that does not exist fails for good; a DNS that does not answer, or a
    domain with neither MX nor address, is temporary. An address literal needs no DNS.
    """
    import dns.exception  # dnspython loads only when a queue relays (import time of the lab)

    if domain.startswith("["):
        inner = domain[1:-1]
        return [Target(domain, inner[5:] if inner.lower().startswith("ipv6:") else inner)]
    try:
        hosts = [host for _, host in mx_hosts(resolver, domain)]
    except NullMXError:
        raise DestinationError(f"{domain} publishes a null MX (RFC 7505): it accepts no mail",
                               True, "5.1.10") from None
    except DNSLookupError as e:
        if e.outcome == "NXDOMAIN":
            raise DestinationError(f"Host or domain name not found: {domain} does not exist (NXDOMAIN)",
                                   True, "5.4.4") from None
        raise DestinationError(f"DNS lookup of MX {domain} failed: {e.outcome}", False, "4.4.3") from None
    targets: list[Target] = []
    problems = []
    for host in hosts:
        try:
            targets += [Target(host, r.address) for r in resolver.resolve(host, "A")]
        except dns.exception.DNSException as e:
            problems.append(f"A {host}: {type(e).__name__}")
    if not targets:
        raise DestinationError(f"no address for the mail hosts of {domain} ({'; '.join(problems)})",
                               False, "4.4.3")
    return targets


# ---------------------------------------------------------------------------------------------
# The queue

class RelayQueue:
    """The outbound queue of one role at one lab host.

    ``relayhost`` None delivers by MX; a :class:`Relayhost` sends everything there.
    Recipients in ``local_domains`` (a bounce to a local sender) go straight to their Maildir.

        queue = RelayQueue(ctx, "isp", "smarthost")
        await queue.start()                     # also takes up what an earlier run spooled
        qid = await queue.submit("alice@example.com", ["bob@inbox.example.org"], data)
        await queue.flush()                     # retry deferred messages now
        await queue.close()                     # stop; what is spooled stays on disk
    """

    def __init__(self, ctx: "LabContext", host_key: str, role: str, *,
                 relayhost: Relayhost | None = None, local_domains: Iterable[str] = ()):
        self.ctx = ctx
        self.host = ctx.world.host(host_key)
        self.role = role
        self.relayhost = relayhost
        self.local_domains = frozenset(d.lower() for d in local_domains)
        self.folder = ctx.sandbox / "queue" / host_key
        self._tasks: dict[str, asyncio.Task] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._started = False
        self._executor: ThreadPoolExecutor | None = None
        self._connections: set[smtplib.SMTP] = set()
        self._lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None

    # -- public ---------------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Make the spool folder and schedule the messages an earlier run left there."""
        if self._started:
            return []
        self._started = True
        self.folder.mkdir(parents=True, exist_ok=True)
        resumed = []
        for msg in self.spooled():
            self._schedule(msg)
            resumed.append(msg.queue_id)
        return resumed

    async def submit(self, mail_from: str, rcpts: list[str], data: bytes,
                     queue_id: str | None = None) -> str:
        """Spool a message (on disk before this returns) and start delivering it; its queue id."""
        if self._closed:
            raise LabStateError(f"the {self.role} queue at {self.host.name} is closed; "
                               "start the role again to queue mail")
        if not self._started:
            await self.start()
        # SMTP carries lines ending in CRLF; smtplib sends bytes as they are, so a message made
        # with bare LF (email's as_bytes()) would reach the next server as one overlong line
        data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        msg = QueuedMessage(queue_id or new_queue_id(), mail_from, list(rcpts), data, role=self.role)
        if msg.queue_id in self._tasks:
            msg.queue_id = new_queue_id()
        self._spool(msg)
        self._emit("queued", queue_id=msg.queue_id, mail_from=mail_from, rcpts=list(rcpts),
                   size=len(data), next_hop=str(self.relayhost) if self.relayhost else "MX")
        self._schedule(msg)
        return msg.queue_id

    async def flush(self) -> None:
        """Try every deferred message again now (Postfix: ``postqueue -f``)."""
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    async def join(self, timeout: float | None = None) -> None:
        """Wait until no message is left in the queue (TimeoutError after ``timeout``)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    def spooled(self) -> list[QueuedMessage]:
        """The messages of this role waiting on disk (what ``mailq`` would list)."""
        out = []
        if not self.folder.is_dir():
            return out
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith("."):
                continue
            try:
                msg = decode_spool(path.read_bytes())
            except (ValueError, KeyError) as e:
                self._emit("error", what=f"unreadable spool file {path}: {e}; move it away to silence this")
                continue
            if msg.role == self.role:
                out.append(msg)
        return out

    async def close(self) -> None:
        """Stop delivering. Spooled messages stay on disk for the next start. Idempotent."""
        if self._closed:
            return
        self._closed = True
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        with self._lock:
            connections = list(self._connections)
        for smtp in connections:  # unblock worker threads waiting on a reply
            sock = getattr(smtp, "sock", None)
            if sock is not None:
                with contextlib.suppress(OSError):  # already closed by the worker: nothing to cut
                    sock.shutdown(socket.SHUT_RDWR)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, True)
            self._executor = None

    # -- internals ----------------------------------------------------------------------

    def _emit(self, kind: str, **details) -> None:
        self.ctx.events.emit(self.host.name, self.role, kind, **details)

    def _path(self, queue_id: str) -> Path:
        return self.folder / queue_id

    def _spool(self, msg: QueuedMessage) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self._path(msg.queue_id), encode_spool(msg), 0o600)

    def _schedule(self, msg: QueuedMessage) -> None:
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(self._run(msg), name=f"queue {msg.queue_id}")
        self._tasks[msg.queue_id] = task
        task.add_done_callback(lambda t, qid=msg.queue_id: self._done(qid, t))

    def _done(self, queue_id: str, task: asyncio.Task) -> None:
        self._tasks.pop(queue_id, None)
        if not self._tasks:
            self._idle.set()
        if not task.cancelled() and task.exception() is not None:
            e = task.exception()
            self._emit("error", queue_id=queue_id,
                       what=f"the delivery of {queue_id} stopped: {type(e).__name__}: {e}; "
                            "it stays spooled and is tried again when the role restarts")

    async def _in_thread(self, fn, *args, **kwargs):
        if self._executor is None:
            self._executor = ThreadPoolExecutor(4, thread_name_prefix=f"labkit-queue-{self.role}")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _track(self, smtp: smtplib.SMTP, active: bool) -> None:
        with self._lock:
            (self._connections.add if active else self._connections.discard)(smtp)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):  # the pause simply ran out
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _run(self, msg: QueuedMessage) -> None:
        opts = self.ctx.options
        while msg.rcpts:
            results = await self._attempt(msg)
            msg.attempts += 1
            failed = [r for r in results if r.outcome == BOUNCED]
            deferred = [r for r in results if r.outcome == DEFERRED]
            done = {r.rcpt for r in results if r.outcome != DEFERRED}
            msg.rcpts = [r for r in msg.rcpts if r not in done]
            expired = bool(deferred) and time.time() - msg.arrival >= opts.queue_lifetime
            delay = backoff(msg.attempts, opts.retry_first, opts.retry_max)
            for r in results:
                self._report(msg, r, retry_in=None if expired else delay)
            if expired:
                gave_up = [RcptResult(r.rcpt, BOUNCED, f"message expired after {opts.queue_lifetime:g} s "
                                                       f"in the queue; last: {r.reply}", r.via, r.address,
                                      r.port, status=(r.status or "4.4.7").replace("4.", "5.", 1))
                           for r in deferred]
                for r in gave_up:
                    self._report(msg, r)
                failed += gave_up
                msg.rcpts = []
            if failed:
                await self._bounce(msg, failed)
            if not msg.rcpts:
                break
            self._spool(msg)
            await self._sleep(delay)
        self._path(msg.queue_id).unlink(missing_ok=True)

    def _report(self, msg: QueuedMessage, r: RcptResult, retry_in: float | None = None) -> None:
        common = dict(queue_id=msg.queue_id, to=r.rcpt, mail_from=msg.mail_from, reply=r.reply)
        if r.outcome == DELIVERED:
            self._emit(DELIVERED, mailbox=r.via, **common)
        elif r.outcome == RELAYED:
            self._emit(RELAYED, via=r.via, address=r.address, port=r.port, tls=r.tls,
                       auth_user=r.auth_user, **common)
        elif r.outcome == DEFERRED:
            self._emit(DEFERRED, via=r.via, reason=r.reply, attempt=msg.attempts, retry_in=retry_in,
                       **common)
        else:
            self._emit(BOUNCED, via=r.via, reason=r.reply, status=r.status, **common)

    async def _attempt(self, msg: QueuedMessage) -> list[RcptResult]:
        results: list[RcptResult] = []
        remote = []
        for rcpt in msg.rcpts:
            domain = rcpt.rpartition("@")[2].lower()
            if domain in self.local_domains:
                results.append(self._deliver_locally(msg, rcpt))
            else:
                remote.append(rcpt)
        if not remote:
            return results
        if self.relayhost is not None:
            rh = self.relayhost
            target = Target(rh.name, rh.address, rh.standard_port, rh.port)
            login = (rh.user, rh.password) if rh.user and rh.password is not None else None
            return results + await self._try_targets([target], msg, remote, login, rh.require_tls)
        by_domain: dict[str, list[str]] = {}
        for rcpt in remote:
            by_domain.setdefault(rcpt.rpartition("@")[2].lower(), []).append(rcpt)
        for domain, rcpts in by_domain.items():
            try:
                targets = await self._in_thread(resolve_targets, self.ctx.resolver(), domain)
            except DestinationError as e:
                results += [RcptResult(r, BOUNCED if e.permanent else DEFERRED, e.reason, status=e.status)
                            for r in rcpts]
                continue
            except LabStateError as e:  # ctx.resolver(): the lab DNS is not up
                results += [RcptResult(r, DEFERRED, f"cannot look up MX {domain}: {e}", status="4.4.3")
                            for r in rcpts]
                continue
            results += await self._try_targets(targets, msg, rcpts, None, False)
        return results

    def _deliver_locally(self, msg: QueuedMessage, rcpt: str) -> RcptResult:
        try:
            d = maildir.deliver(self.ctx, rcpt, msg.data)
        except (OSError, ValueError) as e:
            return RcptResult(rcpt, DEFERRED, f"local delivery failed: {e}", status="4.3.0")
        return RcptResult(rcpt, DELIVERED, "delivered to maildir", via=str(d.path))

    async def _try_targets(self, targets: list[Target], msg: QueuedMessage, rcpts: list[str],
                           login: tuple[str, str] | None, require_tls: bool) -> list[RcptResult]:
        """Try each server in turn until one answers; a server that cannot be reached passes
        the recipients on to the next (RFC 5321 §5.1)."""
        if self._tls is None:
            self._tls = client_context(self.ctx.ca_path)
        last: list[RcptResult] = []
        for target in targets:
            port = target.port or self.ctx.port_for(target.address, target.standard_port, target.name)
            if port is None:
                last = [RcptResult(r, DEFERRED, f"connection refused: nothing listens on port "
                                                f"{target.standard_port} at {target.address} "
                                                f"({target.name}) in this lab", target.name,
                                   target.address, status="4.4.1") for r in rcpts]
                continue
            results, session = await self._in_thread(
                smtp_transaction, target, port, msg.mail_from, rcpts, msg.data,
                helo=self.host.name, source=self.host.address, tls_context=self._tls, login=login,
                require_tls=require_tls, timeout=self.ctx.options.smtp_timeout, track=self._track)
            if session.reached:
                return results
            last = results
        return last

    async def _bounce(self, msg: QueuedMessage, failed: list[RcptResult]) -> None:
        if msg.is_bounce:
            self._emit("bounce-dropped", queue_id=msg.queue_id, rcpts=[r.rcpt for r in failed],
                       why="a bounce (null sender <>) that fails is not bounced again (RFC 5321 §4.5.5)")
            return
        data = build_bounce(reporting_mta=self.host.name, queue_id=msg.queue_id,
                            original_from=msg.mail_from, failed=failed, original=msg.data,
                            arrival=msg.arrival)
        qid = await self.submit("", [msg.mail_from], data)
        self._emit("bounce-sent", queue_id=msg.queue_id, bounce_queue_id=qid, to=msg.mail_from,
                   rcpts=[r.rcpt for r in failed])
