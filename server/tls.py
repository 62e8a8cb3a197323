"""TLS for the listeners: the configured certificate, or a self-signed one.

Owns the quickstart certificate: when ``[tls] cert``/``key`` are not set, a
self-signed certificate for the configured hostname is generated once into
``DATA/keys/`` and reused. ``context_factory`` returns one ``ReloadableTLS``
that every TLS listener and STARTTLS shares: Twisted asks it for a context
per connection, so ``reload()`` (``roost serve`` on SIGHUP) puts renewed
certificate files in force for every new connection while open ones keep
theirs. A reload that cannot read a valid pair raises and keeps the old one.
The asyncio listeners (aiosmtpd submission) need an ``ssl.SSLContext``
instead: ``ssl_context()`` is one that stays the same object for the life of
the server, and hands each handshake to the context built by the latest
reload (from its SNI callback, called for every ClientHello).
"""

import datetime
import ipaddress
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer


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
    return ReloadableTLS(config)


@implementer(IOpenSSLContextFactory)
class ReloadableTLS:
    """An old-style Twisted context factory (``getContext``) over the
    certificate files, read again by ``reload()``."""

    def __init__(self, config):
        self.config = config
        self.certificate = None
        self._ssl = self._front = None
        self.reload()

    def reload(self):
        """Read the certificate chain (leaf first) and key again; returns the
        leaf (``cryptography.x509.Certificate``). Raises, keeping the current
        one, when the files are unreadable or do not match."""
        from OpenSSL import crypto
        from twisted.internet import ssl
        config = self.config
        cert_path, key_path = (config.tls_cert, config.tls_key) \
            if config.tls_cert else ensure_certificate(config.data, config.hostname)
        with open(cert_path, "rb") as f:
            cert_pem = f.read()
        with open(key_path, "rb") as f:
            key_pem = f.read()
        chain = x509.load_pem_x509_certificates(cert_pem)
        key = serialization.load_pem_private_key(key_pem, None)
        options = ssl.CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(key),
            certificate=crypto.X509.from_cryptography(chain[0]),
            # the intermediates after the leaf are sent too: clients need them
            extraCertChain=[crypto.X509.from_cryptography(c) for c in chain[1:]])
        options.getContext()          # fails here, not on the next connection, if they mismatch
        current = _ssl_context(cert_path, key_path)
        self._options, self.certificate, self._ssl = options, chain[0], current
        return chain[0]

    def getContext(self):
        return self._options.getContext()

    def ssl_context(self):
        """The ``ssl.SSLContext`` for asyncio servers; follows ``reload()``."""
        if self._front is None:
            self._front = self._ssl
            self._front.sni_callback = self._pick
        return self._front

    def _pick(self, sslobj, _server_name, _context):
        if sslobj.context is not self._ssl:
            sslobj.context = self._ssl


def _ssl_context(cert_path, key_path):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
