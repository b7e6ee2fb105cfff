"""Numbers over the samples a scenario collects: percentiles, ms summaries, 0/1 sequence maps."""

from __future__ import annotations


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None if empty)."""
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def ms_stats(prefix: str, values_ms: list[float], digits: int = 3) -> dict:
    v = sorted(values_ms)

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, digits)
    return {f"{prefix}_p50": r(percentile(v, 50)), f"{prefix}_p99": r(percentile(v, 99)),
            f"{prefix}_max": r(v[-1]) if v else None, f"{prefix}_min": r(v[0]) if v else None}


def mark(bits: bytearray, i: int) -> bool:
    """Set byte ``i`` of a growable 0/1 map; False if it was already set."""
    if i >= len(bits):
        bits.extend(bytes(max(i + 1 - len(bits), len(bits), 4096)))
    if bits[i]:
        return False
    bits[i] = 1
    return True


def count_missing(want: bytearray, have: bytearray) -> int:
    """How many indexes are set in ``want`` and not in ``have`` (both 0/1 byte maps)."""
    a = int.from_bytes(want, "little")
    b = int.from_bytes(have[:len(want)], "little")
    return (a & ~b).bit_count()
