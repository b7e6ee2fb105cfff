"""WebSocket listeners (ws_listen, wss_listen): paho-mqtt's websockets transport, MQTT.js in Node (the
browser-grade client), and a raw wsproto client for the rules of the MQTT specs' chapter 6: binary
frames only [MQTT-6.0.0-1], frames and packets independent [MQTT-6.0.0-2], the "mqtt" subprotocol
[MQTT-6.0.0-3] [MQTT-6.0.0-4]. Wills end to end: a client that dies over a WebSocket gets its will
published to a plain TCP subscriber."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from wsproto.events import BytesMessage, TextMessage

from tests.integration.certs import make_certs
from tests.integration.transports import Client, RawWebSocket, wait_log
from tests.rawbytes import DISCONNECT, PINGREQ, PINGRESP, connect_packet, publish_packet, subscribe_packet

pytestmark = pytest.mark.integration

MQTTJS = Path(__file__).parent / "mqttjs"
CONNACK_OK_V311 = b"\x20\x02\x00\x00"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def ws_broker(broker_factory, certs):
    """A broker with a plain TCP, a ws and a wss listener."""
    def make(**settings):
        settings.setdefault("tls_cert", str(certs.server_cert))
        settings.setdefault("tls_key", str(certs.server_key))
        return broker_factory(ws_listen=["127.0.0.1:0"], wss_listen=["127.0.0.1:0"], **settings)
    return make


@pytest.fixture
def lastwill_log(caplog):
    caplog.set_level(logging.INFO, logger="lastwill")
    return caplog


def ws_port(b) -> int:
    return b.broker.ports("ws")[0]


def wss_port(b) -> int:
    return b.broker.ports("wss")[0]


# ---- paho-mqtt, transport="websockets" ----------------------------------------------------------
@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
def test_paho_websockets_publish_subscribe(ws_broker, certs, observer_factory, version, secure):
    b = ws_broker()
    obs = observer_factory(b.port, "web/#")  # a plain TCP subscriber sees it too
    port, tls = (wss_port(b), {"ca": certs.ca}) if secure else (ws_port(b), None)
    c = Client(port, f"paho-ws-{version}", version=version, transport="websockets", tls=tls)
    assert c.connack == 0
    c.subscribe("web/echo")
    c.publish("web/echo", b"over a WebSocket")
    m = c.wait_message()
    assert (m.topic, m.payload) == ("web/echo", b"over a WebSocket")
    assert obs.get().payload == b"over a WebSocket"
    c.disconnect()


@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("secure", [False, True], ids=["ws", "wss"])
def test_paho_websockets_crash_publishes_the_will_MQTT_3_1_2_8(ws_broker, certs, observer_factory, version,
                                                                secure):
    b = ws_broker()
    obs = observer_factory(b.port, "dead/#")
    port, tls = (wss_port(b), {"ca": certs.ca}) if secure else (ws_port(b), None)
    c = Client(port, f"ws-crash-{version}", version=version, transport="websockets", tls=tls,
               will=("dead/ws", b"ws client gone", 1))
    c.crash()  # the socket closes: no DISCONNECT, no WebSocket Close frame
    m = obs.get()
    assert (m.topic, m.payload, m.qos) == ("dead/ws", b"ws client gone", 1)
    obs.expect_none(0.5)  # exactly once [MQTT-3.1.2-10]


def test_paho_websockets_clean_disconnect_publishes_no_will_MQTT_3_14_4_3(ws_broker, observer_factory):
    b = ws_broker()
    obs = observer_factory(b.port, "dead/#")
    c = Client(ws_port(b), "ws-clean", transport="websockets", will=("dead/ws", b"should not", 1))
    c.disconnect()
    obs.expect_none(1.0)


def test_wss_client_certificate_and_cn_as_username(ws_broker, certs, observer_factory):
    b = ws_broker(tls_ca=str(certs.ca), tls_require_client_cert=True, tls_cert_cn_as_username=True)
    obs = observer_factory(b.port, "$SYS/brokers/+/clients/wss-cn/connected")
    c = Client(wss_port(b), "wss-cn", transport="websockets", username="mallory",
               tls={"ca": certs.ca, "cert": certs.client_cert, "key": certs.client_key})
    assert json.loads(obs.get().payload)["username"] == "sensor-7"
    c.disconnect()


def test_ws_password_authentication(ws_broker, tmp_path):
    """The password check (edge/security.py) pauses reading on the WebSocket transport too."""
    from lastwill.auth import hash_password

    pw = tmp_path / "passwords"
    pw.write_text(f"alice:{hash_password('wonderland', iterations=1000)}\n")
    b = ws_broker(password_file=str(pw))
    ok = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ws-alice", transport="websockets")
    ok.username_pw_set("alice", "wonderland")
    bad = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="ws-mallory", transport="websockets")
    bad.username_pw_set("alice", "guess")
    codes = {}
    for c in (ok, bad):
        c.on_connect = lambda cl, u, flags, rc, props: codes.setdefault(cl._client_id.decode(), rc.value)
        c.connect("127.0.0.1", ws_port(b))
    deadline = time.monotonic() + 5
    while len(codes) < 2:
        assert time.monotonic() < deadline, codes
        ok.loop(0.02)
        bad.loop(0.02)
    assert codes["ws-alice"] == 0
    # 3.1.1 return code 4, which paho reports as 0x86 Bad User Name or Password
    assert codes["ws-mallory"] == 0x86
    ok.disconnect()


# ---- MQTT.js in Node ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mqttjs():
    if shutil.which("node") is None:
        pytest.fail("node is missing: scripts/test.sh installs Debian's nodejs and npm")
    if not (MQTTJS / "node_modules" / "mqtt" / "package.json").is_file():
        pytest.fail("MQTT.js is missing: scripts/test.sh runs `npm ci` in tests/integration/mqttjs")

    def run(**opts) -> tuple[int, list[dict]]:
        proc = subprocess.run(["node", str(MQTTJS / "client.js"), json.dumps(opts)], capture_output=True, text=True,
                              timeout=30)
        events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        assert events, f"MQTT.js printed nothing (exit {proc.returncode}): {proc.stderr[-2000:]}"
        return proc.returncode, events
    return run


@pytest.mark.parametrize(("scheme", "version"), [("ws", 5), ("ws", 4), ("wss", 5), ("wss", 4)])
def test_mqttjs_publish_subscribe(ws_broker, certs, observer_factory, mqttjs, scheme, version):
    b = ws_broker()
    obs = observer_factory(b.port, "dead/#")
    port = ws_port(b) if scheme == "ws" else wss_port(b)
    host = "127.0.0.1" if scheme == "ws" else "localhost"
    rc, events = mqttjs(url=f"{scheme}://{host}:{port}/mqtt", protocolVersion=version, clientId=f"js-{scheme}-{version}",
                        will={"topic": "dead/js", "payload": "js gone", "qos": 1}, topic="js/echo",
                        mode="roundtrip", ca=str(certs.ca))
    kinds = [e["event"] for e in events]
    assert rc == 0, events
    assert events[0] == {"event": "connect", "sessionPresent": False, "reasonCode": 0}
    assert {"event": "subscribed", "granted": [1]} in events
    assert {"event": "message", "topic": "js/echo", "payload": "hello from MQTT.js"} in events
    assert kinds[-1] == "done"
    obs.expect_none(0.5)  # it ended with DISCONNECT: no will [MQTT-3.14.4-3]


@pytest.mark.parametrize("version", [5, 4])
def test_mqttjs_process_crash_publishes_the_will_MQTT_3_1_2_8(ws_broker, observer_factory, mqttjs, version):
    b = ws_broker()
    obs = observer_factory(b.port, "dead/#")
    rc, events = mqttjs(url=f"ws://127.0.0.1:{ws_port(b)}/mqtt", protocolVersion=version, clientId=f"js-crash-{version}",
                        will={"topic": "dead/js", "payload": f"js {version} gone", "qos": 1}, topic="js/x",
                        mode="crash")
    assert rc == 3 and events[-1] == {"event": "crashing"}, events
    m = obs.get()
    assert (m.topic, m.payload) == ("dead/js", f"js {version} gone".encode())
    obs.expect_none(0.5)


# ---- the subprotocol ------------------------------------------------------------------------------
def test_ws_server_selects_the_mqtt_subprotocol_MQTT_6_0_0_4(ws_broker):
    b = ws_broker()
    for offered in (["mqtt"], ["wamp", "mqtt", "mqttv3.1"]):
        ws = RawWebSocket(ws_port(b), subprotocols=offered)
        assert ws.accept is not None and ws.accept.subprotocol == "mqtt"
        ws.close()


def test_ws_protocol_3_1_clients_get_their_subprotocol(ws_broker):
    ws = RawWebSocket(ws_port(ws_broker()), subprotocols=["mqttv3.1"])
    assert ws.accept is not None and ws.accept.subprotocol == "mqttv3.1"
    ws.close()


@pytest.mark.parametrize("offered", [[], ["wamp"]])
def test_ws_client_not_offering_mqtt_refused_MQTT_6_0_0_3(ws_broker, lastwill_log, offered):
    b = ws_broker()
    ws = RawWebSocket(ws_port(b), subprotocols=offered)
    assert ws.accept is None and ws.reject is not None and ws.reject.status_code == 400
    assert b"the WebSocket subprotocol 'mqtt' must be offered" in ws.reject_body
    ws.wait_closed()
    wait_log(lastwill_log, "WebSocket upgrade from 127.0.0.1")
    assert b.call(lambda: len(b.broker.core.conns)) == 0  # the core never saw it


# ---- frames ---------------------------------------------------------------------------------------
def test_ws_text_frame_closes_the_connection_and_publishes_the_will_MQTT_6_0_0_1(ws_broker, observer_factory,
                                                                                  lastwill_log):
    b = ws_broker()
    obs = observer_factory(b.port, "dead/#")
    ws = RawWebSocket(ws_port(b))
    ws.send_frame(connect_packet("texter", will=("dead/texter", b"text frame")))
    assert ws.wait_bytes(4) == CONNACK_OK_V311
    ws.send_frame(publish_packet("dead/text", b"t"), text=True)  # a valid PUBLISH (ASCII), in a text frame
    ws.wait_closed()
    assert [c.code for c in ws.close_frames()] == [1003]
    m = obs.get()
    assert (m.topic, m.payload) == ("dead/texter", b"text frame")  # the will, not the PUBLISH
    obs.expect_none(0.5)
    wait_log(lastwill_log, "a WebSocket text frame")


def test_ws_server_sends_binary_frames_only_MQTT_6_0_0_1(ws_broker):
    b = ws_broker()
    ws = RawWebSocket(ws_port(b))
    ws.send_frame(connect_packet("binary") + subscribe_packet(1, "bin/t") + publish_packet("bin/t", b"x") + PINGREQ)
    ws.wait_bytes(4 + 5 + 10 + 2)
    data_frames = [e for e in ws.events if isinstance(e, (BytesMessage, TextMessage))]
    assert data_frames and all(isinstance(e, BytesMessage) for e in data_frames)
    ws.send_frame(DISCONNECT)
    ws.close()


def test_ws_packets_split_across_frames_MQTT_6_0_0_2(ws_broker):
    b = ws_broker()
    ws = RawWebSocket(ws_port(b))
    connect = connect_packet("splitter", keep_alive=30)
    # the CONNECT in three messages, cut inside the fixed header and inside the client id
    ws.send_frame(connect[:1])
    ws.send_frame(connect[1:7])
    ws.send_frame(connect[7:])
    assert ws.wait_bytes(4) == CONNACK_OK_V311
    # SUBSCRIBE in one message of three fragments (continuation frames), then PUBLISH + PINGREQ + the
    # first byte of another PINGREQ in one frame, then its last byte alone
    sub = subscribe_packet(7, "split/t")
    ws.send_frame(sub[:2], fin=False)
    ws.send_frame(sub[2:5], fin=False)
    ws.send_frame(sub[5:], fin=True)
    ws.send_frame(publish_packet("split/t", b"abc") + PINGREQ + PINGREQ[:1])
    ws.send_frame(PINGREQ[1:])
    suback = b"\x90\x03\x00\x07\x00"
    publish = publish_packet("split/t", b"abc")
    expected = CONNACK_OK_V311 + suback + publish + PINGRESP + PINGRESP
    assert ws.wait_bytes(len(expected)) == expected
    ws.send_frame(DISCONNECT)
    ws.close()


def test_ws_several_packets_in_one_frame_MQTT_6_0_0_2(ws_broker):
    b = ws_broker()
    ws = RawWebSocket(ws_port(b))
    ws.send_frame(connect_packet("bundler", version=5) + subscribe_packet(1, "b/t", version=5)
                  + publish_packet("b/t", b"one", version=5) + publish_packet("b/t", b"two", version=5) + PINGREQ)
    data = ws.wait_bytes(1)
    deadline = time.monotonic() + 5
    while data.count(b"b/t") < 2 or not data.endswith(PINGRESP):
        assert time.monotonic() < deadline, data
        data = ws.wait_bytes(len(data) + 1)
    assert data.startswith(b"\x20") and b"one" in data and b"two" in data and data.index(b"one") < data.index(b"two")
    ws.send_frame(DISCONNECT)
    ws.close()


def test_ws_ping_frame_answered(ws_broker):
    from wsproto.events import Ping

    ws = RawWebSocket(ws_port(ws_broker()))
    ws.send_raw(ws.ws.send(Ping(payload=b"are you there")))
    deadline = time.monotonic() + 5
    while not ws.pongs():
        assert time.monotonic() < deadline, "no Pong"
        ws._read()
    assert ws.pongs()[0].payload == b"are you there"
    ws.close()


def test_ws_close_frame_without_disconnect_publishes_the_will_MQTT_3_1_2_8(ws_broker, observer_factory, lastwill_log):
    from wsproto.events import CloseConnection

    b = ws_broker()
    obs = observer_factory(b.port, "dead/#")
    ws = RawWebSocket(ws_port(b))
    ws.send_frame(connect_packet("closer", will=("dead/closer", b"closed the WebSocket")))
    assert ws.wait_bytes(4) == CONNACK_OK_V311
    ws.send_raw(ws.ws.send(CloseConnection(code=1000)))  # a clean WebSocket close, but no MQTT DISCONNECT
    ws.wait_closed()
    assert obs.get().payload == b"closed the WebSocket"
    wait_log(lastwill_log, "WebSocket Close frame from the peer, code 1000")


def test_ws_disconnect_then_the_server_closes_with_no_will_MQTT_3_14_4_3(ws_broker, observer_factory):
    b = ws_broker()
    obs = observer_factory(b.port, "dead/#")
    ws = RawWebSocket(ws_port(b))
    ws.send_frame(connect_packet("leaver", will=("dead/leaver", b"no")))
    assert ws.wait_bytes(4) == CONNACK_OK_V311
    ws.send_frame(DISCONNECT)
    ws.wait_closed()
    obs.expect_none(0.5)


def test_ws_unmasked_frame_is_a_protocol_error(ws_broker, observer_factory, lastwill_log):
    b = ws_broker()
    obs = observer_factory(b.port, "dead/#")
    ws = RawWebSocket(ws_port(b))
    ws.send_frame(connect_packet("unmasked", will=("dead/unmasked", b"bad frame")))
    assert ws.wait_bytes(4) == CONNACK_OK_V311
    ws.send_raw(b"\x82\x02" + PINGREQ)  # a binary frame a client must mask (RFC 6455 5.1), unmasked
    ws.wait_closed()
    assert [c.code for c in ws.close_frames()] == [1002]
    assert obs.get().payload == b"bad frame"
    wait_log(lastwill_log, "bad WebSocket frame")
    assert Client(ws_port(b), "still-serving", transport="websockets").connack == 0


def test_ws_malformed_mqtt_inside_binary_frames_closes_MQTT_3_1_2_8(ws_broker, observer_factory):
    b = ws_broker()
    obs = observer_factory(b.port, "dead/#")
    ws = RawWebSocket(ws_port(b))
    ws.send_frame(connect_packet("garbage", will=("dead/garbage", b"malformed")))
    assert ws.wait_bytes(4) == CONNACK_OK_V311
    ws.send_frame(b"\x00\x00")  # packet type 0 is reserved
    ws.wait_closed()
    assert obs.get().payload == b"malformed"


# ---- the HTTP side --------------------------------------------------------------------------------
@pytest.mark.parametrize(("ws_path", "path", "accepted"), [
    ("/mqtt", "/mqtt", True), ("/mqtt", "/", True), ("/mqtt", "/mqtt?token=x", True), ("/mqtt", "/other", False),
    ("/devices", "/devices", True), ("/devices", "/mqtt", False),
])
def test_ws_paths(ws_broker, ws_path, path, accepted):
    b = ws_broker(ws_path=ws_path)
    ws = RawWebSocket(ws_port(b), path=path)
    if accepted:
        assert ws.accept is not None
        ws.send_frame(connect_packet("path"))
        assert ws.wait_bytes(4) == CONNACK_OK_V311
    else:
        assert ws.reject is not None and ws.reject.status_code == 404
        assert f"MQTT is at '{ws_path}'".encode() in ws.reject_body
    ws.close()


def test_ws_plain_http_request_refused(ws_broker, lastwill_log):
    b = ws_broker()
    with socket.create_connection(("127.0.0.1", ws_port(b)), timeout=5) as sock:
        sock.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n")
        response = b""
        while chunk := sock.recv(4096):
            response += chunk
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"not a WebSocket upgrade request" in response
    wait_log(lastwill_log, "refused: 400")
    assert Client(ws_port(b), "after-http", transport="websockets").connack == 0


def test_ws_oversized_http_request_refused(ws_broker):
    b = ws_broker()
    with socket.create_connection(("127.0.0.1", ws_port(b)), timeout=5) as sock:
        sock.sendall(b"GET /mqtt HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"a" * 100_000)
        response = b""
        try:
            while chunk := sock.recv(4096):
                response += chunk
        except ConnectionResetError:
            pass
    assert response.startswith(b"HTTP/1.1 400")


def test_ws_upgrade_timeout_closes_silent_connections(ws_broker, lastwill_log):
    b = ws_broker(connect_timeout=0.5)
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", ws_port(b)), timeout=5) as sock:
        assert sock.recv(10) == b""
    assert time.monotonic() - started < 3
    wait_log(lastwill_log, "no upgrade request within 0.5s")


def test_ws_connect_timeout_after_the_upgrade(ws_broker):
    """Upgraded but no CONNECT: the core's connect timeout closes it, as on TCP."""
    b = ws_broker(connect_timeout=0.5)
    ws = RawWebSocket(ws_port(b))
    started = time.monotonic()
    ws.wait_closed(3)
    assert time.monotonic() - started < 3


