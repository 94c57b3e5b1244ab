"""Real mode: real Postfix from the sandbox plays mail.example.com, relaying through the lab ISP.

Needs root and Postfix (scripts/install-system-packages.sh): skipped without them, except
under LABKIT_REQUIRE_REAL=1 (CI), where they must be there.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import postfix_processes, processes_mentioning, real_lab, require_real_postfix


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="module")
def lab():
    yield from real_lab()


def test_postfix_plays_mail_example_com(lab):
    assert {"postfix", "mta", "mda", "smarthost", "inbox", "dovecot", "imap", "pop3"} <= set(lab.services)
    assert lab.submission.port != lab.mta.port and "Dovecot SASL" in lab.submission.what
    assert "real Dovecot" in lab.imap.what and "real Dovecot" in lab.mda.what
    assert lab.mta == lab.services["mta"] and lab.mta.port == lab.postfix.port
    assert lab.mta.host == "127.0.20.25" and _listening(lab.mta.host, lab.mta.port)
    st = lab.status()
    assert st["mode"] == "real" and Path(st["postfix"]["config_dir"], "main.cf").exists()


def test_relayed_through_the_isp_with_verified_tls_and_auth(lab):
    res = lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False,
                   subject="through real Postfix")
    assert res.ok, res.reason
    queue_id = res.reply.text.rsplit(" ", 1)[-1]
    sent = lab.postfix_runner.wait_for("sent", queue_id=queue_id)
    assert sent.details["relay"].startswith("127.0.30.25")
    tls = [e for e in lab.postfix_runner.events() if e.kind == "tls" and e.queue_id in (None, queue_id)]
    assert any(e.details.get("trust") == "Verified" or "Verified" in e.line for e in tls), \
        "Postfix did not log a verified TLS connection to the smarthost"
    accepted = lab.events.wait_for("accepted", role="smarthost", mail_from="alice@example.com")
    assert accepted["tls"] is True and accepted["auth_user"] == "alice@isp.example.net"
    assert accepted["peer"] == "127.0.20.25"
    msgs = lab.wait_for_mail("bob@inbox.example.org")
    assert any(m["subject"] == "through real Postfix" for m in msgs)


def test_local_mail_goes_to_the_mda_over_lmtp(lab):
    res = lab.send("bob@inbox.example.org", "alice@example.com", via="mta", auth=False, source="isp",
                   subject="for alice, over LMTP")
    assert res.ok, res.reason
    delivered = lab.dovecot_runner.wait_for_delivery("alice@example.com")
    assert delivered[0]["folder"] == "INBOX"
    assert any(m["subject"] == "for alice, over LMTP" for m in lab.wait_for_mail("alice@example.com"))


def test_postfix_refuses_to_relay_for_strangers(lab):
    res = lab.send("mallory@example.net", "victim@example.org", via="mta", auth=False, source="inbox")
    assert not res.ok
    assert res.refused["victim@example.org"].code == 554


def test_password_is_in_no_log_or_output(lab):
    password = dict(lab.world.logins("smarthost"))["alice@isp.example.net"]
    maillog = Path(lab.status()["postfix"]["maillog"]).read_text()
    events = (lab.dir / "log" / "events.jsonl").read_text()
    assert password not in maillog and password not in events
    assert oct(Path(lab.status()["postfix"]["config_dir"], "sasl_passwd").stat().st_mode & 0o777) == "0o600"


def test_labkit_up_real_and_down_leave_nothing(tmp_path):
    require_real_postfix()
    folder = Path("/var/lib/mail-lab") / f"cli-{os.getpid()}"
    try:
        up = subprocess.run([sys.executable, "-m", "labkit", "up", "--real", "--dir", str(folder), "--json"],
                            capture_output=True, text=True, timeout=60)
        assert up.returncode == 0, up.stderr
        st = json.loads(up.stdout)
        assert st["mode"] == "real" and "postfix" in st["services"]
        config_dir = st["postfix"]["config_dir"]
        assert postfix_processes(config_dir)
        down = subprocess.run([sys.executable, "-m", "labkit", "down", "--dir", str(folder)],
                              capture_output=True, text=True, timeout=60)
        assert down.returncode == 0, down.stderr
        assert not postfix_processes(config_dir), "a Postfix process outlived labkit down"
        assert not _listening(st["services"]["postfix"]["host"], st["services"]["postfix"]["port"])
    finally:
        subprocess.run([sys.executable, "-m", "labkit", "down", "--dir", str(folder)], capture_output=True)
        subprocess.run(["rm", "-rf", str(folder)])


def test_isp_down_then_back_nothing_lost(lab):
    before = len(lab.mailbox("bob@inbox.example.org"))
    lab.stop_service("smarthost")
    try:
        res = lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False,
                       subject="while the ISP was down")
        assert res.ok, res.reason
        queue_id = res.reply.text.rsplit(" ", 1)[-1]
        deferred = lab.postfix_runner.wait_for("deferred", queue_id=queue_id)
        assert "refused" in deferred.details["reason"].lower(), deferred.details
        assert any(e.queue_id == queue_id for e in lab.postfix_runner.queue())
    finally:
        lab.start_service("smarthost")
    lab.postfix_runner.flush()
    lab.postfix_runner.wait_for("sent", queue_id=queue_id, timeout=20)
    assert lab.wait_for_mail("bob@inbox.example.org", subject="while the ISP was down")
    assert len(lab.mailbox("bob@inbox.example.org")) > before


def test_opendkim_signs_and_with_spf_the_provider_files_to_inbox(lab):
    from labkit.core.auth.dkim import verify
    from labkit.core.dns import find_zone

    assert lab.services["opendkim"].protocol == "milter"
    assert lab.status()["opendkim"]["record"] == "mail._domainkey.example.com"
    zone = find_zone(lab.zones, "example.com")
    zone.replace("example.com", "TXT", ["v=spf1 include:isp.example.net -all"])
    try:
        before = len(lab.mailbox("bob@inbox.example.org"))
        assert lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False,
                        subject="signed by OpenDKIM").ok
        msg = lab.wait_for_mail("bob@inbox.example.org", subject="signed by OpenDKIM")[0]
        assert len(lab.mailbox("bob@inbox.example.org")) > before
        result = verify(Path(msg["path"]).read_bytes(), resolver=lab.resolver())
        assert result.ok and "example.com" in result.reason, result.reason
        assert msg["folder"] == "INBOX"
        lab.opendkim_runner.wait_for_log("signed", domain="example.com")
    finally:
        zone.remove("example.com", "TXT")


def test_stop_leaves_no_opendkim(lab):
    conf = lab.status()["opendkim"]["conf"]
    assert processes_mentioning(conf)  # running now; the module fixture proves the rest at stop


def test_submission_through_postfix_with_dovecot_sasl(lab):
    res = lab.send("alice@example.com", "bob@inbox.example.org", via="submission", subject="587 with AUTH")
    assert res.ok, res.reason
    verbs = [c.split()[0].upper() for c in res.transcript.commands() if c.strip()]
    assert verbs.index("STARTTLS") < verbs.index("AUTH") < verbs.index("MAIL")
    wrong = lab.send("alice@example.com", "bob@inbox.example.org", via="submission",
                     auth=("alice@example.com", "not-the-password"))
    assert not wrong.ok and wrong.reply.code == 535
    assert lab.wait_for_mail("bob@inbox.example.org", subject="587 with AUTH")


def test_submissions_through_postfix_is_implicit_tls_with_dovecot_sasl(lab):
    assert lab.submissions.protocol == "smtps" and lab.submissions.standard_port == 465
    assert "real Postfix with Dovecot SASL" in lab.submissions.what and lab.submissions.host == "127.0.20.25"
    assert len({lab.mta.port, lab.submission.port, lab.submissions.port}) == 3
    master_cf = Path(lab.postfix_config.config_directory, "master.cf").read_text()
    assert f"127.0.20.25:{lab.submissions.port} " in master_cf
    assert "  -o smtpd_tls_wrappermode=yes" in master_cf.splitlines()
    res = lab.send("alice@example.com", "bob@inbox.example.org", via="submissions", subject="465 with AUTH")
    assert res.ok, res.reason
    verbs = [c.split()[0].upper() for c in res.transcript.commands() if c.strip()]
    assert "STARTTLS" not in verbs and verbs.index("AUTH") < verbs.index("MAIL")
    wrong = lab.send("alice@example.com", "bob@inbox.example.org", via="submissions",
                     auth=("alice@example.com", "not-the-password"))
    assert not wrong.ok and wrong.reply.code == 535
    anonymous = lab.send("alice@example.com", "bob@inbox.example.org", via="submissions", auth=False)
    assert not anonymous.ok and anonymous.reply.code == 554  # no relaying without a login
    assert lab.wait_for_mail("bob@inbox.example.org", subject="465 with AUTH")


def test_plain_text_on_submissions_fails_the_tls_handshake(lab):
    with socket.create_connection((lab.submissions.host, lab.submissions.port), timeout=10,
                                  source_address=("127.0.20.100", 0)) as s:
        s.sendall(b"EHLO pc.example.com\r\n")  # what a client expecting 220 first would say
        said = b""
        try:
            while chunk := s.recv(4096):  # Postfix reads it as a TLS record, fails, and hangs up
                said += chunk
        except ConnectionResetError:
            pass  # it hung up with our line unread: the kernel answers with a reset
    assert not said.startswith(b"220") and b"ESMTP" not in said
    def handshake_failed() -> bool:  # logged under the service's own syslog_name
        return any("postfix/submissions/smtpd" in line and "SSL_accept error from" in line
                   for line in lab.postfix_runner.maillog_text().splitlines())

    deadline = time.monotonic() + 5
    while not handshake_failed() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert handshake_failed(), lab.postfix_runner.maillog_tail()


def test_dovecot_serves_imap_and_pop3_for_every_lab_mailbox(lab):
    import imaplib
    import poplib
    import ssl

    ctx = ssl.create_default_context(cafile=str(lab.ca_path))
    assert lab.send("bob@inbox.example.org", "alice@example.com", via="mta", auth=False, source="isp",
                    subject="read me over IMAP").ok
    lab.dovecot_runner.wait_for_delivery("alice@example.com")
    with imaplib.IMAP4(lab.imap.host, lab.imap.port) as imap:
        assert "LOGINDISABLED" in imap.capabilities  # no password before STARTTLS
        imap.starttls(ssl_context=ctx)
        imap.login("alice@example.com", "alice-lab-password")
        imap.select("INBOX", readonly=True)
        _, found = imap.search(None, '(SUBJECT "read me over IMAP")')
        assert found[0].split()
        imap.logout()
    # bob's mailbox was written by the provider's MX (embedded, as root): Dovecot reads it too
    lab.wait_for_mail("bob@inbox.example.org")
    pop = poplib.POP3(lab.pop3.host, lab.pop3.port, timeout=10)
    try:
        pop.stls(context=ctx)
        pop.user("bob@inbox.example.org")
        pop.pass_("bob-lab-password")
        count, _ = pop.stat()
        assert count >= 1
    finally:
        pop.quit()


def test_hosts_table_in_real_mode_names_the_real_daemons(lab):
    rows = {r["role"]: r for r in lab.hosts_table()}
    assert {"postfix", "dovecot", "opendkim", "mta", "imap"} <= set(rows)
    assert rows["mta"]["what"].startswith("real Postfix") and rows["imap"]["what"].startswith("real Dovecot")
    assert rows["postfix"]["in the memo"].startswith("the learner's own server")
