"""Search benchmark: ``python -m bench.search [--messages 100000]``.

Builds one account with N generated messages (fixed seed, about 5 KB each,
planted words at known frequencies), then prints indexing msgs/s and p50/p99
latency of ``storage.search.search`` for a common word, a rare word, a
two-word AND, a prefix and a FROM substring: FTS5 (the default) and Whoosh
side by side; then the same searches over real sockets to ``roost serve`` on
that data directory: IMAP ``UID SEARCH`` on the SELECTed INBOX, and JMAP
Email/query ({text}, {body}, {from}; receivedAt descending, limit 50, with
and without calculateTotal, and with Email/get of the page); plus Dovecot's
``UID SEARCH`` (a full scan: no FTS plugin) of the same Maildir when Dovecot
is installed (a throwaway ``imap`` process on stdin/stdout, no daemon).
IMAP SEARCH is a substring match (RFC 3501): Dovecot's full scan finds
"zentro" inside any word, Roost's TEXT/BODY match words and word prefixes, so
the prefix row shows the hits of each (here the same: the planted words all
start with it). ``--keep DIR`` builds once, ``--reuse`` only times queries.

How the account is built: every message is generated, parsed with
``mime.ParsedMessage`` (as delivery does) and written as a Maildir file in
``cur/``; its rows (threads, messages, mailbox_messages) are inserted in bulk,
1,000 per transaction, without the per-message fsync, quota, dedupe and
threading look-ups of the delivery path. Indexing is timed separately: the
backend's own ``index`` call (building the search document and writing the
index) over the same batches, which is what delivery does for each message.
"""

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from sqlalchemy import insert, update

from roost.storage import mime
from roost.storage import search as S
from roost.storage.maildir import file_name
from roost.storage.schema import accounts, mailbox_messages, mailboxes, messages, threads
from roost.storage.search_text import document
from roost.storage.store import Store

SEED = 5
BATCH = 1000
# Planted words: (word, share of messages that contain it).
COMMON = ("harbor", 0.20)
RARE = ("quillfeather", 0.001)
AND_PAIR = (("budget", 0.10), ("lantern", 0.10))     # both in about 1%
PREFIX_FAMILY = [("zentro" + s, 0.002) for s in ("vax", "qua", "mel", "dine", "lith")]
SENDERS = 2000
# (label, criteria tree, IMAP SEARCH keys, JMAP FilterCondition)
QUERIES = [
    ("common word", S.Text("text", COMMON[0]), f"TEXT {COMMON[0]}", {"text": COMMON[0]}),
    ("rare word", S.Text("text", RARE[0]), f"TEXT {RARE[0]}", {"text": RARE[0]}),
    ("two-word AND", S.And((S.Text("text", AND_PAIR[0][0]), S.Text("text", AND_PAIR[1][0]))),
     f"TEXT {AND_PAIR[0][0]} TEXT {AND_PAIR[1][0]}",
     {"operator": "AND", "conditions": [{"text": AND_PAIR[0][0]}, {"text": AND_PAIR[1][0]}]}),
    ("prefix", S.Text("text", "zentro"), "TEXT zentro", {"text": "zentro"}),
    ("FROM", S.Text("from", "sender0042"), "FROM sender0042", {"from": "sender0042"}),
]
SYLLABLES = ("ka ri to mo na le si vu pe da go ne lo ta mi ru be so fa ki ho "
             "za du ve ro ba ne ti ca po lu me sa fi de gu ra no").split()


def vocabulary(rng, n=30000):
    reserved = {w for w, _f in [COMMON, RARE, *AND_PAIR, *PREFIX_FAMILY]}
    words = set()
    while len(words) < n:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4)))
        if w not in reserved and not w.startswith("zentro"):
            words.add(w)
    words = sorted(words)
    rng.shuffle(words)
    cum, total = [], 0.0
    for rank in range(1, n + 1):          # Zipf-like word frequencies
        total += 1.0 / rank
        cum.append(total)
    return words, cum


