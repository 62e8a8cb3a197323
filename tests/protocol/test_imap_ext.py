"""COMPRESS=DEFLATE (RFC 4978), UNAUTHENTICATE (RFC 8437), WITHIN (RFC 5032)
and MULTISEARCH (RFC 7377) against a real ``roost serve``: raw transcripts,
a real zlib stream on plain and TLS connections, and IMAPClient."""

import imaplib
import re
import socket
import time
import ssl
import zlib

import pytest

from tests.imap_helpers import OPEN, PASSWORD, USER, Wire, _close_connections, close_all, deliver, start_server  # noqa: F401 - _close_connections is a fixture

MSG = (b"From: Fred <fred@example.net>\r\nTo: alice@example.org\r\nSubject: hello %d\r\n"
       b"Message-Id: <m%d@example.net>\r\n\r\nsome body text %d\r\n")


NOTIFY_USERS = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("ext"),
                       users=((USER, PASSWORD), ("bob@example.org", "pw"),
                              *((f"n{i}@example.org", "pw") for i in range(1, NOTIFY_USERS + 1))))
    yield srv
    close_all()
    srv.stop()


def ok(lines):
    assert lines[-1].split(b" ")[1] == b"OK", lines
    return lines


class Deflated:
    """An IMAP connection after COMPRESS DEFLATE: raw DEFLATE both ways."""

    def __init__(self, sock, leftover=b""):
        self.sock = sock
        self.zout = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.zin = zlib.decompressobj(-15)
        self.buf = self.zin.decompress(leftover) if leftover else b""
        self.wire_in = 0

    def send(self, data):
        data = data.encode() if isinstance(data, str) else data
        self.sock.sendall(self.zout.compress(data) + self.zout.flush(zlib.Z_SYNC_FLUSH))

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.wire_in += len(chunk)
            self.buf += self.zin.decompress(chunk)
        line, self.buf = self.buf.split(b"\r\n", 1)
        m = re.search(rb"\{(\d+)\}$", line)
        if m:
            n = int(m.group(1))
            while len(self.buf) < n:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                self.wire_in += len(chunk)
                self.buf += self.zin.decompress(chunk)
            line += b"\r\n" + self.buf[:n]
            self.buf = self.buf[n:]
            rest = self.line()
            return line + rest
        return line

    def cmd(self, text):
        tag = text.split(" ", 1)[0].encode()
        self.send(text + "\r\n")
        lines = []
        while True:
            lines.append(self.line())
            if lines[-1].startswith(tag + b" "):
                return lines


def _compress(w):
    """COMPRESS DEFLATE on a logged-in Wire; the reply is read byte by byte so
    no compressed octet is taken into the plain reader's buffer."""
    w.send("z1 COMPRESS DEFLATE\r\n")
    line = b""
    while not line.endswith(b"\r\n"):
        b = w.sock.recv(1)
        assert b, line
        line += b
    assert line == b"z1 OK DEFLATE active\r\n", line
    return Deflated(w.sock)


