"""JMAP views of a message's bytes: body parts, body values, header forms, and
building new messages from JMAP Email properties (RFC 8621 sections 4.1.2-4.1.4, 4.6).

Owns the translation between the store's structure nodes (``storage.mime``,
byte offsets into the raw bytes) and ``EmailBodyPart`` objects, the parsed
header forms (``asRaw``, ``asText``, ``asAddresses``, ``asGroupedAddresses``,
``asMessageIds``, ``asDate``, ``asURLs``) and message generation for
``Email/set`` create. Pure functions over bytes: no store, no I/O.

Reading a stored message never fails on its content: every decode goes
through ``storage.mime``'s safe helpers (``decode_text``, ``header_text``,
``clean``), so octets that are not UTF-8 become U+FFFD (RFC 8621 section
4.1.2.1 asks that of ``asRaw``), an unknown or dangerous charset reads as
UTF-8 with ``isEncodingProblem``, and no lone surrogate reaches a response.
"""

import base64
import binascii
import email.utils
import quopri
import re
from datetime import datetime, timezone
from email import policy
from email.headerregistry import Address, Group
from email.message import EmailMessage

from roost.storage import mime

N = mime  # node index names: mime.START, mime.TYPE, ...

BODY_PART_PROPERTIES = ("partId", "blobId", "size", "headers", "name", "type", "charset",
                        "disposition", "cid", "language", "location", "subParts")
DEFAULT_BODY_PART_PROPERTIES = ("partId", "blobId", "size", "name", "type", "charset",
                                "disposition", "cid", "language", "location")
FORMS = ("asRaw", "asText", "asAddresses", "asGroupedAddresses", "asMessageIds", "asDate", "asURLs")
_HEADER_PROP = re.compile(r"^header:([!-9;-~]+)(?::(as[A-Za-z]+))?(:all)?$")


class InvalidHeaderProperty(ValueError):
    pass


# Which parsed forms a header defined by RFC 5322 / RFC 2369 may be read in
# (RFC 8621 section 4.1.2); any other header may be read in every form.
_FORM_HEADERS = {
    "asText": {"subject", "comments", "keywords", "list-id"},
    "asAddresses": {"from", "sender", "reply-to", "to", "cc", "bcc", "resent-from",
                    "resent-sender", "resent-reply-to", "resent-to", "resent-cc", "resent-bcc"},
    "asMessageIds": {"message-id", "in-reply-to", "references", "resent-message-id"},
    "asDate": {"date", "resent-date"},
    "asURLs": {"list-help", "list-unsubscribe", "list-subscribe", "list-post", "list-owner",
               "list-archive"},
}
_FORM_HEADERS["asGroupedAddresses"] = _FORM_HEADERS["asAddresses"]
_KNOWN_HEADERS = set().union(*_FORM_HEADERS.values()) | {"return-path", "received"}


def parse_header_property(prop):
    """``header:Name[:asForm][:all]`` -> (name, form, all) or raise InvalidHeaderProperty
    (also when a standard header cannot be read in that form)."""
    m = _HEADER_PROP.match(prop)
    if not m:
        raise InvalidHeaderProperty(prop)
    form = m.group(2) or "asRaw"
    if form not in FORMS:
        raise InvalidHeaderProperty(prop)
    name = m.group(1).lower()
    if form != "asRaw" and name in _KNOWN_HEADERS and name not in _FORM_HEADERS[form]:
        raise InvalidHeaderProperty(prop)
    return m.group(1), form, bool(m.group(3))


# --- raw headers --------------------------------------------------------------

_LINE = re.compile(rb"[^\n]*\n|[^\n]+$")


