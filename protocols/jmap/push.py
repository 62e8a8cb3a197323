"""JMAP push: the event source (RFC 8620 section 7.3) and the WebSocket
transport with push (RFC 8887, autobahn on Twisted).

Owns turning the store's change events (``store.bus``) into StateChange
objects for connected clients. Nothing polls: a connection subscribes to its
account on the bus, coalesces the events of one loop tick, reads the new
states on the worker pool and writes one StateChange. Event ids are the
account's MODSEQ, so a reconnect with ``Last-Event-ID`` learns at once what
it missed.

Web push never reaches inside the network on a client's say-so: unless
``[jmap] push_allow_private``, PushSubscription/set refuses a URL whose host
is or resolves to a loopback, private, link-local, multicast, unspecified or
otherwise non-global address, and every POST (``post``) resolves the name
again, checks every address, and connects to a checked one (no second
lookup, no redirects), so a name that changes its answer later (DNS
rebinding) gains nothing. Lookups use the stdlib resolver on threads with
one deadline, off the loop. An account holds at most
``MAX_PUSH_SUBSCRIPTIONS`` (RFC 8620 section 8.6).
"""

import json
import logging

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.web import server

from . import core
from .web import SERVER, ServiceResource, spawn
from .core import RequestError, account_id_of

log = logging.getLogger("roost.jmap")

PUSH_TYPES = ("Mailbox", "Email", "Thread", "EmailDelivery", "Identity", "EmailSubmission",
              "VacationResponse", "SieveScript")
MIN_PING, MAX_PING = 1, 3600
COALESCE = 0.005


def states(store, account_id, types):
    """``{type: state}`` of ``types`` now."""
    out = {}
    for t in types:
        out[t] = str(store.state(account_id, "Email" if t == "EmailDelivery" else t))
    return out


class Subscriber:
    """Watches one account on the bus and calls ``send(changed, modseq)`` with
    the new states of the types that changed, at most once per loop tick."""

    def __init__(self, service, account, types, send):
        self.service = service
        self.account = account
        self.types = types          # None: every type
        self.send = send
        self.pending = set()
        self.timer = None
        self.last = {}
        self.unsubscribe = service.store.bus.subscribe(account.id, self._changed)

    def _changed(self, change):
        # only JMAP type names (IMAP-only changes, Change.imap, never reach a client)
        kinds = {k for k in change.kinds if k in PUSH_TYPES and (self.types is None or k in self.types)}
        if not kinds:
            return
        self.pending |= kinds
        if self.timer is None:
            self.timer = reactor.callLater(COALESCE, self._flush)

    def _flush(self):
        self.timer = None
        kinds, self.pending = self.pending, set()
        spawn(self._send(kinds))

    async def _send(self, kinds):
        try:
            now = await self.service.run(states, self.service.store, self.account.id, sorted(kinds))
            modseq = await self.service.run(self.service.store.state, self.account.id)
        except Exception:  # noqa: BLE001 - the store may be closing
            log.debug("push state read failed", exc_info=True)
            return
        changed = {k: v for k, v in now.items() if self.last.get(k) != v}
        self.last.update(now)
        if changed:
            self.send(changed, modseq)

    def close(self):
        self.unsubscribe()
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None


def state_change(account, changed):
    return {"@type": "StateChange", "changed": {account_id_of(account): changed}}


# --- event source ------------------------------------------------------------------

class EventSourceResource(ServiceResource):
    def render_GET(self, request):
        from .web import _cookies, _finish, _headers, _query, problem, unauthorized

        origin = request.getHeader(b"origin")
        if not self.service.origin_allowed(origin and origin.decode("latin-1"),
                                           (request.getHeader(b"host") or b"").decode("latin-1")):
            _finish(request, 403, {"type": "about:blank", "status": 403,
                                   "detail": "this origin may not open the event source"},
                    b"application/problem+json")
            return server.NOT_DONE_YET

        async def go():
            try:
                account = await self.service.authenticate(
                    _headers(request), request.getClientAddress().host,
                    _query(request), _cookies(request))
                if account is None:
                    unauthorized(request)
                    return
                q = _query(request)
                types = q.get("types", "*")
                types = None if types in ("*", "") else set(t for t in types.split(",") if t)
                close_after = q.get("closeafter", "no")
                if close_after not in ("state", "no"):
                    raise RequestError("invalidArguments", "closeafter is state or no")
                ping = q.get("ping", "0")
                if not ping.isdigit():
                    raise RequestError("invalidArguments", "ping is a number of seconds")
                ping = int(ping)
                ping = 0 if ping == 0 else max(MIN_PING, min(MAX_PING, ping))
                last_id = request.getHeader(b"last-event-id")
                EventStream(self.service, request, account, types, close_after == "state",
                            ping, last_id.decode("latin-1") if last_id else None)
            except RequestError as exc:
                problem(request, exc)
        spawn(go())
        return server.NOT_DONE_YET


