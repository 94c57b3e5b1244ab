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
import datetime as _dt
import email.utils
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32
from typing import TYPE_CHECKING, Any, Callable

from .access import (SASL_MAX_LINE, AccessSession, Channel, ConnectionClosed, LineTooLong, MailAccessServer,
                     ascii_text, decode_base64, start_server)
from .store import IMAP_TO_MAILDIR, MAILDIR_TO_IMAP, MaildirStore, StoredMessage

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

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_TAG_BAD = set(b' (){%*"\\+') | set(range(0, 33)) | set(range(127, 256))
_ATOM_STOP = b' ()"{\x00[]'


class BadCommand(Exception):
    """The command could not be parsed: answered with BAD."""


class NoCommand(Exception):
    """The command is understood but fails: answered with NO (the text may start with [CODE])."""


# ---------------------------------------------------------------------------------------------
# Pure helpers: dates, quoting, message structure

def imap_date(timestamp: float) -> str:
    """An IMAP date-time (RFC 3501 §9), in local time: ``07-Jan-2024 10:00:00 +0900``."""
    t = _dt.datetime.fromtimestamp(timestamp).astimezone()
    return f"{t.day:02d}-{_MONTHS[t.month - 1]}-{t.year:04d} {t:%H:%M:%S} {t:%z}"


def parse_imap_date(text: str) -> _dt.date:
    """An IMAP search date, ``1-Feb-2024`` (RFC 3501 §9 ``date``)."""
    m = re.fullmatch(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})", text)
    if not m or m.group(2).title() not in _MONTHS:
        raise BadCommand(f"Invalid date {ascii_text(text, 30)!r} (expected e.g. 1-Feb-2024)")
    try:
        return _dt.date(int(m.group(3)), _MONTHS.index(m.group(2).title()) + 1, int(m.group(1)))
    except ValueError:
        raise BadCommand(f"Invalid date {ascii_text(text, 30)!r}") from None


def parse_imap_datetime(text: str) -> float:
    """An APPEND date-time, ``" 7-Jan-2024 10:00:00 +0900"`` -> seconds since the epoch."""
    m = re.fullmatch(r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)", text)
    if not m or m.group(2).title() not in _MONTHS:
        raise BadCommand(f"Invalid date-time {ascii_text(text, 40)!r}")
    try:
        zone = _dt.timezone((1 if m.group(7) == "+" else -1) * _dt.timedelta(hours=int(m.group(8)),
                                                                                   minutes=int(m.group(9))))
        t = _dt.datetime(int(m.group(3)), _MONTHS.index(m.group(2).title()) + 1, int(m.group(1)),
                         int(m.group(4)), int(m.group(5)), int(m.group(6)), tzinfo=zone)
    except ValueError:
        raise BadCommand(f"Invalid date-time {ascii_text(text, 40)!r}") from None
    return t.timestamp()


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def literal(data: bytes) -> bytes:
    """An IMAP literal: ``{n}`` CRLF, then n octets."""
    return b"{%d}\r\n" % len(data) + data


def istring(value: str | bytes | None) -> bytes:
    """``NIL``, a quoted string, or a literal when quoting cannot carry the text (RFC 3501 §4.3)."""
    if value is None:
        return b"NIL"
    data = _bytes(value)
    if len(data) < 1000 and all(32 <= b < 127 for b in data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data)


def split_entity(raw: bytes) -> tuple[bytes, bytes]:
    """(header with its blank line, body) of a message or MIME part with CRLF line ends."""
    if raw.startswith(b"\r\n"):
        return b"\r\n", raw[2:]
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return raw, b""
    return raw[:end + 4], raw[end + 4:]


def _parse_header(header: bytes) -> Message:
    return BytesHeaderParser(policy=compat32).parsebytes(header)


def split_multipart(body: bytes, boundary: str) -> list[bytes]:
    """The body parts of a multipart body (RFC 2046 §5.1.1), each with its MIME header."""
    delim = re.compile(rb"(?:^|\r\n)--" + re.escape(boundary.encode("utf-8", "surrogateescape")) +
                       rb"(--)?[ \t]*(?:\r\n|$)")
    parts: list[bytes] = []
    start: int | None = None
    for m in delim.finditer(body):
        if start is not None:
            parts.append(body[start:m.start()])
        if m.group(1):  # the closing delimiter
            return parts
        start = m.end()
    if start is not None:
        parts.append(body[start:])
    return parts


