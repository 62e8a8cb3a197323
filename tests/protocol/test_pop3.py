"""POP3 over real sockets against ``roost serve --pop3 127.0.0.1:0 --pop3s
127.0.0.1:0``: raw transcripts after RFC 1939's examples, Python's poplib,
STLS and implicit TLS with a test certificate, SASL PLAIN (RFC 5034), CAPA
(RFC 2449), pipelining, the limits, the maildrop lock (``[IN-USE]``, held
across processes through the store's leases), deletions applied at QUIT
only, and UIDL stability."""

import base64
import poplib
import re
import smtplib
import socket
import ssl
import time
import uuid

import pytest

from roost.storage.store import Store
from tests.conftest import RoostServer, add_user, roost, stored_messages
from tests.tls_helpers import write_cert

HOST = "mail.example.org"
PASSWORD = "pop-secret"
MESSAGE = (b"From: Bob <bob@example.net>\r\nTo: someone@example.org\r\nSubject: one\r\n"
           b"Message-ID: <%s@example.net>\r\n\r\nfirst line\r\n.a line that starts with a dot\r\n"
           b"..two dots\r\nthird line\r\nfourth line\r\n")


OPEN = []      # every Raw client of the running test, closed at its end


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while OPEN:
        OPEN.pop().close()


class Raw:
    """A POP3 client that sends bytes and reads replies as they come."""

    def __init__(self, port, context=None):
        OPEN.append(self)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        if context is not None:
            self.sock = context.wrap_socket(self.sock, server_hostname=HOST)
        self.buf = b""
        self.greeting = self.line()

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed; buffered " + repr(self.buf))
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode("utf-8", "replace")

    def multi(self):
        """The lines of a multi-line body up to the ``.`` line, unstuffed."""
        out = []
        while True:
            line = self.line()
            if line == ".":
                return out
            out.append(line[1:] if line.startswith(".") else line)

    def body(self):
        """A multi-line body as raw bytes (still dot-stuffed), with the final ``.``."""
        while b"\r\n.\r\n" not in b"\r\n" + self.buf:
            self._fill()
        end = (b"\r\n" + self.buf).index(b"\r\n.\r\n") + 3
        out, self.buf = self.buf[:end], self.buf[end:]
        return out

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.line()

    def login(self, user, password=PASSWORD):
        assert self.cmd(f"USER {user}").startswith("+OK")
        return self.cmd(f"PASS {password}")

    def closed(self):
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
        except (ConnectionError, ssl.SSLError):
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.close()

    def close(self):
        self.sock.close()


def make_server(tmp_path, extra=""):
    data = tmp_path / "data"
    add_user(data, "seed@example.org", PASSWORD)
    cert, key = write_cert(tmp_path / "certs", names=(HOST,))
    conf = tmp_path / "roost.toml"
    conf.write_text(f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'
                    "[limits]\nunauthenticated_command_timeout = 3\n" + extra)
    srv = RoostServer(data, listeners=("pop3", "pop3s", "lmtp"), config=conf).start()
    srv.cert = cert
    return srv


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = make_server(tmp_path_factory.mktemp("pop3"))
    yield srv
    srv.stop()


@pytest.fixture
def user(server):
    """A new account of its own for each test, with an empty INBOX."""
    address = f"u{uuid.uuid4().hex[:10]}@example.org"
    add_user(server.data, address, PASSWORD)
    return address


def deliver(server, address, data=None):
    data = data or MESSAGE % uuid.uuid4().hex.encode()
    lmtp = smtplib.LMTP("127.0.0.1", server.ports["lmtp"])
    try:
        lmtp.sendmail("bob@example.net", [address], data)
    finally:
        lmtp.quit()
    return data


def tls_context(server, check_hostname=True):
    """Verifies the test certificate (poplib connects by address, which the
    certificate does not name: the chain is still checked)."""
    ctx = ssl.create_default_context(cafile=str(server.cert))
    ctx.check_hostname = check_hostname
    return ctx


def pop(server, address):
    c = Raw(server.ports["pop3"])
    assert c.login(address).startswith("+OK"), address
    return c


def uidvalidity(server, address):
    store = Store.open(server.data)
    try:
        return store.mailbox(store.account(address).id, "INBOX").uidvalidity
    finally:
        store.close()


# --- greeting, CAPA, logging in --------------------------------------------------------------

