"""Dovecot's authentication protocol (auth-client side, version 1), so that
Postfix's ``smtpd_sasl_type = dovecot`` logs SMTP clients in to Roost accounts.

Owns the wire protocol only; the password check is the server's
``Authenticator.login`` (server/auth.py), the one IMAP and JMAP use, so a
guesser is paced by the same per-(account, client address) and per-address
penalties whichever protocol it tries. Wire format (LF-terminated lines,
TAB-separated fields; Dovecot's doc/auth-protocol and Postfix's
xsasl_dovecot_server.c were read for it):

    C: VERSION 1 <minor>          C: CPID <pid>
    S: VERSION 1 2, MECH PLAIN plaintext, MECH LOGIN plaintext, SPID, CUID, COOKIE, DONE
    C: AUTH <id> <mech> service=smtp [nologin] [lip=..] [rip=..] [secured] [resp=<base64>]
    S: CONT <id> <base64>  ->  C: CONT <id> <base64>    (LOGIN's prompts; PLAIN without resp)
    S: OK <id> user=<account>   or   FAIL <id> reason=<text> [temp]

Choices:

- Mechanisms PLAIN and LOGIN, both flagged ``plaintext`` so Postfix's
  ``smtpd_sasl_security_options = noplaintext`` filters them. LOGIN takes an
  initial response as the user name, as Dovecot does. A PLAIN authorization
  identity other than the login name is refused (there are no master users).
- The client address for the penalties is ``rip=``, trusted only when the peer
  is local (a unix socket or loopback) or one of ``[auth] trusted_proxies``:
  anyone who can connect may name any address, so bind this listener to
  loopback or a socket path. From any other peer the peer's own address counts.
- Cleartext mechanisms need ``secured`` (Postfix sends it when the SMTP
  session has TLS) unless the client address is loopback, like Dovecot's
  ``disable_plaintext_auth``; Postfix's ``smtpd_tls_auth_only = yes`` keeps
  AUTH behind STARTTLS in the first place.
- Every request is treated as ``nologin`` (what Postfix sends): the answer is
  the account name, never a login hand-off to a master process. ``no-penalty``
  is ignored: penalties always apply. Parameters are taken as sent, without
  Dovecot 2.4's \\001 escapes (Postfix never sends them, and none of the values
  Roost reads may contain a TAB or LF).
- Bounds: lines of ``MAX_LINE`` bytes (Dovecot's own limit; a longer one
  closes the connection), ``MAX_REQUESTS`` requests under way per connection
  (more get FAIL ... temp), a client's CONT awaited ``CONT_TIMEOUT`` seconds,
  its VERSION ``HANDSHAKE_TIMEOUT``; replies are not read ahead of a client
  that does not read them.
  A reply comes within ``REPLY_WITHIN`` seconds, shorter than the 10 s Postfix
  waits: a login the penalties would hold longer gets FAIL ... temp (the
  penalty still stands, and the next attempt is paced by it). A line that
  breaks the protocol (before VERSION, unknown command, bad or duplicate id,
  CONT for a request that is not waiting) closes the connection, as Dovecot
  does; a bad request with a usable id gets FAIL.
"""

import asyncio
import base64
import binascii
import ipaddress
import itertools
import logging
import os
import secrets

log = logging.getLogger("roost.saslauth")

MAX_LINE = 16384          # bytes per line, LF included
MAX_REQUESTS = 16         # requests under way on one connection
CONT_TIMEOUT = 300        # seconds a request waits for the client's next CONT
REPLY_WITHIN = 8          # seconds before a login still under check is answered "temp"
HANDSHAKE_TIMEOUT = 30    # seconds from connecting to the client's VERSION
MECHANISMS = ("PLAIN", "LOGIN")
MAX_ID = 2 ** 32 - 1

_cuids = itertools.count(1)


class Refused(Exception):
    """A request answered FAIL: ``reason`` for the client, ``temp`` when it may retry."""

    def __init__(self, reason, temp=False):
        super().__init__(reason)
        self.reason = reason
        self.temp = temp


class ProtocolError(Exception):
    """A line that breaks the protocol: the connection is closed."""


