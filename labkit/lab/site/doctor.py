"""``labkit doctor``: read a host (or a running lab) and run the checks of :mod:`labkit.lab.site.checks`.

Read-only: it reads files, asks DNS, and with ``online`` talks to the profile's smarthost (an
EHLO, a STARTTLS, and only if asked a login, then QUIT). It changes nothing and prints no
secret: from sasl_passwd it keeps the key and the user, and the password only for the login
that ``login=True`` asks for.

- :func:`examine_host` — /etc/postfix, /etc/opendkim.conf, /etc/aliases, the system's DNS or
  ``nameserver``, the smarthost on the network (``online``).
- :func:`examine_lab` — the same checks on a running lab started with a site profile: its
  sandbox configs, its DNS, its smarthost on loopback (``labkit doctor --lab DIR``).
- :func:`render_rows` and :func:`render_json` — one row per check; :func:`exit_status` 0/1/2.
"""
from __future__ import annotations

import base64
import glob
import grp
import json
import os
import pwd
import shutil
import smtplib
import socket
import ssl
import stat
from pathlib import Path
from typing import Any

import dns.exception
import dns.rdatatype
import dns.resolver
from cryptography.hazmat.primitives import serialization

from ...core.auth.results import fresh_checkdmarc
from ...core.auth.spf import check_spf_record, evaluate_spf
from ...core.dns.resolver import make_resolver
from ...errors import LabStateError
from ...real.opendkim.config import read_conf
from . import plan
from .checks import Facts, FileInfo, Finding, exit_status, run
from .profile import Profile, parse

__all__ = ["examine_host", "examine_lab", "exit_status", "parse_main_cf", "render_json", "render_rows"]


# --------------------------------------------------------------------------- reading files (pure parsers)

def parse_main_cf(text: str) -> dict[str, str]:
    """main.cf as {name: value}: comments dropped, continuation lines (leading white space) joined."""
    out: dict[str, str] = {}
    name = None
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0].isspace() and name is not None:
            out[name] = (out[name] + " " + raw.strip()).strip()
            continue
        key, sep, value = raw.partition("=")
        if sep:
            name = key.strip()
            out[name] = value.strip()
    return out


def parse_sasl_keys(text: str) -> list[tuple[str, str]]:
    """(key, user) of each sasl_passwd line; the password is dropped here and never kept."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(None, 1)
        user = parts[1].split(":", 1)[0] if len(parts) > 1 else ""
        out.append((parts[0], user))
    return out


def _sasl_password(text: str, key: str) -> str | None:
    for line in text.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] == key and ":" in parts[1]:
            return parts[1].split(":", 1)[1].strip()
    return None


def parse_aliases(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and ":" in line:
            name, _, target = line.partition(":")
            out[name.strip().lower()] = target.strip()
    return out


def parse_key_table(text: str) -> list[tuple[str, str, str, str]]:
    out = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) == 2 and parts[1].count(":") >= 2:
            d, s, k = parts[1].split(":", 2)
            out.append((parts[0], d.lower(), s, k))
    return out


def parse_signing_table(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) == 2:
            out.append((parts[0].lower(), parts[1]))
    return out


# --------------------------------------------------------------------------- reading the machine

def file_info(path: str | os.PathLike) -> FileInfo:
    p = os.fspath(path)
    try:
        st = os.stat(p)
    except OSError:
        return FileInfo(p)
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "socket" if stat.S_ISSOCK(st.st_mode) else "file"
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return FileInfo(p, True, st.st_mode & 0o7777, owner, group, st.st_mtime_ns, kind)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _indexed(path: str, kind: str) -> FileInfo | None:
    for suffix in ({"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb"}.get(kind, ".db"),):
        fi = file_info(path + suffix)
        if fi.exists:
            return fi
    return None


def _user_groups(user: str) -> set[str] | None:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    groups = {g.gr_name for g in grp.getgrall() if user in g.gr_mem}
    try:
        groups.add(grp.getgrgid(pw.pw_gid).gr_name)
    except KeyError:
        pass
    return groups


def _sasl_modules() -> str:
    found = sorted(glob.glob("/usr/lib/*/sasl2/libplain.so*") + glob.glob("/usr/lib/sasl2/libplain.so*"))
    return os.path.dirname(found[0]) if found else ""


def _public_of(key_path: str) -> str | None:
    try:
        key = serialization.load_pem_private_key(Path(key_path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def read_postfix(facts: Facts, postfix_dir: str) -> str | None:
    """main.cf, sasl_passwd (key and user only), the aliases; returns sasl_passwd's text for a login."""
    text = _read(os.path.join(postfix_dir, "main.cf"))
    if text is None:
        return None
    facts.postfix_dir = postfix_dir
    facts.main_cf = parse_main_cf(text)
    spec = facts.param("smtp_sasl_password_maps").split(",")[0].strip()
    sasl_text = None
    if ":" in spec:
        kind, path = spec.split(":", 1)
        facts.sasl_file = file_info(path)
        facts.sasl_map = _indexed(path, kind)
        sasl_text = _read(path)
        if sasl_text is not None:
            facts.sasl_keys = parse_sasl_keys(sasl_text)
    facts.sasl_modules = _sasl_modules()
    alias_spec = (facts.words("alias_database") or facts.words("alias_maps") or [""])[0]
    if ":" in alias_spec:
        kind, path = alias_spec.split(":", 1)
        text = _read(path)
        facts.aliases_file = file_info(path)
        facts.aliases_map = _indexed(path, kind)
        facts.aliases = parse_aliases(text) if text is not None else {}
    else:  # alias_maps is empty: no alias reaches anyone
        facts.aliases, facts.aliases_file = {}, FileInfo("/etc/aliases" if postfix_dir == "/etc/postfix" else
                                                         os.path.join(postfix_dir, "aliases"))
    queue = facts.param("queue_directory") or "/var/spool/postfix"
    facts.main_cf.setdefault("queue_directory", queue)
    return sasl_text


