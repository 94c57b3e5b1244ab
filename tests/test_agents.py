"""labkit.teach.agents: which agent handled a message, from its Received: lines and the lab's events (pure)."""
from __future__ import annotations

import pytest

from labkit.teach import agents
from labkit.net.events import Event
from labkit.core.smtp.rules import received_header
from labkit.core.world import default_world

DATE = "Tue, 02 Jan 2024 10:00:00 +0900"


def _received(helo: str, ip: str, by: str, protocol: str, queue_id: str) -> bytes:
    return received_header(helo=helo, peer_ip=ip, peer_name=helo, by=by, protocol=protocol,
                           queue_id=queue_id, rcpts=["bob@inbox.example.org"], date=DATE)


def _ev(host: str, role: str, kind: str, **details) -> Event:
    return Event(0.0, host, role, kind, details)


# the ch00/ch01 path: PC -> submission (AUTH) -> smarthost (AUTH) -> inbox MX -> Maildir
MESSAGE = (_received("mail.isp.example.net", "127.0.30.25", "mx.inbox.example.org", "ESMTPS", "C3")
           + _received("mail.example.com", "127.0.20.25", "mail.isp.example.net", "ESMTPSA", "B2")
           + _received("pc.example.com", "127.0.20.100", "mail.example.com", "ESMTPSA", "A1")
           + b"From: alice@example.com\r\nTo: bob@inbox.example.org\r\nSubject: hi\r\n\r\nhello\r\n")

EVENTS = [
    _ev("mail.example.com", "submission", "listening", standard_port=587),
    _ev("mail.isp.example.net", "smarthost", "listening", standard_port=587),
    _ev("mx.inbox.example.org", "inbox", "listening", standard_port=25),
    _ev("mail.example.com", "submission", "accepted", queue_id="A1", auth_user="alice@example.com",
        rcpts=["bob@inbox.example.org"]),
    _ev("mail.example.com", "submission", "relayed", queue_id="A1", via="mail.isp.example.net",
        address="127.0.30.25", reply="250 2.0.0 Ok: queued as B2"),
    _ev("mail.isp.example.net", "smarthost", "accepted", queue_id="B2", auth_user="alice@isp.example.net",
        rcpts=["bob@inbox.example.org"]),
    _ev("mail.isp.example.net", "smarthost", "relayed", queue_id="B2", via="mx.inbox.example.org",
        address="127.0.40.25", reply="250 2.0.0 Ok: queued as C3"),
    _ev("mx.inbox.example.org", "inbox", "accepted", queue_id="C3", auth_user=None,
        rcpts=["bob@inbox.example.org"]),
    _ev("mx.inbox.example.org", "inbox", "delivered", queue_id="C3", to="bob@inbox.example.org",
        mailbox="/sandbox/mail/inbox.example.org/bob/new/123.M1"),
]


def test_follow_names_each_agent_in_order():
    steps = agents.follow(MESSAGE, EVENTS)
    assert [(s.agent, s.host, s.role) for s in steps] == [
        ("MUA", "pc.example.com", ""),
        ("MSA", "mail.example.com", "submission"),
        ("MTA", "mail.example.com", "submission"),
        ("MSA", "mail.isp.example.net", "smarthost"),
        ("MTA", "mail.isp.example.net", "smarthost"),
        ("MTA", "mx.inbox.example.org", "inbox"),
        ("MDA", "mx.inbox.example.org", "inbox"),
        ("mailbox", "mx.inbox.example.org", "inbox"),
    ]
    assert "AUTH as alice@example.com" in steps[1].action and "port 587" in steps[1].action
    assert "127.0.20.100" in steps[0].action
    assert "for inbox.example.org" in steps[5].action and "port 25" in steps[5].action
    assert steps[7].action == "holds it as 123.M1"
    assert steps[1].evidence.startswith("Received: from pc.example.com") and "id A1" in steps[1].evidence


def test_follow_without_events_still_reads_the_received_lines():
    steps = agents.follow(MESSAGE, [])
    assert [s.agent for s in steps] == ["MUA", "MTA", "MTA", "MTA"]  # no proof of AUTH, relay or delivery
    assert [s.host for s in steps[1:]] == ["mail.example.com", "mail.isp.example.net", "mx.inbox.example.org"]


def test_follow_ignores_events_of_other_hosts_with_the_same_id():
    stray = [_ev("verifier.example.org", "verifier", "delivered", queue_id="C3", to="x@verifier.example.org")]
    assert "MDA" not in [s.agent for s in agents.follow(MESSAGE, stray)]


def test_follow_of_a_message_without_received_lines_is_empty():
    assert agents.follow(b"Subject: typed locally\r\n\r\nhi\r\n", EVENTS) == []


def test_path_mermaid_groups_agents_by_host():
    text = agents.path_mermaid(agents.follow(MESSAGE, EVENTS)).source
    assert text.startswith("flowchart LR")
    assert text.count("subgraph") == 4 and text.count("    end") == 4
    assert 's1["MSA<br/>submission"]' in text and "s0 -->|ESMTPSA| s1" in text
    assert "s5 -->|local delivery| s6" in text
    assert "<alice" not in text and ";" not in text  # nothing Mermaid would misread


def test_steps_table_has_a_row_per_step():
    table = agents.steps_table(agents.follow(MESSAGE, EVENTS))
    assert [r["agent"] for r in table.rows][:2] == ["MUA", "MSA"]
    assert "<table" in table.to_html()


@pytest.mark.parametrize("address, roles", [
    ("alice@example.com", ["submission", "submissions"]),
    ("ALICE@example.com", ["submission", "submissions"]),
    ("alice@isp.example.net", ["smarthost"]),
    ("bob@inbox.example.org", []),      # a mailbox, but no login at any MSA
    ("nobody@example.com", []),
])
def test_msa_roles(address, roles):
    assert agents.msa_roles(default_world(), address) == roles


def test_every_lab_role_has_agents_and_a_real_program():
    world = default_world()
    for svc in world.services:
        assert svc.role in agents.ROLE_AGENTS and svc.role in agents.REAL_PROGRAMS
        assert set(agents.ROLE_AGENTS[svc.role]) <= set(agents.AGENTS)
    assert agents.AGENTS["MDA"].source == "RFC 5598 §4.3.3"
