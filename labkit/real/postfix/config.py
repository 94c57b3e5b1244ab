"""A typed Postfix configuration that renders the real files and the memo's commands.

The memo sets Postfix up on Debian as an "Internet with smarthost": every message leaves
through the ISP's submission server on port 587, with STARTTLS and SMTP AUTH. It does so with
six ``postconf -e`` lines, a ``sasl_passwd`` file and ``postmap``. :class:`PostfixConfig`
holds the same choices as typed values and renders, from them alone:

- ``main.cf``: only the lines that differ from Postfix's defaults, each headed by a comment
  naming its postconf(5) parameter and why it is set;
- ``master.cf``: the services, run without chroot, with the SMTP server on the lab's address
  and, where asked for, submission (587, STARTTLS) and submissions (465, implicit TLS);
- ``sasl_passwd`` (0600) and its indexed map (``postmap``), and ``aliases``;
- :meth:`PostfixConfig.postconf_commands`: the memo's ``postconf -e '...'`` lines for the same
  settings, so that what a learner types and what the lab runs never drift apart.

Everything here is pure except :meth:`PostfixConfig.write` (files, ``postmap``) and
:meth:`PostfixConfig.check` (the real ``postconf -n`` and ``postfix check``). What
"non-default" means is Postfix's built-in values, passed in as ``defaults``; given none, they
are asked of the installed Postfix (``postconf -d``, :func:`defaults`), else
:data:`KNOWN_DEFAULTS`. Rendered with ``defaults=KNOWN_DEFAULTS``, main.cf is the same on
every machine.

Bad values are refused when the configuration is made, before anything is written: a
:class:`labkit.errors.ConfigError` names the field and the reason. The password is held in a
:class:`Secret`, whose ``repr`` and ``str`` are masked; it appears only inside ``sasl_passwd``.

Where the memo is dated (ERRATA.md): the relayhost is rendered ``[host]:587`` (without brackets
Postfix looks up MX records, ERRATA 7) and the ``sasl_passwd`` key is derived from it so the two
cannot differ; ``smtp_tls_security_level`` is ``encrypt`` or ``secure`` so that a stripped
STARTTLS cannot make Postfix send the password in clear (ERRATA 8); the map type is a field
(``hash`` by default; ``lmdb`` or ``cdb`` where ``postconf -m`` lists them, ERRATA 10).
"""
from __future__ import annotations

import functools
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...files import write_atomic, write_secret
from ...result import Result
from ..checks import check_absolute_path, check_line, check_port, is_dns_name
from ..tools import which

#: Postfix 3.7.11 (Debian 12) built-in values of the parameters labkit renders, used to decide
#: what "non-default" means where ``postconf -d`` cannot be asked (Postfix not installed).
KNOWN_DEFAULTS: dict[str, str] = {
    "compatibility_level": "0",
    "mydestination": "$myhostname, localhost.$mydomain, localhost",
    "myorigin": "$myhostname",
    "inet_interfaces": "all",
    "inet_protocols": "all",
    "relayhost": "",
    "smtp_sasl_auth_enable": "no",
    "smtp_sasl_password_maps": "",
    "smtp_sasl_security_options": "noplaintext, noanonymous",
    "smtp_sasl_tls_security_options": "$smtp_sasl_security_options",
    "smtp_sasl_mechanism_filter": "",
    "smtp_tls_security_level": "",
    "smtp_tls_CAfile": "",
    "smtp_tls_secure_cert_match": "nexthop, dot-nexthop",
    "smtp_tls_loglevel": "0",
    "smtpd_relay_restrictions": "${{$compatibility_level} <level {1} ? {} : "
                                "{permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination}}",
    "smtpd_tls_cert_file": "",
    "smtpd_tls_key_file": "$smtpd_tls_cert_file",
    "smtpd_tls_security_level": "",
    "smtpd_tls_auth_only": "no",
    "smtpd_tls_loglevel": "0",
    "smtpd_sasl_auth_enable": "no",
    "smtpd_sasl_type": "cyrus",
    "smtpd_sasl_path": "smtpd",
    "smtpd_forbid_bare_newline": "no",
    "smtpd_milters": "",
    "non_smtpd_milters": "",
    "milter_default_action": "tempfail",
    "milter_protocol": "6",
    "virtual_transport": "virtual",
    "virtual_mailbox_domains": "$virtual_mailbox_maps",
    "alias_maps": "hash:/etc/aliases, nis:mail.aliases",
    "alias_database": "hash:/etc/aliases",
    "queue_directory": "/var/spool/postfix",
    "data_directory": "/var/lib/postfix",
    "maillog_file": "",
    "maillog_file_prefixes": "/var, /dev/stdout",
    "queue_run_delay": "300s",
    "virtual_mailbox_maps": "",
    "smtpd_recipient_limit": "1000",
    "minimal_backoff_time": "300s",
    "maximal_backoff_time": "4000s",
}

#: The retry timers of the lab: a learner waits seconds, not the production minutes, for a
#: deferred message to leave once the ISP is back (Postfix's defaults in KNOWN_DEFAULTS).
LAB_RETRY = {"queue_run_delay": "5s", "minimal_backoff_time": "5s", "maximal_backoff_time": "20s"}
_TIME = re.compile(r"^[1-9][0-9]*[smhdw]?$")

#: Parameters whose built-in value depends on the machine (its host name, its interfaces):
#: labkit always writes them, so the rendered file means the same on every machine.
ALWAYS_RENDERED = frozenset({"myhostname", "mydomain", "mynetworks"})

#: Every parameter a typed field of PostfixConfig sets: ``extra`` may not set them again.
TYPED_PARAMETERS = frozenset(KNOWN_DEFAULTS) | {"myhostname", "mydomain", "mynetworks"}

#: The general types Debian's installer offers (``dpkg-reconfigure postfix``), with the memo's
#: Japanese labels. Only the ones that send mail are supported here.
GENERAL_TYPES = {
    "internet with smarthost": "smarthost", "スマートホスト付きインターネット": "smarthost",
    "internet site": "internet", "インターネットサイト": "internet",
    "satellite system": "satellite", "サテライトシステム": "satellite",
    "local only": "local", "ローカルのみ": "local",
}

TLS_CLIENT_LEVELS = ("none", "may", "encrypt", "dane", "dane-only", "fingerprint", "verify", "secure")
TLS_SERVER_LEVELS = ("none", "may", "encrypt")
#: Map types that ``postmap`` builds an index for; ``texthash`` is read as text, unindexed.
UNINDEXED_MAP_TYPES = frozenset({"texthash"})

#: master.cf services other than the SMTP servers: (name, type, private, unpriv, wakeup,
#: maxproc, command). Every one runs with chroot "n" (the sandbox has no chroot tree).
_SERVICES = (
    ("pickup", "unix", "n", "-", "60", "1", "pickup"),
    ("cleanup", "unix", "n", "-", "-", "0", "cleanup"),
    ("qmgr", "unix", "n", "-", "300", "1", "qmgr"),
    ("tlsmgr", "unix", "-", "-", "1000?", "1", "tlsmgr"),
    ("rewrite", "unix", "-", "-", "-", "-", "trivial-rewrite"),
    ("bounce", "unix", "-", "-", "-", "0", "bounce"),
    ("defer", "unix", "-", "-", "-", "0", "bounce"),
    ("trace", "unix", "-", "-", "-", "0", "bounce"),
    ("verify", "unix", "-", "-", "-", "1", "verify"),
    ("flush", "unix", "n", "-", "1000?", "0", "flush"),
    ("proxymap", "unix", "-", "-", "-", "-", "proxymap"),
    ("proxywrite", "unix", "-", "-", "-", "1", "proxymap"),
    ("smtp", "unix", "-", "-", "-", "-", "smtp"),
    ("relay", "unix", "-", "-", "-", "-", "smtp"),
    ("showq", "unix", "n", "-", "-", "-", "showq"),
    ("error", "unix", "-", "-", "-", "-", "error"),
    ("retry", "unix", "-", "-", "-", "-", "error"),
    ("discard", "unix", "-", "-", "-", "-", "discard"),
    ("local", "unix", "-", "n", "-", "-", "local"),
    ("virtual", "unix", "-", "n", "-", "-", "virtual"),
    ("lmtp", "unix", "-", "-", "-", "-", "lmtp"),
    ("anvil", "unix", "-", "-", "-", "1", "anvil"),
    ("scache", "unix", "-", "-", "-", "1", "scache"),
    # maillog_file is written by postlogd: without this line Postfix logs nowhere.
    ("postlog", "unix-dgram", "n", "-", "-", "1", "postlogd"),
)


