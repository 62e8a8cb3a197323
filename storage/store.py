"""The store API: accounts, aliases, mailboxes, messages, flags, threads, changes.

``Store`` is synchronous and thread-safe; protocols call it from a thread pool
so nothing blocks the event loop. It is shaped around mail: mailboxes and
messages are addressed by ids and UIDs, never by IMAP sequence numbers.

It is assembled from the parts that own the data, one module each:
``storage.accounts`` (accounts, aliases), ``storage.mailboxes``,
``storage.messages`` (memberships, flags, copies, removal) and
``storage.changes`` (states, the change log, history) and ``storage.acl``
(grants on mailboxes, RFC 4314). Message-level reads
and writes by id are in ``storage.emails``; the few driver-level statements
of the hot paths are all in ``storage.hot``.

Transactions: ``reader()`` yields a connection for reads; ``write()`` yields a
``storage.txn.Txn`` (next MODSEQ, change log, after-commit hooks, publish).
Every write, here and in the sibling modules, runs in one; nothing outside
the store's own classes calls a private store helper (``tests/test_layout.py``
checks). On SQLite one lock serialises the writers of every process on the
data directory (``storage.durable.WriterLock``: SQLite has one writer anyway;
the lock hands it over at once and avoids lock-upgrade deadlocks), ``BEGIN
IMMEDIATE`` keeps any other program safe, and a write returns only once its
commit is on disk (``storage.durable.WalSync``: concurrent writers share
their fsyncs).

Shutdown: ``interrupt_reads()`` aborts the reads under way (``sqlite3``'s
``interrupt()``, psycopg's ``cancel()``); each fails with ``TemporaryFailure``
so a long search cannot hold the server's stop. Writes are left to finish:
a delivery in flight still commits or rolls back whole.
Schema: ``Store.open`` (and a ``Store`` on any file or server database)
upgrades an older database in place first (``storage.migrations``).

``Store.memory()`` is the in-memory implementation of the same API for fast
protocol tests: the same rules on SQLite ``:memory:`` and a dict of blobs, so
tests of the protocols exercise exactly the semantics production uses.
"""

import os
import sqlite3
import threading
from contextlib import contextmanager

from sqlalchemy.exc import DBAPIError

from .accounts import AccountsAPI, normalise_address
from .acl import AclAPI
from .blobs import MemoryBlobs
from .durable import WalSync, WriterLock
from .changes import ChangesAPI
from .imapstate import ImapStateAPI
from .mailboxes import DEFAULT_MAILBOXES, HIERARCHY, ROLES, MailboxesAPI, check_mailbox_name
from .leases import LeasesAPI
from .maildir import Maildir
from .messages import MessagesAPI
from .errors import TemporaryFailure
from .migrations import upgrade as upgrade_schema
from .model import (Account, Mailbox, MessageRecord, NewMessage, Stored, email_oid, mailbox_oid,
                    parse_oid, thread_oid)
from .notify import ChangeBus
from .metadata import MetadataAPI
from .quota import QuotaAPI
from . import reindex
from .schema import create_all, make_engine
from .search import make_backend
from .txn import Txn

# The store API in one import: the parts' records, ids and name rules.
__all__ = ["Store", "Account", "Mailbox", "MessageRecord", "NewMessage", "Stored", "DEFAULT_MAILBOXES",
           "HIERARCHY", "ROLES", "check_mailbox_name", "normalise_address", "email_oid", "mailbox_oid",
           "parse_oid", "thread_oid", "relay_socket_path"]


