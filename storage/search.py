"""One criteria tree for every search: IMAP SEARCH/SORT and JMAP Email/query.

Owns the node types below, their evaluation, and the ``SearchBackend``
interface. Protocols compile their syntax into these nodes; they never write
SQL or read message files. Metadata nodes (flags, dates, sizes, UIDs,
mailboxes, MODSEQ, threads) become one SQL condition; each ``Text`` node
becomes a condition on ``messages.id`` that the store's backend supplies
(an FTS5 subquery, or the id list Whoosh found plus a scan of the messages it
has not indexed yet), so And/Or/Not combine freely and one SQL statement
answers. No search reads message files. What a ``Text`` node matches is
defined once, in ``storage.search_text``.

Contract used by the protocols:

    search(store, account_id, criteria, mailbox_pk=None) -> list of matches

With ``mailbox_pk`` the result is the ascending list of matching UIDs in that
mailbox; without it (JMAP, account-wide) the ascending list of matching
message primary keys (``messages.id``). Every date is epoch seconds (UTC);
IMAP's day-granular keys are converted by the IMAP layer into [since, before)
ranges in the time zone RFC 3501 asks for.

Backends (``make_backend``): FTS5 is the default on SQLite. It indexes in the
delivery transaction (a committed message is searchable at once, an expunged
one never), indexes about 1,700 messages (6 KB) per CPU second, and answers
the bench queries at 100,000 messages in milliseconds. PostgreSQL has no FTS5,
so it uses Whoosh: pure Python, about 25 times slower to index (hence the
background queue), with indexes under ``DATA/search/`` that several nodes
must share the way they share the Maildir. PostgreSQL's own full text
(tsvector) was not chosen: its parser cannot give RFC 3501 header substrings
or CJK runs without a second mechanism, and one matcher for every deployment
keeps IMAP and JMAP answers identical.

Sets of UIDs (``Uids``: IMAP sequence and UID sets, SENTON days, EMAILID)
are merged into ascending disjoint ranges first. A few ranges become
``uid BETWEEN`` terms; more become one flat ``uid IN (...)`` list of the
mailbox's UIDs in them (the mailbox's UID list is read once per search and cut
with bisect), so no client set builds an expression deeper than SQLite's
limit of 1,000 or costs more than one pass over the mailbox.

Account-wide, the per-mailbox nodes (``Flag``, ``ModSeq``, ``Date("saved")``)
match when the message matches in any of its mailboxes; ``Uids`` needs a
mailbox. A ``Flag`` of an unknown system flag (``\\Recent`` is the IMAP
layer's business) matches nothing.
"""

import json
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

from sqlalchemy import (Integer, and_, any_, exists, false, func, literal, literal_column, not_,
                        or_, select, true)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import aliased
from sqlalchemy.sql import Select

from . import flags as flagbits
from . import hot
from .search_text import query_words
from .schema import mailbox_messages, messages


@dataclass(frozen=True)
class All:
    """Matches every message."""


@dataclass(frozen=True)
class And:
    items: tuple


@dataclass(frozen=True)
class Or:
    items: tuple


@dataclass(frozen=True)
class Not:
    item: object


@dataclass(frozen=True)
class Flag:
    """Has the flag ``name`` (IMAP system flag like ``\\Seen`` or a keyword)."""
    name: str


@dataclass(frozen=True)
class Uids:
    """UID in one of the inclusive ``ranges`` ((lo, hi), ...) of the searched mailbox."""
    ranges: tuple


@dataclass(frozen=True)
class Date:
    """``field`` is "internal" (arrival), "sent" (Date header) or "saved";
    matches ``since <= value < before`` (either bound may be None)."""
    field: str
    since: float = None
    before: float = None


@dataclass(frozen=True)
class Size:
    """Size in octets: ``larger < size < smaller`` (either bound may be None)."""
    larger: int = None
    smaller: int = None


@dataclass(frozen=True)
class Text:
    """Text match. ``field``: "text" (headers and body), "body", "subject",
    "from", "to", "cc", "bcc", or "header:<name>" (any header; empty ``value``
    means the header is present). Header fields keep RFC 3501's case-insensitive
    substring semantics; body and text match words and word prefixes."""
    field: str
    value: str


@dataclass(frozen=True)
class InMailbox:
    """The message is in one of these mailboxes (primary keys)."""
    mailbox_pks: tuple


@dataclass(frozen=True)
class ModSeq:
    """MODSEQ (in the searched mailbox) is at least ``since`` (CONDSTORE)."""
    since: int


@dataclass(frozen=True)
class Thread:
    """In the thread with primary key ``thread_pk`` (JMAP inThread)."""
    thread_pk: int


