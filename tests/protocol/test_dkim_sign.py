"""DKIM signing (protocols.mailauth.dkim) checked by two verifiers: dkimpy's
and Debian's Mail::DKIM (libmail-dkim-perl, a separate implementation), both
looking the keys up in a loopback DNS zone made of ``roost dns``'s records
for keys made by ``roost dkim keygen`` and read by the server's loader.

Debian 12's Mail::DKIM (1.20230212) has no Ed25519 algorithm module: it
reports an Ed25519 signature as invalid ("unsupported algorithm") and passes
the message on its RSA signature, which is exactly why Roost signs with both
(RFC 8463 section 6). Ed25519 signatures are verified with dkimpy only."""

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import dkim
import pytest
from roost.protocols.mailauth.dkim import Signer, SigningError
from roost.server import config as configmod
from roost.server import doctor as dr
from tests.dns_helpers import zone  # noqa: F401 - fixture

DOMAIN = "example.org"
MESSAGE = (b"Received: from client by mail.example.org\r\n"
           b"From: Ann <ann@example.org>\r\n"
           b"To: Bob <bob@example.net>\r\n"
           b"Cc: carol@example.net\r\n"
           b"Subject: =?utf-8?q?caf=C3=A9?= plans\r\n"
           b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
           b"Message-ID: <plans.1@example.org>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"List-Unsubscribe: <mailto:unsub@example.org>\r\n"
           b"X-Mailer: something\r\n"
           b"\r\n"
           b"Shall we meet at the caf\xc3\xa9   at ten?  \r\n"
           b"\r\n"
           b"-- \r\nAnn\r\n\r\n\r\n")

VERIFY_PL = r"""
use strict;
use warnings;
use Mail::DKIM::Verifier;
use Net::DNS::Resolver;
my ($host, $port) = @ARGV;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(nameservers => [$host], port => $port,
    udp_timeout => 3, tcp_timeout => 3, retry => 1));
my $dkim = Mail::DKIM::Verifier->new();
binmode STDIN;
while (<STDIN>) { s/\015?\012/\015\012/; $dkim->PRINT($_); }
$dkim->CLOSE;
for my $sig ($dkim->signatures) {
    printf "%s %s %s (%s)\n", $sig->algorithm, $sig->selector, $sig->result,
        $sig->result_detail // "";
}
printf "overall %s\n", $dkim->result;
"""


def have_mail_dkim():
    return shutil.which("perl") and subprocess.run(
        ["perl", "-MMail::DKIM::Verifier", "-MNet::DNS::Resolver", "-e", "1"],
        capture_output=True).returncode == 0


needs_perl = pytest.mark.skipif(not have_mail_dkim(),
                                reason="Mail::DKIM missing (apt-get install libmail-dkim-perl)")


@pytest.fixture
def keyed(tmp_path, zone):
    """``(signer, zone)``: RSA and Ed25519 keys for example.org, an RSA key
    for only-rsa.example.net and an Ed25519 key for only-ed.example.net."""
    cfg = configmod.Config(data=str(tmp_path / "data"), hostname="mail.example.org")
    dr.dkim_keygen(cfg, DOMAIN)
    dr.dkim_keygen(cfg, DOMAIN, algorithm="ed25519")
    dr.dkim_keygen(cfg, "only-rsa.example.net", "r1")
    dr.dkim_keygen(cfg, "only-ed.example.net", "e1", algorithm="ed25519")
    lines = [r.zone_line() for d in (DOMAIN, "only-rsa.example.net", "only-ed.example.net")
             for r in dr.records(cfg, d) if "_domainkey" in r.name]
    return Signer(dr.dkim_signing_keys(cfg)), zone("\n".join(lines))


def dkimpy_results(message, z):
    """dkimpy's verdict for each DKIM-Signature, top first."""
    resolver = z.resolver()

    def dnsfunc(name, timeout=5):
        found = resolver.txt(name.decode().rstrip("."))
        return found[0].encode() if found else None
    d = dkim.DKIM(message)
    count = sum(1 for name, _v in d.headers if name.lower() == b"dkim-signature")
    return [_verified(d, i, dnsfunc) for i in range(count)]


def _verified(d, i, dnsfunc):
    try:
        return d.verify(i, dnsfunc=dnsfunc)
    except dkim.DKIMException:        # dkimpy raises for some failures (body hash mismatch)
        return False


