"""IMAP command grammar: a framed unit in, a typed command object out.

Owns the dataclass of every command and the parser of each one, looked up
by verb in ``PARSERS``. Parsing never depends on the session (state,
selected mailbox, enabled extensions): handlers judge that. Mailbox names stay
as the client sent them (``Mailbox.raw``); the session decodes modified UTF-7.
Everything malformed raises ``ParseError`` with a reason for the BAD reply.
It must not touch storage or write to the connection.
"""

import re
from dataclasses import dataclass, field

from . import parse_quota
from . import parse_acl
from . import parse_ext
from .parse_sort import parse_cancelupdate, parse_partial, parse_returns, parse_sort, parse_thread
from .wire import Command, ParseError, Str, _tag_of, group, tokenize

# --- sequence sets ------------------------------------------------------------

_SEQ_RANGE = re.compile(r"(\d+|\*)(?::(\d+|\*))?")


@dataclass(frozen=True)
class SequenceSet:
    """``ranges`` of (lo, hi) with None for ``*``; ``saved`` is SEARCHRES ``$``."""
    ranges: tuple = ()
    saved: bool = False

    @classmethod
    def parse(cls, text):
        if text == "$":
            return cls((), True)
        if not isinstance(text, str) or isinstance(text, Str) or not text:
            raise ParseError("expected a sequence set")
        ranges = []
        for part in text.split(","):
            m = _SEQ_RANGE.fullmatch(part)
            if not m:
                raise ParseError(f"bad sequence set {text[:40]!r}")
            lo = None if m.group(1) == "*" else int(m.group(1))
            hi = lo if m.group(2) is None else (None if m.group(2) == "*" else int(m.group(2)))
            if lo == 0 or hi == 0 or (lo or 0) > 0xFFFFFFFF or (hi or 0) > 0xFFFFFFFF:
                raise ParseError("sequence numbers start at 1 and fit in 32 bits")
            ranges.append((lo, hi))
        return cls(tuple(ranges))

    def resolve(self, largest):
        """Inclusive (lo, hi) ranges with ``*`` replaced by ``largest``."""
        out = []
        for lo, hi in self.ranges:
            lo = largest if lo is None else lo
            hi = largest if hi is None else hi
            out.append((min(lo, hi), max(lo, hi)))
        return out


# --- commands -----------------------------------------------------------------

@dataclass
class Simple(Command):
    """A command without arguments (CAPABILITY, NOOP, LOGOUT, STARTTLS, CHECK,
    CLOSE, UNSELECT, EXPUNGE, IDLE, NAMESPACE)."""


@dataclass
class Id(Command):
    params: dict = None


@dataclass
class Enable(Command):
    names: list = field(default_factory=list)


@dataclass
class Login(Command):
    user: str = ""
    password: str = ""


@dataclass
class Authenticate(Command):
    mechanism: str = ""
    initial: str = None


@dataclass
class Select(Command):
    mailbox: str = ""
    readonly: bool = False
    condstore: bool = False
    qresync: tuple = None     # (uidvalidity, modseq, known uids SequenceSet or None, seq match)


@dataclass
class MailboxCommand(Command):
    """CREATE, DELETE, SUBSCRIBE, UNSUBSCRIBE."""
    mailbox: str = ""
    use: list = field(default_factory=list)   # CREATE-SPECIAL-USE


@dataclass
class Rename(Command):
    mailbox: str = ""
    new_name: str = ""


@dataclass
class List(Command):
    reference: str = ""
    patterns: list = field(default_factory=list)
    select: list = field(default_factory=list)
    returns: list = field(default_factory=list)
    status: list = None
    extended: bool = False


@dataclass
class Status(Command):
    mailbox: str = ""
    items: list = field(default_factory=list)


@dataclass
class AppendMessage:
    flags: list
    date: str
    data: bytes
    binary: bool
    parts: list = None    # CATENATE (RFC 4469): [("TEXT", bytes) or ("URL", str)], data then b""


@dataclass
class Append(Command):
    mailbox: str = ""
    messages: list = field(default_factory=list)


