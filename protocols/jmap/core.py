"""JMAP Core (RFC 8620): the request envelope, method dispatch, result
references, creation ids, errors, and the shared /get /changes /set shapes.

Owns turning a parsed request object into a response object. Runs in a
worker thread (method handlers call the blocking store API directly); it never
touches the network or twisted. Handlers are registered per method name with
the capability they belong to; capabilities in the session come from the same
registry, so nothing is typed twice. ``process`` logs one "command" event per
method call and one "request" event per request (``roost.server.logs``).

Bounds (a request of a few KB must not cost gigabytes): ``loads`` refuses as
``notJSON`` what is not I-JSON (lone surrogates, non-finite numbers) and JSON
nested deeper than ``MAX_DEPTH``. Result references share objects with the
results they point into, so a chain of references can describe a response far
larger than anything held in memory; ``SizeMeter`` measures JSON sizes
memoised by object identity, in time proportional to the distinct objects.
The resolved references of one request may total at most ``maxSizeRequest``
(the request, were its references written out, would fit the limit the
client could have sent), and the response at most ``MAX_SIZE_RESPONSE``;
handlers whose items can be large (Email/get, Blob/get) check the running
total with ``Context.spend`` as they build. Past either bound the offending
call gets the method-level error ``requestTooLarge`` and later calls run as
usual (RFC 8620 section 3.6.2). Not the request-level ``limit`` error: that
says the request "was not processed" and names a limit of the capability
object, while here earlier calls may already have changed state. A call that
changed state keeps its response (it is small: ids and server-set
properties), so a client always learns what was done.
"""

import json
import logging
import math
import re
import time

log = logging.getLogger("roost.jmap")

CORE = "urn:ietf:params:jmap:core"
MAIL = "urn:ietf:params:jmap:mail"
SUBMISSION = "urn:ietf:params:jmap:submission"
VACATION = "urn:ietf:params:jmap:vacationresponse"
WEBSOCKET = "urn:ietf:params:jmap:websocket"

LIMITS = {
    "maxSizeUpload": 50 * 1024 * 1024,
    "maxConcurrentUpload": 4,
    "maxSizeRequest": 10 * 1024 * 1024,
    "maxConcurrentRequests": 8,
    "maxCallsInRequest": 32,
    "maxObjectsInGet": 500,
    "maxObjectsInSet": 500,
    "collationAlgorithms": ["i;ascii-casemap", "i;octet"],
}

MAX_SIZE_RESPONSE = 32 * 1024 * 1024     # JSON octets of one response, estimated
MAX_SIZE_REFERENCES = LIMITS["maxSizeRequest"]   # resolved result references, per request
MAX_DEPTH = 64                           # nesting of arrays and objects in a request


class MethodError(Exception):
    """A method-level error (RFC 8620 section 3.6.2)."""

    def __init__(self, type_, description=None, **extra):
        super().__init__(description or type_)
        self.type = type_
        self.description = description
        self.extra = extra

    def json(self):
        out = {"type": self.type}
        if self.description:
            out["description"] = self.description
        out.update(self.extra)
        return out


class RequestError(Exception):
    """A request-level error: an RFC 7807 problem document."""

    def __init__(self, type_, detail, status=400, **extra):
        super().__init__(detail)
        self.type = f"urn:ietf:params:jmap:error:{type_}"
        self.detail = detail
        self.status = status
        self.extra = extra

    def json(self):
        return {"type": self.type, "status": self.status, "detail": self.detail, **self.extra}


