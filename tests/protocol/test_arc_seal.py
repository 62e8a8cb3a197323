"""ARC (RFC 8617): Roost's seal on a redirected message checked by two
verifiers, dkimpy's and Debian's Mail::DKIM::ARC::Verifier (libmail-dkim-perl,
a separate implementation), with keys in a loopback DNS zone; and a chain
started by Mail::DKIM::ARC::Signer (another ADMD: a mailing list) that
Roost's inbound check validates and then extends with its own set.

../shared/corpus has no message with an ARC chain, so the foreign chain is
made here by the independent implementation."""

import shutil
import subprocess

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from roost.protocols.mailauth import arc, psl
from roost.protocols.mailauth.inbound import Inbound
from tests.dns_helpers import zone  # noqa: F401 - fixture
from tests.mailauth_helpers import Keys, message, txt

ID = "mx.example.net"

VERIFY_PL = r"""
use strict; use warnings;
use Mail::DKIM::ARC::Verifier; use Net::DNS::Resolver;
my ($host, $port) = @ARGV;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(nameservers => [$host], port => $port,
    udp_timeout => 3, tcp_timeout => 3, retry => 1));
my $arc = Mail::DKIM::ARC::Verifier->new();
binmode STDIN;
while (<STDIN>) { s/\015?\012/\015\012/; $arc->PRINT($_); }
$arc->CLOSE;
printf "%s %s\n", $arc->result, $arc->result_detail // "";
"""

SIGN_PL = r"""
use strict; use warnings;
use Mail::DKIM::ARC::Signer;
my ($keyfile) = @ARGV;
my $arc = Mail::DKIM::ARC::Signer->new(Algorithm => 'rsa-sha256', Domain => 'list.example',
    SrvId => 'list.example', Selector => 's1', KeyFile => $keyfile, Chain => 'ar',
    Headers => 'from:to:subject:date:message-id:dkim-signature');
binmode STDIN;
while (<STDIN>) { s/\015?\012/\015\012/; $arc->PRINT($_); }
$arc->CLOSE;
die "not sealed: " . $arc->result . "\n" unless $arc->result eq 'sealed';
print $arc->as_string;
"""


def have_mail_dkim_arc():
    return shutil.which("perl") and subprocess.run(
        ["perl", "-MMail::DKIM::ARC::Verifier", "-MMail::DKIM::ARC::Signer",
         "-MNet::DNS::Resolver", "-e", "1"], capture_output=True).returncode == 0


needs_perl = pytest.mark.skipif(not have_mail_dkim_arc(),
                                reason="Mail::DKIM missing (apt-get install libmail-dkim-perl)")


@pytest.fixture(scope="module")
def keys():
    return {"org": Keys(), "list": Keys(), "net": Keys()}


@pytest.fixture
def dns(zone, keys):  # noqa: F811
    return zone("\n".join([
        txt("r._domainkey.example.org", keys["org"].rsa_record()),
        txt("example.org", "v=spf1 ip4:192.0.2.1 -all"),
        txt("_dmarc.example.org", "v=DMARC1; p=reject"),
        txt("s1._domainkey.list.example", keys["list"].rsa_record()),
        txt("list.example", "v=spf1 ip4:198.51.100.7 -all"),
        txt("roost._domainkey.example.net", keys["net"].rsa_record()),
    ]))


def delivered(dns, data, ip, helo, sender):
    """What delivery stores: Return-Path, Delivered-To, our Authentication-Results."""
    checked = Inbound(dns.resolver(), ID, psl=psl.default()).check(data, ip, helo, sender)
    return (b"Return-Path: <" + sender.encode() + b">\r\nDelivered-To: bob@example.net\r\n"
            + checked.auth_headers + checked.data), checked.verdicts


def roost_seal(keys, stored):
    signer = keys["net"].signer("example.net", "roost", None)
    domain = arc.seal_domain(stored, "bob@example.net", signer, "mx.example.net")
    assert domain == "example.net"
    return arc.seal(stored, signer, ID, domain) + stored


def dkimpy_arc(dns, data):
    resolver = dns.resolver()

    def dnsfunc(name, timeout=5):
        found = resolver.txt(name.decode().rstrip("."))
        return found[0].encode() if found else None
    cv, sets, reason = dkim.arc_verify(data, dnsfunc=dnsfunc)
    return cv.decode(), sets, reason


