"""The store's boundary: one flag rule, one delivery entry, blob reads by
location (no directory listing), thread merging, and ``fsck --rebuild``
keeping keywords and hard-linked copies. Runs over every store implementation
where the behaviour is not Maildir-specific."""

import os

import pytest

from roost.storage import delivery as dv
from roost.storage import emails, fsck
from roost.storage import flags as fl
from roost.storage.errors import MailboxNotFound
from roost.storage.maildir import Maildir, file_name
from roost.storage.store import Store
from tests.conftest import append, deliver
from tests.unit.test_store import alice, delivery, inbox, msg, on_disk, store  # noqa: F401 - fixtures


def _changes(store, acct, kind, since):
    return store.changes(acct.id, kind, since)


def test_imap_store_and_jmap_keywords_share_one_rule(store, delivery, alice):
    box = inbox(store, alice)
    a = append(delivery, alice, box, msg(1))
    b = append(delivery, alice, box, msg(2))
    start = store.state(alice.id)
    # IMAP STORE +FLAGS (\Seen): the unread count moves, so Mailbox changes too
    changed, failed = store.store_flags(box.id, [a.uid], ["\\Seen"], "add")
    assert failed == [] and [c[0] for c in changed] == [a.uid]
    m1 = changed[0][1]
    assert m1 == start + 1
    assert _changes(store, alice, "Mailbox", start) == [(m1, box.id, "u")]
    # JMAP keywords replace on the other message, keeping \Seen-less bits: only Email changes
    emails.change_messages(store, alice.id, {b.message_id: emails.MessageChange(replace=["$Todo"])})
    m2 = store.state(alice.id)
    assert m2 == m1 + 1
    assert [c[1] for c in _changes(store, alice, "Email", m1)] == [b.message_id]
    assert _changes(store, alice, "Mailbox", m1) == []
    flags = {uid: (bits, kw) for uid, _m, bits, kw in store.flags(box.id)}
    assert flags == {a.uid: (fl.SEEN, ()), b.uid: (0, ("$Todo",))}
    assert store.mailbox(box.account_id, mailbox_id=box.id).highestmodseq == m2
    # CONDSTORE: a message changed since the client's MODSEQ is refused
    changed, failed = store.store_flags(box.id, [a.uid, b.uid], ["\\Flagged"], "add", unchanged_since=m1)
    assert failed == [b.uid] and [c[0] for c in changed] == [a.uid]
    if on_disk(store):   # both routes renamed the file to mirror the system flags
        names = sorted(n for n in os.listdir(os.path.join(store.blobs.folder_path(alice.maildir_key, ""), "cur")))
        assert sorted(n.rsplit(":2,", 1)[1] for n in names) == ["", "FS"]


def test_one_message_in_several_mailboxes_is_one_transaction(store, delivery, alice):
    box, archive = inbox(store, alice), store.mailbox(alice.id, "Archive")
    before = store.state(alice.id)
    (result,) = delivery.store(dv.Incoming(msg(1), account=alice, mailboxes=(box, archive),
                                           flags=("\\Seen", "$Later")))
    stored = result.stored_or_raise()
    assert store.state(alice.id) == before + 1   # one MODSEQ: one transaction
    info = emails.get_messages(store, alice.id, [stored.message_id])[stored.message_id]
    assert sorted(m.mailbox_id for m in info.memberships) == sorted([box.id, archive.id])
    assert all(m.bits == fl.SEEN and m.keywords == ("$Later",) for m in info.memberships)
    assert [c for c in store.changes(alice.id, "Email", before) if c[2] == "c"] == \
        [(before + 1, stored.message_id, "c")]
    for b in (box, archive):
        (rec,) = store.records(b.id)
        assert store.read(b.id, rec.uid) == msg(1)
    if on_disk(store):
        inodes = {os.stat(p).st_ino for b in (box, archive)
                  for _s, _b, p in store.blobs.stored(alice.maildir_key, b.folder)}
        assert len(inodes) == 1   # hard-linked, not copied


def test_delivery_statuses_map_to_typed_errors(store, delivery, alice):
    gone = store.create_mailbox(alice.id, "Gone")
    store.delete_mailbox(alice.id, gone.id)
    (result,) = delivery.store(dv.Incoming(msg(1), account=alice, mailboxes=(gone,)))
    assert result.status is dv.NO_SUCH_MAILBOX
    with pytest.raises(MailboxNotFound):
        result.stored_or_raise()
    (nobody,) = deliver(delivery, msg(2), ["nobody@example.org"])
    assert nobody.status is dv.NO_SUCH_USER and not nobody.ok


