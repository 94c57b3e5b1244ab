"""Start and stop a real Dovecot from the lab's sandbox, and read its log.

``dovecot -F -c CONF`` runs Dovecot's master in the foreground as a child of the lab; the
master starts everything else (imap-login, imap, pop3, lmtp, auth...) as its own children.
What this module handles for you (each a trap when done by hand, FIELD-NOTES.md):

- "Started" means the IMAP listener greets with ``* OK``: :meth:`DovecotRunner.start` connects
  until it does, and if Dovecot exits first (a port taken, a bad setting), the
  :class:`labkit.errors.StartError` carries Dovecot's own lines.
- Dovecot reads and writes mail as user ``mail`` (it refuses root), while the lab's embedded
  code wrote the Maildirs as root: :meth:`DovecotRunner.start` hands the mail tree over again.
- On SIGTERM the master waits for its mail processes, and one with a client still connected
  can take its time: :meth:`DovecotRunner.stop` ends the master's children too, kills after a
  bound, and proves that no process of this instance is left.
- Finding those processes: a container's root may not read another user's
  ``/proc/PID/environ``, so they are found by parent pid (``/proc/PID/stat``) and by the
  process title Dovecot gives them, ``dovecot-INSTANCE/imap``, which names the instance.
"""
from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Self

from ...errors import LabRunningError, LabStateError, RealModeUnavailable, StartError
from ..procs import (DaemonRunner, ProcStat, Registry, cmdline, describe, live, proc_stat, process_table,
                     send_signal, wait_gone)
from .config import _HOW_TO_GET, chown_tree, dovecot_tool

#: The commands real mode uses.
REQUIRED_TOOLS = ("dovecot", "doveconf", "doveadm")
#: The system users Dovecot runs as (made by the Dovecot packages).
REQUIRED_USERS = ("mail", "dovecot", "dovenull")
#: The programs of the protocols the lab uses (dovecot-imapd, dovecot-pop3d, dovecot-lmtpd).
REQUIRED_PROGRAMS = {"imap": "dovecot-imapd", "pop3": "dovecot-pop3d", "lmtp": "dovecot-lmtpd"}


def require_dovecot() -> None:
    """Raise :class:`RealModeUnavailable` with one line saying what is missing and how to get it."""
    missing = [t for t in REQUIRED_TOOLS if dovecot_tool(t) is None]
    if missing:
        raise RealModeUnavailable(f"real Dovecot is not installed here (missing: {', '.join(missing)}); {_HOW_TO_GET}")
    libexec = Path(_libexec_dir())
    lacking = [pkg for prog, pkg in REQUIRED_PROGRAMS.items() if not (libexec / prog).exists()]
    if lacking:
        raise RealModeUnavailable(f"Dovecot is installed without {', '.join(lacking)} (no "
                                  f"{', '.join(p for p in REQUIRED_PROGRAMS if not (libexec / p).exists())} in "
                                  f"{libexec}); {_HOW_TO_GET}")
    for user in REQUIRED_USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise RealModeUnavailable(f"there is no user {user!r} on this machine (the Dovecot packages make it); "
                                      f"{_HOW_TO_GET}") from None
    if os.geteuid() != 0:
        raise RealModeUnavailable(f"real Dovecot must be started as root (it then runs as users mail, dovecot and "
                                  f"dovenull) and this process runs as uid {os.geteuid()}; run the lab as root, "
                                  "or in the lab's docker image (docker/)")


