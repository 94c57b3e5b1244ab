"""OpenDKIM under load (issue 13, part 5): 1000 messages over 10 concurrent SMTP sessions through
real Postfix and OpenDKIM, every one signed, and the milter still alive afterwards.

Before the fix OpenDKIM died within about a hundred messages at two sessions or more: its
per-message VBR handle read the libunbound configuration (ResolverConfiguration) again for
every message, from several threads at once, through a parser that is not thread-safe.
"""
from __future__ import annotations

import concurrent.futures
import smtplib
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from conftest import real_lab
from labkit import Lab

MESSAGES, SESSIONS = 1000, 10


@pytest.fixture(scope="module")
def lab():
    yield from real_lab()


def _session(lab: Lab, first: int, count: int) -> list[str]:
    pc = lab.world.host("pc").address
    refused = []
    with smtplib.SMTP(lab.mta.host, lab.mta.port, source_address=(pc, 0), timeout=60) as smtp:
        smtp.ehlo("pc.example.com")
        for n in range(first, first + count):
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "alice@example.com", "alice@example.com", f"load {n:04d}"
            msg.set_content(f"message {n} of the milter load test\n")
            try:
                smtp.send_message(msg)
            except smtplib.SMTPException as e:
                refused.append(f"{n}: {e}")
    return refused


def test_opendkim_signs_1000_messages_over_10_sessions(lab):
    began = time.monotonic()
    per = MESSAGES // SESSIONS
    with concurrent.futures.ThreadPoolExecutor(SESSIONS) as pool:
        refused = [r for f in [pool.submit(_session, lab, i * per, per) for i in range(SESSIONS)] for r in f.result()]
    assert not refused, refused[:5]
    lab.dovecot_runner.wait_for_delivery("alice@example.com", count=MESSAGES, timeout=60)
    took = time.monotonic() - began
    files = [p for p in Path(lab.dir, "mail").rglob("*") if p.is_file() and ("/new/" in str(p) or "/cur/" in str(p))]
    load = {}
    for path in files:
        head = path.read_bytes().split(b"\n\n", 1)[0]
        for line in head.splitlines():
            if line.startswith(b"Subject: load "):
                load[line.decode().split()[-1]] = b"DKIM-Signature:" in head and b"d=example.com" in head
    assert len(load) == MESSAGES, f"{len(load)} of {MESSAGES} messages delivered"
    unsigned = sorted(n for n, signed in load.items() if not signed)
    assert not unsigned, f"{len(unsigned)} of {MESSAGES} unsigned, e.g. {unsigned[:5]}"
    assert not lab.dead, lab.dead
    assert lab.opendkim_runner.running, "OpenDKIM died under load"
    assert took < 60, f"{MESSAGES} messages took {took:.0f} s"


def test_opendkim_verifies_with_the_keys_of_the_lab_zones_and_no_resolver(lab):
    """The filter's keys come from a file written from the lab's zones (TestPublicKeys), so
    verifying needs no libunbound configuration: a signed message from outside passes."""
    from cryptography.hazmat.primitives import serialization

    from labkit.core.auth.dkim import DKIMKey, sign

    conf = Path(lab.opendkim_config.conf_path).read_text()
    assert "ResolverConfiguration" not in conf and "TestPublicKeys" in conf
    private = serialization.load_pem_private_key(Path(lab.dkim_key.key_path).read_bytes(), None)
    key = DKIMKey("example.com", "mail", private)
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.com", "alice@example.com", "signed outside"
    msg.set_content("signed before it reached mail.example.com\n")
    signed = sign(msg.as_bytes(), key)
    res = lab.send("alice@example.com", "alice@example.com", via="mta", auth=False, source="isp", message=signed)
    assert res.ok, res.reason
    got = lab.wait_for_mail("alice@example.com", subject="signed outside")
    raw = Path(got[0]["path"]).read_bytes().split(b"\n\n", 1)[0].decode()
    assert "dkim=pass" in raw and "mail.example.com" in raw, raw
