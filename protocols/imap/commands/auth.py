"""Not-authenticated state: STARTTLS, LOGIN, AUTHENTICATE (PLAIN, LOGIN, SASL-IR).

Passwords are checked by the twisted.cred checker the server provides, with
the client's address on the credentials (``source``): the peer, or from a
trusted proxy the ID command's x-originating-ip. The checker delays attempts
after failures; one it refuses or cannot run now fails with ``NO
[UNAVAILABLE]`` (refused for failures: BYE too), and a connection is dropped
after a few failures. Cleartext passwords are refused (LOGINDISABLED) on a
non-loopback connection without TLS.
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
        fold = s.ctx.authenticator.account_key if s.ctx.authenticator is not None else str.lower
        if authz and fold(authz) != fold(user):
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


def client_ip(s):
    """The client's address: the peer, or what ID x-originating-ip from a
    trusted proxy said (``any_state.id_cmd`` sets it before LOGIN)."""
    return getattr(s, "client_ip", None) or s.peer


async def _check(s, cmd, user, password):
    auth = s.ctx.authenticator
    report = auth.report if auth is not None else lambda *a: None
    mechanism = getattr(cmd, "mechanism", None) or cmd.verb
    from twisted.internet.defer import maybeDeferred
    creds = UsernamePassword(user, password)
    creds.source = client_ip(s)     # the checker keeps penalties per (account, source)
    d = maybeDeferred(s.ctx.checker.requestAvatarId, creds)
    try:
        address = await d.asFuture(asyncio.get_event_loop())
    except Exception as exc:  # noqa: BLE001 - UnauthorizedLogin and friends
        retry = getattr(exc, "retry_after", None)
        if retry and getattr(exc, "busy", False):
            report("imap", client_ip(s), user, mechanism, "busy")
            raise No("[UNAVAILABLE] the server is busy; try again in a moment") from None
        if retry:
            report("imap", client_ip(s), user, mechanism, "blocked")
            s.send(f"{cmd.tag} NO [UNAVAILABLE] too many failed logins; try again in "
                   f"{retry} second{'s' if retry != 1 else ''}".encode())
            s.bye("too many failed logins")
            raise No("blocked") from None
        address = None
    account = await s.ctx.run(s.ctx.store.account, address) if address else None
    if account is None:
        report("imap", client_ip(s), user, mechanism, "failed")
        s.auth_failures += 1
        if s.auth_failures >= MAX_AUTH_FAILURES:
            s.send(f"{cmd.tag} NO [AUTHENTICATIONFAILED] invalid credentials".encode())
            s.bye("too many failed logins")
            raise No("closing")
        raise No("[AUTHENTICATIONFAILED] invalid credentials")
    limit = s.ctx.connections_per_user_ip
    if limit and sum(1 for other in list(s.ctx.sessions) if other.account is not None
                     and other.account.id == account.id
                     and client_ip(other) == client_ip(s)) >= limit:
        report("imap", client_ip(s), user, mechanism, "limit")
        raise No(f"[LIMIT] {limit} connections of this account from this address are open already")
    s.logged_in(account)
    report("imap", client_ip(s), user, mechanism, "ok")
