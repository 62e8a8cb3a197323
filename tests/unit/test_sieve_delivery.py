"""Sieve in the delivery path (storage.sieve.deliver) on a real SQLite store:
what an Outcome makes of a delivery (mailboxes, flags, rejection, discard,
edited bytes), the outbound rows of redirects, vacation replies and
notifications, the duplicate memory, runtime errors told once, the default
Junk rule, loop protection and the per-account script cache.

Most tests give ``SieveDelivery`` a hand-made ``Outcome`` (the interpreter is
another module with its own tests); ``test_real_script_*`` run real scripts
through ``storage.sieve.interpreter`` when it is there.
"""

import email
import email.policy
from dataclasses import dataclass

import pytest
from sqlalchemy import select

from roost.protocols.lmtp import reply_for
from roost.storage import delivery as dl
from roost.storage import flags as flagbits
from roost.storage.outbound import Envelope, Outbound, Recipient, Spool
from roost.storage.schema import outbound, sieve_duplicates, sieve_replies
from roost.storage.sieve import deliver as sd
from roost.storage.sieve import scripts
from roost.storage.sieve.actions import (FileInto, Keep, Notify, Outcome, Redirect, Reject,
                                         Vacation)
from roost.storage.store import Store

USER = "u@example.org"
MSG = (b"From: Alice <alice@example.net>\r\nTo: U <u@example.org>\r\nSubject: lunch?\r\n"
       b"Message-ID: <m1@example.net>\r\nReferences: <m0@example.net>\r\n\r\nbody\r\n")


@pytest.fixture
def env(tmp_path):
    store = Store.open(str(tmp_path / "data"))
    store.add_account(USER)
    store.add_account("v@example.org")
    d = dl.Delivery(store, hostname="mx.example.org")
    d.outbound = Outbound(store, d, Spool(str(tmp_path / "queue")), "mx.example.org")
    yield store, d
    d.close()
    store.close()


class Given:
    """A runner that answers a fixed Outcome (or a function of the context) and keeps the contexts."""

    def __init__(self, outcome):
        self.outcome, self.contexts = outcome, []

    def __call__(self, compiled, ctx):
        self.contexts.append(ctx)
        return self.outcome(ctx) if callable(self.outcome) else self.outcome


def with_script(store, d, outcome, address=USER):
    acct = store.account(address)
    scripts.put_script(store, acct.id, "main", "keep;\r\n", activate=True)
    d.sieve.forget()
    runner = Given(outcome)
    d.sieve._run = runner
    return acct, runner


def send(d, data=MSG, rcpts=(USER,), sender="alice@example.net", **kw):
    return d.store(dl.Incoming(data, tuple(rcpts), sender=sender, **kw))


def box_messages(store, acct, name=None, role=None):
    box = store.mailbox(acct.id, name, role=role) if role else store.mailbox(acct.id, name)
    return [(store.read(box.id, r.uid), Rec(r.message_id, flagbits.names(r.bits, r.keywords)))
            for r in store.records(box.id)]


@dataclass
class Rec:
    message_id: int
    flags: list


def queued(d, kind=None):
    """Every outbound row (local ones too, which ``list`` leaves out), oldest first."""
    with d.mailstore.reader() as conn:
        ids = [r[0] for r in conn.execute(select(outbound.c.id).order_by(outbound.c.id))]
    rows = [d.outbound.show(i) for i in ids]
    return [r for r in rows if kind is None or r["kind"] == kind]


def spooled(d, row):
    return email.message_from_bytes(d.outbound.read(row["spool"]))


# --- filing ----------------------------------------------------------------------------

def test_fileinto_and_flags_land_in_the_mailboxes_as_one_message(env):
    store, d = env
    acct, _ = with_script(store, d, Outcome(
        [FileInto("Lists", flags=("\\Seen $list",)), Keep(flags=("\\Flagged",))], keep=False))
    store.create_mailbox(acct.id, "Lists")
    (res,) = send(d)
    assert res.status is dl.DELIVERED and len(res.stored) == 1
    (lists,) = box_messages(store, acct, "Lists")
    (inbox,) = box_messages(store, acct, "INBOX")
    assert lists[1].message_id == inbox[1].message_id      # one message, two mailboxes
    assert "\\Seen" in lists[1].flags and "$list" in lists[1].flags
    assert inbox[1].flags == ["\\Flagged"]


