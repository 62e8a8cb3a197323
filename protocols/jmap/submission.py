"""Identity, EmailSubmission and PushSubscription methods (RFC 8621 sections
6-7, RFC 8620 section 7.2; VacationResponse is in ``sieve``).

Owns sending policy for JMAP. An identity's address, the Email's From and
the envelope's mailFrom must each be the account's own address or an alias of
it (``allowed_from``; so never the null reverse-path); a submission has 1 to ``MAX_RECIPIENTS`` recipients,
each a plain ``local@domain``; CR, LF or NUL anywhere in the envelope is
refused (``invalidProperties``), so nothing a client sends can split an SMTP
command.

Sending is one path: ``EmailSubmission/set`` create writes the submission row
first, then hands the Email's bytes as stored, less its Bcc and Resent-Bcc
fields, to the outbound queue (``Backend.outbound``, ``storage.outbound``)
with the envelope and the row's id. The queue stores local recipients at
once and queues the rest for the relay; from then on the queue keeps the
row's ``deliveryStatus`` and ``undoStatus`` (one change per report, so
/changes and push see every step). The envelope's SMTP parameters map onto
the queue's terms: RET, ENVID, NOTIFY, ORCPT (RFC 3461: the queue writes the
DSNs), HOLDFOR/HOLDUNTIL (RFC 4865, up to ``MAX_DELAYED_SEND``: ``sendAt`` is
that time), SIZE, BODY, SMTPUTF8 and REQUIRETLS; any other is refused, as the
account capability (``account_capability``) lists exactly these.

Undo send: with ``[jmap] undo_send`` seconds (``Backend.undo_send``) or a
FUTURERELEASE hold, the queue message is released only then and the
submission is ``pending``; setting ``undoStatus`` to ``canceled`` cancels it
in the queue, which only succeeds before the relay first took it
(``cannotUnsend`` after). Without either, a submission is ``final`` at once.
``sendAt`` is the creation time unless FUTURERELEASE was used (RFC 8621
section 7), even inside the undo window.
"""

import json
import logging
import re
import secrets
import threading
import time

from roost.storage import account_data, emails
from roost.storage.errors import MessageNotFound
from roost.storage.outbound import Envelope, Recipient
from roost.storage.store import parse_oid

from . import bodies
from .core import (CORE, LIMITS, MAIL, SUBMISSION, MethodError, bool_arg,
                   changes_response, check_set_args, ids_arg, int_arg, invalid, method,
                   properties_arg, put, run_call, set_error, set_response, uint_arg)

log = logging.getLogger("roost.jmap")

IDENTITY_PROPS = ("id", "name", "email", "replyTo", "bcc", "textSignature", "htmlSignature",
                  "mayDelete")
SUBMISSION_PROPS = ("id", "identityId", "emailId", "threadId", "envelope", "sendAt",
                    "undoStatus", "deliveryStatus", "dsnBlobIds", "mdnBlobIds")
PUSH_PROPS = ("id", "deviceClientId", "url", "keys", "verificationCode", "expires", "types")


# --- Identity -------------------------------------------------------------------

def _identity_json(row):
    pk, name, address, settings = row
    return {"id": f"I{pk}", "name": name, "email": address,
            "replyTo": settings.get("replyTo"), "bcc": settings.get("bcc"),
            "textSignature": settings.get("textSignature", ""),
            "htmlSignature": settings.get("htmlSignature", ""), "mayDelete": True}


def allowed_from(ctx, address):
    """May this account send as ``address`` (its own address or an alias of it)?"""
    if not isinstance(address, str):
        return False
    address = address.lower()
    own = ctx.account.address
    if address == own:
        return True
    domain = address.rpartition("@")[2]
    return any(target == own and (alias == address or alias == "@" + domain)
               for alias, target in ctx.store.aliases())


def _get_response(ctx, args, kind, allowed, load):
    """A ``kind``/get response: the arguments are checked first, then ``load()``
    gives every object by id, and the state is read after it."""
    ctx.check_account(args)
    ids = ids_arg(ctx, args)
    props = properties_arg(args, allowed)
    rows = load()
    found, missing = [], []
    for i in (list(rows) if ids is None else ids):
        if i in rows:
            found.append({p: rows[i][p] for p in props} | {"id": i})
        else:
            missing.append(i)
    return {"accountId": ctx.account_id_str,
            "state": str(ctx.state(kind)),
            "list": found, "notFound": missing}


@method("Identity/get", SUBMISSION)
def identity_get(ctx, args):
    return _get_response(ctx, args, "Identity", IDENTITY_PROPS, lambda: {
        f"I{r[0]}": _identity_json(r)
        for r in account_data.identities_of(ctx.store, ctx.account.id)})


