"""The store API: accounts, aliases, mailboxes, messages, flags, threads, changes.

``Store`` is synchronous and thread-safe; protocols call it from a thread pool
so nothing blocks the event loop. It is shaped around mail: mailboxes and
messages are addressed by ids and UIDs, never by IMAP sequence numbers.

Writes run in one transaction each. Every change takes the account's next
MODSEQ and logs a ``changes`` row in that transaction; after the commit the
Maildir side effects (publish, link, flag renames, unlinks) run and a ``Change``
goes out on ``self.bus``. On SQLite one process-wide lock serialises writers
(SQLite has one writer anyway; the lock avoids lock-upgrade deadlocks), and
``BEGIN IMMEDIATE`` keeps a second process (``roost deliver``) safe.

``Store.memory()`` is the in-memory implementation of the same API for fast
protocol tests: the same rules on SQLite ``:memory:`` and a dict of blobs, so
tests of the protocols exercise exactly the semantics production uses.

Public ids: mailbox ``M<id>``, email ``E<id>``, thread ``T<id>``. They are the
JMAP ids and the IMAP OBJECTID values.
"""

import hashlib
import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import and_, delete, func, insert, select, update

from . import flags as flagbits
from . import mime
from .errors import (AccountExists, AccountNotFound, Conflict, InvalidName,
                     MailboxExists, MailboxNotFound, MessageNotFound, QuotaExceeded)
from .maildir import Maildir, MemoryBlobs, folder_for
from .notify import Change, ChangeBus
from .search import make_backend
from .search_text import document
from .schema import (accounts, aliases, changes, create_all, domains, expunged,
                     mailbox_messages, mailboxes, make_engine, messages, thread_refs, threads)

DEFAULT_MAILBOXES = (("INBOX", "inbox"), ("Drafts", "drafts"), ("Sent", "sent"),
                     ("Archive", "archive"), ("Junk", "junk"), ("Trash", "trash"))
ROLES = frozenset(r for _n, r in DEFAULT_MAILBOXES) | {"all", "flagged", "important"}
MAX_MAILBOX_NAME = 512
MAX_MAILBOX_DEPTH = 32
MAX_ALIAS_DEPTH = 8
HIERARCHY = "/"


def mailbox_oid(pk):
    return f"M{pk}"


def email_oid(pk):
    return f"E{pk}"


def thread_oid(pk):
    return f"T{pk}"


def parse_oid(prefix, oid):
    """The primary key in a public id, or None when it is not one of ours."""
    if isinstance(oid, str) and oid[:1] == prefix and oid[1:].isdigit() and len(oid) < 20:
        return int(oid[1:])
    return None


@dataclass(frozen=True)
class Account:
    id: int
    address: str
    password_hash: str
    quota_bytes: int
    used_bytes: int
    modseq: int

    @property
    def maildir_key(self):
        local, _, domain = self.address.rpartition("@")
        return f"{domain}/{local}"


@dataclass(frozen=True)
class Mailbox:
    id: int
    account_id: int
    name: str
    folder: str
    role: str
    subscribed: bool
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    sort_order: int = 0
    messages: int = 0
    unseen: int = 0
    size: int = 0

    @property
    def oid(self):
        return mailbox_oid(self.id)


@dataclass(frozen=True)
class MessageRecord:
    """One message as it sits in one mailbox."""
    uid: int
    modseq: int
    bits: int
    keywords: tuple
    message_id: int
    thread_id: int
    size: int
    internal_date: float
    saved_at: float
    envelope: str = None
    structure: str = None

    @property
    def email_id(self):
        return email_oid(self.message_id)

    @property
    def thread_oid(self):
        return thread_oid(self.thread_id)

    @property
    def flag_names(self):
        return flagbits.names(self.bits, self.keywords)


@dataclass
class NewMessage:
    """A message staged in the blob store, waiting for its database row."""
    account: Account
    mailbox: Mailbox
    stem: str
    data: bytes
    parsed: object
    bits: int = 0
    keywords: tuple = ()
    internal_date: float = None
    dedupe_window: float = 0
    row: tuple = None   # derived values, see prepare()

    def prepare(self):
        """Compute the row's derived values (blob id, JSON, search document,
        base subject). Delivery calls this in its own worker thread, so the
        single committer thread only runs SQL."""
        if self.row is None:
            p = self.parsed
            self.row = ("B" + hashlib.sha256(self.data).hexdigest()[:40], json.dumps(p.envelope),
                        json.dumps(p.structure), json.dumps(p.summary), document(p),
                        mime.base_subject(p.subject)[:1000])
        return self.row


@dataclass(frozen=True)
class Stored:
    mailbox_id: int
    uidvalidity: int
    uid: int
    message_id: int
    duplicate: bool = False


def normalise_address(address):
    address = address.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in address) \
            or "/" in address or local.startswith(".") or domain.startswith("."):
        raise InvalidName(f"not an address: {address!r}")
    return f"{local}@{domain.lower()}".lower()


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


