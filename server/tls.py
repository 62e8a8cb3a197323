"""TLS for the listeners: the configured certificate, or a self-signed one.

Owns the quickstart certificate: when ``[tls] cert``/``key`` are not set, a
self-signed certificate for the configured hostname is generated once into
``DATA/keys/`` and reused. Returns Twisted context factories for STARTTLS and
implicit-TLS listeners.
"""

import datetime
import ipaddress
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def ensure_certificate(data_dir, hostname):
    """Paths (cert, key) of the quickstart certificate, generated when missing."""
    keys = os.path.join(data_dir, "keys")
    cert_path = os.path.join(keys, "tls-cert.pem")
    key_path = os.path.join(keys, "tls-key.pem")
    if os.path.exists(cert_path) and os.path.exists(key_path):
        return cert_path, key_path
    os.makedirs(keys, mode=0o700, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def context_factory(config):
    """A Twisted server TLS context factory for the configured (or generated) certificate."""
    from twisted.internet import ssl
    cert_path, key_path = (config.tls_cert, config.tls_key) if config.tls_cert else \
        ensure_certificate(config.data, config.hostname)
    with open(cert_path, "rb") as f:
        cert_pem = f.read()
    with open(key_path, "rb") as f:
        key_pem = f.read()
    cert = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
    return cert.options()
