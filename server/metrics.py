"""Prometheus metrics, served at ``/metrics`` on ``--metrics HOST:PORT`` (off unless asked).

Design decisions:

- The counters come from the log events (``server.logs`` lists them): a
  ``logging.Handler`` on the "roost" logger turns each connection, login,
  command and delivery record into metric updates. A protocol reports an event
  once, in one line, and neither protocols nor storage import
  ``prometheus_client``. With metrics on, the "roost" loggers make DEBUG
  records (the command events) whatever the log level shows.
- Connections are counted for IMAP and LMTP; JMAP is HTTP (keep-alive, and
  WebSockets taken over from the channel), so its requests and method calls
  are what it counts.
- Store commit latency comes from ``storage.txn.observers`` (storage imports
  nothing of the server); queue depths are read when scraped: the delivery
  group committer's queue and the tasks on the worker pool.
- Label values stay bounded: a protocol's command label takes at most
  ``MAX_COMMANDS`` distinct values (IMAP verbs and JMAP method names are
  registry names anyway; anything past the limit counts as "other").
- One process: Roost serves every protocol from one process today, so the
  metrics are plain in-memory ones in Roost's own registry (with the process
  and GC collectors). Scrapes are answered by ``prometheus_client``'s Twisted
  resource, on the reactor's thread pool.
"""

import logging
import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import gc_collector, platform_collector, process_collector

from roost.storage import txn

from . import logs

MAX_COMMANDS = 200
LATENCY = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30)


class Metrics(logging.Handler):
    """Roost's metrics registry, fed by log records and the store's commit observer."""

    def __init__(self, app=None):
        super().__init__(logging.DEBUG)
        r = self.registry = CollectorRegistry()
        process_collector.ProcessCollector(registry=r)
        platform_collector.PlatformCollector(registry=r)
        gc_collector.GCCollector(registry=r)
        self.connections = Counter("roost_connections", "Connections accepted", ["proto"], registry=r)
        self.open = Gauge("roost_connections_open", "Connections open now", ["proto"], registry=r)
        self.commands = Counter("roost_commands", "Commands answered (IMAP commands, JMAP "
                                "method calls, LMTP transactions)", ["proto", "command", "outcome"],
                                registry=r)
        self.command_seconds = Histogram("roost_command_seconds", "Time to answer a command",
                                         ["proto", "command"], buckets=LATENCY, registry=r)
        self.logins = Counter("roost_logins", "Login attempts", ["proto", "outcome"], registry=r)
        self.auth_failures = Counter("roost_auth_failures", "Failed or refused logins", ["proto"],
                                     registry=r)
        self.deliveries = Counter("roost_deliveries", "Deliveries (per recipient or mailbox item)",
                                  ["status"], registry=r)
        self.delivery_seconds = Histogram("roost_delivery_seconds", "Time to store a delivery",
                                          buckets=LATENCY, registry=r)
        self.commit_seconds = Histogram("roost_store_commit_seconds", "Time of a store commit",
                                        buckets=LATENCY, registry=r)
        if app is not None:
            Gauge("roost_delivery_queue", "Delivery batches waiting for the group committer",
                  registry=r).set_function(lambda: app.delivery.committer.pending)
            Gauge("roost_worker_tasks", "Blocking tasks queued or running on the worker pool",
                  registry=r).set_function(lambda: app.inflight)
        self._names = {}
        self._lock = threading.Lock()
        self._events = {"connection": self._connection, "login": self._login,
                        "command": self._command, "delivery": self._delivery}

    def install(self):
        """Start taking events and commit times."""
        logging.getLogger("roost").addHandler(self)
        logs.want(logging.DEBUG)
        txn.observers.append(self.committed)

    def uninstall(self):
        logging.getLogger("roost").removeHandler(self)
        if self.committed in txn.observers:
            txn.observers.remove(self.committed)

    def committed(self, seconds):
        self.commit_seconds.observe(seconds)

    # --- log records -> metrics -------------------------------------------------

    def emit(self, record):
        handle = self._events.get(getattr(record, "event", None))
        if handle is not None:
            try:
                handle(record)
            except Exception:  # noqa: BLE001 - a metric must never break the caller
                self.handleError(record)

    def _connection(self, r):
        if r.state == "open":
            self.connections.labels(r.proto).inc()
            self.open.labels(r.proto).inc()
        elif r.state == "close":
            self.open.labels(r.proto).dec()

    def _login(self, r):
        self.logins.labels(r.proto, r.outcome).inc()
        if r.outcome != "ok":
            self.auth_failures.labels(r.proto).inc()

    def _command(self, r):
        name = self._bounded(r.proto, getattr(r, "verb", None) or "unparsed")
        self.commands.labels(r.proto, name, str(r.outcome)).inc()
        self.command_seconds.labels(r.proto, name).observe(r.ms / 1000)

    def _delivery(self, r):
        self.deliveries.labels(r.status).inc()
        self.delivery_seconds.observe(r.ms / 1000)

    def _bounded(self, proto, name):
        seen = self._names.get(proto)
        if seen is None:
            seen = self._names.setdefault(proto, set())
        if name in seen:
            return name
        with self._lock:
            if len(seen) >= MAX_COMMANDS:
                return "other"
            seen.add(name)
        return name


def resource(registry):
    """The twisted.web root serving ``/metrics``."""
    from prometheus_client.twisted import MetricsResource
    from twisted.web.resource import Resource
    root = Resource()
    root.putChild(b"metrics", MetricsResource(registry))
    return root
