"""Spam signals (protocols.mailauth.spam): the local score from verdicts and
headers, the X-Spam-* headers, and the rspamd / spamd clients against small
loopback servers that speak their protocols (a real rspamd:
tests/interop/test_rspamd.py), including scanners that are down or slow."""

import http.server
import json
import socket
import threading
import time

import pytest

from roost.protocols.mailauth.spam import (Rspamd, ScannerError, SpamFilter, local_score,
                                           parse_spamd)

GOOD = (b"From: A <a@sender.test>\r\nTo: b@example.org\r\nSubject: Lunch\r\n"
        b"Date: Thu, 03 Dec 2026 10:00:00 +0000\r\nMessage-ID: <x@sender.test>\r\n\r\nhi\r\n")


def test_a_clean_message_scores_zero():
    assert local_score(GOOD, {"spf": "pass", "dkim": "pass", "dmarc": "pass",
                              "remote_host": "mx.sender.test"}) == (0.0, [])


@pytest.mark.parametrize("verdicts, reasons, score", [
    ({"spf": "fail"}, ["SPF_FAIL"], 3.0),
    ({"spf": "softfail"}, ["SPF_SOFTFAIL"], 1.0),
    ({"dkim": "fail"}, ["DKIM_FAIL"], 1.5),
    ({"dkim": "fail", "dkim_domains": ["ok.test"]}, [], 0.0),   # another signature passed
    ({"dmarc": "fail", "dmarc_policy": "reject"}, ["DMARC_FAIL", "DMARC_REJECT"], 6.0),
    ({"dmarc": "fail", "dmarc_policy": "none"}, ["DMARC_FAIL"], 2.0),
    ({"remote_ip": "192.0.2.7", "remote_host": ""}, ["NO_PTR"], 1.5),
    ({"remote_ip": "", "remote_host": ""}, [], 0.0),     # LMTP without a Received: no client
    ({"dnsbl": ["a.test", "b.test"]}, ["DNSBL(a.test)", "DNSBL(b.test)"], 6.0),
])
def test_verdict_signals(verdicts, reasons, score):
    assert local_score(GOOD, verdicts) == (score, reasons)


def test_header_rules():
    data = b"To: b@example.org\r\nSubject: BUY CHEAP WATCHES NOW\r\n\r\nbody\r\n"
    score, reasons = local_score(data, {})
    assert reasons == ["NO_FROM", "NO_DATE", "NO_MESSAGE_ID", "SUBJECT_CAPS"]
    assert score == 4.5


def test_headers_and_updates():
    headers, updates = SpamFilter(threshold=4).check(GOOD, {"spf": "fail", "remote_ip": "192.0.2.7",
                                                          "remote_host": ""})
    assert headers == (b"X-Spam-Score: 4.5\r\nX-Spam-Status: Yes, score=4.5 required=4.0\r\n"
                       b"\ttests=SPF_FAIL,NO_PTR\r\n")
    assert updates == {"spam": True, "spam_score": 4.5, "spam_reasons": ["SPF_FAIL", "NO_PTR"]}
    headers, updates = SpamFilter().check(GOOD, {})
    assert headers.startswith(b"X-Spam-Score: 0.0\r\nX-Spam-Status: No, score=0.0 required=5.0")
    assert updates["spam"] is False


def test_dmarc_quarantine_is_spam_whatever_the_score():
    _, updates = SpamFilter(threshold=50).check(GOOD, {"dmarc": "fail",
                                                      "dmarc_policy": "quarantine"})
    assert updates["spam"] is True and updates["spam_score"] == 4.0


