"""Shared accounts (RFC 8620 section 1.6.2, RFC 8621 section 2): another
account's mailboxes that its owner granted through ACLs (``storage.acl``,
the same grants IMAP's SETACL makes).

Every account that shares a mailbox with the user appears in the session's
``accounts`` with ``isPersonal: false`` and the Mail capability only. A call
whose ``accountId`` is such an account runs with the owner's account in the
Context and ``ctx.shared`` = ``{mailbox pk: RFC 4314 rights}``, limited to
what the grants allow:

* Mailbox/get, Mailbox/query: only the mailboxes with the ``l`` right,
  ``myRights`` from the rights (``jmap_rights``).
* Email/query: the filter is ANDed with "in a mailbox with ``r``".
* Email/get: only emails in a mailbox with ``r``; ``mailboxIds`` lists the
  visible mailboxes only.
* Email/set: keyword updates only (``$seen`` needs ``s``, other keywords
  ``w``), and only of emails all of whose mailboxes grant that right (an
  email's keywords are one set across its mailboxes, so a change must not
  reach a mailbox that is not shared). Creating, destroying and moving
  between mailboxes are ``forbidden`` on shared accounts for now.
* Thread/get: only threads with an email the user may read, and only those
  emails in ``emailIds``.
* The /changes and /queryChanges methods answer ``cannotCalculateChanges``
  (the owner's change log names mailboxes and emails the user may not see,
  and a revocation is in no log), so a client fetches the shared account
  afresh: correct, if not cheap.
* Every other method answers ``accountNotSupportedByMethod``: blobs
  (download and upload go by the personal account), SearchSnippet,
  submissions and the rest are not offered on shared accounts yet; nor is
  push (the EventSource and WebSocket report the personal account only).

An account id of an account that shares nothing with the user is
``accountNotFound``, exactly as one that does not exist.
"""

from roost.storage.store import mailbox_oid

from .core import MAIL, MethodError, account_id_of

ALLOWED = frozenset({"Mailbox/get", "Mailbox/query", "Email/get", "Email/query", "Email/set",
                     "Thread/get"})
NO_CHANGES = frozenset({"Mailbox/changes", "Email/changes", "Thread/changes", "Mailbox/queryChanges",
                        "Email/queryChanges"})


def jmap_rights(rights):
    """RFC 8621 MailboxRights of RFC 4314 ``rights`` (the mapping of RFC 8621 section 2)."""
    return {"mayReadItems": "r" in rights, "mayAddItems": "i" in rights,
            "mayRemoveItems": "t" in rights and "e" in rights, "maySetSeen": "s" in rights,
            "maySetKeywords": "w" in rights, "mayCreateChild": "k" in rights,
            "mayRename": "x" in rights, "mayDelete": "x" in rights, "maySubmit": "p" in rights}


# MailboxRights to RFC 4314 rights: "l" comes with any right (a mailbox one
# may use is one one may see); mayRename and mayDelete are both "x".
TO_ACL = {"mayReadItems": "r", "mayAddItems": "i", "mayRemoveItems": "te", "maySetSeen": "s",
          "maySetKeywords": "w", "mayCreateChild": "k", "mayRename": "x", "mayDelete": "x",
          "maySubmit": "p"}


