"""Results of the sender-authentication checks, and the Authentication-Results header.

Every check in :mod:`labkit.core.auth` returns an :class:`AuthResult`: a
:class:`labkit.result.Result` (``ok``, ``reason``, ``details``) that also carries the method
(``spf``, ``dkim``, ``dmarc``) and the result word RFC 8601 uses for it (``pass``, ``fail``,
``softfail``, ``neutral``, ``none``, ``temperror``, ``permerror``). ``ok`` is true only for
``pass``. The reason is one plain sentence a learner can read as it is.

The receiving server writes what it found into an ``Authentication-Results`` header (RFC 8601)
for the mail reader and filters further down. :func:`authentication_results` renders one
from labkit's results with ``authres`` (the header library of ``authheaders``);
:func:`authenticate_with_authheaders` lets ``authheaders`` run the whole check on its own (a
second opinion); :func:`parse_authentication_results` reads such a header back.
"""
from __future__ import annotations

import importlib
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Iterator

import dns.exception
import dns.name
import dns.resolver

from ...i18n import N_
from ...result import Result
from ..dns import use_resolver

#: The result words of RFC 8601 §2.7, per method.
RESULTS = {
    "spf": ("none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"),
    "dkim": ("none", "pass", "fail", "policy", "neutral", "temperror", "permerror"),
    "dmarc": ("none", "pass", "fail", "temperror", "permerror"),
    "iprev": ("pass", "fail", "temperror", "permerror"),
}


@dataclass(frozen=True)
class AuthResult(Result):
    """A :class:`~labkit.result.Result` of one authentication method.

    ``method`` is ``spf``, ``dkim`` or ``dmarc``; ``result`` the RFC 8601 result word.
    ``ok`` is ``result == "pass"``; build one with :meth:`make` so the two always agree.
    """

    method: str = ""
    result: str = "none"

    @classmethod
    def make(cls, result: str, reason: str, **details: Any) -> "AuthResult":
        method = getattr(cls, "METHOD", "") or details.pop("method", "")
        return cls(result == "pass", reason, details, method=method, result=result)

    @property
    def temporary(self) -> bool:
        """Whether asking again later may give another answer (a DNS failure)."""
        return self.result == "temperror"

    def __str__(self) -> str:
        return f"{self.method}={self.result}: {self.reason}"


# --------------------------------------------------------------------------- the header


def _clean(text: str) -> str:
    """A reason as it may stand in a header's quoted string: one line, no quotes or backslashes."""
    return " ".join(str(text).replace('"', "'").replace("\\", "/").split())


def authentication_results(authserv_id: str, spf: AuthResult | None = None, dkim: AuthResult | None = None,
                           dmarc: AuthResult | None = None, iprev: AuthResult | None = None) -> str:
    """The value of an ``Authentication-Results`` header (RFC 8601) from labkit's results.

    ``authserv_id`` names the server that did the checks (``mx.inbox.example.org``). Each
    result adds one ``method=result`` clause with its reason and what was checked
    (``smtp.mailfrom``, ``header.d``, ``header.from``...). A DKIM result with several
    signatures adds one clause per signature, as RFC 8601 §2.7.1 asks.
    """
    # authres loads on first use: importing labkit.core.auth stays quick
    from authres import (AuthenticationResultsHeader, DKIMAuthenticationResult, IPRevAuthenticationResult,
                         SPFAuthenticationResult)
    from authres.dmarc import DMARCAuthenticationResult

    clauses = []
    if iprev is not None:
        clauses.append(IPRevAuthenticationResult(result=iprev.result, reason=_clean(iprev.reason),
                                                 policy_iprev=iprev.details.get("client_ip") or None))
    if spf is not None:
        d = spf.details
        clauses.append(SPFAuthenticationResult(
            result=spf.result, reason=_clean(spf.reason),
            smtp_mailfrom=d.get("mail_from") or None,
            smtp_helo=d.get("helo") or None))
    if dkim is not None:
        signatures = dkim.details.get("signatures") or []
        if not signatures:
            clauses.append(DKIMAuthenticationResult(result=dkim.result, reason=_clean(dkim.reason)))
        for sig in signatures:
            d = sig.details
            clauses.append(DKIMAuthenticationResult(
                result=sig.result, reason=_clean(sig.reason),
                header_d=d.get("domain") or None, header_s=d.get("selector") or None,
                header_a=d.get("algorithm") or None))
    if dmarc is not None:
        d = dmarc.details
        clauses.append(DMARCAuthenticationResult(
            result=dmarc.result, reason=_clean(dmarc.reason),
            header_from=d.get("from_domain") or None, policy=d.get("policy") or None))
    header = AuthenticationResultsHeader(authserv_id=authserv_id, results=clauses)
    return str(header).split(":", 1)[1].strip()


