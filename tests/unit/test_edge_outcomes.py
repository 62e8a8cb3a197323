"""The SMTP edge's one reply after DATA (protocols.smtp.edge, ``Edge._store``)
when recipients fare differently, with a stand-in delivery (a unit test of
that one function) and the real outbound queue on the in-memory store:
temporary failures beside stored copies are queued for retry, permanent ones
become a DSN to the sender, and nothing stored means the failure's reply."""

import types

import pytest

from roost.protocols.smtp.edge import Edge, Transaction, failure_reply
from roost.storage import delivery as outcome
from roost.storage.delivery import Delivery, DeliveryResult
from roost.storage.outbound import MemorySpool, Outbound
from roost.storage.schema import outbound, outbound_rcpts
from roost.storage.store import Store

DATA = b"From: a@sender.test\r\nSubject: x\r\n\r\nbody\r\n"


class Canned:
    """A delivery that answers given statuses, in recipient order."""

    def __init__(self, statuses):
        self.statuses = statuses
        self.items = []

    def store(self, item):
        self.items.append(item)
        return [DeliveryResult(r, s, reason="why") for r, s in zip(item.recipients, self.statuses)]


@pytest.fixture
def store():
    s = Store.memory()
    s.add_account("a@example.org")
    s.add_account("b@example.org")
    yield s
    s.close()


def run(store, statuses, sender="someone@sender.test"):
    real = Delivery(store)
    queue = Outbound(store, real, MemorySpool(), "mx.example.org")
    fake = Canned(statuses)
    edge = types.SimpleNamespace(ctx=types.SimpleNamespace(delivery=fake, outbound=queue,
                                                           clock=lambda: 1.8e9),
                                 hostname="mx.example.org")
    edge._bounce = lambda *args: Edge._bounce(edge, *args)
    txn = Transaction()
    txn.mail_from = sender
    txn.rcpt_tos = ["a@example.org", "b@example.org"][:len(statuses)]
    reply = Edge._store(edge, txn, DATA, b"X-Added: 1\r\n", {"spam": False})
    with store.reader() as conn:
        rows = conn.execute(outbound_rcpts.join(outbound).select()).all()
    real.close()
    return reply, fake.items[0], [(r.kind, r.sender, r.address) for r in rows]


def test_all_stored(store):
    reply, item, rows = run(store, [outcome.DELIVERED, outcome.DUPLICATE])
    assert reply.startswith("250 2.0.0 queued as ") and rows == []
    assert item.auth_headers == b"X-Added: 1\r\n" and item.verdicts == {"spam": False}


def test_nothing_stored_gives_the_failure(store):
    assert run(store, [outcome.TEMPORARY, outcome.NO_SUCH_USER])[0].startswith("451 4.3.0")
    assert run(store, [outcome.OVER_QUOTA])[0].startswith("452 4.2.2")
    reply, _, rows = run(store, [outcome.NO_SUCH_USER, outcome.TOO_LARGE])
    assert reply.startswith("550 5.1.1") and rows == []


def test_temporary_beside_stored_is_queued(store):
    reply, _, rows = run(store, [outcome.DELIVERED, outcome.TEMPORARY])
    assert reply.startswith("250 ")
    # Queued, and stored at once by the queue's local path (the real delivery).
    assert rows == [("mail", "someone@sender.test", "b@example.org")]
    acct = store.account("b@example.org")
    box = store.mailbox(acct.id, "INBOX")
    (copy,) = [store.read(box.id, r.uid) for r in store.records(box.id)]
    assert b"X-Added: 1\r\n" in copy and copy.endswith(DATA)


def test_permanent_beside_stored_becomes_a_dsn(store):
    reply, _, rows = run(store, [outcome.DELIVERED, outcome.NO_SUCH_USER])
    assert reply.startswith("250 ")
    assert rows == [("dsn", "", "someone@sender.test")]


def test_no_dsn_to_the_null_sender(store):
    reply, _, rows = run(store, [outcome.DELIVERED, outcome.NO_SUCH_USER], sender="")
    assert reply.startswith("250 ") and rows == []


def test_failure_replies():
    import enum
    rejected = enum.Enum("Status", {"REJECTED": "rejected"}).REJECTED    # as Sieve adds it
    assert failure_reply(DeliveryResult("a@x", rejected, reason="no\r\nthanks")) == \
        "550 5.7.1 no  thanks"
    assert failure_reply(DeliveryResult("a@x", outcome.TOO_LARGE)).startswith("552 5.3.4")
