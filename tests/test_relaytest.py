"""The relay-attempt battery (labkit.teach.relaytest), table-driven, against real Postfix and the
embedded MTA: from a stranger's address every attempt must be refused; mail for our own domain
must still be accepted (the control), and a trusted client (mynetworks) may relay."""
from __future__ import annotations

import pytest

from conftest import postfix_processes, require_real_postfix
from labkit import Lab, relaytest
from labkit.teach.relaytest import BATTERY, LOCAL_CONTROL, STRANGER, battery

KEYS = [a.key for a in BATTERY]


@pytest.fixture(scope="module", params=["real", "embedded"])
def lab(request):
    if request.param == "real":
        require_real_postfix()
    lab = Lab(real=request.param == "real")
    config_dir = None
    try:
        lab.start()
        config_dir = lab.postfix_config.config_directory if lab.postfix_config else None
        yield lab
    finally:
        lab.stop()
        if config_dir:
            assert not postfix_processes(config_dir), "a Postfix process outlived lab.stop()"


@pytest.fixture(scope="module")
def report(lab):
    return relaytest.run_against_lab(lab)


# -- the battery itself (pure) -----------------------------------------------------------------

def test_the_battery_covers_every_trick():
    assert KEYS == ["third-party", "null-sender", "percent-hack", "bang-path", "source-route", "quoted-local",
                    "double-at", "ip-literal"]
    assert all(a.trick and a.rcpt_to.startswith("<") and a.rcpt_to.endswith(">") for a in BATTERY)


@pytest.mark.parametrize("key,rcpt", [
    ("third-party", "<bob@inbox.example.org>"),
    ("percent-hack", "<bob%inbox.example.org@example.com>"),
    ("bang-path", "<inbox.example.org!bob@example.com>"),
    ("source-route", "<@example.com:bob@inbox.example.org>"),
    ("quoted-local", '<"bob@inbox.example.org"@example.com>'),
    ("double-at", "<bob@inbox.example.org@example.com>"),
    ("ip-literal", "<bob@[127.0.40.25]>"),
])
def test_each_attempt_is_written_as_spammers_write_it(key, rcpt):
    assert next(a for a in BATTERY if a.key == key).rcpt_to == rcpt


def test_the_battery_follows_its_parameters():
    b = battery(local_domain="example.test", target="eve@victim.test", target_ip="127.0.99.1")
    assert next(a for a in b if a.key == "percent-hack").rcpt_to == "<eve%victim.test@example.test>"
    assert next(a for a in b if a.key == "ip-literal").rcpt_to == "<eve@[127.0.99.1]>"
    assert next(a for a in b if a.key == "null-sender").mail_from == "<>"


# -- against a running server, one row each ----------------------------------------------------

@pytest.mark.parametrize("key", KEYS)
def test_every_attempt_from_a_stranger_is_refused(report, key):
    result = report[key]
    assert result.refused, f"{key} was ACCEPTED: {result.reply}"
    assert result.reply.code >= 500 and result.stage in ("MAIL", "RCPT")
    assert not any(line.text.startswith("DATA") for line in result.transcript), "the battery never sends DATA"


def test_the_report_says_so(report):
    assert report.all_refused and not report.accepted and len(report) == len(BATTERY)
    from labkit.core.world import distinct_loopback_available

    assert report.source == (STRANGER if distinct_loopback_available() else None)
    html = report.to_html()
    assert html.count("<tr") == len(BATTERY) + 1 and "ACCEPTED" not in html and "#dafbe1" in html


def test_the_control_shows_the_server_is_listening(lab):
    control = relaytest.run_against_lab(lab, attempts=[LOCAL_CONTROL])
    assert control.results[0].accepted and control.results[0].reply.code == 250


def test_a_trusted_client_may_relay(lab):
    # In real mode the PC is in Postfix's mynetworks; in embedded mode mail.example.com itself is.
    source = "pc" if lab.real else "home"
    trusted = relaytest.run_against_lab(lab, source, attempts=[BATTERY[0]])
    assert trusted.results[0].accepted, trusted.results[0].reply
    assert "ACCEPTED" in trusted.to_html() and "#ffebe9" in trusted.to_html()
