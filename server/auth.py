"""Authentication: argon2 password hashes, the twisted.cred checker, and
failed-login penalties.

Design decisions:

- One path for every password login (IMAP LOGIN/AUTHENTICATE through the
  twisted.cred ``StoreChecker``, JMAP Basic): ``Authenticator.login(address,
  password, source)``. It reserves a throttle slot, reads the account and the
  short-lived cache of good passwords on the worker pool (``run``; ten
  connections of one client cost one hash), then verifies on the argon2 pool.
  Protocols see the result (account, or ``retry_after`` for a temporary
  refusal), never hashes.
- Unknown addresses and accounts without a password are verified against a
  dummy hash made at start-up with the same parameters as real ones, so a
  probe costs the same whether or not the account exists, and no account's
  hash is ever tried with a password given for another address.
- Argon2 runs on its own small pool (``hash_threads``, default 2: each
  verification takes 64 MiB and a core for about 0.1 s) with at most
  ``hash_queue`` more waiting. When that is full a login fails at once as a
  temporary error (IMAP ``NO [UNAVAILABLE]``, JMAP 503 with Retry-After), so a
  flood of bogus logins costs bounded memory and CPU and queues in front of
  nothing else; a login that the cache answers never waits for the pool.
  Refusals are answered after ``REFUSAL_PAUSE`` (a sleeping coroutine, no
  resources held), so a flood of retries cannot turn into a busy loop.
- Penalties (``Throttle``), like Dovecot's auth penalty, are kept per
  (account, source) and per source, never per account alone: a guesser from
  one address cannot keep the owner out from another. After n failures of a
  key the next attempt may start only 2^(n-1) seconds (at most ``max_delay``)
  after the previous one (a failure is answered only then, so a client that
  waits for replies is paced, not refused); an attempt that would have to
  wait longer than ``max_delay`` is refused at once (temporary, with
  Retry-After). A source
  gets ``FREE_PER_SOURCE`` failures across all accounts before its own
  penalty starts (a NAT, an office), which then slows a guesser that sprays
  many accounts.
- An attempt counts as a failure from the moment it starts (its slot is
  reserved before the check) and only a success releases it, so concurrent
  guesses are counted before any of them is answered. An attempt abandoned
  before its check started (the client left, the pool was full) is not
  counted. A success forgives the failures of its (account, source) that
  were answered, not the attempts still under way beside it.
- A client opening several connections sends the same credentials on each
  at once: an attempt whose account, source and password (or token) are
  those of an attempt under way waits for that one's check instead of
  taking a slot, so it is neither delayed nor refused behind it. If those
  credentials were right it succeeds with it; if not, it is counted on its
  own like any other attempt. Only the same credentials from the same
  source share a check, so a distinct guess is always paced, and one from
  elsewhere never rides on the owner's login.
- Keys are normalised: the account with the store's ``normalise_address``
  (case, surrounding white space, Unicode NFKC), the source as an IP address
  (IPv4-mapped IPv6 as IPv4, other IPv6 by its /64). Penalty state is
  bounded (``MAX_KEYS``, least recently used first out) and forgotten after
  ``FORGET_AFTER`` quiet seconds.
- Loopback is not exempt. A proxy on the same host (webmail, an IMAP proxy)
  is listed in ``[auth] trusted_proxies``; from those peers only, the client's
  address is taken from IMAP ID ``x-originating-ip`` (Dovecot's convention)
  or HTTP ``X-Forwarded-For`` (the rightmost hop that is not itself a trusted
  proxy), so each end user gets their own penalty.
- Every protocol reports each login attempt to ``Authenticator.report``,
  which logs the one "login" event (server/logs.py): the account as given,
  the mechanism, the outcome and the peer; it takes no password or token, so
  none can be logged.
"""

import asyncio
import hashlib
import ipaddress
import logging
import math
import secrets
import threading
import time
import unicodedata
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet.defer import Deferred
from zope.interface import implementer

from roost.storage.accounts import normalise_address
from roost.storage.errors import InvalidName

log = logging.getLogger("roost.auth")

_hasher = PasswordHasher()

CACHE_SECONDS = 60       # a verified password is remembered this long
HASH_THREADS = 2         # concurrent argon2 verifications
HASH_QUEUE = 16          # verifications waiting for a thread before logins fail fast
BUSY_RETRY = 1           # Retry-After (seconds) when the pool is full
REFUSAL_PAUSE = 1        # a refusal (busy, penalty) is answered after this many seconds
MAX_DELAY = 15           # cap of a key's penalty, and the longest an attempt waits
FREE_PER_SOURCE = 10     # failures of one source (all accounts) before its own penalty
FORGET_AFTER = 900       # a key's failures are forgotten after this many quiet seconds
MAX_KEYS = 50_000        # penalty entries kept
MAX_NAME = 320           # longest account name used as a key


