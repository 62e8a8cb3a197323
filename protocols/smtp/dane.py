"""DANE for the outbound relay (RFC 7672, on RFC 6698/7671): TLSA records
for ``_25._tcp.MXHOST`` say which certificate an MX host must present.

``mx_policy(resolver, mx_host)`` (blocking: the worker pool) answers a
``DanePolicy``; ``decide(records, authenticated, host_secure)`` is the same
decision without DNS, and ``match(records, chain, mx_host)`` checks a peer's
certificate chain (DER, leaf first, as the server sent it) after the TLS
handshake. The states:

- ``none``: not DANE. No TLSA records, or a TLSA answer without the AD bit
  (not validated: ignored, section 2.2), or MX host addresses that are not
  DNSSEC-signed (the TLSA records of an insecure host are not looked up,
  section 2.2.2). The relay goes on with MTA-STS or opportunistic TLS.
- ``dane``: validated, usable TLSA records. TLS is required and ``match``
  must find a record; otherwise this MX is not used (defer; never fall back
  to cleartext). MTA-STS does not apply to this host (RFC 8461 section 2).
- ``encrypt``: validated TLSA records, none usable (section 3.1.3: PKIX-TA(0)
  and PKIX-EE(1) are unusable, as are unknown selectors, matching types and
  digests of the wrong length): TLS is required, without authentication.
- ``defer``: the lookup failed (timeout, SERVFAIL) for a host whose
  addresses are signed: this MX cannot be used now (section 2.2).

Matching (section 3.1): DANE-EE(3) is checked against the leaf alone, with
no name or date checks. DANE-TA(2) matches a CA certificate of the chain
(the server must send its trust anchor, section 3.1.2), then each
certificate from the leaf up to it must be directly issued (names and
signature) by the next one, all within their validity dates, and the leaf
must name the MX host (service_identity's RFC 6125 rules). Selectors 0 (the
whole certificate) and 1 (SubjectPublicKeyInfo); matching types 0 (exact),
1 (SHA-256), 2 (SHA-512). Not done: TLSA base domains through CNAMEs of the
MX host (section 2.2.3: the MX name is always the base).

AD is believed as ``protocols.dns`` explains: ``[dns] nameservers`` must be a
validating resolver on a trusted path for DANE to mean anything.
"""

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from roost.protocols.dns import DNSError

PKIX_TA, PKIX_EE, DANE_TA, DANE_EE = 0, 1, 2, 3
NONE, DANE, ENCRYPT, DEFER = "none", "dane", "encrypt", "defer"
DIGEST_SIZES = {0: None, 1: 32, 2: 64}


@dataclass(frozen=True)
class DanePolicy:
    state: str
    records: tuple = ()     # the usable TLSA records (state "dane")
    reason: str = ""

    @property
    def tls_required(self):
        return self.state in (DANE, ENCRYPT)


def usable(record):
    """Whether a TLSA record can be used for SMTP (RFC 7672 section 3.1.3)."""
    if record.usage not in (DANE_TA, DANE_EE) or record.selector not in (0, 1):
        return False
    if record.mtype not in DIGEST_SIZES or not record.data:
        return False
    size = DIGEST_SIZES[record.mtype]
    return size is None or len(record.data) == size


def decide(records, authenticated, host_secure=True):
    """``DanePolicy`` for one MX host from its TLSA answer."""
    if not host_secure:
        return DanePolicy(NONE, reason="the host's addresses are not DNSSEC-validated")
    if not records:
        return DanePolicy(NONE, reason="no TLSA records")
    if not authenticated:
        return DanePolicy(NONE, reason="TLSA records not DNSSEC-validated (no AD): ignored")
    good = tuple(r for r in records if usable(r))
    if not good:
        return DanePolicy(ENCRYPT, reason="TLSA records, none usable: TLS without authentication")
    return DanePolicy(DANE, good, reason=f"{len(good)} usable TLSA records")


def mx_policy(resolver, mx_host, port=25):
    """``DanePolicy`` for ``mx_host``: whether its addresses are signed, then
    its ``_PORT._tcp`` TLSA records (two or three DNS queries; blocking)."""
    try:
        found, secure = resolver.secure(mx_host, "A")
        if not found:
            found, secure = resolver.secure(mx_host, "AAAA")
    except DNSError as exc:
        return DanePolicy(DEFER, reason=f"address lookup failed: {exc}")
    if not secure:
        return decide((), False, host_secure=False)
    try:
        records, authenticated = resolver.tlsa(mx_host, port)
    except DNSError as exc:
        return DanePolicy(DEFER, reason=f"TLSA lookup failed: {exc}")
    return decide(records, authenticated)


def _selected(cert, selector):
    if selector == 0:
        return cert.public_bytes(serialization.Encoding.DER)
    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def _matches(record, cert):
    data = _selected(cert, record.selector)
    if record.mtype == 1:
        data = hashlib.sha256(data).digest()
    elif record.mtype == 2:
        data = hashlib.sha512(data).digest()
    return data == record.data


def match(records, chain, mx_host, now=None):
    """The first usable TLSA record that ``chain`` (DER certificates, leaf
    first) satisfies for ``mx_host``, else None."""
    try:
        certs = [x509.load_der_x509_certificate(bytes(c)) for c in chain]
    except ValueError:
        return None
    if not certs:
        return None
    now = now or datetime.datetime.now(datetime.timezone.utc)
    for record in records:
        if not usable(record):
            continue
        if record.usage == DANE_EE and _matches(record, certs[0]):
            return record
        if record.usage == DANE_TA:
            for depth in range(1, len(certs)):
                if _matches(record, certs[depth]) and _path_ok(certs[:depth + 1], mx_host, now):
                    return record
    return None


def _path_ok(path, mx_host, now):
    """Each certificate issued by the next, all in date, the leaf naming the host."""
    for cert, issuer in zip(path, path[1:]):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return False
    if any(not c.not_valid_before_utc <= now <= c.not_valid_after_utc for c in path[:-1]):
        return False
    return _names(path[0], mx_host)


def _names(cert, host):
    from service_identity import CertificateError, VerificationError
    from service_identity.cryptography import verify_certificate_hostname
    try:
        verify_certificate_hostname(cert, str(host).rstrip("."))
        return True
    except (VerificationError, CertificateError, ValueError):
        return False
