"""SORT, THREAD and their extensions: SORT and SORT=DISPLAY (RFC 5256, 5957),
THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256), ESORT (RFC 5267
section 3) and PARTIAL (RFC 9394; this module also renders the PARTIAL
results of SEARCH, and FETCH slices its messages with ``partial_slice``).

The messages are found as SEARCH finds them; their sort records (base
subject, first addresses, dates, references) come from the store's views
(``storage.views``: cached by mailbox and UID, as a message never changes)
and the orders and threads from ``storage.sortkeys``. A result depends only
on the criteria and the UIDs, so it is kept (``Views.query``) under those:
a client listing the same mailbox again gets it without a sort. Strings
collate by i;unicode-casemap (RFC 5051, closely: see ``sortkeys.collate``).

CONTEXT=SEARCH (RFC 5267 section 4): ``SEARCH RETURN (UPDATE)`` keeps the
search on the selected mailbox (at most ``MAX_CONTEXTS``; past that
``* NO [NOUPDATE "tag"]``); whenever the session reports changes (after each
command, and in IDLE) a followed search whose result moved is run again and
the difference sent as ``* ESEARCH (TAG "t") [UID] REMOVEFROM (0 set) ADDTO
(0 set)``, the client's own changes included. A followed SEARCH does not
send an expunged message in REMOVEFROM: the EXPUNGE/VANISHED response removes it. Sequence
numbers in a followed search's criteria are resolved again each time, against
the view as it is then. CANCELUPDATE ends contexts; SELECT/CLOSE end all.
The CONTEXT return option (a hint) is accepted and ignored.

PARTIAL: the range counts positions in the result (SEARCH: ascending; SORT:
sort order; FETCH: the messages the set names, ascending, before CHANGEDSINCE
filters them); MIN/MAX/COUNT are of the whole result; SAVE saves every match.

CONTEXT=SORT (RFC 5267 sections 4.3.2-4.3.4): ``SORT RETURN (UPDATE)`` is
followed the same way (the same ``MAX_CONTEXTS``), keeping the sorted result
as the client last heard it. A message's sort keys never change and ties go
by UID, so the messages in both the old and the new result keep their order:
the difference is only removals and insertions, sent as ``REMOVEFROM (p set
...)`` then ``ADDTO (p set ...)``, each pair a run of neighbours in sort order
at its context position (REMOVEFROM: counted in the list as the earlier pairs
left it; ADDTO: the position the run then holds), so the client applying them
in order gets the new sorted result. A sorted context's expunged message is
sent in REMOVEFROM before its EXPUNGE/VANISHED (``Contexts.expunging``, called
by the session), so its number is still valid. PARTIAL and UPDATE do not
interact (RFC 5267 4.4): the window is in the first response only, updates
cover the whole result. Reusing the tag of a followed search is BAD (4.3).
"""

from array import array

from roost.storage import sortkeys
from roost.storage.views import for_store

from ..parse_sort import THREAD_ALGORITHMS
from ..wire import uid_set_text
from . import SEL, Bad, No, capability, command

capability("SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "ESORT",
           "PARTIAL", "CONTEXT=SEARCH", "CONTEXT=SORT")

CHARSETS = (None, "UTF-8", "US-ASCII")
MAX_CONTEXTS = 10        # followed searches per selected mailbox


def partial_slice(items, rng):
    """The items at the positions a PARTIAL range names (1-based; negative
    ranges count from the end, -1 being the last)."""
    first, last = rng
    n = len(items)
    if first > 0:
        return items[first - 1:last]
    return items[max(n + last, 0):max(n + first + 1, 0)]


def partial_part(rng, numbers, set_text=uid_set_text):
    """The ``PARTIAL (range set)`` item of an ESEARCH response."""
    got = partial_slice(numbers, rng)
    text = set_text(got) if got else "NIL"
    return f"PARTIAL ({rng[0]}:{rng[1]} {text})"


def ordered_set(numbers):
    """Numbers in the given order as a sequence set: ascending runs of
    consecutive numbers become ``a:b``, nothing else is merged."""
    out, i = [], 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}:{numbers[j]}")
        i = j + 1
    return ",".join(out)


async def matching(s, keys):
    """UIDs in the connection's view that match the search ``keys``, ascending."""
    from .messages import _flat, view_compiler
    v = s.selected
    if len(keys) == 1 and isinstance(keys[0], str) and keys[0].upper() == "ALL":
        return list(v.uids)
    if s.ctx.search is None:
        raise No("[UNAVAILABLE] search is not available")
    store = s.ctx.store
    compiler = view_compiler(s, v)
    if any(isinstance(k, str) and k.upper() == "MODSEQ" for k in _flat(keys)):
        s.enable_condstore()

    def run():
        return s.ctx.search(store, v.account_id, compiler.compile(keys), v.pk)
    found = await s.ctx.run(run)
    return v.known(found)


