"""DMARC evaluations kept for aggregate reports (RFC 7489 section 7.2): the
``dmarc_records`` table.

``record(store, row)`` writes one evaluation (the inbound pipeline calls it,
through the server, for domains whose record has rua=); ``due(store,
before)`` groups what was recorded before ``before`` by policy domain, for
the daily report job; ``done(store, ids)`` forgets rows once their report is
queued; ``prune(store, older_than)`` forgets rows older than that (reports
off, or a domain whose report could not be made). Storage does no DNS and
sends nothing: the report job (``server``) builds the report and queues it
through ``storage.outbound``.
"""

import json
import time

from sqlalchemy import delete, insert, select

from .schema import dmarc_records

MAX_ROWS = 100_000      # rows one report run reads (the rest wait for the next run)


def record(store, row, now=None):
    with store.write() as txn:
        txn.conn.execute(insert(dmarc_records).values(
            policy_domain=row["policy_domain"][:255], rua=row["rua"],
            policy=json.dumps(row.get("policy", {})), source_ip=row["source_ip"][:64],
            header_from=row["header_from"][:255], envelope_from=row.get("envelope_from", "")[:255],
            disposition=row["disposition"], dkim=row["dkim"], spf=row["spf"],
            results=json.dumps(row.get("results", {})),
            created=time.time() if now is None else now))


def due(store, before, limit=MAX_ROWS):
    """``{policy_domain: {"rua", "policy", "begin", "end", "rows": [dict]}}``
    for the rows recorded before ``before`` (the latest rua and policy)."""
    with store.reader() as conn:
        rows = conn.execute(select(dmarc_records).where(dmarc_records.c.created < before)
                            .order_by(dmarc_records.c.id).limit(limit)).all()
    out = {}
    for r in rows:
        entry = out.setdefault(r.policy_domain, {"rows": [], "begin": r.created, "end": r.created})
        entry["rua"], entry["policy"] = r.rua, json.loads(r.policy or "{}")
        entry["begin"], entry["end"] = min(entry["begin"], r.created), max(entry["end"], r.created)
        entry["rows"].append(dict(r._mapping) | {"results": json.loads(r.results or "{}")})
    return out


def done(store, ids):
    ids = list(ids)
    with store.write() as txn:
        for i in range(0, len(ids), 500):
            txn.conn.execute(delete(dmarc_records).where(dmarc_records.c.id.in_(ids[i:i + 500])))


def prune(store, older_than, now=None):
    cutoff = (time.time() if now is None else now) - older_than
    with store.write() as txn:
        return txn.conn.execute(delete(dmarc_records).where(
            dmarc_records.c.created < cutoff)).rowcount
