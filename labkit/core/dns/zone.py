"""The lab's DNS data: records, zones, zone-file text and the memo's "Hostname / Type / Content" table.

Pure: nothing here opens a socket or a file. The server (:mod:`labkit.net.dnsserver`) is a thin
shell that reads these zones live, so a chapter that publishes an SPF, DKIM or DMARC record
into a running lab simply calls :meth:`Zone.replace` and the next query sees it.

Conventions, used everywhere in :mod:`labkit.core.dns`:

- **Names** are absolute domain names, lower-case, stored *without* the trailing dot:
  ``mail.example.com``. Input may carry the dot (``mail.example.com.``) or not; both mean the
  same absolute name. The root itself is written ``.``.
- **Values** are what the memo's MyDNS "Content" column shows: ``10 mx.inbox.example.org`` for
  an MX, ``127.0.40.25`` for an A, the whole text ``v=DKIM1; k=rsa; p=MIIB...`` for a TXT
  (however long: it is split into 255-octet strings only when rendered or served, see
  :func:`split_txt`). Names inside values follow the same no-trailing-dot rule.

Example::

    >>> zone = Zone("example.com", nameserver="ns.lab.test")
    >>> zone.add("example.com", "MX", "10 mail.example.com")
    Record(name='example.com', type='MX', value='10 mail.example.com', ttl=300)
    >>> zone.add("mail.example.com", "A", "127.0.20.25")
    Record(name='mail.example.com', type='A', value='127.0.20.25', ttl=300)
    >>> [r.value for r in zone.find("example.com", "MX")]
    ['10 mail.example.com']

Validation uses dnspython (``dns.name``, ``dns.rdata.from_text``); a bad value raises
:class:`labkit.errors.ConfigError` naming the field, the reason and what to do.
"""
from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, NamedTuple

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.reversename

from ...errors import ConfigError

if TYPE_CHECKING:
    from ..world import World

#: The record types a lab zone may hold, with what each is for (shown by :func:`describe_type`).
TYPES: dict[str, str] = {
    "SOA": "start of authority: who is the primary server of the zone, and its timers (RFC 1035)",
    "NS": "a name server of the zone (RFC 1035)",
    "A": "an IPv4 address of the name (RFC 1035)",
    "AAAA": "an IPv6 address of the name (RFC 3596)",
    "MX": "a mail exchanger for the domain: PREFERENCE HOST, lowest first (RFC 5321 §5.1)",
    "TXT": "free text: SPF, DKIM and DMARC records live here (RFC 7208, 6376, 7489)",
    "PTR": "reverse DNS: the name of an address (RFC 1035)",
    "CNAME": "this name is an alias of another name (RFC 1034 §3.6.2)",
}

#: The TTL (seconds) records get when none is given.
DEFAULT_TTL = 300

#: A TXT record is one or more strings of at most this many octets each (RFC 1035 §3.3).
TXT_STRING_MAX = 255

_MAX_NAME = 253  # octets of a name in text form, without the trailing dot (RFC 1035 §2.3.4)
_MAX_LABEL = 63  # octets of one label (RFC 1035 §2.3.4)
_FORBIDDEN = {"\r": "CR", "\n": "LF", "\x00": "NUL"}


def describe_type(rtype: str) -> str:
    """One line saying what a record type is for, e.g. ``describe_type("MX")``."""
    return TYPES[rtype.upper()]


# --------------------------------------------------------------------------- names


def _check_no_control(value: str, where: str) -> None:
    for ch, label in _FORBIDDEN.items():
        if ch in value:
            raise ConfigError(where, f"contains a {label} character ({value!r})",
                              "DNS data for the lab is one line of text; remove line breaks and NUL bytes")


