"""JMAP EmailSubmission (RFC 8621 section 7) over HTTP against a real ``roost
serve``, sending through its outbound queue.

Two servers. ``relayed`` sends at once (no undo window) and its relay
delivers to an aiosmtpd smarthost on loopback that accepts, rejects (550) or
defers (451) by recipient: the whole path, submission to SMTP and back into
``deliveryStatus``. ``held`` has ``[jmap] undo_send = 600``: nothing leaves
during a test, so the test plays the relay itself, in-process, on the same
data directory (``Outbound.claim`` with a clock an hour ahead, then
``Outbound.record``), and looks at the queue rows directly.
"""

import json
import socket
import time

import pytest
from aiosmtpd.controller import Controller

from roost.server import config as configmod
from roost.server.app import open_outbound
from roost.storage.delivery import Delivery
from roost.storage.outbound import Result
from roost.storage.store import Store
from tests.conftest import RoostServer, add_user, wait_for
from tests.jmap_helpers import ALICE, BOB, PASSWORDS, Client
from tests.protocol.test_relay import Sink

SUB = "urn:ietf:params:jmap:submission"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp_path_factory, name, config):
    root = tmp_path_factory.mktemp(name)
    data = root / "data"
    for user, password in PASSWORDS.items():
        add_user(data, user, password)
    (root / "roost.toml").write_text(config)
    return RoostServer(data, listeners=("jmap", "lmtp"), config=root / "roost.toml").start()


@pytest.fixture(scope="module")
def sink():
    sink = Sink()
    sink.behaviour = lambda rcpt: ("550 5.1.1 no such user here" if rcpt.startswith("reject@") else
                                   "451 4.3.0 try again later" if rcpt.startswith("later@") else None)
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield sink, controller.port
    controller.stop()


@pytest.fixture(scope="module")
def relayed(tmp_path_factory, sink):
    srv = start_server(tmp_path_factory, "relayed", f'[relay]\nsmarthost = "127.0.0.1:{sink[1]}"\n'
                       'smarthost_tls = "none"\n')
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def held(tmp_path_factory):
    srv = start_server(tmp_path_factory, "held", "[jmap]\nundo_send = 600\n")
    yield srv
    srv.stop()


def client(server, user=ALICE):
    return Client(server, user)


@pytest.fixture(scope="module")
def alice(relayed):
    c = client(relayed)
    yield c
    c.close()


@pytest.fixture(scope="module")
def bob(relayed):
    c = client(relayed, BOB)
    yield c
    c.close()


@pytest.fixture(scope="module")
def halice(held):
    c = client(held)
    yield c
    c.close()


@pytest.fixture(scope="module")
def hbob(held):
    c = client(held, BOB)
    yield c
    c.close()


@pytest.fixture(scope="module")
def queue(held):
    """The held server's outbound queue, opened by this process with a clock
    an hour ahead (so its undo windows are over for ``claim``)."""
    store = Store.open(held.data)
    q = open_outbound(configmod.Config(data=held.data, hostname="mx.test"), store, Delivery(store))
    q.clock = lambda: time.time() + 3600
    yield q
    store.close()


def identity(c):
    return c.ok("Identity/get")["list"][0]["id"]


def submit(c, eid, envelope=None, **args):
    obj = {"identityId": identity(c), "emailId": eid}
    if envelope is not None:
        obj["envelope"] = envelope
    return c.ok("EmailSubmission/set", create={"s": obj}, **args)


def envelope(*rcpts, mail_from=ALICE, params=None):
    return {"mailFrom": {"email": mail_from, "parameters": params},
            "rcptTo": [r if isinstance(r, dict) else {"email": r, "parameters": None} for r in rcpts]}


def get(c, sid):
    (sub,) = c.ok("EmailSubmission/get", ids=[sid])["list"]
    return sub


def queued_message(q, sid):
    (msg,) = [m for m in q.list() if m["submission_id"] == int(sid[1:])]
    return q.show(msg["id"])


def play_relay(q, message_id, replies):
    """Claim what is due; answer this message's recipients with ``replies``
    (address -> reply; local ones are stored through ``deliver_local``) and
    give every other message back untouched."""
    results = []
    for work in q.claim():
        if work.message_id != message_id:
            q.retry(work.message_id)
        elif work.local:
            results += q.deliver_local(work)
        else:
            results += [Result(rid, replies[addr], "mx.remote.test") for rid, addr in work.rcpts]
    assert results, "nothing of that message was due"
    q.record(results)
    return results


