"""The Lab: one sandbox folder, every host of the lab world, every process and socket it starts.

    from labkit import Lab
    with Lab() as lab:
        print(lab.smarthost.host, lab.smarthost.port)   # 127.0.30.25 and the port that plays 587

``start()`` and ``stop()`` are idempotent; ``stop()`` is safe after a failed ``start()``.
"""
from __future__ import annotations

import ipaddress
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import pki
from .context import LabContext, Options
from .errors import BindError, ConfigError, LabError, RealModeUnavailable
from .events import EventLog
from .loop import LoopThread
from .world import World, default_world, distinct_loopback_available

#: the order in which roles start: receivers first, so that relays find them
ROLE_ORDER = ("inbox", "verifier", "smarthost", "mta", "submission", "submissions")


@dataclass(frozen=True)
class ServiceInfo:
    """Where a lab service listens: ``host`` (an address to connect to) and ``port``."""

    role: str
    name: str  #: the FQDN of the lab host that plays it
    host: str  #: its loopback address
    port: int  #: the ephemeral port it listens on
    standard_port: int  #: the port it plays (25, 587, 465, 53)
    protocol: str  #: smtp, smtps or dns
    what: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Lab:
    """A whole lab world on loopback: DNS, your server, the ISP, the mailbox provider, the verifier.

    dir:   the sandbox folder (created if missing). None: a fresh temporary folder, removed by
           ``stop()``. A folder you name is kept, with its mailboxes and its CA.
    real:  run real Postfix, OpenDKIM and Dovecot from the sandbox (needs root and the system
           packages: ``sudo scripts/install-system-packages.sh``).
    world: the lab world (hosts, services, accounts); :func:`labkit.world.default_world` by default.
    ports: fixed ports for some roles (``{"smarthost": 2587}``); the others are ephemeral.
    """

    def __init__(self, dir: str | os.PathLike | None = None, *, real: bool = False,
                 world: World | None = None, options: Options | None = None,
                 ports: dict[str, int] | None = None):
        self._own_dir = dir is None
        self._dir_arg = Path(dir).resolve() if dir is not None else None
        self.real = real
        self._world_arg = world
        self.options = options or Options()
        self._fixed_ports = dict(ports or {})
        self.dir: Path | None = self._dir_arg
        self.world: World | None = None
        self.ctx: LabContext | None = None
        self.services: dict[str, ServiceInfo] = {}
        self._loop = LoopThread()
        self._servers: list[Any] = []
        self._dns = None
        self._started = False

    # -- life cycle -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._started

    def start(self) -> "Lab":
        """Start every service; return when each one accepts connections."""
        if self._started:
            return self
        if self.real:
            raise RealModeUnavailable(
                "real mode (Postfix, OpenDKIM, Dovecot from the sandbox) is not available in this "
                "version of labkit yet; use the embedded lab: Lab() or labkit up without --real")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    def _start(self) -> None:
        world = self._world_arg or default_world()
        for h in world.hosts:
            try:
                loopback = ipaddress.ip_address(h.address).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise ConfigError(f"world.hosts[{h.key}].address",
                                  f"{h.address!r} is not a loopback address",
                                  "every lab socket stays on 127.0.0.0/8 or ::1")
        unknown = set(self._fixed_ports) - {s.role for s in world.services}
        if unknown:
            raise ConfigError("ports", f"no such role: {', '.join(sorted(unknown))}",
                              f"roles are {', '.join(s.role for s in world.services)}")
        if not distinct_loopback_available():
            world = world.flattened()
        self.world = world
        if self._own_dir:
            self.dir = Path(tempfile.mkdtemp(prefix="mail-lab-"))
        assert self.dir is not None
        for sub in ("tls", "mail", "queue", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)

        tls = self.dir / "tls"
        if (tls / "ca.key").exists() and (tls / "ca.crt").exists():
            ca = pki.CA.load(tls)
            ca_path = tls / "ca.crt"
        else:
            ca = pki.CA.create("Mail Lab CA")
            ca_path = ca.save(tls)
        creds = {h.key: pki.issue_host(ca, tls, h.name, h.aliases, [h.address], ca_path) for h in world.hosts}
        events = EventLog(self.dir / "log" / "events.jsonl")
        self.ctx = LabContext(world, self.dir, ca_path, creds, events, self.options)
        self._loop.start()
        self._loop.run(self._start_services(), timeout=30)

    async def _start_services(self) -> None:
        from .dns import DNSServer, lab_zones, make_resolver

        assert self.ctx is not None and self.world is not None
        world, ctx = self.world, self.ctx
        ns = world.host(world.service("dns").host)
        self.zones = lab_zones(world)
        port = self._fixed_ports.get("dns", 0)
        try:
            self._dns = await DNSServer.start(self.zones, host=ns.address, port=port)
        except OSError as e:
            raise BindError(f"the lab's dns service could not listen on {ns.address}:{port} "
                            f"({e.strerror or e}); choose another port or stop what holds it") from e
        dns_host, dns_port = self._dns.host, self._dns.port
        ctx.ports[(ns.address, 53)] = dns_port
        ctx.resolver_factory = lambda: make_resolver(dns_host, dns_port)
        self._add_service("dns", dns_port)

        from .smtp.roles import start_role

        for role in ROLE_ORDER:
            svc = world.service(role)
            address = world.host(svc.host).address
            port = self._fixed_ports.get(role, 0)
            try:
                server = await start_role(role, ctx, port=port)
            except OSError as e:
                raise BindError(f"the lab's {role} service could not listen on {address}:{port} "
                                f"({e.strerror or e}); choose another port or stop what holds it") from e
            self._servers.append(server)
            self._add_service(role, server.port)

    def _add_service(self, role: str, port: int) -> None:
        assert self.world is not None
        svc = self.world.service(role)
        host = self.world.host(svc.host)
        info = ServiceInfo(role, host.name, host.address, port, svc.standard_port, svc.protocol, svc.what)
        self.services[role] = info

    async def _close_servers(self) -> None:
        for server in reversed(self._servers):
            try:
                await server.close()
            except Exception as e:  # keep closing the others; report the first
                if self.ctx is not None:
                    self.ctx.events.emit("lab", "lab", "error", where=f"closing {server!r}", error=str(e))
        self._servers.clear()
        if self._dns is not None:
            await self._dns.close()
            self._dns = None

    def stop(self) -> None:
        """Stop every service and thread. Safe to call twice, and after a failed start."""
        if self._loop.running:
            try:
                self._loop.run(self._close_servers(), timeout=15)
            finally:
                self._loop.stop()
        self._started = False
        self.services = {}
        if self._own_dir and self.dir is not None and self.dir.exists():
            shutil.rmtree(self.dir, ignore_errors=False)
            self.dir = None

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __getattr__(self, name: str) -> ServiceInfo:
        # lab.smarthost, lab.dns, lab.inbox ... (only called when normal lookup fails)
        services = self.__dict__.get("services") or {}
        if name in services:
            return services[name]
        raise AttributeError(f"Lab has no attribute {name!r}" +
                             (f"; services are {', '.join(services)}" if services else
                              "; start the lab first to reach its services"))

    # -- what the lab tells ---------------------------------------------------------------

    def _require(self) -> LabContext:
        if not self._started or self.ctx is None:
            raise LabError("the lab is not running; call lab.start() (or use `with Lab() as lab:`)")
        return self.ctx

    @property
    def events(self) -> EventLog:
        return self._require().events

    @property
    def ca_path(self) -> Path:
        return self._require().ca_path

    def resolver(self):
        """A dnspython Resolver pointed at the lab DNS."""
        return self._require().resolver()

    def dns_queries(self) -> list[Any]:
        """What the lab DNS was asked so far: Query(transport, client, name, type, rcode), oldest first."""
        self._require()
        return list(self._dns.queries) if self._dns is not None else []

    def hosts_table(self) -> list[dict[str, Any]]:
        """One row per service: which lab host plays it, on which address, which port plays which."""
        self._require()
        assert self.world is not None
        rows = []
        for role, s in self.services.items():
            host = self.world.host(self.world.service(role).host)
            rows.append({"role": role, "host": s.name, "address": s.host, "plays port": s.standard_port,
                         "lab port": s.port, "what": s.what, "in the memo": host.plays})
        return rows

    def accounts(self) -> list[dict[str, Any]]:
        """The lab's fixed, throw-away accounts (never real credentials)."""
        assert self.world is not None
        return [{"address": a.address, "password": a.password, "role": a.role, "what": a.what}
                for a in self.world.accounts]

    def status(self) -> dict[str, Any]:
        """The JSON object of the CLI contract: services, ca, accounts, dir, mode."""
        self._require()
        assert self.world is not None
        return {
            "dir": str(self.dir),
            "mode": "real" if self.real else "embedded",
            "ca": str(self.ca_path),
            "services": {r: {"host": s.host, "port": s.port, "name": s.name,
                             "standard_port": s.standard_port, "protocol": s.protocol}
                         for r, s in self.services.items()},
            "hosts": {h.key: {"name": h.name, "address": h.address, "plays": h.plays}
                      for h in self.world.hosts},
            "accounts": self.accounts(),
        }

    def mailbox(self, address: str) -> list[dict[str, Any]]:
        """What a lab mailbox holds: one dict per message (headers, path of the raw file)."""
        from .smtp.maildir import list_mailbox

        return list_mailbox(self._require().mailbox_dir(address))

    def wait_for_mail(self, address: str, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
        """Wait until ``address`` holds at least ``count`` messages; return them (oldest first)."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.mailbox(address)
            if len(msgs) >= count:
                return msgs
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} holds {len(msgs)} message(s), not {count}, after {timeout} s; "
                                   "look at lab.events for 'deferred' or 'bounced'")
            time.sleep(0.005)

    def send(self, mail_from: str, rcpt_to: str | list[str], *, via: str = "submission",
             subject: str | None = None, body: str | None = None, message: bytes | str | None = None,
             auth: tuple[str, str] | None | bool = True, source: str | None = None):
        """Send a message through the lab service ``via`` and return its SendResult (with transcript).

        ``auth=True`` logs in with the lab account that role accepts (if it needs one);
        ``auth=False`` or ``None`` sends without AUTH; a (user, password) tuple logs in as given.
        ``source`` is the host key to send from (default: the learner's PC, ``pc``).
        """
        from .smtp.client import send_message

        ctx = self._require()
        assert self.world is not None
        svc = self.services[via]
        creds = None
        if auth is True:
            logins = self.world.logins(via)
            if logins and via in ("submission", "submissions", "smarthost"):
                user = next(iter(a for a in logins if a == mail_from), next(iter(logins)))
                creds = (user, logins[user])
        elif isinstance(auth, tuple):
            creds = auth
        src = self.world.host(source or "pc").address
        return send_message(svc.host, svc.port, mail_from=mail_from,
                            rcpt_to=[rcpt_to] if isinstance(rcpt_to, str) else list(rcpt_to),
                            message=message, subject=subject, body=body,
                            implicit_tls=svc.protocol == "smtps", auth=creds, cafile=str(ctx.ca_path),
                            server_hostname=svc.name, source_address=(src, 0),
                            timeout=self.options.smtp_timeout,
                            server_name=f"{svc.name}:{svc.standard_port}")
