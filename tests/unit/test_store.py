"""The store API, one suite over every implementation: ``Store.memory()``,
``Store.open(dir)`` (SQLite + Maildir) and PostgreSQL + Maildir.

PostgreSQL runs at ``ROOST_TEST_PG`` (default
``postgresql+psycopg://postgres@127.0.0.1/test``), each test in a fresh
schema that is dropped afterwards; it is skipped, with the reason, when the
server cannot be reached.
"""

import os

import pytest

from roost.storage import delivery as dv
from roost.storage import flags as fl
from roost.storage.errors import (AccountExists, Conflict, InvalidName, MailboxExists,
                                  MailboxNotFound, QuotaExceeded)
from roost.storage.maildir import Maildir
from roost.storage.store import Store
from tests.conftest import append, deliver, pg_store



@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "memory":
        s, cleanup = Store.memory(), None
    elif request.param == "sqlite":
        s, cleanup = Store.open(str(tmp_path / "data")), None
    else:
        s, cleanup = pg_store(tmp_path, "roost_t_")
    s.kind = request.param
    yield s
    if cleanup:
        cleanup()
    else:
        s.close()


@pytest.fixture
def delivery(store):
    d = dv.Delivery(store)
    yield d
    d.close()


@pytest.fixture
def alice(store):
    return store.add_account("alice@example.org", "hash")


def msg(n, subject=None, msgid=None, refs=None, body=None, in_reply_to=None):
    head = [f"From: bob@example.net", "To: alice@example.org",
            f"Subject: {subject if subject is not None else f'message {n}'}",
            f"Message-ID: <{msgid or f'm{n}@example.net'}>"]
    if refs:
        head.append("References: " + " ".join(f"<{r}>" for r in refs))
    if in_reply_to:
        head.append(f"In-Reply-To: <{in_reply_to}>")
    return ("\r\n".join(head) + "\r\n\r\n" + (body or f"body {n}") + "\r\n").encode()


def put(delivery, data, rcpt="alice@example.org", **kw):
    (result,) = deliver(delivery, data, [rcpt], sender="bob@example.net", **kw)
    return result


def inbox(store, acct):
    return store.mailbox(acct.id, "INBOX")


def files(store, acct, box):
    """``{stem: (bits, path)}`` of the box's files on disk (Maildir stores only)."""
    return {s: (b, p) for s, b, p in store.blobs.stored(acct.maildir_key, box.folder)}


def on_disk(store):
    return isinstance(store.blobs, Maildir)


# --- accounts ---------------------------------------------------------------

def test_account_has_default_mailboxes_with_roles(store, alice):
    boxes = {b.name: b.role for b in store.mailboxes(alice.id)}
    assert boxes == {"INBOX": "inbox", "Drafts": "drafts", "Sent": "sent",
                     "Archive": "archive", "Junk": "junk", "Trash": "trash"}
    for b in store.mailboxes(alice.id):
        assert b.uidnext == 1 and b.highestmodseq >= 1 and b.uidvalidity > 0
    assert store.mailbox(alice.id, role="trash").name == "Trash"


def test_account_lookup_is_case_insensitive_and_unique(store, alice):
    assert store.account("Alice@EXAMPLE.org").id == alice.id
    assert store.account("nobody@example.org") is None
    assert store.account("not an address") is None
    with pytest.raises(AccountExists):
        store.add_account("ALICE@example.org")
    with pytest.raises(InvalidName):
        store.add_account("no-at-sign")
    store.add_account("bob@example.org")
    assert [a.address for a in store.accounts()] == ["alice@example.org", "bob@example.org"]


def test_password_quota_and_delete(store, delivery, alice):
    store.set_password("alice@example.org", "other")
    store.set_quota("alice@example.org", 12345)
    acct = store.account("alice@example.org")
    assert (acct.password_hash, acct.quota_bytes) == ("other", 12345)
    assert put(delivery, msg(1)).ok
    store.add_alias("al@example.org", "alice@example.org")
    store.delete_account("alice@example.org")
    assert store.account("alice@example.org") is None
    assert store.resolve("al@example.org") == []
    assert store.aliases() == []
    # The address can be used again, starting empty.
    again = store.add_account("alice@example.org")
    assert store.uids(inbox(store, again).id) == []


# --- aliases ----------------------------------------------------------------

