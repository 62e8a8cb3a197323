"""Message bytes: Maildir++ on local disk, and an in-memory twin for tests.

Owns files under ``DATA/mail/<domain>/<local>/`` and nothing else: it never
touches the database. A message is a file named ``<stem>:2,<info>`` in a
folder's ``cur/``; ``stem`` is unique and carries ``,S=<size>``, ``info`` mirrors
the system flags. A message in several mailboxes is hard-linked. Writes go to
``tmp/`` and are fsynced before the caller commits the database row; only then
are they renamed into ``cur/`` (see ``storage.delivery``).

Durability: the file is fsynced; its ``tmp/`` directory is not. On ext4, XFS
and btrfs a new file's directory entry is made durable by the file's own fsync
(it is in the same journal transaction), and a directory fsync cost 3 ms per
call here, serialised in the committer. The renames into ``cur/`` need no
fsync either: the database row is the record, and start-up recovery finishes
a rename that a crash lost.

Folder names: INBOX is the account directory itself; other mailboxes are
``.<name>`` with ``/`` in the mailbox name written as ``.`` (Maildir++), and
``.``, ``/``, ``%`` and control characters in a name part escaped as ``%XX``.
"""

import itertools
import os
import shutil
import socket
import threading
import time

from . import flags as flagbits

_counter = itertools.count(1)
_HOST = socket.gethostname().replace("/", "_").replace(":", "_") or "roost"


def folder_for(name):
    """The Maildir++ directory name of mailbox ``name`` ('' for INBOX)."""
    if name.upper() == "INBOX":
        return ""
    parts = []
    for part in name.split("/"):
        parts.append("".join(
            f"%{ord(c):02X}" if c in "%./" or ord(c) < 32 or ord(c) == 127 else c for c in part))
    return "." + ".".join(parts)


def name_for(folder):
    """Inverse of ``folder_for``."""
    if not folder:
        return "INBOX"
    out = []
    for part in folder[1:].split("."):
        chars, i = [], 0
        while i < len(part):
            if part[i] == "%" and i + 2 < len(part) + 1 and _ishex(part[i + 1:i + 3]):
                chars.append(chr(int(part[i + 1:i + 3], 16)))
                i += 3
            else:
                chars.append(part[i])
                i += 1
        out.append("".join(chars))
    return "/".join(out)


def _ishex(s):
    return len(s) == 2 and all(c in "0123456789abcdefABCDEF" for c in s)


def new_stem(size):
    now = time.time()
    return (f"{int(now)}.M{int((now % 1) * 1e6)}P{os.getpid()}Q{next(_counter)}"
            f".{_HOST},S={size}")


def file_name(stem, bits):
    return f"{stem}:2,{flagbits.maildir_info(bits)}"


