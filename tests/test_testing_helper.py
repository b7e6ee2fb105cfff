"""lastwill.testing: BrokerThread, and the pytest plugin (its fixtures, registered by the pytest11 entry
point) run in a separate pytest on a user's test file: the README's example, as written."""

from __future__ import annotations

import logging
import re
import socket
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from lastwill.errors import ConfigError
from lastwill.testing import BrokerThread

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Testing your MQTT clients", 1)[1]
    return re.search(r"```python\n(# test_device\.py.*?)```", section, re.S).group(1)


def connect(port: int, client_id: str) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    assert c.connect("127.0.0.1", port) == 0
    c.loop(0.2)
    return c


# ---- the plugin, in a pytest of its own -------------------------------------------------------------
def test_the_readme_example_passes_as_a_users_test(pytester):
    pytester.makepyfile(test_device=readme_example())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_each_test_gets_a_fresh_broker(pytester):
    pytester.makepyfile(test_fresh='''
        import queue
        import paho.mqtt.client as mqtt

        seen = []

        def client(port, client_id):
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
            c.connect("127.0.0.1", port)
            return c

        def test_one(lastwill_broker):
            seen.append((lastwill_broker, lastwill_broker.port))
            c = client(lastwill_broker.port, "one")
            c.publish("kept/here", b"retained", qos=1, retain=True).wait_for_publish(5)
            c.disconnect()
            assert lastwill_broker.config.memory and lastwill_broker.host == "127.0.0.1"

        def test_two(lastwill_broker):
            assert lastwill_broker is not seen[0][0]
            got = queue.Queue()
            c = client(lastwill_broker.port, "two")
            c.on_message = lambda cl, u, m: got.put(m.topic)
            c.subscribe("kept/#", qos=1)
            c.loop_start()
            lastwill_broker.wait_for_log("connect client_id=two")
            try:
                topic = got.get(timeout=1)
            except queue.Empty:
                topic = None
            c.loop_stop()
            assert topic is None  # the first test's retained message died with its broker
            assert not [line for line in lastwill_broker.log_lines() if "client_id=one" in line]
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_plugin_is_registered_by_its_entry_point(pytester):
    result = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*fixtures defined from lastwill.testing.plugin*", "lastwill_broker*",
                                 "lastwill_broker_factory*"])
    pytester.makepyfile(test_off="def test_off(lastwill_broker):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:lastwill", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'lastwill_broker' not found*"])


def test_a_failing_users_test_shows_the_brokers_log(pytester):
    pytester.makepyfile(test_fails='''
        import paho.mqtt.client as mqtt

        def test_fails(lastwill_broker):
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="shown-in-the-report")
            c.connect("127.0.0.1", lastwill_broker.port)
            lastwill_broker.wait_for_log("connect client_id=shown-in-the-report")
            assert False
    ''')
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    call = out.split("Captured log call", 1)[1].split("Captured log teardown", 1)[0]
    assert re.search(r"INFO +lastwill:\S+ connect client_id=shown-in-the-report from 127\.0\.0\.1:", call), out


# ---- BrokerThread -------------------------------------------------------------------------------------
def test_broker_thread_defaults_free_port_in_memory_and_stop():
    with BrokerThread() as b:
        assert b.port != 0 and b.host == "127.0.0.1" and b.config.memory and b.broker.storage is None
        connect(b.port, "c1").disconnect()
        b.wait_for_log("disconnect client_id=c1")
        assert b.call(lambda: sorted(b.broker.core.sessions)) == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", b.port), timeout=1)
    b.stop()  # again: nothing happens


def test_broker_thread_with_a_data_dir_keeps_a_store(tmp_path):
    with BrokerThread(data_dir=str(tmp_path / "data")) as b:
        assert not b.config.memory
    assert (tmp_path / "data" / "lastwill.db").exists()


def test_each_broker_thread_captures_its_own_log():
    with BrokerThread() as a, BrokerThread() as b:
        connect(a.port, "only-on-a").disconnect()
        a.wait_for_log("disconnect client_id=only-on-a")
        connect(b.port, "only-on-b").disconnect()
        b.wait_for_log("disconnect client_id=only-on-b")
        assert [r for r in a.records if "only-on-b" in r.getMessage()] == []
        assert [r for r in b.records if "only-on-a" in r.getMessage()] == []
        assert any(line.startswith("INFO lastwill: listening on 127.0.0.1:") for line in a.log_lines())


def test_wait_for_log_says_what_was_logged_instead():
    with BrokerThread() as b:
        with pytest.raises(AssertionError) as err:
            b.wait_for_log("never logged", timeout=0.2)
    assert "logged nothing containing 'never logged' within 0.2 s" in str(err.value)
    assert "INFO lastwill: listening on 127.0.0.1:" in str(err.value)


def test_call_returns_or_raises_on_the_brokers_loop():
    import threading

    with BrokerThread() as b:
        assert b.call(threading.get_ident) == b._thread.ident
        with pytest.raises(ZeroDivisionError):
            b.call(lambda: 1 / 0)


def test_the_lastwill_logger_level_is_put_back():
    logger = logging.getLogger("lastwill")
    before = logger.level
    with BrokerThread() as a:
        assert logger.getEffectiveLevel() <= logging.INFO
        with BrokerThread():
            pass
        assert logger.getEffectiveLevel() <= logging.INFO  # a is still running
        connect(a.port, "still-captured").disconnect()
        a.wait_for_log("disconnect client_id=still-captured")
    assert logger.level == before and logger.handlers == []


def test_a_bad_setting_fails_at_once_and_a_busy_port_at_start():
    with pytest.raises(ConfigError, match="did you mean 'max_keep_alive'"):
        BrokerThread(max_keepalive=10)
    with BrokerThread() as a:
        busy = BrokerThread(listen=[f"127.0.0.1:{a.port}"])
        with pytest.raises(OSError):
            busy.start()
        busy.stop()
    assert logging.getLogger("lastwill").handlers == []
