"""The SQL schema (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Owns table definitions and engine set-up (SQLite pragmas). The database is
authoritative for UIDs, MODSEQs, flags, ids, threads and change state; message
bytes live in the blob store (Maildir) and are never stored here.

One MODSEQ counter per account (``accounts.modseq``): every change takes the
next value in the same transaction and writes a ``changes`` row, so CONDSTORE,
QRESYNC, JMAP ``/changes`` and push all read one fact.
"""

import sqlite3
import time

from sqlalchemy import (
    BigInteger, Boolean, Column, Float, ForeignKey, Index, Integer, LargeBinary, MetaData,
    String, Table, Text, UniqueConstraint, create_engine, event,
)
from sqlalchemy.pool import StaticPool

metadata = MetaData()

domains = Table(
    "domains", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
)

accounts = Table(
    "accounts", metadata,
    Column("id", Integer, primary_key=True),
    Column("address", String(320), nullable=False, unique=True),
    Column("domain_id", Integer, ForeignKey("domains.id"), nullable=False),
    Column("password_hash", Text),
    Column("quota_bytes", BigInteger),
    Column("quota_messages", BigInteger),      # RFC 9208 MESSAGE limit; None: none
    Column("used_bytes", BigInteger, nullable=False, default=0),
    Column("modseq", BigInteger, nullable=False, default=1),
    # Changes at or below this MODSEQ have been pruned from the change log.
    Column("history_floor", BigInteger, nullable=False, default=0),
    Column("created", Float, nullable=False),
)

aliases = Table(
    "aliases", metadata,
    Column("id", Integer, primary_key=True),
    Column("address", String(320), nullable=False),
    Column("target", String(320), nullable=False),
    UniqueConstraint("address", "target"),
)

mailboxes = Table(
    "mailboxes", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(1024), nullable=False),
    Column("folder", String(2048), nullable=False),
    Column("role", String(32)),
    # Superseded by ``subscriptions`` (0005): IMAP subscriptions are names,
    # independent of mailboxes. Kept only because dropping a column rebuilds
    # the table on SQLite; nothing reads it.
    Column("subscribed", Boolean, nullable=False, default=True),
    Column("uidvalidity", BigInteger, nullable=False),
    Column("uidnext", BigInteger, nullable=False, default=1),
    Column("highestmodseq", BigInteger, nullable=False),
    Column("sort_order", Integer, nullable=False, default=0),
    # RFC 3501 \Recent: UIDs above this have not been seen by any session yet.
    Column("recent_uid", BigInteger, nullable=False, default=0, server_default="0"),
    UniqueConstraint("account_id", "name"),
    UniqueConstraint("account_id", "role"),
)

threads = Table(
    "threads", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("subject", String(1024), nullable=False, default=""),
    Column("updated", Float, nullable=False),
)
Index("threads_subject", threads.c.account_id, threads.c.subject)

# Every Message-ID a thread has seen (its messages' own and the ones they
# reference), so a reply finds its thread whatever order mail arrives in.
thread_refs = Table(
    "thread_refs", metadata,
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("msgid", String(998), nullable=False),
    Column("thread_id", Integer, ForeignKey("threads.id", ondelete="CASCADE"), nullable=False),
    UniqueConstraint("account_id", "msgid"),
)

