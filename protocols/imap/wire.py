"""IMAP bytes on the wire: command framing, tokens and response encoding.

Owns three small things and nothing else:

* ``CommandFramer`` is fed whatever bytes arrive and yields complete command
  units: a list of segments ``[line, literal, line, literal, ..., line]``.
  It never holds more than one line plus the literal being read, enforces the
  line and literal limits, and says when a synchronising literal ``{n}``
  needs a ``+`` continuation (``{n+}`` and ``{n-}`` never do).
* ``tokenize`` turns one unit into tokens: atoms (``str``), strings
  (``Str``, from quoted strings and literals), and ``(``/``)`` markers.
  Atoms may carry a bracketed section (``BODY[HEADER.FIELDS (A B)]<0.9>``).
* ``astring``/``nstring``/``literal`` encode values for responses, and
  ``uid_set_text`` a set of numbers (APPENDUID, COPYUID, VANISHED, ESEARCH ALL).

It must not know any command or touch storage.
"""

import re
from dataclasses import dataclass

LINE_LIMIT = 64 * 1024
LITERAL_LIMIT = 64 * 1024 * 1024

_LITERAL_MARK = re.compile(rb"(~?)\{(\d{1,20})([+-]?)\}\r?$")


@dataclass
class Command:
    """What every parsed command has (``parser`` and the ``parse_*`` grammars
    subclass it)."""
    tag: str = ""
    verb: str = ""
    uid: bool = False


class ParseError(Exception):
    """A malformed command. ``tag`` is known when the line got that far."""

    def __init__(self, message, tag=None):
        super().__init__(message)
        self.tag = tag


class TooBig(ParseError):
    """A line or literal over the limit (the connection drops the command).
    ``literal`` tells a refused literal (NO [TOOBIG]) from a long line (BAD);
    ``synchronizing`` a ``{n}`` literal (no octets follow) from ``{n+}``/``{n-}``."""

    literal = False
    synchronizing = False


class LiteralRequest:
    """The framer is waiting for a synchronising literal of ``size`` octets."""

    def __init__(self, size, tag):
        self.size = size
        self.tag = tag


class Abandoned:
    """A command was dropped while framing (too long); ``error`` says why."""

    def __init__(self, error):
        self.error = error


class CommandFramer:
    """Incremental framing of commands and their literals."""

    def __init__(self, line_limit=LINE_LIMIT, literal_limit=LITERAL_LIMIT):
        self.line_limit = line_limit
        self.literal_limit = literal_limit
        self.buf = bytearray()
        self.segments = []
        self.literal_left = None   # octets of the current literal still to read
        self.skipping = 0          # octets of a refused literal to throw away
        self.discarding = False    # dropping the rest of an over-long line
        self.total = 0

    def reset(self):
        self.buf.clear()
        self.segments = []
        self.literal_left = None
        self.skipping = 0
        self.discarding = False
        self.total = 0

    @property
    def pending(self):
        """Part of a command (or of a refused literal) has arrived, not all of it."""
        return bool(self.buf or self.segments or self.literal_left is not None or self.skipping)

    def feed(self, data):
        """Add bytes; yield units (lists of segments), ``LiteralRequest`` and
        ``Abandoned`` events in order."""
        self.buf += data
        return self.events()

    def events(self):
        """The events of the bytes fed so far. Every yield comes after the
        framer's state is updated, so a caller may stop iterating after any
        event and frame the rest later with another ``events()``."""
        while True:
            if self.skipping:
                n = min(self.skipping, len(self.buf))
                del self.buf[:n]
                self.skipping -= n
                if self.skipping:
                    return
                continue
            if self.literal_left is not None:
                if len(self.buf) < self.literal_left:
                    return
                self.segments.append(bytes(self.buf[:self.literal_left]))
                del self.buf[:self.literal_left]
                self.literal_left = None
                continue
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) > self.line_limit and not self.discarding:
                    self.discarding = True
                    self.segments = []
                    yield Abandoned(TooBig("line too long"))
                if self.discarding:
                    self.buf.clear()
                return
            line = bytes(self.buf[:nl])
            del self.buf[:nl + 1]
            if self.discarding:
                self.discarding = False
                continue
            if len(line) > self.line_limit:
                self.segments = []
                yield Abandoned(TooBig("line too long"))
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            m = _LITERAL_MARK.search(line)
            if m is None:
                self.segments.append(line)
                unit, self.segments, self.total = self.segments, [], 0
                yield unit
                continue
            size = int(m.group(2))
            self.segments.append(line)
            self.total += size
            if size > self.literal_limit or self.total > self.literal_limit:
                tag = _tag_of(self.segments[0])
                self.segments, self.total = [], 0
                if m.group(3):   # non-synchronising: the octets follow anyway
                    self.skipping = size
                error = TooBig(f"literal of {size} octets is over the limit of "
                               f"{self.literal_limit}", tag)
                error.literal = True
                error.synchronizing = not m.group(3)
                yield Abandoned(error)
                continue
            self.literal_left = size
            if not m.group(3) and len(self.buf) < size:
                yield LiteralRequest(size, _tag_of(self.segments[0]))


def _tag_of(line):
    tag = line.split(b" ", 1)[0]
    return tag.decode("ascii", "replace") if tag and _TAG_OK.fullmatch(tag) else None


_TAG_OK = re.compile(rb"[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]{1,64}")


