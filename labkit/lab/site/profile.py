"""The site profile: ``mail-site.toml``, your own names for the memo's setup, read and checked.

    [site]       domain, hostname, public_ip, home_network, target
    [smarthost]  host, port, user, password_file
    [dkim]       selector, bits
    [dmarc]      policy, rua
    [dns]        style

:func:`parse` turns the text of a profile into a :class:`Profile` (pure: no file, no network);
:func:`load` reads the file first. Every field is checked (names, port, network, selector,
key size, policy, report address, style, target), and every text value is refused if it holds
a line break, ``=``, a quote or a control character: each would let a profile add a line of its
own to main.cf, opendkim.conf or a zone file. A :class:`ProfileError` names the field, its line
in the file, and what to write instead. Unknown keys are refused too (a typo would otherwise be
a silent default).

The password of the ISP account is never in the profile: :func:`read_password` takes it from
``password_file`` (which must be 0600), else from the environment variable
``MAIL_SITE_PASSWORD``, else asks for it, and returns it as a
:class:`labkit.real.postfix.config.Secret`, which never prints.
"""
from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package, where installed
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

from ...errors import ConfigError
from ...real.postfix.config import Secret

#: The documented example profile of the repository (examples/mail-site.toml).
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "mail-site.toml"
#: Where :func:`read_password` looks when there is no password file.
PASSWORD_ENV = "MAIL_SITE_PASSWORD"
TARGETS = ("debian-12", "debian-13", "ubuntu-24.04")
STYLES = ("mydns", "bind", "table")
POLICIES = ("none", "quarantine", "reject")
SMARTHOST_PORTS = (587, 465)
#: the lookup-table type ``postmap`` builds on each target (Debian 13 dropped Berkeley DB)
MAP_TYPES = {"debian-12": "hash", "debian-13": "lmdb", "ubuntu-24.04": "hash"}

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_SELECTOR = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LOCAL_PART = re.compile(r"^[a-z0-9.!#$%&'*+/?^_`{|}~-]{1,64}$", re.IGNORECASE)
_FORBIDDEN = {"\n": "a line break", "\r": "a carriage return", "=": "an '='", '"': "a double quote",
              "'": "a single quote", "`": "a backquote", "\\": "a backslash", ";": "a ';'"}


class ProfileError(ConfigError):
    """A field of the site profile is wrong: ``field`` (``site.domain``), ``line`` (1-based, or
    None when the field is missing), ``reason`` and ``hint`` (what to write instead)."""

    def __init__(self, field: str, reason: str, hint: str = "", *, line: int | None = None,
                 source: str = "mail-site.toml"):
        self.line = line
        self.source = source
        where = f"{source}, line {line}" if line else source
        super().__init__(f"{field} ({where})", reason, hint)
        self.field = field


