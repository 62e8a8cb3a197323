"""The parse done once at delivery: addresses, parameters, structure offsets."""

import pathlib

import pytest

from roost.protocols.jmap import bodies
from roost.storage import mime
from tests.malformed import MALFORMED, check, jmap_json

CORPUS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "corpus"
ALL_EML = sorted(CORPUS.rglob("*.eml"))


@pytest.mark.parametrize("value, expected", [
    ("Mary Smith <mary@x.test>", [["Mary Smith", None, "mary", "x.test"]]),
    ("jdoe@example.org", [[None, None, "jdoe", "example.org"]]),
    ('"Giant; \\"Big\\" Box" <sysservices@example.net>',
     [['Giant; "Big" Box', None, "sysservices", "example.net"]]),
    ("Who? <one@y.test>, <boss@nil.test>",
     [["Who?", None, "one", "y.test"], [None, None, "boss", "nil.test"]]),
    ("A Group:Ed Jones <c@a.test>,joe@where.test;",
     [[None, None, "A Group", None], ["Ed Jones", None, "c", "a.test"],
      [None, None, "joe", "where.test"], [None, None, None, None]]),
    ("Undisclosed recipients:;", [[None, None, "Undisclosed recipients", None],
                                  [None, None, None, None]]),
    ("<@route.test,@other.test:user@host.test>", [[None, "@route.test,@other.test", "user", "host.test"]]),
    ("pete(his account)@silly.test (Pete)", [["Pete", None, "pete", "silly.test"]]),
    ("localonly", [[None, None, "localonly", ""]]),
    ("", []),
])
def test_address_lists(value, expected):
    assert mime.parse_addresses(value) == expected


def test_parameters_with_rfc2231_continuations_and_charset():
    head, params = mime.split_params(
        "attachment; filename*0*=utf-8''Gr%C3%BC%C3%9Fe; filename*1=\".txt\"; size=12")
    assert head == "attachment"
    assert mime.param(params, "filename") == "Grüße.txt"
    assert mime.param(params, "size") == "12"
    _head, params = mime.split_params('text/plain; charset="us-ascii" (comment); format=flowed')
    assert mime.param(params, "charset") == "us-ascii"
    assert mime.param(params, "format") == "flowed"


@pytest.mark.parametrize("subject, base", [
    ("Re: Hello", "hello"),
    ("Re: [list] Fwd: Hello (fwd)", "hello"),
    ("RE:re: Fwd:   spaced   out", "spaced out"),
    ("[Fwd: inner]", "inner"),
    ("Plain", "plain"),
])
def test_base_subject(subject, base):
    assert mime.base_subject(subject) == base


def test_encoded_words_decode():
    assert mime.decode_words("=?UTF-8?B?w6TDtsO8?= and =?ISO-8859-1?Q?caf=E9?=") == "äöü and café"
    assert mime.decode_words("=?bogus-charset?Q?x?=")  # never raises


MULTIPART = (b"From: a@b\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
             b"preamble\r\n--XX\r\nContent-Type: text/plain\r\n\r\nhello\r\nworld\r\n"
             b"--XX\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n"
             b"--XX--\r\nepilogue\r\n")


def test_multipart_offsets_point_into_the_raw_bytes():
    node = mime.parse_structure(MULTIPART)
    assert (node[mime.TYPE], node[mime.SUBTYPE]) == ("multipart", "mixed")
    text, message = node[mime.CHILDREN]
    assert MULTIPART[text[mime.BODY_START]:text[mime.END]] == b"hello\r\nworld"
    assert text[mime.LINES] == 2
    assert MULTIPART[message[mime.BODY_START]:message[mime.END]] == b"Subject: inner\r\n\r\ninner body"
    envelope, inner = message[mime.MESSAGE]
    assert envelope["subject"] == "inner"
    assert MULTIPART[inner[mime.BODY_START]:inner[mime.END]] == b"inner body"


def test_missing_close_delimiter_and_missing_boundary():
    data = b"Content-Type: multipart/mixed; boundary=b\n\n--b\n\npart one\n--b\n\npart two\n"
    node = mime.parse_structure(data)
    assert [data[c[mime.BODY_START]:c[mime.END]] for c in node[mime.CHILDREN]] == \
        [b"part one", b"part two\n"]
    node = mime.parse_structure(b"Content-Type: multipart/mixed\n\nno boundary at all\n")
    assert (node[mime.TYPE], node[mime.SUBTYPE], node[mime.CHILDREN]) == ("text", "plain", [])


