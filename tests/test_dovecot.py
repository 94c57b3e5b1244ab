"""Real Dovecot from the sandbox: POP3, IMAP, LMTP and Postfix's SMTP AUTH, for mail.example.com.

Pure tests first (rendering, refusals, hashing), then one Dovecot started for the module as
the lab's mail.example.com (127.0.20.25, the lab certificate, the lab accounts) and spoken to
the way a learner does: poplib, imaplib, ``openssl s_client``, smtplib.LMTP, and a real Postfix
whose submission port asks Dovecot whether a password is right. Every process started is
stopped, and the last test proves that none is left.
"""
from __future__ import annotations

import base64
import dataclasses
import imaplib
import os
import poplib
import shutil
import smtplib
import socket
import ssl
import stat
import subprocess
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from conftest import REQUIRE_REAL, require_real_postfix, require_tool
from labkit.core import pki
from labkit.net.context import LabContext
from labkit.real.dovecot import (
    LISTENERS,
    DovecotConfig,
    DovecotRunner,
    free_port,
    hash_password,
    require_dovecot,
    verify_ssha512,
)
from labkit.real.dovecot import config as config_module
from labkit.real.dovecot import runner as runner_module
from labkit.errors import ConfigError, LabRunningError, RealModeUnavailable, StartError
from labkit.net.events import EventLog
from labkit.real.procs import cmdline, pids
from labkit.net.mailbox.maildir import deliver, deliver_to_folder, list_folder
from labkit.core.world import default_world

BASE = Path("/var/lib/mail-lab")  # every parent 755 and root's
HOME = "127.0.20.25"
ALICE, ALICE_PW = "alice@example.com", "alice-lab-password"


def sample(folder: str = "/var/lib/mail-lab/x/dovecot", **more) -> DovecotConfig:
    values = {"folder": folder, "mail_root": "/var/lib/mail-lab/x/mail", "cert_path": "/var/lib/mail-lab/x/tls/m.crt",
              "key_path": "/var/lib/mail-lab/x/tls/m.key", "accounts": {ALICE: ALICE_PW}, "imap_port": 10143,
              "imaps_port": 10993, "pop3_port": 10110, "pop3s_port": 10995, "lmtp_port": 10024, "auth_port": 10025}
    values.update(more)
    return DovecotConfig(**values)


def message(subject: str, to: str = ALICE) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "carol@isp.example.net", to, subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@isp.example.net>"
    msg.set_content(f"{subject}: hello from the lab\n")
    return msg.as_bytes()


# --------------------------------------------------------------------------------------------
# Pure: rendering and refusals


def test_render_has_the_sandbox_the_listeners_and_tls():
    cfg = sample()
    text = cfg.render()
    for line in ("base_dir = /var/lib/mail-lab/x/dovecot/run", "state_dir = /var/lib/mail-lab/x/dovecot/state",
                 "log_path = /var/lib/mail-lab/x/dovecot/dovecot.log",
                 "info_log_path = /var/lib/mail-lab/x/dovecot/dovecot.log", f"instance_name = {cfg.instance_name}",
                 f"listen = {HOME}", "ssl = required", "ssl_cert = </var/lib/mail-lab/x/tls/m.crt",
                 "ssl_key = </var/lib/mail-lab/x/tls/m.key", "disable_plaintext_auth = yes",
                 "mail_location = maildir:/var/lib/mail-lab/x/mail/%d/%n", "mail_uid = mail",
                 "  args = username_format=%u /var/lib/mail-lab/x/dovecot/passwd"):
        assert line in text.splitlines(), line
    for port in (10143, 10993, 10110, 10995, 10024, 10025):
        assert f"    port = {port}" in text
    assert "auth_failure_delay = 1 secs" in text and "unix_listener anvil-auth-penalty {" in text
    assert "anvil-auth-penalty" not in sample(auth_penalty=True).render()
    assert text.count("ssl = yes") == 2  # imaps and pop3s: implicit TLS
    assert ALICE_PW not in text and ALICE_PW not in repr(cfg) and "Secret(********)" in repr(cfg)
    assert cfg.lmtp_transport == f"lmtp:inet:{HOME}:10024" and cfg.sasl_path == f"inet:{HOME}:10025"
    assert cfg.ports() == {"imap": 10143, "imaps": 10993, "pop3": 10110, "pop3s": 10995, "mda": 10024,
                           "auth": 10025}


