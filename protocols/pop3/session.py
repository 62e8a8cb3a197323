"""One POP3 connection (RFC 1939, 2449, 2595, 5034): its states, its
commands, its limits. The choices are in the package docstring.

Every store call runs on the server's worker pool through ``ctx.run``.
"""

import asyncio
import base64
import binascii
import logging
import time

from roost.protocols import sasl
from roost.protocols.linesession import LineSession
from roost.storage.errors import MailboxNotFound, MessageNotFound

log = logging.getLogger("roost.pop3")

PROTO = "pop3"
MAX_LINE = 4096                 # a command or SASL response line, CRLF included
MAX_AUTH_FAILURES = 3
MAX_PREAUTH_COMMANDS = 20       # commands before a login has succeeded
AUTHENTICATED_TIMEOUT = 600     # RFC 1939 section 3: at least 10 minutes
LEASE_TTL = 60                  # seconds a maildrop lease lasts unless renewed
LEASE_RENEW = 20                # ... and how often a live session renews it
MAX_SIZE_CACHE = 200_000        # messages whose wire size a process remembers


class Reply(Exception):
    """An ``-ERR`` answer to the running command; ``close`` ends the connection."""

    def __init__(self, text, code=None, close=False):
        super().__init__(text)
        self.text, self.code, self.close = text, code, close


def wire_size(data):
    """The octets RETR sends for ``data`` before dot-stuffing: every line
    ended by CRLF (a bare LF counts two), a final CRLF added if missing."""
    size = len(data) + data.count(b"\n") - data.count(b"\r\n")
    return size if data.endswith(b"\n") or not data else size + 2


def to_wire(data, lines=None):
    """``data`` as a multi-line response body: CRLF line ends, dot-stuffed,
    ending with the terminating ``.`` line. With ``lines`` (TOP): the header
    block, the empty line and that many lines of the body."""
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    if lines is not None:
        if data.startswith(b"\r\n"):
            end = 2
        else:
            end = data.find(b"\r\n\r\n")
            end = len(data) if end < 0 else end + 4
        pos = end
        for _ in range(lines):
            nxt = data.find(b"\r\n", pos)
            if nxt < 0:
                break
            pos = nxt + 2
        data = data[:pos]
    return (b"\r\n" + data).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"


