"""One ManageSieve connection (RFC 5804): its state, its commands, its limits.

Owns the dialogue; what the commands change is ``storage.sieve.scripts`` (the
same list JMAP SieveScript edits), every store call on the server's worker
pool through ``ctx.run``. See the package docstring for the choices.
"""

import asyncio
import base64
import binascii
import json
import logging
import time

from roost.protocols import sasl
from roost.protocols.linesession import LineSession
from roost.storage import sieve
from roost.storage.errors import Conflict, InvalidName, QuotaExceeded
from roost.storage.sieve import scripts, vacation

from . import wire
from .wire import Str

log = logging.getLogger("roost.managesieve")

PROTO = "managesieve"
MECHANISMS = ("PLAIN", "LOGIN", "OAUTHBEARER")
MAX_AUTH_FAILURES = 3
MAX_PREAUTH_COMMANDS = 20       # commands before AUTHENTICATE must have succeeded
AUTHENTICATED_TIMEOUT = 1800    # idle seconds once logged in (RFC 5804 sets none)
try:    # delivery (storage.sieve.deliver) owns the number CAPABILITY announces
    from roost.storage.sieve.deliver import MAX_REDIRECTS
except ImportError:     # a tree without Sieve delivery yet: its planned bound
    MAX_REDIRECTS = 4


class Reply(Exception):
    """A ``NO`` (or ``BYE``) answer to the running command."""

    def __init__(self, text, code=None, kind="NO"):
        super().__init__(text)
        self.text, self.code, self.kind = text, code, kind


