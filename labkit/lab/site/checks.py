"""The doctor's checks: pure functions over what was read from a host (or a lab), no I/O.

:mod:`labkit.lab.site.doctor` reads the host — main.cf, sasl_passwd's key (never its password), the
OpenDKIM files, the aliases, DNS answers, a smarthost dialogue — into a :class:`Facts`; each
check here looks at those facts and returns one :class:`Finding`: its ``id``, ``status``
(``pass``, ``warn`` or ``fail``), ``why`` (one sentence), the memo ``section`` it belongs to
and the ``fix`` (a command or what to change). :func:`run` runs every check that has facts to
look at. A check that depends on another one which failed says so with ``warn`` rather than
failing too, so that one fault is named once.
"""
from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.hazmat.primitives.serialization import load_der_public_key

from ...core.auth.dkim import parse_tags
from ...core.auth.dmarc import parse_dmarc_tags
from ...real.postfix.config import KNOWN_DEFAULTS, parse_relayhost
from .profile import Profile

PASS, WARN, FAIL = "pass", "warn", "fail"
STATUS_ORDER = {PASS: 0, WARN: 1, FAIL: 2}

#: the memo's sections (and the chapter that runs each)
S_RELAY = "SMTP リレーホストへのログインについて (ch. 07)"
S_POSTFIX = "Postfix の設定 (ch. 07)"
S_DEBUG = "デバッグ (ch. 08)"
S_RELAYING = "踏み台にならない (ch. 09)"
S_SPF = "SPF (ch. 10)"
S_DKIM = "DKIM (OpenDKIM) (ch. 11)"
S_DMARC = "DMARC (ch. 12)"
S_DNS = "FQDN, MX, MyDNS (ch. 03)"
S_TLS = "STARTTLS, SASL (ch. 05)"


@dataclass(frozen=True)
class Finding:
    id: str
    status: str
    why: str
    section: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class FileInfo:
    """What ``stat`` says about a file: enough for owner, mode and freshness checks."""

    path: str
    exists: bool = False
    mode: int = 0
    owner: str = ""
    group: str = ""
    mtime_ns: int = 0
    kind: str = ""  #: file, dir, socket


@dataclass
class Facts:
    """Everything the checks look at. A field left None was not read (the checks on it do not run)."""

    profile: Profile  #: the names expected (in a lab: the lab's addresses in place of the public ones)
    where: str = "host"  #: host or lab
    sudo: str = "sudo "  #: prefix of the fix commands
    postfix_dir: str = "/etc/postfix"
    main_cf: dict[str, str] | None = None  #: parameters set in main.cf (as written)
    sasl_keys: list[tuple[str, str]] | None = None  #: (key, user) of each sasl_passwd entry; no password
    sasl_file: FileInfo | None = None
    sasl_map: FileInfo | None = None  #: the indexed map (.db, .lmdb...) or None if missing
    sasl_modules: str | None = None  #: where libsasl2-modules' PLAIN/LOGIN plugins are; "" if absent
    opendkim: dict[str, str] | None = None  #: opendkim.conf entries
    opendkim_conf: str = "/etc/opendkim.conf"
    key_table: list[tuple[str, str, str, str]] | None = None  #: (name, domain, selector, key file)
    signing_table: list[tuple[str, str]] | None = None  #: (pattern, key name)
    trusted_hosts: list[str] | None = None
    key_file: FileInfo | None = None
    private_key_b64: str | None = None  #: the public half (SPKI, base64) of the private key
    socket_dir: FileInfo | None = None
    postfix_groups: set[str] | None = None  #: the groups user postfix is in
    aliases: dict[str, str] | None = None
    aliases_file: FileInfo | None = None
    aliases_map: FileInfo | None = None
    maillog: tuple[str, str] | None = None  #: (where, how to read it), or ("", why not found)
    dns: dict[str, Any] | None = None
    net: dict[str, Any] | None = None
    #: the configuration files the doctor looked for and could not read (None: it did not look)
    unread: list[str] | None = None
    #: in a lab: the ephemeral port -> the standard port it plays (587, 465)
    port_plays: dict[int, int] = field(default_factory=dict)

    def relay_port(self) -> int | None:
        """The smarthost port of relayhost, as the standard port it plays (25 when none is given)."""
        relay = self.param("relayhost")
        if not relay:
            return None
        port = parse_relayhost(relay)[1] or 25
        return self.port_plays.get(port, port)

    # -- Postfix's effective values
    def param(self, name: str) -> str:
        """A main.cf parameter's value: as set, else Postfix's default; ``$name`` expanded once."""
        assert self.main_cf is not None
        value = self.main_cf.get(name, KNOWN_DEFAULTS.get(name, ""))
        return re.sub(r"\$\{?([a-z_0-9]+)\}?", lambda m: self.main_cf.get(m.group(1), KNOWN_DEFAULTS.get(
            m.group(1), "")) if m.group(1) != name else "", value)

    def words(self, name: str) -> list[str]:
        return [w for w in re.split(r"[\s,]+", self.param(name)) if w]


