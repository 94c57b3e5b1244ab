"""The pure cores of labkit.net.smtp: paths, the relay decision, Maildir, the queue's helpers.

No sockets here. The relay table is the heart of open-relay avoidance: each row is an address
that spammers have used to make a server relay for them, with what this lab's MTA must answer.
"""
from __future__ import annotations

import email
import email.policy
import ipaddress

import pytest

from labkit.net.context import LabContext
from labkit.errors import ConfigError
from labkit.net.events import EventLog
from labkit.net.mailbox import maildir
from labkit.core.smtp.address import NULL_PATH, check_path, parse_domain, parse_path
from labkit.core.smtp.policy import in_networks, parse_networks, relay_decision
from labkit.net.smtp.queue import (QueuedMessage, RcptResult, backoff, build_bounce, decode_spool,
                               encode_spool, enhanced_status, outcome_for)
from labkit.core.smtp.rules import injected_failure, op25b_decision, received_header, with_type
from labkit.core.world import default_world

LOCAL = ["example.com"]
OUTSIDER = "127.0.40.25"  # the inbox provider's address: not in mynetworks, not authenticated
MYNETWORKS = ["127.0.20.25/32"]

# (recipient as the client writes it, accepted?, a word the reason must contain)
RELAY_TABLE = [
    ("<bob@example.com>", True, "local domain"),
    ("bob@example.com", True, "local domain"),
    ("<BOB@EXAMPLE.COM>", True, "local domain"),
    ("<bob@Example.Com.>", True, "local domain"),
    ("<@relay.example.net:bob@example.com>", True, "local domain"),
    ('<"bob smith"@example.com>', True, "local domain"),
    ("<eve@other.example.net>", False, "not a local domain"),
    ("<eve@OTHER.EXAMPLE.NET.>", False, "not a local domain"),
    ("<eve@example.com.other.example.net>", False, "not a local domain"),
    ("<eve@sub.example.com>", False, "not a local domain"),
    ("<user%other.example.net@example.com>", False, "%"),
    ("<USER%OTHER.EXAMPLE.NET@EXAMPLE.COM.>", False, "%"),
    ("<other.example.net!user@example.com>", False, "!"),
    ("<@example.com:user@other.example.net>", False, "not a local domain"),
    ("<@example.com,@example.com:user@other.example.net>", False, "not a local domain"),
    ('<"user@other.example.net"@example.com>', False, "@"),
    ('<"user%other.example.net"@example.com>', False, "%"),
    ('<"user\\@other.example.net"@example.com>', False, "@"),
    ("<user@other.example.net@example.com>", False, "more than one @"),
    ("<user@[127.0.40.25]>", False, "address literal"),
    ("<user@[127.0.20.25]>", False, "address literal"),
    ("<user@[IPv6:::1]>", False, "address literal"),
    ("<postmaster@[127.0.0.1]>", False, "address literal"),
    ("<>", False, "null path"),
    ("<bob@example..com>", False, "label"),
    ("<bob@-example.com>", False, "label"),
    ("<bob@example.com", False, "does not end"),
    ("<@example.com;user@other.example.net>", False, "syntax"),
]


@pytest.mark.parametrize("rcpt,accepted,why", RELAY_TABLE, ids=[r[0] for r in RELAY_TABLE])
def test_relay_decision_for_an_unauthenticated_outsider(rcpt, accepted, why):
    result = relay_decision(rcpt, local_domains=LOCAL, client_ip=OUTSIDER, authenticated=False,
                            mynetworks=MYNETWORKS)
    assert result.ok is accepted, result.reason
    assert why.lower() in result.reason.lower()
    reply = result.details["reply"]
    assert reply[0] == ("2" if accepted else "5"), reply
    if accepted:
        assert result.details["action"] == "deliver"


def test_the_brief_reason_for_a_third_party_domain():
    result = relay_decision("eve@other.example.net", local_domains=LOCAL, client_ip=OUTSIDER,
                            authenticated=False, mynetworks=MYNETWORKS)
    assert result.reason == ("relay access denied: other.example.net is not a local domain and the "
                             "client is neither authenticated nor in mynetworks")
    assert result.details["reply"].startswith("554 5.7.1 Relay access denied")


@pytest.mark.parametrize("how", ["authenticated", "mynetworks"])
def test_trusted_clients_may_relay(how):
    result = relay_decision("bob@inbox.example.org", local_domains=LOCAL,
                            client_ip="127.0.20.25" if how == "mynetworks" else OUTSIDER,
                            authenticated=how == "authenticated", mynetworks=MYNETWORKS)
    assert result.ok and result.details["action"] == "relay"
    assert how.replace("authenticated", "SMTP AUTH") in result.reason


def test_routing_characters_to_a_local_domain_are_refused_even_for_trusted_clients():
    result = relay_decision("user%other.example.net@example.com", local_domains=LOCAL,
                            client_ip="127.0.20.25", authenticated=True, mynetworks=MYNETWORKS)
    assert not result.ok and "sender-specified routing" in result.reason


