"""LMTP transcripts over a real socket against ``roost serve`` (RFC 2033).

Raw bytes on purpose: after DATA an LMTP server sends one reply per accepted
recipient, and Python's ``smtplib.LMTP`` reads only the first.
"""

import hashlib
import signal

import pytest

from tests.conftest import LineClient, RoostServer, add_user, stored_messages, without_verdicts
from roost.storage.store import Store

QUOTA = 4000


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("lmtp") / "data"
    for user in ("a@example.org", "b@example.org", "jörg@example.org"):
        add_user(data, user)
    add_user(data, "full@example.org", quota=QUOTA)
    store = Store.open(str(data))
    store.create_mailbox(store.account("a@example.org").id, "Lists")
    store.close()
    srv = RoostServer(data).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    c = LineClient(server.ports["lmtp"])
    assert c.reply()[0] == 220
    yield c
    c.close()


def lhlo(client):
    code, lines = client.cmd("LHLO test.example")
    assert code == 250
    return [line[4:] for line in lines]


def message(tag, body=b"hello\r\n", extra=b""):
    """A small message with a unique Message-ID."""
    return (b"From: sender@example.net\r\nTo: a@example.org\r\nSubject: " + tag.encode() +
            b"\r\nMessage-ID: <" + tag.encode() + b"@test.example>\r\n" + extra + b"\r\n" + body)


