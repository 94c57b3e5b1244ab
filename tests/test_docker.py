"""The lab image (docker/): built and run for real by scripts/docker-smoke.sh.

The smoke script lints the Dockerfile and compose.yaml, builds the image (making the Debian base
image itself where no registry answers), starts a container, and inside it sends a message to
the inbox mailbox through the embedded lab, through the labkit CLI and through real Postfix,
then runs chapter 00 under nbval. It needs podman or a running Docker engine; as root with
apt-get it installs podman itself. Otherwise the test skips with one line, or fails under
LABKIT_REQUIRE_REAL=1 (CI).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import REQUIRE_REAL

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "docker-smoke.sh"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"


def _engine_or_skip() -> None:
    if shutil.which("podman"):
        return
    if shutil.which("docker") and subprocess.run(["docker", "info"], check=False, capture_output=True,
                                                 timeout=30).returncode == 0:
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        return  # the script installs podman, buildah, runc and debootstrap
    msg = "neither podman nor a Docker engine here (as root with apt-get the smoke script installs podman)"
    if REQUIRE_REAL:
        pytest.fail(msg + " and LABKIT_REQUIRE_REAL=1 forbids skipping", pytrace=False)
    pytest.skip(msg)


def test_dockerfile_uses_the_one_package_list():
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM debian:(bookworm|trixie|1[2-9])", text, re.MULTILINE), "an ordinary Debian 12+ base"
    assert "COPY scripts/install-system-packages.sh" in text
    assert "bash /tmp/install-system-packages.sh" in text
    # Python dependencies: the lock that `make lab` and `make test` install, hashes checked
    assert re.search(r"--require-hashes --no-deps \\\s*-r /opt/mail-lab/requirements.lock", text)


def test_nothing_secret_in_the_image_definition():
    for path in (DOCKERFILE, COMPOSE):
        text = path.read_text().lower()
        for word in ("password", "jupyter_token", "serverapp.token", "identityprovider.token",
                     "private key"):
            assert word not in text, f"{path.name} mentions {word!r}"


def test_compose_publishes_on_localhost_only_and_keeps_work_in_a_volume():
    text = COMPOSE.read_text()
    ports = re.findall(r'^\s*-\s*"?([0-9.:]+)"?', text.split("ports:")[1].split("volumes:")[0], re.MULTILINE)
    assert ports == ["127.0.0.1:8888:8888"]
    assert re.search(r"^\s*-\s*work:/srv/mail-lab/work\s*$", text, re.MULTILINE)
    assert re.search(r"^volumes:\s*\n\s+work:\s*\n\s+name: mail-lab-work", text, re.MULTILINE)
    assert "privileged" not in text and "network_mode" not in text


def test_smoke_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


@pytest.mark.real
def test_image_builds_and_delivers_for_real():
    _engine_or_skip()
    # Its own session, so that on a timeout SIGTERM reaches podman too and the script's trap
    # still removes the container.
    proc = subprocess.Popen(["bash", str(SCRIPT)], cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        pytest.fail("scripts/docker-smoke.sh took more than 10 minutes:\n" + out[-4000:], pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"scripts/docker-smoke.sh failed (exit {proc.returncode}):\n{out[-4000:]}", pytrace=False)
    assert "embedded lab: smarthost -> inbox" in out
    assert "labkit CLI:" in out
    assert re.search(r"real mode: .*inbox|PENDING: real-Postfix", out), out[-2000:]
    assert re.search(r"\d+ passed", out), out[-2000:]
