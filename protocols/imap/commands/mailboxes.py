"""Authenticated-state mailbox commands: SELECT/EXAMINE, CREATE, DELETE,
RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST (+ LIST-EXTENDED, LIST-STATUS,
SPECIAL-USE, LIST-MYRIGHTS), LSUB, XLIST, NAMESPACE, STATUS and APPEND
(MULTIAPPEND, APPENDUID, BINARY literals).

Names under ``Other Users/`` are other accounts' shared mailboxes
(``shared.resolve``: the rights each command needs, RFC 4314 section 4);
the store is then called with the owner's ids.

Mailbox names reach the store decoded (``session.mailbox_name``); roles in
the store are the special-use attributes on the wire.
"""

import calendar
import re

from roost.storage import errors, mime
from roost.storage.acl import with_virtual
from roost.storage.views import for_store

from .. import resync, shared
from ..fetch import MONTHS
from ..selected import SelectedMailbox
from ..wire import astring, uid_set_text
from . import AUTHENTICATED, SELECTED, Bad, No, capability, command

capability("NAMESPACE", "CHILDREN", "LIST-EXTENDED", "LIST-STATUS", "SPECIAL-USE",
           "CREATE-SPECIAL-USE", "XLIST", "STATUS=SIZE", "MULTIAPPEND")
capability(lambda s: f"APPENDLIMIT={s.ctx.append_limit}")

SEPARATOR = "/"
ROLE_ATTRS = {"drafts": "\\Drafts", "sent": "\\Sent", "archive": "\\Archive", "junk": "\\Junk",
              "trash": "\\Trash", "all": "\\All", "flagged": "\\Flagged",
              "important": "\\Important"}
ATTR_ROLES = {v.lower(): k for k, v in ROLE_ATTRS.items()}
# XLIST (the pre-RFC 6154 Gmail extension) spells some roles its own way.
XLIST_ATTRS = dict(ROLE_ATTRS, junk="\\Spam", all="\\AllMail", flagged="\\Starred")


def _wire(s, name):
    return astring(s.wire_name(name), s.utf8)


# --- SELECT / EXAMINE -----------------------------------------------------------

@command("SELECT", "EXAMINE")
async def select(s, cmd):
    if s.selected is not None:
        s.selected = None
        s.state = AUTHENTICATED
        if s.rev2 or "QRESYNC" in s.enabled:
            s.send(b"* OK [CLOSED] previous mailbox closed")
    if cmd.qresync and "QRESYNC" not in s.enabled:
        raise Bad("QRESYNC must be enabled first")
    if cmd.condstore:
        s.enabled.add("CONDSTORE")
    name = s.mailbox_name(cmd.mailbox)
    store = s.ctx.store

    def load():
        box, rights, shown = shared.resolve_blocking(store, s.account, name, "r")
        return (box, rights, shown, for_store(store).flag_rows(box),   # store.flags(box.id), cached
                store.recent_floor(box.id))
    box, rights, shown, rows, floor = await s.ctx.run(load)
    readonly = cmd.verb == "EXAMINE" or not shared.read_write(rights)
    highest = max([box.highestmodseq] + [r[1] for r in rows])
    keywords, first_unseen = {}, 0
    view = SelectedMailbox(box, [r[0] for r in rows], highest, readonly)
    for i, (_uid, _m, bits, kws) in enumerate(rows):
        if not first_unseen and not bits & 1:
            first_unseen = i + 1
        for k in kws:
            keywords.setdefault(k.lower(), k)
    view.keywords = keywords
    view.select_rows = rows
    view.rights, view.name, view.account_id = rights, shown, box.account_id
    s.follow(box.account_id)        # a shared mailbox: its owner's changes
    view.claims = not readonly and not s.rev2
    if not s.rev2 and view.last_uid > floor:    # RFC 3501 2.3.2: SELECT claims \Recent, EXAMINE looks
        if view.claims:
            floor = await s.ctx.run(store.claim_recent, box.id, view.last_uid)
        view.recent = {u for u in view.uids if u > floor}
    s.send_flag_list(view)
    s.send(b"* %d EXISTS" % view.exists)
    if not s.rev2:
        s.send(b"* %d RECENT" % len(view.recent))
        if first_unseen:
            s.send(b"* OK [UNSEEN %d] first unseen" % first_unseen)
    s.send(b"* OK [UIDVALIDITY %d] UIDs valid" % box.uidvalidity)
    s.send(b"* OK [UIDNEXT %d] predicted next UID" % box.uidnext)
    s.send(b"* OK [HIGHESTMODSEQ %d] highest" % highest)
    s.send(f"* OK [MAILBOXID ({box.oid})] mailbox id".encode())
    if s.rev2:
        s.send(b"* LIST () \"/\" " + _wire(s, shown))
    s.selected = view
    s.state = SELECTED
    if cmd.qresync:
        await _qresync(s, view, box, rows, cmd.qresync)
    return f"[{'READ-ONLY' if readonly else 'READ-WRITE'}] {cmd.verb} completed"


