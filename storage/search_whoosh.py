"""The Whoosh search backend (whoosh-reloaded): the choice on PostgreSQL.

Owns one Whoosh index per account under ``DATA/search/<account id>/`` (in
memory when the store has no directory) and the background thread that
fills it. Delivery writes the message's search document to ``search_queue``
in its own transaction (so a crash loses nothing, and ``roost deliver`` in
another process is covered too); the indexer thread takes queued rows in
batches, commits them to Whoosh, then deletes them from the queue. A search
asks Whoosh and also scans the account's queued documents with the reference
matcher (``search_text.matches``), so answers stay complete while the index
catches up. Removals are queued the same way; until applied, the SQL join in
``storage.search`` already hides removed messages.

Matching is the same as FTS5's: words are pre-folded by ``search_text`` and
indexed as given; header substrings use candidates from trigrams of the
subject, from, to, cc and bcc values, checked against the stored folded
value. HEADER searches of other fields, and values shorter than three
characters, check the stored values of every document of the account:
slower, still no message file read.

Must not be called on the event loop (Whoosh commits block), and must not
read message files except in ``rebuild``.
"""

import json
import logging
import os
import shutil
import threading

from sqlalchemy import delete, insert, select
from whoosh import fields, formats, index
from whoosh import query as wq
from whoosh.analysis import NgramTokenizer, SpaceSeparatedTokenizer
from whoosh.filedb.filestore import RamStorage

from . import search_text as st
from .schema import messages, search_queue
from .search import SearchBackend

log = logging.getLogger("roost.search")

SUBSTRING_FIELDS = st.HEADER_FIELDS + ("fields",)
BATCH = 1000


def _schema():
    # Existence postings without scores: search needs which documents match,
    # never how well, and this halves Whoosh's indexing work.
    def keyed(analyzer, positions=False):
        fmt = formats.Positions() if positions else formats.Existence()
        return fields.FieldType(fmt, analyzer, scorable=False)
    words = SpaceSeparatedTokenizer()
    spec = {"id": fields.ID(unique=True), "n": fields.NUMERIC(int, bits=64, sortable=True),
            "headers": keyed(words), "body": keyed(words),
            "cjk_headers": keyed(words, True), "cjk_body": keyed(words, True),
            "grams": keyed(NgramTokenizer(3, 3))}
    for name in SUBSTRING_FIELDS:
        spec["s_" + name] = fields.STORED()
    return fields.Schema(**spec)


def whoosh_document(pk, doc):
    hw, hc = st.words(doc["fields"])
    bw, bc = st.words(doc["body"])
    out = {"id": str(pk), "n": pk, "headers": " ".join(hw), "body": " ".join(bw),
           "cjk_headers": " ".join(hc), "cjk_body": " ".join(bc)}
    for name in SUBSTRING_FIELDS:
        out["s_" + name] = st.fold(doc[name])
    out["grams"] = "\n".join(out["s_" + name] for name in st.HEADER_FIELDS)
    return out


