"""A small SMTP client for the relay (RFC 5321 with ESMTP), on asyncio streams.

Written for the relay's needs rather than taken from a general library: it
pipelines MAIL, every RCPT and DATA in one write when the server offers
PIPELINING (RFC 2920) and reads each recipient's own reply; it exposes the
peer's whole certificate chain after STARTTLS (DANE-TA needs it); every reply
is bounded (512 lines of 1000 octets) and every read has a deadline.
Failures of the connection raise ``SMTPError`` with a reply made up in the
form the queue records (``451 4.4.2 ...``), so the caller treats the network
and the remote server alike.
"""

import asyncio
import base64
import ssl

MAX_LINE = 1000 + 2 + 1000    # generous: some servers send long lines
MAX_LINES = 512


class SMTPError(Exception):
    def __init__(self, reply):
        super().__init__(reply)
        self.reply = reply


class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines

    @property
    def text(self):
        return f"{self.code} " + " ".join(self.lines).strip()

    def __repr__(self):
        return f"Reply({self.text!r})"


def dot_stuff(data):
    """CRLF line ends, leading dots doubled, ending in CRLF (RFC 5321 4.5.2)."""
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    return data.replace(b"\r\n.", b"\r\n..")


class Client:
    def __init__(self, host, timeout=60):
        self.host = host              # the name the peer is known by (MX host)
        self.timeout = timeout
        self.reader = self.writer = None
        self.extensions = {}
        self.tls = False
        self.chain = []               # DER certificates, leaf first, after TLS

    async def connect(self, address, port, *, context=None, source=None):
        """Open the connection (implicit TLS when ``context``) and read the greeting."""
        try:
            self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(
                address, port, ssl=context, server_hostname=self.host if context else None,
                limit=MAX_LINE, local_addr=(source, 0) if source else None), self.timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise SMTPError(f"451 4.4.1 cannot connect to {self.host} [{address}]:{port}: "
                            f"{exc or 'timeout'}") from None
        if context is not None:
            self._after_tls()
        greeting = await self.reply()
        if greeting.code != 220:
            raise SMTPError(greeting.text if greeting.code >= 400 else
                            f"451 4.4.2 unexpected greeting: {greeting.text}")
        return greeting

    async def reply(self, timeout=None):
        lines, code = [], None
        while True:
            try:
                raw = await asyncio.wait_for(self.reader.readline(), timeout or self.timeout)
            except asyncio.TimeoutError:
                raise SMTPError(f"451 4.4.2 {self.host}: timeout waiting for a reply") from None
            except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
                raise SMTPError(f"451 4.4.2 {self.host}: {exc}") from None
            if not raw:
                raise SMTPError(f"451 4.4.2 {self.host}: connection closed")
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit():
                raise SMTPError(f"451 4.4.2 {self.host}: not an SMTP reply: {line[:80]!r}")
            if code is not None and int(line[:3]) != code:
                raise SMTPError(f"451 4.4.2 {self.host}: mixed reply codes")
            code = int(line[:3])
            lines.append(line[4:])
            if len(lines) > MAX_LINES:
                raise SMTPError(f"451 4.4.2 {self.host}: reply too long")
            if line[3:4] != "-":
                return Reply(code, lines)

    async def send(self, line):
        if isinstance(line, str) and any(c in line for c in "\r\n\0"):
            raise SMTPError("501 5.1.3 refusing to send a command with CR, LF or NUL in it")
        try:
            self.writer.write(line if isinstance(line, bytes) else line.encode() + b"\r\n")
            await asyncio.wait_for(self.writer.drain(), self.timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            raise SMTPError(f"451 4.4.2 {self.host}: write failed: {exc or 'timeout'}") from None

    async def command(self, line):
        await self.send(line)
        return await self.reply()

    async def ehlo(self, name):
        reply = await self.command(f"EHLO {name}")
        if reply.code != 250:
            reply = await self.command(f"HELO {name}")
            if reply.code != 250:
                raise SMTPError(reply.text)
            self.extensions = {}
            return reply
        self.extensions = {}
        for line in reply.lines[1:]:
            word, _, arg = line.partition(" ")
            self.extensions[word.upper()] = arg
        return reply

    async def starttls(self, context):
        reply = await self.command("STARTTLS")
        if reply.code != 220:
            raise SMTPError(reply.text)
        try:
            await asyncio.wait_for(self.writer.start_tls(context, server_hostname=self.host),
                                   self.timeout)
        except (ssl.SSLError, ssl.CertificateError, OSError, asyncio.TimeoutError) as exc:
            raise SMTPError(f"451 4.7.5 {self.host}: TLS handshake failed: {exc or 'timeout'}") \
                from None
        self._after_tls()

    def _after_tls(self):
        self.tls = True
        obj = self.writer.get_extra_info("ssl_object")
        chain = getattr(obj, "get_unverified_chain", None) or getattr(
            getattr(obj, "_sslobj", None), "get_unverified_chain", None)
        certs = chain() if chain else None
        if certs:
            self.chain = [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)
                          for c in certs]
        else:
            leaf = obj.getpeercert(binary_form=True) if obj else None
            self.chain = [leaf] if leaf else []

    async def auth(self, user, password):
        mechs = self.extensions.get("AUTH", "").upper().split()
        if "PLAIN" in mechs or not mechs:
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            reply = await self.command(f"AUTH PLAIN {token}")
        else:
            reply = await self.command("AUTH LOGIN")
            for value in (user, password):
                if reply.code != 334:
                    break
                reply = await self.command(base64.b64encode(value.encode()).decode())
        if reply.code != 235:
            raise SMTPError(reply.text if reply.code >= 400 else f"451 4.7.0 {reply.text}")

    async def transaction(self, sender, rcpts, data, mail_params=(), rcpt_params=None):
        """MAIL, RCPT for each of ``rcpts``, DATA: returns (the reply to
        each recipient, the reply to the data) — the data reply is None when
        no recipient was accepted. Raises SMTPError when MAIL is refused."""
        mail = f"MAIL FROM:<{sender}>" + "".join(" " + p for p in mail_params)
        rcpt_lines = [f"RCPT TO:<{r}>" + "".join(" " + p for p in (rcpt_params or {}).get(r, ()))
                      for r in rcpts]
        if any(c in line for line in [mail] + rcpt_lines for c in "\r\n\0"):
            raise SMTPError("501 5.1.3 refusing to send a command with CR, LF or NUL in it")
        if "PIPELINING" in self.extensions:
            await self.send(("\r\n".join([mail] + rcpt_lines + ["DATA"]) + "\r\n").encode())
            mail_reply = await self.reply()
            replies = [await self.reply() for _ in rcpt_lines]
            data_reply = await self.reply()
        else:
            mail_reply = await self.command(mail)
            replies, data_reply = [], None
            if mail_reply.code == 250:
                replies = [await self.command(line) for line in rcpt_lines]
                if any(r.code // 100 == 2 for r in replies):
                    data_reply = await self.command("DATA")
        if mail_reply.code != 250:
            await self._reset_after(data_reply)
            raise SMTPError(mail_reply.text)
        if not any(r.code // 100 == 2 for r in replies):
            await self._reset_after(data_reply)
            return replies, None
        if data_reply is None or data_reply.code != 354:
            await self._reset_after(None)
            return replies, data_reply
        await self.send(dot_stuff(data) + b".\r\n")
        return replies, await self.reply(timeout=self.timeout * 5)

    async def _reset_after(self, data_reply):
        if data_reply is not None and data_reply.code == 354:
            await self.send(b".\r\n")      # a DATA that went through regardless: end it empty
            await self.reply()
        reply = await self.command("RSET")
        if reply.code != 250:
            raise SMTPError(reply.text)

    async def quit(self):
        if self.writer is None:
            return
        try:
            self.writer.write(b"QUIT\r\n")
            await asyncio.wait_for(self.reader.readline(), 5)
        except (OSError, asyncio.TimeoutError, ValueError, SMTPError):
            pass
        self.close()

    def close(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
