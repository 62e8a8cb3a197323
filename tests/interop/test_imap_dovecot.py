"""Roost's BODYSTRUCTURE against Dovecot's for the corpus: every leaf part
must have the same media type and octet size.

Both servers get the CRLF-only messages of ../shared/corpus (bare-LF ones are
left out: Dovecot counts them as if converted to CRLF, Roost serves them as
stored). Line counts are not compared: for a last line with no line break
Dovecot counts 0 and Roost 1. Messages where the two parsers make different
judgement calls on broken MIME are listed in ``KNOWN`` with the reason;
any other difference is a regression."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.imap_helpers import Wire, start_server

pytestmark = pytest.mark.interop

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"

KNOWN = {
    # RFC 2046: the CRLF before a delimiter belongs to it, so the embedded
    # message ends before its blank line; Dovecot counts that line in.
    "mail-rb/attachment_emails/attachment_message_rfc822_inline_image.eml": "CRLF before boundary",
    "stalwart-mail-parser/malformed/022.eml": "CRLF before boundary",
    # Header block: Dovecot ends it at the first line that is not a header
    # field; Roost reads on to the blank line.
    "mail-rb/plain_emails/raw_email_incorrect_header.eml": "header/body split",
    "mail-rb/rfc2822/example13.eml": "header/body split",
    # Missing or malformed closing boundary: Dovecot adds empty parts.
    "mail-rb/mime_emails/raw_email4.eml": "extra empty parts",
    "mail-rb/mime_emails/raw_email_with_binary_encoded.eml": "extra empty parts",
    "mail-rb/mime_emails/raw_email_with_illegal_boundary.eml": "extra empty parts",
    "mail-rb/plain_emails/raw_email_bad_time.eml": "extra empty parts",
}


def _crlf_messages():
    out = []
    for path in sorted(CORPUS.rglob("*.eml")):
        data = path.read_bytes()
        if data and b"\n" not in data.replace(b"\r\n", b""):
            out.append((str(path.relative_to(CORPUS)), data))
    return out


def _leaves(bs, path=()):
    if bs.is_multipart:
        for i, part in enumerate(bs[0], 1):
            yield from _leaves(part, path + (i,))
        return
    yield path, (bs[0].lower(), bs[1].lower()), int(bs[6])


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    if not shutil.which("dovecot") or os.geteuid() != 0:
        pytest.skip("needs dovecot-imapd and root (to start a throwaway Dovecot)")
    if not CORPUS.is_dir():
        pytest.skip(f"corpus not found at {CORPUS}")
    from bench.imap import PASSWORD as DPASS, USER as DUSER, DovecotPeer
    messages = _crlf_messages()
    tmp = tempfile.mkdtemp(prefix="roost-dovecot-")
    dovecot = DovecotPeer(tmp, 0, messages=[d for _n, d in messages])
    roost = start_server(tmp_path_factory.mktemp("vs-dovecot"), listeners=("imap",),
                         users=((DUSER, DPASS),))
    w = Wire(roost.ports["imap"])
    w.login(DUSER, DPASS)
    for i, (_name, data) in enumerate(messages):
        w.send(b"A%d APPEND INBOX {%d+}\r\n" % (i, len(data)) + data + b"\r\n")
    for i in range(len(messages)):
        assert w.until(f"A{i}")[-1].startswith(f"A{i} OK".encode())
    w.close()
    yield messages, roost.ports["imap"], dovecot.port, (DUSER, DPASS)
    roost.stop()
    dovecot.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def _structures(port, user, count):
    c = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=60)
    c.login(*user)
    c.select_folder("INBOX", readonly=True)
    c.use_uid = False
    got = c.fetch(list(range(1, count + 1)), ["BODYSTRUCTURE"])
    c.logout()
    return got


def test_bodystructure_agrees_with_dovecot(servers):
    messages, roost_port, dovecot_port, user = servers
    assert len(messages) > 50
    # Dovecot lists Maildir files in name order, which is the order written.
    mine = _structures(roost_port, user, len(messages))
    theirs = _structures(dovecot_port, user, len(messages))
    differ, same = [], 0
    for seq, (name, _data) in enumerate(messages, 1):
        a = list(_leaves(mine[seq][b"BODYSTRUCTURE"]))
        b = list(_leaves(theirs[seq][b"BODYSTRUCTURE"]))
        if a == b:
            same += 1
        elif name not in KNOWN:
            differ.append((name, a, b))
    assert not differ, differ[:3]
    assert same >= len(messages) - len(KNOWN)
