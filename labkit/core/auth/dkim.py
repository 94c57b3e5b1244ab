"""DKIM (RFC 6376, RFC 8463): keys, the key record, signing, verifying, and a signature's anatomy.

- :class:`DKIMKey` — a signing key (RSA 1024 or 2048, or Ed25519), its ``selector._domainkey``
  TXT record, and its private key written 0600;
- :func:`sign` — add a ``DKIM-Signature`` header with dkimpy;
- :func:`verify` — check every signature of a message with dkimpy against the lab DNS, each
  with the reason dkimpy's bare ``True``/``False`` leaves out (body hash mismatch, signature
  mismatch, no key, a garbled key, DNS down, a malformed header);
- :func:`anatomy` — what each tag of a signature means (``h=``, ``bh=``, ``b=``, ``c=`` ...);
- :func:`check_key_record` — is the key published, and is it well formed?

The memo says DKIM sends From, Date and Subject "as a cipher only the public key decrypts"
(ERRATA.md #5). It does not: the headers travel in clear. ``h=`` lists which headers are
signed, ``bh=`` is a hash of the body, ``b=`` a signature over those headers and ``bh=``;
anyone can read them, and a change to any of them makes the signature fail.

It also suggests 1024-bit keys "to keep the public key short" (ERRATA.md #9): RFC 8301 asks
for at least 1024 bits and recommends 2048. A 2048-bit record is about 410 characters, longer
than one 255-octet TXT string: :class:`labkit.core.dns.Zone` publishes it as several strings
(:func:`labkit.core.dns.split_txt`), which the verifier joins back.
"""
from __future__ import annotations

import base64
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import dns.resolver
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ...errors import ConfigError, ParseError
from ...files import write_secret
from .. import pki
from ..dns import normalize_name
from ...i18n import N_
from .results import AuthResult, lookup_txt

#: The key kinds labkit makes for DKIM, and the signing algorithm of each.
KEY_KINDS = {"rsa1024": "rsa-sha256", "rsa2048": "rsa-sha256", "ed25519": "ed25519-sha256"}

#: What each tag of a DKIM-Signature says (RFC 6376 §3.5, RFC 8463).
SIGNATURE_TAGS = {
    "v": "version of DKIM: always 1",
    "a": "algorithm: rsa-sha256 (RFC 6376) or ed25519-sha256 (RFC 8463)",
    "c": "canonicalisation header/body: simple keeps bytes as they are, relaxed tolerates "
         "changes in whitespace and header-name case made on the way",
    "d": "the signing domain: whose key signed, and whose name DMARC compares with From",
    "s": "the selector: the key is published at SELECTOR._domainkey.DOMAIN",
    "i": "the identity (user or agent) the signer vouches for, within d=",
    "q": "how to find the key: dns/txt",
    "t": "when it was signed (seconds since 1970)",
    "x": "when the signature expires",
    "l": "how many octets of the body are signed (dangerous: text may be added after them)",
    "h": "the header fields that are signed, in order; others may change freely",
    "bh": "the hash of the (canonicalised) body, base64",
    "b": "the signature over the signed headers and this header (with b= empty), base64",
    "z": "copies of the signed headers, for debugging",
}

#: What each tag of a key record says (RFC 6376 §3.6.1).
KEY_TAGS = {
    "v": "version: DKIM1",
    "k": "key type: rsa (the default) or ed25519",
    "p": "the public key, base64 (empty means revoked)",
    "h": "hash algorithms allowed",
    "s": "service types: email or *",
    "t": "flags: y = testing, s = i= must equal d=",
    "n": "notes for people",
}


class DKIMResult(AuthResult):
    """DKIM for a whole message (``method == "dkim"``): ``pass`` when one signature passes.

    ``details["signatures"]`` holds one :class:`DKIMSignatureResult` per signature, top first.
    """

    METHOD = "dkim"

    @property
    def signatures(self) -> list["DKIMSignatureResult"]:
        return list(self.details.get("signatures", []))

    def passing_domains(self) -> list[str]:
        """The ``d=`` domains of the signatures that verified (what DMARC aligns with From)."""
        return [s.details["domain"] for s in self.signatures if s.ok and s.details.get("domain")]