async def serve(reader, writer, auth):
    """``asyncio.start_server`` callback: one Postfix (or Dovecot client) connection."""
    await Connection(reader, writer, auth).run()


def _decode(text, what):
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Refused(f"Invalid base64 data in {what}") from None


def _text(data, what):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(f"{what} is not UTF-8") from None


def plain_credentials(data):
    """RFC 4616 ``authzid NUL authcid NUL passwd`` -> ``(authzid, authcid, passwd)``."""
    parts = data.split(b"\0")
    if len(parts) != 3 or not parts[1]:
        raise Refused("Invalid PLAIN response")
    return tuple(_text(p, "PLAIN response") for p in parts)


def _ip(text):
    try:
        addr = ipaddress.ip_address((text or "").strip("[]"))
    except ValueError:
        return None
    return addr.ipv4_mapped or addr if addr.version == 6 else addr


class Connection:
    """One auth client: the handshake, then AUTH/CONT/CANCEL requests, each
    running as its own task (replies go out as they are ready)."""

    def __init__(self, reader, writer, auth):
        self.reader, self.writer, self.auth = reader, writer, auth
        peer = writer.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else None   # None: a unix socket
        local = self.peer is None or (_ip(self.peer) is not None and _ip(self.peer).is_loopback)
        self.trust_rip = local or auth.trusted_proxy(self.peer)
        self.version = False
        self.requests = {}     # id -> Request

    def send(self, *lines):
        if not self.writer.is_closing():
            self.writer.write("".join(line + "\n" for line in lines).encode("utf-8"))

    async def run(self):
        self.send("VERSION\t1\t2", *(f"MECH\t{m}\tplaintext" for m in MECHANISMS),
                  f"SPID\t{os.getpid()}", f"CUID\t{next(_cuids)}",
                  f"COOKIE\t{secrets.token_hex(16)}", "DONE")
        try:
            while True:
                try:
                    line = await asyncio.wait_for(self.reader.readuntil(b"\n"),
                                                  None if self.version else HANDSHAKE_TIMEOUT)
                except asyncio.IncompleteReadError:
                    break           # the client left (a partial last line is dropped)
                except asyncio.TimeoutError:
                    log.warning("auth client %s: no VERSION in %d s; closing",
                                self.peer or "(unix)", HANDSHAKE_TIMEOUT)
                    break
                except asyncio.LimitOverrunError:
                    log.warning("auth client %s: line longer than %d bytes; closing",
                                self.peer or "(unix)", MAX_LINE)
                    break
                try:
                    self.handle(line.rstrip(b"\r\n").decode("utf-8", "surrogateescape"))
                except ProtocolError as exc:
                    log.warning("auth client %s: %s; closing", self.peer or "(unix)", exc)
                    break
                await self.writer.drain()   # a client that does not read stops being read
        except (ConnectionError, OSError):
            pass
        finally:
            for request in list(self.requests.values()):
                request.task.cancel()
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    # --- commands ------------------------------------------------------------

    def handle(self, line):
        if not line:
            return
        cmd, *args = line.split("\t")
        if not self.version:
            if cmd != "VERSION" or len(args) < 2 or args[0] != "1":
                raise ProtocolError(f"expected VERSION 1, got {line[:40]!r}")
            self.version = True
        elif cmd == "CPID":
            if len(args) != 1 or not args[0].isdigit():
                raise ProtocolError("bad CPID")
        elif cmd == "AUTH":
            self.start(args)
        elif cmd == "CONT":
            rid = self.request_id(args)
            request = self.requests.get(rid)
            if request is None:
                self.send(f"FAIL\t{rid}\treason=Unknown request")
            elif request.waiting is None or request.waiting.done():
                raise ProtocolError(f"CONT for request {rid}, which is not waiting for one")
            else:
                request.waiting.set_result(args[1] if len(args) > 1 else "")
        elif cmd == "CANCEL":
            request = self.requests.pop(self.request_id(args), None)
            if request is not None:
                request.task.cancel()
        else:
            raise ProtocolError(f"unknown command {cmd[:20]!r}")

    @staticmethod
    def request_id(args):
        if not args or not args[0].isdigit() or len(args[0]) > 10 or int(args[0]) > MAX_ID:
            raise ProtocolError("bad request id")
        return int(args[0])

    def start(self, args):
        rid = self.request_id(args)
        if rid in self.requests:
            raise ProtocolError(f"duplicate request id {rid}")
        if len(self.requests) >= MAX_REQUESTS:
            self.send(f"FAIL\t{rid}\treason=Too many concurrent requests\ttemp")
            return
        opts, flags = {}, set()
        for param in args[2:]:
            name, eq, value = param.partition("=")
            if eq:
                opts[name] = value
            else:
                flags.add(param)
        request = Request(self, rid, args[1].upper() if len(args) > 1 else "", opts, flags)
        self.requests[rid] = request
        request.task = asyncio.ensure_future(request.run())
        request.task.add_done_callback(lambda _t: self.finished(request))

    def finished(self, request):
        if self.requests.get(request.rid) is request:
            del self.requests[request.rid]

    def source(self, rip):
        """The client address the penalties are kept for (see the module docstring)."""
        if rip:
            addr = _ip(rip) if self.trust_rip else _ip(self.auth.forwarded_ip(self.peer, rip))
            if addr is not None:
                return str(addr)
        return self.peer


