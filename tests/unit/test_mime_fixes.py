"""Parsing fixes of issue 13, each shown by a message written for it: boundary
delimiters by prefix, RFC 2231 parameters in BODYSTRUCTURE, quoted-printable
per RFC 2045 section 6.7, BINARY encodings, and what search indexes."""

import pytest

from roost.protocols.imap import fetch as render
from roost.storage import mime
from roost.storage import search_text as st

CRLF = b"\r\n"


def msg(*lines):
    return CRLF.join(lines) + CRLF


# --- boundaries -----------------------------------------------------------------

def test_boundary_delimiter_is_recognised_by_prefix():
    data = msg(b"Content-Type: multipart/mixed; boundary=frontier",
               b"",
               b"preamble",
               b"--frontier  this text after the boundary is ignored",
               b"Content-Type: text/plain",
               b"",
               b"one",
               b"--frontier\tmore",
               b"Content-Type: text/plain",
               b"",
               b"two",
               b"--frontier-- and the close delimiter too",
               b"epilogue")
    node = mime.parse_structure(data)
    parts = node[mime.CHILDREN]
    assert [data[p[mime.BODY_START]:p[mime.END]] for p in parts] == [b"one", b"two"]
    # The old rule (only white space after the boundary) saw no delimiter at
    # all and made the whole body one text part.
    assert len(parts) == 2


def test_a_longer_nested_boundary_is_not_taken_for_the_outer_one():
    data = msg(b"Content-Type: multipart/mixed; boundary=abc",
               b"",
               b"--abc",
               b"Content-Type: multipart/alternative; boundary=abcdef",
               b"",
               b"--abcdef",
               b"Content-Type: text/plain",
               b"",
               b"inner plain",
               b"--abcdef",
               b"Content-Type: text/html",
               b"",
               b"<p>inner html</p>",
               b"--abcdef--",
               b"--abc",
               b"Content-Type: text/plain",
               b"",
               b"outer second",
               b"--abc--")
    node = mime.parse_structure(data)
    outer = node[mime.CHILDREN]
    assert [(p[mime.TYPE], p[mime.SUBTYPE]) for p in outer] == [("multipart", "alternative"),
                                                               ("text", "plain")]
    inner = outer[0][mime.CHILDREN]
    assert [data[p[mime.BODY_START]:p[mime.END]] for p in inner] == [b"inner plain",
                                                                    b"<p>inner html</p>"]
    assert data[outer[1][mime.BODY_START]:outer[1][mime.END]] == b"outer second"


# --- RFC 2231 in BODYSTRUCTURE ------------------------------------------------------

RFC2231 = msg(b"Content-Type: multipart/mixed; boundary=b",
              b"",
              b"--b",
              b"Content-Type: application/pdf;",
              b" name*0*=utf-8'de'Gr%C3%BC%C3%9Fe;",
              b" name*1*=%20aus%20K%C3%B6ln;",
              b' name*2=".pdf"',
              b"Content-Disposition: attachment;",
              b" filename*0*=iso-8859-1'fr'%E9t%E9;",
              b' filename*1=" 2025.pdf"; size=42',
              b"Content-Transfer-Encoding: base64",
              b"",
              b"JVBERg==",
              b"--b",
              b"Content-Type: text/plain; charset*=us-ascii'en'utf-8;",
              b" title*=us-ascii'en-us'This%20is%20%2A%2A%2Afun%2A%2A%2A",
              b"",
              b"text",
              b"--b--")


def test_rfc2231_parameters_are_merged_and_decoded_in_bodystructure():
    node = mime.parse_structure(RFC2231)
    pdf, text = node[mime.CHILDREN]
    assert mime.merged_params(pdf[mime.PARAMS]) == [["name", "Grüße aus Köln.pdf", True]]
    out = render.bodystructure(node, True, utf8=False)
    # Without UTF8=ACCEPT a non-ASCII value goes as RFC 2047 words of UTF-8.
    name = render.encoded_words("Grüße aus Köln.pdf").encode()
    assert b'("NAME" "' not in out and b'("name" "' + name + b'")' in out
    assert mime.decode_words(name.decode()) == "Grüße aus Köln.pdf"
    fname = render.encoded_words("été 2025.pdf").encode()
    assert b'("ATTACHMENT" ("filename" "' + fname + b'" "size" "42"))' in out
    assert b"name*" not in out and b"filename*" not in out and b"%C3" not in out
    # An ASCII value is sent as it decodes; charset* names the charset.
    assert b'("charset" "utf-8" "title" "This is ***fun***")' in out
    # With UTF8=ACCEPT the decoded value goes as UTF-8.
    out8 = render.bodystructure(node, True, utf8=True)
    assert '("name" "Grüße aus Köln.pdf")'.encode() in out8
    # The attachment name JMAP and search use is the decoded one.
    assert mime.filename(pdf) == "été 2025.pdf"


