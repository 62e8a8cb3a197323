"""IMAP transcript tests: bytes on the wire against a real ``roost serve``.

Each test speaks raw IMAP (``C:`` lines sent, ``S:`` lines checked) in the
shape of the RFC 3501 / RFC 9051 examples.
"""

import base64
import re
import signal
import socket
import time

import pytest

from tests.imap_helpers import PASSWORD, USER, Wire, _close_connections, close_all, deliver, start_server  # noqa: F401 - _close_connections is a fixture

MSG = (b"Date: Mon, 7 Feb 1994 21:52:25 -0800\r\n"
       b"From: Fred Foobar <foobar@Blurdybloop.example>\r\n"
       b"Subject: afternoon meeting\r\n"
       b"To: mooch@owatagu.siam.edu.example\r\n"
       b"Message-Id: <B27397-0100000@Blurdybloop.example>\r\n"
       b"MIME-Version: 1.0\r\n"
       b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
       b"\r\n"
       b"Hello Joe, do you think we can meet at 3:30 tomorrow?\r\n")

MULTI = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: parts\r\n"
         b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n"
         b"preamble\r\n--XX\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nfirst part\r\n"
         b"--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
         b"Content-Disposition: attachment; filename=\"a.bin\"\r\n\r\nAAECAw==\r\n--XX--\r\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("imap"),
                       users=((USER, PASSWORD), ("small@example.org", "pw", 300)))
    yield srv
    close_all()
    srv.stop()


_counter = [0]


@pytest.fixture
def box(server):
    """A logged-in connection with a fresh mailbox holding MSG and MULTI, selected."""
    _counter[0] += 1
    name = f"T{_counter[0]}"
    w = Wire(server.ports["imap"])
    w.login()
    assert w.cmd(f"c1 CREATE {name}")[-1].startswith(b"c1 OK")
    for i, data in enumerate((MSG, MULTI)):
        w.send(f"c{i}a APPEND {name} {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
        assert w.until(f"c{i}a")[-1].startswith(f"c{i}a OK".encode())
    # A first SELECT claims the messages' \Recent (RFC 3501 2.3.2), so the
    # tests below see the flags the messages have (test_recent covers it).
    assert w.cmd(f"s0 SELECT {name}")[-1].startswith(b"s0 OK")
    lines = w.cmd(f"s1 SELECT {name}")
    assert lines[-1].startswith(b"s1 OK [READ-WRITE]")
    w.name = name
    yield w
    w.close()


def ok(lines):
    assert lines[-1].split(b" ")[1] == b"OK", lines
    return lines


def test_greeting_and_capability(server):
    w = Wire(server.ports["imap"])
    assert w.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 IMAP4rev2 ")
    caps = ok(w.cmd("a1 CAPABILITY"))[0].split()[2:]
    for cap in (b"IDLE", b"LITERAL+", b"UIDPLUS", b"MOVE", b"STARTTLS", b"AUTH=PLAIN", b"SASL-IR",
                b"CONDSTORE", b"QRESYNC", b"ESEARCH", b"SPECIAL-USE", b"OBJECTID", b"BINARY"):
        assert cap in caps
    assert b"LOGINDISABLED" not in caps          # loopback is allowed cleartext
    lines = w.cmd("a2 LOGOUT")
    assert lines[0].startswith(b"* BYE") and lines[-1] == b"a2 OK LOGOUT completed"
    w.close()


def test_login_failure_is_delayed_and_wrong_state_is_bad(server):
    w = Wire(server.ports["imap"])
    assert w.cmd("a0 SELECT INBOX")[-1].startswith(b"a0 BAD")
    t = time.monotonic()
    assert w.cmd(f'a1 LOGIN "{USER}" "wrong"')[-1].startswith(b"a1 NO [AUTHENTICATIONFAILED]")
    assert time.monotonic() - t >= 0.9
    ok(w.login())
    assert w.cmd("a2 LOGIN x y")[-1].startswith(b"a2 BAD")
    w.close()


def test_three_failures_disconnect(server):
    w = Wire(server.ports["imap"])
    w.cmd('a1 LOGIN "nobody@example.org" "x"')
    w.cmd('a2 LOGIN "nobody@example.org" "x"')
    lines = w.cmd('a3 LOGIN "nobody@example.org" "x"')
    assert lines[-1].startswith(b"a3 NO")
    assert w.line().startswith(b"* BYE")
    w.close()


def test_authenticate_plain_with_and_without_initial_response(server):
    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    w = Wire(server.ports["imap"])
    assert ok(w.cmd(f"a1 AUTHENTICATE PLAIN {token}"))[-1].startswith(b"a1 OK [CAPABILITY")
    w.close()
    w = Wire(server.ports["imap"])
    w.send("a1 AUTHENTICATE PLAIN\r\n")
    assert w.line() == b"+ "
    ok(w.cmd(token, tag="a1"))
    w.close()
    w = Wire(server.ports["imap"])
    w.send("a1 AUTHENTICATE LOGIN\r\n")
    assert w.line() == b"+ VXNlcm5hbWU6"
    w.send(base64.b64encode(USER.encode()) + b"\r\n")
    assert w.line() == b"+ UGFzc3dvcmQ6"
    ok(w.cmd(base64.b64encode(PASSWORD.encode()).decode(), tag="a1"))
    w.close()
    w = Wire(server.ports["imap"])
    w.send("a1 AUTHENTICATE PLAIN\r\n")
    w.line()
    assert w.cmd("*", tag="a1")[-1].startswith(b"a1 BAD")
    w.close()


def test_starttls_then_login(server):
    w = Wire(server.ports["imap"])
    w.send("a1 STARTTLS\r\n")
    assert w.line().startswith(b"a1 OK")
    w.starttls()
    caps = ok(w.cmd("a2 CAPABILITY"))[0]
    assert b"STARTTLS" not in caps and b"AUTH=PLAIN" in caps
    ok(w.login())
    w.close()


def test_implicit_tls(server):
    w = Wire(server.ports["imaps"], tls=True)
    assert w.greeting.startswith(b"* OK")
    ok(w.login())
    ok(w.cmd("a1 NOOP"))
    w.close()


def test_select_responses(box):
    lines = box.cmd(f"s2 EXAMINE {box.name}")
    text = b"\n".join(lines)
    assert b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)" in text
    assert b"* 2 EXISTS" in text and b"* 0 RECENT" in text
    assert b"* OK [UNSEEN 1]" in text
    assert re.search(rb"\* OK \[UIDVALIDITY \d+\]", text)
    assert b"* OK [UIDNEXT 3]" in text
    assert re.search(rb"\* OK \[HIGHESTMODSEQ \d+\]", text)
    assert re.search(rb"\* OK \[MAILBOXID \(M\d+\)\]", text)
    assert b"* OK [PERMANENTFLAGS ()]" in text
    assert lines[-1].startswith(b"s2 OK [READ-ONLY]")


