"""RawPOP3 and RawIMAP: the pure helpers table by table, then whole dialogues with the lab's
POP3 and IMAP servers (STLS/STARTTLS, implicit TLS, literals, redaction, errors)."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from labkit import Lab, display, pki
from labkit.errors import (ConfigError, ConnectionFailed, LabError, ProtocolError, SMTPConnectionError,
                           TLSFailed)
from labkit.net.clients.retrieval import (KINDS, IMAPResponse, MailAccessTranscript, MailboxConnectionError,
                                     MailboxTLSError, POP3Reply, RawIMAP, RawPOP3, Untagged,
                                     classify_server_line, imap_astring, literal_size, parse_fetch,
                                     parse_imap_status, parse_pop3_status)
from labkit.net.clients.smtp import auth_plain_string
from labkit.core.transcript import Transcript

ALICE, ALICE_PW = "alice@example.com", "alice-lab-password"


# -- pure helpers ------------------------------------------------------------------------------

@pytest.mark.parametrize("line, expected", [
    ("+OK", ("+OK", None, "")),
    ("+OK 2 1234", ("+OK", None, "2 1234")),
    ("-ERR [AUTH] Authentication failed", ("-ERR", "AUTH", "Authentication failed")),
    ("-ERR [SYS/TEMP] try later", ("-ERR", "SYS/TEMP", "try later")),
    ("+ ", ("+", None, "")),
    ("+", ("+", None, "")),
    ("+ dGVzdA==", ("+", None, "dGVzdA==")),
    ("+OKAY", None),
    ("* OK hello", None),
    ("220 mail ESMTP", None),
    ("", None),
])
def test_parse_pop3_status(line, expected):
    assert parse_pop3_status(line) == expected


@pytest.mark.parametrize("line, expected", [
    ("a1 OK done", ("a1", "OK", None, "done")),
    ("a2 NO [PRIVACYREQUIRED] Plaintext login is disabled",
     ("a2", "NO", "PRIVACYREQUIRED", "Plaintext login is disabled")),
    ("a3 bad Syntax", ("a3", "BAD", None, "Syntax")),
    ("* OK [UIDVALIDITY 17] UIDs valid", ("*", "OK", "UIDVALIDITY 17", "UIDs valid")),
    ("* BYE Logging out", ("*", "BYE", None, "Logging out")),
    ("* 2 EXISTS", ("*", None, None, "2 EXISTS")),
    ("* CAPABILITY IMAP4rev1 STARTTLS", ("*", None, None, "CAPABILITY IMAP4rev1 STARTTLS")),
    ("+ ", ("+", None, None, "")),
    ("+ go on", ("+", None, None, "go on")),
    ("a1 FETCH", None),
    ("+OK POP3 ready", None),
    ("garbage", None),
])
def test_parse_imap_status(line, expected):
    assert parse_imap_status(line) == expected


@pytest.mark.parametrize("protocol, line, kind", [
    ("pop3", "+OK ready", "2xx"), ("pop3", "-ERR [AUTH] no", "5xx"), ("pop3", "+ ", "3xx"),
    ("pop3", "* OK imap", "bad"),
    ("imap", "a1 OK done", "2xx"), ("imap", "a1 NO [AUTHENTICATIONFAILED] no", "5xx"),
    ("imap", "a1 BAD what?", "bad"), ("imap", "* 3 EXISTS", "2xx"), ("imap", "* OK [UNSEEN 1] x", "2xx"),
    ("imap", "* PREAUTH hi", "2xx"), ("imap", "* BYE closing", "4xx"), ("imap", "* NO warning", "4xx"),
    ("imap", "* BAD junk", "bad"), ("imap", "+ ", "3xx"), ("imap", "+OK pop", "bad"),
])
def test_classify_server_line(protocol, line, kind):
    assert classify_server_line(protocol, line) == kind and kind in KINDS


@pytest.mark.parametrize("line, size", [
    (b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {23}", 23), ("* 1 FETCH (BODY[] {0}", 0),
    (b"a1 LOGIN {5+}", 5), (b"* 1 FETCH (FLAGS ())", None), (b"{12} in the middle", None), (b"{x}", None),
])
def test_literal_size(line, size):
    assert literal_size(line) == size


def test_imap_astring_quotes_what_cannot_be_an_atom():
    assert imap_astring("alice@example.com") == "alice@example.com"
    assert imap_astring("INBOX") == "INBOX"
    assert imap_astring("") == '""'
    assert imap_astring("two words") == '"two words"'
    assert imap_astring('a"b\\c') == '"a\\"b\\\\c"'
    assert imap_astring("pa(ss)") == '"pa(ss)"'
    assert imap_astring("naïve") == '"naïve"'
    for bad in ("a\r\nb", "nul\0"):
        with pytest.raises(ConfigError, match="literal"):
            imap_astring(bad)


def test_parse_fetch_reads_lists_strings_literals_and_sections():
    u = Untagged('12 FETCH (UID 7 FLAGS (\\Seen \\Answered) RFC822.SIZE 530 '
                 'BODY[HEADER.FIELDS (SUBJECT FROM)] {9} INTERNALDATE "07-Jan-2024 10:00:00 +0900" '
                 'ENVELOPE (NIL "Hi \\"you\\"" ((NIL NIL "bob" "example.org"))) BODY[TEXT]<0> {2})',
                 [b"Subject:\r\n", b"hi"])
    seq, items = parse_fetch(u)
    assert seq == 12
    assert items["UID"] == 7 and items["RFC822.SIZE"] == 530
    assert items["FLAGS"] == ("\\Seen", "\\Answered")
    assert items["BODY[HEADER.FIELDS (SUBJECT FROM)]"] == b"Subject:\r\n"
    assert items["INTERNALDATE"] == "07-Jan-2024 10:00:00 +0900"
    assert items["ENVELOPE"] == [None, 'Hi "you"', [[None, None, "bob", "example.org"]]]
    assert items["BODY[TEXT]<0>"] == b"hi"
    assert u.keyword == "FETCH"
    for bad in ("1 EXISTS", "x FETCH (UID 1)", "1 FETCH (UID)", "1 FETCH (UID 1", "1 FETCH UID 1)"):
        with pytest.raises(ValueError):
            parse_fetch(Untagged(bad))


def test_replies_read_their_parts():
    r = POP3Reply("-ERR", "Authentication failed", "AUTH")
    assert not r.ok and r.first_line == "-ERR [AUTH] Authentication failed" and str(r) == r.first_line
    listing = POP3Reply("+OK", "2 messages", lines=["1 120", "2 340"])
    assert listing.ok and listing.listing() == {1: "120", 2: "340"} and "(+ 2 lines)" in str(listing)
    assert POP3Reply("+OK", "3 1718.4").listing() == {3: "1718.4"}
    resp = IMAPResponse("a5", "OK", "SELECT completed", "READ-WRITE",
                        [Untagged("3 EXISTS"), Untagged("OK [UIDVALIDITY 1718] UIDs valid"),
                         Untagged("SEARCH 1 2")])
    assert resp.ok and resp.find("exists")[0].text == "3 EXISTS" and resp.find("SEARCH")[0].keyword == "SEARCH"
    assert resp.response_code("UIDVALIDITY") == "1718" and resp.response_code("READ-WRITE") == ""
    assert resp.response_code("UIDNEXT") is None
    assert str(resp).splitlines() == ["* 3 EXISTS", "* OK [UIDVALIDITY 1718] UIDs valid", "* SEARCH 1 2",
                                      "a5 OK [READ-WRITE] SELECT completed"]
    assert IMAPResponse("+", "+", "go on").status_line == "+ go on"


def test_transcript_knows_its_kinds_and_round_trips():
    t = MailAccessTranscript("pc", "mail.example.com:110", protocol="pop3")
    t.note("connected")
    t.add("S", "+OK ready")
    t.add("C", "RETR 1")
    t.add("S", "+OK 10 octets")
    t.add("S", "Subject: x", kind="message")
    t.add("S", "-ERR nope")
    assert isinstance(t, Transcript)
    assert t.line_kinds() == ["note", "2xx", "command", "2xx", "message", "5xx"]
    assert t.replies() == [] and [ln.text for ln in t.status_lines()] == ["+OK ready", "+OK 10 octets", "-ERR nope"]
    back = MailAccessTranscript.from_json(t.to_json())
    assert back == t and back.protocol == "pop3" and back.line_kinds() == t.line_kinds()
    assert json.loads(t.to_json())["kinds"][4] == "message"
    assert repr(t) == "<MailAccessTranscript POP3 pc -> mail.example.com:110: 1 commands, 3 answers>"
    t.lines.append(t.lines[1])  # appended behind the recorder's back: classified by its text
    assert t.line_kinds()[-1] == "2xx"
    imap = MailAccessTranscript(protocol="imap", lines=t.lines[:2])
    assert imap.line_kinds() == ["note", "bad"]  # "+OK" is not IMAP
    with pytest.raises(ConfigError):
        MailAccessTranscript(protocol="smtp")
    with pytest.raises(ConfigError):
        t.add("S", "x", kind="purple")


@pytest.mark.parametrize("line, recorded", [
    ("PASS alice-lab-password", "PASS ****"),
    ("pass two words", "pass ****"),
    ("PASS", "PASS"),
    ("APOP alice@example.com c4c9334bac560ecc979e58001b3e22fb", "APOP alice@example.com ****"),
    ("AUTH PLAIN AGFsaWNlAHB3", "AUTH PLAIN ****"),
    ("AUTH PLAIN", "AUTH PLAIN"),
    ("USER alice@example.com", "USER alice@example.com"),
    ("RETR 1", "RETR 1"),
])
def test_pop3_redaction(line, recorded):
    p = RawPOP3("127.0.0.1", 1)
    assert p._recorded_form(line) == recorded
    assert RawPOP3("127.0.0.1", 1, reveal_secrets=True)._recorded_form(line) == line


@pytest.mark.parametrize("line, recorded", [
    ("a1 LOGIN alice@example.com alice-lab-password", "a1 LOGIN alice@example.com ****"),
    ('a1 login "two words" "pass word"', 'a1 login "two words" ****'),
    ('a1 LOGIN "q\\"x" pw', 'a1 LOGIN "q\\"x" ****'),
    ("a1 LOGIN {5}", "a1 LOGIN ****"),
    ("a1 AUTHENTICATE PLAIN AGFsaWNlAHB3", "a1 AUTHENTICATE PLAIN ****"),
    ("a1 AUTHENTICATE PLAIN", "a1 AUTHENTICATE PLAIN"),
    ("a1 SELECT INBOX", "a1 SELECT INBOX"),
])
def test_imap_redaction(line, recorded):
    assert RawIMAP("127.0.0.1", 1)._recorded_form(line) == recorded
    assert RawIMAP("127.0.0.1", 1, reveal_secrets=True)._recorded_form(line) == line


def test_bad_arguments():
    with pytest.raises(ConfigError):
        RawIMAP("127.0.0.1", 1, tag_prefix="a b")
    p = RawPOP3("127.0.0.1", 1)
    with pytest.raises(ConfigError, match="CR or LF"):
        p.send_line("NOOP\r\nQUIT")
    with pytest.raises(MailboxConnectionError, match="connect"):
        p.noop()  # not connected
    assert "not connected" in repr(p)


# -- with the lab -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab():
    with Lab() as lab:
        yield lab


def deliver(lab, subject: str, body: str = "Hello Alice!\n") -> None:
    before = len(lab.mailbox(ALICE))
    sent = lab.send("bob@inbox.example.org", ALICE, via="mta", auth=False, source="isp", subject=subject, body=body)
    assert sent.ok, sent.reason
    lab.wait_for_mail(ALICE, count=before + 1)


def pop3(lab, role: str = "pop3", **kw) -> RawPOP3:
    svc = lab.services[role]
    return RawPOP3(svc.host, svc.port, server_name=f"{svc.name}:{svc.standard_port}", cafile=lab.ca_path,
                   implicit_tls=role == "pop3s", **kw)


def imap(lab, role: str = "imap", **kw) -> RawIMAP:
    svc = lab.services[role]
    return RawIMAP(svc.host, svc.port, server_name=f"{svc.name}:{svc.standard_port}", cafile=lab.ca_path,
                   implicit_tls=role == "imaps", **kw)


def subjects(lab) -> list[str]:
    return [m["subject"] for m in lab.mailbox(ALICE)]


def test_pop3_session_stls_login_retr_dele_quit(lab):
    deliver(lab, "POP3 dots", ".leading dot\n.\nend\n")
    with pop3(lab, source_address=lab.world.host("pc").address, client_name="pc.example.com") as p:
        assert p.connect().ok and "POP3" in p.banner.text
        p.capa()
        assert "STLS" in p.capabilities and "USER" not in p.capabilities
        early = p.user(ALICE)
        assert (early.status, early.code) == ("-ERR", "AUTH")
        assert p.stls().ok and p.tls and p.capabilities == []
        assert p.tls_info["verified"] and p.tls_info["server_hostname"] == "mail.example.com"
        with pytest.raises(ProtocolError, match="refused STLS"):
            p.stls()  # TLS is already on
        assert p.login(ALICE, ALICE_PW).ok
        count = int(p.stat().text.split()[0])
        uidl = p.uidl().listing()
        assert len(uidl) == count == len(p.list().listing())
        n = next(n for n in uidl if "Subject: POP3 dots" in p.top(n, 0).lines)
        assert p.uidl(n).listing() == {n: uidl[n]}
        msg = p.retr(n)
        assert msg.ok and msg.data.endswith(b"\r\n.leading dot\r\n.\r\nend\r\n")
        assert msg.lines[-3:] == [".leading dot", ".", "end"]
        assert p.dele(n).ok and p.noop().ok
        assert not p.retr(n).ok  # marked for deletion
        assert p.quit().ok and not p.connected
    assert "POP3 dots" not in subjects(lab)
    t = p.transcript
    assert "PASS ****" in t.commands() and ALICE_PW not in t.to_json()
    wire = [ln.text for ln in t if ln.direction == "S"]
    assert "..leading dot" in wire and ".." in wire
    kinds = dict(zip((ln.text for ln in t), t.line_kinds(), strict=True))
    assert kinds["..leading dot"] == "message" and kinds["Subject: POP3 dots"] == "message"
    assert kinds["-ERR [AUTH] " + early.text] == "5xx" and kinds["STLS"] == "command"
    assert any("dot-stuffing" in n for n in t.notes()) and any(n.startswith("TLS established") for n in t.notes())
    assert "TLS established" in display.TranscriptView(p).to_mermaid()


def test_pop3s_auth_plain_and_a_sasl_challenge_is_redacted(lab):
    with pop3(lab, "pop3s") as p:
        p.connect()
        assert p.tls and p.transcript.notes()[1].startswith("TLS established")
        challenge = p.command("AUTH PLAIN")
        assert challenge.status == "+"
        assert p.command(auth_plain_string(ALICE, ALICE_PW)).ok
        p.quit()
    assert p.transcript.commands()[-2] == "****"
    with pop3(lab, "pop3s") as p:
        p.connect()
        assert p.auth_plain(ALICE, ALICE_PW).ok
        assert "AUTH PLAIN ****" in p.transcript.commands()
        p.quit()
    for q in (p,):
        assert auth_plain_string(ALICE, ALICE_PW) not in q.transcript.to_json()


def test_body_lines_shown_limits_what_the_transcript_holds(lab):
    deliver(lab, "Long", "".join(f"line {i}\n" for i in range(30)))
    with pop3(lab, "pop3s", body_lines_shown=3) as p:
        p.connect()
        p.login(ALICE, ALICE_PW)
        n = next(n for n in p.uidl().listing() if "Subject: Long" in p.top(n, 0).lines)
        msg = p.retr(n)
        p.rset()
        p.quit()
    assert msg.lines[-1] == "line 29" and len([ln for ln in msg.lines if ln.startswith("line ")]) == 30
    shown = [ln.text for ln in p.transcript if ln.text.startswith("line ")]
    assert shown == ["line 0", "line 1", "line 2"]
    assert any("27 more body lines" in n for n in p.transcript.notes())


def test_imap_session_starttls_select_fetch_literals_store_expunge(lab):
    deliver(lab, "IMAP literal", "Hello IMAP\n")
    with imap(lab) as m:
        greeting = m.connect()
        assert greeting.status == "OK" and "LOGINDISABLED" in m.capabilities
        refused = m.login("probe@example.invalid", "not-a-password")
        assert (refused.tag, refused.status, refused.code) == ("a1", "NO", "PRIVACYREQUIRED")
        m.starttls()
        assert m.tls and m.capabilities == []
        m.capability()
        assert "AUTH=PLAIN" in m.capabilities and "LOGINDISABLED" not in m.capabilities
        assert m.login(ALICE, ALICE_PW).ok
        sel = m.select()
        assert sel.ok and m.selected == "INBOX" and int(sel.response_code("UIDVALIDITY")) > 0
        uid = m.search('SUBJECT "IMAP literal"', uid=True)[-1]
        head = m.fetch(uid, "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])", uid=True).fetched()
        (items,) = head.values()
        assert items["UID"] == uid and "\\Seen" not in items["FLAGS"]
        assert items["BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: IMAP literal\r\n\r\n"
        part = m.fetch(uid, "(BODY.PEEK[TEXT]<0.5> FLAGS)", uid=True)  # a literal without a line end
        (items,) = part.fetched().values()
        assert items["BODY[TEXT]<0>"] == b"Hello" and "FLAGS" in items and part.literals == [b"Hello"]
        whole = m.fetch(uid, "BODY[]", uid=True)
        assert b"Hello IMAP" in whole.literals[0]
        assert "\\Seen" in m.fetch(uid, "FLAGS", uid=True).fetched().popitem()[1]["FLAGS"]
        assert m.store(uid, "+FLAGS", "(\\Deleted)", uid=True).ok
        assert m.expunge().find("EXPUNGE")
        bad = m.command("FROB")
        assert bad.status == "BAD" and not bad.ok
        assert m.logout().ok and not m.connected
    assert "IMAP literal" not in subjects(lab)
    t = m.transcript
    assert f"a4 LOGIN {ALICE} ****" in t.commands() and ALICE_PW not in t.to_json()
    kinds = list(zip((ln.text for ln in t), t.line_kinds(), strict=True))
    assert ("Subject: IMAP literal", "message") in kinds and ("Hello", "message") in kinds
    assert ("a1 NO " + "[PRIVACYREQUIRED] " + refused.text, "5xx") in kinds
    assert any(k == "bad" and text.startswith("a") for text, k in kinds)
    assert [ln.text for ln in t.status_lines()][0].startswith("a1 NO")


def test_imaps_authenticate_without_and_with_initial_response(lab):
    for initial in (False, True):
        with imap(lab, "imaps", tag_prefix="x") as m:
            m.connect()
            assert m.tls
            assert m.authenticate_plain(ALICE, ALICE_PW, initial_response=initial).ok
            assert m.examine().ok
            m.logout()
        secret = auth_plain_string(ALICE, ALICE_PW)
        assert secret not in m.transcript.to_json()
        commands = m.transcript.commands()
        assert commands[0] == ("x1 AUTHENTICATE PLAIN ****" if initial else "x1 AUTHENTICATE PLAIN")
        if not initial:
            assert commands[1] == "****"
            assert "3xx" in m.transcript.line_kinds()


def test_wrong_service_is_a_protocol_error_that_says_so(lab):
    with pop3(lab, "imap") as p, pytest.raises(ProtocolError, match="IMAP server greets") as err:
        p.connect()
    assert err.value.transcript is p.transcript and err.value.port == lab.imap.port
    with imap(lab, "pop3") as m, pytest.raises(ProtocolError, match="POP3 server greets"):
        m.connect()


def test_connection_errors_name_host_and_port_and_are_labkit_errors(lab, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = RawPOP3("127.0.0.1", port)
    with pytest.raises(MailboxConnectionError, match=f"127.0.0.1:{port}.*refused") as err:
        p.connect()
    # a dialogue error like SMTP's (one except catches both), but not an SMTP one
    assert isinstance(err.value, ConnectionFailed) and isinstance(err.value, LabError) and err.value.port == port
    assert not isinstance(err.value, SMTPConnectionError)
    assert "connection refused" in p.transcript.notes()[-1]

    with socket.socket() as silent:  # accepts, never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        m = RawIMAP("127.0.0.1", silent.getsockname()[1], timeout=0.2)
        with m, pytest.raises(MailboxConnectionError, match="no answer"):
            m.connect()

    other = pki.CA.create("Some Other CA").save(tmp_path / "other")
    svc = lab.pop3s
    with RawPOP3(svc.host, svc.port, implicit_tls=True, cafile=other, server_hostname=svc.name) as p, \
            pytest.raises(MailboxTLSError, match="certificate was not accepted") as err:
        p.connect()
    assert isinstance(err.value, TLSFailed) and str(svc.port) in str(err.value)
    svc = lab.imap  # plain port, implicit TLS asked: the handshake fails
    with RawIMAP(svc.host, svc.port, implicit_tls=True, cafile=lab.ca_path, server_hostname=svc.name) as m, \
            pytest.raises(MailboxTLSError, match="really implicit TLS \\(993\\)"):
        m.connect()
    with pop3(lab) as p:
        p.connect()
        with pytest.raises(ConfigError, match="already connected"):
            p.connect()
        p.quit()
        with pytest.raises(MailboxConnectionError, match="not connected"):
            p.stat()
    assert Path(lab.ca_path).exists()
