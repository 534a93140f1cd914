"""The attack playground: FGSM, PGD, APGD (cross-entropy or targeted DLR) or the query-based Square attack
against a served classifier, on one of its held-out images or an
upload; the adversarial image, the perturbation magnified, and the top predictions before and after."""

from __future__ import annotations

import math
from typing import Annotated, Any

import torch
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile

from genlab.server.encoding import MAX_NAME_CHARS, png_data_url
from genlab.server.errors import Rejected, error_responses
from genlab.server.registry import Entry
from genlab.server.state import ServerState, run_watched, served

# deepfool and cw find the least L2 change that flips the label, and take no epsilon
ATTACKS = ("fgsm", "pgd", "mi-fgsm", "apgd-ce", "apgd-t", "square", "deepfool", "cw")
UPLOAD_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/gif")

router = APIRouter()


def _top(probs: torch.Tensor, names: list[str], k: int = 3) -> list[dict[str, Any]]:
    values, indices = probs.topk(min(k, probs.numel()))
    return [
        {"class": names[i], "probability": round(float(v), 4)}
        for v, i in zip(values, indices.tolist(), strict=True)
    ]


def _attack(entry: Entry, x: torch.Tensor, label: int | None, attack: str, eps: float, steps: int) -> dict:
    """Attack the classifier on one image (1, C, H, W) and describe before and after (worker thread)."""
    from genlab.adversarial.apgd import apgd, apgd_targeted
    from genlab.adversarial.attacks import fgsm, mi_fgsm, pgd
    from genlab.adversarial.evaluation import magnify
    from genlab.adversarial.minimal import carlini_wagner_l2, deepfool
    from genlab.adversarial.square import square_attack

    model = entry.model
    with torch.no_grad():
        before = model(x).softmax(1)[0]
    y = torch.tensor([label if label is not None else int(before.argmax())])
    g = torch.Generator().manual_seed(0)
    if attack == "fgsm":
        adv = fgsm(model, x, y, eps)
    elif attack == "pgd":
        adv = pgd(model, x, y, eps, steps, generator=g)
    elif attack == "mi-fgsm":
        adv = mi_fgsm(model, x, y, eps, steps)
    elif attack == "deepfool":  # the least L2 change that flips the label: no epsilon
        adv = deepfool(model, x, steps)[0]
    elif attack == "cw":
        adv = carlini_wagner_l2(model, x, y, steps=steps)[0]
    elif attack == "apgd-ce":
        adv = apgd(model, x, y, eps, steps, generator=g)
    elif attack == "apgd-t":
        adv = apgd_targeted(model, x, y, eps, steps, targets=min(9, before.numel() - 1), generator=g)
    else:
        adv = square_attack(model, x, y, eps, queries=steps, generator=g)[0]
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
        "l2": round(float(delta.norm()), 4),
        "attacked_label": names[int(y)],
        "true_label": names[label] if label is not None else None,
        "before": _top(before, names),
        "after": _top(after, names),
        "fooled": int(after.argmax()) != int(y),
    }


@router.post("/api/attack", responses=error_responses(403, 404, 415, 422, 429, 503))
async def attack(
    request: Request,
    state: Annotated[ServerState, Depends(served)],
    model: Annotated[str, Form(max_length=MAX_NAME_CHARS, description="A classifier run's name")],
    attack: Annotated[str, Form(max_length=MAX_NAME_CHARS, description=", ".join(ATTACKS))] = "fgsm",
    eps: Annotated[float, Form(description="L-inf budget on [0, 1] images")] = 0.1,
    steps: Annotated[int, Form(description="PGD or APGD steps; Square's queries")] = 10,
    index: Annotated[int | None, Form(description="A held-out image of the classifier's data")] = None,
    image: Annotated[
        UploadFile | None, File(description="Or an image of your own (PNG, JPEG, BMP, GIF)")
    ] = None,
) -> dict[str, Any]:
    """Attack a classifier on one image; the adversarial image, the perturbation magnified, and the
    top predictions before and after."""
    limits = state.limits
    entry = state.registry.get(model, ("classifier",))
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
    job = state.admit(request)
    return await run_watched(job, request, _attack, entry, x, label, attack, eps, steps)
