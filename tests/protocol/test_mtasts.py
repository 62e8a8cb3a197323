"""MTA-STS discovery and policy fetch (protocols.smtp.mtasts) against a real
HTTPS server on loopback (certificate from a test CA, which is the
``ca_file``) and the loopback DNS zone: enforce, testing and none policies,
refresh when the TXT id changes (and only then), the cache outliving the TXT
record, oversized, malformed, redirected, wrongly typed, slow and
wrongly-certified answers, and wildcard MX matching."""

import http.server
import socket
import ssl
import threading
import time

import pytest
from dnslib.zoneresolver import ZoneResolver
from roost.protocols.smtp import mtasts
from roost.protocols.smtp.mtasts import MTASTS, PolicyError, fetch_policy, mx_allowed
from tests.dns_helpers import zone  # noqa: F401 - fixture
from tests.tls_helpers import Issuer, write_cert

DOMAINS = ("enforce.example", "testing.example", "none.example", "big.example", "chunked.example",
           "bad.example", "redirect.example", "html.example", "missing.example", "slow.example",
           "changing.example", "wild.example")
ENFORCE = b"version: STSv1\r\nmode: enforce\r\nmx: mx1.enforce.example\r\nmx: *.backup.example\r\nmax_age: 86400\r\n"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        host = self.headers.get("Host", "").split(":")[0]
        self.server.requests.append((host, self.path))
        route = self.server.routes.get(host, (404, "text/plain", b"no\n"))
        if callable(route):
            return route(self)
        status, media, body = route
        self.send_response(status)
        if media:
            self.send_header("Content-Type", media)
        if status in (301, 302):
            self.send_header("Location", f"https://elsewhere.example{mtasts.PATH}")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def chunked_big(handler):
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    line = b"mx: a-host-name-that-is-long.example\r\n" * 100
    try:
        for _ in range(40):                      # 150 kB, no Content-Length
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
        handler.wfile.write(b"0\r\n\r\n")
    except OSError:
        pass                                     # the client stopped reading: expected


def slow(handler):
    handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
    try:
        for _ in range(60):                      # one byte every 0.1 s: never in time
            handler.wfile.write(b"X")
            handler.wfile.flush()
            time.sleep(0.1)
    except OSError:
        pass


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    """``(ca file, cert file, key file)``: a CA and a certificate naming every
    mta-sts.DOMAIN of the tests."""
    d = tmp_path_factory.mktemp("mtasts")
    issuer = Issuer("MTA-STS Test CA")
    cert, key = write_cert(d / "srv", names=tuple(f"mta-sts.{n}" for n in DOMAINS), issuer=issuer)
    (d / "ca.pem").write_bytes(issuer.pem())
    return str(d / "ca.pem"), cert, key


@pytest.fixture
def web(ca):
    ca_file, cert, key = ca
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.routes, server.requests = {}, []
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def dns_text(ids):
    """A zone: each domain's _mta-sts TXT with its id, mta-sts.DOMAIN on loopback.
    The TXT records have TTL 0 (the tests change them: a resolver keeps a
    record for its TTL)."""
    lines = [f"mta-sts.{d}. 60 IN A 127.0.0.1" for d in DOMAINS]
    lines += [f'_mta-sts.{d}. 0 IN TXT "v=STSv1; id={i}"' for d, i in ids.items()]
    return "\n".join(lines)


def make(zone_obj, web, ca, **kw):
    return MTASTS(zone_obj.resolver(), ca_file=ca[0], port=web.server_address[1],
                  timeout=kw.pop("timeout", 3), **kw)


def test_enforce_testing_and_none(zone, web, ca):
    web.routes.update({
        "mta-sts.enforce.example": (200, "text/plain; charset=utf-8", ENFORCE),
        "mta-sts.testing.example": (200, "text/plain", ENFORCE.replace(b"enforce\r", b"testing\r")),
        "mta-sts.none.example": (200, "text/plain", b"version: STSv1\nmode: none\nmax_age: 0\n"),
    })
    z = zone(dns_text({"enforce.example": "1", "testing.example": "a1", "none.example": "n"}))
    sts = make(z, web, ca)
    policy, required = sts.lookup("Enforce.Example.")
    assert required is True and policy.mode == "enforce" and policy.max_age == 86400
    assert policy.mx == ("mx1.enforce.example", "*.backup.example")
    assert mx_allowed(policy, "MX1.enforce.example.") and not mx_allowed(policy, "mx2.enforce.example")
    policy, required = sts.lookup("testing.example")
    assert (policy.mode, required) == ("testing", False)
    assert sts.lookup("none.example") == (None, False)
    assert sts.lookup("unlisted.example") == (None, False)      # no TXT record: no fetch
    assert {h for h, _p in web.requests} == {"mta-sts.enforce.example", "mta-sts.testing.example",
                                               "mta-sts.none.example"}
    assert all(p == "/.well-known/mta-sts.txt" for _h, p in web.requests)


