"""The SQLite FTS5 search backend (the default on SQLite).

Owns two FTS5 tables in the store's database, keyed by ``rowid = messages.id``
and written in the delivery transaction, so a committed message is always
searchable and an expunged one never is:

- ``message_words`` (unicode61, case and diacritic folding): ``headers`` (every
  decoded header line), ``body`` (text parts, HTML as text, attachment names),
  and ``cjk_headers``/``cjk_body``: their CJK characters one per token, because
  unicode61 would keep a whole unspaced Japanese sentence as one word. BODY and
  TEXT words become prefix queries; CJK runs become phrases. No FTS5 prefix
  index: it only serves one- to three-letter prefixes and costs about a
  quarter of the indexing time (measured with bench.search).
- ``message_headers`` (trigram, over text folded by ``search_text.fold``):
  subject, from, to, cc, bcc and every header line, for RFC 3501 substrings.
  Values shorter than three characters cannot use trigrams and fall back to
  LIKE over that table (never to message files).

Must not read message files except in ``rebuild``, and must not be used on
PostgreSQL (FTS5 is SQLite's). The first release kept one ``message_text``
table instead: it is dropped, and messages stored before these tables existed
are indexed from their files when the store opens (``index_missing``). The
tables are not in ``storage.schema`` and Alembic leaves them alone
(``storage.migrations.FTS_TABLES``).
"""

from sqlalchemy import Integer, Text, column, literal_column, select, table, text

from . import search_text as st
from .schema import messages
from .search import SearchBackend, like_escape

WORDS = table("message_words", column("rowid", Integer), column("headers", Text),
              column("body", Text), column("cjk_headers", Text), column("cjk_body", Text))
HEADERS = table("message_headers", column("rowid", Integer), column("hsubject", Text),
                column("hfrom", Text), column("hto", Text), column("hcc", Text),
                column("hbcc", Text), column("fields", Text))
HEADER_COLUMN = {"subject": "hsubject", "from": "hfrom", "to": "hto", "cc": "hcc", "bcc": "hbcc"}
_INSERT_WORDS = ("INSERT INTO message_words (rowid, headers, body, cjk_headers, cjk_body) "
                 "VALUES (:rowid, :headers, :body, :cjk_headers, :cjk_body)")
_INSERT_HEADERS = ("INSERT INTO message_headers (rowid, hsubject, hfrom, hto, hcc, hbcc, fields) "
                   "VALUES (:rowid, :hsubject, :hfrom, :hto, :hcc, :hbcc, :fields)")


def create_tables(conn):
    """Create the tables if missing; True when they were created over
    existing messages (which then need indexing)."""
    had = conn.execute(text("SELECT 1 FROM sqlite_master WHERE name = 'message_words'")).first()
    conn.execute(text("DROP TABLE IF EXISTS message_text"))     # the first release's
    conn.execute(text(
        "CREATE VIRTUAL TABLE IF NOT EXISTS message_words USING fts5("
        "headers, body, cjk_headers, cjk_body, tokenize='unicode61 remove_diacritics 2')"))
    conn.execute(text(
        "CREATE VIRTUAL TABLE IF NOT EXISTS message_headers USING fts5("
        "hsubject, hfrom, hto, hcc, hbcc, fields, tokenize='trigram')"))
    return not had and conn.execute(text("SELECT 1 FROM messages LIMIT 1")).first() is not None


def rows(docs):
    """The two tables' rows for ``[(message_pk, document)]``."""
    words, heads = [], []
    for pk, doc in docs:
        words.append({"rowid": pk, "headers": doc["fields"], "body": doc["body"],
                      "cjk_headers": _cjk(doc["fields"]), "cjk_body": _cjk(doc["body"])})
        row = {"rowid": pk, "fields": st.fold(doc["fields"])}
        row.update({col: st.fold(doc[f]) for f, col in HEADER_COLUMN.items()})
        heads.append(row)
    return words, heads


def _cjk(value):
    if value.isascii():
        return ""
    runs = st._CJK_RUN.findall(value)
    return f" {st.CJK_SEPARATOR} ".join(" ".join(st.fold(r)) for r in runs)


def _phrase(value):
    return '"' + value.replace('"', '""') + '"'


