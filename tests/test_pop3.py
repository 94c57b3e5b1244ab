"""The embedded POP3 server over real sockets, driven by poplib, a raw socket and openssl s_client.

One lab for the module, with the four mailbox-access servers started on its event loop (as
``labkit.Lab`` will start them). Each test empties alice's mailbox first and delivers what it
needs, either through the lab's MTA or straight into the Maildir.
"""
from __future__ import annotations

import base64
import poplib
import socket
import time

import pytest

from labkit.net.mailbox import start_imap, start_pop3
from labkit.net.mailbox.access import check_plain
from labkit.net.mailbox.pop3 import dot_stuff, top_of
from labkit.net.mailbox.store import MaildirStore
from retrieval_fixtures import (ALICE, ALICE_PW, DELAY, RawClient, emptied_mailbox, retrieval_lab, s_client,
                                tls_context)


def message(subject: str, body: str = "Hello Alice!\r\n") -> bytes:
    return (f"From: Bob <bob@inbox.example.org>\r\nTo: Alice <{ALICE}>\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@inbox.example.org>\r\n\r\n{body}").encode()


@pytest.fixture(scope="module")
def lab():
    starts = (("pop3", start_pop3, False), ("pop3s", start_pop3, True),
              ("imap", start_imap, False), ("imaps", start_imap, True))
    for lab in retrieval_lab(starts):  # one lab; the loop's end runs the checks at teardown
        lab.pop3_server, lab.pop3s_server = lab.retrieval["pop3"], lab.retrieval["pop3s"]
        yield lab


@pytest.fixture
def mailbox(lab):
    """alice's mailbox, emptied; returns a function that delivers one message into it."""
    return emptied_mailbox(lab, message)


def pop3(lab, *, login: bool = True) -> poplib.POP3:
    """A poplib client on port 110 after STLS (and logged in as alice)."""
    server = lab.pop3_server
    client = poplib.POP3(server.host, server.port, timeout=10)
    client.stls(context=tls_context(lab))
    if login:
        client.user(ALICE)
        client.pass_(ALICE_PW)
    return client


class Raw(RawClient):
    """A POP3 dialogue by hand, line by line, as over telnet or openssl s_client."""

    def __init__(self, lab, implicit: bool = True):
        super().__init__(lab, lab.pop3s_server if implicit else lab.pop3_server, implicit)

    def line(self) -> str:
        return self.file.readline().decode("utf-8").rstrip("\r\n")

    def cmd(self, text: str | bytes) -> str:
        self.send(text)
        return self.line()

    def multiline(self) -> list[str]:
        out = []
        while (line := self.line()) != ".":
            out.append(line)
        return out


# -- the pure parts --------------------------------------------------------------------------

@pytest.mark.parametrize("data, wire", [
    (b"a\r\n", b"a\r\n.\r\n"),
    (b".hidden\r\n.\r\nend\r\n", b"..hidden\r\n..\r\nend\r\n.\r\n"),
    (b"no end", b"no end\r\n.\r\n"),
    (b"", b".\r\n"),
])
def test_dot_stuffing(data, wire):
    assert dot_stuff(data) == wire


def test_top_keeps_the_header_and_n_body_lines():
    msg = b"Subject: x\r\nFrom: y\r\n\r\none\r\ntwo\r\nthree\r\n"
    assert top_of(msg, 0) == b"Subject: x\r\nFrom: y\r\n\r\n"
    assert top_of(msg, 2) == b"Subject: x\r\nFrom: y\r\n\r\none\r\ntwo\r\n"
    assert top_of(msg, 10) == msg


@pytest.mark.parametrize("response, expected", [
    (b"\0alice@example.com\0pw", ("alice@example.com", "pw")),
    (b"alice@example.com\0alice@example.com\0pw", ("alice@example.com", "pw")),
    (b"root\0alice@example.com\0pw", None),  # acting as someone else
    (b"alice@example.com\0pw", None),
    (b"\0\0pw", None),
])
def test_sasl_plain_response(response, expected):
    assert check_plain(response) == expected


