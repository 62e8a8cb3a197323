"""Email/query and Email/queryChanges (RFC 8621 sections 4.4 and 4.5).

Owns the filter compiler (FilterOperator/FilterCondition to a
``storage.search`` criteria tree, evaluated by the store, never here), the
sort engine (column sorts by the store, keyword sorts as stable sorts over
them), and two process-wide caches: ordered results keyed by the Email state,
and live per-mailbox lists kept up to date from the change log.
"""

import bisect
import threading
from collections import OrderedDict

from roost.storage import emails
from roost.storage import search as criteria
from roost.storage.store import email_oid, parse_oid

from . import bodies
from .core import MAIL, MethodError, bool_arg, int_arg, invalid, method, uint_arg
from .email_common import flag_name
from .mailbox import query_changes

SORTS = {"receivedAt": "received", "size": "size", "from": "from", "to": "to",
         "subject": "subject", "sentAt": "sent"}
KEYWORD_SORTS = ("hasKeyword", "allInThreadHaveKeyword", "someInThreadHaveKeyword")
SORT_OPTIONS = list(SORTS) + list(KEYWORD_SORTS)


class QueryCache:
    """Ordered results of recent queries, keyed by (account, query, Email state):
    paging through a big mailbox sorts it once."""

    def __init__(self, size=64):
        self.size = size
        self._items = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key, value):
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)


CACHE = QueryCache()


def _date(value, key):
    try:
        return bodies.parse_utc_date(value)
    except ValueError:
        raise MethodError("unsupportedFilter", f"{key} must be a UTCDate") from None


def _mailbox_pk(ctx, value, key):
    pk = parse_oid("M", ctx.resolve_id(value)) if isinstance(value, str) else None
    if pk is None:
        raise MethodError("unsupportedFilter", f"{key} must be a mailbox id")
    return pk


