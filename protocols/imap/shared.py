"""Other accounts' mailboxes in IMAP: the "Other Users" namespace (RFC 2342)
and the rights checks of RFC 4314 section 4.

A mailbox that ``bob@example.org`` shares as ``Projects/Roost`` is
``Other Users/bob@example.org/Projects/Roost`` to the accounts it is shared
with. The names under ``Other Users`` are never personal mailboxes (CREATE
refuses them in the personal namespace). ``resolve`` turns a client's name
into ``(Mailbox, rights)``: one's own mailbox with every right, or a shared
one with the rights granted; a shared name the account has no right on is
``MailboxNotFound``, as if it did not exist. Handlers then call the store
with the owner's ids (the Mailbox carries them).

Rights are read at SELECT and again whenever the store reports a change to
the selected mailbox (a grant or revocation is one): FLAGS and
PERMANENTFLAGS are sent again when they change, and a user who lost ``r``
gets ``* BYE [NOPERM]`` (RFC 4314 section 5.1.1).

Flags follow the rights (RFC 4314 section 4): ``s`` for \\Seen, ``t`` for
\\Deleted, ``w`` for every other flag and keyword. Flags are shared: every
account with access to a mailbox sees the same \\Seen (RFC 4314 section 5.2
allows either; per-user \\Seen would need a column per grantee).
"""

from roost.storage import errors
from roost.storage.acl import RIGHTS
from roost.storage.store import check_mailbox_name as check_name
from roost.storage.flags import names as flag_names

from .commands import No

OTHER = "Other Users"
PREFIX = OTHER + "/"
SEPARATOR = "/"


def split(name):
    """``(owner, name)`` of a name in the Other Users namespace, else None;
    either part may be empty (``Other Users`` itself, ``Other Users/bob``)."""
    if name != OTHER and not name.startswith(PREFIX):
        return None
    owner, _, rest = name[len(PREFIX):].partition(SEPARATOR)
    return owner, rest


def shared_name(owner, name):
    return PREFIX + owner + SEPARATOR + name


async def resolve(s, name, need=""):
    """``(Mailbox, rights, client name)`` of the client's mailbox ``name`` (a
    store name, decoded); raises MailboxNotFound, or No [NOPERM] when a right
    in ``need`` is missing."""
    return await s.ctx.run(resolve_blocking, s.ctx.store, s.account, name, need)


def resolve_blocking(store, account, name, need=""):
    """``resolve`` on a worker thread (for handlers that already are on one)."""
    parts = split(name)
    if parts is None:
        box = store.mailbox(account.id, name)
        return box, RIGHTS, box.name
    owner, rest = parts
    if not owner or not rest:
        raise errors.MailboxNotFound(name)
    box, rights = store.shared_mailbox(account, owner, rest)
    check(rights, need)
    return box, rights, shared_name(store.account_by_id(box.account_id).address, box.name)


def _parent_with(store, account, owner, rest, need):
    """The owner's nearest existing parent of ``rest``, which must grant
    ``need`` (a parent without it stops the search: what is inside a mailbox
    one has no right on stays out of reach)."""
    acct = store.account(owner)
    parts = rest.split(SEPARATOR)
    for i in range(len(parts) - 1, 0, -1) if acct is not None else ():
        try:
            box = store.mailbox(acct.id, SEPARATOR.join(parts[:i]))
        except errors.MailboxNotFound:
            continue
        if any(r not in store.rights(account, box) for r in need):
            break
        return box
    raise No(f"[NOPERM] creating a mailbox here needs the {need} right on its parent")


def create(store, account, name):
    """CREATE in the Other Users namespace (blocking): the ``k`` right on the
    nearest existing parent (RFC 4314 section 4); the new mailbox starts with
    that parent's grants."""
    owner, rest = split(name)
    if not owner or not rest or store.account(owner) is None or store.account(owner).id == account.id:
        raise No("[CANNOT] the Other Users namespace holds other accounts' mailboxes only")
    parent = _parent_with(store, account, owner, rest, "k")
    box = store.create_mailbox(parent.account_id, rest)
    for grantee, rights in store.acl(parent.id).items():
        store.grant(box.id, grantee, rights)
    return box


