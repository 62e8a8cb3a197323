"""``roost dns DOMAIN``, ``roost dkim keygen`` and ``roost doctor`` (DESIGN.md section 8).

``records(cfg, domain)`` are the records an operator publishes for a domain
Roost serves: MX to ``[server] hostname``, SPF ``v=spf1 mx -all``, one DKIM
key record per key file (below), DMARC ``p=quarantine`` with reports to
postmaster, MTA-STS (RFC 8461: ``_mta-sts`` TXT whose ``id`` is a hash of the
policy, so it changes exactly when the policy does, and the CNAME
``mta-sts.DOMAIN`` to the host), TLS-RPT (RFC 8460, reports to postmaster),
and, for listeners reachable off loopback, RFC 6186 / RFC 8314 / RFC 8620
SRV records; the autoconfig/autodiscover names (protocols.web) go to the
hostname too. ``roost dns`` prints them as zone-file lines, and the MTA-STS
policy file (``mta_sts_policy``) as a block of comment lines: it must be
served as text/plain at ``https://mta-sts.DOMAIN/.well-known/mta-sts.txt``
with a certificate for that name. The policy is ``mode: testing`` (senders
report failures but deliver) unless ``roost dns --mta-sts-mode enforce``
(or ``none``, to withdraw it) asks for another; the id follows. The doctor compares what DNS
answers with the MX, SPF, DKIM, DMARC, MTA-STS and TLS-RPT records (DNS only:
it does not fetch the policy file).

DKIM key files: ``DATA/keys/dkim/DOMAIN/SELECTOR.pem``, mode 0600, one
unencrypted PKCS#8 PEM private key (``-----BEGIN PRIVATE KEY-----``) each,
RSA (2048 bits from ``roost dkim keygen``) or Ed25519 (RFC 8463); the key's
own type says which, so ``openssl genpkey -algorithm ed25519`` (or ``rsa``)
makes a usable file too. An RSA key is also read in PKCS#1 form. The DNS
record is ``k=rsa; p=`` base64 SubjectPublicKeyInfo for RSA and
``k=ed25519; p=`` base64 of the raw 32-byte public key for Ed25519.
``dkim_signing_keys(cfg)`` reads them all for the server, which hands them
to ``protocols.mailauth.dkim.Signer`` (protocols open no files).

``doctor(cfg)`` reads and never changes anything (no migration, no generated
certificate): one ``Check`` per line, verdict ``ok``, ``warn`` (works, but
look), ``fail`` (broken) or ``skip`` (could not be checked, with the reason);
the exit status is 1 when any check fails. Thresholds: a certificate with
fewer than ``CERT_WARN_DAYS`` days left, less than 5% (or 1 GiB) of disk or
inodes free, a clock more than ``CLOCK_WARN`` seconds off warn; an expired
certificate, under 1% free, more than ``CLOCK_FAIL`` seconds off fail.
"""

import base64
import datetime
import errno
import hashlib
import os
import re
import shutil
import socket
import ssl
import struct
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from roost.protocols.dns import DNSError, Resolver, parse_nameserver
from roost.storage import migrations
from roost.storage.schema import make_engine

from .config import parse_address

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
CERT_WARN_DAYS = 21
CLOCK_WARN, CLOCK_FAIL = 1.0, 30.0
PROBE_TIMEOUT = 3.0
TTL = 3600
SRV = {"imaps": "_imaps._tcp", "imap": "_imap._tcp", "submissions": "_submissions._tcp",
       "submission": "_submission._tcp", "jmap": "_jmap._tcp",
       "pop3s": "_pop3s._tcp", "pop3": "_pop3._tcp"}
MTA_STS_MAX_AGE = 7 * 24 * 3600
MTA_STS_MODES = ("testing", "enforce", "none")
DNS_NAME = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$")
GREETING = {"imap": b"Roost IMAP", "imaps": b"Roost IMAP", "lmtp": b"Roost LMTP",
            "submission": b"Roost ESMTP", "submissions": b"Roost ESMTP",
            "pop3": b"Roost POP3", "pop3s": b"Roost POP3", "managesieve": b'"IMPLEMENTATION" "Roost'}


