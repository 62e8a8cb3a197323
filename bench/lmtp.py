"""LMTP delivery benchmark: ``python3 -m bench.lmtp [--messages N] [--no-dovecot]``.

Runs the same load against ``roost serve`` and, when Debian's
``dovecot-lmtpd`` is installed, a throwaway Dovecot LMTP instance (its own
config, Maildir and passwd-file userdb in a temp dir, fsync at its default):
5 KB messages plus a few 1 MB ones, one recipient each, spread over four
accounts, at concurrency 1 and 8. Prints msgs/s, p50/p99 latency of a whole
transaction (MAIL to the last reply), server CPU ms per message (from
``/proc/<pid>/stat`` of the server and its children) and Roost/Dovecot ratios.
Both servers acknowledge only fsynced mail.
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

from bench.proc import add_workers_option, cpu_seconds, start_roost

USERS = [f"bench{i}@example.org" for i in range(4)]
SMALL = 5 * 1024
LARGE = 1024 * 1024
LARGE_EVERY = 100     # one 1 MB message in every 100


def make_message(n, size):
    head = (f"From: load@example.net\r\nTo: bench@example.org\r\nSubject: bench {n}\r\n"
            f"Message-ID: <bench-{n}-{time.time_ns()}@bench.example>\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = line * ((size - len(head)) // len(line) + 1)
    return head + body[:size - len(head) - 2] + b"\r\n"


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.reply()
        self.sock.sendall(b"LHLO bench.example\r\n")
        self.reply()

    def reply(self):
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("closed")
            if line[3:4] != b"-":
                return int(line[:3])

    def deliver(self, rcpt, data):
        # PIPELINING: envelope and DATA in one write, then the message.
        self.sock.sendall(f"MAIL FROM:<load@example.net>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode())
        codes = [self.reply() for _ in range(3)]
        if codes != [250, 250, 354]:
            raise RuntimeError(f"unexpected replies {codes}")
        self.sock.sendall(data + b".\r\n")
        code = self.reply()
        if code != 250:
            raise RuntimeError(f"delivery refused: {code}")

    def close(self):
        try:
            self.sock.sendall(b"QUIT\r\n")
        except OSError:
            pass
        self.file.close()
        self.sock.close()


def run_load(port, pid, concurrency, count):
    small = [make_message(i, SMALL) for i in range(64)]
    large = make_message(-1, LARGE)
    latencies = []
    lock = threading.Lock()
    counter = iter(range(count))
    errors = []

    def worker():
        client = Client(port)
        mine = []
        try:
            for n in counter:
                data = large if n % LARGE_EVERY == LARGE_EVERY - 1 else small[n % len(small)]
                # Unique Message-IDs: servers that suppress duplicates must store all.
                data = data.replace(b"<bench-", f"<n{n}-bench-".encode(), 1)
                t0 = time.perf_counter()
                client.deliver(USERS[n % len(USERS)], data)
                mine.append(time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            client.close()
            with lock:
                latencies.extend(mine)

    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    cpu = cpu_seconds(pid) - cpu0
    if errors:
        raise RuntimeError(f"{len(errors)} connections failed: {errors[0]}")
    latencies.sort()
    n = len(latencies)
    return {"msgs": n, "rate": n / elapsed, "p50": latencies[n // 2] * 1000,
            "p99": latencies[min(n - 1, int(n * 0.99))] * 1000, "cpu_ms": cpu * 1000 / n}


# --- servers ------------------------------------------------------------------

class RoostUnderTest:
    name = "roost"

    def __init__(self, tmp):
        self.data = os.path.join(tmp, "roost")
        self.proc = None

    def start(self):
        roost = [sys.executable, "-m", "roost.server.cli", "--data", self.data]
        for user in USERS:
            subprocess.run([*roost, "user", "add", user, "--password-stdin"], input=b"pw\n",
                           check=True, capture_output=True)
        self.proc, ports = start_roost([*roost, "serve"], {"lmtp": "127.0.0.1:0"})
        self.port, self.pid = ports["lmtp"], self.proc.pid
        return self

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(60)


DOVECOT_CONF = """\
base_dir = {tmp}/run
state_dir = {tmp}/state
log_path = {tmp}/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
auth_mechanisms = plain
mail_location = maildir:{tmp}/mail/%d/%n
mail_uid = {uid}
mail_gid = {gid}
first_valid_uid = {uid}
passdb {{
  driver = passwd-file
  args = {tmp}/passwd
}}
userdb {{
  driver = passwd-file
  args = {tmp}/passwd
  default_fields = home={tmp}/home/%d/%n
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {port}
  }}
  unix_listener lmtp {{
    mode = 0600
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0600
  }}
}}
"""


class DovecotUnderTest:
    name = "dovecot"

    def __init__(self, tmp):
        self.tmp = os.path.join(tmp, "dovecot")
        self.pid = None

    @staticmethod
    def available():
        return shutil.which("dovecot") and os.path.exists("/usr/lib/dovecot/lmtp")

    def start(self):
        import pwd
        os.makedirs(self.tmp)
        os.chmod(self.tmp, 0o755)
        user = pwd.getpwnam("nobody") if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())
        for sub in ("mail", "home"):
            os.makedirs(os.path.join(self.tmp, sub))
            os.chown(os.path.join(self.tmp, sub), user.pw_uid, user.pw_gid)
        with open(os.path.join(self.tmp, "passwd"), "w") as f:
            for u in USERS:
                f.write(f"{u}:{{PLAIN}}pw:{user.pw_uid}:{user.pw_gid}::::\n")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.conf = os.path.join(self.tmp, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(DOVECOT_CONF.format(tmp=self.tmp, port=self.port, uid=user.pw_uid,
                                        gid=user.pw_gid))
        subprocess.run(["dovecot", "-c", self.conf], check=True)
        pidfile = os.path.join(self.tmp, "run", "master.pid")
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                with open(pidfile) as f:
                    self.pid = int(f.read().strip())
                return self
            except (OSError, ValueError):
                time.sleep(0.1)
        raise RuntimeError("dovecot did not start; see " + os.path.join(self.tmp, "dovecot.log"))

    def stop(self):
        subprocess.run(["dovecot", "-c", self.conf, "stop"], check=False)
        if self.pid:
            for _ in range(100):
                try:
                    os.kill(self.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=400, help="messages per run at C=1 (C=8 sends 3x)")
    p.add_argument("--no-dovecot", action="store_true")
    add_workers_option(p)
    args = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="roost-bench-")
    os.chmod(tmp, 0o755)
    servers = [RoostUnderTest(tmp)]
    if not args.no_dovecot:
        if DovecotUnderTest.available():
            servers.append(DovecotUnderTest(tmp))
        else:
            print("dovecot-lmtpd is not installed: Roost only")
    results = {}
    try:
        for server in servers:
            server.start()
            try:
                run_load(server.port, server.pid, 2, 40)   # warm up
                for c in (1, 8):
                    count = args.messages * (1 if c == 1 else 3)
                    r = run_load(server.port, server.pid, c, count)
                    results[(server.name, c)] = r
                    print(f"{server.name:8} C={c}: {r['msgs']:5d} msgs  {r['rate']:8.1f} msgs/s  "
                          f"p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  "
                          f"server CPU {r['cpu_ms']:6.2f} ms/msg", flush=True)
            finally:
                server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for c in (1, 8):
        if ("dovecot", c) in results:
            ratio = results[("roost", c)]["rate"] / results[("dovecot", c)]["rate"]
            print(f"ratio roost/dovecot msgs/s at C={c}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
