"""Fixtures of the cluster engine tests: one real redis-server for the session (flushed before each
test), a fresh event loop per test; ``async def`` tests run on it, bounded in time."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from redis.asyncio import Redis

from lastwill.cluster.engine import ClusterSettings, RedisEngine

from .nodes import Cluster
from .redis_proc import RedisServer

TEST_TIMEOUT = 60.0  # seconds, for each async test


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster(redis_server, tmp_path):
    """Nodes on the session's redis-server (flushed), started by each test; what the test registered in
    ``cluster.made`` is closed, the nodes stopped, and no node may have logged a traceback."""
    if redis_server.proc is None:
        redis_server.start()
    c = Cluster(tmp_path, redis_server)
    c.client.flushall()
    c.made = []
    yield c
    for o in c.made:
        try:
            o.close()
        except Exception:  # noqa: BLE001
            pass
    c.stop()
    assert not c.tracebacks(), "\n".join(c.tracebacks())


@pytest.fixture
def loop():
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


# lease 1.5 s, beat 0.3 s, grace 0.5 s: the engine clock is moved by the tests (advance_clock)
SETTINGS = ClusterSettings(lease_ms=1500, beat_ms=300, grace_ms=500, recovery_grace_ms=0, reap_batch=500)


def make_engine(port: int, settings: ClusterSettings = SETTINGS, prefix: str = "lw:") -> RedisEngine:
    return RedisEngine(Redis(host="127.0.0.1", port=port), prefix=prefix, settings=settings)


@pytest.fixture
def engine(redis_server, loop):
    eng = make_engine(redis_server.port)
    loop.run_until_complete(eng.client.flushall())
    yield eng
    loop.run_until_complete(eng.client.aclose())


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    loop = pyfuncitem.funcargs["loop"]
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    loop.run_until_complete(asyncio.wait_for(pyfuncitem.obj(**kwargs), TEST_TIMEOUT))
    return True
