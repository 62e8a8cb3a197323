"""IMAP4rev1 details over a real ``roost serve``: \\Recent, subscriptions as
names, ``[`` in atoms, ESEARCH MIN/MAX with MODSEQ, the first CONDSTORE
enabling command, QRESYNC sequence match data, MULTIAPPEND all or nothing,
CATENATE and REPLACE; and the two-client QRESYNC test.
"""

import re

import pytest

from tests.imap_helpers import PASSWORD, USER, Wire, close_all, start_server

SMALL = "small@example.org"


def msg(n, extra=b""):
    return (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: message %d\r\n"
            b"Message-Id: <m%d@example.org>\r\n\r\nbody %d\r\n" % (n, n, n)) + extra


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("rev1"),
                       users=((USER, PASSWORD), (SMALL, "pw", 600), ("fresh@example.org", "pw")))
    yield srv
    close_all()
    srv.stop()


_counter = [0]


@pytest.fixture(autouse=True)
def _close_connections():
    yield
    close_all()


def ok(lines):
    assert lines[-1].split(b" ")[1] == b"OK", lines
    return lines


def fresh_box(w, count):
    """A new mailbox with ``count`` messages (appended by ``w``); its name."""
    _counter[0] += 1
    name = f"R{_counter[0]}"
    ok(w.cmd(f"c CREATE {name}"))
    for i in range(count):
        data = msg(i + 1)
        w.send(f"a{i} APPEND {name} {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
        ok(w.until(f"a{i}"))
    return name


def connect(server, user=USER, password=PASSWORD):
    w = Wire(server.ports["imap"])
    w.login(user, password)
    return w


# --- \Recent ------------------------------------------------------------------------

def test_recent_belongs_to_the_first_session_that_selects(server):
    a, b, c = connect(server), connect(server), connect(server)
    name = fresh_box(a, 2)
    assert b"* STATUS %s (RECENT 2 MESSAGES 2)" % name.encode() in ok(c.cmd(f"s STATUS {name} (RECENT MESSAGES)"))
    lines = ok(b.cmd(f"e EXAMINE {name}"))        # EXAMINE looks and claims nothing
    assert b"* 2 RECENT" in lines
    lines = ok(a.cmd(f"s SELECT {name}"))
    assert b"* 2 RECENT" in lines
    assert ok(a.cmd("f FETCH 1:2 FLAGS"))[:2] == [b"* 1 FETCH (FLAGS (\\Recent))",
                                                  b"* 2 FETCH (FLAGS (\\Recent))"]
    assert ok(a.cmd("f2 FETCH 1 (UID FLAGS RFC822.SIZE)"))[0].startswith(b"* 1 FETCH (UID 1 FLAGS (\\Recent) ")
    ok(a.cmd("st STORE 1 +FLAGS.SILENT (\\Seen)"))
    assert ok(a.cmd("q1 SEARCH RECENT"))[0] == b"* SEARCH 1 2"
    assert ok(a.cmd("q2 SEARCH NEW"))[0] == b"* SEARCH 2"
    assert ok(a.cmd("q3 SEARCH OLD"))[0] == b"* SEARCH"
    assert ok(a.cmd("q4 SEARCH NOT RECENT"))[0] == b"* SEARCH"
    # a second session sees them, but not as recent
    lines = ok(c.cmd(f"s2 SELECT {name}"))
    assert b"* 0 RECENT" in lines
    assert ok(c.cmd("f FETCH 2 FLAGS"))[0] == b"* 2 FETCH (FLAGS ())"
    assert ok(c.cmd("q SEARCH OLD"))[0] == b"* SEARCH 1 2"
    ok(c.cmd("u UNSELECT"))
    # STATUS counts what no session has claimed, and this session's own
    assert b"(RECENT 0)" in ok(c.cmd(f"s3 STATUS {name} (RECENT)"))[0]
    assert b"(RECENT 2)" in ok(a.cmd(f"s3 STATUS {name} (RECENT)"))[0]
    # a new message is recent to the session that is told of it first
    data = msg(3)
    c.send(f"a APPEND {name} {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    ok(c.until("a"))
    lines = ok(a.cmd("n NOOP"))
    assert b"* 3 EXISTS" in lines and b"* 3 RECENT" in lines
    assert ok(a.cmd("f3 FETCH 3 FLAGS"))[0] == b"* 3 FETCH (FLAGS (\\Recent))"
    lines = ok(b.cmd("n NOOP"))                    # b is only examining
    assert b"* 3 EXISTS" in lines and b"* 2 RECENT" in lines
    # EXPUNGE drops it from the count
    ok(a.cmd("d STORE 3 +FLAGS.SILENT (\\Deleted)"))
    ok(a.cmd("x EXPUNGE"))
    assert ok(a.cmd("q5 SEARCH RECENT"))[0] == b"* SEARCH 1 2"


def test_recent_absent_under_imap4rev2(server):
    a = connect(server)
    name = fresh_box(a, 1)
    ok(a.cmd("en ENABLE IMAP4rev2"))
    lines = ok(a.cmd(f"s SELECT {name}"))
    assert not any(b"RECENT" in x for x in lines)
    assert ok(a.cmd("f FETCH 1 FLAGS"))[0] == b"* 1 FETCH (FLAGS ())"
    assert a.cmd(f"t STATUS {name} (RECENT)")[-1].startswith(b"t BAD")
    # IMAP4rev2 claimed nothing: a rev1 session still gets the message as recent
    b = connect(server)
    assert b"* 1 RECENT" in ok(b.cmd(f"s SELECT {name}"))


# --- subscriptions ---------------------------------------------------------------------

def test_subscriptions_are_names(server):
    w = connect(server)
    ok(w.cmd("c CREATE Sub/Child"))
    assert not any(b"Sub" in x for x in ok(w.cmd('l LSUB "" "*"')))     # CREATE subscribes nothing
    ok(w.cmd("s1 SUBSCRIBE Nowhere/Deep"))                               # need not exist
    ok(w.cmd("s2 UNSUBSCRIBE Never-subscribed"))                         # not subscribed: OK
    ok(w.cmd("s3 SUBSCRIBE Sub/Child"))
    lines = ok(w.cmd('l2 LSUB "" "%"'))
    assert b'* LSUB (\\Noselect) "/" Sub' in lines                     # parent of a subscribed child
    assert b'* LSUB (\\Noselect) "/" Nowhere' in lines
    assert not any(b"Sub/Child" in x for x in lines)
    lines = ok(w.cmd('l3 LSUB "" "*"'))
    assert b'* LSUB () "/" Sub/Child' in lines
    assert b'* LSUB (\\Noselect) "/" Nowhere/Deep' in lines             # no mailbox has it
    assert b'* LSUB (\\Noselect) "/" Sub' not in lines                  # "*" shows the child itself
    lines = ok(w.cmd('l4 LIST (SUBSCRIBED) "" "*"'))
    assert b'* LIST (\\NonExistent \\Subscribed) "/" Nowhere/Deep' in lines
    assert b'* LIST (\\HasNoChildren \\Subscribed) "/" Sub/Child' in lines
    # DELETE keeps the subscription
    ok(w.cmd("d DELETE Sub/Child"))
    lines = ok(w.cmd('l5 LIST (SUBSCRIBED) "" "Sub/*"'))
    assert lines[0] == b'* LIST (\\NonExistent \\Subscribed) "/" Sub/Child'
    ok(w.cmd("u UNSUBSCRIBE Sub/Child"))
    assert ok(w.cmd('l6 LIST (SUBSCRIBED) "" "Sub*"')) == [b"l6 OK LIST completed"]


def test_rename_moves_subscriptions_of_the_mailbox_and_its_children(server):
    w = connect(server)
    ok(w.cmd("c CREATE Ren/Kid"))
    ok(w.cmd("s1 SUBSCRIBE Ren"))
    ok(w.cmd("s2 SUBSCRIBE Ren/Kid"))
    ok(w.cmd("r RENAME Ren Moved"))
    lines = ok(w.cmd('l LSUB "" "*"'))
    assert b'* LSUB () "/" Moved' in lines and b'* LSUB () "/" Moved/Kid' in lines
    assert not any(b"Ren" in x for x in lines)


def test_default_mailboxes_of_a_new_account_are_subscribed(server):
    w = connect(server, "fresh@example.org", "pw")
    lines = ok(w.cmd('l LSUB "" "*"'))
    for name in (b"INBOX", b"Drafts", b"Sent", b"Archive", b"Junk", b"Trash"):
        assert b'* LSUB () "/" ' + name in lines


def test_phantom_parent_is_noselect(server):
    w = connect(server)
    ok(w.cmd("c CREATE Gone/Stays"))
    ok(w.cmd("d DELETE Gone"))
    lines = ok(w.cmd('l LIST "" "Gone*"'))
    assert b'* LIST (\\Noselect \\HasChildren) "/" Gone' in lines
    assert b'* LIST (\\HasNoChildren) "/" Gone/Stays' in lines


# --- atoms -----------------------------------------------------------------------------

def test_open_bracket_in_atoms(server):
    w = connect(server)
    ok(w.cmd("c CREATE a[b"))
    assert b'* LIST (\\HasNoChildren) "/" a[b' in ok(w.cmd('l LIST "" a[b'))
    ok(w.cmd("s SELECT a[b"))
    data = msg(1)
    w.send(f"a APPEND a[b {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    ok(w.until("a"))
    ok(w.cmd("n NOOP"))
    assert b"$k[1" in ok(w.cmd("st STORE 1 +FLAGS ($k[1)"))[-2]     # "]" is no ATOM-CHAR
    assert ok(w.cmd("f FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))[0].startswith(
        b"* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {")


# --- CONDSTORE / ESEARCH / QRESYNC ---------------------------------------------------

def _modseqs(w):
    out = {}
    for line in ok(w.cmd("m FETCH 1:* (UID MODSEQ)")):
        m = re.match(rb"\* \d+ FETCH \(UID (\d+) MODSEQ \((\d+)\)\)", line)
        if m:
            out[int(m.group(1))] = int(m.group(2))
    return out


def test_first_fetch_modseq_reports_highestmodseq(server):
    w = connect(server)
    name = fresh_box(w, 2)
    lines = ok(w.cmd(f"s SELECT {name}"))
    highest = re.search(rb"\[HIGHESTMODSEQ (\d+)\]", b"\n".join(lines)).group(1)
    lines = ok(w.cmd("f FETCH 1 (FLAGS MODSEQ)"))
    assert lines[0] == b"* OK [HIGHESTMODSEQ %s] highest" % highest
    assert lines[1].startswith(b"* 1 FETCH (") and b"MODSEQ (" in lines[1]
    lines = ok(w.cmd("f2 FETCH 1 (FLAGS MODSEQ)"))
    assert not any(b"HIGHESTMODSEQ" in x for x in lines)             # only the first time


def test_esearch_min_max_report_their_own_modseq(server):
    w = connect(server)
    name = fresh_box(w, 3)
    ok(w.cmd(f"s SELECT {name}"))
    ok(w.cmd("st1 STORE 3 +FLAGS (\\Flagged)"))
    ok(w.cmd("st2 STORE 1 +FLAGS (\\Flagged)"))        # now UID 1 has the highest modseq
    mods = _modseqs(w)
    assert mods[1] > mods[3] > mods[2]
    line = ok(w.cmd("e1 UID SEARCH RETURN (MAX) MODSEQ 1"))[0]
    assert line == b'* ESEARCH (TAG "e1") UID MAX 3 MODSEQ %d' % mods[3]
    line = ok(w.cmd("e2 UID SEARCH RETURN (MIN) MODSEQ 1"))[0]
    assert line == b'* ESEARCH (TAG "e2") UID MIN 1 MODSEQ %d' % mods[1]
    line = ok(w.cmd("e3 UID SEARCH RETURN (MIN MAX) UNFLAGGED MODSEQ 1"))[0]
    assert line == b'* ESEARCH (TAG "e3") UID MIN 2 MAX 2 MODSEQ %d' % mods[2]
    line = ok(w.cmd("e4 UID SEARCH RETURN (MAX COUNT) MODSEQ 1"))[0]
    assert line == b'* ESEARCH (TAG "e4") UID MAX 3 COUNT 3 MODSEQ %d' % mods[1]


def test_qresync_sequence_match_data_narrows_vanished(server):
    w = connect(server)
    name = fresh_box(w, 6)
    ok(w.cmd("en ENABLE QRESYNC"))
    lines = ok(w.cmd(f"s SELECT {name}"))
    text = b"\n".join(lines)
    validity = int(re.search(rb"\[UIDVALIDITY (\d+)\]", text).group(1))
    modseq = int(re.search(rb"\[HIGHESTMODSEQ (\d+)\]", text).group(1))
    ok(w.cmd("d UID STORE 2,5 +FLAGS.SILENT (\\Deleted)"))
    ok(w.cmd("x EXPUNGE"))
    ok(w.cmd("u UNSELECT"))
    # No match data: both expunges are reported.
    lines = ok(w.cmd(f"q1 SELECT {name} (QRESYNC ({validity} {modseq} 1:6))"))
    assert b"* VANISHED (EARLIER) 2,5" in lines
    ok(w.cmd("u2 UNSELECT"))
    # Messages 1 and 2 are UIDs 1 and 3: the client knows of the expunge of 2.
    lines = ok(w.cmd(f"q2 SELECT {name} (QRESYNC ({validity} {modseq} 1:6 (1:2 1,3)))"))
    assert b"* VANISHED (EARLIER) 5" in lines
    ok(w.cmd("u3 UNSELECT"))
    # A pair that does not match ends the walk: message 3 is UID 4, not 5.
    lines = ok(w.cmd(f"q3 SELECT {name} (QRESYNC ({validity} {modseq} 1:6 (1,3 1,5)))"))
    assert b"* VANISHED (EARLIER) 2,5" in lines


# --- MULTIAPPEND -------------------------------------------------------------------------

def test_multiappend_is_all_or_nothing(server):
    w = connect(server, SMALL, "pw")
    small, big = msg(1), msg(2, b"x" * 600)
    before = ok(w.cmd("s STATUS INBOX (MESSAGES UIDNEXT)"))[0]
    w.send(f"a APPEND INBOX {{{len(small)}+}}\r\n".encode() + small +
           f" {{{len(big)}+}}\r\n".encode() + big + b"\r\n")
    assert w.until("a")[-1].startswith(b"a NO [OVERQUOTA]")
    assert ok(w.cmd("s2 STATUS INBOX (MESSAGES UIDNEXT)"))[0] == before   # the first is not kept
    w.send(f"b APPEND INBOX (\\Seen) {{{len(small)}+}}\r\n".encode() + small +
           f" {{{len(small)}+}}\r\n".encode() + small + b"\r\n")
    line = ok(w.until("b"))[-1]
    uidnext = int(re.search(rb"UIDNEXT (\d+)", before).group(1))
    assert re.match(rb"b OK \[APPENDUID \d+ %d:%d\]" % (uidnext, uidnext + 1), line), line
    ok(w.cmd("sel SELECT INBOX"))
    assert ok(w.cmd("f FETCH 1:* FLAGS"))[:2] == [b"* 1 FETCH (FLAGS (\\Recent \\Seen))",
                                                  b"* 2 FETCH (FLAGS (\\Recent))"]


# --- CATENATE ------------------------------------------------------------------------------

def _select(w, name):
    text = b"\n".join(ok(w.cmd(f"sel SELECT {name}")))
    return int(re.search(rb"\[UIDVALIDITY (\d+)\]", text).group(1))


def test_catenate_text_and_urls(server):
    w = connect(server)
    name = fresh_box(w, 1)
    validity = _select(w, name)
    head = b"From: c@example.org\r\nSubject: forwarded\r\n\r\n"
    tail = b"\r\n-- the end\r\n"
    w.send(f"a1 APPEND {name} CATENATE (TEXT {{{len(head)}+}}\r\n".encode() + head +
           f' URL "/{name};UIDVALIDITY={validity}/;UID=1/;SECTION=TEXT"'
           f' URL ";UID=1/;SECTION=HEADER.FIELDS%20(SUBJECT)"'
           f' URL "imap://alice%40example.org@localhost/{name}/;UID=1/;PARTIAL=0.4"'
           f" TEXT {{{len(tail)}+}}\r\n".encode() + tail + b")\r\n")
    line = ok(w.until("a1"))[-1]
    uid = int(re.search(rb"APPENDUID \d+ (\d+)", line).group(1))
    body = ok(w.cmd(f"f UID FETCH {uid} BODY.PEEK[]"))
    expected = head + b"body 1\r\n" + b"Subject: message 1\r\n\r\n" + b"From" + tail
    assert body[-2].endswith(b"BODY[] {%d}\r\n" % len(expected) + expected + b")") or \
        expected in body[-2], body


def test_catenate_bad_url_stores_nothing(server):
    w = connect(server)
    name = fresh_box(w, 1)
    validity = _select(w, name)
    before = ok(w.cmd(f"s STATUS {name} (MESSAGES UIDNEXT)"))[0]
    for i, url in enumerate((f"/{name};UIDVALIDITY={validity}/;UID=7",            # no such UID
                             f"/{name};UIDVALIDITY={validity + 1}/;UID=1",        # stale UIDVALIDITY
                             f"/{name}/;UID=1/;SECTION=9",                        # no such part
                             "/Nowhere/;UID=1",                                   # no such mailbox
                             f"imap://bob%40example.org@localhost/{name}/;UID=1",  # another user
                             "http://example.org/")):
        lines = w.cmd(f'b{i} APPEND {name} CATENATE (TEXT {{2+}}\r\nx\n URL "{url}")')
        assert lines[-1].startswith(b"b%d NO [BADURL " % i), (url, lines)
    assert ok(w.cmd(f"s2 STATUS {name} (MESSAGES UIDNEXT)"))[0] == before
    assert w.cmd(f"c APPEND {name} CATENATE ()")[-1].startswith(b"c BAD")
    assert w.cmd(f'c2 APPEND {name} CATENATE (FILE "x")')[-1].startswith(b"c2 BAD")


# --- REPLACE -------------------------------------------------------------------------------

def test_replace(server):
    w = connect(server)
    name = fresh_box(w, 2)
    validity = _select(w, name)
    new = msg(9)
    w.send(f"r1 REPLACE 1 {name} (\\Seen) {{{len(new)}+}}\r\n".encode() + new + b"\r\n")
    lines = ok(w.until("r1"))
    assert lines[0] == b"* OK [APPENDUID %d 3] replacement message stored" % validity
    assert lines[1:] == [b"* 1 EXPUNGE", b"* 2 EXISTS", b"* 2 RECENT", b"r1 OK REPLACE completed"]
    assert ok(w.cmd("f UID FETCH 1:* (FLAGS)"))[:2] == [b"* 1 FETCH (UID 2 FLAGS (\\Recent))",
                                                         b"* 2 FETCH (UID 3 FLAGS (\\Recent \\Seen))"]
    ok(w.cmd("c CREATE %s/other" % name))
    w.send(f"r2 UID REPLACE 3 {name}/other {{{len(new)}+}}\r\n".encode() + new + b"\r\n")
    lines = ok(w.until("r2"))
    assert b"* 2 EXPUNGE" in lines
    assert b"MESSAGES 1" in ok(w.cmd(f"s STATUS {name}/other (MESSAGES)"))[0]
    # a failed append keeps the old message
    w.send(f"r3 REPLACE 1 {name}/missing {{{len(new)}+}}\r\n".encode() + new + b"\r\n")
    assert w.until("r3")[-1].startswith(b"r3 NO [TRYCREATE]")
    assert b"MESSAGES 1" in ok(w.cmd(f"s2 STATUS {name} (MESSAGES)"))[0]
    assert w.cmd("r4 REPLACE 9 INBOX {1+}\r\nx")[-1].startswith(b"r4 BAD")
    assert w.cmd("r5 UID REPLACE 99 INBOX {1+}\r\nx")[-1].startswith(b"r5 NO [NONEXISTENT]")
    ok(w.cmd(f"e EXAMINE {name}"))
    assert w.cmd(f"r6 REPLACE 1 {name} {{1+}}\r\nx")[-1].startswith(b"r6 NO [READ-ONLY]")
    caps = ok(w.cmd("k CAPABILITY"))[0].split()
    assert b"CATENATE" in caps and b"REPLACE" in caps


# --- two clients: one changes, the other resyncs with QRESYNC ------------------------------

_FETCH = re.compile(rb"\* \d+ FETCH \((.*)\)$")


def _fetched(line):
    """``(uid, flags)`` of an untagged FETCH with UID and FLAGS, else None."""
    m = _FETCH.match(line)
    if not m:
        return None
    uid = re.search(rb"UID (\d+)", m.group(1))
    flags = re.search(rb"FLAGS \(([^)]*)\)", m.group(1))
    if not uid or not flags:
        return None
    return int(uid.group(1)), frozenset(f for f in flags.group(1).split() if f != b"\\Recent")


def _uid_set(text):
    out = set()
    for part in text.split(b","):
        lo, _, hi = part.partition(b":")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


class Mirror:
    """What a QRESYNC client keeps of a mailbox: UIDVALIDITY, HIGHESTMODSEQ and
    the flags of every UID; ``apply`` folds server responses into it."""

    def __init__(self):
        self.validity = self.modseq = None
        self.flags = {}

    def apply(self, lines):
        for line in lines:
            m = re.search(rb"\[HIGHESTMODSEQ (\d+)\]", line)
            if m:
                self.modseq = int(m.group(1))
            m = re.search(rb"\[UIDVALIDITY (\d+)\]", line)
            if m:
                self.validity = int(m.group(1))
            m = re.match(rb"\* VANISHED (?:\(EARLIER\) )?([\d:,]+)$", line)
            if m:
                for uid in _uid_set(m.group(1)):
                    self.flags.pop(uid, None)
            got = _fetched(line)
            if got:
                self.flags[got[0]] = got[1]
            m = re.search(rb"MODSEQ \((\d+)\)", line)
            if m and line.startswith(b"* ") and b" FETCH " in line:
                self.modseq = max(self.modseq or 0, int(m.group(1)))

    def resync(self, w, name, match=True):
        known = ",".join(str(u) for u in sorted(self.flags)) or "1:*"
        params = f"{self.validity} {self.modseq} {known}"
        if match and self.flags:
            uids = sorted(self.flags)
            picks = list(range(0, len(uids), 3))      # a sample of (seq, uid) pairs
            params += f" ({','.join(str(i + 1) for i in picks)} {','.join(str(uids[i]) for i in picks)})"
        self.apply(ok(w.cmd(f"q SELECT {name} (QRESYNC ({params}))")))


def _truth(w, name):
    """The mailbox as a fresh look shows it."""
    ok(w.cmd(f"e EXAMINE {name}"))
    out = {got[0]: got[1] for got in map(_fetched, ok(w.cmd("t UID FETCH 1:* (FLAGS)"))) if got}
    ok(w.cmd("u UNSELECT"))
    return out


def _changes(a, name, round_):
    """Client A: flags and keywords changed, messages expunged, moved away, and new ones."""
    ok(a.cmd(f"s SELECT {name}"))
    ok(a.cmd(f"f1 STORE {1 + round_}:{4 + round_} +FLAGS (\\Seen $Label{round_})"))
    ok(a.cmd(f"f2 STORE {6 + round_} FLAGS (\\Flagged)"))
    ok(a.cmd("f3 STORE 2 -FLAGS (\\Seen)"))
    ok(a.cmd(f"d STORE {8 + round_},{10 + round_} +FLAGS.SILENT (\\Deleted)"))
    ok(a.cmd("x EXPUNGE"))
    ok(a.cmd(f"m MOVE 3,{5 + round_} {name}-archive"))
    for i in range(2):
        data = msg(100 + 10 * round_ + i)
        a.send(f"ap{i} APPEND {name} (\\Draft) {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
        ok(a.until(f"ap{i}"))
    ok(a.cmd("f4 STORE 1 +FLAGS ($Later)"))
    ok(a.cmd("u UNSELECT"))


@pytest.mark.parametrize("match", [False, True])
def test_two_clients_qresync_ends_with_identical_view(server, match):
    a, b = connect(server), connect(server)
    name = fresh_box(a, 16)
    ok(a.cmd(f"c CREATE {name}-archive"))
    ok(b.cmd("en ENABLE QRESYNC"))
    mirror = Mirror()
    mirror.apply(ok(b.cmd(f"s SELECT {name}")))
    mirror.apply(ok(b.cmd("f UID FETCH 1:* (FLAGS MODSEQ)")))
    ok(b.cmd("u UNSELECT"))
    for round_ in range(3):
        _changes(a, name, round_)           # while B is away
        mirror.resync(b, name, match)
        assert mirror.flags == _truth(a, name) and len(mirror.flags) > 0
        ok(b.cmd("u UNSELECT"))
    # B stays selected while A changes things: NOOP brings the same view
    mirror.resync(b, name, match)
    _changes(a, name, 3)
    mirror.apply(ok(b.cmd("n NOOP")))
    # new messages come as EXISTS: a client fetches them
    mirror.apply(ok(b.cmd(f"nf UID FETCH {max(mirror.flags) + 1}:* (FLAGS)")))
    assert mirror.flags == _truth(a, name)
    # ... and so does the UID FETCH CHANGEDSINCE VANISHED a client sends after a break
    before = mirror.modseq
    _changes(a, name, 4)
    ok(b.cmd("n2 NOOP"))   # (its updates are ignored here: the fetch below must suffice)
    b.cmd("u UNSELECT")
    stale = Mirror()
    stale.validity, stale.modseq, stale.flags = mirror.validity, before, dict(mirror.flags)
    ok(b.cmd(f"s2 SELECT {name}"))
    stale.apply(ok(b.cmd(f"v UID FETCH 1:* (FLAGS) (CHANGEDSINCE {before} VANISHED)")))
    assert stale.flags == _truth(a, name)
