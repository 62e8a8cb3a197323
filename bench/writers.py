"""Writers of one data directory: processes x threads delivering at once.

    python -m bench.writers [--seconds 10] [--threads 8] [--processes 1,2,4]

Each run forks P processes that together run T threads (T/P each); every
thread delivers 4 KB messages through ``Delivery.store`` (each process has
its own store and group committer, as a worker of ``roost serve`` does)
into one of four accounts for the given time. Prints messages/s, the
deliveries per WAL fsync (how well fsyncs are shared), and the share of the
time a write spent waiting for the writer lock against holding it
(``storage.durable.WriterLock``). P=1 is what a single commit-owner process
could do at best with the same threads: it would add a socket hop per
message and copy every message to it, so when P=2 delivers at least as much
as P=1, the shared writer lock is the better design on this machine.
"""

import argparse
import multiprocessing
import os
import shutil
import tempfile
import threading
import time

USERS = [f"w{i}@example.org" for i in range(4)]


def message(n):
    body = b"".join(b"line %d of a message of the writers benchmark\r\n" % k for k in range(80))
    return (b"From: load@example.net\r\nTo: someone@example.org\r\nSubject: writers %d\r\n"
            b"Message-ID: <%d.%d@writers.bench>\r\n\r\n" % (n, os.getpid(), n)) + body


def _process(data, threads, seconds, out):
    from roost.storage import durable
    from roost.storage.delivery import Delivery, Incoming
    from roost.storage.store import Store
    waited, held = [0.0], [0.0]
    enter, leave = durable.WriterLock.__enter__, durable.WriterLock.__exit__
    since = threading.local()

    def timed_enter(self):
        t = time.perf_counter()
        enter(self)
        if self._depth == 1:
            waited[0] += time.perf_counter() - t
            since.t = time.perf_counter()
        return self

    def timed_exit(self, *exc):
        if self._depth == 1:
            held[0] += time.perf_counter() - since.t
        return leave(self, *exc)
    durable.WriterLock.__enter__, durable.WriterLock.__exit__ = timed_enter, timed_exit
    store = Store.open(data)
    delivery = Delivery(store)
    counts = [0] * threads
    stop = time.monotonic() + seconds

    def run(k):
        n = 0
        while time.monotonic() < stop:
            (result,) = delivery.store(Incoming(message(n), (USERS[(k + n) % 4],), sender="l@x"))
            assert result.ok, result
            n += 1
        counts[k] = n
    workers = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    out.put((sum(counts), store._walsync.fsyncs, waited[0], held[0]))
    delivery.close()
    store.close()


def run(processes, threads, seconds):
    tmp = tempfile.mkdtemp(prefix="roost-bench-writers-")
    try:
        data = os.path.join(tmp, "data")
        from roost.storage.store import Store
        store = Store.open(data)
        for u in USERS:
            store.add_account(u)
        store.close()
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_process, args=(data, max(1, threads // processes), seconds, out))
                 for _ in range(processes)]
        start = time.perf_counter()
        for p in procs:
            p.start()
        got = [out.get() for _ in procs]
        for p in procs:
            p.join()
        wall = time.perf_counter() - start
        msgs = sum(g[0] for g in got)
        fsyncs = sum(g[1] for g in got)
        waited = sum(g[2] for g in got)
        held = sum(g[3] for g in got)
        return msgs / seconds, msgs / max(fsyncs, 1), waited / max(msgs, 1), held / max(msgs, 1), wall
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--processes", default="1,2,4")
    args = ap.parse_args(argv)
    print(f"{'processes':>9} {'threads':>7} {'msgs/s':>9} {'msgs/fsync':>10} "
          f"{'lock wait ms/msg':>16} {'lock held ms/msg':>16}")
    for p in [int(x) for x in args.processes.split(",")]:
        rate, per_fsync, waited, held, _ = run(p, args.threads, args.seconds)
        print(f"{p:>9} {args.threads:>7} {rate:>9.0f} {per_fsync:>10.1f} "
              f"{waited * 1000:>16.2f} {held * 1000:>16.2f}", flush=True)


if __name__ == "__main__":
    main()
