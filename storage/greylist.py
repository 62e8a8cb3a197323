"""Greylisting memory for the SMTP edge: triplets and allowed networks.

Owns the ``greylist`` and ``greylist_allowed`` tables. Pure SQL in the
store's write transaction; no sockets, no clock of its own (the caller
passes ``now``, so tests move time by hand).

A triplet is (client network, sender, recipient). The network is the
client's /24 (IPv4) or /64 (IPv6): a sender's retry often comes from another
host of the same farm. The sender is normalised (lower case, ``+detail``
dropped, runs of digits replaced by ``#``) so VERP and SRS senders of one
list, which change with every message, make one triplet.

``check`` decides, as Postgrey does:

- the network is allowed (``greylist_allowed``: at least ``allow_after``
  triplets passed and its ``expires`` is ahead): pass;
- an unknown triplet is recorded and deferred ``delay`` seconds;
- a known one retried after ``delay`` (and within ``retry_window`` of its
  first attempt) passes, and stays passed while it keeps being used (its
  ``last_seen`` is refreshed); its first pass counts one for its network,
  and each pass moves the network's ``expires`` to ``now + allow_for``
  (``last_seen`` is rewritten at most every ``REFRESH`` seconds: the steady
  state is a read, not a write transaction per recipient);
- retried too early: deferred again with the time left; too late (past
  ``retry_window``): it starts over.

``prune`` deletes what no decision needs any more: triplets that never
passed and are past ``retry_window``, passed ones unused for ``allow_for``,
and networks whose ``expires`` is past.
"""

import ipaddress
import re
from dataclasses import dataclass

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from .schema import greylist, greylist_allowed

DELAY = 300
RETRY_WINDOW = 2 * 86400
ALLOW_AFTER = 5
ALLOW_FOR = 35 * 86400
REFRESH = 3600      # a passed triplet's last_seen is rewritten at most this often
_DIGITS = re.compile(r"\d+")


@dataclass(frozen=True)
class Policy:
    delay: float = DELAY
    retry_window: float = RETRY_WINDOW
    allow_after: int = ALLOW_AFTER     # passed triplets before the network is allowed; 0: never
    allow_for: float = ALLOW_FOR


@dataclass(frozen=True)
class Verdict:
    passed: bool
    wait: float = 0.0                  # seconds until a retry can pass (when deferred)
    reason: str = ""                   # "allowed", "passed", "new", "early", "restarted"


def network_of(ip):
    """The /24 or /64 network (text) of an address; the text itself when it
    is not an IP address (a unix socket's peer)."""
    try:
        addr = ipaddress.ip_address(str(ip).split("%")[0])
    except ValueError:
        return str(ip)[:64]
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    prefix = 24 if addr.version == 4 else 64
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def normalise_sender(sender):
    sender = (sender or "").strip().strip("<>").lower()
    local, at, domain = sender.rpartition("@")
    if not at:
        return _DIGITS.sub("#", sender)[:320]
    local = local.partition("+")[0]
    return (_DIGITS.sub("#", local) + "@" + domain)[:320]


def check(store, network, sender, recipient, now, policy=Policy()):
    """The greylisting ``Verdict`` of one recipient of one transaction."""
    sender, recipient = normalise_sender(sender), (recipient or "").lower()[:320]
    key = and_(greylist.c.network == network, greylist.c.sender == sender,
               greylist.c.recipient == recipient)
    # The steady state (a passed triplet seen lately, an allowed network) is
    # answered by a read: no write transaction, no fsync, per recipient.
    with store.reader() as conn:
        allowed = conn.execute(select(greylist_allowed.c.passes, greylist_allowed.c.expires)
                               .where(greylist_allowed.c.network == network)).first()
        row = conn.execute(select(greylist.c.passed, greylist.c.last_seen).where(key)).first()
    if row is not None and row.passed is not None and now - row.last_seen < REFRESH:
        return Verdict(True, reason="passed")
    if (row is None or row.passed is None) and allowed is not None and policy.allow_after and \
            allowed.passes >= policy.allow_after and allowed.expires > now:
        return Verdict(True, reason="allowed")
    try:
        with store.write() as txn:
            conn = txn.conn
            allowed = conn.execute(select(greylist_allowed.c.passes, greylist_allowed.c.expires)
                                   .where(greylist_allowed.c.network == network)).first()
            row = conn.execute(select(greylist.c.first_seen, greylist.c.passed).where(key)).first()
            if row is not None and row.passed is not None:
                conn.execute(update(greylist).where(key).values(last_seen=now))
                return Verdict(True, reason="passed")
            if allowed is not None and policy.allow_after and \
                    allowed.passes >= policy.allow_after and allowed.expires > now:
                return Verdict(True, reason="allowed")
            if row is None or now - row.first_seen > policy.retry_window:
                if row is None:
                    conn.execute(insert(greylist).values(
                        network=network, sender=sender, recipient=recipient, first_seen=now,
                        last_seen=now, passed=None, attempts=1))
                else:
                    conn.execute(update(greylist).where(key).values(
                        first_seen=now, last_seen=now, attempts=1))
                return Verdict(False, policy.delay, "new" if row is None else "restarted")
            if now - row.first_seen < policy.delay:
                conn.execute(update(greylist).where(key).values(
                    last_seen=now, attempts=greylist.c.attempts + 1))
                return Verdict(False, policy.delay - (now - row.first_seen), "early")
            conn.execute(update(greylist).where(key).values(
                last_seen=now, passed=now, attempts=greylist.c.attempts + 1))
            if allowed is None:
                conn.execute(insert(greylist_allowed).values(
                    network=network, passes=1, expires=now + policy.allow_for))
            else:
                conn.execute(update(greylist_allowed).where(
                    greylist_allowed.c.network == network).values(
                    passes=greylist_allowed.c.passes + 1, expires=now + policy.allow_for))
            return Verdict(True, reason="passed")
    except IntegrityError:
        # Another worker recorded the same triplet (or network) at this
        # moment: it is new either way, so this attempt is deferred.
        return Verdict(False, policy.delay, "new")


def allowed_networks(store, now):
    """``{network: passes}`` of the networks with an unexpired row."""
    with store.reader() as conn:
        return dict(conn.execute(select(greylist_allowed.c.network, greylist_allowed.c.passes)
                                 .where(greylist_allowed.c.expires > now)).all())


def prune(store, now, policy=Policy()):
    """Delete rows no decision needs any more; returns how many went."""
    with store.write() as txn:
        conn = txn.conn
        gone = conn.execute(delete(greylist).where(or_(
            and_(greylist.c.passed.is_(None), greylist.c.first_seen < now - policy.retry_window),
            and_(greylist.c.passed.is_not(None), greylist.c.last_seen < now - policy.allow_for)))
        ).rowcount
        gone += conn.execute(delete(greylist_allowed).where(
            greylist_allowed.c.expires < now)).rowcount
    return gone
