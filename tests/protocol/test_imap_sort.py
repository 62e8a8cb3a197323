"""SORT, THREAD, ESORT and PARTIAL over a real ``roost serve``: transcripts in
the shape of the RFC 5256 / 5267 / 9394 examples, IMAPClient's sort() and
thread(), and the development corpus sorted and threaded.

The six messages of ``MESSAGES`` are chosen so every sort key orders them
differently; the expected orders are worked out by hand in the comments.
"""

import email
import email.policy
import email.utils
import re
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.imap_helpers import PASSWORD, USER, Wire, _close_connections, close_all, start_server  # noqa: F401

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

# (internal date, headers, body length)
MESSAGES = [
    ("10-Jan-2020 00:00:01 +0000",
     "From: Bob <bob@b.example>\r\nTo: zed@z.example\r\nSubject: plan\r\n"
     "Date: Mon, 6 Jan 2020 10:00:00 +0000\r\nMessage-ID: <a@x>\r\n", 6000),
    ("10-Jan-2020 00:00:03 +0000",
     "From: alice@a.example\r\nTo: Yann <yann@y.example>\r\nSubject: Re: plan\r\n"
     "Date: Mon, 6 Jan 2020 12:00:00 +0000\r\nMessage-ID: <b@x>\r\nReferences: <a@x>\r\n", 1000),
    ("10-Jan-2020 00:00:02 +0000",
     "From: Carol <carol@c.example>\r\nCc: dan@d.example\r\nSubject: lunch\r\n"
     "Date: Sun, 5 Jan 2020 09:00:00 -0500\r\nMessage-ID: <c@x>\r\n", 5000),
    ("09-Jan-2020 00:00:00 +0000",
     "From: Bob <bob@b.example>\r\nSubject: Re: [team] plan\r\n"
     "Date: Tue, 7 Jan 2020 08:00:00 +0100\r\nMessage-ID: <d@x>\r\n"
     "References: <a@x> <b@x>\r\n", 2000),
    ("04-Jan-2020 00:00:00 +0000",
     "From: Eve <eve@e.example>\r\nSubject: Fwd: lunch (fwd)\r\nMessage-ID: <e@x>\r\n", 4000),
    ("11-Jan-2020 00:00:00 +0000",
     "From: Aaron <zz@a.example>\r\nSubject: zebra\r\nDate: Wed, 8 Jan 2020 00:00:00 +0000\r\n"
     "Message-ID: <f@x>\r\nIn-Reply-To: <missing@x>\r\n", 3000),
]


