"""Accounts and aliases: the store's part that owns ``domains``, ``accounts``
and ``aliases``.

Addresses are normalised once (``normalise_address``: Unicode NFKC, white
space trimmed, lower case); lookups, aliases and the login throttle's keys
all use that spelling. ``resolve`` turns an envelope recipient into local
accounts: aliases (bounded depth, loops ignored),
``local+detail@domain`` (the detail names a mailbox) and ``@domain``
catch-alls. Creating an account creates its default mailboxes in the same
transaction (``storage.mailboxes``).
"""

import time
import unicodedata

from sqlalchemy import and_, delete, insert, select, update

from . import hot
from .errors import AccountExists, AccountNotFound, Conflict, InvalidName
from .maildir import folder_for
from .model import Account, maildir_key
from .schema import (accounts, aliases, changes, domains, expunged, mailbox_messages, mailboxes,
                     messages, thread_refs, threads)

MAX_ALIAS_DEPTH = 8


def normalise_address(address):
    """The one spelling of an address: Unicode NFKC (so full-width and other
    compatibility forms are the same name, as PRECIS does for user names),
    surrounding white space dropped, lower case. Validity is checked after
    normalising, so a form that folds to ``/`` or ``@`` is judged as what it
    becomes."""
    address = unicodedata.normalize("NFKC", address).strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c.isspace() for c in address) \
            or "/" in address or local.startswith(".") or domain.startswith("."):
        raise InvalidName(f"not an address: {address!r}")
    return unicodedata.normalize("NFKC", address.lower())


def alias_key(alias):
    """An alias as stored: a normalised address, or ``@domain`` (a catch-all)."""
    alias = unicodedata.normalize("NFKC", alias).strip()
    if alias.startswith("@"):
        return normalise_address("x" + alias)[1:]
    return normalise_address(alias)


def account_of(row):
    return Account(row.id, row.address, row.password_hash, row.quota_bytes, row.used_bytes, row.modseq)


