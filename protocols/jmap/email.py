"""Email and SearchSnippet methods (RFC 8621 sections 4 and 5).

Owns the JMAP Email object over the store's messages: properties from the
summary computed at delivery (no message read for a mail-list view), bodies
and headers from the raw bytes when asked, keywords as IMAP flags, filters
compiled into ``storage.search`` criteria (never evaluated here), sorting and
paging with a small cache of ordered results keyed by the Email state, and
every write through ``storage.emails`` or ``storage.delivery``.
"""

import bisect
import re
import threading
from collections import OrderedDict

from roost.storage import emails, mime, search_snippet
from roost.storage import search as criteria
from roost.storage import flags as flagbits
from roost.storage.delivery import Incoming
from roost.storage.errors import MailboxNotFound, MessageNotFound, MessageTooLarge, QuotaExceeded
from roost.storage.store import email_oid, parse_oid

from . import bodies
from .blobs import BlobNotFound
from .core import (MAIL, MethodError, bool_arg, changes_response, check_set_args, ids_arg,
                   int_arg, invalid, method, put, set_error, set_response, store_set_error,
                   uint_arg)
from .mailbox import query_changes

SUMMARY_PROPS = ("id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt",
                 "messageId", "inReplyTo", "references", "sender", "from", "to", "cc", "bcc",
                 "replyTo", "subject", "sentAt", "hasAttachment", "preview")
SUMMARY_FIELDS = ("messageId", "inReplyTo", "references", "sender", "from", "to", "cc", "bcc",
                  "replyTo")
BODY_PROPS = ("bodyValues", "textBody", "htmlBody", "attachments")
ALL_PROPS = SUMMARY_PROPS + ("headers", "bodyStructure") + BODY_PROPS
DEFAULT_PROPS = SUMMARY_PROPS + BODY_PROPS
SORTS = {"receivedAt": "received", "size": "size", "from": "from", "to": "to",
         "subject": "subject", "sentAt": "sent"}
KEYWORD_SORTS = ("hasKeyword", "allInThreadHaveKeyword", "someInThreadHaveKeyword")
SORT_OPTIONS = list(SORTS) + list(KEYWORD_SORTS)
IMAP_TO_KEYWORD = {"\\seen": "$seen", "\\flagged": "$flagged", "\\answered": "$answered",
                   "\\draft": "$draft"}
KEYWORD_TO_IMAP = {"$seen": "\\Seen", "$flagged": "\\Flagged", "$answered": "\\Answered",
                   "$draft": "\\Draft"}
_KEYWORD = re.compile(r'^[!#$&\'+-Z\[^-z|}~]{1,255}$')   # RFC 8621 4.1.1
MAX_MAILBOXES_PER_EMAIL = 256
MAX_BODY_VALUE = 1 << 20


# --- keywords --------------------------------------------------------------------

def keywords_of(flag_names):
    out = {}
    for name in flag_names:
        low = name.lower()
        if low == "\\deleted" or low == "\\recent":
            continue
        out[IMAP_TO_KEYWORD.get(low, low)] = True
    return out


def flag_name(keyword):
    """The IMAP flag name of a JMAP keyword; raises ValueError when invalid."""
    if not isinstance(keyword, str) or not _KEYWORD.match(keyword) or \
            any(c in keyword for c in '(){%*"\\]'):
        raise ValueError(keyword)
    low = keyword.lower()
    return KEYWORD_TO_IMAP.get(low, low)


# --- Email/get ---------------------------------------------------------------------

_RAW_PROPS = frozenset(("headers", "bodyStructure", "bodyValues", "textBody", "htmlBody",
                        "attachments"))
_needs_raw = {}


def needs_raw(props):
    key = tuple(props)
    if key not in _needs_raw:
        if len(_needs_raw) > 1000:
            _needs_raw.clear()
        _needs_raw[key] = any(p in _RAW_PROPS or p.startswith("header:") for p in props)
    return _needs_raw[key]