def test_rfc2231_form_wins_over_the_plain_fallback():
    _h, params = mime.split_params('attachment; filename="fallback.txt"; '
                                   "filename*=utf-8''%E2%82%AC%20rate.txt")
    assert mime.param(params, "filename") == "€ rate.txt"
    assert mime.merged_params(params) == [["filename", "€ rate.txt", True]]


def test_merged_parameters_are_bounded():
    params = [[f"p{i}*{j}", "x"] for i in range(500) for j in range(3)]
    merged = mime.merged_params(params)
    assert len(merged) == mime.MAX_PARAMS and merged[0] == ["p0", "xxx", True]


# --- quoted-printable -----------------------------------------------------------------

@pytest.mark.parametrize("body, decoded", [
    (b"trailing space   \r\nnext", b"trailing space\r\nnext"),      # rule 3: dropped
    (b"tab\t\r\nx", b"tab\r\nx"),
    (b"soft= \r\nbreak", b"softbreak"),                              # "=" + white space + EOL
    (b"soft=\t \nbreak", b"softbreak"),
    (b"soft=\r\nbreak", b"softbreak"),
    (b"caf=C3=A9 =3D", "café =".encode()),
    (b"lower =c3=a9", "lower é".encode()),
    (b"a=ZZ b=4", b"a=ZZ b=4"),                                       # not hex: kept
    (b"end=", b"end"),
    (b"end=  ", b"end"),
    (b"keep  inner  space", b"keep  inner  space"),
])
def test_quoted_printable_rule_3(body, decoded):
    assert mime.decode_qp(body) == decoded


def test_quoted_printable_decoder_is_linear_on_white_space():
    body = (b" " * 200_000 + b"x") * 2
    assert mime.decode_qp(body) == body      # white space not at a line end stays


QP = msg(b"Content-Type: multipart/mixed; boundary=q",
         b"",
         b"--q",
         b"Content-Type: text/plain; charset=utf-8",
         b"Content-Transfer-Encoding: quoted-printable",
         b"",
         b"Gr=C3=BC=C3=9Fe   ",
         b"soft=  ",
         b"ly joined",
         b"--q--")


def test_binary_and_search_use_the_fixed_decoder():
    node = mime.parse_structure(QP)
    decoded = render.binary_bytes(QP, node, (1,))
    assert decoded == "Grüße\r\nsoftly joined".encode()
    assert mime.decode_body(QP, node[mime.CHILDREN][0]) == "Grüße\r\nsoftly joined"
    assert "softly" in mime.ParsedMessage(QP).text[1]


def test_binary_encoding_is_described_as_8bit():
    data = msg(b"Content-Type: text/plain", b"Content-Transfer-Encoding: binary", b"", b"x")
    out = render.bodystructure(mime.parse_structure(data))
    assert b'"8BIT"' in out and b"BINARY" not in out


def test_no_nul_keeps_the_length():
    assert render.no_nul(b"a\0b") == b"a\x80b"
    assert render.no_nul(b"plain") == b"plain"


# --- search sees the whole message ------------------------------------------------------

WHOLE = msg(b"From: John (the boss) Smith <js@example.test>",
            b"To: \"Doe, Jane\" <jane@example.test>, pete(his account)@silly.test (Pete)",
            b"Subject: everything",
            b"Content-Type: multipart/mixed; boundary=w",
            b"",
            b"preamblewordalpha",
            b"--w",
            b"Content-Type: text/plain",
            b"",
            b"plainbodyword",
            b"--w",
            b"Content-Type: text/plain; name=notes.txt",
            b"Content-Disposition: attachment; filename=notes.txt",
            b"",
            b"attachedtextword",
            b"--w",
            b"Content-Type: text/csv",
            b"Content-Disposition: attachment; filename=data.csv",
            b"Content-Transfer-Encoding: base64",
            b"",
            b"Y3N2Y2VsbHdvcmQsMQ==",
            b"--w",
            b"Content-Type: text/html; charset=utf-8",
            b"Content-Disposition: attachment; filename=page.html",
            b"",
            b"<html><head><style>stylehidden{}</style></head><body><b>htmlword</b>ing</body></html>",
            b"--w",
            b"Content-Type: message/rfc822",
            b"",
            b"From: Inner Sender <inner@example.test>",
            b"Subject: innersubjectword",
            b"Content-Type: multipart/alternative; boundary=in",
            b"",
            b"--in",
            b"Content-Type: text/plain",
            b"",
            b"innerbodyword",
            b"--in--",
            b"--w",
            b"Content-Type: application/octet-stream",
            b"",
            b"binaryjunkword",
            b"--w--")


