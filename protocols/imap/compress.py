"""COMPRESS=DEFLATE (RFC 4978): the connection's raw DEFLATE streams.

Owns the two zlib streams of one compressed connection (RFC 1951 DEFLATE,
no zlib header: ``wbits=-15``). The session passes every octet it writes
through ``deflate`` (each write ends with a sync flush, so the client can
decode every response as soon as it arrives) and every octet it reads
through ``feed``/``inflate``. TLS sits below: compressed octets are what the
TLS transport encrypts, as RFC 4978 section 4 orders it.

Inflating is bounded: ``inflate`` returns at most STEP octets per call and
keeps the rest of the compressed input (``pending``); the session asks for
more only while its input queue has room, so a small compressed command that
expands to gigabytes costs no more memory than reading it uncompressed
would (the session's queue limits and the line and literal limits apply to
the inflated octets). A stream the client ends or corrupts is an error.
"""

import zlib

STEP = 64 * 1024       # octets inflated per call
LEVEL = 6
MEM_LEVEL = 8


class Error(Exception):
    """The client's compressed stream is corrupt or ended."""


class Deflate:
    __slots__ = ("zin", "zout", "pending")

    def __init__(self):
        self.zin = zlib.decompressobj(-15)
        self.zout = zlib.compressobj(LEVEL, zlib.DEFLATED, -15, MEM_LEVEL)
        self.pending = b""

    def deflate(self, data):
        return self.zout.compress(data) + self.zout.flush(zlib.Z_SYNC_FLUSH)

    def feed(self, data):
        """Keep compressed input (the transport is paused while it waits)."""
        self.pending = self.pending + data if self.pending else data

    def inflate(self):
        """Up to STEP octets of inflated input; b"" when all pending input is used."""
        if not self.pending:
            return b""
        try:
            out = self.zin.decompress(self.pending, STEP)
        except zlib.error as exc:
            raise Error(f"corrupt DEFLATE stream: {exc}") from None
        self.pending = self.zin.unconsumed_tail
        if self.zin.eof:
            raise Error("the client ended its DEFLATE stream")
        return out