def header_fields(header: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    """The header lines named (or, with ``exclude``, not named) in ``names``, then a blank line."""
    wanted = {n.lower() for n in names}
    out: list[bytes] = []
    keep = False
    for line in header.split(b"\r\n"):
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
        keep = (name in wanted) != exclude
        if keep:
            out.append(line)
    return b"".join(line + b"\r\n" for line in out) + b"\r\n"


class HeaderView:
    """The fields of a raw header, unfolded, their octets kept (non-ASCII stays as it came)."""

    def __init__(self, header: bytes):
        self.items: list[tuple[str, str]] = []
        for line in header.split(b"\r\n"):
            if not line:
                continue
            if line[:1] in (b" ", b"\t"):
                if self.items:
                    name, value = self.items[-1]
                    self.items[-1] = (name, value + line.decode("utf-8", "surrogateescape"))
            elif b":" in line:
                name, _, value = line.partition(b":")
                self.items.append((name.strip().decode("ascii", "replace").lower(),
                                   value.decode("utf-8", "surrogateescape")))

    def get_all(self, name: str) -> list[str]:
        return [v.strip() for n, v in self.items if n == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(n == name.lower() for n, _ in self.items)


def _address_list(values: list[str]) -> bytes:
    addresses = []
    for name, addr in email.utils.getaddresses(values):
        if not addr and not name:
            continue
        mailbox, at, host = addr.rpartition("@")
        if not at:
            mailbox, host = addr, ""
        addresses.append(b"(" + b" ".join([istring(name or None), b"NIL", istring(mailbox or None),
                                           istring(host or None)]) + b")")
    return b"(" + b"".join(addresses) + b")" if addresses else b"NIL"


def envelope(header: bytes) -> bytes:
    """The ENVELOPE of a message header (RFC 3501 §7.4.2), raw (not decoded) as the RFC asks."""
    h = HeaderView(header)

    def addrs(name: str, fallback: str | None = None) -> bytes:
        values = h.get_all(name)
        if not values and fallback:
            values = h.get_all(fallback)
        return _address_list(values)

    parts = [istring(h.get("Date")), istring(h.get("Subject")), addrs("From"), addrs("Sender", "From"),
             addrs("Reply-To", "From"), addrs("To"), addrs("Cc"), addrs("Bcc"),
             istring(h.get("In-Reply-To")), istring(h.get("Message-ID"))]
    return b"(" + b" ".join(parts) + b")"


def _params(msg: Message, header: str = "content-type") -> bytes:
    params = msg.get_params(header=header) or []
    pairs = [(k, v) for k, v in params[1:]] if params else []
    if not pairs:
        return b"NIL"
    out = []
    for k, v in pairs:
        if isinstance(v, tuple):  # RFC 2231 value
            v = email.utils.collapse_rfc2231_value(v)
        out += [istring(k.upper()), istring(str(v))]
    return b"(" + b" ".join(out) + b")"


def _disposition(msg: Message) -> bytes:
    value = msg.get("Content-Disposition")
    if value is None:
        return b"NIL"
    kind = str(value).split(";", 1)[0].strip() or "attachment"
    return b"(" + istring(kind) + b" " + _params(msg, "content-disposition") + b")"


def bodystructure(raw: bytes, extended: bool = True) -> bytes:
    """The BODYSTRUCTURE (``extended``) or BODY of a message or MIME part (RFC 3501 §7.4.2)."""
    header, body = split_entity(raw)
    msg = _parse_header(header)
    raw_fields = HeaderView(header)
    ctype = msg.get_content_type()
    maintype, _, subtype = ctype.partition("/")
    if maintype == "multipart":
        boundary = msg.get_param("boundary")
        parts = split_multipart(body, str(boundary)) if boundary else []
        if not parts:  # a broken multipart: describe it as plain text, as mail readers do
            maintype, subtype = "text", "plain"
        else:
            out = b"(" + b"".join(bodystructure(p, extended) for p in parts) + b" " + istring(subtype.upper())
            if extended:
                out += b" " + _params(msg) + b" " + _disposition(msg) + b" NIL NIL"
            return out + b")"
    fields = [istring(maintype.upper()), istring(subtype.upper()), _params(msg),
              istring(raw_fields.get("Content-ID")), istring(raw_fields.get("Content-Description")),
              istring((raw_fields.get("Content-Transfer-Encoding") or "7BIT").upper()),
              str(len(body)).encode()]
    lines = str(body.count(b"\r\n") + (0 if body.endswith(b"\r\n") or not body else 1)).encode()
    if maintype == "text":
        fields.append(lines)
    elif ctype == "message/rfc822":
        inner_header, _ = split_entity(body)
        fields += [envelope(inner_header), bodystructure(body, extended), lines]
    if extended:
        fields += [istring(raw_fields.get("Content-MD5")), _disposition(msg), b"NIL", b"NIL"]
    return b"(" + b" ".join(fields) + b")"


@dataclass(frozen=True)
class Section:
    """A ``BODY[...]`` request: part numbers, what of it, which header fields, which octets."""

    part: tuple[int, ...] = ()
    text: str = ""  #: "", HEADER, HEADER.FIELDS, HEADER.FIELDS.NOT, TEXT, MIME
    fields: tuple[str, ...] = ()
    partial: tuple[int, int] | None = None
    peek: bool = False

    def label(self) -> bytes:
        """How the response names it: ``BODY[1.HEADER.FIELDS (SUBJECT)]<0>``."""
        spec = ".".join(str(p) for p in self.part)
        if self.text:
            spec += ("." if spec else "") + self.text
        if self.fields:
            spec += " (" + " ".join(f.upper() for f in self.fields) + ")"
        out = f"BODY[{spec}]"
        if self.partial is not None:
            out += f"<{self.partial[0]}>"
        return out.encode("utf-8", "surrogateescape")


def section_data(raw: bytes, sec: Section) -> bytes | None:
    """The octets a section names in message ``raw`` (CRLF), or None if there is no such part."""
    header, body = split_entity(raw)
    entity_header, entity_body = header, body
    is_message = True  # a message (top level or message/rfc822), as opposed to a body part
    for k in sec.part:
        msg = _parse_header(entity_header)
        boundary = msg.get_param("boundary") if msg.get_content_maintype() == "multipart" else None
        parts = split_multipart(entity_body, str(boundary)) if boundary else []
        if parts:
            if not 1 <= k <= len(parts):
                return None
            entity_header, entity_body = split_entity(parts[k - 1])
            is_message = False
        elif not is_message and msg.get_content_type() == "message/rfc822":
            inner_header, inner_body = split_entity(entity_body)
            inner = _parse_header(inner_header)
            inner_boundary = inner.get_param("boundary") if inner.get_content_maintype() == "multipart" else None
            inner_parts = split_multipart(inner_body, str(inner_boundary)) if inner_boundary else []
            if inner_parts:
                if not 1 <= k <= len(inner_parts):
                    return None
                entity_header, entity_body = split_entity(inner_parts[k - 1])
            elif k == 1:
                entity_header, entity_body = inner_header, inner_body
            else:
                return None
            is_message = False
        elif k == 1:  # a single-part entity: part 1 is its body
            is_message = False
        else:
            return None
    if sec.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT") and sec.part:
        # only an encapsulated message has a header and a text of its own
        if _parse_header(entity_header).get_content_type() != "message/rfc822":
            return None
        entity_header, entity_body = split_entity(entity_body)
    if sec.text == "":
        return raw if not sec.part else entity_body
    if sec.text == "MIME":
        return entity_header
    if sec.text == "HEADER":
        return entity_header
    if sec.text == "TEXT":
        return entity_body
    return header_fields(entity_header, sec.fields, exclude=sec.text == "HEADER.FIELDS.NOT")


def decoded_header(h: HeaderView, name: str) -> str:
    """All values of header ``name``, RFC 2047 encoded words decoded, joined by a space."""
    out = []
    for value in h.get_all(name):
        text = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        try:
            out.append(str(make_header(decode_header(text))))
        except (ValueError, LookupError, UnicodeError):
            out.append(text)
    return " ".join(out)


def decoded_text(raw: bytes) -> str:
    """The text of every text/* part of a message, transfer encoding undone."""
    msg = BytesParser(policy=compat32).parsebytes(raw)
    out = []
    for part in msg.walk():
        if part.get_content_maintype() != "text":
            continue
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes):
            charset = part.get_content_charset() or "utf-8"
            try:
                out.append(payload.decode(charset, "replace"))
            except LookupError:
                out.append(payload.decode("utf-8", "replace"))
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# The command parser

class Parser:
    """Reads the arguments of one command. Literals stand in the text as ``NUL index NUL``."""

    def __init__(self, text: bytes, literals: list[bytes], pos: int = 0):
        self.s = text
        self.literals = literals
        self.pos = pos

    def at_end(self) -> bool:
        return self.pos >= len(self.s)

    def peek(self, n: int = 1) -> bytes:
        return self.s[self.pos:self.pos + n]

    def space(self) -> None:
        if self.peek() != b" ":
            raise BadCommand("Missing argument" if self.at_end() else "Expected a space between arguments")
        self.pos += 1

    def end(self) -> None:
        if not self.at_end():  # not echoed: it could be the end of a password with a space in it
            raise BadCommand("Unexpected text after the arguments (quote an argument that holds "
                             "spaces, or send it as a literal)")

    def expect(self, token: bytes) -> None:
        if self.s[self.pos:self.pos + len(token)].upper() != token.upper():
            raise BadCommand(f"Expected {token.decode()!r}")
        self.pos += len(token)

    def atom(self, stop: bytes = _ATOM_STOP, what: str = "argument") -> str:
        start = self.pos
        while self.pos < len(self.s) and self.s[self.pos] not in stop and self.s[self.pos] >= 32:
            self.pos += 1
        if self.pos == start:
            raise BadCommand(f"Missing {what}")
        return self.s[start:self.pos].decode("utf-8", "surrogateescape")

    def _literal(self) -> bytes:
        end = self.s.index(b"\x00", self.pos + 1)
        index = int(self.s[self.pos + 1:end])
        self.pos = end + 1
        return self.literals[index]

    def quoted(self) -> bytes:
        self.pos += 1
        out = bytearray()
        while True:
            if self.at_end():
                raise BadCommand("Unterminated quoted string")
            c = self.s[self.pos]
            self.pos += 1
            if c == 0x22:
                return bytes(out)
            if c == 0x5C:
                if self.at_end() or self.s[self.pos] not in (0x22, 0x5C):
                    raise BadCommand("Invalid escape in a quoted string (only \\\" and \\\\)")
                c = self.s[self.pos]
                self.pos += 1
            out.append(c)

    def string_bytes(self, allow_atom: bool = True) -> bytes:
        """astring (or string when ``allow_atom`` is False) as bytes."""
        c = self.peek()
        if c == b'"':
            return self.quoted()
        if c == b"\x00":
            return self._literal()
        if not allow_atom:
            raise BadCommand("Expected a quoted string or a literal")
        return self.atom(stop=b' ()"{\x00', what="string").encode("utf-8", "surrogateescape")

    def astring(self) -> str:
        return self.string_bytes().decode("utf-8", "surrogateescape")

    def mailbox(self) -> str:
        name = self.astring()
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        c = self.peek()
        if c in (b'"', b"\x00"):
            return self.astring()
        return self.atom(stop=b' ()"{\x00', what="mailbox pattern")

    def paren_list(self, item: Callable[[], Any]) -> list[Any]:
        if self.peek() != b"(":
            raise BadCommand("Expected '('")
        self.pos += 1
        out = []
        while self.peek() != b")":
            if self.at_end():
                raise BadCommand("Missing ')'")
            if out:
                self.space()
            out.append(item())
        self.pos += 1
        return out

    def number(self, what: str = "number") -> int:
        start = self.pos
        while self.peek().isdigit():
            self.pos += 1
        if self.pos == start:
            raise BadCommand(f"Expected a {what}")
        value = int(self.s[start:self.pos])
        if value > 0xFFFFFFFF:
            raise BadCommand(f"The {what} is too large")
        return value


# -- sequence sets -------------------------------------------------------------------------------

_SEQ_RE = re.compile(rb"^(?:\d+|\*)(?::(?:\d+|\*))?(?:,(?:\d+|\*)(?::(?:\d+|\*))?)*$")


def parse_sequence_set(text: str) -> list[tuple[int | None, int | None]]:
    """``"1:3,5,7:*"`` -> [(1, 3), (5, 5), (7, None)]; None stands for ``*``. BadCommand if malformed."""
    if not _SEQ_RE.match(text.encode("ascii", "replace")):
        raise BadCommand(f"Invalid sequence set {ascii_text(text, 30)!r}")
    out = []
    for item in text.split(","):
        lo, _, hi = item.partition(":")
        a = None if lo == "*" else int(lo)
        b = a if not hi else (None if hi == "*" else int(hi))
        if a == 0 or b == 0:
            raise BadCommand("0 is not a valid message number or UID")
        out.append((a, b))
    return out


def resolve_sequence_set(ranges: list[tuple[int | None, int | None]], uids: list[int], *,
                         by_uid: bool) -> list[int]:
    """The sequence numbers (1-based) that a set names in a mailbox whose UIDs are ``uids``.

    By number, ``*`` is the last message and a number past it is an error (BadCommand); by UID,
    ``*`` is the largest UID and UIDs that do not exist are simply left out (RFC 3501 §6.4.8).
    """
    count = len(uids)
    if not by_uid:
        wanted: set[int] = set()
        for a, b in ranges:
            a = count if a is None else a
            b = count if b is None else b
            if count == 0 or max(a, b) > count:
                raise BadCommand("No such message: the sequence set goes past the last message "
                                 f"(the mailbox holds {count})")
            wanted.update(range(min(a, b), max(a, b) + 1))
        return sorted(wanted)
    if not uids:
        return []
    top = uids[-1]
    out = []
    spans = [(min(top if a is None else a, top if b is None else b),
              max(top if a is None else a, top if b is None else b)) for a, b in ranges]
    for seq, uid in enumerate(uids, 1):
        if any(lo <= uid <= hi for lo, hi in spans):
            out.append(seq)
    return out


# -- FETCH items ---------------------------------------------------------------------------------

_MACROS = {"ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
           "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
           "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"]}
