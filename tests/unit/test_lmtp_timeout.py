"""The LMTP idle timeout on a real socket: an idle connection is closed, and
each command moves the deadline on (one timer per connection)."""

import asyncio

from roost.protocols.lmtp import LMTPHandler, LMTPServer


async def _run(timeout, client):
    async def run(fn, *args):
        return fn(*args)

    loop = asyncio.get_running_loop()
    handler = LMTPHandler(run, lambda address: [], lambda *a: [])
    server = await loop.create_server(lambda: LMTPServer(handler, timeout=timeout, loop=loop),
                                      "127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        try:
            assert (await reader.readline()).startswith(b"220 ")
            return await client(reader, writer)
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_an_idle_connection_is_closed():
    async def client(reader, writer):
        writer.write(b"LHLO test\r\n")
        while (await reader.readline())[3:4] == b"-":
            pass
        return await asyncio.wait_for(reader.read(), 10)     # b"" once the server closes
    assert asyncio.run(_run(0.5, client)) == b""


def test_commands_keep_a_connection_open_past_the_timeout():
    async def client(reader, writer):
        for _ in range(8):                  # 8 x 0.2 s: well past the 0.5 s timeout
            await asyncio.sleep(0.2)
            writer.write(b"NOOP\r\n")
            line = await asyncio.wait_for(reader.readline(), 10)
            if not line.startswith(b"250 "):
                return line
        return b"open"
    assert asyncio.run(_run(0.5, client)) == b"open"
