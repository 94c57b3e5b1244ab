"""DKIM with dkimpy over a real lab DNS server: keys, records, signing, verifying with reasons,
and the RFC 6376 / RFC 8463 example signatures."""
from __future__ import annotations

import os
import stat

import pytest

from labkit.core.auth import DKIMKey, anatomy, check_key_record, key_record, sign, verify
from labkit.core.dns import Zone, make_resolver
from labkit.net.dnsserver import serve
from labkit.errors import ConfigError

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: Bob <bob@inbox.example.org>\r\n"
    b"Subject: Dinner\r\n"
    b"Date: Mon, 01 Jan 2024 12:00:00 +0000\r\n"
    b"Message-ID: <dinner-1@example.com>\r\n"
    b"X-Mailer: lab\r\n"
    b"\r\n"
    b"Are you hungry yet?\r\n"
)

KINDS = ["rsa1024", "rsa2048", "ed25519"]


@pytest.fixture(scope="module")
def keys():
    return {kind: DKIMKey.generate("example.com", f"sel-{kind}", kind) for kind in KINDS}


@pytest.fixture(scope="module")
def zone(keys):
    zone = Zone("example.com")
    for key in keys.values():
        key.publish(zone)
    zone.add("garbled._domainkey.example.com", "TXT", "v=DKIM1; k=rsa; p=MIIB%%%not-base64")
    zone.add("noptag._domainkey.example.com", "TXT", "v=DKIM1; k=rsa")
    zone.add("badk._domainkey.example.com", "TXT", "v=DKIM1; k=dsa; p=AAAA")
    zone.add("badv._domainkey.example.com", "TXT", "v=DKIM2; p=AAAA")
    return zone


@pytest.fixture(scope="module")
def resolver(zone):
    with serve([zone], "127.0.0.1") as server:
        yield make_resolver(server.host, server.port)


@pytest.mark.parametrize("kind", KINDS)
def test_sign_and_verify(keys, resolver, kind):
    signed = sign(MESSAGE, keys[kind])
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(MESSAGE)
    result = verify(signed, resolver=resolver)
    assert result.result == "pass", result
    assert result.ok and result.method == "dkim"
    sig = result.signatures[0]
    assert sig.details["domain"] == "example.com"
    assert sig.details["selector"] == f"sel-{kind}"
    assert sig.details["algorithm"] == keys[kind].algorithm
    assert "from" in sig.details["signed_headers"]
    assert result.passing_domains() == ["example.com"]


@pytest.mark.parametrize("kind", KINDS)
def test_signed_header_changed_fails_on_the_signature(keys, resolver, kind):
    signed = sign(MESSAGE, keys[kind]).replace(b"Subject: Dinner", b"Subject: Lunch")
    result = verify(signed, resolver=resolver)
    assert result.result == "fail"
    assert "signature" in result.reason and "body hash" not in result.reason


@pytest.mark.parametrize("kind", KINDS)
def test_unsigned_header_changed_still_passes(keys, resolver, kind):
    signed = sign(MESSAGE, keys[kind], headers=["From", "To", "Subject", "Date", "Message-ID"])
    assert verify(signed.replace(b"X-Mailer: lab", b"X-Mailer: changed on the way"), resolver=resolver).ok
    # and a header added on the way (Received) does not break it either
    assert verify(b"Received: from somewhere\r\n" + signed, resolver=resolver).ok


@pytest.mark.parametrize("kind", KINDS)
def test_body_changed_is_a_body_hash_mismatch(keys, resolver, kind):
    signed = sign(MESSAGE, keys[kind]).replace(b"hungry", b"thirsty")
    result = verify(signed, resolver=resolver)
    assert result.result == "fail"
    assert "body hash mismatch" in result.reason


def test_relaxed_tolerates_whitespace_simple_does_not(keys, resolver):
    key = keys["ed25519"]
    relaxed = sign(MESSAGE, key, canonicalize=("relaxed", "relaxed"))
    simple = sign(MESSAGE, key, canonicalize=("simple", "simple"))
    change = (b"Subject: Dinner", b"Subject:   Dinner")
    assert verify(relaxed.replace(*change), resolver=resolver).ok
    assert not verify(simple.replace(*change), resolver=resolver).ok


