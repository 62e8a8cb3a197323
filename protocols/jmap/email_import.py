"""Email/import and Email/parse (RFC 8621 sections 4.8 and 4.9).

Email/import stores uploaded blobs through ``email_set.store_new`` (the one
delivery path, as Email/set's creates do); Email/parse builds Email objects
from blobs that are not stored as messages, parsing them with
``storage.mime`` just as delivery would.
"""

from roost.storage import mime
from roost.storage.errors import MailboxNotFound, MessageTooLarge, QuotaExceeded
from roost.storage.store import email_oid

from . import bodies
from .blobs import BlobNotFound
from .core import MAIL, MethodError, ids_arg, invalid, method, set_error, store_set_error
from .email_common import ALL_PROPS, DEFAULT_PROPS, check_props, email_json, get_options
from .email_set import TooMany, created_json, keywords_arg, mailboxes_arg, store_new


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
            pks = mailboxes_arg(ctx, obj.get("mailboxIds"))
        except TooMany as exc:
            not_created[cid] = exc.args[0]
            continue
        except ValueError as exc:
            not_created[cid] = set_error("invalidProperties", str(exc), properties=["mailboxIds"])
            continue
        try:
            flags = keywords_arg(obj.get("keywords") or {})
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
        created[cid] = created_json(ctx, pk)
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
    props = check_props(args, "properties", ALL_PROPS,
                         [p for p in DEFAULT_PROPS if p not in ("id", "mailboxIds", "keywords",
                                                                "receivedAt", "threadId")])
    body_props = check_props(args, "bodyProperties", bodies.BODY_PART_PROPERTIES,
                              bodies.DEFAULT_BODY_PART_PROPERTIES)
    opts = get_options(args)
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