def test_a_listener_left_out_is_off_not_on_its_standard_port():
    text = sample(imaps_port=None, pop3s_port=None, lmtp_port=None, auth_port=None).render()
    assert text.count("    port = 0") == 2  # imaps and pop3s would otherwise open 993 and 995
    assert "service lmtp" not in text and "service auth" not in text
    assert "allow_all_users=yes" in sample().render()
    assert "allow_all_users=yes" not in sample(accept_any_recipient=False).render()
    assert sample(lmtp_port=None).lmtp_transport is None


def test_instance_names_differ_by_folder():
    a, b = sample("/var/lib/mail-lab/a/dovecot"), sample("/var/lib/mail-lab/b/dovecot")
    assert a.instance_name != b.instance_name and a.instance_name.startswith("mail-lab-")
    assert a.at("/var/lib/mail-lab/c/dovecot").instance_name not in (a.instance_name, b.instance_name)


@pytest.mark.parametrize("change, field", [
    ({"imap_port": 0}, "imap_port"),
    ({"pop3_port": "110"}, "pop3_port"),
    ({"lmtp_port": 10143}, "lmtp_port"),  # the same port as imap
    ({"imap_port": None}, "imap_port"),
    ({"listen": "192.0.2.1"}, "listen"),
    ({"listen": "mail.example.com"}, "listen"),
    ({"folder": "relative/dovecot"}, "folder"),
    ({"folder": "/var/lib/mail lab/dovecot"}, "folder"),
    ({"folder": "/var/lib/" + "x" * 80}, "folder"),  # base_dir too long for unix sockets
    ({"cert_path": "/x/%d.crt"}, "cert_path"),
    ({"accounts": {"alice": "pw"}}, "accounts"),
    ({"accounts": {"al:ice@example.com": "pw"}}, "accounts"),
    ({"accounts": {"../x@example.com": "pw"}}, "accounts"),
    ({"accounts": {ALICE: ""}}, f"accounts[{ALICE}]"),
    ({"accounts": [ALICE]}, "accounts"),
    ({"instance_name": "a b"}, "instance_name"),
    ({"auth_mechanisms": ("cram-md5",)}, "auth_mechanisms"),
    ({"password_scheme": "PLAIN"}, "password_scheme"),
    ({"hostname": "mail example"}, "hostname"),
    ({"auth_failure_delay": -1}, "auth_failure_delay"),
    ({"auth_failure_delay": 0.5}, "auth_failure_delay"),
])
def test_bad_values_are_refused_naming_the_field(change, field):
    with pytest.raises(ConfigError) as e:
        sample(**change)
    assert e.value.field == field


def test_a_bad_password_is_refused_without_showing_it():
    with pytest.raises(ConfigError) as e:
        sample(accounts={ALICE: "secret-part\nmore"})
    assert "secret-part" not in str(e.value) and "line feed" in str(e.value)


def test_ssha512_hash_round_trip():
    hashed = hash_password("alice-lab-password", "SSHA512")
    assert hashed.startswith("{SSHA512}") and "alice-lab-password" not in hashed
    assert verify_ssha512("alice-lab-password", hashed) and not verify_ssha512("wrong", hashed)
    assert hash_password("alice-lab-password", "SSHA512") != hashed  # salted


def test_sha512_crypt_falls_back_to_ssha512_without_doveadm(monkeypatch):
    monkeypatch.setattr(config_module, "dovecot_tool", lambda name: None)
    assert hash_password("pw").startswith("{SSHA512}")


def test_a_failed_hash_writes_nothing(monkeypatch):
    folder = Path(tempfile.mkdtemp(prefix="labkit-dovecot-"))
    try:
        cfg = sample(str(folder / "dovecot"), mail_root=str(folder / "mail"))

        def fail(password, scheme="SHA512-CRYPT"):
            raise ConfigError("password_scheme", "doveadm pw failed")
        monkeypatch.setattr(config_module, "hash_password", fail)
        with pytest.raises(ConfigError):
            cfg.write()
        assert list(folder.iterdir()) == []
    finally:
        shutil.rmtree(folder)


