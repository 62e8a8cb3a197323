"""Authenticated-state mailbox commands: SELECT/EXAMINE, CREATE, DELETE,
RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST (+ LIST-EXTENDED, LIST-STATUS,
SPECIAL-USE), LSUB, XLIST, NAMESPACE, STATUS and APPEND (MULTIAPPEND,
APPENDUID, BINARY literals).

Mailbox names reach the store decoded (``session.mailbox_name``); roles in
the store are the special-use attributes on the wire.
"""

import calendar
import re

from roost.storage import errors
from roost.storage.views import for_store

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
        box = store.mailbox(s.account.id, name)
        return box, for_store(store).flag_rows(box)   # store.flags(box.id), cached
    box, rows = await s.ctx.run(load)
    readonly = cmd.verb == "EXAMINE"
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
    s.send_flag_list(view)
    s.send(b"* %d EXISTS" % view.exists)
    if not s.rev2:
        s.send(b"* 0 RECENT")
        if first_unseen:
            s.send(b"* OK [UNSEEN %d] first unseen" % first_unseen)
    s.send(b"* OK [UIDVALIDITY %d] UIDs valid" % box.uidvalidity)
    s.send(b"* OK [UIDNEXT %d] predicted next UID" % box.uidnext)
    s.send(b"* OK [HIGHESTMODSEQ %d] highest" % highest)
    s.send(f"* OK [MAILBOXID ({box.oid})] mailbox id".encode())
    if s.rev2:
        s.send(b"* LIST () \"/\" " + _wire(s, box.name))
    s.selected = view
    s.state = SELECTED
    if cmd.qresync:
        await _qresync(s, view, box, rows, cmd.qresync)
    return f"[{'READ-ONLY' if readonly else 'READ-WRITE'}] {cmd.verb} completed"


async def _qresync(s, view, box, rows, params):
    validity, modseq, known, _match = params
    if validity != box.uidvalidity:
        return
    gone = await s.ctx.run(s.ctx.store.expunged_since, box.id, modseq)
    if known is not None:
        ranges = known.resolve(max(gone + [view.last_uid, 1]))
        gone = [u for u in gone if any(lo <= u <= hi for lo, hi in ranges)]
    if gone:
        s.send(b"* VANISHED (EARLIER) " + uid_set_text(gone).encode())
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
    box = await s.ctx.run(store.mailbox, s.account.id, name)
    if s.selected is not None and s.selected.pk == box.id:
        s.selected = None
        s.state = AUTHENTICATED
    await s.ctx.run(store.delete_mailbox, s.account.id, box.id)


@command("RENAME")
async def rename(s, cmd):
    name = s.mailbox_name(cmd.mailbox)
    new = s.mailbox_name(cmd.new_name).rstrip(SEPARATOR)
    _check_new_name(new)
    store = s.ctx.store
    box = await s.ctx.run(store.mailbox, s.account.id, name)
    await s.ctx.run(store.rename_mailbox, s.account.id, box.id, new)
    if s.selected is not None and s.selected.pk == box.id:
        s.selected.name = new


