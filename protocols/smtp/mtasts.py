"""MTA-STS for the outbound relay (RFC 8461): may this recipient domain's
mail go to an MX only over TLS with a valid certificate, and to which MX hosts.

``MTASTS(resolver, ca_file)`` is one per relay process;
``sts.lookup(domain)`` answers ``(policy, tls_required)``:

- ``(None, False)``: no policy applies (no TXT record and nothing cached, a
  policy that cannot be fetched and nothing cached, or ``mode: none``);
- ``(policy, False)``: ``mode: testing``: deliver as usual, and report
  failures of ``mx_allowed`` or of certificate checks (TLS-RPT);
- ``(policy, True)``: ``mode: enforce``: use only MX hosts for which
  ``mx_allowed(policy, host)`` holds, only with STARTTLS and a certificate
  that chains to a trusted CA and names that MX host; otherwise defer (a
  temporary failure: RFC 8461 section 5 says never bounce before checking
  for a new policy, which the next ``lookup`` does).

Every ``lookup`` asks DNS for ``_mta-sts.DOMAIN`` (through the one
``protocols.dns.Resolver``) and fetches the policy only when there is no
cached policy for that TXT id or it is older than its ``max_age``; so a
changed id refreshes at the next message. A TXT record that vanishes, a DNS
failure or a failed fetch leave a cached, unexpired policy in force
(section 3.3; that is the protection against an attacker who strips the
record). After a failed fetch the same (domain, id) is not fetched again for
``RETRY_AFTER`` seconds. The cache lives in memory (at most ``MAX_ENTRIES``
domains), so a restart starts it empty; it is not refreshed ahead of expiry
(section 3.3 suggests daily refresh: not done, an entry is refreshed when a
message needs it after ``max_age``).

``fetch_policy`` is blocking (DNS, TCP, TLS, HTTP): the relay runs
``lookup`` on its worker pool, like its other DNS lookups. The fetch is
``GET https://mta-sts.DOMAIN/.well-known/mta-sts.txt``, HTTP/1.1 with
``Connection: close``: the address from the resolver's A/AAAA records, a
certificate verified for ``mta-sts.DOMAIN`` against ``[relay] ca_file`` (or
the system's CAs), status 200 only (a redirect is refused, never followed),
media type text/plain, at most ``MAX_POLICY`` (64 KiB) of body, and the
whole fetch (connect, handshake, headers, body) within ``timeout`` seconds:
a timer shuts the socket down at the deadline, so a server dripping bytes
cannot hold the relay's thread. ``port`` and ``address`` (skip the A/AAAA
lookup and connect to that address) exist for tests on loopback only.

``parse_policy`` is strict, after section 3.2's ABNF: LF or CRLF lines of
``name: value``, field names case-sensitive, ``version: STSv1``, ``mode``
one of enforce/testing/none, ``max_age`` 1-10 digits and at most 31557600,
``mx`` a host name (two or more LDH labels, A-labels for IDNs) with an
optional leading ``*.``, at least one unless mode is none; unknown fields are ignored; of a repeated field other than mx the
first counts. Empty lines are refused except at the end. Anything else makes
the policy invalid (``PolicyError``), which counts as a failed fetch.
"""

import http.client
import logging
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from roost.protocols.dns import DNSError

MAX_POLICY = 64 * 1024
FETCH_TIMEOUT = 30.0
MAX_AGE_LIMIT = 31557600
RETRY_AFTER = 300
MAX_ENTRIES = 10000
MAX_ADDRESSES = 4
MODES = ("enforce", "testing", "none")
PATH = "/.well-known/mta-sts.txt"

log = logging.getLogger("roost.relay")

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL})+")
_FIELD = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31}):[ \t]*(.*?)[ \t]*")
_TXT_EXT = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]{0,31})=([\x21-\x3a\x3c\x3e-\x7e]+)")


class PolicyError(ValueError):
    """No valid policy could be had; the text says why."""


@dataclass(frozen=True)
class Policy:
    mode: str
    mx: tuple
    max_age: int


def txt_id(records):
    """The ``id`` of the one valid ``v=STSv1`` record among ``records``
    (TXT strings), else None (section 3.1)."""
    found = [r for r in records if re.match(r"v=STSv1[ \t]*(;|$)", r)]
    if len(found) != 1:
        return None
    fields = [f.strip(" \t") for f in found[0].split(";")][1:]
    if fields and fields[-1] == "":
        fields.pop()                                   # the optional final ";"
    ident = None
    for field in fields:
        m = _TXT_EXT.fullmatch(field)
        if not m:
            return None
        if m.group(1) == "id" and ident is None:
            ident = m.group(2)
    return ident if ident and re.fullmatch(r"[A-Za-z0-9]{1,32}", ident) else None


