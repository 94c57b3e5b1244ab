"""The mail clients people run, against the lab: curl, msmtp, fetchmail and mbsync (Debian
packages from scripts/install-system-packages.sh), in embedded mode and in real mode.

Every test drives a client as a learner would, with its configuration file in the test's own
folder, then looks at what the lab holds (the Maildir on mail.example.com), not at what the
client printed. The ``lab`` fixture runs once per mode for the whole package; real mode
(Postfix and Dovecot, no OpenDKIM: it plays no part here) is marked ``real``.

Certificates are checked by name, mail.example.com, as a client at home would: where the
client can be told the name apart from the address (curl ``--resolve``, msmtp
``tls_host_override``, fetchmail ``sslcommonname``), it is; mbsync cannot, and runs in a mount
namespace of its own whose /etc/hosts has the lines of ``labkit hosts --apply`` (the real
/etc/hosts is never touched).
"""
from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import REQUIRE_REAL, postfix_processes, processes_mentioning, require_real_postfix, require_tool
from labkit import Lab, pki

ALICE, ALICE_PW = "alice@example.com", "alice-lab-password"
HOME_NAME, HOME_ADDRESS = "mail.example.com", "127.0.20.25"
#: What every client run may take at most (seconds); an IDLE run says how long it waits itself.
TIMEOUT = 60


@pytest.fixture(scope="package", params=["embedded", pytest.param("real", marks=pytest.mark.real)])
def lab(request):
    """A running lab, embedded or real (Postfix submission, Dovecot IMAP and POP3)."""
    if request.param == "real":
        require_real_postfix()
        require_tool("dovecot")
        lab = Lab(real=True, dkim=False)
    else:
        lab = Lab()
    try:
        lab.start()
        yield lab
    finally:
        postfix_dir = lab.postfix_config.config_directory if lab.postfix_config else None
        dovecot_conf = lab.dovecot_config.conf_path if lab.dovecot_config else None
        lab.stop()
    if postfix_dir:
        assert not postfix_processes(postfix_dir), "a Postfix process outlived lab.stop()"
    if dovecot_conf:
        assert not processes_mentioning(str(dovecot_conf)), "a Dovecot process outlived lab.stop()"


@pytest.fixture
def workdir(tmp_path):
    """The test's folder for client configs and local mail; no client process outlives the test
    (every client runs in it and most name a file in it)."""
    yield tmp_path
    left = set(processes_mentioning(str(tmp_path))) | set(processes_in(tmp_path))
    assert not left, f"client processes outlived the test: {left}"


def processes_in(folder: Path) -> list[int]:
    """Processes whose working directory is ``folder`` or below it."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            cwd = os.readlink(d / "cwd") if d.name.isdigit() else ""
        except OSError:
            continue
        if cwd == str(folder) or cwd.startswith(str(folder) + "/"):
            found.append(int(d.name))
    return found


def client(name: str) -> str:
    """The path of a client command; skip (fail under LABKIT_REQUIRE_REAL=1) if not installed."""
    return require_tool(name)


def run(args: list[str], workdir: Path, *, input: bytes | None = None,
        timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run a client with HOME in ``workdir`` (its state files stay there); output as text."""
    env = {**os.environ, "HOME": str(workdir), "LC_ALL": "C"}
    p = subprocess.run(args, input=input, capture_output=True, timeout=timeout, env=env, cwd=workdir)
    p.stdout, p.stderr = (p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))
    return p


def other_ca(workdir: Path) -> Path:
    """A CA that signed nothing of the lab's: a client that trusts only it must refuse."""
    return pki.CA.create("Not the Mail Lab CA").save(workdir / "other-ca")


