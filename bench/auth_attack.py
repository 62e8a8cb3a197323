"""Login flood: bogus IMAP LOGINs against one honest client.

    python -m bench.auth_attack [--attackers 256] [--seconds 20] [--sources many|one]
                                [--python PATH]

``--attackers`` connections (in a separate process) each keep one bogus
LOGIN in flight, reconnecting when the server hangs up: half for unknown
random addresses, half for the real account with wrong passwords. With
``--sources many`` each attacker connects from its own loopback address
(127.1.x.y: a distributed attack, which per-address penalties cannot stop, so
the argon2 pool's bound is what is measured); with ``one`` all come from
127.0.0.2. Meanwhile one honest client on 127.0.0.1 loops connect, LOGIN,
SELECT INBOX, LOGOUT.

Prints the server's RSS before and its peak during the attack, the honest
client's p50/p99 per loop alone and under attack (and how often its LOGIN was
refused as busy), what the attackers were answered, and how long a failed
LOGIN takes for an unknown address and for a real one (fresh sources).
``--python`` runs the server with another interpreter, e.g. a venv holding
an earlier commit, for before/after figures.
"""

import argparse
import asyncio
import multiprocessing
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from bench.proc import cpu_seconds, pct, rss_bytes

USER, PASSWORD = "owner@example.org", "owner-password"
TAG = re.compile(rb"^(a\d+) (OK|NO|BAD)(.*)")


# --- the server ------------------------------------------------------------------

class Server:
    def __init__(self, python, tmp):
        data = os.path.join(tmp, "data")
        cli = [python, "-m", "roost.server.cli", "--data", data]
        subprocess.run(cli + ["user", "add", USER, "--password-stdin"],
                       input=PASSWORD.encode() + b"\n", check=True, capture_output=True)
        conf = os.path.join(tmp, "roost.toml")
        with open(conf, "w") as f:
            f.write("[limits]\nconnections_per_user_ip = 0\n")
        off = [a for n in ("imaps", "lmtp", "jmap", "submission", "smtp", "managesieve")
               for a in (f"--{n}", "off")]
        self.proc = subprocess.Popen(cli + ["--config", conf, "serve", "--imap", "127.0.0.1:0", *off],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        while True:
            line = self.proc.stdout.readline().decode()
            if not line:
                raise RuntimeError("roost serve did not start")
            m = re.match(r"roost: imap listening on [\d.]+:(\d+)", line)
            if m:
                self.port = int(m.group(1))
            if line.startswith("roost: ready"):
                break
        self.log = os.path.join(tmp, "server.log")
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        with open(self.log, "wb") as f:
            for line in iter(self.proc.stdout.readline, b""):
                f.write(line)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- the honest client -------------------------------------------------------------

class Line:
    def __init__(self, port, source=None, timeout=120):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self.n = 0

    def cmd(self, text):
        self.n += 1
        tag = b"a%d" % self.n
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("closed")
            if line.startswith(tag + b" "):
                return line.rstrip()

    def close(self):
        self.file.close()
        self.sock.close()


def honest_loop(port, stop, times, refused):
    while not stop.is_set():
        start = time.perf_counter()
        while True:
            c = Line(port)
            try:
                reply = c.cmd(f'LOGIN "{USER}" "{PASSWORD}"')
            except ConnectionError:
                reply = b"(connection closed)"
            if b" OK" in reply[:8]:
                break
            c.close()
            refused.append(reply)
            time.sleep(0.2)
        assert c.cmd("SELECT INBOX").split()[1] == b"OK"
        c.cmd("LOGOUT")
        c.close()
        times.append(time.perf_counter() - start)



# --- the attackers (a separate process) ----------------------------------------------

def _source(i, mode):
    return "127.0.0.2" if mode == "one" else f"127.1.{i // 200}.{i % 200 + 1}"


async def _attacker(i, port, mode, deadline, counts):
    rnd = random.Random(i)
    n = 0
    while time.monotonic() < deadline:
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, local_addr=(_source(i, mode), 0)), 10)
            await asyncio.wait_for(reader.readline(), 30)
            while time.monotonic() < deadline:
                n += 1
                user = USER if i % 2 else f"nobody{rnd.randrange(10**9)}@example.org"
                writer.write(b'a%d LOGIN "%s" "guess%d"\r\n' % (n, user.encode(), rnd.randrange(10**9)))
                while True:
                    line = await asyncio.wait_for(reader.readline(), 30)
                    if not line:
                        raise ConnectionError
                    m = TAG.match(line)
                    if m:
                        kind = b"UNAVAILABLE" if b"UNAVAILABLE" in line else \
                            b"AUTHENTICATIONFAILED" if b"AUTHENTICATIONFAILED" in line else m.group(2)
                        counts[kind.decode()] = counts.get(kind.decode(), 0) + 1
                        break
        except (ConnectionError, OSError, asyncio.TimeoutError):
            counts["reconnect"] = counts.get("reconnect", 0) + 1
            await asyncio.sleep(0.05)
        finally:
            if writer is not None:
                writer.close()