def normalize_name(name: str, where: str = "name") -> str:
    """The canonical form of a domain name: lower-case, no trailing dot (the root is ``.``).

    Checks what RFC 1035 §2.3.4 requires: labels of 1 to 63 octets, at most 253 octets in all.
    ``where`` names the field in the :class:`~labkit.errors.ConfigError` raised on bad input.

    >>> normalize_name("Mail.Example.COM.")
    'mail.example.com'
    """
    if not isinstance(name, str):
        raise ConfigError(where, f"must be a domain name as text, not {type(name).__name__}")
    _check_no_control(name, where)
    text = name.strip()
    if text in ("", "."):
        if text == ".":
            return "."
        raise ConfigError(where, "is empty", "give a domain name such as mail.example.com")
    if " " in text or "\t" in text:
        raise ConfigError(where, f"contains a space ({name!r})", "a domain name has no spaces")
    if text.startswith(".") or ".." in text:
        raise ConfigError(where, f"has an empty label ({name!r})", "remove the doubled or leading dot")
    bare = text[:-1] if text.endswith(".") else text
    for label in bare.split("."):
        size = len(label.encode("utf-8"))
        if size > _MAX_LABEL:
            raise ConfigError(where, f"label {label[:20]!r}... is {size} octets, more than {_MAX_LABEL}",
                              "RFC 1035 §2.3.4 limits each label to 63 octets; shorten it")
    if len(bare.encode("utf-8")) > _MAX_NAME:
        raise ConfigError(where, f"is {len(bare.encode('utf-8'))} octets long, more than {_MAX_NAME}",
                          "RFC 1035 §2.3.4 limits a name to 253 octets in text form; shorten it")
    try:
        parsed = dns.name.from_text(bare, origin=dns.name.root)
    except dns.exception.DNSException as exc:
        raise ConfigError(where, f"is not a valid domain name ({name!r}: {exc})") from None
    return _name_text(parsed)


def _name_text(name: dns.name.Name) -> str:
    """dnspython name -> our canonical text (lower-case, no trailing dot, root is ``.``)."""
    if name == dns.name.root:
        return "."
    return name.to_text(omit_final_dot=True).lower()


def _dns_name(name: str) -> dns.name.Name:
    """Our canonical text -> an absolute dnspython name."""
    return dns.name.from_text(name, origin=dns.name.root)


def is_subdomain(name: str, origin: str) -> bool:
    """Whether ``name`` is ``origin`` or below it (``mail.example.com`` is under ``example.com``)."""
    name, origin = name.rstrip(".").lower(), origin.rstrip(".").lower()
    return origin == "" or name == origin or name.endswith("." + origin)


# --------------------------------------------------------------------------- TXT strings


def split_txt(text: str) -> list[str]:
    """Split a TXT value into strings of at most 255 UTF-8 octets, never inside a character.

    A TXT record holds one or more "character-strings" of at most 255 octets each (RFC 1035
    §3.3.14). Values longer than that, such as a DKIM record with a 2048-bit RSA key (about
    410 characters), are published as several strings that the reader joins back together
    with nothing in between (RFC 6376 §3.6.2.2, RFC 7208 §3.3). The empty text is one empty
    string.

    >>> [len(s) for s in split_txt("x" * 600)]
    [255, 255, 90]
    >>> "".join(split_txt("é" * 200)) == "é" * 200
    True
    """
    parts: list[str] = []
    current: list[str] = []
    size = 0
    for ch in text:
        n = len(ch.encode("utf-8"))
        if size + n > TXT_STRING_MAX:
            parts.append("".join(current))
            current, size = [], 0
        current.append(ch)
        size += n
    parts.append("".join(current))
    return parts


def join_txt(strings: Iterable[str | bytes]) -> str:
    """The value of a TXT record from its strings: concatenated, as SPF, DKIM and DMARC read it."""
    return "".join(s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in strings)


# --------------------------------------------------------------------------- records


_VALUE_HINTS = {
    "A": "an A value is an IPv4 address such as 127.0.20.25",
    "AAAA": "an AAAA value is an IPv6 address such as 2001:db8::25",
    "MX": "an MX value is 'PREFERENCE HOST', e.g. '10 mail.example.com' (RFC 5321 §5.1); "
          "'0 .' is a null MX (RFC 7505)",
    "NS": "an NS value is a host name such as ns.lab.test",
    "CNAME": "a CNAME value is the name this one is an alias of, e.g. mail.example.com",
    "PTR": "a PTR value is a host name such as mail.example.com",
    "SOA": "an SOA value is 'MNAME RNAME SERIAL REFRESH RETRY EXPIRE MINIMUM', "
           "e.g. 'ns.lab.test hostmaster.example.com 1 3600 600 86400 300'",
    "TXT": "a TXT value is text such as 'v=spf1 ip4:127.0.20.25 -all'",
}


def _check_address(rtype: str, value: str, where: str) -> None:
    try:
        addr = ipaddress.ip_address(value.strip())
    except ValueError:
        raise ConfigError(where, f"{value!r} is not a valid IPv{4 if rtype == 'A' else 6} address",
                          _VALUE_HINTS[rtype]) from None
    want = 4 if rtype == "A" else 6
    if addr.version != want:
        other = "AAAA" if rtype == "A" else "A"
        raise ConfigError(where, f"{value!r} is an IPv{addr.version} address, not IPv{want}",
                          f"use an {other} record for it")


