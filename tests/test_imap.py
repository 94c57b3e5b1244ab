"""The embedded IMAP server over real sockets, driven by imaplib, a raw socket and openssl s_client;
and the Maildir store (UIDs, flags) that it shares with POP3.
"""
from __future__ import annotations

import base64
import imaplib
import os
import re
import socket
import time

import pytest

from labkit.net.mailbox import MaildirStore, start_imap, start_pop3
from labkit.core.imap import (BadCommand, Parser, Section, bodystructure, envelope, istring, parse_sequence_set,
                              resolve_sequence_set, section_data)
from labkit.net.mailbox.store import UIDLIST, split_name, wire_size
from labkit.net.mailbox import maildir
from retrieval_fixtures import (ALICE, ALICE_PW, DELAY, RawClient, emptied_mailbox, retrieval_lab, s_client,
                                tls_context)

MULTIPART = (b"From: =?utf-8?q?B=C3=B6b?= <bob@inbox.example.org>\r\nTo: alice@example.com\r\n"
             b"Subject: =?utf-8?b?44GT44KT44Gr44Gh44Gv?=\r\nDate: Tue, 02 Jan 2024 10:00:00 +0900\r\n"
             b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\n"
             b"preamble\r\n--XYZ\r\nContent-Type: text/plain; charset=utf-8\r\n"
             b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe aus dem Labor\r\n"
             b"--XYZ\r\nContent-Type: application/octet-stream; name=\"a.bin\"\r\n"
             b"Content-Disposition: attachment; filename=\"a.bin\"\r\nContent-Transfer-Encoding: base64\r\n"
             b"\r\nAAECAw==\r\n--XYZ--\r\n")


def message(subject: str, body: str = "Hello Alice!\r\n", sender: str = "Bob <bob@inbox.example.org>") -> bytes:
    return (f"From: {sender}\r\nTo: Alice <{ALICE}>\r\nSubject: {subject}\r\n"
            f"Date: Tue, 02 Jan 2024 10:00:00 +0900\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@inbox.example.org>\r\n\r\n{body}").encode()


@pytest.fixture(scope="module")
def lab():
    yield from retrieval_lab((("imap", start_imap, False), ("imaps", start_imap, True),
                              ("pop3s", start_pop3, True)))


@pytest.fixture
def mailbox(lab):
    """alice's mailbox, emptied; returns a function that delivers one message into it."""
    return emptied_mailbox(lab, message)


def finish(client: imaplib.IMAP4) -> None:
    """Log out if still logged in; close the socket in any case."""
    if client.state != "LOGOUT":
        try:
            client.logout()
        except (imaplib.IMAP4.error, OSError):
            client.shutdown()


def imap(lab, *, select: str | None = "INBOX") -> imaplib.IMAP4:
    """An imaplib client on port 143 after STARTTLS, logged in as alice (and INBOX selected)."""
    server = lab.retrieval["imap"]
    client = imaplib.IMAP4(server.host, server.port, timeout=10)
    client.starttls(ssl_context=tls_context(lab))
    client.login(ALICE, ALICE_PW)
    if select:
        assert client.select(select)[0] == "OK"
    return client


class Raw(RawClient):
    """An IMAP dialogue by hand on the implicit-TLS port, as over openssl s_client."""

    def __init__(self, lab, implicit: bool = True):
        super().__init__(lab, lab.retrieval["imaps" if implicit else "imap"], implicit)

    def line(self) -> str | None:
        """The next line without its CRLF; None once the server has closed the connection."""
        data = self.file.readline()
        return data.decode("utf-8", "replace").rstrip("\r\n") if data else None

    def cmd(self, text: str | bytes, tag: str = "t") -> list[str]:
        """Send ``tag text``; return every line up to and including the tagged one."""
        self.send((tag + " ").encode() + (text.encode() if isinstance(text, str) else text))
        return self.until(tag)

    def until(self, tag: str) -> list[str]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line is None or line.startswith(tag + " "):
                return lines

    def login(self) -> None:
        assert self.cmd(f"LOGIN {ALICE} {ALICE_PW}")[-1].startswith("t OK")


@pytest.fixture
def raw(lab):
    r = Raw(lab)
    yield r
    r.close()


# -- the pure parts --------------------------------------------------------------------------

