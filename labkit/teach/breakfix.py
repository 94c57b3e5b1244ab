"""Break it, watch it fail, fix it: the memo's pitfalls, run against the lab's real Postfix.

The memo's advice for a relay that does not work is to read the mail log and try things by
hand (「メールが届いたかを確認し、また、/var/log/mail.log をチェックする」). Each function here
takes a running real-mode lab (``Lab(real=True)``), changes one thing the way a person setting
up Postfix gets it wrong, sends one message through Postfix, and returns a :class:`Report`
with the evidence: what Postfix logged, what is left in its queue, and what the lab's servers
(the ISP above all) recorded. A notebook asserts on the report; nothing here decides by
reading printed text.

==================  ==============================================================  =========
step                what goes wrong                                                 then
==================  ==============================================================  =========
wrong_password      the ISP answers ``535 5.7.8``; Postfix defers, the mail waits   restore
forget_postmap      ``sasl_passwd`` fixed, its ``.db`` not rebuilt: still ``535``   run_postmap
mismatched_key      key ``host:port`` vs relayhost ``[host]:port``: no AUTH, ``530``  restore
unbracketed_relay   ``relayhost = name:port``: a name-service look-up, not a host   restore
                    (inside :func:`postfix_on_lab_dns`: the MX look-up, seen)
memo_six_lines      the memo's six lines only: STARTTLS stripped, password in clear  require_tls
require_tls         ``secure``: no STARTTLS, no mail ("TLS is required")            restore
isp_down            the ISP is down: the mail waits in the queue                     restore
==================  ==============================================================  =========

:func:`restore` undoes everything: the ISP up and with STARTTLS again, the lab's own Postfix
configuration back, and every waiting message delivered (its report says which).

Every change of configuration goes through :func:`apply_config`: write, check with the real
``postconf``/``postfix check``, and only then ``postfix reload``. If the check fails, the
previous files are put back and :class:`~labkit.errors.ConfigError` says why: Postfix never
runs on a half-written configuration.

Secrets: the ISP password is never printed, logged or returned. The wrong password used by
:func:`wrong_password` is a made-up one. Where STARTTLS is stripped, the evidence that the
password crossed in clear is the ISP's ``auth`` event with ``tls=False``, not the password.
"""
from __future__ import annotations

import dataclasses
import fcntl
import os
import shutil
import tempfile
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import ConfigError, LabError, LabStateError, RealModeUnavailable
from ..files import write_secret
from ..i18n import N_
from ..real.tools import run
from ..result import Result
from .display import Table, escape_html

if TYPE_CHECKING:  # the lab floor, for type hints only
    from ..lab.lab import Lab

#: The memo's six ``postconf -e`` lines (導入後の設定 → SMTP リレーホストへのログインについて).
MEMO_SIX_LINES: tuple[tuple[str, str], ...] = (
    ("smtp_sender_dependent_authentication", "yes"),
    ("smtp_sasl_auth_enable", "yes"),
    ("smtp_sasl_password_maps", "hash:/etc/postfix/sasl_passwd"),
    ("smtp_sasl_type", "cyrus"),
    ("smtp_sasl_security_options", "noanonymous"),
    ("smtp_sasl_mechanism_filter", "plain"),
)

#: The sender and recipient of the probe messages each step sends through Postfix.
PROBE_FROM = "alice@example.com"
PROBE_TO = "bob@inbox.example.org"

#: A made-up password for :func:`wrong_password` (never the lab's real one).
WRONG_PASSWORD = "not-the-isp-password"

_ORIGINAL: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------------------
# The report


