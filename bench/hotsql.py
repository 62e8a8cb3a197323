"""The store's hot statements (``storage.hot``) at the DB-API level against the
same statements in SQLAlchemy Core, on one SQLite store.

    python -m bench.hotsql [--messages 10000] [--repeat 2000]

Prints microseconds per call for each statement both ways and the ratio
(Core / driver): the figures that justify keeping a statement in
``storage.hot``.
"""

import argparse
import tempfile
import time

from sqlalchemy import and_, select, update

from roost.storage import hot
from roost.storage.delivery import Delivery, Incoming
from roost.storage.schema import accounts, mailbox_messages, mailboxes, messages
from roost.storage.store import Store


def per_call(fn, repeat):
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as data:
        store = Store.open(data)
        delivery = Delivery(store)
        acct = store.add_account("bench@example.org")
        box = store.mailbox(acct.id, "INBOX")
        body = b"From: a@example.net\r\nSubject: s\r\n\r\nbody\r\n"
        for i in range(0, args.messages, 1000):
            delivery.store(*(Incoming(body, account=acct, mailboxes=(box,))
                             for _ in range(min(1000, args.messages - i))))
        delivery.close()
        mid = args.messages // 2
        with store.reader() as conn:
            sql = hot.DriverSQL(conn, True)
            core = {
                "account_row (LMTP RCPT, login)": (
                    lambda: hot.account_row(sql, acct.address),
                    lambda: conn.execute(select(accounts.c.id, accounts.c.address, accounts.c.password_hash,
                                                accounts.c.quota_bytes, accounts.c.used_bytes,
                                                accounts.c.modseq).where(accounts.c.address == acct.address))
                    .first()),
                "message_location (every message read)": (
                    lambda: hot.message_location(sql, mailbox_pk=box.id, uid=mid),
                    lambda: conn.execute(
                        select(messages.c.stem, mailboxes.c.folder, mailbox_messages.c.flags, accounts.c.address)
                        .join(messages, messages.c.id == mailbox_messages.c.message_id)
                        .join(mailboxes, mailboxes.c.id == mailbox_messages.c.mailbox_id)
                        .join(accounts, accounts.c.id == mailboxes.c.account_id)
                        .where(and_(mailbox_messages.c.mailbox_id == box.id, mailbox_messages.c.uid == mid))
                        .limit(1)).first()),
                f"flag_rows, whole mailbox of {args.messages} (FETCH 1:* FLAGS)": (
                    lambda: hot.flag_rows(sql, box.id),
                    lambda: conn.execute(
                        select(mailbox_messages.c.uid, mailbox_messages.c.modseq, mailbox_messages.c.flags,
                               mailbox_messages.c.keywords).where(mailbox_messages.c.mailbox_id == box.id)
                        .order_by(mailbox_messages.c.uid)).all()),
            }
            print(f"{'statement':58} {'driver us':>10} {'Core us':>10} {'ratio':>6}")
            for name, (driver_fn, core_fn) in core.items():
                reps = max(20, args.repeat // (200 if "whole" in name else 1))
                d, c = per_call(driver_fn, reps), per_call(core_fn, reps)
                print(f"{name:58} {d:10.1f} {c:10.1f} {c / d:6.2f}")
            conn.rollback()
        # STORE of one message: the flag rule's write (one transaction each)
        def store_driver(flip=[0]):
            flip[0] ^= 1
            with store.write() as txn:
                hot.write_flags(txn.sql, 10 + flip[0], [(box.id, mid, flip[0], "")])

        def store_core(flip=[0]):
            flip[0] ^= 1
            with store.write() as txn:
                txn.conn.execute(update(mailbox_messages).where(and_(
                    mailbox_messages.c.mailbox_id == box.id, mailbox_messages.c.uid == mid))
                    .values(flags=flip[0], keywords="", modseq=10 + flip[0]))
                txn.conn.execute(update(mailboxes).where(mailboxes.c.id == box.id)
                                 .values(highestmodseq=10 + flip[0]))
        reps = max(20, args.repeat // 10)
        d, c = per_call(store_driver, reps), per_call(store_core, reps)
        print(f"{'write_flags, one message (STORE), with its commit':58} {d:10.1f} {c:10.1f} {c / d:6.2f}")
        store.close()


if __name__ == "__main__":
    main()
