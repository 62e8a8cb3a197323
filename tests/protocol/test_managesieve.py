"""ManageSieve (RFC 5804) over a real socket: raw transcripts against
``roost serve --managesieve 127.0.0.1:0``, STARTTLS with a test certificate,
SASL PLAIN/LOGIN/OAUTHBEARER, literals, limits and every command and
response code."""

import base64
import re
import signal
import socket
import ssl

import pytest

from roost.storage import sieve
from tests.conftest import RoostServer, add_user, roost
from tests.tls_helpers import write_cert

ALICE, BOB = "alice@example.org", "bob@example.org"
PASSWORDS = {ALICE: "alice-secret", BOB: "bob-secret"}
HOST = "mail.example.org"
GOOD = b'require ["fileinto"];\r\nif header :contains "subject" "x" {\r\n  fileinto "INBOX";\r\n}\r\n'


class Raw:
    """A ManageSieve client that sends bytes and reads whole responses."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""
        self.greeting = self.response()

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exactly(self, n):
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self):
        """``(data lines, final line)``; a literal's content is one data item."""
        data = []
        while True:
            line = self.line()
            m = re.fullmatch(rb"\{(\d+)\}", line)
            if m:
                data.append(self.exactly(int(m.group(1))))
                rest = self.line()          # the literal's line goes on after it
                if rest:
                    data.append(rest)
                continue
            if re.match(rb"(OK|NO|BYE)( |$)", line):
                return data, line.decode()
            data.append(line)

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def cmd(self, data):
        self.send(data + (b"\r\n" if isinstance(data, bytes) else "\r\n"))
        return self.response()

    def plain(self, user, password, authz=""):
        token = base64.b64encode(f"{authz}\0{user}\0{password}".encode()).decode()
        return self.cmd(f'AUTHENTICATE "PLAIN" "{token}"')

    def starttls(self, context):
        assert self.cmd("STARTTLS")[1].startswith("OK")
        self.sock = context.wrap_socket(self.sock, server_hostname=HOST)
        return self.response()      # the capabilities again, then OK

    def closed(self):
        """Whether the server closed the connection (which is then closed here too)."""
        try:
            return self.sock.recv(1) == b""
        except (ConnectionError, ssl.SSLError):
            return True
        finally:
            self.sock.close()

    def close(self):
        self.sock.close()


def literal(data):
    return b"{%d+}\r\n" % len(data) + data


def capabilities(lines):
    out = {}
    for line in lines:
        m = re.fullmatch(rb'"([^"]+)"(?: "([^"]*)")?', line)
        assert m, line
        out[m.group(1).decode()] = m.group(2).decode() if m.group(2) is not None else None
    return out


def make_server(tmp_path, extra=""):
    data = tmp_path / "data"
    for user, password in PASSWORDS.items():
        add_user(data, user, password)
    cert, key = write_cert(tmp_path / "certs", names=(HOST,))
    conf = tmp_path / "roost.toml"
    conf.write_text(f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'
                    "[limits]\nunauthenticated_command_timeout = 3\n" + extra)
    return RoostServer(data, listeners=("managesieve",), config=conf).start(), cert


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv, cert = make_server(tmp_path_factory.mktemp("managesieve"))
    srv.cert = cert
    yield srv
    srv.stop()


@pytest.fixture
def alice(server):
    c = Raw(server.ports["managesieve"])
    assert c.plain(ALICE, PASSWORDS[ALICE])[1].startswith("OK")
    yield c
    for name in (b"one", b"two", b"big", b"renamed", b"third"):
        c.cmd(b'SETACTIVE ""')
        c.cmd(b'DELETESCRIPT "' + name + b'"')
    c.close()


# --- greeting, capabilities, logging in -------------------------------------------------------

def test_greeting_lists_capabilities(server):
    c = Raw(server.ports["managesieve"])
    lines, ok = c.greeting
    caps = capabilities(lines)
    assert ok.startswith("OK")
    assert caps["IMPLEMENTATION"].startswith("Roost")
    assert caps["SASL"] == "PLAIN LOGIN OAUTHBEARER"       # loopback: cleartext allowed
    assert caps["SIEVE"] == " ".join(sieve.EXTENSIONS)
    assert "STARTTLS" in caps and caps["VERSION"] == "1.0"
    assert caps["NOTIFY"] == "mailto" and caps["MAXREDIRECTS"].isdigit()
    assert "UNAUTHENTICATE" in caps
    assert c.cmd("CAPABILITY") == (lines, "OK")
    assert c.cmd("LOGOUT")[1].startswith("OK") and c.closed()


