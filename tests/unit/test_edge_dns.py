"""The SMTP edge's client lookups (protocols.smtp.edge.client_info) through
the one resolver and a loopback DNS server: DNSBL names for IPv4 and IPv6
(RFC 5782), listings, forward-confirmed reverse DNS, and a DNS server that
does not answer (no listing, ``dns_failed``)."""

import socket

import pytest

from roost.protocols.dns import DNSError, Resolver
from roost.protocols.smtp.edge import client_info, dnsbl_name
from tests.dns_helpers import zone  # noqa: F401 - fixture

V6 = "2001:db8::1:2"
V6_REVERSED = "2.0.0.0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"


def test_dnsbl_names():
    assert dnsbl_name("192.0.2.99", "zen.example.") == "99.2.0.192.zen.example"
    assert dnsbl_name(V6, "bl.test") == V6_REVERSED + ".bl.test"


def test_listings_and_fcrdns(zone):  # noqa: F811
    dns = zone(f"""
99.2.0.192.bl.test. 60 IN A 127.0.0.2
{V6_REVERSED}.bl.test. 60 IN A 127.0.0.4
{V6_REVERSED}.other.test. 60 IN A 10.0.0.1
99.2.0.192.in-addr.arpa. 60 IN PTR forged.test.
99.2.0.192.in-addr.arpa. 60 IN PTR mx.real.test.
forged.test. 60 IN A 198.51.100.1
mx.real.test. 60 IN A 192.0.2.99
{V6_REVERSED}.ip6.arpa. 60 IN PTR v6.real.test.
v6.real.test. 60 IN AAAA {V6}
""")
    info = client_info(dns.resolver(), "192.0.2.99", ("bl.test", "other.test"))
    assert info.listed == ["bl.test"] and info.name == "mx.real.test" and not info.dns_failed
    info = client_info(dns.resolver(), V6, ("bl.test", "other.test"))   # 10.x is not a listing
    assert info.listed == ["bl.test"] and info.name == "v6.real.test"
    info = client_info(dns.resolver(), "::ffff:192.0.2.99", ())
    assert info.name == "mx.real.test"
    info = client_info(dns.resolver(), "198.51.100.7", ("bl.test",))
    assert info.listed == [] and info.name == "" and not info.dns_failed


def test_a_dead_dns_server_is_no_listing():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))       # bound, never answers
        resolver = Resolver([f"127.0.0.1:{s.getsockname()[1]}"], timeout=0.5)
        info = client_info(resolver, "192.0.2.99", ("bl.test",))
    assert info.listed == [] and info.name == "" and info.dns_failed


def test_answers_and_denials_are_cached_for_their_ttl(zone):  # noqa: F811
    dns = zone("""
kept.test. 300 IN TXT "v=DMARC1; p=none"
brief.test. 0 IN TXT "gone"
test. 300 IN SOA ns.test. admin.test. 1 3600 600 86400 300
""")
    resolver = dns.resolver()
    assert resolver.txt("kept.test") == ["v=DMARC1; p=none"]
    assert resolver.txt("brief.test") == ["gone"]
    assert resolver.txt("absent.test") == []
    dns.close()                      # from now on nothing answers
    assert resolver.txt("kept.test") == ["v=DMARC1; p=none"]
    assert resolver.txt("absent.test") == []
    with pytest.raises(DNSError):
        resolver.txt("brief.test")   # TTL 0: asked again, and nobody answers
