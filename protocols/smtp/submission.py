"""Mail submission (RFC 6409) on aiosmtpd, on the server's asyncio loop:
``--submission`` (port 587 style: STARTTLS, RFC 3207) and ``--submissions``
(TLS from the first byte, RFC 8314).

Owns the submission dialogue and its policy; what is accepted goes to the
outbound queue (``Outbound.submit``: local recipients are stored at once
through the delivery path, remote ones wait for the relay). Every store call
(sender and recipient checks, rate counts, the queue, the Sent copy) runs on
the server's worker pool through ``ctx.run``; passwords are checked by the
server's ``Authenticator``, whose penalties per (account, source) and per
source IMAP and JMAP share.

Design choices:

- TLS and cleartext, as the IMAP listener does with LOGINDISABLED: without
  TLS, AUTH is offered and accepted only on a loopback connection (local
  address 127/8 or ::1; ``[submission] loopback_cleartext = false`` turns
  that off). Off loopback, every command but EHLO, STARTTLS, NOOP and QUIT
  is answered ``530 5.7.0 Must issue a STARTTLS command first``, so no
  password and no message crosses a network in clear. REQUIRETLS is offered
  only once TLS is up.
- Nothing without AUTH: MAIL from an unauthenticated client is ``530 5.7.0
  Authentication required``; this is never a relay.
- AUTH: PLAIN and LOGIN (the account's password, or one of its app tokens
  as the password, as JMAP Basic allows), OAUTHBEARER (RFC 7628) and
  XOAUTH2 with an app token (``roost token add``). The token check is the
  ``token_account`` function the server passes in, so another token issuer
  plugs in there. A client is disconnected after ``MAX_AUTH_FAILURES``
  failed attempts, or at once when the Authenticator refuses it for earlier
  failures (``421 4.7.0``).
- Senders: MAIL FROM and every address of the ``From:`` and ``Sender:``
  header fields must be the account's address, an address that reaches the
  account (``Store.resolve``: aliases whose target it is, ``@domain``
  catch-alls, ``+detail``), or one of its JMAP identities. MAIL FROM
  otherwise, and the null sender, get ``553 5.7.1``; a header otherwise (or
  a message without a From: address) ``550 5.7.1`` at the end of DATA (553 is
  not a DATA reply in RFC 5321 section 4.3.2).
- What is added (prepended; no other byte changes): ``Message-ID`` and
  ``Date`` when missing, and one ``Received:`` line, ``by HOST (Roost) with
  ESMTPSA id ID``. It names neither the client's address, its EHLO name
  (often a LAN address literal) nor the account, and has no ``for <rcpt>``
  clause (which would reveal a Bcc recipient of a one-recipient message):
  less than Postfix's default, which shows EHLO name, reverse DNS and IP.
  ``Bcc:`` fields are removed from the copy sent to recipients and kept in
  the Sent copy (RFC 5322 section 3.6.3).
- Parameters: SIZE, BODY=7BIT|8BITMIME, SMTPUTF8 (on the Envelope), DSN
  (RFC 3461: RET, ENVID and ORCPT xtext-decoded and checked, NOTIFY),
  FUTURERELEASE (RFC 4865: HOLDFOR / HOLDUNTIL up to ``[submission]
  max_hold``; a time already past releases at once), REQUIRETLS (RFC
  8689) and AUTH= (RFC 4954, accepted and ignored). Bad syntax is ``501
  5.5.4``, an unknown parameter ``555 5.5.4``.
- Recipients: checked at RCPT: a malformed address (or CR, LF, NUL, other
  controls) ``501 5.1.3``; a local one that reaches nobody, or a remote one
  on the suppression list, ``550 5.1.1``; more than ``recipients_per_message``
  ``452 4.5.3`` (RFC 5321 section 4.5.3.1.10).
- Rate limits per account, counted from the queue (``Outbound.sent_since``)
  so they hold across processes and restarts, checked at MAIL and again
  before the message is queued (parallel connections can overshoot by the
  messages in flight between the two). Over the per-minute or per-hour
  count: ``450 4.7.1`` (the window reopens soon; a retry succeeds). Over a
  daily count (messages, or recipients): ``550 5.7.1``, so that the user's
  client shows it instead of retrying through the day.
- The Sent copy (``[submission] save_sent``): the message as submitted
  (with the Message-ID and Date added, Bcc kept, no Received) in the
  mailbox whose role is ``sent``, flagged \\Seen, through ``Delivery.store``.
  It is stored after the queue accepted the message; should it fail, the
  message is still sent (a retry would send it twice) and the failure is
  logged.
- Bounds on a client that has not logged in: ``unauthenticated_per_ip`` and
  ``unauthenticated_total`` connections (the two listeners together), the
  idle timeout ``unauthenticated_timeout`` between commands and
  ``PREAUTH_LIFETIME`` timeouts in all before it must have authenticated,
  aiosmtpd's limit of bogus commands, line lengths (``LINE_LIMIT`` for an
  OAuth token, ``command_size_limits`` per command). Authenticated, the idle
  timeout is ``AUTHENTICATED_TIMEOUT``.
- Logs: connections and logins as the other listeners log them, and each
  DATA as one "command" event at INFO (account, sender, recipient count,
  size, status): an outgoing message is worth a line at the default level.
- Shutdown (``Context.shutdown``): idle sessions get ``421 4.3.2`` at once;
  one whose store call is under way gets its reply first.
"""

