"""Store quotas (storage.quota): the MESSAGE count at delivery into several
mailboxes, COPY against MOVE, the limits' validation and DELETED-STORAGE."""

import pytest

from roost.storage.delivery import Delivery, Incoming
from roost.storage.errors import QuotaExceeded
from roost.storage.store import Store

from tests.conftest import append

MESSAGE = b"From: a@example.org\r\nSubject: q\r\nMessage-ID: <%d@x>\r\n\r\nbody\r\n"


@pytest.fixture
def env():
    store = Store.memory()
    delivery = Delivery(store)
    acct = store.add_account("q@example.org")
    yield store, delivery, acct
    delivery.close()
    store.close()


def test_delivery_into_two_mailboxes_counts_twice(env):
    store, delivery, acct = env
    inbox, archive = store.mailbox(acct.id, "INBOX"), store.mailbox(acct.id, "Archive")
    store.set_limits(acct.address, messages=1)
    (res,) = delivery.store(Incoming(MESSAGE % 1, account=acct, mailboxes=(inbox, archive)))
    with pytest.raises(QuotaExceeded):
        res.stored_or_raise()
    assert store.quota_usage(acct.id).messages == 0 and store.uids(archive.id) == []
    store.set_limits(acct.address, messages=2)
    (res,) = delivery.store(Incoming(MESSAGE % 2, account=acct, mailboxes=(inbox, archive)))
    res.stored_or_raise()
    usage = store.quota_usage(acct.id)
    assert usage.messages == 2 and usage.quota_messages == 2 and usage.used_bytes == len(MESSAGE % 2)
    with pytest.raises(QuotaExceeded):
        append(delivery, acct, inbox, MESSAGE % 3)
    # A limit of 0 lets nothing in; lowering below usage keeps what is there.
    store.set_limits(acct.address, messages=0)
    assert store.quota_usage(acct.id).messages == 2


def test_copy_refused_move_allowed(env):
    store, delivery, acct = env
    inbox, archive = store.mailbox(acct.id, "INBOX"), store.mailbox(acct.id, "Archive")
    uids = [append(delivery, acct, inbox, MESSAGE % i).uid for i in (1, 2)]
    store.set_limits(acct.address, messages=3)
    with pytest.raises(QuotaExceeded):
        store.copy(inbox.id, uids, archive.id)
    assert store.uids(archive.id) == []
    store.copy(inbox.id, uids[:1], archive.id)
    assert store.quota_usage(acct.id).messages == 3
    store.move(inbox.id, uids[1:], archive.id)
    assert len(store.uids(archive.id)) == 2 and store.quota_usage(acct.id).messages == 3


def test_limits_are_checked(env):
    store, _delivery, acct = env
    for bad in (-1, "5", 1.5):
        with pytest.raises(ValueError):
            store.set_limits(acct.address, storage=bad)
    usage = store.set_limits(acct.address, storage=1000)
    assert (usage.quota_bytes, usage.quota_messages) == (1000, None)
    usage = store.set_limits(acct.address, messages=7)       # storage is kept
    assert (usage.quota_bytes, usage.quota_messages) == (1000, 7)
    usage = store.set_limits(acct.address, storage=None)
    assert (usage.quota_bytes, usage.quota_messages) == (None, 7)


def test_deleted_storage(env):
    store, delivery, acct = env
    inbox, archive = store.mailbox(acct.id, "INBOX"), store.mailbox(acct.id, "Archive")
    first = append(delivery, acct, inbox, MESSAGE % 1)
    second = append(delivery, acct, inbox, MESSAGE % 22)
    assert store.deleted_storage(inbox.id) == 0
    store.store_flags(inbox.id, [first.uid], ["\\Deleted"], "add")
    assert store.deleted_storage(inbox.id) == len(MESSAGE % 1)
    # A second copy in the same mailbox keeps the file unless it is \Deleted too.
    (_v, [(_src, dup)]) = store.copy(inbox.id, [first.uid], inbox.id)
    store.store_flags(inbox.id, [dup], ["\\Deleted"], "remove")
    assert store.deleted_storage(inbox.id) == 0
    store.store_flags(inbox.id, [dup], ["\\Deleted"], "add")
    assert store.deleted_storage(inbox.id) == len(MESSAGE % 1)
    store.copy(inbox.id, [second.uid], archive.id)
    store.store_flags(inbox.id, [second.uid], ["\\Deleted"], "add")
    assert store.deleted_storage(inbox.id) == len(MESSAGE % 1)     # the second is also in Archive