def _cached(s, what, uids, compute):
    """``compute(records)`` for the messages at ``uids`` (ascending), through the
    store's views: records are cached by UID, and the result by ``what`` and
    the UIDs (it depends on nothing else: the messages never change). Runs on
    a worker."""
    views = for_store(s.ctx.store)
    v = s.selected
    key = ("imap", v.pk, v.uidvalidity, what, len(uids), hash(array("L", uids).tobytes()))
    return views.query(v.account_id, key, 0, lambda: _Sized(compute(
        views.sort_records(v.account_id, v.pk, v.uidvalidity, uids)), len(uids))).value


class _Sized:
    """A cached result, counted in the cache's bounds as the messages it covers."""
    __slots__ = ("value", "n")

    def __init__(self, value, n):
        self.value, self.n = value, n

    def __len__(self):
        return self.n


def _check_charset(cmd):
    if cmd.charset not in CHARSETS:
        raise No("[BADCHARSET (UTF-8 US-ASCII)] unsupported charset")


@command("SORT", states=SEL, expunge_ok=False)
async def sort_cmd(s, cmd):
    _check_charset(cmd)
    v = s.selected
    uids = await matching(s, cmd.keys)

    def run():
        return _cached(s, ("SORT", tuple(cmd.criteria)), uids,
                       lambda records: [u for u, _k in sortkeys.sort(records, cmd.criteria)])
    ordered = await s.ctx.run(run) if uids else []
    numbers = ordered if cmd.uid else v.seqs(ordered)
    if cmd.returns is None:
        s.send(b"* SORT" + b"".join(b" %d" % n for n in numbers))
        return
    returns = cmd.returns
    if "UPDATE" in returns or "CONTEXT" in returns:     # CONTEXT=SORT
        returns = start_context(s, cmd, ordered, returns)
    if "SAVE" in returns:
        v.saved = tuple(sorted(ordered))      # as SEARCH saves: every match, as a set
        returns = [r for r in returns if r != "SAVE"]
        if not returns:
            return
    if not returns:
        returns = ["ALL"]
    from .messages import esearch_line
    s.send(esearch_line(cmd, returns, numbers, ordered_set))


@command("THREAD", states=SEL, expunge_ok=False)
async def thread_cmd(s, cmd):
    if cmd.algorithm not in THREAD_ALGORITHMS:
        raise Bad(f"unknown threading algorithm {cmd.algorithm[:30]}")
    _check_charset(cmd)
    v = s.selected
    uids = await matching(s, cmd.keys)
    algorithm = sortkeys.references if cmd.algorithm == "REFERENCES" else sortkeys.ordered_subject

    def run():
        if cmd.uid:
            return _cached(s, ("THREAD", cmd.algorithm), uids,
                           lambda records: sortkeys.thread_text(algorithm(records)))
        nodes = _cached(s, ("THREAD", cmd.algorithm, "nodes"), uids, algorithm)
        pos = {u: i for i, u in enumerate(v.uids, 1)}
        return sortkeys.thread_text(nodes, pos.__getitem__)
    text = await s.ctx.run(run) if uids else ""
    s.send(b"* THREAD" + (b" " + text.encode() if text else b""))


# --- CONTEXT=SEARCH and CONTEXT=SORT -----------------------------------------------

class Contexts(dict):
    """The followed searches and sorts of one selected mailbox, by tag (kept on
    the ``SelectedMailbox`` as ``contexts``; the session calls ``report``, and
    ``expunging`` before it sends EXPUNGE or VANISHED)."""

    async def report(self, s):
        await report_contexts(s)

    def expunging(self, s, view, uids):
        """RFC 5267 4.3.4: REMOVEFROM for the sorted contexts holding any of
        ``uids`` (about to be expunged from ``view``), sent while their
        numbers are still valid."""
        gone = set(uids)
        for ctx in self.values():
            if isinstance(ctx, SortContext) and gone.intersection(ctx.order):
                line = ctx.changes(s, view, [u for u in ctx.order if u not in gone])
                if line:
                    s.send(line.encode())


class SearchContext:
    __slots__ = ("tag", "uid", "keys", "found")

    def __init__(self, tag, uid, keys, found):
        self.tag, self.uid, self.keys, self.found = tag, uid, keys, set(found)

    async def result(self, s, found):
        return found

    def changes(self, s, v, found):
        """The ESEARCH line that takes the client from the last result to
        ``found`` (UIDs, ascending), or None; remembers ``found``."""
        found = set(found)
        added = sorted(found - self.found)
        removed = sorted(u for u in self.found - found if u in v)
        self.found = found
        parts = []
        for name, uids in (("REMOVEFROM", removed), ("ADDTO", added)):
            if uids:
                numbers = uids if self.uid else [v.seq(u) for u in uids]
                parts.append(f"{name} (0 {uid_set_text(numbers)})")
        return _update_line(self, parts)


