"""The raw SMTP client against a small aiosmtpd server started here, on 127.0.0.1 port 0."""
from __future__ import annotations

import base64
import socket
import threading
import time

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from labkit.teach.display import TranscriptView, send_result_html
from labkit.errors import LabError, ProtocolError
from labkit.net.loop import LoopThread
from labkit.core.pki import CA, issue_host
from labkit.net.clients.smtp import (RawSMTP, SMTPConnectionError, SMTPTLSError, auth_plain_string,
                                build_message, dot_stuff, message_lines, parse_ehlo, send_message)
from labkit.core.transcript import REDACTED, Reply, Transcript

SERVER_NAME = "mx.test.example"
USER, PASSWORD = "alice@example.com", "s3cret-lab-pw"


class Handler:
    """Takes every recipient but nobody@..., keeps every message."""

    def __init__(self):
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.logins: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody@"):
            return f"550 5.1.1 <{address}>: no such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 Message accepted"


class Authenticator:
    def __init__(self, handler: Handler):
        self.handler = handler

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == USER \
            and auth_data.password.decode() == PASSWORD
        if ok:
            self.handler.logins.append(mechanism)
        return AuthResult(success=ok, handled=False)  # False: the server says 535


class Server:
    def __init__(self, loop_thread: LoopThread, tls, implicit: bool):
        self.handler = Handler()
        self.loop_thread = loop_thread
        loop = loop_thread.loop

        def factory():
            return SMTP(self.handler, hostname=SERVER_NAME, loop=loop,
                        tls_context=None if implicit else tls,
                        authenticator=Authenticator(self.handler),
                        auth_require_tls=not implicit)

        self.server = loop_thread.run(loop.create_server(factory, "127.0.0.1", 0,
                                                         ssl=tls if implicit else None))
        self.host, self.port = self.server.sockets[0].getsockname()[:2]

    def close(self) -> None:
        async def close_on_the_loop():  # asyncio servers must be closed from their own thread
            self.server.close()
            await self.server.wait_closed()

        self.loop_thread.run(close_on_the_loop())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = CA.create()
    ca_path = ca.save(folder)
    creds = issue_host(ca, folder, SERVER_NAME, ca_path=ca_path)
    return ca_path, creds.server_context()


@pytest.fixture
def loop_thread():
    lt = LoopThread("test-client")
    lt.start()
    yield lt
    lt.stop()


@pytest.fixture
def server(loop_thread, pki):
    srv = Server(loop_thread, pki[1], implicit=False)
    yield srv
    srv.close()


@pytest.fixture
def smtps(loop_thread, pki):
    srv = Server(loop_thread, pki[1], implicit=True)
    yield srv
    srv.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- pure helpers --------------------------------------------------------------------------------

def test_auth_plain_string_is_the_rfc4616_example():
    assert auth_plain_string("tim", "tanstaaftanstaaf") == "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
    assert base64.b64decode(auth_plain_string("u", "p", authzid="z")) == b"z\0u\0p"


def test_auth_plain_string_refuses_nul():
    with pytest.raises(LabError, match="NUL"):
        auth_plain_string("a\0b", "pw")


@pytest.mark.parametrize("line, sent", [
    (b"plain", b"plain"), (b".hidden", b"..hidden"), (b".", b".."), (b"", b""), (b"a.b", b"a.b"),
])
def test_dot_stuffing(line, sent):
    assert dot_stuff(line) == sent


@pytest.mark.parametrize("message, lines", [
    (b"a\r\nb\r\n", [b"a", b"b"]),
    (b"a\nb", [b"a", b"b"]),
    ("a\rb\n\n", [b"a", b"b", b""]),
    (b"", []),
])
def test_message_lines_normalise_endings(message, lines):
    assert message_lines(message) == lines