def share_grants(ctx, mailbox_pk, patch):
    """``{grantee: rights}`` that the ``shareWith`` parts of a Mailbox/set
    patch (``shareWith`` whole, or ``shareWith/<grantee>``) ask for on an own
    mailbox (None: one being created); apply them with ``grant``. Grantees
    are account addresses or ``anyone``; raises ValueError with the
    SetError. The ``a`` right, which JMAP cannot express, is kept."""
    from .core import set_error

    def bad(text):
        return ValueError(set_error("invalidProperties", text, properties=["shareWith"]))
    wanted = {}
    for key, value in patch.items():
        if key == "shareWith":
            if value is not None and not isinstance(value, dict):
                raise bad("shareWith is an object or null")
            wanted.update({g: None for g in (ctx.store.acl(mailbox_pk) if mailbox_pk else {})})
            wanted.update(value or {})
        elif key.startswith("shareWith/"):
            wanted[key[len("shareWith/"):]] = value
    grants = {}
    current = ctx.store.acl(mailbox_pk) if wanted and mailbox_pk else {}
    for grantee, rights in wanted.items():
        if rights is not None and (not isinstance(rights, dict) or any(
                k not in TO_ACL or not isinstance(v, bool) for k, v in rights.items())):
            raise bad("shareWith values are MailboxRights objects")
        try:
            who = ctx.store.grantee(grantee)
        except Exception:  # noqa: BLE001 - AccountNotFound, InvalidName: the same answer
            raise bad(f"no account {grantee}") from None
        if who == ctx.account.address:
            raise bad("the owner always has every right")
        letters = set("".join(TO_ACL[k] for k, v in (rights or {}).items() if v))
        if letters:
            letters.add("l")
        if "a" in current.get(who, ""):
            letters.add("a")
        grants[who] = "".join(sorted(letters))
    return grants


def grant(ctx, mailbox_pk, grants):
    for who, rights in grants.items():
        ctx.store.grant(mailbox_pk, who, rights)


def owners(store, account):
    """``{owner Account id: (address, {mailbox pk: rights})}`` of what is shared with ``account``."""
    out = {}
    for owner, box, rights in store.shared_mailboxes(account):
        out.setdefault(box.account_id, (owner, {}))[1][box.id] = rights
    return out


def session_accounts(store, account, account_caps):
    """The session's ``accounts`` entries of the accounts that share with ``account``."""
    caps = {MAIL: account_caps[MAIL]} if MAIL in account_caps else {}
    out = {}
    for owner_id, (address, boxes) in owners(store, account).items():
        writable = any(any(r in rights for r in "iwstek") for rights in boxes.values())
        out[f"A{owner_id}"] = {"name": address, "isPersonal": False, "isReadOnly": not writable,
                               "accountCapabilities": caps}
    return out


def shared_call(ctx, name, fn, args):
    """Run ``fn`` (the handler of ``name``) on the shared account ``args["accountId"]``."""
    acct = args["accountId"]
    found = owners(ctx.store, ctx.account)
    owner_id = next((o for o in found if f"A{o}" == acct), None)
    if owner_id is None:
        raise MethodError("accountNotFound", f"no account {acct} for these credentials")
    if name in NO_CHANGES:
        raise MethodError("cannotCalculateChanges", "fetch a shared account afresh")
    if name not in ALLOWED:
        raise MethodError("accountNotSupportedByMethod", f"{name} is not offered on shared accounts")
    personal, personal_id = ctx.account, ctx.account_id_str
    ctx.account = ctx.store.account_by_id(owner_id)
    ctx.account_id_str = account_id_of(ctx.account)
    ctx.shared = found[owner_id][1]
    ctx._states.clear()
    try:
        if name == "Email/query":
            return fn(ctx, _restricted_query(ctx, args))
        if name == "Email/get":
            return _email_get(ctx, fn, args)
        if name == "Email/set":
            return _email_set(ctx, fn, args)
        if name == "Thread/get":
            return _thread_get(ctx, fn, args)
        return fn(ctx, args)
    finally:
        ctx.account, ctx.account_id_str, ctx.shared = personal, personal_id, None
        ctx._states.clear()


def _readable(ctx):
    return sorted(pk for pk, rights in ctx.shared.items() if "r" in rights)


def _restricted_query(ctx, args):
    boxes = [{"inMailbox": mailbox_oid(pk)} for pk in _readable(ctx)]
    if not boxes:       # nothing readable: a filter nothing matches
        boxes = [{"inMailbox": mailbox_oid(0)}]
    scope = boxes[0] if len(boxes) == 1 else {"operator": "OR", "conditions": boxes}
    filt = args.get("filter")
    args = dict(args)
    args["filter"] = scope if filt is None else {"operator": "AND", "conditions": [scope, filt]}
    return args


