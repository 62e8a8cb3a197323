"""Change events reach subscribers in this process and, through the relay
socket, the server process."""

import select

from roost.storage.notify import MAX_PAYLOAD, Change, ChangeBus, decode, encode, encode_all
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


def test_a_change_too_big_for_one_message_is_split_and_loses_nothing():
    imap = frozenset(("metadata", i, "/private/comment/" + "x" * 50) for i in range(3000))
    big = Change(5, 77, frozenset({"Email", "Mailbox"}), frozenset(range(1, 30001)), imap)
    parts = encode_all(big, 9)
    assert len(parts) > 1 and all(len(p) <= MAX_PAYLOAD for p in parts)
    got = [decode(p) for p in parts]
    assert {origin for _c, origin in got} == {9}
    assert {(c.account_id, c.modseq, c.kinds) for c, _o in got} == {(5, 77, big.kinds)}
    assert frozenset().union(*(c.mailbox_ids for c, _o in got)) == big.mailbox_ids
    assert frozenset().union(*(c.imap for c, _o in got)) == imap
    small = Change(5, 78, frozenset({"Email"}), frozenset({3}))
    assert encode_all(small) == [encode(small)]
