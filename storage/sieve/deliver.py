"""Sieve in the delivery path: run the account's active script for one
recipient's copy inside ``Delivery.store`` and carry out what it decides.

``SieveDelivery.plan(account, default_box, incoming, parsed, rcpt, prefix)``
returns a ``delivery.Plan`` (mailboxes with flags, this copy's bytes when
editheader changed them, a REJECTED/DISCARDED status, and the work to do once
the copy is committed). ``Delivery.route`` calls it for every envelope
delivery (LMTP, the SMTP edge, ``roost deliver``, local recipients of the
outbound queue); mailbox items (APPEND, JMAP import, the Sent copy) never run
a script.

Choices:

- Cost without a script: the active script of each account is cached in
  this process (``_Entry``: the script row, its compiled form, the account's
  own addresses). A delivery to an account without a script costs one dict
  lookup. The entry is dropped when the store publishes a ``SieveScript``
  change of that account (``storage.notify.ChangeBus``: scripts.py logs one
  on every write, activation and deletion) and, as a safety net for writers
  in other processes that do not relay their changes, after ``TTL`` seconds.
  Compiled scripts are cached by ``(script id, updated)``, so a new entry
  for an unchanged script does not compile again.
- Mailbox names are the store's (``/`` separates levels; a script written
  for another server's ``.`` separator names a different mailbox).
  ``fileinto`` of a missing mailbox without ``:create`` files into INBOX,
  as RFC 5228 section 4.1 allows ("deliver the message to an
  implementation-defined mailbox"); so does a name the store refuses.
  ``:specialuse`` picks the mailbox with that role when there is one
  (RFC 8579 section 4), else the named one. Several keep/fileinto actions
  make one message in several mailboxes (routes of one copy); the same
  mailbox twice is one membership with the union of the flags.
- ``discard`` (and a redirect that cancels the implicit keep) stores nothing:
  status DISCARDED, which every protocol answers as accepted. ``reject`` and
  ``ereject`` are both refused in the transaction (RFC 5429 says reject
  SHOULD be, where the protocol allows): status REJECTED with the reason
  (one line of printable ASCII), LMTP ``550 5.7.1 <reason>``; ``roost
  deliver`` exits EX_NOPERM with the reason, so the MTA bounces it; a local
  recipient of the outbound queue bounces with a DSN. A reject cancels every
  other action.
- Runtime errors (``Outcome.error``, a script that no longer compiles, an
  include that is gone, or the interpreter raising): implicit keep into the
  default mailbox as if no script had run (RFC 5228 section 2.10.6), and the
  user gets one short notice in the INBOX through the delivery path
  (``scripts.mark_notified`` remembers the error's digest, so one broken
  script does not flood them; errors whose text differs per message are
  held to one notice per script per ``NOTICE_EVERY`` in each process).
- Default Junk rule: when the verdicts say spam (``verdicts["spam"]``) and
  the script left only the implicit keep (no keep/fileinto, keep not
  cancelled), or there is no script, the copy goes to the account's Junk
  role mailbox with ``$junk`` (INBOX with ``$junk`` when it has none). The
  script wins whenever it decided where the message goes: a user who files
  or keeps explicitly (or tests ``spamtest`` themselves) keeps control. The
  rule also overrides a ``+detail`` mailbox. No vacation reply ever answers
  mail judged spam (it would be backscatter).
- Outgoing actions (redirect, vacation, enotify mailto) become rows of the
  outbound queue (``Outbound.submit``, kinds "redirect", "vacation",
  "notify"); ``Delivery.outbound`` None (no queue) logs and skips them. They
  run after the copy is committed and before ``Delivery.store`` returns, so
  before any LMTP 250: a crash before the 250 makes the MTA retry, the
  copy comes back as DUPLICATE and the actions run again (at least once,
  as RFC 5321 section 6.3 accepts for mail); a copy that failed (quota,
  storage) sends nothing. A redirect that cannot be queued makes the
  recipient TEMPORARY (nothing lost: the retry finds the copy a duplicate
  and queues the redirect); a vacation or notify that cannot be queued is
  logged only.
- Redirect keeps the original envelope sender (RFC 5228 section 4.2).
  SPF fails for that sender at the next hop; the relay adds an ARC set for
  kind "redirect" (the verdicts part), which a receiver that trusts us can
  use; there is no SRS rewriting. At most ``MAX_REDIRECTS`` per message.
  Loop protection: no redirect of a message that carries this account's
  ``X-Loop`` marker (it has been redirected by this account before) or
  ``MAX_HOPS`` Received fields (such a refused redirect, like one to an
  address SMTP cannot carry, keeps the message instead, so a loop loses
  nothing); every redirected copy gets the marker and
  keeps its Delivered-To and our Authentication-Results (Return-Path goes:
  it is set at final delivery).
- Vacation (RFC 5230, RFC 3834): never to the null sender,
  MAILER-DAEMON/LISTSERV/majordomo/owner-*/*-request/no-reply senders, the
  user's own addresses, mail with List-Id or List-* fields, Precedence
  bulk/list/junk, Auto-Submitted other than "no",
  X-Auto-Response-Suppress OOF/All, spam, or mail where none of the user's
  addresses (account, aliases that reach it, the envelope recipient,
  ``:addresses``) is in To/Cc/Bcc/Resent-To/Resent-Cc/Resent-Bcc. One reply
  per sender per period and response (``sieve_replies``, keyed by the
  sha256 of the handle, or of the counted subject/from/mime/reason when
  there is no handle; the period is clamped to ``MIN_PERIOD``..
  ``MAX_PERIOD``). The memory row is written before the reply is queued
  (a crash between them sends no reply rather than two). The reply has the
  null envelope sender and NOTIFY=NEVER (RFC 3834 section 3.3, RFC 5230
  section 5.1), ``Auto-Submitted: auto-replied``, In-Reply-To/References,
  Subject "Auto: <subject>" by default.
- enotify mailto (RFC 5436): null envelope sender, ``Auto-Submitted:
  auto-notified``, only the To/Cc/Subject/Body of the URI are used, at most
  ``MAX_NOTIFY_RCPTS`` recipients, never for Auto-Submitted mail.
- Duplicate ids (RFC 7352) are sha256 hashed in ``sieve_duplicates`` with
  their expiry, recorded once the copy is accepted (a failed delivery that
  the MTA retries is not its own duplicate).
- mboxmetadata/servermetadata (RFC 5490) read the account's entries in
  ``storage.metadata`` (``StoreHooks.metadata``); server entries are the
  account's own (``/shared`` server entries do not exist).
- Unfinished: ``:global`` includes (there are no global scripts: include
  raises LookupError, a runtime error).
"""

