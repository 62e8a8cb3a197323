"""Client set-up documents: Thunderbird autoconfig, Outlook autodiscover and an
Apple configuration profile, describing the IMAPS/IMAP, submission and JMAP
endpoints Roost listens on.

    GET  /.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=ADDRESS
    GET  /mail/config-v1.1.xml?emailaddress=ADDRESS        (autoconfig.DOMAIN)
    POST /autodiscover/autodiscover.xml                     (POX, outlook 2006a)
    GET  /apple/roost.mobileconfig?email=ADDRESS            (unsigned profile)

The documents are Mako templates in ``conf/`` (package ``roost.conf``) with
every value XML-escaped, so an address from the request cannot add markup;
they are read once at start-up. ``servers()`` is called per request, so the
documents carry the ports actually bound (port 0 in tests). Nothing is
authenticated and nothing reveals whether an account exists: the answer for
any well-formed address is the same apart from the address itself. Bad input
gets 400 (autodiscover: its own error document, code 600; another response
schema: 601). An autodiscover body is read up to ``MAX_BODY`` octets and a
DOCTYPE is refused before parsing (no entity expansion). ManageSieve is not
described: Thunderbird's config-v1.1 format has no server type for it (its
incomingServer types are imap, pop3 and exchange), and the Sieve add-on does
not read autoconfig.
"""

import datetime
import importlib.resources
import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from mako.template import Template
from twisted.web import resource

MAX_BODY = 16 * 1024
MAX_ADDRESS = 254
OUTLOOK_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
_ADDRESS = re.compile(r"^[^\s@<>()\[\]\\,;:\"]{1,64}@([A-Za-z0-9\u00a1-\uffff-]{1,63}\.)*"
                      r"[A-Za-z0-9\u00a1-\uffff-]{1,63}$")


@dataclass(frozen=True)
class Server:
    """One endpoint: ``kind`` "imaps", "imap", "submissions", "submission" or "jmap";
    ``tls`` "SSL" (implicit), "STARTTLS" or "plain"; ``url`` for JMAP."""
    kind: str
    host: str
    port: int
    tls: str
    url: str = ""


def _template(name):
    text = (importlib.resources.files("roost.conf") / name).read_text("utf-8")
    return Template(text, default_filters=["str", "x"])


def valid_address(value):
    return bool(value) and len(value) <= MAX_ADDRESS and bool(_ADDRESS.match(value))


class _Leaf(resource.Resource):
    isLeaf = True

    def __init__(self, servers, hostname, template):
        super().__init__()
        self.servers = servers        # () -> [Server]
        self.hostname = hostname
        self.template = _template(template)

    def answer(self, request, status, body, ctype=b"text/xml; charset=utf-8", headers=None):
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", ctype)
        request.setHeader(b"Cache-Control", b"no-cache")
        for k, v in (headers or {}).items():
            request.setHeader(k, v)
        return body.encode("utf-8") if isinstance(body, str) else body

    def bad(self, request, why):
        return self.answer(request, 400, why + "\n", b"text/plain; charset=utf-8")

    def query(self, request, name):
        raw = request.args.get(name.encode(), [b""])[-1]
        return raw.decode("utf-8", "replace").strip()


class ThunderbirdConfig(_Leaf):
    def render_GET(self, request):
        email = self.query(request, "emailaddress")
        if email and not valid_address(email):
            return self.bad(request, "emailaddress is not an e-mail address")
        domain = email.rpartition("@")[2].lower() if email else self.hostname
        return self.answer(request, 200, self.template.render(
            domain=domain, email=email, servers=self.servers()))


class Autodiscover(_Leaf):
    def render_POST(self, request):
        body = request.content.read(MAX_BODY + 1) if request.content else b""
        email, schema = _autodiscover_request(body)
        if email is None or not valid_address(email):
            return self._document(request, 400, error=(600, "Invalid Request"))
        if schema != OUTLOOK_SCHEMA:
            return self._document(request, 400, error=(601, "Provider is not available"))
        return self._document(request, 200, email=email)

    def render_GET(self, request):      # some clients probe with GET first
        return self._document(request, 400, error=(600, "Invalid Request"))

    def _document(self, request, status, email="", error=None):
        now = datetime.datetime.now(datetime.timezone.utc)
        return self.answer(request, status, self.template.render(
            email=email, servers=self.servers(), error=error, time=now.strftime("%H:%M:%S"),
            error_id=str(uuid.uuid4().int % 10**10)))


def _autodiscover_request(body):
    """``(EMailAddress, AcceptableResponseSchema)`` of a POX request, or
    ``(None, None)`` when it is not one."""
    if len(body) > MAX_BODY or b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        return None, None
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None, None

    def text(local):
        for el in root.iter():
            if el.tag.rpartition("}")[2] == local and el.text:
                return el.text.strip()
        return None
    return text("EMailAddress"), text("AcceptableResponseSchema")


class AppleProfile(_Leaf):
    def render_GET(self, request):
        email = self.query(request, "email")
        if not valid_address(email):
            return self.bad(request, "email= must be an e-mail address")
        servers = self.servers()
        imap = next((s for kind in ("imaps", "imap") for s in servers if s.kind == kind), None)
        if imap is None:
            return self.answer(request, 404, "no IMAP listener is configured\n",
                               b"text/plain; charset=utf-8")
        submission = next((s for kind in ("submissions", "submission") for s in servers
                           if s.kind == kind), None)
        labels = [p for p in reversed(self.hostname.lower().split(".")) if p]
        identifier = ".".join(labels) if len(labels) > 1 else f"{labels[0] if labels else 'local'}.roost"
        key = f"{self.hostname.lower()} {email.lower()}"
        return self.answer(request, 200, self.template.render(
            email=email, domain=email.rpartition("@")[2].lower(), identifier=identifier,
            profile_uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, "roost-profile " + key)).upper(),
            mail_uuid=str(uuid.uuid5(uuid.NAMESPACE_URL, "roost-mail " + key)).upper(),
            imap=imap, submission=submission),
            b"application/x-apple-aspen-config",
            {b"Content-Disposition": b'attachment; filename="roost.mobileconfig"'})


class _CaseFolded(resource.Resource):
    """A directory whose children are matched case-insensitively
    (clients ask for /Autodiscover/Autodiscover.xml and /autodiscover/autodiscover.xml)."""

    def getChild(self, path, request):
        child = self.children.get(path.lower())
        return child if child is not None else resource.NoResource()


def mount(root, servers, hostname):
    """Add the set-up resources to the twisted.web ``root``; ``servers()``
    returns the endpoints to describe."""
    def directory(parent, name, child_name, child):
        node = parent.children.get(name)
        if node is None:
            node = resource.Resource()
            parent.putChild(name, node)
        node.putChild(child_name, child)
        return node

    config = ThunderbirdConfig(servers, hostname, "autoconfig.xml")
    well_known = directory(root, b".well-known", b"autoconfig", resource.Resource())
    directory(well_known.children[b"autoconfig"], b"mail", b"config-v1.1.xml", config)
    directory(root, b"mail", b"config-v1.1.xml", config)
    autodiscover = _CaseFolded()
    autodiscover.putChild(b"autodiscover.xml", Autodiscover(servers, hostname, "autodiscover.xml"))
    root.putChild(b"autodiscover", autodiscover)
    root.putChild(b"Autodiscover", autodiscover)
    directory(root, b"apple", b"roost.mobileconfig",
              AppleProfile(servers, hostname, "roost.mobileconfig"))