def test_deep_nesting_is_bounded():
    data = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(200))
    node = mime.parse_structure(data + b"\nend\n")
    depth = 0
    while node[mime.CHILDREN]:
        node = node[mime.CHILDREN][0]
        depth += 1
    assert depth <= mime.MAX_DEPTH


def _check_node(node, lo, hi):
    assert lo <= node[mime.START] <= node[mime.BODY_START] <= node[mime.END] <= hi
    for child in node[mime.CHILDREN]:
        _check_node(child, node[mime.BODY_START], node[mime.END])
    if node[mime.MESSAGE]:
        _check_node(node[mime.MESSAGE][1], node[mime.BODY_START], node[mime.END])


@pytest.mark.parametrize("path", ALL_EML, ids=lambda p: str(p.relative_to(CORPUS)))
def test_every_corpus_message_parses_into_nested_ranges(path):
    data = path.read_bytes()
    parsed = mime.ParsedMessage(data)
    _check_node(parsed.structure, 0, len(data))
    assert parsed.structure[mime.START] == 0
    assert isinstance(parsed.preview, str) and len(parsed.preview) <= mime.PREVIEW_CHARS


def test_corpus_envelope_and_summary():
    parsed = mime.ParsedMessage((CORPUS / "mail-rb/rfc2822/example03.eml").read_bytes())
    env = parsed.envelope
    assert env["from"] == [["Joe Q. Public", None, "john.q.public", "example.com"]]
    assert [a[2] for a in env["to"]] == ["mary", "jdoe", "one"]
    assert env["cc"][1][0] == 'Giant; "Big" Box'
    assert env["message-id"] == "<5678.21-Nov-1997@example.com>"
    assert parsed.msgid == "5678.21-Nov-1997@example.com"
    assert parsed.summary["to"][0] == {"name": "Mary Smith", "email": "mary@x.test"}
    assert parsed.preview == "Hi everyone."


def test_japanese_text_is_decoded_for_search_and_preview():
    parsed = mime.ParsedMessage((CORPUS / "mail-rb/multi_charset/japanese.eml").read_bytes())
    assert any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in parsed.subject + parsed.preview)


def test_header_block_ends_only_at_an_empty_line():
    # A white-space-only line and a line without a colon inside the header
    # block end nothing: every real field after them is still a header.
    data = (b"Received: from a by b;\r\n \t\r\n\tWed, 1 Jan 2025 00:00:00 +0000\r\n"
            b"this line has no colon\r\n"
            b"From: Ann <ann@example.test>\r\nSubject: kept\r\n"
            b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n"
            b"--zz\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--zz--\r\n")
    parsed = mime.ParsedMessage(data)
    assert parsed.envelope["subject"] == "kept"
    assert parsed.envelope["from"] == [["Ann", None, "ann", "example.test"]]
    assert parsed.structure[mime.TYPE:mime.SUBTYPE + 1] == ["multipart", "mixed"]
    assert data[parsed.structure[mime.BODY_START]:].startswith(b"--zz\r\n")
    assert [n for n, _v in parsed.headers] == ["Received", "From", "Subject", "Content-Type"]
    head = data[:parsed.structure[mime.BODY_START]]
    from roost.protocols.imap.fetch import header_fields
    assert header_fields(head, ["Subject"], False) == b"Subject: kept\r\n\r\n"
    # No empty line at all: everything is header, the body is empty (the
    # missing line is not guessed at, so a part's fields are never its body).
    data = (b"Content-Type: multipart/mixed; boundary=b\n\n--b\n"
            b"Content-Type: application/zip\nContent-Transfer-Encoding: base64\n"
            b"UEsDBAo=\n--b--\n")
    (part,) = mime.parse_structure(data)[mime.CHILDREN]
    assert part[mime.BODY_START] == part[mime.END]
    assert part[mime.TYPE:mime.SUBTYPE + 1] == ["application", "zip"]
    data = b"From someone Mon Jan  1 00:00:00 2024\nSubject: x\nX-Odd : spaced\n\nbody\n"
    node = mime.parse_structure(data)
    assert data[node[mime.BODY_START]:] == b"body\n"
    assert mime.header(mime.parse_headers(data, 0, node[mime.BODY_START]), "x-odd") == "spaced"
    # An empty header block: the body starts at once.
    assert mime.header_end(b"\r\nbody", 0, 6) == 2


