"""Authentication and authorization rules found by black-box testing, on real `lastwill serve` processes.

* allow_anonymous = false without password_file: every CONNECT is refused (0x87, 3.1.1 return code 5),
  and start-up says so in one warning line (the flag and the config file key alike).
* A message queued for a persistent subscriber whose read access a SIGHUP reload of acl_file took away
  is not delivered when it reconnects.
"""

from __future__ import annotations

import queue
import signal

import paho.mqtt.client as mqtt
import pytest

from lastwill.codec.packets import Connect
from tests.integration.serve import ServeProcess
from tests.integration.test_auth_sockets import raw_connack
from tests.integration.test_durability import BrokerProcess, free_port, wait_until

pytestmark = pytest.mark.integration

WARNING = ("allow_anonymous is false and password_file is not set: no user name can be verified, so every "
           "CONNECT is refused (0x87 Not authorized, 3.1.1 return code 5)")


@pytest.mark.parametrize("how", ["flag", "config"])
def test_serve_without_password_file_refuses_every_connect_when_anonymous_is_off(tmp_path, how):
    if how == "flag":
        args = ["--no-allow-anonymous"]
    else:
        conf = tmp_path / "lastwill.toml"
        conf.write_text("allow_anonymous = false\n")
        args = ["--config", str(conf)]
    broker = ServeProcess(tmp_path / "broker.log", *args).start()
    try:
        assert wait_until(lambda: WARNING in broker.log_text(), 10), broker.log_text()[-2000:]
        assert broker.log_text().count(WARNING) == 1
        user = raw_connack(broker.port, Connect("u4", protocol_level=4, username="anyone", password=b"x"))[0]
        assert user == b"\x20\x02\x00\x05"  # CONNACK, return code 5: not authorized
        anon = raw_connack(broker.port, Connect("a4", protocol_level=4))[0]
        assert anon == b"\x20\x02\x00\x05"
        v5 = raw_connack(broker.port, Connect("u5", protocol_level=5, username="root", password=b"x",
                                              properties={"request_problem_information": 0}))[0]
        assert v5 == b"\x20\x03\x00\x87\x00"  # 0x87 Not authorized
        assert "connect refused client_id=u5" in broker.log_text()
        assert broker.problems() == []
    finally:
        broker.stop()


ACL_BEFORE = "user bob\ntopic read #\n\nuser pub\ntopic write #\n"
ACL_AFTER = "user bob\ntopic read public/#\n\nuser pub\ntopic write #\n"


def _client(port: int, client_id: str, user: str, clean: bool = True) -> tuple[mqtt.Client, queue.Queue]:
    got: queue.Queue = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                    clean_session=clean)
    c.username_pw_set(user)  # no password_file: on a loopback listener the user name is taken as given
    connected = queue.Queue()
    c.on_connect = lambda cl, u, flags, rc, props: connected.put(rc)
    c.on_message = lambda cl, u, m: got.put((m.topic, m.payload))
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    assert connected.get(timeout=10) == 0
    return c, got


def test_sighup_acl_reload_drops_queued_messages_no_longer_readable(tmp_path):
    acl = tmp_path / "acl"
    acl.write_text(ACL_BEFORE)
    port = free_port()
    log = tmp_path / "broker.log"
    broker = BrokerProcess(port, tmp_path / "data", log, acl_file=acl)
    broker.start()
    try:
        bob, got = _client(port, "bob", "bob", clean=False)
        subscribed = queue.Queue()
        bob.on_subscribe = lambda *a: subscribed.put(1)
        bob.subscribe("#", 1)
        subscribed.get(timeout=10)
        bob.disconnect()
        bob.loop_stop()
        pub, _ = _client(port, "pub", "pub")
        infos = [pub.publish(f"secret/{i}", b"s%d" % i, qos=1) for i in range(3)]
        for info in infos:
            info.wait_for_publish(10)
        acl.write_text(ACL_AFTER)
        broker.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reloaded acl_file" in log.read_text(), 10), log.read_text()[-2000:]
        bob, got = _client(port, "bob", "bob", clean=False)
        pub.publish("public/now", b"after", qos=1).wait_for_publish(10)
        # the queued messages would have come first, before anything published after the reconnect
        assert got.get(timeout=10) == ("public/now", b"after")
        assert got.empty()
        assert wait_until(lambda: "3 queued or unacknowledged message(s) dropped" in log.read_text(), 5)
        for c in (bob, pub):
            c.disconnect()
            c.loop_stop()
    finally:
        broker.terminate()
    assert broker.proc.returncode == 0
