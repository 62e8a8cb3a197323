"""Mail submission (protocols.smtp.submission) against a real ``roost serve``:
smtplib as Thunderbird uses it (STARTTLS, AUTH PLAIN, the server's
certificate trusted), implicit TLS, AUTH LOGIN, XOAUTH2 and OAUTHBEARER
with an app token, penalties shared with IMAP, the sender rules, what is
added to a message, DSN / FUTURERELEASE / REQUIRETLS parameters as the
queue rows show them, recipients refused at RCPT, rate limits, size, the
Sent copy, per-address connection limits, and kill -9 right after the 250.

The servers send remote mail through a smarthost on a closed loopback port,
so nothing leaves the machine: remote recipients stay queued (or deferred).
"""

import base64
import contextlib
import json
import pathlib
import signal
import smtplib
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET

import httpx
import pytest

from roost.server import config as configmod
from roost.server.app import open_outbound
from roost.server.auth import hash_password
from roost.storage import account_data
from roost.storage import flags as flagbits
from roost.storage.delivery import Delivery
from roost.storage.outbound import Envelope, Recipient
from roost.storage.store import Store
from tests.conftest import LineClient, RoostServer, roost, stored_messages, wait_for
from tests.imap_helpers import Wire, close_all
from tests.malformed import MALFORMED
from tests.tls_helpers import write_cert

HOST = "mail.example.org"
ALICE, BOB = "alice@example.org", "bob@example.org"
PASSWORDS = {ALICE: "alice-pw", BOB: "bob-pw", "throttle@example.org": "right-pw",
             "tries@example.org": "right-pw", "limited@example.org": "pw",
             "daily@example.org": "pw", "rcpts@example.org": "pw", "kill@example.org": "pw"}


def closed_port():
    """A loopback port nothing listens on (the relay's smarthost: refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_data(tmp, accounts, config):
    data = tmp / "data"
    store = Store.open(str(data))
    for address in accounts:
        store.add_account(address, hash_password(PASSWORDS[address]))
    store.close()
    (tmp / "roost.toml").write_text(f'[server]\nhostname = "{HOST}"\n[relay]\n'
                                    f'smarthost = "127.0.0.1:{closed_port()}"\n' + config)
    return data, tmp / "roost.toml"


@pytest.fixture(scope="module")
def main(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("submission")
    data, conf = make_data(tmp, [ALICE, BOB, "throttle@example.org", "tries@example.org"],
                           "[auth]\nmax_login_delay = 1\n"
                           "[limits]\nunauthenticated_connections_per_ip = 50\n"
                           "[submission]\nmessages_per_minute = 1000\n")
    store = Store.open(str(data))
    store.add_alias("sales@example.org", ALICE)
    store.add_alias("@alice.test", ALICE)
    store.add_alias("team@example.org", ALICE)
    store.add_alias("team@example.org", BOB)
    alice = store.account(ALICE)
    account_data.save_identity(store, alice.id, None, "Alice", ALICE, {})
    account_data.save_identity(store, alice.id, None, "Alice elsewhere", "alice@identity.test", {})
    store.close()
    srv = RoostServer(data, listeners=("submission", "submissions", "imap", "jmap"),
                      config=conf).start()
    srv.data_dir = data
    yield srv
    close_all()
    srv.stop()
    assert_clean_log(srv)


def assert_clean_log(server):
    """No error of Roost's own (a traceback, an ERROR line) while the tests ran."""
    text = "".join(server.output)
    assert "Traceback" not in text and "level=error" not in text, text[-4000:]


def tls_context(server):
    """What Thunderbird does once the user accepted the certificate: trust it."""
    return ssl.create_default_context(cafile=str(server.data_dir / "keys" / "tls-cert.pem"))


def starttls_client(server, user=ALICE, source=None):
    s = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=20,
                     source_address=(source, 0) if source else None)
    s.ehlo("[192.168.1.20]")
    s.starttls(context=tls_context(server))
    s.ehlo("[192.168.1.20]")
    if user:
        s.login(user, PASSWORDS[user])
    return s


@contextlib.contextmanager
def queue_of(data):
    store = Store.open(str(data))
    delivery = Delivery(store)
    try:
        yield store, open_outbound(configmod.Config(data=str(data)), store, delivery)
    finally:
        delivery.close()
        store.close()


def queued(data, message_id):
    with queue_of(data) as (_store, q):
        return q.show(message_id)


def queue_id(reply):
    code, text = reply if isinstance(reply, tuple) else (None, reply)
    return int(text.decode().rsplit(" ", 1)[1])


def send(s, sender, rcpts, body, mail_options=(), rcpt_options=()):
    """MAIL, RCPT..., DATA by hand; returns the DATA reply (code, text)."""
    code, text = s.mail(sender, list(mail_options))
    assert code == 250, text
    for r in rcpts:
        code, text = s.rcpt(r, list(rcpt_options))
        assert code == 250, text
    return s.data(body)


def message(subject, sender=ALICE, to="carol@remote.test", extra=b""):
    return (f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n".encode() + extra +
            b"\r\nbody of " + subject.encode() + b"\r\n")


def by_subject(data, address, subject, mailbox="INBOX"):
    return [m for m in stored_messages(data, address, mailbox)
            if f"Subject: {subject}\r\n".encode() in m]


