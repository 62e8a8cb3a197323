"""The store's hot statements, at the DB-API level, all in this one module.

Everything else in ``roost.storage`` is SQLAlchemy Core. The statements here
run per LMTP recipient, per IMAP FETCH/STORE and per delivered message, where
SQLAlchemy's per-statement work (compile cache lookup, parameter processing,
result wrapping) was most of the cost; ``python -m bench.hotsql`` measures
each one both ways on the same database. One run on a 2-core shared
machine, SQLite, 10,000 messages (microseconds per call, driver / Core):

    account_row (every LMTP RCPT and login)            3.3 /    96.7  (29x)
    message_location (every message read)              3.6 /   239.6  (66x)
    flag_rows, FETCH 1:* FLAGS of 10,000 messages   7073   / 11894    (1.7x)
    write_flags, STORE of one message + commit       402   /   694    (1.7x)

The delivery insert (``insert_messages``) moved here from Core when
SQLAlchemy's per-statement work was most of delivery's CPU (``bench.lmtp``).
SQL is written with ``?`` placeholders (SQLite's); for PostgreSQL they become
``%s``.

A schema change must edit these statements too: they name columns of
``storage.schema`` directly, and ``tests/unit/test_store.py`` runs them on
SQLite and, when it is up, PostgreSQL.
"""

import time

from . import flags as flagbits
from .errors import MailboxNotFound, QuotaExceeded
from .model import Stored

UID_IN_LIMIT = 500


class DriverSQL:
    """Statements straight to the DB-API cursor of a SQLAlchemy connection, in
    its transaction."""

    _pg = {}

    def __init__(self, conn, sqlite):
        self.cursor = conn.connection.driver_connection.cursor()
        self.sqlite = sqlite

    def _text(self, sql):
        if self.sqlite:
            return sql
        out = self._pg.get(sql)
        if out is None:
            out = self._pg[sql] = sql.replace("%", "%%").replace("?", "%s")
        return out

    def run(self, sql, params):
        self.cursor.execute(self._text(sql), params)

    def one(self, sql, params):
        self.cursor.execute(self._text(sql), params)
        return self.cursor.fetchone()

    def all(self, sql, params):
        self.cursor.execute(self._text(sql), params)
        return self.cursor.fetchall()

    def many(self, sql, rows):
        self.cursor.executemany(self._text(sql), rows)


def uid_sql(column, uids):
    """``(where, params, wanted)`` restricting ``column`` to ``uids`` (all when
    None); beyond 500 UIDs a range, and ``wanted`` is the set to filter by."""
    if uids is None:
        return "", (), None
    uids = list(uids)
    if not uids:
        return f" AND {column} = -1", (), None
    if len(uids) <= UID_IN_LIMIT:
        return f" AND {column} IN ({', '.join('?' * len(uids))})", tuple(uids), None
    return f" AND {column} BETWEEN ? AND ?", (min(uids), max(uids)), set(uids)


# --- per LMTP recipient ---------------------------------------------------------

def account_row(sql, address):
    """``(id, address, password_hash, quota_bytes, used_bytes, modseq)`` or None.
    Every LMTP RCPT and every login comes here."""
    return sql.one("SELECT id, address, password_hash, quota_bytes, used_bytes, modseq "
                   "FROM accounts WHERE address = ?", (address,))


def alias_targets(sql, address):
    """The targets of alias ``address`` (an address or ``@domain``)."""
    return [r[0] for r in sql.all("SELECT target FROM aliases WHERE address = ?", (address,))]


MAILBOX_SELECT = (
    "SELECT b.id, b.account_id, b.name, b.folder, b.role, EXISTS (SELECT 1 FROM subscriptions s "
    "WHERE s.account_id = b.account_id AND s.name = b.name), b.uidvalidity, b.uidnext, "
    "b.highestmodseq, b.sort_order FROM mailboxes b")


def mailbox_row(sql, account_id, name=None, role=None, mailbox_pk=None):
    """The ``Mailbox`` fields (id .. sort_order; ``subscribed`` from the
    subscriptions table, not the row's dead column) of the account's mailbox
    by id, role or name, or None: every IMAP command naming a mailbox and
    each Sieve fileinto come here."""
    column, value = ("id", mailbox_pk) if mailbox_pk is not None else \
        ("role", role) if role is not None else ("name", name)
    return sql.one(MAILBOX_SELECT + f" WHERE b.account_id = ? AND b.{column} = ?", (account_id, value))