def test_parse_ehlo():
    reply = Reply(250, ["mx", "size 100", "AUTH PLAIN LOGIN", "STARTTLS", "8BITMIME"])
    assert parse_ehlo(reply) == {"SIZE": "100", "AUTH": "PLAIN LOGIN", "STARTTLS": "", "8BITMIME": ""}
    assert parse_ehlo(Reply(502, ["no"])) == {}


def test_build_message_has_the_headers():
    raw = build_message("alice@example.com", ["bob@inbox.example.org"], "Hi", "Hello\n")
    text = raw.decode()
    for header in ("From: alice@example.com", "To: bob@inbox.example.org", "Subject: Hi", "Date: "):
        assert header in text
    assert "@example.com>" in text.split("Message-ID:")[1].splitlines()[0]
    assert b"\r\n" in raw


# -- against a server ------------------------------------------------------------------------------

def full_dialogue(server, ca_path, reveal=False) -> RawSMTP:
    with RawSMTP(server.host, server.port, server_name=f"{SERVER_NAME}:587", reveal_secrets=reveal,
                 cafile=str(ca_path)) as s:
        assert s.connect().code == 220
        first = s.ehlo("pc.example.com")
        assert first.code == 250 and len(first.lines) > 2
        assert "STARTTLS" in s.extensions and "AUTH" not in s.extensions
        assert s.starttls().code == 220
        assert s.tls and s.extensions == {}
        s.ehlo("pc.example.com")
        assert "PLAIN" in s.auth_mechanisms
        auth = s.auth_plain(USER, PASSWORD)
        assert auth.code == 235, auth
        assert s.mail(USER).code == 250
        assert s.rcpt("bob@inbox.example.org").code == 250
        final = s.data("Subject: test\r\n\r\nHello\r\n.hidden line\r\n.\r\nend\r\n")
        assert final.code == 250 and final.enhanced == "2.0.0"
        assert s.quit().code == 221
    return s


def test_full_dialogue_with_starttls_and_auth(server, pki):
    s = full_dialogue(server, pki[0])
    t = s.transcript
    assert t.client_name == "pc.example.com" and t.server_name == f"{SERVER_NAME}:587"
    assert t.commands()[:4] == ["EHLO pc.example.com", "STARTTLS", "EHLO pc.example.com",
                                f"AUTH PLAIN {REDACTED}"]
    assert t.commands()[4:7] == [f"MAIL FROM:<{USER}>", "RCPT TO:<bob@inbox.example.org>", "DATA"]
    assert t.commands()[-2:] == [".", "QUIT"]
    codes = [r.code for r in t.replies()]
    assert codes == [220, 250, 220, 250, 235, 250, 250, 354, 250, 221]
    tls_notes = [n for n in t.notes() if n.startswith("TLS established")]
    assert len(tls_notes) == 1 and "TLSv1." in tls_notes[0]
    cert_note = t.notes()[t.notes().index(tls_notes[0]) + 1]
    assert f"subject CN={SERVER_NAME}" in cert_note and "Mail Lab CA" in cert_note
    assert f"verified for {SERVER_NAME}" in cert_note
    assert s.tls_info["verified"] is True
    assert server.handler.logins == ["PLAIN"]


def test_password_never_recorded(server, pki):
    s = full_dialogue(server, pki[0])
    secret_forms = [PASSWORD, auth_plain_string(USER, PASSWORD),
                    base64.b64encode(PASSWORD.encode()).decode()]
    view = TranscriptView(s.transcript)
    for shown in (s.transcript.to_text(), s.transcript.to_json(), view.to_html(), view.to_mermaid(),
                  view.to_ansi(color=True), repr(s)):
        for secret in secret_forms:
            assert secret not in shown


def test_reveal_secrets_records_them_when_asked(server, pki):
    s = full_dialogue(server, pki[0], reveal=True)
    assert f"AUTH PLAIN {auth_plain_string(USER, PASSWORD)}" in s.transcript.commands()


