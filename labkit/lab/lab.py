"""The Lab: one sandbox folder, every host of the lab world, every process and socket it starts.

    from labkit import Lab
    with Lab() as lab:
        print(lab.smarthost.host, lab.smarthost.port)   # 127.0.30.25 and the port that plays 587

``start()`` and ``stop()`` are idempotent; ``stop()`` is safe after a failed ``start()``.
"""
from __future__ import annotations

import atexit
import ipaddress
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import pki
from ..core.auth.reports import aggregate_reports
from ..core.dns import find_zone, lab_zones, make_resolver
from ..core.world import World, default_world, distinct_loopback_available, login_for
from ..errors import BindError, ConfigError, LabError, NotFound
from ..i18n import N_
from ..net.clients.smtp import send_message
from ..net.context import LabContext, Options
from ..net.dnsserver import DNSServer, in_process_resolver
from ..net.events import EventLog
from ..net.loop import LoopThread
from ..net.mailbox import start_imap, start_pop3
from ..net.mailbox.maildir import list_mailbox, mailbox_infos
from ..net.smtp.roles import start_role
from .service import DOVECOT_ROLES, REAL_ROLES, ROLE_ORDER, ServiceInfo
from .site.profile import Profile, as_profile
from .site.rehearse import embedded_key, publish, site_world
from .site.rehearse import status as site_status

if TYPE_CHECKING:  # for type hints only: real mode loads these when it starts
    from ..real.procs import Registry
    from ..core.dns.zone import Zone
    from ..real.dovecot import DovecotConfig, DovecotRunner
    from ..real.opendkim import OpenDKIMConfig, OpenDKIMRunner, SigningKey
    from ..real.postfix import PostfixConfig, PostfixRunner

