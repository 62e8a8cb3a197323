"""Message-level store operations: a message with all its mailbox memberships.

Owns reads of messages by id (with every mailbox they are in and the union of
their flags), ordered listings for sorting, per-mailbox thread counts, and the
writes that act on a message wherever it is: change flags in every mailbox,
add or remove mailbox memberships, destroy a message everywhere. JMAP uses
these; so may any protocol that addresses messages by id rather than by UID.

Every write runs in one ``store.write()`` transaction, takes the account's
next MODSEQ (several when one call changes several things), logs ``changes``
rows and publishes on the store's bus, through the same functions
``Store``'s own writes use (``storage.messages``). Flag names are IMAP's
(``\\Seen``, keywords as written); mapping to other vocabularies is the
caller's business. Nothing here knows about a protocol.
"""

import json
from dataclasses import dataclass, field

from sqlalchemy import and_, bindparam, func, select

from . import flags as flagbits
from .errors import MailboxNotFound, MessageNotFound, QuotaExceeded
from .mailboxes import mailbox_of
from .messages import (FlagChange, apply_flags, chunks, copy_rows, junk_learning, mark_junk,
                       remove_rows)
from .quota import check_messages
from .schema import mailbox_messages, mailboxes, messages
from .search import in_list

CHUNK = 500


@dataclass(frozen=True)
class Membership:
    mailbox_id: int
    uid: int
    modseq: int
    bits: int
    keywords: tuple


@dataclass(frozen=True)
class MessageInfo:
    """One message, as stored once, with the mailboxes it is in."""
    id: int
    thread_id: int
    blob_id: str
    size: int
    internal_date: float
    sent_at: float
    subject: str
    preview: str
    has_attachment: bool
    summary: dict
    structure: list
    memberships: tuple

    @property
    def flag_names(self):
        """Union of the message's flags over its memberships (system flags first)."""
        bits, kws = 0, ()
        for m in self.memberships:
            bits |= m.bits
            kws = flagbits.merge_keywords(kws, m.keywords)
        return flagbits.names(bits, kws)


@dataclass
class MessageChange:
    """What to change on one message. ``replace`` is a list of flag names that
    becomes the message's flags in every mailbox, except the bits in
    ``keep_bits``, which stay as they are; ``add``/``remove`` patch flags.
    ``add_to``/``remove_from`` are mailbox primary keys."""
    replace: list = None
    keep_bits: int = 0
    add: list = field(default_factory=list)
    remove: list = field(default_factory=list)
    add_to: list = field(default_factory=list)
    remove_from: list = field(default_factory=list)


_MESSAGE_QUERIES = {}


def _message_query(parsed, summary):
    """The (cached) statement of ``get_messages``: its IN list is one expanding
    parameter, so the statement is built and compiled once per shape."""
    key = (parsed, summary)
    if key not in _MESSAGE_QUERIES:
        cols = [messages.c.id, messages.c.thread_id, messages.c.blob_id, messages.c.size,
                messages.c.internal_date, messages.c.sent_at, messages.c.subject,
                messages.c.preview, messages.c.has_attachment]
        if summary:
            cols.append(messages.c.summary)
        if parsed:
            cols.append(messages.c.structure)
        member_cols = [mailbox_messages.c.mailbox_id, mailbox_messages.c.uid,
                       mailbox_messages.c.modseq, mailbox_messages.c.flags,
                       mailbox_messages.c.keywords]
        q = select(messages.c.account_id, *cols, *member_cols).outerjoin(
            mailbox_messages, mailbox_messages.c.message_id == messages.c.id) \
            .where(messages.c.id.in_(bindparam("ids", expanding=True)))
        _MESSAGE_QUERIES[key] = (q, len(cols) + 1)
    return _MESSAGE_QUERIES[key]


def get_messages(store, account_id, pks, *, parsed=True, summary=True):
    """``{pk: MessageInfo}`` of the account's messages among ``pks`` (others are
    absent). Without ``parsed`` the structure is None; without ``summary`` the
    decoded address/id summary is an empty dict (cheaper for list views)."""
    out = {}
    pks = sorted({p for p in pks if isinstance(p, int)})
    q, n = _message_query(bool(parsed), bool(summary))
    with store.reader() as conn:
        for chunk in chunks(pks):
            # One statement, by primary key only (SQLite would otherwise walk
            # the account's index); the account is checked on each row instead.
            rows, members = {}, {}
            for r in conn.execute(q, {"ids": chunk}):
                if r[0] != account_id:
                    continue
                rows.setdefault(r[1], r)
                if r[n] is not None:
                    members.setdefault(r[1], []).append(
                        Membership(r[n], r[n + 1], r[n + 2], r[n + 3],
                                   flagbits.decode_keywords(r[n + 4])))
            for pk, r in rows.items():
                out[pk] = MessageInfo(
                    pk, r.thread_id, r.blob_id, r.size, r.internal_date, r.sent_at, r.subject,
                    r.preview, bool(r.has_attachment), json.loads(r.summary) if summary else {},
                    json.loads(r.structure) if parsed else None,
                    tuple(sorted(members.get(pk, ()), key=lambda m: m.mailbox_id)))
    return out


