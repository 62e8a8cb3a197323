"""NOTIFY (RFC 5465): unsolicited updates driven by the store's change events.

``NOTIFY SET [STATUS] (filter events) ...`` replaces the connection's
``NotifyState``; ``NOTIFY NONE`` (and UNAUTHENTICATE, LOGOUT) drops it. The
state subscribes to ``store.bus`` for the account and turns each change into
responses:

* the selected mailbox, under a SELECTED / SELECTED-DELAYED filter with
  events: EXISTS, FETCH FLAGS and EXPUNGE/VANISHED are sent as they happen,
  not only before a tagged reply (SELECTED-DELAYED keeps expunges back until
  a command that allows them, as RFC 5465 section 6 says); MessageNew's fetch
  attributes are fetched for each new message and sent after its EXISTS.
* any other mailbox a filter names (INBOXES is INBOX; PERSONAL every mailbox;
  SUBSCRIBED, SUBTREE, SUBTREE-ONE, MAILBOXES): MessageNew/MessageExpunge/
  FlagChange become ``* STATUS name (MESSAGES UIDNEXT UIDVALIDITY UNSEEN
  [HIGHESTMODSEQ])``, sent when a value the client asked about changed
  (MESSAGES or UIDNEXT for MessageNew/MessageExpunge; UNSEEN or HIGHESTMODSEQ
  for FlagChange).
* MailboxName: the account's mailbox names are compared with the last ones
  seen; a new mailbox gets ``* LIST () "/" name``, a deleted one ``* LIST
  (\\NonExistent) "/" name``, a renamed one ``* LIST () "/" new ("OLDNAME"
  ("old"))`` (RFC 5465 section 5.4), when a filter names the old or new name;
  ``\\Subscribed`` is among the attributes when the name is subscribed.
* SubscriptionChange (RFC 5465 section 5.5): each SUBSCRIBE/UNSUBSCRIBE that
  changed the account's subscriptions (``Change.imap``, put there by
  ``storage.imapstate``) becomes ``* LIST (\\Subscribed) "/" name`` or
  ``* LIST () "/" name`` (``\\NonExistent`` added when no mailbox has the
  name), when a filter names the name (SUBSCRIBED names it whether it was
  just subscribed or unsubscribed, so the client hears of both).
* MailboxMetadataChange and ServerMetadataChange (RFC 5465 sections 5.6 and
  5.7): the METADATA entries ``storage.metadata`` set or removed become RFC
  5464 section 4.4.2's ``* METADATA name entry ...`` (names only, never
  values); a mailbox's when a filter (or SELECTED) names it with
  MailboxMetadataChange, the server's (``""``) when any group has
  ServerMetadataChange.

Responses never interleave with a command's: the state computes them on a
worker thread and queues a ``Tick`` into the session's pipeline (or wakes
IDLE); the pipeline sends them between commands, and before any tagged
reply. At most MAX_PENDING responses wait; past that the client gets ``* OK
[NOTIFICATIONOVERFLOW]`` and NOTIFY is off (RFC 5465 section 5.8).

The session that made a change hears of it too: the store's events carry no
origin.

Not done (refused with ``NO [BADEVENT ...]``, so clients know):
AnnotationChange (no ANNOTATE here); RFC 5465 section 3.1's "mailboxes in
other users' namespaces" does not apply (no shared namespace here), so
METADATA changes another user makes to a mailbox shared with this one are
not reported.
"""

import asyncio
import logging

from roost.storage import errors

from ..filters import decoded, matches
from ..wire import astring
from . import AUTH, TICK, Bad, No, capability, command

log = logging.getLogger("roost.imap")

capability("NOTIFY")

SUPPORTED = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange",
             "MailboxMetadataChange", "ServerMetadataChange")
MESSAGE_EVENTS = {"MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange"}
MAX_PENDING = 1000
MAX_DIRTY = 512          # mailboxes waiting for a STATUS; past that all of them are read
MAX_MARKS = MAX_PENDING  # subscription/metadata changes waiting; past that: overflow
METADATA_PER_LINE = 50   # entry names in one METADATA response


