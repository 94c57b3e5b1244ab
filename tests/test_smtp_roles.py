"""The SMTP roles over real sockets, driven with smtplib as a mail client would.

Each test builds a small lab of its own: a CA and a certificate per host, an event log, a stub
DNS answering MX and A from the world's tables, and one event loop thread that runs the roles.
All of 127.0.0.0/8 is loopback on Linux, so every host listens on its own address.
"""
from __future__ import annotations

import base64
import email
import email.policy
import smtplib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import assert_no_threads_left
from labkit.net.context import LabContext, Options
from labkit.core.dns import lab_zones, make_resolver
from labkit.net.dnsserver import DNSServer
from labkit.net.events import EventLog
from labkit.net.loop import LoopThread
from labkit.core.pki import CA, client_context, issue_host
from labkit.net.mailbox import maildir
from labkit.core.smtp.rules import enhanced_reply
from labkit.net.smtp.roles import RoleServer, start_role
from labkit.core.world import default_world, distinct_loopback_available

pytestmark = pytest.mark.skipif(not distinct_loopback_available(),
                                reason="needs the whole 127.0.0.0/8 on loopback (Linux)")

PC = "127.0.20.100"  # the learner's PC, in the ISP's home network
ALICE, ALICE_PW = "alice@example.com", "alice-lab-password"
MESSAGE = ("From: Alice <alice@example.com>\r\nTo: Bob <bob@inbox.example.org>\r\n"
           "Subject: Hello from the lab\r\nMessage-ID: <hello.1@example.com>\r\n\r\nHi Bob!\r\n")


@dataclass
class Lab:
    ctx: LabContext
    loop: LoopThread
    start: Callable[..., RoleServer]

    @property
    def events(self) -> EventLog:
        return self.ctx.events


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = CA.create()
    ca_path = ca.save(folder)
    creds = {h.key: issue_host(ca, folder, h.name, h.aliases, [h.address], ca_path)
             for h in default_world().hosts}
    return ca_path, creds


@pytest.fixture
def lab(tmp_path, pki):
    ca_path, creds = pki
    world = default_world()
    before = set(threading.enumerate())
    ctx = LabContext(world, tmp_path / "sandbox", ca_path, creds, EventLog(tmp_path / "events.jsonl"),
                     Options(smtp_timeout=5, timeout_stall=1, retry_first=0.2, retry_max=1,
                             queue_lifetime=60))
    loop = LoopThread("test-smtp-loop")
    loop.start()
    # the real lab DNS: the provider's checks (SPF, DKIM, DMARC, reverse DNS) ask it for more than MX and A
    dns_server = loop.run(DNSServer.start(lab_zones(world), host="127.0.0.1", port=0))
    ctx.resolver_factory = lambda: make_resolver(dns_server.host, dns_server.port)
    servers: list[RoleServer] = []

    def start(role: str, **kwargs) -> RoleServer:
        server = loop.run(start_role(role, ctx, **kwargs))
        servers.append(server)
        return server

    try:
        yield Lab(ctx, loop, start)
    finally:
        try:
            for server in reversed(servers):
                loop.run(server.close())
            loop.run(dns_server.close())
        finally:
            loop.stop()
    assert_no_threads_left(before)
    assert not ctx.ports, f"ports still registered: {ctx.ports}"
    secret_free = (tmp_path / "events.jsonl").read_text() if (tmp_path / "events.jsonl").exists() else ""
    for account in world.accounts:
        if account.password:
            assert account.password not in secret_free, "a password reached the event log"


def client(server: RoleServer, source: str = PC, **kwargs) -> smtplib.SMTP:
    return smtplib.SMTP(server.host, server.port, local_hostname="pc.example.com",
                        source_address=(source, 0), timeout=10, **kwargs)


def login_submission(lab: Lab, server: RoleServer, user: str = ALICE, password: str = ALICE_PW) -> smtplib.SMTP:
    smtp = client(server)
    smtp.starttls(context=client_context(lab.ctx.ca_path))
    smtp.ehlo()
    smtp.login(user, password)
    return smtp


def start_internet(lab: Lab) -> dict[str, RoleServer]:
    """The whole path of the memo: submission -> smarthost -> inbox, plus the MTA for bounces."""
    return {role: lab.start(role) for role in ("inbox", "smarthost", "mta", "submission")}


