"""Change notification: "account X, types Y changed to state S".

The store publishes one ``Change`` after each committed write; IMAP IDLE, JMAP
push and webhooks subscribe. Publishing happens on the writer's thread, so the
bus hands each event to ``dispatch`` (set by the server to hop onto the event
loop). Nothing polls. A PostgreSQL LISTEN/NOTIFY relay for several nodes plugs
in as another publisher of the same events.
"""

import threading
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Change:
    account_id: int
    modseq: int
    kinds: frozenset = field(default_factory=frozenset)      # JMAP type names
    mailbox_ids: frozenset = field(default_factory=frozenset)  # mailboxes whose contents changed


class ChangeBus:
    def __init__(self):
        self._subs = {}
        self._lock = threading.Lock()
        self.dispatch = lambda fn, change: fn(change)

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
