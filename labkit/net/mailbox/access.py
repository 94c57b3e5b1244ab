"""What the lab's POP3 and IMAP servers share: a line-based connection with STARTTLS
(:class:`Channel`), a listening server with the lab's accounts, timeouts and events
(:class:`MailAccessServer`, started by :func:`start_server`), and the small SASL helpers both
use. :mod:`labkit.net.mailbox.pop3` and :mod:`labkit.net.mailbox.imap` speak the protocols.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ssl
import threading
from typing import TYPE_CHECKING, Any

from ...core.transcript import ascii_text
from ...errors import ConfigError
from ..serverbase import LabServer, tls_info
from .maildir import mailbox_folder
from .store import MaildirStore

if TYPE_CHECKING:
    from ..context import LabContext

#: The standard port each mail access role plays.
STANDARD_PORTS = {"pop3": 110, "pop3s": 995, "imap": 143, "imaps": 993}
#: The lab host that serves the mailboxes (where Dovecot runs in real mode).
HOST_KEY = "home"

#: Longest line of a SASL exchange (RFC 5034 lifts the 255 limit for those).
SASL_MAX_LINE = 8192
#: Seconds a client may take to log in, then to send its next command (RFC 1939 §3 asks for
#: at least 10 minutes once logged in).
LOGIN_TIMEOUT = 60.0
POP3_IDLE_TIMEOUT = 600.0
#: Seconds to wait before answering a wrong password: slows down guessing.
AUTH_FAILURE_DELAY = 1.0
#: Failed logins, then bad commands in a row, after which the server hangs up.
MAX_AUTH_FAILURES = 3
MAX_BAD_COMMANDS = 20
#: Bytes of input held before the server stops reading from a client.
_MAX_BUFFER = 256 * 1024


class LineTooLong(Exception):
    """A client line longer than the limit (the line has been skipped)."""


class ConnectionClosed(Exception):
    """The client went away."""


def check_plain(response: bytes) -> tuple[str, str] | None:
    """Split a SASL PLAIN response (RFC 4616) into (user, password); None if malformed.

    The response is ``authzid NUL authcid NUL password``. Acting for someone else (an authzid
    that is not the user) is not allowed in the lab, so such a response is refused too.
    """
    parts = response.split(b"\0")
    if len(parts) != 3 or not parts[1]:
        return None
    try:
        authzid, user, password = (p.decode("utf-8") for p in parts)
    except UnicodeDecodeError:
        return None
    if authzid and authzid.lower() != user.lower():
        return None
    return user, password


def decode_base64(text: str) -> bytes | None:
    """Strict base64 (RFC 4648) as SASL uses it; ``=`` alone is the empty string. None if bad."""
    text = text.strip()
    if text == "=":
        return b""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------
# The shell: one line-based connection

class Channel(asyncio.Protocol):
    """One client connection: lines in, bytes out, STARTTLS in place, flow control both ways."""

    def __init__(self, server: "MailAccessServer"):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer_ip: str | None = None
        self.task: asyncio.Task | None = None
        self._buf = bytearray()
        self._eof = False
        self._waiter: asyncio.Future | None = None
        self._want = 0
        self._reading_paused = False
        self._writing_paused = False
        self._drain: asyncio.Future | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is not None:  # STARTTLS hands over the TLS transport itself
            return
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer_ip = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else None
        self.server._channels.add(self)
        self.task = asyncio.get_running_loop().create_task(self.server._run(self))

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if len(self._buf) > max(_MAX_BUFFER, self._want) and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self.server._channels.discard(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # -- reading ---------------------------------------------------------------------------
    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        if self._reading_paused and self.transport is not None:
            self._reading_paused = False
            self.transport.resume_reading()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    @property
    def closed(self) -> bool:
        return self._eof or self.transport is None or self.transport.is_closing()

    async def readline(self, limit: int) -> bytes:
        """The next line without its CRLF (or bare LF). LineTooLong if it was longer than
        ``limit`` octets (the whole line is skipped); ConnectionClosed at the end."""
        too_long = False
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[:end + 1])
                del self._buf[:end + 1]
                if too_long or len(line) > limit:
                    raise LineTooLong()
                return line[:-2] if line.endswith(b"\r\n") else line[:-1]
            if len(self._buf) > limit:
                too_long = True
                self._buf.clear()
            if self._eof:
                raise ConnectionClosed()
            await self._wait()

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` octets (an IMAP literal)."""
        self._want = n
        try:
            while len(self._buf) < n:
                if self._eof:
                    raise ConnectionClosed()
                await self._wait()
        finally:
            self._want = 0
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def discard_input(self) -> int:
        """Drop whatever the client sent ahead (before TLS starts: RFC 2595 §3.1, RFC 3207 §6)."""
        n = len(self._buf)
        self._buf.clear()
        return n

    # -- writing ---------------------------------------------------------------------------
    async def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionClosed()
        self.transport.write(data)
        if self._writing_paused:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._drain, self.server.idle_timeout)
            except asyncio.TimeoutError:
                raise ConnectionClosed() from None
            finally:
                self._drain = None

    async def start_tls(self, context: ssl.SSLContext) -> dict[str, Any]:
        """Turn this connection into TLS (server side); return the TLS facts."""
        assert self.transport is not None
        self.discard_input()
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        loop = asyncio.get_running_loop()
        new = await loop.start_tls(self.transport, self, context, server_side=True,
                                   ssl_handshake_timeout=30)
        if new is None:  # the connection closed during the handshake
            raise ConnectionClosed()
        self.transport = new  # type: ignore[assignment]
        return tls_info(new.get_extra_info("ssl_object"), implicit=False)

    def ssl_object(self) -> Any:
        return self.transport.get_extra_info("ssl_object") if self.transport is not None else None

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


