"""Keys, CSRs, a local CA and certificates: the memo's CSR -> CA -> CRT story, for real.

Built on ``cryptography``. Private keys are written 0600 and never printed.

    >>> ca = CA.create("Mail Lab CA")                      # doctest: +SKIP
    >>> key = make_key("ec")
    >>> csr = make_csr(key, "mail.example.com", dns_names=["mail.example.com"])
    >>> cert = ca.sign(csr)
    >>> verify_chain(cert, [ca.cert], "mail.example.com").ok
    True
"""
from __future__ import annotations

import datetime as _dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from ..errors import ConfigError
from ..files import write_atomic, write_secret
from ..result import Result

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey]

KEY_KINDS = ("ec", "rsa2048", "rsa1024", "rsa3072", "rsa4096", "ed25519")


def make_key(kind: str = "ec") -> PrivateKey:
    """A new private key: ``ec`` (P-256, the lab default: fast), ``rsaNNNN`` or ``ed25519``."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind.startswith("rsa") and kind[3:].isdigit():
        bits = int(kind[3:])
        if bits < 1024:
            raise ConfigError("key kind", f"RSA keys shorter than 1024 bits are refused ({bits})",
                              "RFC 8301 requires at least 1024; use rsa2048")
        return rsa.generate_private_key(public_exponent=65537, key_size=bits)
    raise ConfigError("key kind", f"unknown kind {kind!r}", f"choose one of {', '.join(KEY_KINDS)}")


def _hash_for(key) -> hashes.HashAlgorithm | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM of a private key (unencrypted: lab keys protect nothing real)."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_key(path: str | Path, key: PrivateKey) -> Path:
    """Write a private key as PEM, mode 0600, atomically."""
    return write_secret(path, key_pem(key))


def load_key(path: str | Path) -> PrivateKey:
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(path: str | Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(Path(path).read_bytes())


def _san(dns_names: Iterable[str], ip_addresses: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    for ip in ip_addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(ip)))
        except ValueError:
            raise ConfigError("ip_addresses", f"{ip!r} is not an IP address") from None
    return x509.SubjectAlternativeName(names)


def make_csr(key: PrivateKey, common_name: str, dns_names: Iterable[str] = (),
             ip_addresses: Iterable[str] = ()) -> x509.CertificateSigningRequest:
    """A certificate signing request: the public key and the names, signed by the private key.

    This is what the memo sends to the CA; the private key itself never leaves the host.
    """
    if not common_name or any(c in common_name for c in "\r\n\0"):
        raise ConfigError("common_name", f"{common_name!r} is not a host name")
    dns_names = list(dns_names) or [common_name]
    builder = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
               .add_extension(_san(dns_names, ip_addresses), critical=False))
    return builder.sign(key, _hash_for(key))


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


@dataclass
class CA:
    """A local certificate authority."""

    key: PrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, name: str = "Mail Lab CA", kind: str = "ec", days: int = 3650) -> "CA":
        key = make_key(kind)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                             x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Mail Lab")])
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(_now() - _dt.timedelta(minutes=5))
                .not_valid_after(_now() + _dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(ski, critical=False)
                .sign(key, _hash_for(key)))
        return cls(key, cert)

    @classmethod
    def load(cls, folder: str | Path) -> "CA":
        folder = Path(folder)
        return cls(load_key(folder / "ca.key"), load_cert(folder / "ca.crt"))

    def save(self, folder: str | Path) -> Path:
        """Write ``ca.key`` (0600) and ``ca.crt`` into ``folder``; return the certificate path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_key(folder / "ca.key", self.key)
        return write_atomic(folder / "ca.crt", cert_pem(self.cert))

    def sign(self, csr: x509.CertificateSigningRequest, days: int = 825) -> x509.Certificate:
        """Check a CSR's own signature, then issue a server certificate for its names."""
        if not csr.is_signature_valid:
            raise ConfigError("csr", "its signature does not match its public key",
                              "make the CSR again with the host's own private key")
        try:
            san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            cn = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if not cn:
                raise ConfigError("csr", "it names no host (no CN, no subjectAltName)") from None
            san = x509.SubjectAlternativeName([x509.DNSName(str(cn[0].value))])
        pub = csr.public_key()
        builder = (x509.CertificateBuilder()
                   .subject_name(csr.subject).issuer_name(self.cert.subject)
                   .public_key(pub)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(_now() - _dt.timedelta(minutes=5))
                   .not_valid_after(_now() + _dt.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(san, critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                         ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))
        if not isinstance(pub, ed25519.Ed25519PublicKey):
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, key_encipherment=isinstance(pub, rsa.RSAPublicKey),
                content_commitment=False, data_encipherment=False, key_agreement=False,
                key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
                critical=True)
        return builder.sign(self.key, _hash_for(self.key))


@dataclass(frozen=True)
class HostCredentials:
    """Where a host's key and certificate were written."""

    name: str
    key_path: Path
    cert_path: Path  #: the host certificate followed by the CA certificate (a full chain)
    ca_path: Path

    def server_context(self) -> ssl.SSLContext:
        """An SSL context for a server playing this host."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert_path, self.key_path)
        return ctx


def issue_host(ca: CA, folder: str | Path, name: str, dns_names: Iterable[str] = (),
               ip_addresses: Iterable[str] = (), ca_path: str | Path | None = None) -> HostCredentials:
    """Make a key and a CSR for ``name``, have ``ca`` sign it, write both into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = make_key("ec")
    csr = make_csr(key, name, [name, *[n for n in dns_names if n != name]], ip_addresses)
    cert = ca.sign(csr)
    key_path = write_key(folder / f"{name}.key", key)
    write_atomic(folder / f"{name}.csr", csr.public_bytes(serialization.Encoding.PEM))
    cert_path = write_atomic(folder / f"{name}.crt", cert_pem(cert) + cert_pem(ca.cert))
    return HostCredentials(name, key_path, cert_path, Path(ca_path) if ca_path else folder / "ca.crt")


def client_context(ca_path: str | Path | None = None) -> ssl.SSLContext:
    """A client SSL context that trusts the lab CA (and checks host names)."""
    ctx = ssl.create_default_context(cafile=str(ca_path) if ca_path else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def verify_chain(cert: x509.Certificate, roots: Iterable[x509.Certificate], hostname: str | None = None,
                 intermediates: Iterable[x509.Certificate] = ()) -> Result:
    """Verify ``cert`` up to one of ``roots`` (and for ``hostname``, if given), with the reason."""
    roots = list(roots)
    if not roots:
        return Result(False, "no trusted root given")
    builder = PolicyBuilder().store(Store(roots)).time(_now())
    subject = cert.subject.rfc4514_string()
    try:
        if hostname:
            verifier = builder.build_server_verifier(x509.DNSName(hostname))
            chain = verifier.verify(cert, list(intermediates))
        else:
            verifier = builder.build_client_verifier()
            chain = verifier.verify(cert, list(intermediates)).chain
    except VerificationError as e:
        return Result(False, f"{subject}: {e}", {"subject": subject})
    names = [c.subject.rfc4514_string() for c in chain]
    return Result(True, f"{subject} chains to {names[-1]}" + (f" and is valid for {hostname}" if hostname else ""),
                  {"chain": names})
