"""ACL (RFC 4314) and LIST-MYRIGHTS (RFC 8440) over IMAP against a real
``roost serve``: grants and revocations between two accounts, the Other Users
namespace, the rights each command needs, and that nothing of one account is
visible to another without a grant (the isolation cases)."""

import re
import time

import pytest

from tests.imap_helpers import Wire, _close_connections, close_all, deliver, start_server  # noqa: F401 - _close_connections is a fixture

ALICE, BOB, CAROL = "alice@example.org", "bob@example.org", "carol@example.org"
PW = "secret"
MSG = b"From: Ann <ann@example.net>\r\nTo: alice@example.org\r\nSubject: team plans\r\n\r\nbudget spreadsheet\r\n"
OTHER = "Other Users/alice@example.org/"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("acl"), users=((ALICE, PW), (BOB, PW), (CAROL, PW)))
    yield srv
    close_all()
    srv.stop()


def ok(lines):
    assert lines[-1].split(b" ")[1] == b"OK", lines
    return lines


def no(lines, code=None):
    assert lines[-1].split(b" ")[1] == b"NO", lines
    if code:
        assert lines[-1].split(b" ")[2] == code.encode(), lines
    return lines


def plain(data):
    """``data`` without \\Recent (which session claims it is not what these tests are about)."""
    if isinstance(data, list):
        return [plain(x) for x in data]
    return data.replace(b"\\Recent ", b"").replace(b" \\Recent", b"").replace(b"(\\Recent)", b"()")


def bad(lines):
    assert lines[-1].split(b" ")[1] == b"BAD", lines
    return lines


def login(server, user):
    w = Wire(server.ports["imap"])
    w.login(user, PW)
    return w


def append(w, mailbox, data=MSG, flags=""):
    w.send(f'ap APPEND "{mailbox}" ({flags}) {{{len(data)}+}}\r\n'.encode() + data + b"\r\n")
    return w.until("ap")


_n = [0]


@pytest.fixture
def team(server):
    """Alice's connection with a fresh mailbox holding one message; bob's and carol's."""
    _n[0] += 1
    name = f"Team{_n[0]}"
    alice = login(server, ALICE)
    ok(alice.cmd(f"a0 CREATE {name}"))
    ok(append(alice, name))
    alice.name = name
    yield alice, login(server, BOB), login(server, CAROL)
    cleanup = login(server, ALICE)          # its grants go with it: the next test starts unshared
    for line in cleanup.cmd('z1 LIST "" "Team*"')[:-1]:
        cleanup.cmd(f"z2 DELETE {line.rsplit(b' ', 1)[1].decode()}")
    cleanup.close()


def test_capabilities_and_namespace(server):
    w = login(server, BOB)
    caps = ok(w.cmd("c1 CAPABILITY"))[0].split()
    assert b"ACL" in caps and b"RIGHTS=texk" in caps and b"LIST-MYRIGHTS" in caps
    assert ok(w.cmd("n1 NAMESPACE"))[0] == b'* NAMESPACE (("" "/")) (("Other Users/" "/")) NIL'


