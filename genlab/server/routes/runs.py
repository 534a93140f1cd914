"""The runs served: their list with the limits of a request, a run's metrics, a classifier's held-out
images."""

from __future__ import annotations

import base64
import math
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from genlab.diffusion.samplers import SAMPLERS
from genlab.server.encoding import png_data_url
from genlab.server.errors import Rejected, error_responses
from genlab.server.registry import Entry
from genlab.server.routes.attack import ATTACKS
from genlab.server.state import ServerState, served

router = APIRouter()
State = Annotated[ServerState, Depends(served)]


class PNG(Response):
    media_type = "image/png"


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


@router.get("/api/models", responses=error_responses())
def models(state: State) -> dict[str, Any]:
    """The runs this server was started with, and the limits of a request."""
    limits = state.limits
    return {
        "models": [e.describe() for e in state.registry.entries.values()],
        "limits": {
            "max_images": limits.max_images,
            "max_clips": limits.max_clips,
            "max_frames": limits.max_frames,
            "max_steps": limits.max_steps,
            "max_prompt_chars": limits.max_prompt_chars,
            "max_upload_bytes": limits.max_upload_bytes,
            "max_eps": limits.max_eps,
        },
        "samplers": list(SAMPLERS),
        "attacks": list(ATTACKS),
    }


@router.get("/api/models/{name}/metrics", responses=error_responses(404, 422))
def metrics(name: str, state: State) -> dict[str, Any]:
    """A run's training curve and evaluations (metrics.jsonl), numbers only."""
    entries = state.registry.entries
    entry = entries.get(name)
    if entry is None:
        raise LookupError(f"no model named {name!r} here; choose one of: {', '.join(entries)}")
    return _metrics(entry)


@router.get(
    "/api/models/{name}/images/{index}",
    response_class=PNG,
    responses={200: {"content": {"image/png": {}}}, **error_responses(404, 422)},
)
def dataset_image(name: str, index: int, state: State) -> Response:
    """Held-out image ``index`` of a classifier's own data split (the images it was evaluated on), as
    PNG: the attack playground's choices."""
    entry = state.registry.get(name, ("classifier",))
    count = len(entry.data) if entry.data is not None else 0
    if count == 0:
        raise Rejected(404, f"{entry.name} serves no held-out images; upload an image instead")
    if not 0 <= index < count:
        raise Rejected(422, f"index must be between 0 and {count - 1} (got {index})")
    url = png_data_url(entry.data.images[index])
    return PNG(base64.b64decode(url.split(",", 1)[1]))
