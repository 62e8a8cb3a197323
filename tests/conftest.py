"""Shared fixtures: the ``roost`` command line and a real ``roost serve`` process.

``roost(data, *args)`` runs the CLI in a subprocess (the same Python, so no
shell shim is needed). ``RoostServer`` starts ``roost serve`` with only the
listeners asked for, on port 0, and reads the real ports from its output;
after "ready" a thread keeps reading it (into ``output``), so the server's log
lines never fill the pipe.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from bench.proc import alive, children  # noqa: F401 - alive: for the tests

ROOST = [sys.executable, "-m", "roost.server.cli"]
LISTENERS = ("lmtp", "imap", "imaps", "jmap", "submission", "submissions", "smtp", "managesieve",
             "auth", "socketmap", "metrics", "pop3", "pop3s")
PG_URL = os.environ.get("ROOST_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1/test")


def roost(data, *args, input=None, check=True, timeout=120):
    """Run ``roost --data DATA ARGS...``; returns the CompletedProcess."""
    proc = subprocess.run([*ROOST, "--data", str(data), *map(str, args)], input=input,
                          capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"roost {' '.join(map(str, args))} exited {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace')}")
    return proc


def add_user(data, address, password="secret", quota=None):
    """What ``roost user add`` does, in this process (a subprocess per account
    cost the suite a second each; tests/protocol/test_imap_quota.py runs the command)."""
    from roost.server.auth import hash_password
    from roost.storage.store import Store

    store = Store.open(str(data))
    try:
        store.add_account(address, hash_password(password), None if quota is None else int(quota))
    finally:
        store.close()


def stored_messages(data, address, mailbox="INBOX"):
    """Every message in ``address``'s ``mailbox`` under ``data``, as bytes, in UID order."""
    from roost.storage.store import Store

    store = Store.open(str(data))
    try:
        acct = store.account(address)
        box = store.mailbox(acct.id, mailbox)
        return [store.read(box.id, r.uid) for r in store.records(box.id)]
    finally:
        store.close()


def pg_store(tmp_path, prefix, **store_args):
    """A PostgreSQL + Maildir ``Store`` in a fresh schema named ``prefix`` + a random
    suffix, and a function that closes it and drops the schema. Skips the test,
    with the reason, when PostgreSQL is not reachable at ``PG_URL``."""
    from roost.storage.maildir import Maildir
    from roost.storage.schema import make_engine
    from roost.storage.store import Store

    try:
        import psycopg
        admin = psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"),
                                connect_timeout=3, autocommit=True)
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "not here"
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")
    schema = prefix + uuid.uuid4().hex[:12]
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    store = Store(make_engine(f"{PG_URL}{sep}options=-csearch_path%3D{schema}"),
                  Maildir(str(tmp_path / "mail")), **store_args)

    def drop():
        store.close()
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
    return store, drop


class RoostServer:
    """``roost serve`` as a subprocess; ``ports["lmtp"]`` etc. once started.

    ``listeners`` names the listeners to start on port 0, or maps names to
    fixed ``host:port`` addresses; every other listener is off. ``stderr``
    (a file) gets the server's stderr (its logs) apart from its stdout.
    ``workers``: worker processes (one unless a test asks for more)."""

    def __init__(self, data, listeners=("lmtp",), config=None, stderr=None, workers=1):
        self.data = str(data)
        self.workers = workers
        self.listeners = listeners
        self.config = config
        self.stderr = stderr
        self.proc = None
        self.ports = {}
        self.output = []

    def start(self, timeout=90):   # generous: start-up recovery on a loaded CI machine
        args = [*ROOST, "--data", self.data]
        if self.config:
            args += ["--config", str(self.config)]
        args += ["serve", "--workers", str(self.workers)]
        fixed = self.listeners if isinstance(self.listeners, dict) else {}
        for name in LISTENERS:
            address = fixed.get(name) or ("127.0.0.1:0" if name in self.listeners else "off")
            args += [f"--{name}", address]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE,
                                     stderr=self.stderr or subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode(errors="replace")
            if not line:
                break
            self.output.append(line)
            m = re.match(r"roost: (\w+) listening on [\d.]+:(\d+)", line)
            if m:
                self.ports[m.group(1)] = int(m.group(2))
            if line.startswith("roost: ready"):
                self.reader = threading.Thread(target=self._read, daemon=True)
                self.reader.start()
                return self
        self.kill()
        raise AssertionError(f"roost serve did not start (exit {self.proc.returncode}):\n"
                             + "".join(self.output))

    def _read(self):
        try:
            for line in self.proc.stdout:
                self.output.append(line.decode(errors="replace"))
        except (OSError, ValueError):
            pass

    def _wait_reader(self):
        reader = getattr(self, "reader", None)
        if reader is not None:
            reader.join(10)

    @property
    def pid(self):
        return self.proc.pid

    def worker_pids(self):
        """The pids of the server's worker processes (children of the supervisor)."""
        return children(self.proc.pid, zombies=False)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._wait_reader()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def stop(self, timeout=30):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._wait_reader()
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture
def roost_server(tmp_path):
    """Start ``RoostServer``s on demand; every one is stopped at teardown."""
    started = []

    def start(data=None, **kwargs):
        server = RoostServer(data or tmp_path / "data", **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()


class SocketClient:
    """A raw-socket client: ``sock``, and ``file`` reading from it."""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def close(self):
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


class LineClient(SocketClient):
    """A raw-socket client that reads SMTP/LMTP replies (multi-line aware)."""

    def __init__(self, port, host="127.0.0.1", timeout=30):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")

    def reply(self):
        """One reply: ``(code, [lines])``; raises on a closed connection."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("connection closed; got " + repr(lines))
            lines.append(line.rstrip(b"\r\n").decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.reply()


def wait_for(predicate, timeout=30, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()



def append(delivery, account, mailbox, data, flags=(), internal_date=None):
    """Store ``data`` in ``mailbox`` through ``Delivery.store`` (as IMAP APPEND
    does); returns the ``Stored``, or raises the typed store error."""
    from roost.storage.delivery import Incoming
    (result,) = delivery.store(Incoming(data, account=account, mailboxes=(mailbox,),
                                        flags=tuple(flags), internal_date=internal_date))
    return result.stored_or_raise()


def deliver(delivery, data, recipients, sender=None, mailbox=None):
    """Deliver ``data`` to envelope ``recipients`` through ``Delivery.store``
    (as LMTP does); returns one ``DeliveryResult`` per recipient."""
    from roost.storage.delivery import Incoming
    return delivery.store(Incoming(data, tuple(recipients), sender=sender, mailbox_name=mailbox))


def without_verdicts(data, authserv_id="localhost"):
    """``data`` less what inbound checks prepend: our Authentication-Results
    and the X-Spam-Score/X-Spam-Status fields (folded lines included)."""
    import re as _re
    from roost.protocols.mailauth.inbound import remove_ours
    data = remove_ours(data, authserv_id)
    return _re.sub(rb"(?im)^X-Spam-(?:Score|Status):[^\n]*\n(?:[ \t][^\n]*\n)*", b"", data, count=2)
