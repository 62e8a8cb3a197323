"""kill -9 of ``roost serve`` while its relay is in the middle of sending:
the queued message survives, and after a restart every recipient is
delivered exactly once (the one whose 250 was recorded is not sent again)."""

import asyncio
import threading
import time

from aiosmtpd.controller import Controller
from roost.server import config as configmod
from roost.server.app import open_outbound
from roost.storage.delivery import Delivery
from roost.storage.outbound import Envelope, Recipient
from roost.storage.store import Store
from tests.conftest import RoostServer, wait_for
from tests.dns_helpers import zone  # noqa: F401 - fixture
from tests.protocol.test_relay import free_port


class Gate:
    """Accepts ``fast@`` at once; holds the DATA of ``slow@`` until opened."""

    def __init__(self):
        self.received = []
        self.open = threading.Event()
        self.in_data = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        if "slow@remote.test" in envelope.rcpt_tos:
            self.in_data.set()
            while not self.open.is_set():
                await asyncio.sleep(0.05)
        self.received.append(list(envelope.rcpt_tos))
        return "250 2.0.0 Ok"


def queue(data, *rcpts):
    cfg = configmod.Config(data=str(data))
    store = Store.open(str(data))
    if store.account("alice@local.test") is None:
        store.add_account("alice@local.test")
    q = open_outbound(cfg, store, Delivery(store))
    ids = [q.submit(Envelope("alice@local.test", [Recipient(r)], account_id=1),
                    f"Subject: to {r}\r\n\r\nhi\r\n".encode()).id for r in rcpts]
    store.close()
    return ids


def states(data):
    cfg = configmod.Config(data=str(data))
    store = Store.open(str(data))
    q = open_outbound(cfg, store, Delivery(store))
    out = {r["address"]: r["state"] for i in (1, 2) for r in q.show(i)["rcpts"]}
    store.close()
    return out


def test_kill_during_a_delivery_then_restart_delivers_each_recipient_once(tmp_path, zone):
    port = free_port()
    gate = Gate()
    sink = Controller(gate, hostname="127.0.0.2", port=port)
    sink.start()
    z = zone("remote.test. 60 IN MX 10 mx.remote.test.\nmx.remote.test. 60 IN A 127.0.0.2\n")
    conf = tmp_path / "roost.toml"
    conf.write_text(f'[dns]\nnameservers = ["{z.address}"]\n[relay]\nmx_port = {port}\n'
                    'schedule = ["1s"]\n')
    data = tmp_path / "data"
    queue(data, "fast@remote.test", "slow@remote.test")
    server = RoostServer(data, listeners=("lmtp",), config=conf)
    try:
        server.start()
        assert gate.in_data.wait(20)
        wait_for(lambda: gate.received == [["fast@remote.test"]], timeout=10)
        time.sleep(0.3)            # the fast one's 250 is recorded
        server.kill()
        assert states(data) == {"fast@remote.test": "delivered", "slow@remote.test": "queued"}
        gate.open.set()
        time.sleep(0.3)            # the old connection's DATA completes into the void
        gate.received.clear()
        server = RoostServer(data, listeners=("lmtp",), config=conf)
        server.start()
        wait_for(lambda: states(data).get("slow@remote.test") == "delivered", timeout=30)
        assert gate.received == [["slow@remote.test"]]
    finally:
        server.stop()
        sink.stop()
