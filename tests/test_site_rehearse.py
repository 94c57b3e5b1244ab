"""Rehearsal with the example profile's names, in real mode: the lab world takes the names, the
bundle applied in the sandbox is what the doctor finds green, and every break-it fault makes the
matching doctor check fail and no other. Needs root, Postfix and OpenDKIM (skips otherwise,
except under LABKIT_REQUIRE_REAL=1)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import postfix_processes, processes_mentioning, require_real_postfix, require_tool
from labkit import Lab, StartError, breakfix
from labkit.lab.site import bundle, doctor, load
from labkit.lab.site.rehearse import LAB_ISP_PASSWORD, apply_bundle

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mail-site.toml"


def _require_real():
    require_real_postfix()
    require_tool("opendkim")


def started(**kw) -> Lab:
    """A started Lab; once more if a port picked for Postfix was taken meanwhile by another
    process on this machine (other labs share these loopback addresses)."""
    for attempt in (1, 2):
        lab = Lab(**kw)
        try:
            return lab.start()
        except StartError as e:
            if attempt == 2 or "Address already in use" not in str(e):
                raise
    raise AssertionError("unreachable")


class Failing(list):
    """The ids of the failing checks; its repr shows every row that did not pass (for a failed assert)."""

    def __init__(self, findings):
        super().__init__(f.id for f in findings if f.status == "fail")
        self.rows = doctor.render_rows([f for f in findings if f.status != "pass"])

    def __repr__(self) -> str:
        return f"{list(self)!r}\n{self.rows}"


def failing(lab, login: bool = True) -> Failing:
    return Failing(doctor.examine_lab(lab.status(), login=login))


@pytest.fixture(scope="module")
def lab():
    _require_real()
    lab = started(site=EXAMPLE, real=True)
    config_dir = None
    try:
        config_dir = lab.postfix_config.config_directory
        yield lab
    finally:
        folder = str(lab.dir)
        lab.stop()
        if config_dir:
            assert not postfix_processes(config_dir), "a Postfix process outlived lab.stop()"
            assert not processes_mentioning(folder), "a process of the lab outlived lab.stop()"


@pytest.fixture
def fresh(lab):
    breakfix.restore(lab)
    lab.strip_starttls("smarthost", False)
    yield lab
    breakfix.restore(lab)
    lab.strip_starttls("smarthost", False)


def test_the_lab_plays_the_profiles_names(lab):
    assert lab.world.host("home").name == "mail.example.net"
    assert lab.world.host("isp").name == "smtp.isp.example"
    assert lab.postfix_config.myhostname == "mail.example.net"
    assert lab.dkim_key.selector == "mail" and lab.dkim_key.domain == "example.net"
    st = lab.status()
    assert st["site"]["applied"] and st["site"]["public_ip"] == lab.world.host("home").address


def test_the_rehearsal_is_green_and_signed_mail_passes_at_the_provider(fresh):
    findings = doctor.examine_lab(fresh.status(), login=True)
    assert [f.id for f in findings if f.status != "pass"] == [], doctor.render_rows(findings)
    assert len(findings) >= 30
    res = fresh.send("alice@example.net", "bob@inbox.example.org", subject="Rehearsed with my names")
    assert res.ok, res.reason
    fresh.wait_for_mail("bob@inbox.example.org", subject="Rehearsed with my names", timeout=30)
    assessed = [e for e in fresh.events if e.kind == "assessed"][-1].details
    assert (assessed["spf"], assessed["dkim"], assessed["dmarc"], assessed["folder"]) == ("pass", "pass", "pass", "Inbox")
    relayed = [e for e in fresh.events if e.role == "smarthost" and e.kind == "auth"]
    assert relayed and relayed[-1].get("user") == "you@isp.example" and relayed[-1].get("tls") is True


# the break-it faults of labkit.teach.breakfix, and the one check each must fail
FAULTS = [
    ("wrong_password", lambda lab: breakfix.wrong_password(lab), "net.smarthost-login"),
    ("forget_postmap", lambda lab: breakfix.forget_postmap(lab), "postfix.sasl-map-current"),
    ("mismatched_key", lambda lab: breakfix.mismatched_key(lab), "postfix.sasl-key-matches-relayhost"),
    ("unbracketed_relay", lambda lab: breakfix.unbracketed_relay(lab), "postfix.relayhost-bracketed"),
    ("memo_six_lines", lambda lab: breakfix.memo_six_lines(lab, strip=False), "postfix.tls-level"),
    ("starttls_stripped", lambda lab: lab.strip_starttls("smarthost"), "net.smarthost-starttls"),
    ("isp_down", lambda lab: breakfix.isp_down(lab), "net.smarthost-reachable"),
]


@pytest.mark.parametrize("name,fault,check_id", FAULTS, ids=[n for n, _, _ in FAULTS])
def test_each_break_it_fault_fails_its_doctor_check_and_no_other(fresh, name, fault, check_id):
    assert failing(fresh) == []
    fault(fresh)
    assert failing(fresh) == [check_id]
    breakfix.restore(fresh)
    fresh.strip_starttls("smarthost", False)
    assert failing(fresh) == []


def test_the_lab_password_is_in_sasl_passwd_only(lab):
    sandbox = Path(lab.dir)
    holders = []
    for p in sandbox.rglob("*"):
        if p.is_file() and p.suffix not in (".db", ".lmdb") and "queue" not in p.parts and p.name != "lab.json":
            try:
                if LAB_ISP_PASSWORD in p.read_text(errors="ignore"):
                    holders.append(p.name)
            except OSError:
                pass
    assert set(holders) <= {"sasl_passwd"}, holders


def test_a_written_bundle_applied_to_a_bare_rehearsal(tmp_path):
    """The bundle's files and commands, applied to the sandbox in place of /etc: the doctor is
    green, and signed mail goes out through the ISP with SPF, DKIM and DMARC passing."""
    _require_real()
    profile = load(EXAMPLE)
    out = bundle.write(profile, tmp_path / "bundle")
    with started(site=profile, real=True, site_apply=False) as bare:
        before = failing(bare)
        assert "postfix.milter-socket" in before and "dns.spf-record" in before and "dns.dmarc-record" in before
        steps = apply_bundle(bare, out)
        assert any(s.startswith("postconf -e 'smtp_tls_security_level = secure'") for s in steps)
        assert failing(bare) == []
        res = bare.send("alice@example.net", "bob@inbox.example.org", subject="Applied from the bundle")
        assert res.ok, res.reason
        bare.wait_for_mail("bob@inbox.example.org", subject="Applied from the bundle", timeout=30)
        assessed = [e for e in bare.events if e.kind == "assessed"][-1].details
        assert (assessed["spf"], assessed["dkim"], assessed["dmarc"]) == ("pass", "pass", "pass")
        folder = str(bare.dir)
    assert not processes_mentioning(folder)


def test_up_site_doctor_lab_down(tmp_path):
    """The three commands of README: labkit up --site, labkit doctor --lab, labkit down."""
    _require_real()
    folder = Path("/var/lib/mail-lab") / f"cli-site-{os.getpid()}"
    labkit = [sys.executable, "-m", "labkit"]
    try:
        up = subprocess.run([*labkit, "up", "--site", str(EXAMPLE), "--real", "--dir", str(folder), "--json"],
                            capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr
        doc = subprocess.run([*labkit, "doctor", "--lab", str(folder), "--json", "--login"],
                             capture_output=True, text=True, timeout=120)
        rows = json.loads(doc.stdout)
        assert doc.returncode == 0, [r for r in rows if r["status"] != "pass"]
        assert all({"id", "status", "why", "fix"} <= set(r) for r in rows) and len(rows) >= 30
    finally:
        subprocess.run([*labkit, "down", "--dir", str(folder)], capture_output=True, timeout=120)
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    assert not processes_mentioning(str(folder))