class DKIMSignatureResult(AuthResult):
    """One signature: ``details`` has ``index``, ``domain`` (d=), ``selector`` (s=), ``algorithm``
    (a=), ``signed_headers`` (h=), ``key_name``, ``key_bits``, ``key_strings`` and ``log``
    (what dkimpy said)."""

    METHOD = "dkim"


class DKIMKeyCheck(AuthResult):
    """The check of a published key record (``method == "dkim-record"``)."""

    METHOD = "dkim-record"


# --------------------------------------------------------------------------- keys


@dataclass
class DKIMKey:
    """A DKIM signing key for ``domain`` under ``selector``.

    >>> key = DKIMKey.generate("example.com", "mail", "ed25519")
    >>> key.record_name
    'mail._domainkey.example.com'
    >>> key.record.startswith("v=DKIM1; k=ed25519; p=")
    True
    """

    domain: str
    selector: str
    private_key: Any = field(repr=False)

    def __post_init__(self) -> None:
        self.domain = normalize_name(self.domain, "dkim domain")
        if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*", self.selector or ""):
            raise ConfigError("dkim selector", f"{self.selector!r} is not a DNS label",
                              "use letters, digits and hyphens, e.g. 'mail' or '2024a'")
        if isinstance(self.private_key, rsa.RSAPrivateKey):
            if self.private_key.key_size < 1024:
                raise ConfigError("dkim key", f"RSA key of {self.private_key.key_size} bits is too short",
                                  "RFC 8301: at least 1024 bits, 2048 recommended")
        elif not isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            raise ConfigError("dkim key", f"{type(self.private_key).__name__} cannot sign DKIM",
                              "use an RSA (1024 or 2048 bits) or Ed25519 key")

    @classmethod
    def generate(cls, domain: str, selector: str = "mail", kind: str = "rsa2048") -> "DKIMKey":
        """A new key: ``rsa2048`` (recommended, RFC 8301), ``rsa1024`` (the memo's) or ``ed25519``."""
        if kind not in KEY_KINDS:
            raise ConfigError("dkim key kind", f"unknown kind {kind!r}", f"choose one of {', '.join(KEY_KINDS)}")
        return cls(domain, selector, pki.make_key(kind))

    @classmethod
    def load(cls, path: str | Path, domain: str, selector: str) -> "DKIMKey":
        """Read a private key written by :meth:`write` (or by ``opendkim-genkey``)."""
        return cls(domain, selector, serialization.load_pem_private_key(Path(path).read_bytes(), password=None))

    @property
    def kind(self) -> str:
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            return "ed25519"
        return f"rsa{self.private_key.key_size}"

    @property
    def key_type(self) -> str:
        """The ``k=`` of the record: ``rsa`` or ``ed25519``."""
        return "ed25519" if self.kind == "ed25519" else "rsa"

    @property
    def algorithm(self) -> str:
        """The ``a=`` of signatures made with this key."""
        return "ed25519-sha256" if self.kind == "ed25519" else "rsa-sha256"

    @property
    def record_name(self) -> str:
        """Where the public key is published: ``SELECTOR._domainkey.DOMAIN``."""
        return f"{self.selector}._domainkey.{self.domain}"

    def public_key_b64(self) -> str:
        """The ``p=`` value: the DER SubjectPublicKeyInfo (RSA) or the raw 32 octets (Ed25519), base64."""
        public = self.private_key.public_key()
        if self.kind == "ed25519":
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            raw = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(raw).decode("ascii")

    @property
    def record(self) -> str:
        """The TXT record value, whole (the zone splits it into 255-octet strings when served)."""
        return key_record(self.public_key_b64(), key_type=self.key_type)

    def publish(self, zone) -> None:
        """Publish the key record in a :class:`labkit.core.dns.Zone` (replacing any record at that name)."""
        zone.replace(self.record_name, "TXT", self.record)

    def private_pem(self) -> bytes:
        """The private key as PEM: PKCS#1 for RSA (what opendkim-genkey writes and dkimpy reads),
        PKCS#8 for Ed25519 (what OpenDKIM reads). A secret: never print it."""
        fmt = (serialization.PrivateFormat.PKCS8 if self.kind == "ed25519"
               else serialization.PrivateFormat.TraditionalOpenSSL)
        return self.private_key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())

    def write(self, path: str | Path) -> Path:
        """Write the private key to ``path``, mode 0600 from the first byte."""
        return write_secret(path, self.private_pem())

    def _dkimpy_private(self) -> bytes:
        if self.kind == "ed25519":  # dkimpy takes the 32-octet seed, base64
            raw = self.private_key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                                 serialization.NoEncryption())
            return base64.b64encode(raw)
        return self.private_pem()


