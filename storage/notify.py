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
change, dropped silently when no server listens. A PostgreSQL LISTEN/NOTIFY
relay for several nodes plugs in the same way.
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


class ChangeBus:
    def __init__(self):
        self._subs = {}
        self._lock = threading.Lock()
        self.dispatch = lambda fn, change: fn(change)
        self.relay_to = None   # the server's socket path, in processes that are not the server

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
        with self._lock:
            subs = list(self._subs.get(change.account_id, ()))
        for callback in subs:
            self.dispatch(callback, change)
        if self.relay_to:
            self._relay(change)

    def _relay(self, change):
        payload = json.dumps({"a": change.account_id, "m": change.modseq, "k": sorted(change.kinds),
                              "b": sorted(change.mailbox_ids),
                              "i": [list(t) for t in change.imap]}).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                sock.sendto(payload, self.relay_to)
        except OSError:
            pass  # no server running, or its queue is full: it reads the database anyway

    def listen(self, path):
        """Bind the relay socket (the server does this) and return it; feed each
        datagram to ``receive``. Returns None when the path cannot be bound."""
        self.relay_to = None
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

    def receive(self, sock):
        """Publish every pending datagram on ``sock`` to local subscribers."""
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            try:
                msg = json.loads(data)
                change = Change(int(msg["a"]), int(msg["m"]), frozenset(msg["k"]), frozenset(msg["b"]),
                                frozenset(tuple(t) for t in msg.get("i", ())))
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            self.publish(change)
