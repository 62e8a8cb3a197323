"""mbox and Maildir folders in and out (``roost import`` / ``roost export``).

Owns the file formats only; storing goes through ``storage.delivery``.

Writing is mboxrd: a ``From `` line, the message with every ``>*From `` line
given one more ``>``, then exactly one ``\\n``. Reading undoes exactly that,
so a message's bytes survive a round trip unchanged, including messages that
do not end in a newline. A line starts a new message when it is the file's
first line, a ``From -`` marker (Netscape/Mozilla), a strict ``From_`` line
with an asctime date, or, after a blank line, a ``From`` line that carries an
address or a time; so ``From Russia with love`` inside a body does not split.
"""

import email.utils
import os
import re
import time

from . import flags as flagbits
from . import mime

_STRICT_FROM = re.compile(
    rb"^From \S+ +(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    rb" +\d{1,2} \d{1,2}:\d{2}(:\d{2})? (\S+ )?\d{4}")
_LOOSE_FROM = re.compile(rb"^From (\S*@\S*|MAILER-DAEMON|\S+ .*\d{1,2}:\d{2})")
_ESCAPED = re.compile(rb"^>(>*From )", re.M)
_NEEDS_ESCAPE = re.compile(rb"^(>*From )", re.M)


def _is_separator(line, prev_blank, first):
    if not line.startswith(b"From "):
        return False
    if first or line.startswith(b"From -") or _STRICT_FROM.match(line):
        return True
    return prev_blank and bool(_LOOSE_FROM.match(line))


def read_mbox(path):
    """Yield ``(data, from_line)`` for each message of an mbox file."""
    with open(path, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):
        lines[0] = lines[0][3:]
    current, from_line, prev_blank = None, None, True
    for i, line in enumerate(lines):
        if _is_separator(line, prev_blank, i == 0):
            if current is not None:
                yield _finish(current), from_line
            current, from_line = [], line.rstrip(b"\r\n")
        elif current is not None:
            current.append(line)
        prev_blank = line in (b"\n", b"\r\n")
    if current is not None:
        yield _finish(current), from_line


def _finish(lines):
    data = b"".join(lines)
    if data.endswith(b"\n"):
        data = data[:-1]
    return _ESCAPED.sub(rb"\1", data)


def mbox_flags(data):
    """IMAP flags from Status / X-Status / X-Keywords headers, and the date."""
    body_start = mime.header_end(data, 0, len(data))
    headers = mime.parse_headers(data, 0, body_start)
    status = (mime.header(headers, "status") or "") + (mime.header(headers, "x-status") or "")
    names = []
    for letter, name in (("R", "\\Seen"), ("A", "\\Answered"), ("F", "\\Flagged"),
                         ("D", "\\Deleted"), ("T", "\\Draft")):
        if letter in status:
            names.append(name)
    for kw in re.split(r"[\s,]+", mime.header(headers, "x-keywords") or ""):
        if kw and re.fullmatch(r"[!-~]+", kw) and not any(c in kw for c in '(){%*"\\]'):
            names.append(kw)
    return names


def from_line_date(from_line):
    """The date of a ``From sender date`` line as epoch seconds, or None."""
    parts = from_line.decode("ascii", "replace").split(None, 2)
    if len(parts) < 3:
        return None
    try:
        return time.mktime(time.strptime(" ".join(parts[2].split()[:5]), "%a %b %d %H:%M:%S %Y"))
    except (ValueError, OverflowError):
        return mime.parse_date(parts[2])


def write_mbox(out, data, sender, internal_date):
    """Append one message to the open binary file ``out`` in mboxrd format."""
    sender = sender or "MAILER-DAEMON"
    stamp = time.asctime(time.gmtime(internal_date))
    out.write(f"From {sender} {stamp}\n".encode("ascii", "replace"))
    out.write(_NEEDS_ESCAPE.sub(rb">\1", data))
    out.write(b"\n")


def envelope_sender(data):
    body_start = mime.header_end(data, 0, len(data))
    rp = mime.header(mime.parse_headers(data, 0, body_start), "return-path")
    if rp:
        addr = email.utils.parseaddr(rp)[1]
        if addr and " " not in addr:
            return addr
    return None


def read_maildir(path):
    """Yield ``(folder name, data, flag names, internal date)`` for a Maildir or
    Maildir++ tree (INBOX is the top, ``.A.B`` folders are ``A/B``)."""
    from .maildir import name_for
    folders = [("", path)]
    for entry in sorted(os.listdir(path)):
        full = os.path.join(path, entry)
        if entry.startswith(".") and entry not in (".", "..") and os.path.isdir(os.path.join(full, "cur")):
            folders.append((entry, full))
    for folder, fpath in folders:
        name = name_for(folder)
        for sub in ("new", "cur"):
            d = os.path.join(fpath, sub)
            if not os.path.isdir(d):
                continue
            for fname in sorted(os.listdir(d)):
                fp = os.path.join(d, fname)
                if not os.path.isfile(fp):
                    continue
                info = fname.partition(":2,")[2]
                bits = flagbits.bits_from_info(info)
                with open(fp, "rb") as f:
                    data = f.read()
                yield name, data, flagbits.names(bits, ()), os.stat(fp).st_mtime


def is_maildir(path):
    return os.path.isdir(os.path.join(path, "cur"))