class Session(LineSession):
    proto, log, authenticated_timeout = PROTO, log, AUTHENTICATED_TIMEOUT

    def __init__(self, ctx, reader, writer, implicit_tls=False):
        super().__init__(ctx, reader, writer, implicit_tls)
        self.user = None            # the name given by USER
        self.mailbox = None
        self.messages = []          # [(uid, size, message_id)]: message n is messages[n - 1]
        self.deleted = set()        # message numbers marked by DELE
        self.retrieved = set()      # ... and those RETR sent whole
        self.lease = None           # the maildrop lease's name while held
        self.holder = f"{ctx.holder}:{self.conn_id}"
        self._renewer = None

    # --- output -------------------------------------------------------------------

    def ok(self, text="", body=None):
        self.send(b"+OK" + (b" " + text.encode() if text else b"") + b"\r\n" + (body or b""))

    def capabilities(self):
        lines = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER"]
        if self.account is None:
            if not self.cleartext_refused():
                lines += ["USER", "SASL PLAIN"]
            if self.ctx.tls is not None and not self.tls:
                lines.append("STLS")
        lines.append(f"IMPLEMENTATION {self.ctx.implementation}")
        return "".join(line + "\r\n" for line in lines).encode() + b".\r\n"

    # --- the connection (LineSession.run) ------------------------------------------

    def greeting(self):
        return b"+OK Roost POP3 server ready\r\n"

    def refusal(self, text):
        return b"-ERR [SYS/TEMP] " + text.encode() + b"\r\n"

    async def ended(self):
        await self._release()

    async def read_line(self):
        """The next line without its CRLF (within the idle timeout), or raise
        Reply (closing) when it is too long or the client went away."""
        timeout = AUTHENTICATED_TIMEOUT if self.account else self.ctx.unauthenticated_timeout
        try:
            line = await asyncio.wait_for(self.reader.readline(), timeout)
        except asyncio.TimeoutError:
            raise Reply("idle too long; closing", close=True) from None
        except ValueError:      # longer than the stream's limit (MAX_LINE)
            raise Reply(f"line too long (at most {MAX_LINE} octets); closing", close=True) from None
        if not line.endswith(b"\n"):
            raise asyncio.IncompleteReadError(line, None)
        if len(line) > MAX_LINE:
            raise Reply(f"line too long (at most {MAX_LINE} octets); closing", close=True)
        return line.rstrip(b"\r\n")

    async def one(self):
        """Read and answer one command; True when the connection is to end."""
        verb, started = None, time.monotonic()
        try:
            line = await self.read_line()
            if self.account is None:
                self.preauth_commands += 1
                if self.preauth_commands > MAX_PREAUTH_COMMANDS:
                    raise Reply("too many commands without logging in; closing", close=True)
            verb, _, rest = line.decode("utf-8", "replace").partition(" ")
            verb = verb.upper()
            handler = getattr(self, "cmd_" + verb, None) if verb in COMMANDS else None
            if handler is None:
                raise Reply(f"unknown command {verb[:30]}")
            if verb not in ANY_STATE and (verb in TRANSACTION) != (self.account is not None):
                raise Reply("log in first" if self.account is None else
                            "not allowed after login")
            done = await handler(rest)
            outcome = "OK"
        except Reply as exc:
            outcome = "ERR"
            code = f"[{exc.code}] " if exc.code else ""
            self.send(f"-ERR {code}{exc.text}\r\n".encode())
            done = exc.close
        except (OSError, asyncio.IncompleteReadError):
            raise
        except Exception:  # noqa: BLE001 - Roost's fault: say so, keep the connection
            log.exception("POP3 %s failed", verb)
            outcome = "ERR"
            self.send(b"-ERR [SYS/TEMP] internal error; try again later\r\n")
            done = False
        if verb and log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", verb[:30], outcome, extra={
                "event": "command", "proto": PROTO, "conn": self.conn_id,
                "verb": verb if verb in COMMANDS else "unknown", "outcome": outcome,
                "ms": round((time.monotonic() - started) * 1000, 3),
                "account": self.account.address if self.account else None})
        return bool(done)

    # --- any state ----------------------------------------------------------------

    async def cmd_CAPA(self, rest):
        self.ok("Capability list follows", self.capabilities())

    async def cmd_QUIT(self, rest):
        if self.account is None:
            self.ok("Roost POP3 server signing off")
            return True
        # The UPDATE state (RFC 1939 section 6): the marked messages go, all
        # in one transaction, and only while this session still holds the lock.
        uids = [self.messages[n - 1][0] for n in sorted(self.deleted)]
        if uids:
            if not await self.ctx.run(self.ctx.store.renew_lease, self.lease, self.holder,
                                      LEASE_TTL):
                raise Reply("the maildrop lock was lost; no messages deleted", "IN-USE",
                            close=True)
            try:
                await self.ctx.run(self.ctx.store.remove, self.mailbox.id, uids)
            except MailboxNotFound:
                raise Reply("the INBOX is gone; no messages deleted", "SYS/PERM",
                            close=True) from None
            except Exception:  # noqa: BLE001 - nothing was removed: say so
                log.exception("POP3 QUIT: deleting %d messages failed", len(uids))
                raise Reply("some deleted messages not removed", "SYS/TEMP",
                            close=True) from None
        seen = [self.messages[n - 1][0] for n in sorted(self.retrieved - self.deleted)]
        if seen:        # downloaded ones are read, for the user's IMAP clients too
            try:
                await self.ctx.run(self.ctx.store.store_flags, self.mailbox.id, seen,
                                   ["\\Seen"], "add")
            except Exception:  # noqa: BLE001 - the deletions stand; flags are a courtesy
                log.warning("POP3 QUIT: marking %d messages seen failed", len(seen),
                            exc_info=True)
        left = len(self.messages) - len(self.deleted)
        self.ok(f"Roost POP3 server signing off ({left} messages left)")
        return True

    # --- AUTHORIZATION ------------------------------------------------------------

    async def cmd_STLS(self, rest):
        if self.ctx.tls is None or self.tls:
            raise Reply("TLS is not available here" if self.ctx.tls is None else
                        "TLS is already active")
        if self.pipelined_in_clear():
            raise Reply("nothing may follow STLS before the TLS handshake; closing", close=True)
        self.ok("Begin TLS negotiation")
        if not await self.start_tls():
            return True
        self.user = None        # RFC 2595 section 4: start again from scratch

    async def cmd_USER(self, rest):
        if self.cleartext_refused():
            raise Reply("use STLS first: no password without TLS here")
        if not rest.strip():
            raise Reply("USER takes a name")
        self.user = rest.strip()
        self.ok("send PASS")

    async def cmd_PASS(self, rest):
        if self.user is None:
            raise Reply("USER first")
        user, self.user = self.user, None
        # The password is the rest of the line, spaces and all.
        await self._login("USER", user, await self._password(user, rest))

    async def cmd_AUTH(self, rest):
        mechanism, _, initial = rest.strip().partition(" ")
        if not mechanism:       # the mechanisms, as some clients still ask
            self.ok("SASL mechanisms follow",
                    (b"" if self.cleartext_refused() else b"PLAIN\r\n") + b".\r\n")
            return
        if self.cleartext_refused():
            raise Reply("use STLS first: no password without TLS here")
        if mechanism.upper() != "PLAIN":
            raise Reply(f"unsupported mechanism {mechanism[:30]}")
        try:
            authz, user, password = sasl.parse_plain(await self._sasl_response(initial.strip()))
        except ValueError as exc:
            raise Reply(str(exc)) from None
        key = self.ctx.auth.account_key
        if authz and key(authz) != key(user):       # no acting as another user
            result = await self.ctx.auth.token_login(self.ip, lambda: None)
        else:
            result = await self._password(user, password)
        await self._login("PLAIN", user, result)

    async def _sasl_response(self, initial):
        """The client's response (RFC 5034 section 4): the initial one, ``=``
        for an empty one, or the line after an empty ``+`` challenge."""
        if not initial:
            self.send(b"+ \r\n")
            await self.writer.drain()
            initial = (await self.read_line()).decode("ascii", "replace").strip()
            if initial == "*":
                raise Reply("authentication cancelled")
        elif initial == "=":
            return b""
        try:
            return base64.b64decode(initial, validate=True)
        except (binascii.Error, ValueError):
            raise Reply("cannot decode the base64 response") from None

    async def _password(self, user, password):
        return await self.ctx.auth.login(user, password, self.ip, tokens=self.ctx.token_account)

    async def _login(self, mechanism, user, result):
        report = self.ctx.auth.report
        if result.retry_after:
            report(PROTO, self.ip, user, mechanism, "busy" if result.busy else "blocked")
            if result.busy:
                raise Reply("the server is busy; try again in a moment", "SYS/TEMP")
            raise Reply(f"too many failed logins; try again in {result.retry_seconds} seconds",
                        "SYS/TEMP", close=True)
        if result.account is None:
            report(PROTO, self.ip, user, mechanism, "failed")
            self.auth_failures += 1
            if self.auth_failures >= MAX_AUTH_FAILURES:
                raise Reply("authentication failed; too many attempts", "AUTH", close=True)
            raise Reply("authentication failed", "AUTH")
        report(PROTO, self.ip, user, mechanism, "ok")
        account, ctx = result.account, self.ctx
        lease = f"pop3:{account.id}"
        if not await ctx.run(ctx.store.take_lease, lease, self.holder, LEASE_TTL):
            raise Reply("the maildrop is in use by another session", "IN-USE")
        self.lease = lease
        try:
            self.mailbox, self.messages = await ctx.run(self._snapshot, account.id)
        except MailboxNotFound:
            await self._release()
            raise Reply("this account has no INBOX", "SYS/PERM") from None
        except BaseException:
            await self._release()
            raise
        self.account = account
        if self.gated:
            ctx.gate.leave(self.ip)
            self.gated = False
        self._renewer = asyncio.ensure_future(self._renew())
        self.ok(f"maildrop has {len(self.messages)} messages "
                f"({sum(m[1] for m in self.messages)} octets)")

    def _snapshot(self, account_id):
        """(blocking) The INBOX and ``[(uid, size as sent, message id)]``."""
        store, sizes = self.ctx.store, self.ctx.sizes
        box = store.mailbox(account_id, "INBOX")
        out = []
        for rec in store.records(box.id):
            # UIDs are never reused within one UIDVALIDITY (message ids may be)
            key = (box.id, box.uidvalidity, rec.uid)
            size = sizes.get(key)
            if size is None:
                try:
                    size = wire_size(store.read(box.id, rec.uid))
                except MessageNotFound:     # expunged meanwhile
                    continue
                if len(sizes) >= MAX_SIZE_CACHE:
                    sizes.clear()
                sizes[key] = size
            out.append((rec.uid, size, rec.message_id))
        return box, out

    async def _renew(self):
        """Keep the maildrop lease while the session lives; a lease lost (the
        process stalled past its lifetime and another took it) ends the
        session without deletions."""
        ctx = self.ctx
        while self.lease is not None:
            await asyncio.sleep(LEASE_RENEW)
            try:
                held = await ctx.run(ctx.store.renew_lease, self.lease, self.holder, LEASE_TTL)
            except Exception:  # noqa: BLE001 - the database is busy: try again soon
                log.warning("POP3: renewing the maildrop lease failed", exc_info=True)
                continue
            if not held:
                self.lease = None
                self.deleted.clear()
                self.writer.close()
                return

    async def _release(self):
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        if self.lease is not None:
            lease, self.lease = self.lease, None
            try:
                await self.ctx.run(self.ctx.store.release_lease, lease, self.holder)
            except Exception:  # noqa: BLE001 - it lapses after LEASE_TTL anyway
                log.warning("POP3: releasing the maildrop lease failed", exc_info=True)

    # --- TRANSACTION --------------------------------------------------------------

    def _number(self, text, allow_deleted=False):
        """Message number ``text`` (1-based), which must exist and not be deleted."""
        text = text.strip()
        if not text.isdigit() or len(text) > 10:
            raise Reply("a message number is expected")
        n = int(text)
        if not 1 <= n <= len(self.messages):
            raise Reply("no such message")
        if n in self.deleted and not allow_deleted:
            raise Reply("message already deleted")
        return n

    def _args(self, rest, low, high):
        args = rest.split()
        if not low <= len(args) <= high:
            raise Reply(f"wrong number of arguments ({low}{'' if low == high else f'-{high}'} expected)")
        return args

    def _listing(self, rest, value):
        args = self._args(rest, 0, 1)
        if args:
            n = self._number(args[0])
            self.ok(f"{n} {value(n)}")
            return
        body = "".join(f"{n} {value(n)}\r\n" for n in range(1, len(self.messages) + 1)
                       if n not in self.deleted)
        self.ok(f"{len(self.messages) - len(self.deleted)} messages", body.encode() + b".\r\n")

    async def cmd_STAT(self, rest):
        self._args(rest, 0, 0)
        live = [m for n, m in enumerate(self.messages, 1) if n not in self.deleted]
        self.ok(f"{len(live)} {sum(m[1] for m in live)}")

    async def cmd_LIST(self, rest):
        self._listing(rest, lambda n: self.messages[n - 1][1])

    async def cmd_UIDL(self, rest):
        validity = self.mailbox.uidvalidity
        self._listing(rest, lambda n: f"{validity}.{self.messages[n - 1][0]}")

    async def _content(self, n, lines=None):
        uid, size, _ = self.messages[n - 1]
        store, box = self.ctx.store, self.mailbox.id
        try:        # read and converted on the worker pool: a big message is no stall
            body = await self.ctx.run(lambda: to_wire(store.read(box, uid), lines))
        except MessageNotFound:
            raise Reply("this message was removed by another session") from None
        return size, body

    async def cmd_RETR(self, rest):
        (arg,) = self._args(rest, 1, 1)
        n = self._number(arg)
        size, body = await self._content(n)
        self.retrieved.add(n)
        self.ok(f"{size} octets", body)

    async def cmd_TOP(self, rest):
        arg, count = self._args(rest, 2, 2)
        n = self._number(arg)
        if not count.isdigit() or len(count) > 10:
            raise Reply("TOP takes a message number and a number of lines")
        _, body = await self._content(n, int(count))
        self.ok("top of message follows", body)

    async def cmd_DELE(self, rest):
        (arg,) = self._args(rest, 1, 1)
        n = self._number(arg)
        self.deleted.add(n)
        self.ok(f"message {n} deleted")

    async def cmd_NOOP(self, rest):
        self._args(rest, 0, 0)
        self.ok()

    async def cmd_RSET(self, rest):
        self._args(rest, 0, 0)
        self.deleted.clear()
        self.ok(f"maildrop has {len(self.messages)} messages "
                f"({sum(m[1] for m in self.messages)} octets)")


COMMANDS = {"CAPA", "QUIT", "STLS", "USER", "PASS", "AUTH", "STAT", "LIST", "UIDL", "RETR",
            "TOP", "DELE", "NOOP", "RSET"}
ANY_STATE = {"CAPA", "QUIT"}
TRANSACTION = {"STAT", "LIST", "UIDL", "RETR", "TOP", "DELE", "NOOP", "RSET"}