class EventStream:
    def __init__(self, service, request, account, types, close_after, ping, last_id):
        from .web import _cors
        self.request = request
        self.account = account
        self.close_after = close_after
        self.ping = ping
        self.closed = False
        self.ping_timer = None
        request.setResponseCode(200)
        _cors(request)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.write(b": roost\n\n")
        self.sub = Subscriber(service, account, types, self.send)
        request.notifyFinish().addBoth(self._gone)
        self._schedule_ping()
        if last_id and last_id.isdigit():
            spawn(self._catch_up(service, int(last_id), types))

    async def _catch_up(self, service, since, types):
        now = await service.run(service.store.state, self.account.id)
        if now > since:
            wanted = [t for t in PUSH_TYPES if types is None or t in types]
            got = await service.run(states, service.store, self.account.id, wanted)
            changed = {t: s for t, s in got.items() if int(s) > since}
            self.sub.last.update(got)
            if changed:
                self.send(changed, now)

    def _schedule_ping(self):
        if self.ping and not self.closed:
            if self.ping_timer is not None and self.ping_timer.active():
                self.ping_timer.reset(self.ping)
            else:
                self.ping_timer = reactor.callLater(self.ping, self._ping)

    def _ping(self):
        self.ping_timer = None
        if self.closed:
            return
        self.request.write(b"event: ping\ndata: " +
                           json.dumps({"interval": self.ping}).encode() + b"\n\n")
        self._schedule_ping()

    def send(self, changed, modseq):
        if self.closed:
            return
        data = json.dumps(state_change(self.account, changed)).encode()
        self.request.write(b"event: state\nid: " + str(modseq).encode() + b"\ndata: " + data + b"\n\n")
        self._schedule_ping()
        if self.close_after:
            self.closed = True
            self._stop()
            self.request.finish()

    def _gone(self, _result):
        self.closed = True
        self._stop()

    def _stop(self):
        self.sub.close()
        if self.ping_timer is not None and self.ping_timer.active():
            self.ping_timer.cancel()
        self.ping_timer = None


# --- WebSocket (RFC 8887) ------------------------------------------------------------------

