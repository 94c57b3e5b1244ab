"""The throughput ladder: how many messages a second each kind of SMTP server takes, side by side.

    make ladder        (or: .venv/bin/python bench/ladder.py [--rounds 3] [--messages 2000] [--sessions 10])

Postfix's ``smtp-source`` sends the same load (``-m`` messages of ``-l 1024`` octets over ``-s``
parallel sessions) to each rung, and the rungs take turns round by round (interleaved), so that
a neighbour's load on a shared machine falls on every rung alike. Rungs:

  smtp-sink        Postfix's own sink: accepts and forgets; the ceiling of this machine
  aiosmtpd sink    a bare aiosmtpd server that accepts and forgets: the ceiling of the library
  lab mta          the lab's mail.example.com port 25: Received: line, events, Maildir delivery
  provider         the lab's mx.inbox.example.org: SPF, DKIM, DMARC, iprev, then Maildir
  real Postfix     Lab(real=True, dkim=False): Postfix's smtpd, then LMTP to Dovecot (as root)
  + OpenDKIM       Lab(real=True): the same with OpenDKIM signing as Postfix's milter

Printed: the median msg/s of each rung, its ratio to the aiosmtpd sink, and for the rungs that
are Python processes the CPU time per message; with the load average of the machine, since
figures on a shared machine are only comparable within one run. Real rungs are skipped, with a
line saying why, where Postfix or root is missing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")

AIOSMTPD_SINK = """
import asyncio
from aiosmtpd.smtp import SMTP

class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 Ok"

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Sink(), hostname="sink.test", ident="sink"), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, input)   # until stdin closes

try:
    asyncio.run(main())
except EOFError:
    pass