def test_greeting_and_capa_before_and_after_login(server, user):
    c = Raw(server.ports["pop3"])
    assert c.greeting.startswith("+OK ")
    assert c.cmd("CAPA").startswith("+OK")
    caps = c.multi()
    for cap in ("TOP", "UIDL", "USER", "SASL PLAIN", "STLS", "RESP-CODES", "AUTH-RESP-CODE",
                "PIPELINING", "EXPIRE NEVER"):
        assert cap in caps, caps
    assert any(cap.startswith("IMPLEMENTATION Roost") for cap in caps)
    assert not any(cap.startswith(("APOP", "LOGIN-DELAY")) for cap in caps)
    assert c.login(user).startswith("+OK maildrop has 0 messages")
    assert c.cmd("CAPA").startswith("+OK")
    after = c.multi()
    assert "TOP" in after and "UIDL" in after
    assert not {"USER", "STLS", "SASL PLAIN"} & set(after)
    assert c.cmd("QUIT").startswith("+OK")
    assert c.closed()


def test_wrong_password_is_auth_code_and_three_failures_close(server, user):
    c = Raw(server.ports["pop3"])
    assert c.login(user, "wrong") == "-ERR [AUTH] authentication failed"
    assert c.cmd("PASS again") == "-ERR USER first"
    assert c.login("nobody@example.org", "x") == "-ERR [AUTH] authentication failed"
    assert c.login(user, "wrong").startswith("-ERR [AUTH] authentication failed; too many")
    assert c.closed()


def test_transaction_commands_need_login_and_authorization_ones_refused_after(server, user):
    c = Raw(server.ports["pop3"])
    for command in ("STAT", "LIST", "RETR 1", "DELE 1", "UIDL", "TOP 1 1", "RSET", "NOOP"):
        assert c.cmd(command) == "-ERR log in first", command
    assert c.cmd("APOP x y").startswith("-ERR unknown command")
    assert c.login(user).startswith("+OK")
    assert c.cmd("USER x") == "-ERR not allowed after login"
    assert c.cmd("STLS") == "-ERR not allowed after login"
    assert c.cmd("AUTH PLAIN") == "-ERR not allowed after login"
    assert c.cmd("QUIT").startswith("+OK")


def test_password_with_spaces_and_app_token(server, user):
    address = f"s{uuid.uuid4().hex[:8]}@example.org"
    add_user(server.data, address, "with some spaces ")
    c = Raw(server.ports["pop3"])
    assert c.login(address, "with some spaces ").startswith("+OK")
    c.cmd("QUIT")
    token = roost(server.data, "token", "add", user, "phone").stdout.decode().split()[-1]
    c = Raw(server.ports["pop3"])
    assert c.login(user, token).startswith("+OK"), token
    c.cmd("QUIT")


def test_sasl_plain_initial_response_and_challenge(server, user):
    good = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
    c = Raw(server.ports["pop3"])
    assert c.cmd("AUTH").startswith("+OK") and c.multi() == ["PLAIN"]
    assert c.cmd("AUTH CRAM-MD5 x").startswith("-ERR unsupported mechanism")
    assert c.cmd("AUTH PLAIN") == "+ "
    assert c.cmd("*") == "-ERR authentication cancelled"
    assert c.cmd("AUTH PLAIN !!!notbase64") == "-ERR cannot decode the base64 response"
    bad = base64.b64encode(f"\0{user}\0nope".encode()).decode()
    assert c.cmd(f"AUTH PLAIN {bad}") == "-ERR [AUTH] authentication failed"
    other = base64.b64encode(f"someone@example.org\0{user}\0{PASSWORD}".encode()).decode()
    assert c.cmd(f"AUTH PLAIN {other}") == "-ERR [AUTH] authentication failed"
    c.close()
    c = Raw(server.ports["pop3"])
    assert c.cmd(f"AUTH PLAIN {good}").startswith("+OK maildrop has")
    c.cmd("QUIT")
    c = Raw(server.ports["pop3"])
    assert c.cmd("AUTH PLAIN") == "+ "
    assert c.cmd(good).startswith("+OK maildrop has")
    c.cmd("QUIT")


# --- RFC 1939's examples ---------------------------------------------------------------------

