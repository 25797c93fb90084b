"""A Python `websockets` client over wss:// for the peer test.

Usage: wss_client.py URL CA_FILE
Trusts only CA_FILE, checks the host name, sends a text and a binary
message and expects both echoed unchanged, then closes with 1000.
Exits 0 on success; prints the failure and exits 1 otherwise.
"""

import asyncio
import ssl
import sys

import websockets


async def main(url: str, ca_file: str) -> None:
    context = ssl.create_default_context(cafile=ca_file)
    async with websockets.connect(url, ssl=context, open_timeout=10) as ws:
        for message in ["hello from python", bytes(range(256)) * 64]:
            await ws.send(message)
            echoed = await asyncio.wait_for(ws.recv(), 10)
            if echoed != message:
                raise AssertionError(f"echo differs: {echoed!r:.80}")
        await ws.close(code=1000)


if __name__ == "__main__":
    try:
        asyncio.run(main(sys.argv[1], sys.argv[2]))
    except Exception as e:  # report any failure as the exit status
        print(f"python wss client failed: {e!r}", file=sys.stderr)
        sys.exit(1)
    print("ok")
