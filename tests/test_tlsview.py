"""tlsview: certificates described, signatures (erratum 4), verdicts, pictures, port tables."""
from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from labkit import ConfigError, pki, tlsview
from labkit.core.transcript import Transcript

KINDS = ["rsa2048", "ec", "ed25519"]


@pytest.fixture(scope="module")
def ca():
    return pki.CA.create("Test CA")


@pytest.fixture(scope="module")
def keys():
    return {k: pki.make_key(k) for k in KINDS}


@pytest.fixture(scope="module")
def cert(ca):
    return ca.sign(pki.make_csr(pki.make_key("ec"), "mail.example.com", ["mail.example.com"], ["127.0.20.25"]))


def test_describe_reads_names_issuer_and_key(ca, cert):
    s = tlsview.describe(cert)
    assert s.subject == "CN=mail.example.com" and s.issuer == ca.cert.subject.rfc4514_string()
    assert s.dns_names == ("mail.example.com",) and s.ip_addresses == ("127.0.20.25",)
    assert s.key_type == "EC P-256 (secp256r1)" and not s.is_ca and not s.self_signed
    assert s.not_before < dt.datetime.now(dt.timezone.utc) < s.not_after
    assert s.fingerprint == ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))
    fields = [r["field"] for r in s.rows()]
    assert fields[:3] == ["subject", "subjectAltName", "issuer"]
    assert "<table" in s._repr_html_() and "DNS:mail.example.com" in str(s)


def test_load_certificate_takes_objects_pem_der_and_paths(cert, tmp_path):
    pem = cert.public_bytes(serialization.Encoding.PEM)
    der = cert.public_bytes(serialization.Encoding.DER)
    path = tmp_path / "c.crt"
    path.write_bytes(pem)
    for form in (cert, pem, pem.decode(), der, path, str(path)):
        assert tlsview.load_certificate(form) == cert
    with pytest.raises(ConfigError, match="neither PEM text nor a file"):
        tlsview.load_certificate(str(tmp_path / "missing.crt"))
    with pytest.raises(ConfigError, match="X.509"):
        tlsview.load_certificate(b"not a certificate")


@pytest.mark.parametrize("kind,want", [("rsa2048", "RSA 2048"), ("ec", "EC P-256 (secp256r1)"), ("ed25519", "Ed25519")])
def test_key_type_and_key_info_show_only_the_public_half(keys, kind, want):
    key = keys[kind]
    assert tlsview.key_type(key) == tlsview.key_type(key.public_key()) == want
    info = tlsview.key_info(key)
    assert info["type"] == want and "PUBLIC KEY" in info["public key"] and "PRIVATE" not in str(info)
    assert info["fingerprint"] == tlsview.fingerprint(key.public_key())


@pytest.mark.parametrize("kind", KINDS)
def test_sign_verify_and_tamper(keys, kind):
    key, data = keys[kind], b"Subject: hello\r\n"
    sig = tlsview.sign(key, data)
    assert tlsview.verify(key.public_key(), sig, data).ok
    bad = tlsview.verify(key.public_key(), sig, tlsview.tamper(data))
    assert not bad.ok and "does not match" in bad.reason
    other = pki.make_key(kind)
    assert not tlsview.verify(other.public_key(), sig, data).ok


def test_rsa_pss_signatures_differ_yet_verify_and_ed25519_is_deterministic(keys):
    data = b"x"
    a, b = tlsview.sign(keys["rsa2048"], data), tlsview.sign(keys["rsa2048"], data)
    assert a != b and all(tlsview.verify(keys["rsa2048"], s, data).ok for s in (a, b))
    p1 = tlsview.sign(keys["rsa2048"], data, rsa_padding="pkcs1v15")
    assert p1 == tlsview.sign(keys["rsa2048"], data, rsa_padding="pkcs1v15")
    assert tlsview.verify(keys["rsa2048"], p1, data, rsa_padding="pkcs1v15").ok
    assert not tlsview.verify(keys["rsa2048"], p1, data).ok  # the wrong scheme fails, it is not "decrypt"
    assert tlsview.sign(keys["ed25519"], data) == tlsview.sign(keys["ed25519"], data)


def test_operations_no_decrypt_on_ed25519_no_encrypt_on_rsa_private(keys):
    assert tlsview.operations(keys["ed25519"]) == ["sign"]
    assert tlsview.operations(keys["ed25519"].public_key()) == ["verify"]
    assert tlsview.operations(keys["rsa2048"]) == ["sign", "decrypt"]
    assert "decrypt" not in tlsview.operations(keys["ec"])


def test_sign_refuses_a_public_key_and_bad_padding(keys):
    with pytest.raises(ConfigError, match="public key"):
        tlsview.sign(keys["ec"].public_key(), b"x")
    with pytest.raises(ConfigError, match="padding"):
        tlsview.sign(keys["rsa2048"], b"x", rsa_padding="oaep")
    with pytest.raises(ConfigError, match="empty"):
        tlsview.tamper(b"")
    assert tlsview.tamper(b"Hello") == b"Iello"


