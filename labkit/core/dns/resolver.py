"""One resolver factory that every library of the lab is pointed at.

Every DNS lookup in the lab (dnspython here, and dkimpy, pyspf, authheaders, checkdmarc in the
authentication chapters) must ask the lab's DNS server, never the machine's own resolver: the
lab's names (``example.com``, ``inbox.example.org``...) only exist there, and the lab's server
listens on an ephemeral port, not on 53.

- :func:`make_resolver` builds a dnspython ``Resolver`` that asks only the lab server;
- :func:`use_resolver` makes it dnspython's default for a ``with`` block, which is what dkimpy,
  pyspf and authheaders use (checkdmarc takes ``resolver=`` instead);
- :func:`mx_hosts`, :func:`addresses` and :func:`txt_records` are the three questions a mail
  system asks, with RFC 5321 §5.1's rules, and errors that say what was asked of whom.

A failed lookup raises :class:`DNSLookupError` (a :class:`labkit.errors.LabError`); a domain
that publishes a "null MX" raises its subclass :class:`NullMXError`.
"""
from __future__ import annotations

import ipaddress
from contextlib import contextmanager
from typing import Iterator

import dns.exception
import dns.name
import dns.resolver

from ...errors import ConfigError, DNSLookupError, NullMXError
from .zone import _name_text, normalize_name

_HINTS = {
    "NXDOMAIN": "The name does not exist. Check its spelling, or add it to its lab zone "
                "(zone.add(name, type, value))",
    "NODATA": "The name exists but has no record of that type. Add one to its lab zone",
    "REFUSED": "The server is not authoritative for that name: the lab DNS answers only for the "
               "lab's zones (it does not recurse to the internet)",
    "SERVFAIL": "The server failed to answer; look at its query log (server.queries)",
    "timeout": "Is the lab DNS running at that address and port? (labkit status)",
}


def _server(resolver: dns.resolver.Resolver) -> str:
    servers = [str(ns) for ns in resolver.nameservers]
    return ", ".join(f"{s}:{resolver.port}" for s in servers) or "(no server)"


def _failure(resolver: dns.resolver.Resolver, name: str, rtype: str, exc: Exception) -> DNSLookupError:
    """Turn a dnspython resolution error into a :class:`DNSLookupError` that says what came back."""
    if isinstance(exc, dns.resolver.NXDOMAIN):
        outcome = "NXDOMAIN"
    elif isinstance(exc, dns.resolver.NoAnswer):
        outcome = "NODATA"
    elif isinstance(exc, dns.exception.Timeout):
        return DNSLookupError(name, rtype, _server(resolver),
                              f"no answer within {resolver.lifetime:g} s (timeout)", _HINTS["timeout"])
    elif isinstance(exc, dns.resolver.NoNameservers):
        errors = exc.kwargs.get("errors") or []
        said = [str(e[3]) for e in errors if len(e) > 3]
        outcome = said[-1] if said else "no server answered"
        if outcome not in _HINTS:  # a socket error, e.g. "[Errno 111] Connection refused"
            return DNSLookupError(name, rtype, _server(resolver), outcome, _HINTS["timeout"])
    else:
        outcome = f"{type(exc).__name__}: {exc}"
    return DNSLookupError(name, rtype, _server(resolver), outcome, _HINTS.get(outcome, ""))