def test_fetch_envelope_and_bodystructure(box):
    lines = ok(box.cmd("f1 FETCH 1 (ENVELOPE BODYSTRUCTURE RFC822.SIZE FLAGS)"))
    assert lines[0] == (
        b'* 1 FETCH (ENVELOPE ("Mon, 7 Feb 1994 21:52:25 -0800" "afternoon meeting" '
        b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example")) '
        b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example")) '
        b'(("Fred Foobar" NIL "foobar" "Blurdybloop.example")) '
        b'((NIL NIL "mooch" "owatagu.siam.edu.example")) NIL NIL NIL '
        b'"<B27397-0100000@Blurdybloop.example>") '
        b'BODYSTRUCTURE ("TEXT" "PLAIN" ("charset" "US-ASCII") NIL NIL "7BIT" 55 1 NIL NIL NIL NIL) '
        b'RFC822.SIZE %d FLAGS ())' % len(MSG))
    lines = ok(box.cmd("f2 FETCH 2 (BODY BODYSTRUCTURE)"))
    assert lines[0] == (
        b'* 2 FETCH (BODY (("TEXT" "PLAIN" ("charset" "utf-8") NIL NIL "7BIT" 10 1)'
        b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64" 8) "MIXED") '
        b'BODYSTRUCTURE (("TEXT" "PLAIN" ("charset" "utf-8") NIL NIL "7BIT" 10 1 NIL NIL NIL NIL)'
        b'("APPLICATION" "OCTET-STREAM" NIL NIL NIL "BASE64" 8 NIL ("ATTACHMENT" ("filename" "a.bin")) NIL NIL)'
        b' "MIXED" ("boundary" "XX") NIL NIL NIL))')


def test_fetch_sections_and_partials(box):
    lines = ok(box.cmd("f1 UID FETCH 2 (BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[HEADER.FIELDS (Subject To)] "
                       "BODY.PEEK[]<0.4> BODY.PEEK[TEXT]<10.4> BINARY.PEEK[2] BINARY.SIZE[2])"))
    line = lines[0]
    assert line.startswith(b"* 2 FETCH (UID 2 BODY[1] {10}\r\nfirst part ")
    assert b"BODY[2.MIME] {128}\r\nContent-Type: application/octet-stream\r\n" in line
    assert b"BODY[HEADER.FIELDS (Subject To)] {37}\r\nTo: b@example.org\r\nSubject: parts\r\n\r\n" in line
    assert b"BODY[]<0> {4}\r\nFrom " in line
    assert b"BODY[TEXT]<10> {4}\r\n--XX " in line
    assert b"BINARY[2] ~{4}\r\n\x00\x01\x02\x03 " in line
    assert line.endswith(b"BINARY.SIZE[2] 4)")
    assert b"\\Seen" not in line