@dataclass(frozen=True)
class Profile:
    """The site's names and choices, checked. No secret is ever held here."""

    domain: str  #: the mail domain (example.net; the memo's robo.mydns.jp)
    hostname: str  #: the server's FQDN: MX target, HELO, PTR
    public_ip: str  #: the address the world sees (SPF, PTR)
    home_network: str  #: the ISP's range that the address comes from (SPF ip4:)
    target: str  #: debian-12, debian-13 or ubuntu-24.04
    smarthost_host: str  #: the ISP's submission server
    smarthost_port: int  #: 587 (STARTTLS) or 465 (implicit TLS)
    smarthost_user: str  #: the ISP login
    password_file: str | None  #: where the ISP password is (0600), or None
    dkim_selector: str = "mail"
    dkim_bits: int = 2048
    dmarc_policy: str = "none"
    dmarc_rua: str = ""  #: mailto: address of DMARC aggregate reports ("" for none)
    dns_style: str = "mydns"
    dmarc_alias_to: str = "root"  #: the local user the dmarc: alias hands reports to
    source: str = field(default="mail-site.toml", compare=False)
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    @property
    def isp_domain(self) -> str:
        """The ISP's mail domain: the smarthost's name without its first label (its SPF lives there)."""
        parts = self.smarthost_host.split(".")
        return ".".join(parts[1:]) if len(parts) > 2 else self.smarthost_host

    @property
    def map_type(self) -> str:
        return MAP_TYPES[self.target]

    @property
    def rua_address(self) -> str:
        return self.dmarc_rua.removeprefix("mailto:")

    @property
    def relayhost(self) -> str:
        return f"[{self.smarthost_host}]:{self.smarthost_port}"

    def line_of(self, name: str) -> int | None:
        return self.lines.get(name)

    def as_dict(self) -> dict[str, Any]:
        """The profile as the TOML tables hold it (no secret: there is none to hold)."""
        return {"site": {"domain": self.domain, "hostname": self.hostname, "public_ip": self.public_ip,
                         "home_network": self.home_network, "target": self.target},
                "smarthost": {"host": self.smarthost_host, "port": self.smarthost_port,
                              "user": self.smarthost_user,
                              **({"password_file": self.password_file} if self.password_file else {})},
                "dkim": {"selector": self.dkim_selector, "bits": self.dkim_bits},
                "dmarc": {"policy": self.dmarc_policy, "rua": self.dmarc_rua, "alias_to": self.dmarc_alias_to},
                "dns": {"style": self.dns_style}}

    def to_toml(self) -> str:
        """The profile as TOML text that :func:`parse` reads back to an equal profile."""
        out = []
        for table, values in self.as_dict().items():
            out.append(f"[{table}]")
            for key, value in values.items():
                out.append(f"{key} = {value}" if isinstance(value, int) else f'{key} = "{value}"')
            out.append("")
        return "\n".join(out)


# --------------------------------------------------------------------------- the schema

#: table.key -> (required, default, hint shown with an error)
SCHEMA: dict[str, tuple[bool, Any, str]] = {
    "site.domain": (True, None, 'your mail domain, e.g. domain = "example.net"'),
    "site.hostname": (True, None, 'the server\'s full name, e.g. hostname = "mail.example.net"'),
    "site.public_ip": (True, None, 'the address the world sees, e.g. public_ip = "192.0.2.10"'),
    "site.home_network": (True, None, 'the ISP range your address is in, e.g. home_network = "192.0.2.0/24"'),
    "site.target": (False, "debian-12", "one of " + ", ".join(TARGETS)),
    "smarthost.host": (True, None, 'the ISP\'s submission server, e.g. host = "smtp.isp.example"'),
    "smarthost.port": (False, 587, "587 (STARTTLS) or 465 (implicit TLS), as a number without quotes"),
    "smarthost.user": (True, None, 'the login the ISP gave you, e.g. user = "you@isp.example"'),
    "smarthost.password_file": (False, None, 'a file holding only the password, mode 0600, e.g. '
                                             'password_file = "~/.mail-site-password"'),
    "dkim.selector": (False, "mail", 'one DNS label: letters, digits, hyphens, e.g. selector = "mail"'),
    "dkim.bits": (False, 2048, "1024, 2048 (recommended, RFC 8301) or 4096, as a number"),
    "dmarc.policy": (False, "none", "one of none, quarantine, reject (start with none)"),
    "dmarc.rua": (False, "", 'where aggregate reports go, e.g. rua = "mailto:dmarc@example.net"'),
    "dmarc.alias_to": (False, "root", 'the local user that reads the reports, e.g. alias_to = "root"'),
    "dns.style": (False, "mydns", "one of " + ", ".join(STYLES)),
}
_FIELD = {"site.domain": "domain", "site.hostname": "hostname", "site.public_ip": "public_ip",
          "site.home_network": "home_network", "site.target": "target", "smarthost.host": "smarthost_host",
          "smarthost.port": "smarthost_port", "smarthost.user": "smarthost_user",
          "smarthost.password_file": "password_file", "dkim.selector": "dkim_selector", "dkim.bits": "dkim_bits",
          "dmarc.policy": "dmarc_policy", "dmarc.rua": "dmarc_rua", "dmarc.alias_to": "dmarc_alias_to",
          "dns.style": "dns_style"}