def wire(data):
    """``data`` as the DATA payload: dot-stuffed, CRLF-terminated, then ``.``."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    lines = data.split(b"\r\n")[:-1]
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines) + b".\r\n"


def find(server, address, tag, mailbox="INBOX"):
    needle = b"<" + tag.encode() + b"@test.example>"
    return [m for m in stored_messages(server.data, address, mailbox) if needle in m]


def send(client, rcpts, data, sender="sender@example.net", mail_params=""):
    """One transaction, command by command; returns (rcpt replies, data replies)."""
    assert client.cmd(f"MAIL FROM:<{sender}>{mail_params}")[0] == 250
    rcpt_codes = [client.cmd(f"RCPT TO:<{r}>")[0] for r in rcpts]
    accepted = rcpt_codes.count(250)
    if not accepted:
        assert client.cmd("RSET")[0] == 250
        return rcpt_codes, []
    assert client.cmd("DATA")[0] == 354
    client.send(wire(data))
    return rcpt_codes, [client.reply() for _ in range(accepted)]


def test_greeting_and_capabilities(client):
    caps = lhlo(client)
    for cap in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"):
        assert cap in caps
    assert any(c.startswith("SIZE ") for c in caps)


def test_lhlo_required(client):
    code, lines = client.cmd("MAIL FROM:<x@example.net>")
    assert code == 503 and lines[0].startswith("503 5.")
    for verb in ("HELO", "EHLO"):
        code, lines = client.cmd(f"{verb} test.example")
        assert code == 500 and lines[0].startswith("500 5.5.")
    lhlo(client)
    assert client.cmd("MAIL FROM:<x@example.net>")[0] == 250


def test_one_reply_per_recipient_in_rcpt_order(server, client):
    lhlo(client)
    data = message("multi")
    rcpts = ["a@example.org", "nobody@example.org", "b@example.org", "a+lists@example.org"]
    rcpt_codes, replies = send(client, rcpts, data)
    assert rcpt_codes == [250, 550, 250, 250]
    assert [code for code, _ in replies] == [250, 250, 250]
    # Each reply names its recipient, in RCPT order (unknown one left out).
    for (code, lines), rcpt in zip(replies, ["a@example.org", "b@example.org", "a+lists@example.org"]):
        assert lines == [f"250 2.0.0 <{rcpt}> delivered"]
    # No extra reply is waiting: the next command's reply is the next line.
    assert client.cmd("NOOP")[0] == 250
    assert len(find(server, "a@example.org", "multi")) == 1
    assert len(find(server, "b@example.org", "multi")) == 1
    assert len(find(server, "a@example.org", "multi", "Lists")) == 1


def test_unknown_recipient_550_at_rcpt(client):
    lhlo(client)
    assert client.cmd("MAIL FROM:<x@example.net>")[0] == 250
    code, lines = client.cmd("RCPT TO:<nobody@example.org>")
    assert code == 550 and lines[0].startswith("550 5.1.1 ")
    code, lines = client.cmd("RCPT TO:<a@elsewhere.example>")
    assert code == 550 and lines[0].startswith("550 5.1.1 ")
    code, lines = client.cmd("DATA")
    assert code == 503


def test_pipelining_whole_transaction_in_one_write(server, client):
    lhlo(client)
    data = message("pipelined")
    client.send(b"MAIL FROM:<p@example.net>\r\nRCPT TO:<a@example.org>\r\n"
                b"RCPT TO:<nobody@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n" +
                wire(data) + b"QUIT\r\n")
    codes = [client.reply()[0] for _ in range(8)]
    assert codes == [250, 250, 550, 250, 354, 250, 250, 221]
    assert len(find(server, "a@example.org", "pipelined")) == 1
    assert len(find(server, "b@example.org", "pipelined")) == 1


def test_return_path_and_delivered_to_prepended(server, client):
    lhlo(client)
    data = message("prepend")
    _, replies = send(client, ["a@example.org"], data, sender="bounce+x@example.net")
    assert replies[0][0] == 250
    (got,) = find(server, "a@example.org", "prepend")
    prefix = b"Return-Path: <bounce+x@example.net>\r\nDelivered-To: a@example.org\r\n"
    # then the verdicts ([inbound] lmtp_verdicts = "received" by default; authserv-id: hostname)
    assert got.startswith(prefix + b"Authentication-Results: localhost;\r\n")
    assert without_verdicts(got) == prefix + data


def test_null_sender(server, client):
    lhlo(client)
    data = message("nullsender", b"a bounce\r\n")
    assert client.cmd("MAIL FROM:<>")[0] == 250
    assert client.cmd("RCPT TO:<a@example.org>")[0] == 250
    assert client.cmd("DATA")[0] == 354
    client.send(wire(data))
    assert client.reply()[0] == 250
    (got,) = find(server, "a@example.org", "nullsender")
    assert got.startswith(b"Return-Path: <>\r\nDelivered-To: a@example.org\r\n")
    assert got.endswith(data)


def test_detail_delivers_into_existing_folder_else_inbox(server, client):
    lhlo(client)
    _, replies = send(client, ["a+Lists@example.org"], message("detail-lists"))
    assert replies[0][0] == 250
    assert len(find(server, "a@example.org", "detail-lists", "Lists")) == 1
    assert not find(server, "a@example.org", "detail-lists")
    _, replies = send(client, ["a+nosuchfolder@example.org"], message("detail-none"))
    assert replies[0][0] == 250
    (got,) = find(server, "a@example.org", "detail-none")
    assert b"Delivered-To: a+nosuchfolder@example.org\r\n" in got


def test_duplicate_suppressed_both_acknowledged(server, client):
    lhlo(client)
    data = message("dupe")
    for _ in range(2):
        _, replies = send(client, ["b@example.org"], data)
        assert replies[0][0] == 250
    assert len(find(server, "b@example.org", "dupe")) == 1
    # The same Message-ID with other content is a different message.
    _, replies = send(client, ["b@example.org"], message("dupe", b"other body\r\n"))
    assert replies[0][0] == 250
    assert len(find(server, "b@example.org", "dupe")) == 2


def test_over_quota_552_5_2_2(server, client):
    lhlo(client)
    _, replies = send(client, ["full@example.org"], message("fits"))
    assert replies[0][0] == 250
    big = message("toobig", (b"y" * 70 + b"\r\n") * (QUOTA // 70 + 1))
    _, replies = send(client, ["full@example.org", "a@example.org"], big)
    assert replies[0][0] == 552 and replies[0][1][0].startswith("552 5.2.2 ")
    assert replies[1][0] == 250
    assert not find(server, "full@example.org", "toobig")
    assert len(find(server, "a@example.org", "toobig")) == 1


MALFORMED = [
    ("FOO bar", 500),
    ("MAIL", 501),
    ("MAIL FROM:", 501),
    ("MAIL TO:<x@example.net>", 501),
    ("MAIL FROM:<x@example.net> NOSUCHPARAM=1", 555),
    ("MAIL FROM:<x@example.net> SIZE=abc", 501),
    ("RCPT TO:<a@example.org>", 503),
    ("DATA", 503),
    ("LHLO", 501),
    ("X" * 70000, 500),
]


@pytest.mark.parametrize("line,code", MALFORMED, ids=[m[0][:20] for m in MALFORMED])
def test_malformed_command_gets_clear_5xx(client, line, code):
    lhlo(client)
    got, lines = client.cmd(line)
    assert got == code
    assert lines[-1][4:5] == "5" and lines[-1][5:6] == "."   # enhanced status code
    assert len(lines[-1]) > 10                              # and some text
    assert client.cmd("NOOP")[0] == 250                     # the session goes on


def test_malformed_rcpt_address(client):
    lhlo(client)
    assert client.cmd("MAIL FROM:<x@example.net>")[0] == 250
    for bad in ("RCPT TO:", "RCPT FROM:<a@example.org>", "RCPT TO:<a@example.org> FOO=bar"):
        code, lines = client.cmd(bad)
        assert 500 <= code < 600, (bad, lines)
        assert lines[-1][4:5] == "5"


def test_dot_stuffing(server, client):
    lhlo(client)
    body = b"line one\r\n.leading dot\r\n..two dots\r\n.\r\n. \r\nend\r\n"
    data = message("dots", body)
    _, replies = send(client, ["a@example.org"], data)
    assert replies[0][0] == 250
    (got,) = find(server, "a@example.org", "dots")
    assert got.endswith(data)


def test_one_megabyte_message(server, client):
    lhlo(client)
    line = b"0123456789abcdefghijklmnopqrstuvwxyz" * 2 + b"\r\n"
    data = message("onemeg", line * (1024 * 1024 // len(line) + 1))
    assert len(data) > 1024 * 1024
    _, replies = send(client, ["a@example.org", "b@example.org"], data)
    assert [r[0] for r in replies] == [250, 250]
    (got,) = find(server, "a@example.org", "onemeg")
    assert hashlib.sha256(got[got.index(b"From: "):]).digest() == hashlib.sha256(data).digest()


def test_eight_bit_body(server, client):
    lhlo(client)
    body = "Grüße aus Köln, ¿qué tal? 日本語\r\n".encode() + bytes(range(0x80, 0x100)) + b"\r\n"
    data = message("8bit", body, b"Content-Type: text/plain; charset=utf-8\r\n")
    _, replies = send(client, ["a@example.org"], data, mail_params=" BODY=8BITMIME")
    assert replies[0][0] == 250
    (got,) = find(server, "a@example.org", "8bit")
    assert got.endswith(data)


def test_smtputf8_address(server, client):
    lhlo(client)
    data = message("utf8addr", "Grüße\r\n".encode())
    _, replies = send(client, ["jörg@example.org"], data, sender="müller@example.net",
                      mail_params=" SMTPUTF8 BODY=8BITMIME")
    assert replies[0][0] == 250
    (got,) = find(server, "jörg@example.org", "utf8addr")
    assert got.startswith("Return-Path: <müller@example.net>\r\nDelivered-To: jörg@example.org\r\n".encode())


def test_rset_discards_transaction(server, client):
    lhlo(client)
    assert client.cmd("MAIL FROM:<x@example.net>")[0] == 250
    assert client.cmd("RCPT TO:<a@example.org>")[0] == 250
    assert client.cmd("RSET")[0] == 250
    assert client.cmd("DATA")[0] == 503


def test_size_limit(tmp_path):
    data = tmp_path / "data"
    add_user(data, "a@example.org")
    config = tmp_path / "roost.toml"
    config.write_text("[limits]\nmax_message_size = 10000\n")
    srv = RoostServer(data, config=config).start()
    try:
        c = LineClient(srv.ports["lmtp"])
        c.reply()
        assert "SIZE 10000" in lhlo(c)
        code, lines = c.cmd("MAIL FROM:<x@example.net> SIZE=20000")
        assert code == 552 and lines[0].startswith("552 5.3.4 ")
        # A client that declares nothing still cannot get more through.
        assert c.cmd("MAIL FROM:<x@example.net>")[0] == 250
        assert c.cmd("RCPT TO:<a@example.org>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(wire(message("oversize", b"z" * 60 + b"\r\n") + (b"z" * 60 + b"\r\n") * 200))
        code, lines = c.reply()
        assert code == 552 and lines[0].startswith("552 5.3.4 ")
        assert c.cmd("NOOP")[0] == 250
        _, replies = send(c, ["a@example.org"], message("small"))
        assert replies[0][0] == 250
        c.close()
        msgs = stored_messages(srv.data, "a@example.org")
        assert len(msgs) == 1 and b"<small@test.example>" in msgs[0]
    finally:
        srv.stop()


@pytest.mark.parametrize("workers", [1, 2])
def test_stop_finishes_the_transaction_under_way_and_starts_none(tmp_path, workers):
    data = tmp_path / "data"
    add_user(data, "stop@example.org")
    srv = RoostServer(data, workers=workers).start()
    busy, idle = LineClient(srv.ports["lmtp"]), LineClient(srv.ports["lmtp"])
    try:
        for c in (busy, idle):
            assert c.reply()[0] == 220
            assert c.cmd("LHLO test")[0] == 250
        assert busy.cmd("MAIL FROM:<a@example.net>")[0] == 250
        assert busy.cmd("RCPT TO:<stop@example.org>")[0] == 250
        srv.proc.send_signal(signal.SIGTERM)
        code, lines = idle.reply()          # between transactions: told at once
        assert code == 421 and "shutting down" in lines[-1], lines
        assert busy.cmd("DATA")[0] == 354
        busy.send(b"Subject: under way\r\n\r\nfinished after SIGTERM\r\n.\r\n")
        assert busy.reply()[0] == 250       # delivered, then told
        assert busy.reply()[0] == 421
        srv.proc.wait(30)
        assert srv.proc.returncode == 0
        assert [m for m in stored_messages(data, "stop@example.org") if b"under way" in m]
    finally:
        busy.close()
        idle.close()
        srv.stop()
