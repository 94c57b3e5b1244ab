"""The doctor's checks, pure: a host as the bundle leaves it passes every check, and each fault
made in its facts fails the matching check and no other."""
from __future__ import annotations

import base64
import copy
import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from labkit.lab.site import bundle, checks, load, plan
from labkit.lab.site.checks import Facts, FileInfo
from labkit.lab.site.doctor import parse_aliases, parse_key_table, parse_main_cf, parse_sasl_keys, parse_signing_table

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mail-site.toml"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUB = base64.b64encode(KEY.public_key().public_bytes(serialization.Encoding.DER,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def applied_host() -> Facts:
    """The facts of a host where the bundle of the example profile was applied, as the doctor reads them."""
    p = load(EXAMPLE)
    files = bundle.render(p)
    f = Facts(p, "host", sudo="sudo ")
    f.main_cf = parse_main_cf(files["postfix/main.cf"][0])
    f.main_cf["queue_directory"] = "/var/spool/postfix"
    f.sasl_keys = parse_sasl_keys(files["postfix/sasl_passwd"][0])
    f.sasl_file = FileInfo("/etc/postfix/sasl_passwd", True, 0o600, "root", "root", 1000)
    f.sasl_map = FileInfo("/etc/postfix/sasl_passwd.db", True, 0o600, "root", "root", 2000)
    f.sasl_modules = "/usr/lib/x86_64-linux-gnu/sasl2"
    f.opendkim = {k: v for k, v in (line.split(None, 1) for line in files["opendkim/opendkim.conf"][0].splitlines()
                                    if line and not line.startswith("#"))}
    f.key_table = parse_key_table(files["opendkim/KeyTable"][0])
    f.signing_table = parse_signing_table(files["opendkim/SigningTable"][0])
    f.trusted_hosts = [h for h in files["opendkim/TrustedHosts"][0].splitlines() if h and not h.startswith("#")]
    f.key_file = FileInfo(plan.key_path(p), True, 0o600, "opendkim", "opendkim", 1)
    f.private_key_b64 = PUB
    f.socket_dir = FileInfo("/var/spool/postfix/opendkim", True, 0o750, "opendkim", "opendkim", 1, "dir")
    f.postfix_groups = {"postfix", "opendkim"}
    f.aliases = parse_aliases("postmaster: root\n" + files["postfix/aliases"][0])
    f.aliases_file = FileInfo("/etc/aliases", True, 0o644, "root", "root", 1000)
    f.aliases_map = FileInfo("/etc/aliases.db", True, 0o644, "root", "root", 2000)
    f.maillog = ("the systemd journal", "journalctl -u postfix@- -f")
    f.unread = []
    recs = {(r.name, r.type): r.value for r in plan.records(p, f"v=DKIM1; k=rsa; p={PUB}")}
    f.dns = {"domain_cname": [], "mx": ["10 mail.example.net."], "mx_target_cname": [], "a": ["192.0.2.10"],
             "ptr": ["mail.example.net."], "ptr_a": {"mail.example.net": ["192.0.2.10"]},
             "domain_txt": [recs[("example.net", "TXT")]], "spf_check": {"dns_lookups": 2, "void_dns_lookups": 0},
             "spf_smarthost": [("198.51.100.25", "pass")],
             "dkim_txt": [recs[("mail._domainkey.example.net", "TXT")]],
             "dmarc_txt": [recs[("_dmarc.example.net", "TXT")]]}
    f.net = {"server": "smtp.isp.example:587", "connected": True, "banner": "220 smtp.isp.example ESMTP",
             "starttls_offered": True, "auth_before_tls": False, "tls_verified": True, "tls_version": "TLSv1.3",
             "auth_after_tls": "PLAIN LOGIN", "login": True, "login_requested": True}
    return f


def test_there_are_at_least_30_checks_with_unique_ids():
    ids = checks.check_ids()
    assert len(ids) >= 30 and len(ids) == len(set(ids))


def test_a_host_as_the_bundle_leaves_it_passes_every_check():
    findings = checks.run(applied_host())
    bad = [f for f in findings if f.status != "pass"]
    assert not bad, bad
    assert len(findings) == len(checks.check_ids()) and checks.exit_status(findings) == 0


def _main(**params):
    def change(f):
        for k, v in params.items():
            if v is None:
                f.main_cf.pop(k, None)
            else:
                f.main_cf[k] = v
    return change


def _set(**fields):
    def change(f):
        for k, v in fields.items():
            setattr(f, k, v)
    return change


def _dns(**answers):
    def change(f):
        f.dns.update(answers)
    return change


def _relay(relayhost):
    def change(f):
        f.main_cf["relayhost"] = relayhost  # and the sasl_passwd key with it, as Postfix's own files have it
        f.sasl_keys = [(relayhost, "you@isp.example")]
    return change


