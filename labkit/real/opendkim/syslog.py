"""Catching OpenDKIM's log, which it writes only through syslog(3), and reading it.

OpenDKIM has no log file of its own: every line goes to syslog(3), which the C library sends as
one datagram to the unix socket ``/dev/log``. A lab machine (a container, a CI runner) often
has no syslog daemon and no ``/dev/log``, so the lines are lost. :class:`SyslogCatcher` is the
smallest possible syslog daemon: it binds a unix datagram socket, keeps every line, appends it
to a file, and hands it on as an :class:`OpenDKIMEvent`.

Where the socket is (decided by :class:`labkit.real.opendkim.OpenDKIMRunner`):

- inside the sandbox, with OpenDKIM started in a private mount namespace whose ``/dev`` is a
  small tmpfs where ``/dev/log`` is a link to that socket: nothing outside the sandbox changes,
  and each lab catches its own OpenDKIM (``log_mode == "namespace"``);
- at ``/dev/log`` itself, when the namespace cannot be made (no CAP_SYS_ADMIN, e.g. a default
  docker container) and nothing else holds it; it is removed again on close (``"dev-log"``).

The parser is pure: :func:`parse_datagram` reads ``<22>Nov 29 14:26:22 opendkim[30345]: TEXT``
and :func:`classify` says what an OpenDKIM line means:

==================  ==========================================================================
kind                details
==================  ==========================================================================
starting            ``version``; the filter started
terminating         ``status``; it stopped
signed              ``queue_id``, ``selector``, ``domain``: "DKIM-Signature field added"
verified            ``queue_id``, ``selector``, ``domain``, ``bits``: a signature verified
verify-failed       ``queue_id``, ``selector``, ``domain``, ``reason``: a signature did not
signature           ``queue_id``, ``selector``, ``domain``, ``algorithm``, ``flags``: one
                    signature's evaluation (logged after "DKIM verification successful")
no-signature        ``queue_id``: the message carries no signature to verify
no-signing-match    ``queue_id``, ``address``: no SigningTable line matches the From: address
key-error           ``queue_id``, ``reason``: the key could not be used ("key data is not secure")
external-host       ``queue_id``, ``client``, ``domain``: an outside host sent as one of our domains
why                 ``queue_id``: a LogWhy line (why a message is signed or verified)
error               the C library or OpenDKIM reported an error (severity err or worse)
info                any other line
==================  ==========================================================================
"""
from __future__ import annotations

import os
import pwd
import re
import socket
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from ...errors import BindError

#: ``<PRI>Mmm dd hh:mm:ss TAG[PID]: TEXT`` (RFC 3164, as glibc's syslog(3) writes it)
_DATAGRAM = re.compile(
    r"^<(?P<pri>\d{1,3})>(?P<time>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) "
    r"(?P<program>[^\s\[:]+)(?:\[(?P<pid>\d+)\])?: ?(?P<text>.*)$", re.DOTALL)
_QID = re.compile(r"^(?P<qid>[0-9A-Za-z]{6,20}|NOQUEUE): (?P<rest>.*)$", re.DOTALL)
_SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")

_SIGNED = re.compile(r"DKIM-Signature (?:field|header) added \(s=(?P<selector>[^,\s)]+), d=(?P<domain>[^,\s)]+)\)")
_VERIFIED = re.compile(r"DKIM verification successful|s=(?P<selector>\S+?),? d=(?P<domain>\S+?),? "
                       r"(?:(?P<bits>\d+)-bit key.*)?(?:SSL|verified|succeeded)")
_VERIFY_FAILED = re.compile(r"(?:bad signature data|signature verification failed|"
                            r"verification \(s=(?P<selector>[^,\s]+),? d=(?P<domain>[^,\s]+).*?\) failed: ?(?P<reason>.*))")
_NO_MATCH = re.compile(r"no signing (?:table|domain) match for '(?P<address>[^']*)'")
_KEY_ERROR = re.compile(r"(?:key data is not secure|can't load key|error loading key|"
                        r"dkimf_add_signrequest\(\)|key '[^']*' not found|"
                        r"error (?:obtaining|loading) (?:private )?key|KeyTable|d2i_PrivateKey)", re.IGNORECASE)
_EXTERNAL = re.compile(r"external host (?P<client>\S+) tried to send mail as (?P<domain>\S+)")