def test_diagnose_verdicts(ca, cert):
    snake = tlsview.self_signed(pki.make_key("ec"), "mail.example.com")
    assert tlsview.describe(snake).self_signed and not tlsview.describe(snake).is_ca
    other = ca.sign(pki.make_csr(pki.make_key("ec"), "mail.isp.example.net"))
    got = {name: tlsview.diagnose(c, [ca.cert], "mail.example.com")
           for name, c in {"good": cert, "snake": snake, "other": other}.items()}
    assert {k: r.details["verdict"] for k, r in got.items()} == {"good": "ok", "snake": "untrusted", "other": "hostname"}
    assert got["good"].ok and "self-signed" in got["snake"].reason and "mail.isp.example.net" in got["other"].reason
    table = tlsview.summarize(got)
    assert [r["verdict"] for r in table.rows] == ["ok", "untrusted", "hostname"]


def test_diagnose_expired(ca):
    now = dt.datetime.now(dt.timezone.utc)
    key = pki.make_key("ec")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.com")])
    old = (x509.CertificateBuilder().subject_name(name).issuer_name(ca.cert.subject).public_key(key.public_key())
           .serial_number(1).not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now - dt.timedelta(days=1))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("mail.example.com")]), critical=False)
           .sign(ca.key, hashes.SHA256()))
    r = tlsview.diagnose(old, ca.cert, "mail.example.com")
    assert not r.ok and r.details["verdict"] == "expired"


def test_three_certificates_hold_one_of_each_verdict(ca):
    three = tlsview.three_certificates(ca, seed=1)
    assert sorted(three) == ["A", "B", "C"]
    verdicts = sorted(tlsview.diagnose(c, ca.cert, "mail.example.com").details["verdict"] for c in three.values())
    assert verdicts == ["hostname", "ok", "untrusted"]


def test_altered_certificate_no_longer_verifies(ca, cert):
    forged = tlsview.altered(cert, b"mail.example.com", b"evil.example.com")
    assert tlsview.describe(forged).subject == "CN=evil.example.com"
    r = pki.verify_chain(forged, [ca.cert])
    assert not r.ok and "signature" in r.reason
    with pytest.raises(ConfigError, match="length"):
        tlsview.altered(cert, b"mail", b"mx")
    with pytest.raises(ConfigError, match="not in the signed part"):
        tlsview.altered(cert, b"nowhere.invalid", b"elsewhere.inval")


def test_write_csr_writes_a_secret_key_and_a_csr(tmp_path):
    key_path, csr_path = tlsview.write_csr(tmp_path / "x", "mail.example.com")
    assert key_path.stat().st_mode & 0o777 == 0o600
    csr = x509.load_pem_x509_csr(csr_path.read_bytes())
    assert csr.is_signature_valid
    assert csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["mail.example.com"]


def test_pictures_are_mermaid(ca, cert):
    flow = tlsview.csr_flow_diagram()._repr_markdown_()
    assert flow.startswith("```mermaid\nsequenceDiagram") and "CSR" in flow
    chain = tlsview.chain_diagram([cert, ca.cert], trusted=[ca.cert]).source
    assert chain.startswith("flowchart LR") and "n0 -->|signed by| n1" in chain and "trusted" in chain
    lone = tlsview.chain_diagram([cert]).source
    assert "(not given)" in lone


def test_port_tables_and_where_tls_starts():
    memo = tlsview.port_table()
    smtps = next(r for r in memo.rows if r["with TLS"] == "SMTPS")
    assert smtps["port"] == 465 and "RFC 8314" in smtps["today"] and "非推奨" in smtps["the memo's remark"]
    assert [r["port"] for r in tlsview.mail_port_table().rows] == [25, 587, 465, 143, 993, 110, 995]
    assert {p: tlsview.tls_start(p) for p in (465, 587, 25, 993, 143, 443, 389, 8080)} == {
        465: "implicit", 587: "starttls", 25: "starttls", 993: "implicit", 143: "starttls",
        443: "implicit", 389: "starttls", 8080: "none"}


def _t(lines):
    t = Transcript("c", "s")
    for d, text in lines:
        t.add(d, text)
    return t


def test_clear_lines_and_side_by_side():
    starttls = _t([("*", "connected"), ("S", "220 hi"), ("C", "EHLO x"), ("S", "250 STARTTLS"), ("C", "STARTTLS"),
                   ("S", "220 go"), ("*", "TLS established: TLSv1.3"), ("C", "EHLO x"), ("S", "250 AUTH PLAIN"),
                   ("C", "AUTH PLAIN ****"), ("S", "235 ok")])
    implicit = _t([("*", "connected"), ("*", "TLS established: TLSv1.3"), ("S", "220 hi"), ("C", "EHLO x"),
                   ("S", "250 AUTH PLAIN"), ("C", "AUTH PLAIN ****"), ("S", "235 ok")])
    assert [ln.text for ln in tlsview.clear_lines(starttls)] == ["220 hi", "EHLO x", "250 STARTTLS", "STARTTLS", "220 go"]
    assert tlsview.clear_lines(implicit) == []
    table = tlsview.tls_start_table({"587": starttls, "465": implicit})
    assert table.columns == ["#", "587", "465"]
    assert table.rows[0]["465"] == "*** TLS starts ***" and table.rows[5]["587"] == "*** TLS starts ***"
    assert table.rows[-1]["587"] == "C: AUTH PLAIN ****" and len(table.rows) == 9
