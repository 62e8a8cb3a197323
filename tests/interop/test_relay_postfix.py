"""Roost's relay delivering to a real Postfix as the receiving MX: Roost A
queues mail for example.org, its relay finds Postfix through the loopback DNS
server's MX record, Postfix hands it over LMTP to Roost B, and the message in
B's INBOX carries A's DKIM signature, which Debian's Mail::DKIM (an
independent implementation) and dkimpy both verify."""

import asyncio

import pytest
from roost.protocols.mailauth.dkim import Signer
from roost.protocols.smtp.relay import Relay, RelayConfig
from roost.server import config as configmod
from roost.server import doctor
from roost.storage.delivery import Delivery
from roost.storage.outbound import Envelope, Outbound, Recipient, Spool
from roost.storage.store import Store
from tests.conftest import stored_messages, wait_for
from tests.dns_helpers import zone  # noqa: F401 - fixture
from tests.interop.test_postfix import postfix_instance, roost_data  # noqa: F401 - fixtures
from tests.protocol.test_dkim_sign import dkimpy_results, have_mail_dkim, mail_dkim

pytestmark = [pytest.mark.interop, pytest.mark.slow]

MSG = (b"From: Alice <alice@sender.test>\r\nTo: a@example.org\r\nSubject: through Postfix\r\n"
       b"Message-ID: <relay-postfix@sender.test>\r\nDate: Thu, 03 Dec 2026 09:00:00 +0000\r\n"
       b"\r\nHello over SMTP.\r\n")


@pytest.mark.asyncio
async def test_relay_to_postfix_mx_signed_and_verified(tmp_path, zone, postfix_instance,  # noqa: F811
                                                       roost_data):  # noqa: F811
    smtp_port, _confdir, _roost_b = postfix_instance
    cfg = configmod.Config(data=str(tmp_path / "a"), hostname="mail.sender.test")
    doctor.dkim_keygen(cfg, "sender.test")
    doctor.dkim_keygen(cfg, "sender.test", algorithm="ed25519")
    keys = [r.zone_line() for r in doctor.records(cfg, "sender.test") if "_domainkey" in r.name]
    z = zone("example.org. 60 IN MX 10 mx.example.org.\nmx.example.org. 60 IN A 127.0.0.1\n"
             + "\n".join(keys))
    store = Store.open(cfg.data)
    store.add_account("alice@sender.test")
    q = Outbound(store, Delivery(store), Spool(cfg.data + "/queue"), cfg.hostname)
    queued = q.submit(Envelope("alice@sender.test", [Recipient("a@example.org")], account_id=1), MSG)
    loop = asyncio.get_running_loop()

    async def run(fn, *args):
        return await loop.run_in_executor(None, fn, *args)
    relay = Relay(q, run, z.resolver(), RelayConfig(hostname=cfg.hostname, mx_port=smtp_port, timeout=10),
                  signer=Signer(doctor.dkim_signing_keys(cfg)), loop=loop)
    relay.start()
    try:
        for _ in range(200):
            await asyncio.sleep(0.05)
            if q.show(queued.id)["rcpts"][0]["state"] != "queued":
                break
    finally:
        await relay.stop()
    rcpt = q.show(queued.id)["rcpts"][0]
    store.close()
    assert rcpt["state"] == "delivered", rcpt
    assert rcpt["remote"] == "mx.example.org" and "2.0.0" in rcpt["reply"]
    assert await loop.run_in_executor(None, lambda: wait_for(
        lambda: stored_messages(roost_data, "a@example.org"), timeout=30))
    [got] = stored_messages(roost_data, "a@example.org")
    assert b"Subject: through Postfix" in got
    assert dkimpy_results(got, z) == [True, True]        # RSA and Ed25519
    if have_mail_dkim():
        lines, result = mail_dkim(got, z, tmp_path)
        assert result == "pass", lines
