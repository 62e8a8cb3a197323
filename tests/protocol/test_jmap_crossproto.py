"""IMAP, LMTP and JMAP on one store: a change made through one protocol shows
up through the others at once (APPEND -> Email/changes, JMAP keywords ->
IMAP FETCH FLAGS and IDLE, IMAP STORE/EXPUNGE -> JMAP changes)."""

import pytest

from tests.jmap_helpers import ALICE, PASSWORDS, fixtures, lmtp_deliver, message

imapclient = pytest.importorskip("imapclient")
pytest.importorskip("roost.protocols.imap", reason="the IMAP server is not part of this build")


server, alice, bob = fixtures("jmapcross", listeners=("jmap", "lmtp", "imap"))


@pytest.fixture
def imap(server):
    client = imapclient.IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=20)
    client.login(ALICE, PASSWORDS[ALICE])
    yield client
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - the server may have closed it already
        pass


def test_imap_append_shows_in_email_changes_with_the_same_id(alice, imap):
    state = alice.ok("Email/get", ids=[])["state"]
    imap.append("INBOX", message("appended over imap"))
    ch = alice.ok("Email/changes", sinceState=state)
    assert len(ch["created"]) == 1
    eid = ch["created"][0]
    e = alice.ok("Email/get", ids=[eid], properties=["subject", "mailboxIds"])["list"][0]
    assert e["subject"] == "appended over imap"
    assert e["mailboxIds"] == {alice.mailbox("inbox"): True}
    if b"OBJECTID" in imap.capabilities():
        imap.select_folder("INBOX")
        uid = imap.search(["SUBJECT", "appended over imap"])[-1]
        got = imap.fetch([uid], ["EMAILID"])[uid]
        value = got[b"EMAILID"]
        value = value[0] if isinstance(value, tuple) else value
        assert value.decode().strip("()") == eid


def test_jmap_keywords_reach_imap_fetch_and_idle(alice, imap, server):
    lmtp_deliver(server.ports["lmtp"], ALICE, message("flag me from jmap"))
    eid = alice.ok("Email/query", filter={"subject": "flag me from jmap"})["ids"][0]
    imap.select_folder("INBOX")
    uid = imap.search(["SUBJECT", "flag me from jmap"])[-1]
    imap.idle()
    try:
        alice.ok("Email/set", update={eid: {"keywords/$flagged": True, "keywords/$seen": True}})
        responses = imap.idle_check(timeout=10)
    finally:
        imap.idle_done()
    fetches = [r for r in responses if len(r) > 1 and r[1] == b"FETCH"]
    assert fetches, responses
    flags = imap.get_flags([uid])[uid]
    assert b"\\Flagged" in flags and b"\\Seen" in flags


def test_imap_store_and_expunge_show_in_jmap(alice, imap, server):
    lmtp_deliver(server.ports["lmtp"], ALICE, message("changed over imap"))
    eid = alice.ok("Email/query", filter={"subject": "changed over imap"})["ids"][0]
    state = alice.ok("Email/get", ids=[])["state"]
    imap.select_folder("INBOX")
    uid = imap.search(["SUBJECT", "changed over imap"])[-1]
    imap.add_flags([uid], [b"\\Answered", b"$Forwarded"])
    ch = alice.ok("Email/changes", sinceState=state)
    assert ch["updated"] == [eid]
    kw = alice.ok("Email/get", ids=[eid], properties=["keywords"])["list"][0]["keywords"]
    assert kw == {"$answered": True, "$forwarded": True}
    state = ch["newState"]
    imap.add_flags([uid], [b"\\Deleted"])
    imap.expunge()
    ch = alice.ok("Email/changes", sinceState=state)
    assert eid in ch["destroyed"]


def test_jmap_create_appears_in_imap(alice, imap):
    imap.select_folder("Drafts")
    before = imap.folder_status("Drafts", ["MESSAGES"])[b"MESSAGES"]
    alice.draft("drafted over jmap")
    assert imap.folder_status("Drafts", ["MESSAGES"])[b"MESSAGES"] == before + 1
    uid = imap.search(["SUBJECT", "drafted over jmap"])[-1]
    assert b"\\Draft" in imap.get_flags([uid])[uid]


def test_subscriptions_are_one_list_for_imap_and_jmap(alice, imap):
    def subscribed(name):
        boxes = alice.ok("Mailbox/get")["list"]
        return next(b["isSubscribed"] for b in boxes if b["name"] == name and b["parentId"] is None)
    imap.create_folder("Shared-list")
    assert not subscribed("Shared-list")               # IMAP CREATE subscribes nothing
    state = alice.ok("Mailbox/get", ids=[])["state"]
    imap.subscribe_folder("Shared-list")
    assert subscribed("Shared-list")
    assert alice.ok("Mailbox/changes", sinceState=state)["updated"]
    created = alice.ok("Mailbox/set", create={"k": {"name": "From-jmap"}})["created"]["k"]
    assert created["isSubscribed"] is True
    assert any(name == "From-jmap" for _f, _d, name in imap.list_sub_folders())
    alice.ok("Mailbox/set", update={created["id"]: {"isSubscribed": False}})
    assert not any(name == "From-jmap" for _f, _d, name in imap.list_sub_folders())
    imap.delete_folder("Shared-list")                    # the subscription stays
    assert any(name == "Shared-list" for _f, _d, name in imap.list_sub_folders())
