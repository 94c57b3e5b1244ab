"""A recorded protocol dialogue: who said what, in order, with the time.

This is the memo's telnet session written down. Each :class:`Line` is one line that went over
the wire, in one of three directions:

``"C"``
    the client sent it (``EHLO pc.example.com``),
``"S"``
    the server sent it (``250-mail.isp.example.net``),
``"*"``
    a note added by the recorder, not sent by anyone (``TLS established: TLSv1.3 ...``).

Replies are grouped back into :class:`Reply` objects (code plus text lines), and the whole
:class:`Transcript` prints in the classic form of RFC 5321's examples::

    S: 220 mail.isp.example.net ESMTP
    C: EHLO pc.example.com
    S: 250-mail.isp.example.net
    S: 250 STARTTLS

Secrets. The argument of ``AUTH`` (a base64 form of the password) and every answer the client
gives during an AUTH exchange are recorded as ``****``: the recorder redacts them *before*
they are stored, so a transcript, its JSON, a notebook output or a log never holds a password.
Only a client made with ``reveal_secrets=True`` records them as sent.

What each line is (:func:`rows`: a command, a line of the message, a reply by its code class,
a note) is known here too, so that every view agrees: :mod:`labkit.teach.display` draws it as
HTML and Mermaid, :func:`to_ansi` as coloured text for a terminal (``labkit send``).

This module is pure data: no sockets, no files.
"""
from __future__ import annotations

import json
import re
import time as _time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

from ..errors import ConfigError, ParseError

__all__ = ["Line", "Reply", "Transcript", "REDACTED", "CLIENT", "SERVER", "NOTE",
           "parse_reply_line", "redact_command", "ascii_text", "Row", "rows", "reply_class", "to_ansi"]

CLIENT = "C"
SERVER = "S"
NOTE = "*"
_DIRECTIONS = (CLIENT, SERVER, NOTE)

#: What a secret is recorded as.
REDACTED = "****"

_ENHANCED = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?=\s|$)")
_AUTH_WITH_ARGUMENT = re.compile(r"^(\s*AUTH\s+\S+)\s+\S.*$", re.IGNORECASE)


@dataclass(frozen=True)
class Line:
    """One line of a dialogue, as it went over the wire (without the CRLF)."""

    direction: str  #: ``"C"`` (client sent), ``"S"`` (server sent) or ``"*"`` (a note)
    text: str
    time: float  #: seconds since the epoch, when it was sent, received or noted

    def __post_init__(self) -> None:
        if self.direction not in _DIRECTIONS:
            raise ConfigError("direction", f"must be one of {_DIRECTIONS}, not {self.direction!r}")

    def __str__(self) -> str:
        return f"{self.direction}: {self.text}" if self.direction != NOTE else f"*  {self.text}"


def parse_reply_line(text: str) -> tuple[int, bool, str] | None:
    """Split one line of an SMTP reply into ``(code, more_follows, text)``; None if malformed.

    RFC 5321 section 4.2: a reply line is three digits, then ``-`` if more lines of the same
    reply follow or a space (or nothing) on the last line, then text::

        >>> parse_reply_line("250-SIZE 35882577")
        (250, True, 'SIZE 35882577')
        >>> parse_reply_line("250 HELP")
        (250, False, 'HELP')
        >>> parse_reply_line("hello") is None
        True
    """
    if len(text) < 3 or not text[:3].isdigit() or not "2" <= text[0] <= "5":
        return None
    if len(text) == 3:
        return int(text[:3]), False, ""
    sep = text[3]
    if sep not in " -":
        return None
    return int(text[:3]), sep == "-", text[4:]


