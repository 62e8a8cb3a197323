"""Client set-up over the HTTP listener (protocols.web): Thunderbird
autoconfig, Outlook autodiscover and the Apple profile describe the
listeners of a real ``roost serve``; and TLS certificates reloaded on SIGHUP
(server.tls), with the chain after the leaf sent to clients."""

import os
import plistlib
import signal
import socket
import ssl
import time
import xml.etree.ElementTree as ET

import httpx
import pytest

from tests.conftest import RoostServer
from tests.tls_helpers import Issuer, write_cert

HOST = "mail.example.org"
OUTLOOK = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
AD_NS = {"r": "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006",
         "o": OUTLOOK}


def config(tmp_path, cert=None, key=None):
    path = tmp_path / "roost.toml"
    text = f'[server]\nhostname = "{HOST}"\n'
    if cert:
        text += f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("setup")
    srv = RoostServer(tmp / "data", listeners=("imap", "imaps", "jmap"), config=config(tmp)).start()
    yield srv
    srv.stop()


@pytest.fixture
def http(server):
    with httpx.Client(base_url=f"http://127.0.0.1:{server.ports['jmap']}", timeout=20) as c:
        yield c


def servers_of(doc):
    return [(s.get("type"), s.findtext("hostname"), int(s.findtext("port")), s.findtext("socketType"))
            for s in doc.iter("incomingServer")]


