"""Issue 13 items 1 and 2 and PREVIEW over IMAP, against a real ``roost serve``:
BODYSTRUCTURE of broken and RFC 2231 messages, BINARY with quoted-printable,
APPEND of binary content, SEARCH of the whole message, FETCH PREVIEW, and the
reindex of an old data directory at start."""

import re
import time

import pytest

from tests.imap_helpers import USER, Wire, _close_connections, close_all, deliver, start_server  # noqa: F401 - a fixture

HEADERS_WITH_GAPS = (b"Received: from a by b;\r\n \t\r\n\tWed, 1 Jan 2025 00:00:00 +0000\r\n"
                     b"a line without a colon\r\n"
                     b"From: Ann Example <ann@example.test>\r\n"
                     b"Subject: still a header\r\n"
                     b"Content-Type: text/html; charset=utf-8\r\n\r\n"
                     b"<p>Gr\xc3\xbc\xc3\x9f   <b>dich</b></p>\r\n")

RFC2231 = (b"From: b@example.test\r\nSubject: names\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
           b"--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
           b"--b\r\nContent-Type: application/pdf;\r\n name*0*=utf-8''Gr%C3%BC%C3%9Fe;\r\n"
           b" name*1=\".pdf\"\r\nContent-Disposition: attachment;\r\n"
           b" filename*0*=utf-8'de'Gr%C3%BC%C3%9Fe;\r\n filename*1=\".pdf\"\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n--b--\r\n")

QP = (b"From: c@example.test\r\nSubject: qp\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n"
      b"--q trailing text after the boundary\r\n"
      b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
      b"Gr=C3=BC=C3=9Fe   \r\nsoft= \r\nly\r\n--q--\r\n")

WHOLE = (b"From: John (the boss) Smith <js@example.test>\r\nTo: d@example.test\r\n"
         b"Subject: whole\r\nContent-Type: multipart/mixed; boundary=w\r\n\r\n"
         b"preamblexyzzy\r\n"
         b"--w\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
         b"--w\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=a.csv\r\n\r\n"
         b"csvplugh,1\r\n"
         b"--w\r\nContent-Type: message/rfc822\r\n\r\nSubject: innerfrobozz\r\n\r\ninnerbodyword\r\n"
         b"--w--\r\n")

