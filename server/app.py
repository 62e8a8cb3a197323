"""Wiring: config -> store -> auth -> listeners, on one event loop.

``serve`` runs one ``Roost`` in this process, or, when ``[server]
processes`` (``--workers``) asks for more than one, hands over to the
supervisor of ``server.workers``: it binds the listeners (``server.listen``)
and runs one ``Roost`` per worker process on them, each given its
``workers.Link`` (the sockets, the change events of the others, and whether
it is the primary that runs the relay and the daily jobs).

Owns process start-up and shut-down. On SIGTERM the listeners stop (IMAP
sessions get BYE), the store's reads under way are interrupted, and in-flight
deliveries get up to SHUTDOWN_GRACE seconds to finish. Twisted's asyncioreactor is installed
first, so Twisted protocols (IMAP, JMAP) and asyncio ones (aiosmtpd LMTP and
submission) share one loop. Blocking work (database, fsync) goes to a
bounded thread pool through ``Roost.run``; argon2 to the authenticator's own
smaller pool (``[auth] hash_threads``). This is the only package that
knows every other one.

Logs are set up first (``server.logs``: one structured line per event, to
stderr unless ``[log] file``); Prometheus metrics (``server.metrics``) exist
only when a ``metrics`` listener is asked for. On exit (SIGTERM/SIGINT) the
change-relay socket ``DATA/roost.sock`` is removed, so no other process
mistakes a stale socket for a running server.

SIGHUP reloads the TLS certificate files (``server.tls.ReloadableTLS``):
new connections get the new certificate, open ones keep theirs, and a pair
that cannot be read leaves the old one in force (both printed). The HTTP
listener also serves client set-up documents (``protocols.web``) describing
the listeners actually bound.

The MX-facing SMTP edge (``--smtp``, ``protocols.smtp.edge``) is off unless
asked for; its context (``edge_context``) holds the ``[smtp]`` policy, the
resolver of ``[dns]`` and the ``[spam]`` scorer, and its daily prune of the
greylisting tables rides on the change-log prune.
"""

import asyncio
import copy
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from roost.storage.delivery import Delivery, Incoming, recover
from roost.storage.store import Store, relay_socket_path

from . import logs
from .auth import Authenticator
from .config import parse_address

log = logging.getLogger("roost")

SHUTDOWN_GRACE = 30
PRUNE_EVERY = 24 * 3600


def open_outbound(config, store, delivery):
    """The outbound queue (``storage.outbound``) as ``[relay]`` configures it;
    the server and the ``roost queue``/``roost suppression`` commands share it."""
    from roost.storage.outbound import Outbound, Spool, parse_interval
    return Outbound(store, delivery, Spool(os.path.join(config.data, "queue")), config.hostname,
                    schedule=[parse_interval(v) for v in config.relay_schedule],
                    max_age=parse_interval(config.relay_max_age),
                    delay_notice=parse_interval(config.relay_delay_notice),
                    suppress_for=parse_interval(config.relay_suppress_for))


LISTENER_ORDER = ("lmtp", "imap", "imaps", "jmap", "submission", "submissions", "smtp",
                  "managesieve", "auth", "socketmap", "metrics", "pop3", "pop3s")


def open_delivery(config, store):
    """The delivery path and the outbound queue of a process on ``store``."""
    delivery = Delivery(store, max_size=config.max_message_size,
                        dedupe_window=config.dedupe_window, hostname=config.hostname)
    outbound = open_outbound(config, store, delivery)
    delivery.outbound = outbound    # Sieve's redirect, vacation and notify rows
    return delivery, outbound


def prepare(config):
    """Open the data directory for serving, once per start: the schema
    upgraded, interrupted deliveries and file operations finished, old
    VacationResponse rows turned into Sieve scripts, the relay's leases
    cleared (nothing is sending yet). Returns (store, delivery, outbound)."""
    os.makedirs(config.data, exist_ok=True)
    store = Store.open(config.data, config.database or None)
    recover(store)
    from roost.storage.sieve import vacation
    vacation.migrate(store)
    delivery, outbound = open_delivery(config, store)
    outbound.recover()
    return store, delivery, outbound


def authserv_id(config):
    """Roost's authserv-id (RFC 8601): ``[inbound] authserv_id`` or the hostname."""
    return config.inbound_authserv_id or config.hostname


