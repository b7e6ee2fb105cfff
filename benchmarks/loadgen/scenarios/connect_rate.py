"""Connection rate: CONNECT with a will, CONNACK, DISCONNECT, in a loop per worker."""

from __future__ import annotations

import asyncio
import socket

from ..clients import HOST, State
from ..rawconns import IP_BIND_ADDRESS_NO_PORT
from ..traffic import measure
from ..wire import DISCONNECT, connect_packet


async def connect_rate(args) -> dict:
    """``--concurrency`` workers, each in a loop: new socket, CONNECT with a will, wait for CONNACK,
    DISCONNECT (normal: no will is published), close. Counts CONNACKs."""
    loop = asyncio.get_running_loop()
    level = args.mqtt
    st = State()
    refused = 0

    async def worker(w: int) -> None:
        nonlocal refused
        seq = 0
        while not st.stop:
            seq += 1
            cid = f"bench-c{w}-{seq}"
            pkt = connect_packet(cid, level, keep_alive=60, will=(f"bench/conn-will/{cid}", b"gone", 0))
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                if args.source_addrs:
                    # spread over 127.0.0.2.. so that the client ports left in TIME_WAIT (the client
                    # closes first) never run out: 28k ephemeral ports per source address
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((f"127.0.0.{2 + (w + seq) % args.source_addrs}", 0))
                await loop.sock_connect(sock, (HOST, args.port))
                await loop.sock_sendall(sock, pkt)
                got = b""
                while len(got) < 4:
                    chunk = await asyncio.wait_for(loop.sock_recv(sock, 64), 10)
                    if not chunk:
                        raise ConnectionError("EOF before CONNACK")
                    got += chunk
                if got[0] >> 4 != 2 or got[3] != 0:
                    refused += 1
                else:
                    st.delivered += 1
                await loop.sock_sendall(sock, DISCONNECT)
            except (OSError, asyncio.TimeoutError) as e:
                if not st.stop:
                    st.errors.append(f"worker {w}: {type(e).__name__}: {e}")
                    await asyncio.sleep(0.01)
            finally:
                sock.close()

    tasks = [asyncio.ensure_future(worker(w)) for w in range(args.concurrency)]
    try:
        out = await measure(st, args)
    finally:
        st.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    out.pop("backlog_end")
    out.pop("cap_waits")
    out.update(unit="connects/s", concurrency=args.concurrency, refused=refused,
               error_count=len(st.errors), errors=st.errors[:10])
    return out
