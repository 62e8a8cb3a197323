"""The outbound queue: what Roost has accepted for sending, per recipient,
until each recipient is delivered, bounced or suppressed.

Owns the ``outbound``, ``outbound_rcpts``, ``suppressions`` and ``hold_rules``
tables and the spool of message bytes (``DATA/queue/<name>``). Storage opens
no sockets (DESIGN.md section 2): the relay (the SMTP protocol package)
takes due work with ``claim``, reads the bytes with ``read``, and reports each
recipient's reply with ``record``; everything that follows from a reply (the
next attempt, a bounce, a delay notice, a suppression, a JMAP delivery
status) is decided here, in one transaction per report.

States of a recipient: ``queued`` (never tried), ``deferred`` (tried, temporary
failure, ``next_attempt`` set), ``delivered`` (the reply is the remote's 250),
``bounced`` (permanent failure or expired), ``suppressed`` (refused at once:
the address bounced hard lately), ``canceled`` (undo send, ``roost queue
drop``). A message is ``held`` as a whole (``roost queue hold``, a hold rule,
a JMAP submission not yet released); ``release_at`` is the earliest time it
may go (FUTURERELEASE, JMAP ``sendAt`` and the undo window).

Durability: the bytes are written and fsynced before the rows commit, and the
submitter acknowledges after the commit, so an accepted message survives
``kill -9``. ``claim`` takes a lease on the recipients it hands out (a
second node or worker skips them); ``record`` makes a 250 final in the
database before anything else happens, so a recipient whose 250 is recorded
is never sent again. A crash between the remote 250 and its record sends that
recipient once more after the lease expires (RFC 5321 section 6.3 accepts such
duplicates; no protocol can close that window). ``recover`` (start-up) clears
this node's leases and deletes spool files no row names.

Local recipients (domains Roost hosts, ``Store.hosts_domain``) never leave: ``submit``
stores them through ``Delivery.store`` at once and keeps a row that says so
(counted by rate limits, shown in JMAP delivery status); one that fails
temporarily is queued and retried through ``Delivery.store`` by the relay.

DSNs (``storage.dsn``) go to the envelope sender: a local sender gets it in
the INBOX through ``Delivery.store``, a remote one through the queue, with
the null reverse-path, and mail with a null sender never gets one.
NOTIFY=NEVER asks for none; no NOTIFY means FAILURE,DELAY.
"""

import json
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field

from sqlalchemy import and_, delete, func, insert, or_, select, update

from . import dsn
from .schema import hold_rules, outbound, outbound_rcpts, submissions, suppressions

log = logging.getLogger("roost.storage")

# Seconds to the next attempt after the 1st, 2nd, ... failure (the last repeats).
DEFAULT_SCHEDULE = (5 * 60, 10 * 60, 30 * 60, 3600, 2 * 3600, 4 * 3600, 8 * 3600, 16 * 3600)
MAX_AGE = 5 * 86400          # then a deferred recipient bounces
DELAY_NOTICE = 4 * 3600      # a delay DSN once a recipient is this late
SUPPRESS_FOR = 30 * 86400    # a hard bounce suppresses its address this long
LEASE = 15 * 60              # a claimed recipient is another's again after this
KEEP_DONE = 7 * 86400        # finished messages' rows are kept this long
PENDING = ("queued", "deferred")
FINAL = ("delivered", "bounced", "suppressed", "canceled")


@dataclass
class Recipient:
    address: str
    orcpt: str = None       # "rfc822;addr" (RFC 3461 ORCPT, xtext decoded)
    notify: str = None      # "NEVER" or a comma list of SUCCESS, FAILURE, DELAY


@dataclass
class Envelope:
    sender: str                         # "" is the null reverse-path
    recipients: list
    account_id: int = None
    ret: str = None                     # FULL or HDRS
    envid: str = None
    release_at: float = 0.0
    hold: bool = False
    requiretls: bool = False
    smtputf8: bool = False
    kind: str = "mail"
    submission_id: int = None