async def _qresync(s, view, box, rows, params):
    validity, modseq, known, match = params
    if validity != box.uidvalidity:
        return
    store = s.ctx.store

    def load():
        return store.history_floor(box.account_id), store.expunged_since(box.id, modseq)
    floor, gone = await s.ctx.run(load)
    ranges = resync.vanished(view, [u for u in gone if u not in view], modseq < floor, known, match,
                             box.uidnext - 1)
    if ranges:
        s.send(b"* VANISHED (EARLIER) " + resync.ranges_text(ranges).encode())
    for uid, m, bits, kws in rows:
        if m > modseq:
            s.send(s.flags_fetch(view.seq(uid), uid, m, bits, kws, True))


# --- CREATE / DELETE / RENAME / SUBSCRIBE -------------------------------------------

@command("CREATE", useattr=True)
async def create(s, cmd):
    name = s.mailbox_name(cmd.mailbox).rstrip(SEPARATOR)
    _check_new_name(name)
    if name.upper() == "INBOX":
        raise No("[ALREADYEXISTS] INBOX always exists")
    if shared.split(name) is not None:
        if cmd.use:
            raise No("[USEATTR] special-use attributes are the owner's to set")
        await s.ctx.run(shared.create, s.ctx.store, s.account, name)
        return "CREATE completed"
    role = None
    if cmd.use:
        if len(cmd.use) > 1:
            raise No("[USEATTR] one special-use attribute per mailbox")
        role = ATTR_ROLES.get(cmd.use[0].lower())
        if role is None:
            raise No(f"[USEATTR] {cmd.use[0]} is not a special-use attribute Roost supports")
    await s.ctx.run(s.ctx.store.create_mailbox, s.account.id, name, role)
    return "CREATE completed"


def _check_new_name(name):
    if "*" in name or "%" in name:
        raise No("[CANNOT] mailbox names cannot contain the LIST wildcards * and %")


@command("DELETE")
async def delete(s, cmd):
    name = s.mailbox_name(cmd.mailbox)
    store = s.ctx.store
    box, _rights, _shown = await shared.resolve(s, name, "x")
    if s.selected is not None and s.selected.pk == box.id:
        s.selected = None
        s.state = AUTHENTICATED
    await s.ctx.run(store.delete_mailbox, box.account_id, box.id)


@command("RENAME")
async def rename(s, cmd):
    name = s.mailbox_name(cmd.mailbox)
    new = s.mailbox_name(cmd.new_name).rstrip(SEPARATOR)
    _check_new_name(new)
    store = s.ctx.store
    if shared.split(name) is not None or shared.split(new) is not None:
        box, new = await s.ctx.run(shared.rename, store, s.account, name, new)
    else:
        box = await s.ctx.run(store.mailbox, s.account.id, name)
        await s.ctx.run(store.rename_mailbox, s.account.id, box.id, new)
    if s.selected is not None and s.selected.pk == box.id:
        s.selected.name = new


