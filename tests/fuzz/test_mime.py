"""Hypothesis: no message, however hostile, makes the parse done at delivery,
or anything derived from it, fail.

Messages come from three sources: structured hostile MIME (header fields
with encoded words, charsets from ``HOSTILE_CHARSETS``, RFC 2231 parameters,
nested multiparts with wrong, reused or missing boundaries, absurd
repetition), corpus messages (``/work/shared/corpus``) and ``MALFORMED``
mutated, and random bytes. For each one ``tests.malformed.check`` computes ``ParsedMessage`` and every
value derived from it (the stored JSON, the search document, the base
subject, the JMAP body-part views, body values and header forms, IMAP
ENVELOPE and BODYSTRUCTURE): none may raise, every string that reaches the
database or a JSON response must be storable (valid UTF-8 without NUL), and
every structure node's offsets must nest inside the message. Each test is
bounded in examples and in time per example (the whole file runs in about
half a minute, and finds the bugs ``MALFORMED`` records within that time on
the code before they were fixed).
"""

import base64
import pathlib
import re
import time

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.malformed import MALFORMED, check

CORPUS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "corpus"
SEEDS = sorted(p for p in CORPUS.rglob("*.eml") if p.stat().st_size < 64 * 1024) if CORPUS.is_dir() else []

HOSTILE_CHARSETS = [
    b"utf-8", b"us-ascii", b"iso-8859-1", b"windows-1252", b"iso-2022-jp", b"shift_jis",
    b"gb2312", b"ks_c_5601-1987", b"utf-7", b"utf-16", b"utf-32-be", b"utf-8*en",
    b"idna", b"punycode", b"undefined", b"rot13", b"rot_13", b"uu", b"uu_codec", b"base64",
    b"base64_codec", b"zlib_codec", b"zlib", b"bz2_codec", b"hex_codec", b"quopri_codec",
    b"unicode_escape", b"raw_unicode_escape", b"charmap", b"mbcs", b"unknown-8bit",
    b"x-unknown", b"", b"utf\xff-8", b"ut\x00f-8", b"\xc3\xa9", b"utf-8'", b"a" * 300,
    b"utf-8''", b"utf_8_sig", b"cp65001", b"ascii\t",
]
NAMES = [b"Subject", b"From", b"To", b"Cc", b"Bcc", b"Reply-To", b"Sender", b"Date",
         b"Message-ID", b"In-Reply-To", b"References", b"Content-Type", b"Content-Disposition",
         b"Content-Transfer-Encoding", b"Content-ID", b"Content-Language", b"Content-Location",
         b"Content-Description", b"Content-MD5", b"MIME-Version", b"X-Spam", b"List-Post"]
TYPES = [b"text/plain", b"text/html", b"text/enriched", b"multipart/mixed",
         b"multipart/alternative", b"multipart/digest", b"multipart/related",
         b"message/rfc822", b"message/global", b"application/octet-stream", b"image/png",
         b"text", b"/", b"multipart/", b"x/\xff"]
ENCODINGS = [b"7bit", b"8bit", b"binary", b"base64", b"quoted-printable", b"x-uuencode",
             b"7-bit", b"BASE64 (comment)", b"", b"\xff"]
TOKENS = [b"<", b">", b"@", b",", b":", b";", b'"', b"(", b")", b"\\", b" ", b"\t", b"\r\n ",
          b"\x00", b"\xff", b"\xc3", b"=?", b"?=", b"%", b"'", b"*", b"=", b"Re:", b"[list]",
          b"<script>", b"</style>", b"&amp;", b"&#99999999;", b"\xed\xa0\x80"]

charsets = st.sampled_from(HOSTILE_CHARSETS)
small_bytes = st.binary(max_size=24)


@st.composite
def encoded_word(draw):
    enc = draw(st.sampled_from([b"Q", b"B", b"q", b"b", b"X", b""]))
    payload = draw(st.one_of(
        st.binary(max_size=30).map(base64.b64encode),
        st.binary(max_size=20).map(lambda b: b"".join(b"=%02X" % c for c in b)),
        st.sampled_from([b"", b"=", b"==", b"#!", b"=F", b"_", b"=00", b"=ED=A0=80", b"?"]),
        small_bytes))
    return b"=?" + draw(charsets) + b"?" + enc + b"?" + payload + b"?="