# --------------------------------------------------------------------------------------------
# A password that does not leak


class Secret:
    """A secret string: ``repr`` and ``str`` show ``********``; :meth:`reveal` gives the value.

    Keeping the password in one of these means an f-string, a log line, a traceback or a
    notebook cell that shows the configuration never shows the password.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    def __str__(self) -> str:
        return "********"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))


# --------------------------------------------------------------------------------------------
# Validation: small pure checks, each raising ConfigError(field, reason, hint)

_PARAM = re.compile(r"^[a-z][a-z0-9_]*$")
_MAP_TYPE = re.compile(r"^[a-z][a-z0-9_]*$")


def check_text(name: str, value: str) -> str:
    """Refuse what would break a main.cf line: CR, LF, NUL, and a ``$`` that is not ``$$``.

    Postfix expands ``$name`` in parameter values, so a stray ``$`` silently becomes the value
    of another parameter (or nothing); a line break would start a new parameter.
    """
    check_line(name, value, "a main.cf value is one line of text")
    if "$" in value.replace("$$", ""):
        raise ConfigError(name, f"{value!r} contains an unescaped '$'",
                          "Postfix expands $name to another parameter's value; write $$ for a literal $")
    return value


def check_hostname(name: str, value: str, *, fqdn: bool = False) -> str:
    """A DNS host name (RFC 1123 labels); with ``fqdn`` it must have at least one dot."""
    check_text(name, value)
    host = value.removesuffix(".")
    if not is_dns_name(value):
        raise ConfigError(name, f"{value!r} is not a valid host name",
                          "use letters, digits and hyphens in dot-separated labels, e.g. mail.example.com")
    if fqdn and "." not in host:
        raise ConfigError(name, f"{value!r} is not fully qualified",
                          "give the full name, e.g. mail.example.com")
    return value


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def check_host_or_ip(name: str, value: str) -> str:
    if is_ip(value):
        return value
    if re.fullmatch(r"[0-9.]+", value or ""):
        raise ConfigError(name, f"{value!r} is neither an IP address nor a host name",
                          "an IPv4 address has four numbers from 0 to 255, e.g. 127.0.30.25")
    if any(c in value for c in ", \t"):
        raise ConfigError(name, f"{value!r} contains a comma or white space",
                          "give one host; Postfix would read a list here")
    return check_hostname(name, value)


#: What ``mynetworks`` may hold without the open-relay break-it: loopback and the lab's home network
#: (127.0.20.0/24, inside loopback). Anything wider is refused unless ``break_it="open-relay"``.
TRUSTED_NETWORKS = ("127.0.0.0/8", "::1/128", "::ffff:127.0.0.0/104")  # the last: IPv4 loopback, IPv6-mapped
#: The break-it exercises a PostfixConfig may name to lift a guard on purpose.
BREAK_ITS = ("open-relay",)


def check_network(name: str, value: str, *, open_relay: bool = False) -> str:
    """One entry of ``mynetworks``: a network without host bits, never the whole Internet, and
    (unless ``open_relay``) inside loopback, where the lab's hosts live."""
    check_text(name, value)
    try:
        net = ipaddress.ip_network(value.strip("[]").replace("]/", "/"), strict=True)
    except ValueError as e:
        raise ConfigError(name, f"{value!r} is not a network: {e}",
                          "write it as address/prefix with the host bits zero, e.g. 127.0.0.0/8") from None
    if net.prefixlen == 0:
        raise ConfigError(name, f"{value!r} is the whole Internet: every client could relay through you",
                          "an open relay is abused for spam within hours; list only your own networks")
    if not open_relay and not any(net.version == t.version and net.subnet_of(t)
                                  for t in map(ipaddress.ip_network, TRUSTED_NETWORKS)):
        raise ConfigError(name, f"{value!r} reaches beyond loopback and the lab's home network: every client "
                          "in it could relay through this server",
                          "list only the lab's own hosts (127.0.20.0/24); to make an open relay on purpose, "
                          "name the break-it: break_it='open-relay'")
    return value


def check_path(name: str, value: str) -> str:
    check_text(name, str(value))
    value = check_absolute_path(name, str(value), "Postfix reads files by absolute path")
    if any(c in value for c in ", \t"):
        raise ConfigError(name, f"{value!r} contains a comma or white space",
                          "Postfix splits such values into lists; choose a path without them")
    return value


def check_word(name: str, value: str) -> str:
    """One token of a list (a milter, a transport, a restriction): no comma or white space."""
    check_text(name, value)
    if not value or any(c in value for c in ", \t"):
        raise ConfigError(name, f"{value!r} must be one non-empty word without commas or spaces")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(name, f"{value!r} is not one of {', '.join(choices)}")
    return value


def check_sasl_user(name: str, value: str) -> str:
    check_text(name, value)
    if not value:
        raise ConfigError(name, "is empty", "give the login name the ISP gave you")
    if ":" in value:
        raise ConfigError(name, f"{value!r} contains ':'",
                          "sasl_passwd holds user:password, so the first ':' ends the user name")
    if any(c.isspace() for c in value):
        raise ConfigError(name, f"{value!r} contains white space", "a lookup-table value cannot start a new column")
    return value


def check_password(name: str, secret: Secret) -> Secret:
    """The password itself is never put in the message: only what is wrong with it."""
    value = secret.reveal()
    if not isinstance(value, str) or not value:
        raise ConfigError(name, "is empty or not text", "give the password the ISP gave you")
    check_line(name, value, "sasl_passwd holds one entry a line")
    if value != value.strip():
        raise ConfigError(name, "begins or ends with white space",
                          "Postfix trims it from lookup-table values, so the ISP would see another password")
    return secret


# --------------------------------------------------------------------------------------------
# Relay host strings


def format_relayhost(host: str, port: int | None, brackets: bool) -> str:
    """``[mail.isp.example.net]:587``: brackets mean "this host", not "its MX records"."""
    shown = f"ipv6:{host}" if ":" in host else host
    text = f"[{shown}]" if brackets else shown
    return f"{text}:{port}" if port else text


def parse_relayhost(text: str) -> tuple[str, int | None, bool]:
    """``'[mail.isp.example.net]:587'`` -> ``('mail.isp.example.net', 587, True)``.

    The memo's answer to the installer, ``mail.so-net.ne.jp:587``, parses with brackets False.
    """
    check_text("relay_host", text)
    m = re.fullmatch(r"\[(?:ipv6:)?(?P<host>[^\]]+)\](?::(?P<port>\d+))?|(?P<bare>[^:\[\]]+)(?::(?P<bport>\d+))?",
                     text.strip())
    if not m:
        raise ConfigError("relay_host", f"{text!r} is not host, host:port or [host]:port")
    if m.group("host"):
        port = m.group("port")
        return m.group("host"), int(port) if port else None, True
    port = m.group("bport")
    return m.group("bare"), int(port) if port else None, False


