"""labkit.teach.senderauth: records in the lab DNS, one message's journey, reports and their pictures."""
from __future__ import annotations

import re
from collections import namedtuple
from pathlib import Path

import pytest

from labkit import ConfigError, Lab, LabStateError, senderauth
from labkit.core.auth.dkim import DKIMKey, sign
from labkit.core.auth.dmarc import DMARCResult, dmarc_record, failure_report
from labkit.net.clients.smtp import build_message
from labkit.core.trace import Hop

BOB = "bob@inbox.example.org"
SPF = "v=spf1 include:isp.example.net -all"


@pytest.fixture
def lab():
    with Lab() as lab:
        yield lab


# -- records ---------------------------------------------------------------------------------

def test_publish_is_served_at_once_and_unpublish_takes_it_away(lab):
    assert senderauth.published(lab, "example.com") == []
    assert senderauth.publish(lab, "example.com", SPF) == [SPF]
    assert senderauth.published(lab, "example.com") == [SPF]
    key = DKIMKey.generate("example.com", "t", "rsa2048")
    senderauth.publish(lab, key.record_name, key.record)   # longer than 255: split, joined back
    assert senderauth.published(lab, key.record_name) == [key.record]
    assert senderauth.unpublish(lab, "example.com") == 1
    assert senderauth.published(lab, "example.com") == []
    assert senderauth.unpublish(lab, "example.com") == 0


@pytest.mark.parametrize("name,text", [("example.invalid", "v=spf1 -all"), ("example.com", ""), ("example.com", [])])
def test_publish_refuses_what_it_cannot_serve(lab, name, text):
    with pytest.raises(ConfigError):
        senderauth.publish(lab, name, text)


def test_publish_needs_a_running_lab():
    with pytest.raises(LabStateError):
        senderauth.publish(Lab(), "example.com", SPF)


# -- sending as a server, and the journey ----------------------------------------------------

def test_send_from_host_says_its_own_name(lab):
    result = senderauth.send_from_host(lab, "verifier", "bounce@verifier.example.org", BOB, subject="from a server")
    assert result.ok, result.reason
    assert "EHLO verifier.example.org" in result.transcript.to_text()
    j = senderauth.journey(lab, "from a server")
    assert j.result("iprev") == "pass" and j.result("spf") == "pass"
    assert j.hops[-1].from_ip == "127.0.50.25"


def test_journey_spam_then_inbox_read_from_what_was_measured(lab):
    assert lab.send("alice@example.com", BOB, subject="no spf").ok
    spam = senderauth.journey(lab, "no spf")
    assert spam.folder == "Spam" and not spam.ok
    assert spam.result("spf") == "none" and spam.result("dkim") == "none"
    assert spam.reasons[0].startswith("Neither SPF")
    assert [h.by for h in spam.hops] == ["mail.example.com", "mail.isp.example.net", "mx.inbox.example.org"]
    assert spam.queue_id == spam.hops[-1].id and spam.opendkim is None
    assert spam.mail_from == "alice@example.com"
    senderauth.publish(lab, "example.com", SPF)
    key = DKIMKey.generate("example.com", "mail")
    senderauth.publish(lab, key.record_name, key.record)
    assert lab.send("alice@example.com", BOB, message=sign(build_message("alice@example.com", [BOB], "signed"), key)).ok
    inbox = senderauth.journey(lab, "signed")
    assert inbox.ok and inbox.signatures == [("example.com", "mail")]
    assert inbox.checks["dkim"].properties["header.d"] == "example.com"
    text = inbox.mermaid()
    assert text.startswith("flowchart LR") and 'c_dkim["DKIM: pass"]:::pass' in text
    assert 'f(["Inbox"]):::pass' in text and "signed d=example.com s=mail" in text
    rows = inbox.table().rows
    assert [r["check"] for r in rows] == ["SPF", "DKIM", "DMARC", "reverse DNS", "filed in"]
    assert "```mermaid" in inbox._repr_markdown_()