class Raw(LineClient):
    """A raw submission connection: ``cmd`` returns ``(code, lines)``."""

    def __init__(self, port, source=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20,
                                             source_address=(source, 0) if source else None)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def starttls(self, context, hostname=None):
        assert self.cmd("STARTTLS")[0] == 220
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname=hostname or "127.0.0.1")
        self.file = self.sock.makefile("rb")

    def auth_plain(self, user, password):
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        return self.cmd(f"AUTH PLAIN {token}")


# --- TLS and AUTH ---------------------------------------------------------------------

def test_thunderbird_style_starttls_plain_local_and_remote(main):
    raw = Raw(main.ports["submission"])
    assert raw.greeting[0] == 220 and raw.greeting[1][0].startswith(f"220 {HOST} ")
    code, lines = raw.cmd("EHLO [192.168.1.20]")
    caps = [line[4:] for line in lines]
    assert code == 250 and caps[0] == HOST
    for cap in ("PIPELINING", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "DSN", "STARTTLS",
                "SIZE 52428800"):
        assert cap in caps
    assert "REQUIRETLS" not in caps                     # not before TLS
    assert any(c.startswith("FUTURERELEASE 604800 ") for c in caps)
    raw.close()

    s = starttls_client(main)
    caps = s.esmtp_features
    assert "starttls" not in caps and "requiretls" in caps
    assert caps["auth"].split() == ["PLAIN", "LOGIN", "OAUTHBEARER", "XOAUTH2"]
    body = message("first", to=f"{BOB}, carol@remote.test", extra=b"Bcc: dave@remote.test\r\n")
    reply = send(s, ALICE, [BOB, "carol@remote.test", "dave@remote.test"], body)
    assert reply[0] == 250 and reply[1].startswith(b"2.0.0 queued as ")
    s.quit()
    data = main.data_dir
    # The local recipient has it at once, as sent: trace and ids prepended, no Bcc.
    (got,) = by_subject(data, BOB, "first")
    head = got.split(b"\r\n\r\n", 1)[0]
    assert got.startswith(b"Return-Path: <alice@example.org>\r\nDelivered-To: bob@example.org\r\n"
                          b"Received: by mail.example.org (Roost) with ESMTPSA id ")
    assert b"Bcc:" not in got and b"dave@remote.test" not in got
    assert b"192.168.1.20" not in got and b"127.0.0.1" not in got and b"alice-pw" not in got
    assert head.count(b"\r\nMessage-ID: <") == 1 and head.count(b"\r\nDate: ") == 1
    assert got.endswith(body.replace(b"Bcc: dave@remote.test\r\n", b""))   # else unchanged
    # The queue: one message, the remote recipients pending, the local one delivered.
    row = queued(data, queue_id(reply))
    assert row["sender"] == ALICE and row["kind"] == "mail" and row["spool"]
    states = {r["address"]: r["state"] for r in row["rcpts"]}
    assert states[BOB] == "delivered"
    assert states["carol@remote.test"] in ("queued", "deferred")
    assert states["dave@remote.test"] in ("queued", "deferred")
    # The Sent copy: seen, Bcc kept, no Received.
    store = Store.open(str(data))
    try:
        acct = store.account(ALICE)
        box = store.mailbox(acct.id, role="sent")
        (rec,) = [r for r, m in zip(store.records(box.id), stored_messages(data, ALICE, "Sent"))
                  if b"Subject: first\r\n" in m]
        assert rec.bits & flagbits.SEEN
    finally:
        store.close()
    (sent,) = by_subject(data, ALICE, "first", "Sent")
    assert b"Bcc: dave@remote.test\r\n" in sent and b"Received:" not in sent
    assert sent.endswith(body) and sent.startswith(b"Message-ID: <")


def test_implicit_tls_on_submissions(main):
    s = smtplib.SMTP_SSL("127.0.0.1", main.ports["submissions"], context=tls_context(main),
                         timeout=20)
    s.ehlo("client.example")
    assert "starttls" not in s.esmtp_features and "requiretls" in s.esmtp_features
    s.login(ALICE, PASSWORDS[ALICE])
    reply = send(s, ALICE, [BOB], message("over implicit tls", to=BOB),
                 mail_options=["REQUIRETLS"])
    assert reply[0] == 250
    s.quit()
    assert by_subject(main.data_dir, BOB, "over implicit tls")[0].count(b"with ESMTPSA id") == 1
    assert queued(main.data_dir, queue_id(reply))["requiretls"] is True


def test_auth_login_with_and_without_initial_response(main):
    ctx = tls_context(main)
    for initial in (False, True):
        raw = Raw(main.ports["submission"])
        raw.cmd("EHLO client")
        raw.starttls(ctx)
        raw.cmd("EHLO client")
        b64 = lambda text: base64.b64encode(text.encode()).decode()  # noqa: E731
        if initial:
            assert raw.cmd(f"AUTH LOGIN {b64(ALICE)}") == (334, ["334 UGFzc3dvcmQ6"])
        else:
            assert raw.cmd("AUTH LOGIN") == (334, ["334 VXNlcm5hbWU6"])     # "Username:"
            assert raw.cmd(b64(ALICE)) == (334, ["334 UGFzc3dvcmQ6"])        # "Password:"
        assert raw.cmd(b64(PASSWORDS[ALICE])) == (235, ["235 2.7.0 authentication successful"])
        assert raw.cmd("AUTH LOGIN")[1][0].startswith("503 5.5.1")
        raw.close()