def test_rfc4314_setacl_getacl_examples(team):
    alice, _bob, _carol = team
    name = alice.name
    assert ok(alice.cmd(f"g1 GETACL {name}"))[0] == f"* ACL {name} {ALICE} lrswipkxteacd".encode()
    ok(alice.cmd(f"s1 SETACL {name} {BOB} lrswi"))
    ok(alice.cmd(f"s2 SETACL {name} {BOB.upper()} +cda"))     # any spelling of the login name
    assert ok(alice.cmd(f"g2 GETACL {name}"))[0] == \
        f"* ACL {name} {ALICE} lrswipkxteacd {BOB} lrswikxteacd".encode()
    bad(alice.cmd(f"s3 SETACL {name} {BOB} lrQswicda"))
    bad(alice.cmd(f"s4 SETACL {name} {BOB} lrqswicda"))
    ok(alice.cmd(f"s5 SETACL {name} {BOB} -kxtea"))
    ok(alice.cmd(f"s6 SETACL {name} anyone lr"))
    assert ok(alice.cmd(f"g3 GETACL {name}"))[0] == \
        f"* ACL {name} {ALICE} lrswipkxteacd anyone lr {BOB} lrswi".encode()
    no(alice.cmd(f"s7 SETACL {name} nobody@example.org lr"), "[CANNOT]")
    no(alice.cmd(f"s8 SETACL {name} -{BOB} w"), "[CANNOT]")
    no(alice.cmd(f"s9 SETACL {name} {ALICE} lr"), "[CANNOT]")
    assert ok(alice.cmd(f"l1 LISTRIGHTS {name} {BOB}"))[0] == \
        f'* LISTRIGHTS {name} {BOB} "" l r s w i p k x t e a c d'.encode()
    assert ok(alice.cmd(f"l2 LISTRIGHTS {name} {ALICE}"))[0] == \
        f"* LISTRIGHTS {name} {ALICE} lrswipkxteacd".encode()
    assert ok(alice.cmd(f"m1 MYRIGHTS {name}"))[0] == f"* MYRIGHTS {name} lrswipkxteacd".encode()
    ok(alice.cmd(f"d1 DELETEACL {name} {BOB}"))
    ok(alice.cmd(f"d2 DELETEACL {name} {BOB}"))      # no grant left: still OK
    assert ok(alice.cmd(f"g4 GETACL {name}"))[0] == f"* ACL {name} {ALICE} lrswipkxteacd anyone lr".encode()


def test_nothing_shared_by_default_and_probes_learn_nothing(team):
    alice, bob, _carol = team
    assert not any(b"Other Users" in x for x in ok(bob.cmd('l1 LIST "" "*"')))
    assert ok(bob.cmd('l2 LIST "" "Other Users/*"')) == [b"l2 OK LIST completed"]
    existing, missing, nobody = OTHER + alice.name, OTHER + "NoSuchBox", "Other Users/nobody@example.org/INBOX"
    for i, cmd in enumerate(("SELECT {}", "EXAMINE {}", "STATUS {} (MESSAGES)", "GETACL {}", "MYRIGHTS {}",
                             "DELETE {}", "SETACL {} bob@example.org lr", "LISTRIGHTS {} anyone",
                             "DELETEACL {} anyone", "RENAME {} \"" + OTHER + "X\"")):
        replies = [bob.cmd(f'p{i}{j} ' + cmd.format(f'"{n}"'))[-1].split(b" ", 1)[1]
                   for j, n in enumerate((existing, missing, nobody))]
        assert replies[0] == replies[1] == replies[2], (cmd, replies)
        assert replies[0].startswith(b"NO [NONEXISTENT]"), (cmd, replies)
    assert no(append(bob, existing))[-1].split(b" ", 1)[1] == no(append(bob, missing))[-1].split(b" ", 1)[1]
    ok(bob.cmd("s0 SELECT INBOX"))
    assert no(bob.cmd(f'c1 COPY 1:* "{existing}"')) == no(bob.cmd(f'c1 COPY 1:* "{missing}"'))
    # Alice's own listing and names are untouched by the namespace.
    no(alice.cmd('c2 CREATE "Other Users/x"'), "[CANNOT]")
    no(alice.cmd(f'c3 CREATE "{OTHER}Mine"'), "[CANNOT]")


