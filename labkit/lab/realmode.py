"""A real-mode lab: Postfix, OpenDKIM and Dovecot play mail.example.com, run from the sandbox.

:class:`~labkit.lab.Lab` starts the embedded world first (the DNS, the ISP, the provider,
the verifier), then :func:`start`: Dovecot (LMTP delivery, POP3/IMAP, and the logins Postfix
asks about), OpenDKIM (its key published in the lab DNS) and Postfix with the memo's
smarthost settings. Each writes its configuration into the sandbox, checks it with the
daemon's own tool, starts, and registers its ports as the lab's services. :func:`stop`
stops them in the order their dependencies need. Only a real-mode lab imports this module.
"""
from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.dns import find_zone
from ..core.smtp.policy import RECIPIENT_LIMIT
from ..errors import ConfigError, StartError
from ..real.dovecot import DovecotConfig, DovecotRunner, require_dovecot
from ..real.opendkim import (OpenDKIMConfig, OpenDKIMRunner, SigningKey, genkey, milter_fields,
                             require_opendkim)
from ..real.postfix import PostfixConfig, PostfixRunner, require_postfix, sandbox_problem
from ..real.postfix.config import LAB_RETRY
from .service import DOVECOT_ROLES, REAL_BASE, ServiceInfo
from .site.rehearse import opendkim_socket
from .site.rehearse import postfix as site_postfix

if TYPE_CHECKING:  # Lab imports this module when it starts in real mode
    from .lab import Lab


def require(*, dkim: bool) -> None:
    """Fail with one clear line when Postfix, Dovecot (or OpenDKIM, with ``dkim``) or root is missing."""
    require_postfix()
    require_dovecot()
    if dkim:
        require_opendkim()


def check_sandbox(folder: Path) -> None:
    """Refuse a sandbox that user postfix could not walk into (every parent must allow it)."""
    folder.mkdir(parents=True, exist_ok=True)
    problem = sandbox_problem(folder)
    if problem:
        raise ConfigError("dir", problem, "put a real-mode lab under /var/lib or /srv, "
                          "or give no folder and labkit makes one under /var/lib/mail-lab")


def make_sandbox() -> Path:
    """A fresh sandbox under :data:`REAL_BASE`, which user postfix can traverse."""
    REAL_BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="lab-", dir=REAL_BASE))
    d.chmod(0o755)  # mkdtemp makes it 0700: user postfix must traverse it
    return d


def start(lab: Lab) -> None:
    """Start the real daemons of a lab whose embedded world runs, each recorded in the lab's
    register (``SANDBOX/run/daemons.json``) the moment it starts."""
    start_dovecot(lab)  # before Postfix, which delivers to it and asks it about logins
    start_postfix(lab)


def start_dovecot(lab: Lab) -> None:
    """Real Dovecot as mail.example.com: LMTP for Postfix, POP3/IMAP, SMTP AUTH for Postfix."""
    assert lab.ctx is not None and lab.world is not None and lab.dir is not None
    world, ctx = lab.world, lab.ctx
    home = world.host(world.service("mda").host)
    ports = {role: lab._fixed_ports[role] for role in DOVECOT_ROLES if role in lab._fixed_ports}
    # LMTP only for the lab's mailboxes (550 5.1.1 for any other), and SMTP AUTH questions from
    # Postfix on a unix socket in the sandbox, not on a TCP port
    cfg = DovecotConfig.for_lab(ctx, lab.dir / "dovecot", ports=ports, host=home.key,
                                accept_any_recipient=False, auth_socket=True,
                                mailboxes=world.mailboxes(world.local_domains("mda")))
    cfg.write()  # also hands SANDBOX/mail over to user mail (Dovecot refuses root for mail)
    checked = cfg.check()
    if not checked.ok:
        raise StartError(f"the lab's Dovecot configuration did not pass doveconf -n: {checked.reason}")
    lab.dovecot_config = cfg
    runner = DovecotRunner(cfg.conf_path, registry=lab.registry)
    if runner.running:
        runner.stop()  # left over from a kernel that ended without lab.stop()
    lab.dovecot_runner = runner
    runner.start()
    assert cfg.auth_socket_path is not None
    lab.services["dovecot"] = ServiceInfo(
        "dovecot", home.name, cfg.auth_socket_path, 0, 0, "dovecot-auth",
        "real Dovecot: checks SMTP AUTH logins for Postfix on a unix socket (smtpd_sasl_type = dovecot)")
    for role, port in cfg.ports().items():
        if role == "auth":
            continue
        svc = world.service(role)
        lab.services[role] = ServiceInfo(role, home.name, home.address, port, svc.standard_port,
                                         svc.protocol, "real Dovecot: " + svc.what)
        ctx.ports[(home.address, svc.standard_port)] = ctx.ports[(home.name, svc.standard_port)] = port
    ctx.events.emit(home.name, "dovecot", "listening", address=home.address, ports=cfg.ports(),
                    conf=cfg.conf_path, start_seconds=runner.start_seconds)


