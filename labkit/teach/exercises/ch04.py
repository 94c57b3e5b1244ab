"""Chapter 04 exercises: keys, signatures and certificates."""
from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization

from ...core.pki import load_cert, verify_chain
from ...errors import ConfigError
from ...i18n import N_
from ...lab.lab import Lab
from ...result import Result
from ..tlsview import VERDICTS, describe, diagnose, fingerprint, load_certificate, tls_start, verify
from . import exercise


def _lab_ca(lab: Lab):
    return load_cert(lab.ca_path)


@exercise("04.1")
def _own_certificate(lab: Lab, certificate: Any = None, hostname: str = "mail.example.com") -> Result:
    """A certificate for mail.example.com (with a subjectAltName) that the lab CA signed from
    the learner's own CSR: it must verify against lab.ca_path for that name."""
    if certificate is None:
        return Result(False, N_('pass certificate= (the Certificate object, its PEM, or the path of the .crt file)'))
    try:
        cert = load_certificate(certificate)
    except ConfigError as e:
        return Result(False, str(e))
    s = describe(cert)
    if s.is_ca:
        return Result(False, N_('{subject} is a CA certificate; pass the host certificate the CA issued').format(
            subject=s.subject))
    if hostname not in s.dns_names:
        return Result(False, N_('{subject} has subjectAltName {value}; clients check that list, not the CN: put '
                                'DNS:{hostname} in the CSR').format(
                                    subject=s.subject, value=', '.join(s.dns_names) or '(none)', hostname=hostname))
    own = lab.dir / "tls" / f"{hostname}.crt"
    if own.exists() and fingerprint(load_cert(own).public_key()) == fingerprint(cert.public_key()):
        return Result(False, N_("that is the lab's own certificate for the host; make your own key and CSR and have "
                                'the lab CA sign it'))
    verdict = verify_chain(cert, [_lab_ca(lab)], hostname)
    if not verdict.ok:
        return Result(False, N_('it does not verify against the lab CA ({ca_path}): {reason}; sign the CSR with '
                                "pki.CA.load(lab.dir / 'tls')").format(ca_path=lab.ca_path, reason=verdict.reason))
    return Result(True, N_('right: {reason}').format(reason=verdict.reason), {"summary": s})


@exercise("04.2")
def _which_fails(lab: Lab, certificates: dict | None = None, answer: dict | None = None,
                 hostname: str = "mail.example.com") -> Result:
    """For each labelled certificate, the verdict a client reaches for ``hostname`` when it
    trusts only the lab CA: ``ok``, ``untrusted``, ``hostname`` or ``expired``."""
    if not certificates:
        return Result(False, N_('pass certificates= (the dict of A, B, C from tlsview.three_certificates)'))
    if not isinstance(answer, dict):
        return Result(False, N_("pass answer= a dict from label to verdict, e.g. {'A': 'ok', 'B': 'untrusted', 'C': "
                                "'hostname'}"))
    unknown = sorted({str(v) for v in answer.values()} - set(VERDICTS))
    if unknown:
        return Result(False, N_('unknown verdict(s) {join}; choose from {join2}').format(
            join=', '.join(unknown), join2=', '.join(VERDICTS)))
    missing = sorted(set(certificates) - set(answer))
    if missing:
        return Result(False, f"no verdict for {', '.join(missing)}: for each certificate, say 'ok', 'untrusted' "
                      "or 'hostname' (tlsview.describe shows its issuer and names)")
    ca = _lab_ca(lab)
    truth = {label: diagnose(c, [ca], hostname) for label, c in certificates.items()}
    wrong = sorted(label for label in certificates if answer[label] != truth[label].details["verdict"])
    if wrong:
        return Result(False, N_("look again at {join}: compare its issuer with the lab CA's subject, then its "
                                'subjectAltName with the host name (tlsview.describe)').format(join=', '.join(wrong)))
    return Result(True, N_('right: ') + "; ".join(f"{k}: {r.details['verdict']}" for k, r in sorted(truth.items())),
                  {"verdicts": {k: r.details["verdict"] for k, r in truth.items()}})


@exercise("04.3")
def _submission_ports(lab: Lab, implicit_tls: Any = None, starttls: Any = None) -> Result:
    """The standard ports of mail submission: with implicit TLS (465) and with STARTTLS (587)."""
    problems = []
    for name, value, want in (("implicit_tls", implicit_tls, "implicit"), ("starttls", starttls, "starttls")):
        try:
            port = int(value)
        except (TypeError, ValueError):
            problems.append(f"{name}={value!r} is not a port number")
            continue
        if port not in (25, 465, 587):
            problems.append(f"{name}={port} is not a mail submission port (look at the mail port table)")
        elif port == 25:
            problems.append(f"{name}=25 is MTA-to-MTA relay, not submission")
        elif tls_start(port) != want:
            problems.append(f"{name}={port}: TLS starts {'at once' if tls_start(port) == 'implicit' else 'after STARTTLS'} there")
    if problems:
        return Result(False, "; ".join(problems))
    if lab is not None and lab.running:
        played = {s.standard_port: s.protocol for s in lab.services.values() if s.role.startswith("submission")}
        if played.get(int(implicit_tls)) != "smtps":
            return Result(False, N_('the lab disagrees: its implicit-TLS submission service plays another port'))
    return Result(True, N_('right: {implicit_tls} is submissions (implicit TLS, RFC 8314), {starttls} is '
                           'submission with STARTTLS (RFC 6409)').format(implicit_tls=implicit_tls, starttls=starttls))


@exercise("04.4")
def _signature(lab: Lab, public_key: Any = None, message: bytes | str | None = None,
               signature: bytes | None = None) -> Result:
    """A signature over ``message`` that verifies with ``public_key``; the message must name
    mail.example.com. Pass the public key only: the private key stays with its owner."""
    if public_key is None or message is None or signature is None:
        return Result(False, N_('pass public_key=, message= and signature='))
    if hasattr(public_key, "private_bytes"):
        return Result(False, N_('that is a private key: never hand it to anyone; pass key.public_key()'))
    if isinstance(public_key, (bytes, str)):
        data = public_key.encode("ascii") if isinstance(public_key, str) else public_key
        if b"PRIVATE KEY" in data:
            return Result(False, N_('that is a private key PEM: never hand it to anyone; pass the public key'))
        try:
            public_key = serialization.load_pem_public_key(data)
        except ValueError as e:
            return Result(False, N_('public_key could not be read as a PEM public key: {e}').format(e=e))
    data = message.encode("utf-8") if isinstance(message, str) else bytes(message)
    if b"mail.example.com" not in data:
        return Result(False, N_("the message should name mail.example.com (sign a sentence such as 'I run "
                                "mail.example.com')"))
    checked = verify(public_key, bytes(signature), data)
    if not checked.ok:
        return Result(False, checked.reason + N_('; sign these exact bytes with the private key that matches this '
                                                 'public key '
                                                 '(tlsview.sign)'))
    return Result(True, N_('right: {reason}').format(reason=checked.reason), checked.details)