def mailbox_rows(sql, account_id):
    """``mailbox_row`` of each of the account's mailboxes, by name (LIST)."""
    return sql.all(MAILBOX_SELECT + " WHERE b.account_id = ? ORDER BY b.name", (account_id,))


def account_mailbox_counts(sql, account_id):
    """``{mailbox pk: (messages, unseen, size)}`` of the account's mailboxes
    that hold messages."""
    rows = sql.all("SELECT mm.mailbox_id, COUNT(*), SUM(1 - (mm.flags & 1)), SUM(m.size) "
                   "FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id "
                   "JOIN mailboxes b ON b.id = mm.mailbox_id WHERE b.account_id = ? "
                   "GROUP BY mm.mailbox_id", (account_id,))
    return {r[0]: (r[1], int(r[2] or 0), int(r[3] or 0)) for r in rows}


def subscription_names(sql, account_id):
    """The account's subscribed names (LIST, LSUB)."""
    return {r[0] for r in sql.all("SELECT name FROM subscriptions WHERE account_id = ?", (account_id,))}


def shared_mailbox_rows(sql, account_id, grantees):
    """``mailbox_row`` fields (``subscribed`` 0: not shown for shared
    mailboxes), the owner's address and the rights granted, of the other
    accounts' mailboxes with a grant to one of ``grantees``: the Other Users
    namespace of every LIST."""
    marks = ", ".join("?" * len(grantees))
    return sql.all(
        "SELECT b.id, b.account_id, b.name, b.folder, b.role, 0, b.uidvalidity, b.uidnext, "
        "b.highestmodseq, b.sort_order, a.address, g.rights FROM mailboxes b "
        "JOIN acl g ON g.mailbox_id = b.id JOIN accounts a ON a.id = b.account_id "
        f"WHERE g.grantee IN ({marks}) AND b.account_id != ?", (*grantees, account_id))


def mailbox_counts(sql, mailbox_pk, size=True):
    """``(messages, unseen, size)`` of the mailbox (``size`` 0 unless asked:
    it joins each message's row, which STATUS without SIZE does not need)."""
    if size:
        row = sql.one("SELECT COUNT(*), SUM(1 - (mm.flags & 1)), SUM(m.size) FROM mailbox_messages mm "
                      "JOIN messages m ON m.id = mm.message_id WHERE mm.mailbox_id = ?", (mailbox_pk,))
    else:
        row = sql.one("SELECT COUNT(*), SUM(1 - (flags & 1)), 0 FROM mailbox_messages "
                      "WHERE mailbox_id = ?", (mailbox_pk,))
    return row[0], int(row[1] or 0), int(row[2] or 0)


def active_script(sql, account_id):
    """``(id, name, content, active, created, updated)`` of the account's
    active Sieve script, or None: a delivery's Sieve step when its cache is stale."""
    return sql.one("SELECT id, name, content, active, created, updated FROM sieve_scripts "
                   "WHERE account_id = ? AND active = ?", (account_id, True))


# --- per IMAP command -------------------------------------------------------------

def flag_rows(sql, mailbox_pk, uids=None, changed_since=None):
    """``[(uid, modseq, bits, keywords text)]`` ascending by UID: bulk FETCH FLAGS
    of a whole mailbox, and the flag updates of NOOP/IDLE."""
    where, params, wanted = uid_sql("uid", uids)
    since = ""
    if changed_since is not None:
        since, params = " AND modseq > ?", (changed_since, *params)
    rows = sql.all("SELECT uid, modseq, flags, keywords FROM mailbox_messages WHERE mailbox_id = ?"
                   + since + where + " ORDER BY uid", (mailbox_pk, *params))
    return rows if wanted is None else [r for r in rows if r[0] in wanted]


def expunged_uids(sql, mailbox_pk, modseq):
    """UIDs expunged from the mailbox after ``modseq``, ascending."""
    return [r[0] for r in sql.all("SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? "
                                  "ORDER BY uid", (mailbox_pk, modseq))]


def mailbox_changes(sql, account_id, mailbox_pk, modseq):
    """``(highestmodseq, flag rows, expunged UIDs)`` of the account's mailbox
    changed after ``modseq``, or None when the mailbox is gone: the untagged
    updates an IMAP session sends after any command that saw a change."""
    row = sql.one("SELECT highestmodseq FROM mailboxes WHERE id = ? AND account_id = ?",
                  (mailbox_pk, account_id))
    if row is None:
        return None
    return row[0], flag_rows(sql, mailbox_pk, None, modseq), expunged_uids(sql, mailbox_pk, modseq)


