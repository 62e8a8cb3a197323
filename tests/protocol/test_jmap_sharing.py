"""Shared accounts over JMAP (RFC 8620 1.6.2, RFC 8621 myRights) from the
grants IMAP's SETACL makes, against a real ``roost serve``: what a grant
shows, what stays hidden, and that a revocation takes it all back."""

import pytest

from tests.imap_helpers import Wire, _close_connections  # noqa: F401 - _close_connections is a fixture
from tests.jmap_helpers import ALICE, BOB, PASSWORDS, Client, fixtures, lmtp_deliver, message

server, alice, bob = fixtures("jmapshare", listeners=("jmap", "lmtp", "imap"))


def imap(server, user):
    w = Wire(server.ports["imap"])
    w.login(user, PASSWORDS[user])
    return w


def ok(lines):
    assert lines[-1].split(b" ")[1] == b"OK", lines
    return lines


def find(client, subject, account=None):
    args = {"filter": {"subject": subject}}
    if account:
        args["accountId"] = account
    return client.ok("Email/query", args)["ids"]


def test_grant_shows_a_shared_account_and_revoke_hides_it(server, alice):
    owner = imap(server, ALICE)
    ok(owner.cmd("a1 CREATE Projects"))
    data = message("shared plan")
    owner.send(f"a2 APPEND Projects {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    ok(owner.until("a2"))
    assert lmtp_deliver(server.ports["lmtp"], ALICE, message("private inbox"))[-1].startswith(b"250")
    before = Client(server, BOB)
    assert list(before.session["accounts"]) == [before.account]
    alice_id = alice.account
    assert before.call("Mailbox/get", accountId=alice_id)[1]["type"] == "accountNotFound"

    state = before.session["state"]
    ok(owner.cmd(f"a3 SETACL Projects {BOB} lrs"))
    shared = alice.ok("Mailbox/get")["list"]
    projects = next(b for b in shared if b["name"] == "Projects")
    assert projects["shareWith"] == {BOB: {
        "mayReadItems": True, "mayAddItems": False, "mayRemoveItems": False, "maySetSeen": True,
        "maySetKeywords": False, "mayCreateChild": False, "mayRename": False, "mayDelete": False,
        "maySubmit": False}}
    assert all(b["shareWith"] is None for b in shared if b["name"] != "Projects")

    b = Client(server, BOB)
    try:
        assert b.session["state"] != state       # RFC 8620 2: the session changed
        assert b.request(["Core/echo", {}, "e"]) and \
            b.post({"using": ["urn:ietf:params:jmap:core"], "methodCalls": []}).json()["sessionState"] \
            == b.session["state"]
        entry = b.session["accounts"][alice_id]
        assert entry["isPersonal"] is False and entry["name"] == ALICE and entry["isReadOnly"] is False
        assert list(entry["accountCapabilities"]) == ["urn:ietf:params:jmap:mail"]
        assert b.session["primaryAccounts"]["urn:ietf:params:jmap:mail"] == b.account
        got = b.ok("Mailbox/get", accountId=alice_id)
        assert [m["id"] for m in got["list"]] == [projects["id"]]
        rights = got["list"][0]["myRights"]
        assert rights["mayReadItems"] and rights["maySetSeen"] and not rights["mayAddItems"]
        inbox = alice.mailbox("inbox")
        assert b.ok("Mailbox/get", accountId=alice_id, ids=[inbox])["notFound"] == [inbox]
        assert b.ok("Mailbox/query", accountId=alice_id)["ids"] == [projects["id"]]
        (plan,) = find(b, "shared plan", alice_id)
        assert find(b, "private inbox", alice_id) == []
        assert b.ok("Email/query", accountId=alice_id)["ids"] == [plan]
        private = find(alice, "private inbox")
        res = b.ok("Email/get", accountId=alice_id, ids=[plan] + private,
                   properties=["subject", "mailboxIds"])
        assert [(e["subject"], e["mailboxIds"]) for e in res["list"]] == [("shared plan", {projects["id"]: True})]
        assert res["notFound"] == private
        # Nothing of this is in bob's own account, and writes are not offered.
        assert find(b, "shared plan") == []
        assert b.ok("Email/get", ids=[plan])["notFound"] == [plan]
        # lrs: $seen may change, other keywords may not; nothing is created or destroyed.
        res = b.ok("Email/set", accountId=alice_id, update={
            plan: {"keywords/$seen": True}, private[0]: {"keywords/$seen": True}})
        assert list(res["updated"]) == [plan] and res["notUpdated"][private[0]]["type"] == "notFound"
        assert alice.ok("Email/get", ids=[plan], properties=["keywords"])["list"][0]["keywords"] == {"$seen": True}
        res = b.ok("Email/set", accountId=alice_id, update={plan: {"keywords/$flagged": True}},
                   destroy=[plan], create={"x": {"mailboxIds": {projects["id"]: True}, "subject": "x"}})
        assert res["notUpdated"][plan]["type"] == "forbidden"
        assert res["notDestroyed"][plan]["type"] == "forbidden" and res["notCreated"]["x"]["type"] == "forbidden"
        assert b.ok("Email/set", accountId=alice_id, update={plan: {"mailboxIds": {inbox: True}}}
                    )["notUpdated"][plan]["type"] == "forbidden"
        assert alice.ok("Email/get", ids=[plan], properties=["keywords", "mailboxIds"])["list"][0] == \
            {"id": plan, "keywords": {"$seen": True}, "mailboxIds": {projects["id"]: True}}
        for name, args in (("Mailbox/set", {"destroy": [projects["id"]]}), ("Identity/get", {}),
                           ("SearchSnippet/get", {"emailIds": [plan]})):
            assert b.call(name, dict(args, accountId=alice_id))[1]["type"] == "accountNotSupportedByMethod"
        for name in ("Email/changes", "Mailbox/changes", "Thread/changes"):
            assert b.call(name, accountId=alice_id, sinceState="0")[1]["type"] == "cannotCalculateChanges"
        # Threads: only what bob may read of them.
        (mine,) = alice.ok("Email/get", ids=[plan], properties=["threadId"])["list"]
        (hidden,) = alice.ok("Email/get", ids=private, properties=["threadId"])["list"]
        got = b.ok("Thread/get", accountId=alice_id, ids=[mine["threadId"], hidden["threadId"]])
        assert got["list"] == [{"id": mine["threadId"], "emailIds": [plan]}]
        assert got["notFound"] == [hidden["threadId"]]
    finally:
        b.close()

    ok(owner.cmd(f"a4 DELETEACL Projects {BOB}"))
    after = Client(server, BOB)
    try:
        assert list(after.session["accounts"]) == [after.account]
        assert after.session["state"] == state
        before.close()
        for name in ("Mailbox/get", "Email/query"):
            assert after.call(name, accountId=alice_id)[1]["type"] == "accountNotFound"
        assert after.call("Email/get", accountId=alice_id, ids=[plan])[1]["type"] == "accountNotFound"
    finally:
        after.close()
    assert next(m for m in alice.ok("Mailbox/get")["list"] if m["name"] == "Projects")["shareWith"] is None


def test_anyone_grant_and_a_grant_without_lookup(server, alice, bob):
    owner = imap(server, ALICE)
    ok(owner.cmd("b1 CREATE Notices"))
    ok(owner.cmd("b2 SETACL Notices anyone r"))        # read, but no lookup: not listed
    b = Client(server, BOB)
    try:
        assert b.ok("Mailbox/get", accountId=alice.account)["list"] == []
        assert b.session["accounts"][alice.account]["isReadOnly"] is True
    finally:
        b.close()
        ok(owner.cmd("b3 DELETE Notices"))


@pytest.mark.parametrize("name", ["Mailbox/get", "Email/query", "Email/get"])
def test_an_unknown_account_is_not_found(bob, name):
    assert bob.call(name, accountId="A999999", ids=[])[1]["type"] == "accountNotFound"


def test_share_and_unshare_through_mailbox_set(server, alice):
    res = alice.ok("Mailbox/set", create={
        "s": {"name": "JShared", "shareWith": {BOB: {"mayReadItems": True, "maySetSeen": True}}},
        "bad": {"name": "JBad", "shareWith": {"nobody@example.org": {"mayReadItems": True}}},
        "own": {"name": "JOwn", "shareWith": {ALICE: {"mayReadItems": True}}}})
    box = res["created"]["s"]["id"]
    assert res["notCreated"]["bad"]["type"] == "invalidProperties"
    assert res["notCreated"]["own"]["type"] == "invalidProperties"
    assert {m["name"] for m in alice.ok("Mailbox/get")["list"]} & {"JBad", "JOwn"} == set()
    owner = imap(server, ALICE)
    assert ok(owner.cmd("g1 GETACL JShared"))[0] == f"* ACL JShared {ALICE} lrswipkxteacd {BOB} lrs".encode()
    b = Client(server, BOB)
    try:
        (got,) = b.ok("Mailbox/get", accountId=alice.account)["list"]
        assert got["id"] == box and got["myRights"]["maySetSeen"] and not got["myRights"]["maySetKeywords"]
    finally:
        b.close()
    res = alice.ok("Mailbox/set", update={box: {f"shareWith/{BOB}": {"mayReadItems": True, "mayAddItems": True}}})
    assert box in res["updated"]
    assert ok(owner.cmd("g2 GETACL JShared"))[0].endswith(f"{BOB} lri".encode())
    res = alice.ok("Mailbox/set", update={box: {"shareWith/anyone": {"mayRename": 1}}})
    assert res["notUpdated"][box]["type"] == "invalidProperties"
    alice.ok("Mailbox/set", update={box: {"shareWith": None}})
    assert ok(owner.cmd("g3 GETACL JShared"))[0] == f"* ACL JShared {ALICE} lrswipkxteacd".encode()
    b = Client(server, BOB)
    try:
        assert alice.account not in b.session["accounts"]
    finally:
        b.close()
    alice.ok("Mailbox/set", destroy=[box])