@dataclass
class Expunge(Command):
    uids: SequenceSet = None


@dataclass
class Search(Command):
    keys: list = field(default_factory=list)
    charset: str = None
    returns: list = None        # ESEARCH RETURN options, None for plain SEARCH
    partial: tuple = None       # RETURN (PARTIAL first:last), RFC 9394


@dataclass
class FetchItem:
    name: str                     # FLAGS, UID, BODY, BODY.PEEK, BINARY, BINARY.SIZE, ...
    section: tuple = None         # (part numbers tuple, text, field names) for BODY[...]
    partial: tuple = None         # (origin, length)
    label: str = ""               # how the item is named in the response


@dataclass
class Fetch(Command):
    messages: SequenceSet = None
    items: list = field(default_factory=list)
    changedsince: int = None
    vanished: bool = False
    partial: tuple = None         # the PARTIAL modifier (RFC 9394): (first, last)


@dataclass
class Store(Command):
    messages: SequenceSet = None
    mode: str = "replace"
    silent: bool = False
    flags: list = field(default_factory=list)
    unchangedsince: int = None


@dataclass
class Copy(Command):
    messages: SequenceSet = None
    mailbox: str = ""


class Args:
    """A cursor over the grouped tokens of one command."""

    def __init__(self, items):
        self.items = items
        self.pos = 0

    def more(self):
        return self.pos < len(self.items)

    def peek(self):
        return self.items[self.pos] if self.more() else None

    def take(self, what="an argument"):
        if not self.more():
            raise ParseError(f"missing {what}")
        self.pos += 1
        return self.items[self.pos - 1]

    def atom(self, what="an atom"):
        t = self.take(what)
        if not isinstance(t, str) or isinstance(t, Str):
            raise ParseError(f"expected {what}")
        return t

    def astring(self, what="a string"):
        t = self.take(what)
        if isinstance(t, list):
            raise ParseError(f"expected {what}, not a list")
        return str(t) if not isinstance(t, Str) else t

    def string(self, what="a string"):
        t = self.take(what)
        if not isinstance(t, Str):
            if isinstance(t, str) and t.upper() == "NIL":
                return None
            raise ParseError(f"expected {what} as a quoted string or literal")
        return t

    def list(self, what="a parenthesised list"):
        t = self.take(what)
        if not isinstance(t, list):
            raise ParseError(f"expected {what}")
        return t

    def number(self, what="a number", limit=(1 << 63) - 1):
        t = self.atom(what)
        if not t.isdigit() or int(t) > limit:
            raise ParseError(f"expected {what}")
        return int(t)

    def end(self):
        if self.more():
            raise ParseError("unexpected extra arguments")


def parse(unit):
    """``Command`` of a framed unit; raises ParseError (with the tag when known)."""
    tag = None
    try:
        tokens = tokenize(unit)
        if not tokens or not isinstance(tokens[0], str) or isinstance(tokens[0], Str):
            raise ParseError("expected a tag")
        tag = tokens[0]
        if not _TAG.fullmatch(tag):
            tag = None
            raise ParseError("invalid tag")
        if len(tokens) < 2 or not isinstance(tokens[1], str) or isinstance(tokens[1], Str):
            raise ParseError("expected a command name")
        verb = tokens[1].upper()
        items, _ = group(tokens, 2)
        args = Args(items)
        uid = False
        if verb == "UID":
            verb = args.atom("a command after UID").upper()
            if verb not in ("FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE", "REPLACE",
                            "SORT", "THREAD"):
                raise ParseError(f"UID {verb} is not a command")
            uid = True
        parser = PARSERS.get(verb)
        if parser is None:
            raise ParseError(f"unknown command {verb[:30]}")
        cmd = parser(args)
        args.end()
        cmd.tag, cmd.verb, cmd.uid = tag, verb, uid
        return cmd
    except ParseError as exc:
        exc.tag = exc.tag or tag or _tag_of(unit[0] if unit else b"")
        raise
    except RecursionError:
        raise ParseError("too deeply nested", tag) from None


