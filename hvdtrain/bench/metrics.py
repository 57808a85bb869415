"""The benchmarks' arithmetic, and nothing else: sizes, iteration counts, bandwidths, correctness counts, result rows.

Conventions follow nccl-tests (``doc/PERFORMANCE.md``):

- ``algbw = bytes / time``: the buffer size over the time of one allreduce.
- ``busbw = algbw * 2(n-1)/n``: an allreduce moves each byte ``2(n-1)/n`` times through the slowest link (the ring's
  reduce-scatter and allgather each pass ``(n-1)/n`` of the buffer), so busbw is comparable with the hardware's
  link bandwidth whatever the number of ranks. With one rank nothing moves and busbw is 0.
- Bandwidths are in GB/s (10^9 bytes per second); sizes are printed in binary units (KiB, MiB).

Pure Python and numpy: no TensorFlow, no MPI.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ITEMSIZE = 4  # float32
GB = 1e9
KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB

_UNITS = {
    "": 1,
    "b": 1,
    "k": KIB,
    "kib": KIB,
    "m": MIB,
    "mib": MIB,
    "g": GIB,
    "gib": GIB,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
}
_SIZE_RE = re.compile(r"\s*(\d+)\s*([a-zA-Z]*)\s*")

# Iteration scaling (OSU-style: many iterations for small messages, fewer for large ones).
DEFAULT_MAX_ITERS = 500
DEFAULT_MIN_ITERS = 10
DEFAULT_TARGET_BYTES = GIB  # iterations ~ target / size, clamped to [min, max]
DEFAULT_REPEATS = 3


class SizeError(ValueError):
    """A size string or range that cannot work; the message is one line meant for the user."""


def parse_size(text: str) -> int:
    """``"4B"`` -> 4, ``"1KiB"`` -> 1024, ``"64MiB"`` -> 67108864, ``"1MB"`` -> 10**6; K/M/G alone are binary."""
    if not isinstance(text, str):
        raise SizeError(f"size must be a string like 4B or 64MiB, got {text!r}")
    match = _SIZE_RE.fullmatch(text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise SizeError(f"invalid size {text!r}: use a whole number with B, KiB, MiB or GiB (e.g. 4B, 64MiB)")
    return int(match.group(1)) * _UNITS[unit]


def format_size(size_bytes: int) -> str:
    """4 -> ``"4 B"``, 1024 -> ``"1 KiB"``, 67108864 -> ``"64 MiB"``, 1536 -> ``"1536 B"`` (exact, never rounded)."""
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size_bytes >= scale and size_bytes % scale == 0:
            return f"{size_bytes // scale} {unit}"
    return f"{size_bytes} B"


def size_sweep(min_bytes: int, max_bytes: int, itemsize: int = ITEMSIZE) -> list[int]:
    """``min, 2*min, 4*min, ... <= max``: the buffer sizes in bytes, each a whole number of ``itemsize`` elements."""
    if min_bytes < itemsize:
        raise SizeError(f"--min-size must be at least {itemsize} B (one float32), got {format_size(min_bytes)}")
    for name, value in (("--min-size", min_bytes), ("--max-size", max_bytes)):
        if value % itemsize:
            raise SizeError(f"{name} must be a multiple of {itemsize} B (whole float32 elements), got {value} B")
    if max_bytes < min_bytes:
        raise SizeError(f"--max-size ({format_size(max_bytes)}) is smaller than --min-size ({format_size(min_bytes)})")
    sizes, size = [], min_bytes
    while size <= max_bytes:
        sizes.append(size)
        size *= 2
    return sizes


def iterations(
    size_bytes: int,
    max_iters: int = DEFAULT_MAX_ITERS,
    min_iters: int = DEFAULT_MIN_ITERS,
    target_bytes: int = DEFAULT_TARGET_BYTES,
) -> tuple[int, int]:
    """(warmup, iters) for one timed trial at ``size_bytes``: iters ~ target/size within [min, max], warmup ~ 1/10."""
    if size_bytes < 1:
        raise SizeError(f"size must be >= 1 byte, got {size_bytes}")
    if min_iters < 1 or max_iters < min_iters:
        raise SizeError(f"need 1 <= min_iters <= max_iters, got {min_iters} and {max_iters}")
    iters = max(min_iters, min(max_iters, target_bytes // size_bytes))
    warmup = max(2, min(iters // 10, 50))
    return warmup, iters


def bus_factor(n: int) -> float:
    """``2(n-1)/n``: how many times each byte crosses the slowest link in a ring allreduce of n ranks."""
    if n < 1:
        raise ValueError(f"number of ranks must be >= 1, got {n}")
    return 2.0 * (n - 1) / n


def algbw(size_bytes: int, seconds: float) -> float:
    """Algorithm bandwidth, GB/s: ``bytes / time``."""
    if seconds <= 0:
        raise ValueError(f"time must be > 0, got {seconds}")
    return size_bytes / seconds / GB


def busbw(algbw_gbs: float, n: int) -> float:
    """Bus bandwidth, GB/s: ``algbw * 2(n-1)/n``."""
    return algbw_gbs * bus_factor(n)


def ring_bytes_per_rank(size_bytes: int, n: int) -> float:
    """Bytes each rank sends (and receives) in a ring allreduce: ``2(n-1)/n * size``."""
    return bus_factor(n) * size_bytes


def fill(count: int, rank: int) -> np.ndarray:
    """Rank ``rank``'s float32 input: small whole numbers, so every sum is exact in float32 whatever the order."""
    return ((np.arange(count, dtype=np.int64) % 97) + 1 + rank).astype(np.float32)


