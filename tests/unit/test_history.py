"""Change-log retention: old history is pruned and the floor says how far back
changes can still be computed."""

import time

import pytest
from sqlalchemy import func, select, update

from roost.storage.delivery import Delivery
from roost.storage.schema import changes, expunged
from roost.storage.store import Store

from tests.conftest import deliver


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = Store.memory() if request.param == "memory" else Store.open(str(tmp_path))
    yield s
    s.close()


def _deliver(store, n):
    d = Delivery(store)
    for i in range(n):
        deliver(d, b"Subject: %d\r\nMessage-ID: <%d@h>\r\n\r\nx\r\n" % (i, i), ["a@example.org"])
    d.close()


def test_prune_keeps_recent_history_and_raises_the_floor(store):
    acct = store.add_account("a@example.org")
    box = store.mailbox(acct.id, "INBOX")
    _deliver(store, 3)
    store.store_flags(box.id, [1, 2], ["\\Deleted"], "add")
    store.expunge(box.id)
    old_state = store.state(acct.id)
    with store.engine.begin() as conn:   # everything so far happened long ago
        conn.execute(update(changes).values(at=time.time() - 100 * 86400))
    _deliver(store, 1)
    assert store.history_floor(acct.id) == 0

    removed = store.prune_history(30 * 86400)

    assert removed > 0
    assert store.history_floor(acct.id) == old_state
    recent = store.changes(acct.id, "Email", 0)
    assert recent and all(m > old_state for m, _o, _op in recent)
    assert store.expunged_since(box.id, 0) == []
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(expunged)).scalar() == 0


def test_prune_with_nothing_old_changes_nothing(store):
    acct = store.add_account("a@example.org")
    _deliver(store, 2)
    before = store.changes(acct.id, "Email", 0)
    assert store.prune_history(30 * 86400) == 0
    assert store.changes(acct.id, "Email", 0) == before
    assert store.history_floor(acct.id) == 0
