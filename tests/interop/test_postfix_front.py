"""Postfix in front of Roost, with a real throwaway Postfix (the approach and
helpers of test_postfix.py: its own configuration and queue in a temp
directory, free loopback ports, ``postfix -c DIR stop`` at the end).

Postfix's submission smtpd logs clients in through Roost's auth listener
(``smtpd_sasl_type = dovecot``, ``smtpd_sasl_path = inet:...``), and both of
its smtpd services look domains, mailboxes, aliases and sender logins up in
Roost's socketmap; mail goes to Roost over LMTP. The socketmap is also asked
directly with ``postmap -q``, Postfix's own client. Skipped, with the reason,
when Postfix is not installed or cannot be started here.
"""

import os
import pwd
import grp
import importlib.resources
import shutil
import smtplib
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest

from roost.server.auth import hash_password
from roost.storage.store import Store
from tests.conftest import RoostServer, stored_messages, wait_for
from tests.interop.test_postfix import (MASTER_CF, POSTFIX, _alive, _listening, _log, _master_pid,
                                        free_port, instance_cf, postfix)
from tests.tls_helpers import write_cert

pytestmark = [pytest.mark.interop, pytest.mark.slow]

PASSWORD = "correct battery"
POSTMAP = shutil.which("postmap") or ("/usr/sbin/postmap" if os.path.exists("/usr/sbin/postmap")
                                       else None)

# The base of the instance (as test_postfix.py's). The MX-facing smtpd serves
# strangers: mynetworks names no loopback address, so the test client is one.
# Everything about Roost comes from conf/postfix-main.cf and the submission
# entries of conf/postfix-master.cf, as shipped (``conf_main``, ``conf_master``).
MAIN_CF = instance_cf("""\
mynetworks = 192.0.2.1/32
""") + """\
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
"""
TLSMGR = "tlsmgr unix - - n 1000? 1 tlsmgr\n"
# The example ports of conf/postfix-main.cf.
EXAMPLE_PORTS = {"lmtp": 2424, "auth": 2425, "socketmap": 2426}


def conf_text(name):
    return (importlib.resources.files("roost.conf") / name).read_text()


def conf_main(ports):
    """conf/postfix-main.cf's settings (comments dropped), with Roost's real
    ports for the example ones; the TLS files are the test's own."""
    out = []
    for line in conf_text("postfix-main.cf").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, value = (part.strip() for part in line.partition("="))
        if name in ("smtpd_tls_cert_file", "smtpd_tls_key_file"):
            continue
        for listener, port in EXAMPLE_PORTS.items():
            value = value.replace(f"127.0.0.1:{port}", f"127.0.0.1:{ports[listener]}")
        out.append(f"{name} = {value}")
    return "\n".join(out) + "\n"


def conf_master(addresses):
    """conf/postfix-master.cf's entries, each on the loopback address given
    for its service name and without a chroot (the instance has none)."""
    out = []
    for line in conf_text("postfix-master.cf").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if not line[0].isspace():
            service = line.split()[0]
            line = f"{addresses[service]} inet n - n - - smtpd"
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.fixture
def roost_data(tmp_path):
    data = tmp_path / "data"
    store = Store.open(str(data))
    for user in ("a@example.org", "b@example.org"):
        store.add_account(user, hash_password(PASSWORD))
    store.add_alias("sales@example.org", "a@example.org")
    store.add_alias("sales@example.org", "b@example.org")
    store.close()
    return data


@pytest.fixture
def front(roost_data):
    """``(mx port, (submission port, submissions port), config dir, roost server)``."""
    if POSTFIX is None:
        pytest.skip("Postfix is not installed (Debian package postfix)")
    try:
        pwd.getpwnam("postfix")
        grp.getgrnam("postdrop")
    except KeyError:
        pytest.skip("the postfix user or postdrop group is missing")
    if os.geteuid() != 0:
        pytest.skip("starting a private Postfix instance needs root")
    server = RoostServer(roost_data, listeners=("lmtp", "auth", "socketmap")).start()
    confdir = tempfile.mkdtemp(prefix="roost-postfix-front-")
    os.chmod(confdir, 0o755)   # Postfix daemons run as the postfix user
    cert, key = write_cert(Path(confdir) / "tls", names=("mx.postfix.test",))
    mx, sub, subs = free_port(), free_port(), free_port()
    with open(os.path.join(confdir, "main.cf"), "w") as f:
        f.write(MAIN_CF.format(dir=confdir, cert=cert, key=key) + conf_main(server.ports))
    with open(os.path.join(confdir, "master.cf"), "w") as f:
        f.write(MASTER_CF.format(port=f"127.0.0.1:{mx}") + TLSMGR + conf_master(
            {"submission": f"127.0.0.1:{sub}", "submissions": f"127.0.0.1:{subs}"}))
    os.makedirs(os.path.join(confdir, "queue"))
    os.makedirs(os.path.join(confdir, "data"))
    os.chown(os.path.join(confdir, "data"), pwd.getpwnam("postfix").pw_uid, -1)
    started = False
    try:
        start = postfix(confdir, "start", check=False)
        if start.returncode != 0:
            raise RuntimeError(postfix(confdir, "check", check=False).stderr.decode() +
                               start.stderr.decode() + _log(confdir))
        started = True
        if not wait_for(lambda: all(map(_listening, (mx, sub, subs))), timeout=20):
            raise RuntimeError("Postfix smtpd did not come up:\n" + _log(confdir))
        yield mx, (sub, subs), confdir, server
    finally:
        if started:
            master = _master_pid(confdir)
            postfix(confdir, "stop", check=False)
            if master:
                wait_for(lambda: not _alive(master), timeout=20)
        server.stop()
        shutil.rmtree(confdir, ignore_errors=True)


