"""JMAP Sieve (RFC 9661) and VacationResponse (RFC 8621 section 8) as a
generated script, against a real ``roost serve`` with JMAP and ManageSieve:
the capability, SieveScript/get/set/query/changes/validate with blobs, the
error types, activation, and the one list both protocols edit."""

import pytest

from roost.storage import sieve
from tests.jmap_helpers import ALICE, PASSWORDS, USING, fixtures
from tests.protocol.test_managesieve import Raw, literal

SIEVE = "urn:ietf:params:jmap:sieve"
BLOB = "urn:ietf:params:jmap:blob"
USE = USING + [SIEVE, BLOB]
GOOD = 'require ["fileinto"];\r\nif header :contains "subject" "[x]" {\r\n  fileinto "INBOX";\r\n}\r\n'

server, alice, bob = fixtures("jmap_sieve", listeners=("jmap", "lmtp", "managesieve"))


def call(client, name, **args):
    args.setdefault("accountId", client.account)
    (resp,) = [r for r in client.request([name, args, "c"], using=USE) if r[2] == "c"]
    assert resp[0] == name, resp
    return resp[1]


def blob(client, text):
    return client.upload(text.encode(), "application/sieve")["blobId"]


def scripts(client):
    return {s["name"]: s for s in call(client, "SieveScript/get", ids=None)["list"]}


@pytest.fixture(autouse=True)
def clean(alice):
    yield
    call(alice, "VacationResponse/set", update={"singleton": {"isEnabled": False}})
    call(alice, "SieveScript/set", onSuccessDeactivateScript=True)
    ids = [s["id"] for s in scripts(alice).values() if s["name"] != "vacation"]
    call(alice, "SieveScript/set", destroy=ids)


def test_capability(alice):
    session = alice.session
    assert session["capabilities"][SIEVE]["implementation"].startswith("Roost")
    acct = session["accounts"][alice.account]["accountCapabilities"][SIEVE]
    assert acct["sieveExtensions"] == list(sieve.EXTENSIONS)
    assert acct["maxSizeScriptName"] >= 512 and acct["maxSizeScript"] == sieve.MAX_SCRIPT_SIZE
    assert acct["maxNumberScripts"] > 0 and acct["notificationMethods"] == ["mailto"]
    assert "externalLists" in acct and "maxNumberRedirects" in acct


def test_create_activate_download_and_managesieve_sees_it(alice, server):
    blob_id = blob(alice, GOOD)
    res = call(alice, "SieveScript/set", create={"A": {"name": "filters", "blobId": blob_id}},
               onSuccessActivateScript="#A")
    created = res["created"]["A"]
    assert created["isActive"] is True and created["blobId"] == blob_id
    listed = scripts(alice)["filters"]
    assert listed == {"id": created["id"], "name": "filters", "blobId": blob_id, "isActive": True}
    url = alice.session["downloadUrl"].replace("{accountId}", alice.account) \
        .replace("{blobId}", blob_id).replace("{name}", "filters.siv").replace("{type}",
                                                                               "application/sieve")
    assert alice.http.get(url).content == GOOD.encode()
    got = call(alice, "Blob/get", ids=[blob_id], properties=["data:asText"])
    assert got["list"][0]["data:asText"] == GOOD
    ms = Raw(server.ports["managesieve"])
    assert ms.plain(ALICE, PASSWORDS[ALICE])[1].startswith("OK")
    assert ms.cmd("LISTSCRIPTS")[0] == [b'"filters" ACTIVE']
    assert ms.cmd('GETSCRIPT "filters"')[0] == [GOOD.encode()]
    # and what ManageSieve writes, JMAP lists
    assert ms.cmd(b'PUTSCRIPT "other" ' + literal(b"keep;\r\n"))[1].startswith("OK")
    ms.close()
    assert scripts(alice)["other"]["isActive"] is False


def test_activation_moves_and_is_reported(alice):
    one = call(alice, "SieveScript/set", create={"a": {"name": "one", "blobId": blob(alice, "keep;")}},
               onSuccessActivateScript="#a")["created"]["a"]["id"]
    res = call(alice, "SieveScript/set", create={"b": {"name": "two",
                                                        "blobId": blob(alice, "discard;")}},
               onSuccessActivateScript="#b")
    assert res["created"]["b"]["isActive"] is True
    assert res["updated"] == {one: {"isActive": False}}
    two = res["created"]["b"]["id"]
    res = call(alice, "SieveScript/set", onSuccessDeactivateScript=True)
    assert res["updated"] == {two: {"isActive": False}}
    res = call(alice, "SieveScript/set", onSuccessActivateScript=one)
    assert res["updated"] == {one: {"isActive": True}}
    # a failing call activates nothing
    res = call(alice, "SieveScript/set", destroy=["Z999999"], onSuccessActivateScript=two)
    assert res["notDestroyed"]["Z999999"]["type"] == "notFound" and not res["updated"]
    assert scripts(alice)["one"]["isActive"] is True
    res = call(alice, "SieveScript/set", destroy=[one])
    assert res["notDestroyed"][one]["type"] == "sieveIsActive"


