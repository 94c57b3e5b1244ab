"""A typed Dovecot configuration for mail.example.com, rendered into the lab's sandbox.

In real mode Dovecot plays the roles that the lab's own servers play in embedded mode:

=======  ==========  ==============================================================
role     plays port  what Dovecot does there
=======  ==========  ==============================================================
imap     143         IMAP; LOGINDISABLED until STARTTLS (``disable_plaintext_auth``)
imaps    993         IMAP with implicit TLS (RFC 8314)
pop3     110         POP3; no USER/PASS until STLS
pop3s    995         POP3 with implicit TLS
mda      24          LMTP (RFC 2033): Postfix hands over mail with
                     ``virtual_transport = lmtp:inet:ADDRESS:PORT``
auth     (none)      Dovecot's authentication protocol for Postfix's SMTP AUTH
                     (``smtpd_sasl_type = dovecot``, ``smtpd_sasl_path = inet:ADDRESS:PORT``)
=======  ==========  ==============================================================

:class:`DovecotConfig` holds those choices as typed values and renders, from them alone, a
complete ``dovecot.conf`` (nothing is read from /etc/dovecot) and a ``passwd`` file with the
lab accounts (user names are full addresses; passwords hashed, never in clear). Everything
Dovecot writes stays in the sandbox: ``base_dir`` (its sockets and master.pid), ``state_dir``,
the log, and each user's home; the mail itself is the lab's Maildir tree,
``SANDBOX/mail/DOMAIN/LOCAL``, the same folders embedded mode reads and writes.

Who owns what (each checked on this machine kind, FIELD-NOTES.md):

- The master process runs as root (it binds the ports and reads the TLS key, ``ssl_key = <PATH``).
- Dovecot refuses to touch mail as root ("userdb returned 0 as uid"). Mail is read and written
  as user ``mail`` (``mail_uid``/``mail_gid``; ``first_valid_uid = last_valid_uid`` = its uid, so
  no other account can ever be used), and :meth:`DovecotConfig.write` hands the mail tree over to
  that user: the lab's embedded code wrote it as root, with folders only root may enter.
- The authentication process runs as user ``dovecot`` (``default_internal_user``) and reads
  the passwd file, so that file is that user's, mode 0600. Login processes run as ``dovenull``.

Bad values are refused when the object is made (:class:`labkit.errors.ConfigError` names the
field); :meth:`write` hashes every password before it writes anything, so a failure leaves the
folder as it was. :meth:`check` asks ``doveconf -n``; any word on stderr is a failure.
"""
from __future__ import annotations

import base64
import grp
import hashlib
import hmac
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...core.world import mailbox_path
from ...errors import ConfigError, RealModeUnavailable
from ...files import write_atomic, write_secret
from ...result import Result
from .. import checks
from ..checks import check_absolute_path, check_line
from ..postfix.config import Secret

if TYPE_CHECKING:
    from ...net.context import LabContext

_HOW_TO_GET = "run: sudo scripts/install-system-packages.sh, or use the lab's docker image (docker/)"

#: Listener fields: field name -> (lab role, service, listener name, implicit TLS)
LISTENERS: dict[str, tuple[str, str, str, bool]] = {
    "imap_port": ("imap", "imap-login", "imap", False),
    "imaps_port": ("imaps", "imap-login", "imaps", True),
    "pop3_port": ("pop3", "pop3-login", "pop3", False),
    "pop3s_port": ("pop3s", "pop3-login", "pop3s", True),
    "lmtp_port": ("mda", "lmtp", "lmtp", False),
    "auth_port": ("auth", "auth", "auth-postfix", False),
}

#: Password schemes :func:`hash_password` can make (SHA512-CRYPT with doveadm; SSHA512 in Python).
SCHEMES = ("SHA512-CRYPT", "SSHA512")

#: Longest base_dir: Dovecot puts unix sockets in it (and under login/), and a socket path
#: must fit in 108 bytes.
MAX_BASE_DIR = 80