def test_2048_bit_record_is_split_and_verifies(keys, zone, resolver):
    record = zone.find("sel-rsa2048._domainkey.example.com", "TXT")[0]
    assert len(record.value) > 255 and len(record.strings) == 2
    assert all(len(s.encode()) <= 255 for s in record.strings)
    check = check_key_record("example.com", "sel-rsa2048", resolver)
    assert check.ok and check.details["key_bits"] == 2048 and check.details["strings"] == [2]
    result = verify(sign(MESSAGE, keys["rsa2048"]), resolver=resolver)
    assert result.ok and result.signatures[0].details["key_strings"] == 2


def test_anatomy_names_each_tag(keys):
    parts = dict((tag, (value, meaning)) for tag, value, meaning in anatomy(sign(MESSAGE, keys["rsa2048"])))
    assert parts["d"][0] == "example.com"
    assert parts["c"][0] == "relaxed/relaxed"
    assert "from" in parts["h"][0].lower()
    assert "body" in parts["bh"][1] and "signature" in parts["b"][1]
    with pytest.raises(ValueError, match="no signature"):
        anatomy(MESSAGE)


# ------------------------------------------------------------------ keys and records


def test_private_key_written_0600_and_loaded_back(tmp_path, keys):
    for kind, key in keys.items():
        path = key.write(tmp_path / f"{kind}.private")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        again = DKIMKey.load(path, "example.com", key.selector)
        assert again.record == key.record
    assert b"BEGIN RSA PRIVATE KEY" in keys["rsa2048"].private_pem()  # PKCS#1, as opendkim-genkey writes
    assert "PRIVATE" not in repr(keys["rsa2048"]) and "private_key" not in repr(keys["rsa2048"])


def test_key_records():
    assert key_record("AAAA") == "v=DKIM1; k=rsa; p=AAAA"
    assert key_record("AAAA", key_type="ed25519", testing=True) == "v=DKIM1; k=ed25519; t=y; p=AAAA"
    with pytest.raises(ConfigError):
        key_record("AAAA", key_type="dsa")
    with pytest.raises(ConfigError, match="selector"):
        DKIMKey.generate("example.com", "bad selector")
    with pytest.raises(ConfigError, match="kind"):
        DKIMKey.generate("example.com", "mail", "rsa512")


@pytest.mark.parametrize("selector, expected, words", [
    ("sel-rsa1024", "pass", ["1024-bit rsa"]),
    ("sel-ed25519", "pass", ["ed25519"]),
    ("missing", "permerror", ["no key", "NXDOMAIN"]),
    ("garbled", "permerror", ["garbled"]),
    ("noptag", "permerror", ["not usable"]),
    ("badk", "permerror", ["dsa"]),
    ("badv", "permerror", ["version"]),
])
def test_check_key_record(resolver, selector, expected, words):
    result = check_key_record("example.com", selector, resolver)
    assert result.result == expected, result
    for word in words:
        assert word in result.reason


# ------------------------------------------------------------------ bad input: results, never crashes


def _with_selector(selector: str) -> bytes:
    return sign(MESSAGE, DKIMKey.generate("example.com", selector, "ed25519"))


@pytest.mark.parametrize("message, expected, words", [
    (MESSAGE, "none", ["no DKIM-Signature"]),
    (b"DKIM-Signature: v=1; a=rsa-sha256; garbage\r\n" + MESSAGE, "permerror", ["malformed"]),
    (b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; h=from; bh=AAAA; b=AAAA\r\n" + MESSAGE,
     "permerror", ["malformed", "s="]),
    (b"DKIM-Signature: v=1; a=rot13; d=example.com; s=x; h=from; bh=AAAA; b=AAAA\r\n" + MESSAGE,
     "permerror", ["malformed", "algorithm"]),
    (b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=x; h=from; bh=!!; b=AAAA\r\n" + MESSAGE,
     "permerror", ["malformed"]),
    (b"DKIM-Signature: v=1; v=1\r\n" + MESSAGE, "permerror", ["malformed"]),
    (b"\x00\xff not a message", "permerror", ["cannot be read"]),
])
def test_malformed_signatures(resolver, message, expected, words):
    result = verify(message, resolver=resolver)
    assert result.result == expected, result
    for word in words:
        assert word in result.reason