Check = Callable[[Facts], Finding]
REGISTRY: list[tuple[str, str, str, Check]] = []  #: (id, section, needs, function)


def check(id: str, section: str, needs: str):
    """Register a check that runs when ``Facts.<needs>`` was read."""
    def wrap(fn: Callable[[Facts], tuple[str, str, str]]) -> Check:
        def run_one(f: Facts) -> Finding:
            status, why, fix = fn(f)
            return Finding(id, status, why, section, fix)
        run_one.__name__ = fn.__name__
        run_one.__doc__ = fn.__doc__
        REGISTRY.append((id, section, needs, run_one))
        return run_one
    return wrap


def _pc(f: Facts, name: str, value: str) -> str:
    return f"{f.sudo}postconf -e '{name} = {value}' && {f.sudo}postfix reload"


# =========================================================================== Postfix, local

@check("local.configs-read", S_POSTFIX, "unread")
def _configs(f):
    if f.unread:
        return FAIL, f"could not read {', '.join(f.unread)}: the checks of what it holds did not run", \
            "apply the bundle first (APPLY.md), or run the doctor as root, or give --postfix-dir / --opendkim-conf"
    return PASS, f"read main.cf in {f.postfix_dir} and {f.opendkim_conf}", ""


@check("postfix.myhostname", S_POSTFIX, "main_cf")
def _myhostname(f):
    got = f.param("myhostname")
    if got.lower().rstrip(".") == f.profile.hostname:
        return PASS, f"myhostname is {got}: the name in HELO, the MX target and the PTR agree", ""
    return FAIL, f"myhostname is {got or '(the machine name)'}, not {f.profile.hostname}", \
        _pc(f, "myhostname", f.profile.hostname)


@check("postfix.relayhost-bracketed", S_RELAY, "main_cf")
def _relay_brackets(f):
    relay = f.param("relayhost")
    if not relay:
        return FAIL, "relayhost is empty: Postfix delivers straight to MX hosts, and the ISP blocks port 25 (OP25B)", \
            _pc(f, "relayhost", f.profile.relayhost)
    host, _port, brackets = parse_relayhost(relay)
    if brackets:
        return PASS, f"relayhost {relay} is bracketed: Postfix connects to that host, no MX look-up", ""
    return FAIL, f"relayhost {relay} has no brackets: Postfix looks up MX records of {host} instead (ERRATA 7)", \
        _pc(f, "relayhost", f.profile.relayhost) + f"  # and the same key in sasl_passwd, then postmap"


@check("postfix.relayhost-port", S_RELAY, "main_cf")
def _relay_port(f):
    relay = f.param("relayhost")
    if not relay:
        return WARN, "no relayhost (see postfix.relayhost-bracketed)", ""
    port = f.relay_port()
    if port in (587, 465):
        return PASS, f"the smarthost is reached on port {port} (submission{'s' if port == 465 else ''})", ""
    return FAIL, f"relayhost {relay} uses port {port}: from home only 587 or 465 reach the ISP (OP25B)", \
        _pc(f, "relayhost", f.profile.relayhost)


@check("postfix.tls-wrappermode", S_TLS, "main_cf")
def _wrapper(f):
    port = f.relay_port()
    wrapper = f.param("smtp_tls_wrappermode") == "yes"
    if port == 465 and not wrapper:
        return FAIL, "port 465 speaks TLS from the first byte, but smtp_tls_wrappermode is not yes: Postfix waits " \
                     "for a greeting that never comes", _pc(f, "smtp_tls_wrappermode", "yes")
    if port != 465 and wrapper:
        return FAIL, f"smtp_tls_wrappermode = yes on port {port}: 587 starts in clear and upgrades with STARTTLS", \
            _pc(f, "smtp_tls_wrappermode", "no")
    return PASS, ("implicit TLS on 465 (smtp_tls_wrappermode = yes)" if port == 465 else
                  "STARTTLS on 587 (no wrapper mode)"), ""


@check("postfix.sasl-enabled", S_RELAY, "main_cf")
def _sasl_enabled(f):
    if f.param("smtp_sasl_auth_enable") == "yes" and f.param("smtp_sasl_password_maps"):
        return PASS, f"SMTP AUTH to the smarthost is on, logins in {f.param('smtp_sasl_password_maps')}", ""
    return FAIL, "smtp_sasl_auth_enable is not yes or smtp_sasl_password_maps is empty: the ISP answers 530", \
        _pc(f, "smtp_sasl_auth_enable", "yes")


def _map_names(f: Facts) -> tuple[str, str]:
    spec = f.param("smtp_sasl_password_maps").split(",")[0].strip()
    kind, _, path = spec.partition(":")
    return kind, path