def raw_headers(data, start, body_start):
    """``[(name, raw value)]`` as on the wire: value after the colon, folding
    kept, octets that are not UTF-8 as U+FFFD (the first ``mime.MAX_HEADERS``)."""
    out = []
    for line in _LINE.finditer(data, start, body_start):
        text = mime.decode_text(line.group())[0]
        if text.strip() == "":
            break
        if text[:1] in (" ", "\t") and out:
            out[-1][1].append(text)
            continue
        name, sep, value = text.partition(":")
        if not sep:
            continue
        if len(out) >= mime.MAX_HEADERS:
            break
        out.append([name.strip(), [value]])
    return [(n, "".join(v).rstrip("\r\n")) for n, v in out]


def _unfold(value):
    return re.sub(r"\r?\n([ \t])", r"\1", value)


def header_form(value, form):
    """One header value in a parsed form (RFC 8621 section 4.1.2)."""
    if form == "asRaw":
        return value
    if form == "asText":
        return mime.decode_words(_unfold(value).strip())
    if form == "asAddresses":
        return mime.addresses(_unfold(value))
    if form == "asGroupedAddresses":
        return grouped_addresses(_unfold(value))
    if form == "asMessageIds":
        ids = mime.message_ids(value)
        return ids or None
    if form == "asDate":
        return date_value(_unfold(value).strip())
    if form == "asURLs":
        urls = re.findall(r"<([^<>\s]*)>", value)
        return urls or None
    raise InvalidHeaderProperty(form)


def grouped_addresses(value):
    groups, current = [], None
    for name, _route, local, host in mime.parse_addresses(value):
        if host is None and local is not None and name is None:   # group start
            current = {"name": mime.decode_words(local) or None, "addresses": []}
            groups.append(current)
            continue
        if local is None and host is None:                          # group end
            current = None
            continue
        addr = {"name": mime.decode_words(name) if name else None,
                "email": f"{local}@{host}" if host else local}
        if current is None:
            if not groups or groups[-1]["name"] is not None:
                groups.append({"name": None, "addresses": []})
            groups[-1]["addresses"].append(addr)
        else:
            current["addresses"].append(addr)
    return groups


def date_value(value):
    dt = mime.parse_datetime(value)
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return rfc3339(dt)


def rfc3339(dt):
    if dt.utcoffset() in (None,) or dt.utcoffset().total_seconds() == 0:
        return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return dt.isoformat(timespec="seconds")


def utc_date(epoch):
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc_date(value):
    """Epoch seconds of an RFC 3339 date-time; raises ValueError."""
    if not isinstance(value, str) or not re.fullmatch(
            r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", value):
        raise ValueError(value)
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def header_values(headers, name, form, all_):
    values = [v for n, v in headers if n.lower() == name.lower()]
    if all_:
        return [header_form(v, form) for v in values]
    if not values:
        return None
    return header_form(values[-1], form)


# --- body parts -----------------------------------------------------------------

def decoded_bytes(data, node):
    """The part's content with its transfer encoding undone."""
    raw = data[node[N.BODY_START]:node[N.END]]
    enc = (node[N.FIELDS].get("encoding") or "").lower()
    if enc == "base64":
        try:
            return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/]", b"", raw) + b"===")
        except (binascii.Error, ValueError):
            return b""
    if enc == "quoted-printable":
        return quopri.decodestring(raw)
    return raw


def charset_of(node):
    if node[N.TYPE] != "text":
        return None
    return mime.clean(mime.param(node[N.PARAMS], "charset") or "us-ascii")


def text_value(data, node, max_bytes=0):
    """``(value, isEncodingProblem, isTruncated)`` of a text part."""
    raw = decoded_bytes(data, node)
    value, problem = mime.decode_text(raw, charset_of(node))
    value = value.replace("\r\n", "\n")
    truncated = False
    if max_bytes and len(value.encode("utf-8")) > max_bytes:
        cut = value.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
        value, truncated = cut, True
    return value, problem, truncated


