"""mbsync (isync), which keeps a local Maildir and the server's mailbox the same, both ways:
what the lab holds is pulled, a message written locally is uploaded, one deleted locally is
deleted in the lab, and a run with nothing to do changes nothing. mbsync checks the server's
certificate against its Host setting and has no way to connect elsewhere, so it runs where
mail.example.com resolves: a private /etc/hosts with ``labkit hosts`` lines (see conftest)."""
from __future__ import annotations

import email
import re
import socket
import ssl
from pathlib import Path

import pytest

from .conftest import (ALICE, ALICE_PW, HOME_NAME, client, deliver, holdings, hosts_namespace, message, other_ca,
                       run, wait_for)


def mbsyncrc(lab, workdir, role: str = "imap", *, password: str = ALICE_PW, ca: str | None = None) -> str:
    """~/.mbsyncrc: the lab's IMAP as the far side, a Maildir in ``workdir`` as the near side."""
    svc = lab.services[role]
    near = workdir / "mail"
    near.mkdir(exist_ok=True)
    rc = workdir / "mbsyncrc"
    rc.write_text(f"""IMAPAccount lab
Host {HOME_NAME}
Port {svc.port}
User {ALICE}
Pass {password}
SSLType {'IMAPS' if role == 'imaps' else 'STARTTLS'}
CertificateFile {ca or lab.ca_path}

IMAPStore lab-far
Account lab

MaildirStore lab-near
Path {near}/
Inbox {near}/INBOX

Channel lab
Far :lab-far:
Near :lab-near:
Patterns *
Create Both
Expunge Both
SyncState *
Sync All
""")
    return str(rc)


def mbsync(workdir, rc: str):
    return run([*hosts_namespace(workdir), client("mbsync"), "-c", rc, "-a"], workdir)


def local(workdir) -> dict[str, tuple[Path, bytes]]:
    """The near Maildir: Message-ID -> (file, body with LF line ends)."""
    out = {}
    for sub in ("new", "cur"):
        for path in (workdir / "mail" / "INBOX" / sub).glob("*"):
            raw = path.read_bytes().replace(b"\r\n", b"\n")
            out[str(email.message_from_bytes(raw)["Message-ID"])] = (path, raw.split(b"\n\n", 1)[1])
    return out


def snapshot(lab) -> dict[str, tuple[str, str]]:
    return {m: (h.flags, h.path.name) for m, h in holdings(lab).items()}


def test_two_way_sync(lab, workdir):
    kept = deliver(lab, "synced down", "mbsync-down")
    gone = deliver(lab, "deleted on the laptop", "mbsync-deleted-locally")
    rc = mbsyncrc(lab, workdir)
    first = mbsync(workdir, rc)
    assert first.returncode == 0, first.stderr
    near = local(workdir)
    assert set(near) == set(holdings(lab)) and near[kept.message_id][1] == kept.body()

    # a message written locally reaches the lab in one run (APPENDUID: UIDPLUS)
    written = message("written on the laptop", "mbsync-up", sender=ALICE)
    (workdir / "mail" / "INBOX" / "new" / "written.eml").write_bytes(written)
    up = mbsync(workdir, rc)
    assert up.returncode == 0, up.stderr
    uploaded = holdings(lab)["<mbsync-up@clients.example.org>"]
    assert uploaded.subject == "written on the laptop" and uploaded.body() == written.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")

    # a message deleted locally is deleted in the lab (Expunge Both)
    local(workdir)[gone.message_id][0].unlink()
    down = mbsync(workdir, rc)
    assert down.returncode == 0, down.stderr
    assert gone.message_id not in holdings(lab) and kept.message_id in holdings(lab)
    assert set(local(workdir)) == set(holdings(lab))

    # nothing to do: nothing changes, in the lab or on the laptop
    lab_before, near_before = snapshot(lab), local(workdir)
    again = mbsync(workdir, rc)
    assert again.returncode == 0, again.stderr
    assert snapshot(lab) == lab_before and local(workdir) == near_before


def test_pull_over_implicit_tls(lab, workdir):
    held = deliver(lab, "synced over 993", "mbsync-imaps")
    p = mbsync(workdir, mbsyncrc(lab, workdir, "imaps"))
    assert p.returncode == 0, p.stderr
    assert local(workdir)[held.message_id][1] == held.body() and set(local(workdir)) == set(holdings(lab))


@pytest.mark.parametrize("what", ["password", "ca"])
def test_wrong_password_and_wrong_ca_are_refused(lab, workdir, what):
    deliver(lab, "never synced", f"mbsync-refused-{what}")
    before = snapshot(lab)
    rc = mbsyncrc(lab, workdir, password="wrong") if what == "password" else \
        mbsyncrc(lab, workdir, ca=str(other_ca(workdir)))
    p = mbsync(workdir, rc)
    assert p.returncode == 1, p.stderr
    assert snapshot(lab) == before and not (workdir / "mail" / "INBOX").exists()


def test_the_x_tuid_fetch_is_answered_as_dovecot_does(lab, workdir):
    """Without UIDPLUS, isync 1.4.4 finds an uploaded message by its X-TUID header and then
    fails with "received extraneous data in FETCH response". The answer is not at fault: both
    modes give the same bytes (real mode is Dovecot's); isync 1.4.4 resets its fetch state
    before that command, so any header data counts as extraneous to it."""
    mail = b"X-TUID: abcdefghijkl\r\n" + message("tracked upload", "mbsync-tuid")
    assert lab.send("bob@inbox.example.org", ALICE, via="mta", auth=False, source="isp", message=mail).ok
    wait_for(lab, "<mbsync-tuid@clients.example.org>")
    svc = lab.services["imaps"]
    tls = ssl.create_default_context(cafile=str(lab.ca_path))
    with tls.wrap_socket(socket.create_connection((svc.host, svc.port), timeout=10), server_hostname=HOME_NAME) as s:
        f = s.makefile("rb")

        def cmd(tag: str, text: str) -> bytes:
            s.sendall(f"{tag} {text}\r\n".encode())
            out = b""
            while not out.endswith(b"\r\n") or not out.split(b"\r\n")[-2].startswith(tag.encode() + b" "):
                out += f.readline()
            return out

        f.readline()
        assert b"a OK" in cmd("a", f"LOGIN {ALICE} {ALICE_PW}") and b"b OK" in cmd("b", "SELECT INBOX")
        uid = int(re.search(rb"\* SEARCH (\d+)", cmd("c", 'UID SEARCH HEADER Message-ID "mbsync-tuid"')).group(1))
        answer = cmd("d", f"UID FETCH {uid}:{uid} (UID BODY.PEEK[HEADER.FIELDS (X-TUID)])")
    assert re.fullmatch(rb"\* \d+ FETCH \(UID %d BODY\[HEADER\.FIELDS \(X-TUID\)\] \{24\}\r\n"
                        rb"X-TUID: abcdefghijkl\r\n\r\n\)\r\nd OK Fetch completed[^\r\n]*\r\n" % uid, answer), answer
