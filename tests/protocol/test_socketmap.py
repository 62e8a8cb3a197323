"""The socketmap table server (``roost serve --socketmap``) over loopback
sockets: every map's answers (NOTFOUND included) from a real store, and
netstring framing errors (PERM, and a closed connection when the stream
cannot go on)."""

import asyncio
import socket

import pytest

from roost.protocols.smtp import socketmap
from roost.storage.store import Store
from tests.conftest import RoostServer

ACCOUNTS = ("a@example.org", "b@example.org", "c@other.net")
ALIASES = (
    ("sales@example.org", "a@example.org"),
    ("sales@example.org", "b@example.org"),
    ("info@example.org", "sales@example.org"),           # an alias of an alias
    ("fwd@example.org", "someone@remote.test"),          # forwarded by Postfix
    ("@other.net", "c@other.net"),                       # a catch-all
    ("postmaster@alias.test", "a@example.org"),          # a domain with aliases only
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("socketmap") / "data"
    store = Store.open(str(data))
    for address in ACCOUNTS:
        store.add_account(address)
    for alias, target in ALIASES:
        store.add_alias(alias, target)
    store.close()
    srv = RoostServer(data, listeners=("socketmap",)).start()
    yield srv
    srv.stop()


class Map:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def reply(self):
        while b":" not in self.buf:
            self._more()
        size, _, rest = self.buf.partition(b":")
        while len(rest) < int(size) + 1:
            self._more()
            size, _, rest = self.buf.partition(b":")
        assert rest[int(size):int(size) + 1] == b",", self.buf
        self.buf = rest[int(size) + 1:]
        return rest[:int(size)].decode()

    def _more(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed; buffered {self.buf!r}")
        self.buf += chunk

    def ask(self, name, key):
        request = f"{name} {key}".encode()
        self.send(b"%d:%s," % (len(request), request))
        return self.reply()

    def closed(self):
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


@pytest.fixture
def client(server):
    c = Map(server.ports["socketmap"])
    yield c
    c.close()


NOTFOUND = "NOTFOUND "


@pytest.mark.parametrize("key, want", [
    ("example.org", "OK example.org"),
    ("OTHER.NET", "OK other.net"),
    ("alias.test", "OK alias.test"),          # only an alias lives there
    ("remote.test", NOTFOUND),
    ("sub.example.org", NOTFOUND),
    ("a@example.org", NOTFOUND),              # not a domain
])
def test_domain_map(client, key, want):
    assert client.ask("domain", key) == want


@pytest.mark.parametrize("key, want", [
    ("a@example.org", "OK a@example.org"),
    ("A@Example.ORG", "OK a@example.org"),
    ("a+lists@example.org", "OK a@example.org"),
    ("sales@example.org", "OK a@example.org,b@example.org"),
    ("info@example.org", "OK a@example.org,b@example.org"),
    ("anyone@other.net", "OK c@other.net"),           # the catch-all
    ("postmaster@alias.test", "OK a@example.org"),
    ("fwd@example.org", NOTFOUND),                    # no Roost mailbox behind it
    ("nobody@example.org", NOTFOUND),
    ("nobody@remote.test", NOTFOUND),
    ("not an address", NOTFOUND),
    ("@example.org", NOTFOUND),
])
def test_mailbox_map(client, key, want):
    assert client.ask("mailbox", key) == want


@pytest.mark.parametrize("key, want", [
    ("sales@example.org", "OK a@example.org,b@example.org"),
    ("info@example.org", "OK sales@example.org"),     # one step: Postfix expands again
    ("fwd@example.org", "OK someone@remote.test"),
    ("anyone@other.net", "OK c@other.net"),
    ("@other.net", "OK c@other.net"),
    ("c@other.net", NOTFOUND),                        # an account: the catch-all leaves it alone
    ("a@example.org", NOTFOUND),
    ("a+tag@example.org", NOTFOUND),                  # Roost delivers +detail itself
    ("nobody@example.org", NOTFOUND),
    ("no-at-sign", NOTFOUND),
])
def test_alias_map(client, key, want):
    assert client.ask("alias", key) == want


@pytest.mark.parametrize("key, want", [
    ("a@example.org", "OK a@example.org"),
    ("a+news@example.org", "OK a@example.org"),
    ("sales@example.org", "OK a@example.org,b@example.org"),
    ("info@example.org", "OK a@example.org,b@example.org"),
    ("postmaster@alias.test", "OK a@example.org"),
    ("anyone@other.net", NOTFOUND),                   # a catch-all owns no sender address
    ("fwd@example.org", NOTFOUND),
    ("nobody@example.org", NOTFOUND),
])
def test_sender_map(client, key, want):
    assert client.ask("sender", key) == want


def test_pipelined_requests_are_answered_in_order(client):
    keys = ["a@example.org", "nobody@example.org", "sales@example.org"] * 20
    client.send(b"".join(b"%d:mailbox %s," % (len(k) + 8, k.encode()) for k in keys))
    got = [client.reply() for _ in keys]
    assert got == ["OK a@example.org", NOTFOUND, "OK a@example.org,b@example.org"] * 20


@pytest.mark.parametrize("request_", [b"nomap a@example.org", b"mailbox", b"mailbox ",
                                      b"\xff\xfe a@example.org", b""])
def test_bad_requests_get_perm_and_the_connection_goes_on(client, request_):
    client.send(b"%d:%s," % (len(request_), request_))
    assert client.reply().startswith("PERM ")
    assert client.ask("mailbox", "a@example.org") == "OK a@example.org"


@pytest.mark.parametrize("stream", [
    b"100001:" + b"x" * 100,          # longer than Postfix's limit
    b"99999999999999999999:",
    b"abc:def,",                      # not a length
    b"-5:hello,",
    b"5:hello;",                      # no comma after the data
    b"1" * 70000,                     # a length that never ends
])
def test_broken_netstrings_get_perm_and_a_closed_connection(server, client, stream):
    client.send(stream)
    assert client.reply().startswith("PERM ")
    assert client.closed()
    again = Map(server.ports["socketmap"])
    try:
        assert again.ask("domain", "example.org") == "OK example.org"
    finally:
        again.close()


def test_a_request_at_the_limit_is_answered(client):
    key = "x" * (socketmap.MAX_REQUEST - len("mailbox ") - len("@example.org")) + "@example.org"
    assert client.ask("mailbox", key) == NOTFOUND


def test_a_store_failure_is_temp():
    """Unit: a lookup that raises is TEMP (Postfix defers), not a dropped connection."""
    async def failing_run(fn, *args):
        raise OSError("database is locked")
    reply = asyncio.run(socketmap.answer(b"mailbox a@example.org", failing_run, None))
    assert reply == "TEMP lookup failed"