import asyncio
import base64
import binascii
import collections
import datetime
import email.errors
import email.policy
import email.utils
import ipaddress
import itertools
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass, field

from aiosmtpd.smtp import SMTP, Envelope as _SMTPEnvelope

from roost.protocols import sasl
from roost.protocols.sasl import PreauthGate
from roost.protocols.smtp.session import SHUTDOWN, Session
from roost.storage import account_data
from roost.storage.accounts import normalise_address
from roost.storage.delivery import Incoming
from roost.storage.errors import InvalidName, MailboxNotFound
from roost.storage.outbound import Envelope, Recipient

log = logging.getLogger("roost.submission")

LINE_LIMIT = 16 * 1024          # a command line (AUTH with a long OAuth token)
COMMAND_LIMITS = {"MAIL": 2048, "RCPT": 2048, "AUTH": LINE_LIMIT}
MAX_AUTH_FAILURES = 3
AUTHENTICATED_TIMEOUT = 300     # RFC 5321 section 4.5.3.2.7
PREAUTH_LIFETIME = 5            # unauthenticated: closed after this many idle timeouts
MECHANISMS = ("PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2")
_conn_ids = itertools.count(1)

# RFC 2034: every reply but the greeting, the EHLO/HELO answer, 334 and 354
# carries an enhanced code; these are the defaults for aiosmtpd's own replies.
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_LOCAL = {False: re.compile(rf'^(?:[{_ATEXT}]+(?:\.[{_ATEXT}]+)*|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*")$'),
          True: re.compile(rf'^(?:[\x80-\U0010ffff{_ATEXT}]+(?:\.[\x80-\U0010ffff{_ATEXT}]+)*'
                           r'|"(?:[\x20\x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]|\\[\x20-\x7e])*")$')}
_LABEL = {False: re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"),
          True: re.compile(r"^[A-Za-z0-9\x80-\U0010ffff](?:[A-Za-z0-9\x80-\U0010ffff-]*"
                           r"[A-Za-z0-9\x80-\U0010ffff])?$")}
_KEYWORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
_VALUE = re.compile(r"^[\x21-\x3c\x3e-\x7e\x80-\U0010ffff]+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RFC3339 = re.compile(r"^\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)$")
_ATOM = re.compile(rf"^[{_ATEXT}]+$")


@dataclass
class Limits:
    max_size: int = 50 * 1024 * 1024
    messages_per_minute: int = 30       # 0: no limit, for each of these
    messages_per_hour: int = 300
    messages_per_day: int = 1000
    recipients_per_message: int = 100
    recipients_per_day: int = 2000
    max_hold: int = 7 * 86400           # FUTURERELEASE
    unauthenticated_per_ip: int = 10
    unauthenticated_total: int = 200
    unauthenticated_timeout: float = 60


@dataclass
class Context:
    """What the listeners share. ``run(fn, *args)`` runs blocking ``fn`` on
    the worker pool; ``auth`` is the server's Authenticator;
    ``token_account(token)`` (blocking) is the Account an app token belongs
    to, or None; ``tls`` the ``ssl.SSLContext`` (None: no STARTTLS)."""
    run: object
    auth: object
    token_account: object
    store: object
    outbound: object
    delivery: object
    hostname: str = "localhost"
    tls: object = None
    limits: Limits = field(default_factory=Limits)
    save_sent: bool = True
    loopback_cleartext: bool = True
    gate: PreauthGate = field(default_factory=PreauthGate)
    sessions: set = field(default_factory=set)
    closing: bool = False

    def shutdown(self):
        """The server stops: idle sessions get ``421`` now, busy ones after
        the reply to what they are doing (a message being queued is queued)."""
        self.closing = True
        for session in list(self.sessions):
            if not session.busy:
                session.close_with(SHUTDOWN)


@dataclass(frozen=True)
class _Refused:
    """A login refused here, before the Authenticator (its LoginResult's shape)."""
    account: object = None
    retry_after: float = 0.0
    busy: bool = False


_REFUSED = _Refused()


class Reply(Exception):
    """A reply that ends the command."""


class Transaction(_SMTPEnvelope):
    """aiosmtpd's envelope with what this server keeps of a mail transaction."""

    def __init__(self):
        super().__init__()
        self.recipients = []            # [Recipient]
        self.seen = set()
        self.ret = self.envid = None
        self.release_at = 0.0
        self.requiretls = False
        self.rcpts_today = 0


