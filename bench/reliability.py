"""The lab's reliability figures, as one table from the same runs each time.

    make reliability      (or: .venv/bin/python bench/reliability.py [--quick])

Everything runs on loopback, in sandboxes under /var/lib/mail-lab (real mode: root and the
system packages; without them the real rows say why they were skipped). Rows:

- relay forms tried / relayed, SMTP smuggling sequences tried / smuggled (embedded and real);
- faults survived: ISP down, provider down, lab process killed, Postfix killed mid-queue,
  OpenDKIM under 10 concurrent sessions: messages sent / signed / delivered once / lost / duplicated;
- load: N messages over C clients: accepted, delivered once, p99 of the submission time;
- bad inputs given to the `labkit` command, and the Python tracebacks seen (must be 0);
- processes of the bench's sandboxes left at the end (must be 0).

Done when: 0 relayed, 0 smuggled, 0 lost, 0 duplicated, 0 unsigned, 0 tracebacks, 0 left.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

from labkit import Lab, relaytest
from labkit.net.clients.smtp import send_message

BASE = Path("/var/lib/mail-lab")
ROWS: list[dict[str, object]] = []
SANDBOXES: list[Path] = []


def row(what: str, mode: str, **figures: object) -> None:
    ROWS.append({"what": what, "mode": mode, **figures})
    print(f"  {mode:8} {what}: " + ", ".join(f"{k} {v}" for k, v in figures.items()), file=sys.stderr, flush=True)


def real_available() -> str | None:
    """Why real mode cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("postfix") and not Path("/usr/sbin/postfix").exists():
        return "Postfix is not installed"
    return None


def sandbox(name: str) -> Path:
    BASE.mkdir(mode=0o755, exist_ok=True)
    folder = BASE / f"bench-{name}-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    SANDBOXES.append(folder)
    return folder


def labkit(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "NO_COLOR": "1"})


def _messages(lab_dir: Path, address: str) -> list[Path]:
    """Every message file of a lab mailbox: new/ and cur/ of the Inbox and of each folder (.Spam...)."""
    local, _, domain = address.partition("@")
    box = lab_dir / "mail" / domain / local
    return [p for p in box.rglob("*") if p.is_file() and p.parent.name in ("new", "cur")] if box.is_dir() else []


def subjects_in(lab_dir: Path, address: str) -> list[str]:
    """Subject of every message in a lab mailbox, whatever its folder."""
    out = []
    for path in _messages(lab_dir, address):
        if True:
            head = path.read_bytes().split(b"\n\n", 1)[0]
            for line in head.splitlines():
                if line.lower().startswith(b"subject: "):
                    out.append(line[9:].decode(errors="replace").strip())
    return out


def signed_in(lab_dir: Path, address: str, prefix: str) -> int:
    count = 0
    for path in _messages(lab_dir, address):
        if True:
            head = path.read_bytes().split(b"\n\n", 1)[0]
            if f"Subject: {prefix}".encode() in head and b"DKIM-Signature:" in head and b"d=example.com" in head:
                count += 1
    return count


def tally(lab_dir: Path, address: str, sent: list[str], *, wait: float, dkim: bool = False) -> dict[str, object]:
    """sent / signed / delivered once / lost / duplicated, waiting up to ``wait`` s for all of them."""
    deadline = time.monotonic() + wait
    while True:
        got = subjects_in(lab_dir, address)
        if all(s in got for s in sent) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    time.sleep(0.5)
    got = subjects_in(lab_dir, address)
    counts = {s: got.count(s) for s in sent}
    prefix = sent[0].rsplit(" ", 1)[0] if sent else ""
    return {"sent": len(sent), "signed": signed_in(lab_dir, address, prefix) if dkim else "-",
            "delivered once": sum(1 for c in counts.values() if c == 1),
            "lost": sum(1 for c in counts.values() if c == 0),
            "duplicated": sum(1 for c in counts.values() if c > 1)}


# --------------------------------------------------------------------------------------------
# relay and smuggling


SMUGGLING = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\n.\r", b"\r.\n", b"\r.\r",
             b"\n\n.\n\n", b"\r\n.\x00\r\n", b"\r\n.\r\r\n"]


def smuggle(lab: Lab, n: int, seq: bytes) -> None:
    src = lab.world.host("isp").address
    cover, hidden = f"cover {n}", f"smuggled {n}"
    with socket.create_connection((lab.mta.host, lab.mta.port), timeout=10, source_address=(src, 0)) as s:
        f = s.makefile("rb")

        def reply() -> bytes:
            line = f.readline()
            while line[3:4] == b"-":
                line = f.readline()
            return line

        reply()
        for cmd in (b"EHLO mail.isp.example.net", b"MAIL FROM:<bob@inbox.example.org>",
                    b"RCPT TO:<alice@example.com>", b"DATA"):
            s.sendall(cmd + b"\r\n")
            reply()
        s.sendall(f"Subject: {cover}\r\n\r\nbody".encode() + seq
                  + b"MAIL FROM:<bob@inbox.example.org>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n"
                  + f"Subject: {hidden}\r\n\r\nsmuggled\r\n".encode() + b"\r\n.\r\n")
        reply()
        s.sendall(b"QUIT\r\n")
        try:
            reply()
        except OSError:
            pass