_TAG = re.compile(r"[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]{1,64}")


# --- one parser per command ---------------------------------------------------

def _simple(args):
    return Simple()


def _id(args):
    t = args.take("ID parameters or NIL")
    if isinstance(t, str) and not isinstance(t, Str) and t.upper() == "NIL":
        return Id(params=None)
    if not isinstance(t, list) or len(t) % 2 or len(t) > 60:
        raise ParseError("ID takes NIL or a list of up to 30 field/value pairs")
    params = {}
    for k, v in zip(t[::2], t[1::2]):
        if not isinstance(k, Str) or isinstance(v, list):
            raise ParseError("ID fields are strings")
        params[str(k)] = None if (not isinstance(v, Str) and v.upper() == "NIL") else str(v)
    return Id(params=params)


def _enable(args):
    names = []
    while args.more():
        names.append(args.atom("a capability").upper())
    if not names:
        raise ParseError("ENABLE needs at least one capability")
    return Enable(names=names)


def _login(args):
    return Login(user=args.astring("a user name"), password=args.astring("a password"))


def _authenticate(args):
    mech = args.atom("a SASL mechanism").upper()
    initial = args.astring() if args.more() else None
    return Authenticate(mechanism=mech, initial=initial)


def _select(args):
    cmd = Select(mailbox=args.astring("a mailbox name"))
    if args.more():
        params = Args(args.list("select parameters"))
        while params.more():
            name = params.atom("a select parameter").upper()
            if name == "CONDSTORE":
                cmd.condstore = True
            elif name == "QRESYNC":
                q = Args(params.list("QRESYNC parameters"))
                validity = q.number("a UIDVALIDITY", 0xFFFFFFFF)
                modseq = q.number("a MODSEQ")
                known = match = None
                if q.more() and not isinstance(q.peek(), list):
                    known = SequenceSet.parse(q.atom("known UIDs"))
                if q.more():
                    m = Args(q.list("sequence match data"))
                    match = (SequenceSet.parse(m.atom()), SequenceSet.parse(m.atom()))
                    m.end()
                q.end()
                cmd.qresync = (validity, modseq, known, match)
            else:
                raise ParseError(f"unknown select parameter {name[:30]}")
    return cmd


def _mailbox_cmd(args):
    cmd = MailboxCommand(mailbox=args.astring("a mailbox name"))
    if args.more():
        params = Args(args.list("create parameters"))
        while params.more():
            name = params.atom("a create parameter").upper()
            if name != "USE":
                raise ParseError(f"unknown create parameter {name[:30]}")
            cmd.use = [a for a in params.list("special-use attributes")]
            if not all(isinstance(a, str) and a.startswith("\\") for a in cmd.use):
                raise ParseError("USE takes special-use attributes")
    return cmd


def _rename(args):
    return Rename(mailbox=args.astring("a mailbox name"), new_name=args.astring("a new name"))


def _list(args):
    cmd = List()
    if isinstance(args.peek(), list):
        cmd.select = [_atom_upper(a) for a in args.take()]
        cmd.extended = True
    cmd.reference = args.astring("a reference name")
    if isinstance(args.peek(), list):
        cmd.patterns = [str(p) for p in args.take() if not isinstance(p, list)]
        cmd.extended = True
        if not cmd.patterns:
            raise ParseError("empty pattern list")
    else:
        cmd.patterns = [args.astring("a mailbox pattern")]
    if args.more():
        if args.atom("RETURN").upper() != "RETURN":
            raise ParseError("expected RETURN")
        cmd.extended = True
        opts = Args(args.list("return options"))
        while opts.more():
            name = opts.atom("a return option").upper()
            cmd.returns.append(name)
            if name == "STATUS":
                cmd.status = [_atom_upper(a) for a in opts.list("status items")]
    return cmd


def _atom_upper(t):
    if not isinstance(t, str) or isinstance(t, Str):
        raise ParseError("expected an atom")
    return t.upper()


def _status(args):
    cmd = Status(mailbox=args.astring("a mailbox name"))
    cmd.items = [_atom_upper(a) for a in args.list("status items")]
    if not cmd.items:
        raise ParseError("STATUS needs at least one item")
    return cmd


