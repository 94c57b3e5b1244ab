"""Unit tests of the pure DNS zone model: no sockets."""
from __future__ import annotations

import base64
import threading

import dns.name
import dns.rdatatype
import dns.zone
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from labkit.core.dns import (
    Record,
    TableRow,
    Zone,
    find_zone,
    join_txt,
    lab_zones,
    normalize_name,
    relative_name,
    split_txt,
)
from labkit.net.dnsserver import lookup
from labkit.errors import ConfigError
from labkit.core.world import default_world


def octets(strings):
    return [len(s.encode("utf-8")) for s in strings]


# --------------------------------------------------------------------------- split_txt

@pytest.mark.parametrize("text, sizes", [
    ("", [0]),
    ("a", [1]),
    ("a" * 255, [255]),
    ("a" * 256, [255, 1]),
    ("a" * 510, [255, 255]),
    ("a" * 511, [255, 255, 1]),
    # a 2-octet character must not be cut: 254 + 2 would make 256
    ("a" * 254 + "é", [254, 2]),
    ("a" * 253 + "é", [255]),
    # 3-octet characters: 85 fit exactly (255 octets)
    ("あ" * 85, [255]),
    ("あ" * 86, [255, 3]),
    # a 4-octet character straddling the boundary moves whole to the next string
    ("a" * 252 + "😀", [252, 4]),
])
def test_split_txt_sizes(text, sizes):
    parts = split_txt(text)
    assert octets(parts) == sizes
    assert "".join(parts) == text
    assert all(n <= 255 for n in octets(parts))


def dkim_value_2048() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode("ascii")


def test_dkim_2048_value_splits_and_rejoins():
    value = dkim_value_2048()
    assert len(value) > 255  # the reason splitting exists
    parts = split_txt(value)
    assert len(parts) == 2 and octets(parts)[0] == 255
    assert join_txt(parts) == value
    record = Record("mail._domainkey.example.com", "TXT", value)
    assert record.value == value  # stored whole, split only on the wire
    assert [s.decode() for s in record.rdata().strings] == parts
    # through zone-file text and back
    zone = Zone("example.com")
    zone.add("mail._domainkey.example.com", "TXT", value)
    parsed = dns.zone.from_text(zone.to_text(), origin=None, relativize=False)
    rdataset = parsed.find_rdataset("mail._domainkey.example.com.", "TXT")
    assert join_txt(next(iter(rdataset)).strings) == value


# --------------------------------------------------------------------------- records and names

@pytest.mark.parametrize("given, stored", [
    ("Mail.Example.COM.", "mail.example.com"),
    ("mail.example.com", "mail.example.com"),
    ("_dmarc.example.com.", "_dmarc.example.com"),
    (".", "."),
])
def test_names_are_normalised(given, stored):
    assert normalize_name(given) == stored


@pytest.mark.parametrize("rtype, value, stored", [
    ("A", "127.0.20.25", "127.0.20.25"),
    ("AAAA", "2001:DB8::25", "2001:db8::25"),
    ("MX", "10 Mail.Example.com.", "10 mail.example.com"),
    ("MX", "0 .", "0 ."),  # RFC 7505 null MX
    ("NS", "ns.lab.test.", "ns.lab.test"),
    ("CNAME", "mail.example.com", "mail.example.com"),
    ("PTR", "mail.example.com", "mail.example.com"),
    ("TXT", 'v=spf1 ip4:127.0.20.0/24 -all', 'v=spf1 ip4:127.0.20.0/24 -all'),
    ("txt", 'say "hi" \\ there', 'say "hi" \\ there'),
    ("SOA", "ns.lab.test. hostmaster.example.com. 7 3600 600 86400 300",
     "ns.lab.test hostmaster.example.com 7 3600 600 86400 300"),
])
def test_record_values_are_normalised(rtype, value, stored):
    r = Record("x.example.com.", rtype, value)
    assert (r.name, r.type, r.value, r.ttl) == ("x.example.com", rtype.upper(), stored, 300)


def test_records_equal_by_name_type_value():
    assert Record("A.example.com.", "a", "127.0.0.1", 60) == Record("a.example.com", "A", "127.0.0.1")


LONG_LABEL = "a" * 64
LONG_NAME = ".".join(["abcdefghi"] * 25) + ".example.com"  # 260 octets


