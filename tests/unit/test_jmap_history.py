"""JMAP states and /changes across a prune of the change log: a state never
goes back, and a state older than the kept history gets cannotCalculateChanges."""

from roost.protocols.jmap.blobs import Backend
from roost.storage.delivery import Delivery
from roost.storage.store import Store

from tests.conftest import append
from tests.jmap_helpers import process_call

USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
MESSAGE = b"From: a@example.org\r\nSubject: kept\r\nMessage-ID: <%d@x>\r\n\r\nbody\r\n"


def call(backend, acct, name, **args):
    return process_call(USING, backend, acct, name, **args)


def test_changes_after_the_history_is_pruned():
    store = Store.memory()
    delivery = Delivery(store)
    try:
        acct = store.add_account("a@example.org")
        backend = Backend(store, delivery)
        inbox = store.mailbox(acct.id, "INBOX")
        old_email = call(backend, acct, "Email/get", ids=[])[1]["state"]
        old_mailbox = call(backend, acct, "Mailbox/get", ids=[])[1]["state"]
        append(delivery, acct, inbox, MESSAGE % 1)
        before_prune = call(backend, acct, "Email/get", ids=[])[1]["state"]
        assert store.prune_history(-1) > 0
        mailbox_state = call(backend, acct, "Mailbox/get", ids=[])[1]["state"]
        assert int(mailbox_state) >= int(old_mailbox)
        assert call(backend, acct, "Email/get", ids=[])[1]["state"] == before_prune
        for since in (old_email, old_mailbox):
            name, err = call(backend, acct, "Email/changes", sinceState=since)
            assert (name, err["type"]) == ("error", "cannotCalculateChanges")
        name, err = call(backend, acct, "Email/queryChanges", sinceQueryState=old_email)
        assert (name, err["type"]) == ("error", "cannotCalculateChanges")
        name, ok = call(backend, acct, "Email/changes", sinceState=before_prune)
        assert name == "Email/changes" and ok["created"] == []
        append(delivery, acct, inbox, MESSAGE % 2)
        name, ok = call(backend, acct, "Email/changes", sinceState=before_prune)
        assert len(ok["created"]) == 1
    finally:
        delivery.close()
        store.close()
