"""DKIM signing of outgoing mail (RFC 6376, RFC 8463 Ed25519, RFC 8301 key sizes).

``Signer(keys)`` takes ``{domain: [(selector, algorithm, private_key_pem)]}``
with ``algorithm`` ``"rsa"`` or ``"ed25519"`` and the key as PKCS#8 PEM bytes
(RSA also PKCS#1), which is what ``roost dkim keygen`` writes. The server
reads the key files (``server.doctor.dkim_signing_keys``); this module opens
no file. Keys are checked when the Signer is made (type matches the
algorithm, RSA at least 1024 bits), so a bad key stops start-up, not a send.

``signer.domain_for(message, mail_from)`` picks the signing domain: the
From: domain when Roost has a key for it or for a parent of it (a parent
key still aligns under DMARC's relaxed rule), else the envelope sender's
domain likewise, else None (no signature). ``signer.sign(message, domain)``
returns the DKIM-Signature header fields to prepend to ``message`` (b"" for
None or a domain without keys): one RSA-SHA256 and one Ed25519-SHA256
signature when the domain has both kinds of key (RFC 8463 section 6: an
Ed25519-only signer is invisible to most verifiers today). The first key of
each algorithm in the domain's list signs; the server's loader lists
selectors in name order, so a key rotation removes the old key file.

Each signature is relaxed/relaxed, carries ``t=`` (dkimpy adds it) and
signs the header fields of ``SIGNED`` that the message has, each as often
as it occurs, with From listed once more than it occurs (oversigned) so
that no From can be added without breaking the signature. The fields a
mailing list adds (List-*) are signed only when the message already has
them. The header lines end as the message's do (CRLF, or LF for an
LF-only message). A message dkimpy cannot parse raises ``SigningError``.

Signing is CPU work and ``sign`` is a plain function: the relay runs it on
its worker pool, never on the event loop. Measured on this machine (2 cores,
idle) with a 10 kB message, ``python -m roost.protocols.mailauth.dkim``,
best of 5 runs of 200:

    RSA-SHA256 2048-bit  ~6300 us per signature
    Ed25519-SHA256        ~600 us per signature (PyNaCl; mostly dkimpy's
                               canonicalization and hashing in Python)
    both                 ~6700 us per message

dkimpy computes RSA with Python integers (``pow`` with CRT): about 5600 us
of the 6300, where OpenSSL (``cryptography``) takes about 270 us for the
same private-key operation; each ``pow`` holds the GIL for ~2.8 ms, so
threads signing in parallel do not scale and briefly delay the loop. That
is about 150 messages a second per process; beyond that the RSA step is the
part to move to OpenSSL (or to a process pool).
"""

import base64
import email.utils

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

ALGORITHMS = {"rsa": b"rsa-sha256", "ed25519": b"ed25519-sha256"}
MIN_RSA_BITS = 1024   # RFC 8301 section 3.2
SIGNED = (
    "from", "sender", "reply-to", "to", "cc", "subject", "date", "message-id",
    "in-reply-to", "references", "mime-version", "content-type",
    "content-transfer-encoding", "content-language", "list-id", "list-help",
    "list-unsubscribe", "list-unsubscribe-post", "list-subscribe", "list-post",
    "list-owner", "list-archive", "autocrypt", "openpgp",
)


class SigningError(ValueError):
    """The message (or a key) cannot be signed; the text says why."""