def message(headers, length):
    return (headers + "\r\n").encode() + (b"x" * 70 + b"\r\n") * (length // 72)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("sort"), listeners=("imap",))
    w = Wire(srv.ports["imap"])
    w.login()
    assert w.cmd("c1 CREATE Sorted")[-1].startswith(b"c1 OK")
    for i, (date, headers, length) in enumerate(MESSAGES):
        data = message(headers, length)
        w.send(f'a{i} APPEND Sorted "{date}" {{{len(data)}+}}\r\n'.encode() + data + b"\r\n")
        assert w.until(f"a{i}")[-1].startswith(f"a{i} OK".encode())
    w.close()
    yield srv
    close_all()
    srv.stop()


@pytest.fixture
def w(server):
    w = Wire(server.ports["imap"])
    w.login()
    assert w.cmd("s1 EXAMINE Sorted")[-1].startswith(b"s1 OK")
    return w


def one(lines, prefix):
    found = [ln for ln in lines if ln.startswith(prefix)]
    assert len(found) == 1 and lines[-1].split(b" ")[1] == b"OK", lines
    return found[0].decode()


def test_capabilities_are_advertised(w):
    caps = one(w.cmd("c CAPABILITY"), b"* CAPABILITY").split()
    for name in ("SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES",
                 "ESORT", "PARTIAL"):
        assert name in caps
    assert "CONTEXT=SEARCH" in caps and "CONTEXT=SORT" in caps


@pytest.mark.parametrize("criteria, expected", [
    ("ARRIVAL", "5 4 1 3 2 6"),
    ("REVERSE ARRIVAL", "6 2 3 1 4 5"),
    ("DATE", "5 3 1 2 4 6"),             # 5 has no Date: its internal date (4 Jan) counts
    ("SIZE", "2 4 6 5 3 1"),
    ("FROM", "2 1 4 3 5 6"),             # addr-mailbox: alice bob bob carol eve zz
    ("DISPLAYFROM", "6 2 1 4 3 5"),      # Aaron alice@a.example Bob Bob Carol Eve
    ("TO", "3 4 5 6 2 1"),               # no To header: the empty string, first
    ("DISPLAYTO", "3 4 5 6 2 1"),        # Yann before zed@z.example
    ("CC", "1 2 4 5 6 3"),
    ("SUBJECT", "3 5 1 2 4 6"),          # base subjects: lunch lunch plan plan plan zebra
    ("SUBJECT REVERSE DATE", "3 5 4 2 1 6"),
    ("REVERSE SUBJECT ARRIVAL", "6 4 1 2 5 3"),
])
def test_sort_orders(w, criteria, expected):
    assert one(w.cmd(f"t SORT ({criteria}) UTF-8 ALL"), b"* SORT") == f"* SORT {expected}"


def test_sort_with_search_criteria_and_rfc_examples(w):
    assert one(w.cmd("t SORT (SUBJECT) UTF-8 FROM bob"), b"* SORT") == "* SORT 1 4"
    assert one(w.cmd("t SORT (SUBJECT) UTF-8 SINCE 10-Jan-2020"), b"* SORT") == "* SORT 3 1 2 6"
    assert one(w.cmd('t SORT (SUBJECT) US-ASCII TEXT "not in mailbox"'), b"* SORT") == "* SORT"
    assert one(w.cmd("t UID SORT (DATE) utf-8 ALL"), b"* SORT") == "* SORT 5 3 1 2 4 6"
    assert one(w.cmd("t SORT (date) UTF-8 2:4"), b"* SORT") == "* SORT 3 2 4"


def test_thread_orderedsubject_and_references(w):
    assert one(w.cmd("t THREAD ORDEREDSUBJECT UTF-8 ALL"), b"* THREAD") == \
        "* THREAD (5 3)(1 (2)(4))(6)"
    # 5 (a forward) joins 3 by subject; 6's parent is missing, so it stands alone
    assert one(w.cmd("t THREAD REFERENCES UTF-8 ALL"), b"* THREAD") == "* THREAD (3 5)(1 2 4)(6)"
    assert one(w.cmd("t UID THREAD REFERENCES US-ASCII NOT FROM alice"), b"* THREAD") == \
        "* THREAD (3 5)(1 4)(6)"
    assert one(w.cmd('t THREAD REFERENCES UTF-8 SUBJECT "nothing like it"'), b"* THREAD") == \
        "* THREAD"


def test_esort(w):
    assert one(w.cmd("e1 SORT RETURN (MIN MAX COUNT) (DATE) UTF-8 ALL"), b"* ESEARCH") == \
        '* ESEARCH (TAG "e1") MIN 5 MAX 6 COUNT 6'
    assert one(w.cmd("e2 UID SORT RETURN (ALL) (DATE) UTF-8 ALL"), b"* ESEARCH") == \
        '* ESEARCH (TAG "e2") UID ALL 5,3,1:2,4,6'
    assert one(w.cmd("e3 SORT RETURN () (SIZE) UTF-8 ALL"), b"* ESEARCH") == \
        '* ESEARCH (TAG "e3") ALL 2,4,6,5,3,1'
    assert one(w.cmd("e4 SORT RETURN (COUNT) (SIZE) UTF-8 FROM nobody"), b"* ESEARCH") == \
        '* ESEARCH (TAG "e4") COUNT 0'


def test_partial_in_sort_and_search(w):
    assert one(w.cmd("p1 SORT RETURN (PARTIAL 2:3) (DATE) UTF-8 ALL"), b"* ESEARCH") == \
        '* ESEARCH (TAG "p1") PARTIAL (2:3 3,1)'
    assert one(w.cmd("p2 UID SORT RETURN (COUNT PARTIAL -1:-2) (DATE) UTF-8 ALL"),
               b"* ESEARCH") == '* ESEARCH (TAG "p2") UID COUNT 6 PARTIAL (-1:-2 4,6)'
    assert one(w.cmd("p3 SEARCH RETURN (PARTIAL 1:2) ALL"), b"* ESEARCH") == \
        '* ESEARCH (TAG "p3") PARTIAL (1:2 1:2)'
    assert one(w.cmd("p4 UID SEARCH RETURN (PARTIAL -1:-1) ALL"), b"* ESEARCH") == \
        '* ESEARCH (TAG "p4") UID PARTIAL (-1:-1 6)'
    assert one(w.cmd("p5 SEARCH RETURN (PARTIAL 10:20) ALL"), b"* ESEARCH") == \
        '* ESEARCH (TAG "p5") PARTIAL (10:20 NIL)'
    assert one(w.cmd("p6 SEARCH RETURN (COUNT PARTIAL 3:1) SUBJECT plan"), b"* ESEARCH") == \
        '* ESEARCH (TAG "p6") COUNT 3 PARTIAL (1:3 1:2,4)'
    lines = w.cmd("p7 UID FETCH 1:* (FLAGS) (PARTIAL -1:-2)")
    assert lines[-1].startswith(b"p7 OK")
    assert sorted(re.search(rb"UID (\d+)", ln).group(1) for ln in lines[:-1]) == [b"5", b"6"]
    lines = w.cmd("p8 FETCH 2:* (UID) (PARTIAL 1:2)")
    assert [ln.split(b" ")[1] for ln in lines[:-1]] == [b"2", b"3"]


@pytest.mark.parametrize("line", [
    "b SORT () UTF-8 ALL", "b SORT (REVERSE) UTF-8 ALL", "b SORT (FOO) UTF-8 ALL",
    "b SORT (DATE)", "b SORT (DATE) UTF-8", "b SORT DATE UTF-8 ALL",
    "b SORT (REVERSE REVERSE DATE) UTF-8 ALL", "b SORT RETURN (FOO) (DATE) UTF-8 ALL",
    "b SORT RETURN (ALL PARTIAL 1:2) (DATE) UTF-8 ALL",
    "b SEARCH RETURN (PARTIAL 0:2) ALL", "b SEARCH RETURN (PARTIAL 1:-2) ALL",
    "b SEARCH RETURN (PARTIAL 1:99999999999) ALL", "b SEARCH RETURN (PARTIAL) ALL",
    "b SEARCH RETURN (PARTIAL 1:2 PARTIAL 3:4) ALL",
    "b THREAD XYZ UTF-8 ALL", "b THREAD REFERENCES", "b THREAD (REFERENCES) UTF-8 ALL",
    "b SORT (DATE) UTF-8 FOO", "b UID FETCH 1:* (FLAGS) (PARTIAL 1)",
])
def test_bad_commands_get_bad(w, line):
    assert w.cmd(line)[-1].startswith(b"b BAD"), line
    assert w.cmd("n NOOP")[-1].startswith(b"n OK")


def test_unknown_charset_and_no_mailbox(server, w):
    assert w.cmd("c SORT (DATE) KOI8-R ALL")[-1].startswith(b"c NO [BADCHARSET")
    assert w.cmd("c THREAD REFERENCES ISO-2022-JP ALL")[-1].startswith(b"c NO [BADCHARSET")
    other = Wire(server.ports["imap"])
    other.login()
    assert not other.cmd("d SORT (DATE) UTF-8 ALL")[-1].startswith(b"d OK")
    assert not other.cmd("d THREAD REFERENCES UTF-8 ALL")[-1].startswith(b"d OK")


def test_sequence_numbers_and_changes_are_followed(server):
    w = Wire(server.ports["imap"])
    w.login()
    assert w.cmd("c CREATE Changing")[-1].startswith(b"c OK")
    for i, (date, headers, length) in enumerate(MESSAGES[:3]):
        data = message(headers, length)
        w.send(f'a{i} APPEND Changing "{date}" {{{len(data)}+}}\r\n'.encode() + data + b"\r\n")
        assert w.until(f"a{i}")[-1].startswith(f"a{i} OK".encode())
    assert w.cmd("s SELECT Changing")[-1].startswith(b"s OK")
    assert one(w.cmd("t SORT (SIZE) UTF-8 ALL"), b"* SORT") == "* SORT 2 3 1"
    assert w.cmd("t STORE 1 +FLAGS (\\Deleted)")[-1].startswith(b"t OK")
    assert w.cmd("t EXPUNGE")[-1].startswith(b"t OK")
    assert one(w.cmd("t SORT (SIZE) UTF-8 ALL"), b"* SORT") == "* SORT 1 2"
    assert one(w.cmd("t UID SORT (SIZE) UTF-8 ALL"), b"* SORT") == "* SORT 2 3"
    date, headers, length = MESSAGES[3]
    data = message(headers, length)
    w.send(f'a9 APPEND Changing "{date}" {{{len(data)}+}}\r\n'.encode() + data + b"\r\n")
    assert w.until("a9")[-1].startswith(b"a9 OK")
    assert w.cmd("n NOOP")[-1].startswith(b"n OK")
    assert one(w.cmd("t UID SORT (SIZE) UTF-8 ALL"), b"* SORT") == "* SORT 2 4 3"
    assert one(w.cmd("t SORT (SIZE) UTF-8 UNSEEN"), b"* SORT") == "* SORT 1 3 2"
    assert w.cmd("t STORE 3 +FLAGS (\\Seen)")[-1].startswith(b"t OK")
    assert one(w.cmd("t SORT (SIZE) UTF-8 UNSEEN"), b"* SORT") == "* SORT 1 2"
    assert one(w.cmd("t THREAD REFERENCES UTF-8 ALL"), b"* THREAD") == "* THREAD (2)(1 3)"


def test_imapclient_sort_and_thread(server):
    c = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=30)
    c.login(USER, PASSWORD)
    c.select_folder("Sorted", readonly=True)
    assert c.sort(["SUBJECT", "REVERSE DATE"]) == [3, 5, 4, 2, 1, 6]
    assert c.sort("ARRIVAL", ["FROM", "bob"]) == [4, 1]
    assert c.thread("REFERENCES") == ((3, 5), (1, 2, 4), (6,))
    assert c.thread("ORDEREDSUBJECT") == ((5, 3), (1, (2,), (4,)), (6,))
    c.logout()