class Fts5Backend(SearchBackend):
    name = "fts5"

    def __init__(self, engine):
        # The write lock up front (BEGIN IMMEDIATE): a read that turns into a
        # write fails at once, without waiting, when another process wrote in
        # between (two processes opening one data directory together).
        with engine.connect() as conn:
            conn.execution_options(roost_write=True)
            with conn.begin():
                self.unindexed = create_tables(conn)

    def index_missing(self, store):
        if self.unindexed:
            for account in store.accounts():
                self.reindex(store, account.id)
            self.unindexed = False

    def index(self, txn, account_id, docs):
        # Straight to the sqlite3 cursor (FTS5 is SQLite-only): this runs in
        # the delivery committer, where SQLAlchemy's per-call work showed.
        words, heads = rows(docs)
        if words:
            txn.sql.many(_INSERT_WORDS, words)
            txn.sql.many(_INSERT_HEADERS, heads)

    def remove(self, txn, account_id, message_pks):
        pks = sorted(set(message_pks))
        for i in range(0, len(pks), 500):
            chunk = ",".join(str(int(p)) for p in pks[i:i + 500])
            for name in ("message_words", "message_headers"):
                txn.conn.execute(text(f"DELETE FROM {name} WHERE rowid IN ({chunk})"))

    def remove_account(self, txn, account_id):
        for name in ("message_words", "message_headers"):
            txn.conn.execute(text(f"DELETE FROM {name} WHERE rowid IN "
                              "(SELECT id FROM messages WHERE account_id = :a)"), {"a": account_id})

    # --- queries ---------------------------------------------------------------

    def query(self, conn, account_id, node):
        field, value = node.field, node.value
        name = st.header_name(field)
        if name is not None:
            return self._header_field(conn, account_id, name, value)
        if field in HEADER_COLUMN:
            folded = st.fold(value)
            if not folded:
                return True
            return self._substring(HEADER_COLUMN[field], folded)
        if field not in ("text", "body"):
            raise ValueError(f"unknown text field {field!r}")
        if not value.strip():
            return True
        qwords, runs = st.query_words(value)
        if not qwords and not runs:
            return ()
        wcols, ccols = ("body", "cjk_body") if field == "body" else \
            ("{headers body}", "{cjk_headers cjk_body}")
        parts = [f"{wcols} : {_phrase(w)} *" for w in qwords]
        parts += [f"{ccols} : {_phrase(' '.join(r))}" for r in runs]
        return select(WORDS.c.rowid).where(
            literal_column("message_words").op("MATCH")(" AND ".join(parts)))

    def _substring(self, col, folded):
        """Rowids whose folded column ``col`` contains ``folded``."""
        if len(folded) >= 3:
            return select(HEADERS.c.rowid).where(
                literal_column("message_headers").op("MATCH")(f"{col} : {_phrase(folded)}"))
        return select(HEADERS.c.rowid).where(
            HEADERS.c[col].like("%" + like_escape(folded) + "%", escape="\\"))

    def _header_field(self, conn, account_id, name, value):
        """HEADER name value: trigram candidates, checked line by line here."""
        if not name:
            raise ValueError("HEADER needs a field name")
        folded = st.fold(value)
        probe = folded if len(folded) >= 3 else name + ":"
        cand = self._substring("fields", probe).add_columns(HEADERS.c.fields).where(
            HEADERS.c.rowid.in_(select(messages.c.id).where(messages.c.account_id == account_id)))
        found = []
        for pk, fields in conn.execute(cand):
            lines = st.header_lines(fields, name)
            if lines and (not folded or any(folded in v for v in lines)):
                found.append(pk)
        return found

    # --- maintenance -----------------------------------------------------------

    def indexed(self, conn, account_id, message_pks):
        """Which of ``message_pks`` have rows."""
        out = set()
        pks = sorted(set(message_pks))
        for i in range(0, len(pks), 500):
            chunk = ",".join(str(int(p)) for p in pks[i:i + 500])
            out.update(r[0] for r in conn.execute(
                text(f"SELECT rowid FROM message_words WHERE rowid IN ({chunk})")))
        return out

    def stale(self, conn):
        """``{None: [rowids]}`` whose message is gone (the tables serve every
        account, so a stale row's account is unknown)."""
        pks = [r[0] for r in conn.execute(text(
            "SELECT rowid FROM message_words WHERE rowid NOT IN (SELECT id FROM messages) "
            "UNION SELECT rowid FROM message_headers WHERE rowid NOT IN (SELECT id FROM messages)"))]
        return {None: pks} if pks else {}

    def remove_stale(self, store, stale):
        for _account, pks in stale.items():
            with store.write() as txn:
                self.remove(txn, None, pks)
