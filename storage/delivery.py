"""The one delivery path: LMTP, the SMTP edge, ``roost deliver``, IMAP APPEND,
JMAP Email/import, Email/set create, local EmailSubmission and ``roost
import`` all call ``Delivery.store(Incoming(...))``.

An ``Incoming`` is either an envelope (bytes, sender, recipients: aliases are
followed and Return-Path/Delivered-To prepended) or bytes for given mailboxes
of one account (APPEND, JMAP, import: stored exactly as given, in every listed
mailbox as one message, in one transaction). ``store`` returns one
``DeliveryResult`` per recipient (or one per mailbox item) with a ``Status``;
each protocol turns statuses into replies in one place (LMTP: ``reply_for``;
IMAP and JMAP: ``DeliveryResult.stored_or_raise`` gives their store-error
mappers a typed error).

Order, per DESIGN.md section 4: parse once; resolve aliases; check size; route
(the inbound-policy step, ``Delivery.route``: Sieve plugs in there); write
each copy to the blob store and fsync it (several at once when there are
many); hand the staged rows to the group committer, which commits many
deliveries in one database transaction (one fsync); only then are the files
made visible and ``store`` returns. A caller acknowledges the message (LMTP
250, APPEND OK) only after ``store`` returns, so everything acknowledged is
durable. ``recover`` finishes what a crash interrupted. Each result is logged
as one "delivery" event (recipient, size, status, ms; server/logs.py).

A message's content never stops its delivery: ``mime.ParsedMessage``
degrades on any input, and should it still raise, or derive a value the
database cannot hold, ``parse``/``_derive`` log the exception and store the
message byte for byte with ``ParsedMessage.minimal`` (no envelope, one
text/plain part) instead of answering "try again" forever.

Methods here block: call them from a worker thread, never on the event loop.
"""

import enum
import logging
import os
import queue
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from . import blobops
from . import flags as flagbits
from . import mime
from .blobs import BlobRef
from .durable import process_gone
from .errors import (AccountNotFound, MailboxNotFound, MessageRejected, MessageTooLarge,
                     QuotaExceeded, TemporaryFailure)
from .model import NewMessage, Stored, maildir_key
from .schema import accounts, mailbox_messages, mailboxes, messages

log = logging.getLogger("roost.delivery")

DEFAULT_MAX_SIZE = 50 * 1024 * 1024
DEFAULT_DEDUPE_WINDOW = 24 * 3600
STAGE_THREADS = 8


class Status(enum.Enum):
    """The outcome of one recipient (or one mailbox item)."""
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    NO_SUCH_USER = "no-such-user"
    NO_SUCH_MAILBOX = "no-such-mailbox"
    OVER_QUOTA = "over-quota"
    TOO_LARGE = "too-large"
    TEMPORARY = "temporary"
    REJECTED = "rejected"       # Sieve reject/ereject: refused, ``reason`` says why (LMTP 550 5.7.1)
    DISCARDED = "discarded"     # Sieve discard, or a redirect without keep: accepted, nothing stored


(DELIVERED, DUPLICATE, NO_SUCH_USER, NO_SUCH_MAILBOX, OVER_QUOTA, TOO_LARGE, TEMPORARY, REJECTED,
 DISCARDED) = Status

_ERRORS = {NO_SUCH_USER: AccountNotFound, NO_SUCH_MAILBOX: MailboxNotFound,
           OVER_QUOTA: QuotaExceeded, TOO_LARGE: MessageTooLarge, TEMPORARY: TemporaryFailure,
           REJECTED: MessageRejected}


@dataclass
class Incoming:
    """One message to store. Either an envelope (``recipients``, ``sender``;
    optionally ``mailbox_name``, the mailbox to use when it exists, and
    ``targets``, what ``store.resolve`` already returned per recipient) or
    ``account`` with ``mailboxes`` (Mailbox records, the first gets the UID
    reported). ``dedupe`` and ``prepend`` default to on for envelopes and off
    for mailbox items."""
    data: bytes
    recipients: tuple = ()
    sender: str = None
    mailbox_name: str = None
    targets: dict = None
    account: object = None
    mailboxes: tuple = ()
    flags: tuple = ()
    internal_date: float = None
    dedupe: bool = None
    prepend: bool = None
    auth_headers: bytes = b""   # header lines prepended after Delivered-To (Authentication-Results, X-Spam-*)
    verdicts: dict = None       # spf, dkim, dmarc, arc, spam_score, spam, ... (protocols.mailauth)


