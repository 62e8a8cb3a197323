"""Commands valid in any state: CAPABILITY, NOOP, LOGOUT, ID, ENABLE.

ID (RFC 2971) also carries the client's address from a trusted proxy
(``x-originating-ip``, as Dovecot reads it), honoured only before login and
only from a peer listed in ``[auth] trusted_proxies``.

Also registers the capabilities of the session as a whole (IMAP4rev1/rev2,
LITERAL+, UTF8=ACCEPT); each command module registers its own.
"""

from ..wire import quoted
from . import ANY, NOT_AUTHENTICATED, capability, capabilities, command

# The framing (wire.py) takes LITERAL+; ENABLE below switches IMAP4rev2 and
# UTF8=ACCEPT behaviour on. Other modules register what their handlers implement.
capability("IMAP4rev1", "IMAP4rev2", "LITERAL+", "ID", "ENABLE", "UTF8=ACCEPT")


ENABLEABLE = {"IMAP4REV2", "UTF8=ACCEPT", "CONDSTORE", "QRESYNC",
              "UIDONLY"}   # protocols.imap.uidonly (RFC 9586)
SERVER_ID = {"name": "Roost", "vendor": "Roost"}


@command("CAPABILITY", states=ANY)
async def capability_cmd(s, cmd):
    s.send(("* CAPABILITY " + " ".join(capabilities(s))).encode())


@command("NOOP", states=ANY)
async def noop(s, cmd):
    pass


@command("LOGOUT", states=ANY)
async def logout(s, cmd):
    s.send(b"* BYE Roost logging out")
    s.send(f"{cmd.tag} OK LOGOUT completed".encode())
    s.flush()
    s.hangup()
    return False


@command("ID", states=ANY)
async def id_cmd(s, cmd):
    # RFC 2971 ID from a trusted proxy before login may name the real client
    # (Dovecot's x-originating-ip); the login penalties then apply to it.
    params = cmd.params or {}
    claimed = next((v for k, v in params.items() if k.lower() == "x-originating-ip"), None)
    if claimed and s.state == NOT_AUTHENTICATED and s.ctx.authenticator is not None:
        ip = s.ctx.authenticator.forwarded_ip(s.peer, claimed)
        if ip is not None:
            s.client_ip = ip
    fields = b" ".join(quoted(k) + b" " + quoted(v) for k, v in SERVER_ID.items())
    s.send(b"* ID (" + fields + b")")


@command("ENABLE")
async def enable(s, cmd):
    done = []
    for name in cmd.names:
        if name in ENABLEABLE and name not in s.enabled:
            s.enabled.add(name)
            done.append(name)
            if name == "QRESYNC":
                s.enabled.add("CONDSTORE")
    s.send(("* ENABLED " + " ".join(n if n != "IMAP4REV2" else "IMAP4rev2" for n in done)).rstrip().encode())
