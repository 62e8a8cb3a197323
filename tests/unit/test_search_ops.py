"""Search operations: ``roost reindex``, and ``roost fsck`` reporting index drift."""

from sqlalchemy import text

from roost.server import cli
from roost.storage import reindex
from roost.storage import search as S
from roost.storage.delivery import Delivery
from roost.storage.store import Store

from tests.conftest import deliver


def _mailstore(data):
    store = Store.open(str(data))
    acct = store.add_account("alice@example.org")
    delivery = Delivery(store)
    for i in range(3):
        deliver(delivery, f"From: bob@example.net\r\nSubject: note {i}\r\n\r\n"
                         f"kumquat number{i}\r\n".encode(), ["alice@example.org"])
    delivery.close()
    return store, acct


def test_reindex_command(tmp_path, capsys):
    store, acct = _mailstore(tmp_path / "data")
    with store.write() as txn:
        txn.conn.execute(text("DELETE FROM message_words"))
        txn.conn.execute(text("DELETE FROM message_headers"))
    assert S.search(store, acct.id, S.Text("body", "kumquat")) == []
    store.close()
    assert cli.main(["reindex", "alice@example.org", "--data", str(tmp_path / "data")]) == 0
    assert "roost: reindexed alice@example.org: 3 messages" in capsys.readouterr().out
    assert cli.main(["reindex", "nobody@example.org", "--data", str(tmp_path / "data")]) == cli.EX_NOUSER
    store = Store.open(str(tmp_path / "data"))     # an older release's index: no version
    with store.write() as txn:
        txn.conn.execute(text("DELETE FROM server_state"))
    store.close()
    assert cli.main(["reindex", "alice@example.org", "--data", str(tmp_path / "data")]) == 0
    store = Store.open(str(tmp_path / "data"))
    assert reindex.stored_version(store) == 0      # one account is not the whole index
    store.close()
    assert cli.main(["reindex", "--data", str(tmp_path / "data")]) == 0
    store = Store.open(str(tmp_path / "data"))
    assert reindex.stored_version(store) == reindex.VERSION   # serve's start has nothing to do
    assert len(S.search(store, acct.id, S.Text("body", "kumquat"))) == 3
    assert len(S.search(store, acct.id, S.Text("subject", "ote 1"))) == 1
    store.close()


def test_fsck_reports_and_repairs_index_drift(tmp_path, capsys):
    store, acct = _mailstore(tmp_path / "data")
    with store.write() as txn:
        txn.conn.execute(text("DELETE FROM message_words WHERE rowid IN (1, 2)"))
        txn.conn.execute(text("DELETE FROM message_headers WHERE rowid IN (1, 2)"))
        txn.conn.execute(text("INSERT INTO message_words(rowid, headers, body, cjk_headers, cjk_body) "
                          "VALUES (999, '', 'kumquat', '', '')"))
    store.close()
    assert cli.main(["fsck", "--data", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "alice@example.org: search index lacks 2 messages (indexed)" in out
    assert "search index has 1 entries of removed messages (removed)" in out
    assert cli.main(["fsck", "--data", str(tmp_path / "data")]) == 0
    assert "search index" not in capsys.readouterr().out
    store = Store.open(str(tmp_path / "data"))
    assert S.search(store, acct.id, S.Text("body", "kumquat")) == [1, 2, 3]
    store.close()
