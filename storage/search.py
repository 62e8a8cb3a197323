"""One criteria tree for every search: IMAP SEARCH/SORT and JMAP Email/query.

Owns the node types below and their evaluation. Protocols compile their
syntax into these nodes; they never write SQL or read message files.
Metadata nodes (flags, dates, sizes, UIDs, mailboxes, MODSEQ) are answered
in SQL; text nodes go to the configured ``SearchBackend``.

Contract used by the protocols:

    search(store, account_id, criteria, mailbox_pk=None) -> list of matches

With ``mailbox_pk`` the result is the ascending list of matching UIDs in that
mailbox; without it (JMAP, account-wide) the ascending list of matching
message primary keys (``messages.id``). Every date is epoch seconds (UTC);
IMAP's day-granular keys are converted by the IMAP layer into [since, before)
ranges in the time zone RFC 3501 asks for.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class All:
    """Matches every message."""


@dataclass(frozen=True)
class And:
    items: tuple


@dataclass(frozen=True)
class Or:
    items: tuple


@dataclass(frozen=True)
class Not:
    item: object


@dataclass(frozen=True)
class Flag:
    """Has the flag ``name`` (IMAP system flag like ``\\Seen`` or a keyword)."""
    name: str


@dataclass(frozen=True)
class Uids:
    """UID in one of the inclusive ``ranges`` ((lo, hi), ...) of the searched mailbox."""
    ranges: tuple


@dataclass(frozen=True)
class Date:
    """``field`` is "internal" (arrival), "sent" (Date header) or "saved";
    matches ``since <= value < before`` (either bound may be None)."""
    field: str
    since: float = None
    before: float = None


@dataclass(frozen=True)
class Size:
    """Size in octets: ``larger < size < smaller`` (either bound may be None)."""
    larger: int = None
    smaller: int = None


@dataclass(frozen=True)
class Text:
    """Text match. ``field``: "text" (headers and body), "body", "subject",
    "from", "to", "cc", "bcc", or "header:<name>" (any header; empty ``value``
    means the header is present). Header fields keep RFC 3501's case-insensitive
    substring semantics; body and text match words and word prefixes."""
    field: str
    value: str


@dataclass(frozen=True)
class InMailbox:
    """The message is in one of these mailboxes (primary keys)."""
    mailbox_pks: tuple


@dataclass(frozen=True)
class ModSeq:
    """MODSEQ (in the searched mailbox) is at least ``since`` (CONDSTORE)."""
    since: int


@dataclass(frozen=True)
class Thread:
    """In the thread with primary key ``thread_pk`` (JMAP inThread)."""
    thread_pk: int


@dataclass(frozen=True)
class HasAttachment:
    value: bool = True