@pytest.mark.parametrize("encoding, body, expected", [
    ("quoted-printable", b"caf=C3=A9 soft=\r\nbreak", "café softbreak"),
    ("base64", b"Y2Fmw6k=\r\n", "café"),
    ("8bit", "café".encode(), "café"),
    ("x-uuencode", b"begin 644 f\n$8V%F\\0``\n`\nend\n", None),
])
def test_text_bodies_decode(encoding, body, expected):
    data = (f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
            .encode() + body)
    text = mime.decode_body(data, mime.parse_structure(data))
    assert isinstance(text, str)
    if expected is not None:
        assert text == expected


# --- malformed input degrades, never raises ------------------------------------

@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_messages_parse_and_everything_derives(name):
    check(MALFORMED[name])


@pytest.mark.parametrize("name, codec", [
    ("utf-8", "utf-8"), ("UTF8", "utf-8"), (" \"iso-8859-1\" ", "iso8859-1"),
    ("ks_c_5601-1987", "euc_kr"), ("utf-8*en", "utf-8"), ("utf-7", "utf-7"),
    ("idna", None), ("punycode", None), ("undefined", None), ("rot13", None), ("rot_13", None),
    ("uu", None), ("uu_codec", None), ("base64_codec", None), ("zlib_codec", None),
    ("bz2_codec", None), ("hex", None), ("quopri_codec", None), ("unicode_escape", None),
    ("raw_unicode_escape", None), ("charmap", None), ("unknown-8bit", None), ("", None),
    ("ut\x00f-8", None), ("utf\udcff-8", None), ("utf-\u00e9", None), ("a" * 100, None),
    ("../utf-8", None), (None, None),
])
def test_only_real_text_charsets_are_looked_up(name, codec):
    assert mime.charset_codec(name) == codec


def test_decode_text_falls_back_and_replaces():
    assert mime.decode_text(b"caf\xc3\xa9", "utf-8") == ("café", False)
    assert mime.decode_text(b"caf\xe9", "iso-8859-1") == ("café", False)
    assert mime.decode_text(b"caf\xc3\xa9", "idna") == ("café", True)     # fallback: UTF-8
    assert mime.decode_text(b"caf\xe9", "utf-8") == ("caf\ufffd", True)
    assert mime.decode_text(b"a\x00b", None) == ("a\ufffdb", True)
    assert mime.decode_text(b"+2AA-", "utf-7") == ("\ufffd", True)       # a lone surrogate


def test_encoded_words_degrade():
    # adjacent words of one charset decode together: a character split between them survives
    assert mime.decode_words("=?utf-8?B?ww==?= =?UTF-8?Q?=A4?=") == "ä"
    assert mime.decode_words("=?utf-8?q?a?=  =?iso-8859-1?q?_b?= c") == "a b c"
    assert mime.decode_words("=?utf-8?B?=F?=") == ""                      # broken base64
    assert mime.decode_words("=?utf-8?B?w6Q?=") == "ä"                    # missing padding
    assert mime.decode_words("=?utf\udcc3\udca9?Q?abc?=") == "abc"        # 8-bit charset name
    assert mime.decode_words("=?idna?Q?caf=C3=A9?=") == "café"
    assert mime.decode_words("=?utf-8?Q?a=00b?=") == "a\ufffdb"
    assert mime.decode_words("raw caf\udcc3\udca9 and \udcff") == "raw café and \ufffd"
    assert mime.decode_words("=?x?Q?unterminated") == "=?x?Q?unterminated"


def test_rfc2231_sections_degrade():
    def value(header):
        return mime.param(mime.split_params(header)[1], "name")
    assert value("x; name*1=b; name*0=a") == "ab"                          # out of order
    assert value("x; name*0=a; name*0=z; name*1=b") == "ab"                # repeated section
    assert value("x; name*0=a; name*x=z; name*\u00b2=z; name*1=b") == "ab"  # bad section names
    assert value("x; name*" + "9" * 5000 + "=a") is None
    assert value("x; name*=idna''%ff%ff") == "\ufffd\ufffd"
    assert value("x; name*=bogus''caf%C3%A9") == "café"
    assert value("x; name*=utf-8'en'%") == "%"


def test_header_values_with_8bit_and_nul():
    p = mime.ParsedMessage(MALFORMED["8-bit Message-ID and References"])
    assert p.msgid == "\ufffd@example.net" and p.references == ["\ufffd@example.net"]
    # ENVELOPE keeps the raw bytes for IMAP; NUL is never among them
    p = mime.ParsedMessage(MALFORMED["8-bit and NUL header values"])
    assert mime.bytes_of(p.envelope["subject"]) == "caf\udce9 \ufffd \udcff".encode(
        "utf-8", "surrogateescape")
    assert p.subject == "caf\ufffd \ufffd \ufffd"


