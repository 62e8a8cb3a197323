"""Alembic's entry point for Roost's schema (see storage.migrations).

Runs on the connection ``storage.migrations.upgrade`` passes in (already in
its write transaction, so Alembic opens none of its own), or, from the
``alembic`` command line, on ``-x url=...``. The search backend's FTS5 tables
(``storage.search_fts5``) are not part of ``storage.schema.metadata``:
``include_name`` keeps them out of autogenerate's comparison.
"""

from alembic import context
from sqlalchemy import create_engine

from roost.storage.migrations import include_name
from roost.storage.schema import metadata


def run():
    config = context.config
    conn = config.attributes.get("connection")
    if conn is None:
        url = context.get_x_argument(as_dictionary=True).get("url") or \
            config.get_main_option("sqlalchemy.url")
        with create_engine(url).begin() as conn:
            _migrate(conn)
    else:
        _migrate(conn)


def _migrate(conn):
    context.configure(connection=conn, target_metadata=metadata, include_name=include_name,
                      render_as_batch=conn.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


run()
