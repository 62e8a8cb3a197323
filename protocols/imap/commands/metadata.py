"""METADATA and METADATA-SERVER (RFC 5464): GETMETADATA (MAXSIZE, DEPTH) and
SETMETADATA over the store's annotations (``storage.metadata``).

A mailbox's ``/private`` and ``/shared`` entries are kept; the server's
entries (mailbox ``""``) are the account's own ``/private`` ones: ``/shared``
server entries would be visible to every user, so setting one is refused
with ``NO [NOPERM]`` (RFC 5464 section 3.3 allows restricting them) and none
exist. A requested entry that has no value comes back as NIL. A value with
NUL octets is sent as a ``~{n}`` literal (BINARY is advertised).

Unsolicited METADATA responses (section 4.4.2) are NOTIFY's
(``commands.notify``: MailboxMetadataChange, ServerMetadataChange). Not done:
the same after ENABLE METADATA (section 4.4, so ENABLE does not take it)
and the copy of INBOX's entries when INBOX is renamed (section 4.1: entries
follow the mailbox id, and INBOX keeps them).
"""

from roost.storage import errors

from ..wire import astring, literal, quoted
from . import No, capability, command

capability("METADATA", "METADATA-SERVER")


def _value(data):
    if data is None:
        return b"NIL"
    if b"\0" in data:
        return b"~" + literal(data)
    return quoted(data)


async def _owner(s, raw):
    """``(mailbox name, mailbox pk or None)`` of a command's mailbox argument."""
    if str(raw) == "":
        return "", None
    name = s.mailbox_name(raw)
    box = await s.ctx.run(s.ctx.store.mailbox, s.account.id, name)
    return box.name, box.id


def _wire(s, name):
    return astring(s.wire_name(name), s.utf8) if name else b'""'


@command("GETMETADATA")
async def getmetadata(s, cmd):
    name, pk = await _owner(s, cmd.mailbox)
    found = await s.ctx.run(s.ctx.store.metadata, s.account.id, pk, cmd.entries, cmd.depth)
    for entry in cmd.entries:
        if entry not in ("/private", "/shared"):     # a scope is no entry of its own
            found.setdefault(entry, None)
    longest, parts = 0, []
    for entry in sorted(found):
        value = found[entry]
        if cmd.maxsize is not None and value is not None and len(value) > cmd.maxsize:
            longest = max(longest, len(value))
            continue
        parts.append(entry.encode() + b" " + _value(value))
    if parts:
        s.send(b"* METADATA " + _wire(s, name) + b" (" + b" ".join(parts) + b")")
    if longest:
        return f"[METADATA LONGENTRIES {longest}] GETMETADATA completed"
    return "GETMETADATA completed"


@command("SETMETADATA")
async def setmetadata(s, cmd):
    name, pk = await _owner(s, cmd.mailbox)
    if pk is None and any(entry.startswith("/shared/") for entry, _v in cmd.values):
        raise No("[NOPERM] shared server annotations are not writable")
    try:
        await s.ctx.run(s.ctx.store.set_metadata, s.account.id, pk, cmd.values)
    except errors.MetadataTooLarge as exc:
        raise No(f"[METADATA MAXSIZE {exc.args[0]}] annotation value too large") from None
    except errors.MetadataTooMany:
        raise No("[METADATA TOOMANY] no room for more annotations") from None
    return "SETMETADATA completed"
