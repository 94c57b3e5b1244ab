"""PostfixConfig: what it renders, what it refuses, and what the real postconf/postmap say."""
from __future__ import annotations

import dataclasses
import shlex
import stat
import subprocess

import pytest
from conftest import require_real_postfix

from labkit.errors import ConfigError
from labkit.real.postfix import PostfixConfig, Secret, parse_relayhost
from labkit.real.postfix.config import KNOWN_DEFAULTS, defaults, has_parameter

PASSWORD = "isp-lab-password-$and:colon"
USER = "alice@isp.example.net"


def smarthost(sandbox, **more) -> PostfixConfig:
    values = dict(relay_host="mail.isp.example.net", sasl_user=USER, sasl_password=PASSWORD,
                  ca_file="/etc/ssl/certs/ca-certificates.crt", listen=("127.0.20.25", 10025))
    values.update(more)
    return PostfixConfig.smarthost_client(sandbox, **values)


def lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln and not ln.startswith("#")]


def main_cf_values(text: str) -> dict[str, str]:
    return {name.strip(): value.strip() for name, _, value in (ln.partition("=") for ln in lines(text))}


# --------------------------------------------------------------------------------------------
# Bad input: refused, naming the field, before anything is written

BAD = [
    ("myhostname LF", {"myhostname": "mail.example.com\nrelayhost = evil"}, "myhostname", "line feed"),
    ("myhostname CR", {"myhostname": "mail.example.com\r"}, "myhostname", "carriage return"),
    ("myhostname NUL", {"myhostname": "mail\0.example.com"}, "myhostname", "NUL"),
    ("myhostname not FQDN", {"myhostname": "mail"}, "myhostname", "not fully qualified"),
    ("myhostname underscore", {"myhostname": "mail_1.example.com"}, "myhostname", "not a valid host name"),
    ("myorigin dollar", {"myorigin": "exa$mple.com"}, "myorigin", "unescaped '$'"),
    ("password LF", {"sasl_password": "Zq7\nxK2"}, "sasl_password", "line feed"),
    ("password NUL", {"sasl_password": "Zq7\0xK2"}, "sasl_password", "NUL"),
    ("password CR", {"sasl_password": "Zq7\rxK2"}, "sasl_password", "carriage return"),
    ("password spaces", {"sasl_password": " Zq7xK2"}, "sasl_password", "white space"),
    ("relay comma", {"relay_host": "mail.isp.example.net,evil.example"}, "relay_host", "comma"),
    ("relay space", {"relay_host": "mail.isp.example.net evil.example"}, "relay_host", "white space"),
    ("relay bad name", {"relay_host": "-mail.isp.example.net"}, "relay_host", "not a valid host name"),
    ("relay LF", {"relay_host": "mail.isp.example.net\n"}, "relay_host", "line feed"),
    ("relay port 0", {"relay_port": 0}, "relay_port", "not a TCP port"),
    ("relay port big", {"relay_port": 65536}, "relay_port", "not a TCP port"),
    ("relay port text", {"relay_port": "587"}, "relay_port", "not a TCP port"),
    ("listen port", {"listen": ("127.0.20.25", 70000)}, "listen", "not a TCP port"),
    ("mynetworks v4 all", {"mynetworks": ("0.0.0.0/0",)}, "mynetworks", "whole Internet"),
    ("mynetworks v6 all", {"mynetworks": ("::/0",)}, "mynetworks", "whole Internet"),
    ("mynetworks host bits", {"mynetworks": ("127.0.0.1/8",)}, "mynetworks", "host bits"),
    ("mynetworks junk", {"mynetworks": ("home",)}, "mynetworks", "not a network"),
    ("sasl user colon", {"sasl_user": "alice:admin"}, "sasl_user", "contains ':'"),
    ("tls level typo", {"smtp_tls_security_level": "encrypted"}, "smtp_tls_security_level", "not one of"),
    ("open relay", {"smtpd_relay_restrictions": ("permit_mynetworks", "permit")},
     "smtpd_relay_restrictions", "open relay"),
    ("map type syntax", {"map_type": "hash:"}, "map_type", "not a lookup-table type"),
    ("extra dollar", {"extra": {"smtp_helo_name": "$evil"}}, "extra[smtp_helo_name]", "unescaped '$'"),
    ("extra LF", {"extra": {"smtp_helo_name": "a\nb"}}, "extra[smtp_helo_name]", "line feed"),
    ("extra bad name", {"extra": {"Bad Name": "1"}}, "extra", "not a parameter name"),
    ("extra typed", {"extra": {"relayhost": "[evil.example]:25"}}, "extra[relayhost]", "typed field"),
    ("relative path", {"smtp_tls_CAfile": "ca.crt"}, "smtp_tls_CAfile", "not an absolute path"),
    ("submissions port", {"submissions": ("127.0.20.25", 0)}, "submissions", "not a TCP port"),
    ("submissions shape", {"submissions": ("127.0.20.25",)}, "submissions", "not (address, port)"),
    ("submissions address", {"submissions": ("mail_1.example.com", 10465)}, "submissions", "not a valid host name"),
    ("submissions on listen", {"submissions": ("127.0.20.25", 10025)}, "submissions", "same address and port"),
    ("submissions without TLS", {"submissions": ("127.0.20.25", 10465)}, "submissions", "needs TLS"),
]


