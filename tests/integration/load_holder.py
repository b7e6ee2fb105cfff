"""Hold N MQTT connections with wills open, for the 10,000-connection will test (test_load_wills.py).

    python -m tests.integration.load_holder PORT N [--batch 500] [--prefix load/will]

A separate process, so that the test can drop every connection at once with SIGKILL (the kernel
closes all its sockets together). Raw asyncio protocols, no MQTT library: each connection sends
one CONNECT (clean, keep-alive 0, a QoS 1 will on ``PREFIX/<i>`` with payload ``<i>``; even
connections MQTT 3.1.1, odd ones 5.0) and waits for its CONNACK; connections are opened in batches.
Prints one JSON line when all are accepted ({"connected": N, "seconds": ...}), then waits to be killed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connect, Will


class Holder(asyncio.Protocol):
    __slots__ = ("transport", "buf", "connack")

    def __init__(self, connack: asyncio.Future):
        self.transport = None
        self.buf = b""
        self.connack = connack

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.connack.done():
            return
        self.buf += data
        if len(self.buf) >= 2 and len(self.buf) >= 2 + self.buf[1] and self.buf[0] == 0x20:
            self.connack.set_result(self.buf[3])  # the return / reason code (same offset in 3.1.1 and 5.0)

    def connection_lost(self, exc) -> None:
        if not self.connack.done():
            self.connack.set_exception(ConnectionError(f"closed before CONNACK: {exc}"))


async def open_one(loop, port: int, i: int, prefix: str) -> asyncio.Transport:
    level = 4 if i % 2 == 0 else 5
    connect = encode(Connect(client_id=f"load-{i}", clean_start=True, keep_alive=0, protocol_level=level,
                             will=Will(f"{prefix}/{i}", str(i).encode(), 1, False, {})), level)
    fut = loop.create_future()
    for attempt in range(5):
        try:
            transport, _ = await loop.create_connection(lambda: Holder(fut), "127.0.0.1", port)
            break
        except OSError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2 * (attempt + 1))
    transport.write(connect)
    code = await asyncio.wait_for(fut, 30)
    if code != 0:
        raise RuntimeError(f"connection {i}: CONNACK 0x{code:02X}")
    return transport


async def main_async(port: int, n: int, batch: int, prefix: str) -> None:
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    transports = []
    for first in range(0, n, batch):
        transports += await asyncio.gather(*(open_one(loop, port, i, prefix) for i in range(first, min(n, first + batch))))
    print(json.dumps({"connected": len(transports), "seconds": round(time.monotonic() - started, 3)}), flush=True)
    await asyncio.Event().wait()  # until SIGKILL


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("n", type=int)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--prefix", default="load/will")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.n + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    try:
        asyncio.run(main_async(args.port, args.n, args.batch, args.prefix))
    except Exception as e:  # noqa: BLE001 - reported to the test on stdout
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
