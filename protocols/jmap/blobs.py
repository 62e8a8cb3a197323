"""Blobs for JMAP: uploads, whole messages and message parts, by blob id;
``Blob/copy``, RFC 9404's ``Blob/upload``, ``Blob/get`` and ``Blob/lookup``; the
``Backend`` that method handlers reach the store through.

Blob ids: ``B<hash>`` is an upload, a message's bytes or a Sieve script's
content (the same content hash each way); ``B<hash>_1_2`` is part 1.2 of that message, transfer-decoded.
Every lookup is scoped to one account. Blocking: call from a worker thread.
"""

import base64
import binascii
import hashlib

from roost.storage import account_data, emails
from roost.storage.errors import MessageNotFound

from . import bodies
from .core import (CORE, LIMITS, MethodError, capability, ids_arg, invalid, method, set_error,
                   uint_arg)


class BlobNotFound(KeyError):
    pass


class Backend:
    """The store, delivery and settings a JMAP server works with."""

    def __init__(self, store, delivery, hostname="localhost", outbound=None,
                 push_allow_private=False, undo_send=0):
        self.store = store
        self.delivery = delivery
        self.hostname = hostname
        self.outbound = outbound     # the outbound queue (storage.outbound.Outbound): sending
        self.undo_send = undo_send   # seconds a submission stays cancelable ([jmap] undo_send)
        self.push_allow_private = push_allow_private   # push to loopback/private addresses
        self.push_changed = None     # called with an account id after its push subscriptions change

    def session_state(self, account):
        """Changes only when what the Session object says changes (account,
        capabilities, the accounts that share mailboxes with it: ``sharing``)."""
        from .core import CAPABILITIES
        from .sharing import owners
        shared = sorted((o, sorted(r.items())) for o, (_a, r) in owners(self.store, account).items())
        digest = hashlib.sha256(repr((account.id, account.address, sorted(CAPABILITIES),
                                      shared)).encode())
        return digest.hexdigest()[:16]

    def read_blob(self, account_id, blob_id):
        """``(bytes, content type, name)``; raises BlobNotFound."""
        if not isinstance(blob_id, str) or not blob_id.startswith("B") or len(blob_id) > 200:
            raise BlobNotFound(blob_id)
        head, _, part = blob_id.partition("_")
        if not part:
            try:
                data, ctype = account_data.read_upload(self.store, account_id, head)
                return data, ctype, None
            except MessageNotFound:
                pass
            from .sieve import CONTENT_TYPE, read_script_blob
            script = read_script_blob(self.store, account_id, head)
            if script is not None:
                return script, CONTENT_TYPE, None
        pk = emails.message_by_blob(self.store, account_id, head)
        if pk is None:
            raise BlobNotFound(blob_id)
        data = self.store.read_message(account_id, pk)
        if not part:
            return data, "message/rfc822", None
        info = emails.get_messages(self.store, account_id, [pk])[pk]
        node = bodies.find_part(info.structure, part.replace("_", "."))
        if node is None:
            raise BlobNotFound(blob_id)
        from roost.storage import mime
        return (bodies.decoded_bytes(data, node), f"{node[mime.TYPE]}/{node[mime.SUBTYPE]}",
                mime.filename(node))

    def blob_bytes(self, account_id, blob_id):
        return self.read_blob(account_id, blob_id)[0]

    def blob_range(self, account_id, blob_id, start=0, end=None):
        """``(bytes[start:end], size of the whole blob, content type, name)``.
        A whole message's bytes come from the store as just that range (a
        ranged download or ``Blob/get`` with offset/length reads no more);
        uploads and decoded parts are read whole, then cut. Raises BlobNotFound."""
        head, _, part = (blob_id.partition("_") if isinstance(blob_id, str) else ("", "", ""))
        if not part and isinstance(blob_id, str) and blob_id.startswith("B") and len(blob_id) <= 200:
            pk = emails.message_by_blob(self.store, account_id, head)
            if pk is not None and not self._is_upload(account_id, head):
                info = emails.get_messages(self.store, account_id, [pk], parsed=False, summary=False)[pk]
                try:
                    data = self.store.read_message(account_id, pk, start, end) if end != start else b""
                except MessageNotFound:
                    raise BlobNotFound(blob_id) from None
                return data, info.size, "message/rfc822", None
        data, ctype, name = self.read_blob(account_id, blob_id)
        return data[start:end], len(data), ctype, name

    def _is_upload(self, account_id, blob_id):
        try:
            account_data.read_upload(self.store, account_id, blob_id)
        except MessageNotFound:
            return False
        return True


