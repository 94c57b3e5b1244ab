"""Real OpenDKIM from the sandbox: configuration, keys, testkey, the milter in real Postfix.

Pure tests first (rendering, refusals, the parsers of OpenDKIM's words), then the real tools:
``opendkim -n``, ``opendkim-genkey``, ``opendkim-testkey`` against the lab DNS through the
resolver configuration, and a whole real-mode lab whose Postfix signs through the milter. The
cross-checks are independent: what OpenDKIM signs verifies with dkimpy, and what labkit signs
(dkimpy) verifies with OpenDKIM. Every test that starts a process proves none is left.
"""
from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import deny_ptrace_reads, require_real_postfix, require_tool
from labkit.core.auth import dkim as labdkim
from labkit.errors import ConfigError, LabStateError, StartError
from labkit.real.opendkim import (
    OpenDKIMConfig,
    OpenDKIMRunner,
    SigningKey,
    classify,
    genkey,
    install_key,
    milter_fields,
    parse_datagram,
    parse_genkey_txt,
    parse_line,
    parse_test_mode,
    parse_testkey,
    read_conf,
)
from labkit.real.opendkim import (
    testkey as run_testkey,
)
from labkit.real.postfix import PostfixConfig
from labkit.real.procs import ProcStat, live, process_table

BASE = Path("/var/lib/mail-lab")  # parents 755 and root's: OpenDKIM's safe-key check accepts it
MESSAGE = (b"From: carol@isp.example.net\r\nTo: alice@example.com\r\nSubject: cross-check\r\n"
           b"Date: Sun, 29 Nov 2026 14:26:22 +0000\r\nMessage-ID: <cross@isp.example.net>\r\n\r\n"
           b"Signed by labkit, verified by OpenDKIM.\r\n")


def key(path: str = "/var/lib/mail-lab/x/keys/mail.private", domain: str = "example.com",
        selector: str = "mail") -> SigningKey:
    return SigningKey(domain, selector, path, "v=DKIM1; k=rsa; p=AAAA")


def opendkim_processes(under: Path | None = None) -> list[str]:
    """Every opendkim process on the machine (read from /proc), or those whose command line
    names a file under the folder ``under`` (labs of other test runs may be running meanwhile)."""
    def wanted(_pid: int, info: ProcStat, cmd: str) -> bool:
        return info.name == "opendkim" and (under is None or f" {under}/" in f" {cmd}")
    return [f"{pid} {cmd}" for pid, cmd in live(process_table(), wanted)]


def require_real_opendkim() -> None:
    for tool in ("opendkim", "opendkim-genkey", "opendkim-testkey"):
        require_tool(tool)
    require_real_postfix()  # the same condition: installed, and root


@pytest.fixture
def sandbox():
    """A folder under /var/lib/mail-lab (not /tmp: OpenDKIM refuses keys below a world-writable folder)."""
    require_real_opendkim()
    BASE.mkdir(mode=0o755, parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="test-opendkim-", dir=BASE))
    d.chmod(0o755)
    yield d
    left = opendkim_processes(d)
    shutil.rmtree(d, ignore_errors=True)
    assert not left, f"an opendkim process was left behind: {left}"


# ============================================================================================
# Rendering (pure)


def test_render_the_memos_files():
    cfg = OpenDKIMConfig("/var/lib/mail-lab/x/opendkim", socket="inet:8891@127.0.0.1", keys=(key(),),
                         internal_hosts=("127.0.0.1", "127.0.20.0/24"), resolver=("127.0.10.53", 5353))
    conf = read_conf(cfg.render_conf())
    assert conf["Mode"] == "sv"
    assert conf["Socket"] == "inet:8891@127.0.0.1"
    assert conf["KeyTable"] == "file:/var/lib/mail-lab/x/opendkim/KeyTable"
    assert conf["SigningTable"] == "refile:/var/lib/mail-lab/x/opendkim/SigningTable"
    assert conf["InternalHosts"] == conf["ExternalIgnoreList"] == "/var/lib/mail-lab/x/opendkim/TrustedHosts"
    assert conf["UserID"] == "opendkim:opendkim"
    assert conf["PidFile"] == "/var/lib/mail-lab/x/opendkim/opendkim.pid"
    assert conf["ResolverConfiguration"] == "/var/lib/mail-lab/x/opendkim/resolver.conf"
    assert "RequireSafeKeys" not in conf  # on by default, and never turned off here
    assert "mail._domainkey.example.com example.com:mail:/var/lib/mail-lab/x/keys/mail.private" in \
        cfg.render_key_table().splitlines()
    assert "*@example.com mail._domainkey.example.com" in cfg.render_signing_table().splitlines()
    assert cfg.render_trusted_hosts().splitlines()[-2:] == ["127.0.0.1", "127.0.20.0/24"]
    resolver = cfg.render_resolver_conf()
    for line in ("do-not-query-localhost: no", 'local-zone: "test." nodefault', 'name: "."',
                 "forward-addr: 127.0.10.53@5353"):
        assert line in resolver
    assert cfg.milter == "inet:127.0.0.1:8891"
    assert set(cfg.files()) == {"opendkim.conf", "KeyTable", "SigningTable", "TrustedHosts", "resolver.conf"}