class JMAPWebSocket(WebSocketServerProtocol):
    service = None

    def onConnect(self, request):
        if "jmap" not in request.protocols:
            raise ConnectionDeny(400, "the jmap subprotocol is required")
        if not self.service.origin_allowed(request.headers.get("origin"),
                                           request.headers.get("host", "")):
            raise ConnectionDeny(403, "this origin may not open a JMAP WebSocket")
        return Deferred.fromFuture(spawn(self._auth(request)))

    async def _auth(self, request):
        query = {k: v[-1] for k, v in request.params.items()}
        cookies = {}
        for part in request.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            cookies[name] = value
        account = await self.service.authenticate(request.headers, request.peer.split(":")[1]
                                                  if ":" in request.peer else request.peer,
                                                  query, cookies)
        if account is None:
            raise ConnectionDeny(401, "authentication required")
        self.account = account
        self.sub = None
        self.queue = []
        return "jmap"

    def onMessage(self, payload, is_binary):
        if is_binary:
            self.sendClose(1003, "JMAP messages are text")
            return
        spawn(self._handle(payload))

    async def _handle(self, payload):
        request_id = None
        try:
            doc = await self.service.run(core.loads, payload)
            if not isinstance(doc, dict):
                raise RequestError("notRequest", "a message must be a JSON object")
            request_id = doc.get("id") if isinstance(doc.get("id"), str) else None
            kind = doc.get("@type")
            if kind == "Request":
                result = await self.service.run(core.process, self.service.backend,
                                                self.account, doc)
                out = {"@type": "Response", **result}
                if request_id is not None:
                    out["requestId"] = request_id
                self._send(out)
            elif kind == "WebSocketPushEnable":
                types = doc.get("dataTypes")
                types = None if types is None else set(t for t in types if isinstance(t, str))
                if self.sub is not None:
                    self.sub.close()
                self.sub = Subscriber(self.service, self.account, types, self._push)
                push_state = doc.get("pushState")
                if isinstance(push_state, str) and push_state.isdigit():
                    now = await self.service.run(self.service.store.state, self.account.id)
                    if now > int(push_state):
                        wanted = [t for t in PUSH_TYPES if types is None or t in types]
                        got = await self.service.run(states, self.service.store, self.account.id,
                                                     wanted)
                        changed = {t: s for t, s in got.items() if int(s) > int(push_state)}
                        if changed:
                            self._push(changed, now)
            elif kind == "WebSocketPushDisable":
                if self.sub is not None:
                    self.sub.close()
                    self.sub = None
            else:
                raise RequestError("notRequest", "@type must be Request, WebSocketPushEnable "
                                   "or WebSocketPushDisable")
        except RequestError as exc:
            out = {"@type": "RequestError", **exc.json()}
            if request_id is not None:
                out["requestId"] = request_id
            self._send(out)
        except Exception:  # noqa: BLE001
            log.exception("JMAP WebSocket message failed")
            self._send({"@type": "RequestError", "type": "about:blank", "status": 500,
                        "detail": "internal error", "requestId": request_id})

    def _push(self, changed, modseq):
        self._send({**state_change(self.account, changed), "pushState": str(modseq)})

    def _send(self, obj):
        if self.state == self.STATE_OPEN:
            self.sendMessage(json.dumps(obj, ensure_ascii=False).encode("utf-8"), False)

    def onClose(self, was_clean, code, reason):
        sub = getattr(self, "sub", None)
        if sub is not None:
            sub.close()
            self.sub = None


def websocket_resource(service):
    factory = WebSocketServerFactory(protocols=["jmap"], server=SERVER.decode())
    # webStatus off: a GET without Upgrade gets 426, not autobahn's status page
    # (which names its version and follows ?redirect=)
    factory.setProtocolOptions(maxMessagePayloadSize=core.LIMITS["maxSizeRequest"],
                               maxFramePayloadSize=core.LIMITS["maxSizeRequest"],
                               autoPingInterval=60, autoPingTimeout=30, webStatus=False)

    class Protocol(JMAPWebSocket):
        pass
    Protocol.service = service
    factory.protocol = Protocol
    return WebSocketResource(factory)


# --- web push to PushSubscriptions (RFC 8620 section 7.2, RFC 8291) ------------------------

def encrypt(payload, keys):
    """``payload`` as an RFC 8188 ``aes128gcm`` body for RFC 8291 ``keys``
    (``p256dh`` and ``auth``, base64url); raises ValueError for bad keys."""
    import base64
    import os

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    def b64(value):
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    try:
        ua_public = b64(keys["p256dh"])
        auth = b64(keys["auth"])
        ua_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), ua_public)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad push keys: {exc}") from None
    private = ec.generate_private_key(ec.SECP256R1())
    as_public = private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    secret = private.exchange(ec.ECDH(), ua_key)
    ikm = HKDF(hashes.SHA256(), 32, auth, b"WebPush: info\x00" + ua_public + as_public).derive(secret)
    salt = os.urandom(16)
    cek = HKDF(hashes.SHA256(), 16, salt, b"Content-Encoding: aes128gcm\x00").derive(ikm)
    nonce = HKDF(hashes.SHA256(), 12, salt, b"Content-Encoding: nonce\x00").derive(ikm)
    body = AESGCM(cek).encrypt(nonce, payload + b"\x02", None)
    return salt + (4096).to_bytes(4, "big") + bytes([len(as_public)]) + as_public + body


RESOLVE_SECONDS = 5


def refused_address(ip):
    """Is ``ip`` (an ``ipaddress`` address) one a push must not go to:
    loopback, private, link-local, multicast, unspecified, or any other
    range that is not globally reachable (shared, reserved, documentation)?"""
    import ipaddress
    if ip.version == 6:     # an IPv4 address inside an IPv6 one is judged as itself
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        elif ip.sixtofour is not None:
            ip = ip.sixtofour
        elif ip in ipaddress.ip_network("64:ff9b::/96"):
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return not ip.is_global or ip.is_multicast


