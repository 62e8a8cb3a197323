"""The JMAP HTTP resource tree (twisted.web): session, API, upload, download,
event source, WebSocket, and authentication.

    /.well-known/jmap                       307 to /jmap/session
    /jmap/session                           the Session object
    /jmap/api/                              POST a Request
    /jmap/upload/{accountId}/               POST a blob
    /jmap/download/{accountId}/{blobId}/{name}?accept={type}
    /jmap/eventsource?types=&closeafter=&ping=
    /jmap/ws                                RFC 8887 WebSocket, subprotocol "jmap"
    /jmap/ticket                            POST: a short-lived signed ticket

Owns HTTP framing, auth (Basic with the account password, Bearer with an app
token; a signed ticket in ``?ticket=`` or the ``roost_jmap`` cookie only for
the event source and WebSocket, which browsers cannot give headers), CORS,
limits and turning errors into status codes. Logins go through the
authenticator's penalties keyed by the client address (X-Forwarded-For only
from a trusted proxy); one it does not check now is 429 (penalty) or 503
(busy) with Retry-After. Method logic lives in
``core`` and the method modules and runs on the worker pool through ``run``;
nothing here blocks the loop.

A request body is read only from a client whose credentials are good:
``LimitedRequest`` checks the Authorization header as soon as the headers are
in (Twisted reads the body before any resource renders), with the connection
paused, and answers 401 (or 413 past the largest limit, chunked bodies
counted as they come) without taking the body; ``Expect: 100-continue`` is
answered only after the check. A refused connection is half-closed and
drained for a moment, so the client reads the reply instead of a reset.
The event source and WebSocket (which browsers open with ambient
credentials: the ticket cookie) accept a browser's ``Origin`` only when it
is the origin the request came to or one of ``[jmap] allowed_origins``;
clients that send no Origin are not browsers and are let in. The ``Server``
header says "Roost" and nothing about the libraries below.
"""

import asyncio
import base64
import binascii
import hashlib
import hmac
import io
import json
import logging
import secrets
import time
import urllib.parse

from twisted.web import resource, server

from roost.storage import account_data

from . import core, sharing
from .blobs import BlobNotFound
from .core import CAPABILITIES, LIMITS, RequestError, account_id_of

log = logging.getLogger("roost.jmap")

TICKET_SECONDS = 300
SERVER = b"Roost"
BODY_LIMIT = max(LIMITS["maxSizeUpload"], LIMITS["maxSizeRequest"])
LINGER_SECONDS = 2        # a refused connection is drained this long before it is closed
AUTH_CACHE_SECONDS = 10
UPLOAD_SPACE = 4 * LIMITS["maxSizeUpload"]   # per account, until uploads expire
COOKIE = "roost_jmap"
CORS_HEADERS = {
    b"Access-Control-Allow-Origin": b"*",
    b"Access-Control-Allow-Methods": b"GET, POST, OPTIONS",
    b"Access-Control-Allow-Headers": b"Authorization, Content-Type, Accept, Last-Event-ID",
    b"Access-Control-Expose-Headers": b"WWW-Authenticate, Content-Disposition",
    b"Access-Control-Max-Age": b"86400",
}
UNAUTHORIZED = {"type": "about:blank", "status": 401, "detail": "authentication required"}
WWW_AUTHENTICATE = b'Basic realm="roost", charset="UTF-8", Bearer realm="roost"'


