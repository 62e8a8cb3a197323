"""Named leases (``storage.leases``): one holder at a time, renewal, expiry
and release, on the store's in-memory database and a file database shared
by two Store objects (as two processes share one)."""

import time

from roost.storage.store import Store


def test_one_holder_renewal_expiry_and_release():
    store = Store.memory()
    try:
        assert store.take_lease("pop3:1", "a:1", 60)
        assert store.take_lease("pop3:1", "a:1", 60)           # one's own again: renewed
        assert not store.take_lease("pop3:1", "b:1", 60)
        assert store.take_lease("pop3:2", "b:1", 60)           # another name is free
        assert store.renew_lease("pop3:1", "a:1", 60)
        assert not store.renew_lease("pop3:1", "b:1", 60)
        store.release_lease("pop3:1", "b:1")                   # not b's: nothing happens
        assert store.lease_holder("pop3:1")[0] == "a:1"
        store.release_lease("pop3:1", "a:1")
        assert store.lease_holder("pop3:1") is None
        assert store.take_lease("pop3:1", "b:2", -1)           # taken, and already lapsed
        assert store.take_lease("pop3:1", "c:1", 60)           # ... so another may take it
        assert not store.renew_lease("pop3:1", "b:2", 60)      # b lost it
    finally:
        store.close()


def test_a_process_gives_back_its_leases_only(tmp_path):
    one, two = Store.open(str(tmp_path)), Store.open(str(tmp_path))
    try:
        assert one.take_lease("pop3:1", "host:10:ab:1", 60)
        assert one.take_lease("pop3:2", "host:10:ab:2", 60)
        assert two.take_lease("pop3:3", "host:10:abc:1", 60)   # a prefix of a prefix
        assert not two.take_lease("pop3:1", "host:11:cd:1", 60)
        one.release_leases_of("host:10:ab:")
        assert two.lease_holder("pop3:1") is None and two.lease_holder("pop3:2") is None
        holder, expires = two.lease_holder("pop3:3")
        assert holder == "host:10:abc:1" and expires > time.time()
        assert two.take_lease("pop3:1", "host:11:cd:1", 60)
        one.release_leases_of("x%_:")                          # LIKE wildcards are literal
        assert two.lease_holder("pop3:1") is not None
    finally:
        one.close()
        two.close()
