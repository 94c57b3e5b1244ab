"""labkit.teach.breakfix against real Postfix: each break shows its failure in the evidence, and
restore() brings every waiting message out. Needs root and Postfix (skips otherwise, except
under LABKIT_REQUIRE_REAL=1)."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from conftest import postfix_processes, require_real_postfix
from labkit import ConfigError, Lab, breakfix
from labkit.errors import LabStateError

PASSWORD = "isp-lab-password"


@pytest.fixture(scope="module")
def lab():
    require_real_postfix()
    lab = Lab(real=True, dkim=False)
    config_dir = None
    try:
        lab.start()
        config_dir = lab.postfix_config.config_directory
        yield lab
    finally:
        lab.stop()
        if config_dir:
            assert not postfix_processes(config_dir), "a Postfix process outlived lab.stop()"


@pytest.fixture
def fresh(lab):
    """Each test starts from the lab's own configuration and leaves it so."""
    breakfix.restore(lab)
    yield lab
    breakfix.restore(lab)
    assert lab.postfix_runner.queue() == []


def _no_secret(report):
    assert PASSWORD not in str(report) and PASSWORD not in report._repr_html_()


def test_needs_a_real_lab():
    with Lab() as embedded, pytest.raises(LabStateError, match="real-mode"):
        breakfix.wrong_password(embedded)


def test_apply_config_puts_the_old_files_back_when_postfix_complains(fresh):
    folder = Path(fresh.postfix_config.config_directory)
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    bad = dataclasses.replace(fresh.postfix_config, extra={**fresh.postfix_config.extra,
                                                           "smtp_no_such_parameter": "yes"})
    with pytest.raises(ConfigError, match="not applied.*smtp_no_such_parameter"):
        breakfix.apply_config(fresh, bad)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    assert fresh.postfix_config == breakfix.original_config(fresh)


def test_apply_config_refuses_labkits_warnings_unless_told(fresh):
    careless = breakfix.memo_config(fresh.postfix_config)
    with pytest.raises(ConfigError, match="ERRATA 8.*strict=False"):
        breakfix.apply_config(fresh, careless)
    applied = breakfix.apply_config(fresh, careless, strict=False)
    assert applied.ok and applied.details["warnings"]
    assert "smtp_tls_security_level = may" in Path(fresh.postfix_config.config_directory, "main.cf").read_text()


def test_apply_config_refuses_another_folder(fresh, tmp_path):
    with pytest.raises(ConfigError, match="config_directory"):
        breakfix.apply_config(fresh, fresh.postfix_config.at(tmp_path))


def test_wrong_password_defers_and_restore_delivers(fresh):
    r = breakfix.wrong_password(fresh)
    assert r.status == "deferred" and r.status_event["sasl_failed"] and "535" in r.status_event["reason"]
    assert r.in_queue and [(e["success"], e["tls"]) for e in r.isp_logins] == [(False, True)]
    _no_secret(r)
    fixed = breakfix.restore(fresh)
    assert fixed.delivered == [r.queue_id]


def test_forgotten_postmap_keeps_the_old_password_until_postmap(fresh):
    broken = breakfix.wrong_password(fresh)
    r = breakfix.forget_postmap(fresh)
    assert r.queue_id == broken.queue_id and r.status == "deferred" and r.status_event["sasl_failed"]
    assert r.details["text_newer_than_map"] is True
    fixed = breakfix.run_postmap(fresh)
    assert fixed.delivered == [r.queue_id]
    assert [e["success"] for e in fixed.isp_logins] == [True]
    assert fresh.postfix_config == breakfix.original_config(fresh)


def test_mismatched_key_sends_no_auth_and_the_isp_says_530(fresh):
    r = breakfix.mismatched_key(fresh)
    assert r.status == "bounced" and "530" in r.status_event["reason"]
    assert r.logged("no auth info found") and not r.isp_logins
    assert any("differs from relayhost" in w for w in r.details["warnings"])
    bounce = fresh.dovecot_runner.wait_for_delivery(breakfix.PROBE_FROM)  # the bounce, over LMTP
    assert bounce[0]["folder"] == "INBOX"
    _no_secret(r)


