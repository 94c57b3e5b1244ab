"""The CLI contract: labkit up / status / down / send / mailbox, from other processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import processes_mentioning

ROLES = {"dns", "mta", "submission", "submissions", "mda", "pop3", "pop3s", "imap", "imaps",
         "smarthost", "inbox", "verifier"}


def labkit(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "labkit", *args], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "NO_COLOR": "1"})
    if check and p.returncode != 0:
        raise AssertionError(f"labkit {' '.join(args)} exited {p.returncode}: {p.stderr}")
    return p


def sockets_of(pid: int) -> list[tuple[str, str]]:
    """(protocol, local address) of every socket the process holds, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for proto in ("tcp", "udp", "tcp6", "udp6"):
        for line in Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]:
            f = line.split()
            if f[9] in inodes:
                addr_hex = f[1].split(":")[0]
                if len(addr_hex) == 8:
                    addr = ".".join(str(int(addr_hex[i:i + 2], 16)) for i in (6, 4, 2, 0))
                else:
                    addr = "ipv6:" + addr_hex
                found.append((proto, addr))
    return found


@pytest.fixture
def lab_dir(tmp_path):
    d = tmp_path / "lab"
    yield d
    labkit("down", "--dir", str(d), check=False)
    assert not processes_mentioning(str(d)), "a lab process outlived the test"


def test_help_helps():
    p = labkit("--help")
    assert "labkit up" in p.stdout and "examples" in p.stdout
    p = labkit("send", "--help")
    assert "--via" in p.stdout