def test_a_unix_socket_as_in_the_memo():
    cfg = OpenDKIMConfig("/var/lib/mail-lab/x/opendkim", socket="local", keys=(key(),))
    conf = read_conf(cfg.render_conf())
    assert conf["Socket"] == "local:/var/lib/mail-lab/x/opendkim/run/opendkim.sock"
    assert conf["UMask"] == "007"  # the socket 0770: its folder's group (postfix) may connect
    assert cfg.socket_path == "/var/lib/mail-lab/x/opendkim/run/opendkim.sock"
    assert cfg.milter == "unix:/var/lib/mail-lab/x/opendkim/run/opendkim.sock"
    with pytest.raises(ConfigError) as info:
        cfg.listen  # noqa: B018 - a unix socket has no address and port
    assert info.value.field == "socket"
    # the socket moves with the folder, whether named by "local" or by its path
    assert cfg.at("/srv/lab/opendkim").milter == "unix:/srv/lab/opendkim/run/opendkim.sock"
    assert dataclasses.replace(cfg, directory="/srv/lab/opendkim").socket_path == "/srv/lab/opendkim/run/opendkim.sock"
    named = OpenDKIMConfig("/var/lib/mail-lab/x/opendkim", socket="local:/var/lib/mail-lab/x/opendkim/s/milter")
    assert named.at("/srv/lab/opendkim").socket_path == "/srv/lab/opendkim/s/milter"
    # TCP stays the default, and has no UMask line
    tcp = OpenDKIMConfig("/var/lib/mail-lab/x/opendkim")
    assert tcp.socket_path is None and "UMask" not in read_conf(tcp.render_conf())
    main_cf = dataclasses.replace(PostfixConfig(), **milter_fields(cfg.milter)).render_main_cf()
    assert "smtpd_milters = unix:/var/lib/mail-lab/x/opendkim/run/opendkim.sock" in main_cf


def test_no_keys_means_no_tables_the_memos_pitfall():
    cfg = OpenDKIMConfig("/var/lib/mail-lab/x/opendkim")
    conf = read_conf(cfg.render_conf())
    assert "KeyTable" not in conf and "SigningTable" not in conf
    assert "nothing will be signed" in cfg.render_conf()
    assert set(cfg.files()) == {"opendkim.conf", "TrustedHosts"}


def test_ed25519_and_explicit_signing_table():
    cfg = OpenDKIMConfig("/var/lib/mail-lab/x/opendkim", keys=(key(selector="ed"),),
                         signing_table=(("alice@example.com", "ed._domainkey.example.com"),),
                         signature_algorithm="ed25519-sha256", canonicalization="relaxed/relaxed")
    conf = read_conf(cfg.render_conf())
    assert conf["SignatureAlgorithm"] == "ed25519-sha256"
    assert conf["Canonicalization"] == "relaxed/relaxed"
    assert cfg.render_signing_table().splitlines()[-1] == "alice@example.com ed._domainkey.example.com"


@pytest.mark.parametrize("change, field", [
    ({"mode": "sx"}, "mode"),
    ({"socket": "local:/run/opendkim.sock"}, "socket"),  # outside the configuration's folder
    ({"socket": "local:/var/lib/mail-lab/x/opendkim/opendkim.sock"}, "socket"),  # not in a subfolder
    ({"socket": "local:run/opendkim.sock"}, "socket"),
    ({"socket": "local:/var/lib/mail-lab/x/opendkim/run/" + "s" * 90}, "socket"),  # too long for sun_path
    ({"directory": "/var/lib/mail-lab/" + "x" * 80, "socket": "local"}, "socket"),
    ({"socket": "local", "socket_group": "postfix\nUMask 0"}, "socket_group"),
    ({"socket": "inet:8891@192.0.2.1"}, "socket"),
    ({"socket": "inet:8891@127.0.0.1\nMode v"}, "socket"),
    ({"socket": "inet:99999@127.0.0.1"}, "socket"),
    ({"internal_hosts": ("127.0.0.1\r\nexample.org",)}, "internal_hosts[0]"),
    ({"internal_hosts": ("not a host",)}, "internal_hosts[0]"),
    ({"internal_hosts": ()}, "internal_hosts"),
    ({"canonicalization": "loose/simple"}, "canonicalization"),
    ({"signature_algorithm": "rsa-sha1"}, "signature_algorithm"),
    ({"resolver": ("ns.lab.test", 53)}, "resolver"),
    ({"resolver": ("127.0.10.53", 0)}, "resolver"),
    ({"signing_table": (("*@example.com", "other._domainkey.example.com"),)}, "signing_table[0]"),
    ({"signing_table": (("*@exa mple.com", "mail._domainkey.example.com"),)}, "signing_table[0] pattern"),
    ({"signing_table": (("*@example.com\0", "mail._domainkey.example.com"),)}, "signing_table[0] pattern"),
    ({"user": "root\nUserID x"}, "user"),
    ({"authserv_id": "mail example"}, "authserv_id"),
    ({"extra": {"KeyTable": "file:/etc/passwd"}}, "extra['KeyTable']"),
    ({"extra": {"On-Default": "reject\nMode v"}}, "extra['On-Default']"),
    ({"keys": (key(), key())}, "keys"),
    ({"keys": ("mail",)}, "keys[0]"),
    ({"directory": "/var/lib/mail-lab/x\nopendkim"}, "directory"),
])
def test_bad_values_name_their_field(change, field):
    values = {"directory": "/var/lib/mail-lab/x/opendkim", "keys": (key(),), **change}
    with pytest.raises(ConfigError) as info:
        OpenDKIMConfig(**values)
    assert info.value.field == field


@pytest.mark.parametrize("args, field", [
    (("exa\nmple.com", "mail", "/var/lib/k"), "keys.domain"),
    (("example..com", "mail", "/var/lib/k"), "keys.domain"),
    (("example.com", "ma il", "/var/lib/k"), "keys.selector"),
    (("example.com", "-mail", "/var/lib/k"), "keys.selector"),
    (("example.com", "mail\0", "/var/lib/k"), "keys.selector"),
    (("example.com", "mail", "keys/mail.private"), "keys.key_path"),
    (("example.com", "mail", "/var/lib/a:b/mail.private"), "keys.key_path"),
    (("example.com", "mail", "/var/lib/my keys/mail.private"), "keys.key_path"),
])
def test_bad_keys_name_their_field(args, field):
    with pytest.raises(ConfigError) as info:
        SigningKey(*args)
    assert info.value.field == field


