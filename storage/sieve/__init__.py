"""Sieve (RFC 5228) for Roost: scripts kept per account (``scripts``) and
run inside ``Delivery.store`` (the interpreter).

``compile(text)`` checks a script and returns it compiled (a ``Script``), or
raises ``SieveError`` with the line number of the first problem; ``run(script,
context)`` evaluates it into an ``Outcome`` (``actions``); ManageSieve
CHECKSCRIPT/PUTSCRIPT, JMAP SieveScript/validate and set, and the
interpreter all use it, so a script that is accepted is one that runs.
``EXTENSIONS`` is what the SIEVE capability lists: exactly what runs.

The tokens are sievelib's (its lexer); the tree (``grammar``), the checks
(``interpreter``) and what the commands mean (``runtime``) are Roost's.
"""

# What runs: the interpreter's list (see storage.sieve.interpreter).
MAX_SCRIPT_SIZE = 64 * 1024


class SieveError(ValueError):
    """A script that cannot run: ``line`` (1-based, or 0) and ``message``."""

    def __init__(self, message, line=0):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.message = message


from .interpreter import EXTENSIONS, NOTIFY_METHODS, Script, compile, run  # noqa: E402

__all__ = ["EXTENSIONS", "MAX_SCRIPT_SIZE", "NOTIFY_METHODS", "Script", "SieveError", "compile",
           "run"]
