"""``roost import`` reports a message it cannot store and goes on with the
next; nothing it skips leaves a staged file behind."""

import os

from roost.server import cli
from roost.storage import mbox
from roost.storage.delivery import Delivery
from roost.storage.maildir import Maildir

from tests.conftest import add_user, stored_messages

GOOD = [b"From: a@example.net\nSubject: good %d\n\nfine\n" % i for i in range(6)]


def _mbox(path, messages):
    with open(path, "wb") as f:
        for m in messages:
            mbox.write_mbox(f, m, "a@example.net", 0)
    return str(path)


def _tmp_files(data_dir):
    return [f for root, _d, files in os.walk(data_dir / "mail") if os.path.basename(root) == "tmp"
            for f in files]


def test_a_message_too_large_is_reported_and_skipped(tmp_path, capsys):
    data_dir = tmp_path / "data"
    add_user(data_dir, "imp@example.org")
    conf = tmp_path / "roost.toml"
    conf.write_text("[limits]\nmax_message_size = 200\n")
    big = b"From: a@example.net\nSubject: big\n\n" + b"x" * 300 + b"\n"
    path = _mbox(tmp_path / "in.mbox", [GOOD[0], big, GOOD[1], GOOD[2]])
    code = cli.main(["--data", str(data_dir), "--config", str(conf), "import", "imp@example.org", path])
    out = capsys.readouterr()
    assert code == cli.EX_DATAERR
    assert "message 2 for INBOX: message exceeds 200 bytes; skipped" in out.err
    assert "imported 3 messages" in out.out
    assert stored_messages(data_dir, "imp@example.org") == GOOD[:3]
    assert _tmp_files(data_dir) == []


def test_a_message_whose_storing_raises_is_reported_and_skipped(tmp_path, capsys, monkeypatch):
    data_dir = tmp_path / "data"
    add_user(data_dir, "imp@example.org")
    store = Delivery.store

    def exploding(self, *items):
        if any(b"EXPLODE" in item.data for item in items):
            raise RuntimeError("no such luck")
        return store(self, *items)
    monkeypatch.setattr(Delivery, "store", exploding)
    bad = b"From: a@example.net\nSubject: EXPLODE\n\nx\n"
    path = _mbox(tmp_path / "in.mbox", [*GOOD[:3], bad, *GOOD[3:]])
    code = cli.main(["--data", str(data_dir), "import", "imp@example.org", path])
    out = capsys.readouterr()
    assert code == cli.EX_DATAERR
    assert "message 4 for INBOX: RuntimeError: no such luck; skipped" in out.err
    assert "imported 6 messages" in out.out
    assert stored_messages(data_dir, "imp@example.org") == GOOD
    assert _tmp_files(data_dir) == []


def test_a_message_whose_write_raises_fails_alone_and_leaves_no_staged_file(
        tmp_path, capsys, monkeypatch):
    data_dir = tmp_path / "data"
    add_user(data_dir, "imp@example.org")
    put = Maildir.put

    def exploding(self, account, folder, data, prefix=b""):
        if b"EXPLODE" in data:
            raise RuntimeError("no such luck")
        return put(self, account, folder, data, prefix)
    monkeypatch.setattr(Maildir, "put", exploding)
    bad = b"From: a@example.net\nSubject: EXPLODE\n\nx\n"
    path = _mbox(tmp_path / "in.mbox", [*GOOD[:3], bad, *GOOD[3:]])   # one batch, staged in parallel
    code = cli.main(["--data", str(data_dir), "import", "imp@example.org", path])
    out = capsys.readouterr()
    assert code == cli.EX_DATAERR
    assert "message 4 for INBOX: cannot write: no such luck; skipped" in out.err
    assert stored_messages(data_dir, "imp@example.org") == GOOD
    assert _tmp_files(data_dir) == []