IMAGE_ONLY = (b"From: e@example.test\r\nSubject: picture\r\nContent-Type: image/png\r\n"
              b"Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("imap-mime"))
    yield srv
    close_all()
    srv.stop()


_counter = [0]


def _append(w, name, data, tag="ap", binary=False):
    mark = "~" if binary else ""
    w.send(f"{tag} APPEND {name} {mark}{{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    return w.until(tag)


@pytest.fixture
def box(server):
    """A logged-in connection on a fresh mailbox with the messages above, selected."""
    _counter[0] += 1
    name = f"M{_counter[0]}"
    w = Wire(server.ports["imap"])
    w.login()
    assert w.cmd(f"c1 CREATE {name}")[-1].startswith(b"c1 OK")
    for data in (HEADERS_WITH_GAPS, RFC2231, QP, WHOLE, IMAGE_ONLY):
        assert _append(w, name, data)[-1].startswith(b"ap OK")
    assert w.cmd(f"s1 SELECT {name}")[-1].startswith(b"s1 OK")
    w.name = name
    yield w
    w.close()


def ok(lines):
    assert lines[-1].split(b" ")[1] == b"OK", lines
    return lines


def test_preview_is_advertised(server):
    w = Wire(server.ports["imap"])
    caps = ok(w.cmd("a1 CAPABILITY"))[0].split()
    assert b"PREVIEW" in caps
    w.close()


def test_headers_survive_blank_and_colonless_lines(box):
    lines = ok(box.cmd("f1 FETCH 1 (ENVELOPE BODYSTRUCTURE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
    assert b'"still a header"' in lines[0]
    assert b'(("Ann Example" NIL "ann" "example.test"))' in lines[0]
    assert b'BODYSTRUCTURE ("TEXT" "HTML" ("charset" "utf-8")' in lines[0]
    assert b"Subject: still a header\r\n\r\n" in lines[0]


def test_bodystructure_decodes_rfc2231(box):
    lines = ok(box.cmd("f1 FETCH 2 BODYSTRUCTURE"))
    word = b"=?UTF-8?B?R3LDvMOfZS5wZGY=?="          # "Grüße.pdf"
    assert b'("name" "' + word + b'")' in lines[0]
    assert b'("ATTACHMENT" ("filename" "' + word + b'"))' in lines[0]
    assert b"*0" not in lines[0]
    ok(box.cmd("e1 ENABLE UTF8=ACCEPT"))
    lines = ok(box.cmd("f2 FETCH 2 BODYSTRUCTURE"))
    assert '("name" "Grüße.pdf")'.encode() in lines[0]


def test_binary_uses_the_rfc2045_decoder(box):
    lines = ok(box.cmd("f1 FETCH 3 (BINARY.SIZE[1] BINARY.PEEK[1] BODYSTRUCTURE)"))
    decoded = "Grüße\r\nsoftly".encode()
    assert b"BINARY.SIZE[1] %d" % len(decoded) in lines[0]
    assert b"BINARY[1] {%d}\r\n" % len(decoded) + decoded in lines[0]
    # the boundary with text after it was recognised: one text part, not the whole body
    assert b'BODYSTRUCTURE (("TEXT" "PLAIN"' in lines[0]


def test_append_of_binary_content(box):
    data = (b"From: f@example.test\r\nSubject: nul\r\nContent-Type: multipart/mixed; boundary=n\r\n"
            b"\r\n--n\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
            b"--n\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\nab\x00cd\r\n--n--\r\n")
    # literal8: the part holding NUL is stored in base64, the rest as it came
    lines = ok(_append(box, box.name, data, "b1", binary=True))
    ok(box.cmd("n1 NOOP"))
    lines = ok(box.cmd("f1 FETCH 6 (BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[2] BINARY.PEEK[2] "
                       "BINARY.SIZE[2] BODY.PEEK[])"))
    assert b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64" 8 ' in lines[0]
    assert b"BINARY" not in lines[0].split(b"BODY[1]")[0]
    assert b"BODY[1] {5}\r\nhello" in lines[0]
    assert b"BODY[2] {8}\r\nYWIAY2Q=" in lines[0]
    assert b"BINARY[2] ~{5}\r\nab\x00cd" in lines[0] and b"BINARY.SIZE[2] 5" in lines[0]
    whole = lines[0].split(b"BODY[] ", 1)[1]
    assert b"\x00" not in whole and b"Content-Transfer-Encoding: base64\r\n\r\nYWIAY2Q=" in whole
    # NUL where base64 cannot take it (a header field): refused, nothing stored
    bad = b"From: f@example.test\r\nSubject: n\x00l\r\n\r\nbody\r\n"
    lines = _append(box, box.name, bad, "b2", binary=True)
    assert lines[-1].startswith(b"b2 NO [UNKNOWN-CTE]"), lines
    lines = ok(box.cmd(f"s2 STATUS {box.name} (MESSAGES)"))
    assert b"(MESSAGES 6)" in lines[0]
    # A literal8 without NUL is stored as it came; "binary" is described as 8BIT.
    plain = data.replace(b"\x00", b"\x01")
    ok(_append(box, box.name, plain, "b3", binary=True))
    ok(box.cmd("n2 NOOP"))
    lines = ok(box.cmd("f2 FETCH 7 (BODYSTRUCTURE BODY.PEEK[])"))
    assert b'"8BIT"' in lines[0] and b'"BINARY"' not in lines[0]
    assert lines[0].split(b"BODY[] {%d}\r\n" % len(plain), 1)[1].startswith(plain)


def test_delivered_nul_never_reaches_a_plain_literal(server, box):
    data = b"From: g@example.test\r\nSubject: nul by lmtp\r\n\r\nx\x00y\r\n"
    deliver(server, data)
    w = Wire(server.ports["imap"])
    w.login()
    lines = ok(w.cmd("s1 EXAMINE INBOX"))
    n = int(next(re.search(rb"\* (\d+) EXISTS", x).group(1) for x in lines if b"EXISTS" in x))
    lines = ok(w.cmd(f"f1 FETCH {n} (RFC822.SIZE BODY.PEEK[] BODY.PEEK[TEXT] BINARY.PEEK[])"))
    size = int(re.search(rb"RFC822.SIZE (\d+)", lines[0]).group(1))
    body = re.search(rb"BODY\[\] \{(\d+)\}\r\n", lines[0])
    assert int(body.group(1)) == size           # the same octets, NUL sent as 0x80
    sent = lines[0][body.end():body.end() + size]
    assert b"\x00" not in sent and sent.endswith(data.replace(b"\x00", b"\x80"))
    assert b"BODY[TEXT] {5}\r\nx\x80y\r\n" in lines[0]
    binary = re.search(rb"BINARY\[\] ~\{(\d+)\}\r\n", lines[0])   # literal8 keeps the NUL
    assert int(binary.group(1)) == size
    assert lines[0][binary.end():binary.end() + size].endswith(data)
    w.close()


def test_search_sees_the_whole_message(box):
    for key, want in (("BODY preamblexyzzy", b"4"), ("BODY csvplugh", b"4"),
                      ("BODY innerfrobozz", b"4"), ("TEXT innerbodyword", b"4"),
                      ('FROM "John Smith"', b"4"), ("BODY dich", b"1"),
                      ("SUBJECT innerfrobozz", b"")):
        lines = ok(box.cmd(f"q1 SEARCH {key}"))
        assert lines[0] == (b"* SEARCH " + want).rstrip(), (key, lines)


def test_fetch_preview(box):
    lines = ok(box.cmd("p1 FETCH 1:5 (PREVIEW)"))
    by_seq = {int(x.split()[1]): x for x in lines[:-1]}
    pre = "Grüß dich".encode()
    assert by_seq[1] == b"* 1 FETCH (PREVIEW {%d}\r\n" % len(pre) + pre + b")"   # UTF-8, literal
    assert by_seq[4] == b'* 4 FETCH (PREVIEW "body")'
    assert by_seq[5] == b'* 5 FETCH (PREVIEW "")'      # nothing to show: "", never NIL
    lines = ok(box.cmd("p2 FETCH 4 (UID PREVIEW (LAZY) FLAGS)"))
    assert re.fullmatch(rb'\* 4 FETCH \(UID \d+ PREVIEW "body" FLAGS \([^)]*\)\)', lines[0])
    lines = ok(box.cmd("p3 UID FETCH 1:* PREVIEW"))
    assert len(lines) == 6
    assert box.cmd("p4 FETCH 1 (PREVIEW (EAGER))")[-1].startswith(b"p4 BAD")
    assert box.cmd("p5 FETCH 1 (PREVIEW ())")[-1].startswith(b"p5 BAD")


def test_long_preview_is_cut_to_200_characters(box):
    data = b"Subject: long\r\n\r\n" + "é ".encode() * 400
    ok(_append(box, box.name, data, "l1"))
    ok(box.cmd("n1 NOOP"))
    lines = ok(box.cmd("p1 FETCH 6 PREVIEW"))
    m = re.match(rb"\* 6 FETCH \(PREVIEW \{(\d+)\}\r\n(.*)\)$", lines[0], re.S)
    text = m.group(2).decode()
    assert int(m.group(1)) == len(m.group(2)) and len(text) == 200 and text.startswith("é é")


def test_old_data_directory_is_reindexed_at_start(tmp_path):
    from sqlalchemy import delete, select
    from roost.storage import reindex
    from roost.storage.schema import messages, server_state
    from roost.storage.store import Store
    from tests.conftest import RoostServer
    data = tmp_path / "old"
    srv = start_server(data)
    try:
        deliver(srv, WHOLE)
    finally:
        srv.stop()
    # What an older release left: no format version, and no index entry for
    # the parts it did not index (here: none at all for the message).
    store = Store.open(str(data))
    acct = store.account(USER)
    with store.write() as txn:
        txn.conn.execute(delete(server_state))
        pks = list(txn.conn.execute(select(messages.c.id)).scalars())
        store.fulltext.remove(txn, acct.id, pks)
    store.close()
    srv = RoostServer(str(data), listeners=("imap",)).start()
    try:
        w = Wire(srv.ports["imap"])
        w.login()
        ok(w.cmd("s1 SELECT INBOX"))
        deadline = time.monotonic() + 30
        while True:
            lines = ok(w.cmd("q1 SEARCH BODY csvplugh"))
            if lines[0] == b"* SEARCH 1" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert lines[0] == b"* SEARCH 1"
        w.close()
    finally:
        srv.stop()
    store = Store.open(str(data))
    try:
        assert reindex.stored_version(store) == reindex.VERSION
    finally:
        store.close()


def test_corpus_rfc2231_continuations_over_imap(box):
    import pathlib
    from roost.storage import mime
    path = (pathlib.Path(__file__).resolve().parents[3] / "shared" / "corpus" / "mail-rb" /
            "multi_charset" / "japanese_attachment_long_name.eml")
    if not path.exists():
        pytest.skip(f"corpus message missing: {path}")
    ok(_append(box, box.name, path.read_bytes(), "j1"))
    ok(box.cmd("n1 NOOP"))
    lines = ok(box.cmd("f1 FETCH 6 BODYSTRUCTURE"))
    m = re.search(rb'\("ATTACHMENT" \("filename" "([^"]*)"\)\)', lines[0])
    assert m and b"%E3" not in lines[0] and b"filename*" not in lines[0]
    assert mime.decode_words(m.group(1).decode()) == "かきくけこ" * 5 + ".txt"
