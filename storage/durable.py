"""Who may write the SQLite database, and when a commit is on disk.

Two things decide how many writes per second one data directory takes, and
both are here:

- **The writer lock.** SQLite has one writer at a time. Inside a process a
  thread lock orders the writers (``BEGIN IMMEDIATE`` alone would leave them
  to SQLite's busy handler, which sleeps 1, 2, 5, 10... ms between tries);
  across processes (the server's workers, ``roost deliver``, ``roost import``)
  an ``flock`` on ``roost.db.lock`` does the same, and the kernel wakes the
  next waiter the moment the holder lets go. The holder keeps it only for
  the transaction's statements and its commit, never for an fsync.
- **The durability barrier.** Connections run ``synchronous=NORMAL``: a
  commit writes its WAL frames (so it survives ``kill -9`` at once) but does
  not fsync them. Before a write is acknowledged, ``WalSync.sync`` makes sure
  an fsync of the WAL file began after that commit was written, and the
  fsyncs of concurrent writers are shared: while one runs, every commit that
  finishes joins the next one. Many writes in one process, or across
  processes, then cost one fsync each round instead of one each, with every
  acknowledged write on disk as ``synchronous=FULL`` would have it.

Measured with ``python -m bench.mixed`` (10 clients, each on its own mailbox;
one process): with ``synchronous=FULL`` inside the lock, 243 commands/s,
APPEND 95 ms and STORE 38 ms mean; with the lock held only for the commit and
the fsyncs shared, the figures in this module's commit message.
"""

import fcntl
import os
import threading


class WriterLock:
    """A re-entrant lock over threads of this process and over processes."""

    def __init__(self, path):
        self.path = path
        self._thread = threading.RLock()
        self._depth = 0
        self._fd = None
        self._pid = None

    def _file(self):
        if self._pid != os.getpid():          # after a fork: a lock file of our own
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = os.getpid()
        return self._fd

    def __enter__(self):
        self._thread.acquire()
        if self._depth == 0:
            try:
                fcntl.flock(self._file(), fcntl.LOCK_EX)
            except BaseException:
                self._thread.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread.release()
        return False


class WalSync:
    """Shared fsyncs of a WAL file: ``sync()`` after a commit returns once
    that commit is on disk."""

    def __init__(self, wal_path):
        self.path = wal_path
        self._count = threading.Lock()
        self._fsync = threading.Lock()
        self._committed = 0     # commits registered by sync()
        self._synced = 0        # of those, the ones known to be on disk
        self.fsyncs = 0

    def sync(self):
        with self._count:
            self._committed += 1
            mine = self._committed
        with self._fsync:
            if self._synced >= mine:
                return          # an fsync that began after our commit covered it
            with self._count:
                covered = self._committed
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                pass            # the last connection checkpointed (with fsync) and removed it
            else:
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
                self.fsyncs += 1
            self._synced = covered


def process_gone(pid):
    """Is process ``pid`` dead (or a zombie nobody reaped), so that what it
    staged or owed will never be finished by it? This process counts as gone:
    at start-up a pid of ours in old work is a reused one."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False