def test_lookup_and_read_grant(server, team):
    alice, bob, carol = team
    shared = OTHER + alice.name
    ok(alice.cmd(f"s1 SETACL {alice.name} {BOB} lr"))
    lines = ok(bob.cmd('l1 LIST "" "*" RETURN (MYRIGHTS)'))
    assert b'* LIST (\\Noselect \\HasChildren) "/" "Other Users"' in lines
    assert b'* LIST (\\Noselect \\HasChildren) "/" "Other Users/alice@example.org"' in lines
    assert f'* LIST (\\HasNoChildren) "/" "{shared}"'.encode() in lines
    assert f'* MYRIGHTS "{shared}" lr'.encode() in lines
    assert b'* MYRIGHTS INBOX lrswipkxteacd' in lines
    assert ok(bob.cmd('l2 LIST "" "Other Users/%"'))[:-1] == \
        [b'* LIST (\\Noselect \\HasChildren) "/" "Other Users/alice@example.org"']
    assert ok(bob.cmd(f'm1 MYRIGHTS "{shared}"'))[0] == f'* MYRIGHTS "{shared}" lr'.encode()
    assert b"MESSAGES 1" in ok(bob.cmd(f'st STATUS "{shared}" (MESSAGES UNSEEN)'))[0]
    lines = ok(bob.cmd(f'e1 SELECT "{shared}"'))
    assert lines[-1].startswith(b"e1 OK [READ-ONLY]")
    lines = ok(bob.cmd("f1 FETCH 1 (BODY[] FLAGS)"))
    assert b"budget spreadsheet" in lines[0] and b"\\Seen" not in b"".join(lines)
    ok(alice.cmd(f"a1 EXAMINE {alice.name}"))
    assert re.search(rb"FLAGS \((\\Recent)?\)", ok(alice.cmd("a2 FETCH 1 FLAGS"))[0])  # not \Seen
    no(bob.cmd("f2 STORE 1 +FLAGS (\\Flagged)"), "[READ-ONLY]")
    no(bob.cmd("f3 EXPUNGE"), "[READ-ONLY]")
    assert ok(bob.cmd('f4 SEARCH TEXT "spreadsheet"'))[0] == b"* SEARCH 1"
    no(append(bob, shared), "[NOPERM]")
    no(bob.cmd(f'g1 GETACL "{shared}"'), "[NOPERM]")
    no(bob.cmd(f'g2 SETACL "{shared}" {CAROL} lr'), "[NOPERM]")
    no(bob.cmd(f'g3 DELETE "{shared}"'), "[NOPERM]")
    ok(bob.cmd("c1 COPY 1 INBOX"))                  # read is enough to copy out
    ok(bob.cmd("c2 SELECT INBOX"))
    assert b"budget spreadsheet" in b"".join(ok(bob.cmd("c3 FETCH * BODY.PEEK[]")))
    # Carol has no grant: nothing listed, nothing to open.
    assert not any(b"Other Users" in x for x in ok(carol.cmd('l3 LIST "" "*"')))
    no(carol.cmd(f'e2 SELECT "{shared}"'), "[NONEXISTENT]")


