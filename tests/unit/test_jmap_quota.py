"""JMAP Quota (RFC 9425) over the account's storage quota."""

from roost.protocols.jmap import core
from roost.protocols.jmap.blobs import Backend
from roost.storage.delivery import Delivery
from roost.storage.model import email_oid, mailbox_oid
from roost.storage.store import Store

from tests.conftest import append
from tests.jmap_helpers import process_call

USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:quota"]
MESSAGE = b"From: a@example.org\r\nSubject: q\r\nMessage-ID: <%d@x>\r\n\r\nbody\r\n"


def call(backend, acct, name, **args):
    resp = process_call(USING, backend, acct, name, **args)
    assert resp[0] == name, resp
    return resp[1]


def test_quota_get_changes_and_query():
    store = Store.memory()
    delivery = Delivery(store)
    try:
        acct = store.add_account("a@example.org", quota_bytes=10_000)
        free = store.add_account("free@example.org")
        backend = Backend(store, delivery)
        got = call(backend, acct, "Quota/get", ids=None)
        (q,) = got["list"]
        assert q["resourceType"] == "octets" and q["scope"] == "account"
        assert q["used"] == 0 and q["hardLimit"] == 10_000 and q["types"] == ["Mail"]
        state = got["state"]
        assert call(backend, acct, "Quota/changes", sinceState=state)["updated"] == []
        append(delivery, acct, store.mailbox(acct.id, "INBOX"), MESSAGE % 1)
        ch = call(backend, acct, "Quota/changes", sinceState=state)
        assert ch["updated"] == [q["id"]] and ch["updatedProperties"] == ["used"]
        assert call(backend, acct, "Quota/get", ids=[q["id"]])["list"][0]["used"] > 0
        assert call(backend, acct, "Quota/query", filter={"type": "Mail"})["ids"] == [q["id"]]
        assert call(backend, acct, "Quota/query", filter={"scope": "domain"})["ids"] == []
        assert call(backend, free, "Quota/get", ids=[q["id"]])["notFound"] == [q["id"]]
        store.set_quota("free@example.org", 500)
        free = store.account("free@example.org")
        assert len(call(backend, free, "Quota/get", ids=None)["list"]) == 1
        (resp,) = core.process(backend, acct, {"using": USING, "methodCalls": [
            ["Quota/changes", {"accountId": f"A{acct.id}", "sinceState": "nonsense"}, "0"]]}
        )["methodResponses"]
        assert resp[1]["type"] == "cannotCalculateChanges"
    finally:
        delivery.close()
        store.close()


def test_message_count_quota():
    """The message limit is a ``count`` quota next to the storage one; a copy
    into a second mailbox counts (RFC 9208 MESSAGE), and going over the
    limit with Email/set mailboxIds is ``overQuota`` and changes nothing."""
    store = Store.memory()
    delivery = Delivery(store)
    mail = USING + ["urn:ietf:params:jmap:mail"]
    try:
        acct = store.add_account("c@example.org")
        backend = Backend(store, delivery)
        state = call(backend, acct, "Quota/get", ids=None)["state"]
        store.set_limits(acct.address, messages=2)
        ch = call(backend, acct, "Quota/changes", sinceState=state)
        assert ch["created"] == ["Qcount"] and ch["updated"] == [] and ch["destroyed"] == []
        inbox, archive, trash = (store.mailbox(acct.id, n) for n in ("INBOX", "Archive", "Trash"))
        eid = email_oid(append(delivery, acct, inbox, MESSAGE % 1).message_id)
        got = call(backend, acct, "Quota/get", ids=["Qcount", "Qoctets"])
        (q,) = got["list"]
        assert got["notFound"] == ["Qoctets"]
        assert (q["resourceType"], q["used"], q["hardLimit"], q["scope"]) == ("count", 1, 2, "account")
        state = got["state"]
        out = process_call(mail, backend, acct, "Email/set",
                           update={eid: {f"mailboxIds/{mailbox_oid(archive.id)}": True}})[1]
        assert list(out["updated"]) == [eid]
        ch = call(backend, acct, "Quota/changes", sinceState=state)
        assert ch["updated"] == ["Qcount"] and ch["updatedProperties"] == ["used"]
        out = process_call(mail, backend, acct, "Email/set",
                           update={eid: {f"mailboxIds/{mailbox_oid(trash.id)}": True}})[1]
        assert out["notUpdated"][eid]["type"] == "overQuota"
        assert store.uids(trash.id) == []
        # Moving (one in, one out) is not refused.
        out = process_call(mail, backend, acct, "Email/set", update={eid: {
            f"mailboxIds/{mailbox_oid(trash.id)}": True, f"mailboxIds/{mailbox_oid(archive.id)}": None}})[1]
        assert list(out["updated"]) == [eid] and len(store.uids(trash.id)) == 1
        state = call(backend, acct, "Quota/get", ids=None)["state"]
        store.set_limits(acct.address, messages=None)
        assert call(backend, acct, "Quota/changes", sinceState=state)["destroyed"] == ["Qcount"]
    finally:
        delivery.close()
        store.close()
