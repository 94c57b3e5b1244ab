"""A lab that survives its faults (issue 13, part 1): real daemons never outlive a dead lab.

Each test kills or stops something the way a user (or a crash) would, then proves that no
process of the sandbox is left. Real mode: root and the system packages, else skipped.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import postfix_processes, processes_mentioning, require_real_postfix
from labkit import Lab, LabRunningError, PostfixConfig, PostfixRunner, StartError

BASE = Path("/var/lib/mail-lab")


def labkit(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "labkit", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "NO_COLOR": "1"})


def _answers(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


def sandbox_processes(folder: Path) -> list[int]:
    """Every live process of a sandbox: by its path on the command line, and Postfix's by MAIL_CONFIG."""
    found = set(processes_mentioning(str(folder))) | set(postfix_processes(str(folder / "postfix" / "etc")))
    found.discard(os.getpid())
    return sorted(p for p in found if Path(f"/proc/{p}/cmdline").exists()
                  and Path(f"/proc/{p}/cmdline").read_bytes())


def wait_no_processes(folder: Path, timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := sandbox_processes(folder)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.fixture
def sandbox():
    require_real_postfix()
    BASE.mkdir(mode=0o755, exist_ok=True)
    folder = BASE / f"survival-{os.getpid()}-{time.monotonic_ns()}"
    yield folder
    labkit("down", "--dir", str(folder))
    left = wait_no_processes(folder)
    shutil.rmtree(folder, ignore_errors=True)
    assert not left, f"processes of {folder} outlived the test: {left}"


def _lab_pid(folder: Path) -> int:
    return int(json.loads((folder / "lab.json").read_text())["pid"])


def test_kill_9_of_the_lab_process_then_down_leaves_nothing(sandbox):
    up = labkit("up", "--real", "--dir", str(sandbox), "--json")
    assert up.returncode == 0, up.stderr
    st = json.loads(up.stdout)
    recorded = json.loads((sandbox / "run" / "daemons.json").read_text())
    assert {r["name"] for r in recorded} == {"postfix", "dovecot", "opendkim"}
    os.kill(_lab_pid(sandbox), signal.SIGKILL)
    time.sleep(0.3)
    assert sandbox_processes(sandbox), "the daemons should still run: their lab was killed, not them"
    down = labkit("down", "--dir", str(sandbox))
    assert down.returncode == 0, down.stderr
    assert "stopped its daemons" in down.stderr and "master" in down.stderr
    assert not wait_no_processes(sandbox, 2)
    mta = st["services"]["mta"]
    assert not _answers(mta["host"], mta["port"])


def test_sigstop_of_the_lab_process_then_down_leaves_nothing(sandbox):
    up = labkit("up", "--real", "--dir", str(sandbox))
    assert up.returncode == 0, up.stderr
    pid = _lab_pid(sandbox)
    os.kill(pid, signal.SIGSTOP)
    began = time.monotonic()
    down = labkit("down", "--dir", str(sandbox))
    assert down.returncode == 0, down.stderr
    assert time.monotonic() - began < 10, (down.stdout, down.stderr, (sandbox / "log" / "daemon.log").read_text()[-2000:])
    assert not (sandbox / "lab.json").exists()
    assert not wait_no_processes(sandbox, 2)


def test_up_after_a_killed_lab_stops_the_leftovers_and_every_port_answers(sandbox):
    assert labkit("up", "--real", "--dir", str(sandbox)).returncode == 0
    old_master = int((sandbox / "postfix" / "queue" / "pid" / "master.pid").read_text())
    os.kill(_lab_pid(sandbox), signal.SIGKILL)
    up = labkit("up", "--real", "--dir", str(sandbox), "--json")
    assert up.returncode == 0, up.stderr
    assert f"{old_master} " in up.stderr and "stopped its daemons" in up.stderr
    st = json.loads(up.stdout)
    for role in ("mta", "submission", "submissions", "imap", "pop3", "mda"):
        svc = st["services"][role]
        assert _answers(svc["host"], svc["port"]), f"{role} does not answer on {svc['host']}:{svc['port']}"
    assert int((sandbox / "postfix" / "queue" / "pid" / "master.pid").read_text()) != old_master


def _base(folder: Path, ports: tuple[int, int]) -> dict:
    return dict(myhostname="mail.example.com", listen=("127.0.0.1", ports[0]),
                config_directory=str(folder / "etc"), queue_directory=str(folder / "queue"),
                data_directory=str(folder / "data"), maillog_file=str(folder / "maillog"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_postfix_runner_never_adopts_a_master_it_did_not_start(sandbox):
    folder = sandbox / "pf"
    cfg = PostfixConfig(**_base(folder, (_free_port(), 0)))
    cfg.write()
    first = PostfixRunner(cfg.config_directory).start()
    try:
        master = first.master_pid()
        with pytest.raises(LabRunningError) as e:
            PostfixRunner(cfg.config_directory).start()
        assert str(master) in str(e.value) and f"postfix -c {cfg.config_directory} stop" in str(e.value)
        assert first.start() is first  # its own master: start() twice is fine
    finally:
        first.stop()
    assert not postfix_processes(cfg.config_directory)


def test_postfix_start_fails_cleanly_when_a_promised_port_is_taken(sandbox, tmp_path):
    from labkit import pki

    folder = sandbox / "pf"
    ca = pki.CA.create("test CA")
    (sandbox / "tls").mkdir(parents=True)
    os.chmod(sandbox, 0o755)
    creds = pki.issue_host(ca, sandbox / "tls", "mail.example.com", (), ["127.0.0.1"], ca.save(sandbox / "tls"))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        cfg = PostfixConfig(**_base(folder, (_free_port(), 0)), submission=("127.0.0.1", taken),
                            smtpd_tls_cert_file=str(creds.cert_path), smtpd_tls_key_file=str(creds.key_path))
        cfg.write()
        runner = PostfixRunner(cfg.config_directory)
        with pytest.raises(StartError) as e:
            runner.start(timeout=5)
        assert str(taken) in str(e.value)
    assert not postfix_processes(cfg.config_directory), "a failed start left Postfix processes"


def test_postfix_master_killed_mid_queue_loses_nothing(sandbox):
    lab = Lab(sandbox, real=True, dkim=False)
    subjects = [f"queued {i}" for i in range(5)]
    try:
        lab.start()
        lab.stop_service("smarthost")
        for subject in subjects:
            res = lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False, subject=subject)
            assert res.ok, res.reason
        deadline = time.monotonic() + 20
        while len(lab.postfix_runner.queue()) < len(subjects) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(lab.postfix_runner.queue()) == len(subjects)
        os.kill(lab.postfix_runner.master_pid(), signal.SIGKILL)
        lab.stop()
        assert not wait_no_processes(sandbox, 5)
        lab = Lab(sandbox, real=True, dkim=False)
        lab.start()
        for subject in subjects:
            lab.wait_for_mail("bob@inbox.example.org", subject=subject, timeout=30)
        time.sleep(1)
        got = [m["subject"] for m in lab.mailbox("bob@inbox.example.org")]
        assert sorted(got) == sorted(subjects), got  # each once: none lost, none twice
    finally:
        lab.stop()
    assert not wait_no_processes(sandbox, 5)


def test_a_daemon_that_dies_is_noticed_by_status_and_an_event(sandbox):
    assert labkit("up", "--real", "--dir", str(sandbox)).returncode == 0
    assert labkit("status", "--dir", str(sandbox)).returncode == 0
    recorded = {r["name"]: r for r in json.loads((sandbox / "run" / "daemons.json").read_text())}
    os.kill(recorded["opendkim"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    events = sandbox / "log" / "events.jsonl"
    while '"daemon-died"' not in events.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    died = [json.loads(line) for line in events.read_text().splitlines() if '"daemon-died"' in line]
    assert died and died[0]["role"] == "opendkim" and died[0]["details"]["pid"] == recorded["opendkim"]["pid"]
    status = labkit("status", "--dir", str(sandbox))
    assert status.returncode == 1 and "opendkim: NOT RUNNING" in status.stdout, status.stdout
    assert "opendkim" in status.stderr
    st = json.loads(labkit("status", "--dir", str(sandbox), "--json").stdout)
    assert st["daemons"]["opendkim"]["running"] is False and st["daemons"]["postfix"]["running"] is True


def test_stop_and_start_real_postfix_from_the_terminal(sandbox):
    up = labkit("up", "--real", "--dir", str(sandbox), "--json")
    assert up.returncode == 0, up.stderr
    mta = json.loads(up.stdout)["services"]["mta"]
    p = labkit("stop", "mta", "--dir", str(sandbox))
    assert p.returncode == 0 and "submission" in p.stdout, p.stderr
    assert not _answers(mta["host"], mta["port"])
    status = labkit("status", "--dir", str(sandbox), "--json")
    st = json.loads(status.stdout)
    assert status.returncode == 0 and {"mta", "submission", "submissions"} <= set(st["stopped"])
    assert labkit("start", "mta", "--dir", str(sandbox)).returncode == 0
    assert _answers(mta["host"], mta["port"])  # the same port as before
    assert not json.loads(labkit("status", "--dir", str(sandbox), "--json").stdout)["stopped"]
