"""Chapter 03 exercises: DNS for mail (MX preference, TXT, PTR) against the lab DNS."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ...result import Result
from . import exercise

if TYPE_CHECKING:  # the lab floor, for type hints only
    from ...lab.lab import Lab


@exercise("03.1")
def _mx_preference(lab: Lab, preference: int | None = None, domain: str = "inbox.example.org",
                   host: str = "mx.inbox.example.org") -> Result:
    """The MX preference with which ``domain`` names ``host``, as the lab DNS answers now."""
    from ...core.dns import DNSLookupError, mx_hosts

    try:
        mx = mx_hosts(lab.resolver(), domain)
    except DNSLookupError as e:
        return Result(False, f"the lab DNS gives no MX for {domain}: {e}")
    prefs = [p for p, h in mx if h == host]
    if not prefs:
        return Result(False, f"{domain}'s MX records do not name {host} now ({mx}); restore the zone")
    try:
        given = int(preference)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return Result(False, f"{preference!r} is not a number; the preference is the number before the "
                             "host in the MX answer")
    if given == prefs[0]:
        return Result(True, f"right: {domain} MX {given} {host}", {"mx": mx})
    return Result(False, f"{given} is not it; run dig ... mx {domain} and read the number before {host}")


@exercise("03.2")
def _txt_published(lab: Lab, name: str = "note.example.com", text: str = "hello-lab") -> Result:
    """A TXT record ``text`` published at ``name`` in the running lab, and asked for by the learner.

    The checker reads the zone the lab DNS answers from, and never asks the DNS itself: every TXT
    question for ``name`` in the lab DNS's query list was asked by someone else (``dig``, dnspython).
    """
    from ...core.dns import find_zone

    zone = find_zone(lab.zones, name)
    if zone is None:
        return Result(False, f"no lab zone holds {name}")
    values = ["".join(r.strings) for r in zone.find(name, "TXT")]
    if not values:
        return Result(False, f"the lab DNS has no TXT at {name} yet; add it to the zone of {zone.origin}: "
                             f"zone.add({name!r}, 'TXT', {text!r})")
    if text not in values:
        return Result(False, f"{name} has TXT {values}, not {text!r}")
    asked = [q for q in lab.dns_queries() if q.name == name and q.type == "TXT"]
    if not asked:
        return Result(False, f"the record is published, but nobody has asked for it yet: check it with "
                             f"dig ... txt {name}")
    return Result(True, f"right: {name} TXT {text!r} is published and the lab DNS answered "
                        f"{len(asked)} TXT question(s) for it", {"values": values})


@exercise("03.3")
def _ptr(lab: Lab, name: str | None = None, address: str = "127.0.40.25") -> Result:
    """The name ``address`` maps back to (its PTR record)."""
    from ...core.dns import DNSLookupError
    from ..dnsview import reverse_name

    try:
        want = reverse_name(lab.resolver(), address)
    except DNSLookupError as e:
        return Result(False, f"the lab DNS has no PTR for {address}: {e}")
    if str(name or "").strip().rstrip(".").lower() == want:
        return Result(True, f"right: {address} maps back to {want}", {"name": want})
    return Result(False, f"{name!r} is not it: ask for the PTR record (dig ... -x {address})")
