"""DMARC over a real lab DNS server: records, alignment, policy, reports, Authentication-Results."""
from __future__ import annotations

import pytest

from labkit.core.auth import (
    DKIMKey,
    aggregate_report,
    aligned,
    authenticate_with_authheaders,
    authentication_results,
    check_dmarc_record,
    dmarc_record,
    evaluate_dmarc,
    evaluate_spf,
    failure_report,
    organizational_domain,
    parse_aggregate_report,
    parse_authentication_results,
    parse_failure_report,
    report_counts,
    report_svg,
    rows_from_results,
    sign,
    spf_record,
    verify,
)
from labkit.core.dns import find_zone, lab_zones, make_resolver
from labkit.net.dnsserver import serve
from labkit.errors import ConfigError
from labkit.core.world import default_world

MTA = "127.0.20.25"
OTHER = "127.0.30.25"


def message(from_header: str = "Alice <alice@example.com>", subject: str = "Hello") -> bytes:
    return (f"From: {from_header}\r\nTo: bob@inbox.example.org\r\nSubject: {subject}\r\n"
            f"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\nMessage-ID: <m1@example.com>\r\n\r\nHello Bob.\r\n").encode()


@pytest.fixture(scope="module")
def lab():
    zones = lab_zones(default_world())
    com = find_zone(zones, "example.com")
    com.add("example.com", "TXT", spf_record(ip4=[MTA]))
    com.add("_dmarc.example.com", "TXT", dmarc_record("reject", subdomain_policy="quarantine",
                                                      rua=["dmarc@example.com"]))
    com.add("news.example.com", "TXT", spf_record(ip4=[MTA]))
    com.add("strict.example.com", "TXT", spf_record(ip4=[MTA]))
    com.add("_dmarc.strict.example.com", "TXT", dmarc_record("reject", adkim="s", aspf="s"))
    com.add("bounces.strict.example.com", "TXT", spf_record(ip4=[MTA]))
    com.add("broken.example.com", "TXT", spf_record(ip4=[MTA]))
    com.add("_dmarc.broken.example.com", "TXT", "v=DMARC1; p=maybe")
    com.add("twice.example.com", "TXT", spf_record(ip4=[MTA]))
    com.add("_dmarc.twice.example.com", "TXT", "v=DMARC1; p=none")
    com.add("_dmarc.twice.example.com", "TXT", "v=DMARC1; p=reject")
    org = find_zone(zones, "inbox.example.org")
    org.add("_dmarc.inbox.example.org", "TXT", "v=DMARC1; p=none")
    keys = {d: DKIMKey.generate(d, "mail", "ed25519") for d in ("example.com", "strict.example.com",
                                                              "news.example.com", "isp.example.net")}
    for domain, key in keys.items():
        key.publish(find_zone(zones, f"mail._domainkey.{domain}"))
    with serve(zones, "127.0.0.1") as server:
        yield make_resolver(server.host, server.port), keys


def run(lab, from_header, *, signer=None, ip=MTA, mail_from="alice@example.com"):
    resolver, keys = lab
    msg = message(from_header)
    if signer:
        msg = sign(msg, keys[signer])
    spf = evaluate_spf(ip, mail_from, "mail.example.com", resolver=resolver)
    dkim = verify(msg, resolver=resolver)
    return spf, dkim, evaluate_dmarc(msg, spf, dkim, resolver=resolver)


# (From, DKIM signer, client ip, MAIL FROM, result, disposition, spf aligned, dkim aligned)
CASES = [
    ("alice@example.com", "example.com", MTA, "alice@example.com", "pass", "none", True, True),
    ("alice@example.com", None, MTA, "alice@example.com", "pass", "none", True, False),
    ("alice@example.com", "example.com", OTHER, "alice@isp.example.net", "pass", "none", False, True),
    ("alice@example.com", None, OTHER, "alice@example.com", "fail", "reject", False, False),
    # relaxed: a subdomain aligns with its organizational domain
    ("alice@example.com", "news.example.com", OTHER, "x@isp.example.net", "pass", "none", False, True),
    ("alice@example.com", None, MTA, "bounce@news.example.com", "pass", "none", True, False),
    # a subdomain without its own record takes sp= of the organizational domain
    ("alice@news.example.com", None, OTHER, "x@isp.example.net", "fail", "quarantine", False, False),
    ("alice@news.example.com", "example.com", OTHER, "x@isp.example.net", "pass", "none", False, True),
    # strict: only the very same name aligns
    ("alice@strict.example.com", "example.com", OTHER, "x@isp.example.net", "fail", "reject", False, False),
    ("alice@strict.example.com", None, MTA, "b@bounces.strict.example.com", "fail", "reject", False, False),
    ("alice@strict.example.com", "strict.example.com", OTHER, "x@isp.example.net", "pass", "none", False, True),
    # another organization's signature never aligns
    ("alice@example.com", "isp.example.net", OTHER, "x@isp.example.net", "fail", "reject", False, False),
]