def test_require_dovecot_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(runner_module, "dovecot_tool", lambda name: None)
    with pytest.raises(RealModeUnavailable) as e:
        require_dovecot()
    msg = str(e.value)
    assert "dovecot, doveconf, doveadm" in msg and "install-system-packages.sh" in msg and "\n" not in msg


@pytest.fixture
def short_tmp():
    """A folder with a short path: Dovecot's socket paths must fit in 108 bytes, and pytest's own
    folders grow with parallel workers (popen-gwN/)."""
    folder = Path(tempfile.mkdtemp(prefix="dc-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_for_lab_takes_the_worlds_accounts_and_picks_ports(short_tmp):
    tmp_path = short_tmp
    ctx = make_context(tmp_path, with_tls=False)
    cfg = DovecotConfig.for_lab(ctx, ports={"imap": 10143})
    world = default_world()
    assert set(cfg.accounts) == {a.address for a in world.accounts if a.password}
    assert cfg.imap_port == 10143 and len(set(cfg.ports().values())) == len(LISTENERS)
    assert cfg.listen == world.host("home").address and cfg.hostname == "mail.example.com"
    assert cfg.folder == str(tmp_path / "dovecot") and cfg.mail_root == str(tmp_path / "mail")
    assert set(DovecotConfig.for_lab(ctx, domains=("example.com",)).accounts) == {ALICE}
    with pytest.raises(ConfigError) as e:
        DovecotConfig.for_lab(ctx, ports={"smtp": 25})
    assert e.value.field == "ports"


# --------------------------------------------------------------------------------------------
# Real Dovecot: one instance for the module


def require_real_dovecot() -> None:
    """Skip (or fail under LABKIT_REQUIRE_REAL=1) unless real Dovecot can run here."""
    for tool in ("dovecot", "doveconf", "doveadm"):
        require_tool(tool)
    try:
        require_dovecot()
    except RealModeUnavailable as e:
        if REQUIRE_REAL:
            pytest.fail(f"{e} and LABKIT_REQUIRE_REAL=1 forbids skipping", pytrace=False)
        pytest.skip(str(e))


def make_context(sandbox: Path, with_tls: bool = True) -> LabContext:
    world = default_world()
    home = world.host("home")
    tls = sandbox / "tls"
    if with_tls:
        ca = pki.CA.create()
        ca_path = ca.save(tls)
        creds = {"home": pki.issue_host(ca, tls, home.name, home.aliases, [home.address], ca_path)}
    else:
        ca_path = tls / "ca.crt"
        creds = {"home": pki.HostCredentials(home.name, tls / "m.key", tls / "m.crt", ca_path)}
    return LabContext(world, sandbox, ca_path, creds, EventLog(sandbox / "events.jsonl"))


@pytest.fixture(scope="module")
def sandbox():
    require_real_dovecot()
    BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="test-dovecot-", dir=BASE))
    os.chmod(root, 0o755)  # mkdtemp makes it 0700: users mail and postfix must pass through
    yield root
    shutil.rmtree(root)


@dataclasses.dataclass(frozen=True)
class Served:
    ctx: LabContext
    cfg: DovecotConfig
    runner: DovecotRunner


@pytest.fixture(scope="module")
def lab(sandbox):
    """mail.example.com's Dovecot, with two messages already in alice's mailbox."""
    ctx = make_context(sandbox)
    for n in (1, 2):  # written as root, as the embedded servers do
        deliver_to_folder(ctx.mailbox_dir(ALICE), message(f"before {n}"))
    cfg = DovecotConfig.for_lab(ctx, auth_failure_delay=0)  # the lab waits 1 s; tests need not
    cfg.write()
    runner = DovecotRunner(cfg.conf_path)
    try:
        runner.start()
        yield Served(ctx, cfg, runner)
    finally:
        runner.stop()
    assert runner.processes() == []


def tls_context(ctx: LabContext) -> ssl.SSLContext:
    return pki.client_context(ctx.ca_path)


