"""Chapter 03 exercises: DNS for mail (MX preference, TXT, PTR) against the lab DNS."""
from __future__ import annotations

from ...core.dns import DNSLookupError, mx_hosts, txt_records
from ...i18n import N_
from ...lab.lab import Lab
from ...result import Result
from ..dnsview import reverse_name
from . import exercise


@exercise("03.1")
def _mx_preference(lab: Lab, preference: int | None = None, domain: str = "inbox.example.org",
                   host: str = "mx.inbox.example.org") -> Result:
    """The MX preference with which ``domain`` names ``host``, as the lab DNS answers now."""
    try:
        mx = mx_hosts(lab.resolver(), domain)
    except DNSLookupError as e:
        return Result(False, N_('the lab DNS gives no MX for {domain}: {e}').format(domain=domain, e=e))
    prefs = [p for p, h in mx if h == host]
    if not prefs:
        return Result(False, N_("{domain}'s MX records do not name {host} now ({mx}); restore the zone").format(
            domain=domain, host=host, mx=mx))
    try:
        given = int(preference)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return Result(False, N_('{preference!r} is not a number; the preference is the number before the host in the '
                                'MX answer').format(preference=preference))
    if given == prefs[0]:
        return Result(True, N_('right: {domain} MX {given} {host}').format(
            domain=domain, given=given, host=host), {"mx": mx})
    return Result(False, N_('{given} is not it; run dig ... mx {domain} and read the number before {host}').format(
        given=given, domain=domain, host=host))


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
        return Result(False, N_('the record is published, but nobody has asked for it yet: check it with dig ... txt '
                                '{name}').format(name=name))
    return Result(True, N_('right: {name} TXT {text!r} is published and the lab DNS answered {len} TXT '
                           'question(s) for it').format(name=name, text=text, len=len(asked)), {"values": values})


@exercise("03.3")
def _ptr(lab: Lab, name: str | None = None, address: str = "127.0.40.25") -> Result:
    """The name ``address`` maps back to (its PTR record)."""
    try:
        want = reverse_name(lab.resolver(), address)
    except DNSLookupError as e:
        return Result(False, N_('the lab DNS has no PTR for {address}: {e}').format(address=address, e=e))
    if str(name or "").strip().rstrip(".").lower() == want:
        return Result(True, N_('right: {address} maps back to {want}').format(
            address=address, want=want), {"name": want})
    return Result(False, N_('{name!r} is not it: ask for the PTR record (dig ... -x {address})').format(
        name=name, address=address))
