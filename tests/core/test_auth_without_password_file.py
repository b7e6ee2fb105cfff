"""allow_anonymous = false without password_file: no user name can be verified, so no CONNECT is
accepted on a user name alone (docs/security.md "Anonymous clients"). Each is refused with CONNACK
0x87 Not authorized (3.1.1: return code 5), as mosquitto does; a client identified by its TLS
certificate (tls_cert_cn_as_username) is still let in. Start-up says so in one warning line
(tests/integration/test_auth_sockets.py)."""

from __future__ import annotations

import pytest

from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connect
from tests.core.harness import Client, Harness, will


@pytest.mark.parametrize("user,password", [("anyone", b"anything"), ("alice", None), ("", b"")])
def test_user_name_refused_0x87_without_password_file_v5_MQTT_3_1_4_2(user, password):
    h = Harness(allow_anonymous=False)
    c = h.connect("c", username=user, password=password, will=will(), expect=0x87)
    assert c.closed and "c" not in h.core.sessions and h.core.timeline.kinds("c") == ["refused"]
    assert "password_file" in c.connack.properties["reason_string"]
    assert h.core.stats["auth_refused"] == 1


def test_user_name_refused_return_code_5_without_password_file_v311_MQTT_3_2_2_5():
    h = Harness(allow_anonymous=False)
    c = h.connect("c", version=4, username="anyone", password=b"x", expect=0x87)
    assert c.closed and encode(c.connack, 4) == b"\x20\x02\x00\x05"


def test_anonymous_still_refused_and_user_names_still_taken_as_given_when_anonymous_is_allowed():
    h = Harness(allow_anonymous=False)
    assert h.connect("a", expect=0x87).closed
    h = Harness(allow_anonymous=True)
    assert not h.connect("c", username="anyone", password=b"x").closed


def test_client_identified_by_its_certificate_still_accepted_v5_MQTT_3_1_4_2():
    h = Harness(allow_anonymous=False, tls_cert_cn_as_username=True)
    conn_id = h.core.new_conn_id()
    c = h.clients[conn_id] = Client(h, conn_id)
    h.dispatch(h.core.open(conn_id, h.now, "test", cert_username="device-7"))
    c.send(Connect("dev", protocol_level=5, username="whoever"))
    (ack,) = c.take("Connack")
    assert ack.reason_code == 0 and h.core.sessions["dev"].username == "device-7"
    # on the same broker, a client without a certificate identity is refused, user name or not
    h.connect("other", username="device-7", expect=0x87)
