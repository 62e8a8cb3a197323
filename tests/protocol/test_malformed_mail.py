"""Malformed messages are delivered, byte for byte, through every way in:
LMTP (250), IMAP APPEND (OK, and FETCH ENVELOPE/BODYSTRUCTURE answers), JMAP
Email/import (created, and Email/get of every property answers) and ``roost
import`` (every message of an mbox imported, nothing left in ``tmp/``).
Real ``roost serve`` and ``roost import`` processes over loopback sockets."""

import os
import re

import pytest

from roost.storage import mbox
from tests.conftest import add_user, roost, stored_messages, without_verdicts
from tests.imap_helpers import Wire, close_all
from tests.jmap_helpers import ALICE, PASSWORDS, fixtures, lmtp_deliver
from tests.malformed import MALFORMED

server, alice, bob = fixtures("malformed", listeners=("jmap", "lmtp", "imap"))
NAMES = sorted(MALFORMED)


def case(name, how):
    """The malformed message ``name`` with a header that tells the copies apart."""
    return b"X-Case: %s%dx\r\n" % (how.encode(), NAMES.index(name)) + MALFORMED[name]


@pytest.fixture
def imap(server):
    w = Wire(server.ports["imap"])
    w.login(ALICE, PASSWORDS[ALICE])
    assert w.cmd("S1 SELECT INBOX")[-1].startswith(b"S1 OK")
    yield w
    close_all()


def fetch(imap, uid, data):
    """FETCH ENVELOPE, BODYSTRUCTURE and BODY[] of ``uid``; checks the bytes."""
    lines = imap.cmd(f"F1 UID FETCH {uid} (ENVELOPE BODYSTRUCTURE BODY.PEEK[])")
    assert lines[-1].startswith(b"F1 OK"), lines
    response = b"\r\n".join(lines[:-1])
    assert b"ENVELOPE (" in response and b"BODYSTRUCTURE (" in response, response
    head, sep, rest = response.partition(b"BODY[] {%d}\r\n" % len(data))
    # a plain literal carries no NUL (RFC 3501 CHAR8): each goes as 0x80
    assert sep and rest.startswith(data.replace(b"\x00", b"\x80")), response
    assert b"\x00" not in head     # NUL is not allowed in IMAP strings, not even in literals


@pytest.mark.parametrize("name", NAMES)
def test_lmtp_delivers_it(server, imap, name):
    data = case(name, "lmtp")
    reply = lmtp_deliver(server.ports["lmtp"], ALICE, data)
    assert reply[-1].startswith(b"250"), reply
    imap.cmd("N1 NOOP")
    lines = imap.cmd(f"S2 UID SEARCH HEADER X-Case lmtp{NAMES.index(name)}x")
    uid = int(re.search(rb"\* SEARCH (\d+)", b"\n".join(lines)).group(1))
    first = imap.cmd(f"F2 UID FETCH {uid} (BODY.PEEK[])")[0]
    # the Authentication-Results of the verdicts (authserv-id: the hostname) then the bytes sent
    first = without_verdicts(first.split(b"}\r\n", 1)[1])
    assert first.endswith(b"\r\nDelivered-To: " + ALICE.encode() + b"\r\n"
                          + data.replace(b"\x00", b"\x80") + b")"), first   # no NUL in a literal


@pytest.mark.parametrize("name", NAMES)
def test_imap_append_stores_it_and_fetch_answers(imap, name):
    data = case(name, "imap")
    imap.send(b"A1 APPEND INBOX {%d+}\r\n" % len(data) + data + b"\r\n")
    lines = imap.until("A1")
    m = re.match(rb"A1 OK \[APPENDUID \d+ (\d+)\]", lines[-1])
    assert m, lines
    fetch(imap, int(m.group(1)), data)


@pytest.mark.parametrize("name", NAMES)
def test_jmap_import_creates_it_and_email_get_answers(alice, name):
    data = case(name, "jmap")
    up = alice.upload(data, "message/rfc822")
    res = alice.ok("Email/import", emails={"m": {"blobId": up["blobId"],
                                                 "mailboxIds": {alice.mailbox("inbox"): True}}})
    assert res["created"] and not res["notCreated"], res
    eid = res["created"]["m"]["id"]
    e = alice.ok("Email/get", ids=[eid], fetchAllBodyValues=True, maxBodyValueBytes=64,
                 properties=["subject", "from", "to", "sentAt", "messageId", "references",
                             "preview", "hasAttachment", "headers", "bodyStructure", "bodyValues",
                             "textBody", "htmlBody", "attachments", "header:Subject:asText",
                             "header:Date:asDate", "header:From:asGroupedAddresses:all",
                             "header:Message-ID:asMessageIds", "header:X-Case:asRaw"],
                 bodyProperties=["partId", "blobId", "size", "headers", "name", "type",
                                 "charset", "disposition", "cid", "language", "location",
                                 "subParts"])["list"][0]
    assert e["header:X-Case:asRaw"].strip() == f"jmap{NAMES.index(name)}x"
    url = (alice.session["downloadUrl"].replace("{accountId}", alice.account)
           .replace("{blobId}", up["blobId"]).replace("{name}", "m.eml")
           .replace("{type}", "message/rfc822"))
    assert alice.http.get(url).content == data


def _tmp_files(data_dir):
    return [os.path.join(root, f) for root, _d, files in os.walk(data_dir / "mail")
            if os.path.basename(root) == "tmp" for f in files]


def test_roost_import_of_an_mbox_with_them_between_good_messages(tmp_path):
    data_dir = tmp_path / "data"
    add_user(data_dir, "imp@example.org")
    good = [b"From: a@example.net\nSubject: good %d\n\nfine\n" % i for i in range(3)]
    messages = [good[0], *MALFORMED.values(), good[1], *MALFORMED.values(), good[2]]
    path = tmp_path / "in.mbox"
    with open(path, "wb") as f:
        for m in messages:
            mbox.write_mbox(f, m, "a@example.net", 0)
    out = roost(data_dir, "import", "imp@example.org", path)
    assert f"imported {len(messages)} messages".encode() in out.stdout
    assert stored_messages(data_dir, "imp@example.org") == messages
    assert _tmp_files(data_dir) == []
