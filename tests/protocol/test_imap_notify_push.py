"""The change events NOTIFY's SubscriptionChange and METADATA events need
(``Change.imap``) against a real ``roost serve`` with IMAP and JMAP: a JMAP
event source for every type hears nothing of a subscription without a
mailbox or of a METADATA entry, and only JMAP type names otherwise."""

import json
import time

from tests.imap_helpers import Wire, _close_connections  # noqa: F401 - fixture
from tests.jmap_helpers import ALICE, PASSWORDS, fixtures
from tests.protocol.test_jmap_push import EventReader, es_url

server, alice, bob = fixtures("notifypush", listeners=("jmap", "imap", "lmtp"))


def test_imap_only_changes_push_nothing(server, alice):
    w = Wire(server.ports["imap"])
    assert w.cmd(f'a0 LOGIN "{ALICE}" "{PASSWORDS[ALICE]}"')[-1].startswith(b"a0 OK")
    assert w.cmd("a1 CREATE Lists")[-1].startswith(b"a1 OK")
    reader = EventReader(es_url(alice), auth=(ALICE, PASSWORDS[ALICE]))
    time.sleep(0.3)
    assert w.cmd("a2 SUBSCRIBE Nowhere")[-1].startswith(b"a2 OK")
    assert w.cmd('a3 SETMETADATA INBOX (/private/comment "c")')[-1].startswith(b"a3 OK")
    assert w.cmd('a4 SETMETADATA "" (/private/comment "c")')[-1].startswith(b"a4 OK")
    time.sleep(0.5)
    assert reader.wait_for("state", timeout=0.1) is None, reader.events
    # a mailbox's subscription is its isSubscribed: Mailbox, and nothing else
    assert w.cmd("a5 SUBSCRIBE Lists")[-1].startswith(b"a5 OK")
    event = reader.wait_for("state")
    assert event is not None
    changed = json.loads(event["data"])["changed"][alice.account]
    assert set(changed) == {"Mailbox"}, changed
    assert changed["Mailbox"] == alice.ok("Mailbox/get", ids=[])["state"]
