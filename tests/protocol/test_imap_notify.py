"""NOTIFY's SubscriptionChange, MailboxMetadataChange and ServerMetadataChange
(RFC 5465 sections 5.5-5.7) against a real ``roost serve``: one session sets
NOTIFY and sends nothing more, another SUBSCRIBEs or SETMETADATAs, and the
first receives the LIST and METADATA responses by itself."""

import socket

import pytest

from tests.imap_helpers import Wire, _close_connections, close_all, start_server  # noqa: F401 - fixture

USERS = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("notify"),
                       users=tuple((f"u{i}@example.org", "pw") for i in range(1, USERS + 1)))
    yield srv
    close_all()
    srv.stop()


_counter = [0]


@pytest.fixture
def user(server):
    """An account of its own per test."""
    _counter[0] += 1
    assert _counter[0] <= USERS
    return f"u{_counter[0]}@example.org"


def ok(lines):
    assert lines[-1].split(b" ")[1] == b"OK", lines
    return lines


def login(server, address):
    w = Wire(server.ports["imap"])
    assert w.cmd(f'L1 LOGIN "{address}" "pw"')[-1].startswith(b"L1 OK")
    return w


def until(w, pred, limit=20):
    """Lines the server sends unasked, up to the first that ``pred`` accepts."""
    lines = []
    for _ in range(limit):
        lines.append(w.line())
        if pred(lines[-1]):
            return lines
    raise AssertionError(lines)


def quiet(w, seconds=0.5):
    w.sock.settimeout(seconds)
    try:
        data = w.sock.recv(4096)
    except (socket.timeout, TimeoutError):
        data = b""
    finally:
        w.sock.settimeout(20)
    assert data == b"", data


def test_subscription_change(server, user):
    w = login(server, user)
    other = login(server, user)
    ok(other.cmd("b0 CREATE Lists"))
    ok(w.cmd("a1 NOTIFY SET (PERSONAL (SubscriptionChange))"))
    ok(other.cmd("b1 SUBSCRIBE Lists"))
    assert until(w, lambda x: x.startswith(b"* LIST"))[-1] == b'* LIST (\\Subscribed) "/" Lists'
    ok(other.cmd("b2 UNSUBSCRIBE Lists"))
    assert until(w, lambda x: x.startswith(b"* LIST"))[-1] == b'* LIST () "/" Lists'
    # a name no mailbox has may be subscribed (RFC 3501 6.3.6)
    ok(other.cmd("b3 SUBSCRIBE Nowhere"))
    assert until(w, lambda x: x.startswith(b"* LIST"))[-1] == \
        b'* LIST (\\Subscribed \\NonExistent) "/" Nowhere'
    # nothing changed: nothing sent
    ok(other.cmd("b4 SUBSCRIBE Nowhere"))
    quiet(w)
    # a mailbox name change is not a subscription change
    ok(other.cmd("b5 CREATE Other"))
    quiet(w)
    # the filter decides: INBOXES does not name Lists
    ok(w.cmd("a2 NOTIFY SET (INBOXES (SubscriptionChange))"))
    ok(other.cmd("b6 SUBSCRIBE Lists"))
    quiet(w)
    ok(other.cmd("b7 UNSUBSCRIBE INBOX"))
    assert until(w, lambda x: x.startswith(b"* LIST"))[-1] == b'* LIST () "/" INBOX'
    ok(w.cmd("a3 NOTIFY NONE"))
    ok(other.cmd("b8 SUBSCRIBE INBOX"))
    quiet(w)


def test_subscribed_filter_hears_subscribe_and_unsubscribe(server, user):
    """SUBSCRIBED names the mailboxes subscribed now (the subscriptions
    table): a mailbox's STATUS follows its subscription, and both ends of a
    subscription are reported."""
    w = login(server, user)
    other = login(server, user)
    ok(other.cmd("b0 CREATE Watched"))
    ok(w.cmd("a1 NOTIFY SET (SUBSCRIBED (MessageNew MessageExpunge SubscriptionChange))"))
    ok(other.cmd('b1 APPEND Watched {10+}\r\nSubject:\r\n'))
    quiet(w)                                  # not subscribed: not named
    ok(other.cmd("b2 SUBSCRIBE Watched"))
    assert until(w, lambda x: x.startswith(b"* LIST"))[-1] == b'* LIST (\\Subscribed) "/" Watched'
    ok(other.cmd('b3 APPEND Watched {10+}\r\nSubject:\r\n'))
    assert until(w, lambda x: x.startswith(b"* STATUS"))[-1].startswith(
        b"* STATUS Watched (MESSAGES 2 UIDNEXT 3 ")
    ok(other.cmd("b4 UNSUBSCRIBE Watched"))
    assert until(w, lambda x: x.startswith(b"* LIST"))[-1] == b'* LIST () "/" Watched'
    ok(other.cmd('b5 APPEND Watched {10+}\r\nSubject:\r\n'))
    quiet(w)