def test_partial_body_alone_is_a_ranged_read(box):
    """BODY[]<origin.length> on its own (chunked download) is read as a byte
    range from the store; the reply is the same slice either way."""
    lines = ok(box.cmd("f1 UID FETCH 1:2 (UID BODY.PEEK[]<5.12>)"))
    assert lines[0] == b"* 1 FETCH (UID 1 BODY[]<5> {12}\r\n" + MSG[5:17] + b")"
    assert lines[1] == b"* 2 FETCH (UID 2 BODY[]<5> {12}\r\n" + MULTI[5:17] + b")"
    lines = ok(box.cmd(f"f2 UID FETCH 1 (BODY.PEEK[]<{len(MSG) - 3}.100>)"))
    assert lines[0] == b"* 1 FETCH (UID 1 BODY[]<%d> {3}\r\n" % (len(MSG) - 3) + MSG[-3:] + b")"
    lines = ok(box.cmd(f"f3 UID FETCH 1 (BODY.PEEK[]<{len(MSG) + 10}.5>)"))
    assert lines[0] == b"* 1 FETCH (UID 1 BODY[]<%d> {0}\r\n)" % (len(MSG) + 10)


def test_rfc822_items(box):
    line = ok(box.cmd("r1 FETCH 1 (RFC822.HEADER RFC822.TEXT)"))[0]
    head, _, text = MSG.partition(b"\r\n\r\n")
    assert line == (b"* 1 FETCH (RFC822.HEADER {%d}\r\n%s\r\n\r\n RFC822.TEXT {%d}\r\n%s FLAGS (\\Seen))"
                    % (len(head) + 4, head, len(text), text))
    assert ok(box.cmd("r2 FETCH 2 RFC822"))[0] == b"* 2 FETCH (RFC822 {%d}\r\n%s FLAGS (\\Seen))" % (
        len(MULTI), MULTI)


def test_body_sets_seen_but_peek_does_not(box):
    ok(box.cmd("f1 FETCH 1 BODY.PEEK[TEXT]"))
    assert ok(box.cmd("f2 FETCH 1 FLAGS"))[0] == b"* 1 FETCH (FLAGS ())"
    lines = ok(box.cmd("f3 FETCH 1 BODY[TEXT]"))
    assert lines[0].endswith(b" FLAGS (\\Seen))")
    assert ok(box.cmd("f4 FETCH 1 FLAGS"))[0] == b"* 1 FETCH (FLAGS (\\Seen))"


def test_store_forms(box):
    lines = ok(box.cmd("s1 STORE 1 +FLAGS (\\Flagged $Work)"))
    assert lines[0] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)"   # a new keyword
    assert lines[1].startswith(b"* OK [PERMANENTFLAGS (\\Answered ")
    assert lines[2] == b"* 1 FETCH (FLAGS (\\Flagged $Work))"
    assert ok(box.cmd("s2 STORE 1 -FLAGS.SILENT (\\Flagged)")) == [b"s2 OK STORE completed"]
    assert ok(box.cmd("s3 UID STORE 1:2 FLAGS (\\Deleted)"))[:2] == [
        b"* 1 FETCH (FLAGS (\\Deleted) UID 1)", b"* 2 FETCH (FLAGS (\\Deleted) UID 2)"]
    assert box.cmd("s4 STORE 1 +FLAGS (\\Recent \\Bogus)")[-1].startswith(b"s4 BAD")


def test_copy_move_and_uidplus(box):
    box.cmd(f"c0 CREATE {box.name}/dest")
    lines = ok(box.cmd(f"c1 COPY 1:2 {box.name}/dest"))
    assert re.match(rb"c1 OK \[COPYUID \d+ 1:2 1:2\]", lines[-1])
    # A missing destination is one the client may create (RFC 3501 6.4.7, RFC 6851 3.3).
    assert box.cmd("c2 COPY 1 nowhere") == [b"c2 NO [TRYCREATE] no such mailbox"]
    assert box.cmd("c3 UID COPY 1 nowhere") == [b"c3 NO [TRYCREATE] no such mailbox"]
    assert box.cmd("m0 MOVE 1 nowhere") == [b"m0 NO [TRYCREATE] no such mailbox"]
    assert box.cmd("m0b UID MOVE 1:* nowhere") == [b"m0b NO [TRYCREATE] no such mailbox"]
    lines = ok(box.cmd(f"m1 UID MOVE 1 {box.name}/dest"))
    assert re.match(rb"\* OK \[COPYUID \d+ 1 3\]", lines[0])
    assert lines[1] == b"* 1 EXPUNGE"
    assert ok(box.cmd("m2 FETCH 1 UID"))[0] == b"* 1 FETCH (UID 2)"


