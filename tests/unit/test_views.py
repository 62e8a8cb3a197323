"""``storage.views``: mailbox views sorted by one key and kept fresh from the
change log, and the bounded cache of ordered query results, over every store
implementation (memory, SQLite + Maildir, PostgreSQL + Maildir).

Every view is checked against the database's own sort
(``emails.ordered_messages``) right after the change that should move it, so a
stale view fails."""

import pytest

from roost.storage import emails, views
from roost.storage.store import Store
from tests.conftest import append
from tests.unit.test_store import delivery, store  # noqa: F401 - fixtures

BASE = 1_700_000_000.0
# (received offset in hours, sender, subject, Date header day, body padding)
MESSAGES = [
    (5, "carol@example.org", "beta", 3, 40),
    (1, "alice@example.org", "Alpha", 9, 10),
    (9, "bob@example.org", "gamma", 1, 200),
    (1, "dave@example.org", "alpha", 5, 10),      # same arrival and size as #2: ties by id
    (3, "erin@example.org", "Delta", 7, 90),
]


def message(n, sender, subject, day, pad):
    return (f"From: {sender}\r\nTo: rcpt{n}@example.org\r\nSubject: {subject}\r\n"
            f"Date: Mon, {day:02d} Jan 2024 10:00:00 +0000\r\nMessage-ID: <v{n}@example.org>\r\n"
            f"\r\n" + "x" * pad + "\r\n").encode()


@pytest.fixture
def world(store, delivery):
    acct = store.add_account("owner@example.org", "hash")
    inbox = store.mailbox(acct.id, "INBOX")
    other = store.create_mailbox(acct.id, "Other")
    pks = [deliver(delivery, acct, inbox, i) for i in range(len(MESSAGES))]
    return acct, inbox, other, pks


def deliver(delivery, acct, box, i, hours=None):
    hours_, sender, subject, day, pad = MESSAGES[i % len(MESSAGES)]
    stored = append(delivery, acct, box, message(i, sender, subject, day, pad),
                             internal_date=BASE + 3600 * (hours_ if hours is None else hours))
    return stored.message_id


def database_order(store, acct, box, key, asc):
    return emails.ordered_messages(store, acct.id, [(key, asc)], mailbox_pk=box.id)


def assert_fresh(store, acct, box, sorter=None):
    """Every key and direction of the mailbox's view equals the database's sort."""
    sorter = sorter or views.for_store(store)
    for key in views.SORT_KEYS:
        for asc in (True, False):
            got = sorter.mailbox(acct.id, box.id, key, asc)
            assert got.pairs == database_order(store, acct, box, key, asc), (key, asc)
            assert got.ids == [p[0] for p in got.pairs]


def test_views_are_sorted_by_each_key(store, world):
    acct, inbox, _other, pks = world
    sorter = views.Views(store)
    received = sorter.mailbox(acct.id, inbox.id, "received", True).ids
    # arrival hours 1 (#2 and #4, the newer first), 3, 5, 9
    assert received == [pks[3], pks[1], pks[4], pks[0], pks[2]]
    assert sorter.mailbox(acct.id, inbox.id, "received", False).ids == \
        [pks[2], pks[0], pks[4], pks[3], pks[1]]
    assert sorter.mailbox(acct.id, inbox.id, "size", False).ids[0] == pks[2]
    subject = sorter.mailbox(acct.id, inbox.id, "subject", True).ids
    assert subject[:2] == [pks[3], pks[1]]         # "alpha", "Alpha": case-folded, ties by id
    assert subject[2:] == [pks[0], pks[4], pks[2]]
    assert sorter.mailbox(acct.id, inbox.id, "sent", True).ids == \
        [pks[2], pks[0], pks[3], pks[4], pks[1]]
    assert sorter.mailbox(acct.id, inbox.id, "from", True).ids == pks[1:3] + [pks[0]] + pks[3:]
    threads = {pk: tid for pk, tid in sorter.mailbox(acct.id, inbox.id, "to", True).pairs}
    infos = emails.get_messages(store, acct.id, pks, parsed=False)
    assert threads == {pk: infos[pk].thread_id for pk in pks}
    assert_fresh(store, acct, inbox, sorter)


