"""The outbound queue (storage.outbound) on a real SQLite store and spool,
with a clock the test moves: states, backoff, expiry, DSNs, suppression,
holds, leases, undo and recovery."""

import email
import os

import pytest
from roost.storage import dsn
from roost.storage.delivery import Delivery
from roost.storage.outbound import Envelope, Outbound, Recipient, Result, Spool
from roost.storage.store import Store
from tests.conftest import stored_messages

MSG = (b"From: alice@local.test\r\nTo: bob@remote.test\r\nSubject: hi\r\n"
       b"Message-ID: <m1@local.test>\r\n\r\nhello\r\n")


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
def q(tmp_path):
    store = Store.open(str(tmp_path / "data"))
    store.add_account("alice@local.test")
    clock = Clock()
    out = Outbound(store, Delivery(store), Spool(str(tmp_path / "data" / "queue")), "mx.local.test",
                   schedule=(60, 600), max_age=3600, delay_notice=1200, clock=clock)
    out.clock_ = clock
    out.data = str(tmp_path / "data")
    yield out
    store.close()


def env(*rcpts, sender="alice@local.test", **kw):
    return Envelope(sender, [r if isinstance(r, Recipient) else Recipient(r) for r in rcpts],
                    account_id=1, **kw)


def inbox(q, address="alice@local.test"):
    return [email.message_from_bytes(m) for m in stored_messages(q.data, address)]


def test_local_recipient_is_stored_at_once_and_remote_is_queued(q):
    q.store.add_account("carol@local.test")
    queued = q.submit(env("carol@local.test", "bob@remote.test"), MSG)
    assert queued.states["carol@local.test"][0] == "delivered"
    assert queued.states["bob@remote.test"] == ("queued", None)
    assert len(stored_messages(q.data, "carol@local.test")) == 1
    work = q.claim()
    assert [(w.domain, [a for _, a in w.rcpts]) for w in work] == [("remote.test", ["bob@remote.test"])]
    assert q.read(work[0].spool) == MSG
    assert q.claim() == []           # leased: nobody else takes it


def test_delivered_releases_the_spool_and_is_final(q):
    q.submit(env("bob@remote.test"), MSG)
    [w] = q.claim()
    assert os.listdir(os.path.join(q.data, "queue")) == [w.spool]
    q.record([Result(w.rcpts[0][0], "250 2.0.0 Ok: queued as X", "mx.remote.test")])
    assert os.listdir(os.path.join(q.data, "queue")) == []
    shown = q.show(w.message_id)
    assert shown["spool"] is None
    assert shown["rcpts"][0]["state"] == "delivered"
    assert shown["rcpts"][0]["reply"].startswith("250")
    q.clock_.now += 10_000
    assert q.claim() == []
    assert inbox(q) == []             # no DSN without NOTIFY=SUCCESS


def test_temporary_failure_backs_off_on_the_schedule_then_bounces_with_a_dsn(q):
    q.submit(env("bob@remote.test"), MSG)
    [w] = q.claim()
    rid = w.rcpts[0][0]
    q.record([Result(rid, "451 4.3.0 try later", "mx.remote.test")])
    assert q.show(w.message_id)["rcpts"][0]["state"] == "deferred"
    q.clock_.now += 59
    assert q.claim() == []
    q.clock_.now += 1
    [w] = q.claim()
    q.record([Result(rid, "451 4.3.0 try later", "mx.remote.test")])
    q.clock_.now += 599
    assert q.claim() == []
    q.clock_.now += 1
    assert q.next_due() == q.clock_.now
    [w] = q.claim()
    q.clock_.now += 640       # 1300 s old: past delay_notice, so one delay DSN
    q.record([Result(rid, "451 4.3.0 try later", "mx.remote.test")])
    [delayed] = inbox(q)
    assert "Action: delayed" in delayed.get_payload()[1].as_string()
    assert "Will-Retry-Until:" in delayed.get_payload()[1].as_string()
    q.clock_.now += 2400      # past max_age: the next temporary failure is final
    [w] = q.claim()
    q.record([Result(rid, "451 4.3.0 try later", "mx.remote.test")])
    row = q.show(w.message_id)["rcpts"][0]
    assert row["state"] == "bounced" and row["attempts"] == 4
    notices = inbox(q)
    subjects = sorted(m["Subject"] for m in notices)
    assert subjects == ["Delayed Mail (still being retried)", "Undelivered Mail Returned to Sender"]
    failed = next(m for m in notices if m["Subject"].startswith("Undelivered"))
    assert failed.get_content_type() == "multipart/report"
    status = failed.get_payload()[1]
    text = status.as_string()
    assert "Action: failed" in text and "Status: 4.3.0" in text
    assert "Diagnostic-Code: smtp; 451 4.3.0 try later" in text
    assert "Remote-MTA: dns; mx.remote.test" in text
    assert failed.get_payload()[2].get_content_type() == "message/rfc822"
    assert failed["Auto-Submitted"] == "auto-replied"


