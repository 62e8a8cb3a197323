"""Each account's Sieve scripts: the one list that ManageSieve, JMAP
SieveScript and the generated VacationResponse script all edit, and the
active script that delivery runs.

Names are 1-255 characters without control characters (RFC 5804 section
1.6); an account holds at most ``MAX_SCRIPTS`` scripts of at most
``MAX_SCRIPT_SIZE`` bytes each, and at most one is active. Every write checks
the script with ``sieve.compile`` first (an invalid script is never stored)
and logs a ``SieveScript`` change, so JMAP /changes and push see it.
"""

import time
import unicodedata
from dataclasses import dataclass

from sqlalchemy import and_, delete, insert, select, update

from ..errors import Conflict, InvalidName, MessageNotFound, QuotaExceeded
from ..schema import sieve_scripts
from . import MAX_SCRIPT_SIZE, compile

MAX_SCRIPTS = 32
KIND = "SieveScript"


class ScriptNotFound(MessageNotFound):
    """No script of that name (or id) in the account."""


class ScriptActive(Conflict):
    """The active script cannot be deleted."""


@dataclass(frozen=True)
class Script:
    id: int
    name: str
    content: str
    active: bool
    created: float
    updated: float


_COLUMNS = (sieve_scripts.c.id, sieve_scripts.c.name, sieve_scripts.c.content,
            sieve_scripts.c.active, sieve_scripts.c.created, sieve_scripts.c.updated)


def check_name(name):
    """``name`` in Unicode NFC, or ``InvalidName``."""
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise InvalidName("a script name has 1 to 255 characters")
    if any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f or c in "\u2028\u2029" for c in name):
        raise InvalidName("a script name has no control characters")
    return unicodedata.normalize("NFC", name)


def list_scripts(store, account_id):
    with store.reader() as conn:
        rows = conn.execute(select(*_COLUMNS).where(sieve_scripts.c.account_id == account_id)
                            .order_by(sieve_scripts.c.name)).all()
    return [Script(*r) for r in rows]


def get_script(store, account_id, name=None, script_id=None):
    """One script by name or id; raises ``ScriptNotFound``."""
    where = sieve_scripts.c.id == script_id if script_id is not None else \
        sieve_scripts.c.name == check_name(name)
    with store.reader() as conn:
        row = conn.execute(select(*_COLUMNS).where(
            and_(sieve_scripts.c.account_id == account_id, where))).first()
    if row is None:
        raise ScriptNotFound(name if script_id is None else script_id)
    return Script(*row)


def active_script(store, account_id):
    """The active ``Script``, or None."""
    with store.reader() as conn:
        row = conn.execute(select(*_COLUMNS).where(and_(
            sieve_scripts.c.account_id == account_id, sieve_scripts.c.active))).first()
    return Script(*row) if row else None


def check_space(store, account_id, name, size):
    """Raise ``QuotaExceeded`` unless a script of ``size`` bytes named ``name``
    fits (RFC 5804 HAVESPACE)."""
    if size > MAX_SCRIPT_SIZE:
        raise QuotaExceeded(f"a script is at most {MAX_SCRIPT_SIZE} bytes")
    names = {s.name for s in list_scripts(store, account_id)}
    if check_name(name) not in names and len(names) >= MAX_SCRIPTS:
        raise QuotaExceeded(f"an account has at most {MAX_SCRIPTS} scripts")