def _oauth(mechanism, user, token):
    if mechanism == "XOAUTH2":
        return f"user={user}\x01auth=Bearer {token}\x01\x01"
    return f"n,a={user},\x01host={HOST}\x01port=587\x01auth=Bearer {token}\x01\x01"


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_oauth_mechanisms_with_an_app_token(main, mechanism):
    token = roost(main.data_dir, "token", "add", ALICE, f"mua-{mechanism}").stdout.decode().strip()
    assert token.startswith("rst_")
    s = starttls_client(main, user=None)
    code, text = s.auth(mechanism, lambda challenge=None: _oauth(mechanism, ALICE, token))
    assert (code, text) == (235, b"2.7.0 authentication successful")
    assert send(s, ALICE, [BOB], message(f"via {mechanism}", to=BOB))[0] == 250
    s.quit()
    # A wrong token, and a good one named for another user: the error challenge, then 535.
    for user, tok in ((ALICE, "rst_not-a-token"), (BOB, token)):
        raw = Raw(main.ports["submission"])
        raw.cmd("EHLO client")
        raw.starttls(tls_context(main))
        raw.cmd("EHLO client")
        initial = base64.b64encode(_oauth(mechanism, user, tok).encode()).decode()
        code, lines = raw.cmd(f"AUTH {mechanism} {initial}")
        assert code == 334
        status = json.loads(base64.b64decode(lines[0][4:]))
        assert status["status"] in ("invalid_token", "401") and status["schemes"] == "bearer"
        code, lines = raw.cmd("AQ==" if mechanism == "OAUTHBEARER" else "")
        assert code == 535 and lines[0].startswith("535 5.7.8")
        raw.close()


def test_app_token_as_the_password(main):
    token = roost(main.data_dir, "token", "add", ALICE, "as-password").stdout.decode().strip()
    s = starttls_client(main, user=None)
    s.login(ALICE, token)
    s.quit()
    s = starttls_client(main, user=None)
    with pytest.raises(smtplib.SMTPAuthenticationError):
        s.login(BOB, token)                              # alice's token is not bob's password
    s.close()


def test_failed_logins_penalised_together_with_imap(main):
    """Two wrong submission passwords pending from one address put the account's
    next attempt from there 2 s out (max_login_delay = 1): IMAP refuses it
    at once although its password is right."""
    user, source = "throttle@example.org", "127.0.0.21"
    results, connected = [], threading.Semaphore(0)
    w = Wire(main.ports["imap"], source=source)

    def wrong():
        s = starttls_client(main, user=None, source=source)
        connected.release()       # (TLS is slow on a loaded machine: not part of the timing)
        try:
            s.login(user, "wrong")
        except smtplib.SMTPAuthenticationError as exc:
            results.append(exc.smtp_code)
        s.close()
    threads = [threading.Thread(target=wrong) for _ in range(2)]
    for t in threads:
        t.start()
        assert connected.acquire(timeout=30)
        time.sleep(0.4)
    started = time.monotonic()
    reply = w.cmd(f"a1 LOGIN {user} {PASSWORDS[user]}")[-1]
    assert reply.startswith(b"a1 NO [UNAVAILABLE]"), reply
    assert time.monotonic() - started < 1.5
    w.close()
    for t in threads:
        t.join(20)
    assert results == [535, 535]
    # Paced, not locked out: once the delays passed the right password works.
    time.sleep(1.2)
    s = starttls_client(main, user=None, source=source)
    s.login(user, PASSWORDS[user])
    s.quit()


def test_connection_closed_after_three_failed_auths(main):
    raw = Raw(main.ports["submission"], source="127.0.0.22")
    raw.cmd("EHLO client")
    raw.starttls(tls_context(main))
    raw.cmd("EHLO client")
    for _ in range(3):
        code, lines = raw.auth_plain("tries@example.org", "wrong")
        assert code == 535 and lines == ["535 5.7.8 authentication credentials invalid"]
    with pytest.raises((ConnectionError, OSError)):
        raw.cmd("NOOP")
    raw.close()


def test_plain_authzid_of_another_user_refused(main):
    raw = Raw(main.ports["submission"])
    raw.cmd("EHLO client")
    raw.starttls(tls_context(main))
    raw.cmd("EHLO client")
    token = base64.b64encode(f"{BOB}\0{ALICE}\0{PASSWORDS[ALICE]}".encode()).decode()
    assert raw.cmd(f"AUTH PLAIN {token}")[0] == 535
    assert raw.cmd("AUTH PLAIN !!!")[1][0].startswith("501 5.5.2")
    assert raw.cmd("AUTH CRAM-MD5")[1][0].startswith("504 5.5.4")
    raw.close()


def test_loopback_without_tls_may_authenticate_like_imap(main):
    """As IMAP's LOGINDISABLED: cleartext AUTH only over loopback (this one)."""
    s = smtplib.SMTP("127.0.0.1", main.ports["submission"], timeout=20)
    s.ehlo("client")
    assert "auth" in s.esmtp_features and "requiretls" not in s.esmtp_features
    s.login(ALICE, PASSWORDS[ALICE])
    code, text = s.mail(ALICE, ["REQUIRETLS"])
    assert code == 530 and text.startswith(b"5.7.10")
    reply = send(s, ALICE, [BOB], message("cleartext loopback", to=BOB))
    assert reply[0] == 250
    s.quit()
    (got,) = by_subject(main.data_dir, BOB, "cleartext loopback")
    assert b"with ESMTPA id" in got                     # RFC 3848: authenticated, no TLS