class _Handler:
    async def handle_exception(self, error):
        log.error("submission command failed: %s", error, exc_info=error)
        return "451 4.3.0 internal error; try again later"


class Submission(Session):
    """One submission connection (``implicit_tls``: on the submissions port)."""

    line_length_limit = LINE_LIMIT

    def __init__(self, ctx, implicit_tls=False):
        super().__init__(_Handler(), data_size_limit=ctx.limits.max_size, enable_SMTPUTF8=True,
                         decode_data=False, hostname=ctx.hostname, ident="Roost ESMTP",
                         tls_context=None if implicit_tls else ctx.tls,
                         timeout=ctx.limits.unauthenticated_timeout, auth_required=True,
                         loop=asyncio.get_running_loop())
        # aiosmtpd keeps these on the class and grows them per EHLO: ours are fixed.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit,
                                                           COMMAND_LIMITS)
        self.ctx = ctx
        self.proto = "submissions" if implicit_tls else "submission"
        self.secure = implicit_tls
        self.account = None
        self.auth_failures = 0
        self.ip = self.refused = None
        self.gated = False
        self.loopback = False
        self.conn_id, self.opened, self.bytes_in, self.bytes_out = next(_conn_ids), 0.0, 0, 0
        self._plain = False             # pushing the greeting or an EHLO/HELO answer
        self.busy = 0                   # store calls under way

    # --- connection -----------------------------------------------------------------

    def connection_made(self, transport):
        if self.transport is None:      # the TCP (or implicit TLS) connection
            peer = transport.get_extra_info("peername")
            local = transport.get_extra_info("sockname")
            self.ip = peer[0] if isinstance(peer, tuple) else "local"
            self.loopback = isinstance(local, tuple) and sasl.is_loopback(local[0])
            self.require_starttls = bool(self.tls_context) and not self.cleartext_ok()
            lim = self.ctx.limits
            self.refused = self.ctx.gate.enter(self.ip, lim.unauthenticated_per_ip,
                                               lim.unauthenticated_total)
            self.gated = self.refused is True
            self.opened = time.monotonic()
            self.ctx.sessions.add(self)
            log.info("connection open", extra={"event": "connection", "state": "open",
                                               "proto": self.proto, "conn": self.conn_id,
                                               "peer": self.ip})
            super().connection_made(transport)
        else:                           # STARTTLS done: a new session (RFC 3207 section 4.2)
            super().connection_made(transport)
            self.secure = True
            self.account = None

    def connection_lost(self, error):
        self.ctx.sessions.discard(self)
        if self.gated:
            self.ctx.gate.leave(self.ip)
            self.gated = False
        log.info("connection close", extra={
            "event": "connection", "state": "close", "proto": self.proto, "conn": self.conn_id,
            "peer": self.ip, "ms": round((time.monotonic() - self.opened) * 1000, 3),
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
            "account": self.account.address if self.account else None})
        super().connection_lost(error)

    def data_received(self, data):
        self.bytes_in += len(data)
        super().data_received(data)

    def cleartext_ok(self):
        """May AUTH (and mail) go without TLS? Only over loopback (as IMAP)."""
        return self.loopback and self.ctx.loopback_cleartext

    async def _handle_client(self):
        if self.ctx.closing:
            self.refused = "the server is shutting down"
        if self.refused is not True:
            self._plain = True
            await self.push(f"421 4.7.0 {self.hostname} {self.refused}")
            self.transport.close()
            return
        lifetime = self.ctx.limits.unauthenticated_timeout * PREAUTH_LIFETIME
        self._preauth = self.loop.call_later(lifetime, self._preauth_expired)
        self._plain = True
        try:
            await super()._handle_client()
        finally:
            self._preauth.cancel()

    def _preauth_expired(self):
        if self.account is None and self.transport is not None:
            self._say("421 4.7.0 authenticate sooner; closing")
            self.transport.close()

    def _create_envelope(self):
        return Transaction()

    # --- greeting, TLS -------------------------------------------------------------

    async def smtp_EHLO(self, hostname):
        if not await self._hello(hostname, "EHLO"):
            return
        lim = self.ctx.limits
        until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=lim.max_hold)
        lines = [self.hostname, "PIPELINING", f"SIZE {lim.max_size}", "8BITMIME", "SMTPUTF8",
                 "ENHANCEDSTATUSCODES", "DSN",
                 f"FUTURERELEASE {lim.max_hold} {until:%Y-%m-%dT%H:%M:%SZ}"]
        if self.tls_context is not None and not self.secure:
            lines.append("STARTTLS")
        if self.secure or self.cleartext_ok():
            lines.append("AUTH " + " ".join(MECHANISMS))
        if self.secure:
            lines.append("REQUIRETLS")
        await self._lines(lines)

    # --- AUTH ----------------------------------------------------------------------

    async def smtp_AUTH(self, arg):
        if await self.check_helo_needed("EHLO"):
            return
        if not self.session.extended_smtp:
            await self.push("503 5.5.1 AUTH needs EHLO first")
            return
        if not (self.secure or self.cleartext_ok()):
            await self.push("530 5.7.0 Must issue a STARTTLS command first")
            return
        if self.session.authenticated:
            await self.push("503 5.5.1 already authenticated")
            return
        if self.envelope.mail_from is not None:
            await self.push("503 5.5.1 AUTH is not allowed during a mail transaction")
            return
        parts = (arg or "").split(" ")
        if not parts[0] or len(parts) > 2:
            await self.push("501 5.5.4 Syntax: AUTH mechanism [initial-response]")
            return
        mechanism = parts[0].upper()
        if mechanism not in MECHANISMS:
            await self.push("504 5.5.4 unsupported authentication mechanism")
            return
        initial = parts[1] if len(parts) == 2 else None
        try:
            user, result = await getattr(self, "_auth_" + mechanism)(initial)
        except Reply as reply:
            await self.push(str(reply))
            return
        await self._auth_result(mechanism, user, result)

    async def _response(self, initial, challenge=b""):
        """One SASL client response, decoded: the initial response, or the
        answer to a ``334`` challenge."""
        if initial is None:
            await self.push(b"334 " + base64.b64encode(challenge))
            try:
                text = (await self._reader.readuntil(b"\n")).strip()
            except (asyncio.LimitOverrunError, asyncio.IncompleteReadError) as exc:
                if isinstance(exc, asyncio.LimitOverrunError):
                    self._say("500 5.5.6 authentication line too long; closing")
                self.transport.close()          # the session ends here
                raise asyncio.CancelledError() from None
        else:
            text = initial.encode("ascii", "replace")
            if text == b"=":
                return b""
        if text == b"*":
            raise Reply("501 5.7.0 authentication cancelled")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise Reply("501 5.5.2 cannot decode the base64 response") from None

    async def _auth_PLAIN(self, initial):
        try:
            authz, user, password = sasl.parse_plain(await self._response(initial))
        except ValueError as exc:
            raise Reply(f"501 5.5.2 {exc}") from None
        key = self.ctx.auth.account_key
        if authz and key(authz) != key(user):
            return user, _REFUSED               # no acting as another user
        return user, await self._password(user, password)

    async def _auth_LOGIN(self, initial):
        user = (await self._response(initial, b"Username:")).decode("utf-8", "replace")
        password = (await self._response(None, b"Password:")).decode("utf-8", "replace")
        return user, await self._password(user, password)

    async def _password(self, user, password):
        return await self.ctx.auth.login(user, password, self.ip, tokens=self.ctx.token_account)

    async def _auth_OAUTHBEARER(self, initial):
        user, token = parse_oauthbearer(await self._response(initial))
        result = await self._token(user, token)
        if result.account is None and not result.retry_after:
            # RFC 7628 section 3.2.2: an error challenge, answered by %x01.
            await self._error_challenge({"status": "invalid_token", "schemes": "bearer"})
        return user, result

    async def _auth_XOAUTH2(self, initial):
        user, token = parse_xoauth2(await self._response(initial))
        result = await self._token(user, token)
        if result.account is None and not result.retry_after:
            await self._error_challenge({"status": "401", "schemes": "bearer"})
        return user, result

    async def _error_challenge(self, doc):
        """The JSON challenge of a failed OAuth attempt; the client's answer
        (%x01, empty, or ``*``) is read and the attempt fails whatever it is."""
        try:
            await self._response(None, json.dumps(doc).encode())
        except Reply:
            pass

    async def _token(self, user, token):
        ctx = self.ctx

        def check():
            acct = ctx.token_account(token)
            if acct is None or (user and ctx.auth.account_key(user) != acct.address):
                return None
            return acct
        return await ctx.auth.token_login(self.ip, check, f"{user or ''}\0{token}")

    async def _auth_result(self, mechanism, user, result):
        report = self.ctx.auth.report
        if result.retry_after:
            report(self.proto, self.ip, user, mechanism, "busy" if result.busy else "blocked")
            if result.busy:
                await self.push("454 4.7.0 the server is busy; try again in a moment")
                return
            await self.push(f"421 4.7.0 too many failed logins; try again in "
                            f"{result.retry_seconds} seconds")
            self.transport.close()
            return
        if result.account is None:
            report(self.proto, self.ip, user, mechanism, "failed")
            self.auth_failures += 1
            await self.push("535 5.7.8 authentication credentials invalid")
            if self.auth_failures >= MAX_AUTH_FAILURES:
                self.transport.close()
            return
        report(self.proto, self.ip, user, mechanism, "ok")
        self.account = result.account
        self.session.authenticated = True
        self.session.auth_data = result.account.address
        if self.gated:
            self.ctx.gate.leave(self.ip)
            self.gated = False
        self._timeout_duration = AUTHENTICATED_TIMEOUT
        self._reset_timeout()
        await self.push("235 2.7.0 authentication successful")

    # --- the mail transaction ------------------------------------------------------

    async def _command_ok(self, arg, keyword):
        """Checks MAIL and RCPT share; returns the text after ``keyword``."""
        if await self.check_helo_needed():
            return None
        if not self.session.authenticated:
            await self.push("530 5.7.0 Authentication required")
            return None
        if _CONTROL.search(arg or ""):
            await self.push("501 5.1.3 control characters (CR, LF, NUL, ...) in the command")
            return None
        rest = self._strip_command_keyword(keyword, arg or "")
        if rest is None:
            await self.push(f"501 5.5.4 Syntax: {'MAIL FROM' if keyword == 'FROM:' else 'RCPT TO'}"
                            ":<address> [parameters]")
            return None
        return rest

    async def smtp_MAIL(self, arg):
        rest = await self._command_ok(arg, "FROM:")
        if rest is None:
            return
        txn = self.envelope
        if txn.mail_from is not None:
            await self.push("503 5.5.1 nested MAIL command")
            return
        txn = Transaction()           # self.envelope once the sender is accepted
        try:
            sender, params = split_path(rest)
            if sender == "":
                raise Reply("553 5.7.1 the null sender is for bounces; send from your address")
            self._mail_params(txn, params)
            check_address(sender, txn.smtp_utf8)
            allowed, use = await self._work(self._sender_and_usage, sender, time.time())
            if not allowed:
                raise Reply(f"553 5.7.1 <{sender}> is not an address of {self.account.address}")
            over = self._over_rate(use, adding=1)
            if over:
                raise Reply(over)
        except Reply as reply:
            await self.push(str(reply))
            return
        txn.rcpts_today = use["day"][1]
        txn.mail_from = sender
        self.envelope = txn
        await self.push("250 2.1.0 sender ok")

    def _mail_params(self, txn, params):
        lim = self.ctx.limits
        holds = [k for k in params if k in ("HOLDFOR", "HOLDUNTIL")]
        if len(holds) > 1:
            raise Reply("501 5.5.4 one of HOLDFOR and HOLDUNTIL, not both")
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit() or len(value) > 20:
                    raise Reply("501 5.5.4 SIZE wants a number of octets")
                if lim.max_size and int(value) > lim.max_size:
                    raise Reply(f"552 5.3.4 message size exceeds the limit of {lim.max_size} octets")
            elif key == "BODY":
                if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                    raise Reply("501 5.5.4 BODY must be 7BIT or 8BITMIME")
            elif key in ("SMTPUTF8", "REQUIRETLS"):
                if value is not None:
                    raise Reply(f"501 5.5.4 {key} takes no value")
                if key == "SMTPUTF8":
                    txn.smtp_utf8 = True
                elif not self.secure:
                    raise Reply("530 5.7.10 REQUIRETLS needs a TLS session")
                else:
                    txn.requiretls = True
            elif key == "RET":
                if value is None or value.upper() not in ("FULL", "HDRS"):
                    raise Reply("501 5.5.4 RET must be FULL or HDRS")
                txn.ret = value.upper()
            elif key == "ENVID":
                txn.envid = xtext_value(value, 100, "ENVID")
            elif key == "HOLDFOR":
                if value is None or not value.isdigit() or len(value) > 9:
                    raise Reply("501 5.5.4 HOLDFOR wants a number of seconds")
                if int(value) > lim.max_hold:
                    raise Reply(f"501 5.5.4 HOLDFOR exceeds the maximum of {lim.max_hold} seconds")
                txn.release_at = time.time() + int(value)
            elif key == "HOLDUNTIL":
                when = parse_rfc3339(value)
                if when is None:
                    raise Reply("501 5.5.4 HOLDUNTIL wants an RFC 3339 date-time")
                if when - time.time() > lim.max_hold:
                    raise Reply(f"501 5.5.4 HOLDUNTIL is more than {lim.max_hold} seconds away")
                txn.release_at = when
            elif key == "AUTH":
                if value is None or (value != "<>" and xtext_value(value, 500, "AUTH") is None):
                    raise Reply("501 5.5.4 AUTH wants <> or an xtext mailbox")
            else:
                raise Reply(f"555 5.5.4 MAIL parameter {key} is not supported")

    def _sender_and_usage(self, sender, now):
        """Blocking: may the account send as ``sender``, and what it sent lately."""
        allowed = may_send_as(self.ctx.store, self.account, sender)
        return allowed, usage(self.ctx.outbound, self.account.id, now) if allowed else None

    def _over_rate(self, use, adding=0):
        """The reply for a rate limit the account has reached, or None."""
        lim = self.ctx.limits
        if lim.messages_per_day and use["day"][0] >= lim.messages_per_day:
            return (f"550 5.7.1 daily limit of {lim.messages_per_day} messages reached; "
                    "try again tomorrow")
        if lim.recipients_per_day and use["day"][1] + adding > lim.recipients_per_day:
            return (f"550 5.7.1 daily limit of {lim.recipients_per_day} recipients reached; "
                    "try again tomorrow")
        for window, limit in (("hour", lim.messages_per_hour), ("minute", lim.messages_per_minute)):
            if limit and use[window][0] >= limit:
                return f"450 4.7.1 limit of {limit} messages per {window} reached; try again later"
        return None

    async def smtp_RCPT(self, arg):
        rest = await self._command_ok(arg, "TO:")
        if rest is None:
            return
        txn = self.envelope
        if txn.mail_from is None:
            await self.push("503 5.5.1 need MAIL before RCPT")
            return
        lim = self.ctx.limits
        try:
            address, params = split_path(rest)
            if not address:
                raise Reply("501 5.1.3 a recipient cannot be the null path")
            check_address(address, txn.smtp_utf8)
            rcpt = Recipient(address)
            for key, value in params.items():
                if key == "NOTIFY":
                    rcpt.notify = notify_value(value)
                elif key == "ORCPT":
                    rcpt.orcpt = orcpt_value(value)
                else:
                    raise Reply(f"555 5.5.4 RCPT parameter {key} is not supported")
            if lim.recipients_per_message and len(txn.recipients) >= lim.recipients_per_message:
                raise Reply(f"452 4.5.3 at most {lim.recipients_per_message} recipients per "
                            "message")
            if lim.recipients_per_day and \
                    txn.rcpts_today + len(txn.recipients) + 1 > lim.recipients_per_day:
                raise Reply(f"550 5.7.1 daily limit of {lim.recipients_per_day} recipients "
                            "reached; try again tomorrow")
        except Reply as reply:
            await self.push(str(reply))
            return
        if address.lower() in txn.seen:
            await self.push("250 2.1.5 recipient ok (already given)")
            return
        refused = await self._work(self._recipient_refused, address)
        if refused:
            await self.push(refused)
            return
        txn.seen.add(address.lower())
        txn.recipients.append(rcpt)
        txn.rcpt_tos.append(address)
        await self.push("250 2.1.5 recipient ok")

    def _recipient_refused(self, address):
        """Blocking: the reply refusing ``address`` now, or None."""
        domain = address.rpartition("@")[2]
        if domain.startswith("["):
            return f"550 5.1.2 <{address}>: address literals are not accepted here"
        if self.ctx.store.hosts_domain(domain):
            if not self.ctx.store.resolve(address):
                return f"550 5.1.1 <{address}>: no such user here"
            return None
        row = self.ctx.outbound.suppressed(address)
        if row is not None:
            when = time.strftime("%Y-%m-%d", time.gmtime(row["created"]))
            reason = _CONTROL.sub(" ", str(row.get("reason") or ""))[:200]
            return f"550 5.1.1 <{address}> is suppressed since {when}: {reason}"
        return None

    async def smtp_DATA(self, arg):
        if await self.check_helo_needed():
            return
        if not self.session.authenticated:
            await self.push("530 5.7.0 Authentication required")
            return
        txn = self.envelope

        async def accept(content):
            try:
                return await self._work(self._accept, txn, content)
            except Exception:  # noqa: BLE001 - storage trouble: the client keeps the message
                log.exception("queueing a submitted message")
                return "451 4.3.0 the message could not be queued; try again later"
        await self.receive_data(arg, txn.recipients, self.ctx.limits.max_size, accept, log,
                                proto=self.proto, account=self.account.address,
                                sender=txn.mail_from)

    def _accept(self, txn, content):
        """Blocking: check the header, queue the message, save the Sent copy;
        returns the reply."""
        account, store = self.account, self.ctx.store
        fields = header_fields(header_lines(content))
        try:
            authors = addresses_of(fields, "from")
            others = addresses_of(fields, "sender")
        except Reply as reply:
            return str(reply)
        if not authors:
            return "550 5.7.1 the message needs a From: header field with an address"
        checked = {txn.mail_from.lower()}
        for address in authors + others:
            if address.lower() not in checked:
                if not may_send_as(store, account, address):
                    return f"550 5.7.1 From: <{address}> is not an address of {account.address}"
                checked.add(address.lower())
        over = self._over_rate(usage(self.ctx.outbound, account.id, time.time()),
                               len(txn.recipients))
        if over:
            return over
        added = b""
        names = {name for name, _ in fields}
        if "message-id" not in names:
            added += b"Message-ID: <" + secrets.token_hex(12).encode() + b"@" + \
                self.hostname.encode() + b">\r\n"
        if "date" not in names:
            added += b"Date: " + email.utils.format_datetime(
                datetime.datetime.now(datetime.timezone.utc)).encode() + b"\r\n"
        env = Envelope(txn.mail_from, list(txn.recipients), account_id=account.id, ret=txn.ret,
                       envid=txn.envid, release_at=txn.release_at, requiretls=txn.requiretls,
                       smtputf8=bool(txn.smtp_utf8))
        queued = self.ctx.outbound.submit(env, self._received() + added + strip_bcc(content))
        if self.ctx.save_sent:
            self._save_sent(added + content)
        return f"250 2.0.0 queued as {queued.id}"

    def _received(self):
        date = email.utils.format_datetime(datetime.datetime.now(datetime.timezone.utc))
        protocol = "ESMTPSA" if self.secure else "ESMTPA"     # RFC 3848
        return (f"Received: by {self.hostname} (Roost) with {protocol} id {secrets.token_hex(6)};"
                f"\r\n\t{date}\r\n").encode("utf-8")

    def _save_sent(self, data):
        try:
            box = self.ctx.store.mailbox(self.account.id, role="sent")
            (result,) = self.ctx.delivery.store(Incoming(data, account=self.account,
                                                         mailboxes=(box,), flags=("\\Seen",)))
            if not result.ok:
                log.warning("the Sent copy of %s was not stored: %s %s", self.account.address,
                            result.status.value, result.reason)
        except MailboxNotFound:
            log.warning("%s has no Sent mailbox (role sent); no copy kept", self.account.address)
        except Exception:  # noqa: BLE001 - the message is queued; only the copy is lost
            log.exception("storing the Sent copy of %s", self.account.address)


