"""METADATA and METADATA-SERVER (RFC 5464) against a real ``roost serve``:
the RFC's examples as transcripts, MAXSIZE/DEPTH, the size and count limits,
all-or-nothing SETMETADATA, entry names, RENAME/DELETE, binary values, and
entries surviving kill -9."""

import pytest

from roost.storage.metadata import MAX_PER_OWNER, MAX_VALUE
from tests.imap_helpers import PASSWORD, USER, Wire, _close_connections, close_all, start_server  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("metadata")
    srv = start_server(data)
    srv.data_dir = data
    yield srv
    close_all()
    srv.stop()


def ok(lines):
    assert lines[-1].split(b" ")[1] == b"OK", lines
    return lines[:-1]


def login(server):
    w = Wire(server.ports["imap"])
    w.login()
    return w


_n = [0]


def fresh(w):
    _n[0] += 1
    name = f"M{_n[0]}"
    ok(w.cmd(f"c0 CREATE {name}"))
    return name


def test_capabilities(server):
    caps = ok(login(server).cmd("c1 CAPABILITY"))[0].split()
    assert b"METADATA" in caps and b"METADATA-SERVER" in caps


def test_rfc_examples(server):
    w = login(server)
    box = fresh(w)
    # RFC 5464 4.3: a multi-line value in a literal, then two entries at once.
    w.send(f"a SETMETADATA {box} (/private/comment {{33}}\r\n".encode())
    assert w.line().startswith(b"+ ")
    assert ok(w.cmd("My new comment across\r\ntwo lines.)", tag="a")) == []
    assert ok(w.cmd(f"b GETMETADATA {box} /private/comment")) == \
        [f"* METADATA {box} (/private/comment {{33}}".encode() + b"\r\nMy new comment across\r\ntwo lines.)"]
    ok(w.cmd(f'c SETMETADATA {box} (/private/comment "My new comment" /shared/comment "This one is for you!")'))
    assert ok(w.cmd(f"d GETMETADATA {box} (/shared/comment /private/comment)")) == \
        [f'* METADATA {box} (/private/comment "My new comment" /shared/comment "This one is for you!")'.encode()]
    # Entry names are case-insensitive; NIL removes; a missing entry reads as NIL.
    assert ok(w.cmd(f"e GETMETADATA {box} /Private/Comment")) == \
        [f'* METADATA {box} (/private/comment "My new comment")'.encode()]
    ok(w.cmd(f"f SETMETADATA {box} (/private/comment NIL)"))
    assert ok(w.cmd(f"g GETMETADATA {box} /private/comment /shared/comment")) == \
        [f'* METADATA {box} (/private/comment NIL /shared/comment "This one is for you!")'.encode()]
    # Removing what is not there is fine.
    ok(w.cmd(f"h SETMETADATA {box} (/private/nothing NIL)"))


def test_maxsize_and_depth(server):
    w = login(server)
    box = fresh(w)
    long_value = "x" * 2199
    w.send(f"a SETMETADATA {box} (/shared/comment {{{len(long_value)}+}}\r\n{long_value}"
           f' /private/comment "My own comment")\r\n'.encode())
    ok(w.until("a"))
    # RFC 5464 4.2.1, options after the mailbox as in its example, and before as in its ABNF.
    for line in (f"b GETMETADATA {box} (MAXSIZE 1024) (/shared/comment /private/comment)",
                 f"b GETMETADATA (MAXSIZE 1024) {box} (/shared/comment /private/comment)"):
        assert w.cmd(line) == [f'* METADATA {box} (/private/comment "My own comment")'.encode(),
                               b"b OK [METADATA LONGENTRIES 2199] GETMETADATA completed"]
    ok(w.cmd(f'c SETMETADATA {box} (/private/filters/values/small "SMALLER 5000" '
             f'/private/filters/values/boss "FROM \\"boss@example.com\\"" '
             f'/private/filters/values/boss/deep "x" /private/filtersx "no")'))
    assert ok(w.cmd(f"d GETMETADATA {box} (DEPTH 1) (/private/filters/values)")) == \
        [f'* METADATA {box} (/private/filters/values NIL /private/filters/values/boss '
         f'"FROM \\"boss@example.com\\"" /private/filters/values/small "SMALLER 5000")'.encode()]
    lines = ok(w.cmd(f"e GETMETADATA (DEPTH infinity) {box} /private/filters"))
    assert lines[0].count(b"/private/filters/") == 3 and b"filtersx" not in lines[0]
    # Everything private, as clients list it.
    lines = ok(w.cmd(f"e2 GETMETADATA (DEPTH infinity) {box} /private"))
    assert lines[0].count(b"/private/") == 5 and lines[0].startswith(
        f"* METADATA {box} (/private/comment ".encode())
    assert ok(w.cmd(f"e3 GETMETADATA {box} /shared")) == []
    assert ok(w.cmd(f"f GETMETADATA (DEPTH 0 MAXSIZE 3) {box} /private/filters/values/boss/deep")) == \
        [f'* METADATA {box} (/private/filters/values/boss/deep "x")'.encode()]