def test_a_message_linking_two_threads_merges_them(store, delivery, alice):
    box = inbox(store, alice)
    first = append(delivery, alice, box, msg(1, subject="apples", msgid="a@x"))
    second = append(delivery, alice, box, msg(2, subject="pears", msgid="b@x"))
    got = emails.get_messages(store, alice.id, [first.message_id, second.message_id])
    t1, t2 = got[first.message_id].thread_id, got[second.message_id].thread_id
    assert t1 != t2
    since = store.state(alice.id)
    third = append(delivery, alice, box, msg(3, subject="Re: both", msgid="c@x", refs=["a@x", "b@x"]))
    got = emails.get_messages(store, alice.id, [first.message_id, second.message_id, third.message_id])
    assert {m.thread_id for m in got.values()} == {min(t1, t2)}
    moved = second.message_id if t2 > t1 else first.message_id
    assert (since + 1, moved, "u") in store.changes(alice.id, "Email", since)
    assert (since + 1, max(t1, t2), "d") in store.changes(alice.id, "Thread", since)
    assert emails.thread_messages(store, alice.id, [max(t1, t2)]) == {}
    # a later reply to the merged thread's old message id lands in the merged thread
    fourth = append(delivery, alice, box, msg(4, subject="Re: pears", msgid="d@x", refs=["b@x"]))
    assert emails.get_messages(store, alice.id, [fourth.message_id])[fourth.message_id].thread_id == min(t1, t2)


def _forbid_listing(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("a read listed a directory")
    monkeypatch.setattr(os, "listdir", refuse)
    monkeypatch.setattr(os, "scandir", refuse)


def test_reads_open_the_named_file_and_read_only_the_range(tmp_path, monkeypatch):
    store = Store.open(str(tmp_path / "data"))
    d = dv.Delivery(store)
    try:
        acct = store.add_account("alice@example.org")
        box = inbox(store, acct)
        data = msg(1, body="x" * 5000)
        stored = append(d, acct, box, data, flags=["\\Seen"])
        cur = os.path.join(store.blobs.folder_path(acct.maildir_key, ""), "cur")
        (name,) = os.listdir(cur)
        # a crash between a commit and its rename leaves the old info suffix
        stem = name.split(":2,")[0]
        os.rename(os.path.join(cur, name), os.path.join(cur, file_name(stem, fl.FLAGGED)))
        opened = []
        real_open = open

        def tracking_open(path, *a, **k):
            opened.append(path)
            return real_open(path, *a, **k)
        _forbid_listing(monkeypatch)
        monkeypatch.setattr("builtins.open", tracking_open)
        assert store.read(box.id, stored.uid) == data
        assert store.read(box.id, stored.uid, 100, 110) == data[100:110]
        assert store.read_message(acct.id, stored.message_id, len(data) - 3) == data[-3:]
        monkeypatch.undo()
        assert len(opened) <= 3 * 34 and all(p.startswith(cur) for p in opened)   # bounded probes
        store.close()
        store = Store.open(str(tmp_path / "data"))
        report = fsck.check(store, repair=True)
        assert "alice@example.org: INBOX: 1 file names do not mirror flags (renamed)" in report
        assert os.listdir(cur) == [file_name(stem, fl.SEEN)]
        opened.clear()
        _forbid_listing(monkeypatch)
        monkeypatch.setattr("builtins.open", tracking_open)
        assert store.read(box.id, stored.uid, 0, 4) == data[:4]
        monkeypatch.undo()
        assert opened == [os.path.join(cur, file_name(stem, fl.SEEN))]   # the named file, first time
    finally:
        d.close()


def test_rebuild_keeps_keywords_and_hard_linked_copies(tmp_path):
    data_dir = tmp_path / "data"
    store = Store.open(str(data_dir))
    d = dv.Delivery(store)
    acct = store.add_account("alice@example.org")
    box, archive = inbox(store, acct), store.mailbox(acct.id, "Archive")
    one = append(d, acct, box, msg(1), flags=["$Todo"])
    two = append(d, acct, box, msg(2), flags=["\\Seen"])
    store.store_flags(box.id, [one.uid], ["$Later", "\\Flagged"], "add")
    store.store_flags(box.id, [two.uid], ["$Junk"], "add")
    store.store_flags(box.id, [two.uid], ["$Junk"], "remove")
    store.copy(box.id, [one.uid], archive.id)
    emails.change_messages(store, acct.id, {one.message_id: emails.MessageChange(add=["$Shared"])})
    d.close()
    store.close()
    for name in os.listdir(data_dir):
        if name.startswith("roost.db"):
            os.unlink(data_dir / name)
    store = Store.open(str(data_dir))
    try:
        fsck.rebuild(store)
        acct = store.account("alice@example.org")
        box, archive = inbox(store, acct), store.mailbox(acct.id, "Archive")
        by_body = {}
        for b in (box, archive):
            for rec in store.records(b.id):
                by_body.setdefault(store.read(b.id, rec.uid), []).append((b.name, rec))
        copies = by_body[msg(1)]
        assert sorted(n for n, _r in copies) == ["Archive", "INBOX"]
        assert len({r.message_id for _n, r in copies}) == 1   # one message in two mailboxes
        for _n, r in copies:
            assert r.bits == fl.FLAGGED and set(r.keywords) == {"$Todo", "$Later", "$Shared"}
        ((_n, rec2),) = by_body[msg(2)]
        assert rec2.bits == fl.SEEN and rec2.keywords == ()
        assert store.account_by_id(acct.id).used_bytes == len(msg(1)) + len(msg(2))
        assert fsck.check(store, repair=True)[-1] == "store is consistent"
    finally:
        store.close()


def test_maildir_probe_is_bounded():
    blobs = Maildir("/nonexistent")
    from roost.storage.blobs import BlobRef
    paths = list(blobs._candidates(BlobRef("d/l", "", "stem", fl.SEEN)))
    assert len(paths) == len(set(paths)) == 34
    assert paths[0].endswith("/cur/stem:2,S")