def recent_uid(sql, mailbox_pk):
    """The mailbox's ``recent_uid`` (0 when it is gone): every \\Recent claim checks it first."""
    row = sql.one("SELECT recent_uid FROM mailboxes WHERE id = ?", (mailbox_pk,))
    return (row[0] or 0) if row else 0


def claim_recent(sql, mailbox_pk, upto):
    """Raise the mailbox's ``recent_uid`` to ``upto`` (in a write transaction;
    the row locked on PostgreSQL); its value before, None when the mailbox is gone."""
    row = sql.one("SELECT recent_uid FROM mailboxes WHERE id = ?" + ("" if sql.sqlite else " FOR UPDATE"),
                  (mailbox_pk,))
    if row is None:
        return None
    if row[0] < upto:
        sql.run("UPDATE mailboxes SET recent_uid = ? WHERE id = ?", (upto, mailbox_pk))
    return row[0]


def record_rows(sql, mailbox_pk, uids=None, parsed=False):
    """The ``MessageRecord`` fields (keywords as text) of the mailbox's
    ``uids`` (all when None), ascending by UID; with ``parsed`` the envelope
    and structure JSON too. FETCH of anything but flags or bytes comes here."""
    where, params, wanted = uid_sql("mm.uid", uids)
    rows = sql.all("SELECT mm.uid, mm.modseq, mm.flags, mm.keywords, m.id, m.thread_id, m.size, "
                   "m.internal_date, mm.saved_at" + (", m.envelope, m.structure" if parsed else "") +
                   " FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id "
                   "WHERE mm.mailbox_id = ?" + where + " ORDER BY mm.uid", (mailbox_pk, *params))
    return rows if wanted is None else [r for r in rows if r[0] in wanted]


def message_location(sql, *, mailbox_pk=None, uid=None, account_id=None, message_pk=None):
    """``(stem, folder, bits, address)`` of one stored copy of a message, by
    mailbox and UID or by account and message id; None when there is none.
    Every message read (FETCH BODY[], JMAP blob download) starts here."""
    if message_pk is None:
        where, params = "mm.mailbox_id = ? AND mm.uid = ?", (mailbox_pk, uid)
    else:
        where, params = "m.id = ? AND m.account_id = ?", (message_pk, account_id)
    return sql.one(
        "SELECT m.stem, b.folder, mm.flags, a.address FROM mailbox_messages mm "
        "JOIN messages m ON m.id = mm.message_id JOIN mailboxes b ON b.id = mm.mailbox_id "
        "JOIN accounts a ON a.id = b.account_id WHERE " + where + " LIMIT 1", params)


def mailbox_uids(sql, mailbox_pk):
    """Every UID of the mailbox, ascending (SEARCH ALL)."""
    return [r[0] for r in sql.all("SELECT uid FROM mailbox_messages WHERE mailbox_id = ? ORDER BY uid",
                                  (mailbox_pk,))]


def mailbox_owner(sql, mailbox_pk):
    """``(account id, address)`` of the mailbox's owner, or None: the one
    lookup IMAP STORE makes before the flag rule runs."""
    return sql.one("SELECT a.id, a.address FROM mailboxes b JOIN accounts a ON a.id = b.account_id "
                   "WHERE b.id = ?", (mailbox_pk,))


def flag_targets(sql, account_id, *, mailbox_pk=None, uids=None, message_pks=None):
    """The memberships a flag change acts on: ``[(mailbox pk, uid, modseq, bits,
    keywords text, stem, message pk, folder)]``, either the UIDs of one mailbox
    (IMAP STORE) or every membership of some messages (JMAP Email/set)."""
    head = ("SELECT mm.mailbox_id, mm.uid, mm.modseq, mm.flags, mm.keywords, m.stem, m.id, b.folder "
            "FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id "
            "JOIN mailboxes b ON b.id = mm.mailbox_id WHERE b.account_id = ?")
    if message_pks is not None:
        out = []
        pks = sorted(set(message_pks))
        for i in range(0, len(pks), UID_IN_LIMIT):
            chunk = pks[i:i + UID_IN_LIMIT]
            out += sql.all(head + f" AND mm.message_id IN ({', '.join('?' * len(chunk))})",
                           (account_id, *chunk))
        return out
    where, params, wanted = uid_sql("mm.uid", uids)
    rows = sql.all(head + " AND mm.mailbox_id = ?" + where, (account_id, mailbox_pk, *params))
    wanted = set(uids) if uids is not None else None
    return rows if wanted is None else [r for r in rows if r[1] in wanted]