# -- where it listens ------------------------------------------------------------------------

def test_servers_play_mail_example_com_on_the_standard_ports(lab):
    by_role = {s.role: s for s in (lab.pop3_server, lab.pop3s_server)}
    assert by_role["pop3"].standard_port == 110 and by_role["pop3s"].standard_port == 995
    for server in by_role.values():
        assert server.hostname == "mail.example.com"
        assert server.host == lab.world.host("home").address
        assert lab.ctx.port_for(server.host, server.standard_port) == server.port
        assert lab.ctx.port_for("0.0.0.0", server.standard_port, name="mail.example.com") == server.port


# -- STLS before any password ------------------------------------------------------------------

def test_plaintext_login_is_refused_before_stls(lab, mailbox):
    server = lab.pop3_server
    client = poplib.POP3(server.host, server.port, timeout=10)
    try:
        assert client.getwelcome().startswith(b"+OK")
        caps = client.capa()
        assert "STLS" in caps and "USER" not in caps and "SASL" not in caps
        with pytest.raises(poplib.error_proto) as info:
            client.user(ALICE)
        reply = info.value.args[0].decode()
        assert reply.startswith("-ERR [AUTH]") and "STLS" in reply and "disable_plaintext_auth" in reply
        plain = base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client._shortcmd(f"AUTH PLAIN {plain}")
        client.stls(context=tls_context(lab))
        caps = client.capa()
        assert "STLS" not in caps and "USER" in caps and caps["SASL"] == ["PLAIN"]
        client.user(ALICE)
        assert client.pass_(ALICE_PW).startswith(b"+OK")
        client.quit()
    finally:
        client.close()
    tls = lab.events.wait_for("tls", role="pop3")
    assert tls["implicit"] is False and tls["version"].startswith("TLS")


def test_stls_discards_commands_sent_ahead_in_clear(lab, mailbox):
    raw = Raw(lab, implicit=False)
    try:
        # a man in the middle could append a command after STLS; it must not run inside TLS
        raw.sock.sendall(b"STLS\r\nUSER injected@example.com\r\n")
        assert raw.line().startswith("+OK")
        raw.start_tls()
        assert raw.cmd("NOOP").startswith("-ERR NOOP is only valid after login")
        assert raw.cmd(f"PASS {ALICE_PW}").startswith("-ERR Send USER first")
    finally:
        raw.close()


# -- the whole dialogue -----------------------------------------------------------------------

def test_stat_list_uidl_retr_dele_quit(lab, mailbox):
    r = lab.send("bob@inbox.example.org", ALICE, via="mta", auth=False, source="isp",
                 subject="First", body="one\n")
    assert r.ok, r.reason
    mailbox("Second", "two\r\n")
    lab.wait_for_mail(ALICE, count=2)
    client = pop3(lab)
    try:
        count, size = client.stat()
        assert count == 2
        resp, listing, _ = client.list()
        sizes = {int(n): int(s) for n, s in (line.split() for line in listing)}
        assert sum(sizes.values()) == size and len(sizes) == 2
        _, uidls, _ = client.uidl()
        uids = dict(line.decode().split() for line in uidls)
        assert len(set(uids.values())) == 2
        resp, lines, octets = client.retr(1)
        assert resp.startswith(b"+OK") and octets == sizes[1]
        text = b"\r\n".join(lines)
        assert b"Subject: First" in text and lines[-1] == b"one"
        assert b"Received: from" in text  # it came through the lab's MTA
        assert client.dele(1).startswith(b"+OK")
        with pytest.raises(poplib.error_proto, match="marked for deletion"):
            client.retr(1)
        assert client.stat() == (1, sizes[2])
        assert client.quit().startswith(b"+OK Logging out: 1 message deleted")
    finally:
        client.close()
    left = lab.mailbox(ALICE)
    assert [m["subject"] for m in left] == ["Second"]
    deleted = lab.events.wait_for("delete", role="pop3", user=ALICE)
    assert len(deleted["uids"]) == 1
    retrieved = lab.events.wait_for("retrieve", role="pop3", user=ALICE, msg=1)
    assert retrieved["command"] == "RETR"
    assert lab.events.select("auth", role="pop3", success=True, user=ALICE, mechanism="USER")
    # RETR counts as read: the message left is unread, the one read was removed
    store = MaildirStore(lab.ctx.mailbox_dir(ALICE))
    assert [m.flags for m in store.sync()] == [""]


