"""Chapter 14 exercises: from the lab to your own host (a profile, the bundle, the doctor)."""
from __future__ import annotations

from typing import Any

from ...result import Result
from . import exercise

#: the fault -> the doctor check it fails (what 14.2 asks)
FAULT_CHECKS = {
    "sasl_passwd changed, postmap forgotten": "postfix.sasl-map-current",
    "relayhost written without brackets": "postfix.relayhost-bracketed",
    "the memo's six lines only (smtp_tls_security_level = may)": "postfix.tls-level",
    "the ISP's server is down": "net.smarthost-reachable",
    "sasl_passwd keyed host:port, relayhost [host]:port": "postfix.sasl-key-matches-relayhost",
}


def _rfc2606(name: str) -> bool:
    """Whether ``name`` is an RFC 2606 name: example.com/.net/.org or under .example, .test, .invalid."""
    return any(name == d or name.endswith("." + d) for d in
               ("example.com", "example.net", "example.org", "example", "test", "invalid"))


@exercise("14.1")
def _profile(lab: Any, answer: str = "") -> Result:
    """A profile (TOML text) for a site that relays on port 465 with DMARC p=quarantine, RFC 2606 names only."""
    from ...lab.site.bundle import render
    from ...lab.site.profile import ProfileError, parse

    try:
        p = parse(answer or "", source="your profile")
    except ProfileError as e:
        return Result(False, f"the profile does not load: {e}")
    names = [p.domain, p.hostname, p.smarthost_host, p.smarthost_user.rpartition("@")[2] or p.smarthost_host]
    if not all(_rfc2606(n) for n in names):
        return Result(False, f"use RFC 2606 names only (example.com/.net/.org, .example, .test): {', '.join(names)}")
    if p.smarthost_port != 465:
        return Result(False, f"port is {p.smarthost_port}: the exercise asks for 465 (TLS from the first byte)")
    if p.dmarc_policy != "quarantine":
        return Result(False, f"policy is {p.dmarc_policy}: the exercise asks for quarantine")
    main_cf = render(p)["postfix/main.cf"][0]
    if "smtp_tls_wrappermode = yes" not in main_cf:
        return Result(False, "the bundle has no smtp_tls_wrappermode = yes (unexpected)")
    return Result(True, f"right: it loads, relays to [{p.smarthost_host}]:465 with smtp_tls_wrappermode = yes, and "
                  "publishes p=quarantine", {"relayhost": p.relayhost})


@exercise("14.2")
def _faults(lab: Any, answer: dict[str, str] | None = None) -> Result:
    """For each fault of FAULT_CHECKS, the id of the doctor check that names it."""
    answer = answer or {}
    missing = [k for k in FAULT_CHECKS if k not in answer]
    if missing:
        return Result(False, f"no answer yet for: {missing[0]!r}")
    wrong = [k for k, v in FAULT_CHECKS.items() if answer[k] != v]
    if wrong:
        return Result(False, f"not that check for {wrong[0]!r}: run labkit doctor and read the row that fails")
    return Result(True, "right: each fault fails one check, which names it and prints the fix")


@exercise("14.3")
def _named(lab: Any, answer: str = "") -> Result:
    """Break one thing in the running rehearsal, then give the id of the one check the doctor fails."""
    from ...lab.site.doctor import examine_lab

    if lab is None or getattr(lab, "site", None) is None or not lab.running:
        return Result(False, "this exercise needs the running rehearsal: Lab(site=..., real=True)")
    failing = [f.id for f in examine_lab(lab.status(), login=True) if f.status == "fail"]
    if not failing:
        return Result(False, "the doctor finds nothing wrong: break one thing first (a breakfix step)")
    if len(failing) > 1:
        return Result(False, f"{len(failing)} checks fail ({', '.join(failing)}): break one thing at a time")
    if answer != failing[0]:
        return Result(False, f"{answer!r} passes; read the doctor's rows again")
    return Result(True, f"right: {failing[0]} names it; now restore (breakfix.restore) and run the doctor again")