def test_milter_fields_join_postfix():
    fields = milter_fields("inet:127.0.0.1:8891")
    assert fields == {"smtpd_milters": ("inet:127.0.0.1:8891",), "non_smtpd_milters": ("inet:127.0.0.1:8891",),
                      "milter_default_action": "accept", "milter_protocol": 6}
    cfg = dataclasses.replace(PostfixConfig(), **fields)
    main_cf = cfg.render_main_cf()
    for line in ("smtpd_milters = inet:127.0.0.1:8891", "non_smtpd_milters = inet:127.0.0.1:8891",
                 "milter_default_action = accept"):
        assert line in main_cf
    assert "milter_protocol" not in main_cf  # 6 is Postfix's default: not rendered
    with pytest.raises(ConfigError) as info:
        milter_fields("inet:127.0.0.1:8891\nrelayhost = evil")
    assert info.value.field == "milter"


# ============================================================================================
# OpenDKIM's words, read (pure)

GENKEY_TXT = ('mail._domainkey\tIN\tTXT\t( "v=DKIM1; h=sha256; k=rsa; "\n\t  "p=MIIBIjANBgkq'
              + "A" * 240 + '"\n\t  "IDAQAB" )  ; ----- DKIM key mail for example.com\n')


def test_parse_genkey_txt_joins_the_strings():
    label, record = parse_genkey_txt(GENKEY_TXT)
    assert label == "mail._domainkey"
    assert record == "v=DKIM1; h=sha256; k=rsa; p=MIIBIjANBgkq" + "A" * 240 + "IDAQAB"
    with pytest.raises(ConfigError):
        parse_genkey_txt("garbage")


@pytest.mark.parametrize("text, kind, details", [
    ("OpenDKIM Filter v2.11.0 starting (args: -f -x /x/opendkim.conf)", "starting", {"version": "2.11.0"}),
    ("OpenDKIM Filter v2.11.0 terminating with status 0, errno = 0", "terminating", {"status": 0}),
    ("0F2B816EC63: DKIM-Signature field added (s=mail, d=example.com)", "signed",
     {"selector": "mail", "domain": "example.com"}),
    ("DD1D416E802: no signing table match for 'someone@pc.example.com'", "no-signing-match",
     {"address": "someone@pc.example.com"}),
    ("1973616EB5B: DKIM verification successful", "verified", {}),
    ("1973616EB5B: s=lab d=isp.example.net a=rsa-sha256 SSL", "signature",
     {"selector": "lab", "domain": "isp.example.net", "algorithm": "rsa-sha256", "flags": "SSL"}),
    ("1973616EB5B: [127.0.30.25] [127.0.30.25] not internal", "why", {}),
    ("DD1D416E802: no signature data", "no-signature", {}),
    ("4A1B2C3D4E: external host 127.0.30.25 tried to send mail as example.com", "external-host",
     {"client": "127.0.30.25", "domain": "example.com"}),
])
def test_classify_log_lines(text, kind, details):
    event = classify(text)
    assert event.kind == kind
    for k, v in details.items():
        assert event.details[k] == v


def test_parse_datagram_as_glibc_sends_it():
    data = b"<22>Nov 29 14:26:22 opendkim[30345]: 0F2B816EC63: DKIM-Signature field added (s=mail, d=example.com)"
    d = parse_datagram(data)
    assert (d["program"], d["pid"], d["severity"], d["facility"]) == ("opendkim", 30345, "info", 2)
    event = parse_line(data)
    assert (event.kind, event.queue_id, event.pid) == ("signed", "0F2B816EC63", 30345)
    assert parse_datagram(b"not syslog") is None


def test_syslog_catcher_receives_datagrams(tmp_path):
    from labkit.errors import BindError
    from labkit.real.opendkim import SyslogCatcher

    seen = []
    path = tmp_path / "syslog.sock"
    with SyslogCatcher(path, log_file=tmp_path / "opendkim.log", on_event=seen.append) as catcher:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client:
            client.sendto(b"<22>Nov 29 14:26:22 postfix/smtpd[1]: connect from x", str(path))  # not ours: dropped
            client.sendto(b"<22>Nov 29 14:26:22 opendkim[7]: AB12CD34EF: no signing table match for "
                          b"'alice@example.com'", str(path))
        event = catcher.wait_for("no-signing-match", timeout=5)
        assert event.details["address"] == "alice@example.com" and event.pid == 7
        assert catcher.lines() == ["AB12CD34EF: no signing table match for 'alice@example.com'"]
        with pytest.raises(TimeoutError) as info:
            catcher.wait_for("signed", timeout=0.05)
        assert "no signing table match" in str(info.value)  # the last lines are shown
    assert not path.exists() and seen == [event]
    assert "opendkim[7]" in (tmp_path / "opendkim.log").read_text()
    path.write_text("not a socket")
    with pytest.raises(BindError):
        SyslogCatcher(path).start()
    assert path.read_text() == "not a socket"  # left alone


def test_parse_testkey_outputs():
    ok = parse_testkey("opendkim-testkey: checking key 'mail._domainkey.example.com'\n"
                       "opendkim-testkey: key not secure\nopendkim-testkey: key OK\n", "mail._domainkey.example.com")
    assert ok.ok and "DNSSEC" in ok.reason and ok.details["dnssec"] == "insecure"
    missing = parse_testkey("opendkim-testkey: 'nokey._domainkey.example.com' record not found\n",
                            "nokey._domainkey.example.com")
    assert not missing.ok and "no TXT record is published at nokey._domainkey.example.com" in missing.reason
    down = parse_testkey("opendkim-testkey: 'mail._domainkey.example.com' query timed out\n")
    assert not down.ok and "did not answer" in down.reason
    table = parse_testkey("opendkim-testkey: key mail._domainkey.example.com: OK\n"
                          "opendkim-testkey: 1 key checked; 1 pass, 0 fail\n")
    assert table.ok
    failed = parse_testkey("opendkim-testkey: 1 key checked; 0 pass, 1 fail\n")
    assert not failed.ok


