"""storage.sortkeys: RFC 5256 base subject, sort order, the THREAD algorithms
and the THREAD response text, on records built the way the store builds them."""

import pytest

from roost.storage import sortkeys
from roost.storage.sortkeys import base_subject, keys_of, ordered_subject, references, thread_text


@pytest.mark.parametrize("subject, base, reply", [
    ("hello", "hello", False),
    ("  hello \t world  ", "hello world", False),
    ("Re: hello", "hello", True),
    ("RE: re:Fwd: FW: hello", "hello", True),
    ("Re[2]: hello", "hello", True),
    ("re [list] : hello", "hello", True),
    ("[list] Re: hello", "hello", True),
    ("[a] [b] hello", "hello", False),
    ("[only a blob]", "[only a blob]", False),
    ("[a] [b]", "[b]", False),
    ("hello (fwd)", "hello", True),
    ("hello (FWD) (fwd)  ", "hello", True),
    ("[fwd: Re: hello]", "hello", True),
    ("[Fwd: [fwd: hello] (fwd)]", "hello", True),
    ("Reply: hello", "Reply: hello", False),
    ("Fwd hello", "Fwd hello", False),
    ("", "", False),
    (None, "", False),
])
def test_base_subject(subject, base, reply):
    assert base_subject(subject) == (base, reply)


def test_base_subject_of_a_long_adversarial_subject_is_quick():
    import time
    start = time.perf_counter()
    base_subject("(fwd)" * 800 + "x" + " (fwd)" * 600)
    base_subject("[" * 2000 + "re:" * 600)
    assert time.perf_counter() - start < 1


def test_collation_is_case_insensitive_and_orders_letters_before_underscore():
    assert sortkeys.collate("abc") == sortkeys.collate("ABC")
    assert sortkeys.collate("a") < sortkeys.collate("_")      # titlecase: "A" < "_"
    assert sortkeys.collate("\u00e9t\u00e9") == sortkeys.collate("E\u0301TE\u0301")


def rec(pk, subject="", date=None, arrival=0.0, size=0, msgid=None, refs=(), irt=(),
        frm=None, to=None, cc=None):
    def addr(a):
        if a is None:
            return []
        name, _, email = a.rpartition(" ")
        return [{"name": name or None, "email": email}]
    summary = {"from": addr(frm), "to": addr(to), "cc": addr(cc),
               "messageId": [msgid] if msgid else [], "references": list(refs),
               "inReplyTo": list(irt)}
    return keys_of(pk, arrival, date, size, subject, summary)


def test_keys_from_a_stored_row():
    k = rec(1, "Re: [x] Hi", date=None, arrival=50.0, frm="Zed Zorro zed@example.org",
            to="bob@example.net", msgid='"quoted.local"@example.org', irt=["p@x"])
    assert k.date == 50.0                    # no Date header: the internal date
    assert (k.subject, k.reply) == ("HI", True)
    assert k.from_ == "ZED" and k.display_from == "ZED ZORRO"
    assert k.to == "BOB" and k.display_to == "BOB@EXAMPLE.NET"
    assert k.cc == "" and k.msgid == "quoted.local@example.org"
    assert k.refs == ("p@x",)                # no References: the first In-Reply-To
    assert rec(2, refs=["a@x", "b@x"], irt=["c@x"]).refs == ("a@x", "b@x")
    assert keys_of(3, 1.0, 2.0, 3, "s", "{not json").msgid is None


def test_sort_keys_and_ties_in_mailbox_order():
    items = [(1, rec(1, "b", date=3, size=10, frm="x@a")),
             (2, rec(2, "a", date=2, size=10, frm="y@a")),
             (3, rec(3, "Re: b", date=1, size=5, frm="x@a")),
             (4, rec(4, "a", date=2, size=20))]
    order = lambda crit: [s for s, _k in sortkeys.sort(items, crit)]   # noqa: E731
    assert order([("SUBJECT", False)]) == [2, 4, 1, 3]
    assert order([("SUBJECT", False), ("DATE", True)]) == [2, 4, 1, 3]
    assert order([("SUBJECT", True), ("DATE", False)]) == [3, 1, 2, 4]
    assert order([("SIZE", False)]) == [3, 1, 2, 4]
    assert order([("SIZE", True)]) == [4, 1, 2, 3]    # REVERSE keeps ties in mailbox order
    assert order([("FROM", False)]) == [4, 1, 3, 2]   # the empty string first
    assert order([("DATE", False)]) == [3, 2, 4, 1]


