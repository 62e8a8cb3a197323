"""Mailbox and Thread methods (RFC 8621 sections 2 and 3).

Owns the JMAP view of mailboxes (leaf names with ``parentId`` over the
store's ``/``-separated names, roles, counts, rights) and of threads. Store
errors map to SetErrors in ``core.store_set_error``.
"""

from roost.storage import emails
from roost.storage.errors import Conflict, InvalidName, MailboxExists, MailboxNotFound
from roost.storage.store import HIERARCHY, ROLES, mailbox_oid, parse_oid, thread_oid

from . import sharing
from .sharing import jmap_rights
from .core import (MAIL, MethodError, bool_arg, changes_response, check_set_args, ids_arg,
                   invalid, method, parse_state, properties_arg, put, set_error, set_response,
                   store_set_error, uint_arg, int_arg)

PROPERTIES = ("id", "name", "parentId", "role", "sortOrder", "totalEmails", "unreadEmails",
              "totalThreads", "unreadThreads", "myRights", "isSubscribed", "shareWith")
RIGHTS = {k: True for k in ("mayReadItems", "mayAddItems", "mayRemoveItems", "maySetSeen",
                            "maySetKeywords", "mayCreateChild", "mayRename", "mayDelete",
                            "maySubmit")}
MAX_NAME = 255


def mailbox_objects(ctx):
    """``{pk: JMAP Mailbox}`` of the account, with counts."""
    boxes = ctx.store.mailboxes(ctx.account.id, counts=True)
    if ctx.shared is not None:      # a shared account: the mailboxes with "l" (jmap.sharing)
        boxes = [b for b in boxes if "l" in ctx.shared.get(b.id, "")]
    grants = ctx.store.account_grants(ctx.account.id) if ctx.shared is None else {}
    threads = emails.mailbox_thread_counts(ctx.store, ctx.account.id)
    by_name = {b.name: b for b in boxes}
    out = {}
    for b in boxes:
        parent, _, leaf = b.name.rpartition(HIERARCHY)
        t, ut = threads.get(b.id, (0, 0))
        rights = dict(RIGHTS) if ctx.shared is None else jmap_rights(ctx.shared[b.id])
        if b.name == "INBOX":
            rights["mayRename"] = rights["mayDelete"] = False
        out[b.id] = {
            "id": b.oid, "name": leaf if parent in by_name else b.name,
            "parentId": by_name[parent].oid if parent in by_name else None,
            "role": b.role, "sortOrder": b.sort_order, "totalEmails": b.messages,
            "unreadEmails": b.unseen, "totalThreads": t, "unreadThreads": ut,
            "myRights": rights, "isSubscribed": b.subscribed if ctx.shared is None else False,
            # Who else may use it: {grantee (address or "anyone"): MailboxRights}, or
            # null; the owner's alone to read (RFC 9670 keys it by principal id).
            "shareWith": {g: jmap_rights(r) for g, r in grants[b.id].items()}
            if b.id in grants else None,
        }
    return out, {b.id: b for b in boxes}


@method("Mailbox/get", MAIL)
def mailbox_get(ctx, args):
    ctx.check_account(args)
    ids = ids_arg(ctx, args)
    props = properties_arg(args, PROPERTIES)
    state = str(ctx.state("Mailbox"))
    objs, _ = mailbox_objects(ctx)
    by_id = {o["id"]: o for o in objs.values()}
    wanted = list(by_id) if ids is None else ids
    found, missing = [], []
    for i in dict.fromkeys(wanted):
        o = by_id.get(i)
        if o is None:
            missing.append(i)
        else:
            found.append({p: o[p] for p in props} | {"id": o["id"]})
    return {"accountId": ctx.account_id_str, "state": state, "list": found, "notFound": missing}


@method("Mailbox/changes", MAIL)
def mailbox_changes(ctx, args):
    out = changes_response(ctx, args, "Mailbox", mailbox_oid)
    out["updatedProperties"] = None
    return out


# --- query -------------------------------------------------------------------

