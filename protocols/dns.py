"""The one resolver (DESIGN.md section 2): every DNS lookup Roost makes goes
through ``Resolver``, so ``[dns] nameservers`` applies to all of them and
tests point it at a loopback server.

``nameservers`` entries are ``HOST`` or ``HOST:PORT`` (``[v6]:PORT``); none
means the system's (``/etc/resolv.conf``). Lookups are blocking (dnspython):
callers on the event loop run them on the worker pool. An absent name or
record type answers ``[]``; a server that cannot answer (timeout, SERVFAIL)
raises ``DNSError``, which is temporary: the record may well exist.
"""

import dns.exception
import dns.nameserver
import dns.resolver

TIMEOUT = 5.0


class DNSError(Exception):
    """The lookup could not be answered (temporary)."""


def parse_nameserver(value, default_port=53):
    """``"1.2.3.4"``, ``"1.2.3.4:5353"``, ``"[::1]:5353"`` -> ``(host, port)``."""
    value = str(value).strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":") or str(default_port)
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, str(default_port)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a server address is HOST or HOST:PORT, not {value!r}")
    return host, int(port)


class Resolver:
    def __init__(self, nameservers=(), timeout=TIMEOUT):
        servers = [parse_nameserver(n) for n in nameservers]
        self._resolver = dns.resolver.Resolver(configure=not servers)
        if servers:
            self._resolver.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
        self._resolver.lifetime = timeout
        self._resolver.timeout = min(timeout, 2.0)

    def _query(self, name, rdtype):
        try:
            return list(self._resolver.resolve(name, rdtype, search=False))
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers,
                dns.resolver.LifetimeTimeout) as exc:
            raise DNSError(f"{name} {rdtype}: {exc}") from None

    def txt(self, name):
        """Each TXT record of ``name`` as one string (its strings joined)."""
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self._query(name, "TXT")]

    def mx(self, name):
        """``[(preference, host)]`` sorted, hosts lower-case without the final dot."""
        return sorted((r.preference, r.exchange.to_text(omit_final_dot=True).lower())
                      for r in self._query(name, "MX"))

    def addresses(self, name):
        """The A and AAAA addresses of ``name``."""
        return [r.address for t in ("A", "AAAA") for r in self._query(name, t)]
