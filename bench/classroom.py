#!/usr/bin/env python3
"""Classroom figures: N learners on one host (root; make classroom-venv and make node-packages).

    sudo .venv/bin/python bench/classroom.py            # 10 and 30 learners
    sudo .venv/bin/python bench/classroom.py 5 20       # other sizes

For each size: makes N learner accounts (classroom/learners.py, a group of their own), starts
the hub (classroom/jupyterhub_config.py) on free loopback ports, starts every learner's server at
once through the REST API and times it until all are ready, runs chapter 00 in every learner's
kernel at the same time, and reads resident memory (RSS) of each learner's processes (JupyterLab,
the kernel with its embedded lab) and of the host (MemTotal - MemAvailable, before and during).
Then stops everything and removes the accounts. Prints one table.
"""
from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


driver = _load("classroom_driver", ROOT / "classroom" / "driver.py")
learners = _load("classroom_learners", ROOT / "classroom" / "learners.py")


def host_used_mib() -> float:
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":")
            info[k] = int(v.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 1024


def one_size(n: int) -> dict:
    tag = secrets.token_hex(3)
    group = f"mlb{tag}"
    names = [f"mlb{tag}-{i:02d}" for i in range(n)]
    os.environ["MAIL_LAB_LEARNERS_GROUP"] = group
    learners.add(names, group)
    used_before = host_used_mib()
    with tempfile.TemporaryDirectory(prefix="mail-lab-bench-") as state:
        hub = driver.Hub(Path(state) / "hub")
        try:
            hub.start()
            hub_rss = sum(driver.rss_kib(p) for p in driver.processes_in_group(hub.pgid)) / 1024

            async def scenario():
                ready = await hub.start_servers(names)
                idle = {m: driver.learner_rss_kib(m) / 1024 for m in names}

                async def timed(m):
                    t = time.monotonic()
                    runs = await hub.run_cells(m, driver.chapter00_with_probe())
                    bad = [r for r in runs if not r.ok]
                    if bad:
                        raise driver.ClassroomError(f"{m}: {bad[0].error}")
                    return time.monotonic() - t

                # memory while every learner's lab is up: sampled as the chapters run
                peak = {m: 0.0 for m in names}
                peak_host = [0.0]
                done = asyncio.Event()

                async def sample():
                    while not done.is_set():
                        for m in names:
                            peak[m] = max(peak[m], driver.learner_rss_kib(m) / 1024)
                        peak_host[0] = max(peak_host[0], host_used_mib())
                        await asyncio.sleep(0.5)
                sampler = asyncio.ensure_future(sample())
                runs = await asyncio.gather(*(timed(m) for m in names))
                done.set()
                await sampler
                await hub.stop_servers(names)
                return ready, idle, peak, peak_host[0], runs

            ready, idle, peak, peak_host, runs = asyncio.run(scenario())
        finally:
            hub.stop()
            time.sleep(1)
            learners.remove(names, group)
            os.system(f"groupdel {group} 2>/dev/null")
    return {"n": n, "ready": ready, "idle": statistics.median(idle.values()),
            "peak": statistics.median(peak.values()), "peak_max": max(peak.values()),
            "hub": hub_rss, "host": peak_host - used_before, "slowest": max(runs),
            "median_run": statistics.median(runs)}


def main(argv: list[str]) -> int:
    if os.geteuid() != 0:
        print("bench/classroom.py: needs root (it makes learner accounts)", file=sys.stderr)
        return 1
    sizes = [int(a) for a in argv] or [10, 30]
    rows = []
    for n in sizes:
        print(f"classroom: {n} learners...", flush=True)
        rows.append(one_size(n))
    print()
    print("| learners started | all ready | RSS per learner, idle | RSS per learner, chapter 00 running (median / max) "
          "| hub + proxy RSS | host memory in use (added) | chapter 00, slowest (median) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['n']} | {r['ready']:.1f} s | {r['idle']:.0f} MB | {r['peak']:.0f} / {r['peak_max']:.0f} MB "
              f"| {r['hub']:.0f} MB | {r['host'] / 1024:.2f} GB | {r['slowest']:.1f} s ({r['median_run']:.1f} s) |")
    print(f"\nhost: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
