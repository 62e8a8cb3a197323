"""IMAP SEARCH keys compiled into the store's criteria tree (storage.search).

Owns the mapping of every RFC 3501 search key (plus CONDSTORE ``MODSEQ``,
SAVEDATE's ``SAVED*`` and SEARCHRES ``$``) onto ``storage.search`` nodes.
It does not evaluate anything: ``storage.search.search`` does.

Dates: RFC 3501 compares dates "disregarding time and timezone". Internal
dates are shown in UTC (INTERNALDATE ``+0000``), so BEFORE/ON/SINCE become
UTC-day ranges ``[since, before)`` for the store. SENTBEFORE/SENTON/SENTSINCE
compare the calendar date written in each message's Date header, in its own
zone: the caller's ``sent_days`` gives ``{uid: (y, m, d)}`` and the key
becomes the matching UIDs (so it composes under NOT and OR).

Limits: a SEARCH has at most MAX_KEYS keys (each parenthesised list, NOT
and OR counting as one), at most MAX_TEXT_KEYS of them text keys (each is a
pass of the search backend over the account), nested at most MAX_DEPTH deep
(lists, NOT and OR together). Within them the criteria tree, its SQL (under
SQLite's expression depth of 1,000) and its evaluation stay small; past them
the command gets ``NO [LIMIT]`` (RFC 5530) before the search runs. Sequence
and UID sets must be atoms, so their size is bounded by the line limit.

OBJECTID: THREADID is a store criterion; EMAILID becomes the UIDs the
caller's ``email_uids`` finds. \\Recent is the caller's ``recent`` (the UIDs
recent for this session, RFC 3501 2.3.2): RECENT matches them, NEW those of
them not \\Seen, OLD the others. Without ``recent`` (IMAP4rev2, which dropped
\\Recent) RECENT and NEW match nothing and OLD matches everything. WITHIN's
OLDER/YOUNGER compare the internal date with the time the key is compiled, to
the second.
"""

import calendar
import re
import time

from roost.storage import search as q

from .commands import No
from .parser import SequenceSet
from .wire import ParseError, Str

_DATE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_MONTHS = {m: i for i, m in enumerate(("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG",
                                       "SEP", "OCT", "NOV", "DEC"), 1)}
DAY = 86400

_FLAG_KEYS = {"ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft",
              "FLAGGED": "\\Flagged", "SEEN": "\\Seen"}
_TEXT_KEYS = {"BCC": "bcc", "CC": "cc", "FROM": "from", "TO": "to", "SUBJECT": "subject",
              "BODY": "body", "TEXT": "text"}
_DATE_KEYS = {"BEFORE": "internal", "ON": "internal", "SINCE": "internal",
              "SENTBEFORE": "sent", "SENTON": "sent", "SENTSINCE": "sent",
              "SAVEDBEFORE": "saved", "SAVEDON": "saved", "SAVEDSINCE": "saved"}
NOTHING = q.Not(q.All())
MAX_KEYS = 256
MAX_TEXT_KEYS = 32
MAX_DEPTH = 64


def _runs(uids):
    """Sorted UIDs as (lo, hi) runs of consecutive numbers."""
    out = []
    for u in sorted(uids):
        if out and out[-1][1] == u - 1:
            out[-1][1] = u
        else:
            out.append([u, u])
    return tuple((lo, hi) for lo, hi in out)


def parse_date(text):
    m = _DATE.fullmatch(str(text).strip('"'))
    if not m or m.group(2).upper() not in _MONTHS:
        raise ParseError(f"bad date {str(text)[:20]!r} (want d-Mon-yyyy)")
    day, month, year = int(m.group(1)), _MONTHS[m.group(2).upper()], int(m.group(3))
    try:
        return calendar.timegm((year, month, day, 0, 0, 0))
    except ValueError:
        raise ParseError(f"bad date {text!r}") from None