@dataclass(repr=False)
class Report:
    """What one break-it or fix-it step did, with the evidence.

    ``status`` is the delivery status Postfix logged for the probe message (``sent``,
    ``deferred``, ``bounced``) or None; ``status_event`` is that maillog line. ``maillog`` holds
    every line Postfix logged during the step, ``queue`` what waits in the queue afterwards,
    ``lab_events`` what the lab's servers recorded during the step (the ISP's ``auth`` events
    carry ``tls``). ``delivered`` lists the queue ids a fix step saw delivered.
    """

    step: str
    reason: str
    status: str | None = None
    queue_id: str | None = None
    status_event: Any = None
    maillog: list[Any] = field(default_factory=list)
    queue: list[Any] = field(default_factory=list)
    lab_events: list[Any] = field(default_factory=list)
    config: Any = None
    delivered: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.step}: {self.reason}"

    def __repr__(self) -> str:
        return str(self) + "\n" + repr(self.table())

    # -- what the evidence says ---------------------------------------------------------------
    def isp(self, kind: str | None = None) -> list[Any]:
        """The ISP smarthost's events of this step (``auth``, ``tls``, ``accepted``, ``rejected``...)."""
        return [e for e in self.lab_events if e.role == "smarthost" and (kind is None or e.kind == kind)]

    @property
    def isp_logins(self) -> list[Any]:
        """The ISP's ``auth`` events: ``success``, ``user``, ``mechanism`` and ``tls`` (never a password)."""
        return self.isp("auth")

    def logged(self, text: str) -> list[Any]:
        """The maillog lines of this step whose text contains ``text``."""
        return [e for e in self.maillog if text in e.line]

    @property
    def in_queue(self) -> bool:
        """Whether the probe message waits in Postfix's queue after the step."""
        return self.queue_id is not None and any(q.queue_id == self.queue_id for q in self.queue)

    def rows(self) -> list[dict[str, str]]:
        """The evidence as rows: where it was seen, and what."""
        out = []
        for e in self.maillog:
            if e.kind in ("status", "tls", "sasl", "reject", "warning", "fatal") or "no auth info" in e.line:
                out.append({N_("seen in"): f"Postfix maillog ({e.program})", N_("what"): e.line.split(": ", 1)[-1]})
        for e in self.lab_events:
            if e.role == "smarthost" and e.kind in ("tls", "auth", "accepted", "rejected", "service-stopped",
                                                    "service-started"):
                keep = {k: v for k, v in e.details.items() if k in ("success", "user", "mechanism", "tls", "version",
                                                                    "reply", "auth_user", "command", "port")}
                out.append({N_("seen in"): f"ISP {e.host}", N_("what"): f"{e.kind} {keep}"})
        for q in self.queue:
            reasons = "; ".join(r.get("delay_reason", "") for r in q.recipients)
            out.append({N_("seen in"): "Postfix queue (postqueue -j)",
                        N_("what"): f"{q.queue_id} in {q.queue_name}: {reasons}".rstrip(": ")})
        return out

    def table(self):
        """The evidence as a :class:`labkit.teach.display.Table` (HTML in Jupyter)."""
        return Table(self.rows(), [N_("seen in"), N_("what")])

    def _repr_html_(self) -> str:
        colour = {"sent": "#1a7f37", "deferred": "#9a6700", "bounced": "#cf222e"}.get(self.status or "", "#57606a")
        head = (f'<div style="border-left:4px solid {colour};padding-left:8px"><b>{escape_html(self.step)}</b>: '
                f"{escape_html(self.reason)}</div>")
        return head + self.table().to_html()


# --------------------------------------------------------------------------------------------
# Applying a configuration


def _require_real(lab: Lab) -> Any:
    runner = lab.postfix_runner
    if not lab.real or runner is None or lab.postfix_config is None:
        raise LabStateError("this needs a running real-mode lab: lab = Lab(real=True); lab.start() "
                            "(root and Postfix installed; see scripts/install-system-packages.sh)")
    if not lab.running:
        raise LabStateError("the lab is not running; call lab.start() first")
    return runner


