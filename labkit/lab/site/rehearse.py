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
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

from ...core.auth.dkim import KEY_KINDS, DKIMKey
from ...core.dns.zone import find_zone
from ...files import write_secret
from ...real.opendkim.config import SigningKey, genkey, read_conf
from ...real.opendkim.runner import OpenDKIMRunner
from ...real.postfix.config import PostfixConfig, format_relayhost
from ...core.world import Account, World, default_world
from . import plan
from .doctor import parse_key_table, parse_main_cf
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
    published, so that what the lab signs by hand (labkit.core.auth.dkim.sign) verifies at the provider."""
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


# --------------------------------------------------------------------------- applying a written bundle

#: main.cf parameters the lab keeps its own values for: its sandbox decides where Postfix listens,
#: whom it trusts (the lab's hosts share 127.0.0.0/8) and where it delivers
LAB_OWNED = ("mydestination", "inet_interfaces", "inet_protocols", "mynetworks")


def _host_paths(lab: Any) -> dict[str, str]:
    """Host path -> its place in the lab's sandbox (longest first)."""
    pf = Path(lab.postfix_config.config_directory)
    queue = Path(lab.postfix_config.queue_directory)
    return {"/etc/postfix": str(pf), "/etc/aliases": str(pf / "aliases"),
            "/etc/opendkim": str(Path(lab.dir) / "opendkim" / "site"),
            "/var/spool/postfix": str(queue), "/etc/ssl/certs/ca-certificates.crt": str(lab.ca_path)}


def _translate(text: str, paths: dict[str, str]) -> str:
    for host, sandbox in sorted(paths.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(host, sandbox)
    return text


def apply_bundle(lab: Any, folder: str | os.PathLike) -> list[str]:
    """Apply a bundle written by ``labkit bundle`` to a running real-mode site lab, as APPLY.md
    says to apply it to the host, in place of /etc: its ``postconf -e`` commands (with ``-c`` the
    sandbox), its sasl_passwd (the lab's throw-away password filled in) and ``postmap``, the
    dmarc alias and ``postalias``, OpenDKIM's key (``opendkim-genkey``), tables and socket inside
    Postfix's queue folder, then its DNS records in the lab DNS. The host's paths become the
    sandbox's and its public names the lab's addresses. Returns what was done, step by step.
    """
    folder = Path(folder)
    cfg = lab.postfix_config
    paths = _host_paths(lab)
    done: list[str] = []
    isp = lab.services["smarthost"]
    lab_relay = format_relayhost(isp.host, isp.port, True)
    host_relay = lab.site.relayhost
    queue = paths["/var/spool/postfix"]

    # 1. OpenDKIM: the key (opendkim-genkey), the tables, the socket inside Postfix's queue folder
    keys = parse_key_table((folder / "opendkim" / "KeyTable").read_text())
    _name, domain, selector, host_key = keys[0]
    key_dir = Path(_translate(os.path.dirname(host_key), paths))
    key_dir.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    key = (SigningKey.load(key_dir, domain, selector) if (key_dir / f"{selector}.private").exists()
           else genkey(key_dir, domain, selector, lab.site.dkim_bits))
    done.append(f"opendkim-genkey -b {lab.site.dkim_bits} -d {domain} -s {selector} -D {key_dir}")
    bundle_conf = read_conf((folder / "opendkim" / "opendkim.conf").read_text())
    socket = _translate(bundle_conf["Socket"], paths)
    trusted = [h for h in (folder / "opendkim" / "TrustedHosts").read_text().splitlines()
               if h and not h.startswith("#")]
    lab_hosts = [f"{lab.world.host(k).address}/32" for k in ("home", "pc")]
    old = lab.opendkim_config
    new = dataclasses.replace(old, socket=socket, chroot=queue, keys=(key,),
                              internal_hosts=tuple(dict.fromkeys([*trusted, *lab_hosts])))
    new.write()
    checked = new.check()
    if not checked.ok:
        raise RuntimeError(f"the bundle's OpenDKIM configuration did not pass opendkim -n: {checked.reason}")
    lab.opendkim_runner.stop()
    lab.opendkim_runner = OpenDKIMRunner(new.conf_path, events=lab.ctx.events, host=lab.world.host("home").name).start()
    lab.opendkim_config, lab.dkim_key = new, key
    done.append(f"opendkim.conf: Socket {socket}; KeyTable, SigningTable, TrustedHosts; restarted")

    # 2. Postfix: the bundle's postconf -e lines, with -c the sandbox
    for line in (folder / "postfix" / "postconf.sh").read_text().splitlines():
        if not line.startswith("postconf -e "):
            continue
        name, _, value = shlex.split(line)[2].partition("=")
        name, value = name.strip(), value.strip()
        if name in LAB_OWNED:
            continue
        if name == "relayhost":
            value = lab_relay
        elif name in ("smtpd_milters", "non_smtpd_milters"):
            value = f"unix:{queue}/{value.split(':', 1)[1]}"  # no chroot in the sandbox: the full path
        else:
            value = _translate(value, paths)
        proc = subprocess.run(["postconf", "-c", cfg.config_directory, "-e", f"{name} = {value}"],
                              capture_output=True, text=True, check=False)
        if proc.returncode or proc.stderr.strip():
            raise RuntimeError(f"postconf -e '{name} = {value}': {proc.stderr.strip()}")
        done.append(f"postconf -e '{name} = {value}'")
    main = parse_main_cf(Path(cfg.config_directory, "main.cf").read_text())
    map_type = main["smtp_sasl_password_maps"].split(":", 1)[0]

    # 3. sasl_passwd from the template (the lab's throw-away password filled in), then postmap
    sasl = (folder / "postfix" / "sasl_passwd").read_text().replace(host_relay, lab_relay)
    sasl = sasl.replace(plan.PASSWORD_PLACEHOLDER, lab.world.logins("smarthost")[lab.site.smarthost_user])
    sasl_path = Path(cfg.config_directory) / "sasl_passwd"
    write_secret(sasl_path, sasl)
    past = time.time() - 2  # postmap waits while its source is younger than a second
    os.utime(sasl_path, (past, past))
    subprocess.run(["postmap", "-c", cfg.config_directory, f"{map_type}:{sasl_path}"], check=True)
    done.append(f"sasl_passwd (0600), postmap {map_type}:{sasl_path}")

    # 4. the dmarc: alias, then postalias (newaliases)
    aliases = Path(paths["/etc/aliases"])
    lines = [x for x in (folder / "postfix" / "aliases").read_text().splitlines() if x and not x.startswith("#")]
    have = aliases.read_text().splitlines() if aliases.exists() else ["postmaster: root"]
    aliases.write_text("\n".join(dict.fromkeys([*have, *lines])) + "\n")
    os.utime(aliases, (past, past))
    subprocess.run(["postalias", "-c", cfg.config_directory, f"{map_type}:{aliases}"], check=True)
    done.append(f"aliases: {', '.join(lines)}; postalias")
    lab.postfix_runner.reload()
    done.append("postfix reload")
    # what the sandbox now holds, as a typed configuration (break-it steps restore to it)
    milter = f"unix:{socket.split(':', 1)[1]}"
    lab.postfix_config = dataclasses.replace(postfix(lab, cfg), smtpd_milters=(milter,), non_smtpd_milters=(milter,))

    # 5. DNS: the records of the bundle, the public names played by the lab's addresses
    published = publish(lab, key.record)
    done.append("DNS: " + ", ".join(f"{r.name} {r.type}" for r in published))
    return done


__all__.append("apply_bundle")
