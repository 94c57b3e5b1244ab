"""A typed OpenDKIM configuration that renders the real files, and the keys it signs with.

The memo sets OpenDKIM up by hand: ``opendkim-genkey``, ``chown``/``chmod`` on the key, a
``Socket`` line in /etc/opendkim.conf, a KeyTable, a SigningTable with ``refile:``, a
TrustedHosts file, then ``opendkim-testkey``. :class:`OpenDKIMConfig` holds the same choices as
typed values and renders, from them alone:

- ``opendkim.conf``: only the lines the lab needs, each headed by a comment naming its
  opendkim.conf(5) entry;
- ``KeyTable``: ``KEYNAME DOMAIN:SELECTOR:/path/to/key``, one line a key;
- ``SigningTable`` (read as ``refile:``): ``*@example.com KEYNAME``, a wildcard pattern matched
  against the address in ``From:``;
- ``TrustedHosts``: the hosts whose mail is signed rather than verified (``InternalHosts``);
- ``resolver.conf``: an unbound configuration that sends every DNS question to the lab's DNS
  server on its ephemeral port (``ResolverConfiguration``; ``Nameservers`` takes no port).

The milter socket is TCP on loopback by default (``inet:0@127.0.0.1``: any free port), or, as
in the memo, a unix-domain socket (``socket="local"``: ``DIRECTORY/run/opendkim.sock``). Over
loopback TCP every message waits about 80 ms for nothing: Postfix and OpenDKIM each send a small
milter packet that gets no answer, then another; Nagle's algorithm holds the second until the
peer's delayed ACK (40 ms) arrives, once in each direction. A unix socket has no such delay.
OpenDKIM makes the socket after it has become user opendkim, so :meth:`OpenDKIMConfig.write`
gives it a folder of its own: owned by opendkim, group ``socket_group`` (postfix), mode 2750.

:meth:`OpenDKIMConfig.write` writes them atomically (everything is rendered and checked first;
nothing is half-written), :meth:`OpenDKIMConfig.check` runs ``opendkim -n`` (any stderr is a
failure) and checks every key file as OpenDKIM's ``RequireSafeKeys`` will.

Keys: :func:`genkey` runs the memo's ``opendkim-genkey`` and returns the private key's path and
the TXT record to publish (the ``.txt`` file's quoted strings joined); :func:`install_key` does
the same for a key made by :class:`labkit.core.auth.dkim.DKIMKey`. Both leave the key owned by user
``opendkim``, mode 0600, in a folder OpenDKIM accepts: no folder above it may be writable by
others (so not under /tmp or pytest's tmp_path; /var/lib/mail-lab is fine, FIELD-NOTES.md).

The memo's ``-b 1024`` "to keep the public key short" is dated (ERRATA.md #9): RFC 8301 asks
for at least 1024 bits and recommends 2048, which :func:`genkey` uses by default; the longer
record is published as several 255-octet strings (:func:`labkit.core.dns.split_txt`).
"""
from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ...errors import ConfigError, RealModeUnavailable
from ...files import write_atomic, write_secret
from ...result import Result
from .. import checks
from ..checks import check_absolute_path, is_dns_name
from ..tools import which

MODES = ("sv", "s", "v")
ALGORITHMS = ("rsa-sha256", "ed25519-sha256")
CANONICALIZATIONS = ("simple", "relaxed")
#: The files :meth:`OpenDKIMConfig.write` puts in its folder.
CONF_NAME, KEY_TABLE, SIGNING_TABLE, TRUSTED_HOSTS, RESOLVER_CONF, PUBLIC_KEYS = (
    "opendkim.conf", "KeyTable", "SigningTable", "TrustedHosts", "resolver.conf", "PublicKeys")
#: Zones unbound answers itself unless told not to (``local-zone: "test." nodefault``): the
#: lab's name server lives under lab.test, and .invalid is an RFC 2606 name too.
DEFAULT_LOCAL_ZONES = ("test.", "invalid.")

_HOW_TO_GET = ("run: sudo scripts/install-system-packages.sh (packages opendkim and opendkim-tools), "
               "or use the lab's docker image (docker/)")