def test_parse_test_mode_outputs():
    ok = parse_test_mode("opendkim: -: verification (s=lab, d=isp.example.net, 2048-bit key) succeeded\n")
    assert ok.ok and ok.details["domain"] == "isp.example.net" and ok.details["key_bits"] == 2048
    bad = parse_test_mode("opendkim: -: verification (s=lab d=isp.example.net, 2048-bit key, insecure) "
                          "failed: signature verification failed\n")
    assert not bad.ok and "signature verification failed" in bad.reason


# ============================================================================================
# The real tools: opendkim -n, opendkim-genkey, opendkim-testkey


@pytest.mark.real
def test_write_and_check_with_opendkim_n(sandbox):
    k = genkey(sandbox / "opendkim" / "keys", "example.com", "mail")
    cfg = OpenDKIMConfig(sandbox / "opendkim", keys=(k,), resolver=("127.0.10.53", 5353))
    conf = cfg.write()
    assert conf == sandbox / "opendkim" / "opendkim.conf"
    checked = cfg.check()
    assert checked.ok, checked.reason
    assert checked.details["checked_with"] == ["opendkim -n"]
    # an unknown parameter: opendkim -n names the line; any stderr is a failure
    bad = dataclasses.replace(cfg, extra={"SignEverything": "yes"})
    bad.write()
    result = bad.check()
    assert not result.ok and "unrecognized parameter" in result.reason
    # the key file goes missing: found before the first message, not at it
    Path(k.key_path).unlink()
    result = cfg.check()
    assert not result.ok and "does not exist" in result.reason


