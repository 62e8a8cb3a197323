"""What Roost's two SMTP servers, submission (``submission.py``) and the
MX-facing edge (``edge.py``), share on top of aiosmtpd's ``SMTP``: enhanced
status codes added to every reply (RFC 2034; none on the EHLO/HELO lines),
replies that never echo bytes that were not UTF-8, HELO and the start of
EHLO, STARTTLS refusals, the idle timeout's 421, and blocking work on the
worker pool that ends the session with a 421 once the server is shutting
down (after the reply the caller is about to write).

A subclass sets ``ctx`` (with ``run`` and ``closing``), ``busy = 0`` and
``_plain = False`` in its ``__init__``, and gives ``_create_envelope``.
"""

import re

from aiosmtpd.smtp import SMTP

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
