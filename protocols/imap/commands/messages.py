"""Selected-state commands: CHECK, CLOSE, UNSELECT, EXPUNGE (+ UID EXPUNGE),
SEARCH (ESEARCH, SEARCHRES), FETCH, STORE, COPY, MOVE; and IDLE.

Messages are named to the store by UID only; sequence numbers are turned
into UIDs through the session's ``SelectedMailbox``. FETCH of flags alone
takes the store's bulk flags path; anything else loads records (and bytes
when a section is asked for) in chunks on a worker thread: at most CHUNK
messages and about FETCH_BATCH_BYTES of their bytes per chunk, each sent and
drained (``session.drain``) before the next is read.
"""

import asyncio
import dataclasses
import email.utils
import json
import logging
import time
from bisect import bisect_right
from operator import itemgetter

from roost.storage import errors
from roost.storage.flags import names as flag_names
from roost.storage.views import for_store

from .. import fetch as render
from .. import resync
from .. import uidonly
from ..searchkeys import Compiler
from ..wire import literal, uid_set_text
from .preview import preview_item, preview_texts
from .. import shared
from . import AUTH, AUTHENTICATED, SEL, Bad, No, capability, command

capability("IDLE", "UIDPLUS", "MOVE", "UNSELECT", "ESEARCH", "SEARCHRES", "SAVEDATE", "BINARY",
           "CONDSTORE", "QRESYNC", "OBJECTID")

log = logging.getLogger("roost.imap")

CHUNK = 200
FETCH_BATCH_BYTES = 1 << 20    # message octets read per worker call (and then drained)


def _targets(s, cmd):
    v = s.selected
    return v.by_uid(cmd.messages) if cmd.uid else v.by_seq(cmd.messages)


# --- CHECK / CLOSE / UNSELECT / EXPUNGE --------------------------------------------

@command("CHECK", states=SEL)
async def check(s, cmd):
    pass


@command("CLOSE", "UNSELECT", states=SEL)
async def close(s, cmd):
    v = s.selected
    s.selected = None
    s.state = AUTHENTICATED
    if cmd.verb == "CLOSE" and not v.readonly and "e" in v.rights:   # RFC 4314: else just close
        await s.ctx.run(s.ctx.store.expunge, v.pk)


@command("EXPUNGE", states=SEL)
async def expunge(s, cmd):
    v = s.selected
    if cmd.uids is not None and not cmd.uid:
        raise Bad("EXPUNGE takes no arguments (UID EXPUNGE takes a UID set)")
    if v.readonly:
        raise No("[READ-ONLY] mailbox is read-only")
    shared.check(v.rights, "e")
    uids = v.by_uid(cmd.uids) if cmd.uid else None
    if uids == []:
        return
    gone = await s.ctx.run(s.ctx.store.expunge, v.pk, uids)
    await s.report_changes(True)
    s._report_expunges(v, [u for u in gone if u in v])


# --- SEARCH -----------------------------------------------------------------------

