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
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import pki
from ..net.context import LabContext, Options
from ..errors import BindError, ConfigError, LabError, StartError
from ..net.events import EventLog
from ..net.loop import LoopThread
from ..core.world import World, default_world, distinct_loopback_available, login_for

if TYPE_CHECKING:  # for type hints only: real mode loads these when it starts
    from ..core.dns.zone import Zone
    from ..real.dovecot import DovecotConfig, DovecotRunner
    from ..real.opendkim import OpenDKIMConfig, OpenDKIMRunner, SigningKey
    from ..real.postfix import PostfixConfig, PostfixRunner

#: the order in which roles start: receivers first, so that relays find them
ROLE_ORDER = ("inbox", "verifier", "smarthost", "mda", "mta", "submission", "submissions")
#: roles that real Postfix plays in real mode (the embedded ones stay off)
REAL_ROLES = ("mta", "submission", "submissions")
#: roles that real Dovecot plays in real mode: LMTP delivery and mailbox access
DOVECOT_ROLES = ("mda", "pop3", "pop3s", "imap", "imaps")
#: where real-mode sandboxes live when no folder is given: every parent 755 and root's, so that
#: user postfix can traverse it and OpenDKIM's safe-key check accepts it (FIELD-NOTES)
REAL_BASE = Path("/var/lib/mail-lab")


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
    real:  run real Postfix from the sandbox as ``mail.example.com`` (needs root and the system
           packages: ``sudo scripts/install-system-packages.sh``, or the docker image). Postfix
           plays ``mta`` (and ``postfix``), relays through the lab ISP with STARTTLS and AUTH,
           and hands example.com mail to the lab's MDA over LMTP. Without a folder, the sandbox
           is made under /var/lib/mail-lab (Postfix must be able to traverse every parent).
    world: the lab world (hosts, services, accounts); :func:`labkit.core.world.default_world` by default.
    ports: fixed ports for some roles (``{"smarthost": 2587}``); the others are ephemeral.
    dkim:  in real mode, also run OpenDKIM as Postfix's milter, signing example.com's mail with
           selector ``mail`` (its key published in the lab DNS). ``dkim=False``: Postfix alone.
    """

    #: seconds between looks at a mailbox for mail delivered by another process (real mode's
    #: Dovecot); the lab's own deliveries wake :meth:`wait_for_mail` at once
    MAIL_LOOK_INTERVAL = 0.02

    def __init__(self, dir: str | os.PathLike | None = None, *, real: bool = False,
                 world: World | None = None, options: Options | None = None,
                 ports: dict[str, int] | None = None, dkim: bool = True):
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

    # -- life cycle -----------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._started

    def start(self) -> "Lab":
        """Start every service; return when each one accepts connections."""
        if self._started:
            return self
        if self.real:
            from ..real.postfix.runner import require_postfix

            require_postfix()  # one clear line when Postfix or root is missing
            from ..real.dovecot import require_dovecot

            require_dovecot()
            if self.dkim:
                from ..real.opendkim import require_opendkim

                require_opendkim()
        if self.real:
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
            from ..real.postfix.runner import sandbox_problem

            self.dir.mkdir(parents=True, exist_ok=True)
            problem = sandbox_problem(self.dir)
            if problem:
                raise ConfigError("dir", problem, "put a real-mode lab under /var/lib or /srv, "
                                  "or give no folder and labkit makes one under /var/lib/mail-lab")
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
        self._start_dns()
        self._loop.start()
        self._loop.run(self._start_services(), timeout=30)
        if self.real:
            self._start_dovecot()  # before Postfix, which delivers to it and asks it about logins
            self._start_postfix()

    def _start_dovecot(self) -> None:
        """Real Dovecot as mail.example.com: LMTP for Postfix, POP3/IMAP, SMTP AUTH for Postfix."""
        from ..real.dovecot import DovecotConfig, DovecotRunner

        assert self.ctx is not None and self.world is not None and self.dir is not None
        world, ctx = self.world, self.ctx
        home = world.host(world.service("mda").host)
        ports = {role: self._fixed_ports[role] for role in DOVECOT_ROLES if role in self._fixed_ports}
        cfg = DovecotConfig.for_lab(ctx, self.dir / "dovecot", ports=ports, host=home.key)
        cfg.write()  # also hands SANDBOX/mail over to user mail (Dovecot refuses root for mail)
        checked = cfg.check()
        if not checked.ok:
            raise StartError(f"the lab's Dovecot configuration did not pass doveconf -n: {checked.reason}")
        self.dovecot_config = cfg
        runner = DovecotRunner(cfg.conf_path)
        if runner.running:
            runner.stop()  # left over from a kernel that ended without lab.stop()
        self.dovecot_runner = runner.start()
        for role, port in cfg.ports().items():
            if role == "auth":
                self.services["dovecot"] = ServiceInfo(
                    "dovecot", home.name, home.address, port, port, "dovecot-auth",
                    "real Dovecot: checks SMTP AUTH logins for Postfix (smtpd_sasl_type = dovecot)")
                continue
            svc = world.service(role)
            self.services[role] = ServiceInfo(role, home.name, home.address, port, svc.standard_port,
                                              svc.protocol, "real Dovecot: " + svc.what)
            ctx.ports[(home.address, svc.standard_port)] = ctx.ports[(home.name, svc.standard_port)] = port
        ctx.events.emit(home.name, "dovecot", "listening", address=home.address, ports=cfg.ports(),
                        conf=cfg.conf_path, start_seconds=runner.start_seconds)

    def _start_opendkim(self) -> dict[str, Any]:
        """Real OpenDKIM signing example.com's mail (selector ``mail``); the Postfix milter fields."""
        from ..core.dns import find_zone
        from ..real.opendkim import OpenDKIMConfig, OpenDKIMRunner, SigningKey, genkey, milter_fields

        assert self.ctx is not None and self.world is not None and self.dir is not None
        world, ctx = self.world, self.ctx
        home = world.host(world.service("mta").host)
        domain = world.local_domains("mda")[0]
        keys = self.dir / "opendkim" / "keys"
        if (keys / "mail.private").exists():
            key = SigningKey.load(keys, domain, "mail")  # a kept sandbox keeps its key
        else:
            key = genkey(keys, domain, "mail")
        key.publish(find_zone(self.zones, key.record_name))
        dns = self.services["dns"]
        # a unix socket, as in the memo: over loopback TCP each message would wait ~80 ms (Nagle's
        # algorithm meets delayed ACKs on the milter's small packets); TCP only when the sandbox's
        # path is too long for a unix socket
        try:
            milter_socket = OpenDKIMConfig(self.dir / "opendkim", socket="local").socket
        except ConfigError:
            milter_socket = "inet:0@127.0.0.1"
        cfg = OpenDKIMConfig(self.dir / "opendkim", keys=(key,), socket=milter_socket,
                             internal_hosts=("127.0.0.1", f"{home.address}/32", f"{world.host('pc').address}/32"),
                             resolver=(dns.host, dns.port), authserv_id=home.name)
        cfg.write()
        checked = cfg.check()
        if not checked.ok:
            raise StartError(f"the lab's OpenDKIM configuration did not pass opendkim -n: {checked.reason}")
        self.dkim_key, self.opendkim_config = key, cfg
        self.opendkim_runner = OpenDKIMRunner(cfg.conf_path, events=ctx.events, host=home.name).start()
        r = self.opendkim_runner
        if r.socket_path is not None:  # a unix socket: host is its path, and there is no port (0)
            self.services["opendkim"] = ServiceInfo(
                "opendkim", home.name, r.socket_path, 0, 0, "milter",
                f"real OpenDKIM: signs example.com's mail as Postfix's milter (smtpd_milters = {r.milter})")
        else:
            assert r.address is not None and r.port is not None
            self.services["opendkim"] = ServiceInfo("opendkim", home.name, r.address, r.port, r.port, "milter",
                                                    "real OpenDKIM: signs example.com's mail as Postfix's milter")
        return milter_fields(r.milter)

    def _make_temp_dir(self) -> Path:
        if not self.real:
            return Path(tempfile.mkdtemp(prefix="mail-lab-"))
        REAL_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
        d = Path(tempfile.mkdtemp(prefix="lab-", dir=REAL_BASE))
        d.chmod(0o755)  # mkdtemp makes it 0700: user postfix must traverse it
        return d

    def _start_postfix(self) -> None:
        """Real Postfix as mail.example.com: the memo's smarthost client, run from the sandbox."""
        from ..real.postfix import PostfixConfig, PostfixRunner

        assert self.ctx is not None and self.world is not None and self.dir is not None
        world, ctx = self.world, self.ctx
        home = world.host(world.service("mta").host)
        isp = world.host(world.service("smarthost").host)
        user, password = next(iter(world.logins("smarthost").items()))
        taken: set[int] = set()

        def pick(role: str) -> int:
            """The fixed port of ``role``, else a free one not already picked for another role."""
            chosen = self._fixed_ports.get(role) or _free_port(home.address)
            while chosen in taken and role not in self._fixed_ports:
                chosen = _free_port(home.address)
            taken.add(chosen)
            return chosen

        port, sub_port, subs_port = pick("mta"), pick("submission"), pick("submissions")
        dovecot = self.dovecot_config
        assert dovecot is not None and dovecot.sasl_path is not None
        creds = ctx.credentials[home.key]
        mda = self.services["mda"]
        milter = self._start_opendkim() if self.dkim else {}
        cfg = PostfixConfig.smarthost_client(
            self.dir / "postfix", relay_host=isp.address, relay_port=self.services["smarthost"].port,
            sasl_user=user, sasl_password=password, ca_file=ctx.ca_path, cert_match=isp.name,
            listen=(home.address, port), myhostname=home.name, mydomain=world.local_domains("mda")[0],
            myorigin=world.local_domains("mda")[0],
            mynetworks=(f"{home.address}/32", f"{world.host('pc').address}/32"),
            virtual_mailbox_domains=world.local_domains("mda"),
            virtual_transport=f"lmtp:inet:{mda.host}:{mda.port}",
            # submission (587): STARTTLS, then AUTH checked by Dovecot; port 25 keeps no AUTH
            submission=(home.address, sub_port), smtpd_sasl_type="dovecot", smtpd_sasl_path=dovecot.sasl_path,
            # submissions (465): the same, with TLS from the first byte instead of STARTTLS (RFC 8314)
            submissions=(home.address, subs_port),
            smtpd_tls_cert_file=str(creds.cert_path), smtpd_tls_key_file=str(creds.key_path),
            # leave from mail.example.com's own address, so the ISP sees (and logs) who it is
            extra={"smtp_bind_address": home.address, "lmtp_bind_address": home.address}, **milter)
        cfg.write()
        checked = cfg.check()
        if not checked.ok:
            raise StartError(f"the lab's Postfix configuration did not pass postconf/postfix check: "
                             f"{checked.reason}")
        self.postfix_config = cfg
        self.postfix_runner = PostfixRunner(cfg.config_directory)
        self.postfix_runner.start()
        for role in ("mta", "postfix"):
            svc = world.service("mta")
            self.services[role] = ServiceInfo(role, home.name, home.address, port, svc.standard_port,
                                              svc.protocol, "real Postfix: " + svc.what)
        ctx.ports[(home.address, 25)] = ctx.ports[(home.name, 25)] = port
        svc = world.service("submission")
        self.services["submission"] = ServiceInfo("submission", home.name, home.address, sub_port, svc.standard_port,
                                                  svc.protocol, "real Postfix with Dovecot SASL: " + svc.what)
        ctx.ports[(home.address, 587)] = ctx.ports[(home.name, 587)] = sub_port
        svc = world.service("submissions")
        self.services["submissions"] = ServiceInfo("submissions", home.name, home.address, subs_port,
                                                   svc.standard_port, svc.protocol,
                                                   "real Postfix with Dovecot SASL: " + svc.what)
        ctx.ports[(home.address, 465)] = ctx.ports[(home.name, 465)] = subs_port
        ctx.events.emit(home.name, "postfix", "listening", address=home.address, port=port,
                        standard_port=25, config_dir=cfg.config_directory)

    def _start_dns(self) -> None:
        """The lab DNS, on an event loop of its own: the provider's checks and the relays ask it
        many questions per message, and would otherwise wait for answers from the very loop
        that runs the SMTP servers (and is busy with the message)."""
        from ..core.dns import find_zone, lab_zones, make_resolver
        from ..net.dnsserver import DNSServer, in_process_resolver

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

    async def _start_services(self) -> None:
        assert self.ctx is not None and self.world is not None
        world, ctx = self.world, self.ctx
        from ..net.smtp.roles import start_role

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

        from ..net.mailbox import start_imap, start_pop3

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
        runner, self.postfix_runner = self.postfix_runner, None
        try:
            if runner is not None:
                runner.stop()  # first: it would otherwise retry deliveries to closing servers
        finally:
            try:
                dovecot, self.dovecot_runner = self.dovecot_runner, None
                if dovecot is not None:
                    dovecot.stop()  # after Postfix, which delivers to it
            finally:
                dkim, self.opendkim_runner = self.opendkim_runner, None
                if dkim is not None:
                    dkim.stop()  # after Postfix, which holds connections to it
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
        raise KeyError(f"no running embedded service {role!r}; running: "
                       + ", ".join(s.role for s in self._servers))

    def stop_service(self, role: str) -> None:
        """Take one embedded service down (the ISP is down); its port stays reserved for it."""
        self._require()
        server = self._server(role)
        self._loop.run(server.close())
        self._servers.remove(server)
        self._stopped[role] = server.port
        self.ctx.events.emit(server.hostname, role, "service-stopped", port=server.port)

    def start_service(self, role: str) -> None:
        """Bring a service taken down by :meth:`stop_service` back, on the same port."""
        from ..net.smtp.roles import start_role

        self._require()
        if role not in self._stopped:
            raise KeyError(f"{role!r} was not stopped with stop_service()")
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
        from ..core.auth.reports import aggregate_reports

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
            rows.append({"role": role, "host": s.name, "address": s.host, "plays port": s.standard_port,
                         "lab port": s.port, "what": s.what, "in the memo": host.plays if host else ""})
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
            **({"postfix": {"config_dir": self.postfix_config.config_directory,
                            "maillog": self.postfix_config.maillog_file}}
               if self.postfix_config is not None else {}),
            **({"dovecot": {"conf": self.dovecot_config.conf_path, "log": self.dovecot_config.log_path}}
               if self.dovecot_config is not None else {}),
            **({"opendkim": {"conf": self.opendkim_config.conf_path,
                             "selector": self.dkim_key.selector, "domain": self.dkim_key.domain,
                             "record": self.dkim_key.record_name}}
               if self.opendkim_config is not None else {}),
        }

    def mailbox(self, address: str, subject: str | None = None) -> list[dict[str, Any]]:
        """What a lab mailbox holds, oldest first: one dict per message (headers, path of the raw
        file); with ``subject``, only the messages whose Subject is that."""
        return [m.as_dict() for m in self._mail(address, subject)]

    def _mail(self, address: str, subject: str | None) -> list[Any]:
        from ..net.mailbox.maildir import mailbox_infos

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
        from ..net.clients.smtp import send_message

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


def _free_port(address: str) -> int:
    """A port free on ``address`` right now, for a daemon that cannot be told to take port 0."""
    import socket

    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]
