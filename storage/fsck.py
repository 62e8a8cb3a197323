"""``roost fsck``: check and repair the store's invariants; rebuild from Maildir.

Invariants: every mailbox row has its folder; every message row has its file;
every file in ``cur/``/``new/`` has a row (a file without one is mail that the
database does not know, so repair adopts it rather than deleting it); each
account's ``used_bytes`` equals the sum of its message sizes; each mailbox's
``uidnext`` is above its highest UID. ``rebuild`` recreates every account's
mailboxes and message rows from the Maildir alone (accounts, passwords and
aliases stay; accounts found only on disk are created without a password).
"""

import os

from sqlalchemy import delete, func, select, update

from . import mime
from .maildir import name_for
from .schema import (accounts, changes, expunged, mailbox_messages, mailboxes, messages,
                     thread_refs, threads)
from .store import NewMessage, Stored


def check(store, repair=False):
    report = []
    if not hasattr(store.blobs, "stored"):
        return ["blob store is not a Maildir; nothing to check"]
    for acct in store.accounts():
        key = acct.maildir_key
        boxes = store.mailboxes(acct.id)
        for box in boxes:
            path = store.blobs.folder_path(key, box.folder)
            if not os.path.isdir(os.path.join(path, "cur")):
                report.append(f"{acct.address}: folder of {box.name} missing" +
                              (" (created)" if repair else ""))
                if repair:
                    store.blobs.create_folder(key, box.folder)
            with store.engine.connect() as conn:
                rows = conn.execute(
                    select(mailbox_messages.c.uid, messages.c.stem, mailbox_messages.c.flags)
                    .join(messages, messages.c.id == mailbox_messages.c.message_id)
                    .where(mailbox_messages.c.mailbox_id == box.id)).all()
                max_uid = conn.execute(select(func.max(mailbox_messages.c.uid))
                                       .where(mailbox_messages.c.mailbox_id == box.id)).scalar() or 0
            on_disk = {stem: (bits, p) for stem, bits, p in store.blobs.stored(key, box.folder)}
            known = set()
            for uid, stem, bits in rows:
                known.add(stem)
                if stem not in on_disk:
                    report.append(f"{acct.address}: {box.name} UID {uid}: message file missing")
            # UIDNEXT first: adopted files below take their UIDs from it.
            if box.uidnext <= max_uid:
                report.append(f"{acct.address}: {box.name}: UIDNEXT {box.uidnext} <= UID {max_uid}" +
                              (" (fixed)" if repair else ""))
                if repair:
                    with store._write() as (conn, _after):
                        conn.execute(update(mailboxes).where(mailboxes.c.id == box.id)
                                     .values(uidnext=max_uid + 1))
            orphans = [s for s in on_disk if s not in known]
            if orphans:
                report.append(f"{acct.address}: {box.name}: {len(orphans)} files without a row" +
                              (" (adopted)" if repair else ""))
                if repair:
                    _adopt(store, acct, box, [(s, *on_disk[s]) for s in orphans])
        acct = store.account_by_id(acct.id)   # adopting files above changed used_bytes
        with store.engine.connect() as conn:
            used = conn.execute(select(func.coalesce(func.sum(messages.c.size), 0))
                                .where(messages.c.account_id == acct.id)).scalar()
        if used != acct.used_bytes:
            report.append(f"{acct.address}: used bytes {acct.used_bytes} should be {used}" +
                          (" (fixed)" if repair else ""))
            if repair:
                with store._write() as (conn, _after):
                    conn.execute(update(accounts).where(accounts.c.id == acct.id).values(used_bytes=used))
    report.extend(_search_drift(store, repair))
    if not report:
        report.append("store is consistent")
    return report


def _search_drift(store, repair):
    """Messages the search index lacks, and entries of messages that are gone."""
    report, backend = [], store.fulltext
    for acct in store.accounts():
        missing = backend.drift(store, acct.id)
        if missing:
            report.append(f"{acct.address}: search index lacks {len(missing)} messages" +
                          (" (indexed)" if repair else ""))
            if repair:
                backend.reindex(store, acct.id, missing)
    with store._read() as conn:
        stale = backend.stale(conn)
    count = sum(len(v) for v in stale.values())
    if count:
        report.append(f"search index has {count} entries of removed messages" +
                      (" (removed)" if repair else ""))
        if repair:
            backend.remove_stale(store, stale)
    return report


def _adopt(store, acct, box, files):
    """Give existing message files rows, in place (no copy)."""
    items = []
    for stem, bits, path in files:
        with open(path, "rb") as f:
            data = f.read()
        items.append(NewMessage(acct, box, stem, data, mime.ParsedMessage(data), bits=bits,
                                internal_date=os.stat(path).st_mtime))
    out = []
    for i in range(0, len(items), 200):
        out.extend(store.insert_messages(items[i:i + 200]))
    return sum(1 for r in out if isinstance(r, Stored))


def rebuild(store):
    """Recreate mailboxes and message rows of every account from its Maildir."""
    report = []
    known = {a.maildir_key: a for a in store.accounts()}
    for key in store.blobs.accounts():
        if key not in known:
            domain, local = key.split("/", 1)
            known[key] = store.add_account(f"{local}@{domain}", None)
            report.append(f"{known[key].address}: found on disk, created without a password")
    for key, acct in sorted(known.items()):
        with store._write() as (conn, _after):
            box_ids = select(mailboxes.c.id).where(mailboxes.c.account_id == acct.id)
            store.fulltext.remove_account(conn, _after, acct.id)
            conn.execute(delete(mailbox_messages).where(mailbox_messages.c.mailbox_id.in_(box_ids)))
            conn.execute(delete(expunged).where(expunged.c.mailbox_id.in_(box_ids)))
            conn.execute(delete(messages).where(messages.c.account_id == acct.id))
            for table in (thread_refs, threads, mailboxes, changes):
                conn.execute(delete(table).where(table.c.account_id == acct.id))
            conn.execute(update(accounts).where(accounts.c.id == acct.id).values(used_bytes=0))
        if not os.path.isdir(os.path.join(store.blobs.root, key)):
            store.blobs.create_folder(key, "")
        roles = {name: role for name, role in _default_roles()}
        total = 0
        for folder in store.blobs.folders(key):
            name = name_for(folder)
            box = store.create_mailbox(acct.id, name, roles.get(name)) if name != "INBOX" \
                else store.create_mailbox(acct.id, "INBOX", "inbox")
            total += _adopt(store, store.account_by_id(acct.id), box, store.blobs.stored(key, folder))
        for name, role in _default_roles():
            try:
                store.mailbox(acct.id, name)
            except Exception:  # noqa: BLE001 - MailboxNotFound: recreate the default
                store.create_mailbox(acct.id, name, role)
        report.append(f"{acct.address}: rebuilt {total} messages")
    return report


def _default_roles():
    from .store import DEFAULT_MAILBOXES
    return DEFAULT_MAILBOXES