_SIMPLE_ITEMS = {"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "RFC822", "RFC822.HEADER",
                 "RFC822.TEXT", "BODY", "BODYSTRUCTURE"}


def _fetch_item(p: Parser) -> str | Section:
    name = p.atom(stop=b' ()"{\x00[]<', what="fetch item").upper()
    if name not in ("BODY", "BODY.PEEK") or p.peek() != b"[":
        if name not in _SIMPLE_ITEMS:
            raise BadCommand(f"Unknown FETCH item {ascii_text(name, 30)}")
        return name
    p.pos += 1
    part: list[int] = []
    text = ""
    fields: tuple[str, ...] = ()
    while p.peek().isdigit():
        part.append(p.number("part number"))
        if part[-1] == 0:
            raise BadCommand("Part numbers start at 1")
        if p.peek() == b".":
            p.pos += 1
        else:
            break
    if p.peek() != b"]":
        text = p.atom(stop=b' ()"{\x00[]', what="section").upper()
        if text not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME") or \
                (text == "MIME" and not part):
            raise BadCommand(f"Unknown body section {ascii_text(text, 30)}")
        if text.startswith("HEADER.FIELDS"):
            p.space()
            fields = tuple(p.paren_list(p.astring))
            if not fields:
                raise BadCommand("HEADER.FIELDS needs at least one field name")
    if p.peek() != b"]":
        raise BadCommand("Expected ']' after the body section")
    p.pos += 1
    partial = None
    if p.peek() == b"<":
        p.pos += 1
        origin = p.number("partial origin")
        p.expect(b".")
        size = p.number("partial size")
        if size == 0:
            raise BadCommand("A partial fetch needs a size of at least 1")
        p.expect(b">")
        partial = (origin, size)
    return Section(tuple(part), text, fields, partial, peek=name == "BODY.PEEK")