_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+$")
_INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]*$")


def dovecot_tool(name: str) -> str | None:
    """The path of a Dovecot command (dovecot, doveconf, doveadm), or None if not installed."""
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                                       if os.access(p, os.X_OK)), None)


def free_port(address: str) -> int:
    """A TCP port free on ``address`` right now (bind port 0, read it, close).

    Dovecot cannot be told to take port 0 and report the one it got, so its ports are chosen
    up front. Another program could take the port in between; :meth:`DovecotRunner.start`
    then fails with Dovecot's own "Address already in use" line.
    """
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Passwords


def hash_password(password: str | Secret, scheme: str = "SHA512-CRYPT") -> str:
    """A Dovecot password hash with its scheme prefix, e.g. ``{SHA512-CRYPT}$6$...``.

    SHA512-CRYPT is made by ``doveadm pw``, which reads the password (twice, as when typed)
    from its standard input, so it never appears on a command line that ``ps`` shows. SSHA512
    (a salted SHA-512, Dovecot's ``{SSHA512}``) is made here in Python; it is also the fallback
    where doveadm is not installed. Neither the password nor the hash is logged.
    """
    value = password.reveal() if isinstance(password, Secret) else password
    check_password("password", value)
    if scheme == "SHA512-CRYPT":
        exe = dovecot_tool("doveadm")
        if exe is None:
            return hash_password(value, "SSHA512")
        # -c /dev/null: doveadm pw needs no configuration, and /etc/dovecot may be missing
        proc = subprocess.run([exe, "-c", "/dev/null", "pw", "-s", scheme], input=f"{value}\n{value}\n",
                              capture_output=True, text=True, timeout=30, check=False)
        out = proc.stdout.strip()
        if proc.returncode != 0 or not out.startswith("{SHA512-CRYPT}$6$"):
            said = " ".join(proc.stderr.split()) or f"exit status {proc.returncode}"
            raise ConfigError("password_scheme", f"doveadm pw -s {scheme} failed: {said}",
                              "choose password_scheme='SSHA512', which labkit computes itself")
        return out
    if scheme == "SSHA512":
        salt = secrets.token_bytes(16)
        digest = hashlib.sha512(value.encode("utf-8") + salt).digest()
        return "{SSHA512}" + base64.b64encode(digest + salt).decode("ascii")
    raise ConfigError("password_scheme", f"{scheme!r} is not one of {', '.join(SCHEMES)}")


def verify_ssha512(password: str, hashed: str) -> bool:
    """Whether ``password`` matches an ``{SSHA512}`` hash (pure; for tests and teaching)."""
    if not hashed.startswith("{SSHA512}"):
        return False
    raw = base64.b64decode(hashed[len("{SSHA512}"):])
    digest, salt = raw[:64], raw[64:]
    return hmac.compare_digest(hashlib.sha512(password.encode("utf-8") + salt).digest(), digest)


# --------------------------------------------------------------------------------------------
# Validation


def check_password(name: str, value: Any) -> str:
    """A password for the passwd file: the message says what is wrong, never the value."""
    if not isinstance(value, str) or not value:
        raise ConfigError(name, "is empty or not text", "every account that logs in needs a password")
    return check_line(name, value, "a password is one line of text")


def check_address(name: str, value: Any) -> str:
    """A lab account's address: the user name in the passwd file and the Maildir path."""
    if not isinstance(value, str) or not _ADDRESS.match(value):
        raise ConfigError(name, f"{value!r} is not an address such as alice@example.com",
                          "user names are full addresses (local@domain), without ':' or spaces")
    local, _, domain = value.rpartition("@")
    if "@" in local or local.startswith(".") or domain.startswith(".") or ".." in domain or "/" in local:
        raise ConfigError(name, f"{value!r} cannot name a mailbox folder (a '/', '@' or leading dot)",
                          "lab mailboxes are plain names such as alice@example.com")
    return value