def test_expunge_and_uid_expunge(box):
    ok(box.cmd("e0 STORE 1:2 +FLAGS.SILENT (\\Deleted)"))
    assert ok(box.cmd("e1 UID EXPUNGE 2")) == [b"* 2 EXPUNGE", b"e1 OK EXPUNGE completed"]
    assert ok(box.cmd("e2 EXPUNGE")) == [b"* 1 EXPUNGE", b"e2 OK EXPUNGE completed"]
    assert box.cmd("e3 EXPUNGE 1")[-1].startswith(b"e3 BAD")


def test_search_esearch_searchres(box):
    assert ok(box.cmd("q1 SEARCH ALL"))[0] == b"* SEARCH 1 2"
    assert ok(box.cmd('q2 SEARCH SUBJECT "afternoon"'))[0] == b"* SEARCH 1"
    assert ok(box.cmd("q3 UID SEARCH NOT FROM foobar"))[0] == b"* SEARCH 2"
    assert ok(box.cmd("q4 SEARCH OR LARGER 100000 SENTSINCE 1-Feb-1994 SENTBEFORE 1-Mar-1994"))[0] == b"* SEARCH 1"
    assert ok(box.cmd("q4b SEARCH SMALLER 200 ON 1-Jan-1990"))[0] == b"* SEARCH"
    # The Date header says 7 Feb (-0800) although it is 8 Feb in UTC: RFC 3501 wants 7 Feb.
    assert ok(box.cmd("q4c SEARCH SENTON 7-Feb-1994"))[0] == b"* SEARCH 1"
    assert ok(box.cmd("q4d SEARCH NOT SENTBEFORE 8-Feb-1994"))[0] == b"* SEARCH 2"
    assert ok(box.cmd('q5 SEARCH RETURN (MIN MAX COUNT) UNSEEN'))[0] == \
        b'* ESEARCH (TAG "q5") MIN 1 MAX 2 COUNT 2'
    assert ok(box.cmd("q6 SEARCH RETURN (SAVE) HEADER Subject parts")) == [b"q6 OK SEARCH completed"]
    assert ok(box.cmd("q7 FETCH $ UID"))[0] == b"* 2 FETCH (UID 2)"
    assert box.cmd("q8 SEARCH CHARSET KOI8-R ALL")[-1].startswith(b"q8 NO [BADCHARSET")
    assert box.cmd("q9 SEARCH FOO")[-1].startswith(b"q9 BAD")


def test_append_literals(server):
    w = Wire(server.ports["imap"])
    w.login()
    w.send(b"a1 APPEND INBOX (\\Seen) \" 7-Feb-1994 21:52:25 -0800\" {5}\r\n")
    assert w.line() == b"+ Ready for literal data"          # synchronising: asked for
    lines = ok(w.cmd("hello", tag="a1"))
    assert re.match(rb"a1 OK \[APPENDUID \d+ \d+\]", lines[-1])
    w.send(b"a2 APPEND INBOX {3+}\r\nabc {3+}\r\ndef\r\n")   # MULTIAPPEND, no continuation
    lines = w.until("a2")
    assert re.match(rb"a2 OK \[APPENDUID \d+ \d+:\d+\]", lines[-1]), lines
    assert w.cmd("a3 APPEND nowhere {1+}\r\nx") == [b"a3 NO [TRYCREATE] no such mailbox"]
    w.close()


def test_multiappend_is_all_or_nothing(server):
    w = Wire(server.ports["imap"])
    w.login("small@example.org", "pw")
    one = b"Subject: x\r\n\r\n" + b"x" * 180 + b"\r\n"
    w.send(b"m1 APPEND INBOX {%d+}\r\n%s {%d+}\r\n%s\r\n" % (len(one), one, len(one), one))
    assert w.until("m1")[-1].startswith(b"m1 NO [OVERQUOTA]")
    assert ok(w.cmd("m2 STATUS INBOX (MESSAGES)"))[0] == b"* STATUS INBOX (MESSAGES 0)"
    w.close()