def test_fileinto_missing_mailbox_falls_back_to_inbox_and_create_creates(env):
    store, d = env
    acct, runner = with_script(store, d, Outcome([FileInto("Nope")], keep=False))
    send(d)
    assert len(box_messages(store, acct, "INBOX")) == 1
    runner.outcome = Outcome([FileInto("Projects/Roost", create=True)], keep=False)
    send(d, MSG.replace(b"m1@", b"m2@"))
    assert len(box_messages(store, acct, "Projects/Roost")) == 1
    assert len(box_messages(store, acct, "INBOX")) == 1


def test_specialuse_picks_the_role_mailbox(env):
    store, d = env
    acct, _ = with_script(store, d, Outcome([FileInto("Spam", specialuse="\\Junk")], keep=False))
    (res,) = send(d)
    assert res.ok
    assert len(box_messages(store, acct, role="junk")) == 1
    with pytest.raises(Exception):
        store.mailbox(acct.id, "Spam")


def test_discard_stores_nothing_and_is_accepted(env):
    store, d = env
    acct, _ = with_script(store, d, Outcome([], keep=False))
    (res,) = send(d)
    assert res.status is dl.DISCARDED and res.ok and not res.stored
    assert box_messages(store, acct, "INBOX") == []
    assert reply_for(res).startswith("250 2.0.0")


def test_reject_refuses_that_recipient_only(env):
    store, d = env
    with_script(store, d, Outcome([Reject("Go away.\r\nNo thanks: caf\u00e9")], keep=False))
    res_u, res_v = send(d, rcpts=(USER, "v@example.org"))
    assert res_u.status is dl.REJECTED and not res_u.ok
    assert res_u.reason == "Go away. No thanks: cafe"
    assert reply_for(res_u) == "550 5.7.1 Go away. No thanks: cafe"
    assert res_v.status is dl.DELIVERED
    assert box_messages(store, store.account(USER), "INBOX") == []


def test_a_local_sender_of_the_queue_gets_a_bounce_for_a_reject(env):
    store, d = env
    with_script(store, d, Outcome([Reject("not you")], keep=False))
    q = d.outbound.submit(Envelope("v@example.org", [Recipient(USER)]), MSG)
    assert q.states[USER] == ("bounced", "550 5.7.1 not you")
    (dsn, _r), = box_messages(store, store.account("v@example.org"), "INBOX")
    assert b"Undelivered Mail Returned to Sender" in dsn and b"550 5.7.1 not you" in dsn


def test_editheader_bytes_are_stored(env):
    store, d = env

    def edit(ctx):
        assert ctx.data.startswith(b"Return-Path: <alice@example.net>\r\nDelivered-To: u@example.org\r\n")
        return Outcome([], keep=True, data=b"X-Edited: yes\r\n" + ctx.data)
    acct, _ = with_script(store, d, edit)
    res_u, res_v = send(d, rcpts=(USER, "v@example.org"))
    (stored, _r), = box_messages(store, acct, "INBOX")
    assert stored.startswith(b"X-Edited: yes\r\nReturn-Path: <alice@example.net>\r\n")
    assert stored.endswith(MSG)
    (other, _r), = box_messages(store, store.account("v@example.org"), "INBOX")
    assert b"X-Edited" not in other                            # only that copy