@pytest.mark.parametrize("text, uids, by_uid, expected", [
    ("1", [5, 6, 7], False, [1]),
    ("1:*", [5, 6, 7], False, [1, 2, 3]),
    ("*", [5, 6, 7], False, [3]),
    ("3:1", [5, 6, 7], False, [1, 2, 3]),
    ("1,3", [5, 6, 7], False, [1, 3]),
    ("6:*", [5, 6, 7], True, [2, 3]),
    ("100:*", [5, 6, 7], True, [3]),  # RFC 3501 §6.4.8: n:* always takes the last UID
    ("1:4", [5, 6, 7], True, []),  # UIDs that do not exist are left out
    ("1:*", [], True, []),
])
def test_sequence_sets(text, uids, by_uid, expected):
    assert resolve_sequence_set(parse_sequence_set(text), uids, by_uid=by_uid) == expected


@pytest.mark.parametrize("text", ["0", "1:0", "a", "1,,2", "1:2:3", "", "-1"])
def test_bad_sequence_sets(text):
    with pytest.raises(BadCommand):
        parse_sequence_set(text)


def test_sequence_number_past_the_end_is_an_error():
    with pytest.raises(BadCommand):
        resolve_sequence_set(parse_sequence_set("4"), [1, 2, 3], by_uid=False)
    with pytest.raises(BadCommand):
        resolve_sequence_set(parse_sequence_set("*"), [], by_uid=False)


def test_strings_are_quoted_or_sent_as_literals():
    assert istring(None) == b"NIL"
    assert istring('say "hi" \\o/') == b'"say \\"hi\\" \\\\o/"'
    assert istring("gr\u00fc\u00df") == b"{6}\r\ngr\xc3\xbc\xc3\x9f"
    assert istring("two\r\nlines") == b"{10}\r\ntwo\r\nlines"


def test_parser_reads_literals_quoted_strings_and_atoms():
    p = Parser(b'LOGIN "al\\"ice" \x000\x00', [b"pass word"])
    assert p.atom() == "LOGIN"
    p.space()
    assert p.astring() == 'al"ice'
    p.space()
    assert p.astring() == "pass word"
    p.end()


def test_envelope_and_bodystructure_of_a_multipart_message():
    raw = MULTIPART
    env = envelope(raw.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")
    assert env.startswith(b'("Tue, 02 Jan 2024 10:00:00 +0900" "=?utf-8?b?44GT44KT44Gr44Gh44Gv?=" '
                          b'(("=?utf-8?q?B=C3=B6b?=" NIL "bob" "inbox.example.org"))')
    assert env.endswith(b'((NIL NIL "alice" "example.com")) NIL NIL NIL NIL)')
    bs = bodystructure(raw)
    assert bs.startswith(b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" ')
    assert b'("APPLICATION" "OCTET-STREAM" ("NAME" "a.bin") NIL NIL "BASE64" 8 NIL ' \
           b'("attachment" ("FILENAME" "a.bin")) NIL NIL)' in bs
    assert bs.endswith(b' "MIXED" ("BOUNDARY" "XYZ") NIL NIL NIL)')
    assert section_data(raw, Section((2,))) == b"AAECAw=="
    assert section_data(raw, Section((1,), "MIME")).startswith(b"Content-Type: text/plain")
    assert section_data(raw, Section((3,))) is None
    assert section_data(raw, Section((), "HEADER.FIELDS", ("subject",))) == \
        b"Subject: =?utf-8?b?44GT44KT44Gr44Gh44Gv?=\r\n\r\n"


def test_bodystructure_without_content_type_has_the_rfc_2045_defaults():
    plain = b"From: bob@inbox.example.org\r\nSubject: plain\r\n\r\nHello\r\n"
    assert bodystructure(plain) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 7 1 NIL NIL NIL NIL)'
    assert bodystructure(plain, extended=False) == b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 7 1)'
    # a Content-Type that is there keeps its own parameters, or none (as Dovecot answers)
    assert b'("TEXT" "PLAIN" NIL ' in bodystructure(b"Content-Type: text/plain\r\n\r\nHello\r\n")
    # a part of a multipart without Content-Type is text/plain in US-ASCII too (RFC 2046 §5.1)
    mixed = (b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\n\r\nfirst\r\n--B--\r\n")
    assert bodystructure(mixed).startswith(b'(("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" ')


# -- the store: UIDs that last -----------------------------------------------------------------

def test_store_gives_stable_uids_and_keeps_them_in_a_uidlist(tmp_path):
    folder = tmp_path / "mail" / "example.com" / "alice"
    store = MaildirStore(folder)
    assert store.sync() == [] and store.uidvalidity > 0 and store.uidnext == 1
    for i in range(3):
        maildir.deliver_to_folder(folder, message(f"m{i}"))
        time.sleep(0.01)
    first = store.sync()
    assert [m.uid for m in first] == [1, 2, 3] and all(m.new for m in first)
    assert first[0].size == wire_size(first[0].path.read_bytes()) > first[0].path.stat().st_size
    validity = store.uidvalidity
    store.delete(2)
    store.set_flags(3, "SF")
    again = MaildirStore(folder)  # another session, another process: the same UIDs
    msgs = again.sync()
    assert [(m.uid, m.flags) for m in msgs] == [(1, ""), (3, "FS")] and again.uidvalidity == validity
    assert msgs[1].path.name.endswith(":2,FS") and msgs[1].path.parent.name == "cur"
    maildir.deliver_to_folder(folder, message("m3"))
    assert [m.uid for m in again.sync()] == [1, 3, 4]  # 2 is never given again
    lines = (folder / UIDLIST).read_text().splitlines()
    assert lines[0] == f"labkit-uidlist 1 V{validity} N5"
    assert [line.split()[0] for line in lines[1:]] == ["1", "3", "4"]
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]
    (folder / UIDLIST).write_text("garbage\n")  # a damaged list: new UIDVALIDITY, UIDs from 1
    fresh = MaildirStore(folder)
    assert [m.uid for m in fresh.sync()] == [1, 2, 3]


