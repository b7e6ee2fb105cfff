"""Authentication and authorization data: the password file and the ACL file (docs/security.md).

Pure parsing and matching. The only I/O is reading a file in ``PasswordFile.load`` and
``Acl.load``; the edge decides when (start-up, SIGHUP) and runs the slow password check in a thread.

**Password file**: one ``user:hash`` line per user (blank lines and ``#`` comments are skipped).
Hashes are mosquitto's formats, so files move both ways between lastwill and mosquitto 2.x:

* ``$7$ITERATIONS$SALT$HASH``: PBKDF2-HMAC-SHA512 (``hashlib.pbkdf2_hmac``), salt and 64-byte hash
  in base64. ``lastwill passwd`` writes these with ``DEFAULT_ITERATIONS`` (mosquitto_passwd: 101).
* ``$6$SALT$HASH``: one SHA-512 of password + salt (mosquitto 1.x). Read, never written: it is fast,
  so a stolen file is cheap to attack; loading reports such users as warnings.

**ACL file**: mosquitto's syntax (``user NAME``, ``topic [read|write|readwrite|deny] TOPIC``,
``pattern [read|write|readwrite|deny] TOPIC`` with ``%c`` and ``%u``, ``#`` comments). ``topic``
lines before any ``user`` line apply to clients without a user name; ``pattern`` lines apply to
every client. Anything not granted is denied; ``deny`` lines are checked first and win.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections import Counter, OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

# PBKDF2-HMAC-SHA512 iterations for new hashes: OWASP's 2023 figure for this KDF. About 83 ms per
# check on the development machine (docs/security.md); `lastwill passwd --iterations` changes it.
DEFAULT_ITERATIONS = 210_000
MAX_ITERATIONS = 10_000_000  # a hash asking for more is refused: one login would take seconds
SALT_BYTES = 12  # what mosquitto uses (and what it expects when it reads our file)
_CACHE_SIZE = 10_000


class AuthFileError(ConfigError):
    """A password or ACL file that cannot be used. The message names the setting, file and line."""

    def __init__(self, key: str, path: str, message: str, line: int | None = None):
        self.key, self.path, self.line = key, path, line
        where = f"{key} {str(path)!r}" + (f" line {line}" if line is not None else "")
        super().__init__(f"{where}: {message}")


def _read(key: str, path: str | Path) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise AuthFileError(key, str(path), f"cannot read it: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise AuthFileError(key, str(path), "not valid UTF-8", line) from None


# ==== passwords ===================================================================================


@dataclass(frozen=True, slots=True)
class PasswordHash:
    scheme: str  # "7" (PBKDF2-HMAC-SHA512) or "6" (salted SHA-512)
    iterations: int  # 0 for "6"
    salt: bytes
    digest: bytes

    def derive(self, password: bytes) -> bytes:
        if self.scheme == "7":
            return hashlib.pbkdf2_hmac("sha512", password, self.salt, self.iterations)
        return hashlib.sha512(password + self.salt).digest()

    def matches(self, password: bytes) -> bool:
        return hmac.compare_digest(self.derive(password), self.digest)  # constant time

    def text(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        digest = base64.b64encode(self.digest).decode()
        if self.scheme == "7":
            return f"$7${self.iterations}${salt}${digest}"
        return f"$6${salt}${digest}"


def hash_password(password: str | bytes, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None) -> str:
    """A new ``$7$`` (PBKDF2-HMAC-SHA512) hash of ``password``, as a password file stores it."""
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations: expected 1 to {MAX_ITERATIONS}, got {iterations}")
    pw = password.encode("utf-8") if isinstance(password, str) else password
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    return PasswordHash("7", iterations, salt, hashlib.pbkdf2_hmac("sha512", pw, salt, iterations)).text()


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"its {what} is not valid base64") from None


def parse_hash(text: str) -> PasswordHash:
    """``$7$...`` or ``$6$...`` -> PasswordHash. Raises ValueError saying what is wrong."""
    parts = text.split("$")
    if len(parts) == 5 and parts[0] == "" and parts[1] == "7":
        if not parts[2].isdigit() or not 1 <= int(parts[2]) <= MAX_ITERATIONS:
            raise ValueError(f"$7$ hash: iterations must be a number from 1 to {MAX_ITERATIONS}, got {parts[2]!r}")
        salt, digest = _b64(parts[3], "salt"), _b64(parts[4], "hash")
        if not salt or len(digest) != 64:
            raise ValueError(f"$7$ hash: expected a salt and a 64-byte PBKDF2-SHA512 hash, got {len(digest)} bytes")
        return PasswordHash("7", int(parts[2]), salt, digest)
    if len(parts) == 4 and parts[0] == "" and parts[1] == "6":
        salt, digest = _b64(parts[2], "salt"), _b64(parts[3], "hash")
        if not salt or len(digest) != 64:
            raise ValueError(f"$6$ hash: expected a salt and a 64-byte SHA-512 hash, got {len(digest)} bytes")
        return PasswordHash("6", 0, salt, digest)
    raise ValueError("not a password hash lastwill knows ($7$ PBKDF2-SHA512 or $6$ SHA-512, as written by "
                     "'lastwill passwd' or mosquitto_passwd); a plain-text password is not accepted")


def check_user_name(name: str) -> str | None:
    """Why ``name`` cannot be a user of a password file (None: it can)."""
    if not name:
        return "the user name is empty"
    if ":" in name or "\n" in name or "\r" in name:
        return "a user name in a password file cannot contain ':' or a line break"
    if "\x00" in name or len(name.encode("utf-8")) > 65535:
        return "not a valid MQTT user name (NUL, or longer than 65535 bytes)"
    return None


class PasswordFile:
    """The users and their hashes. ``verify`` is slow by design (run it off the event loop);
    ``cached``/``remember`` keep recently verified passwords so that a reconnect costs nothing."""

    KEY = "password_file"

    def __init__(self, entries: dict[str, PasswordHash] | None = None, path: str = "",
                 lines: list[str] | None = None, warnings: list[str] | None = None):
        self.entries = dict(entries or {})
        self.path = path
        self.lines = lines if lines is not None else [f"{u}:{h.text()}" for u, h in self.entries.items()]
        self.warnings = warnings or []
        # unknown users are checked against a hash with the file's usual parameters, so that
        # the answer takes as long whether or not the user exists
        common = Counter((h.scheme, h.iterations) for h in self.entries.values()).most_common(1)
        scheme, iterations = common[0][0] if common else ("7", DEFAULT_ITERATIONS)
        self._dummy = PasswordHash(scheme, iterations, os.urandom(SALT_BYTES), os.urandom(64))
        self._cache_key = os.urandom(32)  # this process only: the cache holds keyed digests
        self._cache: OrderedDict[tuple[str, bytes], PasswordHash] = OrderedDict()

    @classmethod
    def parse(cls, text: str, path: str = "<text>") -> PasswordFile:
        entries: dict[str, PasswordHash] = {}
        warnings = []
        lines = text.splitlines()
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep:
                raise AuthFileError(cls.KEY, path, "expected 'user:hash'", number)
            why = check_user_name(user)
            if why:
                raise AuthFileError(cls.KEY, path, why, number)
            if user in entries:
                raise AuthFileError(cls.KEY, path, f"user {user!r} appears twice", number)
            try:
                entries[user] = parse_hash(hashed)
            except ValueError as e:
                raise AuthFileError(cls.KEY, path, f"user {user!r}: {e}", number) from None
            if entries[user].scheme == "6":
                warnings.append(f"{cls.KEY} {path!r} line {number}: user {user!r} has a $6$ (one SHA-512) hash, "
                                f"fast to attack if the file leaks; set the password again with 'lastwill passwd'")
        return cls(entries, path, lines, warnings)

    @classmethod
    def load(cls, path: str | Path) -> PasswordFile:
        return cls.parse(_read(cls.KEY, path), str(path))

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, user: str) -> bool:
        return user in self.entries

    def verify(self, username: str, password: bytes | None) -> bool:
        """Slow (the KDF) and the same cost whether or not the user exists. Thread-safe."""
        entry = self.entries.get(username)
        ok = (entry or self._dummy).matches(password or b"")  # run the hash for unknown users too
        return ok and entry is not None and password is not None

    def _key(self, username: str, password: bytes | None) -> tuple[str, bytes]:
        return username, hmac.new(self._cache_key, password or b"", hashlib.sha256).digest()

    def cached(self, username: str, password: bytes | None) -> bool:
        """True if this user name and password were verified recently (fast; on the event loop)."""
        if password is None:
            return False
        key = self._key(username, password)
        entry = self._cache.get(key)
        if entry is None or self.entries.get(username) is not entry:
            return False
        self._cache.move_to_end(key)
        return True

    def remember(self, username: str, password: bytes | None) -> None:
        """Called (on the event loop) after ``verify`` said yes."""
        entry = self.entries.get(username)
        if entry is None or password is None:
            return
        self._cache[self._key(username, password)] = entry
        while len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    # -- editing (lastwill passwd) -----------------------------------------------------------------
    def set(self, username: str, hashed: str) -> None:
        """Add or replace the user's line (other lines, comments included, are kept in place)."""
        new = f"{username}:{hashed}"
        for i, raw in enumerate(self.lines):
            line = raw.strip()
            if line and not line.startswith("#") and line.partition(":")[0] == username:
                self.lines[i] = new
                break
        else:
            self.lines.append(new)
        self.entries[username] = parse_hash(hashed)

    def delete(self, username: str) -> bool:
        if username not in self.entries:
            return False
        del self.entries[username]
        self.lines = [raw for raw in self.lines
                      if not (raw.strip() and not raw.strip().startswith("#")
                              and raw.strip().partition(":")[0] == username)]
        return True

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


