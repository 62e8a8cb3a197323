"""Failed-login penalties and the bounded password pool, over real sockets
against ``roost serve`` (IMAP LOGIN and JMAP Basic).

The server runs with ``max_login_delay = 1``: after one failure of an
(account, source) the next attempt waits up to 1 s, and one that would wait
longer is refused at once (IMAP ``NO [UNAVAILABLE]``, JMAP 429). So of
several concurrent wrong guesses exactly two are checked; concurrent logins
with the right password, as a client opening several connections makes,
share one check and are never refused. Each test uses its
own account and loopback source addresses (127.0.0.x), so their penalties do
not meet; 127.0.0.9 is the one trusted proxy.
"""

import base64
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from roost.server.auth import hash_password
from roost.storage import account_data
from roost.storage.store import Store
from tests.conftest import RoostServer
from tests.imap_helpers import Wire, close_all

PROXY = "127.0.0.9"
PASSWORD = "the-right-one"
ACCOUNTS = ("norm", "conc", "owner", "proxied", "spoof", "many", "mixed",
            "jnorm", "jowner", "jxff", "jprox", "jmany", "jcache")
CONFIG = f"""
[auth]
trusted_proxies = ["{PROXY}"]
max_login_delay = 1
hash_threads = 1
hash_queue = 2

[limits]
# the guessers here open a dozen connections at once from one address
unauthenticated_connections_per_ip = 50
"""


def addr(name):
    return f"{name}@example.org"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("auththrottle")
    store = Store.open(str(tmp / "data"))
    for name in ACCOUNTS:
        store.add_account(addr(name), hash_password(PASSWORD))
    tokens = {"jmany": account_data.create_token(store, store.account(addr("jmany")).id, "phone")}
    store.close()
    (tmp / "roost.toml").write_text(CONFIG)
    srv = RoostServer(tmp / "data", listeners=("imap", "jmap"), config=tmp / "roost.toml").start()
    srv.tokens = tokens
    yield srv
    close_all()
    srv.stop()


# --- IMAP ------------------------------------------------------------------------------

def imap_logins(server, logins, source, ids=None):
    """LOGIN ``(user, password)`` pairs on concurrent connections from
    ``source``, each after ``ID ("x-originating-ip" ids[i])`` if given;
    returns the tagged replies in order."""
    conns = [Wire(server.ports["imap"], source=source) for _ in logins]
    for i, w in enumerate(conns):
        if ids:
            assert w.cmd(f'I ID ("x-originating-ip" "{ids[i]}")')[-1].startswith(b"I OK")
    for (user, password), w in zip(logins, conns):
        w.send(f'L LOGIN "{user}" "{password}"\r\n')
    return [w.until("L")[-1] for w in conns]


def kinds(replies):
    return sorted("UNAVAILABLE" if b"[UNAVAILABLE]" in r else
                  "AUTHENTICATIONFAILED" if b"[AUTHENTICATIONFAILED]" in r else
                  "OK" if r.startswith(b"L OK") else r.decode() for r in replies)


FAILED, REFUSED = "AUTHENTICATIONFAILED", "UNAVAILABLE"


def test_imap_spellings_of_one_account_share_a_counter(server):
    spellings = [" NORM@EXAMPLE.ORG ", "norm@example.org", "Norm@Example.Org"]
    replies = imap_logins(server, [(u, "wrong") for u in spellings], "127.0.0.21")
    assert kinds(replies) == [FAILED, FAILED, REFUSED], replies


def test_imap_concurrent_guesses_are_counted_before_they_are_answered(server):
    replies = imap_logins(server, [(addr("conc"), f"guess{n}") for n in range(8)], "127.0.0.22")
    assert kinds(replies) == [FAILED] * 2 + [REFUSED] * 6, replies
    assert all(b"try again in" in r for r in replies if b"UNAVAILABLE" in r)


def test_imap_owner_from_another_address_logs_in_while_the_guesser_waits(server):
    guesses = imap_logins(server, [(addr("owner"), f"guess{n}") for n in range(12)], "127.0.0.23")
    assert kinds(guesses).count(REFUSED) >= 8, guesses
    w = Wire(server.ports["imap"], source="127.0.0.24")
    assert w.cmd(f'L LOGIN "{addr("owner")}" "{PASSWORD}"')[-1].startswith(b"L OK")
    assert w.cmd("S SELECT INBOX")[-1].startswith(b"S OK")
    again = imap_logins(server, [(addr("owner"), "guess")] * 3, "127.0.0.23")
    assert REFUSED in kinds(again), again