def test_maildir_names_and_flags():
    assert split_name("123.M1P2.host:2,SF") == ("123.M1P2.host", "FS")
    assert split_name("123.M1P2.host") == ("123.M1P2.host", "")
    assert split_name("123.M1P2.host:1,xyz") == ("123.M1P2.host", "")


# -- LOGINDISABLED before STARTTLS ---------------------------------------------------------------

def test_login_is_disabled_before_starttls(lab, mailbox):
    server = lab.retrieval["imap"]
    assert (server.standard_port, server.hostname) == (143, "mail.example.com")
    assert lab.ctx.port_for(server.host, 143) == server.port
    client = imaplib.IMAP4(server.host, server.port, timeout=10)
    try:
        assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities
        assert not any(c.startswith("AUTH=") for c in client.capabilities)
        with pytest.raises(imaplib.IMAP4.error, match="LOGINDISABLED"):
            client.login(ALICE, ALICE_PW)  # imaplib itself refuses
        typ, data = client._simple_command("LOGIN", ALICE, ALICE_PW)  # the server refuses too
        assert typ == "NO" and data[0].startswith(b"[PRIVACYREQUIRED]") and b"STARTTLS" in data[0]
        client.starttls(ssl_context=tls_context(lab))
        assert "LOGINDISABLED" not in client.capabilities and "AUTH=PLAIN" in client.capabilities
        assert client.login(ALICE, ALICE_PW)[0] == "OK"
        client.logout()
    finally:
        finish(client)
    assert lab.events.wait_for("tls", role="imap")["implicit"] is False


def test_starttls_discards_commands_sent_ahead_in_clear(lab, mailbox):
    r = Raw(lab, implicit=False)
    try:
        r.sock.sendall(b"a STARTTLS\r\nb LOGOUT\r\n")
        assert r.line().startswith("a OK")
        r.start_tls()
        r.send("c NOOP")
        assert r.line().startswith("c OK")  # "b LOGOUT" was never run
    finally:
        r.close()


# -- the whole dialogue -------------------------------------------------------------------------

