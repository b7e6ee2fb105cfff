"""``lastwill demo``: the seed scenario and the "why didn't I get the will?" cases, end to end.

Runs against an embedded lastwill broker it starts itself, or against any broker (``--broker HOST:PORT``).
Every client, the observer included, is paho-mqtt, never lastwill's own code, so that the verdicts are
an honest check of whatever broker is on the other end. Each case prints a timeline (elapsed seconds
from the start of the case), the rule of the specification it checks with its id, what happened, and
PASS or FAIL. Exit status: 0 if every case passes, 1 if one fails, 2 if the broker cannot be used.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

try:  # paho-mqtt is needed by the demo only, not by the broker
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode
except ImportError:  # pragma: no cover - reported by run()
    mqtt = None

# The demo is a client of the broker, not part of the core: it may read the clock and sleep.
_now = time.monotonic  # noqa: TID251
_sleep = time.sleep  # noqa: TID251

# The seed (../shared/seed/): a Go Paho client with these exact values.
SEED_CLIENT_ID = "go-mqtt-example"
SEED_TOPIC = "test/lwt"
SEED_WILL = "Client disconnected unexpectedly"
SEED_MESSAGE = "Client connected successfully"

CONNECT_TIMEOUT = 5.0      # for a CONNACK, a PUBACK, a SUBACK
QUIET_WINDOW = 1.0         # how long "no will" is watched for when the will would be published at once
AT_ONCE = 0.5              # a will due "at once" (crash, DISCONNECT 0x04, Clean Start 1) must come within this
# A will due at a deadline (1.5 x Keep Alive, Will Delay, Session Expiry) must never come before it and at
# most this much after it. The spec counts these intervals in whole seconds, and a broker that keeps time
# in whole seconds (mosquitto does) fires up to 1 s after the exact deadline; 0.25 s more for scheduling.
DEFAULT_TOLERANCE = 1.25
RECONNECT_AFTER = 0.5      # cases 5 and 6: reconnect this long after the crash
KEEPALIVE_WATCH = 5.0      # case 3: how long past the tolerance to keep watching, to tell how late a will is


class DemoError(Exception):
    """The demo cannot run at all (broker unreachable, not MQTT, refuses the observer): one line."""


class CaseFailed(Exception):
    """A case cannot go on (e.g. a client's CONNECT refused): FAIL with this as what happened."""


# --------------------------------------------------------------------------------------------------
# Output


class Timeline:
    """Events of one case with their elapsed time, from several threads (client, observer, broker log).

    An event is logged with the time it happened, which may be a little before it is logged (a client
    notes "sent DISCONNECT" after paho has written it), so ``sorted()`` gives the order in time.
    """

    def __init__(self) -> None:
        self.t0 = _now()
        self.events: list[tuple[float, str]] = []
        self.lock = threading.Lock()

    def log(self, text: str, at: float | None = None) -> None:
        elapsed = (_now() if at is None else at) - self.t0
        with self.lock:
            self.events.append((elapsed, text))

    def sorted(self) -> list[tuple[float, str]]:
        with self.lock:
            return sorted(self.events, key=lambda e: e[0])   # stable: same time keeps logging order


@dataclass
class Received:
    at: float
    topic: str
    payload: str
    retain: bool
    qos: int


@dataclass
class CaseResult:
    number: int
    title: str
    spec: str
    passed: bool = False
    observed: str = ""
    events: list[tuple[float, str]] = field(default_factory=list)


class _BrokerLogToTimeline(logging.Handler):
    """The embedded broker's will decisions (logger ``lastwill.will``), shown in the current case."""

    def __init__(self, demo: Demo):
        super().__init__(logging.INFO)
        self.demo = demo

    def emit(self, record: logging.LogRecord) -> None:
        tl = self.demo.timeline
        if tl is not None:
            tl.log(f"broker log: {record.getMessage()}")


# --------------------------------------------------------------------------------------------------
# paho-mqtt clients


def _props(packet_type: int, **values) -> Properties:
    p = Properties(packet_type)
    for k, v in values.items():
        setattr(p, k, v)
    return p


def _new_paho(client_id: str, version: int, clean: bool = True) -> mqtt.Client:
    proto = {4: mqtt.MQTTv311, 5: mqtt.MQTTv5}[version]
    kw = {} if version == 5 else {"clean_session": clean}
    return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto, **kw)