@command("SEARCH", states=SEL, expunge_ok=False)
async def search(s, cmd):
    v = s.selected
    if cmd.charset not in (None, "UTF-8", "US-ASCII"):
        raise No("[BADCHARSET (UTF-8 US-ASCII)] unsupported charset")
    if s.ctx.search is None:
        raise No("[UNAVAILABLE] search is not available")
    store = s.ctx.store
    compiler = view_compiler(s, v)
    uses_modseq = any(isinstance(k, str) and k.upper() == "MODSEQ" for k in _flat(cmd.keys))
    if uses_modseq:
        s.enable_condstore()

    def run():
        criteria = compiler.compile(cmd.keys)
        found = s.ctx.search(store, v.account_id, criteria, v.pk)
        mods = {r[0]: r[1] for r in store.flags(v.pk, found)} if uses_modseq and found else {}
        return found, mods
    found, mods = await s.ctx.run(run)
    whole = found == v.uids.tolist()       # SEARCH ALL of an unchanged mailbox: the view itself
    if whole:
        numbers = found if cmd.uid else list(range(1, len(found) + 1))
    elif cmd.uid:
        found = numbers = v.known(found)
    else:
        seqs = v.seqs(found)
        found = [u for u, n in zip(found, seqs) if n]
        numbers = [n for n in seqs if n]
    top = max((mods.get(u, 0) for u in found), default=None) if uses_modseq and found else None
    returns = cmd.returns
    if returns is None and s.rev2:
        returns = ["ALL"]
    if returns is None:
        line = b" ".join([b"* SEARCH", *(b"%d" % n for n in numbers)])
        if top is not None:
            line += b" (MODSEQ %d)" % top
        s.send(line)
        return
    if "UPDATE" in returns or "CONTEXT" in returns:     # RFC 5267 (commands.sort)
        from .sort import start_context
        returns = start_context(s, cmd, found, returns)
    if "SAVE" in returns:
        v.saved = tuple(found)
        returns = [r for r in returns if r != "SAVE"]
        if not returns:
            return
    if not returns:
        returns = ["ALL"]
    if top is not None and found and not {"ALL", "COUNT"} & set(returns):
        # RFC 4731 3.2: MIN and/or MAX alone report the modseq of those messages
        top = max(mods.get(u, 0) for u in {found[0] if "MIN" in returns else found[-1],
                                           found[-1] if "MAX" in returns else found[0]})
    s.send(esearch_line(cmd, returns, numbers, uid_set_text, top))


def esearch_line(cmd, returns, numbers, set_text, modseq=None):
    """The ESEARCH response (RFC 4731, and RFC 5267 ESORT where ``numbers`` are
    in sort order and ``set_text`` keeps that order) with PARTIAL (RFC 9394)."""
    parts = [f'* ESEARCH (TAG "{cmd.tag}")']
    if cmd.uid:
        parts.append("UID")
    if "MIN" in returns and numbers:
        parts.append(f"MIN {numbers[0]}")
    if "MAX" in returns and numbers:
        parts.append(f"MAX {numbers[-1]}")
    if "COUNT" in returns:
        parts.append(f"COUNT {len(numbers)}")
    if "ALL" in returns and numbers:
        parts.append(f"ALL {set_text(numbers)}")
    if cmd.partial is not None:
        from .sort import partial_part
        parts.append(partial_part(cmd.partial, numbers, set_text))
    if modseq is not None:
        parts.append(f"MODSEQ {modseq}")
    return " ".join(parts).encode()


def _flat(keys):
    for k in keys:
        if isinstance(k, list):
            yield from _flat(k)
        else:
            yield k


def view_compiler(s, v):
    """The search-key compiler of the session's view ``v`` (SEARCH, SORT,
    THREAD): sequence numbers, UIDs, \\Recent, and the mailbox reads some keys
    need, each done once per command however many keys need it."""
    store, memo = s.ctx.store, {}

    def once(name, fn):
        if name not in memo:
            memo[name] = fn()
        return memo[name]

    def email_uids(pk):
        return once("emails", lambda: _uids_by_message(store, v.pk)).get(pk, [])
    return Compiler(uidonly.seq_ranges(s, v), v.uid_ranges,
                    lambda: once("sent", lambda: sent_days(store, v.pk)), email_uids,
                    recent=None if s.rev2 else v.recent)


def _uids_by_message(store, mailbox_pk):
    out = {}
    for rec in store.records(mailbox_pk):
        out.setdefault(rec.message_id, []).append(rec.uid)
    return out


def sent_days(store, mailbox_pk):
    """``{uid: (year, month, day)}`` of each message's Date header as written
    (its own zone), falling back to the UTC day of the internal date."""
    out = {}
    for rec in store.records(mailbox_pk, parsed=True):
        date = json.loads(rec.envelope).get("date")
        parsed = email.utils.parsedate_tz(date) if date else None
        if parsed and 1 <= parsed[1] <= 12 and 1 <= parsed[2] <= 31:
            out[rec.uid] = tuple(parsed[:3])
        else:
            out[rec.uid] = time.gmtime(rec.internal_date)[:3]
    return out


# --- FETCH ------------------------------------------------------------------------

