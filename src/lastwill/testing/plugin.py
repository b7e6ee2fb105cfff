"""The pytest plugin of lastwill (entry point ``pytest11``: loaded by pytest wherever lastwill is
installed; ``-p no:lastwill`` turns it off).

Fixtures:

``lastwill_broker``
    A started ``lastwill.testing.BrokerThread``, fresh for each test: 127.0.0.1, a free port
    (``lastwill_broker.port``), in memory, its log in ``lastwill_broker.records``; stopped after the test.

``lastwill_broker_factory``
    ``lastwill_broker_factory(**settings)`` starts one with settings of ``lastwill serve``
    (``max_keep_alive=30``, ``presence_topic="presence/{client_id}"``, ``data_dir=...``); every one
    started is stopped after the test.

The broker is imported when a fixture is used, not when pytest starts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


@pytest.fixture
def lastwill_broker() -> Iterator[Any]:
    from lastwill.testing import BrokerThread

    with BrokerThread() as broker:
        yield broker


@pytest.fixture
def lastwill_broker_factory() -> Iterator[Callable[..., Any]]:
    from lastwill.testing import BrokerThread

    started: list[BrokerThread] = []

    def make(**settings: Any) -> BrokerThread:
        broker = BrokerThread(**settings)
        started.append(broker)
        return broker.start()

    yield make
    for broker in started:
        broker.stop()
