"""SPF (RFC 7208), DKIM (RFC 6376, RFC 8463), DMARC (RFC 7489) and ARC
(RFC 8617) verification of one incoming message, each a blocking function
that looks names up only through ``roost.protocols.dns.Resolver``.

Libraries: pyspf evaluates SPF records and dkimpy verifies DKIM signatures
and ARC chains; DMARC (policy discovery, alignment, p/sp/pct) is done here,
with organisational domains from ``psl``. Neither library's own resolver is
used: dkimpy takes a ``dnsfunc`` per call, and pyspf looks names up through
its module-level ``spf.DNSLookup``, which this module replaces (once, at
import) with a function that uses the resolver of the check running in the
calling thread (a thread-local; outside a check it falls back to pyspf's own
lookup, so other users of pyspf in the process are unaffected).

Time: every lookup of one message shares a ``Budget`` (the Inbound
``timeout``); a lookup gets what is left of it, and once it is spent every
further lookup fails at once. A lookup that times out or gets SERVFAIL
(``DNSError``) makes that method ``temperror``; nothing here raises for a
DNS problem or a malformed message: every function returns a result.

DKIM results per signature (RFC 8601 section 2.7.1): ``pass``; ``fail``
(body hash or signature mismatch); ``temperror`` (key lookup timed out);
``permerror`` (no key record, or a key record that cannot be used);
``policy`` (a key shorter than 1024 bits, RFC 8301); ``neutral`` (the
signature itself is malformed, expired or uses something unsupported).
Every signature is verified (each DKIM-Signature field, top first, up to
``MAX_SIGNATURES``: each costs a hash of the body; the rest get one
``neutral`` saying how many were left); the
message's overall ``dkim`` word is the best of them in the order
pass, temperror, fail, policy, permerror, neutral (``none``: no signature).
"""

import ipaddress
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field

import dkim
import spf

from roost.protocols.dns import DNSError

log = logging.getLogger("roost.mailauth")
_dkimpy_log = logging.getLogger("roost.mailauth.dkimpy")
_dkimpy_log.setLevel(logging.CRITICAL)   # its complaints become our results' reasons

MAX_SIGNATURES = 8      # DKIM-Signature fields verified per message (each costs a body hash)
DKIM_ORDER = ("pass", "temperror", "fail", "policy", "permerror", "neutral", "none")


class Budget:
    """The time left for one message's lookups."""

    def __init__(self, seconds, clock=time.monotonic):
        self.clock = clock
        self.deadline = clock() + seconds

    def left(self):
        left = self.deadline - self.clock()
        if left <= 0.01:
            raise DNSError("the time for this message's lookups is spent")
        return left


def lookup(resolver, budget, name, rdtype):
    """``resolver.records`` within the budget (DNSError when spent or failed)."""
    return resolver.records(name, rdtype, timeout=budget.left())


# --- SPF ------------------------------------------------------------------------

_spf_context = threading.local()
_pyspf_lookup = spf.DNSLookup


def _spf_dns(name, qtype, strict=True, timeout=20):
    """pyspf's DNSLookup, through the resolver of the check in this thread."""
    ctx = getattr(_spf_context, "value", None)
    if ctx is None:
        return _pyspf_lookup(name, qtype, strict, timeout)
    resolver, budget = ctx
    try:
        records = lookup(resolver, budget, name, qtype)
    except DNSError as exc:
        raise spf.TempError(f"DNS {exc}") from None
    out = []
    for r in records:
        if qtype in ("A", "AAAA"):
            out.append(((name, qtype), r.address))
        elif qtype == "MX":
            out.append(((name, qtype), (r.preference, r.exchange.to_text(omit_final_dot=True))))
        elif qtype == "PTR":
            out.append(((name, qtype), r.target.to_text(omit_final_dot=True)))
        elif qtype in ("TXT", "SPF"):
            out.append(((name, qtype), list(r.strings)))
    return out


spf.DNSLookup = _spf_dns


@dataclass
class SPFResult:
    result: str
    reason: str = ""
    identity: str = "mailfrom"      # or "helo" (null reverse-path, RFC 7208 section 2.4)
    domain: str = ""


def check_spf(resolver, budget, ip, helo, mail_from):
    """SPF of ``mail_from`` (or of the HELO name for the null sender) from ``ip``."""
    mail_from = (mail_from or "").strip().strip("<>")
    identity = "mailfrom" if "@" in mail_from else "helo"
    sender = mail_from if identity == "mailfrom" else f"postmaster@{helo or ''}"
    domain = sender.rpartition("@")[2].lower().rstrip(".")
    if not domain or not ip:
        return SPFResult("none", "no identity to check", identity, domain)
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        return SPFResult("permerror", f"not an IP address: {ip}", identity, domain)
    _spf_context.value = (resolver, budget)
    try:
        q = spf.query(i=ip, s=sender, h=helo or domain, timeout=max(0.1, budget.deadline
                                                                      - budget.clock()))
        result, _code, text = q.check()
    except Exception as exc:  # noqa: BLE001 - pyspf on odd input: never lose the message
        log.warning("SPF check of %s failed: %r", domain, exc)
        result, text = "permerror", str(exc)
    finally:
        _spf_context.value = None
    return SPFResult(result.lower(), text, identity, domain)


