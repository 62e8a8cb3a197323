"""commands.sort.SortContext.changes: the REMOVEFROM/ADDTO pairs of a
CONTEXT=SORT update (RFC 5267 4.3.3, 4.3.4), applied the way a client applies
them, turn the old sorted result into the new one."""

import random
import re

from roost.protocols.imap.commands.sort import SortContext


class View:
    """The part of a selected mailbox ``changes`` reads: membership, seq()."""

    def __init__(self, uids):
        self.uids = sorted(uids)

    def __contains__(self, uid):
        return uid in self.uids

    def seq(self, uid):
        return self.uids.index(uid) + 1


def expand(text):
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def apply(result, line):
    for name, body in re.findall(r"(REMOVEFROM|ADDTO) \(([^)]*)\)", line or ""):
        words = body.split()
        for pos, numbers in zip(words[::2], words[1::2]):
            pos, numbers = int(pos), expand(numbers)
            assert pos >= 1
            if name == "ADDTO":
                assert pos <= len(result) + 1
                result[pos - 1:pos - 1] = numbers
            else:
                assert result[pos - 1:pos - 1 + len(numbers)] == numbers, (result, line)
                del result[pos - 1:pos - 1 + len(numbers)]
    return result


def test_rfc_example_shape():
    ctx = SortContext("C01", True, ["ALL"], [("SIZE", False)], [2734, 2735])
    line = ctx.changes(None, View(range(2700, 2800)), [2731, 2732, 2733, 2734, 2735])
    assert line == '* ESEARCH (TAG "C01") UID ADDTO (1 2731:2733)'
    assert ctx.changes(None, View(range(2700, 2800)), [2731, 2732, 2733, 2734, 2735]) is None


def test_removals_then_additions_in_one_line():
    ctx = SortContext("t", True, ["ALL"], [("SIZE", False)], [5, 1, 4, 2])
    line = ctx.changes(None, View(range(1, 10)), [9, 5, 4, 3, 2])
    assert line == '* ESEARCH (TAG "t") UID REMOVEFROM (2 1) ADDTO (1 9 4 3)'
    assert apply([5, 1, 4, 2], line) == [9, 5, 4, 3, 2]


def test_random_updates_reach_the_new_result():
    rng = random.Random(5267)
    for _ in range(500):
        order = rng.sample(range(1, 60), rng.randint(0, 40))      # the sort order of all
        mailbox = set(order) | set(rng.sample(range(60, 80), 5))
        old = [u for u in order if rng.random() < 0.5]
        new = [u for u in order if rng.random() < 0.5]
        uid = rng.random() < 0.5
        view = View(mailbox)
        ctx = SortContext("t", uid, ["ALL"], [("DATE", False)], old)
        line = ctx.changes(None, view, new)
        shown = (lambda us: us) if uid else (lambda us: [view.seq(u) for u in us])
        assert apply(list(shown(old)), line) == shown(new), (old, new, line)
        assert (line is None) == (old == new)
        assert ctx.order == new
