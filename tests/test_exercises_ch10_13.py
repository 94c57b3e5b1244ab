"""The checkers of chapters 10-13: ok for a right answer, not ok with a useful reason otherwise.
10-12 run on the embedded lab; 13.1 and 13.2 need real Postfix and OpenDKIM (skipped without them,
except under LABKIT_REQUIRE_REAL=1)."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import require_real_postfix, require_tool
from labkit import Lab, senderauth
from labkit.core.auth.dkim import DKIMKey, sign
from labkit.core.auth.dmarc import aligned, dmarc_record
from labkit.teach.exercises import check, keys
from labkit.teach.exercises.ch12 import PAIRS
from labkit.core.auth.reports import verifier_results
from labkit.teach.exercises.ch13 import PREDICTIONS
from labkit.net.clients.smtp import build_message

BOB = "bob@inbox.example.org"


@pytest.fixture
def lab():
    with Lab() as lab:
        yield lab


def test_the_exercises_are_registered():
    assert {"10.1", "10.2", "10.3", "11.1", "11.2", "11.3", "11.4", "12.1", "12.2", "12.3", "12.4",
            "13.1", "13.2", "13.3"} <= set(keys())


# -- 10 ----------------------------------------------------------------------------------------

def test_10_1_the_record_must_allow_the_isp_and_no_one_else(lab):
    assert "no SPF record" in check("10.1", lab).reason
    senderauth.publish(lab, "_spf.example.com", "v=spf1 a:mail.isp.example.net -all")
    assert "erratum 6" in check("10.1", lab).reason
    senderauth.publish(lab, "example.com", "v=spf1 ip4:127.0.20.25 -all")
    assert "include:isp.example.net" in check("10.1", lab).reason
    senderauth.publish(lab, "example.com", "v=spf1 include:isp.example.net +all")
    assert "-all" in check("10.1", lab).reason
    senderauth.publish(lab, "example.com", "v=spf1 include:isp.example.net ~all")
    assert "Exercise 10.1" in check("10.1", lab).reason, "a record alone is not the whole answer"
    assert lab.send("alice@example.com", BOB, subject="Exercise 10.1").ok
    senderauth.journey(lab, "Exercise 10.1")
    assert check("10.1", lab).ok
    senderauth.publish(lab, "example.com", "v=spf1 include:_spf.example.com -all")
    assert check("10.1", lab).ok
    assert not check("10.1", None).ok


@pytest.mark.parametrize("answer,ok,says", [("example.com", True, "RFC 7208"), ("example.com.", True, ""),
                                            ("_spf.example.com", False, "erratum 6"), ("isp.example.net", False, ""),
                                            ("", False, "")])
def test_10_2_where_spf_is_looked_up(answer, ok, says):
    result = check("10.2", answer=answer)
    assert result.ok is ok and says in result.reason


def test_10_3_count_the_lookups(lab):
    assert "no SPF record" in check("10.3", lab, answer=0).reason
    senderauth.publish(lab, "example.com", "v=spf1 ip4:127.0.20.25 include:isp.example.net -all")
    assert check("10.3", lab, answer=2).ok
    assert not check("10.3", lab, answer=1).ok
    assert not check("10.3", lab, answer=True).ok


# -- 11 (a key published in the lab; dkimpy signs as OpenDKIM would) -------------------------

@pytest.fixture
def signed(lab):
    key = DKIMKey.generate("example.com", "mail", "rsa2048")
    senderauth.publish(lab, key.record_name, key.record)
    message = sign(build_message("alice@example.com", [BOB], "signed", "Hello.\n"), key,
                   headers=["From", "To", "Subject", "Date"])
    return lab, message


def test_11_1_the_signed_headers(signed):
    _lab, message = signed
    assert check("11.1", message=message, answer=["From", "to", "subject:", "date"]).ok
    assert "missing date" in check("11.1", message=message, answer=["from", "to", "subject"]).reason
    assert "not signed: message-id" in check("11.1", message=message,
                                              answer=["from", "to", "subject", "date", "message-id"]).reason
    assert not check("11.1", message=build_message("a@example.com", [BOB]), answer=["from"]).ok
    assert not check("11.1", message=message, answer="from").ok


def test_11_2_and_11_3_tampering(signed):
    lab, message = signed
    assert check("11.2", lab, original=message, tampered=b"X-Note: hi\r\n" + message).ok
    assert not check("11.2", lab, original=message, tampered=message).ok
    assert "breaks" in check("11.2", lab, original=message,
                             tampered=message.replace(b"Subject: signed", b"Subject: changed")).reason
    assert check("11.3", lab, original=message, tampered=message.replace(b"Hello.", b"Hullo.")).ok
    assert "not on the body" in check("11.3", lab, original=message,
                                      tampered=message.replace(b"Subject: signed", b"Subject: changed")).reason
    assert "still verifies" in check("11.3", lab, original=message, tampered=b"X-Note: hi\r\n" + message).reason
    unsigned = build_message("alice@example.com", [BOB], "x")
    assert "does not verify" in check("11.2", lab, original=unsigned, tampered=b"X: y\r\n" + unsigned).reason


def test_11_4_strings(signed):
    lab, _message = signed
    assert check("11.4", lab, answer=2).ok
    assert "255" in check("11.4", lab, answer=1).reason
    assert "nothing is published" in check("11.4", lab, name="none._domainkey.example.com", answer=1).reason


# -- 12 ----------------------------------------------------------------------------------------

def test_12_1_the_record(lab):
    assert "no DMARC record" in check("12.1", lab).reason
    senderauth.publish(lab, "_dmarc.example.com", dmarc_record("none", rua=["dmarc@example.com"]))
    assert "only monitors" in check("12.1", lab).reason
    senderauth.publish(lab, "_dmarc.example.com", dmarc_record("quarantine", rua=["postmaster@example.com"]))
    assert "dmarc@example.com" in check("12.1", lab).reason
    senderauth.publish(lab, "_dmarc.example.com", "v=DMARC1; p=quarantin")
    assert not check("12.1", lab).ok
    senderauth.publish(lab, "_dmarc.example.com", dmarc_record("reject", rua=["dmarc@example.com"]))
    assert check("12.1", lab).ok


def test_12_2_alignment():
    truth = [aligned(*p) for p in PAIRS]
    assert truth == [True, True, False, True, False, False]
    assert check("12.2", answer=truth).ok
    flipped = list(truth)
    flipped[2] = True
    assert "pair 2" in check("12.2", answer=flipped).reason
    assert not check("12.2", answer=truth[:3]).ok


def test_12_3_and_12_4_reports_and_refusal(lab):
    assert "no aggregate report" in check("12.3", lab, answer=0).reason
    assert "no message from example.com with Subject 'Exercise 12.4' was refused" in check("12.4", lab).reason
    senderauth.publish(lab, "_dmarc.example.com", dmarc_record("quarantine", rua=["dmarc@example.com"]))
    forged = build_message("alice@example.com", [BOB], "Exercise 12.4")
    senderauth.send_from_host(lab, "verifier", "bounce@verifier.example.org", BOB, message=forged)
    senderauth.journey(lab, "Exercise 12.4")
    assert "Spam" in check("12.4", lab).reason
    lab.send_dmarc_reports()
    lab.wait_for_mail("dmarc@example.com")
    assert check("12.3", lab, answer=1).ok
    assert not check("12.3", lab, answer=0).ok
    senderauth.publish(lab, "_dmarc.example.com", dmarc_record("reject", rua=["dmarc@example.com"]))
    earlier = build_message("alice@example.com", [BOB], "an earlier forgery")
    assert senderauth.send_from_host(lab, "verifier", "bounce@verifier.example.org", BOB, message=earlier).reply.code == 550
    assert "Subject 'Exercise 12.4'" in check("12.4", lab).reason, "an earlier refusal is not the answer"
    assert senderauth.send_from_host(lab, "verifier", "bounce@verifier.example.org", BOB, message=forged).reply.code == 550
    assert check("12.4", lab).ok
    senderauth.publish(lab, "_dmarc.example.com", dmarc_record("none", rua=["dmarc@example.com"]))
    assert "p=none" in check("12.4", lab).reason, "the refusal must come from the record published now"


# -- 13 ----------------------------------------------------------------------------------------

def test_13_3_predictions():
    assert check("13.3", answer=dict(PREDICTIONS)).ok
    assert "no answer yet" in check("13.3", answer={"spf broken": "Inbox"}).reason
    wrong = {**PREDICTIONS, "spf broken": "Spam"}
    assert "spf broken" in check("13.3", answer=wrong).reason


def test_verifier_summary_is_read():
    text = "Summary of Results\nSPF check   : pass\nDKIM check  : fail\nDMARC check : none\nTLS : pass\n"
    assert verifier_results(text) == {"spf": "pass", "dkim": "fail", "dmarc": "none"}


@pytest.fixture(scope="module")
def real_lab():
    require_real_postfix()
    for tool in ("opendkim", "opendkim-genkey", "opendkim-testkey"):
        require_tool(tool)
    with Lab(real=True) as lab:
        yield lab


def test_13_1_and_13_2_the_whole_chain(real_lab):
    lab = real_lab
    assert "needs the real-mode lab" in check("13.1", None).reason
    assert "Exercise 13.2" in check("13.2", lab, answer={"spf": "pass"}).reason
    # straight to the ISP, not through Postfix
    assert lab.send("alice@isp.example.net", BOB, via="smarthost", subject="not via Postfix").ok
    assert "did not pass through Postfix" in check("13.1", lab, subject="not via Postfix").reason
    # through Postfix, but no SPF and no DMARC yet: DKIM alone
    assert lab.send("alice@example.com", BOB, via="mta", auth=False, subject="no records").ok
    assert "spf none" in check("13.1", lab, subject="no records").reason
    senderauth.publish(lab, "example.com", "v=spf1 include:isp.example.net -all")
    senderauth.publish(lab, "_dmarc.example.com", dmarc_record("quarantine", rua=["dmarc@example.com"]))
    try:
        assert lab.send("alice@example.com", BOB, via="mta", auth=False, subject="Exercise 13").ok
        result = check("13.1", lab, subject="Exercise 13")
        assert result.ok, result.reason
        assert lab.send("alice@example.com", "check-auth@verifier.example.org", via="mta", auth=False,
                        subject="verify").ok
        report = senderauth.wait_for_subject(lab, "alice@example.com", "Authentication Report: verify")
        said = verifier_results(Path(report["path"]).read_text())
        assert said["dkim"] == "pass"
        passing = {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
        assert "Exercise 13.2" in check("13.2", lab, answer=passing).reason, "another message's report is no answer"
        assert check("13.2", lab, answer=passing, subject="verify").ok
        assert lab.send("alice@example.com", "check-auth@verifier.example.org", via="mta", auth=False,
                        subject="Exercise 13.2").ok
        senderauth.wait_for_subject(lab, "alice@example.com", "Authentication Report: Exercise 13.2")
        assert "answer=" in check("13.2", lab).reason
        assert check("13.2", lab, answer=passing).ok
        assert "dmarc" in check("13.2", lab, answer={"spf": "pass", "dkim": "pass", "dmarc": "fail"}).reason
    finally:
        senderauth.unpublish(lab, "example.com")
        senderauth.unpublish(lab, "_dmarc.example.com")
