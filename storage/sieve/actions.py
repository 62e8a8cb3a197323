"""What running a script gives delivery: the ``Context`` the interpreter
reads, and the ``Outcome`` (actions) it returns.

The interpreter (``storage.sieve.interpreter``) is a pure function of a
compiled script and a ``Context``: it reads the message, the envelope and
the verdicts, asks the context's ``hooks`` what only the store knows
(mailbox existence, duplicate ids, included scripts), and returns an
``Outcome``. It opens no socket and writes nothing: delivery
(``storage.sieve.deliver``) files the message, and records redirects,
vacation replies and notifications in the outbound queue.
"""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Keep:
    """Store in INBOX (explicit ``keep``, or the implicit keep)."""
    flags: tuple = ()


@dataclass(frozen=True)
class FileInto:
    mailbox: str
    flags: tuple = ()
    create: bool = False          # :create (RFC 5490)
    specialuse: str = None        # :specialuse "\\Junk" (RFC 8579)


@dataclass(frozen=True)
class Redirect:
    address: str


@dataclass(frozen=True)
class Reject:
    reason: str
    extended: bool = False        # ereject (RFC 5429): refuse in the SMTP/LMTP transaction


@dataclass(frozen=True)
class Vacation:
    reason: str                   # text, or a MIME entity when ``mime``
    subject: str = None
    from_addr: str = None
    addresses: tuple = ()
    seconds: int = 7 * 86400      # :days N is N * 86400; :seconds (RFC 6131)
    handle: str = None
    mime: bool = False


@dataclass(frozen=True)
class Notify:
    method: str                   # a "mailto:" URI (RFC 5436)
    from_addr: str = None
    importance: str = "2"
    options: tuple = ()
    message: str = None


@dataclass
class Outcome:
    """``actions`` in execution order (Keep/FileInto/Redirect/Reject/Vacation/
    Notify; ``discard`` leaves none). ``keep`` is True when the implicit keep
    still applies, with ``keep_flags`` (imap4flags' internal variable).
    ``data`` is the edited message (editheader) or None when unchanged.
    ``error`` is a runtime error: delivery then keeps the message as if the
    script had not run (RFC 5228 section 2.10.6) and tells the user once."""
    actions: list = field(default_factory=list)
    keep: bool = True
    keep_flags: tuple = ()
    data: bytes = None
    error: str = None
    duplicates: list = field(default_factory=list)   # ids to remember: (key, seconds)


class Hooks:
    """What the interpreter may ask the store (delivery gives a real one)."""

    def mailbox_exists(self, name):
        return False

    def specialuse_exists(self, flag, mailbox=None):
        """Is there a mailbox with this special-use flag (or: has ``mailbox`` it)?"""
        return False

    def duplicate(self, key):
        """Has this (hashed) duplicate id been seen and not expired?"""
        return False

    def include(self, name, location):
        """The text of another of the account's scripts (``:personal``) or of a
        global one; raises ``LookupError`` when there is none."""
        raise LookupError(name)

    def metadata(self, mailbox, name):
        """The bytes of annotation ``name`` (lower case) of ``mailbox``, or of
        the server when ``mailbox`` is None; None when there is none."""
        return None


@dataclass
class Context:
    data: bytes                   # the message as it will be stored (after prepended headers)
    parsed: object = None         # storage.mime.ParsedMessage of ``data``, if already parsed
    sender: str = ""              # envelope MAIL FROM ("" for the null sender)
    recipient: str = ""           # envelope RCPT TO of this copy (original, with +detail)
    account: str = ""             # the account's address
    addresses: tuple = ()         # the account's own addresses (aliases, identities)
    verdicts: dict = field(default_factory=dict)     # spf, dkim, dmarc, arc, spam_score, ...
    environment: dict = field(default_factory=dict)  # RFC 5183 items: remote-ip, remote-host, ...
    now: float = None             # time.time() of the delivery (date/currentdate)
    hooks: Hooks = field(default_factory=Hooks)