def _check_names_in_value(rtype: str, value: str, where: str) -> None:
    """Run the name checks of :func:`normalize_name` on the names inside an NS/CNAME/PTR/MX/SOA value."""
    fields = value.split()
    positions = {"NS": [0], "CNAME": [0], "PTR": [0], "MX": [1], "SOA": [0, 1]}[rtype]
    for i in positions:
        if i < len(fields):
            normalize_name(fields[i], where)


def _value_text(rdata: dns.rdata.Rdata) -> str:
    """Canonical text of a (non-TXT) value: names without the trailing dot, the root as ``.``."""
    text = rdata.to_text(origin=dns.name.root, relativize=True)
    # relativizing the root to itself leaves "@"; our convention writes it "."
    return " ".join("." if tok == "@" else tok for tok in text.split())


def _parse_value(rtype: str, value: str, where: str) -> tuple[str, dns.rdata.Rdata]:
    """Validate ``value`` for ``rtype``; return its canonical text and dnspython rdata."""
    if not isinstance(value, str):
        raise ConfigError(where, f"must be text, not {type(value).__name__}", _VALUE_HINTS[rtype])
    _check_no_control(value, where)
    if rtype == "TXT":
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ConfigError(where, f"cannot be encoded as UTF-8 ({exc.reason})") from None
        rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT,
                                        [s.encode("utf-8") for s in split_txt(value)])
        return value, rdata
    if not value.strip():
        raise ConfigError(where, "is empty", _VALUE_HINTS[rtype])
    if rtype in ("A", "AAAA"):
        _check_address(rtype, value, where)
    if rtype == "MX":
        first = value.split()[0]
        if not first.isdigit():
            raise ConfigError(where, f"MX value {value!r} has no preference number", _VALUE_HINTS["MX"])
        if int(first) > 65535:
            raise ConfigError(where, f"MX preference {first} is more than 65535", _VALUE_HINTS["MX"])
    if rtype in ("NS", "CNAME", "PTR", "MX", "SOA"):
        _check_names_in_value(rtype, value, where)
    try:
        # these types hold only names, numbers and addresses: DNS names compare without case
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), value.strip().lower(),
                                    origin=dns.name.root, relativize=False)
    except (dns.exception.DNSException, ValueError) as exc:
        raise ConfigError(where, f"{value!r} is not a valid {rtype} value ({exc})", _VALUE_HINTS[rtype]) from None
    return _value_text(rdata), rdata


@dataclass(frozen=True)
class Record:
    """One DNS record: ``Record("example.com", "MX", "10 mail.example.com")``.

    ``name`` is the absolute owner name (stored lower-case, without the trailing dot), ``type``
    one of :data:`TYPES`, ``value`` the record data as the memo's "Content" column shows it,
    ``ttl`` how many seconds resolvers may cache it. The constructor validates and normalises
    every field and raises :class:`~labkit.errors.ConfigError` on bad input. Records compare
    equal when name, type and value are equal (the TTL is not part of a record's identity, as
    in an RRset).
    """

    name: str
    type: str
    value: str
    ttl: int = field(default=DEFAULT_TTL, compare=False)
    _rdata: dns.rdata.Rdata = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        rtype = self.type.upper() if isinstance(self.type, str) else self.type
        where = f"{rtype} record {self.name!r}" if isinstance(rtype, str) else "record"
        if not isinstance(rtype, str) or rtype not in TYPES:
            raise ConfigError(f"record {self.name!r}: type", f"unknown record type {self.type!r}",
                              f"the lab serves {', '.join(TYPES)}")
        name = normalize_name(self.name, f"{where}: name")
        where = f"{rtype} record {name!r}"
        if isinstance(self.ttl, bool) or not isinstance(self.ttl, int) or not 0 <= self.ttl <= 2**31 - 1:
            raise ConfigError(f"{where}: ttl", f"{self.ttl!r} is not a number of seconds from 0 to 2147483647",
                              "RFC 2181 §8: a TTL is an unsigned 31-bit number; 300 is a good lab value")
        value, rdata = _parse_value(rtype, self.value, f"{where}: value")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "type", rtype)
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "_rdata", rdata)

    def rdata(self) -> dns.rdata.Rdata:
        """The record data as a dnspython object (what the server puts on the wire)."""
        return self._rdata

    @property
    def strings(self) -> list[str]:
        """For a TXT record, the strings it is published as (see :func:`split_txt`)."""
        if self.type != "TXT":
            raise TypeError(f"{self.type} records have no strings; only TXT records do")
        return split_txt(self.value)

    def with_ttl(self, ttl: int) -> "Record":
        return Record(self.name, self.type, self.value, ttl)

    def zone_line(self, origin: str) -> str:
        """This record as one line of a zone file whose ``$ORIGIN`` is ``origin``."""
        return f"{relative_name(self.name, origin)}\t{self.ttl}\tIN\t{self.type}\t{self._rdata.to_text()}"


