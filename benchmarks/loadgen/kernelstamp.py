"""A transport that reads with recvmsg and SO_TIMESTAMPNS, so that each read comes with the time
the kernel received it (latency_qos1's subscriber)."""

from __future__ import annotations

import asyncio
import socket
import struct
import time

from .clients import HOST, Client

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; the control message has the same type
TIMESPEC = struct.Struct("@qq")


class KernelStampedTransport:
    """Just enough of a transport over a plain non-blocking socket read with recvmsg, so that each
    read comes with the time the kernel received the data (SO_TIMESTAMPNS, CLOCK_REALTIME): the
    protocol's ``kernel_ns`` is set (converted to the time.perf_counter_ns clock) before each
    ``data_received``. latency_qos1's subscriber uses it to tell the broker's and the loopback's
    share of the latency from the load generator's own wake-up delay."""

    def __init__(self, sock: socket.socket, proto: Client):
        self.sock, self.proto = sock, proto
        self.loop = asyncio.get_running_loop()
        self.closing = False
        self.short_writes = 0
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.loop.add_reader(sock.fileno(), self._readable)
        proto.connection_made(self)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def write(self, data: bytes) -> None:
        # PUBACKs and small control packets: the socket buffer always has room for them
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            n = 0
        if n < len(data):
            self.short_writes += 1
            self.loop.create_task(self.loop.sock_sendall(self.sock, data[n:]))

    def _readable(self) -> None:
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(262144, socket.CMSG_SPACE(TIMESPEC.size))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._lost(e)
                return
            if not data:
                self._lost(None)
                return
            kernel_ns = None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= TIMESPEC.size:
                    sec, nsec = TIMESPEC.unpack_from(cdata)
                    kernel_ns = sec * 1_000_000_000 + nsec - time.time_ns() + time.perf_counter_ns()
            self.proto.kernel_ns = kernel_ns
            self.proto.data_received(data)

    def _lost(self, exc) -> None:
        if not self.closing:
            self.close()
            self.proto.connection_lost(exc)

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()

    abort = close


async def connect_kernel_stamped(port: int, factory, connect_bytes: bytes, timeout: float = 10.0) -> Client:
    """``connect`` with a KernelStampedTransport instead of the event loop's transport."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await asyncio.wait_for(loop.sock_connect(sock, (HOST, port)), timeout)
    proto = factory()
    KernelStampedTransport(sock, proto)
    proto.transport.write(connect_bytes)
    rc = await asyncio.wait_for(proto.connack, timeout)
    if rc != 0:
        raise RuntimeError(f"{proto.name}: CONNACK refused with code {rc}")
    return proto
