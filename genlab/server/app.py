"""The web app and its REST API (FastAPI): generate images with the runs the server was started with,
watch them emerge from noise, attack a classifier, read a run's metrics. OpenAPI at /docs and
/openapi.json; every error is JSON ``{"error": "one line"}``: a 4xx for what the client can change, a 500
(with no traceback or path: those go to the server's log) for a failure of the server itself.

Every request first passes genlab.server.guard (Host, same origin, body size); a job whose client
disconnects is cancelled at its network's next forward pass (genlab.server.limits)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Annotated, Any

import torch
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException
from torch import nn

from genlab.diffusion.generate import check_sampling_args
from genlab.errors import GenlabError
from genlab.server.guard import Guard
from genlab.server.limits import Busy, Cancelled, Job, JobQueue, RateLimiter, ServerLimits, make_cancellable
from genlab.server.registry import GENERATORS, Entry, Registry

ATTACKS = ("fgsm", "pgd")
MAX_SEED = 2**31 - 1
MAX_GUIDANCE = 20.0
MAX_NAME_CHARS = 200  # model, sampler and class names: echoed in error messages, so bounded
UPLOAD_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/gif")
INTERNAL = "the server failed on this request ({}); its log has the details"

log = logging.getLogger(__name__)


def _proper_unicode(text: str) -> str:
    """JSON may carry a lone surrogate ("\\ud800"), which Python decodes into a str that cannot be
    encoded again: refuse it up front, before any work, rather than fail when the answer is written."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate such as \\ud800)") from None
    return text


Text = Annotated[str, AfterValidator(_proper_unicode)]
Name = Annotated[str, Field(max_length=MAX_NAME_CHARS), AfterValidator(_proper_unicode)]


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


