"""Annotations (IMAP METADATA, RFC 5464): the store's part that owns
``metadata_entries``.

An entry belongs to an account and a mailbox (``mailbox_id``), or to the
account alone (``mailbox_id`` NULL: the account's server entries). Names are
stored lower case with their scope prefix (``/private/...`` or
``/shared/...``); values are bytes. A ``/private`` entry is the row of the
account that set it; a ``/shared`` entry of a mailbox is the row of the
mailbox's owner. Entries of a mailbox follow it through RENAME (they hang on
its id) and go with it on DELETE (the foreign key cascades).

Limits (RFC 5464 section 4.1 asks for at least 1024 octets and 10 entries):
``MAX_VALUE`` octets per value, ``MAX_PER_OWNER`` entries per mailbox (or
per account's server entries), ``MAX_ACCOUNT_OCTETS`` of values per account.
``set_metadata`` writes all of a command's entries or none, and puts
``("metadata", mailbox id or 0, name)`` of each entry it set or removed in
the account's change event (``Change.imap``, for NOTIFY's
MailboxMetadataChange and ServerMetadataChange).
"""

from sqlalchemy import and_, delete, func, insert, select, update

from .errors import MetadataTooLarge, MetadataTooMany
from .schema import metadata_entries

MAX_VALUE = 64 * 1024
MAX_PER_OWNER = 100
MAX_ACCOUNT_OCTETS = 1024 * 1024


def _owner(account_id, mailbox_pk):
    t = metadata_entries
    return and_(t.c.account_id == account_id,
                t.c.mailbox_id.is_(None) if mailbox_pk is None else t.c.mailbox_id == mailbox_pk)


class MetadataAPI:
    """Mixed into ``Store``: annotations of mailboxes and of the account."""

    def metadata(self, account_id, mailbox_pk, names, depth="0"):
        """``{name: value}`` of the entries named, and with ``depth`` "1" or
        "infinity" of the entries below each (one or any number of levels)."""
        t = metadata_entries
        wanted = set(names)
        with self.reader() as conn:
            rows = conn.execute(select(t.c.name, t.c.value).where(_owner(account_id, mailbox_pk))
                                .order_by(t.c.name)).all()
        out = {}
        for name, value in rows:
            if name in wanted:
                out[name] = value
            elif depth != "0":
                for base in wanted:
                    if name.startswith(base + "/") and (depth == "infinity"
                                                        or "/" not in name[len(base) + 1:]):
                        out[name] = value
                        break
        return out

    def set_metadata(self, account_id, mailbox_pk, values):
        """Set (bytes) or remove (None) each ``(name, value)`` of ``values``, all
        or none: raises ``MetadataTooLarge`` or ``MetadataTooMany``."""
        t = metadata_entries
        for _name, value in values:
            if value is not None and len(value) > MAX_VALUE:
                raise MetadataTooLarge(MAX_VALUE)
        final = dict(values)
        with self.write() as txn:
            conn = txn.conn
            have = {name: (pk, size) for name, pk, size in conn.execute(
                select(t.c.name, t.c.id, func.length(t.c.value)).where(_owner(account_id, mailbox_pk)))}
            after = (set(have) | {n for n, v in final.items() if v is not None}) \
                - {n for n, v in final.items() if v is None}
            if len(after) > max(MAX_PER_OWNER, len(have)):
                raise MetadataTooMany(MAX_PER_OWNER)
            total = conn.execute(select(func.coalesce(func.sum(func.length(t.c.value)), 0))
                                 .where(t.c.account_id == account_id)).scalar()
            new_total = total + sum(len(v or b"") - (have[n][1] if n in have else 0)
                                    for n, v in final.items())
            if new_total > max(MAX_ACCOUNT_OCTETS, total):
                raise MetadataTooMany(MAX_ACCOUNT_OCTETS)
            changed = []
            for name, value in final.items():
                if value is not None or name in have:
                    changed.append(("metadata", mailbox_pk or 0, name))
                if value is None:
                    if name in have:
                        conn.execute(delete(t).where(t.c.id == have[name][0]))
                elif name in have:
                    conn.execute(update(t).where(t.c.id == have[name][0]).values(value=value))
                else:
                    conn.execute(insert(t).values(account_id=account_id, mailbox_id=mailbox_pk,
                                                  name=name, value=value))
            txn.publish(account_id, imap=changed)