@dataclass(frozen=True)
class HasAttachment:
    value: bool = True


# --- evaluation --------------------------------------------------------------

def search(store, account_id, criteria, mailbox_pk=None, *, superset=False):
    """Ascending UIDs in ``mailbox_pk`` (or message ids account-wide) matching ``criteria``.

    ``superset`` (account-wide): when the criteria are one text node, the
    backend's matches are returned unchecked, so ids of other accounts'
    messages may be among them; for a caller that keeps only the account's
    messages anyway (``views.Views.order`` with ``pks``), this saves seeking
    each match in the account's index (half of a 20,000-match search).

    A mailbox search reads ``mailbox_messages`` and joins ``messages`` only for
    criteria on its columns. When the criteria are a text match (alone or in a
    top-level And), SQLite is steered to start from the backend's matches
    (``+0`` hides the mailbox column from the planner, which cannot size a text
    subquery and would otherwise scan the whole mailbox) and to seek each match
    in the covering index on (message_id, mailbox_id, uid); in a mailbox, a
    backend's SELECT of matches is joined rather than an ``IN`` (which SQLite
    first copies into a temporary index: a fifth of a 20,000-match search).
    Account-wide, the index on messages(account_id) gives that plan unaided.
    """
    mm, m = mailbox_messages, messages
    driven = store.sqlite and _text_driven(criteria)
    with store.reader() as conn:
        if mailbox_pk is not None:
            sql = hot.DriverSQL(conn, store.sqlite)
            owner = hot.mailbox_owner(sql, mailbox_pk)
            if owner is None or owner[0] != account_id:
                return []
            if isinstance(criteria, All):     # SEARCH ALL (a client's bookkeeping): nothing to build
                return hot.mailbox_uids(sql, mailbox_pk)
            ctx = _Context(conn, account_id, mailbox_pk, store.fulltext, mm.c.message_id)
            source = mm.join(m, m.c.id == mm.c.message_id) if _needs_messages(criteria) else mm
            hits, cond = _driver(criteria, ctx) if driven else (None, _condition(criteria, ctx))
            if hits is not None:
                source = hits.join(source, mm.c.message_id == list(hits.c)[0])
            box = (mm.c.mailbox_id + 0) if driven else mm.c.mailbox_id
            q = select(mm.c.uid).select_from(source).where(box == mailbox_pk, cond).order_by(mm.c.uid)
        else:
            ctx = _Context(conn, account_id, None, store.fulltext, m.c.id)
            if superset and isinstance(criteria, Text):
                found = store.fulltext.query(conn, account_id, criteria)
                if isinstance(found, Select):
                    return _first_column(conn, found)
                if found is not True:
                    return sorted(set(found))
            cond = _condition(criteria, ctx)
            q = select(m.c.id).where(m.c.account_id == account_id, cond).order_by(m.c.id)
        return _first_column(conn, q)


def _driver(criteria, ctx):
    """``(subquery of matches to join, condition of the rest)`` for text-driven
    criteria; the subquery is None when the first text node's answer is not a
    SELECT (all messages, or a list of ids)."""
    items = _merge_words(criteria.items) if isinstance(criteria, And) else [criteria]
    first = next(i for i, item in enumerate(items) if isinstance(item, Text))
    found = ctx.backend.query(ctx.conn, ctx.account_id, items[first])
    rest = [_condition(item, ctx) for i, item in enumerate(items) if i != first]
    if isinstance(found, Select):
        return found.subquery("hits"), and_(true(), *rest)
    return None, and_(_matches(ctx, found), *rest)


def _first_column(conn, q):
    """The first column of ``q``'s rows. On SQLite straight from the driver's
    cursor: SQLAlchemy's row objects cost a third of a 20,000-match search."""
    if conn.dialect.name != "sqlite":
        return list(conn.execute(q).scalars())
    comp = q.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    params = tuple(comp.params[k] for k in comp.positiontup)
    return [r[0] for r in conn.connection.driver_connection.execute(str(comp), params)]


def _text_driven(node):
    if isinstance(node, Text):
        return True
    return isinstance(node, And) and any(isinstance(i, Text) for i in node.items)


def _merge_words(items):
    """BODY a AND BODY b is BODY "a b" (every word must match either way): one
    backend query instead of two that the database then intersects."""
    out, merged = [], {}
    for item in items:
        if isinstance(item, Text) and item.field in ("text", "body") and any(query_words(item.value)):
            if item.field in merged:
                out[merged[item.field]] = Text(item.field, out[merged[item.field]].value + " " + item.value)
                continue
            merged[item.field] = len(out)
        out.append(item)
    return out


_MESSAGE_NODES = (Size, Thread, HasAttachment)


