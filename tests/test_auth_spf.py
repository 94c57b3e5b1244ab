"""SPF with pyspf and checkdmarc over a real lab DNS server: every result, with its reason."""
from __future__ import annotations

import pytest

from labkit.core.auth import check_spf_record, evaluate_spf, spf_record
from labkit.core.auth.spf import MAX_LOOKUPS
from labkit.core.dns import find_zone, lab_zones, make_resolver
from labkit.net.dnsserver import serve
from labkit.errors import ConfigError
from labkit.core.world import default_world

MTA = "127.0.20.25"  # mail.example.com
OTHER = "127.0.30.25"  # mail.isp.example.net


@pytest.fixture(scope="module")
def lab_dns():
    zones = lab_zones(default_world())
    com = find_zone(zones, "example.com")
    com.add("example.com", "TXT", spf_record(ip4=[MTA]))
    com.add("soft.example.com", "TXT", "v=spf1 ip4:127.0.20.25 ~all")
    com.add("neutral.example.com", "TXT", "v=spf1 ip4:127.0.20.25 ?all")
    com.add("mx.example.com", "TXT", "v=spf1 mx a:mail.example.com -all")
    # two SPF records at one name: permerror (RFC 7208 §4.5)
    com.add("two.example.com", "TXT", "v=spf1 -all")
    com.add("two.example.com", "TXT", "v=spf1 ip4:127.0.20.25 -all")
    # more than 10 DNS-querying terms
    for i in range(11):
        com.add(f"h{i}.example.com", "A", "127.0.0.99")
    com.add("many.example.com", "TXT", "v=spf1 " + " ".join(f"a:h{i}.example.com" for i in range(11)) + " -all")
    # three names that do not exist: more than 2 void lookups
    com.add("void.example.com", "TXT", "v=spf1 a:n1.example.com a:n2.example.com a:n3.example.com -all")
    com.add("syntax.example.com", "TXT", "v=spf1 ip4:127.0.20.999 -all")
    com.add("typo.example.com", "TXT", "v=spf1 ipv4:127.0.20.25 -all")
    # erratum 6: the memo's layout, a record at _spf only ...
    net = find_zone(zones, "isp.example.net") or find_zone(zones, "example.net")
    net.add("_spf.isp.example.net", "TXT", spf_record(ip4=[OTHER]))
    # ... and the same record included from the domain itself
    com.add("_spf.example.com", "TXT", spf_record(ip4=[OTHER]))
    com.add("included.example.com", "TXT", "v=spf1 include:_spf.example.com -all")
    with serve(zones, "127.0.0.1") as server:
        yield make_resolver(server.host, server.port)


CASES = [
    # (client ip, MAIL FROM, expected result, words in the reason)
    (MTA, "alice@example.com", "pass", ["allowed", "ip4:127.0.20.25"]),
    (OTHER, "alice@example.com", "fail", ["not allowed", "-all"]),
    (OTHER, "alice@soft.example.com", "softfail", ["probably not"]),
    (OTHER, "alice@neutral.example.com", "neutral", ["says nothing"]),
    (MTA, "alice@mx.example.com", "pass", ["allowed"]),
    (MTA, "alice@inbox.example.org", "none", ["no SPF record"]),
    (MTA, "alice@two.example.com", "permerror", ["broken", "Two or more"]),
    (MTA, "alice@many.example.com", "permerror", ["broken", "Too many DNS lookups"]),
    (MTA, "alice@void.example.com", "permerror", ["broken", "Void lookup limit"]),
    (MTA, "alice@syntax.example.com", "permerror", ["broken", "127.0.20.999"]),
    (MTA, "alice@typo.example.com", "permerror", ["broken", "ipv4"]),
    (OTHER, "alice@included.example.com", "pass", ["allowed"]),
]


@pytest.mark.parametrize("ip, mail_from, expected, words", CASES, ids=[c[1] + "-" + c[2] for c in CASES])
def test_evaluate(lab_dns, ip, mail_from, expected, words):
    result = evaluate_spf(ip, mail_from, "mail.example.com", resolver=lab_dns)
    assert result.result == expected, result
    assert result.ok is (expected == "pass")
    assert result.method == "spf"
    for word in words:
        assert word in result.reason
    assert result.details["client_ip"] == ip
    assert result.details["domain"] == mail_from.split("@")[1]


