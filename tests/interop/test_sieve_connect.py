"""Debian's ``sieve-connect`` (a real ManageSieve client) against ``roost serve
--managesieve``: STARTTLS verified against a test CA file, SASL PLAIN, then
upload, list, activate, download, deactivate and delete a script. The server
refuses cleartext logins even on loopback here, so a pass proves the client
went through STARTTLS."""

import os
import shutil
import subprocess

import pytest

from tests.conftest import RoostServer, add_user
from tests.tls_helpers import write_cert

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(shutil.which("sieve-connect") is None,
                                 reason="sieve-connect is not installed (apt-get install sieve-connect)")]

ALICE, PASSWORD, HOST = "alice@example.org", "alice-secret", "mail.example.org"
SCRIPT = b'require ["fileinto"];\r\nif header :contains "subject" "[list]" {\r\n  fileinto "INBOX";\r\n}\r\n'


@pytest.fixture
def server(tmp_path):
    data = tmp_path / "data"
    add_user(data, ALICE, PASSWORD)
    cert, key = write_cert(tmp_path / "certs", names=(HOST,))
    conf = tmp_path / "roost.toml"
    conf.write_text(f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'
                    "[managesieve]\nloopback_cleartext = false\n")
    srv = RoostServer(data, listeners=("managesieve",), config=conf).start()
    srv.cert = cert
    yield srv
    srv.stop()


def sieve_connect(server, cwd, *args, password=PASSWORD):
    """Run sieve-connect with the password on a pipe (never on the command line)."""
    read, write = os.pipe()
    os.write(write, password.encode() + b"\n")
    os.close(write)
    try:
        return subprocess.run(
            ["sieve-connect", "--server", "127.0.0.1", "--port", str(server.ports["managesieve"]),
             "--user", ALICE, "--passwordfd", str(read), "--authmech", "PLAIN",
             "--tlscafile", server.cert, "--tlshostname", HOST, *args],
            cwd=cwd, pass_fds=(read,), capture_output=True, timeout=60)
    finally:
        os.close(read)


def test_upload_list_activate_download_delete(server, tmp_path):
    (tmp_path / "filters.siv").write_bytes(SCRIPT)
    run = sieve_connect(server, tmp_path, "--upload", "--localsieve", "filters.siv",
                        "--remotesieve", "filters")
    assert run.returncode == 0, run.stderr
    listed = sieve_connect(server, tmp_path, "--list")
    assert listed.returncode == 0 and listed.stdout.decode().split() == ['"filters"'], listed
    assert sieve_connect(server, tmp_path, "--activate", "--remotesieve", "filters").returncode == 0
    listed = sieve_connect(server, tmp_path, "--list").stdout.decode()
    assert listed.split() == ['"filters"', "ACTIVE"], listed
    got = sieve_connect(server, tmp_path, "--download", "--remotesieve", "filters",
                        "--localsieve", "copy.siv")
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "copy.siv").read_bytes() == SCRIPT
    # the active script cannot go; deactivated, it can
    assert sieve_connect(server, tmp_path, "--delete", "--remotesieve", "filters").returncode != 0
    assert sieve_connect(server, tmp_path, "--deactivate").returncode == 0
    assert sieve_connect(server, tmp_path, "--delete", "--remotesieve", "filters").returncode == 0
    assert sieve_connect(server, tmp_path, "--list").stdout.decode().split() == []


def test_checkscript_and_wrong_password(server, tmp_path):
    (tmp_path / "bad.siv").write_bytes(b"if true {\r\n  fileinto;\r\n")
    run = sieve_connect(server, tmp_path, "--checkscript", "--localsieve", "bad.siv")
    assert run.returncode != 0
    assert b"line" in run.stdout + run.stderr
    denied = sieve_connect(server, tmp_path, "--list", password="wrong")
    assert denied.returncode != 0
