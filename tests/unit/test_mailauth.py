"""Verdicts (protocols.mailauth.verify and .inbound) against a loopback DNS
server (dnslib) serving SPF, DKIM and DMARC records for messages signed with
test keys; a silent server for DNS timeouts (temperror within the budget)."""

import random
import time

import dkim
import pytest
from roost.protocols.dns import Resolver
from roost.protocols.mailauth import psl
from roost.protocols.mailauth.inbound import Inbound, authserv_id, fields, remove_ours
from tests.dns_helpers import zone  # noqa: F401 - fixture
from tests.mailauth_helpers import Keys, Silent, message, txt

ID = "mx.example.net"


@pytest.fixture(scope="module")
def keys():
    return Keys()


@pytest.fixture
def dns(zone, keys):  # noqa: F811
    lines = [
        txt("r._domainkey.example.org", keys.rsa_record()),
        txt("e._domainkey.example.org", keys.ed_record()),
        txt("r._domainkey.other.example", keys.rsa_record()),
        txt("bad._domainkey.example.org", "v=DKIM1; k=rsa; p=notbase64!!"),
        txt("example.org", "v=spf1 ip4:192.0.2.1 -all"),
        txt("soft.example", "v=spf1 ip4:192.0.2.1 ~all"),
        txt("neutral.example", "v=spf1 ?all"),
        txt("broken.example", "v=spf1 ip4:192.0.2.1 frobnicate -all"),
        txt("mail.example.org", "v=spf1 a -all"),
        "mail.example.org. 60 IN A 192.0.2.1",
        txt("_dmarc.example.org", "v=DMARC1; p=reject; rua=mailto:agg@example.org"),
        txt("_dmarc.strict.example", "v=DMARC1; p=quarantine; adkim=s; aspf=s"),
        txt("strict.example", "v=spf1 ip4:192.0.2.1 -all"),
        txt("_dmarc.parent.example", "v=DMARC1; p=reject; sp=quarantine"),
        txt("_dmarc.zero.example", "v=DMARC1; p=reject; pct=0"),
        txt("_dmarc.example.co.uk", "v=DMARC1; p=reject"),
        txt("b.example.co.uk", "v=spf1 ip4:192.0.2.1 -all"),
    ]
    return zone("\n".join(lines))


def inbound(z, **kw):
    return Inbound(z.resolver(), ID, psl=psl.default(), **kw)


def signed(keys, msg, domain="example.org", rsa="r", ed="e"):
    return keys.signer(domain, rsa, ed).sign(msg, domain) + msg


def ar(checked):
    return checked.auth_headers.decode()


# --- DKIM -------------------------------------------------------------------------

def test_rsa_and_ed25519_pass_spf_pass_dmarc_pass(dns, keys):
    c = inbound(dns).check(signed(keys, message()), "192.0.2.1", "mail.example.org",
                           "ann@example.org")
    v = c.verdicts
    assert (v["spf"], v["dkim"], v["dmarc"], v["arc"]) == ("pass", "pass", "pass", "none")
    assert v["dkim_domains"] == ["example.org"] and v["from_domain"] == "example.org"
    assert "dmarc_policy" not in v and "spam" not in v
    text = ar(c)
    assert text.startswith(f"Authentication-Results: {ID};\r\n\t")
    assert text.count("dkim=pass") == 2 and "header.a=ed25519-sha256" in text
    assert "header.s=r " in text and "header.d=example.org" in text
    assert "smtp.mailfrom=example.org" in text and "header.from=example.org" in text
    assert text.endswith("\r\n") and text.count("Authentication-Results:") == 1


def test_ed25519_alone(dns, keys):
    c = inbound(dns).check(signed(keys, message(), rsa=None), "192.0.2.1", "h", "ann@example.org")
    assert c.verdicts["dkim"] == "pass" and "header.a=ed25519-sha256" in ar(c)


def test_body_changed_fails(dns, keys):
    data = signed(keys, message()).replace(b"see you", b"meet you")
    c = inbound(dns).check(data, "192.0.2.9", "h", "ann@example.org")
    assert c.verdicts["dkim"] == "fail" and "body hash mismatch" in ar(c)
    assert c.verdicts["dmarc"] == "fail" and c.verdicts["dmarc_policy"] == "reject"
    assert c.verdicts["spam"] is True and c.verdicts["spf"] == "fail"


def test_one_good_one_bad_signature(dns, keys):
    msg = message()
    good = keys.signer("example.org", "r", None).sign(msg, "example.org")
    bad = keys.signer("example.org", "bad", None).sign(msg, "example.org")
    c = inbound(dns).check(bad + good + msg, "192.0.2.9", "h", "x@elsewhere.example")
    results = [line.split()[0].strip("\t;") for line in ar(c).splitlines() if "dkim=" in line]
    assert results == ["dkim=permerror", "dkim=pass"]
    assert c.verdicts["dkim"] == "pass" and c.verdicts["dmarc"] == "pass"   # DKIM aligned


