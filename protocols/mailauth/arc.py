"""ARC sealing (RFC 8617) of mail Roost forwards (Sieve redirect): one ARC
set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results) with the
DKIM key of the forwarding domain, so the next receiver can trust the
verdicts Roost saw even though forwarding may break SPF and DKIM.

``seal(message, signer, authserv_id, domain)`` returns the three header
fields to prepend (b"" when ``domain`` has no RSA key: ``Signer.rsa_key``),
made by dkimpy's ``arc_sign``. The ARC-Authentication-Results are taken
from the message's ``Authentication-Results`` field with our authserv-id,
the one delivery prepended (``inbound``), and the chain validation cv= from
its ``arc=`` result; a message without such a field (verdicts skipped: the
MTA in front made its own) gets a field saying ``arc=none`` added first, so
the seal claims nothing it did not check. A chain that was already broken
(``arc=fail``) is sealed with cv=fail, as section 5.1.2 asks; one that
dkimpy finds terminated (cv=none on a message that has sets) is not sealed.

``seal_domain(message, mail_from, signer, fallback)``: the domain that
forwards, the first with a key of: the topmost ``Delivered-To:`` address
(the local recipient whose script redirected), the envelope sender, and
``fallback`` (the server's hostname).

``Sealer(signer, authserv_id, fallback)`` is both, as the one callable
``sealer(message, mail_from) -> bytes`` the relay takes (the server makes
it): the relay calls it for outbound rows of kind "redirect", before DKIM
signing, on its worker pool (RSA signing is CPU work).
"""

import logging
import re

import dkim

from .dkim import normal_domain

log = logging.getLogger("roost.mailauth")


def _linesep(message):
    head = message.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    return b"\r\n" if b"\r\n" in head or b"\n" not in head else b"\n"


def _has_ours(message, authserv_id):
    from .inbound import authserv_id as id_of, fields, split_header
    header, _ = split_header(message)
    return any(name == b"authentication-results" and id_of(raw) == authserv_id.lower()
               for name, raw in fields(header))


def seal(message, signer, authserv_id, domain):
    """The ARC set to prepend to ``message`` (bytes), or b""."""
    message = bytes(message)
    found = signer.rsa_key(domain) if signer is not None and domain else None
    if found is None:
        return b""
    keyed, selector, key = found
    eol = _linesep(message)
    added = b""
    if not _has_ours(message, authserv_id):
        added = b"Authentication-Results: " + authserv_id.encode() + b"; arc=none" + eol
    try:
        headers = dkim.arc_sign(added + message, selector, keyed.encode("ascii"), key,
                                authserv_id.encode(), linesep=eol)
    except Exception as exc:  # noqa: BLE001 - DKIMException, ParameterError, authres errors
        log.warning("ARC: not sealed: %s", exc)
        return b""
    return b"".join(headers)


_DELIVERED_TO = re.compile(rb"(?im)^delivered-to:[ \t]*<?([^\s<>]+@[^\s<>]+)>?")


def seal_domain(message, mail_from, signer, fallback=""):
    head = bytes(message).split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    m = _DELIVERED_TO.search(head)
    candidates = [m.group(1).decode("utf-8", "replace").rpartition("@")[2] if m else "",
                  (mail_from or "").strip("<>").rpartition("@")[2], fallback]
    for candidate in candidates:
        name = normal_domain(candidate)
        if name and signer.rsa_key(name) is not None:
            return name
    return None


class Sealer:
    def __init__(self, signer, authserv_id, fallback=""):
        self.signer, self.authserv_id, self.fallback = signer, authserv_id, fallback

    def __call__(self, message, mail_from):
        domain = seal_domain(message, mail_from, self.signer, self.fallback)
        return seal(message, self.signer, self.authserv_id, domain) if domain else b""
