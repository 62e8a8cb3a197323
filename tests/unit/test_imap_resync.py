"""QRESYNC's VANISHED (EARLIER) set (``protocols.imap.resync``): the expunge
log when it reaches back, the known UIDs missing from the mailbox when it was
pruned, and sequence match data narrowing both."""

from types import SimpleNamespace

from roost.protocols.imap.parser import SequenceSet
from roost.protocols.imap.resync import match_floor, ranges_text, vanished
from roost.protocols.imap.selected import SelectedMailbox


def view(uids):
    box = SimpleNamespace(id=1, name="INBOX", uidvalidity=7)
    return SelectedMailbox(box, uids, 10, False)


def S(text):
    return SequenceSet.parse(text)


def test_log_answers_when_it_reaches_back():
    v = view([1, 3, 4, 6])
    assert vanished(v, [2, 5], False, S("1:6"), None, 6) == [(2, 2), (5, 5)]
    assert vanished(v, [2, 5], False, S("3:6"), None, 6) == [(5, 5)]      # only known UIDs
    assert vanished(v, [2, 5], False, None, None, 6) == [(2, 2), (5, 5)]


def test_pruned_log_reports_every_known_uid_not_present():
    v = view([1, 3, 4, 6, 10])
    assert vanished(v, [], True, S("1:10"), None, 10) == [(2, 2), (5, 5), (7, 9)]
    assert vanished(v, [], True, None, None, 12) == [(2, 2), (5, 5), (7, 9), (11, 12)]
    # known UIDs far above UIDNEXT: nothing past it
    assert ranges_text(vanished(v, [], True, S("8:4294967295"), None, 10)) == "8:9"


def test_sequence_match_data():
    v = view([1, 3, 4, 6])
    assert match_floor(v, (S("1,2"), S("1,3"))) == 3
    assert match_floor(v, (S("1,3"), S("1,5"))) == 1       # the walk ends at the first mismatch
    assert match_floor(v, (S("9"), S("20"))) == 0          # past the end: no match
    assert vanished(v, [2, 5], False, S("1:6"), (S("1:2"), S("1,3")), 6) == [(5, 5)]
    assert vanished(v, [], True, S("1:6"), (S("1:3"), S("1,3,4")), 6) == [(5, 5)]
    # a huge set costs no more than the view
    assert match_floor(v, (S("1:4294967295"), S("1:4294967295"))) == 1