def put_script(store, account_id, name, content, *, activate=None):
    """Create or replace a script; returns it. ``activate`` True makes it the
    active one, False deactivates it, None leaves that as it was. Raises
    ``SieveError`` (invalid), ``QuotaExceeded`` or ``InvalidName``."""
    name = check_name(name)
    check_space(store, account_id, name, len(content.encode("utf-8", "surrogateescape")))
    compile(content)
    now = time.time()
    with store.write() as txn:
        conn = txn.conn
        txn.next_modseq(account_id)
        row = conn.execute(select(sieve_scripts.c.id, sieve_scripts.c.active).where(and_(
            sieve_scripts.c.account_id == account_id, sieve_scripts.c.name == name))).first()
        if row is None:
            count = len(conn.execute(select(sieve_scripts.c.id).where(
                sieve_scripts.c.account_id == account_id)).all())
            if count >= MAX_SCRIPTS:
                raise QuotaExceeded(f"an account has at most {MAX_SCRIPTS} scripts")
            pk = conn.execute(insert(sieve_scripts).values(
                account_id=account_id, name=name, content=content, active=False,
                created=now, updated=now)).inserted_primary_key[0]
            txn.log(account_id, KIND, [pk], "c")
        else:
            pk = row.id
            conn.execute(update(sieve_scripts).where(sieve_scripts.c.id == pk)
                         .values(content=content, updated=now, notified=None))
            txn.log(account_id, KIND, [pk], "u")
        if activate is not None:
            _set_active(txn, account_id, pk if activate else None, only=None if activate else pk)
    return get_script(store, account_id, script_id=pk)


def rename_script(store, account_id, old, new):
    old, new = check_name(old), check_name(new)
    with store.write() as txn:
        conn = txn.conn
        txn.next_modseq(account_id)
        pk = conn.execute(select(sieve_scripts.c.id).where(and_(
            sieve_scripts.c.account_id == account_id, sieve_scripts.c.name == old))).scalar()
        if pk is None:
            raise ScriptNotFound(old)
        if old != new and conn.execute(select(sieve_scripts.c.id).where(and_(
                sieve_scripts.c.account_id == account_id, sieve_scripts.c.name == new))).first():
            raise Conflict(f"a script named {new!r} exists")
        conn.execute(update(sieve_scripts).where(sieve_scripts.c.id == pk)
                     .values(name=new, updated=time.time()))
        txn.log(account_id, KIND, [pk], "u")


def delete_script(store, account_id, name=None, script_id=None):
    """Delete a script; the active one raises ``ScriptActive``."""
    script = get_script(store, account_id, name, script_id)
    if script.active:
        raise ScriptActive(script.name)
    with store.write() as txn:
        txn.next_modseq(account_id)
        txn.conn.execute(delete(sieve_scripts).where(and_(
            sieve_scripts.c.id == script.id, sieve_scripts.c.active.is_(False))))
        txn.log(account_id, KIND, [script.id], "d")


def activate(store, account_id, name=None, script_id=None):
    """Make the named script the active one; no name deactivates all."""
    pk = get_script(store, account_id, name, script_id).id if (name or script_id) else None
    with store.write() as txn:
        txn.next_modseq(account_id)
        _set_active(txn, account_id, pk)


def _set_active(txn, account_id, pk, only=None):
    """Activate ``pk`` (None: none); with ``only``, deactivate just that script."""
    conn = txn.conn
    where = sieve_scripts.c.account_id == account_id
    if only is not None:
        where = and_(where, sieve_scripts.c.id == only)
    changed = [r[0] for r in conn.execute(select(sieve_scripts.c.id).where(and_(
        where, sieve_scripts.c.active, sieve_scripts.c.id != (pk or 0)))).all()]
    if changed:
        conn.execute(update(sieve_scripts).where(sieve_scripts.c.id.in_(changed)).values(active=False))
    if pk is not None and conn.execute(update(sieve_scripts).where(and_(
            sieve_scripts.c.id == pk, sieve_scripts.c.active.is_(False))).values(active=True)).rowcount:
        changed.append(pk)
    if changed:
        txn.log(account_id, KIND, changed, "u")


def mark_notified(store, account_id, script_id, digest):
    """Remember that the user was told of the runtime error ``digest``;
    returns False when they already were (tell them once)."""
    with store.write() as txn:
        return bool(txn.conn.execute(update(sieve_scripts).where(and_(
            sieve_scripts.c.id == script_id, sieve_scripts.c.account_id == account_id,
            (sieve_scripts.c.notified.is_(None)) | (sieve_scripts.c.notified != digest)))
            .values(notified=digest)).rowcount)