# --- the development corpus -----------------------------------------------------

@pytest.fixture(scope="module")
def corpus(server):
    files = sorted(CORPUS.rglob("*.eml")) if CORPUS.is_dir() else []
    datas = [d for d in (f.read_bytes() for f in files) if d]
    if not datas:
        pytest.skip(f"corpus not found at {CORPUS}")
    w = Wire(server.ports["imap"])
    w.login()
    assert w.cmd("c CREATE Corpus")[-1].startswith(b"c OK")
    for i, d in enumerate(datas):
        w.send(b"A%d APPEND Corpus {%d+}\r\n" % (i, len(d)) + d + b"\r\n")
    for i in range(len(datas)):
        assert w.until(f"A{i}")[-1].startswith(f"A{i} OK".encode())
    return datas


def _corpus_wire(server):
    w = Wire(server.ports["imap"])
    w.login()
    assert w.cmd("s EXAMINE Corpus")[-1].startswith(b"s OK")
    return w


def _numbers(line, verb):
    return [int(n) for n in line[len(f"* {verb}"):].split()]


def test_corpus_sorts_are_permutations_in_order(server, corpus):
    w, datas = _corpus_wire(server), corpus
    n = len(datas)
    for crit in ("ARRIVAL", "DATE", "FROM", "TO", "CC", "SIZE", "SUBJECT", "DISPLAYFROM",
                 "DISPLAYTO", "REVERSE SUBJECT DATE"):
        got = _numbers(one(w.cmd(f"t SORT ({crit}) UTF-8 ALL"), b"* SORT"), "SORT")
        assert sorted(got) == list(range(1, n + 1)), crit
    # SIZE must follow RFC822.SIZE, ties in mailbox order
    sizes = {}
    for ln in w.cmd("f FETCH 1:* (RFC822.SIZE)")[:-1]:
        m = re.match(rb"\* (\d+) FETCH \(RFC822.SIZE (\d+)\)", ln)
        sizes[int(m.group(1))] = int(m.group(2))
    got = _numbers(one(w.cmd("t SORT (SIZE) UTF-8 ALL"), b"* SORT"), "SORT")
    assert got == sorted(range(1, n + 1), key=lambda s: (sizes[s], s))
    # DATE follows the Date header (in UTC) where Python can read it
    got = _numbers(one(w.cmd("t SORT (DATE) UTF-8 ALL"), b"* SORT"), "SORT")
    dated = []
    for seq in got:
        msg = email.message_from_bytes(datas[seq - 1], policy=email.policy.compat32)
        try:
            parsed = email.utils.parsedate_to_datetime(str(msg["Date"])) if msg["Date"] else None
        except (TypeError, ValueError, IndexError):
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            dated.append(parsed.timestamp())
    assert len(dated) > n // 2
    assert sum(a > b for a, b in zip(dated, dated[1:])) <= n // 50   # unreadable dates aside


