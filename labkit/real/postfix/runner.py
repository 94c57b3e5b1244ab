"""Start, reload and stop a real Postfix from the lab's sandbox, and read what it did.

Postfix is normally one system service configured in /etc/postfix. Every Postfix command takes
another configuration folder, though, and that is all the lab needs: ``postfix -c DIR start``,
``postqueue -c DIR``, ``sendmail -C DIR``. With ``queue_directory``, ``data_directory`` and
``maillog_file`` inside the sandbox (see :class:`labkit.real.postfix.PostfixConfig`), a lab Postfix
shares nothing with the machine's own.

What this module handles for you (each one a trap when done by hand, FIELD-NOTES.md):

- Postfix needs root, and every folder above the sandbox must be traversable by user
  ``postfix``: :func:`require_postfix` and :func:`sandbox_problem` say so in one line.
- A failing ``postfix start`` prints nothing useful on a pipe: the reason is in the maillog,
  and :meth:`PostfixRunner.start` puts its last lines in the :class:`StartError`.
- "Started" means the SMTP server answers ``220``: :meth:`PostfixRunner.start` connects until
  it does, instead of sleeping a fixed time.
- ``postfix stop`` returns before the daemons are gone: :meth:`PostfixRunner.stop` waits until
  no process of this configuration is left.
- Which processes are this configuration's: the master writes its pid into
  ``QUEUE/pid/master.pid`` and becomes the leader of a session of its own; every daemon it
  starts (qmgr, pickup, smtpd...) is in that session. :meth:`PostfixRunner.processes` reads
  that from ``/proc/PID/stat``, which anyone may read, so no privilege beyond root is needed
  (``/proc/PID/environ`` of a daemon that became user postfix is not readable without
  CAP_SYS_PTRACE, which a container's root lacks).
"""
from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import (ConfigError, LabNotRunning, LabRunningError, LabStateError, RealModeUnavailable,
                       StartError)
from ..procs import (DaemonRunner, Registry, cmdline, descendants, describe, live, pid_alive, proc_stat,
                     process_table, send_signal, start_time, wait_gone)
from . import maillog
from .config import postfix_tool

#: The commands real mode uses.
REQUIRED_TOOLS = ("postfix", "postconf", "postmap", "postqueue", "sendmail")

_HOW_TO_GET = "run: sudo scripts/install-system-packages.sh, or use the lab's docker image (docker/)"


def require_postfix() -> None:
    """Raise :class:`RealModeUnavailable` with one line saying what is missing and how to get it."""
    missing = [t for t in REQUIRED_TOOLS if postfix_tool(t) is None]
    if missing:
        raise RealModeUnavailable(f"real Postfix is not installed here (missing: {', '.join(missing)}); {_HOW_TO_GET}")
    if os.geteuid() != 0:
        raise RealModeUnavailable(f"real Postfix must be started as root and this process runs as uid {os.geteuid()}; "
                                  "run the lab as root, or in the lab's docker image (docker/)")


# --------------------------------------------------------------------------------------------
# Where a sandbox can live


def _postfix_ids() -> tuple[int, set[int]]:
    try:
        pw = pwd.getpwnam("postfix")
    except KeyError:
        raise RealModeUnavailable(f"there is no user 'postfix' on this machine; {_HOW_TO_GET}") from None
    groups = {pw.pw_gid}
    groups.update(g for g in os.getgrouplist("postfix", pw.pw_gid))
    return pw.pw_uid, groups


