"""Baseline: the schema as it was when migrations began.

Revision ID: 0001
Revises:
Create Date: 2026-11-24

The first revision, so it is also what a database made before migrations
goes through (``storage.migrations.upgrade`` runs it on such a database
instead of stamping it blindly). Releases before it only ever added: tables
(search_queue and the JMAP account-data tables), columns
(``accounts.history_floor``, ``changes.at``) and indexes, and replaced the
index ``mailbox_messages_message`` by a covering one. So the upgrade creates
what is missing and leaves what is there; on an empty database it creates
everything. The tables are frozen here as they were: later revisions change
them, never this file.
"""
import time

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

meta = sa.MetaData()
C, FK = sa.Column, sa.ForeignKey
INT, BIG, TEXT, FLOAT, BOOL = sa.Integer, sa.BigInteger, sa.Text, sa.Float, sa.Boolean
STR = sa.String


def _account(**kw):
    return C("account_id", INT, FK("accounts.id", ondelete="CASCADE"), nullable=False, **kw)


sa.Table("domains", meta, C("id", INT, primary_key=True),
         C("name", STR(255), nullable=False, unique=True))
sa.Table("accounts", meta, C("id", INT, primary_key=True),
         C("address", STR(320), nullable=False, unique=True),
         C("domain_id", INT, FK("domains.id"), nullable=False),
         C("password_hash", TEXT), C("quota_bytes", BIG),
         C("used_bytes", BIG, nullable=False), C("modseq", BIG, nullable=False),
         C("history_floor", BIG, nullable=False), C("created", FLOAT, nullable=False))
sa.Table("aliases", meta, C("id", INT, primary_key=True),
         C("address", STR(320), nullable=False), C("target", STR(320), nullable=False),
         sa.UniqueConstraint("address", "target"))
sa.Table("mailboxes", meta, C("id", INT, primary_key=True), _account(),
         C("name", STR(1024), nullable=False), C("folder", STR(2048), nullable=False),
         C("role", STR(32)), C("subscribed", BOOL, nullable=False),
         C("uidvalidity", BIG, nullable=False), C("uidnext", BIG, nullable=False),
         C("highestmodseq", BIG, nullable=False), C("sort_order", INT, nullable=False),
         sa.UniqueConstraint("account_id", "name"), sa.UniqueConstraint("account_id", "role"))
sa.Table("threads", meta, C("id", INT, primary_key=True), _account(),
         C("subject", STR(1024), nullable=False), C("updated", FLOAT, nullable=False),
         sa.Index("threads_subject", "account_id", "subject"))
sa.Table("thread_refs", meta, _account(), C("msgid", STR(998), nullable=False),
         C("thread_id", INT, FK("threads.id", ondelete="CASCADE"), nullable=False),
         sa.UniqueConstraint("account_id", "msgid"))
sa.Table("messages", meta, C("id", INT, primary_key=True), _account(),
         C("thread_id", INT, FK("threads.id"), nullable=False),
         C("stem", STR(255), nullable=False), C("blob_id", STR(80), nullable=False),
         C("content_hash", STR(64), nullable=False), C("size", BIG, nullable=False),
         C("internal_date", FLOAT, nullable=False), C("received_at", FLOAT, nullable=False),
         C("sent_at", FLOAT), C("msgid", STR(998)), C("subject", TEXT, nullable=False),
         C("from_sort", STR(320), nullable=False), C("to_sort", STR(320), nullable=False),
         C("has_attachment", BOOL, nullable=False), C("preview", TEXT, nullable=False),
         C("envelope", TEXT, nullable=False), C("structure", TEXT, nullable=False),
         C("summary", TEXT, nullable=False),
         sa.Index("messages_dedupe", "account_id", "msgid", "content_hash"),
         sa.Index("messages_blob", "account_id", "blob_id"),
         sa.Index("messages_thread", "thread_id"),
         sa.Index("messages_account", "account_id"))
