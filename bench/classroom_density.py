"""How many labs one host holds, how a lab ages, and how a big mailbox behaves.

    make density       (or: .venv/bin/python bench/classroom_density.py [--labs 1,10,30] [--age 20000])

Three tables:

1. density: N labs started side by side as ``labkit up`` starts them (one process each), for each N:
   the start time, the resident (RSS) and proportional (PSS: shared pages divided among the
   processes that share them) memory of each lab, the sum of PSS (what the host really gives),
   and the time one message takes end to end in each lab (submission -> ISP -> provider ->
   mailbox); with ``--each M``, memory again after every lab has taken M more messages;
2. ageing: one lab's RSS and CPU per message as messages arrive (``smtp-source`` into the lab's
   MTA and the provider, four to one), from the first message to ``--age``;
3. a mailbox of ``--mailbox`` messages: ``labkit mailbox`` from another process, ``lab.mailbox``
   listed in the lab's process (first and again), and ``lab.wait_for_mail`` for one more message.

Figures from a shared machine are noisy: the load average is printed with each table.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TICKS = os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) of ``pid`` in MB, from /proc/PID/smaps_rollup."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss / 1024, pss / 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


class Daemon:
    """One lab as ``labkit up`` runs it: ``python -m labkit.lab.daemon --dir DIR``."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="density-")
        t = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "labkit.lab.daemon", "--dir", self.dir],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()
        self.start_seconds = time.perf_counter() - t
        if line != "READY":
            raise RuntimeError(f"a lab did not start: {line}")
        self.state = json.loads((Path(self.dir) / "lab.json").read_text())
        self.pid = self.proc.pid

    def service(self, role: str) -> dict:
        return self.state["services"][role]

    def send_one(self, subject: str) -> float:
        """Seconds from submission until the message is in bob's mailbox (looked at from here)."""
        from labkit.net.clients.smtp import send_message
        from labkit.net.mailbox.maildir import list_mailbox

        st = self.state
        box = Path(self.dir) / "mail" / "inbox.example.org" / "bob"
        before = len(list_mailbox(box))
        svc = st["services"]["submission"]
        login = next(a for a in st["accounts"] if a["address"] == "alice@example.com")
        t = time.perf_counter()
        res = send_message(svc["host"], svc["port"], mail_from="alice@example.com", rcpt_to=["bob@inbox.example.org"],
                           subject=subject, body="density\n", auth=(login["address"], login["password"]),
                           cafile=st["ca"], server_hostname=svc["name"], timeout=30,
                           source_address=(st["hosts"]["pc"]["address"], 0))
        if not res.ok:
            raise RuntimeError(f"not sent: {res.reason}")
        while len(list_mailbox(box)) <= before:
            if time.perf_counter() - t > 30:
                raise TimeoutError("the message did not arrive within 30 s")
            time.sleep(0.002)
        return time.perf_counter() - t

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def smtp_source(host: str, port: int, rcpt: str, messages: int, sessions: int = 10) -> None:
    subprocess.run(["smtp-source", "-s", str(sessions), "-m", str(messages), "-l", "1024", "-f",
                    "bench@example.net", "-t", rcpt, "-M", "bench.example.net", f"{host}:{port}"],
                   check=True, capture_output=True)


