"""``roost doctor`` and ``roost dns``: each check against the real thing on
loopback: a ``roost serve`` and other listeners, certificates written to a
temp directory, a DNS server (dnslib) serving a zone, an SNTP server with a
chosen offset, and data directories at each schema state."""

import glob
import ipaddress
import shutil
import socket
import sqlite3
import struct
import threading
import time

import pytest
from roost.protocols.dns import Resolver
from roost.server import config as configmod
from roost.server import doctor as dr
from roost.storage import migrations
from roost.storage.store import Store
from tests.conftest import add_user, roost
from tests.dns_helpers import zone  # noqa: F401 - fixture
from tests.tls_helpers import Issuer, write_cert
from tests.unit.test_migrations import release1_data

DOMAIN, HOST = "example.org", "mail.example.org"


def make_cfg(tmp_path, **kw):
    cfg = configmod.Config(data=str(tmp_path / "data"), hostname=HOST)
    cfg.listen = {name: "off" for name in cfg.listen}
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def verdicts(checks):
    return {c.name: c.verdict for c in checks}


# --- dns ----------------------------------------------------------------------------

CHECKED = ("MX", "SPF", "DKIM", "DMARC", "MTA-STS", "TLS-RPT")


def test_published_records_from_roost_dns_pass(tmp_path, zone):
    cfg = make_cfg(tmp_path)
    dr.dkim_keygen(cfg, DOMAIN)
    dr.dkim_keygen(cfg, DOMAIN, algorithm="ed25519")
    text = "\n".join(line for line in dr.zone(cfg, DOMAIN) if not line.startswith(";"))
    checks = dr.check_dns(cfg, [DOMAIN], zone(text).resolver())
    assert verdicts(checks) == {f"dns {DOMAIN} {k}": "ok" for k in CHECKED}, \
        [str(c) for c in checks]
    assert "roost-ed25519._domainkey" in {c.name: c for c in checks}[f"dns {DOMAIN} DKIM"].detail


def test_roost_dns_prints_the_records(tmp_path):
    data = tmp_path / "data"
    roost(data, "dkim", "keygen", DOMAIN, "--selector", "s1")
    again = roost(data, "dkim", "keygen", DOMAIN, "--selector", "s1", check=False)
    assert again.returncode == 64 and b"already has a DKIM key" in again.stderr
    ed = roost(data, "dkim", "keygen", DOMAIN, "--algorithm", "ed25519").stdout.decode()
    assert ed.startswith("roost-ed25519._domainkey.example.org.") and "k=ed25519; p=" in ed
    again = roost(data, "dkim", "keygen", DOMAIN, "--algorithm", "ed25519", check=False)
    assert again.returncode == 64 and b"selector roost-ed25519" in again.stderr
    out = roost(data, "dns", DOMAIN).stdout.decode()
    assert f"{DOMAIN}.".ljust(40) + " 3600 IN MX    10 localhost." in out
    assert '"v=spf1 mx -all"' in out and "_dmarc.example.org." in out
    assert 's1._domainkey.example.org.' in out and "k=rsa; p=MII" in out
    assert ed.split('"')[1] in out                      # the Ed25519 key's record
    assert "is not a public name" in out      # hostname defaults to localhost
    assert '_smtp._tls.example.org.' in out and '"v=TLSRPTv1; rua=mailto:postmaster@example.org"' in out
    sts_id = next(line for line in out.splitlines() if line.startswith("_mta-sts.")).split("id=")[1]
    policy = out.split("; ---- begin mta-sts.txt\n")[1].split("; ---- end mta-sts.txt")[0]
    assert [line[4:] for line in policy.splitlines()] == [
        "version: STSv1", "mode: testing", "mx: localhost", "max_age: 604800"]
    enforce = roost(data, "dns", DOMAIN, "--mta-sts-mode", "enforce").stdout.decode()
    assert ";   mode: enforce" in enforce and sts_id not in enforce
    assert "mta-sts.example.org." in out and "https://mta-sts.example.org/.well-known/mta-sts.txt" in out


