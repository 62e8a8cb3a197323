"""The grammar of SORT and THREAD (RFC 5256, 5957), their ESORT return options
(RFC 5267, with CONTEXT=SORT's UPDATE and CONTEXT), CANCELUPDATE (RFC 5267
CONTEXT=SEARCH and CONTEXT=SORT) and the PARTIAL range
(RFC 9394) that SEARCH, SORT and FETCH take.

Imported by ``parser`` (which maps the verbs to ``parse_sort`` and
``parse_thread``); like it, this never touches the session or storage.
"""

from dataclasses import dataclass, field

from .wire import Command, ParseError, Str

SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO")
THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")
SORT_RETURNS = ("MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL", "UPDATE", "CONTEXT")
MAX_CRITERIA = 20
MAX_RANGE = 0xFFFFFFFF


@dataclass
class Sort(Command):
    criteria: list = field(default_factory=list)   # [(key, reverse)]
    charset: str = "UTF-8"
    keys: list = field(default_factory=list)
    returns: list = None       # ESORT return options, None for a plain SORT
    partial: tuple = None      # (first, last) positions, 1-based; negative from the end


@dataclass
class Thread(Command):
    algorithm: str = ""
    charset: str = "UTF-8"
    keys: list = field(default_factory=list)


@dataclass
class CancelUpdate(Command):
    tags: list = field(default_factory=list)


def _is_atom(t):
    return isinstance(t, str) and not isinstance(t, Str)


def parse_partial(text):
    """A partial-range (``1:100`` or ``-1:-100``) as ``(first, last)``, first
    nearer the start (or the end, for negative ranges)."""
    if not _is_atom(text) or ":" not in text:
        raise ParseError("PARTIAL needs a range like 1:100 or -1:-100")
    lo, _, hi = text.partition(":")
    neg = lo.startswith("-")
    if neg != hi.startswith("-"):
        raise ParseError("a PARTIAL range is both positive or both negative")
    a, b = (lo[1:], hi[1:]) if neg else (lo, hi)
    if not (a.isdigit() and b.isdigit() and a[0] != "0" and b[0] != "0") \
            or int(a) > MAX_RANGE or int(b) > MAX_RANGE:
        raise ParseError("a PARTIAL range is two non-zero 32-bit numbers")
    a, b = sorted((int(a), int(b)))
    return (-a, -b) if neg else (a, b)


def parse_returns(items, allowed):
    """``(options, partial range)`` of a RETURN list; options upper case."""
    out, partial = [], None
    i = 0
    while i < len(items):
        t = items[i]
        if not _is_atom(t):
            raise ParseError("expected a return option")
        name = t.upper()
        if name not in allowed:
            raise ParseError(f"unknown return option {name[:20]}")
        if name == "PARTIAL":
            if partial is not None or i + 1 >= len(items):
                raise ParseError("PARTIAL takes one range, once")
            partial = parse_partial(items[i + 1])
            i += 1
        out.append(name)
        i += 1
    if partial is not None and "ALL" in out:
        raise ParseError("PARTIAL and ALL cannot be used together")
    return out, partial


def _charset(args):
    t = args.take("a charset")
    if isinstance(t, list):
        raise ParseError("expected a charset")
    return str(t).upper()


def _search_keys(args, verb):
    keys = args.items[args.pos:]
    args.pos = len(args.items)
    if not keys:
        raise ParseError(f"{verb} needs at least one search key")
    return keys


def parse_sort(args):
    cmd = Sort()
    if _is_atom(args.peek()) and args.peek().upper() == "RETURN":
        args.take()
        cmd.returns, cmd.partial = parse_returns(args.list("return options"), SORT_RETURNS)
    raw = args.list("a list of sort criteria")
    if not raw or len(raw) > MAX_CRITERIA * 2:
        raise ParseError("SORT needs one to 20 sort criteria")
    reverse = False
    for t in raw:
        if not _is_atom(t):
            raise ParseError("sort criteria are atoms")
        name = t.upper()
        if name == "REVERSE" and not reverse:
            reverse = True
            continue
        if name not in SORT_KEYS:
            raise ParseError(f"unknown sort criterion {name[:20]}")
        cmd.criteria.append((name, reverse))
        reverse = False
    if reverse or not cmd.criteria:
        raise ParseError("REVERSE must be followed by a sort key")
    cmd.charset = _charset(args)
    cmd.keys = _search_keys(args, "SORT")
    return cmd


def parse_thread(args):
    cmd = Thread()
    cmd.algorithm = args.atom("a threading algorithm").upper()
    cmd.charset = _charset(args)
    cmd.keys = _search_keys(args, "THREAD")
    return cmd


def parse_cancelupdate(args):
    cmd = CancelUpdate()
    while args.more():
        t = args.take("a tag")
        if not isinstance(t, Str):
            raise ParseError("CANCELUPDATE takes quoted tags")
        cmd.tags.append(str(t))
    if not cmd.tags or len(cmd.tags) > 100:
        raise ParseError("CANCELUPDATE takes one to 100 tags")
    return cmd
