"""JMAP Core (RFC 8620) over HTTP against a real ``roost serve``: session,
auth, request-level and method-level errors, result references, creation
ids, blobs, CORS and limits."""

import base64
import json
import socket

import httpx
import pytest

from tests.conftest import roost
from tests.jmap_helpers import ALICE, BOB, PASSWORDS, USING, fixtures

CORE = "urn:ietf:params:jmap:core"


server, alice, bob = fixtures("jmapcore")


def base(server):
    return f"http://127.0.0.1:{server.ports['jmap']}"


def test_well_known_redirects_to_the_session(server):
    r = httpx.get(base(server) + "/.well-known/jmap")
    assert r.status_code in (301, 302, 307, 308)
    assert r.headers["location"].endswith("/jmap/session")


def test_session_has_absolute_urls_templates_and_limits(alice, server):
    s = alice.session
    b = base(server)
    assert s["apiUrl"] == b + "/jmap/api/"
    assert s["uploadUrl"] == b + "/jmap/upload/{accountId}/"
    assert s["downloadUrl"].startswith(b + "/jmap/download/")
    for var in ("{accountId}", "{blobId}", "{name}", "{type}"):
        assert var in s["downloadUrl"]
    for var in ("{types}", "{closeafter}", "{ping}"):
        assert var in s["eventSourceUrl"]
    limits = s["capabilities"][CORE]
    for key in ("maxSizeUpload", "maxConcurrentUpload", "maxSizeRequest", "maxCallsInRequest",
                "maxObjectsInGet", "maxObjectsInSet", "maxConcurrentRequests"):
        assert isinstance(limits[key], int) and limits[key] > 0
    assert s["username"] == ALICE
    assert s["primaryAccounts"]["urn:ietf:params:jmap:mail"] == alice.account
    assert s["capabilities"]["urn:ietf:params:jmap:websocket"]["url"].startswith("ws://")


@pytest.mark.parametrize("auth", [None, (ALICE, "wrong"), ("nobody@example.org", "x")])
def test_bad_credentials_get_401_with_www_authenticate(server, auth):
    r = httpx.get(base(server) + "/jmap/session", auth=auth)
    assert r.status_code == 401
    assert "Basic" in r.headers["www-authenticate"]
    assert "Bearer" in r.headers["www-authenticate"]


def test_malformed_authorization_headers_are_401(server):
    for value in ("Basic !!!", "Basic " + "QQ==", "Bearer", "Digest x", "Basic"):
        r = httpx.get(base(server) + "/jmap/session", headers={"Authorization": value})
        assert r.status_code == 401, value


