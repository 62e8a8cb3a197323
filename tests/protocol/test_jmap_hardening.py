"""JMAP against abuse, over real sockets to a real ``roost serve``: result
references that grow every call, request bodies from clients without good
credentials (chunked too), Origin on the event source and WebSocket, the
Server banner, what is not I-JSON, and push subscription URLs that point
inside the network."""

import base64
import json
import os
import socket
import time

import httpx
import pytest

from bench.proc import rss_bytes
from tests.conftest import RoostServer, add_user
from tests.jmap_helpers import ALICE, PASSWORDS, Client, WebSocket, fixtures

server, alice, bob = fixtures("jmaphard", listeners=("jmap",))
CORE = "urn:ietf:params:jmap:core"


def basic(user=ALICE, password=None):
    return base64.b64encode(f"{user}:{password or PASSWORDS[user]}".encode()).decode()


def read_reply(sock, timeout=5):
    """Status line and headers of the next reply (raises TimeoutError when none comes)."""
    sock.settimeout(timeout)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    return head.decode("latin-1")


def open_file_bytes(pid):
    """Bytes in the regular files ``pid`` holds open, the database aside
    (Twisted buffers request bodies in temporary files)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            path = os.readlink(f"/proc/{pid}/fd/{fd}")
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o100000 and ".db" not in path:
            total += st.st_size
    return total


# --- 1. result references ----------------------------------------------------------------

def test_references_that_double_every_call_are_refused(alice):
    ref = {"name": "Core/echo", "path": ""}
    calls = [["Core/echo", {"p": "x" * 200}, "0"]]
    for i in range(1, 22):
        calls.append(["Core/echo", {"#a": dict(ref, resultOf=str(i - 1)),
                                    "#b": dict(ref, resultOf=str(i - 1))}, str(i)])
    t = time.perf_counter()
    r = alice.post({"using": [CORE], "methodCalls": calls})
    took = time.perf_counter() - t
    assert r.status_code == 200
    responses = r.json()["methodResponses"]
    errors = [c for c in responses if c[0] == "error"]
    assert errors and errors[0][1]["type"] == "requestTooLarge", [c[1] for c in errors[:1]]
    assert responses[0] == ["Core/echo", {"p": "x" * 200}, "0"]
    assert len(r.content) < 40 * 1024 * 1024      # 2**21 * 230 octets if built
    assert took < 20, took
    assert alice.ok("Core/echo", {"still": "fine"}) == {"still": "fine", "accountId": alice.account}


# --- 2. bodies only from clients with good credentials -------------------------------------

@pytest.mark.parametrize("auth", [None, "Basic " + basic(ALICE, "wrong"), "Bearer nope"])
def test_unauthenticated_chunked_body_gets_401_before_it_is_sent(server, auth):
    pid = server.pid
    files, rss = open_file_bytes(pid), rss_bytes(pid)
    with socket.create_connection(("127.0.0.1", server.ports["jmap"]), timeout=10) as sock:
        sock.sendall(b"POST /jmap/api/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n" +
                     (f"Authorization: {auth}\r\n".encode() if auth else b"") + b"\r\n")
        head = read_reply(sock)         # not one byte of the body sent yet
        assert head.startswith("HTTP/1.1 401 "), head
        assert "www-authenticate: basic" in head.lower() and "connection: close" in head.lower()
        sent, chunk = 0, b"%x\r\n" % 65536 + b"{" * 65536 + b"\r\n"
        deadline = time.monotonic() + 1
        try:        # the server drops whatever still comes, then closes
            while time.monotonic() < deadline and sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
                assert open_file_bytes(pid) <= files + 1_000_000
        except OSError:
            pass
    assert open_file_bytes(pid) <= files + 1_000_000
    assert rss_bytes(pid) < rss + 20_000_000


def test_unauthenticated_upload_with_content_length_gets_401_first(server, alice):
    with socket.create_connection(("127.0.0.1", server.ports["jmap"]), timeout=10) as sock:
        sock.sendall(f"POST /jmap/upload/{alice.account}/ HTTP/1.1\r\nHost: x\r\n"
                     "Content-Length: 30000000\r\nExpect: 100-continue\r\n\r\n".encode())
        head = read_reply(sock)
    assert head.startswith("HTTP/1.1 401 "), head      # and no "100 Continue" before it


def test_good_credentials_get_100_continue_and_chunked_uploads_work(server, alice):
    with socket.create_connection(("127.0.0.1", server.ports["jmap"]), timeout=10) as sock:
        sock.sendall(f"POST /jmap/upload/{alice.account}/ HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Basic {basic()}\r\nContent-Type: text/plain\r\n"
                     "Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".encode())
        assert read_reply(sock).startswith("HTTP/1.1 100 Continue")
        sock.sendall(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        head = read_reply(sock)
        assert head.startswith("HTTP/1.1 201 "), head
        length = int(next(line for line in head.split("\r\n")
                          if line.lower().startswith("content-length:")).split(":")[1])
        body = b""
        while len(body) < length:
            body += sock.recv(length - len(body))
    assert json.loads(body)["size"] == 11
    # an ordinary small API request, body in the same packet as the headers, on one connection
    with httpx.Client(auth=(ALICE, PASSWORDS[ALICE])) as http:
        for i in range(3):
            r = http.post(alice.session["apiUrl"], json={"using": [CORE], "methodCalls": [
                ["Core/echo", {"i": i}, "0"]]})
            assert r.json()["methodResponses"] == [["Core/echo", {"i": i}, "0"]]
        r = httpx.post(alice.session["apiUrl"], auth=(ALICE, "wrong"),
                       json={"using": [CORE], "methodCalls": []})
        assert r.status_code == 401 and r.json()["status"] == 401


def test_chunked_body_past_the_largest_limit_is_cut_off(server, alice):
    limit = max(alice.session["capabilities"][CORE]["maxSizeUpload"],
                alice.session["capabilities"][CORE]["maxSizeRequest"])
    pid = server.pid
    files = open_file_bytes(pid)
    with socket.create_connection(("127.0.0.1", server.ports["jmap"]), timeout=10) as sock:
        sock.sendall(f"POST /jmap/upload/{alice.account}/ HTTP/1.1\r\nHost: x\r\n"
                     f"Authorization: Basic {basic()}\r\nTransfer-Encoding: chunked\r\n\r\n"
                     .encode())
        chunk = b"%x\r\n" % (1 << 20) + b"z" * (1 << 20) + b"\r\n"
        sent = 0
        try:
            while sent < limit + (8 << 20):
                sock.sendall(chunk)
                sent += 1 << 20
        except OSError:
            pass
        head = read_reply(sock, timeout=10)
    assert head.startswith("HTTP/1.1 413 "), head
    assert open_file_bytes(pid) <= files + 1_000_000


# --- 3. Origin and the banner --------------------------------------------------------------------

def test_event_source_and_websocket_check_origin(server, alice):
    port = server.ports["jmap"]
    url = (alice.session["eventSourceUrl"].replace("{types}", "*").replace("{closeafter}", "state")
           .replace("{ping}", "0"))
    for origin, status in (("https://evil.example", 403), ("null", 403),
                           (f"http://127.0.0.1:{port + 1}", 403), (f"http://localhost:{port}", 403),
                           (f"http://127.0.0.1:{port}", 200), (None, 200),
                           # the scheme is not compared: behind a TLS proxy the page is https
                           (f"https://127.0.0.1:{port}", 200)):
        headers = {"Origin": origin} if origin else {}
        with httpx.stream("GET", url, headers=headers, auth=(ALICE, PASSWORDS[ALICE]),
                          timeout=10) as r:
            assert r.status_code == status, (origin, r.status_code)
        ws = WebSocket(port, headers=[f"Authorization: Basic {basic()}"] +
                       ([f"Origin: {origin}"] if origin else []))
        ws.close()
        assert ws.status == 101 if status == 200 else ws.status in (400, 403), (origin, ws.status)


def test_configured_origins_are_let_in(tmp_path):
    data = tmp_path / "data"
    add_user(data, ALICE, PASSWORDS[ALICE])
    config = tmp_path / "roost.toml"
    config.write_text('[jmap]\nallowed_origins = ["https://webmail.example.org"]\n')
    srv = RoostServer(data, listeners=("jmap",), config=config).start()
    try:
        port = srv.ports["jmap"]
        for origin, status in (("https://webmail.example.org", 101), ("https://other.example", 403)):
            ws = WebSocket(port, headers=[f"Authorization: Basic {basic()}", f"Origin: {origin}"])
            assert ws.status == status, origin
            ws.close()
    finally:
        srv.stop()


def test_server_banner_names_no_library(server, alice):
    port = server.ports["jmap"]
    r = alice.http.get(f"http://127.0.0.1:{port}/jmap/session")
    assert r.headers["server"] == "Roost"
    r = httpx.get(f"http://127.0.0.1:{port}/jmap/ws?redirect=https%3A%2F%2Fevil.example")
    text = (str(r.headers) + r.text).lower()
    assert r.status_code != 303 and "autobahn" not in text and "twisted" not in text, text
    ws = WebSocket(port, headers=[f"Authorization: Basic {basic()}"])
    assert ws.status == 101
    assert "autobahn" not in ws.headers and "twisted" not in ws.headers, ws.headers
    ws.close()
    for ws in (WebSocket(port), WebSocket(port, protocol=None)):   # refusals say nothing either
        assert "autobahn" not in ws.headers and "twisted" not in ws.headers, ws.headers
        ws.close()


# --- 4. not I-JSON -------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    b'{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["Core/echo",{"x":"\\ud800"},"0"]]}',
    b'{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["Core/echo",{"\\udc00":1},"0"]]}',
    b'{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["Core/echo",{"x":' + b"[" * 100
    + b"]" * 100 + b'},"0"]]}',
    b"[" * 200000 + b"]" * 200000,
    b'{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["Core/echo",{"x":NaN},"0"]]}',
    b'{"using":["urn:ietf:params:jmap:core"],"methodCalls":[["Core/echo",{"x":1e999},"0"]]}',
])
def test_what_is_not_i_json_is_not_json(alice, body):
    r = alice.http.post(alice.session["apiUrl"], content=body,
                        headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "urn:ietf:params:jmap:error:notJSON"


def test_websocket_message_with_a_lone_surrogate_is_not_json(server):
    ws = WebSocket(server.ports["jmap"], headers=[f"Authorization: Basic {basic()}"])
    try:
        ws.send('{"@type":"Request","id":"s","using":["urn:ietf:params:jmap:core"],'
                '"methodCalls":[["Core/echo",{"x":"\\ud800"},"0"]]}')
        err = json.loads(ws.recv())
        assert err["@type"] == "RequestError" and err["type"].endswith("notJSON"), err
        ws.send('{"@type":"Request","using":["urn:ietf:params:jmap:core"],'
                '"methodCalls":[["Core/echo",{"x":"\\ud83d\\ude00"},"0"]]}')
        assert json.loads(ws.recv())["methodResponses"] == [["Core/echo", {"x": "\U0001F600"}, "0"]]
    finally:
        ws.close()


# --- 5. push subscription URLs ----------------------------------------------------------------

PRIVATE_URLS = ["https://127.0.0.1/p", "https://127.1.2.3:8443/p", "https://localhost/p",
                "https://10.0.0.1/p", "https://192.168.1.1/p", "https://172.16.0.1/p",
                "https://169.254.169.254/latest/meta-data", "https://[::1]/p", "https://[fe80::1]/p",
                "https://[fc00::1]/p", "https://[::ffff:127.0.0.1]/p", "https://0.0.0.0/p",
                "https://224.0.0.1/p", "https://[ff02::1]/p", "https://100.64.0.1/p"]


def test_push_subscriptions_to_private_addresses_are_refused(alice):
    create = {f"c{i}": {"deviceClientId": "d", "url": url} for i, url in enumerate(PRIVATE_URLS)}
    # a name that does not resolve now is let through (each push checks again)
    create["public"] = {"deviceClientId": "d", "url": "https://push.invalid.example/x"}
    out = alice.request(["PushSubscription/set", {"create": create}, "0"], using=[CORE])[0][1]
    for i, url in enumerate(PRIVATE_URLS):
        err = out["notCreated"][f"c{i}"]
        assert err["type"] == "invalidProperties" and err["properties"] == ["url"], url
    assert set(out["created"]) == {"public"}
    alice.request(["PushSubscription/set", {"destroy": [out["created"]["public"]["id"]]}, "0"],
                  using=[CORE])


def test_push_allow_private_lets_them_in(tmp_path):
    data = tmp_path / "data"
    add_user(data, ALICE, PASSWORDS[ALICE])
    config = tmp_path / "roost.toml"
    config.write_text("[jmap]\npush_allow_private = true\n")
    srv = RoostServer(data, listeners=("jmap",), config=config).start()
    client = Client(srv, ALICE)
    try:
        out = client.request(["PushSubscription/set", {"create": {
            "p": {"deviceClientId": "d", "url": "https://127.0.0.1:9/p"}}}, "0"], using=[CORE])
        assert out[0][1]["created"]["p"]["id"]
    finally:
        client.close()
        srv.stop()


def test_an_account_holds_a_bounded_number_of_push_subscriptions(alice):
    create = {f"c{i}": {"deviceClientId": "d", "url": "https://push.invalid.example/x"}
              for i in range(60)}
    out = alice.request(["PushSubscription/set", {"create": create}, "0"], using=[CORE])[0][1]
    assert 0 < len(out["created"]) <= 50
    assert {e["type"] for e in out["notCreated"].values()} == {"overQuota"}
    ids = [c["id"] for c in out["created"].values()]
    out = alice.request(["PushSubscription/set", {"destroy": ids}, "0"], using=[CORE])[0][1]
    assert len(out["destroyed"]) == len(ids)


def test_push_subscription_types_must_be_a_list_of_names(alice):
    out = alice.request(["PushSubscription/set", {"create": {"p": {
        "deviceClientId": "d", "url": "https://push.invalid.example/x"}}}, "0"], using=[CORE])
    sid = out[0][1]["created"]["p"]["id"]
    for bad in (7, "Email", {"Email": True}, [1]):
        out = alice.request(["PushSubscription/set", {"update": {sid: {"types": bad}}}, "0"],
                            using=[CORE])[0][1]
        assert out["notUpdated"][sid]["type"] == "invalidProperties", bad
    out = alice.request(["PushSubscription/set", {"update": {sid: {"types": ["Email"]}},
                                                  "destroy": [sid]}, "0"], using=[CORE])[0][1]
    assert out["updated"] == {sid: None} and out["destroyed"] == [sid]