def _libexec_dir() -> str:
    exe = dovecot_tool("doveconf")
    if exe is not None:
        proc = subprocess.run([exe, "-c", "/dev/null", "-h", "libexec_dir"], capture_output=True, text=True,
                              timeout=30, check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    return "/usr/lib/dovecot"


class DovecotRunner(DaemonRunner):
    """One Dovecot instance, named by its configuration file.

    ::

        cfg = DovecotConfig.for_lab(lab.ctx)
        cfg.write()
        with DovecotRunner(cfg.conf_path) as dovecot:
            ...   # IMAP on cfg.imap_port, LMTP on cfg.lmtp_port
        # stopped: no process of this instance is left

    What it runs can be typed in a terminal: ``dovecot -F -c CONF``, ``doveadm -c CONF stop``.
    """

    def __init__(self, conf_path: str | os.PathLike, *, ready_timeout: float = 10,
                 registry: Registry | None = None):
        self.conf_path = Path(conf_path).absolute()
        #: where the master is recorded the moment it starts (``labkit down`` reads it)
        self.registry = registry
        self.ready_timeout = ready_timeout
        self._proc: subprocess.Popen | None = None
        self._settings: dict[str, str] = {}
        #: seconds from launching ``dovecot -F`` to IMAP's ``* OK`` greeting, after :meth:`start`
        self.start_seconds: float | None = None
        #: seconds :meth:`stop` took until no process was left
        self.stop_seconds: float | None = None

    def __repr__(self) -> str:
        return f"DovecotRunner({str(self.conf_path)!r})"

    # ------------------------------------------------------------------ what the config says
    def setting(self, name: str) -> str:
        """A setting as Dovecot reads it (``doveconf -c CONF -h NAME``), e.g. ``base_dir`` or
        ``service/imap-login/inet_listener/imap/port``."""
        if name not in self._settings:
            exe = dovecot_tool("doveconf")
            if exe is None:
                raise RealModeUnavailable(f"doveconf is not installed here; {_HOW_TO_GET}")
            if not self.conf_path.is_file():
                raise LabStateError(f"no {self.conf_path}; write it with DovecotConfig.write()")
            proc = subprocess.run([exe, "-c", str(self.conf_path), "-h", name], capture_output=True, text=True,
                                  timeout=30, check=False)
            if proc.returncode != 0:
                raise LabStateError(f"doveconf -c {self.conf_path} -h {name} failed: {' '.join(proc.stderr.split())}")
            self._settings[name] = proc.stdout.strip()
        return self._settings[name]

    @property
    def base_dir(self) -> Path:
        return Path(self.setting("base_dir"))

    @property
    def log_path(self) -> Path | None:
        value = self.setting("log_path")
        return Path(value) if value.startswith("/") else None

    @property
    def instance_name(self) -> str:
        return self.setting("instance_name")

    @property
    def address(self) -> str:
        """Where the listeners are (the first address of ``listen``)."""
        value = self.setting("listen").replace(",", " ").split()
        return value[0] if value and value[0] not in ("*", "::") else "127.0.0.1"

    def port(self, listener: str = "imap") -> int:
        """The port of a listener: ``imap``, ``imaps``, ``pop3``, ``pop3s``, ``lmtp``, ``auth``."""
        service = {"imap": "imap-login", "imaps": "imap-login", "pop3": "pop3-login", "pop3s": "pop3-login",
                   "lmtp": "lmtp", "auth": "auth"}[listener]
        name = "auth-postfix" if listener == "auth" else listener
        value = self.setting(f"service/{service}/inet_listener/{name}/port")
        if not value.isdigit() or value == "0":
            raise LabStateError(f"{self.conf_path} has no {listener} listener on a port")
        return int(value)

    @property
    def mail_root(self) -> Path | None:
        """The folder above every ``%`` of ``mail_location`` (the lab's SANDBOX/mail)."""
        location = self.setting("mail_location").partition(":")[2].split(":")[0]
        root = location.split("%")[0].rstrip("/")
        return Path(root) if root.startswith("/") else None

    # ------------------------------------------------------------------ processes
    def master_pid(self) -> int | None:
        """The pid of this instance's running master process, or None."""
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        try:
            text = (self.base_dir / "master.pid").read_text().strip()
        except (FileNotFoundError, NotADirectoryError, LabStateError, RealModeUnavailable):
            return None
        if not text.isdigit():
            return None
        pid = int(text)
        info = proc_stat(pid)
        if info is None or info.zombie or str(self.conf_path) not in cmdline(pid):
            return None  # a stale pid file, or the number now belongs to someone else
        return pid

    def processes(self) -> list[tuple[int, str]]:
        """``(pid, command line)`` of every live process of this instance.

        The master (ours, or the one in ``base_dir/master.pid``), its children (by the parent
        pid in /proc/PID/stat), and any process titled ``dovecot-INSTANCE/...`` (a child
        whose master has already gone has another parent).
        """
        master = self.master_pid()
        try:
            name = self.instance_name
            prefixes: tuple[str, ...] = (f"dovecot-{name}/", f"{name}/") if name and name != "dovecot" else ()
        except LabStateError:  # the file is gone or broken: the master's family is all we know
            prefixes = ()

        def ours(pid: int, info: ProcStat, cmd: str) -> bool:
            return pid == master or (master is not None and info.ppid == master) or \
                bool(prefixes and cmd.startswith(prefixes))
        return live(process_table(), ours)

    # ------------------------------------------------------------------ the log
    def log_text(self) -> str:
        return self._read_log(self.log_path)

    def log_lines(self, last: int | None = None) -> list[str]:
        """Dovecot's log lines (the last ``last`` of them), with what it said on stderr at start."""
        lines = self.log_text().splitlines()
        out = self._stderr_path()
        if out.exists():
            lines += [f"(stderr) {line}" for line in out.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-last:] if last else lines

    def deliveries(self) -> list[dict[str, str]]:
        """Every message LMTP filed, from the log: ``{"to", "msgid", "folder", "session", "line"}``.

        Dovecot logs ``lmtp(alice@example.com)<PID><SESSION>: Info: msgid=<...>: saved mail to
        INBOX`` for each recipient; this is real mode's counterpart of the embedded MDA's
        ``delivered`` event.
        """
        out = []
        for line in self.log_text().splitlines():
            m = _SAVED.search(line)
            if m:
                out.append({"to": m["to"], "msgid": m["msgid"], "folder": m["folder"], "session": m["session"],
                            "line": line})
        return out

    def wait_for_delivery(self, to: str | None = None, *, msgid: str | None = None, count: int = 1,
                          timeout: float = 10) -> list[dict[str, str]]:
        """Wait until LMTP has filed ``count`` messages (for ``to``, with ``msgid``); return them."""
        deadline = time.monotonic() + timeout
        while True:
            found = [d for d in self.deliveries() if (to is None or d["to"] == to.lower())
                     and (msgid is None or d["msgid"] == msgid)]
            if len(found) >= count:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"Dovecot filed {len(found)} message(s) for {to or 'anyone'}, not {count}, "
                                   f"within {timeout} s; last lines of its log:\n" + "\n".join(self.log_lines(10)))
            time.sleep(0.01)

    def _stderr_path(self) -> Path:
        log = self.log_path
        return (log.parent if log else self.conf_path.parent) / "dovecot.stderr"

    # ------------------------------------------------------------------ start / stop
    def hand_over_mail(self) -> None:
        """Give the mail tree to ``mail_uid``: anything a root process wrote there since the last time."""
        root = self.mail_root
        user = self.setting("mail_uid")
        if root is None or not root.is_dir() or not user:
            return
        try:
            pw = pwd.getpwnam(user) if not user.isdigit() else pwd.getpwuid(int(user))
        except KeyError:
            raise StartError(f"mail_uid = {user} in {self.conf_path} is no user on this machine") from None
        chown_tree(root, pw.pw_uid, pw.pw_gid)

    def start(self) -> Self:
        """``dovecot -F -c CONF``; return when IMAP greets ``* OK``. Safe to call twice."""
        require_dovecot()
        if self._proc is not None and self._proc.poll() is None:
            return self
        other = self.master_pid()
        if other is not None:
            raise LabRunningError(f"a Dovecot of {self.conf_path} is already running (pid {other}); "
                                  f"stop it with: doveadm -c {self.conf_path} stop")
        self._settings.clear()  # read the file again: it may have been rewritten since
        address, port = self.address, self.port("imap")
        _ = self.instance_name, self.base_dir, self.log_path  # known even if the file breaks later
        self.hand_over_mail()
        log = self.log_path
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with open(self._stderr_path(), "wb") as err:
            # a session of its own: a Ctrl-C meant for the notebook or pytest does not reach it
            self._proc = subprocess.Popen([dovecot_tool("dovecot") or "dovecot", "-F", "-c", str(self.conf_path)],
                                          stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        if self.registry is not None:
            self.registry.record("dovecot", self._proc.pid, f"doveadm -c {self.conf_path} stop")
        deadline = began + self.ready_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                self.stop()  # anything the master started before it gave up
                raise StartError(f"Dovecot ({self.conf_path}) exited with status {code} while starting; it said:\n"
                                 + ("\n".join(self.log_lines(15)) or "(nothing)"))
            greeting = _greeting(address, port)
            if greeting.startswith(b"* OK"):
                self.start_seconds = time.monotonic() - began
                return self
            if time.monotonic() >= deadline:
                self.stop()
                raise StartError(f"Dovecot ({self.conf_path}) did not greet on {address}:{port} within "
                                 f"{self.ready_timeout} s; last lines of its log:\n" + "\n".join(self.log_lines(15)))
            time.sleep(0.01)

    def stop(self, timeout: float = 5) -> None:
        """Stop this instance and make sure no process of it is left. Safe to call twice.

        SIGTERM to the master and, at once, to its children: a mail process with a client
        still connected would otherwise keep the master waiting (about 10 s). Whatever is
        still there after ``timeout`` seconds is killed (SIGKILL); then every process is gone,
        or :class:`LabStateError` names those left.
        """
        began = time.monotonic()
        for pid, _cmd in self.processes():
            send_signal(pid, signal.SIGTERM)
        left = wait_gone(self.processes, timeout, kill=True, kill_wait=5, before_each=self._reap, began=began)
        if left:
            raise LabStateError(f"Dovecot ({self.conf_path}) still has processes after SIGKILL: {describe(left)}")
        if self._proc is not None:
            self._proc.wait(timeout=5)
            self._proc = None
        if self.registry is not None:
            self.registry.forget("dovecot")
        self.stop_seconds = time.monotonic() - began

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None  # reaped

    # ------------------------------------------------------------------ doveadm
    def doveadm(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """``doveadm -c CONF ARGS...`` (e.g. ``"mailbox", "list", "-u", "alice@example.com"``)."""
        exe = dovecot_tool("doveadm")
        if exe is None:
            raise RealModeUnavailable(f"doveadm is not installed here; {_HOW_TO_GET}")
        return subprocess.run([exe, "-c", str(self.conf_path), *args], capture_output=True, text=True,
                              timeout=timeout, check=False)

    def status(self) -> dict[str, Any]:
        """A JSON-ready summary: running, pid, conf, log, instance and processes."""
        return {"running": self.running, "pid": self.master_pid(), "conf": str(self.conf_path),
                "log": str(self.log_path) if self.log_path else None, "instance": self.instance_name,
                "processes": [cmd for _pid, cmd in self.processes()]}


_SAVED = re.compile(r"lmtp\((?P<to>[^)]+)\)<\d+><(?P<session>[^>]*)>: Info: msgid=(?P<msgid>.*?): "
                    r"saved mail to (?P<folder>.+)$")


def _greeting(address: str, port: int) -> bytes:
    """The first line a server sends, or b'' if it does not answer yet."""
    try:
        with socket.create_connection((address, port), timeout=1) as s:
            s.settimeout(1)
            data = b""
            while not data.endswith(b"\n") and len(data) < 1024:
                chunk = s.recv(1024)
                if not chunk:
                    break
                data += chunk
            try:
                s.sendall(b"x LOGOUT\r\n")  # leave politely: no "Disconnected" warning in the log
            except OSError:
                pass
            return data
    except OSError:
        return b""