messages = Table(
    "messages", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("thread_id", Integer, ForeignKey("threads.id"), nullable=False),
    Column("stem", String(255), nullable=False),
    Column("blob_id", String(80), nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("internal_date", Float, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("sent_at", Float),
    Column("msgid", String(998)),
    Column("subject", Text, nullable=False, default=""),
    Column("from_sort", String(320), nullable=False, default=""),
    Column("to_sort", String(320), nullable=False, default=""),
    Column("has_attachment", Boolean, nullable=False, default=False),
    Column("preview", Text, nullable=False, default=""),
    Column("envelope", Text, nullable=False),
    Column("structure", Text, nullable=False),
    Column("summary", Text, nullable=False),
)
Index("messages_dedupe", messages.c.account_id, messages.c.msgid, messages.c.content_hash)
Index("messages_blob", messages.c.account_id, messages.c.blob_id)
Index("messages_thread", messages.c.thread_id)
# (account_id, rowid): an account-wide text search seeks each match here.
Index("messages_account", messages.c.account_id)

# A message's place in a mailbox: IMAP's UID, MODSEQ and flags live here.
# ``flags`` is a bitmask of the system flags (see ``storage.flags``);
# ``keywords`` holds the other flags, space separated.
mailbox_messages = Table(
    "mailbox_messages", metadata,
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True),
    Column("uid", BigInteger, primary_key=True, autoincrement=False),
    Column("message_id", Integer, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("modseq", BigInteger, nullable=False),
    Column("flags", Integer, nullable=False, default=0),
    Column("keywords", Text, nullable=False, default=""),
    Column("saved_at", Float, nullable=False),
)
# Covering (message_id, mailbox_id, uid): a text search seeks each match here.
Index("mailbox_messages_message_box", mailbox_messages.c.message_id,
      mailbox_messages.c.mailbox_id, mailbox_messages.c.uid)
Index("mailbox_messages_modseq", mailbox_messages.c.mailbox_id, mailbox_messages.c.modseq)

expunged = Table(
    "expunged", metadata,
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id", ondelete="CASCADE"), nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("modseq", BigInteger, nullable=False),
)
Index("expunged_mailbox", expunged.c.mailbox_id, expunged.c.modseq)

# The change log: one row per changed object per MODSEQ. ``kind`` is the JMAP
# type name (Mailbox, Email, Thread); ``op`` is c(reated), u(pdated), d(estroyed).
changes = Table(
    "changes", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("modseq", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("object_id", Integer, nullable=False),
    Column("op", String(1), nullable=False),
    Column("at", Float, nullable=False, default=time.time),
)
Index("changes_lookup", changes.c.account_id, changes.c.kind, changes.c.modseq)

# Search documents waiting for a background-indexed backend (Whoosh): written in
# the delivery transaction, deleted once the index has committed them, scanned
# by searches meanwhile (storage.search_whoosh). ``op``: i(ndex) or d(elete).
search_queue = Table(
    "search_queue", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("message_id", Integer, nullable=False),
    Column("op", String(1), nullable=False),
    Column("doc", Text),
)
Index("search_queue_account", search_queue.c.account_id, search_queue.c.id)

# File operations a committed transaction still owes the blob store (links of
# copies, unlinks of removed copies, folder renames and deletions): written in
# the transaction that decides them, done right after its commit, deleted once
# done; start-up recovery and ``roost fsck`` redo whatever a crash left here
# (storage.blobops). ``txn`` groups one transaction's rows. No foreign keys:
# an account's deletion is itself such an operation.
file_ops = Table(
    "file_ops", metadata,
    Column("id", Integer, primary_key=True),
    Column("txn", String(64), nullable=False),
    Column("op", String(16), nullable=False),      # link, unlink, rmfolder, mvfolder, rmaccount
    Column("account", String(640), nullable=False),  # "domain/local"
    Column("folder", String(2048), nullable=False, default=""),
    Column("stem", String(255)),
    Column("bits", Integer, nullable=False, default=0),
    Column("dst_folder", String(2048)),
    Column("dst_bits", Integer, nullable=False, default=0),
)
Index("file_ops_txn", file_ops.c.txn)

# Blobs a client uploaded (JMAP upload, Blob/copy targets), kept until
# imported or expired; message bytes never live here.
uploads = Table(
    "uploads", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("blob_id", String(80), nullable=False),
    Column("type", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("created", Float, nullable=False),
    UniqueConstraint("account_id", "blob_id"),
)

# App passwords / bearer tokens: only a SHA-256 of the token is stored.
app_tokens = Table(
    "app_tokens", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created", Float, nullable=False),
)

# Sender identities an account may use (From addresses, signatures).
identities = Table(
    "identities", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False, default=""),
    Column("email", String(320), nullable=False),
    Column("settings", Text, nullable=False, default="{}"),   # replyTo, bcc, signatures (JSON)
)

# The account's vacation auto-reply (one row per account).
vacations = Table(
    "vacations", metadata,
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("settings", Text, nullable=False, default="{}"),
)

# Messages handed over for sending, with their envelope and status (JSON).
submissions = Table(
    "submissions", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("identity_id", Integer, nullable=False),
    Column("message_id", Integer, nullable=False),
    Column("thread_id", Integer, nullable=False),
    Column("send_at", Float, nullable=False),
    Column("status", Text, nullable=False, default="{}"),
)

# The outbound queue (storage.outbound): one row per message handed over for
# sending, its bytes in DATA/queue/<spool>; one row per recipient with its state.
outbound = Table(
    "outbound", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="SET NULL")),
    Column("sender", String(320), nullable=False),      # "" is the null reverse-path
    Column("spool", String(64)),                        # None once nothing is left to send
    Column("size", BigInteger, nullable=False),
    Column("created", Float, nullable=False),
    Column("release_at", Float, nullable=False),        # FUTURERELEASE, sendAt, undo window
    Column("held", Boolean, nullable=False, default=False),
    Column("ret", String(4)),
    Column("envid", String(100)),
    Column("requiretls", Boolean, nullable=False, default=False),
    Column("smtputf8", Boolean, nullable=False, default=False),
    Column("kind", String(16), nullable=False, default="mail"),   # mail, dsn, report
    Column("submission_id", Integer),
)
Index("outbound_account", outbound.c.account_id, outbound.c.created)

outbound_rcpts = Table(
    "outbound_rcpts", metadata,
    Column("id", Integer, primary_key=True),
    Column("message_id", Integer, ForeignKey("outbound.id", ondelete="CASCADE"), nullable=False),
    Column("address", String(320), nullable=False),
    Column("domain", String(255), nullable=False),
    Column("orcpt", String(500)),
    Column("notify", String(32)),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt", Float, nullable=False),
    Column("last_attempt", Float),
    Column("reply", Text),
    Column("remote", String(255)),
    Column("delay_notified", Boolean, nullable=False, default=False),
    Column("lease", Float),
)
Index("outbound_rcpts_due", outbound_rcpts.c.state, outbound_rcpts.c.next_attempt)
Index("outbound_rcpts_message", outbound_rcpts.c.message_id)

# Addresses that bounced hard: mail to them fails at once until ``expires``.
suppressions = Table(
    "suppressions", metadata,
    Column("address", String(320), primary_key=True),
    Column("reason", Text, nullable=False, default=""),
    Column("created", Float, nullable=False),
    Column("expires", Float),
)

# Hold rules: new mail of an account, or to a destination domain, is held.
hold_rules = Table(
    "hold_rules", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE")),
    Column("domain", String(255)),
    Column("created", Float, nullable=False),
)

# Sieve scripts (storage.sieve.scripts): ManageSieve, JMAP SieveScript and the
# generated VacationResponse script all edit these rows; at most one active.
sieve_scripts = Table(
    "sieve_scripts", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("content", Text, nullable=False),
    Column("active", Boolean, nullable=False, default=False),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    Column("notified", String(64)),      # hash of the runtime error the user was last told of
    UniqueConstraint("account_id", "name", name="sieve_scripts_name"),
)

# Vacation replies sent (RFC 5230: one per sender per :days/:seconds period).
sieve_replies = Table(
    "sieve_replies", metadata,
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("handle", String(64), primary_key=True),   # hash of :handle, or of reason and subject
    Column("sender", String(320), primary_key=True),
    Column("expires", Float, nullable=False),
)

# Sieve "duplicate" (RFC 7352) memory: ids seen per account until they expire.
sieve_duplicates = Table(
    "sieve_duplicates", metadata,
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(64), primary_key=True),      # hash of handle and unique id
    Column("expires", Float, nullable=False),
)

