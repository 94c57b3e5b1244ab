"""The background process behind ``labkit up``: runs one Lab until SIGTERM.

Protocol with ``labkit up``: one line on stdout, ``READY`` once ``DIR/lab.json`` is written,
or ``ERROR <one-line reason>``; then stdout is closed. Logs go to ``DIR/log/daemon.log``.

Faults from the terminal (``labkit stop ROLE``, ``labkit start ROLE``) come in on the unix
socket ``DIR/run/control.sock`` (root's only): one JSON line ``{"op": "stop", "role": ROLE}``,
answered by one JSON line ``{"ok": true, "roles": [...]}`` or ``{"ok": false, "error": "..."}``;
``lab.json`` is written again after each, so ``labkit status`` shows what is stopped.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import os
import socket
import signal
import sys
import threading

from ..errors import LabError
from .lab import Lab
from ..real.procs import start_time
from .state import clear_state, write_state


#: the control socket, below the lab's folder
CONTROL = os.path.join("run", "control.sock")


def _state(lab: Lab) -> dict:
    st = lab.status()
    st["pid"] = os.getpid()
    st["pid_start"] = start_time(os.getpid())  # so that a pid reused later is never taken for the lab
    return st


def _serve_control(lab: Lab, folder: str, stop: threading.Event) -> socket.socket:
    """Listen on DIR/run/control.sock; each connection is one command for ``lab``."""
    path = os.path.join(folder, CONTROL)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        server.bind(path)
    finally:
        os.umask(old)
    server.listen()
    server.settimeout(0.5)
    lock = threading.Lock()

    def answer(request: dict) -> dict:
        op, role = request.get("op"), str(request.get("role", ""))
        if op not in ("stop", "start"):
            return {"ok": False, "error": f"unknown operation {op!r}"}
        if role not in lab.services:
            return {"ok": False, "error": f"no role {role!r} in this lab; roles: {', '.join(lab.services)}"}
        if role == "dns":
            return {"ok": False, "error": "the lab's DNS cannot be stopped: every other service needs it"}
        try:
            roles = lab.roles_of(role)
            (lab.stop_service if op == "stop" else lab.start_service)(role)
        except KeyError as e:
            return {"ok": False, "error": str(e.args[0]) if e.args else str(e)}
        except (LabError, OSError, TimeoutError) as e:
            return {"ok": False, "error": str(e).splitlines()[0]}
        write_state(folder, _state(lab))
        return {"ok": True, "roles": roles}

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn, lock:
                try:
                    conn.settimeout(60)
                    request = json.loads(conn.makefile("rb").readline() or b"{}")
                    reply = answer(request if isinstance(request, dict) else {})
                except (ValueError, OSError) as e:
                    reply = {"ok": False, "error": f"bad request: {e}"}
                try:
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    pass

    threading.Thread(target=loop, name="lab-control", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m labkit.lab.daemon")
    p.add_argument("--dir", required=True)
    p.add_argument("--real", action="store_true")
    p.add_argument("--site")
    p.add_argument("--bare", action="store_true")
    a = p.parse_args(argv)

    stop = threading.Event()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: every thread's stack in daemon.log
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    lab = Lab(a.dir, real=a.real, site=a.site, site_apply=not a.bare)
    try:
        lab.start()
        write_state(a.dir, _state(lab))
        control = _serve_control(lab, a.dir, stop)
    except (LabError, OSError, TimeoutError) as e:
        lab.stop()
        print(f"ERROR {str(e).splitlines()[0] if str(e) else type(e).__name__}", flush=True)
        return 1
    print("READY", flush=True)
    # let `labkit up` see end-of-file and return; later prints go nowhere
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    try:
        # short waits: a SIGTERM the kernel hands to another thread (it may, after SIGSTOP and
        # SIGCONT) does not wake a long wait of this one, and Python runs handlers only here
        while not stop.wait(0.2):
            pass
    finally:
        control.close()
        lab.stop()
        clear_state(a.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
