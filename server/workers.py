"""Worker processes: a supervisor binds every listener once and forks N
workers that serve them all (pre-fork, as Dovecot's service processes and
gunicorn do; the kernel gives each new connection to one worker).

The supervisor (``run``) prepares the data directory before any worker
exists (``server.app.prepare``: schema, recovery, the relay's leases), binds
the sockets and prints one line per listener, forks the workers, prints
"roost: ready" once each has started, and then only watches:

- **Change events.** Each worker has a ``SOCK_SEQPACKET`` pair to the
  supervisor (reliable, one message per change, no queue limit short of the
  socket buffer). A worker sends every change it commits; the supervisor
  hands it to every other worker, whose store bus delivers it to that
  process's IDLE, NOTIFY and JMAP push subscribers. Changes other programs
  relay to ``DATA/roost.sock`` (``roost deliver``, ``roost import``) reach
  every worker the same way. Per-process caches need nothing more: the
  sorted views and the JMAP query cache are labelled with the account's
  state and read the change log when it moved; the login cache compares the
  stored hash on every hit.
- **Background work.** Worker 0 is the primary: it alone runs the outbound
  relay (the others' submissions wake it through the supervisor), JMAP
  push notifications to push subscriptions (the others tell it when an
  account's subscriptions change), the daily prune, DMARC reports and the
  background reindex, and answers metrics scrapes (with its own figures).
  Its replacement takes the role over.
- **Deaths.** A worker that dies is forked again (after a pause if it died
  young). What it had in flight was never acknowledged; the new worker's
  start-up recovery finishes or discards the dead one's staged files and file
  operations, and the relay's leases it held lapse. A worker whose
  supervisor is gone (its socket pair reads end-of-file) stops.
- **Signals.** SIGTERM/SIGINT stop every worker (each finishes its in-flight
  deliveries, as a single process does) and then the supervisor; SIGHUP is
  passed on (TLS certificates reloaded).

Writes of all workers share the data directory: SQLite in WAL mode, one
writer at a time across processes, fsyncs shared (``storage.durable``);
each worker's group committer batches its own deliveries. The alternative,
one commit-owner process fed by the others over a local socket, was not
built. ``python -m bench.writers`` measures what decides between them:
delivering processes x threads into one data directory, with the writer
lock's wait and hold time per message. On this 2-core machine (loaded, 8
threads) one process delivered 314-566 msgs/s and two 242-375: the writer
lock is held 1.3-2.9 ms per message, much of it a committing thread waiting
for its own process's GIL after each SQLite call, and two processes halve
each one's batches. So deliveries alone do not scale past one process
today; what workers buy is the protocol work around them (parsing, IMAP
and JMAP commands, TLS), which runs outside the lock on every core. A
commit owner (a process with no other threads, so no GIL waits inside the
lock, and one batch for all workers) is the next step if delivery rates
must grow further.

Failed logins are told to every worker, so the pacing of password
guessing (``server.auth.Throttle``) is the same whichever workers a guesser
lands on. Other limits that count in memory (connections per address,
unauthenticated connections, submission and edge rates) are per worker: with
N workers a client may reach N times a per-process figure.
"""

import errno
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from collections import deque

from roost.storage.notify import bind_datagram, decode, drain, encode_all
from roost.storage.store import relay_socket_path

CHANGE, READY, WAKE, PUSH, FAILED = b"C", b"R", b"W", b"P", b"F"
STOP_WAIT = 45            # seconds a worker gets to stop (in-flight deliveries finish) before SIGKILL
YOUNG = 5                 # a worker that dies sooner than this after its start is restarted after...
RESTART_PAUSE = 1.0       # ... this pause
MAX_BACKLOG = 10000       # change messages held for a worker that does not read


