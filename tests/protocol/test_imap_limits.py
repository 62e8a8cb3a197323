"""IMAP requests that must not cost unbounded memory or time, against a real
``roost serve``: LIST patterns, SEARCH sets and key counts, literals and slow
senders before login, connection caps, and a client that does not read."""

import select
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import RoostServer, add_user
from tests.imap_helpers import PASSWORD, USER, Wire, _close_connections, close_all, start_server  # noqa: F401 - _close_connections is a fixture


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("imap-limits"), listeners=("imap",))
    yield srv
    close_all()
    srv.stop()


def ok(lines):
    assert lines[-1].split(b" ")[1] == b"OK", lines
    return lines


def _limited_server(tmp_path, limits):
    add_user(tmp_path / "data", USER, PASSWORD)
    conf = tmp_path / "roost.toml"
    conf.write_text("[limits]\n" + "".join(f"{k} = {v}\n" for k, v in limits.items()))
    return RoostServer(tmp_path / "data", listeners=("imap",), config=conf).start()


def _fill(w, mailbox, count, size=60):
    ok(w.cmd(f"c CREATE {mailbox}"))
    for i in range(count):
        data = b"From: a@example.org\r\nSubject: m%d\r\n\r\n" % i
        data += b"x" * max(size - len(data), 0)
        w.send(b"a%d APPEND %s {%d+}\r\n" % (i, mailbox.encode(), len(data)) + data + b"\r\n")
    for i in range(count):
        ok(w.until(f"a{i}"))


# --- LIST ---------------------------------------------------------------------------

def test_list_pattern_does_not_backtrack(tmp_path):
    """A pattern of many ``*a`` against a long name: a regex backtracks for
    minutes with the event loop (every connection) frozen; the matcher is linear."""
    srv = start_server(tmp_path, listeners=("imap",))
    try:
        w = Wire(srv.ports["imap"])
        w.login()
        ok(w.cmd("c1 CREATE " + "a" * 30))
        other = Wire(srv.ports["imap"], timeout=5)
        other.login()
        w.send('l1 LIST "" "' + "*a" * 20 + '*b"\r\n')
        assert other.cmd("n1 NOOP")[-1].startswith(b"n1 OK")    # the loop is not frozen
        assert w.until("l1") == [b"l1 OK LIST completed"]
        assert ok(w.cmd('l2 LIST "" "*a*a%"'))[0] == b'* LIST (\\HasNoChildren) "/" ' + b"a" * 30
        assert w.cmd('l3 LIST "" "' + "*" * 2000 + '"')[-1].startswith(b"l3 NO [LIMIT]")
    finally:
        close_all()
        srv.stop()


# --- SEARCH -------------------------------------------------------------------------

def test_search_with_thousands_of_disjoint_ranges(server):
    w = Wire(server.ports["imap"])
    w.login()
    _fill(w, "Ranges", 40)
    ok(w.cmd("s SELECT Ranges"))
    odd = ",".join(str(n) for n in range(1, 4000, 2))      # 2,000 ranges
    assert ok(w.cmd(f"s1 UID SEARCH UID {odd}"))[0] == b"* SEARCH " + " ".join(
        str(n) for n in range(1, 41, 2)).encode()
    assert ok(w.cmd(f"s2 UID SEARCH NOT UID {odd}"))[0] == b"* SEARCH " + " ".join(
        str(n) for n in range(2, 41, 2)).encode()
    assert ok(w.cmd(f"s3 SEARCH {odd}"))[0] == b"* SEARCH " + " ".join(
        str(n) for n in range(1, 41, 2)).encode()
    assert ok(w.cmd("s4 SEARCH 1:3,2:5,7,9,11,13,15,17,19,21"))[0] == b"* SEARCH 1 2 3 4 5 7 9 11 13 15 17 19 21"