def test_store_errors_get_response_codes(server):
    """Each store error has one reply (session.store_error_reply); a missing
    mailbox is TRYCREATE only where it is a destination (APPEND/COPY/MOVE)."""
    w = Wire(server.ports["imap"])
    w.login()
    assert w.cmd("e1 SELECT nowhere") == [b"e1 NO [NONEXISTENT] no such mailbox"]
    assert w.cmd("e2 STATUS nowhere (MESSAGES)") == [b"e2 NO [NONEXISTENT] no such mailbox"]
    assert w.cmd("e3 RENAME nowhere elsewhere") == [b"e3 NO [NONEXISTENT] no such mailbox"]
    assert w.cmd("e4 CREATE Bin (USE (\\Trash))") == \
        [b"e4 NO [USEATTR] another mailbox has the role trash"]
    assert w.cmd("e5 DELETE INBOX") == [b"e5 NO [CANNOT] INBOX cannot be deleted"]
    assert w.cmd("e6 CREATE Trash") == [b"e6 NO [ALREADYEXISTS] mailbox already exists"]
    w.close()
    w = Wire(server.ports["imap"])
    w.login("small@example.org", "pw")
    big = "Subject: x\r\n\r\n" + "x" * 400
    assert w.cmd(f"q1 APPEND INBOX {{{len(big)}+}}\r\n{big}") == [b"q1 NO [OVERQUOTA] mailbox is full"]
    w.close()


def test_list_family(server):
    w = Wire(server.ports["imap"])
    w.login()
    ok(w.cmd("l0 CREATE Work/Plans"))
    ok(w.cmd("l0a SUBSCRIBE Work"))      # CREATE subscribes nothing
    lines = ok(w.cmd('l1 LIST "" "%"'))
    assert b'* LIST (\\HasChildren) "/" Work' in lines
    assert b'* LIST (\\HasNoChildren \\Sent) "/" Sent' in lines
    assert lines[0] == b'* LIST (\\HasNoChildren) "/" INBOX'
    assert ok(w.cmd('l2 LIST "" ""'))[0] == b'* LIST (\\Noselect) "/" ""'
    lines = ok(w.cmd('l3 LIST (SPECIAL-USE) "" "*" RETURN (STATUS (MESSAGES UIDNEXT))'))
    assert b'* LIST (\\HasNoChildren \\Trash) "/" Trash' in lines
    assert b'* STATUS Trash (MESSAGES 0 UIDNEXT 1)' in lines
    assert not any(b"INBOX" in x for x in lines)
    ok(w.cmd("l4 UNSUBSCRIBE Work/Plans"))
    lines = ok(w.cmd('l5 LIST (SUBSCRIBED RECURSIVEMATCH) "" "Work*" RETURN (CHILDREN)'))
    assert lines == [b'* LIST (\\HasChildren \\Subscribed) "/" Work', b"l5 OK LIST completed"]
    assert b'* LSUB () "/" Work' in ok(w.cmd('l6 LSUB "" "*"'))
    assert b'* XLIST (\\HasNoChildren \\Inbox) "/" INBOX' in ok(w.cmd('l7 XLIST "" "INBOX"'))
    assert ok(w.cmd('l7b XLIST "" "Junk"'))[0] == b'* XLIST (\\HasNoChildren \\Spam) "/" Junk'
    assert ok(w.cmd("l8 NAMESPACE"))[0] == b'* NAMESPACE (("" "/")) (("Other Users/" "/")) NIL'
    w.close()


def test_create_special_use_rename_delete_utf7(server):
    w = Wire(server.ports["imap"])
    w.login()
    ok(w.cmd("c1 CREATE Everything (USE (\\All))"))
    assert b'* LIST (\\HasNoChildren \\All) "/" Everything' in ok(w.cmd('c2 LIST "" Everything'))
    assert w.cmd("c3 CREATE Bad (USE (\\Nonsense))")[-1].startswith(b"c3 NO [USEATTR]")
    assert w.cmd("c4 CREATE Everything")[-1].startswith(b"c4 NO [ALREADYEXISTS]")
    assert w.cmd('c4b CREATE "a*b"')[-1].startswith(b"c4b NO [CANNOT]")
    ok(w.cmd("c5 CREATE &AMk-t&AOk-"))                       # "Été" in modified UTF-7
    assert b'* LIST (\\HasNoChildren) "/" &AMk-t&AOk-' in ok(w.cmd('c6 LIST "" "&AMk-*"'))
    ok(w.cmd("c7 RENAME &AMk-t&AOk- Summer"))
    assert ok(w.cmd('c8 LIST "" Summer'))[0] == b'* LIST (\\HasNoChildren) "/" Summer'
    ok(w.cmd("c9 DELETE Summer"))
    assert w.cmd("c10 DELETE Summer")[-1].startswith(b"c10 NO [NONEXISTENT]")
    ok(w.cmd("u1 ENABLE UTF8=ACCEPT"))
    ok(w.cmd('u2 CREATE "Été"'))
    assert b'* LIST (\\HasNoChildren) "/" "\xc3\x89t\xc3\xa9"' in ok(w.cmd('u3 LIST "" "\u00c9*"'))
    # Bytes that are not UTF-8 are the client's error (RFC 6855 section 3), never a server bug.
    for tag, line in ((b"u4", b'CREATE "bad\xff\xfe"'), (b"u5", b'STATUS "\xc3" (MESSAGES)'),
                      (b"u6", b'RENAME INBOX "\xed\xa0\x80"'), (b"u7", b"CREATE {2+}\r\n\xff\xfe"),
                      (b"u8", b'APPEND "\xff" {3+}\r\nabc')):
        w.send(tag + b" " + line + b"\r\n")
        assert w.until(tag.decode())[-1] == tag + b" BAD mailbox name is not valid UTF-8 (RFC 6855 section 3)"
    w.close()