def test_rfc1939_session(server, user):
    """The example session of RFC 1939 section 10 (with USER/PASS instead of APOP)."""
    first, second = deliver(server, user), deliver(server, user)
    stored = stored_messages(server.data, user)
    sizes = [len(m) for m in stored]        # delivered over LMTP: CRLF already
    c = pop(server, user)
    assert c.cmd("STAT") == f"+OK 2 {sum(sizes)}"
    assert c.cmd("LIST") == "+OK 2 messages"
    assert c.multi() == [f"1 {sizes[0]}", f"2 {sizes[1]}"]
    assert c.cmd("LIST 2") == f"+OK 2 {sizes[1]}"
    assert c.cmd("LIST 3") == "-ERR no such message"
    assert c.cmd("RETR 1") == f"+OK {sizes[0]} octets"
    raw = c.body()
    assert raw.endswith(b"\r\n.\r\n")
    assert b"\r\n..a line that starts with a dot\r\n...two dots\r\n" in raw    # byte-stuffed
    assert raw[:-3].replace(b"\r\n..", b"\r\n.") == stored[0]
    assert stored[0].endswith(first) and stored[1].endswith(second)
    assert c.cmd("DELE 1") == "+OK message 1 deleted"
    assert c.cmd("DELE 1") == "-ERR message already deleted"
    assert c.cmd("RETR 1") == "-ERR message already deleted"
    assert c.cmd("LIST 1") == "-ERR message already deleted"
    assert c.cmd("STAT") == f"+OK 1 {sizes[1]}"
    assert c.cmd("LIST") == "+OK 1 messages" and c.multi() == [f"2 {sizes[1]}"]
    assert c.cmd("NOOP") == "+OK"
    assert c.cmd("RETR 2") == f"+OK {sizes[1]} octets"
    c.body()
    assert c.cmd("DELE 2").startswith("+OK")
    assert c.cmd("QUIT") == "+OK Roost POP3 server signing off (0 messages left)"
    assert c.closed()
    assert stored_messages(server.data, user) == []


def test_rset_unmarks_and_top_sends_headers_and_lines(server, user):
    deliver(server, user)
    (stored,) = stored_messages(server.data, user)
    head, _, body = stored.partition(b"\r\n\r\n")
    c = pop(server, user)
    assert c.cmd("DELE 1").startswith("+OK")
    assert c.cmd("RSET") == f"+OK maildrop has 1 messages ({len(stored)} octets)"
    assert c.cmd("STAT") == f"+OK 1 {len(stored)}"
    assert c.cmd("TOP 1 0").startswith("+OK")
    assert c.multi() == head.decode().split("\r\n") + [""]
    assert c.cmd("TOP 1 2").startswith("+OK")
    assert c.multi() == head.decode().split("\r\n") + ["", "first line",
                                                       ".a line that starts with a dot"]
    assert c.cmd("TOP 1 100").startswith("+OK")
    assert c.multi()[-1] == "fourth line"
    for bad in ("TOP 1", "TOP 1 x", "TOP 2 1", "TOP 0 1", "TOP 1 -1", "RETR", "RETR 1 2",
                "DELE x", "LIST 99999999999", "STAT 1"):
        assert c.cmd(bad).startswith("-ERR"), bad
    assert c.cmd("QUIT").startswith("+OK Roost POP3 server signing off (1 messages")
    assert len(stored_messages(server.data, user)) == 1


def test_bare_lf_message_is_sent_with_crlf_and_its_size_counts_them(server, user):
    data = b"From: a@example.net\nSubject: lf\n\nline one\n.dotted\nno final newline"
    roost(server.data, "deliver", user, input=data)
    (stored,) = stored_messages(server.data, user)
    assert b"\r\n" not in stored        # stored as received
    wire = stored.replace(b"\n", b"\r\n") + b"\r\n"
    c = pop(server, user)
    assert c.cmd("LIST 1") == f"+OK 1 {len(wire)}"
    assert c.cmd("RETR 1") == f"+OK {len(wire)} octets"
    raw = c.body()
    assert raw[:-3].replace(b"\r\n..", b"\r\n.") == wire
    c.cmd("QUIT")


# --- UIDL ------------------------------------------------------------------------------------

def test_uidl_is_stable_across_sessions_and_deletions(server, user):
    for _ in range(3):
        deliver(server, user)
    validity = uidvalidity(server, user)
    c = pop(server, user)
    assert c.cmd("UIDL") == "+OK 3 messages"
    first = c.multi()
    assert first == [f"{n} {validity}.{n}" for n in (1, 2, 3)]
    assert c.cmd("UIDL 2") == f"+OK 2 {validity}.2"
    assert c.cmd("DELE 1").startswith("+OK")
    assert c.cmd("QUIT").startswith("+OK")
    deliver(server, user)
    c = pop(server, user)
    assert c.cmd("UIDL") == "+OK 3 messages"
    assert c.multi() == [f"1 {validity}.2", f"2 {validity}.3", f"3 {validity}.4"]
    c.cmd("QUIT")
    c = pop(server, user)       # the same again, nothing changed
    assert c.cmd("UIDL") == "+OK 3 messages"
    assert c.multi() == [f"1 {validity}.2", f"2 {validity}.3", f"3 {validity}.4"]
    c.cmd("QUIT")


