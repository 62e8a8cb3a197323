"""LMTP (RFC 2033) on aiosmtpd, on the same asyncio loop as Twisted.

Owns the wire protocol and the mapping of delivery outcomes to replies. It
calls ``resolve`` and ``deliver`` (blocking store functions) through ``run``,
which puts them on a worker thread; it never touches the database or files.

aiosmtpd's LMTP gives one reply to DATA for all recipients, which RFC 2033
section 4.2 forbids, and reads message data one line at a time (a Python
loop per line: most of its CPU on big messages). ``LMTPServer.smtp_DATA``
replaces both: it reads data with the shared reader (``protocols.smtpdata``:
blocks up to each ``.<CRLF>``, pipelined commands left in the stream),
and writes one reply per accepted recipient in RCPT order. Every reply carries
an enhanced status code (RFC 2034), LHLO is required before mail, and a
recipient's ``+detail`` names the mailbox it goes to when that mailbox exists.
Recipients are resolved once, at RCPT; DATA delivers to what RCPT found.
Each connection and each DATA transaction is logged as one event
(roost.server.logs: "connection", and "command" with verb DATA).

Verdicts (``[inbound] lmtp_verdicts = "received"``): the MTA in front is
trusted, so the client's address, HELO name and verified reverse name are
read from the topmost ``Received:`` field it added (``received_client``:
Postfix's ``from HELO (RDNS [IP])``, ``[IPv6:...]`` addresses, Postfix's
``unknown`` RDNS, Exim's ``from RDNS ([IP] helo=HELO)`` and the variants
without a name). The handler's ``check(data, sender)`` (the server's, which
calls ``protocols.mailauth.inbound``) runs on the worker pool before
delivery and its results go with the message to ``deliver``. With "skip"
there is no ``check`` and nothing is added to the hot path.
"""

import asyncio
import itertools
import logging
import re
import time

from aiosmtpd.lmtp import LMTP

from roost.protocols.smtpdata import read_data  # noqa: F401 - also this module's API
from roost.storage import delivery as outcome

log = logging.getLogger("roost.lmtp")

MAX_RECIPIENTS = 1000
LINE_LIMIT = 64 * 1024
_conn_ids = itertools.count(1)

# An SMTP path: "<" [source route ":"] (quoted or plain local part) "@" domain ">" params
_PATH = re.compile(r'\s*<(?:@[^<>:"]*:)?((?:"(?:[^"\\\r\n]|\\.)*"|[^<>"\s])*)>(.*)$|\s*([^<>\s]+)(.*)$')
_HAS_ENHANCED = re.compile(r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3}\b")
_DEFAULT_ENHANCED = {
    "221": "2.0.0", "250": "2.0.0", "451": "4.3.0", "452": "4.3.1", "421": "4.3.2",
    "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
    "530": "5.7.0", "550": "5.1.1", "552": "5.3.4", "553": "5.1.3", "554": "5.3.0",
    "555": "5.5.4",
}


# Every reply about a recipient, by delivery status (RFC 2033 section 4.2, RFC 3463 codes).
REPLIES = {
    outcome.DELIVERED: "250 2.0.0 <{}> delivered",
    outcome.DUPLICATE: "250 2.0.0 <{}> delivered",
    outcome.NO_SUCH_USER: "550 5.1.1 <{}> no such user here",
    outcome.OVER_QUOTA: "552 5.2.2 <{}> mailbox is full",
    outcome.TOO_LARGE: "552 5.3.4 <{}> message too big",
    outcome.TEMPORARY: "451 4.3.0 <{}> temporary failure, try again later",
    outcome.DISCARDED: "250 2.0.0 <{}> delivered",        # the recipient's Sieve script discarded it
    outcome.REJECTED: "550 5.7.1 {reason}",               # Sieve reject/ereject (RFC 5429)
}


def reply_for(result):
    """The LMTP reply line of one recipient's ``DeliveryResult``. A Sieve
    rejection carries the script's reason (one line of printable ASCII, made
    so by ``storage.sieve.deliver``)."""
    template = REPLIES.get(result.status, REPLIES[outcome.TEMPORARY])
    if result.status is outcome.REJECTED:
        reason = " ".join("".join(c if " " <= c < "\x7f" else " " for c in result.reason).split())
        return template.format(reason=reason[:400] or "message refused")
    return template.format(result.recipient)


