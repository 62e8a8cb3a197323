"""IMAP4rev1 state the store keeps for IMAP alone: subscriptions and \\Recent.

Subscriptions (RFC 3501 6.3.6, RFC 9051 6.3.7) are names in the
``subscriptions`` table, the only place they are kept: a name may be
subscribed whether or not a mailbox has it (DELETE keeps the subscription,
SUBSCRIBE to a missing name succeeds), CREATE subscribes nothing, a new
account's default mailboxes are subscribed, and RENAME moves the
subscriptions of the mailbox and its children (``storage.mailboxes``). A
mailbox's ``subscribed`` (JMAP isSubscribed) is read from the same table;
subscribing or unsubscribing the name of an existing mailbox logs a Mailbox
change so JMAP clients see it, and every SUBSCRIBE/UNSUBSCRIBE that changes
something puts ``("subscription", name, subscribed)`` in the account's change
event (``Change.imap``, for NOTIFY's SubscriptionChange). RENAME's move of
subscriptions puts nothing there: NOTIFY's MailboxName reports the rename.

\\Recent (RFC 3501 2.3.2): ``mailboxes.recent_uid`` is the highest UID some
session has claimed. A session that selects the mailbox read-write, or sees a
new message while it has it so selected, claims every UID above it
(``claim_recent``); the UIDs it took are recent for that session only. EXAMINE
shows the unclaimed ones as recent and claims nothing (RFC 3501 6.3.2).

(All-or-nothing appends, MULTIAPPEND, are ``MessagesAPI.insert_together``.)
"""

from sqlalchemy import and_, delete, func, insert, select

from . import hot
from .schema import mailbox_messages, mailboxes, subscriptions

MAX_SUBSCRIPTIONS = 10000   # names one account may subscribe


def subscribed_names(conn, account_id):
    return {r[0] for r in conn.execute(
        select(subscriptions.c.name).where(subscriptions.c.account_id == account_id))}


def is_subscribed(conn, account_id, name):
    """One name's subscription (one indexed row, not the account's every name)."""
    return conn.execute(select(subscriptions.c.name).where(
        subscriptions.c.account_id == account_id, subscriptions.c.name == name)).first() is not None


def add_subscriptions(txn, account_id, names):
    """Insert subscription rows for ``names`` not yet subscribed (in ``txn``)."""
    have = subscribed_names(txn.conn, account_id)
    new = [{"account_id": account_id, "name": n} for n in dict.fromkeys(names) if n not in have]
    if new:
        txn.conn.execute(insert(subscriptions), new)


def move_subscriptions(txn, account_id, old, new, sep="/"):
    """RENAME: the subscriptions of ``old`` and its children follow it to ``new``."""
    moved = sorted(n for n in subscribed_names(txn.conn, account_id)
                   if n == old or n.startswith(old + sep))
    if not moved:
        return
    txn.conn.execute(delete(subscriptions).where(and_(
        subscriptions.c.account_id == account_id, subscriptions.c.name.in_(moved))))
    add_subscriptions(txn, account_id, [new + n[len(old):] for n in moved])


class ImapStateAPI:
    """Mixed into ``Store``: subscriptions and \\Recent claims."""

    # --- subscriptions -------------------------------------------------------

    def subscriptions(self, account_id):
        """The account's subscribed names, sorted."""
        with self.reader() as conn:
            return sorted(hot.subscription_names(hot.DriverSQL(conn, self.sqlite), account_id))

    def subscribe(self, account_id, name, subscribed=True):
        """Subscribe (or unsubscribe) ``name``; no mailbox need have it.
        Unsubscribing a name that is not subscribed does nothing."""
        from .errors import InvalidName
        from .mailboxes import check_mailbox_name
        name = check_mailbox_name(name)
        with self.write() as txn:
            conn = txn.conn
            have = is_subscribed(conn, account_id, name)
            if have == bool(subscribed):
                return
            if subscribed:
                count = conn.execute(select(func.count()).select_from(subscriptions).where(
                    subscriptions.c.account_id == account_id)).scalar()
                if count >= MAX_SUBSCRIPTIONS:
                    raise InvalidName(f"at most {MAX_SUBSCRIPTIONS} subscriptions")
                conn.execute(insert(subscriptions).values(account_id=account_id, name=name))
            else:
                conn.execute(delete(subscriptions).where(and_(
                    subscriptions.c.account_id == account_id, subscriptions.c.name == name)))
            txn.publish(account_id, imap=[("subscription", name, bool(subscribed))])
            pk = conn.execute(select(mailboxes.c.id).where(and_(
                mailboxes.c.account_id == account_id, mailboxes.c.name == name))).scalar()
            if pk is not None:      # JMAP isSubscribed of that mailbox changed
                txn.next_modseq(account_id)
                txn.log(account_id, "Mailbox", [pk], "u")

    # --- \Recent ---------------------------------------------------------------

    def claim_recent(self, mailbox_pk, upto):
        """Claim the UIDs up to ``upto`` as recent for the caller's session:
        returns the mailbox's ``recent_uid`` before (the caller's recent UIDs
        are those above it, up to ``upto``); nobody else gets them. Nothing
        is written when there is nothing to claim (a SELECT of a mailbox
        without new mail stays a read)."""
        if self.recent_floor(mailbox_pk) >= upto:
            return upto
        with self.write() as txn:
            before = hot.claim_recent(txn.sql, mailbox_pk, upto)
        return upto if before is None else before

    def recent_floor(self, mailbox_pk):
        """The mailbox's ``recent_uid`` (EXAMINE looks without claiming)."""
        with self.reader() as conn:
            return hot.recent_uid(hot.DriverSQL(conn, self.sqlite), mailbox_pk)

    def unclaimed_recent(self, mailbox_pk):
        """How many messages of the mailbox no session has claimed as recent."""
        with self.reader() as conn:
            return conn.execute(
                select(func.count()).select_from(mailbox_messages)
                .join(mailboxes, mailboxes.c.id == mailbox_messages.c.mailbox_id)
                .where(and_(mailbox_messages.c.mailbox_id == mailbox_pk,
                            mailbox_messages.c.uid > mailboxes.c.recent_uid))).scalar()