# --- blocking policy helpers (worker threads) ---------------------------------------

def may_send_as(store, account, address):
    """Is ``address`` the account's, an address reaching it, or one of its identities?"""
    try:
        key = normalise_address(address)
    except InvalidName:
        return False
    if key == account.address:
        return True
    if any(acct.id == account.id for acct, _ in store.resolve(key)):
        return True
    return any(str(ident[2]).lower() == key
               for ident in account_data.identities_of(store, account.id))


def usage(outbound, account_id, now):
    """``{"minute"|"hour"|"day": (messages, recipients)}`` the account queued."""
    return {window: outbound.sent_since(account_id, now - seconds)
            for window, seconds in (("minute", 60), ("hour", 3600), ("day", 86400))}


# --- parsing -----------------------------------------------------------------------------

def split_path(text):
    """``(address, params)`` of ``<path> [SP params]`` ("" for ``<>``); raises Reply."""
    text = text.lstrip(" ")
    if not text.startswith("<"):
        # Some clients leave the brackets out; take the word as the path.
        address, _, rest = text.partition(" ")
        if not address or "<" in address or ">" in address:
            raise Reply("501 5.1.3 malformed address")
        return address, parse_params(rest)
    i, quoted = 1, False
    while i < len(text):
        c = text[i]
        if quoted and c == "\\":
            i += 1
        elif c == '"':
            quoted = not quoted
        elif c == ">" and not quoted:
            break
        i += 1
    else:
        raise Reply("501 5.1.3 malformed address: no closing >")
    path, rest = text[1:i], text[i + 1:]
    if rest and not rest.startswith(" "):
        raise Reply("501 5.1.3 malformed address")
    if path.startswith("@"):         # an old source route, "@a,@b:user@c": ignored
        _, colon, path = path.partition(":")
        if not colon:
            raise Reply("501 5.1.3 malformed source route")
    return path, parse_params(rest)


