"""Start and stop a real OpenDKIM from the lab's sandbox, test its keys, and read its log.

``opendkim -f -x CONF`` runs the filter in the foreground as a child of the lab: it listens on
the milter socket of its configuration (a unix socket, or TCP on loopback), and Postfix connects
to it for each message (``smtpd_milters``). What this module handles for you (each a trap when
done by hand, FIELD-NOTES.md):

- Started means the milter socket accepts a connection: :meth:`OpenDKIMRunner.start` waits for
  that. With port 0 in the configuration it picks a free port itself just before the start and
  hands it over with ``-p inet:PORT@ADDRESS`` (which overrides ``Socket``): the port is known
  without looking into the daemon's ``/proc/PID/fd``, which a container's root may not read
  once OpenDKIM has become user opendkim. A unix socket (``Socket local:PATH``) is known by its
  path; one left behind by a killed OpenDKIM is removed first.
- Prefer the unix socket with Postfix: over loopback TCP each message waits about 80 ms, as
  Nagle's algorithm holds a small milter packet until the peer's delayed ACK of the previous one
  (which gets no reply) arrives, once in each direction (see :mod:`labkit.real.opendkim.config`).
- OpenDKIM logs only through syslog(3): the runner catches those lines
  (:mod:`labkit.real.opendkim.syslog`) and gives them back as events.
- On SIGTERM OpenDKIM waits until its listener's next wake-up (up to about 5 s) before it
  exits. :meth:`OpenDKIMRunner.stop` wakes it at once by connecting to the socket, so a clean
  stop takes milliseconds; after a bound it kills, and it proves that no process is left.
- ``opendkim-testkey`` exits 0 even when a key fails, and says "key not secure" about DNSSEC,
  not about the key: :func:`testkey` reads its words and says what they mean.
"""
from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Any, Self

from ...errors import ConfigError, LabStateError, RealModeUnavailable, StartError
from ...result import Result
from ..procs import DaemonRunner, Registry, describe, pids, wait_gone
from .config import _HOW_TO_GET, local_socket_path, opendkim_tool, parse_socket, read_conf
from .syslog import OpenDKIMEvent, SyslogCatcher

#: The commands real mode uses.
REQUIRED_TOOLS = ("opendkim", "opendkim-genkey", "opendkim-testkey")

#: Run in a private mount namespace: /dev becomes a small tmpfs with the few devices a daemon
#: needs and /dev/log a link to the sandbox's syslog socket. Arguments: $1 the socket, then the
#: command. Nothing outside the namespace sees the change.
_NAMESPACE_SCRIPT = (
    'set -e; mount -t tmpfs -o mode=0755,size=64k,nosuid mail-lab-dev /dev; '
    'mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; '
    'mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9; '
    'ln -s /proc/self/fd /dev/fd; ln -s "$1" /dev/log; shift; exec "$@"')

_namespace_ok: tuple[bool, str] | None = None


def require_opendkim() -> None:
    """Raise :class:`RealModeUnavailable` with one line saying what is missing and how to get it."""
    missing = [t for t in REQUIRED_TOOLS if opendkim_tool(t) is None]
    if missing:
        raise RealModeUnavailable(f"real OpenDKIM is not installed here (missing: {', '.join(missing)}); {_HOW_TO_GET}")
    if os.geteuid() != 0:
        raise RealModeUnavailable(f"real OpenDKIM must be started as root (it then runs as user opendkim) and this "
                                  f"process runs as uid {os.geteuid()}; run the lab as root, or in the docker image")
    try:
        pwd.getpwnam("opendkim")
    except KeyError:
        raise RealModeUnavailable(f"there is no user 'opendkim' on this machine; {_HOW_TO_GET}") from None


