"""The one exception hierarchy of labkit.

Every error labkit raises on purpose is a :class:`LabError`. Its message says what happened,
where, and what to do next, in that order, so that it can be shown to a learner as it is.

    LabError
    ├── ConfigError          a value given to labkit is malformed (names the field and why)
    ├── BindError            an address or port could not be bound (nothing is left running)
    ├── LabStateError        the sandbox folder is in the wrong state
    │   ├── LabRunningError  a lab is already running there
    │   └── LabNotRunning    no lab is running there
    ├── RealModeUnavailable  real mode needs something this machine lacks
    ├── StartError           a service did not come up (its log says why)
    ├── ProtocolError        a peer answered something unexpected (carries the reply)
    └── SMTPConnectionError  a dialogue could not start or go on (also an OSError)
        ├── SMTPTLSError     the TLS handshake failed (most often: certificate not verified)
        └── MailboxConnectionError  the same for a POP3 or IMAP dialogue
            └── MailboxTLSError     the TLS handshake with a POP3 or IMAP server failed
                                    (also an SMTPTLSError)
"""
from __future__ import annotations

from typing import Any


class LabError(Exception):
    """Base class of every error labkit raises on purpose."""


class ConfigError(LabError, ValueError):
    """A value given to labkit is malformed; the message names the field and the reason."""

    def __init__(self, field: str, reason: str, hint: str = ""):
        self.field = field
        self.reason = reason
        self.hint = hint
        msg = f"{field}: {reason}"
        if hint:
            msg += f". {hint}"
        super().__init__(msg)


class BindError(LabError, OSError):
    """An address or port could not be bound."""


class LabStateError(LabError):
    """The sandbox folder is not in the state the command needs."""


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


class SMTPConnectionError(LabError, OSError):
    """The dialogue could not start or go on: refused, timed out, closed, unreachable.

    ``transcript`` holds the dialogue up to the failure; ``host`` and ``port`` say where.
    """

    def __init__(self, message: str, *, host: str = "", port: int = 0,
                 transcript: Any = None):
        super().__init__(message)
        self.host = host
        self.port = port
        self.transcript = transcript


class SMTPTLSError(SMTPConnectionError):
    """The TLS handshake failed: most often the certificate could not be verified."""


class MailboxConnectionError(SMTPConnectionError):
    """A POP3 or IMAP dialogue could not start or go on: refused, timed out, closed.

    ``host``, ``port`` and ``transcript`` as for :class:`SMTPConnectionError` (of which it is a
    kind, so one ``except`` catches both).
    """


class MailboxTLSError(MailboxConnectionError, SMTPTLSError):
    """The TLS handshake with a POP3 or IMAP server failed (most often: the certificate)."""
