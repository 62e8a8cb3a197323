"""Helpers for IMAP tests: a running ``roost serve`` with an account, and a raw
transcript client that reads responses (literals included) up to the tagged reply."""

import re
import smtplib
import socket
import ssl

import pytest

from tests.conftest import RoostServer, SocketClient, add_user

USER, PASSWORD = "alice@example.org", "secret"


def start_server(data, listeners=("imap", "imaps", "lmtp"), users=((USER, PASSWORD),)):
    for address, password, *quota in users:
        add_user(data, address, password, *quota)
    return RoostServer(data, listeners=listeners).start()


def deliver(server, message, to=USER):
    with smtplib.LMTP("127.0.0.1", server.ports["lmtp"]) as lmtp:
        lmtp.sendmail("sender@example.net", [to], message)


_LITERAL = re.compile(rb"\{(\d+)\}\r\n$")


OPEN = []


def close_all():
    while OPEN:
        OPEN.pop().close()


class Wire(SocketClient):
    """A raw IMAP connection: ``cmd("a1 NOOP")`` returns the response lines
    (literals inlined) through the tagged one. ``close_all`` closes every one."""

    def __init__(self, port, host="127.0.0.1", tls=False, timeout=20, source=None):
        OPEN.append(self)
        sock = socket.create_connection((host, port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            sock = context.wrap_socket(sock)
        self.sock = sock
        self.file = sock.makefile("rb")
        self.greeting = self.line()

    def starttls(self):
        self.file.close()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.sock = context.wrap_socket(self.sock)
        self.file = self.sock.makefile("rb")

    def line(self):
        """One response line with any literals it carries inlined."""
        out = b""
        while True:
            chunk = self.file.readline()
            if not chunk:
                raise ConnectionError("connection closed after " + repr(out))
            out += chunk
            m = _LITERAL.search(chunk)
            if not m:
                return out.rstrip(b"\r\n")
            out += self.file.read(int(m.group(1)))

    def cmd(self, line, tag=None):
        tag = tag or line.split(" ", 1)[0]
        self.send(line + "\r\n")
        return self.until(tag)

    def until(self, tag):
        lines = []
        tag = tag.encode() if isinstance(tag, str) else tag
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def login(self, user=USER, password=PASSWORD):
        lines = self.cmd(f'L1 LOGIN "{user}" "{password}"')
        assert lines[-1].startswith(b"L1 OK"), lines
        return lines


@pytest.fixture(autouse=True)
def _close_connections():
    """Import into a test module: every Wire it opened is closed after each test."""
    yield
    close_all()