def resolve_many(hosts, port=443, timeout=RESOLVE_SECONDS):
    """``{host: [ipaddress]}`` for each of ``hosts``, looked up at once (the
    stdlib resolver, one thread each) within one ``timeout``; a name that
    does not resolve in time maps to ``[]``. Blocking."""
    import ipaddress
    import socket
    import threading
    import time
    found = {}
    threads = []
    for host in set(hosts):
        try:
            found[host] = [ipaddress.ip_address(host.strip("[]"))]
            continue
        except ValueError:
            found[host] = []

        def look(host=host):
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except (OSError, UnicodeError, ValueError):
                return
            addrs = []
            for *_info, sockaddr in infos:
                try:
                    addrs.append(ipaddress.ip_address(sockaddr[0]))
                except ValueError:
                    pass
            found[host] = addrs
        thread = threading.Thread(target=look, name="roost-push-resolve", daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0, deadline - time.monotonic()))
    return {h: list(a) for h, a in found.items()}


def url_host(url):
    """``(host, port)`` of an http(s) URL; raises ValueError."""
    import urllib.parse
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(url)
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def post(url, payload, keys=None, timeout=10, allow_private=False):
    """POST a push message (blocking); returns True when the push service took it.

    The host is resolved here, every address checked (unless
    ``allow_private``), and the connection made to a checked address with
    the URL's name for TLS and Host, so a name that changes its answer
    between the check and the connection (DNS rebinding) gains nothing.
    Redirects are not followed."""
    import http.client
    import socket
    import urllib.parse
    headers = {"TTL": "86400", "Urgency": "normal"}
    if keys:
        payload = encrypt(payload, keys)
        headers["Content-Encoding"] = "aes128gcm"
        headers["Content-Type"] = "application/octet-stream"
    else:
        headers["Content-Type"] = "application/json"
    try:
        host, port = url_host(url)
    except ValueError:
        return False
    addrs = resolve_many([host], port, min(timeout, RESOLVE_SECONDS))[host]
    if not addrs or (not allow_private and any(refused_address(a) for a in addrs)):
        log.info("push to %s not sent: %s", host, "it does not resolve" if not addrs else
                 "it resolves to a loopback, private or other non-global address")
        return False
    ip = str(addrs[0])
    parts = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(host, port, timeout=timeout)
    conn._create_connection = lambda _address, *a, **kw: socket.create_connection((ip, port), *a, **kw)
    try:
        conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     body=payload, headers=headers)
        return 200 <= conn.getresponse().status < 300
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        conn.close()


class WebPush:
    """Pushes StateChange objects to verified, unexpired push subscriptions.

    Subscribes on the bus only for accounts that have such a subscription;
    ``refresh(account_id)`` (called after PushSubscription/set, from any
    thread) re-reads them."""

    def __init__(self, service):
        self.service = service
        self.watching = {}    # account id -> Subscriber

    def start(self):
        spawn(self._start())

    async def _start(self):
        store = self.service.store
        for acct in await self.service.run(store.accounts):
            self.refresh(acct.id)

    def refresh(self, account_id):
        reactor.callFromThread(lambda: spawn(self._refresh(account_id)))

    async def _refresh(self, account_id):
        from roost.storage import account_data
        subs = await self.service.run(account_data.push_subscriptions_of, self.service.store,
                                      account_id)
        live = [s for _pk, s in subs if s.get("verificationCode")]
        old = self.watching.pop(account_id, None)
        if old is not None:
            old.close()
        if live:
            account = await self.service.run(self.service.store.account_by_id, account_id)
            self.watching[account_id] = Subscriber(
                self.service, account, None,
                lambda changed, modseq: spawn(self._deliver(account, changed)))

    async def _deliver(self, account, changed):
        from roost.storage import account_data

        from .bodies import parse_utc_date
        import time
        subs = await self.service.run(account_data.push_subscriptions_of, self.service.store,
                                      account.id)
        for _pk, s in subs:
            if not s.get("verificationCode"):
                continue
            try:
                if s.get("expires") and parse_utc_date(s["expires"]) < time.time():
                    continue
            except ValueError:
                continue
            types = s.get("types")
            wanted = {t: v for t, v in changed.items() if not types or t in types}
            if wanted:
                body = json.dumps(state_change(account, wanted)).encode()
                await self.service.run(post, s["url"], body, s.get("keys"), 10,
                                       self.service.backend.push_allow_private)

    def close(self):
        for sub in self.watching.values():
            sub.close()
        self.watching.clear()