class Part:
    """A leaf or multipart as JMAP sees it; ``node`` is the store's node."""

    def __init__(self, node, part_id, blob_id, sub_parts):
        self.node = node
        self.part_id = part_id
        self.blob_id = blob_id
        self.sub_parts = sub_parts

    @property
    def type(self):
        return f"{self.node[N.TYPE]}/{self.node[N.SUBTYPE]}"

    @property
    def disposition(self):
        d = self.node[N.FIELDS].get("disposition")
        return mime.clean(d[0]) if d else None

    @property
    def name(self):
        return mime.filename(self.node)


def part_tree(node, blob_prefix, path=()):
    """The Part tree of a structure node; leaves get ids "1", "1.2", ..."""
    if node[N.CHILDREN]:
        subs = [part_tree(c, blob_prefix, path + (i,)) for i, c in enumerate(node[N.CHILDREN], 1)]
        return Part(node, None, None, subs)
    pid = ".".join(map(str, path)) or "1"
    return Part(node, pid, f"{blob_prefix}_{pid.replace('.', '_')}", [])


def find_part(node, part_id):
    """The structure node of leaf ``part_id`` ("1.2"), or None."""
    try:
        path = [int(p) for p in part_id.split(".")]
    except ValueError:
        return None
    if not node[N.CHILDREN]:
        return node if path == [1] else None
    for i in path:
        if not node[N.CHILDREN] or not 1 <= i <= len(node[N.CHILDREN]):
            return None
        node = node[N.CHILDREN][i - 1]
    return None if node[N.CHILDREN] else node


def _inline_media(t):
    return t.startswith(("image/", "audio/", "video/"))


def body_lists(root):
    """``(textBody, htmlBody, attachments)`` per RFC 8621 section 4.1.4."""
    text, html, att = [], [], []

    def walk(parts, mtype, in_alt, html_body, text_body):
        text_len = len(text_body) if text_body is not None else -1
        html_len = len(html_body) if html_body is not None else -1
        for i, part in enumerate(parts):
            t = part.type
            is_multi = t.startswith("multipart/")
            inline = (part.disposition != "attachment"
                      and (t in ("text/plain", "text/html") or _inline_media(t))
                      and (i == 0 or (mtype != "related" and (_inline_media(t) or not part.name))))
            if is_multi:
                sub = t.split("/", 1)[1]
                walk(part.sub_parts, sub, in_alt or sub == "alternative", html_body, text_body)
            elif inline:
                if mtype == "alternative":
                    if t == "text/plain":
                        text_body.append(part)
                    elif t == "text/html":
                        html_body.append(part)
                    else:
                        att.append(part)
                    continue
                elif in_alt:
                    if t == "text/plain":
                        html_body = None
                    if t == "text/html":
                        text_body = None
                if text_body is not None:
                    text_body.append(part)
                if html_body is not None:
                    html_body.append(part)
                if (text_body is None or html_body is None) and _inline_media(t):
                    att.append(part)
            else:
                att.append(part)
        if mtype == "alternative" and text_body is not None and html_body is not None:
            if text_len == len(text_body) and html_len != len(html_body):
                text_body.extend(html_body[html_len:])
            if html_len == len(html_body) and text_len != len(text_body):
                html_body.extend(text_body[text_len:])

    if root.type.startswith("multipart/"):
        walk(root.sub_parts, root.type.split("/", 1)[1],
             root.type == "multipart/alternative", html, text)
    else:
        walk([root], "mixed", False, html, text)
    return text, html, att