class NotifyState:
    def __init__(self, s, selected, delayed, fetch, others):
        self.account_id = s.account.id
        self.selected_events = selected        # events for the selected mailbox (set)
        self.selected_given = False            # a SELECTED filter given (even with NONE)
        self.delayed = delayed                 # SELECTED-DELAYED
        self.fetch = fetch                     # MessageNew fetch attributes (FetchItems)
        self.others = others                   # [(Filter, names, events)]
        self.names_wanted = any("MailboxName" in ev for _f, _n, ev in others)
        wanted = set(selected).union(*(ev for _f, _n, ev in others))
        self.subs_wanted = "SubscriptionChange" in wanted
        self.meta_wanted = "MailboxMetadataChange" in wanted
        self.server_meta = "ServerMetadataChange" in wanted
        self.marks = []                        # Change.imap items not yet reported
        self.marks_over = False
        self.known = None                      # {mailbox id: name} last seen
        self.status = {}                       # mailbox id -> (values) last sent
        self.pending = []
        self.dirty = set()
        self.names_dirty = False
        self.ticked = False
        self.inside = False
        self.task = None
        self.unsubscribe = None

    # --- which mailboxes ----------------------------------------------------

    def events_for(self, box, selected_pk):
        """Events the client asked for about ``box`` (not the selected one)."""
        out = set()
        for flt, names, events in self.others:
            if matches(flt, box, selected_pk, names):
                out |= events
        return out

    # --- from the bus -------------------------------------------------------

    def on_change(self, s, change):
        if s.notify is not self or s.closing:
            return
        view = s.selected
        for pk in change.mailbox_ids:
            if view is not None and pk == view.pk:
                if self.selected_events & MESSAGE_EVENTS:
                    self.wake(s)
            elif self.others:
                if len(self.dirty) < MAX_DIRTY:
                    self.dirty.add(pk)
                else:
                    self.dirty.add(None)           # "read them all"
        if self.names_wanted and "Mailbox" in change.kinds:
            self.names_dirty = True
        for mark in change.imap:
            if self.wants(mark):
                if len(self.marks) < MAX_MARKS:
                    self.marks.append(mark)
                else:
                    self.marks_over = True
        if (self.dirty or self.names_dirty or self.marks) and (self.task is None or self.task.done()):
            self.task = asyncio.ensure_future(self._work(s))

    def wake(self, s):
        if s.idle_wake is not None:
            s.idle_wake.set()
        elif not self.ticked and not s.closing:
            self.ticked = True
            s.queue.put_nowait(TICK)

    async def _work(self, s):
        """Turn dirty mailboxes and names into responses (one worker call at a time)."""
        try:
            while (self.dirty or self.names_dirty or self.marks) and s.notify is self \
                    and not s.closing:
                dirty, self.dirty = self.dirty, set()
                names, self.names_dirty = self.names_dirty, False
                marks, self.marks = self.marks, []
                over, self.marks_over = self.marks_over, False
                lines = await s.ctx.run(self._compute, s, dirty, names, marks)
                if s.notify is not self:
                    return
                self.queue(s, lines, over)
        except asyncio.CancelledError:
            raise
        except Exception:   # noqa: BLE001 - a notification must not end the session
            log.exception("NOTIFY failed")

    def wants(self, mark):
        """Might ``mark`` (an item of ``Change.imap``) be reported?"""
        kind = mark[0] if mark else None
        if kind == "subscription":
            return self.subs_wanted
        if kind == "metadata":
            return self.server_meta if not mark[1] else self.meta_wanted
        return False

    def _compute(self, s, dirty, names, marks=()):
        """(On a worker thread) the responses for ``dirty`` mailboxes, name
        changes and subscription/metadata changes, in that order."""
        store = s.ctx.store
        view = s.selected
        selected_pk = view.pk if view is not None else None
        lines = []
        if names:
            boxes = store.mailboxes(self.account_id)
            lines += self._names(s, boxes, selected_pk)
        if marks:
            lines += self._marks(s, marks, selected_pk)
        if None in dirty:
            boxes = store.mailboxes(self.account_id, counts=True)
        else:
            boxes = []
            for pk in sorted(dirty):
                try:
                    boxes.append(store.mailbox(self.account_id, mailbox_id=pk, counts=True))
                except errors.MailboxNotFound:
                    self.status.pop(pk, None)
        for box in boxes:
            if box.id == selected_pk:
                continue
            events = self.events_for(box, selected_pk)
            line = self.status_line(s, box, events)
            if line is not None:
                lines.append(line)
        return lines

    def _marks(self, s, marks, selected_pk):
        store = s.ctx.store
        lines, meta = [], {}          # mailbox id (0: the server) -> entry names
        for mark in marks:
            if mark[0] == "subscription":
                line = self._subscription(s, mark[1], mark[2], selected_pk)
                if line is not None:
                    lines.append(line)
            else:
                meta.setdefault(mark[1], set()).add(mark[2])
        for pk in sorted(meta):
            if pk:
                try:
                    box = store.mailbox(self.account_id, mailbox_id=pk)
                except errors.MailboxNotFound:
                    continue          # deleted since: MailboxName tells
                events = self.selected_events if pk == selected_pk and self.selected_given \
                    else self.events_for(box, selected_pk)
                if "MailboxMetadataChange" not in events:
                    continue
                wire = _name(s, box.name)
            else:
                wire = b'""'
            entries = sorted(meta[pk])
            for i in range(0, len(entries), METADATA_PER_LINE):
                lines.append(b"* METADATA " + wire + b" " +
                             b" ".join(astring(e, s.utf8) for e in entries[i:i + METADATA_PER_LINE]))
        return lines

    def _subscription(self, s, name, subscribed, selected_pk):
        try:
            box = s.ctx.store.mailbox(self.account_id, name)
        except errors.MailboxNotFound:
            box = None
        # subscribed before or after this change: SUBSCRIBED names it
        probe = _Named(name, True, box.id if box is not None else None)
        if "SubscriptionChange" not in self.events_for(probe, selected_pk):
            return None
        attrs = ([b"\\Subscribed"] if subscribed else []) + ([b"\\NonExistent"] if box is None else [])
        return b"* LIST (" + b" ".join(attrs) + b') "/" ' + _name(s, name)

    def status_line(self, s, box, events, force=False):
        values = (box.messages, box.uidnext, box.uidvalidity, box.unseen, box.highestmodseq)
        last = self.status.get(box.id)
        if not events & MESSAGE_EVENTS:
            return None
        self.status[box.id] = values
        if not force and last is not None:
            counts = last[:3] != values[:3]
            flags = last[3:] != values[3:]
            if not ((counts and events & {"MessageNew", "MessageExpunge"})
                    or (flags and "FlagChange" in events)):
                return None
        items = f"MESSAGES {box.messages} UIDNEXT {box.uidnext} UIDVALIDITY {box.uidvalidity} " \
                f"UNSEEN {box.unseen}"
        if s.condstore:
            items += f" HIGHESTMODSEQ {box.highestmodseq}"
        return b"* STATUS " + astring(s.wire_name(box.name), s.utf8) + f" ({items})".encode()

    def _names(self, s, boxes, selected_pk):
        now = {b.id: b for b in boxes}
        before, self.known = self.known, {b.id: b.name for b in boxes}
        if before is None or before == self.known:
            return []
        lines = []
        subs = set(s.ctx.store.subscriptions(self.account_id))   # DELETE keeps them

        def attrs(name):
            return b"(\\Subscribed)" if name in subs else b"()"

        def wanted(box, name):
            probe = box if box is not None else _Named(name, name in subs)
            return "MailboxName" in self.events_for(probe, selected_pk) or (
                box is not None and box.name != name and
                "MailboxName" in self.events_for(_Named(name, name in subs), selected_pk))

        for pk, box in now.items():
            old = before.get(pk)
            if old is None:
                if wanted(box, box.name):
                    lines.append(b"* LIST " + attrs(box.name) + b' "/" ' + _name(s, box.name))
            elif old != box.name and wanted(box, old):
                lines.append(b"* LIST " + attrs(box.name) + b' "/" ' + _name(s, box.name) +
                             b' ("OLDNAME" (' + _name(s, old) + b"))")
        for pk, old in before.items():
            if pk not in now and wanted(None, old):
                lines.append(b"* LIST (" + (b"\\Subscribed " if old in subs else b"") +
                             b'\\NonExistent) "/" ' + _name(s, old))
        return lines

    def queue(self, s, lines, overflow=False):
        """Queue ``lines``; ``overflow``: changes were dropped (MAX_MARKS)."""
        if not lines and not overflow:
            return
        self.pending.extend(lines)
        if overflow or len(self.pending) > MAX_PENDING:
            self.pending = [b"* OK [NOTIFICATIONOVERFLOW] too many changes; NOTIFY is off"]
            self.stop(s, keep_pending=True)
        self.wake(s)

    # --- into the pipeline --------------------------------------------------

    async def tick(self, s):
        """The pipeline took our Tick: report now."""
        self.ticked = False
        await s.report_changes(not self.delayed)

    async def report(self, s, expunge_ok):
        """``session.report_changes`` while NOTIFY is on: the responses about
        other mailboxes, the selected mailbox's, then MessageNew's FETCH."""
        self.inside = True
        try:
            pending, self.pending = self.pending, []
            for line in pending:
                s.send(line)
            view = s.selected
            before = view.last_uid if view is not None else 0
            await s.report_changes(expunge_ok)
            if self.fetch and view is not None and s.selected is view and view.last_uid > before:
                await self._fetch_new(s, view, before)
        finally:
            self.inside = False

    async def _fetch_new(self, s, view, before):
        from ..parser import Fetch, SequenceSet
        from .messages import fetch_cmd
        cmd = Fetch(messages=SequenceSet(((before + 1, None),)), items=list(self.fetch))
        cmd.uid, cmd.verb, cmd.tag = True, "FETCH", "*"
        try:
            await fetch_cmd(s, cmd)
        except (No, errors.StoreError):
            pass

    def stop(self, s, keep_pending=False):
        if self.unsubscribe is not None:
            self.unsubscribe()
            self.unsubscribe = None
        if self.task is not None and not self.task.done() and self.task is not asyncio.current_task():
            self.task.cancel()
        if s.notify is self:
            if keep_pending:
                carrier = _Leftover(self.pending)
                s.notify = carrier
            else:
                s.notify = None