import email.utils
import hashlib
import logging
import re
import secrets
import threading
import time
import unicodedata
from dataclasses import dataclass
from email.header import Header
from urllib.parse import parse_qsl, unquote

from sqlalchemy import and_, delete, insert, select, update

from .. import hot, mime
from ..mailboxes import check_mailbox_name
from ..model import Mailbox
from ..outbound import Envelope, Recipient, check_address
from ..delivery import DISCARDED, REJECTED, TEMPORARY, Incoming, Plan, Route, shifted
from ..errors import InvalidName, MailboxExists
from ..schema import aliases, sieve_duplicates, sieve_replies
from . import SieveError, compile, scripts
from .actions import Context, FileInto, Hooks, Keep, Notify, Outcome, Redirect, Reject, Vacation

log = logging.getLogger("roost.sieve")

TTL = 60.0                 # seconds an account's cached active script is trusted without an event
COMPILED_CACHE = 512       # compiled scripts kept, by (script id, updated)
MAX_REDIRECTS = 4
MAX_HOPS = 30              # Received fields beyond which a message is not redirected
MAX_NOTIFY_RCPTS = 8
MIN_PERIOD = 60            # vacation: seconds between two replies to one sender, at least
MAX_PERIOD = 180 * 86400
MAX_REASON = 200           # characters of a reject reason in a reply line
LOOP_HEADER = "X-Loop"
JUNK = "$junk"
NOTICE_EVERY = 3600        # seconds between two error notices about one script (in this process)

_LIST_FIELDS = ("list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post",
                "list-owner", "list-archive")
_RECIPIENT_FIELDS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
_DAEMONS = re.compile(r"^(mailer-daemon|listserv|majordomo|owner-.*|.*-request|no-?reply"
                      r"|.*-bounces?|bounces?(\+.*)?|do-?not-?reply)$", re.I)
_KEYWORD_BAD = re.compile(r'[\x00-\x20\x7f(){%*"\]]')
_SPECIAL_USE = {"\\inbox": "inbox", "\\drafts": "drafts", "\\sent": "sent", "\\archive": "archive",
                "\\junk": "junk", "\\trash": "trash", "\\all": "all", "\\flagged": "flagged",
                "\\important": "important"}