class Session(LineSession):
    proto, log, authenticated_timeout = PROTO, log, AUTHENTICATED_TIMEOUT

    # --- output -------------------------------------------------------------------

    def bye(self, text):
        """Shutdown: a BYE now, unless the connection is already closing."""
        if not self.writer.is_closing():
            self.send(wire.response("BYE", None, text))

    def capabilities(self):
        """The capability lines (RFC 5804 section 1.7), without the OK."""
        refused = self.cleartext_refused()
        lines = [("IMPLEMENTATION", self.ctx.implementation),
                 ("SASL", "" if refused or self.account else " ".join(MECHANISMS)),
                 ("SIEVE", " ".join(sieve.EXTENSIONS))]
        if self.ctx.tls is not None and not self.tls and self.account is None:
            lines.append(("STARTTLS", None))
        lines += [("NOTIFY", "mailto"), ("MAXREDIRECTS", str(MAX_REDIRECTS)),
                  ("UNAUTHENTICATE", None), ("VERSION", "1.0")]
        return b"".join(wire.string(k) + (b" " + wire.string(v) if v is not None else b"")
                        + b"\r\n" for k, v in lines)

    # --- the connection (LineSession.run) ------------------------------------------

    def greeting(self):
        return self.capabilities() + wire.response("OK", None, "Roost ManageSieve ready")

    def refusal(self, text):
        return wire.response("BYE", "TRYLATER", text)

    async def read(self):
        """The next command's items (within the idle timeout)."""
        timeout = AUTHENTICATED_TIMEOUT if self.account else self.ctx.unauthenticated_timeout
        return await asyncio.wait_for(wire.read_command(self.reader, sieve.MAX_SCRIPT_SIZE),
                                      timeout)

    async def one(self):
        """Read and answer one command; True when the connection is to end."""
        try:
            items = await self.read()
        except asyncio.TimeoutError:
            self.send(wire.response("BYE", None, "idle too long; closing"))
            return True
        except wire.Fatal as exc:
            self.send(wire.response("BYE", None, f"{exc}; closing"))
            return True
        except wire.Syntax as exc:
            items, syntax = None, exc
        if self.account is None:
            self.preauth_commands += 1
            if self.preauth_commands > MAX_PREAUTH_COMMANDS:
                self.send(wire.response("BYE", None, "too many commands without logging in"))
                return True
        if items is None:
            self.send(wire.response("NO", syntax.code, str(syntax)))
            return False
        if not items or not isinstance(items[0], str):
            self.send(wire.response("NO", None, "a command starts with its name"))
            return False
        verb, args = items[0].upper(), items[1:]
        started, outcome = time.monotonic(), "OK"
        handler = getattr(self, "cmd_" + verb, None)
        try:
            if handler is None or verb not in COMMANDS:
                raise Reply(f"unknown command {verb[:30]}")
            if (verb in AUTHENTICATED) != (self.account is not None) and verb not in ANY_STATE:
                raise Reply("log in first" if self.account is None else "already logged in")
            done = await handler(*self._check_args(verb, args))
        except Reply as exc:
            outcome = exc.kind
            self.send(wire.response(exc.kind, exc.code, exc.text))
            done = exc.kind == "BYE"
        except (OSError, asyncio.IncompleteReadError):
            raise
        except Exception:  # noqa: BLE001 - Roost's fault: say so, keep the connection
            log.exception("ManageSieve %s failed", verb)
            outcome = "NO"
            self.send(wire.response("NO", "TRYLATER", "internal error; try again later"))
            done = False
        self._log_command(verb, outcome, started)
        return bool(done)

    def _check_args(self, verb, args):
        """The arguments, checked against the command's shape: ``s`` a string,
        ``n`` a number, ``?`` makes the rest optional."""
        shape = COMMANDS[verb]
        need = shape.split("?")[0]
        if not len(need) <= len(args) <= len(shape.replace("?", "")):
            raise Reply(f"{verb} takes {len(need)}"
                        f"{'' if '?' not in shape else ' or more'} arguments")
        out = []
        for kind, arg in zip(shape.replace("?", ""), args):
            if kind == "s":
                if not isinstance(arg, Str):
                    raise Reply(f"{verb}: a string is expected, not {str(arg)[:30]}")
                out.append(arg)
            elif kind == "a":       # a SASL mechanism: an atom or a string
                out.append(bytes(arg).decode("ascii", "replace") if isinstance(arg, Str)
                           else arg)
            else:
                value = arg.decode("ascii", "replace") if isinstance(arg, Str) else arg
                if not value.isdigit() or len(value) > 10 or int(value) >= 2**32:
                    raise Reply(f"{verb}: a number is expected")
                out.append(int(value))
        return out

    def _log_command(self, verb, outcome, started):
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", verb[:30], outcome, extra={
                "event": "command", "proto": PROTO, "conn": self.conn_id,
                "verb": verb if verb in COMMANDS else "unknown", "outcome": outcome,
                "ms": round((time.monotonic() - started) * 1000, 3),
                "account": self.account.address if self.account else None})

    async def call(self, fn, *args):
        """A store call on the worker pool, its typed errors as replies."""
        try:
            return await self.ctx.run(fn, self.ctx.store, self.account.id, *args)
        except sieve.SieveError as exc:
            raise Reply(str(exc)) from None
        except scripts.ScriptActive:
            raise Reply("the active script cannot be deleted; SETACTIVE \"\" first",
                        "ACTIVE") from None
        except scripts.ScriptNotFound:
            raise Reply("there is no script of that name", "NONEXISTENT") from None
        except QuotaExceeded as exc:
            raise Reply(str(exc), "QUOTA/MAXSCRIPTS") from None
        except InvalidName as exc:
            raise Reply(str(exc)) from None
        except Conflict as exc:
            raise Reply(str(exc), "ALREADYEXISTS") from None

    # --- any state ------------------------------------------------------------------

    async def cmd_CAPABILITY(self):
        self.send(self.capabilities() + wire.response("OK"))

    async def cmd_NOOP(self, tag=None):
        code = b"TAG " + wire.string(tag) if tag is not None else None
        self.send(wire.response("OK", code, "Done"))

    async def cmd_LOGOUT(self):
        self.send(wire.response("OK", None, "Logout completed"))
        return True

    # --- not authenticated ------------------------------------------------------------

    async def cmd_STARTTLS(self):
        if self.ctx.tls is None or self.tls:
            raise Reply("TLS is not available here" if self.ctx.tls is None else
                        "TLS is already active")
        if self.pipelined_in_clear():
            raise Reply("nothing may follow STARTTLS before the TLS handshake", kind="BYE")
        self.send(wire.response("OK", None, "begin TLS negotiation now"))
        if not await self.start_tls():
            return True
        # RFC 5804 section 2.2: the capabilities again, over TLS.
        self.send(self.capabilities() + wire.response("OK", None, "TLS is active"))

    async def cmd_AUTHENTICATE(self, mechanism, initial=None):
        mechanism = mechanism.upper()
        if self.cleartext_refused():
            raise Reply("use STARTTLS first", "ENCRYPT-NEEDED")
        if mechanism not in MECHANISMS:
            raise Reply(f"unsupported mechanism {mechanism[:30]}")
        user, result = await getattr(self, "_auth_" + mechanism)(initial)
        report = self.ctx.auth.report
        if result.retry_after:
            report(PROTO, self.ip, user, mechanism, "busy" if result.busy else "blocked")
            if result.busy:
                raise Reply("the server is busy; try again in a moment", "TRYLATER")
            raise Reply(f"too many failed logins; try again in {result.retry_seconds} seconds",
                        "TRYLATER", kind="BYE")
        if result.account is None:
            report(PROTO, self.ip, user, mechanism, "failed")
            self.auth_failures += 1
            if self.auth_failures >= MAX_AUTH_FAILURES:
                raise Reply("authentication failed; too many attempts", kind="BYE")
            raise Reply("authentication failed")
        report(PROTO, self.ip, user, mechanism, "ok")
        self.account = result.account
        if self.gated:
            self.ctx.gate.leave(self.ip)
            self.gated = False
        self.send(wire.response("OK", None, "Logged in"))

    async def _response(self, initial, challenge=b""):
        """One SASL client response, decoded (the initial one, or the answer
        to a challenge sent as a string)."""
        if initial is None:
            self.send(wire.string(base64.b64encode(challenge)) + b"\r\n")
            try:
                items = await self.read()
            except wire.Syntax:
                raise Reply("authentication cancelled: malformed response") from None
            except asyncio.TimeoutError:
                raise Reply("idle too long; closing", kind="BYE") from None
            if len(items) != 1 or not isinstance(items[0], Str):
                raise Reply("authentication cancelled: a response is one string")
            initial = items[0]
            if initial == b"*":
                raise Reply("authentication cancelled")
        try:
            return base64.b64decode(bytes(initial), validate=True)
        except (binascii.Error, ValueError):
            raise Reply("cannot decode the base64 response") from None

    async def _auth_PLAIN(self, initial):
        try:
            authz, user, password = sasl.parse_plain(await self._response(initial))
        except ValueError as exc:
            raise Reply(str(exc)) from None
        key = self.ctx.auth.account_key
        if authz and key(authz) != key(user):
            return user, await self._refused()       # no acting as another user
        return user, await self._password(user, password)

    async def _auth_LOGIN(self, initial):
        user = (await self._response(initial, b"Username:")).decode("utf-8", "replace")
        password = (await self._response(None, b"Password:")).decode("utf-8", "replace")
        return user, await self._password(user, password)

    async def _refused(self):
        return await self.ctx.auth.token_login(self.ip, lambda: None)

    async def _password(self, user, password):
        return await self.ctx.auth.login(user, password, self.ip, tokens=self.ctx.token_account)

    async def _auth_OAUTHBEARER(self, initial):
        user, token = parse_oauthbearer(await self._response(initial))
        ctx = self.ctx

        def check():
            acct = ctx.token_account(token)
            if acct is None or (user and ctx.auth.account_key(user) != acct.address):
                return None
            return acct
        result = await ctx.auth.token_login(self.ip, check, f"{user or ''}\0{token}")
        if result.account is None and not result.retry_after:
            # RFC 7628 section 3.2.2: an error challenge; the client's answer
            # (%x01, or "*") ends the exchange, which fails either way.
            try:
                await self._response(None, json.dumps(
                    {"status": "invalid_token", "schemes": "bearer"}).encode())
            except Reply:
                pass
        return user, result

    # --- authenticated ---------------------------------------------------------------

    async def cmd_UNAUTHENTICATE(self):
        self.account = None
        self.preauth_commands = 0
        self.send(wire.response("OK", None, "back to the non-authenticated state"))

    async def cmd_HAVESPACE(self, name, size):
        name = _name(name)
        if size > sieve.MAX_SCRIPT_SIZE:
            raise Reply(f"a script is at most {sieve.MAX_SCRIPT_SIZE} octets", "QUOTA/MAXSIZE")
        await self.call(scripts.check_space, name, size)
        self.send(wire.response("OK"))

    async def cmd_PUTSCRIPT(self, name, content):
        name = _writable(_name(name))
        text = _script(content)
        await self.call(scripts.put_script, name, text)
        self.send(wire.response("OK", None, "script stored"))

    async def cmd_CHECKSCRIPT(self, content):
        await self.call(_compile, _script(content))
        self.send(wire.response("OK", None, "the script is valid"))

    async def cmd_LISTSCRIPTS(self):
        found = await self.call(scripts.list_scripts)
        self.send(b"".join(wire.string(s.name) + (b" ACTIVE" if s.active else b"") + b"\r\n"
                           for s in found) + wire.response("OK"))

    async def cmd_SETACTIVE(self, name):
        if name == b"":
            await self.call(scripts.activate, None)
        else:
            name = _name(name)
            # The store only holds scripts that compiled, but compile may have
            # grown stricter since: a script that fails now is not activated.
            script = await self.call(scripts.get_script, name)
            await self.call(_compile, script.content)
            await self.call(scripts.activate, name)
        self.send(wire.response("OK"))

    async def cmd_GETSCRIPT(self, name):
        script = await self.call(scripts.get_script, _name(name))
        data = script.content.encode("utf-8", "surrogateescape")
        self.send(b"{%d}\r\n" % len(data) + data + b"\r\n" + wire.response("OK"))

    async def cmd_DELETESCRIPT(self, name):
        await self.call(scripts.delete_script, _name(name))
        self.send(wire.response("OK"))

    async def cmd_RENAMESCRIPT(self, old, new):
        old, new = _writable(_name(old)), _writable(_name(new))
        await self.call(scripts.rename_script, old, new)
        self.send(wire.response("OK"))