# -- submission: STARTTLS, then AUTH, then mail ---------------------------------------------

def test_submission_refuses_auth_before_starttls_and_mail_before_auth(lab):
    sub = lab.start("submission")
    assert (sub.host, sub.hostname) == ("127.0.20.25", "mail.example.com")
    assert lab.ctx.port_for("127.0.20.25", 587) == sub.port
    with client(sub) as smtp:
        code, banner = smtp.ehlo()
        assert code == 250 and smtp.has_extn("starttls") and not smtp.has_extn("auth")
        plain = base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()
        code, _ = smtp.docmd("AUTH", f"PLAIN {plain}")
        assert code in (530, 538)
        assert smtp.docmd("MAIL", f"FROM:<{ALICE}>")[0] == 530
        smtp.starttls(context=client_context(lab.ctx.ca_path))
        smtp.ehlo()
        assert smtp.has_extn("auth") and not smtp.has_extn("starttls")
        code, text = smtp.docmd("MAIL", f"FROM:<{ALICE}>")
        assert (code, text) == (530, b"5.7.0 Authentication required")
    lab.events.wait_for("tls", role="submission")
    assert lab.events.select("rejected", role="submission")


@pytest.mark.parametrize("reply, expected", [
    ("530 Must issue a STARTTLS command first", "530 5.7.0 Must issue a STARTTLS command first"),
    ("250 OK", "250 2.0.0 OK"),
    ("221 Bye", "221 2.0.0 Bye"),
    ("220 Ready to start TLS", "220 2.0.0 Ready to start TLS"),
    ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
    ("501 Syntax: MAIL FROM: <address>", "501 5.5.4 Syntax: MAIL FROM: <address>"),
    ('500 Error: command "X" not recognized', '500 5.5.2 Error: command "X" not recognized'),
    ("500 Command line too long", "500 5.5.6 Command line too long"),
    ("552 Error: Too much mail data", "552 5.3.4 Error: Too much mail data"),
    ("454 TLS not available", "454 4.7.0 TLS not available"),
    ("250 2.1.0 Ok", "250 2.1.0 Ok"),  # already there: kept
    ("535 5.7.8 Authentication credentials invalid", "535 5.7.8 Authentication credentials invalid"),
    ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),  # 3xx: none
    ("334 ", "334 "),
    ("250", "250 2.0.0"),
    ("250 2.0.0 <a@example.com> ok\r\n450 busy", "250 2.0.0 <a@example.com> ok\r\n450 4.2.0 busy"),
])
def test_enhanced_reply_adds_rfc_3463_codes_as_postfix_words_them(reply, expected):
    assert enhanced_reply(reply) == expected


def test_every_reply_carries_an_enhanced_status_code(lab):
    """ENHANCEDSTATUSCODES is announced, and then kept (RFC 2034 §3): every reply but the
    greeting, the EHLO answer and the 3xx ones, aiosmtpd's own included."""
    sub = lab.start("submission")
    replies = []
    with client(sub) as smtp:
        code, text = smtp.ehlo()
        assert smtp.has_extn("enhancedstatuscodes") and not text.startswith(b"2.")
        replies.append(smtp.docmd("MAIL", f"FROM:<{ALICE}>"))
        assert replies[-1] == (530, b"5.7.0 Must issue a STARTTLS command first")
        replies += [smtp.noop(), smtp.rset(), smtp.docmd("HELP"), smtp.docmd("STARTTLS")]
        smtp.sock = client_context(lab.ctx.ca_path).wrap_socket(smtp.sock, server_hostname=sub.hostname)
        smtp.file = None
        smtp.ehlo()
        assert smtp.has_extn("enhancedstatuscodes")
        replies.append(smtp.docmd("AUTH", "PLAIN " + base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()))
        replies += [smtp.docmd("DATA"), smtp.docmd("MAIL", f"FROM:<{ALICE}>"), smtp.docmd("MAIL", f"FROM:<{ALICE}>"),
                    smtp.docmd("RCPT", f"TO:<{ALICE}>"), smtp.docmd("VRFY", ALICE), smtp.docmd("EXPN", "x"),
                    smtp.docmd("BOGUS")]
        code, text = smtp.docmd("DATA")
        assert (code, text[:2]) == (354, b"En")
        smtp.send(MESSAGE + ".\r\n")
        replies.append(smtp.getreply())
        replies.append(smtp.docmd("QUIT"))
    for code, text in replies:
        assert text.split()[0].decode()[:2] == f"{str(code)[0]}.", (code, text)
    assert replies[-1] == (221, b"2.0.0 Bye")
    lab.events.wait_for("delivered", role="submission", to=ALICE)
    mda = lab.start("mda")
    with smtplib.LMTP(mda.host, mda.port, local_hostname="mail.example.com", timeout=10) as lmtp:
        assert lmtp.ehlo()[0] == 250 and lmtp.has_extn("enhancedstatuscodes")
        assert lmtp.docmd("DATA") == (503, b"5.5.1 Error: need RCPT command")