@pytest.mark.parametrize("case,more,field_name,reason", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_naming_the_field_and_nothing_is_written(tmp_path, case, more, field_name, reason):
    password = more.get("sasl_password", PASSWORD)
    with pytest.raises(ConfigError) as caught:
        smarthost(tmp_path / "box", **more).write()
    err = caught.value
    assert err.field == field_name
    assert reason in str(err)
    assert str(err).startswith(f"{field_name}: ")
    assert password not in str(err)  # never the password itself
    assert list(tmp_path.iterdir()) == []


def test_bad_input_is_refused_by_replace_too(tmp_path):
    good = smarthost(tmp_path / "box")
    with pytest.raises(ConfigError) as caught:
        dataclasses.replace(good, relay_host="a b")
    assert caught.value.field == "relay_host"
    assert list(tmp_path.iterdir()) == []


def test_auth_without_a_complete_login_is_refused(tmp_path):
    with pytest.raises(ConfigError) as caught:
        PostfixConfig(relay_host="mail.isp.example.net", smtp_sasl_auth_enable=True, sasl_user=USER)
    assert caught.value.field == "sasl_password"


def test_a_literal_dollar_is_written_doubled():
    cfg = PostfixConfig(extra={"smtp_helo_name": "price$$tag.example"})
    assert "smtp_helo_name = price$$tag.example" in cfg.render_main_cf()


# --------------------------------------------------------------------------------------------
# What main.cf says


def test_main_cf_has_the_secure_defaults(tmp_path):
    cfg = smarthost(tmp_path)
    values = main_cf_values(cfg.render_main_cf())
    assert values["compatibility_level"] == "3.6"
    assert values["smtpd_relay_restrictions"].split(", ")[-1] == "reject_unauth_destination"
    assert values["smtp_tls_security_level"] == "secure"
    assert values["smtp_tls_CAfile"] == "/etc/ssl/certs/ca-certificates.crt"
    assert values["smtp_tls_secure_cert_match"] == "mail.isp.example.net"
    assert values["smtp_sasl_tls_security_options"] == "noanonymous"
    assert values["smtpd_tls_auth_only"] == "yes"
    assert values["relayhost"] == "[mail.isp.example.net]:587"
    assert values["smtp_sasl_password_maps"] == f"hash:{tmp_path}/etc/sasl_passwd"
    if has_parameter("smtpd_forbid_bare_newline"):
        assert values["smtpd_forbid_bare_newline"] == "normalize"
    # without a CA to check against, TLS is still required
    assert main_cf_values(smarthost(tmp_path, ca_file=None).render_main_cf())["smtp_tls_security_level"] == "encrypt"


def test_main_cf_holds_only_non_default_lines_each_under_its_comment(tmp_path):
    text = smarthost(tmp_path).render_main_cf()
    base = defaults()
    rows = text.splitlines()
    for i, row in enumerate(rows):
        if not row or row.startswith("#"):
            continue
        name, _, value = (part.strip() for part in row.partition("="))
        assert rows[i - 1].startswith(f"# {name}: "), f"{name} has no comment naming it"
        if name not in ("myhostname", "mydomain", "mynetworks") and name in base:
            assert base[name].split() != value.split(), f"{name} = {value} is Postfix's default"
    # the memo's noanonymous for the plain-text case is NOT copied: noplaintext stays (default)
    assert "smtp_sasl_security_options =" not in text


def test_master_cf_runs_every_service_without_chroot_and_has_postlog(tmp_path):
    cfg = smarthost(tmp_path, submission=("127.0.20.25", 10587), smtpd_tls_cert_file="/x/c.pem",
                    smtpd_tls_key_file="/x/k.pem")
    rows = [r.split() for r in cfg.render_master_cf().splitlines() if r and r[0] not in "# "]
    assert rows[0][:2] == ["127.0.20.25:10025", "inet"] and rows[0][-1] == "smtpd"
    assert rows[1][0] == "127.0.20.25:10587"
    assert all(r[4] == "n" for r in rows), "chroot must be n everywhere"
    assert ["postlog", "unix-dgram", "n", "-", "n", "-", "1", "postlogd"] in rows
    assert "-o smtpd_tls_security_level=encrypt" in cfg.render_master_cf()


def test_master_cf_submissions_is_implicit_tls_with_auth_for_logged_in_users_only(tmp_path):
    cfg = smarthost(tmp_path, submission=("127.0.20.25", 10587), submissions=["127.0.20.25", 10465],
                    smtpd_tls_cert_file="/x/c.pem", smtpd_tls_key_file="/x/k.pem")
    assert cfg.submissions == ("127.0.20.25", 10465)
    text = cfg.render_master_cf()
    rows = text.splitlines()
    at = rows.index(next(r for r in rows if r.startswith("127.0.20.25:10465 ")))
    assert rows[at].split()[1:] == ["inet", "n", "-", "n", "-", "-", "smtpd"]
    options = []
    for row in rows[at + 1:]:
        if not row.startswith("  -o "):
            break
        options.append(row.split(None, 1)[1])
    assert options == ["syslog_name=postfix/submissions", "smtpd_tls_wrappermode=yes",
                       "smtpd_tls_security_level=encrypt", "smtpd_sasl_auth_enable=yes",
                       "smtpd_client_restrictions=permit_sasl_authenticated,reject",
                       "smtpd_relay_restrictions=permit_sasl_authenticated,reject"]
    # every override is explained in the comment above the service line
    comments = "\n".join(r for r in rows[:at] if r.startswith("#"))
    for opt in options:
        assert f"{opt.split('=')[0]}" in comments, opt
    # 587 keeps STARTTLS: only 465 wraps
    assert text.count("smtpd_tls_wrappermode=yes") == 1
    with pytest.raises(ConfigError) as caught:
        dataclasses.replace(cfg, submissions=("127.0.20.25", 10587))
    assert caught.value.field == "submissions" and "as submission" in str(caught.value)


def test_check_passes_with_submission_and_submissions(tmp_path):
    require_real_postfix()
    cfg = smarthost(tmp_path, submission=("127.0.20.25", 10587), submissions=("127.0.20.25", 10465),
                    smtpd_sasl_type="dovecot", smtpd_sasl_path="inet:127.0.20.25:10012",
                    smtpd_tls_cert_file="/x/c.pem", smtpd_tls_key_file="/x/k.pem")
    cfg.write()
    result = cfg.check()
    assert result.ok, result.reason
    assert "smtpd_sasl_type = dovecot" in result.details["postconf_n"]
    service_option = "127.0.20.25:10465/inet/smtpd_tls_wrappermode"
    listed = subprocess.run(["postconf", "-c", cfg.config_directory, "-P", service_option],
                            capture_output=True, text=True, check=True)
    assert listed.stdout.strip() == "127.0.20.25:10465/inet/smtpd_tls_wrappermode = yes"
    assert listed.stderr == ""


def test_sasl_passwd_key_is_the_relayhost_string(tmp_path):
    for more in ({}, {"relay_port": 2525}, {"relay_host": "127.0.30.25", "cert_match": "mail.isp.example.net"}):
        cfg = smarthost(tmp_path, **more)
        key, value = lines(cfg.render_sasl_passwd())[0].split(None, 1)
        assert key == cfg.relayhost == main_cf_values(cfg.render_main_cf())["relayhost"]
        assert value == f"{USER}:{PASSWORD}"
        assert cfg.warnings() == []


def test_a_mismatched_key_is_possible_on_purpose_and_warned_about(tmp_path):
    cfg = smarthost(tmp_path, sasl_passwd_key="mail.isp.example.net:587")
    assert lines(cfg.render_sasl_passwd())[0].split()[0] == "mail.isp.example.net:587"
    assert any("differs from relayhost" in w for w in cfg.warnings())


def test_postconf_commands_match_the_rendered_settings(tmp_path):
    cfg = smarthost(tmp_path)
    commands = cfg.postconf_commands()
    assert "postconf -e 'relayhost = [mail.isp.example.net]:587'" in commands
    from_commands = {}
    for cmd in commands:
        argv = shlex.split(cmd)
        assert argv[:2] == ["postconf", "-e"] and len(argv) == 3
        name, _, value = argv[2].partition(" = ")
        from_commands[name.rstrip(" =")] = value
    assert from_commands == main_cf_values(cfg.render_main_cf())
    sandboxed = cfg.postconf_commands(sudo=True, config_dir=True)[0]
    assert shlex.split(sandboxed)[:4] == ["sudo", "postconf", "-c", f"{tmp_path}/etc"]


def test_the_password_never_shows(tmp_path):
    cfg = smarthost(tmp_path)
    shown = [repr(cfg), str(cfg), f"{cfg}", repr(cfg.sasl_password), str(cfg.sasl_password),
             cfg.render_main_cf(), cfg.render_master_cf(), "\n".join(cfg.postconf_commands()),
             "\n".join(cfg.warnings()), repr(cfg.settings())]
    for text in shown:
        assert PASSWORD not in text
    assert "sasl_password=Secret('********')" in repr(cfg)
    assert isinstance(cfg.sasl_password, Secret) and cfg.sasl_password.reveal() == PASSWORD
    assert PASSWORD in cfg.render_sasl_passwd()  # the one place it must be


def test_relayhost_strings():
    assert parse_relayhost("mail.so-net.ne.jp:587") == ("mail.so-net.ne.jp", 587, False)
    assert parse_relayhost("[mail.isp.example.net]:587") == ("mail.isp.example.net", 587, True)
    assert parse_relayhost("[127.0.30.25]") == ("127.0.30.25", None, True)
    assert PostfixConfig(relay_host="::1", relay_port=25).relayhost == "[ipv6:::1]:25"


def test_the_memo_install_answers():
    cfg = PostfixConfig.from_install_answers("Internet with smarthost", "example.com", "mail.so-net.ne.jp:587")
    assert cfg.relayhost == "mail.so-net.ne.jp:587"  # as the memo typed it ...
    assert any("MX" in w and "[mail.so-net.ne.jp]:587" in w for w in cfg.warnings())  # ... and why not
    values = main_cf_values(cfg.render_main_cf())
    assert values["myorigin"] == "example.com"
    assert values["mydestination"] == "example.com, localhost"
    assert values["alias_maps"] == "hash:/etc/postfix/aliases"
    assert "postmaster: root" in cfg.render_aliases()
    ja = PostfixConfig.from_install_answers("スマートホスト付きインターネット", "example.com",
                                            "[mail.so-net.ne.jp]:587")
    assert ja.relayhost == "[mail.so-net.ne.jp]:587" and ja.warnings() == []
    with pytest.raises(ConfigError) as caught:
        PostfixConfig.from_install_answers("Internet with smarthost and coffee", "example.com", "x:587")
    assert caught.value.field == "general_type"
    with pytest.raises(ConfigError) as caught:
        PostfixConfig.from_install_answers("Internet with smarthost", "example.com", "")
    assert caught.value.field == "relay_host"


def test_tls_may_with_a_password_is_warned_about(tmp_path):
    cfg = smarthost(tmp_path, ca_file=None, smtp_tls_security_level="may")
    assert any("ERRATA 8" in w for w in cfg.warnings())


# --------------------------------------------------------------------------------------------
# With the real tools


def test_write_makes_secret_files_0600_and_a_map_postfix_can_read(tmp_path):
    require_real_postfix()
    cfg = smarthost(tmp_path)
    folder = cfg.write()
    assert sorted(p.name for p in folder.iterdir()) == ["main.cf", "master.cf", "sasl_passwd", "sasl_passwd.db"]
    for name in ("sasl_passwd", "sasl_passwd.db"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
    assert stat.S_IMODE((folder / "main.cf").stat().st_mode) == 0o644
    found = subprocess.run(["postmap", "-c", str(folder), "-q", cfg.relayhost, f"hash:{folder}/sasl_passwd"],
                           capture_output=True, text=True, check=True)
    assert found.stdout.strip() == f"{USER}:{PASSWORD}"


def test_check_passes_on_a_good_config(tmp_path):
    require_real_postfix()
    cfg = smarthost(tmp_path)
    cfg.write()
    result = cfg.check()
    assert result.ok, result.reason
    assert "relayhost = [mail.isp.example.net]:587" in result.details["postconf_n"]
    assert PASSWORD not in str(result) and PASSWORD not in repr(result.details)


def test_check_fails_on_an_unused_parameter_with_the_stderr_in_the_reason(tmp_path):
    require_real_postfix()
    cfg = smarthost(tmp_path, extra={"smtp_sasl_auht_enable": "yes"})  # a typo postconf exits 0 on
    cfg.write()
    result = cfg.check()
    assert not result.ok
    assert "unused parameter: smtp_sasl_auht_enable=yes" in result.reason


def test_check_fails_on_a_mismatched_key(tmp_path):
    require_real_postfix()
    cfg = smarthost(tmp_path, sasl_passwd_key="mail.isp.example.net:587")
    cfg.write()
    result = cfg.check()
    assert not result.ok and "differs from relayhost" in result.reason


def test_hush_is_refused_by_postmap_with_its_own_words_and_nothing_is_written(tmp_path):
    require_real_postfix()
    cfg = smarthost(tmp_path, map_type="hush")
    with pytest.raises(ConfigError) as caught:
        cfg.write()
    assert caught.value.field == "map_type"
    assert "unsupported dictionary type: hush" in str(caught.value)
    assert "hash" in str(caught.value)  # the hint lists what this Postfix supports
    assert list(tmp_path.iterdir()) == []


def test_map_types_other_than_hash_where_postfix_has_them(tmp_path):
    require_real_postfix()
    from labkit.real.postfix import supported_map_types
    types = supported_map_types()
    assert "hash" in types
    for kind in ("lmdb", "cdb"):
        cfg = smarthost(tmp_path / kind, map_type=kind)
        if kind in types:
            cfg.write()
            assert cfg.check().ok
        else:
            with pytest.raises(ConfigError, match=f"unsupported dictionary type: {kind}"):
                cfg.write()


def test_rewriting_keeps_the_folder_consistent(tmp_path):
    require_real_postfix()
    cfg = smarthost(tmp_path)
    cfg.write()
    fixed = dataclasses.replace(cfg, sasl_password="another-password")
    folder = fixed.write()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no staging left behind
    found = subprocess.run(["postmap", "-c", str(folder), "-q", cfg.relayhost, f"hash:{folder}/sasl_passwd"],
                           capture_output=True, text=True, check=True)
    assert found.stdout.strip() == f"{USER}:another-password"


def test_aliases_are_built_with_postalias(tmp_path):
    require_real_postfix()
    cfg = PostfixConfig(config_directory=str(tmp_path / "etc"), mydestination=("example.com",),
                        aliases={"postmaster": "root", "dmarc": "root"})
    folder = cfg.write()
    assert (folder / "aliases.db").exists()
    found = subprocess.run(["postalias", "-c", str(folder), "-q", "dmarc", f"hash:{folder}/aliases"],
                           capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "root"
    assert cfg.check().ok, cfg.check().reason


def test_with_the_defaults_passed_in_main_cf_is_pure(tmp_path, monkeypatch):
    import labkit.real.postfix.config as config_module

    def no_postfix_here():
        raise AssertionError("rendering with defaults given must not ask the installed Postfix")

    monkeypatch.setattr(config_module, "installed_defaults", no_postfix_here)
    cfg = smarthost(tmp_path)
    text = cfg.render_main_cf(KNOWN_DEFAULTS)
    values = main_cf_values(text)
    assert values["relayhost"] == "[mail.isp.example.net]:587"
    assert values["smtpd_forbid_bare_newline"] == "normalize"
    # a value that is the built-in one is left out
    moved = {**KNOWN_DEFAULTS, "smtp_tls_security_level": "secure"}
    assert "smtp_tls_security_level" not in main_cf_values(cfg.render_main_cf(moved))
    # a Postfix that lacks a parameter is not given it
    older = {k: v for k, v in KNOWN_DEFAULTS.items() if k != "smtpd_forbid_bare_newline"}
    assert "smtpd_forbid_bare_newline" not in main_cf_values(cfg.render_main_cf(older))
    assert len(cfg.postconf_commands(defaults=KNOWN_DEFAULTS)) == len(cfg.settings(KNOWN_DEFAULTS))
    assert cfg.files(KNOWN_DEFAULTS)["main.cf"][0] == text


@pytest.mark.parametrize("fields, field, words", [
    ({"mynetworks": ("0.0.0.0/1", "128.0.0.0/1")}, "mynetworks", "beyond loopback"),
    ({"mynetworks": ("10.0.0.0/8",)}, "mynetworks", "break_it='open-relay'"),
    ({"mynetworks": "127.0.20.25/32\n0.0.0.0/1"}, "mynetworks", "line feed"),
    ({"smtpd_relay_restrictions": ("permit_mynetworks", "permit", "reject_unauth_destination")},
     "smtpd_relay_restrictions", "before reject_unauth_destination"),
    ({"smtpd_relay_restrictions": ("permit_mynetworks", "reject_non_fqdn_recipient")},
     "smtpd_relay_restrictions", "open relay"),
    ({"relay_host": "999.1.1.1"}, "relay_host", "neither an IP address nor a host name"),
    ({"listen": ("192.0.2.1", 25)}, "listen", "not a loopback address"),
    ({"break_it": "everything"}, "break_it", "not a break-it"),
])
def test_guards_that_hold(fields, field, words):
    """Issue 13, part 4: what passed check() before and made an open relay is refused when made."""
    with pytest.raises(ConfigError) as e:
        PostfixConfig(**fields)
    assert e.value.field == field and words in str(e.value)


def test_the_open_relay_break_it_is_named_on_purpose():
    cfg = PostfixConfig(mynetworks=("0.0.0.0/1", "128.0.0.0/1"), break_it="open-relay")
    assert "mynetworks = 0.0.0.0/1 128.0.0.0/1" in cfg.render_main_cf()
    assert PostfixConfig(mynetworks=("127.0.0.0/8",)).mynetworks == ("127.0.0.0/8",)  # loopback: the chapter 09 mistake
