"""The one delivery path: LMTP, ``roost deliver``, IMAP APPEND, JMAP import and
``roost import`` all call ``Delivery.deliver`` (or ``append``).

Order, per DESIGN.md section 4: parse once; resolve aliases; check size; write
each recipient's copy to ``tmp/`` and fsync it (in the caller's thread, so
copies are written in parallel); hand the staged rows to the group committer,
which commits many deliveries in one database transaction (one fsync); only
then rename the files into ``cur/`` and return. A caller acknowledges the
message (LMTP 250, APPEND OK) only after ``deliver`` returns, so everything
acknowledged is durable. ``recover`` finishes what a crash interrupted.

Methods here block: call them from a worker thread, never on the event loop.
"""

import logging
import os
import queue
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from . import flags as flagbits
from . import mime
from .errors import MailboxNotFound, MessageTooLarge, QuotaExceeded, TemporaryFailure
from .schema import accounts, mailbox_messages, mailboxes, messages
from .store import NewMessage, Stored

log = logging.getLogger("roost.delivery")

DEFAULT_MAX_SIZE = 50 * 1024 * 1024
DEFAULT_DEDUPE_WINDOW = 24 * 3600
IMPORT_THREADS = 8

# Outcome of one recipient.
DELIVERED, DUPLICATE, NO_SUCH_USER, OVER_QUOTA, TOO_LARGE, TEMPORARY = (
    "delivered", "duplicate", "no-such-user", "over-quota", "too-large", "temporary")


@dataclass
class DeliveryResult:
    recipient: str
    status: str
    stored: list = field(default_factory=list)   # Stored, one per local mailbox
    reason: str = ""

    @property
    def ok(self):
        return self.status in (DELIVERED, DUPLICATE)


class GroupCommitter:
    """One thread that commits queued deliveries in batches (group commit)."""

    def __init__(self, store, max_batch=256):
        self.store = store
        self.max_batch = max_batch
        self._queue = queue.Queue()
        self._thread = None
        self._lock = threading.Lock()

    def submit(self, items):
        """Commit ``items`` (NewMessage); blocks until committed. Returns results in order."""
        for item in items:
            item.prepare()   # CPU work here, in the caller's thread, not the committer's
        fut = Future()
        self._ensure_thread()
        self._queue.put((items, fut))
        return fut.result()

    def _ensure_thread(self):
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="roost-commit", daemon=True)
                self._thread.start()

    def close(self):
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._queue.put(None)
                self._thread.join(timeout=30)
            self._thread = None

    def _run(self):
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            count = len(job[0])
            while count < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                jobs.append(nxt)
                count += len(nxt[0])
            items = [item for its, _f in jobs for item in its]
            try:
                results = self.store.insert_messages(items)
            except Exception as exc:  # noqa: BLE001 - every waiter must get an answer
                if not isinstance(exc, (SQLAlchemyError, OSError)):
                    log.exception("delivery batch of %d failed", len(items))
                else:
                    log.error("delivery batch of %d failed: %s", len(items), exc)
                for item in items:
                    self.store.blobs.discard(item.account.maildir_key, item.mailbox.folder, item.stem)
                results = [TemporaryFailure(str(exc) or type(exc).__name__)] * len(items)
            pos = 0
            for its, fut in jobs:
                fut.set_result(results[pos:pos + len(its)])
                pos += len(its)