def _resolved(store, address):
    return [(a.address, detail) for a, detail in store.resolve(address)]


def test_alias_detail_and_catch_all(store, alice):
    store.add_account("bob@example.org")
    store.add_alias("team@example.org", "alice@example.org")
    store.add_alias("team@example.org", "bob@example.org")
    store.add_alias("@example.org", "bob@example.org")
    assert _resolved(store, "alice@example.org") == [("alice@example.org", None)]
    assert _resolved(store, "Alice+Lists@example.org") == [("alice@example.org", "lists")]
    assert sorted(_resolved(store, "team@example.org")) == [("alice@example.org", None),
                                                            ("bob@example.org", None)]
    assert sorted(_resolved(store, "team+x@example.org")) == [("alice@example.org", "x"),
                                                              ("bob@example.org", "x")]
    # The catch-all takes unknown locals of its domain, not existing accounts.
    assert _resolved(store, "whoever@example.org") == [("bob@example.org", None)]
    assert _resolved(store, "whoever@other.example") == []
    with pytest.raises(Conflict):
        store.add_alias("team@example.org", "bob@example.org")
    store.delete_alias("@example.org")
    assert _resolved(store, "whoever@example.org") == []


def test_alias_loops_and_chains(store, alice):
    store.add_alias("x@example.org", "y@example.org")
    store.add_alias("y@example.org", "x@example.org")
    assert _resolved(store, "x@example.org") == []
    store.add_alias("y@example.org", "alice@example.org")
    assert _resolved(store, "x@example.org") == [("alice@example.org", None)]
    # A long chain ends in the account; deeper than the limit ends nowhere.
    for i in range(3):
        store.add_alias(f"c{i}@example.org", f"c{i + 1}@example.org")
    store.add_alias("c3@example.org", "alice@example.org")
    assert _resolved(store, "c0@example.org") == [("alice@example.org", None)]
    for i in range(20):
        store.add_alias(f"d{i}@example.org", f"d{i + 1}@example.org")
    store.add_alias("d20@example.org", "alice@example.org")
    assert _resolved(store, "d0@example.org") == []


def test_detail_delivery_uses_existing_folder(store, delivery, alice):
    lists = store.create_mailbox(alice.id, "Lists")
    assert put(delivery, msg(1), "alice+lists@example.org").ok
    assert put(delivery, msg(2), "alice+nosuch@example.org").ok
    assert len(store.uids(lists.id)) == 1
    assert len(store.uids(inbox(store, alice).id)) == 1


# --- mailboxes --------------------------------------------------------------

def test_create_with_parents_and_names(store, alice):
    box = store.create_mailbox(alice.id, "Work/Projects/Roost")
    names = {b.name for b in store.mailboxes(alice.id)}
    assert {"Work", "Work/Projects", "Work/Projects/Roost"} <= names
    assert box.name == "Work/Projects/Roost" and box.oid == f"M{box.id}"
    with pytest.raises(MailboxExists):
        store.create_mailbox(alice.id, "Work")
    for bad in ("", "a//b", "/a", "a/", "bad\x01name"):
        with pytest.raises(InvalidName):
            store.create_mailbox(alice.id, bad)
    with pytest.raises(Conflict):
        store.create_mailbox(alice.id, "Bin", role="trash")
    assert store.mailbox(alice.id, "inbox").name == "INBOX"
    if on_disk(store):
        assert os.path.isdir(store.blobs.folder_path(alice.maildir_key, box.folder) + "/cur")


def test_rename_with_children(store, delivery, alice):
    store.create_mailbox(alice.id, "Work/Old")
    work = store.mailbox(alice.id, "Work")
    child = store.mailbox(alice.id, "Work/Old")
    append(delivery, alice, child, msg(1))
    assert len(store.uids(child.id)) == 1
    uidvalidity = child.uidvalidity
    store.rename_mailbox(alice.id, work.id, "Jobs/Past")
    names = {b.name for b in store.mailboxes(alice.id)}
    assert {"Jobs", "Jobs/Past", "Jobs/Past/Old"} <= names
    assert "Work" not in names and "Work/Old" not in names
    moved = store.mailbox(alice.id, "Jobs/Past/Old")
    assert moved.id == child.id and moved.uidvalidity == uidvalidity
    assert store.read(moved.id, 1).endswith(msg(1))
    with pytest.raises(Conflict):
        store.rename_mailbox(alice.id, work.id, "Jobs/Past/Inner")
    with pytest.raises(MailboxExists):
        store.rename_mailbox(alice.id, work.id, "Sent")
    if on_disk(store):
        assert os.path.isdir(store.blobs.folder_path(alice.maildir_key, moved.folder) + "/cur")
        assert not os.path.exists(store.blobs.folder_path(alice.maildir_key, child.folder))


