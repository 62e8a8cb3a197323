"""Identity, EmailSubmission, VacationResponse and PushSubscription methods
(RFC 8621 sections 6-8, RFC 8620 section 7.2).

Owns sending policy for JMAP: an identity's address must be the account's
own or an alias of it; a submission to local recipients goes through the one
delivery path (``Delivery.deliver``); a submission with any remote recipient
is refused with ``forbiddenToSend`` until Roost has an outbound relay (the
``Backend.outbound`` hook), so nothing is half sent.
"""

import json
import secrets
import threading
import time

from roost.storage import account_data, emails
from roost.storage.delivery import Incoming
from roost.storage.store import parse_oid

from . import bodies
from .core import (CORE, LIMITS, SUBMISSION, VACATION, MethodError, apply_patch, bool_arg,
                   changes_response, check_set_args, ids_arg, int_arg, invalid, method,
                   properties_arg, put, run_call, set_error, set_response, uint_arg)

IDENTITY_PROPS = ("id", "name", "email", "replyTo", "bcc", "textSignature", "htmlSignature",
                  "mayDelete")
SUBMISSION_PROPS = ("id", "identityId", "emailId", "threadId", "envelope", "sendAt",
                    "undoStatus", "deliveryStatus", "dsnBlobIds", "mdnBlobIds")
VACATION_PROPS = ("id", "isEnabled", "fromDate", "toDate", "subject", "textBody", "htmlBody")
PUSH_PROPS = ("id", "deviceClientId", "url", "keys", "verificationCode", "expires", "types")


# --- Identity -------------------------------------------------------------------

def _identity_json(row):
    pk, name, address, settings = row
    return {"id": f"I{pk}", "name": name, "email": address,
            "replyTo": settings.get("replyTo"), "bcc": settings.get("bcc"),
            "textSignature": settings.get("textSignature", ""),
            "htmlSignature": settings.get("htmlSignature", ""), "mayDelete": True}


def allowed_from(ctx, address):
    """May this account send as ``address`` (its own address or an alias of it)?"""
    if not isinstance(address, str):
        return False
    address = address.lower()
    own = ctx.account.address
    if address == own:
        return True
    domain = address.rpartition("@")[2]
    return any(target == own and (alias == address or alias == "@" + domain)
               for alias, target in ctx.store.aliases())


def _get_response(ctx, args, kind, allowed, load):
    """A ``kind``/get response: the arguments are checked first, then ``load()``
    gives every object by id, and the state is read after it."""
    ctx.check_account(args)
    ids = ids_arg(ctx, args)
    props = properties_arg(args, allowed)
    rows = load()
    found, missing = [], []
    for i in (list(rows) if ids is None else ids):
        if i in rows:
            found.append({p: rows[i][p] for p in props} | {"id": i})
        else:
            missing.append(i)
    return {"accountId": ctx.account_id_str,
            "state": str(ctx.state(kind)),
            "list": found, "notFound": missing}


@method("Identity/get", SUBMISSION)
def identity_get(ctx, args):
    return _get_response(ctx, args, "Identity", IDENTITY_PROPS, lambda: {
        f"I{r[0]}": _identity_json(r)
        for r in account_data.identities_of(ctx.store, ctx.account.id)})


@method("Identity/changes", SUBMISSION)
def identity_changes(ctx, args):
    account_data.identities_of(ctx.store, ctx.account.id)
    return changes_response(ctx, args, "Identity", lambda pk: f"I{pk}")


def _identity_settings(obj, base):
    settings = dict(base)
    for key in ("replyTo", "bcc"):
        if key in obj:
            v = obj[key]
            if v is not None and not (isinstance(v, list) and all(
                    isinstance(a, dict) and isinstance(a.get("email"), str) for a in v)):
                raise ValueError(key)
            settings[key] = v
    for key in ("textSignature", "htmlSignature"):
        if key in obj:
            if not isinstance(obj[key], str):
                raise ValueError(key)
            settings[key] = obj[key]
    return settings