def _append(args):
    cmd = Append(mailbox=args.astring("a mailbox name"))
    while True:
        cmd.messages.append(_append_message(args))
        if not args.more():
            return cmd


MAX_CATENATE_PARTS = 100   # parts of one CATENATE


def _append_message(args):
    """One message of APPEND (MULTIAPPEND) or REPLACE: flags, date, then a
    literal, UTF8 (literal) or CATENATE (parts)."""
    flags, date = [], None
    if isinstance(args.peek(), list):
        flags = args.take()
        if not all(isinstance(f, str) and not isinstance(f, Str) for f in flags):
            raise ParseError("flags are atoms")
    if isinstance(args.peek(), Str) and _DATE_TIME.fullmatch(args.peek()):
        date = str(args.take())
    t = args.take("a message literal")
    if isinstance(t, str) and not isinstance(t, Str) and t.upper() == "CATENATE":
        parts, binary = _catenate_parts(args)
        return AppendMessage(list(flags), date, b"", binary, parts)
    if isinstance(t, str) and not isinstance(t, Str) and t.upper() == "UTF8":
        inner = args.list("(literal) after UTF8")
        if len(inner) != 1 or not isinstance(inner[0], Str):
            raise ParseError("UTF8 takes one literal")
        t = inner[0]
    if not isinstance(t, Str):
        raise ParseError("expected the message as a literal")
    return AppendMessage(list(flags), date, t.raw, t.binary)


def _catenate_parts(args):
    """RFC 4469: ``CATENATE (cat-part *(SP cat-part))``, cat-part = TEXT literal / URL astring.
    Returns the parts and whether a TEXT part was a literal8."""
    items = Args(args.list("CATENATE parts"))
    parts, binary = [], False
    while items.more():
        kind = items.atom("TEXT or URL").upper()
        if kind == "TEXT":
            t = items.take("a literal")
            if not isinstance(t, Str):
                raise ParseError("TEXT takes a literal")
            parts.append(("TEXT", t.raw))
            binary = binary or t.binary       # a literal8 (RFC 3516 with RFC 4469)
        elif kind == "URL":
            parts.append(("URL", items.astring("a URL")))
        else:
            raise ParseError(f"unknown CATENATE part {kind[:20]}")
        if len(parts) > MAX_CATENATE_PARTS:
            raise ParseError(f"CATENATE takes at most {MAX_CATENATE_PARTS} parts")
    if not parts:
        raise ParseError("CATENATE needs at least one part")
    return parts, binary


@dataclass
class Replace(Command):
    """REPLACE (RFC 8508): the message ``number`` (a UID with UID REPLACE) of the
    selected mailbox is replaced by ``message`` appended to ``mailbox``."""
    number: int = 0
    mailbox: str = ""
    message: AppendMessage = None


def _replace(args):
    t = args.atom("a message number")
    if not t.isdigit() or not 0 < int(t) <= 0xFFFFFFFF:
        raise ParseError("REPLACE takes one message number")
    return Replace(number=int(t), mailbox=args.astring("a mailbox name"),
                   message=_append_message(args))


_DATE_TIME = re.compile(r"[ \d]?\d-[A-Za-z]{3}-\d{4} \d\d:\d\d:\d\d [+-]\d{4}")


def _uid_expunge_or_expunge(args):
    if args.more():
        return Expunge(uids=SequenceSet.parse(args.atom("a UID set")))
    return Expunge()


def _search(args):
    cmd = Search(keys=[])
    if isinstance(args.peek(), str) and args.peek().upper() == "RETURN" \
            and not isinstance(args.peek(), Str):
        args.take()
        cmd.returns, cmd.partial = parse_returns(
            args.list("return options"),
            ("MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL", "UPDATE", "CONTEXT"))
    if isinstance(args.peek(), str) and args.peek().upper() == "CHARSET" \
            and not isinstance(args.peek(), Str):
        args.take()
        cmd.charset = args.astring("a charset").upper()
    cmd.keys = args.items[args.pos:]
    args.pos = len(args.items)
    if not cmd.keys:
        raise ParseError("SEARCH needs at least one key")
    return cmd