def test_a_delivery_is_placed(store, delivery, world):
    acct, inbox, _other, pks = world
    sorter = views.Views(store)
    assert_fresh(store, acct, inbox, sorter)
    new = deliver(delivery, acct, inbox, 7, hours=4)     # arrives between #5 and #1
    assert_fresh(store, acct, inbox, sorter)
    received = sorter.mailbox(acct.id, inbox.id, "received", True).ids
    assert received.index(new) == received.index(pks[4]) + 1
    for n in range(3):
        deliver(delivery, acct, inbox, 10 + n, hours=n)
        assert_fresh(store, acct, inbox, sorter)
    assert len(sorter.mailbox(acct.id, inbox.id, "subject", True)) == len(pks) + 4


def test_a_flag_change_keeps_the_views_without_a_resort(store, world, monkeypatch):
    acct, inbox, _other, pks = world
    sorter = views.Views(store)
    before = {(k, a): sorter.mailbox(acct.id, inbox.id, k, a)
              for k in views.SORT_KEYS for a in (True, False)}
    store.store_flags(inbox.id, [1, 3], ["\\Seen", "$label"], "add")
    emails.change_messages(store, acct.id, {pks[4]: emails.MessageChange(add=["\\Flagged"])})
    sorts = []
    monkeypatch.setattr(emails, "ordered_messages", lambda *a, **k: sorts.append(a) or [])
    for (key, asc), old in before.items():
        got = sorter.mailbox(acct.id, inbox.id, key, asc)
        assert got.pairs == old.pairs
    assert sorts == []
    monkeypatch.undo()
    assert_fresh(store, acct, inbox, sorter)


def test_expunge_and_move_leave_the_views(store, world):
    acct, inbox, other, pks = world
    sorter = views.Views(store)
    assert_fresh(store, acct, inbox, sorter)
    assert_fresh(store, acct, other, sorter)
    store.store_flags(inbox.id, [2], ["\\Deleted"], "add")
    assert store.expunge(inbox.id) == [2]
    assert_fresh(store, acct, inbox, sorter)
    assert pks[1] not in sorter.mailbox(acct.id, inbox.id, "from", True).ids
    store.move(inbox.id, [4], other.id)
    assert_fresh(store, acct, inbox, sorter)
    assert_fresh(store, acct, other, sorter)
    assert sorter.mailbox(acct.id, other.id, "received", False).ids == [pks[3]]
    emails.destroy_messages(store, acct.id, [pks[0]])
    emails.change_messages(store, acct.id, {pks[2]: emails.MessageChange(add_to=[other.id])})
    assert_fresh(store, acct, inbox, sorter)
    assert_fresh(store, acct, other, sorter)
    assert sorted(sorter.mailbox(acct.id, inbox.id, "size", True).ids) == \
        sorted([pks[2], pks[4]])


def test_a_view_older_than_the_history_floor_is_rebuilt(store, delivery, world):
    acct, inbox, _other, _pks = world
    sorter = views.Views(store)
    assert_fresh(store, acct, inbox, sorter)
    deliver(delivery, acct, inbox, 20, hours=2)
    store.store_flags(inbox.id, [1], ["\\Deleted"], "add")
    store.expunge(inbox.id)
    assert store.prune_history(-1) > 0        # the changes since the views are gone
    assert store.changes(acct.id, "Email", 0) == []
    assert_fresh(store, acct, inbox, sorter)


def test_too_many_changes_rebuild_the_view(store, delivery, world, monkeypatch):
    acct, inbox, _other, _pks = world
    sorter = views.Views(store)
    assert_fresh(store, acct, inbox, sorter)
    monkeypatch.setattr(views, "MAX_DELTA", 1)
    for n in range(3):
        deliver(delivery, acct, inbox, 30 + n, hours=n + 0.5)
    assert_fresh(store, acct, inbox, sorter)


