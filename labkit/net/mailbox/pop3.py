"""The lab's POP3 server (RFC 1939), on asyncio, in the lab's own event loop.

=======  ================  =====  ==========================================================
role     host              plays  what it does
=======  ================  =====  ==========================================================
pop3     mail.example.com  110    POP3; STLS (RFC 2595) required before any password
pop3s    mail.example.com  995    the same with implicit TLS (RFC 8314)
=======  ================  =====  ==========================================================

A POP3 session has three states (RFC 1939 §3): AUTHORIZATION (log in), TRANSACTION (list,
read and mark messages) and UPDATE (on QUIT: the marked messages are removed). A dialogue,
as ``openssl s_client -starttls pop3`` shows it (C: the client, S: the server)::

    S: +OK Mail Lab POP3 server (mail.example.com) ready
    C: USER alice@example.com
    S: +OK
    C: PASS alice-lab-password
    S: +OK Logged in: 2 messages (1234 octets)
    C: STAT                         S: +OK 2 1234
    C: LIST                         S: +OK 2 messages (1234 octets) / 1 600 / 2 634 / .
    C: UIDL 1                       S: +OK 1 1718000000.1
    C: RETR 1                       S: +OK 600 octets / (the message, dot-stuffed) / .
    C: DELE 1                       S: +OK Message 1 marked for deletion
    C: QUIT                         S: +OK Logging out: 1 message deleted

What it speaks: USER/PASS, AUTH PLAIN (RFC 5034, SASL PLAIN of RFC 4616), STAT, LIST, UIDL,
RETR, TOP, DELE, RSET, NOOP, QUIT, CAPA (RFC 2449) and STLS (RFC 2595); response codes
``[AUTH]``, ``[IN-USE]`` and ``[SYS/TEMP]`` (RFC 2449, RFC 3206). Like Dovecot with
``disable_plaintext_auth = yes``, port 110 refuses any password before STLS.

Not offered: APOP (RFC 1939 §7). APOP proves the password with an MD5 digest of the greeting's
timestamp and the password, so the server must keep every password in clear text, and MD5 no
longer resists an attacker who records the dialogue (RFC 6151); a password inside TLS does
better on both counts, and the memo itself leaves APOP aside ("今はあまり使われていない").

The server reports what happens as lab events, with the host's FQDN and the role:
``listening``, ``connect`` (peer, peer_name), ``tls`` (version, cipher, implicit), ``auth``
(success, mechanism, user: never the password), ``retrieve`` (user, msg, uid, size, command),
``delete`` (user, uids) when QUIT removes messages, ``logout``, ``rejected`` (command, reply)
for each ``-ERR``, ``timeout``, and ``error`` if something inside the server failed.
"""
from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Awaitable, Callable

from .access import (MAX_BAD_COMMANDS, POP3_IDLE_TIMEOUT, SASL_MAX_LINE, AccessSession, Channel,
                     ConnectionClosed, LineTooLong, MailAccessServer, ascii_text, decode_base64, start_server)
from .store import MaildirStore, StoredMessage

if TYPE_CHECKING:
    from ..context import LabContext

#: Longest POP3 command line accepted, CRLF included. RFC 2449 §4 allows 255 octets; longer
#: lines get ``-ERR`` and the session goes on.
POP3_MAX_LINE = 1024
#: What this server understands (RFC 1939, RFC 2449, RFC 2595, RFC 5034).
POP3_COMMANDS = ("CAPA", "STLS", "USER", "PASS", "AUTH", "STAT", "LIST", "UIDL", "RETR", "TOP", "DELE",
                 "RSET", "NOOP", "QUIT")

# ---------------------------------------------------------------------------------------------
# POP3

def dot_stuff(data: bytes) -> bytes:
    """A multi-line POP3 response body (RFC 1939 §3): a line that starts with ``.`` gets one
    more ``.`` in front, and a line holding only ``.`` ends the response."""
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", data) + b".\r\n"


def top_of(message: bytes, lines: int) -> bytes:
    """The header, the blank line and the first ``lines`` body lines (POP3 TOP)."""
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message
    head, body = message[:end + 4], message[end + 4:]
    if lines <= 0 or not body:
        return head
    parts = body.split(b"\r\n")
    kept = parts[:lines]
    tail = b"\r\n" if len(parts) > lines else b""
    return head + b"\r\n".join(kept) + tail


class Pop3Server(MailAccessServer):
    """The embedded POP3 server; see the module's text."""

    protocol = "pop3"
    default_idle_timeout = POP3_IDLE_TIMEOUT

    async def session(self, ch: Channel) -> None:
        await _Pop3Session(self, ch).run()