def original_config(lab: Lab) -> Any:
    """The Postfix configuration the lab started with (remembered at the first change)."""
    _require_real(lab)
    if lab not in _ORIGINAL:
        _ORIGINAL[lab] = lab.postfix_config
    return _ORIGINAL[lab]


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every regular file in ``folder``: content, mode, modification time (ns)."""
    out = {}
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False) and not entry.name.startswith("."):
            st = entry.stat(follow_symlinks=False)
            out[entry.name] = (Path(entry.path).read_bytes(), st.st_mode & 0o777, st.st_mtime_ns)
    return out


def _put_back(folder: Path, snapshot: dict[str, tuple[bytes, int, int]]) -> None:
    """Make ``folder`` hold exactly the files of ``snapshot`` again (content, mode, time)."""
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False) and not entry.name.startswith(".") and entry.name not in snapshot:
            os.unlink(entry.path)
    for name, (data, mode, mtime_ns) in snapshot.items():
        path = folder / name
        tmp = folder / f".{name}.restore.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)


def apply_config(lab: Lab, new_config, *, strict: bool = True) -> Result:
    """Write ``new_config`` into the running Postfix's folder, check it, then ``postfix reload``.

    The check is :meth:`labkit.real.postfix.PostfixConfig.check`: the real ``postconf -n`` and
    ``postfix check`` (any complaint fails), plus labkit's own warnings about choices that are
    valid but wrong for the memo's goal (a relayhost without brackets, a password that could
    cross in clear...). ``strict=False`` lets those warnings through, for break-it steps made on
    purpose; Postfix's own complaints never pass.

    If the check fails, the folder's previous files are put back exactly (content, mode, time)
    and :class:`ConfigError` gives the reason; Postfix keeps running on what it had.
    Returns a Result whose details hold ``warnings`` and the ``check`` result.
    """
    runner = _require_real(lab)
    original_config(lab)  # remember the lab's own before the first change
    current = lab.postfix_config
    if os.path.abspath(new_config.config_directory) != os.path.abspath(current.config_directory):
        raise ConfigError("config_directory", f"{new_config.config_directory} is not the running Postfix's folder "
                          f"{current.config_directory}", "make the new configuration from lab.postfix_config "
                          "with dataclasses.replace(...)")
    folder = Path(current.config_directory)
    before = _snapshot(folder)
    try:
        new_config.write()
        checked = new_config.check()
    except BaseException:
        _put_back(folder, before)
        raise
    warns = list(checked.details.get("warnings", []))
    postfix_said = [p for p in checked.details.get("problems", []) if p not in warns]
    if postfix_said or (strict and warns):
        _put_back(folder, before)
        why = "; ".join(postfix_said or warns)
        raise ConfigError("postfix_config", f"the new configuration was not applied: {why}",
                          "the previous files are back in place and Postfix runs on them" +
                          ("" if postfix_said else "; pass strict=False to apply it anyway (break-it steps)"))
    runner.reload()
    lab.postfix_config = new_config
    reason = "written, checked with " + " and ".join(checked.details.get("checked_with", ["labkit"])) + \
             ", and reloaded"
    if warns:
        reason += f"; applied despite {len(warns)} warning(s): " + "; ".join(warns)
    return Result(True, reason, {"warnings": warns, "check": checked})


# --------------------------------------------------------------------------------------------
# Helpers: one probe message, and the evidence of a step


class _Step:
    """Marks where the logs stand when a step begins, and gathers what came after."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.runner = _require_real(lab)
        self.maillog_from = len(self.runner.events())
        self.events_from = len(lab.events)

    def maillog(self) -> list[Any]:
        return self.runner.events()[self.maillog_from:]

    def lab_events(self) -> list[Any]:
        return list(self.lab.events)[self.events_from:]

    def report(self, step: str, reason: str, queue_id: str | None = None, status_event: Any = None,
               **kw: Any) -> Report:
        return Report(step, reason, status=status_event.get("status") if status_event is not None else None,
                      queue_id=queue_id, status_event=status_event, maillog=self.maillog(),
                      queue=self.runner.queue(), lab_events=self.lab_events(), config=self.lab.postfix_config,
                      **kw)


def send_probe(lab: Lab, subject: str, *, source: str = "pc") -> str:
    """Submit one message to the lab's Postfix from the PC (in mynetworks); return its queue id."""
    res = lab.send(PROBE_FROM, PROBE_TO, via="mta", auth=False, source=source, subject=subject,
                   body=f"A probe message of the break-it / fix-it steps: {subject}\n")
    if not res.ok:
        raise LabError(f"Postfix did not accept the probe message: {res.reason}")
    return res.reply.text.rsplit(" ", 1)[-1]


def _status(runner, queue_id: str, timeout: float = 20) -> Any:
    return runner.wait_for_event("status", queue_id=queue_id, timeout=timeout)


def _replace(config, **changes: Any):
    return dataclasses.replace(config, **changes)


# --------------------------------------------------------------------------------------------
# Break it


def wrong_password(lab: Lab, password: str = WRONG_PASSWORD) -> Report:
    """sasl_passwd holds a wrong password: the ISP answers ``535 5.7.8``, Postfix defers.

    Nothing is lost: the message waits in the queue (``smtp_sasl_auth_soft_bounce = yes``, the
    default, turns a refused login into a temporary failure). Fix: the right password, then
    ``postmap``, then ``postqueue -f`` (:func:`restore` does all three).
    """
    step = _Step(lab)
    apply_config(lab, _replace(original_config(lab), sasl_password=password))
    qid = send_probe(lab, "Wrong password")
    ev = _status(step.runner, qid)
    said = ev.get("reason", "")
    reason = (f"the ISP refused the login ({said.split('said: ', 1)[-1]}); Postfix {ev.get('status')} message {qid}"
              + (": it waits in the queue" if ev.get("status") == "deferred" else ""))
    return step.report("wrong_password", reason, qid, ev)