def message_by_blob(store, account_id, blob_id):
    """The primary key of the account's message whose bytes are ``blob_id``, or None."""
    with store.reader() as conn:
        return conn.execute(select(messages.c.id).where(and_(
            messages.c.account_id == account_id, messages.c.blob_id == blob_id)).limit(1)).scalar()


def thread_messages(store, account_id, thread_pks):
    """``{thread_pk: [message pk, ...]}`` oldest first (by arrival, then id)."""
    out = {}
    with store.reader() as conn:
        for chunk in chunks(sorted(set(thread_pks))):
            for tid, mid in conn.execute(
                    select(messages.c.thread_id, messages.c.id).where(and_(
                        messages.c.account_id == account_id, messages.c.thread_id.in_(chunk)))
                    .order_by(messages.c.internal_date, messages.c.id)):
                out.setdefault(tid, []).append(mid)
    return out


def mailbox_thread_counts(store, account_id):
    """``{mailbox_pk: (threads, unread threads)}``: distinct threads with a message
    in the mailbox, and those with an unseen message in it."""
    unseen = 1 - mailbox_messages.c.flags.op("&")(flagbits.SEEN)
    q = (select(mailbox_messages.c.mailbox_id, func.count(func.distinct(messages.c.thread_id)))
         .join(messages, messages.c.id == mailbox_messages.c.message_id)
         .join(mailboxes, mailboxes.c.id == mailbox_messages.c.mailbox_id)
         .where(mailboxes.c.account_id == account_id)
         .group_by(mailbox_messages.c.mailbox_id))
    qu = q.where(unseen == 1)
    with store.reader() as conn:
        total = dict(conn.execute(q).all())
        unread = dict(conn.execute(qu).all())
    return {k: (v, unread.get(k, 0)) for k, v in total.items()}


ORDER_COLUMNS = {
    "received": messages.c.internal_date, "size": messages.c.size,
    "from": messages.c.from_sort, "to": messages.c.to_sort,
    "subject": func.lower(messages.c.subject), "sent": messages.c.sent_at,
}


FEW_IDS = 5000     # ordered_messages of at most this many pks reads only their rows


def ordered_messages(store, account_id, order, *, mailbox_pk=None, pks=None):
    """``[(pk, thread_pk)]`` of the account's messages (those in ``mailbox_pk``
    or among ``pks`` when given) sorted by ``order``: ``[(column, ascending)]``
    with columns from ``ORDER_COLUMNS``; ties break by id, newest first."""
    q = select(messages.c.id, messages.c.thread_id).where(messages.c.account_id == account_id)
    if mailbox_pk is not None:
        q = q.join(mailbox_messages, mailbox_messages.c.message_id == messages.c.id) \
            .where(mailbox_messages.c.mailbox_id == mailbox_pk)
    keys = [ORDER_COLUMNS[c].asc() if asc else ORDER_COLUMNS[c].desc() for c, asc in order]
    q = q.order_by(*keys, messages.c.id.desc())
    wanted = set(pks) if pks is not None else None
    with store.reader() as conn:
        if wanted is not None and len(wanted) <= FEW_IDS:
            # only their rows, the ids as one bound parameter
            return [(r[0], r[1]) for r in conn.execute(
                q.where(in_list(conn, messages.c.id, sorted(wanted))))]
        rows = conn.execute(q).all()
    if wanted is not None:
        return [(r[0], r[1]) for r in rows if r[0] in wanted]
    return [(r[0], r[1]) for r in rows]


def mailbox_sort_rows(store, account_id, mailbox_pk, pks=None):
    """``[(pk, thread_pk, internal_date, size)]`` of the messages in the mailbox
    (in the account when ``mailbox_pk`` is None; only those among ``pks`` when
    given), unordered."""
    if mailbox_pk is None:
        q = select(messages.c.id, messages.c.thread_id, messages.c.internal_date,
                   messages.c.size).where(messages.c.account_id == account_id)
        with store.reader() as conn:
            if pks is None:
                return [tuple(r) for r in conn.execute(q)]
            return [tuple(r) for chunk in chunks(sorted(pks))
                    for r in conn.execute(q.where(messages.c.id.in_(chunk)))]
    q = select(messages.c.id, messages.c.thread_id, messages.c.internal_date, messages.c.size,
               messages.c.account_id) \
        .join(mailbox_messages, mailbox_messages.c.message_id == messages.c.id)
    out = []
    with store.reader() as conn:
        for chunk in (chunks(sorted(pks)) if pks is not None else [None]):
            if chunk is None:
                cq = q.where(mailbox_messages.c.mailbox_id == mailbox_pk)
            else:
                # "+ 0" keeps SQLite on the message index instead of walking the mailbox
                cq = q.where(mailbox_messages.c.message_id.in_(chunk),
                             mailbox_messages.c.mailbox_id + 0 == mailbox_pk)
            out.extend(tuple(r[:4]) for r in conn.execute(cq) if r[4] == account_id)
    return out