def check_port(name: str, value: Any) -> int | None:
    if value is None:
        return None
    return checks.check_port(name, value, "give an integer from 1 to 65535 (pick a free one with free_port), "
                                          "or None for off")


def check_path(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(name, f"{value!r} is not a path")
    check_absolute_path(name, value, "Dovecot reads files by absolute path")
    if any(c in value for c in "\r\n\0 \t\"%<$#{}"):
        raise ConfigError(name, f"{value!r} holds a space or one of \" % < $ # {{ }}",
                          "those mean something in dovecot.conf; choose a plain path")
    return value


def _system_user(name: str, value: str) -> pwd.struct_passwd:
    if not isinstance(value, str) or not _USER.match(value):
        raise ConfigError(name, f"{value!r} is not a user name")
    try:
        return pwd.getpwnam(value)
    except KeyError:
        raise ConfigError(name, f"there is no user {value!r} on this machine",
                          f"the Dovecot packages create it; {_HOW_TO_GET}") from None


# --------------------------------------------------------------------------------------------
# The configuration


class _InFolder:
    """A path inside the configuration's folder, read as an attribute: ``cfg.conf_path``."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, config: Any, owner: type | None = None) -> Any:
        return self if config is None else os.path.join(config.folder, self.name)


@dataclass(frozen=True)
class DovecotConfig:
    """Dovecot for mail.example.com, run from ``folder`` (``SANDBOX/dovecot``).

    Make one with :meth:`for_lab` (the lab's host, certificate, accounts and free ports), or by
    hand; then :meth:`write` it and :meth:`check` it. A port of ``None`` turns that listener off
    (``imap_port`` is required: it is how :class:`labkit.real.dovecot.DovecotRunner` knows Dovecot is up).
    """

    folder: str  #: Dovecot's own files: dovecot.conf, passwd, run/, state/, home/, dovecot.log
    mail_root: str  #: the lab's Maildir tree: mail of alice@example.com is in MAIL_ROOT/example.com/alice
    cert_path: str  #: the certificate chain of mail.example.com (PEM)
    key_path: str  #: its private key (read by the master process, as root)
    accounts: Mapping[str, Secret] = field(default_factory=dict)  #: address -> password
    listen: str = "127.0.20.25"  #: the lab address of mail.example.com
    hostname: str = "mail.example.com"  #: in LMTP's greeting and in Received: lines
    imap_port: int | None = None
    imaps_port: int | None = None
    pop3_port: int | None = None
    pop3s_port: int | None = None
    lmtp_port: int | None = None
    auth_port: int | None = None
    instance_name: str | None = None  #: None: ``mail-lab-`` and a digest of ``folder``
    mail_user: str = "mail"  #: the user (and group) mail is read and written as
    internal_user: str = "dovecot"  #: runs auth, anvil, stats; owns the passwd file
    login_user: str = "dovenull"  #: runs the imap-login and pop3-login processes
    auth_mechanisms: tuple[str, ...] = ("plain", "login")
    password_scheme: str = "SHA512-CRYPT"
    #: whole seconds before a wrong password is answered: slows down guessing (embedded mode: 1 s)
    auth_failure_delay: int = 1
    #: Dovecot's growing penalty for an address that keeps failing (2, 4, 8, up to 15 s); off in
    #: the lab, where every client is on loopback and a learner's typo should not cost 15 s
    auth_penalty: bool = False
    #: LMTP files mail for any address Postfix hands over, as the embedded MDA does (postmaster@,
    #: dmarc@... have no password); False: only for the accounts in the passwd file (550 5.1.1)
    accept_any_recipient: bool = True
    #: addresses that receive mail but never log in (postmaster@, dmarc@): with
    #: ``accept_any_recipient=False`` they are users too (the ``users`` file, a passwd-file userdb)
    mailboxes: tuple[str, ...] = ()
    #: Postfix asks about SMTP AUTH logins on a unix socket in ``base_dir`` (``auth-postfix``, for
    #: user postfix only), as a real install does, instead of TCP on the host's address
    auth_socket: bool = False

    # ------------------------------------------------------------------ making one
    def __post_init__(self) -> None:
        for name in ("folder", "mail_root", "cert_path", "key_path"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
        if not isinstance(self.accounts, Mapping):
            raise ConfigError("accounts", f"expected a mapping of address to password, got "
                              f"{type(self.accounts).__name__}")
        object.__setattr__(self, "accounts", {a.lower() if isinstance(a, str) else a:
                                              p if isinstance(p, Secret) else Secret(p)
                                              for a, p in self.accounts.items()})
        object.__setattr__(self, "mailboxes", tuple(sorted({m.lower() for m in self.mailboxes})))
        if self.auth_socket:
            object.__setattr__(self, "auth_port", None)
        if isinstance(self.auth_mechanisms, str):
            object.__setattr__(self, "auth_mechanisms", tuple(self.auth_mechanisms.split()))
        else:
            object.__setattr__(self, "auth_mechanisms", tuple(self.auth_mechanisms))
        if self.instance_name is None:
            digest = hashlib.sha256(os.fsencode(self.folder if isinstance(self.folder, str) else "")).hexdigest()
            object.__setattr__(self, "instance_name", f"mail-lab-{digest[:10]}")
        self.validate()

    @classmethod
    def for_lab(cls, ctx: LabContext, folder: str | os.PathLike | None = None, *,
                ports: Mapping[str, int] | None = None, host: str = "home",
                domains: tuple[str, ...] | None = None, **more: Any) -> DovecotConfig:
        """Dovecot as the lab's ``host`` (mail.example.com), with the same accounts as embedded mode.

        ``ports`` maps roles (``imap``, ``imaps``, ``pop3``, ``pop3s``, ``mda``, ``auth``) to
        ports; every role not given gets a free port on the host's address. Accounts: every lab
        account with a password, as the embedded POP3 and IMAP servers accept them; ``domains``
        narrows that to some mail domains. ``folder`` defaults to ``SANDBOX/dovecot``.
        """
        world = ctx.world
        h = world.host(host)
        creds = ctx.credentials[host]
        accounts = {a.address: a.password for a in world.accounts
                    if a.password and (domains is None or a.address.rpartition("@")[2] in domains)}
        ports = dict(ports or {})
        unknown = set(ports) - {role for role, *_ in LISTENERS.values()}
        if unknown:
            raise ConfigError("ports", f"no such Dovecot role: {', '.join(sorted(unknown))}",
                              f"roles are {', '.join(role for role, *_ in LISTENERS.values())}")
        values: dict[str, Any] = {}
        for name, (role, *_rest) in LISTENERS.items():
            values[name] = ports[role] if role in ports else free_port(h.address)
        values.update(folder=os.fspath(folder) if folder is not None else str(ctx.sandbox / "dovecot"),
                      mail_root=str(ctx.sandbox / "mail"), cert_path=str(creds.cert_path),
                      key_path=str(creds.key_path), accounts=accounts, listen=h.address, hostname=h.name)
        values.update(more)
        return cls(**values)

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field (also run when made)."""
        for name in ("folder", "mail_root", "cert_path", "key_path"):
            check_path(name, getattr(self, name))
        if len(self.base_dir) > MAX_BASE_DIR:
            raise ConfigError("folder", f"{self.base_dir} is {len(self.base_dir)} characters long; Dovecot's "
                              f"sockets there would not fit in a unix socket path",
                              f"choose a folder whose run/ path has at most {MAX_BASE_DIR} characters")
        try:
            addr = ipaddress.ip_address(self.listen)
        except (ValueError, TypeError):
            raise ConfigError("listen", f"{self.listen!r} is not an IP address",
                              "give the lab address of mail.example.com, e.g. 127.0.20.25") from None
        if not addr.is_loopback:
            raise ConfigError("listen", f"{self.listen} is not a loopback address", "every lab socket stays on loopback")
        if not isinstance(self.hostname, str) or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?",
                                                                  self.hostname):
            raise ConfigError("hostname", f"{self.hostname!r} is not a host name")
        used: dict[int, str] = {}
        for name in LISTENERS:
            port = check_port(name, getattr(self, name))
            if port is None:
                continue
            if port in used:
                raise ConfigError(name, f"port {port} is already {used[port]}", "give every listener its own port")
            used[port] = name
        if self.imap_port is None:
            raise ConfigError("imap_port", "is required", "the runner knows Dovecot is up when IMAP greets")
        if not isinstance(self.instance_name, str) or not _INSTANCE.match(self.instance_name):
            raise ConfigError("instance_name", f"{self.instance_name!r} is not a short name of letters, "
                              "digits, '.', '_' and '-'")
        for address, password in self.accounts.items():
            check_address("accounts", address)
            check_password(f"accounts[{address}]", password.reveal())
        for name in ("mail_user", "internal_user", "login_user"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _USER.match(value):
                raise ConfigError(name, f"{value!r} is not a user name")
        for mech in self.auth_mechanisms:
            if mech not in ("plain", "login"):
                raise ConfigError("auth_mechanisms", f"{mech!r} is not plain or login",
                                  "the passwd file holds hashes, which only PLAIN and LOGIN can check")
        if not self.auth_mechanisms:
            raise ConfigError("auth_mechanisms", "is empty")
        if (isinstance(self.auth_failure_delay, bool) or not isinstance(self.auth_failure_delay, int)
                or not 0 <= self.auth_failure_delay <= 60):
            raise ConfigError("auth_failure_delay", f"{self.auth_failure_delay!r} is not a whole number of seconds "
                              "from 0 to 60", "Dovecot 2.3 takes no fractions of a second here")
        for address in self.mailboxes:
            check_address("mailboxes", address)
        for name in ("auth_penalty", "accept_any_recipient", "auth_socket"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, f"{getattr(self, name)!r} is not True or False")
        if self.password_scheme not in SCHEMES:
            raise ConfigError("password_scheme", f"{self.password_scheme!r} is not one of {', '.join(SCHEMES)}")

    # ------------------------------------------------------------------ where things are
    conf_path = _InFolder("dovecot.conf")
    passwd_path = _InFolder("passwd")
    base_dir = _InFolder("run")  #: sockets and pid file
    state_dir = _InFolder("state")
    home_root = _InFolder("home")  #: the accounts' home folders (not their Maildirs)
    log_path = _InFolder("dovecot.log")
    #: the userdb (passwd-file) of every address LMTP delivers to, when not ``accept_any_recipient``
    users_path = _InFolder("users")

    @property
    def auth_socket_path(self) -> str | None:
        return os.path.join(self.base_dir, "auth-postfix") if self.auth_socket else None

    def ports(self) -> dict[str, int]:
        """Lab role -> port of every listener that is on (``imap``, ..., ``mda``, ``auth``)."""
        return {role: getattr(self, name) for name, (role, *_r) in LISTENERS.items()
                if getattr(self, name) is not None}

    @property
    def lmtp_transport(self) -> str | None:
        """Postfix's ``virtual_transport`` for this Dovecot: ``lmtp:inet:ADDRESS:PORT``."""
        return None if self.lmtp_port is None else f"lmtp:inet:{self.listen}:{self.lmtp_port}"

    @property
    def sasl_path(self) -> str | None:
        """Postfix's ``smtpd_sasl_path`` (with ``smtpd_sasl_type = dovecot``): the unix socket's
        path with ``auth_socket``, else ``inet:ADDRESS:PORT``."""
        if self.auth_socket:
            return self.auth_socket_path
        return None if self.auth_port is None else f"inet:{self.listen}:{self.auth_port}"

    # ------------------------------------------------------------------ rendering
    def render(self) -> str:
        """The complete dovecot.conf (pure except for looking up the mail user's uid and gid)."""
        pw = _system_user("mail_user", self.mail_user)
        try:
            group = grp.getgrgid(pw.pw_gid).gr_name
        except KeyError:
            group = str(pw.pw_gid)
        out = [
            "# dovecot.conf rendered by labkit for the lab's mail.example.com (doveconf -n shows what",
            "# Dovecot reads). Nothing comes from /etc/dovecot: every setting is here or a default.",
            "",
            "# --- this instance, all of it inside the sandbox ---",
            "# base_dir: sockets and master.pid; state_dir: what Dovecot remembers between runs",
            f"base_dir = {self.base_dir}",
            f"state_dir = {self.state_dir}",
            "# a name of its own, so that its processes (dovecot-NAME/imap...) and doveadm tell it apart",
            f"instance_name = {self.instance_name}",
            "# no syslog here: every log line goes to one file",
            f"log_path = {self.log_path}",
            f"info_log_path = {self.log_path}",
            f"hostname = {self.hostname}",
            "protocols = imap pop3 lmtp",
            f"# only the lab address of {self.hostname}",
            f"listen = {self.listen}",
            "",
            "# --- TLS: the lab certificate; '<' makes the (root) master read the file itself ---",
            "# required: no password is accepted on a connection that is not encrypted",
            "ssl = required",
            f"ssl_cert = <{self.cert_path}",
            f"ssl_key = <{self.key_path}",
            "ssl_min_protocol = TLSv1.2",
            "",
            "# --- authentication ---",
            "# no password before STARTTLS/STLS: IMAP announces LOGINDISABLED until then",
            "disable_plaintext_auth = yes",
            f"auth_mechanisms = {' '.join(self.auth_mechanisms)}",
            "# user names are full addresses, compared in lower case",
            "auth_username_format = %Lu",
            "# log why a login failed (never the password: auth_verbose_passwords stays no)",
            "auth_verbose = yes",
            "# wait before answering a wrong password: guessing becomes slow",
            f"auth_failure_delay = {self.auth_failure_delay} secs",
            "passdb {",
            "  driver = passwd-file",
            f"  args = username_format=%u {self.passwd_path}",
            "}",
            "# every user is the same system user; the mailbox is found from the address",
            *(["# allow_all_users: LMTP takes mail for any address, not only for those that log in",
               "userdb {",
               "  driver = static",
               f"  args = uid={self.mail_user} gid={group} home={self.home_root}/%d/%n allow_all_users=yes",
               "}"] if self.accept_any_recipient else
              ["# the users: every lab mailbox, one a line; LMTP refuses any other address (550 5.1.1)",
               "userdb {",
               "  driver = passwd-file",
               f"  args = username_format=%Lu {self.users_path}",
               f"  default_fields = uid={self.mail_user} gid={group} home={self.home_root}/%d/%n",
               "}"]),
            "",
            "# --- mail: the lab's Maildir tree, SANDBOX/mail/DOMAIN/LOCAL (Maildir++ subfolders: .Spam) ---",
            f"mail_location = maildir:{self.mail_root}/%d/%n",
            f"# mail is read and written as user {self.mail_user}: Dovecot refuses root for mail",
            f"mail_uid = {self.mail_user}",
            f"mail_gid = {group}",
            f"first_valid_uid = {pw.pw_uid}",
            f"last_valid_uid = {pw.pw_uid}",
            f"first_valid_gid = {pw.pw_gid}",
            f"last_valid_gid = {pw.pw_gid}",
            f"default_internal_user = {self.internal_user}",
            f"default_internal_group = {self.internal_user}",
            f"default_login_user = {self.login_user}",
            "",
            "# --- listeners: one port each, chosen by the lab (the standard port each plays in the comment) ---",
        ]
        services: dict[str, list[str]] = {}
        for name, (role, service, listener, implicit) in LISTENERS.items():
            port = getattr(self, name)
            if port is None and service in ("lmtp", "auth"):
                continue  # these have no inet listener unless one is written
            block = services.setdefault(service, [])
            plays = {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995, "mda": 24}.get(role)
            block.append(f"  # {role}" + (f", playing port {plays}" if plays else "")
                         + ("" if port else ": off (port 0), else it would open its standard port"))
            block += [f"  inet_listener {listener} {{", f"    port = {port or 0}"]
            if implicit:
                block.append("    ssl = yes")
            block.append("  }")
        if not self.auth_penalty:
            services["anvil"] = [
                "  # no growing penalty per client address (2, 4, 8... up to 15 s after failed logins):",
                "  # the auth process finds no penalty socket and applies only auth_failure_delay",
                "  unix_listener anvil-auth-penalty {", "    mode = 0", "  }"]
        if self.auth_socket:
            internal = "postfix"
            services.setdefault("auth", []).extend([
                "  # a unix socket in base_dir that only Postfix (user postfix) may use, as a real install has",
                "  # in /var/spool/postfix/private/auth: no TCP port answers AUTH questions from anyone",
                "  unix_listener auth-postfix {", "    mode = 0600", f"    user = {internal}",
                f"    group = {internal}", "  }"])
        for service, block in services.items():
            if service == "auth":
                out.append("# Postfix asks here whether an SMTP AUTH login is right (smtpd_sasl_type = dovecot)")
            if service == "lmtp":
                out.append("# Postfix delivers here (virtual_transport = lmtp:inet:ADDRESS:PORT)")
            out += [f"service {service} {{", *block, "}"]
        return "\n".join(out) + "\n"

    def render_users(self) -> str:
        """The userdb passwd-file: each lab mailbox (``address::::::``; uid, gid and home come
        from ``default_fields``). No passwords: those are in the passdb."""
        lines = ["# userdb of the lab mailboxes (passwd-file); the passwords are in passwd"]
        lines += [f"{address}::::::" for address in sorted(set(self.accounts) | set(self.mailboxes))]
        return "\n".join(lines) + "\n"

    def render_passwd(self) -> str:
        """The passwd file: ``address:{SCHEME}hash``, one account a line. Secret (0600)."""
        lines = ["# passwd-file of the lab accounts (user:password hash); made by labkit"]
        lines += [f"{address}:{hash_password(password, self.password_scheme)}"
                  for address, password in sorted(self.accounts.items())]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ the repr
    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "accounts":
                shown.append(f"accounts={{{', '.join(f'{a!r}: Secret(********)' for a in value)}}}")
            elif f.name in ("folder", "mail_root") or value != f.default:
                shown.append(f"{f.name}={value!r}")
        return f"DovecotConfig({', '.join(shown)})"

    __str__ = __repr__

    # ------------------------------------------------------------------ I/O
    def write(self) -> Path:
        """Write dovecot.conf and passwd into ``folder``; hand the mail tree over; return the conf path.

        Passwords are hashed and the configuration rendered first; only then is anything
        written (each file atomically, passwd 0600 from its first byte and then given to
        ``internal_user``). The folders Dovecot needs are made (``home/`` owned by
        ``mail_user``), a Maildir is made for every account, and :meth:`hand_over_mail` gives
        the lab's mail tree to ``mail_user``.
        """
        self.validate()
        conf = self.render()
        passwd = self.render_passwd()
        internal = _system_user("internal_user", self.internal_user)
        mail = _system_user("mail_user", self.mail_user)
        _system_user("login_user", self.login_user)
        folder = Path(self.folder)
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        write_secret(self.passwd_path, passwd)
        os.chown(self.passwd_path, internal.pw_uid, internal.pw_gid)
        write_atomic(self.conf_path, conf)
        if not self.accept_any_recipient:
            write_atomic(self.users_path, self.render_users())
        Path(self.state_dir).mkdir(mode=0o750, exist_ok=True)
        home = Path(self.home_root)
        home.mkdir(mode=0o755, exist_ok=True)
        os.chown(home, mail.pw_uid, mail.pw_gid)
        self.hand_over_mail()
        return Path(self.conf_path)

    def mailbox_dir(self, address: str) -> Path:
        """The Maildir of ``address``: ``MAIL_ROOT/DOMAIN/LOCAL`` (:func:`labkit.core.world.mailbox_path`)."""
        return mailbox_path(self.mail_root, check_address("address", address))

    def hand_over_mail(self) -> list[Path]:
        """Make each account's Maildir, and give the mail tree to ``mail_user``; return the Maildirs.

        The lab's embedded servers write mail as root, in folders only root may enter (Python's
        mailbox module makes them 0700). Dovecot reads and writes mail as ``mail_user`` and
        would be refused. So the tree under ``mail_root`` is handed over to that user; a
        message a root process adds later into a Maildir made here stays readable (its file is
        0644 and the folder is the mail user's).
        """
        mail = _system_user("mail_user", self.mail_user)
        root = Path(self.mail_root)
        root.mkdir(mode=0o755, parents=True, exist_ok=True)
        made = []
        for address in sorted(set(self.accounts) | set(self.mailboxes)):
            box = self.mailbox_dir(address)
            for sub in ("", "tmp", "new", "cur"):
                (box / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
            made.append(box)
        chown_tree(root, mail.pw_uid, mail.pw_gid)
        return made

    def check(self) -> Result:
        """``doveconf -c CONF -n`` on the written file, and the passwd file's mode and owner.

        doveconf exits 0 on some problems and says them on stderr: any stderr is a failure.
        """
        details: dict[str, Any] = {"conf": self.conf_path}
        problems: list[str] = []
        if not os.path.isfile(self.conf_path):
            return Result(False, f"no {self.conf_path}; write() it first", {**details, "problems": ["not written"]})
        try:
            st = os.stat(self.passwd_path)
            if st.st_mode & 0o777 != 0o600:
                problems.append(f"{self.passwd_path} is mode {st.st_mode & 0o777:04o}: a password file must be 0600")
            internal = pwd.getpwnam(self.internal_user)
            if st.st_uid != internal.pw_uid:
                problems.append(f"{self.passwd_path} is not owned by {self.internal_user}, and Dovecot's auth "
                                f"process (running as {self.internal_user}) must read it")
        except FileNotFoundError:
            problems.append(f"no {self.passwd_path}")
        except KeyError:
            problems.append(f"there is no user {self.internal_user!r} on this machine")
        result = check_conf(self.conf_path)
        details.update(result.details)
        problems += result.details.get("problems", [])
        details["problems"] = problems
        if problems:
            return Result(False, "; ".join(problems), details)
        return Result(True, result.reason, details)

    def at(self, folder: str | os.PathLike) -> DovecotConfig:
        """The same configuration for another folder (with its own instance name)."""
        return replace(self, folder=os.fspath(folder), instance_name=None)


def chown_tree(root: str | os.PathLike, uid: int, gid: int) -> None:
    """``chown -R uid:gid root`` without following symbolic links."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            try:
                os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
            except FileNotFoundError:
                continue  # renamed away while we walked (Maildir tmp/ -> new/)


def check_conf(conf_path: str | os.PathLike) -> Result:
    """``doveconf -c CONF -n``: ok only with exit status 0 and nothing on stderr."""
    conf_path = os.fspath(conf_path)
    exe = dovecot_tool("doveconf")
    if exe is None:
        raise RealModeUnavailable(f"doveconf is not installed here; {_HOW_TO_GET}")
    proc = subprocess.run([exe, "-c", conf_path, "-n"], capture_output=True, text=True, timeout=30, check=False)
    said = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    details: dict[str, Any] = {"doveconf_n": proc.stdout, "checked_with": ["doveconf -n"]}
    if proc.returncode != 0 or said:
        problem = f"doveconf -c {conf_path} -n: {' | '.join(said) or f'exit status {proc.returncode}'}"
        return Result(False, problem, {**details, "problems": [problem]})
    return Result(True, "doveconf -n found nothing to complain about", {**details, "problems": []})
