"""A message queued or in flight when acl_file takes away the subscriber's read access is not sent.

The ACL is checked at delivery (docs/security.md "Authorization"): when a message was queued (the
subscriber offline, or its Receive Maximum used up) or is re-sent on a resumed session, the rules in
force when it is sent decide, not those of the moment it was routed. What is no longer allowed is
dropped: counted (dropped_not_authorized), removed from the store, and a will's delivery written on
the will's timeline (not_authorized). Rules reloaded by SIGHUP reach the core through set_acl.
"""

from __future__ import annotations

from lastwill.auth import Acl
from lastwill.codec.packets import Puback
from lastwill.storage.memory import MemoryStorage
from tests.core.harness import Harness, will

BEFORE = "user bob\ntopic read #\nuser pub\ntopic write #\n"
AFTER = "user bob\ntopic read public/#\nuser pub\ntopic write #\n"


def _node(store=None, **config) -> Harness:
    # no password_file: on the default loopback listener the user name is taken as given
    return Harness(store=store, acl=Acl.parse(BEFORE, "acl"), **config)


def _bob(h: Harness, **kw):
    return h.connect("bob", username="bob", clean_start=False, session_expiry_interval=3600, **kw)


def test_queued_messages_no_longer_readable_are_dropped_at_delivery():
    store = MemoryStorage()
    h = _node(store)
    bob = _bob(h)
    assert bob.subscribe("#", qos=1) == [1]
    bob.drop()
    p = h.connect("p", username="pub")
    for i in range(3):
        p.publish("secret/x", b"s%d" % i, qos=1)
    p.publish("public/y", b"ok", qos=1)
    assert len(h.core.sessions["bob"].queue) == 4
    h.core.set_acl(Acl.parse(AFTER, "acl"))  # SIGHUP: bob may no longer read secret/
    bob = _bob(h)
    (ok,) = bob.messages()
    assert ok.payload == b"ok"
    assert h.core.stats["dropped_not_authorized"] == 3
    assert not h.core.sessions["bob"].queue
    bob.send(Puback(ok.packet_id))
    # gone from the store too: a restart brings none of them back
    h2 = h.restart(downtime=1)
    assert h2.core.sessions["bob"].queue == () and not h2.core.sessions["bob"].inflight


def test_in_flight_message_no_longer_readable_is_not_resent():
    store = MemoryStorage()
    h = _node(store)
    bob = _bob(h)
    bob.subscribe("#", qos=2)
    p = h.connect("p", username="pub")
    p.publish("secret/x", b"s1", qos=1)
    p.publish("secret/y", b"s2", qos=2)
    p.publish("public/y", b"ok", qos=1)
    assert len(bob.messages()) == 3  # sent, none acknowledged
    bob.drop()
    h.core.set_acl(Acl.parse(AFTER, "acl"))
    bob = _bob(h)
    (again,) = bob.messages()
    assert again.payload == b"ok" and again.dup  # only the one it may still read is re-sent
    assert h.core.stats["dropped_not_authorized"] == 2
    assert list(h.core.sessions["bob"].inflight) == [again.packet_id]
    bob.send(Puback(again.packet_id))
    h2 = h.restart(downtime=1)
    assert not h2.core.sessions["bob"].inflight


def test_messages_held_by_receive_maximum_checked_when_their_turn_comes():
    h = _node()
    bob = _bob(h, receive_maximum=1)
    bob.subscribe("#", qos=1)
    p = h.connect("p", username="pub")
    p.publish("public/a", b"1", qos=1)
    p.publish("secret/b", b"2", qos=1)  # waits for the first PUBACK
    p.publish("public/c", b"3", qos=1)
    (first,) = bob.messages()
    h.core.set_acl(Acl.parse(AFTER, "acl"))
    bob.send(Puback(first.packet_id))
    (third,) = bob.messages()
    assert third.payload == b"3" and h.core.stats["dropped_not_authorized"] == 1


def test_queued_will_no_longer_readable_dropped_on_the_wills_timeline():
    h = _node()
    bob = _bob(h)
    bob.subscribe("#", qos=1)
    bob.drop()
    dying = h.connect("dev", username="pub", will=will("secret/dead", b"gone"))
    dying.drop()  # the will is published, queued for the offline bob
    assert len(h.core.sessions["bob"].queue) == 1
    h.core.set_acl(Acl.parse(AFTER, "acl"))
    bob = _bob(h)
    assert bob.messages() == []
    (dropped,) = [e for e in h.core.timeline.events("dev") if e.kind == "dropped"]
    assert dropped.data == {"reason": "not_authorized", "subscriber": "bob"}
    assert h.core.wills.dropped_by_reason == {"not_authorized": 1}


def test_nothing_checked_or_dropped_without_an_acl():
    h = Harness()
    bob = h.connect("bob", clean_start=False, session_expiry_interval=60)
    bob.subscribe("#", qos=1)
    bob.drop()
    h.connect("p").publish("secret/x", b"s", qos=1)
    bob = h.connect("bob", clean_start=False, session_expiry_interval=60)
    assert bob.payloads() == [b"s"] and h.core.stats["dropped_not_authorized"] == 0
