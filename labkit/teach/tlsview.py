"""Keys, signatures, certificates and TLS ports, made visible (chapters 04 and 05).

The memo's section on TLS (公開鍵暗号, デジタル署名, サイトの認証, and its table of TLS ports)
in small pieces a notebook can show and a test can check:

* :func:`describe` -- a certificate as its reader needs it: subject, SANs, issuer, validity,
  key type, fingerprint; :func:`key_info` -- a key's public half only (never the private PEM).
* :func:`sign` / :func:`verify` / :func:`tamper` / :func:`operations` -- what a signature is
  (erratum 4: it is *not* "encrypting with the private key").
* :func:`self_signed` -- a certificate like Debian's ``ssl-cert-snakeoil.pem``;
  :func:`diagnose` -- why a certificate is or is not accepted for a host name (a verdict:
  ``ok``, ``untrusted``, ``hostname``, ``expired``); :func:`three_certificates` -- a shuffled
  set for exercise 04.2; :func:`altered` -- a forged copy whose signature no longer matches.
* :func:`csr_flow_diagram`, :func:`chain_diagram` -- the CSR -> CA -> certificate story and a
  chain, as Mermaid; :func:`port_table`, :func:`mail_port_table`, :func:`tls_start` -- implicit
  TLS versus STARTTLS; :func:`clear_lines`, :func:`tls_start_table` -- where TLS starts in a
  recorded dialogue (587 versus 465).

No sockets. Files are read only by ``load_certificate`` (given a path) and written only by
:func:`write_csr` (the fallback for a machine without openssl).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.x509.oid import NameOID

from ..core.pki import make_csr, make_key, verify_chain, write_key
from ..errors import ConfigError
from ..i18n import N_
from ..files import write_atomic
from ..result import Result
from .display import Diagram, Table, mermaid_escape

if TYPE_CHECKING:  # the lab floor, for type hints only
    from ..lab.lab import Lab

__all__ = ["CertSummary", "load_certificate", "describe", "key_type", "key_info", "fingerprint",
           "sign", "verify", "tamper", "operations", "self_signed", "diagnose", "VERDICTS",
           "three_certificates", "altered", "write_csr", "csr_flow_diagram", "chain_diagram", "PortRow", "PORTS",
           "MailPort", "MAIL_PORTS", "port_table", "mail_port_table", "tls_start", "summarize",
           "clear_lines", "tls_start_table"]


# -- reading certificates and keys -----------------------------------------------------------

def load_certificate(cert: Any) -> x509.Certificate:
    """A certificate from a ``Certificate``, PEM or DER bytes, PEM text, or a file path.

    A file or PEM holding a chain gives its first certificate (the host's own).
    """
    if isinstance(cert, x509.Certificate):
        return cert
    if isinstance(cert, Path) or (isinstance(cert, str) and "-----BEGIN" not in cert):
        path = Path(cert)
        if not path.is_file():
            raise ConfigError("certificate", f"{str(cert)[:80]!r} is neither PEM text nor a file",
                              "pass a Certificate object, its PEM, or the path of a .crt/.pem file")
        cert = path.read_bytes()
    data = cert.encode("ascii") if isinstance(cert, str) else bytes(cert)
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return x509.load_pem_x509_certificates(data)[0]
        return x509.load_der_x509_certificate(data)
    except ValueError as e:
        raise ConfigError("certificate", f"could not be read as X.509: {e}",
                          "a certificate PEM starts with -----BEGIN CERTIFICATE-----") from None


def _public(key: Any) -> Any:
    return key.public_key() if hasattr(key, "private_bytes") else key


def key_type(key: Any) -> str:
    """``RSA 2048``, ``EC P-256 (secp256r1)``, ``Ed25519``: the kind of a key (private or public)."""
    pub = _public(key)
    if isinstance(pub, rsa.RSAPublicKey):
        return f"RSA {pub.key_size}"
    if isinstance(pub, ec.EllipticCurvePublicKey):
        nist = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}.get(pub.curve.name)
        return f"EC {nist} ({pub.curve.name})" if nist else f"EC {pub.curve.name}"
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(pub, ed448.Ed448PublicKey):
        return "Ed448"
    return type(pub).__name__


def _spki(key: Any) -> bytes:
    return _public(key).public_bytes(serialization.Encoding.DER,
                                     serialization.PublicFormat.SubjectPublicKeyInfo)


def _colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02X}" for b in digest)


def fingerprint(obj: Any) -> str:
    """SHA-256 fingerprint, ``AB:CD:...``: of the DER certificate, or of a key's public half.

    For a certificate this is what ``openssl x509 -noout -fingerprint -sha256`` prints.
    """
    if isinstance(obj, x509.Certificate):
        return _colon_hex(obj.fingerprint(hashes.SHA256()))
    return _colon_hex(hashlib.sha256(_spki(obj)).digest())


def key_info(key: Any) -> dict[str, str]:
    """What may be shown of a key: its type, its public key (PEM) and the SHA-256 fingerprint
    of that public key. Given a private key, only its public half is used."""
    pub = _public(key)
    pem = pub.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")
    return {"type": key_type(pub), "public key": pem, "fingerprint": fingerprint(pub)}


@dataclass(frozen=True)
class CertSummary:
    """The parts of a certificate a reader checks, from :func:`describe`."""

    subject: str
    issuer: str
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    not_before: _dt.datetime
    not_after: _dt.datetime
    key_type: str
    signature_algorithm: str
    is_ca: bool
    self_signed: bool
    serial: str
    fingerprint: str

    def rows(self) -> list[dict[str, str]]:
        sans = [f"DNS:{n}" for n in self.dns_names] + [f"IP:{a}" for a in self.ip_addresses]
        return [
            {"field": "subject", "value": self.subject},
            {"field": "subjectAltName", "value": ", ".join(sans) or "(none)"},
            {"field": "issuer", "value": self.issuer + ("  (itself: self-signed)" if self.self_signed else "")},
            {"field": "valid", "value": f"{self.not_before:%Y-%m-%d %H:%M} UTC to {self.not_after:%Y-%m-%d %H:%M} UTC"},
            {"field": "public key", "value": self.key_type},
            {"field": "signed with", "value": self.signature_algorithm},
            {"field": "CA?", "value": "yes (may sign certificates)" if self.is_ca else "no (a host certificate)"},
            {"field": "serial", "value": self.serial},
            {"field": "SHA-256 fingerprint", "value": self.fingerprint},
        ]

    def table(self) -> Table:
        return Table(self.rows(), ["field", "value"])

    def _repr_html_(self) -> str:
        return self.table().to_html()

    def __str__(self) -> str:
        return "\n".join(f"{r['field']:>20}: {r['value']}" for r in self.rows())

    __repr__ = __str__


def describe(cert: Any) -> CertSummary:
    """Subject, SANs, issuer, validity, key type... of a certificate (any form
    :func:`load_certificate` takes)."""
    c = load_certificate(cert)
    try:
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(a) for a in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        dns, ips = (), ()
    try:
        is_ca = c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    oid = c.signature_algorithm_oid
    sig = getattr(oid, "_name", None) or oid.dotted_string
    return CertSummary(
        subject=c.subject.rfc4514_string(), issuer=c.issuer.rfc4514_string(),
        dns_names=dns, ip_addresses=ips,
        not_before=c.not_valid_before_utc, not_after=c.not_valid_after_utc,
        key_type=key_type(c.public_key()), signature_algorithm=sig, is_ca=is_ca,
        self_signed=c.issuer == c.subject, serial=f"{c.serial_number:X}", fingerprint=fingerprint(c))


# -- signatures (erratum 4) ----------------------------------------------------------------------

_RSA_PADDINGS = ("pss", "pkcs1v15")


def _rsa_padding(name: str) -> padding.AsymmetricPadding:
    if name == "pss":
        return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH)
    if name == "pkcs1v15":
        return padding.PKCS1v15()
    raise ConfigError("rsa_padding", f"unknown padding {name!r}", f"choose one of {', '.join(_RSA_PADDINGS)}")


def sign(private_key: Any, data: bytes, *, rsa_padding: str = "pss") -> bytes:
    """A signature over ``data``: RSA-PSS or PKCS#1 v1.5 with SHA-256, ECDSA with SHA-256, or
    Ed25519 (which hashes inside, with SHA-512).

    Each scheme hashes the data and computes a value that only the private key can produce and
    anyone with the public key can check. Nothing is encrypted; RSA-PSS and ECDSA put fresh
    randomness into each signature, so signing twice gives two different (both valid) results.
    """
    if not hasattr(private_key, "private_bytes"):
        raise ConfigError("private_key", "is a public key; only the private key can sign",
                          "verify() takes the public key")
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(data, _rsa_padding(rsa_padding), hashes.SHA256())
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(private_key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        return private_key.sign(data)
    raise ConfigError("private_key", f"cannot sign with a {type(private_key).__name__}")


def verify(public_key: Any, signature: bytes, data: bytes, *, rsa_padding: str = "pss") -> Result:
    """Check ``signature`` over ``data`` with the public key; the reason says what was checked.

    Verification recomputes and compares; it never "decrypts" the signature back into the data.
    """
    pub = _public(public_key)
    kind = key_type(pub)
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(signature, data, _rsa_padding(rsa_padding), hashes.SHA256())
            kind += f" ({'RSA-PSS' if rsa_padding == 'pss' else 'PKCS#1 v1.5'}, SHA-256)"
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            kind += " (ECDSA, SHA-256)"
        elif isinstance(pub, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            pub.verify(signature, data)
        else:
            return Result(False, f"cannot verify with a {type(pub).__name__}")
    except InvalidSignature:
        return Result(False, f"the {kind} signature does not match these {len(data)} bytes: "
                      "the data was changed, or another key signed it", {"key": kind})
    return Result(True, f"the {kind} signature matches these {len(data)} bytes", {"key": kind})


def tamper(data: bytes, index: int = 0) -> bytes:
    """``data`` with one bit of byte ``index`` flipped (``b"Hello"`` -> ``b"Iello"``)."""
    if not data:
        raise ConfigError("data", "is empty; there is no byte to change")
    i = index % len(data)
    return data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]


def operations(key: Any) -> list[str]:
    """Which of sign / verify / encrypt / decrypt / exchange a key object offers.

    An RSA private key offers ``sign`` and ``decrypt`` but no ``encrypt``; an Ed25519 or EC
    private key has no ``encrypt`` and no ``decrypt`` at all.
    """
    return [op for op in ("sign", "verify", "encrypt", "decrypt", "exchange") if callable(getattr(key, op, None))]


# -- certificates that fail, and why --------------------------------------------------------------

def self_signed(key: Any, name: str, days: int = 3650) -> x509.Certificate:
    """A self-signed certificate for ``name``, as Debian's ``make-ssl-cert`` makes
    ``/etc/ssl/certs/ssl-cert-snakeoil.pem`` at install time: issuer = subject, no CA behind it."""
    now = _dt.datetime.now(_dt.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    hash_ = None if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)) else hashes.SHA256()
    return (x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hash_))


#: what :func:`diagnose` can say of a certificate
VERDICTS = {
    "ok": "chains to a trusted CA and names the host",
    "untrusted": "no trusted CA signed it (self-signed, like snakeoil, or another CA)",
    "hostname": "a trusted CA signed it, but for other names than the host's",
    "expired": "outside its validity period (expired or not yet valid)",
}


def _roots(ca_certs: Any) -> list[x509.Certificate]:
    if isinstance(ca_certs, (x509.Certificate, str, bytes, Path)):
        ca_certs = [ca_certs]
    return [load_certificate(c) for c in ca_certs]


def diagnose(cert: Any, ca_certs: Any, hostname: str) -> Result:
    """Is ``cert`` acceptable for ``hostname`` to a client that trusts ``ca_certs``?

    ``details["verdict"]`` is one of :data:`VERDICTS`; the reason names what failed first,
    checked in this order: validity period, trust (the signature chain), host name.
    """
    c = load_certificate(cert)
    roots = _roots(ca_certs)
    now = _dt.datetime.now(_dt.timezone.utc)
    s = describe(c)
    if not (c.not_valid_before_utc <= now <= c.not_valid_after_utc):
        chained = verify_chain(c, roots)  # fails on the time too; say which way
        return Result(False, f"{s.subject}: valid {s.not_before:%Y-%m-%d} to {s.not_after:%Y-%m-%d}, "
                      "not now", {"verdict": "expired", "summary": s, "chain": chained.reason})
    trusted = verify_chain(c, roots)
    if not trusted.ok:
        who = "itself (self-signed)" if s.self_signed else s.issuer
        return Result(False, f"{s.subject} was signed by {who}, which the client does not trust",
                      {"verdict": "untrusted", "summary": s, "chain": trusted.reason})
    named = verify_chain(c, roots, hostname)
    if not named.ok:
        names = ", ".join(s.dns_names) or "(no DNS names)"
        return Result(False, f"{s.subject} is trusted but names {names}, not {hostname}",
                      {"verdict": "hostname", "summary": s, "chain": named.reason})
    return Result(True, f"{s.subject} chains to a trusted CA and is valid for {hostname}",
                  {"verdict": "ok", "summary": s, "chain": named.reason})


def three_certificates(ca: Any, hostname: str = "mail.example.com", other: str = "mail.isp.example.net",
                       seed: int | None = None) -> dict[str, x509.Certificate]:
    """Three certificates labelled ``A``, ``B``, ``C`` in a random order: one the CA issued for
    ``hostname``, one the CA issued for ``other``, one self-signed for ``hostname`` (snakeoil).

    ``ca`` is a :class:`labkit.core.pki.CA`. Which is which is for the reader to find out
    (:func:`describe`, :func:`diagnose`); exercise 04.2 checks the answer.
    """
    made = [ca.sign(make_csr(make_key("ec"), hostname)),
            ca.sign(make_csr(make_key("ec"), other)),
            self_signed(make_key("ec"), hostname)]
    random.Random(seed).shuffle(made)
    return dict(zip("ABC", made))


def altered(cert: Any, old: bytes, new: bytes) -> x509.Certificate:
    """A forgery for the demonstration: ``cert`` with its first ``old`` bytes replaced by
    ``new`` (same length) inside the signed part, the CA's signature left as it was.

    It still parses, and :func:`describe` shows the new name, but its signature no longer
    matches: that is what makes a certificate hard to forge (偽造できない, as the memo says).
    """
    if len(old) != len(new):
        raise ConfigError("new", f"must have the length of old ({len(old)} bytes), not {len(new)}",
                          "DER lengths are part of the signed bytes; keep them the same")
    c = load_certificate(cert)
    der = c.public_bytes(serialization.Encoding.DER)
    tbs_at = der.find(c.tbs_certificate_bytes)
    i = der.find(old, tbs_at)
    if i < 0 or i + len(old) > tbs_at + len(c.tbs_certificate_bytes):
        raise ConfigError("old", f"{old!r} is not in the signed part of the certificate")
    return x509.load_der_x509_certificate(der[:i] + new + der[i + len(old):])


def write_csr(folder: str | Path, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` (0600) and ``NAME.csr`` for ``name`` into ``folder``: what
    ``openssl req -new -newkey ec ... -addext subjectAltName=DNS:NAME`` makes, for machines
    without openssl. Returns (key path, CSR path)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = make_key("ec")
    key_path = write_key(folder / f"{name}.key", key)
    csr_path = write_atomic(folder / f"{name}.csr",
                            make_csr(key, name, [name]).public_bytes(serialization.Encoding.PEM))
    return key_path, csr_path


# -- pictures -----------------------------------------------------------------------------------

def csr_flow_diagram(host: str = "mail.example.com", ca_name: str = "Mail Lab CA") -> Diagram:
    """The memo's story as a sequence diagram: key pair, CSR, the CA's signature, the
    certificate on the server, and a client that checks it with the CA's public key."""
    h, c = mermaid_escape(host), mermaid_escape(ca_name)
    return Diagram("\n".join([
        "sequenceDiagram",
        f"    participant H as {h} (admin)",
        f"    participant CA as {c}",
        "    participant C as a client (MUA or MTA)",
        "    Note over H: make a key pair: the private key never leaves the host",
        "    H->>CA: CSR = public key + names (CN, subjectAltName), signed with the private key",
        "    Note over CA: check the CSR's signature (and, for a real CA, that you own the name)",
        "    CA-->>H: certificate = names + public key + validity, signed with the CA's private key",
        "    Note over H: install key and certificate (smtpd_tls_cert_file, smtpd_tls_key_file)",
        "    C->>H: connect, STARTTLS (or TLS at once on 465)",
        "    H-->>C: the certificate (and the chain up to the CA)",
        f"    Note over C: verify the CA's signature with the CA's public key (trusted in advance), the validity dates, and that the names include {h}",
    ]))


def chain_diagram(certs: Iterable[Any], trusted: Iterable[Any] = ()) -> Diagram:
    """A chain as a flowchart, host certificate first: each box says who it is; each arrow
    says "signed by". A certificate in ``trusted`` is marked as a trust anchor."""
    chain = [load_certificate(c) for c in certs]
    anchors = {fingerprint(load_certificate(t)) for t in trusted}
    lines = ["flowchart LR"]
    for i, c in enumerate(chain):
        s = describe(c)
        label = mermaid_escape(s.subject, 60) + "<br/>" + mermaid_escape(s.key_type, 30)
        if s.fingerprint in anchors:
            label += "<br/>(trusted: in the CA file)"
        lines.append(f'    n{i}["{label}"]')
    for i, c in enumerate(chain):
        if c.issuer == c.subject:
            lines.append(f"    n{i} -->|signed by itself| n{i}")
        elif i + 1 < len(chain):
            lines.append(f"    n{i} -->|signed by| n{i + 1}")
        else:
            lines.append(f'    x{i}["{mermaid_escape(c.issuer.rfc4514_string(), 60)}<br/>(not given)"]')
            lines.append(f"    n{i} -->|signed by| x{i}")
    return Diagram("\n".join(lines))


# -- the memo's port table ------------------------------------------------------------------------

@dataclass(frozen=True)
class PortRow:
    """One row of the memo's table (from Wikipedia): a protocol over TLS and the original one."""

    protocol: str  #: the protocol with TLS from the first byte (implicit TLS)
    tls_port: int
    plain: str  #: the original protocol
    plain_port: int
    memo: str = ""  #: the memo's remark (備考)
    today: str = ""  #: what holds now, with its source


PORTS: tuple[PortRow, ...] = (
    PortRow("HTTPS", 443, "HTTP", 80),
    PortRow("SMTPS", 465, "SMTP", 25,
            "ユーザーが設定するのは非推奨らしい (said to be not recommended for users)",
            "465 is now 'submissions': mail submission with implicit TLS, preferred by RFC 8314 (2018); "
            "it does not replace 25, which stays MTA to MTA"),
    PortRow("LDAPS", 636, "LDAP", 389),
    PortRow("FTPS (data)", 989, "FTP (data)", 20),
    PortRow("FTPS (control)", 990, "FTP (control)", 21),
    PortRow("IMAPS", 993, "IMAP", 143, "", "RFC 8314 prefers 993 to STARTTLS on 143"),
    PortRow("POP3S", 995, "POP3", 110, "", "RFC 8314 prefers 995 to STLS on 110"),
)


@dataclass(frozen=True)
class MailPort:
    """A mail port: who uses it, and where TLS starts on it."""

    port: int
    service: str
    tls: str  #: ``implicit`` or ``starttls``
    who: str
    source: str


MAIL_PORTS: tuple[MailPort, ...] = (
    MailPort(25, "smtp (relay)", "starttls", "MTA to MTA; STARTTLS if both offer it (opportunistic)", "RFC 5321, RFC 3207"),
    MailPort(587, "submission", "starttls", "MUA (or your Postfix) to its MSA: STARTTLS, then AUTH", "RFC 6409, RFC 3207"),
    MailPort(465, "submissions", "implicit", "MUA to its MSA: TLS from the first byte, then AUTH", "RFC 8314"),
    MailPort(143, "imap", "starttls", "MUA reads mail: STARTTLS, then LOGIN", "RFC 9051"),
    MailPort(993, "imaps", "implicit", "MUA reads mail over TLS from the first byte", "RFC 8314"),
    MailPort(110, "pop3", "starttls", "MUA fetches mail: STLS, then USER/PASS", "RFC 2595"),
    MailPort(995, "pop3s", "implicit", "MUA fetches mail over TLS from the first byte", "RFC 8314"),
)


def port_table() -> Table:
    """The memo's table of TLS ports (its source is Wikipedia), with a column on what holds today."""
    return Table([{N_("with TLS"): p.protocol, N_("port"): p.tls_port, N_("original"): p.plain,
                   N_("its port"): p.plain_port,
                   N_("the memo's remark"): p.memo, N_("today"): p.today} for p in PORTS])


def mail_port_table(lab: Lab | None = None) -> Table:
    """The mail ports and where TLS starts on each. Given a running ``lab``, a column says
    which lab service plays the port, at which address and port."""
    played: dict[int, list[str]] = {}
    if lab is not None:
        for s in lab.services.values():
            if s.protocol in ("smtp", "smtps"):
                played.setdefault(s.standard_port, []).append(f"{s.role} {s.host}:{s.port}")
    rows = []
    for m in MAIL_PORTS:
        row = {N_("port"): m.port, N_("service"): m.service,
               N_("TLS starts"): "at once (implicit TLS)" if m.tls == "implicit" else "after a command (STARTTLS)",
               N_("used by"): m.who, N_("source"): m.source}
        if lab is not None:
            row[N_("in the lab")] = ", ".join(played.get(m.port, [])) or "-"
        rows.append(row)
    return Table(rows)


def tls_start(port: int) -> str:
    """Where TLS starts on a standard port: ``"implicit"`` (the first byte is TLS: 465, 993,
    995, 443...), ``"starttls"`` (plain first, then a command switches: 25, 587, 143, 110,
    389, 21) or ``"none"`` (no TLS known for that port)."""
    for m in MAIL_PORTS:
        if m.port == port:
            return m.tls
    if port in {p.tls_port for p in PORTS}:
        return "implicit"
    if port in (389, 21):
        return "starttls"
    return "none"


def _tls_started(line: Any) -> bool:
    return line.direction == "*" and line.text.startswith("TLS established")


def clear_lines(transcript: Any) -> list[Any]:
    """The lines of a recorded dialogue that crossed the wire before TLS began: in clear.

    Empty for implicit TLS (port 465: TLS from the first byte). With STARTTLS (587) it holds
    the greeting, the first EHLO and its reply, and the STARTTLS command with its ``220``.
    Accepts a Transcript or anything with ``.transcript`` (RawSMTP, SendResult).
    """
    t = getattr(transcript, "transcript", transcript)
    out = []
    for line in t:
        if _tls_started(line):
            return out
        if line.direction in ("C", "S"):
            out.append(line)
    return out  # TLS never started: every line was in clear


def tls_start_table(transcripts: Mapping[str, Any], until: str = "AUTH") -> Table:
    """Dialogues side by side, one column each, up to the first client line starting with
    ``until``: the row where TLS starts reads ``*** TLS starts ***`` in each column."""
    columns: dict[str, list[str]] = {}
    for title, t in transcripts.items():
        t = getattr(t, "transcript", t)
        cells = []
        for line in t:
            if _tls_started(line):
                cells.append("*** TLS starts ***")
            elif line.direction in ("C", "S"):
                cells.append(f"{line.direction}: {line.text}")
                if line.direction == "C" and line.text.upper().startswith(until.upper()):
                    break
        columns[title] = cells
    height = max((len(c) for c in columns.values()), default=0)
    rows = [{"#": i + 1, **{title: (cells[i] if i < len(cells) else "") for title, cells in columns.items()}}
            for i in range(height)]
    return Table(rows, ["#", *columns])


def summarize(results: Mapping[str, Result]) -> Table:
    """Verdicts as a table: one row per label (``A``: ``ok`` - reason)."""
    return Table([{N_("certificate"): k, N_("verdict"): r.details.get("verdict", "ok" if r.ok else "fail"),
                   N_("why"): r.reason} for k, r in results.items()], [N_("certificate"), N_("verdict"), N_("why")])
