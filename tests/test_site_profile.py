"""The site profile (labkit.lab.site.profile): every field checked, with its line and a fix."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from labkit.real.postfix.config import Secret
from labkit.lab.site.profile import PASSWORD_ENV, Profile, ProfileError, load, parse, read_password

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mail-site.toml"
TEXT = EXAMPLE.read_text()


def with_value(key: str, value: str, text: str = TEXT) -> str:
    """The example with ``key = ...`` (table.key) given the raw TOML ``value``."""
    table, name = key.split(".")
    lines = text.splitlines()
    current = ""
    for i, line in enumerate(lines):
        m = re.match(r"^\[(\w+)\]", line)
        if m:
            current = m.group(1)
        if current == table and re.match(rf"^#?\s*{name}\s*=", line):
            lines[i] = f"{name} = {value}"
            return "\n".join(lines) + "\n"
    raise AssertionError(f"{key} not in the example")


def test_the_example_profile_is_valid():
    p = load(EXAMPLE)
    assert (p.domain, p.hostname, p.public_ip, p.home_network) == ("example.net", "mail.example.net",
                                                                   "192.0.2.10", "192.0.2.0/24")
    assert (p.smarthost_host, p.smarthost_port, p.smarthost_user) == ("smtp.isp.example", 587, "you@isp.example")
    assert (p.dkim_selector, p.dkim_bits, p.dmarc_policy, p.dns_style) == ("mail", 2048, "none", "mydns")
    assert p.relayhost == "[smtp.isp.example]:587" and p.isp_domain == "isp.example"
    assert p.map_type == "hash" and p.target == "debian-12"


def test_every_line_of_the_example_is_commented():
    lines = TEXT.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\w+\s*=", line):
            assert lines[i - 1].startswith("#"), f"line {i + 1} {line!r} has no comment above it"


def test_the_profile_round_trips():
    p = load(EXAMPLE)
    assert parse(p.to_toml()) == p


# field, raw TOML value, what the reason says
BROKEN = [
    ("site.domain", '"example..net"', "not a valid host name"),
    ("site.domain", '"example"', "not fully qualified"),
    ("site.domain", '"-bad.example"', "not a valid host name"),
    ("site.domain", '"exa mple.net"', "white space"),
    ("site.domain", '"example.net\\nrelayhost = evil.example"', "line break"),
    ("site.domain", '"example.net=x"', "'='"),
    ("site.domain", "5", "expected text"),
    ("site.hostname", '"mail.example.org"', "not in the domain"),
    ("site.hostname", '"mail_1.example.net"', "not a valid host name"),
    ("site.hostname", '"192.0.2.10"', "an address, not a name"),
    ("site.public_ip", '"192.0.2.300"', "not an IP address"),
    ("site.public_ip", '"127.0.0.1"', "not an address the world can reach"),
    ("site.public_ip", '"2001:db8::1"', "IPv6"),
    ("site.home_network", '"192.0.2.1/24"', "host bits"),
    ("site.home_network", '"0.0.0.0/0"', "wider"),
    ("site.home_network", '"198.51.100.0/24"', "does not hold public_ip"),
    ("site.target", '"debian-11"', "not a target"),
    ("smarthost.host", '"smtp isp example"', "white space"),
    ("smarthost.host", '"smtp.isp.example;rm -rf /"', "';'"),
    ("smarthost.port", "25", "not 587 or 465"),
    ("smarthost.port", '"587"', "not 587 or 465"),
    ("smarthost.port", "true", "expected text"),
    ("smarthost.user", '"you:x@isp.example"', "contains ':'"),
    ("smarthost.user", '"you@isp.example\\u0007"', "control character"),
    ("smarthost.user", "\"you'@isp.example\"", "single quote"),
    ("smarthost.password_file", '"relative/file"', "not an absolute path"),
    ("dkim.selector", '"mail.2024"', "not a selector"),
    ("dkim.selector", '"Mail"', "not a selector"),
    ("dkim.selector", '"mail\\"x"', "double quote"),
    ("dkim.bits", "512", "not a key size"),
    ("dkim.bits", '"2048"', "not a key size"),
    ("dmarc.policy", '"monitor"', "not a DMARC policy"),
    ("dmarc.rua", '"dmarc@example.net"', "not one mailto: address"),
    ("dmarc.rua", '"mailto:a@example.net,mailto:b@example.net"', "not one mailto: address"),
    ("dmarc.rua", '"mailto:dmarc@example.net\\r\\nBcc: x"', "line break"),
    ("dmarc.alias_to", '"Root User"', "white space"),
    ("dns.style", '"cloudflare"', "not a style"),
]


@pytest.mark.parametrize("key,value,reason", BROKEN, ids=[f"{k}={v}" for k, v, _ in BROKEN])
def test_each_field_broken_in_turn(key, value, reason, tmp_path):
    text = with_value(key, value)
    line = next(i for i, ln in enumerate(text.splitlines(), 1) if ln.startswith(key.split(".")[1] + " ="))
    path = tmp_path / "mail-site.toml"
    path.write_text(text)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ProfileError) as e:
        load(path)
    err = e.value
    assert err.field == key and reason in err.reason, str(err)
    assert err.line == line, f"{err} (expected line {line})"
    assert f"line {line}" in str(err) and err.hint, str(err)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written


@pytest.mark.parametrize("key", ["site.domain", "site.hostname", "site.public_ip", "site.home_network",
                                 "smarthost.host", "smarthost.user"])
def test_a_missing_required_field_is_named(key):
    table, name = key.split(".")
    text = "\n".join(line for line in TEXT.splitlines() if not line.startswith(name + " ="))
    with pytest.raises(ProfileError, match=rf"{re.escape(key)} .*is missing.*add it under \[{table}\]"):
        parse(text)


def test_a_password_in_the_profile_is_refused_and_not_echoed():
    text = TEXT.replace('user = "you@isp.example"', 'user = "you@isp.example"\npassword = "s3cret-Pw"')
    with pytest.raises(ProfileError) as e:
        parse(text)
    assert "never written in the profile" in str(e.value) and "s3cret-Pw" not in str(e.value)
    assert e.value.line == TEXT.splitlines().index('user = "you@isp.example"') + 2


@pytest.mark.parametrize("text,field", [
    ("[site]\ndomain = \"example.net\"\nbogus = 1\n", "site.bogus"),
    ("[sites]\ndomain = \"example.net\"\n", "sites.domain"),
    ("domain = \"example.net\"\n", "domain"),
    ("[site]\ndomain = \"example.net\n", "file"),
    ("[site]\ndomain = \"exa\x01mple.net\"\n", "file"),
])
def test_unknown_keys_bad_toml_and_raw_control_characters(text, field):
    with pytest.raises(ProfileError) as e:
        parse(text)
    assert e.value.field == field, str(e.value)


INJECTIONS = [
    ("site.hostname", '"mail.example.net\\nmynetworks = 0.0.0.0/0"'),
    ("smarthost.host", '"smtp.isp.example]:587\\nrelayhost = [evil.example"'),
    ("smarthost.user", '"you@isp.example pass\\n[evil.example]:25 x:y"'),
    ("dkim.selector", '"mail._domainkey.example.net. IN TXT \\"v=spf1 +all\\""'),
    ("dmarc.rua", '"mailto:x@example.net; p=none"'),
    ("site.domain", '"example.net\\u0000"'),
    ("site.domain", '"example.net\\u001b[2J"'),
    ("dmarc.alias_to", '"root\\ndmarc: |/bin/sh"'),
    ("smarthost.password_file", '"/tmp/pw\\nrm"'),
]


@pytest.mark.parametrize("key,value", INJECTIONS, ids=[k for k, _ in INJECTIONS])
def test_injection_attempts_are_refused(key, value):
    with pytest.raises(ProfileError) as e:
        parse(with_value(key, value))
    assert e.value.field == key


def test_password_from_a_0600_file_only(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("isp-secret\n")
    pw.chmod(0o644)
    p = parse(with_value("smarthost.password_file", f'"{pw}"'))
    with pytest.raises(ProfileError, match="must be 0600") as e:
        read_password(p, env={})
    assert "isp-secret" not in str(e.value)
    pw.chmod(0o600)
    secret = read_password(p, env={PASSWORD_ENV: "other"})
    assert isinstance(secret, Secret) and secret.reveal() == "isp-secret"
    assert "isp-secret" not in repr(secret) + str(secret) + repr(p)


def test_password_from_the_environment_or_asked():
    p = load(EXAMPLE)
    assert read_password(p, env={}) is None
    assert read_password(p, env={PASSWORD_ENV: "from-env"}).reveal() == "from-env"
    asked = []
    got = read_password(p, env={}, ask=lambda prompt: asked.append(prompt) or "typed")
    assert got.reveal() == "typed" and "you@isp.example" in asked[0]
    with pytest.raises(ProfileError):
        read_password(p, env={PASSWORD_ENV: "two\nlines"})


def test_profile_holds_no_password_field():
    assert not any("password" == f for f in Profile.__dataclass_fields__)