class Generator:
    def __init__(self, seed=SEED):
        self.words, self.cum = vocabulary(random.Random(seed))
        self.seed = seed

    def message(self, i):
        rng = random.Random(self.seed * 1_000_003 + i)
        n = min(4000, 60 + int(rng.expovariate(1 / 700)))
        body = rng.choices(self.words, cum_weights=self.cum, k=n)
        for word, share in [COMMON, RARE, *AND_PAIR, *PREFIX_FAMILY]:
            if rng.random() < share:
                body[rng.randrange(n)] = word
        lines = [" ".join(body[j:j + 12]) for j in range(0, n, 12)]
        subject = " ".join(rng.choices(self.words, cum_weights=self.cum, k=rng.randint(3, 8)))
        sender = rng.randrange(SENDERS)
        date = time.strftime("%a, %d %b %Y %H:%M:%S +0000",
                             time.gmtime(1_600_000_000 + i * 900 + rng.randrange(900)))
        head = (f"From: Sender {sender:04d} <sender{sender:04d}@example{sender % 50}.net>\r\n"
                f"To: Alice <alice@example.org>\r\n"
                f"Subject: {subject}\r\n"
                f"Date: {date}\r\n"
                f"Message-ID: <bench.{i}@example.net>\r\n"
                f"MIME-Version: 1.0\r\n"
                f"Content-Type: text/plain; charset=utf-8\r\n\r\n")
        return (head + "\r\n".join(lines) + "\r\n").encode()


def build(store, gen, count, log):
    """Insert ``count`` generated messages into alice's INBOX; returns index seconds."""
    acct = store.add_account("alice@example.org")
    box = store.mailbox(acct.id, "INBOX")
    folder = os.path.join(store.blobs.folder_path(acct.maildir_key, box.folder), "cur")
    index_s, index_cpu, total_bytes, t0 = 0.0, 0.0, 0, time.time()
    modseq = acct.modseq + 1
    for start in range(0, count, BATCH):
        ids = range(start + 1, min(count, start + BATCH) + 1)
        trows, mrows, mmrows, docs = [], [], [], []
        for pk in ids:
            data = gen.message(pk)
            total_bytes += len(data)
            p = mime.ParsedMessage(data)
            stem = f"{1_600_000_000 + pk}.M{pk}P1.bench,S={len(data)}"
            with open(os.path.join(folder, file_name(stem, 0)), "wb") as f:
                f.write(data)
            trows.append({"id": pk, "account_id": acct.id, "subject": mime.base_subject(p.subject),
                          "updated": t0})
            mrows.append({
                "id": pk, "account_id": acct.id, "thread_id": pk, "stem": stem,
                "blob_id": "B" + p.content_hash[:40], "content_hash": p.content_hash,
                "size": len(data), "internal_date": p.sent_at or t0, "received_at": t0,
                "sent_at": p.sent_at, "msgid": p.msgid, "subject": p.subject,
                "from_sort": p.from_sort, "to_sort": p.to_sort, "has_attachment": p.has_attachment,
                "preview": p.preview, "envelope": json.dumps(p.envelope),
                "structure": json.dumps(p.structure), "summary": json.dumps(p.summary)})
            mmrows.append({"mailbox_id": box.id, "uid": pk, "message_id": pk, "modseq": modseq,
                           "flags": 0, "keywords": "", "saved_at": t0})
            docs.append((pk, p))
        with store.write() as txn:
            txn.conn.execute(insert(threads), trows)
            txn.conn.execute(insert(messages), mrows)
            txn.conn.execute(insert(mailbox_messages), mmrows)
            t, c = time.perf_counter(), time.process_time()
            store.fulltext.index(txn, acct.id, [(pk, document(p)) for pk, p in docs])
            index_s += time.perf_counter() - t
            index_cpu += time.process_time() - c
        done = ids[-1]
        log(f"\r  built {done}/{count} ({done / (time.time() - t0):.0f} msgs/s)")
    with store.write() as txn:
        txn.conn.execute(update(mailboxes).where(mailboxes.c.id == box.id)
                     .values(uidnext=count + 1, highestmodseq=modseq))
        txn.conn.execute(update(accounts).where(accounts.c.id == acct.id)
                     .values(modseq=modseq, used_bytes=total_bytes))
    log("\n")
    return acct, box, (index_s, index_cpu), total_bytes


