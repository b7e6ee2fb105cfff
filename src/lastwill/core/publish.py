"""PUBLISH from a client (3.3): topic aliases, limits, authorization, then route and acknowledge.

QoS 1 is acknowledged with PUBACK, QoS 2 with PUBREC, after the message was routed (and, through the
edge's group commit, made durable for persistent sessions) [MQTT-4.3.2-2] [MQTT-4.3.3-2].
"""

from __future__ import annotations

from ..codec.packets import PROTOCOL_5, Puback, Publish, Pubrec
from ..codec.reason_codes import ReasonCode
from ..config import Config
from ..errors import MqttError, ProtocolError
from ..logs import fast_logger
from .access import Access
from .announce import is_sys_topic
from .limits import Limits
from .message import Message
from .outbox import Outbox
from .persistence import Recorder
from .routing import Router
from .sessions import EMPTY_MAP, Conn

log = fast_logger("lastwill")

_STRIP_ON_FORWARD = ("topic_alias", "subscription_identifier", "message_expiry_interval")


class PublishHandler:
    __slots__ = ("config", "outbox", "router", "limits", "access", "recorder", "stats")

    def __init__(self, config: Config, outbox: Outbox, router: Router, limits: Limits, access: Access,
                 recorder: Recorder, stats: dict[str, int]) -> None:
        self.config = config
        self.outbox = outbox
        self.router = router
        self.limits = limits
        self.access = access
        self.recorder = recorder
        self.stats = stats

    def on_publish(self, conn: Conn, p: Publish, now: float) -> None:
        cfg = self.config
        props = p.properties
        topic = p.topic
        if conn.protocol_level == PROTOCOL_5 and (props or not topic):  # aliases, and what MQTT 5 forbids
            topic = self._topic(conn, p)
        qos = p.qos
        if qos > cfg.maximum_qos:
            raise MqttError(f"PUBLISH QoS {qos} above maximum {cfg.maximum_qos}", ReasonCode.QOS_NOT_SUPPORTED,
                            "MQTT-3.2.2-11")
        if p.retain and not cfg.retain_available:
            raise MqttError("retained PUBLISH but retain is not available", ReasonCode.RETAIN_NOT_SUPPORTED,
                            "MQTT-3.2.2-14")
        if p.topic:  # max_topic_length, max_topic_levels (a topic from a Topic Alias was checked when set)
            over = self.limits.topic_over_limit(p.topic)
            if over is not None:
                if "topic_alias" in props and conn.aliases_in:  # no alias to a refused topic
                    conn.aliases_in.pop(props["topic_alias"], None)
                self._refuse(conn, p, ReasonCode.TOPIC_NAME_INVALID, over[0], now, over[1])
                return
        session = conn.session
        if qos == 2 and p.packet_id in session.awaiting_pubrel:
            # duplicate of a QoS 2 message not yet released: PUBREC again, no second delivery [MQTT-4.3.3-10]
            self.outbox.send(conn, Pubrec(p.packet_id))
            return
        if qos and len(session.awaiting_pubrel) >= cfg.receive_maximum:
            # [MQTT-3.3.4-7] more unacknowledged QoS 2 PUBLISHes than our Receive Maximum (a QoS 1 one
            # counts too: it arrives while Receive Maximum QoS 2 are unanswered)
            raise MqttError(f"more than {cfg.receive_maximum} QoS 2 messages awaiting PUBREL" if qos == 2 else
                            f"QoS 1 PUBLISH while {cfg.receive_maximum} QoS 2 messages await PUBREL",
                            ReasonCode.RECEIVE_MAXIMUM_EXCEEDED, "MQTT-3.3.4-7")
        if cfg.max_publish_rate and not self.limits.publish_token(conn, now):
            self._refuse(conn, p, ReasonCode.QUOTA_EXCEEDED, "max_publish_rate", now,
                         f"more than {cfg.max_publish_rate:g} PUBLISH per second")
            return
        limits = self.limits
        if qos and limits.queue_full():
            # max_total_queued_bytes: a QoS 1/2 message is not accepted into a broker whose queues are full
            # (it would be dropped for its offline subscribers after being acknowledged)
            self._refuse(conn, p, ReasonCode.QUOTA_EXCEEDED, "max_total_queued_bytes", now,
                         f"the broker's queues hold {limits.queued_total()} bytes (max_total_queued_bytes "
                         f"{limits.bounds.queued_bytes})", shared=True)
            return
        if p.retain and p.payload:
            over = limits.retained_over(topic, len(p.payload) + len(topic))
            if over is not None:  # max_retained_messages, max_retained_bytes: neither retained nor routed
                self._refuse(conn, p, ReasonCode.QUOTA_EXCEEDED, over[0], now, over[1], shared=True)
                return
        self.stats["messages_in"] += 1
        if (topic[:1] != "$" and self.access.acl is None) or self._may_route(conn, p, topic):
            if props:
                fwd = {k: v for k, v in props.items() if k not in _STRIP_ON_FORWARD}
                mei = props.get("message_expiry_interval")
            else:
                fwd = props
                mei = None
            self.router.route(Message(topic, p.payload, qos, p.retain, fwd, conn.client_id,
                                      (now + mei) if mei is not None else None), now)
        elif qos and conn.protocol_level == PROTOCOL_5:
            return  # refused with its reason code
        if qos == 1:
            self.outbox.send(conn, Puback(p.packet_id))
        elif qos == 2:
            session.add_awaiting_pubrel(p.packet_id)
            self.recorder.session(session)
            self.outbox.send(conn, Pubrec(p.packet_id))

    def _topic(self, conn: Conn, p: Publish) -> str:
        """MQTT 5: the topic, through the Topic Alias when there is one (3.3.2.3.4)."""
        topic = p.topic
        props = p.properties
        alias = props.get("topic_alias")
        if alias is not None:
            limit = self.config.topic_alias_maximum
            if alias == 0 or alias > limit:
                # [MQTT-3.3.2-8] [MQTT-3.2.2-17] alias 0 or above our Topic Alias Maximum
                raise MqttError(f"topic alias {alias} outside 1..{limit}", ReasonCode.TOPIC_ALIAS_INVALID,
                                "MQTT-3.3.2-8")
            if topic:
                if conn.aliases_in is EMPTY_MAP:
                    conn.aliases_in = {}
                conn.aliases_in[alias] = topic  # [MQTT-3.3.2-12] set or replace the mapping
            else:
                topic = conn.aliases_in.get(alias)
                if topic is None:
                    raise ProtocolError(f"topic alias {alias} used before it was set (3.3.2.3.4)")
        elif not topic:
            raise ProtocolError("PUBLISH with an empty topic and no topic alias", rule="MQTT-3.3.2-1")
        if "subscription_identifier" in props:
            # [MQTT-3.3.4-6] a client must not send a Subscription Identifier
            raise ProtocolError("PUBLISH from a client carries a Subscription Identifier", rule="MQTT-3.3.4-6")
        return topic

    def _may_route(self, conn: Conn, p: Publish, topic: str) -> bool:
        """Whether the message goes on; if not, it is dropped, neither routed nor retained, and an
        MQTT 5 QoS 1/2 PUBLISH is answered here with 0x87 Not authorized."""
        if topic[:1] == "$" and is_sys_topic(topic):
            # $SYS is the broker's: a client's PUBLISH there is dropped, neither routed nor retained
            # (as mosquitto does). MQTT 5 says so: PUBACK/PUBREC 0x87 Not authorized; 3.1.1 has no
            # way to, so the normal positive acknowledgement [MQTT-3.3.5-2]
            log.info("client_id=%s PUBLISH to %r dropped: $SYS topics are the broker's", conn.client_id, topic)
            if p.qos and conn.protocol_level == PROTOCOL_5:
                self.outbox.send(conn, (Puback if p.qos == 1 else Pubrec)(p.packet_id, ReasonCode.NOT_AUTHORIZED))
            return False
        if self.access.acl is not None and not self.access.may_publish(conn.username, conn.client_id, topic):
            # acl_file does not let this client publish here: dropped, neither routed nor retained.
            # MQTT 5: PUBACK/PUBREC 0x87 Not authorized [MQTT-3.4.2-1] [MQTT-3.5.2-1] (QoS 0: just dropped);
            # 3.1.1 cannot say so: the normal positive acknowledgement [MQTT-3.3.5-2]
            self.stats["publish_denied"] += 1
            conn.acl_denied += 1
            if conn.acl_denied == 1 or conn.acl_denied % 1000 == 0:
                log.info("client_id=%s user=%r PUBLISH to %r dropped: not authorized by acl_file (%d so far on "
                         "this connection)", conn.client_id, conn.username, topic[:200], conn.acl_denied)
            if p.qos and conn.protocol_level == PROTOCOL_5:
                self.outbox.send(conn, (Puback if p.qos == 1 else Pubrec)(
                    p.packet_id, ReasonCode.NOT_AUTHORIZED, self.outbox.reason(conn, "not authorized")))
            return False
        return True

    def _refuse(self, conn: Conn, p: Publish, code: int, limit: str, now: float, why: str,
                shared: bool = False) -> None:
        """A PUBLISH over a limit is neither routed nor retained. MQTT 5: PUBACK/PUBREC with ``code``
        (0x90 Topic Name invalid, 0x97 Quota exceeded), a QoS 0 one is dropped; the connection stays.
        MQTT 3.1.1 has no negative acknowledgement and an acknowledgement must not lie: the connection
        is closed, except that a QoS 0 PUBLISH over max_publish_rate is dropped (at most once).
        ``shared``: a global bound (core/limits.py), logged once per interval whoever hits it."""
        qos = p.qos
        limits = self.limits
        if conn.protocol_level == PROTOCOL_5 or (qos == 0 and limit == "max_publish_rate"):
            if qos and conn.protocol_level == PROTOCOL_5:
                fmt = "client_id=%s PUBLISH to %r refused with 0x%02X: %s"
                args = (conn.client_id, p.topic[:200], code, why)
                self.outbox.send(conn, (Puback if qos == 1 else Pubrec)(p.packet_id, code,
                                                                       self.outbox.reason(conn, why)))
            else:
                fmt = "client_id=%s QoS 0 PUBLISH to %r dropped: %s"
                args = (conn.client_id, p.topic[:200], why)
            if shared:
                limits.refused(limit, now, fmt, *args)
            else:
                limits.hit(limit, conn.client_id, now, fmt, *args)
            return
        limits.count(limit)  # logged as the connection closes
        raise MqttError(f"PUBLISH to {p.topic[:200]!r}: {why}; MQTT 3.1.1 cannot refuse a PUBLISH", code)