# ==== the ACL =====================================================================================

READ, WRITE = 1, 2
_ACCESS = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": 0}
_COMPILED_CACHE = 10_000
_ANSWERS_CACHE = 100_000


@dataclass(frozen=True, slots=True)
class AclRule:
    kind: str  # "topic" or "pattern"
    access: int  # READ | WRITE bits; 0 for deny
    topic: str  # a topic filter (patterns: before %c/%u substitution)
    line: int
    user: str | None = None  # topic rules: the user section (None: clients without a user name)

    @property
    def deny(self) -> bool:
        return self.access == 0


def _check_filter(topic: str) -> str | None:
    """Why ``topic`` is not a valid topic filter (None: it is)."""
    if not topic:
        return "empty topic"
    if "\x00" in topic or len(topic.encode("utf-8")) > 65535:
        return "not a valid topic filter (NUL, or longer than 65535 bytes)"
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            return f"'#' must be a whole level and the last one, in {topic!r}"
        if "+" in level and level != "+":
            return f"'+' must be a whole level, in {topic!r}"
    return None


def matches(filter_levels: tuple[str, ...], topic_levels: list[str] | tuple[str, ...]) -> bool:
    """MQTT topic matching; a topic starting with '$' is not matched by a leading wildcard [MQTT-4.7.2-1]."""
    n = len(topic_levels)
    for i, f in enumerate(filter_levels):
        if f == "#":
            return not (i == 0 and topic_levels[0][:1] == "$")
        if i >= n:
            return False
        if f == "+":
            if i == 0 and topic_levels[0][:1] == "$":
                return False
        elif f != topic_levels[i]:
            return False
    return len(filter_levels) == n