def expected_sum(count: int, n: int) -> np.ndarray:
    """The exact allreduce-sum of :func:`fill` over ranks 0..n-1."""
    base = (np.arange(count, dtype=np.int64) % 97) + 1
    return (n * base + n * (n - 1) // 2).astype(np.float32)


def count_wrong(result: np.ndarray, expected: np.ndarray) -> int:
    """How many elements of ``result`` differ from ``expected`` (a wrong shape counts every element as wrong)."""
    result, expected = np.asarray(result), np.asarray(expected)
    if result.shape != expected.shape:
        return int(max(result.size, expected.size))
    return int(np.count_nonzero(result != expected))


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    if not values:
        raise ValueError("no values")
    return statistics.median(values), min(values), max(values)


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """(mean, 1.96 * sample standard deviation): the ``mean +- 1.96 std`` Horovod's benchmarks print."""
    if not values:
        raise ValueError("no values")
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), 1.96 * std


def efficiency(throughput_n: float, n: int, throughput_1: float) -> float:
    """Scaling efficiency ``T_N / (N * T_1)``."""
    if n < 1 or throughput_1 <= 0:
        raise ValueError(f"need n >= 1 and T_1 > 0, got n={n}, T_1={throughput_1}")
    return throughput_n / (n * throughput_1)


@dataclass
class AllreduceRow:
    """One contender at one size: the timed trials (seconds per allreduce, slowest rank) and the wrong-result count."""

    contender: str
    np: int
    size_bytes: int
    warmup: int
    iters: int
    trial_seconds: list[float]
    wrong: int
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return self.size_bytes // ITEMSIZE

    @property
    def seconds(self) -> float:
        """Median over trials."""
        return spread(self.trial_seconds)[0]

    def to_dict(self) -> dict[str, Any]:
        """A flat, JSON- and CSV-friendly view with the derived columns."""
        median, low, high = spread(self.trial_seconds)
        alg = algbw(self.size_bytes, median)
        return {
            "contender": self.contender,
            "np": self.np,
            "size_bytes": self.size_bytes,
            "size": format_size(self.size_bytes),
            "count": self.count,
            "dtype": self.dtype,
            "warmup": self.warmup,
            "iters": self.iters,
            "repeats": len(self.trial_seconds),
            "time_us": median * 1e6,
            "time_us_min": low * 1e6,
            "time_us_max": high * 1e6,
            "algbw_gbs": alg,
            "busbw_gbs": busbw(alg, self.np),
            "wrong": self.wrong,
            **self.extra,
            "trial_seconds": list(self.trial_seconds),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AllreduceRow:
        """Inverse of :meth:`to_dict` (the worker's JSON keeps ``trial_seconds``)."""
        known = {"contender", "np", "size_bytes", "warmup", "iters", "trial_seconds", "wrong", "dtype"}
        derived = {
            "size",
            "count",
            "repeats",
            "time_us",
            "time_us_min",
            "time_us_max",
            "algbw_gbs",
            "busbw_gbs",
        }
        extra = {k: v for k, v in data.items() if k not in known | derived}
        return cls(**{k: data[k] for k in known if k in data}, extra=extra)


def finite_or_none(value: float) -> float | None:
    """JSON has no NaN/inf."""
    return value if math.isfinite(value) else None