def test_up_status_send_mailbox_down(lab_dir):
    up = labkit("up", "--dir", str(lab_dir), "--json")
    st = json.loads(up.stdout)
    assert set(st["services"]) == ROLES
    assert Path(st["ca"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    assert (lab_dir / "lab.json").stat().st_mode & 0o077 == 0

    # every socket the lab process holds is on loopback
    socks = sockets_of(st["pid"])
    assert len(socks) >= len(ROLES) + 1  # DNS has UDP and TCP
    for proto, addr in socks:
        assert addr.startswith("127.") or addr == "ipv6:00000000000000000000000001000000", (proto, addr)

    again = labkit("up", "--dir", str(lab_dir), check=False)
    assert again.returncode != 0 and "already running" in again.stderr and str(lab_dir) in again.stderr

    status = json.loads(labkit("status", "--dir", str(lab_dir), "--json").stdout)
    assert status["services"] == st["services"]
    assert "smarthost" in labkit("status", "--dir", str(lab_dir)).stdout

    sent = labkit("send", "--dir", str(lab_dir), "--from", "alice@isp.example.net", "--to",
                  "bob@inbox.example.org", "--via", "smarthost", "--subject", "from the CLI")
    assert "STARTTLS" in sent.stdout and "AUTH PLAIN" in sent.stdout
    assert "isp-lab-password" not in sent.stdout, "the password must not be printed"
    for _ in range(200):
        box = json.loads(labkit("mailbox", "--dir", str(lab_dir), "bob@inbox.example.org", "--json").stdout)
        if box["messages"]:
            break
    assert box["messages"][0]["subject"] == "from the CLI"

    refused = labkit("send", "--dir", str(lab_dir), "--from", "alice@isp.example.net", "--to",
                     "bob@inbox.example.org", "--via", "smarthost", "--no-auth", check=False)
    assert refused.returncode == 1 and "not sent" in refused.stdout

    down = labkit("down", "--dir", str(lab_dir))
    assert "stopped" in down.stdout
    assert not (lab_dir / "lab.json").exists()
    assert not processes_mentioning(str(lab_dir))
    assert "nothing to stop" in labkit("down", "--dir", str(lab_dir)).stdout


def test_status_without_a_lab_fails_with_a_reason(tmp_path):
    p = labkit("status", "--dir", str(tmp_path), check=False)
    assert p.returncode == 1 and "no lab is running" in p.stderr and "labkit up" in p.stderr


def test_stale_state_is_detected_and_cleaned(lab_dir):
    lab_dir.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (lab_dir / "lab.json").write_text(json.dumps({"pid": dead.pid, "services": {}}))
    assert "stale" in labkit("status", "--dir", str(lab_dir), check=False).stderr
    up = labkit("up", "--dir", str(lab_dir))
    assert "stale" in up.stderr
    labkit("down", "--dir", str(lab_dir))


def test_bad_arguments_get_clear_errors(lab_dir):
    labkit("up", "--dir", str(lab_dir))
    p = labkit("send", "--dir", str(lab_dir), "--from", "a@example.com", "--to", "b@example.com",
               "--via", "pop7", check=False)
    assert p.returncode == 2 and "--via pop7" in p.stderr
    p = labkit("send", "--dir", str(lab_dir), "--from", "a@example.com", "--to", "b@example.com",
               "--auth", "nopassword", check=False)
    assert p.returncode == 2 and "USER:PASSWORD" in p.stderr
    p = labkit("mailbox", "--dir", str(lab_dir), "not-an-address", check=False)
    assert p.returncode == 2


def test_hosts_prints_applies_and_removes_only_its_own_lines(tmp_path, lab_dir):
    lines = labkit("hosts", "--dir", str(lab_dir)).stdout.splitlines()
    assert "127.0.20.25\tmail.example.com\t# Mail Lab (labkit hosts)" in lines and len(lines) == 6
    hosts = tmp_path / "hosts"
    original = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n# a comment of the admin's\n"
    hosts.write_text(original)
    applied = labkit("hosts", "--dir", str(lab_dir), "--apply", "--file", str(hosts))
    assert "added the 6 lab lines" in applied.stdout
    once = hosts.read_text()
    assert once.startswith(original) and once.splitlines()[3:] == lines
    # again, through the environment variable: nothing changes
    p = subprocess.run([sys.executable, "-m", "labkit", "hosts", "--dir", str(lab_dir), "--apply"],
                       capture_output=True, text=True, timeout=60, env={**os.environ, "LABKIT_HOSTS_FILE": str(hosts)})
    assert p.returncode == 0 and "nothing changed" in p.stdout and hosts.read_text() == once
    # a lab that runs answers with its own addresses: the same ones here
    labkit("up", "--dir", str(lab_dir))
    assert labkit("hosts", "--dir", str(lab_dir)).stdout.splitlines() == lines
    assert "removed" in labkit("hosts", "--dir", str(lab_dir), "--remove", "--file", str(hosts)).stdout
    assert hosts.read_text() == original
    assert "nothing changed" in labkit("hosts", "--dir", str(lab_dir), "--remove", "--file", str(hosts)).stdout
    missing = labkit("hosts", "--apply", "--file", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    both = labkit("hosts", "--apply", "--remove", check=False)
    assert both.returncode == 2


# -- issue 13, part 4: one line for every bad input, never a traceback -------------------------

@pytest.mark.parametrize("args, words", [
    (["up", "--dir", "/etc/hostname/lab"], "Not a directory"),
    (["up", "--dir", "/proc/mail-lab"], "No such file or directory"),
    (["up", "--dir", ""], "empty folder name"),
    (["mailbox", "--dir", "/nonexistent/lab", "bob@../../../var/lib/x/mail/inbox.example.org"], "path separator"),
    (["mailbox", "--dir", "/nonexistent/lab", "nobody@nowhere.invalid"], "no lab host holds mail for nowhere.invalid"),
])
def test_bad_folders_and_addresses_get_one_line(args, words):
    p = labkit(*args, check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert words in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_a_read_only_folder_gets_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        p = labkit("up", "--dir", str(ro / "lab"), check=False)
    finally:
        ro.chmod(0o755)
    if os.geteuid() == 0:  # root writes anywhere: the lab simply starts
        labkit("down", "--dir", str(ro / "lab"), check=False)
        return
    assert p.returncode == 1 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_a_reader_that_goes_away_gets_no_traceback(lab_dir):
    labkit("up", "--dir", str(lab_dir))
    for _ in range(10):
        p = subprocess.run(f"{sys.executable} -m labkit status --json --dir {lab_dir} | head -1", shell=True,
                           capture_output=True, text=True, timeout=60)
        assert "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


def test_via_lists_only_smtp_roles_and_mailbox_waits(lab_dir):
    labkit("up", "--dir", str(lab_dir))
    p = labkit("send", "--dir", str(lab_dir), "--from", "alice@example.com", "--to", "bob@inbox.example.org",
               "--via", "pop3", check=False)
    assert p.returncode == 2
    offered = p.stderr.rsplit("choose one of ", 1)[1]
    assert "submission" in offered and not {"pop3", "imap", "mda", "dns", "imaps", "pop3s"} & set(offered.replace(",", " ").split())
    labkit("send", "--dir", str(lab_dir), "--from", "alice@example.com", "--to", "bob@inbox.example.org",
           "--subject", "waited for")
    p = labkit("mailbox", "--dir", str(lab_dir), "--wait", "10", "bob@inbox.example.org")
    assert "waited for" in p.stdout
    p = labkit("mailbox", "--dir", str(lab_dir), "--wait", "0.3", "postmaster@example.com", check=False)
    assert p.returncode == 1 and "after waiting" in p.stdout


def test_a_failed_up_real_leaves_nothing(tmp_path):
    from conftest import require_real_postfix

    require_real_postfix()
    folder = tmp_path / "private" / "lab"  # pytest's tmp folders are 0700: user postfix cannot walk them
    p = labkit("up", "--real", "--dir", str(folder), check=False)
    assert p.returncode == 1 and "cannot pass through" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "private").exists(), "a failed up left files behind"


# -- issue 13, part 3: faults from the terminal --------------------------------------------------

def test_stop_and_start_a_role_from_the_terminal(lab_dir):
    labkit("up", "--dir", str(lab_dir))
    p = labkit("stop", "smarthost", "--dir", str(lab_dir))
    assert "smarthost: stopped" in p.stdout
    st = json.loads(labkit("status", "--dir", str(lab_dir), "--json").stdout)
    assert st["services"]["smarthost"]["state"] == "stopped" and st["stopped"] == ["smarthost"]
    assert "stopped" in labkit("status", "--dir", str(lab_dir)).stdout
    sent = labkit("send", "--dir", str(lab_dir), "--from", "alice@example.com", "--to", "bob@inbox.example.org",
                  "--subject", "through an outage")
    assert "sent:" in sent.stdout  # your server takes it, and holds it while the ISP is down
    again = labkit("stop", "smarthost", "--dir", str(lab_dir), check=False)
    assert again.returncode == 1 and "stopped already" in again.stderr
    assert labkit("start", "smarthost", "--dir", str(lab_dir)).returncode == 0
    assert json.loads(labkit("status", "--dir", str(lab_dir), "--json").stdout)["stopped"] == []
    p = labkit("mailbox", "--dir", str(lab_dir), "--wait", "40", "bob@inbox.example.org")
    assert "through an outage" in p.stdout
    for args, words in ((("stop", "dns"), "cannot be stopped"), (("stop", "nosuch"), "no role 'nosuch'"),
                        (("start", "inbox"), "was not stopped")):
        p = labkit(*args, "--dir", str(lab_dir), check=False)
        assert p.returncode == 1 and words in p.stderr and "Traceback" not in p.stderr