def test_rename_inbox_moves_messages(store, delivery, alice):
    for n in range(3):
        assert put(delivery, msg(n)).ok
    box = inbox(store, alice)
    old = store.rename_mailbox(alice.id, box.id, "Old Inbox")
    assert len(store.uids(old.id)) == 3
    assert store.uids(box.id) == []
    assert inbox(store, alice).role == "inbox"
    data = [store.read(old.id, u) for u in store.uids(old.id)]
    assert all(b"Delivered-To: alice@example.org" in d for d in data)


def test_delete_mailbox_keeps_children(store, delivery, alice):
    store.create_mailbox(alice.id, "A/B")
    a = store.mailbox(alice.id, "A")
    assert put(delivery, msg(1), "alice+a@example.org").ok
    used = store.account("alice@example.org").used_bytes
    assert used > 0
    store.delete_mailbox(alice.id, a.id)
    names = {b.name for b in store.mailboxes(alice.id)}
    assert "A" not in names and "A/B" in names
    assert store.account("alice@example.org").used_bytes == 0
    with pytest.raises(Conflict):
        store.delete_mailbox(alice.id, inbox(store, alice).id)
    with pytest.raises(MailboxNotFound):
        store.mailbox(alice.id, mailbox_id=a.id)


def test_subscriptions(store, alice):
    box = store.create_mailbox(alice.id, "News")
    assert not box.subscribed                       # CREATE subscribes nothing
    assert "INBOX" in store.subscriptions(alice.id)   # the defaults are
    before = store.state(alice.id)
    store.set_subscribed(alice.id, box.id, True)
    assert store.mailbox(alice.id, "News").subscribed
    assert "News" in store.subscriptions(alice.id)
    assert store.state(alice.id) > before           # a Mailbox change (JMAP isSubscribed)
    store.set_subscribed(alice.id, box.id, False)
    assert not store.mailbox(alice.id, "News").subscribed
    with pytest.raises(MailboxNotFound):
        store.set_subscribed(alice.id, 999999, True)
    # names, independent of mailboxes
    store.subscribe(alice.id, "Later/Maybe")
    store.subscribe(alice.id, "Later/Maybe")        # twice is once
    store.subscribe(alice.id, "Never", False)       # not subscribed: nothing to do
    assert "Later/Maybe" in store.subscriptions(alice.id)
    made = store.create_mailbox(alice.id, "Later/Maybe")
    assert store.mailbox(alice.id, mailbox_id=made.id).subscribed
    store.subscribe(alice.id, "Later")
    store.rename_mailbox(alice.id, store.mailbox(alice.id, "Later").id, "Then")
    subs = store.subscriptions(alice.id)
    assert "Then" in subs and "Then/Maybe" in subs and not any(n.startswith("Later") for n in subs)
    store.delete_mailbox(alice.id, made.id)
    assert "Then/Maybe" in store.subscriptions(alice.id)   # DELETE keeps it


def test_recent_claims(store, alice):
    box = inbox(store, alice)
    assert store.claim_recent(box.id, 5) == 0       # the first claims 1..5
    assert store.claim_recent(box.id, 5) == 5       # nothing left for the next
    assert store.claim_recent(box.id, 8) == 5       # 6..8
    assert store.recent_floor(box.id) == 8


# --- delivery and reading -----------------------------------------------------