def write_flags(sql, modseq, updates):
    """Store ``[(mailbox pk, uid, bits, keywords text)]`` at ``modseq`` and raise
    each mailbox's HIGHESTMODSEQ: IMAP STORE and JMAP keyword changes."""
    sql.many("UPDATE mailbox_messages SET flags = ?, keywords = ?, modseq = ? "
             "WHERE mailbox_id = ? AND uid = ?",
             [(bits, kw, modseq, box, uid) for box, uid, bits, kw in updates])
    sql.many("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?",
             [(modseq, box) for box in sorted({u[0] for u in updates})])


# --- per delivered message ----------------------------------------------------------

def insert_messages(txn, batch):
    """Commit the rows of staged messages (``NewMessage``) in ``txn``.

    Returns one ``Stored`` or exception per item, in order: an item over quota
    or for a mailbox that is gone gets its exception, the others are stored.

    Written for a batch: every account in the batch takes one MODSEQ (the batch
    commits atomically, so no client can tell its messages apart in time),
    quota and UIDs are counted in Python and written once.
    """
    sql = txn.sql
    results = [None] * len(batch)
    now = time.time()
    acct_state, box_state = {}, {}
    for item in batch:
        aid = item.account.id
        if aid not in acct_state:
            modseq = txn.next_modseq(aid)
            used, quota, max_msgs = sql.one(
                "SELECT used_bytes, quota_bytes, quota_messages FROM accounts WHERE id = ?", (aid,))
            acct_state[aid] = {"modseq": modseq, "used": used, "quota": quota, "added": 0,
                               "docs": [], "boxes": set(), "max_msgs": max_msgs,
                               "msgs": None if max_msgs is None else message_count(sql, aid)}
        for box in (item.mailbox, *(m[0] for m in item.also)):
            if box.id not in box_state:
                row = sql.one("SELECT uidnext, uidvalidity FROM mailboxes WHERE id = ? AND account_id = ?",
                              (box.id, aid))
                box_state[box.id] = None if row is None else {"next": row[0], "uidvalidity": row[1]}
    for i, item in enumerate(batch):
        acct, box, p = item.account, item.mailbox, item.parsed
        a = acct_state[acct.id]
        gone = [b for b in (box, *(m[0] for m in item.also)) if box_state[b.id] is None]
        if gone:
            results[i] = MailboxNotFound(gone[0].name)
            continue
        b = box_state[box.id]
        if item.dedupe_window and p.msgid:
            dup = sql.one(
                "SELECT mm.uid, mm.message_id FROM messages m JOIN mailbox_messages mm "
                "ON mm.message_id = m.id WHERE m.account_id = ? AND m.msgid = ? "
                "AND m.content_hash = ? AND m.received_at > ? AND mm.mailbox_id = ?",
                (acct.id, p.msgid[:998], p.content_hash, now - item.dedupe_window, box.id))
            if dup:
                results[i] = Stored(box.id, b["uidvalidity"], dup[0], dup[1], duplicate=True)
                continue
        size = item.size
        if a["quota"] is not None and a["used"] + a["added"] + size > a["quota"]:
            results[i] = QuotaExceeded(acct.address)
            continue
        if a["max_msgs"] is not None and a["msgs"] + 1 + len(item.also) > a["max_msgs"]:
            results[i] = QuotaExceeded(acct.address)     # RFC 9208 MESSAGE (storage.quota)
            continue
        modseq = a["modseq"]
        blob_id, env_json, structure_json, summary_json, doc, base = item.prepare()
        thread_pk, new_thread = _thread_for(txn, acct.id, p, base, now)
        msg_pk = sql.one(
            "INSERT INTO messages (account_id, thread_id, stem, blob_id, content_hash, size, "
            "internal_date, received_at, sent_at, msgid, subject, from_sort, to_sort, "
            "has_attachment, preview, envelope, structure, summary) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (acct.id, thread_pk, item.stem, blob_id,
             p.content_hash, size, item.internal_date or now, now, p.sent_at,
             p.msgid[:998] if p.msgid else None, p.subject[:4000], p.from_sort, p.to_sort,
             bool(p.has_attachment), p.preview, env_json, structure_json, summary_json))[0]
        first_uid = None
        for member, bits, _kw in item.also:
            txn.file_op("link", acct.maildir_key, box.folder, item.stem, item.bits, member.folder, bits)
        for member, bits, keywords in ((box, item.bits, item.keywords), *item.also):
            mb = box_state[member.id]
            uid = mb["next"]
            mb["next"] += 1
            mb["modseq"] = modseq
            first_uid = uid if first_uid is None else first_uid
            sql.run("INSERT INTO mailbox_messages (mailbox_id, uid, message_id, modseq, flags, "
                    "keywords, saved_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (member.id, uid, msg_pk, modseq, bits, flagbits.encode_keywords(keywords), now))
            a["boxes"].add(member.id)
        a["added"] += size
        if a["msgs"] is not None:
            a["msgs"] += 1 + len(item.also)
        a["docs"].append((msg_pk, doc))
        txn.log(acct.id, "Email", [msg_pk], "c")
        txn.log(acct.id, "Thread", [thread_pk], "c" if new_thread else "u")
        results[i] = Stored(box.id, b["uidvalidity"], first_uid, msg_pk)
    sql.many("UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE id = ?",
             [(b["next"], b["modseq"], bid) for bid, b in box_state.items()
              if b is not None and "modseq" in b])
    for aid, a in acct_state.items():
        if not a["docs"]:
            continue
        sql.run("UPDATE accounts SET used_bytes = used_bytes + ? WHERE id = ?", (a["added"], aid))
        txn.log(aid, "Mailbox", sorted(a["boxes"]), "u")
        txn.store.fulltext.index(txn, aid, a["docs"])
        txn.publish(aid, {"Email", "Thread", "Mailbox", "EmailDelivery"}, a["boxes"])
    return results


def message_count(sql, account_id):
    """The account's memberships (messages in mailboxes): RFC 9208 MESSAGE
    usage (``storage.quota``)."""
    return sql.one("SELECT COUNT(*) FROM mailbox_messages mm JOIN mailboxes b "
                   "ON b.id = mm.mailbox_id WHERE b.account_id = ?", (account_id,))[0]


def _thread_for(txn, account_id, p, base, now):
    """RFC 5256 REFERENCES threading, kept incrementally: a message joins the
    thread of any Message-ID it shares (its own or one it references); a
    reply with no known parent joins a recent thread of the same base subject.
    A message whose references reach several threads merges them into the
    oldest: the other threads' messages move there (their threadId changes
    once, logged as Email and Thread changes) and the emptied threads are
    destroyed."""
    sql = txn.sql
    ids = list(dict.fromkeys(i[:998] for i in ([p.msgid] if p.msgid else []) + p.references))[:100]
    found = {}
    if ids:
        found = dict(sql.all(
            f"SELECT msgid, thread_id FROM thread_refs WHERE account_id = ? "
            f"AND msgid IN ({', '.join('?' * len(ids))})", (account_id, *ids)))
    thread_pk = min(found.values()) if found else None
    is_reply = bool(p.references) or base != " ".join(p.subject.split()).lower()
    if thread_pk is None and is_reply and base:
        row = sql.one("SELECT id FROM threads WHERE account_id = ? AND subject = ? AND updated > ? "
                      "ORDER BY updated DESC LIMIT 1", (account_id, base, now - 30 * 86400))
        thread_pk = row[0] if row else None
    new = thread_pk is None
    if new:
        thread_pk = sql.one("INSERT INTO threads (account_id, subject, updated) VALUES (?, ?, ?) "
                            "RETURNING id", (account_id, base, now))[0]
    else:
        sql.run("UPDATE threads SET updated = ? WHERE id = ?", (now, thread_pk))
    others = sorted(set(found.values()) - {thread_pk})
    if others:
        _merge_threads(txn, account_id, thread_pk, others)
    missing = [(account_id, i, thread_pk) for i in ids if i not in found]
    if missing:
        sql.many("INSERT INTO thread_refs (account_id, msgid, thread_id) VALUES (?, ?, ?)", missing)
    return thread_pk, new


def _merge_threads(txn, account_id, into, others):
    sql, marks = txn.sql, ", ".join("?" * len(others))
    moved = [r[0] for r in sql.all(f"SELECT id FROM messages WHERE account_id = ? AND thread_id IN ({marks})",
                                   (account_id, *others))]
    sql.run(f"UPDATE messages SET thread_id = ? WHERE account_id = ? AND thread_id IN ({marks})",
            (into, account_id, *others))
    sql.run(f"UPDATE thread_refs SET thread_id = ? WHERE account_id = ? AND thread_id IN ({marks})",
            (into, account_id, *others))
    sql.run(f"DELETE FROM threads WHERE account_id = ? AND id IN ({marks})", (account_id, *others))
    txn.log(account_id, "Email", moved, "u")
    txn.log(account_id, "Thread", others, "d")
