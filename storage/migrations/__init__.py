"""Schema migrations (Alembic): every schema change ships as a revision in
``versions/``, and ``upgrade(engine)`` brings a database to ``HEAD`` when the
store opens it (``Store.open``: ``roost serve`` and every CLI command).

- A database at ``HEAD`` costs one query (no Alembic machinery is loaded).
- An empty database gets ``storage.schema``'s tables and is stamped ``HEAD``:
  a fresh data directory never replays history.
- Roost's tables but no ``alembic_version``: made before migrations. It is
  upgraded from the start, where the baseline revision (0001, the schema when
  migrations began) adopts it: it adds what an earlier release lacked and
  leaves the rest, which is "stamp as baseline" for a database already at the
  baseline and brings an older one (the first release's) up to it first.
  Stamping an older one blindly would leave it without columns today's code
  writes. Later revisions then run as usual.
- Anything else below ``HEAD``: ``alembic upgrade head``.

Before an existing SQLite database changes, a copy is kept beside it:
``roost.db.bak-<revision>-<UTC time>`` (``base`` for one made before
migrations), taken with SQLite's online backup so the WAL is included. On
PostgreSQL a backup is the operator's job; the upgrade says so in the log.
The upgrade runs in one transaction under the write lock (SQLite ``BEGIN
IMMEDIATE``, a PostgreSQL advisory lock), so a ``roost deliver`` starting at
the same moment waits and two processes never migrate twice; a failed
revision leaves the database as it was.

A database stamped with a revision this code does not know (made by a newer
Roost) is refused with ``SchemaTooNew`` rather than touched.
"""

import logging
import os
import time

from sqlalchemy import inspect, text

from ..errors import StoreError
from ..schema import metadata

HEAD = "0005"
HERE = os.path.dirname(os.path.abspath(__file__))
# The search backend's tables (storage.search_fts5, and the first release's
# message_text) with their FTS5 shadow tables: not Alembic's to compare.
FTS_TABLES = ("message_words", "message_headers", "message_text")
PG_LOCK = 0x726F6F7374   # pg_advisory_xact_lock key for migrations

log = logging.getLogger("roost.storage")


class SchemaTooNew(StoreError):
    """The database was made by a newer Roost."""


def include_name(name, type_, parent_names):
    return not (type_ == "table" and name.startswith(FTS_TABLES))


def config(connection=None):
    from alembic.config import Config
    cfg = Config()
    cfg.set_main_option("script_location", HERE)
    cfg.attributes["connection"] = connection
    return cfg


def script_head():
    """The newest revision in ``versions/`` (``HEAD`` must name it)."""
    from alembic.script import ScriptDirectory
    return ScriptDirectory.from_config(config()).get_current_head()


def revision(conn):
    """The database's revision: None for no Roost tables, ``"base"`` for
    tables made before migrations, else the stamped revision."""
    names = set(inspect(conn).get_table_names())
    if "alembic_version" in names:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar() or "base"
    return "base" if "accounts" in names else None


def describe(engine):
    """``(revision, domain names)`` of a database, read without changing it
    (``roost doctor``; the domains table is in every release's schema)."""
    with engine.connect() as conn:
        rev = revision(conn)
        names = [] if rev is None else \
            [r[0] for r in conn.execute(text("SELECT name FROM domains ORDER BY name"))]
    return rev, names


def upgrade(engine):
    """Bring the database to ``HEAD``; returns the revision it had (None when
    it was empty, ``HEAD`` when nothing was done)."""
    with engine.connect() as conn:
        if revision(conn) == HEAD:
            return HEAD
        conn.rollback()
        conn.execution_options(roost_write=True)
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK})
            before = revision(conn)         # again, under the lock
            if before == HEAD:
                return HEAD
            if before is None:
                metadata.create_all(conn)
                _stamp(conn)
                return None
            if before != "base" and not known(before):
                raise SchemaTooNew(f"the database is at schema revision {before}, which this "
                                   f"Roost does not know (its newest is {HEAD}); run a newer Roost")
            _keep_copy(engine, before)
            from alembic import command
            command.upgrade(config(conn), "head")
        log.warning("upgraded the database schema from revision %s to %s", before, HEAD)
        return before


def _stamp(conn):
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    MigrationContext.configure(conn).stamp(ScriptDirectory.from_config(config()), HEAD)


def known(rev):
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError
    try:
        ScriptDirectory.from_config(config()).get_revision(rev)
        return True
    except CommandError:
        return False


def _keep_copy(engine, before):
    if engine.dialect.name != "sqlite":
        log.warning("upgrading the %s database schema from revision %s to %s: Roost keeps no "
                    "copy of a server database; back it up first (pg_dump)",
                    engine.dialect.name, before, HEAD)
        return
    import sqlite3
    path = engine.url.database
    copy = f"{path}.bak-{before}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    src, dst = sqlite3.connect(path), sqlite3.connect(copy)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    log.warning("kept a copy of the database before upgrading its schema: %s", copy)