def _greeting(sock, limit=8192):
    """The server's first line (an IMAP greeting carries the whole CAPABILITY
    list before Roost's name), at most ``limit`` octets."""
    head = b""
    while b"\n" not in head and len(head) < limit:
        data = sock.recv(limit - len(head))
        if not data:
            break
        head += data
    return head


@dataclass
class Check:
    verdict: str
    name: str
    detail: str

    def __str__(self):
        return f"{self.verdict:<4}  {self.name}: {self.detail}"


@dataclass
class Record:
    name: str
    type: str
    value: str

    def zone_line(self):
        value = self.value
        if self.type == "TXT":   # strings of at most 255 octets (RFC 1035 section 3.3.14)
            value = " ".join(f'"{value[i:i + 255]}"' for i in range(0, len(value), 255))
        return f"{self.name + '.':<40} {TTL} IN {self.type:<5} {value}"


def served_listeners():
    """The listeners this version of Roost serves (the others print a note)."""
    from .app import Roost
    return [n for n in ("lmtp", "imap", "imaps", "jmap", "submission", "submissions", "smtp",
                        "managesieve", "pop3", "pop3s")
            if hasattr(Roost, f"_start_{n}")]


# --- records ----------------------------------------------------------------------

def dkim_dir(cfg, domain):
    return os.path.join(cfg.data, "keys", "dkim", domain.lower())


def _check_name(kind, value):
    """A DNS name fit for a file name (no ``/``, no ``..``): a domain or a selector."""
    value = value.lower().rstrip(".")
    if len(value) > 253 or not DNS_NAME.match(value):
        raise ValueError(f"not a valid {kind}: {value!r}")
    return value


def _key_files(cfg, domain):
    """``[(selector, path)]`` of a domain's key files, in selector order."""
    directory = dkim_dir(cfg, domain)
    names = os.listdir(directory) if os.path.isdir(directory) else ()
    return sorted((n[:-4], os.path.join(directory, n)) for n in names if n.endswith(".pem"))


