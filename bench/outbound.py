"""Outbound benchmark: ``python3 -m bench.outbound [--messages N] [--no-postfix]``.

Submission → relay → a sink. The sink is an aiosmtpd server on 127.0.0.2
that accepts everything and notes when each message (by Message-ID)
arrived. Roost (``roost serve``, submission on STARTTLS + AUTH PLAIN, the
relay sending everything to the sink as its smarthost) is measured with DKIM
off and with DKIM on (an RSA and an Ed25519 key for the sender's domain), at
concurrency 1 and 8; and, when Debian's ``postfix`` is installed, a
throwaway Postfix instance (its own config and queue in a temp dir;
``relayhost`` = the sink; its clients are trusted by ``mynetworks``, so it
does no TLS and no AUTH, which favours it) takes the same load. Prints
msgs/s accepted on submission, end-to-end msgs/s (first submission to the
last arrival at the sink), p50/p99 of submission → arrival, server CPU ms
per message (``/proc`` of the server and its children), and Roost/Postfix
ratios. Every accepted message is fsynced by both before the 250.
"""

import argparse
import asyncio
import os
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

from aiosmtpd.controller import Controller

from bench.proc import cpu_seconds, pct, start_roost

SENDER = "bench@example.org"
SIZE = 5 * 1024


def make_message(n):
    head = (f"From: Bench <{SENDER}>\r\nTo: someone@sink.test\r\nSubject: outbound {n}\r\n"
            f"Message-ID: <out-{n}-{time.time_ns()}@example.org>\r\n"
            "Date: Thu, 03 Dec 2026 09:00:00 +0000\r\nContent-Type: text/plain\r\n\r\n").encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    return head + (line * (SIZE // len(line)))


class Sink:
    def __init__(self):
        self.arrived = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        data = envelope.original_content
        i = data.find(b"Message-ID: <out-")
        if i >= 0:
            key = data[i + 13:data.index(b">", i)].decode()
            with self.lock:
                self.arrived[key] = time.perf_counter()
        return "250 2.0.0 Ok"


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_load(port, pid, concurrency, count, sink, tls_auth):
    messages = [make_message(i) for i in range(count)]
    sent, errors, acked = {}, [], []
    counter = iter(range(count))
    lock = threading.Lock()
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    def worker():
        try:
            client = smtplib.SMTP("127.0.0.1", port, timeout=120)
            if tls_auth:
                client.starttls(context=ctx)
                client.login(SENDER, "pw")
            for n in counter:
                data = messages[n]
                key = data[data.index(b"<out-") + 1:data.index(b">", data.index(b"<out-"))].decode()
                t0 = time.perf_counter()
                client.sendmail(SENDER, [f"r{n}@sink.test"], data)
                with lock:
                    sent[key] = t0
                    acked.append((t0, time.perf_counter()))
            client.quit()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    cpu0 = cpu_seconds(pid)
    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # accepted: from the first MAIL to the last 250 (logins and QUIT left out)
    accepted = max(a for _, a in acked) - min(s for s, _ in acked) if acked else float("nan")
    deadline = time.time() + 300
    while time.time() < deadline:
        with sink.lock:
            if all(k in sink.arrived for k in sent):
                break
        time.sleep(0.05)
    start = min(sent.values(), default=t0)
    end = max((sink.arrived.get(k, time.perf_counter()) for k in sent), default=t0)
    cpu = cpu_seconds(pid) - cpu0
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed: {errors[0]!r}")
    lat = [(sink.arrived[k] - v) * 1000 for k, v in sent.items() if k in sink.arrived]
    n = len(sent)
    return {"msgs": n, "accept_rate": n / accepted, "e2e_rate": len(lat) / (end - start),
            "p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "cpu_ms": cpu * 1000 / n,
            "lost": n - len(lat)}


class RoostUnderTest:
    def __init__(self, tmp, sink_port, dkim):
        self.name = "roost+dkim" if dkim else "roost"
        self.data = os.path.join(tmp, self.name)
        self.sink_port, self.dkim = sink_port, dkim
        self.tls_auth = True

    def start(self):
        roost = [sys.executable, "-m", "roost.server.cli", "--data", self.data]
        subprocess.run([*roost, "user", "add", SENDER, "--password-stdin"], input=b"pw\n",
                       check=True, capture_output=True)
        if self.dkim:
            for alg in ("rsa", "ed25519"):
                subprocess.run([*roost, "dkim", "keygen", "example.org", "--algorithm", alg],
                               check=True, capture_output=True)
        conf = os.path.join(self.data, "bench.toml")
        with open(conf, "w") as f:
            f.write(f'[relay]\nsmarthost = "127.0.0.2:{self.sink_port}"\nsmarthost_tls = "none"\n'
                    '[submission]\nsave_sent = false\nmessages_per_minute = 0\nmessages_per_hour = 0\n'
                    'messages_per_day = 0\nrecipients_per_day = 0\n')
        self.proc, ports = start_roost([*roost[:-2], "--data", self.data, "--config", conf, "serve"],
                                       {"submission": "127.0.0.1:0"})
        self.port, self.pid = ports["submission"], self.proc.pid

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = bench.postfix.test
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
relayhost = [127.0.0.2]:{sink}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
maillog_file = {dir}/maillog
maillog_file_prefixes = {dir}
biff = no
"""


class PostfixUnderTest:
    name = "postfix"
    tls_auth = False

    def __init__(self, tmp, sink_port):
        self.dir = os.path.join(tmp, "postfix")
        self.sink_port = sink_port

    @staticmethod
    def available():
        return shutil.which("postfix") or os.path.exists("/usr/sbin/postfix")

    def start(self):
        import pwd
        from tests.interop.test_postfix import MASTER_CF, _master_pid
        os.makedirs(os.path.join(self.dir, "queue"))
        os.makedirs(os.path.join(self.dir, "data"))
        os.chmod(self.dir, 0o755)
        os.chown(os.path.join(self.dir, "data"), pwd.getpwnam("postfix").pw_uid, -1)
        self.port = free_port()
        with open(os.path.join(self.dir, "main.cf"), "w") as f:
            f.write(POSTFIX_MAIN.format(dir=self.dir, sink=self.sink_port))
        with open(os.path.join(self.dir, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(port=f"127.0.0.1:{self.port}"))
        started = subprocess.run(["postfix", "-c", self.dir, "start"], capture_output=True)
        if started.returncode:
            raise RuntimeError("postfix did not start: " + (started.stdout + started.stderr).decode())
        for _ in range(100):
            self.pid = _master_pid(self.dir)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if self.pid:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("postfix did not start")

    def stop(self):
        subprocess.run(["postfix", "-c", self.dir, "stop"], check=False, capture_output=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=400)
    ap.add_argument("--no-postfix", action="store_true")
    args = ap.parse_args(argv)
    sink = Sink()
    sink_port = free_port("127.0.0.2")
    controller = Controller(sink, hostname="127.0.0.2", port=sink_port)
    controller.start()
    tmp = tempfile.mkdtemp(prefix="roost-bench-outbound-")
    os.chmod(tmp, 0o755)      # Postfix daemons run as the postfix user
    results = {}
    servers = [RoostUnderTest(tmp, sink_port, False), RoostUnderTest(tmp, sink_port, True)]
    if not args.no_postfix and PostfixUnderTest.available() and os.geteuid() == 0:
        servers.append(PostfixUnderTest(tmp, sink_port))
    try:
        for server in servers:
            server.start()
            try:
                for c in (1, 8):
                    r = run_load(server.port, server.pid, c, args.messages, sink, server.tls_auth)
                    results[(server.name, c)] = r
                    print(f"{server.name:11} C={c}: accept {r['accept_rate']:7.1f} msgs/s, "
                          f"end-to-end {r['e2e_rate']:7.1f} msgs/s, p50 {r['p50']:7.1f} ms, "
                          f"p99 {r['p99']:7.1f} ms, server CPU {r['cpu_ms']:5.2f} ms/msg"
                          + (f", {r['lost']} NOT ARRIVED" if r["lost"] else ""), flush=True)
            finally:
                server.stop()
    finally:
        controller.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    for name in ("roost", "roost+dkim"):
        for c in (1, 8):
            if ("postfix", c) in results and (name, c) in results:
                r, p = results[(name, c)], results[("postfix", c)]
                print(f"{name}/postfix C={c}: end-to-end {r['e2e_rate'] / p['e2e_rate']:.2f}x, "
                      f"accept {r['accept_rate'] / p['accept_rate']:.2f}x, "
                      f"CPU {r['cpu_ms'] / p['cpu_ms']:.2f}x")
    asyncio.set_event_loop(None)


if __name__ == "__main__":
    main()