def make_resolver(host: str, port: int, timeout: float = 2.0, lifetime: float = 5.0) -> dns.resolver.Resolver:
    """A dnspython resolver that asks only the DNS server at ``host``:``port``.

    Nothing is read from ``/etc/resolv.conf`` (``configure=False``), no search domain is
    appended to short names, and nothing is cached, so a record published a moment ago is
    seen at once. ``timeout`` bounds one try, ``lifetime`` a whole lookup. A reply too large for
    UDP (TC flag) is asked again over TCP by dnspython itself.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError("resolver host", f"{host!r} is not an IP address",
                          "give the address of the lab DNS, e.g. server.host (127.0.10.53)") from None
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError("resolver port", f"{port!r} is not a port number from 1 to 65535",
                          "give the port of the lab DNS, e.g. server.port")
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [host]
    resolver.port = port
    resolver.timeout = timeout
    resolver.lifetime = lifetime
    resolver.search = []
    resolver.use_search_by_default = False
    resolver.domain = dns.name.root
    resolver.cache = None
    resolver.retry_servfail = False
    return resolver


@contextmanager
def use_resolver(resolver: dns.resolver.Resolver) -> Iterator[dns.resolver.Resolver]:
    """Make ``resolver`` dnspython's default resolver inside the ``with`` block, then restore.

    dkimpy, pyspf and authheaders call ``dns.resolver.resolve(...)``, which asks
    ``dns.resolver.default_resolver``: this is how they are pointed at the lab. The default is
    process-wide, so two labs in one process should not verify mail at the same moment.
    """
    previous = dns.resolver.default_resolver
    dns.resolver.default_resolver = resolver
    try:
        yield resolver
    finally:
        dns.resolver.default_resolver = previous


def _ask(resolver: dns.resolver.Resolver, name: str, rtype: str) -> dns.resolver.Answer:
    try:
        return resolver.resolve(dns.name.from_text(name, origin=dns.name.root), rtype, search=False)
    except dns.exception.DNSException as exc:
        raise _failure(resolver, name, rtype, exc) from None


def addresses(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """The addresses of ``name``: its A records, then its AAAA records.

    Raises :class:`DNSLookupError` if the name does not exist, has neither A nor AAAA
    (``NODATA``), or the server fails to answer.
    """
    name = normalize_name(name, "name")
    found: list[str] = []
    for rtype in ("A", "AAAA"):
        try:
            found += [r.address for r in _ask(resolver, name, rtype)]
        except DNSLookupError as exc:
            if exc.outcome != "NODATA":
                raise
    if not found:
        raise DNSLookupError(name, "A/AAAA", _server(resolver), "NODATA",
                             "The name exists but has no address; add an A record to its lab zone")
    return found


def mx_hosts(resolver: dns.resolver.Resolver, domain: str) -> list[tuple[int, str]]:
    """Where mail for ``domain`` goes: ``[(preference, host), ...]``, most preferred first.

    RFC 5321 §5.1: a sender tries the MX hosts lowest preference first. If the domain has no MX
    but has an address (A/AAAA), the domain itself is the "implicit MX", returned as
    ``[(0, domain)]``. If it has neither, mail cannot be delivered: :class:`DNSLookupError`.

    A "null MX" (a single ``MX 0 .``, RFC 7505) says the domain accepts no mail at all: this
    raises :class:`NullMXError` rather than returning an empty list, so the caller cannot
    mistake it for "try again later". Host names are returned without the final dot.
    """
    domain = normalize_name(domain, "domain")
    try:
        answer = _ask(resolver, domain, "MX")
    except DNSLookupError as exc:
        if exc.outcome != "NODATA":
            raise
        try:
            addresses(resolver, domain)
        except DNSLookupError:
            raise DNSLookupError(domain, "MX", _server(resolver), "no MX and no A/AAAA record",
                                 "RFC 5321 §5.1: the domain cannot receive mail; add an MX to its zone") from None
        return [(0, domain)]
    hosts = sorted({(r.preference, _name_text(r.exchange)) for r in answer})
    real = [h for h in hosts if h[1] != "."]
    if not real:
        raise NullMXError(domain, "MX", _server(resolver), "null MX (MX 0 .)",
                          "RFC 7505: the domain accepts no mail; a sender bounces at once (556 5.1.10)")
    return real


def txt_records(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """The TXT records of ``name``, each one text: its strings joined with nothing in between
    (as SPF, DKIM and DMARC read them, RFC 7208 §3.3). Raises :class:`DNSLookupError` on failure.
    """
    name = normalize_name(name, "name")
    return [b"".join(r.strings).decode("utf-8", "replace") for r in _ask(resolver, name, "TXT")]