def compile_filter(ctx, cond, depth=0):
    """A FilterOperator/FilterCondition as a ``storage.search`` criteria node."""
    if depth > 16 or not isinstance(cond, dict):
        raise MethodError("unsupportedFilter", "a filter must be an object (at most 16 deep)")
    if "operator" in cond:
        op, subs = cond.get("operator"), cond.get("conditions")
        if op not in ("AND", "OR", "NOT") or not isinstance(subs, list) or not subs:
            raise MethodError("unsupportedFilter", "a FilterOperator needs AND/OR/NOT and conditions")
        nodes = tuple(compile_filter(ctx, c, depth + 1) for c in subs)
        if op == "AND":
            return criteria.And(nodes)
        if op == "OR":
            return criteria.Or(nodes)
        return criteria.Not(criteria.Or(nodes))
    nodes = []
    for key, value in cond.items():
        if key == "inMailbox":
            nodes.append(criteria.InMailbox((_mailbox_pk(ctx, value, key),)))
        elif key == "inMailboxOtherThan":
            if not isinstance(value, list):
                raise MethodError("unsupportedFilter", "inMailboxOtherThan is a list of ids")
            pks = tuple(_mailbox_pk(ctx, v, key) for v in value)
            others = tuple(b.id for b in ctx.store.mailboxes(ctx.account.id) if b.id not in pks)
            nodes.append(criteria.InMailbox(others))
        elif key == "before":
            nodes.append(criteria.Date("internal", before=_date(value, key)))
        elif key == "after":
            nodes.append(criteria.Date("internal", since=_date(value, key)))
        elif key in ("minSize", "maxSize"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise MethodError("unsupportedFilter", f"{key} must be an unsigned integer")
            nodes.append(criteria.Size(larger=value - 1) if key == "minSize"
                         else criteria.Size(smaller=value))
        elif key in ("hasKeyword", "notKeyword"):
            try:
                node = criteria.Flag(flag_name(value))
            except ValueError:
                raise MethodError("unsupportedFilter", f"{key} is not a keyword") from None
            nodes.append(node if key == "hasKeyword" else criteria.Not(node))
        elif key in ("allInThreadHaveKeyword", "someInThreadHaveKeyword", "noneInThreadHaveKeyword"):
            nodes.append(_thread_keyword(ctx, key, value))
        elif key == "hasAttachment":
            if not isinstance(value, bool):
                raise MethodError("unsupportedFilter", "hasAttachment is a boolean")
            nodes.append(criteria.HasAttachment(value))
        elif key in ("text", "from", "to", "cc", "bcc", "subject", "body"):
            if not isinstance(value, str):
                raise MethodError("unsupportedFilter", f"{key} must be a string")
            nodes.append(criteria.Text(key, value))
        elif key == "header":
            if not (isinstance(value, list) and 1 <= len(value) <= 2
                    and all(isinstance(v, str) for v in value)):
                raise MethodError("unsupportedFilter", "header is [name] or [name, value]")
            nodes.append(criteria.Text(f"header:{value[0]}", value[1] if len(value) > 1 else ""))
        else:
            raise MethodError("unsupportedFilter", f"unknown filter property {key}")
    if not nodes:
        return criteria.All()
    return nodes[0] if len(nodes) == 1 else criteria.And(tuple(nodes))


def _thread_keyword(ctx, key, value):
    try:
        name = flag_name(value)
    except ValueError:
        raise MethodError("unsupportedFilter", f"{key} is not a keyword") from None
    msgs, threads = emails.flagged_messages(ctx.store, ctx.account.id, name)
    if key == "someInThreadHaveKeyword":
        wanted = threads
    else:
        pairs = emails.all_thread_pairs(ctx.store, ctx.account.id)
        lacking = {t for m, t in pairs if m not in msgs}
        if key == "allInThreadHaveKeyword":
            wanted = {t for _m, t in pairs} - lacking
        else:
            wanted = {t for _m, t in pairs} - threads
    if not wanted:
        return criteria.Not(criteria.All())
    return criteria.Or(tuple(criteria.Thread(t) for t in sorted(wanted)))


def _sort_keys(args):
    sort = args.get("sort") or []
    if not isinstance(sort, list):
        raise invalid("sort must be a list")
    keys = []
    for s in sort:
        if not isinstance(s, dict) or s.get("property") not in SORT_OPTIONS:
            raise MethodError("unsupportedSort", f"supported sorts: {', '.join(SORT_OPTIONS)}")
        coll = s.get("collation")
        if coll is not None and coll not in ("i;ascii-casemap", "i;octet", "i;unicode-casemap"):
            raise MethodError("unsupportedSort", f"collation {coll} is not supported")
        asc = s.get("isAscending", True)
        if not isinstance(asc, bool):
            raise invalid("isAscending must be a boolean")
        kw = None
        if s["property"] in KEYWORD_SORTS:
            try:
                kw = flag_name(s.get("keyword"))
            except ValueError:
                raise MethodError("unsupportedSort", "keyword sorts need a keyword") from None
        keys.append((s["property"], asc, kw))
    if not keys:
        keys = [("receivedAt", False, None)]
    return keys


def ordered_ids(ctx, args):
    """``([(email pk, thread pk)], [email pk])`` of the query, sorted (and collapsed)."""
    filt = args.get("filter")
    if filt is not None and not isinstance(filt, dict):
        raise invalid("filter must be an object")
    keys = _sort_keys(args)
    collapse = bool_arg(args, "collapseThreads")
    acct = ctx.account.id
    state = ctx.state("Email")
    cache_key = (acct, repr(filt), repr(keys), collapse, state,
                 ctx.state("Mailbox"))
    hit = CACHE.get(cache_key)
    if hit is not None:
        return hit
    mailbox_pk = pks = None
    if filt is not None and set(filt) == {"inMailbox"}:
        mailbox_pk = _mailbox_pk(ctx, filt["inMailbox"], "inMailbox")
        if not collapse and len(keys) == 1 and keys[0][0] in LIVE_SORTS:
            result = LIVE.get(ctx, mailbox_pk, keys[0][0], keys[0][1], state)
            CACHE.put(cache_key, result)
            return result
    elif filt:
        node = compile_filter(ctx, filt)
        pks = _search(ctx, node)
    sql_keys = [(SORTS[p], asc) for p, asc, _k in keys if p in SORTS]
    if len(sql_keys) == len(keys):
        rows = emails.ordered_messages(ctx.store, acct, sql_keys, mailbox_pk=mailbox_pk, pks=pks)
    else:
        rows = _keyword_sorted(ctx, keys, mailbox_pk, pks)
    if collapse:
        seen, kept = set(), []
        for pk, tid in rows:
            if tid not in seen:
                seen.add(tid)
                kept.append((pk, tid))
        rows = kept
    result = (rows, [r[0] for r in rows])
    CACHE.put(cache_key, result)
    return result


LIVE_SORTS = {"receivedAt": 2, "size": 3}   # column of mailbox_sort_rows


class LiveLists:
    """A mailbox's messages in receivedAt or size order, kept up to date from
    the change log: when the Email state moves, only the messages changed since
    are re-read and re-placed by bisection (a message's arrival time and size
    never change, so its place is known), so a new message in a 10k mailbox
    costs a few rows, not a re-sort. Lists are copied, never mutated, so a
    reader keeps a consistent snapshot."""

    MAX_DELTA = 1000

    def __init__(self, size=32):
        self.size = size
        self._items = OrderedDict()   # (account, mailbox, prop, asc) -> _Live
        self._lock = threading.Lock()

    def get(self, ctx, mailbox_pk, prop, asc, state):
        col = LIVE_SORTS[prop]
        key = (ctx.account.id, mailbox_pk, prop, asc)

        def sort_key(r):
            return (r[col] if asc else -r[col], -r[0])
        with self._lock:
            entry = self._items.get(key)
        if entry is not None and entry.state == state:
            return entry.pairs, entry.ids
        if entry is not None and entry.state < state and \
                entry.state >= ctx.store.history_floor(ctx.account.id):
            changed = ctx.store.changes(ctx.account.id, "Email", entry.state, limit=self.MAX_DELTA + 1)
            if len(changed) <= self.MAX_DELTA:
                touched = {oid for _m, oid, _op in changed}
                fresh = emails.mailbox_sort_rows(ctx.store, ctx.account.id, mailbox_pk, touched)
                new = entry.copy(state)
                for pk in touched:
                    new.remove(pk)
                for r in fresh:
                    new.insert(sort_key(r), (r[0], r[1]))
                return self._put(key, new)
        rows = emails.mailbox_sort_rows(ctx.store, ctx.account.id, mailbox_pk)
        rows.sort(key=sort_key)
        return self._put(key, _Live(state, [sort_key(r) for r in rows], [(r[0], r[1]) for r in rows]))

    def _put(self, key, live):
        with self._lock:
            self._items[key] = live
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return live.pairs, live.ids


class _Live:
    """Parallel lists (sort keys, (pk, thread) pairs, pks) and pk -> sort key."""

    def __init__(self, state, keys, pairs, ids=None, key_of=None):
        self.state = state
        self.keys = keys
        self.pairs = pairs
        self.ids = ids if ids is not None else [p[0] for p in pairs]
        self.key_of = key_of if key_of is not None else dict(zip(self.ids, keys))

    def copy(self, state):
        return _Live(state, list(self.keys), list(self.pairs), list(self.ids), dict(self.key_of))

    def remove(self, pk):
        k = self.key_of.pop(pk, None)
        if k is None:
            return
        i = bisect.bisect_left(self.keys, k)
        if i < len(self.ids) and self.ids[i] == pk:
            del self.keys[i], self.pairs[i], self.ids[i]

    def insert(self, k, pair):
        i = bisect.bisect_left(self.keys, k)
        self.keys.insert(i, k)
        self.pairs.insert(i, pair)
        self.ids.insert(i, pair[0])
        self.key_of[pair[0]] = k


LIVE = LiveLists()


def _search(ctx, node):
    search = getattr(criteria, "search", None)
    if search is None:
        raise MethodError("unsupportedFilter", "search is not available in this build")
    try:
        return set(search(ctx.store, ctx.account.id, node))
    except NotImplementedError as exc:
        raise MethodError("unsupportedFilter", str(exc) or "this filter is not supported") from None


def _keyword_sorted(ctx, keys, mailbox_pk, pks):
    """Sort with keyword keys: fetch the column sorts' order, then apply every
    key as a stable sort from last to first."""
    base = emails.ordered_messages(ctx.store, ctx.account.id, [("received", False)],
                                   mailbox_pk=mailbox_pk, pks=pks)
    rows = list(base)
    positions = {}
    for prop, asc, kw in reversed(keys):
        if prop in SORTS:
            order = emails.ordered_messages(ctx.store, ctx.account.id, [(SORTS[prop], asc)],
                                            mailbox_pk=mailbox_pk, pks=pks)
            positions = {pk: i for i, (pk, _t) in enumerate(order)}
            rows.sort(key=lambda r: positions[r[0]])
            continue
        msgs, threads = emails.flagged_messages(ctx.store, ctx.account.id, kw)
        if prop == "hasKeyword":
            has = lambda r: r[0] in msgs  # noqa: E731
        elif prop == "someInThreadHaveKeyword":
            has = lambda r: r[1] in threads  # noqa: E731
        else:
            pairs = emails.all_thread_pairs(ctx.store, ctx.account.id)
            lacking = {t for m, t in pairs if m not in msgs}
            has = lambda r: r[1] not in lacking  # noqa: E731
        rows.sort(key=lambda r: has(r), reverse=not asc)
    return rows


@method("Email/query", MAIL)
def email_query(ctx, args):
    ctx.check_account(args)
    rows, ids = ordered_ids(ctx, args)
    position = int_arg(args, "position", 0)
    limit = uint_arg(args, "limit", None)
    if limit is not None:
        limit = min(limit, 1000)
    anchor = args.get("anchor")
    if anchor is not None:
        pk = parse_oid("E", anchor) if isinstance(anchor, str) else None
        try:
            index = ids.index(pk)
        except ValueError:
            raise MethodError("anchorNotFound", "the anchor is not in the results") from None
        position = max(0, index + int_arg(args, "anchorOffset", 0))
    elif position < 0:
        position = max(0, len(ids) + position)
    page = ids[position:position + limit] if limit is not None else ids[position:]
    out = {"accountId": ctx.account_id_str,
           "queryState": str(ctx.state("Email")),
           "canCalculateChanges": True, "position": position,
           "ids": [email_oid(p) for p in page]}
    if limit is not None:
        out["limit"] = limit
    if bool_arg(args, "calculateTotal"):
        out["total"] = len(ids)
    return out


@method("Email/queryChanges", MAIL)
def email_query_changes(ctx, args):
    ctx.check_account(args)
    rows, _ids = ordered_ids(ctx, args)
    collapse = bool_arg(args, "collapseThreads")

    def expand(pks):
        if not collapse or not pks:
            return {email_oid(p) for p in pks}
        infos = emails.get_messages(ctx.store, ctx.account.id, pks, parsed=False)
        members = emails.thread_messages(ctx.store, ctx.account.id,
                                         {i.thread_id for i in infos.values()})
        return {email_oid(p) for p in pks} | {email_oid(m) for ms in members.values() for m in ms}
    return query_changes(ctx, args, "Email", [email_oid(r[0]) for r in rows], expand)
