"""Chapter 09 exercises: not a stepping stone (踏み台): the relay battery and mynetworks."""
from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING, Any

from ...result import Result
from . import exercise

if TYPE_CHECKING:  # the lab floor, for type hints only
    from ...lab.lab import Lab


def _trusted(lab: Lab, address: str) -> bool:
    from ...core.smtp.policy import in_networks

    return in_networks(address, lab.postfix_config.mynetworks) if lab.postfix_config is not None else False


@exercise("09.1")
def _battery_refused(lab: Lab, report: Any = None) -> Result:
    """A BatteryReport of the whole battery, run against the lab's Postfix from outside mynetworks,
    in which every attempt was refused."""
    from ..relaytest import BATTERY, BatteryReport

    if not isinstance(report, BatteryReport):
        return Result(False, "pass report= what relaytest.run_against_lab(lab) returned")
    mta = lab.services["mta"]
    if report.server != f"{mta.name}:{mta.standard_port}":
        return Result(False, f"that battery ran against {report.server}, not the lab's Postfix")
    keys = {r.attempt.key for r in report.results}
    missing = [a.key for a in BATTERY if a.key not in keys]
    if missing:
        return Result(False, f"the battery is incomplete: {', '.join(missing)} missing")
    if report.source is None or _trusted(lab, report.source):
        return Result(False, f"it ran from {report.source}, which is in mynetworks: a trusted client may relay. "
                      "Run it from outside (the default source, relaytest.STRANGER)")
    if not report.all_refused:
        return Result(False, f"Postfix accepted {', '.join(r.key for r in report.accepted)}: it is an open relay "
                      "now. Look at mynetworks and smtpd_relay_restrictions")
    # The report must be what the lab's Postfix says: run the battery again, from the same source.
    from ..relaytest import run_against_lab

    again = run_against_lab(lab, report.source)
    differ = [(r.key, r.refused, r.reply.code, again[r.key].refused, again[r.key].reply.code)
              for r in report.results if (r.refused, r.reply.code) != (again[r.key].refused, again[r.key].reply.code)]
    if differ:
        key, _, code, now_refused, now_code = differ[0]
        return Result(False, f"the report is not what the lab's Postfix answers: for {key} it says {code}, and "
                      f"Postfix now answers {now_code} ({'refused' if now_refused else 'ACCEPTED'}); run the battery "
                      "against the lab (relaytest.run_against_lab(lab)) and pass what it returns",
                      {"again": again})
    return Result(True, f"right: all {len(report)} attempts from {report.source} refused "
                  f"({sorted({r.reply.code for r in report.results})}), and Postfix answers the same again",
                  {"again": again})


@exercise("09.2")
def _mynetworks(lab: Lab, answer: Any = None) -> Result:
    """A mynetworks that trusts your own hosts (mail.example.com and the PC) and no one else."""
    from ...errors import ConfigError
    from ...real.postfix.config import check_network

    if isinstance(answer, str):
        answer = answer.replace(",", " ").split()
    if not answer:
        return Result(False, "pass answer= a list of networks, e.g. ['192.0.2.0/24']")
    try:
        nets = [ipaddress.ip_network(check_network("mynetworks", n), strict=True) for n in answer]
    except ConfigError as e:
        return Result(False, str(e))
    world = lab.world
    own = [world.host("home").address, world.host("pc").address]
    others = [h for h in world.hosts if h.key not in ("home", "pc")]

    def covered(addr: str) -> bool:
        ip = ipaddress.ip_address(addr)
        return any(ip.version == n.version and ip in n for n in nets)

    left_out = [a for a in own if not covered(a)]
    if left_out:
        return Result(False, f"{', '.join(left_out)} would not be trusted: your own server and PC must be")
    strangers = [f"{h.name} ({h.address})" for h in others if covered(h.address)]
    from ..relaytest import STRANGER

    if covered(STRANGER):
        strangers.append(f"the stranger {STRANGER}")
    if strangers:
        return Result(False, "that also trusts " + ", ".join(strangers) + ": they could relay through you")
    return Result(True, f"right: {', '.join(map(str, nets))} trusts mail.example.com and pc.example.com, and none "
                  "of the other hosts")


@exercise("09.3")
def _relay_code(lab: Lab, answer: Any = None) -> Result:
    """The reply code Postfix gives a stranger's relay attempt (measured here)."""
    from ..relaytest import BATTERY, run_against_lab

    try:
        code = int(answer)
    except (TypeError, ValueError):
        return Result(False, f"{answer!r} is not a reply code; give three digits")
    measured = run_against_lab(lab, attempts=[BATTERY[0]]).results[0].reply
    if code == measured.code:
        return Result(True, f"right: {measured} (5.7.1: delivery not authorized; permanent, so a spammer's "
                      "software gives up)")
    return Result(False, f"{code} is not it; try RCPT TO a third party from relaytest.STRANGER and read the reply")


@exercise("09.4")
def _careless_count(lab: Lab, answer: Any = None, mynetworks: str | tuple[str, ...] = "127.0.0.0/8") -> Result:
    """How many battery attempts a careless ``mynetworks`` lets through from the stranger. The
    checker applies it, runs the battery, and puts the lab's own configuration back."""
    import dataclasses

    from .. import breakfix
    from ..relaytest import run_against_lab

    try:
        count = int(answer)
    except (TypeError, ValueError):
        return Result(False, f"{answer!r} is not a number: count the attempts the stranger got through with "
                      "that mynetworks (the battery's ACCEPTED rows)")
    nets = (mynetworks,) if isinstance(mynetworks, str) else tuple(mynetworks)
    before = lab.postfix_config
    breakfix.apply_config(lab, dataclasses.replace(before, mynetworks=nets))
    try:
        report = run_against_lab(lab)
    finally:
        breakfix.apply_config(lab, before)
    got = len(report.accepted)
    if count == got:
        return Result(True, f"right: with mynetworks = {' '.join(nets)}, {got} of {len(report)} attempts from "
                      f"{report.source} were accepted: permit_mynetworks comes first and trusts them all",
                      {"accepted": [r.key for r in report.accepted]})
    return Result(False, f"{count} is not it; apply that mynetworks with breakfix.apply_config and run the battery")
