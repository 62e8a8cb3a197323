"""``roost serve --workers N``: a supervisor and worker processes that share
the listeners, the data directory and the change events.

Which worker holds a connection is read from /proc (the server side of the
TCP connection is a socket in exactly one worker's fd table), so each test
puts its clients on the workers it means to, instead of hoping the kernel
spreads them."""

import base64
import http.client
import json
import os
import signal
import smtplib
import threading
import time

import pytest

from tests.conftest import add_user, alive, children
from tests.imap_helpers import _close_connections  # noqa: F401 - an autouse fixture
from tests.imap_helpers import Wire

USER, PASSWORD = "alice@example.org", "secret"
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]


def serving_pid(server, local_port, server_port):
    """The worker whose fd table holds the server side of the TCP connection
    from ``local_port`` to ``server_port`` on 127.0.0.1."""
    want = (f"0100007F:{server_port:04X}", f"0100007F:{local_port:04X}")
    inode = None
    deadline = time.monotonic() + 5
    while inode is None and time.monotonic() < deadline:
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if (fields[1], fields[2]) == want and fields[9] != "0":
                    inode = fields[9]
        if inode is None:
            time.sleep(0.02)
    assert inode is not None, "no such connection"
    for pid in server.worker_pids():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                        return pid
                except OSError:
                    continue
        except OSError:
            continue
    raise AssertionError("no worker holds the connection")


def imap_on(server, pid=None, other_than=None, tries=200, login=True):
    """A logged-in IMAP connection held by worker ``pid`` (or by any worker
    but ``other_than``); returns (wire, its worker's pid)."""
    for _ in range(tries):
        wire = Wire(server.ports["imap"])
        got = serving_pid(server, wire.sock.getsockname()[1], server.ports["imap"])
        if (pid is None or got == pid) and got != other_than:
            if login:
                wire.login(USER, PASSWORD)
            return wire, got
        wire.close()
    raise AssertionError("the kernel never gave a connection to the wanted worker")


class Jmap:
    """JMAP over one http.client connection (so its worker is known)."""

    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        self.conn.connect()
        self.auth = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.session = self.get("/.well-known/jmap")
        self.account = next(iter(self.session["accounts"]))

    def get(self, path):
        for _ in range(3):
            self.conn.request("GET", path, headers={"Authorization": self.auth})
            r = self.conn.getresponse()
            body = r.read()
            if r.status in (301, 302, 307, 308):
                path = r.getheader("Location")
                continue
            assert r.status == 200, body
            return json.loads(body)
        raise AssertionError("redirect loop")

    def call(self, name, **args):
        args.setdefault("accountId", self.account)
        path = self.session["apiUrl"].split("//", 1)[-1].split("/", 1)[-1]
        body = json.dumps({"using": USING, "methodCalls": [[name, args, "c"]]})
        self.conn.request("POST", "/" + path, body=body,
                          headers={"Authorization": self.auth, "Content-Type": "application/json"})
        r = self.conn.getresponse()
        out = json.loads(r.read())
        assert r.status == 200, out
        got, result, _ = out["methodResponses"][0]
        assert got == name, result
        return result

    def close(self):
        self.conn.close()


def jmap_on(server, pid=None, other_than=None, tries=200):
    for _ in range(tries):
        client = Jmap(server.ports["jmap"])
        got = serving_pid(server, client.conn.sock.getsockname()[1], server.ports["jmap"])
        if (pid is None or got == pid) and got != other_than:
            return client, got
        client.close()
    raise AssertionError("the kernel never gave a connection to the wanted worker")


def next_update(wire):
    """The next untagged line but RECENT (an IMAP4rev1 session gets it with EXISTS)."""
    while True:
        line = wire.line()
        if not line.endswith(b" RECENT"):
            return line


def message(n, tag="w"):
    return (f"From: sender@example.net\r\nTo: {USER}\r\nSubject: {tag} {n}\r\n"
            f"Message-ID: <{tag}.{n}@workers.test>\r\n\r\nbody {n}\r\n").encode()


@pytest.fixture
def server(roost_server, tmp_path):
    add_user(tmp_path / "data", USER, PASSWORD)
    return roost_server(listeners=("imap", "lmtp", "jmap"), workers=2)


def test_supervisor_prints_the_listeners_and_stops_its_workers(server, tmp_path):
    assert "roost: 2 worker processes\n" in server.output
    assert sum(line.startswith("roost: ready") for line in server.output) == 1
    assert {"imap", "lmtp", "jmap"} <= set(server.ports)
    workers = server.worker_pids()
    assert len(workers) == 2
    assert os.path.exists(tmp_path / "data" / "roost.sock")
    server.stop()
    assert server.proc.returncode == 0, "".join(server.output)
    assert not [p for p in workers if os.path.exists(f"/proc/{p}")]
    assert not os.path.exists(tmp_path / "data" / "roost.sock")