def _match(cond, o, objs):
    if "operator" in cond:
        op, subs = cond.get("operator"), cond.get("conditions")
        if op not in ("AND", "OR", "NOT") or not isinstance(subs, list):
            raise MethodError("unsupportedFilter", "a FilterOperator needs AND/OR/NOT and conditions")
        results = [_match(c, o, objs) for c in subs]
        return all(results) if op == "AND" else any(results) if op == "OR" else not any(results)
    for key, value in cond.items():
        if key == "parentId":
            if o["parentId"] != value:
                return False
        elif key == "name":
            if not isinstance(value, str):
                raise MethodError("unsupportedFilter", "name must be a string")
            if value.lower() not in o["name"].lower():
                return False
        elif key == "role":
            if o["role"] != value:
                return False
        elif key == "hasAnyRole":
            if bool(o["role"]) != bool(value):
                return False
        elif key == "isSubscribed":
            if o["isSubscribed"] != bool(value):
                return False
        else:
            raise MethodError("unsupportedFilter", f"unknown filter property {key}")
    return True


def _query_ids(ctx, args):
    filt = args.get("filter")
    if filt is not None and not isinstance(filt, dict):
        raise invalid("filter must be an object")
    sort = args.get("sort") or []
    if not isinstance(sort, list):
        raise invalid("sort must be a list")
    objs, _ = mailbox_objects(ctx)
    items = [o for o in objs.values() if filt is None or _match(filt, o, objs)]
    keys = []
    for s in sort:
        if not isinstance(s, dict) or s.get("property") not in ("name", "sortOrder"):
            raise MethodError("unsupportedSort", "Mailbox sorts by name or sortOrder")
        keys.append((s["property"], s.get("isAscending", True) is not False))
    items.sort(key=lambda o: o["id"])
    for prop, asc in reversed(keys):
        items.sort(key=lambda o: o[prop].lower() if prop == "name" else o[prop], reverse=not asc)
    if bool_arg(args, "sortAsTree") or bool_arg(args, "filterAsTree"):
        present = {o["id"] for o in items}
        if bool_arg(args, "filterAsTree"):
            def rooted(o):
                while o["parentId"] is not None:
                    if o["parentId"] not in present:
                        return False
                    o = next(x for x in objs.values() if x["id"] == o["parentId"])
                return True
            items = [o for o in items if rooted(o)]
            present = {o["id"] for o in items}
        if bool_arg(args, "sortAsTree"):
            ordered, kids = [], {}
            for o in items:
                parent = o["parentId"] if o["parentId"] in present else None
                kids.setdefault(parent, []).append(o)

            def visit(pid):
                for o in kids.get(pid, []):
                    ordered.append(o)
                    visit(o["id"])
            visit(None)
            items = ordered
    return [o["id"] for o in items]


@method("Mailbox/query", MAIL)
def mailbox_query(ctx, args):
    ctx.check_account(args)
    ids = _query_ids(ctx, args)
    position = int_arg(args, "position", 0)
    limit = uint_arg(args, "limit", None)
    if position < 0:
        position = max(0, len(ids) + position)
    page = ids[position:position + limit if limit is not None else None]
    out = {"accountId": ctx.account_id_str,
           "queryState": str(ctx.state("Mailbox")),
           "canCalculateChanges": True, "position": position, "ids": page}
    if bool_arg(args, "calculateTotal"):
        out["total"] = len(ids)
    return out


@method("Mailbox/queryChanges", MAIL)
def mailbox_query_changes(ctx, args):
    ctx.check_account(args)
    return query_changes(ctx, args, "Mailbox", _query_ids(ctx, args),
                         lambda pks: {mailbox_oid(p) for p in pks})


