"""Structured logs: one line per event, as ``key=value`` pairs or JSON.

Design decisions:

- Everything logs through the standard ``logging`` module. The protocol and
  storage modules describe an event with ``extra=`` fields (below) on their own
  loggers ("roost.imap", "roost.delivery", ...), so one record makes the log
  line and, when metrics are on, the metric updates (``server.metrics`` is a
  second handler on the "roost" logger). Nothing but this module knows how a
  line looks.
- Events (the ``event`` field) and their fields:

      connection  proto, conn, peer, state=open|close; at close also ms,
                  bytes_in, bytes_out and account (when one logged in)
      login       proto, peer, account (as given), mechanism, outcome=ok|failed|blocked
      command     proto, verb, ms, outcome, account; IMAP: conn, mailbox,
                  outcome OK|NO|BAD; JMAP: one per method call, outcome ok or
                  the error type; LMTP: verb DATA, one per transaction, with
                  sender, rcpts, delivered, size, outcome ok|partial|failed
      request     proto=jmap, account, methods (in order), ms: one per request
      delivery    recipient, size, status (storage.delivery.Status), ms, reason

  Connections, logins and deliveries log at INFO; commands and requests at
  DEBUG (a busy server answers thousands a second; ``level = "debug"`` shows
  them); a failure of Roost itself at ERROR with its traceback in ``exc``.
- Secrets never reach a log call: no module passes a password, token or raw
  command line; login events carry the mechanism and the account name only.
- One event, one line: ``kv`` values with spaces, quotes, ``=`` or control
  characters are written as JSON strings, so a traceback stays on its line.
  Client-supplied values are cut at ``MAX_VALUE`` characters.
- The event loop never waits for the log: formatted lines go to a bounded
  queue and a thread writes them. When the reader stalls (a full pipe) lines
  are dropped, counted, and a ``log_dropped`` line reports how many.
- Other libraries' loggers (asyncio, aiosmtpd's "mail.log", Twisted, bridged
  into ``logging``, and Python warnings) pass at WARNING and above.
- ``[log] file`` appends to a file; logrotate may move it away (Roost reopens
  the path within a second when its inode changes).
"""

import json
import logging
import os
import queue
import sys
import threading
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}
FORMATS = ("kv", "json")
QUEUE_LINES = 10000
MAX_VALUE = 2048
REOPEN_CHECK = 1.0
WRITE_INTERVAL = 0.05   # seconds a written batch waits for the next

