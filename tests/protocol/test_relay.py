"""The outbound relay against real SMTP servers on loopback: aiosmtpd sinks on
127.0.0.2 and 127.0.0.3 (one port, as MX hosts share port 25) that accept,
defer, reject or drop; MX and A records from a loopback DNS server; the queue
on a real SQLite store. Each test drives the relay until the queue has
nothing due, then looks at what the sinks received and what the queue says."""

import asyncio
import email
import socket
import ssl
import time

import dkim
import pytest
from aiosmtpd.controller import Controller
from roost.protocols.mailauth.arc import Sealer
from roost.protocols.mailauth.dkim import Signer
from roost.protocols.smtp.relay import Relay, RelayConfig, downgrade
from roost.server import config as configmod
from roost.server import doctor
from roost.storage.delivery import Delivery
from roost.storage.outbound import Envelope, Outbound, Recipient, Spool
from roost.storage.store import Store
from tests.conftest import stored_messages
from tests.dns_helpers import zone  # noqa: F401 - fixture
from tests.tls_helpers import Issuer, write_cert

MSG = (b"From: alice@local.test\r\nTo: bob@remote.test\r\nSubject: hi\r\n"
       b"Message-ID: <m1@local.test>\r\nDate: Thu, 03 Dec 2026 08:00:00 +0000\r\n\r\nhello\r\n.dot line\r\n")


class Sink:
    """Records what it is sent; ``behaviour(rcpt) -> None | reply`` refuses RCPTs."""

    def __init__(self):
        self.received = []
        self.behaviour = lambda rcpt: None
        self.data_reply = None

    async def handle_RCPT(self, server, session, envelope, address, options):
        reply = self.behaviour(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply:
            return self.data_reply
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content,
                              session.ssl is not None))
        return "250 2.0.0 Ok: queued"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return s.getsockname()[1]


class Sinks:
    def __init__(self, tmp_path, tls=False, hosts=("127.0.0.2", "127.0.0.3"), issuer=None):
        self.port = free_port()
        self.controllers, self.sinks = [], {}
        ctx = None
        if tls:
            cert, key = write_cert(tmp_path / "sinkcert", names=("mx1.remote.test", "mx2.remote.test"),
                                   issuer=issuer)
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
        for host in hosts:
            sink = Sink()
            c = Controller(sink, hostname=host, port=self.port, tls_context=ctx,
                           server_hostname="mx.remote.test")
            c.start()
            self.controllers.append(c)
            self.sinks[host] = sink

    def stop(self):
        for c in self.controllers:
            c.stop()


@pytest.fixture
def sinks(tmp_path):
    made = []

    def start(**kw):
        made.append(Sinks(tmp_path, **kw))
        return made[-1]
    yield start
    for s in made:
        s.stop()


ZONE = """
remote.test. 60 IN MX 10 mx1.remote.test.
remote.test. 60 IN MX 20 mx2.remote.test.
mx1.remote.test. 60 IN A 127.0.0.2
mx2.remote.test. 60 IN A 127.0.0.3
bare.test. 60 IN A 127.0.0.3
nomail.test. 60 IN MX 0 .
"""


@pytest.fixture
def world(tmp_path, zone):
    data = tmp_path / "data"
    store = Store.open(str(data))
    store.add_account("alice@local.test")
    cfg = configmod.Config(data=str(data), hostname="mail.local.test")
    doctor.dkim_keygen(cfg, "local.test")
    q = Outbound(store, Delivery(store), Spool(str(data / "queue")), "mail.local.test",
                 schedule=(3600,))
    z = zone(ZONE + "\n".join(line for line in doctor.zone(cfg, "local.test")
                              if not line.startswith(";") and "_domainkey" in line))

    class World:
        pass
    w = World()
    w.store, w.q, w.data, w.zone, w.cfg = store, q, str(data), z, cfg
    w.signer = Signer(doctor.dkim_signing_keys(cfg))
    yield w
    store.close()


