"""The lab's authoritative DNS server ("ns.lab"): a thin asyncio shell around the zone model.

How a query is answered is decided by two pure functions, testable without a socket:

- :func:`lookup` looks a name and type up in the zones (authoritative answer, CNAME chasing,
  NXDOMAIN, NODATA, or REFUSED for names outside every lab zone);
- :func:`respond` turns the bytes of a query into the bytes of the reply, using dnspython's
  messages (``dns.message.from_wire`` / ``make_response``), and truncates over UDP.

:class:`DNSServer` only moves bytes: UDP datagrams, and TCP messages each preceded by their
length in two octets (RFC 1035 §4.2.2), on the same port number. It is not a recursive
resolver: like any authoritative server it answers only for its own zones.

Example, from a script or a test (a notebook uses the :class:`labkit.Lab`)::

    from labkit import dns as labdns
    from labkit.core.world import default_world

    with labdns.serve(labdns.lab_zones(default_world())) as server:
        resolver = labdns.make_resolver(server.host, server.port)
        print(labdns.mx_hosts(resolver, "inbox.example.org"))   # [(10, 'mx.inbox.example.org')]
"""
from __future__ import annotations

import asyncio
import errno
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ..core.dns.zone import Record, Zone, find_zone
from ..errors import BindError, ConfigError
from .loop import LoopThread

#: Largest UDP reply to a client that did not send EDNS (RFC 1035 §4.2.1).
UDP_CLASSIC_MAX = 512

#: The UDP payload size this server advertises in its EDNS replies (the DNS Flag Day 2020 value).
OUR_EDNS_PAYLOAD = 1232

#: How many CNAMEs are followed before giving up (a loop, or a chain nobody should build).
MAX_CNAME_CHAIN = 8


# --------------------------------------------------------------------------- pure: lookup


@dataclass(frozen=True)
class Lookup:
    """What the zones say about one question.

    ``rcode`` is ``NOERROR`` (with records in ``answer``, or none: NODATA), ``NXDOMAIN`` (the
    name does not exist), or ``REFUSED`` (no lab zone holds the name). ``authority`` carries the
    zone's SOA on negative answers, so a resolver knows how long to remember them (RFC 2308).
    """

    rcode: str
    answer: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()
    zone: str | None = None  #: origin of the zone that answered

    @property
    def authoritative(self) -> bool:
        return self.zone is not None


def _negative_soa(zone: Zone) -> Record:
    """The zone's SOA with the TTL of a negative answer: min(SOA TTL, SOA MINIMUM) (RFC 2308 §3)."""
    soa = zone.soa
    minimum = int(soa.value.split()[6])
    return soa.with_ttl(min(soa.ttl, minimum))


def lookup(zones: Iterable[Zone], name: str, rtype: str) -> Lookup:
    """Answer "what are the ``rtype`` records of ``name``?" from ``zones``, as an authority would.

    - records found: NOERROR with them;
    - the name is an alias (CNAME) and another type was asked: the CNAME, then the same
      question for its target, as long as the target is in a lab zone (RFC 1034 §4.3.2);
    - the name exists with other types only: NOERROR and no answer ("NODATA"), SOA in authority;
    - the name does not exist: NXDOMAIN, SOA in authority;
    - no lab zone holds the name: REFUSED (this server does not recurse). Kept on purpose: the
      lab cannot know the internet's answer, and an invented NXDOMAIN would be a false fact. A
      check that asks about such a name gets no answer (SPF: ``temperror``; chapter 10).

    ``rtype`` ``ANY`` returns every record at the name.
    """
    zones = list(zones)
    name = name.rstrip(".").lower() or "."
    rtype = rtype.upper()
    zone = find_zone(zones, name)
    if zone is None:
        return Lookup("REFUSED")
    first = zone.origin
    answer: list[Record] = []
    seen: set[str] = set()
    while True:
        found = zone.find(name) if rtype == "ANY" else zone.find(name, rtype)
        if found:
            return Lookup("NOERROR", tuple(answer + found), (), first)
        alias = zone.find(name, "CNAME") if rtype not in ("CNAME", "ANY") else []
        if not alias:
            rcode = "NOERROR" if zone.has_name(name) else "NXDOMAIN"
            return Lookup(rcode, tuple(answer), (_negative_soa(zone),), first)
        answer += alias
        seen.add(name)
        target = alias[0].value
        next_zone = find_zone(zones, target)
        if next_zone is None or target in seen or len(seen) >= MAX_CNAME_CHAIN:
            # the target is elsewhere (the client follows it), or the chain loops
            return Lookup("NOERROR", tuple(answer), (), first)
        zone, name = next_zone, target


