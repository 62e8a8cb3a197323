"""Parse a message once, from its raw bytes, into what the store keeps.

Owns the MIME structure with byte offsets into the original bytes (so IMAP
BODY[section]<partial> and BODYSTRUCTURE never re-serialise anything), the
ENVELOPE fields, the decoded summary JMAP/threading/sorting need, the preview
and the text the search index gets. It must not do I/O and must not fail on any
input: broken MIME yields a best-effort structure, never an exception.

Structure nodes are plain lists so they store compactly as JSON:
``[start, body_start, end, type, subtype, params, fields, lines, children, message]``
where ``params`` is a list of ``[name, value]`` (raw, as in the header),
``fields`` is ``{"id", "description", "encoding", "md5", "disposition",
"language", "location"}`` (raw strings or None; disposition is
``[value, params]``), ``lines`` counts body lines of text and message parts,
``children`` are the parts of a multipart, and ``message`` is
``[envelope, node]`` of an embedded message/rfc822.

Hostile input degrades, it never raises (a message that cannot be parsed
cannot be delivered, so every failure here would be a lost message). Every
decode goes through the few helpers under "safe decoding": ``charset_codec``
admits only real text charsets (``idna``, ``rot13``, ``uu``, ``base64_codec``,
``zlib_codec``, ``undefined``, names with bytes outside ASCII or NUL... fall
back to UTF-8), ``decode_text`` decodes bytes with ``errors="replace"``, and
``clean`` makes every derived string storable (valid UTF-8, no NUL), so the
database, the search index and JSON responses never see a lone surrogate.
ENVELOPE and structure fields stay raw (8-bit bytes as surrogate escapes, as
IMAP sends them back byte for byte); everything decoded is clean. RFC 2047
words are decoded here, not by ``email.header`` (which raises on bad base64
and unknown charset names). Work stays linear in the message and bounded:
``MAX_HEADERS`` fields per header block, ``MAX_DEPTH`` levels of nesting,
``MAX_PARTS`` parts per message (the rest stays in the bytes, unparsed),
subjects of ``MAX_SUBJECT`` characters for the base subject.
"""

import binascii
import codecs
import email.utils
import hashlib
import html
import re
from datetime import timezone
from email import policy
from email.parser import BytesParser
from functools import lru_cache

MAX_DEPTH = 64
MAX_PARTS = 5000      # structure nodes per message
MAX_HEADERS = 2000    # fields parsed per header block
MAX_SUBJECT = 4000    # characters of a subject that threading and sorting look at
PREVIEW_CHARS = 256
MAX_TEXT = 1 << 20  # text handed to the search index per message

START, BODY_START, END, TYPE, SUBTYPE, PARAMS, FIELDS, LINES, CHILDREN, MESSAGE = range(10)

ENVELOPE_FIELDS = ("date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc",
                   "in-reply-to", "message-id")

# The header block ends at the first empty line (RFC 5322 section 2.1), and
# only there: a line of white space is a continuation, a line without a colon
# is a broken field (skipped by ``parse_headers``), and neither ends it. With
# no empty line at all the whole entity is header and the body is empty.
_EMPTY_LINE = re.compile(rb"\n\r?\n")

def text_of(raw):
    """Header bytes as str; undecodable bytes survive as surrogate escapes."""
    return raw.decode("utf-8", "surrogateescape")


def bytes_of(value):
    return value.encode("utf-8", "surrogateescape")


# --- safe decoding ---------------------------------------------------------

FALLBACK_CHARSET = "utf-8"
_CHARSET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,63}")
# Codecs that Python counts as text encodings but that are no mail charset:
# they reject errors="replace", raise on any input, or turn escapes into text.
_NOT_CHARSETS = {"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape",
                 "charmap", "mbcs", "oem"}
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@lru_cache(maxsize=1024)
def charset_codec(name):
    """The Python codec of MIME charset ``name``, or None when it is no real
    text charset (unknown, invalid, or a codec like ``idna`` or ``zlib_codec``).
    An RFC 2231 language suffix (``utf-8*en``) is ignored."""
    if not isinstance(name, str):
        return None
    name = name.strip().strip('"').strip().split("*", 1)[0]
    if not _CHARSET_NAME.fullmatch(name):
        return None
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, UnicodeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