@dataclass
class DeliveryResult:
    recipient: str
    status: Status
    stored: list = field(default_factory=list)   # Stored, one per local mailbox
    reason: str = ""

    @property
    def ok(self):
        """Accepted: stored, already stored, or dropped on purpose by the account's filter."""
        return self.status in (DELIVERED, DUPLICATE, DISCARDED)

    def stored_or_raise(self):
        """The first ``Stored``, or the typed store error of the status."""
        if self.ok and self.stored:
            return self.stored[0]
        raise _ERRORS.get(self.status, TemporaryFailure)(self.reason or self.status.value)


@dataclass(frozen=True)
class Route:
    """Where one recipient's copy goes: a mailbox, with flags."""
    mailbox: object
    flags: tuple = ()


@dataclass
class Plan:
    """What ``Delivery.route`` decided for one recipient's copy: its
    ``routes`` (one message in each mailbox); ``data``, this copy's whole
    bytes when Sieve's editheader changed them (they replace the prepended
    headers and the shared bytes); ``status`` REJECTED or DISCARDED (with
    ``reason``) when nothing is stored; ``after(result)``, run once the copy is
    committed and accepted, before ``store`` returns (Sieve's redirect,
    vacation, notify, duplicate ids, error notice); ``filtered``: a filter
    decided (other recipients reaching the account then add no mailboxes)."""
    routes: list
    data: bytes = None
    status: Status = None
    reason: str = ""
    after: object = None
    filtered: bool = False


