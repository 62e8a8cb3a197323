"""File operations a committed transaction owes the blob store, made crash-safe.

A transaction that copies, moves, expunges or deletes decides in the database
and touches files only after its commit (``Txn.after``). So that a crash
between the two never leaves files that disagree with the database, each such
transaction also writes what it owes as ``file_ops`` rows, in the same
transaction (``Txn.file_op``). Once its hooks have run, the rows are deleted by
the next write of the same process (or at ``Store.close``), so the common case
costs no extra commit. After a crash, start-up recovery (``delivery.recover``)
and ``roost fsck`` call ``replay``: it redoes the rows in order (every operation
is idempotent: a link that exists, an unlink of a file already gone, a rename
already made are no-ops), so the files end where the database says, and fsck
never mistakes a file an interrupted move or expunge left behind for new mail.

Replay does not trust the log's order: for each file a row names it makes the
disk agree with the database as it is now (a copy exists in a folder exactly
when a membership there names the message), so a stale or partly deleted log
can never undo later work.

Operations: ``link`` (the copy at folder/stem also at dst_folder), ``unlink``
(this copy goes), ``mvfolder`` (folder renamed to dst_folder), ``rmfolder``
and ``rmaccount``.
"""

import logging

from sqlalchemy import and_, delete, select

from .blobs import BlobRef
from .durable import process_gone
from .schema import accounts, file_ops, mailbox_messages, mailboxes, messages

log = logging.getLogger("roost.recovery")


def _address(account_key):
    domain, _, local = account_key.partition("/")
    return f"{local}@{domain}"


def _exists(blobs, ref):
    try:
        blobs.get(ref, 0, 0)
        return True
    except FileNotFoundError:
        return False


def _reconcile_copies(conn, blobs, account, stem, folders):
    """Make the copies of message ``stem`` in ``folders`` match its memberships."""
    want = dict(conn.execute(
        select(mailboxes.c.folder, mailbox_messages.c.flags)
        .select_from(messages.join(mailbox_messages, mailbox_messages.c.message_id == messages.c.id)
                     .join(mailboxes, mailboxes.c.id == mailbox_messages.c.mailbox_id)
                     .join(accounts, accounts.c.id == messages.c.account_id))
        .where(and_(messages.c.stem == stem, accounts.c.address == _address(account)))).all())
    sources = [BlobRef(account, f, stem, b) for f, b in want.items()] + \
        [BlobRef(account, f, stem) for f in folders if f not in want]
    source = next((ref for ref in sources if _exists(blobs, ref)), None)
    for folder in folders:   # links first: a copy about to go may be the only source
        if folder in want and source is not None and not _exists(blobs, BlobRef(account, folder, stem)):
            blobs.link(source, folder, (), want[folder])
    for folder in folders:
        ref = BlobRef(account, folder, stem)
        if folder not in want and _exists(blobs, ref):
            blobs.unlink(ref)


def _owner_gone(token):
    """Is the process that wrote a row (its ``Txn.token`` starts with its pid) gone?"""
    pid = token.split(".", 1)[0]
    return not pid.isdigit() or process_gone(int(pid))


def replay(store):
    """Finish every file operation left in the log and clear it; returns how
    many there were."""
    if not hasattr(store.blobs, "accounts"):
        return 0
    blobs = store.blobs
    with store.write():
        pass   # its flush drops the rows of this process's finished operations
    with store.reader() as conn:
        # Another live process's rows are its own hooks' work, under way now.
        rows = [r for r in conn.execute(select(file_ops).order_by(file_ops.c.id)).all()
                if _owner_gone(r.txn)]
        for r in rows:
            if r.op in ("link", "unlink"):
                _reconcile_copies(conn, blobs, r.account, r.stem,
                                  [f for f in dict.fromkeys((r.folder, r.dst_folder)) if f is not None])
                continue
            address = _address(r.account)
            folders = {f for (f,) in conn.execute(
                select(mailboxes.c.folder).join(accounts, accounts.c.id == mailboxes.c.account_id)
                .where(accounts.c.address == address))}
            if r.op == "mvfolder" and r.dst_folder in folders and r.folder not in folders:
                blobs.rename_folder(r.account, r.folder, r.dst_folder)
            elif r.op == "rmfolder" and r.folder not in folders:
                blobs.delete_folder(r.account, r.folder)
            elif r.op == "rmaccount" and conn.execute(
                    select(accounts.c.id).where(accounts.c.address == address)).first() is None:
                blobs.delete_account(r.account)
        conn.rollback()
    if rows:
        ids = [r.id for r in rows]
        with store.write() as txn:
            for i in range(0, len(ids), 500):
                txn.conn.execute(delete(file_ops).where(file_ops.c.id.in_(ids[i:i + 500])))
        log.info("recovery: finished %d file operations of interrupted transactions", len(rows))
    return len(rows)
