"""The MTA-STS policy and TXT parsers and MX matching (RFC 8461 sections 3.1,
3.2, 4.1), without the network."""

import pytest
from roost.protocols.smtp.mtasts import Policy, PolicyError, mx_allowed, parse_policy, txt_id

GOOD = b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\nmax_age: 604800\r\n"


def test_a_good_policy():
    assert parse_policy(GOOD) == Policy("enforce", ("mail.example.com", "*.example.net"), 604800)
    assert parse_policy(GOOD.replace(b"\r\n", b"\n")) == parse_policy(GOOD)
    assert parse_policy(GOOD.rstrip(b"\r\n")) == parse_policy(GOOD)          # no final newline
    assert parse_policy(b"version: STSv1\nmode: none\nmax_age: 0\n") == Policy("none", (), 0)


def test_unknown_fields_ignored_and_first_of_a_repeated_field_counts():
    text = (b"version: STSv1\nmode: testing\nmode: enforce\nx-note:  caf\xc3\xa9 menu \n"
            b"mx:\tMX.Example.COM\t\nmax_age: 86400\nmax_age: 1\n")
    assert parse_policy(text) == Policy("testing", ("mx.example.com",), 86400)


@pytest.mark.parametrize("text,why", [
    (b"mode: enforce\nmx: a.example\nmax_age: 1\n", "version"),
    (b"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", "version"),
    (b"Version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n", "version"),     # case-sensitive
    (b"version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", "mode"),
    (b"version: STSv1\nmode: enforce\nmx: a.example\n", "max_age"),
    (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n", "max_age"),
    (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 12345678901\n", "max_age"),
    (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -5\n", "max_age"),
    (b"version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
    (b"version: STSv1\nmode: enforce\nmx: *.*.example\nmax_age: 1\n", "mx"),
    (b"version: STSv1\nmode: enforce\nmx: mail.example.\nmax_age: 1\n", "mx"),
    (b"version: STSv1\nmode: enforce\nmx: localhost\nmax_age: 1\n", "mx"),
    (b"version: STSv1\nmode: enforce\nmx: a_b.example\nmax_age: 1\n", "mx"),
    (b"version: STSv1\nmode: enforce\nmx: -a.example\nmax_age: 1\n", "mx"),
    (b"version: STSv1\nmode: enforce\nmx: caf\xc3\xa9.example\nmax_age: 1\n", "mx"),  # A-labels only
    (b"version: STSv1\n\nmode: enforce\nmx: a.example\nmax_age: 1\n", "line 2"),
    (b"version STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n", "line 1"),
    (b"version: STSv1\nmode: enforce\x00\nmx: a.example\nmax_age: 1\n", "line 2"),
    (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 1\n\xff\n", "UTF-8"),
    (b"<!DOCTYPE html><html>\n", "line 1"),
    (b"", "version"),
])
def test_bad_policies(text, why):
    with pytest.raises(PolicyError, match=why):
        parse_policy(text)


@pytest.mark.parametrize("records,ident", [
    (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
    (["v=STSv1;id=abc"], "abc"),
    (["v=STSv1 ; id=abc ; ext=x"], "abc"),
    (["v=spf1 -all", "v=STSv1; id=1"], "1"),                  # others are discarded
    (["v=STSv1; id=1", "v=STSv1; id=2"], None),               # two: no policy
    (["v=STSv1"], None),                                      # id is required
    (["v=STSv1; id="], None),
    (["v=STSv1; id=has-dash"], None),
    (["v=STSv1; id=" + "a" * 33], None),
    (["id=1; v=STSv1"], None),                                # must begin with v=
    (["v=STSv10; id=1"], None),
    (["v=STSv1; id=1; bad field"], None),
    ([], None),
])
def test_txt_records(records, ident):
    assert txt_id(records) == ident


def test_mx_matching():
    policy = Policy("enforce", ("mail.example.com", "*.example.net"), 1)
    assert mx_allowed(policy, "mail.example.com") and mx_allowed(policy, "MAIL.example.com.")
    assert mx_allowed(policy, "mx1.example.net")
    assert not mx_allowed(policy, "example.net")
    assert not mx_allowed(policy, "a.b.example.net")
    assert not mx_allowed(policy, "evil-example.net")
    assert not mx_allowed(policy, "mail.example.com.evil.org")
    assert not mx_allowed(Policy("none", (), 0), "mail.example.com")
