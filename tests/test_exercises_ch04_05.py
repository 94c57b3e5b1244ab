"""The checkers of chapters 04 and 05: ok for a right answer, not ok with a useful reason otherwise."""
from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization

from labkit import Lab, pki, tlsview
from labkit.teach.exercises import check, keys
from labkit.net.clients.smtp import auth_plain_string

ISP_USER, ISP_PASSWORD = "alice@isp.example.net", "isp-lab-password"


@pytest.fixture(scope="module")
def lab():
    with Lab() as lab:
        yield lab


@pytest.fixture(scope="module")
def ca(lab):
    return pki.CA.load(lab.dir / "tls")


def test_the_exercises_are_registered():
    assert {"04.1", "04.2", "04.3", "04.4", "05.1", "05.2", "05.3", "05.4"} <= set(keys())


# -- 04 ----------------------------------------------------------------------------------------

def test_04_1_own_certificate(lab, ca, tmp_path):
    cert = ca.sign(pki.make_csr(pki.make_key("ec"), "mail.example.com", ["mail.example.com"]))
    assert check("04.1", lab, certificate=cert).ok
    path = tmp_path / "mine.crt"
    path.write_bytes(pki.cert_pem(cert))
    assert check("04.1", lab, certificate=path).ok and check("04.1", lab, certificate=str(path)).ok

    other_ca = pki.CA.create("Other CA")
    wrong = check("04.1", lab, certificate=other_ca.sign(pki.make_csr(pki.make_key(), "mail.example.com")))
    assert not wrong.ok and "lab CA" in wrong.reason
    snake = check("04.1", lab, certificate=tlsview.self_signed(pki.make_key(), "mail.example.com"))
    assert not snake.ok and "lab CA" in snake.reason
    named = check("04.1", lab, certificate=ca.sign(pki.make_csr(pki.make_key(), "www.example.com")))
    assert not named.ok and "DNS:mail.example.com" in named.reason
    lab_own = check("04.1", lab, certificate=lab.dir / "tls" / "mail.example.com.crt")
    assert not lab_own.ok and "lab's own" in lab_own.reason
    assert "CA certificate" in check("04.1", lab, certificate=ca.cert).reason
    assert "pass certificate=" in check("04.1", lab).reason
    assert not check("04.1", lab, certificate="no-such-file.crt").ok


def test_04_2_which_fails(lab, ca):
    three = tlsview.three_certificates(ca, seed=7)
    truth = {k: tlsview.diagnose(c, ca.cert, "mail.example.com").details["verdict"] for k, c in three.items()}
    right = check("04.2", lab, certificates=three, answer=truth)
    assert right.ok, right.reason
    wrong_label = next(k for k, v in truth.items() if v == "ok")
    bad = check("04.2", lab, certificates=three, answer={**truth, wrong_label: "untrusted"})
    assert not bad.ok and wrong_label in bad.reason and "describe" in bad.reason
    assert "unknown verdict" in check("04.2", lab, certificates=three, answer={**truth, "A": "broken"}).reason
    assert "no verdict for" in check("04.2", lab, certificates=three, answer={"A": "ok"}).reason
    assert not check("04.2", lab, certificates=three, answer="A").ok
    assert not check("04.2", lab).ok


def test_04_3_submission_ports(lab):
    assert check("04.3", lab, implicit_tls=465, starttls=587).ok
    assert check("04.3", lab, implicit_tls="465", starttls="587").ok
    swapped = check("04.3", lab, implicit_tls=587, starttls=465)
    assert not swapped.ok and "STARTTLS" in swapped.reason
    relay = check("04.3", lab, implicit_tls=465, starttls=25)
    assert not relay.ok and "MTA-to-MTA" in relay.reason
    assert "not a port" in check("04.3", lab, implicit_tls="smtps", starttls=587).reason
    assert "not a mail submission port" in check("04.3", lab, implicit_tls=993, starttls=587).reason


