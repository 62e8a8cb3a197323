"""Cost of one logged event: what an IMAP command pays for the logs and metrics.

    python -m bench.logs [--events 200000]

Prints microseconds per "command" event (the record an IMAP command makes)
with the log level above DEBUG and no metrics (the default), with metrics on,
and written as kv and as JSON lines (to /dev/null through the log thread).
"""

import argparse
import logging
import time

from roost.server import logs
from roost.server.metrics import Metrics

log = logging.getLogger("roost.imap")


def event(i):
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s %s", "UID FETCH", "OK", extra={
            "event": "command", "proto": "imap", "conn": 7, "verb": "UID FETCH",
            "mailbox": "INBOX", "outcome": "OK", "ms": 0.25 + i % 7, "account": "a@example.org"})


def per_event(n):
    start = time.perf_counter()
    for i in range(n):
        event(i)
    return (time.perf_counter() - start) / n * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200000)
    n = ap.parse_args().events
    rows = []
    handler = logs.setup("info", "kv", "/dev/null")
    rows.append(("level info, no metrics (default)", per_event(n)))
    metrics = Metrics()
    metrics.install()
    rows.append(("level info, metrics on", per_event(n)))
    metrics.uninstall()
    for fmt in ("kv", "json"):
        handler.close()
        handler = logs.setup("debug", fmt, "/dev/null")
        rows.append((f"level debug, {fmt} lines", per_event(n)))
    handler.close()
    for label, us in rows:
        print(f"{label:<36} {us:8.2f} us/event")


if __name__ == "__main__":
    main()