def test_imap_concurrent_right_logins_from_one_address_all_get_in(server):
    """A client opening ten connections at once: the same password on each
    is checked once; none waits behind the others or is refused, and they
    leave no penalty (the next guesses there count from zero)."""
    user, source = addr("many"), "127.0.0.26"
    for _ in range(2):                      # a cold password cache, then a warm one
        replies = imap_logins(server, [(user, PASSWORD)] * 10, source)
        assert kinds(replies) == ["OK"] * 10, replies
    guesses = imap_logins(server, [(user, f"guess{n}") for n in range(3)], source)
    assert kinds(guesses) == [FAILED, FAILED, REFUSED], guesses


def test_imap_a_guesser_beside_right_logins_from_one_address_is_still_paced(server):
    """Ten right logins under way from an address do not open the door to
    a guesser there: of eight distinct guesses at most two are checked,
    whether the right ones are still being checked or have succeeded."""
    user, source = addr("mixed"), "127.0.0.27"
    owner = [Wire(server.ports["imap"], source=source) for _ in range(10)]
    guesser = [Wire(server.ports["imap"], source=source) for _ in range(8)]
    for w in owner:
        w.send(f'L LOGIN "{user}" "{PASSWORD}"\r\n')
    time.sleep(0.3)          # the right logins are under way (or done)
    for n, w in enumerate(guesser):
        w.send(f'L LOGIN "{user}" "guess{n}"\r\n')
    assert kinds([w.until("L")[-1] for w in owner]) == ["OK"] * 10
    guesses = kinds([w.until("L")[-1] for w in guesser])
    assert guesses.count(REFUSED) >= 6 and guesses.count(FAILED) >= 1, guesses
    # and the same guess on several connections is no free pass either
    again = imap_logins(server, [(user, "guess0")] * 4, source)
    assert REFUSED in kinds(again) and "OK" not in kinds(again), again


def test_imap_id_from_a_trusted_proxy_names_the_client(server):
    user = addr("proxied")
    conns = []
    for _ in range(4):
        w = Wire(server.ports["imap"], source=PROXY)
        w.cmd('I ID ("x-originating-ip" "203.0.113.5")')
        w.send(f'L LOGIN "{user}" "wrong"\r\n')
        conns.append(w)
    time.sleep(0.3)          # the guesses are under way: the guesser is penalised now
    owner = Wire(server.ports["imap"], source=PROXY)
    owner.cmd('I ID ("name" "webmail" "x-originating-ip" "203.0.113.6")')
    assert owner.cmd(f'L LOGIN "{user}" "{PASSWORD}"')[-1].startswith(b"L OK")
    assert kinds([w.until("L")[-1] for w in conns]) == [FAILED, FAILED, REFUSED, REFUSED]


def test_imap_id_from_an_untrusted_peer_is_ignored(server):
    replies = imap_logins(server, [(addr("spoof"), "wrong")] * 4, "127.0.0.25",
                          ids=[f"203.0.113.{10 + n}" for n in range(4)])
    assert kinds(replies) == [FAILED, FAILED, REFUSED, REFUSED], replies


def test_imap_a_full_password_pool_fails_fast_as_unavailable(server):
    replies = imap_logins(server, [(f"nobody{n}@example.org", "x") for n in range(8)], None)
    busy = [r for r in replies if b"[UNAVAILABLE] the server is busy" in r]
    assert busy and len(busy) <= 8 - 3, replies     # one running, two queued at most


# --- JMAP ------------------------------------------------------------------------------

def basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def jmap_gets(server, requests, source):
    """GET /jmap/session for ``(user, password, x-forwarded-for or None)``
    concurrently from ``source``; returns the responses in order."""
    url = f"http://127.0.0.1:{server.ports['jmap']}/jmap/session"

    def one(req):
        user, password, xff = req
        headers = {"Authorization": basic(user, password)}
        if xff:
            headers["X-Forwarded-For"] = xff
        with httpx.Client(transport=httpx.HTTPTransport(local_address=source), timeout=30) as c:
            return c.get(url, headers=headers)
    with ThreadPoolExecutor(len(requests)) as pool:
        return list(pool.map(one, requests))


