"""What a site needs, rendered from its profile by the lab's own renderers (pure, no I/O).

One code path renders what the lab runs and what the bundle holds:

- :func:`postfix_config` — a :class:`labkit.real.postfix.config.PostfixConfig` for the host
  (/etc/postfix): the smarthost relay with SASL and required TLS, the OpenDKIM milter on a
  unix socket inside Postfix's chroot, /etc/aliases. :func:`sandboxed` moves the same relay
  policy onto a lab's own Postfix configuration (its folders, ports and lab CA);
- :func:`opendkim_config` — a :class:`labkit.real.opendkim.config.OpenDKIMConfig` for the host
  (/etc/opendkim, the socket in /var/spool/postfix/opendkim);
- :func:`records` — MX, A, SPF, DKIM and DMARC as :class:`labkit.core.dns.Record` objects, built
  with :func:`labkit.core.auth.spf.spf_record` and :func:`labkit.core.auth.dmarc.dmarc_record`, and the
  PTR to ask the ISP for; :func:`render_records` writes them in the profile's DNS style;
- :func:`for_lab` — the profile as the lab plays it: the same names, the lab's loopback addresses.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass

from ...core.auth.dmarc import dmarc_record
from ...core.auth.spf import spf_record
from ...core.dns.zone import Record, Zone
from ...real.opendkim.config import OpenDKIMConfig, SigningKey
from ...real.postfix.config import PostfixConfig, Secret
from .profile import Profile

#: the password's place in a sasl_passwd template, when the bundle is not given the password
PASSWORD_PLACEHOLDER = "YOUR-ISP-PASSWORD"
#: the CA bundle of Debian and Ubuntu (package ca-certificates): the ISP's certificate is checked
SYSTEM_CA_FILE = "/etc/ssl/certs/ca-certificates.crt"
#: Postfix's queue directory: smtpd runs chrooted there on Debian, so the milter socket lives below it
CHROOT = "/var/spool/postfix"
#: the OpenDKIM socket as Postfix's chrooted smtpd names it (relative to the chroot)
MILTER = "local:opendkim/opendkim.sock"
DKIM_SOCKET = f"local:{CHROOT}/opendkim/opendkim.sock"
OPENDKIM_DIR = "/etc/opendkim"
LOOPBACK_NETWORKS = ("127.0.0.0/8", "[::ffff:127.0.0.0]/104", "[::1]/128")


@dataclass(frozen=True)
class Target:
    """What differs between the systems a bundle is applied to."""

    name: str
    map_type: str  #: postmap's table type: hash (Berkeley DB) or lmdb (Debian 13 dropped Berkeley DB)
    postfix: str  #: the Postfix release it ships
    logs: str  #: where Postfix's log is
    log_command: str  #: how to read it
    packages: tuple[str, ...] = ("postfix", "libsasl2-modules", "opendkim", "opendkim-tools", "ca-certificates")


TARGETS = {
    "debian-12": Target("debian-12", "hash", "3.7", "the systemd journal (Debian 12 has no rsyslog by default; "
                        "/var/log/mail.log only if you install rsyslog)", "journalctl -u postfix@- -u opendkim -f"),
    "debian-13": Target("debian-13", "lmdb", "3.10", "the systemd journal (no rsyslog by default)",
                        "journalctl -u postfix@- -u opendkim -f", packages=(
                            "postfix", "postfix-lmdb", "libsasl2-modules", "opendkim", "opendkim-tools",
                            "ca-certificates")),
    "ubuntu-24.04": Target("ubuntu-24.04", "hash", "3.8", "/var/log/mail.log (rsyslog) and the journal",
                           "tail -f /var/log/mail.log"),
}


def target(profile: Profile) -> Target:
    return TARGETS[profile.target]


# --------------------------------------------------------------------------- Postfix

def postfix_config(profile: Profile, password: Secret | str | None = None, *,
                   config_directory: str = "/etc/postfix", ca_file: str = SYSTEM_CA_FILE,
                   milter: str = MILTER) -> PostfixConfig:
    """The host's Postfix: the memo's smarthost client, with what the memo left out (ERRATA 7, 8).

    ``password`` None leaves :data:`PASSWORD_PLACEHOLDER` in sasl_passwd, for the user to fill in.
    """
    extra = {"smtp_tls_wrappermode": "yes"} if profile.smarthost_port == 465 else {}
    return PostfixConfig(
        myhostname=profile.hostname, mydomain=profile.domain, myorigin=profile.domain,
        mydestination=(profile.hostname, profile.domain, "localhost"),
        inet_interfaces="all", inet_protocols="all", mynetworks=LOOPBACK_NETWORKS,
        relay_host=profile.smarthost_host, relay_port=profile.smarthost_port, relay_brackets=True,
        smtp_sasl_auth_enable=True, sasl_user=profile.smarthost_user,
        sasl_password=password if password is not None else Secret(PASSWORD_PLACEHOLDER),
        smtp_sasl_security_options="noplaintext, noanonymous", smtp_sasl_tls_security_options="noanonymous",
        smtp_tls_security_level="secure", smtp_tls_CAfile=ca_file,
        smtp_tls_secure_cert_match=(profile.smarthost_host,),
        smtpd_milters=(milter,), non_smtpd_milters=(milter,), milter_default_action="accept", milter_protocol=6,
        map_type=target(profile).map_type, config_directory=config_directory, aliases_file="/etc/aliases",
        extra=extra)


#: the fields of the host's configuration that a lab's Postfix takes over when the bundle is
#: applied to it: the relay policy. Folders, ports, addresses and the CA stay the lab's.
POLICY_FIELDS = ("relay_brackets", "smtp_sasl_auth_enable", "smtp_sasl_security_options",
                 "smtp_sasl_tls_security_options", "smtp_sasl_mechanism_filter", "smtp_tls_security_level",
                 "smtpd_relay_restrictions", "compatibility_level", "milter_default_action", "milter_protocol",
                 "map_type", "myorigin", "mydomain")


def sandboxed(host: PostfixConfig, lab: PostfixConfig) -> PostfixConfig:
    """``lab`` (a lab's running Postfix configuration) with ``host``'s relay policy applied."""
    changes = {name: getattr(host, name) for name in POLICY_FIELDS}
    extra = dict(lab.extra)
    extra.pop("smtp_tls_wrappermode", None)
    extra.update({k: v for k, v in host.extra.items() if k == "smtp_tls_wrappermode"})
    return dataclasses.replace(lab, extra=extra, **changes)


def postconf_lines(cfg: PostfixConfig) -> list[tuple[str, str]]:
    """(name, value) of every main.cf line the configuration sets (only what differs from defaults)."""
    return [(s.name, s.value) for s in cfg.settings()]


def aliases_lines(profile: Profile) -> list[str]:
    """The lines to add to /etc/aliases: the ``dmarc`` alias that receives the aggregate reports."""
    local, _, domain = profile.rua_address.partition("@")
    if profile.dmarc_rua and domain == profile.domain:
        return [f"{local}: {profile.dmarc_alias_to}"]
    return []


# --------------------------------------------------------------------------- OpenDKIM

def key_path(profile: Profile, keys_dir: str = f"{OPENDKIM_DIR}/keys") -> str:
    return f"{keys_dir}/{profile.domain}/{profile.dkim_selector}.private"


def opendkim_config(profile: Profile, *, directory: str = OPENDKIM_DIR, socket: str = DKIM_SOCKET,
                    key_file: str | None = None, record: str = "") -> OpenDKIMConfig:
    """The host's OpenDKIM: signs mail From: @DOMAIN with SELECTOR, listens inside Postfix's chroot."""
    key = SigningKey(profile.domain, profile.dkim_selector, key_file or key_path(profile), record)
    return OpenDKIMConfig(directory, socket=socket, keys=(key,),
                          internal_hosts=("127.0.0.1", "::1", "localhost", profile.hostname),
                          socket_group="opendkim", chroot=CHROOT)


# --------------------------------------------------------------------------- DNS

def spf_text(profile: Profile) -> str:
    """SPF for the domain: your own range (the memo's ip4:.../24) and the ISP's servers (include:)."""
    return spf_record(ip4=[profile.home_network], include=[profile.isp_domain], all="~")


def dmarc_text(profile: Profile) -> str:
    return dmarc_record(profile.dmarc_policy, rua=[profile.dmarc_rua] if profile.dmarc_rua else [])


def ptr_name(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer


def records(profile: Profile, dkim_record: str | None = None) -> list[Record]:
    """The records to publish in the domain's zone (MX, A, SPF, DKIM, DMARC), in that order.

    ``dkim_record`` None: the DKIM row's content is a placeholder naming the file that
    ``opendkim-genkey`` writes on the host.
    """
    d = profile.domain
    out = [Record(d, "MX", f"10 {profile.hostname}"), Record(profile.hostname, "A", profile.public_ip),
           Record(d, "TXT", spf_text(profile))]
    out.append(Record(f"{profile.dkim_selector}._domainkey.{d}", "TXT",
                      dkim_record or "v=DKIM1; h=sha256; k=rsa; p=PUBLIC-KEY-FROM-"
                      f"{profile.dkim_selector.upper()}.TXT"))
    out.append(Record(f"_dmarc.{d}", "TXT", dmarc_text(profile)))
    return out


def ptr_record(profile: Profile) -> Record:
    """What to ask the ISP for: the PTR of your address naming your host (their zone, not yours)."""
    return Record(ptr_name(profile.public_ip), "PTR", profile.hostname)


def zone_fragment(profile: Profile, dkim_record: str | None = None) -> str:
    """The records as zone-file lines for ``$ORIGIN DOMAIN.`` (the SOA and NS are your DNS host's)."""
    zone = Zone(profile.domain, records=records(profile, dkim_record))
    lines = [r.zone_line(profile.domain) for r in zone.records() if r.type not in ("SOA", "NS")]
    return "\n".join([f"; records for {profile.domain}: add them to its zone (rendered by labkit)",
                      f"$ORIGIN {profile.domain}.", *lines,
                      f"; PTR (the ISP's reverse zone, ask them): {ptr_record(profile).zone_line('in-addr.arpa')}",
                      ""])


def render_records(profile: Profile, dkim_record: str | None = None, style: str | None = None) -> str:
    """The records in the profile's DNS style: ``mydns`` (Hostname / Type / Content, as MyDNS's
    form has them), ``bind`` (zone-file lines) or ``table`` (name, type, value, what it is for)."""
    style = style or profile.dns_style
    recs = records(profile, dkim_record)
    if style == "bind":
        return zone_fragment(profile, dkim_record)
    what = {"MX": "where mail for the domain goes", "A": "the server's address"}
    rows = []
    for r in recs:
        if r.type == "TXT":
            kind = "SPF" if r.value.startswith("v=spf1") else "DKIM" if "DKIM1" in r.value else "DMARC"
            rows.append((r.name, r.type, r.value, kind))
        else:
            rows.append((r.name, r.type, r.value, what.get(r.type, "")))
    ptr = ptr_record(profile)
    if style == "mydns":
        head = ("Hostname", "Type", "Content")
        body = [(n, t, c) for n, t, c, _ in rows]
        note = f"# Not in MyDNS: ask your ISP to set the PTR of {profile.public_ip} to {profile.hostname}"
    else:
        head = ("Name", "Type", "Value", "For")
        body = rows + [(ptr.name, "PTR", ptr.value, "reverse DNS: ask the ISP (their zone)")]
        note = ""
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
           "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
    if note:
        out.append(note)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- the lab's view

def for_lab(profile: Profile, home_address: str, home_network: str) -> Profile:
    """The profile as the lab plays it: the same names, the lab's loopback address and network
    in place of the public ones (the lab never leaves loopback)."""
    return dataclasses.replace(profile, public_ip=home_address, home_network=home_network)


__all__ = ["CHROOT", "DKIM_SOCKET", "MILTER", "PASSWORD_PLACEHOLDER", "POLICY_FIELDS", "TARGETS", "Target",
           "aliases_lines", "dmarc_text", "for_lab", "key_path", "opendkim_config", "postconf_lines",
           "postfix_config", "ptr_record", "records", "render_records", "sandboxed", "spf_text", "target",
           "zone_fragment"]
