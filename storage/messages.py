"""Messages in mailboxes: the store's part that owns ``mailbox_messages`` and
the ``messages`` rows' lifetime, and the one flag rule.

A message is stored once (``messages``) and is in one or more mailboxes
(``mailbox_messages``: UID, MODSEQ, flags there). Copies are memberships whose
files are hard links; a message row and its file go when its last membership
does. Reads address messages by mailbox and UID, or by account and message id;
the bytes come from the blob store (``storage.blobs``) at the location the
database names, never by scanning a directory.

Moves into the Junk mailbox (role ``junk``) set ``$junk`` and drop
``$notjunk`` on the message; moves out of Junk into a mailbox other than
Trash do the reverse (``junk_learning``, ``mark_junk``), in the transaction
of the move, for IMAP COPY/MOVE and JMAP mailboxIds alike. A COPY counts as
the first half of a move (old clients move with COPY + EXPUNGE).

The flag rule, ``apply_flags``, is the only code that changes flags: IMAP
STORE, JMAP Email/set keywords, and later Sieve ``addflag``. One call takes
one MODSEQ, writes the changed memberships and their mailboxes'
HIGHESTMODSEQ, logs an ``Email`` change per message and a ``Mailbox`` change
where ``\\Seen`` moved (unread counts), and after the commit renames the
Maildir files so their info suffix mirrors the system flags.
"""

import time
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, insert, select, update

from . import flags as flagbits
from . import hot
from .blobs import BlobRef
from .errors import MailboxNotFound, MessageNotFound
from .mailboxes import take_uids
from .model import Account, MessageRecord, Stored, maildir_key
from .quota import check_messages
from .schema import accounts, expunged, mailbox_messages, mailboxes, messages

CHUNK = 500


@dataclass(frozen=True)
class FlagChange:
    """What ``apply_flags`` does to each membership: with ``replace`` (a list
    of flag names) the flags become exactly those, except the system bits in
    ``keep_bits``, which stay as they are; then ``add`` and ``remove`` patch."""
    replace: tuple = None
    keep_bits: int = 0
    add: tuple = ()
    remove: tuple = ()

    @classmethod
    def of(cls, mode, names):
        """IMAP STORE's modes: "add", "remove" or "replace"."""
        names = tuple(names)
        return cls(replace=names) if mode == "replace" else \
            cls(add=names) if mode == "add" else cls(remove=names)

    def __bool__(self):
        return self.replace is not None or bool(self.add) or bool(self.remove)


def apply_flags(txn, account, change, *, mailbox_pk=None, uids=None, message_pks=None,
                unchanged_since=None):
    """Apply ``change`` to the UIDs of one mailbox, or to every membership of
    ``message_pks``; memberships whose MODSEQ is above ``unchanged_since``
    (CONDSTORE) are left alone.

    Returns ``(changed, failed)``: ``changed`` lists ``(mailbox pk, uid, modseq,
    bits, keywords)`` of the memberships whose flags changed, ``failed`` the
    UIDs refused by ``unchanged_since``.
    """
    sql = txn.sql
    rows = hot.flag_targets(sql, account.id, mailbox_pk=mailbox_pk, uids=uids, message_pks=message_pks)
    rbits, rkw = flagbits.split(change.replace or ())
    abits, akw = flagbits.split(change.add)
    dbits, dkw = flagbits.split(change.remove)
    keep = change.keep_bits
    updates, failed = [], []
    for box, uid, modseq, old_bits, old_kw, stem, msg_pk, folder in rows:
        if unchanged_since is not None and modseq > unchanged_since:
            failed.append(uid)
            continue
        old_k = flagbits.decode_keywords(old_kw)
        if change.replace is not None:
            nb, nk = (old_bits & keep) | (rbits & ~keep), flagbits.merge_keywords((), rkw)
        else:
            nb, nk = old_bits, old_k
        nb = (nb | abits) & ~dbits
        nk = flagbits.merge_keywords(nk, akw, dkw)
        if nb != old_bits or nk != old_k:
            updates.append((box, uid, nb, nk, msg_pk, BlobRef(account.maildir_key, folder, stem, old_bits),
                            nk != old_k))
    if not updates:
        return [], sorted(failed)
    modseq = txn.next_modseq(account.id)
    hot.write_flags(sql, modseq, [(box, uid, nb, flagbits.encode_keywords(nk))
                                  for box, uid, nb, nk, *_rest in updates])
    txn.log(account.id, "Email", sorted({u[4] for u in updates}), "u")
    txn.log(account.id, "Mailbox", sorted({u[0] for u in updates if (u[2] ^ u[5].bits) & flagbits.SEEN}), "u")
    txn.publish(account.id, {"Email", "Mailbox"}, {u[0] for u in updates})
    blobs = txn.store.blobs
    txn.after(lambda: [blobs.set_flags(ref, nb, nk if kw_changed else None)
                       for _b, _u, nb, nk, _m, ref, kw_changed in updates])
    return [(box, uid, modseq, nb, nk) for box, uid, nb, nk, *_rest in updates], sorted(failed)