def _needs_messages(node):
    if isinstance(node, _MESSAGE_NODES) or (isinstance(node, Date) and node.field != "saved"):
        return True
    if isinstance(node, (And, Or)):
        return any(_needs_messages(i) for i in node.items)
    if isinstance(node, Not):
        return _needs_messages(node.item)
    return False


def text_nodes(criteria):
    """Every ``Text`` node under ``criteria`` that is not negated (for highlighting)."""
    if isinstance(criteria, Text):
        return [criteria]
    if isinstance(criteria, (And, Or)):
        return [t for item in criteria.items for t in text_nodes(item)]
    return []


@dataclass
class _Context:
    conn: object
    account_id: int
    mailbox_pk: int
    backend: object
    message_id: object      # the column that holds the message id in the FROM clause
    uids: list = field(default=None)   # the searched mailbox's UIDs, read on first need


SQL_RANGES = 8     # up to this many UID ranges are BETWEEN terms; more, one IN list


def merge_ranges(ranges):
    """Inclusive (lo, hi) ranges, sorted, with overlapping and adjacent ones joined."""
    out = []
    for lo, hi in sorted((min(a, b), max(a, b)) for a, b in ranges):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1][1] = hi
        else:
            out.append([lo, hi])
    return out


def _uid_condition(ctx, ranges):
    uid = mailbox_messages.c.uid
    if len(ranges) <= SQL_RANGES:
        parts = [uid.between(lo, hi) for lo, hi in ranges]
        return or_(*parts) if parts else false()
    if ctx.uids is None:
        ctx.uids = _first_column(ctx.conn, select(uid).where(
            mailbox_messages.c.mailbox_id == ctx.mailbox_pk).order_by(uid))
    have, picked = ctx.uids, []
    for lo, hi in ranges:
        picked.extend(have[bisect_left(have, lo):bisect_right(have, hi)])
    return in_list(ctx.conn, uid, picked)


def _condition(node, ctx):
    mm, m = mailbox_messages, messages
    if isinstance(node, All):
        return true()
    if isinstance(node, And):
        parts = [_condition(i, ctx) for i in _merge_words(node.items)]
        return and_(*parts) if parts else true()
    if isinstance(node, Or):
        parts = [_condition(i, ctx) for i in node.items]
        return or_(*parts) if parts else false()
    if isinstance(node, Not):
        return not_(_condition(node.item, ctx))
    if isinstance(node, Flag):
        return _per_mailbox(ctx, lambda row: _flag(row, node.name))
    if isinstance(node, Uids):
        if ctx.mailbox_pk is None:
            raise ValueError("Uids needs a mailbox")
        return _uid_condition(ctx, merge_ranges(node.ranges))
    if isinstance(node, Date):
        if node.field == "saved":
            return _per_mailbox(ctx, lambda row: _range(row.c.saved_at, node.since, node.before))
        col = {"internal": m.c.internal_date,
               "sent": func.coalesce(m.c.sent_at, m.c.internal_date)}.get(node.field)
        if col is None:
            raise ValueError(f"unknown date field {node.field!r}")
        return _range(col, node.since, node.before)
    if isinstance(node, Size):
        parts = []
        if node.larger is not None:
            parts.append(m.c.size > node.larger)
        if node.smaller is not None:
            parts.append(m.c.size < node.smaller)
        return and_(*parts) if parts else true()
    if isinstance(node, Text):
        return _matches(ctx, ctx.backend.query(ctx.conn, ctx.account_id, node))
    if isinstance(node, InMailbox):
        other = aliased(mm)
        return exists().where(other.c.message_id == ctx.message_id,
                              other.c.mailbox_id.in_(list(node.mailbox_pks)))
    if isinstance(node, ModSeq):
        return _per_mailbox(ctx, lambda row: row.c.modseq >= node.since)
    if isinstance(node, Thread):
        return m.c.thread_id == node.thread_pk
    if isinstance(node, HasAttachment):
        return m.c.has_attachment == bool(node.value)
    raise TypeError(f"not a search criterion: {node!r}")


def _per_mailbox(ctx, make):
    """A condition on the message's row in the searched mailbox, or in any mailbox."""
    if ctx.mailbox_pk is not None:
        return make(mailbox_messages)
    other = aliased(mailbox_messages)
    return exists().where(other.c.message_id == ctx.message_id, make(other))


def _flag(row, name):
    bit = flagbits.SYSTEM.get(name.lower())
    if bit:
        return row.c.flags.op("&")(bit) != 0
    if name.startswith("\\") or not name:
        return false()
    pattern = "% " + like_escape(name.lower()) + " %"
    return func.lower(literal(" ") + row.c.keywords + literal(" ")).like(pattern, escape="\\")