@dataclass
class _Entry:
    """One account's cached state: its active script (or None) and what runs it."""
    expires: float
    script: object = None         # scripts.Script
    compiled: object = None       # compile()'s result, or a SieveError
    addresses: tuple = ()


def _sha(*parts):
    h = hashlib.sha256()
    for p in parts:
        b = (p or "").encode("utf-8", "surrogateescape") if not isinstance(p, bytes) else p
        h.update(str(len(b)).encode() + b":" + b)   # counted strings: no two argument lists collide
    return h.hexdigest()


def _bare(sender):
    sender = (sender or "").strip()
    if sender.startswith("<") and sender.endswith(">"):
        sender = sender[1:-1]
    return sender


def reject_reason(text):
    """A reject reason fit for one reply line: printable ASCII, bounded."""
    text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode()
    text = " ".join("".join(c if 32 <= ord(c) < 127 else " " for c in text).split())
    return text[:MAX_REASON] or "message refused by the recipient's mail filter"


def _eol(data):
    nl = data.find(b"\n")
    return b"\r\n" if nl > 0 and data[nl - 1:nl] == b"\r" else b"\n"


class StoreHooks(Hooks):
    """What the interpreter may ask the store about one account."""

    def __init__(self, store, account, now):
        self.store, self.account, self.now = store, account, now
        self._boxes = None

    def _names(self):
        if self._boxes is None:
            self._boxes = {b.name: b for b in self.store.mailboxes(self.account.id)}
        return self._boxes

    def mailbox_exists(self, name):
        return name in self._names() or (name.upper() == "INBOX")

    def specialuse_exists(self, flag, mailbox=None):
        role = _SPECIAL_USE.get((flag or "").lower())
        if role is None:
            return False
        if mailbox is not None:
            box = self._names().get("INBOX" if mailbox.upper() == "INBOX" else mailbox)
            return box is not None and box.role == role
        return any(b.role == role for b in self._names().values())

    def duplicate(self, key):
        with self.store.reader() as conn:
            return conn.execute(select(sieve_duplicates.c.expires).where(and_(
                sieve_duplicates.c.account_id == self.account.id,
                sieve_duplicates.c.key == _sha(key),
                sieve_duplicates.c.expires > self.now))).first() is not None

    def include(self, name, location):
        if (location or "personal").lstrip(":").lower() != "personal":
            raise LookupError(f"no global script {name!r}: Roost has no global scripts")
        try:
            return scripts.get_script(self.store, self.account.id, name).content
        except (scripts.ScriptNotFound, InvalidName):
            raise LookupError(name) from None

    def metadata(self, mailbox, name):
        pk = None
        if mailbox is not None:
            box = self._names().get("INBOX" if mailbox.upper() == "INBOX" else mailbox)
            if box is None:
                return None
            pk = box.id
        return self.store.metadata(self.account.id, pk, [name]).get(name)


