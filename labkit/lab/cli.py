"""``labkit``: the lab from a terminal, so the memo's own commands can be run against it.

    labkit up                 start the lab in the background (in ./mail-lab)
    labkit status             where every service listens, which port plays which
    labkit send --from A --to B     send a message and print the SMTP dialogue
    labkit mailbox ADDRESS    what a lab mailbox holds

    labkit down               stop everything
    labkit up --site FILE     rehearse with your names from a site profile
    labkit bundle --site FILE --out DIR   what to apply to your host
    labkit doctor --site FILE | --lab DIR  check a host (or a rehearsal); read-only

Exit status 0 on success; otherwise non-zero with a one-line reason on stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..core import hostsfile
from ..core.world import default_world, distinct_loopback_available, login_for, mailbox_path
from ..errors import CLIError, ConfigError, LabError, LabNotRunning, LabRunningError
from .site.cli import add_parsers as add_site_parsers
from .state import clear_state, pid_alive, registry, running_state, state_path

DEFAULT_DIR = "mail-lab"
#: where ``labkit up --real`` puts its sandbox when no folder is given: every folder above it is
#: 755 and root's, so user postfix can walk it and OpenDKIM accepts its keys (FIELD-NOTES)
REAL_DEFAULT_DIR = Path("/var/lib/mail-lab/lab")
#: the roles that speak SMTP to a client (``--via``)
SMTP_ROLES = ("submission", "submissions", "smarthost", "mta", "inbox", "verifier")
EPILOG = """examples:
  labkit up                          # start the lab in ./mail-lab and print its hosts table
  labkit status --json               # the same as JSON (services, ca, accounts)
  labkit send --from alice@example.com --to bob@inbox.example.org
  labkit mailbox bob@inbox.example.org --wait 10
  labkit stop smarthost              # the ISP is down; labkit start smarthost brings it back
  sudo labkit hosts --apply          # mail.example.com & co. resolve for mbsync, fetchmail...
  dig @127.0.10.53 -p PORT mx inbox.example.org   # PORT: from labkit status
  labkit down
  labkit up --site examples/mail-site.toml --real     # rehearse with your own names
  labkit bundle --site examples/mail-site.toml --out bundle
  labkit doctor --lab mail-lab