# --------------------------------------------------------------------------------------------
# Postfix's built-in defaults and map types (the only I/O outside write/check)


def postfix_tool(name: str) -> str | None:
    """Path of a Postfix command (``postconf``, ``postmap``...), or None if not installed."""
    return which(name)


@functools.lru_cache(maxsize=1)
def installed_defaults() -> dict[str, str] | None:
    """``postconf -d`` as a dict (Postfix's built-in values), or None without Postfix."""
    postconf = postfix_tool("postconf")
    if postconf is None:
        return None
    proc = subprocess.run([postconf, "-d"], capture_output=True, text=True, timeout=30, check=False)
    if proc.returncode != 0:
        return None
    out = {}
    for line in proc.stdout.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            out[name] = value
        elif line.endswith(" ="):
            out[line[:-2]] = ""
    return out


def defaults() -> dict[str, str]:
    """The built-in values to compare against: the installed Postfix's, else KNOWN_DEFAULTS."""
    return installed_defaults() or dict(KNOWN_DEFAULTS)


_defaults = defaults  # the methods below take a parameter of that name


def has_parameter(name: str) -> bool:
    """Whether this Postfix knows ``name`` (e.g. ``smtpd_forbid_bare_newline``: 3.5.23+/3.9)."""
    return name in defaults()


@functools.lru_cache(maxsize=1)
def supported_map_types() -> tuple[str, ...] | None:
    """The lookup-table types this Postfix supports (``postconf -m``), or None without Postfix.

    ``postconf -m`` insists on reading a main.cf, so it is given an empty one.
    """
    postconf = postfix_tool("postconf")
    if postconf is None:
        return None
    with tempfile.TemporaryDirectory(prefix="labkit-postconf-") as tmp:
        Path(tmp, "main.cf").write_text("")
        past = time.time() - 2  # a brand-new main.cf makes Postfix tools wait up to 2 s
        os.utime(Path(tmp, "main.cf"), (past, past))
        proc = subprocess.run([postconf, "-c", tmp, "-m"], capture_output=True, text=True, timeout=30, check=False)
    return tuple(proc.stdout.split()) if proc.returncode == 0 else None


def _normal(value: str) -> tuple[str, ...]:
    """Compare values the way Postfix reads lists: commas and white space both separate."""
    return tuple(re.split(r"[\s,]+", value.strip())) if value.strip() else ()


# --------------------------------------------------------------------------------------------
# The configuration


@dataclass(frozen=True)
class Setting:
    """One main.cf parameter as labkit renders it."""

    name: str
    value: str
    why: str  #: the short comment written above it
    section: str


