"""The lab DNS server over real sockets: dnspython, the lab resolver, and the real dig and nslookup."""
from __future__ import annotations

import asyncio
import socket
import subprocess
import time

import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.resolver
import pytest
from conftest import require_tool

from labkit.core.dns import (
    DNSLookupError,
    NullMXError,
    Zone,
    addresses,
    find_zone,
    lab_zones,
    make_resolver,
    mx_hosts,
    split_txt,
    txt_records,
    use_resolver,
)
from labkit.net.dnsserver import DNSServer, respond, serve
from labkit.errors import BindError, ConfigError
from labkit.core.world import default_world, distinct_loopback_available

#: five TXT records of 150 characters: 750+ octets, more than a classic 512-octet UDP reply
BIG_TXT = [f"record {i}: " + "x" * 139 for i in range(5)]
#: one TXT record longer than dig's 1232-octet EDNS buffer
HUGE_TXT = "v=DKIM1; k=rsa; p=" + "A" * 1500


@pytest.fixture
def zones():
    return lab_zones(default_world())


@pytest.fixture
def server(zones):
    with serve(zones, "127.0.0.1") as s:
        yield s


def zone(zones, name) -> Zone:
    return find_zone(zones, name)


def ask(server, name, rtype, tcp=False, **query_options) -> dns.message.Message:
    query = dns.message.make_query(name, rtype, **query_options)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, server.host, port=server.port, timeout=2)


def answers(response) -> list[str]:
    return [rd.to_text() for rrset in response.answer for rd in rrset]


# --------------------------------------------------------------------------- answers

@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("name, rtype, expected", [
    ("mail.example.com", "A", ["127.0.20.25"]),
    ("inbox.example.org", "MX", ["10 mx.inbox.example.org."]),
    ("example.com", "MX", ["10 mail.example.com."]),
    ("25.40.0.127.in-addr.arpa", "PTR", ["mx.inbox.example.org."]),
    ("example.com", "NS", ["ns.lab.test."]),
    ("MX.Inbox.Example.ORG", "A", ["127.0.40.25"]),  # names are case-insensitive
])
def test_authoritative_answers(server, name, rtype, expected, tcp):
    response = ask(server, name, rtype, tcp=tcp)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert not response.flags & dns.flags.RA  # not a recursive resolver
    assert answers(response) == expected


def test_txt_and_cname(server, zones):
    zone(zones, "example.com").add("example.com", "TXT", 'v=spf1 ip4:127.0.20.0/24 "quoted" -all')
    zone(zones, "example.com").add("www.example.com", "CNAME", "mx.inbox.example.org")
    response = ask(server, "example.com", "TXT")
    assert answers(response) == ['"v=spf1 ip4:127.0.20.0/24 \\"quoted\\" -all"']
    response = ask(server, "www.example.com", "A")
    # the alias, then the address of its target (in another lab zone): the CNAME is chased
    assert [(str(r.name), r.rdtype) for r in response.answer] == [
        ("www.example.com.", dns.rdatatype.CNAME), ("mx.inbox.example.org.", dns.rdatatype.A)]
    assert answers(response) == ["mx.inbox.example.org.", "127.0.40.25"]


