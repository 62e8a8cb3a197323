"""ManageSieve (RFC 5804 section 4) on the wire: reading one command (atoms,
quoted strings and literals) from an asyncio stream, and writing strings and
responses.

Choices:

- A command is one line plus the literals it announces. Literals may be
  ``{n+}`` (the RFC's only client form) or ``{n}`` (older clients send it);
  neither gets a continuation, so both are read straight on.
- Bounds: a line is at most ``MAX_LINE`` octets (the stream's limit; an OAuth
  token fits), a quoted string at most 1024 octets (the grammar's limit), a
  command at most ``MAX_ITEMS`` items and ``MAX_LITERALS`` literals. A
  literal larger than ``max_literal`` (the caller passes the script size
  limit) is read and thrown away when it is at most ``DISCARD_LIMIT``
  octets, so the client gets a ``NO (QUOTA/MAXSIZE)`` and the connection
  stays in step; beyond that the connection ends with ``BYE``.
- Strings the server sends are quoted when short and printable, else sent as
  ``{n}`` literals (a CR or LF cannot be quoted).
"""

import asyncio
import re

MAX_LINE = 16 * 1024
MAX_QUOTED = 1024
MAX_ITEMS = 8
MAX_LITERALS = 4
DISCARD_LIMIT = 1024 * 1024

_LITERAL = re.compile(rb"\{(0|[1-9][0-9]{0,9})(\+?)\}$")
_ATOM = re.compile(rb"[^\s\"{}()]+")


class Str(bytes):
    """A string argument (quoted or literal), as opposed to an atom."""


class Syntax(Exception):
    """A command that cannot be parsed; the line (and its literals) was consumed."""

    def __init__(self, text, code=None):
        super().__init__(text)
        self.code = code


class Fatal(Exception):
    """The connection cannot go on (line or literal far too long)."""


async def read_line(reader):
    """One line without its CRLF (a bare LF is accepted); raises Fatal when
    longer than the stream limit, IncompleteReadError at EOF."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise Fatal("line too long") from None
    return line[:-2] if line.endswith(b"\r\n") else line[:-1]


def tokenize(line):
    """``(items, literal size or None)`` of one line."""
    items, i, n = [], 0, len(line)
    while i < n:
        c = line[i:i + 1]
        if c == b" ":
            i += 1
            continue
        if c == b'"':
            out, i = bytearray(), i + 1
            while True:
                if i >= n:
                    raise Syntax("unterminated quoted string")
                ch = line[i]
                if ch == 0x5c:                  # backslash: only \" and \\ (QUOTED-SPECIALS)
                    if i + 1 >= n or line[i + 1] not in (0x22, 0x5c):
                        raise Syntax("a quoted string escapes only \\\" and \\\\")
                    out.append(line[i + 1])
                    i += 2
                elif ch == 0x22:
                    i += 1
                    break
                elif ch in (0, 13, 10):
                    raise Syntax("a quoted string cannot hold NUL, CR or LF")
                else:
                    out.append(ch)
                    i += 1
                if len(out) > MAX_QUOTED:
                    raise Syntax(f"a quoted string is at most {MAX_QUOTED} octets; use a literal")
            items.append(Str(out))
            continue
        if c == b"{":
            m = _LITERAL.match(line, i)
            if m is None:
                raise Syntax("a literal is {n+} at the end of a line")
            return items, int(m.group(1))
        m = _ATOM.match(line, i)
        if m is None:
            raise Syntax("unexpected character " + repr(c.decode("latin-1")))
        items.append(m.group().decode("ascii", "replace"))
        i = m.end()
    return items, None


async def read_command(reader, max_literal):
    """The items of the next command: ``str`` atoms and ``Str`` strings.
    Raises Syntax (after reading the whole command), Fatal, or
    IncompleteReadError."""
    items, literals, error = [], 0, None
    line = await read_line(reader)
    while True:
        try:
            got, size = tokenize(line)
        except Syntax as exc:
            got, size, error = [], None, error or exc
        items.extend(got)
        if size is None:
            break
        literals += 1
        if literals > MAX_LITERALS:
            raise Fatal("too many literals in one command")
        if size > max_literal:
            if size > DISCARD_LIMIT:
                raise Fatal(f"a literal of {size} octets is far beyond the limit")
            remaining = size
            while remaining:
                remaining -= len(await reader.readexactly(min(remaining, 65536)))
            error = error or Syntax(f"a literal is at most {max_literal} octets", "QUOTA/MAXSIZE")
            items.append(Str())
        else:
            items.append(Str(await reader.readexactly(size)))
        line = await read_line(reader)
    if error is not None:
        raise error
    if len(items) > MAX_ITEMS:
        raise Syntax("too many arguments")
    return items


def string(value):
    """``value`` (str or bytes) as a ManageSieve string."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if len(data) <= MAX_QUOTED and not any(b in data for b in (0, 10, 13)):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(data) + data


def response(kind, code=None, text=None):
    """An ``OK``/``NO``/``BYE`` line with an optional (code) and text."""
    out = kind.encode()
    if code:
        out += b" (" + (code.encode() if isinstance(code, str) else code) + b")"
    if text:
        out += b" " + string(text)
    return out + b"\r\n"
