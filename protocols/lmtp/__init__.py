"""LMTP (RFC 2033) on aiosmtpd, on the same asyncio loop as Twisted.

Owns the wire protocol and the mapping of delivery outcomes to replies. It
calls ``resolve`` and ``deliver`` (blocking store functions) through ``run``,
which puts them on a worker thread; it never touches the database or files.

aiosmtpd's LMTP gives one reply to DATA for all recipients, which RFC 2033
section 4.2 forbids. Roost's DATA hook returns one reply line per accepted
recipient, in RCPT order; aiosmtpd writes that text followed by CRLF, so the
client reads exactly one reply per recipient. Every reply carries an enhanced
status code (RFC 2034), LHLO is required before mail, and a recipient's
``+detail`` names the mailbox it goes to when that mailbox exists.
"""

import logging
import re

from aiosmtpd.lmtp import LMTP

from roost.storage import delivery as outcome

log = logging.getLogger("roost.lmtp")

MAX_RECIPIENTS = 1000
LINE_LIMIT = 64 * 1024

_HAS_ENHANCED = re.compile(r"^\d{3}[ -]\d\.\d{1,3}\.\d{1,3}\b")
_DEFAULT_ENHANCED = {
    "221": "2.0.0", "250": "2.0.0", "451": "4.3.0", "452": "4.3.1", "421": "4.3.2",
    "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
    "530": "5.7.0", "550": "5.1.1", "552": "5.3.4", "553": "5.1.3", "554": "5.3.0",
    "555": "5.5.4",
}


def reply_for(result):
    """The LMTP reply line of one recipient's ``DeliveryResult``."""
    rcpt = result.recipient
    if result.status in (outcome.DELIVERED, outcome.DUPLICATE):
        return f"250 2.0.0 <{rcpt}> delivered"
    if result.status == outcome.NO_SUCH_USER:
        return f"550 5.1.1 <{rcpt}> no such user here"
    if result.status == outcome.OVER_QUOTA:
        return f"552 5.2.2 <{rcpt}> mailbox is full"
    if result.status == outcome.TOO_LARGE:
        return f"552 5.3.4 <{rcpt}> message too big"
    return f"451 4.3.0 <{rcpt}> temporary failure, try again later"


class LMTPServer(LMTP):
    line_length_limit = LINE_LIMIT

    def __init__(self, handler, **kwargs):
        kwargs.setdefault("enable_SMTPUTF8", True)
        kwargs.setdefault("decode_data", False)
        kwargs.setdefault("hostname", "roost")
        kwargs.setdefault("ident", "Roost LMTP")
        super().__init__(handler, **kwargs)
        self._plain_reply = False

    async def push(self, status):
        # RFC 2034: enhanced codes on every reply except the greeting, the LHLO
        # capability list and the 354 go-ahead.
        plain = self._plain_reply and status[:1] == "2"   # LHLO errors still get codes
        if isinstance(status, str) and not plain and not _HAS_ENHANCED.match(status):
            code = status[:3]
            if code in _DEFAULT_ENHANCED and status[3:4] in (" ", ""):
                status = f"{code} {_DEFAULT_ENHANCED[code]} {status[4:]}".rstrip()
        await super().push(status)

    async def smtp_LHLO(self, arg):
        self._plain_reply = True
        try:
            await super().smtp_LHLO(arg)
        finally:
            self._plain_reply = False

    async def check_helo_needed(self, helo="LHLO"):
        return await super().check_helo_needed("LHLO")


class LMTPHandler:
    """aiosmtpd hooks: recipients checked at RCPT, one reply each after DATA."""

    def __init__(self, run, resolve, deliver):
        self.run = run          # async run(fn, *args) on a worker thread
        self.resolve = resolve  # address -> list of local targets
        self.deliver = deliver  # (data, recipients, sender=) -> [DeliveryResult]

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
            return f"451 4.3.0 <{address}> temporary failure, try again later"
        if not targets:
            return f"550 5.1.1 <{address}> no such user here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return f"250 2.1.5 <{address}> recipient ok"

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content
        try:
            results = await self.run(self.deliver, data, list(envelope.rcpt_tos), envelope.mail_from)
        except Exception:  # noqa: BLE001
            log.exception("delivery failed")
            return "\r\n".join(f"451 4.3.0 <{r}> temporary failure, try again later"
                               for r in envelope.rcpt_tos)
        return "\r\n".join(reply_for(r) for r in results)