class WhooshBackend(SearchBackend):
    name = "whoosh"

    def __init__(self, store, directory=None, *, delay=0.2):
        self.store = store
        self.directory = directory
        self.delay = delay
        self._indexes = {}
        self._ram = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._applying = threading.Lock()
        self._stop = False
        self._halt = threading.Event()
        self._thread = None

    # --- writes (in the caller's transaction) ----------------------------------

    def index(self, txn, account_id, docs):
        rows = [{"account_id": account_id, "message_id": pk, "op": "i", "doc": json.dumps(doc)}
                for pk, doc in docs]
        if rows:
            txn.conn.execute(insert(search_queue), rows)
            txn.after(self._kick)

    def remove(self, txn, account_id, message_pks):
        pks = sorted(set(message_pks))
        for i in range(0, len(pks), 500):
            txn.conn.execute(delete(search_queue).where(
                search_queue.c.account_id == account_id, search_queue.c.op == "i",
                search_queue.c.message_id.in_(pks[i:i + 500])))
        if pks:
            txn.conn.execute(insert(search_queue), [
                {"account_id": account_id, "message_id": pk, "op": "d", "doc": None} for pk in pks])
            txn.after(self._kick)

    def remove_account(self, txn, account_id):
        txn.conn.execute(delete(search_queue).where(search_queue.c.account_id == account_id))
        txn.after(lambda: self._drop(account_id))

    # --- the indexes -------------------------------------------------------------

    def _open(self, account_id, create=True):
        with self._lock:
            ix = self._indexes.get(account_id)
            if ix is not None:
                return ix
            if self.directory is None:
                storage = self._ram.setdefault(account_id, RamStorage())
                ix = storage.open_index() if storage.index_exists() else \
                    (storage.create_index(_schema()) if create else None)
            else:
                path = os.path.join(self.directory, str(account_id))
                if index.exists_in(path):
                    ix = index.open_dir(path)
                elif create:
                    os.makedirs(path, exist_ok=True)
                    ix = index.create_in(path, _schema())
            if ix is not None:
                self._indexes[account_id] = ix
            return ix

    def _drop(self, account_id):
        with self._lock:
            ix = self._indexes.pop(account_id, None)
            if ix is not None:
                ix.close()
            self._ram.pop(account_id, None)
            if self.directory is not None:
                shutil.rmtree(os.path.join(self.directory, str(account_id)), ignore_errors=True)

    # --- the indexer thread --------------------------------------------------------

    def _kick(self):
        with self._lock:
            if self._stop:
                return
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="roost-search-index",
                                                daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self):
        while not self._stop:
            self._wake.wait()
            if self._stop:
                break
            self._halt.wait(self.delay)          # let a batch gather
            self._wake.clear()
            try:
                while self.apply_queue(BATCH):
                    pass
            except Exception:  # noqa: BLE001 - keep the thread; the queue is retried later
                log.exception("search indexing failed")

    def apply_queue(self, limit=BATCH):
        """Move up to ``limit`` queued changes into Whoosh; returns how many."""
        with self._applying:
            with self.store.reader() as conn:
                rows = conn.execute(select(search_queue).order_by(search_queue.c.id)
                                    .limit(limit)).all()
            if not rows:
                return 0
            by_account = {}
            for r in rows:
                by_account.setdefault(r.account_id, []).append(r)
            for account_id, items in by_account.items():
                ix = self._open(account_id)
                writer = ix.writer(timeout=60)
                try:
                    for r in items:
                        if r.op == "d":
                            writer.delete_by_term("id", str(r.message_id))
                        else:
                            writer.update_document(**whoosh_document(r.message_id, json.loads(r.doc)))
                except BaseException:
                    writer.cancel()
                    raise
                writer.commit()
            # Delete exactly the rows applied: on PostgreSQL a smaller id can commit later.
            ids = [r.id for r in rows]
            with self.store.write() as txn:
                for i in range(0, len(ids), 500):
                    txn.conn.execute(delete(search_queue).where(search_queue.c.id.in_(ids[i:i + 500])))
            return len(rows)

    def flush(self):
        """Index everything queued now, in the caller's thread."""
        while self.apply_queue(BATCH):
            pass

    def close(self):
        with self._lock:
            self._stop = True
            thread = self._thread
        self._halt.set()
        self._wake.set()
        if thread is not None:
            thread.join(timeout=30)
        with self._lock:
            for ix in self._indexes.values():
                ix.close()
            self._indexes.clear()

    # --- queries -------------------------------------------------------------------

    def query(self, conn, account_id, node):
        field, value = node.field, node.value
        name = st.header_name(field)
        if name is None and field not in st.HEADER_FIELDS and field not in ("text", "body"):
            raise ValueError(f"unknown text field {field!r}")
        if name == "":
            raise ValueError("HEADER needs a field name")
        # Queue first, then the index: a batch committed in between is in one of them.
        pending = {}
        for r in conn.execute(select(search_queue.c.message_id, search_queue.c.op, search_queue.c.doc)
                              .where(search_queue.c.account_id == account_id)
                              .order_by(search_queue.c.id)):
            if r.op == "d":
                pending.pop(r.message_id, None)
            else:
                pending[r.message_id] = r.doc
        found = {pk for pk, doc in pending.items() if st.matches(json.loads(doc), field, value)}
        ix = self._open(account_id, create=False)
        if ix is not None:
            with ix.searcher() as searcher:
                found.update(self._search(searcher, field, name, value))
        return found

    def _search(self, searcher, field, name, value):
        if name is not None or field in st.HEADER_FIELDS:
            key = "fields" if name is not None else field
            folded = st.fold(value)
            if name is None and not folded:
                return self._all(searcher)
            # Trigrams cover subject/from/to/cc/bcc only (other header lines of real
            # mail would double the index); other HEADER names check every document.
            probe = folded if len(folded) >= 3 and (name is None or name in st.HEADER_FIELDS) else ""

            def ok(stored):
                text = stored.get("s_" + key, "")
                if name is None:
                    return folded in text
                lines = st.header_lines(text, name)
                return bool(lines) and (not folded or any(folded in v for v in lines))
            docs = searcher.docs_for_query(self._grams("grams", probe)) if len(probe) >= 3 \
                else searcher.reader().all_doc_ids()
            return self._checked(searcher, docs, ok)
        if not value.strip():
            return self._all(searcher)
        qwords, runs = st.query_words(value)
        if not qwords and not runs:
            return set()
        wfields = ("body",) if field == "body" else ("headers", "body")
        cfields = ("cjk_body",) if field == "body" else ("cjk_headers", "cjk_body")
        parts = [wq.Or([wq.Prefix(f, st.fold_word(w)) for f in wfields]) for w in qwords]
        for run in runs:
            chars = list(run)
            parts.append(wq.Or([wq.Phrase(f, chars) if len(chars) > 1 else wq.Term(f, chars[0])
                                   for f in cfields]))
        return self._ids(searcher, searcher.docs_for_query(wq.And(parts)))

    @staticmethod
    def _grams(fieldname, value):
        grams = sorted({value[i:i + 3] for i in range(len(value) - 2)})
        return wq.And([wq.Term(fieldname, g) for g in grams])

    @staticmethod
    def _checked(searcher, docs, ok):
        ids = searcher.reader().column_reader("n")
        return {ids[d] for d in docs if ok(searcher.stored_fields(d))}

    @staticmethod
    def _ids(searcher, docs):
        ids = searcher.reader().column_reader("n")
        return {ids[d] for d in docs}

    def _all(self, searcher):
        reader = searcher.reader()
        return self._ids(searcher, reader.all_doc_ids())

    # --- maintenance -----------------------------------------------------------------

    def indexed(self, conn, account_id, message_pks):
        """Which of ``message_pks`` are in the index or queued for it."""
        have = set()
        for r in conn.execute(select(search_queue.c.message_id, search_queue.c.op)
                              .where(search_queue.c.account_id == account_id)
                              .order_by(search_queue.c.id)):
            (have.add if r.op == "i" else have.discard)(r.message_id)
        ix = self._open(account_id, create=False)
        if ix is not None:
            with ix.searcher() as searcher:
                have |= self._all(searcher)
        return have & set(message_pks)

    def stale(self, conn):
        """``{account_id: [message ids]}`` indexed but no longer stored."""
        if self.directory is None:
            accounts = list(self._ram)
        elif os.path.isdir(self.directory):
            accounts = [int(n) for n in os.listdir(self.directory) if n.isdigit()]
        else:
            accounts = []
        out = {}
        for account_id in accounts:
            ix = self._open(account_id, create=False)
            if ix is None:
                continue
            with ix.searcher() as searcher:
                ids = self._all(searcher)
            live = set(conn.execute(select(messages.c.id).where(messages.c.account_id == account_id))
                       .scalars())
            if ids - live:
                out[account_id] = sorted(ids - live)
        return out

    def remove_stale(self, store, stale):
        for account_id, pks in stale.items():
            with store.write() as txn:
                self.remove(txn, account_id, pks)
        self.flush()