@pytest.mark.parametrize("from_, signer, ip, mail_from, expected, disposition, spf_al, dkim_al", CASES)
def test_alignment_and_policy(lab, from_, signer, ip, mail_from, expected, disposition, spf_al, dkim_al):
    _spf, _dkim, result = run(lab, from_, signer=signer, ip=ip, mail_from=mail_from)
    assert result.result == expected, result
    assert result.disposition == disposition
    assert result.details["spf_aligned"] is spf_al
    assert result.details["dkim_aligned"] is dkim_al
    if expected == "fail":
        assert "p=" in result.reason and "asks receivers" in result.reason


def test_aligned_and_organizational_domain_offline():
    assert organizational_domain("a.b.example.com") == "example.com"
    assert organizational_domain("mx.inbox.example.org") == "example.org"
    assert aligned("example.com", "mail.example.com", "r")
    assert not aligned("example.com", "mail.example.com", "s")
    assert aligned("example.com", "EXAMPLE.com.", "s")
    assert not aligned("example.com", "example.net", "r")
    assert not aligned("example.com", "", "r")


@pytest.mark.parametrize("from_header, expected, words", [
    ("bob@inbox.example.org", "fail", ["p=none"]),
    ("carol@isp.example.net", "none", ["no DMARC record"]),
    ("alice@broken.example.com", "permerror", ["broken"]),
    ("alice@twice.example.com", "permerror", ["2 DMARC records"]),
    ("", "permerror", ["0 addresses", "From address"]),
    ("Alice <alice@example.com>, Eve <eve@example.net>", "permerror", ["2 addresses"]),
    ("Alice without address", "permerror", ["cannot be checked"]),
    ("alice@exa mple..com", "permerror", ["cannot be checked"]),
])
def test_records_and_from_headers(lab, from_header, expected, words):
    _spf, _dkim, result = run(lab, from_header)
    assert result.result == expected, result
    for word in words:
        assert word in result.reason


def test_two_or_no_from_headers(lab):
    resolver, _keys = lab
    msg = b"From: a@example.com\r\n" + message()
    assert "2 From headers" in evaluate_dmarc(msg, resolver=resolver).reason
    no_from = b"\r\n".join(line for line in message().split(b"\r\n") if not line.startswith(b"From:"))
    result = evaluate_dmarc(no_from, resolver=resolver)
    assert result.result == "permerror" and "no From header" in result.reason


def test_dns_down_is_temperror():
    dead = make_resolver("127.0.0.1", 9, timeout=0.2, lifetime=0.4)
    result = evaluate_dmarc(message(), resolver=dead)
    assert result.result == "temperror" and result.temporary
    assert check_dmarc_record("example.com", dead).result == "temperror"


# ------------------------------------------------------------------ records


def test_dmarc_record_builder():
    assert dmarc_record() == "v=DMARC1; p=none"
    assert dmarc_record("reject", subdomain_policy="quarantine", adkim="s", rua=["mailto:d@example.com"]) == \
        "v=DMARC1; p=reject; sp=quarantine; adkim=s; rua=mailto:d@example.com"
    for bad in ({"policy": "drop"}, {"adkim": "x"}, {"rua": ["not an address"]}):
        with pytest.raises(ConfigError):
            dmarc_record(**bad)


@pytest.mark.parametrize("domain, expected, words", [
    ("example.com", "pass", ["valid", "p=reject"]),
    ("broken.example.com", "permerror", ["not usable"]),
    ("twice.example.com", "permerror", ["not usable"]),
    ("isp.example.net", "none", ["no DMARC record"]),
])
def test_check_dmarc_record(lab, domain, expected, words):
    resolver, _keys = lab
    result = check_dmarc_record(domain, resolver)
    assert result.result == expected, result
    for word in words:
        assert word in result.reason


