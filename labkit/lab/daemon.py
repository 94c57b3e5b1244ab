"""The background process behind ``labkit up``: runs one Lab until SIGTERM.

Protocol with ``labkit up``: one line on stdout, ``READY`` once ``DIR/lab.json`` is written,
or ``ERROR <one-line reason>``; then stdout is closed. Logs go to ``DIR/log/daemon.log``.
"""
from __future__ import annotations

import argparse
import faulthandler
import os
import signal
import sys
import threading

from ..errors import LabError
from .lab import Lab
from ..real.procs import start_time
from .state import clear_state, write_state


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m labkit.lab.daemon")
    p.add_argument("--dir", required=True)
    p.add_argument("--real", action="store_true")
    a = p.parse_args(argv)

    stop = threading.Event()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: every thread's stack in daemon.log
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    lab = Lab(a.dir, real=a.real)
    try:
        lab.start()
        st = lab.status()
        st["pid"] = os.getpid()
        st["pid_start"] = start_time(os.getpid())  # so that a pid reused later is never taken for the lab
        write_state(a.dir, st)
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
        lab.stop()
        clear_state(a.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
