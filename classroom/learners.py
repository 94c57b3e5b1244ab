#!/usr/bin/env python3
"""Add, list and remove the learners of a Mail Lab classroom (system users, as root).

    sudo .venv/bin/python classroom/learners.py add ana ben chika   # prints each one's password
    sudo .venv/bin/python classroom/learners.py list
    sudo .venv/bin/python classroom/learners.py remove ana          # the account and its home

A learner is a system user in the group ``mail-lab-learners`` (the only group the hub lets in),
with a home folder of their own (0700) where their JupyterLab keeps ``~/mail-lab``. ``remove``
refuses anyone outside that group, and anyone with processes still running.
"""
from __future__ import annotations

import argparse
import grp
import os
import pwd
import re
import secrets
import subprocess
import sys

GROUP = os.environ.get("MAIL_LAB_LEARNERS_GROUP", "mail-lab-learners")
NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class LearnerError(Exception):
    pass


def _run(*cmd: str, input: str | None = None) -> None:
    p = subprocess.run(cmd, input=input, capture_output=True, text=True)
    if p.returncode != 0:
        raise LearnerError(f"{' '.join(cmd[:2])} failed: {(p.stderr or p.stdout).strip()}")


def members(group: str = GROUP) -> list[str]:
    try:
        g = grp.getgrnam(group)
    except KeyError:
        return []
    return sorted(set(g.gr_mem) | {u.pw_name for u in pwd.getpwall() if u.pw_gid == g.gr_gid})


def add(names: list[str], group: str = GROUP) -> dict[str, str]:
    """Create each learner (and the group); their passwords, made here."""
    if os.geteuid() != 0:
        raise LearnerError("adding system users needs root: run with sudo")
    for n in names:
        if not NAME.match(n):
            raise LearnerError(f"{n!r} is not a user name (lower-case letters, digits, '-'; a letter first)")
    _run("groupadd", "-f", group)
    made = {}
    for n in names:
        try:
            pwd.getpwnam(n)
            raise LearnerError(f"user {n} exists already; pick another name")
        except KeyError:
            pass
        _run("useradd", "--create-home", "--shell", "/bin/bash", "--gid", group, "--comment",
             "Mail Lab learner", n)
        os.chmod(pwd.getpwnam(n).pw_dir, 0o700)
        made[n] = secrets.token_urlsafe(9)
        _run("chpasswd", input=f"{n}:{made[n]}\n")
    return made


def processes_of_uid(uid: int) -> list[int]:
    """Processes running as ``uid`` (by the owner of /proc/PID)."""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.stat(f"/proc/{d}").st_uid == uid:
                    found.append(int(d))
            except OSError:
                pass
    return found


def processes_of(name: str) -> list[int]:
    return processes_of_uid(pwd.getpwnam(name).pw_uid)


def remove(names: list[str], group: str = GROUP) -> None:
    """Remove each learner and their home folder."""
    if os.geteuid() != 0:
        raise LearnerError("removing system users needs root: run with sudo")
    inside = set(members(group))
    for n in names:
        if n not in inside:
            raise LearnerError(f"{n} is not a learner (not in group {group}); not removed")
        left = processes_of(n)
        if left:
            raise LearnerError(f"{n} still has processes {left}: stop their server first")
        _run("userdel", "--remove", n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("add", help="create learners; prints NAME PASSWORD lines").add_argument("names", nargs="+")
    sub.add_parser("remove", help="remove learners and their homes").add_argument("names", nargs="+")
    sub.add_parser("list", help="the learners")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "add":
            for n, p in add(a.names).items():
                print(n, p)
        elif a.cmd == "remove":
            remove(a.names)
        else:
            print("\n".join(members()))
    except LearnerError as e:
        print(f"learners: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
