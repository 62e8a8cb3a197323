"""Table tests of the IMAP framer, tokenizer and command parser: wire text in,
typed command (or the BAD reason) out."""

import pytest

from roost.protocols.imap import utf7
from roost.protocols.imap.parser import (Append, Fetch, FetchItem, List, Login, Search, Select,
                                         SequenceSet, Store, parse)
from roost.protocols.imap.selected import SelectedMailbox
from roost.protocols.imap.wire import (Abandoned, CommandFramer, LiteralRequest, ParseError,
                                       astring, quoted, uid_set_text)


def units(data, **kw):
    return list(CommandFramer(**kw).feed(data))


def one(line):
    (unit,) = units(line if isinstance(line, bytes) else line.encode() + b"\r\n")
    return parse(unit)


# --- framing -------------------------------------------------------------------

def test_framer_splits_lines_and_literals():
    f = CommandFramer()
    out = list(f.feed(b"a1 NOOP\r\na2 LOGIN {3}\r\n"))
    assert out[0] == [b"a1 NOOP"]
    assert isinstance(out[1], LiteralRequest) and out[1].size == 3 and out[1].tag == "a2"
    assert list(f.feed(b"bob {3+}\r\npw!\r\n")) == [[b"a2 LOGIN {3}", b"bob", b" {3+}", b"pw!", b""]]


def test_framer_asks_for_continuation_only_when_literal_not_yet_sent():
    assert units(b"a LOGIN {3}\r\nbob x\r\n") == [[b"a LOGIN {3}", b"bob", b" x"]]
    assert not any(isinstance(e, LiteralRequest) for e in units(b"a LOGIN {3+}\r\n"))
    assert not any(isinstance(e, LiteralRequest) for e in units(b"a LOGIN {3-}\r\n"))   # LITERAL-
    assert one(b"a LOGIN {3-}\r\nbob pw\r\n").user == "bob"


def test_framer_streams_byte_by_byte():
    f = CommandFramer()
    data = b"t APPEND INBOX {5+}\r\nhello\r\nu NOOP\r\n"
    out = [e for i in range(len(data)) for e in f.feed(data[i:i + 1])]
    assert out == [[b"t APPEND INBOX {5+}", b"hello", b""], [b"u NOOP"]]


def test_framer_limits():
    out = units(b"x" * 200 + b"\r\nb NOOP\r\n", line_limit=100)
    assert isinstance(out[0], Abandoned) and out[1] == [b"b NOOP"]
    out = units(b"a APPEND INBOX {500+}\r\n" + b"x" * 500 + b"\r\nb NOOP\r\n", literal_limit=100)
    assert isinstance(out[0], Abandoned) and out[0].error.tag == "a"
    assert out[-1] == [b"b NOOP"]


# --- commands ------------------------------------------------------------------

CASES = [
    ("a1 LOGIN bob secret", Login(tag="a1", verb="LOGIN", user="bob", password="secret")),
    ('a1 login "bob" "se\\"cr\\\\et"', Login(tag="a1", verb="LOGIN", user="bob", password='se"cr\\et')),
    ("a SELECT INBOX (CONDSTORE)", Select(tag="a", verb="SELECT", mailbox="INBOX", condstore=True)),
    ("a EXAMINE x", Select(tag="a", verb="EXAMINE", mailbox="x")),
    ('a LIST "" "*"', List(tag="a", verb="LIST", reference="", patterns=["*"])),
    ('a LIST (SUBSCRIBED) "" ("a" "b") RETURN (CHILDREN STATUS (MESSAGES))',
     List(tag="a", verb="LIST", reference="", patterns=["a", "b"], select=["SUBSCRIBED"],
          returns=["CHILDREN", "STATUS"], status=["MESSAGES"], extended=True)),
    ("a UID STORE 1:* +FLAGS.SILENT (\\Seen $x)",
     Store(tag="a", verb="STORE", uid=True, messages=SequenceSet(((1, None),)), mode="add",
           silent=True, flags=["\\Seen", "$x"])),
    ("a STORE 2 (UNCHANGEDSINCE 5) FLAGS \\Deleted",
     Store(tag="a", verb="STORE", messages=SequenceSet(((2, 2),)), flags=["\\Deleted"],
           unchangedsince=5)),
    ("a FETCH 1,3:4 FAST",
     Fetch(tag="a", verb="FETCH", messages=SequenceSet(((1, 1), (3, 4))),
           items=[FetchItem("FLAGS", label="FLAGS"), FetchItem("INTERNALDATE", label="INTERNALDATE"),
                  FetchItem("RFC822.SIZE", label="RFC822.SIZE")])),
    ("a UID FETCH $ (UID) (CHANGEDSINCE 9 VANISHED)",
     Fetch(tag="a", verb="FETCH", uid=True, messages=SequenceSet((), True),
           items=[FetchItem("UID", label="UID")], changedsince=9, vanished=True)),
    ("a SEARCH RETURN (MIN COUNT) CHARSET UTF-8 FROM x",
     Search(tag="a", verb="SEARCH", keys=["FROM", "x"], charset="UTF-8", returns=["MIN", "COUNT"])),
    ("a APPEND INBOX (\\Seen) \"01-Jan-2020 10:00:00 +0000\" {2+}\r\nhi",
     Append(tag="a", verb="APPEND", mailbox="INBOX")),
]