def test_thread_text_of_the_rfc_example():
    nodes = [[2, []], [3, [[6, [[4, [[23, []]]], [44, [[7, [[96, []]]]]]]]]]]
    assert thread_text(nodes) == "(2)(3 6 (4 23)(44 7 96))"
    assert thread_text([[None, [[3, []], [5, []]]]]) == "((3)(5))"
    assert thread_text([]) == ""


def test_ordered_subject():
    items = [(1, rec(1, "a", date=10)), (2, rec(2, "b", date=20)),
             (3, rec(3, "Re: a", date=30)), (4, rec(4, "A", date=5)),
             (5, rec(5, "c", date=1))]
    assert thread_text(ordered_subject(items)) == "(5)(4 (1)(3))(2)"


def test_references_chain_branches_and_dummies():
    items = [(1, rec(1, "hi", 1, msgid="a@x")),
             (2, rec(2, "Re: hi", 2, msgid="b@x", refs=["a@x"])),
             (3, rec(3, "Re: hi", 3, msgid="c@x", refs=["a@x", "b@x"])),
             (4, rec(4, "Re: hi", 4, msgid="d@x", refs=["a@x"])),
             (5, rec(5, "other", 5, msgid="e@x", refs=["gone@x"])),
             (6, rec(6, "other2", 6, msgid="f@x", refs=["gone@x"]))]
    assert thread_text(references(items)) == "(1 (2 3)(4))((5)(6))"


def test_references_truncated_references_and_in_reply_to():
    # 3 names only its parent in In-Reply-To; 2 arrives after its child
    items = [(1, rec(1, "x", 1, msgid="a@x")),
             (2, rec(2, "y", 3, msgid="c@x", refs=["a@x", "b@x"])),
             (3, rec(3, "z", 2, msgid="b@x", irt=["a@x"]))]
    assert thread_text(references(items)) == "(1 3 2)"


def test_references_merges_by_subject():
    items = [(1, rec(1, "plan", 1, msgid="a@x")),
             (2, rec(2, "Re: plan", 2, msgid="b@x")),         # a reply without references
             (3, rec(3, "plan", 3, msgid="c@x")),             # same subject, not a reply
             (4, rec(4, "lunch", 4, msgid="d@x"))]
    # the reply 2 becomes 1's child; 1 and 3 share a subject and neither is a
    # reply: a dummy holds both
    assert thread_text(references(items)) == "((1 2)(3))(4)"
    items = [(1, rec(1, "Re: plan", 1, msgid="a@x")), (2, rec(2, "plan", 2, msgid="b@x"))]
    assert thread_text(references(items)) == "(2 1)"


def test_references_loops_duplicates_and_missing_ids():
    items = [(1, rec(1, "p", 1, msgid="a@x", refs=["b@x"])),
             (2, rec(2, "q", 2, msgid="b@x", refs=["a@x"])),
             (3, rec(3, "r", 3, msgid="a@x")),                 # duplicate id: a unique one
             (4, rec(4, "s", 4, refs=["a@x"])),                # no Message-ID
             (5, rec(5, "t", 5, msgid="e@x", refs=["e@x"]))]   # refers to itself
    text = thread_text(references(items))
    for n in "12345":
        assert text.count(n) == 1
    assert text == "(2 1 4)(3)(5)"


def test_references_of_a_very_deep_thread():
    n = 5000
    items = [(i, rec(i, "deep", i, msgid=f"{i}@x", irt=[f"{i - 1}@x"] if i > 1 else []))
             for i in range(1, n + 1)]
    text = thread_text(references(items))
    assert text == "(" + " ".join(str(i) for i in range(1, n + 1)) + ")"
    # and a deep thread that branches at every level
    items = [(i, rec(i, "b", i, msgid=f"{i}@x", irt=[f"{(i - 1) // 2 * 2 - 1}@x"] if i > 2 else []))
             for i in range(1, 2001)]
    assert thread_text(references(items)).count("(") >= 1000