def test_delivery_assigns_uids_and_modseqs(store, delivery, alice):
    box = inbox(store, alice)
    results = [put(delivery, msg(n)) for n in range(3)]
    assert [r.status for r in results] == [dv.DELIVERED] * 3
    assert [r.stored[0].uid for r in results] == [1, 2, 3]
    recs = store.records(box.id)
    assert [r.uid for r in recs] == [1, 2, 3]
    assert recs[0].modseq < recs[1].modseq < recs[2].modseq
    now = store.mailbox(alice.id, "INBOX", counts=True)
    assert (now.uidnext, now.messages, now.unseen) == (4, 3, 3)
    assert now.highestmodseq == recs[2].modseq
    assert store.read(box.id, 2).endswith(msg(1))
    assert store.read_message(alice.id, recs[0].message_id).endswith(msg(0))
    assert len({r.message_id for r in recs}) == 3
    assert store.account("alice@example.org").used_bytes == sum(r.size for r in recs)
    if on_disk(store):
        stems = files(store, alice, box)
        assert len(stems) == 3
        for stem, (_bits, path) in stems.items():
            assert f",S={os.path.getsize(path)}" in stem


def test_unknown_recipient(store, delivery, alice):
    assert put(delivery, msg(1), "nobody@example.org").status == dv.NO_SUCH_USER


# --- flags ------------------------------------------------------------------

def test_flags_add_remove_replace(store, delivery, alice):
    box = inbox(store, alice)
    for n in range(3):
        put(delivery, msg(n))
    changed, failed = store.store_flags(box.id, [1, 2], ["\\Seen", "$Label1"], "add")
    assert [c[0] for c in changed] == [1, 2] and failed == []
    m1 = changed[0][1]
    assert all(c[1] == m1 for c in changed)
    flags = {u: (b, k) for u, _m, b, k in store.flags(box.id)}
    assert flags[1] == (fl.SEEN, ("$Label1",)) and flags[3] == (0, ())
    # Adding what is there changes nothing and takes no MODSEQ.
    assert store.store_flags(box.id, [1], ["\\seen", "$label1"], "add") == ([], [])
    changed, _ = store.store_flags(box.id, [1], ["$Label1"], "remove")
    assert changed[0][2:] == (fl.SEEN, ())
    changed, _ = store.store_flags(box.id, [2], ["\\Flagged", "\\Deleted", "Work"], "replace")
    assert changed[0][2:] == (fl.FLAGGED | fl.DELETED, ("Work",))
    assert [u for u, *_ in store.flags(box.id, changed_since=m1)] == [1, 2]
    assert store.mailbox(alice.id, "INBOX", counts=True).unseen == 2
    assert store.mailbox(alice.id, "INBOX").highestmodseq == changed[0][1]
    if on_disk(store):
        infos = sorted(os.path.basename(p).rpartition(":2,")[2]
                       for _b, p in files(store, alice, box).values())
        assert infos == ["", "FT", "S"]


def test_flags_unchanged_since(store, delivery, alice):
    box = inbox(store, alice)
    put(delivery, msg(1))
    put(delivery, msg(2))
    ms = {u: m for u, m, _b, _k in store.flags(box.id)}
    changed, failed = store.store_flags(box.id, [1, 2], ["\\Answered"], "add",
                                        unchanged_since=ms[1])
    assert [c[0] for c in changed] == [1] and failed == [2]
    changed, failed = store.store_flags(box.id, [1], ["\\Seen"], "add", unchanged_since=ms[1])
    assert changed == [] and failed == [1]


# --- copy, move, expunge --------------------------------------------------------

def test_copy_shares_message_and_hard_links(store, delivery, alice):
    box = inbox(store, alice)
    archive = store.mailbox(alice.id, "Archive")
    for n in range(2):
        put(delivery, msg(n))
    store.store_flags(box.id, [1], ["\\Seen", "Kw"], "add")
    uidvalidity, pairs = store.copy(box.id, [1, 2], archive.id)
    assert uidvalidity == archive.uidvalidity and pairs == [(1, 1), (2, 2)]
    src, dst = store.records(box.id), store.records(archive.id)
    assert [r.message_id for r in src] == [r.message_id for r in dst]
    assert dst[0].bits == fl.SEEN and dst[0].keywords == ("Kw",)
    assert store.read(archive.id, 1) == store.read(box.id, 1)
    used = store.account("alice@example.org").used_bytes
    assert used == sum(r.size for r in src)   # counted once
    if on_disk(store):
        a, b = files(store, alice, box), files(store, alice, archive)
        assert a.keys() == b.keys()
        for stem in a:
            assert os.stat(a[stem][1]).st_ino == os.stat(b[stem][1]).st_ino
            assert os.stat(a[stem][1]).st_nlink == 2