def start_opendkim(lab: Lab) -> dict[str, Any]:
    """Real OpenDKIM signing example.com's mail (selector ``mail``); the Postfix milter fields."""
    assert lab.ctx is not None and lab.world is not None and lab.dir is not None
    world, ctx = lab.world, lab.ctx
    home = world.host(world.service("mta").host)
    domain = world.local_domains("mda")[0]
    keys = lab.dir / "opendkim" / "keys"
    selector, bits = (lab.site.dkim_selector, lab.site.dkim_bits) if lab.site is not None else ("mail", 2048)
    if (keys / f"{selector}.private").exists():
        key = SigningKey.load(keys, domain, selector)  # a kept sandbox keeps its key
    else:
        key = genkey(keys, domain, selector, bits)
    key.publish(find_zone(lab.zones, key.record_name))
    # the keys OpenDKIM verifies with, from the lab's zones: a file, not libunbound reading
    # resolver.conf for every message from several threads (it died under load that way)
    public_keys = {r.name: r.value for zone in lab.zones for r in zone.records()
                   if r.type == "TXT" and "._domainkey." in r.name and "p=" in r.value}
    # a unix socket, as in the memo: over loopback TCP each message would wait ~80 ms (Nagle's
    # algorithm meets delayed ACKs on the milter's small packets); TCP only when the sandbox's
    # path is too long for a unix socket
    chroot = None
    try:
        milter_socket = OpenDKIMConfig(lab.dir / "opendkim", socket="local").socket
        if lab.site is not None and lab.site_apply:
            # inside Postfix's queue, as the site's bundle has it
            milter_socket, chroot = opendkim_socket(lab.dir)
            OpenDKIMConfig(lab.dir / "opendkim", socket=milter_socket, chroot=chroot)  # short enough?
    except ConfigError:
        milter_socket, chroot = "inet:0@127.0.0.1", None
    cfg = OpenDKIMConfig(lab.dir / "opendkim", keys=(key,), socket=milter_socket, chroot=chroot,
                         internal_hosts=("127.0.0.1", f"{home.address}/32", f"{world.host('pc').address}/32"),
                         public_keys=public_keys, authserv_id=home.name)
    cfg.write()
    checked = cfg.check()
    if not checked.ok:
        raise StartError(f"the lab's OpenDKIM configuration did not pass opendkim -n: {checked.reason}")
    lab.dkim_key, lab.opendkim_config = key, cfg
    lab.opendkim_runner = OpenDKIMRunner(cfg.conf_path, events=ctx.events, host=home.name, registry=lab.registry)
    lab.opendkim_runner.start()
    r = lab.opendkim_runner
    if r.socket_path is not None:  # a unix socket: host is its path, and there is no port (0)
        lab.services["opendkim"] = ServiceInfo(
            "opendkim", home.name, r.socket_path, 0, 0, "milter",
            f"real OpenDKIM: signs example.com's mail as Postfix's milter (smtpd_milters = {r.milter})")
    else:
        assert r.address is not None and r.port is not None
        lab.services["opendkim"] = ServiceInfo("opendkim", home.name, r.address, r.port, r.port, "milter",
                                               "real OpenDKIM: signs example.com's mail as Postfix's milter")
    return milter_fields(r.milter)