def test_session_sees_a_snapshot(server, user):
    deliver(server, user)
    c = pop(server, user)
    deliver(server, user)       # arrives during the session: seen at the next login
    assert c.cmd("STAT").startswith("+OK 1 ")
    assert c.cmd("QUIT").startswith("+OK")
    c = pop(server, user)
    assert c.cmd("STAT").startswith("+OK 2 ")
    c.cmd("QUIT")


# --- deletions at QUIT only, the maildrop lock ---------------------------------------------------

def test_deletions_only_at_quit(server, user):
    for _ in range(3):
        deliver(server, user)
    c = pop(server, user)
    assert c.cmd("DELE 1").startswith("+OK") and c.cmd("DELE 3").startswith("+OK")
    c.close()                   # dropped: nothing deleted
    time.sleep(0.3)
    assert len(stored_messages(server.data, user)) == 3
    c = pop(server, user)
    assert c.cmd("STAT").startswith("+OK 3 ")
    keep = c.cmd("UIDL 2").split()[2]
    assert c.cmd("DELE 1").startswith("+OK") and c.cmd("DELE 3").startswith("+OK")
    assert len(stored_messages(server.data, user)) == 3     # not before QUIT
    assert c.cmd("QUIT").startswith("+OK")
    assert c.closed()
    assert len(stored_messages(server.data, user)) == 1
    c = pop(server, user)
    assert c.cmd("UIDL 1") == f"+OK 1 {keep}"
    c.cmd("QUIT")


def test_second_session_is_in_use_until_the_first_ends(server, user):
    first = pop(server, user)
    second = Raw(server.ports["pop3"])
    assert second.login(user) == "-ERR [IN-USE] the maildrop is in use by another session"
    assert second.cmd("STAT") == "-ERR log in first"    # still in AUTHORIZATION
    assert first.cmd("QUIT").startswith("+OK")
    assert first.closed()
    assert second.login(user).startswith("+OK")
    third = Raw(server.ports["pop3s"], tls_context(server))
    assert third.login(user).startswith("-ERR [IN-USE]")
    second.close()              # a dropped connection gives the lock back too
    time.sleep(0.3)
    assert third.login(user).startswith("+OK")
    third.cmd("QUIT")


def test_lock_holds_across_processes_and_a_dead_holder_lapses(server, user):
    store = Store.open(server.data)
    try:
        name = f"pop3:{store.account(user).id}"
        assert store.take_lease(name, "another-process:1", 60)
        c = Raw(server.ports["pop3"])
        assert c.login(user).startswith("-ERR [IN-USE]")
        # The other process died: its lease is no longer renewed and expires.
        assert store.take_lease(name, "another-process:1", -1)
        assert c.login(user).startswith("+OK")
        holder = store.lease_holder(name)
        assert holder is not None and holder[0] != "another-process:1"
        assert holder[1] > time.time() + 30
        assert not store.take_lease(name, "another-process:2", 60)     # ours now
        c.cmd("QUIT")
        assert c.closed()
        time.sleep(0.3)
        assert store.lease_holder(name) is None         # released at the end
    finally:
        store.close()


# --- TLS ---------------------------------------------------------------------------------------

def test_stls_with_real_tls(server, user):
    deliver(server, user)
    c = Raw(server.ports["pop3"])
    assert c.cmd("STLS") == "+OK Begin TLS negotiation"
    c.sock = tls_context(server).wrap_socket(c.sock, server_hostname=HOST)
    assert isinstance(c.sock, ssl.SSLSocket) and c.sock.version()
    assert c.cmd("CAPA").startswith("+OK")
    caps = c.multi()
    assert "STLS" not in caps and "USER" in caps
    assert c.cmd("STLS") == "-ERR TLS is already active"
    assert c.login(user).startswith("+OK maildrop has 1 messages")
    assert c.cmd("RETR 1").startswith("+OK")
    c.body()
    c.cmd("QUIT")


def test_stls_refuses_pipelined_cleartext(server):
    c = Raw(server.ports["pop3"])
    c.send("STLS\r\nUSER injected@example.org\r\n")
    assert c.line().startswith("-ERR nothing may follow STLS")
    assert c.closed()