def _raw(port, tls=False):
    """A Wire whose greeting and login are read without buffering ahead."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        sock = ctx.wrap_socket(sock)

    class W:
        def close(self):
            self.sock.close()
    w = W()
    w.sock = sock
    OPEN.append(w)

    def send(data):
        sock.sendall(data.encode() if isinstance(data, str) else data)

    def readline():
        line = b""
        while not line.endswith(b"\r\n"):
            b = sock.recv(1)
            assert b, line
            line += b
        return line
    w.send, w.readline = send, readline
    assert readline().startswith(b"* OK")
    send(f'L1 LOGIN "{USER}" "{PASSWORD}"\r\n')
    assert readline().startswith(b"L1 OK")
    return w


@pytest.mark.parametrize("tls", [False, True])
def test_compress_deflate_plain_and_tls(server, tls):
    w = _raw(server.ports["imaps" if tls else "imap"], tls)
    z = _compress(w)
    caps = ok(z.cmd("a1 CAPABILITY"))[0]
    assert b"COMPRESS=DEFLATE" in caps
    # a second COMPRESS is refused, and the stream goes on
    assert z.cmd("a2 COMPRESS DEFLATE")[-1].startswith(b"a2 NO [COMPRESSIONACTIVE]")
    ok(z.cmd("a3 CREATE Zipped"))
    body = b"Subject: big\r\n\r\n" + b"the same line again and again\r\n" * 4000
    z.send(f"a4 APPEND Zipped {{{len(body)}+}}\r\n".encode() + body + b"\r\n")
    lines = []
    while not lines or not lines[-1].startswith(b"a4 "):
        lines.append(z.line())
    ok(lines)
    ok(z.cmd("a5 SELECT Zipped"))
    before = z.wire_in
    lines = ok(z.cmd("a6 FETCH 1 BODY.PEEK[]"))
    assert body in lines[0]
    assert z.wire_in - before < len(body) // 10      # it really was compressed
    ok(z.cmd("a8 UNSELECT"))
    ok(z.cmd("a9 DELETE Zipped"))
    lines = z.cmd("a10 LOGOUT")
    assert lines[0].startswith(b"* BYE")


def test_compress_not_before_login_and_unknown_mechanism(server):
    w = Wire(server.ports["imap"])
    assert b"COMPRESS=DEFLATE" not in w.greeting
    assert w.cmd("a1 COMPRESS DEFLATE")[-1].startswith(b"a1 BAD")
    w.login()
    assert w.cmd("a2 COMPRESS LZW")[-1].startswith(b"a2 BAD")
    ok(w.cmd("a3 NOOP"))                     # still uncompressed


def test_compress_corrupt_stream_is_dropped(server):
    w = _raw(server.ports["imap"])
    _compress(w)
    w.sock.sendall(b"\xff\xff\xff\xff garbage that is not deflate")
    w.sock.settimeout(10)
    data = b""
    try:
        while True:
            chunk = w.sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except ConnectionError:
        pass
    assert b"BYE" in zlib.decompressobj(-15).decompress(data)


def test_compress_bomb_is_bounded(server):
    """A compressed command that inflates past the line limit gets BAD, not memory."""
    w = _raw(server.ports["imap"])
    z = _compress(w)
    z.send(b"a1 NOOP " + b"x" * (8 << 20) + b"\r\n")    # 8 MB inflated, a few KB on the wire
    lines = []
    while not lines or not re.match(rb"(a1|\*) (BAD|BYE)", lines[-1]):
        lines.append(z.line())
    assert b"BAD" in lines[-1] or b"BYE" in lines[-1]


def test_unauthenticate(server):
    w = Wire(server.ports["imap"])
    assert b"UNAUTHENTICATE" not in w.greeting
    assert w.cmd("a0 UNAUTHENTICATE")[-1].startswith(b"a0 BAD")
    w.login()
    assert b"UNAUTHENTICATE" in ok(w.cmd("a1 CAPABILITY"))[0]
    ok(w.cmd("a2 ENABLE CONDSTORE"))
    ok(w.cmd("a3 SELECT INBOX"))
    ok(w.cmd("a3b NOTIFY SET (PERSONAL (MessageNew MessageExpunge))"))
    lines = ok(w.cmd("a4 UNAUTHENTICATE"))
    deliver(server, MSG % (9, 109, 9))         # NOTIFY went with the login: nothing arrives
    _quiet(w)
    assert b"AUTH=PLAIN" in lines[-1]
    # not authenticated again: no mailbox commands, no selected mailbox
    assert w.cmd("a5 FETCH 1 FLAGS")[-1].startswith(b"a5 BAD")
    assert w.cmd("a6 LIST \"\" *")[-1].startswith(b"a6 BAD")
    # a different user can log in on the same connection and sees only its own
    lines = w.cmd('a7 LOGIN "bob@example.org" "pw"')
    assert lines[-1].startswith(b"a7 OK")
    # ENABLE state was dropped: CONDSTORE is enabled anew
    assert ok(w.cmd("a8 ENABLE CONDSTORE"))[0] == b"* ENABLED CONDSTORE"
    assert ok(w.cmd("a9 STATUS INBOX (MESSAGES)"))[0] == b'* STATUS INBOX (MESSAGES 0)'


def test_within_older_younger(server):
    w = Wire(server.ports["imap"])
    w.login()
    ok(w.cmd("a1 CREATE Within"))
    old = MSG % (1, 1, 1)
    new = MSG % (2, 2, 2)
    w.send(f'a2 APPEND Within "01-Jan-2020 10:00:00 +0000" {{{len(old)}+}}\r\n'.encode() + old + b"\r\n")
    ok(w.until("a2"))
    w.send(f"a3 APPEND Within {{{len(new)}+}}\r\n".encode() + new + b"\r\n")
    ok(w.until("a3"))
    ok(w.cmd("a4 SELECT Within"))
    assert b"WITHIN" in ok(w.cmd("a5 CAPABILITY"))[0]
    assert ok(w.cmd("a6 SEARCH YOUNGER 3600"))[0] == b"* SEARCH 2"
    assert ok(w.cmd("a7 SEARCH OLDER 3600"))[0] == b"* SEARCH 1"
    assert ok(w.cmd("a8 SEARCH NOT OLDER 3600"))[0] == b"* SEARCH 2"
    assert ok(w.cmd("a9 UID SEARCH OLDER 1 YOUNGER 100000000000"))[0].startswith(b"* SEARCH")
    assert w.cmd("a10 SEARCH YOUNGER 0")[-1].startswith(b"a10 BAD")
    assert w.cmd("a11 SEARCH OLDER soon")[-1].startswith(b"a11 BAD")


def _append(w, box, data, tag):
    w.send(f"{tag} APPEND {box} {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    return ok(w.until(tag))


def test_multisearch_esearch_in(server):
    """RFC 7377 section 2's shape: one ESEARCH response per mailbox with matches."""
    w = Wire(server.ports["imap"])
    w.login()
    for box in ("MS", "MS/Sub", "MS/Sub/Deep", "Other"):
        ok(w.cmd(f'c1 CREATE "{box}"'))
    _append(w, "MS", MSG % (1, 101, 1), "p1")
    _append(w, "MS", b"Subject: nothing\r\n\r\nunrelated\r\n", "p2")
    _append(w, "MS", MSG % (3, 103, 3), "p3")
    _append(w, "MS/Sub", MSG % (4, 104, 4), "p4")
    _append(w, "MS/Sub/Deep", MSG % (5, 105, 5), "p5")
    _append(w, "Other", MSG % (6, 106, 6), "p6")
    assert b"MULTISEARCH" in ok(w.cmd("a0 CAPABILITY"))[0]
    validity = {}
    for box in ("MS", "MS/Sub", "MS/Sub/Deep", "Other"):
        line = ok(w.cmd(f'v1 STATUS "{box}" (UIDVALIDITY)'))[0]
        validity[box] = int(re.search(rb"UIDVALIDITY (\d+)", line).group(1))
    lines = ok(w.cmd('a1 ESEARCH IN (SUBTREE "MS") RETURN (MIN MAX COUNT ALL) FROM "fred"'))
    assert lines[:-1] == [
        b'* ESEARCH (TAG "a1" MAILBOX MS UIDVALIDITY %d) UID MIN 1 MAX 3 COUNT 2 ALL 1,3' % validity["MS"],
        b'* ESEARCH (TAG "a1" MAILBOX MS/Sub UIDVALIDITY %d) UID MIN 1 MAX 1 COUNT 1 ALL 1'
        % validity["MS/Sub"],
        b'* ESEARCH (TAG "a1" MAILBOX MS/Sub/Deep UIDVALIDITY %d) UID MIN 1 MAX 1 COUNT 1 ALL 1'
        % validity["MS/Sub/Deep"]]
    lines = ok(w.cmd('a2 ESEARCH IN (SUBTREE-ONE "MS" MAILBOXES ("Other")) SUBJECT "hello"'))
    boxes = [re.search(rb"MAILBOX (\S+)", x).group(1) for x in lines[:-1]]
    assert boxes == [b"MS", b"MS/Sub", b"Other"]
    assert lines[0].endswith(b"UID ALL 1,3")        # RETURN () defaults to ALL
    lines = ok(w.cmd('a3 ESEARCH IN (PERSONAL) RETURN (COUNT) UID 2:* BODY "unrelated"'))
    assert lines[:-1] == [b'* ESEARCH (TAG "a3" MAILBOX MS UIDVALIDITY %d) UID COUNT 1' % validity["MS"]]
    # no selected mailbox: ESEARCH without IN, sequence numbers, SAVE are refused
    assert w.cmd("a4 ESEARCH ALL")[-1].startswith(b"a4 BAD")
    assert w.cmd("a5 ESEARCH IN (PERSONAL) 1:3")[-1].startswith(b"a5 BAD")
    assert w.cmd("a6 ESEARCH IN (PERSONAL) RETURN (SAVE) ALL")[-1].startswith(b"a6 BAD")
    assert w.cmd("a7 ESEARCH IN (NOWHERE) ALL")[-1].startswith(b"a7 BAD")
    assert w.cmd("a7b ESEARCH IN (SELECTED-DELAYED) ALL")[-1].startswith(b"a7b BAD")   # NOTIFY's only
    assert w.cmd("a7c ESEARCH IN (SUBTREE-ONE) ALL")[-1].startswith(b"a7c BAD")
    # selected: without IN it searches the selected mailbox
    ok(w.cmd("a8 SELECT MS"))
    lines = ok(w.cmd('a9 ESEARCH RETURN (COUNT) TEXT "body"'))
    assert lines[:-1] == [b'* ESEARCH (TAG "a9" MAILBOX MS UIDVALIDITY %d) UID COUNT 2' % validity["MS"]]
    lines = ok(w.cmd('a10 ESEARCH IN (SELECTED INBOXES) FROM "nobody-at-all"'))
    assert lines == [b"a10 OK ESEARCH completed"]