def test_written_files_check_and_keep_the_password_secret(lab):
    ctx, cfg, runner = lab.ctx, lab.cfg, lab.runner
    assert cfg.check().ok, cfg.check().reason
    st = os.stat(cfg.passwd_path)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == runner_module.pwd.getpwnam("dovecot").pw_uid
    passwd = Path(cfg.passwd_path).read_text()
    for account in ctx.world.accounts:
        if account.password:
            assert f"{account.address}:{{SHA512-CRYPT}}$6$" in passwd
            assert account.password not in passwd and account.password not in runner.log_text()
    assert runner.running and runner.start_seconds < 5
    print(f"\ndovecot -F to IMAP greeting: {runner.start_seconds:.3f} s")


def test_check_fails_on_any_doveconf_complaint(lab, tmp_path):
    cfg = lab.cfg
    bad = tmp_path / "dovecot.conf"
    bad.write_text(Path(cfg.conf_path).read_text() + "no_such_setting = 1\n")
    result = config_module.check_conf(bad)
    assert not result.ok and "no_such_setting" in result.reason


def test_pop3_stls_then_user_pass(lab):
    ctx, cfg = lab.ctx, lab.cfg
    pop = poplib.POP3(HOME, cfg.pop3_port, timeout=10)
    try:
        assert pop.getwelcome().startswith(b"+OK")
        assert "STLS" in pop.capa()
        with pytest.raises(poplib.error_proto) as e:  # no user name, let alone a password, before STLS
            pop.user(ALICE)
        assert e.value.args[0].startswith(b"-ERR") and b"Plaintext authentication disallowed" in e.value.args[0]
        pop.stls(context=tls_context(ctx))
        pop.user(ALICE)
        with pytest.raises(poplib.error_proto) as e:
            pop.pass_("wrong-password")
        assert e.value.args[0].startswith(b"-ERR [AUTH]")
        pop.user(ALICE)
        assert pop.pass_(ALICE_PW).startswith(b"+OK")
        count, size = pop.stat()
        assert count == 2 and size > 0
        resp, lines, _octets = pop.retr(1)
        assert resp.startswith(b"+OK") and b"Subject: before 1" in lines
        with pytest.raises(poplib.error_proto) as e:
            pop._shortcmd("XYZZY")
        assert e.value.args[0].startswith(b"-ERR")
        assert pop.dele(1).startswith(b"+OK")
    finally:
        assert pop.quit().startswith(b"+OK")
    assert [m.subject for m in list_folder(ctx.mailbox_dir(ALICE))] == ["before 2"]


def test_pop3s_implicit_tls(lab):
    ctx, cfg = lab.ctx, lab.cfg
    pop = poplib.POP3_SSL(HOME, cfg.pop3s_port, context=tls_context(ctx), timeout=10)
    try:
        pop.user(ALICE.upper())  # user names are compared in lower case
        assert pop.pass_(ALICE_PW).startswith(b"+OK")
        assert pop.stat()[0] == 1
        assert pop.sock.getpeercert()["subject"]  # verified against the lab CA, for mail.example.com
    finally:
        pop.quit()


def test_imap_logindisabled_until_starttls_then_the_mailbox(lab):
    ctx, cfg = lab.ctx, lab.cfg
    imap = imaplib.IMAP4(HOME, cfg.imap_port, timeout=10)
    try:
        assert "LOGINDISABLED" in imap.capabilities and "STARTTLS" in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error) as e:
            imap.login(ALICE, ALICE_PW)
        assert b"PRIVACYREQUIRED" in e.value.args[0] or "Plaintext" in str(e.value)
        with pytest.raises(imaplib.IMAP4.error) as e:
            imap.xatom("XYZZY")
        assert "BAD" in str(e.value)
        imap.starttls(ssl_context=tls_context(ctx))
        assert "LOGINDISABLED" not in imap.capabilities and "AUTH=PLAIN" in imap.capabilities
        with pytest.raises(imaplib.IMAP4.error) as e:
            imap.login(ALICE, "wrong-password")
        assert "AUTHENTICATIONFAILED" in str(e.value)
        assert imap.login(ALICE, ALICE_PW)[0] == "OK"
        typ, data = imap.select("INBOX")
        assert typ == "OK" and int(data[0]) >= 1
        typ, data = imap.search(None, "SUBJECT", '"before 2"')
        assert typ == "OK" and data[0]
        num = data[0].split()[0]
        typ, data = imap.fetch(num, "(RFC822)")
        assert typ == "OK" and b"before 2: hello from the lab" in data[0][1]
        assert imap.store(num, "+FLAGS", r"(\Deleted)")[0] == "OK"
        assert imap.expunge()[0] == "OK"
        assert imap.search(None, "SUBJECT", '"before 2"')[1] == [b""]
    finally:
        imap.logout()


