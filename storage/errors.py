"""Typed store errors. Each protocol maps them to its own replies in one place."""


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class AccountNotFound(StoreError):
    pass


class AccountExists(StoreError):
    pass


class MailboxNotFound(StoreError):
    pass


class MailboxExists(StoreError):
    pass


class MessageNotFound(StoreError):
    pass


class QuotaExceeded(StoreError):
    pass


class MessageTooLarge(StoreError):
    pass


class MessageRejected(StoreError):
    """The recipient's filter refused the message (Sieve reject/ereject)."""


class Conflict(StoreError):
    """The request contradicts the stored state (role taken, INBOX rename, ...)."""


class InvalidName(StoreError):
    pass


class TemporaryFailure(StoreError):
    """Storage is unavailable for now; the sender should retry later."""


class MetadataTooLarge(StoreError):
    """An annotation value is longer than the store takes (``args[0]`` octets)."""


class MetadataTooMany(StoreError):
    """No room for another annotation (count or total size, ``storage.metadata``)."""