def test_nxdomain_nodata_refused(server):
    response = ask(server, "nobody.example.com", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert response.answer == []
    (soa,) = response.authority
    assert soa.rdtype == dns.rdatatype.SOA and str(soa.name) == "example.com."

    response = ask(server, "mail.example.com", "MX")  # the name exists, without MX
    assert response.rcode() == dns.rcode.NOERROR
    assert response.answer == []
    assert [r.rdtype for r in response.authority] == [dns.rdatatype.SOA]

    for outside in ("example.net", "google.com", "example.org"):
        response = ask(server, outside, "A")
        assert response.rcode() == dns.rcode.REFUSED, outside
        assert not response.flags & dns.flags.AA


def test_a_record_added_after_start_is_served(server, zones):
    assert ask(server, "_dmarc.example.com", "TXT").rcode() == dns.rcode.NXDOMAIN
    zone(zones, "example.com").replace("_dmarc.example.com", "TXT", "v=DMARC1; p=none")
    assert answers(ask(server, "_dmarc.example.com", "TXT")) == ['"v=DMARC1; p=none"']


def test_queries_are_recorded(server):
    ask(server, "inbox.example.org", "MX")
    ask(server, "mx.inbox.example.org", "A", tcp=True)
    assert [(q.transport, q.name, q.type, q.rcode) for q in server.queries] == [
        ("udp", "inbox.example.org", "MX", "NOERROR"), ("tcp", "mx.inbox.example.org", "A", "NOERROR")]
    assert server.queries[0].client.startswith("127.0.0.1:")


# --------------------------------------------------------------------------- truncation

def test_truncation_over_udp_then_tcp(server, zones):
    zone(zones, "example.com").replace("big.example.com", "TXT", BIG_TXT)
    udp = ask(server, "big.example.com", "TXT")
    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    tcp = ask(server, "big.example.com", "TXT", tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert sorted(answers(tcp)) == sorted(f'"{t}"' for t in BIG_TXT)
    # a client offering a larger EDNS buffer gets it all over UDP
    edns = ask(server, "big.example.com", "TXT", use_edns=0, payload=4096)
    assert not edns.flags & dns.flags.TC and len(edns.answer[0]) == 5
    # and the resolver retries over TCP by itself
    resolver = make_resolver(server.host, server.port)
    assert sorted(txt_records(resolver, "big.example.com")) == sorted(BIG_TXT)
    assert [q.rcode for q in server.queries if q.name == "big.example.com"][:2] == ["TC", "NOERROR"]


def test_pure_respond_truncates():
    zone = Zone("example.com")
    zone.replace("big.example.com", "TXT", BIG_TXT)
    wire = dns.message.make_query("big.example.com", "TXT").to_wire()
    udp, (_, _, rcode) = respond([zone], wire, "udp")
    assert rcode == "TC" and len(udp) <= 512
    tcp, (_, _, rcode) = respond([zone], wire, "tcp")
    assert rcode == "NOERROR" and len(tcp) > 512


# --------------------------------------------------------------------------- bad input and TCP

def _query(name="mail.example.com", rtype="A", rdclass="IN", opcode=None, qr=False) -> bytes:
    message = dns.message.make_query(name, rtype, rdclass)
    if opcode is not None:
        message.set_opcode(opcode)
    if qr:
        message.flags |= dns.flags.QR
    return message.to_wire()


@pytest.mark.parametrize("wire, outcome", [
    (b"", "dropped"),
    (b"\x00\x01\x02", "dropped"),
    (_query(qr=True), "dropped"),  # a reply, not a query: never answered (no loops)
    (b"\xab\xcd\x01\x00\x00\x02" + b"\x00" * 6, "FORMERR"),  # announces 2 questions, has none
    (_query(opcode=dns.opcode.UPDATE), "NOTIMP"),
    (_query(rdclass="CH", name="version.bind", rtype="TXT"), "REFUSED"),
    (_query(name="example.com", rtype="AXFR"), "REFUSED"),  # no zone transfers
    (_query(name="a\\000b.example.com"), "NXDOMAIN"),  # a NUL inside a label: no such name
], ids=["empty", "three-bytes", "a-reply", "two-questions-none-there", "update", "version.bind",
        "axfr", "nul-in-label"])  # fixed ids: the queries carry random message ids
def test_pure_respond_to_odd_messages(zones, wire, outcome):
    reply, (_, _, rcode) = respond(zones, wire, "udp")
    assert rcode == outcome
    if outcome == "dropped":
        assert reply is None
    else:
        assert dns.message.from_wire(reply).rcode() == dns.rcode.from_text(outcome)


def test_garbage_then_a_valid_query(server):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(b"\x00\x01garbage", (server.host, server.port))  # shorter than a header: dropped
        # a header announcing one question that is not there: FORMERR, same ID
        s.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03ab", (server.host, server.port))
        reply = dns.message.from_wire(s.recv(512))
        assert reply.id == 0x1234 and reply.rcode() == dns.rcode.FORMERR
        s.sendto(bytes(range(256)) * 3, (server.host, server.port))
    with socket.create_connection((server.host, server.port), timeout=2) as s:
        s.sendall(b"\x00\x05hello")  # framed garbage over TCP
        s.recv(512)
    assert answers(ask(server, "mail.example.com", "A")) == ["127.0.20.25"]
    assert answers(ask(server, "mail.example.com", "A", tcp=True)) == ["127.0.20.25"]


def test_several_queries_on_one_tcp_connection(server):
    with socket.create_connection((server.host, server.port), timeout=2) as s:
        for name, expected in [("mail.example.com", "127.0.20.25"), ("ns.lab.test", "127.0.10.53"),
                               ("pc.example.com", "127.0.20.100")]:
            dns.query.send_tcp(s, dns.message.make_query(name, "A"), None)
            response, _ = dns.query.receive_tcp(s, time.time() + 2)
            assert answers(response) == [expected]


def test_idle_tcp_connection_is_closed(zones):
    with serve(zones, "127.0.0.1", tcp_timeout=0.2) as server:
        with socket.create_connection((server.host, server.port), timeout=3) as s:
            started = time.monotonic()
            assert s.recv(10) == b""  # the server hung up
            assert time.monotonic() - started < 2.5


# --------------------------------------------------------------------------- lifecycle

def test_two_servers_at_once_and_close_twice(zones):
    other = [Zone("example.com", nameserver="ns.lab.test")]
    other[0].add("mail.example.com", "A", "127.0.0.99")

    async def main():
        a = await DNSServer.start(zones, "127.0.0.1")
        try:
            b = await DNSServer.start(other, "127.0.0.1")
            try:
                assert a.port != b.port
                loop = asyncio.get_running_loop()
                got = await asyncio.gather(*(loop.run_in_executor(None, ask, s, "mail.example.com", "A")
                                             for s in (a, b)))
                assert [answers(r) for r in got] == [["127.0.20.25"], ["127.0.0.99"]]
            finally:
                await b.close()
                await b.close()  # idempotent
        finally:
            await a.close()
        await a.close()

    asyncio.run(main())


def test_bind_error_leaves_nothing_open(zones):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        with pytest.raises(BindError, match="UDP"):
            with serve(zones, "127.0.0.1", port):
                pass
    # the TCP side was released
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as again:
        again.bind(("127.0.0.1", port))


def test_zones_must_be_zones():
    with pytest.raises(ConfigError, match="zones"):
        DNSServer(["example.com"], "127.0.0.1", 1.0)


# --------------------------------------------------------------------------- the lab resolver

def test_resolver_helpers(server, zones):
    resolver = make_resolver(server.host, server.port)
    assert mx_hosts(resolver, "inbox.example.org") == [(10, "mx.inbox.example.org")]
    assert addresses(resolver, "mx.inbox.example.org") == ["127.0.40.25"]
    example = zone(zones, "example.com")
    example.add("example.com", "MX", "5 first.example.com")
    assert mx_hosts(resolver, "example.com") == [(5, "first.example.com"), (10, "mail.example.com")]
    # no MX but an address: the host itself is the implicit MX (RFC 5321 §5.1)
    example.add("v6.example.com", "AAAA", "2001:db8::25")
    assert mx_hosts(resolver, "pc.example.com") == [(0, "pc.example.com")]
    assert addresses(resolver, "v6.example.com") == ["2001:db8::25"]
    # a null MX: the domain takes no mail (RFC 7505)
    example.replace("nomail.example.com", "MX", "0 .")
    with pytest.raises(NullMXError, match="RFC 7505"):
        mx_hosts(resolver, "nomail.example.com")


def test_the_relay_queue_finds_mail_hosts_with_the_same_lookup(server, zones):
    from labkit.net.smtp.queue import DestinationError, Target, resolve_targets

    resolver = make_resolver(server.host, server.port)
    assert resolve_targets(resolver, "inbox.example.org") == [Target("mx.inbox.example.org", "127.0.40.25")]
    example = zone(zones, "example.com")
    # the implicit MX, as mx_hosts says
    assert [t.name for t in resolve_targets(resolver, "pc.example.com")] == ["pc.example.com"]
    example.replace("nomail.example.com", "MX", "0 .")
    example.replace("textonly.example.com", "TXT", "no mail here")
    for domain, permanent, status in (("nomail.example.com", True, "5.1.10"),
                                      ("nobody.example.com", True, "5.4.4"),
                                      ("textonly.example.com", False, "4.4.3")):
        with pytest.raises(DestinationError) as info:
            resolve_targets(resolver, domain)
        assert (info.value.permanent, info.value.status) == (permanent, status), domain
    assert resolve_targets(resolver, "[127.0.0.9]") == [Target("[127.0.0.9]", "127.0.0.9")]


@pytest.mark.parametrize("call, name, outcome", [
    (addresses, "nobody.example.com", "NXDOMAIN"),
    (mx_hosts, "nobody.example.com", "NXDOMAIN"),
    (addresses, "google.com", "REFUSED"),
    (txt_records, "mail.example.com", "NODATA"),
    (mx_hosts, "_dmarc.example.com", "NXDOMAIN"),
])
def test_resolver_errors_say_what_and_where(server, call, name, outcome):
    resolver = make_resolver(server.host, server.port)
    with pytest.raises(DNSLookupError) as info:
        call(resolver, name)
    err = info.value
    assert err.outcome == outcome and err.name == name
    assert f"{server.host}:{server.port}" in str(err)


def test_resolver_timeout_is_a_lab_error():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # listens, never answers
        silent.bind(("127.0.0.1", 0))
        resolver = make_resolver("127.0.0.1", silent.getsockname()[1], timeout=0.2, lifetime=0.5)
        with pytest.raises(DNSLookupError, match="timeout") as info:
            addresses(resolver, "mail.example.com")
    assert "labkit status" in str(info.value)


def test_use_resolver_sets_and_restores_the_default(server):
    before = dns.resolver.default_resolver
    resolver = make_resolver(server.host, server.port)
    with use_resolver(resolver):
        assert dns.resolver.get_default_resolver() is resolver
        answer = dns.resolver.resolve("inbox.example.org", "MX")
        assert [r.to_text() for r in answer] == ["10 mx.inbox.example.org."]
    assert dns.resolver.default_resolver is before


@pytest.mark.parametrize("host, port", [("ns.lab.test", 53), ("127.0.0.1", 0), ("127.0.0.1", 70000)])
def test_make_resolver_checks_its_input(host, port):
    with pytest.raises(ConfigError):
        make_resolver(host, port)


# --------------------------------------------------------------------------- the real tools

@pytest.fixture
def ns_server(zones):
    """The server on the lab's own ns address, 127.0.10.53 (all of 127/8 is loopback on Linux)."""
    if not distinct_loopback_available():
        pytest.skip("this system has only 127.0.0.1 on loopback")
    host = default_world().host("ns").address
    with serve(zones, host) as s:
        yield s


def run(*args) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_dig_mx(ns_server):
    dig = require_tool("dig")
    assert ns_server.host == "127.0.10.53"
    out = run(dig, f"@{ns_server.host}", "-p", str(ns_server.port), "mx", "inbox.example.org", "+short")
    assert out.split("\n")[0] == "10 mx.inbox.example.org."
    out = run(dig, f"@{ns_server.host}", "-p", str(ns_server.port), "-x", "127.0.40.25", "+short")
    assert out.strip() == "mx.inbox.example.org."
    out = run(dig, f"@{ns_server.host}", "-p", str(ns_server.port), "+tcp", "a", "ns.lab.test", "+short")
    assert out.strip() == "127.0.10.53"


def test_dig_falls_back_to_tcp_for_a_huge_txt(ns_server, zones):
    dig = require_tool("dig")
    zone(zones, "example.com").add("mail._domainkey.example.com", "TXT", HUGE_TXT)
    out = run(dig, f"@{ns_server.host}", "-p", str(ns_server.port), "txt", "mail._domainkey.example.com", "+short")
    strings = out.strip().removeprefix('"').removesuffix('"').split('" "')
    assert strings == split_txt(HUGE_TXT)
    assert [q.transport for q in ns_server.queries] == ["udp", "tcp"]


def test_dig_status_lines(server):
    dig = require_tool("dig")
    out = run(dig, f"@{server.host}", "-p", str(server.port), "a", "nobody.example.com")
    assert "status: NXDOMAIN" in out and "flags: qr aa" in out
    out = run(dig, f"@{server.host}", "-p", str(server.port), "a", "example.net")
    assert "status: REFUSED" in out


def test_nslookup_txt(ns_server, zones):
    nslookup = require_tool("nslookup")
    spf = "v=spf1 +ip4:127.0.20.0/24 +a:mail.isp.example.net -all"
    zone(zones, "example.com").replace("example.com", "TXT", spf)
    out = run(nslookup, f"-port={ns_server.port}", "-type=TXT", "example.com", ns_server.host)
    assert f'text = "{spf}"' in out


def test_in_process_resolver_gives_the_servers_answers_and_log():
    from labkit.core.dns import lab_zones, mx_hosts, txt_records
    from labkit.core.dns.resolver import DNSLookupError
    from labkit.core.world import default_world
    from labkit.net.dnsserver import in_process_resolver, serve

    with serve(lab_zones(default_world())) as server:
        resolver = in_process_resolver(server)
        assert mx_hosts(resolver, "inbox.example.org") == [(10, "mx.inbox.example.org")]
        with pytest.raises(DNSLookupError) as refused:
            txt_records(resolver, "example.net")
        assert refused.value.outcome == "REFUSED"
        assert [(q.transport, q.name, q.type, q.rcode) for q in server.queries] == [
            ("local", "inbox.example.org", "MX", "NOERROR"), ("local", "example.net", "TXT", "REFUSED")]
        # a reply is kept while the zones stay as they are, and never after a change
        zone = next(z for z in server.zones if z.origin == "example.com")
        zone.add("kept.example.com", "TXT", "first")
        assert txt_records(resolver, "kept.example.com") == txt_records(resolver, "kept.example.com") == ["first"]
        zone.add("kept.example.com", "TXT", "second")
        assert sorted(txt_records(resolver, "kept.example.com")) == ["first", "second"]
        zone.remove("kept.example.com", "TXT", "first")
        assert txt_records(resolver, "kept.example.com") == ["second"]
        assert len(server.queries) == 6