def test_context_has_envelope_addresses_verdicts_and_environment(env):
    store, d = env
    store.add_alias("ulrich@example.org", USER)
    acct, runner = with_script(store, d, Outcome())
    send(d, rcpts=("u+work@example.org",), verdicts={"spf": "pass", "remote_ip": "192.0.2.7",
                                                     "remote_host": "mail.example.net"},
         auth_headers=b"Authentication-Results: mx.example.org; spf=pass\r\n")
    (ctx,) = runner.contexts
    assert (ctx.sender, ctx.recipient, ctx.account) == ("alice@example.net", "u+work@example.org", USER)
    assert set(ctx.addresses) == {USER, "ulrich@example.org"}
    assert ctx.verdicts["spf"] == "pass"
    assert ctx.environment["remote-ip"] == "192.0.2.7"
    assert ctx.environment["remote-host"] == "mail.example.net"
    assert ctx.environment["host"] == "mx.example.org" and ctx.environment["domain"] == "example.org"
    # the parse matches the bytes: the prepended fields are headers too
    names = [n.lower() for n, _v in ctx.parsed.headers]
    assert names[:3] == ["return-path", "delivered-to", "authentication-results"]
    assert ctx.data.startswith(b"Return-Path:")


# --- redirect --------------------------------------------------------------------------

def test_redirect_is_queued_with_the_original_sender_and_a_loop_marker(env):
    store, d = env
    with_script(store, d, Outcome([Redirect("elsewhere@example.com")], keep=False))
    (res,) = send(d, auth_headers=b"Authentication-Results: mx.example.org; spf=pass\r\n")
    assert res.status is dl.DISCARDED and res.ok
    (row,) = queued(d, "redirect")
    assert row["sender"] == "alice@example.net"
    assert [r["address"] for r in row["rcpts"]] == ["elsewhere@example.com"]
    raw = d.outbound.read(row["spool"])
    assert raw.startswith(b"X-Loop: u@example.org\r\nDelivered-To: u@example.org\r\n"
                          b"Authentication-Results: mx.example.org; spf=pass\r\n")
    assert b"Return-Path" not in raw and raw.endswith(MSG)


def test_redirect_loops_are_refused(env):
    store, d = env
    with_script(store, d, Outcome([Redirect("elsewhere@example.com")], keep=True))
    send(d, b"X-Loop: U@example.org\r\n" + MSG)
    hops = b"".join(b"Received: from h%d by h%d; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % (i, i)
                    for i in range(sd.MAX_HOPS))
    send(d, hops + MSG.replace(b"m1@", b"m2@"))
    assert queued(d, "redirect") == []
    assert len(box_messages(store, store.account(USER), "INBOX")) == 2   # kept all the same


def test_a_redirect_refused_as_a_loop_keeps_the_message(env):
    store, d = env
    acct, _ = with_script(store, d, Outcome([Redirect("elsewhere@example.com")], keep=False))
    (res,) = send(d, b"X-Loop: u@example.org\r\n" + MSG)
    assert res.status is dl.DELIVERED and len(box_messages(store, acct, "INBOX")) == 1


def test_redirect_between_two_local_accounts_stops(env):
    store, d = env
    with_script(store, d, Outcome([Redirect("v@example.org")], keep=False))
    acct_v = store.account("v@example.org")
    scripts.put_script(store, acct_v.id, "main", "keep;\r\n", activate=True)
    d.sieve.forget()
    d.sieve._run = Given(lambda ctx: Outcome([Redirect(USER if ctx.account != USER else
                                                       "v@example.org")], keep=False))
    (res,) = send(d)
    assert res.ok
    # u -> v -> u: the second pass through u sees its own marker and does not redirect again
    rows = queued(d, "redirect")
    assert sorted(r["rcpts"][0]["address"] for r in rows) == [USER, "v@example.org"]
    assert all(r["rcpts"][0]["state"] == "delivered" for r in rows)
    # ... and keeps it instead: the loop loses no mail
    (back, _r), = box_messages(store, store.account(USER), "INBOX")
    assert back.count(b"X-Loop: ") == 2 and back.endswith(MSG)


def test_at_most_a_few_redirects(env):
    store, d = env
    with_script(store, d, Outcome([Redirect(f"r{i}@example.com") for i in range(10)], keep=False))
    send(d)
    assert len(queued(d, "redirect")) == sd.MAX_REDIRECTS