# Attributes every LogRecord has; anything else on a record came in ``extra=``.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def fields(record):
    """The record as ordered (key, value) pairs: ts, level, logger, msg, the
    extra fields, exc."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    out = [("ts", f"{ts}.{int(record.msecs):03d}Z"), ("level", record.levelname.lower()),
           ("logger", record.name), ("msg", _cut(record.getMessage()))]
    for key, value in record.__dict__.items():
        if key not in _STANDARD and value is not None:
            out.append((key, _cut(value) if isinstance(value, str) else value))
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        out.append(("exc", record.exc_text))
    if record.stack_info:
        out.append(("stack", record.stack_info))
    return out


def _cut(text):
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE] + "..."


class JSONFormatter(logging.Formatter):
    def format(self, record):
        return json.dumps(dict(fields(record)), ensure_ascii=False, default=str,
                          separators=(",", ":"))


class KVFormatter(logging.Formatter):
    def format(self, record):
        return " ".join(f"{k}={_kv(v)}" for k, v in fields(record))


def _kv(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        value = ",".join(str(v) for v in value)
    value = str(value)
    if value and value.isprintable() and not any(c in value for c in ' "=\\'):
        return value
    return json.dumps(value, ensure_ascii=False)


class QueueHandler(logging.Handler):
    """Formats in the caller's thread; one thread writes (see the module docstring)."""

    def __init__(self, path=None, limit=QUEUE_LINES):
        super().__init__()
        self.path = path
        self.stream = None
        self.ident = None
        self.checked = 0.0
        self.queue = queue.Queue(limit)
        self.dropped = 0     # approximate under contention; only reported
        self._open()
        self.thread = threading.Thread(target=self._write, name="roost-log", daemon=True)
        self.thread.start()

    def emit(self, record):
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - a bad record must not break the caller
            self.handleError(record)
            return
        try:
            self.queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def _open(self):
        if self.path is None:
            self.stream = sys.stderr
            return
        if self.stream is not None:
            self.stream.close()
        self.stream = open(self.path, "a", encoding="utf-8")
        st = os.fstat(self.stream.fileno())
        self.ident = (st.st_dev, st.st_ino)

    def _reopen_if_moved(self):
        now = time.monotonic()
        if self.path is None or now - self.checked < REOPEN_CHECK:
            return
        self.checked = now
        try:
            st = os.stat(self.path)
            moved = (st.st_dev, st.st_ino) != self.ident
        except OSError:
            moved = True
        if moved:
            self._open()

    def _write(self):
        while True:
            line = self.queue.get()
            if line is None:
                break
            try:
                self._reopen_if_moved()
                if self.dropped:
                    lost, self.dropped = self.dropped, 0
                    self.stream.write(self.format(logging.makeLogRecord({
                        "name": "roost", "levelno": logging.WARNING, "levelname": "WARNING",
                        "msg": "log lines dropped: the log's reader is too slow",
                        "event": "log_dropped", "lines": lost})) + "\n")
                self.stream.write(line + "\n")
                if self.queue.empty():
                    self.stream.flush()
                    # Let lines gather: one wake-up and one write per interval, not
                    # per line (a thread switch per line cost 0.1 ms per delivery).
                    time.sleep(WRITE_INTERVAL)
            except (OSError, ValueError):
                pass   # nowhere to write: the line is lost, the server goes on

    def close(self):
        """Write what is queued (waiting a moment at most), then stop."""
        try:
            self.queue.put(None, timeout=1)
        except queue.Full:
            pass
        self.thread.join(timeout=2)
        if self.path is not None and self.stream is not None and not self.thread.is_alive():
            self.stream.close()
        super().close()


_installed = []


def setup(level="info", fmt="kv", path=None):
    """Send logs to stderr (or ``path``) as ``fmt`` lines from ``level`` up;
    returns the handler (``close()`` it at exit)."""
    if fmt not in FORMATS:
        raise ValueError(f"[log] format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if level not in LEVELS:
        raise ValueError(f"[log] level must be one of {', '.join(LEVELS)}, not {level!r}")
    handler = QueueHandler(path or None)
    handler.setFormatter(JSONFormatter() if fmt == "json" else KVFormatter())
    handler.setLevel(LEVELS[level])
    root = logging.getLogger()
    for old in _installed:
        root.removeHandler(old)
        old.close()
    _installed[:] = [handler]
    root.addHandler(handler)
    root.setLevel(max(LEVELS[level], logging.WARNING))
    logging.getLogger("roost").setLevel(LEVELS[level])
    logging.captureWarnings(True)
    threading.excepthook = _thread_exception
    _bridge_twisted()
    return handler


def want(level):
    """Make sure records of the "roost" loggers from ``level`` up are made
    (metrics need the DEBUG command records even when the log shows less)."""
    roost = logging.getLogger("roost")
    if not roost.level or roost.level > level:
        roost.setLevel(level)


def _thread_exception(args):
    if args.exc_type is SystemExit:
        return
    logging.getLogger("roost").error("uncaught exception in thread %s",
                                     getattr(args.thread, "name", "?"),
                                     exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


_bridged = []


def _bridge_twisted():
    if _bridged:
        return
    _bridged.append(True)
    from twisted.logger import STDLibLogObserver, globalLogBeginner
    globalLogBeginner.beginLoggingTo([STDLibLogObserver(name="twisted")],
                                     discardBuffer=True, redirectStandardIO=False)
