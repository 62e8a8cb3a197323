"""FETCH data items rendered from what the store computed at delivery.

Owns ENVELOPE, BODY/BODYSTRUCTURE (with extension data), BODY[section]
and BINARY[section] from the stored structure nodes (byte offsets into the
raw message) and the raw bytes. Nothing is re-serialised: a section is a
slice of the stored bytes, so partial fetches are exact.

Line endings: a message is served exactly as it was stored, so a message
that arrived with bare LF line ends is served with bare LF. RFC822.SIZE is the
stored size and equals the octets BODY[] returns; BODYSTRUCTURE sizes and
partial offsets count the same octets. Converting to CRLF on the fly would
make every size and offset a computed value that could drift from the bytes.

It must not do I/O: callers pass the bytes in.
"""

import base64
import binascii
import time

from roost.storage import mime

from .wire import nstring, quoted

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MONTHS = {m.upper(): i + 1 for i, m in enumerate(_MONTHS)}


def internaldate(ts):
    t = time.gmtime(ts)
    return b'"%02d-%s-%04d %02d:%02d:%02d +0000"' % (
        t.tm_mday, _MONTHS[t.tm_mon - 1].encode(), t.tm_year, t.tm_hour, t.tm_min, t.tm_sec)


# --- ENVELOPE ------------------------------------------------------------------

def _addresses(addrs, utf8):
    if not addrs:
        return b"NIL"
    out = []
    for name, route, local, host in addrs:
        out.append(b"(" + b" ".join(nstring(v, utf8) for v in (name, route, local, host)) + b")")
    return b"(" + b"".join(out) + b")"


def envelope(env, utf8=False):
    sender = env.get("sender") or env.get("from")
    reply_to = env.get("reply-to") or env.get("from")
    parts = [nstring(env.get("date"), utf8), nstring(env.get("subject"), utf8),
             _addresses(env.get("from"), utf8), _addresses(sender, utf8),
             _addresses(reply_to, utf8), _addresses(env.get("to"), utf8),
             _addresses(env.get("cc"), utf8), _addresses(env.get("bcc"), utf8),
             nstring(env.get("in-reply-to"), utf8), nstring(env.get("message-id"), utf8)]
    return b"(" + b" ".join(parts) + b")"


# --- BODYSTRUCTURE ---------------------------------------------------------------

def _params(params, utf8):
    """A parameter list with RFC 2231 sections merged and decoded (RFC 3501
    has no syntax for them, and clients show what they get). A decoded value
    that is not ASCII goes as UTF-8 once UTF8=ACCEPT is on, else as RFC 2047
    encoded words, the form clients read in a parameter; the RFC 2231
    language tag is dropped (no client reads it there)."""
    if not params:
        return b"NIL"
    out = []
    for name, value, decoded in mime.merged_params(params):
        if decoded and not value.isascii() and not utf8:
            value = encoded_words(value)
        out.append(quoted(name, utf8) + b" " + quoted(value, utf8))
    return b"(" + b" ".join(out) + b")" if out else b"NIL"


def encoded_words(text, chunk=45):
    """``text`` as RFC 2047 B words of UTF-8, each holding whole characters."""
    words, piece = [], b""
    for ch in text:
        raw = ch.encode("utf-8", "replace")
        if len(piece) + len(raw) > chunk:
            words.append(piece)
            piece = b""
        piece += raw
    words.append(piece)
    return " ".join("=?UTF-8?B?" + base64.b64encode(w).decode() + "?=" for w in words)


def _disposition(disp, utf8):
    if not disp:
        return b"NIL"
    return b"(" + quoted(disp[0].upper() if disp[0] in ("inline", "attachment") else disp[0], utf8) \
        + b" " + _params(disp[1], utf8) + b")"


def _language(value, utf8):
    if not value:
        return b"NIL"
    langs = [v.strip() for v in value.split(",") if v.strip()]
    if len(langs) == 1:
        return quoted(langs[0], utf8)
    return b"(" + b" ".join(quoted(v, utf8) for v in langs) + b")"


