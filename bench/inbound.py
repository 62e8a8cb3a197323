"""Inbound benchmark, verification part: ``verify_bench()`` prints the
microseconds ``protocols.mailauth.inbound.Inbound.check`` takes per message
(SPF + DKIM + DMARC + ARC, DNS on a loopback dnslib server, no resolver
cache) for three kinds of message: unsigned, DKIM-signed with RSA-2048 and
Ed25519 (both verified), and the signed one with an ARC set on top.
The LMTP and Sieve parts of this benchmark are the sievedeliver part's; they
call ``verify_bench`` and print its figures with theirs.

``python3 -m bench.inbound`` runs just this part.
"""

import statistics
import time


def verify_bench(messages=200, quiet=False):
    """``{label: (mean_us, p50_us, p99_us, mean_us_without_dns)}``, printed
    unless ``quiet``."""
    from dnslib.server import DNSLogger, DNSServer
    from dnslib.zoneresolver import ZoneResolver

    from roost.protocols.dns import Resolver
    from roost.protocols.mailauth import arc, psl
    from roost.protocols.mailauth.inbound import Inbound
    from tests.mailauth_helpers import Keys, message, txt

    keys, fwd = Keys(), Keys()
    zone = "\n".join([
        txt("r._domainkey.example.org", keys.rsa_record()),
        txt("e._domainkey.example.org", keys.ed_record()),
        txt("roost._domainkey.example.net", fwd.rsa_record()),
        txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all"),
        txt("_dmarc.example.org", "v=DMARC1; p=reject"),
    ])
    server = DNSServer(ZoneResolver(zone), port=0, address="127.0.0.1",
                       logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data",
                                        prefix=False))
    server.start_thread()
    try:
        class Timed(Resolver):
            """Counts lookups and the time spent in them (dnslib answers in Python:
            its round trip dominates; the rest is Roost's and the libraries' CPU)."""
            lookups, spent = 0, 0.0

            def records(self, *args, **kwargs):
                start = time.perf_counter()
                try:
                    return super().records(*args, **kwargs)
                finally:
                    Timed.lookups += 1
                    Timed.spent += time.perf_counter() - start

        resolver = Timed([f"127.0.0.1:{server.server.server_address[1]}"], timeout=3)
        inbound = Inbound(resolver, "mx.example.net", psl=psl.default())
        body = b"".join(b"line %05d of a ten kilobyte body, some words to hash.....\r\n" % i
                        for i in range(170))
        plain = message(body=body)
        signed = keys.signer("example.org").sign(plain, "example.org") + plain
        first = inbound.check(signed, "192.0.2.1", "mail.example.org", "ann@example.org")
        stored = b"Delivered-To: bob@example.net\r\n" + first.auth_headers + first.data
        sealer = fwd.signer("example.net", "roost", None)
        arced = arc.seal(stored, sealer, "mx.example.net", "example.net") + stored
        out = {}
        for label, data in (("unsigned", plain), ("DKIM rsa+ed25519", signed),
                            ("DKIM + ARC i=1", arced)):
            times = []
            Timed.lookups, Timed.spent = 0, 0.0
            for _ in range(messages):
                start = time.perf_counter()
                checked = inbound.check(data, "192.0.2.1", "mail.example.org",
                                        "ann@example.org", remote_host="")
                times.append((time.perf_counter() - start) * 1e6)
            assert checked.verdicts["spf"] == "pass"
            times.sort()
            mean = statistics.fmean(times)
            dns_us = Timed.spent / messages * 1e6
            out[label] = (mean, times[len(times) // 2],
                          times[min(len(times) - 1, int(len(times) * 0.99))], mean - dns_us)
            if not quiet:
                _, p50, p99, cpu = out[label]
                print(f"verify {label:<18} {mean:7.0f} us/msg  p50 {p50:7.0f}  p99 {p99:7.0f}  "
                      f"without DNS {cpu:6.0f} us ({Timed.lookups / messages:.0f} lookups, "
                      f"{dns_us:.0f} us)  dkim={checked.verdicts['dkim']} "
                      f"arc={checked.verdicts['arc']}")
        return out
    finally:
        server.stop()
        server.server.server_close()


if __name__ == "__main__":
    verify_bench()
