"""Sort keys and threads of messages (RFC 5256 and RFC 5957), in mail terms.

Owns the base subject (RFC 5256 section 2.1), the collation key of a string
(i;unicode-casemap of RFC 5051, closely: title case taken as upper case, then
canonical decomposition), the sort record of one stored message
(``MessageKeys``, built from its row: a stored message never changes, so
``storage.views`` caches records by mailbox and UID), a multi-key stable sort, and
the two threading algorithms, ORDEREDSUBJECT and REFERENCES, over records.

Nothing here knows about a protocol: callers give each record a position
(``seq``: the order of the messages in the mailbox, the RFC's implicit last
sort key) and turn the results into their own numbers.
"""

import contextlib
import gc
import json
import operator
import re
import unicodedata
from typing import NamedTuple

from sqlalchemy import select

from .messages import chunks
from .schema import mailbox_messages, messages

MAX_SUBJECT = 4000        # characters of a subject looked at (the store keeps 4000)
MAX_REFS = 200            # References of one message used for threading

# i;unicode-casemap: ASCII needs only upper-casing; the rest is decomposed too.


def collate(text):
    """The comparison key of ``text``: equal keys compare equal, code point
    order of keys is the collation order."""
    if not text:
        return ""
    if text.isascii():
        return text.upper()
    return unicodedata.normalize("NFD", text.upper())


# --- base subject (RFC 5256 section 2.1) --------------------------------------

_WSP = re.compile(r"[ \t\r\n]+")
_BLOB = r"\[[^\[\]]*\][ \t]*"
_REFWD = re.compile(r"(?:%s)*(?:re|fwd?)[ \t]*(?:%s)?:" % (_BLOB, _BLOB), re.I)
_BLOB_RE = re.compile(_BLOB)


def base_subject(subject):
    """``(base subject, is reply or forward)`` of a decoded subject, by the
    procedure of RFC 5256 section 2.1 (steps 1 to 6)."""
    s = _WSP.sub(" ", (subject or "")[:MAX_SUBJECT])
    reply = False
    while True:
        # (2) trailers: "(fwd)" and white space
        while True:
            if s[-1:] in (" ", "\t"):
                s = s[:-1]
            elif s[-5:].lower() == "(fwd)":
                s = s[:-5]
                reply = True
            else:
                break
        # (3) leaders, (4) a blob when text remains, (5) repeated
        while True:
            prev = s
            while True:
                if s[:1] in (" ", "\t"):
                    s = s[1:]
                    continue
                m = _REFWD.match(s)
                if m:
                    reply = True
                    s = s[m.end():]
                    continue
                break
            m = _BLOB_RE.match(s)
            if m and s[m.end():].strip():
                s = s[m.end():]
            if s == prev:
                break
        # (6) [fwd: ... ]
        if s[:5].lower() == "[fwd:" and s.endswith("]"):
            s = s[5:-1]
            reply = True
            continue
        return s, reply


# --- one message's sort record -------------------------------------------------

class MessageKeys(NamedTuple):
    """What SORT and THREAD look at in one message. String keys are already
    collation keys (``collate``); dates are epoch seconds (UTC)."""
    pk: int
    arrival: float
    date: float            # the sent date, or the internal date without one
    size: int
    subject: str           # base subject
    reply: bool            # the subject marked a reply or forward
    from_: str             # addr-mailbox of the first From address
    to: str
    cc: str
    display_from: str      # RFC 5957: display name, else the address
    display_to: str
    msgid: str             # None when the message has no valid Message-ID
    refs: tuple            # the references for threading (RFC 5256 section 3)


def _mailbox_part(addrs):
    if not addrs:
        return ""
    mail = addrs[0].get("email") or ""
    return collate(mail.rpartition("@")[0] if "@" in mail else mail)


def _display(addrs):
    if not addrs:
        return ""
    return collate(addrs[0].get("name") or addrs[0].get("email") or "")


def normal_id(msgid):
    """A Message-ID with a quoted local part unquoted (RFC 5256 section 3)."""
    if '"' not in msgid:
        return msgid
    local, at, domain = msgid.rpartition("@")
    if at and len(local) >= 2 and local[0] == '"' and local[-1] == '"':
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
        return f"{local}@{domain}"
    return msgid