def test_auth_login_answers_are_redacted(server, pki):
    with RawSMTP(server.host, server.port, cafile=str(pki[0]), server_hostname=SERVER_NAME) as s:
        s.connect()
        s.ehlo("pc.example.com")
        s.starttls()
        s.ehlo("pc.example.com")
        assert s.auth_login(USER, PASSWORD).code == 235
        s.quit()
    cmds = s.transcript.commands()
    i = cmds.index("AUTH LOGIN")
    assert cmds[i + 1:i + 3] == [REDACTED, REDACTED]
    assert cmds[i + 3] == "QUIT"  # after 235 the client speaks in clear again
    assert USER not in s.transcript.to_json().split("AUTH LOGIN")[1].split("QUIT")[0]


def test_dot_stuffed_line_arrives_intact(server, pki):
    full_dialogue(server, pki[0])
    (mail_from, rcpts, content), = server.handler.messages
    assert (mail_from, rcpts) == (USER, ["bob@inbox.example.org"])
    assert content.split(b"\r\n") == [b"Subject: test", b"", b"Hello", b".hidden line", b".", b"end", b""]


def test_transcript_shows_the_stuffed_lines_and_summarises_long_bodies(server):
    body = "Subject: long\r\n\r\n" + "".join(f"line {i}\r\n" for i in range(30))
    with RawSMTP(server.host, server.port) as s:
        s.connect()
        s.ehlo("pc.example.com")
        s.mail("a@example.com")
        s.rcpt("b@example.com")
        assert s.data(body, body_lines_shown=5).code == 250
        s.quit()
    cmds = s.transcript.commands()
    assert "Subject: long" in cmds and "line 4" in cmds and "line 5" not in cmds
    assert any(n.startswith("25 more body lines") for n in s.transcript.notes())
    assert len(server.handler.messages[0][2].split(b"\r\n")) == 33


def test_raw_commands_and_malformed_input(server):
    with RawSMTP(server.host, server.port) as s:
        s.connect()
        assert s.command("HELO").code == 501  # HELO needs a name
        assert s.command("FOO bar").code == 500
        bad = s.mail("a@example.com")
        assert bad.code == 503 and not bad.ok  # MAIL before HELO/EHLO
        with pytest.raises(LabError, match="CR or LF"):
            s.command("NOOP\r\nQUIT")
        s.quit()
    assert s.transcript.commands() == ["HELO", "FOO bar", "MAIL FROM:<a@example.com>", "QUIT"]


def test_typing_the_message_by_hand(server):
    with RawSMTP(server.host, server.port) as s:
        s.connect()
        s.ehlo("pc.example.com")
        s.mail("a@example.com")
        s.rcpt("b@example.com")
        assert s.command("DATA").code == 354
        for line in ("Subject: by hand", "", "typed", "."):
            s.send_line(line)
        assert s.read_reply().code == 250
        s.quit()
    assert server.handler.messages[0][2] == b"Subject: by hand\r\n\r\ntyped\r\n"


def test_send_message_refused_recipient_is_in_the_result(server, pki):
    res = send_message(server.host, server.port, mail_from=USER,
                       rcpt_to=["bob@inbox.example.org", "nobody@inbox.example.org"],
                       subject="partly", auth=(USER, PASSWORD), cafile=str(pki[0]),
                       server_hostname=SERVER_NAME)
    assert not res.ok
    assert res.accepted == ["bob@inbox.example.org"]
    refusal = res.refused["nobody@inbox.example.org"]
    assert refusal.code == 550 and refusal.enhanced == "5.1.1"
    assert "nobody@inbox.example.org" in res.reason and "550" in res.reason
    assert res.reply.code == 250  # the message itself went to bob
    assert len(server.handler.messages) == 1
    assert "STARTTLS" in res.transcript.commands()  # None = when offered
    assert f"AUTH PLAIN {REDACTED}" in res.transcript.commands()
    assert PASSWORD not in res.transcript.to_json()


