"""IMAP benchmark: Roost against a throwaway Dovecot, same load, same run.

    python -m bench.imap [--messages 10000] [--sessions 20] [--idle 10000] [--sort-reps 10]
                         [--concurrency 1,10,50] [--mixed SECONDS] [--workers N]

Each session: LOGIN, SELECT INBOX, UID FETCH 1:* (FLAGS), 50 single
UID FETCH n BODY.PEEK[], 50 UID STORE, LOGOUT, on a mailbox of
``--messages`` messages. Prints cmds/s, p50/p99 per command, server CPU per
session (from /proc: the server and its worker processes), the same with
10 and 50 clients running sessions at once (``--concurrency``), the cold
SELECT and the FETCH FLAGS times, then the
RSS growth of the server with ``--idle`` connections sitting in IDLE (on a
small mailbox, so the figure is the cost of a connection, not of a mailbox
view). Dovecot (Debian ``dovecot-imapd``) runs from a temp directory when
installed; the ratio column is Roost / Dovecot (lower is better).

Then, on the same 10k INBOX (messages in threads of five, Re: subjects,
References, dates out of arrival order): resync of an unchanged mailbox
(SELECT INBOX (QRESYNC (uidvalidity modseq)) + UID FETCH 1:* (FLAGS)
(CHANGEDSINCE modseq)), the same after another connection changed 100 flags,
UID SORT by ARRIVAL, DATE, FROM and SUBJECT, and UID THREAD REFERENCES: the
first run of each (cold: the server's caches empty) and the p50 of
``--sort-reps`` more, as client-seen latency and as server CPU per command
(the process's CPU over the repetitions). The two servers' SORT and THREAD
answers are compared (they are the same algorithm, RFC 5256).
"""

import argparse
import email.utils
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from bench import proc
from bench.proc import (TaggedCommands, add_workers_option, cpu_seconds, pct, rss_bytes,
                        start_roost)

USER, PASSWORD = "bench@example.org", "benchpass"


# --- a minimal, fast IMAP client ---------------------------------------------------

class Client(TaggedCommands):
    tag_prefix = b'b'

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb", buffering=1 << 16)
        self.file.readline()
        self.n = 0

    def close(self):
        self.file.close()
        self.sock.close()

    def lines(self, text):
        """Send one command; its untagged response lines (literals dropped)."""
        self.n += 1
        tag = b"r%d" % self.n
        self.sock.sendall(tag + b" " + text + b"\r\n")
        out = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line.decode(errors="replace"))
                return out
            if line.endswith(b"}\r\n") and b"{" in line:
                self.file.read(int(line[line.rindex(b"{") + 1:-3]))
            out.append(line.rstrip(b"\r\n"))


def session(port, uids, timings):
    t = time.perf_counter
    start = t()
    c = Client(port)
    timings.setdefault("connect", []).append(t() - start)

    def timed(name, text):
        s = t()
        c.cmd(text)
        timings.setdefault(name, []).append(t() - s)
    timed("LOGIN", f'LOGIN "{USER}" "{PASSWORD}"'.encode())
    timed("SELECT", b"SELECT INBOX")
    timed("UID FETCH 1:* (FLAGS)", b"UID FETCH 1:* (FLAGS)")
    for uid in random.sample(uids, 50):
        timed("UID FETCH BODY.PEEK[]", b"UID FETCH %d BODY.PEEK[]" % uid)
    for i, uid in enumerate(random.sample(uids, 50)):
        timed("UID STORE", b"UID STORE %d %sFLAGS (\\Flagged)" % (uid, b"+" if i % 2 == 0 else b"-"))
    timed("LOGOUT", b"LOGOUT")
    c.close()


# --- the message set -------------------------------------------------------------