def hash_password(password):
    return _hasher.hash(password)


def _verify(hash_, password):
    try:
        return _hasher.verify(hash_, password)
    except (VerificationError, InvalidHashError):
        return False


def _digest(secret):
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def account_key(address):
    """The throttle key of a login name: the store's normalised address, or
    for something that is not an address the same folding, bounded."""
    try:
        return normalise_address(address)[:MAX_NAME]
    except InvalidName:
        return unicodedata.normalize("NFKC", address).strip().lower()[:MAX_NAME]


def source_key(ip):
    """The throttle key of a client address: IPv4, or an IPv6 /64."""
    if ip is None:
        return None
    try:
        addr = ipaddress.ip_address(str(ip).strip("[]"))
    except ValueError:
        return str(ip)[:64]
    if addr.version == 6:
        if addr.ipv4_mapped:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def parse_networks(values):
    """``["127.0.0.1", "10.0.0.0/8", ...]`` as networks; raises ValueError."""
    return tuple(ipaddress.ip_network(str(v).strip(), strict=False) for v in values)


def _ip(text):
    """An address from a header or ID value ("1.2.3.4", "[::1]:443", "1.2.3.4:5"), or None."""
    text = (text or "").strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    return addr.ipv4_mapped or addr if addr.version == 6 else addr


# --- penalties ------------------------------------------------------------------

@dataclass
class Slot:
    """One reserved attempt: sleep ``wait`` seconds, then check. ``retry_after``
    > 0 means the attempt is refused (nothing reserved)."""
    keys: tuple = ()
    wait: float = 0.0
    retry_after: float = 0.0
    next_at: float = 0.0                       # when the next attempt of these keys may start
    undo: list = field(default_factory=list)   # (key, next_at before, next_at set)


class Throttle:
    """Failure counts and next-allowed times per key; the clock is injectable.
    Thread-safe; every method is quick (no I/O)."""

    def __init__(self, clock=time.monotonic, max_delay=MAX_DELAY,
                 free_per_source=FREE_PER_SOURCE, forget_after=FORGET_AFTER, max_keys=MAX_KEYS):
        self.clock = clock
        self.max_delay = max_delay
        self.free_per_source = free_per_source
        self.forget_after = forget_after
        self.max_keys = max_keys
        self._keys = OrderedDict()    # key -> [attempts, next_at, last touched, under way]
        self._lock = threading.Lock()
        self.on_failed = None         # fn(keys): tell the other worker processes of a failure

    def __len__(self):
        return len(self._keys)

    def penalty(self, key, failures):
        """Seconds between attempts of ``key`` after ``failures`` failures."""
        n = failures - (self.free_per_source if key[0] is None else 0)
        return 0 if n <= 0 else min(2 ** (n - 1), self.max_delay)

    def _state(self, key, now):
        st = self._keys.get(key)
        if st is None or (now - st[2] > self.forget_after and st[1] <= now):
            st = [0, now, now, 0]
        return st

    def reserve(self, account, source):
        """Start an attempt for ``account`` (a key, or None) from ``source``."""
        keys = ((account, source),) if account is not None else ()
        if source is not None:
            keys += ((None, source),)
        now = self.clock()
        with self._lock:
            states = [self._state(k, now) for k in keys]
            bases = [max(st[1], now) for st in states]
            start = max(bases, default=now)
            if start - now > self.max_delay:
                return Slot(retry_after=start - now)
            slot = Slot(keys, wait=start - now)
            for key, st, base in zip(keys, states, bases):
                st[0] += 1
                st[3] += 1
                delay = self.penalty(key, st[0])
                before, st[1] = st[1], (start if delay else base) + delay
                st[2] = now
                slot.undo.append((key, before, st[1]))
                slot.next_at = max(slot.next_at, st[1])
                self._keys[key] = st
                self._keys.move_to_end(key)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        return slot

    def succeeded(self, slot):
        """The right password: the (account, source) penalty ends, but for the
        attempts still under way beside this one (counted as failures until
        they are answered); the source's count gives back this attempt."""
        with self._lock:
            for key in slot.keys:
                st = self._keys.get(key)
                if st is None:
                    continue
                st[3] = max(0, st[3] - 1)
                if key[0] is None:
                    st[0] = max(0, st[0] - 1)
                elif st[3]:
                    st[0] = st[3]
                else:
                    del self._keys[key]

    def failed(self, slot):
        """A wrong password: already counted when the slot was reserved."""
        with self._lock:
            for key in slot.keys:
                st = self._keys.get(key)
                if st is not None:
                    st[3] = max(0, st[3] - 1)
        if self.on_failed is not None and slot.keys:
            self.on_failed(slot.keys)

    def failed_elsewhere(self, keys):
        """A wrong password answered by another worker process: counted here
        too, so that a guesser gains nothing by landing on several workers."""
        now = self.clock()
        with self._lock:
            for key in keys:
                st = self._state(key, now)
                st[0] += 1
                st[1] = max(st[1], now) + self.penalty(key, st[0])
                st[2] = now
                self._keys[key] = st
                self._keys.move_to_end(key)
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)

    def cancelled(self, slot):
        """The attempt never reached its check: take it back."""
        with self._lock:
            for key, before, after in slot.undo:
                st = self._keys.get(key)
                if st is not None:
                    st[0] = max(0, st[0] - 1)
                    st[3] = max(0, st[3] - 1)
                    if st[1] == after:         # no later attempt was scheduled behind it
                        st[1] = before


