"""The checkers of chapter 06: ok for a right answer, not ok with a useful reason otherwise."""
from __future__ import annotations

from pathlib import Path

import pytest

from labkit import Lab
from labkit.teach.exercises import check, keys
from labkit.net.clients.retrieval import RawIMAP, RawPOP3

ALICE, ALICE_PW = "alice@example.com", "alice-lab-password"


@pytest.fixture(scope="module")
def lab():
    with Lab() as lab:
        yield lab


def deliver(lab, subject: str) -> None:
    before = len(lab.mailbox(ALICE))
    assert lab.send("bob@inbox.example.org", ALICE, via="mta", auth=False, source="isp", subject=subject).ok
    lab.wait_for_mail(ALICE, count=before + 1)


def file_of(lab, subject: str) -> Path:
    return next(Path(m["path"]) for m in lab.mailbox(ALICE) if m["subject"] == subject)


def imap_session(lab) -> RawIMAP:
    svc = lab.imaps
    m = RawIMAP(svc.host, svc.port, implicit_tls=True, cafile=lab.ca_path, server_hostname=svc.name)
    m.connect()
    assert m.login(ALICE, ALICE_PW).ok
    return m


def pop3_session(lab) -> RawPOP3:
    svc = lab.pop3s
    p = RawPOP3(svc.host, svc.port, implicit_tls=True, cafile=lab.ca_path, server_hostname=svc.name)
    p.connect()
    assert p.login(ALICE, ALICE_PW).ok
    return p


def number_of(p: RawPOP3, subject: str) -> int:
    return next(n for n in p.uidl().listing() if f"Subject: {subject}" in p.top(n, 0).lines)


def test_the_exercises_are_registered():
    assert {"06.1", "06.2", "06.3", "06.4"} <= set(keys())


def test_06_1_seen_over_imap(lab):
    deliver(lab, "Ex1 unread")
    assert "pass file_name=" in check("06.1", lab).reason
    waiting = file_of(lab, "Ex1 unread")
    assert "still in new/" in check("06.1", lab, file_name=waiting.name).reason
    assert "no file" in check("06.1", lab, file_name="nothing-here:2,S").reason

    with imap_session(lab) as m:
        m.select()
        uid = m.search('SUBJECT "Ex1 unread"', uid=True)[-1]
        m.fetch(uid, "(BODY.PEEK[])", uid=True)  # read, but not marked
        peeked = file_of(lab, "Ex1 unread")
        no_s = check("06.1", lab, file_name=peeked.name)
        assert not no_s.ok and "BODY.PEEK" in no_s.reason
        m.fetch(uid, "(BODY[])", uid=True)
        m.logout()
    seen = file_of(lab, "Ex1 unread")
    assert seen.name.endswith(":2,S") and seen.parent.name == "cur"
    right = check("06.1", lab, file_name=seen.name)
    assert right.ok and right.details["uid"] == uid, right.reason
    assert check("06.1", lab, file_name=str(seen)).ok  # a path is fine too
    moved = check("06.1", lab, file_name=peeked.name)
    assert not moved.ok and seen.name in moved.reason

    deliver(lab, "Ex1 via POP3")  # \Seen given by POP3 (RETR, then QUIT), not by IMAP
    with pop3_session(lab) as p:
        p.retr(number_of(p, "Ex1 via POP3"))
        p.quit()
    by_pop3 = check("06.1", lab, file_name=file_of(lab, "Ex1 via POP3").name)
    assert not by_pop3.ok and "POP3" in by_pop3.reason


def test_06_2_uid_is_stable(lab):
    deliver(lab, "Ex2 stable")
    uids, validity = [], None
    for _ in range(2):
        with imap_session(lab) as m:
            validity = m.select().response_code("UIDVALIDITY")
            uids += m.search('SUBJECT "Ex2 stable"', uid=True)
            m.logout()
    right = check("06.2", lab, subject="Ex2 stable", uids=uids, uidvalidity=validity)
    assert right.ok and right.details == {"uid": uids[0], "uidvalidity": int(validity)}, right.reason
    assert check("06.2", lab, subject="Ex2 stable", uids=[str(u) for u in uids]).ok
    assert "pass subject=" in check("06.2", lab).reason
    assert "list of numbers" in check("06.2", lab, subject="Ex2 stable", uids="seven").reason
    assert "two sessions" in check("06.2", lab, subject="Ex2 stable", uids=uids[:1]).reason
    assert "no message" in check("06.2", lab, subject="No such subject", uids=uids).reason
    assert "different UIDs" in check("06.2", lab, subject="Ex2 stable", uids=[uids[0], uids[0] + 1]).reason
    wrong = check("06.2", lab, subject="Ex2 stable", uids=[uids[0] + 50] * 2)
    assert not wrong.ok and "message number" in wrong.reason
    assert "UIDVALIDITY is" in check("06.2", lab, subject="Ex2 stable", uids=uids, uidvalidity=1).reason
    assert "not a number" in check("06.2", lab, subject="Ex2 stable", uids=uids, uidvalidity="V").reason


def test_06_3_deleted_over_pop3(lab):
    deliver(lab, "Ex3 delete me")
    with pop3_session(lab) as p:
        n = number_of(p, "Ex3 delete me")
        uidl = p.uidl(n).listing()[n]
        p.dele(n)
        dropped = check("06.3", lab, uidl=uidl)  # marked, not yet deleted: QUIT has not come
        assert not dropped.ok and "QUIT" in dropped.reason
        p.quit()
    right = check("06.3", lab, uidl=uidl)
    assert right.ok, right.reason
    assert "pass uidl=" in check("06.3", lab).reason and "pass uidl=" in check("06.3", lab, uidl="7").reason
    validity, uid = uidl.split(".")
    assert "another mailbox" in check("06.3", lab, uidl=f"{int(validity) + 1}.{uid}").reason
    assert "no POP3 session" in check("06.3", lab, uidl=f"{validity}.9999").reason

    deliver(lab, "Ex3 expunged")
    with imap_session(lab) as m:
        m.select()
        gone = m.search('SUBJECT "Ex3 expunged"', uid=True)[-1]
        m.store(gone, "+FLAGS", "(\\Deleted)", uid=True)
        m.expunge()
        m.logout()
    by_imap = check("06.3", lab, uidl=f"{validity}.{gone}")
    assert not by_imap.ok and "over IMAP" in by_imap.reason


def test_06_4_wrong_password(lab):
    assert "pass pop3= and imap=" in check("06.4", lab).reason
    right = check("06.4", lab, pop3="[AUTH]", imap="NO [AUTHENTICATIONFAILED]")
    assert right.ok, right.reason
    assert right.details["pop3"].startswith("-ERR [AUTH]") and right.details["imap"] == "NO [AUTHENTICATIONFAILED]"
    assert ALICE_PW not in str(right.details) + right.reason
    wrong = check("06.4", lab, pop3="-ERR", imap="[PRIVACYREQUIRED]")
    assert not wrong.ok and "which response code" in wrong.reason and "IMAP: [PRIVACYREQUIRED]" in wrong.reason