class Request:
    """One AUTH request, from its first line to OK or FAIL."""

    def __init__(self, conn, rid, mech, opts, flags):
        self.conn, self.rid, self.mech, self.opts, self.flags = conn, rid, mech, opts, flags
        self.task = None
        self.waiting = None     # a Future for the client's next CONT

    async def run(self):
        try:
            account = await self.authenticate()
        except Refused as exc:
            self.conn.send(f"FAIL\t{self.rid}\treason={exc.reason}" + ("\ttemp" if exc.temp else ""))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a store error: the client may retry
            log.exception("auth request %s", self.rid)
            self.conn.send(f"FAIL\t{self.rid}\treason=Internal error\ttemp")
        else:
            self.conn.send(f"OK\t{self.rid}\tuser={account}")

    async def challenge(self, data):
        """Send CONT with ``data`` (bytes); the client's answer, decoded."""
        self.waiting = asyncio.get_running_loop().create_future()
        self.conn.send(f"CONT\t{self.rid}\t{base64.b64encode(data).decode()}")
        try:
            answer = await asyncio.wait_for(self.waiting, CONT_TIMEOUT)
        except asyncio.TimeoutError:
            raise Refused("Timed out waiting for the client") from None
        finally:
            self.waiting = None
        return _decode(answer, "continued response")

    async def authenticate(self):
        if self.mech not in MECHANISMS:
            raise Refused("Unsupported authentication mechanism")
        if not self.opts.get("service"):
            raise Refused("Missing service")
        source = self.conn.source(self.opts.get("rip"))
        local = source is None or (_ip(source) is not None and _ip(source).is_loopback)
        if "secured" not in self.flags and not local:
            raise Refused("Plaintext authentication disallowed on non-secure (SSL/TLS) connections")
        resp = self.opts.get("resp")
        initial = _decode(resp, "initial response") if resp is not None else None
        if self.mech == "PLAIN":
            authzid, user, password = plain_credentials(
                initial if initial is not None else await self.challenge(b""))
            if authzid and self.conn.auth.account_key(authzid) != self.conn.auth.account_key(user):
                self.report(source, user, "failed")
                raise Refused("Authorization identity differs from the login name")
        else:
            user = _text(initial or await self.challenge(b"Username:"), "user name")
            password = _text(await self.challenge(b"Password:"), "password")
        try:
            result = await asyncio.wait_for(self.conn.auth.login(user, password, source),
                                            REPLY_WITHIN)
        except asyncio.TimeoutError:
            self.report(source, user, "blocked")
            raise Refused("Too many failed logins; try again later", temp=True) from None
        if result.retry_after:
            self.report(source, user, "busy" if result.busy else "blocked")
            raise Refused("Server busy; try again later" if result.busy else
                          f"Too many failed logins; try again in {result.retry_seconds} s",
                          temp=True)
        if result.account is None:
            self.report(source, user, "failed")
            raise Refused("Authentication failed")
        self.report(source, user, "ok")
        return result.account.address

    def report(self, source, user, outcome):
        self.conn.auth.report("auth", source, user, self.mech, outcome)