def test_missing_wrong_and_duplicate_records(tmp_path, zone):
    cfg = make_cfg(tmp_path)
    dr.dkim_keygen(cfg, DOMAIN)
    other = make_cfg(tmp_path / "other")
    dr.dkim_keygen(other, DOMAIN)            # a different key under the same selector
    (dkim,) = [r for r in dr.records(other, DOMAIN) if "_domainkey" in r.name]
    z = zone(f'{DOMAIN}. 300 IN MX 10 relay.example.net.\n'
             f'{DOMAIN}. 300 IN TXT "v=spf1 a -all"\n'
             f'{DOMAIN}. 300 IN TXT "v=spf1 mx -all"\n'
             + dkim.zone_line() + "\n")
    checks = {c.name: c for c in dr.check_dns(cfg, [DOMAIN], z.resolver())}
    assert checks[f"dns {DOMAIN} MX"].verdict == "warn"
    assert "relay.example.net" in checks[f"dns {DOMAIN} MX"].detail
    assert checks[f"dns {DOMAIN} SPF"].verdict == "fail"
    assert checks[f"dns {DOMAIN} DKIM"].verdict == "fail"
    assert checks[f"dns {DOMAIN} DMARC"].verdict == "warn"

    z2 = zone(f'{DOMAIN}. 300 IN TXT "v=spf1 ip4:192.0.2.1 -all"\n')
    checks = {c.name: c for c in dr.check_dns(make_cfg(tmp_path / "nokey"), [DOMAIN], z2.resolver())}
    assert checks[f"dns {DOMAIN} MX"].verdict == "fail"
    assert checks[f"dns {DOMAIN} SPF"].verdict == "warn"
    assert "roost dkim keygen" in checks[f"dns {DOMAIN} DKIM"].detail


def test_mta_sts_and_tlsrpt_checks(tmp_path, zone):
    cfg = make_cfg(tmp_path)
    z = zone(f'_mta-sts.{DOMAIN}. 300 IN TXT "v=STSv1; id=1"\n'
             f'_mta-sts.{DOMAIN}. 300 IN TXT "v=STSv1; id=2"\n'
             f'_smtp._tls.{DOMAIN}. 300 IN TXT "v=TLSRPTv1"\n')
    checks = {c.name: c for c in dr.check_dns(cfg, [DOMAIN], z.resolver())}
    assert checks[f"dns {DOMAIN} MTA-STS"].verdict == "fail"
    assert checks[f"dns {DOMAIN} TLS-RPT"].verdict == "fail" and "rua" in checks[f"dns {DOMAIN} TLS-RPT"].detail
    z = zone(f'_mta-sts.{DOMAIN}. 300 IN TXT "v=STSv1; id=not-alnum!"\n')
    checks = {c.name: c for c in dr.check_dns(cfg, [DOMAIN], z.resolver())}
    assert checks[f"dns {DOMAIN} MTA-STS"].verdict == "fail" and "id" in checks[f"dns {DOMAIN} MTA-STS"].detail
    assert checks[f"dns {DOMAIN} TLS-RPT"].verdict == "warn"


def test_mta_sts_id_follows_the_policy(tmp_path):
    cfg = make_cfg(tmp_path)

    def sts(mode):
        (rec,) = [r for r in dr.records(cfg, DOMAIN, mode) if r.name == f"_mta-sts.{DOMAIN}"]
        return rec.value
    assert sts("testing") == sts("testing") != sts("enforce")
    assert dr.mta_sts_policy(cfg, DOMAIN, "enforce") == (
        f"version: STSv1\r\nmode: enforce\r\nmx: {HOST}\r\nmax_age: 604800\r\n")
    cfg.hostname = "mx2.example.org"
    assert sts("enforce") != dr.records(make_cfg(tmp_path), DOMAIN, "enforce")[0].value
    with pytest.raises(ValueError):
        dr.mta_sts_policy(cfg, DOMAIN, "strict")


def test_srv_records_for_public_listeners(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path)
    cfg.listen.update(imaps="0.0.0.0:993", imap="127.0.0.1:143", jmap="[::]:443")
    monkeypatch.setattr(dr, "served_listeners", lambda: ["imap", "imaps", "jmap", "submission",
                                                         "submissions"])
    cfg.listen.update(submission="192.0.2.7:587", submissions="0.0.0.0:465")
    srv = {r.name: r.value for r in dr.records(cfg, DOMAIN) if r.type == "SRV"}
    assert srv == {f"_imaps._tcp.{DOMAIN}": f"0 1 993 {HOST}.",
                   f"_submissions._tcp.{DOMAIN}": f"0 1 465 {HOST}.",
                   f"_submission._tcp.{DOMAIN}": f"0 1 587 {HOST}.",
                   f"_jmap._tcp.{DOMAIN}": f"0 1 443 {HOST}."}
    text = "\n".join(dr.zone(cfg, DOMAIN))
    assert "no SRV records for imap: listening on loopback only" in text
    cnames = {r.name for r in dr.records(cfg, DOMAIN) if r.type == "CNAME"}
    assert cnames == {f"{n}.{DOMAIN}" for n in ("autoconfig", "autodiscover", "mta-sts")}