def sent_state(c):
    return c.ok("EmailSubmission/get", ids=[])["state"]


def stored_bytes(c, eid):
    blob = c.ok("Email/get", ids=[eid], properties=["blobId"])["list"][0]["blobId"]
    url = c.session["downloadUrl"].replace("{accountId}", c.account).replace(
        "{blobId}", blob).replace("{name}", "m.eml").replace("{type}", "message/rfc822")
    return c.http.get(url).content


# --- the capability ------------------------------------------------------------------

def test_the_capability_says_what_the_queue_honours(alice):
    cap = alice.session["accounts"][alice.account]["accountCapabilities"][SUB]
    assert cap["maxDelayedSend"] == 7 * 86400
    ext = cap["submissionExtensions"]
    assert set(ext) == {"FUTURERELEASE", "DSN", "SIZE", "8BITMIME", "SMTPUTF8", "REQUIRETLS"}
    interval, latest = ext["FUTURERELEASE"]
    assert interval == "604800"
    until = time.mktime(time.strptime(latest, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(until - (time.time() + 604800)) < 60
    assert ext["SIZE"] == [str(50 * 1024 * 1024)] and ext["DSN"] == []


# --- sending through the real relay ------------------------------------------------------------

def test_local_and_remote_recipients_are_sent_bcc_removed(alice, bob, sink):
    received, _port = sink
    drafts, sent = alice.mailbox("drafts"), alice.mailbox("sent")
    eid = alice.draft("out into the world", to="ok@remote.test", cc=[{"email": BOB}],
                      bcc=[{"email": "hidden@remote.test"}])
    before = sent_state(alice)
    res = alice.request(["EmailSubmission/set", {
        "accountId": alice.account, "create": {"s": {"identityId": identity(alice), "emailId": eid}},
        "onSuccessUpdateEmail": {"#s": {"keywords/$draft": None, f"mailboxIds/{drafts}": None,
                                        f"mailboxIds/{sent}": True}}}, "0"])
    assert [r[0] for r in res] == ["EmailSubmission/set", "Email/set"]
    created = res[0][1]["created"]["s"]
    sid = created["id"]
    assert created["undoStatus"] == "final" and created["threadId"].startswith("T")
    assert created["deliveryStatus"][BOB]["delivered"] == "yes"
    assert res[1][1]["updated"] == {eid: None}
    e = alice.ok("Email/get", ids=[eid], properties=["keywords", "mailboxIds"])["list"][0]
    assert e == {"id": eid, "keywords": {}, "mailboxIds": {sent: True}}
    assert bob.ok("Email/query", filter={"subject": "out into the world"})["ids"]
    # The relay hands it to the smarthost: both remote recipients, no Bcc field.
    got = wait_for(lambda: [r for r in received.received if "ok@remote.test" in r[1]], timeout=15)
    assert got, "the relay never delivered to the smarthost"
    mail_from, rcpts, content, _tls = got[0]
    assert mail_from == ALICE and sorted(rcpts) == ["hidden@remote.test", "ok@remote.test"]
    stored = stored_bytes(alice, eid)
    assert b"\nBcc: hidden@remote.test\r\n" in stored
    assert content == stored.replace(b"Bcc: hidden@remote.test\r\n", b"")
    # The 250 comes back into deliveryStatus, as a change /changes reports.
    sub = wait_for(lambda: (lambda s: s if s["deliveryStatus"]["ok@remote.test"]["delivered"] == "yes"
                            else None)(get(alice, sid)), timeout=15)
    assert sub, get(alice, sid)
    status = sub["deliveryStatus"]
    assert status["ok@remote.test"]["smtpReply"].startswith("250")
    assert status["hidden@remote.test"]["delivered"] == "yes"
    assert set(status) == {"ok@remote.test", "hidden@remote.test", BOB}
    assert all(s["displayed"] == "unknown" for s in status.values())
    assert sub["envelope"]["mailFrom"] == {"email": ALICE, "parameters": None}
    ch = alice.ok("EmailSubmission/changes", sinceState=before)
    assert ch["created"] == [sid] and ch["updated"] == []      # created and updated since: created


def test_a_rejection_and_a_deferral_reach_delivery_status_and_suppress(alice, sink):
    eid = alice.draft("some will not arrive", to="reject@remote.test")
    sid = submit(alice, eid, envelope("reject@remote.test", "later@remote.test"))["created"]["s"]["id"]

    def settled():
        st = get(alice, sid)["deliveryStatus"]
        return st if all(not v["smtpReply"].endswith("queued") for v in st.values()) else None
    st = wait_for(settled, timeout=15)
    assert st, get(alice, sid)
    assert st["reject@remote.test"]["delivered"] == "no"
    assert st["reject@remote.test"]["smtpReply"] == "550 5.1.1 no such user here"
    assert st["later@remote.test"] == {"smtpReply": "451 4.3.0 try again later",
                                       "delivered": "queued", "displayed": "unknown"}
    # The bounce: a DSN in alice's inbox (NOTIFY defaults to FAILURE) ...
    assert wait_for(lambda: alice.ok("Email/query", filter={
        "inMailbox": alice.mailbox("inbox"), "text": "reject@remote.test"})["ids"], timeout=10)
    # ... and the address is suppressed: the next send to it fails at once.
    eid2 = alice.draft("try again", to="reject@remote.test")
    created = submit(alice, eid2)["created"]["s"]
    st2 = created["deliveryStatus"]["reject@remote.test"]
    assert st2["delivered"] == "no" and st2["smtpReply"].startswith("550 5.1.1 <reject@remote.test>")
    assert created["undoStatus"] == "final"
    res = alice.ok("EmailSubmission/set", update={created["id"]: {"undoStatus": "canceled"}})
    assert res["notUpdated"][created["id"]]["type"] == "cannotUnsend"


# --- undo send and the queue's outcomes (held server, the test plays the relay) -------------------

def test_undo_window_then_cancel(halice, hbob, queue):
    eid = halice.draft("think twice", to="ok@remote.test", cc=[{"email": BOB}])
    t0 = time.time()
    created = submit(halice, eid)["created"]["s"]
    sid = created["id"]
    assert created["undoStatus"] == "pending"
    sub = get(halice, sid)
    assert sub["undoStatus"] == "pending"
    assert abs(time.mktime(time.strptime(sub["sendAt"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
               - t0) < 5                           # sendAt: creation time (no FUTURERELEASE)
    assert {a: s["delivered"] for a, s in sub["deliveryStatus"].items()} == {
        "ok@remote.test": "queued", BOB: "queued"}
    msg = queued_message(queue, sid)
    assert 590 < msg["release_at"] - t0 < 610 and not msg["held"]
    assert [r["state"] for r in msg["rcpts"]] == ["queued", "queued"]
    assert not hbob.ok("Email/query", filter={"subject": "think twice"})["ids"]   # not yet
    state = sent_state(halice)
    res = halice.ok("EmailSubmission/set", update={sid: {"undoStatus": "canceled"}},
                    onSuccessUpdateEmail={sid: {"keywords/$seen": True}})
    assert res["updated"] == {sid: None}
    assert get(halice, sid)["undoStatus"] == "canceled"
    assert sid in halice.ok("EmailSubmission/changes", sinceState=state)["updated"]
    assert {r["state"] for r in queue.show(msg["id"])["rcpts"]} == {"canceled"}
    assert halice.ok("Email/get", ids=[eid], properties=["keywords"])["list"][0]["keywords"] == {
        "$draft": True, "$seen": True}
    # Nothing goes: the relay finds nothing due for it, Bob never gets it.
    assert all(w.message_id != msg["id"] for w in queue.claim())
    assert not hbob.ok("Email/query", filter={"subject": "think twice"})["ids"]
    again = halice.ok("EmailSubmission/set", update={sid: {"undoStatus": "canceled"}},
                      onSuccessDestroyEmail=[sid])
    assert again["updated"] == {sid: None}
    res = halice.ok("EmailSubmission/set", update={sid: {"undoStatus": "pending"}})
    assert res["notUpdated"][sid]["type"] == "invalidProperties"
    res = halice.ok("EmailSubmission/set", update={sid: {"identityId": "I1"}})
    assert res["notUpdated"][sid]["type"] == "invalidProperties"
    assert halice.ok("EmailSubmission/set", update={sid: {}})["updated"] == {sid: None}


def test_queue_outcomes_reach_get_changes_and_query(halice, hbob, queue):
    eid = halice.draft("outcomes", to="a@remote.test", bcc=[{"email": "b@remote.test"}])
    env = envelope({"email": "a@remote.test", "parameters": {"NOTIFY": "SUCCESS,FAILURE",
                                                             "ORCPT": "rfc822;a@remote.test"}},
                   {"email": "b@remote.test", "parameters": {"notify": "NEVER"}},
                   "c@remote.test", BOB, params={"RET": "HDRS", "ENVID": "env-1", "BODY": "8BITMIME",
                                                 "SIZE": "1000"})
    sid = submit(halice, eid, env)["created"]["s"]["id"]
    msg = queued_message(queue, sid)
    assert (msg["sender"], msg["ret"], msg["envid"], msg["account_id"]) == (ALICE, "HDRS", "env-1", 1)
    rcpts = {r["address"]: (r["notify"], r["orcpt"]) for r in msg["rcpts"]}
    assert rcpts == {"a@remote.test": ("SUCCESS,FAILURE", "rfc822;a@remote.test"),
                     "b@remote.test": ("NEVER", None), "c@remote.test": (None, None), BOB: (None, None)}
    spooled = queue.read(msg["spool"])
    assert b"Bcc:" not in spooled and spooled == stored_bytes(halice, eid).replace(
        b"Bcc: b@remote.test\r\n", b"")
    state = sent_state(halice)
    play_relay(queue, msg["id"], {"a@remote.test": "250 2.0.0 ok", "b@remote.test":
                                  "550 5.1.1 unknown user", "c@remote.test": "451 4.7.1 greylisted"})
    ch = halice.ok("EmailSubmission/changes", sinceState=state)
    assert ch["updated"] == [sid] and ch["created"] == [] and ch["newState"] != state
    sub = get(halice, sid)
    assert sub["undoStatus"] == "final"
    st = sub["deliveryStatus"]
    assert st["a@remote.test"] == {"smtpReply": "250 2.0.0 ok", "delivered": "yes",
                                   "displayed": "unknown"}
    assert st["b@remote.test"]["delivered"] == "no"
    assert st["b@remote.test"]["smtpReply"] == "550 5.1.1 unknown user"
    assert st["c@remote.test"] == {"smtpReply": "451 4.7.1 greylisted", "delivered": "queued",
                                   "displayed": "unknown"}
    assert st[BOB]["delivered"] == "yes"
    assert hbob.ok("Email/query", filter={"subject": "outcomes"})["ids"]
    assert sid in halice.ok("EmailSubmission/query", filter={"undoStatus": "final"})["ids"]
    assert sid not in halice.ok("EmailSubmission/query", filter={"undoStatus": "pending"})["ids"]
    res = halice.ok("EmailSubmission/set", update={sid: {"undoStatus": "canceled"}})
    assert res["notUpdated"][sid]["type"] == "cannotUnsend"
    # Destroying the submission leaves its delivery alone (RFC 8621 section 7.5).
    assert halice.ok("EmailSubmission/set", destroy=[sid])["destroyed"] == [sid]
    assert {r["address"]: r["state"] for r in queue.show(msg["id"])["rcpts"]}["c@remote.test"] == \
        "deferred"


def test_cancel_is_refused_once_the_relay_took_it(halice, queue):
    eid = halice.draft("in flight", to="x@remote.test")
    sid = submit(halice, eid)["created"]["s"]["id"]
    msg = queued_message(queue, sid)
    works = []
    for w in queue.claim():
        if w.message_id == msg["id"]:
            works.append(w)                          # leased: handed to the relay
        else:
            queue.retry(w.message_id)
    assert works
    res = halice.ok("EmailSubmission/set", update={sid: {"undoStatus": "canceled"}})
    assert res["notUpdated"][sid]["type"] == "cannotUnsend"
    queue.record([Result(rid, "250 2.0.0 ok", "mx.remote.test") for w in works for rid, _ in w.rcpts])
    assert get(halice, sid)["undoStatus"] == "final"


def test_future_release(halice, queue):
    eid = halice.draft("later on", to="ok@remote.test")
    t0 = time.time()
    created = submit(halice, eid, envelope("ok@remote.test", params={"HOLDFOR": "7200"}))["created"]["s"]
    send_at = time.mktime(time.strptime(created["sendAt"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert created["undoStatus"] == "pending" and abs(send_at - (t0 + 7200)) < 5
    msg = queued_message(queue, created["id"])
    assert abs(msg["release_at"] - (t0 + 7200)) < 5
    assert all(w.message_id != msg["id"] for w in queue.claim())   # an hour ahead is not enough
    until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + 86400))
    created = submit(halice, eid, envelope("ok@remote.test", params={"HOLDUNTIL": until}))["created"]["s"]
    assert created["sendAt"] == until and created["undoStatus"] == "pending"
    assert halice.ok("EmailSubmission/query", filter={"after": until})["ids"] == [created["id"]]
    res = halice.ok("EmailSubmission/set", update={created["id"]: {"undoStatus": "canceled"}})
    assert res["updated"] == {created["id"]: None}
    for params in ({"HOLDFOR": str(7 * 86400 + 1)}, {"HOLDFOR": "60", "HOLDUNTIL": until},
                   {"HOLDUNTIL": "tomorrow"},
                   {"HOLDUNTIL": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + 8 * 86400))}):
        err = submit(halice, eid, envelope("ok@remote.test", params=params))["notCreated"]["s"]
        assert err["type"] == "invalidProperties" and err["properties"] == ["envelope"], params


def test_refusals_queue_nothing(halice, queue):
    eid = halice.draft("refused", to="ok@remote.test")
    before = len(queue.list()), len(halice.ok("EmailSubmission/get")["list"])
    bad_envelopes = [
        envelope("ok@remote.test", params={"ENVID": "a\r\nRCPT TO:<x@evil.test>"}),
        envelope("ok@remote.test\r\nRCPT TO:<x@evil.test>"),
        envelope("ok@remote.test", mail_from=ALICE + "\n"),
        envelope({"email": "ok@remote.test", "parameters": {"NOTIFY\r\nX": None}}),
        envelope({"email": "ok@remote.test", "parameters": {"NOTIFY": "ALWAYS"}}),
        envelope({"email": "ok@remote.test", "parameters": {"NOTIFY": "NEVER,SUCCESS"}}),
        envelope({"email": "ok@remote.test", "parameters": {"ORCPT": "no-type"}}),
        envelope({"email": "ok@remote.test", "parameters": {"XFORWARD": "1"}}),
        envelope("ok@remote.test", params={"AUTH": "<>"}),
        envelope("ok@remote.test", params={"RET": "ALL"}),
        envelope("ok@remote.test", params={"SMTPUTF8": "yes"}),
        envelope("ok@remote.test", params={"ENVID": "x" * 101}),
        envelope("ok@remote.test", params={"RET": 1}),
        {"mailFrom": {"email": ALICE}, "rcptTo": "ok@remote.test"},
        {"mailFrom": {"email": ALICE}, "rcptTo": [], "extra": 1},
    ]
    for env in bad_envelopes:
        err = submit(halice, eid, env)["notCreated"]["s"]
        assert err["type"] == "invalidProperties" and err["properties"] == ["envelope"], env
    checks = [
        (envelope("not-an-address", "a b@remote.test", "ok@remote.test"), "invalidRecipients"),
        (envelope(*[f"r{i}@remote.test" for i in range(101)]), "tooManyRecipients"),
        (envelope(), "noRecipients"),
        (envelope("ok@remote.test", mail_from="mallory@evil.test"), "forbiddenMailFrom"),
        (envelope("ok@remote.test", mail_from=""), "forbiddenMailFrom"),
        (envelope("ok@remote.test", params={"SIZE": str(10 ** 12)}), "tooLarge"),
    ]
    for env, kind in checks:
        err = submit(halice, eid, env)["notCreated"]["s"]
        assert err["type"] == kind, (env, err)
        if kind == "invalidRecipients":
            assert err["invalidRecipients"] == ["not-an-address", "a b@remote.test"]
        if kind == "tooManyRecipients":
            assert err["maxRecipients"] == 100
        if kind == "tooLarge":
            assert err["maxSize"] == 50 * 1024 * 1024
    forged = halice.draft("forged", **{"from": [{"email": "ceo@bank.example"}]})
    assert submit(halice, forged)["notCreated"]["s"]["type"] == "forbiddenFrom"
    nobody = halice.draft("from nobody", **{"from": None})
    assert submit(halice, nobody, envelope("ok@remote.test"))["notCreated"]["s"] == {
        "type": "invalidEmail", "description": "the Email has no From address", "properties": ["from"]}
    res = halice.ok("EmailSubmission/set", create={"s": {
        "identityId": identity(halice), "emailId": eid, "sendAt": "2030-01-01T00:00:00Z"}})
    assert res["notCreated"]["s"]["properties"] == ["sendAt"]
    assert (len(queue.list()), len(halice.ok("EmailSubmission/get")["list"])) == before


def test_on_success_destroy_email_by_creation_reference(halice, queue):
    eid = halice.draft("sent and forgotten", to="ok@remote.test")
    res = halice.request(["EmailSubmission/set", {
        "accountId": halice.account, "onSuccessDestroyEmail": ["#s", "#nope"],
        "create": {"s": {"identityId": identity(halice), "emailId": eid},
                   "bad": {"identityId": identity(halice), "emailId": "E999999"}},
        "onSuccessUpdateEmail": {"#bad": {"keywords/$flagged": True}}}, "0"])
    assert [r[0] for r in res] == ["EmailSubmission/set", "Email/set"]
    sid = res[0][1]["created"]["s"]["id"]
    assert res[1][1]["destroyed"] == [eid] and res[1][2] == "0"
    assert halice.ok("Email/get", ids=[eid])["notFound"] == [eid]
    # The submission and its queued message do not depend on the Email.
    assert get(halice, sid)["emailId"] == eid
    msg = queued_message(queue, sid)
    assert b"Subject: sent and forgotten" in queue.read(msg["spool"])
    assert [r["state"] for r in msg["rcpts"]] == ["queued"]
    res = halice.ok("EmailSubmission/set", update={sid: {"undoStatus": "canceled"}})
    assert res["updated"] == {sid: None}
    # A patch that is no patch object refuses the call before anything is sent.
    eid = halice.draft("odd patch", to="ok@remote.test")
    before = len(queue.list())
    create = {"s": {"identityId": identity(halice), "emailId": eid, "envelope": envelope(
        "ok@remote.test", "ok@REMOTE.test", "ok@remote.test")}}
    for bad in ({"onSuccessUpdateEmail": {"#s": "not a patch"}}, {"onSuccessDestroyEmail": [1]}):
        name, err = halice.call("EmailSubmission/set", create=create, **bad)
        assert name == "error" and err["type"] == "invalidArguments"
    assert len(queue.list()) == before
    created = halice.ok("EmailSubmission/set", create=create)["created"]["s"]
    assert set(created["deliveryStatus"]) == {"ok@remote.test"}     # one recipient, once


def test_a_suppressed_recipient_fails_at_once_and_the_rest_can_still_be_canceled(halice, queue):
    queue.suppress("gone@remote.test", reason="550 5.1.1 bounced")
    eid = halice.draft("partly gone", to="gone@remote.test")
    created = submit(halice, eid, envelope("gone@remote.test", "here@remote.test"))["created"]["s"]
    st = created["deliveryStatus"]
    assert st["gone@remote.test"]["delivered"] == "no"
    assert st["gone@remote.test"]["smtpReply"].startswith("550 5.1.1 <gone@remote.test> is suppressed")
    assert st["here@remote.test"]["delivered"] == "queued" and created["undoStatus"] == "pending"
    res = halice.ok("EmailSubmission/set", update={created["id"]: {"undoStatus": "canceled"}})
    assert res["updated"] == {created["id"]: None}
    assert get(halice, created["id"])["undoStatus"] == "canceled"
    # Only suppressed recipients: nothing is left to cancel, so it is final at once.
    created = submit(halice, eid, envelope("gone@remote.test"))["created"]["s"]
    assert created["undoStatus"] == "final"
    assert created["deliveryStatus"]["gone@remote.test"]["delivered"] == "no"
    queue.unsuppress("gone@remote.test")


def test_a_queue_report_is_pushed(halice, queue):
    from tests.protocol.test_jmap_push import EventReader, es_url
    sid = submit(halice, halice.draft("pushed status", to="p@remote.test"))["created"]["s"]["id"]
    reader = EventReader(es_url(halice, types="EmailSubmission"), auth=(ALICE, PASSWORDS[ALICE]))
    time.sleep(0.2)
    play_relay(queue, queued_message(queue, sid)["id"], {"p@remote.test": "250 2.0.0 ok"})
    state = sent_state(halice)
    assert wait_for(lambda: any(json.loads(e["data"])["changed"][halice.account].get(
        "EmailSubmission") == state for e in reader.events if e["event"] == "state"), timeout=10)
    assert get(halice, sid)["deliveryStatus"]["p@remote.test"]["delivered"] == "yes"


@pytest.mark.parametrize("value", ["-1", "3601", "true", '"10"', "1.5"])
def test_undo_send_setting_is_checked(tmp_path, value):
    conf = tmp_path / "roost.toml"
    conf.write_text(f"[jmap]\nundo_send = {value}\n")
    with pytest.raises(ValueError, match="undo_send"):
        configmod.load(str(conf))
    conf.write_text("[jmap]\nundo_send = 30\n")
    assert configmod.load(str(conf)).jmap_undo_send == 30
    assert configmod.load().jmap_undo_send == 0