@dataclass
class Reply:
    """A server's reply: a three-digit code and one or more lines of text.

    ``lines`` holds the text after the code on each line: ``EHLO`` gets a reply such as
    ``Reply(250, ["mail.isp.example.net", "SIZE 35882577", "STARTTLS", "HELP"])``.
    """

    code: int
    lines: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The text of every line, one per line, without the codes."""
        return "\n".join(self.lines)

    @property
    def ok(self) -> bool:
        """2xx (done) or 3xx (go on: ``354 End data with <CR><LF>.<CR><LF>``, ``334`` in AUTH)."""
        return 200 <= self.code < 400

    @property
    def transient(self) -> bool:
        """4xx: a temporary failure; the client should try again later (RFC 5321 4.2.1)."""
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        """5xx: a permanent failure; trying again the same way will fail again."""
        return 500 <= self.code < 600

    @property
    def enhanced(self) -> str | None:
        """The enhanced status code (RFC 3463) that starts the text, e.g. ``"5.7.0"``, if any."""
        if not self.lines:
            return None
        m = _ENHANCED.match(self.lines[0])
        return m.group(1) if m else None

    def wire_lines(self) -> list[str]:
        """The lines as the server sent them: ``250-...`` for all but the last, ``250 ...``."""
        texts = self.lines or [""]
        out = [f"{self.code}-{t}" for t in texts[:-1]]
        out.append(f"{self.code} {texts[-1]}" if texts[-1] else str(self.code))
        return out

    def __str__(self) -> str:
        return "\n".join(self.wire_lines())

    @classmethod
    def from_wire(cls, lines: Iterable[str]) -> "Reply":
        """Build a Reply from the lines a server sent (``["250-a", "250 b"]``).

        Raises ValueError if a line is malformed or the codes differ.
        """
        code: int | None = None
        texts: list[str] = []
        for raw in lines:
            parsed = parse_reply_line(raw)
            if parsed is None:
                raise ParseError(f"not an SMTP reply line: {raw!r}")
            if code is not None and parsed[0] != code:
                raise ParseError(f"reply code changed from {code} to {parsed[0]} within one reply")
            code = parsed[0]
            texts.append(parsed[2])
        if code is None:
            raise ParseError("an empty reply has no code")
        return cls(code, texts)


def ascii_text(text: str, limit: int = 60) -> str:
    """``text`` made safe to echo in a reply: printable ASCII, one line, at most ``limit`` chars."""
    out = "".join(c if " " <= c <= "~" else "?" for c in text)
    return out if len(out) <= limit else out[:limit] + "..."


def redact_command(line: str) -> str:
    """The form of a client line that may be recorded: the argument of AUTH becomes ``****``.

    ``AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm`` carries the password (base64 is an encoding,
    not encryption: anyone can decode it), so it is recorded as ``AUTH PLAIN ****``::

        >>> redact_command("AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm")
        'AUTH PLAIN ****'
        >>> redact_command("MAIL FROM:<alice@example.com>")
        'MAIL FROM:<alice@example.com>'

    The answers a client gives after a ``334`` challenge are secrets too; the client that
    records the dialogue knows when it is inside such an exchange and redacts them itself.
    """
    m = _AUTH_WITH_ARGUMENT.match(line)
    return f"{m.group(1)} {REDACTED}" if m else line


class Transcript:
    """The lines of one dialogue, in order, with the names of the two sides.

    ``client_name`` and ``server_name`` label the two sides in every view
    (``pc.example.com`` and ``mail.isp.example.net:587``). A Transcript behaves as a read-only
    sequence of :class:`Line`; the client that records it appends with :meth:`add`.
    """

    def __init__(self, client_name: str = "client", server_name: str = "server",
                 lines: Iterable[Line] = ()):
        self.client_name = client_name
        self.server_name = server_name
        self.lines: list[Line] = list(lines)

    # -- recording -------------------------------------------------------------------------
    def add(self, direction: str, text: str, when: float | None = None) -> Line:
        """Append a line (``when`` defaults to now) and return it."""
        line = Line(direction, text, _time.time() if when is None else when)
        self.lines.append(line)
        return line

    def note(self, text: str) -> Line:
        """Append a note: something the recorder saw that was not a line on the wire."""
        return self.add(NOTE, text)

    # -- reading ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Line]:
        return iter(self.lines)

    def __len__(self) -> int:
        return len(self.lines)

    def __getitem__(self, index):
        return self.lines[index]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Transcript) and self.lines == other.lines
                and self.client_name == other.client_name and self.server_name == other.server_name)

    def __repr__(self) -> str:
        return (f"<Transcript {self.client_name} -> {self.server_name}: "
                f"{len(self.commands())} commands, {len(self.replies())} replies>")

    def commands(self) -> list[str]:
        """What the client sent, one entry per line, as recorded (secrets redacted)."""
        return [ln.text for ln in self.lines if ln.direction == CLIENT]

    def notes(self) -> list[str]:
        return [ln.text for ln in self.lines if ln.direction == NOTE]

    def replies(self) -> list[Reply]:
        """The server's replies, multi-line replies grouped into one :class:`Reply` each.

        A line that is not a well-formed reply line is left out (the client raised a
        ProtocolError when it read it; the line itself stays in :attr:`lines`).
        """
        replies: list[Reply] = []
        current: Reply | None = None
        for ln in self.lines:
            if ln.direction != SERVER:
                continue
            parsed = parse_reply_line(ln.text)
            if parsed is None:
                current = None
                continue
            code, more, text = parsed
            if current is None or current.code != code:
                current = Reply(code, [])
                replies.append(current)
            current.lines.append(text)
            if not more:
                current = None
        return replies

    def to_text(self) -> str:
        """The classic form: ``C: EHLO pc.example.com`` / ``S: 250 ...`` / ``*  a note``."""
        return "\n".join(str(ln) for ln in self.lines)

    __str__ = to_text

    def to_dict(self) -> dict:
        return {"client_name": self.client_name, "server_name": self.server_name,
                "lines": [asdict(ln) for ln in self.lines]}

    def to_json(self, indent: int | None = None) -> str:
        """JSON: ``{"client_name", "server_name", "lines": [{"direction", "text", "time"}]}``."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Transcript":
        data = json.loads(text)
        return cls(data.get("client_name", "client"), data.get("server_name", "server"),
                   (Line(d["direction"], d["text"], d["time"]) for d in data.get("lines", [])))


