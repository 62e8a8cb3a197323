"""Postfix -> Roost over LMTP, with a throwaway Postfix instance.

The instance has its own configuration, queue and data directories in a temp
directory (``postfix -c DIR start``), listens for SMTP on a free loopback
port, treats ``example.org`` as a virtual mailbox domain and hands its mail to
Roost with ``virtual_transport = lmtp:inet:127.0.0.1:PORT``. Skipped, with
the reason, when Postfix is not installed or cannot be started here.
"""

import os
import pwd
import grp
import shutil
import smtplib
import socket
import subprocess
import tempfile

import pytest

from roost.storage.store import Store
from tests.conftest import RoostServer, add_user, stored_messages, wait_for

pytestmark = [pytest.mark.interop, pytest.mark.slow]

POSTFIX = shutil.which("postfix") or ("/usr/sbin/postfix" if os.path.exists("/usr/sbin/postfix") else None)

MASTER_CF = """\
{port} inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
lmtp unix - - n - - lmtp
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
"""

# What every throwaway instance has; ``instance_cf(lines)`` puts a test's own
# settings in the middle.
INSTANCE_HEAD = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.postfix.test
mydomain = postfix.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relayhost =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
"""
INSTANCE_TAIL = """\
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
queue_run_delay = 2s
minimal_backoff_time = 2s
maximal_backoff_time = 4s
biff = no
smtputf8_enable = yes
"""


def instance_cf(lines):
    return INSTANCE_HEAD + lines + INSTANCE_TAIL


MAIN_CF = instance_cf("""\
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
virtual_mailbox_domains = example.org
virtual_transport = lmtp:inet:127.0.0.1:{lmtp}
""")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postfix(confdir, *args, check=True):
    proc = subprocess.run([POSTFIX, "-c", confdir, *args], capture_output=True, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(f"postfix {' '.join(args)} exited {proc.returncode}: "
                           f"{proc.stdout.decode()}{proc.stderr.decode()}{_log(confdir)}")
    return proc


@pytest.fixture
def roost_data(tmp_path):
    data = tmp_path / "data"
    for user in ("a@example.org", "b@example.org", "sender@example.org"):
        add_user(data, user)
    store = Store.open(str(data))
    store.create_mailbox(store.account("a@example.org").id, "Lists")
    store.close()
    return data


@pytest.fixture
def postfix_instance(roost_data):
    """``(smtp port, config dir, roost server)`` of a running Postfix + Roost."""
    if POSTFIX is None:
        pytest.skip("Postfix is not installed (Debian package postfix)")
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        pytest.skip("the postfix user or postdrop group is missing")
    if os.geteuid() != 0:
        pytest.skip("starting a private Postfix instance needs root")
    server = RoostServer(roost_data).start()
    confdir = tempfile.mkdtemp(prefix="roost-postfix-")
    os.chmod(confdir, 0o755)   # Postfix daemons run as the postfix user
    smtp_port = free_port()
    with open(os.path.join(confdir, "main.cf"), "w") as f:
        f.write(MAIN_CF.format(dir=confdir, lmtp=server.ports["lmtp"]))
    with open(os.path.join(confdir, "master.cf"), "w") as f:
        f.write(MASTER_CF.format(port=f"127.0.0.1:{smtp_port}"))
    os.makedirs(os.path.join(confdir, "queue"))
    os.makedirs(os.path.join(confdir, "data"))
    os.chown(os.path.join(confdir, "data"), pwd.getpwnam("postfix").pw_uid, -1)
    started = False
    try:
        start = postfix(confdir, "start", check=False)
        if start.returncode != 0:   # say why: "postfix check" names the problem
            raise RuntimeError(postfix(confdir, "check", check=False).stderr.decode() +
                               start.stderr.decode() + _log(confdir))
        started = True
        if not wait_for(lambda: _listening(smtp_port), timeout=20):
            raise RuntimeError("Postfix smtpd did not come up:\n" + _log(confdir))
        yield smtp_port, confdir, server
    finally:
        if started:
            master = _master_pid(confdir)
            postfix(confdir, "stop", check=False)
            if master:
                wait_for(lambda: not _alive(master), timeout=20)
        server.stop()
        shutil.rmtree(confdir, ignore_errors=True)


def _master_pid(confdir):
    try:
        with open(os.path.join(confdir, "queue", "pid", "master.pid")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _listening(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _log(confdir):
    try:
        with open(os.path.join(confdir, "maillog"), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def test_postfix_delivers_to_roost_over_lmtp(postfix_instance, roost_data):
    port, confdir, _server = postfix_instance
    body = (b"From: sender@example.org\r\nTo: a@example.org, b@example.org\r\n"
            b"Subject: through postfix\r\nMessage-ID: <pf-1@postfix.test>\r\n\r\n"
            b"Hello through Postfix.\r\n.leading dot line\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        refused = smtp.sendmail("sender@example.org",
                                ["a@example.org", "b@example.org", "a+lists@example.org",
                                 "nobody@example.org"], body)
    assert refused == {}   # Postfix queues everything; Roost decides at RCPT

    def arrived():
        return (stored_messages(roost_data, "a@example.org")
                and stored_messages(roost_data, "b@example.org")
                and stored_messages(roost_data, "a@example.org", "Lists"))
    assert wait_for(arrived, timeout=60), _log(confdir)

    for address, mailbox in (("a@example.org", "INBOX"), ("b@example.org", "INBOX"),
                             ("a@example.org", "Lists")):
        (got,) = stored_messages(roost_data, address, mailbox)
        assert got.startswith(b"Return-Path: <sender@example.org>\r\n")
        assert b"<pf-1@postfix.test>" in got
        assert got.endswith(b"Hello through Postfix.\r\n.leading dot line\r\n")

    # The unknown recipient is bounced by Postfix on Roost's 550 5.1.1, and the
    # bounce (null sender) comes back to the sender's Roost mailbox.
    def bounced():
        log = _log(confdir)
        return "to=<nobody@example.org>" in log and "status=bounced" in log and log
    log = wait_for(bounced, timeout=60)
    assert log, _log(confdir)
    line = next(ln for ln in log.splitlines() if "to=<nobody@example.org>" in ln)
    assert "status=bounced" in line and "550 5.1.1" in line
    delivered = [ln for ln in log.splitlines() if "status=sent" in ln and "lmtp" in ln]
    assert len(delivered) >= 3

    notices = wait_for(lambda: stored_messages(roost_data, "sender@example.org"), timeout=60)
    assert notices, _log(confdir)
    assert notices[0].startswith(b"Return-Path: <>\r\nDelivered-To: sender@example.org\r\n")
    assert b"nobody@example.org" in notices[0]


def test_postfix_defers_on_temporary_failure(postfix_instance, roost_data):
    """Roost down: Postfix keeps the message queued (deferred) and delivers it
    once Roost is back on the same port."""
    port, confdir, server = postfix_instance
    lmtp_port = server.ports["lmtp"]
    server.stop()
    body = b"Subject: later\r\nMessage-ID: <pf-2@postfix.test>\r\n\r\nretry me\r\n"
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.sendmail("sender@example.org", ["b@example.org"], body)
    assert wait_for(lambda: "status=deferred" in _log(confdir), timeout=60), _log(confdir)
    queue = subprocess.run(["postqueue", "-c", confdir, "-p"], capture_output=True, timeout=30)
    assert b"b@example.org" in queue.stdout

    again = RoostServer(roost_data, listeners={"lmtp": f"127.0.0.1:{lmtp_port}"})
    again.start()
    try:
        postfix(confdir, "flush", check=False)
        got = wait_for(lambda: stored_messages(roost_data, "b@example.org"), timeout=60)
        assert got and got[0].endswith(b"retry me\r\n"), _log(confdir)
    finally:
        again.stop()
