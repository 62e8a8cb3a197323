"""Email/query and Email/queryChanges (RFC 8621 sections 4.4 and 4.5).

Owns the filter compiler (FilterOperator/FilterCondition to a
``storage.search`` criteria tree, evaluated by the store, never here) and
the JMAP side of sorting: sort properties map to the store's sort keys
(receivedAt to ``received``, sentAt to ``sent``, ...), and the ordering itself
comes from ``storage.views``, the sorted-view API shared with IMAP SORT: a
mailbox's view kept fresh from the change log for a plain ``inMailbox``
query with one sort, the database's sort otherwise, and every ordered result
cached per (query, Email state, Mailbox state) so paging sorts once. Keyword
sorts (hasKeyword...) are stable sorts applied over those orders.
"""

from roost.storage import emails, views
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
    """The query's ``views.SortedIds``, sorted (and collapsed): ``ids``, and
    ``pairs`` ((email pk, thread pk); made on first use for a search's hits)."""
    filt = args.get("filter")
    if filt is not None and not isinstance(filt, dict):
        raise invalid("filter must be an object")
    keys = _sort_keys(args)
    collapse = bool_arg(args, "collapseThreads")
    state = ctx.state("Email")
    result = views.for_store(ctx.store).query(
        ctx.account.id, ("Email/query", repr(filt), repr(keys), collapse),
        (state, ctx.state("Mailbox")), lambda: _run_query(ctx, filt, keys, collapse, state))
    return result


def _run_query(ctx, filt, keys, collapse, state):
    """The query's ``views.SortedIds``: a lone ``inMailbox`` filter with one
    sort is that mailbox's view (the store keeps it fresh); other filters
    select messages through the search backend, then the store sorts them."""
    mailbox_pk = pks = None
    if filt is not None and set(filt) == {"inMailbox"}:
        mailbox_pk = _mailbox_pk(ctx, filt["inMailbox"], "inMailbox")
    elif filt:
        node = compile_filter(ctx, filt)
        pks = _search(ctx, node)
    if all(p in SORTS for p, _asc, _k in keys):
        result = views.for_store(ctx.store).order(
            ctx.account.id, [(SORTS[p], asc) for p, asc, _k in keys],
            mailbox_pk=mailbox_pk, pks=pks, state=state)
    else:
        result = views.SortedIds(_keyword_sorted(ctx, keys, mailbox_pk, pks, state))
    return result.collapsed() if collapse else result


def _search(ctx, node):
    search = getattr(criteria, "search", None)
    if search is None:
        raise MethodError("unsupportedFilter", "search is not available in this build")
    try:
        # superset: other accounts' ids among a text node's matches are dropped
        # by views.order, which lists only the account's messages
        return set(search(ctx.store, ctx.account.id, node, superset=True))
    except NotImplementedError as exc:
        raise MethodError("unsupportedFilter", str(exc) or "this filter is not supported") from None


def _keyword_sorted(ctx, keys, mailbox_pk, pks, state):
    """Sort with keyword keys: fetch the column sorts' order, then apply every
    key as a stable sort from last to first."""
    sorter = views.for_store(ctx.store)
    base = sorter.order(ctx.account.id, [("received", False)],
                        mailbox_pk=mailbox_pk, pks=pks, state=state)
    rows = list(base.pairs)     # a copy: the view's lists are shared
    positions = {}
    for prop, asc, kw in reversed(keys):
        if prop in SORTS:
            order = sorter.order(ctx.account.id, [(SORTS[prop], asc)],
                                 mailbox_pk=mailbox_pk, pks=pks, state=state)
            positions = {pk: i for i, (pk, _t) in enumerate(order.pairs)}
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
    ids = ordered_ids(ctx, args).ids
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
    rows = ordered_ids(ctx, args).pairs
    collapse = bool_arg(args, "collapseThreads")

    def expand(pks):
        if not collapse or not pks:
            return {email_oid(p) for p in pks}
        infos = emails.get_messages(ctx.store, ctx.account.id, pks, parsed=False)
        members = emails.thread_messages(ctx.store, ctx.account.id,
                                         {i.thread_id for i in infos.values()})
        return {email_oid(p) for p in pks} | {email_oid(m) for ms in members.values() for m in ms}
    return query_changes(ctx, args, "Email", [email_oid(r[0]) for r in rows], expand)
