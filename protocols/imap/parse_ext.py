"""Grammar of the connection and notification extensions: COMPRESS (RFC
4978), UNAUTHENTICATE (RFC 8437), NOTIFY (RFC 5465) and the MULTISEARCH
ESEARCH command (RFC 7377). Imported by ``parser`` into ``PARSERS``.

Both NOTIFY and ESEARCH name mailboxes with RFC 5465's filter-mailboxes
(``Filter``); the session resolves them (``protocols.imap.filters``).
"""

from dataclasses import dataclass, field

from .wire import Command, ParseError, Str

MAX_FILTER_NAMES = 256     # mailbox names in one command's filters
MAX_GROUPS = 32            # NOTIFY event groups


@dataclass(frozen=True)
class Filter:
    """``kind``: SELECTED, SELECTED-DELAYED, INBOXES, PERSONAL, SUBSCRIBED,
    SUBTREE, SUBTREE-ONE or MAILBOXES; ``names``: raw mailbox names of the last three."""
    kind: str
    names: tuple = ()


@dataclass
class Compress(Command):
    mechanism: str = ""


@dataclass
class Notify(Command):
    none: bool = False
    status: bool = False
    groups: list = field(default_factory=list)   # (Filter, events or None for NONE)


@dataclass
class MultiSearch(Command):
    sources: list = None         # [Filter]; None: the selected mailbox
    search: object = None        # parser.Search (keys, charset, returns)


def _is_atom(t):
    return isinstance(t, str) and not isinstance(t, Str)


def compress(args):
    return Compress(mechanism=args.atom("a compression mechanism").upper())


FILTER_KINDS = {"SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED",
                "SUBTREE", "SUBTREE-ONE", "MAILBOXES"}
NOTIFY_KINDS = FILTER_KINDS - {"SUBTREE-ONE"}          # RFC 5465 section 8
ESEARCH_KINDS = FILTER_KINDS - {"SELECTED-DELAYED"}    # RFC 7377 section 6
NAMED = {"SUBTREE", "SUBTREE-ONE", "MAILBOXES"}


def filters(items, pos, count, kinds, one=False):
    """Filters of ``kinds`` from ``items[pos:]``: returns ([Filter], next pos). ``one``: read one."""
    out = []
    while pos < len(items) and _is_atom(items[pos]) and items[pos].upper() in kinds:
        kind = items[pos].upper()
        pos += 1
        names = ()
        if kind in NAMED:
            if pos >= len(items):
                raise ParseError(f"{kind} needs one or more mailboxes")
            t = items[pos]
            pos += 1
            names = tuple(t) if isinstance(t, list) else (t,)
            if not names or any(isinstance(n, list) for n in names):
                raise ParseError(f"{kind} takes a mailbox or a list of mailboxes")
            count[0] += len(names)
            if count[0] > MAX_FILTER_NAMES:
                raise ParseError(f"at most {MAX_FILTER_NAMES} mailbox names in filters")
        out.append(Filter(kind, names))
        if one:
            break
    return out, pos


EVENTS = {"MESSAGENEW": "MessageNew", "MESSAGEEXPUNGE": "MessageExpunge",
          "FLAGCHANGE": "FlagChange", "ANNOTATIONCHANGE": "AnnotationChange",
          "MAILBOXNAME": "MailboxName", "SUBSCRIPTIONCHANGE": "SubscriptionChange",
          "MAILBOXMETADATACHANGE": "MailboxMetadataChange",
          "SERVERMETADATACHANGE": "ServerMetadataChange"}


def notify(args):
    mode = args.atom("SET or NONE").upper()
    if mode == "NONE":
        return Notify(none=True)
    if mode != "SET":
        raise ParseError("NOTIFY takes SET or NONE")
    cmd = Notify()
    if _is_atom(args.peek()) and args.peek().upper() == "STATUS":
        args.take()
        cmd.status = True
    count = [0]
    while True:
        group = args.list("an event group")
        found, pos = filters(group, 0, count, NOTIFY_KINDS, one=True)
        if not found:
            raise ParseError("an event group starts with a mailbox filter")
        if pos != len(group) - 1:
            raise ParseError("an event group is (filter events)")
        events = group[pos]
        if _is_atom(events) and events.upper() == "NONE":
            cmd.groups.append((found[0], None))
        elif isinstance(events, list) and events:
            cmd.groups.append((found[0], _events(events)))
        else:
            raise ParseError("events are a non-empty list or NONE")
        if len(cmd.groups) > MAX_GROUPS:
            raise ParseError(f"at most {MAX_GROUPS} event groups")
        if not args.more():
            return cmd


def _events(items):
    """[(name, fetch attributes or None)] of one event list."""
    out = []
    i = 0
    while i < len(items):
        t = items[i]
        i += 1
        if not _is_atom(t):
            raise ParseError("events are atoms")
        name = EVENTS.get(t.upper())
        if name is None:
            name = t          # an unknown event: the handler answers BADEVENT
        attrs = None
        if name == "MessageNew" and i < len(items) and isinstance(items[i], list):
            attrs = items[i]
            i += 1
            if not attrs or not all(_is_atom(a) for a in attrs):
                raise ParseError("MessageNew takes a list of fetch attributes")
        out.append((name, attrs))
    return out


def esearch(args):
    """ESEARCH [IN (filters)] [RETURN (...)] [CHARSET c] keys (RFC 7377)."""
    from .parser import _search
    cmd = MultiSearch()
    if _is_atom(args.peek()) and args.peek().upper() == "IN":
        args.take()
        spec = args.list("source mailboxes")
        found, pos = filters(spec, 0, [0], ESEARCH_KINDS)
        if not found:
            raise ParseError("IN needs at least one mailbox filter")
        if pos < len(spec):
            raise ParseError("scope options are not supported")   # none are defined for these filters
        cmd.sources = found
    cmd.search = _search(args)
    return cmd
