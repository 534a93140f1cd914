"""What the whole app shares, made once by create_app and handed to every route by the ``served``
dependency: the runs, the limits, the per-client rate limit and the job queue."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from genlab.server.errors import Rejected
from genlab.server.limits import Job, JobQueue, RateLimiter, ServerLimits
from genlab.server.registry import Registry


@dataclass
class ServerState:
    registry: Registry
    limits: ServerLimits
    rate: RateLimiter
    queue: JobQueue
    # The streams' jobs, held until done: the event loop keeps only weak references to its tasks.
    background: set[asyncio.Task] = field(default_factory=set)

    def admit(self, request: Request) -> Job:
        """The per-client rate limit of the costly endpoints, then a place in the queue."""
        client = request.client.host if request.client else "unknown"
        wait = self.rate.take(client)
        if wait > 0:
            raise Rejected(
                429,
                f"too many requests: at most {self.limits.rate_per_minute:g} a minute "
                f"(burst {self.limits.burst}); retry in {math.ceil(wait)} s",
                {"Retry-After": str(math.ceil(wait))},
            )
        return self.queue.admit(client)


async def served(request: Request) -> ServerState:
    """The app's shared state (a FastAPI dependency)."""
    return request.app.state.genlab


async def run_watched(job: Job, request: Request, fn: Callable, *args: Any) -> Any:
    """``job.run(fn, *args)``, cancelled if the client disconnects first: an abandoned request must not
    keep computing and holding its place in the queue."""

    async def watch() -> None:
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception:  # a receive that fails: the connection is gone
            pass
        job.cancel.set()

    watcher = asyncio.create_task(watch())
    try:
        return await job.run(fn, *args)
    finally:
        watcher.cancel()