def test_mail_without_auth_is_refused(main):
    raw = Raw(main.ports["submission"])
    raw.cmd("EHLO client")
    assert raw.cmd(f"MAIL FROM:<{ALICE}>") == (530, ["530 5.7.0 Authentication required"])
    assert raw.cmd(f"RCPT TO:<{BOB}>")[0] == 530
    assert raw.cmd("RCPT TO:<someone@remote.test>")[0] == 530
    assert raw.cmd("DATA")[0] == 530
    assert raw.cmd("QUIT") == (221, ["221 2.0.0 Bye"])
    raw.close()


# --- senders ----------------------------------------------------------------------------

def test_sender_mismatch_refused(main):
    s = starttls_client(main)
    for sender in (BOB, "mallory@example.org", "alice@other.test", "bob+x@example.org"):
        code, text = s.mail(sender)
        assert code == 553 and text.startswith(b"5.7.1"), (sender, text)
        s.rset()
    code, text = s.mail("")
    assert code == 553 and text.startswith(b"5.7.1")
    s.rset()
    before = len(by_subject(main.data_dir, BOB, "forged"))
    for header in (b"From: bob@example.org\r\n", b"From: Alice <alice@example.org>, bob@example.org\r\n",
                   b"From: alice@example.org\r\nSender: bob@example.org\r\n", b"",
                   b"From: undisclosed-recipients:;\r\n",
                   b"From: alice@example.org\r\nFrom: bob@example.org\r\n",
                   # parsers disagree on these: refused rather than guessed at
                   b"From: alice@example.org <bob@example.org>\r\n",
                   b"From: <alice@example.org>bob@example.org\r\n",
                   b"From: alice@example.org)<bob@example.org>\r\n",
                   b"From: alice@example.org\\,bob@example.org\r\n",
                   b"From: Alice <alice@example.org>,\r\n bob@example.org\r\n"):
        body = header + b"To: bob@example.org\r\nSubject: forged\r\n\r\nhi\r\n"
        code, text = send(s, ALICE, [BOB], body)
        assert code == 550 and text.startswith(b"5.7.1"), (header, text)
    s.quit()
    assert len(by_subject(main.data_dir, BOB, "forged")) == before == 0


def test_header_from_forms_clients_write_are_accepted(main):
    s = starttls_client(main)
    for header in (b"From: Alice <alice@example.org>", b'From: "Liddell, Alice" <alice@example.org>',
                   b"From: =?utf-8?q?Al=C3=AFce?= <alice@example.org>",
                   b"From: alice@example.org (Alice)", b"From:\r\n Alice\r\n <alice@example.org>",
                   b"FROM: alice@example.org\r\nSender: sales@example.org",
                   b"From: Alice <alice@example.org>, Sales <sales@example.org>\r\n"
                   b"Sender: alice@example.org"):
        body = header + b"\r\nTo: bob@example.org\r\nSubject: form\r\n\r\nhi\r\n"
        assert send(s, ALICE, [BOB], body)[0] == 250, header
    s.quit()


def test_alias_catch_all_identity_and_detail_senders_accepted(main):
    s = starttls_client(main)
    for sender, header in (("sales@example.org", b'"Sales" <sales@example.org>'),
                           ("anything@alice.test", b"anything@alice.test"),
                           ("alice@identity.test", b"Alice <alice@identity.test>"),
                           ("alice+lists@example.org", b"alice+lists@example.org"),
                           ("Alice@Example.ORG", b"ALICE@example.org"),
                           ("team@example.org", b"team@example.org")):
        body = b"From: " + header + b"\r\nTo: bob@example.org\r\nSubject: as " + \
            sender.encode() + b"\r\n\r\nhi\r\n"
        assert send(s, sender, [BOB], body)[0] == 250, sender
    s.quit()
    assert len(by_subject(main.data_dir, BOB, "as sales@example.org")) == 1


def test_message_id_and_date_added_only_when_missing(main):
    s = starttls_client(main)
    own = b"Message-ID: <own@example.org>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n"
    assert send(s, ALICE, [BOB], message("has ids", to=BOB, extra=own))[0] == 250
    assert send(s, ALICE, [BOB], message("no ids", to=BOB))[0] == 250
    s.quit()
    (has,) = by_subject(main.data_dir, BOB, "has ids")
    assert has.count(b"Message-ID:") == 1 and b"Message-ID: <own@example.org>" in has
    assert has.count(b"Date:") == 1
    (added,) = by_subject(main.data_dir, BOB, "no ids")
    head = added.split(b"\r\n\r\n")[0].split(b"\r\n")
    names = [h.split(b":")[0] for h in head if not h.startswith(b"\t")]
    assert names[:5] == [b"Return-Path", b"Delivered-To", b"Received", b"Message-ID", b"Date"]
    assert head[4].startswith(b"Message-ID: <") and head[4].endswith(b"@mail.example.org>")


# --- parameters ----------------------------------------------------------------------

