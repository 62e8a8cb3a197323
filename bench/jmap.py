"""JMAP benchmark: ``python -m bench.jmap [--messages 10000]``.

Builds one account with N messages in INBOX through the real delivery path
(``Delivery.store``, group-committed), starts ``roost serve`` with only
JMAP and LMTP, and measures over HTTP keep-alive (httpx):

- mail-list view: one request of ``Email/query`` (INBOX, newest first, 50 at
  a time) plus ``Email/get`` of those ids by result reference (subject, from,
  preview, keywords, receivedAt), paging through the whole mailbox: requests/s,
  p50/p99, the first page alone (nothing cached), and the first page right
  after each of 20 LMTP deliveries (the listing is patched from the change log);
- ``Email/changes`` after 100 flag changes made by ``Email/set``: p50/p99;
- push latency: LMTP delivery acknowledged -> ``state`` event on an open
  event source, and -> StateChange on a WebSocket with push enabled, p50/p99;
- server CPU per mail-list request.

The issue gives Cyrus 3.6 on this machine as mail-list p50 13 ms, p99 19 ms
and Email/changes 10 ms; the ratios printed are Roost / Cyrus (below 1 is faster).
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

from bench.lmtp import make_message
from bench.proc import add_workers_option, start_roost
from bench.proc import cpu_seconds

USER, PASSWORD = "bench@example.org", "bench-password"
CYRUS = {"list_p50": 13.0, "list_p99": 19.0, "changes": 10.0}
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def build(data, n):
    from roost.server.auth import hash_password
    from roost.storage.delivery import Delivery, Incoming
    from roost.storage.store import Store
    store = Store.open(data)
    acct = store.add_account(USER, hash_password(PASSWORD))
    inbox = store.mailbox(acct.id, "INBOX")
    delivery = Delivery(store)
    start = time.perf_counter()
    base = time.time() - n
    for i in range(0, n, 500):
        delivery.store(*(Incoming(make_message(j, 2048 + (j % 7) * 300), account=acct, mailboxes=(inbox,),
                                  flags=("\\Seen",) if j % 3 else (), internal_date=base + j)
                         for j in range(i, min(n, i + 500))))
    took = time.perf_counter() - start
    delivery.close()
    store.close()
    return took


def start_server(data):
    return start_roost([sys.executable, "-m", "roost.server.cli", "--data", data, "serve"],
                       {"jmap": "127.0.0.1:0", "lmtp": "127.0.0.1:0"})


def api(http, url, calls):
    r = http.post(url, json={"using": USING, "methodCalls": calls})
    r.raise_for_status()
    return r.json()["methodResponses"]


def mail_list(http, url, account, inbox, position):
    return api(http, url, [
        ["Email/query", {"accountId": account, "filter": {"inMailbox": inbox},
                         "sort": [{"property": "receivedAt", "isAscending": False}],
                         "position": position, "limit": 50, "calculateTotal": True}, "q"],
        ["Email/get", {"accountId": account, "#ids": {"resultOf": "q", "name": "Email/query",
                                                      "path": "/ids"},
                       "properties": ["subject", "from", "preview", "keywords", "receivedAt"]}, "g"]])


def lmtp(port, n):
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = sock.makefile("rb")

    def reply():
        while True:
            line = f.readline()
            if line[3:4] != b"-":
                return line
    reply()
    sock.sendall(b"LHLO bench\r\n")
    reply()

    def send():
        for cmd in (b"MAIL FROM:<load@example.net>", b"RCPT TO:<" + USER.encode() + b">", b"DATA"):
            sock.sendall(cmd + b"\r\n")
            reply()
        sock.sendall(make_message(n, 1500) + b".\r\n")
        return reply()
    return sock, send


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=2, help="times to page through the mailbox")
    ap.add_argument("--data", help="keep the built account in DIR and reuse it on the next run")
    add_workers_option(ap)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="roost-bench-jmap-") as tmp:
        data = args.data or os.path.join(tmp, "data")
        if not os.path.exists(os.path.join(data, "roost.db")):
            took = build(data, args.messages)
            print(f"built {args.messages} messages in {took:.1f}s "
                  f"({args.messages / took:.0f} msgs/s through Delivery.store)")
        proc, ports = start_server(data)
        try:
            run(ports, args)
        finally:
            proc.terminate()
            proc.wait(30)


def run(ports, args):
    base = f"http://127.0.0.1:{ports['jmap']}"
    http = httpx.Client(auth=(USER, PASSWORD), follow_redirects=True, timeout=60)
    session = http.get(base + "/.well-known/jmap").json()
    url, account = session["apiUrl"], next(iter(session["accounts"]))
    boxes = api(http, url, [["Mailbox/get", {"accountId": account}, "m"]])[0][1]["list"]
    inbox = next(b["id"] for b in boxes if b["role"] == "inbox")

    t = time.perf_counter()
    first = mail_list(http, url, account, inbox, 0)
    cold = (time.perf_counter() - t) * 1000
    args.messages = first[0][1]["total"]
    assert len(first[1][1]["list"]) == 50

    times = []
    pid = server_pid(ports)
    cpu0 = cpu_seconds(pid) if pid else 0
    wall = time.perf_counter()
    for _ in range(args.rounds):
        for position in range(0, args.messages, 50):
            t = time.perf_counter()
            mail_list(http, url, account, inbox, position)
            times.append((time.perf_counter() - t) * 1000)
    wall = time.perf_counter() - wall
    cpu = (cpu_seconds(pid) - cpu0) if pid else 0
    p50, p99 = pct(times, 50), pct(times, 99)
    print(f"mail-list view (query + get of 50, {len(times)} pages): {len(times) / wall:.0f} req/s, "
          f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, first page cold {cold:.1f} ms, "
          f"server CPU {cpu / len(times) * 1000:.2f} ms/req")
    print(f"  vs Cyrus 3.6 (p50 {CYRUS['list_p50']:.0f} ms, p99 {CYRUS['list_p99']:.0f} ms): "
          f"p50 ratio {p50 / CYRUS['list_p50']:.2f}, p99 ratio {p99 / CYRUS['list_p99']:.2f}")

    sock, send = lmtp(ports["lmtp"], 1)
    fresh = []
    for _ in range(20):
        send()
        t = time.perf_counter()
        mail_list(http, url, account, inbox, 0)
        fresh.append((time.perf_counter() - t) * 1000)
    sock.close()
    print(f"mail-list first page right after a new delivery: p50 {pct(fresh, 50):.2f} ms, "
          f"p99 {pct(fresh, 99):.2f} ms (20 deliveries)")

    ids = first[0][1]["ids"] * 2
    state = api(http, url, [["Email/get", {"accountId": account, "ids": []}, "s"]])[0][1]["state"]
    for i in range(100):
        api(http, url, [["Email/set", {"accountId": account, "update": {
            ids[i % 50]: {"keywords/$flagged": True if i < 50 else None}}}, "u"]])
    ctimes = []
    for _ in range(100):
        t = time.perf_counter()
        res = api(http, url, [["Email/changes", {"accountId": account, "sinceState": state}, "c"]])
        ctimes.append((time.perf_counter() - t) * 1000)
    assert len(res[0][1]["updated"]) == 50, res
    c50, c99 = pct(ctimes, 50), pct(ctimes, 99)
    print(f"Email/changes after 100 flag changes: p50 {c50:.2f} ms, p99 {c99:.2f} ms "
          f"(vs Cyrus {CYRUS['changes']:.0f} ms: ratio {c50 / CYRUS['changes']:.2f})")

    push = push_latency(session, ports)
    print(f"push, LMTP ack -> event-source state event: p50 {pct(push, 50):.2f} ms, "
          f"p99 {pct(push, 99):.2f} ms ({len(push)} deliveries)")
    push = websocket_latency(ports)
    print(f"push, LMTP ack -> WebSocket StateChange: p50 {pct(push, 50):.2f} ms, "
          f"p99 {pct(push, 99):.2f} ms ({len(push)} deliveries)")


def websocket_latency(ports, n=30):
    import base64
    from tests.jmap_helpers import WebSocket
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    ws = WebSocket(ports["jmap"], headers=[f"Authorization: Basic {auth}"])
    ws.send(json.dumps({"@type": "WebSocketPushEnable", "dataTypes": ["Email"]}))
    time.sleep(0.3)
    sock, send = lmtp(ports["lmtp"], 0)
    out = []
    for _ in range(n):
        send()
        acked = time.perf_counter()
        json.loads(ws.recv())
        out.append((time.perf_counter() - acked) * 1000)
        time.sleep(0.05)
    sock.close()
    ws.close()
    return out


def server_pid(ports):
    """The pid listening on the JMAP port (from /proc), or None."""
    port_hex = f"{ports['jmap']:04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                for line in list(f)[1:]:
                    parts = line.split()
                    if parts[1].endswith(":" + port_hex) and parts[3] == "0A":
                        inodes.add(parts[9])
        except OSError:
            pass
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def push_latency(session, ports, n=30):
    url = (session["eventSourceUrl"].replace("{types}", "Email")
           .replace("{closeafter}", "no").replace("{ping}", "0"))
    arrivals = []
    ready = threading.Event()

    def reader():
        with httpx.Client(auth=(USER, PASSWORD), timeout=None) as http, \
                http.stream("GET", url) as r:
            ready.set()
            for line in r.iter_lines():
                if line.startswith("data:"):
                    arrivals.append(time.perf_counter())
                    json.loads(line[5:])
                    if len(arrivals) >= n:
                        return
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    ready.wait(10)
    time.sleep(0.3)
    sock, send = lmtp(ports["lmtp"], 0)
    out = []
    for i in range(n):
        seen = len(arrivals)
        send()
        acked = time.perf_counter()
        deadline = acked + 5
        while len(arrivals) == seen and time.perf_counter() < deadline:
            time.sleep(0.0005)
        if len(arrivals) > seen:
            out.append((arrivals[seen] - acked) * 1000)
        time.sleep(0.05)
    sock.close()
    return out or [float("nan")]


if __name__ == "__main__":
    main()