def email_json(ctx, info, props, body_props, opts, raw=None):
    """The Email object of ``info`` with ``props``; reads the bytes only when needed."""
    s = info.summary
    out = {}
    need_raw = needs_raw(props)
    if need_raw and raw is None:
        try:
            raw = ctx.store.read_message(ctx.account.id, info.id)
        except (MessageNotFound, OSError):
            raw = b""
    for p in props:
        if p == "id":
            out[p] = email_oid(info.id)
        elif p == "blobId":
            out[p] = info.blob_id
        elif p == "threadId":
            out[p] = f"T{info.thread_id}"
        elif p == "mailboxIds":
            out[p] = {f"M{m.mailbox_id}": True for m in info.memberships}
        elif p == "keywords":
            out[p] = keywords_of(info.flag_names)
        elif p == "size":
            out[p] = info.size
        elif p == "receivedAt":
            out[p] = bodies.utc_date(info.internal_date)
        elif p in ("messageId", "inReplyTo", "references"):
            out[p] = s.get(p) or None
        elif p in ("sender", "from", "to", "cc", "bcc", "replyTo"):
            out[p] = s.get(p) or None
        elif p == "subject":
            out[p] = info.subject
        elif p == "sentAt":
            out[p] = bodies.utc_date(info.sent_at)
        elif p == "hasAttachment":
            out[p] = info.has_attachment
        elif p == "preview":
            out[p] = info.preview
        elif p == "headers":
            out[p] = [{"name": n, "value": v} for n, v in
                      bodies.raw_headers(raw, 0, info.structure[mime.BODY_START])]
        elif p.startswith("header:"):
            name, form, all_ = bodies.parse_header_property(p)
            out[p] = bodies.header_values(bodies.raw_headers(raw, 0, info.structure[mime.BODY_START]),
                                          name, form, all_)
    if need_raw:
        root = bodies.part_tree(info.structure, info.blob_id)
        text, html, att = bodies.body_lists(root)
        if "bodyStructure" in props:
            out["bodyStructure"] = bodies.part_json(raw, root, body_props)
        for key, parts in (("textBody", text), ("htmlBody", html), ("attachments", att)):
            if key in props:
                out[key] = [bodies.part_json(raw, p, body_props) for p in parts]
        if "bodyValues" in props:
            values = {}
            wanted = []
            if opts["all"]:
                wanted = [p for p in _leaves(root) if p.node[mime.TYPE] == "text"]
            else:
                if opts["text"]:
                    wanted += text
                if opts["html"]:
                    wanted += html
            for part in wanted:
                if part.node[mime.TYPE] != "text" or part.part_id in values:
                    continue
                value, problem, truncated = bodies.text_value(raw, part.node, opts["max"])
                values[part.part_id] = {"value": value, "isEncodingProblem": problem,
                                        "isTruncated": truncated}
            out["bodyValues"] = values
    return out


def _leaves(part):
    if part.part_id is not None:
        yield part
    for p in part.sub_parts:
        yield from _leaves(p)


def _get_options(args):
    return {"text": bool_arg(args, "fetchTextBodyValues"),
            "html": bool_arg(args, "fetchHTMLBodyValues"),
            "all": bool_arg(args, "fetchAllBodyValues"),
            "max": uint_arg(args, "maxBodyValueBytes", 0)}


def _check_props(args, key, allowed, default):
    props = args.get(key)
    if props is None:
        return list(default)
    if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
        raise invalid(f"{key} must be a list of property names")
    for p in props:
        if p.startswith("header:"):
            try:
                bodies.parse_header_property(p)
            except bodies.InvalidHeaderProperty:
                raise invalid(f"{p} is not a valid header property") from None
        elif p not in allowed:
            raise invalid(f"unknown property {p}")
    return list(dict.fromkeys(props))


@method("Email/get", MAIL)
def email_get(ctx, args):
    ctx.check_account(args)
    ids = ids_arg(ctx, args)
    props = _check_props(args, "properties", ALL_PROPS, DEFAULT_PROPS)
    body_props = _check_props(args, "bodyProperties", bodies.BODY_PART_PROPERTIES,
                              bodies.DEFAULT_BODY_PART_PROPERTIES)
    opts = _get_options(args)
    state = str(ctx.state("Email"))
    if ids is None:
        raise MethodError("requestTooLarge", "Email/get needs ids")
    if "id" not in props:
        props.insert(0, "id")
    pks = [parse_oid("E", i) for i in ids]
    need_parsed = any(p not in SUMMARY_PROPS for p in props)
    need_summary = any(p in SUMMARY_FIELDS for p in props)
    infos = emails.get_messages(ctx.store, ctx.account.id, [p for p in pks if p],
                                parsed=need_parsed, summary=need_summary)
    found, missing = [], []
    for i, pk in zip(ids, pks):
        info = infos.get(pk)
        if info is None:
            missing.append(i)
        else:
            found.append(email_json(ctx, info, props, body_props, opts))
    return {"accountId": ctx.account_id_str, "state": state, "list": found, "notFound": missing}


@method("Email/changes", MAIL)
def email_changes(ctx, args):
    return changes_response(ctx, args, "Email", email_oid)


# --- Email/query --------------------------------------------------------------------

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


# --- Email/set ----------------------------------------------------------------------