def test_poplib_stls_and_pop3s(server, user):
    deliver(server, user)
    p = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=20)
    p.stls(tls_context(server, check_hostname=False))
    p.user(user)
    p.pass_(PASSWORD)
    assert p.stat()[0] == 1
    p.quit()
    p = poplib.POP3_SSL("127.0.0.1", server.ports["pop3s"],
                        context=tls_context(server, check_hostname=False), timeout=20)
    assert "STLS" not in p.capa()
    p.user(user)
    p.pass_(PASSWORD)
    assert p.stat()[0] == 1
    p.quit()


def test_poplib_whole_dialogue(server, user):
    sent = [deliver(server, user) for _ in range(2)]
    stored = stored_messages(server.data, user)
    p = poplib.POP3("127.0.0.1", server.ports["pop3"], timeout=20)
    assert p.getwelcome().startswith(b"+OK")
    assert set(p.capa()) >= {"TOP", "UIDL", "USER", "SASL", "PIPELINING"}
    p.user(user)
    p.pass_(PASSWORD)
    count, size = p.stat()
    assert (count, size) == (2, sum(map(len, stored)))
    _, listing, _ = p.list()
    assert [int(x.split()[1]) for x in listing] == [len(m) for m in stored]
    _, uids, _ = p.uidl()
    assert len({u.split()[1] for u in uids}) == 2
    for n, message in enumerate(stored, 1):
        _, lines, _ = p.retr(n)
        assert b"\r\n".join(lines) + b"\r\n" == message
        assert message.endswith(sent[n - 1])
    _, lines, _ = p.top(1, 1)
    assert lines[-1] == b"first line"
    p.dele(1)
    p.rset()
    p.dele(2)
    p.quit()
    assert stored_messages(server.data, user) == stored[:1]


# --- pipelining and limits ---------------------------------------------------------------------

def test_pipelined_commands_are_answered_in_order(server, user):
    for _ in range(3):
        deliver(server, user)
    c = Raw(server.ports["pop3"])
    c.send(f"USER {user}\r\nPASS {PASSWORD}\r\nSTAT\r\nRETR 1\r\nRETR 2\r\nLIST 3\r\n"
           "DELE 2\r\nBOGUS\r\nUIDL 2\r\nNOOP\r\nRETR 3\r\nQUIT\r\n")
    assert c.line().startswith("+OK")
    assert c.line().startswith("+OK maildrop has 3")
    assert c.line().startswith("+OK 3 ")
    for _ in range(2):
        assert c.line().startswith("+OK")
        assert c.body().endswith(b"fourth line\r\n.\r\n")
    assert c.line().startswith("+OK 3 ")
    assert c.line() == "+OK message 2 deleted"
    assert c.line().startswith("-ERR unknown command BOGUS")
    assert c.line() == "-ERR message already deleted"
    assert c.line() == "+OK"
    assert c.line().startswith("+OK")
    c.body()
    assert c.line().startswith("+OK Roost POP3 server signing off (2 messages left)")
    assert c.closed()
    assert len(stored_messages(server.data, user)) == 2


def test_long_line_is_refused_and_the_connection_closed(server):
    c = Raw(server.ports["pop3"])
    c.send(b"USER " + b"a" * 10000 + b"\r\n")
    assert c.line().startswith("-ERR line too long")
    assert c.closed()


def test_too_many_commands_before_login(server):
    c = Raw(server.ports["pop3"])
    c.send("NOOP\r\n" * 25)
    replies = [c.line() for _ in range(20)]
    assert all(r == "-ERR log in first" for r in replies)
    assert c.line().startswith("-ERR too many commands without logging in")
    assert c.closed()


def test_idle_unauthenticated_connection_is_closed(server):
    c = Raw(server.ports["pop3"])
    started = time.monotonic()
    assert c.line() == "-ERR idle too long; closing"       # [limits] says 3 seconds
    assert 2 < time.monotonic() - started < 15
    assert c.closed()


def test_unauthenticated_connections_per_ip_are_bounded(server):
    held = [Raw(server.ports["pop3"]) for _ in range(10)]
    try:
        extra = socket.create_connection(("127.0.0.1", server.ports["pop3"]), timeout=20)
        try:
            assert extra.recv(200).startswith(b"-ERR [SYS/TEMP] too many connections from")
        finally:
            extra.close()
    finally:
        for c in held:
            c.close()


# --- cleartext off loopback ----------------------------------------------------------------

