"""DMARC aggregate reports: evaluations recorded by the inbound pipeline in
the real SQLite store (storage.dmarc_reports), the daily job
(server.dmarc_reports) queueing one gzip'd XML report per policy domain
through the outbound queue (kind "report"), and the XML's content against
RFC 7489 appendix C; external report addresses need their DNS consent."""

import email
import email.policy
import gzip
import random
from xml.etree import ElementTree as ET

import pytest
from roost.protocols.mailauth import psl
from roost.protocols.mailauth.inbound import Inbound
from roost.server import dmarc_reports as job
from roost.storage import dmarc_reports
from roost.storage.delivery import Delivery
from roost.storage.outbound import MemorySpool, Outbound
from roost.storage.store import Store
from tests.dns_helpers import zone  # noqa: F401 - fixture
from tests.mailauth_helpers import Keys, message, txt

DAY = 86400
T0 = 1_700_000_000 - 1_700_000_000 % DAY + 3600     # 01:00 UTC on some day


@pytest.fixture
def setup(tmp_path, zone):  # noqa: F811
    keys = Keys()
    z = zone("\n".join([
        txt("r._domainkey.example.org", keys.rsa_record()),
        txt("example.org", "v=spf1 ip4:192.0.2.1 -all"),
        txt("_dmarc.example.org", "v=DMARC1; p=reject; pct=50; adkim=s; "
            "rua=mailto:agg@example.org,mailto:dmarc@reports.example,mailto:x@nope.example"),
        txt("example.org._report._dmarc.reports.example", "v=DMARC1"),
        txt("_dmarc.quiet.example", "v=DMARC1; p=none"),
    ]))
    store = Store.open(str(tmp_path / "data"))
    delivery = Delivery(store)
    outbound = Outbound(store, delivery, MemorySpool(), "mx.example.net")
    yield keys, z, store, outbound
    delivery.close()
    store.close()


def test_report_queued_with_the_xml_rfc_7489_describes(setup):
    keys, z, store, outbound = setup
    ib = Inbound(z.resolver(), "mx.example.net", psl=psl.default(), rng=random.Random(7),
                 record=lambda row: dmarc_reports.record(store, row, now=T0))
    msg = message()
    good = keys.signer("example.org", "r", None).sign(msg, "example.org") + msg
    for _ in range(3):
        assert ib.check(good, "192.0.2.1", "h", "ann@example.org").verdicts["dmarc"] == "pass"
    dispositions = [ib.check(msg, "203.0.113.9", "h", "x@spoof.example").verdicts["dmarc_policy"]
                    for _ in range(6)]
    ib.check(message("a@quiet.example"), "192.0.2.1", "h", "a@quiet.example")   # no rua
    assert set(dispositions) == {"reject", "quarantine"}          # pct=50 samples some out

    assert job.send(store, outbound, z.resolver(), psl.default(), "mx.example.net",
                    now=T0 + 60) == {}                            # today's rows wait for tomorrow
    sent = job.send(store, outbound, z.resolver(), psl.default(), "mx.example.net", now=T0 + DAY)
    assert sent == {"example.org": ["agg@example.org", "dmarc@reports.example"]}
    assert dmarc_reports.due(store, T0 + 10 * DAY) == {}          # forgotten once queued

    (queued,) = outbound.list()
    assert queued["kind"] == "report" and queued["sender"] == "postmaster@mx.example.net"
    shown = outbound.show(queued["id"])
    assert sorted(r["address"] for r in shown["rcpts"]) == ["agg@example.org",
                                                            "dmarc@reports.example"]
    mail = email.message_from_bytes(outbound.read(queued["spool"]), policy=email.policy.default)
    assert mail["Subject"].startswith("Report Domain: example.org Submitter: mx.example.net ")
    (part,) = [p for p in mail.iter_attachments()]
    begin = T0 - T0 % DAY
    assert part.get_content_type() == "application/gzip"
    assert part.get_filename() == f"mx.example.net!example.org!{begin}!{begin + DAY}.xml.gz"
    root = ET.fromstring(gzip.decompress(part.get_content()))

    assert root.tag == "feedback"
    meta = root.find("report_metadata")
    assert meta.findtext("org_name") == "mx.example.net"
    assert meta.findtext("date_range/begin") == str(begin)
    pub = root.find("policy_published")
    assert [(e.tag, e.text) for e in pub] == [("domain", "example.org"), ("adkim", "s"),
                                              ("aspf", "r"), ("p", "reject"), ("sp", "reject"),
                                              ("pct", "50"), ("fo", "0")]
    records = root.findall("record")
    by_ip = {}
    for r in records:
        by_ip.setdefault(r.findtext("row/source_ip"), []).append(r)
    passed = by_ip["192.0.2.1"]
    assert len(passed) == 1 and passed[0].findtext("row/count") == "3"
    assert passed[0].findtext("row/policy_evaluated/disposition") == "none"
    assert passed[0].findtext("row/policy_evaluated/dkim") == "pass"
    assert passed[0].findtext("identifiers/header_from") == "example.org"
    assert passed[0].findtext("auth_results/dkim/domain") == "example.org"
    assert passed[0].findtext("auth_results/dkim/selector") == "r"
    assert passed[0].findtext("auth_results/spf/scope") == "mfrom"
    failed = by_ip["203.0.113.9"]
    counts = {r.findtext("row/policy_evaluated/disposition"): int(r.findtext("row/count"))
              for r in failed}
    assert counts == {"reject": dispositions.count("reject"),
                      "quarantine": dispositions.count("quarantine")}
    for r in failed:
        assert r.findtext("row/policy_evaluated/spf") == "fail"
        assert r.findtext("identifiers/envelope_from") == "spoof.example"
        assert r.findtext("auth_results/spf/result") == "none"     # spoof.example has no SPF
        sampled = r.findtext("row/policy_evaluated/reason/type")
        assert sampled == ("sampled_out" if r.findtext("row/policy_evaluated/disposition")
                           == "quarantine" else None)


def test_old_rows_pruned(setup):
    _keys, _z, store, _outbound = setup
    dmarc_reports.record(store, {"policy_domain": "a.example", "rua": "mailto:r@a.example",
                                 "source_ip": "192.0.2.1", "header_from": "a.example",
                                 "disposition": "none", "dkim": "pass", "spf": "fail"}, now=T0)
    assert list(dmarc_reports.due(store, T0 + 1)) == ["a.example"]
    assert dmarc_reports.prune(store, 7 * DAY, now=T0 + 8 * DAY) == 1
    assert dmarc_reports.due(store, T0 + 1) == {}