FETCH_MACROS = {
    "ALL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"],
    "FAST": ["FLAGS", "INTERNALDATE", "RFC822.SIZE"],
    "FULL": ["FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"],
}
SIMPLE_FETCH = {"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY",
                "BODYSTRUCTURE", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ",
                "EMAILID", "THREADID", "SAVEDATE"}
_SECTION_ITEM = re.compile(r"(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[(.*)\](?:<(\d+)(?:\.(\d+))?>)?",
                           re.I | re.S)
_PART = re.compile(r"[1-9]\d{0,8}")


def parse_fetch_item(text):
    upper = text.upper()
    if upper in SIMPLE_FETCH:
        return FetchItem(upper, label=upper)
    m = _SECTION_ITEM.fullmatch(text)
    if not m:
        raise ParseError(f"unknown fetch item {text[:40]}")
    name = m.group(1).upper()
    spec = m.group(2)
    partial = None
    if m.group(3) is not None:
        if name == "BINARY.SIZE":
            raise ParseError("BINARY.SIZE takes no partial")
        if m.group(4) is None:
            raise ParseError("partial needs <origin.length>")
        origin, length = int(m.group(3)), int(m.group(4))
        partial = (origin, length)
    parts, rest = [], spec
    while rest:
        head, dot, tail = rest.partition(".")
        if _PART.fullmatch(head):
            parts.append(int(head))
            rest = tail
            if not dot:
                break
            continue
        break
    else:
        rest = ""
    if len(parts) > 64:
        raise ParseError("section nests too deep")
    text_spec, fields = "", None
    if rest:
        if name.startswith("BINARY"):
            raise ParseError("BINARY takes only part numbers")
        word, _, field_list = rest.partition(" ")
        text_spec = word.upper()
        if text_spec in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            toks = tokenize([field_list.encode("utf-8", "surrogateescape")])
            items, _ = group(toks)
            if len(items) != 1 or not isinstance(items[0], list) or not items[0] or \
                    any(isinstance(f, list) for f in items[0]):
                raise ParseError("HEADER.FIELDS takes a list of header names")
            fields = tuple(str(f) for f in items[0])
        elif field_list or text_spec not in ("HEADER", "TEXT", "MIME"):
            raise ParseError(f"bad section {spec[:40]!r}")
        if text_spec == "MIME" and not parts:
            raise ParseError("MIME needs a part number")
    label_name = name.replace(".PEEK", "")
    label = f"{label_name}[{_section_label(parts, text_spec, fields)}]"
    if partial:
        label += f"<{partial[0]}>"
    return FetchItem(name, (tuple(parts), text_spec, fields), partial, label)


def _section_label(parts, text_spec, fields):
    out = ".".join(str(p) for p in parts)
    if text_spec:
        out = f"{out}.{text_spec}" if out else text_spec
    if fields is not None:
        out += " (" + " ".join(fields) + ")"
    return out


def _fetch(args):
    cmd = Fetch(messages=SequenceSet.parse(args.atom("a sequence set")))
    t = args.take("fetch items")
    if isinstance(t, list):
        if not t:
            raise ParseError("empty fetch item list")
        names = t
    else:
        names = FETCH_MACROS.get(t.upper(), [t]) if isinstance(t, str) and not isinstance(t, Str) \
            else None
        if names is None:
            raise ParseError("expected fetch items")
    i = 0
    while i < len(names):
        n = names[i]
        i += 1
        if not isinstance(n, str) or isinstance(n, Str):
            raise ParseError("fetch items are atoms")
        if n.upper() == "PREVIEW":      # RFC 8970: PREVIEW [(LAZY)]
            lazy = i < len(names) and isinstance(names[i], list)
            if lazy:
                mods = names[i]
                i += 1
                if not mods or any(isinstance(m, Str) or not isinstance(m, str)
                                   or m.upper() != "LAZY" for m in mods):
                    raise ParseError("PREVIEW takes only the LAZY modifier")
            cmd.items.append(FetchItem("PREVIEW", label="PREVIEW"))
            continue
        cmd.items.append(parse_fetch_item(n))
    if args.more():
        mods = Args(args.list("fetch modifiers"))
        while mods.more():
            name = mods.atom("a fetch modifier").upper()
            if name == "CHANGEDSINCE":
                cmd.changedsince = mods.number("a MODSEQ")
            elif name == "VANISHED":
                cmd.vanished = True
            elif name == "PARTIAL" and cmd.partial is None:
                cmd.partial = parse_partial(mods.atom("a PARTIAL range"))
            else:
                raise ParseError(f"unknown fetch modifier {name[:30]}")
    return cmd


