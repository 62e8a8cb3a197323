"""Log lines (server.logs), metrics from log events (server.metrics) and the
store's commit observer, in-process."""

import json
import logging
import re
import threading

import pytest

from roost.server import config, logs
from roost.server.metrics import MAX_COMMANDS, Metrics
from roost.storage import txn
from roost.storage.store import Store


def record(msg="hello", level=logging.INFO, exc_info=None, **extra):
    r = logging.LogRecord("roost.test", level, __file__, 1, msg, (), exc_info)
    r.__dict__.update(extra)
    return r


def test_kv_line_quotes_what_needs_it_and_stays_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        exc = sys.exc_info()
    line = logs.KVFormatter().format(record(
        "command", exc_info=exc, event="command", verb="SELECT", mailbox='A "b"\nc=d',
        ms=1.5, methods=["Mailbox/get", "Email/get"], ok=True, account=None))
    assert "\n" not in line
    assert line.startswith("ts=") and " level=info logger=roost.test msg=command " in line
    assert ' mailbox="A \\"b\\"\\nc=d" ' in line
    assert " verb=SELECT " in line and " ms=1.5 " in line and " ok=true " in line
    assert " methods=Mailbox/get,Email/get " in line and "account=" not in line
    assert 'exc="Traceback' in line and "ValueError: boom" in line


def test_json_line_has_the_extra_fields_and_the_traceback():
    try:
        raise KeyError("x")
    except KeyError:
        import sys
        exc = sys.exc_info()
    doc = json.loads(logs.JSONFormatter().format(record(
        "failed", level=logging.ERROR, exc_info=exc, event="delivery", size=3, peer="::1")))
    assert doc["level"] == "error" and doc["event"] == "delivery" and doc["size"] == 3
    assert doc["peer"] == "::1" and doc["exc"].startswith("Traceback") and "KeyError" in doc["exc"]


def test_client_values_are_cut():
    line = logs.KVFormatter().format(record(mailbox="x" * 100000))
    assert len(line) < logs.MAX_VALUE + 200


class Stalled:
    """A stream whose writes wait until released (a log reader that stopped reading)."""

    def __init__(self):
        self.release = threading.Event()
        self.lines = []

    def write(self, text):
        self.release.wait(30)
        self.lines.append(text)

    def flush(self):
        pass


def test_a_stalled_reader_never_blocks_the_caller_and_drops_are_reported():
    handler = logs.QueueHandler(limit=3)
    handler.setFormatter(logs.KVFormatter())
    stalled = handler.stream = Stalled()
    done = threading.Event()

    def emit_many():
        for i in range(50):
            handler.emit(record(f"line {i}"))
        done.set()
    threading.Thread(target=emit_many, daemon=True).start()
    assert done.wait(10), "emit blocked on a stalled stream"
    stalled.release.set()
    assert wait(handler.queue.empty)
    handler.emit(record("after"))
    handler.close()
    text = "".join(stalled.lines)
    # The writer may take the count (and reset it) before it blocks, so the
    # drops are counted from the reports it wrote.
    reported = sum(int(n) for n in re.findall(r"event=log_dropped lines=(\d+)", text))
    assert reported + handler.dropped >= 40, text
    assert reported, text
    assert "msg=after" in text


def test_the_log_file_is_reopened_after_logrotate_moves_it(tmp_path, monkeypatch):
    monkeypatch.setattr(logs, "REOPEN_CHECK", 0)
    path = tmp_path / "roost.log"
    handler = logs.QueueHandler(str(path))
    handler.setFormatter(logs.KVFormatter())
    handler.emit(record("first"))
    assert wait(lambda: "msg=first" in path.read_text())
    path.rename(tmp_path / "roost.log.1")
    handler.emit(record("second"))
    handler.close()
    assert "msg=second" in path.read_text()
    assert "msg=second" not in (tmp_path / "roost.log.1").read_text()


def wait(predicate, timeout=10):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_log_settings_are_validated(tmp_path):
    default = config.load()
    assert (default.log_format, default.log_level, default.log_file) == ("kv", "info", "")
    good = tmp_path / "good.toml"
    good.write_text('[log]\nformat = "JSON"\nlevel = "debug"\nfile = "/var/log/roost.log"\n')
    cfg = config.load(str(good))
    assert (cfg.log_format, cfg.log_level, cfg.log_file) == ("json", "debug", "/var/log/roost.log")
    for bad in ('format = "xml"', 'level = "loud"'):
        path = tmp_path / "bad.toml"
        path.write_text(f"[log]\n{bad}\n")
        with pytest.raises(ValueError, match=r"\[log\]"):
            config.load(str(path))


def test_metrics_follow_log_events_with_bounded_labels():
    m = Metrics()
    get = m.registry.get_sample_value
    m.emit(record(event="connection", state="open", proto="imap"))
    m.emit(record(event="connection", state="open", proto="imap"))
    m.emit(record(event="connection", state="close", proto="imap"))
    m.emit(record(event="login", proto="jmap", outcome="failed"))
    m.emit(record(event="delivery", status="over-quota", ms=2.0))
    m.emit(record(event="command", proto="imap", verb=None, outcome="BAD", ms=0.1))
    m.emit(record(event="nothing we count"))
    assert get("roost_connections_total", {"proto": "imap"}) == 2
    assert get("roost_connections_open", {"proto": "imap"}) == 1
    assert get("roost_auth_failures_total", {"proto": "jmap"}) == 1
    assert get("roost_deliveries_total", {"status": "over-quota"}) == 1
    assert get("roost_commands_total", {"proto": "imap", "command": "unparsed", "outcome": "BAD"}) == 1
    for i in range(MAX_COMMANDS + 10):
        m.emit(record(event="command", proto="jmap", verb=f"X{i}/get", outcome="ok", ms=1))
    assert get("roost_commands_total", {"proto": "jmap", "command": "other", "outcome": "ok"}) == 10


def test_commit_observers_see_each_commit_and_cannot_break_it():
    store = Store.memory()
    seen = []

    def broken(seconds):
        raise RuntimeError("observer bug")
    txn.observers[:] = [broken, seen.append]
    try:
        store.add_account("o@example.org", "x")
        assert store.account("o@example.org") is not None
        assert seen and all(s >= 0 for s in seen)
    finally:
        txn.observers.clear()
        store.close()