def read_opendkim(facts: Facts, conf_path: str) -> None:
    text = _read(conf_path)
    if text is None:
        return
    facts.opendkim_conf = conf_path
    facts.opendkim = read_conf(text)
    kt = _read(facts.opendkim.get("KeyTable", "").split(":", 1)[-1])
    st = _read(facts.opendkim.get("SigningTable", "").split(":", 1)[-1])
    facts.key_table = parse_key_table(kt) if kt is not None else []
    facts.signing_table = parse_signing_table(st) if st is not None else []
    hosts = facts.opendkim.get("InternalHosts", "")
    th = _read(hosts.split(":", 1)[-1]) if hosts.startswith(("/", "file:", "refile:")) else hosts.replace(",", "\n")
    facts.trusted_hosts = [h.strip() for h in (th or "").splitlines() if h.strip() and not h.startswith("#")]
    p = facts.profile
    rows = [r for r in facts.key_table if (r[1], r[2]) == (p.domain, p.dkim_selector)]
    if rows:
        facts.key_file = file_info(rows[0][3])
        facts.private_key_b64 = _public_of(rows[0][3])
    sock = facts.opendkim.get("Socket", "")
    if sock.startswith(("local:", "unix:")):
        facts.socket_dir = file_info(os.path.dirname(sock.split(":", 1)[1]))
    facts.postfix_groups = _user_groups("postfix")


# --------------------------------------------------------------------------- DNS and the network

def _answers(resolver, name: str, rtype: str) -> list[str]:
    try:
        ans = resolver.resolve(name.rstrip(".") + ".", rtype, search=False, raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.resolver.NoNameservers as e:
        said = [str(x[3]) for x in e.kwargs.get("errors") or [] if len(x) > 3]
        if said and all(s == "REFUSED" for s in said):
            return []  # the lab DNS refuses names outside its zones: they do not exist there
        raise DNSUnanswered(f"no DNS server answered for {name} {rtype}") from None
    except (dns.exception.Timeout, OSError) as e:
        raise DNSUnanswered(f"the DNS server did not answer ({type(e).__name__})") from None
    except dns.exception.DNSException:
        return []
    if rtype == "TXT":
        return [b"".join(r.strings).decode("utf-8", "replace") for r in ans if r.rdtype == 16]
    want = dns.rdatatype.from_text(rtype)
    return [r.to_text() for r in ans if r.rdtype == want]


class DNSUnanswered(Exception):
    pass


def read_dns(facts: Facts, resolver) -> None:
    """Every DNS answer the checks look at; if the server does not answer, every answer is empty
    (and every DNS check says what is missing) after the first question, not after each."""
    try:
        _read_dns(facts, resolver)
    except DNSUnanswered as e:
        facts.dns = {"error": str(e)}


def _read_dns(facts: Facts, resolver) -> None:
    p = facts.profile
    d: dict[str, Any] = {}
    d["domain_cname"] = _answers(resolver, p.domain, "CNAME")
    d["mx"] = _answers(resolver, p.domain, "MX")
    d["mx_target_cname"] = _answers(resolver, p.hostname, "CNAME")
    d["a"] = _answers(resolver, p.hostname, "A")
    d["ptr"] = _answers(resolver, plan.ptr_name(p.public_ip), "PTR")
    d["ptr_a"] = {n.rstrip(".").lower(): _answers(resolver, n, "A") for n in d["ptr"]}
    d["domain_txt"] = _answers(resolver, p.domain, "TXT")
    if any(t.lower().startswith("v=spf1") for t in d["domain_txt"]):
        fresh_checkdmarc()
        checked = check_spf_record(p.domain, resolver)
        det = checked.details or {}
        d["spf_check"] = {"dns_lookups": det.get("dns_lookups", 0), "void_dns_lookups": det.get("void_dns_lookups", 0)}
        if not checked.ok and "dns_lookups" not in det:
            d["spf_check"]["syntax_error"] = checked.reason
        d["spf_smarthost"] = [(ip, evaluate_spf(ip, f"postmaster@{p.domain}", p.smarthost_host,
                                                resolver=resolver).result)
                              for ip in _answers(resolver, p.smarthost_host, "A")]
    d["dkim_txt"] = _answers(resolver, f"{p.dkim_selector}._domainkey.{p.domain}", "TXT")
    d["dmarc_txt"] = _answers(resolver, f"_dmarc.{p.domain}", "TXT")
    rua_domain = p.rua_address.rpartition("@")[2]
    if rua_domain and rua_domain != p.domain:
        d["rua_auth"] = {rua_domain: _answers(resolver, f"{p.domain}._report._dmarc.{rua_domain}", "TXT")}
    facts.dns = d


class _ImplicitTLS(smtplib.SMTP_SSL):
    """SMTP over TLS from the first byte, checking the certificate against ``name`` (not the address)."""

    def __init__(self, name: str, **kw: Any):
        self._name = name
        super().__init__(**kw)

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout)
        return self.context.wrap_socket(sock, server_hostname=self._name)