def parse_policy(body):
    """``Policy`` from the bytes of a policy file; PolicyError when invalid."""
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("the policy is not UTF-8") from None
    lines = text.split("\n")
    while lines and lines[-1] in ("", "\r"):
        lines.pop()
    fields = {}
    mx = []
    for number, line in enumerate(lines, 1):
        line = line[:-1] if line.endswith("\r") else line
        m = _FIELD.fullmatch(line)
        if not m or any(ord(c) < 0x20 and c != "\t" or ord(c) == 0x7f for c in m.group(2)):
            raise PolicyError(f"line {number} is not a policy field: {line[:80]!r}")
        name, value = m.groups()
        if name == "mx":
            mx.append(_mx_pattern(value, number))
        else:
            fields.setdefault(name, value)
    if fields.get("version") != "STSv1":
        raise PolicyError(f"version is {fields.get('version')!r}, not STSv1")
    mode = fields.get("mode")
    if mode not in MODES:
        raise PolicyError(f"mode is {mode!r}, not enforce, testing or none")
    age = fields.get("max_age", "")
    if not re.fullmatch(r"[0-9]{1,10}", age) or int(age) > MAX_AGE_LIMIT:
        raise PolicyError(f"max_age is {age!r}, not 0 to {MAX_AGE_LIMIT} seconds")
    if not mx and mode != "none":
        raise PolicyError("no mx field")
    return Policy(mode, tuple(mx), int(age))


def _mx_pattern(value, number):
    pattern = value.lower()
    name = pattern[2:] if pattern.startswith("*.") else pattern
    if len(name) > 253 or not _DOMAIN.fullmatch(name):
        raise PolicyError(f"line {number}: mx {value[:80]!r} is not a host name or *.domain")
    return pattern