@pytest.mark.parametrize("name, rtype, value, field_part, reason_part", [
    ("bad\r.example.com", "A", "127.0.0.1", "name", "CR"),
    ("bad\n.example.com", "A", "127.0.0.1", "name", "LF"),
    ("bad\x00.example.com", "A", "127.0.0.1", "name", "NUL"),
    ("x.example.com", "TXT", "v=spf1\r\n-all", "value", "CR"),
    ("x.example.com", "TXT", "v=spf1\x00", "value", "NUL"),
    ("x.example.com", "MX", "10 mail.example.com\n", "value", "LF"),
    (f"{LONG_LABEL}.example.com", "A", "127.0.0.1", "name", "63"),
    (LONG_NAME, "A", "127.0.0.1", "name", "253"),
    ("x.example.com", "MX", f"10 {LONG_LABEL}.example.com", "value", "63"),
    ("x..example.com", "A", "127.0.0.1", "name", "empty label"),
    ("", "A", "127.0.0.1", "name", "empty"),
    ("x.example.com", "A", "127.0.0.256", "value", "IPv4"),
    ("x.example.com", "A", "mail.example.com", "value", "IPv4"),
    ("x.example.com", "A", "::1", "value", "IPv6 address, not IPv4"),
    ("x.example.com", "AAAA", "2001:db8::zz", "value", "IPv6"),
    ("x.example.com", "AAAA", "127.0.0.1", "value", "IPv4 address, not IPv6"),
    ("x.example.com", "MX", "mail.example.com", "value", "no preference"),
    ("x.example.com", "MX", "70000 mail.example.com", "value", "65535"),
    ("x.example.com", "MX", "10", "value", "not a valid MX"),
    ("x.example.com", "SPF", "v=spf1 -all", "type", "unknown record type"),
    ("x.example.com", "HINFO", "a b", "type", "unknown record type"),
    ("x.example.com", "SOA", "ns.lab.test", "value", "not a valid SOA"),
    ("x.example.com", "NS", "", "value", "empty"),
])
def test_bad_records_raise_config_error(name, rtype, value, field_part, reason_part):
    with pytest.raises(ConfigError) as info:
        Record(name, rtype, value)
    err = info.value
    assert field_part in err.field
    assert reason_part in err.reason
    assert str(err).startswith(err.field)


def test_bad_ttl():
    with pytest.raises(ConfigError, match="ttl"):
        Record("x.example.com", "A", "127.0.0.1", ttl=-1)


def test_record_outside_its_zone_is_refused():
    zone = Zone("example.com")
    with pytest.raises(ConfigError) as info:
        zone.add("mail.example.org", "A", "127.0.0.1")
    assert "outside the zone example.com" in info.value.reason
    assert "mail.example.org" in info.value.field
    with pytest.raises(ConfigError):
        zone.add("notexample.com", "A", "127.0.0.1")  # a suffix match is not enough


def test_cname_cannot_share_a_name():
    zone = Zone("example.com")
    zone.add("www.example.com", "CNAME", "mail.example.com")
    with pytest.raises(ConfigError, match="CNAME"):
        zone.add("www.example.com", "A", "127.0.0.1")
    with pytest.raises(ConfigError, match="CNAME"):
        zone.add("example.com", "CNAME", "mail.example.com")  # the apex has SOA and NS


# --------------------------------------------------------------------------- zones

def test_new_zone_has_soa_and_ns_and_bumps_serial():
    zone = Zone("Example.com.", nameserver="ns.lab.test")
    assert zone.origin == "example.com"
    assert [r.type for r in zone.records()] == ["SOA", "NS"]
    assert zone.soa.value == "ns.lab.test hostmaster.example.com 1 3600 600 86400 300"
    zone.add("example.com", "TXT", "v=spf1 -all")
    assert zone.serial == 2
    zone.add("example.com", "TXT", "v=spf1 -all")  # already there: no change
    assert zone.serial == 2