def covers(acl_levels: tuple[str, ...], sub_levels: list[str] | tuple[str, ...]) -> bool:
    """True if every topic the subscription filter matches is matched by the ACL filter: ``a/#``
    covers ``a/+/b`` and ``a/#``; ``a/+/b`` does not cover ``a/#`` (the idea of libmosquitto's
    ``mosquitto_sub_matches_acl``)."""
    n = len(sub_levels)
    for i, a in enumerate(acl_levels):
        if a == "#":
            return not (i == 0 and sub_levels[0][:1] == "$")
        if i >= n:
            return False
        s = sub_levels[i]
        if s == "#":
            return False  # only '#' covers '#'
        if a == "+":
            if i == 0 and s[:1] == "$":
                return False
        elif s != a:  # a literal level covers only the same literal (not '+')
            return False
    return len(acl_levels) == n


def _substitute(topic: str, username: str | None, client_id: str) -> str | None:
    """A pattern's topic with %c and %u replaced; None if the pattern does not apply to this client:
    it uses %u and the client has no user name, or a replaced value holds '/', '+' or '#' (it would
    reach other levels, or act as a wildcard)."""
    if "%u" in topic:
        if not username or any(c in username for c in "/+#"):
            return None
        topic = topic.replace("%u", username)
    if "%c" in topic:
        if not client_id or any(c in client_id for c in "/+#"):
            return None
        topic = topic.replace("%c", client_id)
    return topic


