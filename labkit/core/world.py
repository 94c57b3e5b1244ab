"""The lab world ("internet in a box"): its hosts, services, domains and accounts.

Pure data, no I/O except :func:`distinct_loopback_available`, which binds a socket.

Each host has its own loopback address on Linux (all of 127.0.0.0/8 is loopback there), so
that SPF ``ip4:`` terms, PTR records and ``Received:`` lines mean something. Where only
127.0.0.1 answers (macOS, Windows), every host shares it and only the ports differ.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..errors import ConfigError, NotFound

#: The "home" network that the ISP hands out (the memo's so-net connection). Port 25 from
#: here to anything but the ISP is blocked: Outbound Port 25 Blocking (OP25B).
HOME_NETWORK = "127.0.20.0/24"


@dataclass(frozen=True)
class Host:
    """A machine of the lab world."""

    key: str  #: short name used in code: ``ns``, ``home``, ``isp``, ``inbox``, ``verifier``
    name: str  #: its FQDN
    address: str  #: its loopback address
    plays: str  #: who it stands for in the memo
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Service:
    """A listening service: a role played by a host on a standard port."""

    role: str  #: ``dns``, ``mta``, ``submission``, ``submissions``, ``mda``, ``smarthost``, ``inbox``, ``verifier``
    host: str  #: key of the :class:`Host`
    standard_port: int  #: the port it plays (25, 587, 465, 53, ...)
    protocol: str  #: ``smtp``, ``smtps`` (implicit TLS), ``lmtp``, ``dns``
    what: str  #: one line for the hosts table


@dataclass(frozen=True)
class Account:
    """A fixed, documented, throw-away lab account (never a real credential)."""

    address: str
    password: str | None  #: None for addresses that only receive
    role: str  #: the role that holds the mailbox or accepts the login
    what: str


@dataclass(frozen=True)
class World:
    hosts: tuple[Host, ...]
    services: tuple[Service, ...]
    accounts: tuple[Account, ...]
    #: mail domain -> key of the host that is its MX
    mail_domains: dict[str, str] = field(default_factory=dict)
    home_network: str = HOME_NETWORK
    #: TXT records published from the start: the ISP, the provider and the verifier have SPF;
    #: your example.com has none until chapter 10 adds it (the memo's "mail lands in spam")
    txt_records: tuple[tuple[str, str], ...] = ()

    def host(self, key: str) -> Host:
        for h in self.hosts:
            if h.key == key:
                return h
        raise NotFound(f"no lab host {key!r}; hosts are {', '.join(h.key for h in self.hosts)}")

    def host_by_name(self, name: str) -> Host | None:
        name = name.rstrip(".").lower()
        for h in self.hosts:
            if name == h.name or name in h.aliases:
                return h
        return None

    def service(self, role: str) -> Service:
        for s in self.services:
            if s.role == role:
                return s
        raise NotFound(f"no lab service {role!r}; roles are {', '.join(s.role for s in self.services)}")

    def account(self, address: str) -> Account | None:
        address = address.lower()
        for a in self.accounts:
            if a.address == address:
                return a
        return None

    def logins(self, role: str) -> dict[str, str]:
        """User name -> password of the accounts that may log in at ``role``."""
        return _logins(self.accounts, role)

    def in_home_network(self, address: str) -> bool:
        try:
            return ipaddress.ip_address(address) in ipaddress.ip_network(self.home_network)
        except ValueError:
            return False

    def mailboxes(self, domains: Iterable[str] | None = None) -> tuple[str, ...]:
        """The addresses that have a mailbox, in lower case: every account, and postmaster@ of
        every mail domain (RFC 5321 §4.5.1: every domain that takes mail must take it for its
        postmaster); with ``domains``, only those of these domains. Mail for any other address
        of a lab domain is refused at RCPT with ``550 5.1.1``, as a real server does."""
        wanted = None if domains is None else {d.lower().rstrip(".") for d in domains}
        every = {a.address.lower() for a in self.accounts} | {f"postmaster@{d.lower()}" for d in self.mail_domains}
        return tuple(sorted(a for a in every if wanted is None or a.rpartition("@")[2] in wanted))

    def local_domains(self, role: str) -> tuple[str, ...]:
        """Mail domains whose mailboxes the host of ``role`` holds."""
        key = self.service(role).host
        return tuple(d for d, h in self.mail_domains.items() if h == key)

    def flattened(self) -> "World":
        """The same world with every host on 127.0.0.1 (for systems without 127/8)."""
        return replace(self, hosts=tuple(replace(h, address="127.0.0.1") for h in self.hosts),
                       home_network="127.0.0.1/32")


def default_world() -> World:
    hosts = (
        Host("ns", "ns.lab.test", "127.0.10.53", "the public DNS (the memo's MyDNS)"),
        Host("home", "mail.example.com", "127.0.20.25",
             "the learner's own server at home (robo.mydns.jp in the memo)", ("example.com",)),
        Host("pc", "pc.example.com", "127.0.20.100",
             "the learner's PC at home, where the mail client (MUA) runs"),
        Host("isp", "mail.isp.example.net", "127.0.30.25",
             "the ISP's smarthost (mail.so-net.ne.jp:587 in the memo)", ("isp.example.net",)),
        Host("inbox", "mx.inbox.example.org", "127.0.40.25",
             "a big mailbox provider (Gmail in the memo)", ("inbox.example.org",)),
        Host("verifier", "verifier.example.org", "127.0.50.25",
             "an authentication checker (check-auth@verifier.port25.com in the memo)"),
    )
    services = (
        Service("dns", "ns", 53, "dns", "authoritative DNS for every lab zone (UDP and TCP)"),
        Service("mta", "home", 25, "smtp", "your MTA: receives mail for example.com"),
        Service("submission", "home", 587, "smtp", "your MSA: STARTTLS, then AUTH, then mail"),
        Service("submissions", "home", 465, "smtps", "your MSA with implicit TLS (RFC 8314)"),
        Service("mda", "home", 24, "lmtp",
                "your MDA: takes mail over LMTP (RFC 2033) and files it into the mailboxes"),
        Service("pop3", "home", 110, "pop3", "POP3 for your mailboxes: STLS, then USER/PASS"),
        Service("pop3s", "home", 995, "pop3s", "POP3 with implicit TLS (RFC 8314)"),
        Service("imap", "home", 143, "imap", "IMAP for your mailboxes: STARTTLS, then LOGIN"),
        Service("imaps", "home", 993, "imaps", "IMAP with implicit TLS (RFC 8314)"),
        Service("smarthost", "isp", 587, "smtp", "the ISP's submission server: STARTTLS and AUTH required, relays by MX"),
        Service("inbox", "inbox", 25, "smtp", "the mailbox provider's MX: receives mail for inbox.example.org"),
        Service("verifier", "verifier", 25, "smtp", "the verifier's MX: receives mail for verifier.example.org"),
    )
    accounts = (
        Account("alice@example.com", "alice-lab-password", "submission",
                "you: a mailbox on your own server, and the login at its submission port"),
        Account("alice@isp.example.net", "isp-lab-password", "smarthost",
                "your ISP account: the login at the smarthost (sasl_passwd in the memo)"),
        Account("bob@inbox.example.org", "bob-lab-password", "inbox",
                "a friend with a mailbox at the big provider"),
        Account("postmaster@example.com", None, "mta", "your postmaster (RFC 5321 requires one)"),
        Account("dmarc@example.com", None, "mta", "where DMARC aggregate reports for example.com arrive (rua)"),
        Account("check-auth@verifier.example.org", None, "verifier",
                "the verifier's address: mail sent here is checked"),
    )
    mail_domains = {
        "example.com": "home",
        "isp.example.net": "isp",
        "inbox.example.org": "inbox",
        "verifier.example.org": "verifier",
    }
    txt_records = (
        ("isp.example.net", "v=spf1 a:mail.isp.example.net -all"),
        ("inbox.example.org", "v=spf1 a:mx.inbox.example.org -all"),
        ("verifier.example.org", "v=spf1 a:verifier.example.org -all"),
    )
    return World(hosts, services, accounts, mail_domains, txt_records=txt_records)


#: The roles where a lab client logs in (SMTP AUTH) before it sends.
LOGIN_ROLES = ("submission", "submissions", "smarthost")


def _logins(accounts: Iterable[Account | Mapping[str, Any]], role: str) -> dict[str, str]:
    # your server's roles share one user database (Postfix's SASL via Dovecot in real mode)
    roles = {"submission", "submissions", "mta"} if role in ("submission", "submissions", "mta") else {role}
    out: dict[str, str] = {}
    for a in accounts:
        address, password, held = ((a["address"], a.get("password"), a["role"]) if isinstance(a, Mapping)
                                   else (a.address, a.password, a.role))
        if held in roles and password:
            out.setdefault(address, password)
    return out


def login_for(accounts: Iterable[Account | Mapping[str, Any]], via: str, mail_from: str) -> tuple[str, str] | None:
    """The lab account a client logs in with to send through ``via``, as (user, password).

    The one rule that ``Lab.send`` and ``labkit send`` share: only the roles of
    :data:`LOGIN_ROLES` take a login; the sender's own account if it may log in there, else
    the first account that may; None where no login is wanted. ``accounts`` are
    :class:`Account` objects or the dicts of ``labkit status --json``.
    """
    if via not in LOGIN_ROLES:
        return None
    logins = _logins(accounts, via)
    if not logins:
        return None
    user = mail_from if mail_from in logins else next(iter(logins))
    return user, logins[user]


def mailbox_path(mail_root: str | os.PathLike, address: str) -> Path:
    """Where the lab keeps ``address``'s Maildir: ``MAIL_ROOT/DOMAIN/LOCAL``, in lower case.

    The one place that lays mailboxes out: the embedded servers (``SANDBOX/mail``), Dovecot's
    configuration and ``labkit mailbox`` all ask it. An address that is not ``local@domain``,
    or whose parts would name another folder (a path separator, a leading dot), is refused
    with :class:`ConfigError`, so no address reaches outside ``mail_root``.
    """
    local, at, domain = address.lower().rpartition("@")
    if not at or not local or not domain:
        raise ConfigError("mailbox address", f"{address!r} is not local@domain")
    for part, what in ((local, "local part"), (domain, "domain")):
        if part in (".", "..") or any(c in part for c in "/\\\0") or part.startswith("."):
            raise ConfigError("mailbox address", f"the {what} of {address!r} cannot name a mailbox "
                                                 "folder (it holds a path separator or a leading dot)",
                              "lab mailboxes are plain names such as alice@example.com")
    root = Path(mail_root)
    folder = root / domain / local
    if root.resolve() not in folder.resolve().parents:
        raise ConfigError("mailbox address", f"{address!r} would be stored outside {root.resolve()}")
    return folder


def distinct_loopback_available() -> bool:
    """Whether addresses of 127.0.0.0/8 other than 127.0.0.1 can be bound here (Linux: yes)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind(("127.0.10.53", 0))
        return True
    except OSError:
        return False
    finally:
        s.close()
