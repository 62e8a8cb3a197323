"""Change events reach subscribers in this process and, through the relay
socket, the server process."""

import select

from roost.storage.notify import Change, ChangeBus, decode, encode
from roost.storage.store import Store, relay_socket_path


def test_subscribe_and_unsubscribe():
    bus = ChangeBus()
    seen = []
    stop = bus.subscribe(7, seen.append)
    bus.publish(Change(7, 3, frozenset({"Email"})))
    bus.publish(Change(8, 4, frozenset({"Email"})))
    stop()
    bus.publish(Change(7, 5, frozenset({"Email"})))
    assert [c.modseq for c in seen] == [3]


def test_another_process_relays_its_changes_to_the_server(tmp_path):
    server = ChangeBus()
    sock = server.listen(relay_socket_path(str(tmp_path)))
    assert sock is not None
    seen = []
    server.subscribe(1, seen.append)

    # A second process (here: a second store on the same data directory) delivers.
    other = Store.open(str(tmp_path))
    assert other.bus.forward is not None     # it relays to DATA/roost.sock
    acct = other.add_account("a@example.org")
    box = other.create_mailbox(acct.id, "Lists")

    assert select.select([sock], [], [], 2)[0]
    server.receive(sock)
    assert seen and seen[-1].modseq == other.state(acct.id)
    assert "Mailbox" in seen[-1].kinds
    other.close()
    sock.close()
    del box


def test_relay_without_a_server_is_silent(tmp_path):
    bus = ChangeBus()
    bus.relay_to(str(tmp_path / "nobody.sock"))
    bus.publish(Change(1, 2))  # must not raise


def test_the_relay_carries_imap_changes(tmp_path):
    server = ChangeBus()
    sock = server.listen(relay_socket_path(str(tmp_path)))
    seen = []
    server.subscribe(3, seen.append)
    other = ChangeBus()
    other.relay_to(relay_socket_path(str(tmp_path)))
    imap = frozenset({("subscription", "Lists", True), ("metadata", 0, "/private/comment")})
    other.publish(Change(3, 0, imap=imap))
    assert select.select([sock], [], [], 2)[0]
    server.receive(sock)
    assert seen == [Change(3, 0, frozenset(), frozenset(), imap)]
    sock.close()


def test_encoded_change_keeps_its_origin_and_junk_is_refused():
    change = Change(3, 9, frozenset({"Email"}), frozenset({4}), frozenset({("metadata", 0, "/x")}))
    assert decode(encode(change, 1234)) == (change, 1234)
    for junk in (b"", b"{", b'{"a": "x"}', b"[1]", b'{"a": 1, "m": 2, "k": 5, "b": []}'):
        assert decode(junk) is None