def parse_authentication_results(value: str) -> dict[str, Any]:
    """Read an ``Authentication-Results`` header (with or without its name) back.

    Returns ``{"authserv_id": ..., "results": [{"method", "result", "reason", "properties":
    {"smtp.mailfrom": ..., "header.d": ...}}, ...]}``.
    """
    # authres loads on first use: importing labkit.core.auth stays quick
    import authres.dmarc  # noqa: F401  (registers the dmarc method with the parser)
    from authres import AuthenticationResultsHeader

    text = " ".join(value.split())
    if not text.lower().startswith("authentication-results:"):
        text = "Authentication-Results: " + text
    header = AuthenticationResultsHeader.parse(text)
    return {
        "authserv_id": header.authserv_id,
        "results": [{
            "method": r.method,
            "result": r.result,
            "reason": r.reason,
            "properties": {f"{p.type}.{p.name}": p.value for p in r.properties},
        } for r in header.results],
    }


# --------------------------------------------------------------------------- the field's libraries


@contextmanager
def field_libraries(resolver: dns.resolver.Resolver) -> Iterator[None]:
    """Point pyspf and authheaders (which use dnspython's default resolver) at ``resolver``.

    This is the one place where labkit changes the process-wide default resolver. It also
    silences the one deprecation warning pyspf 2.0 triggers by calling dnspython's old
    ``dns.resolver.query`` (it is pyspf's to fix, not the reader's).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*please use dns\.resolver\.(Resolver\.)?resolve",
                                category=DeprecationWarning)
        with use_resolver(resolver):
            yield


def authenticate_with_authheaders(message: bytes, *, authserv_id: str, resolver: dns.resolver.Resolver,
                                  client_ip: str, mail_from: str, helo: str) -> str:
    """Let ``authheaders`` check SPF, DKIM and DMARC itself; return its header value.

    A second opinion on labkit's own checks, from the library many Python mail filters use.
    ``authheaders`` cannot be given a lookup function with DMARC on (it mixes str and bytes:
    a TypeError), so it runs with the lab resolver made the default for the call.
    """
    # authheaders loads on first use: importing labkit.core.auth stays quick
    import authheaders

    with field_libraries(resolver):
        header = authheaders.authenticate_message(
            message, authserv_id, spf=True, dkim=True, dmarc=True,
            ip=client_ip, mail_from=mail_from, helo=helo)
    return header.split(":", 1)[1].strip()


# --------------------------------------------------------------------------- DNS, explicitly


class TXTLookup:
    """What one TXT question to the lab DNS gave: ``records`` (each one joined text, as bytes),
    and ``outcome`` (``answer``, ``NXDOMAIN``, ``NODATA``, ``REFUSED``, ``timeout``...);
    ``temporary`` is true when asking again later may give an answer (temperror)."""

    def __init__(self, name: str, records: list[bytes], outcome: str, temporary: bool, strings: list[int]):
        self.name = name
        self.records = records
        self.outcome = outcome
        self.temporary = temporary
        self.strings = strings  # how many strings each record was published as

    @property
    def found(self) -> bool:
        return bool(self.records)


def lookup_txt(resolver: dns.resolver.Resolver, name: str) -> TXTLookup:
    """Ask ``resolver`` for the TXT records at ``name``; never raises for a DNS failure."""
    try:
        answer = resolver.resolve(dns.name.from_text(name.rstrip(".") + "."), "TXT", search=False)
    except dns.resolver.NXDOMAIN:
        return TXTLookup(name, [], "NXDOMAIN", False, [])
    except dns.resolver.NoAnswer:
        return TXTLookup(name, [], "NODATA", False, [])
    except dns.resolver.NoNameservers as exc:
        said = [str(e[3]) for e in exc.kwargs.get("errors") or [] if len(e) > 3]
        # the lab DNS answers REFUSED for a name outside every lab zone: it does not exist here
        if said and all(s == "REFUSED" for s in said):
            return TXTLookup(name, [], "REFUSED", False, [])
        return TXTLookup(name, [], said[-1] if said else "no server answered", True, [])
    except dns.exception.Timeout:
        return TXTLookup(name, [], f"no answer within {resolver.lifetime:g} s (timeout)", True, [])
    except (dns.exception.DNSException, ValueError, OSError) as exc:
        return TXTLookup(name, [], f"{type(exc).__name__}: {exc}", True, [])
    records = [b"".join(r.strings) for r in answer]
    return TXTLookup(name, records, "answer", False, [len(r.strings) for r in answer])


#: Warnings that third-party modules raise while they are imported, about code labkit never
#: calls: (message, module). dnspython's DNSSEC algorithms (loaded by checkdmarc) touch
#: cryptography's DSA classes, which cryptography 51 deprecates; labkit validates no DSA
#: signature. Matched narrowly, so that any other warning still reaches the reader and the tests.
IMPORT_WARNINGS_NOT_OURS = (
    (r"DSA is deprecated", r"dns\.dnssecalgs\.dsa"),
)


_IMPORT_LOCK = threading.Lock()


def import_checkdmarc(name: str = "checkdmarc") -> ModuleType:
    """Import checkdmarc (or one of its modules, such as ``checkdmarc.spf``).

    The one place labkit imports checkdmarc: it is slow to import (about 0.3 s), so it is loaded
    when first needed, and the deprecation warnings its own imports raise
    (:data:`IMPORT_WARNINGS_NOT_OURS`) never reach a notebook, a lab server's reply or a log.
    """
    # One thread at a time: the lab's provider and a caller (the doctor, a chapter) may both be
    # first to need checkdmarc, and two threads importing its package at once can see it half
    # made ("partially initialized module"); the warning filters are process-wide, too.
    with _IMPORT_LOCK, warnings.catch_warnings():
        for message, module in IMPORT_WARNINGS_NOT_OURS:
            warnings.filterwarnings("ignore", message=message, module=module)
        importlib.import_module("checkdmarc")  # the package, whole, before any of its modules
        return importlib.import_module(name)


def fresh_checkdmarc() -> None:
    """checkdmarc caches answers process-wide; the lab changes records as it goes, so forget them."""
    import_checkdmarc("checkdmarc.utils").DNS_CACHE.clear()


def run_checkdmarc(cls: type[AuthResult], check: Callable[..., dict[str, Any]], what: str, domain: str,
                   resolver: Any, valid: Callable[[dict[str, Any]], str]) -> AuthResult:
    """Check ``domain``'s published ``what`` record ("SPF", "DMARC") with checkdmarc's ``check``
    against the lab resolver; the result is a ``cls``: ``pass`` with the reason ``valid(report)``
    gives, ``permerror`` with checkdmarc's error, ``temperror`` when DNS fails half-way."""
    fresh_checkdmarc()
    try:
        report = check(domain, resolver=resolver, timeout=resolver.lifetime, retries=0)
    except Exception as exc:  # noqa: BLE001 - a DNS failure half-way through, say
        return cls.make("temperror", N_("the {what} record of {domain} could not be checked: {exc}").format(
            what=what, domain=domain, exc=exc), domain=domain)
    details = {"domain": domain, **report}
    if report.get("valid"):
        return cls.make("pass", valid(report), **details)
    error = str(report.get("error") or "unknown error")
    return cls.make("permerror", N_("the {what} record of {domain} is not usable: {error}").format(
        what=what, domain=domain, error=error), **details)
