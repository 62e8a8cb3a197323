"""Inbound benchmark: ``python3 -m bench.inbound [--messages N]``.

``sieve_bench()``: LMTP msgs/s (C=1 and C=8, a real ``roost serve``
subprocess, the load of ``bench.lmtp``: 5 KB messages and one 1 MB in 100,
four accounts) with a 20-rule Sieve script active on every account against
plain delivery (no script), with the server CPU per message; then, in this
process, the interpreter's evaluation time per message (µs, p50/p99) and the
cost of the delivery's Sieve step for an account without a script (the
cached lookup). Verdicts are off here (no DNS); ``verify_bench()`` measures them:
``Inbound.check`` µs per message (SPF + DKIM + DMARC + ARC, DNS on a
loopback dnslib server) for unsigned, DKIM-signed (RSA-2048 and Ed25519) and
ARC-sealed messages.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.lmtp import USERS, make_message, run_load
from bench.proc import pct, start_roost

# Twenty rules of the kinds people write: list filing, senders, subjects,
# sizes, flags, spam headers; most do not match the benchmark's messages, the
# last files everything from load@example.net into "Load".
RULES = """require ["fileinto", "imap4flags", "envelope", "relational", "comparator-i;ascii-numeric", "variables", "regex"];
if header :contains "list-id" "announce.example.com" { fileinto "Lists"; stop; }
if header :contains "list-id" "dev.example.com" { fileinto "Lists"; stop; }
if address :is "from" "boss@example.com" { addflag "\\\\Flagged"; }
if address :domain :is "from" "bank.example" { fileinto "Archive"; stop; }
if header :contains "subject" ["invoice", "receipt", "order"] { fileinto "Archive"; }
if header :matches "subject" "*[SPAM]*" { fileinto "Junk"; stop; }
if header :value "ge" :comparator "i;ascii-numeric" "x-spam-score" "10" { discard; stop; }
if size :over 10M { fileinto "Archive"; stop; }
if envelope :is "from" "noreply@shop.example" { fileinto "Archive"; stop; }
if header :contains "x-mailer" "BulkMailer" { fileinto "Junk"; stop; }
if address :localpart :is "to" "sales" { fileinto "Archive"; stop; }
if header :contains "subject" "newsletter" { addflag "$newsletter"; }
if exists "x-github-reason" { fileinto "Lists"; stop; }
if header :regex "subject" "^\\\\[JIRA\\\\]" { fileinto "Lists"; stop; }
if address :is ["to", "cc"] "team@example.org" { addflag "$team"; }
if header :contains "precedence" ["bulk", "list"] { fileinto "Lists"; stop; }
if anyof (header :contains "subject" "urgent", header :contains "importance" "high") { addflag "\\\\Flagged"; }
if header :matches "from" "*@calendar.example" { fileinto "Archive"; stop; }
if not exists "message-id" { fileinto "Junk"; stop; }
if address :is "from" "load@example.net" { fileinto "Load"; }
"""


def _interpreter():
    try:
        from roost.storage.sieve import interpreter
        return interpreter
    except ImportError:
        return None


class Server:
    def __init__(self, tmp, name, script):
        self.data = os.path.join(tmp, name)
        self.script = script
        self.proc = None

    def start(self):
        from roost.storage.sieve import scripts
        from roost.storage.store import Store
        roost = [sys.executable, "-m", "roost.server.cli", "--data", self.data]
        for user in USERS:
            subprocess.run([*roost, "user", "add", user, "--password-stdin"], input=b"pw\n",
                           check=True, capture_output=True)
        store = Store.open(self.data)
        for user in USERS:
            acct = store.account(user)
            store.create_mailbox(acct.id, "Lists")
            store.create_mailbox(acct.id, "Load")
            if self.script:
                scripts.put_script(store, acct.id, "rules", self.script, activate=True)
        store.close()
        self.proc, ports = start_roost([*roost, "serve"], {"lmtp": "127.0.0.1:0"})
        self.port, self.pid = ports["lmtp"], self.proc.pid
        return self

    def check_filed(self):
        """How many messages the script filed into "Load" (0 without one)."""
        from roost.storage.store import Store
        store = Store.open(self.data)
        try:
            return sum(store.mailbox(store.account(u).id, "Load", counts=True).messages for u in USERS)
        finally:
            store.close()

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(60)


def eval_micros(count=2000):
    """The interpreter's time per message (µs: p50, p99, mean) on the 20 rules."""
    interpreter = _interpreter()
    if interpreter is None:
        return None
    from roost.storage import mime
    from roost.storage.sieve import compile
    from roost.storage.sieve.actions import Context
    compiled = compile(RULES)
    data = make_message(1, 5 * 1024)
    parsed = mime.ParsedMessage(data)
    times = []
    for _ in range(count):
        ctx = Context(data=data, parsed=parsed, sender="load@example.net",
                      recipient=USERS[0], account=USERS[0], addresses=(USERS[0],), now=time.time())
        t0 = time.perf_counter()
        interpreter.run(compiled, ctx)
        times.append((time.perf_counter() - t0) * 1e6)
    return pct(times, 0.5), pct(times, 0.99), sum(times) / len(times)


def no_script_micros(count=20000):
    """The Sieve step of a delivery to an account without a script (µs per call)."""
    from roost.storage.delivery import Delivery, Incoming
    from roost.storage.store import Store
    store = Store.memory()
    acct = store.add_account("n@example.org")
    d = Delivery(store)
    inbox = store.mailbox(acct.id, "INBOX")
    item = Incoming(b"x", ("n@example.org",))
    d.sieve.plan(acct, inbox, item, None, "n@example.org", b"")   # fills the cache
    t0 = time.perf_counter()
    for _ in range(count):
        d.sieve.plan(acct, inbox, item, None, "n@example.org", b"")
    us = (time.perf_counter() - t0) * 1e6 / count
    d.close()
    store.close()
    return us


