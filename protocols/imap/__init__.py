"""IMAP4rev1 (RFC 3501) and IMAP4rev2 (RFC 9051) on Roost's own parser.

Layout: ``wire`` (framing, tokens, response encoding), ``parser`` (typed
command objects), ``commands`` (the registry and one handler per command),
``selected`` (sequence numbers of the selected mailbox), ``fetch`` and
``searchkeys`` (FETCH rendering, SEARCH compilation), ``session`` (the
Twisted protocol and its ordered pipeline). The package talks to storage only
through the store API and the callables in ``IMAPContext``; it never imports
SQLAlchemy, never opens files under the data directory and never imports
another protocol.
"""

from .session import IMAPContext, IMAPFactory, IMAPSession

__all__ = ["IMAPContext", "IMAPFactory", "IMAPSession"]