@dataclass(frozen=True)
class PostfixConfig:
    """What the lab (and the memo) decide about Postfix, as typed values.

    Make one with :meth:`smarthost_client` (the memo's "Internet with smarthost") or
    :meth:`from_install_answers` (the installer's three questions), then :meth:`write` it to a
    folder and :meth:`check` it with the real tools. Values are checked when the object is
    made; :func:`dataclasses.replace` makes a changed copy (and checks it again).
    """

    # --- identity: the installer's questions -----------------------------------------------
    myhostname: str = "mail.example.com"  #: this server's own name (HELO, Received:)
    mydomain: str | None = None  #: its domain (default: myhostname minus its first label)
    myorigin: str | None = None  #: the memo's "system mail name": domain added to bare users
    mydestination: tuple[str, ...] = ()  #: domains delivered here; empty: relay everything
    # --- network ---------------------------------------------------------------------------
    inet_interfaces: str = "loopback-only"
    inet_protocols: str = "ipv4"
    mynetworks: tuple[str, ...] = ("127.0.0.0/8",)  #: clients allowed to relay without AUTH
    compatibility_level: str = "3.6"
    # --- relay through the smarthost (the memo's postconf -e lines) ------------------------
    relay_host: str | None = None  #: the ISP's submission server (name or IP)
    relay_port: int | None = 587
    relay_brackets: bool = True  #: [host]: deliver to this host, no MX look-up (ERRATA 7)
    smtp_sasl_auth_enable: bool = False
    sasl_user: str | None = None
    sasl_password: Secret | None = None
    #: Deliberately wrong sasl_passwd key for the break-it exercise; None: the relayhost string.
    sasl_passwd_key: str | None = None
    smtp_sasl_security_options: str = "noplaintext, noanonymous"  #: without TLS: no plain text
    smtp_sasl_tls_security_options: str = "noanonymous"  #: over TLS: PLAIN/LOGIN are fine
    smtp_sasl_mechanism_filter: str = ""
    smtp_tls_security_level: str = "encrypt"  #: encrypt or secure: STARTTLS cannot be stripped
    smtp_tls_CAfile: str | None = None  #: the lab CA, to verify the smarthost's certificate
    smtp_tls_secure_cert_match: tuple[str, ...] = ()  #: names the smarthost certificate must carry
    tls_loglevel: int = 1  #: 1: log each TLS handshake ("Verified TLS connection established")
    # --- our own SMTP server (smtpd) -------------------------------------------------------
    listen: tuple[str, int] = ("127.0.0.1", 25)  #: the smtpd in master.cf: address, port
    submission: tuple[str, int] | None = None  #: an optional submission smtpd (STARTTLS + AUTH)
    submissions: tuple[str, int] | None = None  #: an optional submissions smtpd (implicit TLS + AUTH)
    smtpd_relay_restrictions: tuple[str, ...] = ("permit_mynetworks", "permit_sasl_authenticated",
                                                 "reject_unauth_destination")
    smtpd_tls_cert_file: str | None = None
    smtpd_tls_key_file: str | None = None
    smtpd_tls_security_level: str | None = None  #: None: "may" with a certificate, else off
    smtpd_tls_auth_only: bool = True  #: never offer AUTH before STARTTLS
    smtpd_sasl_auth_enable: bool = False
    smtpd_sasl_type: str = "cyrus"  #: "dovecot" to ask Dovecot (with smtpd_sasl_path)
    smtpd_sasl_path: str = "smtpd"
    smtpd_forbid_bare_newline: str = "normalize"  #: SMTP smuggling defence, where Postfix has it
    # --- milters (OpenDKIM, later) ---------------------------------------------------------
    smtpd_milters: tuple[str, ...] = ()
    non_smtpd_milters: tuple[str, ...] = ()
    milter_default_action: str | None = None
    milter_protocol: int | None = None
    # --- delivery (Dovecot LMTP, later) ----------------------------------------------------
    virtual_transport: str | None = None
    virtual_mailbox_domains: tuple[str, ...] = ()
    #: the addresses of virtual_mailbox_domains that exist (virtual_mailbox_maps): any other is
    #: refused at RCPT with 550 5.1.1 "User unknown"; empty: no map, every address is taken
    virtual_mailboxes: tuple[str, ...] = ()
    #: recipients per message (smtpd_recipient_limit): past it, 452 4.5.3 (default 1000)
    smtpd_recipient_limit: int | None = None
    aliases: Mapping[str, str] = field(default_factory=dict)
    map_type: str = "hash"  #: lookup-table type of sasl_passwd and aliases (ERRATA 10)
    #: the aliases file alias_maps names (default: ``aliases`` in config_directory; a host: /etc/aliases)
    aliases_file: str | None = None
    # --- retries of deferred mail (postconf(5)); None: Postfix's default ---------------------
    queue_run_delay: str | None = None  #: how often the deferred queue is scanned (default 300s)
    minimal_backoff_time: str | None = None  #: the least wait before a retry (default 300s)
    maximal_backoff_time: str | None = None  #: the longest wait between retries (default 4000s)
    # --- where things live -----------------------------------------------------------------
    config_directory: str = "/etc/postfix"
    queue_directory: str | None = None
    data_directory: str | None = None
    maillog_file: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)  #: any other parameter, checked alike
    #: a break-it exercise named on purpose: "open-relay" lifts the guards of mynetworks and
    #: smtpd_relay_restrictions (a careless configuration the chapter then shows relaying)
    break_it: str | None = None

    # ------------------------------------------------------------------ making one
    def __post_init__(self) -> None:
        if self.sasl_password is not None and not isinstance(self.sasl_password, Secret):
            object.__setattr__(self, "sasl_password", Secret(self.sasl_password))
        for name in ("mydestination", "mynetworks", "smtp_tls_secure_cert_match", "smtpd_relay_restrictions",
                     "smtpd_milters", "non_smtpd_milters", "virtual_mailbox_domains", "virtual_mailboxes"):
            value = getattr(self, name)
            if isinstance(value, str):
                check_text(name, value)  # a line break would otherwise be taken as a separator
                object.__setattr__(self, name, tuple(_normal(value)))
            else:
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.listen, list):
            object.__setattr__(self, "listen", tuple(self.listen))
        for name in ("submission", "submissions"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "aliases", dict(self.aliases))
        object.__setattr__(self, "extra", dict(self.extra))
        for name in ("config_directory", "queue_directory", "data_directory", "maillog_file",
                     "smtp_tls_CAfile", "smtpd_tls_cert_file", "smtpd_tls_key_file"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        self.validate()

    @classmethod
    def smarthost_client(cls, sandbox: str | os.PathLike, *, relay_host: str, sasl_user: str,
                         sasl_password: str | Secret, myhostname: str = "mail.example.com",
                         relay_port: int = 587, ca_file: str | os.PathLike | None = None,
                         cert_match: str | tuple[str, ...] | None = None,
                         listen: tuple[str, int] = ("127.0.0.1", 25), **more: Any) -> PostfixConfig:
        """The memo's "Internet with smarthost", run from ``sandbox``.

        Every message goes to ``[relay_host]:relay_port`` over TLS, logging in as ``sasl_user``.
        With ``ca_file`` (the lab CA) the level is ``secure``: the smarthost's certificate must
        chain to that CA and carry ``cert_match`` (default: ``relay_host`` when it is a name;
        give the name when the relay is an IP address, as Postfix does not match IP SANs).
        Without it the level is ``encrypt``: TLS is required, the certificate is not checked.

        The sandbox holds ``etc/`` (the configuration), ``queue/``, ``data/`` and ``maillog``.
        ``more`` sets any other field.
        """
        root = Path(sandbox).absolute()
        if cert_match is None and ca_file is not None and not is_ip(relay_host):
            cert_match = relay_host
        if isinstance(cert_match, str):
            cert_match = (cert_match,)
        values: dict[str, Any] = dict(
            myhostname=myhostname, relay_host=relay_host, relay_port=relay_port, relay_brackets=True,
            smtp_sasl_auth_enable=True, sasl_user=sasl_user, sasl_password=sasl_password,
            smtp_tls_security_level="secure" if ca_file else "encrypt",
            smtp_tls_CAfile=os.fspath(ca_file) if ca_file else None,
            smtp_tls_secure_cert_match=tuple(cert_match or ()),
            listen=listen, config_directory=str(root / "etc"), queue_directory=str(root / "queue"),
            data_directory=str(root / "data"), maillog_file=str(root / "maillog"))
        values.update(more)
        return cls(**values)

    @classmethod
    def from_install_answers(cls, general_type: str, system_mail_name: str, relay_host: str = "",
                             **more: Any) -> PostfixConfig:
        """The three questions Debian's installer asks, as the memo answered them.

        ``from_install_answers("Internet with smarthost", "example.com", "mail.so-net.ne.jp:587")``
        gives what the installer writes. Note that the memo's relay answer has no brackets:
        :meth:`warnings` says why that makes Postfix look up MX records (ERRATA 7). The
        installer asks nothing about SASL or TLS; those are the memo's ``postconf -e`` lines.
        """
        kind = GENERAL_TYPES.get(general_type.strip().lower())
        if kind is None:
            raise ConfigError("general_type", f"{general_type!r} is not an installer choice labkit knows",
                              "use one of: Internet with smarthost, Internet site, Satellite system, Local only")
        check_hostname("system_mail_name", system_mail_name, fqdn=True)
        values: dict[str, Any] = dict(myorigin=system_mail_name, myhostname=system_mail_name,
                                      inet_interfaces="all", inet_protocols="all", aliases={"postmaster": "root"},
                                      mydestination=(system_mail_name, "localhost"), listen=("", 25))
        if kind in ("smarthost", "satellite"):
            if not relay_host:
                raise ConfigError("relay_host", f"the {general_type!r} type needs a relay host",
                                  "give the ISP's server, e.g. [mail.isp.example.net]:587")
            host, port, brackets = parse_relayhost(relay_host)
            values.update(relay_host=host, relay_port=port, relay_brackets=brackets)
        if kind == "satellite":
            values.update(mydestination=(), aliases={})
        if kind == "local":
            values.update(inet_interfaces="loopback-only")
        values.update(more)
        return cls(**values)

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field (also run when made)."""
        check_hostname("myhostname", self.myhostname, fqdn=True)
        if self.mydomain is not None:
            check_hostname("mydomain", self.mydomain, fqdn=True)
        if self.myorigin is not None:
            check_hostname("myorigin", self.myorigin)
        for d in self.mydestination:
            check_hostname("mydestination", d)
        check_text("inet_interfaces", self.inet_interfaces)
        for item in _normal(self.inet_interfaces):
            check_word("inet_interfaces", item)
        check_choice("inet_protocols", self.inet_protocols, ("all", "ipv4", "ipv6", "ipv4, ipv6"))
        if self.break_it is not None and self.break_it not in BREAK_ITS:
            raise ConfigError("break_it", f"{self.break_it!r} is not a break-it exercise",
                              f"the ones a configuration can name: {', '.join(BREAK_ITS)}")
        for net in self.mynetworks:
            check_network("mynetworks", net, open_relay=self.break_it == "open-relay")
        check_text("compatibility_level", self.compatibility_level)
        if not re.fullmatch(r"\d+(\.\d+){0,2}", self.compatibility_level):
            raise ConfigError("compatibility_level", f"{self.compatibility_level!r} is not a version such as 3.6")
        self._validate_relay()
        self._validate_server()
        for name in ("smtpd_milters", "non_smtpd_milters", "virtual_mailbox_domains", "virtual_mailboxes"):
            for item in getattr(self, name):
                check_word(name, item)
        for address in self.virtual_mailboxes:
            if address.count("@") != 1 or address.startswith("@") or address.endswith("@"):
                raise ConfigError("virtual_mailboxes", f"{address!r} is not an address such as alice@example.com")
        if self.smtpd_recipient_limit is not None:
            if isinstance(self.smtpd_recipient_limit, bool) or not isinstance(self.smtpd_recipient_limit, int) \
                    or self.smtpd_recipient_limit < 1:
                raise ConfigError("smtpd_recipient_limit", f"{self.smtpd_recipient_limit!r} is not a positive number")
        if self.milter_default_action is not None:
            check_choice("milter_default_action", self.milter_default_action,
                         ("accept", "reject", "tempfail", "quarantine"))
        if self.milter_protocol is not None and self.milter_protocol not in (2, 3, 4, 6):
            raise ConfigError("milter_protocol", f"{self.milter_protocol!r} is not 2, 3, 4 or 6")
        if self.virtual_transport is not None:
            check_word("virtual_transport", self.virtual_transport)
        for name, target in self.aliases.items():
            check_word("aliases", name)
            if ":" in name:
                raise ConfigError("aliases", f"alias name {name!r} contains ':'")
            check_text(f"aliases[{name}]", target)
        if not _MAP_TYPE.match(self.map_type):
            raise ConfigError("map_type", f"{self.map_type!r} is not a lookup-table type name",
                              "hash (Berkeley DB), lmdb or cdb; `postconf -m` lists what this Postfix has")
        for name in ("config_directory", "queue_directory", "data_directory", "maillog_file"):
            value = getattr(self, name)
            if value is not None:
                check_path(name, value)
        for name in ("queue_run_delay", "minimal_backoff_time", "maximal_backoff_time"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not _TIME.match(value)):
                raise ConfigError(name, f"{value!r} is not a Postfix time", "a number with a unit: 5s, 10m, 1h")
        self._validate_extra()

    def _validate_relay(self) -> None:
        if self.relay_host is not None:
            check_host_or_ip("relay_host", self.relay_host)
        if self.relay_port is not None:
            check_port("relay_port", self.relay_port)
        if self.smtp_sasl_auth_enable:
            if self.relay_host is None:
                raise ConfigError("relay_host", "SMTP AUTH to a relay is enabled but no relay host is set")
            if self.sasl_user is None or self.sasl_password is None:
                raise ConfigError("sasl_user" if self.sasl_user is None else "sasl_password",
                                  "SMTP AUTH to the relay is enabled but the login is incomplete",
                                  "give both sasl_user and sasl_password")
        if self.sasl_user is not None:
            check_sasl_user("sasl_user", self.sasl_user)
        if self.sasl_password is not None:
            check_password("sasl_password", self.sasl_password)
        if self.sasl_passwd_key is not None:
            check_word("sasl_passwd_key", self.sasl_passwd_key)
        check_text("smtp_sasl_security_options", self.smtp_sasl_security_options)
        check_text("smtp_sasl_tls_security_options", self.smtp_sasl_tls_security_options)
        check_text("smtp_sasl_mechanism_filter", self.smtp_sasl_mechanism_filter)
        check_choice("smtp_tls_security_level", self.smtp_tls_security_level, TLS_CLIENT_LEVELS)
        if self.smtp_tls_CAfile is not None:
            check_path("smtp_tls_CAfile", self.smtp_tls_CAfile)
        for name in self.smtp_tls_secure_cert_match:
            check_word("smtp_tls_secure_cert_match", name)
        if self.tls_loglevel not in (0, 1, 2, 3, 4):
            raise ConfigError("tls_loglevel", f"{self.tls_loglevel!r} is not 0 to 4")

    def _validate_server(self) -> None:
        for name in ("listen", "submission", "submissions"):
            value = getattr(self, name)
            if value is None:
                continue
            if not (isinstance(value, tuple) and len(value) == 2):
                raise ConfigError(name, f"{value!r} is not (address, port)")
            addr, port = value
            if addr and not is_ip(addr):
                check_hostname(name, addr)
            if addr and is_ip(addr) and not ipaddress.ip_address(addr).is_loopback:
                raise ConfigError(name, f"{addr} is not a loopback address: the lab's Postfix would be reachable "
                                  "from other machines", "every lab socket stays on 127.0.0.0/8 or ::1")
            check_port(name, port)
        if self.submission is not None and self.submission == self.listen:
            raise ConfigError("submission", "is the same address and port as listen")
        if self.submissions is not None and self.submissions in (self.listen, self.submission):
            other = "listen" if self.submissions == self.listen else "submission"
            raise ConfigError("submissions", f"is the same address and port as {other}")
        for name in ("smtpd_tls_cert_file", "smtpd_tls_key_file"):
            value = getattr(self, name)
            if value is not None:
                check_path(name, value)
        if (self.smtpd_tls_cert_file is None) != (self.smtpd_tls_key_file is None):
            raise ConfigError("smtpd_tls_key_file", "a certificate needs its key and a key its certificate")
        if self.smtpd_tls_security_level is not None:
            check_choice("smtpd_tls_security_level", self.smtpd_tls_security_level, TLS_SERVER_LEVELS)
            if self.smtpd_tls_security_level != "none" and self.smtpd_tls_cert_file is None:
                raise ConfigError("smtpd_tls_security_level", "TLS is asked for but no certificate is given",
                                  "set smtpd_tls_cert_file and smtpd_tls_key_file")
        for name in ("submission", "submissions"):
            if getattr(self, name) is not None and self.smtpd_tls_cert_file is None:
                raise ConfigError(name, f"the {name} port needs TLS and no certificate is given",
                                  "set smtpd_tls_cert_file and smtpd_tls_key_file")
        for r in self.smtpd_relay_restrictions:
            check_word("smtpd_relay_restrictions", r)
        if self.break_it != "open-relay":
            guard = ("reject_unauth_destination", "defer_unauth_destination", "reject")
            for r in self.smtpd_relay_restrictions:
                if r in guard:
                    break
                if r == "permit":
                    raise ConfigError("smtpd_relay_restrictions", "'permit' comes before reject_unauth_destination: "
                                      "every message is accepted for anywhere, an open relay",
                                      "end the list with reject_unauth_destination, after the permit_* of trusted "
                                      "clients")
            else:
                raise ConfigError("smtpd_relay_restrictions", "nothing in it refuses relaying "
                                  "(no reject_unauth_destination or defer_unauth_destination): this is an open relay",
                                  "end it with reject_unauth_destination")
        check_choice("smtpd_sasl_type", self.smtpd_sasl_type, ("cyrus", "dovecot"))
        check_word("smtpd_sasl_path", self.smtpd_sasl_path)
        check_choice("smtpd_forbid_bare_newline", self.smtpd_forbid_bare_newline, ("no", "normalize", "reject", "yes"))

    def _validate_extra(self) -> None:
        for name, value in self.extra.items():
            if not isinstance(name, str) or not _PARAM.match(name):
                raise ConfigError("extra", f"{name!r} is not a parameter name",
                                  "lower-case letters, digits and _, as in postconf(5)")
            if name in TYPED_PARAMETERS:
                raise ConfigError(f"extra[{name}]", "labkit already sets this parameter from a typed field",
                                  "change that field instead")
            check_text(f"extra[{name}]", value)

    # ------------------------------------------------------------------ derived values
    @property
    def relayhost(self) -> str:
        """The relayhost string, e.g. ``[mail.isp.example.net]:587`` ('' with no relay)."""
        if self.relay_host is None:
            return ""
        return format_relayhost(self.relay_host, self.relay_port, self.relay_brackets)

    @property
    def sasl_passwd_path(self) -> str:
        return os.path.join(self.config_directory, "sasl_passwd")

    @property
    def aliases_path(self) -> str:
        return self.aliases_file or os.path.join(self.config_directory, "aliases")

    @property
    def effective_smtpd_tls_level(self) -> str:
        if self.smtpd_tls_security_level is not None:
            return self.smtpd_tls_security_level
        return "may" if self.smtpd_tls_cert_file else ""

    # ------------------------------------------------------------------ main.cf
    def _settings(self, base: Mapping[str, str], include_extra: bool = True) -> list[Setting]:
        """Every parameter labkit decides, default or not, in the order main.cf shows them
        (those this Postfix knows: ``base`` holds its built-in values)."""
        s: list[Setting] = []

        def add(section: str, name: str, value: str, why: str) -> None:
            s.append(Setting(name, value, why, section))

        sec = "identity (the installer's questions)"
        add(sec, "myhostname", self.myhostname, "this server's own name: HELO and Received: lines")
        if self.mydomain is not None:
            add(sec, "mydomain", self.mydomain, "the domain this server belongs to")
        if self.myorigin is not None:
            add(sec, "myorigin", self.myorigin, "the 'system mail name' added to bare user names")
        add(sec, "mydestination", ", ".join(self.mydestination),
            "domains delivered on this machine" if self.mydestination else
            "deliver nothing locally: every message is relayed")
        sec = "network"
        add(sec, "inet_interfaces", self.inet_interfaces, "addresses the SMTP client and server use")
        add(sec, "inet_protocols", self.inet_protocols, "IP versions to use")
        add(sec, "mynetworks", " ".join(f"[{n.split('/')[0].strip('[]')}]/{n.split('/')[1]}"
                                         if ":" in n else n for n in self.mynetworks),
            "clients trusted to relay without logging in: keep it to your own network")
        add(sec, "compatibility_level", self.compatibility_level,
            "use the safer defaults of this release, not those of Postfix 2.x")
        sec = "relay through the ISP smarthost (the memo's postconf -e lines)"
        add(sec, "relayhost", self.relayhost,
            "send everything to the smarthost; [brackets]: no MX look-up (ERRATA 7)")
        add(sec, "smtp_sasl_auth_enable", "yes" if self.smtp_sasl_auth_enable else "no",
            "log in to the smarthost with SMTP AUTH")
        if self.smtp_sasl_auth_enable:
            add(sec, "smtp_sasl_password_maps", f"{self.map_type}:{self.sasl_passwd_path}",
                "where the login for each relay is; run postmap after each change")
        add(sec, "smtp_sasl_security_options", self.smtp_sasl_security_options,
            "mechanisms refused when there is no TLS (plain text would show the password)")
        add(sec, "smtp_sasl_tls_security_options", self.smtp_sasl_tls_security_options,
            "mechanisms refused over TLS: only anonymous; PLAIN is safe inside TLS")
        add(sec, "smtp_sasl_mechanism_filter", self.smtp_sasl_mechanism_filter,
            "mechanisms offered by the server that the client may use")
        add(sec, "smtp_tls_security_level", self.smtp_tls_security_level,
            "encrypt/secure: no TLS, no mail, so a stripped STARTTLS cannot expose the password (ERRATA 8)")
        if self.smtp_tls_CAfile is not None:
            add(sec, "smtp_tls_CAfile", self.smtp_tls_CAfile, "the CA that signs the smarthost's certificate")
        if self.smtp_tls_secure_cert_match:
            add(sec, "smtp_tls_secure_cert_match", ", ".join(self.smtp_tls_secure_cert_match),
                "the name the smarthost's certificate must carry (Postfix does not match IP addresses)")
        add(sec, "smtp_tls_loglevel", str(self.tls_loglevel), "log each TLS handshake of the client")
        sec = "our SMTP server (smtpd)"
        add(sec, "smtpd_relay_restrictions", ", ".join(self.smtpd_relay_restrictions),
            "who may relay: our networks and logged-in users, nobody else (no open relay)")
        if self.smtpd_tls_cert_file is not None:
            add(sec, "smtpd_tls_cert_file", self.smtpd_tls_cert_file, "this server's certificate (with chain)")
            add(sec, "smtpd_tls_key_file", str(self.smtpd_tls_key_file), "its private key (0600)")
        add(sec, "smtpd_tls_security_level", self.effective_smtpd_tls_level,
            "offer STARTTLS to clients" if self.effective_smtpd_tls_level else "no certificate: no STARTTLS")
        if self.effective_smtpd_tls_level not in ("", "none"):
            add(sec, "smtpd_tls_loglevel", str(self.tls_loglevel), "log each TLS handshake of the server")
        add(sec, "smtpd_tls_auth_only", "yes" if self.smtpd_tls_auth_only else "no",
            "offer AUTH only after STARTTLS, so passwords never cross in clear")
        add(sec, "smtpd_sasl_auth_enable", "yes" if self.smtpd_sasl_auth_enable else "no",
            "let our users log in (submission)")
        logins = self.submission is not None or self.submissions is not None
        if self.smtpd_sasl_auth_enable or (logins and self.smtpd_sasl_type != "cyrus"):
            add(sec, "smtpd_sasl_type", self.smtpd_sasl_type, "who checks the passwords")
            add(sec, "smtpd_sasl_path", self.smtpd_sasl_path, "where to ask")
        if "smtpd_forbid_bare_newline" in base:  # Postfix 3.5.23+/3.9
            add(sec, "smtpd_forbid_bare_newline", self.smtpd_forbid_bare_newline,
                "lines must end in CR LF: defends against SMTP smuggling")
        sec = "milters (OpenDKIM signs here)"
        add(sec, "smtpd_milters", ", ".join(self.smtpd_milters), "filters for mail received by SMTP")
        add(sec, "non_smtpd_milters", ", ".join(self.non_smtpd_milters), "filters for mail from sendmail")
        if self.milter_default_action is not None:
            add(sec, "milter_default_action", self.milter_default_action, "what to do when a milter fails")
        if self.milter_protocol is not None:
            add(sec, "milter_protocol", str(self.milter_protocol), "the milter protocol version")
        sec = "delivery"
        if self.virtual_transport is not None:
            add(sec, "virtual_transport", self.virtual_transport, "how mail for virtual domains is delivered")
        if self.virtual_mailbox_domains:
            add(sec, "virtual_mailbox_domains", ", ".join(self.virtual_mailbox_domains),
                "domains whose mailboxes are delivered by virtual_transport")
        if self.virtual_mailboxes:
            add(sec, "virtual_mailbox_maps", f"{self.map_type}:{self.virtual_mailboxes_path}",
                "the mailboxes that exist: any other address is refused at RCPT (550 5.1.1 User unknown)")
        if self.smtpd_recipient_limit is not None:
            add(sec, "smtpd_recipient_limit", str(self.smtpd_recipient_limit),
                f"recipients per message, a lab choice (production default: {KNOWN_DEFAULTS['smtpd_recipient_limit']});"
                " past it: 452 4.5.3")
        aliases = f"{self.map_type}:{self.aliases_path}" if self.aliases or self.aliases_file else ""
        add(sec, "alias_maps", aliases, "local aliases" if aliases else "no local aliases")
        add(sec, "alias_database", aliases, "what newaliases builds" if aliases else "nothing for newaliases")
        sec = "retries of deferred mail: lab-scale timers"
        for name, what in (("queue_run_delay", "scan the deferred queue every"),
                           ("minimal_backoff_time", "wait at least this before retrying a message:"),
                           ("maximal_backoff_time", "never wait longer than this between retries:")):
            value = getattr(self, name)
            if value is not None:
                add(sec, name, value, f"{what} {value}, a lab choice (production default: {KNOWN_DEFAULTS[name]})")
        sec = "the sandbox (no syslog, no systemd)"
        if self.queue_directory is not None:
            add(sec, "queue_directory", self.queue_directory, "the mail queue, inside the sandbox")
        if self.data_directory is not None:
            add(sec, "data_directory", self.data_directory, "Postfix's own state; Postfix creates it")
        if self.maillog_file is not None:
            add(sec, "maillog_file", self.maillog_file, "log to this file through postlogd (no syslog here)")
            add(sec, "maillog_file_prefixes", os.path.dirname(self.maillog_file),
                "folders maillog_file may be in")
        if include_extra:
            for name, value in self.extra.items():
                add("other parameters", name, value, "set through extra")
        return s

    def settings(self, defaults: Mapping[str, str] | None = None) -> list[Setting]:
        """The parameters that differ from Postfix's built-in values (``defaults``; see the
        module's text): what main.cf holds. Pure when ``defaults`` is given."""
        base = _defaults() if defaults is None else defaults
        return [st for st in self._settings(base) if st.name in ALWAYS_RENDERED or st.name not in base
                or _normal(base[st.name]) != _normal(st.value)]

    def render_main_cf(self, defaults: Mapping[str, str] | None = None) -> str:
        """main.cf: only the non-default lines (see :meth:`settings`), each under a comment
        naming its parameter."""
        out = ["# main.cf rendered by labkit: only what differs from Postfix's defaults.",
               "# Each parameter is described in postconf(5): `man 5 postconf`."]
        section = None
        for st in self.settings(defaults):
            if st.section != section:
                section = st.section
                out += ["", f"# --- {section} ---"]
            out.append(f"# {st.name}: {st.why}")
            out.append(f"{st.name} = {st.value}".rstrip())
        return "\n".join(out) + "\n"

    def postconf_commands(self, *, sudo: bool = False, config_dir: bool = False,
                          defaults: Mapping[str, str] | None = None) -> list[str]:
        """The memo's way to set the same values: ``postconf -e 'name = value'``, one a line.

        ``config_dir=True`` adds ``-c DIR`` so the commands change the sandbox's main.cf rather
        than /etc/postfix's.
        """
        prefix = ["sudo"] if sudo else []
        prefix.append("postconf")
        if config_dir:
            prefix += ["-c", self.config_directory]
        return [" ".join([*map(shlex.quote, prefix), "-e", shlex.quote(f"{st.name} = {st.value}".rstrip())])
                for st in self.settings(defaults)]

    # ------------------------------------------------------------------ other files
    def render_master_cf(self) -> str:
        """master.cf: our smtpd on the lab address, every service without chroot, postlogd."""
        cols = "{:<22} {:<10} {:<7} {:<7} {:<7} {:<7} {:<7} {}"
        out = ["# master.cf rendered by labkit (master(5)). chroot is 'n' everywhere: the sandbox",
               "# has no chroot tree. Columns:",
               "# " + cols.format("service", "type", "private", "unpriv", "chroot", "wakeup", "maxproc",
                                  "command + args").replace("service" + " " * 15, "service" + " " * 13, 1)]
        addr, port = self.listen
        out.append(f"# our SMTP server on {addr or 'every interface'}, port {port}")
        out.append(cols.format(f"{addr}:{port}" if addr else str(port), "inet", "n", "-", "n", "-", "-", "smtpd"))
        if self.submission is not None:
            saddr, sport = self.submission
            out.append("# submission (RFC 6409): STARTTLS required, then AUTH, then relay for that user only")
            out.append(cols.format(f"{saddr}:{sport}" if saddr else str(sport), "inet", "n", "-", "n", "-", "-",
                                   "smtpd"))
            for opt in ("syslog_name=postfix/submission", "smtpd_tls_security_level=encrypt",
                        "smtpd_sasl_auth_enable=yes", "smtpd_tls_auth_only=yes",
                        "smtpd_relay_restrictions=permit_sasl_authenticated,reject"):
                out.append(f"  -o {opt}")
        if self.submissions is not None:
            saddr, sport = self.submissions
            out.append("# submissions (RFC 8314): TLS from the first byte (no STARTTLS), then AUTH, then relay")
            out.append("# for that user only. Each -o overrides main.cf for this service alone:")
            out.append("#   syslog_name: log lines say postfix/submissions, so 465 is told apart from 587")
            out.append("#   smtpd_tls_wrappermode: the TLS handshake comes before the 220 greeting")
            out.append("#   smtpd_tls_security_level: no mail without TLS (as on 587)")
            out.append("#   smtpd_sasl_auth_enable: offer AUTH here; the client logs in inside TLS")
            out.append("#   smtpd_client_restrictions, smtpd_relay_restrictions: logged-in users only;")
            out.append("#     checked at RCPT TO (smtpd_delay_reject), so after AUTH")
            out.append(cols.format(f"{saddr}:{sport}" if saddr else str(sport), "inet", "n", "-", "n", "-", "-",
                                   "smtpd"))
            for opt in ("syslog_name=postfix/submissions", "smtpd_tls_wrappermode=yes",
                        "smtpd_tls_security_level=encrypt", "smtpd_sasl_auth_enable=yes",
                        "smtpd_client_restrictions=permit_sasl_authenticated,reject",
                        "smtpd_relay_restrictions=permit_sasl_authenticated,reject"):
                out.append(f"  -o {opt}")
        for name, typ, private, unpriv, wakeup, maxproc, command in _SERVICES:
            out.append(cols.format(name, typ, private, unpriv, "n", wakeup, maxproc, command))
        return "\n".join(out) + "\n"

    @property
    def sasl_passwd_entry_key(self) -> str:
        """The key of the sasl_passwd entry: the relayhost string, unless deliberately overridden."""
        return self.sasl_passwd_key if self.sasl_passwd_key is not None else self.relayhost

    def render_sasl_passwd(self) -> str:
        """sasl_passwd: ``KEY user:password``, KEY exactly the relayhost string. Secret: 0600."""
        if self.sasl_user is None or self.sasl_password is None or not self.relay_host:
            raise ConfigError("sasl_user", "there is no relay login to write",
                              "set relay_host, sasl_user and sasl_password")
        return ("# sasl_passwd: the login for each relay (smtp_sasl_password_maps in postconf(5)).\n"
                "# The key must be exactly the relayhost string. After a change: postmap this file.\n"
                f"{self.sasl_passwd_entry_key} {self.sasl_user}:{self.sasl_password.reveal()}\n")

    def render_aliases(self) -> str:
        """aliases (aliases(5)): ``name: target``; built into a map by postalias/newaliases."""
        out = ["# aliases rendered by labkit (aliases(5)); after a change: newaliases"]
        out += [f"{name}: {target}" for name, target in self.aliases.items()]
        return "\n".join(out) + "\n"

    def files(self, defaults: Mapping[str, str] | None = None) -> dict[str, tuple[str, int]]:
        """File name -> (content, mode) of everything :meth:`write` puts in the folder."""
        out = {"main.cf": (self.render_main_cf(defaults), 0o644), "master.cf": (self.render_master_cf(), 0o644)}
        if self.smtp_sasl_auth_enable:
            out["sasl_passwd"] = (self.render_sasl_passwd(), 0o600)
        if self.aliases:
            out["aliases"] = (self.render_aliases(), 0o644)
        if self.virtual_mailboxes:
            out["virtual_mailboxes"] = (self.render_virtual_mailboxes(), 0o644)
        return out

    def render_virtual_mailboxes(self) -> str:
        """virtual_mailbox_maps source: ``address  mailbox``; only the key matters to smtpd."""
        out = ["# virtual_mailboxes rendered by labkit: the mailboxes that exist; after a change: postmap"]
        out += [f"{address} {address.partition('@')[2]}/{address.partition('@')[0]}/"
                for address in self.virtual_mailboxes]
        return "\n".join(out) + "\n"

    @property
    def virtual_mailboxes_path(self) -> str:
        return os.path.join(self.config_directory, "virtual_mailboxes")

    def warnings(self) -> list[str]:
        """Choices that are allowed but wrong for the memo's goal (the break-it exercises)."""
        out = []
        if self.relay_host and not self.relay_brackets:
            out.append(f"relayhost {self.relayhost!r} has no [brackets]: Postfix looks up the MX records of "
                       f"{self.relay_host} instead of connecting to it (ERRATA 7); write "
                       f"{format_relayhost(self.relay_host, self.relay_port, True)!r}")
        if self.smtp_sasl_auth_enable and self.sasl_passwd_entry_key != self.relayhost:
            out.append(f"sasl_passwd key {self.sasl_passwd_entry_key!r} differs from relayhost "
                       f"{self.relayhost!r}: Postfix finds no password for the relay and sends without AUTH")
        if self.smtp_sasl_auth_enable and self.smtp_tls_security_level in ("none", "may"):
            out.append(f"smtp_tls_security_level = {self.smtp_tls_security_level}: if STARTTLS is stripped "
                       "on the way, the password is sent in clear (ERRATA 8); use encrypt or secure")
        if self.smtp_tls_security_level in ("verify", "secure") and not self.smtp_tls_CAfile:
            out.append(f"smtp_tls_security_level = {self.smtp_tls_security_level} without smtp_tls_CAfile: "
                       "the smarthost's certificate is checked against no CA and every delivery fails")
        if (self.smtp_tls_security_level in ("verify", "secure") and self.relay_host and is_ip(self.relay_host)
                and not self.smtp_tls_secure_cert_match):
            out.append(f"the relay {self.relay_host} is an IP address and smtp_tls_secure_cert_match is not set: "
                       "Postfix does not match IP addresses in certificates; give the certificate's host name")
        return out

    # ------------------------------------------------------------------ the repr
    def __repr__(self) -> str:
        """The fields that differ from their defaults; the password shows as ``Secret('********')``."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            default = {} if f.default_factory is dict else f.default  # type: ignore[misc]
            if value != default:
                shown.append(f"{f.name}={value!r}")
        return f"PostfixConfig({', '.join(shown)})"

    __str__ = __repr__

    # ------------------------------------------------------------------ I/O
    def at(self, config_directory: str | os.PathLike) -> PostfixConfig:
        """The same configuration written to another folder (main.cf names its own files)."""
        return replace(self, config_directory=os.fspath(Path(config_directory).absolute()))

    def write(self, directory: str | os.PathLike | None = None) -> Path:
        """Write every file into ``directory`` (default: ``config_directory``); return it.

        Everything is first written and indexed in a staging folder inside ``directory``
        (``postmap`` for sasl_passwd, ``postalias`` for aliases, where installed), then moved
        into place file by file with an atomic rename. If a step fails (``postmap`` does not
        know the map type, say), nothing is moved: the folder is as it was. sasl_passwd and its
        map are 0600 from the first byte.
        """
        cfg = self if directory is None else self.at(directory)
        cfg.validate()
        files = cfg.files()
        target = Path(cfg.config_directory)
        made_target = not target.exists()
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target))
        try:
            for name, (text, mode) in files.items():
                (write_secret if mode == 0o600 else write_atomic)(staging / name, text)
            # postmap and postalias wait (up to 2 s) until the clock has moved past the time
            # stamps of main.cf and of the source file, so that a map is always newer than what
            # it was built from. These files were written a moment ago: date them two seconds
            # back instead of waiting.
            past = time.time() - 2
            for name in files:
                os.utime(staging / name, (past, past))
            made = cfg._index_maps(staging, files)
            for name in [*files, *made]:
                os.replace(staging / name, target / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if made_target and not any(target.iterdir()):
                target.rmdir()
            raise
        shutil.rmtree(staging, ignore_errors=True)
        if cfg.queue_directory is not None:
            # Postfix makes the queue's subfolders, but the queue folder itself must exist
            # (root-owned, 755). data_directory is left to Postfix: made by root, it breaks.
            Path(cfg.queue_directory).mkdir(mode=0o755, parents=True, exist_ok=True)
        return target

    def _index_maps(self, staging: Path, files: Mapping[str, Any]) -> list[str]:
        """Run postmap/postalias in ``staging``; return the names of the files they made."""
        if self.map_type in UNINDEXED_MAP_TYPES:
            return []
        made: list[str] = []
        for source, tool, secret in (("sasl_passwd", "postmap", True), ("aliases", "postalias", False),
                                     ("virtual_mailboxes", "postmap", False)):
            if source not in files:
                continue
            exe = postfix_tool(tool)
            if exe is None:
                continue
            before = set(os.listdir(staging))
            proc = subprocess.run([exe, "-c", str(staging), f"{self.map_type}:{staging / source}"],
                                  capture_output=True, text=True, timeout=60, check=False)
            if proc.returncode != 0 or proc.stderr.strip():
                said = _said(proc.stderr, proc.returncode).replace(str(staging), self.config_directory)
                types = supported_map_types()
                raise ConfigError("map_type", f"{tool} could not build {self.map_type}:{source}: {said}",
                                  "this Postfix supports " + ", ".join(types) if types else
                                  "check the map type (hash, lmdb, cdb)")
            new = sorted(set(os.listdir(staging)) - before)
            for name in new:
                os.chmod(staging / name, 0o600 if secret else 0o644)
            made += new
        return made

    def check(self, directory: str | os.PathLike | None = None) -> Result:
        """Check a written configuration with the real tools and labkit's own warnings.

        ``postconf -c DIR -n`` and (as root) ``postfix -c DIR check``: any text on stderr is a
        failure, since ``postconf`` exits 0 on "unused parameter". Also: sasl_passwd and its map
        must be 0600, and :meth:`warnings` must be empty.
        """
        cfg = self if directory is None else self.at(directory)
        result = check_config_dir(cfg.config_directory)
        problems = list(result.details.get("problems", []))
        warns = cfg.warnings()
        problems += warns
        details = dict(result.details, problems=problems, warnings=warns)
        if problems:
            return Result(False, "; ".join(problems), details)
        return Result(True, result.reason, details)


def _said(stderr: str, returncode: int) -> str:
    """What a Postfix tool said on stderr, each distinct line once (postfix check repeats them)."""
    lines = list(dict.fromkeys(line.strip() for line in stderr.splitlines() if line.strip()))
    return " | ".join(lines) if lines else f"exit status {returncode}"


def _maillog_tail(postconf_n: str, lines: int = 3) -> str:
    """The last lines of the maillog_file named in ``postconf -n`` output, to explain a failure."""
    for line in postconf_n.splitlines():
        name, _, value = line.partition(" = ")
        if name == "maillog_file" and os.path.isfile(value):
            with open(value, errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
            return f"; {value} says: " + " | ".join(tail)
    return ""


def check_config_dir(directory: str | os.PathLike) -> Result:
    """``postconf -n`` and ``postfix check`` on a config folder; any stderr means failure."""
    directory = os.fspath(Path(directory).absolute())
    problems: list[str] = []
    details: dict[str, Any] = {"config_directory": directory}
    if not os.path.isfile(os.path.join(directory, "main.cf")):
        return Result(False, f"no main.cf in {directory}", {**details, "problems": [f"no main.cf in {directory}"]})
    for name in os.listdir(directory):
        if name.startswith("sasl_passwd"):
            mode = os.stat(os.path.join(directory, name)).st_mode & 0o777
            if mode != 0o600:
                problems.append(f"{name} is mode {mode:04o}: a password file must be 0600")
    checked = []
    postconf = postfix_tool("postconf")
    if postconf is not None:
        proc = subprocess.run([postconf, "-c", directory, "-n"], capture_output=True, text=True, timeout=60,
                              check=False)
        details["postconf_n"] = proc.stdout
        checked.append("postconf -n")
        if proc.returncode != 0 or proc.stderr.strip():
            problems.append(f"postconf -c {directory} -n: {_said(proc.stderr, proc.returncode)}")
    postfix = postfix_tool("postfix")
    if postfix is not None and os.geteuid() == 0:
        proc = subprocess.run([postfix, "-c", directory, "check"], capture_output=True, text=True, timeout=120,
                              check=False)
        checked.append("postfix check")
        if proc.returncode != 0 or proc.stderr.strip():
            said = _said(proc.stderr, proc.returncode)
            if not proc.stderr.strip():  # with maillog_file set, the reason went to the log
                said += _maillog_tail(details.get("postconf_n", ""))
            problems.append(f"postfix -c {directory} check: {said}")
    details["checked_with"] = checked
    details["problems"] = problems
    if problems:
        return Result(False, "; ".join(problems), details)
    if not checked:
        return Result(True, "labkit's own rules pass; Postfix is not installed here, so postconf did not check it",
                      details)
    return Result(True, f"{' and '.join(checked)} found nothing to complain about", details)