def parse_fetch_items(p: Parser) -> list[str | Section]:
    """The FETCH attribute list: one item, a macro (ALL, FAST, FULL), or a parenthesised list."""
    if p.peek() == b"(":
        items = p.paren_list(lambda: _fetch_item(p))
        if not items:
            raise BadCommand("Empty FETCH item list")
        return items
    start = p.pos
    word = p.atom(stop=b' ()"{\x00[]<', what="fetch item").upper()
    if word in _MACROS:
        return list(_MACROS[word])
    p.pos = start
    return [_fetch_item(p)]


def parse_flags(p: Parser) -> list[str]:
    """A flag list ``(\\Seen \\Flagged)`` or flags separated by spaces."""
    def flag() -> str:
        if p.peek() == b"\\":
            p.pos += 1
            return "\\" + p.atom(stop=b' ()"{\x00[]%*\\', what="flag")
        return p.atom(stop=b' ()"{\x00[]%*\\', what="flag")
    if p.peek() == b"(":
        return p.paren_list(flag)
    out = [flag()]
    while not p.at_end():
        p.space()
        out.append(flag())
    return out


def maildir_letters(flags: list[str]) -> str:
    """IMAP flags -> Maildir letters; keywords are dropped; \\Recent or an unknown system flag is
    a BadCommand."""
    letters = ""
    for f in flags:
        if f.startswith("\\"):
            letter = IMAP_TO_MAILDIR.get(f.lower())
            if letter is None:
                raise BadCommand(f"Invalid system flag {ascii_text(f, 20)}" +
                                 (" (the server sets \\Recent itself)" if f.lower() == "\\recent" else ""))
            letters += letter
    return letters


