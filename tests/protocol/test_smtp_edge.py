"""The MX-facing SMTP edge (protocols.smtp.edge) over real loopback sockets.

Most tests run the edge in this process on its own asyncio loop (a thread),
with a real SQLite store, real Delivery and outbound queue, a loopback DNS
server (tests/dns_helpers.py) and a clock the test moves (greylisting).
Clients come from several loopback addresses (127.0.0.x) so DNSBL listings,
PTR records and per-address limits can be told apart. One test starts
``roost serve --smtp`` to check the wiring.
"""

import asyncio
import concurrent.futures
import smtplib
import socket
import ssl
import threading
import time

import pytest

from roost.protocols.mailauth.spam import SpamFilter
from roost.protocols.smtp.edge import Context, Edge, Policy
from roost.server.tls import ensure_certificate
from roost.storage import greylist
from roost.storage.delivery import Delivery
from roost.storage.outbound import Outbound, Spool
from roost.storage.schema import outbound_rcpts
from roost.storage.store import Store
from tests.conftest import LineClient, RoostServer, add_user, stored_messages
from tests.dns_helpers import zone  # noqa: F401 - the fixture

HOST = "mx.example.org"
ZONE = """
2.0.0.127.zen.test. 60 IN A 127.0.0.2
2.0.0.127.zen.test. 60 IN TXT "listed for testing"
3.0.0.127.in-addr.arpa. 60 IN PTR mail.good.test.
mail.good.test. 60 IN A 127.0.0.3
4.0.0.127.in-addr.arpa. 60 IN PTR liar.test.
liar.test. 60 IN A 10.9.9.9
"""


def message(tag, extra=b""):
    return (b"From: Someone <someone@sender.test>\r\nTo: a@example.org\r\nSubject: " +
            tag.encode() + b"\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <" +
            tag.encode() + b"@sender.test>\r\n" + extra + b"\r\nHello.\r\n")


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


class EdgeServer:
    """The edge on its own loop in a thread, over a store in ``tmp``."""

    def __init__(self, tmp, resolver, clock=None, spam=None, quota=None, **policy):
        self.data = tmp / "data"
        self.store = Store.open(str(self.data))
        for address in ("a@example.org", "b@example.org"):
            self.store.add_account(address)
        self.store.add_account("full@example.org", quota_bytes=quota or 10**9)
        self.delivery = Delivery(self.store)
        self.outbound = Outbound(self.store, self.delivery, Spool(str(tmp / "queue")), HOST)
        self.executor = concurrent.futures.ThreadPoolExecutor(4)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        cert, key = ensure_certificate(str(self.data), HOST)
        self.cafile = cert
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        policy.setdefault("pregreet", 0.2)
        self.clock = clock or Clock()

        async def run(fn, *args):
            return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)
        self.ctx = Context(run=run, store=self.store, delivery=self.delivery,
                           outbound=self.outbound, resolver=resolver, hostname=HOST, tls=tls,
                           policy=Policy(**policy), spam=spam, clock=self.clock)
        self.server = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(lambda: Edge(self.ctx), "127.0.0.1", 0), self.loop).result(10)
        self.port = self.server.sockets[0].getsockname()[1]

    def smtp(self, source="127.0.0.1"):
        """An smtplib client from ``source`` (after the greeting pause)."""
        return smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.sender.test",
                            source_address=(source, 0), timeout=20)

    def raw(self, source="127.0.0.1"):
        client = LineClient.__new__(LineClient)
        client.sock = socket.create_connection(("127.0.0.1", self.port), timeout=20,
                                               source_address=(source, 0))
        client.file = client.sock.makefile("rb")
        return client

    def inbox(self, address="a@example.org", mailbox="INBOX"):
        acct = self.store.account(address)
        box = self.store.mailbox(acct.id, mailbox)
        return [self.store.read(box.id, r.uid) for r in self.store.records(box.id)]

    def close(self):
        async def stop():  # on the loop's own thread: asyncio.Server is not thread-safe
            self.server.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.executor.shutdown()
        self.delivery.close()
        self.store.close()


