"""LMTP message data reading: terminator, dot stuffing, limits, pipelining."""

import asyncio

import pytest

from roost.protocols.lmtp import LMTPServer, read_data


def _read(pieces, limit=None, reader_limit=64):
    async def go():
        reader = asyncio.StreamReader(limit=reader_limit)
        for piece in pieces:
            reader.feed_data(piece)
        reader.feed_eof()
        data = await read_data(reader, limit)
        return data, await reader.read()
    return asyncio.run(go())


@pytest.mark.parametrize("pieces, expected", [
    ([b".\r\n"], b""),
    ([b"\r\n.\r\n"], b"\r\n"),
    ([b"a\r\n.\r\n"], b"a\r\n"),
    ([b"a\r\n", b".", b"\r\n"], b"a\r\n"),
    ([b"a\r", b"\n.\r", b"\n"], b"a\r\n"),
    ([b"..leading\r\nmid.\r\n..x\r\n.\r\n"], b".leading\r\nmid.\r\n.x\r\n"),
    ([b"end.\r\n", b"not.\r\n.\r\n"], b"end.\r\nnot.\r\n"),
    ([b"x" * 1000 + b"\r\n" + b"y" * 300 + b"\r\n.\r\n"], b"x" * 1000 + b"\r\n" + b"y" * 300 + b"\r\n"),
])
def test_data_is_read_to_the_dot_line(pieces, expected):
    data, rest = _read(pieces)
    assert data == expected
    assert rest == b""


@pytest.mark.parametrize("stream, expected", [
    (b".\r\n", b""),
    (b"\r\n.\r\n", b"\r\n"),
    (b"end.\r\n..\r\n.\r\n", b"end.\r\n.\r\n"),
    (b"a\r\n\r\n.x\r\n.\r\n", b"a\r\n\r\nx\r\n"),
])
def test_the_end_is_found_however_the_stream_is_cut_without_reading_past_it(stream, expected):
    # The client sends nothing more until it has the reply: the reader must
    # stop at the end, wherever the reads split it.
    async def go(cut):
        reader = asyncio.StreamReader(limit=8)
        reader.feed_data(stream[:cut])
        task = asyncio.ensure_future(read_data(reader, None))
        await asyncio.sleep(0)
        reader.feed_data(stream[cut:])
        data = await asyncio.wait_for(task, 5)
        reader.feed_data(b"QUIT\r\n")
        reader.feed_eof()
        return data, await reader.read()
    for cut in range(len(stream) + 1):
        assert asyncio.run(go(cut)) == (expected, b"QUIT\r\n"), cut


def test_pipelined_commands_after_the_data_stay_in_the_stream():
    data, rest = _read([b"Subject: a\r\n\r\nbody\r\n.\r\nMAIL FROM:<b@c>\r\nQUIT\r\n"])
    assert data == b"Subject: a\r\n\r\nbody\r\n"
    assert rest == b"MAIL FROM:<b@c>\r\nQUIT\r\n"


def test_over_the_limit_reads_to_the_end_then_says_none():
    data, rest = _read([b"z" * 500 + b"\r\n.\r\nQUIT\r\n"], limit=100)
    assert data is None and rest == b"QUIT\r\n"


def test_connection_lost_mid_data_raises():
    with pytest.raises(asyncio.IncompleteReadError):
        _read([b"half a message\r\nand no end"])


@pytest.mark.parametrize("arg, expected", [
    ("<a@b.example>", ("a@b.example", "")),
    ("<a@b.example> SIZE=10 BODY=8BITMIME", ("a@b.example", " SIZE=10 BODY=8BITMIME")),
    ("<>", ("<>", "")),
    ("<@relay.example:a@b.example>", ("a@b.example", "")),
    ('<"john doe"@b.example>', ('"john doe"@b.example', "")),
    ("a@b.example", ("a@b.example", "")),
    ("<a@b.example", (None, None)),
    ("<a@b.example>x", (None, None)),
    ("nobody", (None, None)),
])
def test_paths(arg, expected):
    assert LMTPServer._getaddr(None, arg) == expected