@pytest.mark.parametrize("wire,expected", CASES, ids=[c[0][:40] for c in CASES])
def test_parse_table(wire, expected):
    cmd = one(wire)
    if isinstance(expected, Append):
        assert cmd.mailbox == "INBOX" and len(cmd.messages) == 1
        m = cmd.messages[0]
        assert (m.flags, m.date, m.data) == (["\\Seen"], "01-Jan-2020 10:00:00 +0000", b"hi")
        return
    assert cmd == expected


def test_fetch_sections():
    cmd = one("a FETCH 1 (BODY.PEEK[1.2.HEADER.FIELDS.NOT (From \"To\")]<10.20> BINARY[3] BODY[])")
    a, b, c = cmd.items
    assert (a.name, a.section, a.partial, a.label) == (
        "BODY.PEEK", ((1, 2), "HEADER.FIELDS.NOT", ("From", "To")), (10, 20),
        "BODY[1.2.HEADER.FIELDS.NOT (From To)]<10>")
    assert (b.name, b.section, b.label) == ("BINARY", ((3,), "", None), "BINARY[3]")
    assert (c.section, c.label) == (((), "", None), "BODY[]")


BAD = [
    ("", "expected a tag"),
    ("a1", "expected a command name"),
    ("a1 FROB", "unknown command FROB"),
    ('a1 LOGIN "x\ry" z', "CR, LF or NUL inside a quoted string"),
    ('a1 LOGIN "x', "unterminated quoted string"),
    ('a1 LOGIN "x\\q" y', "backslash in a quoted string must escape"),
    ("a1 LOGIN x", "missing a password"),
    ("a1 NOOP extra", "unexpected extra arguments"),
    ("a1 FETCH 0 FLAGS", "sequence numbers start at 1"),
    ("a1 FETCH 1 (FLAGS", "missing )"),
    ("a1 FETCH 1 FLAGS)", "unbalanced )"),
    ("a1 FETCH 1 BODY[X]", "bad section"),
    ("a1 FETCH 1 BOGUS", "unknown fetch item"),
    ("a1 STORE 1 FLAGZ x", "bad store item"),
    ("a1 UID NOOP", "UID NOOP is not a command"),
    ("a1 SELECT x (FOO)", "unknown select parameter"),
    ("a1 SEARCH", "SEARCH needs at least one key"),
    ("a1 FETCH 1 BINARY[1.TEXT]", "BINARY takes only part numbers"),
]


@pytest.mark.parametrize("wire,reason", BAD, ids=[b[1] for b in BAD])
def test_malformed_commands(wire, reason):
    unit = [wire.encode()]
    with pytest.raises(ParseError) as info:
        parse(unit)
    assert reason in str(info.value)


def test_tag_is_kept_for_bad_replies():
    with pytest.raises(ParseError) as info:
        parse([b'x7 LOGIN "a\rb" c'])
    assert info.value.tag == "x7"


# --- sequence sets and the selected view ----------------------------------------

class _Box:
    id, name, uidvalidity = 1, "INBOX", 7


def test_sequence_sets_against_view():
    view = SelectedMailbox(_Box, [3, 5, 9, 10], 1, False)
    assert view.by_seq(SequenceSet.parse("2:*")) == [5, 9, 10]
    assert view.by_seq(SequenceSet.parse("*:3")) == [9, 10]
    assert view.by_uid(SequenceSet.parse("6:*")) == [9, 10]
    assert view.by_uid(SequenceSet.parse("20:*")) == [10]       # n:* includes the largest UID
    assert view.seq_ranges(SequenceSet.parse("1,3:4")) == [(3, 3), (9, 10)]
    assert view.remove([5, 10]) == [4, 2]
    assert list(view.uids) == [3, 9]


def test_search_hits_against_view():
    """``known`` and ``seqs`` answer like ``in`` and ``seq`` for few lookups
    (bisected) and many (a set or map made for the call)."""
    import random
    rng = random.Random(3)
    uids = sorted(rng.sample(range(1, 5000), 1200))
    view = SelectedMailbox(_Box, uids, 1, False)
    for n in (0, 1, 5, 60, 2000):
        hits = sorted(rng.sample(range(1, 5200), n))
        assert view.known(hits) == [u for u in hits if u in set(uids)]
        assert view.seqs(hits) == [uids.index(u) + 1 if u in set(uids) else 0 for u in hits]