def test_unbracketed_relayhost_is_looked_up_not_connected_to(fresh):
    r = breakfix.unbracketed_relay(fresh)
    assert r.status == "deferred" and r.status_event["relay"] == "none"
    assert "Host or domain name not found" in r.status_event["reason"] and r.in_queue
    assert breakfix.restore(fresh).delivered == [r.queue_id]


def _mount_namespace(pid) -> str:
    return os.readlink(f"/proc/{pid}/ns/mnt")


def test_with_the_lab_dns_postfix_asks_for_the_mx_of_an_unbracketed_relayhost(fresh):
    from labkit import find_zone

    master = fresh.postfix_runner.master_pid()
    with breakfix.postfix_on_lab_dns(fresh) as lab_dns:
        assert _mount_namespace(fresh.postfix_runner.master_pid()) != _mount_namespace("self")
        r = breakfix.unbracketed_relay(fresh)
        asked = [(q.type, q.name) for q in lab_dns.queries]
        assert ("MX", "mail.isp.example.net") in asked and r.status == "sent"
        zone = find_zone(fresh.zones, "isp.example.net")
        zone.add("mail.isp.example.net", "MX", "10 mx.inbox.example.org")
        try:
            elsewhere = breakfix.unbracketed_relay(fresh)
        finally:
            zone.remove("mail.isp.example.net", "MX")
        assert elsewhere.status == "deferred" and "mx.inbox.example.org[127.0.40.25]" in elsewhere.status_event["reason"]
    assert fresh.postfix_runner.master_pid() not in (None, master)     # restarted outside the namespace
    assert _mount_namespace(fresh.postfix_runner.master_pid()) == _mount_namespace("self")
    assert elsewhere.queue_id in breakfix.restore(fresh).delivered


def test_config_diff_shows_only_the_lines_that_change(lab):
    original = breakfix.original_config(lab)
    memo = breakfix.memo_config(original)
    lines = breakfix.config_diff(original, memo)
    assert "-smtp_tls_security_level = secure" in lines and "+smtp_tls_security_level = may" in lines
    assert not [line for line in lines if "relayhost" in line or line.startswith("#")]
    assert breakfix.config_diff(original, original) == []


def test_memo_six_lines_send_the_password_in_clear_when_starttls_is_stripped(fresh):
    r = breakfix.memo_six_lines(fresh)
    assert r.status == "sent"
    assert [(e["success"], e["tls"], e["mechanism"]) for e in r.isp_logins] == [(True, False, "PLAIN")]
    assert not [e for e in r.maillog if e.kind == "tls" and e["direction"] == "to"]
    _no_secret(r)
    fixed = breakfix.require_tls(fresh)
    assert fixed.status == "deferred" and "TLS is required, but was not offered" in fixed.status_event["reason"]
    assert not fixed.isp_logins
    assert breakfix.restore(fresh).delivered == [fixed.queue_id]


def test_encrypt_also_refuses_a_stripped_starttls(fresh):
    breakfix.memo_six_lines(fresh)
    fixed = breakfix.require_tls(fresh, "encrypt")
    assert fixed.status == "deferred" and not fixed.isp_logins
    with pytest.raises(ConfigError, match="does not require TLS"):
        breakfix.require_tls(fresh, "may")


def test_isp_down_waits_in_the_queue_and_nothing_is_lost(fresh):
    before = len(fresh.mailbox(breakfix.PROBE_TO))
    r = breakfix.isp_down(fresh)
    assert r.status == "deferred" and "refused" in r.status_event["reason"].lower() and r.in_queue
    back = breakfix.restore(fresh)
    assert back.delivered == [r.queue_id]
    arrived = fresh.wait_for_mail(breakfix.PROBE_TO, subject="While the ISP was down")
    assert [m["subject"] for m in arrived] == ["While the ISP was down"]
    assert len(fresh.mailbox(breakfix.PROBE_TO)) > before


def test_the_password_never_reaches_a_log(lab):
    breakfix.restore(lab)
    maillog = lab.postfix_runner.maillog_text()
    events = (lab.dir / "log" / "events.jsonl").read_text()
    assert PASSWORD not in maillog and PASSWORD not in events
