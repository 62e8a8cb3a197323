"""The store's vocabulary: public ids and the records its API returns.

Public ids: mailbox ``M<id>``, email ``E<id>``, thread ``T<id>``. They are the
JMAP ids and the IMAP OBJECTID values. ``NewMessage`` is a message staged in
the blob store waiting for its database row (``storage.hot.insert_messages``);
its ``key`` is the blob store's key for the bytes.
"""

import hashlib
import json
from dataclasses import dataclass

from . import flags as flagbits
from . import mime
from .search_text import document


def mailbox_oid(pk):
    return f"M{pk}"


def email_oid(pk):
    return f"E{pk}"


def thread_oid(pk):
    return f"T{pk}"


def parse_oid(prefix, oid):
    """The primary key in a public id, or None when it is not one of ours."""
    if isinstance(oid, str) and oid[:1] == prefix and oid[1:].isdigit() and len(oid) < 20:
        return int(oid[1:])
    return None


def maildir_key(address):
    """The blob store's ``"domain/local"`` key of the account at ``address``."""
    local, _, domain = address.rpartition("@")
    return f"{domain}/{local}"


@dataclass(frozen=True)
class Account:
    id: int
    address: str
    password_hash: str
    quota_bytes: int
    used_bytes: int
    modseq: int

    @property
    def maildir_key(self):
        return maildir_key(self.address)


@dataclass(frozen=True)
class Mailbox:
    id: int
    account_id: int
    name: str
    folder: str
    role: str
    subscribed: bool
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    sort_order: int = 0
    messages: int = 0
    unseen: int = 0
    size: int = 0

    @property
    def oid(self):
        return mailbox_oid(self.id)


@dataclass(frozen=True)
class MessageRecord:
    """One message as it sits in one mailbox."""
    uid: int
    modseq: int
    bits: int
    keywords: tuple
    message_id: int
    thread_id: int
    size: int
    internal_date: float
    saved_at: float
    envelope: str = None
    structure: str = None

    @property
    def email_id(self):
        return email_oid(self.message_id)

    @property
    def thread_oid(self):
        return thread_oid(self.thread_id)

    @property
    def flag_names(self):
        return flagbits.names(self.bits, self.keywords)


@dataclass
class NewMessage:
    """A message staged in the blob store, waiting for its database row. Its
    bytes are ``prefix + data`` (the headers delivery prepends, then the bytes
    as received), kept apart so that one message to many recipients is held
    in memory once; ``shared`` memoises what its copies have in common."""
    account: Account
    mailbox: Mailbox
    stem: str
    data: bytes
    parsed: object
    bits: int = 0
    keywords: tuple = ()
    internal_date: float = None
    dedupe_window: float = 0
    also: tuple = ()    # further memberships of the same message: (Mailbox, bits, keywords)
    prefix: bytes = b""
    shared: dict = None
    row: tuple = None   # derived values, see prepare()

    @property
    def size(self):
        return len(self.prefix) + len(self.data)

    def prepare(self):
        """Compute the row's derived values (blob id, JSON, search document,
        base subject). Delivery calls this in its own worker thread, so the
        single committer thread only runs SQL."""
        if self.row is None:
            p, shared = self.parsed, self.shared if self.shared is not None else {}
            if "common" not in shared:
                shared["common"] = (json.dumps(p.envelope), json.dumps(p.summary), document(p),
                                    mime.base_subject(p.subject)[:1000])
            env_json, summary_json, doc, base = shared["common"]
            digest = hashlib.sha256(self.prefix)
            digest.update(self.data)
            self.row = ("B" + digest.hexdigest()[:40], env_json, json.dumps(p.structure), summary_json,
                        doc, base)
        return self.row


@dataclass(frozen=True)
class Stored:
    mailbox_id: int
    uidvalidity: int
    uid: int
    message_id: int
    duplicate: bool = False