def part_json(data, part, properties):
    node = part.node
    out = {}
    for prop in properties:
        if prop == "partId":
            out[prop] = part.part_id
        elif prop == "blobId":
            out[prop] = part.blob_id
        elif prop == "size":
            out[prop] = len(decoded_bytes(data, node)) if part.part_id else 0
        elif prop == "headers":
            out[prop] = [{"name": n, "value": v}
                         for n, v in raw_headers(data, node[N.START], node[N.BODY_START])]
        elif prop == "name":
            out[prop] = part.name
        elif prop == "type":
            out[prop] = part.type
        elif prop == "charset":
            out[prop] = charset_of(node) if part.part_id else None
        elif prop == "disposition":
            out[prop] = part.disposition
        elif prop == "cid":
            cid = node[N.FIELDS].get("id")
            out[prop] = mime.header_text(cid).strip().strip("<>") if cid else None
        elif prop == "language":
            lang = node[N.FIELDS].get("language")
            out[prop] = [mime.header_text(x).strip() for x in lang.split(",") if x.strip()] \
                if lang else None
        elif prop == "location":
            loc = node[N.FIELDS].get("location")
            out[prop] = mime.header_text(loc) if loc else None
        elif prop == "subParts":
            if part.part_id is None:
                out[prop] = [part_json(data, p, properties) for p in part.sub_parts]
        elif prop.startswith("header:"):
            name, form, all_ = parse_header_property(prop)
            out[prop] = header_values(raw_headers(data, node[N.START], node[N.BODY_START]),
                                      name, form, all_)
    return out


# --- building messages ---------------------------------------------------------

class BuildError(ValueError):
    """A create request that cannot become a message; ``properties`` names the
    culprits, ``missing_blob`` the blob id it named that does not exist."""

    def __init__(self, description, properties=(), missing_blob=None):
        super().__init__(description)
        self.properties = list(properties)
        self.missing_blob = missing_blob


def _addresses(value, prop):
    if value is None:
        return None
    if not isinstance(value, list):
        raise BuildError(f"{prop} must be a list of addresses", [prop])
    out = []
    for a in value:
        if not isinstance(a, dict) or not isinstance(a.get("email"), str) \
                or not isinstance(a.get("name") or "", str):
            raise BuildError(f"{prop} has an invalid address", [prop])
        try:
            out.append(Address(display_name=a.get("name") or "", addr_spec=a["email"]))
        except (ValueError, IndexError, TypeError) as exc:
            raise BuildError(f"{prop}: {exc}", [prop]) from None
    return out


ADDRESS_HEADERS = {"from": "From", "to": "To", "cc": "Cc", "bcc": "Bcc",
                   "replyTo": "Reply-To", "sender": "Sender"}


def build_message(props, blob_reader, hostname):
    """RFC 5322 bytes for an Email/set create. ``blob_reader(blob_id)`` returns
    bytes or raises KeyError; raises BuildError."""
    msg = EmailMessage(policy=policy.SMTP)
    body_values = props.get("bodyValues") or {}
    if not isinstance(body_values, dict):
        raise BuildError("bodyValues must be an object", ["bodyValues"])
    if props.get("bodyStructure") is not None and any(
            props.get(k) is not None for k in ("textBody", "htmlBody", "attachments")):
        raise BuildError("bodyStructure excludes textBody, htmlBody and attachments",
                         ["bodyStructure"])
    for k, v in body_values.items():
        if not isinstance(v, dict) or not isinstance(v.get("value"), str) \
                or v.get("isTruncated") or v.get("isEncodingProblem"):
            raise BuildError(f"bodyValues/{k} is invalid", ["bodyValues"])

    if props.get("bodyStructure") is not None:
        _fill(msg, props["bodyStructure"], body_values, blob_reader, "bodyStructure")
    else:
        _fill_lists(msg, props, body_values, blob_reader)

    for prop, hname in ADDRESS_HEADERS.items():
        addrs = _addresses(props.get(prop), prop)
        if addrs:
            _set(msg, hname, addrs)
    subject = props.get("subject")
    if subject is not None:
        if not isinstance(subject, str):
            raise BuildError("subject must be a string", ["subject"])
        _set(msg, "Subject", subject)
    sent = props.get("sentAt")
    try:
        when = parse_utc_date(sent) if sent is not None else None
    except ValueError:
        raise BuildError("sentAt is not a date", ["sentAt"]) from None
    _set(msg, "Date", email.utils.formatdate(when, localtime=False))
    for prop, hname in (("messageId", "Message-ID"), ("inReplyTo", "In-Reply-To"),
                        ("references", "References")):
        ids = props.get(prop)
        if ids is None:
            continue
        if not isinstance(ids, list) or not all(isinstance(i, str) and i and " " not in i
                                                 and "<" not in i for i in ids):
            raise BuildError(f"{prop} must be a list of message ids", [prop])
        _set(msg, hname, " ".join(f"<{i}>" for i in ids))
    if props.get("messageId") is None:
        _set(msg, "Message-ID", email.utils.make_msgid(domain=hostname or "localhost"))
    for h in props.get("headers") or []:
        if not isinstance(h, dict) or not isinstance(h.get("name"), str) \
                or not isinstance(h.get("value"), str):
            raise BuildError("headers must be a list of {name, value}", ["headers"])
        _raw(msg, h["name"], h["value"])
    for key, value in props.items():
        if key.startswith("header:"):
            try:
                name, form, all_ = parse_header_property(key)
            except InvalidHeaderProperty:
                raise BuildError(f"{key} is not a header property", [key]) from None
            for v in (value if all_ else [value]):
                _raw(msg, name, _unparse(v, form, key))
    if "MIME-Version" not in msg:
        msg["MIME-Version"] = "1.0"
    try:
        return msg.as_bytes(policy=policy.SMTP.clone(max_line_length=998))
    except (ValueError, TypeError, UnicodeError) as exc:
        raise BuildError(f"cannot build the message: {exc}") from None


