"""Quota methods (RFC 9425): the account's limits as Quota objects.

Owns the JMAP view of the store's quotas (``storage.quota``): an ``octets``
quota (``Qoctets``, storage) and a ``count`` quota (``Qcount``, messages in
mailboxes, as IMAP's MESSAGE resource counts them), each of scope ``account``
for Mail when the account has that limit, none when it is unlimited. Usage
changes with every delivery and is not in the change log, so the state is the
usage itself; ``Quota/changes`` says what moved by comparing it.
"""

from .core import (MethodError, bool_arg, capability, ids_arg, int_arg, invalid, method,
                   parse_state, properties_arg, uint_arg)

QUOTA = "urn:ietf:params:jmap:quota"
capability(QUOTA, {}, {})

PROPERTIES = ("id", "resourceType", "used", "hardLimit", "scope", "name", "types", "warnLimit",
              "softLimit", "description")
QUOTA_ID = "Qoctets"
COUNT_ID = "Qcount"


def _quotas(ctx):
    """``(state, {id: Quota})``. The state is ``used.limit`` of storage then of
    the message count, with ``u`` for no limit (a limit's usage is only in the
    state while it is set)."""
    usage = ctx.store.quota_usage(ctx.account.id)
    address = ctx.store.account_by_id(ctx.account.id).address
    parts, quotas = [], {}
    for qid, used, limit, rtype, what in (
            (QUOTA_ID, usage.used_bytes, usage.quota_bytes, "octets", "storage used by this account's messages"),
            (COUNT_ID, usage.messages, usage.quota_messages, "count", "messages in this account's mailboxes")):
        if limit is None:
            parts += ["0" if qid == COUNT_ID else str(used), "u"]
            continue
        parts += [str(used), str(limit)]
        quotas[qid] = {"id": qid, "resourceType": rtype, "used": used, "hardLimit": limit,
                       "scope": "account", "name": address, "types": ["Mail"], "warnLimit": None,
                       "softLimit": None, "description": what}
    return ".".join(parts), quotas


@method("Quota/get", QUOTA)
def quota_get(ctx, args):
    ctx.check_account(args)
    ids = ids_arg(ctx, args)
    props = properties_arg(args, PROPERTIES)
    state, quotas = _quotas(ctx)
    found, missing = [], []
    for i in (list(quotas) if ids is None else ids):
        if i in quotas:
            found.append({p: quotas[i][p] for p in props} | {"id": i})
        else:
            missing.append(i)
    return {"accountId": ctx.account_id_str, "state": state, "list": found, "notFound": missing}


def _parse_quota_state(state):
    """``[(used, limit)]`` per quota of a state this server gave (a state of
    two parts is from before the message quota: no message limit), or None."""
    parts = state.split(".")
    if len(parts) == 2:
        parts += ["0", "u"]
    if len(parts) != 4:
        return None
    pairs = list(zip(parts[::2], parts[1::2]))
    for used, limit in pairs:
        if parse_state(used) is None or (limit != "u" and parse_state(limit) is None):
            return None
    return pairs


@method("Quota/changes", QUOTA)
def quota_changes(ctx, args):
    ctx.check_account(args)
    since = args.get("sinceState")
    if not isinstance(since, str):
        raise invalid("sinceState is required")
    uint_arg(args, "maxChanges", None, minimum=1)
    old = _parse_quota_state(since)
    if old is None:
        raise MethodError("cannotCalculateChanges", f"state {since} is not one this server gave")
    state, quotas = _quotas(ctx)
    created, updated, destroyed, used_only = [], [], [], True
    for qid, (used, limit), (now_used, now_limit) in zip((QUOTA_ID, COUNT_ID), old,
                                                         _parse_quota_state(state)):
        if limit != now_limit:
            used_only = False
            if limit == "u":
                created.append(qid)
            elif now_limit == "u":
                destroyed.append(qid)
            else:
                updated.append(qid)
        elif used != now_used and qid in quotas:
            updated.append(qid)
    props = ["used"] if updated and used_only else None
    return {"accountId": ctx.account_id_str, "oldState": since, "newState": state,
            "hasMoreChanges": False, "created": created, "updated": updated,
            "destroyed": destroyed, "updatedProperties": props}


def _matches(q, filt):
    for key, value in filt.items():
        if key in ("name", "scope", "resourceType"):
            if not isinstance(value, str):
                raise MethodError("unsupportedFilter", f"{key} must be a string")
            if (value.lower() not in q[key].lower()) if key == "name" else q[key] != value:
                return False
        elif key == "type":
            if value not in q["types"]:
                return False
        else:
            raise MethodError("unsupportedFilter", f"unknown filter property {key}")
    return True


@method("Quota/query", QUOTA)
def quota_query(ctx, args):
    ctx.check_account(args)
    filt = args.get("filter") or {}
    if not isinstance(filt, dict):
        raise invalid("filter must be an object")
    sort = args.get("sort") or []
    if not isinstance(sort, list):
        raise invalid("sort must be a list")
    for s in sort:
        if not isinstance(s, dict) or s.get("property") not in ("name", "used"):
            raise MethodError("unsupportedSort", "Quota sorts by name or used")
    state, quotas = _quotas(ctx)
    ids = [i for i, q in quotas.items() if _matches(q, filt)]
    position = max(0, int_arg(args, "position", 0))
    limit = uint_arg(args, "limit", None)
    out = {"accountId": ctx.account_id_str, "queryState": state, "canCalculateChanges": False,
           "position": position,
           "ids": ids[position:position + limit if limit is not None else None]}
    if bool_arg(args, "calculateTotal"):
        out["total"] = len(ids)
    return out


@method("Quota/queryChanges", QUOTA)
def quota_query_changes(ctx, args):
    ctx.check_account(args)
    raise MethodError("cannotCalculateChanges", "re-run Quota/query")