def test_move_and_expunge_log(store, delivery, alice):
    box = inbox(store, alice)
    trash = store.mailbox(alice.id, "Trash")
    for n in range(3):
        put(delivery, msg(n))
    before = store.mailbox(alice.id, "INBOX").highestmodseq
    uidvalidity, pairs = store.move(box.id, [2], trash.id)
    assert pairs == [(2, 1)]
    assert store.uids(box.id) == [1, 3]
    assert store.expunged_since(box.id, before) == [2]
    assert store.expunged_since(box.id, store.mailbox(alice.id, "INBOX").highestmodseq) == []
    assert store.read(trash.id, 1).endswith(msg(1))
    if on_disk(store):
        assert len(files(store, alice, box)) == 2 and len(files(store, alice, trash)) == 1
        (_b, path), = files(store, alice, trash).values()
        assert os.stat(path).st_nlink == 1


def test_expunge_deleted_only(store, delivery, alice):
    box = inbox(store, alice)
    for n in range(4):
        put(delivery, msg(n))
    store.store_flags(box.id, [1, 3, 4], ["\\Deleted"], "add")
    before = store.mailbox(alice.id, "INBOX").highestmodseq
    assert store.expunge(box.id, uids=[1, 2, 3]) == [1, 3]
    assert store.uids(box.id) == [2, 4]
    assert store.expunge(box.id) == [4]
    assert store.uids(box.id) == [2]
    assert store.expunged_since(box.id, before) == [1, 3, 4]
    assert store.expunge(box.id) == []
    recs = store.records(box.id)
    assert store.account("alice@example.org").used_bytes == recs[0].size
    assert store.mailbox(alice.id, "INBOX").uidnext == 5   # UIDs are never reused
    assert put(delivery, msg(9)).stored[0].uid == 5
    if on_disk(store):
        assert len(files(store, alice, box)) == 2


def test_expunge_keeps_message_held_elsewhere(store, delivery, alice):
    box = inbox(store, alice)
    archive = store.mailbox(alice.id, "Archive")
    put(delivery, msg(1))
    store.copy(box.id, [1], archive.id)
    mid = store.records(box.id)[0].message_id
    since = store.state(alice.id, "Email")
    store.store_flags(box.id, [1], ["\\Deleted"], "add")
    store.expunge(box.id)
    assert store.read_message(alice.id, mid).endswith(msg(1))
    assert store.account("alice@example.org").used_bytes == store.records(archive.id)[0].size
    ops = {op for _m, oid, op in store.changes(alice.id, "Email", since) if oid == mid}
    assert ops == {"u"}
    store.remove(archive.id, [1])
    ops = [op for _m, oid, op in store.changes(alice.id, "Email", since) if oid == mid]
    assert ops[-1] == "d"
    assert store.account("alice@example.org").used_bytes == 0


# --- MODSEQ, state and the change log -------------------------------------------

def test_state_and_changes(store, delivery, alice):
    s0 = store.state(alice.id)
    e0 = store.state(alice.id, "Email")
    r = put(delivery, msg(1))
    mid = r.stored[0].message_id
    s1 = store.state(alice.id)
    assert s1 > s0 and store.state(alice.id, "Email") == s1
    box = inbox(store, alice)
    store.store_flags(box.id, [1], ["\\Seen"], "add")
    s2 = store.state(alice.id)
    assert s2 > s1
    store.create_mailbox(alice.id, "Fresh")
    assert store.state(alice.id, "Mailbox") > s2
    assert store.state(alice.id, "Email") == s2
    got = store.changes(alice.id, "Email", e0)
    assert [(oid, op) for _m, oid, op in got] == [(mid, "c"), (mid, "u")]
    assert [m for m, _o, _p in got] == sorted(m for m, _o, _p in got)
    assert store.changes(alice.id, "Email", e0, limit=1) == got[:1]
    assert store.changes(alice.id, "Email", s2) == []
    threads = store.changes(alice.id, "Thread", e0)
    assert threads and threads[0][2] == "c"


def test_modseq_is_per_account(store, delivery, alice):
    bob = store.add_account("bob@example.org")
    a0, b0 = store.state(alice.id), store.state(bob.id)
    put(delivery, msg(1), "bob@example.org")
    assert store.state(alice.id) == a0 and store.state(bob.id) > b0


# --- threads ------------------------------------------------------------------

