"""``storage.views`` caches that IMAP uses, over every store implementation:
sort records by mailbox and UID (``sort_records``) and the flag rows of a
whole mailbox kept current by HIGHESTMODSEQ (``flag_rows``). Each is checked
against the store's own uncached read right after the change that should
move it, so a stale cache fails."""

from roost.storage import emails, sortkeys, views
from tests.unit.test_store import delivery, store  # noqa: F401 - fixtures
from tests.unit.test_views import deliver, world  # noqa: F401 - fixtures


def fresh_box(store, box):
    return store.mailbox(box.account_id, mailbox_id=box.id)


def assert_rows(store, box, sorter):
    got = sorter.flag_rows(fresh_box(store, box))
    assert got == store.flags(box.id)
    return got


def test_flag_rows_follow_flags_deliveries_expunges_and_moves(store, delivery, world):
    acct, inbox, other, pks = world
    sorter = views.Views(store)
    first = assert_rows(store, inbox, sorter)
    assert sorter.flag_rows(fresh_box(store, inbox)) is first      # unchanged: the same rows
    store.store_flags(inbox.id, [1, 3], ["\\Seen", "$label"], "add")
    assert_rows(store, inbox, sorter)
    deliver(delivery, acct, inbox, 7, hours=2)
    assert_rows(store, inbox, sorter)
    store.store_flags(inbox.id, [2], ["\\Deleted"], "add")
    assert store.expunge(inbox.id) == [2]
    assert 2 not in [r[0] for r in assert_rows(store, inbox, sorter)]
    assert_rows(store, other, sorter)
    store.move(inbox.id, [4], other.id)
    assert_rows(store, inbox, sorter)
    assert_rows(store, other, sorter)
    emails.change_messages(store, acct.id, {pks[4]: emails.MessageChange(add=["\\Flagged"])})
    assert_rows(store, inbox, sorter)


def test_flag_rows_reread_when_the_expunge_log_is_pruned(store, delivery, world):
    acct, inbox, _other, _pks = world
    sorter = views.Views(store)
    assert_rows(store, inbox, sorter)
    store.store_flags(inbox.id, [1], ["\\Deleted"], "add")
    store.expunge(inbox.id)
    assert store.prune_history(-1) > 0
    assert store.expunged_since(inbox.id, 0) == []
    assert 1 not in [r[0] for r in assert_rows(store, inbox, sorter)]


def test_flag_rows_reread_after_many_changes(store, delivery, world, monkeypatch):
    acct, inbox, _other, _pks = world
    sorter = views.Views(store)
    assert_rows(store, inbox, sorter)
    monkeypatch.setattr(views, "MAX_DELTA", 1)
    store.store_flags(inbox.id, [1, 2, 3], ["\\Answered"], "add")
    assert_rows(store, inbox, sorter)


def test_sort_records_are_read_once_and_follow_the_uids(store, delivery, world, monkeypatch):
    acct, inbox, _other, _pks = world
    sorter = views.Views(store)
    uids = store.uids(inbox.id)
    got = sorter.sort_records(acct.id, inbox.id, inbox.uidvalidity, uids)
    assert [u for u, _k in got] == uids
    assert got == sorted(sortkeys.load_records(store, acct.id, inbox.id, uids).items())
    loads = []
    real = sortkeys.load_records
    monkeypatch.setattr(sortkeys, "load_records", lambda *a: loads.append(a[3]) or real(*a))
    assert sorter.sort_records(acct.id, inbox.id, inbox.uidvalidity, uids[::-1]) == got[::-1]
    assert loads == []
    new_uid = store.uids(inbox.id)[-1] + 1
    deliver(delivery, acct, inbox, 9, hours=4)
    assert store.uids(inbox.id)[-1] == new_uid
    got = sorter.sort_records(acct.id, inbox.id, inbox.uidvalidity, uids + [new_uid, 999])
    assert loads == [[new_uid, 999]] and [u for u, _k in got] == uids + [new_uid]
    # another account's mailbox pk gives nothing
    assert sorter.sort_records(acct.id + 1, inbox.id, inbox.uidvalidity, [1, 2]) == []