def processes(config):
    """How many worker processes ``config`` asks for (0: one per core)."""
    if config.processes > 0:
        return config.processes
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class Link:
    """A worker's end of its socket pair with the supervisor."""

    def __init__(self, slot, sock, sockets):
        self.slot = slot
        self.sockets = sockets        # listener name -> server.listen.Bound
        self._out = sock
        self._out.settimeout(5)      # a supervisor that does not read is a stuck one
        self._in = sock.dup()
        self._in.setblocking(False)
        self._lock = threading.Lock()
        self.app = None
        self.push_refresh = None      # the primary's: fn(account id) re-reads push subscriptions

    def attach(self, app):
        """Wire the worker's store bus and relay to the supervisor."""
        self.app = app
        app.store.bus.forward = self.send_change
        app.auth.throttle.on_failed = self.login_failed
        app.loop.add_reader(self._in.fileno(), self._readable)

    def _send(self, message):
        with self._lock:
            try:
                self._out.send(message)
            except OSError as exc:
                print(f"roost: worker {self.slot}: lost a message to the supervisor: {exc}",
                      file=sys.stderr, flush=True)

    def send_change(self, change):
        for data in encode_all(change, os.getpid()):
            self._send(CHANGE + data)

    def wake_relay(self):
        self._send(WAKE)

    def ready(self):
        self._send(READY)

    def login_failed(self, keys):
        """A wrong password here: every other worker's throttle counts it."""
        self._send(FAILED + json.dumps([list(k) for k in keys]).encode())

    def push_changed(self, account_id):
        """An account's JMAP push subscriptions changed: the primary re-reads them."""
        self._send(PUSH + str(int(account_id)).encode())

    def _readable(self):
        for message in drain(self._in):
            if not message:           # the supervisor is gone: stop serving
                self.app.loop.remove_reader(self._in.fileno())
                os.kill(os.getpid(), signal.SIGTERM)
                return
            kind, body = message[:1], message[1:]
            if kind == CHANGE:
                got = decode(body)
                if got is not None:
                    self.app.store.bus.deliver(got[0])
            elif kind == WAKE and self.app.outbound.wakeup is not None and self.app.primary:
                self.app.outbound.wakeup()
            elif kind == PUSH and self.push_refresh is not None and body.isdigit():
                self.push_refresh(int(body))
            elif kind == FAILED:
                try:
                    keys = [tuple(k) for k in json.loads(body) if len(k) == 2]
                except (ValueError, TypeError):
                    continue
                self.app.auth.throttle.failed_elsewhere(keys)

    def close(self):
        for sock in (self._in, self._out):
            sock.close()


class _Worker:
    def __init__(self, slot, pid, sock):
        self.slot = slot
        self.pid = pid
        self.sock = sock
        self.started = time.monotonic()
        self.ready = False
        self.backlog = deque()


