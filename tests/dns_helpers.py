"""A loopback DNS server (dnslib) for tests: ``zone(text)`` serves zone-file
lines on 127.0.0.1 at a free port; ``Zone.address`` is what ``[dns]
nameservers`` takes and ``Zone.resolver()`` a Roost resolver pointed at it."""

import pytest
from roost.protocols.dns import Resolver

dnslib = pytest.importorskip("dnslib", reason="dnslib is a test dependency (pip install -e '.[test]')")
from dnslib.server import DNSLogger, DNSServer  # noqa: E402
from dnslib.zoneresolver import ZoneResolver  # noqa: E402

class Zone:
    """A loopback DNS server for ``text`` (zone-file lines)."""

    def __init__(self, text):
        self.server = DNSServer(ZoneResolver(text), port=0, address="127.0.0.1",
                                logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data",
                                                 prefix=False))
        self.server.start_thread()
        self.address = f"127.0.0.1:{self.server.server.server_address[1]}"

    def resolver(self):
        return Resolver([self.address], timeout=3)

    def close(self):
        self.server.stop()
        self.server.server.server_close()


@pytest.fixture
def zone():
    zones = []

    def serve(text):
        zones.append(Zone(text))
        return zones[-1]
    yield serve
    for z in zones:
        z.close()