def test_journey_of_a_refused_message_comes_from_the_provider_event(lab):
    senderauth.publish(lab, "example.com", "v=spf1 -all")
    senderauth.publish(lab, "_dmarc.example.com", dmarc_record("reject"))
    mark = len(lab.events)
    result = senderauth.send_from_host(lab, "verifier", "alice@example.com", BOB, subject="refused")
    assert result.reply.code == 550
    j = senderauth.journey(lab, "refused", after=mark, timeout=5)
    assert j.folder == "Rejected" and j.path == "" and j.result("dmarc") == "fail"
    assert 'f(["Rejected  550"]):::fail' in j.mermaid()


def test_journey_says_what_to_look_at_when_nothing_came(lab):
    with pytest.raises(TimeoutError) as info:
        senderauth.journey(lab, "never sent", timeout=0.1)
    assert "never sent" in str(info.value)
    with pytest.raises(TimeoutError):
        senderauth.wait_for_subject(lab, BOB, "never sent", timeout=0.1)


def test_outcomes_colour_each_result():
    def j(spf, folder):
        checks = {m: senderauth.Check(m, w, "why") for m, w in (("spf", spf), ("dkim", "none"))}
        return senderauth.Journey("s", BOB, folder, ["because"], checks)

    table = senderauth.outcomes({"ok <1>": j("pass", "INBOX"), "bad": j("fail", "Spam")})
    html = table._repr_html_()
    assert "ok &lt;1&gt;" in html and "#c8e6c9" in html and "#ffcdd2" in html and "<b>Spam</b>" in html
    assert [r["SPF"] for r in table.rows()] == ["pass", "fail"] and table.rows()[0]["DMARC"] == "none"
    assert "scenario" in repr(table)


def test_journey_picture_escapes_what_mermaid_would_misread():
    hop = Hop('pc"x', "127.0.20.100", "", "mail.example.com;#", "ESMTPSA", "ID", "", "")
    j = senderauth.Journey("s", BOB, "Spam", [], {}, hops=[hop], mail_from="<a@example.com>")
    text = j.mermaid()
    assert '"' not in re.sub(r'\["[^"\]]*"\]|\(\["[^"\]]*"\]\)', "", text.split("classDef")[0])
    assert "mail.example.com" in text and ";#" not in text


def test_questions_diagram():
    Q = namedtuple("Q", "name type rcode")
    text = senderauth.questions_diagram([Q("example.com", "TXT", "NOERROR"), Q("x.example.com", "A", "NXDOMAIN")]).source
    assert "R->>D: 1. TXT example.com?" in text and "D-->>R: NXDOMAIN" in text
    assert "no question" in senderauth.questions_diagram([]).source


# -- reports ---------------------------------------------------------------------------------

def test_reports_received_charted_and_failure_reports_sent(lab):
    senderauth.publish(lab, "example.com", SPF)
    senderauth.publish(lab, "_dmarc.example.com", dmarc_record("quarantine", rua=["dmarc@example.com"],
                                                               ruf=["dmarc@example.com"]))
    assert lab.send("alice@example.com", BOB, subject="ours").ok
    senderauth.journey(lab, "ours")
    senderauth.send_from_host(lab, "verifier", "bounce@verifier.example.org", BOB,
                              message=build_message("alice@example.com", [BOB], "theirs"))
    assert senderauth.journey(lab, "theirs").folder == "Spam"
    with pytest.raises(ValueError):
        senderauth.merge_reports([])
    lab.send_dmarc_reports()
    lab.wait_for_mail("dmarc@example.com")
    reports = senderauth.aggregate_reports_received(lab)
    assert len(reports) == 1 and reports[0]["domain"] == "example.com"
    merged = senderauth.merge_reports(reports + reports)
    assert len(merged["rows"]) == 2 * len(reports[0]["rows"])
    svg = senderauth.report_picture(reports[0])._repr_svg_()
    assert svg.startswith("<svg") and "127.0.30.25" in svg and "127.0.50.25" in svg
    assert {r["source_ip"] for r in senderauth.report_table(reports[0]).rows} == {"127.0.30.25", "127.0.50.25"}
    sent = senderauth.send_failure_reports(lab)
    assert [s["subject"] for s in sent] == ["theirs"] and sent[0]["ok"]
    got = lab.wait_for_mail("dmarc@example.com", count=2)
    assert len(got) == 2
    failures = senderauth.failure_reports_received(lab)
    assert len(failures) == 1
    f = failures[0]
    assert f["original-subject"] == "theirs" and f["source-ip"] == "127.0.50.25"
    assert f["original-mail-from"] == "<bounce@verifier.example.org>" and "dmarc=fail" in f["authentication-results"]
    assert senderauth.aggregate_reports_received(lab) == reports  # a failure report is not an aggregate one