def test_without_a_queue_outgoing_actions_are_skipped(env):
    store, d = env
    d.outbound = None
    acct, _ = with_script(store, d, Outcome([Redirect("x@example.com"), Vacation("away")], keep=True))
    (res,) = send(d)
    assert res.status is dl.DELIVERED and len(box_messages(store, acct, "INBOX")) == 1
    with store.reader() as conn:
        assert conn.execute(sieve_replies.select()).all() == []   # no memory of a reply never sent


# --- vacation --------------------------------------------------------------------------

def test_vacation_reply_is_queued_once_per_period(env):
    store, d = env
    with_script(store, d, Outcome([Vacation("I am away.", seconds=7 * 86400)], keep=True))
    send(d)
    send(d, MSG.replace(b"m1@", b"m2@"))
    (row,) = queued(d, "vacation")
    assert row["sender"] == "" and row["rcpts"][0]["address"] == "alice@example.net"
    assert row["rcpts"][0]["notify"] == "NEVER"
    reply = spooled(d, row)
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["Subject"] == "Auto: lunch?"
    assert reply["In-Reply-To"] == "<m1@example.net>"
    assert reply["References"] == "<m0@example.net> <m1@example.net>"
    assert reply["From"] == USER and reply["To"] == "alice@example.net"
    assert reply.get_payload().strip() == "I am away."
    with store.reader() as conn:
        (memo,) = conn.execute(sieve_replies.select()).all()
    assert memo.sender == "alice@example.net" and len(memo.handle) == 64


def test_vacation_period_over_and_other_handles_reply_again(env):
    store, d = env
    acct, runner = with_script(store, d, Outcome([Vacation("away", handle="a")], keep=True))
    send(d)
    runner.outcome = Outcome([Vacation("away, really", handle="b", subject="Gone")], keep=True)
    send(d, MSG.replace(b"m1@", b"m2@"))
    assert [spooled(d, r)["Subject"] for r in queued(d, "vacation")] == ["Auto: lunch?", "Gone"]
    with store.write() as txn:
        txn.conn.execute(sieve_replies.update().values(expires=0))
    send(d, MSG.replace(b"m1@", b"m3@"))
    assert len(queued(d, "vacation")) == 3


@pytest.mark.parametrize("sender,extra,why", [
    ("", b"", "null sender"),
    ("MAILER-DAEMON@example.net", b"", "daemon"),
    ("owner-list@example.net", b"", "owner-"),
    ("list-request@example.net", b"", "-request"),
    ("alice@example.net", b"List-Id: <l.example.net>\r\n", "list"),
    ("alice@example.net", b"List-Unsubscribe: <mailto:x@example.net>\r\n", "list"),
    ("alice@example.net", b"Precedence: bulk\r\n", "bulk"),
    ("alice@example.net", b"Auto-Submitted: auto-generated\r\n", "auto-submitted"),
    ("u@example.org", b"", "own address"),
    ("ulrich@example.org", b"", "own alias"),
])
def test_vacation_never_answers(env, sender, extra, why):
    store, d = env
    store.add_alias("ulrich@example.org", USER)
    with_script(store, d, Outcome([Vacation("away")], keep=True))
    (res,) = send(d, extra + MSG, sender=sender or "<>")
    assert res.status is dl.DELIVERED
    assert queued(d, "vacation") == [], why


def test_vacation_only_for_mail_addressed_to_the_user(env):
    store, d = env
    store.add_alias("ulrich@example.org", USER)
    acct, runner = with_script(store, d, Outcome([Vacation("away")], keep=True))
    to_other = MSG.replace(b"To: U <u@example.org>", b"To: someone@example.com")
    send(d, to_other)
    assert queued(d, "vacation") == []
    send(d, MSG.replace(b"To: U <u@example.org>", b"To: x@example.com\r\nCc: Ulrich@Example.org")
         .replace(b"m1@", b"m2@"))
    assert len(queued(d, "vacation")) == 1                    # an alias in Cc counts
    runner.outcome = Outcome([Vacation("away", addresses=("me@home.example",), handle="h")], keep=True)
    send(d, to_other.replace(b"To: someone@example.com", b"To: me@home.example")
         .replace(b"m1@", b"m3@"), sender="bob@example.net")
    assert len(queued(d, "vacation")) == 2                    # :addresses count


