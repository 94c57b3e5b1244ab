"""pki: keys, CSR, CA, chain verification, private keys 0600."""
from __future__ import annotations

import ssl
import stat

import pytest
from cryptography import x509

from labkit import ConfigError, pki


@pytest.fixture(scope="module")
def ca():
    return pki.CA.create("Test CA")


@pytest.mark.parametrize("kind", ["ec", "ed25519", "rsa2048"])
def test_csr_signed_by_ca_verifies(ca, kind):
    key = pki.make_key(kind)
    csr = pki.make_csr(key, "mail.example.com", ["mail.example.com", "example.com"], ["127.0.20.25"])
    assert csr.is_signature_valid
    cert = ca.sign(csr)
    res = pki.verify_chain(cert, [ca.cert], "mail.example.com")
    assert res.ok, res.reason
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "example.com" in san.get_values_for_type(x509.DNSName)


def test_wrong_name_and_wrong_ca_fail_with_reason(ca):
    cert = ca.sign(pki.make_csr(pki.make_key(), "mail.example.com"))
    wrong_name = pki.verify_chain(cert, [ca.cert], "mail.example.net")
    assert not wrong_name.ok and "subjectAltName" in wrong_name.reason
    other = pki.CA.create("Another CA")
    wrong_ca = pki.verify_chain(cert, [other.cert], "mail.example.com")
    assert not wrong_ca.ok and "mail.example.com" in wrong_ca.reason


def test_self_signed_snakeoil_is_not_trusted(ca):
    snake = pki.CA.create("snakeoil")  # a self-signed certificate, as Debian's ssl-cert makes
    assert not pki.verify_chain(snake.cert, [ca.cert]).ok


def test_forged_csr_is_refused(ca):
    csr = pki.make_csr(pki.make_key(), "mail.example.com")
    other = pki.make_csr(pki.make_key(), "mail.example.com")
    # a CSR whose signature does not match its key: take one CSR's body with another's signature
    from cryptography.hazmat.primitives.serialization import Encoding
    der = bytearray(csr.public_bytes(Encoding.DER))
    der[-8:] = other.public_bytes(Encoding.DER)[-8:]
    try:
        forged = x509.load_der_x509_csr(bytes(der))
    except ValueError:
        pytest.skip("the tampered CSR does not parse")
    with pytest.raises(ConfigError, match="signature"):
        ca.sign(forged)


@pytest.mark.parametrize("kind", ["rsa512", "dsa", "rsa"])
def test_bad_key_kinds(kind):
    with pytest.raises(ConfigError, match="key kind"):
        pki.make_key(kind)


def test_bad_names(ca):
    with pytest.raises(ConfigError):
        pki.make_csr(pki.make_key(), "mail.example.com\r\nX: y")
    with pytest.raises(ConfigError, match="ip_addresses"):
        pki.make_csr(pki.make_key(), "mail.example.com", ip_addresses=["not-an-ip"])


def test_files_are_written_0600_and_serve_tls(ca, tmp_path):
    ca_path = ca.save(tmp_path)
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    creds = pki.issue_host(ca, tmp_path, "mx.inbox.example.org", ["inbox.example.org"], ["127.0.40.25"], ca_path)
    assert stat.S_IMODE(creds.key_path.stat().st_mode) == 0o600
    assert creds.cert_path.read_text().count("BEGIN CERTIFICATE") == 2  # host then CA: a full chain
    assert isinstance(creds.server_context(), ssl.SSLContext)
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"