def test_idle_on_one_worker_sees_a_delivery_and_a_jmap_flag_change_on_the_other(server):
    idle, a = imap_on(server)
    jmap, b = jmap_on(server, other_than=a)
    assert a != b
    assert idle.cmd("s1 SELECT INBOX")[-1].startswith(b"s1 OK")
    idle.send("i1 IDLE\r\n")
    assert idle.line().startswith(b"+ ")

    # A delivery over LMTP, on whichever worker, reaches the IDLE session.
    with smtplib.LMTP("127.0.0.1", server.ports["lmtp"]) as lmtp:
        lmtp.sendmail("sender@example.net", [USER], message(1))
    assert next_update(idle) == b"* 1 EXISTS"

    # A flag change made through JMAP on worker B shows in IDLE on worker A.
    inbox = next(m["id"] for m in jmap.call("Mailbox/get")["list"] if m["role"] == "inbox")
    (email,) = jmap.call("Email/query", filter={"inMailbox": inbox})["ids"]
    started = time.monotonic()
    assert jmap.call("Email/set", update={email: {"keywords/$flagged": True}})["updated"]
    line = next_update(idle)
    took = time.monotonic() - started
    assert line.startswith(b"* 1 FETCH (") and b"\\Flagged" in line, line
    print(f"JMAP change on worker {b} -> IDLE on worker {a}: {took * 1000:.1f} ms")
    idle.send("DONE\r\n")
    assert idle.until("i1")[-1].startswith(b"i1 OK")
    jmap.close()


def test_two_workers_delivering_to_one_mailbox_never_give_one_uid_twice(server):
    appenders = [imap_on(server)]
    appenders.append(imap_on(server, other_than=appenders[0][1]))
    errors, acked = [], []
    lock = threading.Lock()

    def lmtp(k):
        try:
            with smtplib.LMTP("127.0.0.1", server.ports["lmtp"]) as client:
                for n in range(15):
                    client.sendmail("sender@example.net", [USER], message(n, f"l{k}"))
                    with lock:
                        acked.append(f"l{k}.{n}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def append(k, wire):
        for n in range(15):
            data = message(n, f"a{k}")
            lines = wire.cmd(f"A{n} APPEND INBOX {{{len(data)}+}}\r\n" + data.decode(), f"A{n}")
            if not lines[-1].startswith(f"A{n} OK".encode()):
                errors.append(lines)
                return
            with lock:
                acked.append(f"a{k}.{n}")
    threads = [threading.Thread(target=lmtp, args=(k,)) for k in range(4)]
    threads += [threading.Thread(target=append, args=(k, w)) for k, (w, _pid) in enumerate(appenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    reader, _ = imap_on(server)
    assert reader.cmd("s1 SELECT INBOX")[-1].startswith(b"s1 OK")
    lines = reader.cmd("f1 UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])", "f1")
    uids, ids = [], []
    for line in lines:
        if b" FETCH (" in line:
            uids.append(int(line.split(b"UID ", 1)[1].split()[0]))
            ids.append(line.split(b"<", 1)[1].split(b"@", 1)[0].decode())
    assert len(acked) == 90
    assert sorted(ids) == sorted(acked)          # each acknowledged message stored once
    assert len(set(uids)) == len(uids) == 90
    assert uids == sorted(uids)


def test_a_dead_worker_is_replaced_and_the_other_keeps_its_sessions(server):
    kept, survivor = imap_on(server)
    victim = next(p for p in server.worker_pids() if p != survivor)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = server.worker_pids()
        if len(now) == 2 and victim not in now:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"worker {victim} was not replaced: {server.worker_pids()}")
    assert kept.cmd("n1 NOOP")[-1].startswith(b"n1 OK")
    (replacement,) = [p for p in server.worker_pids() if p != survivor]
    fresh, _ = imap_on(server, pid=replacement)
    assert fresh.cmd("s1 SELECT INBOX")[-1].startswith(b"s1 OK")
    deadline = time.monotonic() + 5
    while not any(f"(pid {victim}) ended (signal 9)" in line for line in server.output):
        assert time.monotonic() < deadline, "".join(server.output)
        time.sleep(0.05)


def test_workers_stop_when_the_supervisor_is_killed(server):
    workers = server.worker_pids()
    assert children(server.pid, zombies=False) == workers
    server.kill()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not [p for p in workers if alive(p)]:
            return
        time.sleep(0.05)
    raise AssertionError(f"workers {workers} outlived their supervisor")


def test_a_guesser_is_paced_as_one_whichever_workers_it_lands_on(roost_server, tmp_path):
    add_user(tmp_path / "data", USER, PASSWORD)
    (tmp_path / "roost.toml").write_text("[auth]\nmax_login_delay = 8\n")
    server = roost_server(listeners=("imap",), workers=2, config=tmp_path / "roost.toml")
    a, on_a = imap_on(server, login=False)
    b, _ = imap_on(server, other_than=on_a, login=False)

    def guess(wire, tag):       # a different wrong password each time; seconds to the answer
        started = time.monotonic()
        reply = wire.cmd(f'{tag} LOGIN "{USER}" "wrong-{tag}"')[-1]
        assert b"[AUTHENTICATIONFAILED]" in reply, reply
        return time.monotonic() - started
    guess(a, "g1")              # the answer to the n-th failure waits 2**(n-1) s
    guess(b, "g2")
    # The third failure in a row, the second on worker A: paced as the third
    # (4 s), not as A's own second (2 s).
    assert guess(a, "g3") > 3.2