def _range(col, since, before):
    parts = []
    if since is not None:
        parts.append(col >= since)
    if before is not None:
        parts.append(col < before)
    return and_(*parts) if parts else true()


def like_escape(value):
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _matches(ctx, found):
    """A backend's answer as a condition on the message id column: ``True``
    (every message), a SELECT of ids, or a collection of ids."""
    if found is True:
        return true()
    if isinstance(found, Select):
        return ctx.message_id.in_(found)
    return in_list(ctx.conn, ctx.message_id, sorted(set(found)))


def in_list(conn, column, values):
    """``column IN values`` as one bound parameter (a JSON array on SQLite, an
    array on PostgreSQL), however many values there are."""
    if not values:
        return false()
    if conn.dialect.name == "sqlite":
        return column.in_(select(literal_column("value")).select_from(
            func.json_each(json.dumps(values))))
    return column == any_(literal(values, ARRAY(Integer)))


# --- backends ----------------------------------------------------------------

class SearchBackend:
    """Where text criteria are answered. The writes run inside the caller's
    write transaction (``storage.txn.Txn``: ``txn.conn``, ``txn.after(fn)``).

    ``index(txn, account_id, docs)``: docs is ``[(message_pk, document)]``
        (``search_text.document``), called in the delivery transaction.
    ``remove(txn, account_id, message_pks)``, ``remove_account(txn, account_id)``.
    ``query(conn, account_id, text_node)``: the matching message ids of the
        account, as ``True`` (all), a SELECT of one id column, or a collection.
    ``rebuild(store, account_id, progress=None)``: index the account again from
        its message files (``reindex`` does it for some messages).
    ``drift(store, account_id)``: ids the index lacks; ``stale(conn)``:
        ``{account_id or None: [ids]}`` indexed but gone; ``remove_stale``.
    ``indexed(conn, account_id, ids)``: which ids the index (or its queue) has.
    """

    name = "none"

    def close(self):
        pass

    def flush(self):
        """Apply queued changes now (no-op for a backend that indexes synchronously)."""

    def index_missing(self, store):
        """At open: index what the backend cannot have seen (an index made
        after the messages, as when an older release kept another table)."""

    def drift(self, store, account_id):
        """Message ids of the account that the index lacks."""
        with store.reader() as conn:
            pks = list(conn.execute(select(messages.c.id).where(
                messages.c.account_id == account_id).order_by(messages.c.id)).scalars())
            return sorted(set(pks) - self.indexed(conn, account_id, pks))

    def rebuild(self, store, account_id, progress=None):
        return self.reindex(store, account_id, None, progress)

    def reindex(self, store, account_id, message_pks=None, progress=None, batch=200):
        """Index the messages again from their files (all of the account's when
        ``message_pks`` is None); ``progress(done, total)`` is called per batch.
        Searches stay complete meanwhile: each batch replaces its own rows."""
        from . import mime
        from .errors import MessageNotFound
        from .search_text import document
        if message_pks is None:
            with store.reader() as conn:
                message_pks = list(conn.execute(select(messages.c.id).where(
                    messages.c.account_id == account_id).order_by(messages.c.id)).scalars())
        total, done = len(message_pks), 0
        for i in range(0, total, batch):
            chunk, docs = message_pks[i:i + batch], []
            for pk in chunk:
                try:
                    data = store.read_message(account_id, pk)
                except (MessageNotFound, OSError):
                    continue
                docs.append((pk, document(mime.ParsedMessage(data))))
            with store.write() as txn:
                live = set(txn.conn.execute(select(messages.c.id).where(
                    messages.c.id.in_([pk for pk, _d in docs]))).scalars())
                docs = [(pk, d) for pk, d in docs if pk in live]
                self.remove(txn, account_id, [pk for pk, _d in docs])
                self.index(txn, account_id, docs)
            done += len(chunk)
            if progress:
                progress(done, total)
        self.flush()
        return total


def make_backend(store, kind=None, directory=None):
    """The store's backend: ``kind`` "fts5" (default on SQLite) or "whoosh"
    (default on PostgreSQL, which has no FTS5; indexes under ``directory``,
    in memory when None)."""
    kind = kind or ("fts5" if store.sqlite else "whoosh")
    if kind == "fts5":
        if not store.sqlite:
            raise ValueError("the fts5 search backend needs SQLite")
        from .search_fts5 import Fts5Backend
        return Fts5Backend(store.engine)
    if kind == "whoosh":
        from .search_whoosh import WhooshBackend
        return WhooshBackend(store, directory)
    raise ValueError(f"unknown search backend {kind!r}")