def test_hard_bounce_sends_a_dsn_and_suppresses_the_address(q):
    q.submit(env(Recipient("bob@remote.test", orcpt="rfc822;Bob@Remote.test")), MSG)
    [w] = q.claim()
    q.record([Result(w.rcpts[0][0], "550 5.1.1 <bob@remote.test>: no such user", "mx.remote.test")])
    [notice] = inbox(q)
    text = notice.get_payload()[1].as_string()
    assert "Original-Recipient: rfc822; Bob@Remote.test" in text
    assert "Status: 5.1.1" in text
    assert q.suppressed("BOB@remote.test") is not None
    again = q.submit(env("bob@remote.test"), MSG)
    state, reply = again.states["bob@remote.test"]
    assert state == "suppressed" and reply.startswith("550 5.1.1")
    assert q.claim() == []
    assert q.unsuppress("bob@remote.test")
    assert q.submit(env("bob@remote.test"), MSG).states["bob@remote.test"][0] == "queued"


def test_mailbox_full_bounces_without_suppressing(q):
    q.submit(env("bob@remote.test"), MSG)
    [w] = q.claim()
    q.record([Result(w.rcpts[0][0], "552 5.2.2 mailbox full", "mx.remote.test")])
    assert q.suppressed("bob@remote.test") is None
    assert len(inbox(q)) == 1


def test_notify_never_and_null_sender_get_no_dsn(q):
    q.submit(env(Recipient("bob@remote.test", notify="NEVER")), MSG)
    q.submit(env("dave@remote.test", sender=""), MSG)
    results = [Result(rid, "554 5.7.1 refused") for w in q.claim() for rid, _ in w.rcpts]
    assert len(results) == 2
    q.record(results)
    assert inbox(q) == []


def test_notify_success_reports_relayed(q):
    q.submit(env(Recipient("bob@remote.test", notify="SUCCESS")), MSG)
    [w] = q.claim()
    q.record([Result(w.rcpts[0][0], "250 2.0.0 ok", "mx.remote.test")])
    [notice] = inbox(q)
    assert "Action: relayed" in notice.get_payload()[1].as_string()
    assert notice.get_payload()[2].get_content_type() == "text/rfc822-headers"


def test_remote_sender_gets_its_dsn_through_the_queue_with_a_null_sender(q):
    q.submit(env("bob@remote.test", sender="eve@elsewhere.test"), MSG)
    [w] = q.claim()
    q.record([Result(w.rcpts[0][0], "550 5.1.1 unknown")])
    [bounce] = q.claim()
    assert bounce.sender == "" and bounce.rcpts[0][1] == "eve@elsewhere.test"
    assert b"multipart/report" in q.read(bounce.spool)
    q.record([Result(bounce.rcpts[0][0], "550 5.1.1 unknown too")])   # never a bounce for a bounce
    assert q.claim() == []


def test_future_release_hold_and_release(q):
    q.submit(env("bob@remote.test", release_at=q.clock_.now + 300), MSG)
    assert q.claim() == []
    assert q.next_due() == q.clock_.now + 300
    q.clock_.now += 300
    [w] = q.claim()
    q.record([Result(w.rcpts[0][0], "421 4.4.2 timeout")])
    assert q.hold(w.message_id)
    q.clock_.now += 10_00
    assert q.claim() == []
    assert q.release(w.message_id)
    assert len(q.claim()) == 1


def test_a_held_message_retries_for_max_age_from_its_release(q):
    q.submit(env("bob@remote.test", release_at=q.clock_.now + 2 * 3600), MSG)   # max_age is 1 h
    q.clock_.now += 2 * 3600
    [w] = q.claim()
    q.record([Result(w.rcpts[0][0], "451 4.3.0 later")])
    assert q.show(w.message_id)["rcpts"][0]["state"] == "deferred"


def test_a_suppressed_recipient_is_no_attempt_undo_can_still_cancel(q):
    q.suppress("gone@remote.test")
    queued = q.submit(env("gone@remote.test", "bob@remote.test", release_at=q.clock_.now + 60), MSG)
    assert queued.states["gone@remote.test"][0] == "suppressed"
    assert q.cancel(queued.id)
    assert {r["address"]: r["state"] for r in q.show(queued.id)["rcpts"]} == {
        "gone@remote.test": "suppressed", "bob@remote.test": "canceled"}


