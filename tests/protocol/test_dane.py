"""DANE for SMTP (protocols.smtp.dane): TLSA lookups with the DO and AD
flags through the one resolver against the loopback DNS server, and chain
matching with real certificates (a CA, an intermediate, leaves) from
tests/tls_helpers.py.

dnslib cannot sign a zone, so the "validating resolver" here is a dnslib
resolver that sets the AD bit on the answers for the names it is told are
signed, and refuses (SERVFAIL) the ones it is told are broken: what Roost
does with AD is tested, not DNSSEC validation (which Roost leaves to the
resolver it is configured with)."""

import datetime
import hashlib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from dnslib import EDNS0, QTYPE, RCODE
from dnslib.zoneresolver import ZoneResolver
from roost.protocols.dns import TLSA
from roost.protocols.smtp import dane
from tests.dns_helpers import zone  # noqa: F401 - fixture
from tests.tls_helpers import Issuer, write_cert

MX = "mx.example.org"


class SigningResolver(ZoneResolver):
    """A zone whose answers for ``signed`` names carry AD when the query
    asked for DNSSEC (DO), and whose ``broken`` names answer SERVFAIL."""

    def __init__(self, text, signed=(), broken=()):
        super().__init__(text)
        self.signed, self.broken, self.queries = set(signed), set(broken), []

    def resolve(self, request, handler):
        name = str(request.q.qname).rstrip(".")
        do = any(rr.rtype == QTYPE.OPT and rr.edns_do for rr in request.ar)
        self.queries.append((name, QTYPE[request.q.qtype], do, bool(request.header.ad)))
        if name in self.broken:
            reply = request.reply()
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        reply = super().resolve(request, handler)
        reply.header.ad = int(do and name in self.signed)   # dnslib copies the query's AD bit
        if do:
            reply.add_ar(EDNS0(flags="do", udp_len=1232))
        return reply


def served(zone_fixture, text, signed=(), broken=()):
    z = zone_fixture("")
    z.server.server.resolver = SigningResolver(text, signed, broken)
    return z, z.server.server.resolver


def der_chain(cert_path):
    with open(cert_path, "rb") as f:
        return [c.public_bytes(serialization.Encoding.DER)
                for c in x509.load_pem_x509_certificates(f.read())]


def tlsa_for(der, usage, selector, mtype):
    cert = x509.load_der_x509_certificate(der)
    data = der if selector == 0 else cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    data = {0: data, 1: hashlib.sha256(data).digest(), 2: hashlib.sha512(data).digest()}[mtype]
    return TLSA(usage, selector, mtype, data)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("dane")
    ca = Issuer("DANE Test Root")
    inter = Issuer("DANE Test Intermediate", parent=ca)
    good = der_chain(write_cert(d / "good", names=(MX,), issuer=inter, chain=(inter, ca))[0])
    expired = der_chain(write_cert(d / "old", names=(MX,), days=(-30, -1), issuer=inter,
                                   chain=(inter, ca))[0])
    other_name = der_chain(write_cert(d / "other", names=("other.example.net",), issuer=inter,
                                      chain=(inter, ca))[0])
    impostor = Issuer("DANE Test Intermediate", parent=Issuer("DANE Test Root"))  # same names
    forged = der_chain(write_cert(d / "forged", names=(MX,), issuer=impostor,
                                  chain=(impostor,))[0]) + [good[2]]   # the real root appended
    selfsigned = der_chain(write_cert(d / "self", names=("whatever.invalid",))[0])
    return {"good": good, "expired": expired, "other_name": other_name, "forged": forged,
            "self": selfsigned}


# --- the resolver -------------------------------------------------------------------

def tlsa_line(name, r):
    return f"{name}. 300 IN TLSA {r.usage} {r.selector} {r.mtype} {r.data.hex()}"


def test_tlsa_lookup_asks_for_dnssec_and_reports_ad(zone, pki):
    ee = tlsa_for(pki["good"][0], 3, 1, 1)
    ta = tlsa_for(pki["good"][2], 2, 0, 2)
    text = "\n".join([f"{MX}. 300 IN A 127.0.0.1", tlsa_line(f"_25._tcp.{MX}", ee),
                      tlsa_line(f"_25._tcp.{MX}", ta),
                      "plain.example.org. 300 IN A 127.0.0.2",
                      tlsa_line("_25._tcp.plain.example.org", ee)])
    z, res = served(zone, text, signed={MX, f"_25._tcp.{MX}", "nodata.example.org"})
    resolver = z.resolver()
    records, ad = resolver.tlsa(MX)
    assert ad is True and sorted(records, key=lambda r: r.usage) == [ta, ee]
    assert res.queries[-1] == (f"_25._tcp.{MX}", "TLSA", True, True)      # DO and AD asked
    records, ad = resolver.tlsa("plain.example.org")
    assert records == [ee] and ad is False
    assert resolver.tlsa("nothing.example.org") == ([], False)
    assert resolver.secure(MX, "A")[1] is True
    assert resolver.addresses(MX) == ["127.0.0.1"]
    assert res.queries[-2][2:] == (False, False)           # ordinary lookups: no DO


