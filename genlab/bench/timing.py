"""Interleaved timing of several candidates, and the machine's measured matmul peak.

Timing A, A, A, then B, B, B lets a background load or a thermal throttle that changes half-way favour
one side; timing A, B, A, B... after a warm-up exposes both to the same conditions, and the median of
each drops the odd slow sample. Ratios of such medians are what the benchmarks report.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Timing:
    """Seconds per call of one candidate: the median and every sample it came from."""

    median: float
    samples: list[float] = field(default_factory=list)


def synchronize(device: torch.device | str | None) -> None:
    """Wait for the queued GPU work of ``device`` (a no-op on CPU), so a clock reading includes it."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], number: int = 1, device: torch.device | str | None = None) -> float:
    """Seconds per call of ``fn``, averaged over ``number`` back-to-back calls (GPU work included)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(number):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / number


def time_interleaved(
    candidates: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    number: int = 1,
    device: torch.device | str | None = None,
) -> dict[str, Timing]:
    """Time each candidate in turn, A, B, A, B..., and return the median seconds per call of each.

    Every candidate is first called ``warmup`` times untimed (allocator, kernel selection, optimizer
    state), then ``repeats`` rounds each take one sample of ``number`` calls per candidate; so each
    function runs ``warmup + repeats * number`` times in all.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1 (got {repeats})")
    if warmup < 0 or number < 1:
        raise ValueError(f"warmup must be >= 0 and number >= 1 (got {warmup}, {number})")
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            samples[name].append(time_call(fn, number, device))
    return {name: Timing(statistics.median(s), s) for name, s in samples.items()}


def matmul_op(
    n: int = 2048, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Callable[[], object], int]:
    """A call computing one (n x n) @ (n x n) product, and its FLOPs: 2 n^3 (n^3 multiply-adds)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=gen, dtype=dtype).to(device)
    b = torch.randn(n, n, generator=gen, dtype=dtype).to(device)
    return (lambda: torch.mm(a, b)), 2 * n**3


def matmul_peak_gflops(
    n: int = 2048,
    repeats: int = 5,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> float:
    """GFLOP/s of the fastest of ``repeats`` (n x n) @ (n x n) products: the machine's practical peak.

    The best time, not the median, estimates what the hardware does when nothing interferes; models are
    then judged by the fraction of it they reach.
    """
    mm, flops = matmul_op(n, device, dtype)
    mm()  # warm-up: thread pool, library initialisation
    best = min(time_call(mm, device=device) for _ in range(repeats))
    return flops / best / 1e9
