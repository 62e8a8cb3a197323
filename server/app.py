"""Wiring: config -> store -> auth -> listeners, on one event loop.

Owns process start-up and shut-down. Twisted's asyncioreactor is installed
first, so Twisted protocols (IMAP, JMAP) and asyncio ones (aiosmtpd LMTP and
submission) share one loop. Blocking work (database, fsync) goes to a
bounded thread pool through ``Roost.run``; argon2 to the authenticator's own
smaller pool (``[auth] hash_threads``). This is the only package that
knows every other one.
"""

import asyncio
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from roost.storage.delivery import Delivery, Incoming, recover
from roost.storage.store import Store, relay_socket_path

from .auth import Authenticator
from .config import parse_address

log = logging.getLogger("roost")

SHUTDOWN_GRACE = 30
PRUNE_EVERY = 24 * 3600


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

    def __init__(self, config, loop):
        self.config = config
        self.loop = loop
        os.makedirs(config.data, exist_ok=True)
        self.store = Store.open(config.data, config.database or None)
        recover(self.store)
        self.delivery = Delivery(self.store, max_size=config.max_message_size,
                                 dedupe_window=config.dedupe_window)
        self.executor = ThreadPoolExecutor(config.workers, thread_name_prefix="roost-worker")
        self.auth = Authenticator(self.store, self.run, trusted_proxies=config.trusted_proxies,
                                  hash_threads=config.hash_threads, hash_queue=config.hash_queue,
                                  max_delay=config.max_login_delay)
        self.store.bus.dispatch = lambda fn, change: loop.call_soon_threadsafe(fn, change)
        self._relay = self.store.bus.listen(relay_socket_path(config.data))
        if self._relay is not None:
            loop.add_reader(self._relay.fileno(), self.store.bus.receive, self._relay)
        self.servers = []     # asyncio servers
        self.ports = []       # Twisted listening ports
        self.addresses = {}   # name -> (host, port) actually bound
        self.inflight = 0

    async def run(self, fn, *args):
        """Run blocking ``fn(*args)`` on the worker pool."""
        self.inflight += 1
        try:
            return await self.loop.run_in_executor(self.executor, fn, *args)
        finally:
            self.inflight -= 1

    async def start(self):
        for name in ("lmtp", "imap", "imaps", "jmap", "submission", "smtp", "managesieve"):
            addr = parse_address(self.config.listen.get(name))
            if addr is None:
                continue
            starter = getattr(self, f"_start_{name}", None)
            if starter is None:
                print(f"roost: {name} is not part of this version yet; not listening", flush=True)
                continue
            host, port = await starter(*addr)
            self.addresses[name] = (host, port)
            print(f"roost: {name} listening on {host}:{port}", flush=True)
        print("roost: ready", flush=True)
        self._prune_history()

    def _prune_history(self):
        """Trim the change log now, then once a day."""
        async def prune():
            try:
                removed = await self.run(self.store.prune_history, self.config.history_days * 86400)
                if removed:
                    log.info("pruned %d change-log rows older than %d days", removed,
                             self.config.history_days)
            except Exception:  # noqa: BLE001 - retried tomorrow
                log.exception("pruning the change log")
        self._prune_task = asyncio.ensure_future(prune())
        self._prune_timer = self.loop.call_later(PRUNE_EVERY, self._prune_history)

    async def _start_lmtp(self, host, port):
        from roost.protocols.lmtp import LMTPHandler, LMTPServer
        handler = LMTPHandler(self.run, self.store.resolve, self._deliver)
        server = await self.loop.create_server(
            lambda: LMTPServer(handler, data_size_limit=self.config.max_message_size,
                               hostname=self.config.hostname, loop=self.loop),
            host, port)
        self.servers.append(server)
        return host, server.sockets[0].getsockname()[1]

    def _imap_context(self, implicit_tls):
        from roost.protocols.imap import IMAPContext
        from roost.storage.search import search

        from .auth import StoreChecker
        from .tls import context_factory
        if not hasattr(self, "_tls"):
            self._tls = context_factory(self.config)
        return IMAPContext(
            store=self.store, run=self.run, search=search, checker=StoreChecker(self.auth),
            authenticator=self.auth, tls=self._tls, implicit_tls=implicit_tls,
            hostname=self.config.hostname, append_limit=self.config.max_message_size,
            connections_per_user_ip=self.config.connections_per_user_ip,
            append=self._append)

    async def _start_imap(self, host, port, implicit_tls=False):
        from twisted.internet import reactor

        from roost.protocols.imap import IMAPFactory
        ctx = self._imap_context(implicit_tls)
        if implicit_tls:
            listening = reactor.listenSSL(port, IMAPFactory(ctx), self._tls, interface=host)
        else:
            listening = reactor.listenTCP(port, IMAPFactory(ctx), interface=host)
        self.ports.append(listening)
        return host, listening.getHost().port

    async def _start_imaps(self, host, port):
        return await self._start_imap(host, port, implicit_tls=True)

    async def _start_jmap(self, host, port):
        from twisted.internet import reactor

        from roost.protocols.jmap import site
        listening = reactor.listenTCP(port, site(self.store, self.delivery, self.run, self.auth,
                                                 self.config.hostname), interface=host)
        self.ports.append(listening)
        return host, listening.getHost().port

    def _deliver(self, data, recipients, sender, targets=None):
        return self.delivery.store(Incoming(data, tuple(recipients), sender=sender, targets=targets))

    def _append(self, account, mailbox, data, flags, date):
        """IMAP APPEND: ``Stored``, or the typed store error for the session's mapper."""
        (result,) = self.delivery.store(Incoming(data, account=account, mailboxes=(mailbox,),
                                                 flags=tuple(flags), internal_date=date))
        return result.stored_or_raise()

    async def stop(self):
        """Stop listening, let in-flight deliveries finish, then close the store."""
        if getattr(self, "_prune_timer", None) is not None:
            self._prune_timer.cancel()
        for server in self.servers:
            server.close()
        for port in self.ports:
            await asyncio.ensure_future(_as_future(port.stopListening()))
        deadline = self.loop.time() + SHUTDOWN_GRACE
        while self.inflight and self.loop.time() < deadline:
            await asyncio.sleep(0.05)
        self.executor.shutdown(wait=True)
        self.auth.close()
        if self._relay is not None:
            self.loop.remove_reader(self._relay.fileno())
            self._relay.close()
        self.delivery.close()
        self.store.close()


def _as_future(d):
    from twisted.internet.defer import Deferred
    if isinstance(d, Deferred):
        return d.asFuture(asyncio.get_event_loop())
    fut = asyncio.get_event_loop().create_future()
    fut.set_result(d)
    return fut


def serve(config):
    """Run Roost until SIGTERM/SIGINT."""
    loop = install_reactor()
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    app = Roost(config, loop)

    def started():
        d = Deferred.fromFuture(asyncio.ensure_future(app.start()))

        def failed(f):
            print(f"roost: cannot start: {f.getErrorMessage()}", file=sys.stderr, flush=True)
            reactor.stop()
        d.addErrback(failed)

    reactor.callWhenRunning(started)
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: Deferred.fromFuture(asyncio.ensure_future(app.stop())))
    reactor.run()
    return 0