def _traversable(st: os.stat_result, uid: int, gids: set[int]) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in gids:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def sandbox_problem(path: str | os.PathLike) -> str | None:
    """Why user ``postfix`` cannot reach ``path`` (a folder above it it cannot enter), or None.

    Postfix's daemons drop root and run as ``postfix``; they must get through every folder
    above the sandbox. A home folder (/root is 0700) or a private temporary folder is not
    passable. The first such folder is named, with its mode and owner.
    """
    uid, gids = _postfix_ids()
    target = Path(path).absolute()
    for folder in [*reversed(target.parents), target]:
        try:
            st = folder.stat()
        except FileNotFoundError:
            break  # not made yet: Postfix (or write()) makes it, with usable modes
        if not _traversable(st, uid, gids):
            try:
                owner = pwd.getpwuid(st.st_uid).pw_name
            except KeyError:
                owner = str(st.st_uid)
            return (f"{folder} is mode {stat.S_IMODE(st.st_mode):04o} (owner {owner}): user postfix cannot "
                    f"pass through it to reach {target}")
    return None


def make_traversable(path: str | os.PathLike, owned_root: str | os.PathLike) -> None:
    """Let user ``postfix`` through the folders from ``owned_root`` down to ``path`` (adds r-x).

    Only for folders your own sandbox owns (a test's temporary folder): ``owned_root`` must be
    ``path`` or above it, and nothing above ``owned_root`` is touched. System folders are never
    changed here: move the sandbox instead (e.g. under /var/lib or /srv).
    """
    target, root = Path(path).absolute(), Path(owned_root).absolute()
    if target != root and root not in target.parents:
        raise ConfigError("owned_root", f"{root} is not {target} or a folder above it",
                          "give the top folder that your sandbox created")
    chain = [target, *[p for p in target.parents if p == root or root in p.parents]]
    for folder in chain:
        if folder.is_dir():
            os.chmod(folder, stat.S_IMODE(folder.stat().st_mode) | 0o055)


# --------------------------------------------------------------------------------------------
# master.cf: where the SMTP server listens (pure)


def smtpd_listeners(master_cf: str) -> list[tuple[str, int]]:
    """``(address, port)`` of every ``inet ... smtpd`` service in a master.cf text.

    A service written as a bare port (``25``) or a name (``smtp``) listens on every address in
    ``inet_interfaces``; it is reported with address ``""``; a named one with its port number.
    """
    out = []
    for line in master_cf.splitlines():
        if not line or line[0] in "# \t":
            continue
        cols = line.split()
        if len(cols) < 8 or cols[1] != "inet" or cols[7] != "smtpd":
            continue
        addr, _, port = cols[0].rpartition(":")
        if port.isdigit():
            out.append((addr.strip("[]"), int(port)))
        else:
            try:
                out.append((addr.strip("[]"), socket.getservbyname(port, "tcp")))
            except OSError:
                continue
    return out


# --------------------------------------------------------------------------------------------
# The queue


@dataclass(frozen=True)
class QueueEntry:
    """One message in the queue, as ``postqueue -j`` describes it."""

    queue_id: str
    queue_name: str  #: ``active``, ``deferred``, ``hold``, ``incoming``, ``maildrop``
    sender: str
    recipients: tuple[dict[str, Any], ...]  #: each ``{"address": ..., "delay_reason": ...}``
    arrival_time: int = 0
    message_size: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> QueueEntry:
        return cls(obj.get("queue_id", ""), obj.get("queue_name", ""), obj.get("sender", ""),
                   tuple(obj.get("recipients", ())), int(obj.get("arrival_time", 0)),
                   int(obj.get("message_size", 0)), obj)