def query_changes(ctx, args, kind, current_ids, expand):
    """/queryChanges by re-running the query: every object changed since the
    old state is removed, and re-added at its index when it still matches
    (RFC 8620 section 5.6 allows reporting unchanged positions this way)."""
    since = args.get("sinceQueryState")
    if not isinstance(since, str):
        raise invalid("sinceQueryState is required")
    since_n = parse_state(since)
    current = ctx.state(kind)
    if since_n is None or since_n > current or since_n < ctx.store.history_floor(ctx.account.id):
        raise MethodError("cannotCalculateChanges", f"query state {since} is unknown or too old")
    max_changes = uint_arg(args, "maxChanges", None, minimum=1)
    changed = expand({oid for _m, oid, _op in ctx.store.changes(ctx.account.id, kind, since_n)})
    up_to = args.get("upToId")
    removed, added = sorted(changed), []
    for index, oid in enumerate(current_ids):
        if oid in changed:
            added.append({"id": oid, "index": index})
        if up_to is not None and oid == up_to:
            break
    if max_changes and len(removed) + len(added) > max_changes:
        raise MethodError("tooManyChanges", f"more than {max_changes} changes")
    out = {"accountId": ctx.account_id_str, "oldQueryState": since,
           "newQueryState": str(current), "removed": removed, "added": added}
    if bool_arg(args, "calculateTotal"):
        out["total"] = len(current_ids)
    return out


# --- set ------------------------------------------------------------------------

def _full_name(ctx, name, parent_id, boxes):
    if not isinstance(name, str) or not name or len(name.encode()) > MAX_NAME \
            or HIERARCHY in name or any(ord(c) < 32 for c in name):
        raise ValueError(set_error("invalidProperties",
                                   f"name must be 1-{MAX_NAME} octets without '{HIERARCHY}'",
                                   properties=["name"]))
    if parent_id is None:
        return name
    pk = parse_oid("M", ctx.resolve_id(parent_id))
    if pk not in boxes:
        raise ValueError(set_error("invalidProperties", "parentId is not a mailbox",
                                   properties=["parentId"]))
    return boxes[pk].name + HIERARCHY + name