def _not_finite(value):
    raise ValueError(f"{value} is not a JSON number")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def loads(data):
    """A request (or WebSocket message) as JSON; raises RequestError
    ``notJSON`` for anything not I-JSON (RFC 7493: UTF-8, no lone surrogates,
    finite numbers) or nested deeper than ``MAX_DEPTH``."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        doc = json.loads(text, parse_constant=_not_finite, parse_float=_finite_float)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RequestError("notJSON", "the request body is not I-JSON") from None
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                raise RequestError("notJSON", "the request has a lone surrogate (not I-JSON)")
            continue
        if isinstance(value, dict):
            if depth > MAX_DEPTH:
                break
            stack.extend((k, depth) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            if depth > MAX_DEPTH:
                break
            stack.extend((v, depth + 1) for v in value)
    else:
        return doc
    raise RequestError("notJSON", f"the request is nested deeper than {MAX_DEPTH} levels")


class SizeMeter:
    """Estimated JSON sizes (octets, as ``json.dumps`` with ``ensure_ascii=False``
    writes them, escapes aside), memoised by object identity: a value built
    from references to earlier results costs only its new objects. Measured
    containers are held, so their ids stay theirs; they must not change after."""

    def __init__(self):
        self.memo = {}

    def size(self, value):
        if isinstance(value, str):
            return len(value) + 2 if value.isascii() else \
                len(value.encode("utf-8", "surrogatepass")) + 2
        if value is None or value is True:
            return 4
        if value is False:
            return 5
        if isinstance(value, (int, float)):
            return len(repr(value))
        if isinstance(value, (dict, list, tuple)):
            hit = self.memo.get(id(value))
            if hit is not None:
                return hit[1]
            if isinstance(value, dict):
                n = 1 + sum(self.size(k) + self.size(v) + 2 for k, v in value.items())
            else:
                n = 1 + sum(self.size(v) + 1 for v in value)
            n = max(n, 2)
            self.memo[id(value)] = (value, n)
            return n
        return len(str(value)) + 2


def invalid(description):
    return MethodError("invalidArguments", description)


def set_error(type_, description=None, **extra):
    out = {"type": type_}
    if description:
        out["description"] = description
    out.update(extra)
    return out


def store_set_error(exc, mailbox_property="mailboxIds"):
    """The SetError for a typed store error: the one place JMAP maps them.
    ``mailbox_property`` names the argument a missing mailbox came from
    (None: the object itself is the mailbox, so it is ``notFound``)."""
    from roost.storage import errors
    if isinstance(exc, errors.QuotaExceeded):
        return set_error("overQuota", "the account is over its quota")
    if isinstance(exc, errors.MessageTooLarge):
        return set_error("tooLarge", str(exc))
    if isinstance(exc, errors.MailboxNotFound):
        if mailbox_property is None:
            return set_error("notFound", "no such mailbox")
        return set_error("invalidProperties", "a mailbox does not exist",
                         properties=[mailbox_property])
    if isinstance(exc, errors.MessageNotFound):
        return set_error("notFound")
    if isinstance(exc, errors.MailboxExists):
        return set_error("invalidProperties", "a mailbox with that name already exists",
                         properties=["name"])
    if isinstance(exc, errors.InvalidName):
        return set_error("invalidProperties", str(exc), properties=["name"])
    if isinstance(exc, errors.Conflict):
        return set_error("forbidden", str(exc))
    raise exc


# --- the registry ---------------------------------------------------------------

METHODS = {}        # "Type/verb" -> (capability, handler)
CAPABILITIES = {}   # urn -> (session-level value, account-level value or None)


def method(name, capability):
    def register(fn):
        METHODS[name] = (capability, fn)
        return fn
    return register


def capability(urn, session_value, account_value=None):
    CAPABILITIES[urn] = (session_value, account_value)


capability(CORE, LIMITS)


# --- the call context ---------------------------------------------------------------

MAIL_KINDS = ("Email", "Mailbox", "Thread")


class Context:
    """What a method handler may use: the authenticated account, the store,
    delivery, and the creation ids of this request."""

    def __init__(self, backend, account, created_ids=None):
        self.backend = backend
        self.store = backend.store
        self.account = account
        self.account_id_str = account_id_of(account)
        self.shared = None      # on a shared account's call: {mailbox pk: rights} (jmap.sharing)
        self.created = dict(created_ids or {})
        self.using = ()
        self._states = {}
        self.meter = SizeMeter()
        self.response_size = 0    # of the responses admitted so far
        self.spent = 0            # by the running call, through ``spend``
        self.reference_size = 0

    def spend(self, value):
        """Count ``value`` (a piece of the running call's result) against the
        response bound; raises MethodError ``requestTooLarge`` past it."""
        self.spent += self.meter.size(value)
        if self.response_size + self.spent > MAX_SIZE_RESPONSE:
            raise MethodError("requestTooLarge", "the response would be larger than "
                              f"{MAX_SIZE_RESPONSE} octets; ask for less in one call")

    def admit(self, name, outs):
        """The responses of one call as they go into the response: past the
        size bound, a read's result becomes a ``requestTooLarge`` error."""
        self.spent = 0
        size = sum(self.meter.size(o) + 1 for o in outs)
        if self.response_size + size > MAX_SIZE_RESPONSE and name.endswith(READ_VERBS) \
                and outs and outs[0][0] != "error":
            outs = [["error", {"type": "requestTooLarge",
                               "description": "the response would be larger than "
                                              f"{MAX_SIZE_RESPONSE} octets; ask for less "
                                              "in one call"}, outs[0][2]]]
            size = sum(self.meter.size(o) + 1 for o in outs)
        self.response_size += size
        return outs

    def state(self, kind):
        """The state of ``kind``, read once per request until something writes."""
        if kind not in self._states:
            kinds = {kind} | ({"Email", "Mailbox", "Thread"} if kind in MAIL_KINDS else set())
            self._states.update(self.store.states(self.account.id, kinds))
        return self._states[kind]

    def check_account(self, args, required=True):
        acct = args.get("accountId")
        if acct is None and not required:
            return
        if not isinstance(acct, str):
            raise invalid("accountId is required")
        if acct != self.account_id_str:
            raise MethodError("accountNotFound", f"no account {acct} for these credentials")

    def resolve_id(self, value):
        """An id, or the real id behind a ``#creationId`` made earlier in this request."""
        if isinstance(value, str) and value.startswith("#"):
            return self.created.get(value[1:])
        return value


def account_id_of(account):
    return f"A{account.id}"


# --- requests -----------------------------------------------------------------------

def check_request(request):
    if not isinstance(request, dict):
        raise RequestError("notRequest", "the request must be a JSON object")
    using = request.get("using")
    calls = request.get("methodCalls")
    if not isinstance(using, list) or not all(isinstance(u, str) for u in using):
        raise RequestError("notRequest", "using must be a list of capability URNs")
    if not isinstance(calls, list):
        raise RequestError("notRequest", "methodCalls must be a list")
    for c in calls:
        if not (isinstance(c, list) and len(c) == 3 and isinstance(c[0], str)
                and isinstance(c[1], dict) and isinstance(c[2], str)):
            raise RequestError("notRequest", "each method call must be [name, arguments, callId]")
    created = request.get("createdIds")
    if created is not None and not (isinstance(created, dict) and
                                    all(isinstance(v, str) for v in created.values())):
        raise RequestError("notRequest", "createdIds must map creation ids to ids")
    unknown = [u for u in using if u not in CAPABILITIES]
    if unknown:
        raise RequestError("unknownCapability",
                           f"this server does not support {', '.join(unknown)}")
    if len(calls) > LIMITS["maxCallsInRequest"]:
        raise RequestError("limit", f"more than {LIMITS['maxCallsInRequest']} method calls",
                           limit="maxCallsInRequest")
    return using, calls, created


def process(backend, account, request):
    """The Response object for a Request object (raises RequestError)."""
    using, calls, created = check_request(request)
    ctx = Context(backend, account, created)
    ctx.using = frozenset(using)
    responses, started = [], time.monotonic()
    for name, args, call_id in calls:
        t, outs = time.monotonic(), ctx.admit(name, run_call(ctx, name, args, call_id, responses))
        responses.extend(outs)
        _log_call(account, name, outs, t)
    _log_request(account, calls, started)
    result = {"methodResponses": responses, "sessionState": backend.session_state(account)}
    if created is not None:
        result["createdIds"] = ctx.created
    return result


def _log_call(account, name, outs, started):
    """One "command" event per method call (fields: roost.server.logs)."""
    if log.isEnabledFor(logging.DEBUG):
        outcome = outs[0][1].get("type", "error") if outs and outs[0][0] == "error" else "ok"
        log.debug("%s %s", name[:100], outcome, extra={
            "event": "command", "proto": "jmap", "verb": name if name in METHODS else "unknown",
            "outcome": outcome, "ms": round((time.monotonic() - started) * 1000, 3),
            "account": account.address})


def _log_request(account, calls, started):
    if log.isEnabledFor(logging.DEBUG):
        log.debug("request", extra={
            "event": "request", "proto": "jmap", "account": account.address,
            "methods": [c[0][:100] for c in calls],
            "ms": round((time.monotonic() - started) * 1000, 3)})


READ_VERBS = ("/get", "/query", "/changes", "/queryChanges", "/echo", "/parse")


def run_call(ctx, name, args, call_id, responses):
    """The responses (usually one) to one method call."""
    try:
        entry = METHODS.get(name)
        if entry is None or entry[0] not in ctx.using:
            raise MethodError("unknownMethod", f"{name} is unknown or its capability is not in using")
        args = resolve_references(args, responses, ctx)
        reads = name.endswith(READ_VERBS)
        if not reads:
            ctx._states.clear()
        try:
            acct = args.get("accountId") if isinstance(args, dict) else None
            if isinstance(acct, str) and acct != ctx.account_id_str:
                from .sharing import shared_call     # another account: what it shares, if anything
                out = shared_call(ctx, name, entry[1], args)
            else:
                out = entry[1](ctx, args)
        finally:
            if not reads:
                ctx._states.clear()
        if isinstance(out, list):     # handlers with implicit calls return several
            return [[n, a, call_id] for n, a in out]
        return [[name, out, call_id]]
    except MethodError as exc:
        return [["error", exc.json(), call_id]]
    except Exception:  # noqa: BLE001 - a bug must not become a 500 for the whole request
        log.exception("JMAP method %s failed", name)
        return [["error", {"type": "serverFail",
                           "description": "the server could not process this call"}, call_id]]


# --- result references (RFC 8620 section 3.7) ---------------------------------------------

def resolve_references(args, responses, ctx=None):
    """``args`` with its ``#name`` references resolved; with ``ctx``, the
    resolved values count against the request's ``MAX_SIZE_REFERENCES``."""
    out = {}
    size = ctx.reference_size if ctx is not None else 0
    for key, value in args.items():
        if key.startswith("#"):
            plain = key[1:]
            if plain in args:
                raise invalid(f"both {plain} and #{plain} are given")
            out[plain] = resolve_reference(value, responses)
            if ctx is not None:
                size += ctx.meter.size(out[plain])
                if size > MAX_SIZE_REFERENCES:
                    raise MethodError("requestTooLarge",
                                      "the result references of this request resolve to more "
                                      f"than {MAX_SIZE_REFERENCES} octets (maxSizeRequest)")
        else:
            out[key] = value
    if ctx is not None:
        ctx.reference_size = size
    return out


def resolve_reference(ref, responses):
    if not (isinstance(ref, dict) and isinstance(ref.get("resultOf"), str)
            and isinstance(ref.get("name"), str) and isinstance(ref.get("path"), str)):
        raise MethodError("invalidResultReference", "a ResultReference needs resultOf, name and path")
    for name, result, call_id in responses:
        if call_id == ref["resultOf"]:
            if name != ref["name"]:
                raise MethodError("invalidResultReference",
                                  f"call {call_id} answered {name}, not {ref['name']}")
            try:
                return json_pointer(result, ref["path"])
            except (KeyError, IndexError, ValueError, TypeError):
                raise MethodError("invalidResultReference",
                                  f"path {ref['path']} does not resolve") from None
    raise MethodError("invalidResultReference", f"no earlier call {ref['resultOf']}")


def json_pointer(doc, path):
    """RFC 6901 with JMAP's ``*`` (map over an array, flattening arrays of arrays)."""
    if path == "":
        return doc
    if not path.startswith("/"):
        raise ValueError(path)
    tokens = [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]
    return _walk(doc, tokens)


def _walk(doc, tokens):
    if not tokens:
        return doc
    head, rest = tokens[0], tokens[1:]
    if isinstance(doc, list):
        if head == "*":
            out = []
            for item in doc:
                value = _walk(item, rest)
                if isinstance(value, list):
                    out.extend(value)
                else:
                    out.append(value)
            return out
        if not re.fullmatch(r"0|[1-9][0-9]*", head):
            raise ValueError(head)
        return _walk(doc[int(head)], rest)
    if isinstance(doc, dict):
        return _walk(doc[head], rest)
    raise TypeError(head)


# --- argument helpers ------------------------------------------------------------

def ids_arg(ctx, args, key="ids", required=False, limit=None):
    ids = args.get(key)
    if ids is None:
        if required:
            raise invalid(f"{key} is required")
        return None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise invalid(f"{key} must be a list of ids")
    limit = limit or LIMITS["maxObjectsInGet"]
    if len(ids) > limit:
        raise MethodError("requestTooLarge", f"more than {limit} ids")
    return [ctx.resolve_id(i) or i for i in ids]


def properties_arg(args, allowed, key="properties", default=None):
    props = args.get(key)
    if props is None:
        return list(default if default is not None else allowed)
    if not isinstance(props, list) or not all(isinstance(p, str) for p in props):
        raise invalid(f"{key} must be a list of property names")
    bad = [p for p in props if p not in allowed]
    if bad:
        raise invalid(f"unknown properties: {', '.join(bad[:5])}")
    return list(dict.fromkeys(props))


def uint_arg(args, key, default=None, minimum=0):
    value = args.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum or value > 2**53:
        raise invalid(f"{key} must be an integer of at least {minimum}")
    return value


def int_arg(args, key, default=0):
    value = args.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 2**53:
        raise invalid(f"{key} must be an integer")
    return value


def bool_arg(args, key, default=False):
    value = args.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{key} must be true or false")
    return value


def parse_state(value):
    """A state string as an integer, or None when it is not one of ours."""
    if isinstance(value, str) and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def changes_response(ctx, args, kind, encode):
    """The /changes answer for ``kind`` from the store's change log;
    ``encode(object_pk)`` gives the public id.

    A state is a MODSEQ. When one MODSEQ changed more objects than
    ``maxChanges`` allows (a batch of deliveries, a bulk destroy), the answer
    stops inside it with the intermediate state ``"<modseq>.<rows consumed>"``
    (change rows of one MODSEQ have a fixed order), so the limit always holds."""
    ctx.check_account(args)
    since = args.get("sinceState")
    if not isinstance(since, str):
        raise invalid("sinceState is required")
    max_changes = uint_arg(args, "maxChanges", None, minimum=1)
    current = ctx.state(kind)
    base, dot, skip = since.partition(".")
    since_n = parse_state(base)
    if since_n is None or since_n > current or \
            (dot and (not skip.isdigit() or len(skip) > 9 or since_n < 1)):
        raise MethodError("cannotCalculateChanges", f"state {since} is not one this server gave")
    if since_n < ctx.store.history_floor(ctx.account.id):
        raise MethodError("cannotCalculateChanges",
                          f"changes before {since} are no longer kept; fetch everything again")
    skip = int(skip) if skip else 0
    rows = ctx.store.changes(ctx.account.id, kind, since_n - 1 if skip else since_n)
    if skip:    # rows come in MODSEQ order, so the partly read one is first
        same = [r for r in rows if r[0] == since_n]
        rows = same[skip:] + rows[len(same):]
    ops = {}
    new_state = str(since_n) if not skip else since
    more = False
    i = 0
    while i < len(rows):
        modseq = rows[i][0]
        j = i
        while j < len(rows) and rows[j][0] == modseq:
            j += 1
        group = rows[i:j]
        if max_changes and len(set(ops) | {r[1] for r in group}) > max_changes:
            more = True
            if not ops:     # this MODSEQ alone is too big: stop inside it
                used = 0
                for _m, oid, op in group:
                    if oid not in ops and len(ops) >= max_changes:
                        break
                    ops[oid] = (ops.get(oid, (op, op))[0], op)
                    used += 1
                offset = skip if (skip and modseq == since_n) else 0
                new_state = f"{modseq}.{offset + used}"
            break
        for _m, oid, op in group:
            ops[oid] = (ops.get(oid, (op, op))[0], op)
        new_state = str(modseq)
        i = j
    if not more:
        new_state = str(current)
    created, updated, destroyed = [], [], []
    for oid, (first, last) in ops.items():
        if first == "c" and last == "d":
            continue
        if last == "d":
            destroyed.append(encode(oid))
        elif first == "c":
            created.append(encode(oid))
        else:
            updated.append(encode(oid))
    return {"accountId": ctx.account_id_str, "oldState": since, "newState": new_state,
            "hasMoreChanges": more, "created": created, "updated": updated,
            "destroyed": destroyed}


def check_set_args(ctx, args, kind):
    """Validate the common /set arguments; returns (create, update, destroy, old state)."""
    ctx.check_account(args)
    old = str(ctx.store.state(ctx.account.id, kind))
    if args.get("ifInState") is not None and args["ifInState"] != old:
        raise MethodError("stateMismatch", f"the state is {old}")
    create = args.get("create") or {}
    update = args.get("update") or {}
    destroy = args.get("destroy") or []
    if not isinstance(create, dict) or not all(isinstance(v, dict) for v in create.values()):
        raise invalid("create must map creation ids to objects")
    if not isinstance(update, dict) or not all(isinstance(v, dict) for v in update.values()):
        raise invalid("update must map ids to patch objects")
    if not isinstance(destroy, list) or not all(isinstance(i, str) for i in destroy):
        raise invalid("destroy must be a list of ids")
    if len(create) + len(update) + len(destroy) > LIMITS["maxObjectsInSet"]:
        raise MethodError("requestTooLarge", f"more than {LIMITS['maxObjectsInSet']} objects")
    return create, update, destroy, old


def set_response(ctx, kind, old):
    return {"accountId": ctx.account_id_str, "oldState": old,
            "newState": str(ctx.store.state(ctx.account.id, kind)),
            "created": None, "updated": None, "destroyed": None,
            "notCreated": None, "notUpdated": None, "notDestroyed": None}


def put(resp, key, k, v):
    if resp[key] is None:
        resp[key] = {} if key != "destroyed" else []
    if key == "destroyed":
        resp[key].append(k)
    else:
        resp[key][k] = v


def apply_patch(obj, patch):
    """Apply a PatchObject to a JSON object (returns a new object); raises ValueError."""
    import copy
    out = copy.deepcopy(obj)
    for path, value in patch.items():
        if not isinstance(path, str) or path == "" or path.startswith("/"):
            raise ValueError(path)
        tokens = [t.replace("~1", "/").replace("~0", "~") for t in path.split("/")]
        target = out
        for t in tokens[:-1]:
            if not isinstance(target, dict) or not isinstance(target.get(t), dict):
                raise ValueError(path)
            target = target[t]
        if not isinstance(target, dict):
            raise ValueError(path)
        if value is None:
            target.pop(tokens[-1], None)
        else:
            target[tokens[-1]] = value
    return out


# --- Core/echo ------------------------------------------------------------------

@method("Core/echo", CORE)
def core_echo(ctx, args):
    return args