def test_refresh_when_the_id_changes_and_only_then(zone, web, ca):
    web.routes["mta-sts.changing.example"] = (200, "text/plain", ENFORCE)
    z = zone(dns_text({"changing.example": "v1"}))
    now = [1000.0]
    sts = make(z, web, ca, clock=lambda: now[0])
    assert sts.lookup("changing.example")[1] is True
    web.routes["mta-sts.changing.example"] = (200, "text/plain", ENFORCE.replace(b"enforce\r", b"testing\r"))
    assert sts.lookup("changing.example")[0].mode == "enforce"        # same id: the cached policy
    assert len(web.requests) == 1
    z.server.server.resolver = ZoneResolver(dns_text({"changing.example": "v2"}))
    policy, required = sts.lookup("changing.example")
    assert (policy.mode, required) == ("testing", False) and len(web.requests) == 2
    # the TXT record disappears: the cached policy stays in force until max_age
    z.server.server.resolver = ZoneResolver(dns_text({}))
    assert sts.lookup("changing.example")[0].mode == "testing"
    now[0] += 86400
    assert sts.lookup("changing.example") == (None, False)             # expired, nothing in DNS
    assert len(web.requests) == 2


def test_expired_policy_is_fetched_again_with_the_same_id(zone, web, ca):
    web.routes["mta-sts.enforce.example"] = (200, "text/plain", ENFORCE.replace(b"86400", b"60"))
    z = zone(dns_text({"enforce.example": "1"}))
    now = [0.0]
    sts = make(z, web, ca, clock=lambda: now[0])
    sts.lookup("enforce.example")
    now[0] = 59
    sts.lookup("enforce.example")
    assert len(web.requests) == 1
    now[0] = 61
    assert sts.lookup("enforce.example")[1] is True and len(web.requests) == 2


@pytest.mark.parametrize("host,route,why", [
    ("big.example", (200, "text/plain", ENFORCE + b"x-pad: " + b"p" * 70000 + b"\r\n"), "65536"),
    ("chunked.example", chunked_big, "more than 65536"),
    ("bad.example", (200, "text/plain", b"version: STSv1\r\nmode: enforce\r\nmax_age: 86400\r\n"),
     "no mx"),
    ("bad.example", (200, "text/plain", b"version: STSv2\r\nmode: enforce\r\nmx: a.example\r\n"
                     b"max_age: 1\r\n"), "version"),
    ("bad.example", (200, "text/plain", b"<html>version: STSv1</html>\r\n"), "not a policy field"),
    ("redirect.example", (301, "text/plain", b""), "redirect"),
    ("html.example", (200, "text/html", ENFORCE), "text/plain"),
    ("missing.example", (404, "text/plain", b"not here\n"), "HTTP 404"),
])
def test_bad_answers_give_no_policy(zone, web, ca, host, route, why):
    web.routes[f"mta-sts.{host}"] = route
    z = zone(dns_text({host: "1"}))
    with pytest.raises(PolicyError, match=why):
        fetch_policy(host, z.resolver(), mtasts.tls_context(ca[0]), web.server_address[1], timeout=3)
    sts = make(z, web, ca)
    assert sts.lookup(host) == (None, False)
    if host == "redirect.example":
        assert all(h == "mta-sts.redirect.example" for h, _p in web.requests)   # not followed