def test_starttls_then_plain_login(server):
    c = Raw(server.ports["managesieve"])
    ctx = ssl.create_default_context(cafile=server.cert)
    lines, ok = c.starttls(ctx)
    assert ok.startswith("OK")
    caps = capabilities(lines)
    assert "STARTTLS" not in caps and caps["SASL"] == "PLAIN LOGIN OAUTHBEARER"
    assert c.cmd("STARTTLS")[1].startswith("NO")
    assert c.plain(ALICE, PASSWORDS[ALICE])[1] == 'OK "Logged in"'
    assert c.cmd("LISTSCRIPTS")[1] == "OK"
    c.close()


def test_starttls_refuses_pipelined_cleartext(server):
    c = Raw(server.ports["managesieve"])
    c.send(b"STARTTLS\r\nLISTSCRIPTS\r\n")
    _, final = c.response()
    assert final.startswith("BYE"), final
    assert c.closed()


def test_login_mechanism_with_challenges(server):
    c = Raw(server.ports["managesieve"])
    c.send('AUTHENTICATE "LOGIN"\r\n')
    assert base64.b64decode(c.line().strip(b'"')) == b"Username:"
    c.send(b'"' + base64.b64encode(ALICE.encode()) + b'"\r\n')
    assert base64.b64decode(c.line().strip(b'"')) == b"Password:"
    pw = base64.b64encode(PASSWORDS[ALICE].encode())
    c.send(b"{%d+}\r\n" % len(pw) + pw + b"\r\n")           # a literal answer
    assert c.response()[1].startswith("OK")
    c.close()


def test_plain_without_initial_response_and_cancel(server):
    c = Raw(server.ports["managesieve"])
    c.send('AUTHENTICATE "PLAIN"\r\n')
    assert c.line() == b'""'
    c.send('"*"\r\n')
    assert c.response()[1] == 'NO "authentication cancelled"'
    c.send('AUTHENTICATE "PLAIN"\r\n')
    assert c.line() == b'""'
    c.send(b'"' + base64.b64encode(f"\0{BOB}\0{PASSWORDS[BOB]}".encode()) + b'"\r\n')
    assert c.response()[1].startswith("OK")
    c.close()


def test_failed_logins_end_the_connection(server):
    c = Raw(server.ports["managesieve"])
    assert c.plain(BOB, "wrong")[1] == 'NO "authentication failed"'
    assert c.plain(BOB, "wrong again")[1] == 'NO "authentication failed"'
    assert c.plain(BOB, "still wrong")[1].startswith("BYE")
    assert c.closed()


def test_no_acting_as_another_user_and_bad_input(server):
    c = Raw(server.ports["managesieve"])
    assert c.plain(ALICE, PASSWORDS[ALICE], authz=BOB)[1].startswith("NO")
    assert c.cmd('AUTHENTICATE "CRAM-MD5"')[1].startswith('NO "unsupported mechanism')
    assert c.cmd('AUTHENTICATE "PLAIN" "not base64!"')[1].startswith("NO")
    assert c.cmd("LISTSCRIPTS")[1] == 'NO "log in first"'
    assert c.cmd("FROBNICATE")[1].startswith('NO "unknown command')
    assert c.cmd('"quoted" first')[1].startswith("NO")
    assert c.cmd('NOOP "unterminated')[1].startswith("NO")
    c.close()


def test_oauthbearer_with_an_app_token(server):
    out = roost(server.data, "token", "add", ALICE, "sieve").stdout.decode()
    token = re.search(r"[A-Za-z0-9_-]{20,}", out).group()
    c = Raw(server.ports["managesieve"])
    bad = base64.b64encode(f"n,a={ALICE},\x01auth=Bearer nope\x01\x01".encode()).decode()
    c.send(f'AUTHENTICATE "OAUTHBEARER" "{bad}"\r\n')
    assert b"invalid_token" in base64.b64decode(c.line().strip(b'"'))    # the error challenge
    c.send('"AQ=="\r\n')
    assert c.response()[1] == 'NO "authentication failed"'
    good = base64.b64encode(f"n,a={ALICE},\x01auth=Bearer {token}\x01\x01".encode()).decode()
    assert c.cmd(f'AUTHENTICATE "OAUTHBEARER" "{good}"')[1].startswith("OK")
    assert c.cmd("LISTSCRIPTS")[1] == "OK"
    c.close()


