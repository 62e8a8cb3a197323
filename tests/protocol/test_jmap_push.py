"""JMAP push against a real ``roost serve``: the event source (RFC 8620 7.3)
and the WebSocket transport (RFC 8887), driven by LMTP deliveries and JMAP
writes; tickets and cookies for browsers."""

import json
import threading
import time

import httpx

from tests.jmap_helpers import ALICE, BOB, PASSWORDS, Client, WebSocket, fixtures, lmtp_deliver, message


server, alice, bob = fixtures("jmappush")


class EventReader:
    """Reads server-sent events from an open streaming response on a thread."""

    def __init__(self, url, **kw):
        self.events = []
        self.status = None
        self.headers = {}
        self.done = threading.Event()
        self.opened = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(url, kw), daemon=True)
        self.thread.start()
        assert self.opened.wait(10), "event source did not open"

    def _run(self, url, kw):
        with httpx.Client(timeout=httpx.Timeout(30, read=30)) as http, \
                http.stream("GET", url, **kw) as r:
            self.status, self.headers = r.status_code, r.headers
            self.opened.set()
            event = {}
            try:
                for line in r.iter_lines():
                    if line == "":
                        if "event" in event:
                            event["at"] = time.monotonic()
                            self.events.append(event)
                        event = {}
                        continue
                    if line.startswith(":"):
                        continue
                    k, _, v = line.partition(":")
                    event[k] = v[1:] if v.startswith(" ") else v
            except httpx.HTTPError:
                pass
        self.done.set()

    def wait_for(self, kind, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e["event"] == kind:
                    return e
            time.sleep(0.005)
        return None


def es_url(alice, types="*", closeafter="no", ping="0"):
    return (alice.session["eventSourceUrl"].replace("{types}", types)
            .replace("{closeafter}", closeafter).replace("{ping}", ping))


def test_event_source_pushes_an_lmtp_delivery(alice, server):
    reader = EventReader(es_url(alice, types="Email,Mailbox"), auth=(ALICE, PASSWORDS[ALICE]))
    assert reader.status == 200
    assert reader.headers["content-type"].startswith("text/event-stream")
    time.sleep(0.2)
    lmtp_deliver(server.ports["lmtp"], ALICE, message("pushed"))
    event = reader.wait_for("state")
    assert event is not None, "no state event"
    change = json.loads(event["data"])
    assert change["@type"] == "StateChange"
    states = change["changed"][alice.account]
    assert set(states) <= {"Email", "Mailbox"} and "Email" in states
    assert states["Email"] == alice.ok("Email/get", ids=[])["state"]
    assert event["id"].isdigit()


def test_event_source_close_after_state_and_ping(alice):
    reader = EventReader(es_url(alice, closeafter="state", ping="1"),
                         auth=(ALICE, PASSWORDS[ALICE]))
    ping = reader.wait_for("ping", timeout=5)
    assert json.loads(ping["data"]) == {"interval": 1} and "id" not in ping
    alice.draft("close after state")
    assert reader.wait_for("state") is not None
    assert reader.done.wait(5), "closeafter=state did not end the response"


def test_event_source_types_filter_and_last_event_id(alice):
    before = alice.ok("Email/get", ids=[])["state"]
    reader = EventReader(es_url(alice, types="VacationResponse"), auth=(ALICE, PASSWORDS[ALICE]))
    alice.draft("not for this stream")
    time.sleep(0.3)
    assert reader.wait_for("state", timeout=0.1) is None
    # reconnecting with an old Last-Event-ID gets the missed change at once
    catch_up = EventReader(es_url(alice, types="Email"),
                           auth=(ALICE, PASSWORDS[ALICE]), headers={"Last-Event-ID": before})
    event = catch_up.wait_for("state", timeout=5)
    assert event is not None and "Email" in json.loads(event["data"])["changed"][alice.account]


def test_event_source_auth_ticket_and_cookie(alice, server):
    r = httpx.get(es_url(alice))
    assert r.status_code == 401
    ticket = alice.http.post(alice.session["apiUrl"].replace("/api/", "/ticket")).json()["ticket"]
    reader = EventReader(es_url(alice) + "&ticket=" + ticket)
    assert reader.status == 200
    bad = httpx.get(es_url(alice) + "&ticket=" + ticket[:-1] + ("0" if ticket[-1] != "0" else "1"))
    assert bad.status_code == 401
    cookie = alice.http.get(f"http://127.0.0.1:{server.ports['jmap']}/jmap/session")
    value = cookie.headers["set-cookie"].split(";")[0]
    assert "HttpOnly" in cookie.headers["set-cookie"]
    reader2 = EventReader(es_url(alice), headers={"Cookie": value})
    assert reader2.status == 200
    # a cookie is not enough for the API (no cross-site request forgery)
    r = httpx.post(alice.session["apiUrl"], headers={"Cookie": value},
                   json={"using": ["urn:ietf:params:jmap:core"], "methodCalls": []})
    assert r.status_code == 401


def _auth_header(user):
    import base64
    return "Authorization: Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()


def test_websocket_requests_and_push(alice, server):
    ws = WebSocket(server.ports["jmap"], headers=[_auth_header(ALICE)])
    assert ws.status == 101 and "sec-websocket-protocol: jmap" in ws.headers
    ws.send(json.dumps({"@type": "Request", "id": "r1", "using": ["urn:ietf:params:jmap:core"],
                        "methodCalls": [["Core/echo", {"x": 1}, "0"]]}))
    resp = json.loads(ws.recv())
    assert resp["@type"] == "Response" and resp["requestId"] == "r1"
    assert resp["methodResponses"] == [["Core/echo", {"x": 1}, "0"]]
    ws.send("not json")
    err = json.loads(ws.recv())
    assert err["@type"] == "RequestError" and err["type"].endswith("notJSON")
    ws.send(json.dumps({"@type": "Request", "id": "r2", "using": ["urn:x"], "methodCalls": []}))
    err = json.loads(ws.recv())
    assert err["type"].endswith("unknownCapability") and err["requestId"] == "r2"
    ws.send(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": ["Email"]}))
    time.sleep(0.2)
    lmtp_deliver(server.ports["lmtp"], ALICE, message("pushed over ws"))
    push = json.loads(ws.recv())
    assert push["@type"] == "StateChange" and "Email" in push["changed"][alice.account]
    assert push["pushState"].isdigit()
    ws.send(json.dumps({"@type": "WebSocketPushDisable"}))
    ws.close()


def test_websocket_needs_auth_and_the_subprotocol(server, alice):
    ws = WebSocket(server.ports["jmap"])
    assert ws.status == 401
    ws.close()
    ticket = alice.http.post(alice.session["apiUrl"].replace("/api/", "/ticket")).json()["ticket"]
    ws = WebSocket(server.ports["jmap"], path="/jmap/ws?ticket=" + ticket)
    assert ws.status == 101
    ws.send(json.dumps({"@type": "Request", "using": ["urn:ietf:params:jmap:core"],
                        "methodCalls": [["Core/echo", {}, "0"]]}))
    assert json.loads(ws.recv())["methodResponses"] == [["Core/echo", {}, "0"]]
    ws.close()
    ws = WebSocket(server.ports["jmap"], headers=[_auth_header(BOB)], protocol=None)
    assert ws.status == 400
    ws.close()


def test_push_never_crosses_accounts(alice, server):
    bob = Client(server, BOB)
    try:
        reader = EventReader(es_url(bob), auth=(BOB, PASSWORDS[BOB]))
        lmtp_deliver(server.ports["lmtp"], ALICE, message("alice only"))
        time.sleep(0.3)
        assert reader.wait_for("state", timeout=0.1) is None
    finally:
        bob.close()


def test_push_subscription_lifecycle(alice, server):
    core = ["urn:ietf:params:jmap:core"]
    out = alice.request(["PushSubscription/set", {"create": {"p": {
        "deviceClientId": "phone-1", "url": "https://push.invalid.example/x",
        "types": ["Email"], "keys": {"p256dh": "x", "auth": "y"}}, "bad": {
        "deviceClientId": "d", "url": "http://plain.example/"}}}, "0"], using=core)
    res = out[0][1]
    sid = res["created"]["p"]["id"]
    assert res["created"]["p"]["expires"].endswith("Z")
    assert res["notCreated"]["bad"]["type"] == "invalidProperties"
    got = alice.request(["PushSubscription/get", {"ids": None}, "0"], using=core)[0][1]["list"]
    mine = next(s for s in got if s["id"] == sid)
    assert "url" not in mine and "keys" not in mine and mine["verificationCode"] is None
    out = alice.request(["PushSubscription/set", {"update": {sid: {"verificationCode": "wrong"}}},
                         "0"], using=core)
    assert out[0][1]["notUpdated"][sid]["type"] == "invalidProperties"
    out = alice.request(["PushSubscription/get", {"accountId": alice.account}, "0"], using=core)
    assert out[0][1]["type"] == "invalidArguments"
    out = alice.request(["PushSubscription/set", {"destroy": [sid]}, "0"], using=core)
    assert out[0][1]["destroyed"] == [sid]
    bob = Client(server, BOB)
    try:
        out = bob.request(["PushSubscription/get", {"ids": [sid]}, "0"], using=core)
        assert out[0][1]["notFound"] == [sid]
    finally:
        bob.close()

