"""The inbox provider's verdict over a real lab DNS server: Inbox, Spam or Rejected, and why."""
from __future__ import annotations

import pytest

from labkit.core.auth import (
    DKIMKey,
    assess,
    check_iprev,
    dmarc_record,
    parse_authentication_results,
    sign,
    spf_record,
)
from labkit.core.dns import find_zone, lab_zones, make_resolver
from labkit.net.dnsserver import serve
from labkit.core.world import default_world

MTA, MTA_NAME = "127.0.20.25", "mail.example.com"
ISP, ISP_NAME = "127.0.30.25", "mail.isp.example.net"


def message(sender: str = "alice@example.com") -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: bob@inbox.example.org\r\nSubject: Hello\r\n"
            f"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\nMessage-ID: <v1@example.com>\r\n\r\nHello Bob.\r\n").encode()


@pytest.fixture(scope="module")
def lab():
    zones = lab_zones(default_world())
    com = find_zone(zones, "example.com")
    com.add("example.com", "TXT", spf_record(ip4=[MTA]))
    com.add("_dmarc.example.com", "TXT", dmarc_record("reject", subdomain_policy="quarantine"))
    com.add("news.example.com", "TXT", spf_record(ip4=[MTA]))
    com.add("_dmarc.monitor.example.com", "TXT", dmarc_record("none"))
    net = find_zone(zones, "isp.example.net")
    net.add("isp.example.net", "TXT", spf_record(ip4=[ISP]))  # SPF and DKIM, but no DMARC record
    keys = {d: DKIMKey.generate(d, "mail", "ed25519") for d in ("example.com", "isp.example.net")}
    keys["example.com"].publish(com)
    keys["isp.example.net"].publish(net)
    with serve(zones, "127.0.0.1") as server:
        yield make_resolver(server.host, server.port), keys


def judge(lab, *, sender="alice@example.com", signer="example.com", ip=MTA, helo=MTA_NAME, mail_from=None,
          **options):
    resolver, keys = lab
    msg = message(sender)
    if signer:
        msg = sign(msg, keys[signer])
    return assess(msg, mail_from=sender if mail_from is None else mail_from, helo=helo, client_ip=ip,
                  resolver=resolver, **options)


def test_all_good_goes_to_inbox(lab):
    verdict = judge(lab)
    assert verdict.folder == "Inbox" and verdict.ok, verdict
    assert (verdict.spf.result, verdict.dkim.result, verdict.dmarc.result) == ("pass", "pass", "pass")
    assert verdict.iprev.details["helo_matches"]
    assert "Inbox" in verdict.reasons[0]


@pytest.mark.parametrize("case, kwargs, folder, words", [
    ("forged, p=reject", dict(signer=None, ip=ISP, helo=ISP_NAME), "Rejected", ["p=reject"]),
    ("subdomain, sp=quarantine", dict(sender="alice@news.example.com", signer=None, ip=ISP, helo=ISP_NAME,
                                      mail_from="x@isp.example.net"), "Spam", ["p=quarantine"]),
    ("no SPF nor DKIM", dict(sender="bob@inbox.example.org", signer=None), "Spam", ["Neither SPF", "DKIM"]),
    ("HELO does not match PTR", dict(helo="laptop.example.com"), "Spam", ["does not match its HELO"]),
    ("no reverse DNS", dict(ip="127.0.99.1", helo="unknown.example.com", mail_from="alice@example.com"), "Spam",
     ["reverse DNS"]),
    ("no TLS", dict(tls=False), "Spam", ["without TLS"]),
    ("bulk without DMARC", dict(sender="carol@isp.example.net", signer="isp.example.net", ip=ISP, helo=ISP_NAME,
                                bulk=True), "Spam", ["bulk sender must publish a DMARC record"]),
])
def test_spam_and_rejections(lab, case, kwargs, folder, words):
    verdict = judge(lab, **kwargs)
    assert verdict.folder == folder, verdict
    assert not verdict.ok
    text = " ".join(verdict.reasons)
    for word in words:
        assert word in text
    for reason in verdict.reasons:
        assert reason.endswith(".") and "\n" not in reason


def test_no_dmarc_record_is_fine_for_a_small_sender(lab):
    verdict = judge(lab, sender="carol@isp.example.net", signer="isp.example.net", ip=ISP, helo=ISP_NAME)
    assert verdict.folder == "Inbox", verdict
    assert verdict.dmarc.result == "none"


def test_p_none_failure_is_only_noted(lab):
    # SPF passes for the ISP's domain, which is not aligned with From: DMARC fails, but p=none only reports
    verdict = judge(lab, sender="alice@monitor.example.com", signer=None, ip=ISP, helo=ISP_NAME,
                    mail_from="x@isp.example.net")
    assert verdict.dmarc.result == "fail" and verdict.dmarc.policy == "none"
    assert verdict.folder == "Inbox", verdict
    assert any("p=none" in note for note in verdict.notes)


@pytest.mark.parametrize("from_line", [b"From: nobody\r\n", b"From: a@example.com, b@example.com\r\n", b""])
def test_malformed_from_is_rejected(lab, from_line):
    resolver, _keys = lab
    msg = from_line + b"To: bob@inbox.example.org\r\nSubject: x\r\n\r\nbody\r\n"
    verdict = assess(msg, mail_from="alice@example.com", helo=MTA_NAME, client_ip=MTA, resolver=resolver)
    assert verdict.folder == "Rejected", verdict
    assert "From" in verdict.reasons[0] and "RFC 5322" in verdict.reasons[0]


def test_garbage_message_is_a_verdict_not_a_crash(lab):
    resolver, _keys = lab
    verdict = assess(b"\x00\xff\xfe garbage", mail_from="", helo=MTA_NAME, client_ip=MTA, resolver=resolver)
    assert verdict.folder == "Rejected"
    assert verdict.dkim.result == "permerror"


def test_dns_down_is_a_verdict_with_temperrors():
    dead = make_resolver("127.0.0.1", 9, timeout=0.2, lifetime=0.4)
    verdict = assess(message(), mail_from="alice@example.com", helo=MTA_NAME, client_ip=MTA, resolver=dead)
    assert verdict.folder == "Spam"
    assert verdict.spf.result == "temperror" and verdict.dmarc.result == "temperror"
    assert verdict.iprev.result == "temperror"


def test_authentication_results_header(lab):
    verdict = judge(lab)
    parsed = parse_authentication_results(verdict.authentication_results)
    assert parsed["authserv_id"] == "mx.inbox.example.org"
    got = {r["method"]: r["result"] for r in parsed["results"]}
    assert got == {"iprev": "pass", "spf": "pass", "dkim": "pass", "dmarc": "pass"}
    rejected = judge(lab, signer=None, ip=ISP, helo=ISP_NAME)
    got = {r["method"]: r["result"] for r in parse_authentication_results(rejected.authentication_results)["results"]}
    assert got["dmarc"] == "fail" and got["spf"] == "fail" and got["dkim"] == "none"


def test_iprev(lab):
    resolver, _keys = lab
    good = check_iprev(MTA, MTA_NAME, resolver=resolver)
    assert good.ok and good.details["confirmed"] == MTA_NAME
    assert check_iprev("127.0.99.1", "x", resolver=resolver).result == "fail"