def test_imaps_and_a_spam_folder_written_by_root(lab):
    """A Maildir++ subfolder written by root after start is Dovecot's once handed over."""
    ctx, cfg, runner = lab.ctx, lab.cfg, lab.runner
    deliver(ctx, ALICE, message("looks like spam"), folder="Spam")
    runner.hand_over_mail()
    imap = imaplib.IMAP4_SSL(HOME, cfg.imaps_port, ssl_context=tls_context(ctx), timeout=10)
    try:
        assert imap.login(ALICE, ALICE_PW)[0] == "OK"
        typ, folders = imap.list()
        assert typ == "OK" and any(f.endswith((b' "Spam"', b" Spam")) for f in folders), folders
        typ, data = imap.select("Spam", readonly=True)
        assert typ == "OK" and data == [b"1"]
    finally:
        imap.logout()


def test_openssl_s_client_verifies_the_lab_certificate(lab):
    ctx, cfg = lab.ctx, lab.cfg
    openssl = require_tool("openssl")
    for proto, port in (("imap", cfg.imap_port), ("pop3", cfg.pop3_port)):
        proc = subprocess.run([openssl, "s_client", "-connect", f"{HOME}:{port}", "-starttls", proto,
                               "-CAfile", str(ctx.ca_path), "-verify_hostname", "mail.example.com",
                               "-verify_return_error", "-brief"],
                              input="", capture_output=True, text=True, timeout=20, check=False)
        said = proc.stdout + proc.stderr
        assert "Verification: OK" in said, said
    proc = subprocess.run([openssl, "s_client", "-connect", f"{HOME}:{cfg.imaps_port}", "-CAfile", str(ctx.ca_path),
                           "-verify_hostname", "mail.example.com", "-verify_return_error", "-crlf", "-ign_eof"],
                          input="a LOGOUT\n", capture_output=True, text=True, timeout=20, check=False)
    assert "Verify return code: 0 (ok)" in proc.stdout and "* OK" in proc.stdout and "* BYE" in proc.stdout


def lmtp_dialogue(port: int, lines: list[bytes]) -> list[bytes]:
    """Send LMTP commands one by one (the message after DATA's 354); return every reply line."""
    replies: list[bytes] = []
    with socket.create_connection((HOME, port), timeout=10) as s:
        f = s.makefile("rwb")

        def read() -> bytes:
            while True:
                line = f.readline()
                replies.append(line.rstrip(b"\r\n"))
                if line[3:4] != b"-":
                    return line
        read()
        accepted = 0
        for line in lines:
            f.write(line)
            f.flush()
            if line.endswith(b"\r\n.\r\n"):
                for _ in range(accepted):  # one reply per accepted recipient (RFC 2033)
                    read()
                continue
            reply = read()
            if line.startswith(b"RCPT") and reply.startswith(b"250"):
                accepted += 1
    return replies


