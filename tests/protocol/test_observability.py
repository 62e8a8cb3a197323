"""Operations over real sockets: ``/metrics`` of ``roost serve --metrics``, the
structured log lines on its stderr, and the relay socket removed on exit."""

import imaplib
import json
import os
import signal
import smtplib
import urllib.request

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import RoostServer, add_user, roost, wait_for

USER, PASSWORD, WRONG = "alice@example.org", "s3cret-Pass-9", "wr0ng-Guess-7"
USING = ["urn:ietf:params:jmap:core", "urn:ietf:params:jmap:mail"]
MESSAGE = b"From: bob@example.net\r\nTo: alice@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def actions(server):
    """The same client work for every test: a failed IMAP login, a good one
    with SELECT, and one LMTP delivery."""
    imap = imaplib.IMAP4("127.0.0.1", server.ports["imap"])
    with pytest.raises(imaplib.IMAP4.error):
        imap.login(USER, WRONG)
    imap.login(USER, PASSWORD)
    assert imap.select("INBOX")[0] == "OK"
    imap.logout()
    with smtplib.LMTP("127.0.0.1", server.ports["lmtp"]) as lmtp:
        lmtp.sendmail("bob@example.net", [USER], MESSAGE)


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.status == 200
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def test_metrics_count_connections_commands_logins_and_deliveries(tmp_path, roost_server):
    data = tmp_path / "data"
    add_user(data, USER, PASSWORD)
    server = roost_server(data, listeners=("imap", "lmtp", "metrics"))
    assert "metrics" in server.ports and server.ports["metrics"] != 0
    before = scrape(server.ports["metrics"])
    assert value(before, "roost_deliveries_total", status="delivered") == 0
    actions(server)

    m = scrape(server.ports["metrics"])
    assert value(m, "roost_connections_total", proto="imap") == 1
    assert value(m, "roost_connections_total", proto="lmtp") == 1
    assert value(m, "roost_commands_total", proto="imap", command="LOGIN", outcome="NO") == 1
    assert value(m, "roost_commands_total", proto="imap", command="LOGIN", outcome="OK") == 1
    assert value(m, "roost_commands_total", proto="imap", command="SELECT", outcome="OK") == 1
    assert value(m, "roost_command_seconds_count", proto="imap", command="SELECT") == 1
    assert value(m, "roost_commands_total", proto="lmtp", command="DATA", outcome="ok") == 1
    assert value(m, "roost_logins_total", proto="imap", outcome="ok") == 1
    assert value(m, "roost_auth_failures_total", proto="imap") == 1
    assert value(m, "roost_deliveries_total", status="delivered") == 1
    assert value(m, "roost_delivery_seconds_count") == 1
    assert value(m, "roost_store_commit_seconds_count") >= 1
    assert ("roost_delivery_queue", ()) in m and ("roost_worker_tasks", ()) in m
    assert value(m, "process_resident_memory_bytes") > 0
    # the connections close a moment after the clients hang up
    assert wait_for(lambda: value(scrape(server.ports["metrics"]), "roost_connections_open",
                                  proto="imap") == 0, timeout=10)


def test_metrics_are_off_unless_asked(tmp_path, roost_server):
    data = tmp_path / "data"
    add_user(data, USER, PASSWORD)
    server = roost_server(data, listeners=("imap",))
    assert "metrics" not in server.ports
    assert not any("metrics" in line for line in server.output)


def _events(lines):
    return [json.loads(line) for line in lines]


def jmap_actions(server, token):
    """A JMAP request with an app token, and one with a wrong password."""
    url = f"http://127.0.0.1:{server.ports['jmap']}/jmap/api/"
    calls = [["Mailbox/query", {"accountId": "A1"}, "0"], ["Nope/get", {}, "1"]]
    r = httpx.post(url, headers={"Authorization": f"Bearer {token}"},
                   json={"using": USING, "methodCalls": calls}, timeout=30)
    assert r.status_code == 200
    r = httpx.post(url, auth=(USER, WRONG), json={"using": USING, "methodCalls": []}, timeout=30)
    assert r.status_code == 401