def test_write_grant_flags_expunge_append_copy(server, team):
    alice, bob, _carol = team
    shared = OTHER + alice.name
    ok(alice.cmd(f"s1 SETACL {alice.name} {BOB} lrswte"))
    lines = ok(bob.cmd(f'e1 SELECT "{shared}"'))
    assert lines[-1].startswith(b"e1 OK [READ-WRITE]")
    assert b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]" in \
        b"\n".join(lines)
    ok(bob.cmd("f1 STORE 1 +FLAGS (\\Flagged $Work)"))
    ok(alice.cmd(f"a1 SELECT {alice.name}"))
    assert b"\\Flagged $Work" in ok(alice.cmd("a2 FETCH 1 FLAGS"))[0]
    no(append(bob, shared), "[NOPERM]")              # no i
    ok(alice.cmd(f"s2 SETACL {alice.name} {BOB} +i"))
    lines = ok(append(bob, shared, b"Subject: from bob\r\n\r\nhi\r\n", "\\Seen"))
    assert re.search(rb"\[APPENDUID \d+ 2\]", lines[-1])
    ok(bob.cmd("b0 SELECT INBOX"))
    ok(append(bob, "INBOX", b"Subject: bob's own\r\n\r\nmine\r\n", "\\Flagged"))
    ok(bob.cmd("b0 NOOP"))
    lines = ok(bob.cmd(f'b1 COPY * "{shared}"'))     # across accounts
    assert b"[COPYUID " in lines[-1]
    ok(bob.cmd(f'e2 SELECT "{shared}"'))
    lines = ok(bob.cmd("f2 FETCH 1:* (UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    text = b"\n".join(lines)
    assert b"Subject: from bob" in text and b"Subject: bob's own" in text
    assert b"UID 3 FLAGS (\\Flagged)" in plain(text)
    ok(bob.cmd("f3 STORE 1 +FLAGS (\\Deleted)"))
    assert b"* 1 EXPUNGE" in ok(bob.cmd("f4 EXPUNGE"))
    ok(bob.cmd('m1 MOVE 1 "INBOX"'))                # t and e on the source
    lines = ok(alice.cmd("a3 UID FETCH 1:* (FLAGS)"))
    assert sum(1 for x in lines if b" FETCH " in x) == 1, lines


def test_flag_rights_limit_store_append_and_expunge(server, team):
    alice, bob, _carol = team
    shared = OTHER + alice.name
    ok(alice.cmd(f"s1 SETACL {alice.name} {BOB} lrsi"))
    lines = ok(bob.cmd(f'e1 SELECT "{shared}"'))
    assert lines[-1].startswith(b"e1 OK [READ-WRITE]")
    assert b"* OK [PERMANENTFLAGS (\\Seen)]" in b"\n".join(lines)
    no(bob.cmd("f1 STORE 1 +FLAGS (\\Flagged)"), "[NOPERM]")
    assert plain(ok(bob.cmd("f2 STORE 1 +FLAGS (\\Flagged \\Seen)"))[0]) == b"* 1 FETCH (FLAGS (\\Seen))"
    ok(alice.cmd(f"a1 SELECT {alice.name}"))
    ok(alice.cmd("a2 STORE 1 +FLAGS (\\Answered $Keep)"))
    # FLAGS replace by a user with only s: the other flags stay as they are.
    lines = ok(bob.cmd("f3 STORE 1 FLAGS ()"))
    assert b"* 1 FETCH (FLAGS (\\Answered $Keep))" in plain(lines)
    assert b"* OK [PERMANENTFLAGS (\\Seen)] flags the client can change" in lines
    no(bob.cmd("f4 EXPUNGE"), "[NOPERM]")
    ok(append(bob, shared, b"Subject: flags\r\n\r\nx\r\n", "\\Seen \\Flagged \\Deleted $X"))
    ok(bob.cmd("f5 NOOP"))
    assert plain(ok(bob.cmd("f6 FETCH 2 FLAGS"))[0]) == b"* 2 FETCH (FLAGS (\\Seen))"
    ok(alice.cmd("a3 STORE 1:* +FLAGS (\\Deleted)"))
    ok(bob.cmd("f8 CLOSE"))                           # no e: CLOSE only closes
    assert b"MESSAGES 2" in ok(alice.cmd(f"a4 STATUS {alice.name} (MESSAGES)"))[0]
    ok(alice.cmd("a4 STORE 1:* -FLAGS (\\Deleted)"))
    # FETCH of the body sets \Seen only with s.
    ok(alice.cmd(f"s2 SETACL {alice.name} {BOB} lr"))
    ok(alice.cmd("a5 STORE 1:* -FLAGS (\\Seen)"))
    ok(bob.cmd(f'e2 SELECT "{shared}"'))               # rights are read at SELECT
    ok(bob.cmd("f9 FETCH 1 BODY[]"))
    assert b"\\Seen" not in ok(alice.cmd("a6 FETCH 1 FLAGS"))[0]


def test_grantee_sees_owner_changes_in_idle(server, team):
    alice, bob, _carol = team
    shared = OTHER + alice.name
    ok(alice.cmd(f"s1 SETACL {alice.name} {BOB} lrs"))
    ok(bob.cmd(f'e1 SELECT "{shared}"'))
    bob.send("i1 IDLE\r\n")
    assert bob.line() == b"+ idling"
    ok(append(alice, alice.name, b"Subject: live\r\n\r\nnow\r\n"))
    start = time.monotonic()
    assert bob.line() == b"* 2 EXISTS"
    assert time.monotonic() - start < 5
    assert bob.line() == b"* 2 RECENT"      # bob's read-write session claimed both
    ok(alice.cmd(f"a1 SELECT {alice.name}"))
    ok(alice.cmd("a2 STORE 1 +FLAGS (\\Flagged)"))
    assert plain(bob.line()) == b"* 1 FETCH (FLAGS (\\Flagged) UID 1)"
    assert ok(bob.cmd("DONE", tag="i1"))[-1] == b"i1 OK IDLE terminated"


def test_revocation_and_anyone(server, team):
    alice, bob, carol = team
    shared = OTHER + alice.name
    ok(alice.cmd(f"s1 SETACL {alice.name} anyone lr"))
    for w in (bob, carol):
        assert f'* LIST (\\HasNoChildren) "/" "{shared}"'.encode() in ok(w.cmd('l1 LIST "" "Other Users/*"'))
        ok(w.cmd(f'e1 EXAMINE "{shared}"'))
    ok(alice.cmd(f"s2 SETACL {alice.name} {BOB} i"))   # bob's own grant adds to anyone's
    assert ok(bob.cmd(f'm1 MYRIGHTS "{shared}"'))[0] == f'* MYRIGHTS "{shared}" lri'.encode()
    ok(alice.cmd(f"d1 DELETEACL {alice.name} anyone"))
    ok(alice.cmd(f"d2 DELETEACL {alice.name} {BOB}"))
    for user, w in ((BOB, bob), (CAROL, carol)):
        w.send("n1 NOOP\r\n")         # the mailbox they had open is no longer theirs to read
        assert w.line().startswith(b"* BYE [NOPERM]")
        w = login(server, user)
        assert not any(b"Other Users" in x for x in ok(w.cmd('l3 LIST "" "*"')))
        no(w.cmd(f'e2 SELECT "{shared}"'), "[NONEXISTENT]")
        no(w.cmd(f'e3 STATUS "{shared}" (MESSAGES)'), "[NONEXISTENT]")


def test_create_and_delete_need_k_and_x(server, team):
    alice, bob, _carol = team
    shared = OTHER + alice.name
    ok(alice.cmd(f"s1 SETACL {alice.name} {BOB} lr"))
    no(bob.cmd(f'c1 CREATE "{shared}/Sub"'), "[NOPERM]")
    ok(alice.cmd(f"s2 SETACL {alice.name} {BOB} lrk"))
    ok(bob.cmd(f'c2 CREATE "{shared}/Sub"'))
    assert f'* LIST (\\HasNoChildren) "/" {alice.name}/Sub'.encode() in ok(alice.cmd(f'a1 LIST "" "{alice.name}/*"'))
    # The new mailbox starts with its parent's grants.
    assert ok(alice.cmd(f'a2 GETACL "{alice.name}/Sub"'))[0].endswith(f"{BOB} lrkc".encode())
    no(bob.cmd(f'c3 CREATE "{OTHER}TopLevel"'), "[NOPERM]")
    ok(alice.cmd(f'a5 CREATE "{alice.name}/Private"'))      # not shared: nothing goes in it
    no(bob.cmd(f'c6 CREATE "{shared}/Private/Inside"'), "[NOPERM]")
    ok(alice.cmd(f'a6 DELETE "{alice.name}/Private"'))
    no(bob.cmd(f'c4 DELETE "{shared}/Sub"'), "[NOPERM]")
    ok(alice.cmd(f'a3 SETACL "{alice.name}/Sub" {BOB} +x'))
    ok(bob.cmd(f'c5 DELETE "{shared}/Sub"'))
    assert ok(alice.cmd(f'a4 LIST "" "{alice.name}/*"')) == [b"a4 OK LIST completed"]


def test_grants_go_with_deleted_mailbox(server, team):
    alice, bob, _carol = team
    shared = OTHER + alice.name
    ok(alice.cmd(f"s1 SETACL {alice.name} {BOB} lr"))
    ok(alice.cmd(f"d1 DELETE {alice.name}"))
    ok(alice.cmd(f"c1 CREATE {alice.name}"))
    assert ok(alice.cmd(f"g1 GETACL {alice.name}"))[0] == f"* ACL {alice.name} {ALICE} lrswipkxteacd".encode()
    no(bob.cmd(f'e1 SELECT "{shared}"'), "[NONEXISTENT]")


def test_lmtp_delivery_to_a_shared_inbox_reaches_the_grantee(server):
    alice, bob = login(server, ALICE), login(server, BOB)
    ok(alice.cmd(f"s1 SETACL INBOX {BOB} lr"))
    try:
        lines = ok(bob.cmd(f'e1 EXAMINE "{OTHER}INBOX"'))
        exists = int(next(x for x in lines if x.endswith(b" EXISTS")).split()[1])
        deliver(server, b"Subject: to alice\r\n\r\nhello\r\n", to=ALICE)
        deadline = time.monotonic() + 5
        seen = []
        while time.monotonic() < deadline and f"* {exists + 1} EXISTS".encode() not in seen:
            seen += bob.cmd("n1 NOOP")
        assert f"* {exists + 1} EXISTS".encode() in seen
    finally:
        ok(alice.cmd(f"s2 DELETEACL INBOX {BOB}"))


def test_imapclient_grant_and_revoke(server):
    from imapclient import IMAPClient

    with IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False) as alice, \
            IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False) as bob:
        alice.login(ALICE, PW)
        bob.login(BOB, PW)
        alice.create_folder("Shared Notes")
        alice.append("Shared Notes", MSG)
        try:
            alice.setacl("Shared Notes", BOB, "lrs")
            assert (ALICE.encode(), b"lrswipkxteacd") in alice.getacl("Shared Notes")
            assert (BOB.encode(), b"lrs") in alice.getacl("Shared Notes")
            other = bob.namespace().other[0][0]
            name = f"{other}{ALICE}/Shared Notes"
            assert name in [f[2] for f in bob.list_folders(other)]
            assert bob.select_folder(name, readonly=True)[b"EXISTS"] == 1
            assert b"budget spreadsheet" in bob.fetch("1", ["BODY.PEEK[]"])[1][b"BODY[]"]
            bob.unselect_folder()
            alice.setacl("Shared Notes", BOB, "")      # IMAPClient's way to revoke: DELETEACL
            assert (BOB.encode(), b"lrs") not in alice.getacl("Shared Notes")
            assert bob.list_folders(other) == []
            with pytest.raises(IMAPClient.Error):
                bob.select_folder(name)
        finally:
            alice.delete_folder("Shared Notes")


