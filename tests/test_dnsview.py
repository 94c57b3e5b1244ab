"""labkit.teach.dnsview: the MyDNS table beside the zone file, and how a sending MTA picks where to deliver."""
from __future__ import annotations

import pytest

from labkit.teach import dnsview
from labkit.core.dns import DNSLookupError, Zone, find_zone, lab_zones, make_resolver
from labkit.net.dnsserver import Query, serve
from labkit.core.world import default_world


def _zone() -> Zone:
    zone = Zone("example.com", nameserver="ns.lab.test")
    zone.add("example.com", "MX", "10 mail.example.com")
    zone.add("mail.example.com", "A", "127.0.20.25")
    zone.add("_spf.example.com", "TXT", "v=spf1 +ip4:127.0.20.0/24 -all")
    return zone


def test_mydns_rows_are_relative_and_leave_out_soa_and_ns():
    rows = dnsview.mydns_rows(_zone())
    assert rows == [{"Hostname": "", "Type": "MX", "Content": "10 mail.example.com"},
                    {"Hostname": "mail", "Type": "A", "Content": "127.0.20.25"},
                    {"Hostname": "_spf", "Type": "TXT", "Content": "v=spf1 +ip4:127.0.20.0/24 -all"}]
    assert {"Hostname": "", "Type": "NS", "Content": "ns.lab.test"} in dnsview.mydns_rows(_zone(), include_ns=True)


def test_zone_view_shows_both_forms_escaped():
    zone = _zone()
    zone.add("example.com", "TXT", 'say "<hi>"')
    view = dnsview.ZoneView(zone)
    html = view.to_html()
    assert "MyDNS DOMAIN INFO: example.com" in html and "$ORIGIN example.com." in html
    assert "<hi>" not in html and "&lt;hi&gt;" in html
    assert "_spf" in repr(view) and "IN\tMX\t10 mail.example.com." in repr(view)


def test_command_lines_for_the_lab_dns():
    class Svc:
        host, port = "127.0.10.53", 5353

    assert dnsview.dig(Svc(), "mx", "inbox.example.org") == ["dig", "@127.0.10.53", "-p", "5353", "mx",
                                                              "inbox.example.org"]
    assert dnsview.nslookup(("127.0.10.53", 5353), "mail._domainkey.example.com", "TXT") == [
        "nslookup", "-port=5353", "-type=TXT", "mail._domainkey.example.com", "127.0.10.53"]
    with pytest.raises(TypeError, match="lab.dns"):
        dnsview.dig(object(), "a", "x.example.com")


def test_queries_table():
    table = dnsview.queries_table([Query("udp", "127.0.0.1:4000", "inbox.example.org", "MX", "NOERROR")])
    assert table.rows == [{"#": 1, "asked over": "udp", "by": "127.0.0.1:4000", "name": "inbox.example.org",
                           "type": "MX", "answer": "NOERROR"}]


@pytest.fixture(scope="module")
def lab_dns():
    zones = lab_zones(default_world())
    inbox = find_zone(zones, "inbox.example.org")
    # a second exchanger that sorts first, and one with no address at all
    inbox.add("inbox.example.org", "MX", "5 first.inbox.example.org")
    inbox.add("first.inbox.example.org", "A", "127.0.40.26")
    inbox.add("inbox.example.org", "MX", "30 noaddress.inbox.example.org")
    inbox.add("noaddress.inbox.example.org", "TXT", "no A here")
    find_zone(zones, "example.com").add("nomail.example.com", "MX", "0 .")
    with serve(zones, "127.0.0.1") as server:
        yield make_resolver(server.host, server.port), server


def test_plan_tries_exchangers_by_preference(lab_dns):
    resolver, _ = lab_dns
    plan = dnsview.delivery_plan(resolver, "inbox.example.org")
    assert plan.outcome == "deliver"
    assert plan.targets == [(5, "first.inbox.example.org", "127.0.40.26"), (10, "mx.inbox.example.org", "127.0.40.25")]
    assert [s.question for s in plan.steps] == ["MX inbox.example.org?", "A first.inbox.example.org?",
                                                "A mx.inbox.example.org?", "A noaddress.inbox.example.org?",
                                                "(connect)"]
    assert plan.steps[3].answer == "NODATA" and "skip" in plan.steps[3].decision
    diagram = plan.to_mermaid().source
    assert diagram.index("first.inbox.example.org") < diagram.index("mx.inbox.example.org")
    assert "|1st|" in diagram and "|2nd|" in diagram
    assert "Mail for inbox.example.org: deliver" in repr(plan) and "<table" in plan._repr_html_()


@pytest.mark.parametrize("domain, outcome, reason, targets", [
    ("mail.example.com", "deliver", "", [(0, "mail.example.com", "127.0.20.25")]),   # implicit MX
    ("nowhere.example.com", "bounce", "NXDOMAIN", []),
    ("nomail.example.com", "bounce", "null MX", []),
    ("elsewhere.example.net", "defer", "REFUSED", []),   # not a lab zone: the server does not recurse
])
def test_plan_outcomes(lab_dns, domain, outcome, reason, targets):
    plan = dnsview.delivery_plan(lab_dns[0], domain)
    assert (plan.outcome, plan.reason, plan.targets) == (outcome, reason, targets)
    if not targets:
        assert outcome in plan.to_mermaid().source


def test_reverse_name(lab_dns):
    resolver, server = lab_dns
    assert dnsview.reverse_name(resolver, "127.0.40.25") == "mx.inbox.example.org"
    assert server.queries[-1].name == "25.40.0.127.in-addr.arpa" and server.queries[-1].type == "PTR"
    with pytest.raises(DNSLookupError, match="NXDOMAIN"):
        dnsview.reverse_name(resolver, "127.0.99.99")