class Observer:
    """paho-mqtt, MQTT 5, QoS 1, on paho's background thread: records every message on ``topic``."""

    def __init__(self, demo: Demo, host: str, port: int, topic: str, client_id: str):
        self.demo = demo
        self.messages: list[Received] = []
        self.cond = threading.Condition()
        self.client = _new_paho(client_id, 5)
        self._connack: list = []
        self._suback: list = []
        self.lost = False
        self.client.on_connect = lambda c, u, flags, rc, props: self._connack.append(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, props: self._suback.append(rcs)
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        where = f"{host}:{port}"
        try:
            self.client.connect(host, port, keepalive=60, clean_start=True)
        except OSError as e:
            raise DemoError(f"cannot connect to {where}: {e.strerror or e}") from None
        self.client.loop_start()
        if not _wait(lambda: bool(self._connack), CONNECT_TIMEOUT):
            self.close()
            raise DemoError(f"no CONNACK from {where} within {CONNECT_TIMEOUT:g} s: is it an MQTT broker?")
        rc = self._connack[0]
        if rc.is_failure:
            self.close()
            raise DemoError(f"{where} refused the observer's MQTT 5 CONNECT: {rc}")
        self.client.subscribe(topic, qos=1)
        if not _wait(lambda: bool(self._suback), CONNECT_TIMEOUT):
            self.close()
            raise DemoError(f"no SUBACK from {where} within {CONNECT_TIMEOUT:g} s")
        granted = self._suback[0][0]
        if granted.is_failure:
            self.close()
            raise DemoError(f"{where} refused the observer's subscription to {topic}: {granted}")

    def _on_message(self, client, userdata, msg) -> None:
        r = Received(_now(), msg.topic, msg.payload.decode("utf-8", "replace"), bool(msg.retain), msg.qos)
        tl = self.demo.timeline   # logged before a waiting case is woken, so it lands in that case
        if tl is not None:
            tl.log(f"observer got {r.topic} {r.payload!r} (QoS {r.qos}{', retained' if r.retain else ''})", r.at)
        with self.cond:
            self.messages.append(r)
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, rc, props) -> None:
        self.lost = True
        tl = self.demo.timeline
        if tl is not None:
            tl.log(f"observer lost its connection to the broker: {rc}")

    def wait_for(self, topic: str, payload: str, since: float, until: float) -> Received | None:
        """The first message ``topic``/``payload`` received at or after ``since``, waiting until ``until``."""
        with self.cond:
            while True:
                for m in self.messages:
                    if m.at >= since and m.topic == topic and m.payload == payload:
                        return m
                left = until - _now()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def close(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()


def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = _now() + timeout
    while not cond():
        if _now() >= deadline:
            return False
        _sleep(0.005)
    return True


class Client:
    """A paho-mqtt client driven step by step with ``loop()`` (no thread), so that it can crash or go silent."""

    def __init__(self, host: str, port: int, client_id: str, *, version: int, keepalive: int = 60,
                 will: tuple[str, str, int] | None = None, will_delay: int | None = None, clean: bool = True,
                 session_expiry: int | None = None):
        self.client = _new_paho(client_id, version, clean)
        self.client_id = client_id
        self.version = version
        self.connack: tuple | None = None
        self.client.on_connect = lambda c, u, flags, rc, props: setattr(self, "connack", (flags, rc))
        if will is not None:
            wp = _props(PacketTypes.WILLMESSAGE, WillDelayInterval=will_delay) if will_delay is not None else None
            self.client.will_set(*will, retain=False, properties=wp)
        kw = {}
        if version == 5:
            kw["clean_start"] = clean
            if session_expiry is not None:
                kw["properties"] = _props(PacketTypes.CONNECT, SessionExpiryInterval=session_expiry)
        self.sent_connect = _now()   # paho writes CONNECT inside connect() when it has no thread
        try:
            self.client.connect(host, port, keepalive=keepalive, **kw)
        except OSError as e:
            raise CaseFailed(f"client {client_id} could not connect: {e.strerror or e}") from None
        if not self.pump(lambda: self.connack is not None, CONNECT_TIMEOUT):
            self.close_socket()
            raise CaseFailed(f"client {client_id}: no CONNACK within {CONNECT_TIMEOUT:g} s")
        self.connected_at = _now()
        flags, rc = self.connack
        if rc.is_failure:
            self.close_socket()
            raise CaseFailed(f"client {client_id}: CONNECT refused: {rc}")
        self.session_present = bool(flags.session_present)

    def pump(self, cond: Callable[[], bool], timeout: float) -> bool:
        deadline = _now() + timeout
        while not cond():
            if _now() >= deadline:
                return False
            if self.client.loop(0.01) != mqtt.MQTT_ERR_SUCCESS and not cond():
                return cond()
        return True

    def publish(self, topic: str, payload: str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos)
        if not self.pump(info.is_published, CONNECT_TIMEOUT):
            raise CaseFailed(f"client {self.client_id}: no PUBACK within {CONNECT_TIMEOUT:g} s")

    def crash(self) -> float:
        """Close the TCP connection with no DISCONNECT, like a process that died; returns when."""
        t = _now()
        self.close_socket()
        return t

    def close_socket(self) -> None:
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:  # pragma: no cover
                pass

    def disconnect(self, reason: int | None = None, session_expiry: int | None = None) -> float:
        """Send DISCONNECT (with ``reason``, MQTT 5) and let paho close the connection; returns when sent."""
        kw = {}
        if reason is not None:
            kw["reasoncode"] = ReasonCode(PacketTypes.DISCONNECT, identifier=reason)
        if session_expiry is not None:
            kw["properties"] = _props(PacketTypes.DISCONNECT, SessionExpiryInterval=session_expiry)
        t = _now()
        self.client.disconnect(**kw)
        self.pump(lambda: self.client.socket() is None, 1.0)
        self.close_socket()
        return t


# --------------------------------------------------------------------------------------------------
# The cases


@dataclass
class Case:
    number: int
    slug: str
    title: str
    spec: str
    run: Callable[[Demo], tuple[bool, str]]


class Demo:
    def __init__(self, host: str, port: int, out: TextIO | None, tolerance: float):
        self.host = host
        self.port = port
        self.out = out
        self.tolerance = tolerance
        self.run_id = secrets.token_hex(3)
        self.timeline: Timeline | None = None
        self.observer: Observer | None = None

    # helpers used by the cases ------------------------------------------------------------------

    def log(self, text: str, at: float | None = None) -> None:
        self.timeline.log(text, at)

    def topic(self, case: Case) -> str:
        return f"{SEED_TOPIC}/{case.slug}/{self.run_id}"

    def client_id(self, case: Case) -> str:
        return f"lwt-demo-{self.run_id}-{case.number}"

    def connect(self, client_id: str, *, version: int, will: tuple[str, str, int] | None = None,
                will_delay: int | None = None, clean: bool = True, session_expiry: int | None = None,
                keepalive: int = 60) -> Client:
        c = Client(self.host, self.port, client_id, version=version, keepalive=keepalive, will=will,
                   will_delay=will_delay, clean=clean, session_expiry=session_expiry)
        parts = [f"MQTT {'3.1.1' if version == 4 else '5.0'}"]
        if version == 5:
            parts.append(f"Clean Start {int(clean)}")
            if session_expiry is not None:
                parts.append(f"Session Expiry {session_expiry} s")
        if keepalive != 60:
            parts.append(f"Keep Alive {keepalive} s")
        if will:
            parts.append(f"will on {will[0]}, QoS {will[2]}")
            if will_delay is not None:
                parts.append(f"Will Delay {will_delay} s")
        else:
            parts.append("no will")
        self.log(f"client {client_id} connected ({', '.join(parts)}); session present {int(c.session_present)}",
                 c.connected_at)
        return c

    def cleanup_session(self, client_id: str) -> None:
        """End a session the case left behind on the broker (Clean Start 1, Session Expiry 0): not logged."""
        try:
            c = Client(self.host, self.port, client_id, version=5, clean=True, session_expiry=0)
            c.disconnect()
        except CaseFailed:
            pass

    def expect_will(self, topic: str, payload: str, start: float, *, earliest: float, latest: float,
                    watch_until: float, what: str) -> tuple[bool, str]:
        """A will must arrive in [start+earliest, start+latest]; watch until start+watch_until to say when."""
        m = self.observer.wait_for(topic, payload, start, start + watch_until)
        if m is None:
            self.log(f"no will within {watch_until:g} s")
            return False, f"no will on {topic} within {watch_until:g} s of {what}"
        delay = m.at - start
        if delay < earliest:
            return False, f"will published {delay:.3f} s after {what}: too early, not before {earliest:g} s"
        seen = f"will published {delay:.3f} s after {what}"
        if earliest == 0:
            seen += f", expected at once (within {latest:g} s)"
        else:
            seen += f", expected at {earliest:g} s: {delay - earliest:.3f} s after the deadline"
        if delay > latest:
            return False, seen + (f", beyond the {latest - earliest:g} s tolerance" if earliest else ": too late")
        return True, seen

    def expect_no_will(self, topic: str, payload: str, start: float, window: float,
                       what: str) -> tuple[bool, str]:
        m = self.observer.wait_for(topic, payload, start, start + window)
        if m is not None:
            return False, f"will published {m.at - start:.3f} s after {what}"
        self.log(f"no will within {window:g} s")
        return True, f"no will within {window:g} s of {what}"

    # running --------------------------------------------------------------------------------------

    def run_case(self, case: Case) -> CaseResult:
        result = CaseResult(case.number, case.title, case.spec)
        self.timeline = Timeline()
        try:
            result.passed, result.observed = case.run(self)
        except CaseFailed as e:
            self.log(str(e))
            result.passed, result.observed = False, str(e)
        except Exception as e:  # a demo bug or a broker misbehaving badly: FAIL this case, go on
            self.log(f"error: {type(e).__name__}: {e}")
            result.passed, result.observed = False, f"error: {type(e).__name__}: {e}"
        _sleep(0.05)   # let an in-flight callback or broker log line of this case land in it
        result.events = self.timeline.sorted()
        self.timeline = None
        if self.out is not None:
            print(f"\nCase {case.number}  {case.title}", file=self.out)
            for t, text in result.events:
                print(f"  +{t:.3f}s  {text}", file=self.out)
            print(f"  spec:     {case.spec}", file=self.out)
            print(f"  observed: {result.observed}", file=self.out)
            print(f"  {'PASS' if result.passed else 'FAIL'}", file=self.out, flush=True)
        return result


# Case 1 to 8 ---------------------------------------------------------------------------------------


def _seed_client(demo: Demo) -> Client:
    c = demo.connect(SEED_CLIENT_ID, version=4, will=(SEED_TOPIC, SEED_WILL, 1))
    c.publish(SEED_TOPIC, SEED_MESSAGE, 1)
    demo.log(f"client published {SEED_MESSAGE!r} to {SEED_TOPIC} (QoS 1, PUBACK received)")
    return c


def case_seed_disconnect(demo: Demo) -> tuple[bool, str]:
    start = _now()
    c = _seed_client(demo)
    got = demo.observer.wait_for(SEED_TOPIC, SEED_MESSAGE, start, _now() + CONNECT_TIMEOUT)
    t = c.disconnect()
    demo.log("client sent DISCONNECT and closed the connection", t)
    ok, seen = demo.expect_no_will(SEED_TOPIC, SEED_WILL, t, QUIET_WINDOW, "the DISCONNECT")
    if got is None:
        return False, f"the observer never got {SEED_MESSAGE!r}; {seen}"
    return ok, f"the observer got {SEED_MESSAGE!r}; {seen}"


def case_seed_crash(demo: Demo) -> tuple[bool, str]:
    start = _now()
    c = _seed_client(demo)
    got = demo.observer.wait_for(SEED_TOPIC, SEED_MESSAGE, start, _now() + CONNECT_TIMEOUT)
    early = demo.observer.wait_for(SEED_TOPIC, SEED_WILL, start, start)
    t = c.crash()
    demo.log("client closed its socket without DISCONNECT (crash)", t)
    ok, seen = demo.expect_will(SEED_TOPIC, SEED_WILL, t, earliest=0, latest=AT_ONCE,
                                watch_until=AT_ONCE + QUIET_WINDOW, what="the crash")
    if early is not None:
        return False, f"a will arrived before the crash; {seen}"
    if got is None:
        return False, f"the observer never got {SEED_MESSAGE!r}; {seen}"
    return ok, seen


def case_keepalive(demo: Demo) -> tuple[bool, str]:
    case = CASES[3]
    topic, cid = demo.topic(case), demo.client_id(case)
    keepalive = 1
    c = demo.connect(cid, version=4, keepalive=keepalive, will=(topic, SEED_WILL, 1))
    t = c.sent_connect
    demo.log(f"client goes silent (no packets, socket left open); its last packet was the CONNECT at "
             f"+{t - demo.timeline.t0:.3f}s")
    deadline = 1.5 * keepalive
    try:
        ok, seen = demo.expect_will(topic, SEED_WILL, t, earliest=deadline, latest=deadline + demo.tolerance,
                                    watch_until=deadline + demo.tolerance + KEEPALIVE_WATCH,
                                    what="the client's last packet")
    finally:
        c.close_socket()
    return ok, seen


def _delayed_will_client(demo: Demo, case: Case, will_delay: int, session_expiry: int) -> Client:
    return demo.connect(demo.client_id(case), version=5, clean=True, session_expiry=session_expiry,
                        will=(demo.topic(case), SEED_WILL, 1), will_delay=will_delay)


def case_will_delay(demo: Demo) -> tuple[bool, str]:
    case = CASES[4]
    delay = 2
    c = _delayed_will_client(demo, case, delay, 60)
    t = c.crash()
    demo.log("client closed its socket without DISCONNECT (crash)", t)
    ok, seen = demo.expect_will(demo.topic(case), SEED_WILL, t, earliest=delay, latest=delay + demo.tolerance,
                                watch_until=delay + demo.tolerance + QUIET_WINDOW, what="the crash")
    demo.cleanup_session(demo.client_id(case))
    return ok, seen


def _crash_and_reconnect(demo: Demo, case: Case, clean: bool) -> tuple[float, float, Client]:
    c = _delayed_will_client(demo, case, 2, 60)
    t = c.crash()
    demo.log("client closed its socket without DISCONNECT (crash)", t)
    _sleep(max(0.0, t + RECONNECT_AFTER - _now()))
    r = _now()
    c2 = demo.connect(demo.client_id(case), version=5, clean=clean, session_expiry=60)
    return t, r, c2


def case_resume(demo: Demo) -> tuple[bool, str]:
    case = CASES[5]
    delay = 2
    t, _, c2 = _crash_and_reconnect(demo, case, clean=False)
    try:
        ok, seen = demo.expect_no_will(demo.topic(case), SEED_WILL, t, delay + demo.tolerance, "the crash")
    finally:
        c2.disconnect(session_expiry=0)
    note = "" if c2.session_present else " (but the reconnect got session present 0)"
    return ok, f"reconnected {RECONNECT_AFTER:g} s after the crash with Clean Start 0; {seen}{note}"


def case_clean_start(demo: Demo) -> tuple[bool, str]:
    case = CASES[6]
    delay = 2
    t, r, c2 = _crash_and_reconnect(demo, case, clean=True)
    try:
        m = demo.observer.wait_for(demo.topic(case), SEED_WILL, t, t + delay + demo.tolerance + QUIET_WINDOW)
    finally:
        c2.disconnect(session_expiry=0)
    if m is None:
        demo.log(f"no will within {delay + demo.tolerance + QUIET_WINDOW:g} s of the crash")
        return False, (f"no will within {delay + demo.tolerance + QUIET_WINDOW:g} s of the crash, although the Clean "
                       f"Start 1 reconnect at {r - t:.1f} s ended the old session and the {delay} s Will Delay passed")
    after_crash, after_reconnect = m.at - t, m.at - r
    if m.at < r:
        return False, f"will published {after_crash:.3f} s after the crash, before the reconnect (Will Delay {delay} s)"
    if after_reconnect > AT_ONCE:
        return False, (f"will published {after_reconnect:.3f} s after the reconnect ({after_crash:.3f} s after "
                       f"the crash): not at once" + (", at the Will Delay" if after_crash >= delay else ""))
    return True, (f"will published {after_reconnect:.3f} s after the Clean Start 1 reconnect "
                  f"({after_crash:.3f} s after the crash, before the {delay} s Will Delay)")


def case_session_expiry(demo: Demo) -> tuple[bool, str]:
    case = CASES[7]
    delay, expiry = 5, 1
    c = _delayed_will_client(demo, case, delay, expiry)
    t = c.crash()
    demo.log("client closed its socket without DISCONNECT (crash)", t)
    ok, seen = demo.expect_will(demo.topic(case), SEED_WILL, t, earliest=expiry, latest=expiry + demo.tolerance,
                                watch_until=delay + demo.tolerance, what="the crash")
    return ok, seen + f" (the Session Expiry, not the {delay} s Will Delay)"


def case_reason_04(demo: Demo) -> tuple[bool, str]:
    case = CASES[8]
    c = demo.connect(demo.client_id(case), version=5, will=(demo.topic(case), SEED_WILL, 1))
    t = c.disconnect(reason=0x04)
    demo.log("client sent DISCONNECT with reason 0x04 (Disconnect with Will Message)", t)
    return demo.expect_will(demo.topic(case), SEED_WILL, t, earliest=0, latest=AT_ONCE,
                            watch_until=AT_ONCE + QUIET_WINDOW, what="the DISCONNECT 0x04")


CASES: dict[int, Case] = {c.number: c for c in [
    Case(1, "seed", "the seed client disconnects normally (MQTT 3.1.1)",
         "on receipt of DISCONNECT the Server MUST discard the Will Message without publishing it "
         "[MQTT-3.14.4-3, MQTT-3.1.2-10 in 3.1.1]", case_seed_disconnect),
    Case(2, "seed", "the seed client crashes: socket closed without DISCONNECT (MQTT 3.1.1)",
         "the Will Message MUST be published when the Network Connection is closed without a DISCONNECT "
         "[MQTT-3.1.2-8 in 3.1.1]", case_seed_crash),
    Case(3, "keepalive", "keep-alive expiry: Keep Alive 1 s, the client goes silent (MQTT 3.1.1)",
         "with no packet from the client within 1.5 x Keep Alive the Server MUST close the connection as if "
         "the network had failed, so the will is published [MQTT-3.1.2-24 in 3.1.1, MQTT-3.1.2-22 in 5.0]",
         case_keepalive),
    Case(4, "will-delay", "Will Delay Interval 2 s, Session Expiry 60 s, crash (MQTT 5.0)",
         "the Server delays publishing the Will Message until the Will Delay Interval has passed or the Session "
         "ends, whichever happens first [MQTT-3.1.2-8, MQTT-3.1.3-9 in 5.0]", case_will_delay),
    Case(5, "resume", "crash, then reconnect within the Will Delay with Clean Start 0 (MQTT 5.0)",
         "if a new Network Connection to this Session is made before the Will Delay Interval has passed, the "
         "Server MUST NOT send the Will Message [MQTT-3.1.3-9 in 5.0]", case_resume),
    Case(6, "clean-start", "crash, then reconnect within the Will Delay with Clean Start 1 (MQTT 5.0)",
         "Clean Start 1 MUST discard the existing Session [MQTT-3.1.2-4], and a will is published when its "
         "Session ends, even before the Will Delay has passed [MQTT-3.1.2-8 in 5.0]", case_clean_start),
    Case(7, "session-expiry", "Session Expiry 1 s shorter than Will Delay 5 s, crash (MQTT 5.0)",
         "the Will Message MUST be published when the Will Delay Interval has elapsed or the Session ends, "
         "whichever is first [MQTT-3.1.2-8, MQTT-3.1.3-9 in 5.0]", case_session_expiry),
    Case(8, "reason-0x04", "DISCONNECT with reason 0x04 Disconnect with Will Message (MQTT 5.0)",
         "only a DISCONNECT with reason 0x00 deletes the will [MQTT-3.1.2-10 in 5.0]; after 0x04 it MUST be "
         "published [MQTT-3.1.2-8 in 5.0, reason code table 3.14.2.1]", case_reason_04),
]}


# --------------------------------------------------------------------------------------------------
# Entry points


def parse_broker(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``HOST`` (port 1883); a ``tcp://`` or ``mqtt://`` prefix is allowed."""
    for prefix in ("tcp://", "mqtt://"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    host, port = text, "1883"
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad broker address {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad broker address {text!r}")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad broker address {text!r}: expected HOST:PORT")
    return host, int(port)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Run the seed scenario and the 'why didn't I get the will?' cases with paho-mqtt "
                          "clients against an embedded lastwill broker or any broker (--broker). "
                          "Exit status 0 if every case passes, 1 if one fails, 2 if the broker cannot be used.")
    parser.add_argument("--broker", metavar="HOST:PORT",
                        help="run against this broker instead of an embedded lastwill broker")
    parser.add_argument("--case", type=int, action="append", choices=sorted(CASES), metavar="N",
                        help=f"run only case N (repeatable; 1 to {len(CASES)}; default all)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the timeline")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="SECONDS",
                        help=f"how late a timed will may be (default {DEFAULT_TOLERANCE:g}; never early)")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if mqtt is None:
        print("lastwill demo: needs paho-mqtt (pip install 'paho-mqtt>=2.1')", file=err)
        return 2
    numbers = sorted(set(args.case or CASES))
    embedded = None
    try:
        if args.broker:
            try:
                host, port = parse_broker(args.broker)
            except ValueError as e:
                raise DemoError(str(e)) from None
            label = f"broker at {host}:{port}"
        else:
            from .testing import BrokerThread  # in memory, port 0, on its own loop in a thread

            try:
                embedded = BrokerThread().start()
            except Exception as e:
                raise DemoError(f"the embedded broker did not start: {e}") from None
            host, port = "127.0.0.1", embedded.port
            label = f"embedded lastwill broker on {host}:{port} (in memory)"
        demo = Demo(host, port, None if args.json else out, args.tolerance)
        handler = None
        if embedded is not None:
            handler = _BrokerLogToTimeline(demo)
            will_log = logging.getLogger("lastwill.will")
            will_log.addHandler(handler)
            old_level = will_log.level
            will_log.setLevel(logging.INFO)
        obs_topic = f"{SEED_TOPIC}/#"
        demo.observer = Observer(demo, host, port, obs_topic, f"lwt-demo-{demo.run_id}-observer")
        started = _now()
        if not args.json:
            print(f"lastwill demo: {label}", file=out)
            print(f"observer: paho-mqtt, MQTT 5, subscribed to {obs_topic} with QoS 1; all clients are paho-mqtt",
                  file=out)
            print(f"timed wills may be up to {demo.tolerance:g} s late, never early; run id {demo.run_id}",
                  file=out, flush=True)
        try:
            results = []
            for n in numbers:
                if demo.observer.lost:
                    case = CASES[n]
                    results.append(CaseResult(n, case.title, case.spec, False,
                                              "not run: the observer lost its connection to the broker"))
                    continue
                results.append(demo.run_case(CASES[n]))
        finally:
            demo.observer.close()
            if handler is not None:
                will_log.removeHandler(handler)
                will_log.setLevel(old_level)
        elapsed = _now() - started
    except DemoError as e:
        print(f"lastwill demo: {e}", file=err)
        return 2
    finally:
        if embedded is not None:
            embedded.stop()
    passed = sum(r.passed for r in results)
    if args.json:
        json.dump({
            "broker": label, "run_id": demo.run_id, "tolerance": demo.tolerance, "elapsed": round(elapsed, 3),
            "passed": passed == len(results),
            "cases": [{"case": r.number, "title": r.title, "spec": r.spec, "result": "PASS" if r.passed else "FAIL",
                       "observed": r.observed,
                       "timeline": [{"t": round(t, 3), "event": e} for t, e in r.events]} for r in results],
        }, out, indent=2, ensure_ascii=False)
        print(file=out)
    else:
        failed = [str(r.number) for r in results if not r.passed]
        print(f"\n{passed} of {len(results)} cases passed in {elapsed:.1f} s"
              + (f"; FAILED: case {', '.join(failed)}" if failed else ""), file=out, flush=True)
    return 0 if passed == len(results) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lastwill demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))