def flagged_messages(store, account_id, name):
    """``(message pks, thread pks)`` of the account's messages that have flag
    ``name`` in some mailbox, and the threads they are in."""
    bits, kws = flagbits.split([name])
    cond = mailbox_messages.c.flags.op("&")(bits) != 0 if bits else None
    q = select(messages.c.id, messages.c.thread_id, mailbox_messages.c.keywords) \
        .join(mailbox_messages, mailbox_messages.c.message_id == messages.c.id) \
        .where(messages.c.account_id == account_id)
    if cond is not None:
        q = q.where(cond)
    elif kws:
        q = q.where(mailbox_messages.c.keywords != "")
    else:
        return set(), set()
    want = kws[0].lower() if kws else None
    msgs, threads_ = set(), set()
    with store.reader() as conn:
        for mid, tid, kw in conn.execute(q):
            if want is None or want in (k.lower() for k in flagbits.decode_keywords(kw)):
                msgs.add(mid)
                threads_.add(tid)
    return msgs, threads_


def all_thread_pairs(store, account_id):
    """``[(message pk, thread pk)]`` of every message of the account."""
    with store.reader() as conn:
        return [tuple(r) for r in conn.execute(
            select(messages.c.id, messages.c.thread_id).where(messages.c.account_id == account_id))]


# --- writes ------------------------------------------------------------------

def change_messages(store, account_id, changes):
    """Apply ``{pk: MessageChange}`` in one transaction.

    Returns ``{pk: None or error}`` where an error is a ``MessageNotFound`` or
    ``MailboxNotFound`` instance, or ``ValueError`` when the change would leave
    a message in no mailbox. A failing message changes nothing; the others
    still apply. Flags change through ``messages.apply_flags`` (the rule IMAP
    STORE uses too); each changed message takes its own MODSEQ.
    """
    acct = store.account_by_id(account_id)
    results = {}
    with store.write() as txn:
        conn = txn.conn
        boxes = {r.id: mailbox_of(r) for r in conn.execute(
            select(mailboxes).where(mailboxes.c.account_id == account_id))}
        for pk, ch in changes.items():
            if not isinstance(pk, int) or conn.execute(select(messages.c.id).where(and_(
                    messages.c.id == pk, messages.c.account_id == account_id))).first() is None:
                results[pk] = MessageNotFound(pk)
                continue
            bad = [b for b in list(ch.add_to) + list(ch.remove_from) if b not in boxes]
            if bad:
                results[pk] = MailboxNotFound(bad[0])
                continue
            members = dict(conn.execute(select(mailbox_messages.c.mailbox_id, mailbox_messages.c.uid)
                                        .where(mailbox_messages.c.message_id == pk)).all())
            if not (set(members) | set(ch.add_to)) - set(ch.remove_from):
                results[pk] = ValueError("a message must stay in at least one mailbox")
                continue
            try:
                check_messages(txn, account_id, len(set(ch.add_to) - set(members))
                               - len(set(ch.remove_from) & set(members)))
            except QuotaExceeded as exc:
                results[pk] = exc
                continue
            flags = FlagChange(None if ch.replace is None else tuple(ch.replace), ch.keep_bits,
                               tuple(ch.add), tuple(ch.remove))
            if flags:
                apply_flags(txn, acct, flags, message_pks=[pk])
            adds = [b for b in dict.fromkeys(ch.add_to) if b not in members]
            leaving = [b for b in dict.fromkeys(ch.remove_from) if b in members]
            learned = junk_learning({boxes[b].role for b in leaving} if adds else set(),
                                    {boxes[b].role for b in adds}) if adds else None
            if learned == "junk" and any(boxes[b].role == "junk" for b in members):
                learned = None      # already in Junk
            if adds:
                src_box, src_uid = next(iter(sorted(members.items())))
                for dest in adds:
                    copy_rows(txn, acct, boxes[src_box], boxes[dest], [src_uid])
            for b in dict.fromkeys(ch.remove_from):
                if b in members:
                    txn.next_modseq(account_id)
                    remove_rows(txn, acct, boxes[b], [members[b]])
            mark_junk(txn, acct, [pk], learned)
            results[pk] = None
    return results


def destroy_messages(store, account_id, pks):
    """Remove each message from every mailbox it is in (so it is gone).
    Returns ``(destroyed pks, not found pks)``."""
    acct = store.account_by_id(account_id)
    destroyed, missing = [], []
    with store.write() as txn:
        conn = txn.conn
        boxes = {r.id: mailbox_of(r) for r in conn.execute(
            select(mailboxes).where(mailboxes.c.account_id == account_id))}
        by_box = {}
        for pk in pks:
            members = conn.execute(
                select(mailbox_messages.c.mailbox_id, mailbox_messages.c.uid)
                .join(messages, messages.c.id == mailbox_messages.c.message_id)
                .where(and_(messages.c.id == pk, messages.c.account_id == account_id))).all()
            if not members:
                missing.append(pk)
                continue
            destroyed.append(pk)
            for b, uid in members:
                by_box.setdefault(b, []).append(uid)
        if by_box:
            txn.next_modseq(account_id)
            for b, uids in by_box.items():
                remove_rows(txn, acct, boxes[b], uids)
    return destroyed, missing