@pytest.mark.real
def test_genkey_makes_a_safe_key_and_its_record(sandbox):
    k = genkey(sandbox / "keys", "example.com", "mail")  # 2048 bits by default (ERRATA #9)
    st = os.stat(k.key_path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == __import__("pwd").getpwnam("opendkim").pw_uid
    assert stat.S_IMODE(os.stat(sandbox / "keys").st_mode) == 0o700
    assert k.record_name == "mail._domainkey.example.com"
    assert k.record.startswith("v=DKIM1; h=sha256; k=rsa; p=MII") and len(k.record) > 255
    assert labdkim.DKIMKey.load(k.key_path, "example.com", "mail").kind == "rsa2048"
    again = SigningKey.load(sandbox / "keys", "example.com", "mail")  # a kept sandbox, started again
    assert again == k and again.record == k.record
    mine = install_key(sandbox / "keys", labdkim.DKIMKey.generate("example.com", "labkit"))
    assert SigningKey.load(sandbox / "keys", "example.com", "labkit").record == mine.record
    with pytest.raises(ConfigError) as info:
        genkey(sandbox / "keys", "example.com", "mail")  # never replaced silently
    assert info.value.field == "selector"
    with pytest.raises(ConfigError) as info:
        genkey(sandbox / "keys", "example.com", "small", bits=512)
    assert info.value.field == "bits"
    assert not (sandbox / "keys" / "small.private").exists()


@pytest.mark.real
def test_keys_under_tmp_are_refused_before_anything_is_written(sandbox):
    with pytest.raises(ConfigError) as info:
        genkey("/tmp/mail-lab-keys-refused", "example.com", "mail")
    assert info.value.field == "directory" and "writable by every user" in str(info.value)
    assert not os.path.exists("/tmp/mail-lab-keys-refused")
    with pytest.raises(ConfigError) as info:
        install_key("/tmp/mail-lab-keys-refused", labdkim.DKIMKey.generate("example.com", "mail", "ed25519"))
    assert info.value.field == "directory"
    # a config naming an unsafe key is not written at all
    target = sandbox / "unsafe"
    cfg = OpenDKIMConfig(target, keys=(SigningKey("example.com", "mail", "/tmp/nothing/mail.private"),))
    with pytest.raises(ConfigError) as info:
        cfg.write()
    assert info.value.field == "keys" and "does not exist" in str(info.value)
    assert not target.exists()


@pytest.mark.real
def test_a_key_with_loose_permissions_is_refused(sandbox):
    k = install_key(sandbox / "keys", labdkim.DKIMKey.generate("example.com", "mail", "rsa1024"))
    cfg = OpenDKIMConfig(sandbox / "opendkim", keys=(k,))
    os.chmod(k.key_path, 0o644)
    with pytest.raises(ConfigError) as info:
        cfg.write()
    assert "mode 0644" in str(info.value) and "0600" in str(info.value)
    os.chmod(k.key_path, 0o600)
    os.chown(k.key_path, 0, 0)
    with pytest.raises(ConfigError) as info:
        cfg.write()
    assert "belongs to root, not opendkim" in str(info.value)


@pytest.mark.real
def test_testkey_against_the_lab_dns(sandbox):
    from labkit.core.dns import lab_zones
    from labkit.net.dnsserver import serve
    from labkit.core.world import default_world

    zones = lab_zones(default_world())
    example = next(z for z in zones if z.origin == "example.com")
    k = genkey(sandbox / "opendkim" / "keys", "example.com", "mail")
    other = install_key(sandbox / "opendkim" / "keys", labdkim.DKIMKey.generate("example.com", "other"))
    with serve(zones, host="127.0.10.53") as dns:
        cfg = OpenDKIMConfig(sandbox / "opendkim", keys=(k, other), resolver=(dns.host, dns.port))
        cfg.write()
        # nothing is published yet
        result = run_testkey(cfg.conf_path, "example.com", "mail")
        assert not result.ok and "no TXT record is published at mail._domainkey.example.com" in result.reason
        k.publish(example)  # the memo's MyDNS step, in the lab zone
        result = run_testkey(cfg.conf_path, "example.com", "mail")
        assert result.ok, result.reason
        assert "key OK" in result.reason and result.details["dnssec"] == "insecure"
        assert "-k" in result.details["command"]  # the private key was compared too
        # the wrong public key for this private key
        example.replace(other.record_name, "TXT", k.record)
        result = run_testkey(cfg.conf_path, "example.com", "other")
        assert not result.ok and "does not belong to the private key" in result.reason
        # every key of the KeyTable
        other.publish(example)
        result = run_testkey(cfg.conf_path)
        assert result.ok and result.details["summary"] == "2 keys checked; 2 pass, 0 fail"
        # a domain the lab DNS does not serve
        result = run_testkey(cfg.conf_path, "example.net", "mail")
        assert not result.ok and "example.net" in result.reason


# ============================================================================================
# The runner on its own


@pytest.mark.real
def test_runner_starts_on_a_free_port_and_stops_fast(sandbox):
    k = genkey(sandbox / "opendkim" / "keys", "example.com", "mail")
    cfg = OpenDKIMConfig(sandbox / "opendkim", keys=(k,))
    runner = OpenDKIMRunner(cfg.write())
    with runner:
        assert runner.running and runner.port and runner.milter == f"inet:127.0.0.1:{runner.port}"
        with socket.create_connection(("127.0.0.1", runner.port), timeout=2):
            pass
        assert runner.start_seconds < 5
        event = runner.wait_for_log("starting") if runner.log_mode != "none" else None
        assert event is None or event["version"].startswith("2.")
        assert runner.processes()
    assert runner.stopped_by == "sigterm" and runner.stop_seconds < 1.5, runner.stop_seconds
    assert runner.processes() == [] and not runner.running
    if runner.log_mode != "none":
        assert any(e.kind == "terminating" for e in runner.events())
        assert "starting" in runner.log_file.read_text()
        assert not runner.syslog_socket.exists()
    runner.stop()  # twice is fine


@pytest.mark.real
def test_runner_needs_no_ptrace_rights(sandbox, monkeypatch):
    """As in the docker image (no CAP_SYS_PTRACE: no /proc/PID/fd): the port is picked beforehand."""
    deny_ptrace_reads(monkeypatch)
    cfg = OpenDKIMConfig(sandbox / "opendkim")
    runner = OpenDKIMRunner(cfg.write())
    with runner:
        assert runner.port and runner.milter == f"inet:127.0.0.1:{runner.port}"
        assert f"-p inet:{runner.port}@127.0.0.1" in runner.processes()[0][1]
        with socket.create_connection(("127.0.0.1", runner.port), timeout=2):
            pass
    assert runner.stopped_by == "sigterm" and runner.processes() == []
    assert read_conf(Path(cfg.conf_path).read_text())["Socket"] == "inet:0@127.0.0.1"  # the file is untouched


def _connects_as(user: str, path: str) -> bool:
    """Can ``user`` connect to the unix socket ``path``? Asked by a child running as that user: perl
    (perl-base is in every Debian), as this test's Python may sit where other users cannot reach."""
    perl = shutil.which("perl")
    if perl is None:
        pytest.skip("perl is not installed: no child process to connect as another user")
    pw = pwd.getpwnam(user)
    probe = ("use Socket; socket(my $s, PF_UNIX, SOCK_STREAM, 0) or die $!; "
             "connect($s, pack_sockaddr_un($ARGV[0])) and exit 0; exit($!{EACCES} ? 13 : 1)")
    proc = subprocess.run([perl, "-e", probe, path], user=pw.pw_uid, group=pw.pw_gid, extra_groups=[],
                          capture_output=True, text=True, timeout=30, check=False, cwd="/")
    assert proc.returncode in (0, 13), proc.stderr
    return proc.returncode == 0


@pytest.mark.real
def test_runner_on_a_unix_socket(sandbox, monkeypatch):
    """The memo's local: socket. Only OpenDKIM and Postfix can reach it; no ptrace rights needed."""
    cfg = OpenDKIMConfig(sandbox / "opendkim", socket="local")
    runner = OpenDKIMRunner(cfg.write())
    folder = Path(cfg.socket_path).parent
    st = folder.stat()
    assert (st.st_uid, st.st_gid) == (pwd.getpwnam("opendkim").pw_uid, grp.getgrnam("postfix").gr_gid)
    assert stat.S_IMODE(st.st_mode) == 0o2750  # setgid: the socket gets group postfix
    deny_ptrace_reads(monkeypatch)
    with runner:
        assert runner.milter == f"unix:{cfg.socket_path}" == cfg.milter
        assert runner.port is None and runner.address is None and runner.socket_path == cfg.socket_path
        sock = os.stat(cfg.socket_path)
        assert stat.S_ISSOCK(sock.st_mode) and stat.S_IMODE(sock.st_mode) == 0o770
        assert sock.st_gid == grp.getgrnam("postfix").gr_gid
        monkeypatch.undo()
        assert _connects_as("postfix", cfg.socket_path)  # Postfix's smtpd and cleanup
        assert not _connects_as("nobody", cfg.socket_path)
    assert runner.stopped_by == "sigterm" and runner.stop_seconds < 1.5, runner.stop_seconds
    assert runner.processes() == [] and not os.path.exists(cfg.socket_path)
    with pytest.raises(LabStateError, match="not running"):
        runner.milter  # noqa: B018
    # killed: the socket it leaves behind is removed, and a new start is not hindered by one
    runner.start()
    os.kill(runner.pid, signal.SIGKILL)
    runner.stop()
    assert not os.path.exists(cfg.socket_path) and runner.processes() == []
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(cfg.socket_path)  # bound, closed, never unlinked: what a crash leaves
    with runner:
        assert _connects_as("postfix", cfg.socket_path)
    # a socket something listens on is not taken away, nor is a file that is not a socket
    with socket.socket(socket.AF_UNIX) as taken:
        taken.bind(cfg.socket_path)
        taken.listen()
        with pytest.raises(StartError, match="taken by another program"):
            runner.start()
    os.unlink(cfg.socket_path)
    Path(cfg.socket_path).write_text("not a socket")
    with pytest.raises(StartError, match="is not a socket"):
        runner.start()
    assert Path(cfg.socket_path).read_text() == "not a socket" and runner.processes() == []


@pytest.mark.real
def test_log_through_dev_log_when_no_namespace_can_be_made(sandbox):
    """The fallback for containers without CAP_SYS_ADMIN: the lab holds /dev/log, then frees it."""
    if os.path.lexists("/dev/log"):
        pytest.skip("/dev/log exists here (a syslog daemon holds it), so the fallback cannot be shown")
    cfg = OpenDKIMConfig(sandbox / "opendkim")
    with OpenDKIMRunner(cfg.write(), log="dev-log") as runner:
        assert runner.log_mode == "dev-log" and stat.S_ISSOCK(os.lstat("/dev/log").st_mode)
        assert runner.wait_for_log("starting").pid == runner.pid
    assert not os.path.lexists("/dev/log")
    assert any(e.kind == "terminating" for e in runner.events())
    with OpenDKIMRunner(cfg.conf_path, log="none") as quiet:
        assert quiet.log_mode == "none" and quiet.events() == []
    assert quiet.processes() == []


@pytest.mark.real
def test_runner_start_errors_say_why(sandbox):
    cfg = OpenDKIMConfig(sandbox / "opendkim")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = OpenDKIMRunner(dataclasses.replace(cfg, socket=f"inet:{port}@127.0.0.1").write())
        with pytest.raises(StartError) as info:
            busy.start()
        assert "taken by another program" in str(info.value)
    # a configuration OpenDKIM refuses at start: it exits, and its words are in the error
    (sandbox / "opendkim" / "opendkim.conf").write_text(cfg.render_conf() + "KeyTable file:/nonexistent/KeyTable\n"
                                                        "SigningTable refile:/nonexistent/SigningTable\n")
    broken = OpenDKIMRunner(sandbox / "opendkim" / "opendkim.conf")
    with pytest.raises(StartError) as info:
        broken.start()
    assert "/nonexistent/SigningTable: dkimf_db_open(): No such file or directory" in str(info.value)
    assert broken.processes() == []


@pytest.mark.real
def test_opendkim_verifies_what_labkit_signs(sandbox):
    """Cross-check one way: dkimpy signs (labkit.core.auth.dkim.sign), OpenDKIM's test mode verifies."""
    from labkit.core.dns import lab_zones
    from labkit.net.dnsserver import serve
    from labkit.core.world import default_world

    zones = lab_zones(default_world())
    isp = next(z for z in zones if z.origin == "isp.example.net")
    with serve(zones, host="127.0.10.53") as dns:
        cfg = OpenDKIMConfig(sandbox / "opendkim", mode="v", resolver=(dns.host, dns.port))
        runner = OpenDKIMRunner(cfg.write())
        for kind, selector in (("rsa2048", "lab"), ("ed25519", "lab-ed")):
            k = labdkim.DKIMKey.generate("isp.example.net", selector, kind)
            k.publish(isp)
            signed = labdkim.sign(MESSAGE, k)
            result = runner.verify_message(signed)
            assert result.ok, result.reason
            assert result.details["domain"] == "isp.example.net" and result.details["selector"] == selector
            tampered = signed.replace(b"Subject: cross-check", b"Subject: cross-checked")
            result = runner.verify_message(tampered)
            assert not result.ok and "signature verification failed" in result.reason
        assert not runner.verify_message(MESSAGE).ok


# ============================================================================================
# The milter in real Postfix, in a real-mode lab


def _join(lab, runner):
    cfg = dataclasses.replace(lab.postfix_config, **milter_fields(runner.milter))
    cfg.write()
    assert cfg.check().ok
    lab.postfix_runner.reload()


def _message(lab, address, subject, count=1):
    for m in lab.wait_for_mail(address, count=count, timeout=15):
        if m["subject"] == subject:
            return Path(m["path"]).read_bytes()
    raise AssertionError(f"no message {subject!r} for {address}")


@pytest.fixture
def real_lab():
    require_real_opendkim()
    from labkit import Lab

    lab = Lab(real=True, dkim=False)
    lab.start()
    postfix, folder = lab.postfix_runner, lab.dir
    try:
        yield lab
    finally:
        lab.stop()
        assert postfix.processes() == [], "a postfix process was left behind"
        left = opendkim_processes(folder)
        assert not left, f"an opendkim process was left behind: {left}"


@pytest.mark.real
def test_postfix_signs_through_opendkim_and_dkimpy_verifies(real_lab):
    lab = real_lab
    k = genkey(lab.dir / "opendkim" / "keys", "example.com", "mail")
    k.publish(next(z for z in lab.zones if z.origin == "example.com"))
    home = lab.world.host("pc").address.rsplit(".", 1)[0] + ".0/24"
    cfg = OpenDKIMConfig(lab.dir / "opendkim", keys=(k,), internal_hosts=("127.0.0.1", home),
                         resolver=(lab.dns.host, lab.dns.port), authserv_id="mail.example.com")
    cfg.write()
    assert cfg.check().ok
    assert run_testkey(cfg.conf_path, "example.com", "mail").ok
    runner = OpenDKIMRunner(cfg.conf_path, events=lab.events)
    with runner:
        # without the milter first, to measure what signing costs
        plain = []
        for i in range(3):
            began = time.monotonic()
            assert lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False,
                            subject=f"plain {i}", body="no milter\n").ok
            plain.append(time.monotonic() - began)
        _join(lab, runner)
        signed_times = []
        for i in range(3):
            began = time.monotonic()
            sent = lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False,
                            subject=f"signed {i}", body="Signed by OpenDKIM.\n")
            signed_times.append(time.monotonic() - began)
            assert sent.ok, sent.reason
        raw = _message(lab, "bob@inbox.example.org", "signed 2", count=6)
        assert b"DKIM-Signature:" in raw
        verdict = labdkim.verify(raw, resolver=lab.resolver())
        assert verdict.result == "pass", verdict.reason
        assert verdict.passing_domains() == ["example.com"]
        assert verdict.signatures[0].details["selector"] == "mail"
        assert b"DKIM-Signature:" not in _message(lab, "bob@inbox.example.org", "plain 0", count=6)
        if runner.log_mode != "none":
            event = runner.wait_for_log("signed", domain="example.com")
            assert event["selector"] == "mail" and event.queue_id
            assert lab.events.select("opendkim-signed")
        # the other direction through Postfix: a message signed by labkit, from the ISP's host,
        # to alice@example.com is verified by OpenDKIM, which adds Authentication-Results
        ik = labdkim.DKIMKey.generate("isp.example.net", "lab", "rsa2048")
        ik.publish(next(z for z in lab.zones if z.origin == "isp.example.net"))
        sent = lab.send("carol@isp.example.net", "alice@example.com", via="mta", auth=False,
                        message=labdkim.sign(MESSAGE, ik), source="isp")
        assert sent.ok, sent.reason
        raw = _message(lab, "alice@example.com", "cross-check")
        assert b"Authentication-Results: mail.example.com;" in raw
        assert b"dkim=pass" in raw and b"header.d=isp.example.net" in raw
        if runner.log_mode != "none":
            runner.wait_for_log("verified")
    assert runner.stopped_by == "sigterm"
    print(f"\nOpenDKIM start {runner.start_seconds * 1000:.0f} ms, stop {runner.stop_seconds * 1000:.0f} ms; "
          f"send via Postfix: {min(plain) * 1000:.0f} ms plain, {min(signed_times) * 1000:.0f} ms signed; "
          f"log mode {runner.log_mode}")


