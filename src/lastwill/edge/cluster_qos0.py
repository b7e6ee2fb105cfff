"""QoS 0 between cluster nodes: pub/sub, one channel per node, only to the nodes whose clients match.

A QoS 0 PUBLISH is delivered at once to the matching subscribers connected to the publishing node (the
core's local routing). For the others, the node looks up, in its replica of the cluster's subscription
table, which matching subscribers are not served here, and which node holds each (``Holders``: the
engine's ``owned:E`` sets, read at registration and every 5 heartbeats, and the ``held:<epoch>`` hint
each node sends the other live nodes after each commit that claimed sessions: the client ids it took).
Each such node gets the message on its own channel ``qos0:<epoch>``; a subscriber whose
node is not known yet (connected since the last read, its hint not arrived) makes the message go to
every live node. So a node never receives its own messages, nor messages for which it has no
subscriber that the table knows. At most once, as QoS 0 is (a client that moved to another node a
moment ago may miss one, as a lost pub/sub message would).

Framing: the messages of one loop turn for one node are one pub/sub payload, each message a fixed
header (``_HEAD``) and its bytes; payloads queued while one is being sent are concatenated.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable

from redis.exceptions import RedisError

from ..cluster.engine import RedisEngine
from ..cluster.model import Feed
from ..codec.properties import encode_properties, read_properties
from ..core.message import Message

_DROPPED_PROPS = ("will_delay_interval", "message_expiry_interval", "topic_alias", "subscription_identifier")
_HEAD = struct.Struct(">QBIHHII")  # sender's epoch, flags, expiry, topic, origin, properties, payload lengths


def forwarded_properties(properties: dict) -> bytes:
    """A message's properties as they go to another node or the engine (the per-hop ones left out)."""
    kept = {k: v for k, v in properties.items() if k not in _DROPPED_PROPS}
    return encode_properties(kept) if kept else b""


def encode_qos0(epoch: int, messages: list[Message], now: float) -> bytes:
    """QoS 0 messages as one pub/sub payload (several payloads sent together are concatenated)."""
    out = []
    pack = _HEAD.pack
    for m in messages:
        topic = m.topic.encode("utf-8")
        origin = (m.origin or "").encode("utf-8")
        props = forwarded_properties(m.properties) if m.properties else b""
        expiry = (m.remaining_expiry(now) or 0) if m.expiry_at is not None else 0
        flags = (1 if m.retain else 0) | (2 if m.is_will else 0) | (4 if m.origin is not None else 0)
        out.append(pack(epoch, flags, expiry, len(topic), len(origin), len(props), len(m.payload)))
        out += (topic, origin, props, m.payload)
    return b"".join(out)


def decode_qos0(data: bytes, now: float) -> list[Message]:
    """The messages of a payload another node sent to this one."""
    out = []
    off = 0
    size = _HEAD.size
    unpack = _HEAD.unpack_from
    while off < len(data):
        _epoch, flags, expiry, lt, lo, lp, ln = unpack(data, off)
        off += size
        topic = data[off:off + lt].decode("utf-8")
        off += lt
        origin = data[off:off + lo].decode("utf-8")
        off += lo
        props = read_properties(data[off:off + lp], 0, "PUBLISH")[0] if lp else {}
        off += lp
        payload = data[off:off + ln]
        off += ln
        out.append(Message(topic, payload, 0, bool(flags & 1), props, origin if flags & 4 else None,
                           now + expiry if expiry else None, bool(flags & 2)))
    return out


class Holders:
    """Which live node (epoch) holds each connected client, as far as this node knows."""

    __slots__ = ("by_client", "live", "_fresh")

    def __init__(self) -> None:
        self.by_client: dict[str, int] = {}
        self.live: frozenset[int] = frozenset()
        self._fresh: dict[str, int] | None = None  # hints that came while the engine was being read

    def reading(self) -> None:
        """The engine's view is being read (``replace`` follows)."""
        self._fresh = {}

    def replace(self, live: frozenset[int], by_client: dict[str, int]) -> None:
        """The engine's view (read at registration and every 5 heartbeats), with the hints that came
        while it was read."""
        fresh, self._fresh = self._fresh or {}, None
        by_client.update(fresh)
        self.live = live | frozenset(fresh.values())
        self.by_client = by_client

    def held(self, client_ids: tuple[str, ...], epoch: int) -> None:
        """CONNECTs on the node of ``epoch`` took these client ids (its ``held:<this epoch>`` hint)."""
        for client_id in client_ids:
            self.by_client[client_id] = epoch
            if self._fresh is not None:
                self._fresh[client_id] = epoch
        if epoch not in self.live:
            self.live = self.live | {epoch}

    def destinations(self, client_ids, served: frozenset[str], own: int) -> frozenset[int]:
        """The other nodes a message for these matching subscribers must go to: the nodes holding those
        not served here; every live node if one of them is not known."""
        held = self.by_client
        out: set[int] = set()
        for cid in client_ids:
            if cid in served:
                continue
            epoch = held.get(cid)
            if epoch is None:
                return self.live - {own}
            if epoch != own:
                out.add(epoch)
        return frozenset(out)


class Qos0Sender:
    """Sends each loop turn's QoS 0 messages for other nodes, one payload per destination node, in
    order, by one task (a turn's payloads in one round trip)."""

    def __init__(self, engine: RedisEngine, clock: Callable[[], float],
                 on_error: Callable[[BaseException], None]) -> None:
        self.engine = engine
        self.clock = clock
        self.on_error = on_error
        self._queue: dict[tuple[Feed, int], list[bytes]] = {}
        self._held_epoch = b"0"
        self._busy = False

    def held(self, epoch: int, client_ids: list[str], nodes: frozenset[int]) -> None:
        """Tell the other live nodes that this node (``epoch``) took these client ids."""
        if not client_ids:
            return
        self._held_epoch = str(epoch).encode()
        data = "\0".join(client_ids).encode("utf-8")
        for dest in nodes:
            if dest != epoch:
                self._queue.setdefault((Feed.HELD, dest), []).append(data)
        self._start()

    def _start(self) -> None:
        if not self._busy and self._queue:
            self._busy = True
            asyncio.ensure_future(self._run())

    def send(self, epoch: int, routed: list[tuple[Message, frozenset[int]]]) -> None:
        """``routed``: (message, the epochs of the nodes it goes to); ``epoch``: this node's."""
        now = self.clock()
        queue = self._queue
        if len(routed) > 1 and len({d for _, d in routed}) == 1:  # (the usual case: one set of nodes)
            data = encode_qos0(epoch, [m for m, _ in routed], now)
            for dest in routed[0][1]:
                queue.setdefault((Feed.QOS0, dest), []).append(data)
        else:
            for m, dests in routed:
                data = encode_qos0(epoch, [m], now)
                for dest in dests:
                    queue.setdefault((Feed.QOS0, dest), []).append(data)
        self._start()

    async def _run(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, {}
                try:
                    await self.engine.broadcast({
                        key: b"".join(parts) if key[0] is Feed.QOS0 else b"\0".join((self._held_epoch, *parts))
                        for key, parts in batch.items()})
                except (RedisError, OSError) as e:  # QoS 0: at most once
                    self.on_error(e)
        finally:
            self._busy = False
