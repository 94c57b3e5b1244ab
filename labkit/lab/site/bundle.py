"""``labkit bundle``: exactly what to apply to your host, rendered from the site profile.

:func:`render` is pure: it returns ``{relative path: (text, mode)}`` from a :class:`Profile`
(and, optionally, the ISP password, which goes into ``postfix/sasl_passwd`` and nowhere else).
:func:`write` puts that into a folder atomically: everything is written into a temporary folder
beside the target, which is renamed at the end; on any error nothing is left.

The bundle::

    APPLY.md                      the ordered steps for the target, each with its check
    profile.toml                  the profile it was made from (no secret)
    postfix/postconf.sh           the postconf -e commands (only what changes)
    postfix/main.cf               the resulting main.cf lines
    postfix/sasl_passwd           KEY user:password (a template unless the password was given), 0600
    postfix/aliases               the dmarc: line for /etc/aliases
    opendkim/commands.sh          opendkim-genkey, the key's owner and mode, the socket folder, adduser
    opendkim/opendkim.conf        the lines to set in /etc/opendkim.conf
    opendkim/KeyTable, SigningTable, TrustedHosts
    dns/records.txt               SPF, DKIM, DMARC, MX (and A) in the profile's style
    dns/zone-fragment.txt         the same as zone-file lines
    dns/ask-the-isp.txt           the PTR record only the ISP can set
"""
from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from pathlib import Path

from ...errors import ConfigError
from ...real.opendkim.config import read_conf
from ...real.postfix.config import Secret
from . import plan
from .profile import Profile

#: opendkim.conf lines left to the system's own file (Debian sets them already)
_OPENDKIM_SYSTEM_OWNED = ("PidFile", "Syslog", "SyslogSuccess", "LogWhy")


def _sh(lines: list[str], what: str) -> str:
    return "\n".join(["#!/bin/sh", f"# {what}", "# rendered by labkit bundle; run as root, or read it and type each line",
                      "set -eu", *lines, ""])


def postconf_script(profile: Profile) -> str:
    cfg = plan.postfix_config(profile)
    out = []
    for st, cmd in zip(cfg.settings(), cfg.postconf_commands()):
        out += [f"# {st.name}: {st.why}", cmd]
    return _sh(out, f"Postfix for {profile.hostname}: the postconf -e lines (only what changes)")


def main_cf_lines(profile: Profile) -> str:
    cfg = plan.postfix_config(profile)
    out = ["# /etc/postfix/main.cf: the lines postconf.sh leaves there (postconf -n shows them)"]
    out += [f"{name} = {value}".rstrip() for name, value in plan.postconf_lines(cfg)]
    return "\n".join(out) + "\n"


def opendkim_conf_lines(profile: Profile) -> str:
    cfg = plan.opendkim_config(profile)
    values = read_conf(cfg.render_conf())
    out = ["# /etc/opendkim.conf: set each of these lines (replace the file's own Socket line).",
           "# Described in opendkim.conf(5). The socket is inside Postfix's chroot (/var/spool/postfix),",
           "# where Debian's chrooted smtpd finds it as local:opendkim/opendkim.sock."]
    out += [f"{name} {value}" for name, value in values.items() if name not in _OPENDKIM_SYSTEM_OWNED]
    return "\n".join(out) + "\n"


def opendkim_commands(profile: Profile) -> str:
    key = plan.key_path(profile)
    folder = os.path.dirname(key)
    q = shlex.quote
    lines = [
        "# the key: opendkim-genkey (ERRATA 9: 2048 bits unless the profile says otherwise)",
        f"install -d -o opendkim -g opendkim -m 700 {q(folder)}",
        f"opendkim-genkey -b {profile.dkim_bits} -d {q(profile.domain)} -s {q(profile.dkim_selector)} -D {q(folder)}",
        f"chown opendkim:opendkim {q(key)}",
        f"chmod 600 {q(key)}",
        "# the tables next to opendkim.conf",
        "install -d -m 755 /etc/opendkim",
        "install -m 644 KeyTable SigningTable TrustedHosts /etc/opendkim/",
        "# the socket's folder inside Postfix's chroot, and Postfix in OpenDKIM's group to reach it",
        f"install -d -o opendkim -g opendkim -m 750 {plan.CHROOT}/opendkim",
        "adduser postfix opendkim",
    ]
    return _sh(lines, f"OpenDKIM for {profile.domain}, selector {profile.dkim_selector}")


def steps(profile: Profile) -> list[dict[str, str]]:
    """APPLY.md's steps as rows: ``step`` (what), ``commands``, ``check`` and what it ``prints`` when right."""
    return [{"step": f"{n}. {title}", "commands": "\n".join(cmds), "check": check, "prints": expect}
            for n, (title, cmds, check, expect) in enumerate(_steps(profile), 1)]