@pytest.mark.parametrize("selector, words", [
    ("missing", ["no key", "missing._domainkey.example.com"]),
    ("garbled", ["cannot be used"]),
    ("noptag", ["cannot be used"]),
    ("badk", ["cannot be used", "dsa"]),
])
def test_missing_or_garbled_keys(resolver, selector, words):
    result = verify(_with_selector(selector), resolver=resolver)
    assert result.result == "permerror", result
    for word in words:
        assert word in result.reason


def test_wrong_key_is_a_signature_mismatch(resolver):
    # signed by a key that is not the one published under that selector
    result = verify(sign(MESSAGE, DKIMKey.generate("example.com", "sel-ed25519", "ed25519")), resolver=resolver)
    assert result.result == "fail" and "signature mismatch" in result.reason


def test_dns_down_is_temperror(keys):
    dead = make_resolver("127.0.0.1", 9, timeout=0.2, lifetime=0.4)
    result = verify(sign(MESSAGE, keys["ed25519"]), resolver=dead)
    assert result.result == "temperror" and result.temporary
    assert "try again later" in result.reason
    assert check_key_record("example.com", "sel-ed25519", dead).result == "temperror"


def test_one_good_signature_of_two_is_enough(keys, resolver):
    twice = sign(sign(MESSAGE, keys["rsa2048"]), DKIMKey.generate("example.com", "missing", "ed25519"))
    result = verify(twice, resolver=resolver)
    assert result.ok
    assert [s.result for s in result.signatures] == ["permerror", "pass"]


def test_sign_refuses_without_from(keys):
    with pytest.raises(ConfigError, match="From"):
        sign(MESSAGE, keys["ed25519"], headers=["Subject"])


# ------------------------------------------------------------------ RFC example signatures
#
# The messages, keys and signatures below are the examples printed in RFC 6376 appendix A and
# RFC 8463 appendix A, served by a lab DNS server and verified through labkit.

RFC_MESSAGE_HEADERS = (
    b"From: Joe SixPack <joe@football.example.com>\r\n"
    b"To: Suzie Q <suzie@shopping.example.net>\r\n"
    b"Subject: Is dinner ready?\r\n"
    b"Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r\n"
    b"Message-ID: <20030712040037.46341.5F8J@football.example.com>\r\n"
)
RFC_MESSAGE_BODY = b"\r\nHi.\r\n\r\nWe lost the game. Are you hungry yet?\r\n\r\nJoe.\r\n"

RFC6376_KEY = (
    "v=DKIM1; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDwIRP/UC3SBsEmGqZ9ZJW3/DkMoGeLnQg1fWn7/zYt"
    "IxN2SnFCjxOCKG9v3b4jYfcTNh5ijSsq631uBItLa7od+v/RtdC2UzJ1lWT947qR+Rcac2gbto/NMqJ0fzfVjH4OuKhi"
    "tdY9tf6mcwGjaNBcWToIMmPSPDdQPNUYckcQ2QIDAQAB"
)
RFC6376_MESSAGE = (
    b"DKIM-Signature: v=1; a=rsa-sha256; s=brisbane; d=example.com;\r\n"
    b"      c=simple/simple; q=dns/txt; i=joe@football.example.com;\r\n"
    b"      h=Received : From : To : Subject : Date : Message-ID;\r\n"
    b"      bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b"      b=AuUoFEfDxTDkHlLXSZEpZj79LICEps6eda7W3deTVFOk4yAUoqOB\r\n"
    b"        4nujc7YopdG5dWLSdNg6xNAZpOPr+kHxt1IrE+NahM6L/LbvaHut\r\n"
    b"        KVdkLLkpVaVVQPzeRDI009SO2Il5Lu7rDNH6mZckBdrIx0orEtZV\r\n"
    b"        4bmp/YzhwvcubU4=;\r\n"
    b"Received: from client1.football.example.com  [192.0.2.1]\r\n"
    b"      by submitserver.example.com with SUBMISSION;\r\n"
    b"      Fri, 11 Jul 2003 21:01:54 -0700 (PDT)\r\n"
    + RFC_MESSAGE_HEADERS + RFC_MESSAGE_BODY
)