def test_no_vacation_for_spam(env):
    store, d = env
    with_script(store, d, Outcome([Vacation("away")], keep=True))
    send(d, verdicts={"spam": True})
    assert queued(d, "vacation") == []


# --- notify, duplicate, errors, junk --------------------------------------------------

def test_notify_mailto_is_queued(env):
    store, d = env
    with_script(store, d, Outcome([Notify("mailto:pager@example.com?subject=New%20mail")], keep=True))
    send(d)
    (row,) = queued(d, "notify")
    assert row["sender"] == "" and row["rcpts"][0]["address"] == "pager@example.com"
    msg = spooled(d, row)
    assert msg["Subject"] == "New mail" and msg["Auto-Submitted"] == "auto-notified"


def test_duplicate_ids_are_remembered_after_delivery(env):
    store, d = env
    acct, runner = with_script(store, d, Outcome(duplicates=[("id:m1", 3600)]))
    send(d)
    hooks = runner.contexts[0].hooks
    assert hooks.duplicate("id:m1") and not hooks.duplicate("id:other")
    with store.reader() as conn:
        (row,) = conn.execute(sieve_duplicates.select()).all()
    assert len(row.key) == 64 and row.expires > hooks.now
    with store.write() as txn:
        txn.conn.execute(sieve_duplicates.update().values(expires=0))
    assert not hooks.duplicate("id:m1")                       # expired


def test_runtime_error_keeps_and_tells_once(env):
    store, d = env
    acct, _ = with_script(store, d, Outcome([Redirect("x@example.com")], keep=False,
                                            error="line 3: regex too expensive"))
    send(d)
    send(d, MSG.replace(b"m1@", b"m2@"))
    inbox = box_messages(store, acct, "INBOX")
    notices = [m for m, _r in inbox if b"Your mail filter has an error" in m]
    assert len(inbox) == 3 and len(notices) == 1
    assert b"regex too expensive" in notices[0] and b"Auto-Submitted: auto-generated" in notices[0]
    assert queued(d, "redirect") == []                        # as if the script had not run


def test_interpreter_crash_is_a_runtime_error(env):
    store, d = env

    def boom(ctx):
        raise RuntimeError("bug")
    acct, _ = with_script(store, d, boom)
    (res,) = send(d)
    assert res.status is dl.DELIVERED
    assert len(box_messages(store, acct, "INBOX")) == 2       # the message and one notice


def test_spam_goes_to_junk_unless_the_script_decided(env):
    store, d = env
    acct = store.account(USER)
    (res,) = send(d, verdicts={"spam": True})                 # no script
    ((_m, rec),) = box_messages(store, acct, role="junk")
    assert "$junk" in rec.flags
    _, runner = with_script(store, d, Outcome())              # only the implicit keep
    send(d, MSG.replace(b"m1@", b"m2@"), verdicts={"spam": True})
    assert len(box_messages(store, acct, role="junk")) == 2
    runner.outcome = Outcome([Keep()], keep=False)            # an explicit keep wins
    send(d, MSG.replace(b"m1@", b"m3@"), verdicts={"spam": True})
    assert len(box_messages(store, acct, role="junk")) == 2
    assert len(box_messages(store, acct, "INBOX")) == 1


# --- the cache ---------------------------------------------------------------------------

