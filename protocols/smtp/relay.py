"""The outbound relay: delivers the outbound queue (``storage.outbound``) to
each destination's MX hosts, or to a smarthost, and reports every reply.

One loop claims due recipients (``Outbound.claim``: leased, so another worker
or node never takes them too) and starts one task per destination domain;
a task holds one connection to the domain and sends each of its messages over
it (connection reuse), recording each message's replies as soon as they are
in, so a 250 is final before the next message starts. ``[relay] connections``
bounds the connections in all and ``per_domain`` those to one domain.

Routing, per domain (lookups through ``protocols.dns``, on the worker pool):
MX records by preference (equal ones shuffled), no MX means the domain's own
addresses (RFC 5321 section 5.1), a null MX (RFC 7505) bounces at once with
``556 5.1.10``, a DNS failure defers. TLS, per MX host: DANE (RFC 7672,
``protocols.smtp.dane``) first — usable TLSA records require TLS and a
matching certificate; then MTA-STS (RFC 8461, ``protocols.smtp.mtasts``) —
an ``enforce`` policy keeps only the MX hosts it names and requires TLS with
a certificate valid for the host under ``[relay] ca_file``; otherwise
STARTTLS when offered, without checking the certificate (opportunistic, RFC
3207), and in the clear when the handshake fails. A host that cannot meet its
requirement is skipped (its reason kept); when no host takes the message the
recipients are deferred with the last reason.

Per message: REQUIRETLS (RFC 8689) messages only go over a verified TLS
session (DANE or PKIX) to a server offering REQUIRETLS, else ``550 5.7.30``;
SMTPUTF8 mail to a server without SMTPUTF8 bounces ``553 5.6.7``; 8-bit
bodies to a server without 8BITMIME are converted to quoted-printable first;
then a Sieve redirect (outbound kind "redirect") gets an ARC set
from ``sealer(data, sender)`` (the server passes ``mailauth.arc.Sealer``:
the forwarding domain's RSA key, the Authentication-Results that delivery
prepended), the
message is DKIM-signed (``protocols.mailauth.dkim``, both on the pool) and
sent with PIPELINING when offered. Local recipients that failed temporarily
at submission are retried through ``Outbound.deliver_local``.

Not done yet: TLS-RPT (RFC 8460) reports; the MTA-STS policy cache is
per process and in memory.
"""

import asyncio
import email
import email.generator
import email.policy
import io
import logging
import quopri
import random
import ssl
import time
from dataclasses import dataclass, field

from roost.protocols.dns import DNSError
from roost.storage.outbound import Result

from . import dane
from .client import Client, SMTPError

log = logging.getLogger("roost.relay")

MAX_RCPTS = 100          # recipients per SMTP transaction
IDLE_WAIT = 30.0         # seconds between looks at the queue when nothing is due sooner


@dataclass
class Hop:
    host: str                       # MX host name (or the smarthost)
    port: int
    tls: str = "opportunistic"      # opportunistic, dane, encrypt, pkix, tls (implicit), none
    records: tuple = ()             # DANE TLSA records
    auth: tuple = None              # (user, password) for a smarthost
    skip: str = ""                  # why this host cannot be used now
    verify: bool = False            # the certificate must be valid for ``host``


@dataclass
class Session:
    client: Client
    hop: Hop
    verified: bool = False


@dataclass
class RelayConfig:
    hostname: str
    helo: str = ""
    mx_port: int = 25
    smarthost: tuple = None          # (host, port)
    smarthost_auth: tuple = None     # (user, password)
    smarthost_tls: str = "starttls"
    connections: int = 20
    per_domain: int = 4
    timeout: float = 60
    ca_file: str = ""
    sources: dict = field(default_factory=dict)   # test hook: address -> local address


def needs_8bit(data):
    return any(b > 127 for b in data)