def _read_key(path):
    """``(algorithm, pem bytes, public p= value)`` of one key file."""
    with open(path, "rb") as f:
        pem = f.read()
    try:
        key = serialization.load_pem_private_key(pem, None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        return "rsa", pem, base64.b64encode(public).decode()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        public = key.public_key().public_bytes(serialization.Encoding.Raw,
                                               serialization.PublicFormat.Raw)
        return "ed25519", pem, base64.b64encode(public).decode()
    raise ValueError(f"{path}: a {type(key).__name__}; DKIM keys are RSA or Ed25519")


def dkim_keys(cfg, domain):
    """``[(selector, algorithm, base64 public key)]`` of the domain's DKIM keys."""
    return [(sel, *_read_key(path)[::2]) for sel, path in _key_files(cfg, domain)]


def dkim_signing_keys(cfg):
    """``{domain: [(selector, algorithm, private key PEM)]}`` of every key
    under ``DATA/keys/dkim``, for ``protocols.mailauth.dkim.Signer``;
    ValueError naming the file when one cannot be read."""
    top = os.path.join(cfg.data, "keys", "dkim")
    out = {}
    for domain in sorted(os.listdir(top)) if os.path.isdir(top) else ():
        keys = [(sel, *_read_key(path)[:2]) for sel, path in _key_files(cfg, domain)]
        if keys:
            out[domain] = keys
    return out


def dkim_keygen(cfg, domain, selector=None, algorithm="rsa", bits=2048):
    """A new key in ``DATA/keys/dkim/DOMAIN/SELECTOR.pem`` (mode 0600) and its
    DNS record; the selector defaults to ``roost`` for RSA and
    ``roost-ed25519`` for Ed25519. FileExistsError when that selector has a
    key, ValueError for a bad domain, selector or algorithm."""
    if algorithm not in ("rsa", "ed25519"):
        raise ValueError(f"the algorithm is rsa or ed25519, not {algorithm!r}")
    domain = _check_name("domain", domain)
    selector = _check_name("selector", selector or ("roost" if algorithm == "rsa"
                                                    else "roost-ed25519"))
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    else:
        key = ed25519.Ed25519PrivateKey.generate()
    directory = dkim_dir(cfg, domain)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(directory, f"{selector}.pem"), os.O_WRONLY | os.O_CREAT | os.O_EXCL,
                 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return next(r for r in records(cfg, domain) if r.name == f"{selector}._domainkey.{domain}")


def dkim_value(algorithm, public_b64):
    return f"v=DKIM1; k={algorithm}; p={public_b64}"


def mta_sts_policy(cfg, domain, mode="testing"):
    """The MTA-STS policy file for ``domain`` (RFC 8461 section 3.2), CRLF lines."""
    if mode not in MTA_STS_MODES:
        raise ValueError(f"the MTA-STS mode is testing, enforce or none, not {mode!r}")
    host = cfg.hostname.lower().rstrip(".")
    return (f"version: STSv1\r\nmode: {mode}\r\nmx: {host}\r\n"
            f"max_age: {MTA_STS_MAX_AGE}\r\n")


MODE_NOTE = {
    "testing": "senders report failures (TLS-RPT) but deliver; when the reports are clean, "
               "publish the output of roost dns {domain} --mta-sts-mode enforce (its id and policy).",
    "enforce": "senders deliver only over TLS with a valid certificate for an mx listed.",
    "none": "senders drop the policy they cached (RFC 8461 section 8.3); keep it published "
            "for max_age before removing the records.",
}


def mta_sts_id(policy):
    """1-32 letters and digits that change when the policy text does."""
    return hashlib.sha256(policy.encode()).hexdigest()[:20]


def records(cfg, domain, mta_sts_mode="testing"):
    domain, host = domain.lower().rstrip("."), cfg.hostname.lower().rstrip(".")
    out = [Record(domain, "MX", f"10 {host}."),
           Record(domain, "TXT", "v=spf1 mx -all")]
    out += [Record(f"{sel}._domainkey.{domain}", "TXT", dkim_value(alg, pub))
            for sel, alg, pub in dkim_keys(cfg, domain)]
    out.append(Record(f"_dmarc.{domain}", "TXT",
                      f"v=DMARC1; p=quarantine; rua=mailto:postmaster@{domain}"))
    out.append(Record(f"_mta-sts.{domain}", "TXT",
                      f"v=STSv1; id={mta_sts_id(mta_sts_policy(cfg, domain, mta_sts_mode))}"))
    out.append(Record(f"_smtp._tls.{domain}", "TXT",
                      f"v=TLSRPTv1; rua=mailto:postmaster@{domain}"))
    served = served_listeners()
    for name, prefix in SRV.items():
        addr = parse_address(cfg.listen.get(name)) if name in served else None
        if addr and not _loopback(addr[0]) and addr[1]:
            out.append(Record(f"{prefix}.{domain}", "SRV", f"0 1 {addr[1]} {host}."))
    out += [Record(f"{label}.{domain}", "CNAME", f"{host}.")
            for label in ("autoconfig", "autodiscover", "mta-sts") if host != domain]
    return out


def zone(cfg, domain, mta_sts_mode="testing"):
    """``roost dns``'s output: comments and zone-file lines."""
    lines = [f"; Records to publish for {domain} (Roost at {cfg.hostname})"]
    if not _public_name(cfg.hostname):
        lines.append(f"; warning: [server] hostname {cfg.hostname!r} is not a public name; "
                     "MX and SRV records need the host's DNS name")
    if not dkim_keys(cfg, domain):
        lines.append(f"; no DKIM key for {domain}: roost dkim keygen {domain}")
    served = served_listeners()
    off = [n for n in SRV if n in served and
           (a := parse_address(cfg.listen.get(n))) and _loopback(a[0])]
    if off:
        lines.append(f"; no SRV records for {', '.join(off)}: listening on loopback only")
    absent = [n for n in SRV if n not in served or not parse_address(cfg.listen.get(n))]
    if absent:
        lines.append(f"; no SRV records for {', '.join(absent)}: not served by this Roost "
                     "or off (publish them for the server that offers the service)")
    lines += [r.zone_line() for r in records(cfg, domain, mta_sts_mode)]
    url = f"https://mta-sts.{domain.lower().rstrip('.')}/.well-known/mta-sts.txt"
    lines += [";", f"; MTA-STS policy: serve these lines as text/plain at {url}",
              f"; (a certificate valid for mta-sts.{domain.lower().rstrip('.')}; no redirect).",
              f"; mode {mta_sts_mode}: " + MODE_NOTE[mta_sts_mode].format(domain=domain),
              "; ---- begin mta-sts.txt"]
    lines += [f";   {line}" for line in mta_sts_policy(cfg, domain, mta_sts_mode).splitlines()]
    lines.append("; ---- end mta-sts.txt")
    return lines


def _loopback(host):
    return host in ("localhost", "::1") or host.startswith("127.")


def _public_name(host):
    return "." in host.strip(".") and not host.lower().endswith(("localhost", ".local"))


# --- checks -----------------------------------------------------------------------

def doctor(cfg, domains=None):
    """Every check, in order; ``domains`` default to those of the accounts."""
    db, known = check_database(cfg)
    checks = [db]
    checks += check_listeners(cfg)
    checks += check_tls(cfg)
    checks += check_dns(cfg, domains if domains else known, Resolver(cfg.dns_nameservers))
    checks.append(check_disk(cfg))
    checks.append(check_clock(cfg))
    return checks


def check_database(cfg):
    """The database check and the domains it holds."""
    url = cfg.database_url
    where = "PostgreSQL" if cfg.database else os.path.join(cfg.data, "roost.db")
    if not cfg.database and not os.path.exists(where):
        return Check(WARN, "database", f"no database at {where} yet (roost serve creates it)"), []
    engine = make_engine(url)
    try:
        rev, domains = migrations.describe(engine)
    except Exception as exc:  # noqa: BLE001 - unreachable, refused, corrupt: all a fail
        return Check(FAIL, "database", f"{where}: {str(exc).splitlines()[0]}"), []
    finally:
        engine.dispose()
    if rev == migrations.HEAD:
        return Check(OK, "database", f"{where}: schema revision {rev} (current)"), domains
    if rev is None:
        return Check(WARN, "database", f"{where}: empty (roost serve creates the schema)"), []
    if rev == "base" or migrations.known(rev):
        return Check(WARN, "database", f"{where}: schema revision {rev}, current is "
                     f"{migrations.HEAD}; roost serve upgrades it (keeping a copy of an SQLite "
                     "database)"), domains
    return Check(FAIL, "database", f"{where}: schema revision {rev} is newer than this Roost "
                 f"({migrations.HEAD}): run the Roost that made it"), domains


def check_listeners(cfg):
    out, served = [], served_listeners()
    for name, value in cfg.listen.items():
        addr = parse_address(value)
        if addr is None:
            continue
        label = f"listen {name} {addr[0]}:{addr[1]}"
        if name not in served:
            out.append(Check(SKIP, label, "not part of this version of Roost"))
        elif addr[1] == 0:
            out.append(Check(SKIP, label, "port 0: a free port is chosen at start-up"))
        else:
            out.append(Check(*_probe(name, *addr)))
    return out


def _probe(name, host, port):
    """``(verdict, label, detail)`` for one listener address."""
    label = f"listen {name} {host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=PROBE_TIMEOUT)
    except ConnectionRefusedError:
        return _bindable(label, host, port)
    except OSError as exc:
        return FAIL, label, f"cannot connect: {exc.strerror or exc}"
    try:
        sock.settimeout(PROBE_TIMEOUT)
        if name in ("imaps", "submissions", "pop3s"):
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            sock = ctx.wrap_socket(sock)
        if name == "jmap":
            sock.sendall(f"GET /.well-known/jmap HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            head = sock.recv(512)
            if head.startswith(b"HTTP/1.") and b"/jmap/session" in head:
                return OK, label, "Roost is listening"
        else:
            head = _greeting(sock)
            if GREETING.get(name, b"Roost") in head:
                return OK, label, "Roost is listening"
        return FAIL, label, f"another program is listening: {head[:60]!r}"
    except OSError as exc:
        return FAIL, label, f"something is listening but does not answer as Roost: {exc}"
    finally:
        sock.close()


def _bindable(label, host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        return WARN, label, "nothing is listening (is roost serve running?); the port is free"
    except OSError as exc:
        why = {errno.EACCES: "permission denied (ports below 1024 need root or "
                             "CAP_NET_BIND_SERVICE)",
               errno.EADDRNOTAVAIL: "the address is not one of this host's",
               errno.EADDRINUSE: "in use by a program that does not accept connections"}
        return FAIL, label, f"cannot bind: {why.get(exc.errno, exc.strerror)}"
    finally:
        sock.close()


def _tls_paths(cfg):
    if cfg.tls_cert:
        return cfg.tls_cert, cfg.tls_key, True
    keys = os.path.join(cfg.data, "keys")
    return os.path.join(keys, "tls-cert.pem"), os.path.join(keys, "tls-key.pem"), False


def check_tls(cfg, now=None):
    if not any(parse_address(cfg.listen.get(n)) for n in ("imap", "imaps", "submission")):
        return [Check(SKIP, "tls", "no TLS listener is configured")]
    cert_path, key_path, configured = _tls_paths(cfg)
    if not os.path.exists(cert_path):
        if configured:
            return [Check(FAIL, "tls certificate", f"{cert_path} does not exist")]
        return [Check(WARN, "tls certificate", f"none yet: roost serve generates a self-signed "
                      f"one into {os.path.dirname(cert_path)}")]
    try:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificates(f.read())[0]
    except (OSError, ValueError) as exc:
        return [Check(FAIL, "tls certificate", f"{cert_path}: cannot read it: {exc}")]
    now = now or datetime.datetime.now(datetime.timezone.utc)
    left = cert.not_valid_after_utc - now
    until = cert.not_valid_after_utc.strftime("%Y-%m-%d")
    if cert.not_valid_before_utc > now:
        out = [Check(FAIL, "tls certificate", f"{cert_path} is not valid before "
                     f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")]
    elif left.total_seconds() < 0:
        out = [Check(FAIL, "tls certificate", f"{cert_path} expired on {until}")]
    elif left.days < CERT_WARN_DAYS:
        out = [Check(WARN, "tls certificate", f"{cert_path} expires on {until} "
                     f"({left.days} days left): renew it, then send roost SIGHUP")]
    else:
        out = [Check(OK, "tls certificate", f"{cert_path} valid until {until} ({left.days} days left)")]
    out.append(_hostname_check(cert, cfg.hostname))
    out.append(_key_check(cert, key_path))
    if cert.issuer == cert.subject:
        out.append(Check(WARN, "tls issuer", "self-signed: each client must accept it once "
                         "(set [tls] cert/key to a CA-issued certificate)"))
    else:
        out.append(Check(OK, "tls issuer", cert.issuer.rfc4514_string()))
    return out


def _hostname_check(cert, hostname):
    from service_identity import VerificationError
    from service_identity.cryptography import verify_certificate_hostname
    try:
        verify_certificate_hostname(cert, hostname)
        return Check(OK, "tls hostname", f"the certificate names {hostname}")
    except VerificationError:
        try:
            names = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = []
        return Check(FAIL, "tls hostname", f"the certificate does not name {hostname} "
                     f"(it names {', '.join(names) or 'no DNS names'})")


def _key_check(cert, key_path):
    try:
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
    except (OSError, ValueError, TypeError) as exc:
        return Check(FAIL, "tls key", f"{key_path}: cannot read it: {exc}")
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*spki) != cert.public_key().public_bytes(*spki):
        return Check(FAIL, "tls key", f"{key_path} is not the certificate's key")
    return Check(OK, "tls key", f"{key_path} matches the certificate")


def check_dns(cfg, domains, resolver):
    if not domains:
        return [Check(SKIP, "dns", "no domains to check (no accounts yet; or name them: "
                      "roost doctor DOMAIN)")]
    out = []
    if not _public_name(cfg.hostname):
        out.append(Check(WARN, "dns hostname", f"[server] hostname {cfg.hostname!r} is not a "
                         "public name; MX records must name the host"))
    for domain in domains:
        if not _public_name(domain):
            out.append(Check(SKIP, f"dns {domain}", "not a public domain (nothing to publish)"))
            continue
        for name, check in (("MX", _mx), ("SPF", _spf), ("DKIM", _dkim), ("DMARC", _dmarc),
                            ("MTA-STS", _mta_sts), ("TLS-RPT", _tlsrpt)):
            label = f"dns {domain} {name}"
            try:
                verdict, detail = check(cfg, domain, resolver)
            except DNSError as exc:
                verdict, detail = SKIP, f"no answer from DNS: {exc}"
            out.append(Check(verdict, label, detail))
    return out


def _expected(cfg, domain, name):
    return [r.value for r in records(cfg, domain) if r.name == name and r.type == "TXT"]


def _mx(cfg, domain, resolver):
    host = cfg.hostname.lower().rstrip(".")
    mx = resolver.mx(domain)
    if not mx:
        return FAIL, f"no MX record; publish: {domain}. MX 10 {host}."
    if host in (h for _p, h in mx):
        return OK, ", ".join(f"{p} {h}" for p, h in mx)
    return WARN, (f"MX names {', '.join(h for _p, h in mx)}, not {host}: right only if that "
                  "host relays to Roost")


def _spf(cfg, domain, resolver):
    found = [t for t in resolver.txt(domain) if t.lower().startswith("v=spf1")]
    (want,) = _expected(cfg, domain, domain)
    if not found:
        return WARN, f'no SPF record; publish: {domain}. TXT "{want}"'
    if len(found) > 1:
        return FAIL, f"{len(found)} SPF records (RFC 7208 section 4.5 permerror): keep one"
    if found[0].split() == want.split():
        return OK, found[0]
    return WARN, f'published "{found[0]}"; roost dns suggests "{want}"'


def _dkim(cfg, domain, resolver):
    keys = dkim_keys(cfg, domain)
    if not keys:
        return WARN, f"no DKIM key: roost dkim keygen {domain}"
    problems, good = [], []
    for selector, _algorithm, public in keys:
        name = f"{selector}._domainkey.{domain}"
        tags = [_tags(t) for t in resolver.txt(name)]
        if not tags:
            problems.append((WARN, f"{name} is not published; roost dns {domain} prints it"))
        elif not any(t.get("p") == public for t in tags):
            problems.append((FAIL, f"{name} publishes another key than {dkim_dir(cfg, domain)}/"
                             f"{selector}.pem"))
        else:
            good.append(name)
    if problems:
        worst = FAIL if any(v == FAIL for v, _d in problems) else WARN
        return worst, "; ".join(d for _v, d in problems)
    return OK, ", ".join(good)


def _dmarc(cfg, domain, resolver):
    found = [t for t in resolver.txt(f"_dmarc.{domain}") if t.lower().startswith("v=dmarc1")]
    (want,) = _expected(cfg, domain, f"_dmarc.{domain}")
    if not found:
        return WARN, f'no DMARC record; publish: _dmarc.{domain}. TXT "{want}"'
    if len(found) > 1:
        return FAIL, f"{len(found)} DMARC records: receivers ignore them all (RFC 7489 6.6.3)"
    return OK, f"policy {_tags(found[0]).get('p', 'missing')}: {found[0]}"


def _mta_sts(cfg, domain, resolver):
    name = f"_mta-sts.{domain}"
    found = [t for t in resolver.txt(name) if t.startswith("v=STSv1;") or t == "v=STSv1"]
    (want,) = _expected(cfg, domain, name)
    if not found:
        return WARN, (f'no MTA-STS record (senders may then deliver without TLS); publish: '
                      f'{name}. TXT "{want}" and the policy roost dns {domain} prints')
    if len(found) > 1:
        return FAIL, f"{len(found)} MTA-STS records: senders ignore them all (RFC 8461 3.1)"
    tags = _tags(found[0])
    if not re.fullmatch(r"[A-Za-z0-9]{1,32}", tags.get("id", "")):
        return FAIL, f'"{found[0]}" has no valid id (1-32 letters and digits)'
    return OK, (f"{found[0]} (the policy at https://mta-sts.{domain}/.well-known/mta-sts.txt "
                "is not fetched by this check)")


def _tlsrpt(cfg, domain, resolver):
    name = f"_smtp._tls.{domain}"
    found = [t for t in resolver.txt(name) if t.lower().startswith("v=tlsrptv1")]
    (want,) = _expected(cfg, domain, name)
    if not found:
        return WARN, f'no TLS-RPT record (no TLS failure reports); publish: {name}. TXT "{want}"'
    if len(found) > 1:
        return FAIL, f"{len(found)} TLS-RPT records: senders ignore them all (RFC 8460 3)"
    if not _tags(found[0]).get("rua"):
        return FAIL, f'"{found[0]}" has no rua= (where reports go)'
    return OK, found[0]


def _tags(record):
    """``"v=DKIM1; k=rsa; p=..."`` -> ``{"v": "DKIM1", ...}`` (whitespace in values removed)."""
    out = {}
    for part in record.split(";"):
        key, _, value = part.partition("=")
        if key.strip():
            out[key.strip().lower()] = "".join(value.split())
    return out


def check_disk(cfg):
    path = cfg.data if os.path.isdir(cfg.data) else os.path.dirname(os.path.abspath(cfg.data))
    usage, st = shutil.disk_usage(path), os.statvfs(path)
    free = usage.free / usage.total if usage.total else 0
    inodes = st.f_favail / st.f_files if st.f_files else 1.0
    detail = (f"{path}: {usage.free / 2**30:.1f} GiB free ({free:.0%}), "
              f"{inodes:.0%} of inodes free (one file per message)")
    if free < 0.01 or inodes < 0.01:
        return Check(FAIL, "disk", detail)
    if free < 0.05 or usage.free < 2**30 or inodes < 0.05:
        return Check(WARN, "disk", detail)
    return Check(OK, "disk", detail)


NTP_EPOCH = 2208988800


def ntp_offset(server, timeout=PROBE_TIMEOUT):
    """The local clock's offset from ``server`` (``HOST`` or ``HOST:PORT``) in
    seconds, by one SNTP exchange (RFC 4330); OSError or ValueError when none."""
    host, port = parse_nameserver(server, default_port=123)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(timeout)
        t1 = time.time()
        stamp = struct.pack("!II", int(t1) + NTP_EPOCH, int((t1 % 1) * 2**32))
        sock.sendto(b"\x23" + bytes(39) + stamp, (host, port))
        reply, _addr = sock.recvfrom(512)
        t4 = time.time()
    finally:
        sock.close()
    if len(reply) < 48 or reply[0] & 7 != 4 or reply[1] == 0 or reply[24:32] != stamp:
        raise ValueError("not an NTP server reply to this request")

    def ts(raw):
        sec, frac = struct.unpack("!II", raw)
        return sec - NTP_EPOCH + frac / 2**32
    t2, t3 = ts(reply[32:40]), ts(reply[40:48])
    return ((t2 - t1) + (t3 - t4)) / 2


def check_clock(cfg, timeout=PROBE_TIMEOUT):
    if not cfg.ntp_server:
        return Check(SKIP, "clock", "no NTP server configured ([doctor] ntp)")
    try:
        offset = ntp_offset(cfg.ntp_server, timeout)
    except (OSError, ValueError) as exc:
        return Check(SKIP, "clock", f"NTP server {cfg.ntp_server} not reachable ({exc}); "
                     "check the clock by other means")
    detail = f"{offset:+.3f} s from {cfg.ntp_server}"
    if abs(offset) > CLOCK_FAIL:
        return Check(FAIL, "clock", detail + ": TLS, DKIM and message dates go wrong; run an NTP client")
    if abs(offset) > CLOCK_WARN:
        return Check(WARN, "clock", detail + ": run an NTP client (chrony, systemd-timesyncd)")
    return Check(OK, "clock", detail)