def key_lines(text: str) -> dict[str, int]:
    """``table.key`` -> the 1-based line where it is set (pure; for error messages)."""
    out: dict[str, int] = {}
    table = ""
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        m = re.match(r"^\[\s*([A-Za-z0-9_.-]+)\s*\]", line)
        if m:
            table = m.group(1)
            out.setdefault(table, n)
            continue
        m = re.match(r"^([A-Za-z0-9_-]+)\s*=", line)
        if m:
            out.setdefault(f"{table}.{m.group(1)}" if table else m.group(1), n)
    return out


def _text(name: str, value: Any, err: Callable[..., ProfileError], *, allow: str = "") -> str:
    if not isinstance(value, str):
        raise err(name, f"expected text in quotes, got {type(value).__name__} {value!r}", SCHEMA[name][2])
    for ch, what in _FORBIDDEN.items():
        if ch in value and ch not in allow:
            raise err(name, f"contains {what}",
                      "a profile value is one plain word or name; it is copied into configuration "
                      "files and DNS records, where this character would start something else")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise err(name, "contains a control character", "type the value again without it")
    if value != value.strip() or not value:
        raise err(name, "is empty or has spaces around it", SCHEMA[name][2])
    if any(c.isspace() for c in value):
        raise err(name, "contains white space", SCHEMA[name][2])
    if not value.isascii():
        raise err(name, "contains non-ASCII characters",
                  "write an internationalised name in its ASCII (xn--) form")
    return value


def _hostname(name: str, value: str, err, *, fqdn: bool = True) -> str:
    host = value.lower()
    if host.endswith("."):
        host = host[:-1]
    if len(host) > 253 or not all(_LABEL.match(lab) for lab in host.split(".")):
        raise err(name, f"{value!r} is not a valid host name",
                  "use letters, digits and hyphens in dot-separated labels; " + SCHEMA[name][2])
    if fqdn and "." not in host:
        raise err(name, f"{value!r} is not fully qualified", SCHEMA[name][2])
    if host.split(".")[-1].isdigit():
        raise err(name, f"{value!r} is an address, not a name", SCHEMA[name][2])
    return host