@method("Identity/changes", SUBMISSION)
def identity_changes(ctx, args):
    account_data.identities_of(ctx.store, ctx.account.id)
    return changes_response(ctx, args, "Identity", lambda pk: f"I{pk}")


def _identity_settings(obj, base):
    settings = dict(base)
    for key in ("replyTo", "bcc"):
        if key in obj:
            v = obj[key]
            if v is not None and not (isinstance(v, list) and all(
                    isinstance(a, dict) and isinstance(a.get("email"), str) for a in v)):
                raise ValueError(key)
            settings[key] = v
    for key in ("textSignature", "htmlSignature"):
        if key in obj:
            if not isinstance(obj[key], str):
                raise ValueError(key)
            settings[key] = obj[key]
    return settings


@method("Identity/set", SUBMISSION)
def identity_set(ctx, args):
    account_data.identities_of(ctx.store, ctx.account.id)
    create, update, destroy, old = check_set_args(ctx, args, "Identity")
    resp = set_response(ctx, "Identity", old)
    acct = ctx.account.id
    for cid, obj in create.items():
        bad = [k for k in obj if k not in IDENTITY_PROPS or k in ("id", "mayDelete")]
        name = obj.get("name", "")
        if bad or not isinstance(name, str):
            put(resp, "notCreated", cid, set_error("invalidProperties", properties=bad or ["name"]))
            continue
        if not allowed_from(ctx, obj.get("email")):
            put(resp, "notCreated", cid, set_error(
                "forbiddenFrom", "the address is not this account's or one of its aliases"))
            continue
        try:
            settings = _identity_settings(obj, {})
        except ValueError as exc:
            put(resp, "notCreated", cid, set_error("invalidProperties", properties=[str(exc)]))
            continue
        pk = account_data.save_identity(ctx.store, acct, None, name, obj["email"].lower(), settings)
        ctx.created[cid] = f"I{pk}"
        put(resp, "created", cid, {"id": f"I{pk}", "mayDelete": True})
    rows = {r[0]: r for r in account_data.identities_of(ctx.store, acct)}
    for iid, patch in update.items():
        pk = parse_oid("I", ctx.resolve_id(iid))
        if pk not in rows:
            put(resp, "notUpdated", iid, set_error("notFound"))
            continue
        if "email" in patch and patch["email"] != rows[pk][2]:
            put(resp, "notUpdated", iid, set_error("invalidProperties", "email is immutable",
                                                   properties=["email"]))
            continue
        bad = [k for k in patch if k not in IDENTITY_PROPS or k in ("id", "mayDelete")]
        try:
            if bad:
                raise ValueError(bad[0])
            settings = _identity_settings(patch, rows[pk][3])
            name = patch.get("name", rows[pk][1])
            if not isinstance(name, str):
                raise ValueError("name")
        except ValueError as exc:
            put(resp, "notUpdated", iid, set_error("invalidProperties", properties=[str(exc)]))
            continue
        account_data.save_identity(ctx.store, acct, pk, name, rows[pk][2], settings)
        put(resp, "updated", iid, None)
    for iid in destroy:
        pk = parse_oid("I", ctx.resolve_id(iid))
        if pk is not None and account_data.delete_identity(ctx.store, acct, pk):
            put(resp, "destroyed", iid, None)
        else:
            put(resp, "notDestroyed", iid, set_error("notFound"))
    resp["newState"] = str(ctx.store.state(acct, "Identity"))
    return resp


# --- EmailSubmission ---------------------------------------------------------------

def _submission_json(row):
    pk, identity, message, thread, send_at, status = row
    return {"id": f"S{pk}", "identityId": f"I{identity}", "emailId": f"E{message}",
            "threadId": f"T{thread}", "envelope": status.get("envelope"),
            "sendAt": bodies.utc_date(send_at), "undoStatus": status.get("undoStatus", "final"),
            "deliveryStatus": status.get("deliveryStatus"), "dsnBlobIds": [], "mdnBlobIds": []}


@method("EmailSubmission/get", SUBMISSION)
def submission_get(ctx, args):
    return _get_response(ctx, args, "EmailSubmission", SUBMISSION_PROPS, lambda: {
        f"S{r[0]}": _submission_json(r)
        for r in account_data.submissions_of(ctx.store, ctx.account.id)})


@method("EmailSubmission/changes", SUBMISSION)
def submission_changes(ctx, args):
    return changes_response(ctx, args, "EmailSubmission", lambda pk: f"S{pk}")