def rename(store, account, name, new):
    """RENAME where either name is in the Other Users namespace (blocking):
    within one owner's mailboxes, with ``x`` on the mailbox and ``k`` on the
    new parent. Returns ``(Mailbox, new client name)``."""
    box, _rights, _shown = resolve_blocking(store, account, name, "x")
    owner = store.account_by_id(box.account_id)
    new_parts = split(new)
    if split(name) is None or new_parts is None or store.account(new_parts[0]) != owner:
        raise No("[CANNOT] a mailbox stays in its owner's namespace when renamed")
    _parent_with(store, account, owner.address, new_parts[1], "k")
    store.rename_mailbox(owner.id, box.id, new_parts[1])
    return box, shared_name(owner.address, check_name(new_parts[1]))


def check(rights, need):
    missing = "".join(r for r in need if r not in rights)
    if missing:
        raise No(f"[NOPERM] you lack the {missing} right on this mailbox")


FLAG_RIGHT = {"\\seen": "s", "\\deleted": "t"}


def allowed_flags(rights, flags):
    """The flags of ``flags`` the rights let a user set or clear."""
    return [f for f in flags if FLAG_RIGHT.get(f.lower(), "w") in rights]


def store_flags(store, mailbox_pk, rights, uids, flags, mode, unchanged_since=None):
    """STORE with less than every flag right (blocking): only the flags the
    rights allow change (RFC 4314 section 4: the others are left as they are,
    and the command fails only when none of the named flags may change). A
    replace becomes an add of the allowed flags and a removal of the allowed
    ones not named; UNCHANGEDSINCE is applied to the first of the two."""
    allowed = allowed_flags(rights, flags)
    if flags and not allowed:
        raise No("[NOPERM] you lack the rights to change these flags")
    if mode != "replace":
        return store.store_flags(mailbox_pk, uids, allowed, mode, unchanged_since)
    named = {f.lower() for f in allowed}
    clear = {f for r in store.flags(mailbox_pk, uids) for f in flag_names(r[2], r[3])
             if f.lower() not in named}
    clear = allowed_flags(rights, sorted(clear))
    changed, failed = store.store_flags(mailbox_pk, uids, allowed, "add", unchanged_since)
    if clear:
        refused = set(failed)
        more, _ = store.store_flags(mailbox_pk, [u for u in uids if u not in refused], clear, "remove")
        last = {r[0]: r for r in changed}
        last.update((r[0], r) for r in more)
        changed = [last[u] for u in sorted(last)]
    return changed, failed


def copy(ctx, mailbox_pk, uids, dest, rights, move=False):
    """COPY or MOVE into a mailbox where the user lacks a flag right or that
    another account owns (blocking). Only the flags the rights allow go along
    (RFC 4314 section 4). Within one account it is the store's copy; across
    accounts each message is read and delivered to the owner of ``dest`` (the
    owner's quota applies) and, for MOVE, removed from the source at the end.
    A failure takes back what was added, so nothing is half copied.
    Returns ``(uidvalidity, [(src uid, dst uid)])``."""
    store = ctx.store
    if store.mailbox_by_id(mailbox_pk).account_id == dest.account_id:
        validity, pairs = (store.move if move else store.copy)(mailbox_pk, uids, dest.id)
        new = [p[1] for p in pairs]
        if new and not all(r in rights for r in "stw"):
            strip = {f for r in store.flags(dest.id, new) for f in flag_names(r[2], r[3])}
            strip = sorted(strip - set(allowed_flags(rights, strip)))
            if strip:
                store.store_flags(dest.id, new, strip, "remove")
        return validity, pairs
    owner = store.account_by_id(dest.account_id)
    flags = {r[0]: flag_names(r[2], r[3]) for r in store.flags(mailbox_pk, uids)}
    pairs = []
    try:
        for uid in uids:
            if uid not in flags:
                continue
            try:
                (rec,) = store.records(mailbox_pk, [uid]) or [None]
                data = store.read(mailbox_pk, uid) if rec is not None else None
            except errors.MessageNotFound:
                continue
            if data is None:
                continue
            stored = ctx.append(owner, dest, data, allowed_flags(rights, flags[uid]), rec.internal_date)
            pairs.append((uid, stored.uid))
    except errors.StoreError:
        if pairs:
            store.remove(dest.id, [p[1] for p in pairs])
        raise
    if move and pairs:
        store.remove(mailbox_pk, [p[0] for p in pairs])
    return dest.uidvalidity, pairs


def read_write(rights):
    """SELECT is READ-WRITE with any of i, e or a flag right (RFC 4314 section 5.2)."""
    return any(r in rights for r in "iestw")