def test_order_uses_the_view_or_the_database(store, world):
    acct, inbox, _other, pks = world
    sorter = views.Views(store)
    one = sorter.order(acct.id, [("size", False)], mailbox_pk=inbox.id)
    assert one is sorter.mailbox(acct.id, inbox.id, "size", False)
    two = sorter.order(acct.id, [("received", True), ("subject", False)], mailbox_pk=inbox.id)
    assert two.pairs == emails.ordered_messages(store, acct.id, [("received", True),
                                                                 ("subject", False)],
                                                mailbox_pk=inbox.id)
    some = sorter.order(acct.id, [("size", True)], pks={pks[0], pks[2]})
    assert some.ids == [pks[0], pks[2]]
    with pytest.raises(ValueError):
        sorter.order(acct.id, [("arrival", True)])
    with pytest.raises(ValueError):
        sorter.mailbox(acct.id, inbox.id, "uid")


def test_the_account_view_and_picking_hits_from_it(store, delivery, world, monkeypatch):
    """A search's hits, sorted: a few by the database reading only their rows,
    many picked from the account's view (every message once, whatever its
    mailboxes); both as the database sorts, after every kind of change."""
    acct, inbox, other, pks = world
    sorter = views.Views(store)

    def check():
        every = [p for p in emails.ordered_messages(store, acct.id, [("received", False)])]
        for few in (views.FEW_PKS, 0):
            monkeypatch.setattr(views, "FEW_PKS", few)
            for key in views.SORT_KEYS:
                for asc in (True, False):
                    full = emails.ordered_messages(store, acct.id, [(key, asc)])
                    wanted = {p for p, _t in full[::2]} | {10 ** 9}     # and a pk not there
                    got = sorter.order(acct.id, [(key, asc)], pks=wanted)
                    assert got.ids == [p for p, _t in full if p in wanted], (key, asc, few)
                    assert got.pairs == [r for r in full if r[0] in wanted]
                    assert sorter.order(acct.id, [(key, asc)]).pairs == full
        return every
    check()
    emails.change_messages(store, acct.id, {pks[2]: emails.MessageChange(add_to=[other.id])})
    assert len(check()) == len(pks)                    # in two mailboxes, listed once
    before = sorter.mailbox(acct.id, None, "received", False)
    store.store_flags(inbox.id, [1, 3], ["\\Seen"], "add")
    assert sorter.mailbox(acct.id, None, "received", False) is before   # flags: no re-sort
    deliver(delivery, acct, other, 7, hours=4)
    store.move(inbox.id, [4], other.id)
    emails.destroy_messages(store, acct.id, [pks[0]])
    assert len(check()) == len(pks)


def test_a_superset_of_matches_is_sorted_to_the_accounts_own(store, delivery, world,
                                                              monkeypatch):
    """``search(..., superset=True)`` may return another account's matches;
    ``order`` with those pks lists only the account's, few or many."""
    from roost.storage import search as criteria
    acct, inbox, _other, pks = world
    twin = store.add_account("twin@example.org", "hash")
    theirs = [deliver(delivery, twin, store.mailbox(twin.id, "INBOX"), i) for i in range(3)]
    node = criteria.Text("body", "x" * 10)
    found = set(criteria.search(store, acct.id, node, superset=True))
    assert set(pks) <= found <= set(pks) | set(theirs)
    assert set(criteria.search(store, acct.id, node)) == set(pks)
    sorter = views.Views(store)
    for few in (views.FEW_PKS, 0):
        monkeypatch.setattr(views, "FEW_PKS", few)
        got = sorter.order(acct.id, [("received", False)], pks=found | set(theirs))
        assert got.ids == [p for p, _t in emails.ordered_messages(
            store, acct.id, [("received", False)])]