def namespace_available() -> tuple[bool, str]:
    """Can OpenDKIM be started in a private mount namespace (for its own /dev/log)? And why not.

    Asked once per process: ``unshare`` must exist and the kernel must let us mount (root with
    CAP_SYS_ADMIN; a default docker container does not have it).
    """
    global _namespace_ok
    if _namespace_ok is None:
        exe = opendkim_tool("unshare")
        if exe is None:
            _namespace_ok = (False, "unshare (util-linux) is not installed")
        elif os.geteuid() != 0:
            _namespace_ok = (False, "a mount namespace needs root")
        else:
            try:
                proc = subprocess.run([exe, "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
                                       _NAMESPACE_SCRIPT, "sh", "/nonexistent/probe.sock", "/bin/true"],
                                      capture_output=True, text=True, timeout=20, check=False)
                _namespace_ok = (proc.returncode == 0, " ".join(proc.stderr.split()) or f"exit status {proc.returncode}")
            except (OSError, subprocess.TimeoutExpired) as e:
                _namespace_ok = (False, str(e))
    return _namespace_ok


# --------------------------------------------------------------------------------------------
# opendkim-testkey and opendkim -t, read


def parse_testkey(output: str, record_name: str = "") -> Result:
    """What ``opendkim-testkey -vvv`` said, as a :class:`Result` with the reason (pure).

    "key OK" passes. "key not secure" is a note, not a failure: the DNS answer was not signed
    with DNSSEC (the lab's zones are not), which says nothing about the key itself.
    """
    lines = [re.sub(r"^opendkim-testkey: ", "", line).strip() for line in output.splitlines() if line.strip()]
    details: dict[str, Any] = {"output": lines, "record_name": record_name}
    insecure = any("not secure" in line for line in lines)
    details["dnssec"] = "insecure" if insecure else "unknown"
    warnings = [line for line in lines if "WARNING" in line]
    details["warnings"] = warnings
    summary = next((line for line in lines if re.search(r"\d+ keys? checked", line)), None)
    ok_line = next((line for line in lines if re.search(r"key( \S+:)? OK$", line)), None)
    errors = []
    for line in lines:
        if "record not found" in line:
            errors.append(f"no TXT record is published at {record_name or 'the key name'} ({line})")
        elif "query timed out" in line:
            errors.append(f"the DNS did not answer ({line}); is the lab DNS running, and resolver.conf pointing at it?")
        elif "unexpected reply" in line:
            errors.append(f"the DNS gave no TXT record for {record_name or 'the key'} ({line}); is the domain "
                          "one of the lab's zones?")
        elif "keys do not match" in line or "key mismatch" in line:
            errors.append("the published public key does not belong to the private key in the KeyTable "
                          f"({line}); publish the record made with this key")
        elif re.search(r"(?i)error|invalid|syntax|can't|cannot|failed|not found", line) and "not secure" not in line:
            errors.append(line)
    if summary:
        m = re.search(r"(\d+) pass, (\d+) fail", summary)
        if m and int(m.group(2)) > 0 and not errors:
            errors.append(summary)
        details["summary"] = summary
    if errors or not ok_line:
        reason = "; ".join(dict.fromkeys(errors)) or ("opendkim-testkey did not say key OK: " + (" | ".join(lines) or "no output"))
        return Result(False, reason, details)
    note = (" (OpenDKIM adds 'key not secure': the DNS answer was not DNSSEC-signed, as lab zones are not; "
            "that is about DNS, not the key)") if insecure else ""
    warn = f"; warnings: {' | '.join(warnings)}" if warnings else ""
    return Result(True, f"opendkim-testkey: key OK at {record_name or 'the key name'}{note}{warn}", details)