dates = st.tuples(st.sampled_from([b"Mon, ", b"", b"Xyz, "]), st.integers(-1, 10 ** 22),
                  st.sampled_from([b"Jan", b"Dec", b"Foo"]), st.integers(-1, 10 ** 22),
                  st.sampled_from([b"00:00:00", b"23:59:60", b"99:99", b""]),
                  st.sampled_from([b"+0000", b"-0000", b"+9999", b"-2359", b"EST", b"", b"+01"])).map(
    lambda t: b"%s%d %s %d %s %s" % t)
header_piece = st.one_of(encoded_word(), st.sampled_from(TOKENS), small_bytes, dates,
                         st.text(max_size=12).map(lambda s: s.encode("utf-8", "surrogatepass")))
header_value = st.lists(header_piece, max_size=10).map(b"".join)


@st.composite
def parameter(draw):
    name = draw(st.sampled_from([b"charset", b"name", b"filename", b"boundary", b"format",
                                 b"name*", b"filename*", b"name*0*", b"name*1", b"name*2*",
                                 b"filename*0", b"filename*\xc2\xb2", b"name*99999999999999999999",
                                 b"name*" + b"9" * 5000, b"boundary*", b"charset*", b"x*\xff*",
                                 b"", b"*", b"**"]))
    value = draw(st.one_of(
        charsets,
        st.tuples(charsets, small_bytes).map(lambda t: t[0] + b"'en'" + b"".join(
            b"%%%02x" % c for c in t[1])),
        st.tuples(charsets, small_bytes).map(lambda t: t[0] + b"''" + t[1]),
        header_value,
        st.sampled_from([b'"', b'"unterminated', b'"a\\"b"', b"%", b"%f", b"''", b"'"])))
    return name + b"=" + value


@st.composite
def content_type(draw, ctype=None):
    ctype = ctype or draw(st.sampled_from(TYPES))
    params = draw(st.lists(parameter(), max_size=5))
    return ctype + b"".join(b"; " + p for p in params)


@st.composite
def headers(draw, extra=()):
    fields = list(extra)
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.one_of(st.sampled_from(NAMES), small_bytes))
        if name.lower() == b"content-type":
            value = draw(content_type())
        elif name.lower() == b"content-disposition":
            value = draw(st.sampled_from([b"attachment", b"inline", b"", b"\xff"])) + b"".join(
                b"; " + p for p in draw(st.lists(parameter(), max_size=4)))
        elif name.lower() == b"content-transfer-encoding":
            value = draw(st.sampled_from(ENCODINGS))
        else:
            value = draw(header_value)
        sep = draw(st.sampled_from([b": ", b":", b" : ", b"\r\n", b""]))
        fields.append(name + sep + value)
    draw(st.randoms()).shuffle(fields)
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    return eol.join(fields) + eol + draw(st.sampled_from([eol, b"", b" \n"]))


body_text = st.one_of(st.binary(max_size=200), st.lists(st.sampled_from(TOKENS), max_size=20).map(b"".join))


def entity(depth):
    leaf = st.tuples(headers(), body_text).map(b"".join)
    if depth <= 0:
        return leaf
    inner = entity(depth - 1)

    @st.composite
    def multipart(draw):
        boundary = draw(st.sampled_from([b"b", b"b1", b"bb", b"=_x", b"", b" ", b"\xff\xfe",
                                         b"a" * 80, b"--", b"b*"]))
        declared = draw(st.sampled_from([boundary, b'"' + boundary + b'"', b"other", b"b"]))
        param_name = draw(st.sampled_from([b"boundary=", b"boundary*=utf-8''", b"boundary*=idna''",
                                           b"boundary*0=", b"BOUNDARY="]))
        ctype = draw(st.sampled_from([b"multipart/mixed", b"multipart/digest",
                                      b"multipart/alternative"]))
        head = draw(headers(extra=[b"Content-Type: " + ctype + b"; " + param_name + declared]))
        parts = draw(st.lists(inner, max_size=4))
        eol = draw(st.sampled_from([b"\r\n", b"\n"]))
        out = head + draw(st.sampled_from([b"", b"preamble" + eol]))
        for p in parts:
            out += b"--" + boundary + eol + p + eol
        out += draw(st.sampled_from([b"--" + boundary + b"--" + eol, b"", b"--" + boundary + eol]))
        return out + draw(st.sampled_from([b"", b"epilogue\xff"]))

    message = st.tuples(headers(extra=[b"Content-Type: message/rfc822"]), inner).map(b"".join)
    return st.one_of(leaf, multipart(), message)


