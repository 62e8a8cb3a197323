"""The IMAP session in-process, over Twisted's StringTransport and the
in-memory store: autologout, LOGINDISABLED off loopback, ordered replies,
and the one mapping of store errors to tagged NO replies."""

import asyncio

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from roost.protocols.imap import commands
from roost.protocols.imap import session as sessionmod
from roost.protocols.imap.session import IMAPContext, IMAPSession, store_error_reply
from roost.storage import errors
from roost.storage.delivery import Delivery
from roost.storage.store import Store
from tests.conftest import append, deliver

USER = "u@example.org"
MSG = b"From: a@example.org\r\nSubject: s\r\n\r\nbody\r\n"


class _Checker:
    """Any password is right (the session's store lookup still needs the account)."""

    def requestAvatarId(self, credentials):
        return credentials.username


async def _run(store, host, feed, wait=0.2, append=None, checker=None):
    async def run(fn, *args):
        return fn(*args)
    ctx = IMAPContext(store=store, run=run, append=append, checker=checker)
    transport = StringTransport(hostAddress=IPv4Address("TCP", host, 143),
                                peerAddress=IPv4Address("TCP", "192.0.2.9", 5555))
    s = IMAPSession(ctx)
    s.makeConnection(transport)
    for chunk in feed:
        if callable(chunk):             # something else changes the store meanwhile
            await asyncio.sleep(0.05)
            chunk()
        else:
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


@pytest.mark.parametrize("exc, verb, reply", [
    (errors.MailboxNotFound("x"), None, "[NONEXISTENT] no such mailbox"),
    (errors.MailboxNotFound("x"), "SELECT", "[NONEXISTENT] no such mailbox"),
    (errors.MailboxNotFound("x"), "STATUS", "[NONEXISTENT] no such mailbox"),
    (errors.MailboxNotFound("x"), "DELETE", "[NONEXISTENT] no such mailbox"),
    (errors.MailboxNotFound("x"), "RENAME", "[NONEXISTENT] no such mailbox"),
    (errors.MailboxNotFound("x"), "APPEND", "[TRYCREATE] no such mailbox"),
    (errors.MailboxNotFound("x"), "COPY", "[TRYCREATE] no such mailbox"),
    (errors.MailboxNotFound("x"), "MOVE", "[TRYCREATE] no such mailbox"),
    (errors.MailboxExists("x"), "CREATE", "[ALREADYEXISTS] mailbox already exists"),
    (errors.Conflict("another mailbox has the role all"), "CREATE",
     "[USEATTR] another mailbox has the role all"),
    (errors.Conflict("INBOX cannot be deleted"), "DELETE", "[CANNOT] INBOX cannot be deleted"),
    (errors.InvalidName("mailbox name is empty"), "CREATE", "[CANNOT] mailbox name is empty"),
    (errors.QuotaExceeded("u"), "APPEND", "[OVERQUOTA] mailbox is full"),
    (errors.MessageTooLarge("big"), "APPEND", "[TOOBIG] message is too large"),
    (errors.MessageNotFound(3), "FETCH", "[NONEXISTENT] no such message"),
    (errors.TemporaryFailure("busy"), "APPEND", "[UNAVAILABLE] try again later"),
    (errors.AccountNotFound("u"), "SELECT", "[SERVERBUG] storage error"),
    (errors.StoreError(), None, "[SERVERBUG] storage error"),
])
def test_store_error_reply(exc, verb, reply):
    assert store_error_reply(exc, verb and commands.lookup(verb)) == reply


def _tagged(transport, tag):
    lines = transport.value().split(b"\r\n")
    return [x for x in lines if x.startswith(tag + b" ")]


DELIVER = object()


def _session_with(append_error=None, quota=None, max_size=1 << 20, feed=()):
    """Log in as USER and run ``feed`` (``DELIVER``: a message arrives by LMTP
    meanwhile); APPEND goes through a real Delivery (or raises ``append_error``).
    Returns the transport."""
    store = Store.memory()
    store.add_account(USER, quota_bytes=quota)
    delivery = Delivery(store, max_size=max_size)

    def append_to(account, box, data, flags, date):
        if append_error is not None:
            raise append_error
        return append(delivery, account, box, data, flags=flags, internal_date=date)
    try:
        feed = [(lambda: deliver(delivery, MSG, [USER])) if x is DELIVER else x for x in feed]
        return run(_run(store, "127.0.0.1", [b"L LOGIN u@example.org pw\r\n", *feed],
                        append=append_to, checker=_Checker()))
    finally:
        delivery.close()
        store.close()


def _append(tag, mailbox="INBOX", data=MSG):
    return b"%s APPEND %s {%d+}\r\n%s\r\n" % (tag, mailbox.encode(), len(data), data)


def test_append_errors_come_from_the_mapper():
    t = _session_with(feed=[_append(b"a1"), _append(b"a2", "nowhere"), b"c1 COPY 1 nowhere\r\n",
                            b"s1 SELECT nowhere\r\n"])
    assert _tagged(t, b"L")[0].startswith(b"L OK")
    assert _tagged(t, b"a1")[0].startswith(b"a1 OK [APPENDUID ")
    assert _tagged(t, b"a2") == [b"a2 NO [TRYCREATE] no such mailbox"]
    assert _tagged(t, b"s1") == [b"s1 NO [NONEXISTENT] no such mailbox"]
    assert _tagged(_session_with(quota=10, feed=[_append(b"a3")]), b"a3") == \
        [b"a3 NO [OVERQUOTA] mailbox is full"]
    assert _tagged(_session_with(max_size=10, feed=[_append(b"a4")]), b"a4") == \
        [b"a4 NO [TOOBIG] message is too large"]
    # The mailbox went away between the lookup and the write: still the destination.
    gone = _session_with(append_error=errors.MailboxNotFound("INBOX"), feed=[_append(b"a5")])
    assert _tagged(gone, b"a5") == [b"a5 NO [TRYCREATE] no such mailbox"]


def test_pending_updates_come_before_a_store_error_reply():
    """Like every other tagged reply, a store error's NO follows the untagged
    EXISTS the client has not been told yet (RFC 3501 section 7)."""
    t = _session_with(feed=[b"s1 SELECT INBOX\r\n", DELIVER, b"d1 DELETE nowhere\r\n"])
    out = t.value()
    assert b"d1 NO [NONEXISTENT] no such mailbox" in out
    assert out.index(b"* 1 EXISTS") < out.index(b"d1 NO")