def make_messages(n):
    """``n`` messages in threads of five (a topic, then four replies each
    referring to the previous one), dated out of arrival order."""
    rnd = random.Random(42)
    words = "alpha beta gamma delta meeting report invoice lunch roost dovecot".split()
    base = 1772445600      # Mon, 2 Mar 2026 10:00:00 +0000
    for i in range(n):
        body = " ".join(rnd.choice(words) for _ in range(rnd.randint(20, 400)))
        root = i - i % 5
        subject = f"{'Re: ' if i != root else ''}topic {root} {words[root % len(words)]}"
        refs = " ".join(f"<bench-{j}@example.net>" for j in range(root, i))
        thread = f"In-Reply-To: <bench-{i - 1}@example.net>\r\nReferences: {refs}\r\n" if refs else ""
        date = email.utils.formatdate(base + (i * 7919) % n * 60, usegmt=True)
        yield (f"From: Sender {i % 97} <s{i % 97}@example.net>\r\nTo: {USER}\r\n"
               f"Subject: {subject}\r\nDate: {date}\r\n"
               f"Message-ID: <bench-{i}@example.net>\r\n{thread}\r\n{body}\r\n").encode()


# --- Roost -----------------------------------------------------------------------

class RoostPeer:
    name = "roost"

    def __init__(self, tmp, n):
        self.data = os.path.join(tmp, "roost")
        env = dict(os.environ)
        cli = [sys.executable, "-m", "roost.server.cli", "--data", self.data]
        subprocess.run(cli + ["user", "add", USER, "--password-stdin"], input=PASSWORD.encode() + b"\n",
                       check=True, capture_output=True, env=env)
        from roost.storage.delivery import Delivery, Incoming
        from roost.storage.store import Store
        store = Store.open(self.data)
        delivery = Delivery(store)
        acct = store.account(USER)
        inbox = store.mailbox(acct.id, "INBOX")
        batch = []
        for data in make_messages(n):
            batch.append(Incoming(data, account=acct, mailboxes=(inbox,)))
            if len(batch) == 1000:
                delivery.store(*batch)
                batch = []
        if batch:
            delivery.store(*batch)
        idle = store.create_mailbox(acct.id, "Idle")
        delivery.store(*(Incoming(d, account=acct, mailboxes=(idle,)) for d in make_messages(10)))
        delivery.close()
        store.close()
        conf = os.path.join(tmp, "roost-bench.toml")
        with open(conf, "w") as f:   # the idle test holds thousands of sessions of one account
            f.write("[limits]\nconnections_per_user_ip = 0\nunauthenticated_connections_per_ip = 0\n"
                    "unauthenticated_connections = 0\n")
        self.proc, ports = start_roost(cli + ["--config", conf, "serve"], {"imap": "127.0.0.1:0"},
                                       env=env)
        self.port, self.pid = ports["imap"], self.proc.pid

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.proc.stdout.close()


# --- Dovecot ---------------------------------------------------------------------