@command("SUBSCRIBE", "UNSUBSCRIBE")
async def subscribe(s, cmd):
    """Subscriptions are names (``storage.imapstate``): SUBSCRIBE to a name no
    mailbox has succeeds, UNSUBSCRIBE of a name not subscribed is OK."""
    name = s.mailbox_name(cmd.mailbox).rstrip(SEPARATOR)
    await s.ctx.run(s.ctx.store.subscribe, s.account.id, name, cmd.verb == "SUBSCRIBE")


# --- LIST / LSUB / XLIST ------------------------------------------------------------

MAX_PATTERN = 1024      # characters of reference + pattern
MAX_PATTERNS = 64       # patterns in one LIST-EXTENDED command


class Pattern:
    """A LIST pattern (RFC 3501 6.3.8): ``*`` matches anything, ``%`` anything
    but the hierarchy delimiter. Matched as a set of NFA states held in one
    integer (bit i: the first i tokens are matched), so a match costs
    O(len(name)) integer operations whatever the pattern; no regex, no
    backtracking. A pattern that starts with INBOX matches it in any case."""

    def __init__(self, reference, pattern):
        full = reference + pattern if not reference or reference.endswith(SEPARATOR) \
            or pattern.startswith(SEPARATOR) else reference + SEPARATOR + pattern
        if len(full) > MAX_PATTERN:
            raise No(f"[LIMIT] LIST patterns are at most {MAX_PATTERN} characters")
        tokens = []
        for ch in full:                # "%*", "*%", "**" are "*"; "%%" is "%"
            if ch in "*%" and tokens and tokens[-1] in "*%":
                if ch == "*":
                    tokens[-1] = "*"
                continue
            tokens.append(ch)
        fold = full[:5].upper() == "INBOX"
        self.literal = {}
        self.star = self.percent = 0
        for i, ch in enumerate(tokens):
            bit = 1 << i
            if ch == "*":
                self.star |= bit
            elif ch == "%":
                self.percent |= bit
            else:
                for c in {ch, ch.upper(), ch.lower()} if fold and i < 5 else (ch,):
                    self.literal[c] = self.literal.get(c, 0) | bit
        self.wild = self.star | self.percent
        self.accept = 1 << len(tokens)

    def _close(self, states):
        return states | (states & self.wild) << 1    # a wildcard may match nothing

    def fullmatch(self, name):
        states = self._close(1)
        for ch in name:
            states = ((states & self.literal.get(ch, 0)) << 1) | (states & self.star) | \
                (states & self.percent if ch != SEPARATOR else 0)
            if not states:
                return False
            states = self._close(states)
        return bool(states & self.accept)


def _parents(names):
    """Every name that is a proper ancestor of one of ``names``."""
    out = set()
    for name in names:
        i = name.find(SEPARATOR)
        while i > 0:
            out.add(name[:i])
            i = name.find(SEPARATOR, i + 1)
    return out


