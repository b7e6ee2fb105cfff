"""The edge side of authentication and authorization (docs/security.md).

* Loads ``password_file`` and ``acl_file`` at start-up (a bad file stops start-up: ConfigError naming
  the file and line) and again on ``reload()`` (SIGHUP): a bad file then keeps the rules in force
  and logs the error; connections are never dropped by a reload.
* Answers the core's ``Authenticate`` actions. The password hash is slow by design (PBKDF2, about
  80 ms), so it runs in a small thread pool (hashlib releases the GIL), never on the event loop; the
  connection stops being read meanwhile, and the core holds what it already sent. A user name and
  password verified recently are answered at once from a cache (lastwill.auth.PasswordFile.cached).
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from ..auth import Acl, AuthFileError, PasswordFile
from ..config import Config
from ..core.actions import Authenticate
from ..core.throttle import LoginThrottle, Verdict

log = logging.getLogger("lastwill.auth")


def _address(peer: str | None) -> str:
    """The host part of "HOST:PORT" ("[::1]:5" -> "::1"): what login throttling keys on."""
    if not peer:
        return "?"
    host = peer.rpartition(":")[0] or peer
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class AuthHost(Protocol):
    """What password checks and ACL reloads need of the server."""

    config: Config
    loop: asyncio.AbstractEventLoop | None

    def set_acl(self, acl: Acl | None) -> None:
        """The core checks these rules from now on."""

    def answer(self, conn_id: int, ok: bool, throttled: str | None = None) -> None:
        """The password check of the connection's CONNECT is done: the core goes on with it.
        ``throttled``: refused without a check (why), CONNACK 0x89."""

    def peer_of(self, conn_id: int) -> str | None:
        """"HOST:PORT" of the connection's peer."""

    def hold_reading(self, conn_id: int) -> None:
        """Stop reading the connection until ``release_reading`` (the read budget does not resume it)."""

    def release_reading(self, conn_id: int) -> None: ...

    def is_open(self, conn_id: int) -> bool: ...


class Security:
    def __init__(self, server: AuthHost):
        self.server = server
        self.config = server.config
        self.passwords: PasswordFile | None = None
        self.acl: Acl | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.checks = 0  # password checks run in the threads (not answered from the cache)
        # password guessing: backoff per source address and user name (core/throttle.py); a failing
        # CONNACK is held at most half connect_timeout, so that the connection is still there to get it
        self.throttle = LoginThrottle(self.config.login_backoff, self.config.login_backoff_max,
                                      answer_max=min(5.0, self.config.connect_timeout / 2))

    # -- the files --------------------------------------------------------------------------------
    def load(self) -> None:
        """At start-up: raises AuthFileError (a ConfigError) naming the file and line."""
        cfg = self.config
        if cfg.password_file:
            self._use_passwords(PasswordFile.load(cfg.password_file))
        if cfg.acl_file:
            self._use_acl(Acl.load(cfg.acl_file))
        if not cfg.password_file and not cfg.anonymous_allowed():
            # allow_anonymous = false and nothing to verify a user name against (mosquitto's behaviour)
            who = "every CONNECT without a client certificate naming the user (tls_cert_cn_as_username)" \
                if cfg.tls_cert_cn_as_username else "every CONNECT"
            log.warning("allow_anonymous is false and password_file is not set: no user name can be verified, so "
                        "%s is refused (0x87 Not authorized, 3.1.1 return code 5)", who)
        if cfg.acl_file and not cfg.password_file and not cfg.tls_cert_cn_as_username:
            log.warning("acl_file is set without password_file: user names are not verified, so a client can "
                        "claim any user's rules (docs/security.md)")

    def reload(self) -> bool:
        """SIGHUP: read both files again. A file that fails keeps the rules in force (logged, naming the
        file and line). True if everything configured was reloaded."""
        cfg = self.config
        if not cfg.password_file and not cfg.acl_file:
            log.info("reload: neither password_file nor acl_file is set; nothing to reload")
            return True
        ok = True
        for key, path, loader, use in (("password_file", cfg.password_file, PasswordFile.load, self._use_passwords),
                                       ("acl_file", cfg.acl_file, Acl.load, self._use_acl)):
            if not path:
                continue
            try:
                loaded = loader(path)
            except AuthFileError as e:
                ok = False
                log.error("reload: %s; the previous %s stays in force", e, key)
                continue
            use(loaded, reloaded=True)
        return ok

    def _use_passwords(self, pw: PasswordFile, reloaded: bool = False) -> None:
        self.passwords = pw
        for warning in pw.warnings:
            log.warning("%s", warning)
        log.info("%s password_file %r: %d user(s)", "reloaded" if reloaded else "loaded", pw.path, len(pw))

    def _use_acl(self, acl: Acl, reloaded: bool = False) -> None:
        self.acl = acl
        self.server.set_acl(acl)
        log.info("%s acl_file %r: %s", "reloaded" if reloaded else "loaded", acl.path, acl.summary())

    # -- password checks ----------------------------------------------------------------------------
    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            workers = max(1, min(4, os.cpu_count() or 1))
            self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lastwill-auth")
        return self._executor

    def authenticate(self, action: Authenticate) -> None:
        server = self.server
        pw = self.passwords
        conn_id = action.conn_id
        if pw is not None and pw.cached(action.username, action.password):
            server.answer(conn_id, True)  # verified recently: never throttled
            return
        now = server.loop.time()
        blocked = self.throttle.check(_address(server.peer_of(conn_id)), action.username, now)
        if blocked.verdict is Verdict.THROTTLED:
            server.answer(conn_id, False, f"{blocked.key_kind} {blocked.key[:100]!r} after {blocked.failures} failed "
                                          f"password check(s), for {blocked.until - now:.1f}s more")
            return
        server.hold_reading(conn_id)  # what the client sends next waits in the socket until the answer

        def check() -> bool:
            if pw is None or not server.is_open(conn_id):  # closed while waiting for a thread
                return False
            return pw.verify(action.username, action.password)

        self.checks += 1
        future = server.loop.run_in_executor(self.executor, check)
        future.add_done_callback(lambda f: self._checked(action, pw, f))

    def _checked(self, action: Authenticate, pw: PasswordFile | None, future) -> None:
        server = self.server
        if future.cancelled():  # the broker is stopping (close() cancelled the queued checks)
            return
        try:
            ok = bool(future.result())
        except Exception:  # pragma: no cover - verify does not raise; refuse if it ever does
            log.exception("password check for user %r failed; refusing the CONNECT", action.username)
            ok = False
        if server.loop is None or server.loop.is_closed():
            return
        address = _address(server.peer_of(action.conn_id))
        if ok:
            pw.remember(action.username, action.password)
            self.throttle.succeeded(address, action.username)
            self._answer(action.conn_id, True)
            return
        # a failed check: its address and user name back off, and the CONNACK 0x86 is held back
        delay = self.throttle.failed(address, action.username, server.loop.time())
        if delay > 0:
            server.loop.call_later(delay, self._answer, action.conn_id, False)
        else:
            self._answer(action.conn_id, False)

    def _answer(self, conn_id: int, ok: bool) -> None:
        server = self.server
        if server.loop is None or server.loop.is_closed():
            return
        server.release_reading(conn_id)
        server.answer(conn_id, ok)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