@dataclass
class Work:
    """Due recipients of one message at one destination domain."""
    message_id: int
    sender: str
    spool: str
    domain: str
    rcpts: list                         # [(rcpt id, address)]
    requiretls: bool = False
    smtputf8: bool = False
    local: bool = False
    attempts: int = 0
    kind: str = "mail"                  # Envelope.kind: the relay ARC-seals "redirect"


@dataclass
class Result:
    """One recipient's reply from an attempt (or a reply made up for a
    network failure: ``451 4.4.1 connection refused``)."""
    rcpt_id: int
    reply: str
    remote: str = ""


@dataclass
class Queued:
    id: int
    states: dict = field(default_factory=dict)    # address -> (state, reply)


def parse_interval(value):
    """``"90"``, ``"5m"``, ``"4h"``, ``"5d"`` -> seconds."""
    value = str(value).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    num, unit = (value[:-1], value[-1]) if value[-1:] in units else (value, "s")
    try:
        seconds = float(num) * units[unit]
    except ValueError:
        raise ValueError(f"an interval is a number with s, m, h or d, not {value!r}") from None
    if seconds < 0:
        raise ValueError(f"an interval cannot be negative: {value!r}")
    return seconds


def check_address(address, null_ok=False):
    """An envelope address fit to be written into an SMTP command: no CR,
    LF, NUL, space or angle bracket, at most 320 octets, ``local@domain``
    (or "" when ``null_ok``). ValueError otherwise: a submitter maps it to
    its protocol's error before anything is queued."""
    if address == "" and null_ok:
        return address
    if (not isinstance(address, str) or len(address.encode("utf-8", "replace")) > 320
            or any(c in address for c in "\r\n\0 <>\t") or address.count("@") < 1
            or not address.rpartition("@")[0] or not address.rpartition("@")[2]):
        raise ValueError(f"not a usable envelope address: {address!r}")
    return address


def wants(notify, what):
    """Does a recipient's NOTIFY ask for ``what`` (SUCCESS, FAILURE, DELAY)?"""
    if notify is None:
        return what in ("FAILURE", "DELAY")
    return what in notify.upper().split(",")