def test_send_message_every_recipient_refused(server):
    res = send_message(server.host, server.port, mail_from="a@example.com",
                       rcpt_to=["nobody@example.com"], starttls=False)
    assert not res.ok and res.reply.code == 550 and res.accepted == []
    assert "DATA" not in res.transcript.commands() and res.transcript.commands()[-1] == "QUIT"
    assert server.handler.messages == []


def test_send_message_builds_a_message(server):
    res = send_message(server.host, server.port, mail_from="alice@example.com",
                       rcpt_to=["bob@inbox.example.org"], subject="Hello", body="Hi Bob\n",
                       starttls=False)
    assert res.ok and bool(res), res.reason
    content = server.handler.messages[0][2].decode()
    assert "Subject: Hello" in content and "Hi Bob" in content
    assert "@example.com>" in content.split("Message-ID:")[1].splitlines()[0]
    assert "Subject: Hello" in res.transcript.commands()


def test_send_message_auth_refused(server, pki):
    res = send_message(server.host, server.port, mail_from=USER, rcpt_to=["bob@inbox.example.org"],
                       auth=(USER, "wrong"), cafile=str(pki[0]), server_hostname=SERVER_NAME)
    assert not res.ok and res.reply.code == 535
    assert "wrong" not in res.transcript.to_text()


def test_starttls_required_but_not_offered(loop_thread):
    plain = Server(loop_thread, None, implicit=False)
    try:
        res = send_message(plain.host, plain.port, mail_from="a@example.com", rcpt_to=["b@example.com"],
                           starttls=True)
    finally:
        plain.close()
    assert not res.ok and "does not offer STARTTLS" in res.reason
    assert res.transcript.commands() == ["EHLO pc.example.com", "QUIT"]


def test_starttls_without_the_lab_ca_says_to_pass_cafile(server):
    with pytest.raises(SMTPTLSError, match="cafile") as info:
        send_message(server.host, server.port, mail_from="a@example.com", rcpt_to=["b@example.com"],
                     server_hostname=SERVER_NAME)
    assert info.value.transcript.commands()[-1] == "STARTTLS"


def test_tls_failure_raises_with_the_transcript(server, tmp_path):
    other_ca = CA.create("Some Other CA").save(tmp_path)
    with RawSMTP(server.host, server.port, server_hostname=SERVER_NAME, cafile=str(other_ca)) as s:
        s.connect()
        s.ehlo("pc.example.com")
        with pytest.raises(SMTPTLSError) as info:
            s.starttls()
    err = info.value
    assert f"{server.host}:{server.port}" in str(err) and "cafile" in str(err)
    assert err.transcript.commands() == ["EHLO pc.example.com", "STARTTLS"]
    assert not s.connected


def test_wrong_server_hostname_is_refused(server, pki):
    with RawSMTP(server.host, server.port, cafile=str(pki[0]), server_hostname="mail.evil.example") as s:
        s.connect()
        s.ehlo("pc.example.com")
        with pytest.raises(SMTPTLSError, match="mail.evil.example"):
            s.starttls()


def test_starttls_unverified_still_encrypts(server):
    with RawSMTP(server.host, server.port) as s:
        s.connect()
        s.ehlo("pc.example.com")
        s.starttls(verify=False)
        assert s.tls and s.tls_info["verified"] is False
        s.quit()
    assert any("NOT verified" in n for n in s.transcript.notes())


def test_implicit_tls(smtps, pki):
    with RawSMTP(smtps.host, smtps.port, implicit_tls=True, cafile=str(pki[0]),
                 server_hostname=SERVER_NAME) as s:
        assert s.connect().code == 220
        assert s.tls
        s.ehlo("pc.example.com")
        assert "STARTTLS" not in s.extensions
        assert s.auth_plain(USER, PASSWORD).code == 235
        s.quit()
    t = s.transcript
    assert t.notes()[0].startswith("connected to") and t.notes()[1].startswith("TLS established")
    res = send_message(smtps.host, smtps.port, mail_from=USER, rcpt_to=["bob@inbox.example.org"],
                       implicit_tls=True, auth=(USER, PASSWORD), cafile=str(pki[0]),
                       server_hostname=SERVER_NAME)
    assert res.ok, res.reason
    assert "STARTTLS" not in res.transcript.commands()


