"""Sieve over LMTP against a real ``roost serve`` (port 0): a reject refuses
only its recipient with 550 5.7.1 and the script's reason, fileinto lands in
the mailbox, a vacation reply is queued once, and every outbound row exists
before the 250 that acknowledges the message (they are written inside
``Delivery.store``, which returns before LMTP replies)."""

import pytest
from sqlalchemy import select

from roost.storage.schema import outbound, outbound_rcpts
from roost.storage.sieve import scripts
from roost.storage.store import Store
from tests.conftest import LineClient, RoostServer, add_user, roost, stored_messages

pytest.importorskip("roost.storage.sieve.interpreter",
                    reason="storage.sieve.interpreter (the sieve helper's) is not there yet")

SCRIPT = """require ["fileinto", "reject", "vacation"];
if header :contains "subject" "[list]" { fileinto "Lists"; stop; }
if header :contains "subject" "buy now" { reject "We do not want this."; stop; }
vacation :days 7 :subject "Away" "I am away this week.";
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("sieve-lmtp") / "data"
    add_user(data, "a@example.org")
    add_user(data, "b@example.org")
    store = Store.open(str(data))
    acct = store.account("a@example.org")
    store.create_mailbox(acct.id, "Lists")
    scripts.put_script(store, acct.id, "main", SCRIPT, activate=True)
    store.close()
    srv = RoostServer(data).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    c = LineClient(server.ports["lmtp"])
    assert c.reply()[0] == 220
    assert c.cmd("LHLO test.example")[0] == 250
    yield c
    c.close()


def message(tag, subject, to="a@example.org"):
    return (f"From: Sender <sender@example.invalid>\r\nTo: {to}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{tag}@test.example>\r\n\r\nhello\r\n").encode()


def transaction(client, rcpts, data, sender="sender@example.invalid"):
    assert client.cmd(f"MAIL FROM:<{sender}>")[0] == 250
    for r in rcpts:
        assert client.cmd(f"RCPT TO:<{r}>")[0] == 250
    assert client.cmd("DATA")[0] == 354
    client.send(data + b".\r\n")
    return [client.reply() for _ in rcpts]


def rows(server, kind):
    store = Store.open(server.data)
    try:
        with store.reader() as conn:
            return conn.execute(select(outbound.c.id, outbound.c.sender, outbound_rcpts.c.address)
                                .join(outbound_rcpts, outbound_rcpts.c.message_id == outbound.c.id)
                                .where(outbound.c.kind == kind)).all()
    finally:
        store.close()


def test_reject_refuses_that_recipient_only(server, client):
    replies = transaction(client, ["a@example.org", "b@example.org"], message("rej", "buy now!"))
    assert replies[0] == (550, ["550 5.7.1 We do not want this."])
    assert replies[1] == (250, ["250 2.0.0 <b@example.org> delivered"])
    assert not [m for m in stored_messages(server.data, "a@example.org") if b"<rej@" in m]
    assert [m for m in stored_messages(server.data, "b@example.org") if b"<rej@" in m]


def test_fileinto_lands_in_the_mailbox(server, client):
    (reply,) = transaction(client, ["a@example.org"], message("list1", "[list] news"))
    assert reply[0] == 250
    assert [m for m in stored_messages(server.data, "a@example.org", "Lists") if b"<list1@" in m]
    assert not [m for m in stored_messages(server.data, "a@example.org") if b"<list1@" in m]


def test_vacation_reply_is_queued_once_before_the_250(server, client):
    (reply,) = transaction(client, ["a@example.org"], message("vac1", "hello"))
    assert reply[0] == 250
    first = rows(server, "vacation")        # read right after the 250: already committed
    assert [(r.sender, r.address) for r in first] == [("", "sender@example.invalid")]
    (reply,) = transaction(client, ["a@example.org"], message("vac2", "hello again"))
    assert reply[0] == 250
    assert len(rows(server, "vacation")) == 1
    assert len([m for m in stored_messages(server.data, "a@example.org") if b"<vac" in m]) == 2


def test_roost_deliver_exits_77_with_the_reason_on_a_reject(tmp_path):
    data = tmp_path / "data"
    add_user(data, "c@example.org")
    store = Store.open(str(data))
    scripts.put_script(store, store.account("c@example.org").id, "main",
                       'require "reject";\r\nreject "Not here.";\r\n', activate=True)
    store.close()
    proc = roost(data, "deliver", "c@example.org", "--sender", "x@example.invalid",
                 input=message("cli", "hi", to="c@example.org"), check=False)
    assert proc.returncode == 77 and b"Not here." in proc.stderr
    assert stored_messages(data, "c@example.org") == []