def test_dates_out_of_range_are_no_dates():
    for value in ("Mon, 1 Jan 99999999999999999999 00:00:00 +0000",
                  "Fri, 31 Dec 9999 23:59:59 -0100", "Mon, 1 Jan 2000 99:99:99 +0000"):
        assert mime.parse_datetime(value) is None and mime.parse_date(value) is None
    assert mime.parse_date("Fri, 31 Dec 9999 23:59:59 +0100") == 253402297199.0


def test_html_to_text():
    assert mime.html_to_text("<p>a<b>b</b></p><script>x<y</script><STYLE a=1>z</style >c").split() \
        == ["a", "b", "c"]
    assert mime.html_to_text("a<script>never closed").split() == ["a"]
    assert mime.html_to_text("1 < 2 and 3 > 2 &amp; &#x41;").split() == ["1", "<", "2", "and", "3",
                                                                            ">", "2", "&", "A"]
    assert mime.html_to_text("&#" + "9" * 5000 + ";") == "\ufffd"


def test_header_counts_parts_and_depth_are_bounded():
    data = b"".join(b"X-H%d: v\r\n" % i for i in range(mime.MAX_HEADERS + 50)) + b"Subject: late\r\n\r\nx"
    p = mime.ParsedMessage(data)
    assert len(p.headers) == mime.MAX_HEADERS and p.subject == ""
    data = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + b"--b\r\n\r\nx\r\n" * 8000
    nodes = mime.parse_structure(data)[mime.CHILDREN]
    assert len(nodes) == mime.MAX_PARTS - 1
    _check_node(mime.parse_structure(data), 0, len(data))
    # the multipart at the depth limit is read as text, not as a multipart without parts
    data = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(80))
    node = mime.parse_structure(data)
    while node[mime.CHILDREN]:
        node = node[mime.CHILDREN][0]
    assert (node[mime.TYPE], node[mime.SUBTYPE]) == ("text", "plain")


def test_a_subject_of_many_prefixes():
    assert mime.base_subject("Re: " * 100000 + "x") == ""   # only MAX_SUBJECT characters count
    assert mime.base_subject("Re: " * 100 + "x" + " (fwd)" * 3) == "x"


def test_the_minimal_parse():
    data = b"Subject: s\r\n\r\nbody\r\n"
    p = mime.ParsedMessage.minimal(data)
    assert p.structure == [0, 0, len(data), "text", "plain", [], p.structure[mime.FIELDS], 3, [], None]
    assert p.envelope == mime.envelope([]) and p.subject == "" and p.msgid is None
    assert p.content_hash == mime.ParsedMessage(data).content_hash


# --- JMAP views of malformed messages (protocols/jmap/bodies.py) --------------------

def test_jmap_text_values_with_hostile_charsets():
    for charset in (b"idna", b"undefined", b'"ut\x00f-8"', b'"utf\xff-8"', b"rot13", b"zlib_codec"):
        data = b"Content-Type: text/plain; charset=" + charset + b"\r\n\r\ncaf\xc3\xa9\r\n"
        node = mime.parse_structure(data)
        value, problem, truncated = bodies.text_value(data, node)
        assert (value, problem, truncated) == ("café\n", True, False), charset
        jmap_json(bodies.charset_of(node))
    data = b"Content-Type: text/plain; charset=utf-8\r\n\r\nok\r\n"
    assert bodies.text_value(data, mime.parse_structure(data)) == ("ok\n", False, False)


def test_jmap_raw_headers_replace_what_is_not_utf8():
    data = MALFORMED["8-bit and NUL header values"]
    headers = dict(bodies.raw_headers(data, 0, data.index(b"\r\n\r\n") + 4))
    assert headers["Subject"] == " caf\ufffd \ufffd \ufffd" and headers["X-Thing"] == " \ufffd"
    node = mime.parse_structure(data)
    part = bodies.part_tree(node, "B")
    out = bodies.part_json(data, part, ["cid", "location", "language", "name", "charset"])
    assert out == {"cid": "\ufffd", "location": "\ufffd", "language": ["\ufffd", "en"],
                   "name": "\ufffd", "charset": "utf-8"}
    assert bodies.date_value("Fri, 31 Dec 9999 23:59:59 -0100") is None
