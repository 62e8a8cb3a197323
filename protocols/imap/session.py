"""One IMAP connection: framing in, an ordered command pipeline, replies out.

Owns the connection state (not authenticated / authenticated / selected),
the enabled extensions, the pipeline and the untagged updates. Bytes are
framed as they arrive (``wire.CommandFramer``) and queued; one task per
connection takes units from the queue, parses and runs them strictly in
order, so pipelined commands never overtake each other and their responses
never interleave. Handlers that read more client input (IDLE's DONE,
AUTHENTICATE's responses) take the next unit from the same queue.

Limits on what a client can make the server hold (DESIGN section 7):

* Before authentication literals are at most PREAUTH_LITERAL_LIMIT octets: a
  larger ``{n}`` gets ``NO [TOOBIG]`` and no ``+``; a larger ``{n+}`` (whose
  octets would follow anyway) gets ``BAD [TOOBIG]`` and ``* BYE [TOOBIG]``
  (RFC 7888 section 4, choice 2). Commands are framed one at a time there:
  the next is framed only when the pipeline wants it, so a LOGIN's success
  raises the limits before the command after it is framed, and bytes that
  arrive meanwhile wait in the framer (reading pauses past MAX_UNFRAMED).
  A command must arrive whole within ``unauthenticated_timeout`` seconds of
  its first octet, or the connection gets ``* BYE`` (slow senders). The
  listener admits ``unauthenticated_per_ip`` connections per address and
  ``unauthenticated_total`` in all that have not logged in (``PreauthGate``,
  shared by the IMAP and IMAPS listeners); past that the greeting is
  ``* BYE [UNAVAILABLE]``.
* Input: reading pauses when MAX_QUEUED units or MAX_QUEUED_BYTES are queued.
* Output: the session is its transport's streaming producer. When Twisted's
  write buffer is over its mark (64 KB) it pauses the session, and the
  pipeline waits (``drain``) before the next command and between FETCH
  batches (at most FETCH_BATCH_BYTES of message data each), so a client that
  does not read holds at most about one batch or one message in memory.

Store change events (``store.bus``) only mark the selected view dirty and
wake IDLE; the session reports EXISTS/EXPUNGE/FETCH FLAGS at the points RFC
3501 section 7 allows: before the tagged reply of any command, with EXPUNGE
held back during FETCH, STORE and SEARCH, and at once while idling.

NOTIFY (``commands.notify``) queues a ``commands.TICK`` unit into the
pipeline (or wakes IDLE) when it has something to say, so its responses go
out between commands like every other untagged update. COMPRESS puts a
``compress.Deflate`` between the transport and the framer and ``write``;
inflated input is framed a step at a time under the same input limits.
INPROGRESS notices come from a ``progress.Progress`` armed around each
long-running command; UIDONLY refusals (``uidonly``) happen before dispatch.

Store errors map to replies in ``store_error_reply``, in one place: handlers
let them propagate, and the command's registration (``commands.Spec``) tells
the mapper what they mean for that command. The session never imports
SQLAlchemy or opens files: the store is reached only through ``ctx.run`` (a
worker thread) and the server's callables in ``IMAPContext``.

Imports go one way: the session imports the command registry (which loads
the handler modules); no command module imports the session, and shared
helpers (``wire.uid_set_text``) live in the neutral modules.

Logs: one "connection" event at open and close, one "command" event per
command (timed around ``_one``; the outcome is the status of the tagged reply
``send`` saw), with the fields listed in ``roost.server.logs``.
"""

import asyncio
import itertools
import logging
from dataclasses import dataclass, field

from twisted.internet import protocol

from roost.protocols.sasl import PreauthGate
from roost.storage import errors
from roost.storage.flags import names as flag_names

from . import commands, compress, shared, utf7
from . import progress as inprogress
from . import uidonly
from .commands import AUTHENTICATED, NOT_AUTHENTICATED, Bad, No
from .parser import parse
from .wire import LITERAL_LIMIT, Abandoned, CommandFramer, LiteralRequest, ParseError, uid_set_text