def _submission_ids(ctx, args):
    filt = args.get("filter") or {}
    if not isinstance(filt, dict):
        raise invalid("filter must be an object")
    rows = [_submission_json(r) for r in account_data.submissions_of(ctx.store, ctx.account.id)]
    for key, value in filt.items():
        if key in ("identityIds", "emailIds", "threadIds"):
            prop = key[:-1]
            rows = [r for r in rows if isinstance(value, list) and r[prop] in value]
        elif key == "undoStatus":
            rows = [r for r in rows if r["undoStatus"] == value]
        elif key in ("before", "after"):
            try:
                when = bodies.parse_utc_date(value)
            except ValueError:
                raise MethodError("unsupportedFilter", f"{key} must be a UTCDate") from None
            rows = [r for r in rows if (bodies.parse_utc_date(r["sendAt"]) < when if key == "before"
                                        else bodies.parse_utc_date(r["sendAt"]) >= when)]
        else:
            raise MethodError("unsupportedFilter", f"unknown filter property {key}")
    sort = args.get("sort") or []
    if not isinstance(sort, list):
        raise invalid("sort must be a list")
    for s in reversed(sort):
        if not isinstance(s, dict) or s.get("property") not in ("emailId", "threadId", "sentAt"):
            raise MethodError("unsupportedSort", "sort by emailId, threadId or sentAt")
        prop = "sendAt" if s["property"] == "sentAt" else s["property"]
        rows.sort(key=lambda r: r[prop], reverse=s.get("isAscending", True) is False)
    return [r["id"] for r in rows]


@method("EmailSubmission/query", SUBMISSION)
def submission_query(ctx, args):
    ctx.check_account(args)
    ids = _submission_ids(ctx, args)
    position = max(0, int_arg(args, "position", 0))
    limit = uint_arg(args, "limit", None)
    page = ids[position:position + limit if limit is not None else None]
    out = {"accountId": ctx.account_id_str,
           "queryState": str(ctx.state("EmailSubmission")),
           "canCalculateChanges": False, "position": position, "ids": page}
    if bool_arg(args, "calculateTotal"):
        out["total"] = len(ids)
    return out


@method("EmailSubmission/queryChanges", SUBMISSION)
def submission_query_changes(ctx, args):
    ctx.check_account(args)
    raise MethodError("cannotCalculateChanges", "re-run EmailSubmission/query")


# --- sending: the envelope, its parameters, the bytes ----------------------------------

MAX_RECIPIENTS = 100            # per submission (tooManyRecipients, maxRecipients)
MAX_DELAYED_SEND = 7 * 86400    # FUTURERELEASE: the longest hold (maxDelayedSend)
MAX_PARAMETERS = 16             # per Address object
CONTROL = re.compile(r"[\r\n\x00]")
KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}\Z")      # RFC 5321 esmtp-keyword


def account_capability(backend):
    """The account's ``urn:ietf:params:jmap:submission`` object: what the
    outbound queue honours. FUTURERELEASE (RFC 4865) holds up to
    ``MAX_DELAYED_SEND``; DSN (RFC 3461) NOTIFY/ORCPT/RET/ENVID drive the
    queue's own DSNs; SIZE is the largest message; SMTPUTF8 and REQUIRETLS
    are kept with the message for the relay; BODY=8BITMIME is accepted (the
    relay converts 8-bit bodies for servers without it)."""
    latest = bodies.utc_date(time.time() + MAX_DELAYED_SEND)
    return {"maxDelayedSend": MAX_DELAYED_SEND, "submissionExtensions": {
        "FUTURERELEASE": [str(MAX_DELAYED_SEND), latest], "DSN": [],
        "SIZE": [str(backend.delivery.max_size)], "8BITMIME": [], "SMTPUTF8": [],
        "REQUIRETLS": []}}


class Refused(Exception):
    """A create or update that fails, with its SetError."""

    def __init__(self, type_, description=None, **extra):
        super().__init__(description)
        self.error = set_error(type_, description, **extra)


def _bad(description):
    return Refused("invalidProperties", description, properties=["envelope"])


def valid_mailbox(address):
    """A plain ``local@domain`` (RFC 5321 Mailbox, no quoted local part) that
    fits a forward-path; non-ASCII (SMTPUTF8) is allowed."""
    local, at, domain = address.rpartition("@")
    if not (at and local and domain) or len(address.encode()) > 254 or len(local.encode()) > 64:
        return False
    if any(ord(c) <= 32 or ord(c) == 127 or c in '<>"\\,;:()[]' for c in local):
        return False
    if domain.startswith("[") and domain.endswith("]"):
        return all(ord(c) > 32 and c not in "[]\\" for c in domain[1:-1]) and len(domain) > 2
    return all(label and len(label) <= 63 and label[0] != "-" and label[-1] != "-"
               and all(c.isalnum() or c == "-" for c in label) for label in domain.split("."))