def test_multisearch_with_imapclient(server):
    imapclient = pytest.importorskip("imapclient")
    with imapclient.IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False) as c:
        c.login(USER, PASSWORD)
        assert b"MULTISEARCH" in c.capabilities() and b"WITHIN" in c.capabilities()
        c.create_folder("IC")
        c.append("IC", MSG % (7, 107, 7))
        c.select_folder("IC")
        assert c.search(["YOUNGER", 600]) == [1]
        assert c.search(["OLDER", 600]) == []
        imaplib.Commands.setdefault("ESEARCH", ("AUTH", "SELECTED"))
        typ, data = c._imap._simple_command("ESEARCH", "IN", "(MAILBOXES IC)", "FROM", "fred")
        assert typ == "OK"
        untagged = c._imap.untagged_responses.pop("ESEARCH")
        assert untagged[0].endswith(b"UID ALL 1")


# --- NOTIFY (RFC 5465) ----------------------------------------------------------


def _until(w, pred, limit=20):
    """Lines the server sends unasked, up to the first that ``pred`` accepts."""
    lines = []
    for _ in range(limit):
        lines.append(w.line())
        if pred(lines[-1]):
            return lines
    raise AssertionError(lines)


def _quiet(w, seconds=0.5):
    """Nothing arrives within ``seconds``."""
    w.sock.settimeout(seconds)
    try:
        data = w.sock.recv(4096)
    except (socket.timeout, TimeoutError):
        data = b""
    finally:
        w.sock.settimeout(20)
    assert data == b"", data


