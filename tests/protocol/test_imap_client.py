"""Every IMAP command through IMAPClient, the Python client library, against
a real ``roost serve`` (subprocess, port 0)."""

import datetime
import ssl
import threading
import time

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from tests.imap_helpers import PASSWORD, USER, deliver, start_server

MSG = b"From: Ann <ann@example.org>\r\nTo: Bob <bob@example.net>\r\nSubject: Lunch?\r\n" \
      b"Date: Tue, 3 Mar 2026 10:00:00 +0000\r\nMessage-ID: <lunch@example.org>\r\n\r\nNoon at the usual place.\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("imapclient"))
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    c = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=20)
    c.login(USER, PASSWORD)
    yield c
    try:
        c.logout()
    except (IMAPClientError, OSError):
        c.shutdown()


_n = [0]


@pytest.fixture
def folder(client):
    _n[0] += 1
    name = f"F{_n[0]}"
    client.create_folder(name)
    client.append(name, MSG, flags=[b"\\Seen"], msg_time=datetime.datetime(2026, 3, 3, 10, 0, 0,
                                                                          tzinfo=datetime.timezone.utc))
    client.append(name, b"Subject: second\r\n\r\nsecond body\r\n")
    client.select_folder(name)      # claims \Recent (test_recent), so the tests see plain flags
    client.unselect_folder()
    return name


def test_recent(client, server):
    client.create_folder("Recent-test")
    client.append("Recent-test", b"Subject: new\r\n\r\nnew\r\n")
    assert client.folder_status("Recent-test", [b"RECENT"])[b"RECENT"] == 1
    assert client.select_folder("Recent-test")[b"RECENT"] == 1
    assert client.get_flags([1]) == {1: (b"\\Recent",)}
    assert client.search(["RECENT"]) == [1] and client.search(["NEW"]) == [1]
    other = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=20)
    other.login(USER, PASSWORD)
    try:
        assert other.select_folder("Recent-test")[b"RECENT"] == 0
        assert other.get_flags([1]) == {1: ()} and other.search(["OLD"]) == [1]
    finally:
        other.logout()


def test_capabilities_id_namespace_noop(client):
    caps = client.capabilities()
    assert b"IMAP4REV1" in caps and b"IDLE" in caps and b"MOVE" in caps
    server_id = client.id_({"name": "pytest"})
    server_id = server_id[0] if isinstance(server_id[0], tuple) else server_id
    assert dict(zip(server_id[::2], server_id[1::2]))[b"name"] == b"Roost"
    ns = client.namespace()
    assert ns.personal == (("", "/"),) and ns.other == (("Other Users/", "/"),) and ns.shared is None
    assert client.noop()[0].startswith(b"NOOP")


def test_plain_login_and_tls(server):
    c = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False)
    c.plain_login(USER, PASSWORD)
    c.logout()
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    c = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False)
    c.starttls(ctx)
    c.login(USER, PASSWORD)
    assert c.select_folder("INBOX")
    c.logout()
    c = IMAPClient("127.0.0.1", port=server.ports["imaps"], ssl=True, ssl_context=ctx)
    c.login(USER, PASSWORD)
    c.logout()


def test_bad_password(server):
    c = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False)
    with pytest.raises(IMAPClientError):
        c.login(USER, "nope")
    c.logout()


def test_folders(client):
    client.create_folder("Projects/Roost")
    names = [f[2] for f in client.list_folders()]
    assert "INBOX" in names and "Projects" in names and "Projects/Roost" in names
    flags = {f[2]: f[0] for f in client.list_folders()}
    assert b"\\HasChildren" in flags["Projects"] and b"\\Sent" in flags["Sent"]
    assert client.find_special_folder(b"\\Trash") == "Trash"
    assert client.folder_exists("Projects/Roost")
    client.rename_folder("Projects/Roost", "Projects/Kestrel")
    assert not client.folder_exists("Projects/Roost")
    client.unsubscribe_folder("Projects/Kestrel")
    assert "Projects/Kestrel" not in [f[2] for f in client.list_sub_folders()]
    client.subscribe_folder("Projects/Kestrel")
    assert "Projects/Kestrel" in [f[2] for f in client.list_sub_folders()]
    assert "INBOX" in [f[2] for f in client.xlist_folders()]
    client.delete_folder("Projects/Kestrel")
    assert not client.folder_exists("Projects/Kestrel")
    client.create_folder("Caf\u00e9")                       # modified UTF-7 on the wire
    assert "Caf\u00e9" in [f[2] for f in client.list_folders()]


def test_status_select_examine(client, folder):
    st = client.folder_status(folder, [b"MESSAGES", b"UNSEEN", b"UIDNEXT", b"UIDVALIDITY", b"SIZE"])
    assert st[b"MESSAGES"] == 2 and st[b"UNSEEN"] == 1 and st[b"UIDNEXT"] == 3
    info = client.select_folder(folder)
    assert info[b"EXISTS"] == 2 and info[b"UIDNEXT"] == 3 and b"\\Seen" in info[b"FLAGS"]
    assert info[b"READ-WRITE"]
    info = client.select_folder(folder, readonly=True)
    assert info[b"READ-ONLY"]
    client.unselect_folder()
    client.select_folder(folder)
    client.close_folder()