def test_thunderbird_autoconfig(server, http):
    for path in ("/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"):
        r = http.get(path, params={"emailaddress": "ann@example.org"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
        doc = ET.fromstring(r.content)
        provider = doc.find("emailProvider")
        assert provider.get("id") == "example.org" and provider.findtext("domain") == "example.org"
        assert servers_of(doc) == [("imap", HOST, server.ports["imaps"], "SSL"),
                                   ("imap", HOST, server.ports["imap"], "STARTTLS"),
                                   ("jmap", HOST, server.ports["jmap"], "plain")]
        (jmap,) = [s for s in doc.iter("incomingServer") if s.get("type") == "jmap"]
        assert jmap.findtext("url") == f"http://{HOST}:{server.ports['jmap']}/.well-known/jmap"
        assert {s.findtext("username") for s in doc.iter("incomingServer")} == {"%EMAILADDRESS%"}
        assert doc.find(".//outgoingServer") is None      # no submission listener here
    no_address = ET.fromstring(http.get("/mail/config-v1.1.xml").content)
    assert no_address.find("emailProvider").get("id") == HOST
    assert http.get("/mail/config-v1.1.xml", params={"emailaddress": "<b>@x"}).status_code == 400


def autodiscover(http, email, schema=OUTLOOK, path="/autodiscover/autodiscover.xml"):
    body = ('<?xml version="1.0" encoding="utf-8"?><Autodiscover xmlns="http://schemas.microsoft.com/'
            'exchange/autodiscover/outlook/requestschema/2006"><Request>'
            f'<EMailAddress>{email}</EMailAddress><AcceptableResponseSchema>{schema}'
            '</AcceptableResponseSchema></Request></Autodiscover>')
    return http.post(path, content=body.encode(), headers={"Content-Type": "text/xml"})


def test_outlook_autodiscover(server, http):
    for path in ("/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"):
        r = autodiscover(http, "ann@example.org", path=path)
        assert r.status_code == 200, r.text
        doc = ET.fromstring(r.content)
        account = doc.find("o:Response/o:Account", AD_NS)
        assert account.findtext("o:AccountType", namespaces=AD_NS) == "email"
        protocols = [(p.findtext("o:Type", namespaces=AD_NS), p.findtext("o:Server", namespaces=AD_NS),
                      int(p.findtext("o:Port", namespaces=AD_NS)), p.findtext("o:SSL", namespaces=AD_NS),
                      p.findtext("o:Encryption", namespaces=AD_NS),
                      p.findtext("o:LoginName", namespaces=AD_NS))
                     for p in account.findall("o:Protocol", AD_NS)]
        assert protocols == [("IMAP", HOST, server.ports["imaps"], "on", "SSL", "ann@example.org"),
                             ("IMAP", HOST, server.ports["imap"], "off", "TLS", "ann@example.org")]


def error_code(r):
    return ET.fromstring(r.content).findtext("r:Response/r:Error/r:ErrorCode", namespaces=AD_NS)


def test_autodiscover_bad_requests(http):
    assert error_code(autodiscover(http, "not an address")) == "600"
    r = autodiscover(http, "ann@example.org", schema="http://schemas.microsoft.com/exchange/"
                     "autodiscover/mobilesync/responseschema/2006")
    assert (r.status_code, error_code(r)) == (400, "601")
    for body in (b"<unclosed", b"", b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>',
                 b"<Autodiscover>" + b" " * 20000 + b"</Autodiscover>"):
        r = http.post("/autodiscover/autodiscover.xml", content=body)
        assert (r.status_code, error_code(r)) == (400, "600"), body[:40]
    assert http.get("/autodiscover/autodiscover.xml").status_code == 400
    # no login needed, so the body is bounded (and nothing else takes one without credentials)
    assert http.post("/autodiscover/autodiscover.xml", content=b" " * 100_000).status_code == 413
    assert http.post("/jmap/api", content=b"{}").status_code == 401


def test_apple_profile(server, http):
    email = "o'neil&co@example.org"        # XML specials are escaped, not markup
    r = http.get("/apple/roost.mobileconfig", params={"email": email})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-apple-aspen-config"
    assert "roost.mobileconfig" in r.headers["content-disposition"]
    profile = plistlib.loads(r.content)
    assert profile["PayloadType"] == "Configuration" and profile["PayloadVersion"] == 1
    (mail,) = profile["PayloadContent"]
    assert mail["PayloadType"] == "com.apple.mail.managed"
    assert (mail["EmailAddress"], mail["IncomingMailServerUsername"]) == (email, email)
    assert (mail["IncomingMailServerHostName"], mail["IncomingMailServerPortNumber"],
            mail["IncomingMailServerUseSSL"]) == (HOST, server.ports["imaps"], True)
    assert mail["EmailAccountType"] == "EmailTypeIMAP"
    assert "OutgoingMailServerHostName" not in mail
    assert profile["PayloadIdentifier"].startswith("org.example.mail.")
    again = plistlib.loads(http.get("/apple/roost.mobileconfig", params={"email": email}).content)
    assert again["PayloadUUID"] == profile["PayloadUUID"]     # installing again replaces it
    for bad in ("", "nobody", "a@b@c", "x" * 300 + "@example.org", "a\n@example.org"):
        assert http.get("/apple/roost.mobileconfig", params={"email": bad}).status_code == 400


# --- TLS reload -----------------------------------------------------------------------

def peer_cert(port, verify_with=None):
    """The DER certificate a new TLS connection to ``port`` is shown."""
    ctx = ssl.create_default_context(cafile=verify_with) if verify_with else \
        ssl._create_unverified_context()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOST) as tls:
        return tls.getpeercert(binary_form=True)


def starttls_cert(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        f = raw.makefile("rb")
        f.readline()
        raw.sendall(b"a STARTTLS\r\n")
        assert f.readline().startswith(b"a OK")
        with ssl._create_unverified_context().wrap_socket(raw, server_hostname=HOST) as tls:
            return tls.getpeercert(binary_form=True)


def der(path):
    """The first certificate of a PEM file, DER-encoded."""
    with open(path) as f:
        first = f.read().split("-----END CERTIFICATE-----")[0]
    return ssl.PEM_cert_to_DER_cert(first + "-----END CERTIFICATE-----\n")


def wait_line(server, prefix, timeout=30):
    """The next line of the server's output starting with ``prefix`` that
    this test has not seen yet (``RoostServer`` collects the output in a
    thread after "ready"), so a missing line fails instead of hanging."""
    seen_before = getattr(server, "lines_seen", 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = server.output[seen_before:]
        for i, line in enumerate(lines):
            if line.startswith(prefix):
                server.lines_seen = seen_before + i + 1
                return line
        if server.proc.poll() is not None:
            raise AssertionError(f"roost serve ended: {lines}")
        time.sleep(0.05)
    raise AssertionError(f"no line {prefix!r} in {timeout} s: {server.output[seen_before:]}")


def replace_pair(tmp_path, name, cert_path, key_path, **kw):
    new_cert, new_key = write_cert(tmp_path / name, **kw)
    os.replace(new_key, key_path)
    os.replace(new_cert, cert_path)
    return cert_path


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_reloads_the_certificate(tmp_path, workers):
    cert, key = write_cert(tmp_path / "live", names=(HOST,))
    first = der(cert)
    srv = RoostServer(tmp_path / "data", listeners=("imap", "imaps"),
                      config=config(tmp_path, cert, key), workers=workers).start()
    held = None
    try:
        assert peer_cert(srv.ports["imaps"]) == first
        held = ssl._create_unverified_context().wrap_socket(
            socket.create_connection(("127.0.0.1", srv.ports["imaps"]), timeout=10))
        held.recv(4096)

        replace_pair(tmp_path, "second", cert, key, names=(HOST,))
        second = der(cert)
        assert peer_cert(srv.ports["imaps"]) == first          # nothing changes before SIGHUP
        srv.proc.send_signal(signal.SIGHUP)
        for _ in range(workers):     # the supervisor passes it to every worker
            assert HOST in wait_line(srv, "roost: TLS certificate reloaded")
        assert peer_cert(srv.ports["imaps"]) == second
        assert starttls_cert(srv.ports["imap"]) == second
        held.sendall(b"a NOOP\r\n")                              # an open connection keeps going
        assert b"a OK" in held.recv(4096)
        held.close()

        with open(cert, "w") as f:
            f.write("not a certificate\n")
        srv.proc.send_signal(signal.SIGHUP)
        for _ in range(workers):
            assert "keeping the previous one" in wait_line(srv, "roost: TLS certificate not reloaded")
        assert peer_cert(srv.ports["imaps"]) == second
    finally:
        if held is not None:
            held.close()
        srv.stop()


def test_intermediate_certificates_are_sent(tmp_path):
    root = Issuer("Roost Test Root")
    intermediate = Issuer("Roost Test Intermediate", parent=root)
    cert, key = write_cert(tmp_path / "chain", issuer=intermediate, chain=[intermediate])
    (tmp_path / "root.pem").write_bytes(root.pem())
    srv = RoostServer(tmp_path / "data", listeners=("imaps",), config=config(tmp_path, cert, key)).start()
    try:
        # verifies only if the server sends the intermediate after its own certificate
        assert peer_cert(srv.ports["imaps"], verify_with=str(tmp_path / "root.pem")) == der(cert)
    finally:
        srv.stop()
