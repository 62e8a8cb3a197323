"""Spam signals: a score for each inbound message, ``X-Spam-*`` headers and
the ``spam``, ``spam_score`` and ``spam_reasons`` verdicts.

``SpamFilter.check(data, verdicts)`` (blocking; the inbound pipeline and
the SMTP edge call it on a worker thread) returns ``(header_bytes,
updates)``: the header lines to prepend and the keys to merge into the
verdicts dict (contract: /work/notes/contract.md, "Verdicts dict").

The local score adds a weight (``WEIGHTS``, each one overridable) for each
signal the verdicts carry:

- SPF ``fail`` / ``softfail`` / ``permerror``; DKIM ``fail`` with no
  passing signature; DMARC ``fail``, more when its policy is ``quarantine``
  or ``reject``;
- no verified reverse name (``remote_host`` present and empty: the edge
  found no forward-confirmed PTR);
- each DNSBL zone that lists the client (``dnsbl``: the zones the edge
  found, a list; the edge puts them there when ``[smtp] dnsbl_action =
  "score"``);
- simple header rules: no ``From:``, no ``Date:``, no ``Message-ID:``, a
  subject in capitals.

``spam`` is ``score >= threshold``, or DMARC failed with policy quarantine
(the domain owner asked for it) or reject (when the receiver kept it).

Scanners (optional): rspamd over its HTTP protocol (``POST /checkv2`` with
the message as body and the ``IP``, ``Helo``, ``From``, ``Rcpt``,
``Hostname`` headers; its ``score``, ``required_score`` and ``action`` are
used), or SpamAssassin's spamd (the SPAMC/1.5 protocol, ``SYMBOLS``). When
a scanner answers, its score and its required score replace the local ones
(it knows more rules); the local DMARC rule still applies and the local
reasons are kept next to the scanner's symbols. Each call has a short
timeout (``timeout``, 3 s by default); a scanner that is down, slow or
answers nonsense is logged and the local score is used: a scanner never
delays mail for long and never loses it. ``virus`` is set only when a
scanner said so (rspamd's ``virus`` symbols are not mapped yet: not done).
"""

import http.client
import json
import logging
import re
import socket
import urllib.parse

log = logging.getLogger("roost.spam")

THRESHOLD = 5.0
TIMEOUT = 3.0
MAX_SCAN = 10 * 1024 * 1024     # larger messages are scored locally only
WEIGHTS = {
    "SPF_FAIL": 3.0, "SPF_SOFTFAIL": 1.0, "SPF_PERMERROR": 0.5,
    "DKIM_FAIL": 1.5,
    "DMARC_FAIL": 2.0, "DMARC_QUARANTINE": 2.0, "DMARC_REJECT": 4.0,
    "NO_PTR": 1.5,
    "DNSBL": 3.0,
    "NO_FROM": 2.0, "NO_DATE": 1.0, "NO_MESSAGE_ID": 0.5, "SUBJECT_CAPS": 1.0,
}
_HEADER_END = re.compile(rb"\r?\n\r?\n")


class ScannerError(Exception):
    """A scanner did not give a usable answer."""


def header_names(data):
    """``{lower-case name: first value}`` of the message's header section."""
    m = _HEADER_END.search(data)
    head = data[:m.start()] if m else data
    out, current = {}, None         # current: the name whose continuation lines follow
    for line in head.split(b"\n"):
        line = line.rstrip(b"\r")
        if line[:1] in (b" ", b"\t"):
            if current is not None:
                out[current] += " " + line.strip().decode("utf-8", "replace")
            continue
        key, colon, value = line.partition(b":")
        name = key.strip().decode("ascii", "replace").lower()
        current = None
        if colon and name not in out:     # the first field of a name counts
            out[name] = value.strip().decode("utf-8", "replace")
            current = name
    return out


def local_score(data, verdicts, weights=WEIGHTS):
    """``(score, reasons)`` from the verdicts and the header rules."""
    reasons = []
    spf, dkim, dmarc = verdicts.get("spf"), verdicts.get("dkim"), verdicts.get("dmarc")
    if spf in ("fail", "softfail", "permerror"):
        reasons.append("SPF_" + spf.upper())
    if dkim == "fail" and not verdicts.get("dkim_domains"):
        reasons.append("DKIM_FAIL")
    if dmarc == "fail":
        reasons.append("DMARC_FAIL")
        policy = verdicts.get("dmarc_policy")
        if policy in ("quarantine", "reject"):
            reasons.append("DMARC_" + policy.upper())
    if verdicts.get("remote_ip") and "remote_host" in verdicts and not verdicts.get("remote_host"):
        # only when the client is known: LMTP without a Received header names none
        reasons.append("NO_PTR")
    score = sum(weights.get(r, 0.0) for r in reasons)
    for zone in verdicts.get("dnsbl") or ():
        reasons.append(f"DNSBL({zone})")
        score += weights.get("DNSBL", 0.0)
    fields = header_names(data)
    for name, rule in (("from", "NO_FROM"), ("date", "NO_DATE"), ("message-id", "NO_MESSAGE_ID")):
        if not fields.get(name):
            reasons.append(rule)
            score += weights.get(rule, 0.0)
    subject = fields.get("subject") or ""
    letters = [c for c in subject if c.isalpha()]
    if len(letters) >= 8 and all(c.isupper() for c in letters):
        reasons.append("SUBJECT_CAPS")
        score += weights.get("SUBJECT_CAPS", 0.0)
    return round(score, 2), reasons


