"""Who a client is and what it may do (docs/security.md), as the core decides it.

Authentication: a CONNECT's user name is taken from the client's verified TLS certificate, accepted
as given (no password_file), refused (anonymous when allow_anonymous is off), or checked by the edge
against password_file (slow by design, so the core only asks: an ``Authenticate`` action, answered by
``BrokerCore.authenticated``). Authorization: the rules of acl_file, set (and replaced on SIGHUP) by
the edge; None: everything is allowed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from ..auth import READ, WRITE, Acl
from ..codec.packets import Connect
from ..codec.reason_codes import ReasonCode
from ..config import Config
from .sessions import Conn, Session


class AuthOutcome(Enum):
    ACCEPTED = "accepted"  # go on with the CONNECT
    REFUSED = "refused"  # CONNACK with the reason code, then close
    CHECKING = "checking"  # the edge is asked to check the password; the CONNECT waits


@dataclass(frozen=True, slots=True)
class AuthResult:
    outcome: AuthOutcome
    reason_code: ReasonCode | None = None
    why: str = ""


ACCEPTED = AuthResult(AuthOutcome.ACCEPTED)
CHECKING = AuthResult(AuthOutcome.CHECKING)


class Access:
    __slots__ = ("acl", "anonymous_allowed", "passwords", "username_of")

    def __init__(self, config: Config, username_of: Callable[[str], str | None]) -> None:
        self.acl: Acl | None = None
        self.anonymous_allowed = config.anonymous_allowed()
        self.passwords = bool(config.password_file)  # the edge checks passwords against password_file
        # the user name a client id's session was last connected with (for the ACL of its deliveries)
        self.username_of = username_of

    # -- authentication ----------------------------------------------------------------------------
    def authenticate(self, conn: Conn, p: Connect) -> AuthResult:
        """Who is the client? Sets ``conn.username``."""
        if conn.auth_done:  # the CONNECT handed back by authenticated(): its password was right
            return ACCEPTED
        if conn.cert_username is not None:  # proved by the client's TLS certificate (edge/tls.py)
            conn.username = conn.cert_username
            return ACCEPTED
        conn.username = p.username
        if p.username is None:  # anonymous (a password without a user name is ignored, as mosquitto does)
            if self.anonymous_allowed:
                return ACCEPTED
            # [MQTT-3.1.4-2] (3.1.1: [MQTT-3.2.2-5]) CONNACK 0x87 Not authorized (3.1.1: return code 5)
            return AuthResult(AuthOutcome.REFUSED, ReasonCode.NOT_AUTHORIZED,
                              "clients without a user name are not allowed (allow_anonymous)")
        if not self.passwords:
            if self.anonymous_allowed:
                return ACCEPTED  # the user name is taken as given (docs/security.md)
            # anonymous clients are not allowed and no user name can be verified: the name alone is no
            # proof, so every CONNECT is refused, as mosquitto does (start-up warns: edge/security.py)
            # [MQTT-3.1.4-2] (3.1.1: [MQTT-3.2.2-5])
            return AuthResult(AuthOutcome.REFUSED, ReasonCode.NOT_AUTHORIZED,
                              "no password_file to verify user names, and anonymous clients are not allowed "
                              "(allow_anonymous)")
        return CHECKING

    # -- authorization -------------------------------------------------------------------------------
    def may_publish(self, username: str | None, client_id: str, topic: str) -> bool:
        return self.acl is None or self.acl.allowed(username, client_id, topic, WRITE)

    def may_subscribe(self, username: str | None, client_id: str, topic_filter: str) -> bool:
        return self.acl is None or self.acl.may_subscribe(username, client_id, topic_filter)

    def may_read(self, client_id: str, topic: str) -> bool:
        """May the session of ``client_id`` receive a message on ``topic`` (checked as its user)?"""
        return self.acl is None or self.acl.allowed(self.username_of(client_id), client_id, topic, READ)

    def will_denied(self, session: Session, topic: str) -> str | None:
        """Why the session's will may not be published now (None: it may): checked again at publication,
        since the ACL may have been reloaded since the CONNECT, or the will recovered after a restart."""
        if self.acl is None or self.acl.allowed(session.username, session.client_id, topic, WRITE):
            return None
        return (f"the ACL (acl_file) does not let user {session.username!r} (client {session.client_id!r}) "
                f"publish on {topic!r}")