def test_retr_undoes_dot_stuffing_and_the_wire_has_it(lab, mailbox):
    body = ".starts with a dot\r\n.\r\n..two dots\r\nlast\r\n"
    mailbox("Dots", body)
    client = pop3(lab)
    try:
        _, lines, _ = client.retr(1)
        assert lines[-4:] == [b".starts with a dot", b".", b"..two dots", b"last"]
        client.quit()
    finally:
        client.close()
    raw = Raw(lab)
    try:
        raw.cmd(f"USER {ALICE}")
        assert raw.cmd(f"PASS {ALICE_PW}").startswith("+OK")
        assert raw.cmd("RETR 1").startswith("+OK")
        wire = raw.multiline()
        assert wire[-4:] == ["..starts with a dot", "..", "...two dots", "last"]
        assert raw.cmd("QUIT").startswith("+OK")
    finally:
        raw.close()


def test_top_and_rset_and_an_unfinished_session_deletes_nothing(lab, mailbox):
    mailbox("Top", "line 1\r\nline 2\r\nline 3\r\n")
    client = pop3(lab)
    try:
        _, lines, _ = client.top(1, 1)
        assert lines[-2:] == [b"", b"line 1"] and b"Subject: Top" in lines
        client.dele(1)
        assert client.rset().startswith(b"+OK 1 messages")
        assert client.stat()[0] == 1
        client.dele(1)
    finally:
        client.close()  # no QUIT: no UPDATE state, nothing removed (RFC 1939 §6)
    time.sleep(0.1)
    assert len(lab.mailbox(ALICE)) == 1


def test_pop3s_implicit_tls(lab, mailbox):
    mailbox("Implicit")
    server = lab.pop3s_server
    client = poplib.POP3_SSL(server.host, server.port, context=tls_context(lab), timeout=10)
    try:
        assert "STLS" not in client.capa()
        client.user(ALICE)
        client.pass_(ALICE_PW)
        assert client.stat()[0] == 1
        with pytest.raises(poplib.error_proto):
            client._shortcmd("STLS")
        client.quit()
    finally:
        client.close()
    tls = lab.events.wait_for("tls", role="pop3s")
    assert tls["implicit"] is True


def test_auth_plain_with_initial_response_and_with_a_challenge(lab, mailbox):
    plain = base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()
    raw = Raw(lab)
    try:
        assert raw.cmd("AUTH") == "+OK Mechanisms follow" and raw.multiline() == ["PLAIN"]
        assert raw.cmd("AUTH CRAM-MD5").startswith("-ERR Unsupported")
        assert raw.cmd("AUTH PLAIN").startswith("+")
        assert raw.cmd("*").startswith("-ERR Authentication cancelled")
        assert raw.cmd("AUTH PLAIN").startswith("+")
        assert raw.cmd("not base64!").startswith("-ERR Invalid base64")
        assert raw.cmd("AUTH PLAIN").startswith("+")
        assert raw.cmd(plain).startswith("+OK Logged in")
        assert raw.cmd("QUIT").startswith("+OK")
    finally:
        raw.close()
    raw = Raw(lab)
    try:
        assert raw.cmd(f"AUTH PLAIN {plain}").startswith("+OK Logged in")
        assert raw.cmd("QUIT").startswith("+OK")
    finally:
        raw.close()
    assert lab.events.select("auth", role="pop3s", success=True, mechanism="PLAIN")


# -- refusals ---------------------------------------------------------------------------------