def copy_rows(txn, account, box, dest, uids):
    """Add the messages at ``uids`` of ``box`` to ``dest`` (new UIDs, same flags,
    hard-linked files) at a new MODSEQ. Returns ``[(src uid, dst uid)]``."""
    q = select(mailbox_messages.c.uid, mailbox_messages.c.flags, mailbox_messages.c.keywords,
               messages.c.id, messages.c.stem) \
        .join(messages, messages.c.id == mailbox_messages.c.message_id) \
        .where(mailbox_messages.c.mailbox_id == box.id)
    wanted = set(uids)
    rows = [r for r in txn.conn.execute(uid_filter(q, uids).order_by(mailbox_messages.c.uid))
            if r.uid in wanted]
    if not rows:
        return []
    modseq = txn.next_modseq(account.id)
    first = take_uids(txn, dest.id, len(rows))
    now = time.time()
    txn.conn.execute(insert(mailbox_messages), [
        {"mailbox_id": dest.id, "uid": first + i, "message_id": r.id, "modseq": modseq,
         "flags": r.flags, "keywords": r.keywords, "saved_at": now} for i, r in enumerate(rows)])
    txn.log(account.id, "Email", sorted({r.id for r in rows}), "u")
    txn.log(account.id, "Mailbox", [dest.id], "u")
    txn.publish(account.id, {"Email", "Mailbox"}, {dest.id})
    refs = [(BlobRef(account.maildir_key, box.folder, r.stem, r.flags),
             flagbits.decode_keywords(r.keywords)) for r in rows]
    for ref, _kw in refs:
        txn.file_op("link", ref.account, ref.folder, ref.key, ref.bits, dest.folder, ref.bits)
    blobs = txn.store.blobs
    txn.after(lambda: [blobs.link(ref, dest.folder, kw) for ref, kw in refs])
    return [(r.uid, first + i) for i, r in enumerate(rows)]


JUNK, NOTJUNK = "$junk", "$notjunk"


def junk_learning(source_roles, dest_roles):
    """What a user's move says about a message, for a filter that learns:
    ``"junk"`` when it goes into the Junk mailbox from elsewhere,
    ``"notjunk"`` when it leaves Junk for a mailbox other than Trash (a
    deleted message says nothing), else None."""
    if "junk" in dest_roles and "junk" not in source_roles:
        return "junk"
    if "junk" in source_roles and any(r not in ("junk", "trash") for r in dest_roles):
        return "notjunk"
    return None


def mark_junk(txn, account, message_pks, learned):
    """Set ``$junk`` (dropping ``$notjunk``) or the reverse, per ``learned``
    (``junk_learning``), on every membership of the messages, in ``txn``."""
    if not learned or not message_pks:
        return
    add, drop = (JUNK, NOTJUNK) if learned == "junk" else (NOTJUNK, JUNK)
    apply_flags(txn, account, FlagChange(add=(add,), remove=(drop,)), message_pks=list(message_pks))