class SieveDelivery:
    """The Sieve step of one ``Delivery`` (see the module docstring)."""

    def __init__(self, delivery, run=None):
        self.delivery = delivery
        self.store = delivery.mailstore
        self._run = run               # tests give one; else storage.sieve.interpreter.run
        self._entries = {}            # account id -> _Entry
        self._subscribed = set()
        self._compiled = {}           # (script id, updated) -> compiled or SieveError
        self._lock = threading.Lock()
        self._told = {}               # script id -> time.monotonic() of the last error notice
        self.evaluations = 0          # scripts run, and the seconds they took (bench, metrics)
        self.eval_seconds = 0.0

    # --- the cached active script ------------------------------------------------------

    def entry(self, account):
        """The account's ``_Entry``: one dict lookup while it is fresh."""
        entry = self._entries.get(account.id)
        if entry is not None and entry.expires > time.monotonic():
            return entry
        if account.id not in self._subscribed:
            with self._lock:
                if account.id not in self._subscribed:
                    self._subscribed.add(account.id)
                    self.store.bus.subscribe(account.id, self._changed)
        with self.store.reader() as conn:
            row = hot.active_script(hot.DriverSQL(conn, self.store.sqlite), account.id)
        script = scripts.Script(*row[:3], bool(row[3]), *row[4:]) if row else None
        entry = _Entry(time.monotonic() + TTL, script)
        if script is not None:
            entry.compiled = self._compile(script)
            entry.addresses = self._own_addresses(account)
        self._entries[account.id] = entry
        return entry

    def _changed(self, change):
        if scripts.KIND in change.kinds:
            self._entries.pop(change.account_id, None)

    def forget(self, account_id=None):
        """Drop cached entries (all, or one account's)."""
        if account_id is None:
            self._entries.clear()
        else:
            self._entries.pop(account_id, None)

    def _compile(self, script):
        key = (script.id, script.updated)
        compiled = self._compiled.get(key)
        if compiled is None:
            try:
                compiled = compile(script.content)
            except SieveError as exc:
                compiled = exc
            with self._lock:
                if len(self._compiled) >= COMPILED_CACHE:
                    self._compiled.pop(next(iter(self._compiled)))
                self._compiled[key] = compiled
        return compiled

    def _own_addresses(self, account):
        """The account's address and the aliases that reach it (up to three
        alias levels; catch-alls excluded)."""
        out, frontier = [account.address], [account.address]
        with self.store.reader() as conn:
            for _ in range(3):
                if not frontier:
                    break
                rows = conn.execute(select(aliases.c.address).where(
                    aliases.c.target.in_(frontier))).all()
                frontier = [r[0] for r in rows if not r[0].startswith("@") and r[0] not in out]
                out.extend(frontier)
        return tuple(out)

    # --- one copy ------------------------------------------------------------------------

    def plan(self, account, default_box, incoming, parsed, rcpt, prefix):
        """The ``Plan`` of one recipient's copy (``default_box``: where the
        implicit keep goes, the +detail or named mailbox, else INBOX)."""
        verdicts = incoming.verdicts or {}
        entry = self.entry(account)
        flags = tuple(incoming.flags)
        if entry.script is None:
            if verdicts.get("spam"):
                return Plan([self._junk_route(account, flags)], filtered=True)
            return Plan([Route(default_box, flags)])
        now = time.time()
        data = prefix + incoming.data
        outcome, error = self._evaluate(entry, account, incoming, parsed, rcpt, prefix, data, now)
        plan = Plan([], filtered=True)
        if error is not None:
            log.warning("sieve script %r of %s failed: %s", entry.script.name, account.address, error)
            plan.routes = [self._junk_route(account, flags) if verdicts.get("spam")
                           else Route(default_box, flags)]     # as if there were no script
            plan.after = lambda result: self._tell_error(account, entry.script, error)
            return plan
        rejects = [a for a in outcome.actions if isinstance(a, Reject)]
        if rejects:
            plan.status, plan.reason = REJECTED, reject_reason(rejects[0].reason)
            return plan
        edited = outcome.data if outcome.data is not None and outcome.data != data else None
        plan.data = edited
        boxes = {}                       # mailbox id -> Route, in order of the actions
        filed = False
        for action in outcome.actions:
            if isinstance(action, Keep):
                filed = True
                self._add(boxes, Route(default_box, flags + _keywords(action.flags)))
            elif isinstance(action, FileInto):
                filed = True
                self._add(boxes, Route(self._fileinto_box(account, action), flags + _keywords(action.flags)))
        outgoing, refused = self._allowed(account, outcome.actions, edited or data)
        if refused and not filed:
            outcome.keep = True      # a redirect refused (loop, bad address) keeps the message
        if outcome.keep and not filed:
            if verdicts.get("spam"):
                self._add(boxes, self._junk_route(account, flags + _keywords(outcome.keep_flags)))
            else:
                self._add(boxes, Route(default_box, flags + _keywords(outcome.keep_flags)))
        plan.routes = list(boxes.values())
        if not plan.routes:
            plan.status, plan.reason = DISCARDED, "discarded by the recipient's mail filter"
        if outgoing or outcome.duplicates:
            plan.after = lambda result: self._after(account, entry, incoming, parsed, rcpt,
                                                    edited or data, outgoing, outcome.duplicates,
                                                    verdicts, now, result)
        return plan

    def _allowed(self, account, actions, data):
        """The outgoing actions that may go, and whether a redirect was refused
        (a loop: this account's marker, or ``MAX_HOPS`` Received fields; or an
        address no SMTP command can carry)."""
        if any(isinstance(a, Redirect) for a in actions):
            headers = _headers(data)
            loops = {v.strip().lower() for v in mime.header_all(headers, LOOP_HEADER)}
            hops = len(mime.header_all(headers, "received"))
        out, looped, redirects = [], False, 0
        for action in actions:
            if isinstance(action, Redirect):
                if account.address.lower() in loops or hops >= MAX_HOPS:
                    log.info("sieve: %s: not redirecting to %s: a loop (%s)", account.address,
                             action.address, "our marker" if account.address.lower() in loops
                             else f"{hops} Received fields")
                    looped = True
                    continue
                try:
                    check_address(_bare(action.address))
                except ValueError:
                    log.info("sieve: %s: not redirecting to %r: not an address", account.address,
                             action.address)
                    looped = True
                    continue
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    log.info("sieve: %s: more than %d redirects, %s skipped", account.address,
                             MAX_REDIRECTS, action.address)
                    continue
                out.append(action)
            elif isinstance(action, (Vacation, Notify)):
                out.append(action)
        return out, looped

    def _evaluate(self, entry, account, incoming, parsed, rcpt, prefix, data, now):
        """(Outcome, None) or (None, error text)."""
        if isinstance(entry.compiled, SieveError):
            return None, f"the script does not compile: {entry.compiled}"
        run = self._run
        if run is None:
            try:
                from .interpreter import run
            except ImportError:
                return None, "the Sieve interpreter is not installed"
        ctx = Context(
            data=data, parsed=_with_prefix(parsed, prefix) if parsed is not None else None,
            sender=_bare(incoming.sender), recipient=rcpt, account=account.address,
            addresses=entry.addresses, verdicts=dict(incoming.verdicts or {}),
            environment=self._environment(account, incoming), now=now,
            hooks=StoreHooks(self.store, account, now))
        t0 = time.perf_counter()
        try:
            outcome = run(entry.compiled, ctx)
        except Exception as exc:  # noqa: BLE001 - an interpreter bug keeps the message
            log.exception("the Sieve interpreter raised on a script of %s", account.address)
            return None, f"internal error: {type(exc).__name__}"
        finally:
            self.evaluations += 1
            self.eval_seconds += time.perf_counter() - t0
        if not isinstance(outcome, Outcome):
            return None, "internal error: no outcome"
        if outcome.error:
            return None, outcome.error
        return outcome, None

    def _environment(self, account, incoming):
        v = incoming.verdicts or {}
        host = getattr(self.delivery, "hostname", None) or "localhost"
        return {"domain": account.address.rpartition("@")[2], "host": host, "location": "MDA",
                "name": "Roost", "phase": "during", "remote-host": v.get("remote_host") or "",
                "remote-ip": v.get("remote_ip") or "", "version": "1"}

    @staticmethod
    def _add(boxes, route):
        have = boxes.get(route.mailbox.id)
        if have is None:
            boxes[route.mailbox.id] = route
        else:
            seen = {f.lower() for f in have.flags}
            boxes[route.mailbox.id] = type(route)(have.mailbox, have.flags + tuple(
                f for f in route.flags if f.lower() not in seen))

    def _inbox(self, account):
        return self.delivery._target_mailbox(account, None)

    def _mailbox(self, account, name=None, role=None):
        """The account's mailbox by name or role (one indexed read), or None."""
        if role is None:
            try:
                name = check_mailbox_name(name)
            except InvalidName:
                return None
        with self.store.reader() as conn:
            row = hot.mailbox_row(hot.DriverSQL(conn, self.store.sqlite), account.id, name, role)
        return Mailbox(*row[:5], bool(row[5]), *row[6:]) if row else None

    def _junk_route(self, account, flags):
        box = self._mailbox(account, role="junk") or self._inbox(account)
        return Route(box, tuple(flags) + (JUNK,))

    def _fileinto_box(self, account, action):
        """The mailbox of one fileinto: its role's when :specialuse names one
        that exists, else the named one (created with :create), else INBOX."""
        if action.specialuse:
            role = _SPECIAL_USE.get(action.specialuse.lower())
            box = self._mailbox(account, role=role) if role else None
            if box is not None:
                return box
        box = self._mailbox(account, action.mailbox)
        if box is not None:
            return box
        if action.create:
            try:
                return self.store.create_mailbox(account.id, action.mailbox)
            except MailboxExists:
                return self.store.mailbox(account.id, action.mailbox)
            except InvalidName as exc:
                log.info("sieve: %s cannot create mailbox %r (%s); filed into INBOX",
                         account.address, action.mailbox, exc)
        else:
            log.info("sieve: %s has no mailbox %r; filed into INBOX", account.address, action.mailbox)
        return self._inbox(account)

    # --- after the copy is committed ----------------------------------------------------

    def _after(self, account, entry, incoming, parsed, rcpt, data, outgoing, duplicates,
               verdicts, now, result):
        """Redirects, vacation, notifications and duplicate ids of an accepted copy."""
        if duplicates:
            self._remember_duplicates(account, duplicates, now)
        sender = _bare(incoming.sender)
        headers = _headers(data)
        for action in outgoing:
            try:
                if isinstance(action, Redirect):
                    self._redirect(account, sender, data, action)
                elif isinstance(action, Vacation):
                    self._vacation(account, entry, sender, rcpt, parsed, headers, action, verdicts, now)
                elif isinstance(action, Notify):
                    self._notify(account, headers, action, now)
            except Exception as exc:  # noqa: BLE001 - one action's failure is reported below
                if isinstance(action, Redirect):
                    log.error("sieve: cannot queue the redirect of %s to %s: %s",
                              account.address, action.address, exc)
                    result.status, result.reason = TEMPORARY, "cannot queue a redirect, try again"
                    return
                log.exception("sieve: cannot queue the %s of %s", type(action).__name__.lower(),
                              account.address)

    def _queue(self, kind, account, sender, rcpts, data, notify=None):
        outbound = getattr(self.delivery, "outbound", None)
        if outbound is None:
            log.info("sieve: no outbound queue; the %s of %s to %s is skipped", kind,
                     account.address, ", ".join(rcpts))
            return None
        return outbound.submit(Envelope(sender=sender, recipients=[
            Recipient(r, notify=notify) for r in rcpts], account_id=account.id, kind=kind), data)

    def _redirect(self, account, sender, data, action):
        """Queue the copy for ``action.address`` (``_allowed`` checked loops)."""
        target = _bare(action.address)
        eol = _eol(data)
        body = _strip_return_path(data)
        out = LOOP_HEADER.encode() + b": " + account.address.encode("utf-8") + eol + body
        self._queue("redirect", account, sender, [target], out)

    def _vacation(self, account, entry, sender, rcpt, parsed, headers, action, verdicts, now):
        why = self._no_vacation(account, entry, sender, rcpt, headers, action, verdicts)
        if why:
            log.info("sieve: no vacation reply from %s to %s: %s", account.address,
                     sender or "<>", why)
            return
        if getattr(self.delivery, "outbound", None) is None:   # remember no reply that is not sent
            return self._queue("vacation", account, "", [sender], b"")
        handle = _sha("handle", action.handle) if action.handle else _sha(
            "args", action.subject, action.from_addr, "mime" if action.mime else "", action.reason)
        period = min(max(int(action.seconds or 0), MIN_PERIOD), MAX_PERIOD)
        key = sender.lower()
        with self.store.write() as txn:
            conn = txn.conn
            row = conn.execute(select(sieve_replies.c.expires).where(and_(
                sieve_replies.c.account_id == account.id, sieve_replies.c.handle == handle,
                sieve_replies.c.sender == key))).first()
            if row is not None and row.expires > now:
                log.info("sieve: %s answered %s within the period already", account.address, key)
                return
            if row is None:
                conn.execute(insert(sieve_replies).values(account_id=account.id, handle=handle,
                                                          sender=key, expires=now + period))
            else:
                conn.execute(update(sieve_replies).where(and_(
                    sieve_replies.c.account_id == account.id, sieve_replies.c.handle == handle,
                    sieve_replies.c.sender == key)).values(expires=now + period))
            conn.execute(delete(sieve_replies).where(and_(
                sieve_replies.c.account_id == account.id, sieve_replies.c.expires <= now)))
        self._queue("vacation", account, "", [sender],
                    vacation_reply(account, sender, headers, action, self._hostname(), now),
                    notify="NEVER")

    def _no_vacation(self, account, entry, sender, rcpt, headers, action, verdicts):
        """Why no reply may go (RFC 5230 section 4.5/4.6, RFC 3834), or None."""
        if not sender or "@" not in sender:
            return "null sender"
        if _DAEMONS.match(sender.rpartition("@")[0]):
            return "an automated sender"
        own = {a.lower() for a in (*entry.addresses, account.address, _bare(rcpt),
                                   *(_bare(a) for a in action.addresses or ())) if a}
        base = {_unplussed(a) for a in own}
        if sender.lower() in own or _unplussed(sender.lower()) in base:
            return "the user's own address"
        if verdicts.get("spam"):
            return "judged spam"
        names = {n.lower() for n, _v in headers}
        if names.intersection(_LIST_FIELDS):
            return "mailing list mail"
        if (mime.header(headers, "precedence") or "").strip().lower() in ("bulk", "list", "junk"):
            return "Precedence bulk/list/junk"
        auto = (mime.header(headers, "auto-submitted") or "no").split(";")[0].strip().lower()
        if auto != "no":
            return f"Auto-Submitted: {auto}"
        suppress = (mime.header(headers, "x-auto-response-suppress") or "").lower()
        if "oof" in suppress or "all" in suppress:
            return "X-Auto-Response-Suppress"
        listed = set()
        for name in _RECIPIENT_FIELDS:
            for value in mime.header_all(headers, name):
                listed.update(a.lower() for _n, a in email.utils.getaddresses([value]) if a)
        if not (listed & own or {_unplussed(a) for a in listed} & base):
            return "none of the user's addresses is in To/Cc/Bcc"
        return None

    def _notify(self, account, headers, action, now):
        if not action.method.lower().startswith("mailto:"):
            log.info("sieve: %s: notify method %r is not supported", account.address, action.method)
            return
        auto = (mime.header(headers, "auto-submitted") or "no").split(";")[0].strip().lower()
        if auto != "no":
            log.info("sieve: %s: no notification about Auto-Submitted mail", account.address)
            return
        to, fields = _mailto(action.method)
        rcpts = [a for a in to if "@" in a][:MAX_NOTIFY_RCPTS]
        if not rcpts:
            return
        self._queue("notify", account, "", rcpts,
                    notification(account, rcpts, headers, action, fields, self._hostname(), now),
                    notify="NEVER")

    def _remember_duplicates(self, account, duplicates, now):
        with self.store.write() as txn:
            conn = txn.conn
            conn.execute(delete(sieve_duplicates).where(and_(
                sieve_duplicates.c.account_id == account.id, sieve_duplicates.c.expires <= now)))
            for key, seconds in duplicates:
                k = _sha(key)
                conn.execute(delete(sieve_duplicates).where(and_(
                    sieve_duplicates.c.account_id == account.id, sieve_duplicates.c.key == k)))
                conn.execute(insert(sieve_duplicates).values(account_id=account.id, key=k,
                                                             expires=now + max(int(seconds), 1)))

    def _tell_error(self, account, script, error):
        """One notice per distinct error of the script, into the INBOX."""
        last = self._told.get(script.id)
        if last is not None and time.monotonic() - last < NOTICE_EVERY:
            return          # errors that differ per message must not flood the INBOX either
        try:
            if not scripts.mark_notified(self.store, account.id, script.id, _sha(script.name, error)):
                return
            self._told[script.id] = time.monotonic()
            data = error_notice(account, script.name, error, self._hostname())
            (res,) = self.delivery.store(Incoming(data, account=account,
                                                  mailboxes=(self._inbox(account),)))
            if not res.ok:
                log.warning("sieve: the error notice for %s was not stored: %s", account.address,
                            res.reason)
        except Exception:  # noqa: BLE001 - the message itself is kept; only the notice is lost
            log.exception("sieve: cannot tell %s about the error of its script", account.address)

    def _hostname(self):
        return getattr(self.delivery, "hostname", None) or "localhost"


