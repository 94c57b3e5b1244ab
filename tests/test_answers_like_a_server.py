"""A mail server that answers like one (issue 13, part 2), in both modes.

Unknown users of a local domain are refused at RCPT (550 5.1.1), a recipient given twice is
delivered once, and past the recipient limit the answer is 452 4.5.3. In real mode Postfix does
it from a recipient map built from the lab's accounts, and Dovecot's userdb lists the same
mailboxes; Postfix asks Dovecot about logins on a unix socket in the sandbox; deferred mail
leaves within seconds of the ISP's return.
"""
from __future__ import annotations

import os
import smtplib
import stat
import time
from pathlib import Path

import pytest

from conftest import processes_mentioning, require_real_postfix
from labkit import Lab
from labkit.core.smtp.policy import RECIPIENT_LIMIT


@pytest.fixture(scope="module", params=["embedded", "real"])
def lab(request):
    if request.param == "real":
        require_real_postfix()
    lab = Lab(real=request.param == "real", dkim=False)
    try:
        lab.start()
        yield lab
    finally:
        folder = lab.dir
        lab.stop()
        if folder is not None and request.param == "real":
            assert not processes_mentioning(str(folder)), "a process of the lab outlived lab.stop()"


def _session(lab: Lab) -> smtplib.SMTP:
    smtp = smtplib.SMTP(lab.mta.host, lab.mta.port, source_address=(lab.world.host("isp").address, 0), timeout=20)
    smtp.ehlo("mail.isp.example.net")
    smtp.mail("bob@inbox.example.org")
    return smtp


@pytest.mark.parametrize("rcpt, code, text", [
    ("r0000@example.com", 550, "5.1.1"),
    ("R0999@example.com", 550, "5.1.1"),
    ("alice@example.com", 250, "2.1.5"),
    ("ALICE@example.com", 250, "2.1.5"),
    ("postmaster@example.com", 250, "2.1.5"),
    ("dmarc@example.com", 250, "2.1.5"),
])
def test_unknown_local_users_are_refused_at_rcpt(lab, rcpt, code, text):
    with _session(lab) as smtp:
        got, said = smtp.rcpt(rcpt)
    assert (got, said.decode()[:5]) == (code, text), said
    if code == 550:
        assert b"User unknown" in said
        box = lab.dir / "mail" / "example.com" / rcpt.partition("@")[0].lower()
        assert not box.exists(), f"a Maildir was made for the unknown {rcpt}"


def test_a_recipient_given_many_times_gets_one_copy(lab):
    before = len(lab.mailbox("alice@example.com"))
    subject = f"duplicates {lab.real}"
    with _session(lab) as smtp:
        for _ in range(RECIPIENT_LIMIT - 1):
            assert smtp.rcpt("alice@example.com")[0] == 250
        assert smtp.rcpt("postmaster@example.com")[0] == 250
        code, said = smtp.rcpt("dmarc@example.com")
        assert (code, said[:5]) == (452, b"4.5.3"), said  # past the limit: try the rest later
        assert smtp.data(f"Subject: {subject}\r\n\r\nonce\r\n".encode())[0] == 250
    lab.wait_for_mail("alice@example.com", subject=subject)
    lab.wait_for_mail("postmaster@example.com", subject=subject)
    time.sleep(1)
    assert len(lab.mailbox("alice@example.com")) == before + 1
    assert not lab.mailbox("dmarc@example.com", subject=subject)


@pytest.mark.parametrize("lab", ["real"], indirect=True)  # Postfix's own settings: real mode only
def test_real_postfix_asks_dovecot_on_a_unix_socket_only_postfix_may_use(lab):
    svc = lab.services["dovecot"]
    assert svc.port == 0 and svc.host.startswith(str(lab.dir))
    st = os.stat(svc.host)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    import pwd

    assert pwd.getpwuid(st.st_uid).pw_name == "postfix"
    conf = Path(lab.dovecot_config.conf_path).read_text()
    assert "inet_listener auth-postfix" not in conf
    main_cf = Path(lab.postfix_config.config_directory, "main.cf").read_text()
    assert f"smtpd_sasl_path = {svc.host}" in main_cf
    res = lab.send("alice@example.com", "bob@inbox.example.org", via="submission", subject="over the socket")
    assert res.ok, res.reason


@pytest.mark.parametrize("lab", ["real"], indirect=True)  # Postfix's own settings: real mode only
def test_real_postfix_retries_on_lab_scale_timers(lab):
    main_cf = Path(lab.postfix_config.config_directory, "main.cf").read_text()
    for line in ("queue_run_delay = 5s", "minimal_backoff_time = 5s", "maximal_backoff_time = 20s"):
        assert line in main_cf
    assert main_cf.count("a lab choice (production default:") >= 3
    lab.stop_service("smarthost")
    try:
        res = lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False, subject="retried")
        assert res.ok, res.reason
        queue_id = res.reply.text.rsplit(" ", 1)[-1]
        lab.postfix_runner.wait_for("deferred", queue_id=queue_id)
    finally:
        lab.start_service("smarthost")
    back = time.monotonic()
    lab.wait_for_mail("bob@inbox.example.org", subject="retried", timeout=30)  # no flush: the timers alone
    assert time.monotonic() - back < 30