def install_reactor():
    """Install Twisted's asyncio reactor (once) and return the asyncio loop."""
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor
        return reactor._asyncioEventloop
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor
    asyncioreactor.install(loop)
    return loop


class Roost:
    """One running server: the store, the delivery path and the listeners."""

    def __init__(self, config, loop, worker=None):
        self.config = config
        self.loop = loop
        self.worker = worker      # server.workers.Link in a worker process, else None
        # The primary process runs what must run once: the relay, the daily
        # prune, DMARC reports, the background reindex.
        self.primary = worker is None or worker.slot == 0
        if worker is None:
            self.store, self.delivery, self.outbound = prepare(config)
        else:                     # the supervisor prepared the data directory
            self.store = Store.open(config.data, config.database or None)
            recover(self.store)   # what a dead sibling left (live ones' work is theirs)
            self.delivery, self.outbound = open_delivery(config, self.store)
        self.executor = ThreadPoolExecutor(config.threads, thread_name_prefix="roost-worker")
        self.relay = None
        self.auth = Authenticator(self.store, self.run, trusted_proxies=config.trusted_proxies,
                                  hash_threads=config.hash_threads, hash_queue=config.hash_queue,
                                  max_delay=config.max_login_delay)
        self.store.bus.dispatch = lambda fn, change: loop.call_soon_threadsafe(fn, change)
        self._relay = None
        if worker is None:
            self._relay = self.store.bus.listen(relay_socket_path(config.data))
            if self._relay is not None:
                loop.add_reader(self._relay.fileno(), self.store.bus.receive, self._relay)
        else:
            worker.attach(self)
        self.servers = []     # asyncio servers
        self._unix_paths = []  # their unix socket files
        self._stream_writers = set()   # their open connections
        self.ports = []       # Twisted listening ports
        self.addresses = {}   # name -> (host, port) actually bound
        self.inflight = 0
        self.metrics = None
        if parse_address(config.listen.get("metrics")) is not None:
            from .metrics import Metrics
            self.metrics = Metrics(self)
            self.metrics.install()

    async def run(self, fn, *args):
        """Run blocking ``fn(*args)`` on the worker pool."""
        self.inflight += 1
        try:
            return await self.loop.run_in_executor(self.executor, fn, *args)
        finally:
            self.inflight -= 1

    async def start(self):
        from . import listen
        for name in LISTENER_ORDER:
            addr = parse_address(self.config.listen.get(name))
            if addr is None:
                continue
            if self.worker is not None:
                bound = self.worker.sockets[name]
            else:
                bound = listen.bind(name, *addr)
                if bound.port is None:
                    self._unix_paths.append(bound.host)
            self.addresses[name] = (bound.host, bound.port)
            if name == "metrics" and not self.primary:
                continue          # scrapes are answered by the primary worker
            await getattr(self, f"_start_{name}")(bound)
            if self.worker is None:
                print(f"roost: {name} listening on {bound.where}", flush=True)
        if self.primary:
            self._start_relay()
            self._prune_history()
            from roost.storage import reindex
            self._reindex = reindex.start(self.store)   # search format of an older release
            if self.config.inbound_dmarc_reports:
                self._schedule_dmarc_reports()
        elif self.worker is not None:
            self.outbound.wakeup = self.worker.wake_relay
        if self.worker is None:
            print("roost: ready", flush=True)
        else:
            self.worker.ready()

    def _start_relay(self):
        """The outbound relay (``protocols.smtp.relay``) delivers the queue."""
        from roost.protocols.dns import Resolver
        from roost.protocols.mailauth.arc import Sealer
        from roost.protocols.mailauth.dkim import Signer
        from roost.protocols.smtp.mtasts import MTASTS
        from roost.protocols.smtp.relay import Relay, RelayConfig

        from .config import parse_address
        from .doctor import dkim_signing_keys
        cfg = self.config
        resolver = Resolver(cfg.dns_nameservers)
        signer = Signer(dkim_signing_keys(cfg))
        auth = (cfg.relay_smarthost_user, cfg.relay_smarthost_password) \
            if cfg.relay_smarthost_user else None
        self.relay = Relay(self.outbound, self.run, resolver, RelayConfig(
            hostname=cfg.hostname, helo=cfg.relay_helo, mx_port=cfg.relay_mx_port,
            smarthost=parse_address(cfg.relay_smarthost) if cfg.relay_smarthost else None,
            smarthost_auth=auth, smarthost_tls=cfg.relay_smarthost_tls,
            connections=cfg.relay_connections, per_domain=cfg.relay_per_domain,
            timeout=cfg.relay_timeout, ca_file=cfg.relay_ca_file),
            signer=signer, mtasts=MTASTS(resolver, cfg.relay_ca_file),
            loop=self.loop, sealer=Sealer(signer, authserv_id(cfg), cfg.hostname))
        self.relay.start()

    def _prune_history(self):
        """Trim the change log now, then once a day."""
        async def prune():
            try:
                removed = await self.run(self.store.prune_history, self.config.history_days * 86400)
                await self.run(self.outbound.prune)
                edge = getattr(self, "_edge", None)
                if edge is not None and edge.policy.greylist:
                    from roost.storage import greylist
                    await self.run(greylist.prune, self.store, time.time(),
                                   edge.policy.greylist_policy)
                if removed:
                    log.info("pruned %d change-log rows older than %d days", removed,
                             self.config.history_days)
            except Exception:  # noqa: BLE001 - retried tomorrow
                log.exception("pruning the change log")
        self._prune_task = asyncio.ensure_future(prune())
        self._prune_timer = self.loop.call_later(PRUNE_EVERY, self._prune_history)

    def inbound(self):
        """The verdict pipeline (``protocols.mailauth.inbound``), made once;
        its DMARC evaluations go to ``storage.dmarc_reports`` when reports
        are on."""
        if getattr(self, "_inbound", None) is None:
            from roost.protocols.dns import Resolver
            from roost.protocols.mailauth import psl
            from roost.protocols.mailauth.inbound import Inbound
            cfg = self.config
            record = None
            if cfg.inbound_dmarc_reports:
                from roost.storage import dmarc_reports
                record = lambda row: dmarc_reports.record(self.store, row)  # noqa: E731
            self._inbound = Inbound(Resolver(cfg.dns_nameservers), authserv_id(cfg),
                                    timeout=cfg.inbound_timeout,
                                    psl=psl.default(cfg.inbound_public_suffix_list or None),
                                    record=record)
        return self._inbound

    def spam_filter(self):
        """The ``[spam]`` scorer (``protocols.mailauth.spam``), or None when off."""
        if getattr(self, "_spam", None) is None and self.config.spam.get("enabled", True):
            from roost.protocols.mailauth import spam
            self._spam = spam.from_config(self.config.spam)
        return getattr(self, "_spam", None)

    def _lmtp_check(self, data, sender):
        """LMTP verdicts: the client as the MTA's topmost Received says, then
        the spam score."""
        from roost.protocols.lmtp import received_client
        if getattr(self, "_lmtp_inbound", None) is None:
            self._lmtp_inbound = copy.copy(self.inbound())
            self._lmtp_inbound.spam = self.spam_filter()
        ip, helo, rdns = received_client(data)
        checked = self._lmtp_inbound.check(data, ip, helo, sender, remote_host=rdns)
        return checked.data, checked.auth_headers, checked.verdicts

    def _schedule_dmarc_reports(self):
        """DMARC aggregate reports (``server.dmarc_reports``) at 00:10 UTC daily."""
        import time
        wait = 86400 - (time.time() - 600) % 86400

        def due():
            asyncio.ensure_future(self._send_dmarc_reports())
            self._dmarc_timer = self.loop.call_later(86400, due)
        self._dmarc_timer = self.loop.call_later(wait, due)

    async def _send_dmarc_reports(self):
        from . import dmarc_reports
        inbound = await self.run(self.inbound)
        try:
            sent = await self.run(dmarc_reports.send, self.store, self.outbound, inbound.resolver,
                                  inbound.psl, self.config.hostname,
                                  self.config.inbound_report_from)
            log.info("DMARC reports queued for %d domains", len(sent))
        except Exception:  # noqa: BLE001 - tomorrow again
            log.exception("DMARC reports")

    async def _start_lmtp(self, lis):
        from roost.protocols.lmtp import LMTPHandler, LMTPServer
        check = self._lmtp_check if self.config.inbound_lmtp_verdicts == "received" else None
        if check is not None:
            await self.run(self.inbound)     # the Public Suffix List is read now, not at a message
        handler = self._lmtp = LMTPHandler(self.run, self.store.resolve, self._deliver, check)
        server = await self.loop.create_server(
            lambda: LMTPServer(handler, data_size_limit=self.config.max_message_size,
                               hostname=self.config.hostname, loop=self.loop),
            sock=lis.sock)
        self.servers.append(server)

    async def _start_auth(self, lis):
        """Dovecot's auth protocol for Postfix (smtpd_sasl_type = dovecot)."""
        from roost.protocols.smtp import saslauth
        await self._stream_server(lis, lambda r, w: saslauth.serve(r, w, self.auth),
                                  saslauth.MAX_LINE)

    async def _start_socketmap(self, lis):
        """Postfix socketmap tables (domains, mailboxes, aliases, sender logins)."""
        from roost.protocols.smtp import socketmap
        await self._stream_server(lis, lambda r, w: socketmap.serve(r, w, self.run, self.store),
                                  65536)

    async def _stream_server(self, lis, handler, limit, ssl=None):
        """An asyncio streams server on a bound listener (``server.listen``:
        TCP, or a Unix socket for auth and socketmap). Its open connections
        are closed on stop (Postfix keeps them open). ``ssl``: an
        ``ssl.SSLContext`` for implicit TLS on TCP."""
        async def tracked(reader, writer):
            self._stream_writers.add(writer)
            try:
                await handler(reader, writer)
            finally:
                self._stream_writers.discard(writer)
        if lis.port is not None:
            server = await asyncio.start_server(
                tracked, sock=lis.sock, limit=limit, ssl=ssl,
                ssl_handshake_timeout=self.config.unauthenticated_command_timeout if ssl else None)
        else:
            server = await asyncio.start_unix_server(tracked, sock=lis.sock, limit=limit)
        self.servers.append(server)

    def _adopt(self, lis, factory, tls=None):
        """A Twisted factory serving a bound listener (``tls``: a context
        factory for implicit TLS)."""
        from twisted.internet import reactor
        if tls is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory
            factory = TLSMemoryBIOFactory(tls, False, factory)
        self.ports.append(reactor.adoptStreamPort(lis.sock.fileno(), lis.sock.family, factory))

    def _line_context(self, cls, loopback_cleartext, **extra):
        """A ``LineContext`` (POP3, ManageSieve): the server's logins, TLS and
        pre-login limits."""
        from roost.storage import account_data

        from .tls import context_factory
        self._tls = getattr(self, "_tls", None) or context_factory(self.config)
        cfg = self.config
        return cls(
            run=self.run, auth=self.auth,
            token_account=lambda token: account_data.token_account(self.store, token),
            store=self.store, tls=self._tls.ssl_context(), implementation=f"Roost {_version()}",
            loopback_cleartext=loopback_cleartext,
            unauthenticated_per_ip=cfg.unauthenticated_connections_per_ip,
            unauthenticated_total=cfg.unauthenticated_connections,
            unauthenticated_timeout=cfg.unauthenticated_command_timeout, **extra)

    async def _start_managesieve(self, lis):
        """ManageSieve (``protocols.sieve``): the account's Sieve scripts."""
        from roost.protocols import sieve
        ctx = self._line_context(sieve.Context, self.config.managesieve_loopback_cleartext)
        self._managesieve = ctx
        await self._stream_server(lis, lambda r, w: sieve.serve(ctx, r, w), sieve.MAX_LINE)

    def _pop3_context(self):
        """What the POP3 listeners share (``protocols.pop3``): one gate, one
        size cache, one lease holder name for this process."""
        if getattr(self, "_pop3", None) is None:
            import socket
            import uuid

            from roost.protocols import pop3
            self._pop3 = self._line_context(
                pop3.Context, self.config.pop3_loopback_cleartext,
                holder=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}")
        return self._pop3

    async def _start_pop3(self, lis, implicit_tls=False):
        """POP3 (``protocols.pop3``): STLS on ``pop3``, implicit TLS on ``pop3s``."""
        from roost.protocols import pop3
        ctx = self._pop3_context()
        await self._stream_server(lis, lambda r, w: pop3.serve(ctx, r, w, implicit_tls),
                                  pop3.MAX_LINE + 1, ssl=ctx.tls if implicit_tls else None)

    async def _start_pop3s(self, lis):
        await self._start_pop3(lis, implicit_tls=True)

    def _imap_context(self, implicit_tls):
        from roost.protocols.imap import IMAPContext
        from roost.storage.search import search

        from .auth import StoreChecker
        from .tls import context_factory
        from roost.protocols.imap.session import PreauthGate
        if not hasattr(self, "_imap_gate"):
            self._tls = getattr(self, "_tls", None) or context_factory(self.config)
            self._imap_gate = PreauthGate()     # IMAP and IMAPS count together
        cfg = self.config
        return IMAPContext(
            store=self.store, run=self.run, search=search, checker=StoreChecker(self.auth),
            authenticator=self.auth, tls=self._tls, implicit_tls=implicit_tls,
            hostname=cfg.hostname, append_limit=cfg.max_message_size,
            connections_per_user_ip=cfg.connections_per_user_ip,
            unauthenticated_per_ip=cfg.unauthenticated_connections_per_ip,
            unauthenticated_total=cfg.unauthenticated_connections,
            unauthenticated_timeout=cfg.unauthenticated_command_timeout,
            gate=self._imap_gate, append=self._append, append_many=self._append_many)

    async def _start_imap(self, lis, implicit_tls=False):
        from roost.protocols.imap import IMAPFactory
        ctx = self._imap_context(implicit_tls)
        self._adopt(lis, IMAPFactory(ctx), self._tls if implicit_tls else None)

    async def _start_imaps(self, lis):
        await self._start_imap(lis, implicit_tls=True)

    def _submission_context(self):
        """What the submission listeners share (``protocols.smtp.submission``)."""
        if getattr(self, "_submission", None) is None:
            from roost.protocols.smtp.submission import Context, Limits
            from roost.storage import account_data
            from roost.storage.outbound import parse_interval

            from .tls import context_factory
            self._tls = getattr(self, "_tls", None) or context_factory(self.config)
            cfg = self.config
            self._submission = Context(
                run=self.run, auth=self.auth,
                token_account=lambda token: account_data.token_account(self.store, token),
                store=self.store, outbound=self.outbound, delivery=self.delivery,
                hostname=cfg.hostname, tls=self._tls.ssl_context(),
                limits=Limits(
                    max_size=cfg.max_message_size,
                    messages_per_minute=cfg.submission_messages_per_minute,
                    messages_per_hour=cfg.submission_messages_per_hour,
                    messages_per_day=cfg.submission_messages_per_day,
                    recipients_per_message=cfg.submission_recipients_per_message,
                    recipients_per_day=cfg.submission_recipients_per_day,
                    max_hold=int(parse_interval(cfg.submission_max_hold)),
                    unauthenticated_per_ip=cfg.unauthenticated_connections_per_ip,
                    unauthenticated_total=cfg.unauthenticated_connections,
                    unauthenticated_timeout=cfg.unauthenticated_command_timeout),
                save_sent=cfg.submission_save_sent,
                loopback_cleartext=cfg.submission_loopback_cleartext)
        return self._submission

    async def _start_submission(self, lis, implicit_tls=False):
        from roost.protocols.smtp.submission import Submission
        ctx = self._submission_context()
        server = await self.loop.create_server(
            lambda: Submission(ctx, implicit_tls=implicit_tls), sock=lis.sock,
            ssl=ctx.tls if implicit_tls else None,
            ssl_handshake_timeout=self.config.unauthenticated_command_timeout if implicit_tls
            else None)
        self.servers.append(server)

    async def _start_submissions(self, lis):
        await self._start_submission(lis, implicit_tls=True)

    def edge_context(self):
        """What the MX-facing SMTP edge's connections share
        (``protocols.smtp.edge``): the verdicts pipeline
        (``protocols.mailauth.inbound``) without its ``spam`` object, because
        the edge scores spam itself once its own signals (DNSBL, FCrDNS) are
        in the verdicts."""
        if getattr(self, "_edge", None) is None:
            from roost.protocols.dns import Resolver
            from roost.protocols.smtp.edge import Context, Policy
            from roost.storage import greylist
            from roost.storage.outbound import parse_interval

            from .tls import context_factory
            self._tls = getattr(self, "_tls", None) or context_factory(self.config)
            cfg = self.config
            names = ("pregreet", "require_fcrdns", "greylist", "connections_per_ip",
                     "connections_per_network", "connections_total", "messages_per_minute",
                     "network_messages_per_minute", "recipients_per_minute",
                     "recipients_per_message", "commands_before_mail", "timeout", "lifetime",
                     "dnsbl_action")
            policy = Policy(
                max_size=cfg.max_message_size, dnsbl=tuple(cfg.smtp_dnsbl),
                greylist_policy=greylist.Policy(
                    delay=parse_interval(cfg.smtp_greylist_delay),
                    retry_window=parse_interval(cfg.smtp_greylist_retry_window),
                    allow_after=cfg.smtp_greylist_allow_after,
                    allow_for=parse_interval(cfg.smtp_greylist_allow_for)),
                **{n: getattr(cfg, "smtp_" + n) for n in names})
            self._edge = Context(run=self.run, store=self.store, delivery=self.delivery,
                                 outbound=self.outbound, resolver=Resolver(cfg.dns_nameservers),
                                 hostname=cfg.hostname, tls=self._tls.ssl_context(),
                                 policy=policy, spam=self.spam_filter(), inbound=self.inbound())
        return self._edge

    async def _start_smtp(self, lis):
        """The MX-facing SMTP edge (port 25 in production)."""
        from roost.protocols.smtp.edge import Edge
        ctx = self.edge_context()
        server = await self.loop.create_server(lambda: Edge(ctx), sock=lis.sock)
        self.servers.append(server)

    async def _start_jmap(self, lis):
        from roost.protocols import web
        from roost.protocols.jmap import site
        jmap = site(self.store, self.delivery, self.run, self.auth, self.config.hostname,
                    outbound=self.outbound, allowed_origins=self.config.jmap_allowed_origins,
                    push_allow_private=self.config.jmap_push_allow_private,
                    undo_send=self.config.jmap_undo_send,
                    web_push=None if self.primary else self.worker.push_changed)
        if self.worker is not None and self.primary:
            self.worker.push_refresh = jmap.jmap_service.backend.push_changed
        web.mount(jmap.resource, self.client_servers, self.config.hostname)
        self._adopt(lis, jmap)

    async def _start_metrics(self, lis):
        from twisted.web.server import Site

        from .metrics import resource
        site = Site(resource(self.metrics.registry))
        site.noisy = False
        self._adopt(lis, site)

    def client_servers(self):
        """The endpoints the client set-up documents describe: the listeners
        bound, under ``[server] hostname`` (cleartext IMAP is offered as
        STARTTLS: LOGIN needs TLS off loopback)."""
        from roost.protocols.web import Server
        host, out = self.config.hostname, []
        for kind, tls in (("imaps", "SSL"), ("imap", "STARTTLS"), ("submissions", "SSL"),
                          ("submission", "STARTTLS"), ("jmap", "plain")):
            if kind in self.addresses:
                port = self.addresses[kind][1]
                url = f"http://{host}:{port}/.well-known/jmap" if kind == "jmap" else ""
                out.append(Server(kind, host, port, tls, url))
        return out

    def reload_tls(self):
        """SIGHUP: read the certificate files again."""
        tls = getattr(self, "_tls", None)
        if tls is None:
            return
        try:
            cert = tls.reload()
        except Exception as exc:  # noqa: BLE001 - any bad file: keep serving the old pair
            print(f"roost: TLS certificate not reloaded, keeping the previous one: {exc}",
                  flush=True)
            return
        print(f"roost: TLS certificate reloaded: {cert.subject.rfc4514_string()}, valid until "
              f"{cert.not_valid_after_utc:%Y-%m-%d}", flush=True)

    def _deliver(self, data, recipients, sender, targets=None, auth_headers=b"", verdicts=None):
        return self.delivery.store(Incoming(data, tuple(recipients), sender=sender, targets=targets,
                                            auth_headers=auth_headers, verdicts=verdicts))

    def _append(self, account, mailbox, data, flags, date):
        """IMAP APPEND: ``Stored``, or the typed store error for the session's mapper."""
        (result,) = self.delivery.store(Incoming(data, account=account, mailboxes=(mailbox,),
                                                 flags=tuple(flags), internal_date=date))
        return result.stored_or_raise()

    def _append_many(self, account, mailbox, messages, replace=None):
        """IMAP MULTIAPPEND: every ``(data, flags, date)`` stored, or none; and
        REPLACE: ``replace`` = (mailbox pk, uids) removed in the same transaction."""
        return self.delivery.store_together([
            Incoming(data, account=account, mailboxes=(mailbox,), flags=tuple(flags),
                     internal_date=date) for data, flags, date in messages], replace)

    async def stop(self):
        """Stop listening, let in-flight deliveries finish, then close the store."""
        if getattr(self, "_prune_timer", None) is not None:
            self._prune_timer.cancel()
        if getattr(self, "_dmarc_timer", None) is not None:
            self._dmarc_timer.cancel()
        if self.relay is not None:
            await self.relay.stop()
        for server in self.servers:
            server.close()
        if getattr(self, "_lmtp", None) is not None:
            self._lmtp.shutdown()    # no new transaction; those under way finish
        if getattr(self, "_managesieve", None) is not None:
            self._managesieve.shutdown()
        if getattr(self, "_pop3", None) is not None:
            self._pop3.shutdown()
        for writer in list(self._stream_writers):
            writer.close()
        for path in self._unix_paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        if getattr(self, "_submission", None) is not None:
            self._submission.shutdown()
        if getattr(self, "_edge", None) is not None:
            self._edge.shutdown()
        for port in self.ports:
            await asyncio.ensure_future(_as_future(port.stopListening()))
        # The listeners have said BYE to their sessions; what is left in the
        # pool is deliveries (left to finish) and reads such as a long SEARCH,
        # which are aborted so that they do not hold the stop.
        if getattr(self, "_reindex", None) is not None:
            self._reindex[1].set()          # it stops after its batch; resumes next start
            await self.loop.run_in_executor(None, self._reindex[0].join, SHUTDOWN_GRACE)
        self.store.interrupt_reads()
        deadline = self.loop.time() + SHUTDOWN_GRACE
        lmtp = getattr(self, "_lmtp", None)
        while (self.inflight or (lmtp is not None and lmtp.busy)) and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        self.executor.shutdown(wait=True)
        if getattr(self, "_pop3", None) is not None:
            self._pop3.release_all()    # what closed sessions could not release any more
        self.auth.close()
        self.close_relay()
        self.delivery.close()
        self.store.close()
        if self.metrics is not None:
            self.metrics.uninstall()

    def close_relay(self):
        """Stop taking change notices and remove the socket (idempotent)."""
        if self._relay is None:
            return
        self.loop.remove_reader(self._relay.fileno())
        self._relay.close()
        self._relay = None
        try:
            os.unlink(relay_socket_path(self.config.data))
        except FileNotFoundError:
            pass