def _parameters(address, where):
    """An Address's ``parameters`` as ``{NAME: value or None}``."""
    value = address.get("parameters")
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_PARAMETERS:
        raise _bad(f"{where} parameters must be an object of at most {MAX_PARAMETERS} entries")
    out = {}
    for name, v in value.items():
        if not (v is None or isinstance(v, str)):
            raise _bad(f"{where} parameter {name[:64]} must be a string or null")
        if CONTROL.search(name) or (v is not None and CONTROL.search(v)):
            raise _bad(f"{where} parameters may not contain CR, LF or NUL")
        if not KEYWORD.match(name) or name.upper() in out or (v is not None and len(v) > 500):
            raise _bad(f"{where} parameter {name[:64]!r} is malformed, repeated or too long")
        out[name.upper()] = v
    return out


def _address(value, where):
    if not (isinstance(value, dict) and isinstance(value.get("email"), str)
            and set(value) <= {"email", "parameters"}):
        raise _bad(f"{where} must be an Address object (email, parameters)")
    if CONTROL.search(value["email"]):
        raise _bad(f"{where} may not contain CR, LF or NUL")
    return value["email"], _parameters(value, where)


def _envelope(ctx, obj, info, identity):
    """``(mailFrom, its parameters, [(rcptTo, its parameters)], the Envelope
    as stored)`` from the create's ``envelope``, or made from the Email's
    headers as RFC 8621 section 7 says when it is null."""
    env = obj.get("envelope")
    if env is None:
        s = info.summary
        senders, froms = s.get("sender") or [], s.get("from") or []
        use = senders or froms
        if len(use) > 1:
            raise Refused("invalidEmail", "the Email has several Sender or From addresses; give "
                          "an envelope", properties=["sender" if senders else "from"])
        mail_from = use[0]["email"] if use else identity[2]
        if not allowed_from(ctx, mail_from):
            mail_from = identity[2]
        rcpts = _unique([(a["email"], {}) for k in ("to", "cc", "bcc") for a in s.get(k) or []])
        if len(rcpts) > MAX_RECIPIENTS:
            raise _too_many()
        stored = {"mailFrom": {"email": mail_from, "parameters": None},
                  "rcptTo": [{"email": r, "parameters": None} for r, _ in rcpts]}
        return mail_from, {}, rcpts, stored
    if not (isinstance(env, dict) and set(env) == {"mailFrom", "rcptTo"}
            and isinstance(env["rcptTo"], list)):
        raise _bad("envelope must be an object of mailFrom and rcptTo")
    if len(env["rcptTo"]) > MAX_RECIPIENTS:
        raise _too_many()
    mail_from, params = _address(env["mailFrom"], "mailFrom")
    rcpts = _unique([_address(r, "rcptTo") for r in env["rcptTo"]])
    stored = {"mailFrom": {"email": mail_from, "parameters": env["mailFrom"].get("parameters")},
              "rcptTo": [{"email": r["email"], "parameters": r.get("parameters")}
                         for r in env["rcptTo"]]}
    return mail_from, params, rcpts, stored


def _unique(rcpts):
    """The first of each recipient (domains compared without case)."""
    seen, out = set(), []
    for address, params in rcpts:
        local, _, domain = address.rpartition("@")
        if (local, domain.lower()) not in seen:
            seen.add((local, domain.lower()))
            out.append((address, params))
    return out


def _too_many():
    return Refused("tooManyRecipients", f"at most {MAX_RECIPIENTS} recipients",
                   maxRecipients=MAX_RECIPIENTS)


def _mail_parameters(params, now, max_size):
    """MAIL FROM parameters -> the queue's terms: RET, ENVID (RFC 3461),
    HOLDFOR/HOLDUNTIL (RFC 4865) as ``hold_until``, SIZE (RFC 1870), BODY,
    SMTPUTF8 (RFC 6531), REQUIRETLS (RFC 8689)."""
    out = {"ret": None, "envid": None, "hold_until": None, "smtputf8": False,
           "requiretls": False}
    if "HOLDFOR" in params and "HOLDUNTIL" in params:
        raise _bad("HOLDFOR and HOLDUNTIL cannot both be given")
    for name, value in params.items():
        if name == "RET" and value is not None and value.upper() in ("FULL", "HDRS"):
            out["ret"] = value.upper()
        elif name == "ENVID" and value and len(value) <= 100 and \
                all(32 <= ord(c) < 127 for c in value):
            out["envid"] = value
        elif name == "HOLDFOR" and value is not None and re.fullmatch(r"[0-9]{1,9}", value):
            if int(value) > MAX_DELAYED_SEND:
                raise _bad(f"HOLDFOR is longer than maxDelayedSend ({MAX_DELAYED_SEND} s)")
            out["hold_until"] = now + int(value)
        elif name == "HOLDUNTIL" and value is not None:
            try:
                when = bodies.parse_utc_date(value.upper())
            except ValueError:
                raise _bad("HOLDUNTIL must be an RFC 3339 date-time with a time zone") from None
            if when > now + MAX_DELAYED_SEND:
                raise _bad(f"HOLDUNTIL is further than maxDelayedSend ({MAX_DELAYED_SEND} s) away")
            out["hold_until"] = max(when, now)
        elif name == "SIZE" and value is not None and re.fullmatch(r"[0-9]{1,20}", value):
            if int(value) > max_size:
                raise Refused("tooLarge", f"at most {max_size} octets", maxSize=max_size)
        elif name == "BODY" and value is not None and value.upper() in ("7BIT", "8BITMIME"):
            pass
        elif name in ("SMTPUTF8", "REQUIRETLS") and value is None:
            out[name.lower()] = True
        else:
            raise _bad(f"MAIL FROM parameter {name}={value!r:.80} is not supported or malformed "
                       "(see submissionExtensions)")
    return out


