"""Rehearsal in embedded mode (no root needed): the lab plays the profile's names, the doctor is
green on it, and the DNS faults of chapters 10-12 each fail the one check that names them."""
from __future__ import annotations

import threading

import pytest

from conftest import assert_no_threads_left
from labkit import Lab, senderauth
from labkit.lab.site import EXAMPLE, doctor, load


@pytest.fixture(scope="module")
def lab():
    before = set(threading.enumerate())
    with Lab(site=EXAMPLE) as lab:
        yield lab
    assert_no_threads_left(before)


def not_passing(lab) -> dict[str, str]:
    return {f.id: f.status for f in doctor.examine_lab(lab.status(), login=True) if f.status != "pass"}


def test_names_and_a_green_doctor(lab):
    assert lab.world.host("home").name == "mail.example.net" and lab.world.host("pc").name == "pc.example.net"
    assert lab.world.account("you@isp.example").role == "smarthost"
    assert not_passing(lab) == {}


def test_mail_from_your_domain_passes_spf_and_dmarc_at_the_provider(lab):
    res = lab.send("alice@example.net", "bob@inbox.example.org", via="submission", subject="embedded rehearsal")
    assert res.ok, res.reason
    lab.wait_for_mail("bob@inbox.example.org", subject="embedded rehearsal")
    assessed = [e for e in lab.events if e.kind == "assessed"][-1].details
    assert assessed["spf"] == "pass"


@pytest.mark.parametrize("name,value,check_id", [
    ("example.net", None, "dns.spf-record"),
    ("example.net", "v=spf1 ip4:127.0.20.0/24 -all", "dns.spf-covers-smarthost"),
    ("example.net", ["v=spf1 ip4:127.0.20.0/24 include:isp.example ~all", "v=spf1 -all"], "dns.spf-single"),
    ("_dmarc.example.net", None, "dns.dmarc-record"),
    ("_dmarc.example.net", "v=DMARC1; p=none; rua=mailto:reports@inbox.example.org", "dns.dmarc-report-authorised"),
    ("mail._domainkey.example.net", "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC5", "dns.dkim-key-matches"),
])
def test_a_dns_fault_fails_its_check_and_no_other(lab, name, value, check_id):
    saved = senderauth.published(lab, name)
    try:
        if value is None:
            senderauth.unpublish(lab, name)
        else:
            senderauth.publish(lab, name, value)
        got = not_passing(lab)
        assert got.get(check_id) == "fail", got
        assert [c for c, s in got.items() if s == "fail" and c != check_id] == [], got
    finally:
        senderauth.publish(lab, name, saved)
    assert not_passing(lab) == {}


def test_bare_starts_before_any_step():
    with Lab(site=load(EXAMPLE), site_apply=False) as bare:
        got = not_passing(bare)
        assert {"dns.spf-record", "dns.dmarc-record"} <= {c for c, s in got.items() if s == "fail"}
        assert bare.status()["site"]["applied"] is False
