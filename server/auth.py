"""Authentication: argon2 password hashes and the twisted.cred portal.

Owns password hashing, verification (off the event loop, with a short-lived
cache so ten connections of one client cost one hash) and failed-login
throttling per IP and per account. Protocols see only the portal/checker and
``Authenticator.check``; they never see hashes. Every protocol reports each
login attempt to ``Authenticator.report``, which logs the one "login" event
(server/logs.py): the account as given, the mechanism, the outcome and the
peer; it takes no password or token, so none can be logged.
"""

import hashlib
import ipaddress
import logging
import threading
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import threads
from zope.interface import implementer

_hasher = PasswordHasher()
log = logging.getLogger("roost.auth")

CACHE_SECONDS = 60
FAIL_WINDOW = 300
FAIL_LIMIT = 10


def hash_password(password):
    return _hasher.hash(password)


class Authenticator:
    """Checks address/password pairs against the store. Blocking: call from a thread."""

    def __init__(self, store):
        self.store = store
        self._cache = {}
        self._failures = {}
        self._lock = threading.Lock()

    def check(self, address, password):
        """The ``Account`` when the password is right, else None."""
        acct = self.store.account(address)
        if acct is None or not acct.password_hash:
            # Spend the same time as a real check, so timing does not reveal
            # which addresses exist.
            try:
                _hasher.verify(_dummy_hash(), password)
            except (VerificationError, InvalidHashError):
                pass
            return None
        key = (acct.id, hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest())
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit and hit[0] > now and hit[1] == acct.password_hash:
            return acct
        try:
            _hasher.verify(acct.password_hash, password)
        except (VerificationError, InvalidHashError):
            return None
        with self._lock:
            self._cache[key] = (now + CACHE_SECONDS, acct.password_hash)
        return acct

    def report(self, proto, peer, account, mechanism, outcome, level=logging.INFO):
        """Log one login attempt; ``outcome`` is "ok", "failed" or "blocked".
        Failures always log at INFO or above."""
        if outcome != "ok":
            level = max(level, logging.INFO)
        if log.isEnabledFor(level):
            log.log(level, "login %s", outcome, extra={
                "event": "login", "proto": proto, "peer": peer, "account": account or None,
                "mechanism": mechanism, "outcome": outcome})

    # --- throttling -------------------------------------------------------

    def failed(self, *keys):
        """Record a failed login for each key (an IP, an address); returns the
        delay in seconds the caller should wait before answering.

        Loopback addresses are not counted: a webmail or proxy on the same host
        speaks for many users, and one of them mistyping must not lock out the
        rest. Their accounts are still counted and limited."""
        now = time.monotonic()
        worst = 0
        keys = [k for k in keys if not _loopback(k)]
        with self._lock:
            for k in keys:
                times = [t for t in self._failures.get(k, []) if t > now - FAIL_WINDOW]
                times.append(now)
                self._failures[k] = times
                worst = max(worst, len(times))
        return min(2 ** max(worst - 1, 0), 15) if worst > 1 else 1

    def blocked(self, *keys):
        keys = [k for k in keys if not _loopback(k)]
        now = time.monotonic()
        with self._lock:
            return any(len([t for t in self._failures.get(k, []) if t > now - FAIL_WINDOW]) >= FAIL_LIMIT
                       for k in keys)


def _loopback(key):
    try:
        return ipaddress.ip_address(str(key).strip("[]")).is_loopback
    except ValueError:
        return False


_dummy = []


def _dummy_hash():
    if not _dummy:
        _dummy.append(_hasher.hash("roost: no such account"))
    return _dummy[0]


@implementer(ICredentialsChecker)
class StoreChecker:
    """twisted.cred checker over ``Authenticator``; the avatar id is the account address."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, authenticator):
        self.authenticator = authenticator

    def requestAvatarId(self, creds):
        username = creds.username.decode("utf-8", "replace") if isinstance(creds.username, bytes) \
            else creds.username
        password = creds.password.decode("utf-8", "replace") if isinstance(creds.password, bytes) \
            else creds.password
        d = threads.deferToThread(self.authenticator.check, username, password)

        def done(acct):
            if acct is None:
                raise error.UnauthorizedLogin()
            return acct.address
        return d.addCallback(done)