@pytest.mark.real
def test_ed25519_signing_through_the_milter(real_lab):
    """RFC 8463: OpenDKIM signs with Ed25519 (SignatureAlgorithm), dkimpy verifies."""
    lab = real_lab
    k = install_key(lab.dir / "opendkim" / "keys", labdkim.DKIMKey.generate("example.com", "ed", "ed25519"))
    k.publish(next(z for z in lab.zones if z.origin == "example.com"))
    cfg = OpenDKIMConfig(lab.dir / "opendkim", keys=(k,), signature_algorithm="ed25519-sha256",
                         internal_hosts=("127.0.0.1", "127.0.20.0/24"), resolver=(lab.dns.host, lab.dns.port))
    cfg.write()
    assert cfg.check().ok
    with OpenDKIMRunner(cfg.conf_path) as runner:
        _join(lab, runner)
        assert lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False,
                        subject="ed25519", body="Signed with Ed25519.\n").ok
        raw = _message(lab, "bob@inbox.example.org", "ed25519")
    verdict = labdkim.verify(raw, resolver=lab.resolver())
    assert verdict.result == "pass", verdict.reason
    assert verdict.signatures[0].details["algorithm"] == "ed25519-sha256"
    # an RSA key with the Ed25519 algorithm is refused before OpenDKIM would fail at signing
    rsa = genkey(lab.dir / "opendkim" / "keys", "example.com", "rsa")
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(cfg, keys=(rsa,)).write()
    assert "the key is rsa but signature_algorithm is ed25519-sha256" in str(info.value)


