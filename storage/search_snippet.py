"""The one highlighter: JMAP SearchSnippet/get and IMAP PREVIEW both call it.

Owns finding, in a message's subject and body text, the regions that the
``Text`` nodes of a criteria tree match (with the same folding and word rules
as ``storage.search_text``), and cutting an excerpt around the first one.

    highlight(text, criteria, *, fields=("body", "text"), limit=255,
              mark=("<mark>", "</mark>"), escape=html.escape) -> str or None

returns ``text`` (or the section of it that starts just before the first
match, at most ``limit`` UTF-8 octets) with each match wrapped in ``mark``
and everything escaped by ``escape``; None when nothing in ``text`` matches.
With ``mark=None, escape=None`` it gives a plain excerpt (IMAP PREVIEW).

    snippets(store, account_id, message_pks, criteria) -> {pk: (subject, preview)}

is JMAP SearchSnippet/get: ``subject`` is the whole subject, marked, or None
when the subject has no match; ``preview`` the marked body section (255
octets at most) or None. It reads only the requested messages' files.
Negated text criteria (under ``Not``) are never highlighted.
"""

import html
import re

from . import mime
from . import search_text as st
from .errors import MessageNotFound
from .search import text_nodes

SUBJECT_FIELDS = ("subject", "text")
BODY_FIELDS = ("body", "text")
LEAD = 40   # characters of context kept before the first match
_SPACES = re.compile(r"\s+")


def _folded(text):
    """The folded text and, for each folded character, its index in ``text``."""
    out, where = [], []
    for i, ch in enumerate(text):
        f = st.fold(ch)
        out.append(f)
        where.extend([i] * len(f))
    return "".join(out), where


def regions(text, criteria, fields):
    """Sorted, merged ``(start, end)`` spans of ``text`` matched by the criteria's
    ``Text`` nodes whose field is in ``fields``."""
    nodes = [n for n in text_nodes(criteria) if n.field in fields and n.value.strip()]
    if not nodes or not text:
        return []
    folded, where = _folded(text)
    spans = []

    def add_substring(needle):
        if not needle:
            return
        for m in re.finditer(re.escape(needle), folded):
            spans.append((where[m.start()], where[m.end() - 1] + 1))

    for node in nodes:
        if node.field in st.HEADER_FIELDS:
            add_substring(st.fold(node.value))
            continue
        qwords, runs = st.query_words(node.value)
        prefixes = [st.fold_word(w) for w in qwords]
        if prefixes:
            for m in st._TOKEN.finditer(text):
                word = m.group()
                if not st.is_cjk(word) and any(st.fold_word(word).startswith(p) for p in prefixes):
                    spans.append((m.start(), m.end()))
        for run in runs:
            add_substring(run)
    spans.sort()
    merged = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def highlight(text, criteria, *, fields=BODY_FIELDS, limit=255,
              mark=("<mark>", "</mark>"), escape=html.escape):
    text = _SPACES.sub(" ", text or "").strip()
    spans = regions(text, criteria, fields)
    if not spans:
        return None
    escape = escape or (lambda s: s)
    open_, close = mark or ("", "")
    start = spans[0][0]
    if limit is not None and start > LEAD:
        cut = text.rfind(" ", 0, start - LEAD)
        start = cut + 1 if cut >= 0 and start - cut < 2 * LEAD else start - LEAD
    else:
        start = 0
    pieces, pos = [], start
    for s, e in spans:
        if e <= start:
            continue
        s = max(s, start)
        pieces.append((text[pos:s], False))
        pieces.append((text[s:e], True))
        pos = e
    pieces.append((text[pos:], False))
    out, size = [], 0
    for chunk, marked in pieces:
        if not chunk:
            continue
        piece = open_ + escape(chunk) + close if marked else escape(chunk)
        n = len(piece.encode())
        if limit is not None and size + n > limit:
            if marked:
                break
            piece = _fit(chunk, limit - size, escape)   # plain text may be cut
            out.append(piece)
            break
        out.append(piece)
        size += n
    return "".join(out) if out else None


def _fit(chunk, room, escape):
    """The longest prefix of ``chunk`` whose escaped form fits ``room`` octets."""
    lo, hi = 0, len(chunk)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(escape(chunk[:mid]).encode()) <= room:
            lo = mid
        else:
            hi = mid - 1
    return escape(chunk[:lo])


def snippets(store, account_id, message_pks, criteria):
    out = {}
    for pk in message_pks:
        try:
            parsed = mime.ParsedMessage(store.read_message(account_id, pk))
        except (MessageNotFound, OSError):
            continue
        subject = highlight(parsed.subject, criteria, fields=SUBJECT_FIELDS, limit=None)
        preview = highlight(parsed.text[1], criteria, fields=BODY_FIELDS)
        out[pk] = (subject, preview)
    return out
