"""The memo's own tools against the embedded lab: swaks and openssl s_client.

They come from scripts/install-system-packages.sh; missing, they skip here and fail in CI.
"""
from __future__ import annotations

import subprocess

import pytest

from conftest import require_tool
from labkit import Lab


@pytest.fixture(scope="module")
def lab():
    with Lab() as lab:
        yield lab


def test_openssl_s_client_starttls_verifies_the_lab_chain(lab):
    openssl = require_tool("openssl")
    p = subprocess.run([openssl, "s_client", "-starttls", "smtp", "-connect", f"{lab.smarthost.host}:{lab.smarthost.port}",
                        "-CAfile", str(lab.ca_path), "-verify_hostname", "mail.isp.example.net",
                        "-verify_return_error", "-brief"],
                       input="QUIT\r\n", capture_output=True, text=True, timeout=30)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "Verification: OK" in out
    assert "mail.isp.example.net" in out


def test_openssl_rejects_the_lab_certificate_without_the_lab_ca(lab, tmp_path):
    openssl = require_tool("openssl")
    from labkit.core import pki
    other = pki.CA.create("Some other CA").save(tmp_path)  # trusting another CA is trusting none of ours
    p = subprocess.run([openssl, "s_client", "-starttls", "smtp", "-connect", f"{lab.smarthost.host}:{lab.smarthost.port}",
                        "-CAfile", str(other), "-CApath", str(tmp_path), "-verify_return_error", "-brief"],
                       input="QUIT\r\n", capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert "verify" in (p.stdout + p.stderr).lower()


def test_swaks_sends_through_the_smarthost_with_tls_and_auth(lab):
    swaks = require_tool("swaks")
    p = subprocess.run([swaks, "--server", f"{lab.smarthost.host}:{lab.smarthost.port}", "--tls",
                        "--tls-verify", "--tls-ca-path", str(lab.ca_path), "--tls-sni", "mail.isp.example.net",
                        "--auth", "PLAIN", "--auth-user", "alice@isp.example.net",
                        "--auth-password", "isp-lab-password", "--from", "alice@isp.example.net",
                        "--to", "bob@inbox.example.org", "--header", "Subject: sent by swaks",
                        "--helo", "pc.example.com", "--local-interface", "127.0.20.100"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "235" in p.stdout  # authentication succeeded
    msgs = lab.wait_for_mail("bob@inbox.example.org")
    assert any(m["subject"] == "sent by swaks" for m in msgs)


def test_swaks_without_auth_is_refused(lab):
    swaks = require_tool("swaks")
    p = subprocess.run([swaks, "--server", f"{lab.smarthost.host}:{lab.smarthost.port}", "--tls",
                        "--tls-ca-path", str(lab.ca_path), "--from", "alice@isp.example.net",
                        "--to", "bob@inbox.example.org", "--helo", "pc.example.com", "--quit-after", "RCPT",
                        "--local-interface", "127.0.20.100"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "530" in p.stdout