def test_json_log_lines(tmp_path):
    data = tmp_path / "data"
    add_user(data, USER, PASSWORD)
    token = roost(data, "token", "add", USER, "phone").stdout.decode().strip()
    conf = tmp_path / "roost.toml"
    conf.write_text('[log]\nformat = "json"\nlevel = "debug"\n')
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        server = RoostServer(data, listeners=("imap", "lmtp", "jmap"), config=conf,
                             stderr=err).start()
        try:
            actions(server)
            jmap_actions(server, token)
        finally:
            server.stop()
    text = err_path.read_text()
    assert PASSWORD not in text and WRONG not in text and token not in text
    lines = text.splitlines()
    events = _events(lines)                     # every line is one JSON object
    assert all({"ts", "level", "logger", "msg"} <= e.keys() for e in events)

    def find(**want):
        hits = [e for e in events if all(e.get(k) == v for k, v in want.items())]
        assert hits, f"no event with {want} in:\n" + "\n".join(lines)
        return hits

    opened = find(event="connection", state="open", proto="imap")[0]
    closed = find(event="connection", state="close", proto="imap", conn=opened["conn"])[0]
    assert closed["peer"] == "127.0.0.1" and closed["account"] == USER
    assert closed["bytes_in"] > 0 and closed["bytes_out"] > 0 and closed["ms"] > 0
    failed = find(event="login", outcome="failed")[0]
    assert (failed["proto"], failed["account"], failed["mechanism"], failed["peer"]) == \
        ("imap", USER, "LOGIN", "127.0.0.1")
    find(event="login", outcome="ok", proto="imap", account=USER)
    find(event="command", proto="imap", verb="LOGIN", outcome="NO")
    select = find(event="command", proto="imap", verb="SELECT", outcome="OK")[0]
    assert select["mailbox"] == "INBOX" and select["ms"] >= 0 and select["conn"] == opened["conn"]
    delivery = find(event="delivery", recipient=USER, status="delivered")[0]
    assert delivery["size"] == len(MESSAGE) and delivery["ms"] >= 0   # as received
    data_cmd = find(event="command", proto="lmtp", verb="DATA", outcome="ok")[0]
    assert (data_cmd["rcpts"], data_cmd["delivered"], data_cmd["sender"]) == (1, 1, "bob@example.net")
    find(event="connection", state="close", proto="lmtp")
    find(event="login", proto="jmap", outcome="ok", account=USER, mechanism="bearer")
    find(event="login", proto="jmap", outcome="failed", account=USER, mechanism="basic")
    find(event="command", proto="jmap", verb="Mailbox/query", outcome="ok", account=USER)
    find(event="command", proto="jmap", verb="unknown", outcome="unknownMethod")
    request = find(event="request", proto="jmap")[0]
    assert request["methods"] == ["Mailbox/query", "Nope/get"] and request["ms"] >= 0


def test_default_log_is_kv_at_info(tmp_path):
    data = tmp_path / "data"
    add_user(data, USER, PASSWORD)
    err_path = tmp_path / "stderr"
    with open(err_path, "wb") as err:
        server = RoostServer(data, listeners=("imap", "lmtp"), stderr=err).start()
        try:
            actions(server)
        finally:
            server.stop()
    text = err_path.read_text()
    assert PASSWORD not in text and WRONG not in text
    lines = text.splitlines()
    assert lines and all(line.startswith("ts=") for line in lines), text
    assert any("event=login" in line and "outcome=failed" in line and f"account={USER}" in line
               for line in lines), text
    assert any("event=delivery" in line and "status=delivered" in line for line in lines), text
    assert not any("event=command" in line for line in lines), "commands are DEBUG"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_removes_the_relay_socket_on_exit(tmp_path, sig):
    data = tmp_path / "data"
    server = RoostServer(data, listeners=("lmtp",)).start()
    sock = data / "roost.sock"
    try:
        assert sock.exists()
        server.proc.send_signal(sig)
        assert server.proc.wait(30) == 0
    finally:
        server.stop()
    assert not os.path.exists(sock), "".join(server.output)