class ErrorBody(BaseModel):
    """Every error the API answers."""

    error: str


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error statuses an endpoint may answer, all ``{"error": str}`` as JSON (spelt
    out: FastAPI would give a ``model`` the route's media type, image/png or text/event-stream)."""
    why = {
        400: "a host name this server does not answer, or a malformed body",
        403: "a cross-site request",
        404: "no such model (of this kind) here",
        413: "the request body is too large",
        415: "an upload of a type that is not an image",
        422: "a parameter out of range or of the wrong type",
        429: "too many requests from this client, or the server is busy",
        500: "the server failed (its log has the details)",
        503: "the request was cancelled: its client went away",
    }
    json_error = {"application/json": {"schema": ErrorBody.model_json_schema()}}
    return {s: {"description": why[s], "content": json_error} for s in (400, 413, 500, *statuses)}


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


class Rejected(Exception):
    """A request that cannot be served as asked: 4xx with a one-line message."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


class PNG(Response):
    media_type = "image/png"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": message}`` on one line, with anything that cannot be encoded (a lone surrogate echoed
    from a request) replaced: an error must never fail to be written."""
    text = " ".join(message.splitlines()).encode("utf-8", "replace").decode("utf-8")
    return JSONResponse({"error": text}, status_code=status, headers=headers)


def png_data_url(image: torch.Tensor) -> str:
    """A (C, H, W) image in [0, 1] as a data: URL of a PNG."""
    from genlab.pipelines.diffusion import tensor_to_pil

    buffer = io.BytesIO()
    tensor_to_pil(image[None].cpu())[0].save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


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


def _top(probs: torch.Tensor, names: list[str], k: int = 3) -> list[dict[str, Any]]:
    values, indices = probs.topk(min(k, probs.numel()))
    return [
        {"class": names[i], "probability": round(float(v), 4)}
        for v, i in zip(values, indices.tolist(), strict=True)
    ]


def _attack(entry: Entry, x: torch.Tensor, label: int | None, attack: str, eps: float, steps: int) -> dict:
    """Attack the classifier on one image (1, C, H, W) and describe before and after (worker thread)."""
    from genlab.adversarial.attacks import fgsm, pgd
    from genlab.adversarial.evaluation import magnify

    model = entry.model
    with torch.no_grad():
        before = model(x).softmax(1)[0]
    y = torch.tensor([label if label is not None else int(before.argmax())])
    if attack == "fgsm":
        adv = fgsm(model, x, y, eps)
    else:
        adv = pgd(model, x, y, eps, steps, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        after = model(adv).softmax(1)[0]
    delta = adv - x
    picture, scale = magnify(delta)
    names = entry.class_names
    return {
        "original": png_data_url(x[0]),
        "adversarial": png_data_url(adv[0]),
        "perturbation": png_data_url(picture[0]),
        "magnification": round(scale[0], 2),
        "linf": round(float(delta.abs().max()), 4),
        "attacked_label": names[int(y)],
        "true_label": names[label] if label is not None else None,
        "before": _top(before, names),
        "after": _top(after, names),
        "fooled": int(after.argmax()) != int(y),
    }


def _metrics(entry: Entry, points: int = 400) -> dict[str, Any]:
    """The run's training and evaluation records, finite numbers only, thinned to at most ``points`` each.
    metrics.jsonl is written by whoever made the run: a line that is not an object is skipped, not a 500."""
    from genlab import rundir

    train, evals = [], []
    for row in rundir.read_metrics(entry.run):
        if not isinstance(row, dict):
            continue
        numbers = {
            k: v
            for k, v in row.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }
        if row.get("event") == "train":
            train.append(numbers)
        elif row.get("event") == "eval":
            evals.append(numbers)
    stride = max(1, math.ceil(len(train) / points))
    return {"model": entry.name, "train": train[::stride], "eval": evals[-points:]}


def _networks(model: Any) -> list[nn.Module]:
    """The networks of a served model: the model itself, or a pipeline's nn.Module attributes."""
    if isinstance(model, nn.Module):
        return [model]
    return [v for v in vars(model).values() if isinstance(v, nn.Module)]


async def _run_watched(job: Job, request: Request, fn: Callable, *args: Any) -> Any:
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
    rate = RateLimiter(limits.rate_per_minute, limits.burst, clock)
    queue = JobQueue(limits.max_running, limits.max_waiting, limits.max_jobs_per_client)
    background: set[asyncio.Task] = set()  # streams' jobs, referenced until done (the loop holds weak refs)
    for entry in registry.entries.values():
        for net in _networks(entry.model):
            make_cancellable(net)

    @app.exception_handler(Rejected)
    async def _rejected(_: Request, e: Rejected) -> JSONResponse:
        return _error(e.status, e.message, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        loc = list(first.get("loc", ()))
        if loc and loc[0] in ("body", "query", "path"):  # where the field was, not which
            loc = loc[1:]
        where = ".".join(str(p) for p in loc)
        msg = str(first.get("msg")).removeprefix("Value error, ")
        return _error(422, f"{where}: {msg}" if where else msg)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, e: HTTPException) -> JSONResponse:
        return _error(e.status_code, str(e.detail), e.headers)  # e.g. 405 keeps its Allow header

    @app.exception_handler(LookupError)
    async def _unknown(_: Request, e: LookupError) -> JSONResponse:
        return _error(404, str(e.args[0]) if e.args else "not found")

    @app.exception_handler(GenlabError)
    async def _genlab(_: Request, e: GenlabError) -> JSONResponse:
        return _error(422, str(e))

    @app.exception_handler(Busy)
    async def _busy(_: Request, e: Busy) -> JSONResponse:
        return _error(429, str(e), {"Retry-After": "5"})

    @app.exception_handler(Cancelled)
    async def _cancelled(_: Request, e: Cancelled) -> JSONResponse:
        return _error(503, "the request was cancelled: its client went away")

    @app.exception_handler(Exception)
    async def _failed(_: Request, e: Exception) -> JSONResponse:
        # Starlette logs the traceback after this answer; the client gets one line without it.
        return _error(500, INTERNAL.format(type(e).__name__))

    def _client(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def admit(request: Request) -> Job:
        """The per-client rate limit of the costly endpoints, then a place in the queue."""
        client = _client(request)
        wait = rate.take(client)
        if wait > 0:
            raise Rejected(
                429,
                f"too many requests: at most {limits.rate_per_minute:g} a minute (burst {limits.burst}); "
                f"retry in {math.ceil(wait)} s",
                {"Retry-After": str(math.ceil(wait))},
            )
        return queue.admit(client)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("genlab.server").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/api/health", responses=_errors())
    def health() -> dict[str, Any]:
        """Up, and how many jobs are running or waiting."""
        return {"status": "ok", "jobs": queue.admitted}

    @app.get("/api/models", responses=_errors())
    def models() -> dict[str, Any]:
        """The runs this server was started with, and the limits of a request."""
        return {
            "models": [e.describe() for e in registry.entries.values()],
            "limits": {
                "max_images": limits.max_images,
                "max_steps": limits.max_steps,
                "max_prompt_chars": limits.max_prompt_chars,
                "max_upload_bytes": limits.max_upload_bytes,
                "max_eps": limits.max_eps,
            },
            "samplers": ["ddpm", "ddim", "dpmpp-2m", "euler", "heun"],
            "attacks": list(ATTACKS),
        }

    @app.get("/api/models/{name}/metrics", responses=_errors(404, 422))
    def metrics(name: str) -> dict[str, Any]:
        """A run's training curve and evaluations (metrics.jsonl), numbers only."""
        entry = registry.entries.get(name)
        if entry is None:
            raise LookupError(f"no model named {name!r} here; choose one of: {', '.join(registry.entries)}")
        return _metrics(entry)

    @app.get(
        "/api/models/{name}/images/{index}",
        response_class=PNG,
        responses={200: {"content": {"image/png": {}}}, **_errors(404, 422)},
    )
    def dataset_image(name: str, index: int) -> Response:
        """Held-out image ``index`` of a classifier's own data split (the images it was evaluated on), as
        PNG: the attack playground's choices."""
        entry = registry.get(name, ("classifier",))
        count = len(entry.data) if entry.data is not None else 0
        if count == 0:
            raise Rejected(404, f"{entry.name} serves no held-out images; upload an image instead")
        if not 0 <= index < count:
            raise Rejected(422, f"index must be between 0 and {count - 1} (got {index})")
        url = png_data_url(entry.data.images[index])
        return PNG(base64.b64decode(url.split(",", 1)[1]))

    @app.post("/api/generate", responses=_errors(403, 404, 422, 429, 503))
    async def generate(req: GenerateRequest, request: Request) -> dict[str, Any]:
        """Generate ``num_images`` images (base64 PNG data URLs) with their settings."""
        entry = registry.get(req.model, GENERATORS)
        labels = _check_generate(req, entry, limits)
        job = admit(request)
        return await _run_watched(job, request, _generate, entry, req, labels)

    @app.post(
        "/api/generate/stream",
        response_class=EventStream,
        responses={200: {"content": {"text/event-stream": {"schema": EVENT}}}, **_errors(403, 404, 422, 429)},
    )
    async def generate_stream(req: GenerateRequest, request: Request) -> EventStream:
        """The same, as server-sent events: ``progress`` (step, total, and the images the model now
        predicts) at every step, then ``done`` with the result, or ``error``."""
        entry = registry.get(req.model, GENERATORS)
        labels = _check_generate(req, entry, limits)
        job = admit(request)  # before the response starts, so that a refusal is a real 429
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def on_step(step: int, total: int, frames: torch.Tensor) -> None:
            data = {"step": step, "total": total, "preview": [png_data_url(f) for f in frames]}
            loop.call_soon_threadsafe(events.put_nowait, ("progress", data))

        async def produce() -> None:
            """The job, ending the stream however it ends: done, an error event, or cancelled."""
            try:
                result = await _run_watched(job, request, _generate, entry, req, labels, on_step)
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
        background.add(task)
        task.add_done_callback(background.discard)

        async def stream():
            try:
                while (item := await events.get()) is not None:
                    yield f"event: {item[0]}\ndata: {json.dumps(item[1])}\n\n"
            finally:  # the job is over, or the client left (the stream was closed): stop computing
                job.cancel.set()

        return EventStream(stream())

    @app.post("/api/attack", responses=_errors(403, 404, 415, 422, 429, 503))
    async def attack(
        request: Request,
        model: Annotated[str, Form(max_length=MAX_NAME_CHARS, description="A classifier run's name")],
        attack: Annotated[str, Form(max_length=MAX_NAME_CHARS, description="fgsm or pgd")] = "fgsm",
        eps: Annotated[float, Form(description="L-inf budget on [0, 1] images")] = 0.1,
        steps: Annotated[int, Form(description="PGD steps")] = 10,
        index: Annotated[int | None, Form(description="A held-out image of the classifier's data")] = None,
        image: Annotated[
            UploadFile | None, File(description="Or an image of your own (PNG, JPEG, BMP, GIF)")
        ] = None,
    ) -> dict[str, Any]:
        """Attack a classifier on one image; the adversarial image, the perturbation magnified, and the
        top predictions before and after."""
        entry = registry.get(model, ("classifier",))
        if attack not in ATTACKS:
            raise Rejected(422, f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
        if not 0 <= eps <= limits.max_eps or math.isnan(eps):
            raise Rejected(422, f"eps must be between 0 and {limits.max_eps} (got {eps})")
        if not 1 <= steps <= limits.max_steps:
            raise Rejected(422, f"steps must be between 1 and {limits.max_steps} (got {steps})")
        cfg = entry.model.config
        label = None
        if (image is None) == (index is None):
            raise Rejected(422, "give either index (a held-out image) or image (an upload), not both")
        if image is not None:
            data = await image.read(limits.max_upload_bytes + 1)
            if len(data) > limits.max_upload_bytes:
                raise Rejected(413, f"the upload is larger than {limits.max_upload_bytes} bytes")
            if image.content_type not in UPLOAD_TYPES:
                raise Rejected(415, f"uploads must be {', '.join(UPLOAD_TYPES)} (got {image.content_type})")
            from genlab.data.images import image_from_bytes

            x = image_from_bytes(data, cfg.image_size, cfg.in_channels, limits.max_side)[None]
        else:
            assert index is not None
            count = len(entry.data) if entry.data is not None else 0
            if count == 0:
                raise Rejected(422, f"{entry.name} serves no held-out images; upload an image instead")
            if not 0 <= index < count:
                raise Rejected(422, f"index must be between 0 and {count - 1} (got {index})")
            x = entry.data.images[index : index + 1]
            label = int(entry.data.labels[index]) if entry.data.labels is not None else None
        job = admit(request)
        return await _run_watched(job, request, _attack, entry, x, label, attack, eps, steps)

    return app