class Delivery:
    def __init__(self, store, *, max_size=DEFAULT_MAX_SIZE, dedupe_window=DEFAULT_DEDUPE_WINDOW):
        self.store = store
        self.max_size = max_size
        self.dedupe_window = dedupe_window
        self.committer = GroupCommitter(store)
        self._inboxes = {}

    def close(self):
        self.committer.close()

    def deliver(self, data, recipients, *, sender=None, mailbox=None, prepend=True, targets=None):
        """Deliver ``data`` to each address in ``recipients``.

        ``sender`` is the envelope sender (Return-Path); ``mailbox`` forces a
        mailbox name (``roost deliver --mailbox``) and falls back to INBOX when
        it does not exist; ``targets`` maps recipients to what ``store.resolve``
        already returned for them (LMTP resolves at RCPT). Returns one
        ``DeliveryResult`` per recipient.
        """
        results = [DeliveryResult(r, DELIVERED) for r in recipients]
        if len(data) > self.max_size:
            for r in results:
                r.status, r.reason = TOO_LARGE, f"message exceeds {self.max_size} bytes"
            return results
        parsed = mime.ParsedMessage(data)
        sender = (sender or "").strip()
        if sender.startswith("<") and sender.endswith(">"):
            sender = sender[1:-1]   # the null sender arrives as "<>"
        eol = b"\r\n" if data.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
        staged = []   # (result, NewMessage)
        for result in results:
            found = (targets or {}).get(result.recipient) or self.store.resolve(result.recipient)
            if not found:
                result.status, result.reason = NO_SUCH_USER, "no such user"
                continue
            for account, detail in found:
                box = self._target_mailbox(account, mailbox or detail)
                copy = data
                if prepend:
                    prefix = (b"Return-Path: <" + mime.bytes_of(sender) + b">" + eol +
                              b"Delivered-To: " + mime.bytes_of(result.recipient) + eol)
                    copy = prefix + data
                try:
                    stem = self.store.blobs.stage(account.maildir_key, box.folder, copy)
                except OSError as exc:
                    result.status, result.reason = TEMPORARY, f"cannot write: {exc.strerror}"
                    continue
                staged.append((result, NewMessage(
                    account, box, stem, copy, shifted(parsed, len(copy) - len(data)),
                    dedupe_window=self.dedupe_window)))
        self._commit(staged)
        return results

    def append(self, account, mailbox, data, *, flags=(), internal_date=None):
        """Store ``data`` in ``mailbox`` as given (IMAP APPEND, JMAP import).
        Returns ``Stored``; raises QuotaExceeded, MessageTooLarge, ..."""
        if len(data) > self.max_size:
            raise MessageTooLarge(f"message exceeds {self.max_size} bytes")
        bits, keywords = flagbits.split(flags)
        stem = self.store.blobs.stage(account.maildir_key, mailbox.folder, data)
        item = NewMessage(account, mailbox, stem, data, mime.ParsedMessage(data),
                          bits=bits, keywords=keywords, internal_date=internal_date)
        (result,) = self.committer.submit([item])
        if isinstance(result, Exception):
            raise result
        return result

    def import_many(self, account, mailbox, entries):
        """Bulk import ``[(data, flags, internal_date)]`` into one mailbox (``roost import``).
        Files are written and fsynced by a few threads at once, so the
        filesystem can share journal commits between them."""
        def stage(entry):
            data, flags, date = entry
            bits, keywords = flagbits.split(flags)
            stem = self.store.blobs.stage(account.maildir_key, mailbox.folder, data)
            return NewMessage(account, mailbox, stem, data, mime.ParsedMessage(data),
                              bits=bits, keywords=keywords, internal_date=date)
        entries = list(entries)
        if len(entries) < 4:
            items = [stage(e) for e in entries]
        else:
            with ThreadPoolExecutor(IMPORT_THREADS) as pool:
                items = list(pool.map(stage, entries))
        return self.committer.submit(items) if items else []

    def _target_mailbox(self, account, name):
        """The named mailbox (exact name first, then case-insensitively), else INBOX.

        INBOX is cached per account: it can be neither renamed nor deleted, so
        its id and folder never change (a deleted account's stale entry only
        makes that delivery fail as temporary, and is then dropped)."""
        if name:
            try:
                return self.store.mailbox(account.id, name)
            except MailboxNotFound:
                for box in self.store.mailboxes(account.id):
                    if box.name.lower() == name.lower():
                        return box
        inbox = self._inboxes.get(account.id)
        if inbox is None:
            inbox = self._inboxes[account.id] = self.store.mailbox(account.id, "INBOX")
        return inbox

    def _commit(self, staged):
        if not staged:
            return
        outcomes = self.committer.submit([item for _r, item in staged])
        for (result, item), outcome in zip(staged, outcomes):
            if isinstance(outcome, Stored):
                result.stored.append(outcome)
                if outcome.duplicate and result.status == DELIVERED:
                    result.status = DUPLICATE
            elif isinstance(outcome, QuotaExceeded):
                result.status, result.reason = OVER_QUOTA, "mailbox is full"
            elif isinstance(outcome, MailboxNotFound):
                self._inboxes.pop(item.account.id, None)
                result.status, result.reason = TEMPORARY, "mailbox is gone, try again"
            elif result.status in (DELIVERED, DUPLICATE):
                result.status, result.reason = TEMPORARY, str(outcome) or "try again later"


