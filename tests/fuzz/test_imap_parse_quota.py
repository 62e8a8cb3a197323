"""Hypothesis: QUOTA and METADATA commands built from their own words
(protocols/imap/parse_quota.py) parse or raise ParseError, nothing else."""

from hypothesis import given, settings
from hypothesis import strategies as st

from roost.protocols.imap.parser import parse
from roost.protocols.imap.wire import CommandFramer, ParseError

VERBS = ["GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "GETMETADATA", "SETMETADATA"]
WORDS = ['""', "INBOX", "(", ")", "STORAGE", "MESSAGE", "0", "18446744073709551616", "NIL",
         "MAXSIZE", "DEPTH", "infinity", "1", "/private", "/shared/comment", "/private/vendor/a/b",
         "/private/a*", "{2+}\r\nab", "~{1+}\r\n\x00", '"x"', "/", "//", "x"]


@settings(max_examples=500)
@given(st.sampled_from(VERBS), st.lists(st.one_of(st.sampled_from(WORDS), st.text(max_size=6)),
                                        max_size=10))
def test_quota_and_metadata_words(verb, ws):
    line = ("t " + verb + " " + " ".join(ws) + "\r\n").encode("utf-8", "surrogateescape")
    for unit in CommandFramer(line_limit=512, literal_limit=256).feed(line):
        if not isinstance(unit, list):
            continue
        try:
            cmd = parse(unit)
        except ParseError:
            continue
        assert cmd.verb == verb