@check("postfix.sasl-map-mode", S_RELAY, "sasl_file")
def _sasl_mode(f):
    bad = [fi for fi in (f.sasl_file, f.sasl_map) if fi is not None and fi.exists and (fi.mode & 0o077)]
    if f.sasl_file is None or not f.sasl_file.exists:
        return FAIL, "there is no sasl_passwd file", f"{f.sudo}install -m 600 postfix/sasl_passwd {f.postfix_dir}/"
    if bad:
        return FAIL, ", ".join(f"{fi.path} is mode {fi.mode:04o}" for fi in bad) + \
            ": others can read the ISP password", f"{f.sudo}chmod 600 " + " ".join(fi.path for fi in bad)
    owners = {fi.owner for fi in (f.sasl_file, f.sasl_map) if fi is not None and fi.exists}
    return PASS, f"sasl_passwd and its map are 0600, owned by {', '.join(sorted(owners))}", ""


@check("postfix.sasl-map-current", S_RELAY, "sasl_file")
def _sasl_current(f):
    kind, path = _map_names(f) if f.main_cf is not None else ("hash", "sasl_passwd")
    if f.sasl_file is None or not f.sasl_file.exists:
        return WARN, "no sasl_passwd (see postfix.sasl-map-mode)", ""
    if f.sasl_map is None or not f.sasl_map.exists:
        return FAIL, f"sasl_passwd has no {kind} map: Postfix reads only the map", f"{f.sudo}postmap {kind}:{path}"
    if f.sasl_map.mtime_ns < f.sasl_file.mtime_ns:
        return FAIL, f"sasl_passwd is newer than {f.sasl_map.path}: the change is not in what Postfix reads", \
            f"{f.sudo}postmap {kind}:{path} && {f.sudo}postfix reload"
    return PASS, f"{f.sasl_map.path} is newer than sasl_passwd", ""


@check("postfix.sasl-key-matches-relayhost", S_RELAY, "sasl_keys")
def _sasl_key(f):
    relay = f.param("relayhost") if f.main_cf is not None else f.profile.relayhost
    keys = [k for k, _u in f.sasl_keys or []]
    if relay in keys:
        user = dict(f.sasl_keys)[relay]
        return PASS, f"sasl_passwd has an entry for {relay} (user {user})", ""
    return FAIL, f"no sasl_passwd entry is keyed {relay!r} (keys: {', '.join(keys) or 'none'}): Postfix sends no " \
                 "AUTH and the ISP answers 530 (ERRATA 7)", \
        f"key the line exactly '{relay} USER:PASSWORD', then {f.sudo}postmap {':'.join(_map_names(f))}"


@check("postfix.sasl-modules", S_RELAY, "sasl_modules")
def _sasl_modules(f):
    if f.sasl_modules:
        return PASS, f"libsasl2-modules is installed ({f.sasl_modules}): Postfix can do AUTH PLAIN and LOGIN", ""
    return FAIL, "libsasl2-modules is not installed: Postfix logs 'no mechanism available' and defers", \
        f"{f.sudo}apt-get install libsasl2-modules"


@check("postfix.tls-level", S_TLS, "main_cf")
def _tls_level(f):
    level = f.param("smtp_tls_security_level")
    if level == "secure" and not f.param("smtp_tls_CAfile") and not f.param("smtp_tls_CApath"):
        return FAIL, "smtp_tls_security_level = secure but no CA is named: no certificate can be verified", \
            _pc(f, "smtp_tls_CAfile", "/etc/ssl/certs/ca-certificates.crt")
    if level in ("encrypt", "secure", "verify", "dane-only", "fingerprint"):
        return PASS, f"smtp_tls_security_level = {level}: no TLS, no mail, so a stripped STARTTLS cannot expose " \
                     "the password", ""
    return FAIL, f"smtp_tls_security_level = {level or '(empty)'}: if STARTTLS is stripped on the way the password " \
                 "is sent in clear (ERRATA 8)", _pc(f, "smtp_tls_security_level", "secure")


@check("postfix.sasl-security-options", S_TLS, "main_cf")
def _sasl_opts(f):
    opts = f.words("smtp_sasl_security_options")
    if "noanonymous" in opts:
        return PASS, f"smtp_sasl_security_options = {', '.join(opts)}: anonymous logins refused", ""
    return FAIL, f"smtp_sasl_security_options = {', '.join(opts) or '(empty)'}: Postfix may pick an anonymous " \
                 "mechanism and never send your login", _pc(f, "smtp_sasl_security_options", "noplaintext, noanonymous")


@check("postfix.sasl-tls-security-options", S_TLS, "main_cf")
def _sasl_tls_opts(f):
    opts = f.words("smtp_sasl_tls_security_options")
    if "noanonymous" in opts:
        return PASS, f"smtp_sasl_tls_security_options = {', '.join(opts)}: inside TLS, PLAIN is allowed, " \
                     "anonymous is not", ""
    return FAIL, "smtp_sasl_tls_security_options lacks noanonymous", \
        _pc(f, "smtp_sasl_tls_security_options", "noanonymous")