class TooMany(ValueError):
    """A limit SetError (tooManyKeywords, tooManyMailboxes); ``args[0]`` is the SetError."""


def _keywords_arg(value):
    if not isinstance(value, dict) or not all(v is True for v in value.values()):
        raise ValueError("keywords must map keywords to true")
    if len(value) > flagbits.MAX_KEYWORDS:
        raise TooMany(set_error("tooManyKeywords", f"at most {flagbits.MAX_KEYWORDS} keywords",
                                maxKeywords=flagbits.MAX_KEYWORDS))
    return [flag_name(k) for k in value]


def _mailboxes_arg(ctx, value):
    if not isinstance(value, dict) or not value or not all(v is True for v in value.values()):
        raise ValueError("mailboxIds must map at least one mailbox id to true")
    if len(value) > MAX_MAILBOXES_PER_EMAIL:
        raise TooMany(set_error("tooManyMailboxes", f"at most {MAX_MAILBOXES_PER_EMAIL} mailboxes",
                                maxMailboxes=MAX_MAILBOXES_PER_EMAIL))
    pks = []
    for k in value:
        pk = parse_oid("M", ctx.resolve_id(k))
        if pk is None:
            raise ValueError(f"{k} is not a mailbox id")
        pks.append(pk)
    return pks


def _boxes(ctx):
    return {b.id: b for b in ctx.store.mailboxes(ctx.account.id)}


def store_new(ctx, data, mailbox_pks, flags, received):
    """Store ``data`` through the delivery path in every mailbox of
    ``mailbox_pks`` (one message, one transaction); returns the message pk.
    Raises MailboxNotFound, QuotaExceeded..."""
    boxes = _boxes(ctx)
    missing = [p for p in mailbox_pks if p not in boxes]
    if missing:
        raise MailboxNotFound(missing[0])
    (result,) = ctx.backend.delivery.store(Incoming(
        data, account=ctx.account, mailboxes=tuple(boxes[p] for p in dict.fromkeys(mailbox_pks)),
        flags=tuple(flags), internal_date=received))
    return result.stored_or_raise().message_id


def _created_json(ctx, pk):
    info = emails.get_messages(ctx.store, ctx.account.id, [pk], parsed=False)[pk]
    return {"id": email_oid(pk), "blobId": info.blob_id, "threadId": f"T{info.thread_id}",
            "size": info.size}


def _create_one(ctx, obj):
    for key in ("id", "blobId", "threadId", "size", "hasAttachment", "preview"):
        if key in obj:
            return set_error("invalidProperties", f"{key} is set by the server", properties=[key])
    try:
        pks = _mailboxes_arg(ctx, obj.get("mailboxIds"))
        flags = _keywords_arg(obj.get("keywords") or {})
    except TooMany as exc:
        return exc.args[0]
    except ValueError as exc:
        prop = "mailboxIds" if "mailbox" in str(exc) else "keywords"
        return set_error("invalidProperties", str(exc), properties=[prop])
    received = None
    if obj.get("receivedAt") is not None:
        try:
            received = bodies.parse_utc_date(obj["receivedAt"])
        except ValueError:
            return set_error("invalidProperties", "receivedAt is not a date", properties=["receivedAt"])

    def blob(blob_id):
        try:
            return ctx.backend.blob_bytes(ctx.account.id, blob_id)
        except BlobNotFound:
            raise KeyError(blob_id) from None
    try:
        data = bodies.build_message(obj, blob, ctx.backend.hostname)
    except bodies.BuildError as exc:
        if "not found" in str(exc):
            return set_error("blobNotFound", str(exc), notFound=[str(exc).split()[-3]])
        return set_error("invalidProperties", str(exc), properties=exc.properties or None)
    try:
        return store_new(ctx, data, pks, flags, received)
    except (QuotaExceeded, MessageTooLarge, MailboxNotFound) as exc:
        return store_set_error(exc)


