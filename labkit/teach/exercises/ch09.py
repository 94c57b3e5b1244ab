"""Chapter 09 exercises: not a stepping stone (踏み台): the relay battery and mynetworks."""
from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from ...core.smtp.policy import in_networks
from ...errors import ConfigError
from ...i18n import N_
from ...lab.lab import Lab
from ...real.postfix.config import check_network
from ...result import Result
from .. import breakfix
from ..relaytest import BATTERY, STRANGER, BatteryReport, run_against_lab
from . import exercise


def _trusted(lab: Lab, address: str) -> bool:
    return in_networks(address, lab.postfix_config.mynetworks) if lab.postfix_config is not None else False


@exercise("09.1")
def _battery_refused(lab: Lab, report: Any = None) -> Result:
    """A BatteryReport of the whole battery, run against the lab's Postfix from outside mynetworks,
    in which every attempt was refused."""
    if not isinstance(report, BatteryReport):
        return Result(False, N_('pass report= what relaytest.run_against_lab(lab) returned'))
    mta = lab.services["mta"]
    if report.server != f"{mta.name}:{mta.standard_port}":
        return Result(False, N_("that battery ran against {server}, not the lab's Postfix").format(
            server=report.server))
    keys = {r.attempt.key for r in report.results}
    missing = [a.key for a in BATTERY if a.key not in keys]
    if missing:
        return Result(False, N_('the battery is incomplete: {join} missing').format(join=', '.join(missing)))
    if report.source is None or _trusted(lab, report.source):
        return Result(False, N_('it ran from {source}, which is in mynetworks: a trusted client may relay. Run it from '
                                'outside (the default source, relaytest.STRANGER)').format(source=report.source))
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
    if isinstance(answer, str):
        answer = answer.replace(",", " ").split()
    if not answer:
        return Result(False, N_("pass answer= a list of networks, e.g. ['192.0.2.0/24']"))
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
        return Result(False, N_('{join} would not be trusted: your own server and PC must be').format(
            join=', '.join(left_out)))
    strangers = [f"{h.name} ({h.address})" for h in others if covered(h.address)]

    if covered(STRANGER):
        strangers.append(f"the stranger {STRANGER}")
    if strangers:
        return Result(False, N_('that also trusts ') + ", ".join(strangers) + N_(': they could relay through you'))
    return Result(True, N_('right: {join} trusts mail.example.com and '
                           'pc.example.com, and none of the other hosts').format(join=', '.join(map(str, nets))))


@exercise("09.3")
def _relay_code(lab: Lab, answer: Any = None) -> Result:
    """The reply code Postfix gives a stranger's relay attempt (measured here)."""
    try:
        code = int(answer)
    except (TypeError, ValueError):
        return Result(False, N_('{answer!r} is not a reply code; give three digits').format(answer=answer))
    measured = run_against_lab(lab, attempts=[BATTERY[0]]).results[0].reply
    if code == measured.code:
        return Result(True, N_("right: {measured} (5.7.1: delivery not authorized; permanent, so a spammer's software "
                               'gives up)').format(measured=measured))
    return Result(False, N_('{code} is not it; try RCPT TO a third party from relaytest.STRANGER '
                            'and read the reply').format(code=code))


@exercise("09.4")
def _careless_count(lab: Lab, answer: Any = None, mynetworks: str | tuple[str, ...] = "127.0.0.0/8") -> Result:
    """How many battery attempts a careless ``mynetworks`` lets through from the stranger. The
    checker applies it, runs the battery, and puts the lab's own configuration back."""
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
        return Result(True, N_('right: with mynetworks = {join}, {got} of {len} attempts from {source} were accepted: '
                               'permit_mynetworks comes first and trusts them all').format(
                                   join=' '.join(nets), got=got, len=len(report), source=report.source),
                      {"accepted": [r.key for r in report.accepted]})
    return Result(False, N_('{count} is not it; apply that mynetworks with breakfix.apply_config and run the '
                            'battery').format(count=count))