def test_errors(alice):
    bad = blob(alice, 'require ["fileinto"];\r\nif true {\r\n  fileinto;\r\n}\r\n')
    res = call(alice, "SieveScript/set", create={
        "bad": {"name": "bad", "blobId": bad},
        "nob": {"name": "nob", "blobId": "Bnothing"},
        "ro": {"name": "ro", "blobId": blob(alice, "keep;"), "isActive": True},
        "ok": {"name": "ok", "blobId": blob(alice, "keep;")}})
    assert res["notCreated"]["bad"]["type"] == "invalidSieve"
    assert res["notCreated"]["bad"]["description"].startswith("line 3:")
    assert res["notCreated"]["nob"]["type"] == "blobNotFound"
    assert res["notCreated"]["ro"]["type"] == "invalidProperties"
    ok = res["created"]["ok"]["id"]
    res = call(alice, "SieveScript/set", create={"dup": {"name": "ok", "blobId": blob(alice, "keep;")}})
    assert res["notCreated"]["dup"]["type"] == "alreadyExists"
    assert res["notCreated"]["dup"]["existingId"] == ok
    res = call(alice, "SieveScript/set", update={ok: {"blobId": bad}})
    assert res["notUpdated"][ok]["type"] == "invalidSieve"
    res = call(alice, "SieveScript/set", update={ok: {"isActive": True}})
    assert res["notUpdated"][ok]["type"] == "invalidProperties"
    big = blob(alice, "#" + "x" * sieve.MAX_SCRIPT_SIZE + "\r\nkeep;\r\n")
    res = call(alice, "SieveScript/set", create={"big": {"name": "big", "blobId": big}})
    assert res["notCreated"]["big"]["type"] == "tooLarge"
    res = call(alice, "SieveScript/set", create={"v": {"name": "vacation",
                                                       "blobId": blob(alice, "keep;")}})
    assert res["notCreated"]["v"]["type"] == "forbidden"


def test_update_rename_and_content(alice):
    sid = call(alice, "SieveScript/set", create={"a": {"name": "one", "blobId": blob(alice, "keep;")}}
               )["created"]["a"]["id"]
    new_blob = blob(alice, GOOD)
    res = call(alice, "SieveScript/set", update={sid: {"name": "renamed", "blobId": new_blob}})
    assert res["updated"] == {sid: None}
    got = scripts(alice)["renamed"]
    assert got["id"] == sid and got["blobId"] == new_blob


def test_name_null_gets_a_name(alice):
    res = call(alice, "SieveScript/set", create={"a": {"name": None, "blobId": blob(alice, "keep;")}})
    assert res["created"]["a"]["name"].startswith("script-")


def test_validate(alice):
    assert call(alice, "SieveScript/validate", blobId=blob(alice, GOOD))["error"] is None
    err = call(alice, "SieveScript/validate", blobId=blob(alice, "this is not sieve {{{"))["error"]
    assert err["type"] == "invalidSieve" and err["description"].startswith("line 1:")
    assert scripts(alice) == {}                   # nothing stored


def test_query_and_changes(alice):
    state = call(alice, "SieveScript/get", ids=[])["state"]
    res = call(alice, "SieveScript/set", create={
        n: {"name": n, "blobId": blob(alice, "keep;")} for n in ("beta", "Alpha", "gamma")},
        onSuccessActivateScript="#gamma")
    ids = {n: res["created"][n]["id"] for n in ("beta", "Alpha", "gamma")}
    q = call(alice, "SieveScript/query", sort=[{"property": "name"}], calculateTotal=True)
    assert q["ids"] == [ids["Alpha"], ids["beta"], ids["gamma"]] and q["total"] == 3
    q = call(alice, "SieveScript/query", filter={"isActive": False},
             sort=[{"property": "name", "isAscending": False}])
    assert q["ids"] == [ids["beta"], ids["Alpha"]]
    q = call(alice, "SieveScript/query", filter={"name": "ALP"})
    assert q["ids"] == [ids["Alpha"]]
    ch = call(alice, "SieveScript/changes", sinceState=state)
    assert sorted(ch["created"]) == sorted(ids.values())
    resp = alice.request(["SieveScript/query", {"accountId": alice.account,
                                                "filter": {"size": 3}}, "q"], using=USE)
    assert resp[0][0] == "error" and resp[0][1]["type"] == "unsupportedFilter"


