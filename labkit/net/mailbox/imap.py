"""The lab's IMAP server (IMAP4rev1, RFC 3501), on asyncio, in the lab's own event loop.

=======  ================  =====  ==========================================================
role     host              plays  what it does
=======  ================  =====  ==========================================================
imap     mail.example.com  143    IMAP; LOGINDISABLED until STARTTLS
imaps    mail.example.com  993    the same with implicit TLS (RFC 8314)
=======  ================  =====  ==========================================================

Where POP3 downloads, IMAP works on the server: the mail stays in the mailbox, with flags
(read, answered, flagged, deleted) that every client sees. Each command starts with a tag of
the client's choosing; the server may say things first (untagged ``*`` lines), then ends with
the tag and ``OK``, ``NO`` (it did not work) or ``BAD`` (the command was not understood)::

    S: * OK [CAPABILITY IMAP4rev1 ... STARTTLS LOGINDISABLED] Mail Lab IMAP server ready
    C: a1 STARTTLS                                  S: a1 OK Begin TLS negotiation now
    C: a2 LOGIN alice@example.com alice-lab-password
    S: a2 OK [CAPABILITY IMAP4rev1 ...] Logged in
    C: a3 SELECT INBOX
    S: * 2 EXISTS / * 1 RECENT / * OK [UIDVALIDITY 1718000000] / ... / a3 OK [READ-WRITE]
    C: a4 UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])
    S: * 1 FETCH (UID 1 FLAGS () BODY[HEADER.FIELDS (SUBJECT)] {23}
    S: Subject: Hello
    S: )
    S: a4 OK Fetch completed

What it speaks (the subset that imaplib, desktop clients and the chapter use):

* any state: CAPABILITY, NOOP, LOGOUT; before login: STARTTLS (RFC 2595), LOGIN,
  AUTHENTICATE PLAIN with an optional initial response (SASL-IR, RFC 4959);
* logged in: SELECT, EXAMINE, LIST, LSUB, STATUS, SUBSCRIBE, UNSUBSCRIBE, APPEND; CREATE,
  DELETE and RENAME answer NO: the lab has one mailbox, INBOX (hierarchy delimiter ``/``);
* mailbox selected: FETCH, STORE, SEARCH, COPY (to INBOX), their UID forms, EXPUNGE, CHECK,
  CLOSE, UNSELECT (RFC 3691) and IDLE (RFC 2177, by looking at the Maildir once a second);
* UIDPLUS (RFC 4315): APPEND answers ``OK [APPENDUID validity uid]``, COPY
  ``OK [COPYUID validity from-uids to-uids]``, and ``UID EXPUNGE set`` removes only the
  \\Deleted messages of that set. Sync clients (mbsync) rely on it to learn the UID of what they
  uploaded;
* literals ``{n}`` both ways, and LITERAL+ (``{n+}``, RFC 7888) from the client.

FETCH knows FLAGS, UID, INTERNALDATE, RFC822.SIZE, ENVELOPE, BODY, BODYSTRUCTURE, RFC822,
RFC822.HEADER, RFC822.TEXT, the macros ALL, FAST and FULL, and ``BODY[section]<partial>`` and
``BODY.PEEK[...]`` with section ``""``, ``HEADER``, ``HEADER.FIELDS (...)``,
``HEADER.FIELDS.NOT (...)``, ``TEXT``, ``MIME`` and part numbers (``1``, ``2.1.TEXT``...).

SEARCH (honest about what it does): ALL, the flag keys (SEEN, UNSEEN, ANSWERED, DELETED,
DRAFT, FLAGGED, NEW, OLD, RECENT and their UN- forms), FROM, TO, CC, BCC, SUBJECT, HEADER,
BODY, TEXT, BEFORE/ON/SINCE (arrival date), SENTBEFORE/SENTON/SENTSINCE (the Date: header),
LARGER, SMALLER, UID, sequence sets, NOT, OR and parentheses; several keys mean all of them.
String keys match a substring without regard to case, in the decoded header (RFC 2047
encoded words are decoded) or in the decoded text parts (quoted-printable and base64 undone);
CHARSET may be US-ASCII or UTF-8. KEYWORD never matches and UNKEYWORD always does, as the lab
stores no keywords: STORE of a keyword is accepted and dropped (PERMANENTFLAGS says so).

The grammar (the command parser, sequence sets, FETCH items, SEARCH keys, ENVELOPE and
BODYSTRUCTURE) is pure and lives in :mod:`labkit.core.imap`; this module is the server.
Flags are Maildir letters (see :mod:`labkit.net.mailbox.store`); UIDs last across sessions.
Like Dovecot with ``disable_plaintext_auth = yes``, port 143 announces LOGINDISABLED and
refuses LOGIN and AUTHENTICATE with ``NO [PRIVACYREQUIRED]`` until STARTTLS.

Events (host FQDN, role): ``listening``, ``connect``, ``tls``, ``auth`` (success, mechanism,
user: never the password), ``select`` (user, mailbox, exists, read_only), ``fetch`` (user,
uids, items), ``store`` (user, uids, flags), ``delete`` (user, uids) when EXPUNGE or CLOSE
removes messages, ``append``, ``logout``, ``rejected`` (command, reply) for each NO and BAD,
``timeout``, and ``error``.
"""
from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ...core.imap import (MAILDIR_TO_IMAP, SYSTEM_FLAGS, TAG_BAD, BadCommand, Candidate, NoCommand, Parser,
                          Section, as_bytes, bodystructure, envelope, imap_date, literal, maildir_letters,
                          parse_fetch_items, parse_flags, parse_imap_datetime, parse_search,
                          parse_sequence_set, resolve_sequence_set, section_data, split_entity)