def test_a_source_route_is_ignored_and_said_so():
    result = relay_decision("<@relay.example.net:bob@example.com>", local_domains=LOCAL,
                            client_ip=OUTSIDER, authenticated=False, mynetworks=())
    assert result.ok and result.details["route_ignored"] == ("relay.example.net",)


def test_mynetworks_parsing_and_membership():
    assert parse_networks("127.0.0.0/8, ::1") == (ipaddress.ip_network("127.0.0.0/8"),
                                                  ipaddress.ip_network("::1/128"))
    assert in_networks("127.0.20.25", ["127.0.20.25/32"])
    assert not in_networks("127.0.20.26", ["127.0.20.25/32"])
    assert not in_networks("not-an-ip", ["127.0.0.0/8"])
    assert not in_networks(None, ["127.0.0.0/8"])
    with pytest.raises(ConfigError, match="mynetworks"):
        parse_networks(["127.0.0.0/33"])


# -- paths --------------------------------------------------------------------------------

def test_parse_path_keeps_every_detail():
    box = parse_path("<@a.example,@B.example:Bob.Smith@Example.COM.>")
    assert (box.local, box.domain, box.route) == ("Bob.Smith", "example.com", ("a.example", "b.example"))
    assert box.address == "Bob.Smith@example.com" and box.path == "<Bob.Smith@example.com>"
    quoted = parse_path('<"john \\"j\\" smith"@example.com>')
    assert quoted.quoted and quoted.unquoted_local == 'john "j" smith'
    assert parse_path("<>", allow_null=True) is NULL_PATH and NULL_PATH.path == "<>"
    literal = parse_path("<postmaster@[IPv6:0:0:0:0:0:0:0:1]>")
    assert literal.domain == "[IPv6:::1]" and str(literal.literal) == "::1"
    assert parse_path("user@[127.0.0.1]").literal == ipaddress.ip_address("127.0.0.1")
    assert parse_path("<user%x@example.com>").routing_characters == ("%",)


BAD_PATHS = [
    ("", "null path"),
    ("<>", "null path"),
    ("<bob>", "no @"),
    ("<@example.com>", "must end with ':'"),
    ("<bob@>", "empty"),
    ("<@example.com:>", "no @"),
    ("<a..b@example.com>", "dot-string"),
    ("<.bob@example.com>", "dot-string"),
    ("<bob smith@example.com>", "dot-string"),
    ('<"bob@example.com>', "closing quote"),
    ('<"bob"x@example.com>', "followed by @"),
    ("<bob@[300.1.1.1]>", "IP address literal"),
    ("<bob@[127.0.0.1>", "does not close"),
    ("<bob@exa_mple.com>", "label"),
    ("<bób@example.com>", "non-ASCII"),
    ("<bob@example.com>\r\nRCPT TO:<x@y.z>", "line break"),
    ("<" + "x" * 65 + "@example.com>", "64"),
    ("<bob@" + "a" * 300 + ".com>", "long"),
    ("bob@example.com>", "does not open"),
]


@pytest.mark.parametrize("text,why", BAD_PATHS, ids=[b[0][:30] for b in BAD_PATHS])
def test_bad_paths_raise_config_error_and_give_a_501(text, why):
    with pytest.raises(ConfigError) as info:
        parse_path(text)
    assert why.lower() in str(info.value).lower()
    checked = check_path(text)
    assert not checked.ok and checked.details["reply"].startswith("501 5.1.3 ")
    assert "\n" not in checked.details["reply"]


def test_parse_domain_normalises():
    assert parse_domain("Mail.Example.COM.") == "mail.example.com"
    assert parse_domain("[IPv6:2001:DB8::1]") == "[IPv6:2001:db8::1]"
    with pytest.raises(ConfigError):
        parse_domain("example..com")


# -- the roles' pure decisions ------------------------------------------------------------

def test_op25b_decision():
    world = default_world()
    blocked = op25b_decision(world, "127.0.40.25", "127.0.20.100")
    assert not blocked and blocked.details["reply"].startswith("554 5.7.1 Port 25 from the ISP's home")
    assert "127.0.20.0/24" in blocked.details["reply"]
    assert op25b_decision(world, "127.0.40.25", "127.0.30.25")
    flat = world.flattened()
    assert op25b_decision(flat, "127.0.0.1", "127.0.0.1"), "a flattened world must not block itself"


def test_received_header_and_with_types():
    assert [with_type(esmtp=e, tls=t, authenticated=a) for e, t, a in
            [(False, False, False), (True, False, False), (True, True, False), (True, False, True),
             (True, True, True)]] == ["SMTP", "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA"]
    h = received_header(helo="pc.example.com", peer_ip="127.0.20.100", peer_name="pc.example.com",
                        by="mail.example.com", protocol="ESMTPSA", queue_id="ABC", rcpts=["b@x.example"],
                        tls={"version": "TLSv1.3", "cipher": "TLS_AES_128_GCM_SHA256"},
                        date="Mon, 01 Jan 2024 00:00:00 +0000")
    msg = email.message_from_bytes(h + b"\r\nbody", policy=email.policy.default)
    value = " ".join(str(msg["Received"]).split())
    assert value == ("from pc.example.com (pc.example.com [127.0.20.100]) (using TLSv1.3 with cipher "
                     "TLS_AES_128_GCM_SHA256) by mail.example.com (Mail Lab) with ESMTPSA id ABC "
                     "for <b@x.example>; Mon, 01 Jan 2024 00:00:00 +0000")
    two = received_header(helo="h", peer_ip="1.2.3.4", peer_name=None, by="b", protocol="SMTP",
                          queue_id="Q", rcpts=["a@x", "b@x"])
    assert b"for <" not in two and b"(unknown [1.2.3.4])" in two


