"""Mailboxes: the store's part that owns the ``mailboxes`` table.

A mailbox has a name (``/`` separates hierarchy levels; ``INBOX`` is
case-insensitive), its Maildir++ folder, a special-use role (one mailbox per
role), ``uidvalidity`` (strictly increasing within the process, so a mailbox
deleted and created again never gets its old value back), ``uidnext`` and
``highestmodseq``. Creating a mailbox creates missing parents; renaming moves
children along; renaming INBOX moves its messages into a new mailbox and
leaves INBOX empty (RFC 3501); deleting keeps children. Subscriptions are
names kept apart (``storage.imapstate``): ``Mailbox.subscribed`` is read from
them, RENAME moves them along, DELETE and CREATE leave them alone.
"""

import threading
import time

from sqlalchemy import and_, delete, insert, select, update

from . import hot
from .errors import Conflict, InvalidName, MailboxExists, MailboxNotFound
from .imapstate import move_subscriptions
from .maildir import folder_for
from .model import Mailbox
from .schema import expunged, mailboxes

DEFAULT_MAILBOXES = (("INBOX", "inbox"), ("Drafts", "drafts"), ("Sent", "sent"),
                     ("Archive", "archive"), ("Junk", "junk"), ("Trash", "trash"))
ROLES = frozenset(r for _n, r in DEFAULT_MAILBOXES) | {"all", "flagged", "important"}
MAX_MAILBOX_NAME = 512
MAX_MAILBOX_DEPTH = 32
HIERARCHY = "/"


def check_mailbox_name(name):
    if not name or len(name) > MAX_MAILBOX_NAME:
        raise InvalidName("mailbox name is empty or too long")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidName("mailbox name has control characters")
    parts = name.split(HIERARCHY)
    if any(p == "" for p in parts) or len(parts) > MAX_MAILBOX_DEPTH:
        raise InvalidName("mailbox name has an empty or too deep hierarchy level")
    if parts[0].upper() == "INBOX" and len(parts) == 1:
        return "INBOX"
    if parts[0].upper() == "INBOX":
        parts[0] = "INBOX"
    return HIERARCHY.join(parts)


def mailbox_of(row, messages_=0, unseen=0, size=0, subscribed=False):
    """A ``Mailbox`` of a row; ``subscribed`` comes from the subscriptions
    table (``storage.imapstate``), not the row's dead column."""
    return Mailbox(row.id, row.account_id, row.name, row.folder, row.role, subscribed,
                   row.uidvalidity, row.uidnext, row.highestmodseq, row.sort_order,
                   messages_, unseen, size)


def insert_mailbox(txn, account_id, name, role, order=10):
    """A new mailbox row at the account's current MODSEQ (logged); returns its pk."""
    modseq = txn.modseq(account_id)
    pk = txn.conn.execute(insert(mailboxes).values(
        account_id=account_id, name=name, folder=folder_for(name), role=role,
        subscribed=True, uidvalidity=_uidvalidity(), uidnext=1,
        highestmodseq=modseq, sort_order=order)).inserted_primary_key[0]
    txn.log(account_id, "Mailbox", [pk], "c")
    return pk


def take_uids(txn, mailbox_pk, n):
    """Reserve ``n`` UIDs of the mailbox at the current MODSEQ; returns the first."""
    row = txn.conn.execute(select(mailboxes.c.account_id).where(mailboxes.c.id == mailbox_pk)).first()
    modseq = txn.modseq(row.account_id)
    nxt = txn.conn.execute(update(mailboxes).where(mailboxes.c.id == mailbox_pk)
                           .values(uidnext=mailboxes.c.uidnext + n, highestmodseq=modseq)
                           .returning(mailboxes.c.uidnext)).scalar_one()
    return nxt - n


