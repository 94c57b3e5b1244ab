"""The one exception hierarchy of labkit, documented here and defined here.

Every error labkit raises on purpose is a :class:`LabError`. Its message says what happened,
where, and what to do next, in that order, so that it can be shown to a learner as it is.

    LabError
    ├── ConfigError          a value given to labkit is malformed (names the field and why; a ValueError)
    ├── ParseError           a text given to labkit to read is not what it should be (a ValueError)
    ├── NotFound             a name asked for is not there: a host, a role, an exercise (a KeyError)
    ├── BindError            an address or port could not be bound (nothing is left running)
    ├── LabStateError        the lab, or a part of it, is in the wrong state for what was asked
    │   ├── LabRunningError  a lab is already running there
    │   └── LabNotRunning    no lab is running there
    ├── RealModeUnavailable  real mode needs something this machine lacks
    ├── StartError           a service did not come up (its log says why)
    ├── ProtocolError        a peer answered something unexpected (carries the reply)
    ├── DNSLookupError       a DNS question got no usable answer (says what, of whom, what came back)
    │   └── NullMXError      the domain publishes a null MX: it takes no mail (RFC 7505)
    ├── DestinationError     the relay queue has no server to try for a domain (bounce or defer)
    ├── CLIError             the ``labkit`` command cannot do what it was asked (carries the exit status)
    └── ConnectionFailed     a dialogue could not start or go on (also an OSError)
        ├── TLSFailed        the TLS handshake failed (most often: certificate not verified)
        ├── SMTPConnectionError       ... of an SMTP dialogue
        │   └── SMTPTLSError          ... its TLS handshake (also a TLSFailed)
        └── MailboxConnectionError    ... of a POP3 or IMAP dialogue
            └── MailboxTLSError       ... its TLS handshake (also a TLSFailed)

The servers' own signals between their parts (a line too long, a client gone, a bad IMAP
command) never leave the server, and stay private to its module.
"""
from __future__ import annotations

from typing import Any


class LabError(Exception):
    """Base class of every error labkit raises on purpose."""

    @staticmethod
    def sentence(what: str, hint: str = "") -> str:
        """The message: what happened, then (after a full stop) what to do next."""
        return f"{what}. {hint}" if hint else what


class ConfigError(LabError, ValueError):
    """A value given to labkit is malformed; the message names the field and the reason."""

    def __init__(self, field: str, reason: str, hint: str = ""):
        self.field = field
        self.reason = reason
        self.hint = hint
        super().__init__(self.sentence(f"{field}: {reason}", hint))


class ParseError(LabError, ValueError):
    """A text given to labkit to read (a reply line, a DKIM tag list, a DMARC report, a spool
    file) is not what it should be; the message says where it went wrong."""


class NotFound(LabError, KeyError):
    """A name asked for is not there (a lab host, a role, an exercise, a message); the message
    lists what there is."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class BindError(LabError, OSError):
    """An address or port could not be bound."""


class LabStateError(LabError):
    """The lab, its sandbox folder or a part of it (its DNS, a queue) is not in the state that
    what was asked needs."""


class LabRunningError(LabStateError):
    """A lab is already running in the sandbox folder."""


class LabNotRunning(LabStateError):
    """No lab is running in the sandbox folder."""


class RealModeUnavailable(LabError):
    """Real mode needs a daemon, a tool or a privilege that this machine lacks."""


class StartError(LabError):
    """A service did not come up in time or failed while starting."""


class ProtocolError(LabError):
    """A server answered something the client did not expect.

    ``reply`` holds the reply (a :class:`labkit.core.transcript.Reply`) when there was one.
    """

    def __init__(self, message: str, reply=None):
        self.reply = reply
        super().__init__(message)


class DNSLookupError(LabError):
    """A DNS question got no usable answer.

    Attributes say what was asked (``name``, ``rtype``), of which server (``server``, as
    ``address:port``) and what came back (``outcome``: ``NXDOMAIN``, ``NODATA``, ``REFUSED``,
    ``SERVFAIL``, ``timeout``...).
    """

    def __init__(self, name: str, rtype: str, server: str, outcome: str, hint: str = ""):
        self.name, self.rtype, self.server, self.outcome, self.hint = name, rtype, server, outcome, hint
        super().__init__(self.sentence(f"DNS {rtype} {name} asked of {server}: {outcome}", hint))


class NullMXError(DNSLookupError):
    """The domain publishes a "null MX" (``MX 0 .``, RFC 7505): it accepts no mail at all.

    A sender should not try other hosts or retry later, but bounce the message at once with
    ``556 5.1.10`` (RFC 7505 §4.1).
    """


class DestinationError(LabError):
    """The relay queue has no server to try for a domain; ``permanent`` says whether to bounce
    or defer, ``status`` is the enhanced status code (RFC 3463) of the report."""

    def __init__(self, reason: str, permanent: bool, status: str):
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.status = status


class CLIError(LabError):
    """The ``labkit`` command cannot do what it was asked; ``code`` is its exit status."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class ConnectionFailed(LabError, OSError):
    """A dialogue could not start or go on: refused, timed out, closed, unreachable.

    ``transcript`` holds the dialogue up to the failure; ``host`` and ``port`` say where.
    """

    def __init__(self, message: str, *, host: str = "", port: int = 0,
                 transcript: Any = None):
        super().__init__(message)
        self.host = host
        self.port = port
        self.transcript = transcript


class TLSFailed(ConnectionFailed):
    """The TLS handshake failed: most often the certificate could not be verified."""


class SMTPConnectionError(ConnectionFailed):
    """An SMTP dialogue could not start or go on."""


class SMTPTLSError(SMTPConnectionError, TLSFailed):
    """The TLS handshake with an SMTP server failed: most often the certificate."""


class MailboxConnectionError(ConnectionFailed):
    """A POP3 or IMAP dialogue could not start or go on: refused, timed out, closed."""


class MailboxTLSError(MailboxConnectionError, TLSFailed):
    """The TLS handshake with a POP3 or IMAP server failed (most often: the certificate)."""