def test_status_id_enable_namespace(server):
    w = Wire(server.ports["imap"])
    assert ok(w.cmd('i1 ID ("name" "test")'))[0] == b'* ID ("name" "Roost" "vendor" "Roost")'
    w.login()
    assert ok(w.cmd("e1 ENABLE IMAP4rev2 CONDSTORE X-UNKNOWN"))[0] == b"* ENABLED IMAP4rev2 CONDSTORE"
    line = ok(w.cmd("s1 STATUS INBOX (MESSAGES UNSEEN UIDNEXT UIDVALIDITY SIZE DELETED HIGHESTMODSEQ MAILBOXID)"))[0]
    assert re.match(rb"\* STATUS INBOX \(MESSAGES \d+ UNSEEN \d+ UIDNEXT \d+ UIDVALIDITY \d+ SIZE \d+ "
                    rb"DELETED \d+ HIGHESTMODSEQ \d+ MAILBOXID \(M\d+\)\)", line)
    lines = ok(w.cmd("e2 SELECT INBOX"))
    assert not any(b"RECENT" in x for x in lines)
    assert b'* LIST () "/" INBOX' in lines
    assert ok(w.cmd("e3 SEARCH ALL"))[0].startswith(b'* ESEARCH (TAG "e3")')
    assert ok(w.cmd("e3b CHECK")) == [b"e3b OK CHECK completed"]
    ok(w.cmd("e4 UNSELECT"))
    assert w.cmd("e5 FETCH 1 FLAGS")[-1].startswith(b"e5 BAD")
    w.close()


def test_objectid(box):
    line = ok(box.cmd("o1 FETCH 2 (EMAILID THREADID)"))[0]
    m = re.fullmatch(rb"\* 2 FETCH \(EMAILID \((E\d+)\) THREADID \((T\d+)\)\)", line)
    assert m, line
    assert ok(box.cmd(f"o2 SEARCH THREADID {m.group(2).decode()}"))[0] == b"* SEARCH 2"
    assert ok(box.cmd("o3 SEARCH THREADID Tnope"))[0] == b"* SEARCH"
    assert ok(box.cmd(f"o4 SEARCH EMAILID {m.group(1).decode()}"))[0] == b"* SEARCH 2"
    assert ok(box.cmd("o5 SEARCH OR EMAILID E999999 EMAILID x"))[0] == b"* SEARCH"


def test_condstore(box):
    lines = ok(box.cmd("c1 FETCH 1:* (MODSEQ)"))
    assert lines[0].startswith(b"* OK [HIGHESTMODSEQ ")   # the first CONDSTORE enabling command
    modseqs = [int(re.search(rb"MODSEQ \((\d+)\)", x).group(1)) for x in lines[1:-1]]
    ok(box.cmd("c2 STORE 2 +FLAGS (\\Answered)"))
    lines = ok(box.cmd(f"c3 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {max(modseqs)})"))
    assert len(lines) == 2 and lines[0].startswith(b"* 2 FETCH (UID 2 FLAGS (\\Answered) MODSEQ (")
    lines = box.cmd(f"c4 STORE 1:2 (UNCHANGEDSINCE {max(modseqs)}) +FLAGS (\\Flagged)")
    assert lines[-1].startswith(b"c4 OK [MODIFIED 2]")
    assert lines[0].startswith(b"* 1 FETCH (FLAGS (\\Flagged) MODSEQ (")