class Service:
    """Everything the resources share: the backend, the worker pool, auth and push."""

    def __init__(self, backend, run, authenticator, allowed_origins=()):
        self.backend = backend
        self.store = backend.store
        self.run = run                     # async run(fn, *args) on the worker pool
        self.auth = authenticator
        self.allowed_origins = {o.strip().rstrip("/").lower() for o in allowed_origins}
        self.secret = secrets.token_bytes(32)
        self.uploads_in_flight = {}
        self.requests_in_flight = {}
        self.auth_cache = {}

    # --- tickets ------------------------------------------------------------------

    def make_ticket(self, account):
        expires = int(time.time()) + TICKET_SECONDS
        body = f"{account.id}.{expires}"
        sig = hmac.new(self.secret, body.encode(), hashlib.sha256).hexdigest()[:32]
        return f"{body}.{sig}"

    def ticket_account_id(self, ticket):
        try:
            acct, expires, sig = ticket.split(".")
            good = hmac.new(self.secret, f"{acct}.{expires}".encode(), hashlib.sha256).hexdigest()[:32]
            if hmac.compare_digest(sig, good) and int(expires) >= time.time():
                return int(acct)
        except (ValueError, AttributeError):
            pass
        return None

    # --- authentication ----------------------------------------------------------------

    async def authenticate(self, headers, ip, query=None, cookies=None):
        """The Account for a request's credentials, or None; raises
        ``TryLater`` when the login was not checked (penalty, busy). A
        successful Authorization header is remembered for
        ``AUTH_CACHE_SECONDS`` with the client's address, so a client's every
        request does not cost a database read; from another address it is a
        login again (with its penalties: the cache must not answer a guesser
        that the penalties refuse). ``ip`` is the peer; behind a trusted
        proxy the client is taken from X-Forwarded-For."""
        value = headers.get("authorization") or ""
        ip = self.auth.client_address(ip, headers.get("x-forwarded-for"))
        key = hashlib.sha256(f"{ip}\0{value}".encode("utf-8", "surrogateescape")).digest() \
            if value else None
        hit = self.auth_cache.get(key) if key else None
        if hit and hit[0] > time.monotonic():
            return hit[1]
        acct = await self._authenticate(value, ip, query, cookies)
        if value:   # a login attempt (tickets are not); HTTP logs in each request: ok is DEBUG
            self.auth.report("jmap", ip, acct.address if acct else _user_of(value),
                             value.partition(" ")[0].lower()[:16], "ok" if acct else "failed",
                             logging.DEBUG)
        if acct is not None and key:
            if len(self.auth_cache) > 10000:
                self.auth_cache.clear()
            self.auth_cache[key] = (time.monotonic() + AUTH_CACHE_SECONDS, acct)
        return acct

    async def _authenticate(self, value, ip, query, cookies):
        scheme, _, cred = value.partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            try:
                user, _, password = base64.b64decode(cred.strip(), validate=True) \
                    .decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
            return _account(await self.auth.login(   # app tokens work as passwords too
                user, password, ip, tokens=lambda t: account_data.token_account(self.store, t)))
        if scheme == "bearer":
            return _account(await self.auth.token_login(
                ip, lambda: account_data.token_account(self.store, cred.strip()), cred.strip()))
        ticket = (query or {}).get("ticket") or (cookies or {}).get(COOKIE)
        if ticket:
            account_id = self.ticket_account_id(ticket)
            if account_id is not None:
                return await self.run(self.store.account_by_id, account_id)
        return None

    def origin_allowed(self, origin, host):
        """May a page of ``origin`` (the Origin header, None when absent) open
        the event source or a WebSocket on this server, reached as ``host``
        (the Host header)? Same origin, a configured one, or no Origin.
        Same origin compares host and port, not the scheme: behind a proxy
        that ends TLS the page is https and the request to us plain http."""
        if origin is None:
            return True
        origin = origin.strip().rstrip("/").lower()
        if "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        try:
            o = urllib.parse.urlsplit(origin)
            h = urllib.parse.urlsplit("//" + (host or "").strip().lower())
            if o.scheme not in ("http", "https") or not o.hostname or o.path or not h.hostname:
                return False
            o_port = o.port or (443 if o.scheme == "https" else 80)
            return o.hostname == h.hostname and o_port == (h.port or (443 if o.scheme == "https"
                                                                       else 80))
        except ValueError:
            return False

    # --- the session object ---------------------------------------------------------------

    def session(self, account, base):
        aid = account_id_of(account)
        caps = {urn: value for urn, (value, _a) in CAPABILITIES.items()}
        caps[core.WEBSOCKET] = {"url": base.replace("http", "ws", 1) + "/jmap/ws",
                                "supportsPush": True}
        account_caps = {urn: a(self.backend) if callable(a) else a
                        for urn, (_v, a) in CAPABILITIES.items() if a is not None}
        accounts = {aid: {"name": account.address, "isPersonal": True, "isReadOnly": False,
                          "accountCapabilities": account_caps}}
        accounts.update(sharing.session_accounts(self.backend.store, account, account_caps))
        return {
            "capabilities": caps,
            "accounts": accounts,
            "primaryAccounts": {urn: aid for urn in account_caps},
            "username": account.address,
            "apiUrl": f"{base}/jmap/api/",
            "downloadUrl": f"{base}/jmap/download/{{accountId}}/{{blobId}}/{{name}}?accept={{type}}",
            "uploadUrl": f"{base}/jmap/upload/{{accountId}}/",
            "eventSourceUrl": f"{base}/jmap/eventsource?types={{types}}&closeafter={{closeafter}}"
                              "&ping={ping}",
            "state": self.backend.session_state(account),
        }


