"""Mixed IMAP load: clients that never log out, each on a mailbox of its own,
continuously APPEND, FETCH, STORE, EXPUNGE, LIST and STATUS (the shape of a
stress tester), against Roost and a throwaway Dovecot in the same run.

    python -m bench.mixed [--clients 10] [--seconds 20] [--workers N] [--no-dovecot]

Each client logs in and SELECTs a mailbox of its own first (one client after
the other, outside the measurement), then in a loop APPEND a 2 KB
message, UID FETCH the newest ten (FLAGS BODY.PEEK[HEADER]), UID STORE
+FLAGS (\\Seen) on one of them, every fifth round UID STORE +FLAGS
(\\Deleted) on its oldest message and EXPUNGE, then LIST "" "*" and STATUS
INBOX (MESSAGES UNSEEN). Prints commands/s, the mean and p99 latency of each
command and the server CPU per command; the ratio column is Roost / Dovecot
(for commands/s higher is better, for the rest lower).
"""

import argparse
import shutil
import tempfile
import threading
import time

from bench.imap import PASSWORD, USER, Client, DovecotPeer, RoostPeer
from bench.proc import add_workers_option, cpu_seconds, pct

VERBS = ("APPEND", "FETCH", "STORE", "EXPUNGE", "LIST", "STATUS")


def message(i, n):
    body = b"".join(b"line %d of a message of the mixed load, client %d\r\n" % (k, i) for k in range(40))
    return (b"From: load@example.net\r\nTo: %s\r\nSubject: mixed %d.%d\r\n"
            b"Message-ID: <mixed-%d-%d-%d@bench.example>\r\n\r\n" % (USER.encode(), i, n, i, n,
                                                                     time.time_ns()) + body)


def login(c, wait=60):
    """LOGIN, again while the server says it is busy (as a real client would)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return c.cmd(f'LOGIN "{USER}" "{PASSWORD}"'.encode())
        except RuntimeError as exc:
            if "UNAVAILABLE" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)


def connect(port, i):
    """Client ``i`` logged in with its mailbox selected (one after the other,
    before the load: logging in is not what this measures)."""
    c = Client(port)
    login(c)
    box = b"Mixed%d" % i
    try:
        c.cmd(b"CREATE " + box)
    except RuntimeError:        # there already (ALREADYEXISTS): used as it is
        pass
    c.cmd(b"SELECT " + box)
    return c


def client(c, i, until, timings, errors):
    box = b"Mixed%d" % i
    try:
        uids, n = [], 0
        while time.monotonic() < until:
            n += 1

            def timed(verb, text, literal=None):
                t = time.perf_counter()
                lines = c.lines(text) if literal is None else c.cmd(text, literal)
                timings[verb].append(time.perf_counter() - t)
                return lines
            timed("APPEND", b"APPEND " + box, message(i, n))
            lines = c.lines(b"UID SEARCH ALL")          # (not timed: the client's own bookkeeping)
            uids = [int(x) for line in lines if line.startswith(b"* SEARCH") for x in line.split()[2:]]
            if uids:
                last = uids[-10:]
                timed("FETCH", b"UID FETCH %d:%d (FLAGS BODY.PEEK[HEADER])" % (last[0], last[-1]))
                timed("STORE", b"UID STORE %d +FLAGS (\\Seen)" % last[len(last) // 2])
            if n % 5 == 0 and uids:
                timed("STORE", b"UID STORE %d +FLAGS.SILENT (\\Deleted)" % uids[0])
                timed("EXPUNGE", b"EXPUNGE")
            timed("LIST", b'LIST "" "*"')
            timed("STATUS", b"STATUS INBOX (MESSAGES UNSEEN)")
    except Exception as exc:  # noqa: BLE001 - reported with the figures
        errors.append(f"client {i}: {exc}")
    finally:
        c.close()


def run(peer, clients, seconds):
    timings = {v: [] for v in VERBS}
    errors = []
    conns = [connect(peer.port, i) for i in range(clients)]
    until = time.monotonic() + seconds
    cpu0, wall0 = cpu_seconds(peer.pid), time.perf_counter()
    threads = [threading.Thread(target=client, args=(c, i, until, timings, errors))
               for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall, cpu = time.perf_counter() - wall0, cpu_seconds(peer.pid) - cpu0
    count = sum(len(v) for v in timings.values())
    return {"cmds/s": count / wall, "cpu/cmd": cpu / max(count, 1), "timings": timings,
            "errors": errors}


def report(results):
    names = list(results)
    print(f"{'':24}" + "".join(f"{n:>14}" for n in names) + ("       ratio" if len(names) == 2 else ""))

    def row(label, values, fmt):
        ratio = f"{values[0] / values[1]:>12.2f}" if len(values) == 2 and values[1] else ""
        print(f"{label:24}" + "".join(fmt.format(v) for v in values) + ratio)
    row("commands/s", [results[n]["cmds/s"] for n in names], "{:>14.1f}")
    row("server CPU ms/command", [results[n]["cpu/cmd"] * 1000 for n in names], "{:>14.2f}")
    for verb in VERBS:
        got = [results[n]["timings"][verb] for n in names]
        row(f"{verb} mean ms", [sum(t) / len(t) * 1000 if t else float("nan") for t in got],
            "{:>14.2f}")
        row(f"{verb} p99 ms", [pct(t, 0.99) * 1000 for t in got], "{:>14.2f}")
    for n in names:
        for e in results[n]["errors"]:
            print(f"{n}: {e}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--no-dovecot", action="store_true")
    add_workers_option(p)
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="roost-mixed-")
    results = {}
    try:
        peers = [RoostPeer]
        if not args.no_dovecot and shutil.which("dovecot"):
            peers.append(DovecotPeer)
        for cls in peers:
            peer = cls(tmp, 100)
            try:
                results[cls.name] = run(peer, args.clients, args.seconds)
            finally:
                peer.stop()
        report(results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