# Greylisting triplets of the SMTP edge (client network, sender, recipient),
# and client networks allow-listed after mail from them passed.
greylist = Table(
    "greylist", metadata,
    Column("network", String(64), primary_key=True),
    Column("sender", String(320), primary_key=True),
    Column("recipient", String(320), primary_key=True),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
    Column("passed", Float),
    Column("attempts", Integer, nullable=False, default=1),
)
Index("greylist_seen", greylist.c.last_seen)

greylist_allowed = Table(
    "greylist_allowed", metadata,
    Column("network", String(64), primary_key=True),
    Column("passes", Integer, nullable=False, default=0),
    Column("expires", Float, nullable=False),
)

# DMARC evaluations kept for aggregate reports (RFC 7489 section 7.2), one row
# per message from a domain that publishes rua=.
dmarc_records = Table(
    "dmarc_records", metadata,
    Column("id", Integer, primary_key=True),
    Column("policy_domain", String(255), nullable=False),
    Column("rua", Text, nullable=False),
    Column("policy", Text, nullable=False, default="{}"),   # p, sp, pct, adkim, aspf (JSON)
    Column("source_ip", String(64), nullable=False),
    Column("header_from", String(255), nullable=False),
    Column("envelope_from", String(255), nullable=False, default=""),
    Column("disposition", String(16), nullable=False),
    Column("dkim", String(16), nullable=False),             # aligned DKIM result
    Column("spf", String(16), nullable=False),              # aligned SPF result
    Column("results", Text, nullable=False, default="{}"),  # auth_results (JSON)
    Column("created", Float, nullable=False),
)
Index("dmarc_records_domain", dmarc_records.c.policy_domain, dmarc_records.c.created)

