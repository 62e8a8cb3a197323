"""storage.durable: the writer lock across processes, and shared WAL fsyncs."""

import os
import threading
import time

from roost.storage import durable
from roost.storage.store import Store


def test_writer_lock_excludes_another_process(tmp_path):
    lock = durable.WriterLock(str(tmp_path / "db.lock"))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:    # the child holds the lock for a moment
        try:
            with lock:
                os.write(w, b"x")
                time.sleep(0.5)
                with open(tmp_path / "child-done", "w"):
                    pass
        finally:
            os._exit(0)
    os.read(r, 1)
    with lock:      # waits for the child to let go
        assert (tmp_path / "child-done").exists()
    os.waitpid(pid, 0)


def test_writer_lock_is_reentrant_in_a_thread(tmp_path):
    lock = durable.WriterLock(str(tmp_path / "db.lock"))
    with lock:
        with lock:
            pass
        got = []
        t = threading.Thread(target=lambda: (lock.__enter__(), got.append(1), lock.__exit__()))
        t.start()
        t.join(0.2)
        assert not got       # another thread still waits: the outer hold is not released
    t.join(5)
    assert got == [1]


def test_sync_returns_only_after_an_fsync_that_began_after_it(tmp_path, monkeypatch):
    wal = tmp_path / "db-wal"
    wal.write_bytes(b"frames")
    sync = durable.WalSync(str(wal))
    clock = iter(range(10**6))
    started = []
    real = os.fdatasync

    def slow_fdatasync(fd):
        started.append(next(clock))
        time.sleep(0.02)
        real(fd)
    monkeypatch.setattr(durable.os, "fdatasync", slow_fdatasync)
    done = []

    def writer():
        called = next(clock)
        sync.sync()
        done.append((called, started[:]))
    threads = [threading.Thread(target=writer) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for called, fsyncs in done:
        assert any(s > called for s in fsyncs), "returned before an fsync covering its commit"
    assert sync.fsyncs < 20     # writers that waited shared an fsync


def test_store_writes_are_on_disk_with_normal_synchronous(tmp_path):
    store = Store.open(str(tmp_path / "data"))
    try:
        with store.reader() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1     # NORMAL
        before = store._walsync.fsyncs
        store.add_account("a@example.org")
        assert store._walsync.fsyncs > before
    finally:
        store.close()