def key_record(public_key_b64: str, *, key_type: str = "rsa", testing: bool = False) -> str:
    """A DKIM key record: ``v=DKIM1; k=rsa; p=...`` (``t=y`` when ``testing``)."""
    if key_type not in ("rsa", "ed25519"):
        raise ConfigError("dkim key type", f"{key_type!r} is not rsa or ed25519")
    tags = ["v=DKIM1", f"k={key_type}"]
    if testing:
        tags.append("t=y")
    tags.append(f"p={public_key_b64}")
    return "; ".join(tags)


def parse_tags(text: str | bytes) -> dict[str, str]:
    """A DKIM tag=value list (RFC 6376 §3.2) as a dict; raises ``ValueError`` saying what is wrong."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    tags: dict[str, str] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        if "=" not in part:
            raise ParseError(f"{part.strip()!r} is not tag=value")
        name, value = part.split("=", 1)
        name = name.strip()
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise ParseError(f"{name!r} is not a tag name")
        if name in tags:
            raise ParseError(f"tag {name}= appears twice")
        tags[name] = re.sub(r"\s+", "" if name in ("b", "bh", "p") else " ", value).strip()
    return tags


def check_key_record(domain: str, selector: str, resolver: dns.resolver.Resolver) -> DKIMKeyCheck:
    """Is a usable key published at ``SELECTOR._domainkey.DOMAIN``? (like ``opendkim-testkey``)"""
    # dkimpy loads on first use: importing labkit.core.auth stays quick
    from dkim import KeyFormatError, evaluate_pk

    name = f"{selector}._domainkey.{normalize_name(domain, 'domain')}"
    found = lookup_txt(resolver, name)
    details: dict[str, Any] = {"name": name, "outcome": found.outcome, "strings": found.strings}
    if found.temporary:
        return DKIMKeyCheck.make("temperror", N_('the key at {name} could not be read: DNS said {outcome}').format(
            name=name, outcome=found.outcome), **details)
    if not found.found:
        return DKIMKeyCheck.make("permerror", N_('no key is published at {name} ({outcome})').format(
            name=name, outcome=found.outcome), **details)
    if len(found.records) > 1:
        return DKIMKeyCheck.make("permerror", N_('{name} holds {len} TXT records; publish one key per selector').format(
            name=name, len=len(found.records)),
                                 **details)
    text = found.records[0]
    details["record"] = text.decode("utf-8", "replace")
    try:
        _pk, bits, ktag, _tlsrpt = evaluate_pk(name.encode(), text)
    except KeyFormatError as exc:
        return DKIMKeyCheck.make("permerror", N_('the key record at {name} is not usable: {plain}').format(
            name=name, plain=_plain(exc)), **details)
    except Exception as exc:  # noqa: BLE001 - garbled base64 and the like
        return DKIMKeyCheck.make("permerror", N_('the key record at {name} is garbled: {name2}: {exc}').format(
            name=name, name2=type(exc).__name__, exc=exc),
                                 **details)
    details.update(key_type=ktag.decode(), key_bits=bits)
    if ktag == b"rsa" and bits < 1024:
        return DKIMKeyCheck.make("permerror", N_('the RSA key at {name} has {bits} '
                                                 'bits; RFC 8301 requires 1024 or more').format(name=name, bits=bits),
                                 **details)
    split = f", published as {found.strings[0]} strings" if found.strings and found.strings[0] > 1 else ""
    return DKIMKeyCheck.make("pass", N_('a {bits}-bit {decode} key is published at {name}{split}').format(
        bits=bits, decode=ktag.decode(), name=name, split=split), **details)


# --------------------------------------------------------------------------- signing


def sign(message: bytes, key: DKIMKey, *, headers: Iterable[str] | None = None,
         canonicalize: tuple[str, str] = ("relaxed", "relaxed"), identity: str | None = None) -> bytes:
    """The message with a ``DKIM-Signature`` header added on top (dkimpy).

    ``headers`` are the fields to sign (``From`` is required); the default is dkimpy's list
    (From, To, Subject, Date, Message-ID and other fields that matter). ``canonicalize`` is
    (header, body): ``relaxed`` or ``simple``.
    """
    # dkimpy loads on first use: importing labkit.core.auth stays quick
    import dkim

    for part in canonicalize:
        if part not in ("relaxed", "simple"):
            raise ConfigError("dkim canonicalize", f"{part!r} is not relaxed or simple")
    include = None if headers is None else [h.lower().encode() for h in headers]
    if include is not None and b"from" not in include:
        raise ConfigError("dkim headers", "From is not among the signed headers",
                          "RFC 6376 §5.4: the From header field MUST be signed")
    signer = dkim.DKIM(message, signature_algorithm=key.algorithm.encode(), logger=_quiet_logger())
    try:
        header = signer.sign(key.selector.encode(), key.domain.encode(), key._dkimpy_private(),
                             identity=identity.encode() if identity else None,
                             canonicalize=tuple(c.encode() for c in canonicalize), include_headers=include)
    except dkim.DKIMException as exc:
        raise ConfigError("dkim sign", str(exc), "check the message has its headers and the key its domain") from None
    return header + message


def _quiet_logger() -> logging.Logger:
    logger = logging.Logger("labkit.core.auth.dkim", logging.CRITICAL)
    logger.addHandler(logging.NullHandler())
    return logger


# --------------------------------------------------------------------------- verifying


def _plain(error: object) -> str:
    """dkimpy's words without Python's bytes notation: ``missing b's'=`` -> ``missing s=``."""
    return re.sub(r"""b'([^']*)'""", r"\1", str(error))


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((record.levelno, record.getMessage()))


