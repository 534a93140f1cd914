"""The fidelity-diversity trade of guidance, measured: classifier-free guidance (Ho & Salimans 2022)
against guidance by a noise-aware classifier (Dhariwal & Nichol 2021) or a noised CLIP (Nichol et al.
2022, "GLIDE"), each over a sweep of scales, on the same seeds.

Fidelity is what the samples were asked to be, read by a judge: the share of a class model's samples the
data's classifier recognises as their class, or the share of a text model's single-object samples whose
colour, shape, size and position read back from the pixels as the prompt says (adherence). Diversity is
recall (Kynkaanniemi et al. 2019) and FID against the held-out split, in the evaluation's features.
Dhariwal & Nichol's Figure 4 and Ho & Salimans' Figure 2 draw these curves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from genlab.classification.evaluate import predict
from genlab.errors import GenlabError, param
from genlab.evaluation.accuracy import class_accuracy, generate_samples
from genlab.metrics.distances import fid_from_features
from genlab.metrics.precision_recall import precision_recall

# Classifier guidance steers the model's unconditional prediction (scale 0 of classifier-free guidance),
# as Dhariwal & Nichol guide unconditional models; CLIP guidance steers the text-conditional prediction
# (scale 1: no classifier-free guidance), as GLIDE's CLIP-guided samples do.
GUIDE_BASE = {"classifier": 0.0, "clip": 1.0}


def guide_kind(guide: torch.nn.Module) -> str:
    """ "classifier" for a noise-aware classifier, "clip" for a noised CLIP; anything else is refused."""
    kind = getattr(guide, "kind", None)
    if kind not in GUIDE_BASE or not getattr(guide.config, "noise_timesteps", 0):
        raise GenlabError(
            f"the {param('guide')} must be a noise-aware classifier or a noised CLIP (with "
            "`noise_timesteps`, trained on noisy images)"
        )
    return kind


def _samples(pipe: Any, cfg: Any, inputs: Any, scale: float, **guide: Any) -> tuple[torch.Tensor, Any]:
    if inputs.prompts is not None:
        from genlab.evaluation.evaluation import generate_from_prompts

        images = generate_from_prompts(
            pipe, inputs.prompts, cfg.steps, cfg.sampler, scale, cfg.seed, cfg.batch_size, **guide
        )
        return images, None
    classes = pipe.num_classes or (inputs.guide.config.num_classes if inputs.guide is not None else 0)
    return generate_samples(
        pipe, cfg.n, cfg.steps, cfg.sampler, scale, cfg.seed, cfg.batch_size, num_classes=classes, **guide
    )


def _scores(images: torch.Tensor, labels: Any, inputs: Any, real: torch.Tensor | None) -> dict[str, Any]:
    row: dict[str, Any] = {}
    if inputs.prompts is not None:
        from genlab.metrics.adherence import prompt_adherence

        adherence = prompt_adherence(images, inputs.prompts)
        row["fidelity"] = adherence["all"]
        row["adherence"] = adherence["per_attribute"]
    elif inputs.judge is not None and labels is not None:
        predicted = predict(inputs.judge, images).argmax(1)
        row["fidelity"] = class_accuracy(predicted, labels, inputs.judge.config.num_classes)["accuracy"]
    if real is not None and inputs.extractor is not None:
        fake = inputs.extractor(images)
        row["fid"] = fid_from_features(real, fake)
        row.update(precision_recall(real, fake))
    return row


def guidance_sweep(
    pipe: Any, cfg: Any, inputs: Any, real: torch.Tensor | None, log: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """One row per guidance setting: classifier-free guidance at each scale of ``cfg.guidance_sweep``, then
    ``inputs.guide`` at each of ``cfg.guide_scales`` (on the model's unconditional prediction for a
    classifier, its conditional one for CLIP: ``GUIDE_BASE``). Each row holds the fidelity (recognised
    share or adherence), FID, precision and recall against ``real`` (features of the held-out split), and
    the seconds its samples took. The same seeds for every row."""
    if cfg.guide_scales and inputs.guide is None:
        raise GenlabError(f"guide scales need a guide: pass {param('guide')}")
    if cfg.guidance_sweep and not (pipe.num_classes or inputs.prompts is not None):
        raise GenlabError("classifier-free guidance needs a class or text model; this one is unconditional")
    settings: list[tuple[str, float, dict[str, Any]]] = [("cfg", s, {}) for s in cfg.guidance_sweep]
    if cfg.guide_scales:
        kind = guide_kind(inputs.guide)
        if (kind == "clip") != (inputs.prompts is not None):
            raise GenlabError(
                "CLIP guides a text-to-image run, a classifier a class or unconditional run; "
                f"this {param('guide')} does not fit the run"
            )
        settings += [(kind, s, {kind: inputs.guide, f"{kind}_scale": s}) for s in cfg.guide_scales]
    rows = []
    for kind, scale, guide in settings:
        base = scale if kind == "cfg" else GUIDE_BASE[kind]
        if kind == "classifier" and not pipe.num_classes:
            base = 1.0  # an unconditional model: its only prediction
        t0 = time.perf_counter()
        images, labels = _samples(pipe, cfg, inputs, base, **guide)
        row = {"guidance": kind, "scale": scale, "n": len(images), "seconds": time.perf_counter() - t0}
        row.update(_scores(images, labels, inputs, real))
        rows.append(row)
        parts = [f"{k} {row[k]:.3f}" for k in ("fidelity", "fid", "precision", "recall") if k in row]
        log(f"  guidance {kind:>10} scale {scale:g}: " + ", ".join(parts))
    return rows
