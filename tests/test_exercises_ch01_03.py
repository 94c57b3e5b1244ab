"""The checkers of chapters 01-03 against a real Lab: ok for a right answer, a helpful reason otherwise."""
from __future__ import annotations

import pytest
from conftest import require_tool

from labkit import Lab, tools
from labkit.core.dns import find_zone
from labkit.teach.exercises import check, keys
from labkit.net.clients.smtp import RawSMTP
from labkit.core.world import distinct_loopback_available


@pytest.fixture
def lab():
    with Lab() as lab:
        yield lab


def _raw(subject: str, to: str = "alice@example.com", extra: str = "") -> str:
    return f"From: alice@example.com\r\nTo: {to}\r\nSubject: {subject}\r\n\r\n{extra or 'Hi'}\r\n"


def test_the_chapters_register_three_exercises_each():
    assert {f"0{c}.{n}" for c in (1, 2, 3) for n in (1, 2, 3)} <= set(keys())


# -- 01 ---------------------------------------------------------------------------------------

def test_01_1_second_received_line(lab):
    empty = check("01.1", lab, host="mail.isp.example.net")
    assert not empty.ok and "holds no message" in empty.reason
    assert lab.send("alice@example.com", "bob@inbox.example.org", via="submission").ok
    lab.wait_for_mail("bob@inbox.example.org")
    right = check("01.1", lab, host="mail.isp.example.net.")
    assert right.ok and right.details["host"] == "mail.isp.example.net"
    wrong = check("01.1", lab, host="mail.example.com")
    assert not wrong.ok and "bottom" in wrong.reason


def test_01_1_needs_several_hops(lab):
    assert lab.send("bob@inbox.example.org", "alice@example.com", via="mta", auth=False, source="inbox").ok
    one = check("01.1", lab, host="mail.example.com", address="alice@example.com")
    assert not one.ok and "only 1 Received" in one.reason


@pytest.mark.parametrize("role, ok, hint", [
    ("submission", True, "after AUTH"),
    ("Submissions", True, "after AUTH"),
    ("mta", False, "is an MTA"),
    ("smarthost", False, "ISP"),
    ("pop3", False, "port 587"),
    (None, False, "port 587"),
])
def test_01_2_msa_role(lab, role, ok, hint):
    result = check("01.2", lab, role=role)
    assert result.ok is ok and hint in result.reason


@pytest.mark.skipif(not distinct_loopback_available(), reason="OP25B needs the home network's own addresses")
def test_01_3_port25_refusal(lab):
    before = check("01.3", lab, host="mx.inbox.example.org", code=554)
    assert not before.ok and "no port-25 connection" in before.reason
    blocked = lab.send("alice@example.com", "bob@inbox.example.org", via="inbox", source="pc", auth=False)
    assert not blocked.ok
    assert check("01.3", lab, host="mx.inbox.example.org", code=554).ok
    assert check("01.3", lab, host="inbox", code="554").ok
    wrong_host = check("01.3", lab, host="mail.isp.example.net", code=554)
    assert not wrong_host.ok and "host" in wrong_host.reason and "code" not in wrong_host.reason
    wrong_code = check("01.3", lab, host="mx.inbox.example.org", code=550)
    assert not wrong_code.ok and "code" in wrong_code.reason


# -- 02 ---------------------------------------------------------------------------------------

def test_02_1_envelope_only_recipient(lab):
    assert "give the recipient" in check("02.1", lab).reason
    missing = check("02.1", lab, address="postmaster@example.com", subject="E1")
    assert not missing.ok and "RCPT TO:<postmaster@example.com>" in missing.reason
    named = lab.send("alice@example.com", "postmaster@example.com", via="mta", auth=False,
                     message=_raw("E1", to="alice@example.com, postmaster@example.com"))
    assert named.ok
    in_header = check("02.1", lab, address="postmaster@example.com", subject="E1")
    assert not in_header.ok and "headers name" in in_header.reason
    assert lab.send("alice@example.com", "postmaster@example.com", via="mta", auth=False,
                    message=_raw("E1b")).ok
    assert check("02.1", lab, address="postmaster@example.com", subject="E1b").ok