def test_mailbox_name_shows_subscribed(server, user):
    w = login(server, user)
    other = login(server, user)
    ok(other.cmd("b0 CREATE Old"))
    ok(other.cmd("b1 SUBSCRIBE Old"))
    ok(w.cmd("a1 NOTIFY SET (PERSONAL (MailboxName))"))
    ok(other.cmd("b2 RENAME Old New"))          # the subscription follows (storage.imapstate)
    assert until(w, lambda x: x.startswith(b"* LIST"))[-1] == \
        b'* LIST (\\Subscribed) "/" New ("OLDNAME" (Old))'
    ok(other.cmd("b3 DELETE New"))              # DELETE keeps the subscription
    assert until(w, lambda x: x.startswith(b"* LIST"))[-1] == \
        b'* LIST (\\Subscribed \\NonExistent) "/" New'


def test_mailbox_metadata_change(server, user):
    w = login(server, user)
    other = login(server, user)
    ok(other.cmd("b0 CREATE Notes"))
    ok(other.cmd("b0a CREATE Quiet"))
    ok(w.cmd("a1 NOTIFY SET (MAILBOXES Notes (MailboxMetadataChange))"))
    ok(other.cmd('b1 SETMETADATA Notes (/private/comment "hello" /shared/comment "all")'))
    # names only, never values (RFC 5464 section 4.4.2)
    assert until(w, lambda x: x.startswith(b"* METADATA"))[-1] == \
        b"* METADATA Notes /private/comment /shared/comment"
    ok(other.cmd("b2 SETMETADATA Notes (/private/comment NIL)"))
    assert until(w, lambda x: x.startswith(b"* METADATA"))[-1] == b"* METADATA Notes /private/comment"
    # removing what is not there changes nothing
    ok(other.cmd("b3 SETMETADATA Notes (/private/absent NIL)"))
    quiet(w)
    # another mailbox, and the server's entries, are not asked for
    ok(other.cmd('b4 SETMETADATA Quiet (/private/comment "x")'))
    ok(other.cmd('b5 SETMETADATA "" (/private/comment "x")'))
    quiet(w)
    # a refused SETMETADATA writes nothing and reports nothing
    assert other.cmd('b6 SETMETADATA "" (/shared/comment "x")')[-1].startswith(b"b6 NO")
    quiet(w)
    # the client reads the values itself
    lines = ok(w.cmd("a2 GETMETADATA Notes /shared/comment"))
    assert b'* METADATA Notes (/shared/comment "all")' in lines


def test_selected_mailbox_metadata(server, user):
    w = login(server, user)
    other = login(server, user)
    ok(other.cmd("b0 CREATE Sel"))
    ok(w.cmd("a1 SELECT Sel"))
    ok(w.cmd("a2 NOTIFY SET (SELECTED (MailboxMetadataChange)) (PERSONAL (MailboxMetadataChange))"))
    ok(other.cmd('b1 SETMETADATA Sel (/private/x "1")'))
    assert until(w, lambda x: x.startswith(b"* METADATA"))[-1] == b"* METADATA Sel /private/x"
    # a new message in the selected mailbox: only metadata was asked for there
    ok(other.cmd('b2 APPEND Sel {10+}\r\nSubject:\r\n'))
    quiet(w)
    ok(w.cmd("a3 NOTIFY SET (SELECTED NONE) (PERSONAL (MailboxMetadataChange))"))
    ok(other.cmd('b3 SETMETADATA Sel (/private/x "2")'))
    quiet(w)
    ok(other.cmd('b4 SETMETADATA INBOX (/private/x "2")'))
    assert until(w, lambda x: x.startswith(b"* METADATA"))[-1] == b"* METADATA INBOX /private/x"


def test_server_metadata_change(server, user):
    w = login(server, user)
    other = login(server, user)
    ok(w.cmd("a1 NOTIFY SET (INBOXES (ServerMetadataChange))"))
    ok(other.cmd('b1 SETMETADATA "" (/private/vendor/roost/test "v" /private/comment "c")'))
    assert until(w, lambda x: x.startswith(b"* METADATA"))[-1] == \
        b'* METADATA "" /private/comment /private/vendor/roost/test'
    ok(other.cmd('b2 SETMETADATA INBOX (/private/comment "c")'))   # a mailbox's: not asked for
    quiet(w)
    # in IDLE too
    w.send("a2 IDLE\r\n")
    assert w.line().startswith(b"+ ")
    ok(other.cmd('b3 SETMETADATA "" (/private/comment NIL)'))
    assert until(w, lambda x: x.startswith(b"* METADATA"))[-1] == b'* METADATA "" /private/comment'
    w.send("DONE\r\n")
    assert w.until("a2")[-1] == b"a2 OK IDLE terminated"


def test_events_are_checked(server, user):
    w = login(server, user)
    line = w.cmd("a1 NOTIFY SET (PERSONAL (MessageNew MessageExpunge AnnotationChange))")[-1]
    assert line.startswith(b"a1 NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName "
                           b"SubscriptionChange MailboxMetadataChange ServerMetadataChange)]"), line
    assert w.cmd("a2 NOTIFY SET (SELECTED (SubscriptionChange))")[-1].startswith(b"a2 BAD")
    assert w.cmd("a3 NOTIFY SET (SELECTED (ServerMetadataChange))")[-1].startswith(b"a3 BAD")
    ok(w.cmd("a4 NOTIFY SET (PERSONAL (SubscriptionChange MailboxMetadataChange ServerMetadataChange))"))
    ok(w.cmd("a5 NOTIFY NONE"))
