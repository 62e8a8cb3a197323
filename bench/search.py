"""Search benchmark: ``python -m bench.search [--messages 100000]``.

Builds one account with N generated messages (fixed seed, about 5 KB each,
planted words at known frequencies), then prints indexing msgs/s and p50/p99
latency of ``storage.search.search`` for a common word, a rare word, a
two-word AND, a prefix and a FROM substring: FTS5 (the default) and Whoosh
side by side, plus Dovecot's full scan of the same Maildir when Dovecot is
installed (a throwaway ``imap`` process on stdin/stdout, no daemon).

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
    fn()                                    # warm caches once
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        n = fn()
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return n, statistics.median(out), out[min(len(out) - 1, int(len(out) * 0.99))]


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- JMAP ------------------------------------------------------------------------

def jmap_queries(data, box_pk, runs, log):
    """Email/query over HTTP against ``roost serve --jmap`` on the bench data."""
    import httpx
    cli = [sys.executable, "-m", "roost.server.cli", "--data", data]
    subprocess.run(cli + ["user", "passwd", "alice@example.org", "--password-stdin"],
                   input=b"bench-secret\n", check=True, capture_output=True)
    args = cli + ["serve"]
    for name in ("imap", "imaps", "lmtp", "submission", "smtp", "managesieve"):
        args += [f"--{name}", "off"]
    proc = subprocess.Popen(args + ["--jmap", "127.0.0.1:0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    port = None
    try:
        for line in proc.stdout:
            line = line.decode(errors="replace")
            if "jmap listening on" in line:
                port = int(line.rsplit(":", 1)[1])
            if line.startswith("roost: ready") or not line:
                break
        if port is None:
            return None, "roost serve did not start a JMAP listener", 0
        http = httpx.Client(auth=("alice@example.org", "bench-secret"), timeout=120,
                            follow_redirects=True)
        session = http.get(f"http://127.0.0.1:{port}/.well-known/jmap").json()
        account = next(iter(session["accounts"]))
        rows, calls = [], [0]
        for label, _node, _q, jfilter in QUERIES:
            def one(jfilter=jfilter):
                # A keyword no message has, new on every call: the server caches
                # query results, and this measures the search, not the cache.
                calls[0] += 1
                unique = {"notKeyword": f"$bench{calls[0]}"}
                body = {"using": ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"],
                        "methodCalls": [["Email/query", {
                            "accountId": account, "calculateTotal": True, "limit": 50,
                            "filter": {"operator": "AND", "conditions": [
                                {"inMailbox": f"M{box_pk}"}, jfilter, unique]}},
                            "q"]]}
                reply = http.post(session["apiUrl"], json=body).json()["methodResponses"][0]
                if reply[0] != "Email/query":
                    raise RuntimeError(f"Email/query failed: {reply}")
                return reply[1]["total"]
            rows.append((label,) + timings(one, runs))
            log(f"  jmap: {label} done\n")
        http.close()
        with open(f"/proc/{proc.pid}/status") as f:
            rss = next(int(x.split()[1]) / 1024 for x in f if x.startswith("VmRSS:"))
        return rows, None, rss
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
                reply = command(f"SEARCH {imap_query}")
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
        results = {"FTS5": [(label,) + timings(lambda n=node: len(S.search(store, acct.id, n, box.id)),
                                               args.runs) for label, node, _q, _j in QUERIES]}
        rss = rss_mb()
        wcount = args.whoosh if args.whoosh is not None else args.messages
        if wcount and not args.reuse:
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
        jrows, jwhy, jrss = jmap_queries(os.path.join(tmp, "data"), box.id, args.runs, log)
        if jrows:
            results["JMAP (FTS5)"] = jrows
        if not args.no_dovecot:
            maildir = store.blobs.folder_path(acct.maildir_key, box.folder)
            os.makedirs(os.path.join(tmp, "dovecot"), exist_ok=True)
            rows, why = dovecot_scan(maildir, os.path.join(tmp, "dovecot"), args.dovecot_runs, log)
            if rows:
                results["Dovecot (no FTS)"] = rows
            else:
                print(f"Dovecot: skipped ({why})")
        print(f"\nSEARCH latency over {args.messages} messages (ms; IMAP-style search of one "
              f"mailbox through storage.search.search, {args.runs} runs, Dovecot "
              f"{args.dovecot_runs}):")
        print(f"{'query':<14} {'backend':<17} {'hits':>7} {'p50':>9} {'p99':>9}")
        for label, _node, _q, _j in QUERIES:
            for backend, rows in results.items():
                for r in rows:
                    if r[0] == label:
                        print(f"{label:<14} {backend:<17} {r[1]:>7} {r[2]:>9.2f} {r[3]:>9.2f}")
        print("\nJMAP rows: Email/query over HTTP (inMailbox AND the filter AND a notKeyword "
              "unique to each call, so the server's query cache never answers; calculateTotal, "
              "limit 50) to roost serve on the same data" +
              (f"; server RSS {jrss:.0f} MB" if jrows else f": skipped ({jwhy})"))
        if wcount and wcount != args.messages:
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