def downgrade(data):
    """8-bit MIME parts re-encoded as quoted-printable (RFC 6152 section 3)."""
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        if not needs_8bit(payload):
            continue
        del part["Content-Transfer-Encoding"]
        part.set_payload(quopri.encodestring(payload.replace(b"\r\n", b"\n")).decode("ascii"))
        part["Content-Transfer-Encoding"] = "quoted-printable"
    out = io.BytesIO()
    email.generator.BytesGenerator(out, mangle_from_=False, policy=email.policy.compat32.clone(
        linesep="\r\n")).flatten(msg)
    return out.getvalue()


STOP_WAIT = 5.0              # seconds stop() waits for cancelled deliveries


class Relay:
    def __init__(self, outbound, run, resolver, config, *, signer=None, mtasts=None, loop=None,
                 sealer=None):
        self.outbound = outbound
        self.run = run
        self.resolver = resolver
        self.cfg = config
        self.signer = signer
        self.sealer = sealer        # (data, sender) -> ARC header bytes, for redirects
        self.mtasts = mtasts
        self.loop = loop or asyncio.get_event_loop()
        self._wake = asyncio.Event()
        self._tasks = set()
        self._domains = {}          # domain -> asyncio.Semaphore
        self._slots = asyncio.Semaphore(max(1, config.connections))
        self._main = None

    # --- the loop ----------------------------------------------------------------

    def start(self):
        self.outbound.wakeup = lambda: self.loop.call_soon_threadsafe(self._wake.set)
        self._main = asyncio.ensure_future(self._serve())

    async def stop(self):
        """Stop taking work; deliveries under way are cut (their recipients'
        leases lapse and recovery clears them: nothing is lost)."""
        self.outbound.wakeup = None
        tasks = [t for t in [self._main, *self._tasks] if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task cancelled inside a TLS handshake may never finish
            # (asyncio's start_tls), and shutdown must not wait for it.
            await asyncio.wait(tasks, timeout=STOP_WAIT)

    async def _serve(self):
        while True:
            self._wake.clear()
            room = self.cfg.connections * 4 - len(self._tasks)
            works = []
            if room > 0:
                try:
                    works = await self.run(self.outbound.claim, room * 10)
                except Exception:  # noqa: BLE001 - the database will be back
                    log.exception("relay: claiming work")
            by_domain = {}
            for w in works:
                by_domain.setdefault((w.domain, w.local), []).append(w)
            for (domain, local), items in by_domain.items():
                task = asyncio.ensure_future(self._domain(domain, items, local))
                self._tasks.add(task)
                task.add_done_callback(self._done)
            if works and room > 0:
                await asyncio.sleep(0)
                continue
            wait = IDLE_WAIT
            try:
                due = await self.run(self.outbound.next_due)
                if due is not None:
                    wait = min(IDLE_WAIT, max(0.05, due - time.time()))
            except Exception:  # noqa: BLE001
                log.exception("relay: reading the queue")
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except asyncio.TimeoutError:
                pass

    def _done(self, task):
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("relay: delivery task failed: %r", task.exception())
        self._wake.set()

    async def _record(self, results):
        if results:
            await self.run(self.outbound.record, results)

    # --- one destination ---------------------------------------------------------------

    async def _domain(self, domain, works, local):
        if local:
            for w in works:
                await self._record(await self.run(self.outbound.deliver_local, w))
            return
        sem = self._domains.setdefault(domain, asyncio.Semaphore(max(1, self.cfg.per_domain)))
        async with sem, self._slots:
            try:
                hops = await self._route(domain)
            except SMTPError as exc:
                await self._record([Result(rid, exc.reply) for w in works for rid, _ in w.rcpts])
                return
            await self._deliver(domain, hops, works)
        if not sem._waiters:
            self._domains.pop(domain, None)

    async def _deliver(self, domain, hops, works):
        pending = list(works)
        last = f"451 4.4.0 no MX host of {domain} could be used"
        for hop in hops:
            if not pending:
                break
            if hop.skip:
                last = hop.skip
                continue
            try:
                session = await self._open(hop)
            except SMTPError as exc:
                last = exc.reply
                continue
            try:
                while pending:
                    work = pending[0]
                    refused = self._refuse(session, work)
                    if refused:
                        if refused.startswith("553"):
                            await self._record([Result(r, refused, hop.host) for r, _ in work.rcpts])
                            pending.pop(0)
                        else:
                            last = refused
                            break       # another host may offer what this one lacks
                        continue
                    await self._record(await self._send(session, work))
                    pending.pop(0)
            except SMTPError as exc:
                last = exc.reply
            finally:
                await session.client.quit()
        if pending:
            await self._record([Result(rid, last) for w in pending for rid, _ in w.rcpts])

    def _refuse(self, session, work):
        ext = session.client.extensions
        if work.requiretls and not (session.verified and "REQUIRETLS" in ext):
            return (f"550 5.7.30 REQUIRETLS: {session.hop.host} offers no verified TLS session "
                    "with REQUIRETLS")
        if work.smtputf8 and "SMTPUTF8" not in ext:
            return f"553 5.6.7 {session.hop.host} does not support SMTPUTF8, which this message needs"
        return ""

    async def _send(self, session, work):
        client, hop = session.client, session.hop
        data = await self.run(self.outbound.read, work.spool)
        eight = needs_8bit(data)
        if eight and "8BITMIME" not in client.extensions:
            data = await self.run(downgrade, data)
            eight = False
        if self.sealer is not None and work.kind == "redirect":
            try:
                data = await self.run(self.sealer, data, work.sender) + data
            except Exception as exc:  # noqa: BLE001 - send it unsealed rather than never
                log.warning("relay: not ARC-sealed: %s", exc)
        if self.signer is not None:
            domain = self.signer.domain_for(data, work.sender)
            if domain:
                try:
                    data = await self.run(self.signer.sign, data, domain) + data
                except Exception as exc:  # noqa: BLE001 - send it unsigned rather than never
                    log.warning("relay: not signed: %s", exc)
        params = []
        if "SIZE" in client.extensions:
            params.append(f"SIZE={len(data)}")
        if eight:
            params.append("BODY=8BITMIME")
        if work.smtputf8:
            params.append("SMTPUTF8")
        if work.requiretls:
            params.append("REQUIRETLS")
        results = []
        rcpts = work.rcpts
        for i in range(0, len(rcpts), MAX_RCPTS):
            chunk = rcpts[i:i + MAX_RCPTS]
            try:
                replies, data_reply = await client.transaction(
                    work.sender, [a for _, a in chunk], data, params)
            except SMTPError as exc:
                if exc.reply.startswith("451 4.4.2"):
                    raise                 # the connection broke: the caller tries another host
                results += [Result(rid, exc.reply, hop.host) for rid, _ in chunk]
                continue
            for (rid, addr), reply in zip(chunk, replies):
                if reply.code // 100 != 2:
                    results.append(Result(rid, reply.text, hop.host))
                elif data_reply is None:
                    results.append(Result(rid, "451 4.4.2 no reply to DATA", hop.host))
                else:
                    results.append(Result(rid, data_reply.text, hop.host))
            log.info("relay", extra={"event": "relay", "domain": work.domain, "host": hop.host,
                                     "queue_id": work.message_id, "tls": client.tls,
                                     "reply": data_reply.text if data_reply else replies[0].text})
        return results

    # --- routing and connections ------------------------------------------------------

    async def _route(self, domain):
        cfg = self.cfg
        if cfg.smarthost:
            host, port = cfg.smarthost
            tls = {"starttls": "encrypt", "tls": "tls", "none": "none"}[cfg.smarthost_tls]
            return [Hop(host, port, tls, auth=cfg.smarthost_auth, verify=tls != "none")]
        try:
            mx = await self.run(self.resolver.mx, domain)
        except DNSError as exc:
            raise SMTPError(f"451 4.4.3 MX lookup of {domain} failed: {exc}") from None
        if any(host in (".", "") for _, host in mx):
            raise SMTPError(f"556 5.1.10 {domain} accepts no mail (null MX, RFC 7505)")
        hosts = _ordered(mx) if mx else [domain]
        policy = None
        if self.mtasts is not None:
            policy, required = await self.run(self.mtasts.lookup, domain)
            if policy is not None and required:
                from .mtasts import mx_allowed
                allowed = [h for h in hosts if mx_allowed(policy, h)]
                if not allowed:
                    raise SMTPError(f"451 4.7.5 no MX host of {domain} matches its MTA-STS policy")
                hosts = allowed
            else:
                policy = None
        hops = []
        for host in hosts:
            hop = Hop(host, cfg.mx_port, "pkix" if policy is not None else "opportunistic",
                      verify=policy is not None)
            try:
                pol = await self.run(dane.mx_policy, self.resolver, host, cfg.mx_port)
            except Exception as exc:  # noqa: BLE001 - DANE lookups failing is a defer
                pol = dane.DanePolicy(dane.DEFER, reason=str(exc))
            if pol.state == dane.DEFER:
                hop.skip = f"451 4.7.5 DANE lookup for {host} failed: {pol.reason}"
            elif pol.state == dane.DANE:      # DANE hosts ignore MTA-STS (RFC 8461 section 2)
                hop.tls, hop.records, hop.verify = "dane", pol.records, False
            elif pol.state == dane.ENCRYPT:
                hop.tls, hop.verify = "encrypt", False
            hops.append(hop)
        return hops

    async def _addresses(self, host):
        try:
            return await self.run(self.resolver.addresses, host)
        except DNSError as exc:
            raise SMTPError(f"451 4.4.3 address lookup of {host} failed: {exc}") from None

    def _context(self, hop):
        """Verified (the host's name, under ``ca_file``) for MTA-STS and a
        smarthost; otherwise any certificate (DANE checks it after the
        handshake, opportunistic TLS does not)."""
        if hop.verify:
            ctx = ssl.create_default_context(cafile=self.cfg.ca_file or None)
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx

    async def _open(self, hop):
        addresses = [hop.host] if self.cfg.smarthost else await self._addresses(hop.host)
        if not addresses:
            raise SMTPError(f"451 4.4.4 {hop.host} has no address")
        last = None
        for address in addresses:
            for use_tls in (True, False):
                try:
                    return await self._connect(hop, address, use_tls)
                except SMTPError as exc:
                    last = exc
                    if not (use_tls and hop.tls == "opportunistic" and "4.7.5" in exc.reply):
                        break       # only a failed opportunistic handshake is retried in the clear
        raise last

    async def _connect(self, hop, address, use_tls):
        client = Client(hop.host, self.cfg.timeout)
        implicit = hop.tls == "tls"
        source = self.cfg.sources.get(address)
        try:
            await client.connect(address, hop.port, context=self._context(hop) if implicit else None,
                                 source=source)
            await client.ehlo(self.cfg.helo or self.cfg.hostname)
            required = hop.tls in ("dane", "encrypt", "pkix")
            if not implicit and use_tls and hop.tls != "none" and (
                    "STARTTLS" in client.extensions or required):
                if "STARTTLS" not in client.extensions:
                    raise SMTPError(f"451 4.7.4 {hop.host} does not offer STARTTLS, which is required")
                await client.starttls(self._context(hop))
                await client.ehlo(self.cfg.helo or self.cfg.hostname)
            elif required:
                raise SMTPError(f"451 4.7.4 TLS to {hop.host} is required")
            verified = hop.verify
            if hop.tls == "dane":
                if not dane.match(hop.records, client.chain, hop.host):
                    raise SMTPError(f"451 4.7.5 {hop.host}: certificate matches no TLSA record")
                verified = True
            if hop.auth is not None:
                await client.auth(*hop.auth)
            return Session(client, hop, verified and client.tls)
        except BaseException:
            client.close()
            raise


def _ordered(mx):
    """MX hosts by preference, equal preferences in random order (RFC 5321 5.1)."""
    groups = {}
    for pref, host in mx:
        groups.setdefault(pref, []).append(host)
    out = []
    for pref in sorted(groups):
        hosts = groups[pref]
        random.shuffle(hosts)
        out += hosts
    return out
