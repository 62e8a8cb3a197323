"""storage.acl: grants, the rights they add up to, what is shared with whom,
and that grants go with their mailbox and with a deleted account."""

import pytest

from roost.protocols.imap.parser import parse
from roost.storage.acl import RIGHTS, expand_rights, with_virtual
from roost.storage.errors import AccountNotFound, InvalidName, MailboxNotFound
from roost.storage.store import Store
from tests.conftest import pg_store


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s, cleanup = Store.open(str(tmp_path / "data")), None
    else:
        s, cleanup = pg_store(tmp_path, "roost_acl_")
    yield s
    if cleanup:
        cleanup()
    else:
        s.close()


def test_rights_strings():
    assert expand_rights("rl") == "lr"
    assert expand_rights("cd") == "kxte"
    assert with_virtual("lrk") == "lrkc" and with_virtual("lrt") == "lrtd"
    assert with_virtual(RIGHTS) == "lrswipkxteacd"
    for wrong in ("Q", "q", "1", " "):
        with pytest.raises(InvalidName):
            expand_rights(wrong)


def test_grants_add_up_and_are_revoked(store):
    alice, bob = store.add_account("alice@example.org"), store.add_account("bob@example.org")
    carol = store.add_account("carol@example.org")
    box = store.create_mailbox(alice.id, "Team/Plans")
    assert store.shared_mailboxes(bob) == [] and store.rights(bob, box) == ""
    assert store.rights(alice, box) == RIGHTS
    with pytest.raises(MailboxNotFound):
        store.shared_mailbox(bob, "alice@example.org", "Team/Plans")
    with pytest.raises(MailboxNotFound):      # the same as a mailbox that does not exist
        store.shared_mailbox(bob, "alice@example.org", "Nope")
    store.grant(box.id, "BOB@example.org", "rl")
    store.grant(box.id, "anyone", "s")
    assert store.acl(box.id) == {"anyone": "s", "bob@example.org": "lr"}
    assert store.rights(bob, box) == "lrs" and store.rights(carol, box) == "s"
    (owner, got, rights), = store.shared_mailboxes(bob)
    assert (owner, got.id, got.name, rights) == ("alice@example.org", box.id, "Team/Plans", "lrs")
    assert store.shared_mailbox(bob, "Alice@Example.org", "Team/Plans")[1] == "lrs"
    with pytest.raises(AccountNotFound):
        store.grant(box.id, "nobody@example.org", "lr")
    with pytest.raises(InvalidName):
        store.grant(box.id, "alice@example.org", "lr")
    store.revoke(box.id, "bob@example.org")
    store.revoke(box.id, "bob@example.org")
    assert store.rights(bob, box) == "s"
    store.grant(box.id, "anyone", "")
    assert store.acl(box.id) == {} and store.shared_mailboxes(carol) == []


def test_grants_go_with_the_mailbox_and_the_grantee(store):
    alice, bob = store.add_account("alice@example.org"), store.add_account("bob@example.org")
    box = store.create_mailbox(alice.id, "Shared")
    other = store.create_mailbox(alice.id, "Other")
    store.grant(box.id, "bob@example.org", "lr")
    store.grant(other.id, "bob@example.org", "lr")
    store.delete_mailbox(alice.id, box.id)
    assert [b.name for _o, b, _r in store.shared_mailboxes(bob)] == ["Other"]
    store.delete_account("bob@example.org")
    assert store.acl(other.id) == {}
    again = store.add_account("bob@example.org")     # a new account of the old name inherits nothing
    assert store.shared_mailboxes(again) == []


def test_a_grant_is_a_mailbox_change_of_the_owner(store):
    alice = store.add_account("alice@example.org")
    store.add_account("bob@example.org")
    box = store.create_mailbox(alice.id, "Shared")
    before = store.states(alice.id, {"Mailbox"})["Mailbox"]
    store.grant(box.id, "bob@example.org", "lr")
    assert store.states(alice.id, {"Mailbox"})["Mailbox"] != before


def test_acl_commands_parse():
    cmd = parse([b'a SETACL "Other Users/x@y/Box" Fred +lrd'])
    assert (cmd.verb, cmd.mailbox, cmd.identifier, cmd.rights) == ("SETACL", "Other Users/x@y/Box", "Fred", "+lrd")
    assert parse([b"a SETACL INBOX fred "]).rights == ""
    assert parse([b"a DELETEACL INBOX fred"]).identifier == "fred"
    assert parse([b"a LISTRIGHTS INBOX anyone"]).identifier == "anyone"
    assert parse([b"a MYRIGHTS INBOX"]).mailbox == "INBOX"
    assert parse([b"a GETACL {5}\r\n", b"INBOX"]).mailbox == "INBOX"
