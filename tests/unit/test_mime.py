"""The parse done once at delivery: addresses, parameters, structure offsets."""

import pathlib

import pytest

from roost.storage import mime

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


def test_header_block_ends_at_the_first_line_that_is_not_a_header():
    data = (b"Content-Type: multipart/mixed; boundary=b\n\n--b\n"
            b"Content-Type: application/zip\nContent-Transfer-Encoding: base64\n"
            b"UEsDBAo=\n--b--\n")
    node = mime.parse_structure(data)
    (part,) = node[mime.CHILDREN]
    assert data[part[mime.BODY_START]:part[mime.END]] == b"UEsDBAo="
    assert mime.decode_body(data, part) == b"PK\x03\x04\n"
    data = b"From someone Mon Jan  1 00:00:00 2024\nSubject: x\nX-Odd : spaced\n\nbody\n"
    node = mime.parse_structure(data)
    assert data[node[mime.BODY_START]:] == b"body\n"
    assert mime.header(mime.parse_headers(data, 0, node[mime.BODY_START]), "x-odd") == "spaced"


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
