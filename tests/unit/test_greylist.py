"""Greylisting memory (storage.greylist) on a real SQLite store, with time
moved by hand: the sequence, allow-listing after N passes, normalised
senders, restarts after the retry window, pruning."""

import pytest

from roost.storage import greylist
from roost.storage.greylist import Policy, check, network_of, normalise_sender, prune
from roost.storage.store import Store

T0 = 1_800_000_000.0
POLICY = Policy(delay=300, retry_window=3600, allow_after=2, allow_for=86400)


@pytest.fixture
def store(tmp_path):
    s = Store.open(str(tmp_path / "data"))
    yield s
    s.close()


def test_networks():
    assert network_of("192.0.2.77") == "192.0.2.0/24"
    assert network_of("2001:db8:1:2:3::4") == "2001:db8:1:2::/64"
    assert network_of("::ffff:192.0.2.9") == "192.0.2.0/24"
    assert network_of("local") == "local"


def test_senders_are_normalised():
    assert normalise_sender("<Bounce-12345-99@List.TEST>") == "bounce-#-#@list.test"
    assert normalise_sender("a+tag@x.test") == "a@x.test"
    assert normalise_sender("") == ""


def test_sequence(store):
    net = "192.0.2.0/24"
    v = check(store, net, "a@s.test", "u@example.org", T0, POLICY)
    assert (v.passed, v.wait, v.reason) == (False, 300, "new")
    v = check(store, net, "a@s.test", "u@example.org", T0 + 100, POLICY)
    assert (v.passed, v.wait, v.reason) == (False, 200, "early")
    v = check(store, net, "A@S.test", "U@example.org", T0 + 301, POLICY)
    assert (v.passed, v.reason) == (True, "passed")
    assert check(store, net, "a@s.test", "u@example.org", T0 + 5000, POLICY).passed
    # Another recipient is another triplet.
    assert not check(store, net, "a@s.test", "v@example.org", T0 + 5000, POLICY).passed
    assert greylist.allowed_networks(store, T0 + 5000) == {net: 1}


def test_allow_listed_after_n_passes(store):
    net = "198.51.100.0/24"
    for i, sender in enumerate(("a@s.test", "b@s.test")):
        assert not check(store, net, sender, "u@example.org", T0, POLICY).passed
        assert check(store, net, sender, "u@example.org", T0 + 400, POLICY).passed
    v = check(store, net, "new@s.test", "w@example.org", T0 + 500, POLICY)
    assert (v.passed, v.reason) == (True, "allowed")
    # The allowance expires allow_for after the last pass.
    assert not check(store, net, "new2@s.test", "w@example.org", T0 + 400 + 86401, POLICY).passed


def test_too_late_retry_starts_over_and_prune(store):
    net = "203.0.113.0/24"
    check(store, net, "a@s.test", "u@example.org", T0, POLICY)
    v = check(store, net, "a@s.test", "u@example.org", T0 + 3601, POLICY)
    assert (v.passed, v.reason) == (False, "restarted")
    check(store, net, "b@s.test", "u@example.org", T0, POLICY)
    assert check(store, net, "b@s.test", "u@example.org", T0 + 301, POLICY).passed
    # Pruning: the never-passed triplet past its window, later the passed one and the network.
    assert prune(store, T0 + 3601 + 3601, POLICY) == 1
    assert prune(store, T0 + 301 + 86401, POLICY) == 2
    assert check(store, net, "b@s.test", "u@example.org", T0 + 301 + 86402, POLICY).reason == "new"