async def drain(world, port, mtasts=None, sealer=None, **cfg):
    """Run a relay until nothing is due and no delivery is under way."""
    loop = asyncio.get_running_loop()

    async def run(fn, *args):
        return await loop.run_in_executor(None, fn, *args)
    relay = Relay(world.q, run, world.zone.resolver(),
                  RelayConfig(hostname="mail.local.test", mx_port=port, timeout=5, **cfg),
                  signer=world.signer, mtasts=mtasts, loop=loop, sealer=sealer)
    relay.start()
    try:
        for _ in range(200):
            await asyncio.sleep(0.05)
            due = world.q.next_due()
            if not relay._tasks and (due is None or due > time.time() + 0.5):
                break
    finally:
        await relay.stop()


def submit(world, *rcpts, data=MSG, **kw):
    return world.q.submit(Envelope("alice@local.test", [Recipient(r) for r in rcpts],
                                   account_id=1, **kw), data)


def states(world, queued):
    return {r["address"]: (r["state"], r["reply"]) for r in world.q.show(queued.id)["rcpts"]}


@pytest.mark.asyncio
async def test_delivers_to_the_first_mx_signed_and_dot_stuffed(world, sinks):
    s = sinks()
    queued = submit(world, "bob@remote.test", "carol@remote.test")
    await drain(world, s.port)
    [(sender, rcpts, data, _tls)] = s.sinks["127.0.0.2"].received
    assert sender == "alice@local.test" and rcpts == ["bob@remote.test", "carol@remote.test"]
    assert b"\r\n.dot line\r\n" in data                      # the dot came back unstuffed
    assert data.startswith(b"DKIM-Signature:")
    assert dkim.verify(data, dnsfunc=lambda name, timeout=5: "".join(
        world.zone.resolver().txt(name.decode().rstrip("."))).encode())
    assert all(st == "delivered" and reply.startswith("250 2.0.0")
               for st, reply in states(world, queued).values())
    assert s.sinks["127.0.0.3"].received == []


@pytest.mark.asyncio
async def test_falls_back_to_the_next_mx_when_the_first_is_down(world, sinks):
    s = sinks(hosts=("127.0.0.3",))       # mx1 (127.0.0.2) refuses connections
    queued = submit(world, "bob@remote.test")
    await drain(world, s.port)
    assert len(s.sinks["127.0.0.3"].received) == 1
    assert states(world, queued)["bob@remote.test"][0] == "delivered"


@pytest.mark.asyncio
async def test_per_recipient_replies_defer_and_bounce(world, sinks):
    s = sinks()
    s.sinks["127.0.0.2"].behaviour = lambda r: {
        "gone@remote.test": "550 5.1.1 no such user",
        "later@remote.test": "451 4.2.0 greylisted"}.get(r)
    queued = submit(world, "bob@remote.test", "gone@remote.test", "later@remote.test")
    await drain(world, s.port)
    st = states(world, queued)
    assert st["bob@remote.test"][0] == "delivered"
    assert st["gone@remote.test"] == ("bounced", "550 5.1.1 no such user")
    assert st["later@remote.test"] == ("deferred", "451 4.2.0 greylisted")
    assert world.q.suppressed("gone@remote.test") is not None
    [bounce] = [email.message_from_bytes(m) for m in stored_messages(world.data, "alice@local.test")]
    report = bounce.get_payload()[1].as_string()
    assert "Remote-MTA: dns; mx1.remote.test" in report and "Status: 5.1.1" in report


@pytest.mark.asyncio
async def test_null_mx_bounces_at_once_and_a_domain_without_mx_uses_its_address(world, sinks):
    s = sinks()
    a = submit(world, "x@nomail.test")
    b = submit(world, "y@bare.test")
    await drain(world, s.port)
    assert states(world, a)["x@nomail.test"][0] == "bounced"
    assert states(world, a)["x@nomail.test"][1].startswith("556 5.1.10")
    assert states(world, b)["y@bare.test"][0] == "delivered"
    assert s.sinks["127.0.0.3"].received[0][1] == ["y@bare.test"]


