"""The MX-facing SMTP edge (``roost serve --smtp``, port 25 in production):
mail from the Internet for the domains Roost hosts, without Postfix.

aiosmtpd on the server's asyncio loop, as submission and LMTP. Every
blocking step (DNS, the store, delivery, verdicts, spam scanning) runs on
the worker pool through ``ctx.run``. Modelled on Postfix's smtpd with
postscreen in front:

- Connection limits (``Limiter``, in memory, per process): open connections
  per client address, per network (/24, /64) and in all; over any, ``421
  4.7.0`` and the connection closes before the greeting.
- Early talkers: the greeting waits ``pregreet`` seconds (postscreen's
  ``greet_wait``); a client that sends anything before it is a spambot
  that does not wait for the server: ``554 5.5.1`` and disconnected. The
  DNSBL and reverse-DNS lookups run during that pause.
- DNSBL (``dnsbl`` zones; IPv4 reversed octets, IPv6 reversed nibbles, an A
  record answer means listed; only through ``protocols.dns.Resolver``).
  ``dnsbl_action = "reject"``: every RCPT gets ``554 5.7.1 ... blocked
  using ZONE``; ``"score"``: the zones go into the verdicts (``dnsbl``) for
  the spam score. A lookup that fails is not a listing. What DNS said about
  a client is reused for ``CACHE_TTL`` seconds (per process, bounded).
- FCrDNS: the PTR names of the client address whose A/AAAA include it
  (at most ``MAX_PTR`` names); the first is the verified name
  (``remote_host`` in the verdicts, "" when none). ``require_fcrdns``:
  RCPT gets ``550 5.7.25`` without one (``450 4.7.25`` when DNS failed);
  otherwise it is only a score signal (``NO_PTR``).
- Never an open relay: the edge has no AUTH; a recipient in a domain Roost
  does not host (or an address literal) is ``554 5.7.1 relay access denied``,
  always. A hosted domain's unknown recipient: ``550 5.1.1`` at RCPT
  (``Store.resolve``: aliases, catch-alls, ``+detail``).
- Greylisting (``greylist = true``; ``storage.greylist``): after the
  recipient is known to exist, an unknown triplet gets ``450 4.7.1``; the
  retry after ``greylist_delay`` passes; networks with enough passes are
  allowed without delay. Storage trouble lets the mail through (greylisting
  is a filter, not a gate worth losing mail over).
- Rate limits per client address and per network (in memory, a fixed
  one-minute window): MAIL commands (``messages_per_minute``, per network
  ``network_messages_per_minute``) and recipients (``recipients_per_minute``);
  over a limit: ``421 4.7.0`` and the connection closes, as Postfix's anvil.
  At most ``recipients_per_message`` (``452 4.5.3``) per transaction.
- Bounds: command lines ``LINE_LIMIT`` octets (aiosmtpd answers 500), at most
  ``commands_before_mail`` commands without a MAIL (NOOP, RSET, VRFY, HELP,
  EHLO, ...), ``421`` after, and at most ``MAX_ERRORS`` refused recipients
  (a dictionary attack); the idle timeout ``timeout`` between commands and
  the session ``lifetime``; aiosmtpd's bogus-command budget; SIZE
  (``max_size``, announced and checked at MAIL and at the end of DATA).
- STARTTLS (RFC 3207) with the server's TLS context; a new EHLO after it.
  REQUIRETLS is not offered.
- DATA: one reply for the whole message (this is SMTP, not LMTP). The
  message goes through ``Delivery.store`` with one ``Received:`` line for this
  hop, the inbound pipeline's ``Authentication-Results`` (``inbound``,
  optional: ``check(data, ip, helo, mail_from)`` with ``data``,
  ``auth_headers`` and ``verdicts``) and the spam headers (``spam``, a
  ``protocols.mailauth.spam.SpamFilter``, run here after the edge's own
  verdicts are merged, unless the inbound pipeline already scored the
  message). Outcomes, decided per RFC 5321 section 6.1 (once a 250 is sent
  the edge owns the message):

    * every recipient stored: ``250``;
    * none stored: the reply of the failure (``451 4.3.0`` when any is
      temporary, so the sender retries all of them; a permanent one's 5xx
      otherwise): the sender keeps the message and nothing was stored;
    * some stored: ``250``, and the others are not lost: a temporary failure
      is handed to the outbound queue (``Outbound.submit``: stored again at
      once, else retried by the relay; the retry copy carries the same
      added header lines, but not the verdicts dict), a permanent one
      becomes a DSN to the sender (``storage.dsn`` through the queue; never
      for the null sender).

- Logs: connection open/close events as the other listeners, each RCPT
  refusal and each DATA as a "command" event at INFO (an MX's refusals are
  what an operator greps for).
"""

