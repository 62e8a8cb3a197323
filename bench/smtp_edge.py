"""SMTP edge benchmark: ``python3 -m bench.smtp_edge [--messages N]``.

Starts ``roost serve --smtp`` (the MX-facing edge, ``protocols.smtp.edge``)
with no pre-greeting pause and no rate limits, and delivers 5 KB messages,
one recipient each over four accounts, on persistent connections with
PIPELINING (MAIL, RCPT, DATA in one write), at concurrency 1 and 8. Two
runs: the edge's checks off (no DNS, no spam score), then with the local
spam score and the client's DNS lookups (DNSBL zone and FCrDNS) answered
by a loopback DNS server (dnslib, the test dependency; that run is
skipped without it) and greylisting on (each network allowed after its
first pass, so the steady state is measured). Prints accepts/s, p50/p99
of a transaction and server CPU ms per message. ``edge_bench()`` is the
function other benchmarks (bench/inbound.py) can call.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from bench.lmtp import make_message
from bench.proc import cpu_seconds, start_roost

USERS = [f"bench{i}@example.org" for i in range(4)]
SIZE = 5 * 1024


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.reply()
        self.sock.sendall(b"EHLO bench.example\r\n")
        self.reply()

    def reply(self):
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("closed")
            if line[3:4] != b"-":
                return int(line[:3])

    def deliver(self, rcpt, data):
        self.sock.sendall(f"MAIL FROM:<load@sender.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n"
                          .encode())
        codes = [self.reply() for _ in range(3)]
        if codes != [250, 250, 354]:
            raise RuntimeError(f"envelope refused: {codes}")
        self.sock.sendall(data.replace(b"\r\n.", b"\r\n..") + b".\r\n")
        code = self.reply()
        if code != 250:
            raise RuntimeError(f"DATA refused: {code}")

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.sock.close()


def run_load(port, pid, concurrency, count):
    messages = [make_message(i, SIZE) for i in range(64)]
    latencies, errors, lock = [], [], threading.Lock()
    counter = iter(range(count))

    def worker():
        client, mine = Client(port), []
        try:
            for n in counter:
                data = messages[n % len(messages)].replace(b"<bench-", f"<e{n}-bench-".encode(), 1)
                t0 = time.perf_counter()
                client.deliver(USERS[n % len(USERS)], data)
                mine.append(time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            client.close()
            with lock:
                latencies.extend(mine)

    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed, cpu = time.perf_counter() - t0, cpu_seconds(pid) - cpu0
    if errors:
        raise RuntimeError(f"{len(errors)} connections failed: {errors[0]}")
    latencies.sort()
    n = len(latencies)
    return {"msgs": n, "rate": n / elapsed, "p50": latencies[n // 2] * 1000,
            "p99": latencies[min(n - 1, int(n * 0.99))] * 1000, "cpu_ms": cpu * 1000 / n}


def warm_up(port):
    """One transaction per account, retried once: greylisting records the
    triplet the first time (delay 0) and lets the retry pass."""
    client = Client(port)
    try:
        for n, user in enumerate(USERS * 2):
            try:
                client.deliver(user, make_message(10_000 + n, SIZE))
            except RuntimeError:
                client.sock.sendall(b"RSET\r\n")
                while client.reply() != 250:
                    pass
    finally:
        client.close()


def start_edge(tmp, config):
    data = os.path.join(tmp, "data")
    roost = [sys.executable, "-m", "roost.server.cli", "--data", data]
    for user in USERS:
        subprocess.run([*roost, "user", "add", user, "--password-stdin"], input=b"pw\n",
                       check=True, capture_output=True)
    conf = os.path.join(tmp, "roost.toml")
    with open(conf, "w") as f:
        f.write(config)
    proc, ports = start_roost([*roost, "--config", conf, "serve"], {"smtp": "127.0.0.1:0"})
    return proc, ports["smtp"]


BASE = ("[smtp]\npregreet = 0\nmessages_per_minute = 0\nnetwork_messages_per_minute = 0\n"
        "recipients_per_minute = 0\nconnections_per_ip = 0\n")


def edge_bench(messages=2000, concurrencies=(1, 8)):
    """Run both configurations; returns ``{(label, concurrency): figures}`` and prints them."""
    results = {}
    zone = None
    runs = [("checks off", BASE + "[spam]\nenabled = false\n")]
    try:
        from dnslib.server import DNSLogger, DNSServer
        from dnslib.zoneresolver import ZoneResolver
        zone = DNSServer(ZoneResolver("1.0.0.127.in-addr.arpa. 60 IN PTR localhost.\n"
                                      "localhost. 60 IN A 127.0.0.1\n"), port=0,
                         address="127.0.0.1", logger=DNSLogger("-request,-reply,-truncated,"
                                                               "-error,-recv,-send,-data",
                                                               prefix=False))
        zone.start_thread()
        ns = f"127.0.0.1:{zone.server.server_address[1]}"
        runs.append(("DNSBL+FCrDNS+greylist+spam", BASE +
                     'dnsbl = ["zen.bench.test"]\nrequire_fcrdns = true\ngreylist = true\n'
                     'greylist_delay = "0"\ngreylist_allow_after = 1\n'
                     f'[spam]\nenabled = true\n[dns]\nnameservers = ["{ns}"]\n'))
    except ImportError:
        print("dnslib not installed: the run with DNS checks is skipped")
    try:
        for label, config in runs:
            tmp = tempfile.mkdtemp(prefix="roost-bench-edge-")
            proc, port = start_edge(tmp, config)
            try:
                warm_up(port)
                for c in concurrencies:
                    r = run_load(port, proc.pid, c, messages)
                    results[(label, c)] = r
                    print(f"smtp edge [{label}] C={c}: {r['rate']:.0f} accepts/s, "
                          f"p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, "
                          f"{r['cpu_ms']:.2f} CPU ms/msg", flush=True)
            finally:
                proc.terminate()
                proc.wait(60)
                shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if zone is not None:
            zone.stop()
            zone.server.server_close()
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    args = parser.parse_args(argv)
    edge_bench(args.messages)


if __name__ == "__main__":
    main()
