"""The web app and its REST API (FastAPI): generate images with the runs the server was started with,
watch them emerge from noise, attack a classifier, read a run's metrics. OpenAPI at /docs and
/openapi.json; every error is JSON ``{"error": "one line"}`` (genlab.server.errors).

One router per concern (genlab.server.routes): the page and health check, the runs served, generation
and its stream, the attack playground. create_app assembles them and owns what they share
(genlab.server.state): the runs, the limits, the rate limit and the job queue. Every request first passes
genlab.server.guard (Host, same origin, body size); a job whose client disconnects is cancelled at its
network's next forward pass (genlab.server.limits)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from torch import nn

from genlab.server.errors import add_error_handlers
from genlab.server.guard import Guard
from genlab.server.limits import JobQueue, RateLimiter, ServerLimits, make_cancellable
from genlab.server.registry import Registry
from genlab.server.routes import attack, generate, page, runs
from genlab.server.state import ServerState


def _networks(model: Any) -> list[nn.Module]:
    """The networks of a served model: the model itself, or a pipeline's nn.Module attributes."""
    if isinstance(model, nn.Module):
        return [model]
    return [v for v in vars(model).values() if isinstance(v, nn.Module)]


def create_app(
    registry: Registry,
    limits: ServerLimits | None = None,
    clock: Callable[[], float] = time.monotonic,
    allowed_hosts: Iterable[str] | None = None,
) -> FastAPI:
    """The app serving ``registry``'s runs within ``limits`` (``clock`` drives the rate limit).

    ``allowed_hosts``: the Host names answered (genlab.server.guard.allowed_hosts gives those of a bound
    address); None answers any, for library use behind something that checks the Host itself."""
    limits = limits or ServerLimits()
    app = FastAPI(
        title="genlab",
        description="Generate images with genlab runs, watch them emerge from noise, attack classifiers.",
        version="1",
    )
    app.add_middleware(Guard, hosts=allowed_hosts, max_body_bytes=limits.max_body_bytes)
    add_error_handlers(app)
    for entry in registry.entries.values():
        for net in _networks(entry.model):
            make_cancellable(net)
    app.state.genlab = ServerState(
        registry=registry,
        limits=limits,
        rate=RateLimiter(limits.rate_per_minute, limits.burst, clock),
        queue=JobQueue(limits.max_running, limits.max_waiting, limits.max_jobs_per_client),
    )
    for module in (page, runs, generate, attack):
        app.include_router(module.router)
    return app


def uvicorn_config(app: Any, host: str, port: int, forwarded_allow_ips: str | None = None) -> Any:
    """uvicorn's settings for ``app``. uvicorn trusts X-Forwarded-For from 127.0.0.1 by default, so any
    local client could choose the address the rate limit counts; proxy headers are read only from the
    addresses given."""
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        proxy_headers=bool(forwarded_allow_ips),
        forwarded_allow_ips=forwarded_allow_ips or "",
    )