def index_whoosh(store, gen, acct, count, log):
    """Index the same messages into a Whoosh-backed store; returns seconds."""
    backend, spent, cpu = store.fulltext, 0.0, 0.0
    for start in range(0, count, BATCH):
        ids = range(start + 1, min(count, start + BATCH) + 1)
        parsed = [(pk, mime.ParsedMessage(gen.message(pk))) for pk in ids]
        t, c = time.perf_counter(), time.process_time()
        with store.write() as txn:
            backend.index(txn, acct.id, [(pk, document(p)) for pk, p in parsed])
        backend.flush()
        spent += time.perf_counter() - t
        cpu += time.process_time() - c
        log(f"\r  whoosh {ids[-1]}/{count} ({ids[-1] / spent:.0f} msgs/s)")
    log("\n")
    return spent, cpu


def timings(fn, runs):
    """(result, p50 ms, p99 ms) of ``fn()``; a ``fn`` that returns (result,
    start) is timed from its own ``perf_counter`` start (untimed set-up first)."""
    fn()                                    # warm caches once
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        n = fn()
        if isinstance(n, tuple):
            n, t = n
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return n, statistics.median(out), out[min(len(out) - 1, int(len(out) * 0.99))]


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- IMAP and JMAP over sockets --------------------------------------------------

PASSWORD = "bench-secret"
JMAP_USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
# What a webmail's message list asks of Email/get for one page.
LIST_PROPERTIES = ["id", "threadId", "mailboxIds", "keywords", "size", "receivedAt", "from",
                   "to", "subject", "preview", "hasAttachment"]
# (label, [(row name, JMAP FilterCondition, what)]) with what: "total" (calculateTotal
# true), "query" (false), "get" (Email/query then Email/get of the page by back-reference).
JMAP_ROWS = {
    "common word": [("text", {"text": COMMON[0]}), ("body", {"body": COMMON[0]})],
    "rare word": [("text", {"text": RARE[0]}), ("body", {"body": RARE[0]})],
    "two-word AND": [("text", {"text": f"{AND_PAIR[0][0]} {AND_PAIR[1][0]}"})],
    "prefix": [("text", {"text": "zentro"})],
    "FROM": [("from", {"from": "sender0042"})],
}


def search_hits(lines):
    """How many numbers ``* SEARCH`` lines, or an ESEARCH COUNT, report."""
    n = 0
    for line in lines:
        if line.startswith(b"* SEARCH"):
            n += len(line.split()) - 2
        elif line.startswith(b"* ESEARCH") and b" COUNT " in line:
            n += int(line.split(b" COUNT ")[1].split()[0])
    return n


def start_server(data):
    """``roost serve`` with IMAP and JMAP on the bench data: (process, ports)."""
    from bench.proc import start_roost
    cli = [sys.executable, "-m", "roost.server.cli", "--data", data]
    subprocess.run(cli + ["user", "passwd", "alice@example.org", "--password-stdin"],
                   input=PASSWORD.encode() + b"\n", check=True, capture_output=True)
    return start_roost(cli + ["serve"], {"imap": "127.0.0.1:0", "jmap": "127.0.0.1:0"})