def clean(text):
    """``text`` without what a database column or a JSON response cannot hold:
    NUL and lone surrogates become U+FFFD."""
    if text.isascii():
        return text.replace("\x00", "\ufffd") if "\x00" in text else text
    return _UNSTORABLE.sub("\ufffd", text)


def decode_text(raw, charset=None):
    """``(text, problem)``: ``raw`` bytes decoded in ``charset`` (UTF-8 when it
    is missing or no real charset), undecodable bytes as U+FFFD, the result
    ``clean``. ``problem`` tells whether anything had to be replaced or guessed."""
    codec = charset_codec(charset) if charset else FALLBACK_CHARSET
    problem = codec is None
    codec = codec or FALLBACK_CHARSET
    try:
        text = raw.decode(codec)
    except (UnicodeError, ValueError, LookupError, TypeError):
        problem = True
        try:
            text = raw.decode(codec, "replace")
        except (UnicodeError, ValueError, LookupError, TypeError):
            text = raw.decode(FALLBACK_CHARSET, "replace")
    # An ASCII str is known to be one (no scan); only NUL can be wrong in it.
    if "\x00" in text if text.isascii() else _UNSTORABLE.search(text):
        return clean(text), True
    return text, problem


def header_text(value):
    """A header value (raw 8-bit bytes as surrogate escapes) as clean text:
    the bytes read as UTF-8 (RFC 6532), anything else as U+FFFD."""
    try:
        raw = bytes_of(value)
    except UnicodeError:
        return clean(value)
    return decode_text(raw)[0]


# --- headers ---------------------------------------------------------------

def header_end(data, start, end):
    """Offset where the body starts, within [start, end): after the empty line
    that ends the header block (``end`` when there is none)."""
    if start >= end:
        return end
    if data.startswith(b"\r\n", start, end):
        return start + 2
    if data.startswith(b"\n", start, end):
        return start + 1
    m = _EMPTY_LINE.search(data, start, end)
    return end if m is None else m.end()


def parse_headers(data, start, body_start):
    """``[(name, value)]`` of the header block: names as written, values unfolded
    (NUL as U+FFFD). Only the first ``MAX_HEADERS`` fields are parsed."""
    out = []   # [name, [value pieces]]
    pos = start
    while pos < body_start:
        nl = data.find(b"\n", pos, body_start)
        stop = body_start if nl < 0 else nl
        line = data[pos:stop - 1 if stop > pos and data[stop - 1] == 13 else stop]
        pos = stop + 1
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if out:
                out[-1][1].append(line)
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        if len(out) >= MAX_HEADERS:
            break
        out.append([name.strip(), [value]])
    return [(text_of(n), text_of(b"".join(v).replace(b"\0", b"\xef\xbf\xbd")).strip())
            for n, v in out]


def header(headers, name, default=None):
    name = name.lower()
    for n, v in headers:
        if n.lower() == name:
            return v
    return default


def header_all(headers, name):
    name = name.lower()
    return [v for n, v in headers if n.lower() == name]


def split_params(value):
    """Split ``type/sub; a=b; c="d;e"`` into (head, [[name, value], ...])."""
    parts, buf, quoted, escaped = [], [], False, False
    for ch in value:
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\" and quoted:
            buf.append(ch)
            escaped = True
        elif ch == '"':
            quoted = not quoted
            buf.append(ch)
        elif ch == ";" and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    head = strip_comments(parts[0]).strip()
    params = []
    for p in parts[1:]:
        name, sep, val = p.partition("=")
        name = name.strip()
        if not sep or not name:
            continue
        val = strip_comments(val).strip()
        if len(val) >= 2 and val[0] == '"' and val[-1] == '"':
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        params.append([name.lower(), val])
    return head, params


def strip_comments(value):
    if "(" not in value:
        return value
    out, depth, quoted = [], 0, False
    for ch in value:
        if ch == '"' and depth == 0:
            quoted = not quoted
        if not quoted and ch == "(":
            depth += 1
            continue
        if not quoted and ch == ")" and depth:
            depth -= 1
            continue
        if depth == 0:
            out.append(ch)
    return "".join(out)


_SECTION = re.compile(r"\*(?:([0-9]{1,3})(\*)?)?")
MAX_SECTIONS = 100