def test_select_search_fetch_store_expunge(lab, mailbox):
    r = lab.send("bob@inbox.example.org", ALICE, via="mta", auth=False, source="isp", subject="Via MTA",
                 body="first\n")
    assert r.ok, r.reason
    mailbox("Lunch?", "Shall we?\r\n", sender="Carol <carol@example.org>")
    lab.wait_for_mail(ALICE, count=2)
    client = imap(lab, select=None)
    try:
        typ, data = client.select("INBOX")
        assert (typ, data) == ("OK", [b"2"])
        assert client.response("RECENT")[1] == [b"2"]
        assert client.response("UNSEEN")[1] == [b"1"]
        assert client.response("UIDNEXT")[1] == [b"3"]
        assert client.response("PERMANENTFLAGS")[1][0].startswith(b"(\\Answered")
        assert client.search(None, "ALL") == ("OK", [b"1 2"])
        assert client.search(None, "UNSEEN") == ("OK", [b"1 2"])
        assert client.search(None, "FROM", "carol") == ("OK", [b"2"])
        assert client.search(None, "SUBJECT", '"via mta"') == ("OK", [b"1"])
        assert client.search(None, "OR", "FROM", "carol", "SUBJECT", "mta") == ("OK", [b"1 2"])
        assert client.search(None, "NOT", "FROM", "carol") == ("OK", [b"1"])
        assert client.search(None, "(FROM carol SUBJECT lunch)") == ("OK", [b"2"])
        assert client.search(None, "BODY", "shall") == ("OK", [b"2"])
        assert client.search(None, "SENTON", "2-Jan-2024") == ("OK", [b"2"])
        assert client.search(None, "LARGER", "1") == ("OK", [b"1 2"])
        assert client.uid("SEARCH", None, "UID", "2:*") == ("OK", [b"2"])
        typ, data = client.fetch("1:2", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and len([d for d in data if isinstance(d, tuple)]) == 2
        first = data[0]
        assert re.match(rb"1 \(UID 1 FLAGS \(\\Recent\) RFC822.SIZE \d+ BODY\[HEADER.FIELDS \(SUBJECT\)\] \{\d+\}",
                        first[0])
        assert first[1] == b"Subject: Via MTA\r\n\r\n"
        size = int(re.search(rb"RFC822.SIZE (\d+)", first[0]).group(1))
        typ, data = client.fetch("1", "(BODY[])")  # not PEEK: it is read now
        assert len(data[0][1]) == size and data[0][1].endswith(b"\r\nfirst\r\n")
        assert data[1] == b" FLAGS (\\Seen \\Recent))"  # \Seen was set by this FETCH
        assert client.search(None, "SEEN") == ("OK", [b"1"])
        assert client.search(None, "UNSEEN") == ("OK", [b"2"])
        typ, data = client.store("2", "+FLAGS", "(\\Flagged \\Deleted)")
        assert typ == "OK" and b"FLAGS (\\Flagged \\Deleted \\Recent)" in data[0]
        assert client.store("2", "-FLAGS.SILENT", "(\\Flagged)") == ("OK", [None])
        assert client.search(None, "DELETED") == ("OK", [b"2"])
        typ, data = client.expunge()
        assert (typ, data) == ("OK", [b"2"])
        assert client.search(None, "ALL") == ("OK", [b"1"])
        client.close()
        client.logout()
    finally:
        finish(client)
    assert [m["subject"] for m in lab.mailbox(ALICE)] == ["Via MTA"]
    assert lab.events.wait_for("delete", role="imap", user=ALICE)["uids"] == [2]
    fetched = lab.events.select("fetch", role="imap", user=ALICE)
    assert any("BODY[]" in e["items"] for e in fetched)
    store = MaildirStore(lab.ctx.mailbox_dir(ALICE))
    assert [m.flags for m in store.sync()] == ["S"]


def test_fetch_items_sections_and_partials(lab, mailbox, raw):
    mailbox(MULTIPART)
    raw.login()
    assert raw.cmd("EXAMINE INBOX")[-1].startswith("t OK [READ-ONLY]")
    lines = raw.cmd("FETCH 1 (BODY.PEEK[]<0.4> BODY.PEEK[1] BODY.PEEK[2.MIME] INTERNALDATE)")
    text = "\n".join(lines)
    assert "BODY[]<0> {4}\nFrom" in text
    assert "BODY[1] {29}\nGr=C3=BC=C3=9Fe aus dem Labor" in text
    assert re.search(r'INTERNALDATE "\d\d-[A-Z][a-z]{2}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}"', text)
    assert lines[-1] == "t OK Fetch completed"
    lines = raw.cmd("FETCH 1 (RFC822.HEADER BODY[TEXT]<1000.10> ENVELOPE BODY FLAGS)")
    assert any(line.startswith("MIME-Version: 1.0") for line in lines)
    assert "BODY[TEXT]<1000> {0}" in "\n".join(lines)  # past the end: empty
    assert lines[-1].startswith("t OK")
    # EXAMINE is read-only: a non-PEEK fetch leaves the message unread, STORE is refused
    assert raw.cmd("SEARCH UNSEEN")[0] == "* SEARCH 1"
    assert raw.cmd("STORE 1 +FLAGS (\\Seen)")[-1].startswith("t NO [READ-ONLY]")
    assert raw.cmd("FETCH 1 FULL")[-1].startswith("t OK")
    assert raw.cmd("UID FETCH 1:* FAST")[0].startswith("* 1 FETCH (UID ")
    word = "\u3053\u3093".encode()  # the subject is "こんにちは", RFC 2047 encoded
    assert raw.cmd(b"SEARCH CHARSET UTF-8 SUBJECT {%d+}\r\n%s" % (len(word), word))[0] == "* SEARCH 1"
    assert raw.cmd("SEARCH CHARSET KOI8-R ALL")[-1].startswith("t NO [BADCHARSET")
    assert raw.cmd("SEARCH TEXT labor")[0] == "* SEARCH 1"  # decoded from quoted-printable
    assert raw.cmd("SEARCH HEADER Content-Type mixed")[0] == "* SEARCH 1"


def test_literals_from_the_client_and_append(lab, mailbox, raw):
    user = ALICE.encode()
    raw.send(b"a LOGIN {%d}" % len(user))
    assert raw.line().startswith("+ ")
    raw.send(user + b" {%d+}" % len(ALICE_PW))  # LITERAL+: no need to wait
    raw.send(ALICE_PW.encode())
    assert raw.until("a")[-1].startswith("a OK")
    msg = message("Appended")
    raw.send(b'b APPEND INBOX (\\Seen) " 7-Jan-2024 10:00:00 +0900" {%d}' % len(msg))
    assert raw.line().startswith("+ ")
    raw.send(msg)
    assert re.fullmatch(r"b OK \[APPENDUID \d+ \d+\] APPEND completed", raw.until("b")[-1])
    assert raw.cmd("APPEND Sent {1+}\r\nx")[-1].startswith("t NO [TRYCREATE]")
    plain = message("Plain")
    assert raw.cmd(b"APPEND INBOX {%d+}\r\n%s" % (len(plain), plain))[-1].endswith("] APPEND completed")
    # without flags it waits in new/: \Recent for the next session that selects the mailbox
    assert raw.cmd("STATUS INBOX (MESSAGES RECENT UNSEEN)")[0] == "* STATUS INBOX (MESSAGES 2 RECENT 1 UNSEEN 1)"
    assert raw.cmd("SELECT INBOX")[-1].startswith("t OK")
    line = raw.cmd("FETCH 1 (FLAGS INTERNALDATE)")[0]
    assert line.startswith("* 1 FETCH (FLAGS (\\Seen) INTERNALDATE ")
    assert time.mktime(imaplib.Internaldate2tuple(line.encode())) == 1704589200  # 2024-01-07 01:00 UTC
    assert raw.cmd("FETCH 2 FLAGS")[0] == "* 2 FETCH (FLAGS (\\Recent))"
    assert [m["subject"] for m in lab.mailbox(ALICE)] == ["Appended", "Plain"]
    copied = raw.cmd("COPY 1 INBOX")
    assert copied[:2] == ["* 3 EXISTS", "* 1 RECENT"] and copied[2].startswith("t OK [COPYUID ")
    assert raw.cmd("SEARCH SEEN")[0] == "* SEARCH 1 3"


def test_uidplus_appenduid_copyuid_and_uid_expunge(lab, mailbox, raw):
    """RFC 4315, which sync clients rely on: mbsync learns the UID of each message it uploads
    from APPENDUID (tests/clients runs it)."""
    mailbox("First")
    mailbox("Second")
    raw.login()
    assert "UIDPLUS" in raw.cmd("CAPABILITY")[0].split()
    selected = "\n".join(raw.cmd("SELECT INBOX"))
    validity = re.search(r"\[UIDVALIDITY (\d+)\]", selected).group(1)
    a, b = (int(re.search(r"UID (\d+)", line).group(1)) for line in raw.cmd("FETCH 1:2 UID")[:2])
    msg = message("Uploaded")
    appended = raw.cmd(b"APPEND INBOX (\\Seen) {%d+}\r\n%s" % (len(msg), msg))
    assert appended[-1] == f"t OK [APPENDUID {validity} {b + 1}] APPEND completed"
    assert raw.cmd(f"UID COPY {a}:{b} INBOX")[-1] == \
        f"t OK [COPYUID {validity} {a},{b} {b + 2},{b + 3}] COPY completed"
    assert raw.cmd(f"UID COPY {b + 9} INBOX")[-1] == "t OK COPY completed"  # nothing copied: no code
    # UID EXPUNGE removes only the \Deleted messages among the UIDs it names
    raw.cmd(f"UID STORE {a},{b},{b + 2} +FLAGS.SILENT (\\Deleted)")
    assert raw.cmd(f"UID EXPUNGE {b}:{b + 2}") == ["* 4 EXPUNGE", "* 2 EXPUNGE", "t OK EXPUNGE completed"]
    assert sorted(m["subject"] for m in lab.mailbox(ALICE)) == ["First", "Second", "Uploaded"]
    assert "\\Deleted" in raw.cmd(f"UID FETCH {a} FLAGS")[0]
    assert raw.cmd("EXAMINE INBOX")[-1].startswith("t OK [READ-ONLY]")
    assert raw.cmd(f"UID EXPUNGE {a}")[-1].startswith("t NO [READ-ONLY]")
    assert len(lab.mailbox(ALICE)) == 3


def test_fetch_of_one_header_field_is_well_formed(lab, mailbox, raw):
    """The X-TUID fetch after which mbsync 1.4.4 reports "received extraneous data in FETCH
    response" (when a server lacks UIDPLUS). The answer is what RFC 3501 §7.4.2 asks, as
    Dovecot's: mbsync 1.4.4 clears its fetch state before that command, so any header data
    counts as extraneous to it. APPENDUID spares it that path."""
    mailbox(b"X-TUID: abcdefghijkl\r\nSubject: tuid\r\n\r\nbody\r\n")
    raw.login()
    raw.cmd("SELECT INBOX")
    uid = re.search(r"UID (\d+)", raw.cmd("FETCH 1 UID")[0]).group(1)
    assert raw.cmd(f"UID FETCH {uid}:{uid} (UID BODY.PEEK[HEADER.FIELDS (X-TUID)])") == [
        f"* 1 FETCH (UID {uid} BODY[HEADER.FIELDS (X-TUID)] {{24}}", "X-TUID: abcdefghijkl", "", ")",
        "t OK Fetch completed"]


def test_authenticate_plain_with_and_without_initial_response(lab, mailbox):
    server = lab.retrieval["imaps"]
    client = imaplib.IMAP4_SSL(server.host, server.port, ssl_context=tls_context(lab), timeout=10)
    try:
        typ, _ = client.authenticate("PLAIN", lambda challenge: f"\0{ALICE}\0{ALICE_PW}".encode())
        assert typ == "OK" and client.state == "AUTH"
        client.logout()
    finally:
        finish(client)
    r = Raw(lab)
    try:
        plain = base64.b64encode(f"\0{ALICE}\0{ALICE_PW}".encode()).decode()
        assert "SASL-IR" in r.greeting and "AUTH=PLAIN" in r.greeting
        assert r.cmd("AUTHENTICATE CRAM-MD5")[-1].startswith("t NO")
        r.send("x AUTHENTICATE PLAIN")
        assert r.line() == "+ "
        r.send("*")
        assert r.until("x")[-1].startswith("x BAD Authentication cancelled")
        assert r.cmd(f"AUTHENTICATE PLAIN {plain}")[-1].startswith("t OK [CAPABILITY")  # SASL-IR
    finally:
        r.close()
    assert lab.events.select("auth", role="imaps", success=True, mechanism="PLAIN")


# -- refusals -----------------------------------------------------------------------------------

def test_wrong_password_is_refused_after_a_delay(lab, mailbox):
    server = lab.retrieval["imaps"]
    client = imaplib.IMAP4_SSL(server.host, server.port, ssl_context=tls_context(lab), timeout=10)
    try:
        started = time.monotonic()
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login(ALICE, "not-the-password")
        assert time.monotonic() - started >= DELAY * 0.9
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login("nobody@example.com", ALICE_PW)
        assert client.login(ALICE, ALICE_PW)[0] == "OK"
        client.logout()
    finally:
        finish(client)
    failed = lab.events.wait_for("auth", role="imaps", success=False, user=ALICE)
    assert failed["mechanism"] == "LOGIN"
    r = Raw(lab)
    try:
        for _ in range(2):
            assert r.cmd(f"LOGIN {ALICE} wrong")[-1].startswith("t NO [AUTHENTICATIONFAILED]")
        lines = r.cmd(f"LOGIN {ALICE} wrong")
        assert lines[-1].startswith("t NO") and r.line().startswith("* BYE") and r.line() is None
    finally:
        r.close()


@pytest.mark.parametrize("command, reply", [
    ("FOO", "t BAD Unknown command"),
    ("FETCH 1 FLAGS", "t BAD FETCH is not valid without a selected mailbox"),
    ("UID FETCH 1 FLAGS", "t BAD UID commands are not valid without a selected mailbox"),
    ("LOGIN", "t BAD"),
    ("LOGIN a@example.com pw extra", "t BAD Unexpected text"),
    ('LOGIN "unterminated', "t BAD Unterminated quoted string"),
    ("SELECT Archive", "t NO [NONEXISTENT]"),
    ("CREATE Archive", "t NO [CANNOT]"),
    ("STATUS INBOX (MESSAGES BOGUS)", "t BAD STATUS items"),
    ("NOOP extra", "t BAD NOOP takes no arguments"),
    ("STARTTLS", "t BAD TLS is already active"),
])
def test_bad_commands_before_select(lab, mailbox, raw, command, reply):
    if not command.startswith(("LOGIN", "STARTTLS")):
        raw.login()
    assert raw.cmd(command)[-1].startswith(reply)
    assert raw.cmd("NOOP")[-1] == "t OK NOOP completed"


@pytest.mark.parametrize("command, reply", [
    ("FETCH 2 FLAGS", "t BAD No such message"),
    ("FETCH 0 FLAGS", "t BAD 0 is not a valid"),
    ("FETCH * (FLAGS BOGUS)", "t BAD Unknown FETCH item BOGUS"),
    ("FETCH 1 BODY[WHAT]", "t BAD Unknown body section"),
    ("FETCH 1 (FLAGS", "t BAD Missing ')'"),
    ("STORE 1 +FLAGS (\\Recent)", "t BAD Invalid system flag \\Recent"),
    ("STORE 1 PLUSFLAGS (\\Seen)", "t BAD STORE takes FLAGS"),
    ("SEARCH BOGUS", "t BAD Unknown search key BOGUS"),
    ("SEARCH SINCE yesterday", "t BAD Invalid date"),
    ("SEARCH OR SEEN", "t BAD"),
    ("UID EXPUNGE", "t BAD Missing argument"),
    ("UID MOVE 1 INBOX", "t BAD Unknown UID command MOVE"),
    ("COPY 1 Trash", "t NO [TRYCREATE]"),
    ("LOGIN x y", "t BAD LOGIN is not valid after login"),
])
def test_bad_commands_in_a_mailbox(lab, mailbox, raw, command, reply):
    mailbox("Only one")
    raw.login()
    assert raw.cmd("SELECT INBOX")[-1].startswith("t OK")
    assert raw.cmd(command)[-1].startswith(reply)
    assert raw.cmd("FETCH 1 UID")[-1] == "t OK Fetch completed"


def test_garbage_and_overlong_lines_never_stop_the_server(lab, mailbox, raw):
    raw.send(b"")
    assert raw.line().startswith("* BAD")
    raw.send(b"\xff\xfe garbage")
    assert raw.line() == "* BAD Invalid tag"
    raw.send(b"x" * 70000)
    assert raw.line().startswith("* BAD Command line too long")
    raw.send(b"t0 NO\x00PE")
    assert raw.line().startswith("* BAD NUL")
    raw.send(b"(bad) NOOP")
    assert raw.line() == "* BAD Invalid tag"
    raw.send(b"big LOGIN {99999999}")
    assert raw.line().startswith("big NO [TOOBIG]")
    assert raw.cmd("CAPABILITY")[-1] == "t OK Capability completed"
    assert not lab.events.select("error", role="imaps")


def test_logout_and_lsub_list_status(lab, mailbox, raw):
    mailbox("Status")
    raw.login()
    assert raw.cmd('LIST "" "*"') == ['* LIST (\\HasNoChildren) "/" INBOX', "t OK LIST completed"]
    assert raw.cmd('LIST "" ""')[0] == '* LIST (\\Noselect) "/" ""'
    assert raw.cmd('LIST "" "Arch%"') == ["t OK LIST completed"]
    assert raw.cmd('LSUB "" "*"')[0] == '* LSUB () "/" INBOX'
    assert raw.cmd("STATUS inbox (MESSAGES UNSEEN RECENT)")[0] == "* STATUS INBOX (MESSAGES 1 UNSEEN 1 RECENT 1)"
    assert raw.cmd("LOGOUT") == ["* BYE Logging out", "t OK Logout completed"]
    assert raw.line() is None


# -- several sessions, UIDs across sessions ------------------------------------------------------

def test_uids_are_stable_across_sessions(lab, mailbox):
    mailbox("One")
    mailbox("Two")

    def uids() -> tuple[bytes, list[bytes]]:
        client = imap(lab)
        try:
            validity = client.response("UIDVALIDITY")[1][0]
            return validity, client.uid("SEARCH", None, "ALL")[1][0].split()
        finally:
            client.logout()

    v1, first = uids()
    mailbox("Three")
    v2, second = uids()
    assert v1 == v2 and second[:2] == first and int(second[2]) > int(first[1])


def test_another_session_sees_new_mail_and_expunges(lab, mailbox):
    mailbox("Old")
    watcher, worker = Raw(lab), imap(lab)
    try:
        watcher.login()
        assert "* 1 EXISTS" in watcher.cmd("SELECT INBOX")
        mailbox("New")
        # the new message is \Recent in the first session that sees it (RFC 3501 §2.3.2)
        assert watcher.cmd("NOOP") == ["* 2 EXISTS", "* 1 RECENT", "t OK NOOP completed"]
        worker.select("INBOX")
        worker.store("1", "+FLAGS", "(\\Deleted)")
        lines = watcher.cmd("FETCH 1 FLAGS")  # no EXPUNGE during FETCH (RFC 3501 §7.4.1)
        assert not any("EXPUNGE" in line for line in lines)
        worker.expunge()
        lines = watcher.cmd("NOOP")
        assert "* 1 EXPUNGE" in lines and lines[-1].startswith("t OK")
        assert watcher.cmd("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1] == "Subject: New"
    finally:
        watcher.close()
        worker.logout()


def test_idle_tells_of_new_mail(lab, mailbox, raw):
    raw.login()
    raw.cmd("SELECT INBOX")
    raw.send("i IDLE")
    assert raw.line() == "+ idling"
    mailbox("While idling")
    assert raw.line() == "* 1 EXISTS"
    assert raw.line() == "* 1 RECENT"
    raw.send("DONE")
    assert raw.until("i")[-1] == "i OK IDLE terminated"


def test_pop3_and_imap_share_flags(lab, mailbox):
    import poplib

    mailbox("Read by POP3")
    server = lab.retrieval["pop3s"]
    pop = poplib.POP3_SSL(server.host, server.port, context=tls_context(lab), timeout=10)
    try:
        pop.user(ALICE)
        pop.pass_(ALICE_PW)
        pop.retr(1)
        pop.quit()
    finally:
        pop.close()
    client = imap(lab)
    try:
        assert client.search(None, "SEEN") == ("OK", [b"1"])
    finally:
        client.logout()


def test_autologout(lab, mailbox):
    server = lab._loop.run(start_imap(lab.ctx, implicit_tls=True, login_timeout=0.3))
    try:
        sock = socket.create_connection((server.host, server.port), timeout=5)
        with tls_context(lab).wrap_socket(sock, server_hostname=server.hostname) as tls:
            f = tls.makefile("rb")
            assert f.readline().startswith(b"* OK")
            assert f.readline().startswith(b"* BYE Autologout")
            f.close()
    finally:
        lab._loop.run(server.close())


# -- openssl s_client ------------------------------------------------------------------------------

def test_openssl_s_client_starttls_imap_and_implicit_tls(lab, mailbox):
    mailbox("Seen by openssl")
    commands = (f"a1 LOGIN {ALICE} {ALICE_PW}\na2 SELECT INBOX\n"
                "a3 FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])\na4 LOGOUT\n")
    for server, args in ((lab.retrieval["imap"], ("-starttls", "imap")), (lab.retrieval["imaps"], ())):
        out = s_client(lab, server, *args, commands=commands).replace("\r\n", "\n")
        assert "a1 OK" in out and "* 1 EXISTS" in out and "a2 OK [READ-WRITE]" in out
        assert "Subject: Seen by openssl" in out and "a4 OK Logout completed" in out


# -- garbage, bounded and reproducible ---------------------------------------------------------

_WORDS = ["FETCH", "UID", "STORE", "SEARCH", "SELECT", "EXAMINE", "LIST", "STATUS", "APPEND", "COPY", "EXPUNGE",
          "CLOSE", "NOOP", "1", "*", "1:*", "2:1", "(", ")", "[", "]", "BODY[", "BODY.PEEK[1.2.MIME]",
          "BODY[HEADER.FIELDS (", "<0.5>", '"', "\\Seen", "+FLAGS", "-FLAGS.SILENT", "FLAGS", "INBOX", '""',
          "OR", "NOT", "ALL", "FROM", "CHARSET", "UTF-8", "BODYSTRUCTURE", "ENVELOPE", "RFC822", "BODY[2.TEXT]",
          "SINCE", "1-Jan-2020", "LARGER", "KEYWORD", "$x", "AUTHENTICATE", "PLAIN", "=", "%", "\x01", "\u00e9"]


def test_random_commands_get_answers_and_never_break_the_server(lab, mailbox):
    import random

    rnd = random.Random(3501)
    mailbox(MULTIPART)
    mailbox(b"no header, no body")
    hangups = 0
    for _ in range(3):
        r = Raw(lab)
        try:
            r.login()
            r.cmd("SELECT INBOX")
            for i in range(60):
                line = " ".join(rnd.choice(_WORDS) for _ in range(rnd.randint(1, 6)))
                lines = r.cmd(line.encode(), tag=f"f{i}")
                if lines[-1] is None:  # 20 bad commands in a row: the server hangs up, as Dovecot does
                    assert lines[-2] == "* BYE Too many bad commands; closing the connection"
                    hangups += 1
                    break
                assert lines[-1].startswith(f"f{i} ")
        finally:
            r.close()
    assert hangups < 3
    assert not lab.events.select("error", role="imaps")
