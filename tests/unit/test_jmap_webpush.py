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
        assert push.post(url, b'{"a":1}')
        key, public, auth, keys = subscriber()
        assert push.post(url, b'{"b":2}', keys)
        assert not push.post("http://127.0.0.1:1/closed", b"{}", timeout=2)
    finally:
        srv.shutdown()
        srv.server_close()
    assert got[0][1] == b'{"a":1}' and got[0][0]["Content-Type"] == "application/json"
    assert got[1][0]["Content-Encoding"] == "aes128gcm" and got[1][0]["TTL"]
    assert decrypt(got[1][1], key, public, auth) == b'{"b":2}'
