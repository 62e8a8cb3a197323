"""The message corpus (``../shared/corpus``) through Roost's ingest and export paths.

Every ``*.eml`` is delivered through ``storage.delivery`` and exported with
``roost export --mbox``; read back with ``storage.mbox.read_mbox`` each message
must be the delivered bytes exactly (after the Return-Path/Delivered-To lines
delivery prepends). A sample goes through LMTP too. ``roost import`` keeps the
message count of every corpus mbox (the count of its split files plus the
duplicates ``skipped.tsv`` left out) and the flags of mbox and Maildir++
sources; ``roost fsck`` finds nothing on a clean store and repairs injected
faults, and ``roost fsck --rebuild`` recreates the same messages from the
Maildir alone.
"""

import csv
import glob
import os
import pathlib
import time

import pytest

from roost.server import cli
from roost.storage import flags as fl
from roost.storage import mbox
from roost.storage.delivery import Delivery
from roost.storage.store import Store
from tests.conftest import LineClient, RoostServer, add_user, append, deliver, roost, without_verdicts

CORPUS = pathlib.Path(__file__).resolve().parents[3] / "shared" / "corpus"
EMLS = sorted(CORPUS.glob("*/**/*.eml"))
MBOXES = sorted(CORPUS.glob("*/mbox/*.mbox"))

pytestmark = pytest.mark.skipif(not EMLS, reason=f"corpus not found at {CORPUS}")

PREFIX = b"Return-Path: <sender@example.net>%sDelivered-To: %s%s"


def prefix(data, rcpt):
    eol = b"\r\n" if data.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    return PREFIX % (eol, rcpt.encode(), eol)


def export(data_dir, address, mailbox, tmp_path):
    out = tmp_path / f"export-{address}-{mailbox.replace('/', '_')}.mbox"
    roost(data_dir, "export", address, mailbox, "--mbox", out)
    return [m for m, _line in mbox.read_mbox(str(out))]


def contents(store, address):
    """``{mailbox: [(bytes, flag bits, keywords)]}`` of an account, in UID order."""
    acct = store.account(address)
    out = {}
    for box in store.mailboxes(acct.id):
        out[box.name] = [(store.read(box.id, r.uid), r.bits, r.keywords)
                         for r in store.records(box.id)]
    return out


# --- every message, delivered and exported ----------------------------------------

def test_every_corpus_message_round_trips(tmp_path):
    data_dir = tmp_path / "data"
    store = Store.open(str(data_dir))
    store.add_account("corpus@example.org")
    delivery = Delivery(store)
    originals = []
    try:
        for path in EMLS:
            raw = path.read_bytes()
            (result,) = deliver(delivery, raw, ["corpus@example.org"], sender="sender@example.net")
            assert result.ok, (path, result)
            originals.append(raw)
        acct = store.account("corpus@example.org")
        box = store.mailbox(acct.id, "INBOX")
        stored = [store.read(box.id, r.uid) for r in store.records(box.id)]
        # The Maildir files hold exactly the delivered bytes.
        on_disk = sorted(pathlib.Path(p).read_bytes() for _s, _b, p in
                         store.blobs.stored(acct.maildir_key, box.folder))
    finally:
        delivery.close()
        store.close()
    expected = [prefix(raw, "corpus@example.org") + raw for raw in originals]
    assert len(stored) == len(EMLS)
    assert stored == expected
    assert on_disk == sorted(expected)
    exported = export(data_dir, "corpus@example.org", "INBOX", tmp_path)
    assert len(exported) == len(expected)
    bad = [str(EMLS[i].relative_to(CORPUS)) for i, (a, b) in enumerate(zip(exported, expected))
           if a != b]
    assert bad == []


def _wire(data):
    """DATA payload: dot-stuffed, ended by CRLF.CRLF (a final CRLF added if missing)."""
    if not data.endswith(b"\n"):
        data += b"\r\n"
    lines = data.splitlines(keepends=True)
    return b"".join(b"." + ln if ln.startswith(b".") else ln for ln in lines) + b".\r\n"