def testkey(conf_path: str | os.PathLike, domain: str | None = None, selector: str | None = None, *,
            key_path: str | os.PathLike | None = None, timeout: float = 30) -> Result:
    """The memo's ``opendkim-testkey -d DOMAIN -s SELECTOR -vvv``, with ``-x CONF``.

    The configuration's ``ResolverConfiguration`` sends the question to the lab DNS. With
    ``domain`` and ``selector`` the key's private half is found in the KeyTable (or given as
    ``key_path``) and compared with the published one; with neither, every KeyTable key is tested.
    """
    exe = opendkim_tool("opendkim-testkey")
    if exe is None:
        raise RealModeUnavailable(f"opendkim-testkey is not installed here; {_HOW_TO_GET}")
    conf_path = Path(conf_path)
    if not conf_path.is_file():
        raise LabStateError(f"no {conf_path}; write it with OpenDKIMConfig.write()")
    if (domain is None) != (selector is None):
        raise ConfigError("selector" if selector is None else "domain", "give both domain and selector, or neither")
    args = [exe, "-x", str(conf_path)]
    record_name = ""
    if domain is not None and selector is not None:
        for name, value in (("domain", domain), ("selector", selector)):
            if not re.fullmatch(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?", value or ""):
                raise ConfigError(name, f"{value!r} is not a DNS name")
        record_name = f"{selector}._domainkey.{domain}"
        args += ["-d", domain, "-s", selector]
        if key_path is None:
            key_path = _key_from_table(conf_path, record_name)
        if key_path is not None:
            args += ["-k", os.fspath(key_path)]
    args.append("-vvv")
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Result(False, f"opendkim-testkey did not finish within {timeout} s (the DNS does not answer?)",
                      {"record_name": record_name, "output": []})
    result = parse_testkey(proc.stdout + proc.stderr, record_name)
    result.details.update(returncode=proc.returncode, command=" ".join(args))
    return result


def _key_from_table(conf_path: Path, record_name: str) -> str | None:
    conf = read_conf(conf_path.read_text())
    table = conf.get("KeyTable", "").removeprefix("file:")
    if not table or not os.path.isfile(table):
        return None
    for line in Path(table).read_text().splitlines():
        cols = line.split("#", 1)[0].split()
        if len(cols) == 2 and cols[0] == record_name:
            parts = cols[1].split(":", 2)
            if len(parts) == 3 and parts[2].startswith("/"):
                return parts[2]
    return None


def parse_test_mode(output: str) -> Result:
    """What ``opendkim -t FILE`` said about a message, as a :class:`Result` (pure)."""
    lines = [line.strip() for line in output.splitlines() if line.strip() and not line.startswith("###")]
    details: dict[str, Any] = {"output": lines}
    for line in lines:
        m = re.search(r"verification \(s=(?P<s>[^,\s]+),? d=(?P<d>[^,\s]+),? (?P<bits>\d+)-bit key[^)]*\) "
                      r"(?P<outcome>succeeded|failed)(?:: (?P<why>.*))?", line)
        if m:
            details.update(selector=m.group("s"), domain=m.group("d"), key_bits=int(m.group("bits")))
            if m.group("outcome") == "succeeded":
                return Result(True, f"OpenDKIM verified the signature of {m.group('d')} (selector {m.group('s')})",
                              details)
            why = (m.group("why") or "").strip()
            details["why"] = why
            return Result(False, f"OpenDKIM could not verify the signature of {m.group('d')} "
                          f"(selector {m.group('s')}): {why or 'failed'}", details)
    if any("no signature" in line.lower() or "not signed" in line.lower() for line in lines):
        return Result(False, "the message carries no DKIM-Signature", details)
    return Result(False, "OpenDKIM said nothing about a signature: " + (" | ".join(lines) or "no output"), details)


# --------------------------------------------------------------------------------------------
# Processes and ports


def _argv(pid: int) -> list[str]:
    """The arguments of process ``pid``, one by one ([] when it is gone or a zombie). The runner
    matches its configuration file against a whole argument, which the joined line of
    :func:`labkit.real.procs.cmdline` cannot tell apart from a part of one."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []


def listening_ports(pid: int) -> list[tuple[str, int]]:
    """``(address, port)`` of the TCP sockets process ``pid`` listens on (from /proc).

    It reads ``/proc/PID/fd``: for a process of another user that needs CAP_SYS_PTRACE, which
    a container's root lacks (then the answer is ``[]``). The runner does not depend on it.
    """
    inodes = set()
    try:
        for fd in os.scandir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return []
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) < 10 or cols[3] != "0A" or cols[9] not in inodes:
                continue
            hexaddr, hexport = cols[1].split(":")
            if v6:
                addr = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(hexaddr)[::-1] if len(hexaddr) == 8 else
                                        b"".join(bytes.fromhex(hexaddr[i:i + 8])[::-1] for i in range(0, 32, 8)))
            else:
                addr = socket.inet_ntoa(bytes.fromhex(hexaddr)[::-1])
            found.append((addr, int(hexport, 16)))
    return found


# --------------------------------------------------------------------------------------------
# The runner


class OpenDKIMRunner(DaemonRunner):
    """One OpenDKIM filter, named by its configuration file.

    ::

        with OpenDKIMRunner(cfg.write()) as opendkim:
            postfix_cfg = dataclasses.replace(postfix_cfg, **milter_fields(opendkim.milter))
            ...
            opendkim.wait_for_log("signed", domain="example.com")

    ``log``: where OpenDKIM's syslog lines go. ``"auto"`` (a private mount namespace whose
    /dev/log leads to ``syslog.sock`` in the sandbox; else /dev/log itself when nothing holds
    it; else nowhere), or one of ``"namespace"``, ``"dev-log"``, ``"none"``.
    ``events``/``host``: a :class:`labkit.net.events.EventLog` that also receives every log line
    (kind ``opendkim-<kind>``, role ``opendkim``) as coming from lab host ``host``.
    """

    def __init__(self, conf_path: str | os.PathLike, *, log: str = "auto", events: Any = None,
                 host: str = "mail.example.com", registry: Registry | None = None):
        if log not in ("auto", "namespace", "dev-log", "none"):
            raise ConfigError("log", f"{log!r} is not auto, namespace, dev-log or none")
        self.conf_path = Path(conf_path).absolute()
        self.log = log
        self._events_log = events
        self.host_name = host
        #: where the process is recorded the moment it starts (``labkit down`` reads it)
        self.registry = registry
        self._proc: subprocess.Popen | None = None
        self._catcher: SyslogCatcher | None = None
        self._stderr_file = None
        self.port: int | None = None  #: the milter port, known after start() (None for a unix socket)
        self.address: str | None = None  #: the milter address (None for a unix socket)
        self.socket_path: str | None = None  #: the unix socket's path, after start() (None for TCP)
        self.log_mode: str | None = None  #: how the log is caught, after start()
        self.log_note: str = ""  #: why the log mode is what it is
        self.start_seconds: float | None = None
        self.stop_seconds: float | None = None
        #: what the last stop did: "sigterm" (clean) or "sigkill" (it had to be killed)
        self.stopped_by: str | None = None
        self._kept_events: list[OpenDKIMEvent] = []  #: the log of the last run, after stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}, {self.milter}" if self.running else "stopped"
        return f"OpenDKIMRunner({str(self.conf_path)!r}, {state})"

    # ------------------------------------------------------------------ the configuration
    def settings(self) -> dict[str, str]:
        try:
            return read_conf(self.conf_path.read_text())
        except FileNotFoundError:
            raise LabStateError(f"no {self.conf_path}; write it with OpenDKIMConfig.write()") from None

    @property
    def directory(self) -> Path:
        return self.conf_path.parent

    @property
    def syslog_socket(self) -> Path:
        return self.directory / "syslog.sock"

    @property
    def log_file(self) -> Path:
        """Every caught log line, appended (readable after the lab stopped)."""
        return self.directory / "opendkim.log"

    @property
    def stderr_file(self) -> Path:
        return self.directory / "opendkim.stderr"

    @property
    def milter(self) -> str:
        """The socket as Postfix names it: ``unix:PATH`` or ``inet:127.0.0.1:PORT`` (after :meth:`start`)."""
        if self.socket_path is not None:
            return f"unix:{self.socket_path}"
        if self.port is None or self.address is None:
            raise LabStateError("OpenDKIM is not running; start() it first (its port is known only then)")
        return f"inet:{self.address}:{self.port}"

    def _knock(self, timeout: float = 0.5) -> bool:
        """Does the milter socket accept a connection (which also wakes OpenDKIM's listener)?"""
        if self.socket_path is not None:
            return _accepts_unix(self.socket_path, timeout)
        if self.port:
            return _accepts(self.address or "127.0.0.1", self.port, timeout)
        return False

    # ------------------------------------------------------------------ processes
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def master_pid(self) -> int | None:
        """The pid of the OpenDKIM this runner started, while it runs (what ``running`` asks)."""
        return self.pid

    def processes(self) -> list[tuple[int, str]]:
        """``(pid, command line)`` of every process that runs with this configuration file.

        That is ``opendkim ... -x CONF`` (and, while it starts, the ``unshare``/``sh`` that
        become it), wherever it was started from.
        """
        conf = str(self.conf_path)
        found = []
        for pid in pids():
            argv = _argv(pid)
            if conf in argv and os.path.basename(argv[0]) in ("opendkim", "unshare", "sh"):
                found.append((pid, " ".join(argv)))
        return found

    # ------------------------------------------------------------------ the log
    def _choose_log(self, syslog_on: bool) -> None:
        if not syslog_on:
            self.log_mode, self.log_note = "none", "the configuration says Syslog no"
            return
        if self.log in ("auto", "namespace"):
            ok, why = namespace_available()
            if ok:
                self.log_mode, self.log_note = "namespace", f"/dev/log in OpenDKIM's own mount namespace -> {self.syslog_socket}"
                return
            if self.log == "namespace":
                raise RealModeUnavailable(f"OpenDKIM cannot get a private /dev/log: {why}; use log='dev-log' or 'none'")
            self.log_note = f"no private mount namespace ({why}); "
        if self.log in ("auto", "dev-log"):
            if not os.path.lexists("/dev/log"):
                self.log_mode = "dev-log"
                self.log_note += "the lab holds /dev/log while OpenDKIM runs"
                return
            if self.log == "dev-log":
                raise RealModeUnavailable("/dev/log exists already (a syslog daemon or another lab holds it); "
                                          "OpenDKIM's lines go there, not to the lab")
            self.log_note += "/dev/log belongs to another program, so OpenDKIM's lines go there"
        self.log_mode = "none"

    def _on_event(self, event: OpenDKIMEvent) -> None:
        if self._events_log is not None:
            details = {k if k not in ("host", "role", "kind") else f"log_{k}": v for k, v in event.details.items()}
            self._events_log.emit(self.host_name, "opendkim", f"opendkim-{event.kind}", text=event.text,
                                  queue_id=event.queue_id, **details)

    def events(self) -> list[OpenDKIMEvent]:
        """OpenDKIM's log lines caught so far, as events (see :mod:`labkit.real.opendkim.syslog`)."""
        return self._catcher.events() if self._catcher is not None else list(self._kept_events)

    def log_lines(self) -> list[str]:
        """OpenDKIM's log messages so far (``QUEUEID: text``), oldest first."""
        return [e.text if not e.queue_id else f"{e.queue_id}: {e.text}" for e in self.events()]

    def wait_for_log(self, kind: str | None = None, *, timeout: float = 5, contains: str | None = None,
                     **match: Any) -> OpenDKIMEvent:
        """Wait for a log event (``signed``, ``no-signing-match``, ``key-error``...) and return it."""
        if self._catcher is None:
            raise LabStateError(f"OpenDKIM's log is not being caught ({self.log_mode or 'not started'}: "
                                f"{self.log_note or 'start() first'})")
        return self._catcher.wait_for(kind, timeout=timeout, contains=contains, **match)

    def _tail(self) -> str:
        out = []
        text = self._read_log(self.stderr_file).strip()
        if text:
            out.append("stderr: " + " | ".join(text.splitlines()[-10:]))
        lines = self.log_lines()
        if lines:
            out.append("log: " + " | ".join(lines[-10:]))
        return "\n".join(out) or f"(nothing on stderr and nothing logged; log mode {self.log_mode}: {self.log_note})"

    # ------------------------------------------------------------------ start / stop
    def start(self, timeout: float = 10) -> OpenDKIMRunner:
        """``opendkim -f -x CONF`` as a child process; return once its milter socket accepts.

        With port 0 in ``Socket``, a free port is picked here and given as ``-p inet:PORT@ADDRESS``
        (should another program take it in the instant between, a new one is picked). A unix
        socket (``local:PATH``) is made by OpenDKIM in the folder ``OpenDKIMConfig.write()``
        prepared. Raises :class:`StartError` with its stderr and log lines if it exits or does not
        listen within ``timeout`` seconds (nothing is left running then).
        """
        require_opendkim()
        if self.running:
            return self
        conf = self.settings()
        unix_path = local_socket_path(conf.get("Socket", ""))
        host, port = ("", 0) if unix_path else parse_socket(conf.get("Socket", ""))
        others = self.processes()
        if others:
            raise LabStateError(f"an OpenDKIM with {self.conf_path} is running already ("
                                + "; ".join(f"pid {p}" for p, _ in others) + f"); stop it first (kill {others[0][0]})")
        if unix_path:
            _check_unix_socket_place(unix_path, self.conf_path)
        elif port and _accepts(host, port):
            raise StartError(f"{host}:{port} is taken by another program; choose another port (or port 0) in "
                             f"Socket of {self.conf_path}")
        self._choose_log(conf.get("Syslog", "no").lower() in ("yes", "true", "1"))
        self.stderr_file.unlink(missing_ok=True)
        began = time.monotonic()
        user = conf.get("UserID", "opendkim").split(":")[0]
        try:
            if self.log_mode in ("namespace", "dev-log"):
                where = self.syslog_socket if self.log_mode == "namespace" else Path("/dev/log")
                self._catcher = SyslogCatcher(where, owner=user if self.log_mode == "namespace" else None,
                                              log_file=self.log_file, on_event=self._on_event)
                self._catcher.start()
            self._stderr_file = open(self.stderr_file, "wb")  # noqa: SIM115 - held by the child until stop()
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                listen_port = 0 if unix_path else port or _free_port(host)
                argv = [opendkim_tool("opendkim") or "opendkim", "-f", "-x", str(self.conf_path)]
                if listen_port and not port:
                    argv += ["-p", _socket_spec(host, listen_port)]
                if self.log_mode == "namespace":
                    argv = [opendkim_tool("unshare") or "unshare", "--mount", "--propagation", "private", "--",
                            "/bin/sh", "-c", _NAMESPACE_SCRIPT, "sh", str(self.syslog_socket), *argv]
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._stderr_file,
                                              stderr=self._stderr_file, start_new_session=True, close_fds=True)
                if self.registry is not None:
                    self.registry.record("opendkim", self._proc.pid, f"kill {self._proc.pid}")
                try:
                    if unix_path:
                        self._wait_listening(unix_path, 0, began + timeout, timeout)
                        self.socket_path = unix_path
                    else:
                        self.address, self.port = self._wait_listening(host, listen_port, began + timeout, timeout)
                    break
                except StartError:
                    # the port picked was taken in the meantime: OpenDKIM exits at once; pick again
                    if unix_path or port or attempt == _PORT_ATTEMPTS or self._proc.poll() is None \
                            or not self._bind_failed():
                        raise
                    self._proc = None
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        if self._events_log is not None:
            self._events_log.emit(self.host_name, "opendkim", "listening", address=self.address, port=self.port,
                                  socket=self.socket_path, milter=self.milter, conf=str(self.conf_path),
                                  log_mode=self.log_mode)
        return self

    def _wait_listening(self, host: str, port: int, deadline: float, timeout: float) -> tuple[str, int]:
        """Wait until ``host:port`` accepts; ``host`` is a unix socket's path when ``port`` is 0."""
        assert self._proc is not None
        where = host if not port else f"{host}:{port}"
        while True:
            if self._proc.poll() is not None:
                time.sleep(0.05)  # let the last log datagrams arrive
                raise StartError(f"OpenDKIM ({self.conf_path}) exited with status {self._proc.returncode} while "
                                 f"starting:\n{self._tail()}")
            if _accepts_unix(host) if not port else _accepts(host, port):
                return host, port
            if time.monotonic() >= deadline:
                raise StartError(f"OpenDKIM ({self.conf_path}) did not listen on {where} within "
                                 f"{timeout} s:\n{self._tail()}\nTry a longer timeout, or fix what it says.")
            time.sleep(0.005)

    def _bind_failed(self) -> bool:
        return "smfi_opensocket() failed" in self._read_log(self.stderr_file)

    def stop(self, grace: float = 3.0, timeout: float = 5.0) -> None:
        """Stop OpenDKIM: SIGTERM and a wake-up connection; SIGKILL after ``grace`` seconds.

        Safe to call twice and after a failed start. Raises :class:`LabStateError` if a process
        with this configuration is still there ``timeout`` seconds later.
        """
        proc, self._proc = self._proc, None
        began = time.monotonic()
        if proc is not None:
            self.stopped_by = None
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                deadline = time.monotonic() + grace
                while proc.poll() is None and time.monotonic() < deadline:
                    self._knock(0.2)  # the listener sleeps in poll(): a connection wakes it to see SIGTERM
                    try:
                        proc.wait(0.02)
                    except subprocess.TimeoutExpired:
                        pass
                if proc.poll() is None:
                    proc.kill()
                    self.stopped_by = "sigkill"
                else:
                    self.stopped_by = "sigterm"
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None
        if self._catcher is not None:
            time.sleep(0.02 if proc is not None else 0)  # the "terminating" line may still be on its way
            self._kept_events = self._catcher.events()
            self._catcher.close()
            self._catcher = None
        left = wait_gone(self.processes, timeout)
        if left:
            raise LabStateError(f"OpenDKIM ({self.conf_path}) still has processes {timeout} s after stop: "
                                f"{describe(left)}; kill {left[0][0]}")
        if proc is not None:
            self.stop_seconds = time.monotonic() - began
        if self.registry is not None:
            self.registry.forget("opendkim")
        if self.socket_path is not None:
            _remove_stale_socket(self.socket_path)  # OpenDKIM removes it itself unless it was killed
        self.port = None
        self.socket_path = None

    def __enter__(self) -> Self:
        # start() stops what it began when it fails; a stop() here as well would wait for the
        # other OpenDKIM that made start() refuse ("running already") and then fail on it
        return self.start()

    # ------------------------------------------------------------------ tests of keys and messages
    def testkey(self, domain: str | None = None, selector: str | None = None, **kw: Any) -> Result:
        """``opendkim-testkey -x CONF -d DOMAIN -s SELECTOR -vvv`` (see :func:`testkey`)."""
        return testkey(self.conf_path, domain, selector, **kw)

    def verify_message(self, message: bytes, timeout: float = 30) -> Result:
        """Verify ``message`` with OpenDKIM itself: ``opendkim -x CONF -b v -t -`` (test mode).

        The filter is not involved (this works whether it runs or not); the keys are looked up
        through the configuration's resolver, i.e. in the lab DNS.
        """
        exe = opendkim_tool("opendkim")
        if exe is None:
            raise RealModeUnavailable(f"opendkim is not installed here; {_HOW_TO_GET}")
        if not isinstance(message, (bytes, bytearray)):
            raise ConfigError("message", f"expected bytes, got {type(message).__name__}")
        proc = subprocess.run([exe, "-x", str(self.conf_path), "-b", "v", "-t", "-"], input=bytes(message),
                              capture_output=True, timeout=timeout, check=False)
        out = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
        result = parse_test_mode(out)
        result.details["returncode"] = proc.returncode
        return result