@pytest.mark.real
def test_missing_tables_sign_nothing_and_the_log_says_why(real_lab):
    """The memo: "no error, but no DKIM in the headers: KeyTable and SigningTable were incomplete"."""
    lab = real_lab
    k = genkey(lab.dir / "opendkim" / "keys", "example.com", "mail")
    k.publish(next(z for z in lab.zones if z.origin == "example.com"))
    cfg = OpenDKIMConfig(lab.dir / "opendkim", keys=(k,), internal_hosts=("127.0.0.1", "127.0.20.0/24"),
                         signing_table=(("*@example.org", k.key_name),), resolver=(lab.dns.host, lab.dns.port))
    cfg.write()
    assert cfg.check().ok  # opendkim -n is content: nothing is wrong with the syntax
    with OpenDKIMRunner(cfg.conf_path) as runner:
        _join(lab, runner)
        assert lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False,
                        subject="unsigned", body="no signature\n").ok
        raw = _message(lab, "bob@inbox.example.org", "unsigned")
        assert b"DKIM-Signature:" not in raw
        if runner.log_mode != "none":
            event = runner.wait_for_log("no-signing-match")
            assert event["address"] == "alice@example.com"
            assert "no signing table match for 'alice@example.com'" in event.text
    # no tables at all: the same silence
    bare = OpenDKIMConfig(lab.dir / "opendkim-bare", internal_hosts=("127.0.0.1", "127.0.20.0/24"))
    bare.write()
    assert bare.check().ok
    with OpenDKIMRunner(bare.conf_path) as runner:
        _join(lab, runner)
        assert lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False,
                        subject="no tables", body="no signature\n").ok
        raw = _message(lab, "bob@inbox.example.org", "no tables", count=2)
        assert b"DKIM-Signature:" not in raw
        if runner.log_mode != "none":
            runner.wait_for_log("no-signature")
            print("\nlog without tables:", " | ".join(runner.log_lines()))