def mail_dkim_arc(dns, data, tmp_path):
    script = tmp_path / "verify.pl"
    script.write_text(VERIFY_PL)
    host, port = dns.address.split(":")
    out = subprocess.run(["perl", str(script), host, port], input=data, capture_output=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.decode().strip()


def signed_original(keys):
    msg = message()
    return keys["org"].signer("example.org", "r", None).sign(msg, "example.org") + msg


def test_roost_seal_validates_with_dkimpy(dns, keys):
    stored, verdicts = delivered(dns, signed_original(keys), "192.0.2.1", "mail.example.org",
                                 "ann@example.org")
    assert verdicts["dmarc"] == "pass" and verdicts["arc"] == "none"
    sealed = roost_seal(keys, stored)
    head = sealed.split(b"\r\n\r\n")[0]
    assert head.startswith(b"ARC-Seal: i=1; cv=none; a=rsa-sha256; d=example.net; s=roost")
    assert b"ARC-Authentication-Results: i=1; mx.example.net;" in head
    assert b"dmarc=pass" in head.split(b"ARC-Authentication-Results:")[1]
    cv, sets, reason = dkimpy_arc(dns, sealed)
    assert cv == "pass", reason
    # and Roost's own verification of what it sealed
    again = Inbound(dns.resolver(), "other.example", psl=psl.default()).check(
        sealed, "203.0.113.5", "mx.example.net", "bob@example.net")
    assert again.verdicts["arc"] == "pass"
    # a broken body breaks the seal's message signature
    cv, _, _ = dkimpy_arc(dns, sealed.replace(b"see you", b"meet you"))
    assert cv == "fail"


@needs_perl
def test_roost_seal_validates_with_mail_dkim(dns, keys, tmp_path):
    stored, _ = delivered(dns, signed_original(keys), "192.0.2.1", "mail.example.org",
                          "ann@example.org")
    sealed = roost_seal(keys, stored)
    assert mail_dkim_arc(dns, sealed, tmp_path).startswith("pass")
    assert mail_dkim_arc(dns, sealed.replace(b"see you", b"meet you"), tmp_path).startswith("fail")


@needs_perl
def test_foreign_chain_validated_then_extended(dns, keys, tmp_path):
    """A list (Mail::DKIM::ARC::Signer) seals i=1; Roost validates it
    (arc=pass) and adds i=2 with cv=pass; Mail::DKIM and dkimpy pass the
    two-set chain."""
    keyfile = tmp_path / "list.pem"
    keyfile.write_bytes(keys["list"].rsa.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    script = tmp_path / "sign.pl"
    script.write_text(SIGN_PL)
    at_list = (b"Authentication-Results: list.example; arc=none;\r\n\tdkim=pass header.d=example.org\r\n"
               + signed_original(keys))
    out = subprocess.run(["perl", str(script), str(keyfile)], input=at_list, capture_output=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    listed = out.stdout.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + at_list
    assert listed.count(b"ARC-Seal: ") == 1
    stored, verdicts = delivered(dns, listed, "198.51.100.7", "list.example", "bounces@list.example")
    assert verdicts["arc"] == "pass" and b"arc=pass" in stored
    sealed = roost_seal(keys, stored)
    assert b"ARC-Seal: i=2; cv=pass;" in sealed
    assert dkimpy_arc(dns, sealed)[0] == "pass"
    assert mail_dkim_arc(dns, sealed, tmp_path).startswith("pass")


def test_no_rsa_key_no_seal(keys):
    signer = keys["net"].signer("example.net", None, "e")
    assert arc.seal(message(), signer, ID, "example.net") == b""
    assert arc.seal_domain(message(), "a@example.net", signer, "x") is None


def test_message_without_our_results_gets_arc_none(dns, keys):
    sealed = roost_seal(keys, b"Delivered-To: bob@example.net\r\n" + message())
    aar = sealed.split(b"ARC-Authentication-Results:")[1].split(b"ARC-")[0]
    assert b"ARC-Seal: i=1; cv=none;" in sealed and b"arc=none" in aar
    assert b"\nAuthentication-Results:" not in sealed      # the field made up is not sent
    assert dkimpy_arc(dns, sealed)[0] == "pass"
