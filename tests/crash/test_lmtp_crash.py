"""kill -9 during an 8-connection LMTP load, restart, compare.

Each round starts ``roost serve`` on the same data directory, runs eight
LMTP connections that send messages with unique Message-IDs and bodies to one
or two recipients, SIGKILLs the server at a different moment, and restarts it
(recovery runs at start-up). Then every message acknowledged with 250 for a
recipient must be in that recipient's INBOX exactly once with its bytes
intact, nothing may be stored twice, and the Maildir must match the database
exactly: no row without its file in ``cur/``, no file without a row, and
nothing left in ``tmp/`` or ``new/``.
"""

import os
import random
import re
import signal
import threading
import time

import pytest
from sqlalchemy import select

from roost.storage.schema import mailbox_messages, mailboxes, messages
from roost.storage.store import Store
from tests.conftest import LineClient, RoostServer, add_user, alive, without_verdicts

USERS = [f"u{i}@example.org" for i in range(4)]
CONNECTIONS = 8
KILL_AFTER = (0.15, 0.6, 1.2, 2.0)   # seconds into the load, one round each
MSGID = re.compile(rb"^Message-ID: <([^>]+)>", re.M)

pytestmark = pytest.mark.slow


def make_message(tag, rng):
    size = rng.choice((300, 2000, 5000, 5000, 60000))
    filler = (f"{tag} " * (size // (len(tag) + 1) + 1))[:size]
    lines = "\r\n".join(filler[i:i + 76] for i in range(0, len(filler), 76))
    return (f"From: load@example.net\r\nTo: someone@example.org\r\nSubject: crash {tag}\r\n"
            f"Message-ID: <{tag}@crash.test>\r\n\r\n{lines}\r\n").encode()


class Load:
    """Eight connections sending until the server dies (or ``stop`` is set)."""

    def __init__(self, port, round_no):
        self.port = port
        self.round_no = round_no
        self.stop = threading.Event()
        self.killed = threading.Event()
        self.lock = threading.Lock()
        self.sent = {}        # tag -> (data, [recipients])
        self.acked = set()    # (tag, recipient) that got 250 after DATA
        self.errors = []

    def worker(self, conn_no):
        rng = random.Random(self.round_no * 100 + conn_no)
        client = None
        try:
            client = LineClient(self.port, timeout=20)
            client.reply()
            client.cmd("LHLO crash.test")
            n = 0
            while not self.stop.is_set():
                tag = f"r{self.round_no}c{conn_no}n{n}"
                n += 1
                rcpts = rng.sample(USERS, rng.choice((1, 1, 2)))
                data = make_message(tag, rng)
                with self.lock:
                    self.sent[tag] = (data, rcpts)
                # The whole transaction in one write (PIPELINING).
                client.send(b"MAIL FROM:<load@example.net>\r\n" +
                            b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts) +
                            b"DATA\r\n" + data + b".\r\n")
                codes = [client.reply()[0] for _ in range(1 + len(rcpts) + 1)]
                if codes != [250] + [250] * len(rcpts) + [354]:
                    if not self.stopping(codes):
                        self.errors.append((tag, codes))
                    return
                for rcpt in rcpts:
                    code, _ = client.reply()
                    if code == 250:
                        with self.lock:
                            self.acked.add((tag, rcpt))
                    elif not self.stopping([code]):
                        self.errors.append((tag, rcpt, code))
        except (ConnectionError, OSError):
            pass   # the server was killed
        finally:
            if client is not None:
                client.close()

    def stopping(self, codes):
        """Temporary failures from a server told to stop (its workers, once
        the supervisor is gone) are what a client must be given then; when
        every RCPT got one, DATA is refused with 503 (no valid recipients)."""
        if not self.killed.is_set():
            return False
        if codes[-1] == 503 and 250 not in codes[1:-1]:
            codes = codes[:-1]
        return all(c in (250, 354) or 400 <= c < 500 for c in codes)

    def run(self, server, kill_after, kill):
        threads = [threading.Thread(target=self.worker, args=(i,)) for i in range(CONNECTIONS)]
        for t in threads:
            t.start()
        time.sleep(kill_after)
        self.killed.set()
        survivors = kill(server)
        self.stop.set()       # connections a surviving worker serves end their transaction
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)
        wait_gone(survivors)