def shifted(parsed, delta):
    """``parsed`` with structure offsets moved by ``delta`` bytes of prepended headers."""
    if not delta:
        return parsed
    out = object.__new__(mime.ParsedMessage)
    for slot in mime.ParsedMessage.__slots__:
        setattr(out, slot, getattr(parsed, slot))
    out.structure = _shift(parsed.structure, delta)
    out.structure[mime.START] = 0
    return out


def _shift(node, delta):
    node = list(node)
    node[mime.START] += delta
    node[mime.BODY_START] += delta
    node[mime.END] += delta
    node[mime.CHILDREN] = [_shift(c, delta) for c in node[mime.CHILDREN]]
    if node[mime.MESSAGE]:
        node[mime.MESSAGE] = [node[mime.MESSAGE][0], _shift(node[mime.MESSAGE][1], delta)]
    return node


def recover(store):
    """Finish what a crash interrupted (run at start-up, before listening).

    Rows committed but not yet renamed are published; ``tmp/`` files with no
    row are deleted (never acknowledged). Returns (published, discarded).
    """
    published = discarded = 0
    if not hasattr(store.blobs, "accounts"):
        return published, discarded
    with store.engine.connect() as conn:
        rows = conn.execute(select(accounts.c.id, accounts.c.address)).all()
        for acct_id, address in rows:
            local, _, domain = address.rpartition("@")
            key = f"{domain}/{local}"
            boxes = conn.execute(select(mailboxes.c.folder).where(mailboxes.c.account_id == acct_id)).all()
            for (folder,) in boxes:
                stems = store.blobs.staged(key, folder)
                if not stems:
                    continue
                known = {}
                for i in range(0, len(stems), 500):
                    chunk = stems[i:i + 500]
                    known.update(conn.execute(
                        select(messages.c.stem, mailbox_messages.c.flags)
                        .join(mailbox_messages, mailbox_messages.c.message_id == messages.c.id)
                        .join(mailboxes, mailboxes.c.id == mailbox_messages.c.mailbox_id)
                        .where(mailboxes.c.account_id == acct_id, mailboxes.c.folder == folder,
                               messages.c.stem.in_(chunk))).all())
                for stem in stems:
                    if stem in known:
                        store.blobs.publish(key, folder, stem, known[stem])
                        published += 1
                    elif _abandoned(store.blobs, key, folder, stem):
                        store.blobs.discard(key, folder, stem)
                        discarded += 1
        conn.rollback()
    if published or discarded:
        log.info("recovery: published %d, discarded %d staged files", published, discarded)
    return published, discarded


_PID = re.compile(r"P(\d+)Q")


def _abandoned(blobs, key, folder, stem):
    """A staged file nobody will commit: its writer process is gone (or is us,
    at start-up, through PID reuse), or it is older than an hour."""
    m = _PID.search(stem)
    if m is None or int(m.group(1)) == os.getpid():
        return True
    try:
        os.kill(int(m.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    try:
        age = time.time() - os.stat(os.path.join(blobs.folder_path(key, folder), "tmp", stem)).st_mtime
    except OSError:
        return True
    return age > 3600