def test_uid_sets_are_compact():
    import random
    assert uid_set_text([]) == "" and uid_set_text([4]) == "4"
    assert uid_set_text([9, 1, 2, 3, 7, 10]) == "1:3,7,9:10"
    rng = random.Random(5)
    for _ in range(50):
        uids = sorted(rng.sample(range(1, 300), rng.randint(1, 200)))
        text = uid_set_text(uids)
        back = []
        for part in text.split(","):
            lo, _c, hi = part.partition(":")
            back.extend(range(int(lo), int(hi or lo) + 1))
            assert not hi or int(hi) > int(lo)
        assert back == uids and len(text.split(",")) == 1 + sum(
            1 for a, b in zip(uids, uids[1:]) if b != a + 1)


def test_modified_utf7_and_quoting():
    assert utf7.encode("Caf\u00e9 & co") == "Caf&AOk- &- co"
    assert utf7.decode("&ZeVnLIqe-") == "\u65e5\u672c\u8a9e"
    assert utf7.decode(utf7.encode("\U0001f600 x")) == "\U0001f600 x"
    with pytest.raises(ValueError):
        utf7.decode("&Jjo")
    assert astring("INBOX") == b"INBOX" and astring("a b") == b'"a b"' and astring("NIL") == b'"NIL"'
    assert quoted('a"b\\') == b'"a\\"b\\\\"' and quoted("a\r\nb") == b"{4}\r\na\r\nb"


REAL_CLIENTS = [
    # Thunderbird
    "5 UID fetch 1:5 (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Bcc Subject Date "
    "Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])",
    "6 UID fetch 1:* (FLAGS) (CHANGEDSINCE 12)",
    '7 select "INBOX" (CONDSTORE)',
    # Outlook
    "A8 UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER])",
    '9 LIST "" "*" RETURN (SPECIAL-USE SUBSCRIBED)',
    # K-9 / FairEmail
    "10 UID FETCH 3 (UID BODY.PEEK[HEADER.FIELDS (date subject from content-type to cc reply-to "
    "message-id references in-reply-to X-K9mail-Identity Chat-Version)])",
    "11 UID SEARCH 1:* NOT DELETED",
    "12 UID FETCH 3 (UID BODYSTRUCTURE BODY.PEEK[1]<0.4096>)",
    # iOS Mail
    '13 ID ("name" "iPhone Mail" "version" "19E258" "os" "iOS")',
    "14 UID STORE 3 +FLAGS.SILENT (\\Seen)",
    '15 STATUS "INBOX" (MESSAGES UNSEEN UIDNEXT UIDVALIDITY HIGHESTMODSEQ)',
]


@pytest.mark.parametrize("wire", REAL_CLIENTS)
def test_commands_real_clients_send_parse(wire):
    assert one(wire).tag == wire.split(" ")[0]


def test_open_bracket_is_an_atom_char_outside_fetch_sections():
    assert one("a SELECT a[b").mailbox == "a[b"
    assert one("a CREATE [x]").mailbox == "[x]"
    assert one("a STORE 1 +FLAGS ($k[1)").flags == ["$k[1"]
    with pytest.raises(ParseError):
        one("a STORE 1 +FLAGS ($k[1])")                 # "]" is no ATOM-CHAR
    item = one("a FETCH 1 BODY.PEEK[HEADER.FIELDS (A B)]").items[0]
    assert item.section == ((), "HEADER.FIELDS", ("A", "B"))
    with pytest.raises(ParseError):
        one("a FETCH 1 BODY[HEADER")


def test_catenate_and_replace():
    cmd = one(b'a APPEND Drafts (\\Seen) CATENATE (TEXT {3+}\r\nabc URL "/INBOX/;UID=3" '
              b'URL ;UID=4/;SECTION=1)\r\n')
    assert isinstance(cmd, Append)
    (m,) = cmd.messages
    assert m.flags == ["\\Seen"] and m.data == b""
    assert m.parts == [("TEXT", b"abc"), ("URL", "/INBOX/;UID=3"), ("URL", ";UID=4/;SECTION=1")]
    cmd = one(b"a UID REPLACE 7 Drafts {2+}\r\nhi\r\n")
    assert (cmd.verb, cmd.uid, cmd.number, cmd.mailbox, cmd.message.data) == ("REPLACE", True, 7, "Drafts", b"hi")
    for bad in (b"a REPLACE 1:2 X {1+}\r\nx\r\n", b"a REPLACE 0 X {1+}\r\nx\r\n",
                b"a APPEND X CATENATE ()\r\n", b"a APPEND X CATENATE (URL)\r\n",
                b'a APPEND X CATENATE (BLOB "x")\r\n',
                b"a APPEND X CATENATE (" + b'URL "/a/;UID=1" ' * 101 + b")\r\n"):
        with pytest.raises(ParseError):
            one(bad)