def test_no_script_costs_one_cached_lookup_and_changes_invalidate(env, monkeypatch):
    store, d = env
    acct = store.account(USER)
    calls = []
    real = sd.hot.active_script
    monkeypatch.setattr(sd.hot, "active_script", lambda s, a: calls.append(a) or real(s, a))
    for i in range(5):
        send(d, MSG.replace(b"m1@", b"n%d@" % i))
    assert calls == [acct.id]
    runner = Given(Outcome([FileInto("Archive")], keep=False))
    d.sieve._run = runner
    scripts.put_script(store, acct.id, "main", "keep;\r\n", activate=True)   # publishes a change
    send(d, MSG.replace(b"m1@", b"n9@"))
    assert len(calls) == 2 and len(runner.contexts) == 1
    assert len(box_messages(store, acct, "Archive")) == 1
    scripts.activate(store, acct.id)                          # none active
    send(d, MSG.replace(b"m1@", b"n10@"))
    assert len(calls) == 3 and len(runner.contexts) == 1


def test_compiled_scripts_are_cached_by_id_and_update(env, monkeypatch):
    store, d = env
    acct, runner = with_script(store, d, Outcome())
    compiled = []
    real = sd.compile
    monkeypatch.setattr(sd, "compile", lambda text: compiled.append(text) or real(text))
    send(d)
    d.sieve.forget()
    send(d, MSG.replace(b"m1@", b"m2@"))
    assert len(compiled) == 1 and len(runner.contexts) == 2


def test_hooks_answer_from_the_store(env):
    store, d = env
    acct = store.account(USER)
    scripts.put_script(store, acct.id, "lib", "keep;\r\n")
    hooks = sd.StoreHooks(store, acct, 0)
    assert hooks.mailbox_exists("Archive") and hooks.mailbox_exists("inbox")
    assert not hooks.mailbox_exists("Nope")
    assert hooks.specialuse_exists("\\Junk") and not hooks.specialuse_exists("\\Bogus")
    assert hooks.specialuse_exists("\\Junk", mailbox="Junk")
    assert not hooks.specialuse_exists("\\Junk", mailbox="Archive")
    assert hooks.include("lib", "personal") == "keep;\r\n"
    with pytest.raises(LookupError):
        hooks.include("missing", "personal")
    with pytest.raises(LookupError):
        hooks.include("lib", "global")


# --- real scripts (the interpreter) ------------------------------------------------------

def _interpreter():
    return pytest.importorskip("roost.storage.sieve.interpreter",
                               reason="storage.sieve.interpreter is not there yet")


def real_script(store, d, text, address=USER):
    _interpreter()
    acct = store.account(address)
    scripts.put_script(store, acct.id, "main", text, activate=True)
    d.sieve.forget()
    d.sieve._run = None
    return acct


def test_real_script_fileinto_reject_and_vacation(env):
    store, d = env
    acct = real_script(store, d, 'require ["fileinto", "reject", "vacation", "imap4flags"];\r\n'
                                 'if header :contains "subject" "lunch" { fileinto :flags "\\\\Seen" "Archive"; }\r\n'
                                 'elsif header :contains "subject" "spam" { reject "no spam"; stop; }\r\n'
                                 'vacation :days 3 "away";\r\n')
    (res,) = send(d)
    assert res.status is dl.DELIVERED
    ((_m, rec),) = box_messages(store, acct, "Archive")
    assert "\\Seen" in rec.flags
    (res,) = send(d, MSG.replace(b"lunch?", b"spam").replace(b"m1@", b"m2@"))
    assert res.status is dl.REJECTED and reply_for(res) == "550 5.7.1 no spam"
    assert len(queued(d, "vacation")) == 1


def test_real_script_editheader_environment_and_verdicts(env):
    store, d = env
    acct = real_script(store, d, 'require ["editheader", "environment", "variables", "spamtest",'
                                 ' "relational", "comparator-i;ascii-numeric"];\r\n'
                                 'if environment :matches "remote-ip" "*" { addheader "X-IP" "${1}"; }\r\n'
                                 'deleteheader "subject";\r\n')
    (res,) = send(d, verdicts={"remote_ip": "192.0.2.9"})
    assert res.status is dl.DELIVERED
    (stored, _r), = box_messages(store, acct, "INBOX")
    assert stored.startswith(b"X-IP: 192.0.2.9\r\n")
    assert b"Subject: lunch?" not in stored and b"Return-Path: <alice@example.net>" in stored
    assert stored.endswith(b"\r\n\r\nbody\r\n")


