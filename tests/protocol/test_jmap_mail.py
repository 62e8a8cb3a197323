"""JMAP Mail (RFC 8621) over HTTP against a real ``roost serve``: Mailbox,
Thread, Email, SearchSnippet, Identity, EmailSubmission, VacationResponse, and
that one account never sees or changes another's objects."""

import pathlib

import pytest

from tests.jmap_helpers import ALICE, BOB, fixtures, lmtp_deliver, message

CORPUS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "corpus"
RFC8621_EXAMPLE = CORPUS / "stalwart-mail-parser" / "rfc" / "007.eml"


server, alice, bob = fixtures("jmapmail")


def deliver(server, subject, **kw):
    reply = lmtp_deliver(server.ports["lmtp"], ALICE, message(subject, **kw))
    assert reply[-1].startswith(b"250"), reply


def find(alice, subject):
    ids = alice.ok("Email/query", filter={"subject": subject})["ids"]
    assert len(ids) == 1, ids
    return ids[0]


# --- Mailbox ------------------------------------------------------------------------

def test_mailboxes_have_roles_rights_and_counts(alice, server):
    deliver(server, "count me")
    boxes = {b["role"]: b for b in alice.ok("Mailbox/get")["list"]}
    assert {"inbox", "drafts", "sent", "trash", "junk", "archive"} <= set(boxes)
    inbox = boxes["inbox"]
    assert inbox["totalEmails"] >= 1 and inbox["unreadEmails"] >= 1
    assert inbox["totalThreads"] >= 1 and inbox["unreadThreads"] >= 1
    assert inbox["myRights"]["mayReadItems"] and not inbox["myRights"]["mayDelete"]


def test_mailbox_create_rename_move_and_destroy(alice):
    state = alice.ok("Mailbox/get", ids=[])["state"]
    res = alice.ok("Mailbox/set", create={"a": {"name": "Projects"},
                                          "b": {"name": "Roost", "parentId": "#a"}})
    a, b = res["created"]["a"]["id"], res["created"]["b"]["id"]
    ch = alice.ok("Mailbox/changes", sinceState=state)
    assert set(ch["created"]) == {a, b}
    res = alice.ok("Mailbox/set", update={b: {"name": "Nest", "parentId": None}})
    assert b in res["updated"]
    got = {m["id"]: m for m in alice.ok("Mailbox/get", ids=[a, b])["list"]}
    assert got[b]["name"] == "Nest" and got[b]["parentId"] is None
    res = alice.ok("Mailbox/set", update={b: {"parentId": a}})
    assert alice.ok("Mailbox/get", ids=[b])["list"][0]["parentId"] == a
    res = alice.ok("Mailbox/set", destroy=[a])
    assert res["notDestroyed"][a]["type"] == "mailboxHasChild"
    res = alice.ok("Mailbox/set", update={a: {"role": "flagged", "sortOrder": 7},
                                          b: {"role": "inbox"}})
    assert a in res["updated"] and res["notUpdated"][b]["type"] == "forbidden"
    got = alice.ok("Mailbox/get", ids=[a])["list"][0]
    assert got["role"] == "flagged" and got["sortOrder"] == 7
    alice.ok("Mailbox/set", update={a: {"role": None}})
    assert alice.ok("Mailbox/get", ids=[a])["list"][0]["role"] is None
    assert alice.ok("Mailbox/set", destroy=[b, a])["destroyed"] == [b, a]


def test_mailbox_set_errors(alice):
    res = alice.ok("Mailbox/set", create={
        "dup": {"name": "INBOX"}, "slash": {"name": "a/b"}, "empty": {"name": ""},
        "role": {"name": "X", "role": "nonsense"}, "parent": {"name": "Y", "parentId": "M999999"},
        "count": {"name": "Z", "totalEmails": 3}})
    assert set(res["notCreated"]) == {"dup", "slash", "empty", "role", "parent", "count"}
    assert all(e["type"] == "invalidProperties" for e in res["notCreated"].values())
    res = alice.ok("Mailbox/set", update={"M999999": {"name": "x"}}, destroy=["M999999"])
    assert res["notUpdated"]["M999999"]["type"] == "notFound"
    assert res["notDestroyed"]["M999999"]["type"] == "notFound"


def test_destroy_mailbox_with_email_needs_on_destroy_remove_emails(alice):
    box = alice.ok("Mailbox/set", create={"x": {"name": "Doomed"}})["created"]["x"]["id"]
    only = alice.draft("only here", mailbox=box)
    both = alice.draft("also elsewhere", mailbox=box)
    alice.ok("Email/set", update={both: {f"mailboxIds/{alice.mailbox('archive')}": True}})
    res = alice.ok("Mailbox/set", destroy=[box])
    assert res["notDestroyed"][box]["type"] == "mailboxHasEmail"
    res = alice.ok("Mailbox/set", destroy=[box], onDestroyRemoveEmails=True)
    assert res["destroyed"] == [box]
    got = alice.ok("Email/get", ids=[only, both], properties=["mailboxIds"])
    assert got["notFound"] == [only]
    assert got["list"][0]["mailboxIds"] == {alice.mailbox("archive"): True}