# command -> argument shape (see Session._check_args)
COMMANDS = {"CAPABILITY": "", "NOOP": "?s", "LOGOUT": "", "STARTTLS": "",
            "AUTHENTICATE": "a?s", "UNAUTHENTICATE": "", "HAVESPACE": "sn", "PUTSCRIPT": "ss",
            "CHECKSCRIPT": "s", "LISTSCRIPTS": "", "SETACTIVE": "s", "GETSCRIPT": "s",
            "DELETESCRIPT": "s", "RENAMESCRIPT": "ss"}
ANY_STATE = {"CAPABILITY", "NOOP", "LOGOUT"}
AUTHENTICATED = {"UNAUTHENTICATE", "HAVESPACE", "PUTSCRIPT", "CHECKSCRIPT", "LISTSCRIPTS",
                 "SETACTIVE", "GETSCRIPT", "DELETESCRIPT", "RENAMESCRIPT"}


def _compile(_store, _account_id, text):
    sieve.compile(text)


def _name(data):
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise Reply("a script name is UTF-8") from None


def _writable(name):
    if vacation.is_reserved(name):
        raise Reply(f'"{name}" is the VacationResponse script; change it with JMAP '
                    "VacationResponse/set")
    return name


def _script(data):
    if len(data) > sieve.MAX_SCRIPT_SIZE:
        raise Reply(f"a script is at most {sieve.MAX_SCRIPT_SIZE} octets", "QUOTA/MAXSIZE")
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        line = bytes(data)[:exc.start].count(b"\n") + 1
        raise Reply(f"line {line}: a script is UTF-8 text") from None


def parse_oauthbearer(data):
    try:
        return sasl.parse_oauthbearer(data)
    except ValueError as exc:
        raise Reply(str(exc)) from None