# -- what each line is, and a terminal's view ---------------------------------------------

def reply_class(text: str) -> str:
    """The class of a server line by its code: ``2xx``, ``3xx``, ``4xx``, ``5xx`` or ``bad``."""
    parsed = parse_reply_line(text)
    return f"{parsed[0] // 100}xx" if parsed else "bad"


@dataclass(frozen=True)
class Row:
    """One line of a transcript as the views see it."""

    direction: str  #: ``C``, ``S`` or ``*``
    text: str
    kind: str  #: ``command``, ``message`` (a line of the message after 354), ``2xx``...``5xx``, ``bad``, ``note``
    offset: float  #: seconds since the first line


def rows(transcript: Transcript) -> list[Row]:
    """Classify every line: commands, message lines (between ``354`` and the lone ``.``),
    replies by their code class, notes."""
    out: list[Row] = []
    start = transcript[0].time if len(transcript) else 0.0
    line_kinds = getattr(transcript, "line_kinds", None)
    if callable(line_kinds):  # POP3/IMAP transcripts know what each line is (no SMTP codes)
        return [Row(ln.direction, ln.text, kind, ln.time - start) for ln, kind in zip(transcript, line_kinds())]
    in_message = False
    for ln in transcript:
        offset = ln.time - start
        if ln.direction == NOTE:
            out.append(Row(NOTE, ln.text, "note", offset))
        elif ln.direction == SERVER:
            kind = reply_class(ln.text)
            parsed = parse_reply_line(ln.text)
            if parsed and not parsed[1]:
                in_message = parsed[0] == 354
            out.append(Row(SERVER, ln.text, kind, offset))
        else:
            is_end = in_message and ln.text == "."
            out.append(Row(CLIENT, ln.text, "message" if in_message and not is_end else "command", offset))
            if is_end:
                in_message = False
    return out


_ANSI = {"command": "36", "message": "36", "2xx": "32", "3xx": "32", "4xx": "33", "5xx": "1;31",
         "bad": "1;31", "note": "2;3"}


def to_ansi(transcript: Transcript, color: bool) -> str:
    """The classic ``C:``/``S:`` text of a dialogue, coloured for a terminal when ``color``."""
    lines = []
    for row in rows(transcript):
        prefix = {CLIENT: "C: ", SERVER: "S: ", NOTE: "*  "}[row.direction]
        text = prefix + row.text
        lines.append(f"\x1b[{_ANSI[row.kind]}m{text}\x1b[0m" if color else text)
    return "\n".join(lines)