def test_search_document_holds_every_text_part_preamble_and_attached_message():
    parsed = mime.ParsedMessage(WHOLE)
    doc = st.document(parsed)
    for word in ("preamblewordalpha", "plainbodyword", "attachedtextword", "csvcellword",
                 "htmlword", "innersubjectword", "innerbodyword", "inner@example.test",
                 "notes.txt"):
        assert st.matches(doc, "body", word), word
    assert not st.matches(doc, "body", "stylehidden")       # HTML reduced to text
    assert not st.matches(doc, "body", "binaryjunkword")    # not text
    assert not st.matches(doc, "body", "head")              # tags are gone
    # The preview is still the first text part of the message itself.
    assert parsed.preview == "plainbodyword"
    # The attached message's headers are body text, not the message's headers.
    assert not st.matches(doc, "header:subject", "innersubjectword")


@pytest.mark.parametrize("field, value", [
    ("from", "John Smith"),                 # the comment inside the phrase is gone
    ("from", "John Smith <js@example.test>"),
    ("from", "the boss"),                   # the header as written still matches
    ("to", "Doe, Jane"),                    # quotes undone
    ("to", "Pete <pete@silly.test>"),       # comments: inside the address and as the name
    ("to", "pete@silly.test"),
])
def test_address_keys_match_the_envelope_form(field, value):
    doc = st.document(mime.ParsedMessage(WHOLE))
    assert st.matches(doc, field, value)


def test_address_keys_still_fail_on_other_text():
    doc = st.document(mime.ParsedMessage(WHOLE))
    assert not st.matches(doc, "from", "Jane")
    assert not st.matches(doc, "to", "John Smith")


def test_preview_follows_rfc_8970():
    html = msg(b"Content-Type: text/html", b"",
               b"<p>Hello&nbsp;<b>there</b>,</p>\r\n\r\n<div>   second\tline</div>" + b" word" * 400)
    parsed = mime.ParsedMessage(html)
    assert parsed.preview.startswith("Hello there , second line word")
    assert "<" not in parsed.preview and "  " not in parsed.preview
    assert len(parsed.preview) <= 256


# --- APPEND of binary content: parts with NUL go to base64 ----------------------------------

def test_binary_parts_are_converted_to_base64_losslessly():
    data = msg(b"Content-Type: multipart/mixed; boundary=n",
               b"",
               b"--n",
               b"Content-Type: text/plain",
               b"",
               b"kept as it is",
               b"--n",
               b"Content-Type: application/octet-stream",
               b"Content-Transfer-Encoding: binary",
               b"X-After: stays",
               b"",
               b"\x00\x01\x02" * 40,
               b"--n--")
    out = mime.binary_to_base64(data)
    assert b"\x00" not in out
    node = mime.parse_structure(out)
    text, blob = node[mime.CHILDREN]
    assert out[text[mime.BODY_START]:text[mime.END]] == b"kept as it is"
    assert blob[mime.FIELDS]["encoding"] == "base64"
    assert mime.decode_body(out, blob) == b"\x00\x01\x02" * 40
    assert render.binary_bytes(out, node, (2,)) == b"\x00\x01\x02" * 40
    assert b"X-After: stays\r\n" in out and out.count(b"Content-Transfer-Encoding") == 1
    assert max(len(line) for line in out.split(b"\r\n")) <= 76
    # a single-part message with bare LF line ends
    one = b"Subject: x\nContent-Type: application/x\n\nab\x00\n"
    out = mime.binary_to_base64(one)
    assert mime.decode_body(out, mime.parse_structure(out)) == b"ab\x00\n"


@pytest.mark.parametrize("data", [
    b"Subject: a\x00b\r\n\r\nbody\r\n",                                          # in a header
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\na\x00b\r\n",          # already encoded
    b"Content-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\na\x00b\r\n",      # embedded message
])
def test_nul_that_base64_cannot_carry_is_refused(data):
    assert mime.binary_to_base64(data) is None


def test_content_without_nul_is_left_alone():
    data = b"Subject: x\r\n\r\nplain\r\n"
    assert mime.binary_to_base64(data) is data