def test_mailbox_query_filters_sorts_and_tree(alice):
    res = alice.ok("Mailbox/set", create={"p": {"name": "Zeta"}, "c": {"name": "Alpha", "parentId": "#p"}})
    p, c = res["created"]["p"]["id"], res["created"]["c"]["id"]
    q = alice.ok("Mailbox/query", filter={"parentId": p})
    assert q["ids"] == [c]
    q = alice.ok("Mailbox/query", filter={"hasAnyRole": True}, sort=[{"property": "name"}])
    assert len(q["ids"]) == 6
    q = alice.ok("Mailbox/query", sortAsTree=True, sort=[{"property": "name"}], calculateTotal=True)
    assert q["ids"].index(p) + 1 == q["ids"].index(c) and q["total"] == len(q["ids"])
    state = q["queryState"]
    alice.ok("Mailbox/set", destroy=[c])
    qc = alice.ok("Mailbox/queryChanges", sinceQueryState=state, sortAsTree=True,
                  sort=[{"property": "name"}])
    assert c in qc["removed"]
    name, err = alice.call("Mailbox/query", sort=[{"property": "color"}])
    assert err["type"] == "unsupportedSort"
    alice.ok("Mailbox/set", destroy=[p])


# --- Email/get -------------------------------------------------------------------------

def test_email_get_summary_properties(alice, server):
    deliver(server, "Summary test", body="first words of the body",
            extra=b"Cc: \"Carol C\" <carol@example.org>\r\n")
    eid = find(alice, "Summary test")
    e = alice.ok("Email/get", ids=[eid])["list"][0]
    assert e["subject"] == "Summary test"
    assert e["from"] == [{"name": "Sender", "email": "sender@example.net"}]
    assert e["cc"] == [{"name": "Carol C", "email": "carol@example.org"}]
    assert e["preview"].startswith("first words")
    assert e["keywords"] == {} and e["mailboxIds"] == {alice.mailbox("inbox"): True}
    assert e["sentAt"] == "2026-11-23T10:00:00Z" and e["receivedAt"].endswith("Z")
    assert e["threadId"].startswith("T") and e["blobId"].startswith("B")
    assert e["hasAttachment"] is False and e["size"] > 0
    assert e["messageId"][0].endswith("@example.net")
    assert e["textBody"][0]["type"] == "text/plain" and e["htmlBody"][0]["partId"] == "1"