class Lab:
    """A whole lab world on loopback: DNS, your server, the ISP, the mailbox provider, the verifier.

    dir:   the sandbox folder (created if missing). None: a fresh temporary folder, removed by
           ``stop()``. A folder you name is kept, with its mailboxes and its CA.
    real:  run real Postfix from the sandbox as ``mail.example.com`` (needs root and the system
           packages: ``sudo scripts/install-system-packages.sh``, or the docker image). Postfix
           plays ``mta`` (and ``postfix``), relays through the lab ISP with STARTTLS and AUTH,
           and hands example.com mail to the lab's MDA over LMTP. Without a folder, the sandbox
           is made under /var/lib/mail-lab (Postfix must be able to traverse every parent).
    world: the lab world (hosts, services, accounts); :func:`labkit.core.world.default_world` by default.
    ports: fixed ports for some roles (``{"smarthost": 2587}``); the others are ephemeral.
    dkim:  in real mode, also run OpenDKIM as Postfix's milter, signing example.com's mail with
           selector ``mail`` (its key published in the lab DNS). ``dkim=False``: Postfix alone.
    site:  a site profile (``mail-site.toml`` or a :class:`labkit.lab.site.Profile`): the lab plays your
           domain, host name and ISP with your names (:mod:`labkit.lab.site.rehearse`).
    site_apply: with ``site``, start with the site's bundle applied (records in the lab DNS, its
           configuration in the sandbox); False starts it bare, as chapter 07 does.
    """

    #: seconds between looks at a mailbox for mail delivered by another process (real mode's
    #: Dovecot); the lab's own deliveries wake :meth:`wait_for_mail` at once
    MAIL_LOOK_INTERVAL = 0.02

    def __init__(self, dir: str | os.PathLike | None = None, *, real: bool = False,
                 world: World | None = None, options: Options | None = None,
                 ports: dict[str, int] | None = None, dkim: bool = True, site: Any = None,
                 site_apply: bool = True):
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
        self._dns_loop = LoopThread(name="labkit-dns")
        self._servers: list[Any] = []
        self._dns = None
        self._started = False
        self._stopped: dict[str, int] = {}  #: roles taken down by stop_service(): their ports
        self.zones: list[Zone] = []  #: the lab DNS's zones, read live by its server
        self.dkim = dkim
        self.opendkim_runner: OpenDKIMRunner | None = None  #: OpenDKIM in real mode
        self.opendkim_config: OpenDKIMConfig | None = None
        self.dkim_key: SigningKey | None = None  #: the key example.com signs with
        self.postfix_runner: PostfixRunner | None = None  #: Postfix in real mode
        self.postfix_config: PostfixConfig | None = None  #: the configuration it runs with
        self.dovecot_runner: DovecotRunner | None = None  #: Dovecot in real mode
        self.dovecot_config: DovecotConfig | None = None  #: the configuration it runs with
        self.site: Profile | None = as_profile(site) if site is not None else None  #: the site it plays
        self.site_apply = site_apply
        self.registry: Registry | None = None  #: SANDBOX/run/daemons.json: every real daemon started
        #: real daemons that died while the lab ran: name -> {"pid", "returncode"}
        self.dead: dict[str, dict[str, Any]] = {}
        self._leftovers: list[tuple[int, str]] = []  #: processes of an earlier run stopped by start()
        self._stopped_daemons: set[str] = set()  #: real daemons taken down on purpose (stop_service)
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None

    # -- life cycle -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._started

    def start(self) -> "Lab":
        """Start every service; return when each one accepts connections."""
        if self._started:
            return self
        if self.real:
            from . import realmode  # real mode only: the real daemons' modules load with it

            realmode.require(dkim=self.dkim)  # one clear line when a daemon or root is missing
            # Postfix and OpenDKIM are processes of their own: if this process ends without
            # stop() (a notebook kernel shut down mid-chapter), stop them on the way out
            atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self

    def _start(self) -> None:
        if self.site is not None and self._world_arg is None:
            self._world_arg = site_world(self.site)
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
            self.dir = self._make_temp_dir()
        assert self.dir is not None
        if self.real:
            from . import realmode  # real mode only (see start)

            realmode.check_sandbox(self.dir)
        for sub in ("tls", "mail", "queue", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        if self.real:
            self._stop_leftovers()

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
        self._start_dns()
        self._loop.start()
        self._loop.run(self._start_services(), timeout=30)
        if self.real:
            if self._leftovers:
                self.ctx.events.emit("lab", "lab", "leftovers-stopped",
                                     processes=[f"{pid} {cmd}" for pid, cmd in self._leftovers])
            from . import realmode  # real mode only (see start)

            realmode.start(self)
            self._watch_daemons()

    def _stop_leftovers(self) -> None:
        """Stop what an earlier run in this sandbox left running (its process was killed).

        The register (``SANDBOX/run/daemons.json``) names every daemon started here with its pid
        and start time; a Postfix master of this sandbox's configuration found by its
        ``master.pid`` is stopped too (``postfix -c DIR stop`` signals only that master).
        """
        from ..real.postfix import PostfixRunner
        from ..real.procs import Registry

        assert self.dir is not None
        self.registry = Registry(self.dir / "run")
        self._leftovers = self.registry.stop_all()
        postfix_dir = self.dir / "postfix"
        if (postfix_dir / "main.cf").is_file():
            old = PostfixRunner(postfix_dir)
            found = old.processes()
            if found:
                old.stop()
                self._leftovers += found

    def _watch_daemons(self, every: float = 0.25) -> None:
        """Watch the real daemons from a thread: one that dies is reaped, named in ``lab.dead``
        and in ``lab.status()``, and a ``daemon-died`` event says so."""
        self._watch_stop.clear()
        self._watcher = threading.Thread(target=self._watch, args=(every,), name="lab-daemon-watcher", daemon=True)
        self._watcher.start()

    def _watch(self, every: float) -> None:
        while not self._watch_stop.wait(every):
            for name, runner in (("postfix", self.postfix_runner), ("dovecot", self.dovecot_runner),
                                 ("opendkim", self.opendkim_runner)):
                if runner is None or name in self.dead or name in self._stopped_daemons \
                        or self._watch_stop.is_set():
                    continue
                proc = getattr(runner, "_proc", None)
                if proc is not None:
                    code = proc.poll()  # also reaps it: no zombie is left
                    if code is None:
                        continue
                    pid = proc.pid
                else:
                    if runner.master_pid() is not None:
                        continue
                    pid, code = getattr(runner, "_last_master", None), None
                if self._watch_stop.is_set():
                    break
                self.dead[name] = {"pid": pid, "returncode": code}
                if self.ctx is not None and self.world is not None:
                    home = self.world.host(self.world.service("mta").host)
                    self.ctx.events.emit(home.name, name, "daemon-died", pid=pid, returncode=code)

    def check_daemons(self) -> None:
        """Raise :class:`LabError` naming every real daemon that died while the lab ran."""
        if self.dead:
            raise LabError("real daemons died while the lab ran: " + "; ".join(
                f"{name} (pid {d['pid']}, exit status {d['returncode']})" for name, d in self.dead.items())
                + "; see lab.events and the daemons' logs in the sandbox")

    def _make_temp_dir(self) -> Path:
        if not self.real:
            return Path(tempfile.mkdtemp(prefix="mail-lab-"))
        from . import realmode  # real mode only (see start)

        return realmode.make_sandbox()

    def _start_dns(self) -> None:
        """The lab DNS, on an event loop of its own: the provider's checks and the relays ask it
        many questions per message, and would otherwise wait for answers from the very loop
        that runs the SMTP servers (and is busy with the message)."""
        assert self.ctx is not None and self.world is not None
        world, ctx = self.world, self.ctx
        ns = world.host(world.service("dns").host)
        self.zones = lab_zones(world)
        for name, text in world.txt_records:
            find_zone(self.zones, name).add(name, "TXT", text)
        port = self._fixed_ports.get("dns", 0)
        self._dns_loop.start()
        try:
            self._dns = self._dns_loop.run(DNSServer.start(self.zones, host=ns.address, port=port))
        except OSError as e:
            raise BindError(f"the lab's dns service could not listen on {ns.address}:{port} "
                            f"({e.strerror or e}); choose another port or stop what holds it") from e
        dns_host, dns_port = self._dns.host, self._dns.port
        ctx.ports[(ns.address, 53)] = dns_port
        ctx.resolver_factory = lambda: make_resolver(dns_host, dns_port)
        server = self._dns
        ctx.local_resolver_factory = lambda: in_process_resolver(server)
        self._add_service("dns", dns_port)
        if self.site is not None and self.site_apply:
            publish(self)  # the bundle's records (the DKIM key once OpenDKIM has one)
            if not self.real:
                self.dkim_key = embedded_key(self)  # no OpenDKIM: a key of the profile's, published

    async def _start_services(self) -> None:
        assert self.ctx is not None and self.world is not None
        world, ctx = self.world, self.ctx

        for role in ROLE_ORDER:
            if self.real and (role in REAL_ROLES or role in DOVECOT_ROLES):
                continue
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


        for role, start, implicit in (("pop3", start_pop3, False), ("pop3s", start_pop3, True),
                                      ("imap", start_imap, False), ("imaps", start_imap, True)):
            if self.real:
                break  # Dovecot plays them
            server = await start(ctx, implicit_tls=implicit, port=self._fixed_ports.get(role, 0))
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

    def stop(self) -> None:
        """Stop every service and thread. Safe to call twice, and after a failed start."""
        atexit.unregister(self.stop)
        self._watch_stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        if self.real:
            from . import realmode  # real mode only (see start)

            realmode.stop(self)  # first: Postfix would otherwise retry deliveries to closing servers
        if self._loop.running:
            try:
                self._loop.run(self._close_servers(), timeout=15)
            finally:
                self._loop.stop()
        if self._dns_loop.running:
            try:
                if self._dns is not None:
                    self._dns_loop.run(self._dns.close(), timeout=15)
            finally:
                self._dns = None
                self._dns_loop.stop()
        if self.ctx is not None:
            self.ctx.events.close()  # what is still pending goes to the file
        self._started = False
        self.services = {}
        self._stopped.clear()
        self._stopped_daemons.clear()
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

    # -- faults and changes, for break-it / fix-it exercises ------------------------------

    def _server(self, role: str) -> Any:
        for server in self._servers:
            if server.role == role:
                return server
        raise NotFound(f"no running embedded service {role!r}; running: "
                       + ", ".join(s.role for s in self._servers))

    def _daemon_of(self, role: str) -> tuple[str, Any] | None:
        """The real daemon that plays ``role`` in real mode: ("postfix", runner) or ("dovecot", runner)."""
        if not self.real:
            return None
        if role in (*REAL_ROLES, "postfix") and self.postfix_runner is not None:
            return "postfix", self.postfix_runner
        if role in (*DOVECOT_ROLES, "dovecot") and self.dovecot_runner is not None:
            return "dovecot", self.dovecot_runner
        return None

    def roles_of(self, role: str) -> list[str]:
        """Every role that stops with ``role`` (a real daemon plays several)."""
        daemon = self._daemon_of(role)
        if daemon is None:
            return [role]
        plays = (*REAL_ROLES, "postfix") if daemon[0] == "postfix" else (*DOVECOT_ROLES, "dovecot")
        return [r for r in self.services if r in plays]

    def stop_service(self, role: str) -> None:
        """Take one service down (the ISP is down); its port stays reserved for it.

        In real mode a role played by Postfix or Dovecot stops that daemon, and with it every
        role it plays; ``lab.status()`` shows them as stopped until :meth:`start_service`.
        """
        self._require()
        daemon = self._daemon_of(role)
        if daemon is not None:
            name, runner = daemon
            if name in self._stopped_daemons:
                raise KeyError(f"{role!r} is stopped already")
            self._stopped_daemons.add(name)  # before the watcher sees it go: not a death
            runner.stop()
            for r in self.roles_of(role):
                self._stopped[r] = self.services[r].port
            self.ctx.events.emit(self.services[role].name, name, "service-stopped", roles=self.roles_of(role))
            return
        if role in self._stopped:
            raise KeyError(f"{role!r} is stopped already")
        server = self._server(role)
        self._loop.run(server.close())
        self._servers.remove(server)
        self._stopped[role] = server.port
        self.ctx.events.emit(server.hostname, role, "service-stopped", port=server.port)

    def start_service(self, role: str) -> None:
        """Bring a service taken down by :meth:`stop_service` back, on the same port."""
        self._require()
        if role not in self._stopped:
            raise NotFound(f"{role!r} was not stopped with stop_service()")
        daemon = self._daemon_of(role)
        if daemon is not None:
            name, runner = daemon
            runner.start()
            for r in self.roles_of(role):
                self._stopped.pop(r, None)
            self._stopped_daemons.discard(name)
            self.ctx.events.emit(self.services[role].name, name, "service-started", roles=self.roles_of(role))
            return
        port = self._stopped.pop(role)
        server = self._loop.run(start_role(role, self.ctx, port=port))
        self._servers.append(server)
        self.ctx.events.emit(server.hostname, role, "service-started", port=server.port)

    def strip_starttls(self, role: str = "smarthost", strip: bool = True) -> None:
        """Make ``role`` behave as if a man in the middle removed STARTTLS (ERRATA 8).

        New connections see no STARTTLS, and AUTH is taken in clear: a client that does not
        insist on TLS (``smtp_tls_security_level = may``) hands over its password. The lab
        records each AUTH with ``tls=False``. ``strip=False`` restores TLS.
        """
        self._require()
        self._server(role).strip_starttls = strip

    def send_dmarc_reports(self) -> list[dict[str, Any]]:
        """The provider sends its DMARC aggregate reports now (real ones go out once a day).

        One report per From domain whose DMARC record has ``rua=``, covering what the provider
        assessed since the last reports, to each ``rua`` address. Returns what was sent.
        """
        self._require()
        server = self._server("inbox")
        reporter = f"dmarc-reports@{self.world.local_domains('inbox')[0]}"

        async def send() -> list[dict[str, Any]]:
            messages = len(server.seen)
            sent = []
            for domain, rua, message in aggregate_reports(server.seen.take(), org_name=server.hostname,
                                                          reporter=reporter):
                qid = await server.queue.submit(reporter, [rua], message)
                self.ctx.events.emit(server.hostname, "inbox", "dmarc-report-sent", queue_id=qid,
                                     domain=domain, to=rua, messages=messages)
                sent.append({"domain": domain, "to": rua, "queue_id": qid})
            return sent

        return self._loop.run(send())

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
            host = self.world.host_by_name(s.name)  # real daemons (postfix, dovecot...) are not world roles
            rows.append({N_("role"): role, N_("host"): s.name, N_("address"): s.host, N_("plays port"): s.standard_port,
                         N_("lab port"): s.port, N_("what"): s.what, N_("in the memo"): host.plays if host else ""})
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
                             "standard_port": s.standard_port, "protocol": s.protocol,
                             "state": "stopped" if r in self._stopped else "running"}
                         for r, s in self.services.items()},
            "stopped": sorted(self._stopped),
            "hosts": {h.key: {"name": h.name, "address": h.address, "plays": h.plays}
                      for h in self.world.hosts},
            "accounts": self.accounts(),
            **({"postfix": {"config_dir": self.postfix_config.config_directory,
                            "maillog": self.postfix_config.maillog_file}}
               if self.postfix_config is not None else {}),
            **({"dovecot": {"conf": self.dovecot_config.conf_path, "log": self.dovecot_config.log_path}}
               if self.dovecot_config is not None else {}),
            **({"site": self._site_status()} if self.site is not None else {}),
            **({"daemons": self.daemons()} if self.real else {}),
            **({"opendkim": {"conf": self.opendkim_config.conf_path,
                             "selector": self.dkim_key.selector, "domain": self.dkim_key.domain,
                             "record": self.dkim_key.record_name}}
               if self.opendkim_config is not None else {}),
        }

    def _site_status(self) -> dict[str, Any]:
        return site_status(self)

    def daemons(self) -> dict[str, dict[str, Any]]:
        """The real daemons: ``name -> {"pid", "running"}`` (one that died says ``running: False``)."""
        out: dict[str, dict[str, Any]] = {}
        for name, runner in (("postfix", self.postfix_runner), ("dovecot", self.dovecot_runner),
                             ("opendkim", self.opendkim_runner)):
            if name in self.dead:
                out[name] = {"pid": self.dead[name]["pid"], "running": False, "died": True}
            elif runner is not None:
                out[name] = {"pid": runner.master_pid(), "running": runner.running,
                             **({"stopped": True} if name in self._stopped_daemons else {})}
        return out

    def mailbox(self, address: str, subject: str | None = None) -> list[dict[str, Any]]:
        """What a lab mailbox holds, oldest first: one dict per message (headers, path of the raw
        file); with ``subject``, only the messages whose Subject is that."""
        return [m.as_dict() for m in self._mail(address, subject)]

    def _mail(self, address: str, subject: str | None) -> list[Any]:
        infos = mailbox_infos(self._require().mailbox_dir(address))
        return infos if subject is None else [m for m in infos if m.subject == subject]

    def wait_for_mail(self, address: str, count: int = 1, timeout: float = 10,
                      subject: str | None = None) -> list[dict[str, Any]]:
        """Wait until ``address`` holds at least ``count`` messages (with Subject ``subject``,
        if given); return them, oldest first: the whole mailbox, or with ``subject`` only the
        messages that have it.

        Give the subject when other mail may still be on its way: a relay answers "sent" once
        the next hop has the message, before it reaches the mailbox.

        The lab's own servers wake the wait the moment they deliver; mail that another program
        delivers (Dovecot, in real mode) is seen within :attr:`MAIL_LOOK_INTERVAL` seconds.
        """
        from ..net.mailbox.maildir import deliveries, wait_for_delivery

        deadline = time.monotonic() + timeout
        while True:
            since = deliveries()  # before looking: a delivery during the look wakes the wait
            matching = self._mail(address, subject)
            if len(matching) >= count:
                return [m.as_dict() for m in matching]
            left = deadline - time.monotonic()
            if left <= 0:
                what = f"message(s) with Subject {subject!r}" if subject is not None else "message(s)"
                raise TimeoutError(f"{address} holds {len(matching)} {what}, not {count}, after {timeout} s; "
                                   "look at lab.events for 'deferred' or 'bounced'")
            wait_for_delivery(since, min(left, self.MAIL_LOOK_INTERVAL))

    def send(self, mail_from: str, rcpt_to: str | list[str], *, via: str = "submission",
             subject: str | None = None, body: str | None = None, message: bytes | str | None = None,
             auth: tuple[str, str] | None | bool = True, source: str | None = None):
        """Send a message through the lab service ``via`` and return its SendResult (with transcript).

        ``auth=True`` logs in with the lab account that role accepts (if it needs one);
        ``auth=False`` or ``None`` sends without AUTH; a (user, password) tuple logs in as given.
        ``source`` is the host key to send from (default: the learner's PC, ``pc``).
        """
        ctx = self._require()
        assert self.world is not None
        svc = self.services[via]
        creds = None
        if auth is True:
            creds = login_for(self.world.accounts, via, mail_from)
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