# --- DKIM -----------------------------------------------------------------------

@dataclass
class DKIMResult:
    result: str
    reason: str = ""
    domain: str = ""        # d=
    identity: str = ""      # i=
    selector: str = ""      # s=
    algorithm: str = ""     # a=
    b: str = ""             # the first characters of b= (RFC 6008)


class _KeyLookups:
    """dkimpy's ``dnsfunc``: TXT records through the resolver, remembering
    what happened (so a False from dkimpy can be told apart)."""

    def __init__(self, resolver, budget):
        self.resolver, self.budget = resolver, budget
        self.temp = self.missing = False
        self.found = {}

    def __call__(self, name, timeout=5):
        text = name.decode("ascii", "replace").rstrip(".")
        if text in self.found:
            return self.found[text]
        try:
            records = lookup(self.resolver, self.budget, text, "TXT")
        except DNSError as exc:
            self.temp = True
            raise dkim.DnsTimeoutError(str(exc)) from None
        value = b"".join(records[0].strings) if records else None
        self.missing = self.missing or value is None
        self.found[text] = value
        return value


def _tags(value):
    try:
        return dkim.util.parse_tag_value(value)
    except Exception:  # noqa: BLE001 - InvalidTagValueList and friends
        return {}


def _text(value):
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")


def _has_field(message, name):
    """Whether the header section of ``message`` (up to its first empty
    line) has a ``name`` field: without one, dkimpy need not parse it all."""
    if message[:1] == b"\n" or message[:2] == b"\r\n":
        return False
    end = re.search(rb"\n\r?\n", message)
    head = message[:end.start() + 1] if end else message
    return re.search(rb"(?im)^" + name + rb"[ \t]*:", head) is not None


def check_dkim(resolver, budget, message):
    """One ``DKIMResult`` per DKIM-Signature field, top first."""
    if not _has_field(message, b"dkim-signature"):
        return []
    try:
        d = dkim.DKIM(message, logger=_dkimpy_log, minkey=1024)
    except Exception as exc:  # noqa: BLE001 - a header dkimpy cannot parse
        return [DKIMResult("neutral", f"unparsable message: {exc}")] \
            if re.search(rb"(?im)^dkim-signature:", message) else []
    fields = [v for n, v in d.headers if n.lower() == b"dkim-signature"]
    out = [_verify_one(d, i, value, resolver, budget)
           for i, value in enumerate(fields[:MAX_SIGNATURES])]
    if len(fields) > MAX_SIGNATURES:
        out.append(DKIMResult("neutral", f"{len(fields) - MAX_SIGNATURES} more signatures "
                                         "not verified"))
    return out


def _verify_one(d, idx, value, resolver, budget):
    tags = _tags(value)
    res = DKIMResult("neutral", domain=_text(tags.get(b"d")).lower(), identity=_text(tags.get(b"i")),
                     selector=_text(tags.get(b"s")), algorithm=_text(tags.get(b"a")).lower(),
                     b=re.sub(r"\s+", "", _text(tags.get(b"b")))[:8])
    keys = _KeyLookups(resolver, budget)
    try:
        ok = d.verify(idx, dnsfunc=keys)
    except dkim.ValidationError as exc:
        body = "body hash" in str(exc)
        res.result = "fail" if body else "neutral"
        res.reason = "body hash mismatch" if body else str(exc)
        return res
    except dkim.KeyFormatError as exc:            # raised for a key under minkey
        res.result, res.reason = "policy", str(exc)
        return res
    except dkim.UnknownKeyTypeError as exc:
        res.result, res.reason = "permerror", f"unknown key type {exc}"
        return res
    except Exception as exc:  # noqa: BLE001 - MessageFormatError, ParameterError, odd input
        res.result, res.reason = "neutral", str(exc) or type(exc).__name__
        return res
    if ok:
        res.result, res.reason = "pass", ""
    elif keys.temp:
        res.result, res.reason = "temperror", "key lookup failed"
    elif keys.missing:
        res.result, res.reason = "permerror", "no key for signature"
    else:
        res.result, res.reason = "fail", "signature did not verify"
        for name, record in keys.found.items():
            try:
                dkim.evaluate_pk(name.encode(), record)
            except Exception as exc:  # noqa: BLE001 - KeyFormatError, binascii.Error
                res.result, res.reason = "permerror", f"unusable key record: {exc}"
    return res


def overall_dkim(results):
    if not results:
        return "none"
    return min((r.result for r in results), key=DKIM_ORDER.index)


# --- ARC ------------------------------------------------------------------------

@dataclass
class ARCResult:
    result: str             # pass, fail, none, temperror
    reason: str = ""
    instance: int = 0       # the highest i= of the chain


