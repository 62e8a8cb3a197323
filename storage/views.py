"""Sorted views of a mailbox, and a cache of ordered query results.

Owns the per-process, per-store caches behind every "list these messages in
this order" request: JMAP Email/query uses them today and IMAP SORT is meant
to share them, so the API is in mail terms only (accounts, mailboxes,
messages, threads, the change log), never in a protocol's. A store's views
are ``for_store(store)``: one ``Views`` per store object in the process.

Two caches, both bounded (entry count, ids per entry, ids in all entries):

- Mailbox views: ``Views.mailbox(account, mailbox, key, ascending)`` is the
  mailbox's messages sorted by one key, kept fresh from the change log. When
  the account's Email state has moved, only the messages changed since the
  view was built are re-read: for ``received`` and ``size`` they are
  re-placed by bisection (a message's arrival time and size never change, so
  a new message in a 10k mailbox costs a few rows, not a re-sort); for the
  other keys a flag change keeps the order as it is, a removal filters it,
  and only an added message makes the database sort the mailbox again (their
  order is the database's collation, which Python must not imitate). A view
  older than the history floor, or more than ``MAX_DELTA`` changes behind, is
  rebuilt. The account's view (``mailbox`` None: every message of the
  account) is kept the same way. A search's many hits are sorted by picking
  them from a view (``order`` with ``pks``: one pass over the view's ids),
  a few by the database reading only their rows; never by reading and
  sorting every message of the account.
- Query results: ``Views.query(account, query, state, compute)`` keeps the
  ordered result of a caller's query (a hashable description of filter and
  sort) for the state it was computed at, so paging through a big result
  sorts it once.

Every result is a ``SortedIds``: ``pairs``, the ordered ``(message pk, thread
pk)`` list, and ``ids``, the message pks in the same order. Results are shared
between callers and threads and must not be mutated; a refresh builds new
lists, so a reader keeps a consistent snapshot.

Sort keys (``SORT_KEYS``) are the store's message sort columns: ``received``
(internal date), ``size``, ``from`` and ``to`` (the first address, as stored
for sorting), ``subject`` (case-folded by the database), ``sent`` (the Date
header). Ties break by message pk, highest (newest) first, whatever the
direction, exactly as ``emails.ordered_messages`` orders them.

Freshness is judged by the account's Email state (the last MODSEQ of an
Email change): every message write logs one, including mailbox membership
changes. Callers may pass the state they already read; a view is labelled
with a state read before its rows, so its content is never older than its
label, and re-applying a change is harmless. Nothing needs the change bus:
every lookup compares states (which the caller reads anyway), so a change
made by another worker or node is seen on the next request.

Two more caches serve IMAP, in the same mail terms:

- Sort records (``storage.sortkeys``: base subject, first addresses, dates,
  references) by mailbox and UID: ``Views.sort_records(account, mailbox,
  uidvalidity, uids)``. A UID names one message for as long as the mailbox's
  UIDVALIDITY holds, and a stored message never changes, so a record never
  goes stale; only missing ones are read. IMAP SORT and THREAD use them, and
  ``query`` (with a constant state) for their results, keyed by the UIDs.
- Flag rows of a whole mailbox (what SELECT reads): ``Views.flag_rows(box)``,
  kept with the MODSEQ they are current to; when the mailbox's HIGHESTMODSEQ
  has moved, only the rows changed since and the UIDs expunged since are read
  (every change to a mailbox raises its HIGHESTMODSEQ), unless the expunge
  log was pruned past the rows' MODSEQ.

Only the store's public API is used: ``state``, ``history_floor``, ``changes``,
``flags``, ``expunged_since``, ``storage.emails`` (``mailbox_sort_rows``,
``ordered_messages``) and ``storage.sortkeys.load_records``.
"""

import bisect
import threading
import weakref
from collections import OrderedDict

from . import emails, sortkeys

SORT_KEYS = ("received", "size", "from", "to", "subject", "sent")
PLACED = {"received": 2, "size": 3}   # keys placed by bisection: column of mailbox_sort_rows
MAX_DELTA = 1000          # more changes than this since a view was built: rebuild it
FEW_PKS = 1000            # up to this many messages to sort: the database sorts them