def relay_and_smuggling(real: bool) -> None:
    mode = "real" if real else "embedded"
    with Lab(sandbox(f"relay-{mode}") if real else None, real=real, dkim=False) as lab:
        report = relaytest.run_against_lab(lab)
        relayed = [r for r in report.accepted if "@example.com" not in r.attempt.rcpt_to]
        row("relay forms from a stranger", mode, tried=len(report), relayed=len(relayed))
        for n, seq in enumerate(SMUGGLING):
            smuggle(lab, n, seq)
        time.sleep(2)
        got = subjects_in(lab.dir, "alice@example.com")
        smuggled = sum(1 for n in range(len(SMUGGLING)) if f"smuggled {n}" in got)
        covers = sum(1 for n in range(len(SMUGGLING)) if f"cover {n}" in got)
        # the cover message arrives (the sequence stayed inside its body), the hidden one never does
        row("SMTP smuggling sequences", mode, tried=len(SMUGGLING), smuggled=smuggled, **{"covers delivered": covers})


# --------------------------------------------------------------------------------------------
# faults


def isp_or_provider_down(role: str, count: int = 20) -> None:
    what = {"smarthost": "ISP down, then back", "inbox": "provider down, then back"}[role]
    with Lab(sandbox(f"down-{role}"), real=True) as lab:
        lab.stop_service(role)
        sent = []
        for i in range(count):
            subject = f"{role} {i:03d}"
            res = lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False, subject=subject)
            if res.ok:
                sent.append(subject)
        time.sleep(1)
        lab.start_service(role)
        row(what, "real", **tally(lab.dir, "bob@inbox.example.org", sent, wait=60, dkim=True))


def lab_process_killed(count: int = 10) -> None:
    folder = sandbox("killed")
    up = labkit("up", "--real", "--dir", str(folder), "--json")
    if up.returncode != 0:
        row("lab process killed (kill -9), then down and up", "real", error=up.stderr.strip()[:80])
        return
    st = json.loads(up.stdout)
    mta, src = st["services"]["mta"], st["hosts"]["pc"]["address"]
    sent = []
    for i in range(count):
        subject = f"killed {i:03d}"
        res = send_message(mta["host"], mta["port"], mail_from="alice@example.com", rcpt_to=["bob@inbox.example.org"],
                           subject=subject, source_address=(src, 0), cafile=st["ca"], server_hostname=mta["name"])
        if res.ok:
            sent.append(subject)
    os.kill(int(json.loads((folder / "lab.json").read_text())["pid"]), signal.SIGKILL)
    labkit("down", "--dir", str(folder))
    labkit("up", "--real", "--dir", str(folder))
    try:
        row("lab process killed (kill -9), then down and up", "real",
            **tally(folder, "bob@inbox.example.org", sent, wait=60, dkim=True))
    finally:
        labkit("down", "--dir", str(folder))


def postfix_killed(count: int = 10) -> None:
    folder = sandbox("postfix-killed")
    lab = Lab(folder, real=True)
    sent = []
    try:
        lab.start()
        lab.stop_service("smarthost")
        for i in range(count):
            subject = f"queued {i:03d}"
            if lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False, subject=subject).ok:
                sent.append(subject)
        deadline = time.monotonic() + 20
        while len(lab.postfix_runner.queue()) < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(lab.postfix_runner.master_pid(), signal.SIGKILL)
        lab.stop()
        lab = Lab(folder, real=True)
        lab.start()
        row("Postfix master killed mid-queue, then a new lab", "real",
            **tally(folder, "bob@inbox.example.org", sent, wait=60, dkim=True))
    finally:
        lab.stop()


def opendkim_under_load(messages: int, sessions: int) -> None:
    with Lab(sandbox("milter"), real=True) as lab:
        per = messages // sessions
        pc = lab.world.host("pc").address

        def session(first: int) -> list[str]:
            done = []
            with smtplib.SMTP(lab.mta.host, lab.mta.port, source_address=(pc, 0), timeout=60) as smtp:
                smtp.ehlo("pc.example.com")
                for n in range(first, first + per):
                    msg = EmailMessage()
                    msg["From"], msg["To"], msg["Subject"] = "alice@example.com", "alice@example.com", f"milter {n:04d}"
                    msg.set_content("load\n")
                    try:
                        smtp.send_message(msg)
                        done.append(f"milter {n:04d}")
                    except smtplib.SMTPException:
                        pass
            return done

        with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
            sent = [s for f in [pool.submit(session, i * per) for i in range(sessions)] for s in f.result()]
        figures = tally(lab.dir, "alice@example.com", sent, wait=90, dkim=True)
        figures["lost"] += messages - len(sent)  # refused at SMTP (a dead milter tempfails)
        row(f"OpenDKIM: {messages} messages over {sessions} concurrent sessions", "real", **figures,
            **{"milter alive": lab.opendkim_runner.running and not lab.dead})