# --- the authenticator ------------------------------------------------------------

class Busy(Exception):
    """The argon2 pool and its queue are full."""


@dataclass
class LoginResult:
    account: object = None     # the Account when the credentials were right
    retry_after: float = 0.0   # > 0: not checked (temporary refusal); retry after this
    busy: bool = False         # ... because the server is busy, not because of this client

    @property
    def retry_seconds(self):
        return max(1, math.ceil(self.retry_after))


async def _in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class Authenticator:
    """Checks logins against the store, with penalties, off the event loop.

    ``run`` is the server's ``async run(fn, *args)`` on its worker pool (store
    reads); argon2 runs on this object's own bounded pool."""

    def __init__(self, store, run=None, *, trusted_proxies=(), hash_threads=HASH_THREADS,
                 hash_queue=HASH_QUEUE, max_delay=MAX_DELAY, clock=time.monotonic,
                 refusal_pause=REFUSAL_PAUSE):
        self.store = store
        self.refusal_pause = refusal_pause
        self.run = run or _in_thread
        self.throttle = Throttle(clock=clock, max_delay=max_delay)
        self.trusted = parse_networks(trusted_proxies)
        self._pool = ThreadPoolExecutor(hash_threads, thread_name_prefix="roost-argon2")
        self._limit = hash_threads + hash_queue
        self._pending = 0
        self._cache = {}
        self._flights = {}          # (account, source, digest) -> Future of the check under way
        self._lock = threading.Lock()
        self.dummy_hash = _hasher.hash(secrets.token_urlsafe(16))   # for unknown accounts

    def report(self, proto, peer, account, mechanism, outcome, level=logging.INFO):
        """Log one login attempt; ``outcome`` is "ok", "failed", "blocked",
        "busy" or "limit". Failures always log at INFO or above."""
        if outcome != "ok":
            level = max(level, logging.INFO)
        if log.isEnabledFor(level):
            log.log(level, "login %s", outcome, extra={
                "event": "login", "proto": proto, "peer": peer, "account": account or None,
                "mechanism": mechanism, "outcome": outcome})

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)

    account_key = staticmethod(account_key)

    # --- client addresses ----------------------------------------------------------

    def trusted_proxy(self, ip):
        addr = _ip(ip)
        return addr is not None and any(addr in net for net in self.trusted)

    def forwarded_ip(self, peer, claimed):
        """IMAP ID ``x-originating-ip``: the client's address when ``peer`` is a
        trusted proxy and ``claimed`` is an address, else None."""
        addr = _ip(claimed) if self.trusted_proxy(peer) else None
        return str(addr) if addr is not None else None

    def client_address(self, peer, forwarded_for=None):
        """The client of an HTTP request from ``peer``: from a trusted proxy, the
        rightmost ``X-Forwarded-For`` hop that is not a trusted proxy (a hop that
        is not an address ends the walk at the proxy that added it)."""
        if not forwarded_for or not self.trusted_proxy(peer):
            return peer
        client = peer
        for hop in reversed(forwarded_for.split(",")[-32:]):
            addr = _ip(hop)
            if addr is None:
                return client
            client = str(addr)
            if not any(addr in net for net in self.trusted):
                return client
        return client

    # --- logins --------------------------------------------------------------

    async def login(self, address, password, source, tokens=None):
        """A password login from ``source`` (the client's IP address, or None).
        ``tokens(value)``, blocking, is the Account an app token belongs to (or
        None): an app token of that address's account is accepted as the
        password (clients that only know passwords)."""
        return await self._attempt(account_key(address), source,
                                   lambda: self._password(address, password, tokens), password)

    async def token_login(self, source, check, secret=None):
        """A bearer token: ``check()`` (blocking) returns the Account or None;
        penalised per source only (a token names no account). ``secret``, the
        token and whatever else ``check`` depends on, lets concurrent
        attempts with the same one share a check."""
        return await self._attempt(None, source, lambda: self.run(check), secret)

    async def _attempt(self, account, source, check, secret=None):
        source = source_key(source)
        flight = None if secret is None else (account, source, _digest(secret))
        if flight in self._flights:
            # The same credentials from the same client are being checked:
            # right, they let this attempt in too; wrong, it counts on its own.
            acct = await asyncio.shield(self._flights[flight])
            if acct is not None:
                return LoginResult(account=acct)
        slot = self.throttle.reserve(account, source)
        if slot.retry_after:
            await asyncio.sleep(self.refusal_pause)
            return LoginResult(retry_after=slot.retry_after)
        shared = None
        if flight is not None and flight not in self._flights:
            shared = self._flights[flight] = asyncio.get_running_loop().create_future()
        started, acct = False, None
        try:
            if slot.wait:
                await asyncio.sleep(slot.wait)
            started = True
            acct = await check()
        except Busy:
            self.throttle.cancelled(slot)
            await asyncio.sleep(self.refusal_pause)
            return LoginResult(retry_after=BUSY_RETRY, busy=True)
        except asyncio.CancelledError:
            # The client left. Once the check ran it counts, or hanging up
            # would make a guess free.
            (self.throttle.failed if started else self.throttle.cancelled)(slot)
            raise
        except BaseException:       # storage errors are not the client's fault
            self.throttle.cancelled(slot)
            raise
        finally:
            if shared is not None:
                del self._flights[flight]
                shared.set_result(acct)
        if acct is None:
            self.throttle.failed(slot)
            # Answer when the next attempt may start, so a client that waits
            # for each reply is paced without being refused.
            pause = min(slot.next_at - self.throttle.clock(), self.throttle.max_delay)
            if pause > 0:
                await asyncio.sleep(pause)
            return LoginResult()
        self.throttle.succeeded(slot)
        return LoginResult(account=acct)

    async def _password(self, address, password, tokens):
        # The cache is asked first, in memory: when the pool is full a login
        # it cannot vouch for is refused before it costs even a store read.
        key = (account_key(address), _digest(password))
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] <= time.monotonic():
                hit = self._cache.pop(key) and None
            if hit is None and self._pending >= self._limit:
                raise Busy()
        acct = await self.run(self.store.account, address)
        real = acct is not None and bool(acct.password_hash)
        if real and hit is not None and hit[1] == acct.password_hash:
            return acct
        ok = await self._verify(acct.password_hash if real else self.dummy_hash, password)
        if ok and real:
            with self._lock:
                if len(self._cache) > MAX_KEYS:
                    self._cache.clear()
                self._cache[key] = (time.monotonic() + CACHE_SECONDS, acct.password_hash)
            return acct
        if tokens is not None:
            acct = await self.run(tokens, password)
            if acct is not None and acct.address == account_key(address):
                return acct
        return None

    async def _verify(self, hash_, password):
        """argon2 on the bounded pool; raises Busy when it and its queue are full."""
        with self._lock:
            if self._pending >= self._limit:
                raise Busy()
            self._pending += 1
        try:
            future = self._pool.submit(_verify, hash_, password)
        except RuntimeError:        # shutting down
            self._done(None)
            raise Busy() from None
        future.add_done_callback(self._done)
        return await asyncio.wrap_future(future)

    def _done(self, _future):
        with self._lock:
            self._pending -= 1


class LoginUnavailable(error.LoginFailed):
    """Not checked: the client must wait (penalty) or the server is busy."""

    def __init__(self, retry_after, busy):
        super().__init__("try again later")
        self.retry_after = retry_after
        self.busy = busy


@implementer(ICredentialsChecker)
class StoreChecker:
    """twisted.cred checker over ``Authenticator.login``; the avatar id is the
    account address. Credentials may carry ``source`` (the client's IP
    address) for the penalties; without it the account is penalised as one
    unknown source."""

    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, authenticator):
        self.authenticator = authenticator

    def requestAvatarId(self, creds):
        username = creds.username.decode("utf-8", "replace") if isinstance(creds.username, bytes) \
            else creds.username
        password = creds.password.decode("utf-8", "replace") if isinstance(creds.password, bytes) \
            else creds.password
        source = getattr(creds, "source", None)
        d = Deferred.fromFuture(asyncio.ensure_future(
            self.authenticator.login(username, password, source)))

        def done(result):
            if result.retry_after:
                raise LoginUnavailable(result.retry_seconds, result.busy)
            if result.account is None:
                raise error.UnauthorizedLogin()
            return result.account.address
        return d.addCallback(done)
