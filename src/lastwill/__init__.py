"""lastwill: an MQTT 3.1.1 and 5.0 broker whose Last Will and Testament is exact, durable and visible."""

from __future__ import annotations

from .broker import Broker
from .config import Config
from .version import __version__

__all__ = ["Broker", "Config", "__version__"]
