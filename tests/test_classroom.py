"""The classroom (classroom/): a JupyterHub on loopback, ten learners, chapter 00 in each at once.

The learners are real system users (classroom/learners.py, useradd as root), made by the test in
a group of its own and removed after: that is what ``make classroom`` uses, so the test proves
the same thing an instructor runs, learners' folders and processes kept apart by the kernel.
Needs root, JupyterHub (the lock) and configurable-http-proxy (``make node-packages``): without
them the test skips with one line, or fails under LABKIT_REQUIRE_REAL=1 (CI).
"""
from __future__ import annotations

import asyncio
import grp
import importlib.util
import os
import pwd
import secrets
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REQUIRE_REAL

ROOT = Path(__file__).resolve().parent.parent
LEARNERS = 10


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


driver = _load("classroom_driver", ROOT / "classroom" / "driver.py")
learners = _load("classroom_learners", ROOT / "classroom" / "learners.py")


def _require(ok: bool, msg: str) -> None:
    if ok:
        return
    if REQUIRE_REAL:
        pytest.fail(msg + " and LABKIT_REQUIRE_REAL=1 forbids skipping", pytrace=False)
    pytest.skip(msg)


def test_the_hub_listens_on_loopback_only():
    text = (ROOT / "classroom" / "jupyterhub_config.py").read_text()
    assert 'c.JupyterHub.ip = "127.0.0.1"' in text and 'c.JupyterHub.hub_ip = "127.0.0.1"' in text
    assert "http://127.0.0.1:" in text.split("ConfigurableHTTPProxy.api_url")[1].splitlines()[0]
    assert "0.0.0.0" not in text


def test_kubernetes_values_name_the_lab_image_and_the_measured_memory():
    values = yaml.safe_load((ROOT / "classroom" / "kubernetes" / "values.yaml").read_text())
    single = values["singleuser"]
    # The image docker/ builds (docker/Dockerfile: docker build -t mail-lab .)
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "-t mail-lab " in dockerfile
    assert single["image"]["name"].rsplit("/", 1)[-1] == "mail-lab"
    assert single["image"]["tag"]
    mem = single["memory"]
    assert mem["guarantee"].endswith(("M", "G")) and mem["limit"].endswith(("M", "G"))
    assert single["cmd"][0] == "jupyterhub-singleuser"
    assert single["uid"] == 0, "real mode runs Postfix from the sandbox as root inside the learner's pod"
    assert values["hub"]["config"]["JupyterHub"]["authenticator_class"]


@pytest.mark.real
def test_ten_learners_each_with_their_own_lab(tmp_path, monkeypatch):
    _require(os.geteuid() == 0, "the classroom starts each learner's JupyterLab as that learner: needs root")
    chp = ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
    _require(chp.exists(), "configurable-http-proxy is not installed (run: make node-packages)")
    _require((driver.VENV_BIN / "jupyterhub").exists(), "classroom/.venv is missing (run: make classroom-venv)")

    tag = secrets.token_hex(3)
    group = f"mlt{tag}"
    names = [f"mlt{tag}-{i:02d}" for i in range(LEARNERS)]
    monkeypatch.setenv("MAIL_LAB_LEARNERS_GROUP", group)
    state = tmp_path / "hub"
    learners.add(names, group)
    uids = {n: pwd.getpwnam(n).pw_uid for n in names}
    homes = {n: Path(pwd.getpwnam(n).pw_dir) for n in names}
    hub = driver.Hub(state)
    try:
        hub.start()

        async def scenario():
            ready = await hub.start_servers(names)
            runs = await asyncio.gather(*(hub.run_cells(n, driver.chapter00_with_probe()) for n in names))
            await hub.stop_servers(names)
            return ready, runs

        ready, runs = asyncio.run(scenario())
        dirs = set()
        for name, cells in zip(names, runs):
            bad = [r for r in cells if not r.ok]
            assert not bad, f"{name}: chapter 00 failed: {bad[0].error}\n{bad[0].stdout[-1500:]}"
            probe = driver.probe_result(cells)
            assert probe["user"] == name and probe["uid"] == uids[name], probe
            assert probe["dir_uid"] == uids[name], f"{name}'s lab sandbox belongs to uid {probe['dir_uid']}"
            subjects = probe["subjects"]
            assert "Hello from home" in subjects, subjects
            assert f"classroom {name}" in subjects, f"{name}'s message is not in their own mailbox: {subjects}"
            others = [s for s in subjects if s.startswith("classroom ") and s != f"classroom {name}"]
            assert not others, f"{name}'s mailbox holds other learners' messages: {others}"
            dirs.add(probe["dir"])
            assert (homes[name] / "mail-lab" / "00_welcome.ipynb").exists()
        assert len(dirs) == LEARNERS, "two learners shared a lab sandbox"
        print(f"{LEARNERS} learners ready in {ready:.1f} s")
    finally:
        hub.stop()
        left = {n: driver.processes_of_uid(u) for n, u in uids.items()}
        left = {n: p for n, p in left.items() if p}
        stray = driver.processes_in_group(hub.pgid) if hasattr(hub, "pgid") else []
        try:
            learners.remove([n for n in names if n not in left], group)
        finally:
            os.system(f"groupdel {group} 2>/dev/null")
    assert not left, f"learners' processes left running: {left}"
    assert not stray, f"hub or proxy processes left running: {stray}"
    for n in names:
        with pytest.raises(KeyError):
            pwd.getpwnam(n)
        assert not homes[n].exists(), f"{homes[n]} is left"
    with pytest.raises(KeyError):
        grp.getgrnam(group)