def imap_queries(port, runs, log):
    """``UID SEARCH`` on a SELECTed INBOX; one connection, as a client searches."""
    from bench.imap import Client
    imap = Client(port)
    rows = {}
    try:
        imap.lines(f"LOGIN alice@example.org {PASSWORD}".encode())
        imap.lines(b"SELECT INBOX")
        for label, _node, keys, _j in QUERIES:
            rows[label] = [("IMAP UID SEARCH",) + timings(
                lambda k=keys: search_hits(imap.lines(f"UID SEARCH {k}".encode())), runs)]
            if label == "common word":
                rows[label].append(("IMAP ESEARCH ALL",) + timings(
                    lambda k=keys: search_hits(imap.lines(f"UID SEARCH RETURN (ALL COUNT) {k}".encode())),
                    runs))
            log(f"  imap: {label} done\n")
        imap.lines(b"LOGOUT")
    finally:
        imap.close()
    return rows


def jmap_queries(port, runs, log):
    """Email/query over HTTP, sorted receivedAt descending, limit 50. Before
    each call (untimed) an Email/set toggles a keyword on one message: the
    server caches query results per (filter, sort, Email state), and this
    measures a query after a change, as a client sends it after new mail
    (one row, "cached", shows the cache)."""
    import httpx
    http = httpx.Client(auth=("alice@example.org", PASSWORD), timeout=120, follow_redirects=True)
    session = http.get(f"http://127.0.0.1:{port}/.well-known/jmap").json()
    account = next(iter(session["accounts"]))
    calls = [0]

    def post(methods):
        replies = http.post(session["apiUrl"], json={"using": JMAP_USING,
                                                     "methodCalls": methods}).json()
        replies = replies["methodResponses"]
        if [r[0] for r in replies] != [m[0] for m in methods]:
            raise RuntimeError(f"JMAP call failed: {replies}")
        return replies

    one = post([["Email/query", {"accountId": account, "limit": 1}, "q"]])[0][1]["ids"][0]

    def call(jfilter, what, fresh=True):
        if fresh:
            calls[0] += 1
            post([["Email/set", {"accountId": account, "update": {one: {
                "keywords/$benchtoggle": True if calls[0] % 2 else None}}}, "s"]])
        t = time.perf_counter()
        query = {"accountId": account, "filter": jfilter, "limit": 50,
                 "sort": [{"property": "receivedAt", "isAscending": False}],
                 "calculateTotal": what == "total"}
        methods = [["Email/query", query, "q"]]
        if what == "get":
            methods.append(["Email/get", {"accountId": account, "properties": LIST_PROPERTIES,
                                          "#ids": {"resultOf": "q", "name": "Email/query",
                                                   "path": "/ids"}}, "g"])
        reply = post(methods)[0][1]
        return (reply["total"] if what == "total" else len(reply["ids"])), t

    rows = {}
    try:
        for label, filters in JMAP_ROWS.items():
            rows[label] = []
            for name, jfilter in filters:
                for what in ("total", "query"):
                    rows[label].append((f"JMAP {name}{' total' if what == 'total' else ''}",)
                                       + timings(lambda f=jfilter, w=what: call(f, w), runs))
            name, jfilter = filters[0]
            rows[label].append((f"JMAP {name} +get",)
                               + timings(lambda f=jfilter: call(f, "get"), runs))
            if label == "common word":
                rows[label].append((f"JMAP {name} cached",)
                                   + timings(lambda f=jfilter: call(f, "total", False), runs))
            log(f"  jmap: {label} done\n")
    finally:
        http.close()
    return rows


def protocol_queries(data, runs, log):
    """IMAP and JMAP rows ({label: [(row, hits, p50, p99)]}) and the server's RSS."""
    from bench.proc import rss_bytes
    proc, ports = start_server(data)
    log(f"  roost serve: pid {proc.pid} (for py-spy)\n")
    try:
        rows = imap_queries(ports["imap"], runs, log)
        for label, more in jmap_queries(ports["jmap"], runs, log).items():
            rows.setdefault(label, []).extend(more)
        return rows, rss_bytes(proc.pid) / 2**20
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        proc.stdout.close()


# --- Dovecot ---------------------------------------------------------------------