@method("Identity/set", SUBMISSION)
def identity_set(ctx, args):
    account_data.identities_of(ctx.store, ctx.account.id)
    create, update, destroy, old = check_set_args(ctx, args, "Identity")
    resp = set_response(ctx, "Identity", old)
    acct = ctx.account.id
    for cid, obj in create.items():
        bad = [k for k in obj if k not in IDENTITY_PROPS or k in ("id", "mayDelete")]
        name = obj.get("name", "")
        if bad or not isinstance(name, str):
            put(resp, "notCreated", cid, set_error("invalidProperties", properties=bad or ["name"]))
            continue
        if not allowed_from(ctx, obj.get("email")):
            put(resp, "notCreated", cid, set_error(
                "forbiddenFrom", "the address is not this account's or one of its aliases"))
            continue
        try:
            settings = _identity_settings(obj, {})
        except ValueError as exc:
            put(resp, "notCreated", cid, set_error("invalidProperties", properties=[str(exc)]))
            continue
        pk = account_data.save_identity(ctx.store, acct, None, name, obj["email"].lower(), settings)
        ctx.created[cid] = f"I{pk}"
        put(resp, "created", cid, {"id": f"I{pk}", "mayDelete": True})
    rows = {r[0]: r for r in account_data.identities_of(ctx.store, acct)}
    for iid, patch in update.items():
        pk = parse_oid("I", ctx.resolve_id(iid))
        if pk not in rows:
            put(resp, "notUpdated", iid, set_error("notFound"))
            continue
        if "email" in patch and patch["email"] != rows[pk][2]:
            put(resp, "notUpdated", iid, set_error("invalidProperties", "email is immutable",
                                                   properties=["email"]))
            continue
        bad = [k for k in patch if k not in IDENTITY_PROPS or k in ("id", "mayDelete")]
        try:
            if bad:
                raise ValueError(bad[0])
            settings = _identity_settings(patch, rows[pk][3])
            name = patch.get("name", rows[pk][1])
            if not isinstance(name, str):
                raise ValueError("name")
        except ValueError as exc:
            put(resp, "notUpdated", iid, set_error("invalidProperties", properties=[str(exc)]))
            continue
        account_data.save_identity(ctx.store, acct, pk, name, rows[pk][2], settings)
        put(resp, "updated", iid, None)
    for iid in destroy:
        pk = parse_oid("I", ctx.resolve_id(iid))
        if pk is not None and account_data.delete_identity(ctx.store, acct, pk):
            put(resp, "destroyed", iid, None)
        else:
            put(resp, "notDestroyed", iid, set_error("notFound"))
    resp["newState"] = str(ctx.store.state(acct, "Identity"))
    return resp


# --- EmailSubmission ---------------------------------------------------------------

def _submission_json(row):
    pk, identity, message, thread, send_at, status = row
    return {"id": f"S{pk}", "identityId": f"I{identity}", "emailId": f"E{message}",
            "threadId": f"T{thread}", "envelope": status.get("envelope"),
            "sendAt": bodies.utc_date(send_at), "undoStatus": status.get("undoStatus", "final"),
            "deliveryStatus": status.get("deliveryStatus"), "dsnBlobIds": [], "mdnBlobIds": []}


@method("EmailSubmission/get", SUBMISSION)
def submission_get(ctx, args):
    return _get_response(ctx, args, "EmailSubmission", SUBMISSION_PROPS, lambda: {
        f"S{r[0]}": _submission_json(r)
        for r in account_data.submissions_of(ctx.store, ctx.account.id)})


@method("EmailSubmission/changes", SUBMISSION)
def submission_changes(ctx, args):
    return changes_response(ctx, args, "EmailSubmission", lambda pk: f"S{pk}")


def _submission_ids(ctx, args):
    filt = args.get("filter") or {}
    if not isinstance(filt, dict):
        raise invalid("filter must be an object")
    rows = [_submission_json(r) for r in account_data.submissions_of(ctx.store, ctx.account.id)]
    for key, value in filt.items():
        if key in ("identityIds", "emailIds", "threadIds"):
            prop = key[:-1]
            rows = [r for r in rows if isinstance(value, list) and r[prop] in value]
        elif key == "undoStatus":
            rows = [r for r in rows if r["undoStatus"] == value]
        elif key in ("before", "after"):
            try:
                when = bodies.parse_utc_date(value)
            except ValueError:
                raise MethodError("unsupportedFilter", f"{key} must be a UTCDate") from None
            rows = [r for r in rows if (bodies.parse_utc_date(r["sendAt"]) < when if key == "before"
                                        else bodies.parse_utc_date(r["sendAt"]) >= when)]
        else:
            raise MethodError("unsupportedFilter", f"unknown filter property {key}")
    sort = args.get("sort") or []
    if not isinstance(sort, list):
        raise invalid("sort must be a list")
    for s in reversed(sort):
        if not isinstance(s, dict) or s.get("property") not in ("emailId", "threadId", "sentAt"):
            raise MethodError("unsupportedSort", "sort by emailId, threadId or sentAt")
        prop = "sendAt" if s["property"] == "sentAt" else s["property"]
        rows.sort(key=lambda r: r[prop], reverse=s.get("isAscending", True) is False)
    return [r["id"] for r in rows]