def test_dsn_futurerelease_and_utf8_parameters_reach_the_queue(main):
    s = starttls_client(main)
    now = time.time()
    reply = send(s, ALICE, ["carol@remote.test", BOB], message("dsn params"),
                 mail_options=["RET=HDRS", "ENVID=QQ+2Bid+3D1", "HOLDFOR=3600", "BODY=8BITMIME"],
                 rcpt_options=["NOTIFY=SUCCESS,failure", "ORCPT=rfc822;carol+2Bx@remote.test"])
    assert reply[0] == 250
    row = queued(main.data_dir, queue_id(reply))
    assert row["ret"] == "HDRS" and row["envid"] == "QQ+id=1"
    assert now + 3590 < row["release_at"] < now + 3700
    rcpts = {r["address"]: r for r in row["rcpts"]}
    assert rcpts["carol@remote.test"]["notify"] == "SUCCESS,FAILURE"
    assert rcpts["carol@remote.test"]["orcpt"] == "rfc822;carol+x@remote.test"
    assert rcpts["carol@remote.test"]["state"] == "queued"      # held until its release
    assert rcpts[BOB]["state"] == "queued"                      # local too: not yet delivered
    assert not by_subject(main.data_dir, BOB, "dsn params")

    until = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now + 7200))
    reply = send(s, ALICE, ["erin@remote.test"], message("hold until"),
                 mail_options=[f"HOLDUNTIL={until}", "RET=FULL"], rcpt_options=["NOTIFY=NEVER"])
    row = queued(main.data_dir, queue_id(reply))
    assert abs(row["release_at"] - (int(now) + 7200)) < 2 and row["ret"] == "FULL"
    assert row["rcpts"][0]["notify"] == "NEVER"
    # A time already past: released at once.
    reply = send(s, ALICE, [BOB], message("hold until past", to=BOB),
                 mail_options=["HOLDUNTIL=2001-01-01T00:00:00Z"])
    assert reply[0] == 250 and by_subject(main.data_dir, BOB, "hold until past")

    body = "From: alice@example.org\r\nTo: jos\u00e9@remote.test\r\nSubject: utf8\r\n\r\n\u00e9\r\n"
    reply = send(s, ALICE, ["jos\u00e9@remote.test"], body.encode(), mail_options=["SMTPUTF8"])
    row = queued(main.data_dir, queue_id(reply))
    assert row["smtputf8"] is True and row["rcpts"][0]["address"] == "jos\u00e9@remote.test"
    s.quit()


@pytest.mark.parametrize("params, code, enhanced", [
    ("RET=FOO", 501, "5.5.4"), ("RET=FULL RET=HDRS", 501, "5.5.4"), ("ENVID=a+zz", 501, "5.5.4"),
    ("ENVID=" + "x" * 101, 501, "5.5.4"), ("ENVID=a=b", 501, "5.5.4"), ("ENVID", 501, "5.5.4"),
    ("HOLDFOR=604801", 501, "5.5.4"), ("HOLDFOR=-5", 501, "5.5.4"), ("HOLDFOR=soon", 501, "5.5.4"),
    ("HOLDFOR=10 HOLDUNTIL=2030-01-01T00:00:00Z", 501, "5.5.4"),
    ("HOLDUNTIL=2030-01-01", 501, "5.5.4"), ("HOLDUNTIL=2999-01-01T00:00:00Z", 501, "5.5.4"),
    ("BODY=BINARYMIME", 501, "5.5.4"), ("SMTPUTF8=yes", 501, "5.5.4"), ("SIZE=big", 501, "5.5.4"),
    ("SIZE=99999999999", 552, "5.3.4"), ("FROBNICATE=1", 555, "5.5.4"), ("-X=1", 501, "5.5.4"),
])
def test_bad_mail_parameters(main, params, code, enhanced):
    raw = Raw(main.ports["submission"])
    raw.cmd("EHLO client")
    assert raw.auth_plain(ALICE, PASSWORDS[ALICE])[0] == 235
    got, lines = raw.cmd(f"MAIL FROM:<{ALICE}> {params}")
    assert (got, lines[0][4:9]) == (code, enhanced), lines
    assert raw.cmd(f"MAIL FROM:<{ALICE}>")[0] == 250     # the refused MAIL left nothing behind
    raw.close()


@pytest.mark.parametrize("params, code", [
    ("NOTIFY=NEVER,SUCCESS", 501), ("NOTIFY=SOMETIMES", 501), ("NOTIFY=", 501),
    ("ORCPT=rfc822", 501), ("ORCPT=rfc822;a+0", 501), ("ORCPT=r@x;a@b", 501),
    ("NOTIFY=DELAY NOTIFY=DELAY", 501), ("XFORWARD=1", 555),
])
def test_bad_rcpt_parameters(main, params, code):
    raw = Raw(main.ports["submission"])
    raw.cmd("EHLO client")
    raw.auth_plain(ALICE, PASSWORDS[ALICE])
    assert raw.cmd(f"MAIL FROM:<{ALICE}>")[0] == 250
    got, lines = raw.cmd(f"RCPT TO:<carol@remote.test> {params}")
    assert got == code and lines[0][4:9] == "5.5.4", lines
    raw.close()


# --- recipients ----------------------------------------------------------------------

def test_suppressed_and_unknown_recipients_refused_at_rcpt(main):
    with queue_of(main.data_dir) as (_store, q):
        q.suppress("gone@remote.test", reason="550 5.1.1 mailbox unavailable")
    s = starttls_client(main)
    s.mail(ALICE)
    code, text = s.rcpt("Gone@remote.test")
    assert code == 550 and text.startswith(b"5.1.1") and b"550 5.1.1 mailbox unavailable" in text
    code, text = s.rcpt("nobody@example.org")
    assert code == 550 and text.startswith(b"5.1.1")
    code, text = s.rcpt("someone@[192.0.2.1]")
    assert code == 550
    assert s.rcpt("carol@remote.test")[0] == 250
    s.quit()