def _set(msg, name, value):
    del msg[name]
    try:
        msg[name] = value
    except (ValueError, TypeError, IndexError) as exc:
        raise BuildError(f"{name}: {exc}", [name]) from None


def _raw(msg, name, value):
    if not re.fullmatch(r"[!-9;-~]+", name) or "\n" in value.replace("\r\n ", "").replace("\r\n\t", ""):
        raise BuildError(f"header {name} is invalid", ["headers"])
    del msg[name]
    msg[name] = value.strip()


def _unparse(value, form, key):
    if form in ("asRaw", "asText"):
        if not isinstance(value, str):
            raise BuildError(f"{key} must be a string", [key])
        return value
    if form == "asAddresses":
        return ", ".join(str(a) for a in _addresses(value, key))
    if form == "asGroupedAddresses":
        if not isinstance(value, list):
            raise BuildError(f"{key} must be a list", [key])
        out = []
        for g in value:
            addrs = _addresses((g or {}).get("addresses"), key) or []
            out.append(str(Group(g.get("name"), addrs)) if g.get("name") else
                       ", ".join(str(a) for a in addrs))
        return ", ".join(out)
    if form in ("asMessageIds",):
        return " ".join(f"<{i}>" for i in value or [])
    if form == "asDate":
        try:
            return email.utils.formatdate(parse_utc_date(value))
        except ValueError:
            raise BuildError(f"{key} is not a date", [key]) from None
    if form == "asURLs":
        return ", ".join(f"<{u}>" for u in value or [])
    raise BuildError(f"{key} has an unknown form", [key])


def _content(part, body_values, blob_reader, where):
    """``(maintype, subtype, content, charset)`` of a leaf EmailBodyPart."""
    if not isinstance(part, dict):
        raise BuildError(f"{where} must be an EmailBodyPart", [where])
    ctype = part.get("type") or "text/plain"
    if not isinstance(ctype, str) or "/" not in ctype:
        raise BuildError(f"{where}/type is invalid", [where])
    maintype, subtype = ctype.lower().split("/", 1)
    if part.get("partId") is not None:
        if part.get("blobId") is not None or part["partId"] not in body_values:
            raise BuildError(f"{where}: partId must name a bodyValue", [where])
        if maintype != "text":
            raise BuildError(f"{where}: a bodyValue part must be text/*", [where])
        return maintype, subtype, body_values[part["partId"]]["value"]
    if isinstance(part.get("blobId"), str):
        try:
            data = blob_reader(part["blobId"])
        except KeyError:
            raise BuildError(f"{where}: blob {part['blobId']} not found", [where],
                             missing_blob=part["blobId"]) from None
        return maintype, subtype, data
    raise BuildError(f"{where} needs a partId or a blobId", [where])


