"""The state of a lab started by ``labkit up``: a JSON file in its sandbox folder.

``labkit up`` starts a daemon process that runs the Lab and writes ``DIR/lab.json`` (its pid
and the status object) once every service accepts; ``labkit status`` and ``labkit down`` read
it from any other process. A state whose process is gone (a crash, a reboot) is stale: it is
detected and cleaned.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..files import write_secret
from ..real.procs import Registry, pid_alive, start_time  # also for labkit.lab.cli; a zombie is not a running lab

STATE_FILE = "lab.json"


def state_path(folder: str | os.PathLike) -> Path:
    return Path(folder) / STATE_FILE


def read_state(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The state of the lab in ``folder``, or None. A malformed file counts as stale."""
    p = state_path(folder)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": -1, "malformed": True}


def write_state(folder: str | os.PathLike, state: dict[str, Any]) -> Path:
    # it lists the lab's throw-away passwords: 0600 all the same
    return write_secret(state_path(folder), json.dumps(state, indent=2) + "\n")


def clear_state(folder: str | os.PathLike) -> None:
    state_path(folder).unlink(missing_ok=True)


def running_state(folder: str | os.PathLike) -> tuple[dict[str, Any] | None, bool]:
    """(state, stale): the state if its process is alive; stale=True if a dead one was found."""
    st = read_state(folder)
    if st is None:
        return None, False
    pid = int(st.get("pid", -1))
    # the same pid with another start time is another program: the lab's process is gone
    if pid_alive(pid) and st.get("pid_start") in (None, start_time(pid)):
        return st, False
    return None, True


def registry(folder: str | os.PathLike) -> Registry:
    """The register of the real daemons started in ``folder`` (``FOLDER/run/daemons.json``)."""
    return Registry(Path(folder) / "run")
