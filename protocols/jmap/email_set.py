"""Email/set and Email/copy (RFC 8621 sections 4.6 and 4.7).

Owns the write arguments shared with Email/import (keywords, mailboxIds and
their limits) and ``store_new``, which stores new bytes through the one
delivery path (``Delivery.append``) and adds further mailboxes through
``storage.emails``; updates and destroys go through ``storage.emails`` too,
and store errors become SetErrors in ``core.store_set_error``.
"""

from roost.storage import emails
from roost.storage import flags as flagbits
from roost.storage.delivery import Incoming
from roost.storage.errors import MailboxNotFound, MessageTooLarge, QuotaExceeded
from roost.storage.store import email_oid, parse_oid

from . import bodies
from .blobs import BlobNotFound
from .core import (MAIL, MethodError, check_set_args, method, put, set_error, set_response,
                   store_set_error)
from .email_common import MAX_MAILBOXES_PER_EMAIL, flag_name


class TooMany(ValueError):
    """A limit SetError (tooManyKeywords, tooManyMailboxes); ``args[0]`` is the SetError."""


def keywords_arg(value):
    if not isinstance(value, dict) or not all(v is True for v in value.values()):
        raise ValueError("keywords must map keywords to true")
    if len(value) > flagbits.MAX_KEYWORDS:
        raise TooMany(set_error("tooManyKeywords", f"at most {flagbits.MAX_KEYWORDS} keywords",
                                maxKeywords=flagbits.MAX_KEYWORDS))
    return [flag_name(k) for k in value]


def mailboxes_arg(ctx, value):
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


def created_json(ctx, pk):
    info = emails.get_messages(ctx.store, ctx.account.id, [pk], parsed=False)[pk]
    return {"id": email_oid(pk), "blobId": info.blob_id, "threadId": f"T{info.thread_id}",
            "size": info.size}


def _create_one(ctx, obj):
    for key in ("id", "blobId", "threadId", "size", "hasAttachment", "preview"):
        if key in obj:
            return set_error("invalidProperties", f"{key} is set by the server", properties=[key])
    prop = "mailboxIds"
    try:
        pks = mailboxes_arg(ctx, obj.get("mailboxIds"))
        prop = "keywords"
        flags = keywords_arg(obj.get("keywords") or {})
    except TooMany as exc:
        return exc.args[0]
    except ValueError as exc:
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
        if exc.missing_blob is not None:
            return set_error("blobNotFound", str(exc), notFound=[exc.missing_blob])
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
                ch.replace = keywords_arg(value)
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
                pks = mailboxes_arg(ctx, value)
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
            put(resp, "created", cid, created_json(ctx, result))
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


# --- Email/copy ------------------------------------------------------------------

@method("Email/copy", MAIL)
def email_copy(ctx, args):
    from_acct = args.get("fromAccountId")
    ctx.check_account(args)
    if from_acct != ctx.account_id_str:
        raise MethodError("fromAccountNotFound", "Email/copy works within your own account only")
    raise MethodError("invalidArguments",
                      "fromAccountId and accountId must differ; use Email/set to change mailboxIds")
