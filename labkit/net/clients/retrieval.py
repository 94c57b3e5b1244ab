"""Raw POP3 and IMAP clients that record the dialogue, as :class:`~labkit.net.clients.smtp.RawSMTP`
does for SMTP: what a mail program (MUA) says to fetch mail, one line at a time, on the record.

The memo: 「POP3 … メールサーバに蓄積されたメールを MUA が取り出すときの通信規約」 (*the protocol a
MUA uses to take out the mail stored on the server*) and 「IMAP … メールサーバ上のメールにアクセスして
操作するための通信規約」 (*the protocol to reach and work on the mail on the server*). Typed by hand::

    with RawPOP3(svc.host, svc.port, server_name="mail.example.com:110", cafile=lab.ca_path) as p:
        p.connect()                           # S: +OK ... ready
        p.stls()                              # C: STLS      S: +OK Begin TLS   (TLS from here)
        p.login("alice@example.com", pw)      # C: USER alice@example.com  C: PASS ****
        p.stat(); p.retr(1); p.dele(1)        # S: +OK 1 517 ... the message ... .
        p.quit()                              # the server deletes what DELE marked

    with RawIMAP(svc.host, svc.port, server_name="mail.example.com:143", cafile=lab.ca_path) as m:
        m.connect()                           # S: * OK [CAPABILITY ... LOGINDISABLED] ...
        m.starttls()                          # C: a1 STARTTLS  S: a1 OK ...
        m.login("alice@example.com", pw)      # C: a2 LOGIN alice@example.com ****
        m.select("INBOX")
        m.fetch("1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")   # a literal {n} comes back
        m.logout()

Every line goes into a :class:`MailAccessTranscript` (a :class:`~labkit.core.transcript.Transcript`
that also knows what each line is), so :func:`labkit.teach.display.show` can draw it. Secrets are
redacted *before* they are recorded, exactly as RawSMTP does for AUTH: the argument of
``PASS``, the digest of ``APOP``, the password of ``LOGIN``, the initial response of ``AUTH`` /
``AUTHENTICATE`` and every answer to a SASL challenge (``+``) become ``****``. Only a client
made with ``reveal_secrets=True`` records them as sent.

A refusal (``-ERR``, ``NO``, ``BAD``) is an answer, returned like any other; exceptions are
kept for what stops the dialogue: :class:`MailboxConnectionError` (refused, timed out, closed),
:class:`MailboxTLSError` (the handshake or the certificate) and
:class:`~labkit.errors.ProtocolError` (the other side does not speak the protocol, or refused
STLS/STARTTLS). Each names ``host:port`` and carries ``.transcript``, the dialogue so far.

The pure helpers (:func:`parse_pop3_status`, :func:`parse_imap_status`, :func:`literal_size`,
:func:`imap_astring`, :func:`parse_fetch`, :func:`classify_server_line`) need no socket.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from ...core.smtp.address import closing_quote
from ...core.transcript import CLIENT, NOTE, REDACTED, SERVER, Line, Transcript, redact_command
from ...errors import ConfigError, MailboxConnectionError, MailboxTLSError, ParseError, ProtocolError
from .lineclient import MAX_LINE, LineClient, shown_lines  # noqa: F401 (MAX_LINE: importable here as before)
from .smtp import auth_plain_string

__all__ = ["RawPOP3", "RawIMAP", "POP3Reply", "IMAPResponse", "Untagged", "MailAccessTranscript",
           "MailboxConnectionError", "MailboxTLSError", "parse_pop3_status", "parse_imap_status",
           "literal_size", "imap_astring", "parse_fetch", "classify_server_line", "KINDS"]

#: Largest IMAP literal accepted from a server (a whole message fits).
MAX_LITERAL = 64 * 1024 * 1024
#: What each recorded line is, in the words of :mod:`labkit.teach.display`: a client ``command``,
#: ``message`` (message text: a RETR answer, an IMAP literal), server lines by outcome
#: (``2xx`` done, ``3xx`` go on, ``4xx`` a warning, ``5xx`` refused, ``bad`` not understood)
#: and ``note``.
KINDS = ("command", "message", "2xx", "3xx", "4xx", "5xx", "bad", "note")


# -- pure helpers ------------------------------------------------------------------------------

_CODE = re.compile(r"^\[([^\]]*)\]\s*")
_LITERAL = re.compile(rb"\{(\d{1,12})\+?\}$")


def parse_pop3_status(text: str) -> tuple[str, str | None, str] | None:
    """Split a POP3 status line into ``(status, code, text)``; None if it is not one.

    ``status`` is ``+OK``, ``-ERR`` or ``+`` (a SASL challenge, RFC 5034); ``code`` the
    response code in brackets (RFC 2449 §8: ``AUTH``, ``IN-USE``, ``SYS/TEMP``), if any::

        >>> parse_pop3_status("-ERR [AUTH] Authentication failed")
        ('-ERR', 'AUTH', 'Authentication failed')
        >>> parse_pop3_status("+OK 2 1234")
        ('+OK', None, '2 1234')
    """
    for status in ("+OK", "-ERR"):
        if text == status or text.startswith(status + " "):
            rest = text[len(status):].lstrip(" ")
            m = _CODE.match(rest)
            if m:
                return status, m.group(1), rest[m.end():]
            return status, None, rest
    if text == "+" or text.startswith("+ "):
        return "+", None, text[2:]
    return None


def parse_imap_status(text: str) -> tuple[str, str | None, str | None, str] | None:
    """Split an IMAP response line into ``(tag, status, code, text)``; None if malformed.

    ``tag`` is the command's tag, ``*`` (untagged) or ``+`` (go on: a continuation request).
    ``status`` is ``OK``, ``NO``, ``BAD``, ``BYE`` or ``PREAUTH`` for a status response, None
    for untagged data such as ``* 2 EXISTS``. ``code`` is the response code in brackets::

        >>> parse_imap_status("a2 NO [PRIVACYREQUIRED] Plaintext login is disabled")
        ('a2', 'NO', 'PRIVACYREQUIRED', 'Plaintext login is disabled')
        >>> parse_imap_status("* 2 EXISTS")
        ('*', None, None, '2 EXISTS')
    """
    if text == "+" or text.startswith("+ "):
        return "+", None, None, text[2:]
    tag, sep, rest = text.partition(" ")
    if not tag or not sep:
        return None
    word, _, after = rest.partition(" ")
    status = word.upper()
    if status in ("OK", "NO", "BAD", "BYE", "PREAUTH"):
        m = _CODE.match(after)
        if m:
            return tag, status, m.group(1), after[m.end():]
        return tag, status, None, after
    if tag != "*":
        return None  # a tagged line is always a status (RFC 3501 §7.1)
    return tag, None, None, rest


def classify_server_line(protocol: str, text: str) -> str:
    """The kind (:data:`KINDS`) of a server status line of ``protocol`` (``pop3`` or ``imap``).

    POP3: ``+OK`` is ``2xx``, ``-ERR`` ``5xx``, ``+`` (a challenge) ``3xx``. IMAP: tagged
    ``OK`` is ``2xx``, ``NO`` (it did not work) ``5xx``, ``BAD`` (not understood) ``bad``;
    untagged data and ``* OK`` are ``2xx``, ``* NO`` (a warning) and ``* BYE`` (closing) ``4xx``,
    ``* BAD`` ``bad``; ``+`` is ``3xx``. Anything else is ``bad``.
    """
    if protocol == "pop3":
        parsed = parse_pop3_status(text)
        return {"+OK": "2xx", "-ERR": "5xx", "+": "3xx"}[parsed[0]] if parsed else "bad"
    parsed_imap = parse_imap_status(text)
    if parsed_imap is None:
        return "bad"
    tag, status, _, _ = parsed_imap
    if tag == "+":
        return "3xx"
    if status in (None, "OK", "PREAUTH"):
        return "2xx"
    if status == "BAD":
        return "bad"
    if tag == "*":
        return "4xx"  # * NO (a warning), * BYE (the server is closing)
    return "5xx"  # tagged NO


def literal_size(line: bytes | str) -> int | None:
    """The size ``n`` of the IMAP literal ``{n}`` (or ``{n+}``) that ends ``line``, else None.

    The next ``n`` octets on the wire are the literal's content, whatever they hold (RFC 3501
    §4.3); the response line goes on after them::

        >>> literal_size(b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {23}")
        23
    """
    raw = line.encode("utf-8", "surrogateescape") if isinstance(line, str) else line
    m = _LITERAL.search(raw)
    return int(m.group(1)) if m else None


_ATOM_SPECIALS = set('(){ %*"\\]')


def imap_astring(value: str) -> str:
    """``value`` as an IMAP astring: an atom if it can be one, else a quoted string.

        >>> imap_astring("alice@example.com"), imap_astring("two words"), imap_astring('say "hi"')
        ('alice@example.com', '"two words"', '"say \\\\"hi\\\\""')

    CR, LF and NUL cannot be in a quoted string; such values need a literal, which this
    helper does not make (ConfigError).
    """
    if any(c in value for c in "\r\n\0"):
        raise ConfigError("IMAP string", f"{value[:20]!r}... holds CR, LF or NUL",
                          "send it as a literal {n} by hand with send_line() and send_bytes()")
    if value and all(" " < c < "\x7f" and c not in _ATOM_SPECIALS for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_items(text: str, literals: Iterator[bytes]) -> list[Any]:
    """IMAP data (atoms, numbers, NIL, quoted strings, literals, lists) as Python values."""
    pos = 0
    stack: list[list[Any]] = [[]]
    n = len(text)
    while pos < n:
        c = text[pos]
        if c == " ":
            pos += 1
        elif c == "(":
            stack.append([])
            pos += 1
        elif c == ")":
            if len(stack) == 1:
                raise ParseError(f"unbalanced ')' at {pos} in {text[:60]!r}")
            done = stack.pop()
            stack[-1].append(done)
            pos += 1
        elif c == '"':
            out, pos = [], pos + 1
            while pos < n and text[pos] != '"':
                if text[pos] == "\\" and pos + 1 < n:
                    pos += 1
                out.append(text[pos])
                pos += 1
            stack[-1].append("".join(out))
            pos += 1
        elif c == "{":
            end = text.index("}", pos)
            stack[-1].append(next(literals))
            pos = end + 1
        else:
            start, depth = pos, 0
            while pos < n:
                ch = text[pos]
                if ch == "[":
                    depth += 1
                elif ch == "]":
                    depth -= 1
                elif depth == 0 and ch in " ()":
                    break
                pos += 1
            atom = text[start:pos]
            if atom.upper() == "NIL":
                stack[-1].append(None)
            elif atom.isdigit():
                stack[-1].append(int(atom))
            else:
                stack[-1].append(atom)
    if len(stack) != 1:
        raise ParseError(f"unbalanced '(' in {text[:60]!r}")
    return stack[0]


def parse_fetch(untagged: "Untagged") -> tuple[int, dict[str, Any]]:
    """One ``* n FETCH (...)`` response as ``(n, {item: value})``.

    Item names are upper case as the server wrote them (``UID``, ``FLAGS``, ``RFC822.SIZE``,
    ``BODY[HEADER.FIELDS (SUBJECT)]``); numbers are ints, ``FLAGS`` a tuple of strings, a
    literal the bytes it carried::

        >>> parse_fetch(Untagged("1 FETCH (UID 7 FLAGS (\\\\Seen) BODY[HEADER] {9})", [b"Subject:\\r\\n"]))
        (1, {'UID': 7, 'FLAGS': ('\\\\Seen',), 'BODY[HEADER]': b'Subject:\\r\\n'})
    """
    seq, word, rest = (untagged.text.split(" ", 2) + ["", ""])[:3]
    if word.upper() != "FETCH" or not seq.isdigit():
        raise ParseError(f"not a FETCH response: {untagged.text[:60]!r}")
    values = _parse_items(rest, iter(untagged.literals))
    if len(values) != 1 or not isinstance(values[0], list) or len(values[0]) % 2:
        raise ParseError(f"a FETCH response holds one list of item-value pairs: {untagged.text[:60]!r}")
    pairs = values[0]
    out: dict[str, Any] = {}
    for key, value in zip(pairs[::2], pairs[1::2], strict=True):
        key = str(key).upper()
        out[key] = tuple(value) if key == "FLAGS" and isinstance(value, list) else value
    return int(seq), out


# -- the transcript ----------------------------------------------------------------------------

class MailAccessTranscript(Transcript):
    """A :class:`~labkit.core.transcript.Transcript` of a POP3 or IMAP dialogue that also records
    what each line is (:meth:`line_kinds`): POP3 and IMAP replies have no SMTP codes, so a
    view cannot tell ``+OK`` from ``-ERR``, or message text from commands, by the code."""

    def __init__(self, client_name: str = "client", server_name: str = "server",
                 lines: Iterable[Line] = (), *, protocol: str = "pop3", kinds: Iterable[str] | None = None):
        if protocol not in ("pop3", "imap"):
            raise ConfigError("protocol", f"{protocol!r} is neither 'pop3' nor 'imap'")
        super().__init__(client_name, server_name, lines)
        self.protocol = protocol
        given = list(kinds or [])
        self._kinds = [given[i] if i < len(given) else self._default_kind(ln) for i, ln in enumerate(self.lines)]

    def _default_kind(self, line: Line) -> str:
        if line.direction == NOTE:
            return "note"
        if line.direction == CLIENT:
            return "command"
        return classify_server_line(self.protocol, line.text)

    def add(self, direction: str, text: str, when: float | None = None, kind: str | None = None) -> Line:
        """Append a line; ``kind`` (one of :data:`KINDS`) defaults to what the line says."""
        line = super().add(direction, text, when)
        if kind is not None and kind not in KINDS:
            raise ConfigError("kind", f"{kind!r} is not one of {', '.join(KINDS)}")
        while len(self._kinds) < len(self.lines) - 1:  # lines appended to .lines directly
            self._kinds.append(self._default_kind(self.lines[len(self._kinds)]))
        self._kinds.append(kind or self._default_kind(line))
        return line

    def line_kinds(self) -> list[str]:
        """One kind per line (:data:`KINDS`), in order: what a view colours and groups by."""
        return [self._kinds[i] if i < len(self._kinds) else self._default_kind(ln)
                for i, ln in enumerate(self.lines)]

    def replies(self) -> list:  # type: ignore[override]
        """SMTP replies: a POP3 or IMAP dialogue has none (see :meth:`status_lines`)."""
        return []

    def status_lines(self) -> list[Line]:
        """The server's status lines (``+OK``/``-ERR``, tagged ``OK``/``NO``/``BAD``, ``+``)."""
        out = []
        for ln, kind in zip(self.lines, self.line_kinds(), strict=True):
            if ln.direction != SERVER or kind == "message":
                continue
            if self.protocol == "pop3" and parse_pop3_status(ln.text):
                out.append(ln)
            elif self.protocol == "imap":
                parsed = parse_imap_status(ln.text)
                if parsed and (parsed[0] == "+" or (parsed[0] != "*" and parsed[1])):
                    out.append(ln)
        return out

    def __repr__(self) -> str:
        return (f"<MailAccessTranscript {self.protocol.upper()} {self.client_name} -> {self.server_name}: "
                f"{len(self.commands())} commands, {len(self.status_lines())} answers>")

    def __eq__(self, other: object) -> bool:
        return (super().__eq__(other) and isinstance(other, MailAccessTranscript)
                and self.protocol == other.protocol and self.line_kinds() == other.line_kinds())

    __hash__ = None  # type: ignore[assignment]

    def to_dict(self) -> dict:
        return {**super().to_dict(), "protocol": self.protocol, "kinds": self.line_kinds()}

    @classmethod
    def from_json(cls, text: str) -> "MailAccessTranscript":
        data = json.loads(text)
        return cls(data.get("client_name", "client"), data.get("server_name", "server"),
                   (Line(d["direction"], d["text"], d["time"]) for d in data.get("lines", [])),
                   protocol=data.get("protocol", "pop3"), kinds=data.get("kinds"))


# -- replies -----------------------------------------------------------------------------------

@dataclass
class POP3Reply:
    """A POP3 server's answer: ``+OK``/``-ERR``/``+``, its text, and the lines of a multi-line
    answer (``LIST``, ``UIDL``, ``CAPA``, ``RETR``, ``TOP``) with dot-stuffing undone."""

    status: str  #: ``+OK``, ``-ERR``, or ``+`` (a SASL challenge: go on)
    text: str  #: after the status and the response code
    code: str | None = None  #: the response code in brackets (RFC 2449): ``AUTH``, ``IN-USE``...
    lines: list[str] = field(default_factory=list)  #: a multi-line answer, one entry per line
    data: bytes = b""  #: the same lines as bytes with CRLF ends: the message, for RETR

    @property
    def ok(self) -> bool:
        return self.status == "+OK"

    @property
    def first_line(self) -> str:
        """The status line as it came over the wire."""
        code = f"[{self.code}] " if self.code else ""
        return f"{self.status} {code}{self.text}".rstrip()

    def listing(self) -> dict[int, str]:
        """A ``LIST`` or ``UIDL`` answer as ``{message number: size or unique id}``."""
        out: dict[int, str] = {}
        for line in self.lines or [self.text]:
            number, _, value = line.partition(" ")
            if number.isdigit():
                out[int(number)] = value.strip()
        return out

    def __str__(self) -> str:
        more = f"\n(+ {len(self.lines)} lines)" if self.lines else ""
        return self.first_line + more


@dataclass
class Untagged:
    """One untagged IMAP response (``* 2 EXISTS``, ``* 1 FETCH (...)``): its text after ``* ``,
    with each literal left as ``{n}``, and the literals' contents in order."""

    text: str
    literals: list[bytes] = field(default_factory=list)

    @property
    def keyword(self) -> str:
        """``EXISTS``, ``FETCH``, ``SEARCH``, ``CAPABILITY``, ``OK``...: the word that says
        what this is (the second word after a number)."""
        words = self.text.split(" ", 2)
        return (words[1] if words[0].isdigit() and len(words) > 1 else words[0]).upper()


@dataclass
class IMAPResponse:
    """What an IMAP server answered to one command: untagged responses, then the tagged status.

    ``tag`` is the command's tag (``*`` for the greeting, ``+`` when the server asks the client
    to go on); ``status`` is ``OK``, ``NO`` (it did not work) or ``BAD`` (not understood), or
    ``OK``/``PREAUTH``/``BYE`` for a greeting, ``+`` for a continuation request.
    """

    tag: str
    status: str
    text: str
    code: str | None = None
    untagged: list[Untagged] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    @property
    def lines(self) -> list[str]:
        """The untagged responses' texts (literal contents left out)."""
        return [u.text for u in self.untagged]

    @property
    def literals(self) -> list[bytes]:
        return [lit for u in self.untagged for lit in u.literals]

    def find(self, keyword: str) -> list[Untagged]:
        """The untagged responses of one kind: ``find("EXISTS")``, ``find("FETCH")``."""
        return [u for u in self.untagged if u.keyword == keyword.upper()]

    def response_code(self, name: str) -> str | None:
        """The value of response code ``name`` in this answer's status lines: after SELECT,
        ``response_code("UIDVALIDITY")`` -> ``"1718000000"``; ``""`` for a code without a
        value (``READ-WRITE``); None if no line carries it."""
        pattern = re.compile(r"\[" + re.escape(name.upper()) + r"(?: ([^\]]*))?\]", re.IGNORECASE)
        texts = [f"[{self.code}]"] if self.code else []
        texts += [u.text for u in self.untagged if u.keyword in ("OK", "NO", "BAD", "BYE", "PREAUTH")]
        for text in texts:
            m = pattern.search(text)
            if m:
                return m.group(1) or ""
        return None

    def fetched(self) -> dict[int, dict[str, Any]]:
        """The FETCH responses: ``{message number: {item: value}}`` (:func:`parse_fetch`)."""
        out: dict[int, dict[str, Any]] = {}
        for u in self.find("FETCH"):
            seq, items = parse_fetch(u)
            out.setdefault(seq, {}).update(items)
        return out

    @property
    def status_line(self) -> str:
        code = f"[{self.code}] " if self.code else ""
        return f"{self.tag} {self.status} {code}{self.text}".rstrip() if self.tag != "+" else f"+ {self.text}"

    def __str__(self) -> str:
        return "\n".join([*(f"* {u.text}" for u in self.untagged), self.status_line])


# -- what POP3 and IMAP share ------------------------------------------------------------------

class _MailAccessClient(LineClient):
    """A :class:`~labkit.net.clients.lineclient.LineClient` for POP3 or IMAP: a :class:`MailAccessTranscript`,
    message text recorded as such, and the words of the messages for a mail program's server."""

    protocol = "pop3"
    name = "POP3"
    tls_command = "STLS"
    implicit_port = 995

    connection_error = MailboxConnectionError
    tls_error = MailboxTLSError
    reply_word = "answer"
    timeout_hint = ("The server may be waiting for more input (an unfinished command?); raise timeout= to "
                    "wait longer")
    closed_hint = ("Servers hang up after too many failed logins or bad commands (see the last answer and "
                   "the lab's events)")
    tls_yes = "its yes"
    tls_rfc = "RFC 2595"

    transcript: MailAccessTranscript
    capabilities: list[str]  #: set by each protocol's __init__

    @property
    def service(self) -> str:  # type: ignore[override]
        return self.name

    @property
    def not_this_server(self) -> str:  # type: ignore[override]
        return f"this is not a {self.name} server"

    @property
    def implicit_tls_hint(self) -> str:  # type: ignore[override]
        return (f"Is this port really implicit TLS ({self.implicit_port})? Otherwise connect in clear "
                f"and use {self.tls_command.lower()}()")

    def __init__(self, host: str, port: int, *, source_address: str | tuple[str, int] | None = None,
                 timeout: float = 10.0, server_name: str | None = None, client_name: str = "client",
                 reveal_secrets: bool = False, implicit_tls: bool = False, cafile: Any = None,
                 server_hostname: str | None = None, verify: bool = True, body_lines_shown: int = 10):
        super().__init__(host, port, source_address=source_address, timeout=timeout,
                         server_name=server_name, reveal_secrets=reveal_secrets,
                         implicit_tls=implicit_tls, cafile=cafile, server_hostname=server_hostname,
                         verify=verify)
        self.body_lines_shown = body_lines_shown
        self.transcript = MailAccessTranscript(client_name, self.server_name, protocol=self.protocol)

    def _protocol_error(self, message: str, reply: Any = None) -> ProtocolError:
        self.transcript.note(message.split(". ")[0])
        err = super()._protocol_error(message, reply)
        err.host, err.port = self.host, self.port  # type: ignore[attr-defined]
        return err

    def _starts_auth(self, line: str) -> bool:  # pragma: no cover - subclasses
        raise NotImplementedError

    def send_line(self, line: str) -> None:
        """Send ``line`` + CRLF and do not wait for the answer (read it with ``read_reply()``)."""
        in_auth = self._auth_pending or self._starts_auth(line)
        super().send_line(line)
        self._in_auth = in_auth

    def _switch_to_tls(self, cafile: Any, server_hostname: str | None, verify: bool) -> Any:
        """``STLS``/``STARTTLS``; after the server's yes, the handshake, and what the server
        announced in clear is forgotten (RFC 2595 §4). A refusal raises ProtocolError."""
        reply = self.command(self.tls_command)
        if not reply.ok:
            said = reply.first_line if isinstance(reply, POP3Reply) else reply.status_line
            raise self._protocol_error(f"{self.where} refused {self.tls_command}: {said}; the connection is "
                                       "still in clear text", reply)
        self._upgrade(cafile, server_hostname, verify)
        self.capabilities = []
        return reply

    def _record_server(self, raw: bytes, kind: str | None = None) -> str:
        text = raw.decode("utf-8", "backslashreplace")
        self.transcript.add(SERVER, text, kind=kind)
        return text

    def _record_message(self, lines: list[bytes], shown_as: list[bytes] | None = None) -> None:
        """Record message text (server to client): headers, blank line, the first body lines."""
        wire = shown_as if shown_as is not None else lines
        shown, hidden, hidden_bytes = shown_lines(lines, self.body_lines_shown)
        for ln in wire[:shown]:
            self._record_server(ln, "message")
        if hidden:
            self.transcript.note(f"{hidden} more body lines ({hidden_bytes} bytes) received, not shown")


# -- POP3 --------------------------------------------------------------------------------------

#: Commands whose +OK answer has more lines, ended by a lone "." (RFC 1939, RFC 2449).
_POP3_MULTI_ALWAYS = ("CAPA", "RETR", "TOP")
_POP3_MULTI_WITHOUT_ARGUMENT = ("LIST", "UIDL", "AUTH")


class RawPOP3(_MailAccessClient):
    """One POP3 connection (RFC 1939), driven line by line, every line in :attr:`transcript`.

    Arguments as for :class:`~labkit.net.clients.smtp.RawSMTP`: ``server_name`` names the server in
    the transcript (``mail.example.com:110``) and is the name the certificate must hold;
    ``cafile`` the CA to trust (the lab CA); ``implicit_tls=True`` for port 995;
    ``source_address`` where to connect from (the PC, ``127.0.20.100``);
    ``body_lines_shown`` how many body lines of a retrieved message the transcript shows.
    """

    protocol = "pop3"
    name = "POP3"
    tls_command = "STLS"
    implicit_port = 995

    def __init__(self, host: str, port: int, **kwargs: Any):
        super().__init__(host, port, **kwargs)
        self.banner: POP3Reply | None = None
        #: what the last CAPA listed (empty after STLS: RFC 2595 §4 says forget it)
        self.capabilities: list[str] = []

    def connect(self) -> POP3Reply:
        """Open the connection (and TLS, if implicit) and read the ``+OK`` greeting."""
        self._open()
        self.banner = self.read_reply()
        return self.banner

    def _redacted(self, line: str) -> str:
        word, _, rest = line.strip().partition(" ")
        word = word.upper()
        if word == "PASS":
            return f"{line.split(' ', 1)[0]} {REDACTED}" if rest else line
        if word == "APOP":
            name = rest.split(" ", 1)[0]
            return f"{line.split(' ', 1)[0]} {name} {REDACTED}" if rest else line
        return redact_command(line)

    def _starts_auth(self, line: str) -> bool:
        return (line.strip().split(" ", 1)[0].upper() if line.strip() else "") == "AUTH"

    def read_reply(self, multiline: bool = False, *, message: bool = False) -> POP3Reply:
        """Read one answer: the status line and, for ``multiline`` after ``+OK``, the lines up to
        the lone ``.`` (with dot-stuffing undone). ``message``: the lines are a message (RETR)."""
        raw = self._read_raw_line()
        text = self._record_server(raw)
        parsed = parse_pop3_status(text)
        if parsed is None:
            hint = " (an IMAP server greets with '* OK')" if text.startswith("* ") else ""
            raise self._protocol_error(f"{self.where} sent {text[:80]!r}, which is not a POP3 answer ('+OK' or "
                                       f"'-ERR'){hint}. Is this port really POP3?")
        status, code, rest = parsed
        self._auth_pending = status == "+" and self._in_auth
        reply = POP3Reply(status, rest, code)
        if multiline and status == "+OK":
            wire: list[bytes] = []
            while True:
                line = self._read_raw_line()
                if line == b".":
                    break
                wire.append(line)
            body = [ln[1:] if ln.startswith(b".") else ln for ln in wire]
            if message:
                self._record_message(body, shown_as=wire)
            else:
                for ln in wire:
                    self._record_server(ln, "2xx")
            if any(ln.startswith(b"..") for ln in wire):
                self.transcript.note("lines starting with '.' came with one more '.' (dot-stuffing, "
                                     "RFC 1939 §3); the client removes it")
            self._record_server(b".", "2xx")
            reply.lines = [ln.decode("utf-8", "backslashreplace") for ln in body]
            reply.data = b"".join(ln + b"\r\n" for ln in body)
        return reply

    def command(self, line: str, multiline: bool | None = None) -> POP3Reply:
        """Send one line (+ CRLF) and return the answer.

        ``multiline=None`` knows which commands get a multi-line answer: ``CAPA``, ``RETR``,
        ``TOP``, and ``LIST``/``UIDL`` without a message number.
        """
        word, _, arg = line.strip().partition(" ")
        word = word.upper()
        if multiline is None:
            multiline = word in _POP3_MULTI_ALWAYS or (word in _POP3_MULTI_WITHOUT_ARGUMENT and not arg.strip())
        self.send_line(line)
        return self.read_reply(multiline, message=word in ("RETR", "TOP"))

    # -- commands --------------------------------------------------------------------------
    def capa(self) -> POP3Reply:
        """``CAPA`` (RFC 2449): what the server offers now (``STLS`` before TLS, ``USER`` after)."""
        reply = self.command("CAPA")
        self.capabilities = list(reply.lines) if reply.ok else []
        return reply

    def stls(self, cafile: Any = None, server_hostname: str | None = None, verify: bool = True) -> POP3Reply:
        """``STLS`` (RFC 2595 §4) and, after ``+OK``, the TLS handshake on this connection.

        The certificate is checked against ``cafile`` (default: the constructor's) for
        ``server_hostname``. What CAPA said in clear is forgotten. ``-ERR`` raises ProtocolError.
        """
        return self._switch_to_tls(cafile, server_hostname, verify)

    starttls = stls

    def user(self, name: str) -> POP3Reply:
        return self.command(f"USER {name}")

    def pass_(self, password: str) -> POP3Reply:
        """``PASS``: recorded as ``PASS ****``."""
        return self.command(f"PASS {password}")

    def login(self, user: str, password: str) -> POP3Reply:
        """``USER`` then ``PASS``; returns the answer to PASS (or to USER, if that was refused)."""
        reply = self.user(user)
        return self.pass_(password) if reply.ok else reply

    def auth_plain(self, user: str, password: str) -> POP3Reply:
        """``AUTH PLAIN`` with an initial response (RFC 5034), recorded as ``AUTH PLAIN ****``."""
        reply = self.command(f"AUTH PLAIN {auth_plain_string(user, password)}")
        if reply.status == "+":
            reply = self.command(auth_plain_string(user, password))
        return reply

    def stat(self) -> POP3Reply:
        """``STAT``: ``+OK count octets``."""
        return self.command("STAT")

    def list(self, n: int | None = None) -> POP3Reply:
        return self.command("LIST" if n is None else f"LIST {n}")

    def uidl(self, n: int | None = None) -> POP3Reply:
        """``UIDL``: a unique id per message that lasts across sessions (RFC 1939 §7)."""
        return self.command("UIDL" if n is None else f"UIDL {n}")

    def retr(self, n: int) -> POP3Reply:
        """``RETR n``: the whole message, in ``.data`` (CRLF ends, dot-stuffing undone)."""
        return self.command(f"RETR {n}")

    def top(self, n: int, lines: int = 0) -> POP3Reply:
        """``TOP n lines``: the header and the first ``lines`` lines of the body."""
        return self.command(f"TOP {n} {lines}")

    def dele(self, n: int) -> POP3Reply:
        """``DELE n``: mark for deletion; the server deletes at ``QUIT`` (RFC 1939 §6)."""
        return self.command(f"DELE {n}")

    def rset(self) -> POP3Reply:
        return self.command("RSET")

    def quit(self) -> POP3Reply:
        """``QUIT``: the UPDATE state (marked messages are removed), then close."""
        return self._say_and_close("QUIT")


# -- IMAP --------------------------------------------------------------------------------------

_LOGIN = re.compile(r"^(\S+\s+LOGIN\s+)(.*)$", re.IGNORECASE)
_AUTHENTICATE_IR = re.compile(r"^(\S+\s+AUTHENTICATE\s+\S+)\s+\S.*$", re.IGNORECASE)


def _first_astring(text: str) -> str | None:
    """The first astring of ``text`` (an atom or a quoted string), as written; None for a literal."""
    if text.startswith("{"):
        return None
    if text.startswith('"'):
        end = closing_quote(text)
        return text[:end + 1] if end >= 0 else text
    return text.split(" ", 1)[0]


class RawIMAP(_MailAccessClient):
    """One IMAP connection (RFC 3501), driven line by line, every line in :attr:`transcript`.

    Each :meth:`command` gets the next tag (``a1``, ``a2``...; ``tag_prefix`` changes the
    letter) and returns an :class:`IMAPResponse`: the untagged responses, then the tagged
    status. Literals ``{n}`` in the server's answers (a FETCH of a header or a message) are
    read as the exact number of octets they announce. Other arguments as for
    :class:`RawPOP3` (``implicit_tls=True`` for port 993).
    """

    protocol = "imap"
    name = "IMAP"
    tls_command = "STARTTLS"
    implicit_port = 993

    def __init__(self, host: str, port: int, *, tag_prefix: str = "a", **kwargs: Any):
        super().__init__(host, port, **kwargs)
        if not tag_prefix or not all(c.isalnum() for c in tag_prefix):
            raise ConfigError("tag_prefix", f"{tag_prefix!r} must be letters or digits")
        self.tag_prefix = tag_prefix
        self.banner: IMAPResponse | None = None
        #: the server's capabilities as last announced (emptied by STARTTLS, RFC 3501 §6.2.1)
        self.capabilities: list[str] = []
        #: the mailbox selected now and what SELECT said of it
        self.selected: str | None = None
        self._counter = 0

    def next_tag(self) -> str:
        self._counter += 1
        return f"{self.tag_prefix}{self._counter}"

    def connect(self) -> IMAPResponse:
        """Open the connection (and TLS, if implicit) and read the ``* OK`` greeting."""
        self._open()
        self.banner = self.read_response("*")
        return self.banner

    def _redacted(self, line: str) -> str:
        m = _LOGIN.match(line)
        if m:
            user = _first_astring(m.group(2))
            return f"{m.group(1)}{user} {REDACTED}" if user else f"{m.group(1)}{REDACTED}"
        m = _AUTHENTICATE_IR.match(line)
        if m:
            return f"{m.group(1)} {REDACTED}"
        return line

    def _starts_auth(self, line: str) -> bool:
        words = line.strip().split(" ", 2)
        return len(words) > 1 and words[1].upper() in ("LOGIN", "AUTHENTICATE")

    def _untagged_with_literals(self, raw: bytes) -> Untagged:
        """Read the rest of an untagged response whose line ends with a literal ``{n}``."""
        text = self._record_server(raw)
        parts, literals = [text], []
        size = literal_size(raw)
        while size is not None:
            if size > MAX_LITERAL:
                raise self._protocol_error(f"{self.where} announced a literal of {size} octets, more than "
                                           f"{MAX_LITERAL}")
            data = self._read_exactly(size)
            literals.append(data)
            pieces = data.split(b"\r\n")
            if pieces and pieces[-1] == b"":
                pieces.pop()
            self._record_message(pieces)
            raw = self._read_raw_line()
            parts.append(self._record_server(raw, "2xx"))
            size = literal_size(raw)
        return Untagged("".join(parts)[2:], literals)

    def read_response(self, tag: str | None = None) -> IMAPResponse:
        """Read until the tagged status of ``tag`` (None: any tag), or a continuation request
        ``+``, or (``tag="*"``) the greeting. Untagged responses are collected on the way."""
        untagged: list[Untagged] = []
        while True:
            raw = self._read_raw_line()
            if raw.startswith(b"* ") and literal_size(raw) is not None:
                untagged.append(self._untagged_with_literals(raw))
                continue
            text = self._record_server(raw)
            parsed = parse_imap_status(text)
            if parsed is None:
                hint = " (a POP3 server greets with '+OK')" if text.startswith("+OK") else ""
                raise self._protocol_error(f"{self.where} sent {text[:80]!r}, which is not an IMAP response{hint}. "
                                           "Is this port really IMAP?")
            line_tag, status, code, rest = parsed
            if line_tag == "+":
                self._auth_pending = self._in_auth
                return IMAPResponse("+", "+", rest, None, untagged)
            if line_tag == "*":
                if tag == "*":  # the greeting
                    if status not in ("OK", "PREAUTH", "BYE"):
                        raise self._protocol_error(f"{self.where} greeted with {text[:80]!r}, not '* OK'")
                    self._note_capabilities(code)
                    return IMAPResponse("*", status, rest, code, untagged)
                u = Untagged(rest if status is None else f"{status} {('[' + code + '] ') if code else ''}{rest}".rstrip())
                untagged.append(u)
                if u.keyword == "CAPABILITY":
                    self.capabilities = u.text.split()[1:]
                elif status == "OK":
                    self._note_capabilities(code)
                continue
            if tag is not None and tag != "*" and line_tag != tag:
                self.transcript.note(f"a tagged answer for {line_tag}, not {tag}: an earlier command's")
                continue
            self._auth_pending = False
            self._in_auth = False
            self._note_capabilities(code)
            return IMAPResponse(line_tag, status or "", rest, code, untagged)

    def _note_capabilities(self, code: str | None) -> None:
        if code and code.upper().startswith("CAPABILITY "):
            self.capabilities = code.split()[1:]

    def command(self, text: str, *, tag: str | None = None) -> IMAPResponse:
        """Send ``TAG text`` (the next tag unless ``tag`` is given) and return the answer."""
        tag = tag or self.next_tag()
        self.send_line(f"{tag} {text}")
        return self.read_response(tag)

    # -- commands --------------------------------------------------------------------------
    def capability(self) -> IMAPResponse:
        return self.command("CAPABILITY")

    def starttls(self, cafile: Any = None, server_hostname: str | None = None, verify: bool = True) -> IMAPResponse:
        """``STARTTLS`` (RFC 3501 §6.2.1) and, after ``OK``, the TLS handshake on this connection.

        What the server announced in clear (LOGINDISABLED...) is forgotten: ask CAPABILITY
        again. ``NO``/``BAD`` raises ProtocolError (the connection stays in clear).
        """
        reply = self._switch_to_tls(cafile, server_hostname, verify)
        self.transcript.note("the client must forget the capabilities it learnt in clear (RFC 3501 6.2.1)")
        return reply

    stls = starttls

    def login(self, user: str, password: str) -> IMAPResponse:
        """``LOGIN user password``: recorded as ``a2 LOGIN alice@example.com ****``."""
        return self.command(f"LOGIN {imap_astring(user)} {imap_astring(password)}")

    def authenticate_plain(self, user: str, password: str, *, initial_response: bool = True) -> IMAPResponse:
        """``AUTHENTICATE PLAIN``, with the response on the same line (SASL-IR, RFC 4959) or,
        with ``initial_response=False``, after the server's ``+``. Both are recorded as ``****``."""
        if initial_response:
            return self.command(f"AUTHENTICATE PLAIN {auth_plain_string(user, password)}")
        tag = self.next_tag()
        self.send_line(f"{tag} AUTHENTICATE PLAIN")
        reply = self.read_response(tag)
        if reply.status == "+":
            self.send_line(auth_plain_string(user, password))
            reply = self.read_response(tag)
        return reply

    def select(self, mailbox: str = "INBOX") -> IMAPResponse:
        """``SELECT``: open a mailbox read-write (``* n EXISTS``, ``[UIDVALIDITY v]``...)."""
        reply = self.command(f"SELECT {imap_astring(mailbox)}")
        self.selected = mailbox if reply.ok else None
        return reply

    def examine(self, mailbox: str = "INBOX") -> IMAPResponse:
        """``EXAMINE``: open a mailbox read-only (nothing read becomes \\Seen)."""
        reply = self.command(f"EXAMINE {imap_astring(mailbox)}")
        self.selected = mailbox if reply.ok else None
        return reply

    def _uid(self, text: str, uid: bool) -> IMAPResponse:
        return self.command(f"UID {text}" if uid else text)

    def search(self, *criteria: str, uid: bool = False) -> list[int]:
        """``SEARCH criteria`` (``"UNSEEN"``, ``'SUBJECT "hello"'``): the message numbers (or
        UIDs with ``uid=True``). A refusal raises ProtocolError; use :meth:`command` to see it."""
        reply = self._uid("SEARCH " + (" ".join(criteria) or "ALL"), uid)
        if not reply.ok:
            raise self._protocol_error(f"{self.where} refused SEARCH: {reply.status_line}", reply)
        return [int(w) for u in reply.find("SEARCH") for w in u.text.split()[1:] if w.isdigit()]

    def fetch(self, messages: str | int, items: str, *, uid: bool = False) -> IMAPResponse:
        """``FETCH messages items``; :meth:`IMAPResponse.fetched` gives the items as values."""
        return self._uid(f"FETCH {messages} {items}", uid)

    def store(self, messages: str | int, action: str, flags: str, *, uid: bool = False) -> IMAPResponse:
        """``STORE messages +FLAGS (\\Seen)``: ``action`` is ``FLAGS``, ``+FLAGS``, ``-FLAGS``
        (``.SILENT`` to skip the answer)."""
        return self._uid(f"STORE {messages} {action} {flags}", uid)

    def expunge(self) -> IMAPResponse:
        """``EXPUNGE``: remove the messages flagged ``\\Deleted``, for good."""
        return self.command("EXPUNGE")

    def logout(self) -> IMAPResponse:
        """``LOGOUT`` (``* BYE`` then ``OK``), then close."""
        return self._say_and_close("LOGOUT")

    quit = logout