# --- helpers --------------------------------------------------------------------------

def _keywords(flags):
    """Flag names a script gave, fit for the store (space-separated lists split,
    IMAP atoms only, system flags as the store spells them)."""
    out = []
    for item in flags or ():
        for name in str(item).split():
            if name.startswith("\\"):
                if name[1:].isalpha():
                    out.append(name)
            elif name and len(name) <= 128 and not _KEYWORD_BAD.search(name):
                out.append(name)
    return tuple(out[:64])


def _unplussed(address):
    local, at, domain = address.rpartition("@")
    return local.partition("+")[0] + at + domain


def _headers(data):
    end = data.find(b"\r\n\r\n")
    end2 = data.find(b"\n\n")
    cut = [e for e in (end, end2) if e >= 0]
    return mime.parse_headers(data, 0, min(cut) + 1 if cut else len(data))


def _with_prefix(parsed, prefix):
    """``parsed`` of the stored copy: offsets shifted, the prefix's fields first."""
    if not prefix:
        return parsed
    out = shifted(parsed, len(prefix))
    if out is parsed:
        return parsed
    out.headers = mime.parse_headers(prefix, 0, len(prefix)) + list(parsed.headers)
    return out


def _strip_return_path(data):
    if data[:12].lower() != b"return-path:":
        return data
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return data
        pos = nl + 1
        if data[pos:pos + 1] not in (b" ", b"\t"):
            return data[pos:]


