"""Malformed messages that once stopped a delivery, and the property every
message must have: ``check(data)`` parses it as delivery does and computes
everything derived from the parse (stored JSON, search document, base
subject, JMAP body parts, body values and header forms, IMAP ENVELOPE and
BODYSTRUCTURE), asserting that nothing raises, that every string bound for
the database or a JSON response is storable, and that structure offsets nest
inside the message. Shared by the unit, protocol and fuzz tests."""

import json

from roost.protocols.imap import fetch as imap_fetch
from roost.protocols.jmap import bodies
from roost.storage import mime, search_text


def _msg(*head, body=b"body\r\n"):
    return b"".join(h + b"\r\n" for h in (b"From: a@example.net", *head)) + b"\r\n" + body


# name -> message; each one made ParsedMessage (or a derived value) fail before
MALFORMED = {
    "idna body charset": _msg(b"Content-Type: text/plain; charset=idna", body=b"x" * 80 + b"\r\n"),
    "punycode body charset": _msg(b"Content-Type: text/plain; charset=punycode", body=b"a b\r\n"),
    "undefined charset": _msg(b"Content-Type: text/plain; charset=undefined"),
    "NUL in a charset name": _msg(b'Content-Type: text/plain; charset="ut\x00f-8"'),
    "8-bit charset name": _msg(b'Content-Type: text/plain; charset="utf\xff-8"'),
    "8-bit charset in an encoded word": _msg(b"Subject: =?utf\xc3\xa9?Q?abc?="),
    "broken base64 in an encoded word": _msg(b"Subject: =?utf-8?B?=F?="),
    "idna charset of an RFC 2231 filename": _msg(
        b"Content-Type: application/octet-stream",
        b"Content-Disposition: attachment; filename*=idna''%ff%ff"),
    "RFC 2231 boundary in idna": _msg(
        b"Content-Type: multipart/mixed; boundary*=idna''b", body=b"--b\r\n\r\nx\r\n--b--\r\n"),
    "RFC 2231 section number of 5000 digits": _msg(
        b"Content-Type: text/plain; name*" + b"9" * 5000 + b"=a"),
    "RFC 2231 section numbered with a superscript": _msg(
        "Content-Type: text/plain; name*\u00b2=a".encode()),
    "year of 20 digits": _msg(b"Date: Mon, 1 Jan 99999999999999999999 00:00:00 +0000"),
    "year 10000 in UTC": _msg(b"Date: Fri, 31 Dec 9999 23:59:59 -0100"),
    "HTML reference of 5000 digits": _msg(
        b"Content-Type: text/html", body=b"<p>&#" + b"9" * 5000 + b";</p>\r\n"),
    "8-bit Message-ID and References": _msg(
        b"Message-ID: <\xff@example.net>", b"References: <\xfe@example.net>",
        b"In-Reply-To: <\xfd@example.net>"),
    "8-bit and NUL header values": _msg(b"Subject: caf\xe9 \x00 \xff", b"X-Thing: \xc3",
                                        b'Content-Type: text/plain; name="\xff"; charset=utf-8',
                                        b"Content-ID: <\xff>", b"Content-Location: \xfe",
                                        b"Content-Language: \xfd, en"),
    "NUL in an encoded word and the body": _msg(b"Subject: =?utf-8?Q?a=00b?=", body=b"a\x00b\r\n"),
}


def storable(value, where):
    """A string a database column or a JSON response can hold."""
    assert isinstance(value, str), where
    value.encode("utf-8")
    assert "\x00" not in value, where


def strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from strings(v)


def check_node(node, lo, hi, depth=0):
    assert depth <= mime.MAX_DEPTH + 1
    assert lo <= node[mime.START] <= node[mime.BODY_START] <= node[mime.END] <= hi, (node[:3], lo, hi)
    for child in node[mime.CHILDREN]:
        check_node(child, node[mime.BODY_START], node[mime.END], depth + 1)
    if node[mime.MESSAGE]:
        check_node(node[mime.MESSAGE][1], node[mime.BODY_START], node[mime.END], depth + 1)


def jmap_json(obj):
    """As the JMAP endpoint serialises a response."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


JMAP_PROPS = list(bodies.BODY_PART_PROPERTIES) + [
    "header:Subject:asText", "header:From:asAddresses", "header:X-Spam:asGroupedAddresses:all",
    "header:Date:asDate", "header:List-Post:asURLs", "header:References:asMessageIds"]


def check(data):
    """Parse ``data`` as delivery does and derive everything from it (see the
    module docstring); returns the ``ParsedMessage``."""
    p = mime.ParsedMessage(data)
    assert p.structure[mime.START] == 0
    check_node(p.structure, 0, len(data))
    for value in (json.dumps(p.envelope), json.dumps(p.structure), json.dumps(p.summary)):
        storable(value, "json")
    for s in strings(p.summary):
        storable(s, "summary")
    for s in (p.subject, p.preview, p.from_sort, p.to_sort, *p.text, *p.references,
              p.msgid or "", mime.base_subject(p.subject)):
        storable(s, "derived")
    assert len(p.preview) <= mime.PREVIEW_CHARS
    for value in search_text.document(p).values():
        storable(value, "search document")
    jmap_json(bodies.utc_date(p.sent_at))
    imap_fetch.envelope(p.envelope)
    imap_fetch.bodystructure(p.structure)
    imap_fetch.bodystructure(p.structure, True, utf8=True)
    converted = mime.binary_to_base64(data)      # APPEND of a literal8
    if converted is not None and converted is not data:
        assert b"\x00" not in converted
        check_node(mime.parse_structure(converted), 0, len(converted))
    root = bodies.part_tree(p.structure, "Bx")
    text, html, attachments = bodies.body_lists(root)
    jmap_json(bodies.part_json(data, root, JMAP_PROPS))
    for part in text + html + attachments:
        jmap_json(bodies.part_json(data, part, JMAP_PROPS))
        if part.node[mime.TYPE] == "text":
            jmap_json(bodies.text_value(data, part.node, 256))
            jmap_json(bodies.text_value(data, part.node))
    raw = bodies.raw_headers(data, 0, p.structure[mime.BODY_START])
    jmap_json(raw)
    for name in list(dict.fromkeys(n for n, _v in raw))[:10]:
        for form in bodies.FORMS:
            jmap_json(bodies.header_values(raw, name, form, True))
    return p
