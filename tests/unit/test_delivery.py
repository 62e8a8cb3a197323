"""The delivery path's own rules: outcomes per recipient and failure handling."""

import json

import pytest

from roost.storage import delivery as dl
from roost.storage import mime
from roost.storage.store import Store

from tests.conftest import append, deliver, pg_store
from tests.malformed import MALFORMED

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


def test_fan_out_holds_the_message_once_and_links_identical_copies(tmp_path):
    import os
    import pathlib
    import tracemalloc
    store = Store.open(str(tmp_path / "data"))
    d = dl.Delivery(store)
    try:
        users = [f"u{i}@example.org" for i in range(20)]
        for u in users:
            store.add_account(u)
        for u in users[1:4]:
            store.add_alias("team@example.org", u)
        owner = store.account(users[0])
        store.create_mailbox(owner.id, "Lists")
        body = b"x" * 998 + b"\r\n"
        big = b"From: a@example.net\r\nSubject: big\r\n\r\n" + body * (4 * 1024 * 1024 // len(body))
        rcpts = [users[0]] + users[4:] + ["u0+lists@example.org", "team@example.org"] + \
            [f"u0+v{i}@example.org" for i in range(10)]
        tracemalloc.start()
        results = deliver(d, big, rcpts, sender="a@example.net")
        _now, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert all(r.ok for r in results), [(r.recipient, r.status) for r in results]
        # 29 recipients of a 4 MB message: nowhere near 32 copies in memory
        assert peak < 4 * len(big), peak
        # u0: one message, in INBOX and Lists (every +variant joined it)
        msgs = {s.message_id for r in results if r.recipient.startswith("u0") for s in r.stored}
        assert len(msgs) == 1
        assert sorted(b.name for b in store.mailboxes(owner.id, counts=True) if b.messages) == ["INBOX", "Lists"]
        # the alias's three copies (team@ as Delivered-To) are one file, hard-linked
        inodes = set()
        for u in users[1:4]:
            acct = store.account(u)
            files = store.blobs.stored(acct.maildir_key, "")
            team = [p for _s, _b, p in files if b"Delivered-To: team@" in pathlib.Path(p).read_bytes()[:200]]
            assert len(team) == 1
            inodes.add(os.stat(team[0]).st_ino)
        assert len(inodes) == 1
        inbox1 = store.mailbox(store.account(users[1]).id, "INBOX")
        assert [r.uid for r in store.records(inbox1.id)] == [1]
        assert store.read(inbox1.id, 1).endswith(big)
    finally:
        d.close()
        store.close()
# --- malformed messages are delivered --------------------------------------------

@pytest.fixture(params=["memory", "postgresql"])
def any_store(request, tmp_path):
    """The store on SQLite, and on PostgreSQL (which refuses NUL in text)."""
    if request.param == "memory":
        s, cleanup = Store.memory(), None
    else:
        s, cleanup = pg_store(tmp_path, "roost_d_")
    s.add_account("u@example.org")
    yield s
    cleanup() if cleanup else s.close()


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_messages_are_delivered_byte_for_byte(any_store, name):
    store = any_store
    d = dl.Delivery(store)
    acct = store.account("u@example.org")
    inbox = store.mailbox(acct.id, "INBOX")
    data = MALFORMED[name]
    (result,) = deliver(d, data, ["u@example.org"], sender="s@x")
    assert result.status == dl.DELIVERED, result.reason
    stored = store.read(result.stored[0].mailbox_id, result.stored[0].uid)
    assert stored == b"Return-Path: <s@x>\r\nDelivered-To: u@example.org\r\n" + data
    assert append(d, acct, inbox, data).uid == result.stored[0].uid + 1   # as IMAP APPEND does
    d.close()


def test_a_parser_failure_still_delivers_with_a_minimal_parse(store, monkeypatch, caplog):
    d = dl.Delivery(store)
    acct = store.account("u@example.org")
    inbox = store.mailbox(acct.id, "INBOX")

    def broken(self, data):
        raise RuntimeError("parser bug")
    monkeypatch.setattr(mime.ParsedMessage, "__init__", broken)
    (result,) = deliver(d, MSG, ["u@example.org"])
    assert result.status == dl.DELIVERED
    uid = append(d, acct, inbox, MSG).uid
    assert store.read(inbox.id, uid) == MSG
    (rec,) = store.records(inbox.id, [uid], parsed=True)
    assert json.loads(rec.envelope)["subject"] is None
    assert json.loads(rec.structure)[:5] == [0, 0, len(MSG), "text", "plain"]
    assert "parser bug" in caplog.text and "minimal parse" in caplog.text
    d.close()


def test_a_derived_value_the_database_cannot_hold_falls_back_to_the_minimal_parse(
        store, monkeypatch, caplog):
    d = dl.Delivery(store)
    monkeypatch.setattr(mime, "message_ids", lambda value: ["\udcff@x"] if value else [])
    (result,) = deliver(d, MSG, ["u@example.org"])
    assert result.status == dl.DELIVERED and "minimal parse" in caplog.text
    d.close()


def test_the_same_incoming_given_twice_is_two_messages(tmp_path):
    store = Store.open(str(tmp_path / "data"))
    d = dl.Delivery(store)
    try:
        acct = store.add_account("twice@example.org")
        box = store.mailbox(acct.id, "INBOX")
        item = dl.Incoming(MSG, account=acct, mailboxes=(box,))
        results = d.store(*[item] * 5)
        assert [r.status for r in results] == [dl.DELIVERED] * 5
        assert [store.read(box.id, r.uid) for r in store.records(box.id)] == [MSG] * 5
    finally:
        d.close()
        store.close()
