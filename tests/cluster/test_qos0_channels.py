"""QoS 0 between nodes (edge/cluster_qos0.py): which nodes a message goes to, and its framing. Pure
logic here; the real nodes are in test_nodes.py (QoS 0 across nodes) and the test below."""

from __future__ import annotations

import time

from lastwill.core.message import Message
from lastwill.edge.cluster_qos0 import Holders, decode_qos0, encode_qos0

from .nodes import wait_until


def test_a_message_goes_only_to_the_nodes_holding_subscribers_not_served_here():
    h = Holders()
    h.reading()
    h.replace(frozenset({1, 2, 3}), {"a": 1, "b": 2, "c": 3})
    assert h.destinations(["a", "b"], frozenset(), 1) == {2}  # never to this node (epoch 1) itself
    assert h.destinations(["b", "c"], frozenset({"c"}), 1) == {2}  # c was served here
    assert h.destinations(["a"], frozenset(), 1) == frozenset()
    # a subscriber whose node is not known yet: every other live node
    assert h.destinations(["a", "new"], frozenset(), 1) == {2, 3}
    h.held("new", 4)  # the hint of its CONNECT (a node the last read did not know)
    assert h.destinations(["new"], frozenset(), 1) == {4} and 4 in h.live


def test_a_hint_that_came_while_the_engine_was_read_is_not_lost():
    h = Holders()
    h.reading()
    h.held("moved", 3)  # connected on epoch 3 after the read saw it on epoch 2
    h.replace(frozenset({1, 2, 3}), {"moved": 2})
    assert h.by_client["moved"] == 3


def test_the_framing_keeps_what_a_subscriber_sees():
    m = Message("t/x", b"\x00payload", 0, True, {"user_property": [("k", "v")], "content_type": "a/b"}, "pub",
                110.0, True)
    data = encode_qos0(7, [m, Message("u", b"", 0, False)], 100.0) + encode_qos0(7, [Message("v", b"2", 0, False)],
                                                                                   100.0)
    out = decode_qos0(data, 200.0)
    assert [(x.topic, x.payload, x.retain, x.origin, x.is_will) for x in out] == [
        ("t/x", b"\x00payload", True, "pub", True), ("u", b"", False, None, False), ("v", b"2", False, None, False)]
    assert out[0].properties == {"user_property": [("k", "v")], "content_type": "a/b"}
    assert out[0].expiry_at == 210.0  # the 10 s left, counted again from the receiver's clock


def test_qos_0_reaches_only_the_nodes_with_matching_subscribers(cluster):
    """Three nodes, a QoS 0 subscriber on n2 only: n1's messages reach it, and n3 (no subscriber) is not
    sent any (its channel qos0:<epoch> gets no payload); n1 never gets its own."""
    from tests.integration.conftest import Observer
    from tests.rawclient import RawClient

    n1, n2, n3 = cluster.start("n1", "n2", "n3")
    o = Observer(n2.port, "q0/#", qos=0, version=5, client_id="sub")
    cluster.made.append(o)
    epochs = {nid: int(cluster.client.hget("lw:nodeid", nid)) for nid in ("n1", "n2", "n3")}
    counts = cluster.client.pubsub_numsub(*(f"lw:qos0:{e}" for e in epochs.values()))
    assert all(n == 1 for _, n in counts)  # one channel per node, each with its node as listener
    watch = cluster.client.pubsub()
    watch.subscribe(*(f"lw:qos0:{e}" for e in epochs.values()))
    pub = RawClient(n1.port, timeout=30)
    assert pub.connect("pub", 5).reason_code == 0
    got = []

    def delivered() -> bool:  # (n1 learns the subscription from the route log in its own time)
        pub.publish("q0/x", b"m", 0)
        try:
            got.append(o.get(0.3))
        except Exception:  # noqa: BLE001 - queue.Empty
            return False
        return True

    wait_until(delivered, 30, "a QoS 0 message from n1 at n2")
    seen = set()
    deadline = time.monotonic() + 30
    while ((msg := watch.get_message(timeout=0.5)) is not None or not seen) and time.monotonic() < deadline:
        if msg is not None and msg["type"] == "message":
            seen.add(msg["channel"].decode())
    assert seen == {f"lw:qos0:{epochs['n2']}"}
    watch.close()
    pub.close()
