"""What Roost's two SMTP servers, submission (``submission.py``) and the
MX-facing edge (``edge.py``), share on top of aiosmtpd's ``SMTP``: enhanced
status codes added to every reply (RFC 2034; none on the EHLO/HELO lines),
replies that never echo bytes that were not UTF-8, HELO and the start of
EHLO, STARTTLS refusals, the idle timeout's 421, and blocking work on the
worker pool that ends the session with a 421 once the server is shutting
down (after the reply the caller is about to write), and the DATA step
(``receive_data``: checks, 354, the bounded read, the reply and its log line).

A subclass sets ``ctx`` (with ``run`` and ``closing``), ``busy = 0`` and
``_plain = False`` in its ``__init__``, and gives ``_create_envelope``.
"""

import asyncio
import re
import time

from aiosmtpd.smtp import SMTP

from roost.protocols.smtpdata import read_data

HAS_ENHANCED = re.compile(r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3}(\s|$)")
DEFAULT_ENHANCED = {
    "220": "2.0.0", "221": "2.0.0", "250": "2.0.0", "252": "2.0.0", "421": "4.3.2", "451": "4.3.0",
    "454": "4.7.0", "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1",
    "504": "5.5.4", "530": "5.7.0", "535": "5.7.8", "538": "5.7.11", "550": "5.0.0",
    "552": "5.3.4", "553": "5.1.3", "554": "5.0.0", "555": "5.5.4",
}
SHUTDOWN = "421 4.3.2 the server is shutting down"


class Session(SMTP):
    def _timeout_cb(self):
        self._say("421 4.4.2 idle too long; closing")
        super()._timeout_cb()

    def close_with(self, line):
        if self.transport is not None and not self.transport.is_closing():
            self._say(line)
            self.transport.close()

    def _say(self, line):
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(line.encode() + b"\r\n")

    async def _work(self, fn, *args):
        """Blocking ``fn(*args)`` on the worker pool."""
        self.busy += 1
        try:
            return await self.ctx.run(fn, *args)
        finally:
            self.busy -= 1
            if self.ctx.closing:
                self.loop.call_soon(self.close_with, SHUTDOWN)

    async def push(self, status):
        if isinstance(status, str):
            # A reply may quote what the client sent: bytes that were not
            # UTF-8 (surrogate escapes) are not sent back.
            status = status.encode("utf-8", "replace").decode("utf-8")
            if self._plain:
                self._plain = status[:1] == "2" and status[3:4] == "-"   # the rest of a greeting
            elif not HAS_ENHANCED.match(status):
                code = status[:3]
                if code in DEFAULT_ENHANCED and status[3:4] in (" ", ""):
                    status = f"{code} {DEFAULT_ENHANCED[code]} {status[4:]}".rstrip()
        self.bytes_out += len(status) + 2
        await super().push(status)

    async def _lines(self, lines):
        """A multi-line 250 without enhanced codes (EHLO, HELO)."""
        for i, line in enumerate(lines):
            self._plain = True
            await self.push(("250 " if i == len(lines) - 1 else "250-") + line)
        self._plain = False

    async def smtp_HELO(self, hostname):
        if await self._hello(hostname, "HELO"):
            await self._lines([self.hostname])

    async def _hello(self, hostname, verb):
        """The common start of HELO and EHLO: False when refused."""
        if not hostname:
            await self.push(f"501 5.5.4 Syntax: {verb} hostname")
            return False
        self._set_rset_state()
        self.session.extended_smtp = verb == "EHLO"
        self.session.host_name = hostname
        return True

    async def smtp_STARTTLS(self, arg):
        if self.secure:
            await self.push("503 5.5.1 TLS is already active")
            return
        if self.tls_context is None:
            await self.push("454 4.7.0 TLS is not available here")
            return
        await super().smtp_STARTTLS(arg)

    async def receive_data(self, arg, recipients, max_size, accept, log, **fields):
        """DATA once the caller's own checks passed: the message (at most
        ``max_size`` octets), ``await accept(content)`` for the reply, then
        one log line with ``fields``. A client gone mid-message was never
        acknowledged, so nothing happens."""
        if not recipients:
            await self.push("503 5.5.1 need RCPT before DATA")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        started = time.monotonic()
        try:
            content = await read_data(self._reader, max_size, self._reset_timeout)
        except asyncio.IncompleteReadError:
            return
        if content is None:
            reply = f"552 5.3.4 message exceeds the limit of {max_size} octets"
        else:
            reply = await accept(content)
        log.info("DATA", extra={
            "event": "command", "verb": "DATA", "conn": self.conn_id, **fields,
            "rcpts": len(recipients), "size": len(content) if content is not None else None,
            "outcome": "ok" if reply[:1] == "2" else "refused", "status": reply[:60],
            "ms": round((time.monotonic() - started) * 1000, 3)})
        self._set_post_data_state()
        await self.push(reply)
