"""DNS for the lab: the zone model, the authoritative server ("ns.lab") and the resolver factory.

- :mod:`labkit.dns.zone` — records, zones, zone-file text, the memo's MyDNS table, and the
  lab's zones built from the :class:`labkit.world.World` (pure, no I/O);
- :mod:`labkit.dns.server` — an authoritative server on UDP and TCP that reads the zones live;
- :mod:`labkit.dns.resolver` — one resolver pointed at it, for dnspython and the mail
  authentication libraries, and the MX / address / TXT lookups a mail system makes.

Errors: bad records raise :class:`labkit.errors.ConfigError`; failed lookups raise
:class:`DNSLookupError` and its subclass :class:`NullMXError` (both :class:`labkit.errors.LabError`).
Importing this package does no I/O.
"""
from __future__ import annotations

from .resolver import (
    DNSLookupError,
    NullMXError,
    addresses,
    make_resolver,
    mx_hosts,
    txt_records,
    use_resolver,
)
from .server import DNSServer, Lookup, Query, lookup, respond, serve
from .zone import (
    DEFAULT_TTL,
    REVERSE_ZONE,
    TXT_STRING_MAX,
    TYPES,
    Record,
    TableRow,
    Zone,
    describe_type,
    find_zone,
    join_txt,
    lab_zones,
    normalize_name,
    relative_name,
    split_txt,
)

__all__ = [
    # zone model
    "Record", "Zone", "TableRow", "TYPES", "DEFAULT_TTL", "TXT_STRING_MAX", "REVERSE_ZONE",
    "split_txt", "join_txt", "normalize_name", "relative_name", "describe_type", "find_zone",
    "lab_zones",
    # server
    "DNSServer", "serve", "lookup", "respond", "Lookup", "Query",
    # resolver
    "make_resolver", "use_resolver", "mx_hosts", "addresses", "txt_records",
    "DNSLookupError", "NullMXError",
]
