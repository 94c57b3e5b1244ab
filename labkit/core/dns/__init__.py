"""DNS for the lab: the zone model and the resolver factory (the server is :mod:`labkit.net.dnsserver`).

- :mod:`labkit.core.dns.zone` — records, zones, zone-file text, the memo's MyDNS table, and the
  lab's zones built from the :class:`labkit.core.world.World` (pure, no I/O);
- :mod:`labkit.core.dns.resolver` — one resolver pointed at the lab's server
  (:mod:`labkit.net.dnsserver`, a floor up), for dnspython and the mail
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
    # resolver
    "make_resolver", "use_resolver", "mx_hosts", "addresses", "txt_records",
    "DNSLookupError", "NullMXError",
]