def _version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("roost")
    except PackageNotFoundError:
        return "dev"


def _as_future(d):
    from twisted.internet.defer import Deferred
    if isinstance(d, Deferred):
        return d.asFuture(asyncio.get_event_loop())
    fut = asyncio.get_event_loop().create_future()
    fut.set_result(d)
    return fut


def serve(config, worker=None):
    """Run Roost until SIGTERM/SIGINT: worker processes under a supervisor
    (``server.workers``) when ``[server] processes`` asks for more than one,
    else this process; ``worker``: the ``server.workers.Link`` of a worker."""
    if worker is None:
        from . import workers
        count = workers.processes(config)
        if count > 1:
            return workers.run(config, count)
    handler = logs.setup(config.log_level, config.log_format, config.log_file or None)
    loop = install_reactor()
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    app = Roost(config, loop, worker)
    failed = []

    def started():
        d = Deferred.fromFuture(asyncio.ensure_future(app.start()))

        def failure(f):
            log.error("cannot start: %s", f.getErrorMessage())
            print(f"roost: cannot start: {f.getErrorMessage()}", flush=True)
            failed.append(f)
            reactor.stop()
        d.addErrback(failure)

    reactor.callWhenRunning(started)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(app.reload_tls))
    # Our own SIGINT/SIGTERM handlers: Twisted leaves a signal alone that the
    # process inherited as ignored (a shell's background job, nohup), and
    # DESIGN.md promises a clean stop on both whatever started us.
    def stop():
        from twisted.internet.error import ReactorNotRunning
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass   # a second signal while stopping

    def handle_signals():   # once running: after Twisted's own, which they replace
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: reactor.callFromThread(stop))
    reactor.callWhenRunning(handle_signals)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromFuture(asyncio.ensure_future(app.stop())))
    try:
        reactor.run()
    finally:
        app.close_relay()
        handler.close()
    return 1 if failed and worker is not None else 0
