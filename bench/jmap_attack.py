"""JMAP abuse benchmark: ``python -m bench.jmap_attack [--calls 22] [--chunked-mb 300]``.

Starts ``roost serve`` with only JMAP, two accounts (an attacker and an
honest client), and while the honest client sends a small request
(``Mailbox/get`` + ``Core/echo``) every 20 ms, measures:

- result-reference growth: one request of ``--calls`` ``Core/echo`` calls,
  each echoing the previous call's whole arguments twice through result
  references (about 3 KB sent; every call's result is twice the previous
  one): what the server answers, how long it takes, how large the answer is,
  and the server's RSS growth;
- an unauthenticated chunked POST to the API of ``--chunked-mb`` MB, sent as
  fast as the server takes it: when the 401 arrives, how many bytes the
  server took, and the peak size of files the server held open meanwhile
  (Twisted buffers request bodies in temporary files) and its RSS growth;

and prints the honest client's latency (p50/p99/max) before and during each.
Figures only: nothing is asserted.
"""

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time

import httpx

from bench.jmap import pct, server_pid, start_server
from bench.proc import rss_bytes

ATTACKER, HONEST = ("mallory@example.org", "mallory-pw"), ("honest@example.org", "honest-pw")
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


def build(data):
    from roost.server.auth import hash_password
    from roost.storage.store import Store
    store = Store.open(data)
    for user, password in (ATTACKER, HONEST):
        store.add_account(user, hash_password(password))
    store.close()


def echo_attack(calls, payload=200):
    """The request: call 0 echoes ``payload`` bytes, call i echoes call i-1's
    arguments twice."""
    ref = {"name": "Core/echo", "path": ""}
    out = [["Core/echo", {"p": "x" * payload}, "0"]]
    for i in range(1, calls):
        out.append(["Core/echo", {"#a": dict(ref, resultOf=str(i - 1)),
                                  "#b": dict(ref, resultOf=str(i - 1))}, str(i)])
    return {"using": ["urn:ietf:params:jmap:core"], "methodCalls": out}


class Sampler:
    """Samples the server's RSS and the bytes of regular files it holds open."""

    def __init__(self, pid):
        self.pid = pid
        self.rss0 = rss_bytes(pid)
        self.rss = self.rss0
        self.files = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _open_file_bytes(self):
        total = 0
        try:
            fds = os.listdir(f"/proc/{self.pid}/fd")
        except OSError:
            return 0
        for fd in fds:
            try:
                st = os.stat(f"/proc/{self.pid}/fd/{fd}")
            except OSError:
                continue
            if (st.st_mode & 0o170000) == 0o100000 and not os.readlink(
                    f"/proc/{self.pid}/fd/{fd}").endswith((".db", ".db-wal", ".db-shm")):
                total += st.st_size
        return total

    def _run(self):
        while not self.stop.is_set():
            self.rss = max(self.rss, rss_bytes(self.pid))
            self.files = max(self.files, self._open_file_bytes())
            time.sleep(0.01)

    def done(self):
        self.stop.set()
        self.thread.join()
        return self.rss - self.rss0, self.files


class Honest:
    """A well-behaved client on its own account, timing each request."""

    def __init__(self, base):
        self.http = httpx.Client(auth=HONEST, follow_redirects=True, timeout=300)
        session = self.http.get(base + "/.well-known/jmap").json()
        self.url, self.account = session["apiUrl"], next(iter(session["accounts"]))
        self.times = []
        self.errors = 0
        self.stop = threading.Event()
        self.thread = None

    def one(self):
        t = time.perf_counter()
        try:
            r = self.http.post(self.url, json={"using": USING, "methodCalls": [
                ["Mailbox/get", {"accountId": self.account}, "m"],
                ["Core/echo", {"hello": "world"}, "e"]]})
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        self.times.append((time.perf_counter() - t) * 1000)
        self.errors += not ok

    def measure(self, n):
        self.times = []
        for _ in range(n):
            self.one()
            time.sleep(0.02)
        return self.times

    def start(self):
        self.times, self.errors = [], 0
        self.stop.clear()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stop.is_set():
            self.one()
            time.sleep(0.02)

    def finish(self):
        self.stop.set()
        self.thread.join()
        return self.times


