"""The daily DMARC aggregate report job (``[inbound] dmarc_reports = true``).

Once a day (``Roost`` schedules it shortly after midnight UTC) the rows that
``storage.dmarc_reports`` recorded before today are grouped per policy
domain; each domain gets one report (``protocols.mailauth.reports``) queued
through the outbound queue with kind "report" to the rua= ``mailto:``
addresses that accept it (RFC 7489 section 7.1 for addresses outside the
domain), from ``[inbound] report_from`` (default ``postmaster@`` the
hostname), with NOTIFY=NEVER (no DSN about a report). The rows of a domain
are forgotten once its report is queued (or when no address accepts it);
rows older than a week are pruned whatever happens. Blocking: the server
runs it on its worker pool.
"""

import logging
import secrets
import time

from roost.protocols.mailauth import reports
from roost.protocols.mailauth.verify import rua_addresses
from roost.storage import dmarc_reports
from roost.storage.outbound import Envelope, Recipient

log = logging.getLogger("roost.dmarc")

KEEP = 7 * 86400


def day_start(now):
    return now - now % 86400


def send(store, outbound, resolver, psl, hostname, report_from="", now=None):
    """Queue the reports due; returns ``{policy_domain: [addresses]}``."""
    now = time.time() if now is None else now
    before = day_start(now)
    sender = report_from or f"postmaster@{hostname}"
    sent = {}
    for domain, entry in dmarc_reports.due(store, before).items():
        to = [a for a in rua_addresses({"rua": entry["rua"]})
              if reports.accepts_reports(resolver, domain, a, psl)]
        ids = [r["id"] for r in entry["rows"]]
        if to:
            report_id = f"{int(before)}.{secrets.token_hex(6)}"
            begin, end = day_start(entry["begin"]), day_start(entry["begin"]) + 86400
            xml = reports.aggregate_xml(hostname, sender, report_id, domain, entry["policy"],
                                        begin, max(end, entry["end"]), entry["rows"])
            data = reports.report_message(hostname, sender, to, domain, report_id, begin,
                                          max(end, entry["end"]), xml, now)
            try:
                outbound.submit(Envelope(sender, [Recipient(a, notify="NEVER") for a in to],
                                         kind="report"), data)
            except Exception:  # noqa: BLE001 - tried again tomorrow, until pruned
                log.exception("queueing the DMARC report for %s", domain)
                continue
            sent[domain] = to
        dmarc_reports.done(store, ids)
    dmarc_reports.prune(store, KEEP, now)
    return sent
