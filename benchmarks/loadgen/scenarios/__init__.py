"""One module per scenario; each exports one ``async def NAME(args) -> dict`` (the JSON result)."""

from __future__ import annotations

from .connect_hold import connect_hold
from .connect_rate import connect_rate
from .delayed_will import delayed_will
from .fanin_qos0 import fanin_qos0
from .fanin_qos1 import fanin_qos1
from .fanin_qos1_persistent import fanin_qos1_persistent
from .fanout_qos0 import fanout_qos0
from .latency_qos1 import latency_qos1
from .will_punctuality import will_punctuality
from .will_under_load import will_under_load
from .wills_drop_qos1 import wills_drop_qos1

SCENARIOS = {
    "will_under_load": will_under_load,
    "fanin_qos0": fanin_qos0,
    "fanout_qos0": fanout_qos0,
    "fanin_qos1": fanin_qos1,
    "connect_rate": connect_rate,
    "will_punctuality": will_punctuality,
    "latency_qos1": latency_qos1,
    "fanin_qos1_persistent": fanin_qos1_persistent,
    "connect_hold": connect_hold,
    "wills_drop_qos1": wills_drop_qos1,
    "delayed_will": delayed_will,
}
