"""labkit bundle and labkit doctor from the command line: exit statuses, nothing written on error,
and no password in any output."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mail-site.toml"


def labkit(*args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "labkit", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def test_bundle_writes_the_folder_and_says_what_is_in_it(tmp_path):
    r = labkit("bundle", "--site", str(EXAMPLE), "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    assert "APPLY.md" in r.stdout and "template" in r.stdout
    assert (tmp_path / "b" / "APPLY.md").is_file()


def test_a_password_from_the_environment_reaches_sasl_passwd_only(tmp_path):
    r = labkit("bundle", "--site", str(EXAMPLE), "--out", str(tmp_path / "b"), env={"MAIL_SITE_PASSWORD": "Pw-9x!z"})
    assert r.returncode == 0 and "Pw-9x!z" not in r.stdout + r.stderr
    holders = [p.name for p in (tmp_path / "b").rglob("*") if p.is_file() and "Pw-9x!z" in p.read_text()]
    assert holders == ["sasl_passwd"]


def test_a_bad_profile_names_field_and_line_and_writes_nothing(tmp_path):
    bad = tmp_path / "site.toml"
    bad.write_text(EXAMPLE.read_text().replace("port = 587", "port = 25"))
    r = labkit("bundle", "--site", str(bad), "--out", str(tmp_path / "b"))
    assert r.returncode == 1 and "smarthost.port" in r.stderr and "line 26" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["site.toml"]


def test_up_site_refuses_a_bad_profile_before_starting(tmp_path):
    bad = tmp_path / "site.toml"
    bad.write_text(EXAMPLE.read_text().replace('selector = "mail"', 'selector = "mail\\nX"'))
    r = labkit("up", "--site", str(bad), "--dir", str(tmp_path / "lab"))
    assert r.returncode == 1 and "dkim.selector" in r.stderr
    assert not (tmp_path / "lab").exists()


def test_doctor_needs_a_profile_or_a_lab(tmp_path):
    r = labkit("doctor")
    assert r.returncode == 2 and "--site" in r.stderr
    r = labkit("doctor", "--lab", str(tmp_path))
    assert r.returncode == 2 and "no lab is running" in r.stderr


def test_doctor_on_a_folder_without_postfix_fails_with_rows(tmp_path):
    """A host where nothing was applied yet: the local checks that can run say what to do."""
    (tmp_path / "main.cf").write_text("myhostname = debian.localdomain\nmynetworks = 127.0.0.0/8\n")
    r = labkit("doctor", "--site", str(EXAMPLE), "--postfix-dir", str(tmp_path), "--opendkim-conf",
               str(tmp_path / "none.conf"), "--no-dns", "--json")
    assert r.returncode == 2
    import json

    rows = {row["id"]: row for row in json.loads(r.stdout)}
    assert rows["postfix.myhostname"]["status"] == "fail" and "postconf -e" in rows["postfix.myhostname"]["fix"]
    assert rows["postfix.relayhost-bracketed"]["status"] == "fail"
    assert rows["postfix.mynetworks"]["status"] == "pass"


def test_doctor_with_a_nameserver_that_does_not_answer(tmp_path):
    (tmp_path / "main.cf").write_text("myhostname = mail.example.net\n")
    r = labkit("doctor", "--site", str(EXAMPLE), "--postfix-dir", str(tmp_path), "--no-local",
               "--nameserver", "127.0.0.1:9")
    assert r.returncode == 2 and "dns.mx" in r.stdout and "FAIL" in r.stdout
