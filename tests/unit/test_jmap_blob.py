"""JMAP blob management (RFC 9404): Blob/upload from data sources and ranges
of other blobs, Blob/get with ranges and digests, Blob/lookup."""

import base64
import hashlib

from roost.protocols.jmap import core
from roost.protocols.jmap.blobs import Backend
from roost.storage.delivery import Delivery
from roost.storage.store import Store

from tests.conftest import append

USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:blob"]
MESSAGE = b"From: a@example.org\r\nSubject: b\r\nMessage-ID: <b@x>\r\n\r\nbody\r\n"


def run(backend, acct, *calls):
    a = f"A{acct.id}"
    return core.process(backend, acct, {"using": USING, "methodCalls": [
        [n, dict(args, accountId=a), str(i)] for i, (n, args) in enumerate(calls)]}
    )["methodResponses"]


def test_upload_get_and_lookup():
    store = Store.memory()
    delivery = Delivery(store)
    try:
        acct = store.add_account("a@example.org")
        other = store.add_account("b@example.org")
        backend = Backend(store, delivery)
        out = run(backend, acct,
                  ("Blob/upload", {"create": {
                      "w": {"data": [{"data:asText": "abcdefghij"}], "type": "text/plain"},
                      "p": {"data": [{"blobId": "#w", "offset": 2, "length": 3},
                                     {"data:asBase64": base64.b64encode(b"\xff").decode()}]},
                      "bad": {"data": [{"blobId": "#w", "offset": 8, "length": 5}]},
                      "nob": {"data": [{"blobId": "Bnope"}]},
                      "b64": {"data": [{"data:asBase64": "!!"}]}}}),
                  ("Blob/get", {"ids": ["#w", "#p", "Bnope"],
                                "properties": ["data", "size", "digest:sha-256"]}),
                  ("Blob/get", {"ids": ["#w"], "properties": ["data:asText"], "offset": 8,
                                "length": 5}))
        up = out[0][1]
        assert up["created"]["w"]["size"] == 10 and up["created"]["p"]["size"] == 4
        assert up["notCreated"]["bad"]["type"] == "invalidProperties"
        assert up["notCreated"]["nob"]["type"] == "blobNotFound"
        assert up["notCreated"]["b64"]["type"] == "invalidProperties"
        w, p = out[1][1]["list"]
        assert w["data:asText"] == "abcdefghij" and w["size"] == 10
        assert w["digest:sha-256"] == base64.b64encode(hashlib.sha256(b"abcdefghij").digest()).decode()
        assert base64.b64decode(p["data:asBase64"]) == b"cde\xff"
        assert out[1][1]["notFound"] == ["Bnope"]
        (tail,) = out[2][1]["list"]
        assert tail["data:asText"] == "ij" and tail["isTruncated"] is True
        # the other account sees none of it
        got = run(backend, other, ("Blob/get", {"ids": [w["id"]]}))[0][1]
        assert got["notFound"] == [w["id"]]

        stored = append(delivery, acct, store.mailbox(acct.id, "INBOX"), MESSAGE)
        blob = emails_blob(store, acct.id, stored.message_id)
        look = run(backend, acct, ("Blob/lookup", {"typeNames": ["Email", "Mailbox", "Thread"],
                                                   "ids": [blob, "Bnope"]}))[0][1]["list"]
        assert look[0]["matchedIds"]["Email"] == [f"E{stored.message_id}"]
        assert look[0]["matchedIds"]["Mailbox"] == [f"M{stored.mailbox_id}"]
        assert len(look[0]["matchedIds"]["Thread"]) == 1
        assert look[1]["matchedIds"] == {"Email": [], "Mailbox": [], "Thread": []}
        hidden = run(backend, other, ("Blob/lookup", {"typeNames": ["Email"], "ids": [blob]}))
        assert hidden[0][1]["list"][0]["matchedIds"] == {"Email": []}
        err = run(backend, acct, ("Blob/lookup", {"typeNames": ["Calendar"], "ids": [blob]}))
        assert err[0][1]["type"] == "unknownDataType"
    finally:
        delivery.close()
        store.close()


def emails_blob(store, account_id, message_pk):
    from roost.storage import emails
    return emails.get_messages(store, account_id, [message_pk])[message_pk].blob_id
