"""sasl: AUTH PLAIN strings taken apart without showing the password."""
from __future__ import annotations

import base64

import pytest

from labkit import ConfigError, sasl
from labkit.net.clients.smtp import auth_plain_string

USER, PASSWORD = "alice@isp.example.net", "isp-lab-password"


def test_decode_plain_splits_three_parts_and_hides_the_password():
    parts = sasl.decode_plain(auth_plain_string(USER, PASSWORD))
    assert (parts.authzid, parts.user, parts.password) == ("", USER, PASSWORD)
    for shown in (repr(parts), str(parts), parts.summary()):
        assert PASSWORD not in shown and "16 characters" in shown and USER in shown


def test_decode_plain_with_authzid():
    parts = sasl.decode_plain(auth_plain_string(USER, PASSWORD, authzid="admin@isp.example.net"))
    assert parts.authzid == "admin@isp.example.net"


@pytest.mark.parametrize("text,reason", [
    ("", "empty"),
    ("not base64!", "not base64"),
    (base64.b64encode(b"alice\0pw").decode(), "2 NUL-separated"),
    (base64.b64encode(b"\0a\0b\0c").decode(), "4 NUL-separated"),
    (base64.b64encode(b"\0\xff\0pw").decode(), "UTF-8"),
])
def test_decode_plain_says_why_it_refuses(text, reason):
    with pytest.raises(ConfigError, match=reason) as err:
        sasl.decode_plain(text)
    assert "pw" not in str(err.value).replace("password", "")


def test_mask_shows_only_the_length():
    s = auth_plain_string(USER, PASSWORD)
    assert sasl.mask(s) == f"<base64, {len(s)} characters: hidden, it carries the password>"
    assert s not in sasl.mask(s)


def test_check_plain_reasons_never_echo_secrets():
    right = sasl.check_plain(auth_plain_string(USER, PASSWORD), USER, PASSWORD)
    assert right.ok
    cases = {
        "wrong password": auth_plain_string(USER, "guess-password"),
        "wrong user": auth_plain_string("bob@inbox.example.org", PASSWORD),
        "authzid": auth_plain_string(USER, PASSWORD, authzid="x"),
        "not base64": "@@@@",
    }
    for what, text in cases.items():
        r = sasl.check_plain(text, USER, PASSWORD)
        assert not r.ok, what
        assert PASSWORD not in r.reason and "guess-password" not in r.reason and text not in r.reason, what
    assert "third part" in sasl.check_plain(cases["wrong password"], USER, PASSWORD).reason
    assert "second part" in sasl.check_plain(cases["wrong user"], USER, PASSWORD).reason


def test_plain_string_by_shell_matches():
    from conftest import require_tool

    require_tool("base64")
    assert sasl.plain_string_by_shell(USER, PASSWORD) == auth_plain_string(USER, PASSWORD)
    with pytest.raises(ConfigError, match="line break"):
        sasl.plain_string_by_shell(USER, "a\nb")