def test_corpus_sample_over_lmtp(tmp_path):
    """CRLF messages (LMTP carries CRLF lines) arrive byte for byte."""
    data_dir = tmp_path / "data"
    add_user(data_dir, "lmtp@example.org")
    sample = [p for p in EMLS if b"\n" not in p.read_bytes().replace(b"\r\n", b"")][::4][:40]
    assert len(sample) >= 10
    server = RoostServer(data_dir).start()
    try:
        client = LineClient(server.ports["lmtp"])
        client.reply()
        client.cmd("LHLO corpus.test")
        sent = []
        for path in sample:
            raw = path.read_bytes()
            assert client.cmd("MAIL FROM:<sender@example.net> BODY=8BITMIME")[0] == 250
            assert client.cmd("RCPT TO:<lmtp@example.org>")[0] == 250
            assert client.cmd("DATA")[0] == 354
            client.send(_wire(raw))
            assert client.reply()[0] == 250, path
            sent.append(raw if raw.endswith(b"\r\n") else raw + b"\r\n")
        client.cmd("QUIT")
        client.close()
    finally:
        server.stop()
    exported = [without_verdicts(m)            # the verdicts delivery prepended
                for m in export(data_dir, "lmtp@example.org", "INBOX", tmp_path)]
    assert exported == [b"Return-Path: <sender@example.net>\r\nDelivered-To: lmtp@example.org\r\n" + s
                        for s in sent]


# --- roost import -------------------------------------------------------------