def test_wrong_password_gets_auth_error_after_a_delay_then_the_connection_ends(lab, mailbox):
    client = pop3(lab, login=False)
    try:
        for _ in range(3):
            client.user(ALICE)
            started = time.monotonic()
            with pytest.raises(poplib.error_proto) as info:
                client.pass_("not-the-password")
            assert time.monotonic() - started >= DELAY * 0.9
            assert info.value.args[0].startswith(b"-ERR [AUTH]")
        # the third failure also ends the session
        assert client.file.readline().startswith(b"-ERR Too many failed logins")
        assert client.file.readline() == b""
    finally:
        client.close()
    failed = lab.events.wait_for("auth", role="pop3", success=False, user=ALICE)
    assert failed["mechanism"] == "USER" and "password" not in failed.details
    client = pop3(lab, login=False)
    try:
        client.user("nobody@example.com")
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            client.pass_(ALICE_PW)
        client.user(ALICE)
        client.pass_(ALICE_PW)  # the session goes on after one failure
        client.quit()
    finally:
        client.close()


def test_bad_commands_get_err_and_the_session_goes_on(lab, mailbox):
    mailbox("Still here")
    raw = Raw(lab)
    try:
        assert raw.cmd("HELO there").startswith("-ERR Unknown command; the commands are CAPA, STLS")
        assert raw.cmd("").startswith("-ERR")
        assert raw.cmd(b"\xff\xfe\x00garbage").startswith("-ERR")
        assert raw.cmd("STAT").startswith("-ERR STAT is only valid after login")
        assert raw.cmd("PASS x").startswith("-ERR Send USER first")
        assert raw.cmd("APOP alice@example.com c4c9334bac560ecc979e58001b3e22fb").startswith("-ERR APOP is not offered")
        assert raw.cmd("X" * 5000).startswith("-ERR Line too long")
        raw.cmd(f"USER {ALICE}")
        assert raw.cmd(f"PASS {ALICE_PW}").startswith("+OK")
        assert raw.cmd("RETR").startswith("-ERR RETR needs one message number")
        assert raw.cmd("RETR 0").startswith("-ERR No such message")
        assert raw.cmd("RETR 99").startswith("-ERR No such message")
        assert raw.cmd("RETR one").startswith("-ERR Invalid message number")
        assert raw.cmd("TOP 1 x").startswith("-ERR Invalid number of lines")
        assert raw.cmd("LIST 1 2").startswith("-ERR")
        assert raw.cmd("STAT now").startswith("-ERR STAT takes no argument")
        assert raw.cmd("USER bob@inbox.example.org").startswith("-ERR Already logged in")
        assert raw.cmd("STLS").startswith("-ERR")
        assert raw.cmd("NOOP") == "+OK"
        assert raw.cmd("list 1").startswith("+OK 1 ")  # commands are case-insensitive
        assert raw.cmd("QUIT").startswith("+OK")
    finally:
        raw.close()
    rejected = lab.events.select("rejected", role="pop3s")
    assert any(e["command"] == "(unknown)" for e in rejected)
    assert not lab.events.select("error", role="pop3s")


def test_mailbox_in_use_by_another_session(lab, mailbox):
    mailbox("Locked")
    first = pop3(lab)
    second = pop3(lab, login=False)
    try:
        second.user(ALICE)
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[IN-USE\]"):
            second.pass_(ALICE_PW)
        first.quit()
        second.user(ALICE)
        assert second.pass_(ALICE_PW).startswith(b"+OK")  # free once the first has gone
        second.quit()
    finally:
        first.close()
        second.close()


def test_pipelined_commands(lab, mailbox):
    mailbox("One")
    mailbox("Two")
    raw = Raw(lab)
    try:
        raw.sock.sendall(f"USER {ALICE}\r\nPASS {ALICE_PW}\r\nSTAT\r\nUIDL 2\r\nQUIT\r\n".encode())
        replies = [raw.line() for _ in range(5)]
        assert [r[:3] for r in replies] == ["+OK"] * 5
        assert replies[2].startswith("+OK 2 ")
    finally:
        raw.close()