@method("EmailSubmission/query", SUBMISSION)
def submission_query(ctx, args):
    ctx.check_account(args)
    ids = _submission_ids(ctx, args)
    position = max(0, int_arg(args, "position", 0))
    limit = uint_arg(args, "limit", None)
    page = ids[position:position + limit if limit is not None else None]
    out = {"accountId": ctx.account_id_str,
           "queryState": str(ctx.state("EmailSubmission")),
           "canCalculateChanges": False, "position": position, "ids": page}
    if bool_arg(args, "calculateTotal"):
        out["total"] = len(ids)
    return out


@method("EmailSubmission/queryChanges", SUBMISSION)
def submission_query_changes(ctx, args):
    ctx.check_account(args)
    raise MethodError("cannotCalculateChanges", "re-run EmailSubmission/query")


def _envelope(ctx, obj, info, identity):
    env = obj.get("envelope")
    if env is None:
        s = info.summary
        rcpts = [a["email"] for k in ("to", "cc", "bcc") for a in s.get(k) or []]
        sender = (s.get("sender") or s.get("from") or [{"email": identity[2]}])[0]["email"]
        return {"mailFrom": {"email": sender, "parameters": None},
                "rcptTo": [{"email": r, "parameters": None} for r in dict.fromkeys(rcpts)]}
    if not (isinstance(env, dict) and isinstance(env.get("mailFrom"), dict)
            and isinstance(env["mailFrom"].get("email"), str)
            and isinstance(env.get("rcptTo"), list)
            and all(isinstance(r, dict) and isinstance(r.get("email"), str) for r in env["rcptTo"])):
        raise ValueError(set_error("invalidProperties", "envelope is malformed", properties=["envelope"]))
    if env["mailFrom"].get("parameters"):
        raise ValueError(set_error("invalidProperties", "no SMTP parameters are supported",
                                   properties=["envelope"]))
    return env


def _submit_one(ctx, obj):
    identity_pk = parse_oid("I", ctx.resolve_id(obj.get("identityId")))
    message_pk = parse_oid("E", ctx.resolve_id(obj.get("emailId")))
    identities = {r[0]: r for r in account_data.identities_of(ctx.store, ctx.account.id)}
    if identity_pk not in identities:
        return set_error("invalidProperties", "identityId is not an identity",
                         properties=["identityId"])
    info = emails.get_messages(ctx.store, ctx.account.id, [message_pk or -1]).get(message_pk)
    if info is None:
        return set_error("invalidProperties", "emailId is not an email", properties=["emailId"])
    identity = identities[identity_pk]
    try:
        env = _envelope(ctx, obj, info, identity)
    except ValueError as exc:
        return exc.args[0]
    froms = [a["email"].lower() for a in info.summary.get("from") or []]
    if not froms or not all(allowed_from(ctx, f) for f in froms) \
            or not allowed_from(ctx, env["mailFrom"]["email"]):
        return set_error("forbiddenFrom", "From and the envelope sender must be this "
                         "account's address or one of its aliases")
    rcpts = [r["email"] for r in env["rcptTo"]]
    if not rcpts:
        return set_error("noRecipients", "the envelope has no recipients")
    if len(rcpts) > 100:
        return set_error("tooManyRecipients", "at most 100 recipients", maxRecipients=100)
    remote = [r for r in rcpts if not ctx.store.resolve(r)]
    if remote and ctx.backend.outbound is None:
        return set_error("forbiddenToSend",
                         "Roost has no outbound relay yet: only recipients on this server can be "
                         f"reached, and {', '.join(remote[:5])} is not")
    data = ctx.store.read_message(ctx.account.id, info.id)
    status = {}
    local = [r for r in rcpts if r not in remote]
    if local:
        results = ctx.backend.delivery.store(Incoming(data, tuple(local), sender=env["mailFrom"]["email"]))
        for r in results:
            status[r.recipient] = {"smtpReply": "250 2.0.0 delivered" if r.ok else
                                   f"550 5.0.0 {r.reason or r.status.value}",
                                   "delivered": "yes" if r.ok else "no", "displayed": "unknown"}
    if remote:
        ctx.backend.outbound(data, remote, env["mailFrom"]["email"])
        for r in remote:
            status[r] = {"smtpReply": "250 2.0.0 queued", "delivered": "queued",
                         "displayed": "unknown"}
    pk = account_data.add_submission(ctx.store, ctx.account.id, identity_pk, info.id,
                                     info.thread_id, time.time(),
                                     {"envelope": env, "undoStatus": "final",
                                      "deliveryStatus": status})
    return pk


