"""Message bytes: Maildir++ on local disk, the default blob store (``storage.blobs``).

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


KEYWORDS_FILE = "roost-keywords"
ALL_FLAGS = flagbits.SEEN | flagbits.ANSWERED | flagbits.FLAGGED | flagbits.DELETED | flagbits.DRAFT


class Maildir:
    """The default blob store (``storage.blobs``): Maildir++ under ``root``.
    ``account`` arguments are ``"domain/local"`` keys; a blob's key is its stem.

    A read opens the exact name the database implies (``cur/<stem>:2,<info of
    the row's flags>``). Only when that name is missing (a writer renamed the
    file since the row was read, or a crash fell between a commit and its
    rename) does it try the other names the same file can have: the 31 other
    info suffixes of the five system flags, then ``tmp/`` and ``new/``; at most
    34 opens, never a directory listing. ``roost fsck`` renames such files
    back to the names their rows imply.

    Keywords are mirrored for ``fsck --rebuild`` in each folder's
    ``roost-keywords`` file: one line ``<stem> TAB <keywords>`` appended per
    change, the last line of a stem wins (``roost fsck`` compacts it). Like the
    info suffix it is a mirror written after the commit, without fsync: the
    database is the record.
    """

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

    def put(self, account, folder, data, prefix=b""):
        """Write ``prefix`` then ``data`` to ``tmp/`` and fsync it; return the new stem."""
        stem = new_stem(len(prefix) + len(data))
        path = os.path.join(self.folder_path(account, folder), "tmp", stem)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:
            self.create_folder(account, folder)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for chunk in (prefix, data):
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        return stem

    def put_copy(self, src_account, src_folder, key, account, folder):
        """The staged bytes of ``key`` staged again for another mailbox (a hard
        link; the same stem, so the copy's key is ``key``)."""
        src = os.path.join(self.folder_path(src_account, src_folder), "tmp", key)
        dst = os.path.join(self.folder_path(account, folder), "tmp", key)
        try:
            os.link(src, dst)
        except FileNotFoundError:
            self.create_folder(account, folder)
            os.link(src, dst)
        return key

    def commit(self, ref, keywords=()):
        base = self.folder_path(ref.account, ref.folder)
        try:
            os.rename(os.path.join(base, "tmp", ref.key), os.path.join(base, "cur", file_name(ref.key, ref.bits)))
        except FileNotFoundError:
            return  # already committed (recovery ran first), or adopted in place by fsck
        if keywords:
            self._note_keywords(ref.account, ref.folder, ref.key, keywords)

    def discard(self, account, folder, key):
        try:
            os.unlink(os.path.join(self.folder_path(account, folder), "tmp", key))
        except FileNotFoundError:
            pass

    def _candidates(self, ref):
        base = self.folder_path(ref.account, ref.folder)
        cur = os.path.join(base, "cur")
        yield os.path.join(cur, file_name(ref.key, ref.bits))
        for bits in sorted(range(ALL_FLAGS + 1), key=lambda b: (bin(b ^ ref.bits).count("1"), b)):
            if bits != ref.bits:
                yield os.path.join(cur, file_name(ref.key, bits))
        yield os.path.join(base, "tmp", ref.key)
        yield os.path.join(base, "new", ref.key)

    def path(self, ref):
        """The path the copy at ``ref`` has now (see the class docstring)."""
        for path in self._candidates(ref):
            if os.path.exists(path):
                return path
        raise FileNotFoundError(file_name(ref.key, ref.bits))

    def get(self, ref, start=0, end=None):
        for path in self._candidates(ref):
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                continue
            with f:
                if start:
                    f.seek(start)
                return f.read() if end is None else f.read(max(0, end - start))
        raise FileNotFoundError(file_name(ref.key, ref.bits))

    def link(self, ref, dst_folder, keywords=(), dst_bits=None):
        bits = ref.bits if dst_bits is None else dst_bits
        dst = os.path.join(self.folder_path(ref.account, dst_folder), "cur", file_name(ref.key, bits))
        try:
            os.link(self.path(ref), dst)
        except FileNotFoundError:
            self.create_folder(ref.account, dst_folder)
            os.link(self.path(ref), dst)
        except FileExistsError:
            pass
        if keywords:
            self._note_keywords(ref.account, dst_folder, ref.key, keywords)

    def unlink(self, ref):
        try:
            os.unlink(self.path(ref))
        except FileNotFoundError:
            pass

    def set_flags(self, ref, new_bits, keywords=None):
        if keywords is not None:
            self._note_keywords(ref.account, ref.folder, ref.key, keywords)
        if flagbits.maildir_info(ref.bits) == flagbits.maildir_info(new_bits):
            return
        try:
            src = self.path(ref)
        except FileNotFoundError:
            return
        os.rename(src, os.path.join(self.folder_path(ref.account, ref.folder), "cur",
                                    file_name(ref.key, new_bits)))

    def _note_keywords(self, account, folder, stem, keywords):
        line = f"{stem}\t{' '.join(keywords)}\n".encode("utf-8", "surrogateescape")
        try:
            with open(os.path.join(self.folder_path(account, folder), KEYWORDS_FILE), "ab") as f:
                f.write(line)
        except OSError:
            pass  # a mirror: the database has the keywords

    def keywords(self, account, folder):
        """``{stem: (keyword, ...)}`` from the folder's keywords file."""
        out = {}
        try:
            with open(os.path.join(self.folder_path(account, folder), KEYWORDS_FILE), "rb") as f:
                for line in f:
                    stem, sep, kws = line.decode("utf-8", "surrogateescape").rstrip("\n").partition("\t")
                    if sep:
                        out[stem] = tuple(kws.split())
        except FileNotFoundError:
            pass
        return {k: v for k, v in out.items() if v}

    def write_keywords(self, account, folder, by_stem):
        """Replace the folder's keywords file with ``{stem: keywords}`` (compaction)."""
        path = os.path.join(self.folder_path(account, folder), KEYWORDS_FILE)
        if not by_stem:
            if os.path.exists(path):
                os.unlink(path)
            return
        with open(path + ".new", "wb") as f:
            for stem, kws in sorted(by_stem.items()):
                f.write(f"{stem}\t{' '.join(kws)}\n".encode("utf-8", "surrogateescape"))
        os.rename(path + ".new", path)

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
        """Stems in ``tmp/`` (staged, not yet committed)."""
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