def test_dkim_keygen_rejects_names_that_are_not_dns_names(tmp_path):
    cfg = make_cfg(tmp_path)
    for domain, selector in (("../etc", None), (DOMAIN, "../x"), (DOMAIN, "a/b"), ("", None),
                             (DOMAIN, "-bad")):
        with pytest.raises(ValueError):
            dr.dkim_keygen(cfg, domain, selector)
    with pytest.raises(ValueError):
        dr.dkim_keygen(cfg, DOMAIN, algorithm="dsa")
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").rglob("*.pem"))


def test_dkim_signing_keys_are_read_for_the_signer(tmp_path):
    from roost.protocols.mailauth.dkim import Signer
    cfg = make_cfg(tmp_path)
    assert dr.dkim_signing_keys(cfg) == {}
    dr.dkim_keygen(cfg, DOMAIN)
    dr.dkim_keygen(cfg, DOMAIN, algorithm="ed25519")
    dr.dkim_keygen(cfg, "Other.Example.NET", "sel.2024", algorithm="ed25519")
    keys = dr.dkim_signing_keys(cfg)
    assert {d: [(s, a) for s, a, _pem in v] for d, v in keys.items()} == {
        DOMAIN: [("roost", "rsa"), ("roost-ed25519", "ed25519")],
        "other.example.net": [("sel.2024", "ed25519")]}
    assert all(pem.startswith(b"-----BEGIN PRIVATE KEY-----") for v in keys.values() for *_x, pem in v)
    assert Signer(keys).domains() == [DOMAIN, "other.example.net"]
    (tmp_path / "data" / "keys" / "dkim" / DOMAIN / "broken.pem").write_bytes(b"not a key")
    with pytest.raises(ValueError, match="broken.pem"):
        dr.dkim_signing_keys(cfg)


def test_local_domains_are_not_looked_up(tmp_path):
    checks = dr.check_dns(make_cfg(tmp_path), ["localhost", "box.local"], Resolver(["127.0.0.1:9"]))
    assert [(c.verdict, c.name) for c in checks] == [("skip", "dns localhost"), ("skip", "dns box.local")]


def test_unanswering_dns_is_skipped_not_failed(tmp_path):
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet.bind(("127.0.0.1", 0))       # receives, never answers
    try:
        res = Resolver([f"127.0.0.1:{quiet.getsockname()[1]}"], timeout=0.5)
        checks = dr.check_dns(make_cfg(tmp_path), [DOMAIN], res)
        assert {c.name.split()[-1]: c.verdict for c in checks} == {
            "MX": "skip", "SPF": "skip", "DKIM": "warn", "DMARC": "skip",   # DKIM: no key here
            "MTA-STS": "skip", "TLS-RPT": "skip"}
    finally:
        quiet.close()


# --- listeners ----------------------------------------------------------------------

def test_listeners_roost_free_other_and_unbindable(tmp_path, roost_server):
    data = tmp_path / "data"
    srv = roost_server(data, listeners=("imap", "imaps", "lmtp", "jmap", "submission",
                                        "submissions"))
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen()

    def answer():
        conn, _ = other.accept()
        conn.sendall(b"220 some other smtpd\r\n")
        conn.close()
    threading.Thread(target=answer, daemon=True).start()
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    free_port = free.getsockname()[1]
    free.close()
    cfg = make_cfg(tmp_path, data=str(data))
    cfg.listen.update({n: f"127.0.0.1:{p}" for n, p in srv.ports.items()})
    try:
        got = {c.name.split()[1]: c for c in dr.check_listeners(cfg)}
        names = ("imap", "imaps", "lmtp", "jmap", "submission", "submissions")
        assert {n: got[n].verdict for n in names} == dict.fromkeys(names, "ok"), \
            [str(c) for c in got.values()]
        cfg.listen.update(imap=f"127.0.0.1:{other.getsockname()[1]}", lmtp=f"127.0.0.1:{free_port}",
                          jmap="192.0.2.1:8080", submission=f"127.0.0.1:{free_port}",
                          smtp="127.0.0.1:2525")
        got = {c.name.split()[1]: c for c in dr.check_listeners(cfg)}
    finally:
        other.close()
    assert got["imap"].verdict == "fail" and "another program" in got["imap"].detail
    assert got["lmtp"].verdict == "warn" and "free" in got["lmtp"].detail
    assert got["jmap"].verdict == "fail" and "cannot" in got["jmap"].detail
    assert got["submission"].verdict == "warn" and "free" in got["submission"].detail
    assert got["smtp"].verdict == "warn" and "free" in got["smtp"].detail   # the edge, off by default