class Store:
    def __init__(self, engine, blobs, *, memory=False, search=None, search_dir=None):
        self.engine = engine
        self.blobs = blobs
        self.memory = memory
        self.bus = ChangeBus()
        self.sqlite = engine.dialect.name == "sqlite"
        self._wlock = threading.RLock()
        create_all(engine)
        # Full-text backend (storage.search): "fts5" (SQLite default) or "whoosh".
        root = getattr(blobs, "root", None)
        self.fulltext = make_backend(self, search, search_dir or (
            root and os.path.join(os.path.dirname(os.path.abspath(root)), "search")))

    @classmethod
    def open(cls, data_dir, db_url=None, search=None):
        os.makedirs(data_dir, exist_ok=True)
        url = db_url or f"sqlite:///{os.path.join(data_dir, 'roost.db')}"
        store = cls(make_engine(url), Maildir(os.path.join(data_dir, "mail")), search=search,
                    search_dir=os.path.join(data_dir, "search"))
        store.bus.relay_to = relay_socket_path(data_dir)
        return store

    @classmethod
    def memory(cls, search=None):
        return cls(make_engine("sqlite://", memory=True), MemoryBlobs(), memory=True, search=search)

    def close(self):
        self.fulltext.close()
        self.engine.dispose()

    # --- transactions ------------------------------------------------------

    @contextmanager
    def _read(self):
        if self.memory:
            with self._wlock, self.engine.connect() as conn:
                yield conn
                conn.rollback()
        else:
            with self.engine.connect() as conn:
                yield conn

    @contextmanager
    def _write(self):
        """A write transaction; yields (conn, after) where ``after`` collects
        callables to run once the commit has succeeded (file side effects and
        bus notifications)."""
        after = []
        lock = self._wlock if self.sqlite else _NoLock
        with lock:
            with self.engine.connect() as conn:
                conn.execution_options(roost_write=True)
                with conn.begin():
                    yield conn, after
            # Still under the lock: file renames and links follow commit order,
            # so the Maildir mirror of flags ends where the database does.
            for fn in after:
                fn()

    def _next_modseq(self, conn, account_id):
        return conn.execute(
            update(accounts).where(accounts.c.id == account_id)
            .values(modseq=accounts.c.modseq + 1).returning(accounts.c.modseq)).scalar_one()

    def _log(self, conn, account_id, modseq, kind, object_ids, op):
        rows = [{"account_id": account_id, "modseq": modseq, "kind": kind,
                 "object_id": oid, "op": op} for oid in object_ids]
        if rows:
            conn.execute(insert(changes), rows)

    def _publish(self, after, account_id, modseq, kinds, mailbox_ids=()):
        change = Change(account_id, modseq, frozenset(kinds), frozenset(mailbox_ids))
        after.append(lambda: self.bus.publish(change))

    # --- accounts ----------------------------------------------------------

    def add_account(self, address, password_hash=None, quota_bytes=None):
        address = normalise_address(address)
        domain = address.rpartition("@")[2]
        with self._write() as (conn, after):
            if conn.execute(select(accounts.c.id).where(accounts.c.address == address)).first():
                raise AccountExists(address)
            dom = conn.execute(select(domains.c.id).where(domains.c.name == domain)).scalar()
            if dom is None:
                dom = conn.execute(insert(domains).values(name=domain)).inserted_primary_key[0]
            account_id = conn.execute(insert(accounts).values(
                address=address, domain_id=dom, password_hash=password_hash,
                quota_bytes=quota_bytes, used_bytes=0, modseq=1,
                created=time.time())).inserted_primary_key[0]
            modseq = self._next_modseq(conn, account_id)
            key = f"{domain}/{address.rpartition('@')[0]}"
            for order, (name, role) in enumerate(DEFAULT_MAILBOXES):
                self._insert_mailbox(conn, account_id, name, role, modseq, order)
                self.blobs.create_folder(key, folder_for(name))
        return self.account(address)

    def _insert_mailbox(self, conn, account_id, name, role, modseq, order=10):
        pk = conn.execute(insert(mailboxes).values(
            account_id=account_id, name=name, folder=folder_for(name), role=role,
            subscribed=True, uidvalidity=_uidvalidity(), uidnext=1,
            highestmodseq=modseq, sort_order=order)).inserted_primary_key[0]
        self._log(conn, account_id, modseq, "Mailbox", [pk], "c")
        return pk

    def account(self, address):
        """The account at ``address`` (exact, case-insensitive), or None."""
        try:
            address = normalise_address(address)
        except InvalidName:
            return None
        with self._read() as conn:   # driver-level: every LMTP RCPT comes here
            row = _DriverSQL(conn, self.sqlite).one(
                "SELECT id, address, password_hash, quota_bytes, used_bytes, modseq "
                "FROM accounts WHERE address = ?", (address,))
        return Account(*row) if row else None

    def account_by_id(self, account_id):
        with self._read() as conn:
            row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
        if row is None:
            raise AccountNotFound(account_id)
        return _account(row)

    def accounts(self):
        with self._read() as conn:
            return [_account(r) for r in conn.execute(select(accounts).order_by(accounts.c.address))]

    def _require(self, address):
        acct = self.account(address)
        if acct is None:
            raise AccountNotFound(address)
        return acct

    def set_password(self, address, password_hash):
        acct = self._require(address)
        with self._write() as (conn, _after):
            conn.execute(update(accounts).where(accounts.c.id == acct.id)
                         .values(password_hash=password_hash))

    def set_quota(self, address, quota_bytes):
        acct = self._require(address)
        with self._write() as (conn, _after):
            conn.execute(update(accounts).where(accounts.c.id == acct.id)
                         .values(quota_bytes=quota_bytes))

    def delete_account(self, address):
        acct = self._require(address)
        with self._write() as (conn, after):
            conn.execute(delete(aliases).where(aliases.c.target == acct.address))
            mids = select(messages.c.id).where(messages.c.account_id == acct.id)
            self.fulltext.remove_account(conn, after, acct.id)
            for table in (mailbox_messages,):
                conn.execute(delete(table).where(table.c.message_id.in_(mids)))
            box_ids = select(mailboxes.c.id).where(mailboxes.c.account_id == acct.id)
            conn.execute(delete(expunged).where(expunged.c.mailbox_id.in_(box_ids)))
            conn.execute(delete(messages).where(messages.c.account_id == acct.id))
            for table in (thread_refs, threads, mailboxes, changes):
                conn.execute(delete(table).where(table.c.account_id == acct.id))
            conn.execute(delete(accounts).where(accounts.c.id == acct.id))
            after.append(lambda: self.blobs.delete_account(acct.maildir_key))

    # --- aliases -----------------------------------------------------------

    def add_alias(self, alias, target):
        alias = alias.strip().lower()
        if alias.startswith("@"):
            normalise_address("x" + alias)
        else:
            alias = normalise_address(alias)
        target = normalise_address(target)
        with self._write() as (conn, _after):
            if conn.execute(select(aliases.c.id).where(
                    and_(aliases.c.address == alias, aliases.c.target == target))).first():
                raise Conflict(f"{alias} already points at {target}")
            conn.execute(insert(aliases).values(address=alias, target=target))

    def delete_alias(self, alias):
        alias = alias.strip().lower()
        with self._write() as (conn, _after):
            if conn.execute(delete(aliases).where(aliases.c.address == alias)).rowcount == 0:
                raise AccountNotFound(alias)

    def aliases(self):
        with self._read() as conn:
            return [(r.address, r.target) for r in conn.execute(
                select(aliases.c.address, aliases.c.target).order_by(aliases.c.address))]

    def resolve(self, address):
        """Local recipients of ``address``: a list of ``(Account, folder name or None)``.

        Follows aliases (bounded depth, loops ignored), ``local+detail@domain``
        (the detail names a mailbox, used when it exists) and ``@domain``
        catch-all aliases. An empty list means no such user.
        """
        try:
            address = normalise_address(address)
        except InvalidName:
            return []
        out, seen = [], set()

        def walk(addr, detail, depth, given):
            # ``given``: addr is the address as given (or it without +detail),
            # so a catch-all applies; never to an alias target.
            if addr in seen or depth > MAX_ALIAS_DEPTH:
                return
            seen.add(addr)
            acct = self.account(addr)
            if acct is not None:
                out.append((acct, detail))
                return
            local, _, domain = addr.rpartition("@")
            base = None
            # Recurse only after the connection is back: the in-memory store
            # has one connection, and nested reads would begin twice.
            with self._read() as conn:
                sql = _DriverSQL(conn, self.sqlite)
                lookup = "SELECT target FROM aliases WHERE address = ?"
                targets = [r[0] for r in sql.all(lookup, (addr,))]
                if not targets and "+" in local:
                    base, _, det = local.partition("+")
                elif not targets and given:
                    targets = [r[0] for r in sql.all(lookup, ("@" + domain,))]
            if base is not None:
                walk(f"{base}@{domain}", detail or det, depth + 1, given)
            for target in targets:
                walk(target, detail, depth + 1, False)

        walk(address, None, 0, True)
        unique, ids = [], set()
        for acct, detail in out:
            if acct.id not in ids:
                ids.add(acct.id)
                unique.append((acct, detail))
        return unique

    # --- mailboxes ---------------------------------------------------------

    def mailboxes(self, account_id, counts=False):
        """The account's mailboxes by name; with ``counts``, messages/unseen/size too."""
        with self._read() as conn:
            rows = conn.execute(select(mailboxes).where(mailboxes.c.account_id == account_id)
                                .order_by(mailboxes.c.name)).all()
            stats = {}
            if counts:
                q = (select(mailbox_messages.c.mailbox_id, func.count(),
                            func.sum(1 - (mailbox_messages.c.flags.op("&")(flagbits.SEEN))),
                            func.sum(messages.c.size))
                     .join(messages, messages.c.id == mailbox_messages.c.message_id)
                     .where(mailbox_messages.c.mailbox_id.in_([r.id for r in rows]))
                     .group_by(mailbox_messages.c.mailbox_id))
                stats = {r[0]: (r[1], int(r[2] or 0), int(r[3] or 0)) for r in conn.execute(q)}
        return [_mailbox(r, *stats.get(r.id, (0, 0, 0))) for r in rows]

    def mailbox(self, account_id, name=None, *, mailbox_id=None, role=None, counts=False):
        """One mailbox by name, id or role; raises MailboxNotFound."""
        cond = [mailboxes.c.account_id == account_id]
        if mailbox_id is not None:
            cond.append(mailboxes.c.id == mailbox_id)
        elif role is not None:
            cond.append(mailboxes.c.role == role)
        else:
            try:
                name = check_mailbox_name(name)
            except InvalidName:
                raise MailboxNotFound(name) from None
            cond.append(mailboxes.c.name == name)
        with self._read() as conn:
            row = conn.execute(select(mailboxes).where(and_(*cond))).first()
            if row is None:
                raise MailboxNotFound(name or mailbox_id or role)
            stats = (0, 0, 0)
            if counts:
                stats = self._counts(conn, row.id)
        return _mailbox(row, *stats)

    def _counts(self, conn, mailbox_pk):
        r = conn.execute(
            select(func.count(), func.sum(1 - mailbox_messages.c.flags.op("&")(flagbits.SEEN)),
                   func.sum(messages.c.size))
            .join(messages, messages.c.id == mailbox_messages.c.message_id)
            .where(mailbox_messages.c.mailbox_id == mailbox_pk)).first()
        return r[0], int(r[1] or 0), int(r[2] or 0)

    def create_mailbox(self, account_id, name, role=None):
        """Create ``name`` and any missing parents; returns the new Mailbox."""
        name = check_mailbox_name(name)
        if role is not None and role not in ROLES:
            raise InvalidName(f"unknown role {role}")
        acct = self.account_by_id(account_id)
        with self._write() as (conn, after):
            existing = {r[0] for r in conn.execute(
                select(mailboxes.c.name).where(mailboxes.c.account_id == account_id))}
            if name in existing:
                raise MailboxExists(name)
            if role and conn.execute(select(mailboxes.c.id).where(and_(
                    mailboxes.c.account_id == account_id, mailboxes.c.role == role))).first():
                raise Conflict(f"another mailbox has the role {role}")
            modseq = self._next_modseq(conn, account_id)
            parts = name.split(HIERARCHY)
            created = []
            for i in range(1, len(parts) + 1):
                sub = HIERARCHY.join(parts[:i])
                if sub in existing:
                    continue
                pk = self._insert_mailbox(conn, account_id, sub, role if sub == name else None, modseq)
                created.append(sub)
            for sub in created:
                after.append(lambda sub=sub: self.blobs.create_folder(acct.maildir_key, folder_for(sub)))
            self._publish(after, account_id, modseq, {"Mailbox"})
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
        with self._write() as (conn, after):
            rows = conn.execute(select(mailboxes).where(mailboxes.c.account_id == account_id)).all()
            names = {r.name for r in rows}
            if new_name in names:
                raise MailboxExists(new_name)
            modseq = self._next_modseq(conn, account_id)
            parts = new_name.split(HIERARCHY)
            for i in range(1, len(parts)):
                parent = HIERARCHY.join(parts[:i])
                if parent not in names and parent != box.name:
                    self._insert_mailbox(conn, account_id, parent, None, modseq)
                    names.add(parent)
                    after.append(lambda p=parent: self.blobs.create_folder(acct.maildir_key, folder_for(p)))
            moved = [r for r in rows if r.name == box.name or r.name.startswith(box.name + HIERARCHY)]
            # Longest names last: children's folders are renamed after parents'
            # (Maildir++ folders are flat, so order only matters for clarity).
            for r in sorted(moved, key=lambda r: r.name):
                renamed = new_name + r.name[len(box.name):]
                conn.execute(update(mailboxes).where(mailboxes.c.id == r.id).values(
                    name=renamed, folder=folder_for(renamed), highestmodseq=modseq))
                self._log(conn, account_id, modseq, "Mailbox", [r.id], "u")
                self.blobs.rename_folder(acct.maildir_key, r.folder, folder_for(renamed))
            self._publish(after, account_id, modseq, {"Mailbox"})
        return self.mailbox(account_id, mailbox_id=mailbox_pk)

    def delete_mailbox(self, account_id, mailbox_pk):
        """Delete a mailbox and its messages (children are kept, as IMAP wants)."""
        acct = self.account_by_id(account_id)
        box = self.mailbox(account_id, mailbox_id=mailbox_pk)
        if box.name == "INBOX":
            raise Conflict("INBOX cannot be deleted")
        uids = self.uids(box.id)
        with self._write() as (conn, after):
            modseq = self._next_modseq(conn, account_id)
            self._remove(conn, after, acct, box, uids, modseq, log_expunge=False)
            conn.execute(delete(expunged).where(expunged.c.mailbox_id == box.id))
            conn.execute(delete(mailboxes).where(mailboxes.c.id == box.id))
            self._log(conn, account_id, modseq, "Mailbox", [box.id], "d")
            after.append(lambda: self.blobs.delete_folder(acct.maildir_key, box.folder))
            self._publish(after, account_id, modseq, {"Mailbox", "Email", "Thread"}, {box.id})

    def set_mailbox_role(self, account_id, mailbox_pk, role=None, sort_order=None):
        """Give the mailbox ``role`` (None: no role; one mailbox per role) and,
        unless None, the display position ``sort_order``."""
        if role is not None and role not in ROLES:
            raise InvalidName(f"unknown role {role}")
        with self._write() as (conn, after):
            if role and conn.execute(select(mailboxes.c.id).where(and_(
                    mailboxes.c.account_id == account_id, mailboxes.c.role == role,
                    mailboxes.c.id != mailbox_pk))).first():
                raise Conflict(f"another mailbox has the role {role}")
            values = {"role": role}
            if sort_order is not None:
                values["sort_order"] = int(sort_order)
            modseq = self._next_modseq(conn, account_id)
            if not conn.execute(update(mailboxes).where(and_(
                    mailboxes.c.id == mailbox_pk, mailboxes.c.account_id == account_id))
                    .values(**values)).rowcount:
                raise MailboxNotFound(mailbox_pk)
            self._log(conn, account_id, modseq, "Mailbox", [mailbox_pk], "u")
            self._publish(after, account_id, modseq, {"Mailbox"})

    def set_subscribed(self, account_id, mailbox_pk, subscribed):
        with self._write() as (conn, after):
            modseq = self._next_modseq(conn, account_id)
            n = conn.execute(update(mailboxes).where(and_(
                mailboxes.c.id == mailbox_pk, mailboxes.c.account_id == account_id))
                .values(subscribed=bool(subscribed))).rowcount
            if not n:
                raise MailboxNotFound(mailbox_pk)
            self._log(conn, account_id, modseq, "Mailbox", [mailbox_pk], "u")
            self._publish(after, account_id, modseq, {"Mailbox"})

    # --- messages in a mailbox ----------------------------------------------

    def uids(self, mailbox_pk):
        """Every UID in the mailbox, ascending."""
        with self._read() as conn:
            return [r[0] for r in conn.execute(
                select(mailbox_messages.c.uid).where(mailbox_messages.c.mailbox_id == mailbox_pk)
                .order_by(mailbox_messages.c.uid))]

    def flags(self, mailbox_pk, uids=None, changed_since=None):
        """``[(uid, modseq, bits, keywords)]`` ascending by UID (bulk FETCH FLAGS)."""
        where, params, wanted = _uid_sql("uid", uids)
        since = ""
        if changed_since is not None:
            since, params = " AND modseq > ?", (changed_since, *params)
        with self._read() as conn:
            rows = _DriverSQL(conn, self.sqlite).all(
                "SELECT uid, modseq, flags, keywords FROM mailbox_messages WHERE mailbox_id = ?"
                + since + where + " ORDER BY uid", (mailbox_pk, *params))
        return [(u, m, b, flagbits.decode_keywords(k)) for u, m, b, k in rows
                if wanted is None or u in wanted]

    def records(self, mailbox_pk, uids=None, *, parsed=False):
        """``MessageRecord``s of the given UIDs (all when None), ascending by UID.
        With ``parsed`` the envelope and structure JSON come too."""
        cols = [mailbox_messages.c.uid, mailbox_messages.c.modseq, mailbox_messages.c.flags,
                mailbox_messages.c.keywords, messages.c.id, messages.c.thread_id, messages.c.size,
                messages.c.internal_date, mailbox_messages.c.saved_at]
        if parsed:
            cols += [messages.c.envelope, messages.c.structure]
        q = select(*cols).join(messages, messages.c.id == mailbox_messages.c.message_id) \
            .where(mailbox_messages.c.mailbox_id == mailbox_pk)
        q = _uid_filter(q, uids).order_by(mailbox_messages.c.uid)
        with self._read() as conn:
            rows = conn.execute(q).all()
        wanted = set(uids) if uids is not None and len(uids) > 500 else None
        out = []
        for r in rows:
            if wanted is not None and r[0] not in wanted:
                continue
            out.append(MessageRecord(r[0], r[1], r[2], flagbits.decode_keywords(r[3]), *r[4:]))
        return out

    def read(self, mailbox_pk, uid):
        """The raw bytes of the message with ``uid`` in the mailbox."""
        return self._read_file(uid, "mm.mailbox_id = ? AND mm.uid = ?", (mailbox_pk, uid))

    def read_message(self, account_id, message_pk):
        """The raw bytes of a message by its id (whichever mailbox holds it)."""
        return self._read_file(message_pk, "m.id = ? AND m.account_id = ?", (message_pk, account_id))

    def _read_file(self, what, where, params):
        with self._read() as conn:
            row = _DriverSQL(conn, self.sqlite).one(
                "SELECT m.stem, b.folder, mm.flags, a.address FROM mailbox_messages mm "
                "JOIN messages m ON m.id = mm.message_id JOIN mailboxes b ON b.id = mm.mailbox_id "
                "JOIN accounts a ON a.id = b.account_id WHERE " + where + " LIMIT 1", params)
        if row is None:
            raise MessageNotFound(what)
        stem, folder, bits, address = row
        return self.blobs.read(_key(address), folder, stem, bits)

    def store_flags(self, mailbox_pk, uids, names, mode, unchanged_since=None):
        """Change flags of ``uids``: ``mode`` is "add", "remove" or "replace".

        Returns ``(changed, failed)``: ``changed`` lists ``(uid, modseq, bits,
        keywords)`` of messages whose flags changed, ``failed`` the UIDs refused
        by ``unchanged_since`` (CONDSTORE). Driver-level SQL: IMAP STORE and
        JMAP keyword changes are frequent.
        """
        bits, keywords = flagbits.split(names)
        changed, failed, renames = [], [], []
        with self._write() as (conn, after):
            sql = _DriverSQL(conn, self.sqlite)
            box = sql.one("SELECT b.account_id, b.folder, a.address FROM mailboxes b "
                          "JOIN accounts a ON a.id = b.account_id WHERE b.id = ?", (mailbox_pk,))
            if box is None:
                raise MailboxNotFound(mailbox_pk)
            account_id, folder, address = box
            where, params, _wanted = _uid_sql("mm.uid", uids)
            rows = sql.all("SELECT mm.uid, mm.modseq, mm.flags, mm.keywords, m.stem, m.id "
                           "FROM mailbox_messages mm JOIN messages m ON m.id = mm.message_id "
                           "WHERE mm.mailbox_id = ?" + where, (mailbox_pk, *params))
            wanted = set(uids)
            updates = []
            for uid, modseq, old_bits, old_kw, stem, msg_pk in rows:
                if uid not in wanted:
                    continue
                if unchanged_since is not None and modseq > unchanged_since:
                    failed.append(uid)
                    continue
                old_k = flagbits.decode_keywords(old_kw)
                if mode == "add":
                    nb, nk = old_bits | bits, flagbits.merge_keywords(old_k, keywords)
                elif mode == "remove":
                    nb, nk = old_bits & ~bits, flagbits.merge_keywords(old_k, (), keywords)
                else:
                    nb, nk = bits, flagbits.merge_keywords((), keywords)
                if nb == old_bits and nk == old_k:
                    continue
                updates.append((uid, nb, nk, msg_pk))
                renames.append((stem, old_bits, nb))
            if updates:
                modseq = sql.one("UPDATE accounts SET modseq = modseq + 1 WHERE id = ? RETURNING modseq",
                                 (account_id,))[0]
                sql.many("UPDATE mailbox_messages SET flags = ?, keywords = ?, modseq = ? "
                         "WHERE mailbox_id = ? AND uid = ?",
                         [(nb, flagbits.encode_keywords(nk), modseq, mailbox_pk, uid)
                          for uid, nb, nk, _pk in updates])
                changed = [(uid, modseq, nb, nk) for uid, nb, nk, _pk in updates]
                sql.run("UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, mailbox_pk))
                now = time.time()
                log = [(account_id, modseq, "Email", pk, "u", now) for pk in sorted({u[3] for u in updates})]
                if any((nb ^ ob) & flagbits.SEEN for _s, ob, nb in renames):
                    log.append((account_id, modseq, "Mailbox", mailbox_pk, "u", now))
                sql.many("INSERT INTO changes (account_id, modseq, kind, object_id, op, at) "
                         "VALUES (?, ?, ?, ?, ?, ?)", log)
                key = _key(address)
                after.append(lambda: [self.blobs.set_flags(key, folder, s, ob, nb)
                                      for s, ob, nb in renames])
                self._publish(after, account_id, modseq, {"Email", "Mailbox"}, {mailbox_pk})
        return changed, sorted(failed)

    def copy(self, mailbox_pk, uids, dest_pk, *, move=False):
        """Copy messages into ``dest_pk`` (the same message, hard-linked); with
        ``move`` they leave the source in the same transaction.
        Returns ``(uidvalidity, [(src_uid, dst_uid)])``."""
        box = self._box(mailbox_pk)
        dest = self._box(dest_pk)
        if dest.account_id != box.account_id:
            raise MailboxNotFound(dest_pk)
        acct = self.account_by_id(box.account_id)
        with self._write() as (conn, after):
            pairs = self._copy(conn, after, acct, box, dest, uids)
            if move and pairs:
                modseq = self._next_modseq(conn, acct.id)
                self._remove(conn, after, acct, box, [p[0] for p in pairs], modseq)
        return dest.uidvalidity, pairs

    def _copy(self, conn, after, acct, box, dest, uids):
        q = select(mailbox_messages.c.uid, mailbox_messages.c.flags, mailbox_messages.c.keywords,
                   messages.c.id, messages.c.stem, messages.c.size) \
            .join(messages, messages.c.id == mailbox_messages.c.message_id) \
            .where(mailbox_messages.c.mailbox_id == box.id)
        wanted = set(uids)
        rows = [r for r in conn.execute(_uid_filter(q, uids).order_by(mailbox_messages.c.uid))
                if r.uid in wanted]
        if not rows:
            return []
        modseq = self._next_modseq(conn, acct.id)
        first = self._take_uids(conn, dest.id, len(rows), modseq)
        now = time.time()
        pairs, links, new_rows = [], [], []
        for i, r in enumerate(rows):
            new_rows.append({"mailbox_id": dest.id, "uid": first + i, "message_id": r.id,
                             "modseq": modseq, "flags": r.flags, "keywords": r.keywords,
                             "saved_at": now})
            pairs.append((r.uid, first + i))
            links.append((r.stem, r.flags))
        conn.execute(insert(mailbox_messages), new_rows)
        self._log(conn, acct.id, modseq, "Email", sorted({r.id for r in rows}), "u")
        self._log(conn, acct.id, modseq, "Mailbox", [dest.id], "u")
        after.append(lambda: [self.blobs.link(acct.maildir_key, box.folder, s, b, dest.folder, b)
                              for s, b in links])
        self._publish(after, acct.id, modseq, {"Email", "Mailbox"}, {dest.id})
        return pairs

    def move(self, mailbox_pk, uids, dest_pk):
        """Move messages: copy, then remove from the source, in one transaction."""
        return self.copy(mailbox_pk, uids, dest_pk, move=True)

    def expunge(self, mailbox_pk, uids=None):
        """Remove the messages flagged \\Deleted (only those in ``uids`` when given).
        Returns the expunged UIDs."""
        box = self._box(mailbox_pk)
        acct = self.account_by_id(box.account_id)
        q = select(mailbox_messages.c.uid).where(and_(
            mailbox_messages.c.mailbox_id == mailbox_pk,
            mailbox_messages.c.flags.op("&")(flagbits.DELETED) != 0))
        with self._write() as (conn, after):
            found = [r[0] for r in conn.execute(q.order_by(mailbox_messages.c.uid))]
            if uids is not None:
                wanted = set(uids)
                found = [u for u in found if u in wanted]
            if found:
                modseq = self._next_modseq(conn, acct.id)
                self._remove(conn, after, acct, box, found, modseq)
        return found

    def remove(self, mailbox_pk, uids):
        """Remove messages from a mailbox whatever their flags (JMAP, MOVE)."""
        box = self._box(mailbox_pk)
        acct = self.account_by_id(box.account_id)
        with self._write() as (conn, after):
            modseq = self._next_modseq(conn, acct.id)
            return self._remove(conn, after, acct, box, uids, modseq)

    def _remove(self, conn, after, acct, box, uids, modseq, log_expunge=True):
        wanted = set(uids)
        q = select(mailbox_messages.c.uid, mailbox_messages.c.flags, messages.c.id,
                   messages.c.stem, messages.c.size, messages.c.thread_id) \
            .join(messages, messages.c.id == mailbox_messages.c.message_id) \
            .where(mailbox_messages.c.mailbox_id == box.id)
        rows = [r for r in conn.execute(_uid_filter(q, uids)) if r.uid in wanted]
        if not rows:
            return []
        removed = [r.uid for r in rows]
        for chunk in _chunks(removed):
            conn.execute(delete(mailbox_messages).where(and_(
                mailbox_messages.c.mailbox_id == box.id, mailbox_messages.c.uid.in_(chunk))))
        if log_expunge:
            conn.execute(insert(expunged), [{"mailbox_id": box.id, "uid": u, "modseq": modseq}
                                            for u in removed])
        conn.execute(update(mailboxes).where(mailboxes.c.id == box.id).values(highestmodseq=modseq))
        msg_ids = sorted({r.id for r in rows})
        still = set()
        for chunk in _chunks(msg_ids):
            still.update(r[0] for r in conn.execute(
                select(mailbox_messages.c.message_id).where(mailbox_messages.c.message_id.in_(chunk))))
        gone = [r for r in rows if r.id not in still]
        if gone:
            gone_ids = [r.id for r in gone]
            for chunk in _chunks(gone_ids):
                self.fulltext.remove(conn, after, acct.id, chunk)
                conn.execute(delete(messages).where(messages.c.id.in_(chunk)))
            freed = sum(r.size for r in gone)
            conn.execute(update(accounts).where(accounts.c.id == acct.id)
                         .values(used_bytes=func.max(accounts.c.used_bytes - freed, 0)
                                 if self.sqlite else func.greatest(accounts.c.used_bytes - freed, 0)))
            self._log(conn, acct.id, modseq, "Email", gone_ids, "d")
            self._log(conn, acct.id, modseq, "Thread", sorted({r.thread_id for r in gone}), "u")
        self._log(conn, acct.id, modseq, "Email", sorted(still), "u")
        self._log(conn, acct.id, modseq, "Mailbox", [box.id], "u")
        files = [(r.stem, r.flags) for r in rows]
        after.append(lambda: [self.blobs.remove(acct.maildir_key, box.folder, s, b) for s, b in files])
        self._publish(after, acct.id, modseq, {"Email", "Mailbox", "Thread"}, {box.id})
        return removed

    def expunged_since(self, mailbox_pk, modseq):
        """UIDs expunged from the mailbox after ``modseq`` (QRESYNC VANISHED)."""
        with self._read() as conn:
            return sorted(r[0] for r in conn.execute(
                select(expunged.c.uid).where(and_(expunged.c.mailbox_id == mailbox_pk,
                                                  expunged.c.modseq > modseq))))

    def _box(self, mailbox_pk):
        with self._read() as conn:
            row = conn.execute(select(mailboxes).where(mailboxes.c.id == mailbox_pk)).first()
        if row is None:
            raise MailboxNotFound(mailbox_pk)
        return _mailbox(row)

    def _take_uids(self, conn, mailbox_pk, n, modseq):
        nxt = conn.execute(update(mailboxes).where(mailboxes.c.id == mailbox_pk)
                           .values(uidnext=mailboxes.c.uidnext + n, highestmodseq=modseq)
                           .returning(mailboxes.c.uidnext)).scalar_one()
        return nxt - n

    # --- changes -----------------------------------------------------------

    def state(self, account_id, kind=None):
        """The account's MODSEQ, or the last MODSEQ at which ``kind`` changed
        (the history floor when its changes were all pruned, so a state never
        goes back)."""
        if kind is None:
            with self._read() as conn:
                return conn.execute(select(accounts.c.modseq).where(accounts.c.id == account_id)).scalar_one()
        return self.states(account_id, [kind])[kind]

    def states(self, account_id, kinds):
        """``{kind: state}`` for several kinds in one query (as ``state`` per kind)."""
        kinds = list(kinds)
        subs = [select(func.max(changes.c.modseq)).where(and_(
            changes.c.account_id == account_id, changes.c.kind == k)).scalar_subquery()
            for k in kinds]
        floor = select(accounts.c.history_floor).where(accounts.c.id == account_id).scalar_subquery()
        with self._read() as conn:
            row = conn.execute(select(floor, *subs)).first()
        low = max(row[0] or 0, 1) if row else 1
        return {k: v or low for k, v in zip(kinds, row[1:] if row else [None] * len(kinds))}

    def changes(self, account_id, kind, since, limit=None):
        """``[(modseq, object_id, op)]`` of ``kind`` after ``since``, oldest first."""
        q = select(changes.c.modseq, changes.c.object_id, changes.c.op).where(and_(
            changes.c.account_id == account_id, changes.c.kind == kind, changes.c.modseq > since)) \
            .order_by(changes.c.modseq, changes.c.id)
        if limit:
            q = q.limit(limit)
        with self._read() as conn:
            return [tuple(r) for r in conn.execute(q)]

    def history_floor(self, account_id):
        """The MODSEQ at or below which the change and expunge logs were pruned:
        a client state older than this cannot be brought up to date by changes."""
        with self._read() as conn:
            return conn.execute(select(accounts.c.history_floor)
                                .where(accounts.c.id == account_id)).scalar_one()

    def prune_history(self, keep_seconds):
        """Drop change-log and expunge-log rows older than ``keep_seconds``
        (whole MODSEQs only) and raise each account's ``history_floor``.
        Returns the number of change rows removed."""
        cutoff = time.time() - keep_seconds
        removed = 0
        for acct in self.accounts():
            with self._write() as (conn, _after):
                floor = conn.execute(select(func.max(changes.c.modseq)).where(and_(
                    changes.c.account_id == acct.id, changes.c.at < cutoff))).scalar()
                if floor is None:
                    continue
                removed += conn.execute(delete(changes).where(and_(
                    changes.c.account_id == acct.id, changes.c.modseq <= floor))).rowcount
                conn.execute(delete(expunged).where(and_(
                    expunged.c.modseq <= floor,
                    expunged.c.mailbox_id.in_(select(mailboxes.c.id)
                                              .where(mailboxes.c.account_id == acct.id)))))
                conn.execute(update(accounts).where(and_(accounts.c.id == acct.id,
                                                         accounts.c.history_floor < floor))
                             .values(history_floor=floor))
        return removed

    # --- delivery (called by storage.delivery only) --------------------------

    def insert_messages(self, batch):
        """Commit the rows of staged messages, in one transaction.

        Returns one ``Stored`` or exception per item, in order: an item over
        quota or for a mailbox that is gone gets its exception, the others are
        stored. After the commit the staged files are published (renamed into
        ``cur/``); staged files of failed or duplicate items are discarded.

        This is delivery's hot path, so it is written for a batch: every
        account in the batch takes one MODSEQ (the batch commits atomically,
        so no client can tell its messages apart in time), quota and UIDs are
        counted in Python and written once, and per-message statements go
        straight to the driver (SQLAlchemy's per-statement work was most of
        delivery's CPU).
        """
        results = [None] * len(batch)
        with self._write() as (conn, after):
            sql = _DriverSQL(conn, self.sqlite)
            now = time.time()
            acct_state, box_state = {}, {}
            for item in batch:
                aid, bid = item.account.id, item.mailbox.id
                if aid not in acct_state:
                    row = sql.one("UPDATE accounts SET modseq = modseq + 1 WHERE id = ? "
                                  "RETURNING modseq, used_bytes, quota_bytes", (aid,))
                    acct_state[aid] = {"modseq": row[0], "used": row[1], "quota": row[2],
                                       "added": 0, "docs": [], "changes": [], "boxes": set()}
                if bid not in box_state:
                    row = sql.one("UPDATE mailboxes SET uidnext = uidnext WHERE id = ? AND account_id = ? "
                                  "RETURNING uidnext, uidvalidity", (bid, aid))
                    box_state[bid] = None if row is None else {"next": row[0], "uidvalidity": row[1]}
            for i, item in enumerate(batch):
                acct, box, p = item.account, item.mailbox, item.parsed
                a, b = acct_state[acct.id], box_state[box.id]
                if b is None:
                    results[i] = MailboxNotFound(box.name)
                    continue
                if item.dedupe_window and p.msgid:
                    dup = sql.one(
                        "SELECT mm.uid, mm.message_id FROM messages m JOIN mailbox_messages mm "
                        "ON mm.message_id = m.id WHERE m.account_id = ? AND m.msgid = ? "
                        "AND m.content_hash = ? AND m.received_at > ? AND mm.mailbox_id = ?",
                        (acct.id, p.msgid[:998], p.content_hash, now - item.dedupe_window, box.id))
                    if dup:
                        results[i] = Stored(box.id, b["uidvalidity"], dup[0], dup[1], duplicate=True)
                        continue
                size = len(item.data)
                if a["quota"] is not None and a["used"] + a["added"] + size > a["quota"]:
                    results[i] = QuotaExceeded(acct.address)
                    continue
                modseq = a["modseq"]
                blob_id, env_json, structure_json, summary_json, doc, base = item.prepare()
                thread_pk, new_thread = self._thread_for(sql, acct.id, p, base, now)
                msg_pk = sql.one(
                    "INSERT INTO messages (account_id, thread_id, stem, blob_id, content_hash, size, "
                    "internal_date, received_at, sent_at, msgid, subject, from_sort, to_sort, "
                    "has_attachment, preview, envelope, structure, summary) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                    (acct.id, thread_pk, item.stem, blob_id,
                     p.content_hash, size, item.internal_date or now, now, p.sent_at,
                     p.msgid[:998] if p.msgid else None, p.subject[:4000], p.from_sort, p.to_sort,
                     bool(p.has_attachment), p.preview, env_json, structure_json, summary_json))[0]
                uid = b["next"]
                b["next"] += 1
                sql.run("INSERT INTO mailbox_messages (mailbox_id, uid, message_id, modseq, flags, "
                        "keywords, saved_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (box.id, uid, msg_pk, modseq, item.bits,
                         flagbits.encode_keywords(item.keywords), now))
                a["added"] += size
                a["docs"].append((msg_pk, doc))
                a["changes"] += [(acct.id, modseq, "Email", msg_pk, "c"),
                                 (acct.id, modseq, "Thread", thread_pk, "c" if new_thread else "u")]
                a["boxes"].add(box.id)
                b["modseq"] = modseq
                results[i] = Stored(box.id, b["uidvalidity"], uid, msg_pk)
            for bid, b in box_state.items():
                if b is not None and "modseq" in b:
                    sql.run("UPDATE mailboxes SET uidnext = ?, highestmodseq = ? WHERE id = ?",
                            (b["next"], b["modseq"], bid))
            for aid, a in acct_state.items():
                if not a["docs"]:
                    continue
                sql.run("UPDATE accounts SET used_bytes = used_bytes + ? WHERE id = ?", (a["added"], aid))
                a["changes"] += [(aid, a["modseq"], "Mailbox", bid, "u") for bid in sorted(a["boxes"])]
                sql.many("INSERT INTO changes (account_id, modseq, kind, object_id, op, at) "
                         "VALUES (?, ?, ?, ?, ?, ?)", [(*c, now) for c in a["changes"]])
                self.fulltext.index(conn, after, aid, a["docs"])
                self._publish(after, aid, a["modseq"], {"Email", "Thread", "Mailbox", "EmailDelivery"},
                              a["boxes"])
        for item, result in zip(batch, results):
            key = item.account.maildir_key
            if isinstance(result, Stored) and not result.duplicate:
                self.blobs.publish(key, item.mailbox.folder, item.stem, item.bits)
            else:
                self.blobs.discard(key, item.mailbox.folder, item.stem)
        return results

    def _thread_for(self, sql, account_id, p, base, now):
        """RFC 5256 REFERENCES threading, kept incrementally: a message joins the
        thread of any Message-ID it shares (its own or one it references); a
        reply with no known parent joins a recent thread of the same base subject."""
        ids = list(dict.fromkeys(i[:998] for i in ([p.msgid] if p.msgid else []) + p.references))[:100]
        found = {}
        if ids:
            found = dict(sql.all(
                f"SELECT msgid, thread_id FROM thread_refs WHERE account_id = ? "
                f"AND msgid IN ({', '.join('?' * len(ids))})", (account_id, *ids)))
        thread_pk = next((found[ref] for ref in reversed(ids) if ref in found), None)
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
        missing = [(account_id, i, thread_pk) for i in ids if i not in found]
        if missing:
            sql.many("INSERT INTO thread_refs (account_id, msgid, thread_id) VALUES (?, ?, ?)", missing)
        return thread_pk, new