@method("EmailSubmission/set", SUBMISSION)
def submission_set(ctx, args):
    create, update, destroy, old = check_set_args(ctx, args, "EmailSubmission")
    on_update = args.get("onSuccessUpdateEmail")
    on_destroy = args.get("onSuccessDestroyEmail")
    if on_update is not None and not isinstance(on_update, dict):
        raise invalid("onSuccessUpdateEmail must be an object")
    if on_destroy is not None and not isinstance(on_destroy, list):
        raise invalid("onSuccessDestroyEmail must be a list")
    resp = set_response(ctx, "EmailSubmission", old)
    done = {}     # submission id or #creation id -> email id
    for cid, obj in create.items():
        result = _submit_one(ctx, obj)
        if isinstance(result, dict):
            put(resp, "notCreated", cid, result)
            continue
        sid = f"S{result}"
        ctx.created[cid] = sid
        email_id = ctx.resolve_id(obj.get("emailId"))
        done["#" + cid] = done[sid] = email_id
        put(resp, "created", cid, {"id": sid, "undoStatus": "final", "sendAt":
                                   bodies.utc_date(time.time())})
    rows = {f"S{r[0]}": r for r in account_data.submissions_of(ctx.store, ctx.account.id)}
    for sid, patch in update.items():
        real = ctx.resolve_id(sid)
        if real not in rows:
            put(resp, "notUpdated", sid, set_error("notFound"))
        elif patch.get("undoStatus") == "canceled":
            put(resp, "notUpdated", sid, set_error("cannotUnsend", "the message was already sent"))
        else:
            put(resp, "notUpdated", sid, set_error("invalidProperties", "only undoStatus can change",
                                                   properties=list(patch)))
    for sid in destroy:
        real = ctx.resolve_id(sid)
        pk = parse_oid("S", real)
        if pk is not None and account_data.delete_submission(ctx.store, ctx.account.id, pk):
            put(resp, "destroyed", sid, None)
        else:
            put(resp, "notDestroyed", sid, set_error("notFound"))
    resp["newState"] = str(ctx.store.state(ctx.account.id, "EmailSubmission"))
    out = [("EmailSubmission/set", resp)]
    implicit_update = {}
    for key, patch in (on_update or {}).items():
        if key in done:
            implicit_update[done[key]] = patch
    implicit_destroy = [done[k] for k in (on_destroy or []) if k in done]
    if implicit_update or implicit_destroy:
        args2 = {"accountId": ctx.account_id_str}
        if implicit_update:
            args2["update"] = implicit_update
        if implicit_destroy:
            args2["destroy"] = implicit_destroy
        for name, result, _cid in run_call(ctx, "Email/set", args2, "", []):
            out.append((name, result))
    return out


# --- VacationResponse ------------------------------------------------------------------

def _vacation_json(settings):
    return {"id": "singleton", "isEnabled": settings.get("isEnabled", False),
            "fromDate": settings.get("fromDate"), "toDate": settings.get("toDate"),
            "subject": settings.get("subject"), "textBody": settings.get("textBody"),
            "htmlBody": settings.get("htmlBody")}


@method("VacationResponse/get", VACATION)
def vacation_get(ctx, args):
    return _get_response(ctx, args, "VacationResponse", VACATION_PROPS, lambda: {
        "singleton": _vacation_json(account_data.vacation(ctx.store, ctx.account.id))})