def attack(port, n, mode, seconds, out):
    counts = {}
    deadline = time.monotonic() + seconds

    async def main():
        await asyncio.gather(*(_attacker(i, port, mode, deadline, counts) for i in range(n)))
    asyncio.run(main())
    out.put(counts)


# --- failed-login timing ---------------------------------------------------------------

def failure_times(port, rounds=6):
    """Seconds to a NO for an unknown address and for the real one with a
    wrong password, each from a fresh source (no earlier penalty)."""
    out = {"unknown": [], "known": []}
    for r in range(rounds):
        for j, (kind, user) in enumerate((("unknown", f"nobody{r}@example.org"), ("known", USER))):
            c = Line(port, source=f"127.2.{r}.{j + 1}")
            start = time.perf_counter()
            c.cmd(f'LOGIN "{user}" "wrong"')
            out[kind].append(time.perf_counter() - start)
            c.close()
    return {k: statistics.median(v) for k, v in out.items()}


# --- main ------------------------------------------------------------------------------

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--attackers", type=int, default=256)
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--sources", choices=("many", "one"), default="many")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs the server")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="roost-auth-bench-")
    server = Server(args.python, tmp)
    try:
        times, refused = [], []
        stop = threading.Event()
        t = threading.Thread(target=honest_loop, args=(server.port, stop, times, refused))
        t.start()
        time.sleep(5)
        stop.set()
        t.join()
        alone = list(times)
        rss0, cpu0 = rss_bytes(server.proc.pid), cpu_seconds(server.proc.pid)

        queue = multiprocessing.Queue()
        attackers = multiprocessing.Process(target=attack, args=(
            server.port, args.attackers, args.sources, args.seconds, queue))
        attackers.start()
        times.clear()
        stop.clear()
        t = threading.Thread(target=honest_loop, args=(server.port, stop, times, refused))
        t.start()
        peak = rss0
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            peak = max(peak, rss_bytes(server.proc.pid))
            time.sleep(0.1)
        stop.set()
        counts = queue.get(timeout=300)
        attackers.join()
        t.join()
        cpu = cpu_seconds(server.proc.pid) - cpu0
        slow = failure_times(server.port)
    finally:
        server.stop()
        if server.proc.returncode not in (0, -signal.SIGTERM):
            print(f"roost serve exited {server.proc.returncode}; log in {server.log}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    mib = 1 << 20
    print(f"server: {args.python}")
    print(f"attack: {args.attackers} connections from {args.sources} source(s), {args.seconds:.0f} s")
    print(f"server RSS: {rss0 / mib:.0f} MiB before, {peak / mib:.0f} MiB peak under attack "
          f"(+{(peak - rss0) / mib:.0f} MiB); server CPU {cpu:.1f} s")
    print(f"honest LOGIN+SELECT+LOGOUT alone:        n={len(alone):5d}  "
          f"p50 {pct(alone, .5) * 1000:8.1f} ms  p99 {pct(alone, .99) * 1000:8.1f} ms")
    print(f"honest LOGIN+SELECT+LOGOUT under attack: n={len(times):5d}  "
          f"p50 {pct(times, .5) * 1000:8.1f} ms  p99 {pct(times, .99) * 1000:8.1f} ms  "
          f"(LOGIN refused {len(refused)}x)")
    total = sum(v for k, v in counts.items() if k != "reconnect")
    print(f"attacker replies: {total} ({total / args.seconds:.0f}/s) " +
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(f"failed LOGIN, median: unknown address {slow['unknown'] * 1000:.0f} ms, "
          f"real address {slow['known'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