def forget_postmap(lab: Lab) -> Report:
    """The password in ``sasl_passwd`` is fixed, but ``postmap`` is not run: Postfix reads only
    the indexed ``sasl_passwd.db``, so it still logs in with the old, wrong password.

    Starts from :func:`wrong_password`'s state (made here if needed), writes the right text
    file, and retries the waiting message. The report's details say that the text file is newer
    than its ``.db``. Fix: :func:`run_postmap`.
    """
    step = _Step(lab)
    runner = step.runner
    original = original_config(lab)
    broken = _replace(original, sasl_password=WRONG_PASSWORD)
    if lab.postfix_config != broken:
        apply_config(lab, broken)
    waiting = [q.queue_id for q in runner.queue()]
    qid = waiting[-1] if waiting else send_probe(lab, "Forgot postmap")
    if waiting:
        _status(runner, qid)  # it was tried once already
    text = Path(original.sasl_passwd_path)
    write_secret(text, original.render_sasl_passwd())  # the right password, in the text file only
    seen = len(runner.events())
    runner.flush()
    ev = _wait_new_status(runner, qid, seen)
    db = _indexed_map(text)
    newer = db is not None and text.stat().st_mtime_ns > db.stat().st_mtime_ns
    reason = (f"sasl_passwd now holds the right password, but {db.name if db else 'its map'} was not rebuilt: "
              f"Postfix {ev.get('status')} message {qid} again ({ev.get('reason', '').split('said: ', 1)[-1]})")
    return step.report("forget_postmap", reason, qid, ev,
                       details={"text_file": str(text), "map_file": str(db) if db else None,
                                "text_newer_than_map": newer})


def _indexed_map(text: Path) -> Path | None:
    for suffix in (".db", ".lmdb", ".cdb"):
        p = text.with_name(text.name + suffix)
        if p.exists():
            return p
    return None


def _wait_new_status(runner, queue_id: str, after: int, timeout: float = 20) -> Any:
    """The first status line for ``queue_id`` logged after event number ``after``."""
    deadline = time.monotonic() + timeout
    while True:
        for e in runner.events()[after:]:
            if e.kind == "status" and e.queue_id == queue_id:
                return e
        if time.monotonic() >= deadline:
            raise TimeoutError(f"no new delivery status for {queue_id} within {timeout} s; last lines:\n"
                               + runner.maillog_tail())
        time.sleep(0.01)


def run_postmap(lab: Lab) -> Report:
    """The fix for :func:`forget_postmap`: ``postmap -c DIR hash:DIR/sasl_passwd``, ``postfix -c DIR
    reload``, then ``postqueue -c DIR -f``.

    Returns a report whose ``delivered`` lists the messages that went out afterwards.
    """
    step = _Step(lab)
    cfg = lab.postfix_config
    text = Path(cfg.sasl_passwd_path)
    # postmap waits until the clock has passed the source file's time stamp (so that a map is
    # always newer than its source); date the file a little back rather than wait
    past = time.time() - 2
    os.utime(text, (past, past))
    done = run(["postmap", "-c", cfg.config_directory, f"{cfg.map_type}:{text}"])
    if not done.ok:
        raise ConfigError("sasl_passwd", f"postmap failed: {done.stderr.strip() or done.reason}")
    # The daemons notice a rebuilt map themselves, but by its time stamp in whole seconds: a map
    # rebuilt within the second goes unnoticed. A reload (the memo's restart) makes it certain.
    step.runner.reload()
    original = original_config(lab)
    if (text.read_text() == original.render_sasl_passwd()
            and Path(cfg.config_directory, "main.cf").read_text() == original.render_main_cf()):
        lab.postfix_config = original  # the files on disk are the lab's own again
    delivered = _deliver_waiting(lab, step.runner)
    return step.report("run_postmap", f"postmap rebuilt {text.name}.db; delivered: {', '.join(delivered) or 'nothing'}",
                       delivered=delivered)


