"""POP3's message framing (``protocols.pop3.session``): what RETR and TOP
send, and that the size LIST announces is what a client receives."""

from hypothesis import given, settings
from hypothesis import strategies as st

from roost.protocols.pop3.session import to_wire, wire_size


def unstuff(body):
    """What a client keeps of a multi-line response body (RFC 1939 section 3)."""
    assert body.endswith(b".\r\n") and (body == b".\r\n" or body.endswith(b"\r\n.\r\n"))
    lines = body[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def test_crlf_dot_stuffing_and_final_line():
    assert to_wire(b"a\r\n.b\r\n..c\r\n") == b"a\r\n..b\r\n...c\r\n.\r\n"
    assert to_wire(b".\nx") == b"..\r\nx\r\n.\r\n"
    assert to_wire(b"") == b".\r\n"
    assert to_wire(b"a\r\r\nb\rc\n") == b"a\r\r\nb\rc\r\n.\r\n"      # a bare CR stays


def test_top_sends_headers_blank_line_and_n_lines():
    msg = b"A: 1\r\nB: 2\r\n\r\none\r\n.two\r\nthree\r\n"
    assert to_wire(msg, 0) == b"A: 1\r\nB: 2\r\n\r\n.\r\n"
    assert to_wire(msg, 2) == b"A: 1\r\nB: 2\r\n\r\none\r\n..two\r\n.\r\n"
    assert to_wire(msg, 99) == to_wire(msg)
    assert to_wire(b"A: 1\nB: 2", 3) == b"A: 1\r\nB: 2\r\n.\r\n"    # no body at all
    assert to_wire(b"\r\nbody\r\nmore\r\n", 1) == b"\r\nbody\r\n.\r\n"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"..", b"x", b" ", b"From "]),
                max_size=40).map(b"".join))
def test_the_announced_size_is_what_the_client_gets(data):
    body = to_wire(data)
    got = unstuff(body)
    assert len(got) == wire_size(data)
    assert got.replace(b"\r\n", b"\n") == data.replace(b"\r\n", b"\n") + \
        (b"\n" if data and not data.endswith(b"\n") else b"")
