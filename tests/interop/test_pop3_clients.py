"""Real POP3 clients against ``roost serve --pop3/--pop3s``: fetchmail (over
STLS and over implicit TLS) and getmail6 (plain on loopback and implicit
TLS), each in leave-on-server mode (a second run fetches nothing, a new
message alone is fetched next: UIDL stays the same between sessions) and in
delete mode (the INBOX is empty afterwards). Skipped, with the reason, when
a program is not installed (Debian ``fetchmail``, ``getmail6``)."""

import os
import shutil
import smtplib
import subprocess
import uuid

import pytest

from tests.conftest import RoostServer, add_user, stored_messages
from tests.tls_helpers import write_cert

pytestmark = pytest.mark.interop

HOST = "mail.example.org"
PASSWORD = "interop-secret"
COUNT = 3


def need(program):
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (see .ci/deps.sh)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pop3-interop")
    data = tmp / "data"
    add_user(data, "seed@example.org", PASSWORD)
    cert, key = write_cert(tmp / "certs", names=(HOST,))
    conf = tmp / "roost.toml"
    conf.write_text(f'[tls]\ncert = "{cert}"\nkey = "{key}"\n')
    srv = RoostServer(data, listeners=("pop3", "pop3s", "lmtp"), config=conf).start()
    srv.cert = cert
    yield srv
    srv.stop()


def account(server, count=COUNT):
    """A new account with ``count`` messages in its INBOX."""
    address = f"p{uuid.uuid4().hex[:10]}@example.org"
    add_user(server.data, address, PASSWORD)
    for i in range(count):
        deliver(server, address, i)
    return address


def deliver(server, address, i):
    data = (f"From: Sender <s@example.net>\r\nTo: {address}\r\n"
            f"Subject: pop interop {i}\r\nMessage-ID: <{uuid.uuid4().hex}@example.net>\r\n\r\n"
            f"Body {i}\r\n.a line starting with a dot\r\n").encode()
    lmtp = smtplib.LMTP("127.0.0.1", server.ports["lmtp"])
    try:
        lmtp.sendmail("s@example.net", [address], data)
    finally:
        lmtp.quit()


def unix(data):
    return data.replace(b"\r\n", b"\n")


def check_fetched(files, stored, subjects):
    """The fetched files are the ``stored`` messages (line ends aside; a
    client may add its own header lines at the top) with these subjects."""
    stored = [unix(m) for m in stored]
    got = [unix(p.read_bytes()) for p in files]
    assert len(got) == len(subjects), got
    for text in got:
        # from Delivered-To on, every stored byte arrives (Return-Path is
        # what a client may rewrite)
        assert any(text.endswith(m.split(b"\n", 1)[1]) for m in stored), text[:400]
        assert b"\n.a line starting with a dot\n" in text      # un-stuffed
    assert sorted(subjects) == sorted(
        next(line for line in t.split(b"\n") if line.startswith(b"Subject: ")).decode()[9:]
        for t in got)


# --- fetchmail ---------------------------------------------------------------------------

def fetchmail_run(server, tmp_path, address, out_dir, server_options, user_options):
    fetchmail = need("fetchmail")
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f"""set no syslog
set invisible
poll 127.0.0.1 with protocol POP3 {server_options}
  user "{address}" password "{PASSWORD}" is "{os.environ.get('USER', 'root')}" here
  {user_options} sslcertck sslcertfile "{server.cert}" sslcommonname "{HOST}"
  mda "/bin/sh -c 'cat > {out_dir}/$$'"
""")
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    return subprocess.run([fetchmail, "-f", str(rc), "--nodetach", "-N", "-v"],
                          capture_output=True, timeout=120, env=env)


