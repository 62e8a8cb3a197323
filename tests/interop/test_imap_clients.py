"""Real IMAP clients against ``roost serve``: mbsync (isync), offlineimap3,
neomutt, fetchmail and ImapFlow (Node). Each does a full pull of a mailbox,
then a flag is changed on the server and a resync must pick it up.
Skipped, with the reason, when a program is not installed."""

import json
import os
import pty
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.imap_helpers import PASSWORD, USER, deliver, start_server

pytestmark = pytest.mark.interop

COUNT = 5


def need(program):
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"{program} is not installed (see .ci/deps.sh)")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("interop")
    srv = start_server(data, listeners=("imap", "imaps", "lmtp"))
    for i in range(COUNT):
        deliver(srv, (f"From: Sender {i} <s{i}@example.net>\r\nTo: {USER}\r\n"
                      f"Subject: interop message {i}\r\nMessage-ID: <interop-{i}@example.net>\r\n\r\n"
                      f"Body {i}\r\n").encode())
    srv.cert = Path(data) / "keys" / "tls-cert.pem"
    yield srv
    srv.stop()


def imap(server):
    c = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=20)
    c.login(USER, PASSWORD)
    return c


def set_flag(server, folder, subject, flag, add=True):
    c = imap(server)
    c.select_folder(folder)
    uids = c.search(["SUBJECT", subject])
    assert uids, subject
    (c.add_flags if add else c.remove_flags)(uids, [flag])
    c.logout()


def maildir_files(path):
    return sorted(p.name for sub in ("cur", "new") for p in (path / sub).glob("*"))


def mbsync_rc(tmp_path, port, security, maildir_extra, channel):
    """An empty local Maildir and an mbsyncrc that pulls from Roost on ``port``
    into it; ``security`` and ``channel`` are lines for the IMAPAccount and
    Channel sections, ``maildir_extra`` ends the MaildirStore section."""
    local = tmp_path / "mail"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""IMAPAccount roost
Host 127.0.0.1
Port {port}
User {USER}
Pass {PASSWORD}
{security}

IMAPStore remote
Account roost

MaildirStore local
Path {local}/
Inbox {local}/INBOX
{maildir_extra}
Channel roost
{channel}
Create Near
Sync Pull
SyncState *
""")
    return local, rc
def test_mbsync(server, tmp_path):
    mbsync = need("mbsync")
    local, rc = mbsync_rc(tmp_path, server.ports["imap"], "SSLType None\nAuthMechs LOGIN",
                          "SubFolders Verbatim\n", "Far :remote:\nNear :local:\nPatterns *")
    run = lambda: subprocess.run([mbsync, "-c", str(rc), "-a"], capture_output=True, timeout=120)
    out = run()
    assert out.returncode == 0, out.stderr.decode()
    files = maildir_files(local / "INBOX")
    assert len(files) == COUNT
    assert (local / "Sent").is_dir() and (local / "Trash").is_dir()
    set_flag(server, "INBOX", "interop message 2", b"\\Flagged")
    out = run()
    assert out.returncode == 0, out.stderr.decode()
    flagged = [f for f in maildir_files(local / "INBOX") if ":2," in f and "F" in f.split(":2,")[1]]
    assert len(flagged) == 1


def test_mbsync_over_implicit_tls(server, tmp_path):
    """mbsync on --imaps, trusting the generated certificate (README's set-up)."""
    mbsync = need("mbsync")
    local, rc = mbsync_rc(tmp_path, server.ports["imaps"],
                          f"SSLType IMAPS\nCertificateFile {server.cert}", "",
                          "Far :remote:INBOX\nNear :local:INBOX")
    out = subprocess.run([mbsync, "-c", str(rc), "-a"], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert len(maildir_files(local / "INBOX")) >= COUNT


def test_offlineimap(server, tmp_path):
    offlineimap = need("offlineimap")
    local = tmp_path / "mail"
    rc = tmp_path / "offlineimaprc"
    rc.write_text(f"""[general]
accounts = roost
metadata = {tmp_path}/meta

[Account roost]
localrepository = local
remoterepository = remote

[Repository local]
type = Maildir
localfolders = {local}

[Repository remote]
type = IMAP
remotehost = 127.0.0.1
remoteport = {server.ports['imap']}
remoteuser = {USER}
remotepass = {PASSWORD}
ssl = no
starttls = no
readonly = True
""")
    run = lambda: subprocess.run([offlineimap, "-c", str(rc), "-o", "-u", "quiet"],
                                 capture_output=True, timeout=120)
    out = run()
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    assert len(maildir_files(local / "INBOX")) == COUNT
    set_flag(server, "INBOX", "interop message 3", b"\\Flagged")
    out = run()
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    flagged = [f for f in maildir_files(local / "INBOX") if "F" in f.split(":2,")[-1]]
    assert len(flagged) >= 1


def test_fetchmail(server, tmp_path):
    fetchmail = need("fetchmail")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc = tmp_path / "fetchmailrc"
    rc.write_text(f"""set no syslog
poll 127.0.0.1 protocol IMAP port {server.ports['imap']}
  user "{USER}" password "{PASSWORD}" is "{os.environ.get('USER', 'root')}" here
  keep fetchall sslproto '' folder "INBOX"
  mda "/bin/sh -c 'cat > {out_dir}/$(date +%s%N)'"
""")
    rc.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path), FETCHMAILHOME=str(tmp_path))
    run = lambda *extra: subprocess.run([fetchmail, "-f", str(rc), "--nodetach", "-N", *extra],
                                        capture_output=True, timeout=120, env=env)
    out = run()
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    got = sorted(out_dir.iterdir())
    assert len(got) >= COUNT
    assert any(b"Subject: interop message 0" in p.read_bytes() for p in got)
    # Without fetchall, only unseen mail comes: mark one unseen on the server.
    rc.write_text(rc.read_text().replace("keep fetchall", "keep"))
    set_flag(server, "INBOX", "interop message 1", b"\\Seen", add=False)
    before = len(list(out_dir.iterdir()))
    out = run()
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()
    new = len(list(out_dir.iterdir())) - before
    assert new == 1


