"""Generation: a request checked against the model it names and the server's limits, run as a job, and
answered at once or streamed as server-sent events (a preview at every step). Image runs answer images as
PNGs; video runs answer clips, each an animated GIF and a strip of its frames."""

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
from pydantic import BaseModel, ConfigDict, Field

from genlab.diffusion.generate import check_sampling_args
from genlab.errors import GenlabError
from genlab.server.encoding import Name, Text, gif_data_url, png_data_url, strip_data_url
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
    """What to generate: a prompt for a text-to-image or text-to-video model, or a class (by name) for a
    class model. For a video run ``num_images`` counts clips and ``num_frames`` sets their length (None:
    the run's own, within the server's limit); image runs take no ``num_frames``."""

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
    num_frames: int | None = Field(None, description="Frames of a clip (video runs only; None: the run's)")


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


def _bad(message: str) -> Rejected:
    return Rejected(422, message)


def _clip_length(req: GenerateRequest, entry: Entry, limits: ServerLimits) -> int:
    """The frames of a video request's clips: as asked, or the run's own length, within both the server's
    limit and the longest clip the run's network takes."""
    pipe = entry.model
    longest = min(limits.max_frames, pipe.max_frames)
    if req.num_frames is None:
        return max(2, min(pipe.video.sample_frames, longest))
    if not 2 <= req.num_frames <= longest:
        why = f"the longest clip {entry.name} takes" if longest < limits.max_frames else "this server's limit"
        raise _bad(f"num_frames must be between 2 and {longest} ({why}; got {req.num_frames})")
    return req.num_frames


def _check_generate(
    req: GenerateRequest, entry: Entry, limits: ServerLimits
) -> tuple[GenerateRequest, torch.Tensor | None]:
    """The request's range checks (types are pydantic's); returns the request as it will run (a video
    request with its number of frames) and the class labels to draw, if any."""
    video = entry.kind == "video"
    most, what = (limits.max_clips, "clips of a video run; ") if video else (limits.max_images, "")
    if not 1 <= req.num_images <= most:
        raise _bad(f"num_images must be between 1 and {most} ({what}got {req.num_images})")
    if video:
        req = req.model_copy(update={"num_frames": _clip_length(req, entry, limits)})
    elif req.num_frames is not None:
        raise _bad(f"{entry.name} makes images, not clips: leave num_frames out")
    if not 1 <= req.steps <= limits.max_steps:
        raise _bad(f"steps must be between 1 and {limits.max_steps} (got {req.steps})")
    if not 0 <= req.seed <= MAX_SEED:
        raise _bad(f"seed must be between 0 and {MAX_SEED} (got {req.seed})")
    if not (0 <= req.guidance <= MAX_GUIDANCE) or math.isnan(req.guidance):
        raise _bad(f"guidance must be between 0 and {MAX_GUIDANCE} (got {req.guidance})")
    longest = max(len(req.prompt), len(req.negative_prompt))
    if longest > limits.max_prompt_chars:
        raise _bad(f"prompts are limited to {limits.max_prompt_chars} characters (got {longest})")
    if entry.kind != "gan":
        try:
            check_sampling_args(req.sampler, req.steps, req.guidance)
        except GenlabError as e:
            raise _bad(str(e)) from None
    if entry.kind == "text-to-image" or (video and entry.model.text):
        task = "text-to-video" if video else "text-to-image"
        if not req.prompt.strip():
            raise _bad(f"{entry.name} is a {task} model: give a prompt")
        if req.class_name:
            raise _bad(f"{entry.name} takes a prompt, not a class")
        if video and req.negative_prompt:
            raise _bad(f"{entry.name} takes no negative prompt (video runs are guided by the prompt alone)")
        return req, None
    if req.prompt or req.negative_prompt:
        instead = "leave it out" if video and not entry.model.num_classes else "give a class_name"
        raise _bad(f"{entry.name} takes no prompt (it was not trained on captions); {instead}")
    if entry.kind == "diffusion" and entry.model.upscale:
        raise _bad(f"{entry.name} is an upscaler: it sharpens images, it does not make them")
    if req.class_name is None or req.class_name == "":
        return req, None
    if not entry.model.num_classes:
        raise _bad(f"{entry.name} has no classes; leave class_name out")
    try:
        index = entry.model.class_index(req.class_name)
    except GenlabError as e:
        raise _bad(str(e)) from None
    if not 0 <= index < entry.model.num_classes:
        raise _bad(f"class {index} is out of range: {entry.name} knows 0..{entry.model.num_classes - 1}")
    return req, torch.tensor([index])


def _preview(entry: Entry, estimate: torch.Tensor) -> list[str]:
    """A step's estimate as the page shows it: each image, or each clip's strip of frames."""
    if entry.kind == "video":
        return [strip_data_url(clip) for clip in estimate]
    return [png_data_url(x) for x in estimate]


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
        elif entry.kind == "video":
            out = pipe(
                req.prompt if pipe.text else None, labels, req.num_frames, req.num_images, req.steps,
                req.guidance, req.sampler, generator=g, on_step=on_step,
            )  # fmt: skip
        else:
            out = pipe(
                req.num_images, labels, req.steps, req.guidance, req.sampler, generator=g, on_step=on_step
            )
    if entry.kind == "video":  # the GIFs play in an <img>; the strips show every frame at once
        clips = out.clips
        result = {
            "images": [gif_data_url(c) for c in clips],
            "strips": [strip_data_url(c) for c in clips],
            "settings": req.model_dump(),
        }
    else:
        settings = req.model_dump(exclude={"num_frames"})
        if entry.kind == "gan":
            settings.update(steps=1, sampler="generator", guidance=1.0)
        result = {"images": [png_data_url(x) for x in out.tensors], "settings": settings}
        if entry.kind == "text-to-image":  # how a word tokenizer read words its captions never use
            result["read_as"] = pipe.read_as(req.prompt)
    return {**result, "seconds": round(time.perf_counter() - start, 3)}


@router.post("/api/generate", responses=error_responses(403, 404, 422, 429, 503))
async def generate(req: GenerateRequest, request: Request, state: State) -> dict[str, Any]:
    """Generate ``num_images`` images (base64 PNG data URLs) with their settings (of a text-to-image
    run, ``read_as``: the prompt as its word tokenizer read it, where that differs, else null); of a
    video run, ``num_images`` clips of ``num_frames`` frames: ``images`` holds each as an animated GIF
    data URL, ``strips`` as a PNG of its frames in a row."""
    entry = state.registry.get(req.model, GENERATORS)
    req, labels = _check_generate(req, entry, state.limits)
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
    predicts, or for a video run the strips of the clips it now predicts) at every step, then ``done``
    with the result, or ``error``."""
    entry = state.registry.get(req.model, GENERATORS)
    req, labels = _check_generate(req, entry, state.limits)
    job = state.admit(request)  # before the response starts, so that a refusal is a real 429
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def on_step(step: int, total: int, frames: torch.Tensor) -> None:
        data = {"step": step, "total": total, "preview": _preview(entry, frames)}
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