def latency(label, times, errors=0):
    if not times:
        return f"{label}: no request completed"
    return (f"{label}: p50 {pct(times, 50):.1f} ms, p99 {pct(times, 99):.1f} ms, "
            f"max {max(times):.1f} ms ({len(times)} requests, {errors} failed)")


def run_refs(base, pid, honest, calls):
    body = json.dumps(echo_attack(calls)).encode()
    http = httpx.Client(auth=ATTACKER, follow_redirects=True, timeout=600)
    url = http.get(base + "/.well-known/jmap").json()["apiUrl"]
    sampler = Sampler(pid)
    honest.start()
    t = time.perf_counter()
    try:
        r = http.post(url, content=body, headers={"Content-Type": "application/json"})
        took = time.perf_counter() - t
        size = len(r.content)
        answer = f"HTTP {r.status_code}"
        if r.status_code == 200:
            doc = r.json()
            errors = [c for c in doc["methodResponses"] if c[0] == "error"]
            answer += (f", {len(doc['methodResponses'])} responses, {len(errors)} errors"
                       + (f" (first: {errors[0][1]['type']} at call {errors[0][2]})" if errors else ""))
            del doc
        else:
            answer += f" {r.text[:200]}"
        del r
    except httpx.HTTPError as exc:
        took, size, answer = time.perf_counter() - t, 0, f"failed: {exc!r}"
    time.sleep(0.2)
    times = honest.finish()
    rss, _files = sampler.done()
    print(f"result references: {calls} Core/echo calls, {len(body)} bytes sent -> {answer}; "
          f"response {size / 1e6:.1f} MB in {took:.2f} s; server RSS +{rss / 1e6:.0f} MB")
    print("  " + latency("honest client meanwhile", times, honest.errors))
    http.close()


def run_chunked(port, pid, honest, megabytes):
    sampler = Sampler(pid)
    honest.start()
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /jmap/api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"%x\r\n" % 65536 + b" " * 65536 + b"\r\n"
    reply = bytearray()
    got_at = None
    sent = 0
    pending = memoryview(chunk)
    t = time.perf_counter()
    sock.setblocking(False)
    try:
        while sent < megabytes * 1024 * 1024:
            try:
                data = sock.recv(65536)
                if data:
                    reply += data
                    if got_at is None and b"\r\n\r\n" in reply:
                        got_at = (time.perf_counter() - t, sent)
                elif got_at is not None:
                    break
                else:
                    break
            except BlockingIOError:
                pass
            try:
                n = sock.send(pending)
                sent += n
                pending = pending[n:] if n < len(pending) else memoryview(chunk)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break
    finally:
        sock.setblocking(True)
        sock.settimeout(5)
        try:
            if got_at is None:
                sock.sendall(b"0\r\n\r\n")
            while got_at is None:
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
                if b"\r\n\r\n" in reply:
                    got_at = (time.perf_counter() - t, sent)
        except OSError:
            pass
        sock.close()
    time.sleep(0.2)
    times = honest.finish()
    rss, files = sampler.done()
    status = bytes(reply).split(b"\r\n", 1)[0].decode("latin-1", "replace") or "no reply"
    when = (f"after {got_at[0]:.2f} s and {got_at[1] / 1e6:.1f} MB sent" if got_at
            else "never")
    print(f"unauthenticated chunked POST of {megabytes} MB: '{status}' {when}; "
          f"server held {files / 1e6:.1f} MB in open files, RSS +{rss / 1e6:.0f} MB")
    print("  " + latency("honest client meanwhile", times, honest.errors))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=22)
    ap.add_argument("--chunked-mb", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="roost-bench-attack-") as tmp:
        data = os.path.join(tmp, "data")
        build(data)
        proc, ports = start_server(data)
        try:
            pid = server_pid(ports) or proc.pid
            base = f"http://127.0.0.1:{ports['jmap']}"
            honest = Honest(base)
            honest.measure(5)
            print(latency("honest client, idle server", honest.measure(50)))
            print(f"server RSS at rest: {rss_bytes(pid) / 1e6:.0f} MB")
            run_refs(base, pid, honest, args.calls)
            print(f"server RSS after: {rss_bytes(pid) / 1e6:.0f} MB")
            run_chunked(ports["jmap"], pid, honest, args.chunked_mb)
            print(f"server RSS after: {rss_bytes(pid) / 1e6:.0f} MB")
        finally:
            proc.terminate()
            proc.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