def test_no_password_without_tls_when_loopback_cleartext_is_off(tmp_path):
    srv = make_server(tmp_path, "[pop3]\nloopback_cleartext = false\n")
    try:
        c = Raw(srv.ports["pop3"])
        assert c.cmd("CAPA").startswith("+OK")
        caps = c.multi()
        assert "STLS" in caps and "USER" not in caps and "SASL PLAIN" not in caps
        assert c.cmd("USER seed@example.org") == "-ERR use STLS first: no password without TLS here"
        assert c.cmd("AUTH PLAIN =") == "-ERR use STLS first: no password without TLS here"
        assert c.cmd("AUTH").startswith("+OK") and c.multi() == []
        assert c.cmd("STLS").startswith("+OK")
        c.sock = tls_context(srv).wrap_socket(c.sock, server_hostname=HOST)
        assert c.login("seed@example.org").startswith("+OK")
        c.cmd("QUIT")
        c = Raw(srv.ports["pop3s"], tls_context(srv))
        assert c.login("seed@example.org").startswith("+OK")
        c.cmd("QUIT")
    finally:
        srv.stop()


def test_listeners_print_their_ports_and_accept_off(server):
    assert re.search(r"roost: pop3 listening on 127\.0\.0\.1:\d+", "".join(server.output))
    assert re.search(r"roost: pop3s listening on 127\.0\.0\.1:\d+", "".join(server.output))
    assert server.ports["pop3"] and server.ports["pop3s"]


def test_doctor_sees_roost_on_both_pop3_listeners(server):
    from roost.server import config as configmod
    from roost.server import doctor
    cfg = configmod.Config(data=server.data)
    cfg.listen = {name: "off" for name in cfg.listen}
    cfg.listen.update(pop3=f"127.0.0.1:{server.ports['pop3']}",
                      pop3s=f"127.0.0.1:{server.ports['pop3s']}")
    got = {c.name.split()[1]: c for c in doctor.check_listeners(cfg)}
    assert {n: (got[n].verdict, got[n].detail) for n in ("pop3", "pop3s")} == \
        dict.fromkeys(("pop3", "pop3s"), ("ok", "Roost is listening"))


def test_stop_and_kill_delete_nothing_and_locks_are_given_back_or_lapse(tmp_path):
    srv = make_server(tmp_path)
    try:
        address = "seed@example.org"
        for _ in range(2):
            deliver(srv, address)
        c = pop(srv, address)
        assert c.cmd("DELE 1").startswith("+OK")
        srv.stop()                          # SIGTERM: the session ends without UPDATE
        assert c.closed()
        assert len(stored_messages(srv.data, address)) == 2
        srv.start()                         # its lease was released at the stop
        c = pop(srv, address)
        assert c.cmd("DELE 2").startswith("+OK")
        srv.kill()                          # kill -9: nothing deleted, the lease stays behind
        assert c.closed()
        assert len(stored_messages(srv.data, address)) == 2
        srv.start()
        c = Raw(srv.ports["pop3"])
        assert c.login(address).startswith("-ERR [IN-USE]")
        store = Store.open(srv.data)
        try:
            name = f"pop3:{store.account(address).id}"
            holder, expires = store.lease_holder(name)
            assert time.time() < expires <= time.time() + 60
            assert store.take_lease(name, holder, -1)       # as if its 60 seconds were over
        finally:
            store.close()
        assert c.login(address).startswith("+OK maildrop has 2 messages")
        c.cmd("QUIT")
    finally:
        srv.stop()


def seen_flags(server, address):
    store = Store.open(server.data)
    try:
        box = store.mailbox(store.account(address).id, "INBOX")
        return ["\\Seen" in r.flag_names for r in store.records(box.id)]
    finally:
        store.close()


def test_retrieved_messages_are_seen_after_quit_only(server, user):
    for _ in range(3):
        deliver(server, user)
    c = pop(server, user)
    assert c.cmd("RETR 1").startswith("+OK")
    c.body()
    c.close()                   # dropped: no UPDATE, no flags
    time.sleep(0.3)
    assert seen_flags(server, user) == [False, False, False]
    c = pop(server, user)
    for command in ("RETR 1", "TOP 2 0", "RETR 3"):
        assert c.cmd(command).startswith("+OK")
        c.body()
    assert c.cmd("DELE 3").startswith("+OK")
    assert c.cmd("QUIT").startswith("+OK")
    assert c.closed()
    assert seen_flags(server, user) == [True, False]      # 3 deleted, TOP reads nothing