class DovecotPeer:
    name = "dovecot"

    def __init__(self, tmp, n, messages=None):
        """A Dovecot whose INBOX holds ``messages`` (default: ``n`` generated ones)."""
        import pwd
        self.dir = os.path.join(tmp, "dovecot")
        os.makedirs(self.dir)
        os.chmod(tmp, 0o755)
        mail_user = pwd.getpwnam("dovecot")
        home = os.path.join(self.dir, "home")
        inbox = make_messages(n) if messages is None else messages
        for box, msgs in (("", inbox), (".Idle", make_messages(10))):
            cur = os.path.join(home, "Maildir", box, "cur")
            for sub in ("cur", "new", "tmp"):
                os.makedirs(os.path.join(home, "Maildir", box, sub), exist_ok=True)
            for i, data in enumerate(msgs):
                with open(os.path.join(cur, f"{1700000000 + i}.M{i}P1.bench,S={len(data)}:2,"), "wb") as f:
                    f.write(data)
        with open(os.path.join(self.dir, "passwd"), "w") as f:
            f.write(f"{USER}:{{PLAIN}}{PASSWORD}::::::\n")
        self.port = _free_port()
        conf = os.path.join(self.dir, "dovecot.conf")
        with open(conf, "w") as f:
            f.write(f"""base_dir = {self.dir}/run
state_dir = {self.dir}/state
log_path = {self.dir}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
mail_location = maildir:~/Maildir
default_internal_user = dovecot
default_login_user = dovenull
passdb {{
  driver = passwd-file
  args = {self.dir}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user.pw_uid} gid={mail_user.pw_gid} home={home}
}}
service imap-login {{
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = 20000
}}
service imap-login {{
  process_limit = 20000
  client_limit = 1000
}}
default_client_limit = 20000
default_vsz_limit = 0
protocol imap {{
  mail_max_userip_connections = 1000
}}
""")
        subprocess.run(["chown", "-R", f"{mail_user.pw_uid}:{mail_user.pw_gid}", home], check=True)
        self.proc = subprocess.Popen(["dovecot", "-F", "-c", conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("dovecot did not start; see " + os.path.join(self.dir, "dovecot.log"))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- measurements ----------------------------------------------------------------


def run_sessions(peer, n_messages, sessions, concurrency=(1,)):
    uids = list(range(1, n_messages + 1))
    # Cold SELECT: the first SELECT after the server started (indexes not yet warm).
    c = Client(peer.port)
    c.cmd(f'LOGIN "{USER}" "{PASSWORD}"'.encode())
    t = time.perf_counter()
    c.cmd(b"SELECT INBOX")
    cold_select = time.perf_counter() - t
    t = time.perf_counter()
    c.cmd(b"UID FETCH 1:* (FLAGS)")
    first_flags = time.perf_counter() - t
    c.cmd(b"LOGOUT")
    c.close()
    out = {"cold SELECT": cold_select, "first UID FETCH 1:* (FLAGS)": first_flags}
    for clients in concurrency:
        timings = {}
        cpu0 = cpu_seconds(peer.pid)
        wall0 = time.perf_counter()
        per_client = max(1, sessions // clients)
        threads = [threading.Thread(target=lambda: [session(peer.port, uids, timings)
                                                    for _ in range(per_client)])
                   for _ in range(clients)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        wall = time.perf_counter() - wall0
        cpu = cpu_seconds(peer.pid) - cpu0
        ncmds = sum(len(v) for k, v in timings.items() if k != "connect")
        suffix = "" if clients == concurrency[0] else f" C={clients}"
        out["cmds/s" + suffix] = ncmds / wall
        out["cpu/session" + suffix] = cpu / (per_client * clients)
        if not suffix:
            out["timings"] = timings
    return out


SORTS = [("UID SORT (ARRIVAL)", b"UID SORT (ARRIVAL) UTF-8 ALL"),
         ("UID SORT (DATE)", b"UID SORT (DATE) UTF-8 ALL"),
         ("UID SORT (FROM)", b"UID SORT (FROM) UTF-8 ALL"),
         ("UID SORT (SUBJECT)", b"UID SORT (SUBJECT) UTF-8 ALL"),
         ("UID THREAD REFERENCES", b"UID THREAD REFERENCES UTF-8 ALL")]


def sort_and_resync(peer, n_messages, reps):
    """``{label: (cold seconds, p50 seconds, server CPU seconds per command)}``
    and ``{label: response}`` of the SORT/THREAD commands."""
    out, answers = {}, {}
    c = Client(peer.port)
    c.cmd(f'LOGIN "{USER}" "{PASSWORD}"'.encode())
    c.cmd(b"ENABLE QRESYNC")
    other = Client(peer.port)
    other.cmd(f'LOGIN "{USER}" "{PASSWORD}"'.encode())
    other.cmd(b"SELECT INBOX")

    def state():
        lines = c.lines(b"SELECT INBOX")
        text = b" ".join(lines).decode()
        uv = int(text.split("UIDVALIDITY ", 1)[1].split("]", 1)[0])
        ms = int(text.split("HIGHESTMODSEQ ", 1)[1].split("]", 1)[0])
        c.cmd(b"UID FETCH 1:* (FLAGS)")
        c.cmd(b"UNSELECT")
        return uv, ms

    def measure(label, run, before=None):
        times, cpu = [], 0.0
        for i in range(reps + 1):
            if before:
                before()
            cpu0 = cpu_seconds(peer.pid)
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
            if i:
                cpu += cpu_seconds(peer.pid) - cpu0
        out[label] = (times[0], pct(times[1:], 0.5), cpu / max(reps, 1))

    uidvalidity, modseq = state()

    def resync(since):
        def run():
            c.lines(b"SELECT INBOX (QRESYNC (%d %d))" % (uidvalidity, since[0]))
            c.lines(b"UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % since[0])
            c.cmd(b"UNSELECT")
        return run
    measure("resync, unchanged", resync([modseq]))
    since = [modseq]
    fresh = list(range(1, n_messages + 1))
    random.Random(7).shuffle(fresh)     # each repetition flags 100 messages not yet flagged

    def change():
        since[0] = state()[1]
        for _ in range(100):
            other.cmd(b"UID STORE %d +FLAGS.SILENT (\\Flagged)" % fresh.pop())
    measure("resync, 100 flags changed", resync(since), before=change)
    c.cmd(b"EXAMINE INBOX")
    for label, command in SORTS:
        measure(label, lambda command=command: c.lines(command))
        answers[label] = c.lines(command)
    added = [0]

    def append():       # a new reply in thread 0, seen by ``c`` before the timed command
        added[0] += 1
        other.cmd(b"APPEND INBOX", literal=(
            f"From: New <new@example.net>\r\nSubject: Re: topic 0 alpha\r\n"
            f"Message-ID: <bench-new-{added[0]}@example.net>\r\n"
            f"References: <bench-0@example.net>\r\n\r\nnew\r\n").encode())
        c.cmd(b"NOOP")
    for label, command in (SORTS[3], SORTS[4]):
        measure(f"{label}, after an APPEND", lambda command=command: c.lines(command),
                before=append)
    c.cmd(b"LOGOUT")
    other.cmd(b"LOGOUT")
    c.close()
    other.close()
    return out, answers


def report_sort(results, answers):
    names = list(results)
    print()
    print(f"{'10k mailbox':34}" + "".join(f"{n + ' ' + k:>18}" for n in names
                                          for k in ("cold", "p50", "CPU")))
    for label in results[names[0]]:
        cells = "".join(f"{v * 1000:>18.1f}" for n in names for v in results[n][label])
        print(f"{label + ' (ms)':34}{cells}")
    if len(names) > 1 and all(answers.values()):
        for label, _cmd in SORTS:
            same = answers[names[0]][label] == answers[names[1]][label]
            print(f"  {label}: {'the same answer' if same else 'answers differ'} on both servers")


def idle_memory(peer, count):
    before = rss_bytes(peer.pid)
    conns = []
    try:
        drained = 0
        for i in range(count):
            c = Client(peer.port)
            c.sock.sendall(f'a LOGIN "{USER}" "{PASSWORD}"\r\nb SELECT Idle\r\nc IDLE\r\n'.encode())
            conns.append(c)
            if len(conns) - drained >= 200:
                _drain_idle(conns[drained:])
                drained = len(conns)
        _drain_idle(conns[drained:])
        time.sleep(1)
        after = rss_bytes(peer.pid)
    finally:
        for c in conns:
            try:
                c.sock.sendall(b"DONE\r\nz LOGOUT\r\n")
            except OSError:
                pass
            c.close()
    return after - before, len(conns)


def _drain_idle(conns):
    for c in conns:
        while True:
            line = c.file.readline()
            if not line or line.startswith(b"+ "):
                break


def report(results, idle):
    names = list(results)
    print()
    print(f"{'':34}" + "".join(f"{n:>14}" for n in names) + ("   ratio" if len(names) > 1 else ""))

    def row(label, values, unit, scale=1.0, fmt="{:>14.2f}"):
        cells = "".join(fmt.format(v * scale) for v in values)
        ratio = f"   {values[0] / values[1]:.2f}" if len(values) > 1 and values[1] else ""
        print(f"{label + ' (' + unit + ')':34}{cells}{ratio}")

    row("cmds/s", [results[n]["cmds/s"] for n in names], "1/s", fmt="{:>14.0f}")
    row("server CPU per session", [results[n]["cpu/session"] for n in names], "ms", 1000)
    for key in results[names[0]]:
        if key.startswith("cmds/s C="):
            clients = key.split("=")[1]
            row(f"cmds/s, {clients} clients", [results[n][key] for n in names], "1/s",
                fmt="{:>14.0f}")
            row(f"CPU per session, {clients} clients",
                [results[n][f"cpu/session C={clients}"] for n in names], "ms", 1000)
    row("cold SELECT", [results[n]["cold SELECT"] for n in names], "ms", 1000)
    row("first UID FETCH 1:* (FLAGS)", [results[n]["first UID FETCH 1:* (FLAGS)"] for n in names], "ms", 1000)
    for cmd in results[names[0]]["timings"]:
        if cmd == "connect":
            continue
        for p in (50, 99):
            row(f"{cmd} p{p}", [pct(results[n]["timings"][cmd], p / 100) for n in names], "ms", 1000)
    if idle:
        row("RSS growth, idle conns", [idle[n][0] for n in names], "MiB", 1 / (1 << 20))
        for n in names:
            grown, count = idle[n]
            print(f"  {n}: {count} connections in IDLE, {grown / max(count, 1) / 1024:.1f} KiB each, "
                  f"{grown / max(count, 1) * 10000 / (1 << 30):.2f} GiB per 10,000")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--idle", type=int, default=2000, help="connections held in IDLE (0: skip)")
    ap.add_argument("--no-dovecot", action="store_true")
    ap.add_argument("--sort-reps", type=int, default=10,
                    help="repetitions of each resync/SORT/THREAD measurement (0: skip them)")
    ap.add_argument("--concurrency", default="1,10,50",
                    help="clients running the sessions at once, one measurement each")
    ap.add_argument("--mixed", type=float, default=0, metavar="SECONDS",
                    help="then the mixed read/write profile (bench.mixed) for SECONDS at each "
                    "concurrency above 1")
    add_workers_option(ap)
    args = ap.parse_args(argv)
    concurrency = [int(c) for c in args.concurrency.split(",")]
    tmp = tempfile.mkdtemp(prefix="roost-bench-imap-")
    peers = [RoostPeer]
    if not args.no_dovecot:
        if shutil.which("dovecot"):
            peers.append(DovecotPeer)
        else:
            print("dovecot is not installed: Roost figures only (apt-get install dovecot-imapd)")
    results, idle, sorts, answers = {}, {}, {}, {}
    try:
        for cls in peers:
            print(f"{cls.name}: loading {args.messages} messages ...", flush=True)
            peer = cls(tmp, args.messages)
            try:
                if args.sessions:     # first: its cold SELECT is the server's first
                    results[cls.name] = run_sessions(peer, args.messages, args.sessions,
                                                     concurrency)
                if args.sort_reps:
                    sorts[cls.name], answers[cls.name] = sort_and_resync(peer, args.messages,
                                                                         args.sort_reps)
                if args.idle:
                    try:
                        idle[cls.name] = idle_memory(peer, args.idle)
                    except OSError as exc:
                        print(f"{cls.name}: idle connections failed: {exc}")
                        idle[cls.name] = (0, 0)
            finally:
                peer.stop()
        if results:
            report(results, idle)
        if sorts:
            report_sort(sorts, answers)
        if args.mixed:
            from bench import mixed
            for clients in [c for c in concurrency if c > 1]:
                print(f"\nmixed read/write profile, {clients} clients, {args.mixed:.0f} s each:")
                mixed.main(["--clients", str(clients), "--seconds", str(args.mixed)]
                           + (["--no-dovecot"] if args.no_dovecot else [])
                           + ([] if proc.WORKERS is None else ["--workers", str(proc.WORKERS)]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