def dovecot_scan(maildir, tmp, runs, log):
    """SEARCH through a throwaway Dovecot ``imap`` process (no FTS plugin)."""
    imap = "/usr/lib/dovecot/imap"
    if not os.path.exists(imap):
        return None, "dovecot not installed"
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        # Dovecot refuses mail access as root: read the Maildir as "nobody".
        import pwd
        nobody = pwd.getpwnam("nobody")
        uid, gid = nobody.pw_uid, nobody.pw_gid
        for sub in ("index", "control", "run", "state"):
            os.makedirs(os.path.join(tmp, sub), exist_ok=True)
            os.chown(os.path.join(tmp, sub), uid, gid)
        path = maildir
        while path != "/":
            os.chmod(path, os.stat(path).st_mode | 0o755)
            path = os.path.dirname(path)
        for sub in ("cur", "new", "tmp"):
            os.chmod(os.path.join(maildir, sub), 0o777)
    conf = os.path.join(tmp, "dovecot.conf")
    with open(conf, "w") as f:
        f.write(f"base_dir = {tmp}/run\nstate_dir = {tmp}/state\nlog_path = {tmp}/dovecot.log\n"
                f"mail_location = maildir:{maildir}:INDEX={tmp}/index:CONTROL={tmp}/control\n"
                "ssl = no\nprotocols = imap\n"
                f"mail_uid = {uid}\nmail_gid = {gid}\n"
                f"first_valid_uid = {min(uid, 1)}\nfirst_valid_gid = {min(gid, 1)}\n")
    env = dict(os.environ, USER="alice", HOME=tmp)
    proc = subprocess.Popen([imap, "-c", conf], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=env, bufsize=0)
    tag = [0]

    def command(line):
        tag[0] += 1
        t = f"d{tag[0]}"
        proc.stdin.write(f"{t} {line}\r\n".encode())
        out = []
        while True:
            reply = proc.stdout.readline()
            if not reply:
                raise RuntimeError("dovecot imap exited")
            out.append(reply)
            if reply.startswith(t.encode() + b" "):
                return out

    try:
        proc.stdout.readline()               # * PREAUTH
        t = time.time()
        command("SELECT INBOX")
        log(f"  dovecot: SELECT INBOX (index build) {time.time() - t:.1f}s\n")
        rows = []
        for label, _node, imap_query, _j in QUERIES:
            def one():
                reply = command(f"UID SEARCH {imap_query}")
                return sum(len(r.split()) - 2 for r in reply if r.startswith(b"* SEARCH"))
            rows.append((label,) + timings(one, runs))
            log(f"  dovecot: {label} done\n")
        command("LOGOUT")
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    return rows, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--whoosh", type=int, default=None,
                    help="messages indexed with Whoosh (default: all)")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--dovecot-runs", type=int, default=5)
    ap.add_argument("--no-dovecot", action="store_true")
    ap.add_argument("--no-backend", action="store_true",
                    help="skip the storage.search.search rows (FTS5 and Whoosh)")
    ap.add_argument("--no-protocols", action="store_true", help="skip the IMAP and JMAP rows")
    from bench.proc import add_workers_option
    add_workers_option(ap)
    ap.add_argument("--keep", help="build in this directory and keep it")
    ap.add_argument("--reuse", action="store_true",
                    help="the --keep directory already holds a build: only time the queries")
    args = ap.parse_args(argv)
    log = sys.stderr.write
    tmp = args.keep or tempfile.mkdtemp(prefix="roost-bench-search-")
    os.makedirs(tmp, exist_ok=True)
    gen = Generator()
    try:
        print(f"bench.search: {args.messages} messages, seed {SEED}, in {tmp}; "
              f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
        store = Store.open(os.path.join(tmp, "data"))
        if args.reuse and args.keep:
            acct = store.account("alice@example.org")
            box = store.mailbox(acct.id, "INBOX")
            print("reusing the build in --keep: indexing not measured in this run")
        else:
            t = time.time()
            acct, box, (index_s, index_cpu), total = build(store, gen, args.messages, log)
            build_s = time.time() - t
            print(f"built in {build_s:.0f}s: {total / args.messages / 1024:.1f} KB average, "
                  f"{total / 1e6:.0f} MB (rows inserted in bulk, files written without fsync; "
                  f"see the module docstring)")
            print(f"FTS5 indexing: {args.messages / index_s:.0f} msgs/s in batches of {BATCH} "
                  f"({index_s:.1f}s of the build; {args.messages / index_cpu:.0f} msgs per CPU "
                  f"second)")
        results = {}
        if not args.no_backend:
            results["FTS5"] = [(label,) + timings(
                lambda n=node: len(S.search(store, acct.id, n, box.id)), args.runs)
                for label, node, _q, _j in QUERIES]
        rss = rss_mb()
        wcount = args.whoosh if args.whoosh is not None else args.messages
        if wcount and not args.reuse and not args.no_backend:
            wstore = Store.open(os.path.join(tmp, "data"), search="whoosh")
            wstore.fulltext.delay = 3600     # the bench applies the queue itself
            w_s, w_cpu = index_whoosh(wstore, gen, acct, wcount, log)
            print(f"Whoosh indexing: {wcount / w_s:.0f} msgs/s in batches of {BATCH} "
                  f"({wcount / w_cpu:.0f} msgs per CPU second)"
                  + ("" if wcount == args.messages else f" (first {wcount} messages only)"))
            results["Whoosh"] = [(label,) + timings(
                lambda n=node: len(S.search(wstore, acct.id, n, box.id)), args.runs)
                for label, node, _q, _j in QUERIES]
            wstore.close()
        store.close()
        prows, prss = ({}, 0) if args.no_protocols else \
            protocol_queries(os.path.join(tmp, "data"), args.runs, log)
        if not args.no_dovecot:
            maildir = store.blobs.folder_path(acct.maildir_key, box.folder)
            os.makedirs(os.path.join(tmp, "dovecot"), exist_ok=True)
            rows, why = dovecot_scan(maildir, os.path.join(tmp, "dovecot"), args.dovecot_runs, log)
            if rows:
                results["Dovecot UID SEARCH"] = rows
            else:
                print(f"Dovecot: skipped ({why})")
        print(f"\nSearch latency over {args.messages} messages in one mailbox (ms; {args.runs} "
              f"runs, Dovecot {args.dovecot_runs}):")
        print(f"{'query':<14} {'path':<20} {'hits':>7} {'p50':>9} {'p99':>9}")
        for label, _node, _q, _j in QUERIES:
            mine = [(name,) + r[1:] for name, rows in results.items() for r in rows
                    if r[0] == label]
            dove = [r for r in mine if r[0].startswith("Dovecot")]
            lines = [r for r in mine if r not in dove] + prows.get(label, []) + dove
            for name, hits, p50, p99 in lines:
                print(f"{label:<14} {name:<20} {hits:>7} {p50:>9.2f} {p99:>9.2f}")
        print("\nFTS5/Whoosh rows: storage.search.search in the bench process (the backend "
              "call alone). IMAP rows: one connection to roost serve on the same data, INBOX "
              "SELECTed, UID SEARCH (ESEARCH: RETURN (ALL COUNT)). JMAP rows: Email/query over "
              "HTTP, the account's messages, sorted receivedAt descending, limit 50; \"total\": "
              "calculateTotal; \"+get\": Email/get of the page in the same request; before "
              "every call but \"cached\" an untimed Email/set changes a keyword (the Email "
              "state), so the query cache never answers. Dovecot: its imap process on the same Maildir, no FTS plugin"
              + (f"; roost serve RSS {prss:.0f} MB" if prows else ""))
        if wcount and wcount != args.messages and "Whoosh" in results:
            print(f"Whoosh rows: its index holds only the first {wcount} messages, so its hits "
                  f"and latencies are for {wcount}, not {args.messages}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f} (latencies are wall clock)")
        print(f"RSS after the FTS5 queries: {rss:.0f} MB; peak RSS of the bench process "
              f"(generation and both backends): "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
