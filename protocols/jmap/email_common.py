"""The JMAP Email object (RFC 8621 section 4.1), shared by the Email methods.

Owns the mapping between JMAP keywords and the store's IMAP flag names, the
Email property lists, and ``email_json``: an Email object from a message's
summary computed at delivery (no message read for a mail-list view), with
headers and bodies from the raw bytes only when a property needs them. The
methods live beside it, one file per concern: ``email_get`` (/get, /changes),
``email_query`` (/query, /queryChanges: filter compiler and sorting),
``email_set`` (/set, /copy), ``email_import`` (/import, /parse) and
``email_snippet`` (SearchSnippet/get).
"""

import re

from roost.storage import mime
from roost.storage.errors import MessageNotFound
from roost.storage.store import email_oid

from . import bodies
from .core import bool_arg, invalid, uint_arg

SUMMARY_PROPS = ("id", "blobId", "threadId", "mailboxIds", "keywords", "size", "receivedAt",
                 "messageId", "inReplyTo", "references", "sender", "from", "to", "cc", "bcc",
                 "replyTo", "subject", "sentAt", "hasAttachment", "preview")
SUMMARY_FIELDS = ("messageId", "inReplyTo", "references", "sender", "from", "to", "cc", "bcc",
                  "replyTo")
BODY_PROPS = ("bodyValues", "textBody", "htmlBody", "attachments")
ALL_PROPS = SUMMARY_PROPS + ("headers", "bodyStructure") + BODY_PROPS
DEFAULT_PROPS = SUMMARY_PROPS + BODY_PROPS
IMAP_TO_KEYWORD = {"\\seen": "$seen", "\\flagged": "$flagged", "\\answered": "$answered",
                   "\\draft": "$draft"}
KEYWORD_TO_IMAP = {"$seen": "\\Seen", "$flagged": "\\Flagged", "$answered": "\\Answered",
                   "$draft": "\\Draft"}
_KEYWORD = re.compile(r'^[!#$&\'+-Z\[^-z|}~]{1,255}$')   # RFC 8621 4.1.1
MAX_MAILBOXES_PER_EMAIL = 256


# --- keywords --------------------------------------------------------------------

def keywords_of(flag_names):
    out = {}
    for name in flag_names:
        low = name.lower()
        if low == "\\deleted" or low == "\\recent":
            continue
        out[IMAP_TO_KEYWORD.get(low, low)] = True
    return out


def flag_name(keyword):
    """The IMAP flag name of a JMAP keyword; raises ValueError when invalid."""
    if not isinstance(keyword, str) or not _KEYWORD.match(keyword) or \
            any(c in keyword for c in '(){%*"\\]'):
        raise ValueError(keyword)
    low = keyword.lower()
    return KEYWORD_TO_IMAP.get(low, low)


# --- the Email object ------------------------------------------------------------

_RAW_PROPS = frozenset(("headers", "bodyStructure", "bodyValues", "textBody", "htmlBody",
                        "attachments"))
_needs_raw = {}


def needs_raw(props):
    key = tuple(props)
    if key not in _needs_raw:
        if len(_needs_raw) > 1000:
            _needs_raw.clear()
        _needs_raw[key] = any(p in _RAW_PROPS or p.startswith("header:") for p in props)
    return _needs_raw[key]


def email_json(ctx, info, props, body_props, opts, raw=None):
    """The Email object of ``info`` with ``props``; reads the bytes only when needed."""
    s = info.summary
    out = {}
    need_raw = needs_raw(props)
    if need_raw and raw is None:
        try:
            raw = ctx.store.read_message(ctx.account.id, info.id)
        except (MessageNotFound, OSError):
            raw = b""
    for p in props:
        if p == "id":
            out[p] = email_oid(info.id)
        elif p == "blobId":
            out[p] = info.blob_id
        elif p == "threadId":
            out[p] = f"T{info.thread_id}"
        elif p == "mailboxIds":
            out[p] = {f"M{m.mailbox_id}": True for m in info.memberships}
        elif p == "keywords":
            out[p] = keywords_of(info.flag_names)
        elif p == "size":
            out[p] = info.size
        elif p == "receivedAt":
            out[p] = bodies.utc_date(info.internal_date)
        elif p in ("messageId", "inReplyTo", "references"):
            out[p] = s.get(p) or None
        elif p in ("sender", "from", "to", "cc", "bcc", "replyTo"):
            out[p] = s.get(p) or None
        elif p == "subject":
            out[p] = info.subject
        elif p == "sentAt":
            out[p] = bodies.utc_date(info.sent_at)
        elif p == "hasAttachment":
            out[p] = info.has_attachment
        elif p == "preview":
            out[p] = info.preview
        elif p == "headers":
            out[p] = [{"name": n, "value": v} for n, v in
                      bodies.raw_headers(raw, 0, info.structure[mime.BODY_START])]
        elif p.startswith("header:"):
            name, form, all_ = bodies.parse_header_property(p)
            out[p] = bodies.header_values(bodies.raw_headers(raw, 0, info.structure[mime.BODY_START]),
                                          name, form, all_)
    if need_raw:
        root = bodies.part_tree(info.structure, info.blob_id)
        text, html, att = bodies.body_lists(root)
        if "bodyStructure" in props:
            out["bodyStructure"] = bodies.part_json(raw, root, body_props)
        for key, parts in (("textBody", text), ("htmlBody", html), ("attachments", att)):
            if key in props:
                out[key] = [bodies.part_json(raw, p, body_props) for p in parts]
        if "bodyValues" in props:
            values = {}
            wanted = []
            if opts["all"]:
                wanted = [p for p in _leaves(root) if p.node[mime.TYPE] == "text"]
            else:
                if opts["text"]:
                    wanted += text
                if opts["html"]:
                    wanted += html
            for part in wanted:
                if part.node[mime.TYPE] != "text" or part.part_id in values:
                    continue
                value, problem, truncated = bodies.text_value(raw, part.node, opts["max"])
                values[part.part_id] = {"value": value, "isEncodingProblem": problem,
                                        "isTruncated": truncated}
            out["bodyValues"] = values
    return out


def _leaves(part):
    if part.part_id is not None:
        yield part
    for p in part.sub_parts:
        yield from _leaves(p)


def get_options(args):
    return {"text": bool_arg(args, "fetchTextBodyValues"),
            "html": bool_arg(args, "fetchHTMLBodyValues"),
            "all": bool_arg(args, "fetchAllBodyValues"),
            "max": uint_arg(args, "maxBodyValueBytes", 0)}


def check_props(args, key, allowed, default):
    props = args.get(key)
    if props is None:
        return list(default)
    if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
        raise invalid(f"{key} must be a list of property names")
    for p in props:
        if p.startswith("header:"):
            try:
                bodies.parse_header_property(p)
            except bodies.InvalidHeaderProperty:
                raise invalid(f"{p} is not a valid header property") from None
        elif p not in allowed:
            raise invalid(f"unknown property {p}")
    return list(dict.fromkeys(props))