def parse_postqueue_json(text: str) -> list[QueueEntry]:
    """``postqueue -j`` prints one JSON object a line (pure)."""
    return [QueueEntry.from_json(json.loads(line)) for line in text.splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------
# The runner


class PostfixRunner(DaemonRunner):
    """One Postfix instance, named by its configuration folder.

    ::

        cfg = PostfixConfig.smarthost_client(sandbox, relay_host=..., ...)
        with PostfixRunner(cfg.write()) as postfix:
            postfix.sendmail(message, "alice@example.com", ["bob@inbox.example.org"])
            postfix.wait_for("sent")

    Everything it runs is ``postfix -c DIR ...`` (or ``postqueue -c``, ``sendmail -C``), so
    the same commands can be typed in a terminal.
    """

    def __init__(self, config_dir: str | os.PathLike, *, registry: Registry | None = None):
        self.config_dir = Path(config_dir).absolute()
        #: where the master is recorded the moment it starts (``labkit down`` reads it)
        self.registry = registry
        self._ours: tuple[int, int | None] | None = None  #: (pid, start time) of the master we started
        self._params: dict[str, str] = {}
        #: seconds from ``postfix start`` to the 220 greeting, after :meth:`start`
        self.start_seconds: float | None = None
        self._last_master: int | None = None  #: the master pid last seen (master.pid may go)

    def __repr__(self) -> str:
        return f"PostfixRunner({str(self.config_dir)!r})"

    # ------------------------------------------------------------------ what the config says
    def _tool(self, name: str) -> str:
        path = postfix_tool(name)
        if path is None:
            raise RealModeUnavailable(f"{name} is not installed here; {_HOW_TO_GET}")
        return path

    def parameter(self, name: str) -> str:
        """A main.cf parameter as Postfix reads it (``postconf -c DIR -h NAME``)."""
        if name not in self._params:
            proc = subprocess.run([self._tool("postconf"), "-c", str(self.config_dir), "-h", name],
                                  capture_output=True, text=True, timeout=30, check=False)
            if proc.returncode != 0:
                raise LabStateError(f"postconf -c {self.config_dir} -h {name} failed: {proc.stderr.strip()}; "
                                    "is there a main.cf in that folder? (PostfixConfig.write makes one)")
            self._params[name] = proc.stdout.strip()
        return self._params[name]

    @property
    def queue_directory(self) -> Path:
        return Path(self.parameter("queue_directory"))

    @property
    def maillog_file(self) -> Path | None:
        value = self.parameter("maillog_file")
        return Path(value) if value else None

    @property
    def listen(self) -> tuple[str, int]:
        """Host and port of the first SMTP server in master.cf (where readiness is checked)."""
        found = smtpd_listeners((self.config_dir / "master.cf").read_text())
        if not found:
            raise LabStateError(f"{self.config_dir / 'master.cf'} has no 'inet ... smtpd' service to wait for")
        addr, port = found[0]
        return (addr or "127.0.0.1", port)

    # ------------------------------------------------------------------ processes
    @property
    def master_pid_file(self) -> Path:
        """``QUEUE/pid/master.pid``: the master writes its pid there (and locks it) when it starts."""
        return self.queue_directory / "pid" / "master.pid"

    def _pid_in_file(self) -> int | None:
        try:
            text = self.master_pid_file.read_text().strip()
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None
        return int(text) if text.isdigit() and int(text) > 0 else None

    def master_pid(self) -> int | None:
        """The pid of the running master daemon, or None when this Postfix is not running.

        That is the pid in ``master.pid`` when a process with it is alive and is a Postfix
        ``master`` (a stale file from a crash can name a pid given to another program since).
        """
        pid = self._pid_in_file()
        if pid is None:
            return None
        info = proc_stat(pid)
        if info is None or info.zombie or info.name != "master":
            return None
        self._last_master = pid
        return pid

    def processes(self) -> list[tuple[int, str]]:
        """``(pid, command line)`` of every process of this configuration still alive.

        The master (the pid in ``master.pid``) leads a session of its own, and every daemon it
        starts (qmgr, pickup, smtpd...) belongs to that session (field 6 of
        ``/proc/PID/stat``); its descendants (by parent pid) count too. Daemons that outlive
        their master are still found: the kernel does not give a session's number to another
        process while a member of it lives.
        """
        pid = self._pid_in_file() or self._last_master
        if pid is None:
            return []
        leader = proc_stat(pid)
        if leader is not None and not leader.zombie and leader.name != "master":
            return []  # the pid belongs to another program now: this Postfix left nothing
        table = process_table()
        session = {p for p, info in table.items() if p == pid or info.session == pid}
        ours = descendants(table, session)  # with those that left the session (a pipe(8) command, say)
        # no command line: the process ended while we looked
        return live({p: table[p] for p in ours}, lambda _pid, _info, cmd: bool(cmd))

    # ------------------------------------------------------------------ the log
    def maillog_text(self) -> str:
        return self._read_log(self.maillog_file)

    def maillog_tail(self, lines: int = 15) -> str:
        """The last lines of the maillog (what a failing start explains itself with)."""
        path = self.maillog_file
        if path is None:
            return "(maillog_file is not set: Postfix logged to syslog)"
        text = self.maillog_text()
        if not text:
            return f"({path} is empty or missing)"
        return "\n".join(text.splitlines()[-lines:])

    def events(self) -> list[maillog.MaillogEvent]:
        """The maillog read back as structured events (see :mod:`labkit.real.postfix.maillog`)."""
        return maillog.parse(self.maillog_text())

    def wait_for(self, status: str, queue_id: str | None = None, timeout: float = 10,
                 **match: Any) -> maillog.MaillogEvent:
        """Wait for a delivery status line (``sent``, ``deferred``, ``bounced``...) and return it.

        ``queue_id`` and ``match`` (e.g. ``to="bob@inbox.example.org"``) narrow it down.
        """
        return self.wait_for_event("status", queue_id, timeout, status=status, **match)

    def wait_for_event(self, kind: str, queue_id: str | None = None, timeout: float = 10,
                       **match: Any) -> maillog.MaillogEvent:
        """Wait for the first maillog event of ``kind`` (and ``queue_id``, and ``match``).

        The log is read again every few milliseconds. Note the order Postfix logs in: the
        delivery agent's ``status=sent`` comes before qmgr's ``removed``, so wait for
        ``removed`` before expecting an empty queue. TimeoutError names what was awaited and
        shows the log's last lines.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = maillog.select(self.events(), kind, queue_id, **match)
            if found:
                return found[0]
            if time.monotonic() >= deadline:
                want = " ".join([kind, *(f"{k}={v}" for k, v in match.items())])
                want += f" for {queue_id}" if queue_id else ""
                raise TimeoutError(f"no {want} in {self.maillog_file} within {timeout} s; last lines:\n"
                                   + self.maillog_tail())
            time.sleep(0.01)

    # ------------------------------------------------------------------ start / reload / stop
    def _postfix(self, *args: str, timeout: float = 60, wrapper: Sequence[str] = ()) -> subprocess.CompletedProcess:
        return subprocess.run([*wrapper, self._tool("postfix"), "-c", str(self.config_dir), *args],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def _check_placement(self) -> None:
        for where in (self.config_dir, self.queue_directory):
            problem = sandbox_problem(where)
            if problem:
                raise ConfigError("sandbox", problem,
                                  "put the sandbox where every folder above it is 755 (e.g. under /var/lib or "
                                  "/srv), or, for folders your own sandbox made, use make_traversable()")

    def start(self, timeout: float = 10, *, wrapper: Sequence[str] = ()) -> PostfixRunner:
        """``postfix -c DIR start``, then wait until every SMTP service of master.cf answers.

        The first service must greet with 220; every other one must accept a connection (one in
        ``smtpd_tls_wrappermode`` waits for the TLS handshake before it greets). A master this
        runner did not start is never taken over: :class:`LabRunningError` names it and the
        command that stops it. ``wrapper`` is a command that runs ``postfix -c DIR start`` as its
        last arguments, for example ``unshare --mount ...`` to start Postfix in a mount namespace of
        its own (its daemons stay there until it stops). Raises :class:`StartError` with the maillog's last lines if the
        services do not answer in time, after stopping whatever had started. When the queue
        exists from an earlier run, ``QUEUE/quick-start`` tells postfix-script to skip its
        integrity check (which only repeats what :meth:`PostfixConfig.check` did), making
        the start about three times faster.
        """
        require_postfix()
        if not (self.config_dir / "main.cf").is_file():
            raise LabStateError(f"no main.cf in {self.config_dir}; write one with PostfixConfig.write()")
        self._check_placement()
        running = self.master_pid()
        if running is not None:
            if self._ours == (running, start_time(running)):
                return self
            raise LabRunningError(f"a Postfix master of {self.config_dir} is already running (pid {running}: "
                                  f"{cmdline(running) or 'master'}) and this runner did not start it; "
                                  f"stop it with: postfix -c {self.config_dir} stop")
        queue = self.queue_directory
        if (queue / "pid").is_dir() and (queue / "active").is_dir():
            (queue / "quick-start").touch()
        began = time.monotonic()
        try:
            proc = self._postfix("start", timeout=timeout + 30, wrapper=wrapper)
            master = self.master_pid()
            if master is not None:  # recorded at once: whatever happens to us now, `labkit down` finds it
                self._ours = (master, start_time(master))
                if self.registry is not None:
                    self.registry.record("postfix", master, f"postfix -c {self.config_dir} stop")
            if proc.returncode != 0:
                said = " ".join(proc.stderr.split()) or f"exit status {proc.returncode}"
                raise StartError(f"postfix -c {self.config_dir} start failed: {said}\n"
                                 f"last lines of {self.maillog_file}:\n{self.maillog_tail()}")
            self._wait_ready(began + timeout)
        except BaseException:
            self.stop()  # nothing is left after a failed start
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _wait_ready(self, deadline: float) -> bytes:
        """Wait until the first SMTP service greets with 220 and every other one accepts."""
        banner = self._wait_banner(deadline)
        listeners = smtpd_listeners((self.config_dir / "master.cf").read_text())[1:]
        for addr, port in listeners:
            host = addr or "127.0.0.1"
            while True:
                try:
                    with socket.create_connection((host, port), timeout=0.5):
                        break
                except OSError as e:
                    if time.monotonic() >= deadline or self.master_pid() is None:
                        raise StartError(f"Postfix ({self.config_dir}) does not accept connections on "
                                         f"{host}:{port} ({e}), a service its master.cf promises; last lines of "
                                         f"{self.maillog_file}:\n{self.maillog_tail()}") from None
                time.sleep(0.005)
        return banner

    def _wait_banner(self, deadline: float) -> bytes:
        """Connect to the first SMTP server until it greets with 220 (then say QUIT politely)."""
        host, port = self.listen
        last = ""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StartError(f"Postfix ({self.config_dir}) did not answer 220 on {host}:{port} in time "
                                 f"({last or 'no answer'}); last lines of {self.maillog_file}:\n"
                                 f"{self.maillog_tail()}\nTry a longer timeout, or fix what the log says.")
            try:
                with socket.create_connection((host, port), timeout=max(left, 0.05)) as s:
                    s.settimeout(max(left, 0.05))
                    with s.makefile("rb") as reader:
                        banner = reader.readline()
                    if banner.startswith(b"220"):
                        s.sendall(b"QUIT\r\n")
                        s.recv(512)
                        return banner
                    last = f"it said {banner[:80]!r}"
            except OSError as e:
                last = str(e)
                if self.master_pid() is None:
                    raise StartError(f"Postfix ({self.config_dir}) is not running after start; last lines of "
                                     f"{self.maillog_file}:\n{self.maillog_tail()}") from None
            time.sleep(0.005)

    def reload(self, settle: float = 5) -> None:
        """``postfix -c DIR reload``: daemons re-read main.cf and master.cf (the queue stays).

        ``reload`` returns while daemons started before it may still take one more connection
        with the old configuration; this waits (up to ``settle`` seconds) until they have gone,
        so what comes next meets the new settings. ``settle=0`` returns at once.
        """
        if not self.running:
            raise LabNotRunning(f"Postfix ({self.config_dir}) is not running; start() it first")
        master = self.master_pid()
        old = {pid for pid, _ in self.processes()} - {master}
        self._params.clear()
        proc = self._postfix("reload")
        if proc.returncode != 0:
            raise StartError(f"postfix -c {self.config_dir} reload failed: {proc.stderr.strip()}\n"
                             f"{self.maillog_tail()}")
        deadline = time.monotonic() + settle
        while old and time.monotonic() < deadline:
            old &= {pid for pid, _ in self.processes()}
            time.sleep(0.01)

    def stop(self, timeout: float = 10) -> None:
        """``postfix -c DIR stop``, then wait until no process of this configuration is left.

        Safe to call twice, and after a failed start. ``postfix stop`` signals the master, which
        ends its children; it is run whenever ``master.pid`` names a live process (``postfix
        stop`` itself checks the master's lock, so it never signals anything else). Daemons whose
        master is gone (killed with ``kill -9``) are members of its session: they get SIGTERM,
        and SIGKILL after ``timeout`` seconds.
        """
        pid = self._pid_in_file()
        if pid is not None and pid_alive(pid) and self.master_pid() is not None:
            proc = self._postfix("stop")
            if proc.returncode != 0 and self.running:
                raise LabStateError(f"postfix -c {self.config_dir} stop failed: {proc.stderr.strip()}; "
                                    f"try: postfix -c {self.config_dir} abort")
        elif self.processes():  # the master is gone; its daemons end on their own, or now
            for orphan, _cmd in self.processes():
                send_signal(orphan, signal.SIGTERM)
        left = wait_gone(self.processes, timeout, kill=True)
        if left:
            raise LabStateError(f"Postfix ({self.config_dir}) still has processes after SIGKILL: "
                                f"{describe(left)}; try: postfix -c {self.config_dir} abort")
        self._ours = None
        if self.registry is not None:
            self.registry.forget("postfix")

    # ------------------------------------------------------------------ mail and queue
    def sendmail(self, message: bytes, sender: str, recipients: Iterable[str], timeout: float = 10) -> str | None:
        """Submit ``message`` with Postfix's ``sendmail -C DIR``; return its queue id if logged.

        ``sendmail`` hands the message to postdrop; pickup then gives it a queue id and logs
        ``QUEUEID: uid=0 from=<sender>``. That line is awaited (briefly) to return the id.
        """
        recipients = list(recipients)
        for value in (sender, *recipients):
            if value.startswith("-") or any(c in value for c in "\r\n\0"):
                raise ConfigError("recipients" if value != sender else "sender", f"{value!r} is not an address")
        seen = {e.queue_id for e in self.events() if e.kind == "queued"}
        proc = subprocess.run([self._tool("sendmail"), "-C", str(self.config_dir), "-i", "-f", sender, "--",
                               *recipients], input=message, capture_output=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise StartError(f"sendmail -C {self.config_dir} failed: {proc.stderr.decode(errors='replace').strip()}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events():
                if e.kind == "queued" and e.program == "pickup" and e.queue_id not in seen:
                    return e.queue_id
            time.sleep(0.01)
        return None

    def queue(self) -> list[QueueEntry]:
        """The messages waiting in the queue (``postqueue -c DIR -j``)."""
        proc = subprocess.run([self._tool("postqueue"), "-c", str(self.config_dir), "-j"],
                              capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode != 0:
            raise LabNotRunning(f"postqueue -c {self.config_dir} -j failed: {proc.stderr.strip()} "
                                "(the queue can be listed only while Postfix runs)")
        return parse_postqueue_json(proc.stdout)

    def flush(self) -> None:
        """Try every deferred message again now (``postqueue -c DIR -f``)."""
        proc = subprocess.run([self._tool("postqueue"), "-c", str(self.config_dir), "-f"],
                              capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode != 0:
            raise LabNotRunning(f"postqueue -c {self.config_dir} -f failed: {proc.stderr.strip()}")