def test_no_key_is_permerror_and_unsigned_is_none(dns, keys):
    c = inbound(dns).check(signed(keys, message(), rsa="nokey", ed=None), "192.0.2.1", "h",
                           "ann@example.org")
    assert c.verdicts["dkim"] == "permerror" and "no key for signature" in ar(c)
    c = inbound(dns).check(message(), "192.0.2.1", "h", "ann@example.org")
    assert c.verdicts["dkim"] == "none" and "dkim=none" in ar(c)


def test_malformed_signature_is_neutral(dns, keys):
    data = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.org; b=abc\r\n" + message()
    c = inbound(dns).check(data, "192.0.2.1", "h", "ann@example.org")
    assert c.verdicts["dkim"] == "neutral"


def test_dns_timeout_is_temperror_within_the_budget(keys):
    silent = Silent()
    try:
        ib = Inbound(Resolver([silent.address], timeout=5), ID, timeout=1.0, psl=psl.default())
        started = time.monotonic()
        c = ib.check(signed(keys, message()), "192.0.2.1", "h", "ann@example.org")
        took = time.monotonic() - started
    finally:
        silent.close()
    v = c.verdicts
    assert (v["spf"], v["dkim"], v["dmarc"]) == ("temperror", "temperror", "temperror")
    assert took < 2.5
    assert c.auth_headers.count(b"Authentication-Results:") == 1


# --- SPF ---------------------------------------------------------------------------

@pytest.mark.parametrize("sender,ip,result", [
    ("a@example.org", "192.0.2.1", "pass"),
    ("a@example.org", "192.0.2.2", "fail"),
    ("a@soft.example", "192.0.2.2", "softfail"),
    ("a@neutral.example", "192.0.2.2", "neutral"),
    ("a@norecord.example", "192.0.2.2", "none"),
    ("a@broken.example", "192.0.2.2", "permerror"),
])
def test_spf_results(dns, sender, ip, result):
    assert inbound(dns).check(message(), ip, "h", sender).verdicts["spf"] == result


def test_spf_null_sender_checks_helo(dns):
    c = inbound(dns).check(message(), "192.0.2.1", "mail.example.org", "<>")
    assert c.verdicts["spf"] == "pass" and "smtp.helo=mail.example.org" in ar(c)


def test_spf_timeout_is_temperror():
    silent = Silent()
    try:
        ib = Inbound(Resolver([silent.address], timeout=5), ID, timeout=0.5, psl=psl.default())
        assert ib.check(message(), "192.0.2.1", "h", "a@example.org").verdicts["spf"] == "temperror"
    finally:
        silent.close()


# --- DMARC ---------------------------------------------------------------------------

def test_relaxed_alignment_of_a_subdomain_signature(dns, keys):
    # signed by example.org, From a subdomain: relaxed DKIM alignment passes
    msg = message("Ann <ann@news.example.org>")
    c = inbound(dns).check(signed(keys, msg), "192.0.2.9", "h", "x@elsewhere.example")
    assert c.verdicts["dmarc"] == "pass"


def test_strict_alignment(dns, keys, zone):  # noqa: F811
    z = zone("\n".join([txt("r._domainkey.strict.example", keys.rsa_record()),
                        txt("_dmarc.strict.example", "v=DMARC1; p=quarantine; adkim=s; aspf=s"),
                        txt("_dmarc.sub.strict.example", "v=DMARC1; p=quarantine; adkim=s; aspf=s"),
                        txt("strict.example", "v=spf1 ip4:192.0.2.1 -all")]))
    ib = inbound(z)
    msg = message("Ann <ann@sub.strict.example>")
    c = ib.check(signed(keys, msg, "strict.example", ed=None), "192.0.2.1", "h", "a@strict.example")
    assert c.verdicts["dkim"] == "pass" and c.verdicts["spf"] == "pass"
    assert c.verdicts["dmarc"] == "fail" and c.verdicts["dmarc_policy"] == "quarantine"
    msg = message("Ann <ann@strict.example>")
    c = ib.check(signed(keys, msg, "strict.example", ed=None), "192.0.2.9", "h", "a@x.example")
    assert c.verdicts["dmarc"] == "pass"


def test_subdomain_policy_sp(dns):
    c = inbound(dns).check(message("a@mail.parent.example"), "192.0.2.9", "h", "a@x.example")
    assert c.verdicts["dmarc"] == "fail" and c.verdicts["dmarc_policy"] == "quarantine"
    assert "p=quarantine" in ar(c)
    c = inbound(dns).check(message("a@parent.example"), "192.0.2.9", "h", "a@x.example")
    assert c.verdicts["dmarc_policy"] == "reject"


def test_pct_zero_applies_the_next_policy_down(dns):
    c = inbound(dns, rng=random.Random(1)).check(message("a@zero.example"), "192.0.2.9", "h",
                                                 "a@x.example")
    assert c.verdicts["dmarc"] == "fail" and c.verdicts["dmarc_policy"] == "quarantine"


