"""kill -9 during UID MOVE, UID COPY and EXPUNGE of thousands of messages.

Each round fills INBOX (``roost import``), starts ``roost serve``, sends one
big command over IMAP and SIGKILLs the server while the files are being
linked or unlinked: the database has committed, the file work after it is
half done. Then the server is restarted (start-up recovery runs) and
``roost fsck`` runs; after each, every message must be in exactly the
mailboxes the database says, readable, once: no row without its file, no file
without its row, nothing resurrected, nothing adopted as new mail.
"""

import os
import shutil
import time

import pytest
from sqlalchemy import func, select

from roost.storage.schema import file_ops
from roost.storage.store import Store
from tests.conftest import RoostServer, add_user, roost
from tests.imap_helpers import PASSWORD, USER, Wire

N = 3000
pytestmark = pytest.mark.slow


def make_mbox(path, n):
    with open(path, "wb") as f:
        for i in range(n):
            f.write(b"From load@example.net Mon Nov 23 10:00:00 2026\n"
                    b"From: load@example.net\nSubject: crash %d\nMessage-ID: <%d@move.test>\n\n"
                    b"body %d\n\n" % (i, i, i))


def cur_count(store, acct, name):
    box = store.mailbox(acct.id, name)
    return len(os.listdir(os.path.join(store.blobs.folder_path(acct.maildir_key, box.folder), "cur")))


def check(data):
    """``{mailbox: [message ids]}`` and the mismatches between rows and files."""
    store = Store.open(str(data))
    try:
        acct = store.account(USER)
        where, problems = {}, []
        for box in store.mailboxes(acct.id):
            rows = {s: b for s, b, _p in store.blobs.stored(acct.maildir_key, box.folder)}
            recs = store.records(box.id)
            for rec in recs:
                body = store.read(box.id, rec.uid)
                where.setdefault(box.name, []).append(int(body.split(b"<", 1)[1].split(b"@", 1)[0]))
            if len(rows) != len(recs):
                problems.append(f"{box.name}: {len(recs)} rows, {len(rows)} files")
        return where, problems
    finally:
        store.close()


def pending_ops(data):
    store = Store.open(str(data))
    try:
        with store.reader() as conn:
            return conn.execute(select(func.count()).select_from(file_ops)).scalar()
    finally:
        store.close()


def filled(tmp_path):
    """A data directory with N messages in INBOX and an empty "Dest", made
    once (``roost import``); each round starts from a copy of it."""
    data = tmp_path / "filled"
    if not data.exists():
        add_user(data, USER, PASSWORD)
        mbox = tmp_path / "filled.mbox"
        make_mbox(mbox, N)
        roost(data, "import", USER, str(mbox))
        store = Store.open(str(data))
        store.create_mailbox(store.account(USER).id, "Dest")
        store.close()
    return data


def run_round(tmp_path, name, commands, watch, until):
    """Start over, send ``commands``, kill when ``until(count of cur/ in
    mailbox watch)``; returns (pending file operations at the kill, data)."""
    data = tmp_path / name
    shutil.copytree(filled(tmp_path), data, symlinks=True)
    server = RoostServer(data, listeners=("imap",)).start()
    w = Wire(server.ports["imap"])
    w.login()
    assert w.cmd("s1 SELECT INBOX")[-1].startswith(b"s1 OK")
    for line in commands[:-1]:
        assert w.cmd(line)[-1].split()[1] == b"OK"
    w.send(commands[-1].encode() + b"\r\n")
    store = Store.open(str(data))
    acct = store.account(USER)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and not until(cur_count(store, acct, watch)):
            pass
    finally:
        store.close()
        server.kill()
        w.close()
    pending = pending_ops(data)
    again = RoostServer(data, listeners=("imap",)).start()
    again.stop()
    assert again.proc.returncode == 0, "".join(again.output)
    return pending, data


def assert_exact(data, expect):
    where, problems = check(data)
    assert problems == []
    assert {k: sorted(v) for k, v in where.items()} == expect
    report = roost(data, "fsck").stdout.decode()
    assert "adopted" not in report and "missing" not in report, report
    where, problems = check(data)
    assert problems == [] and {k: sorted(v) for k, v in where.items()} == expect


def test_kill_during_move_copy_and_expunge(tmp_path):
    everything = list(range(N))
    hits = 0
    # MOVE, killed while the links into Dest are being made
    pending, data = run_round(tmp_path, "move-links", ["m1 UID MOVE 1:* Dest"], "Dest", lambda c: c > 0)
    hits += pending > 0
    assert_exact(data, {"Dest": everything})
    # MOVE, killed while the INBOX files are being removed
    pending, data = run_round(tmp_path, "move-unlinks", ["m1 UID MOVE 1:* Dest"], "INBOX",
                              lambda c: c < N)
    hits += pending > 0
    assert_exact(data, {"Dest": everything})
    # COPY, killed while linking: both mailboxes hold everything
    pending, data = run_round(tmp_path, "copy", ["c1 UID COPY 1:* Dest"], "Dest", lambda c: c > 0)
    hits += pending > 0
    assert_exact(data, {"INBOX": everything, "Dest": everything})
    # EXPUNGE of everything, killed while unlinking: nothing comes back
    pending, data = run_round(tmp_path, "expunge", ["f1 UID STORE 1:* +FLAGS.SILENT (\\Deleted)", "e1 EXPUNGE"],
                              "INBOX", lambda c: c < N)
    hits += pending > 0
    assert_exact(data, {})
    # The kills did land between a commit and its file work (the test is not vacuous).
    assert hits >= 2, hits