def test_corpus_threads_hold_every_message_once(server, corpus):
    w, datas = _corpus_wire(server), corpus
    n = len(datas)
    for alg in ("REFERENCES", "ORDEREDSUBJECT"):
        line = one(w.cmd(f"t THREAD {alg} UTF-8 ALL"), b"* THREAD")
        assert line.count("(") == line.count(")")
        nums = [int(x) for x in re.findall(r"\d+", line[len("* THREAD"):])]
        assert sorted(nums) == list(range(1, n + 1)), alg
    # a message whose In-Reply-To names another corpus message is threaded with it
    line = one(w.cmd("t THREAD REFERENCES UTF-8 ALL"), b"* THREAD")
    threads = _top_level(line[len("* THREAD "):])
    thread_of = {int(x): i for i, t in enumerate(threads) for x in re.findall(r"\d+", t)}
    ids = {}
    for seq, d in enumerate(datas, 1):
        mid = email.message_from_bytes(d, policy=email.policy.compat32)["Message-ID"]
        if mid:
            ids.setdefault(str(mid).strip(), seq)
    checked = 0
    for seq, d in enumerate(datas, 1):
        irt = email.message_from_bytes(d, policy=email.policy.compat32)["In-Reply-To"]
        parent = ids.get(str(irt).strip()) if irt else None
        if parent and parent != seq:
            assert thread_of[seq] == thread_of[parent], (seq, parent)
            checked += 1
    assert checked >= 5      # the corpus holds a few such replies
    assert one(w.cmd("t UID THREAD REFERENCES UTF-8 ALL"), b"* THREAD")