# ---- backpressure -----------------------------------------------------------------------------------
def test_ws_slow_subscriber_pauses_and_resumes(ws_broker):
    """A WebSocket subscriber that stops reading: its TCP transport fills, the core marks it paused
    (as for TCP), the broker does not buffer without bound, and it resumes when the reader drains."""
    b = ws_broker()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", ws_port(b)))
    ws = RawWebSocket(ws_port(b), sock=sock)
    ws.send_frame(connect_packet("slow-ws") + subscribe_packet(1, "flood/t"))
    ws.wait_bytes(4 + 5)

    def slow_conn():
        conns = [c for c in b.broker.core.conns.values() if c.client_id == "slow-ws"]
        if not conns:
            return None
        t = b.broker.server.transports[conns[0].conn_id]
        return conns[0].paused, t.get_write_buffer_size()

    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="flooder")
    pub.connect("127.0.0.1", b.port)
    pub.loop_start()
    try:
        payload = b"x" * 16384
        deadline = time.monotonic() + 20
        while not slow_conn()[0]:
            assert time.monotonic() < deadline, f"never paused: {slow_conn()}"
            for _ in range(50):
                pub.publish("flood/t", payload, 0)
            time.sleep(0.05)
        for _ in range(200):  # QoS 0 while paused is dropped, not buffered
            pub.publish("flood/t", payload, 0)
        time.sleep(0.5)
        paused, buffered = slow_conn()
        assert paused and buffered < 4 * 1024 * 1024, buffered
        # drain: the subscriber reads again
        deadline = time.monotonic() + 20
        while slow_conn()[0]:
            assert time.monotonic() < deadline, f"never resumed: {slow_conn()}"
            try:
                sock.recv(1 << 20)
            except TimeoutError:
                pass
    finally:
        pub.loop_stop()
        pub.disconnect()
        sock.close()