def _recipient(address, params):
    """RCPT TO parameters (RFC 3461 NOTIFY and ORCPT) -> a queue Recipient."""
    notify = orcpt = None
    for name, value in params.items():
        parts = [p.strip().upper() for p in (value or "").split(",")]
        if name == "NOTIFY" and parts == ["NEVER"]:
            notify = "NEVER"
        elif name == "NOTIFY" and set(parts) <= {"SUCCESS", "FAILURE", "DELAY"} \
                and len(set(parts)) == len(parts):
            notify = ",".join(parts)
        elif name == "ORCPT" and value and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*;\S.*", value):
            orcpt = value
        else:
            raise _bad(f"RCPT TO parameter {name}={value!r:.80} is not supported or malformed "
                       "(see submissionExtensions)")
    return Recipient(address, orcpt=orcpt, notify=notify)


def without_bcc(data):
    """``data`` without its Bcc and Resent-Bcc header fields (RFC 8621
    section 7.5: they are never sent), everything else byte for byte."""
    out, pos, skipping, removed = [], 0, False, False
    while pos < len(data):
        nl = data.find(b"\n", pos)
        end = len(data) if nl < 0 else nl + 1
        line = data[pos:end]
        if line in (b"\r\n", b"\n"):
            break                                   # the end of the header section
        if line[:1] not in (b" ", b"\t"):           # not a continuation line
            name, colon, _ = line.partition(b":")
            skipping = bool(colon) and name.rstrip(b" \t").lower() in (b"bcc", b"resent-bcc")
        removed = removed or skipping
        if not skipping:
            out.append(line)
        pos = end
    return b"".join(out) + data[pos:] if removed else data


def _check_create(obj):
    if not isinstance(obj, dict):
        raise Refused("invalidProperties", "a create must be an object")
    extra = [k for k, v in obj.items() if k not in ("identityId", "emailId", "envelope")
             and not (k in SUBMISSION_PROPS and v is None)]
    if extra:
        raise Refused("invalidProperties", "only identityId, emailId and envelope can be set; a "
                      "delayed send is FUTURERELEASE: HOLDFOR or HOLDUNTIL on mailFrom",
                      properties=extra)