def kill_everything(server):
    """SIGKILL the server and, with workers, every worker at the same moment."""
    pids = server.worker_pids()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    server.kill()
    return pids


def kill_one_worker(server):
    """SIGKILL one worker; the supervisor starts another in its place."""
    before = server.worker_pids()
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = server.worker_pids()
        if len(now) == len(before) and before[0] not in now:
            return []
        time.sleep(0.05)
    raise AssertionError(f"no worker replaced {before[0]}: {server.worker_pids()}")


def kill_supervisor(server):
    """SIGKILL the supervisor alone: its workers notice and stop."""
    pids = server.worker_pids()
    server.kill()
    return pids


def wait_gone(pids, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [p for p in pids if os.path.exists(f"/proc/{p}") and alive(p)]:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes {pids} still running")



def stored_state(data_dir):
    """``{(tag, recipient): [bytes, ...]}`` from the store, and a list of
    Maildir/database mismatches."""
    store = Store.open(data_dir)
    found, problems = {}, []
    try:
        for address in USERS:
            acct = store.account(address)
            for box in store.mailboxes(acct.id):
                for rec in store.records(box.id):
                    blob = store.read(box.id, rec.uid)
                    m = MSGID.search(blob)
                    tag = m.group(1).decode().removesuffix("@crash.test") if m else None
                    found.setdefault((tag, address), []).append((box.name, blob))
                with store.engine.connect() as conn:
                    rows = conn.execute(
                        select(messages.c.stem, mailbox_messages.c.flags)
                        .join(mailbox_messages, mailbox_messages.c.message_id == messages.c.id)
                        .join(mailboxes, mailboxes.c.id == mailbox_messages.c.mailbox_id)
                        .where(mailboxes.c.id == box.id)).all()
                base = store.blobs.folder_path(acct.maildir_key, box.folder)
                cur = set(os.listdir(os.path.join(base, "cur")))
                want = {f"{stem}:2," for stem, _flags in rows}
                if cur != want:
                    problems.append(f"{address} {box.name}: rows without file "
                                    f"{sorted(want - cur)}, files without row {sorted(cur - want)}")
                for sub in ("tmp", "new"):
                    left = os.listdir(os.path.join(base, sub))
                    if left:
                        problems.append(f"{address} {box.name}: {sub}/ holds {left}")
    finally:
        store.close()
    return found, problems


@pytest.mark.parametrize("workers,kill", [
    (1, kill_everything), (2, kill_one_worker), (2, kill_supervisor), (2, kill_everything)],
    ids=["one-process", "workers-kill-one", "workers-kill-supervisor", "workers-kill-all"])
def test_kill_during_lmtp_load(tmp_path, workers, kill):
    data = tmp_path / "data"
    for user in USERS:
        add_user(data, user)
    all_sent, all_acked = {}, set()
    total_acked = 0
    for round_no, kill_after in enumerate(KILL_AFTER):
        server = RoostServer(data, workers=workers).start()
        if workers > 1:
            assert len(server.worker_pids()) == workers
        load = Load(server.ports["lmtp"], round_no)
        load.run(server, kill_after, kill)
        server.stop()         # what survived the kill stops cleanly
        assert load.errors == [], load.errors
        all_sent.update(load.sent)
        all_acked |= load.acked
        total_acked += len(load.acked)

        # Restart: recovery runs before the listener is up.
        again = RoostServer(data).start()
        again.stop()
        assert again.proc.returncode == 0, "".join(again.output)

        found, problems = stored_state(str(data))
        assert problems == []
        for (tag, rcpt), copies in found.items():
            assert tag in all_sent, f"stored message {tag!r} was never sent"
            data_sent, rcpts = all_sent[tag]
            assert rcpt in rcpts
            assert len(copies) == 1, f"{tag} stored {len(copies)} times for {rcpt}"
            box, blob = copies[0]
            assert box == "INBOX"
            # less the Authentication-Results of the verdicts (authserv-id: the hostname)
            assert without_verdicts(blob) == (
                b"Return-Path: <load@example.net>\r\nDelivered-To: " + rcpt.encode() + b"\r\n"
                + data_sent)
        missing = sorted(all_acked - set(found))
        assert missing == [], f"acknowledged but not stored: {missing[:10]}"
    # The load did reach the server in every round (the test is not vacuous).
    assert total_acked >= len(KILL_AFTER)
