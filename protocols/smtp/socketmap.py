"""A Postfix socketmap table server (socketmap_table(5)): Postfix in front of
Roost asks it which domains, mailboxes, aliases and sender addresses Roost has.

Owns the netstring protocol and what each map answers; the answers come from
the store API (``resolve``, ``alias_targets``, ``hosts_domain``), whose
blocking SQL runs on the server's worker pool through ``run``. Requests are
``<len>:<map> <key>,``; replies ``<len>:OK <value>,``, ``NOTFOUND ,``,
``TEMP <reason>,`` or ``PERM <reason>,``. Postfix sends one request at a time
on a connection it keeps open; pipelined requests are answered in order.

The maps (Postfix sends socketmaps whole keys only, never ``@domain`` or a
stripped ``+extension``, so each map applies Roost's own rules to the key):

- ``domain`` (virtual_mailbox_domains): a domain with an account or an alias.
- ``mailbox`` (virtual_mailbox_maps): the key reaches an account through
  Roost's ``resolve`` (aliases, ``+detail``, catch-all); the value is the
  account address(es), which Postfix does not use with an LMTP transport.
- ``alias`` (virtual_alias_maps): the targets stored for the key. An address
  Roost delivers as it is (an account, or ``+detail`` of a known name) is
  NOTFOUND, so Postfix keeps it and LMTP hands it to Roost unchanged; any
  other address gets its domain's catch-all targets, if there is one. So a
  catch-all never swallows a real account (Roost's rule), and targets
  outside Roost are forwarded by Postfix.
- ``sender`` (smtpd_sender_login_maps): the logins that may use the key as
  MAIL FROM: the account itself, or the accounts an alias reaches (``+detail``
  included, catch-alls not: a catch-all's owner may not send as every
  address of the domain).

Values are comma-separated. Bounds: a request of at most ``MAX_REQUEST``
bytes (Postfix's own limit for replies); a longer length, or one that is not
a netstring, gets ``PERM`` and the connection is closed (the stream cannot be
resynchronised). A request that is a netstring but not ``map key``, or names
no map, gets ``PERM`` and the connection goes on. A store error is ``TEMP``
(Postfix defers, never bounces). Anyone who can connect can ask which
addresses exist: bind the listener to loopback or a socket path.
"""

import asyncio
import logging

log = logging.getLogger("roost.socketmap")

MAX_REQUEST = 100000
MAX_LENGTH_DIGITS = len(str(MAX_REQUEST))


def _accounts(found):
    """Unique account addresses of ``resolve``'s result, in order."""
    return list(dict.fromkeys(acct.address for acct, _detail in found))


def _joined(values):
    return ",".join(values) or None


def domain_map(store, key):
    return key.lower() if store.hosts_domain(key) else None


def mailbox_map(store, key):
    return _joined(_accounts(store.resolve(key)))


def alias_map(store, key):
    targets = store.alias_targets(key)
    if targets:
        return _joined(targets)
    local, at, domain = key.rpartition("@")
    if not at or not local or store.resolve(key, catch_all=False):
        return None
    return _joined(store.alias_targets("@" + domain))


def sender_map(store, key):
    return _joined(_accounts(store.resolve(key, catch_all=False)))


MAPS = {"domain": domain_map, "mailbox": mailbox_map, "alias": alias_map, "sender": sender_map}


def lookup(store, name, key):
    """Blocking: ``map`` answered for ``key``: the value, or None (NOTFOUND);
    KeyError for a map that does not exist."""
    return MAPS[name](store, key)


def netstring(text):
    data = text.encode("utf-8")
    return b"%d:%s," % (len(data), data)


async def serve(reader, writer, run, store):
    """``asyncio.start_server`` callback: answer requests until the client leaves."""
    peer = writer.get_extra_info("peername")
    try:
        while True:
            try:
                request = await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            except ValueError as exc:      # not a netstring, or too long: cannot go on
                log.warning("socketmap client %s: %s; closing", peer or "(unix)", exc)
                writer.write(netstring(f"PERM {exc}"))
                break
            writer.write(netstring(await answer(request, run, store)))
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def read_request(reader):
    """One netstring's payload (bytes); ValueError when the stream is not one."""
    try:
        head = await reader.readuntil(b":")
    except asyncio.LimitOverrunError:
        raise ValueError("netstring length too long") from None
    digits = head[:-1]
    if not digits.isdigit() or len(digits) > MAX_LENGTH_DIGITS + 1:
        raise ValueError("not a netstring")
    size = int(digits)
    if size > MAX_REQUEST:
        raise ValueError(f"request longer than {MAX_REQUEST} bytes")
    data = await reader.readexactly(size + 1)
    if data[-1:] != b",":
        raise ValueError("netstring not terminated by a comma")
    return data[:-1]


async def answer(request, run, store):
    """The reply text for one request's payload."""
    try:
        name, space, key = request.decode("utf-8").partition(" ")
    except UnicodeDecodeError:
        return "PERM request is not UTF-8"
    if not space or not key:
        return "PERM expected: map key"
    if name not in MAPS:
        return f"PERM no such map: {name[:64]}"
    try:
        value = await run(lookup, store, name, key)
    except Exception:  # noqa: BLE001 - a store failure: Postfix defers and retries
        log.exception("socketmap %s lookup", name)
        return "TEMP lookup failed"
    if value is None:
        return "NOTFOUND "
    reply = f"OK {value}"
    if len(reply.encode("utf-8")) > MAX_REQUEST:
        return "PERM value too long"
    return reply