def probe_smarthost(host: str, port: int, *, server_hostname: str, cafile: str | None = None,
                    login: tuple[str, str] | None = None, timeout: float = 10) -> dict[str, Any]:
    """EHLO, STARTTLS (or TLS from the first byte on 465), EHLO, optionally AUTH; then QUIT.

    Returns what was seen: ``connected``, ``banner``, ``starttls_offered``, ``auth_before_tls``,
    ``tls_verified``, ``tls_version``, ``auth_after_tls`` and, with ``login``, ``login``
    (True/False) and ``login_error`` (the server's reply, never the password).
    """
    out: dict[str, Any] = {"server": f"{server_hostname}:{port}", "implicit_tls": port == 465,
                           "login_requested": login is not None}
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl.create_default_context()
    try:
        if port == 465:
            s = _ImplicitTLS(server_hostname, timeout=timeout, context=ctx)
            code, banner = s.connect(host, port)
        else:
            s = smtplib.SMTP(timeout=timeout)
            code, banner = s.connect(host, port)
            s._host = server_hostname  # the name STARTTLS checks the certificate against
    except ssl.SSLError as e:
        out.update(connected=True, tls_verified=False, tls_error=str(e))
        return out
    except (OSError, smtplib.SMTPException) as e:
        out.update(connected=False, error=f"{type(e).__name__}: {e}")
        return out
    out.update(connected=True, banner=f"{code} {banner.decode(errors='replace')}")
    try:
        s.ehlo("doctor.invalid")
        if port != 465:
            out["starttls_offered"] = s.has_extn("starttls")
            out["auth_before_tls"] = s.has_extn("auth")
            if not out["starttls_offered"]:
                return out
            try:
                s.starttls(context=ctx)
            except ssl.SSLError as e:
                out.update(tls_verified=False, tls_error=str(e))
                return out
            s.ehlo("doctor.invalid")
        out["tls_verified"] = True
        out["tls_version"] = s.sock.version() if hasattr(s.sock, "version") else ""
        out["auth_after_tls"] = s.esmtp_features.get("auth", "").strip()
        if login is not None:
            if not login[1]:
                out.update(login=None, login_error="no password in sasl_passwd to try")
            else:
                try:
                    s.login(*login)
                    out["login"] = True
                except smtplib.SMTPAuthenticationError as e:
                    out.update(login=False, login_error=f"{e.smtp_code} {e.smtp_error.decode(errors='replace')}")
                except smtplib.SMTPException as e:
                    out.update(login=False, login_error=str(e))
    except (OSError, smtplib.SMTPException) as e:
        out.setdefault("error", f"{type(e).__name__}: {e}")
    finally:
        try:
            s.quit()
        except (OSError, smtplib.SMTPException):
            s.close()
    return out


def _maillog(facts: Facts) -> tuple[str, str]:
    path = facts.main_cf.get("maillog_file") if facts.main_cf else None
    if path and os.path.exists(path):
        return path, f"tail -f {path}"
    if os.path.exists("/var/log/mail.log"):
        return "/var/log/mail.log", "tail -f /var/log/mail.log"
    if shutil.which("journalctl") and os.path.isdir("/run/systemd/system"):
        return "the systemd journal", "journalctl -u postfix@- -f"
    return "", "no maillog_file, no /var/log/mail.log and no systemd journal here"


