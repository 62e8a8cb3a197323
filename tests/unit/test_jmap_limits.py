"""Bounds of JMAP request processing (``core``): result references that grow
every call, the size of the whole response, what ``loads`` refuses as
notJSON, and the JSON size meter."""

import json
import time

import pytest

from roost.protocols.jmap import core
from roost.protocols.jmap.blobs import Backend
from roost.storage.delivery import Delivery
from roost.storage.store import Store

from tests.conftest import append

CORE = "urn:ietf:params:jmap:core"
USING = [CORE, "urn:ietf:params:jmap:mail", "urn:ietf:params:jmap:blob"]


@pytest.fixture
def world():
    store = Store.memory()
    delivery = Delivery(store)
    acct = store.add_account("a@example.org")
    yield Backend(store, delivery), acct
    delivery.close()
    store.close()


def echo_chain(calls, payload=200, refs=2):
    """Call 0 echoes ``payload`` octets; call i echoes call i-1's whole
    arguments ``refs`` times: each result is ``refs`` times the one before."""
    out = [["Core/echo", {"p": "x" * payload}, "0"]]
    for i in range(1, calls):
        out.append(["Core/echo", {f"#r{j}": {"resultOf": str(i - 1), "name": "Core/echo",
                                             "path": ""} for j in range(refs)}, str(i)])
    return {"using": [CORE], "methodCalls": out}


def test_growing_references_are_refused_before_the_response_is_built(world):
    backend, acct = world
    t = time.perf_counter()
    result = core.process(backend, acct, echo_chain(32))
    took = time.perf_counter() - t
    responses = result["methodResponses"]
    assert len(responses) == 32
    errors = [r for r in responses if r[0] == "error"]
    assert errors and errors[0][1]["type"] == "requestTooLarge"
    # the calls after reference an error
    assert all(r[1]["type"] == "invalidResultReference" for r in errors[1:])
    first = responses.index(errors[0])
    assert first > 5 and all(r[0] == "Core/echo" for r in responses[:first])
    assert responses[1][1] == {"r0": {"p": "x" * 200}, "r1": {"p": "x" * 200}}
    size = len(json.dumps(result))
    assert size <= core.MAX_SIZE_RESPONSE, size
    assert took < 30, took      # the expanded response would be 2**31 * 200 octets


def test_references_alone_are_bounded(world, monkeypatch):
    backend, acct = world
    # one call with many references to a result of 100 KB: 2 MB resolved
    monkeypatch.setattr(core, "MAX_SIZE_REFERENCES", 1_000_000)
    calls = [["Core/echo", {"p": "x" * 100_000}, "0"],
             ["Core/echo", {f"#r{j}": {"resultOf": "0", "name": "Core/echo", "path": "/p"}
                            for j in range(20)}, "1"],
             ["Core/echo", {"#r": {"resultOf": "0", "name": "Core/echo", "path": "/p"}}, "2"]]
    out = core.process(backend, acct, {"using": [CORE], "methodCalls": calls})["methodResponses"]
    assert out[0][0] == "Core/echo"
    assert out[1][0] == "error" and out[1][1]["type"] == "requestTooLarge"
    assert "reference" in out[1][1]["description"]
    assert out[2][0] == "Core/echo"     # the budget left still serves a small one


def test_a_read_past_the_response_bound_is_an_error_and_a_write_keeps_its_answer(
        world, monkeypatch):
    backend, acct = world
    monkeypatch.setattr(core, "MAX_SIZE_RESPONSE", 50_000)
    calls = [["Core/echo", {"p": "x" * 40_000}, "0"],
             ["Core/echo", {"p": "y" * 20_000}, "1"],
             ["Mailbox/set", {"accountId": f"A{acct.id}", "create": {
                 "m": {"name": "n" * 200}}}, "2"],
             ["Core/echo", {"p": "small"}, "3"]]
    out = core.process(backend, acct, {"using": USING, "methodCalls": calls})["methodResponses"]
    assert out[0][0] == "Core/echo"
    assert out[1] == ["error", {"type": "requestTooLarge", "description": out[1][1]["description"]},
                      "1"]
    assert out[2][0] == "Mailbox/set" and out[2][1]["created"]["m"]["id"]
    assert out[3][0] == "Core/echo"


