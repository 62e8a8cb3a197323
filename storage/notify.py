"""Change notification: "account X, types Y changed to state S".

The store publishes one ``Change`` after each committed write; IMAP IDLE, JMAP
push and webhooks subscribe. ``kinds`` are JMAP type names only; what changed
that JMAP has no type for (IMAP subscriptions and METADATA entries, which
IMAP NOTIFY reports) is in ``imap``, which JMAP push never reads. Publishing happens on the writer's thread, so the
bus hands each event to ``dispatch`` (set by the server to hop onto the event
loop). Nothing polls.

Other processes on the same data directory (``roost deliver`` run by Postfix,
``roost import``) relay their changes to the running server over a Unix
datagram socket, ``DATA/roost.sock``: best effort, one small JSON datagram per
change (``encode``/``decode``), dropped silently when no server listens. The
server's worker processes pass theirs through the supervisor
(``server.workers``), which hands each to every other worker: ``forward``
is where a bus sends what it publishes, ``deliver`` what arrives from
elsewhere. A PostgreSQL LISTEN/NOTIFY relay for several nodes plugs in the
same way.
"""

import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field

log = logging.getLogger("roost.notify")


@dataclass(frozen=True)
class Change:
    account_id: int
    modseq: int
    kinds: frozenset = field(default_factory=frozenset)      # JMAP type names
    mailbox_ids: frozenset = field(default_factory=frozenset)  # mailboxes whose contents changed
    # IMAP-only changes: ("subscription", name, subscribed now) and
    # ("metadata", mailbox id or 0 for the server's entries, entry name)
    imap: frozenset = field(default_factory=frozenset)


def encode(change, origin=0):
    """A change as one small JSON datagram; ``origin``: the sending process's pid."""
    return json.dumps({"a": change.account_id, "m": change.modseq, "k": sorted(change.kinds),
                       "b": sorted(change.mailbox_ids), "i": [list(t) for t in change.imap],
                       "p": origin}).encode()


MAX_PAYLOAD = 60000     # bytes of one datagram or worker message (receivers read 64 KiB)


def encode_all(change, origin=0):
    """``encode``'s payloads for ``change``, split into several changes of
    the same account and MODSEQ when one would exceed ``MAX_PAYLOAD`` (a
    transaction that touched thousands of mailboxes)."""
    data = encode(change, origin)
    if len(data) <= MAX_PAYLOAD:
        return [data]
    boxes, imap = sorted(change.mailbox_ids), sorted(change.imap, key=repr)
    out = []
    for i in range(0, max(len(boxes), 1), 2000):
        out.append(encode(Change(change.account_id, change.modseq, change.kinds,
                                 frozenset(boxes[i:i + 2000])), origin))
    for i in range(0, len(imap), 100):
        out.append(encode(Change(change.account_id, change.modseq, change.kinds,
                                 imap=frozenset(imap[i:i + 100])), origin))
    return [d for d in out if len(d) <= MAX_PAYLOAD]


def decode(data):
    """``(change, origin pid)`` from ``encode``'s bytes; None when malformed."""
    try:
        msg = json.loads(data)
        change = Change(int(msg["a"]), int(msg["m"]), frozenset(msg["k"]), frozenset(msg["b"]),
                        frozenset(tuple(t) for t in msg.get("i", ())))
        return change, int(msg.get("p", 0))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class ChangeBus:
    def __init__(self):
        self._subs = {}
        self._lock = threading.Lock()
        self.dispatch = lambda fn, change: fn(change)
        self.forward = None    # fn(change): where this process's changes go besides its own subscribers

    def subscribe(self, account_id, callback):
        """Call ``callback(change)`` for each change of the account; returns an unsubscribe function."""
        with self._lock:
            self._subs.setdefault(account_id, []).append(callback)

        def unsubscribe():
            with self._lock:
                subs = self._subs.get(account_id, [])
                if callback in subs:
                    subs.remove(callback)
                if not subs:
                    self._subs.pop(account_id, None)
        return unsubscribe

    def publish(self, change):
        """A change made by this process: to its subscribers, then on."""
        self.deliver(change)
        if self.forward is not None:
            self.forward(change)

    def deliver(self, change):
        """A change (made here or elsewhere) to this process's subscribers."""
        with self._lock:
            subs = list(self._subs.get(change.account_id, ()))
        for callback in subs:
            self.dispatch(callback, change)

    def relay_to(self, path):
        """Send this process's changes to the server's datagram socket at ``path``."""
        def send(change):
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                    sock.setblocking(False)
                    for data in encode_all(change, os.getpid()):
                        sock.sendto(data, path)
            except OSError:
                pass  # no server running, or its queue is full: it reads the database anyway
        self.forward = send

    def listen(self, path):
        """Bind the relay socket (the server does this) and return it; feed each
        datagram to ``receive``. Returns None when the path cannot be bound."""
        self.forward = None
        return bind_datagram(path)

    def receive(self, sock):
        """Hand every pending datagram on ``sock`` to local subscribers."""
        for data in drain(sock):
            got = decode(data)
            if got is not None:
                self.deliver(got[0])


def bind_datagram(path):
    """A non-blocking Unix datagram socket bound at ``path`` (a stale one is
    replaced), or None when it cannot be bound."""
    try:
        if os.path.exists(path):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
    except OSError as exc:
        log.warning("change relay socket %s unavailable: %s", path, exc)
        return None
    sock.setblocking(False)
    return sock


def drain(sock):
    """Every datagram (or ``SOCK_SEQPACKET`` message) waiting on non-blocking
    ``sock``. An empty one ends the run: on a connected socket it is the end
    of the stream, and so is an error."""
    while True:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        yield data
        if not data:
            return
