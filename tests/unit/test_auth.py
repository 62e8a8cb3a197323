"""Password checks, the bounded argon2 pool and the failed-login penalties
(``Throttle`` with an injected clock), and client addresses behind proxies."""

import asyncio
import pathlib

import argon2
import pytest

from roost.server import auth
from roost.storage.store import Store

OWNER = "a@example.org"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


async def _inline(fn, *args):
    return fn(*args)


def _authenticator(**kw):
    store = Store.memory()
    store.add_account(OWNER, auth.hash_password("right"))
    kw.setdefault("run", _inline)
    kw.setdefault("refusal_pause", 0)
    return auth.Authenticator(store, **kw)


def _run(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.fixture
def verified(monkeypatch):
    """The hashes argon2 was asked to verify, in order."""
    seen = []
    real = auth._verify

    def spy(hash_, password):
        seen.append(hash_)
        return real(hash_, password)
    monkeypatch.setattr(auth, "_verify", spy)
    return seen


# --- checks and the pool ---------------------------------------------------------------

def test_login_accepts_the_right_password_only():
    a = _authenticator()
    try:
        assert _run(a.login(" A@Example.org ", "right", "192.0.2.1")).account.address == OWNER
        assert _run(a.login(OWNER, "wrong", "192.0.2.2")).account is None
        assert _run(a.login("nobody@example.org", "right", "192.0.2.3")).account is None
    finally:
        a.close()


def test_an_unknown_user_is_checked_against_the_dummy_hash_only(verified, monkeypatch):
    a = _authenticator()
    try:
        owner_hash = a.store.account(OWNER).password_hash
        hashed = []
        real = auth._hasher

        class Hasher:
            verify = staticmethod(real.verify)

            def hash(self, password):
                hashed.append(password)
                return real.hash(password)
        monkeypatch.setattr(auth, "_hasher", Hasher())
        assert _run(a.login("nobody@example.org", "right", "192.0.2.1")).account is None
        assert verified == [a.dummy_hash]
        assert hashed == []          # made at start-up, not on the first probe
        # the same cost as a real account's hash
        assert argon2.extract_parameters(a.dummy_hash) == argon2.extract_parameters(owner_hash)
        assert _run(a.login(OWNER, "wrong", "192.0.2.2")).account is None
        assert verified == [a.dummy_hash, owner_hash]
    finally:
        a.close()


def test_a_cached_password_costs_no_hash(verified):
    a = _authenticator()
    try:
        for n in range(3):
            assert _run(a.login(OWNER, "right", f"192.0.2.{n}")).account is not None
        assert len(verified) == 1
    finally:
        a.close()


def test_a_full_pool_fails_fast_without_counting(verified):
    """One thread and one waiting: of four concurrent checks two run and two
    are refused at once as busy; the refused ones are not failures."""
    a = _authenticator(hash_threads=1, hash_queue=1)

    async def four():
        return await asyncio.gather(*(a.login(f"u{n}@example.org", "x", f"192.0.2.{n}")
                                      for n in range(4)))
    try:
        results = _run(four())
        assert [r.busy for r in results] == [False, False, True, True]
        assert all(r.retry_after == auth.BUSY_RETRY for r in results[2:])
        assert len(verified) == 2
        # not counted: the same key starts again at once
        slot = a.throttle.reserve("u3@example.org", "192.0.2.3")
        assert slot.wait == 0 and not slot.retry_after
    finally:
        a.close()


def test_concurrent_guesses_are_counted_before_any_is_answered(verified):
    """39 concurrent wrong passwords for one account from one address: each
    reserves its slot as it starts, so only the first few run."""
    a = _authenticator(max_delay=0.05, clock=Clock())

    async def guesses():
        return await asyncio.gather(*(a.login(OWNER if n % 2 else " A@EXAMPLE.ORG ", f"guess{n}",
                                              "192.0.2.7") for n in range(39)))
    try:
        results = _run(guesses())
        checked = [r for r in results if not r.retry_after]
        assert len(checked) == 2 and len(verified) == 2
        assert all(r.account is None for r in results)
    finally:
        a.close()


def test_concurrent_right_logins_share_one_check(verified):
    """Ten connections of one client log in at once: one check, none delayed
    or refused; a distinct guess beside them still takes its own slot."""
    a = _authenticator(max_delay=0.05, clock=Clock())    # time stands still

    async def burst():
        return await asyncio.gather(*(a.login(OWNER, "right", "192.0.2.8") for _ in range(10)),
                                    a.login(OWNER, "guess", "192.0.2.8"))
    try:
        *owners, guess = _run(burst())
        assert all(r.account.address == OWNER and not r.retry_after for r in owners)
        assert guess.account is None and not guess.retry_after
        assert len(verified) == 2
        # the guess is still counted: the owner's success did not forgive it
        slot = a.throttle.reserve(OWNER, "192.0.2.8")
        assert slot.wait > 0 or slot.retry_after > 0
    finally:
        a.close()


def test_the_owner_from_another_address_is_not_delayed():
    a = _authenticator(max_delay=0.05, clock=Clock())    # time stands still

    async def attack_then_owner():
        await asyncio.gather(*(a.login(OWNER, "guess", "192.0.2.7") for _ in range(10)))
        refused = await a.login(OWNER, "guess", "192.0.2.7")
        owner = await a.login(OWNER, "right", "198.51.100.1")
        return refused, owner
    try:
        refused, owner = _run(attack_then_owner())
        assert refused.retry_after > 0 and not refused.busy
        assert owner.account.address == OWNER
    finally:
        a.close()


def test_a_storage_error_is_not_counted():
    a = _authenticator()

    def broken(address):
        raise RuntimeError("database is down")
    a.store.account = broken
    try:
        with pytest.raises(RuntimeError):
            _run(a.login(OWNER, "right", "192.0.2.1"))
        assert a.throttle.reserve(OWNER, "192.0.2.1").wait == 0
    finally:
        a.close()


# --- the throttle ----------------------------------------------------------------------

def test_penalties_double_up_to_the_cap_then_refuse():
    clock = Clock()
    t = auth.Throttle(clock=clock, max_delay=15)
    waits = []
    for _ in range(5):
        slot = t.reserve("a@x", "192.0.2.1")
        waits.append(slot.wait)
        t.failed(slot)
    assert waits == [0, 1, 3, 7, 15]        # 1, 2, 4, 8 seconds apart
    refused = t.reserve("a@x", "192.0.2.1")
    assert refused.retry_after == 30 and not refused.keys
    clock.now += 16
    assert t.reserve("a@x", "192.0.2.1").wait == 14     # then one every 15 s


def test_a_success_ends_the_penalty_of_its_account_and_address():
    clock = Clock()
    t = auth.Throttle(clock=clock)
    for _ in range(3):
        t.failed(t.reserve("a@x", "192.0.2.1"))
    clock.now += 10
    slot = t.reserve("a@x", "192.0.2.1")
    t.succeeded(slot)
    assert t.reserve("a@x", "192.0.2.1").wait == 0


def test_a_success_keeps_the_attempts_under_way_beside_it():
    clock = Clock()
    t = auth.Throttle(clock=clock)
    guess = t.reserve("a@x", "192.0.2.1")
    right = t.reserve("a@x", "192.0.2.1")
    t.succeeded(right)
    t.failed(guess)
    assert t.reserve("a@x", "192.0.2.1").wait > 0


def test_penalties_are_per_account_and_address():
    clock = Clock()
    t = auth.Throttle(clock=clock)
    for _ in range(5):
        t.failed(t.reserve("a@x", "192.0.2.1"))
    assert t.reserve("a@x", "198.51.100.1").wait == 0       # the owner elsewhere
    assert t.reserve("b@x", "192.0.2.1").wait == 0          # another account from there


def test_a_source_spraying_many_accounts_is_slowed():
    clock = Clock()
    t = auth.Throttle(clock=clock, free_per_source=10)
    waits = [t.reserve(f"u{n}@x", "192.0.2.1").wait for n in range(14)]
    assert waits[:11] == [0] * 11 and waits[11:] == [1, 3, 7]
    assert t.reserve("other@x", "198.51.100.1").wait == 0


def test_a_cancelled_attempt_is_given_back():
    clock = Clock()
    t = auth.Throttle(clock=clock)
    t.failed(t.reserve("a@x", "192.0.2.1"))
    slot = t.reserve("a@x", "192.0.2.1")
    assert slot.wait == 1
    t.cancelled(slot)
    assert t.reserve("a@x", "192.0.2.1").wait == 1


def test_failures_are_forgotten_and_state_is_bounded():
    clock = Clock()
    t = auth.Throttle(clock=clock, forget_after=900, max_keys=100)
    for _ in range(4):
        t.failed(t.reserve("a@x", "192.0.2.1"))
    clock.now += 901
    assert t.reserve("a@x", "192.0.2.1").wait == 0
    for n in range(500):
        t.reserve(f"u{n}@x", f"10.0.{n // 250}.{n % 250}")
    assert len(t) <= 100


def test_keys_are_normalised():
    assert auth.account_key(" A@EXAMPLE.ORG ") == auth.account_key("a@example.org")
    assert auth.account_key("\uff21@example.org") == "a@example.org"     # full-width A
    assert auth.account_key("  Not An Address ") == "not an address"
    assert auth.source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert auth.source_key("2001:db8::1") == auth.source_key("2001:db8::ffff") == "2001:db8::/64"


# --- client addresses ------------------------------------------------------------------

def test_forwarded_addresses_only_from_trusted_proxies():
    a = _authenticator(trusted_proxies=["127.0.0.1", "10.0.0.0/8"])
    try:
        assert a.client_address("192.0.2.9", "203.0.113.5") == "192.0.2.9"
        assert a.client_address("127.0.0.1", "203.0.113.5") == "203.0.113.5"
        # rightmost hop that is not a trusted proxy; what a client wrote further left is ignored
        assert a.client_address("127.0.0.1", "198.51.100.66, 203.0.113.5, 10.1.2.3") == "203.0.113.5"
        assert a.client_address("127.0.0.1", "10.0.0.2, 10.1.2.3") == "10.0.0.2"
        assert a.client_address("127.0.0.1", "203.0.113.5, junk") == "127.0.0.1"
        assert a.client_address("127.0.0.1", "[2001:db8::1]:443") == "2001:db8::1"
        assert a.forwarded_ip("10.9.9.9", "203.0.113.5") == "203.0.113.5"
        assert a.forwarded_ip("192.0.2.9", "203.0.113.5") is None
        assert a.forwarded_ip("127.0.0.1", "not an ip") is None
    finally:
        a.close()


def test_loopback_is_not_trusted_by_default():
    a = _authenticator()
    try:
        assert a.client_address("127.0.0.1", "203.0.113.5") == "127.0.0.1"
        assert a.forwarded_ip("127.0.0.1", "203.0.113.5") is None
    finally:
        a.close()


def test_auth_settings_load_and_a_bad_proxy_is_refused(tmp_path):
    from roost.server import config
    example = config.load(str(pathlib.Path(__file__).parents[2] / "conf" / "roost.toml"))
    default = config.Config()
    assert (example.trusted_proxies, example.hash_threads, example.hash_queue,
            example.max_login_delay) == ([], auth.HASH_THREADS, auth.HASH_QUEUE, auth.MAX_DELAY) == \
        (default.trusted_proxies, default.hash_threads, default.hash_queue, default.max_login_delay)
    conf = tmp_path / "roost.toml"
    conf.write_text('[auth]\ntrusted_proxies = ["127.0.0.1", "10.0.0.0/8"]\nhash_threads = 1\n')
    cfg = config.load(str(conf))
    assert cfg.trusted_proxies == ["127.0.0.1", "10.0.0.0/8"] and cfg.hash_threads == 1
    conf.write_text('[auth]\ntrusted_proxies = ["webmail.example.org"]\n')
    with pytest.raises(ValueError, match="trusted_proxies"):
        config.load(str(conf))