class Acl:
    """The rules of an ACL file, and the check: ``allowed`` (publish: WRITE; delivery: READ) and
    ``may_subscribe`` (a filter is granted if a read rule covers it whole and no deny rule does)."""

    KEY = "acl_file"

    def __init__(self, rules: list[AclRule], path: str = "<text>"):
        self.rules = rules
        self.path = path
        self.anonymous = [r for r in rules if r.kind == "topic" and r.user is None]
        self.users: dict[str, list[AclRule]] = {}
        for r in rules:
            if r.kind == "topic" and r.user is not None:
                self.users.setdefault(r.user, []).append(r)
        self.patterns = [r for r in rules if r.kind == "pattern"]
        self._compiled: dict[tuple[str | None, str], tuple] = {}
        # answers of allowed(), by (access, topic, username, client_id): a message routed to many
        # subscribers, or a client publishing on the same topics, costs a dict lookup per check
        self._answers: dict[tuple, bool] = {}

    # -- parsing -------------------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, path: str = "<text>") -> Acl:
        rules: list[AclRule] = []
        user: str | None = None
        sections: set[str] = set()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            keyword, _, rest = line.partition(" ")
            if "\t" in keyword:  # tabs separate words too
                keyword, _, more = keyword.partition("\t")
                rest = more + " " + rest if rest else more
            rest = rest.strip()
            if keyword == "user":
                if not rest:
                    raise AuthFileError(cls.KEY, path, "'user' without a user name", number)
                user = rest
                sections.add(user)
                continue
            if keyword not in ("topic", "pattern"):
                raise AuthFileError(cls.KEY, path, f"unknown keyword {keyword!r} (expected user, topic, pattern, "
                                                   f"or '#' for a comment)", number)
            if not rest:
                raise AuthFileError(cls.KEY, path, f"'{keyword}' without a topic", number)
            words = rest.split(None, 1)
            if len(words) == 2:
                if words[0] not in _ACCESS:
                    raise AuthFileError(cls.KEY, path, f"unknown access {words[0]!r} (expected read, write, "
                                                       f"readwrite or deny, then the topic)", number)
                access, topic = _ACCESS[words[0]], words[1].strip()
            elif words[0] in _ACCESS:
                raise AuthFileError(cls.KEY, path, f"'{keyword} {words[0]}' has no topic (for a topic named "
                                                   f"{words[0]!r}, write '{keyword} readwrite {words[0]}')", number)
            else:
                access, topic = READ | WRITE, words[0]
            why = _check_filter(topic)
            if why:
                raise AuthFileError(cls.KEY, path, why, number)
            rules.append(AclRule(keyword, access, topic, number, user if keyword == "topic" else None))
        acl = cls(rules, path)
        for name in sections:
            acl.users.setdefault(name, [])  # a user section without rules: that user may do nothing
        return acl

    @classmethod
    def load(cls, path: str | Path) -> Acl:
        return cls.parse(_read(cls.KEY, path), str(path))

    def summary(self) -> str:
        return (f"{len(self.users)} user section(s), {len(self.anonymous)} rule(s) for clients without a user "
                f"name, {len(self.patterns)} pattern(s)")

    # -- checking -------------------------------------------------------------------------------------
    def _rules_for(self, username: str | None, client_id: str) -> tuple:
        """(deny, read, write) filters of one client, as level tuples: its section's topic rules
        (or the anonymous ones), then the patterns with %c/%u replaced. Cached per client."""
        key = (username, client_id)
        compiled = self._compiled.get(key)
        if compiled is not None:
            return compiled
        own = self.anonymous if username is None else self.users.get(username, [])
        deny, read, write = [], [], []
        for r in (*own, *self.patterns):
            topic = r.topic if r.kind == "topic" else _substitute(r.topic, username, client_id)
            if topic is None:
                continue
            levels = tuple(topic.split("/"))
            if r.deny:
                deny.append(levels)
            if r.access & READ:
                read.append(levels)
            if r.access & WRITE:
                write.append(levels)
        compiled = (tuple(deny), tuple(read), tuple(write))
        if len(self._compiled) >= _COMPILED_CACHE:
            self._compiled.clear()
        self._compiled[key] = compiled
        return compiled

    def allowed(self, username: str | None, client_id: str, topic: str, access: int) -> bool:
        """May this client publish (WRITE) on, or receive (READ) a message of, ``topic``?"""
        key = (access, topic, username, client_id)
        answer = self._answers.get(key)
        if answer is None:
            answer = self.allowed_levels(username, client_id, topic.split("/"), access)
            if len(self._answers) >= _ANSWERS_CACHE:
                self._answers.clear()
            self._answers[key] = answer
        return answer

    def allowed_levels(self, username: str | None, client_id: str, levels: list[str], access: int) -> bool:
        deny, read, write = self._rules_for(username, client_id)
        for f in deny:  # deny rules first: they win
            if matches(f, levels):
                return False
        for f in (read if access == READ else write):
            if matches(f, levels):
                return True
        return False

    def may_subscribe(self, username: str | None, client_id: str, topic_filter: str) -> bool:
        """A subscription is granted if one read rule covers the whole filter and no deny rule does.
        (A deny rule covering part of it is enforced per message, at delivery.)"""
        deny, read, _ = self._rules_for(username, client_id)
        levels = topic_filter.split("/")
        for f in deny:
            if covers(f, levels):
                return False
        return any(covers(f, levels) for f in read)