def test_hold_rules_by_account_and_domain(q):
    rule = q.add_hold_rule(domain="Remote.test")
    queued = q.submit(env("bob@remote.test"), MSG)
    assert q.show(queued.id)["held"] is True
    q.submit(env("x@other.test"), MSG)
    assert [w.domain for w in q.claim()] == ["other.test"]
    assert q.del_hold_rule(rule)
    q.add_hold_rule(account_id=1)
    assert q.show(q.submit(env("y@other.test"), MSG).id)["held"] is True


def test_cancel_only_before_the_first_attempt(q):
    first = q.submit(env("bob@remote.test", release_at=q.clock_.now + 60), MSG)
    assert q.cancel(first.id)
    assert q.show(first.id)["rcpts"][0]["state"] == "canceled"
    q.clock_.now += 60
    assert q.claim() == []
    second = q.submit(env("bob@remote.test"), MSG)
    q.claim()
    assert not q.cancel(second.id)      # already handed to the relay


def test_fail_bounces_with_a_dsn_and_drop_forgets(q):
    a = q.submit(env("bob@remote.test"), MSG)
    assert q.fail(a.id) == 1
    [notice] = inbox(q)
    assert "failed by the mail administrator" in notice.get_payload()[1].as_string()
    b = q.submit(env("bob@remote.test"), MSG)
    assert q.drop(b.id)
    assert q.show(b.id) is None
    assert len(inbox(q)) == 1
    assert os.listdir(os.path.join(q.data, "queue")) == []


def test_retry_makes_deferred_due_now(q):
    q.submit(env("bob@remote.test"), MSG)
    [w] = q.claim()
    q.record([Result(w.rcpts[0][0], "450 4.2.0 greylisted")])
    assert q.claim() == []
    assert q.retry(w.message_id) == 1
    assert len(q.claim()) == 1


def test_recover_clears_leases_and_deletes_orphan_spool_files(q):
    q.submit(env("bob@remote.test"), MSG)
    q.claim()
    orphan = q.spool.put(b"never committed")
    os.utime(os.path.join(q.data, "queue", orphan), (0, 0))
    assert q.recover() == 1
    assert orphan not in os.listdir(os.path.join(q.data, "queue"))
    assert len(q.claim()) == 1


def test_sent_since_counts_messages_and_recipients(q):
    q.submit(env("a@remote.test", "b@remote.test"), MSG)
    q.submit(env("c@remote.test"), MSG)
    assert q.sent_since(1, q.clock_.now - 60) == (2, 3)
    assert q.sent_since(1, q.clock_.now + 1) == (0, 0)


def test_local_temporary_failure_is_queued_and_retried_locally(q):
    q.store.add_account("full@local.test", quota_bytes=10)
    queued = q.submit(env("full@local.test"), MSG)
    assert queued.states["full@local.test"][0] == "queued"
    [w] = q.claim()
    assert w.local
    q.store.set_quota("full@local.test", None)
    q.record(q.deliver_local(w))
    assert q.show(queued.id)["rcpts"][0]["state"] == "delivered"
    assert len(stored_messages(q.data, "full@local.test")) == 1


def test_classify_and_status_of():
    assert dsn.classify("550 5.1.1 no such user") == "hard"
    assert dsn.classify("552 5.2.2 over quota") == "full"
    assert dsn.classify("550 5.7.1 spam") == "policy"
    assert dsn.classify("554 transaction failed") == "perm"
    assert dsn.classify("421 4.7.0 later") == "soft"
    assert dsn.status_of("250 ok") == "2.0.0"
    assert dsn.status_of("garbage") == "4.0.0"


@pytest.mark.parametrize("bad", ["a@b\r\nRCPT TO:<x@y>", "a@b\0", "no-at-sign", "@b", "a@",
                                 "a b@c", "<a@b>", "x" * 320 + "@b"])
def test_addresses_that_could_inject_smtp_commands_are_refused(q, bad):
    with pytest.raises(ValueError):
        q.submit(env(bad), MSG)
    with pytest.raises(ValueError):
        q.submit(env("bob@remote.test", sender=bad), MSG)
    with pytest.raises(ValueError):
        q.submit(env(Recipient("bob@remote.test", orcpt="rfc822;a\r\nb")), MSG)
    assert q.list() == [] and os.listdir(os.path.join(q.data, "queue")) == []