def mx_allowed(policy, mx_host):
    """Whether ``mx_host`` matches one of the policy's mx patterns (section
    4.1: ``*.example.com`` matches ``mail.example.com`` only, not
    ``example.com`` nor ``a.b.example.com``)."""
    host = str(mx_host).lower().rstrip(".")
    for pattern in policy.mx:
        if pattern.startswith("*."):
            label, _, rest = host.partition(".")
            if label and rest == pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def tls_context(ca_file=""):
    """The client context for policy fetches: ``ca_file``'s CAs, else the system's."""
    ctx = ssl.create_default_context(cafile=ca_file or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def fetch_policy(domain, resolver=None, context=None, port=443, address=None,
                 timeout=FETCH_TIMEOUT):
    """``Policy`` fetched from ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt``
    (blocking); PolicyError when none can be had."""
    host = f"mta-sts.{domain}"
    context = context or tls_context()
    deadline = time.monotonic() + timeout
    if address:
        addresses = [address]
    else:
        try:
            addresses = resolver.addresses(host)
        except DNSError as exc:
            raise PolicyError(f"{host}: {exc}") from None
    if not addresses:
        raise PolicyError(f"{host} has no address")
    problems = []
    for addr in addresses[:MAX_ADDRESSES]:
        if time.monotonic() >= deadline:
            break
        try:
            return parse_policy(_get(host, addr, port, context, deadline))
        except (OSError, http.client.HTTPException) as exc:
            problems.append(f"{addr}: {str(exc) or type(exc).__name__}")
    raise PolicyError(f"{host}: " + ("; ".join(problems) or f"no answer within {timeout:g} s"))


def _get(host, addr, port, context, deadline):
    """The body of a 200 text/plain answer, at most MAX_POLICY bytes."""
    held, expired = [], threading.Event()

    def abort():
        expired.set()
        for sock in held:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass
    timer = threading.Timer(max(0.0, deadline - time.monotonic()), abort)
    timer.daemon = True
    timer.start()
    sock = tls = response = None
    try:
        sock = socket.create_connection((addr, port), timeout=max(0.01, deadline - time.monotonic()))
        held.append(sock)
        tls = context.wrap_socket(sock, server_hostname=host)
        held.append(tls)
        authority = host if port == 443 else f"{host}:{port}"
        tls.sendall(f"GET {PATH} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: Roost\r\n"
                    "Accept: text/plain\r\nConnection: close\r\n\r\n".encode("ascii"))
        response = http.client.HTTPResponse(tls, method="GET")
        response.begin()
        if expired.is_set():            # headers cut short by the deadline
            raise PolicyError("the server did not answer in time")
        if 300 <= response.status < 400:
            raise PolicyError(f"HTTP {response.status} redirect to "
                              f"{response.getheader('Location', '?')[:100]!r} refused "
                              "(RFC 8461 section 3.3)")
        if response.status != 200:
            raise PolicyError(f"HTTP {response.status} {response.reason[:60]}")
        media = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if media != "text/plain":
            raise PolicyError(f"media type {media or 'missing'!r}, not text/plain")
        length = response.getheader("Content-Length")
        if length and length.strip().isdigit() and int(length) > MAX_POLICY:
            raise PolicyError(f"the policy is {int(length)} bytes, more than {MAX_POLICY}")
        body = b""
        while len(body) <= MAX_POLICY:
            chunk = response.read(min(16384, MAX_POLICY + 1 - len(body)))
            if not chunk:
                break
            body += chunk
        if len(body) > MAX_POLICY:
            raise PolicyError(f"the policy is more than {MAX_POLICY} bytes")
        if expired.is_set():
            raise PolicyError("the server did not answer in time")
        return body
    except OSError:
        if expired.is_set():
            raise PolicyError("the server did not answer in time") from None
        raise
    finally:
        timer.cancel()
        for thing in (response, tls, sock):
            if thing is not None:
                thing.close()


@dataclass
class _Entry:
    ident: str
    policy: Policy
    expires: float


class MTASTS:
    """The relay's MTA-STS state: the resolver, the CAs and the policy cache."""

    def __init__(self, resolver, ca_file="", port=443, address=None, timeout=FETCH_TIMEOUT,
                 clock=time.monotonic):
        self.resolver = resolver
        self.context = tls_context(ca_file)
        self.port, self.address, self.timeout, self.clock = port, address, timeout, clock
        self._cache = {}       # domain -> _Entry
        self._failed = {}      # (domain, id) -> time before which it is not fetched again
        self._lock = threading.Lock()

    def lookup(self, domain):
        """``(policy or None, tls_required)`` for mail to ``domain`` (blocking)."""
        domain = str(domain).lower().rstrip(".")
        policy = self._policy(domain)
        if policy is None or policy.mode == "none":
            return None, False
        return policy, policy.mode == "enforce"

    def _policy(self, domain):
        now = self.clock()
        with self._lock:
            entry = self._cache.get(domain)
            if entry and entry.expires <= now:
                del self._cache[domain]
                entry = None
        cached = entry.policy if entry else None
        try:
            ident = txt_id(self.resolver.txt(f"_mta-sts.{domain}"))
        except DNSError as exc:
            log.info("mta-sts txt lookup failed", extra={"event": "mta_sts", "domain": domain,
                                                         "outcome": "dns_error", "reason": str(exc)})
            return cached
        if ident is None or (entry and entry.ident == ident):
            return cached
        with self._lock:
            if self._failed.get((domain, ident), 0) > now:
                return cached
        try:
            policy = fetch_policy(domain, self.resolver, self.context, self.port, self.address,
                                  self.timeout)
        except PolicyError as exc:
            log.warning("mta-sts policy fetch failed", extra={
                "event": "mta_sts", "domain": domain, "outcome": "fetch_failed",
                "reason": str(exc), "cached": cached.mode if cached else "none"})
            with self._lock:
                if len(self._failed) >= MAX_ENTRIES:
                    self._failed = {k: t for k, t in self._failed.items() if t > now}
                if len(self._failed) < MAX_ENTRIES:
                    self._failed[(domain, ident)] = now + RETRY_AFTER
            return cached
        with self._lock:
            if domain not in self._cache and len(self._cache) >= MAX_ENTRIES:
                self._evict(now)
            self._cache[domain] = _Entry(ident, policy, now + policy.max_age)
            self._failed.pop((domain, ident), None)
        return policy

    def _evict(self, now):
        """Drop expired entries, else the oldest inserted (called with the lock held)."""
        for domain in [d for d, e in self._cache.items() if e.expires <= now]:
            del self._cache[domain]
        if len(self._cache) >= MAX_ENTRIES:
            del self._cache[next(iter(self._cache))]
