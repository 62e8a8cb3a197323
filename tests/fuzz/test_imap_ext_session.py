"""Hypothesis against a live server, for the commands of NOTIFY, MULTISEARCH,
WITHIN, UIDONLY and UNAUTHENTICATE: whatever a logged-in client sends, no
handler fails with [SERVERBUG] and the next command still gets its reply.
(COMPRESS is left out: after its OK the client must compress.)"""

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.imap_helpers import PASSWORD, USER, Wire, close_all, start_server

WORDS = ["NOTIFY", "SET", "NONE", "STATUS", "(SELECTED (MessageNew MessageExpunge))",
         "(PERSONAL (MessageNew MessageExpunge FlagChange MailboxName))", "SELECTED-DELAYED",
         "INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE", "SUBTREE-ONE", "MAILBOXES", "MessageNew",
         "MessageExpunge", "FlagChange", "MailboxName", "SubscriptionChange", "(UID FLAGS)",
         "ESEARCH", "IN", "(PERSONAL)", "(MAILBOXES INBOX)", "(SUBTREE (INBOX Trash))", "RETURN",
         "(MIN MAX COUNT ALL)", "(SAVE)", "OLDER", "YOUNGER", "0", "1", "4294967296", "UID",
         "FETCH", "STORE", "SEARCH", "ENABLE", "UIDONLY", "QRESYNC", "UNAUTHENTICATE", "1:*", "$",
         "ALL", "(", ")", '"', "INBOX", "FLAGS", "+FLAGS", "\\Seen", "NOOP", "SELECT", "EXPUNGE"]

line = st.lists(st.one_of(st.sampled_from(WORDS), st.text(alphabet="abc()[]<>.*%\\\" 01", max_size=6)),
                min_size=1, max_size=10).map(lambda ws: " ".join(ws))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("imapextfuzz"), listeners=("imap",))
    w = Wire(srv.ports["imap"])
    w.login()
    for i in range(3):
        data = f"Subject: m{i}\r\n\r\nbody {i}\r\n"
        w.cmd(f"a{i} APPEND INBOX {{{len(data)}+}}\r\n{data}")
    w.close()
    yield srv
    close_all()
    srv.stop()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(st.lists(line, min_size=1, max_size=4))
def test_random_extension_commands_never_break_the_session(server, lines):
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
    probe = Wire(server.ports["imap"], timeout=10)
    assert probe.cmd("p NOOP")[-1] == b"p OK NOOP completed"
    probe.close()