def mail_dkim(message, z, tmp_path):
    script = tmp_path / "verify.pl"
    script.write_text(VERIFY_PL)
    host, port = z.address.split(":")
    out = subprocess.run(["perl", str(script), host, port], input=message, capture_output=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.decode().splitlines()
    return lines[:-1], lines[-1].split()[1]


def tags(header):
    value = header.decode().split(":", 1)[1]
    return {k.strip(): "".join(v.split()) for k, _, v in (t.partition("=") for t in value.split(";"))}


def split_signatures(headers):
    parts = headers.split(b"DKIM-Signature:")
    return [b"DKIM-Signature:" + p for p in parts[1:]]


def test_both_signatures_verify_with_dkimpy(keyed):
    signer, z = keyed
    assert signer.domain_for(MESSAGE, "ann@example.org") == DOMAIN
    headers = signer.sign(MESSAGE, DOMAIN)
    rsa_sig, ed_sig = split_signatures(headers)
    assert tags(rsa_sig)["a"] == "rsa-sha256" and tags(ed_sig)["a"] == "ed25519-sha256"
    for sig in (rsa_sig, ed_sig):
        t = tags(sig)
        assert t["c"] == "relaxed/relaxed" and t["d"] == DOMAIN and t["t"].isdigit()
        assert t["h"].split(":") == ["from", "to", "cc", "subject", "date", "message-id",
                                     "mime-version", "content-type", "list-unsubscribe", "from"]
    assert tags(rsa_sig)["s"] == "roost" and tags(ed_sig)["s"] == "roost-ed25519"
    assert headers.endswith(b"\r\n") and b"\n" not in headers.replace(b"\r\n", b"")
    assert dkimpy_results(headers + MESSAGE, z) == [True, True]
    assert dkimpy_results(rsa_sig + MESSAGE, z) == [True]
    assert dkimpy_results(ed_sig + MESSAGE, z) == [True]


@needs_perl
def test_rsa_signature_verifies_with_mail_dkim(keyed, tmp_path):
    signer, z = keyed
    signed = signer.sign(MESSAGE, "only-rsa.example.net") + MESSAGE
    sigs, overall = mail_dkim(signed, z, tmp_path)
    assert len(sigs) == 1 and sigs[0].startswith("rsa-sha256 r1 pass") and overall == "pass"


@needs_perl
def test_both_signatures_with_mail_dkim(keyed, tmp_path):
    """RSA passes; this Mail::DKIM has no Ed25519, so that one is 'invalid'
    and the message still passes (RFC 8463's reason for signing twice)."""
    signer, z = keyed
    signed = signer.sign(MESSAGE, DOMAIN) + MESSAGE
    sigs, overall = mail_dkim(signed, z, tmp_path)
    assert sigs[0].startswith("rsa-sha256 roost pass")
    assert sigs[1].startswith("ed25519-sha256 roost-ed25519 invalid") and "unsupported" in sigs[1]
    assert overall == "pass"


def test_ed25519_only_domain(keyed):
    signer, z = keyed
    headers = signer.sign(MESSAGE, "only-ed.example.net")
    assert headers.count(b"DKIM-Signature:") == 1 and b"a=ed25519-sha256" in headers
    assert dkimpy_results(headers + MESSAGE, z) == [True]


@pytest.mark.parametrize("verifier", ["dkimpy", pytest.param("mail-dkim", marks=needs_perl)])
def test_a_modified_body_fails(keyed, tmp_path, verifier):
    signer, z = keyed
    headers = signer.sign(MESSAGE, DOMAIN)
    tampered = headers + MESSAGE.replace(b"at ten", b"at six")
    if verifier == "dkimpy":
        assert dkimpy_results(tampered, z) == [False, False]
    else:
        sigs, overall = mail_dkim(tampered, z, tmp_path)
        assert sigs[0].startswith("rsa-sha256 roost fail") and "body has been altered" in sigs[0]
        assert overall == "fail"
    # whitespace changes survive relaxed body canonicalization
    relaxed = headers + MESSAGE.replace(b"at ten?  \r\n", b"at  ten?\r\n")
    assert dkimpy_results(relaxed, z) == [True, True]


@pytest.mark.parametrize("verifier", ["dkimpy", pytest.param("mail-dkim", marks=needs_perl)])
def test_from_is_oversigned(keyed, tmp_path, verifier):
    """A From added above the signed one breaks the signature; one added to
    another (unsigned) field does not."""
    signer, z = keyed
    headers = signer.sign(MESSAGE, "only-rsa.example.net")
    assert tags(headers)["h"].split(":").count("from") == 2
    forged = headers + b"From: Mallory <ceo@example.org>\r\n" + MESSAGE
    harmless = headers + b"X-Added: by a relay\r\n" + MESSAGE
    if verifier == "dkimpy":
        assert dkimpy_results(forged, z) == [False]
        assert dkimpy_results(harmless, z) == [True]
    else:
        assert mail_dkim(forged, z, tmp_path)[1] == "fail"
        assert mail_dkim(harmless, z, tmp_path)[1] == "pass"


def test_signing_domain_choice(keyed):
    signer, _z = keyed
    msg = MESSAGE.replace(b"ann@example.org", b"ann@Sub.Example.ORG")
    assert signer.domain_for(msg, "") == DOMAIN                  # a parent's key aligns
    stranger = MESSAGE.replace(b"ann@example.org", b"ann@elsewhere.example")
    assert signer.domain_for(stranger, "bounce@only-rsa.example.net") == "only-rsa.example.net"
    assert signer.domain_for(stranger, "") is None
    assert signer.domain_for(stranger, "x@nokey.example") is None
    two = MESSAGE.replace(b"From: Ann <ann@example.org>",
                          b"From: ann@example.org, eve@only-ed.example.net")
    assert signer.domain_for(two, "a@only-rsa.example.net") == "only-rsa.example.net"
    assert signer.sign(MESSAGE, None) == b"" and signer.sign(MESSAGE, "nokey.example") == b""


def test_lf_only_message_keeps_lf(keyed):
    signer, z = keyed
    lf = MESSAGE.replace(b"\r\n", b"\n")
    headers = signer.sign(lf, DOMAIN)
    assert b"\r" not in headers and headers.endswith(b"\n")
    assert dkimpy_results(headers + lf, z) == [True, True]


def test_signing_on_threads(keyed):
    """``sign`` is a plain function for the relay's worker pool."""
    signer, z = keyed
    bodies = [MESSAGE.replace(b"at ten", b"at %d" % i) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        signed = list(pool.map(lambda m: signer.sign(m, DOMAIN) + m, bodies))
    assert all(dkimpy_results(m, z) == [True, True] for m in signed)


def test_bad_keys_and_messages_are_refused(tmp_path):
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    def pem(key):
        return key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    Signer({DOMAIN: [("ok", "rsa", pem(small))]})                  # 1024 bits: the minimum
    if shutil.which("openssl"):        # cryptography makes no key under 1024 bits
        weak = subprocess.run(["openssl", "genpkey", "-algorithm", "rsa", "-pkeyopt",
                               "rsa_keygen_bits:768"], capture_output=True, check=True).stdout
        with pytest.raises(SigningError, match="RFC 8301"):
            Signer({DOMAIN: [("s", "rsa", weak)]})
    with pytest.raises(SigningError, match="not an RSA key"):
        Signer({DOMAIN: [("s", "rsa", pem(ed25519.Ed25519PrivateKey.generate()))]})
    with pytest.raises(SigningError, match="not an Ed25519 key"):
        Signer({DOMAIN: [("s", "ed25519", pem(ec.generate_private_key(ec.SECP256R1())))]})
    with pytest.raises(SigningError, match="rsa or ed25519"):
        Signer({DOMAIN: [("s", "dsa", pem(small))]})
    with pytest.raises(SigningError, match="PEM"):
        Signer({DOMAIN: [("s", "rsa", b"garbage")]})
    signer = Signer({DOMAIN: [("ok", "rsa", pem(small))]})
    with pytest.raises(SigningError, match="header"):
        signer.sign(b"From: a@example.org\r\nbad header line\r\n\r\nbody\r\n", DOMAIN)
    with pytest.raises(SigningError, match="header"):
        signer.sign(b" continuation first\r\nFrom: a@example.org\r\n\r\nbody\r\n", DOMAIN)


def test_module_benchmark_runs():
    """The figures in the module docstring come from this entry point."""
    out = subprocess.run([sys.executable, "-c", "from roost.protocols.mailauth import dkim; "
                          "dkim._benchmark(runs=2)"], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.decode().splitlines()] == [
        "RSA-SHA256", "Ed25519-SHA256", "both"]