class _Job(NamedTuple):
    result: DeliveryResult
    account: object
    routes: list
    prefix: bytes
    parsed: object
    item: Incoming
    shared: dict
    data: bytes


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

    @property
    def pending(self):
        """Batches waiting to be committed (a gauge for the server)."""
        return self._queue.qsize()

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
    def __init__(self, store, *, max_size=DEFAULT_MAX_SIZE, dedupe_window=DEFAULT_DEDUPE_WINDOW,
                 hostname="localhost", outbound=None):
        from .sieve.deliver import SieveDelivery
        self.mailstore = store
        self.max_size = max_size
        self.dedupe_window = dedupe_window
        self.hostname = hostname          # Sieve's environment "host", Message-IDs of replies
        self.outbound = outbound          # storage.outbound.Outbound for Sieve's outgoing mail, or None
        self.sieve = SieveDelivery(self)
        self.committer = GroupCommitter(store)
        self._inboxes = {}
        self._pool = None
        self._pool_lock = threading.Lock()

    def close(self):
        self.committer.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def store(self, *items):
        """Store each ``Incoming``; returns the ``DeliveryResult`` of each of its
        recipients (or the one of a mailbox item), in order, for all items.

        A message to many recipients is parsed once and held once (each copy
        is its prepended headers plus the shared bytes); copies whose bytes are
        identical (an alias that expands to several accounts) are hard links of
        one staged file; recipients that reach an account the message already
        goes to (``+detail`` variants, aliases) share that delivery: one
        message for the account, in each mailbox they name."""
        started = time.monotonic()
        out, jobs, same, later = [], [], [], []   # later: (result, Plan) with an ``after``
        for item in items:
            shared = {}
            if item.account is not None:
                result = DeliveryResult(item.account.address, DELIVERED)
                out.append(result)
                if self._fits(result, item.data):
                    jobs.append(_Job(result, item.account, [Route(b, tuple(item.flags)) for b in item.mailboxes],
                                     b"", None, item, shared, item.data))
                continue
            parsed, reached = None, {}
            for rcpt in item.recipients:
                result = DeliveryResult(rcpt, DELIVERED)
                out.append(result)
                if not self._fits(result, item.data):
                    continue
                found = (item.targets or {}).get(rcpt) or self.mailstore.resolve(rcpt)
                if not found:
                    result.status, result.reason = NO_SUCH_USER, "no such user"
                    continue
                parsed = parsed or parse(item.data)
                for account, detail in found:
                    if account.id in reached:   # one message per account: its mailboxes join
                        first, first_plan = reached[account.id]
                        if not first_plan.filtered and first_plan.status is None:
                            have = {r.mailbox.id for r in first_plan.routes}
                            first_plan.routes.extend(
                                r for r in self._default_routes(account, item.mailbox_name or detail, item)
                                if r.mailbox.id not in have)
                        same.append((result, first))
                        continue
                    prefix = self._prefix(item, rcpt) if item.prepend is not False else b""
                    plan = self.route(account, item.mailbox_name or detail, item, parsed, rcpt, prefix)
                    reached[account.id] = (result, plan)
                    if plan.after is not None:
                        later.append((result, plan))
                    if plan.status is not None:
                        result.status, result.reason = plan.status, plan.reason
                        continue
                    if plan.data is not None:   # edited by Sieve: a copy of its own
                        jobs.append(_Job(result, account, plan.routes, b"", None, item, {}, plan.data))
                    else:
                        jobs.append(_Job(result, account, plan.routes, prefix, parsed, item, shared,
                                         item.data))
        staged = self._stage_all(jobs)
        self._commit(staged)
        for result, plan in later:
            if result.ok:
                plan.after(result)
        for result, first in same:
            if result.status is DELIVERED and not result.stored:
                result.status, result.reason, result.stored = first.status, first.reason, list(first.stored)
        _log_results(items, out, started)
        return out

    def store_together(self, items, replace=None):
        """Store mailbox items (``Incoming`` with ``account`` and ``mailboxes``)
        in one transaction, all of them or none (IMAP MULTIAPPEND): returns
        their ``Stored`` in order, or raises the typed store error of the first
        that cannot be stored (``Store.insert_together``, which also removes
        ``replace`` = (mailbox pk, uids) in that transaction: IMAP REPLACE)."""
        started = time.monotonic()
        jobs = []
        for item in items:
            result = DeliveryResult(item.account.address, DELIVERED)
            if not self._fits(result, item.data):
                raise MessageTooLarge(result.reason)
            jobs.append(_Job(result, item.account, [Route(b, tuple(item.flags)) for b in item.mailboxes],
                             b"", None, item, {}, item.data))
        staged = self._stage_all(jobs)
        news = [new for _r, new, _i in staged if isinstance(new, NewMessage)]
        if len(news) < len(staged):
            for new in news:
                self.mailstore.blobs.discard(new.account.maildir_key, new.mailbox.folder, new.stem)
            raise TemporaryFailure("cannot write the messages")
        stored = self.mailstore.insert_together(news, replace)
        for job, one in zip(jobs, stored):
            job[0].stored.append(one)
        _log_results(items, [job[0] for job in jobs], started)
        return stored

    def route(self, account, mailbox_name, incoming, parsed, rcpt=None, prefix=b""):
        """The inbound-policy step: the ``Plan`` of one recipient's copy.

        The default target is the named mailbox (exact name first, then
        case-insensitively), else INBOX, with the item's flags; the
        account's active Sieve script (``storage.sieve.deliver``) then
        decides mailboxes, flags, rejection and outgoing mail from the
        message (``parsed``, as stored: after ``prefix``) and the verdicts."""
        box = self._target_mailbox(account, mailbox_name)
        return self.sieve.plan(account, box, incoming, parsed, rcpt or account.address, prefix)

    def _default_routes(self, account, mailbox_name, incoming):
        return [Route(self._target_mailbox(account, mailbox_name), tuple(incoming.flags))]

    def _fits(self, result, data):
        if len(data) <= self.max_size:
            return True
        result.status, result.reason = TOO_LARGE, f"message exceeds {self.max_size} bytes"
        return False

    def _prefix(self, item, rcpt):
        """The Return-Path and Delivered-To headers of one recipient's copy."""
        sender = (item.sender or "").strip()
        if sender.startswith("<") and sender.endswith(">"):
            sender = sender[1:-1]   # the null sender arrives as "<>"
        eol = b"\r\n" if item.data[:item.data.find(b"\n")].endswith(b"\r") else b"\n"
        return (b"Return-Path: <" + mime.bytes_of(sender) + b">" + eol +
                b"Delivered-To: " + mime.bytes_of(rcpt) + eol + item.auth_headers)

    def _stage_all(self, jobs):
        """Write each job's copy to the blob store (identical copies once, then
        hard-linked); returns ``[(result, NewMessage or OSError, Incoming)]``.
        Each copy's row values are derived before anything is written."""
        blobs = self.mailstore.blobs

        def message(job):
            result, account, routes, prefix, parsed, item, shared, data = job
            parsed = parse(data) if parsed is None else shifted(parsed, len(prefix))
            first, *rest = routes
            bits, keywords = flagbits.split(first.flags)
            dedupe = item.dedupe if item.dedupe is not None else item.account is None
            new = NewMessage(
                account, first.mailbox, None, data, parsed, bits=bits, keywords=keywords,
                internal_date=item.internal_date, dedupe_window=self.dedupe_window if dedupe else 0,
                also=tuple((r.mailbox, *flagbits.split(r.flags)) for r in rest),
                prefix=prefix, shared=shared)
            _derive(new)
            return new

        def failed(exc, size):
            if not isinstance(exc, OSError):
                log.exception("cannot write a message of %d bytes", size)
            return OSError(getattr(exc, "strerror", None) or str(exc))

        def stage(group):
            first = group[0]
            news = [message(job) for job in group]
            try:
                news[0].stem = blobs.put(first[1].maildir_key, first[2][0].mailbox.folder,
                                         first.data, first[3])
            except Exception as exc:  # noqa: BLE001 - these copies fail, the others go on
                err = failed(exc, news[0].size)
                return [(job[0], err, job[5]) for job in group]
            out = [(first[0], news[0], first[5])]
            for job, new in zip(group[1:], news[1:]):
                try:
                    new.stem = blobs.put_copy(first[1].maildir_key, first[2][0].mailbox.folder,
                                              news[0].stem, job[1].maildir_key, job[2][0].mailbox.folder)
                    out.append((job[0], new, job[5]))
                except Exception as exc:  # noqa: BLE001
                    out.append((job[0], failed(exc, new.size), job[5]))
            return out

        groups = {}
        for job in jobs:
            if job[2]:
                groups.setdefault((id(job[6]), job[3]), []).append(job)   # one Incoming given once
        groups = list(groups.values())
        if len(groups) < 4:
            return [s for g in groups for s in stage(g)]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(STAGE_THREADS, thread_name_prefix="roost-stage")
        return [s for staged in self._pool.map(stage, groups) for s in staged]

    def _target_mailbox(self, account, name):
        """The named mailbox (exact name first, then case-insensitively), else INBOX.

        INBOX is cached per account: it can be neither renamed nor deleted, so
        its id and folder never change (a deleted account's stale entry only
        makes that delivery fail as temporary, and is then dropped)."""
        if name:
            try:
                return self.mailstore.mailbox(account.id, name)
            except MailboxNotFound:
                for box in self.mailstore.mailboxes(account.id):
                    if box.name.lower() == name.lower():
                        return box
        inbox = self._inboxes.get(account.id)
        if inbox is None:
            inbox = self._inboxes[account.id] = self.mailstore.mailbox(account.id, "INBOX")
        return inbox

    def _commit(self, staged):
        for result, item, _incoming in staged:
            if isinstance(item, OSError):
                result.status, result.reason = TEMPORARY, f"cannot write: {item}"
        staged = [s for s in staged if isinstance(s[1], NewMessage)]
        if not staged:
            return
        outcomes = self.committer.submit([item for _r, item, _i in staged])
        for (result, item, incoming), outcome in zip(staged, outcomes):
            if isinstance(outcome, Stored):
                result.stored.append(outcome)
                if outcome.duplicate and result.status == DELIVERED:
                    result.status = DUPLICATE
            elif isinstance(outcome, QuotaExceeded):
                result.status, result.reason = OVER_QUOTA, "mailbox is full"
            elif isinstance(outcome, MailboxNotFound) and result.status in (DELIVERED, DUPLICATE):
                if incoming.account is not None:   # the caller named the mailbox
                    result.status, result.reason = NO_SUCH_MAILBOX, "no such mailbox"
                else:
                    self._inboxes.pop(item.account.id, None)
                    result.status, result.reason = TEMPORARY, "mailbox is gone, try again"
            elif result.status in (DELIVERED, DUPLICATE):
                result.status, result.reason = TEMPORARY, str(outcome) or "try again later"


