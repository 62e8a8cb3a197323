"""QUOTA (RFC 9208) against a real ``roost serve``: transcripts of GETQUOTA,
GETQUOTAROOT and SETQUOTA, limits set with ``roost user quota`` while the
server runs, ``[OVERQUOTA]`` at APPEND and COPY (not MOVE), 552 5.2.2 at
LMTP delivery, STATUS DELETED and DELETED-STORAGE."""

import smtplib

import pytest

from tests.conftest import roost
from tests.imap_helpers import Wire, _close_connections, close_all, start_server  # noqa: F401 - fixture

USER, PASSWORD = "quota@example.org", "pw"
FREE = "free@example.org"


def message(n, body=b"hello\r\n"):
    return b"From: a@example.org\r\nSubject: m%d\r\nMessage-ID: <q%d@example.org>\r\n\r\n" % (n, n) + body


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("quota")
    srv = start_server(data, users=((USER, PASSWORD), (FREE, PASSWORD)))
    srv.data_dir = data
    yield srv
    close_all()
    srv.stop()


def ok(lines):
    assert lines[-1].split(b" ")[1] == b"OK", lines
    return lines[:-1]


def append(w, tag, box, data):
    w.send(f"{tag} APPEND {box} {{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    return w.until(tag)


def set_limits(server, *args, address=USER):
    return roost(server.data_dir, "user", "quota", address, *args).stdout.decode()


def login(server, user=USER):
    w = Wire(server.ports["imap"])
    w.login(user, PASSWORD)
    return w


def test_capabilities(server):
    w = login(server, FREE)
    caps = ok(w.cmd("c1 CAPABILITY"))[0].split()
    for cap in (b"QUOTA", b"QUOTA=RES-STORAGE", b"QUOTA=RES-MESSAGE"):
        assert cap in caps
    assert b"QUOTASET" not in caps


def test_unlimited_account_and_errors(server):
    w = login(server, FREE)
    assert ok(w.cmd("g1 GETQUOTAROOT INBOX")) == [b'* QUOTAROOT INBOX ""', b'* QUOTA "" ()']
    # The mailbox need not exist (RFC 9208 4.1.2).
    assert ok(w.cmd('g2 GETQUOTAROOT "Not there"')) == [b'* QUOTAROOT "Not there" ""',
                                                          b'* QUOTA "" ()']
    assert ok(w.cmd('g3 GETQUOTA ""')) == [b'* QUOTA "" ()']
    assert w.cmd('g4 GETQUOTA "#user/other"') == [b"g4 NO [NONEXISTENT] no such quota root"]
    assert w.cmd('s1 SETQUOTA "" (STORAGE 512)')[-1].startswith(b"s1 NO [NOPERM]")
    for bad in ('s2 SETQUOTA "" STORAGE', 's3 SETQUOTA "" (STORAGE)', 's4 SETQUOTA "" (STORAGE x)',
                "s5 GETQUOTA", "s6 GETQUOTAROOT", 's7 SETQUOTA "" ((STORAGE) 1)'):
        tag = bad.split()[0]
        assert w.cmd(bad)[-1].startswith(tag.encode() + b" BAD"), bad
    w.cmd("x1 LOGOUT")
    w = Wire(server.ports["imap"])
    assert w.cmd('n1 GETQUOTA ""')[-1].startswith(b"n1 BAD")     # not before login
    # A modified UTF-7 name comes back as sent.
    w = login(server, FREE)
    assert ok(w.cmd("g5 GETQUOTAROOT &AOk-t&AOk-"))[0] == b'* QUOTAROOT &AOk-t&AOk- ""'


def test_message_limit_append_copy_move_and_lmtp(server):
    out = set_limits(server, "--messages", "3", "--storage", "none")
    assert out.strip() == f"{USER}\tstorage 0/none\tmessages 0/3"
    w = login(server)
    assert ok(w.cmd('q1 GETQUOTA ""')) == [b'* QUOTA "" (MESSAGE 0 3)']
    ok(w.cmd("q2 CREATE Other"))
    for n in (1, 2):
        ok(append(w, f"a{n}", "INBOX", message(n)))
    assert ok(w.cmd("q3 GETQUOTAROOT INBOX")) == [b'* QUOTAROOT INBOX ""', b'* QUOTA "" (MESSAGE 2 3)']
    ok(w.cmd("q4 SELECT INBOX"))
    # Two copies would make four messages: refused whole, nothing copied.
    assert w.cmd("q5 COPY 1:2 Other") == [b"q5 NO [OVERQUOTA] mailbox is full"]
    assert ok(w.cmd("q6 STATUS Other (MESSAGES)")) == [b"* STATUS Other (MESSAGES 0)"]
    # A move within the root adds nothing.
    ok(w.cmd("q7 MOVE 1:2 Other"))
    assert ok(w.cmd("q8 STATUS Other (MESSAGES)")) == [b"* STATUS Other (MESSAGES 2)"]
    ok(append(w, "a3", "INBOX", message(3)))
    lines = append(w, "a4", "INBOX", message(4))
    assert lines == [b"a4 NO [OVERQUOTA] mailbox is full"]
    # LMTP delivery over the limit: 552 5.2.2 (the message is refused, not lost silently).
    with smtplib.LMTP("127.0.0.1", server.ports["lmtp"]) as lmtp:
        with pytest.raises(smtplib.SMTPDataError) as err:
            lmtp.sendmail("s@example.net", [USER], message(5))
    assert err.value.smtp_code == 552 and b"5.2.2" in err.value.smtp_error
    assert ok(w.cmd('q9 GETQUOTA ""')) == [b'* QUOTA "" (MESSAGE 3 3)']
    # Raising the limit while the session is open takes effect at once.
    set_limits(server, "--messages", "none")
    assert ok(w.cmd('q10 GETQUOTA ""')) == [b'* QUOTA "" ()']
    ok(append(w, "a5", "INBOX", message(5)))


def test_storage_limit(server):
    user = "storage@example.org"
    roost(server.data_dir, "user", "add", user, "--password-stdin", input=b"pw\n")
    set_limits(server, "--storage", "3000", address=user)
    w = login(server, user)
    assert ok(w.cmd('s1 GETQUOTA ""')) == [b'* QUOTA "" (STORAGE 0 2)']
    first = message(1, b"x" * 1500 + b"\r\n")
    ok(append(w, "a1", "INBOX", first))
    assert ok(w.cmd('s2 GETQUOTA ""')) == [b'* QUOTA "" (STORAGE %d 2)' % -(-len(first) // 1024)]
    assert append(w, "a2", "INBOX", message(2, b"y" * 1500 + b"\r\n")) == \
        [b"a2 NO [OVERQUOTA] mailbox is full"]
    # A copy is a hard link: it costs no storage, so it is not refused.
    ok(w.cmd("s3 SELECT INBOX"))
    ok(w.cmd("s4 CREATE Kept"))
    ok(w.cmd("s5 COPY 1 Kept"))
    assert ok(w.cmd('s6 GETQUOTA ""')) == [b'* QUOTA "" (STORAGE %d 2)' % -(-len(first) // 1024)]
    out = set_limits(server, "--storage", "none", address=user)
    assert out.strip() == f"{user}\tstorage {len(first)}/none\tmessages 2/none"


def test_status_deleted_storage(server):
    user = "status@example.org"
    roost(server.data_dir, "user", "add", user, "--password-stdin", input=b"pw\n")
    w = login(server, user)
    big = message(1, b"z" * 5000 + b"\r\n")
    ok(append(w, "a1", "INBOX", big))
    ok(append(w, "a2", "INBOX", message(2)))
    ok(w.cmd("t1 SELECT INBOX"))
    ok(w.cmd("t2 STORE 1 +FLAGS.SILENT (\\Deleted)"))
    ok(w.cmd("t3 CREATE B"))
    ok(w.cmd("t4 CREATE C"))
    assert ok(w.cmd("t5 STATUS INBOX (MESSAGES DELETED DELETED-STORAGE)")) == \
        [b"* STATUS INBOX (MESSAGES 2 DELETED 1 DELETED-STORAGE %d)" % -(-len(big) // 1024)]
    # Also in another mailbox, its file stays after an EXPUNGE here: nothing to free.
    ok(w.cmd("t6 COPY 1 B"))
    assert ok(w.cmd("t7 STATUS INBOX (DELETED DELETED-STORAGE)")) == \
        [b"* STATUS INBOX (DELETED 1 DELETED-STORAGE 0)"]
    assert ok(w.cmd("t8 STATUS C (DELETED DELETED-STORAGE)")) == [b"* STATUS C (DELETED 0 DELETED-STORAGE 0)"]


def test_cli_rejects_bad_limits(server):
    proc = roost(server.data_dir, "user", "quota", USER, "--storage", "-5", check=False)
    assert proc.returncode == 2 and b"not a number" in proc.stderr
    proc = roost(server.data_dir, "user", "quota", "nobody@example.org", "--messages", "1", check=False)
    assert proc.returncode != 0 and b"AccountNotFound" in proc.stderr
    out = roost(server.data_dir, "user", "quota", FREE).stdout.decode()   # just shows
    assert out.startswith(f"{FREE}\tstorage ") and out.strip().endswith("messages 0/none")


def test_imapclient(server):
    """IMAPClient's get_quota_root/get_quota read what Roost sends; its
    set_quota gets the refusal."""
    from imapclient import IMAPClient
    from imapclient.exceptions import IMAPClientError
    user = "client@example.org"
    roost(server.data_dir, "user", "add", user, "--password-stdin", input=b"pw\n")
    set_limits(server, "--storage", "10240", "--messages", "10", address=user)
    c = IMAPClient("127.0.0.1", port=server.ports["imap"], ssl=False, timeout=20)
    c.login(user, PASSWORD)
    try:
        c.append("INBOX", message(1, b"x" * 1900 + b"\r\n"))    # under 2 KiB
        roots, quotas = c.get_quota_root("INBOX")
        assert roots.mailbox == "INBOX" and roots.quota_roots == [""]
        assert {(q.quota_root, q.resource, q.usage, q.limit) for q in quotas} == \
            {("", "STORAGE", 2, 10), ("", "MESSAGE", 1, 10)}
        assert {(q.resource, q.usage) for q in c.get_quota()} == {("STORAGE", 2), ("MESSAGE", 1)}
        with pytest.raises(IMAPClientError):
            c.set_quota([q for q in quotas if q.resource == "MESSAGE"])
    finally:
        c.logout()
