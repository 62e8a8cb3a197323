"""The grammar of NOTIFY (RFC 5465), ESEARCH (RFC 7377), COMPRESS and
UNAUTHENTICATE in protocols.imap.parse_ext, through parser.parse."""

import pytest

from roost.protocols.imap.parse_ext import Filter
from roost.protocols.imap.parser import parse
from roost.protocols.imap.wire import ParseError


def p(line):
    return parse([line.encode()])


def test_notify_set_groups():
    cmd = p('t NOTIFY SET STATUS (SELECTED (MessageNew (UID BODY.PEEK[HEADER.FIELDS (FROM)]) '
            'MessageExpunge)) (SUBTREE ("A" B) (messagenew messageexpunge flagchange)) '
            '(MAILBOXES INBOX NONE)')
    assert cmd.status and not cmd.none
    (f1, e1), (f2, e2), (f3, e3) = cmd.groups
    assert f1 == Filter("SELECTED") and e1[0][0] == "MessageNew" and e1[1] == ("MessageExpunge", None)
    assert e1[0][1] == ["UID", "BODY.PEEK[HEADER.FIELDS (FROM)]"]
    assert f2.kind == "SUBTREE" and [str(n) for n in f2.names] == ["A", "B"]
    assert [n for n, _ in e2] == ["MessageNew", "MessageExpunge", "FlagChange"]
    assert f3 == Filter("MAILBOXES", ("INBOX",)) and e3 is None
    assert p("t NOTIFY NONE").none


@pytest.mark.parametrize("line", [
    "t NOTIFY", "t NOTIFY SET", "t NOTIFY SET ()", "t NOTIFY SET (PERSONAL)",
    "t NOTIFY SET (PERSONAL ())", "t NOTIFY SET (PERSONAL (MessageNew) extra)",
    "t NOTIFY SET (SUBTREE (MessageNew MessageExpunge))", "t NOTIFY SET (SUBTREE-ONE A NONE)",
    "t NOTIFY SET (MAILBOXES () NONE)", "t NOTIFY NONE extra", "t NOTIFY SET (PERSONAL (\"MessageNew\"))",
    "t NOTIFY SET (SELECTED (MessageNew ()))"])
def test_notify_malformed(line):
    with pytest.raises(ParseError):
        p(line)


def test_notify_group_and_name_limits():
    groups = " ".join(["(INBOXES NONE)"] * 33)
    with pytest.raises(ParseError):
        p("t NOTIFY SET " + groups)
    names = " ".join(f"m{i}" for i in range(257))
    with pytest.raises(ParseError):
        p(f"t NOTIFY SET (MAILBOXES ({names}) NONE)")


def test_esearch():
    cmd = p('t ESEARCH IN (PERSONAL SUBTREE-ONE "A/B" MAILBOXES (X Y)) RETURN (MIN COUNT) '
            'CHARSET UTF-8 FROM "x"')
    assert [f.kind for f in cmd.sources] == ["PERSONAL", "SUBTREE-ONE", "MAILBOXES"]
    assert cmd.search.returns == ["MIN", "COUNT"] and cmd.search.charset == "UTF-8"
    assert cmd.search.keys == ["FROM", "x"]
    cmd = p("t ESEARCH UNSEEN")
    assert cmd.sources is None and cmd.search.keys == ["UNSEEN"]
    for bad in ("t ESEARCH IN () ALL", "t ESEARCH IN (SELECTED-DELAYED) ALL",
                "t ESEARCH IN (PERSONAL (DEPTH 1)) ALL", "t ESEARCH IN PERSONAL ALL", "t ESEARCH"):
        with pytest.raises(ParseError):
            p(bad)


def test_compress_and_unauthenticate():
    assert p("t COMPRESS deflate").mechanism == "DEFLATE"
    assert p("t UNAUTHENTICATE").verb == "UNAUTHENTICATE"
    for bad in ("t COMPRESS", "t COMPRESS DEFLATE X", "t UNAUTHENTICATE now"):
        with pytest.raises(ParseError):
            p(bad)
