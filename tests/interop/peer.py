"""Python `websockets` peer for the permessage-deflate interop tests.

    peer.py client URL MODE   send messages, check their echoes, print the
                              negotiated Sec-WebSocket-Extensions
    peer.py server MODE       echo server on a free loopback port; prints
                              the port, serves until killed

MODE: `takeover` (the library's defaults) or `no-takeover` (no context
takeover in either direction).
"""
import asyncio
import json
import sys

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)


def messages():
    big = json.dumps([{"id": i, "room": "lobby", "text": f"hello {i % 17}"} for i in range(3000)])
    assert len(big) > 100_000
    return [big, "short", big.encode(), big[:5000], big]


async def client(url, mode):
    factory = (
        ClientPerMessageDeflateFactory(server_no_context_takeover=True, client_no_context_takeover=True)
        if mode == "no-takeover"
        else ClientPerMessageDeflateFactory(client_max_window_bits=True)
    )
    async with connect(url, extensions=[factory], max_size=1 << 22) as ws:
        print(ws.response.headers.get("Sec-WebSocket-Extensions", ""), flush=True)
        for m in messages():
            await ws.send(m)
            echo = await ws.recv()
            if echo != m:
                sys.exit(f"echo mismatch for a message of {len(m)}")


async def server(mode):
    nct = mode == "no-takeover"
    factory = ServerPerMessageDeflateFactory(
        server_no_context_takeover=nct, client_no_context_takeover=nct
    )

    async def echo(ws):
        async for m in ws:
            await ws.send(m)

    async with serve(echo, "127.0.0.1", 0, extensions=[factory], max_size=1 << 22) as s:
        print(s.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(120)


if __name__ == "__main__":
    if sys.argv[1] == "client":
        asyncio.run(client(sys.argv[2], sys.argv[3]))
    else:
        asyncio.run(server(sys.argv[2]))