def test_limits_and_all_or_nothing(server):
    w = login(server)
    box = fresh(w)
    ok(w.cmd(f'a SETMETADATA {box} (/private/kept "old")'))
    big = b"y" * (MAX_VALUE + 1)
    w.send(f'b SETMETADATA {box} (/private/kept "new" /private/big ~{{{len(big)}+}}\r\n'.encode()
           + big + b")\r\n")
    assert w.until("b") == [f"b NO [METADATA MAXSIZE {MAX_VALUE}] annotation value too large".encode()]
    assert ok(w.cmd(f"c GETMETADATA {box} (/private/kept /private/big)")) == \
        [f'* METADATA {box} (/private/big NIL /private/kept "old")'.encode()]
    # A value of exactly the limit is taken (RFC 5464: at least 1024 must be).
    w.send(f"d SETMETADATA {box} (/private/big {{{MAX_VALUE}+}}\r\n".encode() + b"z" * MAX_VALUE + b")\r\n")
    ok(w.until("d"))
    ok(w.cmd(f"d2 SETMETADATA {box} (/private/big NIL)"))
    pairs = " ".join(f'/private/e{i} "v"' for i in range(MAX_PER_OWNER - 1))
    ok(w.cmd(f"e SETMETADATA {box} ({pairs})"))           # with /private/kept: the limit
    assert w.cmd(f'f SETMETADATA {box} (/private/kept "changed" /private/one-more "v")') == \
        [b"f NO [METADATA TOOMANY] no room for more annotations"]
    assert ok(w.cmd(f"g GETMETADATA {box} /private/kept")) == [f'* METADATA {box} (/private/kept "old")'.encode()]
    ok(w.cmd(f'h SETMETADATA {box} (/private/kept "changed")'))     # replacing needs no room
    ok(w.cmd(f'i SETMETADATA {box} (/private/e0 NIL /private/one-more "v")'))   # one out, one in
    # Another mailbox has its own room.
    other = fresh(w)
    ok(w.cmd(f'j SETMETADATA {other} (/private/e0 "v")'))


def test_bad_names_and_arguments(server):
    w = login(server)
    box = fresh(w)
    for entry in ("/private/a*", "/private/a%", "comment", "/other/comment", "/private//a", "/private/a/",
                  "/shared/vendor/x", "/private/vendor/x", '"/private/caf\u00e9"', '"/private/a\tb"'):
        assert w.cmd(f'b SETMETADATA {box} ({entry} "v")')[-1].startswith(b"b BAD"), entry
        assert w.cmd(f"c GETMETADATA {box} {entry}")[-1].startswith(b"c BAD"), entry
        ok(w.cmd("n NOOP"))      # the session hangs up after 20 BADs in a row
    assert w.cmd(f'b SETMETADATA {box} (/private "v")')[-1].startswith(b"b BAD")    # a scope, not an entry
    for line in (f"d GETMETADATA {box}", f"d GETMETADATA {box} ()", f"d GETMETADATA (DEPTH 2) {box} /private/a",
                 f"d GETMETADATA (MAXSIZE x) {box} /private/a", f"d GETMETADATA (FOO 1) {box} /private/a",
                 f"d SETMETADATA {box} /private/a", f"d SETMETADATA {box} (/private/a)",
                 f"d SETMETADATA {box} (/private/a (x))", f"d SETMETADATA {box} (/private/a atom)",
                 f"d SETMETADATA {box} ()"):
        assert w.cmd(line)[-1].startswith(b"d BAD"), line
    ok(w.cmd(f'e SETMETADATA {box} (/shared/vendor/roost/x "v" /private/vendor/roost/y/z "w")'))
    assert w.cmd('f GETMETADATA nowhere /private/comment') == [b"f NO [NONEXISTENT] no such mailbox"]
    assert w.cmd('f SETMETADATA nowhere (/private/comment "x")') == [b"f NO [NONEXISTENT] no such mailbox"]


def test_server_entries(server):
    w = login(server)
    ok(w.cmd('a SETMETADATA "" (/private/vendor/roost/theme "dark")'))
    assert ok(w.cmd('b GETMETADATA "" /private/vendor/roost/theme')) == \
        [b'* METADATA "" (/private/vendor/roost/theme "dark")']
    assert w.cmd('c SETMETADATA "" (/shared/comment "for all")')[-1].startswith(b"c NO [NOPERM]")
    assert ok(w.cmd('d GETMETADATA "" /shared/comment /shared/admin')) == \
        [b'* METADATA "" (/shared/admin NIL /shared/comment NIL)']
    # Server entries are not INBOX's.
    assert ok(w.cmd("e GETMETADATA INBOX /private/vendor/roost/theme")) == \
        [b"* METADATA INBOX (/private/vendor/roost/theme NIL)"]


def test_rename_delete_and_binary(server):
    w = login(server)
    box = fresh(w)
    w.send(f"a SETMETADATA {box} (/private/bin ~{{5+}}\r\n".encode() + b"a\0b\r\n" + b")\r\n")
    ok(w.until("a"))
    assert ok(w.cmd(f"b GETMETADATA {box} /private/bin")) == \
        [f"* METADATA {box} (/private/bin ~{{5}}".encode() + b"\r\na\0b\r\n)"]
    ok(w.cmd(f"c RENAME {box} {box}-new"))
    assert ok(w.cmd(f"d GETMETADATA {box}-new /private/bin"))[0].endswith(b"\r\na\0b\r\n)")
    ok(w.cmd(f"e DELETE {box}-new"))
    ok(w.cmd(f"f CREATE {box}-new"))
    assert ok(w.cmd(f"g GETMETADATA {box}-new /private/bin")) == \
        [f"* METADATA {box}-new (/private/bin NIL)".encode()]


def test_entries_survive_kill_9(tmp_path):
    from tests.conftest import RoostServer
    srv = start_server(tmp_path / "data")
    try:
        w = Wire(srv.ports["imap"])
        w.login(USER, PASSWORD)
        ok(w.cmd('a SETMETADATA INBOX (/shared/comment "kept")'))
        w.close()
        srv.kill()
        srv = RoostServer(tmp_path / "data", listeners=("imap",)).start()
        w = Wire(srv.ports["imap"])
        w.login(USER, PASSWORD)
        assert ok(w.cmd("b GETMETADATA INBOX /shared/comment")) == [b'* METADATA INBOX (/shared/comment "kept")']
        w.close()
    finally:
        srv.stop()