def _top_level(text):
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            if depth == 0:
                start = i
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                out.append(text[start:i + 1])
    return out


# --- CONTEXT=SEARCH (RFC 5267 UPDATE) -----------------------------------------------

def _append(w, box, i, flags=""):
    date, headers, length = MESSAGES[i]
    data = message(headers, length)
    w.send(f'ap APPEND {box} ({flags}) "{date}" {{{len(data)}+}}\r\n'.encode() + data + b"\r\n")
    assert w.until("ap")[-1].startswith(b"ap OK")


def test_context_search_updates(server):
    a, b = Wire(server.ports["imap"]), Wire(server.ports["imap"])
    a.login()
    b.login()
    assert a.cmd("c CREATE Followed")[-1].startswith(b"c OK")
    for i in range(3):
        _append(a, "Followed", i)
    assert a.cmd("s SELECT Followed")[-1].startswith(b"s OK")
    assert b.cmd("s SELECT Followed")[-1].startswith(b"s OK")
    lines = a.cmd("A01 UID SEARCH RETURN (UPDATE) UNSEEN")
    assert lines[0] == b'* ESEARCH (TAG "A01") UID ALL 1:3' and lines[-1].startswith(b"A01 OK")
    lines = a.cmd("A02 SEARCH RETURN (COUNT UPDATE CONTEXT) FROM bob")
    assert lines[0] == b'* ESEARCH (TAG "A02") COUNT 1'
    # another session marks 2 seen: the next response of A says it left UNSEEN
    assert b.cmd("b1 UID STORE 2 +FLAGS (\\Seen)")[-1].startswith(b"b1 OK")
    lines = a.cmd("n1 NOOP")
    assert b'* ESEARCH (TAG "A01") UID REMOVEFROM (0 2)' in lines
    assert not any(b'"A02"' in ln for ln in lines)
    # A's own change counts too
    lines = a.cmd("n2 UID STORE 3 +FLAGS (\\Seen)")
    assert b'* ESEARCH (TAG "A01") UID REMOVEFROM (0 3)' in lines
    # a new message from Bob: EXISTS, then ADDTO in both contexts (A02 by sequence number)
    _append(b, "Followed", 3)
    lines = a.cmd("n3 NOOP")
    assert lines.index(b"* 4 EXISTS") < lines.index(b'* ESEARCH (TAG "A01") UID ADDTO (0 4)')
    assert b'* ESEARCH (TAG "A02") ADDTO (0 4)' in lines
    # IDLE hears of it too
    a.send("i1 IDLE\r\n")
    assert a.line().startswith(b"+")
    assert b.cmd("b2 UID STORE 2 -FLAGS (\\Seen)")[-1].startswith(b"b2 OK")
    got = []
    while b'* ESEARCH (TAG "A01") UID ADDTO (0 2)' not in got:
        got.append(a.line())
    a.send("DONE\r\n")
    assert a.until("i1")[-1].startswith(b"i1 OK")
    # an expunge is reported as EXPUNGE only
    assert b.cmd("b3 UID STORE 1 +FLAGS (\\Deleted)")[-1].startswith(b"b3 OK")
    assert b.cmd("b4 EXPUNGE")[-1].startswith(b"b4 OK")
    lines = a.cmd("n4 NOOP")
    assert b"* 1 EXPUNGE" in lines and not any(b"REMOVEFROM" in ln for ln in lines)
    # CANCELUPDATE ends a context; an unknown tag is BAD
    assert a.cmd('c1 CANCELUPDATE "A01"')[-1].startswith(b"c1 OK")
    assert a.cmd('c2 CANCELUPDATE "A01"')[-1].startswith(b"c2 BAD")
    assert a.cmd("c3 CANCELUPDATE A02")[-1].startswith(b"c3 BAD")
    assert b.cmd("b5 UID STORE 4 +FLAGS (\\Seen)")[-1].startswith(b"b5 OK")
    _append(b, "Followed", 1)                                       # from alice
    lines = a.cmd("n5 NOOP")
    assert b"* 4 EXISTS" in lines and not any(b"ESEARCH" in ln for ln in lines)
    _append(b, "Followed", 0)                                       # from bob
    assert b'* ESEARCH (TAG "A02") ADDTO (0 5)' in a.cmd("n6 NOOP")
    # re-selecting ends every context
    assert a.cmd("s2 SELECT Followed")[-1].startswith(b"s2 OK")
    _append(b, "Followed", 3)
    lines = a.cmd("n7 NOOP")
    assert not any(b"ESEARCH" in ln for ln in lines)


