"""How search reads text: the indexed document, folding, words, and matching.

Owns the one definition of what a search matches, shared by every backend,
by the scan of not-yet-indexed messages and by the snippet highlighter:

- Header keys (SUBJECT, FROM, TO, CC, BCC, HEADER) match a case- and
  diacritic-insensitive substring of the decoded (RFC 2047) header value, as
  RFC 3501 asks.
- BODY and TEXT split the query into words; each word must be the start of a
  word of the message (so "lunch" finds "lunchtime", never "brunch"). Chinese,
  Japanese and Korean have no spaces between words, so their characters are
  indexed one by one and a run of them must appear contiguously.

Pure functions over str: no I/O, no SQL. The document holds only clean text
(``mime.clean``: no NUL, no lone surrogate), so every backend can store it
whatever the message's bytes.
"""

import re
import unicodedata
from functools import lru_cache

from . import mime

CJK = ("\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
       "\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002fa1f")
_TOKEN = re.compile(rf"[{CJK}]+|(?:(?![{CJK}])[^\W_])+")
_CJK_RUN = re.compile(rf"[{CJK}]+")
CJK_SEPARATOR = "x"   # a token between runs, so a phrase never spans two runs
ADDRESS_FIELDS = ("from", "to", "cc", "bcc")
# The format of ``document`` (and of the text ``mime`` extracts for it). A data
# directory indexed with an older one is reindexed at open (``storage.reindex``).
# 2: every text part, preambles, attached messages, ENVELOPE address forms.
VERSION = 2
HEADER_FIELDS = ("subject",) + ADDRESS_FIELDS


@lru_cache(maxsize=4096)
def _fold_char(ch):
    if ch in "\u0130\u0131":           # Turkish dotted/dotless i: both fold to i
        return "i"
    if ord(ch) >= 0x2000:              # CJK and symbols: width only (NFKC), no mark removal
        return unicodedata.normalize("NFKC", ch).lower()
    return "".join(c for c in unicodedata.normalize("NFKD", ch)
                   if not unicodedata.combining(c)).lower()


def fold(text):
    """Lower case, without diacritics on Latin, Greek and Cyrillic letters
    ("Grüße" -> "gruße"); CJK and other scripts keep their marks."""
    if text.isascii():
        return text.lower()
    return "".join(map(_fold_char, text))


@lru_cache(maxsize=200_000)
def fold_word(word):
    return fold(word)


def is_cjk(token):
    return bool(_CJK_RUN.match(token))


def tokens(text):
    """Words and CJK runs of ``text``, as written (not folded)."""
    return _TOKEN.findall(text)


def words(text):
    """``(words, cjk)``: the folded words, and the CJK characters one by one with
    ``CJK_SEPARATOR`` between runs (both as lists of tokens)."""
    out, cjk = [], []
    for tok in _TOKEN.findall(text):
        if is_cjk(tok):
            if cjk:
                cjk.append(CJK_SEPARATOR)
            cjk.extend(fold(tok))
        else:
            out.append(fold_word(tok))
    return out, cjk


def document(parsed):
    """The text a message contributes to the index, from its ``ParsedMessage``.

    ``subject``/``from``/``to``/``cc``/``bcc`` hold the decoded header values
    (every occurrence, one per line); ``fields`` every header as
    ``name: value`` lines (name lower case); ``body`` the decoded text parts
    (HTML reduced to text) and attachment file names. The address fields also
    hold each address as ENVELOPE shows it (``envelope_addresses``).
    """
    doc = {name: [] for name in HEADER_FIELDS}
    lines = []
    for name, raw in parsed.headers:
        value = mime.decode_words(raw) or ""   # clean: no NUL, no lone surrogate
        key = mime.clean(name.strip().lower())
        lines.append(f"{key}: {value}")
        if key in doc:
            doc[key].append(value)
            if key in ADDRESS_FIELDS:
                doc[key].extend(envelope_addresses(raw))
    doc = {k: "\n".join(v) for k, v in doc.items()}
    doc["subject"] = doc["subject"] or parsed.subject
    doc["fields"] = "\n".join(lines)
    doc["body"] = parsed.text[1]
    return doc


def envelope_addresses(raw):
    """The addresses of an address header as ENVELOPE shows them, one per
    item: ``name <mailbox@host>`` with comments gone, quotes and escapes
    undone, RFC 2047 words decoded (so FROM "John Smith" finds
    ``John (the boss) Smith <js@x.test>``; ``name`` alone when it is a comment
    standing for the name)."""
    out = []
    for name, _route, local, host in mime.parse_addresses(raw)[:MAX_ADDRESSES]:
        if local is None or host is None:     # a group's start or end
            continue
        mail = mime.header_text(f"{local}@{host}" if host else local)
        name = mime.decode_words(name) if name else ""
        out.append(f"{name} <{mail}>" if name else mail)
    return out


MAX_ADDRESSES = 1000   # per header field


# --- queries ----------------------------------------------------------------

def header_name(field):
    """The header name of a ``header:<name>`` field, else None."""
    return field[7:].strip().lower() if field.startswith("header:") else None


def query_words(value):
    """``(words, cjk_runs)`` of a BODY/TEXT value: words as written, CJK runs folded."""
    out, cjk = [], []
    for tok in _TOKEN.findall(value):
        (cjk.append(fold(tok)) if is_cjk(tok) else out.append(tok))
    return out, cjk


def header_lines(fields, name):
    """Values of header ``name`` in a ``fields`` text (folded or not)."""
    prefix = name + ":"
    return [line[len(prefix):].strip() for line in fields.split("\n") if line.startswith(prefix)]


def matches(doc, field, value):
    """Whether ``doc`` (see ``document``) matches ``Text(field, value)``; the
    reference semantics, used for not-yet-indexed messages."""
    name = header_name(field)
    if name is not None:
        lines = header_lines(doc["fields"], name)
        return bool(lines) and (not value or any(fold(value) in fold(v) for v in lines))
    if field in HEADER_FIELDS:
        return fold(value) in fold(doc[field])
    if not value.strip():
        return True
    qwords, runs = query_words(value)
    if not qwords and not runs:
        return False
    texts = [doc["body"]] if field == "body" else [doc["fields"], doc["body"]]
    have, cjk = set(), []
    for t in texts:
        w, c = words(t)
        have.update(w)
        cjk.append("".join(c))
    cjk_text = CJK_SEPARATOR.join(cjk)
    for q in qwords:
        q = fold_word(q)
        if q not in have and not any(w.startswith(q) for w in have):
            return False
    return all(run in cjk_text for run in runs)