def test_control_characters_and_malformed_addresses_refused(main):
    raw = Raw(main.ports["submission"])
    raw.cmd("EHLO client")
    raw.auth_plain(ALICE, PASSWORDS[ALICE])
    raw.send(b"MAIL FROM:<alice@example.org\r>\r\n")
    assert raw.reply()[1][0].startswith("501 5.1.3")
    raw.send(b"MAIL FROM:<alice@example.org>\x00\r\n")
    assert raw.reply()[1][0].startswith("501 5.1.3")
    assert raw.cmd(f"MAIL FROM:<{ALICE}>")[0] == 250
    for bad in (b"<bob@example.org\rRCPT TO:<x@remote.test>>", b"<bo\x00b@example.org>",
                b"<bob@example.org\x0b>", b"<a@@b>", b"<a b@example.org>", b"<@example.org>",
                b"<bob@>", b"<bob@exa_mple.org>", b"<bob@example.org", b"<.bob@example.org>",
                b"<" + b"x" * 65 + b"@example.org>", b"<bob@example.org>junk", b"<>",
                "<jos\u00e9@example.org>".encode()):
        raw.send(b"RCPT TO:" + bad + b"\r\n")
        code, lines = raw.reply()
        assert code in (501, 553) and lines[0][4:9] in ("5.1.3", "5.6.7"), (bad, lines)
    raw.send(b"RCPT TO:<bad\xff\xfe@remote.test>\r\n")           # not UTF-8 (nor SMTPUTF8)
    assert raw.reply()[1][0].startswith("553 5.6.7")
    assert raw.cmd("RSET")[0] == 250
    assert raw.cmd(f"MAIL FROM:<{ALICE}> SMTPUTF8")[0] == 250
    raw.send(b"RCPT TO:<bad\xff\xfe@remote.test>\r\n")
    code, lines = raw.reply()
    assert lines == ["501 5.1.3 the address is not UTF-8"]
    raw.send("RCPT TO:<jos\u00e9@remote.test>\r\n".encode())
    assert raw.reply()[0] == 250
    assert raw.cmd("RCPT TO:<\"odd \\\" local\"@remote.test>")[0] == 250
    assert raw.cmd("DATA")[0] == 354
    raw.close()


def test_pipelined_transaction(main):
    """PIPELINING: the whole transaction in one write, the replies in order."""
    raw = Raw(main.ports["submission"])
    raw.cmd("EHLO client")
    raw.auth_plain(ALICE, PASSWORDS[ALICE])
    raw.send(f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{BOB}>\r\nRCPT TO:<nobody@example.org>\r\n"
             f"DATA\r\n".encode())
    assert [raw.reply()[0] for _ in range(4)] == [250, 250, 550, 354]
    raw.send(message("pipelined", to=BOB) + b"..leading dot\r\n.\r\nNOOP\r\n")
    assert raw.reply()[0] == 250 and raw.reply() == (250, ["250 2.0.0 OK"])
    raw.close()
    (got,) = by_subject(main.data_dir, BOB, "pipelined")
    assert got.endswith(b"\r\n.leading dot\r\n")


def test_malformed_messages_are_sent_and_stored(main):
    """The messages that once broke delivery (tests/malformed.py) pass
    submission's header checks and reach the local recipient whole."""
    s = starttls_client(main)
    for name, data in MALFORMED.items():
        data = data.replace(b"From: a@example.net\r\n", b"From: alice@example.org\r\n", 1)
        data = data.replace(b"\r\n", b"\r\nX-Case: " + name.encode() + b"\r\n", 1)
        code, text = send(s, ALICE, [BOB], data)
        assert code == 250, (name, text)
    s.quit()
    got = [m for m in stored_messages(main.data_dir, BOB) if b"\r\nX-Case: " in m]
    assert len(got) == len(MALFORMED)


def test_hostile_command_lines_get_errors_and_the_session_goes_on(main):
    raw = Raw(main.ports["submission"])
    raw.cmd("EHLO client")
    for line, code in ((b"X" * 20000, 500), (b"MAIL FROM:<" + b"a" * 3000 + b"@x.test>", 500),
                       (b"\xff\xfe", 500), (b"AUTH PLAIN " + b"A" * 15000, 501),
                       (b"AUTH", 501), (b"AUTH PLAIN a b c", 501), (b"BDAT 10 LAST", 500),
                       (b"VRFY alice@example.org", 530), (b"EXPN staff", 502)):
        raw.send(line + b"\r\n")
        got, lines = raw.reply()
        assert got == code, (line[:30], lines)
    assert raw.cmd("NOOP")[0] == 250
    assert raw.auth_plain(ALICE, PASSWORDS[ALICE])[0] == 235
    # a SASL continuation line over the limit ends the session
    assert raw.cmd("AUTH LOGIN")[0] == 503           # already authenticated
    raw.close()
    raw = Raw(main.ports["submission"])
    raw.cmd("EHLO client")
    assert raw.cmd("AUTH LOGIN")[0] == 334
    raw.send(b"A" * 20000 + b"\r\n")
    assert raw.reply()[1][0].startswith("500 5.5.6")
    assert raw.file.readline() == b""
    raw.close()


def test_autoconfig_describes_both_submission_listeners(main):
    with httpx.Client(base_url=f"http://127.0.0.1:{main.ports['jmap']}", timeout=20) as http:
        r = http.get("/mail/config-v1.1.xml", params={"emailaddress": ALICE})
    doc = ET.fromstring(r.content)
    assert [(s.findtext("port"), s.findtext("socketType")) for s in doc.iter("outgoingServer")] \
        == [(str(main.ports["submissions"]), "SSL"), (str(main.ports["submission"]), "STARTTLS")]