def keys_of(pk, internal_date, sent_at, size, subject, summary):
    """The ``MessageKeys`` of a stored message from its columns (``summary``
    as stored: JSON text or the decoded dict)."""
    if isinstance(summary, str):
        try:
            summary = json.loads(summary) if summary else {}
        except ValueError:
            summary = {}
    base, reply = base_subject(subject)
    ids = summary.get("messageId") or []
    refs = [normal_id(r) for r in (summary.get("references") or [])[-MAX_REFS:]]
    if not refs:
        refs = [normal_id(r) for r in (summary.get("inReplyTo") or [])[:1]]
    return MessageKeys(
        pk=pk, arrival=internal_date, date=sent_at if sent_at is not None else internal_date,
        size=size, subject=collate(base), reply=reply,
        from_=_mailbox_part(summary.get("from")), to=_mailbox_part(summary.get("to")),
        cc=_mailbox_part(summary.get("cc")),
        display_from=_display(summary.get("from")), display_to=_display(summary.get("to")),
        msgid=normal_id(ids[0]) if ids else None, refs=tuple(refs))


def load_records(store, account_id, mailbox_pk, uids):
    """``{uid: MessageKeys}`` of the messages at ``uids`` in the mailbox."""
    mm, m = mailbox_messages, messages
    q = select(mm.c.uid, m.c.id, m.c.internal_date, m.c.sent_at, m.c.size, m.c.subject,
               m.c.summary, m.c.account_id).join(m, m.c.id == mm.c.message_id)
    out = {}
    with store.reader() as conn:
        for chunk in chunks(sorted(uids)):
            rows = conn.execute(q.where(mm.c.mailbox_id == mailbox_pk, mm.c.uid.in_(chunk)))
            for r in rows:
                if r[7] == account_id:
                    out[r[0]] = keys_of(*r[1:7])
    return out


# --- sorting -------------------------------------------------------------------

SORT_FIELDS = {
    "ARRIVAL": "arrival", "DATE": "date", "SIZE": "size", "SUBJECT": "subject",
    "FROM": "from_", "TO": "to", "CC": "cc",
    "DISPLAYFROM": "display_from", "DISPLAYTO": "display_to",
}


def sort(items, criteria):
    """``items``, ``[(seq, MessageKeys)]`` in mailbox order, sorted by
    ``criteria`` (``[(field name of SORT_FIELDS, reverse)]``, first key first);
    ties keep mailbox order (``seq`` ascending), whatever the directions."""
    out = sorted(items, key=lambda it: it[0])
    for name, reverse in reversed(criteria):
        attr = SORT_FIELDS[name]
        out.sort(key=lambda it: getattr(it[1], attr), reverse=reverse)
    return out


# --- threading -----------------------------------------------------------------
# A thread node is ``[seq or None, children]`` (ORDEREDSUBJECT) or a ``_Box``
# with ``seq`` and ``children`` (REFERENCES): seq None is a dummy (a message
# referenced but not among those threaded). ``thread_text`` takes either.

def ordered_subject(items):
    """THREAD=ORDEREDSUBJECT over ``[(seq, MessageKeys)]``: a list of nodes."""
    groups = {}
    for seq, k in sort(items, [("SUBJECT", False), ("DATE", False)]):
        groups.setdefault(k.subject, []).append((seq, k))
    threads = []
    for members in groups.values():
        (seq, k), rest = members[0], members[1:]
        threads.append((k.date, seq, [seq, [[s, []] for s, _k in rest]]))
    threads.sort(key=lambda t: (t[0], t[1]))
    return [t[2] for t in threads]


class _Box:
    __slots__ = ("seq", "keys", "parent", "children", "when")

    def __init__(self):
        self.seq = None
        self.keys = None
        self.parent = None
        self.children = []
        self.when = None      # (sent date, seq): a dummy's is its first child's

    def reaches(self, other):
        """Whether ``other`` is this box or one of its ancestors."""
        node = self
        while node is not None:
            if node is other:
                return True
            node = node.parent
        return False

    def unlink(self):
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def link(self, child):
        child.unlink()
        child.parent = self
        self.children.append(child)


_WHEN = operator.attrgetter("when")