class _Pop3Session(AccessSession):
    server: Pop3Server

    def __init__(self, server: Pop3Server, ch: Channel):
        super().__init__(server, ch)
        self.user_arg: str | None = None
        self.store: MaildirStore | None = None
        self.locked: str | None = None
        self.messages: list[StoredMessage] = []
        self.deleted: set[int] = set()  # message numbers (1-based)
        self.retrieved: set[int] = set()
        self.bad_commands = 0

    # -- output --------------------------------------------------------------------------
    async def ok(self, text: str = "") -> None:
        await self.ch.write(f"+OK{' ' + text if text else ''}\r\n".encode("ascii", "replace"))

    async def err(self, text: str) -> None:
        reply = f"-ERR {text}"
        self.emit("rejected", command=self.command, reply=reply)
        await self.ch.write(reply.encode("ascii", "replace") + b"\r\n")

    async def multiline(self, text: str, lines: list[str]) -> None:
        body = "".join(line + "\r\n" for line in lines).encode("ascii", "replace")
        await self.ch.write(f"+OK {text}\r\n".encode("ascii", "replace") + dot_stuff(body))

    @property
    def plaintext_ok(self) -> bool:
        return self.tls

    def capabilities(self) -> list[str]:
        caps = ["CAPA", "TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self.user is None:
            if self.plaintext_ok:
                caps += ["USER", "SASL PLAIN"]
            else:
                caps.append("STLS")
        caps.append("IMPLEMENTATION Mail-Lab")
        return caps

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        await self.ok(f"Mail Lab POP3 server ({self.server.hostname}) ready")
        try:
            while True:
                timeout = self.server.idle_timeout if self.user else self.server.login_timeout
                try:
                    raw = await asyncio.wait_for(self.ch.readline(POP3_MAX_LINE), timeout)
                except asyncio.TimeoutError:
                    # RFC 1939 §3: an autologout ends the session without UPDATE and without a reply
                    self.emit("timeout", user=self.user, seconds=timeout)
                    return
                except LineTooLong:
                    self.command = "(too long)"
                    await self.err(f"Line too long (the limit is {POP3_MAX_LINE} octets); command ignored")
                    if await self._count_bad():
                        return
                    continue
                if not await self.dispatch(raw):
                    return
        finally:
            if self.locked:
                self.server.unlock_mailbox(self.locked)
                self.locked = None

    async def _count_bad(self) -> bool:
        self.bad_commands += 1
        if self.bad_commands >= MAX_BAD_COMMANDS:
            await self.err("Too many bad commands; closing the connection")
            return True
        return False

    async def dispatch(self, raw: bytes) -> bool:
        line = raw.decode("utf-8", "surrogateescape")
        keyword, _, arg = line.partition(" ")
        keyword = keyword.upper()
        self.command = ascii_text(keyword, 20)
        if not keyword:
            await self.err("Empty command")
            return not await self._count_bad()
        handler: Callable[[str], Awaitable[bool | None]] | None = getattr(self, "do_" + keyword, None) \
            if keyword.isalpha() and keyword.isascii() else None
        if handler is None:
            if keyword == "APOP":
                await self.err("APOP is not offered: log in with USER/PASS or AUTH PLAIN after STLS")
            else:  # the word is not echoed: it might be a password typed on the wrong line
                self.command = "(unknown)"
                await self.err(f"Unknown command; the commands are {', '.join(POP3_COMMANDS)}")
            return not await self._count_bad()
        transaction_only = keyword in ("STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL")
        if transaction_only and self.user is None:
            await self.err(f"{keyword} is only valid after login")
            return not await self._count_bad()
        try:
            result = await handler(arg)
        except (ConnectionClosed, ConnectionError, asyncio.CancelledError):
            raise
        except Exception as e:
            self.emit("error", command=keyword, what=f"{type(e).__name__}: {e}")
            await self.err("[SYS/TEMP] Internal error in the lab server; the lab's event log has details")
            return True
        if result is None or result:
            self.bad_commands = 0 if result else self.bad_commands
            return True
        return False

    # -- AUTHORIZATION ---------------------------------------------------------------------
    async def do_CAPA(self, arg: str) -> bool:
        if await self._no_args(arg):
            await self.multiline("Capability list follows", self.capabilities())
        return True

    async def do_STLS(self, arg: str) -> bool:
        if self.tls:
            await self.err("TLS is already active")
            return True
        if self.user is not None:
            await self.err("STLS is only valid before login")
            return True
        await self.ok("Begin TLS negotiation now")
        self.user_arg = None  # RFC 2595 §4: forget what was said in clear
        return await self.start_tls()

    async def _plaintext_refused(self) -> bool:
        if self.plaintext_ok:
            return False
        await self.err("[AUTH] Plaintext authentication is disabled on this port until TLS is on: "
                       "send STLS first (as Dovecot's disable_plaintext_auth does), or use port 995")
        return True

    async def do_USER(self, arg: str) -> bool:
        if self.user is not None:
            await self.err("Already logged in")
            return True
        if await self._plaintext_refused():
            return True
        if not arg.strip():
            await self.err("USER needs a name: the full address, e.g. USER alice@example.com")
            return True
        self.user_arg = arg.strip()
        await self.ok()
        return True

    async def do_PASS(self, arg: str) -> bool:
        if self.user is not None:
            await self.err("Already logged in")
            return True
        if await self._plaintext_refused():
            return True
        if self.user_arg is None:
            await self.err("Send USER first")
            return True
        user, self.user_arg = self.user_arg, None
        return await self.login(user, arg, "USER")  # RFC 1939: the password may hold spaces

    async def do_AUTH(self, arg: str) -> bool:
        if self.user is not None:
            await self.err("Already logged in")
            return True
        mechanism, _, initial = arg.strip().partition(" ")
        if not mechanism:  # the list form many clients probe with (before RFC 5034)
            await self.multiline("Mechanisms follow", ["PLAIN"] if self.plaintext_ok else [])
            return True
        if mechanism.upper() != "PLAIN":
            await self.err(f"Unsupported authentication mechanism {ascii_text(mechanism, 20)}: "
                           "this server offers PLAIN (after TLS)")
            return True
        if await self._plaintext_refused():
            return True
        if initial.strip():
            response = initial.strip()
        else:
            await self.ch.write(b"+ \r\n")
            try:
                response = (await asyncio.wait_for(self.ch.readline(SASL_MAX_LINE),
                                                   self.server.login_timeout)).decode("ascii", "replace")
            except LineTooLong:
                await self.err("Authentication line too long")
                return True
            except asyncio.TimeoutError:
                self.emit("timeout", user=None, seconds=self.server.login_timeout)
                return False
        if response.strip() == "*":
            await self.err("Authentication cancelled")
            return True
        decoded = decode_base64(response)
        if decoded is None:
            await self.err("Invalid base64 in the authentication response")
            return True
        return await self.login_plain(decoded)

    async def say_login_failed(self, text: str) -> None:
        await self.err(f"[AUTH] {text}")

    async def say_goodbye(self, text: str) -> None:
        await self.err(text)

    async def logged_in(self, address: str) -> bool:
        store = self.server.store_for(address)
        folder = str(store.folder.resolve())
        if not self.server.lock_mailbox(folder):
            await self.err("[IN-USE] The mailbox is in use by another POP3 session; try again "
                           "once it has ended")
            return True
        self.locked = folder
        self.user, self.store = address, store
        self.messages = store.sync()
        total = sum(m.size for m in self.messages)
        await self.ok(f"Logged in: {len(self.messages)} message{'s' if len(self.messages) != 1 else ''} "
                      f"({total} octets)")
        return True

    # -- TRANSACTION -------------------------------------------------------------------------
    def _live(self) -> list[tuple[int, StoredMessage]]:
        return [(i, m) for i, m in enumerate(self.messages, 1) if i not in self.deleted]

    async def _message_arg(self, word: str) -> int | None:
        """A message number that exists and is not marked deleted; None after an -ERR."""
        if not word.isdigit() or not word.isascii():
            await self.err(f"Invalid message number {ascii_text(word, 20)!r}")
            return None
        n = int(word)
        if not 1 <= n <= len(self.messages):
            await self.err(f"No such message: {n}")
            return None
        if n in self.deleted:
            await self.err(f"Message {n} is marked for deletion")
            return None
        return n

    async def _no_args(self, arg: str) -> bool:
        if arg.strip():
            await self.err(f"{self.command} takes no argument")
            return False
        return True

    async def do_STAT(self, arg: str) -> bool:
        if await self._no_args(arg):
            live = self._live()
            await self.ok(f"{len(live)} {sum(m.size for _, m in live)}")
        return True

    async def _listing(self, arg: str, what: Callable[[int, StoredMessage], str], title: str) -> bool:
        words = arg.split()
        if len(words) > 1:
            await self.err(f"{self.command} takes at most one message number")
            return True
        if words:
            n = await self._message_arg(words[0])
            if n is not None:
                await self.ok(f"{n} {what(n, self.messages[n - 1])}")
            return True
        live = self._live()
        await self.multiline(title.format(n=len(live), octets=sum(m.size for _, m in live)),
                             [f"{i} {what(i, m)}" for i, m in live])
        return True

    async def do_LIST(self, arg: str) -> bool:
        return await self._listing(arg, lambda i, m: str(m.size), "{n} messages ({octets} octets)")

    def uidl(self, msg: StoredMessage) -> str:
        """The unique id of a message (RFC 1939 §7): UIDVALIDITY and UID, as IMAP sees them."""
        assert self.store is not None
        return f"{self.store.uidvalidity}.{msg.uid}"

    async def do_UIDL(self, arg: str) -> bool:
        return await self._listing(arg, lambda i, m: self.uidl(m), "Unique-ID listing follows")

    async def _send_message(self, n: int, lines: int | None) -> None:
        assert self.store is not None and self.user is not None
        msg = self.messages[n - 1]
        try:
            data = self.store.read(msg.uid)
        except KeyError:
            await self.err(f"[SYS/TEMP] Message {n} was removed by another session")
            return
        body = data if lines is None else top_of(data, lines)
        await self.ch.write(f"+OK {len(body) if lines is not None else msg.size} octets\r\n".encode()
                            + dot_stuff(body))
        if lines is None:
            self.retrieved.add(n)
        self.emit("retrieve", user=self.user, msg=n, uid=msg.uid, size=len(body),
                  command="RETR" if lines is None else f"TOP {lines}")

    async def do_RETR(self, arg: str) -> bool:
        words = arg.split()
        if len(words) != 1:
            await self.err("RETR needs one message number")
            return True
        n = await self._message_arg(words[0])
        if n is not None:
            await self._send_message(n, None)
        return True

    async def do_TOP(self, arg: str) -> bool:
        words = arg.split()
        if len(words) != 2:
            await self.err("TOP needs a message number and a number of lines")
            return True
        n = await self._message_arg(words[0])
        if n is None:
            return True
        if not (words[1].isdigit() and words[1].isascii()):
            await self.err(f"Invalid number of lines {ascii_text(words[1], 20)!r}")
            return True
        await self._send_message(n, int(words[1]))
        return True

    async def do_DELE(self, arg: str) -> bool:
        words = arg.split()
        if len(words) != 1:
            await self.err("DELE needs one message number")
            return True
        n = await self._message_arg(words[0])
        if n is not None:
            self.deleted.add(n)
            await self.ok(f"Message {n} marked for deletion")
        return True

    async def do_RSET(self, arg: str) -> bool:
        if await self._no_args(arg):
            self.deleted.clear()
            live = self._live()
            await self.ok(f"{len(live)} messages ({sum(m.size for _, m in live)} octets)")
        return True

    async def do_NOOP(self, arg: str) -> bool:
        if await self._no_args(arg):
            await self.ok()
        return True

    async def do_QUIT(self, arg: str) -> bool:
        if self.user is None or self.store is None:
            await self.ok("Bye")
            return False
        # UPDATE (RFC 1939 §6): remove what was marked; what was read becomes \Seen
        removed, failed = [], []
        for n in sorted(self.deleted):
            msg = self.messages[n - 1]
            (removed if self.store.delete(msg.uid) else failed).append(msg.uid)
        for n in sorted(self.retrieved - self.deleted):
            msg = self.messages[n - 1]
            try:
                current = self.store.get(msg.uid) or msg
                if "S" not in current.flags:
                    self.store.set_flags(msg.uid, current.flags + "S")
            except (KeyError, OSError):
                pass  # gone meanwhile (an IMAP session expunged it): nothing to mark
        if removed:
            self.emit("delete", user=self.user, uids=removed, count=len(removed))
        self.emit("logout", user=self.user, deleted=len(removed))
        if failed:
            await self.err(f"[SYS/TEMP] {len(failed)} message(s) marked for deletion were already gone")
        else:
            await self.ok(f"Logging out: {len(removed)} message{'s' if len(removed) != 1 else ''} deleted")
        return False


async def start_pop3(ctx: "LabContext", *, implicit_tls: bool = False, host: str | None = None,
                     port: int = 0, idle_timeout: float | None = None, login_timeout: float | None = None,
                     auth_failure_delay: float | None = None) -> Pop3Server:
    """Start the POP3 server of the lab host ``home`` (mail.example.com) on the running loop.

    ``implicit_tls=False`` plays port 110 (role ``pop3``: STLS before any password),
    ``implicit_tls=True`` plays port 995 (role ``pop3s``). ``host`` defaults to the host's lab
    address, ``port`` to a free one. Registers ``ctx.ports[(address, 110 or 995)]`` and
    ``ctx.ports[(hostname, ...)]``. The timeouts (seconds) and the wait before answering a
    wrong password default to :data:`POP3_IDLE_TIMEOUT`, :data:`LOGIN_TIMEOUT` and
    :data:`AUTH_FAILURE_DELAY`.
    """
    return await start_server(Pop3Server, ctx, "pop3s" if implicit_tls else "pop3", implicit_tls=implicit_tls,
                              host=host, port=port, idle_timeout=idle_timeout, login_timeout=login_timeout,
                              auth_failure_delay=auth_failure_delay)