def test_organisational_domain_from_the_public_suffix_list(dns):
    # a.b.example.co.uk -> example.co.uk (co.uk is a public suffix); SPF of
    # b.example.co.uk aligns relaxed with the From domain a.b.example.co.uk
    c = inbound(dns).check(message("x@a.b.example.co.uk"), "192.0.2.1", "h", "s@b.example.co.uk")
    assert c.verdicts["dmarc"] == "pass"
    c = inbound(dns).check(message("x@a.b.example.co.uk"), "192.0.2.9", "h", "s@b.example.co.uk")
    assert c.verdicts["dmarc"] == "fail" and c.verdicts["dmarc_policy"] == "reject"
    lst = psl.default()
    assert lst.organisational("a.b.example.co.uk") == "example.co.uk"
    assert lst.organisational("example.co.uk") == "example.co.uk"
    assert lst.organisational("co.uk") == "co.uk"


def test_no_record_is_none(dns):
    c = inbound(dns).check(message("a@norecord.example"), "192.0.2.1", "h", "a@norecord.example")
    assert c.verdicts["dmarc"] == "none" and "dmarc_policy" not in c.verdicts


def test_dmarc_evaluations_recorded_for_rua_domains(dns, keys):
    rows = []
    ib = inbound(dns, record=rows.append)
    ib.check(signed(keys, message()), "192.0.2.1", "h", "ann@example.org")
    ib.check(message("a@norecord.example"), "192.0.2.1", "h", "a@norecord.example")
    assert len(rows) == 1 and rows[0]["policy_domain"] == "example.org"
    assert rows[0]["dkim"] == "pass" and rows[0]["spf"] == "pass"
    assert rows[0]["disposition"] == "none" and rows[0]["rua"] == "mailto:agg@example.org"


# --- our header in, theirs out --------------------------------------------------------

def test_forged_results_claiming_our_id_removed(dns, keys):
    forged = (b"Authentication-Results: MX.Example.NET (comment);\r\n"
              b"\tdkim=pass header.d=example.org\r\n"
              b"Authentication-Results: other.example; spf=pass\r\n"
              b"Authentication-Results: mx.example.net.evil; spf=pass\r\n")
    c = inbound(dns).check(forged + message(), "192.0.2.1", "h", "ann@example.org")
    assert b"MX.Example.NET" not in c.data and b"header.d=example.org\r\n" not in c.data
    assert b"other.example; spf=pass" in c.data and b"mx.example.net.evil" in c.data
    assert c.data.endswith(message())


def test_authserv_id_parsing():
    assert authserv_id(b"Authentication-Results: (x) Foo.Example 1; none\r\n") == "foo.example"
    assert authserv_id(b"Authentication-Results:\r\n foo.example;\r\n spf=pass\r\n") == "foo.example"
    header = b"A: 1\r\nAuthentication-Results: id;\r\n\tspf=pass\r\nB: 2\r\n"
    assert [n for n, _ in fields(header)] == [b"a", b"authentication-results", b"b"]
    assert remove_ours(header + b"\r\nbody", "ID") == b"A: 1\r\nB: 2\r\n\r\nbody"


def test_header_parses_with_authres_and_dkimpy_can_seal_from_it(dns, keys):
    import authres
    c = inbound(dns).check(signed(keys, message()), "192.0.2.1", "h", "ann@example.org")
    parsed = authres.AuthenticationResultsHeader.parse(
        c.auth_headers.decode().replace("\r\n", "").strip())
    assert parsed.authserv_id == ID
    assert [r.method for r in parsed.results] == ["spf", "dkim", "dkim", "dmarc", "arc"]
    sealed = dkim.arc_sign(c.auth_headers + c.data, b"r", b"example.org", keys.rsa_pem, ID.encode())
    assert len(sealed) == 3


def test_lf_only_message_gets_lf_header(dns):
    msg = message().replace(b"\r\n", b"\n")
    c = inbound(dns).check(msg, "192.0.2.1", "h", "ann@example.org")
    assert b"\r" not in c.auth_headers


def test_spam_checker_called_last_and_merged(dns):
    seen = {}

    class Spam:
        def check(self, data, verdicts):
            seen.update(verdicts)
            return b"X-Spam-Score: 1.5\r\n", {"spam_score": 1.5, "spam": False,
                                                "spam_reasons": ["BAYES"]}
    c = inbound(dns, spam=Spam()).check(message("a@parent.example"), "192.0.2.9", "h", "a@x.ex")
    assert seen["dmarc"] == "fail"
    assert c.auth_headers.endswith(b"X-Spam-Score: 1.5\r\n")
    assert c.verdicts["spam"] is True          # DMARC reject stays junk
    assert c.verdicts["spam_reasons"] == ["DMARC policy reject", "BAYES"]
    assert c.verdicts["spam_score"] == 1.5


def test_signatures_beyond_the_limit_are_not_verified(dns, keys):
    from roost.protocols.mailauth.verify import MAX_SIGNATURES
    msg = message()
    sig = keys.signer("example.org", "r", None).sign(msg, "example.org")
    c = inbound(dns).check(sig * (MAX_SIGNATURES + 30) + msg, "192.0.2.1", "h", "ann@example.org")
    assert ar(c).count("dkim=pass") == MAX_SIGNATURES
    assert "dkim=neutral (30 more signatures not verified)" in ar(c)
    assert c.verdicts["dkim"] == "pass"