PUB1024 = base64.b64encode(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def _old_key(f):
    f.private_key_b64 = PUB1024
    f.dns["dkim_txt"] = [f"v=DKIM1; k=rsa; p={PUB1024}"]


def _net(**seen):
    def change(f):
        f.net.update(seen)
    return change


FAULTS = [
    ("local.configs-read", _set(unread=["/etc/opendkim.conf"])),
    ("postfix.myhostname", _main(myhostname="debian.localdomain")),
    ("postfix.relayhost-bracketed", _relay("smtp.isp.example:587")),
    ("postfix.relayhost-port", _relay("[smtp.isp.example]:25")),
    ("postfix.tls-wrappermode", _main(smtp_tls_wrappermode="yes")),
    ("postfix.sasl-enabled", _main(smtp_sasl_auth_enable="no")),
    ("postfix.sasl-map-mode", _set(sasl_file=FileInfo("/etc/postfix/sasl_passwd", True, 0o644, "root", "root", 1000))),
    ("postfix.sasl-map-current", _set(sasl_file=FileInfo("/etc/postfix/sasl_passwd", True, 0o600, "root", "root",
                                                         3000))),
    ("postfix.sasl-key-matches-relayhost", _set(sasl_keys=[("smtp.isp.example:587", "you@isp.example")])),
    ("postfix.sasl-modules", _set(sasl_modules="")),
    ("postfix.tls-level", _main(smtp_tls_security_level="may")),
    ("postfix.sasl-security-options", _main(smtp_sasl_security_options="noplaintext")),
    ("postfix.sasl-tls-security-options", _main(smtp_sasl_tls_security_options="")),
    ("postfix.mynetworks", _main(mynetworks="127.0.0.0/8 10.0.0.0/8")),
    ("postfix.relay-restrictions", _main(smtpd_relay_restrictions="permit_mynetworks, permit")),
    ("postfix.unknown-users", _main(local_recipient_maps="")),
    ("postfix.milter-socket", _main(smtpd_milters="inet:localhost:8891")),
    ("postfix.in-socket-group", _set(postfix_groups={"postfix"})),
    ("opendkim.key-owner-mode", _set(key_file=FileInfo("/etc/opendkim/keys/example.net/mail.private", True, 0o644,
                                                       "root", "root", 1))),
    ("opendkim.tables", _set(signing_table=[("*@example.net", "old._domainkey.example.net")])),
    ("opendkim.signs", _set(trusted_hosts=["192.0.2.0/24"])),
    ("postfix.dmarc-alias", _set(aliases={"postmaster": "root"})),
    ("postfix.mail-log", _set(maillog=("", "nothing found"))),
    ("dns.mx", _dns(mx=["10 mx.example.org."])),
    ("dns.host-address", _dns(a=["198.51.100.7"])),
    ("dns.ptr", _dns(ptr=["10-2-0-192.pool.isp.example."], ptr_a={"10-2-0-192.pool.isp.example": ["192.0.2.10"]})),
    ("dns.fcrdns", _dns(ptr_a={"mail.example.net": []})),
    ("dns.spf-record", _dns(domain_txt=["v=spf1 ip4:192.0.2.0/24 incude:isp.example ~all"])),
    ("dns.spf-limits", _dns(spf_check={"dns_lookups": 12, "void_dns_lookups": 0})),
    ("dns.spf-covers-smarthost", _dns(spf_smarthost=[("198.51.100.25", "softfail")])),
    ("dns.spf-single", _dns(domain_txt=["v=spf1 ip4:192.0.2.0/24 include:isp.example ~all", "v=spf1 mx -all"])),
    ("dns.dkim-key-matches", _set(private_key_b64="MIIBIjANotTheSameKey")),
    ("dns.dkim-key-length", _old_key),
    ("dns.dmarc-record", _dns(dmarc_txt=["v=DMARC1; p=monitor"])),
    ("dns.dmarc-report-authorised", _dns(dmarc_txt=["v=DMARC1; p=none; rua=mailto:reports@dmarc.example.org"])),
    ("dns.dmarc-single", _dns(dmarc_txt=["v=DMARC1; p=none", "v=DMARC1; p=reject"])),
    ("net.smarthost-reachable", _net(connected=False, error="ConnectionRefusedError")),
    ("net.smarthost-starttls", _net(starttls_offered=False, tls_verified=False, auth_before_tls=False)),
    ("net.auth-after-tls", _net(auth_before_tls=True)),
    ("net.smarthost-login", _net(login=False, login_error="535 5.7.8 Authentication failed")),
]


@pytest.mark.parametrize("check_id,fault", FAULTS, ids=[c for c, _ in FAULTS])
def test_each_fault_fails_its_check_and_no_other(check_id, fault):
    facts = applied_host()
    fault(facts)
    findings = checks.run(facts)
    failed = [f.id for f in findings if f.status != "pass"]
    mine = next(f for f in findings if f.id == check_id)
    assert mine.status in ("fail", "warn") and mine.why, mine
    assert [f for f in failed if f != check_id] == [] or all(
        f.status == "warn" for f in findings if f.id in failed and f.id != check_id), failed
    assert not [f.id for f in findings if f.status == "fail" and f.id != check_id], failed
    if mine.status == "fail":
        assert mine.fix, mine


def test_every_check_has_a_fault():
    assert {c for c, _ in FAULTS} >= set(checks.check_ids()) - {"dns.dmarc-policy"}


def test_p_none_is_noted_not_failed():
    f = checks.run(applied_host())
    policy = next(x for x in f if x.id == "dns.dmarc-policy")
    assert policy.status == "pass" and "noted" in policy.why


def test_json_rows_have_the_contract_fields():
    import json

    from labkit.lab.site.doctor import render_json, render_rows

    findings = checks.run(applied_host())
    rows = json.loads(render_json(findings))
    assert all({"id", "status", "why", "fix"} <= set(r) for r in rows)
    assert f"{len(findings)} checks:" in render_rows(findings)


def test_no_password_reaches_the_facts():
    f = applied_host()
    assert "YOUR-ISP-PASSWORD" not in repr(dataclasses.asdict(f))