def _submit_one(ctx, obj, now):
    """Queue one create: checks, then the submission row, then the queue
    message linked to it. Returns the submission's primary key."""
    _check_create(obj)
    acct, outbound = ctx.account.id, ctx.backend.outbound
    identity_pk = parse_oid("I", ctx.resolve_id(obj.get("identityId")))
    message_pk = parse_oid("E", ctx.resolve_id(obj.get("emailId")))
    identities = {r[0]: r for r in account_data.identities_of(ctx.store, acct)}
    if identity_pk not in identities:
        raise Refused("invalidProperties", "identityId is not an identity", properties=["identityId"])
    identity = identities[identity_pk]
    if not allowed_from(ctx, identity[2]):
        raise Refused("forbiddenFrom", "the identity's address is no longer this account's")
    info = emails.get_messages(ctx.store, acct, [message_pk or -1]).get(message_pk)
    if info is None:
        raise Refused("invalidProperties", "emailId is not an email", properties=["emailId"])
    max_size = ctx.backend.delivery.max_size
    if info.size > max_size:
        raise Refused("tooLarge", f"at most {max_size} octets can be sent", maxSize=max_size)
    mail_from, mail_params, rcpts, stored = _envelope(ctx, obj, info, identity)
    froms = [a["email"] for a in info.summary.get("from") or []]
    if not froms:
        raise Refused("invalidEmail", "the Email has no From address", properties=["from"])
    if not all(allowed_from(ctx, f) for f in froms):
        raise Refused("forbiddenFrom", "From must be this account's address or one of its aliases")
    if not allowed_from(ctx, mail_from):
        raise Refused("forbiddenMailFrom", "the envelope sender must be this account's address "
                      "or one of its aliases")
    if not rcpts:
        raise Refused("noRecipients", "the envelope has no recipients")
    bad = [r for r, _ in rcpts if not valid_mailbox(r)]
    if bad:
        raise Refused("invalidRecipients", "not addresses mail can be sent to",
                      invalidRecipients=bad)
    mail = _mail_parameters(mail_params, now, max_size)
    recipients = [_recipient(r, p) for r, p in rcpts]
    # TODO: the per-account submission rate limits of the [submission] config
    # table (shared with SMTP submission, counted by Outbound.sent_since) are
    # not on main yet; until then JMAP sending is bounded per call only
    # (MAX_RECIPIENTS per submission, maxObjectsInSet submissions per call).
    release = max(mail["hold_until"] or 0, now + ctx.backend.undo_send)
    send_at = now if mail["hold_until"] is None else mail["hold_until"]
    try:
        data = without_bcc(ctx.store.read_message(acct, info.id))
    except MessageNotFound:         # destroyed meanwhile
        raise Refused("invalidProperties", "emailId is not an email", properties=["emailId"]) from None
    pk = account_data.add_submission(
        ctx.store, acct, identity_pk, info.id, info.thread_id, send_at,
        {"envelope": stored, "undoStatus": "pending" if release > now else "final",
         "deliveryStatus": None})
    utf8 = not all(a.isascii() for a in [mail_from] + [r.address for r in recipients])
    try:
        outbound.submit(Envelope(
            mail_from, recipients, account_id=acct, ret=mail["ret"], envid=mail["envid"],
            release_at=release, requiretls=mail["requiretls"],
            smtputf8=mail["smtputf8"] or utf8, submission_id=pk), data)
    except Exception:  # noqa: BLE001 - refuse this one, keep the call's other results
        log.exception("JMAP submission %s could not be queued", pk)
        account_data.delete_submission(ctx.store, acct, pk)
        raise Refused("forbiddenToSend", "the outbound queue could not take the message "
                      "now; try again later") from None
    return pk


def _cancel(ctx, row, patch):
    """An update: only ``undoStatus`` pending -> canceled (undo send)."""
    if not patch:
        return
    status = row[5]
    current = status.get("undoStatus", "final")
    bad = [k for k in patch if k != "undoStatus"]
    if bad or patch.get("undoStatus") not in (current, "canceled"):
        raise Refused("invalidProperties", "only undoStatus can change, and only to canceled",
                      properties=bad or ["undoStatus"])
    if patch["undoStatus"] == current:
        return
    queue_id = status.get("queueId")
    if current != "pending" or queue_id is None or not ctx.backend.outbound.cancel(queue_id):
        raise Refused("cannotUnsend", "the message was already handed over for delivery")


@method("EmailSubmission/set", SUBMISSION)
def submission_set(ctx, args):
    create, update, destroy, old = check_set_args(ctx, args, "EmailSubmission")
    on_update = args.get("onSuccessUpdateEmail")
    on_destroy = args.get("onSuccessDestroyEmail")
    if on_update is not None and not (isinstance(on_update, dict) and all(
            isinstance(p, dict) for p in on_update.values())):
        raise invalid("onSuccessUpdateEmail must map submission ids to patch objects")
    if on_destroy is not None and not (isinstance(on_destroy, list) and all(
            isinstance(i, str) for i in on_destroy)):
        raise invalid("onSuccessDestroyEmail must be a list of submission ids")
    if create and ctx.backend.outbound is None:
        raise MethodError("serverFail", "this server was started without an outbound queue")
    resp = set_response(ctx, "EmailSubmission", old)
    acct = ctx.account.id
    done = {}     # submission id (and "#creation id") that succeeded -> its email id
    for cid, obj in create.items():
        try:
            pk = _submit_one(ctx, obj, time.time())
        except Refused as exc:
            put(resp, "notCreated", cid, exc.error)
            continue
        (row,) = account_data.submissions_of(ctx.store, acct, [pk])
        sub = _submission_json(row)
        ctx.created[cid] = sub["id"]
        done["#" + cid] = done[sub["id"]] = sub["emailId"]
        put(resp, "created", cid, {k: sub[k] for k in (
            "id", "threadId", "sendAt", "undoStatus", "deliveryStatus", "dsnBlobIds", "mdnBlobIds")})
    rows = {f"S{r[0]}": r for r in account_data.submissions_of(ctx.store, acct)}
    for sid, patch in update.items():
        real = ctx.resolve_id(sid)
        if real not in rows:
            put(resp, "notUpdated", sid, set_error("notFound"))
            continue
        try:
            _cancel(ctx, rows[real], patch)
        except Refused as exc:
            put(resp, "notUpdated", sid, exc.error)
            continue
        done[sid] = done[real] = f"E{rows[real][2]}"
        put(resp, "updated", sid, None)
    for sid in destroy:
        real = ctx.resolve_id(sid)
        pk = parse_oid("S", real)
        if pk is not None and account_data.delete_submission(ctx.store, acct, pk):
            if real in rows:
                done[sid] = done[real] = f"E{rows[real][2]}"
            put(resp, "destroyed", sid, None)
        else:
            put(resp, "notDestroyed", sid, set_error("notFound"))
    resp["newState"] = str(ctx.store.state(acct, "EmailSubmission"))
    return [("EmailSubmission/set", resp)] + _on_success(ctx, done, on_update, on_destroy)