import asyncio
import collections
import datetime
import email.utils
import ipaddress
import itertools
import logging
import re
import secrets
import time
from dataclasses import dataclass, field

from aiosmtpd.smtp import Envelope as _SMTPEnvelope

from roost.protocols.dns import DNSError
from roost.protocols.smtp.session import SHUTDOWN, Session
from roost.protocols.smtp.submission import Reply, check_address, split_path
from roost.storage import delivery as outcome
from roost.storage import dsn
from roost.storage import greylist as greylisting
from roost.storage.delivery import Incoming
from roost.storage.outbound import Envelope, Recipient

log = logging.getLogger("roost.smtp")

LINE_LIMIT = 4096           # a command line (RFC 5321 allows 512 plus extension parameters)
COMMAND_LIMIT = 2048
MAX_PTR = 5
LOOKUP_TIMEOUT = 10.0
VERDICT_TIMEOUT = 60.0
CACHE_TTL = 300             # seconds a client's DNS findings are reused (postscreen caches too)
CACHE_SIZE = 10000
_conn_ids = itertools.count(1)
_UNSAFE = re.compile(r"[^\x21-\x7e]")
_UNSAFE_TEXT = re.compile(r"[\x00-\x1f\x7f]")
_TEMPORARY = (outcome.TEMPORARY, outcome.OVER_QUOTA)
# Replies after DATA when no recipient was stored, by status (others: 550 5.0.0).
MAX_ERRORS = 10             # refused RCPTs in a session (a dictionary attack) before 421
_FAILED = {
    outcome.NO_SUCH_USER: "550 5.1.1 no such user here",
    outcome.NO_SUCH_MAILBOX: "550 5.1.1 no such user here",
    outcome.TOO_LARGE: "552 5.3.4 message too big",
    outcome.OVER_QUOTA: "452 4.2.2 mailbox full",
    outcome.TEMPORARY: "451 4.3.0 temporary failure, try again later",
}


@dataclass
class Policy:
    max_size: int = 50 * 1024 * 1024
    pregreet: float = 2.0               # seconds of silence before the greeting; 0: none
    dnsbl: tuple = ()                   # zones
    dnsbl_action: str = "reject"        # "reject" or "score"
    require_fcrdns: bool = False
    greylist: bool = False
    greylist_policy: greylisting.Policy = field(default_factory=greylisting.Policy)
    connections_per_ip: int = 10        # 0: no limit, for each of these
    connections_per_network: int = 50
    connections_total: int = 500
    messages_per_minute: int = 60       # MAIL commands per client address
    network_messages_per_minute: int = 300
    recipients_per_minute: int = 300    # per client address
    recipients_per_message: int = 100
    commands_before_mail: int = 20
    timeout: float = 300                # idle, between commands (RFC 5321 section 4.5.3.2.7)
    lifetime: float = 1800              # a whole session


class Limiter:
    """Open connections and one-minute counters per address and network (in memory)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.open_ip, self.open_net = collections.Counter(), collections.Counter()
        self.total = 0
        self._counts = {}               # (kind, key) -> [window start, count]

    def enter(self, ip, net, policy):
        """None, or why the connection is turned away."""
        if policy.connections_total and self.total >= policy.connections_total:
            return "too many connections; try again later"
        if policy.connections_per_ip and self.open_ip[ip] >= policy.connections_per_ip:
            return f"too many connections from {ip}"
        if policy.connections_per_network and self.open_net[net] >= policy.connections_per_network:
            return f"too many connections from {net}"
        self.total += 1
        self.open_ip[ip] += 1
        self.open_net[net] += 1
        return None

    def leave(self, ip, net):
        self.total -= 1
        for counter, key in ((self.open_ip, ip), (self.open_net, net)):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]

    def take(self, kind, key, limit, amount=1):
        """Count ``amount`` in this minute's window; False when over ``limit``."""
        if not limit:
            return True
        now = self.clock()
        slot = self._counts.get((kind, key))
        if slot is None or now - slot[0] >= 60:
            if len(self._counts) > 100000:      # bound the memory: drop the stale windows
                self._counts = {k: v for k, v in self._counts.items() if now - v[0] < 60}
            slot = self._counts[(kind, key)] = [now, 0]
        if slot[1] + amount > limit:
            return False
        slot[1] += amount
        return True


