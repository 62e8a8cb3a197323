"""Schema migrations (storage.migrations): the revisions build what
storage/schema.py declares, a fresh data directory is stamped, and a data
directory from the first release (tests/fixtures/release1: its schema.py as
released, and a database and Maildir that release wrote) opens with today's
code, on SQLite and PostgreSQL, with a copy kept of the SQLite database."""

import glob
import importlib.util
import logging
import pathlib
import shutil
import sqlite3
import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, select, text

from roost.storage import delivery as dv
from roost.storage import flags as fl
from roost.storage import migrations
from roost.storage.schema import make_engine, metadata
from roost.storage.search import search
from roost.storage.store import Store
from tests.conftest import deliver, pg_store

RELEASE1 = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "release1"
ALICE, PASSWORD = "alice@example.org", "first-release"


def release1_data(path):
    """A data directory as the first release left it: its database (from the
    SQL dump of one it wrote) and its Maildir."""
    path.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path / "roost.db")
    db.executescript((RELEASE1 / "roost.sql").read_text())
    db.close()
    shutil.copytree(RELEASE1 / "mail", path / "mail")
    return path


def release1_schema():
    spec = importlib.util.spec_from_file_location("release1_schema", RELEASE1 / "schema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def schema_drift(conn):
    """What differs between the database and storage.schema (FTS5 tables aside)."""
    ctx = MigrationContext.configure(conn, opts={"include_name": migrations.include_name})
    return compare_metadata(ctx, metadata)


def test_head_names_the_newest_revision():
    assert migrations.script_head() == migrations.HEAD


def test_fresh_data_directory_gets_the_schema_stamped(tmp_path):
    store = Store.open(str(tmp_path / "data"))
    with store.reader() as conn:
        assert migrations.revision(conn) == migrations.HEAD
        assert schema_drift(conn) == []
    store.close()
    assert not glob.glob(str(tmp_path / "data" / "roost.db.bak-*"))


def test_revisions_from_empty_build_what_schema_py_declares(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with engine.begin() as conn:
        command.upgrade(migrations.config(conn), "head")
        assert schema_drift(conn) == []
        assert migrations.revision(conn) == migrations.HEAD


def test_first_release_data_directory_is_upgraded_and_works(tmp_path):
    data = release1_data(tmp_path / "data")
    store = Store.open(str(data))
    try:
        with store.reader() as conn:
            assert migrations.revision(conn) == migrations.HEAD
            assert schema_drift(conn) == []
            assert not inspect(conn).has_table("message_text")
        check_release1_store(store)
        # the messages stored before the FTS5 tables existed were indexed
        acct = store.account(ALICE)
        inbox, archive = store.mailbox(acct.id, "INBOX"), store.mailbox(acct.id, "Archive")
        assert list(search(store, acct.id, _body("tomatoes"), inbox.id)) == [1]
        assert list(search(store, acct.id, _body("compost"), archive.id)) == [1]
    finally:
        store.close()
    (copy,) = glob.glob(str(data / "roost.db.bak-base-*"))
    old = sqlite3.connect(copy)
    tables = {r[0] for r in old.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "message_text" in tables and "alembic_version" not in tables
    assert old.execute("SELECT count(*) FROM messages").fetchone() == (5,)
    old.close()
    # opened again: nothing to do, no second copy
    Store.open(str(data)).close()
    assert len(glob.glob(str(data / "roost.db.bak-*"))) == 1


def _body(word):
    from roost.storage.search import Text
    return Text("body", word)


def check_release1_store(store):
    """The first release's data read and written through the store API."""
    acct = store.account(ALICE)
    assert acct is not None and store.resolve("postmaster@example.org")
    boxes = {b.name: b for b in store.mailboxes(acct.id, counts=True)}
    assert (boxes["INBOX"].messages, boxes["Archive"].messages, boxes["Archive"].unseen) == (3, 2, 1)
    inbox, archive = boxes["INBOX"], boxes["Archive"]
    records = store.records(inbox.id)
    assert [r.uid for r in records] == [1, 2, 3]
    # bytes as stored, threads across a reply, flags kept by the import
    assert b"south bed" in store.read(inbox.id, 1)
    assert records[0].thread_id == records[1].thread_id != records[2].thread_id
    flagged = store.records(archive.id)[0]
    assert flagged.bits & fl.SEEN and flagged.bits & fl.FLAGGED
    # writes: a new delivery (a change row with a time), a flag change, a new mailbox
    delivery = dv.Delivery(store)
    (result,) = deliver(delivery, b"From: bob@example.net\r\nTo: alice@example.org\r\n"
                        b"Subject: after the upgrade\r\nMessage-ID: <new@example.net>\r\n\r\n"
                        b"Still growing.\r\n", [ALICE])
    delivery.close()
    assert result.ok, result.reason
    assert [r.uid for r in store.records(inbox.id)] == [1, 2, 3, 4]
    store.store_flags(inbox.id, [1], ["\\Seen"], "add")
    assert store.records(inbox.id)[0].bits & fl.SEEN
    store.create_mailbox(acct.id, "Seeds")
    assert [op for _m, _o, op in store.changes(acct.id, "Mailbox", 7)][-1] == "c"
    assert store.prune_history(60 * 86400) == 0    # old change rows count as made at the upgrade


def test_two_processes_opening_at_once_upgrade_once(tmp_path):
    data = release1_data(tmp_path / "data")
    errors = []

    def open_close():
        try:
            Store.open(str(data)).close()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=open_close) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(glob.glob(str(data / "roost.db.bak-*"))) == 1


def test_a_newer_schema_is_refused_and_left_alone(tmp_path):
    Store.open(str(tmp_path / "data")).close()
    db = sqlite3.connect(tmp_path / "data" / "roost.db")
    db.execute("UPDATE alembic_version SET version_num = '9999'")
    db.commit()
    db.close()
    with pytest.raises(migrations.SchemaTooNew, match="9999"):
        Store.open(str(tmp_path / "data"))
    assert not glob.glob(str(tmp_path / "data" / "roost.db.bak-*"))


# --- PostgreSQL -------------------------------------------------------------------------

def _pg_release1(tmp_path):
    """The first release's schema and rows in a fresh PostgreSQL schema
    (created by that release's schema.py; rows from the SQLite fixture)."""
    store, drop = pg_store(tmp_path, "roost_mig_")   # a fresh schema at HEAD
    engine = store.engine
    url = engine.url
    store.close()
    old = release1_schema()
    pg = make_engine(url.render_as_string(hide_password=False))
    with pg.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(text(f'DROP TABLE IF EXISTS "{table.name}" CASCADE'))
        conn.execute(text("DROP TABLE alembic_version"))
    old.create_all(pg)
    src = create_engine("sqlite://")
    with src.begin() as s:
        s.connection.executescript((RELEASE1 / "roost.sql").read_text())
    with src.connect() as s, pg.begin() as conn:
        for table in old.metadata.sorted_tables:
            rows = [dict(r._mapping) for r in s.execute(select(table))]
            if rows:
                conn.execute(table.insert(), rows)
            if "id" in table.c:
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                                  f"(SELECT coalesce(max(id), 1) FROM {table.name}))"))
    shutil.copytree(RELEASE1 / "mail", tmp_path / "mail", dirs_exist_ok=True)
    return pg, drop


def test_first_release_schema_on_postgresql_is_upgraded_and_works(tmp_path, caplog):
    pg, drop = _pg_release1(tmp_path)
    from roost.storage.maildir import Maildir
    try:
        with pg.connect() as conn:
            assert migrations.revision(conn) == "base"
        with caplog.at_level(logging.WARNING, "roost.storage"):
            store = Store(pg, Maildir(str(tmp_path / "mail")))
        assert "back it up first" in caplog.text
        with store.reader() as conn:
            assert migrations.revision(conn) == migrations.HEAD
            assert schema_drift(conn) == []
        check_release1_store(store)
    finally:
        drop()


def test_fresh_postgresql_schema_is_stamped(tmp_path):
    store, drop = pg_store(tmp_path, "roost_mig_")
    try:
        with store.reader() as conn:
            assert migrations.revision(conn) == migrations.HEAD
            assert schema_drift(conn) == []
    finally:
        drop()
