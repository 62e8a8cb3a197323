"""The QUOTA and METADATA grammar (protocols/imap/parse_quota.py) through
``parser.parse``: what each command becomes, and what is BAD."""

import pytest

from roost.protocols.imap.parser import parse
from roost.protocols.imap.wire import CommandFramer, ParseError


def one(data):
    framer = CommandFramer()
    framer.feed(data)
    (unit,) = [e for e in framer.events() if isinstance(e, list)]
    return parse(unit)


def test_quota_commands():
    assert one(b'a GETQUOTA ""\r\n').root == ""
    assert one(b"a GETQUOTAROOT INBOX\r\n").mailbox == "INBOX"
    cmd = one(b'a SETQUOTA "" (storage 512 MESSAGE 9223372036854775807)\r\n')
    assert cmd.limits == {"STORAGE": 512, "MESSAGE": (1 << 63) - 1}
    assert one(b'a SETQUOTA "" ()\r\n').limits == {}


def test_getmetadata_forms():
    cmd = one(b'a GETMETADATA "" /Shared/Comment\r\n')
    assert (cmd.mailbox, cmd.entries, cmd.maxsize, cmd.depth) == ("", ["/shared/comment"], None, "0")
    cmd = one(b"a GETMETADATA (MAXSIZE 1024 DEPTH infinity) INBOX (/private/a /shared/b)\r\n")
    assert (cmd.mailbox, cmd.entries, cmd.maxsize, cmd.depth) == \
        ("INBOX", ["/private/a", "/shared/b"], 1024, "infinity")
    cmd = one(b"a GETMETADATA INBOX (DEPTH 1) (/private/a)\r\n")
    assert (cmd.depth, cmd.entries) == ("1", ["/private/a"])
    cmd = one(b"a GETMETADATA INBOX /private/a /shared/b\r\n")
    assert cmd.entries == ["/private/a", "/shared/b"]
    assert one(b"a GETMETADATA (DEPTH infinity) INBOX (/PRIVATE /shared)\r\n").entries == \
        ["/private", "/shared"]


def test_setmetadata_values():
    cmd = one(b'a SETMETADATA INBOX (/private/a "x y" /shared/b NIL /private/c {3+}\r\nabc'
              b" /private/d ~{2+}\r\n\x00\x01)\r\n")
    assert cmd.values == [("/private/a", b"x y"), ("/shared/b", None), ("/private/c", b"abc"),
                          ("/private/d", b"\x00\x01")]
    assert one(b'a SETMETADATA INBOX (/private/a "")\r\n').values == [("/private/a", b"")]


@pytest.mark.parametrize("line", [
    b'a SETQUOTA "" (STORAGE 9223372036854775808)', b'a SETQUOTA "" (1 2)', b'a SETQUOTA ""',
    b"a GETQUOTA", b'a GETQUOTA "" x', b"a GETMETADATA INBOX", b"a GETMETADATA (DEPTH) INBOX /private/a",
    b"a GETMETADATA INBOX /private/a*", b"a GETMETADATA INBOX /priv/a", b'a SETMETADATA INBOX ("/shared/a")',
    b"a SETMETADATA INBOX (/private/a b)", b"a SETMETADATA INBOX /private/a x",
    b'a SETMETADATA INBOX (/private "x")', b"a GETMETADATA INBOX /private/",
    b"a GETMETADATA INBOX (" + b" ".join(b"/private/e%d" % i for i in range(101)) + b")",
])
def test_bad(line):
    with pytest.raises(ParseError):
        one(line + b"\r\n")