class FakeRspamd(http.server.BaseHTTPRequestHandler):
    """POST /checkv2 as rspamd answers it; records the request."""
    seen = []
    ANSWER = {"score": 7.25, "required_score": 6.0, "action": "add header",
              "symbols": {"BAYES_SPAM": {"score": 5.0}, "R_SPF_FAIL": {"score": 2.25},
                          "ARC_NA": {"score": 0.0}}}
    answer = ANSWER
    delay = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        FakeRspamd.seen.append((self.path, dict(self.headers), self.headers.get_all("Rcpt"), body))
        time.sleep(FakeRspamd.delay)
        out = json.dumps(FakeRspamd.answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        try:
            self.end_headers()
            self.wfile.write(out)
        except (BrokenPipeError, ConnectionResetError):
            pass    # the client gave up (the timeout test)

    def log_message(self, *args):
        pass


@pytest.fixture
def rspamd():
    FakeRspamd.seen, FakeRspamd.delay, FakeRspamd.answer = [], 0, FakeRspamd.ANSWER
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeRspamd)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_rspamd_protocol(rspamd):
    spam = SpamFilter(rspamd=rspamd)
    verdicts = {"remote_ip": "192.0.2.7", "helo": "mx.sender.test", "remote_host": "mx.sender.test",
                "spf": "fail"}
    headers, updates = spam.check(GOOD, verdicts, mail_from="a@sender.test",
                                  rcpts=("b@example.org", "c@example.org"))
    ((path, sent, rcpts, body),) = FakeRspamd.seen
    assert path == "/checkv2" and body == GOOD
    assert (sent["IP"], sent["Helo"], sent["From"], sent["Hostname"]) == \
        ("192.0.2.7", "mx.sender.test", "a@sender.test", "mx.sender.test")
    assert rcpts == ["b@example.org", "c@example.org"]
    assert updates["spam"] is True and updates["spam_score"] == 7.25
    assert updates["spam_reasons"][:3] == ["SPF_FAIL", "BAYES_SPAM", "R_SPF_FAIL"]
    assert headers.startswith(b"X-Spam-Score: 7.2\r\nX-Spam-Status: Yes, score=7.2 required=6.0")


def test_rspamd_down_or_slow_falls_back_to_the_local_score(rspamd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    _, updates = SpamFilter(rspamd=f"http://127.0.0.1:{closed}").check(GOOD, {"spf": "fail"})
    assert updates["spam_score"] == 3.0 and updates["spam_reasons"] == ["SPF_FAIL",
                                                                        "SCANNER_UNAVAILABLE"]
    FakeRspamd.delay = 2
    started = time.monotonic()
    _, updates = SpamFilter(rspamd=rspamd, timeout=0.3).check(GOOD, {})
    assert time.monotonic() - started < 1.5
    assert updates["spam_score"] == 0.0 and "SCANNER_UNAVAILABLE" in updates["spam_reasons"]


def test_rspamd_nonsense_answer(rspamd):
    FakeRspamd.answer = {"unexpected": True}
    with pytest.raises(ScannerError):
        Rspamd(rspamd).scan(GOOD)


def test_rspamd_url_is_checked():
    with pytest.raises(ValueError):
        SpamFilter(rspamd="127.0.0.1:11333")


def test_spamd_protocol():
    """A loopback spamd: reads the SYMBOLS request, answers as spamd 4 does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    got = {}

    def serve():
        conn, _ = listener.accept()
        data = b""
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        got["request"] = data
        conn.sendall(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 26\r\nSpam: True ; 12.5 / 5.0\r\n"
                     b"\r\nBAYES_99,URIBL_BLOCKED,XY")
        conn.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    spam = SpamFilter(spamd=f"127.0.0.1:{listener.getsockname()[1]}")
    _, updates = spam.check(GOOD, {})
    thread.join(5)
    listener.close()
    head, _, body = got["request"].partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"SYMBOLS SPAMC/1.5"
    assert f"Content-length: {len(GOOD)}".encode() in head and body == GOOD
    assert updates == {"spam": True, "spam_score": 12.5,
                       "spam_reasons": ["BAYES_99", "URIBL_BLOCKED", "XY"]}


def test_spamd_errors():
    with pytest.raises(ScannerError):
        parse_spamd(b"SPAMD/1.0 76 Bad header line\r\n\r\n")
    assert parse_spamd(b"SPAMD/1.1 0 EX_OK\r\nSpam: False ; 1.2 / 5.0\r\n\r\n") == \
        (1.2, 5.0, False, [])