@dataclass(frozen=True)
class OpenDKIMEvent:
    """One log line of OpenDKIM, understood (see the table in this module's docstring)."""

    kind: str
    text: str  #: the message, without the time stamp and the program name
    queue_id: str = ""  #: Postfix's queue id, which OpenDKIM puts before most lines
    severity: str = "info"
    pid: int = 0
    time: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    line: str = ""  #: the datagram as received, decoded

    def __getitem__(self, key: str) -> Any:
        return self.details[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.details.get(key, default)

    def matches(self, **match: Any) -> bool:
        for key, want in match.items():
            have = getattr(self, key) if key in ("kind", "queue_id", "severity", "pid", "text") else self.details.get(key)
            if have != want:
                return False
        return True


def parse_datagram(data: bytes | str) -> dict[str, Any] | None:
    """A syslog datagram as ``{pri, facility, severity, time, program, pid, text}``, or None."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    m = _DATAGRAM.match(text.rstrip("\n\0"))
    if not m:
        return None
    pri = int(m.group("pri"))
    return {"pri": pri, "facility": pri >> 3, "severity": _SEVERITIES[pri & 7], "time": m.group("time"),
            "program": m.group("program"), "pid": int(m.group("pid") or 0), "text": m.group("text"),
            "line": text.rstrip("\n\0")}


def classify(text: str, *, severity: str = "info", pid: int = 0, time: str = "", line: str = "") -> OpenDKIMEvent:
    """What one OpenDKIM log message (``QUEUEID: ...`` or a bare message) means (pure)."""
    queue_id, rest = "", text
    m = _QID.match(text)
    if m and not text.startswith("OpenDKIM "):
        queue_id, rest = m.group("qid"), m.group("rest")
    details: dict[str, Any] = {}
    kind = "info"
    if rest.startswith("OpenDKIM Filter") and " starting" in rest:
        kind = "starting"
        v = re.search(r"v(\d[\w.~-]*)", rest)
        details["version"] = v.group(1) if v else ""
    elif rest.startswith("OpenDKIM Filter") and "terminating" in rest:
        kind = "terminating"
        s = re.search(r"status (-?\d+)", rest)
        details["status"] = int(s.group(1)) if s else None
    elif (sm := _SIGNED.search(rest)):
        kind = "signed"
        details.update(selector=sm.group("selector"), domain=sm.group("domain"))
    elif (nm := _NO_MATCH.search(rest)):
        kind = "no-signing-match"
        details["address"] = nm.group("address")
    elif (em := _EXTERNAL.search(rest)):
        kind = "external-host"
        details.update(client=em.group("client"), domain=em.group("domain"))
    elif (fm := _VERIFY_FAILED.search(rest)):
        kind = "verify-failed"
        details.update(selector=fm.group("selector") or "", domain=fm.group("domain") or "",
                       reason=(fm.group("reason") or rest).strip())
    elif "DKIM verification successful" in rest or re.search(r"verification \(.*\) succeeded|s=\S+ d=\S+ SSL", rest):
        kind = "verified"
        vm = re.search(r"s=(?P<selector>[^,\s)]+),? d=(?P<domain>[^,\s)]+)(?:,? (?P<bits>\d+)-bit key)?", rest)
        if vm:
            details.update(selector=vm.group("selector"), domain=vm.group("domain"),
                           bits=int(vm.group("bits")) if vm.group("bits") else None)
    elif (gm := re.match(r"s=(?P<selector>\S+) d=(?P<domain>\S+)(?: a=(?P<algorithm>\S+))?(?: (?P<flags>.*))?$", rest)):
        kind = "signature"
        details.update(selector=gm.group("selector"), domain=gm.group("domain"),
                       algorithm=gm.group("algorithm") or "", flags=(gm.group("flags") or "").strip())
    elif "no signature data" in rest or rest.startswith("no signature"):
        kind = "no-signature"
    elif _KEY_ERROR.search(rest):
        kind = "key-error"
        details["reason"] = rest
    elif queue_id and severity in ("info", "notice", "debug") and (
            "internal" in rest or "authenticated" in rest or "sign" in rest or "verify" in rest
            or "domain" in rest or "mode" in rest):
        kind = "why"
    elif severity in ("emerg", "alert", "crit", "err"):
        kind = "error"
    return OpenDKIMEvent(kind, rest, queue_id, severity, pid, time, details, line or text)


def parse_line(data: bytes | str) -> OpenDKIMEvent | None:
    """One datagram as an :class:`OpenDKIMEvent` (None if it is not a syslog message)."""
    d = parse_datagram(data)
    if d is None:
        return None
    return classify(d["text"], severity=d["severity"], pid=d["pid"], time=d["time"], line=d["line"])


class SyslogCatcher:
    """A unix datagram socket that receives syslog(3) lines: the lab's own tiny syslog daemon.

    ::

        with SyslogCatcher(sandbox / "opendkim" / "syslog.sock", owner="opendkim") as catcher:
            ...  # a program whose /dev/log leads here logs
            catcher.wait_for(kind="signed")

    ``owner`` (a user name) is given the socket (mode 0600): a program that has dropped root,
    as OpenDKIM does, must be able to write to it. ``programs`` keeps only lines whose program
    name is one of them (``/dev/log`` may carry other programs' lines). ``log_file`` gets every
    kept line appended. ``on_event`` is called (in the catcher's thread) for each event.
    """

    def __init__(self, path: str | os.PathLike, *, owner: str | None = None,
                 programs: tuple[str, ...] | None = ("opendkim",), log_file: str | os.PathLike | None = None,
                 on_event: Callable[[OpenDKIMEvent], None] | None = None):
        self.path = Path(path)
        self.owner = owner
        self.programs = programs
        self.log_file = Path(log_file) if log_file else None
        self.on_event = on_event
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._inode: int | None = None
        self._events: list[OpenDKIMEvent] = []
        self._cond = threading.Condition()
        #: exceptions raised by on_event (kept, never swallowed silently)
        self.errors: list[BaseException] = []

    def __repr__(self) -> str:
        return f"SyslogCatcher({str(self.path)!r})"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> SyslogCatcher:
        """Bind the socket (replacing a stale socket left at the path) and start listening."""
        if self.running:
            return self
        if len(os.fsencode(str(self.path))) >= 108:
            raise BindError(f"{self.path} is too long for a unix socket (108 bytes at most); use a shorter sandbox path")
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise BindError(f"{self.path} exists and is not a socket; it was not made by the lab, so it is left alone")
            if _socket_alive(self.path):
                raise BindError(f"{self.path} is in use by another program (a syslog daemon or another lab)")
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(str(self.path))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            if self.owner is not None:
                pw = pwd.getpwnam(self.owner)
                if os.geteuid() == 0:
                    os.chown(self.path, pw.pw_uid, pw.pw_gid)
                os.chmod(self.path, 0o600 if os.geteuid() == 0 else 0o666)
            else:
                os.chmod(self.path, 0o666)
            self._inode = self.path.stat().st_ino
        except BaseException as e:
            sock.close()
            self.path.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise BindError(f"could not bind a syslog socket at {self.path}: {e.strerror or e}") from e
            raise
        self._sock = sock
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"syslog {self.path.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if self._closing:
                return
            if not data:
                continue
            d = parse_datagram(data)
            if d is None or (self.programs is not None and d["program"] not in self.programs):
                continue
            event = classify(d["text"], severity=d["severity"], pid=d["pid"], time=d["time"], line=d["line"])
            if self.log_file is not None:
                try:
                    with open(self.log_file, "a", encoding="utf-8") as f:
                        f.write(d["line"] + "\n")
                except OSError as e:
                    self.errors.append(e)
            with self._cond:
                self._events.append(event)
                self._cond.notify_all()
            if self.on_event is not None:
                try:
                    self.on_event(event)
                except Exception as e:  # noqa: BLE001 - kept in .errors, shown by the runner
                    self.errors.append(e)

    def close(self) -> None:
        """Stop listening and remove the socket (only if it is still the one made here). Idempotent."""
        sock, self._sock = self._sock, None
        if sock is not None:
            self._closing = True
            try:  # wake the receiving thread with an empty datagram
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as poke:
                    poke.sendto(b"", str(self.path))
            except OSError:
                pass
            if self._thread is not None:
                self._thread.join(timeout=2)
            sock.close()
        self._thread = None
        try:
            if self._inode is not None and self.path.lstat().st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
        self._inode = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading
    def events(self) -> list[OpenDKIMEvent]:
        with self._cond:
            return list(self._events)

    def lines(self) -> list[str]:
        """The messages caught so far (without time stamps), oldest first."""
        return [e.text if not e.queue_id else f"{e.queue_id}: {e.text}" for e in self.events()]

    def select(self, kind: str | None = None, **match: Any) -> list[OpenDKIMEvent]:
        return [e for e in self.events() if (kind is None or e.kind == kind) and e.matches(**match)]

    def wait_for(self, kind: str | None = None, *, timeout: float = 5, contains: str | None = None,
                 **match: Any) -> OpenDKIMEvent:
        """The first event of ``kind`` (with ``contains`` in its text, and ``match``); wait up to ``timeout``."""
        deadline = time.monotonic() + timeout

        def found() -> OpenDKIMEvent | None:
            for e in self._events:
                if (kind is None or e.kind == kind) and (contains is None or contains in e.text) and e.matches(**match):
                    return e
            return None

        with self._cond:
            while True:
                hit = found()
                if hit is not None:
                    return hit
                left = deadline - time.monotonic()
                if left <= 0:
                    want = " ".join(x for x in [kind or "any line", f"containing {contains!r}" if contains else "",
                                                *(f"{k}={v}" for k, v in match.items())] if x)
                    tail = "\n".join(e.line for e in self._events[-10:]) or "(nothing was logged)"
                    raise TimeoutError(f"OpenDKIM logged no {want} within {timeout} s; last lines:\n{tail}")
                self._cond.wait(left)


def _socket_alive(path: Path) -> bool:
    """Does a program still receive on the datagram socket at ``path``?"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False
