"""``$junk``/``$notjunk`` from users' moves (storage.messages.junk_learning):
into Junk by IMAP MOVE, COPY + EXPUNGE and JMAP mailboxIds gives ``$junk``
(and drops ``$notjunk``); out of Junk into another mailbox but Trash gives
``$notjunk``; into Trash from Junk says nothing. Against one ``roost
serve`` with IMAP, JMAP and LMTP, checked through both protocols."""

import imapclient
import pytest

from tests.jmap_helpers import ALICE, PASSWORDS, Client, lmtp_deliver, message, start


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start(tmp_path_factory, "junk", listeners=("jmap", "lmtp", "imap"))
    yield srv
    srv.stop()


@pytest.fixture
def imap(server):
    c = imapclient.IMAPClient("127.0.0.1", server.ports["imap"], ssl=False, timeout=20)
    c.login(ALICE, PASSWORDS[ALICE])
    yield c
    c.logout()


@pytest.fixture(scope="module")
def jmap(server):
    c = Client(server, ALICE)
    yield c
    c.close()


def deliver(server, subject):
    assert lmtp_deliver(server.ports["lmtp"], ALICE, message(subject))[-1].startswith(b"250")


def uid_of(imap, folder, subject):
    imap.select_folder(folder)
    (uid,) = imap.search(["SUBJECT", subject])
    return uid


def flags(imap, folder, uid):
    imap.select_folder(folder)
    return set(imap.get_flags([uid])[uid])


def test_imap_move_into_and_out_of_junk(server, imap):
    deliver(server, "imap-move")
    uid = uid_of(imap, "INBOX", "imap-move")
    imap.add_flags([uid], [b"$NotJunk"])
    imap.move([uid], "Junk")
    uid = uid_of(imap, "Junk", "imap-move")
    assert b"$junk" in {f.lower() for f in flags(imap, "Junk", uid)}
    assert b"$notjunk" not in {f.lower() for f in flags(imap, "Junk", uid)}
    imap.move([uid], "INBOX")
    uid = uid_of(imap, "INBOX", "imap-move")
    got = {f.lower() for f in flags(imap, "INBOX", uid)}
    assert b"$notjunk" in got and b"$junk" not in got


def test_imap_copy_expunge_into_junk_and_junk_to_trash(server, imap):
    deliver(server, "imap-copy")
    uid = uid_of(imap, "INBOX", "imap-copy")
    imap.copy([uid], "Junk")
    imap.delete_messages([uid])
    imap.expunge()
    uid = uid_of(imap, "Junk", "imap-copy")
    assert b"$junk" in {f.lower() for f in flags(imap, "Junk", uid)}
    imap.move([uid], "Trash")         # deleting junk says nothing new
    uid = uid_of(imap, "Trash", "imap-copy")
    got = {f.lower() for f in flags(imap, "Trash", uid)}
    assert b"$junk" in got and b"$notjunk" not in got


def test_a_plain_move_between_other_mailboxes_changes_nothing(server, imap):
    deliver(server, "imap-plain")
    uid = uid_of(imap, "INBOX", "imap-plain")
    imap.move([uid], "Archive")
    uid = uid_of(imap, "Archive", "imap-plain")
    assert not {f.lower() for f in flags(imap, "Archive", uid)} & {b"$junk", b"$notjunk"}


def test_jmap_mailboxids_into_and_out_of_junk(server, jmap, imap):
    deliver(server, "jmap-move")
    inbox, junk = jmap.mailbox("inbox"), jmap.mailbox("junk")
    (eid,) = jmap.ok("Email/query", filter={"subject": "jmap-move"})["ids"]
    jmap.ok("Email/set", update={eid: {"mailboxIds": {junk: True}}})
    (email,) = jmap.ok("Email/get", ids=[eid], properties=["keywords", "mailboxIds"])["list"]
    assert email["mailboxIds"] == {junk: True} and email["keywords"].get("$junk") is True
    # IMAP sees the same keyword.
    uid = uid_of(imap, "Junk", "jmap-move")
    assert b"$junk" in {f.lower() for f in flags(imap, "Junk", uid)}
    jmap.ok("Email/set", update={eid: {"mailboxIds": {inbox: True}}})
    (email,) = jmap.ok("Email/get", ids=[eid], properties=["keywords"])["list"]
    assert email["keywords"].get("$notjunk") is True and "$junk" not in email["keywords"]