def _update_change(ctx, patch, info):
    """A MessageChange for an Email/set update patch; raises ValueError(SetError)."""
    ch = emails.MessageChange()
    have = {m.mailbox_id for m in info.memberships}
    for path, value in patch.items():
        if path == "keywords":
            try:
                ch.replace = _keywords_arg(value)
            except TooMany:
                raise
            except ValueError:
                raise ValueError(set_error("invalidProperties", "invalid keywords",
                                           properties=["keywords"])) from None
            ch.keep_bits = flagbits.DELETED
        elif path.startswith("keywords/"):
            kw = path[len("keywords/"):].replace("~1", "/").replace("~0", "~")
            try:
                name = flag_name(kw)
            except ValueError:
                raise ValueError(set_error("invalidProperties", f"{kw} is not a keyword",
                                           properties=[path])) from None
            if value is True:
                ch.add.append(name)
            elif value is None:
                ch.remove.append(name)
            else:
                raise ValueError(set_error("invalidPatch", f"{path} must be true or null"))
        elif path == "mailboxIds":
            try:
                pks = _mailboxes_arg(ctx, value)
            except TooMany:
                raise
            except ValueError as exc:
                raise ValueError(set_error("invalidProperties", str(exc),
                                           properties=["mailboxIds"])) from None
            ch.add_to = [p for p in pks if p not in have]
            ch.remove_from = [p for p in have if p not in pks]
        elif path.startswith("mailboxIds/"):
            pk = parse_oid("M", ctx.resolve_id(path[len("mailboxIds/"):]))
            if pk is None:
                raise ValueError(set_error("invalidProperties", "not a mailbox id",
                                           properties=[path]))
            if value is True:
                ch.add_to.append(pk)
            elif value is None:
                ch.remove_from.append(pk)
            else:
                raise ValueError(set_error("invalidPatch", f"{path} must be true or null"))
        else:
            raise ValueError(set_error("invalidProperties", "only keywords and mailboxIds can change",
                                       properties=[path]))
    return ch


@method("Email/set", MAIL)
def email_set(ctx, args):
    create, update, destroy, old = check_set_args(ctx, args, "Email")
    resp = set_response(ctx, "Email", old)
    for cid, obj in create.items():
        result = _create_one(ctx, obj)
        if isinstance(result, dict):
            put(resp, "notCreated", cid, result)
        else:
            ctx.created[cid] = email_oid(result)
            put(resp, "created", cid, _created_json(ctx, result))
    if update:
        pks = {eid: parse_oid("E", ctx.resolve_id(eid)) for eid in update}
        infos = emails.get_messages(ctx.store, ctx.account.id,
                                    [p for p in pks.values() if p], parsed=False)
        boxes = _boxes(ctx)
        changes = {}
        for eid, patch in update.items():
            info = infos.get(pks[eid])
            if info is None:
                put(resp, "notUpdated", eid, set_error("notFound"))
                continue
            try:
                ch = _update_change(ctx, patch, info)
                if any(p not in boxes for p in ch.add_to + ch.remove_from):
                    raise ValueError(set_error("invalidProperties", "a mailbox does not exist",
                                               properties=["mailboxIds"]))
            except ValueError as exc:
                put(resp, "notUpdated", eid, exc.args[0])
                continue
            changes[eid] = (info.id, ch)
        results = emails.change_messages(ctx.store, ctx.account.id,
                                         {pk: ch for pk, ch in changes.values()})
        for eid, (pk, _ch) in changes.items():
            err = results.get(pk)
            if err is None:
                put(resp, "updated", eid, None)
            elif isinstance(err, ValueError):
                put(resp, "notUpdated", eid, set_error("invalidProperties", str(err),
                                                       properties=["mailboxIds"]))
            else:
                put(resp, "notUpdated", eid, store_set_error(err))
    if destroy:
        pks = {eid: parse_oid("E", ctx.resolve_id(eid)) for eid in destroy}
        done, _missing = emails.destroy_messages(ctx.store, ctx.account.id,
                                                 [p for p in pks.values() if p])
        done = set(done)
        for eid, pk in pks.items():
            if pk in done:
                put(resp, "destroyed", eid, None)
            else:
                put(resp, "notDestroyed", eid, set_error("notFound"))
    resp["newState"] = str(ctx.store.state(ctx.account.id, "Email"))
    return resp


# --- Email/copy, import, parse ------------------------------------------------------

@method("Email/copy", MAIL)
def email_copy(ctx, args):
    from_acct = args.get("fromAccountId")
    ctx.check_account(args)
    if from_acct != ctx.account_id_str:
        raise MethodError("fromAccountNotFound", "Email/copy works within your own account only")
    raise MethodError("invalidArguments",
                      "fromAccountId and accountId must differ; use Email/set to change mailboxIds")


