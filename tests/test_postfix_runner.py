"""Real Postfix run from a sandbox as the memo's smarthost client, and its maillog read back.

The flow test plays the memo's setup end to end: a small ISP submission server (aiosmtpd:
STARTTLS and AUTH required, certificate from the lab CA) on 127.0.30.25, Postfix on
127.0.20.25 relaying to it as ``[127.0.30.25]:PORT`` with SASL and ``smtp_tls_security_level =
secure``; then a wrong password (deferred, nothing lost), the fix (postmap, flush: delivered),
and a stop that leaves no process behind.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shutil
import smtplib
import socket
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from conftest import deny_ptrace_reads, require_real_postfix

from labkit.errors import ConfigError, RealModeUnavailable, StartError
from labkit.net.loop import LoopThread
from labkit.core.pki import CA, issue_host
from labkit.real.postfix import (
    PostfixConfig,
    PostfixRunner,
    make_traversable,
    parse_maillog_line,
    sandbox_problem,
)
from labkit.real.postfix import runner as runner_module
from labkit.real.postfix.maillog import parse, select
from labkit.real.postfix.runner import parse_postqueue_json, smtpd_listeners

ISP_NAME, ISP_ADDR = "mail.isp.example.net", "127.0.30.25"
HOME_ADDR = "127.0.20.25"
USER, PASSWORD = "alice@isp.example.net", "isp-lab-password"
SENDER, RECIPIENT = "alice@example.com", "bob@inbox.example.org"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def leftovers(sandbox: Path) -> list[str]:
    """Every process whose environment names a folder of the sandbox or runs inside it."""
    found = []
    needle = os.fsencode(str(sandbox))
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read()
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if cmd and (needle in env or cwd.startswith(str(sandbox))):
            found.append(f"{entry.name} {cmd}")
    return found


# --------------------------------------------------------------------------------------------
# The ISP's submission server (the memo's mail.so-net.ne.jp:587)


class Smarthost:
    """STARTTLS required, AUTH required (only after TLS), keeps what it receives."""

    def __init__(self, loop_thread: LoopThread, tls, password: str):
        self.loop_thread = loop_thread
        self.password = password
        self.received: list[dict] = []
        self.failed_logins = 0
        self.arrived = threading.Event()
        loop = loop_thread.loop

        def factory():
            return SMTP(self, hostname=ISP_NAME, loop=loop, tls_context=tls, require_starttls=True,
                        auth_required=True, auth_require_tls=True, authenticator=self.authenticate)

        self.server = loop_thread.run(loop.create_server(factory, ISP_ADDR, 0))
        self.port = self.server.sockets[0].getsockname()[1]

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == USER
              and auth_data.password.decode() == self.password)
        if ok:
            return AuthResult(success=True, auth_data=auth_data.login.decode())
        self.failed_logins += 1
        return AuthResult(success=False, handled=False)  # handled=False: aiosmtpd answers 535

    async def handle_DATA(self, server, session, envelope):
        self.received.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "login": session.auth_data, "tls": session.ssl is not None,
                              "content": envelope.content, "at": time.monotonic()})
        self.arrived.set()
        return "250 2.0.0 OK: queued at the ISP"

    def wait(self, count: int, timeout: float = 10) -> dict:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the smarthost has {len(self.received)} messages, not {count}")
            self.arrived.wait(0.05)
            self.arrived.clear()
        return self.received[count - 1]

    def close(self) -> None:
        async def close_on_the_loop():
            self.server.close()
            await self.server.wait_closed()

        self.loop_thread.run(close_on_the_loop())


@pytest.fixture(scope="module")
def sandbox():
    """A folder under /var/lib (every parent 755, root-owned): where a real sandbox can live."""
    require_real_postfix()
    root = Path(tempfile.mkdtemp(prefix="labkit-test-", dir="/var/lib"))
    os.chmod(root, 0o755)  # mkdtemp makes it 0700; this folder is ours
    yield root
    shutil.rmtree(root)


@pytest.fixture(scope="module")
def isp(sandbox):
    pki = sandbox / "pki"
    ca = CA.create()
    ca_path = ca.save(pki)
    creds = issue_host(ca, pki, ISP_NAME, ip_addresses=[ISP_ADDR], ca_path=ca_path)
    loop_thread = LoopThread("test-postfix-isp")
    loop_thread.start()
    host = Smarthost(loop_thread, creds.server_context(), PASSWORD)
    host.ca_path = ca_path
    yield host
    host.close()
    loop_thread.stop()


def message(subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, RECIPIENT, subject
    msg.set_content("hello!\n")
    return msg


def deferred_queue(postfix: PostfixRunner, timeout: float = 5) -> list:
    """The queue once every entry in it has reached the deferred queue."""
    deadline = time.monotonic() + timeout
    while True:
        entries = postfix.queue()
        if entries and all(e.queue_name == "deferred" for e in entries) or time.monotonic() > deadline:
            return entries
        time.sleep(0.01)


def submit(listen: tuple[str, int], subject: str) -> None:
    with smtplib.SMTP(*listen, local_hostname="pc.example.com", timeout=10) as client:
        client.send_message(message(subject))


# --------------------------------------------------------------------------------------------
# The memo's setup, for real


def test_relay_through_the_smarthost_wrong_password_fix_and_stop(sandbox, isp):
    box = sandbox / "relay"
    listen = (HOME_ADDR, free_port(HOME_ADDR))
    cfg = PostfixConfig.smarthost_client(box, relay_host=ISP_ADDR, relay_port=isp.port, sasl_user=USER,
                                         sasl_password=PASSWORD, ca_file=isp.ca_path, cert_match=ISP_NAME,
                                         listen=listen)
    cfg.write()
    assert cfg.check().ok, cfg.check().reason
    postfix = PostfixRunner(cfg.config_directory)
    try:
        # 1. start: ready when the smtpd says 220
        postfix.start()
        assert postfix.running and postfix.start_seconds < 5
        assert postfix.wait_for_event("started")["version"]  # postlogd writes it a moment later

        # 2. submit to Postfix; it relays over verified TLS, logged in as the ISP user
        began = time.monotonic()
        submit(listen, "first")
        got = isp.wait(1)
        relayed_in = got["at"] - began
        assert got["login"] == USER and got["tls"] and got["to"] == [RECIPIENT]
        sent = postfix.wait_for("sent", to=RECIPIENT)
        assert sent.queue_id and sent["relay"].startswith(f"{ISP_ADDR}[{ISP_ADDR}]:{isp.port}")
        assert sent["dsn"].startswith("2.")
        tls = select(postfix.events(), "tls", direction="to")
        assert tls and tls[-1]["trust"] == "verified" and tls[-1]["peer"].startswith(ISP_ADDR)
        assert "Verified TLS connection established" in postfix.maillog_text()
        assert postfix.wait_for("sent", queue_id=sent.queue_id)  # by queue id, too
        assert postfix.wait_for_event("removed", sent.queue_id)  # qmgr logs it after status=sent

        # 3. a wrong password: deferred with the ISP's 535, and the message stays queued
        dataclasses.replace(cfg, sasl_password="wrong-password").write()
        submit(listen, "second")
        deferred = postfix.wait_for("deferred", to=RECIPIENT)
        assert deferred["sasl_failed"] and "535 5.7.8" in deferred["reason"]
        assert isp.failed_logins >= 1 and len(isp.received) == 1
        queued = deferred_queue(postfix)  # qmgr moves it to "deferred" just after the log line
        assert [q.queue_id for q in queued] == [deferred.queue_id]
        assert queued[0].recipients[0]["address"] == RECIPIENT
        assert "SASL authentication failed" in queued[0].recipients[0]["delay_reason"]

        # 4. fix the password (write runs postmap), flush: delivered, nothing lost
        cfg.write()
        postfix.flush()
        postfix.wait_for("sent", queue_id=deferred.queue_id)
        assert isp.wait(2)["content"].find(b"Subject: second") >= 0
        postfix.wait_for_event("removed", deferred.queue_id)
        assert postfix.queue() == []

        # 5. sendmail -C DIR, the local submission path, returns the queue id
        qid = postfix.sendmail(message("third").as_bytes(), SENDER, [RECIPIENT])
        assert qid and postfix.wait_for("sent", queue_id=qid)
        assert isp.wait(3)["login"] == USER

        # 6. reload keeps it running
        postfix.reload()
        assert postfix.running and postfix.wait_for_event("reloaded")

        # the log never holds the password
        assert PASSWORD not in postfix.maillog_text() and "wrong-password" not in postfix.maillog_text()
    finally:
        postfix.stop()
    # 7. nothing left: no process of this configuration, the port closed
    assert postfix.processes() == []
    assert leftovers(box) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(listen, timeout=2).close()
    postfix.stop()  # twice is fine
    print(f"\npostfix start to 220: {postfix.start_seconds:.3f} s; submit to relayed: {relayed_in:.3f} s")


def test_a_failed_start_says_why_from_the_maillog(sandbox):
    box = sandbox / "busy"
    taken = socket.socket()
    taken.bind((HOME_ADDR, 0))
    taken.listen()
    try:
        cfg = PostfixConfig(listen=(HOME_ADDR, taken.getsockname()[1]), config_directory=str(box / "etc"),
                            queue_directory=str(box / "queue"), data_directory=str(box / "data"),
                            maillog_file=str(box / "maillog"))
        cfg.write()
        postfix = PostfixRunner(box / "etc")
        try:
            with pytest.raises(StartError) as caught:
                postfix.start(timeout=5)
        finally:
            postfix.stop()
        assert "Address already in use" in str(caught.value)
        assert postfix.processes() == []
    finally:
        taken.close()


def test_processes_are_found_without_ptrace_rights(sandbox, monkeypatch):
    """As in the docker image (no CAP_SYS_PTRACE): master.pid and /proc/PID/stat suffice."""
    box = sandbox / "noptrace"
    cfg = PostfixConfig(listen=(HOME_ADDR, free_port(HOME_ADDR)), config_directory=str(box / "etc"),
                        queue_directory=str(box / "queue"), data_directory=str(box / "data"),
                        maillog_file=str(box / "maillog"))
    cfg.write()
    deny_ptrace_reads(monkeypatch)
    with pytest.raises(PermissionError):
        open(f"/proc/{os.getpid()}/environ", "rb")  # noqa: SIM115 - the guard is on
    postfix = PostfixRunner(box / "etc")
    try:
        postfix.start()
        master = postfix.master_pid()
        assert postfix.running and master == int(postfix.master_pid_file.read_text())
        found = postfix.processes()
        assert found[0] == (master, found[0][1]) and "master" in found[0][1]
        assert {"qmgr", "pickup"} <= {cmd.split()[0] for _, cmd in found}
        other = PostfixRunner(box / "etc")  # another process's view (labkit down)
        assert other.running and other.master_pid() == master
    finally:
        postfix.stop()
    assert not postfix.running and postfix.processes() == []
    # a stale master.pid naming a live process that is no Postfix master: not running, and
    # stop() runs postfix stop harmlessly (it checks the master's lock itself)
    postfix.master_pid_file.write_text(f"{os.getpid():>27}\n")
    fresh = PostfixRunner(box / "etc")
    assert not fresh.running and fresh.processes() == []
    fresh.stop()
    monkeypatch.undo()
    assert leftovers(box) == []


def test_a_sandbox_under_a_private_folder_is_named_in_the_error(sandbox):
    private = sandbox / "private"
    private.mkdir(mode=0o700)
    box = private / "lab" / "etc"
    problem = sandbox_problem(box)
    assert problem and str(private) in problem and "0700" in problem and "postfix" in problem
    PostfixConfig(config_directory=str(box)).write()
    with pytest.raises(ConfigError) as caught:
        PostfixRunner(box).start()
    assert caught.value.field == "sandbox" and str(private) in str(caught.value)
    make_traversable(box, private)  # our own folders: allowed
    assert sandbox_problem(box) is None
    with pytest.raises(ConfigError):
        make_traversable(box, "/nonexistent-elsewhere")


# --------------------------------------------------------------------------------------------
# Pure parts


def test_require_postfix_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(runner_module, "postfix_tool", lambda name: None if name == "postqueue" else "/x")
    with pytest.raises(RealModeUnavailable, match=r"missing: postqueue.*install-system-packages\.sh"):
        runner_module.require_postfix()
    monkeypatch.setattr(runner_module, "postfix_tool", lambda name: "/x")
    monkeypatch.setattr(runner_module.os, "geteuid", lambda: 1000)
    with pytest.raises(RealModeUnavailable, match="root.*uid 1000"):
        runner_module.require_postfix()


def test_smtpd_listeners_in_master_cf():
    text = ("# comment\n127.0.20.25:10025 inet n - n - - smtpd\n  -o syslog_name=x\n"
            "[::1]:2525 inet n - n - - smtpd\nsmtp inet n - n - - smtpd\npickup unix n - n 60 1 pickup\n"
            "127.0.0.1:10024 inet n - n - - lmtp\n")
    assert smtpd_listeners(text) == [(HOME_ADDR, 10025), ("::1", 2525), ("", 25)]


def test_postqueue_json():
    line = ('{"queue_name": "deferred", "queue_id": "4ABC12DEF", "arrival_time": 1700000000, '
            '"message_size": 345, "forced_expire": false, "sender": "alice@example.com", '
            '"recipients": [{"address": "bob@inbox.example.org", "delay_reason": "SASL authentication failed"}]}')
    [entry] = parse_postqueue_json(line + "\n")
    assert (entry.queue_id, entry.queue_name, entry.sender, entry.message_size) == \
        ("4ABC12DEF", "deferred", "alice@example.com", 345)
    assert entry.recipients[0]["address"] == "bob@inbox.example.org"


NOW = dt.datetime(2025, 11, 30, 12, 0, 0)

#: (line as Postfix 3.7 writes it, kind, queue id, details that must be there)
MAILLOG = [
    ("Nov 29 14:07:18 mail postfix/master[16063]: daemon started -- version 3.7.11, configuration /var/lib/x/etc",
     "started", None, {"version": "3.7.11", "configuration": "/var/lib/x/etc"}),
    ("Nov 29 14:07:19 mail postfix/smtpd[20232]: connect from localhost[127.0.0.1]",
     "connect", None, {"client": "localhost[127.0.0.1]", "address": "127.0.0.1"}),
    ("Nov 29 14:07:19 mail postfix/smtpd[20232]: 5D0F3C2A41: client=localhost[127.0.0.1]",
     "client", "5D0F3C2A41", {"client": "localhost[127.0.0.1]"}),
    ("Nov 29 14:07:19 mail postfix/cleanup[20235]: 5D0F3C2A41: message-id=<170.1@pc.example.com>",
     "queued", "5D0F3C2A41", {"message_id": "170.1@pc.example.com"}),
    ("Nov 29 14:07:19 mail postfix/qmgr[20230]: 5D0F3C2A41: from=<alice@example.com>, size=402, nrcpt=1 "
     "(queue active)", "queued", "5D0F3C2A41", {"from": "alice@example.com", "size": 402, "nrcpt": 1}),
    ("Nov 29 14:07:19 mail postfix/smtpd[20232]: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 "
     "data=1 quit=1 commands=5", "disconnect", None, {"address": "127.0.0.1",
                                                      "commands": {"ehlo": "1", "mail": "1", "rcpt": "1",
                                                                   "data": "1", "quit": "1", "commands": "5"}}),
    ("Nov 29 14:07:19 mail postfix/smtp[20237]: Verified TLS connection established to "
     "127.0.30.25[127.0.30.25]:41025: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) "
     "key-exchange X25519 server-signature ECDSA (P-256) server-digest SHA256",
     "tls", None, {"trust": "verified", "direction": "to", "peer": "127.0.30.25[127.0.30.25]:41025",
                   "protocol": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384", "verified": True}),
    ("Nov 29 14:07:19 mail postfix/smtpd[20232]: Anonymous TLS connection established from "
     "unknown[127.0.20.100]: TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)",
     "tls", None, {"trust": "anonymous", "direction": "from", "verified": False}),
    ("Nov 29 14:07:19 mail postfix/smtp[20237]: Untrusted TLS connection established to "
     "mail.isp.example.net[127.0.30.25]:587: TLSv1.2 with cipher ECDHE-ECDSA-AES256-GCM-SHA384 (256/256 bits)",
     "tls", None, {"trust": "untrusted", "protocol": "TLSv1.2", "verified": False}),
    ("Nov 29 14:07:19 mail postfix/smtp[20237]: 5D0F3C2A41: to=<bob@inbox.example.org>, "
     "relay=127.0.30.25[127.0.30.25]:41025, delay=0.08, delays=0.02/0.01/0.04/0.01, dsn=2.0.0, "
     "status=sent (250 2.0.0 OK: queued at the ISP)",
     "status", "5D0F3C2A41", {"to": "bob@inbox.example.org", "relay": "127.0.30.25[127.0.30.25]:41025",
                              "delay": 0.08, "delays": "0.02/0.01/0.04/0.01", "dsn": "2.0.0",
                              "status": "sent", "reason": "250 2.0.0 OK: queued at the ISP"}),
    ("Nov 29 14:07:20 mail postfix/smtp[20237]: 6E1A4D3B52: to=<bob@inbox.example.org>, "
     "relay=127.0.30.25[127.0.30.25]:41025, delay=0.05, delays=0.01/0/0.04/0, dsn=4.7.8, "
     "status=deferred (SASL authentication failed; server 127.0.30.25[127.0.30.25] said: "
     "535 5.7.8 Authentication credentials invalid)",
     "status", "6E1A4D3B52", {"status": "deferred", "dsn": "4.7.8",
                              "reason": "SASL authentication failed; server 127.0.30.25[127.0.30.25] said: "
                                        "535 5.7.8 Authentication credentials invalid"}),
    ("Nov 29 14:07:20 mail postfix/smtp[20237]: 6E1A4D3B52: to=<nobody@inbox.example.org>, "
     "relay=127.0.30.25[127.0.30.25]:41025, delay=0.1, delays=0.01/0/0.05/0.04, dsn=5.1.1, "
     "status=bounced (host 127.0.30.25[127.0.30.25] said: 550 5.1.1 no such user (in reply to RCPT TO command))",
     "status", "6E1A4D3B52", {"status": "bounced", "dsn": "5.1.1",
                              "reason": "host 127.0.30.25[127.0.30.25] said: 550 5.1.1 no such user "
                                        "(in reply to RCPT TO command)"}),
    ("Nov 29 14:07:20 mail postfix/smtp[20237]: 6E1A4D3B52: SASL authentication failed; server "
     "127.0.30.25[127.0.30.25] said: 535 5.7.8 Authentication credentials invalid",
     "sasl", "6E1A4D3B52", {"ok": False, "side": "client", "server": "127.0.30.25[127.0.30.25]",
                            "reply": "535 5.7.8 Authentication credentials invalid"}),
    ("Nov 29 14:07:21 mail postfix/submission/smtpd[20301]: 7F2B5E4C63: client=unknown[127.0.20.100], "
     "sasl_method=PLAIN, sasl_username=alice@example.com",
     "sasl", "7F2B5E4C63", {"ok": True, "sasl_method": "PLAIN", "sasl_username": "alice@example.com",
                            "client": "unknown[127.0.20.100]"}),
    ("Nov 29 14:07:21 mail postfix/submission/smtpd[20301]: warning: unknown[127.0.20.100]: SASL PLAIN "
     "authentication failed: authentication failure",
     "sasl", None, {"ok": False, "side": "server", "mechanism": "PLAIN", "address": "127.0.20.100"}),
    ("Nov 29 14:07:21 mail postfix/smtpd[20302]: NOQUEUE: reject: RCPT from unknown[127.0.40.25]: 554 5.7.1 "
     "<x@elsewhere.example>: Relay access denied; from=<spam@example.org> to=<x@elsewhere.example> "
     "proto=ESMTP helo=<evil>",
     "reject", None, {"stage": "reject", "command": "RCPT", "client": "unknown[127.0.40.25]"}),
    ("Nov 29 14:07:22 mail postfix/qmgr[20230]: 5D0F3C2A41: removed", "removed", "5D0F3C2A41", {}),
    ("Nov 29 14:07:22 mail postfix/pickup[20229]: 8A3C6F5D74: uid=0 from=<alice@example.com>",
     "queued", "8A3C6F5D74", {"uid": "0", "from": "alice@example.com"}),
    ("Nov 29 14:07:22 mail postfix/postmap[16457]: fatal: unsupported dictionary type: hush. "
     "Is the postfix-hush package installed?",
     "fatal", None, {"text": "unsupported dictionary type: hush. Is the postfix-hush package installed?"}),
    ("Nov 29 14:07:23 mail postfix/smtp[20237]: warning: database /x/sasl_passwd.db is older than source "
     "file /x/sasl_passwd", "warning", None, {"text": "database /x/sasl_passwd.db is older than source file "
                                                      "/x/sasl_passwd"}),
    ("Nov 29 14:07:24 mail postfix/master[16063]: terminating on signal 15", "stopped", None, {}),
    ("Nov 29 14:07:24 mail postfix/postfix-script[16605]: stopping the Postfix mail system", "info", None,
     {"text": "stopping the Postfix mail system"}),
    ("2025-11-29T14:07:25.123456+09:00 mail postfix/qmgr[20230]: 4dXcTp1hKqz9sWb: removed",
     "removed", "4dXcTp1hKqz9sWb", {}),
]


@pytest.mark.parametrize("line,kind,queue_id,details", MAILLOG, ids=[f"{i}-{m[1]}" for i, m in enumerate(MAILLOG)])
def test_maillog_lines(line, kind, queue_id, details):
    ev = parse_maillog_line(line, now=NOW)
    assert ev is not None
    assert (ev.kind, ev.queue_id) == (kind, queue_id)
    for key, value in details.items():
        assert ev.details.get(key) == value, key
    assert ev.line == line and ev.pid > 0 and ev.process.startswith("postfix/")


def test_maillog_times_and_junk():
    ev = parse_maillog_line("Dec 31 23:59:59 mail postfix/qmgr[1]: ABCDEF1234: removed", now=NOW)
    assert ev.time == dt.datetime(2024, 12, 31, 23, 59, 59)  # a stamp "in the future" is last year's
    assert parse_maillog_line("Nov  2 01:02:03 mail postfix/qmgr[1]: ABCDEF1234: removed", now=NOW).time == \
        dt.datetime(2025, 11, 2, 1, 2, 3)
    assert parse_maillog_line("not a log line") is None
    assert len(parse("\n".join(m[0] for m in MAILLOG) + "\ngarbage\n", now=NOW)) == len(MAILLOG)