def test_lookup_counts(lab_dns):
    result = evaluate_spf(MTA, "alice@many.example.com", "mail.example.com", resolver=lab_dns)
    assert result.details["lookups"] > MAX_LOOKUPS
    result = evaluate_spf(MTA, "alice@void.example.com", "mail.example.com", resolver=lab_dns)
    assert result.details["void_lookups"] > 2


def test_erratum_6_record_at_spf_alone_gives_none(lab_dns):
    # the memo publishes at hostname _spf: SPF reads the MAIL FROM domain itself, so nothing is found
    result = evaluate_spf(OTHER, "alice@isp.example.net", "mail.isp.example.net", resolver=lab_dns)
    assert result.result == "none"
    assert "_spf.isp.example.net" in result.reason and "RFC 7208" in result.reason
    assert result.details["misplaced_record"] == "_spf.isp.example.net"
    # included from the domain's own record, the same _spf record counts
    included = evaluate_spf(OTHER, "alice@included.example.com", "mail.example.com", resolver=lab_dns)
    assert included.result == "pass"


def test_empty_mail_from_checks_helo(lab_dns):
    result = evaluate_spf(MTA, "", "example.com", resolver=lab_dns)
    assert result.result == "pass"
    assert result.details["identity"] == "helo"
    assert "HELO" in result.reason


def test_dns_down_is_temperror():
    dead = make_resolver("127.0.0.1", 9, timeout=0.2, lifetime=0.4)  # nothing listens on the discard port
    result = evaluate_spf(MTA, "alice@example.com", "mail.example.com", resolver=dead)
    assert result.result == "temperror"
    assert result.temporary
    assert "try again later" in result.reason


def test_bad_client_ip_is_a_config_error(lab_dns):
    with pytest.raises(ConfigError, match="client_ip"):
        evaluate_spf("not-an-ip", "alice@example.com", "mail.example.com", resolver=lab_dns)


# ------------------------------------------------------------------ building and checking records


def test_spf_record_builder():
    assert spf_record(ip4=["127.0.20.25"], mx=True) == "v=spf1 ip4:127.0.20.25 mx -all"
    assert spf_record(ip4=["127.0.20.0/24"], include=["_spf.example.com"], all="~") == \
        "v=spf1 ip4:127.0.20.0/24 include:_spf.example.com ~all"
    assert spf_record(ip6=["2001:db8::25"], a=["mail.example.com"]) == "v=spf1 ip6:2001:db8::25 a:mail.example.com -all"


@pytest.mark.parametrize("kwargs, field", [
    ({"ip4": ["127.0.20.999"]}, "spf ip4"),
    ({"ip4": ["2001:db8::1"]}, "spf ip4"),
    ({"all": "!"}, "spf all"),
    ({"include": [f"h{i}.example.com" for i in range(11)]}, "spf record"),
    ({"include": ["bad name.example.com"]}, "spf include"),
])
def test_spf_record_builder_refuses(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        spf_record(**kwargs)


@pytest.mark.parametrize("domain, expected, words", [
    ("example.com", "pass", ["valid", "of 10"]),
    ("two.example.com", "permerror", ["multiple"]),
    ("many.example.com", "permerror", ["11/10", "lookups"]),
    ("void.example.com", "permerror", ["void"]),
    ("typo.example.com", "permerror", ["not usable"]),
    ("inbox.example.org", "none", ["no SPF record"]),
])
def test_check_spf_record(lab_dns, domain, expected, words):
    result = check_spf_record(domain, lab_dns)
    assert result.result == expected, result
    for word in words:
        assert word in result.reason


def test_check_spf_record_dns_down():
    dead = make_resolver("127.0.0.1", 9, timeout=0.2, lifetime=0.4)
    assert check_spf_record("example.com", dead).result == "temperror"