class MailboxesAPI:
    """Mixed into ``Store``: mailboxes."""

    def mailboxes(self, account_id, counts=False):
        """The account's mailboxes by name; with ``counts``, messages/unseen/size too."""
        with self.reader() as conn:
            sql = hot.DriverSQL(conn, self.sqlite)
            rows = hot.mailbox_rows(sql, account_id)
            stats = hot.account_mailbox_counts(sql, account_id) if counts else {}
        return [Mailbox(*r[:5], bool(r[5]), *r[6:], *stats.get(r[0], (0, 0, 0))) for r in rows]

    def mailbox(self, account_id, name=None, *, mailbox_id=None, role=None, counts=False, size=True):
        """One mailbox by name, id or role; raises MailboxNotFound. With
        ``counts``, messages/unseen/size too (``size`` False leaves size 0:
        it reads each message's row). One driver-level read (``hot``): IMAP
        resolves a mailbox this way for most commands."""
        if mailbox_id is None and role is None:
            try:
                name = check_mailbox_name(name)
            except InvalidName:
                raise MailboxNotFound(name) from None
        with self.reader() as conn:
            sql = hot.DriverSQL(conn, self.sqlite)
            row = hot.mailbox_row(sql, account_id, name, role, mailbox_id)
            if row is None:
                raise MailboxNotFound(name or mailbox_id or role)
            stats = hot.mailbox_counts(sql, row[0], size) if counts else (0, 0, 0)
        return Mailbox(*row[:5], bool(row[5]), *row[6:], *stats)

    def mailbox_by_id(self, mailbox_pk):
        """A mailbox by its primary key alone (whichever account owns it)."""
        with self.reader() as conn:
            row = conn.execute(select(mailboxes).where(mailboxes.c.id == mailbox_pk)).first()
        if row is None:
            raise MailboxNotFound(mailbox_pk)
        return mailbox_of(row)

    def create_mailbox(self, account_id, name, role=None):
        """Create ``name`` and any missing parents; returns the new Mailbox."""
        name = check_mailbox_name(name)
        if role is not None and role not in ROLES:
            raise InvalidName(f"unknown role {role}")
        acct = self.account_by_id(account_id)
        with self.write() as txn:
            conn = txn.conn
            existing = {r[0] for r in conn.execute(
                select(mailboxes.c.name).where(mailboxes.c.account_id == account_id))}
            if name in existing:
                raise MailboxExists(name)
            _check_role_free(conn, account_id, role)
            txn.next_modseq(account_id)
            parts = name.split(HIERARCHY)
            for i in range(1, len(parts) + 1):
                sub = HIERARCHY.join(parts[:i])
                if sub in existing:
                    continue
                pk = insert_mailbox(txn, account_id, sub, role if sub == name else None)
                txn.after(lambda sub=sub: self.blobs.create_folder(acct.maildir_key, folder_for(sub)))
        return self.mailbox(account_id, mailbox_id=pk)

    def rename_mailbox(self, account_id, mailbox_pk, new_name):
        """Rename a mailbox and its children. Renaming INBOX moves its messages
        into a new mailbox of that name and leaves INBOX empty (RFC 3501)."""
        new_name = check_mailbox_name(new_name)
        acct = self.account_by_id(account_id)
        box = self.mailbox(account_id, mailbox_id=mailbox_pk)
        if new_name == "INBOX" or new_name.startswith(box.name + HIERARCHY):
            raise Conflict("cannot rename a mailbox to INBOX or into itself")
        if box.name == "INBOX":
            target = self.create_mailbox(account_id, new_name)
            uids = self.uids(box.id)
            if uids:
                self.move(box.id, uids, target.id)
            return target
        with self.write() as txn:
            rows = txn.conn.execute(select(mailboxes).where(mailboxes.c.account_id == account_id)).all()
            names = {r.name for r in rows}
            if new_name in names:
                raise MailboxExists(new_name)
            modseq = txn.next_modseq(account_id)
            parts = new_name.split(HIERARCHY)
            for i in range(1, len(parts)):
                parent = HIERARCHY.join(parts[:i])
                if parent not in names and parent != box.name:
                    insert_mailbox(txn, account_id, parent, None)
                    names.add(parent)
                    txn.after(lambda p=parent: self.blobs.create_folder(acct.maildir_key, folder_for(p)))
            moved = [r for r in rows if r.name == box.name or r.name.startswith(box.name + HIERARCHY)]
            for r in sorted(moved, key=lambda r: r.name):
                renamed = new_name + r.name[len(box.name):]
                txn.conn.execute(update(mailboxes).where(mailboxes.c.id == r.id).values(
                    name=renamed, folder=folder_for(renamed), highestmodseq=modseq))
                txn.log(account_id, "Mailbox", [r.id], "u")
                txn.file_op("mvfolder", acct.maildir_key, r.folder, dst_folder=folder_for(renamed))
                txn.after(lambda old=r.folder, new=folder_for(renamed):
                          self.blobs.rename_folder(acct.maildir_key, old, new))
            move_subscriptions(txn, account_id, box.name, new_name, HIERARCHY)
        return self.mailbox(account_id, mailbox_id=mailbox_pk)

    def delete_mailbox(self, account_id, mailbox_pk):
        """Delete a mailbox and its messages (children are kept, as IMAP wants)."""
        from .messages import remove_rows
        acct = self.account_by_id(account_id)
        box = self.mailbox(account_id, mailbox_id=mailbox_pk)
        if box.name == "INBOX":
            raise Conflict("INBOX cannot be deleted")
        uids = self.uids(box.id)
        with self.write() as txn:
            txn.next_modseq(account_id)
            remove_rows(txn, acct, box, uids, log_expunge=False)
            txn.conn.execute(delete(expunged).where(expunged.c.mailbox_id == box.id))
            txn.conn.execute(delete(mailboxes).where(mailboxes.c.id == box.id))
            txn.log(account_id, "Mailbox", [box.id], "d")
            txn.file_op("rmfolder", acct.maildir_key, box.folder)
            txn.after(lambda: self.blobs.delete_folder(acct.maildir_key, box.folder))
            txn.publish(account_id, {"Mailbox", "Email", "Thread"}, {box.id})

    def set_mailbox_role(self, account_id, mailbox_pk, role=None, sort_order=None):
        """Give the mailbox ``role`` (None: no role; one mailbox per role) and,
        unless None, the display position ``sort_order``."""
        if role is not None and role not in ROLES:
            raise InvalidName(f"unknown role {role}")
        values = {"role": role}
        if sort_order is not None:
            values["sort_order"] = int(sort_order)
        self._update_mailbox(account_id, mailbox_pk, values, role)

    def set_subscribed(self, account_id, mailbox_pk, subscribed):
        """Subscribe the mailbox's name (JMAP isSubscribed; ``storage.imapstate``)."""
        self.subscribe(account_id, self.mailbox(account_id, mailbox_id=mailbox_pk).name, subscribed)

    def _update_mailbox(self, account_id, mailbox_pk, values, role=None):
        with self.write() as txn:
            _check_role_free(txn.conn, account_id, role, mailbox_pk)
            txn.next_modseq(account_id)
            if not txn.conn.execute(update(mailboxes).where(and_(
                    mailboxes.c.id == mailbox_pk, mailboxes.c.account_id == account_id))
                    .values(**values)).rowcount:
                raise MailboxNotFound(mailbox_pk)
            txn.log(account_id, "Mailbox", [mailbox_pk], "u")


def _check_role_free(conn, account_id, role, mailbox_pk=None):
    if not role:
        return
    q = select(mailboxes.c.id).where(and_(mailboxes.c.account_id == account_id, mailboxes.c.role == role))
    if mailbox_pk is not None:
        q = q.where(mailboxes.c.id != mailbox_pk)
    if conn.execute(q).first():
        raise Conflict(f"another mailbox has the role {role}")


_last_uidvalidity = [0]
_uidvalidity_lock = threading.Lock()


def _uidvalidity():
    """Seconds since the epoch, strictly increasing within the process."""
    with _uidvalidity_lock:
        _last_uidvalidity[0] = max(int(time.time()), _last_uidvalidity[0] + 1)
        return _last_uidvalidity[0]
