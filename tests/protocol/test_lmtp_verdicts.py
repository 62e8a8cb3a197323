"""Verdicts over LMTP against ``roost serve`` (port 0) with ``[dns]
nameservers`` pointed at a loopback zone: the client comes from the MTA's
topmost Received header, the stored message carries exactly one
Authentication-Results with Roost's authserv-id, and a forged one is gone;
with ``lmtp_verdicts = "skip"`` nothing is checked or prepended."""

import pytest

from roost.protocols.lmtp import received_client
from tests.conftest import LineClient, RoostServer, add_user, stored_messages
from tests.dns_helpers import zone  # noqa: F401 - fixture
from tests.mailauth_helpers import Keys, message, txt

ID = "mx.example.net"
RECEIVED = (b"Received: from mail.example.org (mail.example.org [192.0.2.1])\r\n"
            b"\tby mx.example.net (Postfix) with ESMTPS id 4Qx\r\n"
            b"\tfor <bob@example.net>; Mon, 1 Jan 2024 10:00:01 +0000 (UTC)\r\n")
FORGED = b"Authentication-Results: MX.EXAMPLE.NET;\r\n\tdkim=pass header.d=paypal.com\r\n"


@pytest.fixture(scope="module")
def keys():
    return Keys()


def start(tmp_path, z, mode):
    data = tmp_path / "data"
    add_user(data, "bob@example.net")
    conf = tmp_path / "roost.toml"
    conf.write_text(f'[server]\nhostname = "{ID}"\n[dns]\nnameservers = ["{z.address}"]\n'
                    f'[inbound]\nlmtp_verdicts = "{mode}"\ntimeout = 3\n')
    return RoostServer(data, config=conf).start()


def deliver(server, data, sender="ann@example.org"):
    c = LineClient(server.ports["lmtp"])
    try:
        assert c.reply()[0] == 220
        assert c.cmd("LHLO mx.example.net")[0] == 250
        assert c.cmd(f"MAIL FROM:<{sender}>")[0] == 250
        assert c.cmd("RCPT TO:<bob@example.net>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(data + b".\r\n")
        assert c.reply()[0] == 250
        c.cmd("QUIT")
    finally:
        c.close()


def anywhere(data, address):
    found = []
    for box in ("INBOX", "Junk"):
        try:
            found += stored_messages(data, address, box)
        except Exception:  # noqa: BLE001 - no Junk mailbox
            pass
    return found


@pytest.fixture
def records(zone, keys):  # noqa: F811
    return zone("\n".join([txt("r._domainkey.example.org", keys.rsa_record()),
                           txt("example.org", "v=spf1 ip4:192.0.2.1 -all"),
                           txt("_dmarc.example.org", "v=DMARC1; p=reject")]))


def test_one_results_header_with_our_id_and_the_forged_one_gone(tmp_path, records, keys):
    msg = message()
    signed = keys.signer("example.org", "r", None).sign(msg, "example.org") + msg
    server = start(tmp_path, records, "received")
    try:
        deliver(server, RECEIVED + FORGED + signed)
    finally:
        server.stop()
    (got,) = stored_messages(server.data, "bob@example.net")
    head = got.split(b"\r\n\r\n")[0].decode()
    assert head.lower().count("authentication-results:") == 1
    assert "paypal.com" not in head
    ours = head[head.index("Authentication-Results:"):].split("\r\nReceived:")[0]
    assert ours.startswith(f"Authentication-Results: {ID};")
    assert "spf=pass" in ours and "smtp.mailfrom=example.org" in ours
    assert "dkim=pass" in ours and "header.d=example.org" in ours
    assert "dmarc=pass" in ours and "arc=none" in ours
    assert head.index("Delivered-To:") < head.index("Authentication-Results:") < \
        head.index("Received:")
    assert got.endswith(RECEIVED + signed)


def test_dmarc_fail_when_the_mta_saw_another_address(tmp_path, records):
    server = start(tmp_path, records, "received")
    try:
        deliver(server, RECEIVED.replace(b"192.0.2.1", b"IPv6:2001:db8::7") + message())
    finally:
        server.stop()
    (got,) = anywhere(server.data, "bob@example.net")   # INBOX, or Junk once Sieve files spam
    assert b"spf=fail" in got and b"dmarc=fail (p=reject dis=reject)" in got


def test_skip_adds_nothing(tmp_path, records):
    server = start(tmp_path, records, "skip")
    try:
        deliver(server, RECEIVED + FORGED + message())
    finally:
        server.stop()
    (got,) = stored_messages(server.data, "bob@example.net")
    assert got == (b"Return-Path: <ann@example.org>\r\nDelivered-To: bob@example.net\r\n"
                   + RECEIVED + FORGED + message())


@pytest.mark.parametrize("line,expected", [
    (RECEIVED, ("192.0.2.1", "mail.example.org", "mail.example.org")),
    (b"Received: from helo.example (unknown [IPv6:2001:db8::1])\r\n by mx\r\n",
     ("2001:db8::1", "helo.example", "")),
    (b"Received: from rdns.example.com ([192.0.2.8] helo=foo.example)\r\n\tby mx with esmtp\r\n",
     ("192.0.2.8", "foo.example", "rdns.example.com")),
    (b"Received: from [192.0.2.7] (helo=foo.example)\r\n\tby mx\r\n", ("192.0.2.7", "foo.example", "")),
    (b"Received: from helo ([192.0.2.9])\r\n\tby mx\r\n", ("192.0.2.9", "helo", "")),
    (b"Received: by mx (Postfix, from userid 0)\r\n", ("", "", "")),
    (b"Subject: none\r\n", ("10.0.0.1", "x", "y")),     # the first Received, wherever it is
])
def test_received_parsing(line, expected):
    assert received_client(line + b"Received: from x (y [10.0.0.1])\r\n\r\nbody") == expected
