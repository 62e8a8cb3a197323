"""IMAP under attack: server memory and an honest client's latency.

    python -m bench.imap_attack [--attack literal|literal+|fetch|slow|all]
                                [--attackers 10] [--seconds 15] [--size-mb 20]

Starts ``roost serve`` (this interpreter's Roost) on a fresh data directory
with one account: INBOX holds 10 small messages, mailbox Big one message of
``--size-mb`` MB. One honest client logs in first and then loops
SELECT INBOX + UID FETCH 1:10 (FLAGS BODY.PEEK[]) for the whole run; meanwhile
``--attackers`` connections attack:

* ``literal``: ``LOGIN {40000000}`` before logging in, then the 40 MB if the
  server says ``+``; ``literal+``: the same as ``{40000000+}`` (no wait);
* ``fetch``: log in, SELECT Big, pipeline 20 FETCH 1 BODY.PEEK[] and never
  read (small receive buffer);
* ``slow``: before logging in, one byte of a LOGIN every 5 s (how long until
  the server drops them is printed).

Prints the server's RSS before and at its peak (from /proc), the honest
client's p50/p99 per loop and its loop count. Run it with another checkout's
interpreter to compare (``/path/to/old/.venv/bin/python -m bench.imap_attack``
from that checkout).
"""

import argparse
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from bench.proc import TaggedCommands, pct, rss_bytes, start_roost

USER, PASSWORD = "bench@example.org", "benchpass"
ROOST = [sys.executable, "-m", "roost.server.cli"]


class Client(TaggedCommands):
    tag_prefix = b'h'

    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(120)
        self.sock.connect(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb", buffering=1 << 16)
        self.greeting = self.file.readline()
        self.n = 0

    def close(self):
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


def start_server(data):
    subprocess.run([*ROOST, "--data", data, "user", "add", USER, "--password-stdin"],
                   input=PASSWORD.encode() + b"\n", check=True, capture_output=True)
    proc, ports = start_roost([*ROOST, "--data", data, "serve"], {"imap": "127.0.0.1:0"})
    return proc, ports["imap"]


def setup(port, size_mb):
    c = Client(port)
    c.cmd(f'LOGIN "{USER}" "{PASSWORD}"'.encode())
    for i in range(10):
        c.cmd(b"APPEND INBOX", b"From: a@example.org\r\nSubject: small %d\r\n\r\n" % i + b"x" * 2000)
    c.cmd(b"CREATE Big")
    line = b"y" * 76 + b"\r\n"
    body = line * (size_mb * 1024 * 1024 // len(line))
    c.cmd(b"APPEND Big", b"From: a@example.org\r\nSubject: big\r\n\r\n" + body)
    c.close()


def honest(port, stop, timings, errors):
    c = Client(port)
    c.cmd(f'LOGIN "{USER}" "{PASSWORD}"'.encode())
    ready.set()
    while not stop.is_set():
        t = time.perf_counter()
        try:
            c.cmd(b"SELECT INBOX")
            c.cmd(b"UID FETCH 1:10 (FLAGS BODY.PEEK[])")
        except (OSError, RuntimeError, ConnectionError) as exc:
            errors.append(repr(exc))
            return
        timings.append(time.perf_counter() - t)
    c.close()


ready = threading.Event()


def attack_literal(port, plus, stop, notes):
    try:
        c = Client(port)
    except OSError as exc:
        notes.append(f"connect: {exc}")
        return
    if not c.greeting.startswith(b"* OK"):
        notes.append(c.greeting.strip().decode(errors="replace"))
        return
    size = 40_000_000
    c.sock.sendall(b"a LOGIN {%d%s}\r\n" % (size, b"+" if plus else b""))
    if not plus:
        reply = c.file.readline()
        notes.append(reply.strip().decode(errors="replace")[:60])
        if not reply.startswith(b"+"):
            stop.wait()
            c.close()
            return
    chunk = b"z" * (1 << 20)
    sent = 0
    try:
        while sent < size and not stop.is_set():
            c.sock.sendall(chunk[:min(len(chunk), size - sent)])
            sent += len(chunk)
    except OSError as exc:
        notes.append(f"after {sent >> 20} MB: {exc.__class__.__name__}")
    stop.wait()
    c.close()


def attack_fetch(port, fetches, stop, notes):
    c = Client(port, rcvbuf=4096)
    c.cmd(f'LOGIN "{USER}" "{PASSWORD}"'.encode())
    c.cmd(b"SELECT Big")
    c.sock.sendall(b"".join(b"f%d FETCH 1 BODY.PEEK[]\r\n" % i for i in range(fetches)))
    stop.wait()
    c.close()


def attack_slow(port, stop, notes):
    c = Client(port)
    start = time.monotonic()
    payload = f'a LOGIN "{USER}" "{PASSWORD}"'.encode()
    for i in range(len(payload)):
        if stop.wait(5):
            notes.append("still connected at the end")
            break
        if select.select([c.sock], [], [], 0)[0]:
            data = c.sock.recv(4096)
            notes.append(f"dropped after ~{(time.monotonic() - start) // 10 * 10:.0f} s: "
                         f"{data.strip()[:60]!r}")
            break
        c.sock.sendall(payload[i:i + 1])
    c.close()



def run(kind, args):
    data = tempfile.mkdtemp(prefix="roost-attack-")
    proc, port = start_server(data)
    try:
        setup(port, args.size_mb)
        stop, timings, errors, notes = threading.Event(), [], [], []
        ready.clear()
        h = threading.Thread(target=honest, args=(port, stop, timings, errors), daemon=True)
        h.start()
        ready.wait(30)
        time.sleep(1)
        base_timings = len(timings)
        rss0 = peak = rss_bytes(proc.pid)
        threads = []
        for _ in range(args.attackers):
            if kind in ("literal", "literal+"):
                target, extra = attack_literal, (kind == "literal+",)
            elif kind == "fetch":
                target, extra = attack_fetch, (args.fetches,)
            else:
                target, extra = attack_slow, ()
            t = threading.Thread(target=target, args=(port, *extra, stop, notes), daemon=True)
            t.start()
            threads.append(t)
        seconds = max(args.seconds, 80) if kind == "slow" else args.seconds
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            peak = max(peak, rss_bytes(proc.pid))
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(10)
        h.join(30)
        during = timings[base_timings:]
        print(f"{kind:9} attackers={args.attackers} rss before {rss0 / 2**20:.0f} MB, peak "
              f"{peak / 2**20:.0f} MB (+{(peak - rss0) / 2**20:.0f} MB); honest loops {len(during)}, "
              f"p50 {pct(during, .5) * 1000:.1f} ms, p99 {pct(during, .99) * 1000:.1f} ms"
              + (f"; honest errors: {errors[:1]}" if errors else ""))
        seen = {}
        for n in notes:
            seen[n] = seen.get(n, 0) + 1
        for n, count in seen.items():
            print(f"    attacker: {n} (x{count})")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(data, ignore_errors=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--attack", default="all", choices=["literal", "literal+", "fetch", "slow", "all"])
    p.add_argument("--attackers", type=int, default=10)
    p.add_argument("--fetches", type=int, default=20)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--size-mb", type=int, default=20)
    args = p.parse_args(argv)
    kinds = ["literal", "literal+", "fetch"] if args.attack == "all" else [args.attack]
    print(f"roost from {os.path.dirname(os.path.dirname(__import__('roost.server').server.__file__))}")
    for kind in kinds:
        run(kind, args)


if __name__ == "__main__":
    main()