def test_02_2_reply_code_of_550(lab):
    before = check("02.2", lab, code=550)
    assert not before.ok and "has not seen" in before.reason
    sent = lab.send("alice@example.com", "550@example.com", via="mta", auth=False)
    assert not sent.ok
    assert check("02.2", lab, code=550).ok and check("02.2", lab, code="550").ok
    temporary = check("02.2", lab, code=451)
    assert not temporary.ok and "temporary" in temporary.reason
    assert "three digits" in check("02.2", lab, code="five-fifty").reason
    assert not check("02.2", lab, code=554).ok


def test_02_3_lone_dot_arrives(lab):
    assert "give the Subject" in check("02.3", lab).reason
    assert "no message" in check("02.3", lab, subject="E3").reason
    lab.send("alice@example.com", "alice@example.com", via="mta", auth=False, subject="E3", body="no dots\n")
    assert "no line" in check("02.3", lab, subject="E3").reason
    lab.send("alice@example.com", "alice@example.com", via="mta", auth=False, subject="E3", body="x\n.\n")
    assert "nothing after it" in check("02.3", lab, subject="E3").reason
    lab.send("alice@example.com", "alice@example.com", via="mta", auth=False, subject="E3",
             body="before\n.\nafter\n")
    assert check("02.3", lab, subject="E3").ok


def test_02_3_an_unstuffed_dot_fails(lab):
    with RawSMTP(lab.mta.host, lab.mta.port) as s:
        s.connect()
        s.ehlo("pc.example.com")
        s.mail("alice@example.com")
        s.rcpt("alice@example.com")
        s.command("DATA")
        for line in ["Subject: naive", "", "before", "."]:
            s.send_line(line)
        assert s.read_reply().code == 250
        assert s.command("after").code == 500
        s.quit()
    result = check("02.3", lab, subject="naive")
    assert not result.ok and "no line" in result.reason


# -- 03 ---------------------------------------------------------------------------------------

def test_03_1_mx_preference(lab):
    assert check("03.1", lab, preference=10).ok and check("03.1", lab, preference="10").ok
    assert "number before" in check("03.1", lab, preference=20).reason
    assert "not a number" in check("03.1", lab, preference="ten").reason
    find_zone(lab.zones, "inbox.example.org").replace("inbox.example.org", "MX", "10 other.inbox.example.org")
    gone = check("03.1", lab, preference=10)
    assert not gone.ok and "do not name" in gone.reason


def test_03_2_txt_published_and_asked(lab):
    unpublished = check("03.2", lab)
    assert not unpublished.ok and "no TXT at note.example.com" in unpublished.reason
    zone = find_zone(lab.zones, "example.com")
    zone.add("note.example.com", "TXT", "goodbye-lab")
    assert "not 'hello-lab'" in check("03.2", lab).reason
    zone.replace("note.example.com", "TXT", "hello-lab")
    assert not [q for q in lab.dns_queries() if q.name == "note.example.com"]   # the checker never asks
    assert "nobody has asked" in check("03.2", lab).reason
    assert "nobody has asked" in check("03.2", lab).reason, "checking twice is not asking"
    require_tool("dig")
    dig = tools.run(["dig", f"@{lab.dns.host}", "-p", str(lab.dns.port), "txt", "note.example.com", "+short"])
    assert dig.ok and '"hello-lab"' in dig.stdout
    assert check("03.2", lab).ok


def test_03_2_says_when_nobody_asked(lab):
    find_zone(lab.zones, "example.com").add("note.example.com", "TXT", "hello-lab")
    result = check("03.2", lab)
    assert not result.ok and "nobody has asked" in result.reason


def test_03_3_ptr(lab):
    assert check("03.3", lab, name="mx.inbox.example.org").ok
    assert check("03.3", lab, name="MX.Inbox.Example.org.").ok
    wrong = check("03.3", lab, name="mail.example.com")
    assert not wrong.ok and "-x 127.0.40.25" in wrong.reason
    nothing = check("03.3", lab, name="x.example.com", address="127.0.99.99")
    assert not nothing.ok and "no PTR" in nothing.reason