def test_injected_failures():
    assert injected_failure("tempfail@example.com") == "tempfail"
    assert injected_failure("550@inbox.example.org") == "550"
    assert injected_failure("TIMEOUT@example.com") == "timeout"
    assert injected_failure("bob@example.com") is None


# -- Maildir ------------------------------------------------------------------------------

@pytest.fixture
def ctx(tmp_path):
    return LabContext(default_world(), tmp_path / "sandbox", tmp_path / "ca.crt", {},
                      EventLog(tmp_path / "events.jsonl"))


MESSAGE = (b"From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: Hello\r\n"
           b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@example.com>\r\n\r\nHi Bob\r\n")


def test_maildir_deliver_list_read(ctx):
    assert maildir.list_messages(ctx, "bob@example.com") == []
    d = maildir.deliver(ctx, "Bob@Example.com", MESSAGE)
    assert d.path.parent == ctx.sandbox / "mail" / "example.com" / "bob" / "new"
    assert d.path.read_bytes() == MESSAGE.replace(b"\r\n", b"\n")
    [info] = maildir.list_messages(ctx, "bob@example.com")
    assert (info.key, info.path, info.sender, info.to, info.subject, info.message_id) == (
        d.key, d.path, "Alice <alice@example.com>", "bob@example.com", "Hello", "<1@example.com>")
    assert info.size == len(MESSAGE.replace(b"\r\n", b"\n")) and info.as_dict()["from"] == info.sender
    assert maildir.read_message(ctx, "bob@example.com", d.key, crlf=True) == MESSAGE
    with pytest.raises(KeyError, match="list the mailbox"):
        maildir.read_message(ctx, "bob@example.com", "nope")


@pytest.mark.parametrize("address", ["../../etc@example.com", "bob@../x", ".hidden@example.com",
                                     "a/b@example.com", "no-at-sign"])
def test_maildir_refuses_names_that_leave_the_sandbox(ctx, address):
    with pytest.raises(ConfigError):
        maildir.deliver(ctx, address, MESSAGE)


# -- the queue's pure helpers ---------------------------------------------------------------

def test_outcomes_backoff_and_status():
    assert [outcome_for(c) for c in (250, 251, 421, 451, 550, 554)] == \
        ["relayed", "relayed", "deferred", "deferred", "bounced", "bounced"]
    assert [backoff(n, 0.5, 3) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 3, 3]
    assert enhanced_status(550, "5.1.1 no such user") == "5.1.1"
    assert enhanced_status(554, "Relay access denied") == "5.0.0"


def test_spool_round_trip():
    msg = QueuedMessage("ABCDEF0123", "", ["a@x.example"], MESSAGE, 1700000000.5, 2, "smarthost")
    back = decode_spool(encode_spool(msg))
    assert back == msg and back.is_bounce
    with pytest.raises(ValueError):
        decode_spool(b"no envelope")


def test_bounce_is_a_delivery_status_notification():
    failed = [RcptResult("550@inbox.example.org", "bounced",
                         "550 5.1.1 <550@inbox.example.org>: Recipient address rejected",
                         via="mx.inbox.example.org", status="5.1.1")]
    raw = build_bounce(reporting_mta="mail.isp.example.net", queue_id="Q1", original_from="alice@example.com",
                       failed=failed, original=MESSAGE, arrival=1700000000, now=1700000100)
    assert b"\r\n" in raw and b"\r\r" not in raw
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["From"].addresses[0].username == "MAILER-DAEMON"
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    parts = [p.get_content_type() for p in msg.iter_parts()]
    assert parts == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    status = raw.decode()
    for line in ("Reporting-MTA: dns; mail.isp.example.net", "Final-Recipient: rfc822; 550@inbox.example.org",
                 "Action: failed", "Status: 5.1.1", "Remote-MTA: dns; mx.inbox.example.org",
                 "Diagnostic-Code: smtp; 550 5.1.1", "Subject: Hello"):
        assert line in status


def test_list_mailbox_gives_json_ready_dicts(ctx):
    folder = ctx.mailbox_dir("bob@example.com")
    assert maildir.list_mailbox(folder) == []
    d = maildir.deliver(ctx, "bob@example.com", MESSAGE)
    [row] = maildir.list_mailbox(folder)
    assert row["key"] == d.key and row["path"] == str(d.path) and row["from"] == "Alice <alice@example.com>"
    assert {"to", "subject", "date", "message_id", "size"} <= set(row)
