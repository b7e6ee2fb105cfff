"""presence_offline_expiry on the core with a fake clock: the retained ``offline`` presence message
carries a Message Expiry Interval counted down while it waits, and leaves the retained messages when
it lapses (also after a restart); ``online`` never expires; 0 keeps the old behaviour."""

from __future__ import annotations

import pytest

from lastwill.config import Config
from lastwill.errors import ConfigError
from lastwill.storage.memory import MemoryStorage
from tests.core.harness import Harness

PRESENCE = {"presence_topic": "presence/{client_id}", "node_name": "n1"}


def test_offline_presence_expires_and_leaves_the_retained_store_MQTT_3_3_2_5():
    h = Harness(presence_offline_expiry=60, **PRESENCE)
    h.connect("dev").drop()
    msg = h.core.retained.get("presence/dev")
    assert msg.payload == b"offline"
    h.advance(59.9)
    late = h.subscriber("presence/dev", client_id="late")
    [m] = late.messages()
    assert (m.payload, m.retain) == (b"offline", True)
    h.advance(0.1)  # 60 s after the disconnect: gone from the store, not only from deliveries
    assert h.core.retained.get("presence/dev") is None
    later = h.subscriber("presence/dev", client_id="later")
    assert later.messages() == []


def test_offline_presence_message_expiry_counts_down_for_mqtt5_subscribers_MQTT_3_3_2_6():
    h = Harness(presence_offline_expiry=300, **PRESENCE)
    live = h.subscriber("presence/dev", client_id="live")
    dev = h.connect("dev")
    [online] = live.messages()
    assert online.payload == b"online" and "message_expiry_interval" not in online.properties
    dev.drop()
    [offline] = live.messages()
    assert offline.payload == b"offline" and offline.properties["message_expiry_interval"] == 300
    h.advance(100)
    [m] = h.subscriber("presence/dev", client_id="late").messages()
    assert m.properties["message_expiry_interval"] == 200  # received value minus the time it waited


def test_online_presence_never_expires():
    h = Harness(presence_offline_expiry=5, **PRESENCE)
    h.connect("dev")
    h.advance(3600)
    assert h.core.retained.get("presence/dev").payload == b"online"


def test_reconnect_replaces_offline_and_its_expiry_does_not_remove_online():
    h = Harness(presence_offline_expiry=10, **PRESENCE)
    h.connect("dev").drop()
    h.advance(5)
    h.connect("dev")
    h.advance(10)  # the offline message's deadline passes: the online one stays
    assert h.core.retained.get("presence/dev").payload == b"online"


def test_offline_presence_kept_without_the_setting():
    h = Harness(**PRESENCE)
    h.connect("dev").drop()
    h.advance(10 * 86400)
    m = h.core.retained.get("presence/dev")
    assert m.payload == b"offline" and m.expiry_at is None


def test_offline_presence_expiry_survives_a_restart():
    h = Harness(store=MemoryStorage(), presence_offline_expiry=60, **PRESENCE)
    h.connect("dev").drop()
    h.advance(20)
    h2 = h.restart(downtime=30, crashed=False, presence_offline_expiry=60, **PRESENCE)
    assert h2.core.retained.get("presence/dev").payload == b"offline"
    h2.advance(9.9)
    assert h2.core.retained.get("presence/dev") is not None
    h2.advance(0.1)  # 20 + 30 + 10: the 60 s are over, counted across the downtime
    assert h2.core.retained.get("presence/dev") is None
    h2.commit()
    assert "presence/dev" not in h2.store.load().retained


@pytest.mark.parametrize("value", [-1, 2**32, "soon", True])
def test_presence_offline_expiry_must_be_seconds(value):
    with pytest.raises(ConfigError, match="presence_offline_expiry"):
        Config(presence_offline_expiry=value).validate()
