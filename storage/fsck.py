"""``roost fsck``: check and repair the store's invariants; rebuild from Maildir.

Invariants: every mailbox row has its folder; every message row has its file;
every file in ``cur/``/``new/`` has a row (a file without one is mail that the
database does not know, so repair adopts it rather than deleting it); each
account's ``used_bytes`` equals the sum of its message sizes; each mailbox's
``uidnext`` is above its highest UID. ``rebuild`` recreates every account's
mailboxes and message rows from the Maildir alone (accounts, passwords and
aliases stay; accounts found only on disk are created without a password).
A rebuild keeps keywords (from each folder's ``roost-keywords`` mirror, see
``storage.maildir``) and keeps hard-linked copies (the same file, by inode
and stem, in several folders) as one message in several mailboxes. A repair
also renames files whose info suffix does not mirror their row's flags (a
crash between a commit and its rename) and compacts the keywords mirrors.
"""

import os

from sqlalchemy import delete, func, select, update

from . import blobops
from . import flags as flagbits
from . import mime
from .accounts import clear_mail
from .blobs import BlobRef
from .errors import MailboxNotFound
from .mailboxes import DEFAULT_MAILBOXES
from .maildir import name_for
from .model import NewMessage, Stored
from .schema import accounts, changes, mailbox_messages, mailboxes, messages


def check(store, repair=False):
    report = []
    if not hasattr(store.blobs, "stored"):
        return ["blob store is not a Maildir; nothing to check"]
    # First what interrupted transactions still owed the files: what is left
    # after that and has no row is mail the database never knew, never the
    # remains of a move or an expunge.
    redone = blobops.replay(store)
    if redone:
        report.append(f"finished {redone} file operations of interrupted transactions")
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
            with store.reader() as conn:
                rows = conn.execute(
                    select(mailbox_messages.c.uid, messages.c.stem, mailbox_messages.c.flags,
                           mailbox_messages.c.keywords)
                    .join(messages, messages.c.id == mailbox_messages.c.message_id)
                    .where(mailbox_messages.c.mailbox_id == box.id)).all()
                max_uid = conn.execute(select(func.max(mailbox_messages.c.uid))
                                       .where(mailbox_messages.c.mailbox_id == box.id)).scalar() or 0
            on_disk = {stem: (bits, p) for stem, bits, p in store.blobs.stored(key, box.folder)}
            known, misnamed, keywords = set(), 0, {}
            for uid, stem, bits, kws in rows:
                known.add(stem)
                if kws:
                    keywords[stem] = flagbits.decode_keywords(kws)
                if stem not in on_disk:
                    report.append(f"{acct.address}: {box.name} UID {uid}: message file missing")
                elif flagbits.maildir_info(on_disk[stem][0]) != flagbits.maildir_info(bits):
                    misnamed += 1
                    if repair:
                        store.blobs.set_flags(BlobRef(key, box.folder, stem, on_disk[stem][0]), bits)
            if misnamed:
                report.append(f"{acct.address}: {box.name}: {misnamed} file names do not mirror flags" +
                              (" (renamed)" if repair else ""))
            if repair and keywords != store.blobs.keywords(key, box.folder):
                store.blobs.write_keywords(key, box.folder, keywords)
            # UIDNEXT first: adopted files below take their UIDs from it.
            if box.uidnext <= max_uid:
                report.append(f"{acct.address}: {box.name}: UIDNEXT {box.uidnext} <= UID {max_uid}" +
                              (" (fixed)" if repair else ""))
                if repair:
                    with store.write() as txn:
                        txn.conn.execute(update(mailboxes).where(mailboxes.c.id == box.id)
                                         .values(uidnext=max_uid + 1))
            orphans = [s for s in on_disk if s not in known]
            if orphans:
                report.append(f"{acct.address}: {box.name}: {len(orphans)} files without a row" +
                              (" (adopted)" if repair else ""))
                if repair:
                    kws = store.blobs.keywords(key, box.folder)
                    _adopt(store, acct, [[(box, s, *on_disk[s], kws.get(s, ()))] for s in orphans])
        acct = store.account_by_id(acct.id)   # adopting files above changed used_bytes
        with store.reader() as conn:
            used = conn.execute(select(func.coalesce(func.sum(messages.c.size), 0))
                                .where(messages.c.account_id == acct.id)).scalar()
        if used != acct.used_bytes:
            report.append(f"{acct.address}: used bytes {acct.used_bytes} should be {used}" +
                          (" (fixed)" if repair else ""))
            if repair:
                with store.write() as txn:
                    txn.conn.execute(update(accounts).where(accounts.c.id == acct.id).values(used_bytes=used))
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
    with store.reader() as conn:
        stale = backend.stale(conn)
    count = sum(len(v) for v in stale.values())
    if count:
        report.append(f"search index has {count} entries of removed messages" +
                      (" (removed)" if repair else ""))
        if repair:
            backend.remove_stale(store, stale)
    return report


def _adopt(store, acct, groups):
    """Give existing message files rows, in place (no copy). Each group is one
    message: ``[(Mailbox, stem, bits, path, keywords)]``, its first file the
    one read, the others hard links of it in further mailboxes."""
    items = []
    for (box, stem, bits, path, kws), *links in groups:
        with open(path, "rb") as f:
            data = f.read()
        items.append(NewMessage(acct, box, stem, data, mime.ParsedMessage(data), bits=bits,
                                keywords=kws, internal_date=os.stat(path).st_mtime,
                                also=tuple((b, bt, k) for b, _s, bt, _p, k in links)))
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
    roles = dict(DEFAULT_MAILBOXES)
    for key, acct in sorted(known.items()):
        with store.write() as txn:
            store.fulltext.remove_account(txn, acct.id)
            clear_mail(txn.conn, acct.id)
            for table in (mailboxes, changes):
                txn.conn.execute(delete(table).where(table.c.account_id == acct.id))
            txn.conn.execute(update(accounts).where(accounts.c.id == acct.id).values(used_bytes=0))
        if not os.path.isdir(os.path.join(store.blobs.root, key)):
            store.blobs.create_folder(key, "")
        groups = {}   # (device, inode, stem) -> the files of one message
        for folder in store.blobs.folders(key):
            name = name_for(folder)
            box = store.create_mailbox(acct.id, name, roles.get(name))
            kws = store.blobs.keywords(key, folder)
            for stem, bits, path in sorted(store.blobs.stored(key, folder)):
                st = os.stat(path)
                groups.setdefault((st.st_dev, st.st_ino, stem), []).append(
                    (box, stem, bits, path, kws.get(stem, ())))
        total = _adopt(store, store.account_by_id(acct.id), list(groups.values()))
        for name, role in DEFAULT_MAILBOXES:
            try:
                store.mailbox(acct.id, name)
            except MailboxNotFound:
                store.create_mailbox(acct.id, name, role)
        report.append(f"{acct.address}: rebuilt {total} messages")
    return report