class Maildir:
    """The blob store on disk. ``account`` arguments are ``"domain/local"`` keys."""

    def __init__(self, root):
        self.root = root

    def folder_path(self, account, folder):
        return os.path.join(self.root, account, folder)

    def create_folder(self, account, folder):
        base = self.folder_path(account, folder)
        for sub in ("cur", "new", "tmp"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        if folder:
            open(os.path.join(base, "maildirfolder"), "a").close()

    def stage(self, account, folder, data):
        """Write ``data`` to ``tmp/`` and fsync it; return the new stem."""
        stem = new_stem(len(data))
        path = os.path.join(self.folder_path(account, folder), "tmp", stem)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:
            self.create_folder(account, folder)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        return stem

    def publish(self, account, folder, stem, bits):
        base = self.folder_path(account, folder)
        try:
            os.rename(os.path.join(base, "tmp", stem), os.path.join(base, "cur", file_name(stem, bits)))
        except FileNotFoundError:
            pass  # already published (recovery ran first)

    def discard(self, account, folder, stem):
        try:
            os.unlink(os.path.join(self.folder_path(account, folder), "tmp", stem))
        except FileNotFoundError:
            pass

    def find(self, account, folder, stem, bits):
        """The path of a stored message, wherever a crash may have left it."""
        base = self.folder_path(account, folder)
        path = os.path.join(base, "cur", file_name(stem, bits))
        if os.path.exists(path):
            return path
        for sub in ("cur", "new"):
            try:
                for entry in os.scandir(os.path.join(base, sub)):
                    if entry.name == stem or entry.name.startswith(stem + ":"):
                        return entry.path
            except FileNotFoundError:
                pass
        tmp = os.path.join(base, "tmp", stem)
        if os.path.exists(tmp):
            return tmp
        raise FileNotFoundError(path)

    def read(self, account, folder, stem, bits):
        with open(self.find(account, folder, stem, bits), "rb") as f:
            return f.read()

    def link(self, account, src_folder, stem, src_bits, dst_folder, dst_bits):
        src = self.find(account, src_folder, stem, src_bits)
        dst = os.path.join(self.folder_path(account, dst_folder), "cur", file_name(stem, dst_bits))
        try:
            os.link(src, dst)
        except FileNotFoundError:
            self.create_folder(account, dst_folder)
            os.link(src, dst)
        except FileExistsError:
            pass

    def remove(self, account, folder, stem, bits):
        try:
            os.unlink(self.find(account, folder, stem, bits))
        except FileNotFoundError:
            pass

    def set_flags(self, account, folder, stem, old_bits, new_bits):
        if flagbits.maildir_info(old_bits) == flagbits.maildir_info(new_bits):
            return
        try:
            src = self.find(account, folder, stem, old_bits)
        except FileNotFoundError:
            return
        dst = os.path.join(self.folder_path(account, folder), "cur", file_name(stem, new_bits))
        os.rename(src, dst)

    def rename_folder(self, account, old, new):
        src, dst = self.folder_path(account, old), self.folder_path(account, new)
        if os.path.isdir(src):
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.rename(src, dst)
        else:
            self.create_folder(account, new)

    def delete_folder(self, account, folder):
        if folder:
            shutil.rmtree(self.folder_path(account, folder), ignore_errors=True)

    def delete_account(self, account):
        shutil.rmtree(os.path.join(self.root, account), ignore_errors=True)

    # --- recovery and rebuild ---------------------------------------------

    def accounts(self):
        """Every ``domain/local`` that has a Maildir."""
        if not os.path.isdir(self.root):
            return []
        out = []
        for domain in sorted(os.listdir(self.root)):
            ddir = os.path.join(self.root, domain)
            if os.path.isdir(ddir):
                out.extend(f"{domain}/{local}" for local in sorted(os.listdir(ddir))
                           if os.path.isdir(os.path.join(ddir, local, "cur")))
        return out

    def folders(self, account):
        base = os.path.join(self.root, account)
        out = [""]
        for entry in sorted(os.listdir(base)):
            if entry.startswith(".") and entry not in (".", "..") and \
                    os.path.isdir(os.path.join(base, entry, "cur")):
                out.append(entry)
        return out

    def staged(self, account, folder):
        """Stems in ``tmp/`` (staged, not yet published)."""
        try:
            return os.listdir(os.path.join(self.folder_path(account, folder), "tmp"))
        except FileNotFoundError:
            return []

    def stored(self, account, folder):
        """``(stem, bits, path)`` of every message file in ``cur/`` and ``new/``."""
        base = self.folder_path(account, folder)
        out = []
        for sub in ("new", "cur"):
            try:
                entries = list(os.scandir(os.path.join(base, sub)))
            except FileNotFoundError:
                continue
            for entry in entries:
                stem, _sep, info = entry.name.partition(":2,")
                out.append((stem, flagbits.bits_from_info(info), entry.path))
        return out


class MemoryBlobs:
    """The same interface as ``Maildir``, holding bytes in a dict (tests only)."""

    def __init__(self):
        self.files = {}
        self.lock = threading.Lock()

    def create_folder(self, account, folder):
        pass

    def stage(self, account, folder, data):
        stem = new_stem(len(data))
        with self.lock:
            self.files[(account, folder, stem)] = bytes(data)
        return stem

    def publish(self, account, folder, stem, bits):
        pass

    def discard(self, account, folder, stem):
        self.files.pop((account, folder, stem), None)

    def read(self, account, folder, stem, bits):
        try:
            return self.files[(account, folder, stem)]
        except KeyError:
            raise FileNotFoundError(stem) from None

    def link(self, account, src_folder, stem, src_bits, dst_folder, dst_bits):
        with self.lock:
            self.files[(account, dst_folder, stem)] = self.files[(account, src_folder, stem)]

    def remove(self, account, folder, stem, bits):
        self.files.pop((account, folder, stem), None)

    def set_flags(self, account, folder, stem, old_bits, new_bits):
        pass

    def rename_folder(self, account, old, new):
        with self.lock:
            for key in [k for k in self.files if k[0] == account and k[1] == old]:
                self.files[(account, new, key[2])] = self.files.pop(key)

    def delete_folder(self, account, folder):
        with self.lock:
            for key in [k for k in self.files if k[0] == account and k[1] == folder]:
                del self.files[key]

    def delete_account(self, account):
        with self.lock:
            for key in [k for k in self.files if k[0] == account]:
                del self.files[key]

    def accounts(self):
        return []

    def staged(self, account, folder):
        return []
