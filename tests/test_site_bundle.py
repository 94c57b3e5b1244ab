"""labkit bundle: what to apply to the host, rendered by the lab's renderers, written atomically."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from labkit.errors import ConfigError
from labkit.lab.site import bundle, load, parse, plan
from labkit.lab.site.profile import Profile

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mail-site.toml"


@pytest.fixture()
def profile() -> Profile:
    return load(EXAMPLE)


def variant(**changes) -> Profile:
    import dataclasses

    return dataclasses.replace(load(EXAMPLE), **changes)


def test_bundle_holds_every_part(profile, tmp_path):
    out = bundle.write(profile, tmp_path / "b")
    names = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert {"APPLY.md", "postfix/postconf.sh", "postfix/main.cf", "postfix/sasl_passwd", "postfix/aliases",
            "opendkim/commands.sh", "opendkim/opendkim.conf", "opendkim/KeyTable", "opendkim/SigningTable",
            "opendkim/TrustedHosts", "dns/records.txt", "dns/zone-fragment.txt", "dns/ask-the-isp.txt"} <= names
    assert stat.S_IMODE((out / "postfix/sasl_passwd").stat().st_mode) == 0o600
    postconf = (out / "postfix/postconf.sh").read_text()
    assert "postconf -e 'relayhost = [smtp.isp.example]:587'" in postconf
    assert "postconf -e 'smtp_tls_security_level = secure'" in postconf
    assert "smtpd_milters = local:opendkim/opendkim.sock" in postconf
    assert "hash:/etc/postfix/sasl_passwd" in postconf
    assert "[smtp.isp.example]:587 you@isp.example:YOUR-ISP-PASSWORD" in (out / "postfix/sasl_passwd").read_text()
    dk = (out / "opendkim/opendkim.conf").read_text()
    assert "Socket local:/var/spool/postfix/opendkim/opendkim.sock" in dk
    cmds = (out / "opendkim/commands.sh").read_text()
    assert "opendkim-genkey -b 2048 -d example.net -s mail" in cmds and "adduser postfix opendkim" in cmds
    assert "install -d -o opendkim -g opendkim -m 750 /var/spool/postfix/opendkim" in cmds
    assert "*@example.net mail._domainkey.example.net" in (out / "opendkim/SigningTable").read_text()
    assert "dmarc: root" in (out / "postfix/aliases").read_text()
    apply = (out / "APPLY.md").read_text()
    assert "journalctl -u postfix@-" in apply and "## Rollback" in apply and "newaliases" in apply
    assert apply.count("Check:") >= 10


def test_dns_records_in_the_mydns_columns(profile):
    text = plan.render_records(profile)
    head = text.splitlines()[0].split()
    assert head == ["Hostname", "Type", "Content"]
    rows = [line.split(None, 2) for line in text.splitlines()[2:] if not line.startswith("#")]
    assert ["example.net", "MX", "10 mail.example.net"] in rows
    assert ["example.net", "TXT", "v=spf1 ip4:192.0.2.0/24 include:isp.example ~all"] in rows
    assert ["_dmarc.example.net", "TXT", "v=DMARC1; p=none; rua=mailto:dmarc@example.net"] in rows
    assert "PTR of 192.0.2.10" in text
    bind = plan.render_records(profile, style="bind")
    assert '$ORIGIN example.net.' in bind and "@\t300\tIN\tMX\t10 mail.example.net." in bind
    assert "PTR" in plan.render_records(profile, style="table")


@pytest.mark.parametrize("target,map_type", [("debian-12", "hash"), ("debian-13", "lmdb"), ("ubuntu-24.04", "hash")])
def test_the_map_type_follows_the_target(target, map_type):
    files = bundle.render(variant(target=target))
    assert f"postmap {map_type}:/etc/postfix/sasl_passwd" in files["APPLY.md"][0]
    assert f"smtp_sasl_password_maps = {map_type}:/etc/postfix/sasl_passwd" in files["postfix/main.cf"][0]


def test_port_465_uses_the_wrapper_mode():
    assert "smtp_tls_wrappermode = yes" in bundle.render(variant(smarthost_port=465))["postfix/main.cf"][0]
    assert "wrappermode" not in bundle.render(variant())["postfix/main.cf"][0]


def test_the_password_goes_into_sasl_passwd_only(profile, tmp_path):
    out = bundle.write(profile, tmp_path / "b", password="Very-Secret-9")
    holders = [p.relative_to(out) for p in out.rglob("*") if p.is_file() and "Very-Secret-9" in p.read_text()]
    assert holders == [Path("postfix/sasl_passwd")]


def test_write_is_atomic(profile, tmp_path, monkeypatch):
    real_open = os.open
    calls = []

    def failing_open(path, *a, **kw):
        calls.append(path)
        if len(calls) == 5:
            raise OSError(28, "No space left on device")
        return real_open(path, *a, **kw)

    monkeypatch.setattr(bundle.os, "open", failing_open)
    with pytest.raises(OSError):
        bundle.write(profile, tmp_path / "b")
    assert os.listdir(tmp_path) == []  # nothing left, not even the temporary folder


def test_an_existing_folder_is_kept_unless_forced(profile, tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mine").write_text("keep")
    with pytest.raises(ConfigError, match="exists already"):
        bundle.write(profile, tmp_path / "b")
    assert (tmp_path / "b" / "mine").read_text() == "keep"
    bundle.write(profile, tmp_path / "b", force=True)
    assert not (tmp_path / "b" / "mine").exists() and (tmp_path / "b" / "APPLY.md").exists()
    assert sorted(os.listdir(tmp_path)) == ["b"]


def test_the_lab_and_the_bundle_share_one_renderer(profile):
    """The bundle's main.cf lines are PostfixConfig's own settings; the lab's Postfix takes the
    same relay policy (plan.sandboxed)."""
    from labkit.real.postfix.config import PostfixConfig

    host = plan.postfix_config(profile)
    lab = PostfixConfig.smarthost_client("/var/lib/mail-lab/x/postfix", relay_host="127.0.30.25",
                                         sasl_user="alice@isp.example", sasl_password="lab",
                                         ca_file="/var/lib/mail-lab/x/tls/ca.crt", cert_match="smtp.isp.example",
                                         smtp_tls_security_level="may")
    applied = plan.sandboxed(host, lab)
    assert applied.smtp_tls_security_level == "secure" and applied.relay_brackets
    assert applied.config_directory == lab.config_directory and applied.relay_host == "127.0.30.25"
    lines = bundle.main_cf_lines(profile)
    for st in host.settings():
        assert f"{st.name} = {st.value}".rstrip() in lines
    assert parse(profile.to_toml()) == profile
