"""The core in cluster mode, sans-IO: what it asks of the engine (ClaimSession, intents) and what it does
with the answers. No Redis here: the engine's side is tests/cluster; this is the core's decisions."""

from __future__ import annotations

import json

from lastwill.codec.packets import (
    Connack,
    Connect,
    Disconnect,
    Puback,
    Publish,
    Subscribe,
    Subscription,
    Will,
)
from lastwill.config import Config
from lastwill.core.actions import ClaimSession, Close, Send
from lastwill.core.broker import BrokerCore
from lastwill.core.causes import lost
from lastwill.core.cluster import Claim
from lastwill.core.message import Message
from lastwill.core.topics import SubOptions

NOW = 100.0


class Node:
    def __init__(self) -> None:
        self.core = BrokerCore(Config(), cluster=True)
        self.sent: dict[int, list] = {}
        self.claims: list[ClaimSession] = []
        self.closed: set[int] = set()

    def run(self, actions: list) -> None:
        for a in actions:
            if isinstance(a, Send):
                self.sent.setdefault(a.conn_id, []).append(a.packet)
            elif isinstance(a, ClaimSession):
                self.claims.append(a)
            elif isinstance(a, Close):
                self.closed.add(a.conn_id)

    def connect(self, client_id: str, version: int = 5, will: Will | None = None, clean: bool = True,
                **props) -> int:
        conn = self.core.new_conn_id()
        self.run(self.core.open(conn, NOW, "test"))
        self.run(self.core.handle(conn, Connect(client_id=client_id, clean_start=clean, keep_alive=0,
                                                protocol_level=version, will=will, properties=props), NOW))
        return conn

    def claim(self, claim: Claim | None) -> None:
        c = self.claims.pop(0)
        alive, actions = self.core.session_claimed(c.conn_id, claim, NOW)
        assert alive
        self.run(actions)

    def packets(self, conn: int, kind: type) -> list:
        return [p for p in self.sent.get(conn, []) if isinstance(p, kind)]


def test_a_connect_waits_for_the_engine_s_claim_before_its_connack_MQTT_3_1_2_7():
    node = Node()
    conn = node.connect("dev", will=Will("w/dev", b"gone", 1, False))
    assert node.packets(conn, Connack) == []  # nothing accepted before the engine has the will
    (claim,) = node.claims
    assert (claim.client_id, claim.will.topic, claim.clean_start) == ("dev", "w/dev", True)
    node.claims.insert(0, claim)
    node.claim(Claim(gen=7, session_present=False, subscriptions=()))
    (ack,) = node.packets(conn, Connack)
    assert ack.reason_code == 0 and not ack.session_present
    assert node.core.generation("dev") == 7


def test_a_connect_is_refused_with_0x88_or_rc_3_when_the_engine_cannot_be_reached():
    for version in (4, 5):
        node = Node()
        conn = node.connect("dev", version=version, will=Will("w/dev", b"gone", 1, False))
        node.claim(None)
        (ack,) = node.packets(conn, Connack)
        assert ack.reason_code == 0x88  # the encoder writes 3.1.1 return code 3 (Server unavailable)
        assert conn in node.closed
        assert node.core.generation("dev") is None


def test_a_resumed_session_gets_its_subscriptions_back_and_session_present_MQTT_3_2_2_3():
    node = Node()
    conn = node.connect("dev", clean=False, session_expiry_interval=60)
    node.claim(Claim(gen=3, session_present=True, subscriptions=(("a/#", SubOptions(1)),)))
    (ack,) = node.packets(conn, Connack)
    assert ack.session_present
    assert dict(node.core.sessions["dev"].subscriptions) == {"a/#": SubOptions(1)}
    node.core.take_intents()
    pub = node.connect("pub")
    node.claim(Claim(gen=4, session_present=False, subscriptions=()))
    node.run(node.core.handle(pub, Publish("a/b", b"x", 0, False, False, None, {}), NOW))
    assert [p.payload for p in node.packets(conn, Publish)] == [b"x"]  # served by this node


def test_a_publish_serves_local_subscribers_and_leaves_the_rest_to_the_engine():
    node = Node()
    sub = node.connect("sub")
    node.claim(Claim(1, False, ()))
    node.run(node.core.handle(sub, Subscribe(1, [Subscription("t/#", 1)]), NOW))
    intents = node.core.take_intents()
    assert [(s.client_id, s.add) for s in intents.subscribes] == [("sub", [("t/#", SubOptions(1))])]
    assert [(r.client_id, r.topic_filter) for r in intents.retained] == [("sub", "t/#")]
    pub = node.connect("pub")
    node.claim(Claim(2, False, ()))
    node.run(node.core.handle(pub, Publish("t/x", b"m", 1, True, False, 1, {}), NOW))
    assert [p.payload for p in node.packets(sub, Publish)] == [b"m"]
    (intent,) = node.core.take_intents().publishes
    assert intent.served == frozenset({"sub"}) and intent.message.retain  # the rest: the engine's