def _signature_headers(message: bytes) -> list[bytes]:
    # dkimpy loads on first use: importing labkit.core.auth stays quick
    from dkim import rfc822_parse

    headers, _body = rfc822_parse(message)
    return [value for name, value in headers if name.lower() == b"dkim-signature"]


def verify(message: bytes, *, resolver: dns.resolver.Resolver, min_key_bits: int = 1024) -> DKIMResult:
    """Verify every DKIM signature of ``message`` with dkimpy, asking ``resolver`` for the keys.

    Each signature gets ``pass``; ``fail`` with the reason (``body hash mismatch``: the body
    changed; ``signature mismatch``: a signed header changed, or another key signed);
    ``permerror`` (malformed header, no key, a garbled key, a key too short) or ``temperror``
    (DNS did not answer). The message passes when one signature passes. A message with no
    signature is ``none``; a message dkimpy cannot even parse is ``permerror``.
    """
    try:
        found = _signature_headers(message)
    except Exception as exc:  # noqa: BLE001 - a malformed message is a result, not a crash
        return DKIMResult.make("permerror", N_('the message cannot be read as RFC 5322 headers and body: {exc}').format(
            exc=exc),
                               signatures=[])
    if not found:
        return DKIMResult.make("none", N_('the message carries no DKIM-Signature header'), signatures=[])
    signatures = [_verify_one(message, i, resolver, min_key_bits) for i in range(len(found))]
    best = next((s for s in signatures if s.ok), None)
    if best is not None:
        return DKIMResult.make("pass", best.reason, signatures=signatures)
    for word in ("temperror", "fail", "permerror", "neutral"):
        first = next((s for s in signatures if s.result == word), None)
        if first is not None:
            return DKIMResult.make(word, first.reason, signatures=signatures)
    return DKIMResult.make("permerror", signatures[0].reason, signatures=signatures)