def check_address(address, utf8):
    """Raise Reply unless ``address`` is a mailbox RFC 5321 (and 6531) allows."""
    if not address.isascii() and not utf8:
        raise Reply("553 5.6.7 a non-ASCII address needs MAIL FROM with SMTPUTF8")
    try:
        address.encode("utf-8")
    except UnicodeEncodeError:
        raise Reply("501 5.1.3 the address is not UTF-8") from None
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise Reply(f"501 5.1.3 <{address}> is not an address")
    if len(local.encode()) > 64 or len(domain.encode()) > 255 or len(address.encode()) > 254:
        raise Reply(f"501 5.1.3 <{address}> is too long")
    if not _LOCAL[utf8].match(local):
        raise Reply(f"501 5.1.3 <{address}>: malformed local part")
    if domain.startswith("["):
        if not domain.endswith("]") or not _address_literal(domain[1:-1]):
            raise Reply(f"501 5.1.3 <{address}>: malformed address literal")
    elif not all(_LABEL[utf8].match(label) for label in domain.split(".")):
        raise Reply(f"501 5.1.3 <{address}>: malformed domain")


def _address_literal(text):
    if text[:5].upper() == "IPV6:":
        text = text[5:]
        try:
            return ipaddress.ip_address(text).version == 6
        except ValueError:
            return False
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def parse_params(text):
    """ESMTP parameters: ``{KEYWORD: value or None}``; raises Reply."""
    out = {}
    for item in text.split(" "):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not _KEYWORD.match(key) or (eq and not _VALUE.match(value)):
            raise Reply(f"501 5.5.4 malformed parameter {item[:40]!r}")
        key = key.upper()
        if key in out:
            raise Reply(f"501 5.5.4 parameter {key} given twice")
        out[key] = value if eq else None
    return out


