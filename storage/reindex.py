"""Reindex on upgrade: the search document's format version in ``server_state``.

``server_state`` row ``search_version`` holds the ``search_text.VERSION`` the
index was last built with (no row: a data directory from before versions were
kept). When it is older, ``roost serve`` reindexes every account in a
background thread (``start``), with either backend (FTS5 or Whoosh: each
batch replaces its own rows, so searches stay complete meanwhile, old
documents answering until their batch is done); ``roost reindex`` is the
manual way and also records the version. A data directory without
messages is stamped at ``Store.open`` (what is delivered from then on is
indexed in the current format).

Several worker processes share one data directory: the work is claimed
through the ``leases`` row ``search-reindex`` (holder = host:pid, renewed per
batch, ``LEASE_SECONDS``), so one process does it; a process that dies
mid-way leaves a lease that expires and the next start picks the work up again.
The version is written only when every account is done.
"""

import logging
import os
import socket
import threading
import time

from sqlalchemy import func, insert, select, update

from .schema import messages, server_state
from .search_text import VERSION

log = logging.getLogger("roost.storage")

NAME = "search_version"
LEASE = "search-reindex"
LEASE_SECONDS = 300.0


class Stopped(Exception):
    """The reindex was asked to stop (the server is stopping)."""


def stored_version(store):
    with store.reader() as conn:
        value = conn.execute(select(server_state.c.value).where(
            server_state.c.name == NAME)).scalar()
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def set_version(store, version=VERSION):
    with store.write() as txn:
        done = txn.conn.execute(update(server_state).where(server_state.c.name == NAME)
                                .values(value=str(version))).rowcount
        if not done:
            txn.conn.execute(insert(server_state).values(name=NAME, value=str(version)))


def needed(store):
    """Whether the index is older than this release's document format. A
    store without messages is stamped with the current version instead."""
    if stored_version(store) >= VERSION:
        return False
    with store.reader() as conn:
        any_message = conn.execute(select(func.count()).select_from(
            select(messages.c.id).limit(1).subquery())).scalar()
    if not any_message:
        set_version(store)
        return False
    return True


def _holder():
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def reindex_all(store, stop=None, progress=None):
    """Reindex every account and record the version. Returns the number of
    messages done, or None when another process holds the work. ``stop`` (a
    ``threading.Event``) ends it early between batches (raises ``Stopped``)."""
    holder = _holder()
    if not store.take_lease(LEASE, holder, LEASE_SECONDS):
        return None
    total = 0
    try:
        for account in store.accounts():
            if stop is not None and stop.is_set():
                raise Stopped()

            def step(done, count, account=account):
                if stop is not None and stop.is_set():
                    raise Stopped()
                if not store.renew_lease(LEASE, holder, LEASE_SECONDS):   # still ours?
                    raise Stopped()         # (it lapsed and another process took it)
                if progress:
                    progress(account, done, count)
            total += store.fulltext.reindex(store, account.id, progress=step)
        with store.reader() as conn:
            stale = store.fulltext.stale(conn)
        store.fulltext.remove_stale(store, stale)
        set_version(store)
    finally:
        store.release_lease(LEASE, holder)
    return total


def start(store):
    """At server start: reindex in a background thread when the index is
    older than this release. Returns ``(thread, stop_event)`` or None."""
    if not needed(store):
        return None
    stop = threading.Event()

    def run():
        try:
            began = time.monotonic()
            count = reindex_all(store, stop)
            if count is not None:
                log.info("search index rebuilt for format %d: %d messages in %.1f s",
                         VERSION, count, time.monotonic() - began)
        except Stopped:
            log.info("search reindex stopped; it resumes at the next start")
        except Exception:  # noqa: BLE001 - the old index keeps answering
            log.exception("search reindex failed; it is tried again at the next start")

    thread = threading.Thread(target=run, name="roost-reindex", daemon=True)
    thread.start()
    return thread, stop
