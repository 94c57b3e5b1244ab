"""The provider files to Inbox or Spam and says why; it sends DMARC reports; the verifier answers."""
from __future__ import annotations

from pathlib import Path

import pytest

from labkit import Lab
from labkit.core.auth.dmarc import parse_aggregate_report, report_counts
from labkit.core.dns import find_zone
from labkit.core.auth.reports import report_xml, rua_addresses


@pytest.fixture
def lab():
    with Lab() as lab:
        yield lab


def publish(lab: Lab, name: str, text: str) -> None:
    find_zone(lab.zones, name).replace(name, "TXT", [text])


def newest(lab: Lab, address: str, count: int) -> dict:
    return lab.wait_for_mail(address, count=count)[-1]


def test_no_spf_no_dkim_lands_in_spam_with_reasons(lab):
    assert lab.send("alice@example.com", "bob@inbox.example.org", via="submission").ok
    msg = newest(lab, "bob@inbox.example.org", 1)
    assessed = lab.events.wait_for("assessed", role="inbox")
    assert msg["folder"] == "Spam" and assessed["folder"] == "Spam"
    assert any("Neither SPF" in r for r in assessed["reasons"])
    assert Path(msg["path"]).read_text().startswith("Authentication-Results: mx.inbox.example.org;")


def test_spf_through_the_isp_reaches_the_inbox(lab):
    publish(lab, "example.com", "v=spf1 include:isp.example.net -all")
    assert lab.send("alice@example.com", "bob@inbox.example.org", via="submission").ok
    msg = newest(lab, "bob@inbox.example.org", 1)
    assessed = lab.events.wait_for("assessed", role="inbox")
    assert assessed["spf"] == "pass" and msg["folder"] == "INBOX", assessed["reasons"]


def test_dmarc_reject_refuses_and_the_sender_gets_a_bounce(lab):
    publish(lab, "example.com", "v=spf1 -all")  # nothing may send for example.com
    publish(lab, "_dmarc.example.com", "v=DMARC1; p=reject")
    assert lab.send("alice@example.com", "bob@inbox.example.org", via="submission").ok
    assessed = lab.events.wait_for("assessed", role="inbox")
    assert assessed["folder"] == "Rejected" and assessed["dmarc"] == "fail"
    lab.events.wait_for("bounced", role="smarthost")
    bounce = newest(lab, "alice@example.com", 1)  # the ISP's bounce comes back to alice
    assert "p=reject" in Path(bounce["path"]).read_text()
    assert lab.mailbox("bob@inbox.example.org") == []


def test_aggregate_report_reaches_the_rua_address(lab):
    publish(lab, "_dmarc.example.com", "v=DMARC1; p=none; rua=mailto:dmarc@example.com")
    for i in range(3):
        assert lab.send("alice@example.com", "bob@inbox.example.org", via="submission", subject=f"r{i}").ok
    lab.wait_for_mail("bob@inbox.example.org", count=3)
    sent = lab.send_dmarc_reports()
    assert [s["to"] for s in sent] == ["dmarc@example.com"]
    report = parse_aggregate_report(report_xml(Path(newest(lab, "dmarc@example.com", 1)["path"]).read_bytes()))
    assert report["domain"] == "example.com" and report["org_name"] == "mx.inbox.example.org"
    assert report_counts(report) == [{"source_ip": lab.smarthost.host, "result": "fail", "count": 3}]
    assert lab.send_dmarc_reports() == []  # nothing new since


def test_rua_addresses():
    assert rua_addresses("v=DMARC1; p=none; rua=mailto:a@example.com!10m, mailto:b@example.org") == \
        ["a@example.com", "b@example.org"]
    assert rua_addresses("v=DMARC1; p=none") == []


def test_verifier_answers_with_a_report(lab):
    assert lab.send("alice@example.com", "check-auth@verifier.example.org", via="submission",
                    subject="check me").ok
    answer = newest(lab, "alice@example.com", 1)
    assert answer["subject"] == "Authentication Report: check me"
    text = Path(answer["path"]).read_text()
    assert "SPF check   : none" in text and "iprev check : pass" in text and "TLS         : pass" in text
    assert max(len(line) for line in text.splitlines()) < 1000


def test_verifier_never_answers_an_automatic_message(lab):
    message = (b"From: alice@example.com\r\nTo: check-auth@verifier.example.org\r\n"
               b"Subject: out of office\r\nAuto-Submitted: auto-replied\r\n\r\nAway.\r\n")
    assert lab.send("alice@example.com", "check-auth@verifier.example.org", via="submission",
                    message=message).ok
    # then an ordinary one, whose answer shows the verifier has finished with the first
    assert lab.send("alice@example.com", "check-auth@verifier.example.org", via="submission",
                    subject="a person wrote this").ok
    lab.wait_for_mail("check-auth@verifier.example.org", count=2)
    newest(lab, "alice@example.com", 1)
    answered = lab.events.select("report-sent", role="verifier")
    assert len(answered) == 1
    assert lab.mailbox("alice@example.com")[0]["subject"] == "Authentication Report: a person wrote this"


def test_refused_messages_are_counted_in_the_aggregate_report(lab):
    publish(lab, "example.com", "v=spf1 -all")
    publish(lab, "_dmarc.example.com", "v=DMARC1; p=reject; rua=mailto:dmarc@example.com")
    assert lab.send("alice@example.com", "bob@inbox.example.org", via="submission").ok
    lab.events.wait_for("assessed", role="inbox", folder="Rejected")
    assert lab.send_dmarc_reports()
    report = parse_aggregate_report(report_xml(Path(newest(lab, "dmarc@example.com", 1)["path"]).read_bytes()))
    assert [(r.disposition, r.count) for r in report["rows"]] == [("reject", 1)]