@contextlib.contextmanager
def _collector_paused():
    """The cyclic garbage collector off for a burst of allocation: building a
    10k-message thread tree otherwise triggers full collections of a server's
    heap that cost more than the tree (measured: about 40 of 85 ms). Only
    cycles wait; reference counting goes on. A caller in another thread may
    switch it back on early: that costs time, nothing else."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def references(items):
    """THREAD=REFERENCES (RFC 5256 section 3) over ``[(seq, MessageKeys)]``:
    a list of nodes (``_Box``; shared, never mutate)."""
    with _collector_paused():
        return _references(items)


def _references(items):
    items = sorted(items, key=lambda it: it[0])
    table = {}
    unique = 0
    for seq, k in items:
        # (1) a container per message; a missing or duplicate id gets a unique one
        this = table.get(k.msgid) if k.msgid is not None else None
        if this is None and k.msgid is not None:
            this = table[k.msgid] = _Box()
        elif this is None or this.keys is not None:
            unique += 1
            this = table[("unique", unique)] = _Box()
        this.seq, this.keys, this.when = seq, k, (k.date, seq)
        # (1A) link the references to each other, keeping existing links, no loops
        prev = None
        for ref in k.refs:
            cur = table.get(ref)
            if cur is None:
                cur = table[ref] = _Box()
            # (a box without children is nobody's ancestor: no walk needed)
            if prev is not None and cur.parent is None and cur is not prev \
                    and not (cur.children and prev.reaches(cur)):
                prev.link(cur)
            prev = cur
        # (1B) the last reference is the message's parent (a new link wins)
        if prev is not None and prev is not this \
                and not (this.children and prev.reaches(this)):
            prev.link(this)
        elif prev is None:
            this.unlink()
    # (2) the root set
    roots = [b for b in table.values() if b.parent is None]
    # (3) prune dummies
    roots = _prune(roots)

    # (4) sort the top level (a dummy by its first child, once its children are sorted)
    for b in roots:
        if b.keys is None:
            b.children.sort(key=_WHEN)
            b.when = b.children[0].when
    roots.sort(key=_WHEN)
    # (5) merge threads with the same base subject
    def subject_of(b):
        return (b.keys if b.keys is not None else b.children[0].keys).subject
    subjects = {}
    for b in roots:
        subj = subject_of(b)
        if not subj:
            continue
        old = subjects.get(subj)
        if old is None or (old.keys is not None and (
                b.keys is None or (old.keys.reply and not b.keys.reply))):
            subjects[subj] = b
    kept, place, replaced = [], {}, {}
    for b in roots:
        b = replaced.pop(b, b)
        subj = subject_of(b)
        old = subjects.get(subj) if subj else None
        if old is None or old is b:
            place[b] = len(kept)
            kept.append(b)
            continue
        if old.keys is None and b.keys is None:
            for c in list(b.children):
                old.link(c)
        elif old.keys is None:
            old.link(b)
        elif b.keys.reply and not old.keys.reply:
            old.link(b)
        else:
            dummy = _Box()
            dummy.link(old)
            dummy.link(b)
            subjects[subj] = dummy
            if old in place:
                kept[place[old]] = dummy
                place[dummy] = place.pop(old)
            else:       # ``old`` comes later in the root list: the dummy goes there
                replaced[old] = dummy
    # (6) sort every set of siblings, deepest first
    for b in kept:
        _sort_tree(b)
    kept.sort(key=_WHEN)
    # no parent links in the result: without cycles, reference counting frees
    # the boxes (a cached result, the table's dummies) and the collector need not
    stack = list(kept)
    while stack:
        b = stack.pop()
        b.parent = None
        stack.extend(b.children)
    return kept


def _prune(roots):
    """RFC 5256 step 3, bottom up: dummies go, their children take their place,
    except that a dummy at the top level with several children stays."""
    order, stack = [], list(roots)
    while stack:
        b = stack.pop()
        order.append(b)
        stack.extend(b.children)
    for b in reversed(order):
        if all(c.keys is not None for c in b.children):
            continue
        kids = []
        for c in b.children:
            if c.keys is not None:
                kids.append(c)
            else:
                kids.extend(c.children)     # already pruned: real messages only
        for c in kids:
            c.parent = b
        b.children = kids
    out = []
    for b in roots:
        if b.keys is not None or len(b.children) > 1:
            out.append(b)
        elif b.children:
            b.children[0].parent = None
            out.append(b.children[0])
    return out


def _sort_tree(root):
    if not root.children:
        return
    stack, order = [root], []
    while stack:
        b = stack.pop()
        if b.children:
            order.append(b)
            stack.extend(b.children)
    for b in reversed(order):
        if len(b.children) > 1:
            b.children.sort(key=_WHEN)
        if b.keys is None:
            b.when = b.children[0].when


def thread_text(nodes, number=lambda seq: seq):
    """The THREAD response data of ``nodes`` (``number`` maps a node's seq to
    the number sent), e.g. ``(2)(3 6 (4 23)(44 7 96))``."""
    return "".join(f"({_members(n, number)})" for n in nodes)


def _members(root, number):
    out, stack = [], [root]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            out.append(x)
            continue
        seq, children = (x.seq, x.children) if type(x) is _Box else x
        nums = []
        while True:           # a chain of single children: "3 6 ..."
            if seq is not None:
                nums.append(str(number(seq)))
            if len(children) == 1 and seq is not None:
                x = children[0]
                seq, children = (x.seq, x.children) if type(x) is _Box else x
                continue
            break
        out.append(" ".join(nums))
        if children:          # then the sub-threads: "(4 23)(44 7 96)"
            if nums:
                out.append(" ")
            for c in reversed(children):
                stack.extend((")", c, "("))
    return "".join(out)
