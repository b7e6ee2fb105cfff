"""A fake link for core tests: clients that send packets to a BrokerCore and collect what it sends.

No sockets, no sleeps: time is a FakeClock, and ``run_until`` jumps from deadline to deadline.
"""

from __future__ import annotations

import itertools

from lastwill.clock import FakeClock
from lastwill.codec.packets import (
    Connect,
    Disconnect,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Subscription,
    Unsubscribe,
    Will,
)
from lastwill.config import Config
from lastwill.core.actions import Authenticate, Close, Send
from lastwill.core.broker import BrokerCore
from lastwill.core.causes import Cause, ConnectionEnded, lost, lost_because

_CLOSED_BY_SERVER = lost_because(Cause.NETWORK_ERROR, "closed by server")


class Client:
    def __init__(self, harness: Harness, conn_id: int):
        self.h = harness
        self.conn_id = conn_id
        self.inbox: list = []
        self.closed: str | None = None
        self.client_id: str | None = None
        self._pids = itertools.count(1)

    # -- sending ---------------------------------------------------------------------------
    def send(self, packet) -> Client:
        assert self.closed is None, f"client {self.client_id} is closed: {self.closed}"
        self.h.dispatch(self.h.core.handle(self.conn_id, packet, self.h.clock.now))
        return self

    def send_bytes(self, data: bytes) -> Client:
        self.h.dispatch(self.h.core.data_received(self.conn_id, data, self.h.clock.now))
        return self

    def publish(self, topic: str, payload: bytes = b"x", qos: int = 0, retain: bool = False, **props) -> int | None:
        pid = next(self._pids) if qos else None
        self.send(Publish(topic, payload, qos, retain, False, pid, dict(props)))
        return pid

    def subscribe(self, *filters: str, qos: int = 1, sub_id: int | None = None, **opts) -> list[int]:
        pid = next(self._pids)
        props = {"subscription_identifier": sub_id} if sub_id else {}
        self.send(Subscribe(pid, [Subscription(f, qos, **opts) for f in filters], props))
        acks = self.take("Suback")
        assert acks and acks[-1].packet_id == pid
        return acks[-1].reason_codes

    def unsubscribe(self, *filters: str) -> list[int]:
        pid = next(self._pids)
        self.send(Unsubscribe(pid, list(filters)))
        return self.take("Unsuback")[-1].reason_codes

    def disconnect(self, reason_code: int = 0, **props) -> None:
        self.send(Disconnect(reason_code, dict(props)))

    def ping(self) -> None:
        self.send(Pingreq())

    def drop(self, how: BaseException | ConnectionEnded | None = None) -> None:
        """The network connection ends without DISCONNECT: how the edge would report it (an exception
        the transport gave, an end it named, or None: EOF)."""
        ended = how if isinstance(how, ConnectionEnded) else lost(how)
        self.h.dispatch(self.h.core.connection_lost(self.conn_id, ended, self.h.clock.now))
        self.closed = self.closed or ended.detail

    def ack_all(self) -> None:
        """Acknowledge every QoS 1/2 PUBLISH in the inbox (full QoS 2 handshake)."""
        for p in list(self.inbox):
            if isinstance(p, Publish) and p.qos == 1:
                self.send(Puback(p.packet_id))
            elif isinstance(p, Publish) and p.qos == 2:
                self.send(Pubrec(p.packet_id))
                rel = [x for x in self.inbox if isinstance(x, Pubrel) and x.packet_id == p.packet_id]
                assert rel
                self.send(Pubcomp(p.packet_id))

    # -- receiving --------------------------------------------------------------------------
    def take(self, kind: str | None = None) -> list:
        """Remove and return the received packets (of one type, if given)."""
        if kind is None:
            out, self.inbox = self.inbox, []
            return out
        out = [p for p in self.inbox if type(p).__name__ == kind]
        self.inbox = [p for p in self.inbox if type(p).__name__ != kind]
        return out

    def messages(self) -> list[Publish]:
        return self.take("Publish")

    def payloads(self) -> list[bytes]:
        return [p.payload for p in self.messages()]