def _load_key(domain, selector, algorithm, pem):
    """The private key as dkimpy takes it, after checking it."""
    if algorithm not in ALGORITHMS:
        raise SigningError(f"{selector}._domainkey.{domain}: algorithm is rsa or ed25519, "
                           f"not {algorithm!r}")
    try:
        key = serialization.load_pem_private_key(bytes(pem), None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{selector}._domainkey.{domain}: not a PEM private key ({exc})") from None
    if algorithm == "rsa":
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SigningError(f"{selector}._domainkey.{domain}: not an RSA key")
        if key.key_size < MIN_RSA_BITS:
            raise SigningError(f"{selector}._domainkey.{domain}: RSA key of {key.key_size} bits "
                               f"(at least {MIN_RSA_BITS}, RFC 8301)")
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningError(f"{selector}._domainkey.{domain}: not an Ed25519 key")
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    return base64.b64encode(seed)    # dkimpy's (PyNaCl's) form of an Ed25519 key


def normal_domain(domain):
    """Lower case, no final dot, A-labels; None when it is not a domain."""
    domain = str(domain or "").strip().rstrip(".").lower()
    if not domain or any(c in domain for c in " \t\r\n@[]"):
        return None
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None


class Signer:
    def __init__(self, keys):
        self._keys = {}
        for domain, entries in keys.items():
            name, chosen = normal_domain(domain), {}
            if name is None:
                raise SigningError(f"not a domain: {domain!r}")
            for selector, algorithm, pem in entries:
                if algorithm in chosen:
                    continue           # the first key of each algorithm signs
                chosen[algorithm] = (str(selector).encode("ascii"),
                                     _load_key(name, selector, algorithm, pem))
            order = [a for a in ("rsa", "ed25519") if a in chosen]
            if order:
                self._keys[name] = [(a, *chosen[a]) for a in order]

    def domains(self):
        return sorted(self._keys)

    def _keyed(self, domain):
        """``domain`` or its nearest parent that has keys, else None."""
        labels = (normal_domain(domain) or "").split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            if candidate in self._keys:
                return candidate
        return None

    def rsa_key(self, domain):
        """``(domain, selector, private_key_pem)`` of the RSA key of ``domain``
        or its nearest parent with keys, or None (ARC seals are RSA only:
        RFC 8617 section 4.1 allows what DKIM does, but verifiers in use,
        Mail::DKIM among them, know only rsa-sha256)."""
        keyed = self._keyed(domain)
        for algorithm, selector, key in self._keys.get(keyed, []) if keyed else []:
            if algorithm == "rsa":
                return keyed, selector, key
        return None

    def domain_for(self, message, mail_from):
        """The signing domain for ``message`` sent with envelope sender
        ``mail_from`` (an address, or "" for the null sender), or None."""
        from_domains = {_domain_of(a) for a in _from_addresses(message)}
        if len(from_domains) == 1:
            found = self._keyed(from_domains.pop())
            if found:
                return found
        return self._keyed(_domain_of(mail_from)) if mail_from else None

    def sign(self, message, domain):
        """The DKIM-Signature header lines to prepend to ``message`` (bytes)."""
        keys = self._keys.get(normal_domain(domain) or "") if domain else None
        if not keys:
            return b""
        message = bytes(message)
        head = message.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
        linesep = b"\r\n" if b"\r\n" in head or b"\n" not in head else b"\n"
        try:
            headers, _body = dkim.rfc822_parse(message)
        except (dkim.DKIMException, IndexError) as exc:
            raise SigningError(f"cannot parse the message's header: {exc}") from None
        names = [n.decode("ascii").lower() for n, _v in headers]
        include = [n for n in names if n in SIGNED]
        include.append("from")                       # oversigned
        out = []
        for algorithm, selector, key in keys:
            try:
                out.append(dkim.sign(message, selector, normal_domain(domain).encode("ascii"), key,
                                     canonicalize=(b"relaxed", b"relaxed"),
                                     include_headers=[n.encode("ascii") for n in include],
                                     signature_algorithm=ALGORITHMS[algorithm], linesep=linesep))
            except dkim.DKIMException as exc:
                raise SigningError(f"cannot sign: {exc}") from None
        return b"".join(out)


def _from_addresses(message):
    try:
        headers, _body = dkim.rfc822_parse(bytes(message))
    except (dkim.DKIMException, IndexError):
        return []
    values = [v.decode("utf-8", "replace") for n, v in headers if n.lower() == b"from"]
    return [a for _name, a in email.utils.getaddresses(values) if "@" in a]


def _domain_of(address):
    return normal_domain(str(address).strip().strip("<>").rpartition("@")[2])


def _benchmark(runs=200):
    """Microseconds per signature for RSA 2048, Ed25519 and both on a 10 kB message."""
    import time
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    ed_pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    body = b"".join(b"line %05d of a ten kilobyte body, some words to hash.....\r\n" % i
                    for i in range(170))
    message = (b"From: Ann <ann@example.org>\r\nTo: bob@example.net\r\nSubject: hello\r\n"
               b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n"
               b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n" + body)
    for label, keys in (("RSA-SHA256 2048", [("r", "rsa", rsa_pem)]),
                        ("Ed25519-SHA256", [("e", "ed25519", ed_pem)]),
                        ("both", [("r", "rsa", rsa_pem), ("e", "ed25519", ed_pem)])):
        signer = Signer({"example.org": keys})
        best = min(_timed(signer, message, runs, time.perf_counter) for _ in range(5))
        print(f"{label:<16} {best * 1e6:8.0f} us per message ({len(message)} bytes)")


def _timed(signer, message, runs, clock):
    start = clock()
    for _ in range(runs):
        signer.sign(message, "example.org")
    return (clock() - start) / runs


if __name__ == "__main__":
    _benchmark()