def statuses(responses):
    return sorted(r.status_code for r in responses)


def test_jmap_spellings_of_one_account_share_a_counter(server):
    spellings = [" JNORM@EXAMPLE.ORG ", "jnorm@example.org", "JNorm@Example.org"]
    responses = jmap_gets(server, [(u, "wrong", None) for u in spellings], "127.0.0.31")
    assert statuses(responses) == [401, 401, 429]
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["status"] == 429


def test_jmap_owner_from_another_address_logs_in_while_the_guesser_waits(server):
    guesses = jmap_gets(server, [(addr("jowner"), f"guess{n}", None) for n in range(12)],
                        "127.0.0.32")
    assert statuses(guesses).count(429) >= 8
    (owner,) = jmap_gets(server, [(addr("jowner"), PASSWORD, None)], "127.0.0.33")
    assert owner.status_code == 200 and owner.json()["username"] == addr("jowner")
    again = jmap_gets(server, [(addr("jowner"), "guess", None)] * 3, "127.0.0.32")
    assert 429 in statuses(again)


def test_jmap_concurrent_right_logins_from_one_address_all_get_in(server):
    """Ten concurrent requests with one Basic password, then with one app
    token as the password, then as a bearer token: all are answered."""
    user, token = addr("jmany"), server.tokens["jmany"]
    for password in (PASSWORD, token):
        responses = jmap_gets(server, [(user, password, None)] * 10, "127.0.0.36")
        assert statuses(responses) == [200] * 10
    url = f"http://127.0.0.1:{server.ports['jmap']}/jmap/session"

    def bearer(_):
        with httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.37"),
                          timeout=30) as c:
            return c.get(url, headers={"Authorization": f"Bearer {token}"})
    with ThreadPoolExecutor(15) as pool:      # more than the address's free failures
        assert statuses(pool.map(bearer, range(15))) == [200] * 15
    guesses = jmap_gets(server, [(user, f"guess{n}", None) for n in range(3)], "127.0.0.36")
    assert statuses(guesses) == [401, 401, 429]


def test_jmap_a_remembered_login_answers_no_guesser_elsewhere(server):
    """The owner's Authorization header, remembered for its address, is not
    accepted unchecked from an address whose penalty refuses logins."""
    user = addr("jcache")
    (owner,) = jmap_gets(server, [(user, PASSWORD, None)], "127.0.0.38")
    assert owner.status_code == 200
    with ThreadPoolExecutor(1) as pool:
        guesses = pool.submit(jmap_gets, server, [(user, f"guess{n}", None) for n in range(4)],
                              "127.0.0.39")
        time.sleep(0.3)      # the guesses are under way: the guesser is penalised now
        (guessed,) = jmap_gets(server, [(user, PASSWORD, None)], "127.0.0.39")
        assert guessed.status_code == 429
        assert statuses(guesses.result()) == [401, 401, 429, 429]
    (owner,) = jmap_gets(server, [(user, PASSWORD, None)], "127.0.0.38")
    assert owner.status_code == 200


def test_jmap_forwarded_for_from_an_untrusted_peer_is_ignored(server):
    responses = jmap_gets(server, [(addr("jxff"), "wrong", f"198.51.100.{n}") for n in range(4)],
                          "127.0.0.34")
    assert statuses(responses) == [401, 401, 429, 429]


def test_jmap_forwarded_for_from_a_trusted_proxy_names_the_client(server):
    """The rightmost hop the proxy did not add itself is the client; what the
    client wrote further left is ignored."""
    user = addr("jprox")
    with ThreadPoolExecutor(1) as pool:
        guesses = pool.submit(jmap_gets, server, [(user, "wrong", f"198.51.100.{n}, 203.0.113.7")
                                                  for n in range(4)], PROXY)
        time.sleep(0.3)
        (owner,) = jmap_gets(server, [(user, PASSWORD, "203.0.113.8")], PROXY)
        assert owner.status_code == 200
        assert statuses(guesses.result()) == [401, 401, 429, 429]


def test_jmap_a_full_password_pool_is_503_with_retry_after(server):
    responses = jmap_gets(server, [(f"nobody{n}@example.org", "x", None) for n in range(8)],
                          "127.0.0.35")
    busy = [r for r in responses if r.status_code == 503]
    assert busy and busy[0].headers["retry-after"] == "1"