def _networks(words: list[str]) -> list[Any]:
    out = []
    for w in words:
        try:
            out.append(ipaddress.ip_network(w.replace("[", "").replace("]", ""), strict=False))
        except ValueError:
            out.append(w)  # a table or a name: not a network
    return out


@check("postfix.mynetworks", S_RELAYING, "main_cf")
def _mynetworks(f):
    nets = _networks(f.words("mynetworks"))
    allowed = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"),
               ipaddress.ip_network("::ffff:127.0.0.0/104"), ipaddress.ip_network(f.profile.home_network)]
    wide = [str(n) for n in nets if not isinstance(n, (ipaddress.IPv4Network, ipaddress.IPv6Network))
            or not any(n.version == a.version and n.subnet_of(a) for a in allowed)]
    if not f.main_cf.get("mynetworks"):
        return FAIL, "mynetworks is not set: Postfix trusts every client of its own subnets (mynetworks_style)", \
            _pc(f, "mynetworks", "127.0.0.0/8 [::1]/128")
    if wide:
        return FAIL, f"mynetworks trusts {', '.join(wide)}, beyond loopback and {f.profile.home_network}: " \
                     "those clients may relay through you", _pc(f, "mynetworks", "127.0.0.0/8 [::1]/128")
    return PASS, f"mynetworks = {f.param('mynetworks')}: loopback and your own network only", ""


@check("postfix.relay-restrictions", S_RELAYING, "main_cf")
def _relay_restr(f):
    words = f.words("smtpd_relay_restrictions") + f.words("smtpd_recipient_restrictions")
    if f.main_cf.get("smtpd_relay_restrictions") is None and "compatibility_level" in f.main_cf:
        words += ["defer_unauth_destination"]
    if any(w in ("reject_unauth_destination", "defer_unauth_destination") for w in words) and "permit" not in words:
        return PASS, "relaying is refused to clients outside mynetworks that did not log in " \
                     "(reject_unauth_destination)", ""
    return FAIL, "no reject_unauth_destination in smtpd_relay_restrictions: an open relay", \
        _pc(f, "smtpd_relay_restrictions", "permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination")


@check("postfix.unknown-users", S_RELAYING, "main_cf")
def _unknown(f):
    if f.words("mydestination") and not f.param("local_recipient_maps") and "local_recipient_maps" in f.main_cf:
        return FAIL, "local_recipient_maps is empty: mail to unknown local users is accepted, then bounced " \
                     "(backscatter)", f"{f.sudo}postconf -X local_recipient_maps && {f.sudo}postfix reload"
    if f.words("virtual_mailbox_domains") and f.param("virtual_transport").startswith("lmtp:"):
        return PASS, "mailboxes are delivered over LMTP, whose server refuses unknown users", ""
    return PASS, "unknown local users are refused at RCPT TO (local_recipient_maps)", ""


def _socket_path(spec: str) -> str | None:
    for prefix in ("local:", "unix:"):
        if spec.startswith(prefix):
            return spec[len(prefix):].split("@", 1)[0]
    return None


@check("postfix.milter-socket", S_DKIM, "opendkim")
def _milter(f):
    sock = _socket_path(f.opendkim.get("Socket", ""))
    milters = f.words("smtpd_milters") if f.main_cf is not None else []
    queue = f.param("queue_directory").rstrip("/") if f.main_cf is not None else "/var/spool/postfix"
    if sock is None:
        return FAIL, f"OpenDKIM's Socket is {f.opendkim.get('Socket', '(none)')}, not a unix socket in Postfix's " \
                     "chroot", f"set 'Socket local:{queue}/opendkim/opendkim.sock' in {f.opendkim_conf}"
    if not sock.startswith(queue + "/"):
        return FAIL, f"OpenDKIM's socket {sock} is outside Postfix's chroot {queue}: a chrooted smtpd cannot " \
                     "reach it", f"set 'Socket local:{queue}/opendkim/opendkim.sock' in {f.opendkim_conf}"
    named = [m for m in milters if (p := _socket_path(m)) is not None and
             (p == sock or queue + "/" + p.lstrip("/") == sock)]
    if not named:
        rel = sock[len(queue) + 1:]
        return FAIL, f"smtpd_milters ({', '.join(milters) or 'empty'}) does not name OpenDKIM's socket {sock}", \
            _pc(f, "smtpd_milters", f"local:{rel}") + f" (and non_smtpd_milters)"
    return PASS, f"the milter socket {sock} is inside Postfix's chroot and smtpd_milters names it ({named[0]})", ""