RFC8463_SEED = "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A="
RFC8463_ED25519_KEY = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
RFC8463_ED25519_SIGNATURE = (
    b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r\n"
    b" subject : date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11Bus\r\n"
    b" Fa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==\r\n"
)
RFC8463_RSA_KEY = (
    "v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDkHlOQoBTzWRiGs5V6NpP3idY6Wk08a5qhdR6wy5bd"
    "OKb2jLQiY/J16JYi0Qvx/byYzCNb3W91y3FutACDfzwQ/BC/e/8uBsCR+yz1Lxj+PL6lHvqMKrM3rG4hstT5QjvHO9PzoxZyV"
    "YLzBfO2EeC3Ip3G+2kryOTIKT+l/K4w3QIDAQAB"
)
RFC8463_RSA_SIGNATURE = (
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed;\r\n"
    b" d=football.example.com; i=@football.example.com;\r\n"
    b" q=dns/txt; s=test; t=1528637909; h=from : to : subject :\r\n"
    b" date : message-id : from : subject : date;\r\n"
    b" bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n"
    b" b=F45dVWDfMbQDGHJFlXUNB2HKfbCeLRyhDXgFpEL8GwpsRe0IeIixNTe3\r\n"
    b" DhCVlUrSjV4BwcVcOF6+FF3Zo9Rpo1tFOeS9mPYQTnGdaSGsgeefOsk2Jz\r\n"
    b" dA+L10TeYt9BgDfQNZtKdN1WO//KgIqXP7OdEFE4LjFYNcUxZQ4FADY+8=\r\n"
)


@pytest.fixture(scope="module")
def rfc_dns():
    example = Zone("example.com")
    example.add("brisbane._domainkey.example.com", "TXT", RFC6376_KEY)
    football = Zone("football.example.com")
    football.add("brisbane._domainkey.football.example.com", "TXT", RFC8463_ED25519_KEY)
    football.add("test._domainkey.football.example.com", "TXT", RFC8463_RSA_KEY)
    with serve([example, football], "127.0.0.1") as server:
        yield football, make_resolver(server.host, server.port)


def test_rfc6376_appendix_a_verifies(rfc_dns):
    _zone, resolver = rfc_dns
    result = verify(RFC6376_MESSAGE, resolver=resolver)
    assert result.result == "pass", result
    assert result.signatures[0].details["key_bits"] == 1024
    tampered = verify(RFC6376_MESSAGE.replace(b"hungry", b"Hungry"), resolver=resolver)
    assert "body hash mismatch" in tampered.reason


def test_rfc8463_appendix_a_ed25519_verifies(rfc_dns):
    _zone, resolver = rfc_dns
    result = verify(RFC8463_ED25519_SIGNATURE + RFC_MESSAGE_HEADERS + RFC_MESSAGE_BODY, resolver=resolver)
    assert result.result == "pass", result
    assert result.signatures[0].details["algorithm"] == "ed25519-sha256"


def test_rfc8463_secret_key_gives_the_published_public_key():
    import base64

    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = DKIMKey("football.example.com", "brisbane",
                  ed25519.Ed25519PrivateKey.from_private_bytes(base64.b64decode(RFC8463_SEED)))
    assert key.record == RFC8463_ED25519_KEY


def test_rfc8463_message_with_an_rsa_and_an_ed25519_signature(rfc_dns):
    # RFC 8463 appendix A signs one message twice: ed25519 under brisbane, RSA under test
    _zone, resolver = rfc_dns
    both = RFC8463_ED25519_SIGNATURE + RFC8463_RSA_SIGNATURE + RFC_MESSAGE_HEADERS + RFC_MESSAGE_BODY
    result = verify(both, resolver=resolver)
    assert result.result == "pass", result
    assert [s.result for s in result.signatures] == ["pass", "pass"]
    assert [s.details["algorithm"] for s in result.signatures] == ["ed25519-sha256", "rsa-sha256"]
    broken = verify(both.replace(b"Is dinner ready?", b"Is dinner ready!"), resolver=resolver)
    assert [s.result for s in broken.signatures] == ["fail", "fail"]
