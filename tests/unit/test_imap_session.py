"""The IMAP session in-process, over Twisted's StringTransport and the
in-memory store: autologout, LOGINDISABLED off loopback, ordered replies."""

import asyncio

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from roost.protocols.imap import session as sessionmod
from roost.protocols.imap.session import IMAPContext, IMAPSession
from roost.storage.store import Store


async def _run(store, host, feed, wait=0.2):
    async def run(fn, *args):
        return fn(*args)
    ctx = IMAPContext(store=store, run=run, append=None, checker=None)
    transport = StringTransport(hostAddress=IPv4Address("TCP", host, 143),
                                peerAddress=IPv4Address("TCP", "192.0.2.9", 5555))
    s = IMAPSession(ctx)
    s.makeConnection(transport)
    for chunk in feed:
        s.dataReceived(chunk)
    await asyncio.sleep(wait)
    s.connectionLost()
    await asyncio.sleep(0)
    return transport


def run(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_off_loopback_cleartext_login_is_refused():
    store = Store.memory()
    t = run(_run(store, "192.0.2.1", [b"a LOGIN x y\r\n"]))
    out = t.value()
    assert b"LOGINDISABLED" in out.split(b"\r\n")[0] and b"AUTH=PLAIN" not in out
    assert b"a NO [PRIVACYREQUIRED]" in out
    store.close()


def test_replies_come_in_command_order():
    store = Store.memory()
    feed = [b"a1 NOOP\r\na2 CAPABI", b"LITY\r\na3 BOGUS\r\n", b"a4 LOGOUT\r\n"]
    t = run(_run(store, "127.0.0.1", feed))
    tags = [line.split(b" ")[0] for line in t.value().split(b"\r\n") if line and not line.startswith(b"*")]
    assert tags == [b"a1", b"a2", b"a3", b"a4"]
    assert t.disconnecting
    store.close()


def test_autologout_of_a_silent_unauthenticated_client(monkeypatch):
    monkeypatch.setattr(sessionmod, "AUTOLOGOUT_UNAUTHENTICATED", 0.05)
    monkeypatch.setattr(sessionmod, "AUTOLOGOUT_CHECK", 0.02)
    store = Store.memory()
    t = run(_run(store, "127.0.0.1", [], wait=0.3))
    assert b"* BYE autologout" in t.value() and t.disconnecting
    store.close()
