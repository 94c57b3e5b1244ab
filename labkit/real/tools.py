"""Run the memo's own command-line tools (dig, nslookup, swaks, openssl, postconf...) from a notebook.

    from labkit import tools
    out = tools.run(["dig", "@127.0.10.53", "-p", "5353", "mx", "inbox.example.org", "+short"])
    if out.ran:
        assert "mx.inbox.example.org." in out.stdout

A missing tool is not a crash: ``run`` returns a result with ``ran=False`` and a one-line
reason saying how to get it (``sudo scripts/install-system-packages.sh``). Where the lab must
prove everything (``LABKIT_REQUIRE_REAL=1``, as in CI), a missing tool raises
:class:`labkit.errors.RealModeUnavailable` instead, so no check is silently left out.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Sequence

from ..errors import RealModeUnavailable

INSTALL_HINT = "install it with: sudo scripts/install-system-packages.sh (or use the docker image)"


def required() -> bool:
    """Whether missing tools are errors here (``LABKIT_REQUIRE_REAL=1``)."""
    return os.environ.get("LABKIT_REQUIRE_REAL") == "1"


def which(name: str) -> str | None:
    """The path of command ``name``, or None if it is not installed.

    Also looks in the sbin folders, which a non-root PATH often lacks and where Postfix,
    OpenDKIM and Dovecot install their daemons.
    """
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/sbin"):
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


@dataclass(frozen=True)
class ToolRun:
    command: tuple[str, ...]
    ran: bool  #: False when the tool is not installed
    returncode: int | None
    stdout: str
    stderr: str
    reason: str  #: a one-line account: what ran and how it ended, or what is missing

    @property
    def ok(self) -> bool:
        return self.ran and self.returncode == 0

    def __str__(self) -> str:
        return self.stdout if self.ran else self.reason


def run(command: Sequence[str], *, input: str | None = None, timeout: float = 30,
        show: bool = False) -> ToolRun:
    """Run ``command``; never raise for a non-zero exit (it is in the result).

    ``show=True`` prints the command line and its output, as a terminal would.
    """
    command = tuple(str(c) for c in command)
    path = which(command[0])
    if path is None:
        reason = f"{command[0]} is not installed here; {INSTALL_HINT}"
        if required():
            raise RealModeUnavailable(reason + " (LABKIT_REQUIRE_REAL=1 forbids skipping)")
        if show:
            print(reason)
        return ToolRun(command, False, None, "", "", reason)
    p = subprocess.run((path, *command[1:]), input=input, capture_output=True, text=True, timeout=timeout)
    run_ = ToolRun(command, True, p.returncode, p.stdout, p.stderr,
                   f"{' '.join(command)} exited {p.returncode}")
    if show:
        print("$ " + " ".join(command))
        print(p.stdout + p.stderr, end="" if (p.stdout + p.stderr).endswith("\n") else "\n")
    return run_
