"""The Sieve interpreter: ``compile(text)`` checks a script into a ``Script``
and ``run(script, context)`` evaluates it into an ``Outcome``.

A pure function: it reads the ``Context`` (message, envelope, verdicts,
environment), asks ``context.hooks`` what only the store knows (mailbox
existence, duplicate ids, included scripts) and returns the actions; it
writes nothing, opens nothing.

Compile does every check that does not need the message: unknown commands,
tests and tags, a missing ``require``, wrong arguments, unknown comparators,
bad relational operators, regexes that do not compile, invalid variable
names, ``require`` after other commands, ``elsif`` without ``if``... each
with its line. Strings that hold ``${...}`` (with "variables") are expanded
at run time; constant ones are checked at compile time.

Run keeps a budget (``Budget``): CPU time (wall time ten times that as a
backstop), store look-ups, actions, redirects, variable and
string sizes, include depth and count, foreverypart iterations and the
characters compared by tests. A runtime error (budget exceeded, ``error``
command, a bad mailbox name from a variable, conflicting actions) yields
``Outcome(error=..., keep=True, actions=[])``: delivery keeps the message as
if no script had run (RFC 5228 section 2.10.6).

Matching: ``:matches`` splits the pattern at ``*`` and finds each piece at
its leftmost place (linear, no backtracking; match variables then hold the
shortest expansion of each earlier ``*``, as the RFC 5229 examples show);
``:regex`` uses RE2 (google-re2: linear time, so no catastrophic
backtracking), patterns of at most ``MAX_REGEX`` characters.

Other choices: ``ihave`` is decided at compile time (``EXTENSIONS`` does not
change while a script lives), so a block under ``if ihave "unknown"`` (alone
or in ``allof``) is not compiled at all. Conflicting actions follow
Pigeonhole: reject/ereject with keep, fileinto, redirect, vacation or another
reject is a runtime error (so the message is kept), two vacations too. Flags lists
keep the last one given for a mailbox (RFC 5232 section 3). mboxmetadata and
servermetadata (RFC 5490) read the account's IMAP METADATA entries
(``storage.metadata``) through ``Hooks.metadata``: a missing entry or
mailbox makes ``metadata``/``servermetadata`` false; a value is matched as
UTF-8 text (invalid octets replaced).
"""

import re

import re2

from .. import mime
from . import SieveError
from .grammar import parse

__all__ = ["compile", "run", "EXTENSIONS", "NOTIFY_METHODS", "Script", "Budget", "bench"]

# What runs (the SIEVE capability).
EXTENSIONS = (
    "body", "comparator-i;ascii-numeric", "copy", "date", "duplicate", "editheader",
    "encoded-character", "enotify", "envelope", "environment", "ereject", "extracttext",
    "fileinto", "foreverypart", "ihave", "imap4flags", "include", "index", "mailbox",
    "mboxmetadata", "mime", "regex", "reject", "relational", "servermetadata", "spamtest",
    "spamtestplus", "special-use", "subaddress", "vacation", "vacation-seconds", "variables",
    "virustest",
)
_KNOWN = frozenset(EXTENSIONS)
NOTIFY_METHODS = ("mailto",)     # enotify (ManageSieve's NOTIFY capability)
COMPARATORS = {"i;octet": None, "i;ascii-casemap": None,
               "i;ascii-numeric": "comparator-i;ascii-numeric"}
MAX_REGEX = 1024


class Budget:
    """Limits of one run (a hostile script hits one of these and keeps)."""
    seconds = 0.1                 # CPU time of the running thread
    seconds_per_mb = 0.25         # more time for a larger message
    hook_calls = 200              # questions to the store (mailboxexists, duplicate...)
    actions = 64
    redirects = 4
    notifies = 4
    variable = 64 * 1024          # one variable's value, characters (longer: truncated)
    variables = 512 * 1024        # all variables together
    string = 256 * 1024           # one expanded string
    list_items = 1024             # strings in one list after expansion / flags
    include_depth = 8
    includes = 32
    loop_iterations = 1000        # foreverypart, all loops together
    work = 20_000_000             # characters compared by tests


class _Stop(Exception):
    pass


class _Return(Exception):
    pass


class _Break(Exception):
    def __init__(self, name):
        self.name = name


class _Error(Exception):
    """A runtime error: the message is kept."""


# --- argument specifications -------------------------------------------------
# tag -> (group, value kind or None, extension needed)