def test_sieve_methods_need_the_capability(alice):
    resp = alice.request(["SieveScript/get", {"accountId": alice.account}, "c"])
    assert resp[0][0] == "error" and resp[0][1]["type"] == "unknownMethod"


# --- VacationResponse as the generated script ---------------------------------------------

def test_vacation_response_is_a_script(alice, server):
    state = call(alice, "VacationResponse/get")["state"]
    own = call(alice, "SieveScript/set", create={"a": {"name": "mine", "blobId": blob(alice, GOOD)}},
               onSuccessActivateScript="#a")["created"]["a"]["id"]
    res = call(alice, "VacationResponse/set", update={"singleton": {
        "isEnabled": True, "subject": "Away", "textBody": "Back on Monday.",
        "fromDate": "2026-12-01T00:00:00Z", "toDate": "2026-12-08T00:00:00Z"}})
    assert res["updated"] == {"singleton": None} and res["newState"] != state
    v = call(alice, "VacationResponse/get")["list"][0]
    assert v == {"id": "singleton", "isEnabled": True, "subject": "Away",
                 "textBody": "Back on Monday.", "htmlBody": None,
                 "fromDate": "2026-12-01T00:00:00Z", "toDate": "2026-12-08T00:00:00Z"}
    listed = scripts(alice)
    assert listed["vacation"]["isActive"] is True and listed["mine"]["isActive"] is False
    ms = Raw(server.ports["managesieve"])
    assert ms.plain(ALICE, PASSWORDS[ALICE])[1].startswith("OK")
    assert b'"vacation" ACTIVE' in ms.cmd("LISTSCRIPTS")[0]
    (text,), _ = ms.cmd('GETSCRIPT "vacation"')
    assert b'vacation :days 7 :subject "Away" "Back on Monday.";' in text
    assert b'currentdate :zone "+0000" :value "ge" "iso8601" "2026-12-01T00:00:00"' in text
    sieve.compile(text.decode())
    assert ms.cmd(b'PUTSCRIPT "vacation" ' + literal(b"keep;"))[1].startswith("NO")
    ms.close()
    vid = listed["vacation"]["id"]
    res = call(alice, "SieveScript/set", update={vid: {"blobId": blob(alice, "keep;")}},
               destroy=[vid])
    assert res["notUpdated"][vid]["type"] == "forbidden"
    assert res["notDestroyed"][vid]["type"] in ("forbidden", "sieveIsActive")
    # off again: the user's own script is active once more
    call(alice, "VacationResponse/set", update={"singleton": {"isEnabled": False}})
    listed = scripts(alice)
    assert listed["mine"]["isActive"] is True and listed["vacation"]["isActive"] is False
    assert call(alice, "VacationResponse/get")["list"][0]["subject"] == "Away"
    # activating the vacation script through SieveScript/set turns the response on
    call(alice, "SieveScript/set", onSuccessActivateScript=vid)
    assert call(alice, "VacationResponse/get")["list"][0]["isEnabled"] is False   # settings off
    call(alice, "SieveScript/set", onSuccessActivateScript=own)


def test_vacation_html_and_bad_values(alice):
    res = call(alice, "VacationResponse/set", update={"singleton": {
        "isEnabled": True, "htmlBody": "<p>Away</p>", "textBody": None}})
    assert res["updated"] == {"singleton": None}
    assert call(alice, "VacationResponse/get")["list"][0]["htmlBody"] == "<p>Away</p>"
    res = call(alice, "VacationResponse/set", update={"singleton": {"fromDate": "soon"}})
    assert res["notUpdated"]["singleton"]["properties"] == ["fromDate"]
    res = call(alice, "VacationResponse/set", update={"singleton": {"isEnabled": "yes"}})
    assert res["notUpdated"]["singleton"]["type"] == "invalidProperties"
    res = call(alice, "VacationResponse/set", update={"singleton": {
        "textBody": "x" * (sieve.MAX_SCRIPT_SIZE + 10)}})
    assert res["notUpdated"]["singleton"]["type"] == "tooLarge"


def test_scripts_are_per_account(alice, bob):
    call(alice, "SieveScript/set", create={"a": {"name": "private", "blobId": blob(alice, "keep;")}})
    sid = scripts(alice)["private"]["id"]
    assert "private" not in scripts(bob)
    res = call(bob, "SieveScript/set", destroy=[sid], update={sid: {"name": "mine"}})
    assert res["notDestroyed"][sid]["type"] == "notFound"
    assert res["notUpdated"][sid]["type"] == "notFound"