class LMTPServer(LMTP):
    line_length_limit = LINE_LIMIT

    def __init__(self, handler, **kwargs):
        kwargs.setdefault("enable_SMTPUTF8", True)
        kwargs.setdefault("decode_data", False)
        kwargs.setdefault("hostname", "roost")
        kwargs.setdefault("ident", "Roost LMTP")
        super().__init__(handler, **kwargs)
        self._plain_reply = False
        self.conn_id, self.opened, self.bytes_in, self.bytes_out = next(_conn_ids), 0.0, 0, 0
        self.peer = None

    # --- logs (the events and their fields: roost.server.logs) ------------------

    def connection_made(self, transport):
        super().connection_made(transport)
        self.event_handler.sessions.add(self)
        if self.peer is None:   # not again after STARTTLS
            peer = transport.get_extra_info("peername")
            self.peer = peer[0] if isinstance(peer, tuple) else str(peer or "local")
            self.opened = time.monotonic()
            log.info("connection open", extra={"event": "connection", "state": "open",
                                               "proto": "lmtp", "conn": self.conn_id,
                                               "peer": self.peer})

    def connection_lost(self, error):
        self.event_handler.sessions.discard(self)
        log.info("connection close", extra={
            "event": "connection", "state": "close", "proto": "lmtp", "conn": self.conn_id,
            "peer": self.peer, "ms": round((time.monotonic() - self.opened) * 1000, 3),
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out})
        super().connection_lost(error)

    def data_received(self, data):
        self.bytes_in += len(data)
        super().data_received(data)

    # --- the idle timeout: one timer per connection -----------------------------
    # aiosmtpd cancels its timer and makes a new one at every command (~4% of
    # the event loop's time at LMTP); here a command only moves the deadline,
    # and the timer, when it fires early, waits again for what is left.

    def _reset_timeout(self, duration=None):
        due = self.loop.time() + (duration or self._timeout_duration)
        handle = self._timeout_handle
        if handle is None or handle.cancelled() or due < handle.when():
            if handle is not None:
                handle.cancel()
            self._timeout_handle = self.loop.call_at(due, self._timeout_due)
        self._deadline = due

    def _timeout_due(self):
        if self.loop.time() < self._deadline:
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_due)
        else:
            self._timeout_cb()

    def _log_transaction(self, content, replies, started):
        if log.isEnabledFor(logging.DEBUG):
            delivered = sum(1 for r in replies if r[:1] == "2")
            log.debug("DATA", extra={
                "event": "command", "proto": "lmtp", "verb": "DATA", "conn": self.conn_id,
                "sender": self.envelope.mail_from, "rcpts": len(self.envelope.rcpt_tos),
                "delivered": delivered, "size": len(content) if content is not None else None,
                "outcome": "ok" if delivered == len(replies) else "partial" if delivered else "failed",
                "ms": round((time.monotonic() - started) * 1000, 3)})

    async def push(self, status):
        # RFC 2034: enhanced codes on every reply except the greeting, the LHLO
        # capability list and the 354 go-ahead.
        plain = self._plain_reply and status[:1] == "2"   # LHLO errors still get codes
        if isinstance(status, str) and not plain and not _HAS_ENHANCED.match(status):
            code = status[:3]
            if code in _DEFAULT_ENHANCED and status[3:4] in (" ", ""):
                status = f"{code} {_DEFAULT_ENHANCED[code]} {status[4:]}".rstrip()
        self.bytes_out += len(status) + 2
        await super().push(status)

    async def smtp_LHLO(self, arg):
        self._plain_reply = True
        try:
            await super().smtp_LHLO(arg)
        finally:
            self._plain_reply = False

    async def check_helo_needed(self, helo="LHLO"):
        return await super().check_helo_needed("LHLO")

    def _getaddr(self, arg):
        """``(address, rest)`` of a MAIL/RCPT argument; ``(None, None)`` when
        malformed. The null path comes back as ``"<>"``, as aiosmtpd does."""
        if not arg:
            return "", ""
        m = _PATH.match(arg)
        if m is None:
            return None, None
        if m.group(3) is not None:
            address, rest = m.group(3), m.group(4)
            if "@" not in address:
                return None, None
        else:
            address, rest = m.group(1), m.group(2)
            if not address:
                return "<>", rest
        if rest and not rest[:1].isspace():
            return None, None
        return address, rest

    async def smtp_DATA(self, arg):
        if await self.check_helo_needed():
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        started = time.monotonic()
        try:
            content = await read_data(self._reader, self.data_size_limit)
        except asyncio.IncompleteReadError:
            return  # the client went away mid-message: nothing was acknowledged
        if content is None:
            replies = ["552 5.3.4 Error: too much mail data"]
        else:
            self.envelope.original_content = self.envelope.content = content
            replies = await self.event_handler.deliver_data(self.envelope)
        self._log_transaction(content, replies, started)
        self._set_post_data_state()
        for reply in replies:
            await self.push(reply)
        if self.event_handler.stopping:
            await self.goodbye()

    # --- shutdown: transactions under way finish, no new one starts ------------

    @property
    def in_transaction(self):
        return self.envelope is not None and self.envelope.mail_from is not None

    async def smtp_MAIL(self, arg):
        if self.event_handler.stopping:
            await self.goodbye()
            return
        await super().smtp_MAIL(arg)

    async def goodbye(self):
        await self.push("421 4.3.2 Roost LMTP is shutting down, try again later")
        self.transport.close()