def _no_verify():
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def submission(port):
    """A client on the submission service, after STARTTLS."""
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=20)
    smtp.ehlo("client.test")
    assert not smtp.has_extn("auth"), "AUTH offered before TLS"
    smtp.starttls(context=_no_verify())
    smtp.ehlo("client.test")
    return smtp


def message(sender, to, tag):
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@client.test>\r\n\r\nbody of {tag}\r\n").encode()


def test_submission_authenticates_through_roost(front, roost_data):
    _mx, (sub, subs), confdir, server = front
    with submission(sub) as smtp:
        assert set(smtp.esmtp_features["auth"].upper().split()) == {"PLAIN", "LOGIN"}
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.login("a@example.org", "wrong")
        assert refused.value.smtp_code == 535, refused.value
    with submission(sub) as smtp:
        code, reply = smtp.login("A@Example.org", PASSWORD)      # AUTH PLAIN
        assert code == 235, reply
        # Sending as the account itself and as an alias it receives is allowed;
        # as another account's address it is not (reject_sender_login_mismatch).
        assert smtp.mail("b@example.org")[0] == 250
        code, reply = smtp.rcpt("b@example.org")
        assert code == 553 and b"not owned by user a@example.org" in reply, reply
        smtp.rset()
        assert smtp.mail("sales@example.org")[0] == 250
        assert smtp.rcpt("b@example.org")[0] == 250
        smtp.rset()
        assert smtp.sendmail("a@example.org", ["b@example.org"],
                             message("a@example.org", "b@example.org", "sub-1")) == {}
    with smtplib.SMTP_SSL("127.0.0.1", subs, timeout=20, context=_no_verify()) as smtp:
        smtp.ehlo("client.test")      # submissions: implicit TLS, AUTH LOGIN
        smtp.user, smtp.password = "b@example.org", PASSWORD
        assert smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)[0] == 235

    got = wait_for(lambda: stored_messages(roost_data, "b@example.org"), timeout=20)
    assert got and b"<sub-1@client.test>" in got[0], _log(confdir)
    assert got[0].startswith(b"Return-Path: <a@example.org>\r\n")
    log = "".join(server.output)
    assert "proto=auth" in log and "outcome=failed" in log and "outcome=ok" in log


def test_mx_rejects_unknown_recipients_at_rcpt_and_expands_aliases(front, roost_data):
    mx, _sub, confdir, _server = front
    with smtplib.SMTP("127.0.0.1", mx, timeout=20) as smtp:
        smtp.ehlo("stranger.test")
        assert smtp.mail("someone@stranger.test")[0] == 250
        code, reply = smtp.rcpt("nobody@example.org")
        assert code == 550 and b"5.1.1" in reply and b"User unknown" in reply, reply
        code, reply = smtp.rcpt("someone@elsewhere.test")       # not a Roost domain: no relay
        assert code == 554 and b"Relay access denied" in reply, reply
        assert smtp.rcpt("sales@example.org")[0] == 250          # an alias (a and b)
        assert smtp.rcpt("a+lists@example.org")[0] == 250        # +detail of an account
        code, reply = smtp.data(message("someone@stranger.test", "sales@example.org", "mx-1"))
        assert code == 250, reply

    def arrived():
        return all(stored_messages(roost_data, who) for who in ("a@example.org", "b@example.org"))
    assert wait_for(arrived, timeout=20), _log(confdir)
    a_copies = stored_messages(roost_data, "a@example.org")
    assert any(b"<mx-1@client.test>" in m for m in a_copies)
    assert b"<mx-1@client.test>" in stored_messages(roost_data, "b@example.org")[0]


def test_postmap_queries_every_map(front):
    _mx, _sub, confdir, server = front
    if POSTMAP is None:
        pytest.skip("postmap is not installed (Debian package postfix)")
    port = server.ports["socketmap"]

    def query(name, key):
        proc = subprocess.run([POSTMAP, "-c", confdir, "-q", key,
                               f"socketmap:inet:127.0.0.1:{port}:{name}"],
                              capture_output=True, timeout=20)
        return proc.returncode, proc.stdout.decode().strip()
    assert query("domain", "example.org") == (0, "example.org")
    assert query("mailbox", "sales@example.org") == (0, "a@example.org,b@example.org")
    assert query("alias", "sales@example.org") == (0, "a@example.org,b@example.org")
    assert query("sender", "a@example.org") == (0, "a@example.org")
    for name in ("domain", "mailbox", "alias", "sender"):
        assert query(name, "nobody@nowhere.test")[0] == 1     # NOTFOUND
