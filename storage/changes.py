"""Changes and history: the store's part that owns the ``changes`` log and the
history floor.

Every write takes the account's next MODSEQ and logs ``changes`` rows in its
transaction (``storage.txn``). A JMAP type's state is the largest MODSEQ of a
change of that type; the account's MODSEQ is the state of everything. Pruning
drops whole MODSEQs older than the kept history and raises the account's
``history_floor``: a client state below it cannot be brought up to date by
changes (JMAP ``cannotCalculateChanges``, IMAP QRESYNC falls back to a full
resync), and a state never goes back below the floor.
"""

import time

from sqlalchemy import and_, delete, func, select, update

from .schema import accounts, changes, expunged, mailboxes


class ChangesAPI:
    """Mixed into ``Store``: states, the change log and its pruning."""

    def state(self, account_id, kind=None):
        """The account's MODSEQ, or the last MODSEQ at which ``kind`` changed
        (the history floor when its changes were all pruned, so a state never
        goes back)."""
        if kind is None:
            with self.reader() as conn:
                return conn.execute(select(accounts.c.modseq).where(accounts.c.id == account_id)).scalar_one()
        return self.states(account_id, [kind])[kind]

    def states(self, account_id, kinds):
        """``{kind: state}`` for several kinds in one query (as ``state`` per kind)."""
        kinds = list(kinds)
        subs = [select(func.max(changes.c.modseq)).where(and_(
            changes.c.account_id == account_id, changes.c.kind == k)).scalar_subquery()
            for k in kinds]
        floor = select(accounts.c.history_floor).where(accounts.c.id == account_id).scalar_subquery()
        with self.reader() as conn:
            row = conn.execute(select(floor, *subs)).first()
        low = max(row[0] or 0, 1) if row else 1
        return {k: v or low for k, v in zip(kinds, row[1:] if row else [None] * len(kinds))}

    def changes(self, account_id, kind, since, limit=None):
        """``[(modseq, object_id, op)]`` of ``kind`` after ``since``, oldest first."""
        q = select(changes.c.modseq, changes.c.object_id, changes.c.op).where(and_(
            changes.c.account_id == account_id, changes.c.kind == kind, changes.c.modseq > since)) \
            .order_by(changes.c.modseq, changes.c.id)
        if limit:
            q = q.limit(limit)
        with self.reader() as conn:
            return [tuple(r) for r in conn.execute(q)]

    def history_floor(self, account_id):
        """The MODSEQ at or below which the change and expunge logs were pruned:
        a client state older than this cannot be brought up to date by changes."""
        with self.reader() as conn:
            return conn.execute(select(accounts.c.history_floor)
                                .where(accounts.c.id == account_id)).scalar_one()

    def prune_history(self, keep_seconds):
        """Drop change-log and expunge-log rows older than ``keep_seconds``
        (whole MODSEQs only) and raise each account's ``history_floor``.
        Returns the number of change rows removed."""
        cutoff = time.time() - keep_seconds
        removed = 0
        for acct in self.accounts():
            with self.write() as txn:
                conn = txn.conn
                floor = conn.execute(select(func.max(changes.c.modseq)).where(and_(
                    changes.c.account_id == acct.id, changes.c.at < cutoff))).scalar()
                if floor is None:
                    continue
                removed += conn.execute(delete(changes).where(and_(
                    changes.c.account_id == acct.id, changes.c.modseq <= floor))).rowcount
                conn.execute(delete(expunged).where(and_(
                    expunged.c.modseq <= floor,
                    expunged.c.mailbox_id.in_(select(mailboxes.c.id)
                                              .where(mailboxes.c.account_id == acct.id)))))
                conn.execute(update(accounts).where(and_(accounts.c.id == acct.id,
                                                         accounts.c.history_floor < floor))
                             .values(history_floor=floor))
        return removed
