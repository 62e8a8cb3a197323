"""Helpers for JMAP tests: a real ``roost serve`` with JMAP and LMTP on port 0,
two accounts, and a small client that speaks JMAP over httpx."""

import base64
import os
import socket
import struct

import httpx
import pytest

from roost.protocols.jmap import core
from tests.conftest import RoostServer, add_user

ALICE, BOB = "alice@example.org", "bob@example.org"
PASSWORDS = {ALICE: "alice-secret", BOB: "bob-secret"}
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail",
         "urn:ietf:params:jmap:submission", "urn:ietf:params:jmap:vacationresponse"]


def start(tmp_path_factory, name, listeners=("jmap", "lmtp")):
    data = tmp_path_factory.mktemp(name) / "data"
    for user, password in PASSWORDS.items():
        add_user(data, user, password)
    return RoostServer(data, listeners=listeners).start()


def fixtures(name, listeners=("jmap", "lmtp")):
    """A test module's fixtures: ``server`` (a started ``roost serve``) and the
    ``alice`` and ``bob`` JMAP clients on it, all module-scoped."""

    @pytest.fixture(scope="module")
    def server(tmp_path_factory):
        srv = start(tmp_path_factory, name, listeners=listeners)
        yield srv
        srv.stop()

    def client(user, fixture_name):
        @pytest.fixture(scope="module", name=fixture_name)
        def one(server):
            c = Client(server, user)
            yield c
            c.close()
        return one

    return server, client(ALICE, "alice"), client(BOB, "bob")


def process_call(using, backend, acct, name, **args):
    """One method call straight through ``core.process`` (no HTTP), with
    ``accountId`` filled in; returns the response's (name, arguments)."""
    args["accountId"] = f"A{acct.id}"
    (resp,) = core.process(backend, acct, {"using": using, "methodCalls": [[name, args, "0"]]}
                           )["methodResponses"]
    return resp[0], resp[1]


class Client:
    """One account's JMAP session."""

    def __init__(self, server, user, password=None):
        self.base = f"http://127.0.0.1:{server.ports['jmap']}"
        self.http = httpx.Client(auth=(user, password or PASSWORDS[user]), follow_redirects=True,
                                 timeout=30)
        self.session = self.http.get(self.base + "/.well-known/jmap").json()
        self.account = next(iter(self.session["accounts"]))
        self.user = user

    def close(self):
        self.http.close()

    def post(self, body, **kw):
        return self.http.post(self.session["apiUrl"], json=body, **kw)

    def request(self, *calls, using=USING):
        r = self.post({"using": using, "methodCalls": [list(c) for c in calls]})
        assert r.status_code == 200, r.text
        return r.json()["methodResponses"]

    def call(self, name, args=None, **kw):
        """One method call with ``accountId`` filled in; returns (name, result)."""
        args = dict(args or {}, **kw)
        args.setdefault("accountId", self.account)
        (resp,) = [r for r in self.request([name, args, "c"]) if r[2] == "c"][:1]
        return resp[0], resp[1]

    def ok(self, name, args=None, **kw):
        got, result = self.call(name, args, **kw)
        assert got == name, result
        return result

    def mailbox(self, role):
        boxes = self.ok("Mailbox/get")["list"]
        return next(b["id"] for b in boxes if b["role"] == role)

    def upload(self, data, ctype="application/octet-stream"):
        url = self.session["uploadUrl"].replace("{accountId}", self.account)
        r = self.http.post(url, content=data, headers={"Content-Type": ctype})
        assert r.status_code == 201, r.text
        return r.json()

    def draft(self, subject, body="hello", to=None, mailbox=None, **extra):
        created = self.ok("Email/set", create={"d": {
            "mailboxIds": {mailbox or self.mailbox("drafts"): True},
            "keywords": {"$draft": True}, "subject": subject,
            "from": [{"email": self.user}], "to": [{"email": to or self.user}],
            "textBody": [{"partId": "t", "type": "text/plain"}],
            "bodyValues": {"t": {"value": body}}, **extra}})
        assert created["created"], created
        return created["created"]["d"]["id"]


def lmtp_deliver(port, rcpt, message):
    """Deliver ``message`` over LMTP; returns the reply lines."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = sock.makefile("rb")

    def reply():
        lines = []
        while True:
            line = f.readline()
            lines.append(line)
            if line[3:4] != b"-":
                return lines
    reply()
    for cmd in (b"LHLO test", b"MAIL FROM:<sender@example.net>", b"RCPT TO:<" + rcpt.encode() + b">",
                b"DATA"):
        sock.sendall(cmd + b"\r\n")
        reply()
    body = message.replace(b"\n.", b"\n..")
    sock.sendall(body + (b".\r\n" if body.endswith(b"\r\n") else b"\r\n.\r\n"))
    out = reply()
    sock.sendall(b"QUIT\r\n")
    sock.close()
    return out


def message(subject, body="body text", msgid=None, extra=b""):
    msgid = msgid or base64.b32encode(os.urandom(10)).decode().lower()
    return (b"From: Sender <sender@example.net>\r\nTo: alice@example.org\r\n"
            b"Subject: " + subject.encode() + b"\r\nMessage-ID: <" + msgid.encode() +
            b"@example.net>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n" + extra +
            b"Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode() + b"\r\n")


class WebSocket:
    """A minimal RFC 6455 client (text frames only) for the JMAP subprotocol."""

    def __init__(self, port, path="/jmap/ws", headers=(), protocol="jmap"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if protocol:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}")
        lines += list(headers)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                break
            head += chunk
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        self.headers = head.decode("latin-1").lower()

    def send(self, text):
        payload = text.encode()
        mask = os.urandom(4)
        header = bytes([0x81])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed")
            buf += chunk
        return buf

    def recv(self):
        """The next text message (pings are answered and skipped)."""
        while True:
            b0, b1 = self._exact(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._exact(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._exact(8))[0]
            payload = self._exact(n)
            op = b0 & 0x0F
            if op == 0x1:
                return payload.decode()
            if op == 0x8:
                raise ConnectionError("closed by server")

    def close(self):
        self.sock.close()