@dataclass(frozen=True)
class Held:
    """One message in a lab mailbox, as the Maildir has it."""

    message_id: str
    subject: str
    flags: str
    path: Path

    def body(self) -> bytes:
        """The message's body, LF line ends (wherever a reader has moved the file since)."""
        key = self.path.name.partition(":2,")[0]
        for path in [self.path, *self.path.parent.parent.glob(f"*/{key}*")]:
            try:
                return path.read_bytes().replace(b"\r\n", b"\n").split(b"\n\n", 1)[-1]
            except FileNotFoundError:
                continue
        raise AssertionError(f"{self.message_id} is gone from the lab mailbox")


def holdings(lab: Lab, address: str = ALICE) -> dict[str, Held]:
    """What the lab's mailbox of ``address`` holds now: Message-ID -> :class:`Held`."""
    folder = lab.ctx.mailbox_dir(address)
    out = {}
    for sub in ("new", "cur"):
        d = folder / sub
        for path in sorted(d.iterdir()) if d.is_dir() else []:
            try:
                msg = email.message_from_bytes(path.read_bytes())
            except FileNotFoundError:  # renamed (new flags) while we looked
                return holdings(lab, address)
            info = path.name.partition(":2,")[2] if sub == "cur" else ""
            out[str(msg["Message-ID"])] = Held(str(msg["Message-ID"]), str(msg["Subject"]), info, path)
    return out


def message(subject: str, tag: str, sender: str = "bob@inbox.example.org") -> bytes:
    """A small message with a Message-ID of its own (``<tag@...>``)."""
    return (f"From: {sender}\r\nTo: {ALICE}\r\nSubject: {subject}\r\n"
            f"Date: Tue, 02 Jan 2024 10:00:00 +0900\r\nMessage-ID: <{tag}@clients.example.org>\r\n"
            f"\r\n{subject}: a line of text.\r\n").encode()


def deliver(lab: Lab, subject: str, tag: str) -> Held:
    """Mail ``subject`` to alice through the lab's own MTA (Postfix in real mode), from the ISP's
    address (no AUTH needed for local mail); wait until her mailbox holds it."""
    res = lab.send("bob@inbox.example.org", ALICE, via="mta", auth=False, source="isp",
                   message=message(subject, tag))
    assert res.ok, res.reason
    return wait_for(lab, f"<{tag}@clients.example.org>")


def wait_for(lab: Lab, message_id: str, timeout: float = 15, gone: bool = False) -> Held | None:
    """Wait until alice's mailbox holds ``message_id`` (or, with ``gone``, no longer does)."""
    deadline = time.monotonic() + timeout
    while True:
        held = holdings(lab).get(message_id)
        if (held is None) == gone:
            return held
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout} s alice's mailbox {'still holds' if gone else 'has no'} "
                                 f"{message_id}: {sorted(holdings(lab))}")
        time.sleep(0.02)


def hosts_namespace(workdir: Path) -> list[str]:
    """A command prefix that runs a client where the lab's names resolve: a private mount
    namespace (unshare -m) whose /etc/hosts is a copy with ``labkit hosts --apply`` done on it.

    Needs root and util-linux's unshare; skips with a reason otherwise (fails under
    LABKIT_REQUIRE_REAL=1).
    """
    unshare = client("unshare")
    hosts = workdir / "hosts"
    shutil.copyfile("/etc/hosts", hosts)
    subprocess.run([sys.executable, "-m", "labkit", "hosts", "--apply", "--file", str(hosts)],
                   check=True, capture_output=True, timeout=30)
    probe = subprocess.run([unshare, "-m", "sh", "-c", f'mount --bind "{hosts}" /etc/hosts && '
                            f"getent hosts {HOME_NAME}"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0 or HOME_ADDRESS not in probe.stdout:
        msg = f"cannot give a client its own /etc/hosts here (unshare -m, mount --bind): {probe.stderr.strip()}"
        if REQUIRE_REAL:
            pytest.fail(msg + " and LABKIT_REQUIRE_REAL=1 forbids skipping", pytrace=False)
        pytest.skip(msg)
    return [unshare, "-m", "sh", "-c", f'mount --bind "{hosts}" /etc/hosts && exec "$0" "$@"']
