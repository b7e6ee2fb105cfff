"""Authentication and authorization in the core (docs/security.md), with the fake link and clock.

The harness answers the core's Authenticate actions with a real PasswordFile (few iterations), as
the edge does from its threads; ``hold_auth`` keeps the answers back to see what waits meanwhile.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lastwill.auth import Acl, PasswordFile, hash_password
from lastwill.codec.encoder import encode
from lastwill.codec.packets import Connack, Connect, Disconnect, Publish, Pubrel, Subscribe, Subscription
from lastwill.core.actions import Authenticate
from lastwill.storage.memory import MemoryStorage
from tests.codec.strategies import client_packets, examples
from tests.core.harness import Harness, will

USERS = {"alice": "wonderland", "bob": "builder"}


def passwords(**users) -> PasswordFile:
    users = users or USERS
    return PasswordFile.parse("".join(f"{u}:{hash_password(p, 1000)}\n" for u, p in users.items()), "pw")


def node(acl: str | None = None, store=None, **config) -> Harness:
    """A broker with password_file (alice, bob) and, if given, this ACL."""
    config.setdefault("password_file", "pw")
    return Harness(store=store, passwords=passwords(), acl=Acl.parse(acl, "acl") if acl is not None else None,
                   **config)


def login(h: Harness, client_id: str, user: str | None, version: int = 5, **kw):
    pw = USERS.get(user, "x").encode() if user else None
    return h.connect(client_id, version=version, username=user, password=pw, **kw)


def connack_on_the_wire(connack, version: int) -> int:
    """The reason code (5.0) or return code (3.1.1) byte as the encoder writes it."""
    return encode(connack, version)[3]


# ==== authentication ==============================================================================


@pytest.mark.parametrize("version,code", [(5, 0x86), (4, 4)])
def test_bad_password_refused_with_each_versions_code(version, code):
    h = node()
    c = h.connect("c1", version=version, username="alice", password=b"wrong", expect=0x86)
    assert c.closed and connack_on_the_wire(c.connack, version) == code
    assert not c.connack.session_present and "c1" not in h.core.sessions
    assert h.core.timeline.kinds("c1") == ["refused"]


def test_bad_password_refused_v5_MQTT_3_1_4_2():
    h = node()
    c = h.connect("c1", username="alice", password=b"Wonderland", expect=0x86)
    assert c.closed and c.connack.properties.get("reason_string") == "bad user name or password (user 'alice')"


def test_bad_password_refused_v311_MQTT_3_2_2_5():
    h = node()
    c = h.connect("c1", version=4, username="bob", password=b"", expect=0x86)
    assert c.closed and connack_on_the_wire(c.connack, 4) == 4


def test_unknown_user_gets_the_same_answer_as_a_wrong_password_v5_MQTT_3_1_4_2():
    h = node()
    wrong = h.connect("c1", username="alice", password=b"nope", expect=0x86)
    unknown = h.connect("c2", username="zelda", password=b"nope", expect=0x86)  # as long a name as alice
    assert encode(wrong.connack, 5) == encode(unknown.connack, 5).replace(b"'zelda'", b"'alice'")
    assert h.core.stats["auth_refused"] == 2


def test_right_password_accepted_and_user_name_is_the_identity():
    h = node()
    c = login(h, "c1", "alice")
    assert not c.closed
    assert h.core.conns[c.conn_id].username == "alice" and h.core.sessions["c1"].username == "alice"


def test_user_name_without_password_refused_v5_MQTT_3_1_4_2():
    h = node()
    h.connect("c1", username="alice", expect=0x86)


@pytest.mark.parametrize("version,code", [(5, 0x87), (4, 5)])
def test_anonymous_refused_when_not_allowed_with_each_versions_code(version, code):
    h = node(allow_anonymous=False)
    c = h.connect("anon", version=version, expect=0x87)
    assert c.closed and connack_on_the_wire(c.connack, version) == code


def test_anonymous_refused_v5_MQTT_3_1_4_2():
    h = node(allow_anonymous=False)
    c = h.connect("anon", password=b"token", expect=0x87)  # a password without a user name: still anonymous
    assert c.closed


def test_anonymous_allowed_by_default_on_loopback_listeners_only():
    assert not Harness(listen=["127.0.0.1:1883", "[::1]:1883"]).connect("a").closed
    h = Harness(listen=["0.0.0.0:1883"], password_file="pw", passwords=passwords())
    h.connect("a", expect=0x87)
    h = Harness(listen=["0.0.0.0:1883"], allow_anonymous=True)
    assert not h.connect("a").closed


def test_without_password_file_a_user_name_is_taken_as_given():
    h = Harness()
    c = h.connect("c", username="anyone", password=b"whatever")
    assert not c.closed and h.core.sessions["c"].username == "anyone"


def test_packets_sent_right_after_connect_wait_for_the_password_check():
    h = node()
    w = h.subscriber("t/#")
    h.hold_auth = True
    c = h.open()
    c.send(Connect(client_id="fast", username="alice", password=b"wonderland", protocol_level=5))
    c.send(Subscribe(1, [Subscription("t/fast", 1)]))
    c.send(Publish("t/x", b"early", 1, False, False, 7, {}))
    assert c.inbox == [] and w.messages() == []  # nothing happens before the answer
    assert [type(a) for a in h.pending_auth] == [Authenticate] and "wonderland" not in repr(h.pending_auth[0])
    h.finish_auth()
    assert [type(p).__name__ for p in c.take()] == ["Connack", "Suback", "Puback"]  # in order, CONNACK first
    assert [m.payload for m in w.messages()] == [b"early"]


def test_packets_after_a_refused_connect_are_dropped():
    h = node()
    w = h.subscriber("t/#")
    h.hold_auth = True
    c = h.open()
    c.send(Connect(client_id="x", username="alice", password=b"bad", protocol_level=5,
                   will=will("t/will")))
    c.send(Publish("t/x", b"early", 0, False, False, None, {}))
    h.finish_auth()
    assert [p.reason_code for p in c.take("Connack")] == [0x86] and c.closed
    assert w.messages() == [] and "x" not in h.core.sessions


def test_protocol_error_after_connect_handled_once_accepted_will_published_v5_MQTT_3_1_2_8():
    """A malformed packet right behind the CONNECT: once the password is right, the connection is
    accepted, then closed for the error, and the will is published, as without a password check."""
    h = node()
    w = h.subscriber("dead/#")
    h.hold_auth = True
    c = h.open()
    raw = encode(Connect(client_id="dev", username="bob", password=b"builder", protocol_level=5,
                         will=will()), 5)
    c.send_bytes(raw + b"\x60\x02\x00")  # a PUBREL cut short, then more garbage
    c.send_bytes(b"\xff\xff\xff")
    assert c.inbox == []
    h.finish_auth()
    kinds = [type(p).__name__ for p in c.take()]
    assert kinds[0] == "Connack" and c.closed
    assert [m.payload for m in w.messages()] == [b"gone"]


def test_connect_timeout_while_the_password_check_runs_closes_without_will():
    h = node(connect_timeout=5)
    h.hold_auth = True
    c = h.open()
    c.send(Connect(client_id="slow", username="alice", password=b"wonderland", will=will(), protocol_level=5))
    h.advance(5)
    assert c.closed and c.inbox == []
    h.finish_auth()  # the answer comes too late: nothing happens
    assert c.inbox == [] and "slow" not in h.core.sessions


def test_connection_lost_while_the_password_check_runs():
    h = node()
    h.hold_auth = True
    c = h.open()
    c.send(Connect(client_id="gone", username="alice", password=b"wonderland", protocol_level=5, will=will()))
    c.drop()
    h.finish_auth()
    assert "gone" not in h.core.sessions and h.core.conns == {}


def test_too_many_packets_while_the_password_check_runs_closes(monkeypatch):
    from lastwill.core import connection
    monkeypatch.setattr(connection, "MAX_HELD", 3)
    h = node()
    h.hold_auth = True
    c = h.open()
    c.send(Connect(client_id="flood", username="alice", password=b"wonderland", protocol_level=5))
    for _ in range(3):
        c.send(Publish("t", b"x", 0, False, False, None, {}))
    assert c.closed and c.inbox == []


def test_session_of_another_user_is_not_resumed():
    h = node(acl="user alice\ntopic readwrite #\nuser bob\ntopic readwrite #\n")
    a = login(h, "shared-id", "alice", clean_start=False, session_expiry_interval=600)
    a.subscribe("alice/#")
    a.disconnect()
    b = login(h, "shared-id", "bob", clean_start=False, session_expiry_interval=600)
    assert not b.connack.session_present
    assert h.core.sessions["shared-id"].subscriptions == {} and h.core.sessions["shared-id"].username == "bob"
    b.disconnect()
    again = login(h, "shared-id", "bob", clean_start=False, session_expiry_interval=600)
    assert again.connack.session_present  # the same user resumes it


# ==== PUBLISH =====================================================================================

ACL = """\
topic read public/#
user alice
topic readwrite alice/#
topic write shared/in
topic read shared/out/#
topic deny alice/secret
topic write dead/alice
user bob
topic read #
topic read $SYS/#
topic write dead/bob
pattern readwrite dev/%c/#
"""


@pytest.mark.parametrize("qos,ack", [(1, "Puback"), (2, "Pubrec")])
def test_publish_denied_acknowledged_0x87_v5_MQTT_3_4_2_1_MQTT_3_5_2_1(qos, ack):
    h = node(ACL)
    bob = login(h, "bob", "bob")
    bob.subscribe("#")
    c = login(h, "a", "alice")
    c.publish("public/x", b"no", qos=qos, retain=True)
    acks = c.take(ack)
    assert [(a.reason_code, a.properties.get("reason_string")) for a in acks] == [(0x87, "not authorized")]
    assert bob.messages() == [] and h.core.retained.get("public/x") is None
    assert not c.closed and h.core.stats["publish_denied"] == 1
    c.publish("alice/ok", b"yes", qos=qos)
    assert [a.reason_code for a in c.take(ack)] == [0]
    assert [m.payload for m in bob.messages()] == [b"yes"]


def test_publish_denied_qos0_dropped_v5():
    h = node(ACL)
    bob = login(h, "bob", "bob")
    bob.subscribe("#")
    c = login(h, "a", "alice")
    c.publish("alice/secret", b"no", qos=0)
    assert bob.messages() == [] and c.take() == [] and not c.closed


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_denied_dropped_and_acknowledged_normally_v311_MQTT_3_3_5_2(qos):
    h = node(ACL)
    bob = login(h, "bob", "bob")
    bob.subscribe("#")
    c = login(h, "a", "alice", version=4)
    pid = c.publish("public/x", b"no", qos=qos)
    assert bob.messages() == [] and not c.closed
    if qos == 1:
        assert [(a.packet_id, a.reason_code) for a in c.take("Puback")] == [(pid, 0)]
    elif qos == 2:
        assert [(a.packet_id, a.reason_code) for a in c.take("Pubrec")] == [(pid, 0)]
        c.send(Pubrel(pid))
        assert [a.packet_id for a in c.take("Pubcomp")] == [pid]
    assert c.take() == []


def test_publish_by_pattern_client_id():
    h = node(ACL)
    bob = login(h, "bob", "bob")
    bob.subscribe("dev/#")
    login(h, "dev-7", "alice").publish("dev/dev-7/state", b"up", qos=1)
    login(h, "dev-8", "alice").publish("dev/dev-7/state", b"forged", qos=1)
    assert [m.payload for m in bob.messages()] == [b"up"]


def test_denied_publish_log_is_throttled(caplog):
    h = node(ACL)
    c = login(h, "a", "alice")
    with caplog.at_level("INFO", logger="lastwill"):
        for _ in range(50):
            c.publish("public/x", b"no", qos=0)
    assert sum("not authorized by acl_file" in r.getMessage() for r in caplog.records) == 1
    assert h.core.stats["publish_denied"] == 50


# ==== SUBSCRIBE ===================================================================================


def test_subscribe_denied_per_filter_v5_MQTT_3_8_4_6_MQTT_3_9_3_2():
    h = node(ACL)
    c = login(h, "a", "alice")
    codes = c.subscribe("alice/#", "shared/in", "shared/out/+", "shared/#", "alice/secret", "$share/g/alice/+",
                        qos=1)
    assert codes == [1, 0x87, 1, 0x87, 0x87, 1]
    assert set(h.core.sessions["a"].subscriptions) == {"alice/#", "shared/out/+", "$share/g/alice/+"}


def test_subscribe_denied_per_filter_v311_MQTT_3_8_4_5_MQTT_3_9_3_2():
    h = node(ACL)
    c = login(h, "a", "alice", version=4)
    c.send(Subscribe(5, [Subscription("alice/x", 1), Subscription("public/#", 0)]))
    suback = c.take("Suback")[0]
    assert suback.reason_codes == [1, 0x87] and encode(suback, 4)[-2:] == b"\x01\x80"  # 3.1.1: 0x80 Failure


def test_wildcard_filter_granted_only_if_a_read_rule_covers_it():
    h = node("topic read sensors/+/temp\ntopic read logs/#\n", allow_anonymous=True)
    c = h.connect("anon")
    assert c.subscribe("sensors/+/temp", "sensors/7/temp", "sensors/#", "sensors/+/+", "logs/+/x/#", "#",
                       qos=0) == [0, 0, 0x87, 0x87, 0, 0x87]


def test_delivery_needs_read_permission_deny_carves_out():
    h = node("user alice\ntopic read alice/#\ntopic deny alice/secret\nuser bob\ntopic write #\n")
    a = login(h, "a", "alice")
    assert a.subscribe("alice/#") == [1]  # granted, though alice/secret inside it is denied
    bob = login(h, "writer", "bob")
    bob.publish("alice/secret", b"hidden", qos=1)
    bob.publish("alice/open", b"seen", qos=1)
    assert [p.reason_code for p in bob.take("Puback")] == [0, 0]
    assert [m.payload for m in a.messages()] == [b"seen"]
    assert h.core.stats["dropped_not_authorized"] == 1


def test_retained_message_not_readable_is_not_sent_at_subscribe():
    h = node("topic readwrite #\nuser alice\ntopic read r/#\ntopic deny r/private\n")
    anon = h.connect("anon")
    anon.publish("r/public", b"p", retain=True)
    anon.publish("r/private", b"s", retain=True)
    a = login(h, "a", "alice")
    assert a.subscribe("r/#") == [1]
    assert [m.topic for m in a.messages()] == ["r/public"]


def test_acl_reload_revokes_read_without_dropping_the_connection():
    h = node("topic readwrite #\n")
    sub = h.connect("sub")
    assert sub.subscribe("t/#") == [1]
    pub = h.connect("pub")
    pub.publish("t/1", b"before")
    assert [m.payload for m in sub.messages()] == [b"before"]
    h.core.set_acl(Acl.parse("topic write #\n", "acl"))  # SIGHUP: nobody may read any more
    pub.publish("t/1", b"after")
    assert sub.messages() == [] and not sub.closed and not pub.closed


def test_shared_subscription_delivers_to_a_member_that_may_read():
    h = node("user alice\ntopic readwrite #\nuser bob\ntopic read other/#\n")
    a = login(h, "a", "alice")
    b = login(h, "b", "bob")
    assert a.subscribe("$share/g/t/#") == [1]
    assert b.subscribe("$share/g/t/#") == [0x87]  # bob's rules cover other/#, not t/#
    h.core.set_acl(Acl.parse("user alice\ntopic readwrite #\nuser bob\ntopic read t/#\n", "acl"))
    assert b.subscribe("$share/g/t/#") == [1]
    h.core.set_acl(Acl.parse("user alice\ntopic readwrite #\nuser bob\n", "acl"))  # bob loses read
    for i in range(4):
        a.publish("t/x", str(i).encode(), qos=1)
    assert len(a.messages()) == 4 and b.messages() == []


def test_sys_events_need_a_dollar_sys_read_rule_v5_MQTT_4_7_2_1():
    h = node("user bob\ntopic read #\nuser alice\ntopic read #\ntopic read $SYS/#\n")
    bob = login(h, "bob", "bob")
    assert bob.subscribe("$SYS/#") == [0x87]
    alice = login(h, "alice-1", "alice")
    assert alice.subscribe("$SYS/#") == [1]
    login(h, "someone", "bob")
    assert [m.topic.rsplit("/", 1)[-1] for m in alice.messages()] == ["connected"]


# ==== wills =======================================================================================


@pytest.mark.parametrize("version,code", [(5, 0x87), (4, 5)])
def test_will_not_authorized_refused_at_connect_with_each_versions_code(version, code):
    h = node(ACL)
    c = login(h, "a", "alice", version=version, will=will("dead/bob"), expect=0x87)
    assert c.closed and connack_on_the_wire(c.connack, version) == code
    assert "a" not in h.core.sessions and h.core.timeline.kinds("a") == ["refused"]
    assert "not authorized to publish the will on 'dead/bob'" in h.core.timeline.events("a")[0].detail


def test_will_not_authorized_refused_at_connect_v5_MQTT_3_1_4_2():
    h = node(ACL)
    c = login(h, "a", "alice", will=will("dead/bob"), expect=0x87)
    assert "not authorized to publish the will" in c.connack.properties["reason_string"]
    assert not login(h, "a", "alice", will=will("dead/alice")).closed  # its own topic: accepted


def test_will_not_authorized_refused_at_connect_v311_MQTT_3_2_2_5():
    h = node(ACL)
    c = login(h, "a", "alice", version=4, will=will("public/x"), expect=0x87)
    assert connack_on_the_wire(c.connack, 4) == 5


def test_will_checked_again_when_published_after_acl_reload():
    h = node(ACL)
    bob = login(h, "bob", "bob")
    bob.subscribe("#")
    c = login(h, "a", "alice", will=will("dead/alice"))
    h.core.set_acl(Acl.parse(ACL.replace("topic write dead/alice\n", ""), "acl"))  # SIGHUP meanwhile
    c.drop()
    assert bob.messages() == []
    assert h.core.timeline.kinds("a")[-2:] == ["connection-ended", "denied"]
    event = h.core.timeline.events("a")[-1]
    assert event.data["reason"] == "not_authorized" and "does not let user 'alice'" in event.detail
    assert h.core.wills.denied == 1 and h.core.wills.published == 0
    assert h.core.sessions.get("a") is None or h.core.sessions["a"].will is None  # gone, never later


def test_delayed_will_checked_when_its_delay_ends():
    h = node(ACL)
    bob = login(h, "bob", "bob")
    bob.subscribe("#")
    c = login(h, "a", "alice", will=will("dead/alice", will_delay_interval=10), session_expiry_interval=60)
    c.drop()
    h.advance(5)
    h.core.set_acl(Acl.parse(ACL.replace("topic write dead/alice\n", ""), "acl"))
    h.advance(5)
    assert bob.messages() == [] and h.core.timeline.kinds("a")[-1] == "denied"
    h.core.set_acl(Acl.parse(ACL, "acl"))
    h.advance(100)
    assert bob.messages() == []  # dropped for good, not published later


def test_will_allowed_at_publication_is_published_v5_MQTT_3_1_2_8():
    h = node(ACL)
    bob = login(h, "bob", "bob")
    bob.subscribe("#")
    login(h, "a", "alice", will=will("dead/alice")).drop()
    assert [m.topic for m in bob.messages()] == ["dead/alice"]


def test_will_delivery_to_a_subscriber_that_may_not_read_is_on_the_timeline():
    h = node(ACL.replace("topic read #\n", "topic read #\ntopic deny dead/alice\n"))
    reader = login(h, "bob", "bob")
    assert reader.subscribe("dead/#") == [1]  # granted: the deny rule covers only part of it
    login(h, "a", "alice", will=will("dead/alice")).drop()
    assert reader.messages() == []
    published, dropped = h.core.timeline.events("a")[-2:]
    assert (published.kind, published.data["receivers"]) == ("published", 0)
    assert (dropped.kind, dropped.data["reason"], dropped.data["subscriber"]) == ("dropped", "not_authorized", "bob")
    assert h.core.wills.dropped_by_reason == {"not_authorized": 1}


def test_will_recovered_after_a_crash_is_checked_with_the_stored_user_name():
    """The user name is stored with the session (schema 3): after a crash, the recovered will is
    published with alice's rights; after a crash and an ACL change, it is denied."""
    for acl, published in ((ACL, True), (ACL.replace("topic write dead/alice\n", ""), False)):
        h = node(ACL, store=MemoryStorage(), recovery_grace=10)
        login(h, "a", "alice", will=will("dead/alice"))
        h2 = h.restart(downtime=2, recovery_grace=10, acl=Acl.parse(acl, "acl"))
        assert h2.core.sessions["a"].username == "alice"
        bob = login(h2, "bob", "bob")
        bob.subscribe("dead/#")
        h2.advance(10)
        assert [m.topic for m in bob.messages()] == (["dead/alice"] if published else [])
        assert h2.core.timeline.kinds("a")[-1] == ("published" if published else "denied")
        assert h2.core.wills.denied == (0 if published else 1)


