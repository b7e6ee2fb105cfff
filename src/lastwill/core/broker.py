"""The broker's state machine. Pure: it never awaits, never touches a socket, never reads a clock.

The edge calls, each with the monotonic ``now``:

* ``open(conn_id, now, peer)`` when a network connection is accepted,
* ``data_received(conn_id, data, now)`` with the bytes read,
* ``connection_lost(conn_id, ended, now)`` when the socket closed under us (``ended``: a
  ``causes.ConnectionEnded``, e.g. ``causes.lost(exc)``),
* ``tick(now)`` when ``next_deadline()`` is reached,
* ``authenticated(conn_id, ok, now)`` with the answer to an ``Authenticate`` action (password_file),

and each call returns the list of actions (``Send``, ``Close``, ``Authenticate``) to carry out, in order.
``set_acl(acl)`` gives it the rules of acl_file (parsed by lastwill.auth; the core reads no file).

``BrokerCore`` only wires the parts together and dispatches; the rules live in the module named for
them: the connection's states and its end (``connection.py``), one module per packet family
(``connect.py``, ``publish.py``, ``acks.py``, ``subscribe.py``, ``disconnect.py``), delivery
(``delivery.py``), routing (``routing.py``), sessions (``ownership.py``), the will (``will.py``),
limits (``limits.py``), authentication and authorization (``access.py``). Timers are dispatched by
kind to the module that registered the kind (``timers.py``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from ..auth import Acl
from ..codec.packets import (
    PROTOCOL_5,
    Auth,
    Connect,
    Disconnect,
    Pingreq,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
    Unsubscribe,
)
from ..codec.reason_codes import ReasonCode
from ..config import Config
from ..errors import MqttError
from ..storage.base import Batch, StoredState
from .access import Access
from .acks import AckHandler
from .actions import Action
from .announce import Announcer
from .causes import Cause, ConnectionEnded
from .changes import ChangeFeed
from .cluster import (
    Claim,
    ClusterIntents,
    ClusterRecorder,
    ClusterRouter,
    ClusterSessions,
    ClusterWillFiring,
    Unclaimed,
)
from .connect import ConnectHandler
from .connection import Connections
from .delivery import Deliverer
from .disconnect import DisconnectHandler
from .limits import Limits
from .message import Message
from .operator import AdminRequest, AdminResult, Operator
from .outbox import Outbox
from .ownership import LocalSessions
from .persistence import NoRecorder, Recorder
from .publish import PublishHandler
from .queries import BrokerView
from .restore import Restorer
from .retained import RetainedStore
from .routing import LocalRouter
from .sessions import AUTHENTICATING, CLOSED, CONNECTED, NEW, Conn, Session
from .subscribe import SubscribeHandler
from .systree import EdgeCounts, SysTree
from .timeline import EventKind, Timeline
from .timers import TimerKind, TimerQueue
from .topics import SubscriptionTree
from .will import LocalWillFiring, WillKeeper

_SHUTDOWN = ConnectionEnded(Cause.SERVER_SHUTDOWN, "server shutting down")
_TAKEN_OVER = ConnectionEnded(Cause.TAKEOVER, "session taken over by a new connection on another node",
                              "MQTT-3.1.4-3")


def _default_client_id() -> str:
    return "lastwill-" + secrets.token_hex(8)


class BrokerCore:
    def __init__(self, config: Config | None = None, *, client_id_factory: Callable[[], str] | None = None,
                 persist: bool = False, cluster: bool = False):
        self.config = cfg = config or Config()
        # what changed since the last commit; a no-op recorder when nothing is persisted
        self.recorder = recorder = Recorder() if persist else NoRecorder()
        # cluster mode (docs/cluster.md): the engine holds sessions, subscriptions, retained messages and
        # wills; this core serves the clients connected to this node and records what the engine must be
        # told (self.intents, taken by the edge once per loop turn)
        self.intents: ClusterIntents | None = ClusterIntents() if cluster else None
        if self.intents is not None:
            self.recorder = recorder = ClusterRecorder(self.intents)
        self.stats = stats = {
            "messages_in": 0, "messages_out": 0, "dropped_queue_full": 0, "dropped_too_large": 0,
            "dropped_expired": 0, "connects": 0, "dropped_queue_bytes": 0,
            # authentication and authorization: CONNECTs refused, PUBLISHes refused, deliveries not made (ACL)
            "auth_refused": 0, "publish_denied": 0, "dropped_not_authorized": 0}
        self.outbox = outbox = Outbox()
        self.timers = timers = TimerQueue()
        self.timeline = Timeline(sink=recorder if persist else None)  # persisted with the rest
        self.retained = RetainedStore()
        self.limits = limits = Limits(cfg, self.retained)
        by_id: dict[str, Session] = {}
        self.access = access = Access(cfg, lambda cid: s.username if (s := by_id.get(cid)) is not None else None)
        self.tree = SubscriptionTree()
        # the will keeper publishes through the router, which needs it (to tell it of dropped will
        # deliveries): the firing gets the router once it is built
        firing = LocalWillFiring() if not cluster else ClusterWillFiring()
        self.wills = wills = WillKeeper(timers, self.timeline, firing, recorder.session,
                                        cause_property=cfg.will_cause_property, authorize=access.will_denied)
        self.deliverer = deliverer = Deliverer(cfg, outbox, recorder, wills, limits, access, stats, timers)
        timers.register(TimerKind.PUMP, lambda client_id, now: deliverer.pump_due(by_id.get(client_id), now))
        if self.intents is None:
            self.router = router = LocalRouter(self.tree, self.retained, by_id, deliverer, access, wills,
                                               recorder, timers, stats)
            firing.publish = router.route
            self.ownership = sessions = LocalSessions(by_id, router, wills, timers, recorder, limits,
                                                      cfg.offline_session_overflow == "expire_oldest")
        else:
            self.router = router = ClusterRouter(self.tree, by_id, deliverer, access, wills, stats, self.intents)
            self.ownership = sessions = ClusterSessions(by_id, router, wills, self.intents)
        wills.register_timers(by_id.get)
        self.announce = announce = Announcer(cfg, timers, wills, router.route, router.has_subscribers_under,
                                             by_id.get)
        self.connections = connections = Connections(cfg, outbox, timers, limits, sessions, wills, announce,
                                                     recorder)
        self.connect = ConnectHandler(cfg, outbox, connections, sessions, wills, access, limits, announce,
                                      deliverer, stats, client_id_factory or _default_client_id)
        connections.on_connect = self.connect.on_connect
        if self.intents is not None:
            self.connect.cluster = sessions
        connections.handlers = self._handlers(cfg, outbox, router, deliverer, limits, access, recorder, stats,
                                              connections, wills)
        self.view = BrokerView(connections.conns, by_id, wills, self.timeline, stats, limits, self.retained,
                               lambda: limits.bound_use(len(by_id), len(sessions.offline), wills.stored,
                                                        len(self.tree)))
        self.operator = Operator(connections, sessions, wills, outbox, router, self.retained, self.timeline)
        # mosquitto's $SYS/broker/... topics, every sys_interval seconds once start_sys() is called
        self.packets_in = 0  # MQTT packets decoded (the edge counts what it writes)
        self.sockets = 0  # network connections opened
        self.sys_tree = SysTree(cfg.sys_interval, timers, router.route, self._sys_counts)
        # which clients changed, while a dashboard watches (the edge's admin API: watch, take, unwatch)
        self.changes = ChangeFeed()
        self.timeline.changes = announce.changes = sessions.changes = self.changes

    def _handlers(self, cfg, outbox, router, deliverer, limits, access, recorder, stats, connections, wills):
        """The handler of each packet type a connected client may send."""
        publish = PublishHandler(cfg, outbox, router, limits, access, recorder, stats)
        acks = AckHandler(outbox, recorder, deliverer)
        subscribe = SubscribeHandler(cfg, outbox, router, deliverer, limits, access, recorder, stats)
        disconnect = DisconnectHandler(cfg, outbox, connections, wills, recorder)
        return {
            Publish: publish.on_publish,
            Puback: acks.on_puback,
            Pubrec: acks.on_pubrec,
            Pubrel: acks.on_pubrel,
            Pubcomp: acks.on_pubcomp,
            Subscribe: subscribe.on_subscribe,
            Unsubscribe: subscribe.on_unsubscribe,
            Pingreq: disconnect.on_pingreq,
            Disconnect: disconnect.on_disconnect,
            Auth: disconnect.on_auth,
            Connect: disconnect.on_connect_again,
        }

    # ==== what the state is (read-only views for tests, the edge and the admin API) ==============
    @property
    def sessions(self) -> dict[str, Session]:
        return self.ownership.by_id

    @property
    def conns(self) -> dict[int, Conn]:
        return self.connections.conns

    @property
    def limit_hits(self) -> dict[str, int]:
        return self.limits.hits

    @property
    def max_connections(self) -> int:
        return self.limits.max_connections

    @max_connections.setter
    def max_connections(self, value: int) -> None:
        self.limits.max_connections = value

    @property
    def acl(self) -> Acl | None:
        return self.access.acl

    @property
    def wall_offset(self) -> float:
        """Wall-clock seconds minus monotonic ones, as the edge last set it (for $SYS event times)."""
        return self.announce.wall_offset

    @wall_offset.setter
    def wall_offset(self, value: float) -> None:
        self.announce.wall_offset = value

    # ==== entry points (called by the edge) ====================================================
    def new_conn_id(self) -> int:
        self.sockets += 1  # (one per network connection: the $SYS socket load)
        return self.sockets

    def start_sys(self, now: float, version: str, edge_counts: EdgeCounts | None = None) -> list[Action]:
        """The broker started: publish the ``$SYS/broker/...`` topics now and every sys_interval seconds.
        ``edge_counts()``: (bytes received, bytes sent, packets sent), counted by the edge."""
        self.sys_tree.start(now, version, edge_counts)
        return self.outbox.take()

    def _sys_counts(self) -> dict[str, int]:
        stats = self.stats
        sessions = self.ownership.by_id
        return {"packets_in": self.packets_in, "publish_in": stats["messages_in"], "publish_out": stats["messages_out"],
                "dropped": sum(v for k, v in stats.items() if k.startswith("dropped_")),
                "sockets": self.sockets, "connects": stats["connects"], "clients_total": len(sessions),
                "clients_connected": sum(1 for s in sessions.values() if s.conn is not None),
                "subscriptions": len(self.tree), "retained": len(self.retained)}

    def open(self, conn_id: int, now: float, peer: str = "", sockport: int = 0,
             cert_username: str | None = None) -> list[Action]:
        # cert_username: the Common Name of the client's verified TLS certificate, when
        # tls_cert_cn_as_username is on (edge/tls.py); see Conn.cert_username
        self.connections.open(conn_id, now, peer, sockport, cert_username)
        return self.outbox.take() if self.outbox.actions else []

    def data_received(self, conn_id: int, data: bytes, now: float) -> list[Action]:
        conn = self.connections.conns.get(conn_id)
        if conn is None or conn.state == CLOSED:
            return []
        if conn.held and isinstance(conn.held[-1], MqttError):
            return []  # authenticating, and what came after the CONNECT already broke the protocol
        connections = self.connections
        try:
            packets = conn.decoder.feed(data)
        except MqttError as err:
            # the whole packets before the bad one count first (found by fuzzing: one of them may
            # break the protocol first)
            connections.run(conn, err.packets, now)
            if conn.state != CLOSED:
                connections.protocol_error(conn, err, now)
            return self.outbox.take()
        if packets:
            # only a whole Control Packet restarts the keep-alive, not a trickle of bytes
            conn.last_activity = now  # [MQTT-3.1.2-24] (5.0: [MQTT-3.1.2-22])
            self.packets_in += len(packets)  # ($SYS/broker/messages/received: packets of every kind)
            dispatch = connections.dispatch
            for packet in packets:  # (Connections.run, inlined: this is the path of every packet)
                if conn.state == CLOSED:
                    break
                try:
                    dispatch(conn, packet, now)
                except MqttError as err:
                    connections.protocol_error(conn, err, now)
        return self.outbox.take() if self.outbox.actions else []

    def handle(self, conn_id: int, packet, now: float) -> list[Action]:
        """Process one already-decoded packet (used by tests and by embedders)."""
        conn = self.connections.conns[conn_id]
        conn.last_activity = now
        self.connections.run(conn, [packet], now)
        return self.outbox.take()

    def connection_lost(self, conn_id: int, ended: ConnectionEnded, now: float) -> list[Action]:
        self.connections.lost(conn_id, ended, now)
        return self.outbox.take() if self.outbox.actions else []

    def authenticated(self, conn_id: int, ok: bool, now: float, throttled: str | None = None) -> list[Action]:
        """The edge's answer to an ``Authenticate`` action (see ConnectHandler.authenticated); ``throttled``:
        why the login was refused without a password check (core/throttle.py)."""
        self.connect.authenticated(conn_id, ok, now, throttled)
        return self.outbox.take()

    def tick(self, now: float, limit: int | None = None) -> list[Action]:
        """Handle the timers due at ``now``, at most ``limit`` of them (the edge takes a storm of due
        wills in slices; ``next_deadline()`` then says whether more are due)."""
        self.timers.fire_due(now, limit)
        return self.outbox.take()

    def writing_paused(self, conn_id: int) -> None:
        """The connection's socket buffer is above its high-water mark: stop writing to it."""
        conn = self.connections.conns.get(conn_id)
        if conn is not None:
            conn.paused = True

    def writing_resumed(self, conn_id: int, now: float) -> list[Action]:
        conn = self.connections.conns.get(conn_id)
        if conn is not None and conn.paused:
            conn.paused = False
            if conn.session is not None and conn.state == CONNECTED:
                self.deliverer.pump(conn.session, now)
        return self.outbox.take()

    def next_deadline(self) -> float | None:
        return self.timers.next_deadline()

    def take_batch(self, wall_offset: float) -> Batch | None:
        """What changed since the last call, as a storage Batch (None if nothing or not persisting)."""
        recorder = self.recorder
        if not recorder:
            return None
        return recorder.take_batch(wall_offset)

    def restore(self, state: StoredState, now: float, wall_now: float, crashed: bool) -> list[Action]:
        """Load what the store holds (start-up only). Wills of clients connected when the broker
        stopped become pending, with the recovery grace period."""
        self.wall_offset = wall_now - now
        Restorer(timeline=self.timeline, retained=self.retained, router=self.router, sessions=self.ownership,
                 wills=self.wills, announce=self.announce, recorder=self.recorder, timers=self.timers,
                 recovery_grace=self.config.recovery_grace).restore(state, now, wall_now, crashed)
        self.ownership.restored()
        self.limits.recount(self.ownership.by_id.values())
        return self.outbox.take()

    def protocol_level(self, conn_id: int) -> int:
        conn = self.connections.conns.get(conn_id)
        return conn.protocol_level if conn is not None else 4

    def set_pending_connections(self, count: Callable[[], int]) -> None:
        """``count()``: network connections the edge holds that the core does not know yet (TLS handshakes,
        WebSocket upgrades under way); max_connections counts them too."""
        self.limits.pending_connections = count

    def connection_refused(self, peer: str, now: float) -> None:
        """The edge closed a connection at accept for max_connections (before a TLS handshake or a
        WebSocket upgrade): counted and logged as the core's own."""
        self.limits.hit("max_connections", None, now, "connection from %s closed at accept: max_connections (%d) "
                        "reached", peer, self.limits.max_connections)

    def count_limit(self, limit: str) -> None:
        """The edge enforced ``limit`` (e.g. ``unsent_bytes``): counted with the core's own."""
        self.limits.count(limit)

    def set_acl(self, acl: Acl | None) -> None:
        """Use these ACL rules from now on (start-up, SIGHUP). Connections are kept; what they do next,
        what is delivered to them next and wills published from now on are checked against them."""
        self.access.acl = acl

    def administer(self, request: AdminRequest, now: float) -> tuple[AdminResult, list[Action]]:
        """An operator's action (the admin API): what was done, and the actions to carry out."""
        result = self.operator.handle(request, now)
        return result, self.outbox.take()

    # ==== cluster mode (called by edge/cluster.py) ================================================
    def take_intents(self) -> ClusterIntents | None:
        """What the engine must be told since the last call (None: nothing, or not a cluster node)."""
        return self.intents.take() if self.intents is not None else None

    def session_claimed(self, conn_id: int, claim: Claim | None, now: float) -> tuple[bool, list[Action]]:
        """The engine's answer to a ``ClaimSession`` (None: it could not be reached). False: the
        connection is gone, the claim must be given back."""
        alive = self.connect.claimed(conn_id, claim, now)
        return alive, self.outbox.take()

    def generation(self, client_id: str) -> int | None:
        """The engine generation the connection of ``client_id`` here holds (None: not connected here)."""
        return self.ownership.generation(client_id) if self.intents is not None else None

    def deliver_remote(self, client_id: str, gen: int, deliveries: list[tuple[Message, int, bool, tuple[int, ...]]],
                       now: float) -> tuple[bool, list[Action]]:
        """Messages the engine queued for a session connected here (message, qos, retain flag,
        subscription ids). False: the session is not held here under ``gen`` any more."""
        session = self.ownership.by_id.get(client_id)
        if session is None or self.generation(client_id) != gen:
            return False, []
        deliver = self.deliverer.deliver
        for message, qos, retain, ids in deliveries:
            deliver(session, message, qos, retain, ids, now)
        return True, self.outbox.take()

    def cluster_event(self, client_id: str, now: float, kind: EventKind, detail: str, rule: str | None,
                      **data) -> None:
        """Something the cluster did with a client's will (a node published it, another node cancelled
        it): on this node's timeline of the client, for ``explain``."""
        self.timeline.record(client_id, now, kind, detail, rule, **data)

    def dead_node_will(self, client_id: str, user: str | None, dead_node: str, ended_ms: int | None, due_ms: int,
                       now: float) -> list[Action]:
        """This node published the will of a client of a dead node: the $SYS disconnected event for it
        (engine times: wall-clock ms)."""
        self.announce.dead_node_will(client_id, user, dead_node, ended_ms, due_ms, now)
        return self.outbox.take()

    def route_local(self, messages: list[Message], now: float) -> list[Action]:
        """QoS 0 messages another node published (pub/sub): to the matching sessions connected here."""
        route = self.router.route_local
        for message in messages:
            route(message, now, True)
        return self.outbox.take()

    def kicked(self, client_id: str, gen: int, now: float) -> list[Action]:
        """A CONNECT on another node took the session of this connection over: it ends with the takeover
        rules [MQTT-3.1.4-3] (MQTT 5: DISCONNECT 0x8E); its will is the engine's to decide."""
        session = self.ownership.by_id.get(client_id)
        if session is None or session.conn is None or self.generation(client_id) != gen:
            return []
        return self._taken_over(session.conn, now)

    def _taken_over(self, conn, now: float) -> list[Action]:
        if conn.protocol_level == PROTOCOL_5:
            self.outbox.send(conn, Disconnect(ReasonCode.SESSION_TAKEN_OVER))  # [MQTT-3.1.4-3] 0x8E
        self.connections.end(conn, now, _TAKEN_OVER)
        return self.outbox.take()

    def unclaimed(self) -> list[Unclaimed]:
        """The connections accepted while the engine could not be reached, not claimed there yet."""
        return list(self.ownership.unclaimed.values()) if self.intents is not None else []

    def claimed_late(self, client_id: str, conn_id: int, gen: int, now: float) -> bool:
        """The engine took the session of an unclaimed connection under ``gen`` (its subscriptions go to
        the cluster's table with the next commit). False: that connection is gone (the claim is given
        back with the next commit)."""
        return self.ownership.claimed_late(client_id, conn_id, gen, now)

    def claim_lost(self, client_id: str, conn_id: int, now: float) -> list[Action]:
        """A CONNECT of the same client id on another node came after this unclaimed connection was
        accepted: the newer one has the session, this one ends as taken over [MQTT-3.1.4-3] (MQTT 5:
        DISCONNECT 0x8E)."""
        session = self.ownership.by_id.get(client_id)
        if session is None or session.conn is None or not self.ownership.unclaimed_conn(client_id, conn_id):
            return []
        return self._taken_over(session.conn, now)

    def fence(self, now: float, keep: set[int] | frozenset[int] = frozenset()) -> list[Action]:
        """This node lost its lease: close every connection, publish nothing, forget every session (the
        engine gave them and their wills to the other nodes). The connections in ``keep`` that the engine
        never had (accepted while it could not be reached) stay: nothing of theirs was given away."""
        kept = {u.client_id: u.conn_id for u in self.unclaimed() if u.conn_id in keep}
        for conn in list(self.connections.conns.values()):
            if conn.conn_id in kept.values():
                continue
            if conn.state == CONNECTED and conn.protocol_level == PROTOCOL_5:
                self.outbox.send(conn, Disconnect(ReasonCode.USE_ANOTHER_SERVER))  # 0x9C
            self.connections.close(conn, "this node lost its lease in the cluster")
        self.ownership.forget_all(kept)
        if self.intents is not None:
            self.intents.take()
        return self.outbox.take()

    def shutdown(self, now: float, keep_wills: bool = False) -> list[Action]:
        """Close every connection (DISCONNECT 0x8B in MQTT 5).

        ``keep_wills`` (a persistent store, ``shutdown_wills = "keep"``): the sessions stay stored as
        connected, so that at the next start their wills are recovered as pending, with the grace
        period. Otherwise the wills follow the normal rules now; connections holding a will are
        closed first, so that subscribers still connected get them.
        """
        connections = self.connections
        conns = sorted(connections.conns.values(), key=lambda c: c.session is None or c.session.will is None)
        for conn in conns:
            if conn.state == CONNECTED:
                if conn.protocol_level == PROTOCOL_5:
                    self.outbox.send(conn, Disconnect(ReasonCode.SERVER_SHUTTING_DOWN))
                if keep_wills:
                    self.wills.kept_at_shutdown(conn.session, now)
                    connections.close(conn, "server shutting down")
                    continue
                connections.end(conn, now, _SHUTDOWN)
            elif conn.state in (NEW, AUTHENTICATING):
                connections.close(conn, "server shutting down")
        return self.outbox.take()