@pytest.fixture
def notify_user(server):
    """An unused account per test, so INBOX counts start at zero."""
    _counter[0] += 1
    assert _counter[0] <= NOTIFY_USERS
    return f"n{_counter[0]}@example.org"


_counter = [0]


def _login(server, address):
    w = Wire(server.ports["imap"])
    assert w.cmd(f'L1 LOGIN "{address}" "pw"')[-1].startswith(b"L1 OK")
    return w


def test_notify_sees_delivery_into_another_mailbox(server, notify_user):
    w = _login(server, notify_user)
    assert b"NOTIFY" in ok(w.cmd("a0 CAPABILITY"))[0]
    ok(w.cmd("a1 CREATE Work"))
    ok(w.cmd("a2 SELECT Work"))
    lines = ok(w.cmd("a3 NOTIFY SET STATUS (SELECTED (MessageNew MessageExpunge)) "
                     "(PERSONAL (MessageNew MessageExpunge))"))
    status = [x for x in lines if x.startswith(b"* STATUS")]
    assert any(x.startswith(b"* STATUS INBOX (MESSAGES 0 UIDNEXT 1 ") for x in status), status
    assert not any(b"Work" in x for x in status)        # the selected mailbox is not in PERSONAL
    deliver(server, MSG % (1, 201, 1), to=notify_user)
    # no command sent: the STATUS arrives by itself
    line = _until(w, lambda x: x.startswith(b"* STATUS"))[-1]
    assert line.startswith(b"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 ")
    assert b" UNSEEN 1" in line
    deliver(server, MSG % (2, 202, 2), to=notify_user)
    assert _until(w, lambda x: x.startswith(b"* STATUS"))[-1].startswith(
        b"* STATUS INBOX (MESSAGES 2 UIDNEXT 3 ")
    # a flag change is not a MessageNew/MessageExpunge: nothing is sent
    other = _login(server, notify_user)
    ok(other.cmd("b1 SELECT INBOX"))
    ok(other.cmd("b2 STORE 1 +FLAGS (\\Seen)"))
    _quiet(w)
    # ... unless FlagChange is asked for
    ok(w.cmd("a4 NOTIFY SET (INBOXES (MessageNew MessageExpunge FlagChange))"))
    ok(other.cmd("b3 STORE 2 +FLAGS (\\Seen)"))
    line = _until(w, lambda x: x.startswith(b"* STATUS"))[-1]
    assert line.startswith(b"* STATUS INBOX (MESSAGES 2 UIDNEXT 3 ") and b"UNSEEN 0" in line
    # NOTIFY NONE: quiet again
    ok(w.cmd("a5 NOTIFY NONE"))
    deliver(server, MSG % (3, 203, 3), to=notify_user)
    _quiet(w)


