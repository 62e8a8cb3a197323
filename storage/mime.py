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
"""

import binascii
import email.header
import email.utils
import hashlib
import html
import re
from email import policy
from email.parser import BytesParser

MAX_DEPTH = 64
PREVIEW_CHARS = 256
MAX_TEXT = 1 << 20  # text handed to the search index per message

START, BODY_START, END, TYPE, SUBTYPE, PARAMS, FIELDS, LINES, CHILDREN, MESSAGE = range(10)

ENVELOPE_FIELDS = ("date", "subject", "from", "sender", "reply-to", "to", "cc", "bcc",
                   "in-reply-to", "message-id")

_LINE_END = re.compile(rb"\r?\n")
# Header fields (name, optional white space, colon; obsolete syntax allows the
# space) and their continuation lines; the last line may lack its newline. A
# leading mbox "From " line stays in the header block.
_HEADER_BLOCK = re.compile(rb"(?:From [^\n]*\n)?(?:[!-9;-~]+[ \t]*:[^\n]*(?:\n|\Z)(?:[ \t][^\n]*(?:\n|\Z))*)*")


def text_of(raw):
    """Header bytes as str; undecodable bytes survive as surrogate escapes."""
    return raw.decode("utf-8", "surrogateescape")


def bytes_of(value):
    return value.encode("utf-8", "surrogateescape")


# --- headers ---------------------------------------------------------------

def header_end(data, start, end):
    """Offset where the body starts, within [start, end): after the blank line
    that ends the header block, or at the first line that is neither a header
    field nor a continuation (a missing blank line, as broken mailers write)."""
    if start >= end:
        return end
    m = _HEADER_BLOCK.match(data, start, end)
    pos = m.end()
    if data.startswith(b"\r\n", pos, end):
        return pos + 2
    if data.startswith(b"\n", pos, end):
        return pos + 1
    return pos


def parse_headers(data, start, body_start):
    """``[(name, value)]`` of the header block: names as written, values unfolded."""
    out = []
    block = data[start:body_start]
    for line in _LINE_END.split(block):
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and out:
            name, value = out[-1]
            out[-1] = (name, value + text_of(line))
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        out.append((text_of(name.strip()), text_of(value)))
    return [(n, v.strip()) for n, v in out]


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


def param(params, name):
    """A parameter's decoded value, joining RFC 2231 continuations and charsets."""
    name = name.lower()
    for n, v in params:
        if n == name:
            return v
    pieces = []
    for n, v in params:
        if n.startswith(name + "*"):
            rest = n[len(name) + 1:]
            encoded = rest.endswith("*") or rest == ""
            index = rest.rstrip("*")
            order = int(index) if index.isdigit() else 0
            pieces.append((order, encoded, v))
    if not pieces:
        return None
    pieces.sort(key=lambda p: p[0])
    charset, raw = "utf-8", b""
    for i, (_order, encoded, v) in enumerate(pieces):
        if encoded:
            if i == 0 and v.count("'") >= 2:
                charset, _lang, v = v.split("'", 2)
            raw += _percent_decode(v)
        else:
            raw += bytes_of(v)
    try:
        return raw.decode(charset or "utf-8", "replace")
    except LookupError:
        return raw.decode("utf-8", "replace")


def _percent_decode(value):
    out = bytearray()
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "%" and i + 2 < len(value) + 0 and re.match(r"[0-9A-Fa-f]{2}", value[i + 1:i + 3]):
            out.append(int(value[i + 1:i + 3], 16))
            i += 3
        else:
            out += bytes_of(ch)
            i += 1
    return bytes(out)


def decode_words(value):
    """Decode RFC 2047 encoded words (and raw UTF-8) into a str, never failing."""
    if value is None:
        return None
    value = bytes_of(value).decode("utf-8", "replace")
    if "=?" not in value:
        return " ".join(value.split())
    try:
        return " ".join(str(email.header.make_header(email.header.decode_header(value))).split())
    except (ValueError, LookupError, UnicodeError, AssertionError):
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
        out.append({"name": decode_words(name) if name else None,
                    "email": bytes_of(mail).decode("utf-8", "replace")})
    return out


_MSGID = re.compile(r"<([^<>\s]+)>")


def message_ids(value):
    return _MSGID.findall(value or "")


# --- structure -------------------------------------------------------------

def parse_structure(data, start=0, end=None, depth=0, default_type=("text", "plain")):
    """The structure node of the entity in data[start:end]."""
    end = len(data) if end is None else end
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
    if mtype == "multipart" and depth < MAX_DEPTH:
        boundary = param(params, "boundary")
        if boundary:
            child_default = ("message", "rfc822") if subtype == "digest" else ("text", "plain")
            for cstart, cend in split_multipart(data, body_start, end, bytes_of(boundary)):
                node[CHILDREN].append(parse_structure(data, cstart, cend, depth + 1, child_default))
            if not node[CHILDREN]:
                node[CHILDREN].append([end, end, end, "text", "plain", [], _empty_fields(), 0, [], None])
            return node
        node[TYPE], node[SUBTYPE] = "text", "plain"
        mtype = "text"
    if mtype == "message" and subtype in ("rfc822", "global") and depth < MAX_DEPTH \
            and fields["encoding"] in (None, "7bit", "8bit", "binary"):
        inner = parse_structure(data, body_start, end, depth + 1)
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


def split_multipart(data, start, end, boundary):
    """The (start, end) of each body part between ``--boundary`` lines."""
    delim = re.compile(rb"^--" + re.escape(boundary) + rb"(--)?[ \t]*\r?$", re.M)
    parts, part_start = [], None
    for m in delim.finditer(data, start, end):
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
            payload = binascii.a2b_qp(body)
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
    if node[TYPE] != "text":
        return payload
    charset = (param(node[PARAMS], "charset") or "utf-8").strip().lower()
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


_TAGS = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.S | re.I)


def html_to_text(value):
    return html.unescape(_TAGS.sub(" ", value))


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
    s = " ".join((subject or "").split())
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
    """A Date header value as a datetime (naive when its zone is -0000), or None."""
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None


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
        bodies, names, attached = [], [], False
        preview = None
        for _path, node in iter_leaves(self.structure):
            if is_attachment(node):
                attached = True
                name = filename(node)
                if name:
                    names.append(name)
                continue
            if node[TYPE] != "text":
                continue
            body = decode_body(data, node)
            if node[SUBTYPE] == "html":
                body = html_to_text(body)
            if preview is None and node[SUBTYPE] in ("plain", "html"):
                preview = " ".join(body[:PREVIEW_CHARS * 8].split())[:PREVIEW_CHARS]
                if len(preview) < PREVIEW_CHARS and len(body) > PREVIEW_CHARS * 8:
                    preview = " ".join(body.split())[:PREVIEW_CHARS]
            bodies.append(body)
        self.preview = preview or ""
        self.has_attachment = attached
        head_text = " ".join(filter(None, [
            self.subject,
            *(f"{a['name'] or ''} {a['email']}" for k in ("from", "to", "cc", "bcc")
              for a in self.summary[k]),
        ]))
        self.text = (head_text, ("\n".join(bodies + names))[:MAX_TEXT])