BODY_ITEMS = {"BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE",
              "RFC822", "RFC822.HEADER", "RFC822.TEXT"}
PARSED_ITEMS = {"ENVELOPE", "BODY", "BODYSTRUCTURE", "BINARY", "BINARY.PEEK", "BINARY.SIZE",
                "BODY.PEEK", "RFC822.HEADER", "RFC822.TEXT"}
SETS_SEEN = {"BODY", "BINARY", "RFC822", "RFC822.TEXT"}
WHOLE = ((), "", None)      # the section of BODY[] / BINARY[]: the whole message


@command("FETCH", states=SEL, expunge_ok=False)
async def fetch_cmd(s, cmd):
    from ..parser import FetchItem
    v = s.selected
    store = s.ctx.store
    items = list(cmd.items)
    names = {i.name for i in items}
    if cmd.uid and "UID" not in names:
        items.insert(0, FetchItem("UID", label="UID"))
    if uidonly.on(s) and len(items) > 1:           # UIDFETCH carries the UID
        items = [i for i in items if i.name != "UID"] or items
    if cmd.changedsince is not None or "MODSEQ" in names:
        s.enable_condstore()
        if "MODSEQ" not in names:
            items.append(FetchItem("MODSEQ", label="MODSEQ"))
    if cmd.vanished and not (cmd.uid and cmd.changedsince is not None and "QRESYNC" in s.enabled):
        raise Bad("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC")
    uids = _targets(s, cmd)
    if cmd.partial is not None:     # RFC 9394: only those of the set at these positions
        from .sort import partial_slice
        uids = partial_slice(uids, cmd.partial)
    if cmd.vanished:
        def load():
            box = store.mailbox(v.account_id, mailbox_id=v.pk)
            return (box.uidnext, store.history_floor(v.account_id),
                    store.expunged_since(v.pk, cmd.changedsince))
        uidnext, floor, gone = await s.ctx.run(load)
        ranges = resync.vanished(v, [u for u in gone if u not in v], cmd.changedsince < floor,
                                 cmd.messages, None, uidnext - 1)
        if ranges:
            s.send(b"* VANISHED (EARLIER) " + resync.ranges_text(ranges).encode())
    if not uids:
        return
    names = {i.name for i in items}
    seen_now = set()
    if not v.readonly and "s" in v.rights and any(   # RFC 4314: \\Seen is set only with "s"
            i.name in SETS_SEEN and (i.section is not None or i.name.startswith("RFC822"))
            for i in items):
        changed, _ = await s.ctx.run(store.store_flags, v.pk, uids, ["\\Seen"], "add")
        for uid, modseq, _b, _k in changed:
            seen_now.add(uid)
            v.own.add(modseq)
            v.sent[uid] = modseq
        if seen_now and "FLAGS" not in names:
            items.append(FetchItem("FLAGS", label="FLAGS"))
            names.add("FLAGS")
    if names <= {"FLAGS", "UID", "MODSEQ"}:
        # The whole view (UID FETCH 1:*): ask for the whole mailbox; the merge
        # walk drops messages this connection has not been told about yet.
        wanted = None if len(uids) == v.exists else uids
        if v.select_rows is not None and not v.dirty and not seen_now and cmd.changedsince is None:
            keep = None if wanted is None else set(wanted)
            rows = v.select_rows if keep is None else [r for r in v.select_rows if r[0] in keep]
        elif wanted is None and cmd.changedsince is None:
            rows = await s.ctx.run(_all_flag_rows, store, v)
        else:
            rows = await s.ctx.run(store.flags, v.pk, wanted, cmd.changedsince)
        _send_flag_rows(s, v, rows, items)
        return
    need_parsed = any(i.name in PARSED_ITEMS and i.section != WHOLE for i in items)
    need_bytes = bool(names & (BODY_ITEMS - {"BODY"})) or any(
        i.name == "BODY" and i.section is not None for i in items)
    # UID FETCH n BODY.PEEK[] (what a client downloading mail sends): the bytes
    # alone answer it, so the message's row is not read.
    bytes_only = need_bytes and cmd.changedsince is None and all(
        i.name == "UID" or i.name == "RFC822.SIZE" or i.name == "RFC822"
        or (i.name in ("BODY", "BODY.PEEK", "BINARY", "BINARY.PEEK", "BINARY.SIZE")
            and i.section == WHOLE) for i in items)
    # BODY[]<origin.length> alone (a client fetching a big message in chunks):
    # the store reads just that range, and the items render it as it is.
    ranges = {i.partial for i in items if i.name != "UID"}
    span = None
    if bytes_only and len(ranges) == 1 and None not in ranges and all(
            i.name in ("UID", "BODY", "BODY.PEEK") for i in items):
        (origin, length), = ranges
        span = (origin, origin + length)
        items = [dataclasses.replace(i, partial=None) for i in items]
    # One whole message (BODY.PEEK[] / RFC822) with at most UID and RFC822.SIZE:
    # a message over FETCH_BATCH_BYTES is sent in ranges of that size, each
    # read when the client has taken the one before.
    stream = bytes_only and span is None and all(
        i.name in ("UID", "RFC822.SIZE", "BODY", "BODY.PEEK", "RFC822") for i in items) and \
        sum(1 for i in items if i.name != "UID" and i.name != "RFC822.SIZE") == 1
    previews = {}      # message id -> preview text, for PREVIEW (RFC 8970)
    start = 0
    while start < len(uids):
        if s.progress is not None:        # INPROGRESS: messages done of messages asked for
            s.progress.count, s.progress.total = start, len(uids)
        chunk = uids[start:start + CHUNK]

        def load(chunk=chunk):
            """Up to CHUNK messages, and no more bytes than FETCH_BATCH_BYTES
            past the first message; returns them and how many UIDs were done."""
            if bytes_only:
                recs = [_Bare(uid) for uid in chunk]
            else:
                recs = store.records(v.pk, chunk, parsed=need_parsed)
            if cmd.changedsince is not None:
                recs = [r for r in recs if r.modseq > cmd.changedsince]
            if "PREVIEW" in names:
                previews.clear()
                previews.update(preview_texts(store, v.account_id, recs))
            out, size = [], 0
            for r in recs:
                try:
                    if stream:
                        data = store.read(v.pk, r.uid, 0, FETCH_BATCH_BYTES)
                        if len(data) == FETCH_BATCH_BYTES:
                            (whole,) = store.records(v.pk, [r.uid]) or [None]
                            if whole is None:
                                continue
                            out.append((_Bare(r.uid, whole.size), data))
                            return out, bisect_right(chunk, r.uid)
                    else:
                        data = (store.read(v.pk, r.uid, *span) if span else store.read(v.pk, r.uid)) \
                            if need_bytes else None
                except errors.MessageNotFound:
                    continue
                if bytes_only:
                    r = _Bare(r.uid, len(data))
                out.append((r, data))
                size += len(data or b"")
                if size >= FETCH_BATCH_BYTES:
                    return out, bisect_right(chunk, r.uid)
            return out, len(chunk)
        batch, done = await s.ctx.run(load)
        start += done
        for rec, data in batch:
            seq = v.seq(rec.uid)
            if not seq:
                continue
            if stream and rec.size > len(data):
                if not await _stream(s, v, seq, rec, data, items):
                    return False
                continue
            s.send(uidonly.head(s, seq, rec.uid) + b" ".join(_render(s, rec, data, items, previews))
                   + b")")
        del batch
        await s.drain()           # a client that does not read is not served more
        if s.closing:
            return False