def remove_rows(txn, account, box, uids, *, log_expunge=True):
    """Take ``uids`` out of ``box`` at the account's current MODSEQ of ``txn``;
    a message whose last membership goes is deleted with its index entries and
    its quota. Returns the removed UIDs."""
    conn, modseq = txn.conn, txn.modseq(account.id)
    wanted = set(uids)
    q = select(mailbox_messages.c.uid, mailbox_messages.c.flags, messages.c.id,
               messages.c.stem, messages.c.size, messages.c.thread_id) \
        .join(messages, messages.c.id == mailbox_messages.c.message_id) \
        .where(mailbox_messages.c.mailbox_id == box.id)
    rows = [r for r in conn.execute(uid_filter(q, uids)) if r.uid in wanted]
    if not rows:
        return []
    removed = [r.uid for r in rows]
    for chunk in chunks(removed):
        conn.execute(delete(mailbox_messages).where(and_(
            mailbox_messages.c.mailbox_id == box.id, mailbox_messages.c.uid.in_(chunk))))
    if log_expunge:
        conn.execute(insert(expunged), [{"mailbox_id": box.id, "uid": u, "modseq": modseq}
                                        for u in removed])
    conn.execute(update(mailboxes).where(mailboxes.c.id == box.id).values(highestmodseq=modseq))
    msg_ids = sorted({r.id for r in rows})
    still = set()
    for chunk in chunks(msg_ids):
        still.update(r[0] for r in conn.execute(
            select(mailbox_messages.c.message_id).where(mailbox_messages.c.message_id.in_(chunk))))
    gone = [r for r in rows if r.id not in still]
    if gone:
        gone_ids = [r.id for r in gone]
        for chunk in chunks(gone_ids):
            txn.store.fulltext.remove(txn, account.id, chunk)
            conn.execute(delete(messages).where(messages.c.id.in_(chunk)))
        freed = sum(r.size for r in gone)
        clamp = func.max if txn.sqlite else func.greatest
        conn.execute(update(accounts).where(accounts.c.id == account.id)
                     .values(used_bytes=clamp(accounts.c.used_bytes - freed, 0)))
        txn.log(account.id, "Email", gone_ids, "d")
        txn.log(account.id, "Thread", sorted({r.thread_id for r in gone}), "u")
    txn.log(account.id, "Email", sorted(still), "u")
    txn.log(account.id, "Mailbox", [box.id], "u")
    txn.publish(account.id, {"Email", "Mailbox", "Thread"}, {box.id})
    refs = [BlobRef(account.maildir_key, box.folder, r.stem, r.flags) for r in rows]
    for ref in refs:
        txn.file_op("unlink", ref.account, ref.folder, ref.key, ref.bits)
    blobs = txn.store.blobs
    txn.after(lambda: [blobs.unlink(ref) for ref in refs])
    return removed


