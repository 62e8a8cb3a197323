"""A data directory from the first release served by today's ``roost serve``:
the schema is upgraded at start-up (a copy of roost.db kept), and the old
account, mailboxes, flags and messages read the same over IMAP and JMAP."""

import glob

import httpx
from imapclient import IMAPClient

from tests.conftest import RoostServer
from tests.unit.test_migrations import ALICE, PASSWORD, release1_data


def test_first_release_data_served_over_imap_and_jmap(tmp_path):
    data = release1_data(tmp_path / "data")
    server = RoostServer(data, listeners=("imap", "jmap", "lmtp")).start()
    try:
        assert glob.glob(str(data / "roost.db.bak-base-*"))
        imap = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=20)
        imap.login(ALICE, PASSWORD)
        imap.select_folder("Archive")
        fetched = imap.fetch([1, 2], ["FLAGS", "BODY.PEEK[]"])
        assert set(fetched[1][b"FLAGS"]) == {b"\\Seen", b"\\Flagged"}
        assert b"Turn the compost" in fetched[1][b"BODY[]"]
        imap.select_folder("INBOX")
        assert imap.search(["BODY", "beans"]) == [2]
        imap.logout()

        with httpx.Client(auth=(ALICE, PASSWORD), follow_redirects=True, timeout=30) as http:
            session = http.get(f"http://127.0.0.1:{server.ports['jmap']}/.well-known/jmap").json()
            account = next(iter(session["accounts"]))
            calls = [["Email/query", {"accountId": account, "filter": {"text": "graines"}}, "q"],
                     ["Email/query", {"accountId": account, "filter": {"subject": "planting"},
                                      "sort": [{"property": "receivedAt"}]}, "p"],
                     ["Email/get", {"accountId": account, "#ids": {
                         "resultOf": "p", "name": "Email/query", "path": "/ids"},
                         "properties": ["threadId", "inReplyTo"]}, "t"],
                     ["Email/get", {"accountId": account, "#ids": {
                         "resultOf": "q", "name": "Email/query", "path": "/ids"},
                         "properties": ["subject", "from", "hasAttachment", "threadId"]}, "g"]]
            r = http.post(session["apiUrl"], json={
                "using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                "methodCalls": calls})
            responses = {tag: body for _name, body, tag in r.json()["methodResponses"]}
            plan, reply = responses["t"]["list"]
            assert plan["threadId"] == reply["threadId"]
            assert reply["inReplyTo"] == ["plan-1@example.net"]
            (email,) = responses["g"]["list"]
            assert email["subject"] == "\u00c9pinards et carottes"
            assert email["hasAttachment"] and email["from"][0]["email"] == "renee@example.net"
    finally:
        server.stop()