def test_context_limits_and_tag_reuse(server):
    a = Wire(server.ports["imap"])
    a.login()
    assert a.cmd("s EXAMINE Sorted")[-1].startswith(b"s OK")
    for i in range(9):
        assert a.cmd(f"u{i} SEARCH RETURN (UPDATE) ALL")[-1].startswith(f"u{i} OK".encode())
    lines = a.cmd("u9 SORT RETURN (UPDATE COUNT) (DATE) UTF-8 ALL")    # the tenth context
    assert lines == [b'* ESEARCH (TAG "u9") COUNT 6', b"u9 OK SORT completed"]
    # past the limit: NOUPDATE, and the other return options are still honoured
    lines = a.cmd("u10 SEARCH RETURN (UPDATE) ALL")
    assert lines[0].startswith(b'* NO [NOUPDATE "u10"]') and lines[-1].startswith(b"u10 OK")
    lines = a.cmd("u11 SORT RETURN (UPDATE MIN) (DATE) UTF-8 ALL")
    assert lines[0].startswith(b'* NO [NOUPDATE "u11"]')
    assert lines[1] == b'* ESEARCH (TAG "u11") MIN 5'
    # RFC 5267 4.3: UPDATE under the tag of a followed search is BAD, for SEARCH and SORT
    assert a.cmd("u3 SORT RETURN (UPDATE) (DATE) UTF-8 ALL")[-1].startswith(b"u3 BAD")
    assert a.cmd("u9 SEARCH RETURN (UPDATE) ALL")[-1].startswith(b"u9 BAD")
    assert a.cmd('c1 CANCELUPDATE "u0" "u9"')[-1].startswith(b"c1 OK")
    assert a.cmd("u9 SORT RETURN (UPDATE) (SIZE) UTF-8 ALL")[-1].startswith(b"u9 OK")
    # CONTEXT alone is a hint: nothing followed, so no slot taken
    assert a.cmd("h1 SORT RETURN (CONTEXT) (SIZE) UTF-8 ALL")[0] == \
        b'* ESEARCH (TAG "h1") ALL 2,4,6,5,3,1'
    lines = a.cmd("u12 SORT RETURN (UPDATE) (SIZE) UTF-8 ALL")
    assert lines[0] == b'* ESEARCH (TAG "u12") ALL 2,4,6,5,3,1' and lines[-1].startswith(b"u12 OK")
    assert a.cmd("u13 SEARCH RETURN (UPDATE) ALL")[0].startswith(b'* NO [NOUPDATE "u13"]')
    caps = one(a.cmd("c CAPABILITY"), b"* CAPABILITY").split()
    assert "CONTEXT=SEARCH" in caps and "CONTEXT=SORT" in caps


# --- CONTEXT=SORT (RFC 5267 UPDATE of a sorted result) ------------------------------

