"""The delivery path's own rules: outcomes per recipient and failure handling."""

import pytest

from roost.storage import delivery as dl
from roost.storage.store import Store

from tests.conftest import deliver

MSG = b"From: a@example.org\r\nMessage-ID: <m1@example.org>\r\nSubject: s\r\n\r\nbody\r\n"


@pytest.fixture
def store():
    s = Store.memory()
    s.add_account("u@example.org")
    yield s
    s.close()


def test_outcome_per_recipient(store):
    d = dl.Delivery(store)
    store.set_quota("u@example.org", 10)
    store.add_account("v@example.org")
    results = deliver(d, MSG, ["v@example.org", "nobody@example.org", "u@example.org"], sender="s@x")
    assert [r.status for r in results] == [dl.DELIVERED, dl.NO_SUCH_USER, dl.OVER_QUOTA]
    (stored,) = results[0].stored
    data = store.read(stored.mailbox_id, stored.uid)
    assert data == b"Return-Path: <s@x>\r\nDelivered-To: v@example.org\r\n" + MSG
    d.close()


def test_too_large_is_refused_before_anything_is_written(store):
    d = dl.Delivery(store, max_size=10)
    (result,) = deliver(d, MSG, ["u@example.org"])
    assert result.status == dl.TOO_LARGE and not result.stored
    assert store.mailbox(store.account("u@example.org").id, "INBOX", counts=True).messages == 0
    d.close()


def test_a_failing_batch_answers_every_waiter_and_discards_files(store, monkeypatch):
    d = dl.Delivery(store)

    def broken(batch):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(store, "insert_messages", broken)
    (result,) = deliver(d, MSG, ["u@example.org"])
    assert result.status == dl.TEMPORARY and "disk on fire" in result.reason
    assert store.blobs.files == {}
    d.close()


def test_duplicate_is_stored_once_but_succeeds(store):
    d = dl.Delivery(store)
    first = deliver(d, MSG, ["u@example.org"])[0]
    second = deliver(d, MSG, ["u@example.org"])[0]
    assert (first.status, second.status) == (dl.DELIVERED, dl.DUPLICATE)
    assert second.stored[0].uid == first.stored[0].uid
    assert len(store.blobs.files) == 1
    d.close()
