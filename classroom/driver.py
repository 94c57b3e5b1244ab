"""Drive a Mail Lab classroom from a script: start the hub, start learners' servers through its
REST API, run a chapter in each learner's own kernel, measure memory, stop everything.

Used by tests/test_classroom.py and bench/classroom.py; needs root (the hub starts each learner's
JupyterLab as that learner). Everything listens on 127.0.0.1.

    with Hub(state_dir) as hub:                     # jupyterhub -f classroom/jupyterhub_config.py
        asyncio.run(hub.start_servers(names))       # POST /hub/api/users/NAME/server, until ready
        asyncio.run(hub.run_notebook(name, path))   # each code cell in the learner's kernel
"""
from __future__ import annotations

import asyncio
import json
import os
import pwd
import secrets
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = HERE / "jupyterhub_config.py"
#: The classroom's venv (make classroom-venv): learners run its Python, so it must be one every
#: user can run, not one under /root.
VENV_BIN = HERE / ".venv" / "bin"


def _learners():
    import importlib.util
    import sys

    if "classroom_learners" not in sys.modules:
        spec = importlib.util.spec_from_file_location("classroom_learners", HERE / "learners.py")
        sys.modules["classroom_learners"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["classroom_learners"])
    return sys.modules["classroom_learners"]


def processes_of_uid(uid: int) -> list[int]:
    """Processes running as ``uid`` (classroom/learners.py's)."""
    return _learners().processes_of_uid(uid)