@dataclass
class Context:
    """What the edge's connections share. ``run(fn, *args)`` runs blocking
    ``fn`` on the worker pool; ``clock`` is the wall clock greylisting uses."""
    run: object
    store: object
    delivery: object
    outbound: object
    resolver: object
    hostname: str = "localhost"
    tls: object = None
    policy: Policy = field(default_factory=Policy)
    inbound: object = None
    spam: object = None
    clock: object = time.time
    limiter: Limiter = field(default_factory=Limiter)
    sessions: set = field(default_factory=set)
    client_cache: dict = field(default_factory=dict)   # ip -> (expires, ClientInfo)
    closing: bool = False

    def shutdown(self):
        self.closing = True
        for session in list(self.sessions):
            if not session.busy:
                session.close_with(SHUTDOWN)


@dataclass
class ClientInfo:
    """What DNS says about the client: the DNSBL zones listing it, its
    verified name ("" when none) and whether a PTR lookup failed."""
    listed: list = field(default_factory=list)
    name: str = ""
    dns_failed: bool = False


def dnsbl_name(ip, zone):
    """The DNSBL query name of ``ip`` in ``zone`` (RFC 5782 section 2.1, 2.4)."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 4:
        labels = reversed(str(addr).split("."))
    else:
        labels = reversed(addr.exploded.replace(":", ""))
    return ".".join(labels) + "." + zone.strip(".")


def client_info(resolver, ip, zones):
    """Blocking: the ``ClientInfo`` of ``ip`` (DNSBL zones, FCrDNS)."""
    info = ClientInfo()
    try:
        addr = ipaddress.ip_address(str(ip).split("%")[0])
    except ValueError:
        return info     # not an IP client (a unix socket): nothing to look up
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    for zone in zones:
        try:
            answers = resolver.a(dnsbl_name(str(addr), zone))
        except DNSError as exc:
            log.info("DNSBL %s did not answer for %s: %s", zone, addr, exc)
            continue
        if any(a.startswith("127.") for a in answers):
            info.listed.append(zone)
    try:
        for name in resolver.ptr(str(addr))[:MAX_PTR]:
            try:
                if str(addr) in {str(ipaddress.ip_address(a)) for a in resolver.addresses(name)}:
                    info.name = name
                    break
            except DNSError:
                info.dns_failed = True
    except DNSError:
        info.dns_failed = True
    return info


def failure_reply(result):
    """The SMTP reply of a recipient's failed ``DeliveryResult`` (statuses
    other parts add, such as a Sieve reject's "rejected", included)."""
    if result.status in _FAILED:
        return _FAILED[result.status]
    reason = _UNSAFE_TEXT.sub(" ", result.reason or "")[:200]
    if getattr(result.status, "value", "") == "rejected":
        return f"550 5.7.1 {reason or 'rejected by the recipient'}"
    return f"550 5.0.0 {reason or 'refused'}"


class Transaction(_SMTPEnvelope):
    def __init__(self):
        super().__init__()
        self.targets = {}           # address -> what Store.resolve returned
        self.seen = set()


class _Handler:
    async def handle_exception(self, error):
        log.error("SMTP edge command failed: %s", error, exc_info=error)
        return "451 4.3.0 internal error; try again later"


