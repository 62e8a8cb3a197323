"""The inbound pipeline: the verdicts of one incoming message and the
``Authentication-Results:`` header (RFC 8601) that delivery prepends.

``Inbound(resolver, authserv_id, timeout=..., spam=None, psl=None,
record=None)``; ``check(data, ip, helo, mail_from, remote_host=None)``
blocks (DNS, RSA) and is run off the event loop by the caller (the LMTP
listener and the SMTP edge, through the server's ``run``). It returns
``Checked(data, auth_headers, verdicts)``:

- ``data``: the message with every ``Authentication-Results`` field that
  claims our authserv-id removed (RFC 8601 section 5: the id compared
  case-insensitively, folded fields removed whole, the rest byte for byte);
- ``auth_headers``: one ``Authentication-Results`` field (spf, one dkim per
  signature, dmarc, arc; each with a reason comment and the properties
  smtp.mailfrom/smtp.helo, header.d/header.i/header.s/header.a/header.b,
  header.from), in the message's line ending, then what ``spam`` adds;
- ``verdicts``: the dict of keys ``docs/contract`` lists (spf, dkim, dmarc,
  arc, dkim_domains, from_domain, dmarc_policy, remote_ip, remote_host,
  helo; spam, spam_reasons when DMARC's policy applies; the spam checker's
  keys when there is one).

A failing DMARC check whose policy applies (after pct) sets ``spam`` (with
the reason "DMARC policy quarantine" or "... reject"): Roost files it as
junk rather than refusing mail its MTA already accepted; the SMTP edge may
refuse ``dmarc_policy == "reject"`` at DATA itself.

Every lookup of a message shares one time budget (``timeout``, 10 s by
default, under RFC 7208's 20 s); a lookup that fails or runs out of it
makes its method ``temperror`` (``verify``), so a slow or dead DNS server
delays a message by at most ``timeout`` and never loses it. ``record`` (the
server's, writing ``storage.dmarc_reports``) is called with each DMARC
evaluation of a domain whose record asks for aggregate reports (rua=).
"""

import email.utils
import logging
import re
import time
from dataclasses import dataclass

from . import psl as psl_module
from . import verify

log = logging.getLogger("roost.mailauth")

TIMEOUT = 10.0


@dataclass
class Checked:
    data: bytes
    auth_headers: bytes
    verdicts: dict


def split_header(data):
    """``(header, body)``: the header's lines (each with its line end) and
    the rest, which starts with the empty line (b"" when there is none)."""
    if data[:1] == b"\n" or data[:2] == b"\r\n":
        return b"", data
    m = re.search(rb"\n\r?\n", data)
    if m is None:
        return data, b""
    return data[:m.start() + 1], data[m.start() + 1:]


def fields(header):
    """``[(name_lower, raw_bytes)]``: each field with its continuation lines."""
    out = []
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + line)
        else:
            out.append((line.split(b":", 1)[0].strip().lower(), line))
    return out


def _uncomment(text):
    """Text with RFC 5322 comments removed (nested, with quoted pairs)."""
    out, depth, i = [], 0, 0
    while i < len(text):
        c = text[i]
        if c == "\\" and depth:
            i += 2
            continue
        if c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(c)
        i += 1
    return "".join(out)


def authserv_id(raw):
    """The authserv-id of one raw Authentication-Results field (lower case)."""
    value = raw.split(b":", 1)[1].decode("utf-8", "replace")
    value = _uncomment(re.sub(r"\r?\n", "", value))
    first = value.split(";", 1)[0].strip().split()
    return first[0].strip('"').lower() if first else ""


def remove_ours(data, authserv):
    """``data`` without the Authentication-Results fields claiming ``authserv``."""
    header, body = split_header(data)
    if b"authentication-results" not in header.lower():
        return data
    ours = authserv.lower()
    kept = [raw for name, raw in fields(header)
            if not (name == b"authentication-results" and authserv_id(raw) == ours)]
    return b"".join(kept) + body


def from_domain(header):
    """The RFC5322.From domain when the message has exactly one From
    address (RFC 7489 section 6.6.1), else ""."""
    values = [raw.split(b":", 1)[1].decode("utf-8", "replace")
              for name, raw in fields(header) if name == b"from"]
    if len(values) != 1:
        return ""
    addresses = [a for _n, a in email.utils.getaddresses([re.sub(r"\r?\n", "", values[0])])
                 if "@" in a]
    domains = {a.rpartition("@")[2].strip().lower().rstrip(".") for a in addresses}
    return domains.pop() if len(domains) == 1 else ""


# --- the header -------------------------------------------------------------------

_TSPECIALS = set('()<>@,;:\\"/[]?= \t')


def _comment(text):
    text = re.sub(r"[()\\\r\n\x00-\x1f]+", " ", str(text)).strip()
    return f" ({text[:120]})" if text else ""


def _value(text):
    text = re.sub(r"[\r\n\x00-\x1f\"\\]", "", str(text))[:255]
    return f'"{text}"' if not text or any(c in _TSPECIALS for c in text) else text


def _domainish(text):
    """A property that is a domain (or @domain) as it is, else quoted."""
    text = str(text)[:255]
    return text if re.fullmatch(r"@?[A-Za-z0-9._-]+", text or "-") and text else _value(text)