async def _stream(s, v, seq, rec, first, items):
    """Send one big message's FETCH response with its literal in ranges (the
    bytes are those one ``_render`` would send). False if the connection ends."""
    k = next(i for i, item in enumerate(items) if item.name not in ("UID", "RFC822.SIZE"))
    before, after = _render(s, rec, None, items[:k]), _render(s, rec, None, items[k + 1:])
    label = b"RFC822" if items[k].name == "RFC822" else items[k].label.encode()
    if s.progress is not None:
        s.progress.safe = False           # no INPROGRESS inside this response
    s.send_part(uidonly.head(s, seq, rec.uid) + b"".join(p + b" " for p in before) + label +
                b" {%d}\r\n" % rec.size)
    s.send_part(render.no_nul(first))
    sent = len(first)
    while sent < rec.size:
        await s.drain()
        if s.closing:
            return False
        try:
            data = await s.ctx.run(s.ctx.store.read, v.pk, rec.uid, sent,
                                   min(sent + FETCH_BATCH_BYTES, rec.size))
        except errors.MessageNotFound:     # expunged by another session meanwhile
            data = None
        if not data:        # the literal cannot end right: only hanging up is safe
            log.log(logging.INFO if data is None else logging.ERROR,
                    "message %d of mailbox %d ended at %d of %d octets while being sent",
                    rec.uid, v.pk, sent, rec.size)
            s.bye("the message went away while it was being sent")
            return False
        s.send_part(render.no_nul(data))
        sent += len(data)
    s.send(b"".join(b" " + p for p in after) + b")")
    if s.progress is not None:
        s.progress.safe = True
    return True