def test_bearer_app_token_made_by_the_cli(server):
    token = roost(server.data, "token", "add", BOB, "phone").stdout.decode().strip()
    r = httpx.get(base(server) + "/jmap/session", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert r.json()["username"] == BOB
    # an app token also works as the password of Basic auth, for its own address only
    assert httpx.get(base(server) + "/jmap/session", auth=(BOB, token)).status_code == 200
    assert httpx.get(base(server) + "/jmap/session", auth=(ALICE, token)).status_code == 401
    r = httpx.get(base(server) + "/jmap/session", headers={"Authorization": "Bearer " + token + "x"})
    assert r.status_code == 401
    roost(server.data, "token", "del", BOB, "phone")
    r = httpx.get(base(server) + "/jmap/session", headers={"Authorization": "Bearer x" + token})
    assert r.status_code == 401


def test_cors_preflight_needs_no_auth(server):
    r = httpx.request("OPTIONS", base(server) + "/jmap/api/", headers={
        "Origin": "https://webmail.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code in (200, 204)
    assert r.headers["access-control-allow-origin"] == "*"
    assert "authorization" in r.headers["access-control-allow-headers"].lower()
    assert "POST" in r.headers["access-control-allow-methods"]


def test_responses_carry_cors_headers(alice):
    r = alice.post({"using": [CORE], "methodCalls": []})
    assert r.headers["access-control-allow-origin"] == "*"


# --- request-level errors (RFC 7807) -----------------------------------------------------

def problem(r, status, kind):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["type"] == f"urn:ietf:params:jmap:error:{kind}"
    assert body["status"] == status
    return body


def test_not_json(alice):
    r = alice.http.post(alice.session["apiUrl"], content=b"{not json",
                        headers={"Content-Type": "application/json"})
    problem(r, 400, "notJSON")


@pytest.mark.parametrize("body", [
    [], "text", {"using": [CORE]}, {"methodCalls": []}, {"using": "x", "methodCalls": []},
    {"using": [CORE], "methodCalls": [["Core/echo", {}]]},
    {"using": [CORE], "methodCalls": [["Core/echo", [], "0"]]},
    {"using": [CORE], "methodCalls": [[1, {}, "0"]]},
    {"using": [CORE], "methodCalls": [], "createdIds": []},
])
def test_not_request(alice, body):
    problem(alice.post(body), 400, "notRequest")


def test_unknown_capability(alice):
    body = problem(alice.post({"using": [CORE, "urn:example:nope"], "methodCalls": []}),
                   400, "unknownCapability")
    assert "urn:example:nope" in body["detail"]


def test_too_many_calls_is_a_limit_error(alice):
    n = alice.session["capabilities"][CORE]["maxCallsInRequest"] + 1
    body = problem(alice.post({"using": [CORE], "methodCalls": [["Core/echo", {}, str(i)]
                                                                  for i in range(n)]}),
                   400, "limit")
    assert body["limit"] == "maxCallsInRequest"


def test_too_large_request_is_a_limit_error(alice):
    size = alice.session["capabilities"][CORE]["maxSizeRequest"]
    r = alice.http.post(alice.session["apiUrl"], content=b" " * (size + 1),
                        headers={"Content-Type": "application/json"})
    assert r.status_code == 413
    assert r.json()["limit"] == "maxSizeRequest"


# --- method-level errors -----------------------------------------------------------------

def test_echo(alice):
    out = alice.request(["Core/echo", {"hello": [1, {"x": None}]}, "e"])
    assert out == [["Core/echo", {"hello": [1, {"x": None}]}, "e"]]


def test_unknown_method_and_method_outside_using(alice):
    out = alice.request(["Nope/get", {}, "a"], ["Mailbox/get", {"accountId": alice.account}, "b"],
                        using=[CORE])
    assert out[0] == ["error", {"type": "unknownMethod", "description": out[0][1]["description"]}, "a"]
    assert out[1][0] == "error" and out[1][1]["type"] == "unknownMethod"


def test_account_not_found_and_another_accounts_id(alice, bob):
    for acct in ("A999999", bob.account, "x"):
        name, result = alice.call("Mailbox/get", accountId=acct)
        assert name == "error" and result["type"] == "accountNotFound"


@pytest.mark.parametrize("args", [
    {"ids": "M1"}, {"ids": [1, 2]}, {"properties": "name"}, {"properties": ["nope"]},
])
def test_invalid_arguments(alice, args):
    name, result = alice.call("Mailbox/get", args)
    assert name == "error" and result["type"] == "invalidArguments"


def test_too_many_ids_is_request_too_large(alice):
    n = alice.session["capabilities"][CORE]["maxObjectsInGet"] + 1
    name, result = alice.call("Email/get", ids=[f"E{i}" for i in range(n)])
    assert (name, result["type"]) == ("error", "requestTooLarge")


def test_too_many_objects_in_set_is_request_too_large(alice):
    n = alice.session["capabilities"][CORE]["maxObjectsInSet"] + 1
    name, result = alice.call("Email/set", destroy=[f"E{i}" for i in range(n)])
    assert (name, result["type"]) == ("error", "requestTooLarge")


def test_state_mismatch(alice):
    name, result = alice.call("Mailbox/set", ifInState="nope", create={})
    assert (name, result["type"]) == ("error", "stateMismatch")


@pytest.mark.parametrize("since", ["garbage", "99999999999", "-1", ""])
def test_changes_from_an_unknown_state(alice, since):
    name, result = alice.call("Email/changes", sinceState=since)
    assert (name, result["type"]) == ("error", "cannotCalculateChanges")


# --- result references and creation ids (RFC 8620 sections 3.7 and 5.3) -------------------------

def test_result_reference_with_star_and_escapes(alice):
    drafts = alice.mailbox("drafts")
    out = alice.request(
        ["Mailbox/query", {"accountId": alice.account, "filter": {"role": "drafts"}}, "q"],
        ["Mailbox/get", {"accountId": alice.account,
                         "#ids": {"resultOf": "q", "name": "Mailbox/query", "path": "/ids"}}, "g"],
        ["Core/echo", {"a/b": {"c~d": ["x", "y"]}}, "e"],
        ["Core/echo", {"#v": {"resultOf": "e", "name": "Core/echo", "path": "/a~1b/c~0d/1"}}, "e2"],
        ["Core/echo", {"#v": {"resultOf": "g", "name": "Mailbox/get", "path": "/list/*/role"}}, "e3"])
    assert out[1][1]["list"][0]["id"] == drafts
    assert out[3][1] == {"v": "y"}
    assert out[4][1] == {"v": ["drafts"]}


def test_star_flattens_arrays_of_arrays(alice):
    out = alice.request(
        ["Core/echo", {"l": [{"ids": ["a", "b"]}, {"ids": ["c"]}]}, "e"],
        ["Core/echo", {"#v": {"resultOf": "e", "name": "Core/echo", "path": "/l/*/ids"}}, "f"])
    assert out[1][1] == {"v": ["a", "b", "c"]}


@pytest.mark.parametrize("ref", [
    {"resultOf": "nope", "name": "Core/echo", "path": "/a"},
    {"resultOf": "e", "name": "Mailbox/get", "path": "/a"},
    {"resultOf": "e", "name": "Core/echo", "path": "/missing"},
    {"resultOf": "e", "name": "Core/echo", "path": "a"},
    {"resultOf": "e", "name": "Core/echo", "path": "/a/01"},
    {"resultOf": "e"}, "string",
])
def test_invalid_result_reference(alice, ref):
    out = alice.request(["Core/echo", {"a": [1, 2]}, "e"], ["Core/echo", {"#v": ref}, "f"])
    assert out[1] == ["error", out[1][1], "f"] and out[1][1]["type"] == "invalidResultReference"


def test_reference_and_plain_argument_together_is_invalid(alice):
    out = alice.request(["Core/echo", {"a": 1}, "e"], ["Core/echo", {
        "v": 1, "#v": {"resultOf": "e", "name": "Core/echo", "path": "/a"}}, "f"])
    assert out[1][1]["type"] == "invalidArguments"


def test_creation_ids_cross_calls_and_created_ids_round_trip(alice):
    r = alice.post({"using": USING, "createdIds": {"old": "M1"}, "methodCalls": [
        ["Mailbox/set", {"accountId": alice.account, "create": {"p": {"name": "Parent"}}}, "1"],
        ["Mailbox/set", {"accountId": alice.account,
                         "create": {"c": {"name": "Child", "parentId": "#p"}}}, "2"],
        ["Mailbox/get", {"accountId": alice.account, "ids": ["#c", "#p"]}, "3"],
    ]}).json()
    parent = r["methodResponses"][0][1]["created"]["p"]["id"]
    child = r["methodResponses"][1][1]["created"]["c"]["id"]
    got = {m["id"]: m for m in r["methodResponses"][2][1]["list"]}
    assert got[child]["parentId"] == parent and got[child]["name"] == "Child"
    assert r["createdIds"] == {"old": "M1", "p": parent, "c": child}
    assert alice.ok("Mailbox/set", destroy=[child, parent])["destroyed"] == [child, parent]


def test_created_ids_absent_when_not_sent(alice):
    r = alice.post({"using": [CORE], "methodCalls": [["Core/echo", {}, "0"]]}).json()
    assert "createdIds" not in r
    assert isinstance(r["sessionState"], str)


# --- blobs -----------------------------------------------------------------------------

def test_upload_download_round_trip_with_name_and_type(alice):
    data = "naïve blob\x00\xff".encode("latin-1")
    up = alice.upload(data, "application/x-test")
    assert up["size"] == len(data) and up["accountId"] == alice.account
    url = (alice.session["downloadUrl"].replace("{accountId}", alice.account)
           .replace("{blobId}", up["blobId"]).replace("{name}", "r%C3%A9sum%C3%A9.bin")
           .replace("{type}", "application/pdf"))
    r = alice.http.get(url)
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "application/pdf"
    assert "filename*=UTF-8''r%C3%A9sum%C3%A9.bin" in r.headers["content-disposition"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in r.headers["content-security-policy"]


def test_upload_to_another_account_and_download_of_unknown_blob(alice, bob):
    url = alice.session["uploadUrl"].replace("{accountId}", bob.account)
    assert alice.http.post(url, content=b"x").status_code == 404
    up = alice.upload(b"alice only")
    for who, acct in ((bob, bob.account), (bob, alice.account)):
        url = (who.session["downloadUrl"].replace("{accountId}", acct)
               .replace("{blobId}", up["blobId"]).replace("{name}", "x").replace("{type}", "a/b"))
        assert who.http.get(url).status_code == 404


def test_upload_over_the_limit_is_refused_before_the_body(alice, server):
    limit = alice.session["capabilities"][CORE]["maxSizeUpload"]
    auth = base64.b64encode(f"{ALICE}:{PASSWORDS[ALICE]}".encode()).decode()
    with socket.create_connection(("127.0.0.1", server.ports["jmap"]), timeout=10) as sock:
        sock.sendall(f"POST /jmap/upload/{alice.account}/ HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Basic {auth}\r\nContent-Length: {limit + 1}\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["limit"] == "maxSizeUpload"


def test_blob_copy_within_the_account_and_refused_across(alice, bob):
    up = alice.upload(b"copy me")
    res = alice.ok("Blob/copy", fromAccountId=alice.account, blobIds=[up["blobId"], "Bnope"])
    assert res["copied"] == {up["blobId"]: up["blobId"]}
    assert res["notCopied"]["Bnope"]["type"] == "blobNotFound"
    name, res = bob.call("Blob/copy", fromAccountId=alice.account, blobIds=[up["blobId"]])
    assert name == "error" and res["type"] == "fromAccountNotFound"


def test_server_never_answers_500_to_odd_json(alice):
    odd = [{"using": [CORE], "methodCalls": [["Mailbox/get", {"accountId": alice.account,
                                                              "ids": [None, {"x": 1}]}, "0"]]},
           {"using": USING, "methodCalls": [["Email/query", {"accountId": alice.account,
                                                            "filter": {"operator": "NAND"}}, "0"]]},
           {"using": USING, "methodCalls": [["Email/get", {"accountId": alice.account,
                                                          "ids": ["E1"], "properties": [7]}, "0"]]}]
    for body in odd:
        r = alice.post(body)
        assert r.status_code == 200, r.text
        assert r.json()["methodResponses"][0][0] == "error", json.dumps(r.json())
    r = alice.post({"using": USING, "methodCalls": [["Email/set", {
        "accountId": alice.account, "create": {"x": {"mailboxIds": 5}}}, "0"]]})
    assert r.json()["methodResponses"][0][1]["notCreated"]["x"]["type"] == "invalidProperties"