def test_mx_policy(zone, pki):
    ee = tlsa_for(pki["good"][0], 3, 1, 1)
    pkix = TLSA(1, 1, 1, bytes(32))
    text = "\n".join([
        f"{MX}. 300 IN A 127.0.0.1", tlsa_line(f"_25._tcp.{MX}", ee),
        "unsigned.example.org. 300 IN A 127.0.0.2", tlsa_line("_25._tcp.unsigned.example.org", ee),
        "adless.example.org. 300 IN A 127.0.0.3", tlsa_line("_25._tcp.adless.example.org", ee),
        "pkix.example.org. 300 IN A 127.0.0.4", tlsa_line("_25._tcp.pkix.example.org", pkix),
        "plain.example.org. 300 IN A 127.0.0.5",
        "v6.example.org. 300 IN AAAA ::1", tlsa_line("_25._tcp.v6.example.org", ee),
        "broken.example.org. 300 IN A 127.0.0.6",
    ])
    signed = {MX, f"_25._tcp.{MX}", "adless.example.org", "pkix.example.org",
              "_25._tcp.pkix.example.org", "plain.example.org", "_25._tcp.plain.example.org",
              "v6.example.org", "_25._tcp.v6.example.org", "broken.example.org"}
    z, _res = served(zone, text, signed=signed, broken={"_25._tcp.broken.example.org"})
    r = z.resolver()
    p = dane.mx_policy(r, MX)
    assert p.state == dane.DANE and p.tls_required and p.records == (ee,)
    assert dane.mx_policy(r, "unsigned.example.org").state == dane.NONE
    adless = dane.mx_policy(r, "adless.example.org")          # signed host, TLSA without AD
    assert adless.state == dane.NONE and not adless.tls_required
    assert dane.mx_policy(r, "pkix.example.org").state == dane.ENCRYPT
    assert dane.mx_policy(r, "plain.example.org").state == dane.NONE
    assert dane.mx_policy(r, "v6.example.org").state == dane.DANE
    broken = dane.mx_policy(r, "broken.example.org")
    assert broken.state == dane.DEFER and "TLSA lookup failed" in broken.reason


# --- matching ------------------------------------------------------------------------

@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("mtype", [0, 1, 2])
def test_dane_ee_matches_the_leaf_only(pki, selector, mtype):
    good = pki["good"]
    record = tlsa_for(good[0], 3, selector, mtype)
    assert dane.match([record], good, MX) == record
    assert dane.match([record], good[:1], "any.name.example") == record   # EE: no name check
    assert dane.match([record], pki["other_name"], MX) is None
    assert dane.match([tlsa_for(good[1], 3, selector, mtype)], good, MX) is None  # not the leaf


def test_dane_ee_ignores_dates_and_names(pki):
    old = pki["expired"]
    assert dane.match([tlsa_for(old[0], 3, 1, 1)], old, "mx.elsewhere.example") is not None
    me = pki["self"]
    assert dane.match([tlsa_for(me[0], 3, 0, 1)], me, MX) is not None


@pytest.mark.parametrize("selector", [0, 1])
@pytest.mark.parametrize("mtype", [0, 1, 2])
def test_dane_ta_root_and_intermediate(pki, selector, mtype):
    good = pki["good"]
    root = tlsa_for(good[2], 2, selector, mtype)
    inter = tlsa_for(good[1], 2, selector, mtype)
    assert dane.match([root], good, MX) == root
    assert dane.match([inter], good, MX) == inter
    assert dane.match([inter], good[:2], MX) == inter
    assert dane.match([root], good[:2], MX) is None        # the anchor must be in the chain


def test_dane_ta_checks_names_dates_and_signatures(pki):
    good = pki["good"]
    root = tlsa_for(good[2], 2, 1, 1)
    assert dane.match([root], good, "MX.Example.Org.") == root
    assert dane.match([root], good, "mx2.example.org") is None
    assert dane.match([root], pki["other_name"], MX) is None
    assert dane.match([root], pki["expired"], MX) is None
    assert dane.match([root], pki["forged"], MX) is None    # same names, other keys
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=400)
    assert dane.match([root], good, MX, now=later) is None


def test_unusable_records_never_match(pki):
    good = pki["good"]
    for usage in (0, 1):
        assert dane.match([tlsa_for(good[0], usage, 1, 1), tlsa_for(good[2], usage, 0, 1)],
                          good, MX) is None
    assert dane.match([TLSA(3, 1, 1, bytes(32))], good, MX) is None
    assert dane.match([tlsa_for(good[0], 3, 1, 1)], [b"not a certificate"], MX) is None
    assert dane.match([tlsa_for(good[0], 3, 1, 1)], [], MX) is None
    # one wrong record does not hide a right one
    ok = tlsa_for(good[0], 3, 1, 2)
    assert dane.match([TLSA(3, 1, 2, bytes(64)), ok], good, MX) == ok