class AccountsAPI:
    """Mixed into ``Store``: accounts and aliases."""

    def add_account(self, address, password_hash=None, quota_bytes=None):
        from .imapstate import add_subscriptions
        from .mailboxes import DEFAULT_MAILBOXES, insert_mailbox
        address = normalise_address(address)
        domain = address.rpartition("@")[2]
        with self.write() as txn:
            conn = txn.conn
            if conn.execute(select(accounts.c.id).where(accounts.c.address == address)).first():
                raise AccountExists(address)
            dom = conn.execute(select(domains.c.id).where(domains.c.name == domain)).scalar()
            if dom is None:
                dom = conn.execute(insert(domains).values(name=domain)).inserted_primary_key[0]
            account_id = conn.execute(insert(accounts).values(
                address=address, domain_id=dom, password_hash=password_hash,
                quota_bytes=quota_bytes, used_bytes=0, modseq=1,
                created=time.time())).inserted_primary_key[0]
            txn.next_modseq(account_id)
            key = maildir_key(address)
            for order, (name, role) in enumerate(DEFAULT_MAILBOXES):
                insert_mailbox(txn, account_id, name, role, order)
                self.blobs.create_folder(key, folder_for(name))
            add_subscriptions(txn, account_id, [n for n, _r in DEFAULT_MAILBOXES])
        return self.account(address)

    def account(self, address):
        """The account at ``address`` (exact, case-insensitive), or None."""
        try:
            address = normalise_address(address)
        except InvalidName:
            return None
        with self.reader() as conn:
            row = hot.account_row(hot.DriverSQL(conn, self.sqlite), address)
        return Account(*row) if row else None

    def account_by_id(self, account_id):
        with self.reader() as conn:
            row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
        if row is None:
            raise AccountNotFound(account_id)
        return account_of(row)

    def accounts(self):
        with self.reader() as conn:
            return [account_of(r) for r in conn.execute(select(accounts).order_by(accounts.c.address))]

    def require_account(self, address):
        """The account at ``address``; raises AccountNotFound."""
        acct = self.account(address)
        if acct is None:
            raise AccountNotFound(address)
        return acct

    def set_password(self, address, password_hash):
        self._set_account(address, password_hash=password_hash)

    def set_quota(self, address, quota_bytes):
        self._set_account(address, quota_bytes=quota_bytes)

    def _set_account(self, address, **values):
        acct = self.require_account(address)
        with self.write() as txn:
            txn.conn.execute(update(accounts).where(accounts.c.id == acct.id).values(**values))

    def delete_account(self, address):
        acct = self.require_account(address)
        with self.write() as txn:
            conn = txn.conn
            conn.execute(delete(aliases).where(aliases.c.target == acct.address))
            self.revoke_everywhere(txn, acct.address)
            self.fulltext.remove_account(txn, acct.id)
            clear_mail(conn, acct.id)
            for table in (mailboxes, changes):
                conn.execute(delete(table).where(table.c.account_id == acct.id))
            conn.execute(delete(accounts).where(accounts.c.id == acct.id))
            txn.file_op("rmaccount", acct.maildir_key)
            txn.after(lambda: self.blobs.delete_account(acct.maildir_key))

    # --- aliases -----------------------------------------------------------

    def add_alias(self, alias, target):
        alias = alias_key(alias)
        target = normalise_address(target)
        with self.write() as txn:
            if txn.conn.execute(select(aliases.c.id).where(
                    and_(aliases.c.address == alias, aliases.c.target == target))).first():
                raise Conflict(f"{alias} already points at {target}")
            txn.conn.execute(insert(aliases).values(address=alias, target=target))

    def delete_alias(self, alias):
        try:
            alias = alias_key(alias)
        except InvalidName:
            raise AccountNotFound(alias) from None
        with self.write() as txn:
            if txn.conn.execute(delete(aliases).where(aliases.c.address == alias)).rowcount == 0:
                raise AccountNotFound(alias)

    def aliases(self):
        with self.reader() as conn:
            return [(r.address, r.target) for r in conn.execute(
                select(aliases.c.address, aliases.c.target).order_by(aliases.c.address))]

    def alias_targets(self, alias):
        """The targets stored for ``alias`` (an address or ``@domain``), not
        followed further; [] for a name that is not an alias."""
        try:
            alias = alias_key(alias)
        except InvalidName:
            return []
        with self.reader() as conn:
            return hot.alias_targets(hot.DriverSQL(conn, self.sqlite), alias)

    def hosts_domain(self, name):
        """Whether Roost holds mail for domain ``name``: an account's or an alias's."""
        try:
            domain = alias_key("@" + name)[1:]
        except InvalidName:
            return False
        if "@" in domain:
            return False
        pattern = "%@" + domain.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self.reader() as conn:
            if conn.execute(select(accounts.c.id).join(domains).where(
                    domains.c.name == domain).limit(1)).first():
                return True
            return conn.execute(select(aliases.c.id).where(
                aliases.c.address.like(pattern, escape="\\")).limit(1)).first() is not None

    def resolve(self, address, catch_all=True):
        """Local recipients of ``address``: a list of ``(Account, folder name or None)``.

        Follows aliases (bounded depth, loops ignored), ``local+detail@domain``
        (the detail names a mailbox, used when it exists) and, unless
        ``catch_all`` is false, ``@domain`` catch-all aliases. An empty list
        means no such user.
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
            with self.reader() as conn:
                sql = hot.DriverSQL(conn, self.sqlite)
                targets = hot.alias_targets(sql, addr)
                if not targets and "+" in local:
                    base, _, det = local.partition("+")
                elif not targets and given and catch_all:
                    targets = hot.alias_targets(sql, "@" + domain)
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


def clear_mail(conn, account_id):
    """Delete every message, membership, expunge record and thread of the
    account (its mailboxes stay): account deletion and ``fsck --rebuild``."""
    box_ids = select(mailboxes.c.id).where(mailboxes.c.account_id == account_id)
    conn.execute(delete(mailbox_messages).where(mailbox_messages.c.mailbox_id.in_(box_ids)))
    conn.execute(delete(expunged).where(expunged.c.mailbox_id.in_(box_ids)))
    conn.execute(delete(messages).where(messages.c.account_id == account_id))
    for table in (thread_refs, threads):
        conn.execute(delete(table).where(table.c.account_id == account_id))
