"""What every embedded lab server that listens on a TCP port does the same way.

The SMTP roles (:mod:`labkit.net.smtp.roles`) and the POP3 and IMAP servers
(:mod:`labkit.net.mailbox.pop3`) each speak their own protocol, but they come to life and go
away alike:

* they listen with ``loop.create_server`` on a lab address (port 0: a free port), and a port
  that is taken gives a :class:`labkit.errors.BindError` saying what to do;
* they register where they are in ``ctx.ports``, under their address and under their host
  name, each with the standard port the service plays (25, 587, 110...), so that lab clients
  find them;
* they announce themselves with a ``listening`` event (address, port, standard_port);
* ``close()`` takes all that back: the registration, the listening socket, every open
  connection; it is idempotent, and ``async with`` calls it.

A subclass sets ``ctx``, ``role``, ``host``, ``hostname``, ``standard_port`` and calls
:meth:`LabServer._setup_listener` in its ``__init__``; its ``_start(port)`` calls
:meth:`LabServer._listen` and :meth:`LabServer._announce`; it says how to end its connections
(:meth:`LabServer._end_connections`) and which are still open
(:meth:`LabServer._open_connections`). :meth:`LabServer._start_or_close` starts it and closes
what was started if anything fails on the way.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Self

from ..errors import BindError

if TYPE_CHECKING:
    from .context import LabContext

#: Times close() yields to the event loop before it closes the listening socket.
ACCEPT_YIELDS = 5
#: How long close() waits (in steps of 10 ms) for the connections to see their end.
CLOSE_WAIT_STEPS = 50


def tls_info(ssl_object: Any, implicit: bool) -> dict[str, Any]:
    """What a ``tls`` event tells of a connection's TLS: version, cipher, implicit or STARTTLS."""
    cipher = ssl_object.cipher() if ssl_object is not None else None
    return {"version": ssl_object.version() if ssl_object is not None else None,
            "cipher": cipher[0] if cipher else None, "implicit": implicit}


class LabServer:
    """A lab server on the running event loop: ``.role``, ``.host``, ``.port``, ``.hostname``,
    ``.standard_port``; ``await .close()`` (idempotent), or ``async with``."""

    ctx: LabContext
    role: str
    host: str
    hostname: str
    standard_port: int

    def _setup_listener(self) -> None:
        """The state every server starts from: not listening yet, not closed."""
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._closed = False

    # -- starting ---------------------------------------------------------------------------
    async def _start(self, port: int) -> None:  # pragma: no cover - subclasses
        """Listen (with :meth:`_listen`), start what the server needs, :meth:`_announce`."""
        raise NotImplementedError

    async def _start_or_close(self, port: int) -> Self:
        """:meth:`_start`; if anything fails on the way, close what was started and re-raise."""
        try:
            await self._start(port)
        except BaseException:
            await self.close()
            raise
        return self

    async def _listen(self, factory: Callable[[], asyncio.BaseProtocol], port: int, *,
                      ssl: Any = None, ssl_handshake_timeout: float | None = None) -> None:
        """Listen on ``self.host`` port ``port`` (0: a free one) and register in ``ctx.ports``."""
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(factory, self.host, port, ssl=ssl,
                                                    ssl_handshake_timeout=ssl_handshake_timeout)
        except OSError as e:
            raise BindError(f"{self.role}: cannot listen on {self.host} port {port}: {e.strerror or e}. "
                            "Use port 0 for a free port, or check that the address is a loopback "
                            "address of this machine") from e
        self.port = self._server.sockets[0].getsockname()[1]
        for key in self._port_keys():
            self.ctx.ports[key] = self.port

    def _announce(self) -> None:
        """The ``listening`` event: where the server is, and which port it plays."""
        self.ctx.events.emit(self.hostname, self.role, "listening", address=self.host, port=self.port,
                             standard_port=self.standard_port)

    def _port_keys(self) -> tuple[tuple[str, int], tuple[str, int]]:
        return ((self.host, self.standard_port), (self.hostname, self.standard_port))

    def _unlisten(self) -> None:
        """Take the ``ctx.ports`` entries back (only those that still name this server)."""
        for key in self._port_keys():
            if self.ctx.ports.get(key) == self.port:
                del self.ctx.ports[key]

    # -- closing ----------------------------------------------------------------------------
    async def _end_connections(self) -> None:
        """End every open connection (the listening socket is closed already)."""

    def _open_connections(self) -> Collection[Any]:
        """The connections not yet gone; close() waits a little for this to become empty."""
        return ()

    async def close(self) -> None:
        """Stop listening and end every open connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._unlisten()
        if self._server is not None:
            # A connection accepted just before close() still has to get its transport: asyncio
            # (3.11) makes that in a task of its own, which fails (an AssertionError in
            # Server._attach) and leaks the transport ("unclosed transport") when the server
            # has closed in between. A few turns of the loop let that task finish first; the
            # connection is then open, and ended below with the others.
            for _ in range(ACCEPT_YIELDS):
                await asyncio.sleep(0)
            self._server.close()
        await self._end_connections()
        if self._server is not None:
            await self._server.wait_closed()
        for _ in range(CLOSE_WAIT_STEPS):  # let the connections see their end
            if not self._open_connections():
                break
            await asyncio.sleep(0.01)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