def test_fetchmail_stls_leave_on_server(server, tmp_path):
    address = account(server)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # sslproto without "ssl": STLS on the POP3 port, required
    run = lambda: fetchmail_run(server, tmp_path, address, out_dir,
                                f"port {server.ports['pop3']} uidl", "keep sslproto 'tls1.2+'")
    out = run()
    log = out.stdout.decode() + out.stderr.decode()
    assert out.returncode == 0, log
    assert "STLS" in log, log       # it negotiated TLS on the POP3 port
    check_fetched(list(out_dir.iterdir()), stored_messages(server.data, address),
                  [f"pop interop {i}" for i in range(COUNT)])
    out = run()         # nothing new: fetchmail says so with exit code 1
    assert out.returncode == 1, out.stdout.decode() + out.stderr.decode()
    assert len(list(out_dir.iterdir())) == COUNT
    deliver(server, address, 99)
    out = run()
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    files = sorted(out_dir.iterdir())
    assert len(files) == COUNT + 1
    assert sum(b"Subject: pop interop 99" in p.read_bytes() for p in files) == 1
    assert len(stored_messages(server.data, address)) == COUNT + 1      # left on the server


def test_fetchmail_pop3s_delete(server, tmp_path):
    address = account(server)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    stored = stored_messages(server.data, address)
    out = fetchmail_run(server, tmp_path, address, out_dir, f"port {server.ports['pop3s']}", "ssl")
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    check_fetched(list(out_dir.iterdir()), stored, [f"pop interop {i}" for i in range(COUNT)])
    assert stored_messages(server.data, address) == []          # deleted at QUIT


# --- getmail6 ----------------------------------------------------------------------------

def getmail_run(server, tmp_path, address, maildir, retriever, port, delete):
    getmail = need("getmail")
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    tls = f"ca_certs = {server.cert}\nssl_cert_hostname = {HOST}\n" if "SSL" in retriever else ""
    rc = tmp_path / "getmailrc"
    rc.write_text(f"""[retriever]
type = {retriever}
server = 127.0.0.1
port = {port}
username = {address}
password = {PASSWORD}
{tls}
[destination]
# an external command, which getmail also runs as root when told so (its
# Maildir destination refuses root, and tests may run as root)
type = MDA_external
path = /bin/sh
arguments = ("-c", "cat > {maildir}/new/$$")
allow_root_commands = true

[options]
read_all = false
delete = {str(delete).lower()}
delivered_to = false
received = false
verbose = 1
""")
    gdir = tmp_path / "getmail"
    gdir.mkdir(exist_ok=True)
    return subprocess.run([getmail, "--getmaildir", str(gdir), "--rcfile", str(rc)],
                          capture_output=True, timeout=120,
                          env=dict(os.environ, HOME=str(tmp_path)))


def test_getmail_leave_on_server(server, tmp_path):
    address = account(server)
    maildir = tmp_path / "Maildir"
    run = lambda: getmail_run(server, tmp_path, address, maildir, "SimplePOP3Retriever",
                              server.ports["pop3"], delete=False)
    out = run()
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    new = lambda: list((maildir / "new").iterdir())
    check_fetched(new(), stored_messages(server.data, address),
                  [f"pop interop {i}" for i in range(COUNT)])
    out = run()
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    assert len(new()) == COUNT      # the UIDLs it remembers are still the same
    deliver(server, address, 42)
    out = run()
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    assert len(new()) == COUNT + 1
    assert sum(b"Subject: pop interop 42" in p.read_bytes() for p in new()) == 1
    assert len(stored_messages(server.data, address)) == COUNT + 1


def test_getmail_pop3s_delete(server, tmp_path):
    address = account(server)
    stored = stored_messages(server.data, address)
    maildir = tmp_path / "Maildir"
    out = getmail_run(server, tmp_path, address, maildir, "SimplePOP3SSLRetriever",
                      server.ports["pop3s"], delete=True)
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    check_fetched(list((maildir / "new").iterdir()), stored,
                  [f"pop interop {i}" for i in range(COUNT)])
    assert stored_messages(server.data, address) == []
