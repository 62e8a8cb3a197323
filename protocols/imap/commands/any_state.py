"""Commands valid in any state: CAPABILITY, NOOP, LOGOUT, ID, ENABLE.

Also registers the capabilities that are features of the whole server rather
than of one command (LITERAL+, IMAP4rev2, extensions of FETCH/SEARCH/LIST).
"""

from ..wire import quoted
from . import ANY, capability, capabilities, command

capability("IMAP4rev1", "IMAP4rev2", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE",
           "NAMESPACE", "UIDPLUS", "MOVE", "UNSELECT", "CHILDREN", "LIST-EXTENDED",
           "LIST-STATUS", "SPECIAL-USE", "CREATE-SPECIAL-USE", "XLIST", "ESEARCH",
           "SEARCHRES", "STATUS=SIZE", "SAVEDATE", "MULTIAPPEND", "BINARY", "UTF8=ACCEPT",
           "CONDSTORE", "QRESYNC", "OBJECTID")
capability(lambda s: f"APPENDLIMIT={s.ctx.append_limit}")


ENABLEABLE = {"IMAP4REV2", "UTF8=ACCEPT", "CONDSTORE", "QRESYNC"}
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
    s.closing = True
    s.transport.loseConnection()
    return False


@command("ID", states=ANY)
async def id_cmd(s, cmd):
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
