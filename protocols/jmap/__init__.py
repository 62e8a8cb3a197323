"""JMAP (RFC 8620 Core, RFC 8621 Mail, RFC 8887 WebSocket, RFC 9425 Quota) over the store.

Owns the ``twisted.web`` site that serves JMAP. ``site(store, delivery, run,
authenticator, hostname)`` builds it; ``roost.server`` listens with it. Like
every protocol it never imports SQLAlchemy and never opens files under the
data directory: everything goes through ``roost.storage``'s API, run on the
worker pool. Layout: ``core`` (envelope, dispatch, errors); methods in ``mailbox``,
``email_get``, ``email_query``, ``email_set``, ``email_import``, ``email_snippet``
(with the Email object in ``email_common``), ``submission``, ``quota``, ``sieve`` (SieveScript, VacationResponse); ``bodies``
(MIME views), ``blobs``, ``web`` (HTTP resources, auth) and ``push`` (event
source, WebSocket). A capability's account value may be a function of the
backend, called for each Session object.
"""

from . import core
from .core import MAIL, SUBMISSION, VACATION, WEBSOCKET, capability

capability(MAIL, {}, {
    "maxMailboxesPerEmail": 256, "maxMailboxDepth": 32, "maxSizeMailboxName": 255,
    "maxSizeAttachmentsPerEmail": 50 * 1024 * 1024,
    "emailQuerySortOptions": ["receivedAt", "sentAt", "size", "from", "to", "subject",
                              "hasKeyword", "allInThreadHaveKeyword", "someInThreadHaveKeyword"],
    "mayCreateTopLevelMailbox": True,
})
capability(VACATION, {}, {})
capability(WEBSOCKET, {"url": None, "supportsPush": True})

from . import (blobs, email_get, email_import, email_query, email_set,  # noqa: E402,F401
               email_snippet, mailbox, quota, sieve, submission)         # (register methods)

capability(SUBMISSION, {}, submission.account_capability)   # made per session: SIZE, dates
from .blobs import Backend  # noqa: E402
from .web import Service, build_site  # noqa: E402


def site(store, delivery, run, authenticator, hostname="localhost", outbound=None,
         allowed_origins=(), push_allow_private=False, undo_send=0, web_push=None):
    """The twisted.web Site for JMAP; ``outbound`` is the queue EmailSubmission
    sends through (``storage.outbound.Outbound``). ``web_push``: None to send
    this process's RFC 8620 push notifications itself, or fn(account id) that
    tells the process that sends them an account's push subscriptions changed
    (the server's worker processes have one sender)."""
    backend = Backend(store, delivery, hostname, outbound, push_allow_private=push_allow_private,
                      undo_send=undo_send)
    return build_site(Service(backend, run, authenticator, allowed_origins), web_push)


__all__ = ["core", "site"]