class MessagesAPI:
    """Mixed into ``Store``: messages by mailbox and UID."""

    def uids(self, mailbox_pk):
        """Every UID in the mailbox, ascending."""
        with self.reader() as conn:
            return [r[0] for r in conn.execute(
                select(mailbox_messages.c.uid).where(mailbox_messages.c.mailbox_id == mailbox_pk)
                .order_by(mailbox_messages.c.uid))]

    def flags(self, mailbox_pk, uids=None, changed_since=None):
        """``[(uid, modseq, bits, keywords)]`` ascending by UID (bulk FETCH FLAGS)."""
        with self.reader() as conn:
            rows = hot.flag_rows(hot.DriverSQL(conn, self.sqlite), mailbox_pk, uids, changed_since)
        return [(u, m, b, flagbits.decode_keywords(k)) for u, m, b, k in rows]

    def records(self, mailbox_pk, uids=None, *, parsed=False):
        """``MessageRecord``s of the given UIDs (all when None), ascending by UID.
        With ``parsed`` the envelope and structure JSON come too."""
        with self.reader() as conn:
            rows = hot.record_rows(hot.DriverSQL(conn, self.sqlite), mailbox_pk, uids, parsed)
        return [MessageRecord(r[0], r[1], r[2], flagbits.decode_keywords(r[3]), *r[4:]) for r in rows]

    def read(self, mailbox_pk, uid, start=0, end=None):
        """The raw bytes of the message with ``uid`` in the mailbox (only
        ``[start:end]`` of them when given: the blob store reads just that)."""
        return self._read_blob(uid, start, end, mailbox_pk=mailbox_pk, uid=uid)

    def read_message(self, account_id, message_pk, start=0, end=None):
        """The raw bytes of a message by its id (whichever mailbox holds it)."""
        return self._read_blob(message_pk, start, end, account_id=account_id, message_pk=message_pk)

    def _read_blob(self, what, start, end, **where):
        for _attempt in range(2):
            with self.reader() as conn:
                row = hot.message_location(hot.DriverSQL(conn, self.sqlite), **where)
            if row is None:
                raise MessageNotFound(what)
            stem, folder, bits, address = row
            try:
                return self.blobs.get(BlobRef(maildir_key(address), folder, stem, bits), start, end)
            except FileNotFoundError:
                continue   # moved or renamed by a writer since we looked: look again
        raise MessageNotFound(what)

    def store_flags(self, mailbox_pk, uids, names, mode, unchanged_since=None):
        """IMAP STORE: change flags of ``uids``; ``mode`` is "add", "remove" or
        "replace" (``apply_flags``). Returns ``(changed, failed)``: ``changed``
        lists ``(uid, modseq, bits, keywords)``, ``failed`` the UIDs refused by
        ``unchanged_since`` (CONDSTORE)."""
        with self.write() as txn:
            owner = hot.mailbox_owner(txn.sql, mailbox_pk)
            if owner is None:
                raise MailboxNotFound(mailbox_pk)
            acct = Account(owner[0], owner[1], None, None, 0, 0)
            changed, failed = apply_flags(txn, acct, FlagChange.of(mode, names), mailbox_pk=mailbox_pk,
                                          uids=list(uids), unchanged_since=unchanged_since)
        return [(uid, modseq, bits, kw) for _b, uid, modseq, bits, kw in changed], failed

    def copy(self, mailbox_pk, uids, dest_pk, *, move=False):
        """Copy messages into ``dest_pk`` (the same message, hard-linked); with
        ``move`` they leave the source in the same transaction.
        Returns ``(uidvalidity, [(src_uid, dst_uid)])``."""
        box = self.mailbox_by_id(mailbox_pk)
        dest = self.mailbox_by_id(dest_pk)
        if dest.account_id != box.account_id:
            raise MailboxNotFound(dest_pk)
        acct = self.account_by_id(box.account_id)
        learned = junk_learning({box.role}, {dest.role})
        with self.write() as txn:
            pairs = copy_rows(txn, acct, box, dest, uids)
            if not move:        # a move adds as many memberships as it removes
                check_messages(txn, acct.id, len(pairs), written=True)
            if learned and pairs:       # a user filing a message as junk or not: keywords say so
                new_uids = [p[1] for p in pairs]
                pks = [r[0] for chunk in chunks(new_uids) for r in txn.conn.execute(
                    select(mailbox_messages.c.message_id).where(and_(
                        mailbox_messages.c.mailbox_id == dest.id,
                        mailbox_messages.c.uid.in_(chunk))))]
                mark_junk(txn, acct, pks, learned)
            if move and pairs:
                txn.next_modseq(acct.id)
                remove_rows(txn, acct, box, [p[0] for p in pairs])
        return dest.uidvalidity, pairs

    def move(self, mailbox_pk, uids, dest_pk):
        """Move messages: copy, then remove from the source, in one transaction."""
        return self.copy(mailbox_pk, uids, dest_pk, move=True)

    def expunge(self, mailbox_pk, uids=None):
        """Remove the messages flagged \\Deleted (only those in ``uids`` when given).
        Returns the expunged UIDs."""
        box = self.mailbox_by_id(mailbox_pk)
        acct = self.account_by_id(box.account_id)
        q = select(mailbox_messages.c.uid).where(and_(
            mailbox_messages.c.mailbox_id == mailbox_pk,
            mailbox_messages.c.flags.op("&")(flagbits.DELETED) != 0))
        with self.write() as txn:
            found = [r[0] for r in txn.conn.execute(q.order_by(mailbox_messages.c.uid))]
            if uids is not None:
                wanted = set(uids)
                found = [u for u in found if u in wanted]
            if found:
                txn.next_modseq(acct.id)
                remove_rows(txn, acct, box, found)
        return found

    def remove(self, mailbox_pk, uids):
        """Remove messages from a mailbox whatever their flags (JMAP, MOVE)."""
        box = self.mailbox_by_id(mailbox_pk)
        acct = self.account_by_id(box.account_id)
        with self.write() as txn:
            txn.next_modseq(acct.id)
            return remove_rows(txn, acct, box, uids)

    def changes_since(self, account_id, mailbox_pk, modseq):
        """``(highestmodseq, [(uid, modseq, bits, keywords)], expunged UIDs)``
        of the account's mailbox after ``modseq``, in one read: what an IMAP
        session reports after a command that saw a change. Raises
        MailboxNotFound when the mailbox is gone."""
        with self.reader() as conn:
            got = hot.mailbox_changes(hot.DriverSQL(conn, self.sqlite), account_id, mailbox_pk, modseq)
        if got is None:
            raise MailboxNotFound(mailbox_pk)
        highest, rows, gone = got
        return highest, [(u, m, b, flagbits.decode_keywords(k)) for u, m, b, k in rows], gone

    def expunged_since(self, mailbox_pk, modseq):
        """UIDs expunged from the mailbox after ``modseq`` (QRESYNC VANISHED)."""
        with self.reader() as conn:
            return sorted(r[0] for r in conn.execute(
                select(expunged.c.uid).where(and_(expunged.c.mailbox_id == mailbox_pk,
                                                  expunged.c.modseq > modseq))))

    def insert_messages(self, batch):
        """Commit the rows of staged messages in one transaction (called by
        ``storage.delivery`` and ``storage.fsck`` only; see
        ``hot.insert_messages``). Once committed, and before anyone is told,
        the staged files are made visible and linked into further mailboxes;
        staged files of failed or duplicate items are discarded."""
        blobs = self.blobs

        def files(results):
            for item, result in zip(batch, results):
                key = item.account.maildir_key
                if isinstance(result, Stored) and not result.duplicate:
                    ref = BlobRef(key, item.mailbox.folder, item.stem, item.bits)
                    blobs.commit(ref, item.keywords)
                    for box, bits, keywords in item.also:
                        blobs.link(ref, box.folder, keywords, bits)
                else:
                    blobs.discard(key, item.mailbox.folder, item.stem)

        with self.write() as txn:
            results = hot.insert_messages(txn, batch)
            txn.after(lambda: files(results))
        return results


    def insert_together(self, batch, replace=None):
        """Commit staged messages in one transaction: all are stored (their
        ``Stored`` returned in order) or none is, and the first item's failure
        (QuotaExceeded, MailboxNotFound, ...) is raised (IMAP MULTIAPPEND,
        through ``Delivery.store_together``). Staged files of a failed batch
        are discarded. ``replace`` = (mailbox pk, uids): those messages are
        removed in the same transaction (IMAP REPLACE)."""
        blobs = self.blobs
        for item in batch:
            item.prepare()
        if replace is not None:
            old_box = self.mailbox_by_id(replace[0])
            old_acct = self.account_by_id(old_box.account_id)

        def files(results):
            for item in batch:
                ref = BlobRef(item.account.maildir_key, item.mailbox.folder, item.stem, item.bits)
                blobs.commit(ref, item.keywords)
                for box, bits, keywords in item.also:
                    blobs.link(ref, box.folder, keywords, bits)
        try:
            with self.write() as txn:
                results = hot.insert_messages(txn, batch)
                for result in results:
                    if isinstance(result, Exception):
                        raise result
                    if result.duplicate:
                        raise RuntimeError("a duplicate in an all-or-nothing batch")
                txn.after(lambda: files(results))
                if replace is not None:
                    txn.next_modseq(old_acct.id)
                    remove_rows(txn, old_acct, old_box, replace[1])
        except BaseException:
            for item in batch:
                blobs.discard(item.account.maildir_key, item.mailbox.folder, item.stem)
            raise
        return results


def uid_filter(q, uids):
    if uids is None:
        return q
    uids = list(uids)
    if not uids:
        return q.where(mailbox_messages.c.uid == -1)
    if len(uids) <= CHUNK:
        return q.where(mailbox_messages.c.uid.in_(uids))
    return q.where(mailbox_messages.c.uid.between(min(uids), max(uids)))


def chunks(seq, n=CHUNK):
    seq = list(seq)
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
