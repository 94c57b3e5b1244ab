"""The Lab over real sockets: start, the hosts table, a message across the lab world, stop."""
from __future__ import annotations

import socket
import threading

import pytest

from labkit import BindError, Lab, LabError, RealModeUnavailable
from labkit.core.world import distinct_loopback_available

ROLES = {"dns", "mta", "submission", "submissions", "mda", "pop3", "pop3s", "imap", "imaps",
         "smarthost", "inbox", "verifier"}


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="module")
def lab():
    with Lab() as lab:
        yield lab


def test_every_service_accepts_on_loopback(lab):
    assert set(lab.services) == ROLES
    for role, svc in lab.services.items():
        assert svc.host.startswith("127."), f"{role} listens on {svc.host}, not loopback"
        if role != "dns":
            assert _listening(svc.host, svc.port), f"{role} does not accept on {svc.host}:{svc.port}"
    assert lab.smarthost.standard_port == 587 and lab.submissions.standard_port == 465


@pytest.mark.skipif(not distinct_loopback_available(), reason="this system has only 127.0.0.1")
def test_hosts_have_their_own_addresses(lab):
    assert lab.smarthost.host == "127.0.30.25"
    assert lab.inbox.host == "127.0.40.25"
    assert lab.mta.host == lab.submission.host == "127.0.20.25"


def test_hosts_table_says_which_port_plays_which(lab):
    rows = {r["role"]: r for r in lab.hosts_table()}
    assert rows["smarthost"]["plays port"] == 587
    assert rows["smarthost"]["lab port"] == lab.smarthost.port
    assert rows["inbox"]["host"] == "mx.inbox.example.org"


def test_status_is_the_cli_contract(lab):
    st = lab.status()
    assert set(st["services"]) == ROLES
    for s in st["services"].values():
        assert {"host", "port"} <= set(s)
    assert st["ca"].endswith("ca.crt")
    assert any(a["address"] == "alice@isp.example.net" and a["role"] == "smarthost" for a in st["accounts"])


def test_lab_dns_answers_mx(lab):
    answer = lab.resolver().resolve("inbox.example.org", "MX")
    assert [str(r.exchange).rstrip(".") for r in answer] == ["mx.inbox.example.org"]


def test_message_from_home_through_the_isp_to_the_inbox(lab):
    res = lab.send("alice@isp.example.net", "bob@inbox.example.org", via="smarthost",
                   subject="lab test", body="hello through the smarthost\n")
    assert res.ok, res.reason
    msgs = lab.wait_for_mail("bob@inbox.example.org")
    assert any(m["subject"] == "lab test" for m in msgs)
    accepted = lab.events.wait_for("accepted", role="smarthost")
    assert accepted["tls"] is True and accepted["auth_user"] == "alice@isp.example.net"
    assert lab.events.wait_for("relayed", role="smarthost")


def test_unknown_attribute_is_a_clear_error(lab):
    with pytest.raises(AttributeError, match="services are"):
        lab.pop7


def test_stop_is_idempotent_and_leaves_nothing():
    before = {t.name for t in threading.enumerate()}
    lab = Lab()
    lab.stop()  # before start: fine
    lab.start()
    ports = [(s.host, s.port) for r, s in lab.services.items() if r != "dns"]
    folder = lab.dir
    lab.start()  # idempotent
    lab.stop()
    lab.stop()
    assert not any(_listening(h, p) for h, p in ports), "a port still accepts after stop()"
    assert not folder.exists(), "a temporary sandbox is removed by stop()"
    assert {t.name for t in threading.enumerate()} <= before, "a thread outlived stop()"
    with pytest.raises(LabError, match="not running"):
        lab.status()


def test_named_folder_is_kept_with_its_ca(tmp_path):
    with Lab(tmp_path / "lab") as lab:
        ca = lab.ca_path.read_bytes()
    assert (tmp_path / "lab" / "tls" / "ca.crt").read_bytes() == ca
    with Lab(tmp_path / "lab") as lab:
        assert lab.ca_path.read_bytes() == ca, "a kept folder keeps its CA (so -CAfile stays valid)"


def test_real_mode_without_root_says_so_in_one_line(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(RealModeUnavailable, match="root|installed") as info:
        Lab(real=True).start()
    assert "\n" not in str(info.value)


def test_non_loopback_address_is_refused_before_anything_binds():
    from dataclasses import replace

    from labkit import ConfigError
    from labkit.core.world import default_world
    w = default_world()
    w = replace(w, hosts=tuple(replace(h, address="192.0.2.1") if h.key == "ns" else h for h in w.hosts))
    with pytest.raises(ConfigError, match="192.0.2.1.*not a loopback"):
        Lab(world=w).start()


def test_port_in_use_is_a_clear_error_and_nothing_is_left():
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    before = {t.name for t in threading.enumerate()}
    lab = Lab(ports={"smarthost": port}, world=__import__("labkit.core.world", fromlist=["x"]).default_world().flattened())
    try:
        with pytest.raises(BindError, match=f"smarthost.*127.0.0.1:{port}"):
            lab.start()
        assert {t.name for t in threading.enumerate()} <= before, "a thread outlived the failed start"
        lab.stop()  # safe after a failed start
    finally:
        busy.close()


def test_unknown_fixed_port_role_is_refused():
    from labkit import ConfigError
    with pytest.raises(ConfigError, match="pop7"):
        Lab(ports={"pop7": 1}).start()


def test_strip_starttls_lets_auth_cross_in_clear_and_is_recorded():
    from labkit.net.clients.smtp import RawSMTP

    with Lab() as lab:
        lab.strip_starttls("smarthost")
        with RawSMTP(lab.smarthost.host, lab.smarthost.port, source_address=("127.0.20.100", 0)) as c:
            c.connect()
            c.ehlo("pc.example.com")
            assert "STARTTLS" not in c.extensions
            assert c.auth_plain("alice@isp.example.net", "isp-lab-password").code == 235
            c.quit()
        auth = lab.events.wait_for("auth", role="smarthost")
        assert auth["success"] is True and auth["tls"] is False
        lab.strip_starttls("smarthost", False)
        with RawSMTP(lab.smarthost.host, lab.smarthost.port) as c:
            c.connect()
            c.ehlo("pc.example.com")
            assert "STARTTLS" in c.extensions
            c.quit()


def test_a_stopped_service_comes_back_on_its_port():
    with Lab() as lab:
        port = lab.smarthost.port
        lab.stop_service("smarthost")
        assert not _listening(lab.smarthost.host, port)
        lab.start_service("smarthost")
        assert _listening(lab.smarthost.host, port)
        with pytest.raises(KeyError, match="was not stopped"):
            lab.start_service("inbox")
