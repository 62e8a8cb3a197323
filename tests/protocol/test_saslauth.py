"""Dovecot's auth protocol (``roost serve --auth``) over loopback sockets, as
Postfix's ``smtpd_sasl_type = dovecot`` speaks it: the handshake, PLAIN and
LOGIN, refusals, the failed-login penalties it shares with IMAP, and
malformed input (a FAIL or a closed connection, never a dead listener).

The server runs with ``max_login_delay = 1`` (see test_auth_throttle.py): after
one failure of an (account, client address) the next attempt waits 1 s, and
one that would wait longer is refused at once. Each test that fails logins
uses its own account or client address (``rip=``) so penalties do not meet.
"""

import base64
import socket
import time

import pytest

from roost.server.auth import hash_password
from roost.storage.store import Store
from tests.conftest import RoostServer
from tests.imap_helpers import Wire, close_all

PASSWORD = "right horse"
ACCOUNTS = ("alice", "bob", "shared", "shared2", "limit", "login")
CONFIG = """
[auth]
max_login_delay = 1
hash_threads = 1
"""


def addr(name):
    return f"{name}@example.org"


def b64(data):
    return base64.b64encode(data if isinstance(data, bytes) else data.encode()).decode()


def plain(user, password=PASSWORD, authzid=""):
    return b64(f"{authzid}\0{user}\0{password}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("saslauth")
    store = Store.open(str(tmp / "data"))
    for name in ACCOUNTS:
        store.add_account(addr(name), hash_password(PASSWORD))
    store.close()
    (tmp / "roost.toml").write_text(CONFIG)
    srv = RoostServer(tmp / "data", listeners=("auth", "imap"), config=tmp / "roost.toml").start()
    yield srv
    close_all()
    srv.stop()


class Auth:
    """A raw auth-client connection: ``lines()`` reads the handshake."""

    def __init__(self, server, handshake=True):
        self.sock = socket.create_connection(("127.0.0.1", server.ports["auth"]), timeout=20)
        self.file = self.sock.makefile("rb")
        self.greeting = []
        if handshake:
            self.send("VERSION\t1\t0\nCPID\t4242\n")
            while not self.greeting or self.greeting[-1] != "DONE":
                self.greeting.append(self.line())

    def send(self, text):
        self.sock.sendall(text.encode() if isinstance(text, str) else text)

    def line(self):
        raw = self.file.readline()
        if not raw:
            raise ConnectionError("closed")
        assert raw.endswith(b"\n"), raw
        return raw[:-1].decode()

    def auth(self, rid, mech, *params, rip="127.0.0.1", secured=True):
        fields = [f"AUTH\t{rid}\t{mech}\tservice=smtp\tnologin\tlip=127.0.0.1\trip={rip}"]
        fields += ["secured"] if secured else []
        self.send("\t".join(fields + list(params)) + "\n")

    def closed(self):
        """True when the server closed the connection (after anything it still sent)."""
        try:
            while self.file.readline():
                pass
            return True
        except socket.timeout:
            return False

    def close(self):
        self.file.close()
        self.sock.close()


@pytest.fixture
def conn(server):
    opened = []

    def make(**kwargs):
        c = Auth(server, **kwargs)
        opened.append(c)
        return c
    yield make
    for c in opened:
        c.close()


def fields(line):
    return line.split("\t")


def test_handshake_names_the_mechanisms_before_spid(conn):
    c = conn()
    names = [fields(line)[0] for line in c.greeting]
    assert names[0] == "VERSION" and fields(c.greeting[0])[1] == "1"
    assert c.greeting[1:3] == ["MECH\tPLAIN\tplaintext", "MECH\tLOGIN\tplaintext"]
    assert names[3:] == ["SPID", "CUID", "COOKIE", "DONE"]
    assert len(fields(c.greeting[5])[1]) == 32   # the cookie: 128 bits in hex


def test_plain_with_initial_response(conn):
    c = conn()
    c.auth(1, "PLAIN", "resp=" + plain(" Alice@Example.ORG "))
    assert c.line() == "OK\t1\tuser=alice@example.org"   # the account's own spelling


def test_plain_without_initial_response_asks_with_an_empty_cont(conn):
    c = conn()
    c.auth(7, "plain")
    assert c.line() == "CONT\t7\t"
    c.send(f"CONT\t7\t{plain(addr('alice'))}\n")
    assert c.line() == "OK\t7\tuser=alice@example.org"


def test_login_mechanism_round_trips(conn):
    c = conn()
    c.auth(3, "LOGIN")
    assert c.line() == f"CONT\t3\t{b64('Username:')}"
    c.send(f"CONT\t3\t{b64(addr('login'))}\n")
    assert c.line() == f"CONT\t3\t{b64('Password:')}"
    c.send(f"CONT\t3\t{b64(PASSWORD)}\n")
    assert c.line() == "OK\t3\tuser=login@example.org"
    # An initial response is the user name; only the password is asked for.
    c.auth(4, "LOGIN", "resp=" + b64(addr("login")))
    assert c.line() == f"CONT\t4\t{b64('Password:')}"
    c.send(f"CONT\t4\t{b64(PASSWORD)}\n")
    assert c.line() == "OK\t4\tuser=login@example.org"


def test_wrong_password_and_unknown_account_fail(conn):
    c = conn()
    c.auth(1, "PLAIN", "resp=" + plain(addr("bob"), "wrong"), rip="127.0.0.51")
    reply = fields(c.line())
    assert reply[:2] == ["FAIL", "1"] and "reason=Authentication failed" in reply
    assert not any(f.startswith("user=") for f in reply) and "temp" not in reply
    c.auth(2, "PLAIN", "resp=" + plain("nobody@example.org"), rip="127.0.0.52")
    assert fields(c.line())[:3] == ["FAIL", "2", "reason=Authentication failed"]


def test_failures_through_auth_pace_imap_logins_and_back(server, conn):
    """The penalties are the Authenticator's: two wrong guesses for "shared"
    from 127.0.0.61 through the auth service (Postfix's rip=) and the owner's
    IMAP login from that address is refused for now, while from another
    address it works. And IMAP failures pace the auth service the same way."""
    c = conn()
    c.auth(1, "PLAIN", "resp=" + plain(addr("shared"), "guess1"), rip="127.0.0.61")
    c.auth(2, "PLAIN", "resp=" + plain(addr("shared"), "guess2"), rip="127.0.0.61")
    time.sleep(0.3)       # both guesses are under way
    imap = Wire(server.ports["imap"], source="127.0.0.61")
    refused = imap.cmd(f'L LOGIN "{addr("shared")}" "{PASSWORD}"')[-1]
    assert refused.startswith(b"L NO [UNAVAILABLE]"), refused
    elsewhere = Wire(server.ports["imap"], source="127.0.0.62")
    assert elsewhere.cmd(f'L LOGIN "{addr("shared")}" "{PASSWORD}"')[-1].startswith(b"L OK")
    assert sorted(fields(c.line())[:3] for _ in range(2)) == \
        [["FAIL", "1", "reason=Authentication failed"], ["FAIL", "2", "reason=Authentication failed"]]

    guessers = [Wire(server.ports["imap"], source="127.0.0.63") for _ in range(2)]
    for n, w in enumerate(guessers):
        w.send(f'L LOGIN "{addr("shared2")}" "guess{n}"\r\n')
    time.sleep(0.5)       # both guesses are under way
    c.auth(3, "PLAIN", "resp=" + plain(addr("shared2")), rip="127.0.0.63")
    reply = fields(c.line())
    assert reply[:2] == ["FAIL", "3"] and "temp" in reply, reply
    assert any(f.startswith("reason=Too many failed logins") for f in reply)
    c.auth(4, "PLAIN", "resp=" + plain(addr("shared2")), rip="127.0.0.64")
    assert c.line() == "OK\t4\tuser=shared2@example.org"
    for w in guessers:
        assert b"AUTHENTICATIONFAILED" in w.until("L")[-1]


def test_cleartext_needs_secured_off_loopback(conn):
    c = conn()
    c.auth(1, "PLAIN", "resp=" + plain(addr("alice")), rip="203.0.113.9", secured=False)
    reply = fields(c.line())
    assert reply[:2] == ["FAIL", "1"] and reply[2].startswith("reason=Plaintext authentication")
    c.auth(2, "PLAIN", "resp=" + plain(addr("alice")), rip="203.0.113.9", secured=True)
    assert c.line() == "OK\t2\tuser=alice@example.org"
    c.auth(3, "PLAIN", "resp=" + plain(addr("alice")), rip="::1", secured=False)
    assert c.line() == "OK\t3\tuser=alice@example.org"


def test_authorization_identity_must_be_the_login(conn):
    c = conn()
    c.auth(1, "PLAIN", "resp=" + plain(addr("alice"), authzid=addr("bob")), rip="127.0.0.71")
    assert fields(c.line())[:2] == ["FAIL", "1"]
    c.auth(2, "PLAIN", "resp=" + plain(addr("alice"), authzid="ALICE@example.org"))
    assert c.line() == "OK\t2\tuser=alice@example.org"


@pytest.mark.parametrize("params, reason", [
    (("mech", "CRAM-MD5"), "reason=Unsupported authentication mechanism"),
    (("resp", "not base64!"), "reason=Invalid base64 data in initial response"),
    (("resp", b64("no nul bytes")), "reason=Invalid PLAIN response"),
    (("resp", b64("\0\0password")), "reason=Invalid PLAIN response"),
    (("resp", b64("a\0b\0c\0d")), "reason=Invalid PLAIN response"),
    (("resp", b64(b"\0\xff\xfe@example.org\0pw")), "reason=PLAIN response is not UTF-8"),
])
def test_bad_requests_get_fail_and_the_connection_goes_on(conn, params, reason):
    c = conn()
    kind, value = params
    if kind == "mech":
        c.auth(5, value)
    else:
        c.auth(5, "PLAIN", f"resp={value}")
    assert fields(c.line())[:3] == ["FAIL", "5", reason]
    c.auth(6, "PLAIN", "resp=" + plain(addr("alice")))
    assert c.line() == "OK\t6\tuser=alice@example.org"


def test_missing_service_unknown_cont_and_cancel(conn):
    c = conn()
    c.send(f"AUTH\t1\tPLAIN\tresp={plain(addr('alice'))}\n")
    assert fields(c.line())[:3] == ["FAIL", "1", "reason=Missing service"]
    c.send(f"CONT\t99\t{b64('x')}\n")
    assert fields(c.line())[:3] == ["FAIL", "99", "reason=Unknown request"]
    c.auth(2, "LOGIN")
    assert c.line().startswith("CONT\t2\t")
    c.send("CANCEL\t2\n")
    c.send(f"CONT\t2\t{b64('alice')}\n")
    assert fields(c.line())[:3] == ["FAIL", "2", "reason=Unknown request"]
    c.send("CONT\t3\t!!!\n")   # ids are checked before data
    assert fields(c.line())[:2] == ["FAIL", "3"]
    c.auth(4, "LOGIN")
    c.line()
    c.send("CONT\t4\tnot*base64\n")
    assert fields(c.line())[:3] == ["FAIL", "4", "reason=Invalid base64 data in continued response"]


def test_requests_per_connection_are_bounded(conn):
    c = conn()
    for rid in range(1, 17):
        c.auth(rid, "LOGIN")
    assert sorted(int(fields(c.line())[1]) for _ in range(16)) == list(range(1, 17))
    c.auth(17, "LOGIN")
    reply = fields(c.line())
    assert reply[:2] == ["FAIL", "17"] and "temp" in reply
    c.send("CANCEL\t1\n")
    c.auth(18, "PLAIN", "resp=" + plain(addr("alice")))
    assert c.line() == "OK\t18\tuser=alice@example.org"


@pytest.mark.parametrize("first, then", [
    ("AUTH\t1\tPLAIN\tservice=smtp", None),               # before VERSION
    ("VERSION\t2\t0", None),                              # another major version
    ("VERSION\t1\t0", "HELLO\tthere"),                    # unknown command
    ("VERSION\t1\t0", "AUTH\tone\tPLAIN\tservice=smtp"),  # a bad id
    ("VERSION\t1\t0", "AUTH\t99999999999\tPLAIN\tservice=smtp"),
    ("VERSION\t1\t0", "AUTH"),
    ("VERSION\t1\t0", "CPID\tnot-a-pid"),
    ("VERSION\t1\t0", "CONT"),
    ("VERSION\t1\t0", "AUTH\t1\tLOGIN\tservice=smtp\nAUTH\t1\tLOGIN\tservice=smtp"),  # duplicate
    ("VERSION\t1\t0", "AUTH\t1\tPLAIN\tservice=smtp\tresp=" + "A" * 20000),  # too long
    ("VERSION\t1\t0", "\xff\xfe\x00garbage"),
])
def test_protocol_violations_close_the_connection(server, conn, first, then):
    c = conn(handshake=False)
    c.sock.settimeout(5)
    c.send(first.encode("latin-1") + b"\n")
    if then is not None:
        c.send(then.encode("latin-1") + b"\n")
    assert c.closed()
    again = conn()     # the listener still serves
    again.auth(1, "PLAIN", "resp=" + plain(addr("alice")))
    assert again.line() == "OK\t1\tuser=alice@example.org"


def test_cont_for_a_request_under_check_closes_the_connection(conn):
    c = conn()
    c.sock.settimeout(5)
    c.auth(1, "PLAIN", "resp=" + plain(addr("alice"), "wrong"), rip="127.0.0.81")
    c.send(f"CONT\t1\t{b64('x')}\n")
    assert c.closed()


def test_unix_socket_listener(tmp_path):
    store = Store.open(str(tmp_path / "data"))
    store.add_account(addr("alice"), hash_password(PASSWORD))
    store.close()
    path = tmp_path / "auth.sock"
    srv = RoostServer(tmp_path / "data", listeners={"auth": str(path)}).start()
    try:
        assert f"roost: auth listening on {path}\n" in srv.output
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(20)
            s.connect(str(path))
            s.sendall(b"VERSION\t1\t0\nCPID\t1\nAUTH\t1\tPLAIN\tservice=smtp\tresp="
                      + plain(addr("alice")).encode() + b"\n")
            f = s.makefile("rb")
            lines = [f.readline() for _ in range(8)]
            f.close()
        assert lines[0].startswith(b"VERSION\t1\t") and lines[6] == b"DONE\n"
        assert lines[7] == b"OK\t1\tuser=alice@example.org\n"
    finally:
        srv.stop()
    assert not path.exists()     # removed on stop


def test_only_auth_and_socketmap_take_a_socket_path(tmp_path):
    from roost.server import config
    assert config.check_listener("auth", "/run/roost/auth") == ("/run/roost/auth", None)
    assert config.check_listener("socketmap", "/run/roost/map") == ("/run/roost/map", None)
    with pytest.raises(ValueError, match="not a path"):
        config.check_listener("imap", "/run/roost/imap")
    (tmp_path / "roost.toml").write_text('[listen]\nlmtp = "/run/roost/lmtp"\n')
    with pytest.raises(ValueError, match="not a path"):
        config.load(str(tmp_path / "roost.toml"))