def sieve_bench(messages=400):
    """Plain LMTP delivery against the same load with the 20-rule script."""
    have = _interpreter() is not None
    if not have:
        print("storage.sieve.interpreter is missing: plain delivery only")
    tmp = tempfile.mkdtemp(prefix="roost-bench-inbound-")
    results = {}
    try:
        for name, script in (("plain", None), ("sieve20", RULES if have else None)):
            if name == "sieve20" and not have:
                continue
            server = Server(tmp, name, script).start()
            try:
                run_load(server.port, server.pid, 2, 40)   # warm up
                for c in (1, 8):
                    count = messages * (1 if c == 1 else 3)
                    r = run_load(server.port, server.pid, c, count)
                    results[(name, c)] = r
                    print(f"lmtp {name:8} C={c}: {r['msgs']:5d} msgs  {r['rate']:8.1f} msgs/s  "
                          f"p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  "
                          f"server CPU {r['cpu_ms']:6.2f} ms/msg", flush=True)
                if script:
                    filed = server.check_filed()
                    print(f"lmtp {name:8}: {filed} messages filed into Load by the script")
            finally:
                server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for c in (1, 8):
        if ("sieve20", c) in results:
            ratio = results[("sieve20", c)]["rate"] / results[("plain", c)]["rate"]
            print(f"ratio sieve20/plain msgs/s at C={c}: {ratio:.2f}x")
    micros = eval_micros()
    if micros:
        print(f"sieve evaluation, 20 rules, 5 KB message: p50 {micros[0]:.1f} µs  "
              f"p99 {micros[1]:.1f} µs  mean {micros[2]:.1f} µs")
    print(f"sieve step without a script (cached lookup): {no_script_micros():.2f} µs per delivery")
    return results


def verify_bench(messages=200, quiet=False):
    """``{label: (mean_us, p50_us, p99_us, mean_us_without_dns)}``, printed
    unless ``quiet``."""
    from dnslib.server import DNSLogger, DNSServer
    from dnslib.zoneresolver import ZoneResolver

    from roost.protocols.dns import Resolver
    from roost.protocols.mailauth import arc, psl
    from roost.protocols.mailauth.inbound import Inbound
    from tests.mailauth_helpers import Keys, message, txt

    keys, fwd = Keys(), Keys()
    zone = "\n".join([
        txt("r._domainkey.example.org", keys.rsa_record()),
        txt("e._domainkey.example.org", keys.ed_record()),
        txt("roost._domainkey.example.net", fwd.rsa_record()),
        txt("example.org", "v=spf1 ip4:192.0.2.0/24 -all"),
        txt("_dmarc.example.org", "v=DMARC1; p=reject"),
    ])
    server = DNSServer(ZoneResolver(zone), port=0, address="127.0.0.1",
                       logger=DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data",
                                        prefix=False))
    server.start_thread()
    try:
        class Timed(Resolver):
            """Counts lookups and the time spent in them (dnslib answers in Python:
            its round trip dominates; the rest is Roost's and the libraries' CPU)."""
            lookups, spent = 0, 0.0

            def records(self, *args, **kwargs):
                start = time.perf_counter()
                try:
                    return super().records(*args, **kwargs)
                finally:
                    Timed.lookups += 1
                    Timed.spent += time.perf_counter() - start

        resolver = Timed([f"127.0.0.1:{server.server.server_address[1]}"], timeout=3)
        inbound = Inbound(resolver, "mx.example.net", psl=psl.default())
        body = b"".join(b"line %05d of a ten kilobyte body, some words to hash.....\r\n" % i
                        for i in range(170))
        plain = message(body=body)
        signed = keys.signer("example.org").sign(plain, "example.org") + plain
        first = inbound.check(signed, "192.0.2.1", "mail.example.org", "ann@example.org")
        stored = b"Delivered-To: bob@example.net\r\n" + first.auth_headers + first.data
        sealer = fwd.signer("example.net", "roost", None)
        arced = arc.seal(stored, sealer, "mx.example.net", "example.net") + stored
        out = {}
        for label, data in (("unsigned", plain), ("DKIM rsa+ed25519", signed),
                            ("DKIM + ARC i=1", arced)):
            times = []
            Timed.lookups, Timed.spent = 0, 0.0
            for _ in range(messages):
                start = time.perf_counter()
                checked = inbound.check(data, "192.0.2.1", "mail.example.org",
                                        "ann@example.org", remote_host="")
                times.append((time.perf_counter() - start) * 1e6)
            assert checked.verdicts["spf"] == "pass"
            times.sort()
            mean = statistics.fmean(times)
            dns_us = Timed.spent / messages * 1e6
            out[label] = (mean, times[len(times) // 2],
                          times[min(len(times) - 1, int(len(times) * 0.99))], mean - dns_us)
            if not quiet:
                _, p50, p99, cpu = out[label]
                print(f"verify {label:<18} {mean:7.0f} us/msg  p50 {p50:7.0f}  p99 {p99:7.0f}  "
                      f"without DNS {cpu:6.0f} us ({Timed.lookups / messages:.0f} lookups, "
                      f"{dns_us:.0f} us)  dkim={checked.verdicts['dkim']} "
                      f"arc={checked.verdicts['arc']}")
        return out
    finally:
        server.stop()
        server.server.server_close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--messages", type=int, default=400, help="messages per run at C=1 (C=8 sends 3x)")
    args = p.parse_args(argv)
    sieve_bench(args.messages)
    verify_bench()
    return 0


if __name__ == "__main__":
    sys.exit(main())