The folder defaults to $LABKIT_DIR, else ./mail-lab. See README.md for the tutorial."""


def _dir(a: argparse.Namespace) -> Path:
    """The lab's folder: --dir, else $LABKIT_DIR, else ./mail-lab; in real mode (or when only a
    real-mode lab runs) /var/lib/mail-lab/lab, which works from any current folder."""
    given = a.dir if a.dir is not None else os.environ.get("LABKIT_DIR")
    if given is not None:
        if not given.strip():
            raise CLIError("--dir: an empty folder name; give a folder, or leave --dir out", 2)
        return Path(given).resolve()
    if getattr(a, "real", False):
        return REAL_DEFAULT_DIR
    here = Path(DEFAULT_DIR).resolve()
    if not state_path(here).exists() and state_path(REAL_DEFAULT_DIR).exists():
        return REAL_DEFAULT_DIR
    return here


def _print_table(rows: list[dict[str, Any]], cols: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    print("  ".join("-" * widths[c] for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))


def _print_status(st: dict[str, Any]) -> None:
    print(f"lab running in {st['dir']} (pid {st.get('pid', '?')}, {st.get('mode', 'embedded')} mode)")
    rows = [{"role": r, "host": s.get("name", ""), "address": s["host"],
             "plays": s.get("standard_port") or "-", "port": s["port"] or "unix socket",
             "state": s.get("state", "running")}
            for r, s in st["services"].items()]
    _print_table(rows, ["role", "host", "address", "plays", "port", "state"])
    for name, d in st.get("daemons", {}).items():
        if not d.get("running"):
            print(f"{name}: NOT RUNNING (pid {d.get('pid')} is gone); see the logs in {st['dir']}, "
                  f"then: labkit down && labkit up --real")
    print(f"CA certificate: {st['ca']}")
    print("accounts (throw-away lab credentials): " +
          ", ".join(a["address"] for a in st.get("accounts", []) if a.get("password")) +
          "  (passwords: labkit status --json)")


def cmd_up(a: argparse.Namespace) -> int:
    folder = _dir(a)
    if a.site:
        from .site.profile import load

        load(a.site)  # a bad profile is named here, with its line, before anything is made
    st, stale = running_state(folder)
    if st is not None:
        raise LabRunningError(f"a lab is already running in {folder} (pid {st['pid']}); "
                              f"stop it with: labkit down --dir {folder}")
    if stale:
        clear_state(folder)
        print(f"note: cleaned the state of a lab in {folder} whose process is gone", file=sys.stderr)
    _stop_leftovers(folder, f"an earlier lab in {folder} ended without labkit down")
    if a.real and a.dir is None and not os.environ.get("LABKIT_DIR"):
        print(f"real mode: the lab's folder is {folder}", file=sys.stderr)
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    before = set(os.listdir(folder)) if folder.is_dir() else set()
    (folder / "log").mkdir(parents=True, exist_ok=True)
    try:
        return _up(a, folder)
    except BaseException:
        # a failed start leaves nothing: what this `up` made goes (the CA key among it)
        if made:
            shutil.rmtree(made[-1], ignore_errors=True)
        elif folder.is_dir():
            for name in set(os.listdir(folder)) - before:
                path = folder / name
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise


def _up(a: argparse.Namespace, folder: Path) -> int:
    cmd = [sys.executable, "-m", "labkit.lab.daemon", "--dir", str(folder)] + (["--real"] if a.real else [])
    if a.site:
        cmd += ["--site", str(Path(a.site).resolve())] + (["--bare"] if a.bare else [])
    with open(folder / "log" / "daemon.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                start_new_session=True, close_fds=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode(errors="replace").strip()
    proc.stdout.close()
    if line != "READY":
        proc.wait(10)
        reason = line[6:] if line.startswith("ERROR ") else \
            f"the lab process exited without a word; see {folder / 'log' / 'daemon.log'}"
        raise CLIError(f"labkit up: {reason}")
    st, _ = running_state(folder)
    if st is None:
        raise CLIError(f"labkit up: the lab said it was ready but left no state in {state_path(folder)}")
    if a.json:
        print(json.dumps(st, indent=2))
    else:
        _print_status(st)
        if st.get("site"):
            print(f"site: the names of {st['site']['source']}, "
                  f"{'with its bundle applied' if st['site']['applied'] else 'bare (before any step)'}; "
                  f"check it with: labkit doctor --lab {folder}")
        print(f"stop it with: labkit down{' --dir ' + str(folder) if a.dir is not None or a.real else ''}")
    return 0


def cmd_status(a: argparse.Namespace) -> int:
    folder = _dir(a)
    st, stale = running_state(folder)
    if st is None:
        extra = " (a stale state was found; labkit up cleans it)" if stale else ""
        raise LabNotRunning(f"no lab is running in {folder}{extra}; start one with: labkit up")
    if st.get("mode") == "real":
        st["daemons"] = registry(folder).status()  # as they are now, not as they were at start
    if a.json:
        print(json.dumps(st, indent=2))
    else:
        _print_status(st)
    dead = [name for name, d in st.get("daemons", {}).items() if not d.get("running")]
    if dead:
        print(f"labkit: the lab in {folder} runs without {', '.join(dead)}, which died", file=sys.stderr)
        return 1
    return 0


#: seconds ``labkit down`` gives the lab process to stop its services before it is killed
DOWN_GRACE = 15.0


def _stop_leftovers(folder: Path, why: str) -> list[tuple[int, str]]:
    """Stop the real daemons recorded in ``folder`` that still run; say which, on stderr."""
    reg = registry(folder)
    found = [p for _rec, procs in reg.leftovers() for p in procs]
    if not found:
        return []
    reg.stop_all()
    print(f"note: {why}; stopped its daemons: " + "; ".join(f"{pid} {cmd}" for pid, cmd in found), file=sys.stderr)
    return found


def cmd_down(a: argparse.Namespace) -> int:
    folder = _dir(a)
    st, stale = running_state(folder)
    if st is None:
        left = _stop_leftovers(folder, f"the lab process of {folder} is gone")
        if stale:
            clear_state(folder)
            print(f"no lab was running in {folder}; cleaned a stale state" + (" and its daemons" if left else ""))
        elif left:
            print(f"no lab was running in {folder}; stopped the daemons it had left")
        else:
            print(f"no lab is running in {folder}; nothing to stop")
        return 0
    pid = int(st["pid"])
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGCONT)  # a stopped process (kill -STOP, Ctrl-Z) handles SIGTERM once continued
    deadline = time.monotonic() + DOWN_GRACE
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while pid_alive(pid) and time.monotonic() < deadline + 5:
            time.sleep(0.02)
        print(f"warning: the lab process {pid} did not stop within {DOWN_GRACE:g} s and was killed", file=sys.stderr)
    clear_state(folder)
    _stop_leftovers(folder, f"the lab process {pid} left daemons running")
    print(f"lab in {folder} stopped")
    return 0


def _control(folder: Path, op: str, role: str) -> dict[str, Any]:
    """Send one command to the lab process on DIR/run/control.sock; return its answer."""
    import socket

    path = folder / "run" / "control.sock"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(90)
            s.connect(str(path))
            s.sendall(json.dumps({"op": op, "role": role}).encode() + b"\n")
            line = s.makefile("rb").readline()
    except OSError as e:
        raise CLIError(f"{op}: the lab process does not answer on {path} ({e.strerror or e}); "
                       f"try: labkit down --dir {folder} && labkit up --dir {folder}") from None
    try:
        return json.loads(line)
    except ValueError:
        raise CLIError(f"{op}: the lab process gave no answer") from None


def cmd_stop_start(a: argparse.Namespace) -> int:
    folder = _dir(a)
    _need(folder)
    reply = _control(folder, a.command, a.role)
    if not reply.get("ok"):
        raise CLIError(f"{a.command} {a.role}: {reply.get('error', 'refused')}")
    roles = ", ".join(reply.get("roles") or [a.role])
    print(f"{roles}: {'stopped (its port stays reserved; labkit start ' + a.role + ' brings it back)' if a.command == 'stop' else 'running again'}")
    return 0


def _need(folder: Path) -> dict[str, Any]:
    st, _ = running_state(folder)
    if st is None:
        raise LabNotRunning(f"no lab is running in {folder}; start one with: labkit up")
    return st


def cmd_send(a: argparse.Namespace) -> int:
    # loaded for this command only: `labkit status` answers without the servers
    from ..core.transcript import to_ansi
    from ..net.clients.smtp import send_message

    st = _need(_dir(a))
    if a.via not in st["services"] or a.via not in SMTP_ROLES:
        raise CLIError(f"--via {a.via}: not an SMTP service of this lab; choose one of "
                       + ", ".join(r for r in SMTP_ROLES if r in st["services"]), 2)
    svc = st["services"][a.via]
    auth = None
    if a.auth:
        user, sep, password = a.auth.partition(":")
        if not sep or not user:
            raise CLIError("--auth: expected USER:PASSWORD, e.g. --auth alice@example.com:alice-lab-password", 2)
        auth = (user, password)
    elif not a.no_auth:
        auth = login_for(st.get("accounts", []), a.via, a.mail_from)
    hosts = st.get("hosts", {})
    if a.source not in hosts:
        raise CLIError(f"--source {a.source}: not a lab host; choose one of {', '.join(hosts)}", 2)
    src = hosts[a.source]["address"]
    res = send_message(svc["host"], svc["port"], mail_from=a.mail_from, rcpt_to=a.to,
                       subject=a.subject, body=a.body, implicit_tls=svc.get("protocol") == "smtps",
                       auth=auth, cafile=st["ca"], server_hostname=svc.get("name"),
                       source_address=(src, 0), timeout=a.timeout,
                       server_name=f"{svc.get('name')}:{svc.get('standard_port')}")
    print(to_ansi(res.transcript, color=sys.stdout.isatty() and not os.environ.get("NO_COLOR")))
    print(("sent: " if res.ok else "not sent: ") + res.reason)
    return 0 if res.ok else 1


def cmd_mailbox(a: argparse.Namespace) -> int:
    # loaded for this command only: `labkit status` answers without the servers
    from ..net.mailbox.maildir import list_mailbox

    folder = _dir(a)
    local, at, domain = a.address.rpartition("@")
    if not at or not local or not domain:
        raise CLIError(f"mailbox: {a.address!r} is not an address like bob@inbox.example.org", 2)
    try:
        box = mailbox_path(folder / "mail", a.address)
    except ConfigError as exc:
        raise CLIError(f"mailbox: {exc}", 2) from None
    domains = default_world().mail_domains
    if domain.lower() not in domains:
        raise CLIError(f"mailbox: no lab host holds mail for {domain}; the lab's mail domains are "
                       + ", ".join(domains), 2)
    deadline = time.monotonic() + (a.wait or 0)
    msgs = list_mailbox(box) if box.exists() else []
    while not msgs and time.monotonic() < deadline:
        time.sleep(0.1)
        msgs = list_mailbox(box) if box.exists() else []
    if a.json:
        print(json.dumps({"address": a.address, "path": str(box), "messages": msgs}, indent=2, default=str))
        return 0
    if not msgs:
        print(f"{a.address}: no messages (in {box})" + (f" after waiting {a.wait:g} s" if a.wait else ""))
        return 1 if a.wait else 0
    print(f"{a.address}: {len(msgs)} message(s) in {box}")
    _print_table([{k: m.get(k, "") for k in ("date", "from", "subject", "path")} for m in msgs],
                 ["date", "from", "subject", "path"])
    return 0


def cmd_hosts(a: argparse.Namespace) -> int:

    st, _ = running_state(_dir(a))
    if st is not None and st.get("hosts"):
        hosts = [(h["address"], h["name"]) for h in st["hosts"].values()]
    else:  # no lab running: the names and addresses every lab uses
        world = default_world() if distinct_loopback_available() else default_world().flattened()
        hosts = [(h.address, h.name) for h in world.hosts]
    lines = hostsfile.lab_lines(hosts)
    if not (a.apply or a.remove):
        print("\n".join(lines))
        return 0
    path = Path(a.file or os.environ.get("LABKIT_HOSTS_FILE") or hostsfile.DEFAULT_PATH)
    try:
        # read and rewritten in place: /etc/hosts is often a bind mount (containers) that a
        # rename over it would fail on
        with open(path, "r+", encoding="utf-8") as f:
            old = f.read()
            new = hostsfile.with_lab_lines(old, lines) if a.apply else hostsfile.without_lab_lines(old)
            if new != old:
                f.seek(0)
                f.write(new)
                f.truncate()
    except FileNotFoundError:
        raise CLIError(f"hosts: {path} does not exist") from None
    except PermissionError:
        raise CLIError(f"hosts: cannot write {path} (permission denied); run it as root: "
                       f"sudo labkit hosts {'--apply' if a.apply else '--remove'}") from None
    if a.apply:
        print(f"{path}: added the {len(lines)} lab lines, each marked '{hostsfile.MARKER}'" if new != old else
              f"{path}: already holds the {len(lines)} lab lines; nothing changed")
    else:
        print(f"{path}: removed the lines marked '{hostsfile.MARKER}'" if new != old else
              f"{path}: holds no lab lines; nothing changed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labkit", description="Mail Lab: an internet in a box, on loopback.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, json_flag: bool = True) -> None:
        sp.add_argument("--dir", metavar="DIR", help=f"the lab's folder (default: $LABKIT_DIR or ./{DEFAULT_DIR})")
        if json_flag:
            sp.add_argument("--json", action="store_true", help="print JSON instead of a table")

    sp = sub.add_parser("up", help="start the lab in the background; return when every service accepts")
    common(sp)
    sp.add_argument("--real", action="store_true",
                    help="real Postfix/OpenDKIM/Dovecot (needs root and scripts/install-system-packages.sh)")
    sp.add_argument("--site", metavar="FILE", help="rehearse with your names from a site profile (mail-site.toml)")
    sp.add_argument("--bare", action="store_true", help="with --site: start before any step, without the bundle")
    sp.set_defaults(func=cmd_up)
    sp = sub.add_parser("status", help="where each service listens (exit 1 if no lab runs)")
    common(sp)
    sp.set_defaults(func=cmd_status)
    sp = sub.add_parser("down", help="stop the lab and every process it started")
    common(sp, json_flag=False)
    sp.set_defaults(func=cmd_down)
    for name, what in (("stop", "take one role down (the ISP is down), as a fault to debug"),
                       ("start", "bring a role taken down by labkit stop back, on the same port")):
        sp = sub.add_parser(name, help=what, description=what + ". ROLE: one of the roles labkit status lists "
                            "(smarthost, inbox, mta...); in real mode a role of Postfix or Dovecot stops that daemon.")
        common(sp, json_flag=False)
        sp.add_argument("role", metavar="ROLE")
        sp.set_defaults(func=cmd_stop_start)
    sp = sub.add_parser("send", help="send a message and print the SMTP dialogue",
                        description="Send a message through a lab service and print the dialogue. "
                        "AUTH uses the lab account of that service unless --auth or --no-auth is given.")
    common(sp, json_flag=False)
    sp.add_argument("--from", dest="mail_from", required=True, metavar="ADDRESS")
    sp.add_argument("--to", required=True, action="append", metavar="ADDRESS", help="repeat for more recipients")
    sp.add_argument("--subject", default="Hello from the lab")
    sp.add_argument("--body", default="This message crossed the lab.\n")
    sp.add_argument("--via", default="submission", metavar="ROLE",
                    help="an SMTP role: " + ", ".join(SMTP_ROLES) + " (default: submission)")
    sp.add_argument("--auth", metavar="USER:PASS", help="log in as USER (AUTH PLAIN, after STARTTLS)")
    sp.add_argument("--no-auth", action="store_true", help="do not log in (to see the refusal)")
    sp.add_argument("--source", default="pc", metavar="HOST",
                    help="lab host to send from: pc (default), home, isp, inbox, verifier")
    sp.add_argument("--timeout", type=float, default=10.0)
    sp.set_defaults(func=cmd_send)
    sp = sub.add_parser("mailbox", help="list what a lab mailbox holds")
    common(sp)
    sp.add_argument("address")
    sp.add_argument("--wait", type=float, metavar="SECONDS", default=0.0,
                    help="wait up to SECONDS for a first message (mail takes a moment to cross the lab)")
    sp.set_defaults(func=cmd_mailbox)
    sp = sub.add_parser("hosts", help="print the /etc/hosts lines for the lab's host names",
                        description="Print the /etc/hosts lines that make the lab's host names resolve "
                        "(mail clients check certificates by name). --apply adds them, --remove takes "
                        "them away; both touch only lines marked as labkit's, and need root for /etc/hosts.")
    common(sp, json_flag=False)
    action = sp.add_mutually_exclusive_group()
    action.add_argument("--apply", action="store_true", help="add the lines (again: nothing changes)")
    action.add_argument("--remove", action="store_true", help="remove the lines labkit added")
    sp.add_argument("--file", metavar="PATH",
                    help="the hosts file (default: $LABKIT_HOSTS_FILE, else /etc/hosts)")
    sp.set_defaults(func=cmd_hosts)

    add_site_parsers(sub)  # bundle, doctor
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    a = p.parse_args(argv)
    if not a.command:
        p.print_help()
        return 2
    try:
        return a.func(a)
    except CLIError as e:
        print(f"labkit: {e}", file=sys.stderr)
        return e.code
    except LabError as e:
        print(f"labkit: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (labkit status --json | head): nothing more to say, and no traceback
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as e:
        where = f" ({e.filename})" if e.filename else ""
        print(f"labkit: {e.strerror or e}{where}; choose a folder you may write to with --dir", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