# ------------------------------------------------------------------ reports


def test_aggregate_report_round_trip(lab):
    seen = []
    for from_, signer, ip, mail_from in [("alice@example.com", "example.com", MTA, "alice@example.com"),
                                         ("alice@example.com", "example.com", MTA, "alice@example.com"),
                                         ("alice@example.com", None, OTHER, "alice@example.com")]:
        spf, dkim, dmarc = run(lab, from_, signer=signer, ip=ip, mail_from=mail_from)
        seen.append((ip, spf, dkim, dmarc))
    rows = rows_from_results(seen)
    assert sorted(r.count for r in rows) == [1, 2]
    xml = aggregate_report(org_name="inbox.example.org", email_address="dmarc-reports@inbox.example.org",
                           report_id="r-1", domain="example.com", published={"p": "reject", "sp": "quarantine"},
                           rows=rows, begin=1704067200, end=1704153600)
    assert xml.startswith("<?xml") and "<feedback>" in xml
    report = parse_aggregate_report(xml)
    assert report["org_name"] == "inbox.example.org" and report["report_id"] == "r-1"
    assert report["begin"] == 1704067200 and report["policy"]["p"] == "reject"
    assert sorted(report["rows"], key=lambda r: r.count) == sorted(rows, key=lambda r: r.count)
    counts = report_counts(report)
    assert {"source_ip": MTA, "result": "pass", "count": 2} in counts
    assert {"source_ip": OTHER, "result": "fail", "count": 1} in counts
    svg = report_svg(counts)
    assert svg.startswith("<svg") and MTA in svg and "fail 1" in svg


@pytest.mark.parametrize("text, words", [
    ("not xml <", ["not XML"]),
    ("<other/>", ["<other>"]),
    ("<feedback/>", ["report_metadata"]),
])
def test_bad_aggregate_reports(text, words):
    with pytest.raises(ValueError) as info:
        parse_aggregate_report(text)
    for word in words:
        assert word in str(info.value)


def test_failure_report(lab):
    _spf, _dkim, dmarc = run(lab, "alice@example.com", ip=OTHER)
    report = failure_report(message(), dmarc, reporter="dmarc-reports@inbox.example.org", to="dmarc@example.com",
                            source_ip=OTHER, mail_from="alice@example.com",
                            authentication_results="mx.inbox.example.org; dmarc=fail header.from=example.com")
    assert b"multipart/report" in report and b'report-type="feedback-report"' in report
    assert b"text/rfc822-headers" in report and b"Hello Bob" not in report  # headers only
    fields = parse_failure_report(report)
    assert fields["feedback-type"] == "auth-failure"
    assert fields["auth-failure"] == "dmarc"
    assert fields["source-ip"] == OTHER
    assert fields["reported-domain"] == "example.com"


# ------------------------------------------------------------------ Authentication-Results


def test_authentication_results_round_trip(lab):
    spf, dkim, dmarc = run(lab, "alice@example.com", signer="example.com")
    value = authentication_results("mx.inbox.example.org", spf=spf, dkim=dkim, dmarc=dmarc)
    parsed = parse_authentication_results(value)
    assert parsed["authserv_id"] == "mx.inbox.example.org"
    got = {r["method"]: r for r in parsed["results"]}
    assert got["spf"]["result"] == "pass" and got["spf"]["properties"]["smtp.mailfrom"] == "alice@example.com"
    assert got["dkim"]["result"] == "pass" and got["dkim"]["properties"]["header.d"] == "example.com"
    assert got["dmarc"]["result"] == "pass" and got["dmarc"]["properties"]["header.from"] == "example.com"
    assert parse_authentication_results("Authentication-Results: " + value) == parsed


def test_authheaders_agrees(lab):
    resolver, keys = lab
    msg = sign(message(), keys["example.com"])
    value = authenticate_with_authheaders(msg, authserv_id="mx.inbox.example.org", resolver=resolver,
                                          client_ip=MTA, mail_from="alice@example.com", helo="mail.example.com")
    got = {r["method"]: r["result"] for r in parse_authentication_results(value)["results"]}
    assert got == {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