def _steps(profile: Profile) -> list[tuple[str, list[str], str, str]]:
    t = plan.target(profile)
    key = plan.key_path(profile)
    txt = key.replace(".private", ".txt")
    relay = profile.relayhost
    mt = t.map_type
    alias = plan.aliases_lines(profile)
    steps: list[tuple[str, list[str], str, str]] = [
        ("Keep a copy of what is there now (the rollback puts it back)",
         ["[ -d /etc/postfix ] && sudo cp -a /etc/postfix /etc/postfix.before-mail-site || true",
          "[ -f /etc/aliases ] && sudo cp -a /etc/aliases /etc/aliases.before-mail-site || true",
          "[ -f /etc/opendkim.conf ] && sudo cp -a /etc/opendkim.conf /etc/opendkim.conf.before-mail-site || true"],
         "ls -d /etc/*.before-mail-site", "/etc/postfix.before-mail-site (and the others that existed)"),
        ("Install the packages (Postfix asks its questions: choose \"Internet with smarthost\", "
         f"system mail name {profile.domain}, relay host {relay})",
         [f"sudo apt-get install {' '.join(t.packages)}"],
         "dpkg-query -W -f='${Status}\\n' libsasl2-modules", "install ok installed"),
        ("Postfix: the main.cf lines (relay through the ISP with SMTP AUTH over required, verified TLS; the milter)",
         ["sudo sh postfix/postconf.sh"],
         "postconf -h relayhost smtp_tls_security_level", f"{relay}\nsecure"),
        ("Postfix: the ISP login (fill in the password if the template still says "
         f"{plan.PASSWORD_PLACEHOLDER}), then its map",
         ["sudo install -m 600 -o root -g root postfix/sasl_passwd /etc/postfix/sasl_passwd",
          "sudoedit /etc/postfix/sasl_passwd   # only if it still holds the placeholder",
          f"sudo postmap {mt}:/etc/postfix/sasl_passwd"],
         f"sudo postmap -q '{relay}' {mt}:/etc/postfix/sasl_passwd | cut -d: -f1; sudo stat -c '%a %U' "
         f"/etc/postfix/sasl_passwd", f"{profile.smarthost_user}\n600 root"),
        ("OpenDKIM: the key, the tables, the socket folder inside Postfix's chroot, Postfix in the opendkim group",
         ["cd opendkim && sudo sh commands.sh && cd .."],
         f"sudo stat -c '%a %U' {key}; id -nG postfix", "600 opendkim\npostfix opendkim"),
        ("OpenDKIM: set the lines of opendkim/opendkim.conf in /etc/opendkim.conf (replacing its Socket line)",
         ["sudoedit /etc/opendkim.conf"],
         "sudo opendkim -n -x /etc/opendkim.conf && echo ok", "ok"),
        ("The dmarc: alias, where the DMARC aggregate reports arrive",
         [f"echo '{alias[0]}' | sudo tee -a /etc/aliases" if alias else "# (rua is outside your domain: no alias)",
          "sudo newaliases"],
         f"postalias -q dmarc {mt}:/etc/aliases", profile.dmarc_alias_to if alias else "(nothing)"),
        ("Restart both and let Postfix check itself",
         ["sudo systemctl restart opendkim postfix", "sudo postfix check"],
         "systemctl is-active opendkim postfix", "active\nactive"),
        (f"DNS: enter the records of dns/records.txt at your DNS host; the DKIM content is the p=... of {txt}",
         [f"sudo cat {txt}"],
         f"dig +short txt {profile.dkim_selector}._domainkey.{profile.domain}; dig +short mx {profile.domain}; "
         f"sudo opendkim-testkey -d {profile.domain} -s {profile.dkim_selector} -vvv",
         f"\"v=DKIM1; ...\"\n10 {profile.hostname}.\n... key OK  (\"key not secure\" only means no DNSSEC)"),
        ("Reverse DNS: ask the ISP to set the PTR of dns/ask-the-isp.txt",
         [], f"dig +short -x {profile.public_ip}", f"{profile.hostname}."),
        ("Send a test to a verifier (the memo's check-auth@verifier.port25.com answers with a report) and to a "
         "mailbox at a big provider; open it there with \"Show original\"",
         [f"printf 'Subject: test from {profile.hostname}\\n\\nhello\\n' | sendmail -f postmaster@{profile.domain} "
          "check-auth@verifier.port25.com"],
         t.log_command.replace(" -f", "") + " | grep status=",
         f"status=sent (250 ...) relay={profile.smarthost_host}...; the report and \"Show original\" say "
         "SPF: pass, DKIM: pass, DMARC: pass"),
        ("Ask the doctor: every check passes (exit status 0)",
         [f"labkit doctor --site {os.path.basename(profile.source)} --online --login"],
         "echo $?", "0"),
    ]
    return steps


