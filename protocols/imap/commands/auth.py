"""Not-authenticated state: STARTTLS, LOGIN, AUTHENTICATE (PLAIN, LOGIN, SASL-IR).

Passwords are checked by the twisted.cred checker the server provides;
failures are delayed (``Authenticator.failed``), blocked sources are refused,
and a connection is dropped after a few failures. Cleartext passwords are
refused (LOGINDISABLED) on a non-loopback connection without TLS.
"""

import asyncio
import base64
import binascii

from twisted.cred.credentials import UsernamePassword

from . import NOAUTH, NOT_AUTHENTICATED, Bad, No, capabilities, capability, command

MAX_AUTH_FAILURES = 3      # failed logins on one connection before BYE

capability("SASL-IR")
capability("STARTTLS", when=lambda s: s.ctx.tls is not None and not s.tls
           and s.state == NOT_AUTHENTICATED)
capability("LOGINDISABLED", when=lambda s: s.cleartext_refused)
capability("AUTH=PLAIN", "AUTH=LOGIN",
           when=lambda s: not s.cleartext_refused and s.state == NOT_AUTHENTICATED)


@command("STARTTLS", states=NOAUTH)
async def starttls(s, cmd):
    if s.ctx.tls is None or s.tls:
        raise No("TLS is not available here" if s.ctx.tls is None else "TLS is already active")
    s.send(f"{cmd.tag} OK begin TLS negotiation now".encode())
    s.flush()
    # Anything pipelined after STARTTLS was sent in clear: drop it (RFC 3501 6.2.1).
    while not s.queue.empty():
        s.queue.get_nowait()
    s.queued_bytes = 0
    s.framer.reset()
    s.transport.startTLS(s.ctx.tls)
    s.tls = True
    return False


@command("LOGIN", states=NOAUTH)
async def login(s, cmd):
    if s.cleartext_refused:
        raise No("[PRIVACYREQUIRED] use STARTTLS first")
    await _check(s, cmd, cmd.user, cmd.password)
    return "[CAPABILITY " + " ".join(capabilities(s)) + "] LOGIN completed"


@command("AUTHENTICATE", states=NOAUTH)
async def authenticate(s, cmd):
    if s.cleartext_refused:
        raise No("[PRIVACYREQUIRED] use STARTTLS first")
    if cmd.mechanism == "PLAIN":
        data = await _response(s, cmd.initial, b"")
        parts = data.split(b"\0")
        if len(parts) != 3:
            raise Bad("PLAIN wants authzid NUL authcid NUL password")
        authz, user, password = (p.decode("utf-8", "replace") for p in parts)
        if authz and authz.lower() != user.lower():
            raise No("[AUTHORIZATIONFAILED] cannot act as another user")
    elif cmd.mechanism == "LOGIN":
        user = (await _response(s, cmd.initial, b"VXNlcm5hbWU6")).decode("utf-8", "replace")
        password = (await _response(s, None, b"UGFzc3dvcmQ6")).decode("utf-8", "replace")
    else:
        raise No(f"[CANNOT] unsupported mechanism {cmd.mechanism}")
    await _check(s, cmd, user, password)
    return "[CAPABILITY " + " ".join(capabilities(s)) + "] AUTHENTICATE completed"


async def _response(s, initial, challenge):
    """One SASL response: the initial response if given, else ask for it."""
    if initial is None:
        s.send(b"+ " + challenge)
        unit = await s.next_unit()
        if not isinstance(unit, list) or len(unit) != 1:
            raise Bad("expected a base64 line")
        text = unit[0].strip()
    else:
        text = initial.encode("ascii", "replace")
    if text == b"*":
        raise Bad("authentication cancelled")
    if text == b"=":
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Bad("invalid base64 in SASL response") from None


async def _check(s, cmd, user, password):
    auth = s.ctx.authenticator
    keys = (s.peer, user.lower())
    report = auth.report if auth is not None else lambda *a: None
    mechanism = getattr(cmd, "mechanism", None) or cmd.verb
    if auth is not None and auth.blocked(*keys):
        report("imap", s.peer, user, mechanism, "blocked")
        s.send(f"{cmd.tag} NO [UNAVAILABLE] too many failed logins; try later".encode())
        s.bye("too many failed logins")
        raise No("blocked")
    from twisted.internet.defer import maybeDeferred
    d = maybeDeferred(s.ctx.checker.requestAvatarId, UsernamePassword(user, password))
    try:
        address = await d.asFuture(asyncio.get_event_loop())
    except Exception:  # noqa: BLE001 - UnauthorizedLogin and friends
        address = None
    account = await s.ctx.run(s.ctx.store.account, address) if address else None
    if account is None:
        report("imap", s.peer, user, mechanism, "failed")
        delay = auth.failed(*keys) if auth is not None else 1
        await asyncio.sleep(delay)
        s.auth_failures += 1
        if s.auth_failures >= MAX_AUTH_FAILURES:
            s.send(f"{cmd.tag} NO [AUTHENTICATIONFAILED] invalid credentials".encode())
            s.bye("too many failed logins")
            raise No("closing")
        raise No("[AUTHENTICATIONFAILED] invalid credentials")
    limit = s.ctx.connections_per_user_ip
    if limit and sum(1 for other in list(s.ctx.sessions) if other.account is not None
                     and other.account.id == account.id and other.peer == s.peer) >= limit:
        report("imap", s.peer, user, mechanism, "limit")
        raise No(f"[LIMIT] {limit} connections of this account from this address are open already")
    s.logged_in(account)
    report("imap", s.peer, user, mechanism, "ok")