def _email_get(ctx, fn, args):
    from roost.storage import emails
    from roost.storage.store import parse_oid

    ids = args.get("ids")
    if not isinstance(ids, list):
        return fn(ctx, args)         # the handler's own errors
    readable = set(_readable(ctx))
    visible = {pk for pk, rights in ctx.shared.items() if "l" in rights or "r" in rights}
    pks = {i: parse_oid("E", ctx.resolve_id(i) if isinstance(i, str) else None) for i in ids}
    infos = emails.get_messages(ctx.store, ctx.account.id, [p for p in pks.values() if p],
                                parsed=False, summary=False)
    shown = [i for i, pk in pks.items()
             if pk in infos and any(m.mailbox_id in readable for m in infos[pk].memberships)]
    hidden = [i for i in ids if i not in shown]
    out = fn(ctx, dict(args, ids=shown))
    out["notFound"] = list(out.get("notFound", [])) + hidden
    for obj in out.get("list", []):
        if isinstance(obj.get("mailboxIds"), dict):
            obj["mailboxIds"] = {k: v for k, v in obj["mailboxIds"].items()
                                 if parse_oid("M", k) in visible}
    return out


def _email_set(ctx, fn, args):
    from roost.storage import emails
    from roost.storage.store import parse_oid

    from .core import set_error

    refused = {"notCreated": {}, "notUpdated": {}, "notDestroyed": {}}
    create, update, destroy = args.get("create"), args.get("update"), args.get("destroy")
    if not isinstance(create, (dict, type(None))) or not isinstance(update, (dict, type(None))) \
            or not isinstance(destroy, (list, type(None))):
        return fn(ctx, args)            # the handler's own invalidArguments
    forbidden = set_error("forbidden", "only keywords can change on a shared account")
    for cid in create or {}:
        refused["notCreated"][cid] = forbidden
    for eid in destroy or []:
        refused["notDestroyed"][eid] = forbidden
    allowed = {}
    if update:
        readable = set(_readable(ctx))
        pks = {eid: parse_oid("E", ctx.resolve_id(eid) if isinstance(eid, str) else None) for eid in update}
        infos = emails.get_messages(ctx.store, ctx.account.id, [p for p in pks.values() if p],
                                    parsed=False, summary=False)
        for eid, patch in update.items():
            info = infos.get(pks[eid])
            boxes = [m.mailbox_id for m in info.memberships] if info else []
            if not any(b in readable for b in boxes):
                refused["notUpdated"][eid] = set_error("notFound")
                continue
            need = set()
            for key in patch if isinstance(patch, dict) else ():
                if key == "keywords":
                    need.update("sw")
                elif key.startswith("keywords/"):
                    need.add("s" if key.lower() == "keywords/$seen" else "w")
                else:
                    need.add("forbidden")
            if "forbidden" in need or not all(n in ctx.shared.get(b, "") for b in boxes for n in need):
                refused["notUpdated"][eid] = set_error(
                    "forbidden", "the rights on this email's mailboxes do not allow this change")
                continue
            allowed[eid] = patch
    out = fn(ctx, dict(args, create={}, update=allowed, destroy=[]))
    for key, errs in refused.items():
        if errs:
            out[key] = dict(out.get(key) or {}, **errs)
    return out


def _thread_get(ctx, fn, args):
    from roost.storage import emails
    from roost.storage.store import parse_oid

    out = fn(ctx, args)
    members = [parse_oid("E", e) for t in out["list"] for e in t["emailIds"]]
    infos = emails.get_messages(ctx.store, ctx.account.id, members, parsed=False, summary=False)
    readable = set(_readable(ctx))
    seen = {pk for pk, info in infos.items() if any(m.mailbox_id in readable for m in info.memberships)}
    kept = []
    for t in out["list"]:
        t["emailIds"] = [e for e in t["emailIds"] if parse_oid("E", e) in seen]
        (kept if t["emailIds"] else out["notFound"]).append(t if t["emailIds"] else t["id"])
    out["list"] = kept
    return out