def _encode(text):
    try:
        text.encode("ascii")
        return text
    except UnicodeEncodeError:
        return Header(text, "utf-8").encode()


def _one_line(text, limit=900):
    return " ".join((text or "").split())[:limit]


def _address_field(value):
    """``value`` ("Name <addr>" or "addr") with a non-ASCII name RFC 2047-encoded."""
    name, addr = email.utils.parseaddr(value)
    if not addr:
        return _encode(value)
    return email.utils.formataddr((name, addr), charset="utf-8") if name else addr


def _common(from_addr, to, subject, hostname, now, auto):
    return [f"From: {_address_field(from_addr)}", f"To: {', '.join(to)}", f"Subject: {_encode(_one_line(subject))}",
            f"Date: {email.utils.formatdate(now)}",
            f"Message-ID: <{secrets.token_hex(12)}@{hostname}>", f"Auto-Submitted: {auto}",
            "MIME-Version: 1.0"]


def _text_body(text):
    body = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    if not body.endswith("\n"):
        body += "\n"
    ascii_ = all(ord(c) < 128 for c in body)
    return ([f"Content-Type: text/plain; charset={'us-ascii' if ascii_ else 'utf-8'}",
             f"Content-Transfer-Encoding: {'7bit' if ascii_ else '8bit'}"],
            body.replace("\n", "\r\n").encode("utf-8"))