class ClassroomError(Exception):
    """The hub or a learner's server did not do what was asked; the message says which and why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_in_group(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` (the hub's: the hub and its proxy)."""
    found = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[2]) == pgid:
                        found.append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    return found


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (by /proc/PID/stat's parent pid)."""
    parents: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                parents.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError, IndexError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


@dataclass
class CellRun:
    ok: bool
    error: str = ""
    stdout: str = ""


@dataclass
class Hub:
    """A classroom hub for scripts: its own state folder, free ports, a service token."""

    state: Path
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(24))
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> "Hub":
        self.state.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MAIL_LAB_HUB_STATE=str(self.state), MAIL_LAB_HUB_PORT=str(self.port),
                   MAIL_LAB_HUB_API_PORT=str(free_port()), MAIL_LAB_PROXY_API_PORT=str(free_port()),
                   MAIL_LAB_HUB_TOKEN=self.token)
        self.log = open(self.state / "hub.log", "ab")
        self.proc = subprocess.Popen([str(VENV_BIN / "jupyterhub"), "-f", str(CONFIG)],
                                     cwd=self.state, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pgid = self.proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ClassroomError(f"the hub exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                self.api_sync("GET", "/hub/api/")
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise ClassroomError(f"the hub did not answer on {self.url} within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join((self.state / "hub.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM the hub (it stops every learner's server and the proxy), then whatever is left of
        its process group."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            pass
        else:   # the proxy is in the hub's group; it should be gone already
            time.sleep(1)
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        self.log.close()
        self.proc = None

    def __enter__(self) -> "Hub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the REST API ---------------------------------------------------------------------------

    def api_sync(self, method: str, path: str, body: dict | None = None) -> dict:
        import urllib.request

        req = urllib.request.Request(self.url + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            data = r.read()
        return json.loads(data) if data else {}

    def _client(self):
        from tornado.httpclient import AsyncHTTPClient

        if not hasattr(self, "_http"):
            self._http = AsyncHTTPClient(force_instance=True, max_clients=200)
        return self._http

    async def api(self, method: str, path: str, body: dict | None = None, ok=(200, 201, 202, 204)) -> dict:
        from tornado.httpclient import HTTPClientError

        try:
            r = await self._client().fetch(self.url + path, method=method, request_timeout=180,
                                           headers={"Authorization": f"token {self.token}"},
                                           body=json.dumps(body) if body is not None else
                                           (b"" if method in ("POST", "PUT", "PATCH") else None))
        except HTTPClientError as e:
            if e.code in ok:
                return {}
            detail = e.response.body.decode(errors="replace")[:300] if e.response else ""
            raise ClassroomError(f"{method} {path}: HTTP {e.code} {detail}") from None
        return json.loads(r.body) if r.body else {}

    async def start_servers(self, names: list[str], timeout: float = 300) -> float:
        """Ask the hub for every learner's server at once; seconds until all are ready."""
        t = time.monotonic()
        for n in names:
            try:
                await self.api("GET", f"/hub/api/users/{n}")
            except ClassroomError:
                await self.api("POST", f"/hub/api/users/{n}")
        await asyncio.gather(*(self.api("POST", f"/hub/api/users/{n}/server") for n in names))
        pending = set(names)
        while pending:
            if time.monotonic() - t > timeout:
                raise ClassroomError(f"servers not ready after {timeout:.0f} s: {sorted(pending)}\n{self.log_tail()}")
            for n in list(pending):
                info = await self.api("GET", f"/hub/api/users/{n}")
                server = info.get("servers", {}).get("")
                if server and server.get("ready"):
                    pending.discard(n)
                elif not server and not info.get("pending"):
                    raise ClassroomError(f"{n}'s server failed to start:\n{self.log_tail()}")
            await asyncio.sleep(0.5)
        return time.monotonic() - t

    async def stop_servers(self, names: list[str]) -> None:
        await asyncio.gather(*(self.api("DELETE", f"/hub/api/users/{n}/server") for n in names))
        for _ in range(240):
            infos = await asyncio.gather(*(self.api("GET", f"/hub/api/users/{n}") for n in names))
            if not any(i.get("servers") or i.get("pending") for i in infos):
                return
            await asyncio.sleep(0.5)
        raise ClassroomError("servers still running after 120 s")

    async def delete_users(self, names: list[str]) -> None:
        await asyncio.gather(*(self.api("DELETE", f"/hub/api/users/{n}") for n in names))

    # -- a notebook in a learner's kernel -------------------------------------------------------

    async def run_cells(self, name: str, cells: list[tuple[str, bool]], timeout: float = 300) -> list[CellRun]:
        """Run ``(code, may_fail)`` cells one by one in a new kernel of ``name``'s server, started
        in their ``~/mail-lab``; stops at the first unexpected failure. The kernel is shut down."""
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        base = f"/user/{name}/api/kernels"
        kernel = await self.api("POST", base, {"name": "python3", "path": ""})
        kid = kernel["id"]
        session = uuid.uuid4().hex
        ws = await websocket_connect(HTTPRequest(
            f"ws://127.0.0.1:{self.port}{base}/{kid}/channels?session_id={session}",
            headers={"Authorization": f"token {self.token}"}, request_timeout=60))
        runs: list[CellRun] = []
        try:
            for code, may_fail in cells:
                msg_id = uuid.uuid4().hex
                ws.write_message(json.dumps({
                    "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": session,
                               "username": name, "version": "5.3", "date": ""},
                    "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                    "content": {"code": code, "silent": False, "store_history": True,
                                "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}}))
                out, error, replied, idle = [], "", False, False
                deadline = time.monotonic() + timeout
                while not (replied and idle):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise ClassroomError(f"{name}: a cell ran over {timeout:.0f} s:\n{code[:200]}")
                    raw = await asyncio.wait_for(ws.read_message(), left)
                    if raw is None:
                        raise ClassroomError(f"{name}: the kernel's connection closed")
                    msg = json.loads(raw)
                    if msg.get("parent_header", {}).get("msg_id") != msg_id:
                        continue
                    kind = msg["header"]["msg_type"]
                    if kind == "stream":
                        out.append(msg["content"]["text"])
                    elif kind == "error":
                        error = f"{msg['content']['ename']}: {msg['content']['evalue']}"
                    elif kind == "execute_reply":
                        replied = True
                        if msg["content"]["status"] != "ok" and not error:
                            error = msg["content"].get("ename", "error")
                    elif kind == "status" and msg["content"]["execution_state"] == "idle":
                        idle = True
                run = CellRun(ok=not error or may_fail, error=error, stdout="".join(out))
                runs.append(run)
                if not run.ok:
                    break
        finally:
            ws.close()
            await self.api("DELETE", f"{base}/{kid}")
        return runs


def notebook_cells(path: Path) -> list[tuple[str, bool]]:
    """The code cells of a notebook as ``(source, may_fail)``: tagged raises-exception may fail."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    return [("".join(c["source"]) if isinstance(c["source"], list) else c["source"],
             "raises-exception" in c.get("metadata", {}).get("tags", []))
            for c in nb["cells"] if c["cell_type"] == "code"]


#: Run in a learner's kernel before chapter 00's last cell (which stops the lab): one more
#: message marked with the learner's name, then what their own lab's mailbox holds.
PROBE = '''
import getpass as _gp, json as _json, os as _os
_me = _gp.getuser()
_r = lab.send("alice@isp.example.net", "bob@inbox.example.org", via="smarthost", subject=f"classroom {_me}")
assert _r.ok, _r.reason
lab.wait_for_mail("bob@inbox.example.org", count=1, subject=f"classroom {_me}", timeout=60)
print("CLASSROOM " + _json.dumps({"user": _me, "uid": _os.getuid(), "dir": str(lab.dir),
      "dir_uid": _os.stat(lab.dir).st_uid,
      "subjects": sorted(m["subject"] for m in lab.mailbox("bob@inbox.example.org"))}))
'''


def chapter00_with_probe() -> list[tuple[str, bool]]:
    cells = notebook_cells(ROOT / "notebooks" / "00_welcome.ipynb")
    return cells[:-1] + [(PROBE, False)] + cells[-1:]


def probe_result(runs: list[CellRun]) -> dict:
    for r in runs:
        for line in r.stdout.splitlines():
            if line.startswith("CLASSROOM "):
                return json.loads(line[len("CLASSROOM "):])
    raise ClassroomError("the probe cell printed nothing")


def learner_rss_kib(name: str) -> int:
    return sum(rss_kib(p) for p in processes_of_uid(pwd.getpwnam(name).pw_uid))