from .access import (SASL_MAX_LINE, AccessSession, Channel, ConnectionClosed, LineTooLong, MailAccessServer,
                     ascii_text, decode_base64, start_server)
from .store import MaildirStore

if TYPE_CHECKING:
    from ..context import LabContext

#: Longest command line (without its literals); Dovecot's default is 64 KiB too.
IMAP_MAX_LINE = 65536
#: Largest literal accepted from a client: APPEND up to Postfix's message_size_limit, other
#: commands (a password, a search string) far less.
MAX_APPEND = 10_240_000
MAX_LITERAL = 65536
#: Seconds of silence before an autologout once logged in (RFC 3501 §5.4: at least 30 minutes).
IMAP_IDLE_TIMEOUT = 1800.0
#: How often IDLE looks at the Maildir for new or removed mail (seconds).
IDLE_POLL = 1.0

# ---------------------------------------------------------------------------------------------
# The server

class ImapServer(MailAccessServer):
    """The embedded IMAP server; see the module's text."""

    protocol = "imap"
    default_idle_timeout = IMAP_IDLE_TIMEOUT

    async def session(self, ch: Channel) -> None:
        await _ImapSession(self, ch).run()


_ANY = {"CAPABILITY", "NOOP", "LOGOUT"}
_NOT_AUTH = {"STARTTLS", "LOGIN", "AUTHENTICATE"}
_AUTH = {"SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST", "LSUB",
         "STATUS", "APPEND"}