def _expected_counts():
    sources = {}
    with open(CORPUS / "manifest.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["path"].endswith(".mbox"):
                sources[row["path"]] = row["source"]
    skipped = []
    with open(CORPUS / "skipped.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            skipped.append(row["source"])
    counts = {}
    for path in MBOXES:
        rel = str(path.relative_to(CORPUS))
        src_dir, _, name = rel.partition("/mbox/")
        split = len(glob.glob(str(CORPUS / src_dir / "mbox-split" / name[:-5] / "*.eml")))
        dupes = sum(1 for s in skipped if s.startswith(sources[rel] + "#msg"))
        counts[rel] = split + dupes
    return counts


def test_import_corpus_mbox_files_keeps_counts(tmp_path):
    data_dir = tmp_path / "data"
    add_user(data_dir, "imp@example.org")
    counts = _expected_counts()
    assert len(counts) == len(MBOXES) == 41
    # One real ``roost import`` process; the other files through the same
    # command in-process (a process start costs seconds on a loaded machine).
    roost(data_dir, "import", "imp@example.org", MBOXES[0], "--mailbox", "m00")
    for i, path in enumerate(MBOXES[1:], 1):
        assert cli.main(["--data", str(data_dir), "import", "imp@example.org", str(path),
                         "--mailbox", f"m{i:02d}"]) == 0
    store = Store.open(str(data_dir))
    try:
        acct = store.account("imp@example.org")
        got = {str(p.relative_to(CORPUS)): len(store.uids(store.mailbox(acct.id, f"m{i:02d}").id))
               for i, p in enumerate(MBOXES)}
        # Imported bytes are the split files' bytes (nothing prepended).
        box = store.mailbox(acct.id, f"m{MBOXES.index(CORPUS / 'mimekit/mbox/unmunged.mbox'):02d}")
        stored = [store.read(box.id, u) for u in store.uids(box.id)]
    finally:
        store.close()
    assert got == counts
    split = [pathlib.Path(p).read_bytes()
             for p in sorted(glob.glob(str(CORPUS / "mimekit/mbox-split/unmunged/*.eml")))]
    assert stored[:-1] == split[:-1]
    # The file ends "...?\n" with no blank separator line after the last
    # message; mboxrd reading takes that newline as the separator (that is how
    # Roost's own export of a message without a final newline reads back).
    assert stored[-1] + b"\n" == split[-1]


def test_import_mbox_flags_and_dates(tmp_path):
    data_dir = tmp_path / "data"
    add_user(data_dir, "flags@example.org")
    path = tmp_path / "flags.mbox"
    path.write_bytes(
        b"From alice@example.net Mon Jan  2 03:04:05 2006\n"
        b"Subject: one\nStatus: RO\nX-Status: AF\nX-Keywords: $Label1 Work\n\n"
        b"From here on, a body line that an mboxrd writer escapes\n>From again\n\n"
        b"From bob@example.net Tue Feb 14 10:00:00 2012\n"
        b"Subject: two\nStatus: O\n\nplain\n")
    roost(data_dir, "import", "flags@example.org", path)
    store = Store.open(str(data_dir))
    try:
        acct = store.account("flags@example.org")
        box = store.mailbox(acct.id, "INBOX")
        recs = store.records(box.id)
        first = store.read(box.id, recs[0].uid)
    finally:
        store.close()
    assert len(recs) == 2
    assert recs[0].bits == fl.SEEN | fl.ANSWERED | fl.FLAGGED
    assert recs[0].keywords == ("$Label1", "Work")
    assert recs[1].bits == 0 and recs[1].keywords == ()
    assert time.gmtime(recs[1].internal_date)[:3] == (2012, 2, 14)
    assert first.endswith(b"From here on, a body line that an mboxrd writer escapes\nFrom again\n")


def test_import_maildir_plus_plus_tree(tmp_path):
    src = tmp_path / "Maildir"
    files = {
        ("", "cur", "1000000001.1.host:2,S"): b"Subject: seen\n\nbody 1\n",
        ("", "cur", "1000000002.2.host:2,FR"): b"Subject: flagged answered\n\nbody 2\n",
        ("", "new", "1000000003.3.host"): b"Subject: new\n\nbody 3\n",
        (".Work", "cur", "1000000004.4.host:2,DS"): b"Subject: draft\n\nbody 4\n",
        (".Work.Sub", "cur", "1000000005.5.host:2,T"): b"Subject: trashed\r\n\r\nbody 5\r\n",
    }
    for sub in ("", ".Work", ".Work.Sub"):
        for d in ("cur", "new", "tmp"):
            (src / sub / d).mkdir(parents=True, exist_ok=True)
    mtimes = {}
    for i, ((folder, d, name), data) in enumerate(files.items()):
        p = src / folder / d / name
        p.write_bytes(data)
        mtimes[data] = 1_100_000_000 + i * 86400
        os.utime(p, (mtimes[data], mtimes[data]))
    data_dir = tmp_path / "data"
    add_user(data_dir, "md@example.org")
    roost(data_dir, "import", "md@example.org", src)
    store = Store.open(str(data_dir))
    try:
        acct = store.account("md@example.org")
        got = {}
        for name in ("INBOX", "Work", "Work/Sub"):
            box = store.mailbox(acct.id, name)
            for r in store.records(box.id):
                got[store.read(box.id, r.uid)] = (name, r.bits, r.internal_date)
    finally:
        store.close()
    assert got == {
        files[("", "cur", "1000000001.1.host:2,S")]: ("INBOX", fl.SEEN, mtimes[b"Subject: seen\n\nbody 1\n"]),
        files[("", "cur", "1000000002.2.host:2,FR")]: ("INBOX", fl.FLAGGED | fl.ANSWERED,
                                                        mtimes[b"Subject: flagged answered\n\nbody 2\n"]),
        files[("", "new", "1000000003.3.host")]: ("INBOX", 0, mtimes[b"Subject: new\n\nbody 3\n"]),
        files[(".Work", "cur", "1000000004.4.host:2,DS")]: ("Work", fl.DRAFT | fl.SEEN,
                                                            mtimes[b"Subject: draft\n\nbody 4\n"]),
        files[(".Work.Sub", "cur", "1000000005.5.host:2,T")]: ("Work/Sub", fl.DELETED,
                                                               mtimes[b"Subject: trashed\r\n\r\nbody 5\r\n"]),
    }


# --- fsck ------------------------------------------------------------------------

def _populated(tmp_path):
    data_dir = tmp_path / "data"
    store = Store.open(str(data_dir))
    for address in ("f1@example.org", "f2@example.org"):
        store.add_account(address)
    delivery = Delivery(store)
    acct = store.account("f1@example.org")
    work = store.create_mailbox(acct.id, "Work/Projects")
    for path in EMLS[:30]:
        deliver(delivery, path.read_bytes(), ["f1@example.org", "f2@example.org"],
                         sender="sender@example.net")
    for path in EMLS[30:40]:
        append(delivery, acct, work, path.read_bytes(), flags=["\\Seen", "$Later"])
    inbox = store.mailbox(acct.id, "INBOX")
    store.store_flags(inbox.id, [1, 2, 3], ["\\Flagged", "\\Answered"], "add")
    store.copy(inbox.id, [4, 5], store.mailbox(acct.id, "Archive").id)
    delivery.close()
    return data_dir, store


def _fsck(data_dir, *args):
    return roost(data_dir, "fsck", *args).stdout.decode().splitlines()


def test_fsck_clean_store(tmp_path):
    data_dir, store = _populated(tmp_path)
    store.close()
    assert _fsck(data_dir)[1:] == ["store is consistent"]


def test_fsck_repairs_injected_faults(tmp_path):
    data_dir, store = _populated(tmp_path)
    acct = store.account("f1@example.org")
    inbox = store.mailbox(acct.id, "INBOX")
    base = store.blobs.folder_path(acct.maildir_key, "")
    before = contents(store, "f1@example.org")
    # 1. a message file with no row (in cur/), 2. a stale tmp/ file of a dead
    # writer, 3. wrong used_bytes, 4. UIDNEXT not above the highest UID.
    orphan = b"Subject: adopted\r\n\r\nI was on disk only.\r\n"
    (pathlib.Path(base) / "cur" / f"1.M1P999999999Q1.host,S={len(orphan)}:2,S").write_bytes(orphan)
    (pathlib.Path(base) / "tmp" / "1.M2P999999999Q2.host,S=5").write_bytes(b"half-")
    from sqlalchemy import update
    from roost.storage.schema import accounts, mailboxes
    with store.engine.begin() as conn:
        conn.execute(update(accounts).where(accounts.c.id == acct.id).values(used_bytes=7))
        conn.execute(update(mailboxes).where(mailboxes.c.id == inbox.id).values(uidnext=2))
    store.close()

    report = "\n".join(_fsck(data_dir))
    assert "1 discarded" in report
    assert "1 files without a row (adopted)" in report
    assert f"used bytes {7 + len(orphan)} should be" in report
    assert "UIDNEXT 2 <=" in report
    assert _fsck(data_dir)[1:] == ["store is consistent"]

    store = Store.open(str(data_dir))
    try:
        after = contents(store, "f1@example.org")
        assert os.listdir(os.path.join(base, "tmp")) == []
        box = store.mailbox(acct.id, "INBOX")
        assert box.uidnext > max(store.uids(box.id))
    finally:
        store.close()
    assert after["INBOX"][:len(before["INBOX"])] == before["INBOX"]
    assert after["INBOX"][len(before["INBOX"]):] == [(orphan, fl.SEEN, ())]


def test_fsck_reports_missing_file(tmp_path):
    data_dir, store = _populated(tmp_path)
    acct = store.account("f2@example.org")
    box = store.mailbox(acct.id, "INBOX")
    (_stem, _bits, path), *_ = sorted(store.blobs.stored(acct.maildir_key, ""))
    os.unlink(path)
    store.close()
    report = _fsck(data_dir)
    assert any("f2@example.org" in line and "message file missing" in line for line in report)
    assert box.id


def test_fsck_rebuild_from_maildir_alone(tmp_path):
    data_dir, store = _populated(tmp_path)
    before = {a: contents(store, a) for a in ("f1@example.org", "f2@example.org")}
    store.close()
    for name in os.listdir(data_dir):
        if name.startswith("roost.db"):
            os.unlink(data_dir / name)
    report = _fsck(data_dir, "--rebuild")
    assert any("f1@example.org" in line for line in report)
    store = Store.open(str(data_dir))
    try:
        after = {a: contents(store, a) for a in ("f1@example.org", "f2@example.org")}
    finally:
        store.close()
    for address in before:
        for name, msgs in before[address].items():
            # The same messages with the same system flags (keywords live only
            # in the database, so a rebuild cannot know them).
            want = sorted((d, bits) for d, bits, _kw in msgs)
            got = sorted((d, bits) for d, bits, _kw in after[address].get(name, []))
            assert got == want, (address, name)
        assert set(after[address]) == set(before[address])
