"""Test keys, DNS records and signed messages for the verdict tests
(tests/unit/test_mailauth.py, tests/protocol/test_arc_seal.py,
tests/protocol/test_lmtp_verdicts.py) and bench/inbound.py.

``Keys()`` makes an RSA (2048) and an Ed25519 key; ``dkim_txt`` gives their
DNS records; ``Silent()`` is a UDP socket on loopback that never answers
(a DNS server that times out). No pytest here: the benchmark uses it too."""

import base64
import socket

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from roost.protocols.mailauth.dkim import Signer

PEM = serialization.Encoding.PEM
PKCS8 = serialization.PrivateFormat.PKCS8
NOENC = serialization.NoEncryption()


class Keys:
    def __init__(self, bits=2048):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.rsa_pem = self.rsa.private_bytes(PEM, PKCS8, NOENC)
        self.ed_pem = self.ed.private_bytes(PEM, PKCS8, NOENC)

    def rsa_record(self):
        der = self.rsa.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()

    def ed_record(self):
        raw = self.ed.public_key().public_bytes(serialization.Encoding.Raw,
                                                serialization.PublicFormat.Raw)
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(raw).decode()

    def signer(self, domain, rsa_selector="r", ed_selector="e"):
        keys = []
        if rsa_selector:
            keys.append((rsa_selector, "rsa", self.rsa_pem))
        if ed_selector:
            keys.append((ed_selector, "ed25519", self.ed_pem))
        return Signer({domain: keys})


def txt(name, value):
    """A zone-file TXT line, split into strings of at most 255 octets."""
    strings = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
    return f"{name.rstrip('.')}. 60 IN TXT {strings}"


def message(from_addr="Ann <ann@example.org>", body=b"Hello Bob,\r\n\r\nsee you at ten.\r\n",
            extra=b""):
    return (extra + b"From: " + from_addr.encode() + b"\r\n"
            b"To: bob@example.net\r\nSubject: plans\r\n"
            b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <plans.1@example.org>\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body)


class Silent:
    """A loopback 'DNS server' that reads queries and never answers."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        self.sock.close()
