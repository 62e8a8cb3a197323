"""CPU and memory of a server process and its descendants, read from /proc
(shared by the benchmarks)."""

import argparse
import os

TICKS = os.sysconf("SC_CLK_TCK")


def children(pid, zombies=True):
    """The child processes of ``pid`` (from /proc), sorted; ``zombies``: also
    those that ended and were not reaped yet."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and (zombies or fields[0] != "Z"):
                out.append(int(entry))
    return sorted(out)


def alive(pid):
    """Is ``pid`` running (not gone, not a zombie)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid):
    """CPU of ``pid``, its live descendants and its reaped children."""
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        stack.extend(children(p))
    return total / TICKS


def rss_bytes(pid):
    total = 0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
        stack.extend(children(p))
    return total


def pct(values, p):
    """The ``p`` quantile (0..1) of ``values``; NaN when there are none."""
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


WORKERS = None    # a benchmark's --workers: passed to roost serve (None: its default, one per core)


def add_workers_option(parser):
    """``--workers N`` for a benchmark's command line (sets ``WORKERS``)."""
    class Set(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            global WORKERS
            WORKERS = values
            setattr(namespace, self.dest, values)
    parser.add_argument("--workers", type=int, action=Set, default=None,
                        help="roost serve --workers N (default: one per core)")


def start_roost(args, listeners, **popen):
    """``roost serve`` (``args`` ends with "serve") with only ``listeners``
    ({name: "HOST:PORT"}) on and every other listener off, and ``--workers``
    as the benchmark was given it; returns the process and {listener: port}
    once it is ready. A thread then keeps reading its output (its log lines)."""
    import subprocess
    import threading
    from roost.server.cli import LISTENERS
    args = list(args)
    if WORKERS is not None:
        args += ["--workers", str(WORKERS)]
    for name in LISTENERS:
        args += [f"--{name}", listeners.get(name, "off")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)
    ports = {}
    while True:
        line = proc.stdout.readline().decode(errors="replace")
        if not line:
            raise RuntimeError("roost serve did not start")
        words = line.split()
        if len(words) == 5 and words[2:4] == ["listening", "on"]:
            ports[words[1]] = int(words[4].rsplit(":", 1)[1])
        if line.startswith("roost: ready"):
            break
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, ports


def ready_port(proc, listener="imap"):
    """Read ``roost serve``'s output until "roost: ready"; the port ``listener``
    listens on. A thread then keeps reading the output (its log lines)."""
    import re
    import threading
    port = None
    while True:
        line = proc.stdout.readline().decode(errors="replace")
        if not line:
            raise RuntimeError("roost serve did not start")
        m = re.match(rf"roost: {listener} listening on [\d.]+:(\d+)", line)
        if m:
            port = int(m.group(1))
        if line.startswith("roost: ready"):
            break
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return port


class TaggedCommands:
    """``cmd``: send one tagged IMAP command (with a LITERAL+ literal when
    given) and read to its tagged reply, skipping literals; raises unless OK.
    Needs ``self.sock``, ``self.file`` (a buffered reader) and ``self.n``."""

    tag_prefix = b"b"

    def cmd(self, text, literal=None):
        import re
        self.n += 1
        tag = self.tag_prefix + b"%d" % self.n
        if literal is not None:
            self.sock.sendall(tag + b" " + text + b" {%d+}\r\n" % len(literal) + literal + b"\r\n")
        else:
            self.sock.sendall(tag + b" " + text + b"\r\n")
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            m = re.search(rb"\{(\d+)\}\r\n$", line)
            if m:
                self.file.read(int(m.group(1)))
                continue
            if line.startswith(tag + b" "):
                if not line.startswith(tag + b" OK"):
                    raise RuntimeError(line.decode(errors="replace"))
                return
