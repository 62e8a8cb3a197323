"""Email/query over ``storage.views``: a lone ``inMailbox`` filter with one sort
is answered from the mailbox's view, and must list exactly what the database's
sort lists (the same filter with an always-true condition added takes that
path) after deliveries, keyword changes, moves and destroys."""

from roost.protocols.jmap.blobs import Backend
from roost.storage.delivery import Delivery
from roost.storage.store import Store
from tests.conftest import append
from tests.jmap_helpers import process_call

USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
PROPS = ("receivedAt", "size", "from", "to", "subject", "sentAt")


def message(n):
    return (f"From: u{(n * 7) % 5}@example.org\r\nTo: r{(n * 3) % 4}@example.org\r\n"
            f"Subject: {'AbCd'[n % 4]} topic\r\nMessage-ID: <q{n}@example.org>\r\n"
            f"Date: Tue, {1 + (n * 5) % 27:02d} Feb 2024 08:00:00 +0000\r\n\r\n"
            + "y" * ((n * 37) % 300) + "\r\n").encode()


def test_mailbox_views_answer_like_the_database():
    store = Store.memory()
    delivery = Delivery(store)
    try:
        acct = store.add_account("q@example.org")
        backend = Backend(store, delivery)
        inbox = store.mailbox(acct.id, "INBOX")
        other = store.create_mailbox(acct.id, "Other")

        def call(name, **args):
            got_name, got = process_call(USING, backend, acct, name, **args)
            assert got_name == name, got
            return got

        def check():
            for box in (inbox, other):
                for prop in PROPS:
                    for asc in (True, False):
                        for collapse in (False, True):
                            sort = [{"property": prop, "isAscending": asc}]
                            view = call("Email/query", filter={"inMailbox": f"M{box.id}"},
                                        sort=sort, collapseThreads=collapse)
                            db = call("Email/query", filter={"inMailbox": f"M{box.id}",
                                                             "minSize": 0},
                                      sort=sort, collapseThreads=collapse)
                            assert view["ids"] == db["ids"], (box.name, prop, asc, collapse)

        for n in range(12):
            append(delivery, acct, inbox, message(n), internal_date=1_700_000_000 + (n * 11) % 7)
        check()
        ids = call("Email/query", filter={"inMailbox": f"M{inbox.id}"})["ids"]
        call("Email/set", update={ids[0]: {"keywords/$seen": True},
                                  ids[3]: {"mailboxIds": {f"M{other.id}": True}},
                                  ids[5]: {f"mailboxIds/M{other.id}": True}})
        check()
        call("Email/set", destroy=[ids[1], ids[5]])
        append(delivery, acct, other, message(40), internal_date=1_700_000_003)
        check()
    finally:
        delivery.close()
        store.close()