def param(params, name):
    """A parameter's value: decoded from RFC 2231 sections (``name*``,
    ``name*0*``, ``name*1``...) joined in order, in their charset (the
    language is dropped), or else as written; when a mailer sends both, the
    RFC 2231 form wins (the plain one is its fallback for old readers).
    Sections with a bad name (``name*x``, absurd numbers) are ignored, a
    repeated one counts once, an unknown charset reads as UTF-8."""
    name = name.lower()
    plain = None
    for n, v in params:
        if n == name:
            plain = v
            break
    sections = {}
    for n, v in params:
        if not n.startswith(name + "*"):
            continue
        m = _SECTION.fullmatch(n, len(name))
        if not m:
            continue
        order = int(m.group(1)) if m.group(1) else 0
        encoded = m.group(2) is not None or m.group(1) is None
        if order not in sections and len(sections) < MAX_SECTIONS:
            sections[order] = (encoded, v)
    if not sections:
        return plain
    charset, raw = None, bytearray()
    for i, order in enumerate(sorted(sections)):
        encoded, v = sections[order]
        if encoded:
            if i == 0 and v.count("'") >= 2:
                charset, _lang, v = v.split("'", 2)
            raw += _percent_decode(v)
        else:
            raw += _raw_bytes(v)
    return decode_text(bytes(raw), charset or None)[0]


MAX_PARAMS = 100   # distinct parameters a structure response shows


def merged_params(params):
    """``[[name, value, decoded]]``: ``params`` with each parameter's RFC 2231
    sections merged into one under its plain name, in the order of first
    appearance (at most ``MAX_PARAMS``). ``decoded`` tells that the value came
    from sections (clean text); otherwise the value is as written (raw)."""
    groups = {}
    for n, v in params:
        base = n.split("*", 1)[0]
        if base and (base in groups or len(groups) < MAX_PARAMS):
            groups.setdefault(base, []).append((n, v))
    out = []
    for base, group in groups.items():
        if all(n == base for n, _v in group):
            out.append([base, group[0][1], False])
        else:
            out.append([base, param(group, base) or "", True])
    return out


def _raw_bytes(value):
    try:
        return bytes_of(value)
    except UnicodeError:
        return value.encode("utf-8", "replace")


_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


def _percent_decode(value):
    out, pos = bytearray(), 0
    for m in _PERCENT.finditer(value):
        out += _raw_bytes(value[pos:m.start()])
        out.append(int(m.group(1), 16))
        pos = m.end()
    out += _raw_bytes(value[pos:])
    return bytes(out)


# RFC 2047 encoded words. The encoded text has no "?" (RFC 2047 section 2),
# which also keeps the scan linear on a header full of "=?".
_WORD = re.compile(r"=\?([^?\s]*)\?([QqBb])\?([^?]*)\?=")
_NOT_BASE64 = re.compile(rb"[^A-Za-z0-9+/]")


def _word_bytes(encoding, text):
    raw = _raw_bytes(text)
    if encoding in "Qq":
        return binascii.a2b_qp(raw, header=True)
    raw = _NOT_BASE64.sub(b"", raw)
    raw = raw[:len(raw) - len(raw) % 4] if len(raw) % 4 == 1 else raw + b"=" * (-len(raw) % 4)
    try:
        return binascii.a2b_base64(raw)
    except (binascii.Error, ValueError):
        return b""


def decode_words(value):
    """Decode RFC 2047 encoded words (and raw UTF-8) into clean text, never
    failing: white space between adjacent words goes, adjacent words of one
    charset are decoded together (a character may be split between them),
    broken base64 decodes as far as it goes, an unknown charset reads as UTF-8."""
    if value is None:
        return None
    value = header_text(value)
    if "=?" in value:
        out, pos, run = [], 0, None   # run: [charset, bytes] of adjacent words
        for m in _WORD.finditer(value):
            gap = value[pos:m.start()]
            if run is not None and gap.strip():
                out.append(decode_text(bytes(run[1]), run[0])[0])
                run = None
            if run is None:
                out.append(gap)
            charset, raw = m.group(1), _word_bytes(m.group(2), m.group(3))
            if run is not None and run[0].lower() == charset.lower():
                run[1] += raw
            else:
                if run is not None:
                    out.append(decode_text(bytes(run[1]), run[0])[0])
                run = [charset, bytearray(raw)]
            pos = m.end()
        if run is not None:
            out.append(decode_text(bytes(run[1]), run[0])[0])
        out.append(value[pos:])
        value = "".join(out)
    return " ".join(value.split())