@method("Email/import", MAIL)
def email_import(ctx, args):
    ctx.check_account(args)
    old = str(ctx.state("Email"))
    if args.get("ifInState") is not None and args["ifInState"] != old:
        raise MethodError("stateMismatch", f"the state is {old}")
    items = args.get("emails")
    if not isinstance(items, dict) or not all(isinstance(v, dict) for v in items.values()):
        raise invalid("emails must map creation ids to EmailImport objects")
    if len(items) > 500:
        raise MethodError("requestTooLarge", "more than 500 emails")
    created, not_created = {}, {}
    for cid, obj in items.items():
        try:
            pks = _mailboxes_arg(ctx, obj.get("mailboxIds"))
        except TooMany as exc:
            not_created[cid] = exc.args[0]
            continue
        except ValueError as exc:
            not_created[cid] = set_error("invalidProperties", str(exc), properties=["mailboxIds"])
            continue
        try:
            flags = _keywords_arg(obj.get("keywords") or {})
            received = bodies.parse_utc_date(obj["receivedAt"]) if obj.get("receivedAt") else None
        except TooMany as exc:
            not_created[cid] = exc.args[0]
            continue
        except ValueError:
            not_created[cid] = set_error("invalidProperties", "invalid keywords or receivedAt",
                                         properties=["keywords", "receivedAt"])
            continue
        blob_id = ctx.resolve_id(obj.get("blobId"))
        try:
            data = ctx.backend.blob_bytes(ctx.account.id, blob_id)
        except BlobNotFound:
            not_created[cid] = set_error("blobNotFound", f"no blob {blob_id}", notFound=[blob_id])
            continue
        try:
            pk = store_new(ctx, data, pks, flags, received)
        except (QuotaExceeded, MessageTooLarge, MailboxNotFound) as exc:
            not_created[cid] = store_set_error(exc)
            continue
        ctx.created[cid] = email_oid(pk)
        created[cid] = _created_json(ctx, pk)
    return {"accountId": ctx.account_id_str, "oldState": old,
            "newState": str(ctx.store.state(ctx.account.id, "Email")),
            "created": created or None, "notCreated": not_created or None}


class _Parsed:
    """A MessageInfo-like view of bytes that are not stored as a message."""

    def __init__(self, data, blob_id):
        p = mime.ParsedMessage(data)
        self.id = None
        self.thread_id = None
        self.blob_id = blob_id
        self.size = len(data)
        self.internal_date = None
        self.sent_at = p.sent_at
        self.subject = p.subject
        self.preview = p.preview
        self.has_attachment = p.has_attachment
        self.summary = p.summary
        self.structure = p.structure
        self.memberships = ()
        self.flag_names = ()


@method("Email/parse", MAIL)
def email_parse(ctx, args):
    ctx.check_account(args)
    blob_ids = ids_arg(ctx, args, "blobIds", required=True)
    props = _check_props(args, "properties", ALL_PROPS,
                         [p for p in DEFAULT_PROPS if p not in ("id", "mailboxIds", "keywords",
                                                                "receivedAt", "threadId")])
    body_props = _check_props(args, "bodyProperties", bodies.BODY_PART_PROPERTIES,
                              bodies.DEFAULT_BODY_PART_PROPERTIES)
    opts = _get_options(args)
    parsed, not_parsable, not_found = {}, [], []
    for blob_id in blob_ids:
        try:
            data, ctype, _name = ctx.backend.read_blob(ctx.account.id, blob_id)
        except BlobNotFound:
            not_found.append(blob_id)
            continue
        if not data.strip():
            not_parsable.append(blob_id)
            continue
        info = _Parsed(data, blob_id)
        obj = email_json(ctx, info, props, body_props, opts, raw=data)
        for key in ("id", "mailboxIds", "keywords", "receivedAt", "threadId"):
            if key in obj:
                obj[key] = None
        parsed[blob_id] = obj
    return {"accountId": ctx.account_id_str, "parsed": parsed or None,
            "notParsable": not_parsable or None, "notFound": not_found or None}


# --- SearchSnippet -------------------------------------------------------------------

@method("SearchSnippet/get", MAIL)
def snippet_get(ctx, args):
    """Highlights come from ``storage.search_snippet`` (the one highlighter,
    shared with IMAP PREVIEW), over the same criteria tree Email/query uses."""
    ctx.check_account(args)
    ids = ids_arg(ctx, args, "emailIds", required=True)
    filt = args.get("filter")
    node = compile_filter(ctx, filt) if filt is not None else criteria.All()
    pks = [parse_oid("E", i) for i in ids]
    found_pks = emails.get_messages(ctx.store, ctx.account.id, [p for p in pks if p],
                                    parsed=False, summary=False)
    marked = search_snippet.snippets(ctx.store, ctx.account.id, list(found_pks), node)
    found, missing = [], []
    for i, pk in zip(ids, pks):
        if pk not in found_pks:
            missing.append(i)
            continue
        subject, preview = marked.get(pk, (None, None))
        found.append({"emailId": i, "subject": subject, "preview": preview})
    return {"accountId": ctx.account_id_str, "list": found, "notFound": missing or None}