def test_search_with_too_many_keys_is_refused_with_limit(server):
    w = Wire(server.ports["imap"])
    w.login()
    ok(w.cmd("s SELECT INBOX"))
    subjects = " ".join(f"SUBJECT s{i}" for i in range(3000))
    assert w.cmd(f"s1 SEARCH {subjects}")[-1].startswith(b"s1 NO [LIMIT] ")
    ors = " ".join(f"(OR SEEN FLAGGED)" for i in range(1000))
    assert w.cmd(f"s2 SEARCH {ors}")[-1].startswith(b"s2 NO [LIMIT] ")
    # A sequence set is an atom: a literal (which may be far longer than a line) is refused.
    w.send("s3 UID SEARCH UID {3+}\r\n1:5\r\n")
    assert w.until("s3")[-1].startswith(b"s3 BAD")
    ok(w.cmd("s4 SEARCH " + " ".join(f"OR SUBJECT a{i} FROM b{i}" for i in range(16))))


# --- before login -------------------------------------------------------------------

def test_big_literal_before_login_is_refused_without_continuation(server):
    w = Wire(server.ports["imap"])
    w.send("a1 LOGIN {40000000}\r\n")
    assert w.line().startswith(b"a1 NO [TOOBIG] ")       # no "+": the client sends nothing
    assert w.cmd("a2 NOOP") == [b"a2 OK NOOP completed"]
    w.send(f"a3 LOGIN {{{len(USER)}}}\r\n")               # small literals are fine
    assert w.line().startswith(b"+ ")
    w.send(f"{USER} {PASSWORD}\r\n")
    assert w.until("a3")[-1].startswith(b"a3 OK")

    w = Wire(server.ports["imap"])
    w.send("b1 LOGIN {40000000+}\r\n" + "x" * 20000)     # the octets would follow anyway
    assert w.line().startswith(b"b1 BAD [TOOBIG] ")
    assert w.line().startswith(b"* BYE [TOOBIG] ")
    with pytest.raises((ConnectionError, OSError)):      # closed
        w.line()


def test_login_pipelined_with_a_big_append_is_framed_after_login(server):
    """Before login one command is framed at a time, so an APPEND sent with a
    non-synchronising literal right behind LOGIN meets the logged-in limit."""
    w = Wire(server.ports["imap"])
    data = b"From: a@example.org\r\nSubject: pipelined\r\n\r\n" + b"y" * 100_000 + b"\r\n"
    w.send(f"a1 LOGIN {USER} {PASSWORD}\r\n".encode() + b"a2 APPEND INBOX {%d+}\r\n" % len(data)
           + data + b"\r\na3 NOOP\r\n")
    assert w.until("a1")[-1].startswith(b"a1 OK")
    assert w.until("a2")[-1].startswith(b"a2 OK [APPENDUID ")
    assert w.until("a3") == [b"a3 OK NOOP completed"]


def test_unauthenticated_connections_are_capped(tmp_path):
    srv = _limited_server(tmp_path, {"unauthenticated_connections_per_ip": 2,
                                     "unauthenticated_connections": 3})
    try:
        first, second = Wire(srv.ports["imap"]), Wire(srv.ports["imap"])
        third = Wire(srv.ports["imap"])
        assert third.greeting.startswith(b"* BYE [UNAVAILABLE] too many connections from 127.0.0.1")
        first.login()                     # a logged-in connection no longer counts
        fourth = Wire(srv.ports["imap"])
        assert fourth.greeting.startswith(b"* OK ")
        ok(fourth.cmd("n NOOP"))
        second.close()
        time.sleep(0.3)
        assert Wire(srv.ports["imap"]).greeting.startswith(b"* OK ")
    finally:
        close_all()
        srv.stop()


def test_slow_sender_is_dropped_before_login(tmp_path):
    srv = _limited_server(tmp_path, {"unauthenticated_command_timeout": 1})
    try:
        w = Wire(srv.ports["imap"])
        start = time.monotonic()
        for c in f"a1 LOGIN {USER} {PASSWORD}":          # a byte every 0.2 s
            if select.select([w.sock], [], [], 0.2)[0]:
                break
            w.send(c)
        assert w.line() == b"* BYE command not complete after 1 seconds"
        assert time.monotonic() - start < 4
        # Whole commands, however slowly they follow each other, are fine.
        w = Wire(srv.ports["imap"])
        for i in range(3):
            time.sleep(0.6)
            ok(w.cmd(f"n{i} NOOP"))
    finally:
        close_all()
        srv.stop()