@pytest.mark.asyncio
async def test_unknown_domain_and_all_hosts_down_defer(world, sinks):
    s = sinks(hosts=())
    a = submit(world, "x@remote.test")
    await drain(world, s.port)
    state, reply = states(world, a)["x@remote.test"]
    assert state == "deferred" and reply.startswith("451 4.4.1")


@pytest.mark.asyncio
async def test_opportunistic_starttls_and_connection_reuse(world, sinks):
    s = sinks(tls=True)
    submit(world, "bob@remote.test")
    submit(world, "carol@remote.test")
    await drain(world, s.port)
    got = s.sinks["127.0.0.2"].received
    assert len(got) == 2 and all(tls for *_, tls in got)


@pytest.mark.asyncio
async def test_data_refusal_applies_to_every_accepted_recipient(world, sinks):
    s = sinks()
    s.sinks["127.0.0.2"].data_reply = "554 5.7.1 rejected as spam"
    queued = submit(world, "bob@remote.test", "carol@remote.test")
    await drain(world, s.port)
    assert {st for st, _ in states(world, queued).values()} == {"bounced"}
    assert world.q.suppressed("bob@remote.test") is None      # policy, not a bad address


@pytest.mark.asyncio
async def test_smarthost_with_auth_refuses_to_send_over_cleartext(world, sinks):
    s = sinks()
    queued = submit(world, "bob@elsewhere.test")
    await drain(world, s.port, smarthost=("127.0.0.2", s.port), smarthost_auth=("u", "p"),
                smarthost_tls="starttls")
    state, reply = states(world, queued)["bob@elsewhere.test"]
    assert state == "deferred" and "STARTTLS" in reply
    assert s.sinks["127.0.0.2"].received == []


@pytest.mark.asyncio
async def test_smarthost_in_the_clear_when_configured(world, sinks):
    s = sinks()
    queued = submit(world, "bob@elsewhere.test")
    await drain(world, s.port, smarthost=("127.0.0.2", s.port), smarthost_tls="none")
    assert states(world, queued)["bob@elsewhere.test"][0] == "delivered"
    assert s.sinks["127.0.0.2"].received[0][1] == ["bob@elsewhere.test"]


@pytest.mark.asyncio
async def test_requiretls_is_never_sent_over_an_unverified_session(world, sinks):
    s = sinks(tls=True)
    queued = submit(world, "bob@remote.test", requiretls=True)
    await drain(world, s.port)
    state, reply = states(world, queued)["bob@remote.test"]
    assert state == "bounced" and reply.startswith("550 5.7.30")   # RFC 8689 section 5
    assert s.sinks["127.0.0.2"].received == []


def test_downgrade_makes_8bit_parts_quoted_printable():
    data = ("From: a@b\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n").encode()
    out = downgrade(data)
    assert all(b < 128 for b in out)
    msg = email.message_from_bytes(out)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_payload(decode=True).decode() .strip() == "Grüße"


@pytest.fixture
def policy_web(tmp_path):
    """An HTTPS server on loopback for mta-sts.remote.test, its CA, and the policy it serves."""
    import http.server
    import threading
    from tests.protocol.test_mtasts import Handler
    issuer = Issuer("Relay Test CA")
    cert, key = write_cert(tmp_path / "web", names=("mta-sts.remote.test",), issuer=issuer)
    (tmp_path / "ca.pem").write_bytes(issuer.pem())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.routes, server.requests, server.daemon_threads = {}, [], True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    server.issuer, server.ca_file = issuer, str(tmp_path / "ca.pem")
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def sts_zone(zone):
    return zone(ZONE + 'mta-sts.remote.test. 60 IN A 127.0.0.1\n'
                '_mta-sts.remote.test. 60 IN TXT "v=STSv1; id=1"\n')