def _log_results(items, results, started):
    """One "delivery" event per result (fields: server/logs.py)."""
    if not log.isEnabledFor(logging.INFO):
        return
    ms = round((time.monotonic() - started) * 1000, 3)
    pos = 0
    for item in items:
        count = 1 if item.account is not None else len(item.recipients)
        for r in results[pos:pos + count]:
            log.info("delivery %s", r.status.value, extra={
                "event": "delivery", "recipient": r.recipient, "size": len(item.data),
                "status": r.status.value, "ms": ms, "reason": r.reason or None})
        pos += count


def parse(data):
    """``mime.ParsedMessage(data)``, or its minimal form when parsing raises."""
    try:
        return mime.ParsedMessage(data)
    except Exception:  # noqa: BLE001 - a parser bug must not refuse the message
        log.exception("cannot parse a message of %d bytes; storing it with a minimal parse",
                      len(data))
        return mime.ParsedMessage.minimal(data)


def _derive(new):
    """Compute ``new``'s row values (``NewMessage.prepare``), checking that the
    strings the database gets are storable; on failure, use the minimal parse."""
    try:
        row = new.prepare()
        p, shared = new.parsed, new.shared if new.shared is not None else {}
        if "storable" not in shared:   # the copies of one message share these values: check once
            for s in (p.subject, p.preview, p.from_sort, p.to_sort, p.msgid or "", *p.references,
                      row[5], *row[4].values()):
                if "\x00" in s:
                    raise ValueError("NUL in a derived value")
                s.encode("utf-8")
            shared["storable"] = True
    except Exception:  # noqa: BLE001 - see parse()
        log.exception("cannot derive the values of a message of %d bytes; storing it with a "
                      "minimal parse", len(new.data))
        new.parsed = shifted(mime.ParsedMessage.minimal(new.data), len(new.prefix))
        new.row, new.shared = None, None   # nothing of the failed parse is reused
        new.prepare()


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
    row are deleted (never acknowledged); then the file operations committed
    transactions still owed are finished (``storage.blobops``: links of copies,
    unlinks of moved or expunged copies, folder renames and deletions).
    Returns (published, discarded).
    """
    published = discarded = 0
    if not hasattr(store.blobs, "accounts"):
        return published, discarded
    with store.engine.connect() as conn:
        rows = conn.execute(select(accounts.c.id, accounts.c.address)).all()
        for acct_id, address in rows:
            key = maildir_key(address)
            boxes = conn.execute(select(mailboxes.c.folder).where(mailboxes.c.account_id == acct_id)).all()
            for (folder,) in boxes:
                stems = store.blobs.staged(key, folder)
                if not stems:
                    continue
                known = {}   # stem -> (bits, keywords) of its membership in this folder
                for i in range(0, len(stems), 500):
                    known.update((r[0], r[1:]) for r in conn.execute(
                        select(messages.c.stem, mailbox_messages.c.flags, mailbox_messages.c.keywords)
                        .join(mailbox_messages, mailbox_messages.c.message_id == messages.c.id)
                        .join(mailboxes, mailboxes.c.id == mailbox_messages.c.mailbox_id)
                        .where(mailboxes.c.account_id == acct_id, mailboxes.c.folder == folder,
                               messages.c.stem.in_(stems[i:i + 500]))).all())
                for stem in stems:
                    if stem in known:
                        if not _writer_gone(stem):
                            continue      # a live process is between its commit and its rename
                        bits, keywords = known[stem]
                        store.blobs.commit(BlobRef(key, folder, stem, bits), flagbits.decode_keywords(keywords))
                        published += 1
                    elif _abandoned(store.blobs, key, folder, stem):
                        store.blobs.discard(key, folder, stem)
                        discarded += 1
        conn.rollback()
    if published or discarded:
        log.info("recovery: published %d, discarded %d staged files", published, discarded)
    blobops.replay(store)   # after the staged files: links of new copies start from them
    return published, discarded


_PID = re.compile(r"P(\d+)Q")


def _writer_gone(stem):
    m = _PID.search(stem)
    return m is None or process_gone(int(m.group(1)))


def _abandoned(blobs, key, folder, stem):
    """A staged file nobody will commit: its writer process is gone (or is us,
    at start-up, through PID reuse), or it is older than an hour."""
    if _writer_gone(stem):
        return True
    try:
        age = time.time() - os.stat(os.path.join(blobs.folder_path(key, folder), "tmp", stem)).st_mtime
    except OSError:
        return True
    return age > 3600
