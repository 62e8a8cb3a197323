"""The selected mailbox as one connection sees it.

Owns the message sequence numbers: the ascending UIDs this connection has
been told about, so sequence number n is ``uids[n - 1]``. Sequence numbers
exist only here, never in the store. The view changes only when the session
reports it (EXISTS, EXPUNGE/VANISHED), so numbers stay stable between
reports as RFC 3501 section 7.4.1 requires. It also holds the UIDs that are
\\Recent to this connection (claimed through ``Store.claim_recent``).
"""

from array import array
from bisect import bisect_left, bisect_right

from roost.storage.acl import RIGHTS


class SelectedMailbox:
    def __init__(self, mailbox, uids, modseq, readonly):
        self.pk = mailbox.id
        self.account_id = None                 # set at SELECT: the owner's (for a shared mailbox)
        self.rights = RIGHTS                   # RFC 4314 rights of the user (commands.acl)
        self.name = mailbox.name
        self.uidvalidity = mailbox.uidvalidity
        self.readonly = readonly
        self.uids = array("L", uids)
        self.modseq = modseq       # changes up to here have been reported
        self.dirty = []            # MODSEQs of changes announced by the store bus
        self.own = set()           # MODSEQs of this connection's own changes
        self.sent = {}             # uid -> modseq of flag changes already reported
        self.held = set()          # expunged UIDs not yet reported (during FETCH/STORE/SEARCH)
        self.saved = ()            # SEARCHRES: UIDs of the last SEARCH ... SAVE
        self.keywords = {}         # lower-case keyword -> as first seen (the FLAGS response)
        # The flag rows SELECT read, kept until the next command ends: clients
        # follow SELECT with UID FETCH 1:* (FLAGS), which then needs no query.
        # Any change after the read is reported later (``modseq`` predates it).
        self.select_rows = None
        # \Recent (RFC 3501 2.3.2): the UIDs this connection claimed, and
        # whether it claims new ones (SELECT, not EXAMINE, not IMAP4rev2).
        self.recent = set()
        self.claims = False

    @property
    def exists(self):
        return len(self.uids)

    @property
    def last_uid(self):
        return self.uids[-1] if self.uids else 0

    def seq(self, uid):
        """Sequence number of ``uid``, or 0 when it is not in the view."""
        i = bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else 0

    def __contains__(self, uid):
        return self.seq(uid) != 0

    def known(self, uids):
        """Those of ``uids`` that are in the view, in the order given. Many
        (a search's hits) are looked up in a set of the view made for the
        call, not bisected one by one."""
        if len(uids) * 8 < len(self.uids):
            return [u for u in uids if self.seq(u)]
        have = set(self.uids)
        return [u for u in uids if u in have]

    def seqs(self, uids):
        """Sequence numbers of ``uids`` (0 for one not in the view), like ``seq``
        for each; when they are most of the view, through a map made for the call."""
        if len(uids) * 2 < len(self.uids):
            return [self.seq(u) for u in uids]
        number = dict(zip(self.uids, range(1, len(self.uids) + 1))).get
        return [number(u, 0) for u in uids]

    def by_seq(self, seqset):
        """UIDs of the messages a sequence-number set names, ascending."""
        if seqset.saved:
            return [u for u in self.saved if u in self]
        n = len(self.uids)
        out = set()
        for lo, hi in seqset.resolve(n):
            if lo > n or n == 0:
                continue
            out.update(self.uids[lo - 1:min(hi, n)])
        return sorted(out)

    def by_uid(self, seqset):
        """UIDs in the view that a UID set names, ascending."""
        if seqset.saved:
            return [u for u in self.saved if u in self]
        out = set()
        for lo, hi in seqset.resolve(self.last_uid):
            out.update(self.uids[bisect_left(self.uids, lo):bisect_right(self.uids, hi)])
        return sorted(out)

    def seq_ranges(self, seqset):
        """A sequence-number set as UID ranges (for the search criteria tree)."""
        if seqset.saved:
            return [(u, u) for u in self.saved]
        n = len(self.uids)
        out = []
        for lo, hi in seqset.resolve(n):
            if n and lo <= n:
                out.append((self.uids[lo - 1], self.uids[min(hi, n) - 1]))
        return out or [(0, 0)]

    def uid_ranges(self, seqset):
        if seqset.saved:
            return [(u, u) for u in self.saved]
        return seqset.resolve(self.last_uid) or [(0, 0)]

    def add(self, uids):
        for u in uids:
            if u > self.last_uid:
                self.uids.append(u)

    def remove(self, uids):
        """Drop ``uids`` from the view; returns their sequence numbers in the
        order EXPUNGE responses must be sent (each number valid when sent)."""
        seqs = []
        for u in sorted(set(uids), reverse=True):
            s = self.seq(u)
            if s:
                seqs.append(s)
                del self.uids[s - 1]
                self.recent.discard(u)
        return seqs
