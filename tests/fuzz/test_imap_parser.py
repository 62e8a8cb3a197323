"""Hypothesis: nothing a client sends makes the IMAP framer or parser fail
other than with ParseError, and well-formed commands survive any chunking."""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.protocols.imap.parser import PARSERS, parse
from roost.protocols.imap.searchkeys import Compiler
from roost.protocols.imap.selected import SelectedMailbox
from roost.protocols.imap.wire import Abandoned, CommandFramer, LiteralRequest, ParseError

ATOMS = ["a1", "UID", "FETCH", "STORE", "SEARCH", "LIST", "APPEND", "SELECT", "1:*", "*", "$",
         "BODY[]", "BODY.PEEK[HEADER.FIELDS (A B)]<0.5>", "(", ")", "\"", "\\Seen", "{3}", "{2+}",
         "NIL", "OR", "NOT", "FLAGS", "+FLAGS.SILENT", "RETURN", "CHARSET", "[", "]", "~{1}", "\r"]
ATOMS += list(PARSERS)

words = st.lists(st.one_of(st.sampled_from(ATOMS), st.text(max_size=8)), max_size=12)
raw = st.binary(max_size=300)


def run(data, chunks=1):
    framer = CommandFramer(line_limit=512, literal_limit=256)
    step = max(1, len(data) // chunks)
    for i in range(0, len(data) + 1, step):
        for event in framer.feed(data[i:i + step]):
            if isinstance(event, (Abandoned, LiteralRequest)):
                continue
            try:
                parse(event)
            except ParseError:
                pass


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(raw, st.integers(1, 7))
def test_arbitrary_bytes_never_crash(data, chunks):
    run(data, chunks)


@settings(max_examples=400)
@given(words)
def test_word_soup_never_crashes(ws):
    run(("t " + " ".join(ws) + "\r\n").encode("utf-8", "surrogateescape"))


class _Box:
    id, name, uidvalidity = 1, "INBOX", 1


@settings(max_examples=300)
@given(st.lists(st.one_of(st.sampled_from(
    ["ALL", "OR", "NOT", "FROM", "x", "1:*", "UID", "5", "BEFORE", "1-Jan-2020", "bad-date",
     "LARGER", "10", "MODSEQ", "HEADER", "KEYWORD", "$", "SEEN", "UNSEEN", "ON"]),
    st.lists(st.sampled_from(["ALL", "SEEN", "1", "NOT"]), max_size=3)), max_size=8))
def test_search_keys_compile_or_raise_parse_error(keys):
    view = SelectedMailbox(_Box, [1, 2, 3], 1, False)
    try:
        Compiler(view.seq_ranges, view.uid_ranges).compile(keys)
    except ParseError:
        pass


@settings(max_examples=200)
@given(st.binary(min_size=0, max_size=40), st.integers(1, 5))
def test_well_formed_append_survives_chunking(body, chunks):
    data = b"a APPEND INBOX {%d+}\r\n" % len(body) + body + b"\r\nb NOOP\r\n"
    framer = CommandFramer()
    out = []
    step = max(1, len(data) // chunks)
    for i in range(0, len(data), step):
        out += list(framer.feed(data[i:i + step]))
    cmds = [parse(u) for u in out]
    assert cmds[0].messages[0].data == body and cmds[1].verb == "NOOP"