def _on_success(ctx, done, on_update, on_destroy):
    """The one implicit Email/set of RFC 8621 section 7.5, for the
    submissions of this call that succeeded (by id or ``#creation id``)."""
    def email_of(key):
        return done.get(key) or done.get(ctx.resolve_id(key))
    updates = {email_of(k): p for k, p in (on_update or {}).items() if email_of(k)}
    destroys = list(dict.fromkeys(e for e in map(email_of, on_destroy or []) if e))
    if not updates and not destroys:
        return []
    args = {"accountId": ctx.account_id_str}
    if updates:
        args["update"] = updates
    if destroys:
        args["destroy"] = destroys
    using, ctx.using = ctx.using, ctx.using | {MAIL}   # submission implies mail
    try:
        return [(name, result) for name, result, _cid in run_call(ctx, "Email/set", args, "", [])]
    finally:
        ctx.using = using


# --- PushSubscription (RFC 8620 section 7.2) -----------------------------------------

def _push_json(pk, s):
    return {"id": f"P{pk}", "deviceClientId": s.get("deviceClientId"), "url": s.get("url"),
            "keys": s.get("keys"), "verificationCode": s.get("verificationCode"),
            "expires": s.get("expires"), "types": s.get("types")}


MAX_PUSH_SUBSCRIPTIONS = 50     # per account (RFC 8620 section 8.6)


def send_verification(url, subscription_id, code, keys, allow_private=False):
    """POST the PushVerification object to the client's push service, off-thread."""
    from .push import post
    body = json.dumps({"@type": "PushVerification", "pushSubscriptionId": subscription_id,
                       "verificationCode": code}).encode()
    threading.Thread(target=post, args=(url, body, keys, 10, allow_private),
                     name="roost-push-verify", daemon=True).start()


def _push_create_error(obj):
    """The SetError for a PushSubscription create object, or None when it is good."""
    url, device = obj.get("url") if isinstance(obj, dict) else None, \
        obj.get("deviceClientId") if isinstance(obj, dict) else None
    if not isinstance(url, str) or not url.startswith("https://") or not isinstance(device, str):
        return set_error("invalidProperties", "url must be https and deviceClientId a string",
                         properties=["url", "deviceClientId"])
    keys = obj.get("keys")
    if keys is not None and not (isinstance(keys, dict) and isinstance(keys.get("p256dh"), str)
                                 and isinstance(keys.get("auth"), str)):
        return set_error("invalidProperties", "keys needs p256dh and auth", properties=["keys"])
    types = obj.get("types")
    if types is not None and not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
        return set_error("invalidProperties", properties=["types"])
    if obj.get("verificationCode") is not None:
        return set_error("invalidProperties", properties=["verificationCode"])
    return None


def _private_urls(ctx, create):
    """The create ids whose ``url`` is, or resolves to, an address a push must
    not go to (unless ``push_allow_private``); every name is looked up at once.
    A name that does not resolve now is let through: each push checks again."""
    from .push import refused_address, resolve_many, url_host
    if ctx.backend.push_allow_private:
        return set()
    hosts = {}
    for cid, obj in create.items():
        url = obj.get("url") if isinstance(obj, dict) else None
        try:
            hosts[cid] = url_host(url) if isinstance(url, str) else None
        except ValueError:
            hosts[cid] = None
    found = resolve_many([h for h, _p in filter(None, hosts.values())])
    return {cid for cid, hp in hosts.items()
            if hp is not None and any(refused_address(a) for a in found[hp[0]])}


