"""Commands about the connection itself: COMPRESS (RFC 4978) and
UNAUTHENTICATE (RFC 8437); and the INPROGRESS capability (RFC 9585, whose
notices ``protocols.imap.progress`` sends).

COMPRESS DEFLATE is taken once logged in (authenticated or selected state),
as the octets before login are few and a compressed stream before
authentication would let an anonymous client make the server inflate for
it. The tagged OK goes out uncompressed; every octet after it is compressed
(``protocols.imap.compress``), on a plain connection or inside TLS.

UNAUTHENTICATE returns the connection to the not-authenticated state: the
selected mailbox is closed as UNSELECT would (nothing expunged), the store
subscription, NOTIFY and every ENABLEd extension are dropped, and the
pre-login limits (literal size, the per-address gate of connections not
logged in) apply again. TLS and COMPRESS stay as they are.
"""

from .. import compress
from . import AUTH, NOT_AUTHENTICATED, Bad, No, capabilities, capability, command

capability("COMPRESS=DEFLATE", when=lambda s: s.state != NOT_AUTHENTICATED)
capability("UNAUTHENTICATE", when=lambda s: s.state != NOT_AUTHENTICATED)
capability("UIDONLY")        # protocols.imap.uidonly, switched on by ENABLE
capability("INPROGRESS")     # protocols.imap.progress, armed by the session around each command


@command("COMPRESS")
async def compress_cmd(s, cmd):
    if s.zlib is not None:
        raise No("[COMPRESSIONACTIVE] DEFLATE is active already")
    if cmd.mechanism != "DEFLATE":
        raise Bad(f"unknown compression mechanism {cmd.mechanism[:30]}")
    s.send(f"{cmd.tag} OK DEFLATE active".encode())
    s.flush()
    s.zlib = compress.Deflate()     # the client waits for the OK before it compresses
    return False


@command("UNAUTHENTICATE", states=AUTH)
async def unauthenticate(s, cmd):
    if s.ctx.gate.enter(s.peer, s.ctx.unauthenticated_per_ip,
                        s.ctx.unauthenticated_total) is not True:
        raise No("[UNAVAILABLE] too many connections are not logged in; log out instead")
    s.gated = True
    s.logged_out()
    return "[CAPABILITY " + " ".join(capabilities(s)) + "] UNAUTHENTICATE completed"
