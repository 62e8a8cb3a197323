"""Named leases: a lock that one holder keeps for a while, across processes.

The ``leases`` table holds ``(name, holder, expires)``. A holder takes a lease
(``take_lease``) when nobody holds it or the last holder's lease has expired
(a crashed process stops renewing, so its leases lapse by themselves),
renews it while it is alive (``renew_lease``) and gives it up at the end
(``release_lease``). Each call is one write transaction, so two processes on
one database never both hold a name. The POP3 maildrop lock
(``"pop3:<account_id>"``, RFC 1939 section 8) is the first user.

Times are ``time.time()`` seconds; the caller chooses the lifetime.
"""

import time

from sqlalchemy import and_, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from .schema import leases


class LeasesAPI:
    """Mixed into ``Store``: named leases."""

    def take_lease(self, name, holder, ttl):
        """Hold ``name`` for ``ttl`` seconds (True), unless another holder's
        lease on it has not expired yet (False). Taking one's own lease again
        renews it."""
        now = time.time()
        try:
            return self._take_lease(name, holder, ttl, now)
        except IntegrityError:      # PostgreSQL: another process inserted it first
            return False

    def _take_lease(self, name, holder, ttl, now):
        with self.write() as txn:
            q = select(leases.c.holder, leases.c.expires).where(leases.c.name == name)
            row = txn.conn.execute(q if self.sqlite else q.with_for_update()).first()
            if row is None:
                txn.conn.execute(insert(leases).values(name=name, holder=holder,
                                                       expires=now + ttl))
                return True
            if row.holder != holder and row.expires > now:
                return False
            txn.conn.execute(update(leases).where(leases.c.name == name)
                             .values(holder=holder, expires=now + ttl))
            return True

    def renew_lease(self, name, holder, ttl):
        """Extend a lease ``holder`` still has (True); False when it has lost
        it (expired and taken by another)."""
        with self.write() as txn:
            done = txn.conn.execute(update(leases).where(and_(
                leases.c.name == name, leases.c.holder == holder))
                .values(expires=time.time() + ttl))
            return done.rowcount == 1

    def release_lease(self, name, holder):
        """Give up a lease (nothing when ``holder`` no longer has it)."""
        with self.write() as txn:
            txn.conn.execute(delete(leases).where(and_(leases.c.name == name,
                                                       leases.c.holder == holder)))

    def release_leases_of(self, holder_prefix):
        """Give up every lease whose holder starts with ``holder_prefix`` (a
        process that stops releases what its sessions held)."""
        with self.write() as txn:
            txn.conn.execute(delete(leases).where(
                leases.c.holder.startswith(holder_prefix, autoescape=True)))

    def lease_holder(self, name):
        """``(holder, expires)`` of a lease, or None."""
        with self.reader() as conn:
            row = conn.execute(select(leases.c.holder, leases.c.expires)
                               .where(leases.c.name == name)).first()
        return None if row is None else (row.holder, row.expires)
