"""What a lab says of each of its services, and which roles real mode hands to real daemons.

Shared by :mod:`labkit.lab.lab` and :mod:`labkit.lab.realmode`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: the order in which roles start: receivers first, so that relays find them
ROLE_ORDER = ("inbox", "verifier", "smarthost", "mda", "mta", "submission", "submissions")
#: roles that real Postfix plays in real mode (the embedded ones stay off)
REAL_ROLES = ("mta", "submission", "submissions")
#: roles that real Dovecot plays in real mode: LMTP delivery and mailbox access
DOVECOT_ROLES = ("mda", "pop3", "pop3s", "imap", "imaps")
#: where real-mode sandboxes live when no folder is given: every parent 755 and root's, so that
#: user postfix can traverse it and OpenDKIM's safe-key check accepts it (FIELD-NOTES)
REAL_BASE = Path("/var/lib/mail-lab")


@dataclass(frozen=True)
class ServiceInfo:
    """Where a lab service listens: ``host`` (an address to connect to) and ``port``."""

    role: str
    name: str  #: the FQDN of the lab host that plays it
    host: str  #: its loopback address
    port: int  #: the ephemeral port it listens on
    standard_port: int  #: the port it plays (25, 587, 465, 53)
    protocol: str  #: smtp, smtps or dns
    what: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
