"""The store's write transaction: the one way anything changes.

``Store.write()`` yields a ``Txn``. Every write in ``roost.storage`` (the store's
own parts, account data, search backends, fsck) runs inside one, and no module
needs a private store helper:

- ``txn.conn`` is the SQLAlchemy connection, in the transaction (``txn.sql`` is
  the same transaction at the DB-API level, for ``storage.hot`` only);
- ``txn.next_modseq(account_id)`` takes the account's next MODSEQ;
- ``txn.log(account_id, kind, ids, op)`` records ``changes`` rows at the
  account's latest MODSEQ of this transaction (``op`` is "c", "u" or "d");
- ``txn.publish(account_id, kinds, mailboxes, imap)`` adds kinds, mailboxes
  and IMAP-only changes (``Change.imap``) to the event the account gets after
  the commit (logged kinds are added by ``log``);
- ``txn.after(fn)`` runs ``fn`` once the commit has succeeded (file side
  effects: publish staged files, links, flag renames, unlinks);
- ``txn.file_op(...)`` records, in the transaction, a file operation its
  hooks owe, so that a crash between the commit and the hooks is finished by
  recovery (``storage.blobops``).

Change rows are buffered and written by one ``executemany`` just before the
commit. After the commit the ``after`` hooks run in order, still under the
store's writer lock, so the Maildir mirror of flags follows commit order; then
each account that changed gets one ``Change`` on the bus, at the highest MODSEQ
the transaction took for it. Hooks and events are dropped when the
transaction rolls back.
"""

import itertools
import os
import time

from .hot import DriverSQL
from .notify import Change

_tokens = itertools.count(1)
observers = []   # fn(seconds) after each commit


class Txn:
    def __init__(self, store, conn):
        self.store = store
        self.conn = conn
        self.sqlite = store.sqlite
        self._sql = None
        self._hooks = []
        self._rows = []
        self._ops = []
        self.dropped_ops = []
        self._events = {}   # account_id -> [modseq, kinds, mailbox ids, imap changes]
        self.token = f"{os.getpid()}.{time.time_ns()}.{next(_tokens)}"
        self._flushed = time.monotonic()

    @property
    def sql(self):
        """The transaction's DB-API cursor wrapper (``storage.hot`` statements)."""
        if self._sql is None:
            self._sql = DriverSQL(self.conn, self.sqlite)
        return self._sql

    def _event(self, account_id):
        ev = self._events.get(account_id)
        if ev is None:
            ev = self._events[account_id] = [None, set(), set(), set()]
        return ev

    def next_modseq(self, account_id):
        modseq = self.sql.one("UPDATE accounts SET modseq = modseq + 1 WHERE id = ? RETURNING modseq",
                              (account_id,))[0]
        self._event(account_id)[0] = modseq
        return modseq

    def modseq(self, account_id):
        """The latest MODSEQ this transaction took for the account."""
        modseq = self._events.get(account_id, (None,))[0]
        if modseq is None:
            raise RuntimeError("log() before next_modseq()")
        return modseq

    def log(self, account_id, kind, object_ids, op):
        modseq, now = self.modseq(account_id), time.time()
        before = len(self._rows)
        self._rows.extend((account_id, modseq, kind, oid, op, now) for oid in object_ids)
        if len(self._rows) > before:
            self._event(account_id)[1].add(kind)

    def publish(self, account_id, kinds=(), mailboxes=(), imap=()):
        ev = self._event(account_id)
        ev[1].update(kinds)
        ev[2].update(mailboxes)
        ev[3].update(imap)

    def after(self, fn):
        self._hooks.append(fn)

    def file_op(self, op, account, folder="", stem=None, bits=0, dst_folder=None, dst_bits=0):
        """Record a file operation this transaction's hooks will do (``storage.blobops``)."""
        self._ops.append((self.token, op, account, folder, stem, bits, dst_folder, dst_bits))

    # --- driven by Store.write() ---------------------------------------------

    def flush(self):
        """Write the buffered change rows and file operations (before the
        commit), and drop the file operations earlier transactions finished."""
        if self._rows:
            self.sql.many("INSERT INTO changes (account_id, modseq, kind, object_id, op, at) "
                          "VALUES (?, ?, ?, ?, ?, ?)", self._rows)
            self._rows = []
        done = self.dropped_ops = self.store.finished_file_ops()
        for i in range(0, len(done), 500):
            chunk = done[i:i + 500]
            self.sql.run(f"DELETE FROM file_ops WHERE txn IN ({', '.join('?' * len(chunk))})", chunk)
        if self._ops:
            self.sql.many("INSERT INTO file_ops (txn, op, account, folder, stem, bits, dst_folder, "
                          "dst_bits) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._ops)
        self._flushed = time.monotonic()

    def committed(self):
        if observers:
            took = time.monotonic() - self._flushed
            for fn in list(observers):
                try:
                    fn(took)
                except Exception:  # noqa: BLE001 - an observer must not undo a commit
                    pass
        for fn in self._hooks:
            fn()
        if self._ops:
            self.store.file_ops_done(self.token)
        bus = self.store.bus
        for account_id, (modseq, kinds, boxes, imap) in self._events.items():
            if kinds or boxes or imap:
                bus.publish(Change(account_id, modseq or 0, frozenset(kinds), frozenset(boxes),
                                   frozenset(imap)))