def vacation_reply(account, sender, headers, action, hostname, now):
    """The RFC 5230 section 5 reply to ``sender``."""
    subject = action.subject
    if subject is None:
        original = mime.decode_words(mime.header(headers, "subject") or "").strip()
        subject = f"Auto: {original}" if original else "Automated reply"
    lines = _common(action.from_addr or account.address, [sender], subject, hostname, now,
                    "auto-replied")
    msgid = mime.message_ids(mime.header(headers, "message-id") or "")
    if msgid:
        refs = mime.message_ids(" ".join(mime.header_all(headers, "references")))
        refs = [r for r in refs if r != msgid[0]][-20:] + [msgid[0]]
        lines += [f"In-Reply-To: <{msgid[0]}>", "References: " + " ".join(f"<{r}>" for r in refs)]
    if action.mime:
        entity = action.reason.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")
        return ("\r\n".join(lines) + "\r\n").encode("utf-8") + entity
    head, body = _text_body(action.reason)
    return ("\r\n".join(lines + head) + "\r\n\r\n").encode("utf-8") + body


def _mailto(uri):
    """(recipients, {field: value}) of a mailto: URI (RFC 6068)."""
    rest = uri[len("mailto:"):]
    path, _, query = rest.partition("?")
    to = [unquote(a).strip() for a in path.split(",") if a.strip()]
    fields = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        name = name.lower()
        if name == "to":
            to += [a.strip() for a in value.split(",") if a.strip()]
        elif name in ("cc", "subject", "body"):
            fields[name] = value
    if "cc" in fields:
        to += [a.strip() for a in fields["cc"].split(",") if a.strip()]
    return [a for a in to if not any(c in a for c in "\r\n<> ")], fields