@method("Mailbox/set", MAIL)
def mailbox_set(ctx, args):
    create, update, destroy, old = check_set_args(ctx, args, "Mailbox")
    remove_emails = bool_arg(args, "onDestroyRemoveEmails")
    resp = set_response(ctx, "Mailbox", old)
    acct = ctx.account.id
    store = ctx.store
    allowed = set(PROPERTIES) - {"id"}
    for cid, obj in create.items():
        boxes = {b.id: b for b in store.mailboxes(acct)}
        bad = [k for k in obj if k not in allowed or k in
               ("totalEmails", "unreadEmails", "totalThreads", "unreadThreads", "myRights")]
        if bad:
            put(resp, "notCreated", cid, set_error("invalidProperties", "not settable", properties=bad))
            continue
        role = obj.get("role")
        if role is not None and (not isinstance(role, str) or role not in ROLES):
            put(resp, "notCreated", cid, set_error("invalidProperties", "unknown role",
                                                   properties=["role"]))
            continue
        order = obj.get("sortOrder")
        if order is not None and (not isinstance(order, int) or isinstance(order, bool)
                                  or not 0 <= order < 2**31):
            put(resp, "notCreated", cid, set_error("invalidProperties", "sortOrder is an UnsignedInt",
                                                   properties=["sortOrder"]))
            continue
        try:
            grants = sharing.share_grants(ctx, None, {"shareWith": obj.get("shareWith")})
            full = _full_name(ctx, obj.get("name"), obj.get("parentId"), boxes)
            box = store.create_mailbox(acct, full, role)
            if order is not None:
                store.set_mailbox_role(acct, box.id, role, order)
            if obj.get("isSubscribed", True) is not False:   # CREATE alone subscribes nothing
                store.set_subscribed(acct, box.id, True)
            sharing.grant(ctx, box.id, grants)
        except ValueError as exc:
            put(resp, "notCreated", cid, exc.args[0])
            continue
        except (MailboxExists, InvalidName, Conflict, MailboxNotFound) as exc:
            put(resp, "notCreated", cid, store_set_error(exc, None))
            continue
        ctx.created[cid] = box.oid
        objs, _ = mailbox_objects(ctx)
        o = objs[box.id]
        put(resp, "created", cid, {k: o[k] for k in ("id", "totalEmails", "unreadEmails",
                                                      "totalThreads", "unreadThreads", "myRights",
                                                      "sortOrder", "isSubscribed")})
    for mid, patch in update.items():
        real = ctx.resolve_id(mid)
        pk = parse_oid("M", real)
        boxes = {b.id: b for b in store.mailboxes(acct)}
        if pk not in boxes:
            put(resp, "notUpdated", mid, set_error("notFound"))
            continue
        objs, _ = mailbox_objects(ctx)
        cur = objs[pk]
        bad = [k for k in patch if k not in ("name", "parentId", "isSubscribed", "role", "sortOrder",
                                             "shareWith") and not k.startswith("shareWith/")]
        if bad:
            put(resp, "notUpdated", mid, set_error("invalidProperties", "not settable", properties=bad))
            continue
        role = patch.get("role", cur["role"])
        order = patch.get("sortOrder", cur["sortOrder"])
        if (role is not None and (not isinstance(role, str) or role not in ROLES)) or \
                not isinstance(order, int) or isinstance(order, bool) or not 0 <= order < 2**31:
            put(resp, "notUpdated", mid, set_error(
                "invalidProperties", "role must be a known role or null, sortOrder an UnsignedInt",
                properties=[k for k in ("role", "sortOrder") if k in patch]))
            continue
        try:
            sharing.grant(ctx, pk, sharing.share_grants(ctx, pk, patch))
            if role != cur["role"] or order != cur["sortOrder"]:
                store.set_mailbox_role(acct, pk, role, order)
            if "name" in patch or "parentId" in patch:
                parent = patch["parentId"] if "parentId" in patch else cur["parentId"]
                full = _full_name(ctx, patch.get("name", cur["name"]), parent, boxes)
                if full != boxes[pk].name:
                    store.rename_mailbox(acct, pk, full)
            if "isSubscribed" in patch:
                if not isinstance(patch["isSubscribed"], bool):
                    raise ValueError(set_error("invalidProperties", "isSubscribed is a boolean",
                                               properties=["isSubscribed"]))
                store.set_subscribed(acct, pk, patch["isSubscribed"])
        except ValueError as exc:
            put(resp, "notUpdated", mid, exc.args[0])
            continue
        except (MailboxExists, InvalidName, Conflict, MailboxNotFound) as exc:
            put(resp, "notUpdated", mid, store_set_error(exc, None))
            continue
        put(resp, "updated", mid, None)
    for mid in destroy:
        pk = parse_oid("M", ctx.resolve_id(mid))
        boxes = {b.id: b for b in store.mailboxes(acct, counts=True)}
        if pk not in boxes:
            put(resp, "notDestroyed", mid, set_error("notFound"))
            continue
        box = boxes[pk]
        if any(b.name.startswith(box.name + HIERARCHY) for b in boxes.values()):
            put(resp, "notDestroyed", mid, set_error("mailboxHasChild", "the mailbox has children"))
            continue
        if box.messages and not remove_emails:
            put(resp, "notDestroyed", mid, set_error("mailboxHasEmail", "the mailbox is not empty"))
            continue
        try:
            store.delete_mailbox(acct, pk)
        except (Conflict, MailboxNotFound) as exc:
            put(resp, "notDestroyed", mid, store_set_error(exc, None))
            continue
        put(resp, "destroyed", mid, None)
    resp["newState"] = str(store.state(acct, "Mailbox"))
    return resp


# --- Thread -------------------------------------------------------------------------

@method("Thread/get", MAIL)
def thread_get(ctx, args):
    ctx.check_account(args)
    ids = ids_arg(ctx, args)
    properties_arg(args, ("id", "emailIds"))
    state = str(ctx.state("Thread"))
    if ids is None:
        raise MethodError("requestTooLarge", "Thread/get needs ids")
    pks = [parse_oid("T", i) for i in ids]
    members = emails.thread_messages(ctx.store, ctx.account.id, [p for p in pks if p])
    found, missing = [], []
    for i, pk in zip(ids, pks):
        if pk in members:
            found.append({"id": i, "emailIds": [f"E{m}" for m in members[pk]]})
        else:
            missing.append(i)
    return {"accountId": ctx.account_id_str, "state": state, "list": found, "notFound": missing}


@method("Thread/changes", MAIL)
def thread_changes(ctx, args):
    return changes_response(ctx, args, "Thread", thread_oid)