def start_postfix(lab: Lab) -> None:
    """Real Postfix as mail.example.com: the memo's smarthost client, run from the sandbox."""
    assert lab.ctx is not None and lab.world is not None and lab.dir is not None
    world, ctx = lab.world, lab.ctx
    home = world.host(world.service("mta").host)
    isp = world.host(world.service("smarthost").host)
    user, password = next(iter(world.logins("smarthost").items()))
    taken: set[int] = set()

    def pick(role: str) -> int:
        """The fixed port of ``role``, else a free one not already picked for another role."""
        chosen = lab._fixed_ports.get(role) or free_port(home.address)
        while chosen in taken and role not in lab._fixed_ports:
            chosen = free_port(home.address)
        taken.add(chosen)
        return chosen

    port, sub_port, subs_port = pick("mta"), pick("submission"), pick("submissions")
    dovecot = lab.dovecot_config
    assert dovecot is not None and dovecot.sasl_path is not None
    creds = ctx.credentials[home.key]
    mda = lab.services["mda"]
    milter = start_opendkim(lab) if lab.dkim else {}
    cfg = PostfixConfig.smarthost_client(
        lab.dir / "postfix", relay_host=isp.address, relay_port=lab.services["smarthost"].port,
        sasl_user=user, sasl_password=password, ca_file=ctx.ca_path, cert_match=isp.name,
        listen=(home.address, port), myhostname=home.name, mydomain=world.local_domains("mda")[0],
        myorigin=world.local_domains("mda")[0],
        mynetworks=(f"{home.address}/32", f"{world.host('pc').address}/32"),
        virtual_mailbox_domains=world.local_domains("mda"),
        # the mailboxes that exist: any other address is refused at RCPT (550 5.1.1)
        virtual_mailboxes=world.mailboxes(world.local_domains("mda")),
        smtpd_recipient_limit=RECIPIENT_LIMIT,
        virtual_transport=f"lmtp:inet:{mda.host}:{mda.port}",
        # submission (587): STARTTLS, then AUTH checked by Dovecot; port 25 keeps no AUTH
        submission=(home.address, sub_port), smtpd_sasl_type="dovecot", smtpd_sasl_path=dovecot.sasl_path,
        # submissions (465): the same, with TLS from the first byte instead of STARTTLS (RFC 8314)
        submissions=(home.address, subs_port),
        smtpd_tls_cert_file=str(creds.cert_path), smtpd_tls_key_file=str(creds.key_path),
        # leave from mail.example.com's own address, so the ISP sees (and logs) who it is
        extra={"smtp_bind_address": home.address, "lmtp_bind_address": home.address},
        # retry deferred mail within seconds of the ISP's return, not Postfix's 300 s
        **LAB_RETRY, **milter)
    if lab.site is not None and lab.site_apply:
        cfg = site_postfix(lab, cfg)  # the site bundle's relay policy, in the sandbox
    cfg.write()
    checked = cfg.check()
    if not checked.ok:
        raise StartError(f"the lab's Postfix configuration did not pass postconf/postfix check: "
                         f"{checked.reason}")
    lab.postfix_config = cfg
    lab.postfix_runner = PostfixRunner(cfg.config_directory, registry=lab.registry)
    lab.postfix_runner.start()
    waiting = lab.postfix_runner.queue()
    if waiting:  # mail an earlier run left in the queue leaves now, not at the next retry
        lab.postfix_runner.flush()
        ctx.events.emit(home.name, "postfix", "queue-flushed", messages=len(waiting))
    for role in ("mta", "postfix"):
        svc = world.service("mta")
        lab.services[role] = ServiceInfo(role, home.name, home.address, port, svc.standard_port,
                                         svc.protocol, "real Postfix: " + svc.what)
    ctx.ports[(home.address, 25)] = ctx.ports[(home.name, 25)] = port
    svc = world.service("submission")
    lab.services["submission"] = ServiceInfo("submission", home.name, home.address, sub_port, svc.standard_port,
                                             svc.protocol, "real Postfix with Dovecot SASL: " + svc.what)
    ctx.ports[(home.address, 587)] = ctx.ports[(home.name, 587)] = sub_port
    svc = world.service("submissions")
    lab.services["submissions"] = ServiceInfo("submissions", home.name, home.address, subs_port,
                                              svc.standard_port, svc.protocol,
                                              "real Postfix with Dovecot SASL: " + svc.what)
    ctx.ports[(home.address, 465)] = ctx.ports[(home.name, 465)] = subs_port
    ctx.events.emit(home.name, "postfix", "listening", address=home.address, port=port,
                    standard_port=25, config_dir=cfg.config_directory)


def stop(lab: Lab) -> None:
    """Stop the real daemons: Postfix first, then Dovecot (Postfix delivers to it) and OpenDKIM
    (Postfix holds connections to it). Safe to call twice, and after a failed start."""
    runner, lab.postfix_runner = lab.postfix_runner, None
    try:
        if runner is not None:
            runner.stop()
    finally:
        try:
            dovecot, lab.dovecot_runner = lab.dovecot_runner, None
            if dovecot is not None:
                dovecot.stop()
        finally:
            dkim, lab.opendkim_runner = lab.opendkim_runner, None
            if dkim is not None:
                dkim.stop()


def free_port(address: str) -> int:
    """A port free on ``address`` right now, for a daemon that cannot be told to take port 0."""
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]