def test_wrong_password_gets_535_and_the_server_keeps_serving(lab):
    sub = lab.start("submission")
    with client(sub) as smtp:
        smtp.starttls(context=client_context(lab.ctx.ca_path))
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            smtp.login(ALICE, "not-the-password")
        assert info.value.smtp_code == 535 and info.value.smtp_error.startswith(b"5.7.8")
        assert smtp.noop()[0] == 250
        smtp.login(ALICE, ALICE_PW)
    failed = lab.events.wait_for("auth", role="submission", success=False)
    assert failed["user"] == ALICE and failed["mechanism"] in ("PLAIN", "LOGIN")
    lab.events.wait_for("auth", role="submission", success=True, user=ALICE)


def test_message_goes_submission_smarthost_inbox(lab):
    roles = start_internet(lab)
    with login_submission(lab, roles["submission"]) as smtp:
        assert smtp.sendmail(ALICE, ["bob@inbox.example.org"], MESSAGE) == {}
    delivered = lab.events.wait_for("delivered", role="inbox", to="bob@inbox.example.org")

    relayed = lab.events.wait_for("relayed", role="submission", to="bob@inbox.example.org")
    assert relayed["via"] == "mail.isp.example.net" and relayed["tls"] is True
    assert relayed["auth_user"] == "alice@isp.example.net" and relayed["reply"].startswith("250")
    accepted = lab.events.wait_for("accepted", role="smarthost")
    assert accepted["tls"] is True and accepted["auth_user"] == "alice@isp.example.net"
    assert accepted["mail_from"] == ALICE and accepted["rcpts"] == ["bob@inbox.example.org"]
    onward = lab.events.wait_for("relayed", role="smarthost", to="bob@inbox.example.org")
    assert onward["via"] == "mx.inbox.example.org" and onward["tls"] is True and onward["auth_user"] is None

    # example.com publishes no SPF and nothing signs: the provider files it as Spam, and says why
    assessed = lab.events.wait_for("assessed", role="inbox")
    assert assessed["folder"] == "Spam" and assessed["spf"] == "none" and assessed["dkim"] == "none"
    assert delivered["folder"] == "Spam"
    [info] = maildir.list_mailbox(lab.ctx.mailbox_dir("bob@inbox.example.org"))
    assert info["path"] == delivered["mailbox"] and info["subject"] == "Hello from the lab"
    assert info["folder"] == "Spam"
    msg = email.message_from_bytes(Path(info["path"]).read_bytes(), policy=email.policy.default)
    assert msg["Authentication-Results"].startswith("mx.inbox.example.org;")
    received = [" ".join(str(h).split()) for h in msg.get_all("Received")]
    assert len(received) == 3, received
    # newest first: the inbox got it from the smarthost, which got it from alice's server
    assert received[0].startswith("from mail.isp.example.net (mail.isp.example.net [127.0.30.25])")
    assert "by mx.inbox.example.org" in received[0] and "with ESMTPS id" in received[0]
    assert received[1].startswith("from mail.example.com (mail.example.com [127.0.20.25])")
    assert "by mail.isp.example.net" in received[1] and "with ESMTPSA id" in received[1]
    assert received[2].startswith("from pc.example.com (pc.example.com [127.0.20.100])")
    assert "by mail.example.com" in received[2] and "with ESMTPSA id" in received[2]
    assert all("for <bob@inbox.example.org>" in r for r in received)
    lab.loop.run(roles["submission"].queue.join(5))
    assert not list((lab.ctx.sandbox / "queue" / "home").iterdir()), "the spool file must be removed"


