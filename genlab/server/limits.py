"""What one client may ask of the server: sizes of a request, a per-client rate, and a bounded queue of
jobs, so that a burst of requests waits or is refused (429) instead of exhausting memory. The rate limit
also slows query-based black-box attacks (genlab.adversarial.blackbox), which need thousands of queries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from genlab.errors import GenlabError


@dataclass
class ServerLimits:
    max_images: int = 8  # per generation request
    max_steps: int = 100  # sampling steps, and PGD steps
    max_prompt_chars: int = 200
    max_upload_bytes: int = 1_000_000
    max_side: int = 512  # uploaded images are refused beyond this many pixels a side
    max_eps: float = 0.5  # attack strength on [0, 1] images
    rate_per_minute: float = 60.0  # sustained requests per client to the costly endpoints
    burst: int = 10  # requests a client may make at once before the rate applies
    max_running: int = 1  # jobs computed at the same time (torch already uses every core)
    max_waiting: int = 8  # jobs queued behind them; more are refused with 429

    def __post_init__(self) -> None:
        positive = ("max_images", "max_steps", "max_prompt_chars", "max_upload_bytes", "burst", "max_running")
        for name in positive:
            if getattr(self, name) < 1:
                raise GenlabError(f"--{name.replace('_', '-')} must be at least 1")
        if self.rate_per_minute <= 0 or self.max_waiting < 0 or not 0 < self.max_eps <= 1:
            raise GenlabError("--rate-per-minute must be > 0, --max-waiting >= 0 and --max-eps in (0, 1]")


@dataclass
class RateLimiter:
    """A token bucket per client (Turner 1986): ``burst`` tokens, refilled at ``rate_per_minute``; each
    request takes one. ``clock`` is injectable so tests need not sleep."""

    rate_per_minute: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # client -> (tokens, time)

    def take(self, client: str) -> float:
        """0 if ``client`` may go ahead (a token is spent), else the seconds until it may."""
        now = self.clock()
        tokens, then = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate_per_minute / 60.0)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > 10_000:  # forget idle clients: their buckets are full again anyway
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 3600}
        return (1.0 - tokens) * 60.0 / self.rate_per_minute


class Busy(Exception):
    """The queue is full."""


class JobQueue:
    """At most ``running`` jobs at once and ``waiting`` more in line; a job beyond that raises Busy at
    once, so memory holds a bounded number of requests however many arrive."""

    def __init__(self, running: int, waiting: int):
        self._slots = asyncio.Semaphore(running)
        self._capacity = running + waiting
        self._admitted = 0

    @property
    def admitted(self) -> int:
        return self._admitted

    async def run(self, fn: Callable, *args):
        """``fn(*args)`` in a worker thread, once a slot is free."""
        if self._admitted >= self._capacity:
            raise Busy
        self._admitted += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(fn, *args)
        finally:
            self._admitted -= 1