def xtext_decode(value):
    """RFC 3461 section 4 xtext; raises ValueError."""
    out, i = [], 0
    while i < len(value):
        c = value[i]
        if c == "+":
            pair = value[i + 1:i + 3]
            if len(pair) != 2 or any(h not in "0123456789ABCDEF" for h in pair):
                raise ValueError("bad hexchar")
            out.append(chr(int(pair, 16)))
            i += 3
        elif "!" <= c <= "~" and c != "=":
            out.append(c)
            i += 1
        else:
            raise ValueError("not xtext")
    return "".join(out)


def xtext_value(value, limit, name):
    """A decoded xtext parameter of printable US-ASCII, at most ``limit`` long."""
    try:
        decoded = xtext_decode(value or "")
    except ValueError:
        raise Reply(f"501 5.5.4 {name} is not xtext") from None
    if not decoded or len(decoded) > limit or any(not " " <= c <= "~" for c in decoded):
        raise Reply(f"501 5.5.4 {name} must be 1 to {limit} printable ASCII characters")
    return decoded


def notify_value(value):
    words = [w.upper() for w in (value or "").split(",")]
    if words == ["NEVER"]:
        return "NEVER"
    if not words or len(set(words)) != len(words) or \
            any(w not in ("SUCCESS", "FAILURE", "DELAY") for w in words):
        raise Reply("501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
    return ",".join(words)


def orcpt_value(value):
    """``"addr-type;address"`` of an ORCPT parameter, the address xtext-decoded."""
    if value is None or len(value) > 500:
        raise Reply("501 5.5.4 ORCPT must be addr-type;xtext, at most 500 characters")
    kind, semi, encoded = value.partition(";")
    if not semi or not _ATOM.match(kind):
        raise Reply("501 5.5.4 ORCPT must be addr-type;xtext")
    return f"{kind};{xtext_value(encoded, 500, 'ORCPT')}"


def parse_rfc3339(value):
    """Seconds since the epoch of an RFC 3339 date-time, or None."""
    if not value or not _RFC3339.match(value):
        return None
    text = value.upper().replace("Z", "+00:00")
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def parse_xoauth2(data):
    try:
        return sasl.parse_xoauth2(data)
    except ValueError as exc:
        raise Reply(f"501 5.5.2 {exc}") from None


def parse_oauthbearer(data):
    try:
        return sasl.parse_oauthbearer(data)
    except ValueError as exc:
        raise Reply(f"501 5.5.2 {exc}") from None


# --- message data and header ----------------------------------------------------------

def header_lines(data):
    """The header section's lines, each with its line end (CRLF, or a bare LF),
    up to and without the empty line that ends it."""
    lines, pos = [], 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        end = len(data) if end < 0 else end + 1
        line = data[pos:end]
        if line in (b"\r\n", b"\n"):
            break
        lines.append(line)
        pos = end
    return lines


def header_fields(lines):
    """``[(lower-case name, unfolded value)]`` of header lines."""
    out = []
    for line in lines:
        text = line.rstrip(b"\r\n")
        if text[:1] in (b" ", b"\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + " " + text.strip().decode("utf-8", "replace"))
            continue
        name, colon, value = text.partition(b":")
        if colon and name.strip():
            out.append((name.strip().decode("ascii", "replace").lower(),
                        value.strip().decode("utf-8", "replace")))
    return out


def addresses_of(fields, name):
    """The addresses of every ``name`` field. A field two parsers (the
    ``email`` package's old and new one) read differently, or the new one
    finds invalid, is refused (Reply) rather than guessed at: what a reader's
    program shows as the author must be what was checked."""
    out = []
    for field_name, value in fields:
        if field_name != name:
            continue
        old = [addr for _, addr in email.utils.getaddresses([value]) if addr]
        try:
            header = email.policy.default.header_factory(name, value)
            new = [a.addr_spec for a in header.addresses]
        except Exception:  # noqa: BLE001 - any failure to parse is a refusal
            header, new = None, None
        if not old or header is None or \
                any(isinstance(d, email.errors.InvalidHeaderDefect) for d in header.defects) or \
                sorted(a.lower() for a in old) != sorted(a.lower() for a in new):
            raise Reply(f"550 5.7.1 the {name.capitalize()}: field does not parse as addresses")
        out.extend(old)
    return out


def strip_bcc(data):
    """``data`` without its header section's ``Bcc:`` fields (continuation
    lines too); every other byte as it was."""
    lines = header_lines(data)
    kept, dropping = [], False
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            if not dropping:
                kept.append(line)
            continue
        name, colon, _ = line.partition(b":")
        dropping = bool(colon) and name.strip().lower() == b"bcc"
        if not dropping:
            kept.append(line)
    if len(kept) == len(lines):
        return data
    return b"".join(kept) + data[sum(map(len, lines)):]