sa.Table("mailbox_messages", meta,
         C("mailbox_id", INT, FK("mailboxes.id", ondelete="CASCADE"), primary_key=True),
         C("uid", BIG, primary_key=True, autoincrement=False),
         C("message_id", INT, FK("messages.id", ondelete="CASCADE"), nullable=False),
         C("modseq", BIG, nullable=False), C("flags", INT, nullable=False),
         C("keywords", TEXT, nullable=False), C("saved_at", FLOAT, nullable=False),
         sa.Index("mailbox_messages_message_box", "message_id", "mailbox_id", "uid"),
         sa.Index("mailbox_messages_modseq", "mailbox_id", "modseq"))
sa.Table("expunged", meta,
         C("mailbox_id", INT, FK("mailboxes.id", ondelete="CASCADE"), nullable=False),
         C("uid", BIG, nullable=False), C("modseq", BIG, nullable=False),
         sa.Index("expunged_mailbox", "mailbox_id", "modseq"))
sa.Table("changes", meta, C("id", INT, primary_key=True), _account(),
         C("modseq", BIG, nullable=False), C("kind", STR(32), nullable=False),
         C("object_id", INT, nullable=False), C("op", STR(1), nullable=False),
         C("at", FLOAT, nullable=False),
         sa.Index("changes_lookup", "account_id", "kind", "modseq"))
sa.Table("search_queue", meta, C("id", INT, primary_key=True), _account(),
         C("message_id", INT, nullable=False), C("op", STR(1), nullable=False), C("doc", TEXT),
         sa.Index("search_queue_account", "account_id", "id"))
sa.Table("uploads", meta, C("id", INT, primary_key=True), _account(),
         C("blob_id", STR(80), nullable=False), C("type", STR(255), nullable=False),
         C("size", BIG, nullable=False), C("data", sa.LargeBinary, nullable=False),
         C("created", FLOAT, nullable=False), sa.UniqueConstraint("account_id", "blob_id"))
sa.Table("app_tokens", meta, C("id", INT, primary_key=True), _account(),
         C("name", STR(255), nullable=False),
         C("token_hash", STR(64), nullable=False, unique=True),
         C("created", FLOAT, nullable=False))
sa.Table("identities", meta, C("id", INT, primary_key=True), _account(),
         C("name", STR(255), nullable=False), C("email", STR(320), nullable=False),
         C("settings", TEXT, nullable=False))
sa.Table("vacations", meta,
         C("account_id", INT, FK("accounts.id", ondelete="CASCADE"), primary_key=True),
         C("settings", TEXT, nullable=False))
sa.Table("submissions", meta, C("id", INT, primary_key=True), _account(),
         C("identity_id", INT, nullable=False), C("message_id", INT, nullable=False),
         C("thread_id", INT, nullable=False), C("send_at", FLOAT, nullable=False),
         C("status", TEXT, nullable=False))
sa.Table("push_subscriptions", meta, C("id", INT, primary_key=True), _account(),
         C("settings", TEXT, nullable=False))

# What existing rows get in a NOT NULL column an earlier release lacked: no
# history pruned yet, and change rows count as made now (so the first prune
# keeps them for the configured history_days).
ADDED_DEFAULTS = {("accounts", "history_floor"): lambda: "0",
                  ("changes", "at"): lambda: repr(time.time())}
REPLACED_INDEXES = {"mailbox_messages": ["mailbox_messages_message"]}


def upgrade():
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    existing = set(inspector.get_table_names())
    for table in meta.sorted_tables:
        if table.name not in existing:
            table.create(bind)
            continue
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for col in table.columns:
            if col.name not in have:
                default = ADDED_DEFAULTS[(table.name, col.name)]()
                op.add_column(table.name, C(col.name, col.type, nullable=col.nullable,
                                            server_default=sa.text(default)))
        indexes = {i["name"] for i in inspector.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)
        for name in REPLACED_INDEXES.get(table.name, ()):
            if name in indexes:
                op.drop_index(name, table_name=table.name)


def downgrade():
    raise NotImplementedError("the baseline is where migrations start; restore the "
                              "roost.db.bak-* copy kept before the upgrade instead")