class _Bare:
    """What FETCH needs of a message when only its bytes were read."""
    __slots__ = ("uid", "size")

    def __init__(self, uid, size=0):
        self.uid = uid
        self.size = size


def _send_flag_rows(s, v, rows, items):
    """The bulk path (UID FETCH 1:* (FLAGS)): rows and the view are both in UID
    order, so sequence numbers come from one merge walk (none when the rows
    are the view's UIDs exactly, as after SELECT); each distinct flag set is
    formatted once; each line is one %-format."""
    order = [i.name for i in items]
    pieces = {"UID": b"UID %d", "FLAGS": b"%s", "MODSEQ": b"MODSEQ (%d)"}
    by_uid = uidonly.on(s)              # UIDONLY: "* uid UIDFETCH (...)"
    template = (b"* %d UIDFETCH (" if by_uid else b"* %d FETCH (") + \
        b" ".join(pieces[n] for n in order) + b")"
    pick = itemgetter(0, *[{"UID": 1, "FLAGS": 2, "MODSEQ": 3}[name] for name in order])
    uids = v.uids
    if [r[0] for r in rows] == uids:
        numbered = zip(range(1, len(uids) + 1), rows)
    else:
        numbered = _numbered(uids, rows)
    recent = v.recent if not s.rev2 else ()
    shown = {}

    def text(uid, bits, keywords):
        key = (bits, keywords, uid in recent)
        got = shown.get(key)
        if got is None:
            got = shown[key] = s.flag_list(v, uid, flag_names(bits, keywords))
        return got
    if by_uid:
        lines = [template % pick((uid, uid, text(uid, bits, kw), modseq))
                 for _seq, (uid, modseq, bits, kw) in numbered]
    elif order == ["UID", "FLAGS"] and not recent:     # UID FETCH 1:* (FLAGS), the common one
        lines = []
        for seq, (uid, _modseq, bits, kw) in numbered:
            t = shown.get((bits, kw))
            if t is None:
                t = shown[(bits, kw)] = s.flag_list(v, uid, flag_names(bits, kw))
            lines.append(template % (seq, uid, t))
    else:
        lines = [template % pick((seq, uid, text(uid, bits, kw), modseq))
                 for seq, (uid, modseq, bits, kw) in numbered]
    if lines:
        s.send(b"\r\n".join(lines))


def _all_flag_rows(store, v):
    """``store.flags`` of the whole selected mailbox, from the views' cache
    (as SELECT reads it); none when the mailbox is gone."""
    try:
        box = store.mailbox(v.account_id, mailbox_id=v.pk)
    except errors.MailboxNotFound:
        return []
    return for_store(store).flag_rows(box)


def _numbered(uids, rows):
    """``(sequence number, row)`` of the rows whose UID is in the view."""
    n, i = len(uids), 0
    for row in rows:
        uid = row[0]
        while i < n and uids[i] < uid:
            i += 1
        if i == n:
            return
        if uids[i] == uid:
            yield i + 1, row