def _thread(store, acct, uid):
    return store.records(inbox(store, acct).id, [uid])[0].thread_id


def test_threads_by_references(store, delivery, alice):
    put(delivery, msg(1, "Plans", "p@x"))
    put(delivery, msg(2, "Re: Plans", "r1@x", refs=["p@x"]))
    put(delivery, msg(3, "Re: Re: Plans", "r2@x", refs=["p@x", "r1@x"]))
    put(delivery, msg(4, "Other", "o@x"))
    put(delivery, msg(5, "Whatever", "r3@x", in_reply_to="r2@x"))
    t = [_thread(store, alice, u) for u in range(1, 6)]
    assert t[0] == t[1] == t[2] == t[4] and t[3] != t[0]


def test_threads_out_of_order(store, delivery, alice):
    put(delivery, msg(1, "Re: Trip", "child@x", refs=["root@x", "mid@x"]))
    put(delivery, msg(2, "Re: Trip", "mid@x", refs=["root@x"]))
    put(delivery, msg(3, "Trip", "root@x"))
    t = {_thread(store, alice, u) for u in (1, 2, 3)}
    assert len(t) == 1


def test_threads_subject_fallback(store, delivery, alice):
    put(delivery, msg(1, "Lunch?", "l@x"))
    put(delivery, msg(2, "RE: [team] Lunch?", "l2@x"))
    put(delivery, msg(3, "Fwd: Lunch?", "l3@x"))
    put(delivery, msg(4, "Lunch?", "l4@x"))       # not a reply: a new thread
    put(delivery, msg(5, "Dinner", "d@x"))
    t = [_thread(store, alice, u) for u in range(1, 6)]
    assert t[0] == t[1] == t[2]
    assert t[3] != t[0] and t[4] not in (t[0], t[3])


# --- quota and dedupe -----------------------------------------------------------

def test_quota(store, delivery, alice):
    small = msg(1)
    store.set_quota("alice@example.org", 3 * len(small) + 200)
    assert [put(delivery, msg(n)).status for n in range(1, 4)] == [dv.DELIVERED] * 3
    r = put(delivery, msg(4))
    assert r.status == dv.OVER_QUOTA and not r.stored
    box = inbox(store, alice)
    assert len(store.uids(box.id)) == 3
    acct = store.account("alice@example.org")
    with pytest.raises(QuotaExceeded):
        append(delivery, acct, box, msg(5))
    store.store_flags(box.id, [1], ["\\Deleted"], "add")
    store.expunge(box.id)
    assert put(delivery, msg(6)).status == dv.DELIVERED
    if on_disk(store):
        assert len(files(store, alice, box)) == 3
        assert store.blobs.staged(alice.maildir_key, box.folder) == []


def test_dedupe_window(store, alice):
    d = dv.Delivery(store, dedupe_window=3600)
    try:
        first = put(d, msg(1))
        second = put(d, msg(1))
        assert (first.status, second.status) == (dv.DELIVERED, dv.DUPLICATE)
        assert second.stored[0].uid == first.stored[0].uid
        assert put(d, msg(1, body="changed")).status == dv.DELIVERED   # other content
        assert put(d, msg(1), "alice+archive@example.org").status == dv.DELIVERED  # other mailbox
        box = inbox(store, alice)
        assert len(store.uids(box.id)) == 2
        if on_disk(store):
            assert len(files(store, alice, box)) == 2
            assert store.blobs.staged(alice.maildir_key, box.folder) == []
    finally:
        d.close()
    d = dv.Delivery(store, dedupe_window=0)
    try:
        assert put(d, msg(1)).status == dv.DELIVERED
        assert len(store.uids(inbox(store, alice).id)) == 3
    finally:
        d.close()


def test_append_flags_and_internal_date(store, delivery, alice):
    box = store.mailbox(alice.id, "Drafts")
    stored = append(delivery, alice, box, msg(1), flags=["\\Draft", "\\Seen", "$Todo"],
                             internal_date=1_000_000_000.0)
    (rec,) = store.records(box.id)
    assert rec.uid == stored.uid and rec.internal_date == 1_000_000_000.0
    assert rec.bits == fl.DRAFT | fl.SEEN and rec.keywords == ("$Todo",)
    assert store.read(box.id, rec.uid) == msg(1)   # APPEND stores bytes as given