class _DriverSQL:
    """Statements straight to the DB-API cursor of a SQLAlchemy connection, in
    its transaction. SQL is written with ``?`` placeholders (SQLite's); for
    PostgreSQL they become ``%s``. For delivery's hot path only."""

    def __init__(self, conn, sqlite):
        self.cursor = conn.connection.driver_connection.cursor()
        self.sqlite = sqlite
        self._sql = {}

    def _text(self, sql):
        if self.sqlite:
            return sql
        out = self._sql.get(sql)
        if out is None:
            out = self._sql[sql] = sql.replace("%", "%%").replace("?", "%s")
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


class _NoLockType:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NoLock = _NoLockType()


_last_uidvalidity = [0]


def _uidvalidity():
    """Seconds since the epoch, strictly increasing within the process, so a
    mailbox deleted and created again never gets its old UIDVALIDITY back."""
    with _uidvalidity_lock:
        _last_uidvalidity[0] = max(int(time.time()), _last_uidvalidity[0] + 1)
        return _last_uidvalidity[0]


_uidvalidity_lock = threading.Lock()


def _key(address):
    local, _, domain = address.rpartition("@")
    return f"{domain}/{local}"


def _account(row):
    return Account(row.id, row.address, row.password_hash, row.quota_bytes, row.used_bytes, row.modseq)


