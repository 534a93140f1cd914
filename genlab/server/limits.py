"""What one client may ask of the server: sizes of a request, a per-client rate, jobs in flight per client,
and a bounded queue of jobs, so that a burst of requests waits or is refused (429) instead of exhausting
memory. The rate limit also slows query-based black-box attacks (genlab.adversarial.blackbox), which need
thousands of queries. A job whose client went away is cancelled at its network's next forward pass."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from genlab.errors import GenlabError, param

if TYPE_CHECKING:
    from torch import nn


@dataclass
class ServerLimits:
    max_images: int = 8  # per generation request
    max_clips: int = 4  # per generation request of a video run: a clip costs its frames' worth of images
    max_frames: int = 32  # frames of a clip (and at most the run's own limit)
    max_steps: int = 100  # sampling steps, and PGD steps
    max_prompt_chars: int = 200
    max_upload_bytes: int = 1_000_000
    max_side: int = 512  # uploaded images are refused beyond this many pixels a side
    max_eps: float = 0.5  # attack strength on [0, 1] images
    rate_per_minute: float = 60.0  # sustained requests per client to the costly endpoints
    burst: int = 10  # requests a client may make at once before the rate applies
    max_running: int = 1  # jobs computed at the same time (torch already uses every core)
    max_waiting: int = 8  # jobs queued behind them; more are refused with 429
    max_jobs_per_client: int = 2  # jobs one client may have running or waiting at once

    def __post_init__(self) -> None:
        positive = (
            "max_images", "max_clips", "max_steps", "max_prompt_chars", "max_upload_bytes", "max_side",
            "burst", "max_running", "max_jobs_per_client",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise GenlabError(f"{param(name)} must be at least 1")
        # NaN compares false with everything, so "rate <= 0" alone would let rate_per_minute=nan through
        # and switch the limit off; infinity would do the same.
        if not math.isfinite(self.rate_per_minute) or self.rate_per_minute <= 0:
            raise GenlabError(
                f"{param('rate_per_minute')} must be a finite number > 0 (got {self.rate_per_minute})"
            )
        if not math.isfinite(self.max_eps) or not 0 < self.max_eps <= 1:
            raise GenlabError(f"{param('max_eps')} must be in (0, 1] (got {self.max_eps})")
        if self.max_frames < 2:  # a clip needs two frames to move
            raise GenlabError(f"{param('max_frames')} must be at least 2 (got {self.max_frames})")
        if self.max_waiting < 0:
            raise GenlabError(f"{param('max_waiting')} must be >= 0 (got {self.max_waiting})")

    @property
    def max_body_bytes(self) -> int:
        """The largest request body read: an upload and the form fields around it."""
        return self.max_upload_bytes + 64 * 1024


@dataclass
class RateLimiter:
    """A token bucket per client (Turner 1986): ``burst`` tokens, refilled at ``rate_per_minute``; each
    request takes one. ``clock`` is injectable so tests need not sleep.

    Memory stays bounded however many clients come: a bucket left alone for ``refill_s`` is full again,
    the same as no bucket, so such buckets are dropped, at most once every ``refill_s`` (an O(clients)
    sweep, amortised over that time). Should more than ``max_clients`` be active at once, the least
    recently seen are forgotten (they get a fresh burst: the price of a bounded table)."""

    rate_per_minute: float
    burst: int
    clock: Callable[[], float] = time.monotonic
    max_clients: int = 100_000
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)  # client -> (tokens, time)
    _swept: float | None = None

    @property
    def refill_s(self) -> float:
        """Seconds for an empty bucket to fill up again."""
        return self.burst * 60.0 / self.rate_per_minute

    @property
    def clients(self) -> int:
        """Buckets held now."""
        return len(self._buckets)

    def take(self, client: str) -> float:
        """0 if ``client`` may go ahead (a token is spent), else the seconds until it may."""
        now = self.clock()
        self._sweep(now)
        tokens, then = self._buckets.pop(client, (float(self.burst), now))  # re-inserted: newest last
        tokens = min(float(self.burst), tokens + (now - then) * self.rate_per_minute / 60.0)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            return 0.0
        self._buckets[client] = (tokens, now)
        return (1.0 - tokens) * 60.0 / self.rate_per_minute

    def _sweep(self, now: float) -> None:
        if self._swept is None:
            self._swept = now
        if now - self._swept >= self.refill_s:
            self._swept = now
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < self.refill_s}
        if len(self._buckets) >= self.max_clients:  # dicts keep insertion order: oldest first
            keep = list(self._buckets.items())[len(self._buckets) - self.max_clients // 2 :]
            self._buckets = dict(keep)


class Busy(Exception):
    """The queue is full, or the client already has as many jobs as it may: 429."""


class Cancelled(Exception):
    """The job's client went away; the job stopped at its network's next forward pass."""


_worker = threading.local()  # .cancel: the threading.Event of the job the current worker thread runs


def _stop_if_cancelled(_module: nn.Module, _args: Any) -> None:
    cancel = getattr(_worker, "cancel", None)
    if cancel is not None and cancel.is_set():
        raise Cancelled


def make_cancellable(module: nn.Module) -> None:
    """Let jobs that run ``module`` stop at its next forward pass once cancelled: a forward pre-hook that
    checks the running job's flag (a no-op outside jobs). Every sampling step and PGD step calls the
    network, so a cancelled job stops within one step. Idempotent."""
    if not getattr(module, "_genlab_cancellable", False):
        module.register_forward_pre_hook(_stop_if_cancelled)
        module._genlab_cancellable = True


class Job:
    """One admitted request: its place in the queue and its client's count, held until it finishes, and
    ``cancel``, which stops it (set when its client disconnects)."""

    def __init__(self, queue: JobQueue, client: str):
        self.cancel = threading.Event()
        self._queue, self._client, self._held = queue, client, True

    async def run(self, fn: Callable, *args: Any) -> Any:
        """``fn(*args)`` in a worker thread once a slot is free; the place is given back however it ends.
        Raises Cancelled if the job was cancelled before or while it ran."""
        try:
            await self._wait_for_a_slot()
            try:
                return await asyncio.to_thread(self._call, fn, args)
            except asyncio.CancelledError:  # the awaiting task was cancelled: stop the thread too
                self.cancel.set()
                raise
            finally:
                self._queue._slots.release()
        finally:
            self.release()

    async def _wait_for_a_slot(self, poll_s: float = 0.2) -> None:
        """Acquire a running slot, giving up (Cancelled) within ``poll_s`` of a cancellation, so that a
        waiting job whose client left frees its place without waiting for the jobs ahead of it."""
        while True:
            if self.cancel.is_set():
                raise Cancelled
            try:
                await asyncio.wait_for(self._queue._slots.acquire(), poll_s)
                return
            except asyncio.TimeoutError:
                continue

    def _call(self, fn: Callable, args: tuple) -> Any:
        _worker.cancel = self.cancel
        try:
            return fn(*args)
        finally:
            _worker.cancel = None

    def release(self) -> None:
        """Give the place back (idempotent)."""
        if self._held:
            self._held = False
            self._queue._release(self._client)


class JobQueue:
    """At most ``running`` jobs at once and ``waiting`` more in line, and at most ``per_client`` of them
    from one client; a job beyond that raises Busy at once, so memory holds a bounded number of requests
    however many arrive, and one client cannot hold every slot."""

    def __init__(self, running: int, waiting: int, per_client: int | None = None):
        self._slots = asyncio.Semaphore(running)
        self._capacity = running + waiting
        self._per_client = per_client if per_client is not None else self._capacity
        self._admitted = 0
        self._by_client: Counter[str] = Counter()

    @property
    def admitted(self) -> int:
        """Jobs running or waiting."""
        return self._admitted

    def admit(self, client: str = "") -> Job:
        """A place for one job of ``client``, or Busy. The caller must ``run`` or ``release`` it."""
        if self._admitted >= self._capacity:
            raise Busy("the server is busy with other requests; try again in a few seconds")
        if self._by_client[client] >= self._per_client:
            raise Busy(
                f"you already have {self._by_client[client]} requests running or waiting (at most "
                f"{self._per_client} at once); wait for one to finish"
            )
        self._admitted += 1
        self._by_client[client] += 1
        return Job(self, client)

    async def run(self, fn: Callable, *args: Any, client: str = "") -> Any:
        """``fn(*args)`` in a worker thread, once a slot is free (admit and run in one)."""
        return await self.admit(client).run(fn, *args)

    def _release(self, client: str) -> None:
        self._admitted -= 1
        self._by_client[client] -= 1
        if self._by_client[client] <= 0:
            del self._by_client[client]