def test_add_find_remove_replace():
    zone = Zone("example.com")
    zone.add("example.com", "MX", "20 backup.example.com")
    zone.add("example.com.", "MX", "10 mail.example.com")
    assert [r.value for r in zone.find("EXAMPLE.com", "mx")] == ["20 backup.example.com", "10 mail.example.com"]
    assert {r.type for r in zone.find("example.com")} == {"SOA", "NS", "MX"}
    assert zone.remove("example.com", "MX", "20 backup.example.com.") == 1
    assert [r.value for r in zone.find("example.com", "MX")] == ["10 mail.example.com"]
    new = zone.replace("_dmarc.example.com", "TXT", "v=DMARC1; p=none")
    assert new == [Record("_dmarc.example.com", "TXT", "v=DMARC1; p=none")]
    zone.replace("_dmarc.example.com", "TXT", ["v=DMARC1; p=quarantine"])
    assert [r.value for r in zone.find("_dmarc.example.com", "TXT")] == ["v=DMARC1; p=quarantine"]
    zone.replace("_dmarc.example.com", "TXT", [])
    assert zone.find("_dmarc.example.com", "TXT") == []
    assert zone.remove("nothing.example.com") == 0
    with pytest.raises(ConfigError, match="SOA"):
        zone.remove("example.com", "SOA")


def test_replace_with_a_bad_value_changes_nothing():
    zone = Zone("example.com")
    zone.add("mail.example.com", "A", "127.0.20.25")
    serial = zone.serial
    with pytest.raises(ConfigError):
        zone.replace("mail.example.com", "A", ["127.0.20.26", "not-an-address"])
    assert [r.value for r in zone.find("mail.example.com", "A")] == ["127.0.20.25"]
    assert zone.serial == serial


def test_replace_soa():
    zone = Zone("example.com")
    zone.replace("example.com", "SOA", "ns.lab.test hostmaster.example.com 2024010101 3600 600 86400 60")
    assert zone.serial == 2024010101


def test_empty_non_terminal_exists():
    zone = Zone("example.com")
    zone.add("mail._domainkey.example.com", "TXT", "v=DKIM1; p=")
    assert zone.has_name("_domainkey.example.com")
    assert not zone.has_name("nothing.example.com")


def test_one_writer_while_one_reader():
    zone = Zone("example.com")
    stop = threading.Event()
    seen = []

    def reader():
        while not stop.is_set():
            seen.append(len(zone.records()))

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(300):
            zone.replace(f"h{i}.example.com", "A", f"127.0.1.{i % 250}")
    finally:
        stop.set()
        t.join()
    assert len(zone.records()) == 302
    assert seen and all(2 <= n <= 302 for n in seen)


@pytest.mark.parametrize("name, origin, shown", [
    ("example.com", "example.com", "@"),
    ("mail._domainkey.example.com", "example.com", "mail._domainkey"),
    ("mail.example.org", "example.com", "mail.example.org."),
])
def test_relative_name(name, origin, shown):
    assert relative_name(name, origin) == shown


def sample_zone() -> Zone:
    zone = Zone("example.com", nameserver="ns.lab.test")
    zone.add("example.com", "MX", "10 mail.example.com")
    zone.add("mail.example.com", "A", "127.0.20.25")
    zone.add("mail.example.com", "AAAA", "2001:db8::25")
    zone.add("www.example.com", "CNAME", "mail.example.com")
    zone.add("example.com", "TXT", "v=spf1 +ip4:127.0.20.0/24 +a:mail.isp.example.net -all")
    zone.add("quoted.example.com", "TXT", 'a "quoted" \\ back\\slash; é')
    zone.add("mail._domainkey.example.com", "TXT", dkim_value_2048(), ttl=3600)
    zone.add("example.com", "MX", "20 backup.example.com")
    return zone


def as_set(parsed: dns.zone.Zone):
    return {(n.to_text(omit_final_dot=True), dns.rdatatype.to_text(rd.rdtype), ttl, rd.to_text())
            for n, ttl, rd in parsed.iterate_rdatas()}


def test_to_text_parses_back_to_the_same_records():
    zone = sample_zone()
    text = zone.to_text()
    assert "$ORIGIN example.com.\n" in text and "$TTL 300\n" in text
    assert text.index("SOA") < text.index("\tNS\t") < text.index("\tMX\t")
    assert '\\"quoted\\"' in text and "back\\\\slash" in text
    parsed = dns.zone.from_text(text, origin=None, relativize=False)
    assert parsed.origin == dns.name.from_text("example.com.")
    expected = {(r.name, r.type, r.ttl, r.rdata().to_text()) for r in zone.records()}
    assert as_set(parsed) == expected