@method("VacationResponse/set", VACATION)
def vacation_set(ctx, args):
    create, update, destroy, old = check_set_args(ctx, args, "VacationResponse")
    resp = set_response(ctx, "VacationResponse", old)
    for cid in create:
        put(resp, "notCreated", cid, set_error("singleton", "there is only the singleton"))
    for vid in destroy:
        put(resp, "notDestroyed", vid, set_error("singleton", "the singleton cannot be destroyed"))
    for vid, patch in update.items():
        if vid != "singleton":
            put(resp, "notUpdated", vid, set_error("notFound"))
            continue
        settings = account_data.vacation(ctx.store, ctx.account.id)
        try:
            new = apply_patch(_vacation_json(settings), patch)
        except ValueError:
            put(resp, "notUpdated", vid, set_error("invalidPatch"))
            continue
        bad = [k for k in new if k not in VACATION_PROPS or
               (k == "isEnabled" and not isinstance(new[k], bool)) or
               (k in ("subject", "textBody", "htmlBody") and new[k] is not None
                and not isinstance(new[k], str))]
        for k in ("fromDate", "toDate"):
            if new.get(k) is not None:
                try:
                    bodies.parse_utc_date(new[k])
                except ValueError:
                    bad.append(k)
        if bad or new.get("id") != "singleton":
            put(resp, "notUpdated", vid, set_error("invalidProperties", properties=bad or ["id"]))
            continue
        new.pop("id")
        account_data.save_vacation(ctx.store, ctx.account.id, new)
        put(resp, "updated", vid, None)
    resp["newState"] = str(ctx.store.state(ctx.account.id, "VacationResponse"))
    return resp


# --- PushSubscription (RFC 8620 section 7.2) -----------------------------------------

def _push_json(pk, s):
    return {"id": f"P{pk}", "deviceClientId": s.get("deviceClientId"), "url": s.get("url"),
            "keys": s.get("keys"), "verificationCode": s.get("verificationCode"),
            "expires": s.get("expires"), "types": s.get("types")}


MAX_PUSH_SUBSCRIPTIONS = 50     # per account (RFC 8620 section 8.6)


def send_verification(url, subscription_id, code, keys, allow_private=False):
    """POST the PushVerification object to the client's push service, off-thread."""
    from .push import post
    body = json.dumps({"@type": "PushVerification", "pushSubscriptionId": subscription_id,
                       "verificationCode": code}).encode()
    threading.Thread(target=post, args=(url, body, keys, 10, allow_private),
                     name="roost-push-verify", daemon=True).start()


def _push_create_error(obj):
    """The SetError for a PushSubscription create object, or None when it is good."""
    url, device = obj.get("url") if isinstance(obj, dict) else None, \
        obj.get("deviceClientId") if isinstance(obj, dict) else None
    if not isinstance(url, str) or not url.startswith("https://") or not isinstance(device, str):
        return set_error("invalidProperties", "url must be https and deviceClientId a string",
                         properties=["url", "deviceClientId"])
    keys = obj.get("keys")
    if keys is not None and not (isinstance(keys, dict) and isinstance(keys.get("p256dh"), str)
                                 and isinstance(keys.get("auth"), str)):
        return set_error("invalidProperties", "keys needs p256dh and auth", properties=["keys"])
    types = obj.get("types")
    if types is not None and not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
        return set_error("invalidProperties", properties=["types"])
    if obj.get("verificationCode") is not None:
        return set_error("invalidProperties", properties=["verificationCode"])
    return None


def _private_urls(ctx, create):
    """The create ids whose ``url`` is, or resolves to, an address a push must
    not go to (unless ``push_allow_private``); every name is looked up at once.
    A name that does not resolve now is let through: each push checks again."""
    from .push import refused_address, resolve_many, url_host
    if ctx.backend.push_allow_private:
        return set()
    hosts = {}
    for cid, obj in create.items():
        url = obj.get("url") if isinstance(obj, dict) else None
        try:
            hosts[cid] = url_host(url) if isinstance(url, str) else None
        except ValueError:
            hosts[cid] = None
    found = resolve_many([h for h, _p in filter(None, hosts.values())])
    return {cid for cid, hp in hosts.items()
            if hp is not None and any(refused_address(a) for a in found[hp[0]])}


@method("PushSubscription/get", CORE)
def push_get(ctx, args):
    if "accountId" in args:
        raise invalid("PushSubscription/get takes no accountId")
    ids = ids_arg(ctx, args)
    props = properties_arg(args, PUSH_PROPS)
    rows = {f"P{pk}": _push_json(pk, s)
            for pk, s in account_data.push_subscriptions_of(ctx.store, ctx.account.id)}
    found, missing = [], []
    for i in (list(rows) if ids is None else ids):
        if i in rows:
            o = {p: rows[i][p] for p in props} | {"id": i}
            o.pop("url", None)
            o.pop("keys", None)
            found.append(o)
        else:
            missing.append(i)
    return {"state": None, "list": found, "notFound": missing}