# --- addresses -------------------------------------------------------------

_ADDR_TOKEN = re.compile(r'\s+|"(?:[^"\\]|\\.)*"?|\((?:[^()\\]|\\.)*\)?|[<>,:;@]|[^\s"(<>,:;@]+')


def parse_addresses(value):
    """An address list as ENVELOPE entries ``[name, route, mailbox, host]``.

    Groups open with ``[None, None, group, None]`` and close with
    ``[None, None, None, None]``, as RFC 3501 describes. Names stay raw.
    """
    if not value:
        return []
    tokens = [t for t in _ADDR_TOKEN.findall(value) if t.strip()]
    out, phrase, in_group, i = [], [], False, 0
    comment = None

    def phrase_text(toks):
        words = []
        for t in toks:
            if t.startswith('"'):
                t = re.sub(r"\\(.)", r"\1", t[1:-1] if t.endswith('"') and len(t) > 1 else t[1:])
            words.append(t)
        return " ".join(words) or None

    while i < len(tokens):
        t = tokens[i]
        if t.startswith("("):
            comment = t[1:-1].strip() if t.endswith(")") else t[1:].strip()
            i += 1
            continue
        if t == "<":
            j = i + 1
            inner = []
            while j < len(tokens) and tokens[j] != ">":
                if not tokens[j].startswith("("):
                    inner.append(tokens[j])
                j += 1
            route = None
            if ":" in inner:
                k = inner.index(":")
                route = "".join(inner[:k]) or None
                inner = inner[k + 1:]
            local, host = _split_addr(inner)
            out.append([phrase_text(phrase), route, local, host])
            phrase, comment = [], None
            i = j + 1
            continue
        if t == ":" and not in_group:
            out.append([None, None, phrase_text(phrase) or "", None])
            phrase, in_group = [], True
            i += 1
            continue
        if t in (",", ";"):
            if phrase:
                local, host = _split_addr(phrase)
                out.append([comment, None, local, host])
            phrase, comment = [], None
            if t == ";" and in_group:
                out.append([None, None, None, None])
                in_group = False
            i += 1
            continue
        phrase.append(t)
        i += 1
    if phrase:
        local, host = _split_addr(phrase)
        out.append([comment, None, local, host])
    if in_group:
        out.append([None, None, None, None])
    return out


def _split_addr(tokens):
    if "@" in tokens:
        k = len(tokens) - 1 - tokens[::-1].index("@")
        return "".join(tokens[:k]) or "", "".join(tokens[k + 1:]) or ""
    return "".join(tokens) or "", ""


def addresses(value):
    """Decoded ``[{"name", "email"}]`` of an address header (groups flattened)."""
    out = []
    for name, _route, local, host in parse_addresses(value):
        if local is None or host is None:
            continue
        mail = f"{local}@{host}" if host else local
        out.append({"name": decode_words(name) if name else None, "email": header_text(mail)})
    return out


_MSGID = re.compile(r"<([^<>\s]+)>")


def message_ids(value):
    """The ids in a Message-ID/References/In-Reply-To value, as clean text."""
    return [header_text(i) for i in _MSGID.findall(value or "")]


# --- structure -------------------------------------------------------------