@check("postfix.in-socket-group", S_DKIM, "socket_dir")
def _group(f):
    d = f.socket_dir
    if not d.exists:
        return FAIL, f"{d.path} does not exist: OpenDKIM cannot make its socket", \
            f"{f.sudo}install -d -o opendkim -g opendkim -m 750 {d.path}"
    if f.postfix_groups is not None and d.group in f.postfix_groups:
        return PASS, f"user postfix is in group {d.group}, which owns {d.path}", ""
    return FAIL, f"user postfix is not in group {d.group} of {d.path}: it cannot open the milter socket", \
        f"{f.sudo}adduser postfix {d.group} && {f.sudo}systemctl restart postfix"


@check("opendkim.key-owner-mode", S_DKIM, "key_file")
def _key(f):
    k = f.key_file
    if not k.exists:
        return FAIL, f"the key {k.path} does not exist", "run opendkim/commands.sh of the bundle (opendkim-genkey)"
    if k.mode & 0o077 or k.owner != "opendkim":
        return FAIL, f"{k.path} is mode {k.mode:04o}, owner {k.owner}: OpenDKIM refuses it ('key data is not " \
                     "secure') or others can read it", f"{f.sudo}chown opendkim:opendkim {k.path} && " \
                                                       f"{f.sudo}chmod 600 {k.path}"
    return PASS, f"{k.path} is 0600 and owned by opendkim", ""


@check("opendkim.tables", S_DKIM, "key_table")
def _tables(f):
    p = f.profile
    want = (p.domain, p.dkim_selector)
    rows = [r for r in f.key_table if (r[1], r[2]) == want]
    if not rows:
        got = ", ".join(f"{d}:{s}" for _n, d, s, _k in f.key_table) or "nothing"
        return FAIL, f"the KeyTable has no key for {p.domain} with selector {p.dkim_selector} (it has {got})", \
            "install the bundle's opendkim/KeyTable and restart opendkim"
    names = {r[0] for r in rows}
    signing = [(pat, name) for pat, name in f.signing_table or [] if pat.endswith("@" + p.domain)
               or pat.endswith("@*." + p.domain) or pat == "*"]
    if not signing:
        return FAIL, f"the SigningTable has no line for *@{p.domain}: nothing is signed", \
            "install the bundle's opendkim/SigningTable and restart opendkim"
    if signing[0][1] not in names:
        return FAIL, f"the SigningTable names key {signing[0][1]}, but the KeyTable's {p.dkim_selector} key for " \
                     f"{p.domain} is {', '.join(sorted(names))}", "make both tables name the same key"
    key = rows[0][3]
    if f.key_file is not None and key != f.key_file.path:
        return FAIL, f"the KeyTable names {key}, not the key checked ({f.key_file.path})", "fix the KeyTable"
    return PASS, f"KeyTable and SigningTable agree: *@{p.domain} is signed with {p.dkim_selector} ({key})", ""


@check("opendkim.signs", S_DKIM, "opendkim")
def _signs(f):
    mode = f.opendkim.get("Mode", "sv")
    hosts = f.trusted_hosts or []
    if "s" not in mode:
        return FAIL, f"OpenDKIM's Mode is {mode}: it never signs", f"set 'Mode sv' in {f.opendkim_conf}"
    if not any(h in ("127.0.0.1", "localhost", "127.0.0.0/8") for h in hosts):
        return FAIL, "127.0.0.1 is not in TrustedHosts (InternalHosts): mail from Postfix is verified, not signed", \
            "add 127.0.0.1 to /etc/opendkim/TrustedHosts"
    return PASS, f"OpenDKIM signs (Mode {mode}) mail from {', '.join(hosts[:3])}", ""


@check("postfix.dmarc-alias", S_DMARC, "aliases")
def _alias(f):
    p = f.profile
    local, _, domain = p.rua_address.partition("@")
    if not p.dmarc_rua or domain != p.domain:
        return PASS, "the DMARC reports go outside your domain: no alias needed here", ""
    if local not in f.aliases:
        return FAIL, f"no '{local}:' alias: the DMARC reports to {p.rua_address} bounce", \
            f"echo '{local}: {p.dmarc_alias_to}' | {f.sudo}tee -a {f.aliases_file.path} && {f.sudo}newaliases"
    m = f.aliases_map
    if m is None or not m.exists or m.mtime_ns < f.aliases_file.mtime_ns:
        return FAIL, f"{f.aliases_file.path} is newer than its map: the alias is not in what Postfix reads", \
            f"{f.sudo}newaliases"
    return PASS, f"'{local}: {f.aliases[local]}' is in {f.aliases_file.path}, and its map is current", ""


@check("postfix.mail-log", S_DEBUG, "maillog")
def _log(f):
    where, how = f.maillog
    if where:
        return PASS, f"Postfix logs to {where}; read it with: {how}", ""
    return FAIL, f"no mail log found: {how}", "journalctl -u postfix@- (Debian 12+), or install rsyslog"


# =========================================================================== DNS