def test_implicit_tls_to_a_plain_port_fails_clearly(server, pki):
    with pytest.raises(SMTPTLSError, match="implicit TLS"):
        send_message(server.host, server.port, mail_from="a@example.com", rcpt_to=["b@example.com"],
                     implicit_tls=True, cafile=str(pki[0]), server_hostname=SERVER_NAME, timeout=2)


def test_connection_refused_names_the_place():
    port = closed_port()
    with pytest.raises(SMTPConnectionError) as info:
        send_message("127.0.0.1", port, mail_from="a@example.com", rcpt_to=["b@example.com"])
    err = info.value
    assert isinstance(err, LabError)
    assert f"127.0.0.1:{port}" in str(err) and "refused" in str(err) and "labkit status" in str(err)
    assert err.transcript is not None and err.transcript.commands() == []


def test_no_greeting_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts in the kernel, never says 220
    try:
        port = listener.getsockname()[1]
        started = time.monotonic()
        with RawSMTP("127.0.0.1", port, timeout=0.3) as s:
            with pytest.raises(SMTPConnectionError, match=r"no reply .* within 0.3 s"):
                s.connect()
        assert time.monotonic() - started < 3
    finally:
        listener.close()


def test_not_smtp_raises_protocol_error():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def answer_like_http():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n")
            conn.recv(1)  # wait for the client to hang up

    th = threading.Thread(target=answer_like_http)
    th.start()
    try:
        with RawSMTP("127.0.0.1", listener.getsockname()[1], timeout=5) as s:
            with pytest.raises(ProtocolError, match="not an SMTP reply") as info:
                s.connect()
    finally:
        th.join(5)
        listener.close()
    assert [ln.text for ln in info.value.transcript if ln.direction == "S"] == ["HTTP/1.1 400 Bad Request"]


def test_close_is_idempotent_and_commands_after_close_fail(server):
    s = RawSMTP(server.host, server.port)
    s.connect()
    s.close()
    s.close()
    assert s.transcript.notes().count("connection closed") == 1
    with pytest.raises(SMTPConnectionError, match="connect"):
        s.command("NOOP")


def test_transcript_json_round_trip(server):
    with RawSMTP(server.host, server.port) as s:
        s.connect()
        s.ehlo("pc.example.com")
        s.quit()
    again = Transcript.from_json(s.transcript.to_json())
    assert again == s.transcript
    assert [r.code for r in again.replies()] == [220, 250, 221]


def test_typed_auth_exchange_is_redacted(server, pki):
    """The memo's way: AUTH PLAIN alone, then the base64 string on its own line after 334."""
    with RawSMTP(server.host, server.port, cafile=str(pki[0]), server_hostname=SERVER_NAME) as s:
        s.connect()
        s.ehlo("pc.example.com")
        s.starttls()
        s.ehlo("pc.example.com")
        assert s.command("AUTH PLAIN").code == 334
        assert s.command(auth_plain_string(USER, PASSWORD)).code == 235
        assert s.command("NOOP").code == 250  # recorded again once the exchange is over
        s.quit()
    assert s.transcript.commands()[-4:] == ["AUTH PLAIN", REDACTED, "NOOP", "QUIT"]


def test_send_result_shows_in_a_notebook(server):
    res = send_message(server.host, server.port, mail_from="a@example.com",
                       rcpt_to=["nobody@example.com"], starttls=False)
    html = send_result_html(res)
    assert "not sent" in html and "labkit-fail" in html and "&lt;nobody@example.com&gt;" in html
    assert str(res).startswith("not sent: ")
