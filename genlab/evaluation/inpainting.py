"""How well a diffusion model inpaints, measured on held-out images with a region masked out: is the
completed image still what it was (the judge's class), and does the new region meet the kept one without
a seam? RePaint (Lugmayr et al. 2022) against the replacement method it improves on (Song et al. 2021,
appendix I), on the same images, masks and seeds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from genlab.classification.evaluate import predict
from genlab.data import ImageDataset
from genlab.errors import GenlabError, param

MASKS = ("bottom", "top", "left", "right", "center")


def region_mask(kind: str, size: int) -> torch.Tensor:
    """(1, 1, size, size): 1 where the image is kept, 0 in the region to inpaint (``kind``: the bottom,
    top, left or right half, or the center square of half the side)."""
    keep = torch.ones(1, 1, size, size)
    half, quarter = size // 2, size // 4
    regions = {
        "bottom": (slice(half, None), slice(None)),
        "top": (slice(None, half), slice(None)),
        "left": (slice(None), slice(None, half)),
        "right": (slice(None), slice(half, None)),
        "center": (slice(quarter, quarter + half), slice(quarter, quarter + half)),
    }
    if kind not in regions:
        raise GenlabError(f"unknown `mask` {kind!r}; choose one of {', '.join(MASKS)}")
    rows, cols = regions[kind]
    keep[..., rows, cols] = 0
    return keep


def seam(images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per image, the mean absolute difference between neighbouring pixels (right and down) that lie on
    either side of the mask's border, one kept and one inpainted: how sharply the two regions meet."""
    k = keep.expand(images.shape[0], 1, *images.shape[2:])
    totals, counts = images.new_zeros(images.shape[0]), 0
    for dim in (2, 3):
        n = images.shape[dim] - 1
        a, b = images.narrow(dim, 0, n), images.narrow(dim, 1, n)
        across = (k.narrow(dim, 0, n) != k.narrow(dim, 1, n)).to(images)
        totals = totals + ((a - b).abs() * across).flatten(1).sum(1) / images.shape[1]
        counts += float(across[0].sum())
    if counts == 0:
        raise GenlabError("the mask has no border between kept and inpainted pixels")
    return totals / counts


def inpainting_report(
    pipe: Any,
    judge: torch.nn.Module,
    val: ImageDataset,
    mask: str = "bottom",
    n: int = 200,
    steps: int = 50,
    resample_jumps: tuple[int, ...] = (0, 5),
    jump_length: int = 5,
    seed: int = 0,
    batch_size: int = 100,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Inpaint the ``mask`` region of the first ``n`` held-out images of ``val`` (spread over the split)
    with DDPM ancestral steps, by replacement (``resample_jumps`` 0) and by RePaint with each r of
    ``resample_jumps``. Each row: the share the ``judge`` classifies as the image's true label
    (``recognised``), the ``seam`` across the mask's border and its excess over the real images'
    (``seam_excess``: 0 is as smooth as the data), the model evaluations per image and the seconds. The
    model draws unconditionally: a class model is sampled at guidance 0 (its unconditional prediction)."""
    if val.labels is None:
        raise GenlabError("inpainting is judged against the images' labels; this data set has none")
    if not 1 <= n <= len(val):
        raise GenlabError(f"{param('n')} must be between 1 and the {len(val)} held-out images (got {n})")
    pick = torch.linspace(0, len(val) - 1, n).round().long()
    images, labels = val.images[pick], val.labels[pick]
    keep = region_mask(mask, images.shape[-1])
    real_seam = float(seam(images, keep).mean())

    def recognised(x: torch.Tensor) -> float:
        return float((predict(judge, x).argmax(1) == labels).float().mean())

    rows: list[dict[str, Any]] = [
        {"method": "kept region only (nothing inpainted)", "recognised": recognised(images * keep)},
        {"method": "real images", "recognised": recognised(images), "seam": real_seam},
    ]
    calls = 0

    def count(*_: Any) -> None:
        nonlocal calls
        calls += 1

    hook = pipe.network.register_forward_hook(count)
    try:
        for r in resample_jumps:
            generator = torch.Generator().manual_seed(seed)
            calls, t0, outs = 0, time.perf_counter(), []
            extra = {"resample_jumps": r, "jump_length": jump_length} if r else {}
            for i in range(0, n, batch_size):
                batch = images[i : i + batch_size]
                labels_arg = {"class_labels": labels[i : i + batch_size]} if pipe.num_classes else {}
                out = pipe(
                    num_images=len(batch), num_inference_steps=steps, guidance_scale=0.0, sampler="ddpm",
                    generator=generator, init_images=batch, keep=keep, **labels_arg, **extra,
                )  # fmt: skip
                outs.append(out.tensors)
            done = torch.cat(outs)
            row_seam = float(seam(done, keep).mean())
            rows.append(
                {
                    "method": f"RePaint, r = {r}, jump {jump_length}" if r else "replacement",
                    "resample_jumps": r,
                    "recognised": recognised(done),
                    "seam": row_seam,
                    "seam_excess": row_seam - real_seam,
                    "nfe": calls // max(1, -(-n // batch_size)),
                    "seconds": time.perf_counter() - t0,
                }
            )
            row = rows[-1]
            log(
                f"  {row['method']}: recognised {row['recognised']:.1%}, seam {row['seam']:.3f} "
                f"(real {real_seam:.3f}), {row['nfe']} model calls per image, {row['seconds']:.0f} s"
            )
    finally:
        hook.remove()
    return {"mask": mask, "n": n, "steps": steps, "sampler": "ddpm", "seed": seed, "rows": rows}