def test_notify_during_idle(server, notify_user):
    """The usual client pattern: NOTIFY for other mailboxes, then IDLE on one."""
    w = _login(server, notify_user)
    ok(w.cmd("a1 CREATE Lists"))
    ok(w.cmd("a2 NOTIFY SET (SELECTED (MessageNew MessageExpunge)) (INBOXES (MessageNew MessageExpunge))"))
    ok(w.cmd("a3 SELECT Lists"))
    w.send("a4 IDLE\r\n")
    assert w.line().startswith(b"+ ")
    deliver(server, MSG % (31, 231, 31), to=notify_user)
    line = _until(w, lambda x: x.startswith(b"* STATUS"))[-1]
    assert line.startswith(b"* STATUS INBOX (MESSAGES 1 UIDNEXT 2 ")
    w.send("DONE\r\n")
    assert w.until("a4")[-1] == b"a4 OK IDLE terminated"


def test_notify_selected_pushes_exists_fetch_and_expunge(server, notify_user):
    w = _login(server, notify_user)
    ok(w.cmd("a1 SELECT INBOX"))
    ok(w.cmd("a2 NOTIFY SET (SELECTED (MessageNew (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)]) "
             "MessageExpunge FlagChange))"))
    deliver(server, MSG % (11, 211, 11), to=notify_user)
    lines = _until(w, lambda x: b"FETCH" in x)
    assert b"* 1 EXISTS" in lines
    assert lines[-1].startswith(b"* 1 FETCH (UID 1 BODY[HEADER.FIELDS (SUBJECT)] {")
    assert b"Subject: hello 11" in lines[-1]
    other = _login(server, notify_user)
    ok(other.cmd("b1 SELECT INBOX"))
    ok(other.cmd("b2 STORE 1 +FLAGS (\\Flagged)"))
    line = _until(w, lambda x: b"FETCH" in x)[-1]
    assert line.startswith(b"* 1 FETCH (FLAGS (") and b"\\Flagged" in line.split(b")")[0]
    ok(other.cmd("b3 STORE 1 +FLAGS (\\Deleted)"))
    _until(w, lambda x: b"FETCH" in x)
    ok(other.cmd("b4 EXPUNGE"))
    assert _until(w, lambda x: b"EXPUNGE" in x)[-1] == b"* 1 EXPUNGE"
    ok(w.cmd("a3 NOOP"))


def test_notify_selected_delayed_holds_expunges(server, notify_user):
    w = _login(server, notify_user)
    deliver(server, MSG % (21, 221, 21), to=notify_user)
    ok(w.cmd("a1 SELECT INBOX"))
    ok(w.cmd("a2 NOTIFY SET (SELECTED-DELAYED (MessageNew MessageExpunge))"))
    other = _login(server, notify_user)
    ok(other.cmd("b1 SELECT INBOX"))
    ok(other.cmd("b2 STORE 1 +FLAGS (\\Deleted)"))
    ok(other.cmd("b3 EXPUNGE"))
    deliver(server, MSG % (22, 222, 22), to=notify_user)
    # the new message is pushed, the expunge is not (yet)
    lines = _until(w, lambda x: x.endswith(b"EXISTS"))
    assert lines[-1] == b"* 2 EXISTS", lines
    _quiet(w)
    lines = ok(w.cmd("a3 NOOP"))
    assert b"* 1 EXPUNGE" in lines


