"""QRESYNC's report of expunged messages (RFC 7162 3.2.5, 3.2.6): which UIDs
``VANISHED (EARLIER)`` names for a client's remembered state.

The store keeps expunged UIDs with their MODSEQ back to the account's
history floor (``Store.history_floor``: older rows are pruned). For a client
MODSEQ at or above the floor the log answers exactly. Below it the log
cannot, so every UID the client may know (its known UIDs, else 1 up to
UIDNEXT - 1) that is not in the mailbox is reported.

Message sequence match data (3.2.5.2) narrows either answer: its pairs are
compared in order with the current view, and the UIDs up to the last pair
that matches before the first that does not are left out (the client knows
of every expunge below it). Walking the pairs stops at the end of the view,
so a huge set costs no more than the mailbox's size.
"""

from bisect import bisect_left, bisect_right


def _numbers(seqset, largest):
    for lo, hi in seqset.resolve(largest):
        yield from range(lo, hi + 1)


def match_floor(view, match):
    """The highest UID the sequence match data shows the client in step up to (0: none)."""
    if match is None:
        return 0
    seqs, uids = match
    floor, last = 0, view.exists
    for seq, uid in zip(_numbers(seqs, last), _numbers(uids, view.last_uid)):
        if seq > last or view.uids[seq - 1] != uid:
            break
        floor = uid
    return floor


def _merge(ranges):
    out = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


def vanished(view, gone, pruned, known, match, top):
    """The ``(lo, hi)`` UID ranges to report as VANISHED (EARLIER).

    ``gone``: UIDs the expunge log has after the client's MODSEQ; ``pruned``:
    the log no longer reaches back to that MODSEQ; ``known``: the client's
    known UIDs (a SequenceSet) or None; ``top``: the highest UID the mailbox
    ever gave (UIDNEXT - 1)."""
    floor = match_floor(view, match)
    scope = known.resolve(max(top, 1)) if known is not None else [(1, max(top, 1))]
    scope = [(max(lo, floor + 1), min(hi, top)) for lo, hi in scope]
    scope = _merge((lo, hi) for lo, hi in scope if lo <= hi)
    if not pruned:
        out = []
        for u in gone:
            if any(lo <= u <= hi for lo, hi in scope):
                if out and out[-1][1] == u - 1:
                    out[-1][1] = u
                else:
                    out.append([u, u])
        return [tuple(r) for r in out]
    present = view.uids
    out = []
    for lo, hi in scope:            # the UIDs of [lo, hi] not in the mailbox
        i, j = bisect_left(present, lo), bisect_right(present, hi)
        start = lo
        for u in present[i:j]:
            if u > start:
                out.append((start, u - 1))
            start = u + 1
        if start <= hi:
            out.append((start, hi))
    return out


def ranges_text(ranges):
    return ",".join(str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in ranges)
