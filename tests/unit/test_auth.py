"""Password checks and failed-login throttling."""

from roost.server import auth
from roost.storage.store import Store


def _authenticator():
    store = Store.memory()
    store.add_account("a@example.org", auth.hash_password("right"))
    return auth.Authenticator(store)


def test_check_accepts_the_right_password_only():
    a = _authenticator()
    assert a.check("A@Example.org", "right").address == "a@example.org"
    assert a.check("a@example.org", "wrong") is None
    assert a.check("nobody@example.org", "right") is None


def test_a_remote_address_is_blocked_after_repeated_failures():
    a = _authenticator()
    for _ in range(auth.FAIL_LIMIT):
        assert not a.blocked("192.0.2.7", "x@example.org")
        a.failed("192.0.2.7", "x@example.org")
    assert a.blocked("192.0.2.7")
    assert a.blocked("198.51.100.1", "x@example.org")   # the account too
    assert not a.blocked("198.51.100.1", "y@example.org")


def test_loopback_is_never_blocked_but_its_accounts_are():
    a = _authenticator()
    for _ in range(auth.FAIL_LIMIT + 2):
        a.failed("127.0.0.1", "x@example.org")
        a.failed("::1", "z@example.org")
    assert not a.blocked("127.0.0.1", "y@example.org")
    assert not a.blocked("::1")
    assert a.blocked("127.0.0.1", "x@example.org")
    assert a.blocked("::1", "z@example.org")