# --- a server that wants TLS even on loopback ------------------------------------------

def test_auth_before_starttls_refused(tmp_path):
    cert, key = write_cert(tmp_path / "certs", names=(HOST,))
    data, conf = make_data(tmp_path, [ALICE],
                           f'[tls]\ncert = "{cert}"\nkey = "{key}"\n'
                           "[submission]\nloopback_cleartext = false\n")
    srv = RoostServer(data, listeners=("submission",), config=conf).start()
    try:
        raw = Raw(srv.ports["submission"])
        code, lines = raw.cmd("EHLO client")
        assert code == 250 and "STARTTLS" in [x[4:] for x in lines]
        assert not any("AUTH" in x for x in lines)
        assert raw.auth_plain(ALICE, PASSWORDS[ALICE]) == \
            (530, ["530 5.7.0 Must issue a STARTTLS command first"])
        assert raw.cmd(f"MAIL FROM:<{ALICE}>")[1] == ["530 5.7.0 Must issue a STARTTLS command first"]
        assert raw.cmd("NOOP")[0] == 250
        ctx = ssl.create_default_context(cafile=cert)
        raw.starttls(ctx, hostname=HOST)                 # verified against the configured one
        code, lines = raw.cmd("EHLO client")
        assert "250-AUTH PLAIN LOGIN OAUTHBEARER XOAUTH2" in lines
        assert raw.auth_plain(ALICE, PASSWORDS[ALICE])[0] == 235
        assert raw.cmd("STARTTLS")[1][0].startswith("503 5.5.1")
        raw.close()
    finally:
        srv.stop()


def test_sighup_reloads_the_certificate_of_both_listeners(tmp_path):
    cert, key = write_cert(tmp_path / "live", names=(HOST,))
    data, conf = make_data(tmp_path, [ALICE], f'[tls]\ncert = "{cert}"\nkey = "{key}"\n')
    srv = RoostServer(data, listeners=("submission", "submissions"), config=conf).start()
    unverified = ssl._create_unverified_context()

    def implicit():
        with unverified.wrap_socket(socket.create_connection(
                ("127.0.0.1", srv.ports["submissions"]), timeout=10)) as sock:
            return sock.getpeercert(binary_form=True)

    def starttls():
        raw = Raw(srv.ports["submission"])
        raw.cmd("EHLO client")
        raw.starttls(unverified)
        try:
            return raw.sock.getpeercert(binary_form=True)
        finally:
            raw.close()
    try:
        first = implicit()
        assert starttls() == first
        new_cert, new_key = write_cert(tmp_path / "renewed", names=(HOST,))
        for old, new in ((cert, new_cert), (key, new_key)):
            with open(new, "rb") as src, open(old, "wb") as dst:
                dst.write(src.read())
        srv.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: any("TLS certificate reloaded" in line for line in srv.output),
                        timeout=10)
        second = implicit()
        assert second != first and starttls() == second
    finally:
        srv.stop()


def test_submission_settings_are_checked(tmp_path):
    example = configmod.load(str(pathlib.Path(__file__).parents[2] / "conf" / "roost.toml"))
    default = configmod.Config()
    for name in [n for n in vars(default) if n.startswith("submission_")]:
        assert getattr(example, name) == getattr(default, name), name
    conf = tmp_path / "roost.toml"
    for bad in ("save_sent = 1", "messages_per_day = -1", "messages_per_day = true",
                "no_such = 1", 'max_hold = "soon"'):
        conf.write_text(f"[submission]\n{bad}\n")
        with pytest.raises(ValueError):
            configmod.load(str(conf))
    conf.write_text("[submission]\nsave_sent = false\nmessages_per_minute = 0\nmax_hold = \"2d\"\n")
    cfg = configmod.load(str(conf))
    assert (cfg.submission_save_sent, cfg.submission_messages_per_minute,
            cfg.submission_max_hold) == (False, 0, "2d")


# --- limits ------------------------------------------------------------------------------

