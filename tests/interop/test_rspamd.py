"""The rspamd client (protocols.mailauth.spam.Rspamd) against a real rspamd
(Debian package ``rspamd``), started for this module on loopback ports
with its data, run and log directories in a temporary directory, and
through the SMTP edge: the message stored carries rspamd's score."""

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

from roost.protocols.mailauth.spam import Rspamd, SpamFilter
from tests.dns_helpers import zone  # noqa: F401 - fixture

pytestmark = pytest.mark.interop

MESSAGE = (b"From: a@sender.test\r\nTo: b@example.org\r\nSubject: hello\r\n\r\n"
           b"A message with no Date and no Message-ID.\r\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory):
    if shutil.which("rspamd") is None:
        pytest.skip("rspamd is not installed (Debian package rspamd)")
    tmp = tmp_path_factory.mktemp("rspamd")
    local = tmp / "local.d"
    local.mkdir()
    port = free_port()
    for worker, p in (("normal", port), ("controller", free_port()), ("proxy", free_port())):
        (local / f"worker-{worker}.inc").write_text(f'bind_socket = "127.0.0.1:{p}";\ncount = 1;\n')
    (local / "logging.inc").write_text('type = "console";\nlevel = "error";\n')
    # No DNS from the test: a nameserver nothing answers on, with short timeouts.
    (local / "options.inc").write_text(f'dns {{ nameserver = ["127.0.0.1:{free_port()}"]; '
                                       'timeout = 0.5s; retransmits = 1; }\n')
    for sub in ("db", "run", "log"):
        (tmp / sub).mkdir()
    log = open(tmp / "out.log", "wb")
    proc = subprocess.Popen(
        ["rspamd", "-f", "-i", "-c", "/etc/rspamd/rspamd.conf", f"--var=LOCAL_CONFDIR={tmp}",
         f"--var=DBDIR={tmp / 'db'}", f"--var=RUNDIR={tmp / 'run'}",
         f"--var=LOGDIR={tmp / 'log'}", "-p", str(tmp / "run" / "rspamd.pid")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            Rspamd(url, timeout=5).scan(MESSAGE)
            break
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None:
                log.close()
                pytest.skip("rspamd exited: " + (tmp / "out.log").read_text()[-500:])
            time.sleep(0.5)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log.close()
        pytest.skip("rspamd did not answer within 120 s")
    yield url
    log.close()
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_checkv2_against_real_rspamd(rspamd):
    score, required, spam, symbols = Rspamd(rspamd, timeout=10).scan(
        MESSAGE, ip="192.0.2.1", helo="mx.sender.test", mail_from="a@sender.test",
        rcpts=("b@example.org",), hostname="mx.sender.test")
    assert "MISSING_MID" in symbols and "MISSING_DATE" in symbols
    assert score >= 3.0 and required > 0
    # spam: rspamd's action says so ("add header" comes well below required_score) or the score
    assert isinstance(spam, bool) and (spam or score < required)


def test_spam_filter_uses_rspamds_score(rspamd):
    headers, updates = SpamFilter(rspamd=rspamd, timeout=10).check(
        MESSAGE, {"remote_ip": "192.0.2.1", "helo": "mx.sender.test", "remote_host": ""})
    assert "MISSING_MID" in updates["spam_reasons"] and "NO_PTR" in updates["spam_reasons"]
    assert "SCANNER_UNAVAILABLE" not in updates["spam_reasons"]
    assert updates["spam_score"] >= 3.0
    assert b"X-Spam-Status: No" in headers or b"X-Spam-Status: Yes" in headers


def test_edge_with_rspamd(rspamd, tmp_path, zone):  # noqa: F811
    from tests.protocol.test_smtp_edge import ZONE, EdgeServer, send
    srv = EdgeServer(tmp_path, zone(ZONE).resolver(), spam=SpamFilter(rspamd=rspamd, timeout=10))
    try:
        with srv.smtp() as c:
            assert send(c, ["a@example.org"], MESSAGE)[1][0] == 250
        (stored,) = srv.inbox()
        assert b"tests=NO_PTR,NO_DATE,NO_MESSAGE_ID," in stored and b"MISSING_MID" in stored
    finally:
        srv.close()

