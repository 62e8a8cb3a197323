"""Messages made on the server: CATENATE (RFC 4469) and REPLACE (RFC 8508).

CATENATE: an APPEND (or REPLACE) message given as parts, each a TEXT literal
or an IMAP URL (RFC 5092) of a message or section of a message of the same
account: ``imap://user@host/Mailbox;UIDVALIDITY=v/;UID=u/;SECTION=s/;PARTIAL=o.l``,
the same without ``imap://user@host`` (absolute path), or ``;UID=u...``
relative to the selected mailbox. A user in the URL must be the logged-in
one; URLAUTH is not supported. Any URL that does not name an existing
message or section gets ``NO [BADURL url]`` and nothing is stored; a result
larger than APPENDLIMIT gets ``NO [TOOBIG]`` (the parts are added up as they
are read, so no more than the limit is held). At most
``parser.MAX_CATENATE_PARTS`` parts.

REPLACE: the new message is appended to the named mailbox (APPENDUID in an
untagged OK) and the old one expunged from the selected mailbox (EXPUNGE or
VANISHED), like MOVE, in one store transaction (``append_many`` with
``replace``): if the append fails, the old message stays. (Where the server
gives no ``append_many``, as in unit tests, they are two steps.)
"""

import json
import re
from urllib.parse import unquote

from roost.storage import errors

from .. import fetch as render
from ..parser import parse_fetch_item
from ..wire import ParseError, uid_set_text
from . import SEL, Bad, No, capability, command

capability("CATENATE", "REPLACE")

_PATH = re.compile(r"(?:/(?P<mailbox>[^;]*?)(?:;UIDVALIDITY=(?P<validity>[1-9]\d{0,9}))?/)?"
                   r";UID=(?P<uid>[1-9]\d{0,9})"
                   r"(?:/;SECTION=(?P<section>[^;]*?))?"
                   r"(?:/;PARTIAL=(?P<origin>\d{1,10})(?:\.(?P<length>[1-9]\d{0,9}))?)?", re.I)


def _url_text(url):
    """The URL as it may stand in a BADURL response code (no "]", no CTL)."""
    return re.sub(r"[\]\x00-\x1f\x7f]", "", url)[:200] or "-"


def parse_url(s, url):
    """``(mailbox name, uidvalidity or None, uid, section or None, partial or None)``
    of a CATENATE URL; raises No [BADURL]."""
    bad = No(f"[BADURL {_url_text(url)}] not a URL of a message of this account")
    path = url
    if url[:7].lower() == "imap://":
        server, slash, path = url[7:].partition("/")
        if not slash:
            raise bad
        path = "/" + path
        user, at, _host = server.rpartition("@")
        if at:
            name, _, auth = user.partition(";")
            if auth and auth.upper() != "AUTH=*" or unquote(name).lower() != s.account.address.lower():
                raise bad
    if ";URLAUTH=" in path.upper():
        raise No(f"[BADURL {_url_text(url)}] URLAUTH is not supported")
    m = _PATH.fullmatch(path)
    if not m:
        raise bad
    if m.group("mailbox") is None:
        if s.selected is None:
            raise bad
        name = s.selected.name
    else:
        try:
            name = unquote(m.group("mailbox"), errors="strict")
        except UnicodeDecodeError:
            raise bad from None
        if name.upper() == "INBOX" or name.upper().startswith("INBOX/"):
            name = "INBOX" + name[5:]
    section = partial = None
    if m.group("section") is not None:
        try:
            section = parse_fetch_item(f"BODY[{unquote(m.group('section'))}]").section
        except ParseError:
            raise bad from None
    if m.group("origin") is not None:
        origin = int(m.group("origin"))
        partial = (origin, int(m.group("length")) if m.group("length") else None)
    validity = int(m.group("validity")) if m.group("validity") else None
    return name, validity, int(m.group("uid")), section, partial


async def assemble(s, parts):
    """The bytes of a CATENATE message; raises No (BADURL, TOOBIG)."""
    store, limit = s.ctx.store, s.ctx.append_limit
    out, size = [], 0
    for kind, value in parts:
        if kind == "URL":
            name, validity, uid, section, partial = parse_url(s, value)

            def read(name=name, validity=validity, uid=uid, section=section):
                box = store.mailbox(s.account.id, name)
                if validity is not None and validity != box.uidvalidity:
                    return None
                recs = store.records(box.id, [uid], parsed=section is not None)
                if not recs:
                    return None
                data = store.read(box.id, uid)
                if section is not None:
                    data = render.section_bytes(data, json.loads(recs[0].structure), section)
                return data
            try:
                data = await s.ctx.run(read)
            except (errors.MailboxNotFound, errors.MessageNotFound):
                data = None
            if data is None:
                raise No(f"[BADURL {_url_text(value)}] no such message or section")
            if partial is not None:
                origin, length = partial
                data = data[origin:] if length is None else data[origin:origin + length]
        else:
            data = value
        size += len(data)
        if size > limit:
            raise No("[TOOBIG] the message would be larger than APPENDLIMIT")
        out.append(data)
    return b"".join(out)


# --- REPLACE --------------------------------------------------------------------

@command("REPLACE", states=SEL, trycreate=True)
async def replace(s, cmd):
    from .mailboxes import append_messages      # the APPEND checks and store path
    v = s.selected
    if v.readonly:
        raise No("[READ-ONLY] mailbox is read-only")
    if cmd.uid:
        old = cmd.number if cmd.number in v else None
        if old is None:
            raise No("[NONEXISTENT] no message has that UID")
    else:
        if cmd.number > v.exists:
            raise Bad("no message has that sequence number")
        old = v.uids[cmd.number - 1]
    together = s.ctx.append_many is not None
    validity, uids = await append_messages(s, s.mailbox_name(cmd.mailbox), [cmd.message],
                                           (v.pk, [old]) if together else None)
    s.send(f"* OK [APPENDUID {validity} {uid_set_text(uids)}] replacement message stored".encode())
    gone = [old] if together else await s.ctx.run(s.ctx.store.remove, v.pk, [old]) or [old]
    await s.report_changes(True)
    if s.selected is v:
        s._report_expunges(v, [u for u in gone if u in v])
    return "REPLACE completed"