# -- SEARCH --------------------------------------------------------------------------------------

@dataclass
class Candidate:
    """One message as SEARCH looks at it; the text is read only if a key needs it."""

    seq: int
    msg: StoredMessage
    recent: bool
    read: Callable[[], bytes]
    _raw: bytes | None = None
    _header: HeaderView | None = None
    _text: str | None = None
    flags: str = ""

    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.read()
        return self._raw

    def header(self) -> HeaderView:
        if self._header is None:
            self._header = HeaderView(split_entity(self.raw())[0])
        return self._header

    def text(self) -> str:
        if self._text is None:
            self._text = decoded_text(self.raw())
        return self._text


Predicate = Callable[[Candidate], bool]
_FLAG_KEYS = {"ANSWERED": "R", "DELETED": "T", "DRAFT": "D", "FLAGGED": "F", "SEEN": "S"}
_HEADER_KEYS = {"FROM": "From", "TO": "To", "CC": "Cc", "BCC": "Bcc", "SUBJECT": "Subject"}


def _sent_date(c: Candidate) -> _dt.date | None:
    value = c.header().get("Date")
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).date()
    except (TypeError, ValueError, IndexError):
        return None


def parse_search(p: Parser, charset: str, uids: list[int]) -> Predicate:
    """The whole SEARCH program: every key must hold."""
    keys = [_search_key(p, charset, uids)]
    while not p.at_end():
        p.space()
        keys.append(_search_key(p, charset, uids))
    return lambda c: all(k(c) for k in keys)