def test_real_script_mailbox_create_specialuse_and_duplicate(env):
    store, d = env
    acct = real_script(store, d, 'require ["fileinto", "mailbox", "special-use", "duplicate"];\r\n'
                                 'if duplicate { discard; stop; }\r\n'
                                 'if header :contains "subject" "junk" { fileinto :specialuse "\\\\Junk" "Spam"; stop; }\r\n'
                                 'fileinto :create "New/Box";\r\n')
    send(d)
    assert len(box_messages(store, acct, "New/Box")) == 1
    (res,) = send(d, MSG + b"different body, same Message-ID\r\n")
    assert res.status is dl.DISCARDED
    send(d, MSG.replace(b"lunch?", b"junk").replace(b"m1@", b"m2@"))
    assert len(box_messages(store, acct, role="junk")) == 1


def test_real_script_redirect_and_notify_are_queued(env):
    store, d = env
    real_script(store, d, 'require ["enotify", "copy"];\r\n'
                          'redirect :copy "fwd@example.com";\r\n'
                          'notify :message "new mail" "mailto:pager@example.com";\r\n')
    (res,) = send(d)
    assert res.status is dl.DELIVERED
    assert [r["rcpts"][0]["address"] for r in queued(d, "redirect")] == ["fwd@example.com"]
    (note,) = queued(d, "notify")
    assert spooled(d, note)["Subject"] == "new mail"


def test_real_script_missing_include_is_a_runtime_error_told_once(env):
    store, d = env
    acct = real_script(store, d, 'require ["include", "fileinto"];\r\ninclude :personal "gone";\r\n'
                                 'fileinto "Archive";\r\n')
    send(d)
    send(d, MSG.replace(b"m1@", b"m2@"))
    inbox = [m for m, _r in box_messages(store, acct, "INBOX")]
    assert len(inbox) == 3 and sum(b"Your mail filter has an error" in m for m in inbox) == 1
    assert box_messages(store, acct, "Archive") == []


def test_vacation_from_with_a_non_ascii_name_and_subject(env):
    store, d = env
    with_script(store, d, Outcome([Vacation("weg", from_addr="J\u00f6rg <u@example.org>",
                                            subject="Abwesend \u2013 bis Montag")], keep=True))
    send(d)
    (row,) = queued(d, "vacation")
    raw = d.outbound.read(row["spool"])
    head = raw.split(b"\r\n\r\n")[0]
    assert all(b < 128 for b in head)                        # headers stay ASCII (RFC 2047)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(msg["From"]) == "J\u00f6rg <u@example.org>"
    assert str(msg["Subject"]) == "Abwesend \u2013 bis Montag"


def test_a_failing_script_still_files_spam_into_junk(env):
    store, d = env
    acct, _ = with_script(store, d, Outcome(error="boom"))
    send(d, verdicts={"spam": True})
    assert len(box_messages(store, acct, role="junk")) == 1
    assert len(box_messages(store, acct, "INBOX")) == 1       # the notice


def test_a_redirect_to_a_bad_address_keeps_the_message(env):
    store, d = env
    acct, _ = with_script(store, d, Outcome([Redirect("no address\r\nRCPT TO:<x@y>")], keep=False))
    (res,) = send(d)
    assert res.status is dl.DELIVERED and len(box_messages(store, acct, "INBOX")) == 1
    assert queued(d, "redirect") == []


def test_errors_that_differ_per_message_are_told_once_an_hour(env):
    store, d = env
    acct, _ = with_script(store, d, lambda ctx: Outcome(error=f"bad header in {ctx.data[-30:]!r}"))
    for i in range(4):
        send(d, MSG.replace(b"body", b"body %d" % i).replace(b"m1@", b"x%d@" % i))
    inbox = [m for m, _r in box_messages(store, acct, "INBOX")]
    assert len(inbox) == 5 and sum(b"Your mail filter has an error" in m for m in inbox) == 1