def test_submission_delivers_local_recipients_to_maildir(lab):
    sub = lab.start("submission")
    with login_submission(lab, sub) as smtp:
        smtp.sendmail(ALICE, ["postmaster@example.com"], MESSAGE)
    ev = lab.events.wait_for("delivered", role="submission", to="postmaster@example.com")
    assert maildir.list_messages(lab.ctx, "postmaster@example.com")[0].path.as_posix() == ev["mailbox"]


def test_implicit_tls_submissions(lab):
    sub = lab.start("submissions")
    assert lab.ctx.port_for(sub.host, 465) == sub.port
    with smtplib.SMTP_SSL(sub.host, sub.port, context=client_context(lab.ctx.ca_path),
                          source_address=(PC, 0), timeout=10) as smtp:
        smtp.ehlo()
        assert not smtp.has_extn("starttls") and smtp.has_extn("auth")
        assert smtp.docmd("MAIL", f"FROM:<{ALICE}>")[0] == 530
        smtp.login(ALICE, ALICE_PW)
        smtp.sendmail(ALICE, ["postmaster@example.com"], MESSAGE)
    tls = lab.events.wait_for("tls", role="submissions")
    assert tls["implicit"] is True and tls["version"].startswith("TLS")
    accepted = lab.events.wait_for("accepted", role="submissions")
    assert accepted["tls"] is True and accepted["auth_user"] == ALICE


# -- open relay, OP25B, bad input ---------------------------------------------------------

TRICKS = [
    "eve@other.example.net",
    "eve@OTHER.example.net.",
    "user%other.example.net@example.com",
    "other.example.net!user@example.com",
    "@example.com:user@other.example.net",
    '"user@other.example.net"@example.com',
    "user@other.example.net@example.com",
    "user@[127.0.40.25]",
    "user@[127.0.20.25]",
    "user%other.example.net@EXAMPLE.COM.",
]


def test_mta_is_not_an_open_relay(lab):
    mta = lab.start("mta")
    with client(mta, source="127.0.50.25") as smtp:  # an outsider, not authenticated
        smtp.ehlo()
        assert smtp.docmd("MAIL", "FROM:<eve@other.example.net>")[0] == 250
        for rcpt in TRICKS:
            code, text = smtp.docmd("RCPT", f"TO:<{rcpt}>")
            assert code in (501, 553, 554), (rcpt, code, text)
        assert smtp.docmd("RCPT", "TO:<alice@example.com>")[0] == 250
        assert smtp.docmd("RCPT", "TO:<Alice@Example.COM>")[0] == 250
        code, text = smtp.docmd("RCPT", "TO:<bob@example.com>")  # a local domain, but no such mailbox
        assert (code, text[:5]) == (550, b"5.1.1") and b"User unknown" in text
    denied = lab.events.select("relay-denied", role="mta")
    assert len(denied) >= 7 and all("relay access denied" in e["reason"] for e in denied)


def test_mta_relays_for_mynetworks_and_authenticated_clients(lab):
    roles = start_internet(lab)
    with client(roles["mta"], source="127.0.20.25") as smtp:  # the host itself: mynetworks
        smtp.sendmail(ALICE, ["bob@inbox.example.org"], MESSAGE)
    lab.events.wait_for("relayed", role="mta", to="bob@inbox.example.org")
    lab.events.wait_for("delivered", role="inbox", to="bob@inbox.example.org")


def test_op25b_blocks_port_25_from_home_but_not_from_the_isp(lab):
    inbox = lab.start("inbox")
    with pytest.raises(smtplib.SMTPConnectError) as info:
        client(inbox, source=PC)
    assert info.value.smtp_code == 554
    assert b"5.7.1 Port 25 from the ISP's home network (127.0.20.0/24)" in info.value.smtp_error
    lab.events.wait_for("op25b", role="inbox")
    with client(inbox, source="127.0.30.25") as smtp:
        assert smtp.ehlo()[0] == 250 and not smtp.has_extn("auth")
        smtp.sendmail("alice@isp.example.net", ["bob@inbox.example.org"], MESSAGE)
    lab.events.wait_for("delivered", role="inbox", to="bob@inbox.example.org")