def test_qos_1_to_a_persistent_session_here_goes_through_the_engine_not_straight_to_it():
    node = Node()
    sub = node.connect("keeper", session_expiry_interval=300)
    node.claim(Claim(1, False, ()))
    node.run(node.core.handle(sub, Subscribe(1, [Subscription("t/#", 1)]), NOW))
    pub = node.connect("pub")
    node.claim(Claim(2, False, ()))
    node.core.take_intents()
    node.run(node.core.handle(pub, Publish("t/x", b"m", 1, False, False, 1, {}), NOW))
    assert node.packets(sub, Publish) == []
    (intent,) = node.core.take_intents().publishes
    assert "keeper" not in intent.served  # its queue in the engine gets it: a node's death loses none


def test_a_delivery_from_the_engine_is_acknowledged_there_when_the_client_acknowledged_it():
    node = Node()
    sub = node.connect("sub")
    node.claim(Claim(5, False, ()))
    ok, actions = node.core.deliver_remote("sub", 5, [(Message("t", b"m", 1, False, ref="9-0"), 1, False, ())], NOW)
    assert ok
    node.run(actions)
    (p,) = node.packets(sub, Publish)
    assert node.core.take_intents() is None  # not yet
    node.run(node.core.handle(sub, Puback(p.packet_id), NOW))
    assert node.core.take_intents().acks == [("sub", "9-0")]
    assert node.core.deliver_remote("sub", 4, [], NOW)[0] is False  # an older generation: not this session


def test_the_end_of_a_connection_hands_the_session_and_its_will_to_the_engine_MQTT_3_1_2_8():
    node = Node()
    conn = node.connect("dev", will=Will("w/dev", b"gone", 1, False), session_expiry_interval=60)
    node.claim(Claim(8, False, ()))
    node.core.take_intents()
    node.run(node.core.connection_lost(conn, lost(ConnectionResetError()), NOW))
    (d,) = node.core.take_intents().disconnects
    assert (d.client_id, d.gen, d.normal, d.expiry) == ("dev", 8, False, 60)
    assert "dev" not in node.core.sessions  # held by the engine now
    assert node.core.generation("dev") is None


def test_disconnect_0x00_tells_the_engine_to_delete_the_will_MQTT_3_14_4_3():
    node = Node()
    conn = node.connect("dev", will=Will("w/dev", b"gone", 1, False))
    node.claim(Claim(8, False, ()))
    node.core.take_intents()
    node.run(node.core.handle(conn, Disconnect(0), NOW))
    (d,) = node.core.take_intents().disconnects
    assert d.normal


def test_a_kick_ends_the_connection_with_0x8E_and_a_fence_closes_every_connection_MQTT_3_1_4_3():
    node = Node()
    a = node.connect("a")
    node.claim(Claim(1, False, ()))
    b = node.connect("b")
    node.claim(Claim(2, False, ()))
    node.run(node.core.kicked("a", 99, NOW))  # another generation: not this connection
    assert a not in node.closed
    node.run(node.core.kicked("a", 1, NOW))
    assert [p.reason_code for p in node.packets(a, Disconnect)] == [0x8E]
    assert a in node.closed
    node.core.take_intents()
    node.run(node.core.fence(NOW))
    assert [p.reason_code for p in node.packets(b, Disconnect)] == [0x9C]  # Use another server
    assert b in node.closed and not node.core.sessions and node.core.take_intents() is None


def test_a_will_the_engine_cancelled_at_a_reconnect_is_on_the_client_s_timeline_MQTT_3_1_3_9():
    node = Node()
    node.connect("dev", clean=False, session_expiry_interval=60)
    node.claim(Claim(9, True, (), ("the client came back (on node n2) after node n1 died, before its will was due",)))
    kinds = [e.kind for e in node.core.timeline.events("dev")]
    assert kinds[0] == "cancelled"  # before what the new connection armed
    assert node.core.wills.cancelled_by_cause == {"reconnect": 1}


# -- the engine cannot be reached: what the node serves alone (docs/cluster.md, "Redis down") ------------
def test_a_connect_with_nothing_to_keep_is_served_locally_while_the_engine_is_unreachable_MQTT_3_1_2_4():
    for version in (4, 5):
        node = Node()
        conn = node.connect("plain", version=version)  # Clean Start 1, no will, Session Expiry 0
        node.claim(None)
        (ack,) = node.packets(conn, Connack)
        assert ack.reason_code == 0 and not ack.session_present
        assert conn not in node.closed
        assert node.core.generation("plain") is None  # not known to the engine yet
        assert [(u.client_id, u.conn_id) for u in node.core.unclaimed()] == [("plain", conn)]