# --- tokens --------------------------------------------------------------

class Str(str):
    """A string argument (quoted or literal), as opposed to an atom.
    ``raw`` keeps the octets; ``binary`` marks a ``~{n}`` literal."""

    raw = b""
    binary = False

    @classmethod
    def of(cls, raw, binary=False):
        s = cls(raw.decode("utf-8", "surrogateescape"))
        s.raw = raw
        s.binary = binary
        return s


LPAREN = ("(",)
RPAREN = (")",)

_ATOM_STOP = b" ()\"{"   # atom-specials that end an atom (besides CTL)


def tokenize(unit):
    """Tokens of one framed command unit. Raises ParseError."""
    tokens = []
    last = len(unit) - 1
    for index in range(0, len(unit), 2):
        line = unit[index]
        end = len(line)
        literal = None
        if index < last:
            m = _LITERAL_MARK.search(line)
            end = m.start()
            literal = Str.of(unit[index + 1], binary=bool(m.group(1)))
        _scan(line, 0, end, tokens)
        if literal is not None:
            tokens.append(literal)
    return tokens


def _scan(line, i, end, tokens):
    while i < end:
        c = line[i]
        if c == 32:
            i += 1
        elif c == 40:
            tokens.append(LPAREN)
            i += 1
        elif c == 41:
            tokens.append(RPAREN)
            i += 1
        elif c == 34:
            i = _quoted(line, i + 1, end, tokens)
        elif c < 32 or c == 127:
            raise ParseError("control character in command")
        elif c == 123:
            raise ParseError("literal marker in the middle of a line")
        else:
            i = _atom(line, i, end, tokens)


def _quoted(line, i, end, tokens):
    out = bytearray()
    while i < end:
        c = line[i]
        if c == 34:
            tokens.append(Str.of(bytes(out)))
            return i + 1
        if c == 92:
            if i + 1 < end and line[i + 1] in (34, 92):
                out.append(line[i + 1])
                i += 2
                continue
            raise ParseError("backslash in a quoted string must escape \" or \\")
        if c in (13, 10, 0):
            raise ParseError("CR, LF or NUL inside a quoted string")
        out.append(c)
        i += 1
    raise ParseError("unterminated quoted string")


# Fetch items whose "[" opens a section (which may hold spaces, parentheses
# and quoted strings); anywhere else "[" is an ordinary ATOM-CHAR and "]" an
# ASTRING-CHAR (RFC 3501 section 9), as in a mailbox name "a[b".
_SECTIONED = (b"BODY", b"BODY.PEEK", b"BINARY", b"BINARY.PEEK", b"BINARY.SIZE")


def _atom(line, i, end, tokens):
    start = i
    depth = 0
    while i < end:
        c = line[i]
        if c == 91 and (depth or line[start:i].upper() in _SECTIONED):        # [
            depth += 1
        elif c == 93:      # ]
            depth = max(depth - 1, 0)
        elif depth and c == 34:
            j = line.find(b'"', i + 1, end)
            while j > 0 and line[j - 1] == 92:
                j = line.find(b'"', j + 1, end)
            if j < 0:
                raise ParseError("unterminated quoted string in section")
            i = j
        elif depth == 0 and (c in _ATOM_STOP or c < 32 or c == 127):
            break
        elif c < 32 or c == 127:
            raise ParseError("control character in command")
        i += 1
    if depth:
        raise ParseError("unbalanced [ in argument")
    tokens.append(line[start:i].decode("utf-8", "surrogateescape"))
    return i


def group(tokens, pos=0, depth=0):
    """Nest ``(`` ... ``)`` into lists: returns (items, next position)."""
    out = []
    while pos < len(tokens):
        t = tokens[pos]
        if t is LPAREN:
            if depth > 32:
                raise ParseError("too deeply nested")
            inner, pos = group(tokens, pos + 1, depth + 1)
            out.append(inner)
            continue
        if t is RPAREN:
            if depth == 0:
                raise ParseError("unbalanced )")
            return out, pos + 1
        out.append(t)
        pos += 1
    if depth:
        raise ParseError("missing )")
    return out, pos


# --- response encoding ------------------------------------------------------

_SAFE_QUOTED = re.compile(rb'[\x01-\x09\x0b\x0c\x0e-\x7f]*')
_ATOM_SAFE = re.compile(rb"[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+")


def literal(data):
    return b"{%d}\r\n" % len(data) + data


def quoted(data, utf8=False):
    """A quoted string when possible, else a literal."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if len(data) < 1024 and (_SAFE_QUOTED.fullmatch(data) or
                             (utf8 and _utf8_ok(data))):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data)


def _utf8_ok(data):
    if b"\r" in data or b"\n" in data or b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def nstring(value, utf8=False):
    if value is None:
        return b"NIL"
    return quoted(value, utf8)


def astring(value, utf8=False):
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    if _ATOM_SAFE.fullmatch(data) and data.upper() != b"NIL":
        return data
    return quoted(data, utf8)


def uid_set_text(uids):
    """Ascending numbers as a compact set: ``1:3,7,9:10``."""
    uids = sorted(uids)
    if not uids:
        return ""
    out = []
    start = prev = uids[0]
    for u in uids[1:]:
        if u != prev + 1:
            out.append(str(start) if start == prev else f"{start}:{prev}")
            start = u
        prev = u
    out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)