#: how many free ports start() tries when Socket says port 0 (each is free when picked)
_PORT_ATTEMPTS = 3


def _free_port(host: str) -> int:
    """A TCP port free on ``host`` right now (bound to port 0, read, closed)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _socket_spec(host: str, port: int) -> str:
    """The milter socket as opendkim's ``-p`` takes it: ``inet:PORT@ADDRESS`` (inet6 for IPv6)."""
    return f"inet6:{port}@{host}" if ":" in host else f"inet:{port}@{host}"


def _accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _accepts_unix(path: str, timeout: float = 0.5) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            return True
    except OSError:
        return False


def _remove_stale_socket(path: str) -> None:
    """Remove a unix socket nothing listens on (left by a killed OpenDKIM); leave anything else."""
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode) and not _accepts_unix(path, 0.2):
            os.unlink(path)
    except FileNotFoundError:
        pass


def _check_unix_socket_place(path: str, conf_path: Path) -> None:
    """Before the start: the socket's folder is there, and nothing but a stale socket is in the way."""
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        raise StartError(f"the folder of the milter socket {path} does not exist; OpenDKIMConfig.write() makes it "
                         f"(owned by user opendkim, which makes the socket)")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise StartError(f"{path} exists and is not a socket; remove it, or choose another Socket in {conf_path}")
    if _accepts_unix(path):
        raise StartError(f"{path} is taken by another program (it accepts connections); stop it, or choose "
                         f"another Socket in {conf_path}")
    _remove_stale_socket(path)
