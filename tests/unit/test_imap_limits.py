"""Units behind the IMAP limits: the LIST matcher, UID-set compilation, the
pre-login gate, resumable framing and output back-pressure in a session."""

import asyncio
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from roost.protocols.imap.commands.mailboxes import Pattern
from roost.protocols.imap.session import IMAPContext, IMAPSession, PreauthGate
from roost.protocols.imap.wire import CommandFramer
from roost.storage import search as q
from roost.storage.delivery import Delivery
from roost.storage.store import Store
from tests.conftest import append


def _reference(reference, pattern):
    """The regex LIST used to build (correct, but it backtracks)."""
    full = reference + pattern if not reference or reference.endswith("/") \
        or pattern.startswith("/") else reference + "/" + pattern
    out = [".*" if c == "*" else "[^/]*" if c == "%" else re.escape(c) for c in full]
    rx = "".join(out)
    if full[:5].upper() == "INBOX":
        rx = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(rx, re.S)


_names = st.text(alphabet="ab/Ix", max_size=10)


@settings(max_examples=400, deadline=None)
@given(reference=st.sampled_from(["", "a", "a/", "INBOX", "inbox/"]),
       pattern=st.text(alphabet="ab/*%Ix", max_size=8), name=_names)
def test_pattern_matches_like_the_regex(reference, pattern, name):
    assert Pattern(reference, pattern).fullmatch(name) == \
        bool(_reference(reference, pattern).fullmatch(name))


def test_pattern_inbox_any_case_and_percent_stops_at_the_delimiter():
    assert Pattern("", "inbox").fullmatch("INBOX")
    assert Pattern("", "InBoX/%").fullmatch("INBOX/a") and not Pattern("", "inbox/%").fullmatch("INBOX/a/b")
    assert not Pattern("", "Inb*").fullmatch("INBOX")
    assert Pattern("", "*a" * 200 + "*b").fullmatch("a" * 200) is False   # linear, not exponential


def test_merge_ranges():
    assert q.merge_ranges([(5, 7), (1, 2), (3, 3), (9, 8), (20, 20), (6, 30)]) == [[1, 3], [5, 30]]
    assert q.merge_ranges([]) == []


def test_uids_with_many_ranges_is_one_flat_condition():
    store = Store.memory()
    store.add_account("u@example.org")
    account = store.account("u@example.org")
    box = store.mailbox(account.id, "INBOX")
    delivery = Delivery(store)
    for i in range(30):
        append(delivery, account, box, b"Subject: %d\r\n\r\nx\r\n" % i)
    odd = tuple((n, n) for n in range(1, 5000, 2))
    assert q.search(store, account.id, q.Uids(odd), box.id) == list(range(1, 31, 2))
    assert q.search(store, account.id, q.Not(q.Uids(odd)), box.id) == list(range(2, 31, 2))
    assert q.search(store, account.id, q.Or((q.Uids(odd), q.Uids(((2, 4),)))), box.id) == \
        [1, 2, 3, 4] + list(range(5, 31, 2))
    delivery.close()
    store.close()


def test_preauth_gate_counts_per_address_and_in_all():
    gate = PreauthGate()
    assert gate.enter("a", 2, 3) is True and gate.enter("a", 2, 3) is True
    assert "from a" in gate.enter("a", 2, 3)
    assert gate.enter("b", 2, 3) is True
    assert "too many connections are waiting" in gate.enter("c", 2, 3)
    gate.leave("a")
    assert gate.enter("c", 2, 3) is True
    for ip in ("a", "b", "c"):
        gate.leave(ip)
    assert gate.total == 0 and gate.by_ip == {}


def test_framing_can_stop_after_any_event_and_go_on():
    data = b"a1 NOOP\r\na2 LOGIN {3}\r\nbob {3+}\r\npw!\r\na3 NOOP\r\n"
    framer = CommandFramer()
    framer.buf += data
    events = []
    while True:
        event = next(framer.events(), None)      # one event per generator
        if event is None:
            break
        events.append(event)
    assert events == [[b"a1 NOOP"], [b"a2 LOGIN {3}", b"bob", b" {3+}", b"pw!", b""], [b"a3 NOOP"]]
    assert not framer.pending
    framer.buf += b"a4 LOGIN {3}\r\n"
    request = next(framer.events())
    assert request.size == 3 and framer.pending
    framer.buf += b"bob"
    assert list(framer.events()) == [] and framer.pending
    framer.buf += b"\r\n"
    assert list(framer.events()) == [[b"a4 LOGIN {3}", b"bob", b""]] and not framer.pending


def test_session_waits_while_the_transport_is_full():
    """The transport pauses the session (its producer): the next pipelined
    command waits until it resumes."""
    async def go():
        store = Store.memory()

        async def run(fn, *args):
            return fn(*args)
        transport = StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 143),
                                    peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        s = IMAPSession(IMAPContext(store=store, run=run, append=None, checker=None))
        s.makeConnection(transport)
        assert transport.producer is s
        s.pauseProducing()
        s.dataReceived(b"a1 NOOP\r\na2 NOOP\r\n")
        await asyncio.sleep(0.1)
        out = transport.value()
        assert b"a1 OK" in out and b"a2 OK" not in out
        s.resumeProducing()
        await asyncio.sleep(0.1)
        assert b"a2 OK" in transport.value()
        s.dataReceived(b"a3 LOGOUT\r\n")
        await asyncio.sleep(0.1)
        assert transport.disconnecting and transport.producer is None
        s.connectionLost()
        store.close()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(go())
    finally:
        loop.close()
