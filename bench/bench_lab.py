"""Benchmarks of the embedded lab; prints medians over repeated runs.

    make bench          (or: .venv/bin/python bench/bench_lab.py [--runs N])

Figures and the targets they are held to (on a 2-core machine):
  Lab.start() until every service accepts      <= 0.5 s
  `labkit up` wall time                        <= 1.5 s
  one message submission -> smarthost -> MX -> mailbox   <= 50 ms
  resident memory of a running embedded lab     <= 100 MB
Real mode (as root, with Postfix installed; skipped otherwise, with a line saying why):
  Lab(real=True).start()                        <= 2 s
  message submitted to Postfix until relayed at the ISP   <= 0.3 s
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labkit import Lab


def median_ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:8.1f} ms  (min {min(xs) * 1000:.1f}, max {max(xs) * 1000:.1f}, n={len(xs)})"


def bench_start(runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        lab = Lab()
        t = time.perf_counter()
        lab.start()
        out.append(time.perf_counter() - t)
        lab.stop()
    return out


def bench_message(runs: int) -> list[float]:
    out = []
    with Lab() as lab:
        for i in range(runs + 1):
            t = time.perf_counter()
            res = lab.send("alice@example.com", "bob@inbox.example.org", via="submission", subject=f"bench {i}")
            assert res.ok, res.reason
            lab.wait_for_mail("bob@inbox.example.org", count=i + 1, timeout=10)
            if i:  # the first message warms up imports and TLS session caches
                out.append(time.perf_counter() - t)
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def bench_up(runs: int) -> tuple[list[float], list[float]]:
    times, rss = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "labkit", "up", "--dir", d, "--json"],
                               capture_output=True, text=True, check=True)
            times.append(time.perf_counter() - t)
            pid = json.loads(p.stdout)["pid"]
            # send one message so the memory figure includes a lab that has done work
            subprocess.run([sys.executable, "-m", "labkit", "send", "--dir", d, "--from", "alice@example.com",
                            "--to", "bob@inbox.example.org"], capture_output=True, check=True)
            time.sleep(0.2)
            rss.append(rss_mb(pid))
            subprocess.run([sys.executable, "-m", "labkit", "down", "--dir", d], capture_output=True, check=True)
    return times, rss


def bench_real(runs: int) -> tuple[list[float], list[float]]:
    starts, relays = [], []
    for _ in range(max(3, runs // 2)):
        lab = Lab(real=True)
        t = time.perf_counter()
        lab.start()
        starts.append(time.perf_counter() - t)
        try:
            for i in range(runs):
                t = time.perf_counter()
                res = lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False,
                               subject=f"real {i}")
                assert res.ok, res.reason
                _wait_relayed(lab, i + 1)
                relays.append(time.perf_counter() - t)
        finally:
            lab.stop()
    return starts, relays


def _wait_relayed(lab: Lab, count: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while len(lab.events.select("accepted", role="smarthost")) < count:
        if time.monotonic() > deadline:
            raise TimeoutError("the ISP did not receive the message from Postfix")
        time.sleep(0.001)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="repetitions of each measure (default 10)")
    a = ap.parse_args()
    print(f"Mail Lab benchmarks, {a.runs} runs each (medians)")
    print(f"Lab.start() until every service accepts : {median_ms(bench_start(a.runs))}   target <= 500 ms")
    print(f"message submission->smarthost->MX->box  : {median_ms(bench_message(a.runs * 2))}   target <= 50 ms")
    up, rss = bench_up(max(3, a.runs // 2))
    print(f"`labkit up` wall time                   : {median_ms(up)}   target <= 1500 ms")
    print(f"resident memory of an embedded lab      : {statistics.median(rss):8.1f} MB  "
          f"(max {max(rss):.1f})   target <= 100 MB")
    from labkit.errors import RealModeUnavailable
    try:
        starts, relays = bench_real(a.runs)
    except RealModeUnavailable as e:
        print(f"real mode: not measured: {e}")
        return 0
    print(f"real: Lab(real=True).start()            : {median_ms(starts)}   target <= 2000 ms")
    print(f"real: submitted to Postfix -> at the ISP: {median_ms(relays)}   target <= 300 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