@command("LIST", "LSUB", "XLIST")
async def list_cmd(s, cmd):
    """LIST, LSUB, XLIST. Names come from the mailboxes and, for LSUB and
    LIST (SUBSCRIBED), from the subscriptions: a subscribed name without a
    mailbox is ``\\NonExistent`` in LIST (RFC 5258 section 3.4) and
    ``\\Noselect`` in LSUB; LSUB also returns an unsubscribed parent of a
    subscribed name that the pattern's ``%`` hides, as ``\\Noselect`` (RFC
    3501 6.3.9). A hierarchy level without a mailbox (its mailbox deleted, its
    children kept) is listed as ``\\Noselect \\HasChildren``."""
    if cmd.verb != "LIST" and cmd.extended:
        raise Bad(f"{cmd.verb} takes a reference and one pattern")
    for opt in cmd.select:
        if opt not in ("SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"):
            raise Bad(f"unknown selection option {opt}")
    if "RECURSIVEMATCH" in cmd.select and len(set(cmd.select) - {"REMOTE", "RECURSIVEMATCH"}) == 0:
        raise Bad("RECURSIVEMATCH needs another selection option")
    for opt in cmd.returns:
        if opt not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS", "MYRIGHTS"):
            raise Bad(f"unknown return option {opt}")
    reference = s.mailbox_name(cmd.reference) if cmd.reference else ""
    patterns = [s.mailbox_name(p) if p else "" for p in cmd.patterns]
    verb = cmd.verb.encode()
    if patterns == [""] and cmd.verb != "LSUB" and not cmd.extended:
        s.send(b"* " + verb + b' (\\Noselect) "/" ""')
        return
    if len(patterns) > MAX_PATTERNS:
        raise No(f"[LIMIT] LIST takes at most {MAX_PATTERNS} patterns")
    matchers = [Pattern(reference, p) for p in patterns if p]
    store = s.ctx.store

    only_subscribed = cmd.verb == "LSUB" or "SUBSCRIBED" in cmd.select
    list_shared = not only_subscribed and "SPECIAL-USE" not in cmd.select

    def load():
        """One worker trip: the mailboxes, the subscriptions, and the shared
        mailboxes when they are listed or subscribed."""
        boxes, subs = store.mailboxes(s.account.id), store.subscriptions(s.account.id)
        others = set()      # subscribed names of shared mailboxes that exist (and may be listed)
        subscribed_shared = only_subscribed and any(shared.split(n) is not None for n in subs)
        found = store.shared_mailboxes(s.account) if list_shared or subscribed_shared else []
        if subscribed_shared:
            others = {shared.shared_name(owner, box.name) for owner, box, rights in found if "l" in rights}
        return boxes, subs, others, found
    boxes, subs, others, found = await s.ctx.run(load)
    by_name = {b.name: b for b in boxes}
    subs = set(subs)
    recursive = "RECURSIVEMATCH" in cmd.select
    parents = _parents(by_name)
    subscribed_parents = _parents(subs)

    def matches(name):
        return any(m.fullmatch(name) for m in matchers)
    hidden_parents = _parents(c for c in subs if not matches(c)) if cmd.verb == "LSUB" else ()
    if only_subscribed:
        names = set(subs)
        if recursive or cmd.verb == "LSUB":
            names |= subscribed_parents
    else:
        names = set(by_name) | parents
    listed = []
    for name in sorted(names, key=lambda n: (n != "INBOX", n)):
        if not matches(name):
            continue
        box = by_name.get(name)
        exists = box is not None or name in others
        subscribed = name in subs
        child_subscribed = name in subscribed_parents
        if cmd.verb == "LSUB" and not subscribed:
            if name not in hidden_parents:     # only a parent whose subscribed child "%" hides
                continue
        elif only_subscribed and not subscribed and not (recursive and child_subscribed):
            continue
        if "SPECIAL-USE" in cmd.select and (box is None or box.role not in ROLE_ATTRS):
            continue
        attrs = []
        if cmd.verb == "LSUB":
            if not exists or not subscribed:
                attrs.append("\\Noselect")
        elif not exists:
            if only_subscribed:
                attrs.append("\\NonExistent")
            else:
                attrs.append("\\Noselect")
        if cmd.verb != "LSUB" and not (not exists and only_subscribed and name not in parents):
            attrs.append("\\HasChildren" if name in parents else "\\HasNoChildren")
        if subscribed and (cmd.verb == "LIST" and ("SUBSCRIBED" in cmd.select
                                                   or "SUBSCRIBED" in cmd.returns)):
            attrs.append("\\Subscribed")
        roles = XLIST_ATTRS if cmd.verb == "XLIST" else ROLE_ATTRS
        if box is not None and box.role in roles and cmd.verb != "LSUB":
            attrs.append(roles[box.role])
        if cmd.verb == "XLIST" and name == "INBOX":
            attrs.append("\\Inbox")
        line = verb + b" (" + " ".join(attrs).encode() + b') "/" ' + _wire(s, name)
        if recursive and child_subscribed and not subscribed:
            line += b' ("CHILDINFO" ("SUBSCRIBED"))'
        s.send(b"* " + line)
        if box is not None:
            listed.append(box)
    if "MYRIGHTS" in cmd.returns:           # RFC 8440: the owner has every right
        for box in listed:
            s.send(b"* MYRIGHTS " + _wire(s, box.name) + b" " + with_virtual(shared.RIGHTS).encode())
    if cmd.status is not None:
        for box in listed:
            try:
                await _status(s, box.name, cmd.status)
            except (errors.MailboxNotFound, No):
                pass
    if list_shared:
        await _list_shared(s, cmd, matchers, verb, found)