class TryLater(RequestError):
    """The credentials were not checked: the client must wait after failed
    logins (429) or the password checks are busy (503); with Retry-After."""

    def __init__(self, result):
        busy = result.busy
        super().__init__("limit", "the server is busy; try again shortly" if busy else
                         "too many failed logins; try again later", status=503 if busy else 429)
        self.headers = {b"Retry-After": str(result.retry_seconds).encode()}

    def json(self):
        return {"type": "about:blank", "status": self.status, "detail": self.detail}


def _account(result):
    if result.retry_after:
        raise TryLater(result)
    return result.account


# --- helpers -------------------------------------------------------------------------

_TASKS = set()


def spawn(coro):
    """Run ``coro`` as an asyncio task on the loop (the reactor's loop), keeping
    a reference until it ends."""
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)
    return task


def _user_of(authorization):
    """The user name of a Basic Authorization value (never its password), else None."""
    scheme, _, cred = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(cred.strip(), validate=True).decode("utf-8").partition(":")[0]
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def _cors(request):
    for k, v in CORS_HEADERS.items():
        request.setHeader(k, v)


def _headers(request):
    return {k.decode("latin-1").lower(): v[-1].decode("latin-1")
            for k, v in request.requestHeaders.getAllRawHeaders()}


def _query(request):
    return {k.decode("latin-1"): v[-1].decode("utf-8", "replace") for k, v in request.args.items()}


def _cookies(request):
    out = {}
    for raw in request.requestHeaders.getRawHeaders(b"cookie", []):
        for part in raw.decode("latin-1").split(";"):
            name, _, value = part.strip().partition("=")
            out[name] = value
    return out


def _base_url(request):
    host = (request.getHeader(b"host") or b"").decode("latin-1")
    if not host or any(c in host for c in "/\\@ \t\r\n"):
        addr = request.getHost()
        host = f"{addr.host}:{addr.port}"
    scheme = "https" if request.isSecure() else "http"
    return f"{scheme}://{host}"


def _finish(request, status, body, ctype=b"application/json", headers=None):
    if request._disconnected or request.finished:
        return
    request.setResponseCode(status)
    _cors(request)
    request.setHeader(b"Content-Type", ctype)
    request.setHeader(b"Cache-Control", b"no-cache, no-store")
    for k, v in (headers or {}).items():
        request.setHeader(k, v)
    if isinstance(body, (dict, list)):
        body = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    request.setHeader(b"Content-Length", str(len(body)).encode())
    request.write(body)
    request.finish()


def problem(request, err):
    _finish(request, err.status, err.json(), b"application/problem+json",
            getattr(err, "headers", None))


def unauthorized(request):
    _finish(request, 401, UNAUTHORIZED, b"application/problem+json",
            {b"WWW-Authenticate": WWW_AUTHENTICATE})


class ServiceResource(resource.Resource):
    """A leaf of the JMAP service that answers CORS preflights (OPTIONS)."""

    isLeaf = True

    def __init__(self, service):
        super().__init__()
        self.service = service

    def render_OPTIONS(self, request):
        request.setResponseCode(204)
        _cors(request)
        return b""


class AsyncResource(ServiceResource):
    """A leaf whose GET/POST are coroutines; errors never become tracebacks."""

    needs_auth = True
    allow_ticket = False

    def render_GET(self, request):
        return self._start(request, self.get)

    def render_POST(self, request):
        return self._start(request, self.post)

    async def get(self, request, account):
        raise RequestError("notFound", "no such resource", status=404)

    async def post(self, request, account):
        raise RequestError("notFound", "no such resource", status=404)

    def _start(self, request, handler):
        async def go():
            try:
                account = None
                checked = getattr(request, "credentials", None)
                if self.needs_auth and checked is not None:
                    account = await checked
                    if account is None:
                        unauthorized(request)
                        return
                elif self.needs_auth:
                    ip = request.getClientAddress().host if hasattr(request, "getClientAddress") \
                        else request.getClientIP()
                    account = await self.service.authenticate(
                        _headers(request), ip or "",
                        _query(request) if self.allow_ticket else None,
                        _cookies(request) if self.allow_ticket else None)
                    if account is None:
                        unauthorized(request)
                        return
                await handler(request, account)
            except RequestError as exc:
                problem(request, exc)
            except Exception:  # noqa: BLE001 - never a traceback to the client
                log.exception("JMAP %s %s failed", request.method, request.path)
                _finish(request, 500, {"type": "about:blank", "status": 500,
                                       "detail": "internal error"}, b"application/problem+json")
        spawn(go())
        return server.NOT_DONE_YET


