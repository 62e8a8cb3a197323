"""The ManageSieve wire format (protocols.sieve.wire): command parsing on any
bytes (hypothesis), strings the server writes read back the same, and the
TRYLATER answers a session gives when the Authenticator refuses or is busy
(the Authenticator replaced by a stub: only the session's mapping is tested)."""

import asyncio
import base64
import re

import pytest
from hypothesis import given, settings, strategies as st

from roost.protocols.sieve import Context, serve, wire
from roost.server.auth import LoginResult


def parse(data, max_literal=1000):
    async def go():
        reader = asyncio.StreamReader(limit=wire.MAX_LINE)   # made inside the running loop
        reader.feed_data(data)
        reader.feed_eof()
        return await wire.read_command(reader, max_literal)
    return asyncio.run(go())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_fail_cleanly(data):
    try:
        items = parse(data)
    except (wire.Syntax, wire.Fatal, asyncio.IncompleteReadError):
        return
    assert len(items) <= wire.MAX_ITEMS
    assert all(isinstance(i, (str, wire.Str)) for i in items)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=1500), min_size=1, max_size=4))
def test_strings_round_trip(values):
    # what the server writes as a string (quoted or {n} literal), a client
    # writing the same form gets parsed back to the same bytes
    line = b"NOOP"
    for v in values:
        s = wire.string(v)
        line += b" " + (s.replace(b"}\r\n", b"+}\r\n", 1) if s.startswith(b"{") else s)
    items = parse(line + b"\r\n", max_literal=2000)
    assert items[0] == "NOOP" and [bytes(i) for i in items[1:]] == values


def test_literal_forms_and_limits():
    assert parse(b'PUTSCRIPT "a" {5+}\r\nkeep;\r\n') == ["PUTSCRIPT", b"a", b"keep;"]
    assert parse(b'PUTSCRIPT {1}\r\na {5}\r\nkeep;\r\n') == ["PUTSCRIPT", b"a", b"keep;"]
    with pytest.raises(wire.Syntax) as err:
        parse(b"CHECKSCRIPT {2000+}\r\n" + b"x" * 2000 + b"\r\n")
    assert err.value.code == "QUOTA/MAXSIZE"
    with pytest.raises(wire.Fatal):
        parse(b"CHECKSCRIPT {%d+}\r\n" % (wire.DISCARD_LIMIT + 1))
    with pytest.raises(wire.Fatal):
        parse(b"NOOP " + b"{0+}\r\n" * 6 + b"\r\n")
    with pytest.raises(wire.Syntax):
        parse(b'NOOP "a\\x"\r\n')
    with pytest.raises(wire.Syntax):
        parse(b'NOOP "' + b"x" * 1100 + b'"\r\n')
    assert wire.response("NO", "QUOTA/MAXSIZE", 'too "big"') == b'NO (QUOTA/MAXSIZE) "too \\"big\\""\r\n'
    assert wire.response("NO", None, "two\r\nlines") == b"NO {10}\r\ntwo\r\nlines\r\n"


class StubAuth:
    """Answers every login with ``result`` (the real one's penalties are
    tested in tests/protocol/test_auth_throttle.py)."""

    def __init__(self, result):
        self.result = result

    account_key = staticmethod(lambda a: a.lower())

    def report(self, *args, **kw):
        pass

    async def login(self, *args, **kw):
        return self.result

    async def token_login(self, *args, **kw):
        return self.result


async def dialogue(result, lines):
    async def run(fn, *args):
        return fn(*args)
    ctx = Context(run=run, auth=StubAuth(result), token_account=lambda t: None)
    server = await asyncio.start_server(lambda r, w: serve(ctx, r, w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(line + b"\r\n" for line in lines))
    out = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    server.close()
    await server.wait_closed()
    return out.decode()


def test_busy_and_blocked_are_trylater():
    plain = b'AUTHENTICATE "PLAIN" "' + base64.b64encode(b"\0a@b.c\0pw") + b'"'
    out = asyncio.run(dialogue(LoginResult(retry_after=1, busy=True), [plain, b"LOGOUT"]))
    assert 'NO (TRYLATER) "the server is busy' in out and out.rstrip().endswith('"Logout completed"')
    out = asyncio.run(dialogue(LoginResult(retry_after=30), [plain, b"LOGOUT"]))
    assert re.search(r'BYE \(TRYLATER\) "too many failed logins; try again in 30 seconds"\r\n$', out)