async def _list_shared(s, cmd, matchers, verb, found):
    """LIST of the Other Users namespace: the mailboxes shared with the
    account (``found``, ``store.shared_mailboxes``) that it may look up
    (``l``), under \\Noselect parents for their owners and for levels not
    shared (RFC 4314 section 4: a mailbox without ``l`` is not listed).
    Subscriptions and special use are not shown for them."""
    boxes = {shared.shared_name(owner, box.name): (box, rights)
             for owner, box, rights in found if "l" in rights}
    if not boxes:
        return
    parents = _parents(boxes)
    listed = []
    for name in sorted(set(boxes) | parents):
        if not any(m.fullmatch(name) for m in matchers):
            continue
        children = "\\HasChildren" if name in parents else "\\HasNoChildren"
        attrs = [children] if name in boxes else ["\\Noselect", children]
        s.send(b"* " + verb + b" (" + " ".join(attrs).encode() + b') "/" ' + _wire(s, name))
        if name in boxes:
            listed.append(name)
    if "MYRIGHTS" in cmd.returns:
        for name in listed:
            s.send(b"* MYRIGHTS " + _wire(s, name) + b" " + with_virtual(boxes[name][1]).encode())
    if cmd.status is not None:
        for name in listed:
            if "r" in boxes[name][1]:
                try:
                    await _status(s, name, cmd.status)
                except (errors.MailboxNotFound, No):
                    pass


@command("NAMESPACE")
async def namespace(s, cmd):
    s.send(b'* NAMESPACE (("" "/")) (("' + shared.PREFIX.encode() + b'" "/")) NIL')


# --- STATUS ---------------------------------------------------------------------

STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE",
                "HIGHESTMODSEQ", "APPENDLIMIT", "MAILBOXID")
STATUS_ITEMS += ("DELETED-STORAGE",)      # RFC 9208, with QUOTA=RES-STORAGE (commands.quota)


@command("STATUS")
async def status(s, cmd):
    for item in cmd.items:
        if item not in STATUS_ITEMS or (item == "RECENT" and s.rev2):
            raise Bad(f"unknown status item {item}")
    await _status(s, s.mailbox_name(cmd.mailbox), cmd.items)


