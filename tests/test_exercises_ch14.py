"""Chapter 14's exercise checkers: a profile, the faults the doctor names, one break in a rehearsal."""
from __future__ import annotations

import dataclasses

from labkit.teach.exercises import check, keys
from labkit.teach.exercises.ch14 import FAULT_CHECKS
from labkit.lab.site import EXAMPLE, load
from labkit.lab.site.checks import check_ids


def test_registered():
    assert {"14.1", "14.2", "14.3"} <= set(keys())


def test_14_1_a_profile_on_465_with_quarantine():
    good = dataclasses.replace(load(EXAMPLE), smarthost_port=465, dmarc_policy="quarantine")
    assert check("14.1", answer=good.to_toml()).ok
    assert "465" in check("14.1", answer=load(EXAMPLE).to_toml()).reason
    assert "quarantine" in check("14.1", answer=dataclasses.replace(good, dmarc_policy="none").to_toml()).reason
    assert "RFC 2606" in check("14.1", answer=good.to_toml().replace("example.net", "mydomain.jp")).reason
    assert "does not load" in check("14.1", answer="[site]\ndomain = 1\n").reason


def test_14_2_the_faults_name_real_checks():
    assert set(FAULT_CHECKS.values()) <= set(check_ids())
    assert check("14.2", answer=dict(FAULT_CHECKS)).ok
    assert "no answer yet" in check("14.2", answer={}).reason
    wrong = {**FAULT_CHECKS, "the ISP's server is down": "dns.mx"}
    assert "not that check" in check("14.2", answer=wrong).reason


def test_14_3_needs_a_running_rehearsal():
    assert "running rehearsal" in check("14.3", None, answer="postfix.tls-level").reason