def build_header(authserv, spf, dkims, dmarc, arc, eol=b"\r\n"):
    parts = []
    if spf is not None:
        prop = "smtp.mailfrom" if spf.identity == "mailfrom" else "smtp.helo"
        parts.append(f"spf={spf.result}{_comment(spf.reason)} {prop}={_domainish(spf.domain)}"
                     if spf.domain else f"spf={spf.result}{_comment(spf.reason)}")
    if not dkims:
        parts.append("dkim=none")
    for r in dkims:
        text = f"dkim={r.result}{_comment(r.reason)}"
        for prop, value in (("header.d", r.domain), ("header.i", r.identity),
                            ("header.s", r.selector), ("header.a", r.algorithm),
                            ("header.b", r.b)):
            if value:
                text += f" {prop}={_domainish(value) if prop in ('header.d', 'header.i') else _value(value)}"
        parts.append(text)
    if dmarc is not None:
        note = dmarc.reason
        if dmarc.policy:
            note = f"p={dmarc.policy} dis={dmarc.applied if dmarc.result == 'fail' else 'none'}" \
                + (f"; {note}" if note else "")
        text = f"dmarc={dmarc.result}{_comment(note)}"
        parts.append(text + (f" header.from={_domainish(dmarc.from_domain)}"
                             if dmarc.from_domain else ""))
    if arc is not None:
        parts.append(f"arc={arc.result}{_comment(arc.reason or (f'i={arc.instance}' if arc.instance else ''))}")
    sep = (";" + eol.decode() + "\t")
    return ("Authentication-Results: " + authserv + sep + sep.join(parts)).encode(
        "utf-8", "replace") + eol


# --- the pipeline ------------------------------------------------------------------

class Inbound:
    def __init__(self, resolver, authserv_id, *, timeout=TIMEOUT, spam=None, psl=None,
                 record=None, rng=None, clock=time.monotonic):
        self.resolver = resolver
        self.authserv_id = authserv_id
        self.timeout = timeout
        self.spam = spam
        self.psl = psl or psl_module.default()
        self.record = record
        self.rng = rng
        self.clock = clock

    def check(self, data, ip, helo, mail_from, remote_host=None):
        data = remove_ours(bytes(data), self.authserv_id)
        header, _body = split_header(data)
        eol = b"\r\n" if b"\r\n" in header[:2000] or b"\n" not in header else b"\n"
        budget = verify.Budget(self.timeout, self.clock)
        ip = (ip or "").strip()
        spf = verify.check_spf(self.resolver, budget, ip, helo, mail_from)
        dkims = verify.check_dkim(self.resolver, budget, data)
        arc = verify.check_arc(self.resolver, budget, data)
        domain = from_domain(header)
        kwargs = {"rng": self.rng} if self.rng is not None else {}
        dmarc = verify.check_dmarc(self.resolver, budget, self.psl, domain, spf, dkims, **kwargs)
        if remote_host is None:
            remote_host = verify.verified_ptr(self.resolver, budget, ip) if ip else ""
        verdicts = {
            "spf": spf.result, "dkim": verify.overall_dkim(dkims), "dmarc": dmarc.result,
            "arc": arc.result,
            "dkim_domains": sorted({r.domain for r in dkims if r.result == "pass" and r.domain}),
            "from_domain": domain, "remote_ip": ip, "remote_host": remote_host or "",
            "helo": helo or "",
        }
        if dmarc.result == "fail":
            verdicts["dmarc_policy"] = dmarc.applied
            if dmarc.applied in ("quarantine", "reject"):
                verdicts["spam"] = True
                verdicts["spam_reasons"] = [f"DMARC policy {dmarc.applied}"]
        headers = build_header(self.authserv_id, spf, dkims, dmarc, arc, eol)
        if self.record is not None and dmarc.record.get("rua") and dmarc.result in ("pass", "fail"):
            self._record(dmarc, spf, dkims, ip, mail_from)
        if self.spam is not None:
            headers += self._spam(data, verdicts)
        return Checked(data, headers, verdicts)

    def _spam(self, data, verdicts):
        try:
            extra, updates = self.spam.check(data, dict(verdicts))
        except Exception:  # noqa: BLE001 - a broken filter never stops delivery
            log.exception("spam check failed")
            return b""
        reasons = verdicts.get("spam_reasons", []) + list(updates.get("spam_reasons", []))
        forced = verdicts.get("spam", False)
        verdicts.update(updates)
        if forced:
            verdicts["spam"] = True
        if reasons:
            verdicts["spam_reasons"] = reasons
        return bytes(extra or b"")

    def _record(self, dmarc, spf, dkims, ip, mail_from):
        row = {
            "policy_domain": dmarc.policy_domain, "rua": dmarc.record.get("rua", ""),
            "policy": {k: dmarc.record[k] for k in ("p", "sp", "pct", "adkim", "aspf")
                       if k in dmarc.record},
            "source_ip": ip, "header_from": dmarc.from_domain,
            "envelope_from": (mail_from or "").strip("<>").rpartition("@")[2].lower(),
            "disposition": dmarc.applied if dmarc.result == "fail" else "none",
            "dkim": "pass" if dmarc.dkim_aligned else "fail",
            "spf": "pass" if dmarc.spf_aligned else "fail",
            "results": {"dkim": [{"domain": r.domain, "selector": r.selector, "result": r.result}
                                 for r in dkims if r.domain],
                        "spf": {"domain": spf.domain, "scope": spf.identity, "result": spf.result}},
        }
        try:
            self.record(row)
        except Exception:  # noqa: BLE001 - a report row is not worth a message
            log.exception("recording a DMARC evaluation for %s", dmarc.policy_domain)