async def _status(s, name, items):
    store = s.ctx.store

    def load():
        size = "SIZE" in items
        if shared.split(name) is None:
            box = store.mailbox(s.account.id, name, counts=True, size=size)
            shown = box.name
        else:
            found, _rights, shown = shared.resolve_blocking(store, s.account, name, "r")
            box = store.mailbox(found.account_id, mailbox_id=found.id, counts=True, size=size)
        deleted = recent = None
        if "DELETED" in items:
            deleted = sum(1 for r in store.flags(box.id) if r[2] & 8)
        if "DELETED-STORAGE" in items:    # in 1024-octet units, as QUOTA's STORAGE
            deleted_storage[0] = -(-store.deleted_storage(box.id) // 1024)
        if "RECENT" in items:
            recent = store.unclaimed_recent(box.id)
        return box, shown, deleted, recent
    deleted_storage = [None]
    box, shown, deleted, recent = await s.ctx.run(load)
    if recent is not None and s.selected is not None and s.selected.pk == box.id:
        recent += len(s.selected.recent)   # recent to this session
    values = {"MESSAGES": box.messages, "RECENT": recent, "UIDNEXT": box.uidnext,
              "UIDVALIDITY": box.uidvalidity, "UNSEEN": box.unseen, "DELETED": deleted,
              "SIZE": box.size, "HIGHESTMODSEQ": box.highestmodseq,
              "APPENDLIMIT": s.ctx.append_limit}
    values["DELETED-STORAGE"] = deleted_storage[0]
    out = []
    for item in items:
        if item == "RECENT" and s.rev2:
            continue
        if item == "MAILBOXID":
            out.append(f"MAILBOXID ({box.oid})")
        else:
            out.append(f"{item} {values[item]}")
    s.send(b"* STATUS " + _wire(s, shown) + b" (" + " ".join(out).encode() + b")")
    if "HIGHESTMODSEQ" in items:
        s.enable_condstore()


# --- APPEND -------------------------------------------------------------------

_APPEND_DATE = re.compile(r" ?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")


def parse_append_date(text):
    m = _APPEND_DATE.fullmatch(text)
    if not m or m.group(2).upper() not in MONTHS:
        raise Bad("bad date-time")
    d, mon, y, hh, mm, ss = int(m.group(1)), MONTHS[m.group(2).upper()], int(m.group(3)), \
        int(m.group(4)), int(m.group(5)), int(m.group(6))
    try:
        ts = calendar.timegm((y, mon, d, hh, mm, ss))
    except ValueError:
        raise Bad("bad date-time") from None
    offset = (int(m.group(8)) * 60 + int(m.group(9))) * 60
    return ts - offset if m.group(7) == "+" else ts + offset


@command("APPEND", trycreate=True)
async def append(s, cmd):
    validity, uids = await append_messages(s, s.mailbox_name(cmd.mailbox), cmd.messages)
    return f"[APPENDUID {validity} {uid_set_text(uids)}] APPEND completed"


async def append_messages(s, name, messages, replace=None):
    """Store APPEND's (or REPLACE's) messages in mailbox ``name``, all or none;
    returns (uidvalidity, uids). CATENATE parts are put together first.
    ``replace`` = (mailbox pk, uids) are removed in the same transaction where
    the server gives ``append_many`` (else the caller removes them after)."""
    from .compose import assemble
    store = s.ctx.store
    for msg in messages:
        if msg.parts is not None:
            msg.data = await assemble(s, msg.parts)
        if len(msg.data) > s.ctx.append_limit:
            raise No("[TOOBIG] message is larger than APPENDLIMIT")
        for f in msg.flags:
            if f.lower() == "\\recent" or (f.startswith("\\") and f.lower() not in
                                           ("\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft")):
                raise Bad(f"cannot append with flag {f}")
        if not msg.data:
            raise No("empty message")
    dates = [parse_append_date(m.date) if m.date else None for m in messages]
    for msg in messages:
        if msg.binary and b"\0" in msg.data:
            # RFC 3516 section 4.4: each part holding NUL is stored in base64
            # (no BODY[] can carry a NUL, and no part is left "binary"); what
            # cannot be converted is refused. A plain literal with NUL (against
            # RFC 3501's grammar) is stored as it came, as LMTP stores it; FETCH
            # BODY[] then shows each NUL as 0x80.
            data = await s.ctx.run(mime.binary_to_base64, msg.data)
            if data is None:
                raise No("[UNKNOWN-CTE] NUL outside a body that base64 can carry")
            msg.data = data
    box, rights, _shown = await shared.resolve(s, name, "i")
    owner = s.account if box.account_id == s.account.id else \
        await s.ctx.run(store.account_by_id, box.account_id)
    for msg in messages:
        msg.flags = shared.allowed_flags(rights, msg.flags)     # RFC 4314: the others are dropped
    if (len(messages) > 1 or replace is not None) and s.ctx.append_many is not None:
        # MULTIAPPEND is all or nothing (RFC 3502): one transaction
        stored = await s.ctx.run(s.ctx.append_many, owner, box,
                                 [(m.data, m.flags, d) for m, d in zip(messages, dates)], replace)
        return stored[0].uidvalidity, [x.uid for x in stored]
    uids = []
    try:
        for msg, date in zip(messages, dates):
            stored = await s.ctx.run(s.ctx.append, owner, box, msg.data, msg.flags, date)
            uids.append(stored.uid)
            validity = stored.uidvalidity
    except errors.StoreError:
        # MULTIAPPEND is all or nothing (RFC 3502): take back what went in.
        if uids:
            await s.ctx.run(store.remove, box.id, uids)
        raise
    return validity, uids