class _Leftover:
    """What NOTIFY leaves behind when it stops itself: the overflow notice."""

    def __init__(self, lines):
        self.pending = lines
        self.inside = False
        self.delayed = False
        self.ticked = False

    async def report(self, s, expunge_ok):
        s.notify = None
        for line in self.pending:
            s.send(line)
        await s.report_changes(expunge_ok)

    async def tick(self, s):
        await self.report(s, True)

    def stop(self, s, keep_pending=False):
        s.notify = None


class _Named:
    """A mailbox by its name (one that is gone, or any subscription's name),
    for matching filters."""

    def __init__(self, name, subscribed=False, pk=None):
        self.name = name
        self.subscribed = subscribed
        self.id = pk


def _name(s, name):
    return astring(s.wire_name(name), s.utf8)


@command("NOTIFY", states=AUTH)
async def notify_cmd(s, cmd):
    old = s.notify
    if cmd.none:
        if old is not None:
            old.stop(s)
        return
    selected, delayed, fetch, others = set(), False, [], []
    bad = []
    for flt, events in cmd.groups:
        names = [e for e, _ in events] if events else []
        bad += [n for n in names if n not in SUPPORTED and n not in bad]
        got = set(names)
        if ({"MessageNew", "MessageExpunge"} & got) and not {"MessageNew", "MessageExpunge"} <= got:
            raise Bad("MessageNew and MessageExpunge go together (RFC 5465 section 5)")
        if ({"FlagChange", "AnnotationChange"} & got) and "MessageNew" not in got:
            raise Bad("FlagChange needs MessageNew and MessageExpunge (RFC 5465 section 5)")
        attrs = [a for e, a in (events or ()) if a]
        if flt.kind in ("SELECTED", "SELECTED-DELAYED"):
            if got - MESSAGE_EVENTS - {"MailboxMetadataChange"}:
                raise Bad("the selected mailbox takes message events and MailboxMetadataChange only")
            selected |= got
            delayed = delayed or flt.kind == "SELECTED-DELAYED"
            for a in attrs:
                fetch += _fetch_items(a)
        else:
            if attrs:
                raise Bad("MessageNew fetch attributes are for the selected mailbox only")
            others.append((flt, decoded(s, flt), frozenset(got)))
    if bad:
        raise No("[BADEVENT (" + " ".join(SUPPORTED) + ")] not supported: " + " ".join(bad[:8]))
    if old is not None:
        old.stop(s)
    state = NotifyState(s, selected, delayed, fetch, others)
    state.selected_given = any(f.kind in ("SELECTED", "SELECTED-DELAYED") for f, _e in cmd.groups)
    s.notify = state
    state.unsubscribe = s.ctx.store.bus.subscribe(s.account.id,
                                                  lambda change: state.on_change(s, change))
    store = s.ctx.store
    view = s.selected

    def first():
        """The names and counts later changes are compared with; STATUS of each
        mailbox the filters name when asked (RFC 5465 section 3)."""
        lines = []
        selected_pk = view.pk if view is not None else None
        boxes = store.mailboxes(s.account.id, counts=True)
        state.known = {b.id: b.name for b in boxes}
        for box in boxes:
            if box.id != selected_pk:
                line = state.status_line(s, box, state.events_for(box, selected_pk), True)
                if line is not None and cmd.status:
                    lines.append(line)
        return lines
    for line in await s.ctx.run(first):
        s.send(line)


def _fetch_items(attrs):
    from ..parser import FETCH_MACROS, parse_fetch_item
    from ..wire import ParseError
    out = []
    for a in attrs:
        names = FETCH_MACROS.get(a.upper(), [a])
        for n in names:
            try:
                item = parse_fetch_item(n)
            except ParseError as exc:
                raise Bad(str(exc)) from None
            if item.name in ("BODY", "BINARY", "RFC822", "RFC822.TEXT") and \
                    (item.section is not None or item.name.startswith("RFC822")):
                raise Bad("MessageNew fetches with .PEEK only (RFC 5465 section 5.2)")
            out.append(item)
    return out