def mismatched_key(lab: Lab) -> Report:
    """sasl_passwd's key is ``host:port`` while relayhost is ``[host]:port`` (ERRATA 7).

    Postfix looks the relay up by the relayhost string, finds no password ("no auth info
    found"), and sends without AUTH; the ISP answers ``530 5.7.0 Authentication required`` to
    MAIL FROM. 530 is a permanent reply, so the message bounces back to its sender. For this
    step Postfix logs verbosely about the ISP (``debug_peer_list``), which is where the "no
    auth info found" line comes from; no password is looked up, so none can be logged.
    """
    step = _Step(lab)
    original = original_config(lab)
    key = f"{original.relay_host}:{original.relay_port}"
    applied = apply_config(lab, _replace(original, sasl_passwd_key=key,
                                         extra={**original.extra, "debug_peer_list": original.relay_host}),
                           strict=False)
    qid = send_probe(lab, "Mismatched sasl_passwd key")
    ev = _status(step.runner, qid)
    said = ev.get("reason", "").split("said: ", 1)[-1]
    reason = (f"sasl_passwd's key {key!r} is not the relayhost {original.relayhost!r}: Postfix found no password, "
              f"sent no AUTH, and the ISP answered {said}; the message {ev.get('status')}")
    return step.report("mismatched_key", reason, qid, ev,
                       details={"key": key, "relayhost": original.relayhost, "warnings": applied.details["warnings"]})


def unbracketed_relay(lab: Lab, name: str | None = None) -> Report:
    """``relayhost = mail.isp.example.net:587`` as the memo's installer answer has it (ERRATA 7).

    Without brackets Postfix treats the name as a mail domain: it asks the name service for its
    MX records (then its address), instead of connecting to that host. Postfix asks the
    system's resolver, which does not know the lab's names, so the message is deferred with a
    name-service error.
    """
    step = _Step(lab)
    original = original_config(lab)
    name = name or original.smtp_tls_secure_cert_match[0]
    applied = apply_config(lab, _replace(original, relay_host=name, relay_brackets=False), strict=False)
    qid = send_probe(lab, "Relayhost without brackets")
    ev = _status(step.runner, qid)
    reason = (f"relayhost {lab.postfix_config.relayhost!r}: Postfix looked the name up instead of connecting "
              f"(relay={ev.get('relay')}); message {qid} {ev.get('status')}: {ev.get('reason')}")
    return step.report("unbracketed_relay", reason, qid, ev, details={"warnings": applied.details["warnings"]})


def config_diff(old, new) -> list[str]:
    """The main.cf lines that differ between two configurations, as ``-name = value`` (only in
    ``old``) and ``+name = value`` (only in ``new``), in main.cf order: what a change does to the
    file, without its comments."""
    def settings(cfg) -> dict[str, str]:
        out = {}
        for line in cfg.render_main_cf().splitlines():
            name, sep, value = line.partition(" = ")
            if sep and not line.startswith("#"):
                out[name.strip()] = value.strip()
        return out

    a, b = settings(old), settings(new)
    lines = []
    for name in list(a) + [n for n in b if n not in a]:
        if a.get(name) != b.get(name):
            if name in a:
                lines.append(f"-{name} = {a[name]}")
            if name in b:
                lines.append(f"+{name} = {b[name]}")
    return lines


