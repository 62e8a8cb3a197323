"""The one resolver (DESIGN.md section 2): every DNS lookup Roost makes goes
through ``Resolver``, so ``[dns] nameservers`` applies to all of them and
tests point it at a loopback server.

``nameservers`` entries are ``HOST`` or ``HOST:PORT`` (``[v6]:PORT``); none
means the system's (``/etc/resolv.conf``). Lookups are blocking (dnspython):
callers on the event loop run them on the worker pool. An absent name or
record type answers ``[]``; a server that cannot answer (timeout, SERVFAIL)
raises ``DNSError``, which is temporary: the record may well exist.
Answers and denials are cached per name and type for their TTL (a denial:
its SOA minimum, RFC 2308, or 5 minutes without one; never over an hour) in a
bounded LRU cache: the mail checks of every inbound message ask about the
same few domains, and a resolver that drops a query now and then costs a
2-second retry each time it is asked. A denial is kept for its type only (some
servers deny a name for a type it lacks). Failures are not cached.

``secure(name, rdtype)`` (DANE, RFC 7672) asks with the EDNS DO and the AD
flags set and reports whether the answer came back with AD (authenticated
data). Roost does not validate DNSSEC itself: AD is believed only because
``[dns] nameservers`` is a validating resolver on a trusted path (loopback,
like unbound or systemd-resolved with DNSSEC on); with another resolver,
DANE is as strong as that path.
"""

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

TIMEOUT = 5.0
CACHE_SIZE = 4096           # (name, type) entries; least recently used go first
MAX_TTL = 3600
NEGATIVE_TTL = 300          # a denial without an SOA


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


@dataclass(frozen=True)
class TLSA:
    """One TLSA record (RFC 6698): usage, selector, matching type, data."""
    usage: int
    selector: int
    mtype: int
    data: bytes


def _make_resolver(servers, timeout):
    res = dns.resolver.Resolver(configure=not servers)
    if servers:
        res.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in servers]
    res.lifetime = timeout
    res.timeout = min(timeout, 2.0)
    return res


def _negative_ttl(response):
    """RFC 2308 section 5: the SOA's minimum (capped by its TTL) in a denial."""
    soas = [min(rrset.ttl, rd.minimum) for rrset in response.authority
            if rrset.rdtype == dns.rdatatype.SOA for rd in rrset]
    return min(soas) if soas else NEGATIVE_TTL


class Resolver:
    def __init__(self, nameservers=(), timeout=TIMEOUT):
        servers = [parse_nameserver(n) for n in nameservers]
        self._resolver = _make_resolver(servers, timeout)
        self._dnssec = _make_resolver(servers, timeout)
        self._dnssec.use_edns(0, dns.flags.DO, 1232)
        self._dnssec.flags = dns.flags.RD | dns.flags.AD
        self._cache, self._lock = OrderedDict(), threading.Lock()

    def _query(self, name, rdtype, timeout=None):
        key = (str(name).lower().rstrip("."), dns.rdatatype.RdataType.make(rdtype))
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                self._cache.move_to_end(key)
                return list(hit[1])
        try:
            answer = self._resolver.resolve(name, rdtype, search=False, lifetime=timeout,
                                            raise_on_no_answer=False)
            records = list(answer) if answer.rrset is not None else []
            ttl = answer.chaining_result.minimum_ttl
        except dns.resolver.NXDOMAIN as exc:
            records, ttl = [], min([_negative_ttl(r) for r in exc.responses().values()]
                                   or [NEGATIVE_TTL])
        except (dns.exception.Timeout, dns.resolver.NoNameservers,
                dns.resolver.LifetimeTimeout) as exc:
            raise DNSError(f"{name} {rdtype}: {exc}") from None
        if ttl > 0:
            with self._lock:
                self._cache[key] = (now + min(ttl, MAX_TTL), tuple(records))
                self._cache.move_to_end(key)
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return records

    def records(self, name, rdtype, timeout=None):
        """The dnspython rdata of ``name``'s ``rdtype`` records (CNAMEs
        followed); ``timeout`` (seconds) bounds this one lookup, for callers
        with a budget (``protocols.mailauth``: SPF, DKIM, DMARC, ARC). A
        name that cannot be a DNS name (empty label, over 255 octets) has
        no records."""
        try:
            return self._query(name, rdtype, timeout)
        except (dns.exception.DNSException, UnicodeError):   # not Timeout: _query took those
            return []

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

    def secure(self, name, rdtype):
        """``(records, authenticated)``: the answer to a query with the DO and
        AD flags set, and whether the resolver set AD on it. An absent name or
        type is ``([], AD of the denial)``; DNSError as for every lookup."""
        try:
            answer = self._dnssec.resolve(name, rdtype, search=False)
            return list(answer), bool(answer.response.flags & dns.flags.AD)
        except dns.resolver.NoAnswer as exc:
            response = exc.kwargs.get("response")
            return [], bool(response is not None and response.flags & dns.flags.AD)
        except dns.resolver.NXDOMAIN as exc:
            responses = list(exc.responses().values())
            return [], bool(responses and responses[-1].flags & dns.flags.AD)
        except (dns.exception.Timeout, dns.resolver.NoNameservers,
                dns.resolver.LifetimeTimeout) as exc:
            raise DNSError(f"{name} {rdtype}: {exc}") from None

    def tlsa(self, host, port=25):
        """``([TLSA], authenticated)`` for ``_PORT._tcp.HOST`` (RFC 7672 section 2.2)."""
        records, ad = self.secure(f"_{port}._tcp.{host.rstrip('.')}.", "TLSA")
        return [TLSA(r.usage, r.selector, r.mtype, bytes(r.cert)) for r in records], ad

    def ptr(self, address):
        """The PTR names of an IPv4 or IPv6 address (lower case, no final dot)."""
        name = dns.reversename.from_address(address).to_text()
        return [r.target.to_text(omit_final_dot=True).lower() for r in self._query(name, "PTR")]

    def a(self, name):
        """The A addresses of ``name`` (DNSBL lookups answer 127.0.0.x)."""
        return [r.address for r in self._query(name, "A")]