class Harness:
    """``store``: a storage backend the core's changes are committed to after every step, as the
    edge does once per event-loop turn. ``clock``: pass one to model a restart (a new process has a
    new monotonic origin; the wall clock goes on).

    ``passwords`` (a lastwill.auth.PasswordFile) answers the core's Authenticate actions at once, as
    the edge does from its threads; ``hold_auth = True`` keeps them in ``pending_auth`` until
    ``finish_auth()``. ``acl`` (a lastwill.auth.Acl): the rules the core checks (``set_acl`` to reload)."""

    def __init__(self, store=None, clock: FakeClock | None = None, passwords=None, acl=None, **config):
        self.clock = clock or FakeClock()
        self.store = store
        ids = itertools.count(1)
        self.core = BrokerCore(Config(**config), client_id_factory=lambda: f"auto-{next(ids)}",
                               persist=store is not None)
        self.core.wall_offset = self.clock.wall_offset  # as the edge sets it (for $SYS event times)
        self.core.set_acl(acl)
        self.passwords = passwords
        self.hold_auth = False
        self.pending_auth: list[Authenticate] = []
        self.clients: dict[int, Client] = {}

    def finish_auth(self) -> None:
        """Answer the held Authenticate actions (the edge's password checks coming back)."""
        pending, self.pending_auth = self.pending_auth, []
        for a in pending:
            ok = self.passwords.verify(a.username, a.password)
            self.dispatch(self.core.authenticated(a.conn_id, ok, self.clock.now))

    def commit(self) -> None:
        if self.store is not None:
            batch = self.core.take_batch(self.clock.wall_offset)
            if batch:
                self.store.commit(batch)

    def restart(self, downtime: float, crashed: bool = True, **config) -> Harness:
        """A new broker process on the same store, ``downtime`` seconds later (wall clock)."""
        wall = self.clock.wall() + downtime
        clock = FakeClock(start=500.0, wall_offset=wall - 500.0)
        if not crashed:
            self.dispatch(self.core.shutdown(self.clock.now, keep_wills=config.pop("keep_wills", True)))
        config.setdefault("passwords", self.passwords)
        config.setdefault("acl", self.core.acl)
        h = Harness(store=self.store, clock=clock, **config)
        h.dispatch(h.core.restore(self.store.load(), clock.now, clock.wall(), crashed))
        return h

    @property
    def now(self) -> float:
        return self.clock.now

    def dispatch(self, actions: list) -> None:
        closed = []
        answers = []
        for a in actions:
            client = self.clients.get(a.conn_id)
            if isinstance(a, Authenticate):
                assert self.passwords is not None, "Authenticate without a password file: Harness(passwords=...)"
                if self.hold_auth:
                    self.pending_auth.append(a)
                else:
                    answers.append((a.conn_id, self.passwords.verify(a.username, a.password)))
            elif isinstance(a, Send):
                assert client is not None and client.closed is None, f"send to closed connection: {a}"
                client.inbox.append(a.packet)
            elif isinstance(a, Close):
                if client is not None and client.closed is None:
                    client.closed = a.reason
                    closed.append(a.conn_id)
        for conn_id in closed:  # the edge reports every close back to the core
            self.dispatch(self.core.connection_lost(conn_id, _CLOSED_BY_SERVER, self.clock.now))
        for conn_id, ok in answers:  # the password checks come back (the edge: from its threads)
            self.dispatch(self.core.authenticated(conn_id, ok, self.clock.now))
        self.commit()

    def open(self) -> Client:
        conn_id = self.core.new_conn_id()
        client = self.clients[conn_id] = Client(self, conn_id)
        self.dispatch(self.core.open(conn_id, self.clock.now, f"test:{conn_id}"))
        return client

    def connect(self, client_id: str = "c", *, version: int = 5, clean_start: bool = True, keep_alive: int = 0,
                will: Will | None = None, expect: int | None = 0, username: str | None = None,
                password: bytes | None = None, **props) -> Client:
        client = self.open()
        client.client_id = client_id
        client.send(Connect(client_id=client_id, clean_start=clean_start, keep_alive=keep_alive,
                            protocol_level=version, protocol_name="MQIsdp" if version == 3 else "MQTT",
                            will=will, username=username, password=password, properties=dict(props)))
        if expect is not None:
            acks = client.take("Connack")
            assert acks, f"no CONNACK for {client_id}: closed={client.closed}"
            assert acks[0].reason_code == expect, f"CONNACK 0x{acks[0].reason_code:02X}, expected 0x{expect:02X}"
            client.connack = acks[0]
        return client

    def subscriber(self, topic_filter: str = "#", client_id: str = "watcher", qos: int = 1, version: int = 5,
                   **kw) -> Client:
        sub = self.connect(client_id, version=version, **kw)
        codes = sub.subscribe(topic_filter, qos=qos)
        assert codes == [qos], codes
        return sub

    def advance(self, seconds: float) -> None:
        self.run_until(self.clock.now + seconds)

    def run_until(self, t: float) -> None:
        """Fire every timer due up to ``t``, each at its own deadline, then set the clock to ``t``."""
        while True:
            d = self.core.next_deadline()
            if d is None or d > t:
                break
            self.clock.set(max(d, self.clock.now))
            self.dispatch(self.core.tick(self.clock.now))
        self.clock.set(t)


def will(topic: str = "dead/c", payload: bytes = b"gone", qos: int = 1, retain: bool = False, **props) -> Will:
    return Will(topic, payload, qos, retain, dict(props))
