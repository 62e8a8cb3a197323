"""The grammar of QUOTA (RFC 9208: GETQUOTA, GETQUOTAROOT, SETQUOTA) and
METADATA (RFC 5464: GETMETADATA, SETMETADATA), for ``parser.PARSERS``.

Each parser takes the ``parser.Args`` cursor of one command and returns its
typed command; malformed input raises ``ParseError`` (a BAD reply). Entry
names are checked here (RFC 5464 section 3.2: a ``/private`` or ``/shared``
prefix, no ``*``, ``%``, ``//``, trailing ``/``, control or non-ASCII
characters; a vendor entry has at least four components) and folded to
lower case, as they are case-insensitive. GETMETADATA also takes a bare
``/private`` or ``/shared`` (with DEPTH: every entry of that scope).
"""

import re
from dataclasses import dataclass, field

from .wire import Command, ParseError, Str

MAX_ENTRY_NAME = 1024      # octets of an entry name (the column's size)
MAX_ENTRIES = 100          # entries named in one GETMETADATA / SETMETADATA


@dataclass
class GetQuota(Command):
    root: str = ""


@dataclass
class GetQuotaRoot(Command):
    mailbox: str = ""


@dataclass
class SetQuota(Command):
    root: str = ""
    limits: dict = field(default_factory=dict)     # resource name (upper) -> limit


@dataclass
class GetMetadata(Command):
    mailbox: str = ""
    entries: list = field(default_factory=list)
    maxsize: int = None
    depth: str = "0"          # "0", "1" or "infinity"


@dataclass
class SetMetadata(Command):
    mailbox: str = ""
    values: list = field(default_factory=list)    # [(entry, bytes or None)]


def _is_atom(t, word=None):
    return isinstance(t, str) and not isinstance(t, Str) and (word is None or t.upper() == word)


def getquota(args):
    return GetQuota(root=args.astring("a quota root"))


def getquotaroot(args):
    return GetQuotaRoot(mailbox=args.astring("a mailbox name"))


_RESOURCE = re.compile(r"[A-Za-z][A-Za-z0-9\-]{0,63}")


def setquota(args):
    cmd = SetQuota(root=args.astring("a quota root"))
    items = args.list("a list of resource limits")
    if len(items) % 2 or len(items) > 32:
        raise ParseError("SETQUOTA takes a list of resource and limit pairs")
    for name, limit in zip(items[::2], items[1::2]):
        if not _is_atom(name) or not _RESOURCE.fullmatch(name):
            raise ParseError("expected a resource name")
        if not _is_atom(limit) or not limit.isdigit() or int(limit) >= 1 << 63:
            raise ParseError("a resource limit is a number")
        cmd.limits[name.upper()] = int(limit)
    return cmd


_BAD_ENTRY = re.compile(r"[^\x20-\x7e]|[*%]|//")


def entry_name(t, scope_ok=False):
    """The checked, lower-cased entry name of token ``t``; with ``scope_ok``
    a bare ``/private`` or ``/shared`` too (GETMETADATA with DEPTH lists what
    is below them)."""
    if isinstance(t, list) or t is None:
        raise ParseError("expected an entry name")
    name = str(t)
    low = name.lower()
    if scope_ok and low in ("/private", "/shared"):
        return low
    if len(name.encode("utf-8", "surrogateescape")) > MAX_ENTRY_NAME or _BAD_ENTRY.search(name) \
            or name.endswith("/") or not (low.startswith("/private/") or low.startswith("/shared/")):
        raise ParseError(f"invalid entry name {name[:60]!r}")
    parts = low.split("/")
    if len(parts) > 2 and parts[2] == "vendor" and len(parts) < 5:
        raise ParseError("a vendor entry name has at least four components")
    return low


def _options(cmd, items):
    opts = list(items)
    if not opts or len(opts) % 2:
        raise ParseError("GETMETADATA options are MAXSIZE n and DEPTH d")
    for name, value in zip(opts[::2], opts[1::2]):
        if not _is_atom(name) or not _is_atom(value):
            raise ParseError("GETMETADATA options are MAXSIZE n and DEPTH d")
        if name.upper() == "MAXSIZE" and value.isdigit() and int(value) < 1 << 32:
            cmd.maxsize = int(value)
        elif name.upper() == "DEPTH" and value.lower() in ("0", "1", "infinity"):
            cmd.depth = value.lower()
        else:
            raise ParseError(f"bad GETMETADATA option {str(name)[:20]} {str(value)[:20]}")


def _is_options(t):
    return isinstance(t, list) and t and _is_atom(t[0]) and t[0].upper() in ("MAXSIZE", "DEPTH")


def getmetadata(args):
    """``GETMETADATA [options] mailbox entries``; the options are also taken
    after the mailbox (as RFC 5464's own examples put them)."""
    cmd = GetMetadata()
    if isinstance(args.peek(), list):
        _options(cmd, args.take())
    cmd.mailbox = args.astring("a mailbox name")
    if _is_options(args.peek()) and args.pos + 1 < len(args.items):
        _options(cmd, args.take())
    if not args.more():
        raise ParseError("GETMETADATA needs an entry")
    while args.more():
        t = args.take()
        names = t if isinstance(t, list) else [t]
        if not names:
            raise ParseError("empty entry list")
        cmd.entries.extend(entry_name(n, scope_ok=True) for n in names)
    if len(cmd.entries) > MAX_ENTRIES:
        raise ParseError(f"at most {MAX_ENTRIES} entries in one command")
    return cmd


def setmetadata(args):
    cmd = SetMetadata(mailbox=args.astring("a mailbox name"))
    items = args.list("a list of entries and values")
    if not items or len(items) % 2:
        raise ParseError("SETMETADATA takes a list of entry and value pairs")
    if len(items) > 2 * MAX_ENTRIES:
        raise ParseError(f"at most {MAX_ENTRIES} entries in one command")
    for name, value in zip(items[::2], items[1::2]):
        if isinstance(value, list):
            raise ParseError("an entry value is a string, a literal or NIL")
        if isinstance(value, Str):
            data = value.raw
        elif value.upper() == "NIL":
            data = None
        else:
            raise ParseError("an entry value is a string, a literal or NIL")
        cmd.values.append((entry_name(name), data))
    return cmd