# --- TLS ----------------------------------------------------------------------------

def tls_checks(tmp_path, cert, key):
    cfg = make_cfg(tmp_path, tls_cert=cert, tls_key=key)
    cfg.listen["imaps"] = "127.0.0.1:1993"
    return {c.name: c for c in dr.check_tls(cfg)}


def test_tls_certificate_checks(tmp_path):
    good = tls_checks(tmp_path, *write_cert(tmp_path / "good", issuer=Issuer("Test CA")))
    assert {k: c.verdict for k, c in good.items()} == {
        "tls certificate": "ok", "tls hostname": "ok", "tls key": "ok", "tls issuer": "ok"}
    assert "days left" in good["tls certificate"].detail
    soon = tls_checks(tmp_path, *write_cert(tmp_path / "soon", days=(-80, 5)))
    assert soon["tls certificate"].verdict == "warn" and soon["tls issuer"].verdict == "warn"
    expired = tls_checks(tmp_path, *write_cert(tmp_path / "old", days=(-400, -3)))
    assert expired["tls certificate"].verdict == "fail"
    wrong = tls_checks(tmp_path, *write_cert(tmp_path / "wrong", names=("other.example.net",)))
    assert wrong["tls hostname"].verdict == "fail" and "other.example.net" in wrong["tls hostname"].detail
    cert, _ = write_cert(tmp_path / "a")
    _, key = write_cert(tmp_path / "b")
    assert tls_checks(tmp_path, cert, key)["tls key"].verdict == "fail"
    missing = tls_checks(tmp_path, str(tmp_path / "nope.pem"), key)
    assert missing["tls certificate"].verdict == "fail"


def test_tls_quickstart_certificate(tmp_path):
    from roost.server.tls import ensure_certificate
    cfg = make_cfg(tmp_path)
    cfg.listen["imaps"] = "127.0.0.1:1993"
    assert verdicts(dr.check_tls(cfg)) == {"tls certificate": "warn"}   # not generated yet
    ensure_certificate(cfg.data, HOST)
    assert verdicts(dr.check_tls(cfg)) == {"tls certificate": "ok", "tls hostname": "ok",
                                           "tls key": "ok", "tls issuer": "warn"}


# --- database -----------------------------------------------------------------------

