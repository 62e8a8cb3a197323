"""protocols.imap.compress: raw DEFLATE both ways, inflating in bounded steps."""

import zlib

import pytest

from roost.protocols.imap import compress


def _client_deflate(data):
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)


def test_round_trip_with_a_plain_zlib_peer():
    d = compress.Deflate()
    out = d.deflate(b"* OK hello\r\n")
    assert zlib.decompressobj(-15).decompress(out) == b"* OK hello\r\n"
    d.feed(_client_deflate(b"a1 NOOP\r\n"))
    assert d.inflate() == b"a1 NOOP\r\n"
    assert d.inflate() == b"" and not d.pending


def test_inflate_is_bounded_per_step():
    d = compress.Deflate()
    bomb = _client_deflate(b"x" * (32 << 20))
    assert len(bomb) < 64 * 1024
    d.feed(bomb)
    first = d.inflate()
    assert len(first) == compress.STEP and d.pending     # the rest waits, compressed
    total = len(first)
    while d.pending:
        step = d.inflate()
        assert len(step) <= compress.STEP
        total += len(step)
    assert total == 32 << 20


def test_corrupt_or_ended_stream_is_an_error():
    d = compress.Deflate()
    d.feed(b"\xff\xfe\xfd garbage")
    with pytest.raises(compress.Error):
        d.inflate()
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    ended = z.compress(b"a1 NOOP\r\n") + z.flush()            # Z_FINISH: the stream ends
    d = compress.Deflate()
    d.feed(ended)
    with pytest.raises(compress.Error):
        d.inflate()