MAX_VIEWS = 32
MAX_RESULTS = 64
MAX_IDS_PER_ENTRY = 1_000_000
MAX_IDS = 2_000_000       # in all entries of one cache
MAX_KEY_MAILBOXES = 64    # mailboxes whose sort records are kept
MAX_KEYS = 100_000        # sort records kept in all of them (~400 bytes each)
MAX_ROW_MAILBOXES = 256   # mailboxes whose flag rows are kept
MAX_ROWS = 300_000        # flag rows kept in all of them (~150 bytes each)


class SortedIds:
    """An ordered listing of messages: ``pairs`` is ``[(message pk, thread pk)]``,
    ``ids`` the message pks in the same order. Shared; never mutate either."""

    __slots__ = ("_pairs", "ids", "_positions", "_picked")

    def __init__(self, pairs, ids=None):
        self._pairs = pairs
        self.ids = ids if ids is not None else [p[0] for p in pairs]
        self._positions = None
        self._picked = None

    @property
    def pairs(self):
        pairs = self._pairs
        if pairs is None:      # picked: made on first use (Email/query needs only ids)
            source, pks = self._picked
            pairs = self._pairs = [p for p in source.pairs if p[0] in pks]
        return pairs

    def __len__(self):
        return len(self.ids)

    def position(self, pk):
        """The index of message ``pk``, or None when it is not listed."""
        positions = self._positions
        if positions is None:
            positions = self._positions = {p: i for i, p in enumerate(self.ids)}
        return positions.get(pk)

    def pick(self, pks):
        """Only the messages among ``pks`` (a set is kept as given: do not
        change it afterwards), in the same order."""
        if not isinstance(pks, (set, frozenset)):
            pks = frozenset(pks)
        out = SortedIds(None, list(filter(pks.__contains__, self.ids)))
        out._picked = (self, pks)
        return out

    def collapsed(self):
        """Only the first message of each thread, in the same order."""
        seen, kept = set(), []
        for pk, tid in self.pairs:
            if tid not in seen:
                seen.add(tid)
                kept.append((pk, tid))
        return SortedIds(kept)


class _Bounded:
    """An LRU map bounded by entry count, size per entry and total size.
    Values larger than ``max_entry`` are not kept. Not locked: callers lock."""

    def __init__(self, max_entries, max_entry, max_total):
        self.max_entries = max_entries
        self.max_entry = max_entry
        self.max_total = max_total
        self.total = 0
        self._items = OrderedDict()    # key -> (size, value)

    def __len__(self):
        return len(self._items)

    def get(self, key):
        item = self._items.get(key)
        if item is None:
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key, value, size):
        old = self._items.pop(key, None)
        if old is not None:
            self.total -= old[0]
        if size > self.max_entry:
            return
        self._items[key] = (size, value)
        self.total += size
        while len(self._items) > self.max_entries or self.total > self.max_total:
            _k, (s, _v) = self._items.popitem(last=False)
            self.total -= s

    def clear(self):
        self._items.clear()
        self.total = 0


class _View:
    """One mailbox view at an Email state. Placed views (``received``,
    ``size``) also keep each message's sort key, in order, for bisection."""

    __slots__ = ("state", "sorted", "keys", "key_of")

    def __init__(self, state, sorted_ids, keys=None, key_of=None):
        self.state = state
        self.sorted = sorted_ids
        self.keys = keys
        self.key_of = key_of


