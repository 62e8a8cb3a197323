"""Reindex on upgrade (storage.reindex): the search format version in
``server_state``, the lease that lets one process do the work, both backends."""

import threading
import time

import pytest
from sqlalchemy import delete, select, update

from roost.storage import reindex
from roost.storage import search as S
from roost.storage.delivery import Delivery
from roost.storage.schema import leases, server_state
from roost.storage.search_text import VERSION
from roost.storage.store import Store
from tests.conftest import append

MSG = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: upgrade\r\n"
       b"Content-Type: multipart/mixed; boundary=u\r\n\r\n--u\r\nContent-Type: text/plain\r\n\r\n"
       b"body\r\n--u\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; "
       b"filename=n.txt\r\n\r\nattachmentonlyword\r\n--u--\r\n")


def _old_release(store, account_id, pks):
    """Make the data directory look indexed by an older release: no version
    row, and index entries without the attachment's text (here: none)."""
    with store.write() as txn:
        txn.conn.execute(delete(server_state).where(server_state.c.name == reindex.NAME))
        store.fulltext.remove(txn, account_id, pks)
    store.fulltext.flush()


@pytest.fixture(params=["fts5", "whoosh"])
def data(request, tmp_path):
    path = str(tmp_path / "data")
    store = Store.open(path, search=request.param)
    delivery = Delivery(store)
    acct = store.add_account("alice@example.org")
    box = store.mailbox(acct.id, "INBOX")
    pks = [append(delivery, acct, box, MSG).message_id for _ in range(3)]
    delivery.close()
    store.fulltext.flush()
    _old_release(store, acct.id, pks)
    store.close()
    return path, request.param, acct.id, box.id


def _find(store, acct_id, word):
    store.fulltext.flush()
    return S.search(store, acct_id, S.Text("body", word))


def test_a_new_data_directory_is_stamped(tmp_path):
    store = Store.open(str(tmp_path / "d"))
    try:
        assert reindex.stored_version(store) == VERSION
        assert reindex.start(store) is None
    finally:
        store.close()


def test_an_old_index_is_rebuilt_in_the_background_once(data):
    path, kind, acct_id, box_id = data
    store = Store.open(path, search=kind)
    try:
        assert reindex.stored_version(store) == 0
        assert _find(store, acct_id, "attachmentonlyword") == []
        started = reindex.start(store)
        assert started is not None
        started[0].join(60)
        assert not started[0].is_alive()
        assert reindex.stored_version(store) == VERSION
        assert len(_find(store, acct_id, "attachmentonlyword")) == 3
        with store.reader() as conn:     # the lease is given back
            assert conn.execute(select(leases)).all() == []
        assert reindex.start(store) is None          # done once
    finally:
        store.close()


def test_a_live_lease_leaves_the_work_to_its_holder(data):
    path, kind, acct_id, _box = data
    store = Store.open(path, search=kind)
    try:
        assert store.take_lease(reindex.LEASE, "other-host:1:1", reindex.LEASE_SECONDS)
        assert reindex.reindex_all(store) is None          # someone else is at it
        assert reindex.stored_version(store) == 0
        # That process died: once its lease has expired the work is taken over.
        with store.write() as txn:
            txn.conn.execute(update(leases).values(expires=time.time() - 1))
        assert reindex.reindex_all(store) == 3
        assert reindex.stored_version(store) == VERSION
    finally:
        store.close()


def test_a_stopped_reindex_does_not_record_the_version(data):
    path, kind, acct_id, _box = data
    store = Store.open(path, search=kind)
    try:
        stop = threading.Event()
        stop.set()
        with pytest.raises(reindex.Stopped):
            reindex.reindex_all(store, stop)
        assert reindex.stored_version(store) == 0
        with store.reader() as conn:
            assert conn.execute(select(leases)).all() == []
    finally:
        store.close()