def bodystructure(node, extensible=True, utf8=False):
    N = mime
    fields = node[N.FIELDS]
    if node[N.CHILDREN]:
        out = b"(" + b"".join(bodystructure(c, extensible, utf8) for c in node[N.CHILDREN])
        out += b" " + quoted(node[N.SUBTYPE].upper(), utf8)
        if extensible:
            out += b" " + b" ".join([_params(node[N.PARAMS], utf8),
                                     _disposition(fields["disposition"], utf8),
                                     _language(fields["language"], utf8),
                                     nstring(fields["location"], utf8)])
        return out + b")"
    size = node[N.END] - node[N.BODY_START]
    encoding = (fields["encoding"] or "7bit").upper()
    if encoding == "BINARY":
        # RFC 3516 section 6: described in a CTE of the base protocol. A part
        # with NUL from an APPEND literal8 is stored in base64 (the APPEND
        # command), and BODY[] sends any NUL that came in another way as 0x80
        # (``no_nul``), so 8BIT describes what BODY[] returns.
        encoding = "8BIT"
    params = node[N.PARAMS]
    if node[N.TYPE] == "text" and not any(p[0].split("*", 1)[0] == "charset" for p in params):
        params = list(params) + [["charset", "us-ascii"]]     # RFC 2045 5.2 default, said aloud
    parts = [quoted(node[N.TYPE].upper(), utf8), quoted(node[N.SUBTYPE].upper(), utf8),
             _params(params, utf8), nstring(fields["id"], utf8),
             nstring(fields["description"], utf8), quoted(encoding, utf8), b"%d" % size]
    if node[N.TYPE] == "message" and node[N.SUBTYPE] in ("rfc822", "global"):
        if node[N.MESSAGE]:
            env, inner = node[N.MESSAGE]
            parts += [envelope(env, utf8), bodystructure(inner, extensible, utf8)]
        else:
            parts += [envelope({}, utf8), b'("TEXT" "PLAIN" NIL NIL NIL "7BIT" 0 0)']
        parts.append(b"%d" % (node[N.LINES] or 0))
    elif node[N.TYPE] == "text":
        parts.append(b"%d" % (node[N.LINES] or 0))
    if extensible:
        parts += [nstring(fields["md5"], utf8), _disposition(fields["disposition"], utf8),
                  _language(fields["language"], utf8), nstring(fields["location"], utf8)]
    return b"(" + b" ".join(parts) + b")"


# --- sections ------------------------------------------------------------------

def find_part(node, parts):
    """The structure node of part ``parts`` (a tuple of numbers), or None."""
    N = mime
    for i, n in enumerate(parts):
        if i and node[N.MESSAGE]:
            node = node[N.MESSAGE][1]
        if node[N.CHILDREN]:
            if n > len(node[N.CHILDREN]):
                return None
            node = node[N.CHILDREN][n - 1]
        elif n != 1:
            return None
    return node


def section_bytes(data, structure, section):
    """The octets of BODY[section] (before any partial), or None if the part
    does not exist."""
    N = mime
    parts, spec, fields = section
    if not parts:
        entity = structure
    else:
        node = find_part(structure, parts)
        if node is None:
            return None
        if not spec:
            return data[node[N.BODY_START]:node[N.END]]
        if spec == "MIME":
            return data[node[N.START]:node[N.BODY_START]]
        if not node[N.MESSAGE]:
            return b"" if spec else None
        entity = node[N.MESSAGE][1]
    if not spec:
        return data[entity[N.START]:entity[N.END]]
    if spec == "TEXT":
        return data[entity[N.BODY_START]:entity[N.END]]
    head = data[entity[N.START]:entity[N.BODY_START]]
    if spec == "HEADER":
        return head
    return header_fields(head, fields, spec == "HEADER.FIELDS.NOT")


def header_fields(head, names, exclude):
    wanted = {n.lower().encode("utf-8", "surrogateescape") for n in names}
    out, keep = [], False
    eol = b"\r\n"
    for line in head.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            eol = line
            break
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        keep = (name in wanted) != exclude
        if keep:
            out.append(line)
    return b"".join(out) + eol


def no_nul(data):
    """``data`` with each NUL as 0x80: a plain literal may not hold NUL (RFC
    3501 section 9, CHAR8), and the length, so every size and offset, stays."""
    return data.replace(b"\0", b"\x80") if b"\0" in data else data


def partial(data, origin_length):
    if origin_length is None:
        return data
    origin, length = origin_length
    return data[origin:origin + length]


class UnknownEncoding(Exception):
    pass


def binary_bytes(data, structure, parts):
    """Decoded content of a part for BINARY[]; raises UnknownEncoding."""
    N = mime
    if not parts:
        return data
    node = find_part(structure, parts)
    if node is None:
        return None
    if node[N.CHILDREN]:
        return data[node[N.BODY_START]:node[N.END]]
    body = data[node[N.BODY_START]:node[N.END]]
    enc = node[N.FIELDS]["encoding"]
    if enc in (None, "7bit", "8bit", "binary"):
        return body
    if enc == "base64":
        try:
            return base64.b64decode(b"".join(body.split()) + b"==", validate=False)
        except (binascii.Error, ValueError):
            raise UnknownEncoding(enc) from None
    if enc == "quoted-printable":
        return mime.decode_qp(body)
    raise UnknownEncoding(enc)