LIMITED = """
[limits]
max_message_size = 20000
unauthenticated_connections_per_ip = 3
unauthenticated_command_timeout = 2
[submission]
save_sent = false
messages_per_minute = 2
messages_per_hour = 50
messages_per_day = 4
recipients_per_message = 3
recipients_per_day = 100
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limited")
    data, conf = make_data(tmp, ["limited@example.org", "daily@example.org", "rcpts@example.org",
                                 BOB], LIMITED)
    srv = RoostServer(data, listeners=("submission",), config=conf).start()
    srv.data_dir = data
    yield srv
    srv.stop()
    assert_clean_log(srv)


def limited_client(server, user):
    s = smtplib.SMTP("127.0.0.1", server.ports["submission"], timeout=20)
    s.ehlo("client")
    s.login(user, PASSWORDS[user])
    return s


def history(data, user, messages, rcpts_each, age=7200):
    """Queue rows for ``user`` made ``age`` seconds ago (outside the minute
    and hour windows, inside the day)."""
    with queue_of(data) as (store, q):
        acct = store.account(user)
        past = time.time() - age
        q.clock = lambda: past
        for i in range(messages):
            q.submit(Envelope(user, [Recipient(f"old{i}.{n}@remote.test") for n in range(rcpts_each)],
                              account_id=acct.id), b"Subject: old\r\n\r\nold\r\n")


def test_rate_limit_per_minute_is_temporary(limited):
    s = limited_client(limited, "limited@example.org")
    for i in range(2):
        assert send(s, "limited@example.org", [BOB], message(f"rate {i}", "limited@example.org",
                                                             BOB))[0] == 250
    code, text = s.mail("limited@example.org")
    assert code == 450 and text.startswith(b"4.7.1") and b"per minute" in text
    s.quit()


def test_daily_message_limit_is_permanent(limited):
    history(limited.data_dir, "daily@example.org", 4, 1)
    s = limited_client(limited, "daily@example.org")
    code, text = s.mail("daily@example.org")
    assert code == 550 and text.startswith(b"5.7.1") and b"daily" in text
    s.quit()


def test_recipients_per_day(limited):
    history(limited.data_dir, "rcpts@example.org", 1, 98)
    s = limited_client(limited, "rcpts@example.org")
    assert s.mail("rcpts@example.org")[0] == 250
    assert s.rcpt("one@remote.test")[0] == 250
    assert s.rcpt("two@remote.test")[0] == 250
    code, text = s.rcpt("three@remote.test")              # 98 + 3 > 100 a day
    assert code == 550 and text.startswith(b"5.7.1")
    s.quit()


def test_recipients_per_message(limited):
    s = limited_client(limited, BOB)
    assert s.mail(BOB)[0] == 250
    for n in range(3):
        assert s.rcpt(f"r{n}@remote.test")[0] == 250
    code, text = s.rcpt("r3@remote.test")
    assert code == 452 and text.startswith(b"4.5.3")
    s.quit()


def test_oversized_message_refused_and_session_goes_on(limited):
    s = limited_client(limited, BOB)
    code, text = s.mail(BOB, ["SIZE=20001"])
    assert code == 552 and text.startswith(b"5.3.4")
    big = message("too big", BOB, BOB) + b"x" * 25000 + b"\r\n"
    code, text = send(s, BOB, [BOB], big)
    assert code == 552 and text.startswith(b"5.3.4")
    assert s.noop()[0] == 250
    assert send(s, BOB, [BOB], message("small after big", BOB, BOB))[0] == 250
    s.quit()
    data = limited.data_dir
    assert not by_subject(data, BOB, "too big") and by_subject(data, BOB, "small after big")
    assert stored_messages(data, BOB, "Sent") == []        # save_sent = false


def test_unauthenticated_connections_per_address_limited(limited):
    held = [Raw(limited.ports["submission"], source="127.0.0.31") for _ in range(3)]
    extra = Raw(limited.ports["submission"], source="127.0.0.31")
    assert extra.greeting[0] == 421 and extra.greeting[1][0].startswith("421 4.7.0")
    extra.close()
    other = Raw(limited.ports["submission"], source="127.0.0.32")   # another address: fine
    assert other.greeting[0] == 220
    other.close()
    # Logging in gives the slot back.
    held[0].cmd("EHLO client")
    assert held[0].auth_plain(BOB, PASSWORDS[BOB])[0] == 235
    again = wait_for(lambda: Raw(limited.ports["submission"], source="127.0.0.31"), timeout=5)
    assert again.greeting[0] == 220
    for c in held + [again]:
        c.close()


def test_idle_unauthenticated_connection_closed(limited):
    raw = Raw(limited.ports["submission"], source="127.0.0.33")
    raw.cmd("EHLO client")
    started = time.monotonic()
    assert raw.reply() == (421, ["421 4.4.2 idle too long; closing"])
    assert 1.5 < time.monotonic() - started < 10
    assert raw.file.readline() == b""
    raw.close()


def test_sigterm_says_421_to_open_sessions(tmp_path):
    data, conf = make_data(tmp_path, [ALICE], "")
    srv = RoostServer(data, listeners=("submission",), config=conf).start()
    try:
        raw = Raw(srv.ports["submission"])
        raw.cmd("EHLO client")
        assert raw.auth_plain(ALICE, PASSWORDS[ALICE])[0] == 235
        srv.proc.send_signal(signal.SIGTERM)
        assert raw.reply() == (421, ["421 4.3.2 the server is shutting down"])
        assert raw.file.readline() == b""
        raw.close()
        assert srv.proc.wait(30) == 0
    finally:
        srv.stop()
    assert_clean_log(srv)


# --- durability ------------------------------------------------------------------------

def test_kill_9_right_after_the_250_keeps_the_queued_message(tmp_path):
    data, conf = make_data(tmp_path, ["kill@example.org"], "")
    srv = RoostServer(data, listeners=("submission",), config=conf).start()
    try:
        s = smtplib.SMTP("127.0.0.1", srv.ports["submission"], timeout=20)
        s.ehlo("client")
        s.login("kill@example.org", "pw")
        body = message("survives", "kill@example.org", "far@remote.test")
        code, text = send(s, "kill@example.org", ["far@remote.test"], body,
                          mail_options=["ENVID=keep-me"])
        assert code == 250
        srv.kill()
        s.close()
    finally:
        srv.stop()
    mid = queue_id(text)
    srv = RoostServer(data, listeners=("submission",), config=conf).start()
    try:
        with queue_of(data) as (_store, q):
            row = q.show(mid)
            assert row["envid"] == "keep-me" and [r["address"] for r in row["rcpts"]] == \
                ["far@remote.test"]
            assert row["rcpts"][0]["state"] in ("queued", "deferred")
            assert [m["id"] for m in q.list()] == [mid]
            assert q.read(row["spool"]).endswith(body)
    finally:
        srv.stop()