def test_04_4_signature(lab):
    key = pki.make_key("ed25519")
    msg = b"I run mail.example.com"
    sig = tlsview.sign(key, msg)
    assert check("04.4", lab, public_key=key.public_key(), message=msg, signature=sig).ok
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert check("04.4", lab, public_key=pem.decode(), message=msg.decode(), signature=sig).ok
    private = check("04.4", lab, public_key=key, message=msg, signature=sig)
    assert not private.ok and "never hand it" in private.reason
    assert "never hand it" in check("04.4", lab, public_key=pki.key_pem(key), message=msg, signature=sig).reason
    changed = check("04.4", lab, public_key=key.public_key(), message=b"I run mail.example.com!", signature=sig)
    assert not changed.ok and "does not match" in changed.reason
    assert "name mail.example.com" in check("04.4", lab, public_key=key.public_key(), message=b"hi",
                                            signature=tlsview.sign(key, b"hi")).reason
    assert not check("04.4", lab).ok


# -- 05 ----------------------------------------------------------------------------------------

def test_05_1_auth_plain_string(lab):
    right = check("05.1", lab, answer=auth_plain_string(ISP_USER, ISP_PASSWORD))
    assert right.ok and "235" in right.reason and ISP_PASSWORD not in right.reason
    no_nul = base64.b64encode(f"{ISP_USER}\0{ISP_PASSWORD}".encode()).decode()
    for answer, why in ((no_nul, "2 NUL-separated"),
                        (auth_plain_string(ISP_USER, "wrong-password"), "third part"),
                        (auth_plain_string("alice@example.com", ISP_PASSWORD), "second part"),
                        ("%%%", "not base64")):
        r = check("05.1", lab, answer=answer)
        assert not r.ok and why in r.reason, (why, r.reason)
        assert ISP_PASSWORD not in r.reason and answer not in r.reason and "wrong-password" not in r.reason
    assert not check("05.1", lab).ok


def test_05_1_leaves_no_password_in_the_events(lab):
    check("05.1", lab, answer=auth_plain_string(ISP_USER, ISP_PASSWORD))
    text = (lab.dir / "log" / "events.jsonl").read_text()
    assert ISP_PASSWORD not in text and auth_plain_string(ISP_USER, ISP_PASSWORD) not in text


def test_05_2_auth_before_starttls(lab):
    right = check("05.2", lab, answer=530)
    assert right.ok and "530" in right.reason
    assert check("05.2", lab, answer="530").ok
    accepted = check("05.2", lab, answer=235)
    assert not accepted.ok and "in clear" in accepted.reason
    assert not check("05.2", lab, answer=538).ok
    assert "three digits" in check("05.2", lab, answer="five hundred").reason


def test_05_3_implicit_tls_needs_a_message_at_465():
    with Lab() as fresh:
        none = check("05.3", fresh)
        assert not none.ok and "via='submissions'" in none.reason
        fresh.send("alice@example.com", "bob@inbox.example.org", via="submission", subject="Exercise 3")
        assert not check("05.3", fresh).ok, "a message on 587 is not one on 465"
        fresh.send("alice@example.com", "bob@inbox.example.org", via="submissions", subject="Earlier")
        assert "Subject 'Exercise 3'" in check("05.3", fresh).reason, "an earlier message is not the answer"
        fresh.send("alice@example.com", "bob@inbox.example.org", via="submissions", subject="Exercise 3")
        right = check("05.3", fresh)
        assert right.ok and "before the greeting" in right.reason
        assert right.details["events"][:2] == ["connect", "tls"]


def test_05_4_op25b(lab):
    missing = check("05.4", lab, subject="Not sent", timeout=0.2)
    assert not missing.ok and "source='home'" in missing.reason
    blocked = lab.send("alice@example.com", "bob@inbox.example.org", via="inbox", auth=False, source="home",
                       subject="Tried port 25")
    assert not blocked.ok
    assert "OP25B" in check("05.4", lab, subject="Tried port 25", timeout=0.2).reason
    lab.send("alice@isp.example.net", "bob@inbox.example.org", via="inbox", auth=False, source="isp",
             subject="From the ISP itself")
    direct = check("05.4", lab, subject="From the ISP itself")
    assert not direct.ok and "did not go through the ISP's smarthost" in direct.reason
    lab.send(ISP_USER, "bob@inbox.example.org", via="smarthost", source="pc", subject="From the PC")
    assert check("05.4", lab, subject="From the PC").ok, "the PC is at home too"
    lab.send(ISP_USER, "bob@inbox.example.org", via="smarthost", source="home", subject="Past OP25B")
    right = check("05.4", lab, subject="Past OP25B")
    assert right.ok and right.details["hops"] == ["mail.isp.example.net", "mx.inbox.example.org"]