class Rspamd:
    """rspamd's HTTP protocol: ``POST /checkv2`` (https://rspamd.com/doc/developers/protocol.html)."""

    def __init__(self, url, timeout=TIMEOUT, password=None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"[spam] rspamd must be an http:// URL, not {url!r}")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 11333)
        self.path = (parts.path.rstrip("/") or "") + "/checkv2"
        self.timeout, self.password = timeout, password

    def scan(self, data, *, ip=None, helo=None, mail_from=None, rcpts=(), hostname=None):
        """``(score, required, spam, symbols)``; raises ScannerError."""
        headers = {"Content-Type": "application/octet-stream"}
        for name, value in (("IP", ip), ("Helo", helo), ("From", mail_from),
                            ("Hostname", hostname), ("Password", self.password)):
            if value:
                headers[name] = _header_value(value)
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=self.timeout)
        try:
            conn.putrequest("POST", self.path, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            for rcpt in rcpts:
                conn.putheader("Rcpt", _header_value(rcpt))   # one header per recipient
            conn.putheader("Content-Length", str(len(data)))
            conn.endheaders(data)
            resp = conn.getresponse()
            body = resp.read(1024 * 1024)
            if resp.status != 200:
                raise ScannerError(f"rspamd answered HTTP {resp.status}")
            doc = json.loads(body)
            score, required = float(doc["score"]), float(doc["required_score"])
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as exc:
            raise ScannerError(f"rspamd: {exc or type(exc).__name__}") from None
        finally:
            conn.close()
        action = str(doc.get("action", ""))
        spam = action in ("reject", "add header", "rewrite subject") or score >= required
        symbols = doc.get("symbols") or {}
        names = sorted(symbols, key=lambda s: -abs(float((symbols[s] or {}).get("score", 0) or 0))) \
            if isinstance(symbols, dict) else []
        return score, required, spam, [str(n) for n in names[:20]]


class Spamd:
    """SpamAssassin's spamd, SPAMC/1.5 ``SYMBOLS``."""

    def __init__(self, address, timeout=TIMEOUT, user="roost"):
        host, _, port = str(address).rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"[spam] spamd must be HOST:PORT, not {address!r}")
        self.host, self.port, self.timeout, self.user = host.strip("[]"), int(port), timeout, user

    def scan(self, data, **_ignored):
        """``(score, required, spam, symbols)``; raises ScannerError."""
        request = (f"SYMBOLS SPAMC/1.5\r\nContent-length: {len(data)}\r\n"
                   f"User: {self.user}\r\n\r\n").encode() + data
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                chunks, size = [], 0
                while size < 65536:
                    chunk = sock.recv(8192)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
        except OSError as exc:
            raise ScannerError(f"spamd: {exc}") from None
        return parse_spamd(b"".join(chunks))


_SPAM_LINE = re.compile(rb"^Spam:\s*(True|False|Yes|No)\s*;\s*(-?[\d.]+)\s*/\s*(-?[\d.]+)", re.I | re.M)


def parse_spamd(reply):
    """``(score, required, spam, symbols)`` of a spamd SYMBOLS answer."""
    head, _, body = reply.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    if len(status) < 3 or not status[0].startswith(b"SPAMD/") or status[1] != b"0":
        raise ScannerError(f"spamd: {head[:80]!r}")
    m = _SPAM_LINE.search(head)
    if m is None:
        raise ScannerError("spamd: no Spam: line")
    symbols = [s.strip() for s in body.decode("ascii", "replace").split(",") if s.strip()]
    return float(m.group(2)), float(m.group(3)), m.group(1).lower() in (b"true", b"yes"), symbols[:20]


def _header_value(value):
    return re.sub(r"[\x00-\x1f\x7f]", "", str(value))[:998]


class SpamFilter:
    """The ``spam`` object of the inbound pipeline (``Inbound(spam=...)``)."""

    def __init__(self, threshold=THRESHOLD, *, rspamd=None, spamd=None, timeout=TIMEOUT,
                 weights=None):
        self.threshold = float(threshold)
        self.weights = dict(WEIGHTS, **(weights or {}))
        self.scanner = Rspamd(rspamd, timeout) if rspamd else Spamd(spamd, timeout) if spamd else None

    def check(self, data, verdicts, *, mail_from=None, rcpts=()):
        """``(header_bytes, updates)`` for one message (blocking)."""
        score, reasons = local_score(data, verdicts, self.weights)
        required = self.threshold
        if self.scanner is not None and len(data) <= MAX_SCAN:
            try:
                s_score, s_required, _s_spam, symbols = self.scanner.scan(
                    data, ip=verdicts.get("remote_ip"), helo=verdicts.get("helo"),
                    mail_from=mail_from if mail_from is not None else verdicts.get("mail_from"),
                    rcpts=rcpts, hostname=verdicts.get("remote_host"))
                score, required = round(s_score, 2), s_required
                reasons = reasons + [s for s in symbols if s not in reasons]
            except ScannerError as exc:
                log.warning("spam scanner unavailable, local score used: %s", exc)
                reasons = reasons + ["SCANNER_UNAVAILABLE"]
        spam = score >= required or (verdicts.get("dmarc") == "fail" and
                                     verdicts.get("dmarc_policy") in ("quarantine", "reject"))
        tests = ",".join(reasons) or "none"
        headers = (f"X-Spam-Score: {score:.1f}\r\n"
                   f"X-Spam-Status: {'Yes' if spam else 'No'}, score={score:.1f} "
                   f"required={required:.1f}\r\n\ttests={_header_value(tests)}\r\n").encode()
        return headers, {"spam": spam, "spam_score": score, "spam_reasons": reasons}


def from_config(table, timeout=TIMEOUT):
    """A ``SpamFilter`` from the ``[spam]`` table's values (dict)."""
    return SpamFilter(table.get("threshold", THRESHOLD), rspamd=table.get("rspamd") or None,
                      spamd=table.get("spamd") or None, timeout=float(table.get("timeout", timeout)),
                      weights=table.get("weights") or None)
