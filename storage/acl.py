"""Access control lists (RFC 4314): the store's part that owns the ``acl`` table.

A grant gives an identifier rights on one mailbox. The identifier is an
account's address (normalised, as ``storage.accounts`` spells it) or
``anyone`` (every authenticated account). Rights are RFC 4314 letters from
``RIGHTS`` kept in that order; the virtual ``c`` and ``d`` of RFC 2086 are
expanded before they get here (``expand_rights``: ``c`` is ``k``, ``d`` is
``x``, ``t`` and ``e``). A user's rights on a mailbox are the union of the
grants to their address and to ``anyone``; the owner always has every right,
and no grant can change that. Negative identifiers (``-name``) are not
supported.

Nothing is shared by default. ``shared_mailboxes`` lists what other accounts
granted an account (any right at all); ``shared_mailbox`` finds one of them
by owner and name and raises ``MailboxNotFound`` when the account has no
right on it, exactly as for a mailbox that does not exist, so a name probe
learns nothing. The protocols check rights and then call the rest of the
store with the owner's ids. A grant or revocation is a Mailbox change of the
owner (JMAP ``myRights`` and ``shareWith`` are read from grants). Grants go
with their mailbox (the foreign key cascades) and, when an account is
deleted, with its address (``revoke_everywhere``).
"""

from sqlalchemy import and_, delete, insert, select, update

from . import hot
from .errors import AccountNotFound, InvalidName, MailboxNotFound
from .model import Mailbox
from .schema import acl, mailboxes

RIGHTS = "lrswipkxtea"          # every right Roost knows, in display order
ANYONE = "anyone"


def expand_rights(text):
    """The rights a client's string names (``c``, ``d`` expanded), in RIGHTS
    order; raises InvalidName for a letter that is not a right."""
    got = set()
    for ch in text:
        if ch == "c":
            got.add("k")
        elif ch == "d":
            got.update("xte")
        elif ch in RIGHTS:
            got.add(ch)
        else:
            raise InvalidName(f"{ch!r} is not a right Roost supports")
    return "".join(r for r in RIGHTS if r in got)


def with_virtual(rights):
    """Rights as RFC 4314 section 2.1.1 wants them shown: with ``c`` when ``k``
    is in them and ``d`` when any of ``x``, ``t``, ``e`` is."""
    out = rights
    if "k" in rights:
        out += "c"
    if any(r in rights for r in "xte"):
        out += "d"
    return out


class AclAPI:
    """Mixed into ``Store``: grants on mailboxes and the rights they give."""

    def acl(self, mailbox_pk):
        """``{identifier: rights}`` of the mailbox's grants (the owner not included)."""
        with self.reader() as conn:
            return {r.grantee: r.rights for r in conn.execute(
                select(acl.c.grantee, acl.c.rights).where(acl.c.mailbox_id == mailbox_pk)
                .order_by(acl.c.grantee))}

    def account_grants(self, account_id):
        """``{mailbox pk: {identifier: rights}}`` of the grants on the account's mailboxes."""
        out = {}
        with self.reader() as conn:
            for r in conn.execute(select(acl.c.mailbox_id, acl.c.grantee, acl.c.rights)
                                  .join(mailboxes, mailboxes.c.id == acl.c.mailbox_id)
                                  .where(mailboxes.c.account_id == account_id)
                                  .order_by(acl.c.grantee)):
                out.setdefault(r.mailbox_id, {})[r.grantee] = r.rights
        return out

    def grantee(self, identifier):
        """The stored spelling of an identifier: ``anyone`` or an existing
        account's address; raises AccountNotFound (or InvalidName)."""
        if identifier.lower() == ANYONE:
            return ANYONE
        acct = self.account(identifier)
        if acct is None:
            raise AccountNotFound(identifier)
        return acct.address

    def grant(self, mailbox_pk, identifier, rights):
        """Give ``identifier`` exactly ``rights`` on the mailbox (empty: no grant)."""
        grantee = self.grantee(identifier)
        rights = expand_rights(rights)
        box = self.mailbox_by_id(mailbox_pk)
        owner = self.account_by_id(box.account_id)
        if grantee == owner.address:
            raise InvalidName("the owner always has every right")
        with self.write() as txn:
            conn = txn.conn
            where = and_(acl.c.mailbox_id == mailbox_pk, acl.c.grantee == grantee)
            if not rights:
                conn.execute(delete(acl).where(where))
            elif not conn.execute(update(acl).where(where).values(rights=rights)).rowcount:
                conn.execute(insert(acl).values(mailbox_id=mailbox_pk, grantee=grantee, rights=rights))
            self._acl_changed(txn, box)

    def revoke(self, mailbox_pk, identifier):
        """Remove the identifier's grant on the mailbox (none is no error)."""
        try:
            grantee = self.grantee(identifier)
        except AccountNotFound:
            grantee = identifier.lower()
        box = self.mailbox_by_id(mailbox_pk)
        with self.write() as txn:
            if txn.conn.execute(delete(acl).where(and_(acl.c.mailbox_id == mailbox_pk,
                                                       acl.c.grantee == grantee))).rowcount:
                self._acl_changed(txn, box)

    def revoke_everywhere(self, txn, address):
        """Drop every grant to ``address`` (its account is being deleted), in ``txn``."""
        txn.conn.execute(delete(acl).where(acl.c.grantee == address))

    @staticmethod
    def _acl_changed(txn, box):
        txn.next_modseq(box.account_id)
        txn.log(box.account_id, "Mailbox", [box.id], "u")
        txn.publish(box.account_id, {"Mailbox"}, {box.id})

    def rights(self, account, mailbox):
        """The rights ``account`` has on ``mailbox`` (a Mailbox): all for the owner."""
        if mailbox.account_id == account.id:
            return RIGHTS
        with self.reader() as conn:
            got = set("".join(conn.execute(select(acl.c.rights).where(and_(
                acl.c.mailbox_id == mailbox.id,
                acl.c.grantee.in_([account.address, ANYONE])))).scalars()))
        return "".join(r for r in RIGHTS if r in got)

    def shared_mailboxes(self, account):
        """``[(owner address, Mailbox, rights)]`` of the other accounts'
        mailboxes ``account`` has any right on, by owner and name."""
        with self.reader() as conn:
            rows = hot.shared_mailbox_rows(hot.DriverSQL(conn, self.sqlite), account.id,
                                           (account.address, ANYONE))
        found = {}
        for r in rows:
            owner, box, got = found.setdefault(r[0], (r[10], Mailbox(*r[:5], False, *r[6:10]), set()))
            got.update(r[11])
        out = [(owner, box, "".join(x for x in RIGHTS if x in got))
               for owner, box, got in found.values()]
        out = [o for o in out if o[2]]
        out.sort(key=lambda o: (o[0], o[1].name))
        return out

    def shared_mailbox(self, account, owner_address, name):
        """``(Mailbox, rights)`` of the mailbox ``name`` of the account at
        ``owner_address`` that ``account`` has a right on; MailboxNotFound
        otherwise (whether or not it exists)."""
        owner = self.account(owner_address)
        if owner is None or owner.id == account.id:
            raise MailboxNotFound(name)
        box = self.mailbox(owner.id, name)
        rights = self.rights(account, box)
        if not rights:
            raise MailboxNotFound(name)
        return box, rights