def test_no_failure_report_without_ruf(lab):
    senderauth.publish(lab, "_dmarc.example.com", dmarc_record("quarantine"))
    senderauth.send_from_host(lab, "verifier", "bounce@verifier.example.org", BOB,
                              message=build_message("alice@example.com", [BOB], "theirs"))
    senderauth.journey(lab, "theirs")
    assert senderauth.send_failure_reports(lab) == []
    raw = Path(lab.mailbox(BOB)[0]["path"]).read_bytes()
    assert senderauth.failure_report_for(lab, raw, client_ip="127.0.50.25", mail_from="bounce@verifier.example.org",
                                         helo="verifier.example.org") == []


def test_feedback_fields_joins_folded_lines():
    long_ar = "mx.inbox.example.org; " + "; ".join(f"spf=pass reason=\"a long reason number {i}\"" for i in range(6))
    dmarc = DMARCResult.make("fail", "not aligned", from_domain="example.com")
    report = failure_report(b"From: alice@example.com\r\nSubject: s\r\n\r\nbody\r\n", dmarc,
                            reporter="r@inbox.example.org", to="dmarc@example.com", source_ip="127.0.50.25",
                            authentication_results=long_ar)
    fields = senderauth.feedback_fields(report)
    assert fields["authentication-results"] == long_ar and fields["auth-failure"] == "dmarc"
    with pytest.raises(ValueError):
        senderauth.feedback_fields(build_message("a@example.com", [BOB], "plain"))


def test_provider_lines_are_taken_off_before_reporting():
    raw = (b"Authentication-Results: mx.inbox.example.org;\n\tspf=pass\nReceived: from x\n\tby y\n"
           b"Authentication-Results: kept.example.org; none\nFrom: a@example.com\n\nbody\n")
    out = senderauth._without_provider_lines(raw)
    assert out.startswith(b"Received: from x\r\n\tby y\r\n") and b"kept.example.org" in out
    assert out.endswith(b"\r\n\r\nbody\r\n")


def test_show_original_and_the_postmaster_dashboard(lab):
    senderauth.publish(lab, "example.com", "v=spf1 include:isp.example.net -all")
    senderauth.publish(lab, "_dmarc.example.com", dmarc_record("quarantine", rua=["dmarc@example.com"]))
    key = DKIMKey.generate("example.com", "mail")
    senderauth.publish(lab, key.record_name, key.record)
    assert senderauth.postmaster_dashboard(lab).messages == 0
    lab.send("alice@example.com", BOB, message=sign(build_message("alice@example.com", [BOB], "mine", "hi\n"), key))
    forged = build_message("alice@example.com", [BOB], "forged", "hi\n")
    senderauth.send_from_host(lab, "verifier", "bounce@verifier.example.org", BOB, message=forged)
    original = senderauth.show_original(lab, "mine")
    assert original.row("SPF") == "'PASS' with IP 127.0.30.25 (MAIL FROM domain example.com)"
    assert original.row("DKIM") == "'PASS' with domain example.com" and original.row("DMARC") == "'PASS'"
    assert original.headers.startswith("Authentication-Results: mx.inbox.example.org;")
    assert "<th" in original._repr_html_() and "Subject: mine" in str(original)
    senderauth.journey(lab, "forged")
    board = senderauth.postmaster_dashboard(lab)
    assert board.messages == 2
    assert board.rates["DMARC pass"] == 50 and board.rates["spam rate"] == 50 and board.rates["over TLS"] == 100
    assert board.svg().startswith("<svg") and "DMARC pass" in board.svg()
    assert board.table().rows[0]["measure"] == "SPF pass"