@pytest.fixture
def edge(tmp_path, zone):  # noqa: F811
    dns = zone(ZONE)
    servers = []

    def start(**kwargs):
        srv = EdgeServer(tmp_path / f"e{len(servers)}", dns.resolver(), **kwargs)
        servers.append(srv)
        return srv
    yield start
    for srv in servers:
        srv.close()


def send(client, rcpts, data, sender="someone@sender.test"):
    """MAIL, RCPTs and DATA over smtplib; returns (rcpt codes, data reply)."""
    client.ehlo_or_helo_if_needed()
    code, _ = client.mail(sender)
    assert code == 250
    codes = [client.rcpt(r) for r in rcpts]
    if not any(c == 250 for c, _ in codes):
        client.rset()
        return codes, None
    return codes, client.data(data)


def test_delivery_is_stored_with_a_received_header_and_spam_headers(edge):
    srv = edge(spam=SpamFilter())
    with srv.smtp() as c:
        codes, reply = send(c, ["a@example.org", "b@example.org"], message("one"))
    assert [code for code, _ in codes] == [250, 250]
    assert reply[0] == 250 and reply[1].startswith(b"2.0.0 queued as")
    (stored,) = srv.inbox()
    head = stored.split(b"\r\n\r\n")[0]
    assert b"Received: from client.sender.test (unknown [127.0.0.1])\r\n\tby mx.example.org " \
        b"(Roost) with ESMTP id " in head
    assert b"for <" not in head             # two recipients: no "for" clause
    assert b"X-Spam-Status: No, score=1.5 required=5.0\r\n\ttests=NO_PTR" in head
    assert head.index(b"X-Spam-Score") < head.index(b"Received: from")
    assert stored.endswith(b"\r\nHello.\r\n")
    assert len(srv.inbox("b@example.org")) == 1


def test_early_talker_is_refused_before_the_greeting(edge):
    srv = edge(pregreet=0.5)
    client = srv.raw()
    client.send(b"EHLO hasty.test\r\nMAIL FROM:<spam@bot.test>\r\n")
    code, lines = client.reply()
    assert code == 554 and lines[0].startswith("554 5.5.1 ")
    assert client.file.readline() == b""    # disconnected
    client.close()
    # A patient client on the same address is served.
    with srv.smtp() as c:
        assert c.ehlo()[0] == 250


def test_unknown_recipient_and_relay_refused(edge):
    srv = edge()
    with srv.smtp() as c:
        c.ehlo()
        assert c.mail("someone@sender.test")[0] == 250
        code, text = c.rcpt("nobody@example.org")
        assert code == 550 and text.startswith(b"5.1.1 ")
        for foreign in ("victim@elsewhere.test", "a@[127.0.0.1]", "a@example.org.evil.test"):
            code, text = c.rcpt(foreign)
            assert code == 554 and b"5.7.1" in text and b"relay access denied" in text
        assert c.docmd("DATA")[0] == 503
    with srv.smtp() as c:        # there is no AUTH to get around it
        c.ehlo()
        assert not c.has_extn("auth")
        assert c.docmd("AUTH PLAIN AGFAYQ==")[0] == 500
    assert srv.inbox() == []


def test_size_limits(edge):
    srv = edge(max_size=2000)
    with srv.smtp() as c:
        c.ehlo()
        assert c.esmtp_features["size"] == "2000"
        code, text = c.docmd("MAIL FROM:<someone@sender.test> SIZE=5000")
        assert code == 552 and text.startswith(b"5.3.4")
        assert c.mail("someone@sender.test")[0] == 250
        assert c.rcpt("a@example.org")[0] == 250
        code, text = c.data(message("big", b"X-Pad: " + b"p" * 3000 + b"\r\n"))
        assert code == 552 and text.startswith(b"5.3.4")
        # The session goes on.
        codes, reply = send(c, ["a@example.org"], message("small"))
        assert reply[0] == 250
    assert len(srv.inbox()) == 1


def test_starttls_then_delivery(edge):
    srv = edge()
    with srv.smtp() as c:
        c.ehlo()
        assert c.has_extn("starttls")
        c.starttls(context=ssl.create_default_context(cafile=srv.cafile))
        c.ehlo()
        assert not c.has_extn("starttls")
        assert c.docmd("STARTTLS")[0] == 503
        codes, reply = send(c, ["a@example.org"], message("tls"))
        assert reply[0] == 250
    (stored,) = srv.inbox()
    assert b"with ESMTPS id " in stored and b"(using TLSv1." in stored
    assert b"\tfor <a@example.org>;" in stored


