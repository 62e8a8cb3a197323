"""QUOTA (RFC 9208): GETQUOTA, GETQUOTAROOT and SETQUOTA, resources STORAGE
and MESSAGE (``storage.quota``).

Every mailbox of an account is under one quota root, named ``""``. STORAGE
is reported in units of 1024 octets (usage rounded up, limit rounded down);
MESSAGE counts messages in mailboxes. A resource without a limit is left out
of the QUOTA response, as RFC 9208 section 4.2.1 says. APPEND, COPY and LMTP
delivery over a limit fail with ``[OVERQUOTA]`` (``session.store_error_reply``)
and 552 5.2.2; MOVE within the root changes no usage. STATUS DELETED and
DELETED-STORAGE (``mailboxes._status``) go with the two resources.

Limits are an administrator's (``roost user quota``): SETQUOTA is refused
with ``NO [NOPERM]`` and QUOTASET is not advertised.
"""

from ..wire import astring
from . import No, capability, command

capability("QUOTA", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE")

ROOT = ""


def storage_units(octets):
    """Octets as RFC 9208 STORAGE usage: 1024-octet units, rounded up."""
    return -(-octets // 1024)


def quota_line(usage):
    items = []
    if usage.quota_bytes is not None:
        items.append(f"STORAGE {storage_units(usage.used_bytes)} {usage.quota_bytes // 1024}")
    if usage.quota_messages is not None:
        items.append(f"MESSAGE {usage.messages} {usage.quota_messages}")
    return b'* QUOTA "" (' + " ".join(items).encode() + b")"


@command("GETQUOTA")
async def getquota(s, cmd):
    if str(cmd.root) != ROOT:
        raise No("[NONEXISTENT] no such quota root")
    s.send(quota_line(await s.ctx.run(s.ctx.store.quota_usage, s.account.id)))


@command("GETQUOTAROOT")
async def getquotaroot(s, cmd):
    # The mailbox need not exist (RFC 9208 4.1.2): the root is the one a new
    # mailbox of that name would be under.
    name = s.mailbox_name(cmd.mailbox)
    usage = await s.ctx.run(s.ctx.store.quota_usage, s.account.id)
    s.send(b"* QUOTAROOT " + astring(s.wire_name(name), s.utf8) + b' ""')
    s.send(quota_line(usage))


@command("SETQUOTA")
async def setquota(s, cmd):
    raise No("[NOPERM] quotas are set by the administrator (roost user quota)")
