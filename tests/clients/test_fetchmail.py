"""fetchmail, which collects mail for a local mail system: IMAP and POP3, each with STARTTLS/STLS
and with implicit TLS, and IMAP IDLE; the address is the lab's and ``sslcommonname`` the name
the certificate must carry. Each message goes to a tiny MDA that writes it into a folder."""
from __future__ import annotations

import email
import signal
import subprocess
import time

import pytest

from .conftest import ALICE, ALICE_PW, HOME_NAME, client, deliver, holdings, other_ca, run


def fetchmailrc(lab, workdir, role: str, *, keep: bool = True, idle: bool = False,
                password: str = ALICE_PW, ca: str | None = None) -> str:
    """~/.fetchmailrc for the lab (0600, as fetchmail insists), and the MDA it hands mail to."""
    svc = lab.services[role]
    inbox = workdir / "delivered"
    inbox.mkdir(exist_ok=True)
    mda = workdir / "mda.sh"
    # written aside, then renamed: a reader never sees half a message
    mda.write_text(f'#!/bin/sh\nt=$(mktemp {inbox}/.part.XXXXXX) && cat > "$t" && '
                   f'mv "$t" "$(mktemp -u {inbox}/msg.XXXXXX)"\n')
    mda.chmod(0o755)
    protocol = "IMAP" if role.startswith("imap") else "POP3"
    tls = "ssl" if role.endswith("s") else "sslproto tls1.2+"  # implicit TLS, or STARTTLS/STLS required
    rc = workdir / f"fetchmailrc-{role}"
    rc.write_text(f"""set no syslog
poll {svc.host} service {svc.port} protocol {protocol}
    user "{ALICE}" there with password "{password}"
    {tls} sslcertck sslcertfile "{ca or lab.ca_path}" sslcommonname "{HOME_NAME}"
    {'idle ' if idle else ''}fetchall {'keep' if keep else 'nokeep'} mda "{mda}"
""")
    rc.chmod(0o600)
    return str(rc)


def delivered(workdir) -> dict[str, bytes]:
    """What the MDA got: Message-ID -> body (LF line ends)."""
    out = {}
    for path in (workdir / "delivered").glob("msg.*"):
        raw = path.read_bytes().replace(b"\r\n", b"\n")
        out[str(email.message_from_bytes(raw)["Message-ID"])] = raw.split(b"\n\n", 1)[1]
    return out


@pytest.mark.parametrize("role", ["imap", "imaps"])
def test_imap_collects_everything_and_keeps_it_read(lab, workdir, role):
    deliver(lab, f"for fetchmail over {role}", f"fetchmail-{role}")
    p = run([client("fetchmail"), "-f", fetchmailrc(lab, workdir, role)], workdir)
    assert p.returncode == 0, p.stdout + p.stderr
    held = holdings(lab)
    got = delivered(workdir)
    assert set(got) == set(held) and all(got[m] == held[m].body() for m in held)
    assert all("S" in h.flags for h in held.values()), "fetchmail marks what it collected as read"


@pytest.mark.parametrize("role", ["pop3", "pop3s"])
def test_pop3_collects_everything_and_deletes_it(lab, workdir, role):
    deliver(lab, f"for fetchmail over {role}", f"fetchmail-{role}")
    before = holdings(lab)
    bodies = {m: h.body() for m, h in before.items()}
    p = run([client("fetchmail"), "-f", fetchmailrc(lab, workdir, role, keep=False)], workdir)
    assert p.returncode == 0, p.stdout + p.stderr
    assert delivered(workdir) == bodies
    assert holdings(lab) == {}, "nokeep: the lab's mailbox is empty afterwards"


def test_idle_brings_new_mail_at_once(lab, workdir):
    """IDLE: fetchmail waits on the server, which tells it when mail arrives; the poll interval
    (5 minutes) is far longer than the test, so only IDLE can bring the message in time."""
    rc = fetchmailrc(lab, workdir, "imap", idle=True)
    proc = subprocess.Popen([client("fetchmail"), "-f", rc, "--nodetach", "--daemon", "300"], cwd=workdir,
                            env={"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LC_ALL": "C"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while any("S" not in h.flags for h in holdings(lab).values()) or len(delivered(workdir)) < len(holdings(lab)):
            assert proc.poll() is None and time.monotonic() < deadline, "the first poll did not end"
            time.sleep(0.1)
        time.sleep(0.5)  # now idling
        held = deliver(lab, "while fetchmail idles", "fetchmail-idle")
        deadline = time.monotonic() + 15
        while held.message_id not in delivered(workdir):
            assert proc.poll() is None and time.monotonic() < deadline, "IDLE brought nothing"
            time.sleep(0.1)
        assert delivered(workdir)[held.message_id] == held.body()
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode(errors="replace")
    assert proc.returncode is not None, out


def test_wrong_password_and_wrong_ca_are_refused(lab, workdir):
    deliver(lab, "never collected", "fetchmail-refused")
    before = holdings(lab)
    p = run([client("fetchmail"), "-f", fetchmailrc(lab, workdir, "imaps", keep=False, password="wrong")], workdir)
    assert p.returncode == 3, p.stdout + p.stderr  # PS_AUTHFAIL
    for ca in ("/etc/ssl/certs/ca-certificates.crt", str(other_ca(workdir))):
        p = run([client("fetchmail"), "-f", fetchmailrc(lab, workdir, "pop3", keep=False, ca=ca)], workdir)
        assert p.returncode == 2, p.stdout + p.stderr  # PS_SOCKET: the TLS handshake was refused
    assert holdings(lab) == before and delivered(workdir) == {}