def test_neomutt(server, tmp_path):
    neomutt = need("neomutt")
    saved = tmp_path / "saved.mbox"
    rc = tmp_path / "muttrc"
    rc.write_text(f"""set imap_user = "{USER}"
set imap_pass = "{PASSWORD}"
set folder = "imap://127.0.0.1:{server.ports['imap']}/"
set spoolfile = "+INBOX"
set ssl_starttls = no
set ssl_force_tls = no
set mbox_type = mbox
set confirmappend = no
set confirmcreate = no
set header_cache = ""
set message_cachedir = ""
set imap_check_subscribed = no
set wait_key = no
set mark_old = no
""")
    keys = f"<tag-pattern>~A<enter><tag-prefix><copy-message>{saved}<enter><sync-mailbox><quit>"
    env = dict(os.environ, HOME=str(tmp_path), TERM="xterm")
    status = _run_in_pty([neomutt, "-n", "-F", str(rc), "-e", f"push '{keys}'"], env)
    assert saved.exists(), status
    text = saved.read_bytes()
    assert text.count(b"Subject: interop message") == COUNT
    # Flag a message with neomutt; the server must see it.
    keys = "<search>interop message 4<enter><flag-message><sync-mailbox><quit>"
    _run_in_pty([neomutt, "-n", "-F", str(rc), "-e", f"push '{keys}'"], env)
    c = imap(server)
    c.select_folder("INBOX", readonly=True)
    assert c.search(["FLAGGED", "SUBJECT", "interop message 4"])
    c.logout()


def _run_in_pty(argv, env, timeout=60):
    """Run a curses program on a pseudo-terminal until it exits; returns its screen output."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(argv[0], argv, env)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    os.close(fd)
    return out.decode(errors="replace")[-2000:]


IMAPFLOW_SCRIPT = r"""
const { ImapFlow } = require('imapflow');
const [port, user, pass, phase] = process.argv.slice(2);
(async () => {
  const client = new ImapFlow({host: '127.0.0.1', port: +port, secure: false, doSTARTTLS: false,
                               auth: {user, pass}, logger: false});
  await client.connect();
  const lock = await client.getMailboxLock('INBOX');
  const out = {messages: []};
  try {
    for await (const msg of client.fetch('1:*', {uid: true, flags: true, envelope: true, source: true})) {
      out.messages.push({uid: msg.uid, flags: [...msg.flags], subject: msg.envelope.subject,
                         size: msg.source.length});
    }
  } finally { lock.release(); }
  if (phase === 'idle') {
    const seen = new Promise(resolve => client.on('exists', d => resolve(d)));
    const idling = client.idle();
    console.log(JSON.stringify({ready: true}));
    const d = await Promise.race([seen, new Promise(r => setTimeout(() => r(null), 10000))]);
    out.exists = d && d.count;
  }
  await client.logout();
  console.log(JSON.stringify(out));
})().catch(err => { console.error(err); process.exit(1); });
"""


@pytest.fixture(scope="module")
def imapflow_dir(tmp_path_factory):
    need("node")
    npm = need("npm")
    d = tmp_path_factory.mktemp("imapflow")
    out = subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "imapflow@1"],
                         cwd=d, capture_output=True, timeout=300)
    if out.returncode != 0:
        pytest.skip("npm could not install imapflow: " + out.stderr.decode()[-300:])
    (d / "sync.js").write_text(IMAPFLOW_SCRIPT)
    return d


def test_imapflow(server, imapflow_dir):
    def run(phase="pull"):
        out = subprocess.run(["node", "sync.js", str(server.ports["imap"]), USER, PASSWORD, phase],
                             cwd=imapflow_dir, capture_output=True, timeout=60)
        assert out.returncode == 0, out.stderr.decode()
        return json.loads(out.stdout.decode().strip().splitlines()[-1])
    first = run()
    subjects = [m["subject"] for m in first["messages"]]
    assert sum(s.startswith("interop message") for s in subjects) == COUNT
    set_flag(server, "INBOX", "interop message 0", b"$Label1")
    again = run()
    flags = {m["subject"]: m["flags"] for m in again["messages"]}
    assert "$Label1" in flags["interop message 0"]


def test_imapflow_idle_sees_delivery(server, imapflow_dir):
    proc = subprocess.Popen(["node", "sync.js", str(server.ports["imap"]), USER, PASSWORD, "idle"],
                            cwd=imapflow_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert json.loads(proc.stdout.readline())["ready"]
        time.sleep(0.3)
        deliver(server, b"Subject: imapflow idle\r\n\r\nhi\r\n")
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["exists"] == len(result["messages"]) + 1
