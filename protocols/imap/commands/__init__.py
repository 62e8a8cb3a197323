"""The command registry: verb -> (handler, states), and the CAPABILITY list.

Each handler module registers its commands with ``@command`` and the
capabilities they bring with ``capability``; the session asks ``lookup``
for dispatch and ``capabilities`` for the CAPABILITY response, so a
capability is advertised exactly when the code that implements it is loaded.
Handlers are ``async def handler(session, cmd)``; they send untagged
responses through the session and return the text of the tagged OK (or raise
``No``/``Bad``). Store errors (``roost.storage.errors``) are left to propagate:
the session's ``store_error_reply`` turns them into the tagged NO, and the
registration says what they mean for the command where that differs
(``trycreate``, ``useattr``).
"""

from dataclasses import dataclass

NOT_AUTHENTICATED, AUTHENTICATED, SELECTED, LOGOUT = "not-authenticated", "authenticated", "selected", "logout"
ANY = frozenset({NOT_AUTHENTICATED, AUTHENTICATED, SELECTED})
AUTH = frozenset({AUTHENTICATED, SELECTED})
SEL = frozenset({SELECTED})
NOAUTH = frozenset({NOT_AUTHENTICATED})


class No(Exception):
    """Tagged NO with ``text`` (which may start with a response code)."""


class Bad(Exception):
    """Tagged BAD with ``text``."""


class _Tick:
    """TICK: a unit a session queues to itself (NOTIFY): report changes now."""

    def __repr__(self):
        return "TICK"


TICK = _Tick()


@dataclass(frozen=True)
class Spec:
    verb: str
    handler: object
    states: frozenset
    expunge_ok: bool = True    # may EXPUNGE responses follow this command?
    trycreate: bool = False    # a missing mailbox is the destination: NO [TRYCREATE]
    useattr: bool = False      # a store Conflict is about the special-use attribute: NO [USEATTR]


_COMMANDS = {}
_CAPABILITIES = []   # (name, condition(session) or None)


def command(*verbs, states=AUTH, expunge_ok=True, trycreate=False, useattr=False):
    def register(fn):
        for verb in verbs:
            _COMMANDS[verb] = Spec(verb, fn, states, expunge_ok, trycreate, useattr)
        return fn
    return register


def capability(*names, when=None):
    for name in names:
        _CAPABILITIES.append((name, when))


def lookup(verb):
    _load()
    return _COMMANDS.get(verb)


def capabilities(session):
    _load()
    return [name(session) if callable(name) else name
            for name, when in _CAPABILITIES if when is None or when(session)]


_loaded = []


def _load():
    if not _loaded:
        _loaded.append(True)
        from . import any_state, auth, mailboxes, messages  # noqa: F401 - they register
        from . import quota, metadata  # noqa: F401 - QUOTA, METADATA
        from . import compose  # noqa: F401 - CATENATE, REPLACE
        from . import acl  # noqa: F401 - RFC 4314
        from . import connection, notify, search_ext  # noqa: F401
        from . import sort  # noqa: F401