def test_table_like_the_memo():
    zone = Zone("example.com", nameserver="ns.lab.test")
    zone.add("example.com", "TXT", "v=spf1 +ip4:127.0.20.0/24 -all")
    zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=quarantine; rua=mailto:dmarc@example.com")
    rows = zone.table()
    assert rows == [
        TableRow("example.com", "NS", "ns.lab.test"),
        TableRow("example.com", "TXT", "v=spf1 +ip4:127.0.20.0/24 -all"),
        TableRow("_dmarc.example.com", "TXT", "v=DMARC1; p=quarantine; rua=mailto:dmarc@example.com"),
    ]
    assert rows[1].hostname == "example.com" and rows[1].content.startswith("v=spf1")
    assert zone.table(include_soa=True)[0].type == "SOA"


# --------------------------------------------------------------------------- the lab's zones

def zone_named(zones, origin):
    (zone,) = [z for z in zones if z.origin == origin]
    return zone


def values(zones, name, rtype):
    return [r.value for r in find_zone(zones, name).find(name, rtype)]


def test_lab_zones_of_the_default_world():
    zones = lab_zones(default_world())
    assert [z.origin for z in zones] == ["example.com", "isp.example.net", "inbox.example.org",
                                         "verifier.example.org", "lab.test", "127.in-addr.arpa"]
    for zone in zones:
        assert zone.serial == 1
        assert [r.value for r in zone.find(zone.origin, "NS")] == ["ns.lab.test"]
        assert zone.soa.value.startswith("ns.lab.test hostmaster.")
    expected = [
        ("example.com", "MX", ["10 mail.example.com"]),
        ("isp.example.net", "MX", ["10 mail.isp.example.net"]),
        ("inbox.example.org", "MX", ["10 mx.inbox.example.org"]),
        ("verifier.example.org", "MX", ["10 verifier.example.org"]),
        ("ns.lab.test", "A", ["127.0.10.53"]),
        ("mail.example.com", "A", ["127.0.20.25"]),
        ("pc.example.com", "A", ["127.0.20.100"]),
        ("mail.isp.example.net", "A", ["127.0.30.25"]),
        ("mx.inbox.example.org", "A", ["127.0.40.25"]),
        ("verifier.example.org", "A", ["127.0.50.25"]),
        ("25.40.0.127.in-addr.arpa", "PTR", ["mx.inbox.example.org"]),
        ("25.20.0.127.in-addr.arpa", "PTR", ["mail.example.com"]),
        ("53.10.0.127.in-addr.arpa", "PTR", ["ns.lab.test"]),
    ]
    for name, rtype, want in expected:
        assert values(zones, name, rtype) == want, (name, rtype)
    assert zone_named(zones, "example.com").find("pc.example.com", "A")
    assert zone_named(zones, "verifier.example.org").find("verifier.example.org", "MX")
    # every zone renders text that dnspython reads back
    for zone in zones:
        dns.zone.from_text(zone.to_text(), origin=None, relativize=False)


def test_lab_zones_of_a_flattened_world_keep_one_ptr():
    zones = lab_zones(default_world().flattened())
    reverse = zone_named(zones, "127.in-addr.arpa")
    assert [r.value for r in reverse.find("1.0.0.127.in-addr.arpa", "PTR")] == ["ns.lab.test"]
    assert len([r for r in reverse.records() if r.type == "PTR"]) == 1
    assert values(zones, "mx.inbox.example.org", "A") == ["127.0.0.1"]


def test_lookup_over_the_lab_zones():
    zones = lab_zones(default_world())
    zone_named(zones, "example.com").add("www.example.com", "CNAME", "mx.inbox.example.org")
    cases = [
        ("inbox.example.org", "MX", "NOERROR", ["10 mx.inbox.example.org"], []),
        ("www.example.com", "A", "NOERROR", ["mx.inbox.example.org", "127.0.40.25"], []),
        ("nope.example.com", "A", "NXDOMAIN", [], ["SOA"]),
        ("mail.example.com", "MX", "NOERROR", [], ["SOA"]),
        ("example.net", "A", "REFUSED", [], []),
    ]
    for name, rtype, rcode, answer, authority in cases:
        result = lookup(zones, name, rtype)
        assert result.rcode == rcode, name
        assert [r.value for r in result.answer] == answer, name
        assert [r.type for r in result.authority] == authority, name