def test_unauthenticate_and_noop_tag(alice):
    assert alice.cmd('NOOP "abc"')[1] == 'OK (TAG "abc") "Done"'
    assert alice.cmd("UNAUTHENTICATE")[1].startswith("OK")
    assert alice.cmd("LISTSCRIPTS")[1] == 'NO "log in first"'
    assert alice.plain(ALICE, PASSWORDS[ALICE])[1].startswith("OK")
    assert alice.cmd('AUTHENTICATE "PLAIN" "AA=="')[1] == 'NO "already logged in"'


# --- scripts ----------------------------------------------------------------------------------

def test_put_list_activate_get_delete(alice):
    assert alice.cmd(b'PUTSCRIPT "one" ' + literal(GOOD))[1] == 'OK "script stored"'
    sync = b"keep;\r\n"
    assert alice.cmd(b'PUTSCRIPT "two" {%d}\r\n' % len(sync) + sync)[1].startswith("OK")
    assert alice.cmd("LISTSCRIPTS") == ([b'"one"', b'"two"'], "OK")
    assert alice.cmd('SETACTIVE "one"')[1] == "OK"
    assert alice.cmd("LISTSCRIPTS")[0] == [b'"one" ACTIVE', b'"two"']
    assert alice.cmd('GETSCRIPT "one"') == ([GOOD], "OK")
    assert alice.cmd('DELETESCRIPT "one"')[1].startswith("NO (ACTIVE)")
    assert alice.cmd('SETACTIVE "two"')[1] == "OK"
    assert alice.cmd('DELETESCRIPT "one"')[1] == "OK"
    assert alice.cmd('SETACTIVE ""')[1] == "OK"
    assert alice.cmd("LISTSCRIPTS")[0] == [b'"two"']
    assert alice.cmd('GETSCRIPT "one"')[1].startswith("NO (NONEXISTENT)")
    assert alice.cmd('SETACTIVE "one"')[1].startswith("NO (NONEXISTENT)")
    assert alice.cmd('DELETESCRIPT "one"')[1].startswith("NO (NONEXISTENT)")


def test_rename(alice):
    alice.cmd(b'PUTSCRIPT "one" ' + literal(b"keep;"))
    alice.cmd(b'PUTSCRIPT "two" ' + literal(b"discard;"))
    assert alice.cmd('RENAMESCRIPT "one" "two"')[1].startswith("NO (ALREADYEXISTS)")
    assert alice.cmd('RENAMESCRIPT "nope" "x"')[1].startswith("NO (NONEXISTENT)")
    assert alice.cmd('RENAMESCRIPT "one" "renamed"')[1] == "OK"
    assert alice.cmd('GETSCRIPT "renamed"') == ([b"keep;"], "OK")


def test_invalid_scripts_get_line_numbers_and_are_not_stored(alice):
    bad = b'require ["fileinto"];\r\nif true {\r\n  fileinto;\r\n}\r\n'
    _, final = alice.cmd(b'PUTSCRIPT "one" ' + literal(bad))
    assert final.startswith('NO "line 3:'), final
    assert alice.cmd("LISTSCRIPTS")[0] == []
    assert alice.cmd(b"CHECKSCRIPT " + literal(bad))[1].startswith('NO "line 3:')
    assert alice.cmd(b"CHECKSCRIPT " + literal(GOOD))[1].startswith("OK")
    assert alice.cmd(b"CHECKSCRIPT " + literal(b"keep;\xff\xfe"))[1] == \
        'NO "line 1: a script is UTF-8 text"'
    assert alice.cmd("LISTSCRIPTS")[0] == []


def test_quota_codes(alice):
    too_big = sieve.MAX_SCRIPT_SIZE + 1
    assert alice.cmd(f'HAVESPACE "one" {too_big}')[1].startswith("NO (QUOTA/MAXSIZE)")
    assert alice.cmd('HAVESPACE "one" 100')[1] == "OK"
    assert alice.cmd('HAVESPACE "one" lots')[1].startswith("NO")
    body = b"# " + b"x" * too_big + b"\r\nkeep;\r\n"
    # read through and thrown away: the connection stays in step
    assert alice.cmd(b'PUTSCRIPT "big" ' + literal(body))[1].startswith("NO (QUOTA/MAXSIZE)")
    assert alice.cmd("NOOP")[1].startswith("OK")
    from roost.storage.sieve.scripts import MAX_SCRIPTS
    names = [f"s{i}" for i in range(MAX_SCRIPTS)]
    try:
        for name in names:
            assert alice.cmd(f'PUTSCRIPT "{name}" ' .encode() + literal(b"keep;"))[1] \
                .startswith("OK")
        assert alice.cmd('HAVESPACE "another" 10')[1].startswith("NO (QUOTA/MAXSCRIPTS)")
        assert alice.cmd(b'PUTSCRIPT "another" ' + literal(b"keep;"))[1] \
            .startswith("NO (QUOTA/MAXSCRIPTS)")
        assert alice.cmd(b'PUTSCRIPT "s0" ' + literal(b"discard;"))[1].startswith("OK")
    finally:
        for name in names:
            alice.cmd(f'DELETESCRIPT "{name}"')


