"""Chapter 11 exercises: DKIM signatures made by real OpenDKIM, checked with dkimpy on the lab DNS."""
from __future__ import annotations

from typing import Any

from ...core.auth.dkim import anatomy, verify
from ...core.auth.results import lookup_txt
from ...i18n import N_
from ...lab.lab import Lab
from ...result import Result
from . import exercise


def _headers(message: bytes) -> list[str]:
    tags = {t: v for t, v, _ in anatomy(message)}
    return [h.strip().lower() for h in tags.get("h", "").split(":") if h.strip()]


@exercise("11.1")
def _signed_headers(lab: Lab | None = None, message: bytes | None = None, answer: Any = None) -> Result:
    """Which header fields the (first) DKIM signature of ``message`` covers."""
    if not isinstance(message, (bytes, bytearray)):
        return Result(False, N_('pass message= the signed message as bytes (Path(...).read_bytes())'))
    if not isinstance(answer, (list, tuple, set)) or not all(isinstance(a, str) for a in answer):
        return Result(False, N_("pass answer= a list of header names, e.g. ['from', ...]"))
    try:
        signed = _headers(bytes(message))
    except ValueError as exc:
        return Result(False, N_('that message has no usable signature: {exc}').format(exc=exc))
    want, got = set(signed), {a.strip().lower().rstrip(":") for a in answer}
    if got != want:
        missing, extra = sorted(want - got), sorted(got - want)
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"not signed: {', '.join(extra)}"]
                                                                          if extra else [])
        return Result(False, "; ".join(parts) + N_('. Read the h= tag of the DKIM-Signature'))
    return Result(True, N_('right: h= lists {join}; a change to any of them breaks the signature, other headers '
                           'may change freely').format(join=', '.join(dict.fromkeys(signed))))


def _verify(lab: Lab, message: bytes):
    return verify(bytes(message), resolver=lab.resolver())


@exercise("11.2")
def _harmless_change(lab: Lab | None, original: bytes | None = None, tampered: bytes | None = None) -> Result:
    """A visible change to the signed message after which the signature still verifies."""
    if lab is None or not isinstance(original, (bytes, bytearray)) or not isinstance(tampered, (bytes, bytearray)):
        return Result(False, N_('pass the lab, original= and tampered= (both bytes)'))
    if not _verify(lab, original).ok:
        return Result(False, N_('the original does not verify; start from a message OpenDKIM signed'))
    if bytes(tampered).replace(b"\r\n", b"\n") == bytes(original).replace(b"\r\n", b"\n"):
        return Result(False, N_('tampered= is the same message: change something'))
    result = _verify(lab, tampered)
    if not result.ok:
        return Result(False, N_('the signature breaks: {reason}. Change something not covered: a header not in h=, or '
                                'add a new one').format(reason=result.reason))
    return Result(True, N_('right: the change is outside what the signature covers (headers not in h=), so DKIM '
                           'still passes; that is why h= must list every header that matters'))


@exercise("11.3")
def _body_change(lab: Lab | None, original: bytes | None = None, tampered: bytes | None = None) -> Result:
    """A change that makes the verifier say "body hash mismatch"."""
    if lab is None or not isinstance(original, (bytes, bytearray)) or not isinstance(tampered, (bytes, bytearray)):
        return Result(False, N_('pass the lab, original= and tampered= (both bytes)'))
    if not _verify(lab, original).ok:
        return Result(False, N_('the original does not verify; start from a message OpenDKIM signed'))
    result = _verify(lab, tampered)
    if result.ok:
        return Result(False, N_('the signature still verifies: the change did not touch what bh= covers'))
    if "body hash mismatch" not in result.reason:
        return Result(False, N_('it fails, but not on the body: {reason}. Change the body (after the blank line), '
                                'leave the signed headers as they are').format(reason=result.reason))
    return Result(True, N_('right: bh= is a hash of the body, so a changed body no longer matches it; no one had '
                           "to 'decrypt' anything (erratum 5)"))


@exercise("11.4")
def _strings(lab: Lab | None, name: str = "mail._domainkey.example.com", answer: int | None = None) -> Result:
    """How many strings the TXT record at ``name`` is published as."""
    if lab is None or isinstance(answer, bool) or not isinstance(answer, int):
        return Result(False, N_('pass the lab and answer= a whole number'))
    found = lookup_txt(lab.resolver(), name)
    if not found.strings:
        return Result(False, N_('nothing is published at {name} ({outcome})').format(name=name, outcome=found.outcome))
    n = found.strings[0]
    length = len(found.records[0])
    if answer != n:
        return Result(False, N_('{answer} is not it: the record is {length} characters, and one TXT string holds at '
                                'most 255 octets (RFC 1035 §3.3)').format(answer=answer, length=length))
    return Result(True, N_('right: {length} characters in {n} string(s); a verifier joins them back (RFC 6376 '
                           '§3.6.2.2)').format(length=length, n=n))