def test_notify_mailbox_names(server, notify_user):
    w = _login(server, notify_user)
    ok(w.cmd("a1 NOTIFY SET (SUBTREE Projects (MailboxName))"))
    other = _login(server, notify_user)
    ok(other.cmd("b1 CREATE Projects/Alpha"))
    lines = _until(w, lambda x: b"Alpha" in x)
    assert b'* LIST () "/" Projects/Alpha' in lines
    ok(other.cmd("b2 RENAME Projects/Alpha Projects/Beta"))
    line = _until(w, lambda x: b"Beta" in x)[-1]
    assert line == b'* LIST () "/" Projects/Beta ("OLDNAME" (Projects/Alpha))'
    ok(other.cmd("b3 CREATE Elsewhere"))         # outside the subtree: not reported
    ok(other.cmd("b4 DELETE Projects/Beta"))
    line = _until(w, lambda x: b"Beta" in x)[-1]
    assert line == b'* LIST (\\NonExistent) "/" Projects/Beta'
    lines = ok(w.cmd("a2 NOOP"))
    assert not any(b"Elsewhere" in x for x in lines)


def test_notify_errors(server, notify_user):
    w = _login(server, notify_user)
    line = w.cmd("a1 NOTIFY SET (PERSONAL (MessageNew MessageExpunge AnnotationChange))")[-1]
    assert line.startswith(b"a1 NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName "
                           b"SubscriptionChange MailboxMetadataChange ServerMetadataChange)]")
    assert w.cmd("a2 NOTIFY SET (PERSONAL (MessageNew))")[-1].startswith(b"a2 BAD")
    assert w.cmd("a3 NOTIFY SET (PERSONAL (FlagChange))")[-1].startswith(b"a3 BAD")
    assert w.cmd("a4 NOTIFY SET (SELECTED (MailboxName))")[-1].startswith(b"a4 BAD")
    assert w.cmd("a5 NOTIFY SET (NOWHERE (MailboxName))")[-1].startswith(b"a5 BAD")
    assert w.cmd("a6 NOTIFY SET (PERSONAL (MessageNew (UID) MessageExpunge))")[-1].startswith(b"a6 BAD")
    assert w.cmd("a7 NOTIFY SET (SELECTED (MessageNew (BODY[]) MessageExpunge))")[-1].startswith(b"a7 BAD")
    assert w.cmd("a8 NOTIFY MAYBE")[-1].startswith(b"a8 BAD")
    assert w.cmd("a8b NOTIFY SET (SUBTREE-ONE INBOX (MailboxName))")[-1].startswith(b"a8b BAD")
    ok(w.cmd("a9 NOTIFY NONE"))
    ok(w.cmd("a10 NOTIFY SET (INBOXES NONE)"))
    v = Wire(server.ports["imap"])
    assert v.cmd("b1 NOTIFY NONE")[-1].startswith(b"b1 BAD")      # not before login


# --- INPROGRESS (RFC 9585) ------------------------------------------------------


def test_inprogress_during_a_long_fetch(server):
    """A FETCH the client reads slowly runs for seconds: INPROGRESS notices
    with the tag and messages done of messages asked for come between its
    FETCH responses (never inside one)."""
    w = Wire(server.ports["imap"])
    w.login()
    assert b"INPROGRESS" in ok(w.cmd("a0 CAPABILITY"))[0]
    ok(w.cmd("a1 CREATE Slow"))
    # 6 MB: more than the server's socket buffer (4 MB at most here), the
    # client's (64 KB) and the session's write buffer together
    big = b"Subject: big\r\n\r\n" + (b"%0510d\r\n" % 7) * 1000      # 512 KB
    for i in range(12):
        _append(w, "Slow", big, f"p{i}")
    ok(w.cmd("a2 SELECT Slow"))
    slow = socket.create_connection(("127.0.0.1", server.ports["imap"]), timeout=20)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    reader = Wire.__new__(Wire)
    reader.sock, reader.file = slow, slow.makefile("rb")
    OPEN.append(reader)
    reader.greeting = reader.line()
    reader.login()
    ok(reader.cmd("b1 SELECT Slow"))
    reader.send("b2 FETCH 1:* (UID BODY.PEEK[])\r\n")
    time.sleep(3)                    # the server waits on us for longer than FIRST
    lines = reader.until("b2")
    ok(lines)
    notices = [x for x in lines if x.startswith(b"* OK [INPROGRESS")]
    assert notices, [x[:60] for x in lines]
    m = re.match(rb'\* OK \[INPROGRESS \("b2" (\d+) 12\)\]', notices[0])
    assert m and 0 <= int(m.group(1)) < 12, notices
    fetches = [x for x in lines if b" FETCH (" in x]
    assert len(fetches) == 12 and all(big in x for x in fetches)
    # a quick command gets none
    lines = ok(reader.cmd("b3 FETCH 1 UID"))
    assert not any(b"INPROGRESS" in x for x in lines)


