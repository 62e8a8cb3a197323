"""Access control (RFC 4314): SETACL, DELETEACL, GETACL, LISTRIGHTS and
MYRIGHTS; and LIST-MYRIGHTS (RFC 8440, the LIST return option is in
``commands.mailboxes``).

Identifiers are account addresses (any spelling the login accepts; the
store keeps the normalised one) and ``anyone``. Negative rights (``-name``)
are not supported: such a SETACL gets ``NO [CANNOT]``. The owner of a
mailbox always has every right (LISTRIGHTS says so) and is shown first in
GETACL. Rights are tied to nothing, so LISTRIGHTS offers each one alone.
Which mailboxes the grants expose, and under what names: ``shared``.
"""

from roost.storage import errors
from roost.storage.acl import ANYONE, RIGHTS, with_virtual

from .. import shared
from ..wire import astring
from . import Bad, No, capability, command

capability("ACL", "RIGHTS=texk", "LIST-MYRIGHTS")

_LETTERS = set(RIGHTS) | {"c", "d"}


def _wire(s, name):
    return astring(s.wire_name(name), s.utf8)


def _identifier(text):
    text = str(text).strip()
    if not text:
        raise Bad("empty identifier")
    if text.startswith("-"):
        raise No("[CANNOT] negative rights are not supported")
    return text


@command("SETACL")
async def setacl(s, cmd):
    identifier = _identifier(cmd.identifier)
    mod = str(cmd.rights)
    sign = mod[:1] if mod[:1] in "+-" and mod else ""
    letters = mod[len(sign):]
    for ch in letters:
        if ch not in _LETTERS:
            raise Bad(f"{ch!r} is not a right Roost supports (rights are {RIGHTS}, c and d)")
    store = s.ctx.store

    def run():
        box, _rights, _shown = shared.resolve_blocking(store, s.account, s.mailbox_name(cmd.mailbox), "a")
        try:
            grantee = store.grantee(identifier)
        except (errors.AccountNotFound, errors.InvalidName):
            raise No(f"[CANNOT] no account {identifier}") from None
        if grantee == store.account_by_id(box.account_id).address:
            raise No("[CANNOT] the owner of a mailbox always has every right")
        now = set(store.acl(box.id).get(grantee, ""))
        given = set(_expand(letters))
        rights = given if not sign else now | given if sign == "+" else now - given
        store.grant(box.id, grantee, "".join(r for r in RIGHTS if r in rights))
    await s.ctx.run(run)


def _expand(letters):
    out = set()
    for ch in letters:
        out.update({"c": "k", "d": "xte"}.get(ch, ch))
    return out


@command("DELETEACL")
async def deleteacl(s, cmd):
    identifier = _identifier(cmd.identifier)
    store = s.ctx.store

    def run():
        box, _rights, _shown = shared.resolve_blocking(store, s.account, s.mailbox_name(cmd.mailbox), "a")
        store.revoke(box.id, identifier)
    await s.ctx.run(run)


@command("GETACL")
async def getacl(s, cmd):
    store = s.ctx.store

    def run():
        box, _rights, shown = shared.resolve_blocking(store, s.account, s.mailbox_name(cmd.mailbox), "a")
        return shown, store.account_by_id(box.account_id).address, store.acl(box.id)
    shown, owner, grants = await s.ctx.run(run)
    line = b"* ACL " + _wire(s, shown) + b" " + astring(owner, s.utf8) + b" " + with_virtual(RIGHTS).encode()
    for grantee, rights in grants.items():
        line += b" " + astring(grantee, s.utf8) + b" " + with_virtual(rights).encode()
    s.send(line)


@command("LISTRIGHTS")
async def listrights(s, cmd):
    identifier = str(cmd.identifier)
    store = s.ctx.store

    def run():
        box, _rights, shown = shared.resolve_blocking(store, s.account, s.mailbox_name(cmd.mailbox), "a")
        return shown, store.account_by_id(box.account_id).address
    shown, owner = await s.ctx.run(run)
    head = b"* LISTRIGHTS " + _wire(s, shown) + b" " + astring(identifier, s.utf8) + b" "
    if identifier.lower() == owner.lower():
        s.send(head + with_virtual(RIGHTS).encode())
    elif identifier.lower() == ANYONE or "@" in identifier:
        s.send(head + b'"" ' + " ".join(with_virtual(RIGHTS)).encode())
    else:
        raise No("[CANNOT] identifiers are account addresses and anyone")


@command("MYRIGHTS")
async def myrights(s, cmd):
    box, rights, shown = await shared.resolve(s, s.mailbox_name(cmd.mailbox))
    if not any(r in rights for r in "lrikxa"):     # RFC 4314 section 4
        raise No("[NOPERM] you have no right to see your rights here")
    s.send(b"* MYRIGHTS " + _wire(s, shown) + b" " + with_virtual(rights).encode())