@contextmanager
def postfix_on_lab_dns(lab: Lab, port: int = 53) -> Iterator[Any]:
    """Inside the ``with`` block, the lab's real Postfix resolves names with the lab DNS (ERRATA 7).

    Postfix asks the system resolver, which reads ``/etc/resolv.conf`` and asks port 53 only;
    the lab DNS answers on a port of its own. As root, this (1) has the lab DNS answer on port
    ``port`` of its own address as well (the same zones; the new listener keeps its own query
    list, which the block gets), and (2) restarts Postfix with ``unshare --mount``: in a private
    mount namespace, where a file naming the lab DNS is bind-mounted over ``/etc/resolv.conf``.
    Nothing outside Postfix sees that file. On leaving the block Postfix restarts as before and
    the listener closes. Raises :class:`RealModeUnavailable` saying why when this cannot be done
    here (not root, no ``unshare``, port ``port`` of that address taken).
    """
    from ..net.dnsserver import serve

    runner = _require_real(lab)
    if os.geteuid() != 0:
        raise RealModeUnavailable("giving Postfix the lab DNS needs root (a mount namespace and port 53); "
                                  "run the lab as root, or in the docker image")
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    if not unshare or not mount:
        raise RealModeUnavailable("unshare and mount (util-linux) are needed to give Postfix its own "
                                  "/etc/resolv.conf; apt-get install util-linux mount")
    resolv = Path(lab.dir) / "resolv.conf.lab-dns"
    resolv.write_text(f"# /etc/resolv.conf as Postfix sees it, in its own mount namespace\n"
                      f"nameserver {lab.dns.host}\noptions timeout:1 attempts:2\n")
    resolv.chmod(0o644)
    # Every lab on this host has the same DNS address: labs that reach this step at once (a
    # classroom, the two editions of a chapter) take port 53 in turn, not all at the same time.
    with _host_lock(f"dns-{lab.dns.host}-{port}", what=f"port {port} of {lab.dns.host}"):
        try:
            listener = serve(lab.zones, lab.dns.host, port)
            dns53 = listener.__enter__()
        except LabError as e:
            raise RealModeUnavailable(f"the lab DNS cannot answer on {lab.dns.host} port {port}: {e}") from e
        try:
            runner.stop()
            try:
                runner.start(wrapper=[unshare, "--mount", "--propagation", "private", "sh", "-c",
                                      f'{mount} --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv)])
                yield dns53
            finally:
                runner.stop()
                runner.start()
        finally:
            listener.__exit__(None, None, None)


@contextmanager
def _host_lock(name: str, *, what: str, timeout: float = 300) -> Iterator[None]:
    """Hold a lock shared by every process on this host (``/run/lock/labkit-NAME.lock``), waiting
    up to ``timeout`` seconds for a lab that holds it; RealModeUnavailable names ``what`` if it
    does not come free."""
    folder = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
    with open(folder / f"labkit-{name}.lock", "a+") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RealModeUnavailable(f"another lab on this host has held {what} for {timeout:.0f} s; "
                                              "try again when its step is done") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def memo_config(base) -> Any:
    """``base`` changed to what the memo's six ``postconf -e`` lines give on Debian.

    The six lines set SASL only. Debian's own main.cf carries ``smtp_tls_security_level = may``
    (TLS when offered), the memo adds ``smtp_sasl_security_options = noanonymous`` (which drops
    Postfix's default ``noplaintext``) and ``smtp_sasl_mechanism_filter = plain``. The relayhost
    stays bracketed here, so that only ERRATA 8 is shown.
    """
    return _replace(base, smtp_tls_security_level="may", smtp_tls_CAfile=None, smtp_tls_secure_cert_match=(),
                    smtp_sasl_security_options="noanonymous", smtp_sasl_tls_security_options="noanonymous",
                    smtp_sasl_mechanism_filter="plain",
                    extra={**base.extra, "smtp_sender_dependent_authentication": "yes", "smtp_sasl_type": "cyrus"})


def memo_six_lines(lab: Lab, strip: bool = True) -> Report:
    """The memo's six lines only, and a man in the middle who strips STARTTLS (ERRATA 8).

    Postfix, told only ``may``, sees no STARTTLS and goes on in clear; told ``noanonymous``, it
    sends AUTH PLAIN without TLS. The message is delivered, and the ISP's ``auth`` event shows
    ``tls=False``: the password crossed the network in clear. (``strip=False`` applies the six
    lines without the attacker: everything looks fine, which is why nobody notices.)
    """
    step = _Step(lab)
    applied = apply_config(lab, memo_config(original_config(lab)), strict=False)
    lab.strip_starttls("smarthost", strip)
    qid = send_probe(lab, "The memo's six lines" + (", STARTTLS stripped" if strip else ""))
    ev = _status(step.runner, qid)
    report = step.report("memo_six_lines", "", qid, ev, details={"stripped": strip,
                                                                 "warnings": applied.details["warnings"]})
    clear = [e for e in report.isp_logins if e.get("tls") is False]
    if clear:
        report.reason = (f"STARTTLS was stripped and Postfix logged in anyway: the ISP took AUTH "
                         f"{clear[-1].get('mechanism')} as {clear[-1].get('user')} without TLS (the password "
                         f"crossed in clear); message {qid} {ev.get('status')}")
    else:
        report.reason = f"message {qid} {ev.get('status')}; logins at the ISP: " + \
                        ", ".join(f"tls={e.get('tls')}" for e in report.isp_logins)
    return report


def require_tls(lab: Lab, level: str = "secure") -> Report:
    """The fix for ERRATA 8: ``smtp_tls_security_level = secure`` (or ``encrypt``).

    With STARTTLS still stripped (as :func:`memo_six_lines` left it), Postfix now refuses to go
    on in clear: it defers the message with "TLS is required, but was not offered", and never
    sends AUTH. The message waits; :func:`restore` (the attacker gone) delivers it.
    """
    if level not in ("encrypt", "secure", "verify"):
        raise ConfigError("level", f"{level!r} does not require TLS", "use encrypt or secure")
    step = _Step(lab)
    original = original_config(lab)
    cfg = original if level == "secure" else _replace(original, smtp_tls_security_level=level)
    apply_config(lab, cfg)
    qid = send_probe(lab, f"TLS required ({level})")
    ev = _status(step.runner, qid)
    report = step.report("require_tls", "", qid, ev, details={"level": level})
    report.reason = (f"smtp_tls_security_level = {level}: message {qid} {ev.get('status')} ({ev.get('reason')}); "
                     f"logins at the ISP: {len(report.isp_logins)}")
    return report


def isp_down(lab: Lab) -> Report:
    """The ISP's smarthost is down: Postfix cannot connect, defers, and keeps the message."""
    step = _Step(lab)
    lab.stop_service("smarthost")
    qid = send_probe(lab, "While the ISP was down")
    ev = _status(step.runner, qid)
    return step.report("isp_down", f"the ISP is down: message {qid} {ev.get('status')} ({ev.get('reason')})",
                       qid, ev)


# --------------------------------------------------------------------------------------------
# Fix it


def _deliver_waiting(lab: Lab, runner, timeout: float = 30) -> list[str]:
    """Flush the queue and wait until every message in it was sent (or bounced) and removed."""
    waiting = [q.queue_id for q in runner.queue()]
    if not waiting:
        return []
    seen = len(runner.events())
    runner.flush()
    deadline = time.monotonic() + timeout
    done: list[str] = []
    while True:
        events = runner.events()[seen:]
        removed = {e.queue_id for e in events if e.kind == "removed"}
        sent = {e.queue_id for e in events if e.kind == "status" and e.get("status") == "sent"}
        done = [q for q in waiting if q in removed and q in sent]
        if all(q in removed for q in waiting):
            return done
        if time.monotonic() >= deadline:
            left = [q for q in waiting if q not in removed]
            raise TimeoutError(f"still in the queue after {timeout} s: {', '.join(left)}; last lines:\n"
                               + runner.maillog_tail())
        time.sleep(0.01)


def retry(lab: Lab) -> Report:
    """``postqueue -f``: try every waiting message now, and wait until they are gone."""
    step = _Step(lab)
    delivered = _deliver_waiting(lab, step.runner)
    return step.report("retry", f"delivered: {', '.join(delivered) or 'nothing was waiting'}", delivered=delivered)


def restore(lab: Lab) -> Report:
    """Undo every break: the ISP up and with STARTTLS, the lab's own configuration, the queue
    flushed. ``delivered`` lists the messages that had waited and went out now."""
    step = _Step(lab)
    try:
        lab.start_service("smarthost")
    except KeyError:
        pass  # it was not down
    lab.strip_starttls("smarthost", False)
    original = original_config(lab)
    if lab.postfix_config != original or _stale_map(original):
        apply_config(lab, original)
    delivered = _deliver_waiting(lab, step.runner)
    return step.report("restore", "the lab's own Postfix configuration is back, the ISP is up with STARTTLS; "
                       f"delivered from the queue: {', '.join(delivered) or 'nothing was waiting'}",
                       delivered=delivered)


def _stale_map(cfg) -> bool:
    """Whether sasl_passwd on disk differs from what ``cfg`` renders, or is newer than its map."""
    if not cfg.smtp_sasl_auth_enable:
        return False
    text = Path(cfg.sasl_passwd_path)
    db = _indexed_map(text)
    try:
        if text.read_text() != cfg.render_sasl_passwd():
            return True
    except FileNotFoundError:
        return True
    return db is None or text.stat().st_mtime_ns > db.stat().st_mtime_ns


__all__ = ["MEMO_SIX_LINES", "PROBE_FROM", "PROBE_TO", "Report", "apply_config", "config_diff",
           "forget_postmap", "isp_down", "memo_config", "memo_six_lines", "mismatched_key", "original_config",
           "postfix_on_lab_dns", "require_tls", "restore", "retry", "run_postmap", "send_probe",
           "unbracketed_relay", "wrong_password"]
