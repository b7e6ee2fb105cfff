"""The values the cluster's Lua scripts take and return (Redis replies are bytes or integers), decoded
and encoded one way for the engine (engine.py) and its pub/sub channel."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def text(b: bytes | str) -> str:
    return b.decode("utf-8") if isinstance(b, bytes) else b


def integer(x: Any) -> int:
    if isinstance(x, int):
        return x
    s = text(x)
    return int(s) if s.lstrip("-").isdigit() else int(float(s))


def optional_integer(x: Any) -> int | None:
    return None if x in (b"", "", None) else integer(x)


def optional_text(x: Any) -> str | None:
    return None if x in (b"", "", None) else text(x)


def user(encoded: Any) -> str | None:
    s = text(encoded)
    return s[1:] if s else None


def encode_user(user: str | None) -> str:
    return "" if user is None else "=" + user


def subscription_ids(x: Any) -> tuple[int, ...]:
    s = text(x)
    return tuple(int(v) for v in s.split(",")) if s else ()


def encode_subscription_ids(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in ids)


def flag(b: bool) -> str:
    return "1" if b else "0"


def groups(flat: Sequence, n: int) -> list[Sequence]:
    return [flat[i:i + n] for i in range(0, len(flat), n)]