def test_a_copy_into_its_own_mailbox_is_placed(store, world):
    """The placed views (received, size) keep a message that is in the mailbox
    twice twice: a flag change is not taken for a copy."""
    acct, inbox, _other, pks = world
    sorter = views.Views(store)
    for key in views.PLACED:
        sorter.mailbox(acct.id, inbox.id, key, True)
    store.copy(inbox.id, [1], inbox.id)
    for key in views.PLACED:
        got = sorter.mailbox(acct.id, inbox.id, key, True)
        assert got.pairs == database_order(store, acct, inbox, key, True)
        assert got.ids.count(pks[0]) == 2


def test_views_belong_to_their_store(store, delivery, world):
    acct, inbox, _other, _pks = world
    assert views.for_store(store) is views.for_store(store)
    other_store = Store.memory()
    try:
        twin = other_store.add_account("owner@example.org", "hash")
        assert views.for_store(other_store) is not views.for_store(store)
        mine = views.for_store(store).mailbox(acct.id, inbox.id, "received", True)
        theirs = views.for_store(other_store).mailbox(
            twin.id, other_store.mailbox(twin.id, "INBOX").id, "received", True)
        assert len(mine) == len(MESSAGES) and len(theirs) == 0
    finally:
        other_store.close()


def test_sorted_ids_helpers():
    s = views.SortedIds([(5, 1), (4, 2), (3, 1), (2, 3)])
    assert s.ids == [5, 4, 3, 2] and len(s) == 4
    assert (s.position(3), s.position(9)) == (2, None)
    assert s.collapsed().pairs == [(5, 1), (4, 2), (2, 3)]


# --- the query-result cache ---------------------------------------------------------

@pytest.fixture
def memory_store():
    s = Store.memory()
    yield s
    s.close()


def test_query_results_are_computed_once_per_state(memory_store):
    sorter = views.Views(memory_store)
    calls = []

    def compute(n):
        def run():
            calls.append(n)
            return views.SortedIds([(n, n)])
        return run
    assert sorter.query(1, "q", (5, 5), compute(1)).ids == [1]
    assert sorter.query(1, "q", (5, 5), compute(2)).ids == [1]
    assert sorter.query(2, "q", (5, 5), compute(3)).ids == [3]       # another account
    assert sorter.query(1, "q", (6, 5), compute(4)).ids == [4]       # a new state
    assert sorter.query(1, "q", (6, 5), compute(5)).ids == [4]
    assert sorter.query(1, "q", (5, 5), compute(6)).ids == [6]       # the old state is gone
    assert calls == [1, 3, 4, 6]
    sorter.clear()
    sorter.query(1, "q", (5, 5), compute(7))
    assert calls[-1] == 7


def test_caches_are_bounded(memory_store):
    sorter = views.Views(memory_store, max_results=3, max_ids_per_entry=4, max_ids=6)
    calls = []

    def compute(n, size):
        def run():
            calls.append(n)
            return views.SortedIds([(i, i) for i in range(size)])
        return run
    for n in range(5):
        sorter.query(1, n, 0, compute(n, 1))
    assert len(sorter._results) == 3                   # entry count
    sorter.query(1, 4, 0, compute(99, 1))
    sorter.query(1, 0, 0, compute(0, 1))               # evicted, so computed again
    assert calls == [0, 1, 2, 3, 4, 0]
    sorter.query(1, "big", 0, compute("big", 5))       # over the per-entry limit: not kept
    sorter.query(1, "big", 0, compute("big", 5))
    assert calls.count("big") == 2
    sorter.query(1, "a", 0, compute("a", 4))
    sorter.query(1, "b", 0, compute("b", 3))           # 7 ids > 6: "a" goes
    assert sorter._results.total <= 6
    sorter.query(1, "a", 0, compute("a", 4))
    assert calls.count("a") == 2


def test_views_are_bounded(store, world):
    acct, inbox, other, _pks = world
    sorter = views.Views(store, max_views=2, max_ids_per_entry=len(MESSAGES) - 1)
    sorter.mailbox(acct.id, inbox.id, "received", True)   # too big to keep
    sorter.mailbox(acct.id, other.id, "received", True)
    sorter.mailbox(acct.id, other.id, "size", True)
    sorter.mailbox(acct.id, other.id, "subject", True)
    assert len(sorter._views) == 2
