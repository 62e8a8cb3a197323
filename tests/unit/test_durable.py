"""storage.durable: the writer lock across processes, and shared WAL fsyncs."""

import os
import subprocess
import sys
import threading
import time

from roost.storage import durable
from roost.storage.store import Store


def test_writer_lock_excludes_another_process(tmp_path):
    lock = durable.WriterLock(str(tmp_path / "db.lock"))
    code = ("import sys, time; from roost.storage import durable\n"
            "with durable.WriterLock(sys.argv[1]):\n"
            "    print('held', flush=True); time.sleep(0.5)\n"
            "    open(sys.argv[2], 'w').close()\n")
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "db.lock"),
                              str(tmp_path / "child-done")], stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"held\n"
    with lock:      # waits for the child to let go
        assert (tmp_path / "child-done").exists()
    assert child.wait(10) == 0
    child.stdout.close()


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


def test_a_zombie_writer_is_gone_and_a_live_one_is_not():
    live = subprocess.Popen(["sleep", "30"])
    dead = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while not durable.process_gone(dead.pid):   # not reaped: a zombie, still "there" to kill(0)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(dead.pid, 0)
        assert not durable.process_gone(live.pid)
        assert durable.process_gone(os.getpid())    # our own pid in old work is a reused one
    finally:
        live.kill()
        live.wait()
        dead.wait()