def parse_structure(data, start=0, end=None, depth=0, default_type=("text", "plain"), budget=None):
    """The structure node of the entity in data[start:end]. ``budget`` (a
    one-item list) counts the nodes still allowed (``MAX_PARTS`` in all)."""
    end = len(data) if end is None else end
    budget = [MAX_PARTS] if budget is None else budget
    budget[0] -= 1
    body_start = header_end(data, start, end)
    headers = parse_headers(data, start, body_start)
    ctype_raw = header(headers, "content-type")
    mtype, subtype, params = default_type[0], default_type[1], []
    if ctype_raw:
        head, params = split_params(ctype_raw)
        t, sep, s = head.partition("/")
        if sep and t.strip() and s.strip() and re.fullmatch(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+", t.strip() + s.strip()):
            mtype, subtype = t.strip().lower(), s.strip().lower()
        else:
            mtype, subtype, params = "text", "plain", []
    disposition = None
    disp_raw = header(headers, "content-disposition")
    if disp_raw:
        head, dparams = split_params(disp_raw)
        if head:
            disposition = [head.lower(), dparams]
    encoding = header(headers, "content-transfer-encoding")
    fields = {
        "id": header(headers, "content-id"),
        "description": header(headers, "content-description"),
        "encoding": strip_comments(encoding).strip().lower() if encoding else None,
        "md5": header(headers, "content-md5"),
        "disposition": disposition,
        "language": header(headers, "content-language"),
        "location": header(headers, "content-location"),
    }
    node = [start, body_start, end, mtype, subtype, params, fields, None, [], None]
    nested = depth < MAX_DEPTH and budget[0] > 0
    if mtype == "multipart":
        boundary = param(params, "boundary") if nested else None
        if boundary:
            child_default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
            for cstart, cend in split_multipart(data, body_start, end, _raw_bytes(boundary)):
                if budget[0] <= 0:
                    break
                node[CHILDREN].append(parse_structure(data, cstart, cend, depth + 1, child_default,
                                                      budget))
            if not node[CHILDREN]:
                node[CHILDREN].append([end, end, end, "text", "plain", [], _empty_fields(), 0, [], None])
            return node
        # no boundary, or nested too deep: the body is text
        node[TYPE], node[SUBTYPE] = "text", "plain"
        mtype = "text"
    if mtype == "message" and subtype in ("rfc822", "global") and nested \
            and fields["encoding"] in (None, "7bit", "8bit", "binary"):
        inner = parse_structure(data, body_start, end, depth + 1, budget=budget)
        node[MESSAGE] = [envelope(parse_headers(data, body_start, inner[BODY_START])), inner]
        node[LINES] = count_lines(data, body_start, end)
    elif mtype == "text":
        node[LINES] = count_lines(data, body_start, end)
    return node


def _empty_fields():
    return {k: None for k in ("id", "description", "encoding", "md5", "disposition",
                              "language", "location")}


def count_lines(data, start, end):
    n = data.count(b"\n", start, end)
    if end > start and data[end - 1] != 10:
        n += 1
    return n


_DECLARED_BOUNDARY = re.compile(rb'boundary\s*=\s*"?([^"\r\n;]+)', re.I)
MAX_NESTED_BOUNDARIES = 64


def _longer_boundaries(data, start, end, boundary):
    """Boundaries declared in data[start:end] that start with ``boundary``."""
    longer = []
    for m in _DECLARED_BOUNDARY.finditer(data, start, end):
        b = m.group(1).strip()
        if len(b) > len(boundary) and b.startswith(boundary) and b not in longer:
            longer.append(b)
            if len(longer) >= MAX_NESTED_BOUNDARIES:
                break
    return longer


def split_multipart(data, start, end, boundary):
    """The (start, end) of each body part between ``--boundary`` lines.

    A delimiter line is recognised by its prefix (RFC 2046 section 5.1.1:
    whatever follows the boundary on the line is ignored), except where the
    line starts with a longer boundary that a nested part declares (the
    innermost boundary wins, so "--abc" does not split at "--abcdef")."""
    delim = re.compile(rb"^--" + re.escape(boundary) + rb"(--)?([^\n]*)$", re.M)
    longer = None     # longer boundaries declared inside: looked for when first needed
    parts, part_start = [], None
    for m in delim.finditer(data, start, end):
        if m.group(2).strip():           # text after the boundary: maybe a longer one
            if longer is None:
                longer = _longer_boundaries(data, start, end, boundary)
            if any(data.startswith(b, m.start() + 2) for b in longer):
                continue
        if part_start is not None:
            part_end = m.start()
            if part_end > part_start and data[part_end - 1] == 10:
                part_end -= 1
                if part_end > part_start and data[part_end - 1] == 13:
                    part_end -= 1
            parts.append((part_start, max(part_start, part_end)))
        if m.group(1):
            return parts
        nl = data.find(b"\n", m.end(), end)
        part_start = end if nl < 0 else nl + 1
    if part_start is not None:
        parts.append((part_start, end))
    return parts


def iter_leaves(node, path=()):
    """Yield (section path, node) of every non-multipart part, depth first."""
    if node[CHILDREN]:
        for i, child in enumerate(node[CHILDREN], 1):
            yield from iter_leaves(child, path + (i,))
    else:
        yield path or (1,), node


def is_attachment(node):
    disp = node[FIELDS]["disposition"]
    if disp and disp[0] == "attachment":
        return True
    if node[TYPE] == "text" and node[SUBTYPE] in ("plain", "html"):
        return False
    return node[TYPE] not in ("multipart",) and not (node[TYPE] == "message" and node[MESSAGE] is None)


def filename(node):
    disp = node[FIELDS]["disposition"]
    name = param(disp[1], "filename") if disp else None
    name = name or param(node[PARAMS], "name")
    return decode_words(name) if name else None


# Quoted-printable, RFC 2045 section 6.7: "=XX" is an octet, "=" then optional
# white space at a line end is a soft line break (rule 5 with rule 3), white
# space at a line end is dropped (rule 3); any other "=" stays as written.
# One pass, linear: the white space run is matched only from its start.
_QP = re.compile(rb"=([0-9A-Fa-f]{2})|=[ \t]*(?:\r?\n|\Z)|(?<![ \t])[ \t]+(?=\r?\n|\Z)")


def _qp_piece(m):
    return bytes((int(m.group(1), 16),)) if m.group(1) else b""


def decode_qp(body):
    """The octets of a quoted-printable body; hard line breaks stay as written."""
    return _QP.sub(_qp_piece, body)


def decode_body(data, node, limit=None):
    """The decoded content of a leaf part as str (text) or bytes (otherwise)."""
    end = node[END] if limit is None else min(node[END], node[BODY_START] + limit * 2)
    body = data[node[BODY_START]:end]
    encoding = node[FIELDS]["encoding"]
    payload = None
    try:
        if encoding in (None, "7bit", "8bit", "binary"):
            payload = body
        elif encoding == "quoted-printable":
            payload = decode_qp(body)
        elif encoding == "base64":
            payload = binascii.a2b_base64(body)
    except (binascii.Error, ValueError):
        payload = None
    if payload is None:  # other encodings, or broken base64: the email package copes
        try:
            msg = BytesParser(policy=policy.compat32).parsebytes(data[node[START]:end])
            payload = msg.get_payload(decode=True) or b""
        except Exception:  # noqa: BLE001 - malformed bodies decode to nothing
            payload = b""
        if not isinstance(payload, bytes):
            payload = b""
    if node[TYPE] != "text":
        return payload
    return decode_text(payload, param(node[PARAMS], "charset"))[0]


# Linear in the text: a tag starts "<" and a letter, "/", "!" or "?" (so
# "1 < 2" stays text) and ends at the next ">" or "<"; a script or style
# element at its end tag (or the end of the text), numeric references are
# at most 8 digits (longer ones would make html.unescape's int() raise).
_TAG = re.compile(r"<[A-Za-z/!?][^<>]*>")
_HIDDEN = re.compile(r"<(script|style)\b[^<>]*>", re.I)
_HIDDEN_END = {"script": re.compile(r"</script\s*>", re.I), "style": re.compile(r"</style\s*>", re.I)}
_LONG_NUMERIC = re.compile(r"&#(?:[xX]0*[1-9A-Fa-f][0-9A-Fa-f]{8,}|0*[1-9][0-9]{8,});?")


def html_to_text(value):
    out, pos = [], 0
    while True:
        m = _HIDDEN.search(value, pos)
        if m is None:
            out.append(value[pos:])
            break
        out.append(value[pos:m.start()])
        out.append(" ")
        close = _HIDDEN_END[m.group(1).lower()].search(value, m.end())
        if close is None:
            break
        pos = close.end()
    text = _TAG.sub(" ", "".join(out))
    return clean(html.unescape(_LONG_NUMERIC.sub("\ufffd", text)))


def part_text(data, node, limit=None):
    """The decoded text of a text/* leaf, HTML reduced to text (about
    ``limit`` characters of it when given)."""
    body = decode_body(data, node, limit)
    return html_to_text(body) if node[SUBTYPE] in ("html", "xhtml+xml") else body


def search_bodies(data, structure, decoded=None):
    """The texts BODY and TEXT search: every text/* part (attachments too, any
    subtype, HTML reduced to text), the preamble of every multipart, and the
    header fields and body parts of every attached message/rfc822, in order,
    about ``MAX_TEXT`` characters in all (the rest is not indexed)."""
    out, size = [], 0
    stack = [structure]
    decoded = decoded or {}
    while stack and size < MAX_TEXT:
        node = stack.pop()
        text = None
        if node[CHILDREN]:
            first = node[CHILDREN][0][START]
            pre = data[node[BODY_START]:max(node[BODY_START], first)]
            boundary = param(node[PARAMS], "boundary")
            cut = pre.rfind(b"--" + _raw_bytes(boundary)) if boundary else -1
            pre = pre[:cut] if cut >= 0 else pre
            if pre.strip():
                text = decode_text(pre[:MAX_TEXT])[0]
            stack.extend(reversed(node[CHILDREN]))
        elif node[MESSAGE]:
            inner = node[MESSAGE][1]
            lines = [f"{clean(n)}: {decode_words(v) or ''}"
                     for n, v in parse_headers(data, inner[START], inner[BODY_START])]
            text = "\n".join(lines)
            stack.append(inner)
        elif node[TYPE] == "text":
            text = decoded.get(node[START])
            if text is None:
                text = part_text(data, node, MAX_TEXT - size)
        if text:
            out.append(text)
            size += len(text)
    return out


# --- binary content (RFC 3516 section 4.4) ---------------------------------

_CTE_FIELD = re.compile(rb"(?im)^content-transfer-encoding[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*")


def binary_to_base64(data):
    """``data`` with every part whose body holds NUL re-encoded in base64 (its
    Content-Transfer-Encoding field replaced), so that no BODY[] holds a NUL
    and no part is "binary"; the decoded content is unchanged. ``data`` itself
    when it has no NUL; None when a NUL cannot be moved into base64 (in a
    header, an embedded message, or a body already quoted-printable/base64)."""
    if b"\0" not in data:
        return data
    structure = parse_structure(data)
    out, pos = [], 0
    for _path, node in iter_leaves(structure):
        body = data[node[BODY_START]:node[END]]
        if b"\0" not in body:
            continue
        if node[MESSAGE] is not None or node[FIELDS]["encoding"] not in (None, "7bit", "8bit",
                                                                          "binary"):
            return None
        head = data[node[START]:node[BODY_START]]
        eol = b"\r\n" if head.endswith(b"\r\n") or not head else b"\n"
        fields = _CTE_FIELD.sub(b"", head[:len(head) - len(eol)] if head.endswith(eol) else head)
        if fields and not fields.endswith(b"\n"):
            fields += eol
        encoded = binascii.b2a_base64(body, newline=False)
        lines = eol.join(encoded[i:i + 76] for i in range(0, len(encoded), 76))
        out += [data[pos:node[START]], fields, b"Content-Transfer-Encoding: base64", eol, eol,
                lines]
        pos = node[END]
    out.append(data[pos:])
    converted = b"".join(out)
    return None if b"\0" in converted else converted


# --- the parse, once at delivery ------------------------------------------

def envelope(headers):
    """The ENVELOPE fields of a header block (raw strings; addresses parsed)."""
    env = {}
    for name in ENVELOPE_FIELDS:
        value = header(headers, name)
        if name in ("from", "sender", "reply-to", "to", "cc", "bcc"):
            env[name] = parse_addresses(value) if value else None
        else:
            env[name] = value
    return env


def base_subject(subject):
    """RFC 5256 base subject: decoded, prefixes and trailers stripped, lower case."""
    s = " ".join((subject or "")[:MAX_SUBJECT].split())
    while True:
        prev = s
        s = re.sub(r"\s*\(fwd\)\s*$", "", s, flags=re.I)
        s = re.sub(r"^(re|fwd?|aw|sv|wg|antw)\s*(\[[^\]]*\])?\s*:\s*", "", s, flags=re.I)
        blob = re.match(r"^\[[^\]]*\]\s*", s)
        if blob and s[blob.end():]:  # a blob is dropped only when text remains
            s = s[blob.end():]
        if s == prev:
            break
    if s.lower().startswith("[fwd:") and s.endswith("]"):
        s = s[5:-1].strip()
    return s.lower()


def parse_datetime(value):
    """A Date header value as a datetime (naive when its zone is -0000), or
    None, also when it is out of range in UTC."""
    if not value:
        return None
    try:
        dt = email.utils.parsedate_to_datetime(value)
        if dt.tzinfo is not None:
            dt.astimezone(timezone.utc)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return dt


def parse_date(value):
    dt = parse_datetime(value)
    if dt is None:
        return None
    try:
        return dt.timestamp()
    except (OverflowError, ValueError, OSError):
        return None


class ParsedMessage:
    """Everything computed from a message's bytes at delivery time."""

    __slots__ = ("headers", "structure", "envelope", "summary", "subject", "msgid",
                 "references", "sent_at", "preview", "has_attachment", "text",
                 "content_hash", "from_sort", "to_sort")

    @classmethod
    def minimal(cls, data):
        """A degenerate parse for when the real one fails (a bug): the whole
        message as one text/plain body, no header fields, nothing decoded."""
        self = object.__new__(cls)
        self.headers, self.envelope = [], envelope([])
        self.structure = [0, 0, len(data), "text", "plain", [], _empty_fields(),
                          count_lines(data, 0, len(data)), [], None]
        self.summary = {k: [] for k in ("from", "to", "cc", "bcc", "replyTo", "sender",
                                        "messageId", "inReplyTo", "references")}
        self.subject = self.preview = self.from_sort = self.to_sort = ""
        self.msgid, self.references, self.sent_at, self.has_attachment = None, [], None, False
        self.content_hash = hashlib.sha256(data).hexdigest()
        self.text = ("", "")
        return self

    def __init__(self, data):
        self.structure = parse_structure(data)
        self.headers = parse_headers(data, 0, self.structure[BODY_START])
        h = self.headers
        self.envelope = envelope(h)
        self.subject = decode_words(header(h, "subject")) or ""
        ids = message_ids(header(h, "message-id"))
        self.msgid = ids[0] if ids else None
        refs = message_ids(" ".join(header_all(h, "references")))
        for ref in message_ids(header(h, "in-reply-to")):
            if ref not in refs:
                refs.append(ref)
        self.references = refs
        self.sent_at = parse_date(header(h, "date"))
        self.content_hash = hashlib.sha256(data).hexdigest()
        froms = addresses(header(h, "from"))
        tos = addresses(header(h, "to"))
        self.from_sort = ((froms[0]["name"] or froms[0]["email"]) if froms else "").lower()[:320]
        self.to_sort = ((tos[0]["name"] or tos[0]["email"]) if tos else "").lower()[:320]
        self.summary = {
            "from": froms, "to": tos,
            "cc": addresses(header(h, "cc")), "bcc": addresses(header(h, "bcc")),
            "replyTo": addresses(header(h, "reply-to")),
            "sender": addresses(header(h, "sender")),
            "messageId": ids, "inReplyTo": message_ids(header(h, "in-reply-to")),
            "references": message_ids(" ".join(header_all(h, "references"))),
        }
        names, attached = [], False
        preview = None
        decoded = {}      # START of a text part -> its text (decoded once)
        for _path, node in iter_leaves(self.structure):
            if is_attachment(node):
                attached = True
                name = filename(node)
                if name:
                    names.append(name)
                continue
            if preview is None and node[TYPE] == "text" and node[SUBTYPE] in ("plain", "html"):
                body = decoded[node[START]] = part_text(data, node)
                preview = " ".join(body[:PREVIEW_CHARS * 8].split())[:PREVIEW_CHARS]
                if len(preview) < PREVIEW_CHARS and len(body) > PREVIEW_CHARS * 8:
                    preview = " ".join(body.split())[:PREVIEW_CHARS]
        bodies = search_bodies(data, self.structure, decoded)
        self.preview = preview or ""
        self.has_attachment = attached
        head_text = " ".join(filter(None, [
            self.subject,
            *(f"{a['name'] or ''} {a['email']}" for k in ("from", "to", "cc", "bcc")
              for a in self.summary[k]),
        ]))
        self.text = (head_text, ("\n".join(bodies + names))[:MAX_TEXT])
