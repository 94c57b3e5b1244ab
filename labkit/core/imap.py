"""IMAP's grammar, pure (the server that speaks it is :mod:`labkit.net.mailbox.imap`).

Dates and quoting, a message's structure as IMAP shows it (ENVELOPE, BODYSTRUCTURE, sections
of ``BODY[...]``), the command parser with literals, sequence sets, FETCH items, flags and
SEARCH keys (RFC 3501). Bytes and strings in, bytes and values out: no socket, no file.
:class:`BadCommand` and :class:`NoCommand` are how the parser and the server say "answer
BAD" and "answer NO".
"""
from __future__ import annotations

import datetime as _dt
import email.utils
import re
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32
from typing import Any, Callable

from .transcript import ascii_text

#: Maildir info letter -> IMAP system flag (RFC 3501 §2.3.2).
MAILDIR_TO_IMAP = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
#: IMAP system flag (lower case) -> Maildir info letter.
IMAP_TO_MAILDIR = {v.lower(): k for k, v in MAILDIR_TO_IMAP.items()}
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
TAG_BAD = set(b' (){%*"\\+') | set(range(0, 33)) | set(range(127, 256))
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


def as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def literal(data: bytes) -> bytes:
    """An IMAP literal: ``{n}`` CRLF, then n octets."""
    return b"{%d}\r\n" % len(data) + data


def istring(value: str | bytes | None) -> bytes:
    """``NIL``, a quoted string, or a literal when quoting cannot carry the text (RFC 3501 §4.3)."""
    if value is None:
        return b"NIL"
    data = as_bytes(value)
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
    params = _params(msg)
    if params == b"NIL" and msg.get("Content-Type") is None and ctype == "text/plain":
        params = b'("CHARSET" "US-ASCII")'  # RFC 2045 §5.2: no Content-Type means this default
    fields = [istring(maintype.upper()), istring(subtype.upper()), params,
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
    msg: Any  #: a labkit.net.mailbox.store.StoredMessage (uid, size, flags, arrival time)
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