class Compiler:
    """``seqs(SequenceSet)`` and ``uids(SequenceSet)`` turn sets into UID
    ranges of the selected mailbox (SEARCHRES ``$`` included)."""

    def __init__(self, seqs, uids, sent_days=None, email_uids=None, recent=None):
        self.seqs = seqs
        self.uids = uids
        self.recent = recent             # the session's \\Recent UIDs (a set), or None
        self.sent_days = sent_days
        self.email_uids = email_uids     # message pk -> UIDs of it in the mailbox (EMAILID)

    def compile(self, keys):
        self.count = self.text_count = 0
        return self._list(keys, 0)

    def _list(self, keys, depth):
        outer = getattr(self, "keys", None), getattr(self, "pos", 0)
        self.keys, self.pos = keys, 0
        items = []
        while self.pos < len(keys):
            items.append(self._key(depth))
        self.keys, self.pos = outer
        return items[0] if len(items) == 1 else q.And(tuple(items))

    def _next(self, what="a search key"):
        if self.pos >= len(self.keys):
            raise ParseError(f"missing {what}")
        self.pos += 1
        return self.keys[self.pos - 1]

    def _string(self, what):
        t = self._next(what)
        if isinstance(t, list):
            raise ParseError(f"expected {what}")
        return str(t)

    def _atom(self, what):
        t = self._next(what)
        if isinstance(t, list) or isinstance(t, Str):
            raise ParseError(f"expected {what} as an atom")
        return t

    def _number(self, what):
        t = self._next(what)
        if isinstance(t, Str) or not isinstance(t, str) or not t.isdigit() or len(t) > 19:
            raise ParseError(f"expected {what}")
        return int(t)

    def _key(self, depth):
        if depth > MAX_DEPTH:
            raise ParseError("search keys nest too deep")
        self.count += 1
        if self.count > MAX_KEYS:
            raise No(f"[LIMIT] SEARCH takes at most {MAX_KEYS} search keys")
        t = self._next()
        if isinstance(t, list):
            if not t:
                raise ParseError("empty search key list")
            return self._list(t, depth + 1)
        if isinstance(t, Str):
            raise ParseError("expected a search key, not a string")
        k = t.upper()
        if k == "ALL":
            return q.All()
        if k in ("RECENT", "NEW", "OLD"):
            recent = q.Uids(_runs(self.recent)) if self.recent else NOTHING
            if k == "OLD":
                return q.Not(recent) if self.recent else q.All()
            return recent if k == "RECENT" or recent is NOTHING else \
                q.And((recent, q.Not(q.Flag("\\Seen"))))
        if k in _FLAG_KEYS:
            return q.Flag(_FLAG_KEYS[k])
        if k.startswith("UN") and k[2:] in _FLAG_KEYS:
            return q.Not(q.Flag(_FLAG_KEYS[k[2:]]))
        if k == "KEYWORD":
            return q.Flag(self._string("a keyword"))
        if k == "UNKEYWORD":
            return q.Not(q.Flag(self._string("a keyword")))
        if k in _TEXT_KEYS or k == "HEADER":
            self.text_count += 1
            if self.text_count > MAX_TEXT_KEYS:
                raise No(f"[LIMIT] SEARCH takes at most {MAX_TEXT_KEYS} text search keys")
        if k in _TEXT_KEYS:
            return q.Text(_TEXT_KEYS[k], self._string("a search string"))
        if k == "HEADER":
            name = self._string("a header name")
            return q.Text("header:" + name.lower(), self._string("a search string"))
        if k in _DATE_KEYS:
            day = parse_date(self._string("a date"))
            field = _DATE_KEYS[k]
            if field == "sent" and self.sent_days is not None:
                return self._sent(k, time.gmtime(day)[:3])
            if k.endswith("BEFORE"):
                return q.Date(field, before=day)
            if k.endswith("SINCE"):
                return q.Date(field, since=day)
            return q.Date(field, since=day, before=day + DAY)
        if k in ("OLDER", "YOUNGER"):      # WITHIN (RFC 5032): seconds before now
            interval = self._number("an interval in seconds")
            if not interval:
                raise ParseError(f"{k} takes an interval of at least 1 second")
            cut = time.time() - interval
            return q.Date("internal", before=cut) if k == "OLDER" else q.Date("internal", since=cut)
        if k == "LARGER":
            return q.Size(larger=self._number("a size"))
        if k == "SMALLER":
            return q.Size(smaller=self._number("a size"))
        if k == "NOT":
            return q.Not(self._key(depth + 1))
        if k == "OR":
            a = self._key(depth + 1)
            return q.Or((a, self._key(depth + 1)))
        if k == "UID":
            return q.Uids(tuple(self.uids(SequenceSet.parse(self._atom("a UID set")))))
        if k == "MODSEQ":
            t = self._next("a MODSEQ")
            if isinstance(t, Str):        # entry name and type: flags are not tracked apart
                self._next("an entry type")
                t = self._next("a MODSEQ")
            self.pos -= 1
            return q.ModSeq(self._number("a MODSEQ"))
        if k == "EMAILID" and self.email_uids is not None:
            oid = self._string("an email id")
            uids = self.email_uids(int(oid[1:])) if oid[:1] == "E" and oid[1:].isdigit() \
                and len(oid) < 20 else []
            return q.Uids(tuple((u, u) for u in uids)) if uids else NOTHING
        if k == "THREADID":
            oid = self._string("a thread id")
            if not (oid[:1] == "T" and oid[1:].isdigit()):
                return NOTHING
            return q.Thread(int(oid[1:]))
        if k == "$" or k[:1].isdigit() or k[:1] == "*":
            return q.Uids(tuple(self.seqs(SequenceSet.parse(t))))
        raise ParseError(f"unknown search key {k[:30]}")

    def _sent(self, key, day):
        days = self.sent_days()
        if key.endswith("BEFORE"):
            uids = [u for u, d in days.items() if d < day]
        elif key.endswith("SINCE"):
            uids = [u for u, d in days.items() if d >= day]
        else:
            uids = [u for u, d in days.items() if d == day]
        return q.Uids(tuple((u, u) for u in sorted(uids))) if uids else NOTHING