class Views:
    """The sorted views and query results of one store (see the module doc)."""

    def __init__(self, store, *, max_views=MAX_VIEWS, max_results=MAX_RESULTS,
                 max_ids_per_entry=MAX_IDS_PER_ENTRY, max_ids=MAX_IDS):
        self._store = weakref.ref(store)   # the store maps to its views, weakly
        self._lock = threading.Lock()
        self._views = _Bounded(max_views, max_ids_per_entry, max_ids)
        self._results = _Bounded(max_results, max_ids_per_entry, max_ids)
        # (account, mailbox, uidvalidity) -> {uid: MessageKeys}
        self._keys = _Bounded(MAX_KEY_MAILBOXES, MAX_KEYS, MAX_KEYS)
        # (mailbox, uidvalidity) -> (modseq, flag rows)
        self._rows = _Bounded(MAX_ROW_MAILBOXES, MAX_IDS_PER_ENTRY, MAX_ROWS)

    @property
    def store(self):
        store = self._store()
        if store is None:
            raise RuntimeError("the store of these views is gone")
        return store

    # --- mailbox views -------------------------------------------------------

    def mailbox(self, account_id, mailbox_pk, key, ascending=True, *, state=None):
        """The messages of ``mailbox_pk`` (of the whole account when None) sorted
        by ``key`` (one of ``SORT_KEYS``), as a ``SortedIds``, at least as fresh
        as the account's Email ``state`` (read from the store when not given)."""
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort key {key!r}")
        if state is None:
            state = self.store.state(account_id, "Email")
        vkey = (account_id, mailbox_pk, key, bool(ascending))
        with self._lock:
            entry = self._views.get(vkey)
        if entry is not None and entry.state >= state:
            return entry.sorted
        view = None
        if entry is not None and entry.state >= self.store.history_floor(account_id):
            changed = self.store.changes(account_id, "Email", entry.state, limit=MAX_DELTA + 1)
            if len(changed) <= MAX_DELTA:
                touched = {oid for _m, oid, _op in changed}
                view = self._refresh(entry, account_id, mailbox_pk, key, bool(ascending),
                                     touched, state)
        if view is None:
            view = self._build(account_id, mailbox_pk, key, bool(ascending), state)
        with self._lock:
            current = self._views.get(vkey)
            if current is None or current.state <= view.state:
                self._views.put(vkey, view, len(view.sorted))
        return view.sorted

    def order(self, account_id, keys, *, mailbox_pk=None, pks=None, state=None):
        """Messages sorted by ``keys``, ``[(sort key, ascending)]`` (first key
        first), as a ``SortedIds``: those in ``mailbox_pk`` and among ``pks`` when
        given, else all the account's. With one key, a whole mailbox (or
        account) is its view, and more than ``FEW_PKS`` pks are picked from
        that view; anything else is sorted by the database (only the pks when
        given), uncached (cache it with ``query``)."""
        keys = [(k, bool(asc)) for k, asc in keys]
        bad = [k for k, _a in keys if k not in SORT_KEYS]
        if bad or not keys:
            raise ValueError(f"unknown sort keys {bad!r}" if bad else "no sort key")
        if len(keys) == 1 and (pks is None or len(pks) > FEW_PKS):
            view = self.mailbox(account_id, mailbox_pk, keys[0][0], keys[0][1], state=state)
            return view if pks is None else view.pick(pks)
        return SortedIds(emails.ordered_messages(self.store, account_id, keys,
                                                 mailbox_pk=mailbox_pk, pks=pks))

    def _build(self, account_id, mailbox_pk, key, asc, state):
        if key not in PLACED:
            pairs = emails.ordered_messages(self.store, account_id, [(key, asc)],
                                            mailbox_pk=mailbox_pk)
            return _View(state, SortedIds(pairs))
        sort_key = _sort_key(key, asc)
        rows = emails.mailbox_sort_rows(self.store, account_id, mailbox_pk)
        keyed = sorted((sort_key(r), (r[0], r[1])) for r in rows)
        keys = [k for k, _p in keyed]
        pairs = [p for _k, p in keyed]
        ids = [p[0] for p in pairs]
        return _View(state, SortedIds(pairs, ids), keys, dict(zip(ids, keys)))

    def _refresh(self, entry, account_id, mailbox_pk, key, asc, touched, state):
        """``entry`` brought up to ``state`` given the messages changed since, or
        None when only a rebuild can do it."""
        if not touched:
            return _View(state, entry.sorted, entry.keys, entry.key_of)
        fresh = emails.mailbox_sort_rows(self.store, account_id, mailbox_pk, touched)
        old = entry.sorted
        if key not in PLACED:
            now_in = {r[0] for r in fresh}
            was_in = {pk for pk in touched if old.position(pk) is not None}
            if now_in - was_in:
                return None          # a new member: only the database knows its place
            if now_in == was_in:     # flags changed: the order did not
                return _View(state, old)
            gone = was_in - now_in
            return _View(state, SortedIds([p for p in old.pairs if p[0] not in gone]))
        sort_key = _sort_key(key, asc)
        key_of = entry.key_of
        present = {pk for pk in touched if pk in key_of}
        if len(fresh) == len(present) and {r[0] for r in fresh} == present:
            # flags changed: the members, and so their keys and order, did not
            return _View(state, old, entry.keys, key_of)
        keys, pairs, ids = list(entry.keys), list(old.pairs), list(old.ids)
        key_of = dict(key_of)
        for pk in touched:
            k = key_of.pop(pk, None)
            if k is None:
                continue
            i = bisect.bisect_left(keys, k)
            if i < len(ids) and ids[i] == pk:
                del keys[i], pairs[i], ids[i]
        for r in fresh:
            k = sort_key(r)
            i = bisect.bisect_left(keys, k)
            keys.insert(i, k)
            pairs.insert(i, (r[0], r[1]))
            ids.insert(i, r[0])
            key_of[r[0]] = k
        return _View(state, SortedIds(pairs, ids), keys, key_of)

    # --- query results -------------------------------------------------------

    def query(self, account_id, query, state, compute):
        """The ``SortedIds`` that ``compute()`` returns for ``query`` (a hashable
        description of the caller's filter and sort) at ``state`` (a hashable
        of every state the result depends on), computed once per state."""
        key = (account_id, query)
        with self._lock:
            hit = self._results.get(key)
        if hit is not None and hit[0] == state:
            return hit[1]
        result = compute()
        with self._lock:
            self._results.put(key, (state, result), len(result))
        return result

    # --- sort records ---------------------------------------------------------

    def sort_records(self, account_id, mailbox_pk, uidvalidity, uids):
        """``[(uid, sortkeys.MessageKeys)]`` of the messages at ``uids`` in the
        mailbox, in the order given (a UID no longer there is left out)."""
        key = (account_id, mailbox_pk, uidvalidity)
        with self._lock:
            have = self._keys.get(key)
        if have is None:
            have = {}
        missing = [u for u in uids if u not in have]
        if missing:
            loaded = sortkeys.load_records(self.store, account_id, mailbox_pk, missing)
            with self._lock:
                have.update(loaded)
                self._keys.put(key, have, len(have))
        get = have.get
        return [(u, k) for u, k in ((u, get(u)) for u in uids) if k is not None]

    # --- flag rows of a whole mailbox (SELECT) -----------------------------------

    def flag_rows(self, mailbox):
        """``store.flags(mailbox.id)`` for ``mailbox`` (a ``Mailbox`` as just
        read): ``[(uid, modseq, bits, keywords)]`` ascending by UID, at least as
        fresh as ``mailbox.highestmodseq``. Kept per mailbox; when the mailbox
        has moved on, only the rows changed since and the UIDs expunged since
        are read. Shared; never mutate."""
        key = (mailbox.id, mailbox.uidvalidity)
        with self._lock:
            entry = self._rows.get(key)
        store = self.store
        if entry is not None and entry[0] >= mailbox.highestmodseq:
            return entry[1]
        rows = None
        if entry is not None and entry[0] >= store.history_floor(mailbox.account_id):
            changed = store.flags(mailbox.id, None, entry[0])
            if len(changed) <= MAX_DELTA:
                gone = set(store.expunged_since(mailbox.id, entry[0]))
                fresh = {r[0]: r for r in changed}
                rows = [fresh.pop(r[0], r) for r in entry[1] if r[0] not in gone]
                if fresh:
                    rows.extend(r for r in fresh.values() if r[0] not in gone)
                    rows.sort(key=lambda r: r[0])
        if rows is None:
            rows = store.flags(mailbox.id)
        top = max([mailbox.highestmodseq] + [r[1] for r in rows]) if rows else mailbox.highestmodseq
        with self._lock:
            current = self._rows.get(key)
            if current is None or current[0] <= top:
                self._rows.put(key, (top, rows), len(rows))
        return rows

    def clear(self):
        """Forget every view and result (they rebuild on the next request)."""
        with self._lock:
            self._views.clear()
            self._results.clear()
            self._keys.clear()
            self._rows.clear()


def _sort_key(key, asc):
    col = PLACED[key]
    if asc:
        return lambda r: (r[col], -r[0])
    return lambda r: (-r[col], -r[0])


_BY_STORE = weakref.WeakKeyDictionary()
_BY_STORE_LOCK = threading.Lock()


def for_store(store):
    """The ``Views`` of ``store``: one per store object in this process, made on
    first use and dropped with the store."""
    with _BY_STORE_LOCK:
        views = _BY_STORE.get(store)
        if views is None:
            views = _BY_STORE[store] = Views(store)
        return views