def test_anonymous_recovered_will_checked_as_anonymous():
    h = node("topic write dead/anon\ntopic read #\n", store=MemoryStorage(), recovery_grace=5)
    h.connect("anon-1", will=will("dead/anon"))
    h2 = h.restart(downtime=1, recovery_grace=5)
    assert h2.core.sessions["anon-1"].username is None
    w = h2.connect("w")
    w.subscribe("dead/#")
    h2.advance(5)
    assert [m.topic for m in w.messages()] == ["dead/anon"]


def test_will_of_a_normal_disconnect_is_never_checked_v5_MQTT_3_14_4_3():
    h = node(ACL)
    c = login(h, "a", "alice", will=will("dead/alice"))
    h.core.set_acl(Acl.parse("", "acl"))
    c.send(Disconnect(0))
    assert h.core.wills.denied == 0 and "denied" not in h.core.timeline.kinds("a")


# ==== what arrives while the password is checked: any bytes, no crash ===========================

@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(level=st.sampled_from([4, 5]), right=st.booleans(), data=st.data())
def test_anything_sent_while_the_password_is_checked_is_handled_after_the_answer(level, right, data):
    """Valid packets, then arbitrary bytes, behind a CONNECT whose password is being checked: no
    exception; nothing is sent before the answer; CONNACK is the first packet [MQTT-3.2.0-1]; after a
    refusal nothing else is sent and the will is never published; a bystander is unharmed."""
    h = node(acl="topic readwrite #\nuser bob\ntopic readwrite #\n")
    bystander = h.subscriber("#", client_id="bystander")
    h.hold_auth = True
    c = h.open()
    c.send(Connect(client_id="fuzzed", username="bob", password=b"builder" if right else b"bad",
                   protocol_level=level, will=will("dead/fuzzed", b"fuzzwill")))
    packets = data.draw(st.lists(client_packets(level), max_size=4))
    stream = b"".join(encode(p, level) for p in packets) + data.draw(st.binary(max_size=64))
    for i in range(0, len(stream), 7):
        if c.closed is None:
            c.send_bytes(stream[i:i + 7])
    assert c.inbox == []
    h.finish_auth()
    sent = c.take()
    assert sent and isinstance(sent[0], Connack) and sent[0].reason_code == (0 if right else 0x86)
    wills = [m for m in bystander.messages() if m.payload == b"fuzzwill"]
    if not right:
        assert sent == sent[:1] and c.closed and wills == []
    if c.closed is None:
        c.drop()
    assert len([m for m in bystander.messages() if m.payload == b"fuzzwill"]) + len(wills) <= (1 if right else 0)
    assert bystander.closed is None


