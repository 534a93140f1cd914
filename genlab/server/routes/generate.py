"""Generation: a request checked against the model it names and the server's limits, run as a job, and
answered at once or streamed as server-sent events (a preview at every step)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from typing import Annotated, Any

import torch
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from genlab.diffusion.generate import check_sampling_args
from genlab.errors import GenlabError
from genlab.server.encoding import Name, Text, png_data_url
from genlab.server.errors import INTERNAL, Rejected, error_responses
from genlab.server.limits import Cancelled, ServerLimits
from genlab.server.registry import GENERATORS, Entry
from genlab.server.state import ServerState, run_watched, served

MAX_SEED = 2**31 - 1
MAX_GUIDANCE = 20.0

log = logging.getLogger(__name__)
router = APIRouter()
State = Annotated[ServerState, Depends(served)]

# One server-sent event of /api/generate/stream (OpenAPI before 3.2 describes an event stream by its events).
EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["progress", "done", "error"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"type": "object"},
        },
    },
    "required": ["event", "data"],
}


class GenerateRequest(BaseModel):
    """What to generate: a prompt for a text-to-image model, or a class (by name) for a class model."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: Name
    prompt: Text = ""
    negative_prompt: Text = ""
    class_name: Name | None = None
    steps: int = 20
    sampler: Name = "dpmpp-2m"
    guidance: float = 3.0
    seed: int = 0
    num_images: int = 4


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


def _check_generate(req: GenerateRequest, entry: Entry, limits: ServerLimits) -> torch.Tensor | None:
    """The request's range checks (types are pydantic's); returns the class labels to draw, if any."""

    def bad(message: str) -> Rejected:
        return Rejected(422, message)

    if not 1 <= req.num_images <= limits.max_images:
        raise bad(f"num_images must be between 1 and {limits.max_images} (got {req.num_images})")
    if not 1 <= req.steps <= limits.max_steps:
        raise bad(f"steps must be between 1 and {limits.max_steps} (got {req.steps})")
    if not 0 <= req.seed <= MAX_SEED:
        raise bad(f"seed must be between 0 and {MAX_SEED} (got {req.seed})")
    if not (0 <= req.guidance <= MAX_GUIDANCE) or math.isnan(req.guidance):
        raise bad(f"guidance must be between 0 and {MAX_GUIDANCE} (got {req.guidance})")
    longest = max(len(req.prompt), len(req.negative_prompt))
    if longest > limits.max_prompt_chars:
        raise bad(f"prompts are limited to {limits.max_prompt_chars} characters (got {longest})")
    if entry.kind != "gan":
        try:
            check_sampling_args(req.sampler, req.steps, req.guidance)
        except GenlabError as e:
            raise bad(str(e)) from None
    if entry.kind == "text-to-image":
        if not req.prompt.strip():
            raise bad(f"{entry.name} is a text-to-image model: give a prompt")
        if req.class_name:
            raise bad(f"{entry.name} takes a prompt, not a class")
        return None
    if req.prompt or req.negative_prompt:
        raise bad(f"{entry.name} takes no prompt (it was not trained on captions); give a class_name")
    if entry.kind == "diffusion" and entry.model.upscale:
        raise bad(f"{entry.name} is an upscaler: it sharpens images, it does not make them")
    if req.class_name is None or req.class_name == "":
        return None
    if not entry.model.num_classes:
        raise bad(f"{entry.name} has no classes; leave class_name out")
    try:
        index = entry.model.class_index(req.class_name)
    except GenlabError as e:
        raise bad(str(e)) from None
    if not 0 <= index < entry.model.num_classes:
        raise bad(f"class {index} is out of range: {entry.name} knows 0..{entry.model.num_classes - 1}")
    return torch.tensor([index])


def _generate(
    entry: Entry,
    req: GenerateRequest,
    labels: torch.Tensor | None,
    on_step: Callable[[int, int, torch.Tensor], None] | None = None,
) -> dict[str, Any]:
    """Run one generation request (in a worker thread) and return its JSON."""
    start = time.perf_counter()
    g = torch.Generator().manual_seed(req.seed)
    pipe = entry.model
    with torch.inference_mode():
        if entry.kind == "text-to-image":
            negative = req.negative_prompt or None
            out = pipe(
                req.prompt, negative, req.steps, req.guidance, req.sampler, g, num_images=req.num_images,
                on_step=on_step,
            )  # fmt: skip
        elif entry.kind == "gan":
            out = pipe(req.num_images, labels, generator=g)
        else:
            out = pipe(
                req.num_images, labels, req.steps, req.guidance, req.sampler, generator=g, on_step=on_step
            )
    settings = req.model_dump()
    if entry.kind == "gan":
        settings.update(steps=1, sampler="generator", guidance=1.0)
    return {
        "images": [png_data_url(x) for x in out.tensors],
        "settings": settings,
        "seconds": round(time.perf_counter() - start, 3),
    }


@router.post("/api/generate", responses=error_responses(403, 404, 422, 429, 503))
async def generate(req: GenerateRequest, request: Request, state: State) -> dict[str, Any]:
    """Generate ``num_images`` images (base64 PNG data URLs) with their settings."""
    entry = state.registry.get(req.model, GENERATORS)
    labels = _check_generate(req, entry, state.limits)
    job = state.admit(request)
    return await run_watched(job, request, _generate, entry, req, labels)


@router.post(
    "/api/generate/stream",
    response_class=EventStream,
    responses={
        200: {"content": {"text/event-stream": {"schema": EVENT}}},
        **error_responses(403, 404, 422, 429),
    },
)
async def generate_stream(req: GenerateRequest, request: Request, state: State) -> EventStream:
    """The same, as server-sent events: ``progress`` (step, total, and the images the model now
    predicts) at every step, then ``done`` with the result, or ``error``."""
    entry = state.registry.get(req.model, GENERATORS)
    labels = _check_generate(req, entry, state.limits)
    job = state.admit(request)  # before the response starts, so that a refusal is a real 429
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def on_step(step: int, total: int, frames: torch.Tensor) -> None:
        data = {"step": step, "total": total, "preview": [png_data_url(f) for f in frames]}
        loop.call_soon_threadsafe(events.put_nowait, ("progress", data))

    async def produce() -> None:
        """The job, ending the stream however it ends: done, an error event, or cancelled."""
        try:
            result = await run_watched(job, request, _generate, entry, req, labels, on_step)
            events.put_nowait(("done", result))
        except Cancelled:
            pass
        except GenlabError as e:
            events.put_nowait(("error", {"error": " ".join(str(e).splitlines())}))
        except Exception as e:
            log.exception("generation failed")
            events.put_nowait(("error", {"error": INTERNAL.format(type(e).__name__)}))
        finally:
            events.put_nowait(None)

    task = asyncio.create_task(produce())
    state.background.add(task)
    task.add_done_callback(state.background.discard)

    async def stream():
        try:
            while (item := await events.get()) is not None:
                yield f"event: {item[0]}\ndata: {json.dumps(item[1])}\n\n"
        finally:  # the job is over, or the client left (the stream was closed): stop computing
            job.cancel.set()

    return EventStream(stream())