def test_names_and_literal_forms(alice):
    name = "Ünïcode \\ \"quoted\""
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    assert alice.cmd(f"PUTSCRIPT {quoted} ".encode() + literal(b"keep;"))[1].startswith("OK")
    assert alice.cmd("LISTSCRIPTS")[0] == [quoted.encode()]
    name_lit = name.encode()
    assert alice.cmd(b"GETSCRIPT " + literal(name_lit)) == ([b"keep;"], "OK")
    assert alice.cmd(b"DELETESCRIPT " + literal(name_lit))[1] == "OK"
    assert alice.cmd(b'PUTSCRIPT "bad\x01name" ' + literal(b"keep;"))[1].startswith("NO")
    assert alice.cmd(b'PUTSCRIPT "" ' + literal(b"keep;"))[1].startswith("NO")
    assert alice.cmd(b'PUTSCRIPT "one"')[1].startswith("NO")          # missing argument
    assert alice.cmd(b'PUTSCRIPT one ' + literal(b"keep;"))[1].startswith("NO")   # an atom


def test_vacation_script_is_shown_but_not_writable(alice):
    assert alice.cmd(b'PUTSCRIPT "vacation" ' + literal(b"keep;"))[1].startswith("NO")
    alice.cmd(b'PUTSCRIPT "one" ' + literal(b"keep;"))
    assert alice.cmd('RENAMESCRIPT "one" "vacation"')[1].startswith("NO")


# --- limits -----------------------------------------------------------------------------------

def test_line_too_long_is_bye(server):
    c = Raw(server.ports["managesieve"])
    c.send(b"NOOP " + b"x" * (70 * 1024) + b"\r\n")
    assert c.response()[1].startswith("BYE")
    assert c.closed()


def test_huge_literal_is_bye(server):
    c = Raw(server.ports["managesieve"])
    c.send(b"CHECKSCRIPT {99999999+}\r\n")
    assert c.response()[1].startswith("BYE")
    assert c.closed()


def test_unauthenticated_command_limit(server):
    c = Raw(server.ports["managesieve"])
    for _ in range(20):
        assert c.cmd("NOOP")[1].startswith("OK")
    assert c.cmd("NOOP")[1].startswith("BYE")
    assert c.closed()


def test_idle_timeout(server):
    c = Raw(server.ports["managesieve"])
    c.sock.settimeout(10)
    assert c.response()[1] == 'BYE "idle too long; closing"'       # after 3 s
    assert c.closed()


def test_scripts_are_per_account(server, alice):
    alice.cmd(b'PUTSCRIPT "one" ' + literal(b"keep;"))
    bob = Raw(server.ports["managesieve"])
    assert bob.plain(BOB, PASSWORDS[BOB])[1].startswith("OK")
    assert bob.cmd("LISTSCRIPTS")[0] == []
    assert bob.cmd('GETSCRIPT "one"')[1].startswith("NO (NONEXISTENT)")
    bob.close()


# --- a server that wants TLS even on loopback ------------------------------------------------

def test_cleartext_refused_without_tls(tmp_path):
    srv, cert = make_server(tmp_path, "[managesieve]\nloopback_cleartext = false\n")
    try:
        c = Raw(srv.ports["managesieve"])
        caps = capabilities(c.greeting[0])
        assert caps["SASL"] == "" and "STARTTLS" in caps
        assert c.plain(ALICE, PASSWORDS[ALICE])[1].startswith("NO (ENCRYPT-NEEDED)")
        lines, _ = c.starttls(ssl.create_default_context(cafile=cert))
        assert capabilities(lines)["SASL"] == "PLAIN LOGIN OAUTHBEARER"
        assert c.plain(ALICE, PASSWORDS[ALICE])[1].startswith("OK")
        c.close()
    finally:
        srv.stop()


def test_shutdown_says_bye(tmp_path):
    srv, _cert = make_server(tmp_path)
    try:
        c = Raw(srv.ports["managesieve"])
        assert c.plain(ALICE, PASSWORDS[ALICE])[1].startswith("OK")
        srv.proc.send_signal(signal.SIGTERM)
        assert c.response()[1] == 'BYE "the server is shutting down"'
        assert c.closed()
    finally:
        srv.stop()