_RECEIVED_FROM = re.compile(r"^\s*from\s+(\S+)(?:\s+\(([^()]*(?:\([^()]*\)[^()]*)*)\))?",
                            re.IGNORECASE)
_BRACKETED = re.compile(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]")
_HELO_IN = re.compile(r"\bhelo[= ]\s*([^\s)\]]+)", re.IGNORECASE)


def received_client(data, limit=64 * 1024):
    """``(ip, helo, rdns)`` from the topmost Received field of ``data`` (the
    one the MTA in front added); ``("", "", "")`` when there is none or it
    names no address. ``rdns`` is "" when the MTA said ``unknown``."""
    head = data[:limit]
    m = re.search(rb"(?im)^received:(.*(?:\r?\n[ \t].*)*)", head.split(b"\r\n\r\n", 1)[0]
                  .split(b"\n\n", 1)[0])
    if m is None:
        return "", "", ""
    value = re.sub(r"\s+", " ", m.group(1).decode("utf-8", "replace"))
    f = _RECEIVED_FROM.match(value)
    if f is None:
        return "", "", ""
    first, inner = f.group(1), f.group(2) or ""
    ip_in = _BRACKETED.search(inner)
    before = inner[:ip_in.start()].split() if ip_in else []
    ip_in = ip_in or _BRACKETED.search(first)
    if ip_in is None:
        return "", "", ""
    ip = ip_in.group(1)
    helo_in = _HELO_IN.search(inner)
    if helo_in:                                  # Exim: from RDNS ([IP] helo=HELO)
        helo = helo_in.group(1)
        rdns = "" if first.startswith("[") else first
    else:                                        # Postfix, Sendmail: from HELO (RDNS [IP])
        helo = first
        rdns = before[0] if before else ""
    if rdns.lower() == "unknown" or rdns.startswith("["):
        rdns = ""
    return ip, helo.strip("[]") if helo.startswith("[") else helo, rdns.lower().rstrip(".")


class LMTPHandler:
    """aiosmtpd hooks: recipients checked at RCPT, one reply each after DATA."""

    def __init__(self, run, resolve, deliver, check=None):
        self.run = run          # async run(fn, *args) on a worker thread
        self.resolve = resolve  # address -> list of local targets
        self.deliver = deliver  # (data, recipients, sender, targets[, auth_headers, verdicts])
        self.check = check      # None, or (data, sender) -> (data, auth_headers, verdicts)
        self.sessions = set()   # open LMTPServer connections
        self.stopping = False

    def shutdown(self):
        """The server is stopping: idle connections get 421 now; one in a
        transaction after its replies (``busy`` counts those)."""
        self.stopping = True
        for session in list(self.sessions):
            if not session.in_transaction and session.transport is not None:
                asyncio.ensure_future(session.goodbye())

    @property
    def busy(self):
        return sum(1 for s in self.sessions if s.in_transaction)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        lines = [r[4:] for r in responses if r[4:] != "HELP"]
        lines += [x for x in ("8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES") if x not in lines]
        return [f"250-{x}" for x in lines[:-1]] + [f"250 {lines[-1]}"]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        try:
            targets = await self.run(self.resolve, address)
        except Exception:  # noqa: BLE001 - storage trouble is a temporary failure
            log.exception("resolving %s", address)
            return REPLIES[outcome.TEMPORARY].format(address)
        if not targets:
            return REPLIES[outcome.NO_SUCH_USER].format(address)
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        if not hasattr(envelope, "targets"):
            envelope.targets = {}
        envelope.targets[address] = targets
        return f"250 2.1.5 <{address}> recipient ok"

    async def deliver_data(self, envelope):
        """One reply per accepted recipient, in RCPT order."""
        rcpts = list(envelope.rcpt_tos)
        try:
            results = await self.run(self._check_and_deliver, envelope.content, rcpts,
                                     envelope.mail_from, getattr(envelope, "targets", None))
        except Exception:  # noqa: BLE001
            log.exception("delivery failed")
            return [REPLIES[outcome.TEMPORARY].format(r) for r in rcpts]
        return [reply_for(r) for r in results]

    def _check_and_deliver(self, data, rcpts, sender, targets):
        """On the worker pool: the verdicts, then delivery (one trip there,
        not two)."""
        extra = ()
        if self.check is not None:
            try:
                data, headers, verdicts = self.check(data, sender)
                extra = (headers, verdicts)
            except Exception:  # noqa: BLE001 - no verdicts rather than no delivery
                log.exception("verdicts failed; delivering without them")
        return self.deliver(data, rcpts, sender, targets, *extra)