def _render(s, rec, data, items, previews=None):
    utf8 = s.utf8
    structure = None
    out = []
    for item in items:
        name = item.name
        if name == "UID":
            out.append(b"UID %d" % rec.uid)
        elif name == "FLAGS":
            out.append(s.flag_list(s.selected, rec.uid, rec.flag_names))
        elif name == "MODSEQ":
            out.append(b"MODSEQ (%d)" % rec.modseq)
        elif name == "INTERNALDATE":
            out.append(b"INTERNALDATE " + render.internaldate(rec.internal_date))
        elif name == "SAVEDATE":
            out.append(b"SAVEDATE " + render.internaldate(rec.saved_at))
        elif name == "RFC822.SIZE":
            out.append(b"RFC822.SIZE %d" % rec.size)
        elif name == "EMAILID":
            out.append(f"EMAILID ({rec.email_id})".encode())
        elif name == "THREADID":
            out.append(f"THREADID ({rec.thread_oid})".encode())
        elif name == "ENVELOPE":
            out.append(b"ENVELOPE " + render.envelope(json.loads(rec.envelope), utf8))
        elif name in ("BODYSTRUCTURE", "BODY") and item.section is None:
            structure = structure or json.loads(rec.structure)
            out.append(name.encode() + b" " + render.bodystructure(structure, name == "BODYSTRUCTURE", utf8))
        elif name == "PREVIEW":
            out.append(b"PREVIEW " + preview_item(previews, rec))
        elif name == "RFC822":
            out.append(b"RFC822 " + literal(render.no_nul(data)))
        elif name == "RFC822.HEADER":
            structure = structure or json.loads(rec.structure)
            out.append(b"RFC822.HEADER " + literal(render.no_nul(data[:structure[1]])))
        elif name == "RFC822.TEXT":
            structure = structure or json.loads(rec.structure)
            out.append(b"RFC822.TEXT " + literal(render.no_nul(data[structure[1]:])))
        elif name in ("BODY", "BODY.PEEK") and item.section == WHOLE:
            out.append(item.label.encode() + b" " + literal(render.no_nul(render.partial(data, item.partial))))
        elif name in ("BODY", "BODY.PEEK"):
            structure = structure or json.loads(rec.structure)
            section = render.section_bytes(data, structure, item.section)
            if section is None:
                section = b""
            out.append(item.label.encode("utf-8", "surrogateescape") + b" " +
                       literal(render.no_nul(render.partial(section, item.partial))))
        else:   # BINARY, BINARY.PEEK, BINARY.SIZE
            if item.section == WHOLE:
                structure = None
            else:
                structure = structure or json.loads(rec.structure)
            try:
                decoded = render.binary_bytes(data, structure, item.section[0])
            except render.UnknownEncoding:
                raise No("[UNKNOWN-CTE] cannot decode this part's transfer encoding") from None
            if decoded is None:
                decoded = b""
            label = item.label.encode()
            if name == "BINARY.SIZE":
                out.append(label + b" %d" % len(decoded))
                continue
            decoded = render.partial(decoded, item.partial)
            if b"\0" in decoded:
                out.append(label + b" ~" + literal(decoded))
            else:
                out.append(label + b" " + literal(decoded))
    return out


# --- STORE ------------------------------------------------------------------------

