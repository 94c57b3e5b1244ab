"""labkit.net.serverbase: what the SMTP roles and the POP3/IMAP servers share when they start and close.

The race: a client connects and the server closes before asyncio has made the connection's
transport (asyncio 3.11 makes it in a task of its own). Closed too early, the server makes that
task fail and leaks the transport, which warns "unclosed transport" (a ResourceWarning: an
error under this project's filterwarnings) when it is collected. Each server is closed after
0, 1, 2... turns of the loop following the connection, so one of them lands in that window
(two turns: the first accepts the socket, the second would make its transport).
"""
from __future__ import annotations

import asyncio
import errno
import gc
import socket
import threading

import pytest
from conftest import assert_no_threads_left

from labkit.net.context import LabContext, Options
from labkit.errors import BindError
from labkit.net.events import EventLog
from labkit.net.loop import LoopThread
from labkit.core.pki import CA, issue_host
from labkit.net.mailbox import start_imap, start_pop3
from labkit.net.serverbase import LabServer
from labkit.net.smtp.roles import start_role
from labkit.core.world import default_world, distinct_loopback_available

pytestmark = pytest.mark.skipif(not distinct_loopback_available(),
                                reason="needs the whole 127.0.0.0/8 on loopback (Linux)")

STARTS = {
    "pop3": lambda ctx: start_pop3(ctx),
    "pop3s": lambda ctx: start_pop3(ctx, implicit_tls=True),
    "imap": lambda ctx: start_imap(ctx),
    "imaps": lambda ctx: start_imap(ctx, implicit_tls=True),
    "mda": lambda ctx: start_role("mda", ctx),
    "submissions": lambda ctx: start_role("submissions", ctx),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serverbase")
    world = default_world()
    ca = CA.create()
    ca_path = ca.save(folder / "pki")
    creds = {h.key: issue_host(ca, folder / "pki", h.name, h.aliases, [h.address], ca_path)
             for h in world.hosts if h.key in ("home", world.service("mda").host)}
    before = set(threading.enumerate())
    ctx = LabContext(world, folder / "sandbox", ca_path, creds, EventLog(folder / "events.jsonl"),
                     Options(smtp_timeout=5))
    loop = LoopThread("test-serverbase-loop")
    loop.start()
    try:
        yield ctx, loop
    finally:
        loop.stop()
    assert_no_threads_left(before)
    assert not ctx.ports, f"ports still registered: {ctx.ports}"


async def _connect_then_close(server: LabServer, turns: int) -> None:
    """Connect, let the loop turn ``turns`` times, close the server, then hang up."""
    sock = socket.socket()
    sock.setblocking(False)
    try:
        # no await: the loop must not see the accept before the turns counted here (on loopback
        # the kernel completes the handshake at once; the server accepts on its next turn)
        assert sock.connect_ex((server.host, server.port)) in (0, errno.EINPROGRESS)
        for _ in range(turns):
            await asyncio.sleep(0)
        await server.close()
    finally:
        sock.close()
    await asyncio.sleep(0.01)  # the server's side sees the end


@pytest.mark.parametrize("role", list(STARTS))
def test_a_connection_accepted_just_before_close_is_not_leaked(env, role):
    ctx, loop = env
    for turns in range(6):
        server = loop.run(STARTS[role](ctx))
        assert server.role == role and ctx.ports[(server.host, server.standard_port)] == server.port
        loop.run(_connect_then_close(server, turns))
        assert not server._open_connections(), f"{role} after {turns} turns: {server._open_connections()}"
        assert (server.host, server.standard_port) not in ctx.ports
        gc.collect()  # a leaked transport warns now, inside the test
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex((server.host, server.port)) != 0, f"{server!r} still accepts"


@pytest.mark.parametrize("role", list(STARTS))
def test_start_announces_and_close_is_idempotent(env, role):
    ctx, loop = env
    server = loop.run(STARTS[role](ctx))
    listening = ctx.events.select("listening", role=role)[-1]
    assert (listening["address"], listening["port"], listening["standard_port"]) == \
        (server.host, server.port, server.standard_port)
    assert ctx.ports[(server.hostname, server.standard_port)] == server.port
    loop.run(server.close())
    loop.run(server.close())
    assert (server.hostname, server.standard_port) not in ctx.ports


def test_a_taken_port_is_a_bind_error_and_nothing_stays_registered(env):
    ctx, loop = env
    first = loop.run(start_pop3(ctx))
    try:
        with pytest.raises(BindError, match="cannot listen on .* Use port 0"):
            loop.run(start_pop3(ctx, port=first.port))
        assert ctx.ports[(first.host, first.standard_port)] == first.port  # the first one's, untouched
    finally:
        loop.run(first.close())
    assert not ctx.ports


def test_close_leaves_another_servers_registration_alone(env):
    """A server closed after another took over its standard port does not unregister that one."""
    ctx, loop = env
    old = loop.run(start_imap(ctx))
    new = loop.run(start_imap(ctx))  # the same host and standard port: the newer one wins
    try:
        assert ctx.ports[(new.host, 143)] == new.port
        loop.run(old.close())
        assert ctx.ports[(new.host, 143)] == new.port
    finally:
        loop.run(old.close())
        loop.run(new.close())
    assert not ctx.ports
