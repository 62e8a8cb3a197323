"""Every message of ../shared/corpus through IMAP: APPEND, then FETCH back.

BODY[] must return the appended bytes exactly (Roost serves messages as
stored, bare-LF ones included), RFC822.SIZE must equal the octets BODY[]
returns, and IMAPClient must parse ENVELOPE and BODYSTRUCTURE of each.
"""

import email
import email.policy
from pathlib import Path

import pytest
from imapclient import IMAPClient

from tests.imap_helpers import PASSWORD, USER, Wire, start_server

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"
FILES = sorted(CORPUS.rglob("*.eml")) if CORPUS.is_dir() else []


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    if not FILES:
        pytest.skip(f"corpus not found at {CORPUS}")
    srv = start_server(tmp_path_factory.mktemp("corpus"), listeners=("imap",))
    c = IMAPClient("127.0.0.1", port=srv.ports["imap"], ssl=False, timeout=60)
    c.login(USER, PASSWORD)
    c.create_folder("Corpus")
    datas = [f.read_bytes() for f in FILES]
    datas = [d for d in datas if d]
    # imaplib (under IMAPClient) rewrites bare LF to CRLF in APPEND; send the bytes raw.
    w = Wire(srv.ports["imap"])
    w.login()
    for i, d in enumerate(datas):
        w.send(b"A%d APPEND Corpus {%d+}\r\n" % (i, len(d)) + d + b"\r\n")
    for i in range(len(datas)):
        assert w.until(f"A{i}")[-1].startswith(f"A{i} OK".encode())
    w.close()
    c.select_folder("Corpus", readonly=True)
    yield c, datas
    c.logout()
    srv.stop()


def test_every_message_round_trips(loaded):
    c, datas = loaded
    uids = c.search("ALL")
    assert len(uids) == len(datas)
    fetched = c.fetch(uids, ["BODY.PEEK[]", "RFC822.SIZE"])
    for uid, data in zip(uids, datas):
        body = fetched[uid][b"BODY[]"]
        # the bytes as stored, but no NUL in a plain literal (sent as 0x80)
        assert body == data.replace(b"\x00", b"\x80"), f"UID {uid} differs"
        assert fetched[uid][b"RFC822.SIZE"] == len(body)


def test_envelope_and_bodystructure_parse(loaded):
    c, datas = loaded
    uids = c.search("ALL")
    fetched = c.fetch(uids, ["ENVELOPE", "BODYSTRUCTURE", "BODY"])
    assert len(fetched) == len(datas)
    subjects_checked = 0
    for uid, data in zip(uids, datas):
        env = fetched[uid][b"ENVELOPE"]
        assert fetched[uid][b"BODYSTRUCTURE"] is not None
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        raw = msg.get("Subject")
        if isinstance(raw, str) and raw.isascii() and "\n" not in raw and len(msg.get_all("Subject")) == 1:
            assert (env.subject or b"").decode() == raw.strip(), f"UID {uid}"
            subjects_checked += 1
    assert subjects_checked > len(datas) // 2


def test_every_part_fetches_with_exact_sizes(loaded):
    """BODY[n] of each leaf part has the octet count BODYSTRUCTURE announces."""
    c, _datas = loaded
    uids = c.search("ALL")[:150]
    structures = c.fetch(uids, ["BODYSTRUCTURE"])
    checked = 0
    for uid in uids:
        bs = structures[uid][b"BODYSTRUCTURE"]
        for path, size in _leaves(bs, ()):
            section = ".".join(map(str, path)) or "1"
            got = c.fetch([uid], [f"BODY.PEEK[{section}]"])[uid]
            body = got[f"BODY[{section}]".encode()]
            assert len(body or b"") == size, (uid, section)
            checked += 1
    assert checked > 150


def _leaves(bs, path):
    if bs.is_multipart:
        for i, part in enumerate(bs[0], 1):
            yield from _leaves(part, path + (i,))
    else:
        yield path, int(bs[6])