log = logging.getLogger("roost.imap")
_conn_ids = itertools.count(1)

MAX_QUEUED = 64            # units queued before reading pauses
MAX_QUEUED_BYTES = 8 << 20  # ... or octets queued
MAX_UNFRAMED = 128 * 1024  # octets waiting to be framed (before authentication)
PREAUTH_LITERAL_LIMIT = 8 * 1024
MAX_BAD = 20               # consecutive BAD replies before the server hangs up
FLUSH_AT = 256 * 1024
AUTOLOGOUT = 31 * 60
AUTOLOGOUT_UNAUTHENTICATED = 120
AUTOLOGOUT_CHECK = 30


@dataclass
class IMAPContext:
    """What one listener's sessions share; filled in by roost.server."""
    store: object                      # roost.storage.store.Store (its API only)
    run: object                        # async run(fn, *args) on a worker thread
    append: object                     # blocking append(account, mailbox, data, flags, date)
    checker: object                    # twisted.cred ICredentialsChecker (username/password)
    search: object = None              # blocking search(store, account_id, criteria, mailbox_pk)
    authenticator: object = None       # failed()/blocked() throttling
    tls: object = None                 # Twisted TLS context factory, or None
    implicit_tls: bool = False
    hostname: str = "localhost"
    append_limit: int = 50 * 1024 * 1024
    literal_limit: int = LITERAL_LIMIT
    connections_per_user_ip: int = 0   # 0: no limit
    unauthenticated_per_ip: int = 10   # connections not logged in, per address (0: no limit)
    unauthenticated_total: int = 200   # ... and in all (0: no limit)
    unauthenticated_timeout: float = 60  # seconds a command may take to arrive, before login
    gate: object = None                # PreauthGate; shared by the listeners when given
    sessions: set = field(default_factory=set)
    append_many: object = None         # blocking append_many(account, mailbox, [(data, flags, date)],
    #                                    replace=None): all stored or none (MULTIAPPEND), and the
    #                                    (mailbox pk, uids) of replace removed with them (REPLACE)

    def __post_init__(self):
        if self.gate is None:
            self.gate = PreauthGate()


class Accounting:
    """What the logs need of one connection: one attribute of the session, so
    its instance dict keeps CPython's shared keys (a session with more than 30
    attributes costs over 1 KiB more, which counts at 10k idle connections)."""
    __slots__ = ("conn", "opened", "bytes_in", "bytes_out", "command", "reply")

    def __init__(self):
        self.conn, self.opened, self.bytes_in, self.bytes_out = next(_conn_ids), 0.0, 0, 0
        self.command = self.reply = None   # the command being run, its tagged reply


class Subscriptions:
    """A logged-in session's ``store.bus`` subscriptions: its account's and,
    while it has a shared mailbox selected, the owner's (``follow``). Calling
    it ends both. Kept out of the session's attributes (see ``Accounting``)."""
    __slots__ = ("bus", "callback", "own", "other")

    def __init__(self, bus, account_id, callback):
        self.bus, self.callback = bus, callback
        self.own = bus.subscribe(account_id, callback)
        self.other = None                  # (account id, unsubscribe)

    def follow(self, account_id):
        if self.other is not None and self.other[0] != account_id:
            self.other[1]()
            self.other = None
        if account_id is not None and self.other is None:
            self.other = (account_id, self.bus.subscribe(account_id, self.callback))

    def __call__(self):
        self.own()
        self.follow(None)