# --- resources -------------------------------------------------------------------

class WellKnown(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        _cors(request)
        request.setResponseCode(307)
        request.setHeader(b"Location", b"/jmap/session")
        request.setHeader(b"Cache-Control", b"no-cache")
        return b""

    def render_OPTIONS(self, request):
        request.setResponseCode(204)
        _cors(request)
        return b""


class SessionResource(AsyncResource):
    async def get(self, request, account):
        body = await self.service.run(self.service.session, account, _base_url(request))  # reads grants
        ticket = self.service.make_ticket(account)
        cookie = (f"{COOKIE}={ticket}; Path=/jmap; Max-Age={TICKET_SECONDS}; HttpOnly; "
                  "SameSite=Strict").encode()
        if request.isSecure():
            cookie += b"; Secure"
        _finish(request, 200, body, headers={b"Set-Cookie": cookie})


class TicketResource(AsyncResource):
    async def post(self, request, account):
        _finish(request, 200, {"ticket": self.service.make_ticket(account),
                               "expiresIn": TICKET_SECONDS})


class ApiResource(AsyncResource):
    async def post(self, request, account):
        body = _read_body(request, LIMITS["maxSizeRequest"], "maxSizeRequest")
        doc = await self.service.run(core.loads, body)
        busy = self.service.requests_in_flight.get(account.id, 0)
        if busy >= LIMITS["maxConcurrentRequests"]:
            raise RequestError("limit", "too many concurrent requests", status=429,
                               limit="maxConcurrentRequests")
        self.service.requests_in_flight[account.id] = busy + 1
        try:
            result = await self.service.run(core.process, self.service.backend, account, doc)
        finally:
            self.service.requests_in_flight[account.id] -= 1
        _finish(request, 200, result)


def _read_body(request, limit, name):
    length = request.getHeader(b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise RequestError("limit", f"the body is larger than {name} ({limit} octets)",
                           status=413, limit=name)
    request.content.seek(0)
    body = request.content.read(limit + 1)
    if len(body) > limit:
        raise RequestError("limit", f"the body is larger than {name} ({limit} octets)",
                           status=413, limit=name)
    return body


class UploadResource(AsyncResource):
    async def post(self, request, account):
        parts = [p.decode("latin-1") for p in request.postpath if p]
        if len(parts) != 1 or parts[0] != account_id_of(account):
            raise RequestError("notFound", "no such account for these credentials", status=404)
        busy = self.service.uploads_in_flight.get(account.id, 0)
        if busy >= LIMITS["maxConcurrentUpload"]:
            raise RequestError("limit", "too many concurrent uploads", status=429,
                               limit="maxConcurrentUpload")
        self.service.uploads_in_flight[account.id] = busy + 1
        try:
            data = _read_body(request, LIMITS["maxSizeUpload"], "maxSizeUpload")
            held = await self.service.run(account_data.upload_sizes, self.service.store, account.id)
            if held + len(data) > UPLOAD_SPACE:
                raise RequestError("limit", f"uploads not yet used hold more than {UPLOAD_SPACE} "
                                   "octets; use or wait for them to expire (24 hours)",
                                   status=413, limit="maxSizeUpload")
            ctype = (request.getHeader(b"content-type") or b"application/octet-stream") \
                .decode("latin-1")[:255]
            blob_id = await self.service.run(account_data.save_upload, self.service.store,
                                             account.id, data, ctype)
        finally:
            self.service.uploads_in_flight[account.id] -= 1
        _finish(request, 201, {"accountId": account_id_of(account), "blobId": blob_id,
                               "type": ctype, "size": len(data)})


def byte_range(header):
    """A single ``Range: bytes=...`` as ``(start, end)`` (``end`` exclusive or
    None), ``(None, n)`` for the last ``n`` bytes, or None: no header, or one
    this server ignores (several ranges, other units), answered with the whole
    blob as RFC 9110 section 14.2 allows."""
    if not header:
        return None
    unit, _, spec = header.decode("latin-1").partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()) or len(spec) > 40:
        return None
    if not first:
        return (None, int(last))
    if last and (not last.isdigit() or int(last) < int(first)):
        return None
    return (int(first), int(last) + 1 if last else None)


class DownloadResource(AsyncResource):
    async def get(self, request, account):
        parts = [urllib.parse.unquote_to_bytes(p).decode("utf-8", "replace") for p in request.postpath]
        if len(parts) < 2 or parts[0] != account_id_of(account):
            raise RequestError("notFound", "no such blob", status=404)
        blob_id = parts[1]
        name = parts[2] if len(parts) > 2 and parts[2] else None
        wanted = byte_range(request.getHeader(b"range"))
        backend = self.service.backend
        try:
            if wanted is not None and wanted[0] is None:     # bytes=-N: the last N bytes
                _d, size, _t, _n = await self.service.run(backend.blob_range, account.id, blob_id, 0, 0)
                wanted = (max(0, size - wanted[1]), None)
            start, end = wanted or (0, None)
            data, size, ctype, part_name = await self.service.run(
                backend.blob_range, account.id, blob_id, start, end)
        except BlobNotFound:
            raise RequestError("notFound", "no such blob", status=404) from None
        status, extra = 200, {b"Accept-Ranges": b"bytes"}
        if wanted is not None:
            if start >= size:
                _finish(request, 416, b"", b"text/plain", {b"Content-Range": b"bytes */%d" % size})
                return
            status = 206
            extra[b"Content-Range"] = b"bytes %d-%d/%d" % (start, start + len(data) - 1, size)
        accept = _query(request).get("accept") or ctype
        if not accept or any(c in accept for c in "\r\n"):
            accept = "application/octet-stream"
        name = name or part_name or "download"
        disposition = ("attachment; filename*=UTF-8''" +
                       urllib.parse.quote(name, safe="")).encode("latin-1")
        _finish(request, status, data, accept.encode("latin-1", "replace"),
                {**extra, b"Content-Disposition": disposition,
                 b"Cache-Control": b"private, immutable, max-age=31536000",
                 # a blob is the sender's content: never render it as this origin's page
                 b"X-Content-Type-Options": b"nosniff",
                 b"Content-Security-Policy": b"sandbox; default-src 'none'"})


class JMAPDir(resource.Resource):
    def render_OPTIONS(self, request):
        request.setResponseCode(204)
        _cors(request)
        return b""

    def getChild(self, path, request):
        if path == b"":
            return self
        return resource.NoResource()


class NotFound(resource.Resource):
    isLeaf = True

    def render(self, request):
        if request.method == b"OPTIONS":
            request.setResponseCode(204)
            _cors(request)
            return b""
        request.setResponseCode(404)
        _cors(request)
        request.setHeader(b"Content-Type", b"application/problem+json")
        return json.dumps({"type": "about:blank", "status": 404, "detail": "not found"}).encode()


OPEN_BODY_LIMIT = 64 * 1024   # what a POST that needs no login may send


def _open_post(path):
    """The paths that take a POST body without credentials (client set-up)."""
    return path.split(b"?", 1)[0].lower() == b"/autodiscover/autodiscover.xml"


class LimitedRequest(server.Request):
    """Reads a body only from a client whose credentials are good, and no
    more of it than the largest JMAP limit (see the module docstring)."""

    credentials = None     # a task giving the Account (or None), when there is a body
    _received = False      # the whole request is in and processing started
    _refused = False
    _body_size = 0
    _expects_continue = False
    _limit = BODY_LIMIT

    def gotLength(self, length):
        service = getattr(self.channel.site, "jmap_service", None)
        if _open_post(getattr(self.channel, "_path", b"")):
            # Outlook's autodiscover POSTs before it has credentials: a small
            # body, read without a login (protocols.web limits what it reads).
            self._limit = OPEN_BODY_LIMIT
            service = None
        if length is not None and length > self._limit:
            super().gotLength(0)
            self._refuse(413, b"Content Too Large", {
                "type": "urn:ietf:params:jmap:error:limit", "status": 413,
                "limit": "maxSizeUpload", "detail": f"the body is larger than {self._limit} octets"})
            return
        super().gotLength(length)
        if (length is None or length > 0) and service is not None:
            self.channel.transport.pauseProducing()
            expect = self.requestHeaders.getRawHeaders(b"expect")
            if expect and expect[0].lower() == b"100-continue":
                self._expects_continue = getattr(self.channel, "_version", None) == b"HTTP/1.1"
                self.requestHeaders.removeHeader(b"expect")   # answered after the check
            self.credentials = spawn(self._check_credentials(service))

    async def _check_credentials(self, service):
        try:
            account = await service.authenticate(_headers(self), self.getClientAddress().host or "")
        except TryLater as exc:     # penalised or busy: 429/503 with Retry-After, body unread
            if not (self._received or self._refused or self.channel is None):
                self._refuse(exc.status, b"Too Many Requests" if exc.status == 429 else
                             b"Service Unavailable", exc.json(), exc.headers)
            return None
        except Exception:  # noqa: BLE001 - a failed check is a refusal, not a traceback
            log.exception("JMAP credential check failed")
            account = None
        if not (self._received or self._refused or self.channel is None
                or self.channel.transport is None):
            if account is None:
                self._refuse(401, b"Unauthorized", UNAUTHORIZED,
                             {b"WWW-Authenticate": WWW_AUTHENTICATE})
            else:
                if self._expects_continue:
                    self.channel.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                self.channel.transport.resumeProducing()
        return account

    def handleContentChunk(self, data):
        if self._refused:
            return
        self._body_size += len(data)
        if self._body_size > self._limit:
            self._refuse(413, b"Content Too Large", {
                "type": "urn:ietf:params:jmap:error:limit", "status": 413,
                "limit": "maxSizeUpload", "detail": f"the body is larger than {self._limit} octets"})
            return
        super().handleContentChunk(data)

    def process(self):
        if self._refused:
            return
        self._received = True
        super().process()

    def setHeader(self, name, value):
        if name.lower() == b"server":
            value = SERVER
        super().setHeader(name, value)

    def _refuse(self, status, phrase, doc, headers=None):
        """Answer ``status`` without reading the body: write the reply, close
        our side, drop what the client still sends for ``LINGER_SECONDS``."""
        self._refused = True
        self.content.close()        # what was taken of the body goes at once
        self.content = io.BytesIO()
        channel = self.channel
        transport = channel.transport
        body = json.dumps(doc).encode()
        head = {b"Server": SERVER, **CORS_HEADERS, **(headers or {}),
                b"Content-Type": b"application/problem+json", b"Cache-Control": b"no-cache, no-store",
                b"Connection": b"close", b"Content-Length": b"%d" % len(body)}
        transport.write(b"HTTP/1.1 %d %s\r\n" % (status, phrase) +
                        b"".join(k + b": " + v + b"\r\n" for k, v in head.items()) + b"\r\n" + body)
        channel.dataReceived = lambda data: None
        channel.setTimeout(None)
        transport.loseWriteConnection()
        transport.resumeProducing()
        from twisted.internet import reactor
        timer = reactor.callLater(LINGER_SECONDS, transport.abortConnection)
        self.notifyFinish().addBoth(lambda _r: timer.active() and timer.cancel())


class Root(resource.Resource):
    def getChild(self, path, request):
        return NotFound()


def build_site(service, web_push=None):
    """The twisted.web Site serving JMAP for ``service`` (``web_push``: see ``jmap.site``)."""
    from . import push
    root = Root()
    wk = resource.Resource()
    wk.putChild(b"jmap", WellKnown())
    root.putChild(b".well-known", wk)
    jmap = JMAPDir()
    jmap.putChild(b"session", SessionResource(service))
    jmap.putChild(b"api", ApiResource(service))
    jmap.putChild(b"upload", UploadResource(service))
    jmap.putChild(b"download", DownloadResource(service))
    jmap.putChild(b"ticket", TicketResource(service))
    jmap.putChild(b"eventsource", push.EventSourceResource(service))
    jmap.putChild(b"ws", push.websocket_resource(service))
    root.putChild(b"jmap", jmap)
    if web_push is None:
        webpush = push.WebPush(service)
        service.backend.push_changed = webpush.refresh
        webpush.start()
    else:
        service.backend.push_changed = web_push
    site = server.Site(root)
    site.requestFactory = LimitedRequest
    site.jmap_service = service
    site.displayTracebacks = False
    site.noisy = False
    return site