"""


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Rung:
    name: str
    host: str
    port: int
    rcpt: str
    pid: int | None = None  #: the Python process whose CPU is counted
    drain: "callable | None" = None  #: waits until the server's queue is empty
    rates: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    failed: str = ""  #: why the rung stopped (it then sits out the later rounds)


def serve_lab(folder: str, real: bool, dkim: bool) -> int:
    """(--serve-lab) Run one lab; print its status as one JSON line; stop when stdin closes."""
    sys.path.insert(0, str(ROOT))
    from labkit import Lab

    lab = Lab(folder, real=real, dkim=dkim)
    try:
        lab.start()
        print(json.dumps(lab.status()), flush=True)
        sys.stdin.read()
    finally:
        lab.stop()
    return 0


class Servers:
    """Every server of the ladder, started once and stopped at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[str] = []

    def popen(self, cmd: list[str], stdout=subprocess.PIPE) -> subprocess.Popen:
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=stdout, text=True)
        self.procs.append(p)
        return p

    def lab(self, real: bool = False, dkim: bool = True) -> dict:
        if real:
            base = Path("/var/lib/mail-lab")
            base.mkdir(mode=0o755, parents=True, exist_ok=True)
            folder = tempfile.mkdtemp(prefix="ladder-", dir=base)
            os.chmod(folder, 0o755)
        else:
            folder = tempfile.mkdtemp(prefix="ladder-")
        self.dirs.append(folder)
        cmd = [sys.executable, __file__, "--serve-lab", folder] + (["--real"] if real else []) + \
            ([] if dkim else ["--no-dkim"])
        p = self.popen(cmd)
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"the lab in {folder} did not start: {cmd}")
        st = json.loads(line)
        st["pid"] = p.pid
        return st

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.stdin.close()  # the labs and the aiosmtpd sink stop at end of input
                except OSError:
                    pass
                if p.args[0] == "smtp-sink":
                    p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 10) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), 1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def postfix_drain(config_dir: str):
    def drain(timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = subprocess.run(["postqueue", "-c", config_dir, "-p"], capture_output=True, text=True).stdout
            if "Mail queue is empty" in out:
                return
            time.sleep(0.2)
    return drain


def run_rung(rung: Rung, messages: int, sessions: int, size: int, sender: str) -> None:
    cmd = ["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", str(size), "-f", sender,
           "-t", rung.rcpt, "-M", "bench.example.net", f"{rung.host}:{rung.port}"]
    before = cpu_seconds(rung.pid) if rung.pid else 0.0
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"{rung.name}: smtp-source failed: {p.stderr.strip() or p.stdout.strip()}")
    rung.rates.append(messages / elapsed)
    if rung.pid:
        rung.cpu_ms.append((cpu_seconds(rung.pid) - before) * 1000 / messages)
    if rung.drain is not None:
        rung.drain()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--messages", type=int, default=2000, help="messages per rung and round (smtp-source -m)")
    ap.add_argument("--sessions", type=int, default=10, help="parallel sessions (smtp-source -s)")
    ap.add_argument("--size", type=int, default=1024, help="message size (smtp-source -l)")
    ap.add_argument("--sender", default="bench@example.net")
    ap.add_argument("--no-real", action="store_true", help="leave out real Postfix")
    ap.add_argument("--only", metavar="WORDS", help="only the rungs whose name has one of these comma-separated "
                    "words (the aiosmtpd sink is always run: the ratios are to it)")
    ap.add_argument("--serve-lab", metavar="DIR", help=argparse.SUPPRESS)
    ap.add_argument("--real", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-dkim", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve_lab:
        return serve_lab(a.serve_lab, a.real, not a.no_dkim)
    if shutil.which("smtp-source") is None or shutil.which("smtp-sink") is None:
        print("ladder: smtp-source and smtp-sink come with Postfix; install it "
              "(sudo scripts/install-system-packages.sh)", file=sys.stderr)
        return 1

    servers = Servers()
    rungs: list[Rung] = []
    skipped: list[str] = []
    try:
        port = free_port()
        as_user = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses to run as root
        servers.popen(["smtp-sink", *as_user, "-c", f"127.0.0.1:{port}", "1000"], stdout=subprocess.DEVNULL)
        wait_port("127.0.0.1", port)
        rungs.append(Rung("smtp-sink (Postfix)", "127.0.0.1", port, "sink@example.net"))
        sink = servers.popen([sys.executable, "-c", AIOSMTPD_SINK])
        rungs.append(Rung("aiosmtpd sink", "127.0.0.1", int(sink.stdout.readline()), "sink@example.net", sink.pid))
        lab = servers.lab()
        mta, inbox = lab["services"]["mta"], lab["services"]["inbox"]
        rungs.append(Rung("lab mta", mta["host"], mta["port"], "alice@example.com", lab["pid"]))
        rungs.append(Rung("provider", inbox["host"], inbox["port"], "bob@inbox.example.org", lab["pid"]))
        if a.no_real:
            skipped.append("real Postfix: left out (--no-real)")
        elif os.geteuid() != 0 or shutil.which("postfix") is None:
            skipped.append("real Postfix: needs root and Postfix (sudo scripts/install-system-packages.sh)")
        else:
            for dkim, name in ((False, "real Postfix"), (True, "real Postfix + OpenDKIM")):
                st = servers.lab(real=True, dkim=dkim)
                svc = st["services"]["mta"]
                rungs.append(Rung(name, svc["host"], svc["port"], "alice@example.com",
                                  drain=postfix_drain(st["postfix"]["config_dir"])))
        if a.only:
            words = [w.strip().lower() for w in a.only.split(",")]
            rungs = [r for r in rungs if r.name == "aiosmtpd sink" or any(w in r.name.lower() for w in words)]
        load = [os.getloadavg()]
        print(f"ladder: smtp-source -s {a.sessions} -m {a.messages} -l {a.size}, {a.rounds} interleaved rounds; "
              f"load average {load[0][0]:.2f}", flush=True)
        for r in range(a.rounds):
            for rung in rungs:
                if rung.failed:
                    continue
                try:
                    run_rung(rung, a.messages, a.sessions, a.size, a.sender)
                except RuntimeError as e:
                    rung.failed = str(e)
                    print(f"  round {r + 1}: {rung.name:<26} failed: {e}", flush=True)
                    continue
                print(f"  round {r + 1}: {rung.name:<26} {rung.rates[-1]:8.0f} msg/s", flush=True)
            load.append(os.getloadavg())
    finally:
        servers.stop()

    base = next(statistics.median(r.rates) for r in rungs if r.name == "aiosmtpd sink")
    print()
    print(f"| rung | msg/s (median of {a.rounds}) | min–max | × aiosmtpd sink | CPU ms/msg |")
    print("|---|---|---|---|---|")
    for rung in rungs:
        if not rung.rates:
            print(f"| {rung.name} | failed | – | – | – |")
            continue
        med = statistics.median(rung.rates)
        cpu = f"{statistics.median(rung.cpu_ms):.2f}" if rung.cpu_ms else "–"
        print(f"| {rung.name} | {med:.0f} | {min(rung.rates):.0f}–{max(rung.rates):.0f} | {med / base:.2f} | {cpu} |")
    for line in skipped:
        print(f"({line})")
    for rung in rungs:
        if rung.failed:
            print(f"({rung.name} stopped after {len(rung.rates)} round(s): {rung.failed})")
    print(f"load average (1 min) during the run: {min(x[0] for x in load):.2f}–{max(x[0] for x in load):.2f} "
          f"on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