def parse(text: str, *, source: str = "mail-site.toml") -> Profile:
    """A :class:`Profile` from the TOML ``text`` of a profile; :class:`ProfileError` if any
    field is wrong (the first one found, with its line). Pure: reads nothing else."""
    lines = key_lines(text)

    def err(name: str, reason: str, hint: str = "", line: int | None = None) -> ProfileError:
        return ProfileError(name, reason, hint, line=line or lines.get(name) or lines.get(name.split(".")[0]),
                            source=source)

    if any(ord(c) < 32 and c not in "\n\t" or ord(c) == 127 for c in text):
        n = next(i for i, line in enumerate(text.splitlines(), 1)
                 if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in line))
        raise err("file", "contains a control character", "save it as plain UTF-8 text", line=n)
    if tomllib is None:
        raise ProfileError("file", "cannot be read: this Python (3.10) has no TOML parser",
                           "pip install tomli, or use Python 3.11 or newer", source=source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        raise err("file", f"is not valid TOML: {e}",
                  'each line is key = value, text in "double quotes", numbers without',
                  line=int(m.group(1)) if m else None) from None
    values: dict[str, Any] = {}
    for table, content in data.items():
        if not isinstance(content, dict):
            raise err(table, "is a value outside any table",
                      "put it under [site], [smarthost], [dkim], [dmarc] or [dns]")
        for key, value in content.items():
            name = f"{table}.{key}"
            if name == "smarthost.password":
                raise err(name, "the password is never written in the profile",
                          f"put it in a file of its own (mode 0600) named by password_file, or in the "
                          f"environment variable {PASSWORD_ENV}, or type it when asked")
            if name not in SCHEMA:
                known = ", ".join(k.split(".", 1)[1] for k in SCHEMA if k.startswith(table + "."))
                raise err(name, "is not a key labkit knows",
                          f"keys of [{table}] are {known}" if known else
                          "tables are [site], [smarthost], [dkim], [dmarc], [dns]")
            values[name] = value
    for name, (required, default, hint) in SCHEMA.items():
        if name not in values:
            if required:
                table, key = name.split(".")
                raise err(name, "is missing", f"add it under [{table}]: {hint}")
            values[name] = default
    for name, value in values.items():
        if value is None or isinstance(value, int) and not isinstance(value, bool) and name in (
                "smarthost.port", "dkim.bits"):
            continue
        if name == "dmarc.rua" and value == "":
            continue
        _text(name, value, err, allow="" if name != "smarthost.password_file" else "")

    domain = _hostname("site.domain", values["site.domain"], err)
    hostname = _hostname("site.hostname", values["site.hostname"], err)
    if hostname != domain and not hostname.endswith("." + domain):
        raise err("site.hostname", f"{hostname} is not in the domain {domain}",
                  f"name the server under your domain, e.g. mail.{domain}")
    try:
        ip = ipaddress.ip_address(values["site.public_ip"])
    except ValueError:
        raise err("site.public_ip", f"{values['site.public_ip']!r} is not an IP address", SCHEMA["site.public_ip"][2]) from None
    if ip.version != 4:
        raise err("site.public_ip", f"{ip} is IPv6; this profile takes the IPv4 address your ISP gives",
                  SCHEMA["site.public_ip"][2])
    if ip.is_loopback or ip.is_unspecified or ip.is_multicast:
        raise err("site.public_ip", f"{ip} is not an address the world can reach", SCHEMA["site.public_ip"][2])
    try:
        net = ipaddress.ip_network(values["site.home_network"], strict=True)
    except ValueError as e:
        raise err("site.home_network", f"{values['site.home_network']!r} is not a network: {e}",
                  "write address/prefix with the host bits zero, e.g. 192.0.2.0/24") from None
    if net.version != 4 or net.prefixlen < 8:
        raise err("site.home_network", f"{net} is wider than any ISP range (a /8 or wider, or not IPv4)",
                  "give the ISP's range your address is in, at most a /8, e.g. 192.0.2.0/24")
    if ip not in net:
        raise err("site.home_network", f"{net} does not hold public_ip {ip}",
                  f"give the range your address is in, e.g. {ipaddress.ip_network(f'{ip}/24', strict=False)}")
    target = values["site.target"]
    if target not in TARGETS:
        raise err("site.target", f"{target!r} is not a target labkit knows", SCHEMA["site.target"][2])
    smarthost = _hostname("smarthost.host", values["smarthost.host"], err)
    port = values["smarthost.port"]
    if isinstance(port, bool) or not isinstance(port, int) or port not in SMARTHOST_PORTS:
        raise err("smarthost.port", f"{port!r} is not 587 or 465",
                  "587 is submission with STARTTLS, 465 submission with TLS from the first byte (RFC 8314); "
                  "port 25 from home is blocked by the ISP (OP25B)")
    user = values["smarthost.user"]
    if ":" in user:
        raise err("smarthost.user", f"{user!r} contains ':'", "sasl_passwd holds user:password; the first ':' ends "
                  "the user name")
    pw_file = values["smarthost.password_file"]
    if pw_file is not None and not (pw_file.startswith(("/", "~/"))):
        raise err("smarthost.password_file", f"{pw_file!r} is not an absolute path or ~/path",
                  SCHEMA["smarthost.password_file"][2])
    selector = values["dkim.selector"]
    if not _SELECTOR.match(selector.lower()) or selector != selector.lower():
        raise err("dkim.selector", f"{selector!r} is not a selector", SCHEMA["dkim.selector"][2])
    bits = values["dkim.bits"]
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in (1024, 2048, 3072, 4096):
        raise err("dkim.bits", f"{bits!r} is not a key size labkit makes",
                  "2048 (RFC 8301 recommends it); 1024 is the least receivers accept, and the memo's "
                  "choice only to keep the record short; a 2048-bit record is split into 255-octet strings")
    policy = values["dmarc.policy"]
    if policy not in POLICIES:
        raise err("dmarc.policy", f"{policy!r} is not a DMARC policy", SCHEMA["dmarc.policy"][2])
    rua = values["dmarc.rua"]
    if rua:
        address = rua.removeprefix("mailto:")
        local, at, rua_domain = address.partition("@")
        if not rua.startswith("mailto:") or not at or not _LOCAL_PART.match(local) or "," in address:
            raise err("dmarc.rua", f"{rua!r} is not one mailto: address", SCHEMA["dmarc.rua"][2])
        _hostname("dmarc.rua", rua_domain, err)
    alias_to = values["dmarc.alias_to"]
    if not re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", alias_to):
        raise err("dmarc.alias_to", f"{alias_to!r} is not a local user name", SCHEMA["dmarc.alias_to"][2])
    style = values["dns.style"]
    if style not in STYLES:
        raise err("dns.style", f"{style!r} is not a style labkit writes", SCHEMA["dns.style"][2])
    return Profile(domain=domain, hostname=hostname, public_ip=str(ip), home_network=str(net), target=target,
                   smarthost_host=smarthost, smarthost_port=port, smarthost_user=user, password_file=pw_file,
                   dkim_selector=selector, dkim_bits=bits, dmarc_policy=policy, dmarc_rua=rua,
                   dns_style=style, dmarc_alias_to=alias_to, source=source, lines=lines)


def load(path: str | os.PathLike) -> Profile:
    """Read and check the profile at ``path`` (see :func:`parse`)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ProfileError("file", f"cannot be read: {e.strerror or e}",
                           "give the path of your mail-site.toml (examples/mail-site.toml is a start)",
                           source=str(p)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError("file", "is not UTF-8 text", "save it as UTF-8", source=str(p)) from None
    return parse(text, source=str(p))


def as_profile(value: Profile | str | os.PathLike) -> Profile:
    return value if isinstance(value, Profile) else load(value)


# --------------------------------------------------------------------------- the password

def password_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` may not hold the password (missing, not a file, readable by others), or None."""
    p = Path(os.path.expanduser(os.fspath(path)))
    try:
        st = p.lstat()
    except OSError as e:
        return f"{p} cannot be read: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        return f"{p} is not a regular file"
    if st.st_mode & 0o077:
        return f"{p} is mode {st.st_mode & 0o777:04o}; a password file must be 0600 (chmod 600 {p})"
    return None


def read_password(profile: Profile, *, env: Mapping[str, str] | None = None,
                  ask: Callable[[str], str] | None = None) -> Secret | None:
    """The ISP password as a :class:`Secret`: from ``password_file`` (0600 only), else from
    ``MAIL_SITE_PASSWORD``, else from ``ask(prompt)`` (e.g. :func:`getpass.getpass`), else None
    (the bundle then leaves a place for it). Never printed, logged or stored by labkit."""
    env = os.environ if env is None else env
    if profile.password_file:
        problem = password_file_problem(profile.password_file)
        if problem:
            raise ProfileError("smarthost.password_file", problem, "chmod 600 the file, or remove password_file",
                               line=profile.line_of("smarthost.password_file"), source=profile.source)
        value = Path(os.path.expanduser(profile.password_file)).read_text().strip("\r\n")
    elif env.get(PASSWORD_ENV):
        value = env[PASSWORD_ENV]
    elif ask is not None:
        value = ask(f"password of {profile.smarthost_user} at {profile.smarthost_host}: ")
    else:
        return None
    if not value or any(c in value for c in "\r\n\0") or value != value.strip():
        raise ProfileError("smarthost.password", "is empty, spans lines, or begins or ends with white space",
                           "the password is one line, exactly as the ISP gave it", source=profile.source)
    return Secret(value)


__all__ = ["EXAMPLE", "MAP_TYPES", "PASSWORD_ENV", "POLICIES", "Profile", "ProfileError", "SCHEMA", "STYLES", "TARGETS",
           "as_profile", "key_lines", "load", "parse", "password_file_problem", "read_password"]