# --- UIDONLY (RFC 9586) ---------------------------------------------------------


def test_uidonly(server):
    w = Wire(server.ports["imap"])
    w.login()
    assert b"UIDONLY" in ok(w.cmd("a0 CAPABILITY"))[0]
    ok(w.cmd("a1 CREATE UO"))
    for i in range(1, 5):
        _append(w, "UO", MSG % (i, 300 + i, i), f"p{i}")
    ok(w.cmd("a2 SELECT UO"))
    ok(w.cmd("a3 STORE 1 +FLAGS (\\Deleted)"))
    ok(w.cmd("a4 EXPUNGE"))                 # UIDs 2 3 4 remain, at sequence numbers 1 2 3
    assert ok(w.cmd("a5 ENABLE UIDONLY"))[0] == b"* ENABLED UIDONLY"
    for line in ("b1 FETCH 1 FLAGS", "b2 STORE 1 +FLAGS (\\Seen)", "b3 COPY 1 INBOX",
                 "b4 MOVE 1 INBOX", "b5 SEARCH ALL", "b6 UID SEARCH 1:2"):
        tag = line.split()[0].encode()
        assert w.cmd(line)[-1].startswith(tag + b" BAD [UIDREQUIRED]"), line
    # RFC 9586 section 3's shape: the number is the UID
    lines = ok(w.cmd("c1 UID FETCH 3:4 (FLAGS)"))
    assert lines[:-1] == [b"* 3 UIDFETCH (FLAGS (\\Recent))", b"* 4 UIDFETCH (FLAGS (\\Recent))"]
    lines = ok(w.cmd("c2 UID FETCH 2 (UID RFC822.SIZE ENVELOPE)"))
    assert lines[0].startswith(b"* 2 UIDFETCH (RFC822.SIZE ") and b"UID 2" not in lines[0]
    lines = ok(w.cmd("c3 UID FETCH 2 BODY.PEEK[HEADER.FIELDS (SUBJECT)]"))
    assert lines[0].startswith(b"* 2 UIDFETCH (BODY[HEADER.FIELDS (SUBJECT)] {")
    lines = ok(w.cmd("c4 UID STORE 3 +FLAGS (\\Flagged)"))
    assert lines[0] == b"* 3 UIDFETCH (FLAGS (\\Recent \\Flagged))"
    assert ok(w.cmd("c5 UID SEARCH FLAGGED"))[0] == b"* SEARCH 3"
    # another session's flag change and expunge: UIDFETCH and VANISHED, never EXPUNGE
    other = Wire(server.ports["imap"])
    other.login()
    ok(other.cmd("d1 SELECT UO"))
    ok(other.cmd("d2 UID STORE 4 +FLAGS (\\Deleted)"))
    lines = ok(w.cmd("c6 NOOP"))
    assert b"* 4 UIDFETCH (FLAGS (\\Recent \\Deleted))" in lines
    ok(other.cmd("d3 EXPUNGE"))
    lines = ok(w.cmd("c7 NOOP"))
    assert b"* VANISHED 4" in lines and not any(x.endswith(b"EXPUNGE") for x in lines)
    lines = ok(w.cmd("c8 UID MOVE 2 INBOX"))
    assert b"* VANISHED 2" in lines
    assert ok(w.cmd("c9 UID FETCH 1:* (UID)"))[:-1] == [b"* 3 UIDFETCH (UID 3)"]