def _expand(text):
    """A sequence set in its given order (sorted results are not ascending)."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def _apply(result, line):
    """What a client does with one ESEARCH update (RFC 5267 4.3.3, 4.3.4):
    each (position, set) pair of REMOVEFROM and ADDTO in order."""
    for name, body in re.findall(r"(REMOVEFROM|ADDTO) \(([^)]*)\)", line):
        words = body.split()
        for pos, numbers in zip(words[::2], words[1::2]):
            pos, numbers = int(pos), _expand(numbers)
            assert pos >= 1, line
            if name == "ADDTO":
                result[pos - 1:pos - 1] = numbers
            else:
                assert result[pos - 1:pos - 1 + len(numbers)] == numbers, (result, line)
                del result[pos - 1:pos - 1 + len(numbers)]
    return result


def _updates(lines, tag):
    return [ln.decode() for ln in lines if ln.startswith(f'* ESEARCH (TAG "{tag}")'.encode())]


def test_context_sort_updates_with_positions(server):
    a, b = Wire(server.ports["imap"]), Wire(server.ports["imap"])
    a.login()
    b.login()
    assert a.cmd("c CREATE SortFollowed")[-1].startswith(b"c OK")
    for i in range(3):                       # UIDs 1, 2, 3: sizes 6000, 1000, 5000
        _append(a, "SortFollowed", i)
    assert a.cmd("s SELECT SortFollowed")[-1].startswith(b"s OK")
    assert b.cmd("s SELECT SortFollowed")[-1].startswith(b"s OK")
    lines = a.cmd("C1 UID SORT RETURN (UPDATE) (SIZE) UTF-8 UNSEEN")
    assert lines[0] == b'* ESEARCH (TAG "C1") UID ALL 2:3,1' and lines[-1].startswith(b"C1 OK")
    model = [2, 3, 1]
    # by sequence number, with a PARTIAL window: updates still cover the whole result
    lines = a.cmd("C2 SORT RETURN (COUNT UPDATE PARTIAL 1:2) (REVERSE SIZE) UTF-8 ALL")
    assert lines[0] == b'* ESEARCH (TAG "C2") COUNT 3 PARTIAL (1:2 1,3)'

    def check(lines):
        for ln in _updates(lines, "C1"):
            _apply(model, ln)
        assert model == _numbers(one(a.cmd("v UID SORT (SIZE) UTF-8 UNSEEN"), b"* SORT"), "SORT")

    # a delivery: EXISTS first, then ADDTO at the new message's place in each order
    _append(b, "SortFollowed", 3)            # UID 4, 2000 bytes
    lines = a.cmd("n1 NOOP")
    assert lines.index(b"* 4 EXISTS") < lines.index(b'* ESEARCH (TAG "C1") UID ADDTO (2 4)')
    assert lines.index(b"* 4 EXISTS") < lines.index(b'* ESEARCH (TAG "C2") ADDTO (3 4)')
    check(lines)
    # two at once land next to each other: one run, in sort order
    _append(b, "SortFollowed", 4)            # UID 5, 4000 bytes
    _append(b, "SortFollowed", 5)            # UID 6, 3000 bytes
    lines = a.cmd("n2 NOOP")
    assert b'* ESEARCH (TAG "C1") UID ADDTO (3 6,5)' in lines        # 2 4 [6 5] 3 1
    assert b'* ESEARCH (TAG "C2") ADDTO (3 5:6)' in lines            # 1 3 [5 6] 4 2
    check(lines)
    # a flag change by another session moves a message out of the result ...
    assert b.cmd("b1 UID STORE 4 +FLAGS (\\Seen)")[-1].startswith(b"b1 OK")
    lines = a.cmd("n3 NOOP")
    assert _updates(lines, "C1") == ['* ESEARCH (TAG "C1") UID REMOVEFROM (2 4)']
    assert not _updates(lines, "C2")                                  # ALL did not change
    check(lines)
    # ... the session's own change too, and back in at its sorted place
    lines = a.cmd("t1 UID STORE 3 +FLAGS (\\Seen)")                 # 2 6 5 [3] 1
    assert _updates(lines, "C1") == ['* ESEARCH (TAG "C1") UID REMOVEFROM (4 3)']
    check(lines)
    assert b.cmd("b2 UID STORE 4 -FLAGS (\\Seen)")[-1].startswith(b"b2 OK")
    lines = a.cmd("n4 NOOP")
    assert _updates(lines, "C1") == ['* ESEARCH (TAG "C1") UID ADDTO (2 4)']   # 2 [4] 6 5 1
    check(lines)
    # several runs: positions count in the list as the earlier pairs left it
    assert b.cmd("b3 UID STORE 2,5 +FLAGS (\\Seen)")[-1].startswith(b"b3 OK")
    lines = a.cmd("n5 NOOP")                                          # [2] 4 6 [5] 1
    assert _updates(lines, "C1") == ['* ESEARCH (TAG "C1") UID REMOVEFROM (1 2 3 5)']
    check(lines)
    assert b.cmd("b4 UID STORE 2 -FLAGS (\\Seen)")[-1].startswith(b"b4 OK")
    assert b.cmd("b5 UID STORE 1 +FLAGS (\\Seen)")[-1].startswith(b"b5 OK")
    lines = a.cmd("n6 NOOP")                                          # 4 6 [1] -> [2] 4 6
    assert _updates(lines, "C1") == ['* ESEARCH (TAG "C1") UID REMOVEFROM (3 1) ADDTO (1 2)']
    check(lines)
    # an expunge: REMOVEFROM with the position, before the EXPUNGE (numbers still valid)
    assert b.cmd("b6 UID STORE 4 +FLAGS (\\Deleted)")[-1].startswith(b"b6 OK")
    assert b.cmd("b7 EXPUNGE")[-1].startswith(b"b7 OK")
    lines = a.cmd("n7 NOOP")
    gone = lines.index(b"* 4 EXPUNGE")
    assert lines.index(b'* ESEARCH (TAG "C1") UID REMOVEFROM (2 4)') < gone     # 2 [4] 6
    assert lines.index(b'* ESEARCH (TAG "C2") REMOVEFROM (5 4)') < gone         # 1 3 5 6 [4] 2
    assert len(_updates(lines, "C1")) == 1 and len(_updates(lines, "C2")) == 1
    check(lines)
    # IDLE hears of a delivery; C2 by the new sequence numbers (UIDs 1 2 3 5 6 7)
    a.send("i1 IDLE\r\n")
    assert a.line().startswith(b"+")
    _append(b, "SortFollowed", 3)            # UID 7, 2000 bytes
    got = []
    while len(_updates(got, "C1")) + len(_updates(got, "C2")) < 2:
        got.append(a.line())
    a.send("DONE\r\n")
    got += a.until("i1")
    assert got.index(b"* 6 EXISTS") < got.index(b'* ESEARCH (TAG "C1") UID ADDTO (2 7)')
    assert b'* ESEARCH (TAG "C2") ADDTO (5 6)' in got                   # 1 3 5 6 [7] 2
    check(got)
    assert one(a.cmd("v SORT (REVERSE SIZE) UTF-8 ALL"), b"* SORT") == "* SORT 1 3 4 5 6 2"
    # MOVE out of the mailbox by this session: REMOVEFROM before its EXPUNGE
    assert a.cmd("c CREATE SortElsewhere")[-1].startswith(b"c OK")
    lines = a.cmd("m1 UID MOVE 6 SortElsewhere")                    # 2 7 [6]; seq 5
    assert lines.index(b'* ESEARCH (TAG "C1") UID REMOVEFROM (3 6)') < lines.index(b"* 5 EXPUNGE")
    assert lines.index(b'* ESEARCH (TAG "C2") REMOVEFROM (4 5)') < lines.index(b"* 5 EXPUNGE")
    check(lines)
    # CANCELUPDATE ends one; the other goes on
    assert a.cmd('c1 CANCELUPDATE "C1"')[-1].startswith(b"c1 OK")
    _append(b, "SortFollowed", 1)            # UID 8, 1000 bytes: after UID 2 (ties by number)
    lines = a.cmd("n8 NOOP")
    assert not _updates(lines, "C1")
    assert _updates(lines, "C2") == ['* ESEARCH (TAG "C2") ADDTO (6 6)']


def test_context_sort_expunge_under_qresync_and_while_held(server):
    a, b = Wire(server.ports["imap"]), Wire(server.ports["imap"])
    a.login()
    b.login()
    assert a.cmd("c CREATE SortVanished")[-1].startswith(b"c OK")
    for i in range(4):                       # UIDs 1-4: sizes 6000, 1000, 5000, 2000
        _append(a, "SortVanished", i)
    assert a.cmd("e ENABLE QRESYNC")[-1].startswith(b"e OK")
    assert a.cmd("s SELECT SortVanished")[-1].startswith(b"s OK")
    assert b.cmd("s SELECT SortVanished")[-1].startswith(b"s OK")
    lines = a.cmd("Q1 UID SORT RETURN (UPDATE) (SIZE) UTF-8 SMALLER 100000")
    assert lines[0] == b'* ESEARCH (TAG "Q1") UID ALL 2,4,3,1'
    assert b.cmd("b1 UID STORE 4 +FLAGS (\\Deleted)")[-1].startswith(b"b1 OK")
    assert b.cmd("b2 EXPUNGE")[-1].startswith(b"b2 OK")
    lines = a.cmd("n1 NOOP")
    assert lines.index(b'* ESEARCH (TAG "Q1") UID REMOVEFROM (2 4)') < lines.index(b"* VANISHED 4")
    # an expunge the session may not report yet (FETCH by number): Q1's search no
    # longer finds it, so REMOVEFROM now, the VANISHED later and no second REMOVEFROM;
    # Q2 (ALL: the messages the session knows of) hears of it just before the VANISHED
    assert a.cmd("Q2 UID SORT RETURN (UPDATE) (REVERSE SIZE) UTF-8 ALL")[0] == \
        b'* ESEARCH (TAG "Q2") UID ALL 1,3,2'
    assert b.cmd("b3 UID STORE 3 +FLAGS (\\Deleted)")[-1].startswith(b"b3 OK")
    assert b.cmd("b4 EXPUNGE")[-1].startswith(b"b4 OK")
    lines = a.cmd("f1 FETCH 1 (FLAGS)")
    assert _updates(lines, "Q1") == ['* ESEARCH (TAG "Q1") UID REMOVEFROM (2 3)']   # 2 [3] 1
    assert not any(ln.startswith(b"* VANISHED") for ln in lines) and not _updates(lines, "Q2")
    lines = a.cmd("n2 NOOP")
    assert not _updates(lines, "Q1")
    assert lines.index(b'* ESEARCH (TAG "Q2") UID REMOVEFROM (2 3)') < lines.index(b"* VANISHED 3")
    assert one(a.cmd("v UID SORT (SIZE) UTF-8 ALL"), b"* SORT") == "* SORT 2 1"
