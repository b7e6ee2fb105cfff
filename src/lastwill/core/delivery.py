"""Delivery: a message on its way to one session. Sent now when the client can take it, queued
otherwise (bounded by max_queued_messages / max_queued_bytes), moved into flight as the client's
Receive Maximum allows, re-sent on a resumed session.

Which sessions get a message is routing's business (core/routing.py); this module takes one
(session, message, QoS, flags) at a time.
"""

from __future__ import annotations

from ..codec.encoder import encode
from ..codec.packets import PROTOCOL_5, Publish, Pubrel
from ..config import Config
from ..logs import fast_logger
from .access import Access
from .actions import Send
from .backlog import PAGE_COUNT
from .limits import Limits
from .message import Message
from .outbox import Outbox
from .persistence import Recorder
from .sessions import (
    AWAIT_PUBACK,
    AWAIT_PUBCOMP,
    AWAIT_PUBREC,
    EMPTY_MAP,
    AckState,
    Conn,
    Delivery,
    InFlight,
    Session,
)
from .timers import TimerKind, TimerQueue
from .will import DropReason, WillKeeper

log = fast_logger("lastwill")

# enum members used below, bound once: on Python 3.11 an attribute lookup on an Enum class costs
# ~0.5 us (its metaclass has __getattr__); timer kinds as plain ints (they are hashed in timer keys)
_EXPIRED = DropReason.EXPIRED
_OFFLINE_QOS0 = DropReason.OFFLINE_QOS0
_QUEUE_FULL = DropReason.QUEUE_FULL
_TOO_LARGE = DropReason.TOO_LARGE
_NOT_AUTHORIZED = DropReason.NOT_AUTHORIZED
_PUMP = int(TimerKind.PUMP)

# At most this many payload bytes move from a session's queue (or its held-back re-sends) into its
# connection per call of ``pump``: a resumed session with 100,000 queued messages and a client
# Receive Maximum of 65,535 would otherwise put 64 MiB into one socket in one loop turn, past the
# edge's limit of unsent bytes (it then drops the client as "not reading"). The rest goes on at the
# next PUBACK/PUBCOMP, when the socket drains, or next turn (a PUMP timer, due at once).
PUMP_BYTES = 512 * 1024
# And no more in flight than this many bytes' worth of messages (by the size of the next one), within
# the client's Receive Maximum: what is in flight may all be unread in its socket, and the edge drops
# a client with more than 8 MiB unsent (edge/tcp.py UNSENT_HARD_LIMIT)
INFLIGHT_BYTES = 4 * 1024 * 1024