def test_a_connect_with_a_will_or_a_lasting_session_is_refused_while_the_engine_is_unreachable_MQTT_3_1_2_8():
    for version, kwargs in ((5, {"will": Will("w/dev", b"gone", 1, False)}),
                            (4, {"will": Will("w/dev", b"gone", 1, False)}),
                            (5, {"session_expiry_interval": 60}),
                            (5, {"clean": False}),
                            (4, {"clean": False})):
        node = Node()
        conn = node.connect("dev", version=version, **kwargs)
        node.claim(None)
        (ack,) = node.packets(conn, Connack)
        assert ack.reason_code == 0x88, (version, kwargs)  # 3.1.1: return code 3 Server unavailable
        assert conn in node.closed and node.core.unclaimed() == []


def test_unclaimed_clients_get_local_qos_0_and_their_subscriptions_reach_the_engine_once_claimed():
    node = Node()
    sub = node.connect("sub")
    node.claim(None)
    node.run(node.core.handle(sub, Subscribe(1, [Subscription("t/#", 0)]), NOW))
    pub = node.connect("pub")
    node.claim(None)
    node.core.take_intents()  # (the edge sends nothing of an unclaimed session to the engine)
    node.run(node.core.handle(pub, Publish("t/x", b"m", 0, False, False, None, {}), NOW))
    assert [p.payload for p in node.packets(sub, Publish)] == [b"m"]
    node.core.take_intents()
    assert node.core.claimed_late("sub", sub, 11, NOW + 5)
    assert node.core.generation("sub") == 11 and [u.client_id for u in node.core.unclaimed()] == ["pub"]
    (s,) = node.core.take_intents().subscribes
    assert (s.client_id, s.add) == ("sub", [("t/#", SubOptions(0))])


def test_an_unclaimed_connection_gone_before_its_late_claim_gives_the_claim_back():
    node = Node()
    conn = node.connect("gone")
    node.claim(None)
    node.run(node.core.connection_lost(conn, lost(ConnectionResetError()), NOW))
    assert node.core.unclaimed() == [] and node.core.take_intents() is None  # the engine never had it
    assert not node.core.claimed_late("gone", conn, 12, NOW)
    (d,) = node.core.take_intents().disconnects
    assert (d.client_id, d.gen, d.normal, d.expiry) == ("gone", 12, True, 0)


def test_an_unclaimed_connection_taken_meanwhile_on_another_node_ends_with_0x8E_MQTT_3_1_4_3():
    node = Node()
    conn = node.connect("dev")
    node.claim(None)
    node.run(node.core.claim_lost("dev", conn + 1, NOW))  # another connection: not this one
    assert conn not in node.closed
    node.run(node.core.claim_lost("dev", conn, NOW))
    assert [p.reason_code for p in node.packets(conn, Disconnect)] == [0x8E]
    assert conn in node.closed and node.core.unclaimed() == [] and node.core.take_intents() is None


def test_a_fence_keeps_the_connections_the_engine_never_had():
    node = Node()
    claimed = node.connect("a")
    node.claim(Claim(1, False, ()))
    local = node.connect("b")
    node.claim(None)
    node.core.take_intents()
    other = node.connect("c")  # (one the edge does not keep: a packet for it was waiting for the engine)
    node.claim(None)
    node.run(node.core.fence(NOW, {local}))
    assert claimed in node.closed and other in node.closed and local not in node.closed
    assert list(node.core.sessions) == ["b"] and [u.client_id for u in node.core.unclaimed()] == ["b"]


def test_a_will_published_for_a_dead_node_s_client_has_a_sys_disconnected_event_from_this_node_MQTT_3_1_2_8():
    node = Node()
    sub = node.connect("ops")
    node.claim(Claim(1, False, ()))
    node.run(node.core.handle(sub, Subscribe(1, [Subscription("$SYS/brokers/+/clients/#", 0)]), NOW))
    node.run(node.core.dead_node_will("dev", "alice", "n1", 1_700_000_000_000, 1_700_000_002_000, NOW))
    (event,) = node.packets(sub, Publish)
    assert event.topic == f"$SYS/brokers/{node.core.config.cluster_node_id}/clients/dev/disconnected"
    body = json.loads(event.payload)
    assert (body["clientid"], body["username"], body["reason"], body["node"]) == ("dev", "alice", "node_died", "n1")
    assert body["disconnected_at"] == 1_700_000_000_000
    assert body["will"] == {"decision": "published", "fire_at": 1_700_000_002_000, "rule": "MQTT-3.1.2-8"}
