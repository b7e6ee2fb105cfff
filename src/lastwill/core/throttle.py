"""Login throttling (docs/security.md "Password guessing"): exponential backoff per source address and
per user name after failed password checks. Pure: time is passed in, nothing is read from a clock.

After the n-th failed check in a row for an address or a user name, the failing CONNACK 0x86 is held
back ``min(block, answer_max)`` seconds, and that key is then blocked for ``block = min(backoff *
2**(n-1), backoff_max)`` seconds more. A CONNECT that needs a password check while its
address or its user name is blocked is refused at once with CONNACK 0x89 Server busy (3.1.1: return
code 3), without a password check: a guesser spends no broker CPU and learns nothing. A successful
check clears both keys. Clients whose user name and password were verified recently are answered
from the password file's cache before they get here (edge/security.py), so a guesser behind the same
address does not lock them out.

Memory is bounded: at most ``max_keys`` addresses and as many user names are remembered, the one
touched longest ago forgotten first, and a key whose block ended ``backoff_max`` ago is forgotten.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Verdict(enum.Enum):
    CHECK = "check"  # run the password check
    THROTTLED = "throttled"  # refuse with 0x89 now, no check


@dataclass(frozen=True, slots=True)
class Blocked:
    """Why a login is throttled: which key ("address" or "user name"), its failures, until when."""

    verdict: Verdict
    key_kind: str = ""
    key: str = ""
    failures: int = 0
    until: float = 0.0


_CHECK = Blocked(Verdict.CHECK)


class _Keys:
    """One kind of key (addresses or user names): key -> [failures in a row, blocked until]."""

    __slots__ = ("entries", "max_keys")

    def __init__(self, max_keys: int) -> None:
        self.entries: dict[str, list] = {}
        self.max_keys = max_keys

    def blocked_until(self, key: str, now: float, forget_after: float) -> list | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if now >= entry[1] + forget_after:  # quiet long enough: forgotten
            del self.entries[key]
            return None
        return entry

    def fail(self, key: str) -> list:
        """One more failure in a row for ``key``: its entry (the caller sets until when it is blocked)."""
        entries = self.entries
        entry = entries.pop(key, None)  # re-inserted last: the dict's order is least recently touched first
        if entry is None:
            entry = [0, 0.0]
        entry[0] += 1
        entries[key] = entry
        while len(entries) > self.max_keys:
            del entries[next(iter(entries))]
        return entry

    def clear(self, key: str) -> None:
        self.entries.pop(key, None)


class LoginThrottle:
    __slots__ = ("backoff", "backoff_max", "answer_max", "addresses", "users", "throttled")

    def __init__(self, backoff: float = 1.0, backoff_max: float = 60.0, max_keys: int = 10_000,
                 answer_max: float = 5.0) -> None:
        self.backoff = backoff  # seconds after the first failure (0: no throttling)
        self.backoff_max = backoff_max
        self.answer_max = answer_max  # the longest a failing CONNACK is held back
        self.addresses = _Keys(max_keys)
        self.users = _Keys(max_keys)
        self.throttled = 0  # CONNECTs refused while throttled

    def __len__(self) -> int:
        return len(self.addresses.entries) + len(self.users.entries)

    def check(self, address: str, username: str | None, now: float) -> Blocked:
        """May a CONNECT from ``address`` for ``username`` have its password checked now?"""
        if not self.backoff:
            return _CHECK
        forget = self.backoff_max
        for kind, keys, key in (("address", self.addresses, address), ("user name", self.users, username)):
            if key is None:
                continue
            entry = keys.blocked_until(key, now, forget)
            if entry is not None and now < entry[1]:
                self.throttled += 1
                return Blocked(Verdict.THROTTLED, kind, key, entry[0], entry[1])
        return _CHECK

    def failed(self, address: str, username: str | None, now: float) -> float:
        """A password check failed: both keys back off. Returns how long to hold the CONNACK 0x86; the
        block runs from when it is sent, so that a guesser retrying at once is throttled."""
        if not self.backoff:
            return 0.0
        entries = [self.addresses.fail(address)]
        if username is not None:
            entries.append(self.users.fail(username))
        failures = max(e[0] for e in entries)
        block = min(self.backoff * 2 ** min(failures - 1, 60), self.backoff_max)
        delay = min(block, self.answer_max)
        for entry in entries:
            entry[1] = max(entry[1], now + delay + block)
        return delay

    def succeeded(self, address: str, username: str | None) -> None:
        self.addresses.clear(address)
        if username is not None:
            self.users.clear(username)