class Spool:
    """Message bytes of the queue, one fsynced file each under ``root``."""

    def __init__(self, root):
        self.root = root
        os.makedirs(root, exist_ok=True)

    def put(self, data):
        name = f"{time.time_ns():x}.{secrets.token_hex(6)}"
        path = os.path.join(self.root, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        dfd = os.open(self.root, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        return name

    def get(self, name):
        with open(os.path.join(self.root, name), "rb") as f:
            return f.read()

    def delete(self, name):
        try:
            os.unlink(os.path.join(self.root, name))
        except FileNotFoundError:
            pass

    def names(self, older_than=0):
        cutoff = time.time() - older_than
        return [n for n in os.listdir(self.root)
                if os.path.getmtime(os.path.join(self.root, n)) <= cutoff]


class MemorySpool:
    def __init__(self):
        self.files = {}
        self.lock = threading.Lock()

    def put(self, data):
        name = secrets.token_hex(8)
        with self.lock:
            self.files[name] = bytes(data)
        return name

    def get(self, name):
        with self.lock:
            if name not in self.files:
                raise FileNotFoundError(name)
            return self.files[name]

    def delete(self, name):
        with self.lock:
            self.files.pop(name, None)

    def names(self, older_than=0):
        with self.lock:
            return list(self.files)


class Outbound:
    def __init__(self, store, delivery, spool, hostname, *, schedule=DEFAULT_SCHEDULE,
                 max_age=MAX_AGE, delay_notice=DELAY_NOTICE, suppress_for=SUPPRESS_FOR,
                 clock=time.time):
        self.store = store
        self.delivery = delivery
        self.spool = spool
        self.hostname = hostname
        self.schedule = tuple(schedule) or DEFAULT_SCHEDULE
        self.max_age = max_age
        self.delay_notice = delay_notice
        self.suppress_for = suppress_for
        self.clock = clock
        self.wakeup = None          # fn() the relay sets: new work may be due

    # --- accepting mail -------------------------------------------------------------

    def submit(self, env, data):
        """Accept ``data`` for ``env``'s recipients; returns ``Queued`` with
        each recipient's state and reply. Local recipients are stored now; the
        rest are queued (or held, or suppressed). Raises nothing for a
        recipient: each one's outcome is in ``states``."""
        check_address(env.sender, null_ok=True)
        if not env.recipients:
            raise ValueError("no recipients")
        for rcpt in env.recipients:
            check_address(rcpt.address)
            for extra in (rcpt.orcpt, rcpt.notify, env.envid, env.ret):
                if extra is not None and any(c in extra for c in "\r\n\0"):
                    raise ValueError("CR, LF or NUL in a DSN parameter")
        now = self.clock()
        local, rows = [], []          # rows: (Recipient, state, reply)
        for rcpt in env.recipients:
            if self.store.hosts_domain(rcpt.address.rpartition("@")[2].lower()):
                local.append(rcpt)
            elif self.suppressed(rcpt.address):
                rows.append((rcpt, "suppressed", self._suppressed_reply(rcpt.address)))
            else:
                rows.append((rcpt, "queued", None))
        if local and not (env.release_at > now or env.hold):
            rows = self._deliver_local(env, data, local) + rows
        else:
            rows = [(r, "queued", None) for r in local] + rows
        pending = any(s == "queued" for _, s, _ in rows)
        name = self.spool.put(data) if pending else None
        try:
            with self.store.write() as txn:
                conn = txn.conn
                held = env.hold or self._held_by_rule(conn, env.account_id,
                                                      [r.address for r, s, _ in rows if s == "queued"])
                mid = conn.execute(insert(outbound).values(
                    account_id=env.account_id, sender=env.sender, spool=name, size=len(data),
                    created=now, release_at=max(env.release_at, now), held=held, ret=env.ret,
                    envid=env.envid, requiretls=env.requiretls, smtputf8=env.smtputf8,
                    kind=env.kind, submission_id=env.submission_id)).inserted_primary_key[0]
                conn.execute(insert(outbound_rcpts), [dict(
                    message_id=mid, address=r.address, domain=r.address.rpartition("@")[2].lower(),
                    orcpt=r.orcpt, notify=r.notify, state=s, attempts=0 if s == "queued" else 1,
                    next_attempt=max(env.release_at, now), last_attempt=None if s == "queued" else now,
                    reply=reply, delay_notified=False) for r, s, reply in rows])
                if env.submission_id is not None and env.account_id is not None:
                    self._finish(txn, [mid])     # the JMAP status, in the same commit
        except BaseException:
            if name:
                self.spool.delete(name)
            raise
        if pending and self.wakeup is not None:
            self.wakeup()
        self._bounce_local(env, data, rows, now)
        return Queued(mid, {r.address: (s, reply) for r, s, reply in rows})

    def _bounce_local(self, env, data, rows, now):
        """A DSN for local recipients that refused the message at once (no such
        user, a Sieve reject): the submitter got one 250 for the whole message."""
        notices = [dsn.Notice(r.address, "failed", dsn.status_of(reply, "5"), reply, self.hostname,
                              r.orcpt or "", now, None)
                   for r, s, reply in rows if s == "bounced" and reply and wants(r.notify, "FAILURE")]
        if not notices or not env.sender or env.kind == "dsn":
            return
        report = dsn.report(hostname=self.hostname, recipient=env.sender, notices=notices,
                            original=data, ret=env.ret, envid=env.envid, arrival=now, now=self.clock())
        try:
            self.submit(Envelope("", [Recipient(env.sender, notify="NEVER")], kind="dsn"), report)
        except Exception:  # noqa: BLE001 - the bounce is lost, the message is not
            log.exception("could not queue a DSN for a local bounce to %s", env.sender)

    def _store_local(self, data, sender, addresses):
        """Store ``data`` for local ``addresses`` through the delivery path;
        the SMTP-style reply of each (2xx stored, 4xx retry, 5xx bounce)."""
        from .delivery import DISCARDED, DELIVERED, DUPLICATE, NO_SUCH_USER, OVER_QUOTA, REJECTED, Incoming
        results = self.delivery.store(Incoming(data, recipients=tuple(addresses),
                                               sender=sender or None))
        out = []
        for res in results:
            if res.status in (DELIVERED, DUPLICATE, DISCARDED):
                out.append("250 2.0.0 delivered to a local mailbox")
            elif res.status is REJECTED:     # the recipient's Sieve script refused it: a bounce
                out.append(f"550 5.7.1 {res.reason or 'message refused'}")
            elif res.status is NO_SUCH_USER:
                out.append("550 5.1.1 no such user here")
            elif res.status is OVER_QUOTA:
                out.append("452 4.2.2 mailbox full")
            else:
                out.append(f"451 4.3.0 {res.reason or 'temporary failure'}")
        return out

    def _deliver_local(self, env, data, rcpts):
        replies = self._store_local(data, env.sender, [r.address for r in rcpts])
        states = {"2": "delivered", "5": "bounced"}
        # a temporary failure is queued as never tried: the relay retries it
        return [(rcpt, states[reply[0]], reply) if reply[0] in states else (rcpt, "queued", None)
                for rcpt, reply in zip(rcpts, replies)]

    def _held_by_rule(self, conn, account_id, addresses):
        rules = conn.execute(select(hold_rules.c.account_id, hold_rules.c.domain)).all()
        domains = {a.rpartition("@")[2].lower() for a in addresses}
        return any((r.account_id is not None and r.account_id == account_id)
                   or (r.domain is not None and r.domain in domains) for r in rules)

    # --- the relay's side ----------------------------------------------------------------

    def claim(self, limit=200, lease=LEASE):
        """Take up to ``limit`` due recipients (a lease of ``lease`` seconds);
        returns ``[Work]``, one per message and destination domain."""
        now = self.clock()
        with self.store.write() as txn:
            conn = txn.conn
            rows = conn.execute(
                select(outbound_rcpts.c.id, outbound_rcpts.c.address, outbound_rcpts.c.domain,
                       outbound_rcpts.c.attempts, outbound.c.id.label("mid"), outbound.c.sender,
                       outbound.c.spool, outbound.c.requiretls, outbound.c.smtputf8,
                       outbound.c.kind)
                .join(outbound, outbound.c.id == outbound_rcpts.c.message_id)
                .where(outbound_rcpts.c.state.in_(PENDING), outbound_rcpts.c.next_attempt <= now,
                       or_(outbound_rcpts.c.lease.is_(None), outbound_rcpts.c.lease < now),
                       outbound.c.held.is_(False), outbound.c.release_at <= now)
                .order_by(outbound_rcpts.c.next_attempt, outbound_rcpts.c.id)
                .limit(limit)
                .with_for_update(skip_locked=True, of=outbound_rcpts)).all()
            if rows:
                conn.execute(update(outbound_rcpts)
                             .where(outbound_rcpts.c.id.in_([r.id for r in rows]))
                             .values(lease=now + lease))
        groups = {}
        for r in rows:
            w = groups.get((r.mid, r.domain))
            if w is None:
                w = groups[(r.mid, r.domain)] = Work(
                    r.mid, r.sender, r.spool, r.domain, [], r.requiretls, r.smtputf8,
                    self.store.hosts_domain(r.domain), r.attempts, r.kind or "mail")
            w.rcpts.append((r.id, r.address))
        return list(groups.values())

    def read(self, name):
        return self.spool.get(name)

    def next_due(self):
        """The earliest time a pending, unheld recipient is due (None: none is)."""
        later = func.max if self.store.sqlite else func.greatest   # the larger of two
        with self.store.reader() as conn:
            return conn.execute(
                select(func.min(later(outbound_rcpts.c.next_attempt, outbound.c.release_at)))
                .join(outbound, outbound.c.id == outbound_rcpts.c.message_id)
                .where(outbound_rcpts.c.state.in_(PENDING), outbound.c.held.is_(False))).scalar()

    def deliver_local(self, work):
        """Attempt a queued local recipient again (the relay calls this for
        ``Work.local``); returns the ``Result`` of each."""
        replies = self._store_local(self.read(work.spool), work.sender, [a for _, a in work.rcpts])
        return [Result(rid, reply, self.hostname) for (rid, _), reply in zip(work.rcpts, replies)]

    def record(self, results):
        """Apply each ``Result``: 2xx delivered, 4xx deferred (bounced once
        the message is older than ``max_age``), 5xx bounced (and suppressed
        when the address does not exist). DSNs follow the commit."""
        now = self.clock()
        by_id = {r.rcpt_id: r for r in results}
        notices = {}      # message id -> {action: [Notice]}
        messages = {}
        with self.store.write() as txn:
            conn = txn.conn
            rows = conn.execute(
                select(outbound_rcpts, outbound.c.release_at, outbound.c.sender, outbound.c.kind)
                .join(outbound, outbound.c.id == outbound_rcpts.c.message_id)
                .where(outbound_rcpts.c.id.in_(list(by_id)))).all()
            for row in rows:
                if row.state not in PENDING:
                    continue          # dropped, failed or canceled meanwhile
                res = by_id[row.id]
                code = res.reply[:1]
                values = dict(attempts=row.attempts + 1, last_attempt=now, reply=res.reply,
                              remote=res.remote or None, lease=None)
                notice = None
                if code == "2":
                    values["state"] = "delivered"
                    if wants(row.notify, "SUCCESS"):
                        notice = self._notice(row, res, "relayed" if res.remote != self.hostname
                                              else "delivered", now)
                elif code == "4" and now - row.release_at < self.max_age:
                    values["state"] = "deferred"
                    values["next_attempt"] = now + self._backoff(row.attempts + 1)
                    if (not row.delay_notified and now - row.release_at >= self.delay_notice
                            and wants(row.notify, "DELAY")):
                        values["delay_notified"] = True
                        notice = self._notice(row, res, "delayed", now,
                                              retry_until=row.release_at + self.max_age)
                else:
                    values["state"] = "bounced"
                    if code != "5":
                        values["reply"] = f"{res.reply} (gave up after {int((now - row.release_at) // 3600)} h)"
                    if wants(row.notify, "FAILURE"):
                        notice = self._notice(row, res, "failed", now)
                    if code == "5" and dsn.classify(res.reply) == "hard":
                        self._suppress(conn, row.address, res.reply, now)
                conn.execute(update(outbound_rcpts).where(outbound_rcpts.c.id == row.id)
                             .values(**values))
                messages[row.message_id] = row
                if notice is not None and row.sender and row.kind != "dsn":
                    notices.setdefault(row.message_id, {}).setdefault(notice.action, []).append(notice)
            done, spools = self._finish(txn, list(messages))
        self._send_notices(notices, dict(zip(done, spools)))
        for name in spools:
            self.spool.delete(name)
        return done

    def _backoff(self, failures):
        return self.schedule[min(failures, len(self.schedule)) - 1]

    def _notice(self, row, res, action, now, retry_until=None):
        status = dsn.status_of(res.reply, "5" if action == "failed" else "4")
        if action == "failed" and status.startswith("4"):
            status = "4.4.7" if status == "4.0.0" else status
        elif action in ("delivered", "relayed"):
            status = "2.0.0"
        return dsn.Notice(row.address, action, status, res.reply, res.remote or "",
                          row.orcpt or "", now, retry_until)

    def _finish(self, txn, message_ids):
        """After recipients changed: JMAP delivery statuses, and the rows of
        messages with nothing left pending let go of their spool files.
        Returns the finished message ids and the spool names the caller
        deletes once its transaction committed (and its DSNs quoted them)."""
        conn = txn.conn
        finished, spools = [], []
        for mid in message_ids:
            msg = conn.execute(select(outbound).where(outbound.c.id == mid)).first()
            rcpts = conn.execute(select(outbound_rcpts).where(
                outbound_rcpts.c.message_id == mid)).all()
            if msg.submission_id is not None and msg.account_id is not None:
                self._update_submission(txn, msg, rcpts)
            if msg.spool and not any(r.state in PENDING for r in rcpts):
                conn.execute(update(outbound).where(outbound.c.id == mid).values(spool=None))
                finished.append(mid)
                spools.append(msg.spool)
        return finished, spools

    def _update_submission(self, txn, msg, rcpts):
        """The JMAP submission row's status: ``deliveryStatus``, ``undoStatus``
        and the queue message's id (``queueId``, what undo send cancels)."""
        conn = txn.conn
        row = conn.execute(select(submissions.c.status).where(and_(
            submissions.c.id == msg.submission_id,
            submissions.c.account_id == msg.account_id))).first()
        if row is None:
            return
        status = json.loads(row.status)
        status["deliveryStatus"] = delivery_status(rcpts)
        status["queueId"] = msg.id
        attempted = any(_tried(r) for r in rcpts) or msg.release_at <= self.clock()
        left = any(r.state in PENDING for r in rcpts)
        if status.get("undoStatus") == "pending" and (not left or attempted and not msg.held):
            status["undoStatus"] = "final"
        if any(r.state == "canceled" for r in rcpts) and \
                all(r.state in ("canceled", "suppressed") for r in rcpts):
            status["undoStatus"] = "canceled"
        conn.execute(update(submissions).where(submissions.c.id == msg.submission_id)
                     .values(status=json.dumps(status)))
        txn.next_modseq(msg.account_id)
        txn.log(msg.account_id, "EmailSubmission", [msg.submission_id], "u")

    def _send_notices(self, notices, spools):
        for mid, kinds in notices.items():
            with self.store.reader() as conn:
                msg = conn.execute(select(outbound).where(outbound.c.id == mid)).first()
            try:
                original = self.spool.get(msg.spool or spools[mid])
            except (FileNotFoundError, KeyError):
                original = b""
            for action, items in kinds.items():
                data = dsn.report(hostname=self.hostname, recipient=msg.sender, notices=items,
                                  original=original, ret=msg.ret, envid=msg.envid,
                                  arrival=msg.created, now=self.clock())
                try:
                    self.submit(Envelope("", [Recipient(msg.sender, notify="NEVER")], kind="dsn"),
                                data)
                except Exception:  # noqa: BLE001 - the bounce is lost, the queue is not
                    log.exception("could not queue a DSN for outbound message %s", mid)

    # --- suppression --------------------------------------------------------------

    def _suppress(self, conn, address, reason, now):
        address = address.lower()
        conn.execute(delete(suppressions).where(suppressions.c.address == address))
        conn.execute(insert(suppressions).values(address=address, reason=reason[:1000],
                                                 created=now, expires=now + self.suppress_for))

    def suppress(self, address, reason="added by the administrator", ttl=None):
        now = self.clock()
        with self.store.write() as txn:
            address = address.lower()
            txn.conn.execute(delete(suppressions).where(suppressions.c.address == address))
            txn.conn.execute(insert(suppressions).values(
                address=address, reason=reason, created=now,
                expires=None if ttl is None else now + ttl))

    def unsuppress(self, address):
        with self.store.write() as txn:
            return bool(txn.conn.execute(delete(suppressions).where(
                suppressions.c.address == address.lower())).rowcount)

    def suppressions(self):
        now = self.clock()
        with self.store.reader() as conn:
            return [dict(r._mapping) for r in conn.execute(
                select(suppressions).where(or_(suppressions.c.expires.is_(None),
                                               suppressions.c.expires > now))
                .order_by(suppressions.c.address))]

    def suppressed(self, address):
        """The suppression row of ``address`` in force, or None."""
        now = self.clock()
        with self.store.reader() as conn:
            row = conn.execute(select(suppressions).where(
                suppressions.c.address == address.lower(),
                or_(suppressions.c.expires.is_(None), suppressions.c.expires > now))).first()
        return None if row is None else dict(row._mapping)

    def _suppressed_reply(self, address):
        row = self.suppressed(address)
        when = time.strftime("%Y-%m-%d", time.gmtime(row["created"])) if row else "lately"
        return f"550 5.1.1 <{address}> is suppressed: it bounced on {when}"

    # --- operators (roost queue) ----------------------------------------------------

    def list(self, limit=1000):
        """One dict per message with pending or held recipients, oldest first."""
        with self.store.reader() as conn:
            msgs = conn.execute(
                select(outbound).where(outbound.c.spool.is_not(None))
                .order_by(outbound.c.id).limit(limit)).all()
            counts = {}
            if msgs:
                for mid, state, n in conn.execute(
                        select(outbound_rcpts.c.message_id, outbound_rcpts.c.state, func.count())
                        .where(outbound_rcpts.c.message_id.in_([m.id for m in msgs]))
                        .group_by(outbound_rcpts.c.message_id, outbound_rcpts.c.state)):
                    counts.setdefault(mid, {})[state] = n
        return [dict(m._mapping) | {"recipients": counts.get(m.id, {})} for m in msgs]

    def show(self, message_id):
        """The message row and its recipients (dicts), or None."""
        with self.store.reader() as conn:
            msg = conn.execute(select(outbound).where(outbound.c.id == message_id)).first()
            if msg is None:
                return None
            rcpts = conn.execute(select(outbound_rcpts).where(
                outbound_rcpts.c.message_id == message_id).order_by(outbound_rcpts.c.id)).all()
        return dict(msg._mapping) | {"rcpts": [dict(r._mapping) for r in rcpts]}

    def _pending_update(self, message_id, **values):
        with self.store.write() as txn:
            return txn.conn.execute(update(outbound_rcpts).where(
                outbound_rcpts.c.message_id == message_id,
                outbound_rcpts.c.state.in_(PENDING)).values(**values)).rowcount

    def retry(self, message_id):
        """Make the message's pending recipients due now; returns how many."""
        n = self._pending_update(message_id, next_attempt=self.clock(), lease=None)
        if n and self.wakeup is not None:
            self.wakeup()
        return n

    def hold(self, message_id, held=True):
        with self.store.write() as txn:
            n = txn.conn.execute(update(outbound).where(
                outbound.c.id == message_id, outbound.c.spool.is_not(None))
                .values(held=held)).rowcount
        if n and not held and self.wakeup is not None:
            self.wakeup()
        return bool(n)

    def release(self, message_id):
        return self.hold(message_id, held=False)

    def fail(self, message_id, reason="550 5.0.0 failed by the mail administrator"):
        """Bounce every pending recipient now, with a DSN; returns how many."""
        with self.store.reader() as conn:
            ids = [r[0] for r in conn.execute(select(outbound_rcpts.c.id).where(
                outbound_rcpts.c.message_id == message_id, outbound_rcpts.c.state.in_(PENDING)))]
        self.record([Result(i, reason) for i in ids])
        return len(ids)

    def cancel(self, message_id, only_unsent=True):
        """Stop sending (undo send, ``roost queue drop``): pending recipients
        become ``canceled``, no DSN. With ``only_unsent``, only a message none
        of whose recipients was attempted yet. Returns whether it was canceled."""
        with self.store.write() as txn:
            conn = txn.conn
            msg = conn.execute(select(outbound).where(outbound.c.id == message_id)).first()
            if msg is None or msg.spool is None:
                return False
            rcpts = conn.execute(select(outbound_rcpts).where(
                outbound_rcpts.c.message_id == message_id)).all()
            if only_unsent and any(_tried(r) for r in rcpts):
                return False
            conn.execute(update(outbound_rcpts).where(
                outbound_rcpts.c.message_id == message_id, outbound_rcpts.c.state.in_(PENDING))
                .values(state="canceled", reply="canceled before it was sent", lease=None))
            _, spools = self._finish(txn, [message_id])
        for name in spools:
            self.spool.delete(name)
        return True

    def drop(self, message_id):
        """Forget the message without a DSN; returns whether it existed."""
        with self.store.reader() as conn:
            exists = conn.execute(select(outbound.c.id).where(outbound.c.id == message_id)).first()
        if exists is None:
            return False
        self.cancel(message_id, only_unsent=False)
        with self.store.write() as txn:
            txn.conn.execute(delete(outbound_rcpts).where(outbound_rcpts.c.message_id == message_id))
            txn.conn.execute(delete(outbound).where(outbound.c.id == message_id))
        return True

    def add_hold_rule(self, account_id=None, domain=None):
        with self.store.write() as txn:
            return txn.conn.execute(insert(hold_rules).values(
                account_id=account_id, domain=domain and domain.lower(),
                created=self.clock())).inserted_primary_key[0]

    def del_hold_rule(self, rule_id):
        with self.store.write() as txn:
            return bool(txn.conn.execute(delete(hold_rules).where(hold_rules.c.id == rule_id)).rowcount)

    def hold_rules(self):
        with self.store.reader() as conn:
            return [dict(r._mapping) for r in conn.execute(select(hold_rules).order_by(hold_rules.c.id))]

    # --- accounting, upkeep -------------------------------------------------------

    def sent_since(self, account_id, since):
        """``(messages, recipients)`` the account handed over since ``since``."""
        with self.store.reader() as conn:
            row = conn.execute(
                select(func.count(func.distinct(outbound.c.id)), func.count(outbound_rcpts.c.id))
                .join(outbound_rcpts, outbound_rcpts.c.message_id == outbound.c.id)
                .where(outbound.c.account_id == account_id, outbound.c.created >= since)).first()
        return row[0] or 0, row[1] or 0

    def recover(self, older_than=3600):
        """Start-up: clear leases (a single node owns them all) and delete
        spool files that no row names and that are older than ``older_than``
        (a submission still writing one has no row yet)."""
        with self.store.write() as txn:
            txn.conn.execute(update(outbound_rcpts).where(outbound_rcpts.c.lease.is_not(None))
                             .values(lease=None))
            known = {r[0] for r in txn.conn.execute(
                select(outbound.c.spool).where(outbound.c.spool.is_not(None)))}
        orphans = [n for n in self.spool.names(older_than) if n not in known]
        for name in orphans:
            self.spool.delete(name)
        return len(orphans)

    def prune(self, keep=KEEP_DONE):
        """Forget finished messages older than ``keep`` seconds."""
        cutoff = self.clock() - keep
        with self.store.write() as txn:
            conn = txn.conn
            old = select(outbound.c.id).where(outbound.c.spool.is_(None), outbound.c.created < cutoff)
            conn.execute(delete(outbound_rcpts).where(outbound_rcpts.c.message_id.in_(old)))
            return conn.execute(delete(outbound).where(outbound.c.spool.is_(None),
                                                       outbound.c.created < cutoff)).rowcount


def _tried(rcpt):
    """Has a recipient been handed to the relay (a suppressed one never is)?"""
    return bool(rcpt.lease or (rcpt.attempts and rcpt.state != "suppressed"))


def delivery_status(rcpts):
    """JMAP ``deliveryStatus`` (RFC 8621 section 7) from recipient rows."""
    out = {}
    for r in rcpts:
        delivered = {"delivered": "yes", "bounced": "no", "suppressed": "no",
                     "canceled": "no"}.get(r.state, "queued")
        reply = r.reply or ("250 2.0.0 queued" if r.state in PENDING else "")
        out[r.address] = {"smtpReply": reply, "delivered": delivered, "displayed": "unknown"}
    return out
