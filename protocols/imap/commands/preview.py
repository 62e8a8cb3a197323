"""PREVIEW (RFC 8970): the FETCH data item ``PREVIEW`` and ``PREVIEW (LAZY)``.

The preview is computed once at delivery (``storage.mime``: the first text
part that is no attachment, HTML reduced to text, white space collapsed, at
most 256 characters) and read here from the message rows, so it is always
cheap: ``LAZY`` never needs to answer NIL and is accepted and ignored. Sent
as UTF-8 (a literal unless UTF8=ACCEPT allows a quoted string), cut to the
200 characters section 3.3 recommends; a message without text gets "" (never
NIL), as the RFC requires.
"""

from roost.storage import emails

from ..wire import quoted
from . import capability

capability("PREVIEW")

PREVIEW_CHARS = 200


def preview_texts(store, account_id, recs):
    """``{message id: preview}`` of the records (one read for the chunk).
    ``account_id`` is the mailbox owner's: messages of another account are
    left out (they would get "")."""
    infos = emails.get_messages(store, account_id, [r.message_id for r in recs],
                                parsed=False, summary=False)
    return {pk: info.preview for pk, info in infos.items()}


def preview_item(previews, rec):
    """The value of ``PREVIEW`` for ``rec``: UTF-8 always (RFC 8970 3.3), so a
    literal when it is not ASCII (a quoted string may hold only 7-bit)."""
    text = ((previews or {}).get(rec.message_id) or "")[:PREVIEW_CHARS]
    return quoted(text, utf8=False) if text.isascii() else \
        b"{%d}\r\n" % len(text.encode()) + text.encode()