def test_rights_changed_while_selected(server, team):
    alice, bob, _carol = team
    shared = OTHER + alice.name
    ok(alice.cmd(f"s1 SETACL {alice.name} {BOB} lrs"))
    lines = ok(bob.cmd(f'e1 SELECT "{shared}"'))
    assert b"* OK [PERMANENTFLAGS (\\Seen)] flags the client can change" in lines
    ok(alice.cmd(f"s2 SETACL {alice.name} {BOB} +w"))
    lines = ok(bob.cmd("n1 NOOP"))
    assert b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Seen \\Draft \\*)] flags the client can change" in lines
    ok(bob.cmd("f1 STORE 1 +FLAGS (\\Flagged)"))
    bob.send("i1 IDLE\r\n")
    assert bob.line() == b"+ idling"
    ok(alice.cmd(f"d1 DELETEACL {alice.name} {BOB}"))
    assert bob.line().startswith(b"* BYE [NOPERM]")


def test_grantee_subscribes_to_a_shared_mailbox(team):
    alice, bob, _carol = team
    shown = OTHER + alice.name
    ok(alice.cmd(f"s0 SETACL {alice.name} {BOB} lr"))
    ok(bob.cmd(f's1 SUBSCRIBE "{shown}"'))
    lsub = ok(bob.cmd(f's2 LSUB "" "{shown}"'))
    assert lsub[:-1] == [f'* LSUB () "/" "{shown}"'.encode()], lsub
    listed = ok(bob.cmd(f's3 LIST (SUBSCRIBED) "" "{shown}"'))
    assert b"\\Subscribed" in listed[0] and b"\\NonExistent" not in listed[0], listed
    ok(alice.cmd(f"s4 DELETEACL {alice.name} {BOB}"))
    # Revoked: the subscription (a name) stays, the mailbox is gone for bob.
    listed = ok(bob.cmd(f's5 LIST (SUBSCRIBED) "" "{shown}"'))
    assert b"\\NonExistent" in listed[0], listed
    lsub = ok(bob.cmd(f's6 LSUB "" "{shown}"'))
    assert b"\\Noselect" in lsub[0], lsub
    ok(bob.cmd(f's7 UNSUBSCRIBE "{shown}"'))
