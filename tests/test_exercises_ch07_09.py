"""The checkers of chapters 07-09: ok for a right answer, not ok with a useful reason otherwise.
They run against real Postfix (skipped without it, except under LABKIT_REQUIRE_REAL=1)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conftest import require_real_postfix
from labkit import Lab, breakfix, relaytest
from labkit.teach.exercises import check, keys
from labkit.teach.exercises.ch07 import SIDES
from labkit.real.tools import run


@pytest.fixture(scope="module")
def lab():
    require_real_postfix()
    with Lab(real=True, dkim=False) as lab:
        yield lab


@pytest.fixture
def fresh(lab):
    breakfix.restore(lab)
    yield lab
    breakfix.restore(lab)


def test_the_exercises_are_registered():
    assert {f"0{c}.{n}" for c in (7, 8, 9) for n in (1, 2, 3, 4)} <= set(keys())


# -- 07 ----------------------------------------------------------------------------------------

def test_07_1_client_or_server():
    assert check("07.1", answer=dict(SIDES)).ok
    wrong = {**SIDES, "mynetworks": "client"}
    res = check("07.1", answer=wrong)
    assert not res.ok and "mynetworks" in res.reason
    assert not check("07.1", answer={"relayhost": "client"}).ok
    assert not check("07.1", answer="client").ok


def test_07_2_the_sasl_passwd_key(fresh):
    cfg = fresh.postfix_config
    assert check("07.2", fresh, answer=cfg.relayhost).ok
    res = check("07.2", fresh, answer=cfg.relayhost.replace("[", "").replace("]", ""))
    assert not res.ok and "brackets" in res.reason
    assert not check("07.2", fresh, answer="mail.isp.example.net:587").ok
    assert not check("07.2", fresh, answer=None).ok


def test_07_3_relayed_with_tls_and_auth(fresh):
    assert not check("07.3", fresh, subject="never sent", timeout=0.1).ok
    res = fresh.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False, subject="Exercise 07")
    assert res.ok
    got = check("07.3", fresh, subject="Exercise 07")
    assert got.ok, got.reason
    direct = fresh.send("alice@isp.example.net", "bob@inbox.example.org", via="smarthost", subject="not via Postfix")
    assert direct.ok
    assert "did not pass through Postfix" in check("07.3", fresh, subject="not via Postfix").reason


def test_07_4_postfix_itself_must_require_tls(fresh):
    cfg = fresh.postfix_config
    breakfix.apply_config(fresh, breakfix.memo_config(cfg), strict=False)     # the memo's lines: TLS optional
    unanswered = check("07.4", fresh, answer="postconf -e 'smtp_tls_security_level = encrypt'")
    assert not unanswered.ok and "has not reached it" in unanswered.reason, "a line never run is no answer"
    assert run(["postconf", "-c", cfg.config_directory, "-e", "smtpd_tls_security_level = encrypt"]).ok
    assert "smtp_" in check("07.4", fresh).reason
    assert run(["postconf", "-c", cfg.config_directory, "-e", "smtp_tls_security_level = encrypt"]).ok
    fresh.postfix_runner.reload()
    right = check("07.4", fresh)
    assert right.ok, right.reason
    assert not check("07.4", None).ok


# -- 08 ----------------------------------------------------------------------------------------

def test_08_1_and_08_2_wrong_password_then_nothing_lost(fresh):
    broken = breakfix.wrong_password(fresh)
    assert check("08.1", fresh, answer=535).ok
    assert not check("08.1", fresh, answer=530).ok
    res = check("08.2", fresh, queue_id=broken.queue_id)
    assert not res.ok and "waits in the queue" in res.reason
    breakfix.restore(fresh)
    assert check("08.2", fresh, queue_id=broken.queue_id).ok
    sent_at_once = breakfix.send_probe(fresh, "never deferred")
    fresh.postfix_runner.wait_for("sent", queue_id=sent_at_once)
    assert "never deferred" in check("08.2", fresh, queue_id=sent_at_once).reason


def test_08_3_tls_required_or_not(fresh):
    breakfix.apply_config(fresh, breakfix.memo_config(fresh.postfix_config), strict=False)
    res = check("08.3", fresh)
    assert not res.ok and "in clear" in res.reason
    breakfix.apply_config(fresh, dataclasses.replace(fresh.postfix_config, smtp_tls_security_level="encrypt"))
    res = check("08.3", fresh)
    assert res.ok, res.reason
    assert fresh.postfix_runner.queue() == []


def test_08_4_postmap_run_or_forgotten(fresh):
    assert check("08.4", fresh).ok
    breakfix.forget_postmap(fresh)
    res = check("08.4", fresh)
    assert not res.ok and "postmap" in res.reason
    cfg = fresh.postfix_config
    text = Path(cfg.sasl_passwd_path)
    assert run(["postmap", "-c", cfg.config_directory, f"hash:{text}"]).ok
    assert check("08.4", fresh).ok
    assert "isp-lab-password" not in check("08.4", fresh).reason


# -- 09 ----------------------------------------------------------------------------------------

def test_09_1_the_battery_refused(fresh):
    assert check("09.1", fresh, report=relaytest.run_against_lab(fresh)).ok
    assert "mynetworks" in check("09.1", fresh, report=relaytest.run_against_lab(fresh, "pc")).reason
    short = relaytest.run_against_lab(fresh, attempts=relaytest.BATTERY[:2])
    assert "incomplete" in check("09.1", fresh, report=short).reason
    assert not check("09.1", fresh, report=None).ok
    real = relaytest.run_against_lab(fresh)
    first = real.results[0]
    forged = dataclasses.replace(real, results=[dataclasses.replace(first, reply=dataclasses.replace(first.reply, code=599)),
                                                *real.results[1:]])
    said = check("09.1", fresh, report=forged)
    assert not said.ok and "not what the lab's Postfix answers" in said.reason, "a report must match the lab"


@pytest.mark.parametrize("answer,ok", [
    (["127.0.20.25/32", "127.0.20.100/32"], True),
    ("127.0.20.0/24", True),
    (["127.0.20.25/32"], False),
    (["127.0.0.0/8"], False),
    (["0.0.0.0/0"], False),
    (["127.0.20.0/33"], False),
])
def test_09_2_a_tight_mynetworks(lab, answer, ok):
    assert check("09.2", lab, answer=answer).ok is ok


def test_09_3_and_09_4(fresh):
    assert check("09.3", fresh, answer=554).ok
    assert not check("09.3", fresh, answer=250).ok
    before = fresh.postfix_config
    assert check("09.4", fresh, answer=4).ok  # the forms naming another domain; the rest: User unknown
    assert not check("09.4", fresh, answer=0).ok
    assert fresh.postfix_config == before