def _search_string(p: Parser, charset: str) -> str:
    p.space()
    return p.string_bytes().decode("utf-8" if charset == "UTF-8" else "ascii", "replace").casefold()


def _search_key(p: Parser, charset: str, uids: list[int]) -> Predicate:
    if p.peek() == b"(":
        p.pos += 1
        keys = [_search_key(p, charset, uids)]
        while p.peek() != b")":
            if p.at_end():
                raise BadCommand("Missing ')' in the search program")
            p.space()
            keys.append(_search_key(p, charset, uids))
        p.pos += 1
        return lambda c: all(k(c) for k in keys)
    if p.peek().isdigit() or p.peek() == b"*":
        ranges = parse_sequence_set(p.atom(what="sequence set"))
        seqs = set(resolve_sequence_set(ranges, uids, by_uid=False)) if uids else set()
        return lambda c: c.seq in seqs
    word = p.atom(what="search key").upper()
    if word == "ALL":
        return lambda c: True
    if word in _FLAG_KEYS:
        letter = _FLAG_KEYS[word]
        return lambda c: letter in c.flags
    if word.startswith("UN") and word[2:] in _FLAG_KEYS:
        letter = _FLAG_KEYS[word[2:]]
        return lambda c: letter not in c.flags
    if word == "RECENT":
        return lambda c: c.recent
    if word == "OLD":
        return lambda c: not c.recent
    if word == "NEW":
        return lambda c: c.recent and "S" not in c.flags
    if word in ("KEYWORD", "UNKEYWORD"):
        p.space()
        p.atom(what="keyword")
        return (lambda c: False) if word == "KEYWORD" else (lambda c: True)
    if word in _HEADER_KEYS:
        name, needle = _HEADER_KEYS[word], _search_string(p, charset)
        return lambda c: needle in decoded_header(c.header(), name).casefold()
    if word == "HEADER":
        p.space()
        name = p.astring()
        needle = _search_string(p, charset)
        return lambda c: (name in c.header()) if not needle else \
            needle in decoded_header(c.header(), name).casefold()
    if word == "BODY":
        needle = _search_string(p, charset)
        return lambda c: needle in c.text().casefold()
    if word == "TEXT":
        needle = _search_string(p, charset)
        return lambda c: needle in c.text().casefold() or needle in \
            c.raw().decode("utf-8", "replace").casefold()
    if word in ("BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"):
        p.space()
        day = parse_imap_date(p.astring())
        compare = {"BEFORE": lambda d: d < day, "ON": lambda d: d == day, "SINCE": lambda d: d >= day}[
            word.replace("SENT", "")]
        if word.startswith("SENT"):
            return lambda c: (lambda d: d is not None and compare(d))(_sent_date(c))
        return lambda c: compare(_dt.datetime.fromtimestamp(c.msg.internal_date).date())
    if word in ("LARGER", "SMALLER"):
        p.space()
        n = p.number("size")
        return (lambda c: c.msg.size > n) if word == "LARGER" else (lambda c: c.msg.size < n)
    if word == "UID":
        p.space()
        ranges = parse_sequence_set(p.atom(what="UID set"))
        seqs = set(resolve_sequence_set(ranges, uids, by_uid=True))
        return lambda c: c.seq in seqs
    if word == "NOT":
        p.space()
        inner = _search_key(p, charset, uids)
        return lambda c: not inner(c)
    if word == "OR":
        p.space()
        left = _search_key(p, charset, uids)
        p.space()
        right = _search_key(p, charset, uids)
        return lambda c: left(c) or right(c)
    raise BadCommand(f"Unknown search key {ascii_text(word, 20)}")


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
        self.out.append(b"* " + _bytes(data) + b"\r\n")

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
        caps = ["IMAP4rev1", "LITERAL+", "IDLE", "UNSELECT"]
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
        if any(b in _TAG_BAD for b in tag.encode("utf-8", "surrogateescape")):
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
            if sub not in ("FETCH", "STORE", "SEARCH", "COPY"):
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
                                                "UNSELECT", "EXPUNGE", "IDLE"):
                raise BadCommand(f"{name} takes no arguments")
            keep_going = await (handler(p, uid) if name in ("FETCH", "STORE", "SEARCH", "COPY") else handler(p))
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
        msg = self.server.store_for(self.user).append(data, flags=letters, internal_date=date)
        self.emit("append", user=self.user, uid=msg.uid, size=msg.size)
        await self.ok("APPEND completed")

    # -- selected --------------------------------------------------------------------------
    async def do_CHECK(self, p: Parser) -> None:
        await self.ok("CHECK completed")

    def _expunge(self, report: bool) -> list[int]:
        sel = self.sel
        assert sel is not None
        current = {m.uid: m for m in sel.store.sync()}
        removed = []
        for seq in range(len(sel.uids), 0, -1):
            u = sel.uids[seq - 1]
            m = current.get(u)
            if m is not None and "T" in m.flags:
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

    async def do_EXPUNGE(self, p: Parser) -> None:
        assert self.sel is not None
        if self.sel.read_only:
            raise NoCommand("[READ-ONLY] The mailbox was opened with EXAMINE; SELECT it to expunge")
        self._expunge(report=True)
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
        for seq in seqs:
            u = sel.uids[seq - 1]
            msg = sel.store.get(u)
            if msg is None:
                continue
            sel.store.append(sel.store.read(u, crlf=False), flags=msg.flags, internal_date=msg.internal_date)
        await self.ok("COPY completed", "COPY", uid)

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
    return tag if tag and not any(ord(c) in _TAG_BAD for c in tag) else "*"


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