def _mailbox(row, messages_=0, unseen=0, size=0):
    return Mailbox(row.id, row.account_id, row.name, row.folder, row.role, bool(row.subscribed),
                   row.uidvalidity, row.uidnext, row.highestmodseq, row.sort_order,
                   messages_, unseen, size)


def relay_socket_path(data_dir):
    """Where the server listens for other processes' change notices."""
    return os.path.join(os.path.abspath(data_dir), "roost.sock")


def _uid_sql(column, uids):
    """``(where, params, wanted)`` restricting ``column`` to ``uids`` (all when
    None); beyond 500 UIDs a range, and ``wanted`` is the set to filter by."""
    if uids is None:
        return "", (), None
    uids = list(uids)
    if not uids:
        return f" AND {column} = -1", (), None
    if len(uids) <= 500:
        return f" AND {column} IN ({', '.join('?' * len(uids))})", tuple(uids), None
    return f" AND {column} BETWEEN ? AND ?", (min(uids), max(uids)), set(uids)


def _uid_filter(q, uids):
    if uids is None:
        return q
    uids = list(uids)
    if not uids:
        return q.where(mailbox_messages.c.uid == -1)
    if len(uids) <= 500:
        return q.where(mailbox_messages.c.uid.in_(uids))
    return q.where(mailbox_messages.c.uid.between(min(uids), max(uids)))


def _chunks(seq, n=500):
    seq = list(seq)
    for i in range(0, len(seq), n):
        yield seq[i:i + n]