def notification(account, rcpts, headers, action, fields, hostname, now):
    """An RFC 5436 mailto notification about the message."""
    original = mime.decode_words(mime.header(headers, "subject") or "")
    sender = mime.header(headers, "from") or ""
    subject = fields.get("subject") or action.message or f"[SIEVE] New mail: {original}"
    text = fields.get("body") or action.message or \
        f"You have new mail from {_one_line(sender)}: {_one_line(original)}"
    lines = _common(action.from_addr or account.address, rcpts, subject, hostname, now,
                    "auto-notified")
    if action.importance == "1":
        lines.append("X-Priority: 1")
    head, body = _text_body(text)
    return ("\r\n".join(lines + head) + "\r\n\r\n").encode("utf-8") + body


def error_notice(account, script_name, error, hostname):
    """The short message that tells a user their script failed."""
    text = (f"Your mail filter (Sieve script \"{script_name}\") failed while filing a message:\n\n"
            f"    {_one_line(error, 500)}\n\n"
            "The message was kept in your INBOX, and so will every message the script fails on.\n"
            "Please fix the script. You are told once about each error.\n")
    lines = _common(f"Mail filter <MAILER-DAEMON@{hostname}>", [account.address],
                    "Your mail filter has an error", hostname, time.time(), "auto-generated")
    head, body = _text_body(text)
    return ("\r\n".join(lines + head) + "\r\n\r\n").encode("utf-8") + body