class Store(AccountsAPI, MailboxesAPI, MessagesAPI, ChangesAPI, LeasesAPI,
            QuotaAPI, MetadataAPI, ImapStateAPI, AclAPI):
    def __init__(self, engine, blobs, *, memory=False, search=None, search_dir=None):
        self.engine = engine
        self.blobs = blobs
        self.memory = memory
        self.bus = ChangeBus()
        self.sqlite = engine.dialect.name == "sqlite"
        self._wlock = threading.RLock()
        self._walsync = None
        path = engine.url.database if self.sqlite else None
        if path and not memory and path != ":memory:":
            self._wlock = WriterLock(path + ".lock")   # storage.durable: threads and processes
            self._walsync = WalSync(path + "-wal")
        self._done_ops = []   # tokens of transactions whose file operations are done
        self._readers = set()          # driver connections of the reads under way
        self._rlock = threading.Lock()
        self.interrupted = False
        # A file or server database is migrated to the current schema
        # (storage.migrations); the in-memory one is made fresh each time.
        if memory:
            create_all(engine)
        else:
            upgrade_schema(engine)
        # Full-text backend (storage.search): "fts5" (SQLite default) or "whoosh".
        root = getattr(blobs, "root", None)
        self.fulltext = make_backend(self, search, search_dir or (
            root and os.path.join(os.path.dirname(os.path.abspath(root)), "search")))

    @classmethod
    def open(cls, data_dir, db_url=None, search=None):
        os.makedirs(data_dir, exist_ok=True)
        url = db_url or f"sqlite:///{os.path.join(data_dir, 'roost.db')}"
        store = cls(make_engine(url), Maildir(os.path.join(data_dir, "mail")), search=search,
                    search_dir=os.path.join(data_dir, "search"))
        store.bus.relay_to(relay_socket_path(data_dir))
        store.fulltext.index_missing(store)
        reindex.needed(store)     # stamps a new data directory's search format
        return store

    @classmethod
    def memory(cls, search=None):
        return cls(make_engine("sqlite://", memory=True), MemoryBlobs(), memory=True, search=search)

    def close(self):
        if self._done_ops:
            with self.write():
                pass   # its flush drops the finished file operations' rows
        self.fulltext.close()
        self.engine.dispose()

    def file_ops_done(self, token):
        self._done_ops.append(token)

    def finished_file_ops(self):
        """Take the tokens whose file operations are done (their rows go in
        the caller's transaction; ``write`` puts them back on a rollback)."""
        done, self._done_ops[:] = list(self._done_ops), []
        return done

    @contextmanager
    def reader(self):
        """A connection for reads (the in-memory store has one, shared under the lock)."""
        if self.memory:
            with self._wlock, self.engine.connect() as conn:
                with self._reading(conn):
                    yield conn
                conn.rollback()
        else:
            with self.engine.connect() as conn, self._reading(conn):
                yield conn

    @contextmanager
    def _reading(self, conn):
        raw = conn.connection.driver_connection
        with self._rlock:
            self._readers.add(raw)
        try:
            yield
        except (DBAPIError, sqlite3.Error) as exc:
            if self.interrupted:
                raise TemporaryFailure("read interrupted: the server is stopping") from exc
            raise
        finally:
            with self._rlock:
                self._readers.discard(raw)

    def interrupt_reads(self):
        """Abort every read under way (at shutdown); they raise TemporaryFailure."""
        self.interrupted = True
        with self._rlock:
            raws = list(self._readers)
        for raw in raws:
            stop = getattr(raw, "interrupt", None) or getattr(raw, "cancel", None)
            try:
                stop()
            except Exception:  # noqa: BLE001 - a read that just ended is no matter
                pass

    @contextmanager
    def write(self):
        """A write transaction (``storage.txn.Txn``): committed when the block
        ends, then its after-commit hooks run and its changes are published."""
        lock = self._wlock if self.sqlite else _NO_LOCK
        with lock:
            with self.engine.connect() as conn:
                conn.execution_options(roost_write=True)
                txn = Txn(self, conn)
                try:
                    with conn.begin():
                        yield txn
                        txn.flush()
                except BaseException:
                    self._done_ops.extend(txn.dropped_ops)
                    raise
            # Still under the lock: file renames and links follow commit order,
            # so the Maildir mirror of flags ends where the database does.
            txn.committed()
        if self._walsync is not None:
            self._walsync.sync()      # on disk before the caller acknowledges anything


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NO_LOCK = _NoLock()


def relay_socket_path(data_dir):
    """Where the server listens for other processes' change notices."""
    return os.path.join(os.path.abspath(data_dir), "roost.sock")
