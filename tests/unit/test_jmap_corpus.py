"""Every message of the shared corpus through JMAP: imported, then read with
every Email property, body value and header form, and parsed as a blob;
nothing may fail the server, and the views must agree with the bytes."""

import pathlib

import pytest

from roost.protocols.jmap import core
from roost.protocols.jmap.blobs import Backend
from roost.storage import account_data
from roost.storage.delivery import Delivery
from roost.storage.store import Store

CORPUS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "corpus"
FILES = sorted(CORPUS.rglob("*.eml")) if CORPUS.exists() else []
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
PROPS = ["id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "messageId",
         "inReplyTo", "references", "sender", "from", "to", "cc", "bcc", "replyTo", "subject",
         "sentAt", "hasAttachment", "preview", "headers", "bodyStructure", "bodyValues",
         "textBody", "htmlBody", "attachments", "header:Subject:asText",
         "header:From:asGroupedAddresses", "header:Date:asDate", "header:References:asMessageIds",
         "header:List-Unsubscribe:asURLs:all", "header:Received:all"]
BODY_PROPS = ["partId", "blobId", "size", "headers", "name", "type", "charset", "disposition",
              "cid", "language", "location", "subParts", "header:Content-Type:asRaw"]


@pytest.fixture(scope="module")
def world():
    if not FILES:
        pytest.skip(f"the shared corpus is not at {CORPUS}")
    store = Store.memory()
    delivery = Delivery(store)
    acct = store.add_account("corpus@example.org")
    yield Backend(store, delivery), acct
    delivery.close()
    store.close()


def call(backend, acct, name, args):
    args = dict(args, accountId=f"A{acct.id}")
    (resp,) = core.process(backend, acct, {"using": USING,
                                           "methodCalls": [[name, args, "0"]]})["methodResponses"]
    assert resp[0] == name, resp
    return resp[1]


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(CORPUS)) for p in FILES])
def test_corpus_message_through_jmap(world, path):
    backend, acct = world
    data = path.read_bytes()
    blob = account_data.save_upload(backend.store, acct.id, data, "message/rfc822")
    inbox = backend.store.mailbox(acct.id, "INBOX").oid
    res = call(backend, acct, "Email/import",
               {"emails": {"k": {"blobId": blob, "mailboxIds": {inbox: True}}}})
    eid = res["created"]["k"]["id"]
    got = call(backend, acct, "Email/get", {"ids": [eid], "properties": PROPS,
                                            "bodyProperties": BODY_PROPS,
                                            "fetchAllBodyValues": True,
                                            "maxBodyValueBytes": 4096})
    (email,) = got["list"]
    assert email["size"] == len(data) and email["blobId"] == blob
    leaves = []

    def walk(part):
        assert part["type"] and "/" in part["type"]
        if part["type"].startswith("multipart/"):
            assert part["partId"] is None and part["subParts"] is not None
            for sub in part["subParts"]:
                walk(sub)
        else:
            leaves.append(part)
    walk(email["bodyStructure"])
    ids = {p["partId"] for p in leaves}
    for key in ("textBody", "htmlBody", "attachments"):
        assert {p["partId"] for p in email[key]} <= ids
    for pid, value in email["bodyValues"].items():
        assert pid in ids and len(value["value"].encode()) <= 4096
    # a part's blob is its decoded content, whose length is the part's size
    for part in leaves[:3]:
        content = backend.blob_bytes(acct.id, part["blobId"])
        assert len(content) == part["size"]
    parsed = call(backend, acct, "Email/parse", {"blobIds": [blob], "properties": PROPS[1:],
                                                 "bodyProperties": BODY_PROPS})
    same = parsed["parsed"][blob]
    for key in ("subject", "from", "to", "sentAt", "hasAttachment", "preview", "bodyStructure"):
        assert same[key] == email[key], key
    call(backend, acct, "Email/set", {"destroy": [eid]})