structured = entity(3)


REPEATED = [b"<", b"<script", b"<style>", b"Re: ", b"Fwd: [x] ", b"X: y\r\n", b"--b\r\n",
            b"--b\r\n\r\n", b"=?utf-8?q?a?= ", b"=?a?q?", b"(", b'"', b"<a@b>", b"a@b, ", b"\\",
            b";x=y", b";x*1=y", b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n",
            b"Content-Type: message/rfc822\r\n\r\n", b" \t", b"=\r\n", b"\r\n x", b"&#9",
            b"(fwd)"]


def repeated(chunk, count):
    """Two messages with a small hostile chunk repeated ``count`` times in every
    place at once (subject, address list, parameters, an HTML and a text part;
    the header block, the whole message): finds work that grows faster than
    the message (quadratic scans, unbounded header or part lists)."""
    blob = chunk * count
    return (b"Subject: " + blob + b"\r\nTo: " + blob + b"\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
            b"Content-Type: text/html\r\n\r\n" + blob + b"\r\n--b\r\n"
            b"Content-Type: text/plain" + blob + b"\r\n\r\n" + blob + b"\r\n--b--\r\n",
            blob + b"\r\n\r\nbody\r\n")


@st.composite
def mutated_seed(draw):
    """A corpus message (or one of ``MALFORMED``) with up to four mutations."""
    seeds = st.sampled_from(sorted(MALFORMED.values()))
    if SEEDS:
        seeds = st.one_of(st.sampled_from(SEEDS).map(pathlib.Path.read_bytes), seeds)
    data = bytearray(draw(seeds))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["charset", "word", "insert", "delete", "dup", "truncate"]))
        if op == "charset":
            data = bytearray(re.sub(rb"(?i)(charset\*?=\"?)[^\";\s]*",
                                    lambda m: m.group(1) + draw(charsets), bytes(data), count=3))
        elif op == "word":
            data = bytearray(re.sub(rb"=\?[^?\s]*\?", lambda m: b"=?" + draw(charsets) + b"?",
                                    bytes(data), count=3))
        elif op == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.one_of(small_bytes, st.sampled_from(TOKENS), encoded_word()))
        elif op == "delete" and data:
            at = draw(st.integers(0, len(data) - 1))
            del data[at:at + draw(st.integers(1, 64))]
        elif op == "dup" and data:
            at = draw(st.integers(0, len(data) - 1))
            data[at:at] = data[at:at + draw(st.integers(1, 200))]
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))):]
    return bytes(data)


# The deadline only guards against a hang: on a loaded machine wall-clock time
# says little. Growth faster than the message is caught by the CPU-time
# budget of test_repetition_stays_bounded instead.
SETTINGS = dict(deadline=20000, suppress_health_check=[HealthCheck.too_slow,
                                                       HealthCheck.data_too_large,
                                                       HealthCheck.filter_too_much])
CPU_BUDGET = 3.0   # seconds per repetition example; linear work takes well under one


@settings(max_examples=300, **SETTINGS)
@given(structured)
def test_structured_hostile_messages(data):
    check(data)


@settings(max_examples=500, **SETTINGS)
@given(mutated_seed())
def test_mutated_corpus_messages(data):
    check(data)


def every_chunk(test):
    for chunk in REPEATED:
        test = example(chunk, 15000)(test)
    return test


@settings(max_examples=15, phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False,
          **SETTINGS)
@given(st.sampled_from(REPEATED), st.integers(10000, 20000))
@every_chunk
def test_repetition_stays_bounded(chunk, count):
    """Messages of a few megabytes, each chunk at least once, within a budget
    of CPU time that work growing faster than the message overruns many
    times over (a quadratic scan of such a message takes tens of seconds). No
    shrinking: a slow example would take minutes to shrink, and the failing
    chunk is reported as drawn."""
    started = time.process_time()
    for data in repeated(chunk, count):
        check(data)
    assert time.process_time() - started < CPU_BUDGET, (chunk, count)


@settings(max_examples=1000, **SETTINGS)
@given(st.binary(max_size=2000))
def test_random_bytes(data):
    check(data)