def check_arc(resolver, budget, message):
    if not _has_field(message, b"arc-seal"):
        return ARCResult("none")
    keys = _KeyLookups(resolver, budget)
    try:
        cv, sets, reason = dkim.arc_verify(message, logger=_dkimpy_log, dnsfunc=keys)
    except Exception as exc:  # noqa: BLE001
        return ARCResult("fail", f"cannot verify the chain: {exc}")
    cv = _text(cv).lower() or "none"
    instance = max((s.get("instance", 0) for s in sets), default=0) if sets else 0
    if cv == "fail" and keys.temp:
        return ARCResult("temperror", "key lookup failed", instance)
    return ARCResult(cv, _text(reason), instance)


# --- DMARC ----------------------------------------------------------------------

@dataclass
class DMARCResult:
    result: str                     # pass, fail, none, temperror, permerror
    reason: str = ""
    from_domain: str = ""
    policy_domain: str = ""         # where the record was found
    record: dict = field(default_factory=dict)   # its tags
    policy: str = ""                # the p or sp that applies ("" without a record)
    applied: str = "none"           # after pct: what to do with a failing message
    dkim_aligned: bool = False
    spf_aligned: bool = False


def parse_record(text):
    """The tags of a DMARC record (``v=DMARC1`` first), or None."""
    tags = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    if text.strip().split(";")[0].replace(" ", "") != "v=DMARC1":
        return None
    return tags


def _find_record(resolver, budget, domain):
    """The records at ``_dmarc.domain`` that are DMARC records."""
    found = []
    for r in lookup(resolver, budget, f"_dmarc.{domain}", "TXT"):
        tags = parse_record(b"".join(r.strings).decode("utf-8", "replace"))
        if tags is not None:
            found.append(tags)
    return found


def aligned(a, b, mode, psl):
    a, b = a.lower().rstrip("."), b.lower().rstrip(".")
    if not a or not b:
        return False
    if mode == "s":
        return a == b
    return psl.organisational(a) == psl.organisational(b)


LESS_STRICT = {"reject": "quarantine", "quarantine": "none", "none": "none"}


def check_dmarc(resolver, budget, psl, from_domain, spf_result, dkim_results, rng=random):
    """DMARC for ``from_domain`` given the SPF result (its domain is the one
    checked) and the DKIM results."""
    from_domain = (from_domain or "").lower().rstrip(".")
    if not from_domain:
        return DMARCResult("permerror", "no single RFC5322.From domain")
    org = psl.organisational(from_domain)
    try:
        records, where = _find_record(resolver, budget, from_domain), from_domain
        if not records and org != from_domain:
            records, where = _find_record(resolver, budget, org), org
    except DNSError as exc:
        return DMARCResult("temperror", str(exc), from_domain)
    out = DMARCResult("none", from_domain=from_domain)
    if len(records) != 1:      # none, or several: no policy (RFC 7489 section 6.6.3)
        out.reason = "no DMARC record" if not records else "more than one DMARC record"
        return out
    tags = records[0]
    out.policy_domain, out.record = where, tags
    p = tags.get("p", "").lower()
    if p not in ("none", "quarantine", "reject"):
        if not tags.get("rua"):
            out.result, out.reason = "permerror", f"bad p= in the record of {where}"
            return out
        p = "none"             # section 6.6.3: a bad p= with a valid rua is p=none
    sp = tags.get("sp", "").lower()
    policy = sp if where != from_domain and sp in ("none", "quarantine", "reject") else p
    out.policy = policy
    adkim, aspf = tags.get("adkim", "r").lower(), tags.get("aspf", "r").lower()
    out.dkim_aligned = any(r.result == "pass" and aligned(r.domain, from_domain, adkim, psl)
                           for r in dkim_results)
    out.spf_aligned = spf_result.result == "pass" and aligned(spf_result.domain, from_domain,
                                                             aspf, psl)
    if out.dkim_aligned or out.spf_aligned:
        out.result = "pass"
        return out
    out.result = "fail"
    try:
        pct = min(100, max(0, int(tags.get("pct", "100"))))
    except ValueError:
        pct = 100
    out.applied = policy if rng.randrange(100) < pct else LESS_STRICT[policy]
    if any(r.result == "temperror" for r in dkim_results) or spf_result.result == "temperror":
        out.result, out.reason, out.applied = "temperror", "an underlying check failed", "none"
    return out


def rua_addresses(record):
    """The ``mailto:`` addresses of a record's rua= (size limits ``!10m`` dropped)."""
    out = []
    for uri in record.get("rua", "").split(","):
        uri = uri.strip()
        if uri.lower().startswith("mailto:"):
            address = uri[7:].split("!")[0].strip()
            if "@" in address and not any(c in address for c in " <>\r\n\t\0,;"):
                out.append(address)
    return out


# --- the remote host --------------------------------------------------------------

def verified_ptr(resolver, budget, ip, limit=3):
    """The first PTR name of ``ip`` whose addresses include ``ip`` (FCrDNS), or ""."""
    try:
        addr = ipaddress.ip_address(ip)
        for r in lookup(resolver, budget, addr.reverse_pointer, "PTR")[:limit]:
            name = r.target.to_text(omit_final_dot=True).lower()
            kind = "A" if addr.version == 4 else "AAAA"
            if any(ipaddress.ip_address(a.address) == addr
                   for a in lookup(resolver, budget, name, kind)):
                return name
    except (DNSError, ValueError):
        pass
    return ""
