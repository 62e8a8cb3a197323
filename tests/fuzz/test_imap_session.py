"""Hypothesis against a live server: whatever a logged-in client sends, the
session answers (BAD/NO/OK, or BYE), no handler fails with [SERVERBUG], and
the next command on the connection still gets its tagged reply."""

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.imap_helpers import PASSWORD, USER, Wire, close_all, start_server

WORDS = ["FETCH", "UID", "STORE", "SEARCH", "COPY", "MOVE", "EXPUNGE", "LIST", "STATUS", "SELECT",
         "EXAMINE", "CREATE", "RENAME", "APPEND", "ENABLE", "IDLE", "1", "1:*", "*", "$", "2,4:5",
         "(", ")", '"', "\\Seen", "BODY[]", "BODY.PEEK[1.MIME]<0.5>", "BINARY[1]", "ENVELOPE",
         "BODYSTRUCTURE", "FLAGS", "+FLAGS", "RETURN", "(CHANGEDSINCE 1)", "OR", "NOT", "ALL",
         "INBOX", "Trash", "\"\"", "%", "UNCHANGEDSINCE", "MODSEQ", "QRESYNC", "CONDSTORE",
         "IMAP4rev2", "UTF8=ACCEPT", "HEADER.FIELDS", "SENTON", "1-Jan-2020", "~{1+}\r\nx",
         "{3+}\r\nabc", "NIL", "\u00e9", "THREADID", "T1", "SAVEDATE", "SAVEDBEFORE"]
# The extensions' commands: NOTIFY, MULTISEARCH, WITHIN, UIDONLY, UNAUTHENTICATE (COMPRESS is
# left out: after its OK the client must compress).
WORDS += ["NOTIFY", "SET", "NONE", "(SELECTED (MessageNew MessageExpunge))",
          "(PERSONAL (MessageNew MessageExpunge FlagChange MailboxName))", "SELECTED-DELAYED",
          "INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "SUBTREE-ONE", "MAILBOXES",
          "MessageNew", "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange",
          "(UID FLAGS)", "ESEARCH", "IN", "(PERSONAL)", "(MAILBOXES INBOX)",
          "(SUBTREE (INBOX Trash))", "(MIN MAX COUNT ALL)", "(SAVE)", "OLDER", "YOUNGER", "0",
          "4294967296", "UIDONLY", "UNAUTHENTICATE", "NOOP"]

line = st.lists(st.one_of(st.sampled_from(WORDS), st.text(alphabet="abc()[]<>.*%\\\" 01", max_size=6)),
                min_size=1, max_size=10).map(lambda ws: " ".join(ws))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("imapfuzz"), listeners=("imap",))
    w = Wire(srv.ports["imap"])
    w.login()
    for i in range(3):
        data = f"Subject: m{i}\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\npart\r\n--b--\r\n"
        w.cmd(f"a{i} APPEND INBOX {{{len(data)}+}}\r\n{data}")
    w.close()
    yield srv
    close_all()
    srv.stop()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(st.lists(line, min_size=1, max_size=4))
def test_random_commands_never_break_the_session(server, lines):
    w = Wire(server.ports["imap"], timeout=10)
    try:
        w.login(USER, PASSWORD)
        w.cmd("s0 SELECT INBOX")
        for i, text in enumerate(lines):
            w.send(f"f{i} {text}\r\n".encode("utf-8", "surrogateescape"))
        w.send(b"DONE\r\nzz NOOP\r\n")
        try:
            seen = w.until("zz")
        except (ConnectionError, socket.timeout):
            raise AssertionError(f"no reply to NOOP after {lines!r}") from None
        assert not any(b"[SERVERBUG]" in x for x in seen), seen
    finally:
        w.close()
    # The server is still there for everyone else.
    probe = Wire(server.ports["imap"], timeout=10)
    assert probe.cmd("p NOOP")[-1] == b"p OK NOOP completed"
    probe.close()