def test_database_states_are_reported_without_changing_anything(tmp_path):
    cfg = make_cfg(tmp_path)
    check, domains = dr.check_database(cfg)
    assert check.verdict == "warn" and "no database" in check.detail
    assert not (tmp_path / "data" / "roost.db").exists()

    add_user(tmp_path / "data", "ann@example.org")
    check, domains = dr.check_database(cfg)
    assert (check.verdict, domains) == ("ok", ["example.org"]) and migrations.HEAD in check.detail

    old = make_cfg(tmp_path / "r1", data=str(release1_data(tmp_path / "r1" / "data")))
    check, domains = dr.check_database(old)
    assert check.verdict == "warn" and "revision base" in check.detail and domains == ["example.org"]
    assert not glob.glob(old.data + "/roost.db.bak-*")          # doctor never migrates
    db = sqlite3.connect(old.data + "/roost.db")
    assert "alembic_version" not in {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    db.close()

    db = sqlite3.connect(tmp_path / "data" / "roost.db")
    db.execute("UPDATE alembic_version SET version_num = '9999'")
    db.commit()
    db.close()
    assert dr.check_database(cfg)[0].verdict == "fail"

    pg = make_cfg(tmp_path, database="postgresql+psycopg://postgres@127.0.0.1:1/none")
    check, _ = dr.check_database(pg)
    assert check.verdict == "fail" and "PostgreSQL" in check.detail


def test_database_on_postgresql(tmp_path):
    from tests.conftest import pg_store
    store, drop = pg_store(tmp_path, "roost_doc_")
    try:
        url = store.engine.url.render_as_string(hide_password=False)
        check, _ = dr.check_database(make_cfg(tmp_path, database=url))
        assert check.verdict == "ok", check
    finally:
        drop()


# --- disk and clock -----------------------------------------------------------------

def test_disk(tmp_path, monkeypatch):
    cfg = make_cfg(tmp_path)
    (tmp_path / "data").mkdir()
    assert dr.check_disk(cfg).verdict in ("ok", "warn")
    usage = shutil._ntuple_diskusage
    monkeypatch.setattr(dr.shutil, "disk_usage", lambda p: usage(100 * 2**30, 99 * 2**30, 2**29))
    assert dr.check_disk(cfg).verdict == "fail"
    monkeypatch.setattr(dr.shutil, "disk_usage", lambda p: usage(100 * 2**30, 97 * 2**30, 3 * 2**30))
    assert dr.check_disk(cfg).verdict == "warn"


class SNTPServer:
    """Answers SNTP requests with the local clock plus ``offset`` seconds."""

    def __init__(self, offset):
        self.offset = offset
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        try:
            while True:
                data, peer = self.sock.recvfrom(512)
                now = time.time() + self.offset
                stamp = struct.pack("!II", int(now) + dr.NTP_EPOCH, int((now % 1) * 2**32))
                self.sock.sendto(bytes([0x24, 2, 0, 0]) + bytes(20) + data[40:48] + stamp + stamp,
                                 peer)
        except OSError:
            pass

    def close(self):
        self.sock.close()


@pytest.mark.parametrize("offset,verdict", [(0, "ok"), (5, "warn"), (-120, "fail")])
def test_clock(tmp_path, offset, verdict):
    server = SNTPServer(offset)
    try:
        check = dr.check_clock(make_cfg(tmp_path, ntp_server=server.address))
    finally:
        server.close()
    assert check.verdict == verdict, check
    assert abs(float(check.detail.split()[0]) - offset) < 0.5


def test_clock_unreachable_is_skipped(tmp_path):
    quiet = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    quiet.bind(("127.0.0.1", 0))
    try:
        cfg = make_cfg(tmp_path, ntp_server=f"127.0.0.1:{quiet.getsockname()[1]}")
        check = dr.check_clock(cfg, timeout=0.5)
    finally:
        quiet.close()
    assert check.verdict == "skip" and "not reachable" in check.detail


# --- the command ------------------------------------------------------------------------

@pytest.mark.slow
def test_roost_doctor_exit_status(tmp_path, zone):
    data = tmp_path / "data"
    add_user(data, f"ann@{DOMAIN}")
    Store.open(str(data)).close()
    cfg = make_cfg(tmp_path, data=str(data))
    dr.dkim_keygen(cfg, DOMAIN)
    cfg.hostname = HOST
    published = "\n".join(r.zone_line() for r in dr.records(cfg, DOMAIN))
    z = zone(published)
    ntp = SNTPServer(0)
    conf = tmp_path / "roost.toml"

    def write(hostname):
        conf.write_text(
            f'[server]\nhostname = "{hostname}"\n'
            '[listen]\nimap = "off"\nimaps = "off"\nlmtp = "off"\njmap = "off"\n'
            'submission = "off"\nmanagesieve = "off"\n'
            f'[dns]\nnameservers = ["{z.address}"]\n[doctor]\nntp = "{ntp.address}"\n')
    try:
        write(HOST)
        good = roost(data, "--config", conf, "doctor", check=False)
        lines = good.stdout.decode().splitlines()
        assert good.returncode == 0, lines
        assert all(line.split()[0] in ("ok", "warn", "skip") for line in lines)
        assert any(line.startswith(f"ok    dns {DOMAIN} DKIM") for line in lines)
        write("elsewhere.example.net")        # MX no longer names the host: a warning only
        assert roost(data, "--config", conf, "doctor", check=False).returncode == 0
        bad = roost(data, "--config", conf, "doctor", "nomx.example.com", check=False)
        assert bad.returncode == 1
        assert "fail  dns nomx.example.com MX: no MX record" in bad.stdout.decode()
    finally:
        ntp.close()


def test_nameserver_addresses():
    from roost.protocols.dns import parse_nameserver
    assert parse_nameserver("192.0.2.53") == ("192.0.2.53", 53)
    assert parse_nameserver("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert parse_nameserver("[::1]:5353") == ("::1", 5353)
    assert parse_nameserver("::1") == ("::1", 53)
    with pytest.raises(ValueError):
        parse_nameserver("127.0.0.1:dns")
    assert ipaddress.ip_address(parse_nameserver("[2001:db8::1]")[0])