def test_qresync_select(server, box):
    lines = ok(box.cmd(f"q0 STATUS {box.name} (UIDVALIDITY HIGHESTMODSEQ)"))
    validity, modseq = map(int, re.search(rb"UIDVALIDITY (\d+) HIGHESTMODSEQ (\d+)", lines[0]).groups())
    ok(box.cmd("q1 STORE 1 +FLAGS (\\Deleted)"))
    ok(box.cmd("q1 STORE 2 +FLAGS (\\Answered)"))
    ok(box.cmd("q2 EXPUNGE"))
    w = Wire(server.ports["imap"])
    w.login()
    ok(w.cmd("q3 ENABLE QRESYNC"))
    lines = ok(w.cmd(f"q4 SELECT {box.name} (QRESYNC ({validity} {modseq} 1:2))"))
    assert b"* VANISHED (EARLIER) 1" in lines
    assert any(x.startswith(b"* 1 FETCH (FLAGS (\\Answered) UID 2 MODSEQ") for x in lines)
    w.close()


def test_qresync_expunge_is_vanished_and_fetch_vanished(box):
    ok(box.cmd("v0 ENABLE QRESYNC"))
    lines = ok(box.cmd("v1 FETCH 1:2 (MODSEQ)"))
    low = min(int(re.search(rb"MODSEQ \((\d+)\)", x).group(1)) for x in lines[:-1])
    ok(box.cmd("v2 STORE 1 +FLAGS.SILENT (\\Deleted)"))
    assert ok(box.cmd("v3 EXPUNGE"))[0] == b"* VANISHED 1"
    lines = ok(box.cmd(f"v4 UID FETCH 1:* (FLAGS) (CHANGEDSINCE {low - 1} VANISHED)"))
    assert lines[0] == b"* VANISHED (EARLIER) 1"
    assert lines[1].startswith(b"* 1 FETCH (UID 2 FLAGS () MODSEQ (")
    assert box.cmd("v5 FETCH 1 (FLAGS) (VANISHED)")[-1].startswith(b"v5 BAD")


def test_rev2_behaviour(box):
    ok(box.cmd("r0 ENABLE IMAP4rev2"))
    lines = ok(box.cmd(f"r1 SELECT {box.name}"))
    assert lines[0] == b"* OK [CLOSED] previous mailbox closed"
    assert not any(b"RECENT" in x or b"[UNSEEN" in x for x in lines)
    assert ok(box.cmd("r2 UID SEARCH ALL"))[0] == b'* ESEARCH (TAG "r2") UID ALL 1:2'
    assert ok(box.cmd("r3 SEARCH SEEN"))[0] == b'* ESEARCH (TAG "r3")'


def test_idle_in_authenticated_state_and_bad_done(server):
    w = Wire(server.ports["imap"])
    w.login()
    w.send("i1 IDLE\r\n")
    assert w.line() == b"+ idling"
    assert w.cmd("NOT-DONE", tag="i1")[-1] == b"i1 BAD expected DONE to end IDLE"
    ok(w.cmd("i2 NOOP"))


def test_delete_selected_mailbox(box):
    ok(box.cmd(f"d1 DELETE {box.name}"))
    assert box.cmd("d2 FETCH 1 FLAGS")[-1].startswith(b"d2 BAD")
    ok(box.cmd("d3 NOOP"))


def test_other_connection_sees_updates(server, box):
    other = Wire(server.ports["imap"])
    other.login()
    ok(other.cmd(f"o1 SELECT {box.name}"))
    ok(box.cmd("u1 STORE 1 +FLAGS (\\Flagged)"))
    data = b"Subject: new\r\n\r\nnew\r\n"
    ok(box.cmd(f"u2 APPEND {box.name} {{{len(data)}+}}\r\n".encode().decode() + data.decode()))
    ok(box.cmd("u3 STORE 2 +FLAGS.SILENT (\\Deleted)"))
    ok(box.cmd("u4 EXPUNGE"))
    lines = ok(other.cmd("o2 FETCH 1 UID"))      # no EXPUNGE during FETCH
    assert not any(b"EXPUNGE" in x for x in lines)
    assert b"* 3 EXISTS" in lines
    lines = ok(other.cmd("o3 NOOP"))
    assert lines[0] == b"* 2 EXPUNGE"
    other.close()


def test_flags_after_select_are_fresh(server, box):
    """SELECT's flag rows serve the next FETCH FLAGS only while nothing changed."""
    ok(box.cmd(f"a1 SELECT {box.name}"))
    other = Wire(server.ports["imap"])
    other.login()
    ok(other.cmd(f"o1 SELECT {box.name}"))
    ok(other.cmd("o2 STORE 1 +FLAGS (\\Flagged)"))
    lines = ok(box.cmd("a2 UID FETCH 1:* (FLAGS)"))
    assert b"* 1 FETCH (UID 1 FLAGS (\\Flagged))" in lines, lines
    other.close()


