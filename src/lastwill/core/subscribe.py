"""SUBSCRIBE and UNSUBSCRIBE (3.8-3.11): validate each filter, grant, send matching retained messages."""

from __future__ import annotations

from ..codec.packets import PROTOCOL_5, Suback, Subscribe, Unsuback, Unsubscribe
from ..codec.reason_codes import ReasonCode
from ..config import Config
from ..errors import MqttError, ProtocolError
from ..logs import fast_logger
from .access import Access
from .delivery import Deliverer
from .limits import Limits
from .message import Message
from .outbox import Outbox
from .persistence import Recorder
from .routing import Router
from .sessions import Conn
from .topics import SubOptions, TopicError, validate_filter

log = fast_logger("lastwill")


class SubscribeHandler:
    __slots__ = ("config", "outbox", "router", "deliverer", "limits", "access", "recorder", "stats")

    def __init__(self, config: Config, outbox: Outbox, router: Router, deliverer: Deliverer, limits: Limits,
                 access: Access, recorder: Recorder, stats: dict[str, int]) -> None:
        self.config = config
        self.outbox = outbox
        self.router = router
        self.deliverer = deliverer
        self.limits = limits
        self.access = access
        self.recorder = recorder
        self.stats = stats

    def on_subscribe(self, conn: Conn, p: Subscribe, now: float) -> None:
        cfg = self.config
        v5 = conn.protocol_level == PROTOCOL_5
        session = conn.session
        sub_id = p.properties.get("subscription_identifier") if v5 else None
        if sub_id is not None and not cfg.subscription_identifier_available:
            raise MqttError("subscription identifiers are not supported", ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED)
        codes = []
        retained_to_send: list[tuple[Message, SubOptions]] = []
        for sub in p.subscriptions:
            try:
                group, inner = validate_filter(sub.topic_filter)  # the same check as UNSUBSCRIBE's
            except TopicError as e:
                log.info("client_id=%s subscribe %r refused: %s [%s]", session.client_id, sub.topic_filter, e, e.rule)
                codes.append(ReasonCode.TOPIC_FILTER_INVALID)  # 3.1.1: 0x80 Failure
                continue
            if group is not None:
                if not cfg.shared_subscription_available:
                    codes.append(ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
                    continue
                if sub.no_local:
                    # [MQTT-3.8.3-4] No Local on a shared subscription is a Protocol Error
                    raise ProtocolError(f"No Local set on shared subscription {sub.topic_filter!r}",
                                        rule="MQTT-3.8.3-4")
            if not cfg.wildcard_subscription_available and ("+" in inner or "#" in inner):
                codes.append(ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED)
                continue
            over = self.limits.topic_over_limit(sub.topic_filter, inner)
            if over is None and sub.topic_filter not in session.subscriptions and \
                    len(session.subscriptions) >= cfg.max_subscriptions_per_client:
                over = ("max_subscriptions_per_client",
                        f"the client has {len(session.subscriptions)} subscriptions (max_subscriptions_per_client)")
            if over is None and sub.topic_filter not in session.subscriptions and \
                    self.router.subscription_count() >= self.limits.bounds.subscriptions:
                # a global bound (core/limits.py): the topic tree's size over every session
                over = ("max_total_subscriptions", f"the broker holds {self.router.subscription_count()} subscriptions "
                                                   f"(max_total_subscriptions {self.limits.bounds.subscriptions})")
                self.limits.refused(over[0], now, "client_id=%s subscribe %r refused with 0x97: %s",
                                    session.client_id, sub.topic_filter[:200], over[1])
                codes.append(ReasonCode.QUOTA_EXCEEDED)  # 3.1.1: 0x80 Failure
                continue
            if over is not None:
                # 0x8F Topic Filter invalid ("not allowed for this Client") / 0x97 Quota exceeded; 3.1.1: 0x80
                code = ReasonCode.QUOTA_EXCEEDED if over[0] == "max_subscriptions_per_client" else ReasonCode.TOPIC_FILTER_INVALID
                self.limits.hit(over[0], session.client_id, now, "client_id=%s subscribe %r refused with 0x%02X: %s",
                                session.client_id, sub.topic_filter[:200], code, over[1])
                codes.append(code)
                continue
            if not self.access.may_subscribe(session.username, session.client_id, inner):
                # acl_file: no read rule covers the whole filter (or a deny rule does): 0x87 Not authorized
                # for this filter alone [MQTT-3.8.4-6] [MQTT-3.9.3-2]; 3.1.1: 0x80 Failure [MQTT-3.8.4-5]
                log.info("client_id=%s user=%r subscribe %r refused: not authorized by acl_file",
                         session.client_id, session.username, sub.topic_filter[:200])
                codes.append(ReasonCode.NOT_AUTHORIZED)
                continue
            granted = min(sub.qos, cfg.maximum_qos)  # [MQTT-3.2.2-10] [MQTT-3.8.4-8] granted may be lower
            opts = SubOptions(granted, sub.no_local, sub.retain_as_published, sub.retain_handling, sub_id)
            existed = sub.topic_filter in session.subscriptions
            session.set_subscription(sub.topic_filter, opts)  # [MQTT-3.8.4-3] replaces an identical filter
            self.router.subscribe(session.client_id, sub.topic_filter, opts)
            codes.append(granted)
            # retained messages [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11]; never to a shared subscription (4.8.2)
            if group is None and (sub.retain_handling == 0 or (sub.retain_handling == 1 and not existed)):
                for msg in self.router.retained_matching(inner, now):
                    retained_to_send.append((msg, opts))
        self.recorder.session(session)
        self.outbox.send(conn, Suback(p.packet_id, codes))  # [MQTT-3.8.4-1] [MQTT-3.8.4-5]
        for msg, opts in retained_to_send:
            if opts.no_local and msg.origin == session.client_id:
                continue
            if not self.access.may_read(session.client_id, msg.topic):
                self.stats["dropped_not_authorized"] += 1  # acl_file: a retained message it may not read
                continue
            # a retained message sent because of a new subscription has RETAIN 1 [MQTT-3.3.1-8]
            self.deliverer.deliver(session, msg, min(msg.qos, opts.qos), True,
                          (opts.subscription_id,) if opts.subscription_id else (), now)

    def on_unsubscribe(self, conn: Conn, p: Unsubscribe, now: float) -> None:
        session = conn.session
        v5 = conn.protocol_level == PROTOCOL_5
        invalid = set()
        for topic_filter in p.topic_filters:
            try:
                validate_filter(topic_filter)  # the same check as SUBSCRIBE's
            except TopicError as e:
                if not v5:  # 3.1.1: no reason code to say it, a protocol violation [MQTT-4.8.0-1]
                    raise ProtocolError(f"UNSUBSCRIBE {topic_filter[:200]!r}: {e}", rule=e.rule) from None
                log.info("client_id=%s unsubscribe %r refused: %s [%s]", session.client_id, topic_filter[:200],
                         e, e.rule)
                invalid.add(topic_filter)
        codes = []
        for topic_filter in p.topic_filters:
            if topic_filter in invalid:
                codes.append(ReasonCode.TOPIC_FILTER_INVALID)  # as SUBSCRIBE answers it [MQTT-4.7.1-1] [MQTT-4.7.1-2]
            elif session.subscriptions and session.subscriptions.pop(topic_filter, None) is not None:
                self.router.unsubscribe(session.client_id, topic_filter)
                codes.append(ReasonCode.SUCCESS)
            else:
                codes.append(ReasonCode.NO_SUBSCRIPTION_EXISTED)
        self.recorder.session(session)
        self.outbox.send(conn, Unsuback(p.packet_id, codes))  # [MQTT-3.10.4-4] [MQTT-3.10.4-5]
