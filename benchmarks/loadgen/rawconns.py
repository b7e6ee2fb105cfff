"""Thousands of raw connections (no transport: nothing reads them after the CONNACK, and closing
one closes its descriptor at once, so a drop time is exact), for the many-connection scenarios,
and waiting for the wills their drop causes."""

from __future__ import annotations

import asyncio
import resource
import socket
import struct
import time

from .clients import HOST, WillObserver
from .wire import DISCONNECT

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux


def raise_fd_limit() -> int:
    """Soft descriptor limit up to the hard one (thousands of sockets); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


async def read_connack(loop, sock: socket.socket) -> int:
    """Read one CONNACK from a raw socket; its return code (3.1.1) / reason code (5)."""
    got = b""
    while True:
        chunk = await loop.sock_recv(sock, 512)
        if not chunk:
            raise ConnectionError("EOF before CONNACK")
        got += chunk
        if len(got) >= 2:  # fixed header, Remaining Length (a Variable Byte Integer)
            rl, mult, h = 0, 1, 1
            while h < len(got):
                b = got[h]
                h += 1
                rl += (b & 127) * mult
                if b < 128:
                    break
                mult <<= 7
            else:
                continue
            if len(got) >= h + rl:
                if got[0] >> 4 != 2:
                    raise ConnectionError(f"expected CONNACK, got packet type {got[0] >> 4}")
                return got[h + 1]


async def open_raw(port: int, pkt: bytes, source: str | None, timeout: float) -> tuple[socket.socket, int]:
    """A plain non-blocking socket (no transport: nothing reads it after the CONNACK, and closing it
    closes the descriptor at once, so a drop time is exact). -> (socket, CONNACK code)"""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        if source:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), timeout)
        await loop.sock_sendall(sock, pkt)
        rc = await asyncio.wait_for(read_connack(loop, sock), timeout)
    except BaseException:
        sock.close()
        raise
    return sock, rc


async def open_many(args, packets: list[bytes]) -> tuple[list[socket.socket | None], list[str], int, float]:
    """Open one raw connection per CONNECT packet, ``--concurrency`` in flight, client sockets spread
    over ``--source-addrs`` source addresses. -> (sockets, None where it failed; errors; refused;
    seconds until the last CONNACK)"""
    socks: list[socket.socket | None] = [None] * len(packets)
    errors: list[str] = []
    refused = 0
    nxt = 0

    async def worker() -> None:
        nonlocal nxt, refused
        while nxt < len(packets):
            i = nxt
            nxt += 1
            src = f"127.0.0.{2 + i % args.source_addrs}" if args.source_addrs else None
            try:
                sock, rc = await open_raw(args.port, packets[i], src, args.connect_timeout)
            except (OSError, asyncio.TimeoutError) as e:
                errors.append(f"client {i}: {type(e).__name__}: {e}")
                continue
            if rc != 0:
                refused += 1
                sock.close()
            else:
                socks[i] = sock

    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(min(args.concurrency, len(packets)))))
    return socks, errors, refused, time.monotonic() - t0


def drop_all(socks: list[socket.socket | None], how: str) -> list[float | None]:
    """Close every socket without DISCONNECT, in one go: ``rst`` = SO_LINGER 0 (an abortive close,
    the peer gets a reset), ``fin`` = a plain close. -> the monotonic time of each close."""
    linger0 = struct.pack("ii", 1, 0)
    times: list[float | None] = []
    for s in socks:
        if s is None:
            times.append(None)
            continue
        if how == "rst":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
        s.close()
        times.append(time.monotonic())
    return times


def disconnect_all(socks: list[socket.socket | None]) -> None:
    """Normal end: DISCONNECT (no will is published), then close."""
    for s in socks:
        if s is not None:
            try:
                s.send(DISCONNECT)
            except OSError:
                pass
            s.close()


async def wait_arrivals(obs: WillObserver, want: int, give_up: float, quiet: float, t_start: float) -> None:
    """Until ``want`` wills arrived, or none for ``quiet`` s (once ``quiet`` s have passed since
    ``t_start``), or ``give_up`` (monotonic)."""
    got, last_change = 0, t_start
    while len(obs.arrivals) < want:
        now = time.monotonic()
        if now >= give_up:
            break
        if len(obs.arrivals) != got:
            got, last_change = len(obs.arrivals), now
        elif now - last_change > quiet and now - t_start > quiet:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)  # strays / duplicates