# -- UIDs across sessions, and the same UIDs as IMAP ---------------------------------------------

def test_uidl_is_stable_across_sessions_and_matches_imap(lab, mailbox):
    import imaplib

    mailbox("A")
    mailbox("B")

    def uidl() -> dict[int, str]:
        client = pop3(lab)
        try:
            return {int(n): u for n, u in (line.decode().split() for line in client.uidl()[1])}
        finally:
            client.quit()
            client.close()

    first = uidl()
    mailbox("C")
    second = uidl()
    assert second[1] == first[1] and second[2] == first[2] and second[3] not in first.values()
    port = lab.ctx.port_for(lab.world.host("home").address, 993)
    with imaplib.IMAP4_SSL(lab.world.host("home").address, port, ssl_context=tls_context(lab)) as m:
        m.login(ALICE, ALICE_PW)
        typ, data = m.select("INBOX")
        validity = m.response("UIDVALIDITY")[1][0].decode()
        uids = m.uid("SEARCH", None, "ALL")[1][0].decode().split()
        m.logout()
    assert [u.split(".") for u in second.values()] == [[validity, uid] for uid in uids]


# -- timeouts, and openssl s_client ---------------------------------------------------------------

def test_idle_client_is_disconnected_without_a_reply(lab, mailbox):
    server = lab._loop.run(start_pop3(lab.ctx, login_timeout=0.3))
    try:
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            f = sock.makefile("rb")
            assert f.readline().startswith(b"+OK")
            assert f.readline() == b""  # RFC 1939 §3: autologout, no reply
            f.close()
    finally:
        lab._loop.run(server.close())
    assert lab.events.wait_for("timeout", role="pop3", seconds=0.3)


def test_openssl_s_client_starttls_pop3_and_implicit_tls(lab, mailbox):
    mailbox("Seen by openssl", ".a dot\r\n")
    commands = f"USER {ALICE}\nPASS {ALICE_PW}\nSTAT\nRETR 1\nQUIT\n"
    out = s_client(lab, lab.pop3_server, "-starttls", "pop3", commands=commands)
    assert "+OK Logged in: 1 message" in out and "Subject: Seen by openssl" in out
    assert "\n..a dot\n" in out.replace("\r\n", "\n")
    assert "+OK Logging out" in out
    out = s_client(lab, lab.pop3s_server, commands=commands)
    assert out.startswith("+OK Mail Lab POP3 server (mail.example.com) ready")
    assert "+OK Logged in: 1 message" in out and "+OK Logging out" in out


def test_random_commands_get_answers_and_never_break_the_server(lab, mailbox):
    import random

    rnd = random.Random(1939)
    words = ["USER", "PASS", "STAT", "LIST", "RETR", "TOP", "DELE", "RSET", "UIDL", "NOOP", "CAPA", "AUTH",
             "PLAIN", "STLS", "1", "0", "-1", "99", "x", "*", "=", "\u00e9", "\x01"]
    mailbox("Fuzzed")
    raw = Raw(lab)
    try:
        raw.cmd(f"USER {ALICE}")
        raw.cmd(f"PASS {ALICE_PW}")
        for _ in range(150):
            line = " ".join(rnd.choice(words) for _ in range(rnd.randint(1, 3)))
            reply = raw.cmd(line)
            assert reply.startswith(("+OK", "-ERR", "+ ")), (line, reply)
            if reply.startswith("+ "):
                assert raw.cmd("*").startswith("-ERR")
            elif reply.startswith("+OK") and (line in ("LIST", "UIDL", "CAPA", "AUTH") or
                                              line.split()[0] in ("RETR", "TOP")):
                raw.multiline()
        assert raw.cmd("RSET").startswith("+OK") and raw.cmd("QUIT").startswith("+OK")
    finally:
        raw.close()
    assert not lab.events.select("error", role="pop3s")
    assert len(lab.mailbox(ALICE)) == 1