def test_lmtp_delivers_into_the_lab_maildir_one_reply_per_recipient(lab):
    """Like the embedded MDA, LMTP takes mail for any plain address (postmaster@ has no password)."""
    ctx, cfg, runner = lab.ctx, lab.cfg, lab.runner
    bob, postmaster = "bob@inbox.example.org", "postmaster@example.com"
    before = len(list_folder(ctx.mailbox_dir(ALICE)))
    body = message("over lmtp").replace(b"\n", b"\r\n")
    replies = lmtp_dialogue(cfg.lmtp_port, [
        b"LHLO mail.example.com\r\n", b"MAIL FROM:<carol@isp.example.net>\r\n",
        f"RCPT TO:<{ALICE}>\r\n".encode(), f"RCPT TO:<{bob}>\r\n".encode(),
        b"RCPT TO:<a/b@example.com>\r\n", f"RCPT TO:<{postmaster}>\r\n".encode(), b"DATA\r\n",
        body + b".\r\n", b"QUIT\r\n"])
    codes = [r[:3] for r in replies if r[3:4] != b"-"]
    # greeting, LHLO, MAIL, RCPT x4 (a '/' is no mailbox name), DATA 354, a 250 for each of three, QUIT
    assert codes == [b"220", b"250", b"250", b"250", b"250", b"550", b"250", b"354", b"250", b"250", b"250",
                     b"221"], replies
    assert [ALICE.encode() in replies[-4], bob.encode() in replies[-3], postmaster.encode() in replies[-2]] == \
        [True, True, True]
    mails = list_folder(ctx.mailbox_dir(ALICE))
    assert len(mails) == before + 1 and mails[-1].subject == "over lmtp"
    raw = mails[-1].path.read_bytes()
    # Dovecot adds Return-Path and Received (and Delivered-To only when one recipient is accepted)
    assert raw.startswith(b"Return-Path: <carol@isp.example.net>") and b"by mail.example.com with LMTP" in raw
    for other in (bob, postmaster):
        assert [m.subject for m in list_folder(ctx.mailbox_dir(other))] == ["over lmtp"]
    with smtplib.LMTP(HOME, cfg.lmtp_port, local_hostname="mail.example.com", timeout=10) as lmtp:
        assert lmtp.ehlo()[0] == 250  # smtplib.LMTP says LHLO
        refused = lmtp.sendmail("carol@isp.example.net", [ALICE], message("smtplib"))
    assert refused == {}
    assert b"Delivered-To: alice@example.com" in list_folder(ctx.mailbox_dir(ALICE))[-1].path.read_bytes()
    filed = runner.wait_for_delivery(ALICE, msgid="<smtplib@isp.example.net>")
    assert filed[0]["folder"] == "INBOX"
    assert runner.wait_for_delivery(bob, msgid="<over-lmtp@isp.example.net>")


def test_the_auth_listener_speaks_dovecots_auth_protocol(lab):
    cfg = lab.cfg
    with socket.create_connection((HOME, cfg.auth_port), timeout=10) as s:
        f = s.makefile("rwb")
        f.write(f"VERSION\t1\t2\nCPID\t{os.getpid()}\n".encode())
        f.flush()
        lines = []
        while not lines or lines[-1] != "DONE":
            lines.append(f.readline().decode().rstrip("\n"))
        assert lines[0].startswith("VERSION\t1\t")
        assert "MECH\tPLAIN\tplaintext" in lines and "MECH\tLOGIN\tplaintext" in lines
        for n, password, verdict in ((1, ALICE_PW, "OK"), (2, "wrong-password", "FAIL")):
            resp = base64.b64encode(f"\0{ALICE}\0{password}".encode()).decode()
            f.write(f"AUTH\t{n}\tPLAIN\tservice=smtp\tsecured\tresp={resp}\n".encode())
            f.flush()
            answer = f.readline().decode().split("\t")
            assert answer[:2] == [verdict, str(n)] and f"user={ALICE}\n" in answer


