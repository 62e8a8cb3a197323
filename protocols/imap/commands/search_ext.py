"""Search extensions: WITHIN (RFC 5032; its OLDER/YOUNGER keys compile in
``searchkeys``) and MULTISEARCH (RFC 7377: the ESEARCH command).

ESEARCH searches every mailbox its IN filters name (the selected one when
none are given) and answers one ``* ESEARCH (TAG .. MAILBOX .. UIDVALIDITY
..) UID ...`` per mailbox with at least one match; results are UIDs. In the
selected mailbox only messages the client has been told of count, as for
SEARCH. Message sequence numbers (and ``$``, and RETURN SAVE) name nothing
across mailboxes and get BAD. At most MAX_MAILBOXES mailboxes per command
(``NO [LIMIT]`` beyond), each searched on a worker thread in turn.
"""

from ..filters import resolve
from ..searchkeys import Compiler
from ..wire import astring, uid_set_text
from . import AUTH, Bad, No, capability, command
from .messages import _flat, _uids_by_message, sent_days

capability("WITHIN", "MULTISEARCH")

MAX_MAILBOXES = 1000


def _no_seqs(seqset):
    raise Bad("ESEARCH takes UIDs only, not message sequence numbers or $")


def _uid_ranges(last_uid):
    def uids(seqset):
        if seqset.saved:
            _no_seqs(seqset)
        return seqset.resolve(max(last_uid, 1))
    return uids


@command("ESEARCH", states=AUTH, expunge_ok=False)
async def esearch(s, cmd):
    search = cmd.search
    if search.charset not in (None, "UTF-8", "US-ASCII"):
        raise No("[BADCHARSET (UTF-8 US-ASCII)] unsupported charset")
    returns = search.returns or ["ALL"]
    if "SAVE" in returns:
        raise Bad("RETURN SAVE is not allowed in ESEARCH (RFC 7377 section 2)")
    if s.ctx.search is None:
        raise No("[UNAVAILABLE] search is not available")
    store = s.ctx.store
    v = s.selected
    if cmd.sources is None:
        if v is None:
            raise Bad("ESEARCH without IN needs a selected mailbox")
        boxes = [await s.ctx.run(lambda: store.mailbox(s.account.id, mailbox_id=v.pk))]
    else:
        everything = await s.ctx.run(store.mailboxes, s.account.id)
        boxes = resolve(s, cmd.sources, everything, v.pk if v is not None else None)
    if len(boxes) > MAX_MAILBOXES:
        raise No(f"[LIMIT] ESEARCH searches at most {MAX_MAILBOXES} mailboxes")
    uses_modseq = any(isinstance(k, str) and k.upper() == "MODSEQ" for k in _flat(search.keys))
    if uses_modseq:
        s.enabled.add("CONDSTORE")
    for box in boxes:
        memo = {}

        def once(name, fn, memo=memo):
            if name not in memo:
                memo[name] = fn()
            return memo[name]

        def run(box=box, once=once):
            compiler = Compiler(_no_seqs, _uid_ranges(box.uidnext - 1),
                                lambda: once("sent", lambda: sent_days(store, box.id)),
                                lambda pk: once("emails", lambda: _uids_by_message(store, box.id))
                                .get(pk, []))
            criteria = compiler.compile(search.keys)
            found = s.ctx.search(store, s.account.id, criteria, box.id)
            top = max(r[1] for r in store.flags(box.id, found)) if uses_modseq and found else None
            return found, top
        found, top = await s.ctx.run(run)
        if v is not None and box.id == v.pk:
            found = v.known(found)
        if not found:
            continue
        parts = [f'* ESEARCH (TAG "{cmd.tag}" MAILBOX ', None,
                 f" UIDVALIDITY {box.uidvalidity}) UID"]
        if "MIN" in returns:
            parts.append(f" MIN {found[0]}")
        if "MAX" in returns:
            parts.append(f" MAX {found[-1]}")
        if "COUNT" in returns:
            parts.append(f" COUNT {len(found)}")
        if "ALL" in returns:
            parts.append(f" ALL {uid_set_text(found)}")
        if top is not None:
            parts.append(f" MODSEQ {top}")
        name = astring(s.wire_name(box.name), s.utf8)
        s.send(parts[0].encode() + name + "".join(parts[2:]).encode())