def test_email_get_stops_building_at_the_response_bound(world, monkeypatch):
    backend, acct = world
    inbox = backend.store.mailbox(acct.id, "INBOX")
    body = b"line of text\r\n" * 2000
    for i in range(6):
        append(backend.delivery, acct, inbox, b"From: a@example.org\r\nSubject: big\r\n"
               b"Message-ID: <%d@x>\r\n\r\n" % i + body)
    monkeypatch.setattr(core, "MAX_SIZE_RESPONSE", 100_000)
    built = []
    real = core.Context.spend

    def spend(self, value):
        built.append(value)
        return real(self, value)
    monkeypatch.setattr(core.Context, "spend", spend)
    aid = f"A{acct.id}"
    calls = [["Email/query", {"accountId": aid}, "q"],
             ["Email/get", {"accountId": aid, "#ids": {"resultOf": "q", "name": "Email/query",
                                                       "path": "/ids"},
                            "fetchAllBodyValues": True, "properties": ["bodyValues"]}, "g"]]
    out = core.process(backend, acct, {"using": USING, "methodCalls": calls})["methodResponses"]
    assert out[1][0] == "error" and out[1][1]["type"] == "requestTooLarge"
    assert len(built) == 4          # 28 KB each: the fourth passes the bound, the rest are not read


@pytest.mark.parametrize("text", [
    '{"a": "\\ud800"}', '["\\udfff"]', '{"\\udbff": 1}', '["x\\ud800y"]',
    "[" * 65 + "]" * 65, "[" * 100000 + "]" * 100000, '{"a": ' * 70 + "1" + "}" * 70,
    "[NaN]", "[Infinity]", "[-Infinity]", "[1e400]", "[" + "9" * 5000 + "]",
    b'["\xed\xa0\x80"]', b'["\xff"]', "{not json",
])
def test_loads_refuses_what_is_not_i_json(text):
    with pytest.raises(core.RequestError) as err:
        core.loads(text.encode() if isinstance(text, str) else text)
    assert err.value.type == "urn:ietf:params:jmap:error:notJSON" and err.value.status == 400


def test_loads_takes_what_is():
    for doc in ({"a": "\U0001F600 \u00e9", "n": [1, 2.5, -3e10, True, None]},
                json.loads("[" * 64 + "]" * 64)):
        assert core.loads(json.dumps(doc).encode()) == doc
    assert core.loads(b'["\\ud83d\\ude00"]') == ["\U0001F600"]     # a pair is one character


def test_size_meter_matches_json_and_shares_work():
    meter = core.SizeMeter()
    doc = {"a": [1, 2.5, None, True, False, "x\u00e9"], "b": {}, "c": [], "d": {"e": "f"}}
    assert meter.size(doc) == len(json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
                                  .encode())
    big = {"p": "x" * 10}
    for _ in range(200):            # 2**200 leaves once expanded
        big = {"a": big, "b": big}
    t = time.perf_counter()
    assert meter.size(big) > 2 ** 200
    assert time.perf_counter() - t < 1


def test_blob_upload_stops_reading_sources_at_the_limit(world, monkeypatch):
    backend, acct = world
    aid = f"A{acct.id}"
    up = core.process(backend, acct, {"using": USING, "methodCalls": [["Blob/upload", {
        "accountId": aid, "create": {"b": {"data": [{"data:asText": "x" * 600}]}}}, "0"]]})
    blob_id = up["methodResponses"][0][1]["created"]["b"]["id"]
    monkeypatch.setitem(core.LIMITS, "maxSizeUpload", 1000)
    reads = []
    real = backend.blob_bytes
    monkeypatch.setattr(backend, "blob_bytes", lambda *a: reads.append(a) or real(*a))
    out = core.process(backend, acct, {"using": USING, "methodCalls": [["Blob/upload", {
        "accountId": aid, "create": {"c": {"data": [{"blobId": blob_id}] * 64}}}, "0"]]})
    assert out["methodResponses"][0][1]["notCreated"]["c"]["type"] == "tooLarge"
    assert len(reads) == 2