@command("SUBSCRIBE", "UNSUBSCRIBE")
async def subscribe(s, cmd):
    name = s.mailbox_name(cmd.mailbox)
    store = s.ctx.store

    def run():
        box = store.mailbox(s.account.id, name)
        store.set_subscribed(s.account.id, box.id, cmd.verb == "SUBSCRIBE")
    await s.ctx.run(run)


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
    boxes = await s.ctx.run(s.ctx.store.mailboxes, s.account.id)
    only_subscribed = cmd.verb == "LSUB" or "SUBSCRIBED" in cmd.select
    recursive = "RECURSIVEMATCH" in cmd.select
    parents = _parents(b.name for b in boxes)
    subscribed_parents = _parents(b.name for b in boxes if b.subscribed)
    listed = []
    for box in sorted(boxes, key=lambda b: (b.name != "INBOX", b.name)):
        if not any(m.fullmatch(box.name) for m in matchers):
            continue
        attrs = []
        child_subscribed = recursive and box.name in subscribed_parents
        if only_subscribed and not box.subscribed and not child_subscribed:
            continue
        if "SPECIAL-USE" in cmd.select and box.role not in ROLE_ATTRS:
            continue
        has_children = box.name in parents
        if cmd.verb != "LSUB":
            attrs.append("\\HasChildren" if has_children else "\\HasNoChildren")
        if box.subscribed and (cmd.verb == "LIST" and ("SUBSCRIBED" in cmd.select
                                                       or "SUBSCRIBED" in cmd.returns)):
            attrs.append("\\Subscribed")
        roles = XLIST_ATTRS if cmd.verb == "XLIST" else ROLE_ATTRS
        if box.role in roles and cmd.verb != "LSUB":
            attrs.append(roles[box.role])
        if cmd.verb == "XLIST" and box.name == "INBOX":
            attrs.append("\\Inbox")
        line = verb + b" (" + " ".join(attrs).encode() + b') "/" ' + _wire(s, box.name)
        if child_subscribed and not box.subscribed:
            line += b' ("CHILDINFO" ("SUBSCRIBED"))'
        s.send(b"* " + line)
        listed.append(box)
    if cmd.status is not None:
        for box in listed:
            try:
                await _status(s, box.name, cmd.status)
            except (errors.MailboxNotFound, No):
                pass


@command("NAMESPACE")
async def namespace(s, cmd):
    s.send(b'* NAMESPACE (("" "/")) NIL NIL')


# --- STATUS ---------------------------------------------------------------------

STATUS_ITEMS = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE",
                "HIGHESTMODSEQ", "APPENDLIMIT", "MAILBOXID")


@command("STATUS")
async def status(s, cmd):
    for item in cmd.items:
        if item not in STATUS_ITEMS:
            raise Bad(f"unknown status item {item}")
    await _status(s, s.mailbox_name(cmd.mailbox), cmd.items)


async def _status(s, name, items):
    store = s.ctx.store

    def load():
        box = store.mailbox(s.account.id, name, counts=True)
        deleted = None
        if "DELETED" in items:
            deleted = sum(1 for r in store.flags(box.id) if r[2] & 8)
        return box, deleted
    box, deleted = await s.ctx.run(load)
    values = {"MESSAGES": box.messages, "RECENT": 0, "UIDNEXT": box.uidnext,
              "UIDVALIDITY": box.uidvalidity, "UNSEEN": box.unseen, "DELETED": deleted,
              "SIZE": box.size, "HIGHESTMODSEQ": box.highestmodseq,
              "APPENDLIMIT": s.ctx.append_limit}
    out = []
    for item in items:
        if item == "MAILBOXID":
            out.append(f"MAILBOXID ({box.oid})")
        else:
            out.append(f"{item} {values[item]}")
    s.send(b"* STATUS " + _wire(s, box.name) + b" (" + " ".join(out).encode() + b")")
    if "HIGHESTMODSEQ" in items:
        s.enabled.add("CONDSTORE")


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
    name = s.mailbox_name(cmd.mailbox)
    store = s.ctx.store
    for msg in cmd.messages:
        if len(msg.data) > s.ctx.append_limit:
            raise No("[TOOBIG] message is larger than APPENDLIMIT")
        for f in msg.flags:
            if f.lower() == "\\recent" or (f.startswith("\\") and f.lower() not in
                                           ("\\seen", "\\answered", "\\flagged", "\\deleted", "\\draft")):
                raise Bad(f"cannot append with flag {f}")
        if not msg.data:
            raise No("empty message")
    dates = [parse_append_date(m.date) if m.date else None for m in cmd.messages]
    box = await s.ctx.run(store.mailbox, s.account.id, name)
    uids = []
    try:
        for msg, date in zip(cmd.messages, dates):
            stored = await s.ctx.run(s.ctx.append, s.account, box, msg.data, msg.flags, date)
            uids.append(stored.uid)
            validity = stored.uidvalidity
    except errors.StoreError:
        # MULTIAPPEND is all or nothing (RFC 3502): take back what went in.
        if uids:
            await s.ctx.run(store.remove, box.id, uids)
        raise
    return f"[APPENDUID {validity} {uid_set_text(uids)}] APPEND completed"