COMPARATOR = {":comparator": ("comparator", "str", None)}
MATCH = {":is": ("match", None, None), ":contains": ("match", None, None),
         ":matches": ("match", None, None), ":regex": ("match", None, "regex"),
         ":count": ("match", "str", "relational"), ":value": ("match", "str", "relational")}
ADDRPART = {":all": ("addrpart", None, None), ":localpart": ("addrpart", None, None),
            ":domain": ("addrpart", None, None), ":user": ("addrpart", None, "subaddress"),
            ":detail": ("addrpart", None, "subaddress")}
INDEX = {":index": ("index", "num", "index"), ":last": ("last", None, "index")}
MIMEOPTS = {":mime": ("mime", None, "mime"), ":anychild": ("anychild", None, "mime"),
            ":type": ("mimeopt", None, "mime"), ":subtype": ("mimeopt", None, "mime"),
            ":contenttype": ("mimeopt", None, "mime"), ":param": ("mimeopt", "list", "mime")}
MODIFIERS = {":lower": ("mod40", None, None), ":upper": ("mod40", None, None),
             ":lowerfirst": ("mod30", None, None), ":upperfirst": ("mod30", None, None),
             ":quotewildcard": ("mod20", None, None), ":quoteregex": ("mod15", None, "regex"),
             ":encodeurl": ("mod15", None, "enotify"), ":length": ("mod10", None, None)}
FLAGS = {":flags": ("flags", "list", "imap4flags")}
TESTS_MATCH = {**COMPARATOR, **MATCH}


def _tags(*dicts, **extra):
    out = {}
    for d in dicts:
        out.update(d)
    for k, v in extra.items():
        out[":" + k] = v
    return out