class SortContext:
    """A followed SORT: ``order`` is the sorted result (UIDs) as last sent."""
    __slots__ = ("tag", "uid", "keys", "criteria", "order")

    def __init__(self, tag, uid, keys, criteria, order):
        self.tag, self.uid, self.keys, self.criteria = tag, uid, keys, tuple(criteria)
        self.order = list(order)

    async def result(self, s, found):
        if not found:
            return []
        criteria = self.criteria
        return await s.ctx.run(lambda: _cached(s, ("SORT", criteria), found, lambda records: [
            u for u, _k in sortkeys.sort(records, criteria)]))

    def changes(self, s, v, order):
        """The ESEARCH line that takes the client from ``self.order`` to
        ``order`` (both in sort order, the common messages in the same order,
        as sort keys never change), or None; remembers ``order``."""
        new = set(order)
        old = [u for u in self.order if u in v or u in new]   # reported expunges are gone
        kept = set(old) & new
        removes, adds = [], []
        run, left = [], 0          # REMOVEFROM: positions in the list as earlier pairs left it
        for u in old:
            if u in kept:
                if run:
                    removes.append((left + 1, run))
                    run = []
                left += 1
            else:
                run.append(u)
        if run:
            removes.append((left + 1, run))
        run, first = [], 0         # ADDTO: the position the run's first message then holds
        for i, u in enumerate(order, 1):
            if u in kept:
                if run:
                    adds.append((first, run))
                    run = []
            else:
                first = first if run else i
                run.append(u)
        if run:
            adds.append((first, run))
        self.order = list(order)
        parts = []
        for name, pairs in (("REMOVEFROM", removes), ("ADDTO", adds)):
            if pairs:
                parts.append(f"{name} (" + " ".join(
                    f"{pos} {ordered_set(uids if self.uid else [v.seq(u) for u in uids])}"
                    for pos, uids in pairs) + ")")
        return _update_line(self, parts)


def _update_line(ctx, parts):
    if not parts:
        return None
    return " ".join([f'* ESEARCH (TAG "{ctx.tag}")'] + (["UID"] if ctx.uid else []) + parts)


def start_context(s, cmd, found, returns):
    """Follow SEARCH or SORT ``cmd`` (RETURN has UPDATE) from its result
    ``found`` (UIDs, in the result's order); the return options left for the
    ESEARCH response."""
    rest = [r for r in returns if r not in ("UPDATE", "CONTEXT")]
    if "UPDATE" in returns:
        v = s.selected
        contexts = v.__dict__.setdefault("contexts", Contexts())
        if cmd.tag in contexts:
            raise Bad(f"the tag {cmd.tag[:40]} already names a followed search")
        if len(contexts) >= MAX_CONTEXTS:
            s.send(f'* NO [NOUPDATE "{cmd.tag}"] too many searches followed'.encode())
        else:
            sort = getattr(cmd, "criteria", None)
            contexts[cmd.tag] = (SortContext(cmd.tag, cmd.uid, cmd.keys, sort, found) if sort
                                 else SearchContext(cmd.tag, cmd.uid, cmd.keys, found))
            v.contexts_mark = None
    return rest


async def report_contexts(s):
    """Send ADDTO/REMOVEFROM for each followed search whose result changed
    since it was last reported (see the module doc)."""
    v = s.selected
    store = s.ctx.store
    state = await s.ctx.run(store.state, v.account_id, "Email")
    mark = (state, len(v.uids), v.last_uid)
    if getattr(v, "contexts_mark", None) == mark or s.selected is not v:
        return
    v.contexts_mark = mark
    for ctx in list(v.contexts.values()):
        try:
            found = await ctx.result(s, await matching(s, ctx.keys))
        except (No, Bad):
            del v.contexts[ctx.tag]
            s.send(f'* NO [NOUPDATE "{ctx.tag}"] the search can no longer be followed'.encode())
            continue
        if s.selected is not v:
            return
        if v.contexts.get(ctx.tag) is not ctx:     # cancelled meanwhile
            continue
        line = ctx.changes(s, v, found)
        if line:
            s.send(line.encode())


@command("CANCELUPDATE", states=SEL)
async def cancelupdate(s, cmd):
    contexts = getattr(s.selected, "contexts", {})
    unknown = [t for t in cmd.tags if t not in contexts]
    if unknown:
        raise Bad(f"no search followed under the tag {unknown[0][:40]}")
    for t in cmd.tags:
        del contexts[t]