def apply_md(profile: Profile) -> str:
    t = plan.target(profile)
    key = plan.key_path(profile)
    steps = _steps(profile)
    out = [f"# Applying the mail site {profile.domain} to {t.name}", "",
           f"Host {profile.hostname} ({profile.public_ip}) relays through [{profile.smarthost_host}]:"
           f"{profile.smarthost_port} as {profile.smarthost_user}, signs with DKIM selector "
           f"{profile.dkim_selector} ({profile.dkim_bits} bits), publishes DMARC p={profile.dmarc_policy}.",
           "Rehearse first, offline: `labkit up --site mail-site.toml --real`, then `labkit doctor --lab mail-lab`.",
           "", "Run the commands from this folder, in this order. After each step, run its check: it must print "
           "what is shown.", "",
           "master.cf: no change (Debian's own runs smtpd chrooted in /var/spool/postfix, which is why the "
           "OpenDKIM socket lives there).", ""]
    for n, (title, cmds, check, expect) in enumerate(steps, 1):
        out += [f"## {n}. {title}", ""]
        if cmds:
            out += ["```sh", *cmds, "```", ""]
        out += ["Check:", "", "```sh", check, "```", "", "prints:", "", "```", expect, "```", ""]
    out += ["## Where the logs are", "", f"On {t.name}: {t.logs}.", "", "```sh", t.log_command, "```", "",
            "## Rollback (in this order)", "",
            "1. `sudo systemctl stop postfix opendkim`",
            "2. `sudo rm -rf /etc/postfix && sudo mv /etc/postfix.before-mail-site /etc/postfix` (if Postfix "
            "was there before; else `sudo apt-get purge postfix`)",
            "3. `sudo mv /etc/aliases.before-mail-site /etc/aliases && sudo newaliases` (if it was there)",
            "4. `[ -f /etc/opendkim.conf.before-mail-site ] && sudo mv /etc/opendkim.conf.before-mail-site "
            "/etc/opendkim.conf`",
            f"5. `sudo rm -f /etc/opendkim/KeyTable /etc/opendkim/SigningTable /etc/opendkim/TrustedHosts` "
            f"(keep {key} if its record is published)",
            "6. `sudo deluser postfix opendkim`",
            "7. remove the records of dns/records.txt at your DNS host (the DKIM record last: signed mail "
            "still in flight needs it)",
            "8. `sudo systemctl start postfix` (and opendkim if it ran before)", ""]
    return "\n".join(out)


def render(profile: Profile, password: Secret | str | None = None) -> dict[str, tuple[str, int]]:
    """Every file of the bundle: relative path -> (text, mode). Pure."""
    cfg = plan.postfix_config(profile, Secret(password) if isinstance(password, str) else password)
    dk = plan.opendkim_config(profile)
    files: dict[str, tuple[str, int]] = {
        "APPLY.md": (apply_md(profile), 0o644),
        "profile.toml": (profile.to_toml(), 0o644),
        "postfix/postconf.sh": (postconf_script(profile), 0o755),
        "postfix/main.cf": (main_cf_lines(profile), 0o644),
        "postfix/sasl_passwd": (cfg.render_sasl_passwd(), 0o600),
        "postfix/aliases": ("\n".join(["# add to /etc/aliases, then: newaliases", *plan.aliases_lines(profile)])
                            + "\n", 0o644),
        "opendkim/commands.sh": (opendkim_commands(profile), 0o755),
        "opendkim/opendkim.conf": (opendkim_conf_lines(profile), 0o644),
        "opendkim/KeyTable": (dk.render_key_table(), 0o644),
        "opendkim/SigningTable": (dk.render_signing_table(), 0o644),
        "opendkim/TrustedHosts": (dk.render_trusted_hosts(), 0o644),
        "dns/records.txt": (plan.render_records(profile), 0o644),
        "dns/zone-fragment.txt": (plan.zone_fragment(profile), 0o644),
        "dns/ask-the-isp.txt": (f"Ask your ISP for this reverse DNS (PTR) record:\n"
                                f"  {profile.public_ip} -> {profile.hostname}\n"
                                f"  {plan.ptr_record(profile).zone_line('in-addr.arpa')}\n", 0o644),
    }
    return files


def write(profile: Profile, out: str | os.PathLike, password: Secret | str | None = None, *,
          force: bool = False) -> Path:
    """Write the bundle into the folder ``out`` atomically; return it.

    ``out`` must not exist (or ``force``: it is replaced as a whole). Everything is rendered
    first, written into a temporary folder beside ``out``, then renamed: on any error nothing
    is left, and an existing folder is untouched.
    """
    target = Path(out).absolute()
    if target.exists() and not force:
        raise ConfigError("--out", f"{target} exists already", "give a new folder, or --force to replace it")
    files = render(profile, password)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    old: Path | None = None
    try:
        os.chmod(tmp, 0o755)
        for rel, (text, mode) in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.chmod(path, mode)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.rename(target, old)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            os.rename(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


__all__ = ["apply_md", "steps", "main_cf_lines", "opendkim_commands", "opendkim_conf_lines", "postconf_script", "render",
           "write"]