# name -> (kind, extension, tags, positional kinds, optional leading positionals)
SPEC = {
    "require": ("control", None, {}, ("list",), 0),
    "if": ("control", None, {}, (), 0),
    "elsif": ("control", None, {}, (), 0),
    "else": ("control", None, {}, (), 0),
    "stop": ("control", None, {}, (), 0),
    "keep": ("action", None, FLAGS, (), 0),
    "discard": ("action", None, {}, (), 0),
    "fileinto": ("action", "fileinto", _tags(FLAGS, copy=("copy", None, "copy"),
                                             create=("create", None, "mailbox"),
                                             specialuse=("specialuse", "str", "special-use")),
                 ("str",), 0),
    "redirect": ("action", None, _tags(copy=("copy", None, "copy")), ("str",), 0),
    "reject": ("action", "reject", {}, ("str",), 0),
    "ereject": ("action", "ereject", {}, ("str",), 0),
    "vacation": ("action", "vacation", _tags(
        days=("period", "num", None), seconds=("period", "num", "vacation-seconds"),
        subject=("subject", "str", None), **{"from": ("from", "str", None)},
        addresses=("addresses", "list", None), mime=("mime", None, None),
        handle=("handle", "str", None)), ("str",), 0),
    "setflag": ("action", "imap4flags", {}, ("str", "list"), 1),
    "addflag": ("action", "imap4flags", {}, ("str", "list"), 1),
    "removeflag": ("action", "imap4flags", {}, ("str", "list"), 1),
    "set": ("action", "variables", MODIFIERS, ("str", "str"), 0),
    "include": ("control", "include", _tags(
        personal=("location", None, None), **{"global": ("location", None, None)},
        once=("once", None, None), optional=("optional", None, None)), ("str",), 0),
    "return": ("control", "include", {}, (), 0),
    "global": ("control", "include", {}, ("list",), 0),
    "foreverypart": ("control", "foreverypart", _tags(name=("name", "str", None)), (), 0),
    "break": ("control", "foreverypart", _tags(name=("name", "str", None)), (), 0),
    "extracttext": ("action", "extracttext", _tags(MODIFIERS, first=("first", "num", None)),
                    ("str",), 0),
    "addheader": ("action", "editheader", _tags(last=("last", None, None)), ("str", "str"), 0),
    "deleteheader": ("action", "editheader", _tags(TESTS_MATCH, index=("index", "num", None),
                                                   last=("last", None, None)),
                     ("str", "list"), -1),
    "notify": ("action", "enotify", _tags(
        **{"from": ("from", "str", None)}, importance=("importance", "str", None),
        options=("options", "list", None), message=("message", "str", None)), ("str",), 0),
    "error": ("action", "ihave", {}, ("str",), 0),
    # tests
    "address": ("test", None, _tags(TESTS_MATCH, ADDRPART, INDEX, MIMEOPTS), ("list", "list"), 0),
    "header": ("test", None, _tags(TESTS_MATCH, INDEX, MIMEOPTS), ("list", "list"), 0),
    "envelope": ("test", "envelope", _tags(TESTS_MATCH, ADDRPART), ("list", "list"), 0),
    "exists": ("test", None, _tags(MIMEOPTS), ("list",), 0),
    "size": ("test", None, {":over": ("over", None, None), ":under": ("over", None, None)},
             ("num",), 0),
    "allof": ("test", None, {}, (), 0),
    "anyof": ("test", None, {}, (), 0),
    "not": ("test", None, {}, (), 0),
    "true": ("test", None, {}, (), 0),
    "false": ("test", None, {}, (), 0),
    "body": ("test", "body", _tags(TESTS_MATCH, raw=("transform", None, None),
                                   content=("transform", "list", None),
                                   text=("transform", None, None)), ("list",), 0),
    "string": ("test", "variables", TESTS_MATCH, ("list", "list"), 0),
    "hasflag": ("test", "imap4flags", TESTS_MATCH, ("list", "list"), 1),
    "date": ("test", "date", _tags(TESTS_MATCH, INDEX, zone=("zone", "str", None),
                                   originalzone=("zone", None, None)),
             ("str", "str", "list"), 0),
    "currentdate": ("test", "date", _tags(TESTS_MATCH, zone=("zone", "str", None)),
                    ("str", "list"), 0),
    "mailboxexists": ("test", "mailbox", {}, ("list",), 0),
    "metadata": ("test", "mboxmetadata", TESTS_MATCH, ("str", "str", "list"), 0),
    "metadataexists": ("test", "mboxmetadata", {}, ("str", "list"), 0),
    "servermetadata": ("test", "servermetadata", TESTS_MATCH, ("str", "list"), 0),
    "servermetadataexists": ("test", "servermetadata", {}, ("list",), 0),
    "specialuse_exists": ("test", "special-use", {}, ("str", "list"), 1),
    "duplicate": ("test", "duplicate", _tags(
        handle=("handle", "str", None), header=("id", "str", None),
        uniqueid=("id", "str", None), seconds=("seconds", "num", None),
        last=("last", None, None)), (), 0),
    "ihave": ("test", "ihave", {}, ("list",), 0),
    "environment": ("test", "environment", TESTS_MATCH, ("str", "list"), 0),
    "valid_notify_method": ("test", "enotify", {}, ("list",), 0),
    "notify_method_capability": ("test", "enotify", TESTS_MATCH, ("str", "str", "list"), 0),
    "spamtest": ("test", "spamtest", _tags(TESTS_MATCH, percent=("percent", None, "spamtestplus")),
                 ("str",), 0),
    "virustest": ("test", "virustest", TESTS_MATCH, ("str",), 0),
}
# Extensions that bring another with them.
IMPLIES = {"spamtestplus": ("spamtest",), "vacation-seconds": ("vacation",)}
RELATIONAL = ("gt", "ge", "lt", "le", "eq", "ne")
_FIELD_NAME = re.compile(r"[!-9;-~]+")
_VARNAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ADDRESS = re.compile(r"[^\s@<>()\[\],;:\\\"]+(?:\.[^\s@<>()\[\],;:\\\"]+)*@[A-Za-z0-9.-]+"
                      r"|\"(?:[^\"\\]|\\.)*\"@[A-Za-z0-9.-]+")
# RFC 5464 section 3.2 entry names (case-insensitive).
_ANNOTATION = re.compile(r"/(?:private|shared)(?:/[!-$&-)+-.0-~]+)+", re.I)
_ZONE = re.compile(r"[+-](?:[01][0-9]|2[0-3])[0-5][0-9]")
DATE_PARTS = ("year", "month", "day", "date", "julian", "hour", "minute", "second", "time",
              "iso8601", "std11", "zone", "weekday")
ENV_ITEMS = ("domain", "host", "location", "name", "phase", "remote-host", "remote-ip",
             "version")
PROTECTED_HEADERS = ("received", "auto-submitted")


class Cmd:
    """A compiled command or test."""
    __slots__ = ("name", "tags", "pos", "tests", "block", "line", "branches", "exts")

    def __init__(self, name, tags, pos, tests, block, line):
        self.name, self.tags, self.pos, self.tests, self.block, self.line = \
            name, tags, pos, tests, block, line
        self.branches = None
        self.exts = None

    def get(self, group, default=None):
        return self.tags.get(group, default)

    def __repr__(self):
        return f"Cmd({self.name}, {self.tags}, {self.pos})"