# ---------------------------------------------------------------------------------------------
# The shell: a listening server with the lab's accounts

_LOCK = threading.Lock()
_POP3_LOCKS: set[str] = set()  # Maildir folders that a POP3 session holds (RFC 1939 §8)


class MailAccessServer(LabServer):
    """A running POP3 or IMAP server: ``.role``, ``.host``, ``.port``, ``.hostname``,
    ``.standard_port``; ``await .close()`` (idempotent), or ``async with``."""

    protocol = ""

    def __init__(self, ctx: "LabContext", role: str, *, implicit_tls: bool, host: str | None,
                 idle_timeout: float | None = None, login_timeout: float | None = None,
                 auth_failure_delay: float | None = None):
        world = ctx.world
        try:
            svc = world.service(role)
            host_key, standard_port = svc.host, svc.standard_port
        except KeyError:  # a world without mail access services: the defaults
            host_key, standard_port = HOST_KEY, STANDARD_PORTS[role]
        self.ctx = ctx
        self.role = role
        self.host_key = host_key
        self.implicit_tls = implicit_tls
        self.host = host or world.host(host_key).address
        self._setup_listener()
        self.hostname = world.host(host_key).name
        self.standard_port = standard_port
        # explicit arguments first, then the lab's Options (if it has such fields), then the defaults
        options = ctx.options

        def pick(value: float | None, name: str, default: float) -> float:
            if value is not None:
                return value
            configured = getattr(options, name, None)
            return float(configured) if configured is not None else default

        self.idle_timeout = pick(idle_timeout, f"{self.protocol}_idle_timeout", self.default_idle_timeout)
        self.login_timeout = pick(login_timeout, "login_timeout", min(LOGIN_TIMEOUT, self.idle_timeout))
        self.auth_failure_delay = pick(auth_failure_delay, "auth_failure_delay", AUTH_FAILURE_DELAY)
        creds = ctx.credentials.get(host_key)
        if creds is None:
            raise ConfigError("credentials", f"no TLS key and certificate for lab host {host_key!r} "
                                             f"({self.hostname})", "issue them with labkit.core.pki.issue_host")
        self.tls_context = creds.server_context()
        self._channels: set[Channel] = set()

    default_idle_timeout = POP3_IDLE_TIMEOUT

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.role} {self.hostname} at {self.host}:{self.port} "
                f"(plays {self.standard_port})>")

    # -- accounts ---------------------------------------------------------------------------
    def check_login(self, user: str, password: str) -> str | None:
        """The account's address if ``password`` is right for ``user`` (the full address)."""
        account = self.ctx.world.account(user.strip())
        if account is None or not account.password:
            hmac.compare_digest(password.encode("utf-8", "surrogateescape"), b"x" * 16)  # same time
            return None
        ok = hmac.compare_digest(password.encode("utf-8", "surrogateescape"), account.password.encode("utf-8"))
        return account.address if ok else None

    def store_for(self, address: str) -> MaildirStore:

        return MaildirStore(mailbox_folder(self.ctx, address))

    @staticmethod
    def lock_mailbox(folder: str) -> bool:
        with _LOCK:
            if folder in _POP3_LOCKS:
                return False
            _POP3_LOCKS.add(folder)
            return True

    @staticmethod
    def unlock_mailbox(folder: str) -> None:
        with _LOCK:
            _POP3_LOCKS.discard(folder)

    # -- events -----------------------------------------------------------------------------
    def emit(self, kind: str, **details: Any) -> None:
        self.ctx.events.emit(self.hostname, self.role, kind, **details)

    def peer_name(self, ip: str | None) -> str | None:
        hosts = [h for h in self.ctx.world.hosts if h.address == ip]
        return hosts[0].name if len(hosts) == 1 else None

    # -- life cycle -------------------------------------------------------------------------
    async def _run(self, ch: Channel) -> None:
        self.emit("connect", peer=ch.peer_ip, peer_name=self.peer_name(ch.peer_ip), port=self.port,
                  standard_port=self.standard_port)
        try:
            if self.implicit_tls:
                self.emit("tls", peer=ch.peer_ip, **tls_info(ch.ssl_object(), implicit=True))
            await self.session(ch)
        except (ConnectionClosed, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception as e:  # a bug: report it, drop this client, keep serving the others
            self.emit("error", peer=ch.peer_ip, what=f"{type(e).__name__}: {e}")
        finally:
            ch.close()

    async def session(self, ch: Channel) -> None:  # pragma: no cover - subclasses
        raise NotImplementedError

    async def _start(self, port: int) -> None:
        await self._listen(lambda: Channel(self), port, ssl=self.tls_context if self.implicit_tls else None,
                           ssl_handshake_timeout=30 if self.implicit_tls else None)
        self._announce()

    async def close(self) -> None:
        """Stop listening and end every open session (none enters UPDATE). Idempotent."""
        await super().close()

    async def _end_connections(self) -> None:
        channels = list(self._channels)
        tasks = [ch.task for ch in channels if ch.task is not None and not ch.task.done()]
        for task in tasks:
            task.cancel()
        for ch in channels:
            ch.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _open_connections(self) -> set[Channel]:
        return self._channels


class AccessSession:
    """What a POP3 and an IMAP session share: the connection, its events, and the login steps
    (check the password, report an ``auth`` event, never the password; wait
    :attr:`MailAccessServer.auth_failure_delay` after a failure; hang up after
    :data:`MAX_AUTH_FAILURES`). Each protocol says the words itself: :meth:`say_login_failed`,
    :meth:`say_goodbye` and :meth:`logged_in`."""

    def __init__(self, server: MailAccessServer, ch: Channel):
        self.server = server
        self.ch = ch
        self.tls = server.implicit_tls
        self.user: str | None = None  #: the logged-in address
        self.auth_failures = 0
        self.command = ""

    def emit(self, kind: str, **details: Any) -> None:
        self.server.emit(kind, peer=self.ch.peer_ip, **details)

    async def start_tls(self) -> bool:
        """The TLS handshake, once the protocol has said "go ahead" (STLS, STARTTLS); False
        (hang up) when it fails, with a ``tls-failed`` event; else a ``tls`` event."""
        try:
            info = await self.ch.start_tls(self.server.tls_context)
        except (ssl.SSLError, OSError, asyncio.TimeoutError) as e:
            self.emit("tls-failed", reason=f"{type(e).__name__}: {e}")
            return False
        self.tls = True
        self.emit("tls", **info)
        return True

    async def say_login_failed(self, text: str) -> None:
        raise NotImplementedError

    async def say_goodbye(self, text: str) -> None:
        raise NotImplementedError

    async def logged_in(self, address: str) -> bool:
        raise NotImplementedError

    async def login_plain(self, response: bytes) -> bool:
        """Log in with a decoded SASL PLAIN response (RFC 4616)."""
        parsed = check_plain(response)
        if parsed is None:
            self.emit("auth", success=False, mechanism="PLAIN", user=None,
                      reason="malformed PLAIN response (authzid NUL user NUL password)")
            return await self.auth_failed("Malformed PLAIN response (base64 of authzid NUL user NUL password)")
        return await self.login(parsed[0], parsed[1], "PLAIN")

    async def login(self, user: str, password: str, mechanism: str) -> bool:
        """Check ``user``'s password; False when the session must end."""
        address = self.server.check_login(user, password)
        self.emit("auth", success=address is not None, mechanism=mechanism, user=ascii_text(user, 100))
        if address is None:
            return await self.auth_failed("Authentication failed: wrong user name or password")
        return await self.logged_in(address)

    async def auth_failed(self, text: str) -> bool:
        self.auth_failures += 1
        await asyncio.sleep(self.server.auth_failure_delay)
        await self.say_login_failed(text)
        if self.auth_failures >= MAX_AUTH_FAILURES:
            await self.say_goodbye("Too many failed logins; closing the connection")
            return False
        return True


async def start_server(cls: type[MailAccessServer], ctx: "LabContext", role: str, *, implicit_tls: bool,
                       host: str | None, port: int, **options: Any) -> Any:
    """Start ``cls`` on the running loop; close what was started if anything fails."""
    server = cls(ctx, role, implicit_tls=implicit_tls, host=host, **options)
    return await server._start_or_close(port)