# --- a client that does not read -----------------------------------------------------

def test_client_that_does_not_read_is_not_served_further(server):
    """Pipelined big FETCHes and then a STORE, with nothing read: the server
    stops at the FETCH the client has not taken (so the STORE has not run yet)
    and goes on once the client reads."""
    setup = Wire(server.ports["imap"])
    setup.login()
    ok(setup.cmd("c CREATE Slow"))
    big = b"From: a@example.org\r\nSubject: big\r\n\r\n" + (b"z" * 78 + b"\r\n") * 40_000
    setup.send(b"a APPEND Slow {%d+}\r\n" % len(big) + big + b"\r\n")
    ok(setup.until("a"))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.ports["imap"]))
    sock.sendall(f"l LOGIN {USER} {PASSWORD}\r\ns SELECT Slow\r\n".encode() +
                 b"".join(b"f%d FETCH 1 BODY.PEEK[]\r\n" % i for i in range(20)) +
                 b"t STORE 1 +FLAGS (\\Flagged)\r\n")
    time.sleep(2)
    ok(setup.cmd("e EXAMINE Slow"))
    assert b"\\Flagged" not in b"".join(ok(setup.cmd("g FETCH 1 FLAGS")))
    received, f = b"", sock.makefile("rb")
    while not received.startswith(b"t OK"):
        line = f.readline()
        assert line, "connection closed"
        if line.startswith(b"* 1 FETCH (BODY[] {"):
            body = f.read(int(line[line.index(b"{") + 1:-3]))
            assert body == big
        received = line
    assert b"\\Flagged" in b"".join(ok(setup.cmd("g2 FETCH 1 FLAGS")))
    sock.close()


def test_big_message_streams_the_same_bytes(server):
    w = Wire(server.ports["imap"])
    w.login()
    ok(w.cmd("c CREATE Stream"))
    big = b"From: a@example.org\r\nSubject: big\r\n\r\n" + (b"q" * 70 + b"\r\n") * 50_000
    w.send(b"a APPEND Stream {%d+}\r\n" % len(big) + big + b"\r\n")
    ok(w.until("a"))
    ok(w.cmd("s SELECT Stream"))
    peek = ok(w.cmd("f1 UID FETCH 1 (UID RFC822.SIZE BODY.PEEK[])"))[0]
    assert peek == b"* 1 FETCH (UID 1 RFC822.SIZE %d BODY[] {%d}\r\n" % (len(big), len(big)) + \
        big + b")"
    whole = ok(w.cmd("f3 FETCH 1 (BODY[])"))                 # not streamed: sets \Seen too
    assert big in whole[0] and b"\\Seen" in whole[0]


# --- shutdown ----------------------------------------------------------------------

def test_a_long_read_does_not_hold_shutdown(tmp_path):
    """``Roost.stop`` with a read (as a long SEARCH would be) running on the
    worker pool: the read is interrupted and the stop takes well under a second
    instead of waiting for it (for ever, here)."""
    script = textwrap.dedent("""
        import asyncio, sys, time
        from roost.server.app import Roost, install_reactor
        from roost.server.config import Config
        from roost.storage.errors import TemporaryFailure
        loop = install_reactor()
        app = Roost(Config(data=sys.argv[1]), loop)
        def forever():
            with app.store.reader() as conn:
                return conn.exec_driver_sql(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                    "SELECT count(*) FROM c").scalar()
        async def main():
            job = asyncio.ensure_future(app.run(forever))
            await asyncio.sleep(0.5)
            start = time.monotonic()
            await app.stop()
            print("stopped in", round(time.monotonic() - start, 2))
            try:
                await job
            except TemporaryFailure:
                print("read interrupted")
        loop.run_until_complete(main())
    """)
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "data")],
                          capture_output=True, timeout=30)
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "read interrupted" in out
    assert float(out.split("stopped in ")[1].split()[0]) < 5