def test_message_blob_ranges_over_http_and_blob_get(alice, server):
    deliver(server, "Ranged download", body="0123456789" * 50)
    eid = find(alice, "Ranged download")
    e = alice.ok("Email/get", ids=[eid], properties=["blobId", "size"])["list"][0]
    url = (alice.session["downloadUrl"].replace("{accountId}", alice.account)
           .replace("{blobId}", e["blobId"]).replace("{name}", "m.eml").replace("{type}", "message/rfc822"))
    whole = alice.http.get(url)
    assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
    raw = whole.content
    assert len(raw) == e["size"]
    part = alice.http.get(url, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == raw[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(raw)}"
    tail = alice.http.get(url, headers={"Range": "bytes=-7"})
    assert tail.status_code == 206 and tail.content == raw[-7:]
    rest = alice.http.get(url, headers={"Range": f"bytes={len(raw) - 5}-"})
    assert rest.content == raw[-5:] and rest.headers["content-range"].endswith(f"/{len(raw)}")
    past = alice.http.get(url, headers={"Range": f"bytes={len(raw)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(raw)}"
    several = alice.http.get(url, headers={"Range": "bytes=0-1,5-6"})   # ignored: the whole blob
    assert several.status_code == 200 and several.content == raw
    ((name, res, _c),) = alice.request(
        ["Blob/get", {"accountId": alice.account, "ids": [e["blobId"]], "offset": 3, "length": 4,
                      "properties": ["data:asText", "size"]}, "c"],
        using=["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:blob"])
    assert name == "Blob/get", res
    got = res["list"][0]
    assert got["data:asText"] == raw[3:7].decode() and got["size"] == len(raw)
    assert "isTruncated" not in got


def test_email_get_body_values_headers_and_forms(alice, server):
    deliver(server, "=?utf-8?q?Caf=C3=A9?= forms", body="x" * 50,
            extra=b"List-Post: <mailto:list@example.org>\r\nX-Multi: one\r\nX-Multi:  two\r\n"
                  b"To: Group: a@example.org, b@example.org;\r\n")
    eid = find(alice, "Café forms")
    e = alice.ok("Email/get", ids=[eid], fetchTextBodyValues=True, maxBodyValueBytes=10,
                 properties=["subject", "headers", "bodyValues", "textBody",
                             "header:Subject", "header:Subject:asText", "header:X-Multi:all",
                             "header:List-Post:asURLs", "header:Message-ID:asMessageIds",
                             "header:Date:asDate", "header:To:asGroupedAddresses",
                             "header:From:asAddresses", "header:X-None"],
                 bodyProperties=["partId", "size", "type", "charset", "header:Content-Type"])["list"][0]
    assert e["subject"] == "Café forms"
    assert e["header:Subject"] == " =?utf-8?q?Caf=C3=A9?= forms"
    assert e["header:Subject:asText"] == "Café forms"
    assert e["header:X-Multi:all"] == [" one", "  two"]
    assert e["header:List-Post:asURLs"] == ["mailto:list@example.org"]
    assert e["header:Message-ID:asMessageIds"][0].endswith("@example.net")
    assert e["header:Date:asDate"] == "2026-11-23T10:00:00Z"
    assert e["header:To:asGroupedAddresses"][-1] == {
        "name": "Group", "addresses": [{"name": None, "email": "a@example.org"},
                                       {"name": None, "email": "b@example.org"}]}
    assert e["header:From:asAddresses"] == [{"name": "Sender", "email": "sender@example.net"}]
    assert e["header:X-None"] is None
    assert any(h["name"] == "X-Multi" and h["value"] == "  two" for h in e["headers"])
    part = e["textBody"][0]
    assert part["partId"] == "1" and part["charset"] == "utf-8" and part["size"] == 52
    assert part["header:Content-Type"] == " text/plain; charset=utf-8"
    assert e["bodyValues"]["1"] == {"value": "x" * 10, "isEncodingProblem": False,
                                    "isTruncated": True}


def test_invalid_get_properties(alice):
    for props in (["header:"], ["header:X:asNope"], ["nope"], ["header:A B"],
                  ["header:Subject:asAddresses"], ["header:From:asDate"], ["header:Date:asText"]):
        name, err = alice.call("Email/get", ids=[], properties=props)
        assert err["type"] == "invalidArguments", props


def test_rfc8621_body_structure_example(alice):
    up = alice.upload(RFC8621_EXAMPLE.read_bytes(), "message/rfc822")
    res = alice.ok("Email/import", emails={"k": {"blobId": up["blobId"],
                                                 "mailboxIds": {alice.mailbox("archive"): True}}})
    eid = res["created"]["k"]["id"]
    e = alice.ok("Email/get", ids=[eid], fetchAllBodyValues=True,
                 properties=["bodyStructure", "textBody", "htmlBody", "attachments", "bodyValues"],
                 bodyProperties=["partId", "type", "subParts"])["list"][0]
    values = e["bodyValues"]

    def letters(parts):
        out = []
        for p in parts:
            v = values.get(p["partId"], {}).get("value", "").strip()
            out.append(v.replace("<html>", "").replace("</html>", "") if v else p["type"])
        return out
    assert letters(e["textBody"]) == ["A", "B", "image/jpeg", "D", "K"]
    assert letters(e["htmlBody"]) == ["A", "E", "K"]
    assert [p["type"] for p in e["attachments"]] == [
        "image/jpeg", "image/jpeg", "image/jpeg", "application/x-excel", "message/rfc822"]
    assert e["bodyStructure"]["type"] == "multipart/mixed"
    assert e["bodyStructure"]["partId"] is None and len(e["bodyStructure"]["subParts"]) == 3
    # a part's blob downloads decoded
    url = (alice.session["downloadUrl"].replace("{accountId}", alice.account)
           .replace("{blobId}", e["attachments"][2]["partId"] and
                    alice.ok("Email/get", ids=[eid], properties=["attachments"])["list"][0]
                    ["attachments"][2]["blobId"]).replace("{name}", "g.jpg").replace("{type}", "image/jpeg"))
    assert alice.http.get(url).content.strip() == b"G"


# --- Email/set ----------------------------------------------------------------------------

def test_create_from_parts_with_attachment_and_html(alice):
    up = alice.upload(b"%PDF-1.4 fake", "application/pdf")
    res = alice.ok("Email/set", create={"m": {
        "mailboxIds": {alice.mailbox("drafts"): True}, "keywords": {"$draft": True, "$seen": True},
        "subject": "Créé", "from": [{"name": "Alice Ä", "email": ALICE}],
        "to": [{"email": BOB}], "messageId": ["made.here@example.org"],
        "header:X-Roost-Test:asText": "yes",
        "textBody": [{"partId": "t", "type": "text/plain"}],
        "htmlBody": [{"partId": "h", "type": "text/html"}],
        "attachments": [{"blobId": up["blobId"], "type": "application/pdf", "name": "a.pdf"}],
        "bodyValues": {"t": {"value": "plain ünïcode"}, "h": {"value": "<p>html</p>"}}}})
    created = res["created"]["m"]
    e = alice.ok("Email/get", ids=[created["id"]], fetchAllBodyValues=True,
                 properties=["subject", "from", "keywords", "messageId", "hasAttachment",
                             "attachments", "textBody", "htmlBody", "bodyValues",
                             "header:X-Roost-Test:asText", "size", "blobId"])["list"][0]
    assert e["subject"] == "Créé" and e["from"] == [{"name": "Alice Ä", "email": ALICE}]
    assert e["keywords"] == {"$draft": True, "$seen": True}
    assert e["messageId"] == ["made.here@example.org"]
    assert e["header:X-Roost-Test:asText"] == "yes"
    assert e["hasAttachment"] and e["attachments"][0]["name"] == "a.pdf"
    text = e["bodyValues"][e["textBody"][0]["partId"]]["value"]
    html = e["bodyValues"][e["htmlBody"][0]["partId"]]["value"]
    assert text.strip() == "plain ünïcode" and html.strip() == "<p>html</p>"
    assert e["size"] == created["size"] and e["blobId"] == created["blobId"]


def test_create_errors(alice):
    drafts = alice.mailbox("drafts")
    res = alice.ok("Email/set", create={
        "nobox": {"subject": "x"},
        "badbox": {"mailboxIds": {"M999999": True}},
        "badkw": {"mailboxIds": {drafts: True}, "keywords": {"bad(kw": True}},
        "noblob": {"mailboxIds": {drafts: True}, "attachments": [{"blobId": "Bmissing"}]},
        "serverset": {"mailboxIds": {drafts: True}, "id": "E1"},
        "badaddr": {"mailboxIds": {drafts: True}, "from": [{"email": 5}]},
        "manykw": {"mailboxIds": {drafts: True}, "keywords": {f"k{i}": True for i in range(65)}},
    })
    nc = res["notCreated"]
    assert set(nc) == {"nobox", "badbox", "badkw", "noblob", "serverset", "badaddr", "manykw"}
    assert nc["manykw"]["type"] == "tooManyKeywords" and nc["manykw"]["maxKeywords"] == 64
    assert nc["noblob"]["type"] == "blobNotFound" and nc["noblob"]["notFound"] == ["Bmissing"]
    assert nc["badkw"]["type"] == "invalidProperties" and nc["badkw"]["properties"] == ["keywords"]
    assert nc["nobox"]["type"] == "invalidProperties" and nc["nobox"]["properties"] == ["mailboxIds"]


def test_keywords_and_mailboxes_patch_and_replace(alice):
    eid = alice.draft("patch me")
    archive, drafts = alice.mailbox("archive"), alice.mailbox("drafts")
    state = alice.ok("Email/get", ids=[])["state"]
    res = alice.ok("Email/set", update={eid: {"keywords/$seen": True, "keywords/$flagged": True,
                                             "keywords/$draft": None,
                                             f"mailboxIds/{archive}": True}})
    assert eid in res["updated"]
    e = alice.ok("Email/get", ids=[eid], properties=["keywords", "mailboxIds"])["list"][0]
    assert e["keywords"] == {"$seen": True, "$flagged": True}
    assert e["mailboxIds"] == {archive: True, drafts: True}
    ch = alice.ok("Email/changes", sinceState=state)
    assert ch["updated"] == [eid] and ch["newState"] != state
    res = alice.ok("Email/set", update={eid: {"keywords": {"custom": True}, "mailboxIds": {archive: True}}})
    e = alice.ok("Email/get", ids=[eid], properties=["keywords", "mailboxIds"])["list"][0]
    assert e["keywords"] == {"custom": True} and e["mailboxIds"] == {archive: True}
    res = alice.ok("Email/set", update={eid: {"mailboxIds": {}}, "E999999": {"keywords": {}},
                                        "x": {"subject": "no"}})
    assert res["notUpdated"][eid]["type"] == "invalidProperties"
    assert res["notUpdated"]["E999999"]["type"] == "notFound"
    res = alice.ok("Email/set", update={eid: {f"mailboxIds/{archive}": None}})
    assert res["notUpdated"][eid]["type"] == "invalidProperties"
    assert alice.ok("Email/set", destroy=[eid, "E999999"])["notDestroyed"]["E999999"]["type"] == "notFound"


def test_changes_report_created_updated_destroyed_and_page(alice):
    state = alice.ok("Email/get", ids=[])["state"]
    ids = [alice.draft(f"page {i}") for i in range(3)]
    alice.ok("Email/set", destroy=[ids[0]])
    ch = alice.ok("Email/changes", sinceState=state)
    assert set(ch["created"]) == set(ids[1:]) and ch["destroyed"] == []
    seen, cur, pages = set(), state, 0
    while True:
        ch = alice.ok("Email/changes", sinceState=cur, maxChanges=1)
        seen |= set(ch["created"]) | set(ch["updated"])
        cur, pages = ch["newState"], pages + 1
        if not ch["hasMoreChanges"]:
            break
    assert set(ids[1:]) <= seen and pages >= 3
    mid = alice.ok("Email/get", ids=[])["state"]
    alice.ok("Email/set", destroy=ids[1:])
    ch = alice.ok("Email/changes", sinceState=mid)
    assert set(ch["destroyed"]) == set(ids[1:])


# --- Email/query ---------------------------------------------------------------------------

def test_query_filters(alice, server):
    deliver(server, "Quarterly report alpha", body="the budget is attached")
    deliver(server, "Quarterly report beta", body="nothing here")
    inbox = alice.mailbox("inbox")
    alpha = find(alice, "Quarterly report alpha")
    alice.ok("Email/set", update={alpha: {"keywords/$flagged": True}})

    def q(filt, **kw):
        return alice.ok("Email/query", filter=filt, **kw)["ids"]
    assert q({"subject": "quarterly", "hasKeyword": "$flagged"}) == [alpha]
    assert alpha not in q({"subject": "quarterly", "notKeyword": "$flagged"})
    assert q({"body": "budget"}) == [alpha]
    assert q({"text": "budget"}) == [alpha]
    assert len(q({"operator": "OR", "conditions": [{"subject": "alpha"}, {"subject": "beta"}]})) == 2
    assert q({"operator": "AND", "conditions": [{"inMailbox": inbox}, {"subject": "alpha"}]}) == [alpha]
    assert alpha not in q({"operator": "NOT", "conditions": [{"subject": "alpha"}]})
    assert q({"from": "sender@example.net", "subject": "alpha"}) == [alpha]
    assert q({"header": ["Subject", "alpha"]}) == [alpha]
    assert q({"inMailboxOtherThan": [inbox], "subject": "quarterly"}) == []
    assert alpha in q({"before": "2100-01-01T00:00:00Z", "after": "2000-01-01T00:00:00Z"})
    assert q({"after": "2100-01-01T00:00:00Z"}) == []
    assert alpha in q({"minSize": 10, "maxSize": 100000, "subject": "alpha"})
    assert q({"someInThreadHaveKeyword": "$flagged", "subject": "quarterly"}) == [alpha]
    assert alpha not in q({"noneInThreadHaveKeyword": "$flagged", "subject": "quarterly"})
    assert q({"allInThreadHaveKeyword": "$flagged", "subject": "quarterly"}) == [alpha]
    assert q({"hasAttachment": True, "subject": "quarterly"}) == []
    for bad in ({"nope": 1}, {"inMailbox": 5}, {"after": "yesterday"}, {"operator": "XOR",
                                                                           "conditions": []}):
        name, err = alice.call("Email/query", filter=bad)
        assert err["type"] == "unsupportedFilter", bad


def test_query_sorts_paging_anchor_and_collapse(alice, server):
    for i in range(5):
        deliver(server, f"Sortable {i}", body="s" * (i + 1) * 100)
    inbox = alice.mailbox("inbox")
    filt = {"inMailbox": inbox, "subject": "sortable"}
    by_size = alice.ok("Email/query", filter=filt, sort=[{"property": "size", "isAscending": True}])
    sizes = [e["size"] for e in alice.ok("Email/get", ids=by_size["ids"], properties=["size"])["list"]]
    assert sizes == sorted(sizes) and len(sizes) == 5
    newest = alice.ok("Email/query", filter=filt, sort=[{"property": "receivedAt", "isAscending": False}],
                      position=1, limit=2, calculateTotal=True)
    assert newest["total"] == 5 and newest["position"] == 1 and len(newest["ids"]) == 2
    by_subject = alice.ok("Email/query", filter=filt, sort=[{"property": "subject",
                                                             "collation": "i;ascii-casemap"}])["ids"]
    anchored = alice.ok("Email/query", filter=filt, sort=[{"property": "subject"}],
                        anchor=by_subject[1], anchorOffset=1, limit=2)
    assert anchored["ids"] == by_subject[2:4] and anchored["position"] == 2
    neg = alice.ok("Email/query", filter=filt, sort=[{"property": "subject"}], position=-2)
    assert neg["ids"] == by_subject[-2:]
    kw = alice.ok("Email/query", filter=filt, sort=[{"property": "hasKeyword", "keyword": "$seen"}])
    assert set(kw["ids"]) == set(by_subject)
    name, err = alice.call("Email/query", filter=filt, anchor="E999999")
    assert err["type"] == "anchorNotFound"
    name, err = alice.call("Email/query", sort=[{"property": "color"}])
    assert err["type"] == "unsupportedSort"


def test_threads_and_collapse(alice, server):
    deliver(server, "Thread root", msgid="root1")
    deliver(server, "Re: Thread root", msgid="reply1",
            extra=b"In-Reply-To: <root1@example.net>\r\nReferences: <root1@example.net>\r\n")
    ids = alice.ok("Email/query", filter={"subject": "Thread root"})["ids"]
    got = alice.ok("Email/get", ids=ids, properties=["threadId", "messageId"])["list"]
    got.sort(key=lambda e: e["messageId"] != ["root1@example.net"])
    root, reply = got[0]["id"], got[1]["id"]
    assert got[0]["threadId"] == got[1]["threadId"]
    th = alice.ok("Thread/get", ids=[got[0]["threadId"], "T999999"])
    assert th["list"][0]["emailIds"] == [root, reply] and th["notFound"] == ["T999999"]
    collapsed = alice.ok("Email/query", filter={"subject": "Thread root"}, collapseThreads=True)
    assert len(collapsed["ids"]) == 1


def test_query_changes_splice(alice):
    drafts = alice.mailbox("drafts")
    sort = [{"property": "receivedAt", "isAscending": False}]
    q = alice.ok("Email/query", filter={"inMailbox": drafts}, sort=sort)
    eid = alice.draft("query changes")
    qc = alice.ok("Email/queryChanges", filter={"inMailbox": drafts}, sort=sort,
                  sinceQueryState=q["queryState"], calculateTotal=True)
    assert qc["oldQueryState"] == q["queryState"]
    assert {"id": eid, "index": 0} in qc["added"]
    alice.ok("Email/set", destroy=[eid])
    qc2 = alice.ok("Email/queryChanges", filter={"inMailbox": drafts}, sort=sort,
                   sinceQueryState=qc["newQueryState"])
    assert eid in qc2["removed"] and qc2["added"] == []
    name, err = alice.call("Email/queryChanges", sinceQueryState="x", filter={})
    assert err["type"] == "cannotCalculateChanges"


# --- import, parse, copy, snippets ----------------------------------------------------------

def test_import_parse_and_snippet(alice):
    raw = message("Imported snippetword here", body="some body with snippetword inside")
    up = alice.upload(raw, "message/rfc822")
    parsed = alice.ok("Email/parse", blobIds=[up["blobId"], "Bnope"],
                      properties=["subject", "from", "bodyValues", "textBody"],
                      fetchTextBodyValues=True)
    p = parsed["parsed"][up["blobId"]]
    assert p["subject"] == "Imported snippetword here" and parsed["notFound"] == ["Bnope"]
    assert "snippetword inside" in p["bodyValues"]["1"]["value"]
    res = alice.ok("Email/import", emails={"i": {"blobId": up["blobId"],
                                                 "mailboxIds": {alice.mailbox("inbox"): True},
                                                 "keywords": {"$seen": True},
                                                 "receivedAt": "2025-01-02T03:04:05Z"},
                                           "bad": {"blobId": "Bnope",
                                                   "mailboxIds": {alice.mailbox("inbox"): True}}})
    eid = res["created"]["i"]["id"]
    assert res["notCreated"]["bad"]["type"] == "blobNotFound"
    e = alice.ok("Email/get", ids=[eid], properties=["receivedAt", "keywords", "blobId"])["list"][0]
    assert e["receivedAt"] == "2025-01-02T03:04:05Z" and e["keywords"] == {"$seen": True}
    sn = alice.ok("SearchSnippet/get", filter={"text": "snippetword"}, emailIds=[eid, "E999999"])
    assert "<mark>" in sn["list"][0]["subject"].lower()
    assert sn["notFound"] == ["E999999"]


def test_email_copy_within_one_account_is_refused(alice):
    name, err = alice.call("Email/copy", fromAccountId=alice.account, create={})
    assert name == "error"


# --- Identity, EmailSubmission, VacationResponse ------------------------------------------------

def test_identity_defaults_and_set(alice):
    ids = alice.ok("Identity/get")["list"]
    assert ids[0]["email"] == ALICE and ids[0]["mayDelete"] is True
    res = alice.ok("Identity/set", create={"x": {"email": "someone@else.example"},
                                           "y": {"email": ALICE, "name": "Alice Work"}},
                   update={ids[0]["id"]: {"textSignature": "-- \nAlice"}})
    assert res["notCreated"]["x"]["type"] == "forbiddenFrom"
    new = res["created"]["y"]["id"]
    got = {i["id"]: i for i in alice.ok("Identity/get")["list"]}
    assert got[ids[0]["id"]]["textSignature"] == "-- \nAlice" and got[new]["name"] == "Alice Work"
    assert alice.ok("Identity/set", destroy=[new])["destroyed"] == [new]


def test_submission_to_a_local_recipient_delivers(alice, bob):
    identity = alice.ok("Identity/get")["list"][0]["id"]
    drafts = alice.mailbox("drafts")
    out = alice.request(
        ["Email/set", {"accountId": alice.account, "create": {"d": {
            "mailboxIds": {drafts: True}, "keywords": {"$draft": True}, "subject": "to bob, locally",
            "from": [{"email": ALICE}], "to": [{"email": BOB}],
            "textBody": [{"partId": "t", "type": "text/plain"}],
            "bodyValues": {"t": {"value": "hi bob"}}}}}, "0"],
        ["EmailSubmission/set", {"accountId": alice.account,
                                 "create": {"s": {"identityId": identity, "emailId": "#d"}},
                                 "onSuccessUpdateEmail": {"#s": {"keywords/$draft": None,
                                                                 f"mailboxIds/{drafts}": None,
                                                                 f"mailboxIds/{alice.mailbox('sent')}": True}}},
         "1"])
    assert out[1][0] == "EmailSubmission/set" and "s" in out[1][1]["created"], out
    assert out[2][0] == "Email/set" and out[2][2] == "1" and out[2][1]["updated"]
    eid = out[0][1]["created"]["d"]["id"]
    e = alice.ok("Email/get", ids=[eid], properties=["keywords", "mailboxIds"])["list"][0]
    assert e["keywords"] == {} and e["mailboxIds"] == {alice.mailbox("sent"): True}
    assert bob.ok("Email/query", filter={"subject": "to bob, locally"})["ids"]
    sub = alice.ok("EmailSubmission/get", ids=[out[1][1]["created"]["s"]["id"]])["list"][0]
    assert sub["emailId"] == eid and sub["undoStatus"] == "final"
    assert sub["deliveryStatus"][BOB]["delivered"] == "yes"


def test_submission_with_an_unknown_identity_or_email_is_refused(alice):
    # Sending to remote recipients: tests/protocol/test_jmap_submission.py.
    identity = alice.ok("Identity/get")["list"][0]["id"]
    eid = alice.draft("to nobody")
    res = alice.ok("EmailSubmission/set", create={"s": {"identityId": "I999999", "emailId": eid},
                                                  "t": {"identityId": identity, "emailId": "E999999"}})
    assert res["notCreated"]["s"]["properties"] == ["identityId"]
    assert res["notCreated"]["t"]["properties"] == ["emailId"]


def test_vacation_response_singleton(alice):
    v = alice.ok("VacationResponse/get")["list"][0]
    assert v["id"] == "singleton" and v["isEnabled"] is False
    res = alice.ok("VacationResponse/set", update={"singleton": {
        "isEnabled": True, "subject": "Away", "textBody": "back soon",
        "fromDate": "2026-12-01T00:00:00Z"}}, create={"x": {}}, destroy=["singleton"])
    assert res["updated"] == {"singleton": None}
    assert res["notCreated"]["x"]["type"] == "singleton"
    v = alice.ok("VacationResponse/get", ids=["singleton", "other"])
    assert v["list"][0]["subject"] == "Away" and v["notFound"] == ["other"]
    res = alice.ok("VacationResponse/set", update={"singleton": {"isEnabled": "yes"}})
    assert res["notUpdated"]["singleton"]["type"] == "invalidProperties"


# --- isolation ---------------------------------------------------------------------------------

def test_one_account_never_sees_or_changes_anothers_objects(alice, bob, server):
    deliver(server, "Alice private")
    eid = find(alice, "Alice private")
    e = alice.ok("Email/get", ids=[eid], properties=["threadId", "blobId", "mailboxIds"])["list"][0]
    box = next(iter(e["mailboxIds"]))
    ident = alice.ok("Identity/get")["list"][0]["id"]
    assert bob.ok("Email/get", ids=[eid])["notFound"] == [eid]
    assert bob.ok("Thread/get", ids=[e["threadId"]])["notFound"] == [e["threadId"]]
    assert bob.ok("Mailbox/get", ids=[box])["notFound"] == [box]
    assert bob.ok("Identity/get", ids=[ident])["notFound"] == [ident]
    assert eid not in bob.ok("Email/query", filter={"subject": "Alice private"})["ids"]
    assert eid not in bob.ok("Email/query", filter={"inMailbox": box})["ids"]
    assert bob.ok("SearchSnippet/get", filter={"text": "private"}, emailIds=[eid])["notFound"] == [eid]
    assert bob.ok("Email/parse", blobIds=[e["blobId"]])["notFound"] == [e["blobId"]]
    res = bob.ok("Email/set", update={eid: {"keywords/$seen": True}}, destroy=[eid])
    assert res["notUpdated"][eid]["type"] == "notFound"
    assert res["notDestroyed"][eid]["type"] == "notFound"
    res = bob.ok("Mailbox/set", update={box: {"name": "pwned"}}, destroy=[box])
    assert res["notUpdated"][box]["type"] == "notFound"
    assert res["notDestroyed"][box]["type"] == "notFound"
    res = bob.ok("Email/set", create={"x": {"mailboxIds": {box: True}, "subject": "into alice"}})
    assert res["notCreated"]["x"]["type"] == "invalidProperties"
    res = bob.ok("Email/import", emails={"x": {"blobId": e["blobId"],
                                               "mailboxIds": {bob.mailbox("inbox"): True}}})
    assert res["notCreated"]["x"]["type"] == "blobNotFound"
    res = bob.ok("Identity/set", update={ident: {"name": "x"}}, destroy=[ident])
    assert res["notUpdated"][ident]["type"] == "notFound"
    res = bob.ok("EmailSubmission/set", create={"s": {"identityId": bob.ok("Identity/get")["list"][0]["id"],
                                                      "emailId": eid}})
    assert res["notCreated"]["s"]["type"] == "invalidProperties"
    ch = bob.ok("Email/changes", sinceState="0")
    assert eid not in ch["created"] + ch["updated"]
    # Alice shares nothing: her account id is unknown to bob (tests/protocol/test_jmap_sharing.py
    # has the grants and revocations).
    assert alice.account not in bob.session["accounts"]
    for name, args in (("Email/get", {"ids": [eid]}), ("Email/query", {}), ("Mailbox/get", {}),
                       ("Thread/get", {"ids": [e["threadId"]]}), ("Email/set", {"destroy": [eid]}),
                       ("Mailbox/set", {"destroy": [box]}), ("Email/changes", {"sinceState": "0"})):
        assert bob.call(name, dict(args, accountId=alice.account))[1]["type"] == "accountNotFound", name
    e2 = alice.ok("Email/get", ids=[eid], properties=["keywords", "mailboxIds"])["list"][0]
    assert e2["keywords"] == {} and e2["mailboxIds"] == {box: True}


@pytest.mark.parametrize("sort", [[{"property": "receivedAt", "isAscending": False}],
                                  [{"property": "size", "isAscending": True}]])
def test_a_mailbox_listing_kept_up_to_date_matches_a_fresh_query(alice, server, sort):
    inbox, archive = alice.mailbox("inbox"), alice.mailbox("archive")
    plain = {"inMailbox": inbox}
    fresh = {"operator": "AND", "conditions": [{"inMailbox": inbox}]}   # never the live path

    def ids(filt):
        return alice.ok("Email/query", filter=filt, sort=sort, calculateTotal=True)
    first = ids(plain)
    assert first["ids"] == ids(fresh)["ids"]
    for i in range(3):
        deliver(server, f"live list {i}", body="y" * (i * 37))
    new = alice.ok("Email/query", filter={"subject": "live list"})["ids"]
    alice.ok("Email/set", update={new[0]: {"keywords/$seen": True},
                                  new[1]: {"mailboxIds": {archive: True}}},
             destroy=[first["ids"][-1]])
    after = ids(plain)
    assert after["ids"] == ids(fresh)["ids"]
    assert new[1] not in after["ids"] and new[0] in after["ids"]
    assert after["total"] == first["total"] + 3 - 2


def test_changes_page_inside_one_big_modseq(alice):
    ids = [alice.draft(f"bulk {i}") for i in range(5)]
    state = alice.ok("Email/get", ids=[])["state"]
    alice.ok("Email/set", destroy=ids)          # one MODSEQ for all five
    seen, cur, pages = [], state, 0
    while True:
        ch = alice.ok("Email/changes", sinceState=cur, maxChanges=2)
        assert len(ch["created"]) + len(ch["updated"]) + len(ch["destroyed"]) <= 2
        seen += ch["destroyed"]
        cur, pages = ch["newState"], pages + 1
        if not ch["hasMoreChanges"]:
            break
    assert sorted(seen) == sorted(ids) and pages == 3
    assert cur == alice.ok("Email/get", ids=[])["state"]
    assert alice.ok("Email/changes", sinceState=cur)["destroyed"] == []