def _dns(f: Facts, key: str) -> Any:
    return (f.dns or {}).get(key)


@check("dns.mx", S_DNS, "dns")
def _mx(f):
    p = f.profile
    if _dns(f, "domain_cname"):
        return FAIL, f"{p.domain} is a CNAME: it can hold no MX (RFC 1034)", "replace the CNAME with A and MX records"
    mx = _dns(f, "mx") or []
    targets = [m.split()[-1].rstrip(".").lower() for m in mx]
    if _dns(f, "error"):
        return FAIL, f"DNS did not answer: {_dns(f, 'error')}", "check the resolver (--nameserver) and the network"
    if not targets:
        return FAIL, f"{p.domain} has no MX record", f"publish: {p.domain} MX 10 {p.hostname}"
    if p.hostname not in targets:
        return FAIL, f"the MX of {p.domain} is {', '.join(targets)}, not {p.hostname}", \
            f"publish: {p.domain} MX 10 {p.hostname}"
    if _dns(f, "mx_target_cname"):
        return FAIL, f"the MX target {p.hostname} is a CNAME (RFC 2181 §10.3 forbids it)", \
            f"give {p.hostname} an A record instead"
    return PASS, f"{p.domain} MX {', '.join(mx)}", ""


@check("dns.host-address", S_DNS, "dns")
def _a(f):
    p = f.profile
    got = _dns(f, "a") or []
    if p.public_ip in got:
        return PASS, f"{p.hostname} A {', '.join(got)}", ""
    return FAIL, f"{p.hostname} has address {', '.join(got) or 'none'}, not {p.public_ip}", \
        f"publish: {p.hostname} A {p.public_ip}"


@check("dns.ptr", S_DNS, "dns")
def _ptr(f):
    p = f.profile
    got = [n.rstrip(".").lower() for n in _dns(f, "ptr") or []]
    if p.hostname in got:
        return PASS, f"{p.public_ip} PTR {p.hostname}", ""
    return WARN, f"the PTR of {p.public_ip} is {', '.join(got) or 'missing'}, not {p.hostname}: only the ISP can " \
                 "set it", "ask the ISP (dns/ask-the-isp.txt of the bundle)"


@check("dns.fcrdns", S_DNS, "dns")
def _fcrdns(f):
    p = f.profile
    names = [n.rstrip(".").lower() for n in _dns(f, "ptr") or []]
    back = _dns(f, "ptr_a") or {}
    if not names:
        return WARN, "no PTR to confirm (see dns.ptr)", ""
    if any(p.public_ip in back.get(n, []) for n in names):
        return PASS, f"forward-confirmed reverse DNS: {names[0]} resolves back to {p.public_ip}", ""
    return WARN, f"{names[0]} does not resolve back to {p.public_ip}: receivers see iprev fail", \
        f"publish {names[0]} A {p.public_ip}, or ask the ISP for a PTR naming {p.hostname}"


def _spf_records(f: Facts) -> list[str]:
    return [t for t in _dns(f, "domain_txt") or [] if t.lower().startswith("v=spf1")]


@check("dns.spf-record", S_SPF, "dns")
def _spf(f):
    recs = _spf_records(f)
    if not recs:
        return FAIL, f"{f.profile.domain} publishes no SPF record", f"publish the SPF row of dns/records.txt"
    if len(recs) > 1:
        return WARN, "more than one SPF record (see dns.spf-single)", ""
    bad = [t for t in recs[0].split()[1:] if not re.fullmatch(
        r"[+\-~?]?(all|include:\S+|a(:\S+)?(/\d+)?|mx(:\S+)?(/\d+)?|ip4:[\d./]+|ip6:[\da-fA-F:./]+|exists:\S+|ptr(:\S+)?)"
        r"|(redirect|exp)=\S+", t)]
    checked = _dns(f, "spf_check") or {}
    if bad or checked.get("syntax_error"):
        return FAIL, f"the SPF record has bad terms: {', '.join(bad) or checked.get('syntax_error')}", \
            "publish the SPF row of dns/records.txt"
    return PASS, f"SPF: {recs[0]}", ""


@check("dns.spf-limits", S_SPF, "dns")
def _spf_limits(f):
    checked = _dns(f, "spf_check") or {}
    n, void = checked.get("dns_lookups"), checked.get("void_dns_lookups") or 0
    if len(_spf_records(f)) != 1 or n is None:
        return WARN, "no single SPF record to count (see dns.spf-record)", ""
    if n > 10 or void > 2:
        return FAIL, f"the SPF record needs {n} DNS look-ups ({void} void): receivers stop at 10 and 2 (RFC 7208 " \
                     "§4.6.4) and return permerror", "replace include:/a/mx terms by ip4: terms"
    return PASS, f"{n} DNS look-ups (at most 10), {void} void (at most 2)", ""