def _store(args):
    cmd = Store(messages=SequenceSet.parse(args.atom("a sequence set")))
    if isinstance(args.peek(), list):
        mods = Args(args.take())
        while mods.more():
            name = mods.atom("a store modifier").upper()
            if name != "UNCHANGEDSINCE":
                raise ParseError(f"unknown store modifier {name[:30]}")
            cmd.unchangedsince = mods.number("a MODSEQ")
    item = args.atom("FLAGS, +FLAGS or -FLAGS").upper()
    m = re.fullmatch(r"([+-]?)FLAGS(\.SILENT)?", item)
    if not m:
        raise ParseError(f"bad store item {item[:30]}")
    cmd.mode = {"+": "add", "-": "remove", "": "replace"}[m.group(1)]
    cmd.silent = bool(m.group(2))
    if isinstance(args.peek(), list):
        flags = args.take()
    else:
        flags = []
        while args.more():
            flags.append(args.take())
    for f in flags:
        if not isinstance(f, str) or isinstance(f, Str) or not _FLAG.fullmatch(f):
            raise ParseError(f"bad flag {str(f)[:30]!r}")
    cmd.flags = list(flags)
    return cmd


_FLAG = re.compile(r"\\?[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+")


def _copy(args):
    return Copy(messages=SequenceSet.parse(args.atom("a sequence set")),
                mailbox=args.astring("a mailbox name"))


PARSERS = {
    "CAPABILITY": _simple, "NOOP": _simple, "LOGOUT": _simple, "STARTTLS": _simple,
    "CHECK": _simple, "CLOSE": _simple, "UNSELECT": _simple, "IDLE": _simple,
    "NAMESPACE": _simple, "ID": _id, "ENABLE": _enable, "LOGIN": _login,
    "AUTHENTICATE": _authenticate, "SELECT": _select, "EXAMINE": _select,
    "CREATE": _mailbox_cmd, "DELETE": _mailbox_cmd, "SUBSCRIBE": _mailbox_cmd,
    "UNSUBSCRIBE": _mailbox_cmd, "RENAME": _rename, "LIST": _list, "LSUB": _list,
    "XLIST": _list, "STATUS": _status, "APPEND": _append, "EXPUNGE": _uid_expunge_or_expunge,
    "SEARCH": _search, "FETCH": _fetch, "STORE": _store, "COPY": _copy, "MOVE": _copy,
    "GETQUOTA": parse_quota.getquota,
    "GETQUOTAROOT": parse_quota.getquotaroot,
    "SETQUOTA": parse_quota.setquota,
    "GETMETADATA": parse_quota.getmetadata,
    "SETMETADATA": parse_quota.setmetadata,
    "REPLACE": _replace,
    "SETACL": parse_acl.setacl,
    "DELETEACL": parse_acl.with_identifier,
    "LISTRIGHTS": parse_acl.with_identifier,
    "GETACL": parse_acl.mailbox_only,
    "MYRIGHTS": parse_acl.mailbox_only,
    "COMPRESS": parse_ext.compress,
    "UNAUTHENTICATE": _simple,
    "NOTIFY": parse_ext.notify,
    "ESEARCH": parse_ext.esearch,
    "SORT": parse_sort,
    "THREAD": parse_thread,
    "CANCELUPDATE": parse_cancelupdate,
}
