"""DMARC aggregate reports (RFC 7489 section 7.2 and appendix C): the XML
document, its gzip'd mail, and the check that a report address outside
the policy domain agreed to receive it (section 7.1).

``aggregate_xml(org, email, report_id, domain, policy, begin, end, rows)``
makes the ``feedback`` document: rows that agree in source IP, disposition,
aligned results, identifiers and underlying results become one ``record``
with their ``count``. ``report_message(...)`` wraps it as RFC 7489 section
7.2.1.1 says: ``application/gzip``, file name
``receiver!policy-domain!begin!end.xml.gz``, Subject ``Report Domain: ...
Submitter: ... Report-ID: ...``. ``accepts_reports(resolver, policy_domain,
address, psl)``: True for an address in the policy domain's organisational
domain; otherwise the TXT record ``<policy-domain>._report._dmarc.<rua
domain>`` must start with ``v=DMARC1`` (a DNS failure: not this time).

Pure functions apart from that one lookup; the report job
(``server.dmarc_reports``) reads the rows from storage and queues the mail.
"""

import email.message
import email.policy
import email.utils
import gzip
import json
import time
from xml.etree import ElementTree as ET

from roost.protocols.dns import DNSError

SCOPES = {"mailfrom": "mfrom", "helo": "helo"}
DKIM_RESULTS = {"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"}
SPF_RESULTS = {"none", "neutral", "pass", "fail", "softfail", "temperror", "permerror"}


def _sub(parent, tag, text=None):
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def aggregate_xml(org_name, email_addr, report_id, domain, policy, begin, end, rows):
    root = ET.Element("feedback")
    _sub(root, "version", "1.0")
    meta = _sub(root, "report_metadata")
    _sub(meta, "org_name", org_name)
    _sub(meta, "email", email_addr)
    _sub(meta, "report_id", report_id)
    dates = _sub(meta, "date_range")
    _sub(dates, "begin", int(begin))
    _sub(dates, "end", int(end))
    pub = _sub(root, "policy_published")
    _sub(pub, "domain", domain)
    for tag in ("adkim", "aspf"):
        if policy.get(tag, "r") in ("r", "s"):
            _sub(pub, tag, policy.get(tag, "r"))
    p = policy.get("p", "none")
    _sub(pub, "p", p)
    _sub(pub, "sp", policy.get("sp", p))
    _sub(pub, "pct", policy.get("pct", "100"))
    _sub(pub, "fo", policy.get("fo", "0"))
    groups = {}
    for r in rows:
        key = (r["source_ip"], r["disposition"], r["dkim"], r["spf"], r["header_from"],
               r.get("envelope_from", ""), json.dumps(r.get("results", {}), sort_keys=True))
        groups[key] = groups.get(key, 0) + 1
    for (ip, disposition, dkim, spf, header_from, envelope_from, results), count in groups.items():
        results = json.loads(results)
        record = _sub(root, "record")
        row = _sub(record, "row")
        _sub(row, "source_ip", ip)
        _sub(row, "count", count)
        evaluated = _sub(row, "policy_evaluated")
        _sub(evaluated, "disposition", disposition)
        _sub(evaluated, "dkim", dkim)
        _sub(evaluated, "spf", spf)
        if dkim == spf == "fail" and disposition != _applicable(policy, header_from, domain):
            _sub(_sub(evaluated, "reason"), "type", "sampled_out")
        ids = _sub(record, "identifiers")
        _sub(ids, "envelope_from", envelope_from)
        _sub(ids, "header_from", header_from)
        auth = _sub(record, "auth_results")
        for d in results.get("dkim", []):
            el = _sub(auth, "dkim")
            _sub(el, "domain", d.get("domain", ""))
            if d.get("selector"):
                _sub(el, "selector", d["selector"])
            _sub(el, "result", d.get("result") if d.get("result") in DKIM_RESULTS else "neutral")
        s = results.get("spf", {})
        el = _sub(auth, "spf")
        _sub(el, "domain", s.get("domain", ""))
        _sub(el, "scope", SCOPES.get(s.get("scope"), "mfrom"))
        _sub(el, "result", s.get("result") if s.get("result") in SPF_RESULTS else "none")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8")


def _applicable(policy, header_from, domain):
    p = policy.get("p", "none")
    return policy.get("sp", p) if header_from.lower() != domain.lower() else p


def report_message(receiver, report_from, to, domain, report_id, begin, end, xml, now=None):
    """The report mail (bytes, CRLF) carrying ``xml`` gzip'd."""
    msg = email.message.EmailMessage()
    msg["From"] = report_from
    msg["To"] = ", ".join(to)
    msg["Subject"] = f"Report Domain: {domain} Submitter: {receiver} Report-ID: <{report_id}>"
    msg["Date"] = email.utils.formatdate(now or time.time(), usegmt=True)
    msg["Message-ID"] = f"<{report_id}@{receiver}>"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(f"DMARC aggregate report for {domain} from {receiver}.\n")
    msg.add_attachment(gzip.compress(xml, mtime=0), maintype="application", subtype="gzip",
                       filename=f"{receiver}!{domain}!{int(begin)}!{int(end)}.xml.gz")
    return msg.as_bytes(policy=email.policy.SMTP)


def accepts_reports(resolver, policy_domain, address, psl, timeout=5.0):
    """May reports for ``policy_domain`` go to ``address`` (RFC 7489 7.1)?"""
    target = address.rpartition("@")[2].lower().rstrip(".")
    if psl.organisational(target) == psl.organisational(policy_domain):
        return True
    try:
        found = resolver.records(f"{policy_domain}._report._dmarc.{target}", "TXT", timeout=timeout)
    except DNSError:
        return False
    return any(b"".join(r.strings).decode("utf-8", "replace").replace(" ", "")
               .startswith("v=DMARC1") for r in found)