@command("STORE", states=SEL, expunge_ok=False)
async def store_cmd(s, cmd):
    v = s.selected
    if v.readonly:
        raise No("[READ-ONLY] mailbox is read-only")
    flags = [f for f in cmd.flags if f.lower() != "\\recent"]
    for f in flags:
        if f.startswith("\\") and f.lower() not in ("\\seen", "\\answered", "\\flagged",
                                                     "\\deleted", "\\draft"):
            raise Bad(f"cannot store flag {f}")
    if cmd.unchangedsince is not None:
        s.enable_condstore()
    uids = _targets(s, cmd)
    if not uids:
        return
    store = s.ctx.store
    rights = v.rights

    def run():
        """The change and, unless SILENT, the flags of the UIDs it left as
        they were (those are reported too): one trip to a worker."""
        if rights != shared.RIGHTS:
            changed, failed = shared.store_flags(store, v.pk, rights, uids, flags, cmd.mode,
                                                 cmd.unchangedsince)
        else:
            changed, failed = store.store_flags(v.pk, uids, flags, cmd.mode, cmd.unchangedsince)
        rest = []
        if not cmd.silent:
            done = {r[0] for r in changed} | set(failed)
            rest = [u for u in uids if u not in done]
        return changed, failed, store.flags(v.pk, rest) if rest else []
    changed, failed, unchanged = await s.ctx.run(run)
    for uid, modseq, _b, _k in changed:
        v.own.add(modseq)
        v.sent[uid] = modseq
    s.note_keywords(v, changed)
    if not cmd.silent:
        for uid, modseq, bits, keywords in sorted([*changed, *unchanged]):
            seq = v.seq(uid)
            if seq:
                s.send(s.flags_fetch(seq, uid, modseq, bits, keywords, cmd.uid))
    elif s.condstore:
        for uid, modseq, _b, _k in changed:
            if uidonly.on(s):
                s.send(b"* %d UIDFETCH (MODSEQ (%d))" % (uid, modseq))
                continue
            s.send(b"* %d FETCH (UID %d MODSEQ (%d))" % (v.seq(uid), uid, modseq)
                   if cmd.uid else b"* %d FETCH (MODSEQ (%d))" % (v.seq(uid), modseq))
    if failed:
        numbers = failed if cmd.uid else [v.seq(u) for u in failed]
        return f"[MODIFIED {uid_set_text(numbers)}] conditional STORE failed"


# --- COPY / MOVE --------------------------------------------------------------------

@command("COPY", "MOVE", states=SEL, trycreate=True)
async def copy(s, cmd):
    v = s.selected
    if cmd.verb == "MOVE" and v.readonly:
        raise No("[READ-ONLY] mailbox is read-only")
    if cmd.verb == "MOVE":
        shared.check(v.rights, "te")
    uids = _targets(s, cmd)
    store = s.ctx.store
    dest, rights, _shown = await shared.resolve(s, s.mailbox_name(cmd.mailbox), "i")
    if not uids:
        return f"{cmd.verb} completed (no messages)"
    if dest.account_id != v.account_id or rights != shared.RIGHTS:
        validity, pairs = await s.ctx.run(shared.copy, s.ctx, v.pk, uids, dest, rights,
                                          cmd.verb == "MOVE")
    else:
        fn = store.move if cmd.verb == "MOVE" else store.copy
        validity, pairs = await s.ctx.run(fn, v.pk, uids, dest.id)
    code = ""
    if pairs:
        code = f"[COPYUID {validity} {uid_set_text([p[0] for p in pairs])} " \
               f"{uid_set_text([p[1] for p in pairs])}] "
    if cmd.verb == "COPY":
        return code + "COPY completed"
    if code:
        s.send(f"* OK {code}moved".encode())
    await s.report_changes(True)
    s._report_expunges(v, [p[0] for p in pairs if p[0] in v])
    return "MOVE completed"


# --- IDLE -------------------------------------------------------------------------

@command("IDLE", states=AUTH)
async def idle(s, cmd):
    s.send(b"+ idling")
    s.flush()
    s.idle_wake = wake = asyncio.Event()
    getter = asyncio.ensure_future(s.take())
    waiter = None
    try:
        while True:
            wake.clear()
            await s.report_changes(True)
            await s.report_contexts()
            s.flush()
            waiter = asyncio.ensure_future(wake.wait())
            done, _ = await asyncio.wait({getter, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if getter in done:
                break
            waiter = None
    finally:
        s.idle_wake = None
        if waiter is not None:
            waiter.cancel()
        if not getter.done():
            getter.cancel()
    unit = getter.result()
    if isinstance(unit, list) and len(unit) == 1 and unit[0].strip().upper() == b"DONE":
        return "IDLE terminated"
    raise Bad("expected DONE to end IDLE")