@method("PushSubscription/set", CORE)
def push_set(ctx, args):
    if "accountId" in args:
        raise invalid("PushSubscription/set takes no accountId")
    create, update, destroy = (args.get("create") or {}), (args.get("update") or {}), \
        (args.get("destroy") or [])
    if not isinstance(create, dict) or not isinstance(update, dict) or not isinstance(destroy, list):
        raise invalid("create, update and destroy have the wrong types")
    resp = {"oldState": None, "newState": None, "created": None, "updated": None,
            "destroyed": None, "notCreated": None, "notUpdated": None, "notDestroyed": None}
    acct = ctx.account.id
    if len(create) + len(update) + len(destroy) > LIMITS["maxObjectsInSet"]:
        raise MethodError("requestTooLarge", f"more than {LIMITS['maxObjectsInSet']} objects")
    errors = {cid: _push_create_error(obj) for cid, obj in create.items()}
    held = len(account_data.push_subscriptions_of(ctx.store, acct)) if create else 0
    fit = [cid for cid in create if errors[cid] is None][:max(0, MAX_PUSH_SUBSCRIPTIONS - held)]
    private = _private_urls(ctx, {cid: create[cid] for cid in fit})
    for cid, obj in create.items():
        if errors[cid] is not None:
            put(resp, "notCreated", cid, errors[cid])
            continue
        if cid not in fit:
            put(resp, "notCreated", cid, set_error(
                "overQuota", f"an account may hold {MAX_PUSH_SUBSCRIPTIONS} push subscriptions"))
            continue
        if cid in private:
            put(resp, "notCreated", cid, set_error(
                "invalidProperties", "url is, or resolves to, a loopback, private, link-local, "
                "multicast or unspecified address", properties=["url"]))
            continue
        url, device = obj["url"], obj["deviceClientId"]
        expires = time.time() + 7 * 86400
        code = secrets.token_urlsafe(16)
        settings = {"deviceClientId": device, "url": url, "keys": obj.get("keys"),
                    "types": obj.get("types"), "expires": bodies.utc_date(expires),
                    "code": code, "verificationCode": None}
        pk = account_data.save_push_subscription(ctx.store, acct, None, settings)
        ctx.created[cid] = f"P{pk}"
        send_verification(url, f"P{pk}", code, settings["keys"], ctx.backend.push_allow_private)
        put(resp, "created", cid, {"id": f"P{pk}", "expires": settings["expires"]})
    rows = dict(account_data.push_subscriptions_of(ctx.store, acct))
    for sid, patch in update.items():
        pk = parse_oid("P", ctx.resolve_id(sid))
        if pk not in rows or not isinstance(patch, dict):
            put(resp, "notUpdated", sid, set_error("notFound"))
            continue
        s = dict(rows[pk])
        bad = [k for k in patch if k not in ("verificationCode", "expires", "types")]
        if bad:
            put(resp, "notUpdated", sid, set_error("invalidProperties", properties=bad))
            continue
        if "verificationCode" in patch:
            if patch["verificationCode"] != s.get("code"):
                put(resp, "notUpdated", sid, set_error("invalidProperties", "wrong verification code",
                                                       properties=["verificationCode"]))
                continue
            s["verificationCode"] = patch["verificationCode"]
        if "types" in patch:
            if patch["types"] is not None and not (isinstance(patch["types"], list) and all(
                    isinstance(t, str) for t in patch["types"])):
                put(resp, "notUpdated", sid, set_error("invalidProperties", properties=["types"]))
                continue
            s["types"] = patch["types"]
        if "expires" in patch:
            s["expires"] = patch["expires"]
        account_data.save_push_subscription(ctx.store, acct, pk, s)
        put(resp, "updated", sid, None)
    if ctx.backend.push_changed is not None:
        ctx.backend.push_changed(acct)
    for sid in destroy:
        pk = parse_oid("P", ctx.resolve_id(sid))
        if pk is not None and account_data.delete_push_subscription(ctx.store, acct, pk):
            put(resp, "destroyed", sid, None)
        else:
            put(resp, "notDestroyed", sid, set_error("notFound"))
    return resp

