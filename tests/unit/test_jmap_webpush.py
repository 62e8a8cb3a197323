"""Web push messages for JMAP PushSubscriptions: RFC 8291 encryption decrypts
with the subscriber's key, and ``post`` delivers to a push service."""

import base64
import http.server
import json
import threading

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from roost.protocols.jmap import push


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def subscriber():
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    auth = b"0123456789abcdef"
    return key, public, auth, {"p256dh": b64(public), "auth": b64(auth)}


def decrypt(body, key, public, auth):
    """What a browser does with an aes128gcm push message (RFC 8188, RFC 8291)."""
    salt, rs, idlen = body[:16], int.from_bytes(body[16:20], "big"), body[20]
    as_public = body[21:21 + idlen]
    assert rs == 4096 and idlen == 65
    secret = key.exchange(ec.ECDH(), ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), as_public))
    ikm = HKDF(hashes.SHA256(), 32, auth, b"WebPush: info\x00" + public + as_public).derive(secret)
    cek = HKDF(hashes.SHA256(), 16, salt, b"Content-Encoding: aes128gcm\x00").derive(ikm)
    nonce = HKDF(hashes.SHA256(), 12, salt, b"Content-Encoding: nonce\x00").derive(ikm)
    plain = AESGCM(cek).decrypt(nonce, body[21 + idlen:], None)
    assert plain.endswith(b"\x02")
    return plain[:-1]


def test_encrypted_push_message_decrypts_with_the_subscribers_key():
    key, public, auth, keys = subscriber()
    payload = json.dumps({"@type": "StateChange", "changed": {"A1": {"Email": "7"}}}).encode()
    body = push.encrypt(payload, keys)
    assert decrypt(body, key, public, auth) == payload
    assert push.encrypt(payload, keys) != body      # a fresh key and salt every time


def test_bad_keys_are_refused():
    for keys in ({}, {"p256dh": "!!", "auth": "x"}, {"p256dh": b64(b"\x04" + b"\x00" * 64),
                                                      "auth": "AAAA"}):
        try:
            push.encrypt(b"x", keys)
        except ValueError:
            continue
        raise AssertionError(f"{keys} accepted")


def test_post_delivers_plain_and_encrypted_messages():
    got = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((self.headers, body))
            self.send_response(201)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/push"
        assert push.post(url, b'{"a":1}', allow_private=True)
        key, public, auth, keys = subscriber()
        assert push.post(url, b'{"b":2}', keys, allow_private=True)
        assert not push.post("http://127.0.0.1:1/closed", b"{}", timeout=2, allow_private=True)
    finally:
        srv.shutdown()
        srv.server_close()
    assert got[0][1] == b'{"a":1}' and got[0][0]["Content-Type"] == "application/json"
    assert got[1][0]["Content-Encoding"] == "aes128gcm" and got[1][0]["TTL"]
    assert decrypt(got[1][1], key, public, auth) == b'{"b":2}'


class Receiver:
    """A push service on loopback that records what it is sent."""

    def __init__(self):
        got = self.got = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                got.append((self.headers, self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.srv = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.srv.server_address[1]
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def test_refused_addresses():
    import ipaddress
    for a in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.0.1", "169.254.169.254", "0.0.0.0",
              "224.0.0.1", "255.255.255.255", "100.64.0.1", "192.0.2.1", "::1", "::", "fe80::1",
              "fc00::1", "ff02::1", "ff0e::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
              "2002:7f00:1::1", "64:ff9b::a00:1"):
        assert push.refused_address(ipaddress.ip_address(a)), a
    for a in ("8.8.8.8", "93.184.216.34", "2001:4860:4860::8888", "::ffff:8.8.8.8"):
        assert not push.refused_address(ipaddress.ip_address(a)), a


def test_post_refuses_loopback_unless_allowed():
    rx = Receiver()
    try:
        for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]"):
            assert not push.post(f"http://{host}:{rx.port}/p", b"{}"), host
        assert rx.got == []
        assert push.post(f"http://127.0.0.1:{rx.port}/p", b"{}", allow_private=True)
        assert len(rx.got) == 1
    finally:
        rx.close()


def test_post_checks_the_address_when_it_sends_and_connects_to_that_one(monkeypatch):
    """DNS rebinding: the name that resolved to a public address when the
    subscription was made now resolves to loopback; and the connection goes
    to the address that was checked, never to a second lookup's answer."""
    import ipaddress
    rx = Receiver()
    answers = []

    def resolve_many(hosts, port=443, timeout=5):
        answers.append(hosts)
        return {h: [ipaddress.ip_address("127.0.0.1")] for h in hosts}
    monkeypatch.setattr(push, "resolve_many", resolve_many)
    try:
        url = f"http://push.example:{rx.port}/p?x=1"
        assert not push.post(url, b"{}")
        assert rx.got == []
        assert push.post(url, b'{"n":1}', allow_private=True)
        (headers, body), = rx.got
        assert headers["Host"] == f"push.example:{rx.port}" and body == b'{"n":1}'
        assert answers == [["push.example"], ["push.example"]]     # one lookup per push
    finally:
        rx.close()


def test_resolve_many_looks_up_at_once_within_one_timeout():
    import time
    t = time.perf_counter()
    got = push.resolve_many(["localhost", "127.0.0.1", "[::1]", "push.invalid.example"])
    assert time.perf_counter() - t < push.RESOLVE_SECONDS + 1
    assert str(got["127.0.0.1"][0]) == "127.0.0.1" and str(got["[::1]"][0]) == "::1"
    assert got["localhost"] and got["push.invalid.example"] == []