@pytest.mark.real
def test_require_safe_keys_refuses_a_key_under_tmp(real_lab):
    """RequireSafeKeys stays on: a key in a world-writable tree is refused by OpenDKIM itself."""
    lab = real_lab
    unsafe = Path(tempfile.mkdtemp(prefix="mail-lab-unsafe-", dir="/tmp"))
    try:
        unsafe.chmod(0o755)  # user opendkim can reach it; /tmp above it is 1777
        dk = labdkim.DKIMKey.generate("example.com", "mail", "rsa2048")
        dk.publish(next(z for z in lab.zones if z.origin == "example.com"))
        path = unsafe / "mail.private"
        dk.write(path)
        os.chown(path, __import__("pwd").getpwnam("opendkim").pw_uid, 0)
        k = SigningKey("example.com", "mail", str(path), dk.record)
        cfg = OpenDKIMConfig(lab.dir / "opendkim", keys=(k,), internal_hosts=("127.0.0.1", "127.0.20.0/24"),
                             resolver=(lab.dns.host, lab.dns.port))
        with pytest.raises(ConfigError) as info:
            cfg.write()  # labkit says it first
        assert "/tmp is writable by every user" in str(info.value)
        cfg.write(check_keys=False)  # to let OpenDKIM say it too
        assert not cfg.check().ok
        with OpenDKIMRunner(cfg.conf_path) as runner:
            _join(lab, runner)
            sent = lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False,
                            subject="unsafe key", body="x\n")
            assert not sent.ok
            print("\nunsafe key: SMTP said", sent.reason)
            if runner.log_mode != "none":
                event = runner.wait_for_log("key-error")
                print("unsafe key: OpenDKIM logged", event.text)
                assert "not secure" in event.text
    finally:
        shutil.rmtree(unsafe, ignore_errors=True)


@pytest.mark.real
def test_the_lab_milter_is_a_unix_socket_and_fast():
    """Lab(real=True): OpenDKIM on a unix socket. Over loopback TCP each message waits ~80 ms more:
    Nagle's algorithm holds a small milter packet until the delayed ACK (40 ms) of the previous
    one, which gets no reply; once from Postfix (macros, then headers) and once from OpenDKIM
    (add a header, then accept)."""
    require_real_opendkim()
    from labkit import Lab

    lab = Lab(real=True)
    lab.start()
    folder = lab.dir
    try:
        runner = lab.opendkim_runner
        svc = lab.services["opendkim"]
        assert runner.socket_path and runner.milter == f"unix:{runner.socket_path}"
        assert (svc.host, svc.port, svc.protocol) == (runner.socket_path, 0, "milter")
        assert runner.milter in svc.what
        assert lab.postfix_config.smtpd_milters == lab.postfix_config.non_smtpd_milters == (runner.milter,)

        def relay_times(tag, n=5):
            times = []
            for i in range(n + 1):
                count = len(lab.events.select("accepted", role="smarthost"))
                began = time.monotonic()
                assert lab.send("alice@example.com", "bob@inbox.example.org", via="mta", auth=False,
                                subject=f"{tag} {i}", body="timed\n").ok
                while len(lab.events.select("accepted", role="smarthost")) <= count:
                    assert time.monotonic() - began < 10, "the ISP did not receive the message"
                    time.sleep(0.001)
                if i:  # the first one warms up
                    times.append(time.monotonic() - began)
            return times

        unix = relay_times("unix")
        assert b"DKIM-Signature:" in _message(lab, "bob@inbox.example.org", "unix 5", count=6)
        # the same key through TCP, for comparison
        tcp_cfg = dataclasses.replace(lab.opendkim_config, directory=str(lab.dir / "opendkim-tcp"),
                                      socket="inet:0@127.0.0.1")
        tcp_cfg.write()
        with OpenDKIMRunner(tcp_cfg.conf_path) as tcp_runner:
            _join(lab, tcp_runner)
            tcp = relay_times("tcp")
            assert b"DKIM-Signature:" in _message(lab, "bob@inbox.example.org", "tcp 5", count=12)
            _join(lab, runner)
        print(f"\nsubmitted to Postfix -> at the ISP, median of 5: unix socket "
              f"{statistics.median(unix) * 1000:.0f} ms, TCP {statistics.median(tcp) * 1000:.0f} ms")
        assert statistics.median(unix) < statistics.median(tcp)
    finally:
        lab.stop()
    left = opendkim_processes(folder)
    assert not left, f"an opendkim process was left behind: {left}"


def test_genkey_checks_every_argument_before_it_writes(tmp_path):
    """Issue 13, part 4: a bad key path used to fail after mail.private and mail.txt existed."""
    from labkit.errors import ConfigError
    from labkit.real.opendkim import genkey

    bad = tmp_path / "with space"
    with pytest.raises(ConfigError) as e:
        genkey(bad, "example.com", "mail")
    assert "white space" in str(e.value)
    assert not bad.exists() or not any(bad.iterdir())
    with pytest.raises(ConfigError):
        genkey(tmp_path / "keys", "example.com", "mail", user="no-such-user-here")
    assert not (tmp_path / "keys").exists()


@pytest.mark.parametrize("fields, field", [
    ({"internal_hosts": ("0.0.0.0/0",)}, "internal_hosts[0]"),
    ({"internal_hosts": ("10.0.0.0/8",)}, "internal_hosts[0]"),
    ({"resolver": ("192.0.2.53", 53)}, "resolver"),
])
def test_opendkim_refuses_what_reaches_beyond_the_lab(tmp_path, fields, field):
    from labkit.errors import ConfigError
    from labkit.real.opendkim import OpenDKIMConfig

    with pytest.raises(ConfigError) as e:
        OpenDKIMConfig(tmp_path / "od", **fields)
    assert e.value.field == field
