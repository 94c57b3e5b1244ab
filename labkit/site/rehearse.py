"""Rehearse with your own names: the lab world built from a site profile, and the bundle applied.

``Lab(site="mail-site.toml")`` (or ``labkit up --site ...``) plays your domain, your host name and
your ISP's smarthost on loopback: the lab DNS serves them, real Postfix says your name in HELO,
OpenDKIM signs for your domain with your selector, and the ISP takes your login (with a
throw-away lab password: the real one never enters the lab). With ``apply=True`` (the default)
the bundle is applied as it would be on the host: its records in the lab DNS, its relay policy in
the sandbox's main.cf, the OpenDKIM socket inside Postfix's queue folder (the chroot on Debian),
the ``dmarc:`` alias; ``labkit doctor --lab DIR`` is then green. ``apply=False`` (``--bare``)
starts the lab as chapter 07 does, before any step.

Nothing leaves loopback: the public address of the profile is played by the lab's own address
for your host, and its home network by the lab's home network.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ..auth.dkim import KEY_KINDS, DKIMKey
from ..dns.zone import find_zone
from ..files import write_secret
from ..postfix.config import PostfixConfig
from ..world import Account, World, default_world
from . import plan
from .profile import Profile

#: the lab's throw-away password for the profile's ISP login (never the real one)
LAB_ISP_PASSWORD = "isp-lab-password"


def site_world(profile: Profile) -> World:
    """The default lab world with the profile's names: your domain and host, your ISP's smarthost."""
    base = default_world()
    names = {"home": (profile.hostname, (profile.domain,)), "pc": (f"pc.{profile.domain}", ()),
             "isp": (profile.smarthost_host, (profile.isp_domain,) if profile.isp_domain != profile.smarthost_host
                     else ())}
    hosts = tuple(dataclasses.replace(h, name=names[h.key][0], aliases=names[h.key][1]) if h.key in names else h
                  for h in base.hosts)
    accounts = (
        Account(f"alice@{profile.domain}", "alice-lab-password", "submission",
                "you: a mailbox on your own server, and the login at its submission port"),
        Account(profile.smarthost_user, LAB_ISP_PASSWORD, "smarthost",
                "your ISP login, with a throw-away lab password (the real one never enters the lab)"),
        *[a for a in base.accounts if a.role in ("inbox", "verifier")],
        Account(f"postmaster@{profile.domain}", None, "mta", "your postmaster (RFC 5321 requires one)"),
        *([Account(profile.rua_address, None, "mta", "where DMARC aggregate reports arrive")]
          if profile.dmarc_rua and profile.rua_address.endswith("@" + profile.domain) else []),
    )
    mail_domains = {profile.domain: "home", profile.isp_domain: "isp",
                    **{d: k for d, k in base.mail_domains.items() if k in ("inbox", "verifier")}}
    txt = ((profile.isp_domain, f"v=spf1 a:{profile.smarthost_host} -all"),
           *[(n, t) for n, t in base.txt_records if not n.endswith("isp.example.net")])
    return dataclasses.replace(base, hosts=hosts, accounts=accounts, mail_domains=mail_domains, txt_records=txt)


def lab_profile(lab: Any) -> Profile:
    """The lab's profile: the site's names, the lab's own address and home network."""
    home = lab.world.host(lab.world.service("mta").host)
    return plan.for_lab(lab.site, home.address, lab.world.home_network)


def publish(lab: Any, dkim_record: str | None = None) -> list[Any]:
    """Publish the bundle's records (MX, A, SPF, DKIM when known, DMARC) in the lab DNS."""
    published = []
    for r in plan.records(lab_profile(lab), dkim_record):
        if "DKIM1" in r.value and dkim_record is None:
            continue
        zone = find_zone(lab.zones, r.name)
        zone.replace(r.name, r.type, r.value)
        published.append(r)
    return published


def embedded_key(lab: Any) -> DKIMKey:
    """In embedded mode (no OpenDKIM): a key with the profile's selector, kept in SANDBOX/site and
    published, so that what the lab signs by hand (labkit.auth.dkim.sign) verifies at the provider."""
    p = lab.site
    kind = f"rsa{p.dkim_bits}" if f"rsa{p.dkim_bits}" in KEY_KINDS else "rsa2048"
    key = DKIMKey.generate(p.domain, p.dkim_selector, kind)
    folder = Path(lab.dir) / "site"
    folder.mkdir(mode=0o700, exist_ok=True)
    write_secret(folder / f"{p.dkim_selector}.private", key.private_pem())
    find_zone(lab.zones, key.record_name).replace(key.record_name, "TXT", key.record)
    return key


def opendkim_socket(sandbox: Path) -> tuple[str, str]:
    """(Socket, chroot): OpenDKIM's socket inside the sandbox Postfix's queue folder, as on Debian."""
    queue = sandbox / "postfix" / "queue"
    queue.mkdir(mode=0o755, parents=True, exist_ok=True)
    os.chmod(sandbox / "postfix", 0o755)
    return f"local:{queue}/opendkim/opendkim.sock", str(queue)


def postfix(lab: Any, cfg: PostfixConfig) -> PostfixConfig:
    """The lab's Postfix configuration with the bundle's relay policy and the dmarc: alias."""
    profile = lab.site
    host = plan.postfix_config(profile)
    applied = plan.sandboxed(host, cfg)
    aliases = dict(cfg.aliases)
    for line in plan.aliases_lines(profile):
        name, _, target = line.partition(":")
        aliases[name.strip()] = target.strip()
    return dataclasses.replace(applied, aliases=aliases)


def status(lab: Any) -> dict[str, Any]:
    """What ``labkit doctor --lab`` needs to check this lab as your host."""
    p = lab_profile(lab)
    key = Path(lab.dir) / "site" / f"{p.dkim_selector}.private"
    return {"profile": lab.site.to_toml(), "public_ip": p.public_ip, "home_network": p.home_network,
            "applied": lab.site_apply, "source": lab.site.source,
            **({"dkim_key": str(key)} if key.exists() else {})}


__all__ = ["LAB_ISP_PASSWORD", "embedded_key", "lab_profile", "opendkim_socket", "postfix", "publish", "site_world", "status"]