def relative_name(name: str, origin: str) -> str:
    """``name`` as a zone file writes it under ``$ORIGIN origin``: ``@`` for the apex, else the labels
    before the origin, else the absolute name with its final dot."""
    name, origin = name.rstrip(".").lower(), origin.rstrip(".").lower()
    if name == origin:
        return "@"
    if name.endswith("." + origin):
        return name[: -len(origin) - 1]
    return name + "."


# --------------------------------------------------------------------------- zones


class TableRow(NamedTuple):
    """One line of the memo's MyDNS "DOMAIN INFO" table."""

    hostname: str
    type: str
    content: str


class Zone:
    """The records of one DNS zone, e.g. everything at and below ``example.com``.

    A new zone already holds its SOA (``nameserver`` as the primary, ``hostmaster@ORIGIN`` as
    the contact, serial 1) and one NS record (``nameserver``, by default ``ns.ORIGIN``), so it is
    a valid zone from the start. Every change bumps the SOA serial by one, as an operator does
    before reloading a real server.

    A zone is shared between one writer (a notebook, or a chapter publishing SPF/DKIM/DMARC)
    and the DNS server's event loop reading it: every method takes an internal lock, and
    readers get copies, never the live lists.
    """

    def __init__(self, origin: str, *, nameserver: str | None = None, hostmaster: str | None = None,
                 ttl: int = DEFAULT_TTL, records: Iterable[Record] = ()):
        self.origin = normalize_name(origin, "zone origin")
        if self.origin == ".":
            raise ConfigError("zone origin", "the root zone is not a lab zone", "give a domain such as example.com")
        self.ttl = ttl
        self._lock = threading.RLock()
        self._rrsets: dict[tuple[str, str], list[Record]] = {}
        ns = normalize_name(nameserver, "zone nameserver") if nameserver else f"ns.{self.origin}"
        contact = normalize_name(hostmaster, "zone hostmaster") if hostmaster else f"hostmaster.{self.origin}"
        # refresh, retry, expire are for secondaries (none in the lab); the last field is the
        # TTL of negative answers (RFC 2308 §4)
        self._put(Record(self.origin, "SOA", f"{ns} {contact} 1 3600 600 86400 {ttl}", ttl))
        self._put(Record(self.origin, "NS", ns, ttl))
        for record in records:
            self.add_record(record)

    def __repr__(self) -> str:
        return f"<Zone {self.origin}: {len(self.records())} records, serial {self.serial}>"

    # -- reading

    @property
    def soa(self) -> Record:
        with self._lock:
            return self._rrsets[(self.origin, "SOA")][0]

    @property
    def serial(self) -> int:
        return int(self.soa.value.split()[2])

    def contains(self, name: str) -> bool:
        """Whether ``name`` falls under this zone's origin (whether or not it has records)."""
        return is_subdomain(name, self.origin)

    def records(self) -> list[Record]:
        """Every record, SOA first, then NS, then the rest in the order they were added."""
        with self._lock:
            everything = [r for rrset in self._rrsets.values() for r in rrset]
        order = {"SOA": 0, "NS": 1}
        return sorted(everything, key=lambda r: (r.name != self.origin, order.get(r.type, 2)))

    def find(self, name: str, rtype: str | None = None) -> list[Record]:
        """The records at ``name`` of type ``rtype`` (every type when ``rtype`` is None)."""
        name = normalize_name(name, "name")
        with self._lock:
            if rtype is not None:
                return list(self._rrsets.get((name, rtype.upper()), ()))
            return [r for (n, _), rrset in self._rrsets.items() if n == name for r in rrset]

    def has_name(self, name: str) -> bool:
        """Whether ``name`` exists in the zone: it owns a record, or a name below it does.

        A name with nothing at it but names below it (``_domainkey.example.com`` when only
        ``mail._domainkey.example.com`` exists) is an "empty non-terminal": it exists, so a query
        for it gets NODATA, not NXDOMAIN (RFC 8020).
        """
        name = normalize_name(name, "name")
        suffix = "." + name
        with self._lock:
            return any(n == name or n.endswith(suffix) for n, _ in self._rrsets)

    # -- writing

    def add(self, name: str, rtype: str, value: str, ttl: int | None = None) -> Record:
        """Add one record, e.g. ``zone.add("_dmarc.example.com", "TXT", "v=DMARC1; p=none")``.

        Adding a record that is already there changes nothing (an RRset is a set).
        """
        return self.add_record(Record(name, rtype, value, self.ttl if ttl is None else ttl))

    def add_record(self, record: Record) -> Record:
        """Add a :class:`Record` (see :meth:`add`)."""
        if record.type == "SOA":
            raise ConfigError(f"zone {self.origin}: SOA", "a zone has exactly one SOA",
                              "use zone.replace(origin, 'SOA', value) to change it")
        with self._lock:
            self._check_fits(record)
            rrset = self._rrsets.get((record.name, record.type), [])
            if record in rrset:
                return record
            self._put(record)
            self._bump_serial()
        return record

    def remove(self, name: str, rtype: str | None = None, value: str | None = None) -> int:
        """Remove records at ``name`` (of type ``rtype``, with value ``value`` when given).

        Returns how many were removed. The SOA cannot be removed, only replaced.
        """
        name = normalize_name(name, "name")
        rtype = rtype.upper() if rtype else None
        if rtype == "SOA":
            raise ConfigError(f"zone {self.origin}: SOA", "cannot be removed: every zone has exactly one",
                              "use zone.replace(origin, 'SOA', ...) to change it")
        wanted = Record(name, rtype, value) if (rtype and value is not None) else None
        removed = 0
        with self._lock:
            for key in [k for k in self._rrsets if k[0] == name and k[1] != "SOA" and rtype in (None, k[1])]:
                keep = [r for r in self._rrsets[key] if wanted is not None and r != wanted]
                removed += len(self._rrsets[key]) - len(keep)
                if keep:
                    self._rrsets[key] = keep
                else:
                    del self._rrsets[key]
            if removed:
                self._bump_serial()
        return removed

    def replace(self, name: str, rtype: str, values: str | Iterable[str], ttl: int | None = None) -> list[Record]:
        """Make ``values`` the only records of type ``rtype`` at ``name``; return the new records.

        This is how a chapter publishes or changes an SPF, DKIM or DMARC record in a running lab::

            zone.replace("example.com", "TXT", "v=spf1 ip4:127.0.20.25 -all")

        An empty ``values`` removes the RRset (except the SOA). All new records are validated
        before anything changes.
        """
        if isinstance(values, str):
            values = [values]
        new = [Record(name, rtype, v, self.ttl if ttl is None else ttl) for v in values]
        key = (normalize_name(name, "name"), rtype.upper())
        if key[1] == "SOA" and len(new) != 1:
            raise ConfigError(f"zone {self.origin}: SOA", f"needs exactly one value, got {len(new)}")
        with self._lock:
            old = self._rrsets.pop(key, None)
            try:
                for record in new:
                    self._check_fits(record)
            except ConfigError:
                if old is not None:
                    self._rrsets[key] = old
                raise
            if new:
                self._rrsets[key] = []
                for record in new:
                    if record not in self._rrsets[key]:
                        self._rrsets[key].append(record)
            if key[1] != "SOA":
                self._bump_serial()
        return new

    # -- rendering

    def to_text(self) -> str:
        """The zone as zone-file text (RFC 1035 §5), as BIND's ``named-checkzone`` reads it.

        Owner names are written relative to ``$ORIGIN`` (``@`` for the apex); names inside
        values are absolute, with their final dot; a long TXT value is written as several
        quoted strings of at most 255 octets, with ``"`` and ``\\`` escaped.
        """
        lines = [f"; zone {self.origin}, serial {self.serial}", f"$ORIGIN {self.origin}.", f"$TTL {self.ttl}"]
        lines += [r.zone_line(self.origin) for r in self.records()]
        return "\n".join(lines) + "\n"

    def table(self, include_soa: bool = False) -> list[TableRow]:
        """The zone as the memo's MyDNS table: rows of (Hostname, Type, Content).

        Hostnames are shown in full (``mail._domainkey.example.com``), TXT contents as one text,
        however they are split on the wire. The SOA is left out unless asked for, as MyDNS does.
        """
        return [TableRow(r.name, r.type, r.value) for r in self.records() if include_soa or r.type != "SOA"]

    # -- internals

    def _check_fits(self, record: Record) -> None:
        if not self.contains(record.name):
            raise ConfigError(f"{record.type} record {record.name!r}: name",
                              f"is outside the zone {self.origin}",
                              f"add it to the zone its name falls under, or use a name ending in .{self.origin}")
        if record.type == "SOA" and record.name != self.origin:
            raise ConfigError(f"SOA record {record.name!r}: name", f"an SOA belongs at the apex {self.origin} only")
        others = [t for (n, t) in self._rrsets if n == record.name and t != record.type]
        if record.type == "CNAME" and (others or self._rrsets.get((record.name, "CNAME"))):
            raise ConfigError(f"CNAME record {record.name!r}", "a CNAME cannot share its name with other records",
                              "RFC 1034 §3.6.2: an alias has no other data; remove the others or use another name")
        if record.type != "CNAME" and (record.name, "CNAME") in self._rrsets:
            raise ConfigError(f"{record.type} record {record.name!r}", "the name is already a CNAME (an alias)",
                              "RFC 1034 §3.6.2: add the record at the name the CNAME points to")

    def _put(self, record: Record) -> None:
        self._rrsets.setdefault((record.name, record.type), []).append(record)

    def _bump_serial(self) -> None:
        soa = self.soa
        fields = soa.value.split()
        fields[2] = str((int(fields[2]) + 1) % 2**32)
        self._rrsets[(self.origin, "SOA")] = [Record(soa.name, "SOA", " ".join(fields), soa.ttl)]