class Edge(Session):
    """One connection from another MTA."""

    line_length_limit = LINE_LIMIT

    def __init__(self, ctx):
        policy = ctx.policy
        super().__init__(_Handler(), data_size_limit=policy.max_size, enable_SMTPUTF8=True,
                         decode_data=False, hostname=ctx.hostname, ident="Roost ESMTP",
                         tls_context=ctx.tls, timeout=policy.timeout,
                         loop=asyncio.get_running_loop())
        self.command_size_limits = collections.defaultdict(lambda: COMMAND_LIMIT)
        for verb in ("AUTH", "EXPN"):         # no AUTH on an MX; no list expansion
            self._smtp_methods.pop(verb, None)
        self._smtp_methods = {verb: self._counted(verb, method)
                              for verb, method in self._smtp_methods.items()}
        self.ctx = ctx
        self.ip = self.net = None
        self.refused = None
        self.entered = False
        self.greeted = self.early = False
        self.secure = False
        self.info = None
        self.lookup = None
        self.commands = 0               # since the last MAIL
        self.errors = 0                 # refused recipients
        self.busy = 0
        self._plain = False
        self.conn_id, self.opened, self.bytes_in, self.bytes_out = next(_conn_ids), 0.0, 0, 0
        self._lifetime = None

    # --- connection ---------------------------------------------------------------

    def connection_made(self, transport):
        if self.transport is None:
            peer = transport.get_extra_info("peername")
            self.ip = peer[0] if isinstance(peer, tuple) else "local"
            self.net = greylisting.network_of(self.ip)
            self.refused = self.ctx.limiter.enter(self.ip, self.net, self.ctx.policy)
            self.entered = self.refused is None
            self.opened = time.monotonic()
            self.ctx.sessions.add(self)
            log.info("connection open", extra={"event": "connection", "state": "open",
                                               "proto": "smtp", "conn": self.conn_id,
                                               "peer": self.ip})
            super().connection_made(transport)
        else:                           # STARTTLS done: a new session (RFC 3207 section 4.2)
            super().connection_made(transport)
            self.secure = True

    def connection_lost(self, error):
        self.ctx.sessions.discard(self)
        if self.entered:
            self.ctx.limiter.leave(self.ip, self.net)
            self.entered = False
        if self._lifetime is not None:
            self._lifetime.cancel()
        if self.lookup is not None:
            if not self.lookup.done():
                self.lookup.cancel()
            elif not self.lookup.cancelled():
                self.lookup.exception()     # retrieved: a failure was logged where it mattered
        log.info("connection close", extra={
            "event": "connection", "state": "close", "proto": "smtp", "conn": self.conn_id,
            "peer": self.ip, "ms": round((time.monotonic() - self.opened) * 1000, 3),
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out})
        super().connection_lost(error)

    def data_received(self, data):
        self.bytes_in += len(data)
        if not self.greeted and data and self.ctx.policy.pregreet:
            self.early = True
            return                      # nothing an early talker says is read
        super().data_received(data)

    async def _handle_client(self):
        ctx, policy = self.ctx, self.ctx.policy
        if ctx.closing:
            self.refused = "the server is shutting down"
        if self.refused is not None:
            self._plain = True
            await self.push(f"421 4.7.0 {self.hostname} {self.refused}")
            self.transport.close()
            return
        cached = ctx.client_cache.get(self.ip)
        if cached is not None and cached[0] > time.monotonic():
            self.info = cached[1]
        elif policy.dnsbl or policy.require_fcrdns or ctx.spam is not None or \
                ctx.inbound is not None:
            self.lookup = asyncio.ensure_future(asyncio.wait_for(
                ctx.run(client_info, ctx.resolver, self.ip, tuple(policy.dnsbl)), LOOKUP_TIMEOUT))
        if policy.pregreet:
            await asyncio.sleep(policy.pregreet)
        if self.early:
            self._log_refusal("CONNECT", "554 5.5.1 early talker")
            self._plain = True
            await self.push(f"554 5.5.1 {self.hostname} protocol error: you talked before "
                            "my greeting")
            self.transport.close()
            return
        self.greeted = True
        self._lifetime = self.loop.call_later(policy.lifetime, self.close_with,
                                              "421 4.4.2 session too long; closing")
        self._plain = True
        await super()._handle_client()

    def _counted(self, verb, method):
        async def counted(arg):
            if verb not in ("MAIL", "RCPT", "DATA", "QUIT", "STARTTLS"):
                self.commands += 1
                if self.commands > self.ctx.policy.commands_before_mail:
                    self._log_refusal(verb, "421 too many commands")
                    await self.push("421 4.7.0 too many commands without mail; closing")
                    self.transport.close()
                    return
            await method(arg)
        return counted

    def _create_envelope(self):
        return Transaction()

    def _log_refusal(self, verb, reply, **fields):
        log.info("%s refused", verb, extra={"event": "command", "proto": "smtp", "verb": verb,
                                            "conn": self.conn_id, "peer": self.ip,
                                            "outcome": "refused", "status": reply[:60], **fields})

    # --- greeting, TLS -------------------------------------------------------------

    async def smtp_EHLO(self, hostname):
        if not await self._hello(hostname, "EHLO"):
            return
        lines = [self.hostname, "PIPELINING", f"SIZE {self.ctx.policy.max_size}", "8BITMIME",
                 "SMTPUTF8", "ENHANCEDSTATUSCODES"]
        if self.tls_context is not None and not self.secure:
            lines.append("STARTTLS")
        await self._lines(lines)

    # --- the transaction -------------------------------------------------------------

    async def _client(self):
        """The ``ClientInfo`` (waiting for the lookups started at connect)."""
        if self.info is None:
            self.info = ClientInfo()
            if self.lookup is not None:
                try:
                    self.info = await self.lookup
                except Exception as exc:  # noqa: BLE001 - a lookup that failed is no listing
                    log.info("client lookups for %s failed: %s", self.ip, exc)
                    self.info.dns_failed = True
                cache = self.ctx.client_cache
                if not self.info.dns_failed:        # a failure is asked again next time
                    if len(cache) >= CACHE_SIZE:
                        cache.clear()
                    cache[self.ip] = (time.monotonic() + CACHE_TTL, self.info)
        return self.info

    async def smtp_MAIL(self, arg):
        if await self.check_helo_needed():
            return
        txn, policy, limiter = self.envelope, self.ctx.policy, self.ctx.limiter
        if txn.mail_from is not None:
            await self.push("503 5.5.1 nested MAIL command")
            return
        rest = self._strip_command_keyword("FROM:", arg or "")
        if rest is None or re.search(r"[\x00-\x1f\x7f]", rest):
            await self.push("501 5.5.4 Syntax: MAIL FROM:<address> [parameters]")
            return
        txn = Transaction()
        try:
            sender, params = split_path(rest)
            for key, value in params.items():
                if key == "SIZE":
                    if value is None or not value.isdigit() or len(value) > 20:
                        raise Reply("501 5.5.4 SIZE wants a number of octets")
                    if policy.max_size and int(value) > policy.max_size:
                        raise Reply(f"552 5.3.4 message size exceeds the limit of "
                                    f"{policy.max_size} octets")
                elif key == "BODY":
                    if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                        raise Reply("501 5.5.4 BODY must be 7BIT or 8BITMIME")
                elif key == "SMTPUTF8":
                    if value is not None:
                        raise Reply("501 5.5.4 SMTPUTF8 takes no value")
                    txn.smtp_utf8 = True
                else:
                    raise Reply(f"555 5.5.4 MAIL parameter {key} is not supported")
            if sender:
                check_address(sender, txn.smtp_utf8)
        except Reply as reply:
            await self.push(str(reply))
            return
        if not limiter.take("mail", self.ip, policy.messages_per_minute) or \
                not limiter.take("mail-net", self.net, policy.network_messages_per_minute):
            self._log_refusal("MAIL", "421 message rate", sender=sender)
            await self.push("421 4.7.0 too many messages from your address; try again later")
            self.transport.close()
            return
        self.commands = 0
        txn.mail_from = sender
        self.envelope = txn
        await self.push("250 2.1.0 sender ok")

    async def smtp_RCPT(self, arg):
        if await self.check_helo_needed():
            return
        txn, policy = self.envelope, self.ctx.policy
        if txn.mail_from is None:
            await self.push("503 5.5.1 need MAIL before RCPT")
            return
        rest = self._strip_command_keyword("TO:", arg or "")
        if rest is None or re.search(r"[\x00-\x1f\x7f]", rest):
            await self.push("501 5.5.4 Syntax: RCPT TO:<address>")
            return
        try:
            address, params = split_path(rest)
            if not address:
                raise Reply("501 5.1.3 a recipient cannot be the null path")
            check_address(address, txn.smtp_utf8)
            if params:
                raise Reply(f"555 5.5.4 RCPT parameter {next(iter(params))} is not supported")
            if len(txn.rcpt_tos) >= policy.recipients_per_message:
                raise Reply(f"452 4.5.3 at most {policy.recipients_per_message} recipients "
                            "per message")
        except Reply as reply:
            await self.push(str(reply))
            return
        if address.lower() in txn.seen:
            await self.push("250 2.1.5 recipient ok (already given)")
            return
        if not self.ctx.limiter.take("rcpt", self.ip, policy.recipients_per_minute):
            self._log_refusal("RCPT", "421 recipient rate", sender=txn.mail_from, rcpt=address)
            await self.push("421 4.7.0 too many recipients from your address; try again later")
            self.transport.close()
            return
        reply = await self._recipient(txn, address)
        if reply is not None:
            self._log_refusal("RCPT", reply, sender=txn.mail_from, rcpt=address)
            await self.push(reply)
            if reply[:1] == "5":
                self.errors += 1
                if self.errors >= MAX_ERRORS:
                    self.close_with("421 4.7.0 too many errors; closing")
            return
        txn.seen.add(address.lower())
        txn.rcpt_tos.append(address)
        await self.push("250 2.1.5 recipient ok")

    async def _recipient(self, txn, address):
        """The reply refusing ``address``, or None (its targets noted in ``txn``)."""
        ctx, policy = self.ctx, self.ctx.policy
        domain = address.rpartition("@")[2]
        try:
            hosted = not domain.startswith("[") and await self._work(ctx.store.hosts_domain, domain)
        except Exception:  # noqa: BLE001 - storage trouble: try later
            log.exception("checking the domain of %s", address)
            return "451 4.3.0 temporary failure, try again later"
        if not hosted:
            return f"554 5.7.1 <{address}>: relay access denied"
        info = await self._client()
        if info.listed and policy.dnsbl_action == "reject":
            return (f"554 5.7.1 service unavailable; client [{self.ip}] blocked using "
                    f"{info.listed[0]}")
        if policy.require_fcrdns and not info.name:
            if info.dns_failed:
                return f"450 4.7.25 cannot find your hostname, [{self.ip}]"
            return f"550 5.7.25 cannot find your hostname, [{self.ip}]"
        try:
            targets = await self._work(ctx.store.resolve, address)
        except Exception:  # noqa: BLE001
            log.exception("resolving %s", address)
            return "451 4.3.0 temporary failure, try again later"
        if not targets:
            return f"550 5.1.1 <{address}>: no such user here"
        if policy.greylist:
            try:
                verdict = await self._work(greylisting.check, ctx.store, self.net, txn.mail_from,
                                           address, ctx.clock(), policy.greylist_policy)
            except Exception:  # noqa: BLE001 - greylisting must not lose mail
                log.exception("greylisting %s", address)
                verdict = greylisting.Verdict(True)
            if not verdict.passed:
                return (f"450 4.7.1 <{address}>: greylisted, try again in "
                        f"{max(1, int(verdict.wait + 0.999))} seconds")
        txn.targets[address] = targets
        return None

    async def smtp_DATA(self, arg):
        if await self.check_helo_needed():
            return
        txn = self.envelope

        async def accept(content):
            try:
                return await self._accept(txn, content)
            except Exception:  # noqa: BLE001 - the sender keeps the message
                log.exception("storing a message from %s", self.ip)
                return "451 4.3.0 temporary failure, try again later"
        await self.receive_data(arg, txn.rcpt_tos, self.ctx.policy.max_size, accept, log,
                                proto="smtp", peer=self.ip, sender=txn.mail_from)

    async def _accept(self, txn, content):
        ctx, info = self.ctx, await self._client()
        helo = self.session.host_name or ""
        auth_headers, verdicts = b"", {}
        if ctx.inbound is not None:
            try:
                checked = await asyncio.wait_for(self._work(
                    ctx.inbound.check, content, self.ip, helo, txn.mail_from, info.name),
                    VERDICT_TIMEOUT)
                content, auth_headers, verdicts = checked.data, checked.auth_headers, \
                    dict(checked.verdicts)
            except Exception as exc:  # noqa: BLE001 - no verdicts rather than no mail
                log.warning("inbound verdicts failed for a message from %s: %s", self.ip, exc)
        verdicts.setdefault("remote_ip", self.ip)
        verdicts.setdefault("remote_host", info.name)
        verdicts.setdefault("helo", helo)
        if info.listed:
            verdicts["dnsbl"] = list(info.listed)
        if ctx.spam is not None and "spam_score" not in verdicts:
            try:
                headers, updates = await self._work(
                    lambda: ctx.spam.check(content, verdicts, mail_from=txn.mail_from,
                                           rcpts=tuple(txn.rcpt_tos)))
                auth_headers += headers
                forced = verdicts.get("spam")     # a DMARC policy that applies stays spam
                verdicts.update(updates)
                verdicts["spam"] = bool(forced or verdicts.get("spam"))
            except Exception:  # noqa: BLE001 - unscored rather than lost
                log.exception("spam scoring a message from %s", self.ip)
        data = self._received(txn, info) + content
        return await self._work(self._store, txn, data, auth_headers, verdicts)

    def _received(self, txn, info):
        """The ``Received:`` line of this hop (RFC 5321 section 4.4)."""
        helo = _UNSAFE.sub("?", (self.session.host_name or "unknown")[:255])
        name = info.name or "unknown"
        protocol = ("UTF8" if txn.smtp_utf8 else "") + \
            ("ESMTP" if self.session.extended_smtp else "SMTP") + ("S" if self.secure else "")
        tls = ""
        if self.secure and self.transport is not None:
            ssl_object = self.transport.get_extra_info("ssl_object")
            if ssl_object is not None:
                tls = f"\r\n\t(using {ssl_object.version()} with cipher {ssl_object.cipher()[0]})"
        rcpt = f"\r\n\tfor <{txn.rcpt_tos[0]}>" if len(txn.rcpt_tos) == 1 else ""
        date = email.utils.format_datetime(datetime.datetime.now(datetime.timezone.utc))
        return (f"Received: from {helo} ({name} [{self.ip}])\r\n\tby {self.hostname} (Roost) "
                f"with {protocol} id {secrets.token_hex(6)}{tls}{rcpt};\r\n\t{date}\r\n"
                ).encode("utf-8", "replace")

    def _store(self, txn, data, auth_headers, verdicts):
        """Blocking: deliver, and decide the one reply (module docstring)."""
        ctx = self.ctx
        sender = txn.mail_from or ""
        results = ctx.delivery.store(Incoming(data, tuple(txn.rcpt_tos), sender=sender,
                                              targets=dict(txn.targets),
                                              auth_headers=auth_headers, verdicts=verdicts))
        stored = [r for r in results if r.ok]
        temporary = [r for r in results if r.status in _TEMPORARY]
        permanent = [r for r in results if not r.ok and r.status not in _TEMPORARY]
        if not stored:
            if any(r.status is outcome.TEMPORARY for r in temporary):
                return _FAILED[outcome.TEMPORARY]
            return failure_reply((temporary or permanent)[0])
        queue_id = secrets.token_hex(6)
        if temporary:
            try:
                ctx.outbound.submit(Envelope(sender, [Recipient(r.recipient) for r in temporary]),
                                    auth_headers + data)
            except Exception:  # noqa: BLE001 - the stored ones are stored; tell the sender
                log.exception("queueing the retry of %d recipients", len(temporary))
                permanent += temporary
        if permanent and sender:
            self._bounce(sender, permanent, data)
        return f"250 2.0.0 queued as {queue_id}"

    def _bounce(self, sender, results, data):
        now = self.ctx.clock()
        notices = [dsn.Notice(r.recipient, "failed", dsn.status_of(failure_reply(r), "5"),
                              failure_reply(r), self.hostname, f"rfc822;{r.recipient}", now)
                   for r in results]
        report = dsn.report(hostname=self.hostname, recipient=sender, notices=notices,
                            original=data, arrival=now, now=now)
        try:
            self.ctx.outbound.submit(Envelope("", [Recipient(sender, notify="NEVER")], kind="dsn"),
                                     report)
        except Exception:  # noqa: BLE001
            log.exception("queueing a DSN to %s", sender)
