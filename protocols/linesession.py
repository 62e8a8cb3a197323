"""What Roost's two line-based servers, POP3 (``protocols.pop3``) and
ManageSieve (``protocols.sieve``), share: the context their connections
share (``LineContext``) and a connection's life (``LineSession.run``).

A connection first passes the pre-login gate (``sasl.PreauthGate``: per IP
and in all), is greeted, then runs ``one()`` (one command and its reply)
until it returns True; after each reply the client must read it within
``authenticated_timeout`` or is dropped. At the end it leaves the gate,
``ended()`` runs (the protocol's own cleanup), what is written is flushed
(5 s at most) and one "connection close" log line is written. A subclass
sets ``proto``, ``log`` and ``authenticated_timeout`` and gives
``greeting()``, ``refusal(text)`` and ``one()``.
"""

import asyncio
import itertools
import time
from dataclasses import dataclass, field

from roost.protocols.sasl import PreauthGate, is_loopback

_conn_ids = itertools.count(1)


@dataclass
class LineContext:
    """``run(fn, *args)`` runs blocking ``fn`` on the worker pool; ``auth`` is
    the server's Authenticator; ``token_account(token)`` (blocking) the
    Account of an app token or None; ``store`` the Store; ``tls`` an
    ``ssl.SSLContext`` for STARTTLS/STLS (None: none)."""
    run: object
    auth: object
    token_account: object
    store: object = None
    tls: object = None
    implementation: str = "Roost"
    loopback_cleartext: bool = True
    unauthenticated_per_ip: int = 10
    unauthenticated_total: int = 200
    unauthenticated_timeout: float = 60
    gate: PreauthGate = field(default_factory=PreauthGate)
    sessions: set = field(default_factory=set)
    closing: bool = False


class LineSession:
    proto = ""
    log = None
    authenticated_timeout = 600

    def __init__(self, ctx, reader, writer, implicit_tls=False):
        self.ctx, self.reader, self.writer = ctx, reader, writer
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        self.ip = peer[0] if isinstance(peer, tuple) else "local"
        self.loopback = isinstance(local, tuple) and is_loopback(local[0])
        self.tls = implicit_tls
        self.account = None
        self.auth_failures = 0
        self.preauth_commands = 0
        self.gated = False
        self.conn_id, self.opened = next(_conn_ids), time.monotonic()
        self.bytes_out = 0

    def send(self, data):
        self.bytes_out += len(data)
        self.writer.write(data)

    def cleartext_refused(self):
        """No TLS and not on loopback: passwords may not cross (as IMAP's LOGINDISABLED)."""
        return not self.tls and not (self.loopback and self.ctx.loopback_cleartext)

    def pipelined_in_clear(self):
        """Bytes already read past a STARTTLS/STLS line came in clear: run as
        if sent over TLS they would be command injection, so they are refused."""
        return bool(len(getattr(self.reader, "_buffer", b"")))

    async def start_tls(self):
        """The TLS handshake, once the go-ahead is written; False when it failed
        (the connection then ends)."""
        await self.writer.drain()
        try:
            await self.writer.start_tls(self.ctx.tls,
                                        ssl_handshake_timeout=self.ctx.unauthenticated_timeout)
        except (OSError, asyncio.TimeoutError):
            return False
        self.tls = True
        return True

    async def run(self):
        ctx = self.ctx
        refused = "the server is shutting down" if ctx.closing else \
            ctx.gate.enter(self.ip, ctx.unauthenticated_per_ip, ctx.unauthenticated_total)
        self.gated = refused is True
        ctx.sessions.add(self)
        self.log.info("connection open", extra={"event": "connection", "state": "open",
                                                "proto": self.proto, "conn": self.conn_id,
                                                "peer": self.ip})
        try:
            if refused is not True:
                self.send(self.refusal(refused))
                return
            self.send(self.greeting())
            while not await self.one():
                # a client that does not read what it asked for is dropped
                await asyncio.wait_for(self.writer.drain(), self.authenticated_timeout)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            pass        # gone, TLS broke, or stopped reading
        finally:
            ctx.sessions.discard(self)
            if self.gated:
                ctx.gate.leave(self.ip)
                self.gated = False
            await self.ended()
            try:
                await asyncio.wait_for(self.writer.drain(), 5)
            except (ConnectionError, asyncio.TimeoutError):
                pass
            self.writer.close()
            self.log.info("connection close", extra={
                "event": "connection", "state": "close", "proto": self.proto, "conn": self.conn_id,
                "peer": self.ip, "ms": round((time.monotonic() - self.opened) * 1000, 3),
                "bytes_out": self.bytes_out,
                "account": self.account.address if self.account else None})

    async def ended(self):
        """The protocol's cleanup when the connection ends (before it closes)."""