def density(counts: list[int], each: int) -> None:
    print(f"\n## N labs on one host (load average {load()} on {os.cpu_count()} CPUs)\n")
    head = ("| N | start s (median, max) | RSS MB/lab | PSS MB/lab | PSS MB total | first message ms (median, max) "
            "| second message ms (median, max) |")
    if each:
        head += f" PSS MB total after {each} msgs each |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for n in counts:
        labs: list[Daemon] = []
        try:
            for _ in range(n):
                labs.append(Daemon())
            time.sleep(0.5)
            mem = [memory_mb(d.pid) for d in labs]
            first = [d.send_one(f"density {i}") for i, d in enumerate(labs)]  # loads the checks' libraries
            second = [d.send_one(f"density again {i}") for i, d in enumerate(labs)]
            row = (f"| {n} | {statistics.median(d.start_seconds for d in labs):.2f}, "
                   f"{max(d.start_seconds for d in labs):.2f} | {statistics.median(m[0] for m in mem):.1f} | "
                   f"{statistics.median(m[1] for m in mem):.1f} | {sum(m[1] for m in mem):.0f} | "
                   f"{statistics.median(first) * 1000:.0f}, {max(first) * 1000:.0f} | "
                   f"{statistics.median(second) * 1000:.0f}, {max(second) * 1000:.0f} |")
            if each:
                for d in labs:
                    mta = d.service("mta")
                    smtp_source(mta["host"], mta["port"], "alice@example.com", each * 4 // 5)
                    inbox = d.service("inbox")
                    smtp_source(inbox["host"], inbox["port"], "bob@inbox.example.org", each - each * 4 // 5)
                row += f" {sum(memory_mb(d.pid)[1] for d in labs):.0f} |"
            print(row + f"  (load {load()})", flush=True)
        finally:
            for d in labs:
                d.stop()


def ageing(total: int, step: int) -> None:
    print(f"\n## One lab as messages arrive (4 to the MTA, 1 to the provider; load average {load()})\n")
    print("| messages | RSS MB | PSS MB | CPU ms/msg in the step |")
    print("|---|---|---|---|")
    d = Daemon()
    try:
        mta, inbox = d.service("mta"), d.service("inbox")
        sent = 0
        marks = [100] + list(range(step, total + 1, step))
        for mark in marks:
            k = mark - sent
            before = cpu_seconds(d.pid)
            smtp_source(mta["host"], mta["port"], "alice@example.com", k * 4 // 5)
            smtp_source(inbox["host"], inbox["port"], "bob@inbox.example.org", k - k * 4 // 5)
            cpu = (cpu_seconds(d.pid) - before) * 1000 / k
            sent = mark
            time.sleep(0.3)
            rss, pss = memory_mb(d.pid)
            print(f"| {sent} | {rss:.1f} | {pss:.1f} | {cpu:.2f} |  (load {load()})", flush=True)
    finally:
        d.stop()


def big_mailbox(n: int) -> None:
    from labkit import Lab
    from labkit.net.mailbox import maildir

    print(f"\n## A mailbox of {n} messages (load average {load()})\n")
    print("| what | seconds |")
    print("|---|---|")
    with Lab() as lab:
        box = lab.ctx.mailbox_dir("bob@inbox.example.org")
        msg = (b"From: Alice <alice@example.com>\r\nTo: bob@inbox.example.org\r\nSubject: filler %d\r\n"
               b"Message-ID: <%d@example.com>\r\n\r\n" + b"x" * 1000 + b"\r\n")
        t = time.perf_counter()
        for i in range(n):
            maildir.deliver(lab.ctx, "bob@inbox.example.org", msg % (i, i))
        print(f"| deliver {n} messages straight into the Maildir | {time.perf_counter() - t:.2f} |")
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "labkit", "mailbox", "--dir", str(lab.dir), "bob@inbox.example.org"],
                           capture_output=True, text=True, check=True)
        print(f"| `labkit mailbox` (another process, from start to exit) | {time.perf_counter() - t:.2f} |")
        assert f"{n} message(s)" in p.stdout, p.stdout[:200]
        maildir._folders.clear()  # as a fresh process would find it
        t = time.perf_counter()
        assert len(lab.mailbox("bob@inbox.example.org")) == n
        print(f"| `lab.mailbox()`, first listing in the lab's process | {time.perf_counter() - t:.3f} |")
        t = time.perf_counter()
        lab.mailbox("bob@inbox.example.org")
        print(f"| `lab.mailbox()` again, nothing new | {time.perf_counter() - t:.3f} |")
        waits = []
        for i in range(5):
            got: list = []
            waiter = threading.Thread(target=lambda: got.append(
                lab.wait_for_mail("bob@inbox.example.org", count=n + i + 1, timeout=30)))
            waiter.start()
            time.sleep(0.05)
            t = time.perf_counter()
            maildir.deliver(lab.ctx, "bob@inbox.example.org", msg % (n + i, n + i))
            waiter.join()
            waits.append(time.perf_counter() - t)
        print(f"| `lab.wait_for_mail()` for message {n + 1}: from its delivery until the wait returns "
              f"(median of 5) | {statistics.median(waits):.3f} |")
        t = time.perf_counter()
        res = lab.send("alice@example.com", "bob@inbox.example.org", subject="one more")
        assert res.ok, res.reason
        lab.wait_for_mail("bob@inbox.example.org", subject="one more")
        print(f"| one message end to end into that mailbox (submission -> ISP -> provider) | "
              f"{time.perf_counter() - t:.3f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labs", default="1,10,30", help="how many labs side by side (comma-separated)")
    ap.add_argument("--each", type=int, default=0, help="messages each lab then takes (0: none)")
    ap.add_argument("--age", type=int, default=20000, help="messages into one lab (0: skip)")
    ap.add_argument("--step", type=int, default=2000)
    ap.add_argument("--mailbox", type=int, default=10000, help="messages in the big mailbox (0: skip)")
    a = ap.parse_args()
    if (a.each or a.age) and shutil.which("smtp-source") is None:
        print("density: smtp-source comes with Postfix (sudo scripts/install-system-packages.sh)", file=sys.stderr)
        return 1
    if a.labs:
        density([int(x) for x in a.labs.split(",")], a.each)
    if a.age:
        ageing(a.age, a.step)
    if a.mailbox:
        big_mailbox(a.mailbox)
    return 0


if __name__ == "__main__":
    sys.exit(main())
