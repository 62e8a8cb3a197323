"""Per-account data that is not a message: uploaded blobs, app tokens, sender
identities, submissions and web push subscriptions (the vacation auto-reply is
a Sieve script: ``storage.sieve.vacation``).

Owns those tables' reads and writes. Writes of identities and submissions take
the account's next MODSEQ and log ``changes`` rows (kinds ``Identity`` and
``EmailSubmission``) like every other change, so ``/changes`` and push see
them. Settings are plain JSON documents whose keys the caller chooses; this
module checks ownership (every call takes the account id), never content.
"""

import hashlib
import json
import secrets
import time

from sqlalchemy import and_, delete, insert, select, update

from .errors import AccountNotFound, MessageNotFound
from .schema import app_tokens, identities, outbound, push_subscriptions, submissions, uploads

UPLOAD_TTL = 24 * 3600


def blob_id_of(data):
    """The content-derived id of uploaded bytes (messages use the same form)."""
    return "B" + hashlib.sha256(data).hexdigest()[:40]


# --- uploads ---------------------------------------------------------------

def save_upload(store, account_id, data, content_type):
    """Keep ``data`` for the account; returns its blob id. Uploading the same
    bytes again returns the same id and refreshes its expiry."""
    blob_id = blob_id_of(data)
    now = time.time()
    with store.write() as txn:
        conn = txn.conn
        conn.execute(delete(uploads).where(uploads.c.created < now - UPLOAD_TTL))
        n = conn.execute(update(uploads).where(and_(
            uploads.c.account_id == account_id, uploads.c.blob_id == blob_id))
            .values(created=now, type=content_type)).rowcount
        if not n:
            conn.execute(insert(uploads).values(account_id=account_id, blob_id=blob_id,
                                                type=content_type, size=len(data), data=data,
                                                created=now))
    return blob_id


def read_upload(store, account_id, blob_id):
    """``(bytes, content type)`` of an upload; raises MessageNotFound."""
    with store.reader() as conn:
        row = conn.execute(select(uploads.c.data, uploads.c.type).where(and_(
            uploads.c.account_id == account_id, uploads.c.blob_id == blob_id))).first()
    if row is None:
        raise MessageNotFound(blob_id)
    return bytes(row.data), row.type


def upload_sizes(store, account_id):
    """Total bytes the account holds in uploads."""
    with store.reader() as conn:
        return sum(r[0] for r in conn.execute(
            select(uploads.c.size).where(uploads.c.account_id == account_id)))


# --- app tokens --------------------------------------------------------------

def _token_hash(token):
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def create_token(store, account_id, name):
    """A new random token for the account; only its hash is stored."""
    token = "rst_" + secrets.token_urlsafe(32)
    with store.write() as txn:
        conn = txn.conn
        conn.execute(insert(app_tokens).values(account_id=account_id, name=name[:255],
                                               token_hash=_token_hash(token), created=time.time()))
    return token


def token_account(store, token):
    """The ``Account`` the token belongs to, or None."""
    with store.reader() as conn:
        account_id = conn.execute(select(app_tokens.c.account_id).where(
            app_tokens.c.token_hash == _token_hash(token))).scalar()
    if account_id is None:
        return None
    try:
        return store.account_by_id(account_id)
    except AccountNotFound:
        return None


def delete_token(store, account_id, name):
    with store.write() as txn:
        conn = txn.conn
        return conn.execute(delete(app_tokens).where(and_(
            app_tokens.c.account_id == account_id, app_tokens.c.name == name))).rowcount


# --- identities ----------------------------------------------------------------

def identities_of(store, account_id):
    """``[(pk, name, email, settings)]``; an account with none gets one for its address."""
    with store.reader() as conn:
        rows = conn.execute(select(identities).where(identities.c.account_id == account_id)
                            .order_by(identities.c.id)).all()
    if not rows:
        acct = store.account_by_id(account_id)
        save_identity(store, account_id, None, "", acct.address, {})
        return identities_of(store, account_id)
    return [(r.id, r.name, r.email, json.loads(r.settings)) for r in rows]