def load(messages: int, clients: int) -> None:
    with Lab() as lab:
        per = messages // clients
        times: list[float] = []

        def client(first: int) -> list[str]:
            done = []
            for n in range(first, first + per):
                began = time.perf_counter()
                res = lab.send("alice@example.com", "bob@inbox.example.org", subject=f"load {n:04d}")
                times.append(time.perf_counter() - began)
                if res.ok:
                    done.append(f"load {n:04d}")
            return done

        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            sent = [s for f in [pool.submit(client, i * per) for i in range(clients)] for s in f.result()]
        figures = tally(lab.dir, "bob@inbox.example.org", sent, wait=60)
        times.sort()
        p99 = times[max(0, int(len(times) * 0.99) - 1)] if times else 0.0
        row(f"load: {messages} messages x {clients} clients", "embedded", accepted=len(sent),
            **{"delivered once": figures["delivered once"], "lost": figures["lost"],
               "duplicated": figures["duplicated"], "p99": f"{p99 * 1000:.0f} ms"})


# --------------------------------------------------------------------------------------------
# bad inputs


def bad_inputs() -> None:
    ro = sandbox("read-only")
    ro.mkdir()
    os.chmod(ro, 0o555)
    tries = [
        ["up", "--dir", "/etc/hostname/lab"], ["up", "--dir", "/proc/mail-lab"], ["status", "--dir", "/proc/mail-lab"],
        ["down", "--dir", "/etc/hostname/lab"], ["mailbox", "--dir", "/tmp/none", "bob@../../../var/lib/x/mail/inbox.example.org"],
        ["mailbox", "--dir", "/tmp/none", "nobody@nowhere.invalid"], ["mailbox", "--dir", "/tmp/none", "not-an-address"],
        ["send", "--dir", "/tmp/none", "--from", "a@example.com", "--to", "b@example.com"],
        ["status", "--dir", "/tmp/none", "--json"], ["up", "--dir", ""], ["frobnicate"], ["send"],
        ["up", "--dir", str(ro / "lab")],
    ]
    tracebacks = 0
    for args in tries:
        p = labkit(*args, timeout=60)
        tracebacks += "Traceback" in p.stderr
        if p.returncode == 0 and args[0] == "up":
            labkit("down", "--dir", args[-1])
    # a reader that goes away: status | head
    folder = sandbox("pipe")
    if labkit("up", "--dir", str(folder)).returncode == 0:
        for _ in range(10):
            p = subprocess.run(f"{sys.executable} -m labkit status --json --dir {folder} | head -1",
                               shell=True, capture_output=True, text=True, timeout=60)
            tracebacks += "Traceback" in p.stderr
            tries.append(["status", "--json", "|", "head", "-1"])
        labkit("down", "--dir", str(folder))
    os.chmod(ro, 0o755)
    row("bad inputs to the labkit command", "cli", tried=len(tries), tracebacks=tracebacks)


def leftovers() -> int:
    needles = [str(s).encode() for s in SANDBOXES]
    left = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if any(n in cmd or b"MAIL_CONFIG=" + n in env for n in needles):
            left += 1
    return left


def print_table() -> None:
    cols = ["mode", "what"] + [k for k in dict.fromkeys(k for r in ROWS for k in r) if k not in ("mode", "what")]
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in ROWS)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in ROWS:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller loads (200 messages instead of 1000)")
    a = p.parse_args()
    n = 200 if a.quick else 1000
    began = time.monotonic()
    why = real_available()
    try:
        relay_and_smuggling(real=False)
        if why is None:
            relay_and_smuggling(real=True)
            isp_or_provider_down("smarthost")
            isp_or_provider_down("inbox")
            lab_process_killed()
            postfix_killed()
            opendkim_under_load(n, 10)
        else:
            row("real mode", "real", skipped=why)
        load(500 if not a.quick else 100, 10)
        bad_inputs()
    finally:
        time.sleep(1)
        row("processes of the bench's sandboxes left", "all", left=leftovers())
        for folder in SANDBOXES:
            shutil.rmtree(folder, ignore_errors=True)
    print_table()
    print(f"\n({time.monotonic() - began:.0f} s)")
    bad = [r for r in ROWS if any(r.get(k) not in (None, 0, "-") for k in
                                  ("relayed", "smuggled", "lost", "duplicated", "tracebacks", "left"))]
    bad += [r for r in ROWS if isinstance(r.get("signed"), int) and r["signed"] != r.get("sent")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