class Supervisor:
    def __init__(self, config, bound, count):
        self.config = config
        self.bound = bound
        self.count = count
        self.workers = {}               # slot -> _Worker
        self.sel = selectors.DefaultSelector()
        self.stopping = False
        self.announced = False
        self.failed = False
        self.pending = {}               # slot -> time it may be forked again
        self.relay_path = relay_socket_path(config.data)
        self.hub = bind_datagram(self.relay_path)
        if self.hub is not None:
            self.sel.register(self.hub, selectors.EVENT_READ, ("hub", None))
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.sel.register(self._wake_r, selectors.EVENT_READ, ("signal", None))
        self.signals = deque()

    # --- processes ----------------------------------------------------------------

    def spawn(self, slot):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        if threading.active_count() > 1:
            print("roost: warning: forking a worker from a process with threads",
                  file=sys.stderr, flush=True)
        pid = os.fork()
        if pid == 0:
            ours.close()
            code = 1
            try:
                self._child_cleanup()
                code = _worker_main(self.config, slot, theirs, self.bound)
            except BaseException as exc:  # noqa: BLE001 - a child must never return into the supervisor
                print(f"roost: worker {slot} failed: {exc!r}", file=sys.stderr, flush=True)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        theirs.close()
        ours.setblocking(False)
        worker = self.workers[slot] = _Worker(slot, pid, ours)
        self.sel.register(ours, selectors.EVENT_READ, ("worker", worker))
        return worker

    def _child_cleanup(self):
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        for w in self.workers.values():
            w.sock.close()
        if self.hub is not None:
            self.hub.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self.sel.close()

    def _reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for w in list(self.workers.values()):
                if w.pid == pid:
                    self._gone(w, status)

    def _gone(self, w, status):
        self.sel.unregister(w.sock)
        w.sock.close()
        del self.workers[w.slot]
        if self.stopping:
            return
        how = (f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
               else f"exit {os.WEXITSTATUS(status)}")
        if not self.announced:
            print(f"roost: cannot start: worker {w.slot} ended ({how}) before it was ready",
                  flush=True)
            self.failed = True
            self.stop()
            return
        print(f"roost: worker {w.slot} (pid {w.pid}) ended ({how}); starting another",
              file=sys.stderr, flush=True)
        young = time.monotonic() - w.started < YOUNG
        self.pending[w.slot] = time.monotonic() + (RESTART_PAUSE if young else 0)

    # --- messages -----------------------------------------------------------------

    def _from_worker(self, w):
        for message in drain(w.sock):
            if not message:
                return              # it is exiting; SIGCHLD tells the rest
            kind = message[:1]
            if kind in (CHANGE, FAILED):
                self._broadcast(message, but=w)
            elif kind == READY:
                w.ready = True
                if not self.announced and len(self.workers) == self.count and \
                        all(x.ready for x in self.workers.values()):
                    self.announced = True
                    print("roost: ready", flush=True)
            elif kind in (WAKE, PUSH):      # work for the primary
                primary = self.workers.get(0)
                if primary is not None:
                    self._send(primary, message)

    def _from_hub(self):
        for data in drain(self.hub):
            if data:
                self._broadcast(CHANGE + data)

    def _broadcast(self, message, but=None):
        for w in list(self.workers.values()):
            if w is not but:
                self._send(w, message)

    def _send(self, w, message):
        if w.backlog:
            if len(w.backlog) < MAX_BACKLOG:
                w.backlog.append(message)
            return
        try:
            w.sock.send(message)
        except (BlockingIOError, InterruptedError):
            w.backlog.append(message)
            self.sel.modify(w.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, ("worker", w))
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                raise

    def _flush(self, w):
        while w.backlog:
            try:
                w.sock.send(w.backlog[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                w.backlog.clear()
                break
            w.backlog.popleft()
        self.sel.modify(w.sock, selectors.EVENT_READ, ("worker", w))

    # --- the loop -----------------------------------------------------------------

    def _signal(self, signum, _frame):
        self.signals.append(signum)

    def stop(self):
        if self.stopping:
            return
        self.stopping = True
        self.deadline = time.monotonic() + STOP_WAIT
        for w in self.workers.values():
            _kill(w.pid, signal.SIGTERM)

    def run(self):
        signal.set_wakeup_fd(self._wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(sig, self._signal)
        for slot in range(self.count):
            self.spawn(slot)
        while self.workers or not self.stopping:
            now = time.monotonic()
            for slot, when in list(self.pending.items()):
                if when <= now and not self.stopping:
                    del self.pending[slot]
                    self.spawn(slot)
            if self.stopping and now > self.deadline:
                for w in self.workers.values():
                    _kill(w.pid, signal.SIGKILL)
                self.deadline = now + 5
            timeout = 0.5 if self.pending or self.stopping else None
            for key, events in self.sel.select(timeout):
                kind, w = key.data
                if kind == "signal":
                    try:
                        os.read(self._wake_r, 512)
                    except BlockingIOError:
                        pass
                elif kind == "hub":
                    self._from_hub()
                elif kind == "worker" and w.slot in self.workers and self.workers[w.slot] is w:
                    if events & selectors.EVENT_WRITE:
                        self._flush(w)
                    if events & selectors.EVENT_READ:
                        self._from_worker(w)
            while self.signals:         # SIGCHLD only wakes the loop: it reaps below
                signum = self.signals.popleft()
                if signum == signal.SIGHUP:
                    for w in self.workers.values():
                        _kill(w.pid, signal.SIGHUP)
                elif signum != signal.SIGCHLD:
                    self.stop()
            self._reap()
        self.close()
        return 1 if self.failed else 0

    def close(self):
        if self.hub is not None:
            self.sel.unregister(self.hub)
            self.hub.close()
            try:
                os.unlink(self.relay_path)
            except FileNotFoundError:
                pass
        for b in self.bound.values():
            b.sock.close()
            if b.port is None:
                try:
                    os.unlink(b.host)
                except FileNotFoundError:
                    pass


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _worker_main(config, slot, sock, bound):
    from .app import serve
    return serve(config, worker=Link(slot, sock, bound))


def run(config, count):
    """Supervise ``count`` worker processes until SIGTERM/SIGINT; returns the exit code."""
    import logging

    from . import listen, logs
    from .app import LISTENER_ORDER, prepare
    from .config import parse_address
    # One write per line, whatever PYTHONUNBUFFERED says: the workers share
    # these streams, and an unbuffered print writes its text and its newline
    # apart, so two workers' lines would run into each other.
    for stream in (sys.stdout, sys.stderr):
        stream.reconfigure(line_buffering=True, write_through=False)
    handler = logs.setup(config.log_level, config.log_format, config.log_file or None)
    try:
        store, delivery, _outbound = prepare(config)
        delivery.close()
        store.close()
        if not config.tls_cert:     # made once, not by each worker at the same moment
            from .tls import ensure_certificate
            ensure_certificate(config.data, config.hostname)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()       # its writer thread ends: no thread may be alive at fork
    bound = {}
    try:
        for name in LISTENER_ORDER:
            addr = parse_address(config.listen.get(name))
            if addr is not None:
                bound[name] = listen.bind(name, *addr)
    except OSError as exc:
        for b in bound.values():
            b.sock.close()
        print(f"roost: cannot start: {exc}", flush=True)
        return 1
    for b in bound.values():
        print(f"roost: {b.name} listening on {b.where}", flush=True)
    print(f"roost: {count} worker processes", flush=True)
    return Supervisor(config, bound, count).run()