@check("dns.spf-covers-smarthost", S_SPF, "dns")
def _spf_covers(f):
    results = _dns(f, "spf_smarthost") or []
    if len(_spf_records(f)) != 1:
        return WARN, "not exactly one SPF record (see dns.spf-record and dns.spf-single)", ""
    if not results:
        return WARN, f"the smarthost {f.profile.smarthost_host} has no address to test", ""
    bad = [(ip, r) for ip, r in results if r != "pass"]
    if bad:
        return FAIL, f"SPF gives {bad[0][1]} for the smarthost's address {bad[0][0]}: mail relayed by the ISP fails " \
                     "SPF", f"add include:{f.profile.isp_domain} to the SPF record"
    return PASS, f"SPF passes for the smarthost's address(es) {', '.join(ip for ip, _ in results)}", ""


@check("dns.spf-single", S_SPF, "dns")
def _spf_single(f):
    recs = _spf_records(f)
    if len(recs) > 1:
        return FAIL, f"{len(recs)} SPF records at {f.profile.domain}: receivers return permerror (RFC 7208 §4.5)", \
            "keep one v=spf1 record"
    return PASS, f"{len(recs)} SPF record at {f.profile.domain}", ""


def _dkim_p(f: Facts) -> tuple[str | None, str]:
    txt = _dns(f, "dkim_txt") or []
    if len(txt) != 1:
        return None, f"{len(txt)} records"
    try:
        tags = parse_tags(txt[0])
    except ValueError as e:
        return None, str(e)
    return re.sub(r"\s+", "", tags.get("p", "")), ""


@check("dns.dkim-key-matches", S_DKIM, "dns")
def _dkim_match(f):
    p = f.profile
    name = f"{p.dkim_selector}._domainkey.{p.domain}"
    pub, problem = _dkim_p(f)
    if pub is None:
        return FAIL, f"no usable DKIM key at {name} ({problem})", \
            f"publish the p= of {p.dkim_selector}.txt at {name} (opendkim-testkey checks it)"
    if f.private_key_b64 is None:
        return WARN, f"a key is published at {name}; the private key could not be read to compare (run as root)", ""
    if pub != f.private_key_b64:
        return FAIL, f"the key published at {name} is not the public half of the signing key: every signature " \
                     "fails", f"publish the p= of {p.dkim_selector}.txt again"
    return PASS, f"the key at {name} matches the private signing key", ""


@check("dns.dkim-key-length", S_DKIM, "dns")
def _dkim_len(f):
    pub, _ = _dkim_p(f)
    if not pub:
        return WARN, "no DKIM key to measure (see dns.dkim-key-matches)", ""
    try:
        key = load_der_public_key(base64.b64decode(pub))
        bits = getattr(key, "key_size", 256)
    except Exception as e:  # noqa: BLE001 - a broken key is a finding, not a crash
        return WARN, f"the published key cannot be read ({type(e).__name__}; see dns.dkim-key-matches)", ""
    if bits < 1024:
        return FAIL, f"the key has {bits} bits: receivers ignore keys under 1024 (RFC 8301)", \
            "make a 2048-bit key with a new selector"
    if bits < 2048:
        return WARN, f"the key has {bits} bits: enough (RFC 8301), 2048 recommended (ERRATA 9)", \
            "make a 2048-bit key with a new selector when convenient"
    return PASS, f"the key has {bits} bits", ""


def _dmarc(f: Facts) -> tuple[dict[str, str] | None, str]:
    recs = [t for t in _dns(f, "dmarc_txt") or [] if t.startswith("v=DMARC1")]
    if not recs:
        return None, "missing"
    try:
        return parse_dmarc_tags(recs[0]), ""
    except ValueError as e:
        return None, str(e)


@check("dns.dmarc-record", S_DMARC, "dns")
def _dmarc_syntax(f):
    tags, problem = _dmarc(f)
    if tags is None:
        return FAIL, f"no usable DMARC record at _dmarc.{f.profile.domain} ({problem})", \
            "publish the DMARC row of dns/records.txt"
    if tags.get("p") not in ("none", "quarantine", "reject"):
        return FAIL, f"the DMARC record's p={tags.get('p')} is not none, quarantine or reject", \
            "publish the DMARC row of dns/records.txt"
    return PASS, "DMARC: " + "; ".join(f"{k}={v}" for k, v in tags.items()), ""


@check("dns.dmarc-policy", S_DMARC, "dns")
def _dmarc_policy(f):
    tags, _ = _dmarc(f)
    if tags is None:
        return WARN, "no DMARC record (see dns.dmarc-record)", ""
    if tags.get("p") == "none":
        return PASS, "p=none, noted: receivers only report; read the reports, then move to quarantine", ""
    return PASS, f"p={tags.get('p')}: receivers act on mail that fails DMARC", ""


