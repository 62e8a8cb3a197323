"""Quotas: the store's part that owns an account's limits
(``accounts.quota_bytes``, ``accounts.quota_messages``) and the counting of
usage against them (the resources STORAGE and MESSAGE of RFC 9208).

One quota root per account covers all its mailboxes. Storage is
``accounts.used_bytes``: each stored message once, whatever the number of
mailboxes it is in (copies are hard links, so a COPY costs no storage).
Messages are memberships: a message in two mailboxes counts twice, as the
mailboxes' message counts add up, so COPY and JMAP ``mailboxIds`` additions
count, and a MOVE (copy and removal in one transaction) does not.

Limits are hard: a write that would take an account above either limit fails
whole with ``QuotaExceeded`` and changes nothing (delivery checks both in
``hot.insert_messages``; ``check_messages`` is the check of the writes that
add memberships to messages already stored). ``None`` is "no limit"; 0 lets
nothing in. The count of memberships is only taken when a message limit is
set, so unlimited accounts pay nothing for it.
"""

from dataclasses import dataclass

from sqlalchemy import and_, func, select, update

from . import flags as flagbits
from . import hot
from .errors import QuotaExceeded
from .schema import accounts, mailbox_messages, messages

KEEP = object()      # set_limits: leave this limit as it is


@dataclass(frozen=True)
class QuotaUsage:
    """An account's usage and limits (None: no limit)."""
    used_bytes: int
    quota_bytes: int
    messages: int
    quota_messages: int


def check_messages(txn, account_id, adding, *, written=False):
    """Raise ``QuotaExceeded`` when ``adding`` more memberships take the
    account above its message limit: before they are written, or (with
    ``written``) after, so that raising rolls the whole transaction back."""
    if adding <= 0:
        return
    address, limit = txn.sql.one("SELECT address, quota_messages FROM accounts WHERE id = ?",
                                 (account_id,))
    if limit is not None and hot.message_count(txn.sql, account_id) + (0 if written else adding) > limit:
        raise QuotaExceeded(address)


class QuotaAPI:
    """Mixed into ``Store``: usage and limits of an account."""

    def quota_usage(self, account_id):
        """``QuotaUsage`` of the account (AccountNotFound when it is gone)."""
        acct = self.account_by_id(account_id)
        with self.reader() as conn:
            limit = conn.execute(select(accounts.c.quota_messages)
                                 .where(accounts.c.id == account_id)).scalar()
            count = hot.message_count(hot.DriverSQL(conn, self.sqlite), account_id)
        return QuotaUsage(acct.used_bytes, acct.quota_bytes, count, limit)

    def set_limits(self, address, storage=KEEP, messages=KEEP):
        """Set the account's storage limit (bytes) and message limit; ``None``
        removes a limit, ``KEEP`` leaves it. Usage above a new limit stays: only
        further additions are refused."""
        acct = self.require_account(address)
        values = {}
        for column, value in (("quota_bytes", storage), ("quota_messages", messages)):
            if value is not KEEP:
                if value is not None and (not isinstance(value, int) or value < 0):
                    raise ValueError(f"a limit is a number of at least 0, not {value!r}")
                values[column] = value
        if values:
            with self.write() as txn:
                txn.conn.execute(update(accounts).where(accounts.c.id == acct.id).values(**values))
        return self.quota_usage(acct.id)

    def deleted_storage(self, mailbox_pk):
        """Bytes an EXPUNGE of the mailbox would free (RFC 9208 DELETED-STORAGE):
        the sizes of its \\Deleted messages that have no other membership (a
        message also elsewhere, or not \\Deleted here too, keeps its file)."""
        mm, other = mailbox_messages, mailbox_messages.alias("other")
        deleted = mm.c.flags.op("&")(flagbits.DELETED) != 0
        kept = select(other.c.uid).where(and_(
            other.c.message_id == messages.c.id,
            ~and_(other.c.mailbox_id == mailbox_pk, other.c.flags.op("&")(flagbits.DELETED) != 0)))
        q = select(func.coalesce(func.sum(messages.c.size), 0)).where(and_(
            messages.c.id.in_(select(mm.c.message_id).where(and_(mm.c.mailbox_id == mailbox_pk,
                                                                 deleted))),
            ~kept.exists()))
        with self.reader() as conn:
            return int(conn.execute(q).scalar())