class Tmpl(str):
    """A string that holds ``${...}``: expanded at run time."""
    __slots__ = ()


class TList(list):
    """A string list with at least one ``Tmpl`` in it."""
    __slots__ = ()


class Script:
    """A compiled script: its commands and the extensions it requires."""

    def __init__(self, commands, extensions):
        self.commands = commands
        self.extensions = extensions

    def __repr__(self):
        return f"Script({len(self.commands)} commands, {sorted(self.extensions)})"


# --- strings at compile time -------------------------------------------------

_ENCODED = re.compile(r"\$\{(hex|unicode):([^${}]*)\}", re.I)
_VAR_REF = re.compile(r"\$\{([^{}]*)\}")
_VAR_INNER = re.compile(r"[0-9]+|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def _encoded(text, line):
    def sub(m):
        kind, body = m.group(1).lower(), m.group(2)
        items = body.split()
        if not items or not all(re.fullmatch(r"[0-9A-Fa-f]+", i) for i in items):
            return m.group(0)
        if kind == "hex":
            if any(len(i) > 2 for i in items):
                return m.group(0)
            raw = bytes(int(i, 16) for i in items)
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise SieveError("encoded-character: invalid UTF-8", line) from None
        out = []
        for i in items:
            cp = int(i, 16)
            if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF or len(i) > 8:
                raise SieveError(f"encoded-character: invalid code point {i}", line)
            out.append(chr(cp))
        return "".join(out)
    return _ENCODED.sub(sub, text) if "${" in text else text


class _Compiler:
    def __init__(self):
        self.exts = set()
        self.loops = []          # names of enclosing foreverypart loops

    def string(self, value, line):
        if "encoded-character" in self.exts:
            value = _encoded(value, line)
        if "variables" in self.exts and "${" in value:
            for m in _VAR_REF.finditer(value):
                inner = m.group(1)
                if _VAR_INNER.fullmatch(inner) and "." in inner:
                    ns = inner.split(".", 1)[0].lower()
                    if ns != "global" or "include" not in self.exts:
                        raise SieveError(f"unknown variable namespace '{ns}'", line)
            return Tmpl(value)
        return value

    def block(self, nodes, top=False):
        out = []
        seen_other = False
        for node in nodes:
            if node.name == "require":
                if seen_other or not top:
                    raise SieveError("require must come before any other command", node.line)
                self.require(node)
                continue
            seen_other = True
            if node.name in ("elsif", "else"):
                if not out or out[-1].name != "if" or out[-1].block == "closed":
                    raise SieveError(f"{node.name} must follow if or elsif", node.line)
                cmd = out[-1]
                test = self.test_of(node) if node.name == "elsif" else None
                if node.name == "else" and node.tests:
                    raise SieveError("else takes no test", node.line)
                if node.block is None:
                    raise SieveError(f"{node.name} needs a block", node.line)
                cmd.branches.append((test, self.guarded_block(test, node.block)))
                if node.name == "else":
                    cmd.block = "closed"
                continue
            out.append(self.command(node))
        for cmd in out:
            if cmd.name == "if":
                cmd.block = None
        return out

    def guarded_block(self, test, nodes):
        """A block under ``if ihave ...``: compiled with those extensions, or
        not at all when one of them is unknown (RFC 5463 section 4)."""
        ihaves = [] if test is None else [test] if test.name == "ihave" else [
            t for t in test.tests if t.name == "ihave"] if test.name == "allof" else []
        if ihaves:
            names = [n.lower() for t in ihaves for n in t.pos[0]]
            if not all(n in _KNOWN for n in names):
                return []
            saved = set(self.exts)
            for n in names:
                self.add_ext(n)
            try:
                return self.block(nodes)
            finally:
                self.exts = saved
        return self.block(nodes)

    def add_ext(self, name):
        self.exts.add(name)
        for other in IMPLIES.get(name, ()):
            self.exts.add(other)

    def require(self, node):
        if node.tests or node.block is not None:
            raise SieveError("require takes a string list", node.line)
        if len(node.args) != 1 or node.args[0].kind not in ("str", "list"):
            raise SieveError("require takes a string list", node.line)
        names = node.args[0].value if node.args[0].kind == "list" else [node.args[0].value]
        for name in names:
            lname = name.lower()
            if lname.startswith("comparator-") and lname[11:] in COMPARATORS:
                if COMPARATORS[lname[11:]] is None:
                    continue
            if lname not in _KNOWN:
                raise SieveError(f"unsupported extension '{name}'", node.line)
            self.add_ext(lname)

    def test_of(self, node):
        if len(node.tests) != 1:
            raise SieveError(f"{node.name} needs one test", node.line)
        return self.test(node.tests[0])

    def args(self, node, kind):
        spec = SPEC.get(node.name)
        if spec is None or (spec[0] == "test") != (kind == "test"):
            if spec is not None:
                what = "a test" if spec[0] == "test" else "a command"
                wanted = "a test" if kind == "test" else "a command"
                raise SieveError(f"'{node.name}' is {what}, not {wanted}", node.line)
            raise SieveError(f"unknown {'test' if kind == 'test' else 'command'} '{node.name}'",
                             node.line)
        _kind, ext, tagspec, posspec, optional = spec
        if ext is not None and ext not in self.exts and not (
                ext == "spamtest" and "spamtestplus" in self.exts):
            raise SieveError(f"'{node.name}' needs require \"{ext}\"", node.line)
        tags, pos = {}, []
        args = node.args
        i = 0
        while i < len(args):
            a = args[i]
            if a.kind == "tag":
                if pos:
                    raise SieveError(f"{node.name}: tag {a.value} after positional arguments",
                                     a.line)
                ts = tagspec.get(a.value)
                if ts is None:
                    raise SieveError(f"{node.name}: unknown tag {a.value}", a.line)
                group, takes, text = ts
                if text is not None and text not in self.exts and not (
                        text == "spamtest" and "spamtestplus" in self.exts):
                    raise SieveError(f"{node.name}: tag {a.value} needs require \"{text}\"",
                                     a.line)
                if group in tags and group not in ("mimeopt",):
                    raise SieveError(f"{node.name}: {a.value} conflicts with an earlier tag",
                                     a.line)
                if group == "mimeopt" and group in tags:
                    raise SieveError(f"{node.name}: only one of :type, :subtype, :contenttype"
                                     ", :param", a.line)
                value = a.value
                if takes is not None:
                    i += 1
                    if i >= len(args) or not _fits(args[i], takes):
                        raise SieveError(f"{node.name}: {a.value} needs a {_KIND[takes]}", a.line)
                    value = (a.value, self.value(args[i], takes))
                tags[group] = value
            else:
                pos.append(a)
            i += 1
        need, opt = len(posspec), abs(optional)
        if not (need - opt <= len(pos) <= need):
            raise SieveError(f"{node.name}: expected {need - opt if opt else need}"
                             f"{' or ' + str(need) if opt else ''} arguments, got {len(pos)}",
                             node.line)
        missing = need - len(pos)
        kinds = posspec[:len(pos)] if optional < 0 else posspec[missing:]
        out = []
        for a, k in zip(pos, kinds):
            if not _fits(a, k):
                raise SieveError(f"{node.name}: expected a {_KIND[k]}", a.line)
            out.append(self.value(a, k))
        if missing:
            out = out + [None] * missing if optional < 0 else [None] * missing + out
        return tags, out

    def value(self, arg, kind):
        if kind == "num":
            return arg.value
        if kind == "str":
            return self.string(arg.value, arg.line)
        items = arg.value if arg.kind == "list" else [arg.value]
        out = [self.string(v, arg.line) for v in items]
        return TList(out) if any(isinstance(v, Tmpl) for v in out) else out

    def command(self, node):
        tags, pos = self.args(node, "command")
        name = node.name
        if name == "if":
            test = self.test_of(node)
            if node.block is None:
                raise SieveError("if needs a block", node.line)
            cmd = Cmd(name, tags, pos, [test], None, node.line)
            cmd.branches = [(test, self.guarded_block(test, node.block))]
            return cmd
        if node.tests:
            raise SieveError(f"{name} takes no test", node.line)
        if name == "foreverypart":
            if node.block is None:
                raise SieveError("foreverypart needs a block", node.line)
            loop = tags.get("name", (None, None))[1]
            self.loops.append(loop)
            try:
                block = self.block(node.block)
            finally:
                self.loops.pop()
            cmd = Cmd(name, tags, pos, [], block, node.line)
            return cmd
        if node.block is not None:
            raise SieveError(f"{name} takes no block", node.line)
        cmd = Cmd(name, tags, pos, [], None, node.line)
        check = getattr(self, "check_" + name, None)
        if check:
            check(cmd)
        return cmd

    def test(self, node):
        tags, pos = self.args(node, "test")
        if node.block is not None:
            raise SieveError("a test takes no block", node.line)
        name = node.name
        tests = []
        if name in ("allof", "anyof"):
            if not node.tests:
                raise SieveError(f"{name} needs a test list", node.line)
            tests = [self.test(t) for t in node.tests]
        elif name == "not":
            if len(node.tests) != 1:
                raise SieveError("not needs one test", node.line)
            tests = [self.test(node.tests[0])]
        elif node.tests:
            raise SieveError(f"{name} takes no test", node.line)
        cmd = Cmd(name, tags, pos, tests, None, node.line)
        self.check_match(cmd)
        check = getattr(self, "check_" + name, None)
        if check:
            check(cmd)
        return cmd

    # -- checks --

    def check_match(self, cmd):
        comp = cmd.get("comparator")
        if comp is not None:
            cname = comp[1]
            if isinstance(cname, Tmpl):
                raise SieveError("the comparator must be a constant", cmd.line)
            lname = cname.lower()
            if lname not in COMPARATORS:
                raise SieveError(f"unknown comparator '{cname}'", cmd.line)
            need = COMPARATORS[lname]
            if need and need not in self.exts:
                raise SieveError(f"comparator '{cname}' needs require \"{need}\"", cmd.line)
            cmd.tags["comparator"] = lname
        match = cmd.get("match")
        if match is None:
            return
        if isinstance(match, tuple):
            op = match[1]
            if isinstance(op, Tmpl) or op.lower() not in RELATIONAL:
                raise SieveError(f"{match[0]}: unknown relational operator '{op}'", cmd.line)
            cmd.tags["match"] = match[0]
            cmd.tags["rel"] = op.lower()
        if cmd.tags.get("comparator") == "i;ascii-numeric" and cmd.tags["match"] in (
                ":contains", ":matches", ":regex"):
            raise SieveError(f"comparator i;ascii-numeric does not support {cmd.tags['match']}",
                             cmd.line)
        if cmd.tags["match"] == ":regex" and cmd.pos and cmd.pos[-1] is not None:
            keys = cmd.pos[-1]
            for k in keys if isinstance(keys, list) else [keys]:
                if not isinstance(k, Tmpl):
                    _regex(k, cmd.tags.get("comparator", "i;ascii-casemap"), cmd.line)

    def _headers(self, names, line):
        for n in names:
            if not isinstance(n, Tmpl) and not _FIELD_NAME.fullmatch(n):
                raise SieveError(f"invalid header field name '{n}'", line)

    def _index(self, cmd):
        if "last" in cmd.tags and "index" not in cmd.tags:
            raise SieveError(":last needs :index", cmd.line)
        if "index" in cmd.tags and cmd.tags["index"][1] < 1:
            raise SieveError(":index counts from 1", cmd.line)

    def _mime(self, cmd):
        if ("anychild" in cmd.tags or "mimeopt" in cmd.tags) and "mime" not in cmd.tags:
            raise SieveError(":anychild, :type, :subtype, :contenttype and :param need :mime",
                             cmd.line)

    def check_header(self, cmd):
        self._headers(cmd.pos[0], cmd.line)
        self._index(cmd)
        self._mime(cmd)

    def check_address(self, cmd):
        self.check_header(cmd)

    def check_exists(self, cmd):
        self._headers(cmd.pos[0], cmd.line)
        self._mime(cmd)

    def check_envelope(self, cmd):
        for part in cmd.pos[0]:
            if not isinstance(part, Tmpl) and part.lower() not in ("from", "to", "auth"):
                raise SieveError(f"envelope: unsupported part '{part}'", cmd.line)

    def check_size(self, cmd):
        if "over" not in cmd.tags:
            raise SieveError("size needs :over or :under", cmd.line)

    def check_body(self, cmd):
        if cmd.tags.get("match") == ":count":
            raise SieveError("body does not support :count", cmd.line)

    def check_date(self, cmd):
        self._headers([cmd.pos[0]], cmd.line)
        self._index(cmd)
        self._date_part(cmd.pos[-2], cmd.line)
        self._zone(cmd)

    def check_currentdate(self, cmd):
        self._date_part(cmd.pos[0], cmd.line)
        self._zone(cmd)

    def _date_part(self, part, line):
        if not isinstance(part, Tmpl) and part.lower() not in DATE_PARTS:
            raise SieveError(f"unknown date part '{part}'", line)

    def _zone(self, cmd):
        zone = cmd.get("zone")
        if isinstance(zone, tuple) and not isinstance(zone[1], Tmpl) \
                and not _ZONE.fullmatch(zone[1]):
            raise SieveError(f"invalid time zone '{zone[1]}'", cmd.line)

    def check_duplicate(self, cmd):
        ident = cmd.get("id")
        if ident and ident[0] == ":header":
            self._headers([ident[1]], cmd.line)

    def check_fileinto(self, cmd):
        self._mailbox(cmd.pos[0], cmd.line)
        su = cmd.get("specialuse")
        if su and not isinstance(su[1], Tmpl) and not re.fullmatch(r"\\[A-Za-z]+", su[1]):
            raise SieveError(f"invalid special-use flag '{su[1]}'", cmd.line)

    def _mailbox(self, name, line):
        if not isinstance(name, Tmpl):
            err = _bad_mailbox(name)
            if err:
                raise SieveError(err, line)

    def check_mailboxexists(self, cmd):
        for n in cmd.pos[0]:
            self._mailbox(n, cmd.line)

    def _annotations(self, names, line):
        for n in names:
            if not isinstance(n, Tmpl) and not _ANNOTATION.fullmatch(n):
                raise SieveError(f"invalid annotation name '{n}'", line)

    def check_metadata(self, cmd):
        self._mailbox(cmd.pos[0], cmd.line)
        self._annotations([cmd.pos[1]], cmd.line)

    def check_metadataexists(self, cmd):
        self._mailbox(cmd.pos[0], cmd.line)
        self._annotations(cmd.pos[1], cmd.line)

    def check_servermetadata(self, cmd):
        self._annotations([cmd.pos[0]], cmd.line)

    def check_servermetadataexists(self, cmd):
        self._annotations(cmd.pos[0], cmd.line)

    def check_redirect(self, cmd):
        addr = cmd.pos[0]
        if not isinstance(addr, Tmpl) and not _ADDRESS.fullmatch(addr.strip()):
            raise SieveError(f"redirect: invalid address '{addr}'", cmd.line)

    def check_vacation(self, cmd):
        frm = cmd.get("from")
        if frm and not isinstance(frm[1], Tmpl) and not _one_address(frm[1]):
            raise SieveError(f"vacation: invalid :from address '{frm[1]}'", cmd.line)

    def check_set(self, cmd):
        name = cmd.pos[0]
        if "include" in self.exts and name.lower().startswith("global."):
            name = name[7:]
        if isinstance(name, Tmpl) or not _VARNAME.fullmatch(name):
            raise SieveError(f"set: invalid variable name '{name}'", cmd.line)

    def check_extracttext(self, cmd):
        if not self.loops:
            raise SieveError("extracttext must be inside foreverypart", cmd.line)
        self.check_set(cmd)

    def _varname(self, name, line, what):
        if name is not None and (isinstance(name, Tmpl) or not _VARNAME.fullmatch(name)):
            raise SieveError(f"{what}: invalid variable name '{name}'", line)
        if name is not None and "variables" not in self.exts:
            raise SieveError(f"{what}: a variable name needs require \"variables\"", line)

    def check_setflag(self, cmd):
        self._varname(cmd.pos[0], cmd.line, cmd.name)

    check_addflag = check_removeflag = check_setflag

    def check_hasflag(self, cmd):
        for n in cmd.pos[0] or []:
            self._varname(n, cmd.line, "hasflag")

    def check_global(self, cmd):
        for n in cmd.pos[0]:
            if isinstance(n, Tmpl) or not _VARNAME.fullmatch(n):
                raise SieveError(f"global: invalid variable name '{n}'", cmd.line)
        if "variables" not in self.exts:
            raise SieveError("global needs require \"variables\"", cmd.line)

    def check_include(self, cmd):
        name = cmd.pos[0]
        if isinstance(name, Tmpl):
            raise SieveError("include: the script name must be a constant", cmd.line)
        if not name or "/" in name or len(name) > 512:
            raise SieveError(f"include: invalid script name '{name}'", cmd.line)

    def check_break(self, cmd):
        if not self.loops:
            raise SieveError("break must be inside foreverypart", cmd.line)
        name = cmd.get("name")
        if name and name[1] not in self.loops:
            raise SieveError(f"break: no enclosing foreverypart named '{name[1]}'", cmd.line)

    def check_addheader(self, cmd):
        name = cmd.pos[0]
        if not isinstance(name, Tmpl) and not _FIELD_NAME.fullmatch(name):
            raise SieveError(f"addheader: invalid header field name '{name}'", cmd.line)

    def check_deleteheader(self, cmd):
        self.check_match(cmd)
        if not isinstance(cmd.pos[0], Tmpl) and not _FIELD_NAME.fullmatch(cmd.pos[0]):
            raise SieveError(f"deleteheader: invalid header field name '{cmd.pos[0]}'",
                             cmd.line)
        self._index(cmd)

    def check_notify(self, cmd):
        method = cmd.pos[0]
        if not isinstance(method, Tmpl) and _mailto(method) is None:
            raise SieveError(f"notify: unsupported or invalid method '{method}'", cmd.line)
        imp = cmd.get("importance")
        if imp and not isinstance(imp[1], Tmpl) and imp[1] not in ("1", "2", "3"):
            raise SieveError("notify: :importance must be \"1\", \"2\" or \"3\"", cmd.line)
        frm = cmd.get("from")
        if frm and not isinstance(frm[1], Tmpl) and not _one_address(frm[1]):
            raise SieveError(f"notify: invalid :from address '{frm[1]}'", cmd.line)


_KIND = {"str": "string", "list": "string list", "num": "number"}


def _fits(arg, kind):
    if kind == "num":
        return arg.kind == "num"
    if kind == "str":
        return arg.kind == "str"
    return arg.kind in ("str", "list")


def _bad_mailbox(name):
    if not name or len(name) > 1024:
        return "invalid mailbox name (empty or too long)"
    if any(ord(c) < 32 or c == "\x7f" or "\ud800" <= c <= "\udfff" for c in name):
        return f"invalid mailbox name {name!r}"
    return None


def _one_address(text):
    found = mime.addresses(text)
    return len(found) == 1 and "@" in found[0]["email"]


def _regex(pattern, comparator, line=0):
    if len(pattern) > MAX_REGEX:
        raise (SieveError if line else _Error)(f"regex longer than {MAX_REGEX} characters",
                                               *([line] if line else []))
    prefix = "(?s)" + ("(?i)" if comparator == "i;ascii-casemap" else "")
    try:
        return _regex_cached(prefix + pattern)
    except re2.error as e:
        why = e.args[0].decode("utf-8", "replace") if e.args and isinstance(
            e.args[0], bytes) else str(e)
        msg = f"bad regex '{pattern}': {why.split(':')[0]}"
        if line:
            raise SieveError(msg, line) from None
        raise _Error(msg) from None


_REGEX_CACHE = {}
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.max_mem = 8 << 20


def _regex_cached(pattern):
    r = _REGEX_CACHE.get(pattern)
    if r is None:
        r = re2.compile(pattern, options=_RE2_OPTIONS)
        if len(_REGEX_CACHE) > 512:
            _REGEX_CACHE.clear()
        _REGEX_CACHE[pattern] = r
    return r


def _mailto(uri):
    """The recipients of a valid mailto: URI (RFC 6068), or None."""
    if not uri.lower().startswith("mailto:"):
        return None
    rest = uri[7:]
    path, _, query = rest.partition("?")
    to = [mime.header_text(_pct(a)) for a in path.split(",") if a]
    for pair in query.split("&") if query else []:
        k, _, v = pair.partition("=")
        if _pct(k).lower() == "to":
            to += [a for a in _pct(v).split(",") if a]
    if not to or not all(_ADDRESS.fullmatch(a.strip()) for a in to):
        return None
    return to


def _pct(text):
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


# --- public ------------------------------------------------------------------

def compile(text):
    """A ``Script`` for ``text`` (str); raises ``SieveError`` with the line."""
    from . import MAX_SCRIPT_SIZE
    raw = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    if len(raw) > MAX_SCRIPT_SIZE:
        raise SieveError(f"script exceeds {MAX_SCRIPT_SIZE} bytes")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SieveError("script is not valid UTF-8", raw.count(b"\n", 0, e.start) + 1) from None
    nodes = parse(raw)
    c = _Compiler()
    commands = c.block(nodes, top=True)
    return Script(commands, frozenset(c.exts))


def run(script, context, budget=Budget):
    """The ``Outcome`` of ``script`` on ``context`` (never raises for the
    message's or the script's sake: errors become ``Outcome.error``)."""
    from .runtime import Run
    return Run(context, budget).outcome(script)


def bench(rounds=2000):
    """Microseconds per evaluation of a 20-rule script on a small message."""
    from .runtime import bench as _bench
    return _bench(rounds)

