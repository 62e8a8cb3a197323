"""Sieve (RFC 5228) for Roost: scripts kept per account (``scripts``) and
run inside ``Delivery.store`` (the interpreter).

``compile(text)`` checks a script and returns its parsed form, or raises
``SieveError`` with the line number of the first problem; ManageSieve
CHECKSCRIPT/PUTSCRIPT, JMAP SieveScript/validate and set, and the
interpreter all use it, so a script that is accepted is one that runs.
``EXTENSIONS`` is what the SIEVE capability lists: exactly what runs.

The parser is sievelib's (syntax only); what the commands mean is Roost's.
"""

from sievelib.parser import Parser

# Filled in by the interpreter as each extension is implemented and tested.
EXTENSIONS = ()
MAX_SCRIPT_SIZE = 64 * 1024


class SieveError(ValueError):
    """A script that cannot run: ``line`` (1-based, or 0) and ``message``."""

    def __init__(self, message, line=0):
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line
        self.message = message


def compile(text):
    """The parsed commands of ``text`` (str); raises ``SieveError``."""
    if len(text.encode("utf-8", "surrogateescape")) > MAX_SCRIPT_SIZE:
        raise SieveError(f"script exceeds {MAX_SCRIPT_SIZE} bytes")
    parser = Parser()
    if not parser.parse(text.encode("utf-8", "surrogateescape")):
        line = parser.error_pos[0] if getattr(parser, "error_pos", None) else 0
        raise SieveError(str(parser.error).partition(": ")[2] or str(parser.error), line)
    return parser.result