def test_idle_sees_lmtp_delivery_quickly(server):
    w = Wire(server.ports["imap"])
    w.login()
    ok(w.cmd("i0 SELECT INBOX"))
    w.send("i1 IDLE\r\n")
    assert w.line() == b"+ idling"
    start = time.monotonic()
    deliver(server, b"Subject: ping\r\n\r\nping\r\n")
    delivered = time.monotonic()
    line = w.line()
    seen = time.monotonic()
    assert re.fullmatch(rb"\* \d+ EXISTS", line)
    assert seen - delivered < 0.1, f"IDLE took {seen - delivered:.3f}s after the LMTP reply"
    assert seen - start < 5
    assert ok(w.cmd("DONE", tag="i1"))[-1] == b"i1 OK IDLE terminated"
    w.close()


def test_pipelined_commands_answer_in_order(box):
    box.send(b"p1 NOOP\r\np2 FETCH 1 UID\r\np3 SEARCH ALL\r\np4 STORE 1 +FLAGS (x)\r\np5 NOOP\r\n")
    tags = [line.split(b" ")[0] for line in box.until("p5") if not line.startswith(b"*")]
    assert tags == [b"p1", b"p2", b"p3", b"p4", b"p5"]


def test_long_pipeline_pauses_reading_but_loses_nothing(box):
    box.send(b"".join(b"n%d NOOP\r\n" % i for i in range(300)) + b"last FETCH 1 (UID)\r\n")
    lines = box.until("last")
    tags = [x.split(b" ")[0] for x in lines if not x.startswith(b"*")]
    assert tags == [b"n%d" % i for i in range(300)] + [b"last"]


def test_bad_input_gets_bad_not_a_crash(server):
    w = Wire(server.ports["imap"])
    assert w.cmd('b1 LOGIN "a\rb" c')[-1].startswith(b"b1 BAD")
    assert w.cmd("b2 FROB")[-1] == b"b2 BAD unknown command FROB"
    assert w.cmd('b3 LOGIN "unterminated')[-1].startswith(b"b3 BAD")
    assert w.cmd("b4 APPEND INBOX {99999999999}")[-1].startswith(b"b4 NO [TOOBIG]")
    w.send(b"x" * 70000 + b"\r\n")
    assert w.line().startswith(b"* BAD")
    assert w.cmd("b5 FETCH (")[-1].startswith(b"b5 BAD")
    assert w.cmd("b6 NOOP")[-1] == b"b6 OK NOOP completed"
    w.close()


def test_logindisabled_on_non_loopback(tmp_path):
    """A listener on a non-loopback address refuses cleartext passwords."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))          # no packet is sent; picks the outward address
        addrs = [probe.getsockname()[0]]
    except OSError:
        addrs = []
    finally:
        probe.close()
    addrs = [a for a in addrs if not a.startswith("127.")]
    if not addrs:
        pytest.skip("no non-loopback IPv4 address on this machine")
    from tests.conftest import RoostServer, add_user
    add_user(tmp_path, USER, PASSWORD)
    srv = RoostServer(tmp_path, listeners={"imap": f"{addrs[0]}:0"}).start()
    try:
        w = Wire(srv.ports["imap"], host=addrs[0])
        assert b"LOGINDISABLED" in w.greeting and b"AUTH=PLAIN" not in w.greeting
        assert w.cmd(f"a1 LOGIN {USER} {PASSWORD}")[-1].startswith(b"a1 NO [PRIVACYREQUIRED]")
        w.close()
    finally:
        srv.stop()


def test_shutdown_says_bye(tmp_path):
    srv = start_server(tmp_path, listeners=("imap",))
    try:
        w = Wire(srv.ports["imap"])
        w.login()
        w.send("i1 IDLE\r\n")
        assert w.line() == b"+ idling"
        srv.proc.send_signal(signal.SIGTERM)
        assert w.line() == b"* BYE Roost is shutting down"
    finally:
        srv.stop()


def test_connections_per_user_and_ip_are_limited(tmp_path):
    from tests.conftest import RoostServer, add_user
    add_user(tmp_path / "data", USER, PASSWORD)
    conf = tmp_path / "roost.toml"
    conf.write_text("[limits]\nconnections_per_user_ip = 2\n")
    srv = RoostServer(tmp_path / "data", listeners=("imap",), config=conf).start()
    try:
        first, second, third = (Wire(srv.ports["imap"]) for _ in range(3))
        first.login()
        second.login()
        assert third.cmd(f"a1 LOGIN {USER} {PASSWORD}")[-1].startswith(b"a1 NO [LIMIT]")
        ok(first.cmd("z LOGOUT"))
        first.close()
        time.sleep(0.2)
        ok(third.cmd(f"a2 LOGIN {USER} {PASSWORD}"))
    finally:
        close_all()
        srv.stop()
