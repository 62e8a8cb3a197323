"""Modified UTF-7 mailbox names (RFC 3501 section 5.1.3).

Owns the conversion between Roost's Unicode mailbox names and the
modified UTF-7 that IMAP4rev1 clients use. Clients that ENABLE UTF8=ACCEPT or
IMAP4rev2 get UTF-8 names and never come through here.
"""

import base64


def encode(name):
    out, pending = [], []

    def flush():
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7e:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode(name):
    """Modified UTF-7 to Unicode. Raises ValueError on malformed input."""
    out, i = [], 0
    while i < len(name):
        ch = name[i]
        if ch != "&":
            if not 0x20 <= ord(ch) <= 0x7e:
                raise ValueError("8-bit character in a modified UTF-7 name")
            out.append(ch)
            i += 1
            continue
        j = name.find("-", i)
        if j < 0:
            raise ValueError("unterminated &... in mailbox name")
        chunk = name[i + 1:j]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            try:
                data = base64.b64decode(b64, validate=True)
                out.append(data.decode("utf-16-be"))
            except (ValueError, UnicodeDecodeError):
                raise ValueError("bad modified UTF-7 in mailbox name") from None
        i = j + 1
    return "".join(out)
