"""Blobs for JMAP: uploads, whole messages and message parts, by blob id;
``Blob/copy``; the ``Backend`` that method handlers reach the store through.

Blob ids: ``B<hash>`` is an upload or a message's bytes (the same content hash
either way); ``B<hash>_1_2`` is part 1.2 of that message, transfer-decoded.
Every lookup is scoped to one account. Blocking: call from a worker thread.
"""

import hashlib

from roost.storage import account_data, emails
from roost.storage.errors import MessageNotFound

from . import bodies
from .core import CORE, MethodError, invalid, method


class BlobNotFound(KeyError):
    pass


class Backend:
    """The store, delivery and settings a JMAP server works with."""

    def __init__(self, store, delivery, hostname="localhost", outbound=None):
        self.store = store
        self.delivery = delivery
        self.hostname = hostname
        self.outbound = outbound     # the outbound relay queue, when one exists
        self.push_changed = None     # called with an account id after its push subscriptions change

    def session_state(self, account):
        """Changes only when what the Session object says changes (account, capabilities)."""
        from .core import CAPABILITIES
        digest = hashlib.sha256(repr((account.id, account.address, sorted(CAPABILITIES))).encode())
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