# Web push endpoints registered by a client (no account: they belong to the
# credentials' owner, which is an account here).
push_subscriptions = Table(
    "push_subscriptions", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("settings", Text, nullable=False, default="{}"),
)


# IMAP subscriptions (RFC 3501 6.3.6, RFC 9051): names, which need not exist.
subscriptions = Table(
    "subscriptions", metadata,
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(1024), primary_key=True),
)

# RFC 4314 grants on a mailbox: grantee is an account address (lower case) or
# "anyone"; rights is the RFC 4314 rights string.
acl = Table(
    "acl", metadata,
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id", ondelete="CASCADE"), primary_key=True),
    Column("grantee", String(320), primary_key=True),
    Column("rights", String(32), nullable=False),
)
Index("acl_grantee", acl.c.grantee)

# RFC 5464 METADATA entries. account_id is the account the entry belongs to
# (the mailbox's owner for /shared entries, the user for /private ones and for
# server entries); mailbox_id None is a server entry. name is the entry name
# as the client gave it, e.g. "/private/comment".
metadata_entries = Table(
    "metadata_entries", metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("mailbox_id", Integer, ForeignKey("mailboxes.id", ondelete="CASCADE")),
    Column("name", String(1024), nullable=False),
    Column("value", LargeBinary, nullable=False),
)
Index("metadata_entries_owner", metadata_entries.c.account_id, metadata_entries.c.mailbox_id)

# Named leases held by one process for a while (a POP3 maildrop lock).
leases = Table(
    "leases", metadata,
    Column("name", String(255), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires", Float, nullable=False),
)

# Server-wide values (the search index's format version, for reindexing).
server_state = Table(
    "server_state", metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)


def _wal(cur, wait=30.0):
    """Switch the database to WAL. The switch needs the database to itself and
    SQLite does not wait for that (no busy handler), so a second process
    opening an old database at the same moment retries here."""
    deadline = time.monotonic() + wait
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def make_engine(url, *, memory=False):
    """An engine for ``url``; SQLite gets WAL, foreign keys and a busy timeout."""
    if memory:
        engine = create_engine("sqlite://", poolclass=StaticPool,
                               connect_args={"check_same_thread": False})
    elif url.startswith("sqlite"):
        engine = create_engine(url, pool_size=8, max_overflow=8,
                               connect_args={"check_same_thread": False, "timeout": 30})
    else:
        engine = create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):
            # Autocommit at the driver level; SQLAlchemy issues BEGIN itself so
            # that write transactions take the lock up front (no upgrade deadlocks).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            if not memory:
                _wal(cur)
            # NORMAL: a commit is written but not fsynced; Store.write syncs
            # the WAL before it returns (storage.durable), shared by writers.
            cur.execute("PRAGMA synchronous=NORMAL" if not memory else "PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn):
            write = conn.get_execution_options().get("roost_write")
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")
    return engine


def create_all(engine):
    # Full-text tables belong to the search backend (storage.search_fts5 on SQLite).
    metadata.create_all(engine)