def save_identity(store, account_id, pk, name, email, settings):
    """Create (``pk`` None) or update an identity; returns its pk (None: not found)."""
    with store.write() as txn:
        conn = txn.conn
        txn.next_modseq(account_id)
        values = dict(name=name, email=email, settings=json.dumps(settings))
        if pk is None:
            pk = conn.execute(insert(identities).values(account_id=account_id, **values)) \
                .inserted_primary_key[0]
            op = "c"
        else:
            if not conn.execute(update(identities).where(and_(
                    identities.c.id == pk, identities.c.account_id == account_id))
                    .values(**values)).rowcount:
                return None
            op = "u"
        txn.log(account_id, "Identity", [pk], op)
    return pk


def delete_identity(store, account_id, pk):
    return _delete_logged(store, account_id, identities, "Identity", pk)


def _delete_logged(store, account_id, table, kind, pk):
    """Delete the account's row ``pk`` of ``table``, logging and publishing a
    ``kind`` change; False when there was no such row."""
    with store.write() as txn:
        conn = txn.conn
        if not conn.execute(delete(table).where(and_(
                table.c.id == pk, table.c.account_id == account_id))).rowcount:
            return False
        txn.next_modseq(account_id)
        txn.log(account_id, kind, [pk], "d")
    return True


# --- submissions ---------------------------------------------------------------

def add_submission(store, account_id, identity_pk, message_pk, thread_pk, send_at, status):
    with store.write() as txn:
        conn = txn.conn
        txn.next_modseq(account_id)
        pk = conn.execute(insert(submissions).values(
            account_id=account_id, identity_id=identity_pk, message_id=message_pk,
            thread_id=thread_pk, send_at=send_at, status=json.dumps(status))).inserted_primary_key[0]
        txn.log(account_id, "EmailSubmission", [pk], "c")
    return pk


def submissions_of(store, account_id, pks=None):
    """``[(pk, identity pk, message pk, thread pk, send_at, status)]``."""
    q = select(submissions).where(submissions.c.account_id == account_id)
    if pks is not None:
        q = q.where(submissions.c.id.in_(list(pks)[:1000]))
    with store.reader() as conn:
        return [(r.id, r.identity_id, r.message_id, r.thread_id, r.send_at, json.loads(r.status))
                for r in conn.execute(q.order_by(submissions.c.id))]


def update_submission(store, account_id, pk, status):
    with store.write() as txn:
        conn = txn.conn
        if not conn.execute(update(submissions).where(and_(
                submissions.c.id == pk, submissions.c.account_id == account_id))
                .values(status=json.dumps(status))).rowcount:
            return False
        txn.next_modseq(account_id)
        txn.log(account_id, "EmailSubmission", [pk], "u")
    return True


def delete_submission(store, account_id, pk):
    """Forget a submission; its outbound message goes on, no longer reporting
    to it (so a later submission given the same id never gets its statuses)."""
    with store.write() as txn:
        conn = txn.conn
        if not conn.execute(delete(submissions).where(and_(
                submissions.c.id == pk, submissions.c.account_id == account_id))).rowcount:
            return False
        conn.execute(update(outbound).where(and_(
            outbound.c.submission_id == pk, outbound.c.account_id == account_id))
            .values(submission_id=None))
        txn.next_modseq(account_id)
        txn.log(account_id, "EmailSubmission", [pk], "d")
    return True


# --- push subscriptions ----------------------------------------------------------

def push_subscriptions_of(store, account_id):
    """``[(pk, settings)]``."""
    with store.reader() as conn:
        return [(r.id, json.loads(r.settings)) for r in conn.execute(
            select(push_subscriptions).where(push_subscriptions.c.account_id == account_id)
            .order_by(push_subscriptions.c.id))]


def save_push_subscription(store, account_id, pk, settings):
    """Create (``pk`` None) or replace; returns the pk, or None when not found."""
    with store.write() as txn:
        conn = txn.conn
        if pk is None:
            return conn.execute(insert(push_subscriptions).values(
                account_id=account_id, settings=json.dumps(settings))).inserted_primary_key[0]
        n = conn.execute(update(push_subscriptions).where(and_(
            push_subscriptions.c.id == pk, push_subscriptions.c.account_id == account_id))
            .values(settings=json.dumps(settings))).rowcount
        return pk if n else None


def delete_push_subscription(store, account_id, pk):
    with store.write() as txn:
        conn = txn.conn
        return bool(conn.execute(delete(push_subscriptions).where(and_(
            push_subscriptions.c.id == pk, push_subscriptions.c.account_id == account_id))).rowcount)