# --------------------------------------------------------------------------- pure: messages


class Query(NamedTuple):
    """One query the server saw, as kept in :attr:`DNSServer.queries` (for teaching and tests)."""

    transport: str  #: ``udp`` or ``tcp``
    client: str  #: ``address:port`` of the asker
    name: str  #: the name asked, without the final dot (``?`` when unreadable)
    type: str  #: the type asked (``MX``, ``A``...)
    rcode: str  #: what the server answered (``NOERROR``, ``NXDOMAIN``, ``FORMERR``, ``TC``...)


def _rrsets(records: Iterable[Record]) -> list[dns.rrset.RRset]:
    """Group records into RRsets; an RRset has one TTL, the smallest of its records (RFC 2181 §5.2)."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.name, r.type), []).append(r)
    out = []
    for (name, rtype), recs in groups.items():
        rrset = dns.rrset.RRset(dns.name.from_text(name, origin=dns.name.root), dns.rdataclass.IN,
                                dns.rdatatype.from_text(rtype))
        ttl = min(r.ttl for r in recs)
        for r in recs:
            rrset.add(r.rdata(), ttl)
        out.append(rrset)
    return out


def _error_reply(wire: bytes, rcode: int) -> bytes | None:
    """A bare reply with ``rcode`` to a message too broken to parse; only its ID is echoed."""
    if len(wire) < 12:
        return None  # not even a header: nothing to answer to
    msg = dns.message.Message(id=int.from_bytes(wire[:2], "big"))
    msg.flags = dns.flags.QR | (int.from_bytes(wire[2:4], "big") & dns.flags.RD)
    msg.set_opcode(dns.opcode.from_flags(int.from_bytes(wire[2:4], "big")))
    msg.set_rcode(rcode)
    return msg.to_wire()


def udp_limit(query: dns.message.Message) -> int:
    """How large a UDP reply may be: 512 octets, or the payload the client offered with EDNS (RFC 6891)."""
    if query.edns >= 0:
        return max(UDP_CLASSIC_MAX, min(query.payload, 65535))
    return UDP_CLASSIC_MAX


def respond(zones: Iterable[Zone], wire: bytes, transport: str = "udp") -> tuple[bytes | None, tuple[str, str, str]]:
    """The reply to the query ``wire`` (bytes as received), or None when no reply should be sent.

    Returns ``(reply, (name, type, rcode))``; the second part describes the exchange for the
    server's query log. Never raises: garbage gets FORMERR when it has a header to answer to,
    and is dropped otherwise; so are messages that are themselves replies (answering them
    could start a loop between two servers).

    Over UDP a reply larger than :func:`udp_limit` is sent with the TC ("truncated") flag and
    no records: the client then asks again over TCP (RFC 7766), where up to 65535 octets fit.
    """
    try:
        query = dns.message.from_wire(wire)
    except Exception as exc:  # anything from_wire raises means the bytes are not a DNS query
        if isinstance(exc, dns.message.ShortHeader) or (len(wire) >= 3 and wire[2] & 0x80):
            return None, ("?", "?", "dropped")
        if (wire[2] >> 3) & 0xF != dns.opcode.QUERY:  # e.g. an UPDATE, whose sections differ
            return _error_reply(wire, dns.rcode.NOTIMP), ("?", "?", "NOTIMP")
        return _error_reply(wire, dns.rcode.FORMERR), ("?", "?", "FORMERR")
    if query.flags & dns.flags.QR:
        return None, ("?", "?", "dropped")
    try:
        return _respond_to(zones, query, transport)
    except Exception:  # a bug must not stop the server: the asker is told SERVFAIL (RFC 1035 §4.1.1)
        return _reply_with(query, dns.rcode.SERVFAIL), ("?", "?", "SERVFAIL")


def _respond_to(zones: Iterable[Zone], query: dns.message.Message, transport: str) -> tuple[bytes, tuple[str, str, str]]:
    """:func:`respond` for a query that parsed."""
    if query.opcode() != dns.opcode.QUERY:
        return _reply_with(query, dns.rcode.NOTIMP), ("?", "?", "NOTIMP")
    if len(query.question) != 1:
        return _reply_with(query, dns.rcode.FORMERR), ("?", "?", "FORMERR")
    question = query.question[0]
    name = question.name.to_text(omit_final_dot=True).lower() or "."
    rtype = dns.rdatatype.to_text(question.rdtype)
    if question.rdclass != dns.rdataclass.IN or rtype in ("AXFR", "IXFR"):
        # only the Internet class; zone transfers are not offered
        return _reply_with(query, dns.rcode.REFUSED), (name, rtype, "REFUSED")
    zones = list(zones)
    try:
        result = lookup(zones, name, rtype)
    except ConfigError:
        # a name no zone could hold (e.g. a label our zones would reject): it does not exist
        zone = find_zone(zones, name)
        result = Lookup("NXDOMAIN", (), (_negative_soa(zone),), zone.origin) if zone else Lookup("REFUSED")
    response = dns.message.make_response(query, our_payload=OUR_EDNS_PAYLOAD)
    if result.authoritative:
        response.flags |= dns.flags.AA
    response.set_rcode(dns.rcode.from_text(result.rcode))
    response.answer = _rrsets(result.answer)
    response.authority = _rrsets(result.authority)
    limit = udp_limit(query) if transport == "udp" else 65535
    try:
        return response.to_wire(max_size=limit), (name, rtype, result.rcode)
    except dns.exception.TooBig:
        response.answer, response.authority, response.additional = [], [], []
        if transport == "udp":
            response.flags |= dns.flags.TC
            return response.to_wire(), (name, rtype, "TC")
        response.set_rcode(dns.rcode.SERVFAIL)
        return response.to_wire(), (name, rtype, "SERVFAIL")


def _reply_with(query: dns.message.Message, rcode: int) -> bytes:
    response = dns.message.make_response(query, our_payload=OUR_EDNS_PAYLOAD)
    response.set_rcode(rcode)
    return response.to_wire()


# --------------------------------------------------------------------------- the server


class _UDPProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: "DNSServer"):
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        reply = self.server._answer(data, "udp", addr)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # an ICMP "port unreachable" for an earlier reply: the asker has gone; nothing to do
        return None


class DNSServer:
    """An authoritative DNS server for ``zones``, on UDP and TCP at the same ``host`` and ``port``.

    Start it with ``server = await DNSServer.start(zones)`` on a running event loop (or use
    :func:`serve` from synchronous code), stop it with ``await server.close()`` (safe to call
    twice). Zones are read live: a record added to one of them is served at once.

    ``queries`` lists every query seen, oldest first, as :class:`Query` tuples (the last
    :attr:`MAX_LOG` are kept): ``("udp", "127.0.20.25:40112", "inbox.example.org", "MX",
    "NOERROR")`` shows that the sending MTA asked for the MX, and what it got.
    """

    #: how many entries of :attr:`queries` are kept
    MAX_LOG = 10_000

    def __init__(self, zones: Zone | Iterable[Zone], host: str, tcp_timeout: float):
        self.zones: list[Zone] = [zones] if isinstance(zones, Zone) else list(zones)
        for i, z in enumerate(self.zones):
            if not isinstance(z, Zone):
                raise ConfigError(f"zones[{i}]", f"is a {type(z).__name__}, not a labkit.core.dns.Zone",
                                  "build zones with labkit.core.dns.Zone or labkit.core.dns.lab_zones(world)")
        self.host = host
        self.port = 0
        self.tcp_timeout = tcp_timeout
        self.queries: list[Query] = []
        #: keep the replies to in-process queries while the zones are unchanged
        self.keep_replies = True
        self._replies: dict[bytes, tuple[tuple[int, ...], bytes | None, tuple[str, str, str]]] = {}
        self._tcp: asyncio.AbstractServer | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._connections: set[asyncio.Task] = set()
        self._closed = False

    def __repr__(self) -> str:
        state = "closed" if self._closed else "serving"
        return f"<DNSServer {self.host}:{self.port} {state}: {', '.join(z.origin for z in self.zones)}>"

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    @classmethod
    async def start(cls, zones: Zone | Iterable[Zone], host: str = "127.0.0.1", port: int = 0, *,
                    tcp_timeout: float = 10.0, attempts: int = 5) -> "DNSServer":
        """Bind TCP and UDP on ``host``:``port`` and start answering; return the server.

        With ``port=0`` the system picks a free TCP port and UDP binds the same number; if
        another program holds that UDP port, both are released and the pair is tried again, up
        to ``attempts`` times. A TCP connection idle for ``tcp_timeout`` seconds is closed.
        Raises :class:`labkit.errors.BindError` if the address cannot be bound (nothing is left
        open then).
        """
        server = cls(zones, host, tcp_timeout)
        try:
            await server._bind(port, attempts if port == 0 else 1)
        except BaseException:
            await server.close()
            raise
        return server

    async def _bind(self, port: int, attempts: int) -> None:
        loop = asyncio.get_running_loop()
        last: OSError | None = None
        for _ in range(max(1, attempts)):
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, self.host, port)
            except OSError as exc:
                raise BindError(f"DNS server: cannot bind TCP {self.host}:{port}: {exc.strerror or exc}. "
                                "Use port=0 for a free port, or a loopback address this system has "
                                "(127.0.0.1 works everywhere)") from exc
            self.port = self._tcp.sockets[0].getsockname()[1]
            try:
                self._udp, _ = await loop.create_datagram_endpoint(lambda: _UDPProtocol(self),
                                                                   local_addr=(self.host, self.port))
                return
            except OSError as exc:
                last = exc
                self._tcp.close()
                await self._tcp.wait_closed()
                self._tcp = None
                if exc.errno != errno.EADDRINUSE:
                    break
        raise BindError(f"DNS server: cannot bind UDP {self.host}:{self.port}: "
                        f"{(last.strerror if last else None) or last}. "
                        "Another program holds that UDP port; use port=0 (a free pair is then searched)") from last

    async def close(self) -> None:
        """Stop listening and close open TCP connections. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._tcp is not None:
            await self._tcp.wait_closed()
        # let the UDP transport's close callbacks run before the loop may stop
        await asyncio.sleep(0)

    # -- transports

    def _answer(self, wire: bytes, transport: str, peer: object) -> bytes | None:
        reply, (name, rtype, rcode) = respond(self.zones, wire, transport)
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer)
        self.queries.append(Query(transport, client, name, rtype, rcode))
        if len(self.queries) > self.MAX_LOG:
            del self.queries[: len(self.queries) - self.MAX_LOG]
        return reply

    def answer_in_process(self, wire: bytes) -> bytes | None:
        """The reply to ``wire`` for a client in this process (:func:`in_process_resolver`):
        the same answer and the same query log as over a socket, without the round trip."""
        # the provider asks the same questions about each message from one sender: a reply is
        # kept while no zone changes (each change bumps its SOA serial), the ID set per query
        state = tuple(z.serial for z in self.zones)
        kept = self._replies.get(wire[2:]) if self.keep_replies else None
        if kept is not None and kept[0] == state:
            reply, (name, rtype, rcode) = (wire[:2] + kept[1][2:] if kept[1] else None), kept[2]
        else:
            reply, (name, rtype, rcode) = respond(self.zones, wire, "tcp")
            if len(self._replies) >= 512:
                self._replies.clear()
            self._replies[wire[2:]] = (state, reply, (name, rtype, rcode))
        self.queries.append(Query("local", "in-process", name, rtype, rcode))
        if len(self.queries) > self.MAX_LOG:
            del self.queries[: len(self.queries) - self.MAX_LOG]
        return reply

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One TCP connection: length-prefixed queries, as many as the client sends (RFC 7766 §6.2.1)."""
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        peer = writer.get_extra_info("peername")
        try:
            while not self._closed:
                try:
                    size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), self.tcp_timeout), "big")
                    wire = await asyncio.wait_for(reader.readexactly(size), self.tcp_timeout)
                except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break  # idle too long, or the client closed: end the connection
                reply = self._answer(wire, "tcp", peer)
                if reply is None:
                    break  # not a query: a stream cannot be resynchronised, so hang up
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except ConnectionError:
            pass  # the client went away while we wrote; the connection is closed below
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass  # already reset by the peer: it is closed either way
            if task is not None:
                self._connections.discard(task)


class _InProcess(dns.nameserver.Nameserver):
    """A dnspython nameserver that is a :class:`DNSServer` of this process, asked by a call."""

    def __init__(self, server: DNSServer):
        super().__init__()
        self.server = server

    def __str__(self) -> str:
        return f"Do53:{self.server.host}@{self.server.port}"  # as the same server over UDP says it

    def kind(self) -> str:
        return "Do53"

    def is_always_max_size(self) -> bool:
        return False

    def answer_nameserver(self) -> str:
        return self.server.host

    def answer_port(self) -> int:
        return self.server.port

    def query(self, request: dns.message.QueryMessage, timeout: float, source: str | None, source_port: int,
              max_size: bool, one_rr_per_rrset: bool = False, ignore_trailing: bool = False) -> dns.message.Message:
        reply = self.server.answer_in_process(request.to_wire())
        if reply is None:
            raise dns.exception.FormError("the lab DNS dropped the query")
        return dns.message.from_wire(reply, one_rr_per_rrset=one_rr_per_rrset, ignore_trailing=ignore_trailing)

    async def async_query(self, request, timeout, source, source_port, max_size, backend,  # type: ignore[no-untyped-def]
                          one_rr_per_rrset=False, ignore_trailing=False):
        return self.query(request, timeout, source, source_port, max_size, one_rr_per_rrset, ignore_trailing)


def in_process_resolver(server: DNSServer):
    """A resolver like :func:`labkit.core.dns.make_resolver` for ``server``, for the lab's own
    servers in the same process: the question is answered by a call instead of a datagram (the
    provider asks about ten questions per message). Answers, errors and the query log
    (transport ``local``) are those of the server."""
    from ..core.dns import make_resolver

    resolver = make_resolver(server.host, server.port)
    resolver.nameservers = [_InProcess(server)]
    return resolver


@contextmanager
def serve(zones: Zone | Iterable[Zone], host: str = "127.0.0.1", port: int = 0, **options) -> Iterator[DNSServer]:
    """Run a :class:`DNSServer` on its own event-loop thread for the ``with`` block; yield it.

    For scripts and tests without an event loop of their own::

        with serve(lab_zones(default_world()), "127.0.10.53") as server:
            subprocess.run(["dig", f"@{server.host}", "-p", str(server.port), "mx", "inbox.example.org"])
    """
    loop = LoopThread(name="labkit-dns")
    loop.start()
    server: DNSServer | None = None
    try:
        server = loop.run(DNSServer.start(zones, host, port, **options))
        yield server
    finally:
        try:
            if server is not None:
                loop.run(server.close())
        finally:
            loop.stop()