@check("dns.dmarc-report-authorised", S_DMARC, "dns")
def _dmarc_rua(f):
    tags, _ = _dmarc(f)
    if tags is None or not tags.get("rua"):
        return PASS, "no report address to authorise", ""
    outside = []
    for uri in tags["rua"].split(","):
        domain = uri.strip().removeprefix("mailto:").split("!")[0].rpartition("@")[2].lower()
        if domain != f.profile.domain and not domain.endswith("." + f.profile.domain):
            outside.append(domain)
    if not outside:
        return PASS, "the report address is inside the domain", ""
    auth = (_dns(f, "rua_auth") or {})
    missing = [d for d in outside if not any(t.startswith("v=DMARC1") for t in auth.get(d, []))]
    if missing:
        return FAIL, f"reports go to {', '.join(missing)}, which does not authorise them (RFC 7489 §7.1)", \
            f"publish {f.profile.domain}._report._dmarc.{missing[0]} TXT \"v=DMARC1\" in that domain"
    return PASS, f"the report domains {', '.join(outside)} authorise the reports", ""


@check("dns.dmarc-single", S_DMARC, "dns")
def _dmarc_single(f):
    recs = [t for t in _dns(f, "dmarc_txt") or [] if t.startswith("v=DMARC1")]
    if len(recs) > 1:
        return FAIL, f"{len(recs)} DMARC records: receivers ignore them all (RFC 7489 §6.6.3)", "keep one"
    return PASS, f"{len(recs)} DMARC record", ""


# =========================================================================== network

@check("net.smarthost-reachable", S_DEBUG, "net")
def _reach(f):
    n = f.net
    if n.get("connected"):
        return PASS, f"{n['server']} answered: {n.get('banner', '')}", ""
    return FAIL, f"{n['server']} did not answer: {n.get('error')}", \
        "check the host name and port with the ISP; telnet/openssl s_client to it (ch. 08)"


@check("net.smarthost-starttls", S_TLS, "net")
def _starttls(f):
    n = f.net
    if not n.get("connected"):
        return WARN, "not reached (see net.smarthost-reachable)", ""
    if n.get("implicit_tls"):
        ok = n.get("tls_verified")
        return (PASS, f"TLS from the first byte, certificate verified for {f.profile.smarthost_host}", "") if ok else \
            (FAIL, f"the TLS certificate was not verified: {n.get('tls_error')}", "ask the ISP for the right name")
    if not n.get("starttls_offered"):
        return FAIL, "the smarthost does not offer STARTTLS: the login would cross in clear (a stripped STARTTLS?)", \
            "keep smtp_tls_security_level = secure (Postfix refuses to go on); tell the ISP"
    if not n.get("tls_verified"):
        return FAIL, f"STARTTLS offered, but the certificate was not verified: {n.get('tls_error')}", \
            "check smtp_tls_CAfile and the smarthost's name"
    return PASS, f"STARTTLS, certificate verified for {f.profile.smarthost_host} ({n.get('tls_version')})", ""


@check("net.auth-after-tls", S_TLS, "net")
def _auth_after(f):
    n = f.net
    if not n.get("connected") or not (n.get("tls_verified") or n.get("starttls_offered")):
        return WARN, "no TLS session to look at (see net.smarthost-starttls)", ""
    if n.get("auth_before_tls"):
        return FAIL, "AUTH is offered before TLS: a client could send its password in clear", "tell the ISP"
    if not n.get("auth_after_tls"):
        return FAIL, "AUTH is not offered after TLS: Postfix cannot log in", "check the port with the ISP"
    return PASS, f"AUTH only after TLS ({n.get('auth_after_tls')})", ""


@check("net.smarthost-login", S_RELAY, "net")
def _login(f):
    n = f.net
    if not n.get("connected") and n.get("login_requested"):
        return WARN, "not reached (see net.smarthost-reachable)", ""
    if "login" not in n:
        return PASS, "login not tried (ask for it with --login)", ""
    if n["login"] is True:
        return PASS, f"the ISP accepted the login of {f.profile.smarthost_user}", ""
    if n["login"] is None:
        return WARN, f"login not tried: {n.get('login_error')}", ""
    return FAIL, f"the ISP refused the login of {f.profile.smarthost_user}: {n.get('login_error')}", \
        f"put the right password in {f.postfix_dir}/sasl_passwd, then {f.sudo}postmap it"


# =========================================================================== running them

def run(facts: Facts) -> list[Finding]:
    """Every check whose facts were read, in the order they are defined."""
    return [fn(facts) for _id, _section, needs, fn in REGISTRY if getattr(facts, needs) is not None]


def exit_status(findings: list[Finding]) -> int:
    """0: every check passed; 1: warnings; 2: failures."""
    return max((STATUS_ORDER[f.status] for f in findings), default=0)


def check_ids() -> list[str]:
    return [id for id, *_ in REGISTRY]


__all__ = ["FAIL", "Facts", "FileInfo", "Finding", "PASS", "REGISTRY", "WARN", "check_ids", "exit_status", "run"]
