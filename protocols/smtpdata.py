"""Message data of an SMTP or LMTP DATA command, shared by LMTP, submission
and the SMTP edge (one reader, so the three cannot drift apart).

``read_data`` reads in blocks up to each ``.<CRLF>`` (not one Python loop
per line: that was most of the CPU on big messages), undoes dot stuffing in
one pass and leaves pipelined commands after the data in the stream. A
message over the limit is still read to its end, so the session can go on
with a 552; the limit applies to the data after dot stuffing is undone, and
collection stops once the raw stream is past any size that could still fit.
"""

import asyncio


async def read_data(reader, limit, touch=None):
    """The message up to ``.<CRLF>`` alone on a line, dot stuffing undone,
    ending in CRLF as RFC 5321 says; None when it exceeds ``limit`` octets
    (0 or None: no limit). ``touch()`` is called after each block (an idle
    timer). Raises ``asyncio.IncompleteReadError`` when the client goes away
    before the end."""
    # ``tail`` holds the last bytes read; it starts as the CRLF that ended the
    # DATA command, so a message that is only ".<CRLF>" is empty.
    parts, raw, tail = [], 0, b"\r\n"
    while True:
        try:
            block = await reader.readuntil(b".\r\n")
        except asyncio.LimitOverrunError as exc:
            block = await reader.readexactly(exc.consumed)
        if touch is not None:
            touch()
        raw += len(block)
        if parts is not None and limit and raw > limit + limit // 50 + 5:
            parts = None                    # far past the limit even with dot stuffing
        elif parts is not None:
            parts.append(block)
        # The end is ".<CRLF>" right after a CRLF, possibly across two reads.
        if block.endswith(b".\r\n") and (tail + block)[-5:] == b"\r\n.\r\n":
            break
        tail = (tail + block)[-4:]
    if parts is None:
        return None
    data = (b"\r\n" + b"".join(parts)[:-3]).replace(b"\r\n.", b"\r\n")[2:]
    return None if limit and len(data) > limit else data
