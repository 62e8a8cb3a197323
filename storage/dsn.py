"""Delivery status notifications (RFC 3464) and the classification of SMTP
replies they and the outbound queue rely on.

``report(...)`` builds a ``multipart/report; report-type=delivery-status``
message: a human-readable part, the ``message/delivery-status`` fields (one
block per recipient: Final-Recipient, Action, Status, Remote-MTA,
Diagnostic-Code, Last-Attempt-Date, Will-Retry-Until for delays) and the
original as ``message/rfc822`` (RET=FULL, or RET absent and the message small)
or its header as ``text/rfc822-headers``. The sender is the null reverse-path,
so a DSN is never answered by another DSN (``storage.outbound`` checks that
too). Pure functions: no store, no network.
"""

import email.utils
import re
import secrets
import time
from dataclasses import dataclass

FULL_LIMIT = 256 * 1024    # a larger original is returned as its header only
_CODE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")


@dataclass(frozen=True)
class Notice:
    """One recipient's line in a DSN."""
    address: str
    action: str                 # failed, delayed, delivered, relayed
    status: str                 # enhanced status code, e.g. 5.1.1
    reply: str = ""             # the remote reply, or why
    remote: str = ""            # MX host name, when one answered
    orcpt: str = ""             # "rfc822;addr" as given at RCPT
    last_attempt: float = None
    retry_until: float = None


def status_of(reply, default_class="4"):
    """The enhanced status code in an SMTP reply ``"550 5.1.1 text"``, or one
    derived from its basic code (``5.0.0``/``4.0.0``/``2.0.0``)."""
    parts = (reply or "").split(None, 2)
    if len(parts) > 1 and _CODE.match(parts[1]):
        return parts[1]
    if parts and parts[0][:1] in "245" and parts[0].isdigit():
        return parts[0][0] + ".0.0"
    return default_class + ".0.0"


def classify(reply):
    """``"hard"`` (the address does not exist: suppress it), ``"full"``
    (mailbox full), ``"policy"`` (refused by policy: spam, authentication),
    ``"perm"`` (another permanent failure), ``"soft"`` (temporary: retry)."""
    code = status_of(reply)
    cls, subject, detail = code.split(".")
    if cls != "5":
        return "soft"
    if subject == "1" and detail in ("1", "2", "3", "6", "10"):
        return "hard"
    if subject == "2" and detail == "2":
        return "full"
    if subject == "7":
        return "policy"
    return "perm"


def _date(ts):
    return email.utils.formatdate(ts, localtime=False)


def _human(kind, notices, hostname):
    if kind == "delayed":
        head = ("This is the mail system at host %s.\n\nYour message could not be delivered "
                "yet to the recipients below. It will be retried; you do not need to send it "
                "again.\n" % hostname)
    elif kind == "failed":
        head = ("This is the mail system at host %s.\n\nYour message could not be delivered "
                "to one or more recipients. It is attached below.\n" % hostname)
    else:
        head = ("This is the mail system at host %s.\n\nYour message was delivered to the "
                "recipients below, as you asked to be told.\n" % hostname)
    lines = [head]
    for n in notices:
        why = f": {n.reply}" if n.reply else ""
        via = f" (host {n.remote})" if n.remote else ""
        lines.append(f"<{n.address}>{via}{why}")
    return "\n".join(lines) + "\n"


def report(*, hostname, recipient, notices, original, ret=None, envid=None, arrival=None,
           now=None):
    """The bytes of one DSN to ``recipient`` about ``notices`` (all of one kind)."""
    now = time.time() if now is None else now
    kind = notices[0].action
    boundary = "=_roost_" + secrets.token_hex(12)
    subject = {"failed": "Undelivered Mail Returned to Sender",
               "delayed": "Delayed Mail (still being retried)"}.get(kind, "Successful Mail Delivery Report")
    header = (f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
              f"To: <{recipient}>\r\n"
              f"Subject: {subject}\r\n"
              f"Date: {_date(now)}\r\n"
              f"Message-ID: <{secrets.token_hex(12)}@{hostname}>\r\n"
              "Auto-Submitted: auto-replied\r\n"
              "MIME-Version: 1.0\r\n"
              f'Content-Type: multipart/report; report-type=delivery-status;\r\n boundary="{boundary}"\r\n'
              "\r\n")
    fields = [f"Reporting-MTA: dns; {hostname}"]
    if envid:
        fields.append(f"Original-Envelope-Id: {envid}")
    if arrival:
        fields.append(f"Arrival-Date: {_date(arrival)}")
    blocks = ["\r\n".join(fields)]
    for n in notices:
        block = []
        if n.orcpt:
            kind_, _, addr = n.orcpt.partition(";")
            block.append(f"Original-Recipient: {kind_.strip() or 'rfc822'}; {addr.strip()}")
        block += [f"Final-Recipient: rfc822; {n.address}", f"Action: {n.action}",
                  f"Status: {n.status}"]
        if n.remote:
            block.append(f"Remote-MTA: dns; {n.remote}")
        if n.reply:
            block.append(f"Diagnostic-Code: smtp; {' '.join(n.reply.split())}")
        if n.last_attempt:
            block.append(f"Last-Attempt-Date: {_date(n.last_attempt)}")
        if n.retry_until:
            block.append(f"Will-Retry-Until: {_date(n.retry_until)}")
        blocks.append("\r\n".join(block))
    status_part = "\r\n\r\n".join(blocks) + "\r\n"
    human = _human(kind, notices, hostname).replace("\n", "\r\n")
    full = ret == "FULL" or (ret is None and len(original) <= FULL_LIMIT)
    if kind in ("delivered", "relayed", "delayed") and ret != "FULL":
        full = False     # a success or a delay notice needs only the header
    if full:
        third = b"Content-Type: message/rfc822\r\n\r\n" + original
    else:
        end = original.find(b"\r\n\r\n")
        end = original.find(b"\n\n") if end < 0 else end
        head = original if end < 0 else original[:end]
        third = b"Content-Type: text/rfc822-headers\r\n\r\n" + head + b"\r\n"
    b = boundary.encode()
    out = [header.encode(),
           b"--" + b + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\n" + human.encode(),
           b"\r\n--" + b + b"\r\nContent-Type: message/delivery-status\r\n\r\n"
           + status_part.encode("utf-8", "replace"),
           b"\r\n--" + b + b"\r\n" + third,
           b"\r\n--" + b + b"--\r\n"]
    return b"".join(out)
