"""curl as a mail client: SMTP submission (STARTTLS on 587, implicit TLS on 465), IMAP and POP3
reads (STARTTLS/STLS and implicit TLS), refusals. ``--resolve`` makes curl connect to the lab
address while checking the certificate against mail.example.com."""
from __future__ import annotations

import pytest

from .conftest import ALICE, ALICE_PW, HOME_NAME, client, deliver, holdings, message, other_ca, run, wait_for


def curl(lab, role: str, scheme: str, path: str = "", *args: str, ca: str | None = None) -> list[str]:
    svc = lab.services[role]
    return [client("curl"), "--silent", "--show-error", "--max-time", "20",
            "--resolve", f"{HOME_NAME}:{svc.port}:{svc.host}", *(["--cacert", ca] if ca else []),
            f"{scheme}://{HOME_NAME}:{svc.port}{path}", *args]


@pytest.mark.parametrize("role, scheme, upgrade", [("submission", "smtp", ["--ssl-reqd"]),
                                                    ("submissions", "smtps", [])])
def test_send(lab, workdir, role, scheme, upgrade):
    tag = f"curl-{role}"
    (workdir / "msg.eml").write_bytes(message(f"curl through {role}", tag, sender=ALICE))
    p = run(curl(lab, role, scheme, "", *upgrade, "--user", f"{ALICE}:{ALICE_PW}", "--mail-from", ALICE,
                 "--mail-rcpt", ALICE, "--upload-file", "msg.eml", ca=str(lab.ca_path)), workdir)
    assert p.returncode == 0, p.stderr
    held = wait_for(lab, f"<{tag}@clients.example.org>")
    assert held.subject == f"curl through {role}"


@pytest.mark.parametrize("role, scheme, upgrade", [("imap", "imap", ["--ssl-reqd"]), ("imaps", "imaps", [])])
def test_read_imap(lab, workdir, role, scheme, upgrade):
    held = deliver(lab, f"for curl over {role}", f"curl-read-{role}")
    login = ["--user", f"{ALICE}:{ALICE_PW}"]
    search = run(curl(lab, role, scheme, "/INBOX", *upgrade, *login, "--request",
                      f'UID SEARCH HEADER Message-ID "{held.message_id}"', ca=str(lab.ca_path)), workdir)
    assert search.returncode == 0, search.stderr
    uid = search.stdout.split()[-1]
    fetched = run(curl(lab, role, scheme, f"/INBOX;UID={uid}", *upgrade, *login, ca=str(lab.ca_path)), workdir)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.replace("\r\n", "\n").split("\n\n", 1)[1].encode() == held.body()
    assert "S" in holdings(lab)[held.message_id].flags  # fetched with BODY[]: now read


@pytest.mark.parametrize("role, scheme, upgrade", [("pop3", "pop3", ["--ssl-reqd"]), ("pop3s", "pop3s", [])])
def test_read_pop3(lab, workdir, role, scheme, upgrade):
    held = deliver(lab, f"for curl over {role}", f"curl-read-{role}")
    login = ["--user", f"{ALICE}:{ALICE_PW}"]
    listing = run(curl(lab, role, scheme, "", *upgrade, *login, ca=str(lab.ca_path)), workdir)
    assert listing.returncode == 0, listing.stderr
    count = len(listing.stdout.splitlines())
    assert count == len(holdings(lab))  # LIST: one line per message the lab holds
    last = run(curl(lab, role, scheme, f"/{count}", *upgrade, *login, ca=str(lab.ca_path)), workdir)
    assert last.returncode == 0, last.stderr
    assert last.stdout.replace("\r\n", "\n").split("\n\n", 1)[1].encode() == held.body()


def test_wrong_password_and_wrong_ca_are_refused(lab, workdir):
    before = holdings(lab)
    (workdir / "msg.eml").write_bytes(message("never sent", "curl-refused", sender=ALICE))
    send = ["--ssl-reqd", "--mail-from", ALICE, "--mail-rcpt", ALICE, "--upload-file", "msg.eml"]
    wrong_pw = run(curl(lab, "submission", "smtp", "", *send, "--user", f"{ALICE}:not-the-password",
                        ca=str(lab.ca_path)), workdir)
    assert wrong_pw.returncode == 67, wrong_pw.stderr  # CURLE_LOGIN_DENIED
    for ca in (None, str(other_ca(workdir))):  # the system's CAs, then a stranger's: no trust
        wrong_ca = run(curl(lab, "submission", "smtp", "", *send, "--user", f"{ALICE}:{ALICE_PW}", ca=ca), workdir)
        assert wrong_ca.returncode == 60, wrong_ca.stderr  # CURLE_PEER_FAILED_VERIFICATION
        read = run(curl(lab, "imaps", "imaps", "/INBOX", "--user", f"{ALICE}:{ALICE_PW}", ca=ca), workdir)
        assert read.returncode == 60, read.stderr
    assert holdings(lab) == before
