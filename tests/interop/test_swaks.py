"""swaks (Debian's SMTP test tool, its own Perl SMTP client and Net::SSLeay
TLS) against Roost's submission listeners: STARTTLS with the server's
certificate verified, AUTH PLAIN and LOGIN, implicit TLS, PIPELINING, and
the refusals (no AUTH, a wrong password) as the exit codes swaks documents."""

import shutil
import subprocess

import pytest

from roost.server.auth import hash_password
from roost.storage.store import Store
from tests.conftest import RoostServer, stored_messages
from tests.protocol.test_submission import closed_port

pytestmark = pytest.mark.interop

HOST = "mail.example.org"
ALICE, BOB = "alice@example.org", "bob@example.org"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if shutil.which("swaks") is None:
        pytest.skip("swaks is not installed (Debian package swaks)")
    tmp = tmp_path_factory.mktemp("swaks")
    store = Store.open(str(tmp / "data"))
    store.add_account(ALICE, hash_password("alice-pw"))
    store.add_account(BOB, hash_password("bob-pw"))
    store.close()
    (tmp / "roost.toml").write_text(f'[server]\nhostname = "{HOST}"\n[relay]\n'
                                    f'smarthost = "127.0.0.1:{closed_port()}"\n')
    srv = RoostServer(tmp / "data", listeners=("submission", "submissions"),
                      config=tmp / "roost.toml").start()
    srv.data_dir = tmp / "data"
    yield srv
    srv.stop()


def swaks(server, *args, port="submission"):
    proc = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{server.ports[port]}", "--ehlo", "client.test",
         "--from", ALICE, "--timeout", "20", *args],
        capture_output=True, timeout=60)
    return proc.returncode, proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")


def test_starttls_with_verified_certificate_and_auth_plain(server):
    cafile = str(server.data_dir / "keys" / "tls-cert.pem")
    rc, out = swaks(server, "--to", BOB, "--tls", "--tls-verify", "--tls-ca-path", cafile,
                    "--tls-sni", HOST, "--auth", "PLAIN", "--auth-user", ALICE,
                    "--auth-password", "alice-pw", "--header", "Subject: swaks starttls")
    assert rc == 0, out
    assert "235 2.7.0" in out and "250 2.0.0 queued as" in out
    (got,) = [m for m in stored_messages(server.data_dir, BOB) if b"Subject: swaks starttls" in m]
    assert b"with ESMTPSA id" in got and got.count(b"Date:") == 1


def test_implicit_tls_auth_login_and_pipelining(server):
    rc, out = swaks(server, "--to", f"{BOB},carol@remote.test", "--tls-on-connect", "--pipeline",
                    "--auth", "LOGIN", "--auth-user", ALICE, "--auth-password", "alice-pw",
                    "--header", "Subject: swaks implicit", port="submissions")
    assert rc == 0, out
    assert "334 VXNlcm5hbWU6" in out and "250 2.0.0 queued as" in out
    assert [m for m in stored_messages(server.data_dir, BOB) if b"Subject: swaks implicit" in m]
    # Sent copy for the sender.
    assert [m for m in stored_messages(server.data_dir, ALICE, "Sent")
            if b"Subject: swaks implicit" in m]


def test_refusals_as_swaks_sees_them(server):
    rc, out = swaks(server, "--to", "carol@remote.test")
    assert rc == 23 and "530 5.7.0 Authentication required" in out     # never a relay
    rc, out = swaks(server, "--to", BOB, "--tls", "--auth", "PLAIN", "--auth-user", ALICE,
                    "--auth-password", "wrong")
    assert rc == 28 and "535 5.7.8" in out
    rc, out = swaks(server, "--to", BOB, "--tls", "--auth", "PLAIN", "--auth-user", BOB,
                    "--auth-password", "bob-pw")                         # from alice's address
    assert rc == 23 and "553 5.7.1" in out


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    """``roost serve --smtp``: the MX-facing edge, as another MTA meets it."""
    if shutil.which("swaks") is None:
        pytest.skip("swaks is not installed (Debian package swaks)")
    tmp = tmp_path_factory.mktemp("swaks-edge")
    store = Store.open(str(tmp / "data"))
    store.add_account(BOB)
    store.close()
    (tmp / "roost.toml").write_text(f'[server]\nhostname = "{HOST}"\n[smtp]\npregreet = 0.2\n'
                                    '[spam]\nenabled = false\n')
    srv = RoostServer(tmp / "data", listeners=("smtp",), config=tmp / "roost.toml").start()
    srv.data_dir = tmp / "data"
    yield srv
    srv.stop()


def test_edge_starttls_pipelining_delivery(edge):
    cafile = str(edge.data_dir / "keys" / "tls-cert.pem")
    rc, out = swaks(edge, "--from", "someone@remote.test", "--to", BOB, "--tls", "--tls-verify",
                    "--tls-ca-path", cafile, "--tls-sni", HOST, "--pipeline",
                    "--header", "Subject: swaks edge", port="smtp")
    assert rc == 0, out
    assert "250 2.0.0 queued as" in out
    (got,) = [m for m in stored_messages(edge.data_dir, BOB) if b"Subject: swaks edge" in m]
    assert b"Received: from client.test (unknown [127.0.0.1])" in got and b"ESMTPS" in got


def test_edge_refuses_relaying_and_unknown_users(edge):
    rc, out = swaks(edge, "--from", "someone@remote.test", "--to", "victim@elsewhere.test",
                    port="smtp")
    assert rc == 24 and "554 5.7.1 <victim@elsewhere.test>: relay access denied" in out
    rc, out = swaks(edge, "--from", "someone@remote.test", "--to", "nobody@example.org",
                    port="smtp")
    assert rc == 24 and "550 5.1.1" in out
    rc, out = swaks(edge, "--from", "someone@remote.test", "--to", BOB, "--auth", "PLAIN",
                    "--auth-user", BOB, "--auth-password", "x", port="smtp")
    assert rc != 0 and "250 2.0.0 queued" not in out      # no AUTH on an MX
