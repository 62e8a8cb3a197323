"""The DANE decision (RFC 7672 sections 2.2 and 3.1.3) without DNS: which
TLSA records are usable, and what an answer with or without AD means."""

import pytest
from roost.protocols.dns import TLSA
from roost.protocols.smtp.dane import DANE, ENCRYPT, NONE, decide, usable

EE = TLSA(3, 1, 1, bytes(32))
TA = TLSA(2, 0, 2, bytes(64))


@pytest.mark.parametrize("record,ok", [
    (EE, True), (TA, True), (TLSA(3, 0, 0, b"\x30\x03\x02\x01\x00"), True),
    (TLSA(0, 1, 1, bytes(32)), False),           # PKIX-TA: unusable for SMTP
    (TLSA(1, 1, 1, bytes(32)), False),           # PKIX-EE: unusable for SMTP
    (TLSA(4, 1, 1, bytes(32)), False),
    (TLSA(3, 2, 1, bytes(32)), False),           # unknown selector
    (TLSA(3, 1, 3, bytes(32)), False),           # unknown matching type
    (TLSA(3, 1, 1, bytes(31)), False),           # SHA-256 of the wrong length
    (TLSA(3, 1, 2, bytes(32)), False),           # SHA-512 of the wrong length
    (TLSA(3, 1, 0, b""), False),
])
def test_usable(record, ok):
    assert usable(record) is ok


def test_decisions():
    assert decide([], True).state == NONE
    assert decide([], False).state == NONE
    insecure = decide([EE], False)                 # answered without AD: ignored
    assert insecure.state == NONE and not insecure.tls_required and "AD" in insecure.reason
    p = decide([EE, TLSA(1, 1, 1, bytes(32)), TA], True)
    assert p.state == DANE and p.tls_required and p.records == (EE, TA)
    only_pkix = decide([TLSA(0, 0, 1, bytes(32)), TLSA(1, 1, 1, bytes(32))], True)
    assert only_pkix.state == ENCRYPT and only_pkix.tls_required and only_pkix.records == ()
    assert decide([EE], True, host_secure=False).state == NONE     # insecure host: not looked at
