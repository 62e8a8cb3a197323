"""Message data of an SMTP or LMTP DATA command, shared by LMTP, submission
and the SMTP edge (one reader, so the three cannot drift apart).

``read_data`` reads in blocks up to each ``<CRLF>.<CRLF>`` (not one Python
loop per line, nor one per line that ends in "."), undoes dot stuffing in
one pass and leaves pipelined commands after the data in the stream. A
message over the limit is still read to its end, so the session can go on
with a 552; the limit applies to the data after dot stuffing is undone, and
collection stops once the raw stream is past any size that could still fit.
"""

import asyncio

END = b"\r\n.\r\n"


def _begun(tail):
    """How many octets of END the bytes read so far end with (0 to 4)."""
    for k in (4, 3, 2, 1):
        if tail.endswith(END[:k]):
            return k
    return 0


async def read_data(reader, limit, touch=None):
    """The message up to ``.<CRLF>`` alone on a line, dot stuffing undone,
    ending in CRLF as RFC 5321 says; None when it exceeds ``limit`` octets
    (0 or None: no limit). ``touch()`` is called after each block (an idle
    timer). Raises ``asyncio.IncompleteReadError`` when the client goes away
    before the end."""
    # ``tail`` holds the last bytes read; it starts as the CRLF that ended the
    # DATA command, so a message that is only ".<CRLF>" is empty. When what
    # was read ends in the start of END, only the rest of END is read next
    # (the client sends at least that much before it waits for a reply): a
    # search for END in the stream alone would miss an END across two reads.
    parts, raw, tail = [], 0, b"\r\n"
    while True:
        begun = _begun(tail)
        try:
            if begun:
                block = await reader.readexactly(len(END) - begun)
            else:
                block = await reader.readuntil(END)
        except asyncio.LimitOverrunError as exc:
            block = await reader.readexactly(exc.consumed)
        if touch is not None:
            touch()
        raw += len(block)
        if parts is not None and limit and raw > limit + limit // 50 + 5:
            parts = None                    # far past the limit even with dot stuffing
        elif parts is not None:
            parts.append(block)
        tail = (tail + block)[-5:]
        if tail == END:
            break
    if parts is None:
        return None
    data = (b"\r\n" + b"".join(parts)[:-3]).replace(b"\r\n.", b"\r\n")[2:]
    return None if limit and len(data) > limit else data