def test_session_from_a_store_without_user_names_is_resumed_by_its_first_user():
    """A session stored before schema 3 has no user name (USERNAME_UNKNOWN): it is not another
    user's session, so its client resumes it, cancelling its recovered will; its will, while the
    user is unknown, is checked as an anonymous client's."""
    from lastwill.storage.base import USERNAME_UNKNOWN

    for reconnect in (True, False):
        h = node(ACL, store=MemoryStorage(), recovery_grace=10)
        login(h, "dev", "alice", clean_start=False, session_expiry_interval=600, will=will("dead/alice"))
        h.dispatch(h.core.shutdown(h.now, keep_wills=True))
        h.store._state.sessions["dev"].username = USERNAME_UNKNOWN  # as an older lastwill wrote it
        h2 = h.restart(downtime=1, recovery_grace=10)
        assert h2.core.sessions["dev"].username is None and h2.core.sessions["dev"].username_unknown
        bob = login(h2, "bob", "bob")
        bob.subscribe("dead/#")
        if reconnect:
            back = login(h2, "dev", "alice", clean_start=False, session_expiry_interval=600)
            assert back.connack.session_present and h2.core.timeline.kinds("dev")[-2] == "cancelled"
            assert h2.core.sessions["dev"].username == "alice" and not h2.core.sessions["dev"].username_unknown
            h2.commit()
            assert h2.store.load().sessions["dev"].username == "alice"
        else:
            h2.advance(10)  # checked as anonymous: anonymous clients may not write 'dead/alice'
            assert bob.messages() == [] and h2.core.timeline.kinds("dev")[-1] == "denied"