_SELECTOR = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(?:\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
_PARAM = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
_SOCKET = re.compile(r"^inet:(?P<port>\d{1,5})@(?P<host>\[[^\]]+\]|[^\s@]+)$")
#: ``socket="local"``: a unix-domain socket at this path below the configuration's folder
LOCAL_SOCKET = "local"
LOCAL_SOCKET_NAME = os.path.join("run", "opendkim.sock")
#: the longest path a unix socket may have (sun_path holds 108 bytes, with the final NUL)
UNIX_PATH_MAX = 107

#: opendkim.conf entries set by typed fields: ``extra`` may not set them again.
TYPED_PARAMETERS = frozenset({
    "Mode", "Socket", "KeyTable", "SigningTable", "InternalHosts", "ExternalIgnoreList",
    "Canonicalization", "SignatureAlgorithm", "ResolverConfiguration", "UserID", "PidFile",
    "Syslog", "SyslogSuccess", "LogWhy", "LogResults", "DNSTimeout", "RequireSafeKeys", "AuthservID",
    "Background", "UMask", "TestPublicKeys"})


# --------------------------------------------------------------------------------------------
# Validation: small pure checks, each raising ConfigError(field, reason, hint)


def check_line(name: str, value: Any) -> str:
    """One line of text: no CR, LF or NUL (each would start a new entry in the file)."""
    return checks.check_line(name, value, "every OpenDKIM file holds one entry a line")


def check_domain(name: str, value: Any) -> str:
    """A signing domain (``d=``): dot-separated DNS labels, e.g. ``example.com``."""
    check_line(name, value)
    host = value.removesuffix(".")
    if not is_dns_name(value):
        raise ConfigError(name, f"{value!r} is not a domain name",
                          "use letters, digits and hyphens in dot-separated labels, e.g. example.com")
    return host.lower()


def check_selector(name: str, value: Any) -> str:
    """A selector (``s=``): DNS labels, published at ``SELECTOR._domainkey.DOMAIN``."""
    check_line(name, value)
    if not _SELECTOR.match(value):
        raise ConfigError(name, f"{value!r} is not a selector",
                          "a selector is a DNS label (letters, digits, hyphens), e.g. 'mail' or '2024a'")
    return value


def check_key_path(name: str, value: Any) -> str:
    """A key file's path as the KeyTable holds it: absolute, no white space, ``:`` or ``#``."""
    value = os.fspath(value) if isinstance(value, os.PathLike) else value
    check_line(name, value)
    check_absolute_path(name, value, "OpenDKIM reads the key by the path in the KeyTable; give it from /")
    for ch, why in ((":", "the KeyTable separates DOMAIN:SELECTOR:PATH with ':'"),
                    ("#", "'#' starts a comment in the KeyTable")):
        if ch in value:
            raise ConfigError(name, f"{value!r} contains {ch!r}", why)
    if any(c.isspace() for c in value):
        raise ConfigError(name, f"{value!r} contains white space", "the KeyTable splits its columns at white space")
    return value


def check_pattern(name: str, value: Any) -> str:
    """A SigningTable pattern (``refile:``): ``*@example.com``; ``*`` matches any text."""
    check_line(name, value)
    if not value or any(c.isspace() for c in value) or value.startswith("#"):
        raise ConfigError(name, f"{value!r} is not a pattern",
                          "write it without spaces, e.g. '*@example.com' (the first space ends the pattern)")
    return value


def check_peer(name: str, value: Any) -> str:
    """An InternalHosts entry: an address, a network (``127.0.20.0/24``) or a host name."""
    check_line(name, value)
    text = value.removeprefix("!")
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        net = None
    if net is not None:
        if not value.startswith("!") and not net.is_loopback:
            raise ConfigError(name, f"{value!r} reaches beyond loopback: OpenDKIM would sign mail from any "
                              "client in it as the lab's own", "list the lab's hosts, e.g. 127.0.20.0/24")
        return value
    if not is_dns_name(text):
        raise ConfigError(name, f"{value!r} is not an address, a network or a host name",
                          "e.g. 127.0.0.1, 127.0.20.0/24 or mail.example.com")
    return value


def check_absolute(name: str, value: Any) -> str:
    value = os.fspath(value) if isinstance(value, os.PathLike) else value
    check_line(name, value)
    if not os.path.isabs(value) or any(c.isspace() for c in value):
        raise ConfigError(name, f"{value!r} is not an absolute path without white space",
                          "OpenDKIM reads its files by absolute path")
    return value


def local_socket_path(value: str) -> str | None:
    """``local:/path/opendkim.sock`` -> ``'/path/opendkim.sock'``; ``None`` for a TCP socket (pure).

    The path must be absolute, without white space, and short enough for a unix socket.
    """
    check_line("socket", value)
    if not value.startswith("local:"):
        return None
    path = value[len("local:"):]
    if not os.path.isabs(path) or any(c.isspace() for c in path) or path.endswith("/"):
        raise ConfigError("socket", f"{value!r} is not local:/absolute/path",
                          "e.g. local:/var/lib/mail-lab/opendkim/run/opendkim.sock, or socket='local'")
    path = os.path.normpath(path)
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        raise ConfigError("socket", f"{path} is {len(os.fsencode(path))} bytes long; a unix socket's path may "
                          f"have at most {UNIX_PATH_MAX}", "use a shorter folder, or a TCP socket (inet:0@127.0.0.1)")
    return path


def parse_socket(value: str) -> tuple[str, int]:
    """``inet:8891@127.0.0.1`` -> ``('127.0.0.1', 8891)``. Only loopback TCP: the lab stays local.

    Port 0 means any free port: :class:`labkit.real.opendkim.OpenDKIMRunner` picks one when it starts
    and gives it to opendkim with ``-p`` (the file keeps port 0). A unix socket
    (``local:/path``) has no address: see :func:`local_socket_path`.
    """
    check_line("socket", value)
    if value.startswith("local:"):
        raise ConfigError("socket", f"{value!r} is a unix socket: it has no address and port",
                          "read its path with local_socket_path()")
    m = _SOCKET.match(value)
    if not m:
        raise ConfigError("socket", f"{value!r} is not inet:PORT@ADDRESS or local:/path",
                          "the lab uses TCP on loopback, e.g. inet:8891@127.0.0.1 (or port 0 for a free one), "
                          "or socket='local' for a unix socket in the configuration's folder")
    host, port = m.group("host").strip("[]"), int(m.group("port"))
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError("socket", f"{host!r} is not a loopback address",
                          "every lab socket stays on 127.0.0.0/8 (give an address, not a name)")
    if port > 65535:
        raise ConfigError("socket", f"{port} is not a TCP port", "give 0 (any free port) to 65535")
    return host, port


# --------------------------------------------------------------------------------------------
# Where a key may live (OpenDKIM's RequireSafeKeys, done beforehand so the error is clear)


def _user_ids(user: str) -> tuple[int, int]:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise RealModeUnavailable(f"there is no user {user!r} on this machine (it comes with the opendkim "
                                  f"package); {_HOW_TO_GET}") from None
    return pw.pw_uid, pw.pw_gid


def _group_members(gid: int) -> set[str]:
    try:
        g = grp.getgrgid(gid)
    except KeyError:
        return set()
    members = set(g.gr_mem)
    members.update(p.pw_name for p in pwd.getpwall() if p.pw_gid == gid)
    return members


def folder_problem(path: str | os.PathLike, user: str = "opendkim") -> str | None:
    """Why OpenDKIM would call a key under ``path`` "not secure" (a folder above it), or None.

    Every folder from / down to ``path`` must be owned by root or ``user`` and writable by no
    one else: not by all (like /tmp, 1777), not by a group with other members.
    """
    target = Path(path).absolute()
    for folder in [*reversed(target.parents), target]:
        try:
            st = folder.stat()
        except FileNotFoundError:
            break
        mode = stat.S_IMODE(st.st_mode)
        uid, _gid = _user_ids(user)
        if mode & stat.S_IWOTH:
            return (f"{folder} is writable by every user (mode {mode:04o}): OpenDKIM refuses keys below it "
                    "('key data is not secure')")
        if st.st_uid not in (0, uid):
            return f"{folder} belongs to uid {st.st_uid}, neither root nor {user}: OpenDKIM refuses keys below it"
        if mode & stat.S_IWGRP and _group_members(st.st_gid) - {user, "root"}:
            return (f"{folder} is writable by group {st.st_gid}, which has other members (mode {mode:04o}): "
                    "OpenDKIM refuses keys below it")
    return None


def key_file_problem(path: str | os.PathLike, user: str = "opendkim") -> str | None:
    """What is wrong with a private key file for OpenDKIM running as ``user``, or None.

    Missing; not a regular file; not owned by ``user`` (OpenDKIM reads it after dropping root);
    readable or writable by anyone else (it must be 0600 or 0400); or in an unsafe folder.
    """
    p = Path(path)
    try:
        st = p.lstat()
    except FileNotFoundError:
        return f"{p} does not exist"
    if not stat.S_ISREG(st.st_mode):
        return f"{p} is not a regular file"
    uid, _gid = _user_ids(user)
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        return f"{p} is mode {mode:04o}: a private key must be 0600 (chmod go-rwx, as the memo does)"
    if st.st_uid != uid:
        try:
            owner = pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            owner = str(st.st_uid)
        return f"{p} belongs to {owner}, not {user}: OpenDKIM cannot read it (chown {user}, as the memo does)"
    return folder_problem(p.parent, user)


# --------------------------------------------------------------------------------------------
# Keys


@dataclass(frozen=True)
class SigningKey:
    """One signing key: ``d=`` domain, ``s=`` selector, and the private key file.

    ``record`` is the TXT record to publish at :attr:`record_name` (kept here for convenience;
    OpenDKIM itself never reads it).
    """

    domain: str
    selector: str
    key_path: str
    record: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain", check_domain("keys.domain", self.domain))
        object.__setattr__(self, "selector", check_selector("keys.selector", self.selector))
        object.__setattr__(self, "key_path", check_key_path("keys.key_path", self.key_path))

    @property
    def record_name(self) -> str:
        """Where the public key is published: ``SELECTOR._domainkey.DOMAIN``."""
        return f"{self.selector}._domainkey.{self.domain}"

    #: the KeyTable names each key by its record name, as the memo does
    key_name = record_name

    @classmethod
    def load(cls, directory: str | os.PathLike, domain: str, selector: str) -> SigningKey:
        """A key made earlier by :func:`genkey` or :func:`install_key` in ``directory`` (a kept sandbox).

        Reads ``SELECTOR.txt`` for the record; the private key itself is not read.
        """
        folder = Path(directory).absolute()
        selector = check_selector("selector", selector)
        private, txt = folder / f"{selector}.private", folder / f"{selector}.txt"
        for path in (private, txt):
            if not path.is_file():
                raise ConfigError("selector", f"{path} does not exist", "make the key with genkey() first")
        _label, record = parse_genkey_txt(txt.read_text())
        return cls(domain, selector, str(private), record)

    def publish(self, zone) -> None:
        """Publish :attr:`record` in a :class:`labkit.core.dns.Zone` (replacing what was there)."""
        if not self.record:
            raise ConfigError("keys.record", f"no record is known for {self.record_name}",
                              "make the key with genkey() or install_key(), which return it")
        zone.replace(self.record_name, "TXT", self.record)


def parse_genkey_txt(text: str) -> tuple[str, str]:
    """``opendkim-genkey``'s ``SELECTOR.txt`` -> ``(label, record)``.

    The file is a zone-file line: ``mail._domainkey IN TXT ( "v=DKIM1; h=sha256; k=rsa; "
    "p=MIIB..." )  ; ----- DKIM key mail for example.com``. The record is its quoted strings
    joined (a 2048-bit key is split into strings of at most 255 octets).
    """
    label = text.split(None, 1)[0] if text.strip() else ""
    start, end = text.find("("), text.find(")")
    body = text[start + 1:end] if 0 <= start < end else text.split(";", 1)[0] if '"' not in text else text
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', body)
    if not label or not strings:
        raise ConfigError("genkey", "the .txt file opendkim-genkey wrote has no TXT record in it",
                          "run opendkim-genkey by hand and look at the file")
    record = "".join(s.replace('\\"', '"').replace("\\\\", "\\") for s in strings)
    if "p=" not in record:
        raise ConfigError("genkey", f"the record {record[:40]!r}... has no p= tag")
    return label, record


def _prepare_key_folder(folder: Path, user: str) -> None:
    """Make ``folder`` (0700, owned by ``user``) after checking that OpenDKIM will accept it."""
    problem = folder_problem(folder, user)
    if problem:
        raise ConfigError("directory", problem,
                          "keep keys in a folder whose parents are 755 and root's, e.g. under /var/lib/mail-lab "
                          "(not /tmp, /var/tmp or pytest's tmp_path)")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    uid, gid = _user_ids(user)
    if os.geteuid() == 0:
        os.chown(folder, uid, gid)
    os.chmod(folder, 0o700)


def _hand_over(path: Path, user: str) -> None:
    """chown the key to ``user`` and make it 0600 (the memo's chown and chmod go-rwx)."""
    uid, gid = _user_ids(user)
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    os.chmod(path, 0o600)


def genkey(directory: str | os.PathLike, domain: str, selector: str = "mail", bits: int = 2048, *,
           user: str = "opendkim", overwrite: bool = False) -> SigningKey:
    """The memo's ``opendkim-genkey -b BITS -d DOMAIN -s SELECTOR -D DIR``, then chown and chmod.

    Returns a :class:`SigningKey` whose ``key_path`` is ``DIR/SELECTOR.private`` (owned by
    ``user``, 0600) and whose ``record`` is the TXT record to publish at
    ``SELECTOR._domainkey.DOMAIN``. The key is made in a staging folder and moved into place
    only when everything worked; an existing key is never replaced unless ``overwrite``.
    """
    domain = check_domain("domain", domain)
    selector = check_selector("selector", selector)
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1024 <= bits <= 4096:
        raise ConfigError("bits", f"{bits!r} is not a key size from 1024 to 4096",
                          "RFC 8301: at least 1024 bits, 2048 recommended (ERRATA #9)")
    exe = opendkim_tool("opendkim-genkey")
    if exe is None:
        raise RealModeUnavailable(f"opendkim-genkey is not installed here; {_HOW_TO_GET}")
    folder = Path(check_absolute("directory", os.fspath(Path(directory).absolute())))
    target, txt_target = folder / f"{selector}.private", folder / f"{selector}.txt"
    check_key_path("directory", str(target))  # what the KeyTable will hold: checked before anything is written
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise ConfigError("user", f"there is no user {user!r} on this machine",
                          "the key is handed to the user OpenDKIM runs as (opendkim)") from None
    if target.exists() and not overwrite:
        raise ConfigError("selector", f"{target} exists already",
                          "a new key needs a new selector (the old record stays valid until it is removed), "
                          "or pass overwrite=True")
    _prepare_key_folder(folder, user)
    staging = Path(tempfile.mkdtemp(prefix=".genkey-", dir=folder))
    try:
        proc = subprocess.run([exe, "-b", str(bits), "-d", domain, "-s", selector, "-D", str(staging)],
                              capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0 or not (staging / f"{selector}.private").exists():
            said = " ".join(proc.stderr.split()) or f"exit status {proc.returncode}"
            raise ConfigError("genkey", f"opendkim-genkey failed: {said}")
        _label, record = parse_genkey_txt((staging / f"{selector}.txt").read_text())
        _hand_over(staging / f"{selector}.private", user)
        os.chmod(staging / f"{selector}.txt", 0o644)  # the public half: anyone may read it
        os.replace(staging / f"{selector}.txt", txt_target)
        os.replace(staging / f"{selector}.private", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return SigningKey(domain, selector, str(target), record)


def install_key(directory: str | os.PathLike, key: Any, *, user: str = "opendkim",
                overwrite: bool = False) -> SigningKey:
    """Put a :class:`labkit.core.auth.dkim.DKIMKey` where OpenDKIM reads it: ``DIR/SELECTOR.private``.

    The PEM (PKCS#1 for RSA, PKCS#8 for Ed25519, both of which OpenDKIM reads) is written 0600
    from the first byte and handed to ``user``. Returns the :class:`SigningKey` with the record.
    """
    for attr in ("domain", "selector", "private_pem", "record"):
        if not hasattr(key, attr):
            raise ConfigError("key", f"{type(key).__name__} is not a DKIMKey (no {attr})",
                              "make one with labkit.core.auth.dkim.DKIMKey.generate(domain, selector)")
    domain = check_domain("domain", key.domain)
    selector = check_selector("selector", key.selector)
    folder = Path(check_absolute("directory", os.fspath(Path(directory).absolute())))
    target = folder / f"{selector}.private"
    if target.exists() and not overwrite:
        raise ConfigError("selector", f"{target} exists already", "choose another selector, or pass overwrite=True")
    _prepare_key_folder(folder, user)
    staging = folder / f".{selector}.private.{os.getpid()}.new"
    try:
        write_secret(staging, key.private_pem())
        _hand_over(staging, user)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    strings = " ".join(f'"{key.record[i:i + 255]}"' for i in range(0, len(key.record), 255))
    write_atomic(folder / f"{selector}.txt", f"{selector}._domainkey\tIN\tTXT\t( {strings} )\n")
    return SigningKey(domain, selector, str(target), key.record)


def _key_kind(path: str) -> str | None:
    """``rsa`` or ``ed25519`` for a readable PEM key file, None if it cannot be read here."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    return "rsa" if isinstance(key, rsa.RSAPrivateKey) else type(key).__name__


# --------------------------------------------------------------------------------------------
# The tools


def opendkim_tool(name: str) -> str | None:
    """Path of an OpenDKIM command (``opendkim``, ``opendkim-testkey``...), or None if not installed."""
    return which(name)


# --------------------------------------------------------------------------------------------
# The configuration


@dataclass(frozen=True)
class OpenDKIMConfig:
    """OpenDKIM as the lab runs it: which keys sign whose mail, where it listens, which DNS it asks.

    ::

        key = genkey(sandbox / "opendkim" / "keys", "example.com", "mail")
        cfg = OpenDKIMConfig(sandbox / "opendkim", keys=(key,), resolver=(lab.dns.host, lab.dns.port),
                             internal_hosts=("127.0.0.1", "127.0.20.0/24"))
        cfg.write(); assert cfg.check()

    ``signing_table`` rows are ``(pattern, key name)``; by default one ``*@DOMAIN`` row a key
    (the memo's line). With no keys there is no KeyTable and no SigningTable: OpenDKIM starts
    without a complaint and signs nothing, the memo's own pitfall.
    """

    directory: str  #: where opendkim.conf and its tables are written (absolute)
    #: the milter socket: ``inet:PORT@127.0.0.1`` (port 0: a free port, picked at start), or a
    #: unix socket: ``"local"`` (``DIRECTORY/run/opendkim.sock``) or ``local:/path`` in a subfolder
    #: of :attr:`directory`
    socket: str = "inet:0@127.0.0.1"
    mode: str = "sv"  #: s: sign, v: verify
    keys: tuple[SigningKey, ...] = ()
    signing_table: tuple[tuple[str, str], ...] | None = None  #: None: ``*@DOMAIN`` for each key
    internal_hosts: tuple[str, ...] = ("127.0.0.1",)  #: mail from these is signed, not verified
    canonicalization: str = "relaxed/simple"  #: header/body (opendkim's default is simple)
    signature_algorithm: str = "rsa-sha256"
    #: the lab DNS (address, port): resolver.conf, read through ``ResolverConfiguration``. Fine
    #: for the one-shot tools (opendkim-testkey, ``opendkim -t``); not for a filter that takes
    #: concurrent sessions (see :attr:`public_keys`)
    resolver: tuple[str, int] | None = None
    #: ``record name -> TXT record`` of the keys a filter verifies with, read from a file
    #: (``TestPublicKeys``) rather than asked of a DNS server. OpenDKIM as built by Debian (with
    #: VBR) makes a libunbound context for every message and, with ``ResolverConfiguration``,
    #: reads that file into it each time, from the filter's threads at once, through unbound's
    #: configuration parser, which is not thread-safe: at two concurrent sessions or more it dies
    #: within a hundred messages. A lab filter takes its keys from here and needs no resolver.
    public_keys: Mapping[str, str] | None = None
    local_zones: tuple[str, ...] = DEFAULT_LOCAL_ZONES
    dns_timeout: int | None = None
    user: str = "opendkim"  #: UserID: OpenDKIM drops root and runs as this user
    group: str | None = "opendkim"
    syslog: bool = True
    syslog_success: bool = True  #: log every signature added and every verification
    log_why: bool = True  #: log why a message is or is not signed ("no signing table match")
    log_results: bool = False  #: log each signature's evaluation in detail
    authserv_id: str | None = None  #: the authserv-id of Authentication-Results
    #: a unix socket's folder belongs to this group (setgid, so the socket does too): its members
    #: may connect. Postfix's smtpd and cleanup run as user postfix. None: the group of ``user``.
    socket_group: str | None = "postfix"
    #: Postfix's chroot (its queue directory): the socket may also be in a subfolder of it, where a
    #: chrooted smtpd reaches it (Debian: local:/var/spool/postfix/opendkim/opendkim.sock)
    chroot: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "directory", check_absolute("directory", os.fspath(Path(
            os.fspath(self.directory)).absolute())))
        for name in ("keys", "internal_hosts", "local_zones"):
            value = getattr(self, name)
            object.__setattr__(self, name, (value,) if isinstance(value, (str, SigningKey)) else tuple(value))
        if self.signing_table is not None:
            object.__setattr__(self, "signing_table", tuple(tuple(row) for row in self.signing_table))
        if self.resolver is not None:
            object.__setattr__(self, "resolver", tuple(self.resolver))
        if self.public_keys is not None:
            object.__setattr__(self, "public_keys", dict(self.public_keys))
        object.__setattr__(self, "extra", dict(self.extra))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Refuse every malformed value with a :class:`ConfigError` naming the field."""
        if self.socket != LOCAL_SOCKET:
            path = local_socket_path(self.socket)
            if path is None:
                parse_socket(self.socket)
            elif not any(base and os.path.dirname(path) != base and path.startswith(base + os.sep)
                         for base in (self.directory, self.chroot)):
                raise ConfigError("socket", f"{path} is not in a subfolder of {self.directory}",
                                  "OpenDKIM makes the socket as user opendkim, in a folder write() prepares "
                                  "for it: use socket='local' (DIRECTORY/run/opendkim.sock)")
        else:
            local_socket_path(f"local:{self.path(LOCAL_SOCKET_NAME)}")  # its length
        if self.socket_group is not None:
            check_line("socket_group", self.socket_group)
            if not re.fullmatch(r"[a-z_][a-z0-9_-]*\$?", self.socket_group):
                raise ConfigError("socket_group", f"{self.socket_group!r} is not a group name")
        if self.mode not in MODES:
            raise ConfigError("mode", f"{self.mode!r} is not one of {', '.join(MODES)}",
                              "s signs, v verifies, sv does both")
        for i, key in enumerate(self.keys):
            if not isinstance(key, SigningKey):
                raise ConfigError(f"keys[{i}]", f"{type(key).__name__} is not a SigningKey",
                                  "make it with genkey() or install_key(), or SigningKey(domain, selector, path)")
        names = [k.key_name for k in self.keys]
        if len(set(names)) != len(names):
            raise ConfigError("keys", "two keys have the same selector and domain",
                              "each KeyTable name (SELECTOR._domainkey.DOMAIN) appears once")
        for i, row in enumerate(self.signing_table_rows()):
            if len(row) != 2:
                raise ConfigError(f"signing_table[{i}]", f"{row!r} is not (pattern, key name)")
            pattern, key_name = row
            check_pattern(f"signing_table[{i}] pattern", pattern)
            check_line(f"signing_table[{i}] key name", key_name)
            if key_name not in names:
                raise ConfigError(f"signing_table[{i}]", f"names key {key_name!r}, which is not in keys",
                                  "known keys: " + (", ".join(names) or "none"))
        if not self.internal_hosts and "s" in self.mode:
            raise ConfigError("internal_hosts", "is empty", "name the hosts whose mail is signed, e.g. 127.0.0.1")
        for i, host in enumerate(self.internal_hosts):
            check_peer(f"internal_hosts[{i}]", host)
        parts = self.canonicalization.split("/") if isinstance(self.canonicalization, str) else [None]
        if not 1 <= len(parts) <= 2 or any(p not in CANONICALIZATIONS for p in parts):
            raise ConfigError("canonicalization", f"{self.canonicalization!r} is not HEADER/BODY",
                              "each of relaxed or simple, e.g. relaxed/simple")
        if self.signature_algorithm not in ALGORITHMS:
            raise ConfigError("signature_algorithm", f"{self.signature_algorithm!r} is not one of "
                              f"{', '.join(ALGORITHMS)}", "rsa-sha1 is obsolete (RFC 8301)")
        if self.public_keys is not None:
            if self.resolver is not None:
                raise ConfigError("public_keys", "both public_keys and resolver are set",
                                  "a filter takes its keys from one place: public_keys (safe under load)")
            for name, record in self.public_keys.items():
                selector, sep, domain = str(name).partition("._domainkey.")
                if not sep:
                    raise ConfigError("public_keys", f"{name!r} is not SELECTOR._domainkey.DOMAIN")
                check_selector("public_keys", selector)
                check_domain("public_keys", domain)
                if not isinstance(record, str) or any(c in record for c in "\r\n\0") or "p=" not in record:
                    raise ConfigError(f"public_keys[{name}]", f"{record!r} is not a DKIM key record on one line",
                                      "give the TXT record as published: v=DKIM1; k=rsa; p=...")
        if self.resolver is not None:
            if len(self.resolver) != 2:
                raise ConfigError("resolver", f"{self.resolver!r} is not (address, port)")
            host, port = self.resolver
            try:
                ipaddress.ip_address(host)
            except (ValueError, TypeError):
                raise ConfigError("resolver", f"{host!r} is not an IP address",
                                  "give the lab DNS server's address, e.g. lab.dns.host") from None
            if not ipaddress.ip_address(host).is_loopback:
                raise ConfigError("resolver", f"{host} is not a loopback address",
                                  "the lab's DNS listens on loopback (lab.dns.host)")
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ConfigError("resolver", f"{port!r} is not a port", "give the lab DNS server's port (lab.dns.port)")
        for i, zone in enumerate(self.local_zones):
            check_domain(f"local_zones[{i}]", zone)
        if self.dns_timeout is not None and (isinstance(self.dns_timeout, bool) or not isinstance(self.dns_timeout, int)
                                             or self.dns_timeout < 0):
            raise ConfigError("dns_timeout", f"{self.dns_timeout!r} is not a number of seconds")
        check_line("user", self.user)
        if not re.fullmatch(r"[a-z_][a-z0-9_-]*\$?", self.user):
            raise ConfigError("user", f"{self.user!r} is not a user name")
        if self.group is not None:
            check_line("group", self.group)
            if not re.fullmatch(r"[a-z_][a-z0-9_-]*\$?", self.group):
                raise ConfigError("group", f"{self.group!r} is not a group name")
        if self.authserv_id is not None:
            check_line("authserv_id", self.authserv_id)
            if not self.authserv_id or any(c.isspace() for c in self.authserv_id):
                raise ConfigError("authserv_id", f"{self.authserv_id!r} is not one word", "e.g. mail.example.com")
        for name, value in self.extra.items():
            check_line("extra", name)
            if not _PARAM.match(name):
                raise ConfigError(f"extra[{name!r}]", "is not an opendkim.conf(5) parameter name")
            if name in TYPED_PARAMETERS:
                raise ConfigError(f"extra[{name!r}]", "is set by a typed field of OpenDKIMConfig",
                                  "set that field instead")
            check_line(f"extra[{name!r}]", value)

    # ------------------------------------------------------------------ derived values
    def signing_table_rows(self) -> tuple[tuple[str, str], ...]:
        if self.signing_table is not None:
            return self.signing_table
        return tuple((f"*@{k.domain}", k.key_name) for k in self.keys)

    @property
    def socket_spec(self) -> str:
        """The ``Socket`` line's value: ``socket`` with ``"local"`` spelled out as ``local:PATH``."""
        return f"local:{self.path(LOCAL_SOCKET_NAME)}" if self.socket == LOCAL_SOCKET else self.socket

    @property
    def socket_path(self) -> str | None:
        """The unix socket's path, or None when the milter socket is TCP."""
        return local_socket_path(self.socket_spec)

    @property
    def listen(self) -> tuple[str, int]:
        """``(address, port)`` of a TCP milter socket as configured (port 0: chosen at start)."""
        return parse_socket(self.socket_spec)

    @property
    def milter(self) -> str:
        """The socket as Postfix names it for ``smtpd_milters``: ``inet:127.0.0.1:8891`` or ``unix:/path``."""
        path = self.socket_path
        if path is not None:
            return f"unix:{path}"
        host, port = self.listen
        if port == 0:
            raise ConfigError("socket", "port 0 is chosen when OpenDKIM starts",
                              "use OpenDKIMRunner(...).milter after start()")
        return f"inet:{host}:{port}"

    @property
    def conf_path(self) -> str:
        return os.path.join(self.directory, CONF_NAME)

    @property
    def pid_file(self) -> str:
        return os.path.join(self.directory, "opendkim.pid")

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def at(self, directory: str | os.PathLike) -> OpenDKIMConfig:
        """The same configuration written to another folder (the conf names its own files, and
        a unix socket moves along)."""
        target = os.fspath(Path(directory).absolute())
        sock, path = self.socket, self.socket_path
        if path is not None and self.socket != LOCAL_SOCKET and path.startswith(self.directory + os.sep):
            sock = f"local:{os.path.join(target, os.path.relpath(path, self.directory))}"
        return replace(self, directory=target, socket=sock)

    # ------------------------------------------------------------------ rendering (pure)
    def render_conf(self) -> str:
        """opendkim.conf: each line headed by a comment naming its opendkim.conf(5) entry."""
        out = ["# opendkim.conf rendered by labkit. Each entry is described in opendkim.conf(5).",
               "# RequireSafeKeys is on (the default): keys must be 0600, in folders only root may change."]

        def add(name: str, value: str, why: str) -> None:
            out.extend(["", f"# {name}: {why}", f"{name} {value}"])

        add("Mode", self.mode, "s = sign, v = verify")
        if self.socket_path is not None:
            add("Socket", self.socket_spec, "where Postfix connects (smtpd_milters = unix:PATH): a unix socket")
            add("UMask", "007", f"the socket is made 0770; its folder's group ({self.socket_group or self.user}) "
                "may connect")
        else:
            add("Socket", self.socket, "where Postfix connects (smtpd_milters = inet:ADDRESS:PORT)")
        add("UserID", f"{self.user}:{self.group}" if self.group else self.user,
            "drop root and run as this user (it must own the keys)")
        add("PidFile", self.pid_file, "the process id, inside the sandbox")
        if self.keys:
            add("KeyTable", f"file:{self.path(KEY_TABLE)}", "key name -> DOMAIN:SELECTOR:private key file")
            add("SigningTable", f"refile:{self.path(SIGNING_TABLE)}",
                "From: address pattern -> key name (refile: patterns with *)")
        else:
            out.extend(["", "# no KeyTable and no SigningTable: nothing will be signed"])
        add("InternalHosts", self.path(TRUSTED_HOSTS), "mail from these hosts is signed, not verified")
        add("ExternalIgnoreList", self.path(TRUSTED_HOSTS),
            "the same hosts may send as our domains without a log warning")
        add("Canonicalization", self.canonicalization, "header/body: relaxed tolerates whitespace changes")
        if self.signature_algorithm != "rsa-sha256":
            add("SignatureAlgorithm", self.signature_algorithm, "the default is rsa-sha256")
        if self.resolver is not None:
            add("ResolverConfiguration", self.path(RESOLVER_CONF),
                "unbound settings: ask the lab DNS (Nameservers cannot take a port); not under load")
        if self.public_keys is not None:
            add("TestPublicKeys", self.path(PUBLIC_KEYS),
                "public keys from this file, not the DNS: no libunbound configuration to re-read per message")
        if self.dns_timeout is not None:
            add("DNSTimeout", str(self.dns_timeout), "seconds to wait for a DNS answer")
        if self.authserv_id:
            add("AuthservID", self.authserv_id, "the name in Authentication-Results")
        add("Syslog", "yes" if self.syslog else "no", "log through syslog(3) (the lab catches it)")
        if self.syslog:
            if self.syslog_success:
                add("SyslogSuccess", "yes", "also log each signature added and each verification that passed")
            if self.log_why:
                add("LogWhy", "yes", "log why a message was or was not signed")
            if self.log_results:
                add("LogResults", "yes", "log the evaluation of every signature")
        for name, value in self.extra.items():
            add(name, value, "set through extra")
        return "\n".join(out) + "\n"

    def render_key_table(self) -> str:
        """KeyTable: ``SELECTOR._domainkey.DOMAIN DOMAIN:SELECTOR:/path/SELECTOR.private``."""
        out = ["# KeyTable (opendkim.conf(5)): key name, then DOMAIN:SELECTOR:private key file"]
        out += [f"{k.key_name} {k.domain}:{k.selector}:{k.key_path}" for k in self.keys]
        return "\n".join(out) + "\n"

    def render_signing_table(self) -> str:
        """SigningTable (refile:): ``*@example.com SELECTOR._domainkey.DOMAIN``, first match wins."""
        out = ["# SigningTable, read as refile: (opendkim.conf(5)): a pattern for the From: address,",
               "# then the KeyTable name of the key that signs it. The first matching line wins."]
        out += [f"{pattern} {name}" for pattern, name in self.signing_table_rows()]
        return "\n".join(out) + "\n"

    def render_trusted_hosts(self) -> str:
        out = ["# TrustedHosts: InternalHosts and ExternalIgnoreList (opendkim.conf(5)); mail from",
               "# these clients is signed, mail from anyone else is verified."]
        return "\n".join(out + list(self.internal_hosts)) + "\n"

    def render_resolver_conf(self) -> str:
        """unbound.conf(5) text that forwards every question to the lab DNS server."""
        if self.resolver is None:
            raise ConfigError("resolver", "no lab DNS is set", "give resolver=(lab.dns.host, lab.dns.port)")
        host, port = self.resolver
        out = ["# resolver.conf (unbound.conf(5)), read through ResolverConfiguration:",
               "# every question goes to the lab DNS server.",
               "server:",
               "    # the lab DNS is on a loopback address, which unbound skips by default",
               "    do-not-query-localhost: no"]
        for zone in self.local_zones:
            out.append(f"    # unbound answers {zone} itself (NXDOMAIN) unless told not to")
            out.append(f'    local-zone: "{zone.rstrip(".")}." nodefault')
        out += ["forward-zone:", '    name: "."', f"    forward-addr: {host}@{port}"]
        return "\n".join(out) + "\n"

    def files(self) -> dict[str, str]:
        """File name -> content of everything :meth:`write` puts in :attr:`directory`."""
        out = {CONF_NAME: self.render_conf(), TRUSTED_HOSTS: self.render_trusted_hosts()}
        if self.keys:
            out[KEY_TABLE] = self.render_key_table()
            out[SIGNING_TABLE] = self.render_signing_table()
        if self.resolver is not None:
            out[RESOLVER_CONF] = self.render_resolver_conf()
        if self.public_keys is not None:
            out[PUBLIC_KEYS] = self.render_public_keys()
        return out

    def render_public_keys(self) -> str:
        """The ``TestPublicKeys`` file: ``SELECTOR._domainkey.DOMAIN`` and the key record, a line each."""
        out = ["# PublicKeys (TestPublicKeys in opendkim.conf(5)): record name, then the TXT record.",
               "# The lab writes it from its DNS zones when OpenDKIM starts."]
        out += [f"{name} {record}" for name, record in (self.public_keys or {}).items()]
        return "\n".join(out) + "\n"

    # ------------------------------------------------------------------ keys on disk
    def key_problems(self) -> list[str]:
        """What OpenDKIM would refuse about each key file (missing, unsafe, wrong kind)."""
        problems = []
        want = "ed25519" if self.signature_algorithm.startswith("ed25519") else "rsa"
        for i, key in enumerate(self.keys):
            problem = key_file_problem(key.key_path, self.user)
            if problem:
                problems.append(f"keys[{i}] ({key.key_name}): {problem}")
                continue
            kind = _key_kind(key.key_path)
            if kind is not None and kind != want:
                problems.append(f"keys[{i}] ({key.key_name}): the key is {kind} but signature_algorithm is "
                                f"{self.signature_algorithm}")
        return problems

    # ------------------------------------------------------------------ I/O
    def write(self, directory: str | os.PathLike | None = None, *, check_keys: bool = True) -> Path:
        """Write every file into ``directory`` (default: :attr:`directory`); return the conf's path.

        Everything is rendered and the keys are checked first (``check_keys=False`` skips that,
        only to let OpenDKIM itself show its refusal); then the files are written in a staging
        folder and renamed into place. A failure leaves the folder as it was.
        """
        cfg = self if directory is None else self.at(directory)
        files = cfg.files()
        if check_keys:
            problems = cfg.key_problems()
            if problems:
                raise ConfigError("keys", "; ".join(problems),
                                  "make keys with genkey()/install_key() in a folder under /var/lib/mail-lab")
        target = Path(cfg.directory)
        made = not target.exists()
        target.mkdir(mode=0o755, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=target))
        try:
            for name, text in files.items():
                write_atomic(staging / name, text, 0o644)
            for name in files:
                os.replace(staging / name, target / name)
            for name in (KEY_TABLE, SIGNING_TABLE, RESOLVER_CONF, PUBLIC_KEYS):
                if name not in files:
                    (target / name).unlink(missing_ok=True)  # a stale table would not be named
            cfg._prepare_socket_folder()
        except BaseException:
            if made:
                shutil.rmtree(target, ignore_errors=True)
            raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return Path(cfg.conf_path)

    def _prepare_socket_folder(self) -> None:
        """A unix socket's folder: owned by ``user``, group ``socket_group``, mode 2750 (needs root).

        OpenDKIM creates the socket after it has dropped root, so ``user`` must be able to write
        the folder; setgid hands its group to the socket, and ``UMask 007`` lets that group
        connect. No one else can even reach the folder.
        """
        path = self.socket_path
        if path is None:
            return
        folder = Path(path).parent
        uid, gid = _user_ids(self.user)
        if self.socket_group is not None:
            try:
                gid = grp.getgrnam(self.socket_group).gr_gid
            except KeyError:
                raise RealModeUnavailable(f"there is no group {self.socket_group!r} on this machine for the "
                                          f"milter socket (socket_group); {_HOW_TO_GET}") from None
        for parent in reversed(folder.parents):
            for base in (self.directory, self.chroot):
                if base and (parent == Path(base) or Path(base) in parent.parents):
                    parent.mkdir(mode=0o755, exist_ok=True)
        folder.mkdir(mode=0o750, exist_ok=True)
        if folder.is_symlink() or not folder.is_dir():
            raise ConfigError("socket", f"{folder} is not a folder", "remove it; write() makes it")
        try:
            os.chown(folder, uid, gid)
        except PermissionError:
            raise RealModeUnavailable(f"{folder} must belong to user {self.user} for OpenDKIM to make its socket "
                                      f"there, and only root may give it away (this process runs as uid "
                                      f"{os.geteuid()})") from None
        os.chmod(folder, 0o2750)

    def check(self, directory: str | os.PathLike | None = None) -> Result:
        """``opendkim -n -x CONF`` on the written files (any stderr is a failure), and the keys.

        ``opendkim -n`` reads the configuration and the tables but not the keys: a key that is
        missing or unsafe is found only when the first message is signed. The keys are
        therefore checked here as well, as ``RequireSafeKeys`` will.
        """
        cfg = self if directory is None else self.at(directory)
        problems = list(cfg.key_problems())
        details: dict[str, Any] = {"conf": cfg.conf_path, "checked_with": []}
        exe = opendkim_tool("opendkim")
        if exe is None:
            problems.append(f"opendkim is not installed here, so the configuration was not checked; {_HOW_TO_GET}")
        elif not os.path.isfile(cfg.conf_path):
            problems.append(f"no {cfg.conf_path}: write() it first")
        else:
            proc = subprocess.run([exe, "-n", "-x", cfg.conf_path], capture_output=True, text=True, timeout=60,
                                  check=False)
            details["checked_with"].append("opendkim -n")
            details["returncode"] = proc.returncode
            said = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
            details["stderr"] = said
            if proc.returncode != 0 or said:
                problems.append(f"opendkim -n -x {cfg.conf_path}: " + (" | ".join(said) or f"exit status {proc.returncode}"))
        details["problems"] = problems
        if problems:
            return Result(False, "; ".join(problems), details)
        return Result(True, f"opendkim -n found nothing to complain about in {cfg.conf_path}, and "
                      f"{len(cfg.keys)} key file(s) are where OpenDKIM accepts them", details)

    # ------------------------------------------------------------------ the repr
    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            default = {} if f.default_factory is dict else f.default  # type: ignore[misc]
            if f.name == "directory" or value != default:
                shown.append(f"{f.name}={value!r}")
        return f"OpenDKIMConfig({', '.join(shown)})"


def milter_fields(milter: str, *, default_action: str = "accept", protocol: int = 6) -> dict[str, Any]:
    """The :class:`labkit.real.postfix.PostfixConfig` fields that join a milter (the memo's four lines).

    ``dataclasses.replace(postfix_cfg, **milter_fields(runner.milter))``. ``accept`` is the memo's
    ``milter_default_action``: if OpenDKIM is down, mail goes out unsigned rather than waiting;
    ``tempfail`` holds it instead (the client sees 451).
    """
    check_line("milter", milter)
    if not re.fullmatch(r"inet:[^\s,:]+:\d{1,5}|unix:/\S+", milter):
        raise ConfigError("milter", f"{milter!r} is not inet:ADDRESS:PORT or unix:/path")
    if default_action not in ("accept", "reject", "tempfail", "quarantine"):
        raise ConfigError("milter_default_action", f"{default_action!r} is not accept, reject, tempfail or quarantine")
    return {"smtpd_milters": (milter,), "non_smtpd_milters": (milter,),
            "milter_default_action": default_action, "milter_protocol": protocol}


def read_conf(text: str) -> dict[str, str]:
    """An opendkim.conf as ``{name: value}`` (pure; comments and blank lines dropped)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 1)
        out[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return out


__all__ = [
    "ALGORITHMS", "MODES", "OpenDKIMConfig", "SigningKey", "folder_problem", "genkey", "install_key",
    "key_file_problem", "milter_fields", "opendkim_tool", "parse_genkey_txt", "parse_socket", "read_conf",
]