def _leaf(part, body_values, blob_reader, where):
    maintype, subtype, content = _content(part, body_values, blob_reader, where)
    leaf = EmailMessage(policy=policy.SMTP)
    if isinstance(content, str):
        leaf.set_content(content, subtype=subtype, charset=part.get("charset") or "utf-8",
                         cte="quoted-printable" if any(ord(c) > 127 for c in content) or
                         max((len(x) for x in content.splitlines()), default=0) > 900 else None)
    else:
        leaf.set_content(content, maintype=maintype, subtype=subtype)
        del leaf["Content-Disposition"]
    disp = part.get("disposition")
    if disp or part.get("name"):
        leaf.add_header("Content-Disposition", disp or "attachment",
                        **({"filename": part["name"]} if part.get("name") else {}))
    if part.get("cid"):
        leaf["Content-ID"] = f"<{part['cid']}>"
    for h in part.get("headers") or []:
        if isinstance(h, dict) and isinstance(h.get("name"), str) and \
                not h["name"].lower().startswith("content-"):
            _raw(leaf, h["name"], str(h.get("value", "")))
    return leaf


def _fill(msg, part, body_values, blob_reader, where, depth=0):
    if depth > 20 or not isinstance(part, dict):
        raise BuildError(f"{where} is invalid", [where])
    ctype = (part.get("type") or "").lower()
    if ctype.startswith("multipart/"):
        subs = part.get("subParts")
        if not isinstance(subs, list) or not subs:
            raise BuildError(f"{where}: a multipart needs subParts", [where])
        msg.set_type(ctype)
        del msg["MIME-Version"]
        for i, sub in enumerate(subs):
            child = EmailMessage(policy=policy.SMTP)
            _fill(child, sub, body_values, blob_reader, f"{where}/subParts/{i}", depth + 1)
            msg.attach(child)
        return
    leaf = _leaf(part, body_values, blob_reader, where)
    for k, v in leaf.items():
        msg[k] = v
    msg.set_payload(leaf.get_payload())


def _fill_lists(msg, props, body_values, blob_reader):
    text = props.get("textBody") or []
    html = props.get("htmlBody") or []
    att = props.get("attachments") or []
    for key, val in (("textBody", text), ("htmlBody", html), ("attachments", att)):
        if not isinstance(val, list) or (key != "attachments" and len(val) > 1):
            raise BuildError(f"{key} must be a list (of at most one part for bodies)", [key])
    bodies = []
    if text:
        bodies.append(_leaf(text[0], body_values, blob_reader, "textBody/0"))
    if html:
        bodies.append(_leaf(html[0], body_values, blob_reader, "htmlBody/0"))
    if not bodies:
        empty = EmailMessage(policy=policy.SMTP)
        empty.set_content("", charset="utf-8")
        bodies.append(empty)
    if len(bodies) == 2:
        main = EmailMessage(policy=policy.SMTP)
        main.set_type("multipart/alternative")
        for b in bodies:
            main.attach(b)
    else:
        main = bodies[0]
    if att:
        mixed = EmailMessage(policy=policy.SMTP)
        mixed.set_type("multipart/mixed")
        mixed.attach(main)
        for i, a in enumerate(att):
            mixed.attach(_leaf(a, body_values, blob_reader, f"attachments/{i}"))
        main = mixed
    for k, v in main.items():
        if k.lower() != "mime-version":
            msg[k] = v
    msg.set_payload(main.get_payload())