def test_failed_fetch_keeps_the_cached_policy_and_waits_before_retrying(zone, web, ca):
    web.routes["mta-sts.enforce.example"] = (200, "text/plain", ENFORCE)
    z = zone(dns_text({"enforce.example": "1"}))
    now = [0.0]
    sts = make(z, web, ca, clock=lambda: now[0])
    assert sts.lookup("enforce.example")[1] is True
    web.routes["mta-sts.enforce.example"] = (500, "text/plain", b"oops\n")
    z.server.server.resolver = ZoneResolver(dns_text({"enforce.example": "2"}))
    assert sts.lookup("enforce.example")[1] is True                    # cached policy applies
    assert sts.lookup("enforce.example")[1] is True
    assert len(web.requests) == 2                                      # no retry within 5 min
    now[0] += mtasts.RETRY_AFTER + 1
    web.routes["mta-sts.enforce.example"] = (200, "text/plain", ENFORCE.replace(b"enforce\r", b"none\r"))
    assert sts.lookup("enforce.example") == (None, False) and len(web.requests) == 3


def test_slow_server_is_cut_at_the_deadline(zone, web, ca):
    web.routes["mta-sts.slow.example"] = slow
    z = zone(dns_text({"slow.example": "1"}))
    start = time.monotonic()
    with pytest.raises(PolicyError, match="in time"):
        fetch_policy("slow.example", z.resolver(), mtasts.tls_context(ca[0]), web.server_address[1],
                     timeout=1.0)
    assert time.monotonic() - start < 2.5


def test_silent_server_times_out(zone, ca):
    quiet = socket.socket()
    quiet.bind(("127.0.0.1", 0))
    quiet.listen()                       # accepts (backlog), never answers the handshake
    try:
        z = zone(dns_text({"slow.example": "1"}))
        start = time.monotonic()
        with pytest.raises(PolicyError):
            fetch_policy("slow.example", z.resolver(), mtasts.tls_context(ca[0]),
                         quiet.getsockname()[1], timeout=1.0)
        assert time.monotonic() - start < 2.5
    finally:
        quiet.close()


def test_certificate_must_chain_to_the_ca_and_name_the_policy_host(zone, web, ca, tmp_path):
    web.routes["mta-sts.enforce.example"] = (200, "text/plain", ENFORCE)
    z = zone(dns_text({"enforce.example": "1"}) + "\nmta-sts.other.example. 60 IN A 127.0.0.1")
    other_ca = tmp_path / "other-ca.pem"
    other_ca.write_bytes(Issuer("Another CA").pem())
    with pytest.raises(PolicyError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        fetch_policy("enforce.example", z.resolver(), mtasts.tls_context(str(other_ca)),
                     web.server_address[1], timeout=3)
    with pytest.raises(PolicyError, match="certificate"):          # not named in the certificate
        fetch_policy("other.example", z.resolver(), mtasts.tls_context(ca[0]),
                     web.server_address[1], timeout=3)
    # the address override skips the A lookup (tests only)
    policy = fetch_policy("enforce.example", None, mtasts.tls_context(ca[0]), web.server_address[1],
                          address="127.0.0.1", timeout=3)
    assert policy.mode == "enforce"


def test_no_address_for_the_policy_host(zone, web, ca):
    z = zone('_mta-sts.nohost.example. 60 IN TXT "v=STSv1; id=1"')
    with pytest.raises(PolicyError, match="no address"):
        fetch_policy("nohost.example", z.resolver(), mtasts.tls_context(ca[0]), 443, timeout=3)
    assert make(z, web, ca).lookup("nohost.example") == (None, False)


def test_two_txt_records_mean_no_policy(zone, web, ca):
    web.routes["mta-sts.enforce.example"] = (200, "text/plain", ENFORCE)
    z = zone(dns_text({"enforce.example": "1"}) + '\n_mta-sts.enforce.example. 60 IN TXT "v=STSv1; id=2"')
    assert make(z, web, ca).lookup("enforce.example") == (None, False)
    assert web.requests == []


def test_wildcard_mx_matching(zone, web, ca):
    web.routes["mta-sts.wild.example"] = (200, "text/plain",
                                           b"version: STSv1\nmode: enforce\nmx: *.wild.example\n"
                                           b"mx: exact.example.net\nmax_age: 600\n")
    z = zone(dns_text({"wild.example": "w1"}))
    policy, required = make(z, web, ca).lookup("wild.example")
    assert required
    assert mx_allowed(policy, "mx.wild.example") and mx_allowed(policy, "MX.Wild.Example.")
    assert not mx_allowed(policy, "wild.example")
    assert not mx_allowed(policy, "a.b.wild.example")
    assert not mx_allowed(policy, "mxwild.example")
    assert mx_allowed(policy, "exact.example.net") and not mx_allowed(policy, "x.exact.example.net")
