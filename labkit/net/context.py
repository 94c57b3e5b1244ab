"""What every lab service is given: the world, the sandbox, TLS material, DNS, ports, events.

The :class:`labkit.Lab` builds one :class:`LabContext` and hands it to each server it starts.
Servers never reach for globals; tests build a context of their own with :func:`make_context`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..core.pki import HostCredentials
from ..core.world import World, mailbox_path
from ..errors import LabStateError
from .events import EventLog

if TYPE_CHECKING:
    import dns.resolver


@dataclass
class Options:
    #: seconds a client of the lab (relay, raw client) waits for a reply
    smtp_timeout: float = 10.0
    #: seconds the server stalls before answering RCPT TO:<timeout@...>
    timeout_stall: float = 30.0
    #: seconds between delivery attempts of a deferred message (then doubled, up to the max)
    retry_first: float = 0.5
    retry_max: float = 30.0
    #: give up (bounce) after this many seconds in the queue
    queue_lifetime: float = 300.0


@dataclass
class LabContext:
    world: World
    sandbox: Path
    ca_path: Path
    #: host key -> its key and certificate
    credentials: dict[str, HostCredentials]
    events: EventLog
    options: Options = field(default_factory=Options)
    #: (address, standard port) and (host name, standard port) -> the ephemeral port that plays
    #: it; filled as services start. The name matters where every host shares 127.0.0.1.
    ports: dict[tuple[str, int], int] = field(default_factory=dict)
    #: returns a dnspython Resolver pointed at the lab DNS (None before the DNS is up)
    resolver_factory: Callable[[], "dns.resolver.Resolver"] | None = None
    #: the same DNS answered by a call, for the lab's own servers in its process (the provider's
    #: checks); None: they use :attr:`resolver_factory`
    local_resolver_factory: Callable[[], "dns.resolver.Resolver"] | None = None

    def port_for(self, address: str, standard_port: int, name: str | None = None) -> int | None:
        """The ephemeral port that plays ``standard_port`` at host ``name`` (if given and known)
        or else at ``address``; None if nothing does ("connection refused")."""
        if name:
            port = self.ports.get((name.rstrip(".").lower(), standard_port))
            if port is not None:
                return port
        return self.ports.get((address, standard_port))

    #: address (lower case) -> its Maildir folder, as checked once: the check resolves paths,
    #: which cost a system call per folder level, twice for each RCPT and each delivery
    _mailboxes: dict[str, Path] = field(default_factory=dict, repr=False, compare=False)

    def mailbox_dir(self, address: str) -> Path:
        """The Maildir folder of a lab mailbox: ``SANDBOX/mail/DOMAIN/LOCAL`` (guarded:
        :func:`labkit.core.world.mailbox_path`)."""
        key = address.lower()
        folder = self._mailboxes.get(key)
        if folder is None:
            folder = mailbox_path(self.sandbox / "mail", address)
            if len(self._mailboxes) < 4096:
                self._mailboxes[key] = folder
        return folder

    def resolver(self, *, local: bool = False) -> "dns.resolver.Resolver":
        """A resolver pointed at the lab DNS; ``local=True``: answered in this process if it can be."""
        if local and self.local_resolver_factory is not None:
            return self.local_resolver_factory()
        if self.resolver_factory is None:
            raise LabStateError("the lab DNS is not running")
        return self.resolver_factory()
