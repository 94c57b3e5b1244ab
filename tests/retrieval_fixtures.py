"""What tests/test_pop3.py and tests/test_imap.py share: a lab with its own POP3/IMAP servers
(a short wait after a wrong password), alice's mailbox emptied, a raw client by hand, and
openssl s_client."""
from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from conftest import assert_no_threads_left, require_tool
from labkit import Lab
from labkit.net.mailbox import MaildirStore
from labkit.net.mailbox import maildir

ALICE, ALICE_PW = "alice@example.com", "alice-lab-password"
DELAY = 0.2  # the wait before a wrong password is answered, shortened for the tests


def retrieval_lab(starts: Iterable[tuple[str, Callable[..., Any], bool]], delay: float = DELAY) -> Iterator[Lab]:
    """The body of a module-scoped ``lab`` fixture: ``yield from retrieval_lab(...)``.

    ``starts`` lists ``(role, start_pop3 or start_imap, implicit_tls)``; the servers are
    started on the lab's loop and found in ``lab.retrieval[role]``. At the end each is closed
    (twice: close() is idempotent), and the fixture checks that no password reached the event
    log, that no port stays registered or open, and that no thread is left running.
    """
    before = set(threading.enumerate())
    lab = Lab()
    servers = {}
    try:
        lab.start()
        for role, start, implicit in starts:
            servers[role] = lab._loop.run(start(lab.ctx, implicit_tls=implicit, auth_failure_delay=delay))
        lab.retrieval = servers
        yield lab
    finally:
        ctx = lab.ctx
        try:
            for server in servers.values():
                lab._loop.run(server.close())
                lab._loop.run(server.close())  # idempotent
        finally:
            events = (lab.dir / "log" / "events.jsonl").read_text() if lab.dir else ""
            lab.stop()
    for account in lab.world.accounts:
        if account.password:
            assert account.password not in events, "a password reached the event log"
    standard_ports = {server.standard_port for server in servers.values()}
    assert not [k for k in ctx.ports if k[1] in standard_ports], "ports still registered"
    for server in servers.values():
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex((server.host, server.port)) != 0, f"{server!r} still accepts"
    assert_no_threads_left(before)


def emptied_mailbox(lab: Lab, message: Callable[..., bytes]) -> Callable[..., None]:
    """Empty alice's mailbox; return ``deliver(subject, body=..., **kw)``, which files
    ``message(subject, body, **kw)`` into it (or ``subject`` itself when it is bytes)."""
    store = MaildirStore(lab.ctx.mailbox_dir(ALICE))
    for msg in store.sync():
        store.delete(msg.uid)

    def deliver(subject: str | bytes, body: str = "Hello Alice!\r\n", **kw: Any) -> None:
        data = subject if isinstance(subject, bytes) else message(subject, body, **kw)
        maildir.deliver(lab.ctx, ALICE, data)
    return deliver


def tls_context(lab: Lab) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(lab.ca_path))


def s_client(lab: Lab, server: Any, *args: str, commands: str) -> str:
    """What ``openssl s_client`` printed for ``commands`` sent to ``server`` (with ``args``,
    e.g. ``-starttls pop3``), checking the server's certificate against the lab CA."""
    openssl = require_tool("openssl")
    p = subprocess.run([openssl, "s_client", *args, "-connect", f"{server.host}:{server.port}",
                        "-CAfile", str(lab.ca_path), "-verify_hostname", "mail.example.com",
                        "-verify_return_error", "-quiet", "-crlf"],
                       input=commands, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


class RawClient:
    """A dialogue by hand over a socket (TLS from the first byte when ``implicit``), as over
    telnet or openssl s_client. Subclasses read lines their own way (:meth:`line`)."""

    def __init__(self, lab: Lab, server: Any, implicit: bool):
        self.lab, self.hostname = lab, server.hostname
        sock = socket.create_connection((server.host, server.port), timeout=10)
        self.sock = tls_context(lab).wrap_socket(sock, server_hostname=server.hostname) if implicit else sock
        self.file = self.sock.makefile("rb")
        self.greeting = self.line()

    def start_tls(self) -> None:
        """The TLS handshake on this connection, once the server has said yes to STARTTLS (or
        STLS); the dialogue goes on inside TLS."""
        self.file.close()
        self.sock = tls_context(self.lab).wrap_socket(self.sock, server_hostname=self.hostname)
        self.file = self.sock.makefile("rb")

    def line(self) -> Any:  # pragma: no cover - subclasses
        raise NotImplementedError

    def send(self, data: str | bytes) -> None:
        self.sock.sendall((data.encode() if isinstance(data, str) else data) + b"\r\n")

    def close(self) -> None:
        self.file.close()
        self.sock.close()