_SELECTED = {"CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "UID", "IDLE"}
#: Commands during which EXPUNGE may not be reported (RFC 3501 §7.4.1): sequence numbers would move.
_NO_EXPUNGE_DURING = {"FETCH", "STORE", "SEARCH", "COPY"}


@dataclass
class _Selected:
    store: MaildirStore
    read_only: bool
    uids: list[int] = field(default_factory=list)  # by sequence number
    flags: dict[int, str] = field(default_factory=dict)  # uid -> Maildir letters the client knows
    recent: set[int] = field(default_factory=set)
    highest: int = 0  # the largest UID ever in the view


class _ImapSession(AccessSession):
    server: ImapServer

    def __init__(self, server: ImapServer, ch: Channel):
        super().__init__(server, ch)
        self.sel: _Selected | None = None
        self.tag = "*"
        self.bad_lines = 0
        self.out: list[bytes] = []

    # -- output ----------------------------------------------------------------------------
    def untagged(self, data: bytes | str) -> None:
        self.out.append(b"* " + as_bytes(data) + b"\r\n")

    async def flush(self) -> None:
        if self.out:
            data, self.out = b"".join(self.out), []
            await self.ch.write(data)

    async def tagged(self, status: str, text: str) -> None:
        reply = f"{self.tag} {status} {text}"
        if status != "OK":
            self.emit("rejected", command=self.command, reply=reply)
        self.out.append(reply.encode("utf-8", "replace") + b"\r\n")
        await self.flush()

    def capabilities(self) -> str:
        caps = ["IMAP4rev1", "LITERAL+", "IDLE", "UNSELECT", "UIDPLUS"]
        if self.user is None:
            caps.append("SASL-IR")
            if not self.tls:
                caps += ["STARTTLS", "LOGINDISABLED"]
            else:
                caps.append("AUTH=PLAIN")
        return " ".join(caps)

    # -- reading a command -----------------------------------------------------------------
    async def read_command(self, timeout: float) -> tuple[bytes, list[bytes]] | None:
        """One command line with its literals; None if it was answered already (too long...)."""
        parts: list[bytes] = []
        literals: list[bytes] = []
        total = 0
        while True:
            line = await asyncio.wait_for(self.ch.readline(IMAP_MAX_LINE), timeout)
            if b"\x00" in line:
                self.tag = "*"
                self.command = "(NUL)"
                await self.tagged("BAD", "NUL octets are not allowed in a command line")
                return None
            m = re.search(rb"\{(\d{1,10})(\+?)\}$", line)
            if m is None:
                parts.append(line)
                return b"".join(parts), literals
            n, sync = int(m.group(1)), not m.group(2)
            head = b"".join(parts) + line
            limit = MAX_APPEND if b" APPEND " in head.upper()[:40] else MAX_LITERAL
            total += n
            if total > limit:
                self.tag = _tag_of(head)
                self.command = _command_of(head)
                if sync:
                    await self.tagged("NO", f"[TOOBIG] Literal too large (the limit is {limit} octets)")
                    return None
                self.out.append(b"* BYE Literal too large; closing the connection\r\n")
                await self.flush()
                raise ConnectionClosed()
            if sync:
                await self.ch.write(b"+ Ready for literal data\r\n")
            data = await asyncio.wait_for(self.ch.readexactly(n), max(timeout, 60.0))
            parts.append(line[:m.start()] + b"\x00%d\x00" % len(literals))
            literals.append(data)

    # -- the loop --------------------------------------------------------------------------
    async def run(self) -> None:
        self.untagged(f"OK [CAPABILITY {self.capabilities()}] Mail Lab IMAP server "
                      f"({self.server.hostname}) ready")
        await self.flush()
        while True:
            timeout = self.server.idle_timeout if self.user else self.server.login_timeout
            try:
                got = await self.read_command(timeout)
            except asyncio.TimeoutError:
                self.emit("timeout", user=self.user, seconds=timeout)
                self.untagged("BYE Autologout; idle for too long")
                await self.flush()
                return
            except LineTooLong:
                self.tag, self.command = "*", "(too long)"
                await self.tagged("BAD", f"Command line too long (the limit is {IMAP_MAX_LINE} octets)")
                if await self._count_bad():
                    return
                continue
            if got is None:
                if await self._count_bad():
                    return
                continue
            if not await self.dispatch(*got):
                return

    async def _count_bad(self) -> bool:
        self.bad_lines += 1
        if self.bad_lines >= 20:
            self.untagged("BYE Too many bad commands; closing the connection")
            await self.flush()
            return True
        return False

    async def dispatch(self, text: bytes, literals: list[bytes]) -> bool:
        p = Parser(text, literals)
        self.tag, self.command = "*", ""
        try:
            tag = p.atom(stop=b" \x00", what="tag")
        except BadCommand:
            await self.tagged("BAD", "Empty command line")
            return not await self._count_bad()
        if any(b in TAG_BAD for b in tag.encode("utf-8", "surrogateescape")):
            await self.tagged("BAD", "Invalid tag")
            return not await self._count_bad()
        self.tag = tag
        try:
            p.space()
            name = p.atom(what="command name").upper()
        except BadCommand:
            await self.tagged("BAD", "Missing command")
            return not await self._count_bad()
        self.command = ascii_text(name, 20)
        uid = False
        if name == "UID" and self.sel is None:
            await self.tagged("BAD", "UID commands are not valid without a selected mailbox "
                                     "(SELECT one first)")
            return True
        if name == "UID":
            try:
                p.space()
                sub = p.atom(what="UID command").upper()
            except BadCommand as e:
                await self.tagged("BAD", str(e))
                return True
            if sub not in ("FETCH", "STORE", "SEARCH", "COPY", "EXPUNGE"):
                await self.tagged("BAD", f"Unknown UID command {ascii_text(sub, 20)}")
                return True
            name, uid = sub, True
            self.command = f"UID {sub}"
        handler = getattr(self, "do_" + name, None) if name.isalpha() and name.isascii() else None
        if handler is None:  # the word is not echoed: it might be a password typed on the wrong line
            self.command = "(unknown)"
            await self.tagged("BAD", "Unknown command; see CAPABILITY and RFC 3501 §6 for the commands")
            return not await self._count_bad()
        if not self._state_ok(name):
            where = ("before login" if self.user is None else "without a selected mailbox (SELECT one first)"
                     if name in _SELECTED else "after login")
            await self.tagged("BAD", f"{name} is not valid {where}")
            return not await self._count_bad()
        self.bad_lines = 0
        try:
            if p.at_end() is False and name in ("CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE",
                                                "UNSELECT", "EXPUNGE", "IDLE") and not uid:
                raise BadCommand(f"{name} takes no arguments")
            keep_going = await (handler(p, uid) if name in ("FETCH", "STORE", "SEARCH", "COPY", "EXPUNGE")
                                else handler(p))
        except BadCommand as e:
            self.out.clear()
            await self.tagged("BAD", str(e))
            return True
        except NoCommand as e:
            self._update(name)
            await self.tagged("NO", str(e))
            return True
        except (ConnectionClosed, ConnectionError, asyncio.CancelledError, asyncio.TimeoutError):
            raise
        except Exception as e:
            self.emit("error", command=name, what=f"{type(e).__name__}: {e}")
            self.out.clear()
            await self.tagged("NO", "[SERVERBUG] Internal error in the lab server; the lab's event log has details")
            return True
        return keep_going is not False

    def _state_ok(self, name: str) -> bool:
        if name in _ANY:
            return True
        if name in _NOT_AUTH:
            return self.user is None
        if name in _AUTH:
            return self.user is not None
        if name in _SELECTED:
            return self.sel is not None
        return True  # unknown commands are answered by the caller

    # -- mailbox updates -------------------------------------------------------------------
    def _update(self, command: str = "", uid: bool = False) -> None:
        """Tell the client what changed in the selected mailbox: removed, new, re-flagged mail."""
        sel = self.sel
        if sel is None:
            return
        current = {m.uid: m for m in sel.store.sync()}
        if uid or command not in _NO_EXPUNGE_DURING:
            for seq in range(len(sel.uids), 0, -1):
                u = sel.uids[seq - 1]
                if u not in current:
                    del sel.uids[seq - 1]
                    sel.flags.pop(u, None)
                    sel.recent.discard(u)
                    self.untagged(f"{seq} EXPUNGE")
        arrived = [m for u, m in current.items() if u > sel.highest]
        if arrived:
            for m in arrived:
                if m.new and not sel.read_only:
                    m = sel.store.take_new(m.uid)
                    sel.recent.add(m.uid)
                elif m.new:
                    sel.recent.add(m.uid)
                sel.uids.append(m.uid)
                sel.flags[m.uid] = m.flags
                sel.highest = max(sel.highest, m.uid)
            self.untagged(f"{len(sel.uids)} EXISTS")
            self.untagged(f"{len(sel.recent)} RECENT")
        for seq, u in enumerate(sel.uids, 1):
            m = current.get(u)
            if m is not None and m.flags != sel.flags.get(u):
                sel.flags[u] = m.flags
                self.untagged(f"{seq} FETCH (FLAGS ({self._flag_text(u)}))")

    def _flag_text(self, uid: int) -> str:
        assert self.sel is not None
        flags = [MAILDIR_TO_IMAP[c] for c in self.sel.flags.get(uid, "") if c in MAILDIR_TO_IMAP]
        if uid in self.sel.recent:
            flags.append("\\Recent")
        return " ".join(flags)

    async def ok(self, text: str, command: str = "", uid: bool = False) -> None:
        self._update(command, uid)
        await self.tagged("OK", text)

    # -- any state -------------------------------------------------------------------------
    async def do_CAPABILITY(self, p: Parser) -> None:
        self.untagged(f"CAPABILITY {self.capabilities()}")
        await self.ok("Capability completed")

    async def do_NOOP(self, p: Parser) -> None:
        await self.ok("NOOP completed")

    async def do_LOGOUT(self, p: Parser) -> bool:
        self.untagged("BYE Logging out")
        self.emit("logout", user=self.user)
        await self.tagged("OK", "Logout completed")
        return False

    # -- not authenticated -----------------------------------------------------------------
    async def do_STARTTLS(self, p: Parser) -> bool:
        if self.tls:
            raise BadCommand("TLS is already active")
        await self.tagged("OK", "Begin TLS negotiation now")
        return await self.start_tls()

    def _privacy_required(self) -> None:
        if not self.tls:
            raise NoCommand("[PRIVACYREQUIRED] Plaintext login is disabled on this port until TLS is on "
                            "(LOGINDISABLED): send STARTTLS first (as Dovecot's disable_plaintext_auth "
                            "does), or use port 993")

    async def do_LOGIN(self, p: Parser) -> bool:
        p.space()
        user = p.astring()
        p.space()
        password = p.astring()
        p.end()
        self._privacy_required()
        return await self.login(user, password, "LOGIN")

    async def do_AUTHENTICATE(self, p: Parser) -> bool:
        p.space()
        mechanism = p.atom(what="mechanism").upper()
        initial = None
        if not p.at_end():
            p.space()
            initial = p.atom(stop=b" \x00", what="initial response")
        p.end()
        if mechanism != "PLAIN":
            raise NoCommand(f"Unsupported authentication mechanism {ascii_text(mechanism, 20)}; "
                            "this server offers PLAIN (after TLS)")
        self._privacy_required()
        if initial is None:
            await self.ch.write(b"+ \r\n")
            try:
                initial = (await asyncio.wait_for(self.ch.readline(SASL_MAX_LINE),
                                                  self.server.login_timeout)).decode("ascii", "replace")
            except LineTooLong:
                raise BadCommand("Authentication line too long") from None
            except asyncio.TimeoutError:
                self.emit("timeout", user=None, seconds=self.server.login_timeout)
                self.untagged("BYE Autologout; no answer to the authentication challenge")
                await self.flush()
                return False
        if initial.strip() == "*":
            raise BadCommand("Authentication cancelled")
        decoded = decode_base64(initial)
        if decoded is None:
            raise BadCommand("Invalid base64 in the authentication response")
        return await self.login_plain(decoded)

    async def say_login_failed(self, text: str) -> None:
        # one answer for a wrong password and a malformed response: nothing to tell them apart
        await self.tagged("NO", "[AUTHENTICATIONFAILED] Authentication failed: wrong user name or password")

    async def say_goodbye(self, text: str) -> None:
        self.untagged(f"BYE {text}")
        await self.flush()

    async def logged_in(self, address: str) -> bool:
        self.user = address
        await self.tagged("OK", f"[CAPABILITY {self.capabilities()}] Logged in as {address}")
        return True

    # -- authenticated ---------------------------------------------------------------------
    def _inbox_only(self, name: str, code: str = "NONEXISTENT") -> None:
        if name != "INBOX":
            raise NoCommand(f"[{code}] No mailbox {ascii_text(name, 40)!r}: this lab server has one "
                            "mailbox, INBOX")

    async def do_SELECT(self, p: Parser, read_only: bool = False) -> None:
        p.space()
        name = p.mailbox()
        p.end()
        self.sel = None  # RFC 3501 §6.3.1: a failed SELECT leaves no mailbox selected
        self._inbox_only(name)
        assert self.user is not None
        store = self.server.store_for(self.user)
        sel = _Selected(store, read_only)
        for m in store.sync():
            if m.new:
                if not read_only:
                    m = store.take_new(m.uid)
                sel.recent.add(m.uid)
            sel.uids.append(m.uid)
            sel.flags[m.uid] = m.flags
            sel.highest = max(sel.highest, m.uid)
        self.sel = sel
        flags = " ".join(SYSTEM_FLAGS)
        self.untagged(f"FLAGS ({flags})")
        self.untagged(f"OK [PERMANENTFLAGS ({'' if read_only else flags})] "
                      + ("Read-only mailbox" if read_only else "Flags permitted (no keywords)"))
        self.untagged(f"{len(sel.uids)} EXISTS")
        self.untagged(f"{len(sel.recent)} RECENT")
        unseen = next((i for i, u in enumerate(sel.uids, 1) if "S" not in sel.flags[u]), None)
        if unseen is not None:
            self.untagged(f"OK [UNSEEN {unseen}] First unseen message")
        self.untagged(f"OK [UIDVALIDITY {store.uidvalidity}] UIDs valid")
        self.untagged(f"OK [UIDNEXT {store.uidnext}] Predicted next UID")
        self.emit("select", user=self.user, mailbox=name, exists=len(sel.uids), read_only=read_only)
        await self.tagged("OK", f"[{'READ-ONLY' if read_only else 'READ-WRITE'}] "
                                f"{'EXAMINE' if read_only else 'SELECT'} completed")

    async def do_EXAMINE(self, p: Parser) -> None:
        await self.do_SELECT(p, read_only=True)

    async def do_CREATE(self, p: Parser) -> None:
        p.space()
        name = p.mailbox()
        p.end()
        if name == "INBOX":
            raise NoCommand("[ALREADYEXISTS] INBOX always exists")
        raise NoCommand("[CANNOT] This lab server keeps one mailbox, INBOX; it cannot create others")

    async def do_DELETE(self, p: Parser) -> None:
        p.space()
        name = p.mailbox()
        p.end()
        raise NoCommand("[CANNOT] INBOX cannot be deleted" if name == "INBOX" else
                        f"[NONEXISTENT] No mailbox {ascii_text(name, 40)!r}")

    async def do_RENAME(self, p: Parser) -> None:
        p.space()
        p.mailbox()
        p.space()
        p.mailbox()
        p.end()
        raise NoCommand("[CANNOT] This lab server keeps one mailbox, INBOX; it cannot rename mailboxes")

    async def do_SUBSCRIBE(self, p: Parser) -> None:
        p.space()
        name = p.mailbox()
        p.end()
        self._inbox_only(name)
        await self.ok("Subscribe completed")

    async def do_UNSUBSCRIBE(self, p: Parser) -> None:
        p.space()
        name = p.mailbox()
        p.end()
        self._inbox_only(name)
        raise NoCommand("[CANNOT] INBOX stays subscribed")

    async def _list(self, p: Parser, kind: str) -> None:
        p.space()
        reference = p.astring()
        p.space()
        pattern = p.list_mailbox()
        p.end()
        if pattern == "" and kind == "LIST":  # RFC 3501 §6.3.8: the delimiter and the root
            self.untagged('LIST (\\Noselect) "/" ""')
        elif pattern:
            full = reference + pattern
            regex = "".join(".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in full)
            if re.fullmatch(regex, "INBOX", flags=re.IGNORECASE):
                self.untagged(f'{kind} ({"" if kind == "LSUB" else chr(92) + "HasNoChildren"}) "/" INBOX')
        await self.ok(f"{kind} completed")

    async def do_LIST(self, p: Parser) -> None:
        await self._list(p, "LIST")

    async def do_LSUB(self, p: Parser) -> None:
        await self._list(p, "LSUB")

    async def do_STATUS(self, p: Parser) -> None:
        p.space()
        name = p.mailbox()
        p.space()
        items = [i.upper() for i in p.paren_list(lambda: p.atom(what="status item"))]
        p.end()
        known = {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN"}
        if not items or any(i not in known for i in items):
            raise BadCommand(f"STATUS items are {', '.join(sorted(known))}")
        self._inbox_only(name)
        assert self.user is not None
        store = self.server.store_for(self.user)
        msgs = store.sync()
        values = {"MESSAGES": len(msgs), "RECENT": sum(m.new for m in msgs), "UIDNEXT": store.uidnext,
                  "UIDVALIDITY": store.uidvalidity, "UNSEEN": sum("S" not in m.flags for m in msgs)}
        self.untagged(f"STATUS INBOX ({' '.join(f'{i} {values[i]}' for i in items)})")
        await self.ok("STATUS completed")

    async def do_APPEND(self, p: Parser) -> None:
        p.space()
        name = p.mailbox()
        p.space()
        flags: list[str] = []
        date = None
        if p.peek() == b"(":
            flags = parse_flags(p)
            p.space()
        if p.peek() == b'"':
            date = parse_imap_datetime(p.quoted().decode("ascii", "replace"))
            p.space()
        if p.peek() != b"\x00":
            raise BadCommand("APPEND needs the message as a literal {n}")
        data = p.string_bytes(allow_atom=False)
        p.end()
        letters = maildir_letters(flags)
        if name != "INBOX":
            raise NoCommand(f"[TRYCREATE] No mailbox {ascii_text(name, 40)!r}: this lab server has one "
                            "mailbox, INBOX")
        assert self.user is not None
        store = self.server.store_for(self.user)
        msg = store.append(data, flags=letters, internal_date=date)
        self.emit("append", user=self.user, uid=msg.uid, size=msg.size)
        await self.ok(f"[APPENDUID {store.uidvalidity} {msg.uid}] APPEND completed")

    # -- selected --------------------------------------------------------------------------
    async def do_CHECK(self, p: Parser) -> None:
        await self.ok("CHECK completed")

    def _expunge(self, report: bool, only: set[int] | None = None) -> list[int]:
        """Remove the \\Deleted messages (of the UIDs ``only``, if given: UID EXPUNGE)."""
        sel = self.sel
        assert sel is not None
        current = {m.uid: m for m in sel.store.sync()}
        removed = []
        for seq in range(len(sel.uids), 0, -1):
            u = sel.uids[seq - 1]
            m = current.get(u)
            if m is not None and "T" in m.flags and (only is None or u in only):
                sel.store.delete(u)
                removed.append(u)
                if report:
                    del sel.uids[seq - 1]
                    sel.flags.pop(u, None)
                    sel.recent.discard(u)
                    self.untagged(f"{seq} EXPUNGE")
        if removed:
            self.emit("delete", user=self.user, uids=sorted(removed), count=len(removed))
        return removed

    async def do_EXPUNGE(self, p: Parser, uid: bool = False) -> None:
        assert self.sel is not None
        only = None
        if uid:  # RFC 4315 §2.1: only the \Deleted messages among these UIDs
            only = {self.sel.uids[seq - 1] for seq in self._sequence(p, uid=True)}
            p.end()
        if self.sel.read_only:
            raise NoCommand("[READ-ONLY] The mailbox was opened with EXAMINE; SELECT it to expunge")
        self._expunge(report=True, only=only)
        await self.ok("EXPUNGE completed")

    async def do_CLOSE(self, p: Parser) -> None:
        assert self.sel is not None
        if not self.sel.read_only:
            self._expunge(report=False)  # RFC 3501 §6.4.2: silently
        self.sel = None
        await self.tagged("OK", "CLOSE completed")

    async def do_UNSELECT(self, p: Parser) -> None:
        self.sel = None
        await self.tagged("OK", "UNSELECT completed")

    def _sequence(self, p: Parser, uid: bool) -> list[int]:
        assert self.sel is not None
        p.space()
        ranges = parse_sequence_set(p.atom(what="sequence set"))
        return resolve_sequence_set(ranges, self.sel.uids, by_uid=uid)

    async def do_FETCH(self, p: Parser, uid: bool) -> None:
        sel = self.sel
        assert sel is not None
        seqs = self._sequence(p, uid)
        p.space()
        items = parse_fetch_items(p)
        p.end()
        if uid and "UID" not in items:
            items.insert(0, "UID")
        gone = 0
        fetched = []
        for seq in seqs:
            u = sel.uids[seq - 1]
            try:
                self.untagged(self._fetch_one(seq, u, items))
            except KeyError:
                gone += 1
                continue
            fetched.append(u)
        names = [i if isinstance(i, str) else i.label().decode("utf-8", "replace") for i in items]
        self.emit("fetch", user=self.user, uids=fetched, items=names)
        if gone:
            self._update("FETCH", uid)
            await self.tagged("NO", "[EXPUNGEISSUED] Some of the requested messages were removed by "
                                    "another session")
            return
        await self.ok("Fetch completed", "FETCH", uid)

    def _fetch_one(self, seq: int, u: int, items: list[str | Section]) -> bytes:
        sel = self.sel
        assert sel is not None
        msg = sel.store.get(u)
        if msg is None:
            raise KeyError(u)
        raw: bytes | None = None

        def data() -> bytes:
            nonlocal raw
            if raw is None:
                raw = sel.store.read(u)
            return raw

        out: list[bytes] = []
        set_seen = False
        for item in items:
            if isinstance(item, Section):
                chunk = section_data(data(), item)
                if chunk is None:
                    chunk = b""
                if item.partial is not None:
                    chunk = chunk[item.partial[0]:item.partial[0] + item.partial[1]]
                out.append(item.label() + b" " + literal(chunk))
                set_seen = set_seen or not item.peek
            elif item == "UID":
                out.append(b"UID %d" % u)
            elif item == "FLAGS":
                out.append(b"FLAGS")  # filled in at the end, after \Seen may have been set
            elif item == "INTERNALDATE":
                out.append(b'INTERNALDATE "' + imap_date(msg.internal_date).encode() + b'"')
            elif item == "RFC822.SIZE":
                out.append(b"RFC822.SIZE %d" % msg.size)
            elif item == "ENVELOPE":
                out.append(b"ENVELOPE " + envelope(split_entity(data())[0]))
            elif item == "RFC822":
                out.append(b"RFC822 " + literal(data()))
                set_seen = True
            elif item == "RFC822.HEADER":
                out.append(b"RFC822.HEADER " + literal(split_entity(data())[0]))
            elif item == "RFC822.TEXT":
                out.append(b"RFC822.TEXT " + literal(split_entity(data())[1]))
                set_seen = True
            elif item == "BODY":
                out.append(b"BODY " + bodystructure(data(), extended=False))
            elif item == "BODYSTRUCTURE":
                out.append(b"BODYSTRUCTURE " + bodystructure(data(), extended=True))
        flags_changed = False
        if set_seen and not sel.read_only and "S" not in sel.flags.get(u, ""):
            current = sel.store.get(u) or msg
            updated = sel.store.set_flags(u, current.flags + "S")
            sel.flags[u] = updated.flags
            flags_changed = True
        flag_bytes = b"FLAGS (" + self._flag_text(u).encode() + b")"
        out = [flag_bytes if o == b"FLAGS" else o for o in out]
        if flags_changed and "FLAGS" not in items:
            out.append(flag_bytes)
        return b"%d FETCH (" % seq + b" ".join(out) + b")"

    async def do_STORE(self, p: Parser, uid: bool) -> None:
        sel = self.sel
        assert sel is not None
        seqs = self._sequence(p, uid)
        p.space()
        item = p.atom(what="STORE item").upper()
        mode = item[0] if item[:1] in ("+", "-") else ""
        base = item[len(mode):]
        if base not in ("FLAGS", "FLAGS.SILENT"):
            raise BadCommand("STORE takes FLAGS, +FLAGS or -FLAGS (with .SILENT if you like)")
        p.space()
        letters = set(maildir_letters(parse_flags(p)))
        p.end()
        if sel.read_only:
            raise NoCommand("[READ-ONLY] The mailbox was opened with EXAMINE; SELECT it to change flags")
        changed = []
        for seq in seqs:
            u = sel.uids[seq - 1]
            msg = sel.store.get(u)
            if msg is None:
                continue
            old = set(msg.flags)
            new = letters | (old & {"P"}) if mode == "" else old | letters if mode == "+" else old - letters
            try:
                updated = sel.store.set_flags(u, "".join(new)) if new != old else msg
            except (KeyError, FileNotFoundError):
                continue
            sel.flags[u] = updated.flags
            changed.append(u)
            if not base.endswith(".SILENT"):
                self.untagged(f"{seq} FETCH ({f'UID {u} ' if uid else ''}FLAGS ({self._flag_text(u)}))")
        self.emit("store", user=self.user, uids=changed, flags=item + " " + "".join(sorted(letters)))
        await self.ok("Store completed", "STORE", uid)

    async def do_SEARCH(self, p: Parser, uid: bool) -> None:
        sel = self.sel
        assert sel is not None
        p.space()
        charset = "US-ASCII"
        if p.peek(8).upper() == b"CHARSET ":
            p.pos += 8
            charset = p.astring().upper()
            if charset not in ("US-ASCII", "UTF-8"):
                raise NoCommand("[BADCHARSET (US-ASCII UTF-8)] Unsupported charset")
            p.space()
        predicate = parse_search(p, charset, sel.uids)
        hits = []
        for seq, u in enumerate(sel.uids, 1):
            msg = sel.store.get(u)
            if msg is None:
                continue
            cand = Candidate(seq, msg, u in sel.recent, lambda u=u: sel.store.read(u), flags=sel.flags.get(u, ""))
            try:
                if predicate(cand):
                    hits.append(u if uid else seq)
            except KeyError:  # removed meanwhile
                continue
        self.untagged("SEARCH" + "".join(f" {h}" for h in hits))
        await self.ok("Search completed", "SEARCH", uid)

    async def do_COPY(self, p: Parser, uid: bool) -> None:
        sel = self.sel
        assert sel is not None
        seqs = self._sequence(p, uid)
        p.space()
        name = p.mailbox()
        p.end()
        if name != "INBOX":
            raise NoCommand(f"[TRYCREATE] No mailbox {ascii_text(name, 40)!r}: this lab server has one "
                            "mailbox, INBOX")
        pairs = []
        for seq in seqs:
            u = sel.uids[seq - 1]
            msg = sel.store.get(u)
            if msg is None:
                continue
            copy = sel.store.append(sel.store.read(u, crlf=False), flags=msg.flags,
                                    internal_date=msg.internal_date)
            pairs.append((u, copy.uid))
        code = ""
        if pairs:  # RFC 4315 §3: source UIDs and the UIDs of their copies, in the same order
            code = (f"[COPYUID {sel.store.uidvalidity} {','.join(str(a) for a, _ in pairs)} "
                    f"{','.join(str(b) for _, b in pairs)}] ")
        await self.ok(f"{code}COPY completed", "COPY", uid)

    async def do_IDLE(self, p: Parser) -> bool:
        await self.ch.write(b"+ idling\r\n")
        waited = 0.0
        while True:
            self._update("IDLE")
            await self.flush()
            try:
                line = await asyncio.wait_for(self.ch.readline(IMAP_MAX_LINE), IDLE_POLL)
            except asyncio.TimeoutError:
                waited += IDLE_POLL
                if waited >= self.server.idle_timeout:
                    self.emit("timeout", user=self.user, seconds=waited)
                    self.untagged("BYE Autologout; idle for too long")
                    await self.flush()
                    return False
                continue
            except LineTooLong:
                raise BadCommand("Expected DONE") from None
            if line.strip().upper() == b"DONE":
                await self.ok("IDLE terminated")
                return True
            raise BadCommand("Expected DONE to end IDLE")


def _tag_of(line: bytes) -> str:
    tag = line.split(b" ", 1)[0].decode("ascii", "replace")
    return tag if tag and not any(ord(c) in TAG_BAD for c in tag) else "*"


def _command_of(line: bytes) -> str:
    words = line.split(b" ")
    return ascii_text(words[1].decode("ascii", "replace").upper(), 20) if len(words) > 1 else ""


async def start_imap(ctx: "LabContext", *, implicit_tls: bool = False, host: str | None = None,
                     port: int = 0, idle_timeout: float | None = None, login_timeout: float | None = None,
                     auth_failure_delay: float | None = None) -> ImapServer:
    """Start the IMAP server of the lab host ``home`` (mail.example.com) on the running loop.

    ``implicit_tls=False`` plays port 143 (role ``imap``: LOGINDISABLED until STARTTLS),
    ``implicit_tls=True`` plays port 993 (role ``imaps``). ``host`` defaults to the host's lab
    address, ``port`` to a free one. Registers ``ctx.ports[(address, 143 or 993)]`` and
    ``ctx.ports[(hostname, ...)]``. Timeouts in seconds: :data:`IMAP_IDLE_TIMEOUT` once logged
    in, :data:`labkit.net.mailbox.access.LOGIN_TIMEOUT` before.
    """
    return await start_server(ImapServer, ctx, "imaps" if implicit_tls else "imap", implicit_tls=implicit_tls,
                              host=host, port=port, idle_timeout=idle_timeout, login_timeout=login_timeout,
                              auth_failure_delay=auth_failure_delay)