def test_greylisting_sequence(edge):
    clock = Clock()
    srv = edge(greylist=True, clock=clock,
               greylist_policy=greylist.Policy(delay=300, allow_after=3))

    def attempt(sender, rcpt="a@example.org"):
        with srv.smtp() as c:
            codes, reply = send(c, [rcpt], message(f"g{time.monotonic_ns()}"), sender=sender)
        return codes[0], reply

    (code, text), _ = attempt("news@list.test")
    assert code == 450 and text.startswith(b"4.7.1") and b"greylisted, try again in 300" in text
    clock.now += 120
    (code, text), _ = attempt("news@list.test")
    assert code == 450 and b"try again in 180 seconds" in text
    clock.now += 200
    (code, _), reply = attempt("news@list.test")
    assert code == 250 and reply[0] == 250
    clock.now += 3600                          # a passed triplet keeps passing
    assert attempt("news@list.test")[0][0] == 250
    # Two more triplets pass their delay: the network is allowed from then on.
    for sender in ("one@other.test", "two@other.test"):
        assert attempt(sender)[0][0] == 450
    clock.now += 301
    for sender in ("one@other.test", "two@other.test"):
        assert attempt(sender)[0][0] == 250
    assert attempt("brand-new@third.test", "b@example.org")[0][0] == 250
    assert greylist.allowed_networks(srv.store, clock.now) == {"127.0.0.0/24": 3}
    # An unknown recipient is refused before greylisting records anything.
    assert attempt("x@y.test", "nobody@example.org")[0][0] == 550


def test_dnsbl_listed_client_is_refused_naming_the_zone(edge):
    srv = edge(dnsbl=("zen.test",))
    with srv.smtp("127.0.0.2") as c:
        codes, _ = send(c, ["a@example.org"], message("bl"))
    code, text = codes[0]
    assert code == 554 and text.startswith(b"5.7.1") and b"blocked using zen.test" in text
    assert b"[127.0.0.2]" in text
    with srv.smtp("127.0.0.1") as c:           # not listed
        assert send(c, ["a@example.org"], message("notbl"))[1][0] == 250


def test_dnsbl_as_a_score_signal(edge):
    srv = edge(dnsbl=("zen.test",), dnsbl_action="score", spam=SpamFilter(threshold=4))
    with srv.smtp("127.0.0.2") as c:
        codes, reply = send(c, ["a@example.org"], message("blscore"))
    assert reply[0] == 250
    assert srv.inbox() == []                     # spam: the default rule files it into Junk
    (stored,) = srv.inbox(mailbox="Junk")
    assert b"X-Spam-Status: Yes, score=4.5 required=4.0\r\n\ttests=NO_PTR,DNSBL(zen.test)" in stored


def test_fcrdns(edge):
    srv = edge(require_fcrdns=True)
    with srv.smtp("127.0.0.3") as c:           # PTR and A agree
        assert send(c, ["a@example.org"], message("fcr"))[1][0] == 250
    (stored,) = srv.inbox()
    assert b"Received: from client.sender.test (mail.good.test [127.0.0.3])" in stored
    for source in ("127.0.0.4", "127.0.0.5"):  # PTR not confirmed; no PTR at all
        with srv.smtp(source) as c:
            codes, _ = send(c, ["a@example.org"], message("nofcr" + source))
        assert codes[0][0] == 550 and codes[0][1].startswith(b"5.7.25")


def test_message_and_recipient_rates_and_connections(edge):
    srv = edge(messages_per_minute=2, connections_per_ip=2, recipients_per_message=2)
    with srv.smtp("127.0.0.6") as c:
        for i in range(2):
            assert send(c, ["a@example.org"], message(f"rate{i}"))[1][0] == 250
        code, text = c.docmd("MAIL FROM:<someone@sender.test>")
        assert code == 421 and text.startswith(b"4.7.0")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            c.noop()
    # Per message: at most 2 recipients.
    with srv.smtp("127.0.0.7") as c:
        c.ehlo()
        c.mail("someone@sender.test")
        assert c.rcpt("a@example.org")[0] == 250
        assert c.rcpt("b@example.org")[0] == 250
        assert c.rcpt("full@example.org")[0] == 452
    # Two open connections from one address; the third is turned away.
    held = [srv.smtp("127.0.0.8"), srv.smtp("127.0.0.8")]
    third = srv.raw("127.0.0.8")
    code, lines = third.reply()
    assert code == 421 and lines[0].startswith("421 4.7.0")
    third.close()
    for c in held:
        c.quit()


