"""Quota methods (RFC 9425): the account's storage quota as a Quota object.

Owns the JMAP view of ``Account.quota_bytes`` / ``used_bytes``: one
``octets`` quota of scope ``account`` for Mail when the account has a limit,
none when it is unlimited. Usage changes with every delivery and are not in
the change log, so the state is the usage itself; ``Quota/changes`` says
what moved by comparing it.
"""

from .core import (MethodError, bool_arg, capability, ids_arg, int_arg, invalid, method,
                   parse_state, properties_arg, uint_arg)

QUOTA = "urn:ietf:params:jmap:quota"
capability(QUOTA, {}, {})

PROPERTIES = ("id", "resourceType", "used", "hardLimit", "scope", "name", "types", "warnLimit",
              "softLimit", "description")
QUOTA_ID = "Qoctets"


def _quotas(ctx):
    acct = ctx.store.account_by_id(ctx.account.id)
    state = f"{acct.used_bytes}.{acct.quota_bytes if acct.quota_bytes is not None else 'u'}"
    if acct.quota_bytes is None:
        return state, {}
    return state, {QUOTA_ID: {
        "id": QUOTA_ID, "resourceType": "octets", "used": acct.used_bytes,
        "hardLimit": acct.quota_bytes, "scope": "account", "name": acct.address,
        "types": ["Mail"], "warnLimit": None, "softLimit": None,
        "description": "storage used by this account's messages"}}


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


@method("Quota/changes", QUOTA)
def quota_changes(ctx, args):
    ctx.check_account(args)
    since = args.get("sinceState")
    if not isinstance(since, str):
        raise invalid("sinceState is required")
    uint_arg(args, "maxChanges", None, minimum=1)
    used, _, limit = since.partition(".")
    if parse_state(used) is None or not limit or (limit != "u" and parse_state(limit) is None):
        raise MethodError("cannotCalculateChanges", f"state {since} is not one this server gave")
    state, quotas = _quotas(ctx)
    now_used, _, now_limit = state.partition(".")
    created, updated, destroyed, props = [], [], [], None
    if limit != now_limit:
        if limit == "u" and quotas:
            created = [QUOTA_ID]
        elif now_limit == "u":
            destroyed = [QUOTA_ID]
        else:
            updated = [QUOTA_ID]
    elif used != now_used and quotas:
        updated, props = [QUOTA_ID], ["used"]
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