def _verify_one(message: bytes, index: int, resolver: dns.resolver.Resolver, min_key_bits: int) -> DKIMSignatureResult:
    # dkimpy loads on first use: importing labkit.core.auth stays quick
    import dkim

    capture = _Capture()
    logger = logging.Logger("labkit.core.auth.dkim.verify", logging.DEBUG)
    logger.addHandler(capture)
    notes: dict[str, Any] = {}

    def get_key(name: bytes, timeout: float = 5) -> bytes | None:
        qname = name.decode("ascii", "replace").rstrip(".")
        notes["key_name"] = qname
        answer = lookup_txt(resolver, qname)
        notes["key_outcome"] = answer.outcome
        notes["key_strings"] = answer.strings[0] if answer.strings else 0
        if answer.temporary:
            notes["temporary"] = True
            raise dkim.DnsTimeoutError(f"DNS said {answer.outcome}")
        return answer.records[0] if answer.records else None

    details: dict[str, Any] = {"index": index}
    verifier = dkim.DKIM(message, logger=logger, minkey=min_key_bits, timeout=resolver.lifetime)
    result, reason = "permerror", ""
    try:
        ok = verifier.verify(idx=index, dnsfunc=get_key)
        result = "pass" if ok else ""
    except dkim.ValidationError as exc:
        text = _plain(exc)
        if text.startswith("body hash mismatch"):
            result, reason = "fail", ("body hash mismatch: the body is not the one that was signed "
                                      "(bh= does not match the hash of the body as received)")
        else:
            result, reason = "permerror", f"malformed DKIM-Signature: {text}"
    except dkim.KeyFormatError as exc:
        result, reason = "permerror", f"the key cannot be used: {_plain(exc)}"
    except dkim.DKIMException as exc:
        text = str(exc)
        if text.startswith("b'") or text.startswith('b"'):  # dkimpy names the bad tag=value part
            text = f"{text[2:-1].strip()!r} is not a tag=value pair"
        else:
            text = _plain(exc)
        result, reason = "permerror", f"malformed DKIM-Signature: {text}"
    except Exception as exc:  # noqa: BLE001 - dkimpy raises plain errors on some garbage
        result, reason = "permerror", f"malformed DKIM-Signature ({type(exc).__name__}: {exc})"
    fields = getattr(verifier, "signature_fields", {}) or {}

    def tag(name: bytes) -> str:
        value = fields.get(name, b"")
        return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)

    details.update(domain=tag(b"d").lower(), selector=tag(b"s"), algorithm=tag(b"a"),
                   canonicalization=tag(b"c") or "simple/simple",
                   signed_headers=[h.strip().lower() for h in tag(b"h").split(":") if h.strip()],
                   key_name=notes.get("key_name", ""), key_outcome=notes.get("key_outcome", ""),
                   key_strings=notes.get("key_strings", 0), key_bits=getattr(verifier, "keysize", None),
                   log=[text for _level, text in capture.lines if not text.startswith(("sig:", "signed for"))])
    errors = [_plain(text) for level, text in capture.lines if level >= logging.ERROR]
    where = f"{details['selector']}._domainkey.{details['domain']}" if details["domain"] else "the key"
    if result == "pass":
        reason = (f"the signature of {details['domain']} (selector {details['selector']}, "
                  f"{details['algorithm']}) verifies: the signed headers and the body are as signed")
    elif result == "":
        if notes.get("temporary"):
            result = "temperror"
            reason = f"the key at {where} could not be read: DNS said {notes.get('key_outcome')}; try again later"
        elif errors:
            result = "permerror"
            text = errors[-1]
            if text.startswith("missing public key"):
                reason = f"no key is published at {where} ({notes.get('key_outcome', 'no answer')})"
            else:
                reason = f"the key at {where} cannot be used: {text}"
        else:
            result = "fail"
            reason = ("signature mismatch: b= does not verify with the key at "
                      f"{where}; a signed header ({', '.join(dict.fromkeys(details['signed_headers']))}) "
                      "was changed after signing, or another key signed it")
    return DKIMSignatureResult.make(result, reason, **details)


# --------------------------------------------------------------------------- anatomy


def anatomy(message_or_header: bytes | str, index: int = 0) -> list[tuple[str, str, str]]:
    """A signature taken apart: ``[(tag, value, what it means), ...]`` in the header's order.

    Give a whole message (the ``index``-th signature is used) or one ``DKIM-Signature`` value.
    Raises ``ValueError`` if there is no signature or it is not a tag=value list.
    """
    data = message_or_header.encode() if isinstance(message_or_header, str) else message_or_header
    if re.match(rb"(?i)\s*(v|a|d|s|b|bh|h|c)\s*=", data):
        value = data
    else:
        sigs = _signature_headers(data)
        if len(sigs) <= index:
            raise ParseError(f"the message has {len(sigs)} DKIM-Signature header(s); no signature #{index}")
        value = sigs[index]
    tags = parse_tags(value)
    return [(name, text, SIGNATURE_TAGS.get(name, "an unknown tag (ignored by verifiers)"))
            for name, text in tags.items()]