def test_postfix_submission_asks_dovecot_and_delivers_over_lmtp(lab, sandbox):
    """Real Postfix: submission with STARTTLS and Dovecot SASL; example.com's mail to Dovecot's LMTP."""
    require_real_postfix()
    from labkit.real.postfix import PostfixConfig, PostfixRunner

    ctx, cfg, runner = lab.ctx, lab.cfg, lab.runner
    box = sandbox / "postfix"
    creds = ctx.credentials["home"]
    listen, submission = (HOME, free_port(HOME)), (HOME, free_port(HOME))
    pf = PostfixConfig(
        config_directory=str(box / "etc"), queue_directory=str(box / "queue"),
        data_directory=str(box / "data"), maillog_file=str(box / "maillog"),
        myhostname="mail.example.com", mydomain="example.com", myorigin="example.com",
        mynetworks=("127.0.20.25/32",), listen=listen, submission=submission,
        smtpd_tls_cert_file=str(creds.cert_path), smtpd_tls_key_file=str(creds.key_path),
        smtpd_sasl_auth_enable=True, smtpd_sasl_type="dovecot", smtpd_sasl_path=cfg.sasl_path,
        virtual_mailbox_domains=("example.com",), virtual_transport=cfg.lmtp_transport)
    pf.write()
    assert pf.check().ok, pf.check().reason
    postfix = PostfixRunner(pf.config_directory)
    try:
        postfix.start()
        with smtplib.SMTP(*submission, local_hostname="pc.example.com", timeout=10) as client:
            client.ehlo()
            assert not client.has_extn("auth")  # smtpd_tls_auth_only: no AUTH before STARTTLS
            client.starttls(context=tls_context(ctx))
            client.ehlo()
            assert "PLAIN" in client.esmtp_features["auth"].upper()
            with pytest.raises(smtplib.SMTPAuthenticationError) as e:
                client.login(ALICE, "wrong-password")
            assert e.value.smtp_code == 535
            code, _ = client.login(ALICE, ALICE_PW)
            assert code == 235
            client.sendmail(ALICE, [ALICE], message("through postfix"))
        sent = postfix.wait_for("sent", to=ALICE)
        assert sent["relay"].startswith(f"{HOME}[{HOME}]:{cfg.lmtp_port}")
        deadline = time.monotonic() + 10
        while not any(m.subject == "through postfix" for m in list_folder(ctx.mailbox_dir(ALICE))):
            assert time.monotonic() < deadline, "the message did not reach alice's Maildir"
            time.sleep(0.01)
        assert ALICE_PW not in postfix.maillog_text() and "wrong-password" not in postfix.maillog_text()
    finally:
        postfix.stop()
    assert postfix.processes() == []
    log = runner.log_text()
    # Dovecot's side of Postfix's 535: why, without the password
    assert "auth: Info: passwd-file(alice@example.com," in log and "Password mismatch" in log
    assert ALICE_PW not in log and "wrong-password" not in log


def test_a_second_start_on_the_same_config_is_refused(lab):
    cfg = lab.cfg
    with pytest.raises(LabRunningError) as e:
        DovecotRunner(cfg.conf_path).start()
    assert "already running" in str(e.value) and "doveadm" in str(e.value)


def test_a_taken_port_fails_the_start_with_dovecots_words(lab, sandbox):
    cfg = lab.cfg
    other = dataclasses.replace(cfg, folder=str(sandbox / "dovecot2"), instance_name=None,
                                imap_port=free_port(HOME), pop3_port=cfg.pop3_port)  # pop3 port is taken
    other.write()
    second = DovecotRunner(other.conf_path)
    with pytest.raises(StartError) as e:
        second.start()
    assert "Address already in use" in str(e.value)
    assert second.processes() == [] and not second.running
    second.stop()  # after a failed start: fine


def test_stop_with_a_client_connected_leaves_nothing(sandbox):
    """Last: its own instance (LMTP only for accounts), stopped while IMAP and POP3 clients are logged in."""
    ctx = make_context(sandbox / "stopping")
    cfg = DovecotConfig.for_lab(ctx, domains=("example.com",), accept_any_recipient=False)
    cfg.write()
    runner = DovecotRunner(cfg.conf_path)
    imap = pop = None
    try:
        runner.start()
        imap = imaplib.IMAP4_SSL(HOME, cfg.imaps_port, ssl_context=tls_context(ctx), timeout=10)
        imap.login(ALICE, ALICE_PW)
        imap.select()
        pop = poplib.POP3_SSL(HOME, cfg.pop3s_port, context=tls_context(ctx), timeout=10)
        pop.user(ALICE)
        pop.pass_(ALICE_PW)
        with smtplib.LMTP(HOME, cfg.lmtp_port, local_hostname="mail.example.com", timeout=10) as lmtp:
            refused = lmtp.sendmail("carol@isp.example.net", [ALICE, "nobody@example.com"], message("strict"))
        assert list(refused) == ["nobody@example.com"] and refused["nobody@example.com"][0] == 550
        names = {cmd.rpartition("/")[2] for _pid, cmd in runner.processes()}
        assert {"imap", "pop3", "auth", "imap-login", "pop3-login"} <= names, names
    finally:
        runner.stop()
        for client in (imap, pop):
            if client is not None:
                client.sock.close()
    assert runner.processes() == [] and not runner.running
    assert not [p for p in pids() if cmdline(p).startswith(f"dovecot-{cfg.instance_name}/")]
    for port in cfg.ports().values():
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((HOME, port), timeout=2).close()
    assert runner.stop_seconds < 5
    runner.stop()  # twice is fine
    print(f"\ndovecot stop with two clients logged in: {runner.stop_seconds:.3f} s")