def test_malformed_and_overlong_commands_get_5xx_and_the_server_keeps_serving(lab):
    mta = lab.start("mta")
    with client(mta, source="127.0.50.25") as smtp:
        smtp.ehlo()
        assert smtp.docmd("X" * 1200)[0] == 500
        assert smtp.noop()[0] == 250
        assert smtp.docmd("MAIL", "FROM:<" + "a" * 1100 + "@example.com>")[0] == 500
        assert smtp.noop()[0] == 250
        assert smtp.docmd("GARBAGE", "in, out")[0] == 500
        assert smtp.docmd("MAIL", "FROM:<a..b@example.com>")[0] in (501, 553)
        assert smtp.docmd("MAIL", "FROM:<alice@example.com>")[0] == 250
        assert smtp.docmd("RCPT", "TO:<bob@example..com>")[0] in (501, 553)
        assert smtp.docmd("RCPT", "TO:<>")[0] in (501, 553)
        assert smtp.docmd("DATA", "")[0] == 503
        assert smtp.noop()[0] == 250
    assert not lab.events.select("error")


def test_null_sender_is_accepted_for_bounces(lab):
    mta = lab.start("mta")
    with client(mta, source="127.0.30.25") as smtp:
        smtp.sendmail("", ["alice@example.com"], MESSAGE)
    accepted = lab.events.wait_for("accepted", role="mta")
    assert accepted["mail_from"] == ""


# -- failure injection and the queue ------------------------------------------------------

def test_tempfail_gets_451_and_the_relay_queue_defers(lab):
    roles = start_internet(lab)
    with client(roles["mta"], source="127.0.50.25") as smtp:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            smtp.sendmail("eve@other.example.net", ["tempfail@example.com"], MESSAGE)
        code, text = info.value.recipients["tempfail@example.com"]
        assert code == 451 and text.startswith(b"4.3.0")
    with login_submission(lab, roles["submission"]) as smtp:
        smtp.sendmail(ALICE, ["tempfail@inbox.example.org"], MESSAGE)
    deferred = lab.events.wait_for("deferred", role="smarthost", to="tempfail@inbox.example.org")
    assert deferred["reason"].startswith("451 4.3.0") and deferred["retry_in"] > 0
    assert any(p.is_file() for p in (lab.ctx.sandbox / "queue" / "isp").iterdir()), "still spooled"


def test_550_bounces_back_to_the_sender(lab):
    roles = start_internet(lab)
    with login_submission(lab, roles["submission"]) as smtp:
        smtp.sendmail(ALICE, ["550@inbox.example.org"], MESSAGE)
    bounced = lab.events.wait_for("bounced", role="smarthost", to="550@inbox.example.org")
    assert bounced["reason"].startswith("550 5.1.1") and bounced["status"] == "5.1.1"
    delivered = lab.events.wait_for("delivered", role="mta", to=ALICE)
    [info] = maildir.list_messages(lab.ctx, ALICE)
    assert str(info.path) == delivered["mailbox"]
    assert info.subject == "Undelivered Mail Returned to Sender"
    assert info.sender.startswith("MAILER-DAEMON@mail.isp.example.net")
    raw = maildir.read_message(lab.ctx, ALICE, info.key).decode()
    assert "Final-Recipient: rfc822; 550@inbox.example.org" in raw and "Status: 5.1.1" in raw
    assert lab.events.wait_for("accepted", role="mta")["mail_from"] == ""


def test_timeout_defers(lab):
    lab.ctx.options.timeout_stall = 1
    lab.ctx.options.smtp_timeout = 0.5
    roles = start_internet(lab)
    with login_submission(lab, roles["submission"]) as smtp:
        smtp.sendmail(ALICE, ["timeout@inbox.example.org"], MESSAGE)
    deferred = lab.events.wait_for("deferred", role="smarthost", to="timeout@inbox.example.org")
    assert "timed out after 0.5 s" in deferred["reason"] and "RCPT TO" in deferred["reason"]


