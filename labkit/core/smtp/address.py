"""SMTP paths and mailboxes, parsed the way RFC 5321 writes them. Pure: no I/O.

An SMTP command names an address inside angle brackets, a *path*::

    MAIL FROM:<alice@example.com>          a Reverse-path
    MAIL FROM:<>                           the null reverse-path (bounces use it)
    RCPT TO:<bob@inbox.example.org>        a Forward-path
    RCPT TO:<@relay.example:bob@inbox.example.org>   an old source route (RFC 5321 §3.3)

The grammar (RFC 5321 §4.1.2) in short::

    Path         = "<" [ A-d-l ":" ] Mailbox ">"
    A-d-l        = "@" Domain *( "," "@" Domain )      ; the source route, to be ignored
    Mailbox      = Local-part "@" ( Domain / address-literal )
    Local-part   = Dot-string / Quoted-string            ; bob, first.last, "any thing"
    address-literal = "[" IPv4 "]" / "[IPv6:" IPv6 "]"   ; user@[127.0.0.1]

Mail relays have been tricked for decades with addresses that this grammar allows but that
mean "send it on somewhere else": ``user%other@here`` (the percent hack), ``other!user@here``
(a UUCP bang path), ``"user@other"@here`` (a quoted ``@``). :func:`parse_path` keeps every such
detail visible in a :class:`Mailbox`, so that :mod:`labkit.core.smtp.policy` can decide on what the
address really says rather than on what it seems to say.

    >>> m = parse_path("<Bob@Example.COM.>")
    >>> m.local, m.domain, m.address
    ('Bob', 'example.com', 'Bob@example.com')
    >>> parse_path("<user%other.example.net@example.com>").routing_characters
    ('%',)
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ...errors import ConfigError
from ...result import Result

#: RFC 5321 §4.5.3.1: the longest local part, domain and path a server must accept.
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

#: Characters that, inside a local part, have been used to route mail onward.
ROUTING_CHARACTERS = ("@", "%", "!")

_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_DOT_STRING = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
# A quoted string: printable ASCII except " and \ , or a backslash pair (RFC 5321 qtextSMTP).
_QUOTED_STRING = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z")

_HINT = "Write it as <local-part@domain>, e.g. <bob@example.com>, or <> for the null sender"


@dataclass(frozen=True)
class Mailbox:
    """One parsed SMTP mailbox (or the null path ``<>``).

    ``local`` is the local part as written (quotes included when it was quoted),
    ``domain`` is lower-cased without a trailing dot, or an address literal such as
    ``[127.0.0.1]``. ``route`` lists the domains of a source route, which RFC 5321
    (§3.3 and appendix C) says a server should ignore.
    """

    local: str
    domain: str
    route: tuple[str, ...] = ()
    null: bool = False

    @property
    def address(self) -> str:
        """``local@domain`` (empty for the null path)."""
        return "" if self.null else f"{self.local}@{self.domain}"

    @property
    def path(self) -> str:
        """The address as it goes into an SMTP command: ``<local@domain>`` or ``<>``."""
        return f"<{self.address}>"

    @property
    def quoted(self) -> bool:
        """Whether the local part is a Quoted-string such as ``"john smith"``."""
        return self.local.startswith('"')

    @property
    def unquoted_local(self) -> str:
        """The local part with its quotes and backslash escapes removed."""
        if not self.quoted:
            return self.local
        return re.sub(r"\\(.)", r"\1", self.local[1:-1])

    @property
    def literal(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        """The IP address of an address-literal domain (``[127.0.0.1]``), else None."""
        if not self.domain.startswith("["):
            return None
        inner = self.domain[1:-1]
        if inner.lower().startswith("ipv6:"):
            inner = inner[5:]
        return ipaddress.ip_address(inner)

    @property
    def routing_characters(self) -> tuple[str, ...]:
        """Which of ``@ % !`` the local part holds: each one is a way to ask for onward routing."""
        local = self.unquoted_local
        return tuple(c for c in ROUTING_CHARACTERS if c in local)

    def __str__(self) -> str:
        return self.path


NULL_PATH = Mailbox("", "", null=True)


def _fail(text: str, reason: str) -> ConfigError:
    return ConfigError(f"SMTP path {text!r}", reason, _HINT)


def parse_domain(text: str, *, where: str = "domain") -> str:
    """Check a domain (or address literal) and return it normalised.

    Names are lower-cased and lose one trailing dot (``Example.COM.`` -> ``example.com``);
    address literals are checked as IP addresses and kept as written, apart from the case of
    ``IPv6:``. Raises :class:`ConfigError` saying which part is wrong.
    """
    if not text:
        raise ConfigError(where, "the domain is empty", _HINT)
    if text.startswith("["):
        if not text.endswith("]"):
            raise ConfigError(where, f"{text!r} opens an address literal with [ but does not close it")
        inner = text[1:-1]
        try:
            if inner[:5].lower() == "ipv6:":
                ip = ipaddress.IPv6Address(inner[5:])
                return f"[IPv6:{ip.compressed}]"
            return f"[{ipaddress.IPv4Address(inner)}]"
        except ValueError:
            raise ConfigError(where, f"{text!r} is not an IP address literal",
                              "write [192.0.2.1] or [IPv6:2001:db8::1] (RFC 5321 §4.1.3)") from None
    name = text[:-1] if text.endswith(".") else text
    if len(name) > MAX_DOMAIN:
        raise ConfigError(where, f"the domain is {len(name)} octets long; the limit is {MAX_DOMAIN}")
    for label in name.split("."):
        if not _LABEL.match(label):
            raise ConfigError(where, f"{label!r} in {text!r} is not a valid domain label",
                              "labels are letters, digits and inner hyphens, 1-63 characters")
    return name.lower()


def parse_mailbox(text: str) -> Mailbox:
    """Parse a bare ``local-part@domain`` (no angle brackets, no source route)."""
    if not text.isascii():
        raise _fail(text, "it holds non-ASCII characters, which need SMTPUTF8 (RFC 6531); "
                          "this lab does not offer it")
    if any(c in text for c in "\r\n\0"):
        raise _fail(text, "it holds a line break or NUL")
    if text.startswith('"'):
        end = closing_quote(text)
        if end < 0:
            raise _fail(text, "the quoted local part has no closing quote")
        local, rest = text[:end + 1], text[end + 1:]
        if not rest.startswith("@"):
            raise _fail(text, "a quoted local part must be followed by @domain")
        domain = rest[1:]
        if not _QUOTED_STRING.match(local):
            raise _fail(text, "the quoted local part holds a character that must be escaped")
    else:
        local, at, domain = text.rpartition("@")
        if not at:
            raise _fail(text, "there is no @ between the local part and the domain")
        if not local:
            raise _fail(text, "the local part before @ is empty")
        if "@" in local:
            raise _fail(text, "it has more than one @; an @ inside a local part must be quoted, "
                              "and a relay should not accept it anyway")
        if not _DOT_STRING.match(local):
            raise _fail(text, f"the local part {local!r} is not a dot-string "
                              "(letters, digits, !#$%&'*+-/=?^_`{|}~, single dots between them)")
    if len(local) > MAX_LOCAL_PART:
        raise _fail(text, f"the local part is {len(local)} octets long; RFC 5321 §4.5.3.1.1 "
                          f"allows {MAX_LOCAL_PART}")
    return Mailbox(local, parse_domain(domain, where=f"domain of {text!r}"))


def closing_quote(text: str) -> int:
    """Index of the quote that closes the quoted string opening ``text``, or -1.

    A backslash quotes the next character, as in SMTP's quoted-string (RFC 5321 §4.1.2) and
    IMAP's (RFC 3501 §4.3), so the IMAP client reads its quoted strings with this too."""
    i = 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i
        i += 1
    return -1