@method("PushSubscription/get", CORE)
def push_get(ctx, args):
    if "accountId" in args:
        raise invalid("PushSubscription/get takes no accountId")
    ids = ids_arg(ctx, args)
    props = properties_arg(args, PUSH_PROPS)
    rows = {f"P{pk}": _push_json(pk, s)
            for pk, s in account_data.push_subscriptions_of(ctx.store, ctx.account.id)}
    found, missing = [], []
    for i in (list(rows) if ids is None else ids):
        if i in rows:
            o = {p: rows[i][p] for p in props} | {"id": i}
            o.pop("url", None)
            o.pop("keys", None)
            found.append(o)
        else:
            missing.append(i)
    return {"state": None, "list": found, "notFound": missing}


@method("PushSubscription/set", CORE)
def push_set(ctx, args):
    if "accountId" in args:
        raise invalid("PushSubscription/set takes no accountId")
    create, update, destroy = (args.get("create") or {}), (args.get("update") or {}), \
        (args.get("destroy") or [])
    if not isinstance(create, dict) or not isinstance(update, dict) or not isinstance(destroy, list):
        raise invalid("create, update and destroy have the wrong types")
    resp = {"oldState": None, "newState": None, "created": None, "updated": None,
            "destroyed": None, "notCreated": None, "notUpdated": None, "notDestroyed": None}
    acct = ctx.account.id
    if len(create) + len(update) + len(destroy) > LIMITS["maxObjectsInSet"]:
        raise MethodError("requestTooLarge", f"more than {LIMITS['maxObjectsInSet']} objects")
    errors = {cid: _push_create_error(obj) for cid, obj in create.items()}
    held = len(account_data.push_subscriptions_of(ctx.store, acct)) if create else 0
    fit = [cid for cid in create if errors[cid] is None][:max(0, MAX_PUSH_SUBSCRIPTIONS - held)]
    private = _private_urls(ctx, {cid: create[cid] for cid in fit})
    for cid, obj in create.items():
        if errors[cid] is not None:
            put(resp, "notCreated", cid, errors[cid])
            continue
        if cid not in fit:
            put(resp, "notCreated", cid, set_error(
                "overQuota", f"an account may hold {MAX_PUSH_SUBSCRIPTIONS} push subscriptions"))
            continue
        if cid in private:
            put(resp, "notCreated", cid, set_error(
                "invalidProperties", "url is, or resolves to, a loopback, private, link-local, "
                "multicast or unspecified address", properties=["url"]))
            continue
        url, device = obj["url"], obj["deviceClientId"]
        expires = time.time() + 7 * 86400
        code = secrets.token_urlsafe(16)
        settings = {"deviceClientId": device, "url": url, "keys": obj.get("keys"),
                    "types": obj.get("types"), "expires": bodies.utc_date(expires),
                    "code": code, "verificationCode": None}
        pk = account_data.save_push_subscription(ctx.store, acct, None, settings)
        ctx.created[cid] = f"P{pk}"
        send_verification(url, f"P{pk}", code, settings["keys"], ctx.backend.push_allow_private)
        put(resp, "created", cid, {"id": f"P{pk}", "expires": settings["expires"]})
    rows = dict(account_data.push_subscriptions_of(ctx.store, acct))
    for sid, patch in update.items():
        pk = parse_oid("P", ctx.resolve_id(sid))
        if pk not in rows or not isinstance(patch, dict):
            put(resp, "notUpdated", sid, set_error("notFound"))
            continue
        s = dict(rows[pk])
        bad = [k for k in patch if k not in ("verificationCode", "expires", "types")]
        if bad:
            put(resp, "notUpdated", sid, set_error("invalidProperties", properties=bad))
            continue
        if "verificationCode" in patch:
            if patch["verificationCode"] != s.get("code"):
                put(resp, "notUpdated", sid, set_error("invalidProperties", "wrong verification code",
                                                       properties=["verificationCode"]))
                continue
            s["verificationCode"] = patch["verificationCode"]
        if "types" in patch:
            if patch["types"] is not None and not (isinstance(patch["types"], list) and all(
                    isinstance(t, str) for t in patch["types"])):
                put(resp, "notUpdated", sid, set_error("invalidProperties", properties=["types"]))
                continue
            s["types"] = patch["types"]
        if "expires" in patch:
            s["expires"] = patch["expires"]
        account_data.save_push_subscription(ctx.store, acct, pk, s)
        put(resp, "updated", sid, None)
    if ctx.backend.push_changed is not None:
        ctx.backend.push_changed(acct)
    for sid in destroy:
        pk = parse_oid("P", ctx.resolve_id(sid))
        if pk is not None and account_data.delete_push_subscription(ctx.store, acct, pk):
            put(resp, "destroyed", sid, None)
        else:
            put(resp, "notDestroyed", sid, set_error("notFound"))
    return resp