@pytest.mark.asyncio
@pytest.mark.parametrize("mx, delivered_to", [("mx2.remote.test", "127.0.0.3"), ("*.nowhere.test", None)])
async def test_mta_sts_enforce_keeps_only_listed_mx_hosts_with_verified_tls(
        world, sinks, zone, policy_web, mx, delivered_to):
    from roost.protocols.smtp.mtasts import MTASTS
    policy_web.routes["mta-sts.remote.test"] = (
        200, "text/plain", f"version: STSv1\nmode: enforce\nmx: {mx}\nmax_age: 86400\n".encode())
    world.zone = sts_zone(zone)
    s = sinks(tls=True, issuer=policy_web.issuer)
    sts = MTASTS(world.zone.resolver(), ca_file=policy_web.ca_file, port=policy_web.server_address[1])
    queued = submit(world, "bob@remote.test")
    await drain(world, s.port, mtasts=sts, ca_file=policy_web.ca_file)
    state, reply = states(world, queued)["bob@remote.test"]
    if delivered_to is None:
        assert state == "deferred" and reply.startswith("451 4.7.5")
        assert all(not sink.received for sink in s.sinks.values())
    else:
        assert state == "delivered"
        assert s.sinks["127.0.0.2"].received == []          # mx1 is not in the policy
        [(_, _, _, tls)] = s.sinks[delivered_to].received
        assert tls


@pytest.mark.asyncio
async def test_mta_sts_enforce_refuses_a_certificate_the_ca_did_not_sign(world, sinks, zone, policy_web):
    from roost.protocols.smtp.mtasts import MTASTS
    policy_web.routes["mta-sts.remote.test"] = (
        200, "text/plain", b"version: STSv1\nmode: enforce\nmx: *.remote.test\nmax_age: 86400\n")
    world.zone = sts_zone(zone)
    s = sinks(tls=True)                           # self-signed
    sts = MTASTS(world.zone.resolver(), ca_file=policy_web.ca_file, port=policy_web.server_address[1])
    queued = submit(world, "bob@remote.test")
    await drain(world, s.port, mtasts=sts, ca_file=policy_web.ca_file)
    state, reply = states(world, queued)["bob@remote.test"]
    assert state == "deferred" and "4.7.5" in reply
    assert all(not sink.received for sink in s.sinks.values())


@pytest.mark.asyncio
async def test_redirect_is_arc_sealed_before_dkim_signing(world, sinks):
    """A Sieve redirect (kind "redirect") leaves with an ARC set made with
    the forwarding domain's key (the Delivered-To domain) whose
    ARC-Authentication-Results are the ones delivery prepended; other mail
    gets none."""
    s = sinks()
    redirected = (b"Return-Path: <ann@example.org>\r\nDelivered-To: alice@local.test\r\n"
                  b"Authentication-Results: mail.local.test;\r\n\tspf=pass smtp.mailfrom=example.org;"
                  b"\r\n\tdkim=none;\r\n\tdmarc=none header.from=local.test;\r\n\tarc=none\r\n" + MSG)
    submit(world, "bob@remote.test", data=redirected, kind="redirect")
    submit(world, "carol@remote.test")
    await drain(world, s.port, sealer=Sealer(world.signer, "mail.local.test", "mail.local.test"))
    got = {rcpts[0]: data for _s, rcpts, data, _tls in s.sinks["127.0.0.2"].received}
    sealed, plain = got["bob@remote.test"], got["carol@remote.test"]
    assert sealed.startswith(b"DKIM-Signature:") and b"\r\nARC-Seal: i=1; cv=none;" in sealed
    assert b"d=local.test" in sealed.split(b"ARC-Seal:")[1].split(b"\r\n")[0]
    aar = sealed.split(b"ARC-Authentication-Results: ")[1].split(b"\r\nARC-")[0]
    assert aar.startswith(b"i=1; mail.local.test;") and b"spf=pass" in aar
    txt = lambda name, timeout=5: "".join(  # noqa: E731
        world.zone.resolver().txt(name.decode().rstrip("."))).encode() or None
    cv, _sets, reason = dkim.arc_verify(sealed, dnsfunc=txt)
    assert cv == b"pass", reason
    assert dkim.verify(sealed, dnsfunc=txt)
    assert b"ARC-Seal" not in plain