def test_commands_before_mail_are_bounded(edge):
    srv = edge(commands_before_mail=5)
    client = srv.raw()
    assert client.reply()[0] == 220
    for _ in range(4):
        assert client.cmd("NOOP")[0] == 250
    assert client.cmd("EHLO a.test")[0] == 250
    code, lines = client.cmd("NOOP")
    assert code == 421 and lines[0].startswith("421 4.7.0")
    client.close()


def test_long_lines_and_bad_commands(edge):
    srv = edge()
    client = srv.raw()
    assert client.reply()[0] == 220
    assert client.cmd("EHLO a.test")[0] == 250
    code, _ = client.cmd("MAIL FROM:<" + "x" * 5000 + "@a.test>")
    assert code == 500
    assert client.cmd("NOOP")[0] == 250       # the session goes on after it
    client.close()


def test_one_recipient_temporarily_failing_is_queued_not_lost(edge):
    srv = edge(quota=100)                       # full@ cannot take the message
    with srv.smtp() as c:
        codes, reply = send(c, ["a@example.org", "full@example.org"], message("partial"))
    assert reply[0] == 250
    assert len(srv.inbox()) == 1
    with srv.store.reader() as conn:
        rows = conn.execute(outbound_rcpts.select()).all()
    assert [(r.address, r.state) for r in rows] == [("full@example.org", "queued")]
    # Only that recipient, alone: all temporary means 4xx and nothing stored.
    with srv.smtp() as c:
        codes, reply = send(c, ["full@example.org"], message("alone"))
    assert reply[0] == 452 and reply[1].startswith(b"4.2.2")


def test_roost_serve_smtp(tmp_path, zone):  # noqa: F811
    dns = zone(ZONE)
    data = tmp_path / "data"
    add_user(data, "a@example.org")
    conf = tmp_path / "roost.toml"
    conf.write_text(f'[server]\nhostname = "{HOST}"\n[dns]\nnameservers = ["{dns.address}"]\n'
                    '[smtp]\npregreet = 0.1\n')
    srv = RoostServer(data, listeners=("smtp",), config=conf).start()
    try:
        assert "smtp" in srv.ports
        with smtplib.SMTP("127.0.0.1", srv.ports["smtp"], local_hostname="c.test",
                          source_address=("127.0.0.3", 0), timeout=20) as c:
            codes, reply = send(c, ["a@example.org", "x@elsewhere.test"], message("serve"))
        assert [code for code, _ in codes] == [250, 554]
        assert reply[0] == 250
    finally:
        srv.stop()
    (stored,) = stored_messages(data, "a@example.org")
    assert b"(mail.good.test [127.0.0.3])" in stored and b"X-Spam-Status: No" in stored


def test_null_sender_bounce_is_accepted(edge):
    srv = edge()
    with srv.smtp() as c:
        c.ehlo()
        assert c.docmd("MAIL FROM:<>")[0] == 250
        assert c.rcpt("a@example.org")[0] == 250
        assert c.data(message("bounce"))[0] == 250
    (stored,) = srv.inbox()
    assert stored.startswith(b"Return-Path: <>\r\nDelivered-To: a@example.org\r\n")


def test_dictionary_attack_is_cut_off(edge):
    srv = edge()
    client = srv.raw()
    assert client.reply()[0] == 220
    assert client.cmd("EHLO a.test")[0] == 250
    assert client.cmd("MAIL FROM:<x@a.test>")[0] == 250
    for i in range(9):
        assert client.cmd(f"RCPT TO:<guess{i}@example.org>")[0] == 550
    code, lines = client.cmd("RCPT TO:<guess9@example.org>")
    assert code == 550
    assert client.reply()[1][0].startswith("421 4.7.0")
    assert client.file.readline() == b""
    client.close()
