"""The Sieve grammar (RFC 5228 section 8): tokens to a tree of commands.

Tokens come from sievelib's lexer (its token patterns, unchanged); the tree
is built here rather than by sievelib's ``Parser`` because that parser keeps
its state (the loaded extensions, the registered commands) in module globals,
shared by every thread that compiles at once, and records no line numbers
for the commands it builds: Roost needs both (compiles run in worker threads,
and every error CHECKSCRIPT reports names its line). This module knows the
syntax only; what commands mean, and which exist, is ``interpreter``'s.

A node is ``Node(name, args, tests, block, line)``: ``args`` are ``Arg``
(kind "tag", "num", "str" or "list"), ``tests`` the test(s) after them and
``block`` the commands in braces (None when the command ended with ";").
Strings are unquoted and multi-line strings dot-unstuffed; nothing else is
decoded (encoded-character and variables are the interpreter's).
"""

import re

from sievelib.parser import Lexer, ParseError, Parser

from . import SieveError

MAX_NESTING = 64      # blocks and tests inside each other
MAX_TOKENS = 50000

_ESCAPE = re.compile(r"\\(.)", re.S)
_NUMBER_UNITS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


class Arg:
    __slots__ = ("kind", "value", "line")

    def __init__(self, kind, value, line):
        self.kind, self.value, self.line = kind, value, line

    def __repr__(self):
        return f"Arg({self.kind}, {self.value!r})"


class Node:
    __slots__ = ("name", "args", "tests", "block", "line")

    def __init__(self, name, args, tests, block, line):
        self.name, self.args, self.tests, self.block, self.line = name, args, tests, block, line

    def __repr__(self):
        return f"Node({self.name}, {self.args}, {self.tests}, {self.block})"


def _string(kind, raw, line):
    text = raw.decode("utf-8", "surrogateescape")
    if kind == "string":
        return _ESCAPE.sub(r"\1", text[1:-1])
    # text: [spaces / comment] CRLF *(line CRLF) "." CRLF
    nl = text.find("\n")
    head = text[5:nl]
    if head.strip() and not head.strip().startswith("#"):
        raise SieveError("unexpected text after 'text:'", line)
    body = text[nl + 1:]
    if body.rstrip("\r").endswith("."):     # the terminating "." line
        body = body[:body.rfind("\n") + 1]
    lines = body.split("\n")
    return "\n".join(ln[1:] if ln.startswith("..") else ln for ln in lines)


def tokens(text):
    """``[(type, value, line)]`` of a script (bytes), comments dropped."""
    lexer = Lexer(Parser.lrules)
    out, line, last = [], 1, 0
    try:
        for ttype, tvalue in lexer.scan(text):
            line += text.count(b"\n", last, lexer.pos)
            last = lexer.pos
            if ttype in ("hash_comment", "bracket_comment"):
                continue
            if len(out) >= MAX_TOKENS:
                raise SieveError("script has too many tokens", line)
            if ttype in ("string", "multiline"):
                out.append(("string", _string(ttype, tvalue, line), line))
            elif ttype == "number":
                v = tvalue.decode("ascii")
                unit = _NUMBER_UNITS.get(v[-1].lower(), 1)
                out.append(("number", int(v.rstrip("KMGkmg")) * unit, line))
            else:
                out.append((ttype, tvalue.decode("ascii"), line))
    except ParseError as e:
        line += text.count(b"\n", last, lexer.pos)
        if text.startswith(b"/*", lexer.pos):
            raise SieveError("unterminated comment", line) from None
        if text.startswith(b'"', lexer.pos) or text.startswith(b"text:", lexer.pos):
            raise SieveError("unterminated string", line) from None
        raise SieveError(e.msg, line) from None
    return out


class _Parser:
    def __init__(self, toks, end_line):
        self.toks, self.i, self.end_line = toks, 0, end_line

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else (None, None, self.end_line)

    def take(self, ttype, what):
        tok = self.peek()
        if tok[0] != ttype:
            found = "end of script" if tok[0] is None else repr(tok[1])
            raise SieveError(f"expected {what}, found {found}", tok[2])
        self.i += 1
        return tok

    def commands(self, depth, closing):
        out = []
        while True:
            tok = self.peek()
            if tok[0] is None and not closing:
                return out
            if tok[0] == "right_cbracket" and closing:
                self.i += 1
                return out
            out.append(self.command(depth))

    def command(self, depth):
        if depth > MAX_NESTING:
            raise SieveError("blocks nested too deeply", self.peek()[2])
        _, name, line = self.take("identifier", "a command")
        args, tests = self.arguments(depth)
        tok = self.peek()
        if tok[0] == "semicolon":
            self.i += 1
            return Node(name.lower(), args, tests, None, line)
        if tok[0] == "left_cbracket":
            self.i += 1
            return Node(name.lower(), args, tests, self.commands(depth + 1, True), line)
        found = "end of script" if tok[0] is None else repr(tok[1])
        raise SieveError(f"expected ';' or '{{' after {name}, found {found}", tok[2])

    def arguments(self, depth):
        args = []
        while True:
            ttype, value, line = self.peek()
            if ttype == "tag":
                args.append(Arg("tag", value.lower(), line))
            elif ttype == "number":
                args.append(Arg("num", value, line))
            elif ttype == "string":
                args.append(Arg("str", value, line))
            elif ttype == "left_bracket":
                self.i += 1
                items = [self.take("string", "a string")[1]]
                while self.peek()[0] == "comma":
                    self.i += 1
                    items.append(self.take("string", "a string")[1])
                self.take("right_bracket", "',' or ']'")
                args.append(Arg("list", items, line))
                continue
            else:
                break
            self.i += 1
        ttype = self.peek()[0]
        if ttype == "identifier":
            return args, [self.test(depth + 1)]
        if ttype == "left_parenthesis":
            return args, self.test_list(depth + 1)
        return args, []

    def test_list(self, depth):
        self.take("left_parenthesis", "'('")
        tests = [self.test(depth)]
        while self.peek()[0] == "comma":
            self.i += 1
            tests.append(self.test(depth))
        self.take("right_parenthesis", "',' or ')'")
        return tests

    def test(self, depth):
        if depth > MAX_NESTING:
            raise SieveError("tests nested too deeply", self.peek()[2])
        _, name, line = self.take("identifier", "a test")
        args, tests = self.arguments(depth)
        return Node(name.lower(), args, tests, None, line)


def parse(text):
    """The top-level commands of a script (bytes); raises ``SieveError``."""
    return _Parser(tokens(text), text.count(b"\n") + 1).commands(0, False)