@method("Blob/copy", CORE)
def blob_copy(ctx, args):
    from_acct = args.get("fromAccountId")
    if not isinstance(from_acct, str):
        raise invalid("fromAccountId is required")
    ctx.check_account(args)
    if from_acct != ctx.account_id_str:
        raise MethodError("fromAccountNotFound", f"no account {from_acct} for these credentials")
    ids = args.get("blobIds")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise invalid("blobIds must be a list of ids")
    copied, not_copied = {}, {}
    for blob_id in ids:
        try:
            ctx.backend.read_blob(ctx.account.id, blob_id)
            copied[blob_id] = blob_id
        except BlobNotFound:
            not_copied[blob_id] = {"type": "blobNotFound"}
    return {"fromAccountId": from_acct, "accountId": ctx.account_id_str,
            "copied": copied or None, "notCopied": not_copied or None}


# --- RFC 9404 blob management: Blob/upload, Blob/get, Blob/lookup ----------------------------

BLOB = "urn:ietf:params:jmap:blob"
MAX_DATA_SOURCES = 64
DIGESTS = {"sha": "sha1", "sha-256": "sha256"}
LOOKUP_TYPES = ("Mailbox", "Thread", "Email")
capability(BLOB, {}, {"maxSizeBlobSet": LIMITS["maxSizeUpload"],
                      "maxDataSources": MAX_DATA_SOURCES,
                      "supportedTypeNames": list(LOOKUP_TYPES),
                      "supportedDigestAlgorithms": list(DIGESTS)})


def _source_bytes(ctx, source):
    """The bytes of one DataSourceObject; raises ValueError(SetError)."""
    if not isinstance(source, dict) or len(source) == 0:
        raise ValueError(set_error("invalidProperties", "a data source must be an object"))
    if "data:asText" in source:
        if len(source) != 1 or not isinstance(source["data:asText"], str):
            raise ValueError(set_error("invalidProperties", "data:asText is a string"))
        return source["data:asText"].encode("utf-8")
    if "data:asBase64" in source:
        try:
            if len(source) != 1:
                raise ValueError
            return base64.b64decode(source["data:asBase64"], validate=True)
        except (ValueError, TypeError, binascii.Error):
            raise ValueError(set_error("invalidProperties", "data:asBase64 is not base64")) from None
    blob_id = ctx.resolve_id(source.get("blobId"))
    offset, length = source.get("offset") or 0, source.get("length")
    if set(source) - {"blobId", "offset", "length"} or not isinstance(offset, int) or offset < 0 \
            or (length is not None and (not isinstance(length, int) or length < 0)):
        raise ValueError(set_error("invalidProperties", "blobId, offset and length only"))
    try:
        data = ctx.backend.blob_bytes(ctx.account.id, blob_id)
    except BlobNotFound:
        raise ValueError(set_error("blobNotFound", f"no blob {blob_id}",
                                   notFound=[str(blob_id)])) from None
    end = len(data) if length is None else offset + length
    if end > len(data):
        raise ValueError(set_error("invalidProperties", "the range goes past the end of the blob"))
    return data[offset:end]


