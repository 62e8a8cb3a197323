"""The blob store: where message bytes live, behind a narrow interface.

The database is the index: for each stored copy of a message it knows the
account, the mailbox's folder, the blob ``key`` (``messages.stem``) and the
system flags, which together are a ``BlobRef``. Every read starts from a
``BlobRef`` built from one database row, so a backend never has to search for
a message. ``storage.maildir.Maildir`` is the default backend (Maildir++ on
local disk); ``MemoryBlobs`` below is its in-memory twin for tests.

The contract a backend keeps (an object-storage backend is a new class that
implements these and nothing else):

``put(account, folder, data, prefix=b"") -> key``
    Store ``prefix + data`` durably (fsynced, or acknowledged by the object
    store) but not yet visible; ``folder`` is where it will be committed.
    Called before the database row is committed.
``put_copy(src_account, src_folder, key, account, folder) -> key``
    The same put bytes, put again for another mailbox without writing them
    twice (Maildir: a hard link in the other ``tmp/``).
``commit(ref, keywords=())``
    Make the bytes put under ``ref.key`` visible at ``ref`` (after the row
    committed). Idempotent: start-up recovery may repeat it.
``discard(account, folder, key)``
    Drop put bytes whose row never committed.
``get(ref, start=0, end=None) -> bytes``
    The bytes, or only ``[start:end]`` of them (read no more than that);
    ``FileNotFoundError`` when they are not there.
``link(ref, dst_folder, keywords=(), dst_bits=None)``
    The same bytes also in ``dst_folder`` (a copy costs no second write).
``unlink(ref)``
    This copy is gone; the bytes go with the last copy.
``set_flags(ref, new_bits, keywords=None)``
    Mirror flag changes where the backend keeps them (Maildir: the info
    suffix, and keywords in the folder's ``roost-keywords`` file for
    ``fsck --rebuild``); a no-op where it does not.
``create_folder``, ``rename_folder``, ``delete_folder``, ``delete_account``
    Folder lifetime (no-ops for flat object stores).

Recovery and rebuild (``storage.delivery.recover``, ``storage.fsck``) may
also use ``staged``, ``accounts``, ``folders``, ``stored`` and ``keywords``,
which only backends that can be listed provide.
"""

import threading
from dataclasses import dataclass

from .maildir import new_stem


@dataclass(frozen=True)
class BlobRef:
    """Where the database says one stored copy of a message is."""
    account: str    # "domain/local"
    folder: str     # the mailbox's Maildir++ folder ('' for INBOX)
    key: str        # messages.stem
    bits: int = 0   # system flags of this copy (Maildir info suffix)


class MemoryBlobs:
    """The blob store interface over a dict (``Store.memory()``, tests only)."""

    def __init__(self):
        self.files = {}
        self.lock = threading.Lock()

    def create_folder(self, account, folder):
        pass

    def put(self, account, folder, data, prefix=b""):
        key = new_stem(len(prefix) + len(data))
        with self.lock:
            self.files[(account, folder, key)] = bytes(prefix) + bytes(data)
        return key

    def put_copy(self, src_account, src_folder, key, account, folder):
        with self.lock:
            self.files[(account, folder, key)] = self.files[(src_account, src_folder, key)]
        return key

    def commit(self, ref, keywords=()):
        pass

    def discard(self, account, folder, key):
        self.files.pop((account, folder, key), None)

    def get(self, ref, start=0, end=None):
        try:
            data = self.files[(ref.account, ref.folder, ref.key)]
        except KeyError:
            raise FileNotFoundError(ref.key) from None
        return data[start:end] if start or end is not None else data

    def link(self, ref, dst_folder, keywords=(), dst_bits=None):
        with self.lock:
            self.files[(ref.account, dst_folder, ref.key)] = self.files[(ref.account, ref.folder, ref.key)]

    def unlink(self, ref):
        self.files.pop((ref.account, ref.folder, ref.key), None)

    def set_flags(self, ref, new_bits, keywords=None):
        pass

    def rename_folder(self, account, old, new):
        with self.lock:
            for k in [k for k in self.files if k[0] == account and k[1] == old]:
                self.files[(account, new, k[2])] = self.files.pop(k)

    def delete_folder(self, account, folder):
        with self.lock:
            for k in [k for k in self.files if k[0] == account and k[1] == folder]:
                del self.files[k]

    def delete_account(self, account):
        with self.lock:
            for k in [k for k in self.files if k[0] == account]:
                del self.files[k]