def find_zone(zones: Iterable[Zone], name: str) -> Zone | None:
    """The zone that is authoritative for ``name``: the one with the longest origin above it."""
    best: Zone | None = None
    for zone in zones:
        if zone.contains(name) and (best is None or len(zone.origin) > len(best.origin)):
            best = zone
    return best


# --------------------------------------------------------------------------- the lab's zones

#: The reverse zone of the lab's loopback addresses.
REVERSE_ZONE = "127.in-addr.arpa"


def lab_zones(world: "World") -> list[Zone]:
    """The zones of the lab's "internet in a box", built from a :class:`labkit.core.world.World`.

    - one zone per mail domain, with its MX (preference 10, the FQDN of the host that receives
      its mail);
    - the zone of the name server's own name (``lab.test``), and every NS pointing at it;
    - an A record for every host name and alias, in the zone its name falls under (a host
      under no zone gets a zone for its parent domain);
    - the reverse zone ``127.in-addr.arpa`` with one PTR per address (the first host that has
      the address wins, as in :meth:`~labkit.core.world.World.flattened` where all share 127.0.0.1).
    """
    ns_host = world.host(world.service("dns").host)
    ns = ns_host.name
    zones: dict[str, Zone] = {}

    def zone_for(origin: str) -> Zone:
        origin = normalize_name(origin, "zone origin")
        if origin not in zones:
            zones[origin] = Zone(origin, nameserver=ns)
        return zones[origin]

    for domain, key in world.mail_domains.items():
        host = world.host(key)
        zone_for(domain).add(domain, "MX", f"10 {host.name}")
    zone_for(ns.split(".", 1)[1] if "." in ns else ns)

    for host in world.hosts:
        for name in (host.name, *host.aliases):
            zone = find_zone(zones.values(), name)
            if zone is None:
                zone = zone_for(name.split(".", 1)[1] if name.count(".") >= 2 else name)
            zone.add(name, "AAAA" if ":" in host.address else "A", host.address)

    reverse = Zone(REVERSE_ZONE, nameserver=ns)
    for i, host in enumerate(world.hosts):
        try:
            address = ipaddress.ip_address(host.address)
        except ValueError:
            raise ConfigError(f"world.hosts[{i}].address", f"{host.address!r} is not an IP address") from None
        if address not in ipaddress.ip_network("127.0.0.0/8"):
            raise ConfigError(f"world.hosts[{i}].address", f"{host.address} is not a loopback address",
                              "every lab host lives on 127.0.0.0/8; nothing may leave loopback")
        ptr = _name_text(dns.reversename.from_address(host.address))
        if not reverse.find(ptr, "PTR"):
            reverse.add(ptr, "PTR", host.name)
    built = [*zones.values(), reverse]
    for zone in built:  # a zone as first published: serial 1, however many records it was built with
        soa = zone.soa.value.split()
        zone.replace(zone.origin, "SOA", " ".join([*soa[:2], "1", *soa[3:]]))
    return built