class IMAPSession(protocol.Protocol):
    # Set only by the commands that turn them on (class defaults keep the
    # instance dict small): COMPRESS's ``compress.Deflate``, NOTIFY's state.
    zlib = None
    notify = None
    progress = None      # the running command's ``progress.Progress`` (INPROGRESS)

    def __init__(self, ctx):
        self.ctx = ctx
        self.state = NOT_AUTHENTICATED
        self.account = None
        self.selected = None
        self.enabled = set()
        self.tls = ctx.implicit_tls
        self.framer = CommandFramer(literal_limit=min(ctx.literal_limit, ctx.append_limit,
                                                      PREAUTH_LITERAL_LIMIT))
        self.queue = asyncio.Queue()
        self.out = []
        self.out_size = 0
        self.task = None
        self.idle_wake = None
        self.unsubscribe = None
        self.bad_count = 0
        self.auth_failures = 0
        self.peer = "?"
        self.closing = False
        self.paused = False
        self.queued_bytes = 0
        self.loop = asyncio.get_event_loop()
        self.timer = None
        self.last_input = 0.0
        self.obs = Accounting()
        self.gated = False          # counted in the PreauthGate
        self.wants_input = False    # the pipeline (or a handler) waits for a unit
        self.command_started = None  # when the incomplete command now framed began (pre-auth)
        self.output_paused = False
        self.producing = False      # registered as the transport's producer
        self.drained = asyncio.Event()
        self.drained.set()

    # --- connection ---------------------------------------------------------

    def connectionMade(self):
        try:
            self.transport.setTcpNoDelay(True)
        except (AttributeError, OSError):
            pass
        peer = self.transport.getPeer()
        self.peer = getattr(peer, "host", "?")
        ctx = self.ctx
        admitted = ctx.gate.enter(self.peer, ctx.unauthenticated_per_ip, ctx.unauthenticated_total)
        if admitted is not True:
            self.write(f"* BYE [UNAVAILABLE] {admitted}\r\n".encode())
            self.closing = True
            self.transport.loseConnection()
            return
        self.gated = True
        self.transport.registerProducer(self, True)
        self.producing = True
        ctx.sessions.add(self)
        caps = " ".join(commands.capabilities(self))
        self.write(f"* OK [CAPABILITY {caps}] {ctx.hostname} Roost IMAP ready\r\n".encode())
        self.task = asyncio.ensure_future(self._pipeline())
        self.last_input = self.loop.time()
        self.timer = self.loop.call_later(self._check_every, self._check_autologout)
        self._log_connection("open")

    @property
    def _check_every(self):
        if self.account is None:
            return min(AUTOLOGOUT_CHECK, max(self.ctx.unauthenticated_timeout / 4, 0.01))
        return AUTOLOGOUT_CHECK

    def _check_autologout(self):
        """RFC 3501 5.4 autologout, checked every AUTOLOGOUT_CHECK seconds, not per
        command; before login also the time the command being framed has taken."""
        if self.closing:
            return
        now = self.loop.time()
        if now - self.last_input > self.autologout:
            self.bye("autologout; idle for too long")
            return
        if self.account is None and self.command_started is not None and \
                now - self.command_started > self.ctx.unauthenticated_timeout:
            self.bye(f"command not complete after {self.ctx.unauthenticated_timeout:g} seconds")
            return
        self.timer = self.loop.call_later(self._check_every, self._check_autologout)

    def connectionLost(self, reason=None):
        self._log_connection("close")
        self.closing = True
        self.drained.set()
        if self.timer is not None:
            self.timer.cancel()
        self._ungate()
        self.ctx.sessions.discard(self)
        if self.unsubscribe:
            self.unsubscribe()
            self.unsubscribe = None
        if self.notify is not None:
            self.notify.stop(self)
        if self.task and not self.task.done():
            self.task.cancel()

    def _ungate(self):
        if self.gated:
            self.gated = False
            self.ctx.gate.leave(self.peer)

    def dataReceived(self, data):
        if self.closing:
            return
        self.last_input = self.loop.time()
        self.obs.bytes_in += len(data)
        if self.zlib is not None:
            self.zlib.feed(data)
            self._inflate()
            return
        self.framer.buf += data
        self._frame()

    def _inflate(self):
        """COMPRESS: frame inflated input a step at a time while the queue has room."""
        while self.zlib.pending and not self.paused and not self.closing:
            try:
                data = self.zlib.inflate()
            except compress.Error as exc:
                self.bye(str(exc))
                return
            self.framer.buf += data
            self._frame()

    def _frame(self):
        """Frame the bytes received so far into the queue: all of them once
        logged in; before that one command, and only when the pipeline waits."""
        preauth = self.account is None
        if not preauth or (self.wants_input and self.queue.empty()):
            for event in self.framer.events():
                if isinstance(event, LiteralRequest):
                    self.write(b"+ Ready for literal data\r\n")
                    continue
                if isinstance(event, list):
                    self.queued_bytes += sum(len(seg) for seg in event)
                self.queue.put_nowait(event)
                if preauth:
                    self.command_started = None
                    break
            else:
                if not self.framer.pending:
                    self.command_started = None
                elif preauth and self.command_started is None:
                    self.command_started = self.loop.time()
        self._flow()

    def _flow(self):
        """Pause reading while too much input waits; resume when half of it is gone."""
        unframed = len(self.framer.buf) if self.account is None else 0
        if not self.paused:
            if self.queue.qsize() > MAX_QUEUED or self.queued_bytes > MAX_QUEUED_BYTES \
                    or unframed > MAX_UNFRAMED:
                self.paused = True
                self.transport.pauseProducing()
        elif self.queue.qsize() < MAX_QUEUED // 2 and self.queued_bytes < MAX_QUEUED_BYTES // 2 \
                and unframed <= MAX_UNFRAMED // 2 and not self.closing:
            self.paused = False
            self.transport.resumeProducing()
            if self.zlib is not None and self.zlib.pending:
                self.loop.call_soon(self._inflate)

    @property
    def cleartext_refused(self):
        """LOGINDISABLED: no TLS and the connection is not over loopback."""
        if self.tls:
            return False
        host = getattr(self.transport.getHost(), "host", "")
        return not (host.startswith("127.") or host in ("::1", "localhost"))

    @property
    def autologout(self):
        """RFC 3501 5.4: at least 30 minutes once logged in; less before."""
        return AUTOLOGOUT if self.account is not None else AUTOLOGOUT_UNAUTHENTICATED

    @property
    def utf8(self):
        return "UTF8=ACCEPT" in self.enabled or "IMAP4REV2" in self.enabled

    @property
    def rev2(self):
        return "IMAP4REV2" in self.enabled

    @property
    def condstore(self):
        return "CONDSTORE" in self.enabled or "QRESYNC" in self.enabled

    def enable_condstore(self):
        """A CONDSTORE enabling command (RFC 7162 3.1: FETCH MODSEQ, CHANGEDSINCE,
        SEARCH MODSEQ, STORE UNCHANGEDSINCE, STATUS HIGHESTMODSEQ): the first
        one with a mailbox selected reports the mailbox's HIGHESTMODSEQ."""
        first = not self.condstore
        self.enabled.add("CONDSTORE")
        if first and self.selected is not None:
            self.send(b"* OK [HIGHESTMODSEQ %d] highest" % self.selected.modseq)

    # --- output --------------------------------------------------------------

    def write(self, data):
        if not self.closing:
            self.obs.bytes_out += len(data)
            if self.zlib is not None:
                data = self.zlib.deflate(data)
            self.transport.write(data)

    # IPushProducer: the transport pauses the session while its buffer is full.
    def pauseProducing(self):
        self.output_paused = True
        self.drained.clear()

    def resumeProducing(self):
        self.output_paused = False
        self.drained.set()

    def stopProducing(self):
        self.closing = True
        self.drained.set()

    async def drain(self):
        """Send what is queued, then wait until the client has read enough of it."""
        self.flush()
        if self.output_paused and not self.closing:
            await self.drained.wait()

    def hangup(self):
        """Close once the output is written (at once if the client stopped reading)."""
        self.closing = True
        self.drained.set()
        if self.producing:
            self.producing = False
            self.transport.unregisterProducer()
        if self.output_paused:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def send(self, data):
        """Queue one complete response (bytes without the final CRLF)."""
        if data[:1] not in b"*+":
            self.obs.reply = data
        self.out.append(data)
        self.out.append(b"\r\n")
        self.out_size += len(data)
        if self.out_size > FLUSH_AT:
            self.flush()

    def send_part(self, data):
        """Queue part of a response (a literal sent in pieces): no CRLF."""
        self.out.append(data)
        self.out_size += len(data)
        if self.out_size > FLUSH_AT:
            self.flush()

    def flush(self):
        if self.out:
            self.write(b"".join(self.out))
            self.out, self.out_size = [], 0

    async def next_unit(self):
        """The next framed unit from the client (IDLE, AUTHENTICATE)."""
        self.flush()
        return await self.take()

    async def take(self):
        self.wants_input = True
        try:
            if self.queue.empty():
                self._frame()
            item = await self.queue.get()
        finally:
            self.wants_input = False
        if isinstance(item, list):
            self.queued_bytes -= sum(len(seg) for seg in item)
        self._flow()
        return item

    # --- the pipeline ------------------------------------------------------

    async def _pipeline(self):
        try:
            while not self.closing:
                unit = await self.take()
                if unit is commands.TICK:          # NOTIFY: report changes now
                    if self.notify is not None:
                        await self.notify.tick(self)
                    await self.drain()
                    continue
                started, self.obs.command, self.obs.reply = self.loop.time(), None, None
                await self._one(unit)
                self._log_command(started)
                await self.drain()
        except asyncio.CancelledError:
            pass
        except Exception:   # noqa: BLE001 - log, then hang up rather than hang
            log.exception("IMAP session failed")
            self.bye("internal error")

    async def _one(self, unit):
        if isinstance(unit, Abandoned):
            error = unit.error
            if error.literal and not error.synchronizing and self.account is None:
                self.send(f"{error.tag or '*'} BAD [TOOBIG] {error} before login".encode())
                self.bye("[TOOBIG] literals before login are at most "
                         f"{self.framer.literal_limit} octets")
            elif error.literal and error.tag:
                self.send(f"{error.tag} NO [TOOBIG] {error}".encode())
            else:
                self._reply_bad(unit.error.tag, str(unit.error))
            return
        try:
            cmd = parse(unit)
        except ParseError as exc:
            self._reply_bad(exc.tag, str(exc))
            return
        self.obs.command = cmd
        spec = commands.lookup(cmd.verb)
        if spec is None:
            self._reply_bad(cmd.tag, f"unknown command {cmd.verb}")
            return
        if self.state not in spec.states:
            self._reply_bad(cmd.tag, f"{cmd.verb} is not allowed in the {self.state} state")
            return
        refused = uidonly.refusal(self, cmd)
        if refused:
            self._reply_bad(cmd.tag, refused)
            return
        self.bad_count = 0
        view = self.selected
        if view is not None and cmd.verb != "FETCH":
            view.select_rows = None
        running = inprogress.start(self, cmd)
        try:
            text = await spec.handler(self, cmd)
        except (No, errors.StoreError) as exc:
            if self.closing:
                return
            await self.report_changes(spec.expunge_ok or cmd.uid)
            await self.report_contexts()
            reason = store_error_reply(exc, spec) if isinstance(exc, errors.StoreError) else exc
            self.send(f"{cmd.tag} NO {reason}".encode())
            return
        except (Bad, ParseError) as exc:
            self._reply_bad(cmd.tag, str(exc))
            return
        except asyncio.CancelledError:
            raise
        except Exception:   # noqa: BLE001 - one failing command must not end the session
            log.exception("IMAP %s failed", cmd.verb)
            self.send(f"{cmd.tag} NO [SERVERBUG] internal error".encode())
            return
        finally:
            running.stop()
            if view is not None:
                view.select_rows = None
        if self.closing or text is False:
            return
        await self.report_changes(spec.expunge_ok or cmd.uid)
        await self.report_contexts()
        self.send(f"{cmd.tag} OK {text or cmd.verb + ' completed'}".encode())

    # --- logs (the events and their fields: roost.server.logs) ------------------

    def _log_connection(self, state):
        obs = self.obs
        fields = {"event": "connection", "state": state,
                  "proto": "imaps" if self.ctx.implicit_tls else "imap", "conn": obs.conn,
                  "peer": self.peer}
        if state == "open":
            obs.opened = self.loop.time()
        else:
            fields.update(ms=round((self.loop.time() - obs.opened) * 1000, 3), tls=self.tls,
                          bytes_in=obs.bytes_in, bytes_out=obs.bytes_out,
                          account=self.account.address if self.account else None)
        log.info("connection %s", state, extra=fields)

    def _log_command(self, started):
        if not log.isEnabledFor(logging.DEBUG):
            return
        cmd, reply = self.obs.command, self.obs.reply
        outcome = reply.split(b" ", 2)[1].decode("ascii", "replace") if reply and b" " in reply \
            else "BAD" if not self.closing else "none"
        verb = cmd and ("UID " + cmd.verb if cmd.uid else cmd.verb)
        mailbox = getattr(cmd, "mailbox", None) or (self.selected.name if self.selected else None)
        log.debug("%s %s", verb, outcome, extra={
            "event": "command", "proto": "imap", "conn": self.obs.conn, "verb": verb,
            "mailbox": str(mailbox) if mailbox else None, "outcome": outcome,
            "ms": round((self.loop.time() - started) * 1000, 3),
            "account": self.account.address if self.account else None})

    def _reply_bad(self, tag, reason):
        self.bad_count += 1
        self.send(f"{tag or '*'} BAD {reason}".encode("utf-8", "replace"))
        if self.bad_count >= MAX_BAD:
            self.bye("too many bad commands")

    def bye(self, text):
        self.send(f"* BYE {text}".encode())
        self.flush()
        self.hangup()

    # --- authentication state ---------------------------------------------

    def logged_in(self, account):
        self.account = account
        self.state = AUTHENTICATED
        self._ungate()
        self.framer.literal_limit = min(self.ctx.literal_limit, self.ctx.append_limit)
        self.command_started = None
        self.unsubscribe = Subscriptions(self.ctx.store.bus, account.id, self._on_change)

    def follow(self, account_id):
        """Also take the change events of ``account_id`` (the owner of the
        shared mailbox being selected). One other account at a time."""
        if isinstance(self.unsubscribe, Subscriptions):
            self.unsubscribe.follow(None if account_id == self.account.id else account_id)

    def logged_out(self):
        """UNAUTHENTICATE (RFC 8437): back to the not-authenticated state with
        the pre-login limits; TLS and COMPRESS stay. The caller has entered the
        PreauthGate again."""
        if self.unsubscribe:
            self.unsubscribe()
            self.unsubscribe = None
        self.account = self.selected = None
        if self.notify is not None:
            self.notify.stop(self)
        self.state = NOT_AUTHENTICATED
        self.enabled = set()
        self.auth_failures = 0
        self.framer.literal_limit = min(self.ctx.literal_limit, self.ctx.append_limit,
                                        PREAUTH_LITERAL_LIMIT)

    def _on_change(self, change):
        view = self.selected
        if view is not None and view.pk in change.mailbox_ids:
            if len(view.dirty) < 256:
                view.dirty.append(change.modseq)
            else:                       # a quiet client of a busy mailbox: just "changed"
                view.dirty[-1] = -1
            if self.idle_wake is not None:
                self.idle_wake.set()

    # --- mailbox names -----------------------------------------------------

    def mailbox_name(self, raw):
        """A client's mailbox argument as a store name (UTF-7 decoded, INBOX folded)."""
        name = str(raw)
        if not self.utf8 and not getattr(raw, "binary", False):
            try:
                name = utf7.decode(name)
            except ValueError as exc:
                raise No(f"[CANNOT] {exc}") from None
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:   # undecodable bytes arrive as lone surrogates
            raise Bad("mailbox name is not valid UTF-8 (RFC 6855 section 3)") from None
        if name.upper() == "INBOX" or name.upper().startswith("INBOX/"):
            name = "INBOX" + name[5:]
        return name

    def wire_name(self, name):
        return name if self.utf8 else utf7.encode(name)

    # --- untagged updates --------------------------------------------------

    async def report_changes(self, expunge_ok=True):
        """Tell the client what changed in the selected mailbox since it was last told."""
        if self.notify is not None and not self.notify.inside:
            return await self.notify.report(self, expunge_ok)   # NOTIFY's responses too
        view = self.selected
        if view is None:
            return
        if view.held and expunge_ok:
            self._report_expunges(view, list(view.held))
            view.held.clear()
        if not view.dirty:
            return
        if all(m in view.own for m in view.dirty):
            view.dirty.clear()
            view.own.clear()
            if len(view.sent) > 4096:      # only dampens repeats; keep it small
                view.sent.clear()
            return
        view.dirty.clear()
        view.own.clear()
        store = self.ctx.store
        last = view.last_uid
        own = view.account_id == self.account.id
        claims = None if self.rev2 else view.claims

        def changes():
            """One trip to a worker: the changes, the rights of a shared
            mailbox, and the \\Recent claim of the new messages (if any)."""
            highest, rows, gone = store.changes_since(view.account_id, view.pk, view.modseq)
            # A shared mailbox's grants may have changed (RFC 4314 5.1.1): read again.
            rights = view.rights if own else \
                store.rights(self.account, store.mailbox(view.account_id, mailbox_id=view.pk))
            top = max((r[0] for r in rows), default=0)
            before = None
            if claims is not None and top > last:
                before = store.claim_recent(view.pk, top) if claims else store.recent_floor(view.pk)
            return highest, rows, gone, rights, before
        try:
            highest, rows, gone, rights, before = await self.ctx.run(changes)
        except errors.MailboxNotFound:
            self.selected = None
            self.state = AUTHENTICATED
            self.bye("the selected mailbox was deleted")
            return
        if self.selected is not view:
            return
        if rights != view.rights:
            if "r" not in rights:
                self.selected = None
                self.state = AUTHENTICATED
                self.bye("[NOPERM] the right to read the selected mailbox was taken back")
                return
            view.rights = rights
            self.send_flag_list(view)
        gone = [u for u in gone if u in view]
        if gone:
            if expunge_ok:
                self._report_expunges(view, gone)
            else:
                view.held.update(gone)
        gone_set = set(gone)
        new = [r[0] for r in rows if r[0] > last]
        if new:
            view.add(new)
            self.send(b"* %d EXISTS" % view.exists)
            if not self.rev2:
                view.recent.update(u for u in new if u > before)
                self.send(b"* %d RECENT" % len(view.recent))
        self.note_keywords(view, rows)
        for uid, modseq, bits, keywords in rows:
            if uid > last or uid in gone_set or view.sent.get(uid) == modseq:
                continue
            seq = view.seq(uid)
            if seq:
                self.send(self.flags_fetch(seq, uid, modseq, bits, keywords, True))
        view.sent.clear()
        view.modseq = max([view.modseq, highest] + [r[1] for r in rows])

    async def report_contexts(self):
        """RFC 5267 UPDATE: ADDTO/REMOVEFROM for the searches the client asked
        to follow (``commands.sort``); nothing when there are none."""
        contexts = getattr(self.selected, "contexts", None)
        if contexts:
            await contexts.report(self)

    def _report_expunges(self, view, uids):
        contexts = getattr(view, "contexts", None)
        if contexts:        # RFC 5267 4.3.4: a sorted context's REMOVEFROM first (commands.sort)
            contexts.expunging(self, view, uids)
        if "QRESYNC" in self.enabled or "UIDONLY" in self.enabled:
            view.remove(uids)
            self.send(b"* VANISHED " + uid_set_text(uids).encode())
            return
        for seq in view.remove(uids):
            self.send(b"* %d EXPUNGE" % seq)

    def send_flag_list(self, view):
        """FLAGS and PERMANENTFLAGS of the selected mailbox (at SELECT, and
        again whenever a keyword appears that the client has not been told of)."""
        flags = " ".join(["\\Answered \\Flagged \\Deleted \\Seen \\Draft"] + list(view.keywords.values()))
        self.send(f"* FLAGS ({flags})".encode())
        perm = "" if view.readonly else f"{flags} \\*"
        if not view.readonly and view.rights != shared.RIGHTS:     # RFC 4314 section 5.1.1
            perm = " ".join(shared.allowed_flags(view.rights, flags.split(" ")) +
                            (["\\*"] if "w" in view.rights else []))
        self.send(f"* OK [PERMANENTFLAGS ({perm})] flags the client can change".encode())

    def note_keywords(self, view, rows):
        """Announce keywords first seen in ``rows`` (uid, modseq, bits, keywords)."""
        fresh = False
        for row in rows:
            for k in row[3]:
                if k.lower() not in view.keywords:
                    view.keywords[k.lower()] = k
                    fresh = True
        if fresh:
            self.send_flag_list(view)

    def flag_list(self, view, uid, names):
        """A message's flags as FETCH FLAGS shows them: \\Recent added where
        this session has it (never under IMAP4rev2)."""
        if view is not None and uid in view.recent and not self.rev2:
            names = ["\\Recent", *names]
        return b"FLAGS (" + " ".join(names).encode() + b")"

    def flags_fetch(self, seq, uid, modseq, bits, keywords, with_uid):
        parts = self.flag_list(self.selected, uid, flag_names(bits, keywords))
        if "UIDONLY" in self.enabled:
            if self.condstore:
                parts += b" MODSEQ (%d)" % modseq
            return b"* %d UIDFETCH (%s)" % (uid, parts)
        if with_uid:
            parts += b" UID %d" % uid
        if self.condstore:
            parts += b" MODSEQ (%d)" % modseq
        return b"* %d FETCH (%s)" % (seq, parts)