@method("Blob/upload", BLOB)
def blob_upload(ctx, args):
    ctx.check_account(args)
    create = args.get("create")
    if not isinstance(create, dict) or not all(isinstance(v, dict) for v in create.values()):
        raise invalid("create must map creation ids to BlobUploadObjects")
    if len(create) > LIMITS["maxObjectsInSet"]:
        raise MethodError("requestTooLarge", f"more than {LIMITS['maxObjectsInSet']} blobs")
    created, not_created = {}, {}
    for cid, obj in create.items():
        sources, ctype = obj.get("data"), obj.get("type")
        if not isinstance(sources, list) or not sources or len(sources) > MAX_DATA_SOURCES \
                or (ctype is not None and not isinstance(ctype, str)):
            not_created[cid] = set_error("invalidProperties",
                                         f"data is a list of 1-{MAX_DATA_SOURCES} data sources",
                                         properties=["data"])
            continue
        parts, size = [], 0
        try:
            for source in sources:      # stop at the limit, not after reading every source
                parts.append(_source_bytes(ctx, source))
                size += len(parts[-1])
                if size > LIMITS["maxSizeUpload"]:
                    raise ValueError(set_error("tooLarge", "the blob is larger than maxSizeBlobSet"))
        except ValueError as exc:
            not_created[cid] = exc.args[0]
            continue
        data = b"".join(parts)
        del parts
        ctype = (ctype or "application/octet-stream")[:255]
        blob_id = account_data.save_upload(ctx.store, ctx.account.id, data, ctype)
        ctx.created[cid] = blob_id
        created[cid] = {"id": blob_id, "type": ctype, "size": len(data)}
    return {"accountId": ctx.account_id_str, "created": created or None,
            "notCreated": not_created or None}


@method("Blob/get", BLOB)
def blob_get(ctx, args):
    ctx.check_account(args)
    ids = ids_arg(ctx, args, required=True)
    props = args.get("properties") or ["data", "size"]
    if not isinstance(props, list) or not all(
            isinstance(p, str) and (p in ("data", "data:asText", "data:asBase64", "size")
                                    or p.removeprefix("digest:") in DIGESTS) for p in props):
        raise invalid("properties: data, data:asText, data:asBase64, size, digest:<alg>")
    offset = uint_arg(args, "offset", 0)
    length = uint_arg(args, "length", None)
    found, missing = [], []
    # Only the requested range is read (just the size when only "size" is asked).
    end = offset if props == ["size"] else (offset + length if length is not None else None)
    for blob_id in ids:
        try:
            part, size, _ctype, _name = ctx.backend.blob_range(ctx.account.id, blob_id, offset, end)
        except BlobNotFound:
            missing.append(blob_id)
            continue
        item = {"id": blob_id}
        if length is not None and offset + length > size or offset > size:
            item["isTruncated"] = True
        for p in props:
            if p == "size":
                item["size"] = size
            elif p.startswith("digest:"):
                item[p] = base64.b64encode(
                    hashlib.new(DIGESTS[p[7:]], part).digest()).decode()
            else:
                try:
                    text = part.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
                if p == "data:asBase64" or (p == "data" and text is None):
                    item["data:asBase64"] = base64.b64encode(part).decode()
                else:
                    item["data:asText"] = text
                    if text is None:
                        item["isEncodingProblem"] = True
        found.append(item)
        ctx.spend(item)
    return {"accountId": ctx.account_id_str, "list": found, "notFound": missing}


@method("Blob/lookup", BLOB)
def blob_lookup(ctx, args):
    ctx.check_account(args)
    types = args.get("typeNames")
    if not isinstance(types, list) or not all(t in LOOKUP_TYPES for t in types):
        raise MethodError("unknownDataType", f"typeNames may name {', '.join(LOOKUP_TYPES)}")
    ids = ids_arg(ctx, args, required=True)
    out = []
    for blob_id in ids:
        matched = {t: [] for t in types}
        head = blob_id.partition("_")[0] if isinstance(blob_id, str) else None
        pk = emails.message_by_blob(ctx.store, ctx.account.id, head) if head else None
        if pk is not None:
            info = emails.get_messages(ctx.store, ctx.account.id, [pk], parsed=False,
                                       summary=False).get(pk)
            if info is not None:
                if "Email" in matched:
                    matched["Email"] = [f"E{pk}"]
                if "Thread" in matched:
                    matched["Thread"] = [f"T{info.thread_id}"]
                if "Mailbox" in matched:
                    matched["Mailbox"] = [f"M{m.mailbox_id}" for m in info.memberships]
        out.append({"id": blob_id, "matchedIds": matched})
    return {"accountId": ctx.account_id_str, "list": out, "notFound": []}