# --------------------------------------------------------------------------- the two ways in

def examine_host(profile: Profile, *, postfix_dir: str = "/etc/postfix", opendkim_conf: str = "/etc/opendkim.conf",
                 nameserver: str | None = None, local: bool = True, dns: bool = True, online: bool = False,
                 login: bool = False, cafile: str | None = None) -> list[Finding]:
    """The checks on this host, after the bundle was applied (read-only)."""
    facts = Facts(profile, "host", sudo="sudo " if os.geteuid() != 0 else "")
    sasl_text = None
    if local:
        sasl_text = read_postfix(facts, postfix_dir)
        read_opendkim(facts, opendkim_conf)
        facts.maillog = _maillog(facts)
        facts.unread = [path for path, got in ((os.path.join(postfix_dir, "main.cf"), facts.main_cf),
                                              (opendkim_conf, facts.opendkim)) if got is None]
    if dns:
        if nameserver:
            host, _, port = nameserver.partition(":") if nameserver.count(":") == 1 else (nameserver, "", "")
            resolver = make_resolver(host, int(port or 53))
        else:
            resolver = dns.resolver.Resolver()
        read_dns(facts, resolver)
    if online:
        creds = None
        if login:
            creds = (profile.smarthost_user, _sasl_password(sasl_text or "", profile.relayhost) or "")
        facts.net = probe_smarthost(profile.smarthost_host, profile.smarthost_port,
                                    server_hostname=profile.smarthost_host, cafile=cafile, login=creds)
    return run(facts)


def examine_lab(status: dict[str, Any], *, login: bool = False) -> list[Finding]:
    """The same checks on a running lab started with a site profile (``status``: Lab.status() or
    the state of ``labkit up --site``): its sandbox configs, its DNS, its smarthost on loopback."""
    site = status.get("site")
    if not site:
        raise LabStateError("this lab was not started with a site profile; start one with "
                            "labkit up --site mail-site.toml (or Lab(site=...))")
    profile = plan.for_lab(parse(site["profile"], source="the lab's profile"), site["public_ip"],
                           site["home_network"])
    facts = Facts(profile, "lab", sudo="",
                  port_plays={s["port"]: s["standard_port"] for s in status["services"].values()
                              if s.get("standard_port")})
    postfix_dir = status.get("postfix", {}).get("config_dir")
    sasl_text = read_postfix(facts, postfix_dir) if postfix_dir else None
    if status.get("opendkim"):
        read_opendkim(facts, status["opendkim"]["conf"])
    elif site.get("dkim_key"):
        facts.private_key_b64 = _public_of(site["dkim_key"])  # embedded mode: the lab's own key
    if facts.main_cf is not None:
        facts.maillog = _maillog(facts)
    if status.get("mode") == "real":
        facts.unread = [path for path, got in ((os.path.join(postfix_dir or "", "main.cf"), facts.main_cf),
                                              (facts.opendkim_conf, facts.opendkim)) if got is None]
    dns = status["services"]["dns"]
    read_dns(facts, make_resolver(dns["host"], dns["port"]))
    isp = status["services"]["smarthost"]
    creds = None
    if login:
        lab_accounts = {a["address"]: a.get("password") or "" for a in status.get("accounts", [])}
        key = next((k for k, _u in facts.sasl_keys or []), "")
        creds = (profile.smarthost_user, _sasl_password(sasl_text, key) if sasl_text is not None else
                 lab_accounts.get(profile.smarthost_user, "")) 
    facts.net = probe_smarthost(isp["host"], isp["port"], server_hostname=profile.smarthost_host,
                                cafile=status["ca"], login=creds)
    return run(facts)


# --------------------------------------------------------------------------- output

def render_rows(findings: list[Finding]) -> str:
    """One row per check: status, id, why, the memo section, and the fix when it is not a pass."""
    mark = {"pass": "PASS", "warn": "WARN", "fail": "FAIL"}
    width = max((len(f.id) for f in findings), default=10)
    out = []
    for f in findings:
        out.append(f"{mark[f.status]}  {f.id.ljust(width)}  {f.why}  [{f.section}]")
        if f.fix and f.status != "pass":
            out.append(f"{'':6}{'':{width}}  fix: {f.fix}")
    counts = {s: sum(f.status == s for f in findings) for s in ("pass", "warn", "fail")}
    out.append(f"{len(findings)} checks: {counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail")
    return "\n".join(out) + "\n"


def render_json(findings: list[Finding]) -> str:
    return json.dumps([f.as_dict() for f in findings], indent=2, ensure_ascii=False) + "\n"