def store_error_reply(exc, spec=None):
    """The one place store errors become IMAP NO replies (with response codes).

    ``spec`` is the failing command's registration: where a missing mailbox is
    the destination of APPEND, COPY or MOVE the client may create it and retry
    (TRYCREATE: RFC 3501 6.3.11 and 6.4.7, RFC 6851 3.3); anywhere else it is
    NONEXISTENT (RFC 5530). A conflict in CREATE is the special-use attribute
    that another mailbox holds (USEATTR, RFC 6154 section 3)."""
    if isinstance(exc, errors.MailboxNotFound):
        if spec is not None and spec.trycreate:
            return "[TRYCREATE] no such mailbox"
        return "[NONEXISTENT] no such mailbox"
    if isinstance(exc, errors.MailboxExists):
        return "[ALREADYEXISTS] mailbox already exists"
    if isinstance(exc, errors.QuotaExceeded):
        return "[OVERQUOTA] mailbox is full"
    if isinstance(exc, errors.MessageTooLarge):
        return "[TOOBIG] message is too large"
    if isinstance(exc, errors.InvalidName):
        return f"[CANNOT] {exc}"
    if isinstance(exc, errors.Conflict):
        return f"[{'USEATTR' if spec is not None and spec.useattr else 'CANNOT'}] {exc}"
    if isinstance(exc, errors.MessageNotFound):
        return "[NONEXISTENT] no such message"
    if isinstance(exc, errors.TemporaryFailure):
        return "[UNAVAILABLE] try again later"
    return "[SERVERBUG] storage error"


class IMAPFactory(protocol.Factory):
    def __init__(self, ctx):
        self.ctx = ctx

    def buildProtocol(self, addr):
        session = IMAPSession(self.ctx)
        session.factory = self
        return session

    def stopFactory(self):
        """The listener stopped (server shutting down): say goodbye (RFC 3501 7.1.5)."""
        for session in list(self.ctx.sessions):
            if not session.closing:
                session.bye("Roost is shutting down")