class Deliverer:
    __slots__ = ("config", "outbox", "recorder", "wills", "limits", "access", "stats", "timers")

    def __init__(self, config: Config, outbox: Outbox, recorder: Recorder, wills: WillKeeper, limits: Limits,
                 access: Access, stats: dict[str, int], timers: TimerQueue | None = None) -> None:
        self.config = config
        self.outbox = outbox
        self.recorder = recorder  # (a NoRecorder when nothing is persisted)
        self.wills = wills  # told when a will's delivery is dropped
        self.limits = limits
        self.access = access  # acl_file, checked again when a queued or in-flight message is sent
        self.stats = stats
        self.timers = timers  # (PUMP: a queue goes on next turn; see PUMP_BYTES)

    def deliver(self, session: Session, message: Message, qos: int, retain: bool,
                 sub_ids: tuple[int, ...], now: float) -> None:
        conn = session.conn
        if conn is not None and not conn.paused and \
                (qos == 0 or (not session.queue and session.backlog is None and
                              len(session.inflight) < conn.receive_maximum and
                              session.inflight_bytes < self.limits.bounds.inflight_bytes)):
            self.transmit(conn, session, Delivery(message, qos, retain, sub_ids), now)
            return
        # a slow subscriber (its socket buffer is full: conn.paused) gets its messages, QoS 0 too,
        # through the session queue, which is bounded by max_queued_messages: beyond that they
        # are dropped and counted, never buffered without bound
        if qos == 0 and conn is None and not self.config.queue_qos0:
            if message.is_will:
                self.wills.delivery_dropped(message, session.client_id, _OFFLINE_QOS0, now)
            return
        size = len(message.payload) + len(message.topic)
        limits = self.limits
        if limits.queue_full() and ((qos == 0 and not message.is_will) or limits.queue_ceiling_reached()):
            # max_total_queued_bytes: a QoS 0 message (at most once) is not queued into a full broker.
            # QoS 1/2 PUBLISHes were refused before they were accepted (publish.py); what gets here
            # beyond the bound is the rest of one accepted message's fan-out, and wills (their CONNECT
            # was accepted: published whatever the bound), which may use the reserve above it. Past the
            # reserve too, the delivery is dropped for this subscriber, as a full session queue does
            self.stats["dropped_queue_bytes"] += 1
            if message.is_will:
                self.wills.delivery_dropped(message, session.client_id, _QUEUE_FULL, now,
                                            f"the broker's queues are full ({limits.queued_total()} bytes, "
                                            f"max_total_queued_bytes {limits.bounds.queued_bytes} and its reserve)")
            limits.refused("max_total_queued_bytes", now, "QoS %d message on %r not queued for client_id=%s: the "
                           "broker's queues hold %d bytes (max_total_queued_bytes %d)%s", qos, message.topic[:200],
                           session.client_id, limits.queued_total(), limits.bounds.queued_bytes,
                           " (a will)" if message.is_will else "")
            return
        over_bytes = session.queued_bytes + size > self.config.max_queued_bytes
        queued = session.queued_count()  # (with what is still in the store: core/backlog.py)
        if over_bytes or queued >= self.config.max_queued_messages:
            session.dropped += 1
            self.stats["dropped_queue_bytes" if over_bytes else "dropped_queue_full"] += 1
            limit = "max_queued_bytes" if over_bytes else "max_queued_messages"
            self.limits.count(limit)
            if message.is_will:
                self.wills.delivery_dropped(message, session.client_id, _QUEUE_FULL, now,
                                            f"its queue is full ({queued} messages, "
                                            f"{session.queued_bytes} bytes, {limit})")
            if session.dropped == 1 or session.dropped % 1000 == 0:
                log.warning("client_id=%s queue full (%d messages, %d bytes; %s): %d message(s) dropped so far%s",
                            session.client_id, queued, session.queued_bytes, limit, session.dropped,
                            " (a will)" if message.is_will else "")
            return
        d = Delivery(message, qos, retain, sub_ids)
        session.enqueue(d)
        session.queued_bytes += size
        limits.enqueued(size)
        if session.expiry_interval:
            self.recorder.delivery(session, d)

    def transmit(self, conn: Conn, session: Session, d: Delivery, now: float) -> bool:
        """Send one delivery now. Returns False if it was dropped (expired or too large)."""
        message = d.message
        if message.expiry_at is not None and now >= message.expiry_at:
            self.stats["dropped_expired"] += 1  # [MQTT-3.3.2-5] an expired message is not delivered
            if message.is_will:
                self.wills.delivery_dropped(message, session.client_id, _EXPIRED, now,
                                            "its Message Expiry Interval passed before it could be sent",
                                            "MQTT-3.3.2-5")
            self.recorder.delivery_done(session, d)
            return False
        v5 = conn.protocol_level == PROTOCOL_5
        topic = message.topic
        if v5:
            props = message.properties
            extra = None
            if message.expiry_at is not None:
                extra = {"message_expiry_interval": message.remaining_expiry(now)}  # [MQTT-3.3.2-6]
            if d.subscription_ids:
                extra = extra or {}
                extra["subscription_identifier"] = list(d.subscription_ids)  # [MQTT-3.3.4-3]
            if conn.topic_alias_maximum:
                alias = conn.aliases_out.get(topic)
                extra = extra or {}
                if alias is not None:
                    extra["topic_alias"] = alias
                    topic = ""
                elif len(conn.aliases_out) < conn.topic_alias_maximum:  # [MQTT-3.1.2-26]
                    if conn.aliases_out is EMPTY_MAP:
                        conn.aliases_out = {}
                    alias = conn.aliases_out[topic] = len(conn.aliases_out) + 1
                    extra["topic_alias"] = alias
            if extra:
                props = {**props, **extra}
        else:
            props = {}
        qos = d.qos
        if qos:
            pid = session.allocate_packet_id()
            packet = Publish(topic, message.payload, qos, d.retain, False, pid, props)
        else:
            packet = Publish(topic, message.payload, 0, d.retain, False, None, props)
        if conn.maximum_packet_size is not None and \
                len(encode(packet, conn.protocol_level)) > conn.maximum_packet_size:
            # [MQTT-3.1.2-24] [MQTT-3.1.2-25] too large for this client: discarded for it, not sent
            self.stats["dropped_too_large"] += 1
            if message.is_will:
                self.wills.delivery_dropped(message, session.client_id, _TOO_LARGE, now,
                                            f"larger than its Maximum Packet Size {conn.maximum_packet_size}",
                                            "MQTT-3.1.2-24")
            log.info("client_id=%s: message on %r dropped, larger than the client's Maximum Packet Size %d",
                     session.client_id, message.topic, conn.maximum_packet_size)
            if "topic_alias" in props and topic:  # the alias was not established after all
                conn.aliases_out.pop(topic, None)
            self.recorder.delivery_done(session, d)  # a queued one is gone from the store too
            return False
        if qos:
            state = AWAIT_PUBACK if qos == 1 else AWAIT_PUBREC
            session.set_inflight(pid, InFlight(d, packet, state))
            if session.expiry_interval:
                self.recorder.delivery(session, d, pid, state)
        elif d.seq:
            self.recorder.delivery_done(session, d)
        self.outbox.actions.append(Send(conn.conn_id, packet))
        self.stats["messages_out"] += 1
        return True

    def pump(self, session: Session, now: float) -> None:
        """Move queued deliveries into flight while the client's Receive Maximum allows [MQTT-4.9.0-2]."""
        conn = session.conn
        if conn is None or conn.paused:
            return
        resend = conn.resend
        acl = self.access.acl  # acl_file: checked again as each one is sent (it may have been reloaded since)
        denied = self.stats["dropped_not_authorized"]
        budget = PUMP_BYTES
        # held-back re-sends first, while the send quota allows: the in-flight ones not held count
        # against the client's Receive Maximum [MQTT-4.9.0-1]
        while resend and budget > 0:
            pid = next(iter(resend))
            f = session.inflight[pid]
            if len(session.inflight) - len(resend) >= \
                    min(conn.receive_maximum, INFLIGHT_BYTES // (len(f.delivery.message.payload) + 1) or 1):
                break
            del resend[pid]
            if acl is not None and self._read_revoked(session, f.delivery, now):
                session.drop_inflight(pid)  # discarded as if its delivery had completed
                continue
            budget -= len(f.delivery.message.payload)
            self._resend_publish(conn, session, pid, f, now)
        if session.backlog is not None and len(session.queue) < PAGE_COUNT // 2:
            self._page_in(session)  # the queue's next deliveries, from the store
        queue = session.queue
        receive_maximum = conn.receive_maximum
        # max_inflight_bytes (limits.py) or INFLIGHT_BYTES, the smaller (one always goes: the bound is
        # checked before)
        inflight_bound = min(self.limits.bounds.inflight_bytes, INFLIGHT_BYTES)
        dequeued = self.limits.dequeued
        while queue and budget > 0 and (queue[0].qos == 0 or (len(session.inflight) < receive_maximum and
                                                              session.inflight_bytes < inflight_bound)):
            d = queue.popleft()
            size = len(d.message.payload) + len(d.message.topic)
            session.queued_bytes -= size
            dequeued(size)
            if acl is not None and self._read_revoked(session, d, now):
                continue
            budget -= size
            self.transmit(conn, session, d, now)
            if not queue and session.backlog is not None:
                self._page_in(session)
                queue = session.queue
        if budget <= 0 and self.timers is not None and \
                ((queue and (queue[0].qos == 0 or len(session.inflight) < receive_maximum)) or resend):
            self.timers.schedule((_PUMP, session.client_id), now)  # the rest next turn
        if acl is not None and self.stats["dropped_not_authorized"] != denied:
            log.info("client_id=%s user=%r: %d queued or unacknowledged message(s) dropped: acl_file no longer "
                     "lets it read their topics", session.client_id, session.username,
                     self.stats["dropped_not_authorized"] - denied)

    def _page_in(self, session: Session) -> None:
        """The next page of the session's backlog into its queue (in memory now: counted in the
        broker's queue account); once the backlog is used up, what was queued behind it follows."""
        backlog = session.backlog
        got = backlog.page()
        while not got and backlog.runs:  # (a page of messages missing from the store: the next one)
            got = backlog.page()
        if got:
            enqueued = self.limits.enqueued
            for d in got:
                enqueued(len(d.message.payload) + len(d.message.topic))
            session.enqueue_all(got)
        if not backlog.runs:
            session.queued_bytes -= backlog.bytes  # (0, unless messages were missing from the store)
            session.backlog = None
            if backlog.after:
                session.enqueue_all(list(backlog.after))

    def page_all(self, session: Session) -> None:
        """All of the session's backlog into its queue (its session leaves the store: Session Expiry 0)."""
        while session.backlog is not None:
            self._page_in(session)

    def pump_due(self, session: Session | None, now: float) -> None:
        """The PUMP timer: the session's queue goes on (if its connection is still there)."""
        if session is not None and session.conn is not None:
            self.pump(session, now)

    def _read_revoked(self, session: Session, d: Delivery, now: float) -> bool:
        """The ACL in force no longer lets ``session`` read ``d`` (queued or sent before a reload of
        acl_file): True, and the delivery is dropped: counted, removed from the store, and a will's
        written on its timeline, as for a delivery denied when the message was routed (routing.py)."""
        message = d.message
        if self.access.may_read(session.client_id, message.topic):
            return False
        self.stats["dropped_not_authorized"] += 1
        self.recorder.delivery_done(session, d)
        if message.is_will:
            self.wills.delivery_dropped(message, session.client_id, _NOT_AUTHORIZED, now)
        return True

    def resume(self, session: Session, message: Message, qos: int, retain: bool, sub_ids: tuple[int, ...],
               packet_id: int, state: str) -> bool:
        """Cluster: a QoS 2 delivery an earlier holder of this session sent (the session's node died, or
        the client reconnected): in flight again under its packet id, its PUBLISH sent again with DUP 1
        (by ``pump``) or its PUBREL now [MQTT-4.4.0-1], so that the client's QoS 2 state does not deliver
        it twice [MQTT-4.3.3-10] (after a PUBREL, never the PUBLISH again [MQTT-4.3.3-6]). False: that
        packet id is in use here (it goes as a new delivery)."""
        conn = session.conn
        if conn is None or packet_id in session.inflight:
            return False
        d = Delivery(message, qos, retain, sub_ids)
        packet = Publish(message.topic, message.payload, qos, retain, True, packet_id, {})
        session.set_inflight(packet_id, InFlight(d, packet, AckState(state)))
        if state == AWAIT_PUBCOMP:
            self.outbox.send(conn, Pubrel(packet_id))
        else:
            if conn.resend is EMPTY_MAP:
                conn.resend = {}
            conn.resend[packet_id] = None
        return True

    def resend_inflight(self, conn: Conn, session: Session) -> None:
        """On a resumed session, resend unacknowledged PUBLISH (DUP 1) and PUBREL [MQTT-4.4.0-1].

        PUBRELs go at once; the PUBLISHes are held in ``conn.resend`` and sent by ``_pump`` (called
        next) within the new connection's Receive Maximum [MQTT-4.9.0-1]."""
        for pid, f in session.inflight.items():
            if f.state == AWAIT_PUBCOMP:
                self.outbox.send(conn, Pubrel(pid))
            else:
                if conn.resend is EMPTY_MAP:
                    conn.resend = {}
                conn.resend[pid] = None

    def _resend_publish(self, conn: Conn, session: Session, pid: int, f: InFlight, now: float) -> None:
        old = f.packet
        d = f.delivery
        props: dict = {}
        if conn.protocol_level == PROTOCOL_5:
            # the message's properties as forwarded the first time [MQTT-3.3.2-17] [MQTT-3.3.2-20] (also for a
            # delivery restored from the store, whose packet was not kept), with the expiry counted down to
            # now [MQTT-3.3.2-6] and its subscription identifiers [MQTT-3.3.4-3]; no topic alias: aliases
            # do not survive the connection [MQTT-3.3.2-7]
            props = dict(d.message.properties)
            remaining = d.message.remaining_expiry(now)
            if remaining is not None:
                props["message_expiry_interval"] = remaining
            if d.subscription_ids:
                props["subscription_identifier"] = list(d.subscription_ids)
        f.packet = Publish(d.message.topic, old.payload, old.qos, old.retain, True,
                           pid, props)  # [MQTT-3.3.1-1] DUP 1 on a re-delivery
        if conn.maximum_packet_size is not None and \
                len(encode(f.packet, conn.protocol_level)) > conn.maximum_packet_size:
            # the new connection allows less: discarded as if sent [MQTT-3.1.2-24] [MQTT-3.1.2-25]
            session.drop_inflight(pid)
            self.recorder.delivery_done(session, f.delivery)  # or a restart would bring it back
            self.stats["dropped_too_large"] += 1
            return
        self.outbox.send(conn, f.packet)