def test_fetch(client, folder):
    client.select_folder(folder)
    data = client.fetch([1, 2], ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE",
                                "BODY.PEEK[]", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]", "MODSEQ",
                                "EMAILID", "THREADID", "SAVEDATE"])
    first = data[1]
    assert first[b"BODY[]"] == MSG and first[b"RFC822.SIZE"] == len(MSG)
    assert first[b"FLAGS"] == (b"\\Seen",)
    env = first[b"ENVELOPE"]
    assert env.subject == b"Lunch?" and env.from_[0].mailbox == b"ann" and env.to[0].host == b"example.net"
    assert first[b"INTERNALDATE"].replace(tzinfo=None) == datetime.datetime(2026, 3, 3, 10, 0, 0) \
        or first[b"INTERNALDATE"].year == 2026
    assert first[b"BODY[HEADER.FIELDS (SUBJECT)]"] == b"Subject: Lunch?\r\n\r\n"
    assert first[b"BODYSTRUCTURE"][0] == b"TEXT"
    assert first[b"EMAILID"][0].startswith(b"E") and first[b"THREADID"][0].startswith(b"T")
    assert data[2][b"FLAGS"] == ()
    client.fetch(2, ["BODY[TEXT]"])
    assert client.get_flags(2)[2] == (b"\\Seen",)


def test_search(client, folder):
    client.select_folder(folder)
    assert client.search(["SEEN"]) == [1]
    assert client.search(["SUBJECT", "second"]) == [2]
    assert client.search(["OR", "FROM", "ann", "BODY", "second"]) == [1, 2]
    assert client.search(["SINCE", datetime.date(2026, 3, 3), "BEFORE", datetime.date(2026, 3, 4)]) == [1]
    assert client.search("UNSEEN", charset="UTF-8") == [2]
    client.use_uid = False
    assert client.search(["2"]) == [2]


def test_flags(client, folder):
    client.select_folder(folder)
    assert client.add_flags([1, 2], [b"\\Flagged", b"$Important"])[2] == (b"\\Flagged", b"$Important")
    assert client.remove_flags([2], [b"$Important"])[2] == (b"\\Flagged",)
    assert client.set_flags([2], [b"\\Answered"])[2] == (b"\\Answered",)
    assert client.get_flags([1, 2]) == {1: (b"\\Seen", b"\\Flagged", b"$Important"), 2: (b"\\Answered",)}


def test_copy_move_expunge(client, folder):
    client.create_folder(folder + "/dest")
    client.select_folder(folder)
    client.copy([1], folder + "/dest")
    client.move([2], folder + "/dest")
    assert client.search("ALL") == [1]
    client.delete_messages([1])
    client.uid_expunge([1])
    assert client.search("ALL") == []
    assert client.folder_status(folder + "/dest", [b"MESSAGES"])[b"MESSAGES"] == 2
    client.select_folder(folder + "/dest")
    client.delete_messages([1, 2])
    client.expunge()
    assert client.search("ALL") == []


def test_multiappend(client):
    client.create_folder("Multi")
    client.multiappend("Multi", [b"Subject: a\r\n\r\na\r\n", {"msg": b"Subject: b\r\n\r\nb\r\n",
                                                             "flags": [b"\\Seen"]}])
    assert client.folder_status("Multi", [b"MESSAGES"])[b"MESSAGES"] == 2


def test_enable_condstore(client, folder):
    assert client.enable("CONDSTORE") == [b"CONDSTORE"]
    client.select_folder(folder)
    data = client.fetch([1, 2], ["MODSEQ"])
    top = max(d[b"MODSEQ"][0] for d in data.values())
    client.add_flags([2], [b"\\Deleted"])
    changed = client.fetch([1, 2], ["FLAGS"], modifiers=[f"CHANGEDSINCE {top}"])
    assert list(changed) == [2]


def test_idle_sees_delivery(server, client):
    client.select_folder("INBOX")
    client.idle()
    t = threading.Timer(0.2, deliver, (server, b"Subject: idle\r\n\r\nhello\r\n"))
    t.start()
    responses = client.idle_check(timeout=10)
    client.idle_done()
    t.join()
    assert any(r[1] == b"EXISTS" for r in responses), responses


def test_other_session_changes_arrive_on_noop(server, client, folder):
    client.select_folder(folder)
    other = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False)
    other.login(USER, PASSWORD)
    other.select_folder(folder)
    other.add_flags([1], [b"\\Flagged"])
    other.append(folder, b"Subject: third\r\n\r\n3\r\n")
    other.logout()
    deadline = time.monotonic() + 5
    seen = []
    while time.monotonic() < deadline and not any(r[1] == b"EXISTS" for r in seen):
        seen += client.noop()[1]
    assert (3, b"EXISTS") in seen
    assert any(r[1] == b"FETCH" and r[0] == 1 for r in seen)