def parse_path(text: str, *, allow_null: bool = False) -> Mailbox:
    """Parse an SMTP path: ``<local@domain>``, ``<@route:local@domain>`` or (if allowed) ``<>``.

    Angle brackets may be left out (many clients and aiosmtpd hand over bare addresses).
    Raises :class:`labkit.errors.ConfigError` with the reason when ``text`` is not a path;
    :func:`check_path` gives the same answer as a Result with an SMTP reply instead.
    """
    if not isinstance(text, str):
        raise ConfigError("SMTP path", f"expected a string, got {type(text).__name__}")
    raw = text.strip()
    if len(raw) > MAX_PATH + 2:
        raise _fail(text[:40] + "...", f"it is {len(raw)} octets long; RFC 5321 §4.5.3.1.3 allows "
                                       f"{MAX_PATH}")
    if raw.startswith("<"):
        if not raw.endswith(">"):
            raise _fail(text, "it opens with < but does not end with >")
        raw = raw[1:-1]
    elif raw.endswith(">"):
        raise _fail(text, "it ends with > but does not open with <")
    if raw == "":
        if allow_null:
            return NULL_PATH
        raise _fail(text, "the null path <> is only allowed as a reverse-path (MAIL FROM)")
    route: tuple[str, ...] = ()
    if raw.startswith("@"):
        adl, colon, raw = raw.partition(":")
        if not colon:
            raise _fail(text, "a source route (@domain,...) must end with ':' before the mailbox")
        hops = []
        for hop in adl.split(","):
            if not hop.startswith("@"):
                raise _fail(text, f"source-route hop {hop!r} must start with @")
            hops.append(parse_domain(hop[1:], where=f"source route of {text!r}"))
        route = tuple(hops)
    box = parse_mailbox(raw)
    return Mailbox(box.local, box.domain, route)


def check_path(text: str, *, allow_null: bool = False) -> Result:
    """:func:`parse_path` as a :class:`~labkit.result.Result`, for a server to answer with.

    ``ok`` holds the parsed :class:`Mailbox` in ``details["mailbox"]``; a refusal carries the
    SMTP reply to send in ``details["reply"]`` (``501 5.1.3 ...``, RFC 3463 "bad destination
    mailbox address syntax").
    """

    try:
        box = parse_path(text, allow_null=allow_null)
    except ConfigError as e:
        return Result(False, f"bad address syntax: {e.reason}",
                      {"reply": f"501 5.1.3 Bad address syntax: {e.reason}", "path": text})
    return Result(True, f"{box.path} is a valid path", {"mailbox": box, "path": text})