def test_nothing_listening_defers_and_close_keeps_the_spool_then_flush_delivers(lab):
    sub = lab.start("submission")  # no smarthost yet: "connection refused"
    with login_submission(lab, sub) as smtp:
        smtp.sendmail(ALICE, ["bob@inbox.example.org"], MESSAGE)
    deferred = lab.events.wait_for("deferred", role="submission")
    assert deferred["reason"].startswith("connection refused")
    lab.loop.run(sub.close())
    lab.loop.run(sub.close())  # idempotent
    spooled = list((lab.ctx.sandbox / "queue" / "home").iterdir())
    assert len(spooled) == 1, "a closed queue keeps its messages on disk"

    lab.start("inbox")
    lab.start("smarthost")
    sub2 = lab.start("submission")  # takes up the spooled message
    lab.loop.run(sub2.queue.flush())
    lab.events.wait_for("delivered", role="inbox", to="bob@inbox.example.org")
    lab.loop.run(sub2.queue.join(5))
    assert not list((lab.ctx.sandbox / "queue" / "home").iterdir())


def test_smarthost_requires_tls_and_its_own_logins(lab):
    isp = lab.start("smarthost")
    with client(isp, source="127.0.20.25") as smtp:
        assert smtp.docmd("MAIL", "FROM:<alice@example.com>")[0] == 530
        smtp.starttls(context=client_context(lab.ctx.ca_path))
        smtp.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            smtp.login(ALICE, ALICE_PW)  # a submission login, not an ISP one
        smtp.login("alice@isp.example.net", "isp-lab-password")
        smtp.sendmail(ALICE, ["postmaster@isp.example.net"], MESSAGE)
    accepted = lab.events.wait_for("accepted", role="smarthost")
    assert accepted["tls"] is True and accepted["auth_user"] == "alice@isp.example.net"


def test_a_message_that_waits_too_long_bounces_to_the_local_sender(lab):
    lab.ctx.options.queue_lifetime = 0.3
    sub = lab.start("submission")  # the smarthost never comes up
    with login_submission(lab, sub) as smtp:
        assert int(smtp.esmtp_features["size"]) == 10_240_000
        smtp.sendmail(ALICE, ["bob@inbox.example.org"], MESSAGE)
    bounced = lab.events.wait_for("bounced", role="submission", to="bob@inbox.example.org")
    assert bounced["reason"].startswith("message expired after 0.3 s in the queue; last: connection refused")
    assert bounced["status"].startswith("5.")
    lab.events.wait_for("delivered", role="submission", to=ALICE)  # the bounce, kept at home
    [info] = maildir.list_messages(lab.ctx, ALICE)
    assert info.subject == "Undelivered Mail Returned to Sender"
    lab.loop.run(sub.queue.join(5))
    assert sub.queue.spooled() == []


def test_direct_delivery_from_home_meets_op25b_in_the_queue(lab):
    """Why the memo relays through the ISP: the home MTA sending by MX is refused at port 25."""
    from labkit.net.smtp.queue import RelayQueue

    lab.start("inbox")
    queue = RelayQueue(lab.ctx, "home", "direct-test")
    try:
        lab.loop.run(queue.submit(ALICE, ["bob@inbox.example.org"], MESSAGE.encode()))
        deferred = lab.events.wait_for("deferred", role="direct-test")
        assert deferred["reason"].startswith("the server refused the connection: 554 5.7.1 Port 25")
        assert deferred["via"] == "mx.inbox.example.org"
    finally:
        lab.loop.run(queue.close())
    assert len(queue.spooled()) == 1


def test_a_failing_hook_is_reported_and_the_server_keeps_serving(lab, monkeypatch):
    import labkit.net.smtp.roles as roles

    def broken(*args, **kwargs):
        raise RuntimeError("policy exploded")

    monkeypatch.setattr(roles, "relay_decision", broken)
    mta = lab.start("mta")
    with client(mta, source="127.0.50.25") as smtp:
        smtp.ehlo()
        smtp.docmd("MAIL", "FROM:<eve@other.example.net>")
        code, text = smtp.docmd("RCPT", "TO:<bob@example.com>")
        assert code == 451 and text.startswith(b"4.3.0")
        assert smtp.noop()[0] == 250
    error = lab.events.wait_for("error", role="mta")
    assert error["command"] == "RCPT" and "policy exploded" in error["what"]
