"""From noise to images: a trained network, its schedule and parameterization, guidance and a sampler.

Shared by the training task (sample grids) and the pipelines, so there is one way to generate.
Images live in [0, 1]; the network works on [-1, 1] (Ho et al. 2020, section 3.3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.diffusion.denoiser import ClampedDenoiser, ConditionedDenoiser, InpaintingDenoiser, VPDenoiser
from genlab.diffusion.guidance import CFGDenoiser
from genlab.diffusion.guides import GradientGuidedDenoiser, Guide
from genlab.diffusion.samplers import SAMPLERS, sample
from genlab.diffusion.schedules import NoiseSchedule
from genlab.errors import GenlabError
from genlab.nn.pixels import to_images, to_model_space
from genlab.nn.precision import autocast, resolve_precision


def trajectory_frame(info: dict[str, Any], net: nn.Module | None = None) -> torch.Tensor:
    """The image a sampler callback's state shows: the sampler's x = x0 + sigma * eps (VE form) divided by
    sqrt(1 + sigma^2) is the VP x_t, mapped to [0, 1] on the CPU (decoded, for a latent network)."""
    x_t = info["x"] / (1 + info["sigma_next"] ** 2) ** 0.5
    decode = getattr(net, "decode_latents", None)
    return (decode(x_t) if decode is not None else to_images(x_t)).cpu()


def estimate_frame(info: dict[str, Any], net: nn.Module | None = None) -> torch.Tensor:
    """What the image will be, as a sampler callback's state predicts it: the denoised estimate of x0
    on the CPU; the start, which has none, shows the noise. A latent network's estimate is decoded, or
    previewed where it has a cheap preview of its latents (Stable Diffusion, whose decoder costs more
    than a step: ``preview_latents``)."""
    preview = getattr(net, "preview_latents", None)
    if info.get("denoised") is None:
        if preview is None:
            return trajectory_frame(info, net)
        return preview(info["x"] / (1 + info["sigma_next"] ** 2) ** 0.5).cpu()
    decode = preview or getattr(net, "decode_latents", None)
    x0 = info["denoised"]
    return (decode(x0) if decode is not None else to_images(x0)).cpu()


def step_recorder(
    net: nn.Module | None,
    steps: int,
    trajectory: list[torch.Tensor] | None,
    on_step: Callable[[int, int, torch.Tensor], None] | None,
) -> Callable[[dict[str, Any]], None] | None:
    """The sampler callback of the pipelines: it appends each step's ``trajectory_frame`` to
    ``trajectory`` (when a list is given) and calls ``on_step(i, steps, estimate)`` with the step's
    ``estimate_frame`` (the live preview); None when neither is asked for."""
    if trajectory is None and on_step is None:
        return None

    def record(info: dict[str, Any]) -> None:
        if trajectory is not None:
            trajectory.append(trajectory_frame(info, net))
        if on_step is not None:
            on_step(info["i"] + 1, steps, estimate_frame(info, net))

    return record


def check_sampling_args(sampler: str, steps: int, guidance_scale: float) -> None:
    if sampler not in SAMPLERS:
        raise GenlabError(f"unknown sampler '{sampler}'; choose one of {', '.join(SAMPLERS)}")
    if steps < 1:
        raise GenlabError(f"the number of sampling steps must be at least 1 (got {steps})")
    if guidance_scale < 0:
        raise GenlabError(f"the guidance scale must be >= 0 (got {guidance_scale}); 1 means no guidance")


def check_class_labels(labels: torch.Tensor | None, num_classes: int) -> None:
    if labels is None:
        return
    if num_classes == 0:
        raise GenlabError(
            "this model was trained without classes (`cond` none); sample it without `class_labels`"
        )
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        raise GenlabError(
            f"class {int(bad[0])} is out of range: this model knows classes 0..{num_classes - 1}"
        )


Condition = dict[str, torch.Tensor]  # the network's condition keywords (class_labels, context, lowres, ...)


def sdedit_start(
    net: nn.Module,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    init_images: torch.Tensor,
    strength: float,
) -> int:
    """The timestep round(strength T) - 1 that SDEdit (Meng et al. 2022) noises ``init_images`` to (-1:
    none, they are returned as they are), after checking them against the ``shape`` to be sampled."""
    if not 0.0 <= strength <= 1.0:
        raise GenlabError(f"strength must lie in [0, 1] (got {strength})")
    expected = tuple(shape)
    if hasattr(net, "decode_latents"):  # images of the latents' grid times the autoencoder's factor
        (c, side), grid = net.image_shape, net.sample_shape[1]
        factor = side // grid
        expected = (shape[0], c, shape[2] * factor, shape[3] * factor)
    if tuple(init_images.shape) != tuple(expected):
        raise GenlabError(f"init images have shape {tuple(init_images.shape)}, expected {tuple(expected)}")
    return round(strength * schedule.timesteps) - 1


def conditions(
    num_classes: int,
    n: int,
    device: torch.device,
    class_labels: torch.Tensor | None,
    cond: Condition | None,
    uncond: Condition | None,
    lowres: torch.Tensor | None,
    guidance_scale: float,
) -> tuple[Condition | None, Condition | None, float]:
    """(cond, uncond, guidance scale) as the network takes them: class labels become ``class_labels``
    with the "no class" label ``num_classes`` as the unconditional side; a low-resolution image (in
    [0, 1]) is part of both sides, and with nothing else to guide toward, guidance is off."""
    if class_labels is not None:
        if cond is not None:
            raise GenlabError("give either class labels or another condition, not both")
        labels = class_labels.to(device)
        cond, uncond = {"class_labels": labels}, {"class_labels": torch.full_like(labels, num_classes)}
    if lowres is not None:  # part of every prediction, guided or not
        if lowres.shape[0] != n:
            raise GenlabError(f"give one low-resolution image per output ({n}), not {lowres.shape[0]}")
        small = {"lowres": to_model_space(lowres.to(device))}
        if uncond is None:  # nothing to guide toward but the low-resolution image itself
            guidance_scale = 1.0
        else:
            uncond = {**uncond, **small}
        cond = {**(cond or {}), **small}
    return cond, uncond, guidance_scale


def guided(denoiser: Callable, cond: Condition | None, uncond: Condition | None, scale: float) -> Callable:
    """``denoiser`` given its condition: unconditional without one, conditional at scale 1, else
    classifier-free guided (Ho & Salimans 2022) between ``cond`` and ``uncond``."""
    if cond is None:
        return denoiser
    if scale == 1.0:
        return ConditionedDenoiser(denoiser, cond)
    if uncond is None:
        raise GenlabError("guidance needs an unconditional (or negative) condition beside the condition")
    return CFGDenoiser(denoiser, scale, cond, uncond)


def inpainting_masks(
    keep: torch.Tensor, init_images: torch.Tensor | None, init: torch.Tensor | None, latent: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``keep`` (1 where the image stays) at full size and on the grid of ``init``, the start the
    sampler works on: area-averaged down to the grid of ``latent`` codes, as it is for pixels."""
    if init_images is None or init is None:
        raise GenlabError("inpainting needs the image to keep parts of (init_images)")
    full = keep.to(device=init.device, dtype=init.dtype)
    if full.dim() != 4 or full.shape[1] != 1 or full.shape[2:] != init_images.shape[2:]:
        raise GenlabError(f"the mask must be (N, 1, H, W) like the images, got {tuple(full.shape)}")
    grid = F.interpolate(full, size=init.shape[2:], mode="area") if latent else full
    return full, grid


@torch.no_grad()
def generate(
    net: nn.Module,
    schedule: NoiseSchedule,
    parameterization: str,
    shape: tuple[int, ...],
    *,
    class_labels: torch.Tensor | None = None,
    cond: Condition | None = None,
    uncond: Condition | None = None,
    steps: int = 20,
    sampler: str = "dpmpp-2m",
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    sigmas_kind: str | None = None,
    clip_denoised: bool = True,
    init_images: torch.Tensor | None = None,
    strength: float = 1.0,
    keep: torch.Tensor | None = None,
    lowres: torch.Tensor | None = None,
    precision: str = "fp32",
    guide: Guide | None = None,
    guide_scale: float = 1.0,
    resample_jumps: int = 0,
    jump_length: int = 10,
    **sampler_kwargs: Any,
) -> torch.Tensor:
    """Sample ``shape`` = (N, C, H, W) images in [0, 1] from ``net``.

    The sampler sees one denoiser, built from small wrappers (``genlab.diffusion.denoiser``): the
    network's adapter (``VPDenoiser``), its condition (``conditions``, ``guided``), the known pixels of
    an inpainting (``InpaintingDenoiser``) and the clamp (``ClampedDenoiser``).

    With ``init_images`` (in [0, 1]) the trajectory starts from them noised to the timestep
    round(strength T) - 1 instead of from pure noise (SDEdit, Meng et al. 2022): strength 1 forgets them,
    small strengths keep their content and only re-draw the details (purification, image-to-image);
    strength 0 returns them unchanged.

    With ``keep`` as well (N or 1, 1, H, W; 1 where ``init_images`` must stay), the rest is inpainted: at
    every step the denoised estimate takes the known pixels in the kept region, so the sampler's
    trajectory is pulled toward them, and the result is composited with them at the end, so the kept
    region is returned exactly (the replacement method of Song et al. 2021, appendix I). With
    ``resample_jumps`` r >= 1 (sampler "ddpm") it is RePaint (Lugmayr et al. 2022): the kept region of x
    itself is replaced by the image noised to each level, and every ``jump_length`` steps the sampler goes
    back up and down again, r - 1 times (``genlab.diffusion.samplers.sample_ddpm``).

    A latent network (``genlab.diffusion.networks.LatentDiffusion``) is sampled in its latent space
    (``shape`` is then the latents'), images are encoded into it and the result decoded; an inpainting
    mask is area-averaged down to the latent grid and the known pixels composited at full size.

    ``lowres`` (N, C, h, w) in [0, 1] is what a super-resolution network (``lowres_channels`` > 0) sharpens:
    it is given to the network at every step, with and without the other condition (a cascade's second
    stage, Ho et al. 2022).

    ``clip_denoised`` clamps every x0 estimate to the data range [-1, 1], as the sampler of Ho et al. (2020)
    does (``clip_denoised`` in their code): guided estimates at high noise can overshoot far outside it,
    and an ODE solver started from such a point lands off the data manifold (noise-filled samples).

    ``callback`` sees the start (i = -1, x at sigma_max) and then each step's result, as samplers report.

    ``precision`` "bf16" runs the network under bfloat16 autocast (the sampler's arithmetic stays float32);
    "auto" does where the device is faster at it (genlab.nn.precision).

    With class labels and ``guidance_scale`` != 1, classifier-free guidance mixes the conditional and the
    unconditional ("no class") predictions (Ho & Salimans 2022); at scale 1 only the conditional one runs.
    Any other condition comes as keyword tensors ``cond`` (e.g. a prompt's token states) and ``uncond``
    (the empty prompt's, or a negative prompt's: its prediction then takes the unconditional one's place).

    ``guide`` (a noise-aware classifier's log p(y | x_t) or a noisy CLIP's similarity,
    ``genlab.diffusion.guides``) adds ``guide_scale`` times its gradient to every estimate (classifier
    guidance, Dhariwal & Nichol 2021; CLIP guidance, GLIDE), on top of classifier-free guidance if any.
    """
    check_sampling_args(sampler, steps, guidance_scale)
    latent = hasattr(net, "decode_latents")
    device = next(net.parameters()).device
    start = init = None
    if init_images is not None:
        start = sdedit_start(net, schedule, shape, init_images, strength)
        if start < 0:
            return init_images.clone()
        steps = min(steps, start + 1)
    num_classes = getattr(getattr(net, "config", None), "num_classes", 0)
    check_class_labels(class_labels, num_classes)
    if init_images is not None:
        init = net.encode_images(init_images.to(device)) if latent else to_model_space(init_images.to(device))
    precision = resolve_precision(precision, device)
    denoiser = VPDenoiser(net, schedule, parameterization, precision)
    cond, uncond, guidance_scale = conditions(
        num_classes, shape[0], device, class_labels, cond, uncond, lowres, guidance_scale
    )
    denoiser = guided(denoiser, cond, uncond, guidance_scale)
    if guide is not None:
        if latent:
            raise GenlabError("gradient guidance works on pixels; this model samples latents")
        denoiser = GradientGuidedDenoiser(denoiser, guide, guide_scale)
    mask = None
    if resample_jumps and keep is None:
        raise GenlabError(
            "`resample_jumps` is RePaint's resampling for inpainting: give the region to `keep`"
        )
    if keep is not None:
        mask, grid = inpainting_masks(keep, init_images, init, latent)
        denoiser = InpaintingDenoiser(denoiser, init, grid)
        if resample_jumps:
            if sampler != "ddpm":
                raise GenlabError(
                    f"RePaint (`resample_jumps`) resamples with DDPM steps: use `sampler` ddpm, not {sampler}"
                )
            sampler_kwargs.update(
                known=init, mask=grid, resample_jumps=resample_jumps, jump_length=jump_length
            )
    if clip_denoised and not latent:  # latents have no fixed range
        denoiser = ClampedDenoiser(denoiser, -1.0, 1.0)
    x = run_sampler(
        denoiser, schedule, shape, device, sampler, steps, generator, callback, precision, sigmas_kind,
        x0=init, start=start, **sampler_kwargs,
    )  # fmt: skip
    images = net.decode_latents(x) if latent else to_images(x)
    if mask is not None:  # the kept region returned exactly, at full size
        images = mask * init_images.to(device) + (1 - mask) * images
    return images


def run_sampler(
    denoiser: Callable,
    schedule: NoiseSchedule,
    shape: tuple[int, ...],
    device: torch.device,
    sampler: str,
    steps: int,
    generator: torch.Generator | None,
    callback: Callable[[dict[str, Any]], None] | None,
    precision: str,
    sigmas_kind: str | None,
    **sampler_kwargs: Any,
) -> torch.Tensor:
    """Integrate from unit noise of ``shape`` (drawn by ``generator`` on its own device, so a seed gives
    the same start on every device) with ``denoiser``: the sampler's result in model space. ``callback``
    sees the start first (i = -1, x at sigma_max), then each step as the samplers report it.

    The start is sigma_max times unit noise (k-diffusion's convention), which is sqrt(1 - abar_T) eps in
    VP variables where Ho et al.'s Algorithm 2 draws x_T = eps: the two agree where abar_T is near 0 (4e-5
    on the 1000-step linear schedule) and differ on a schedule that stops short of pure noise (abar_T =
    0.36 on 100 linear steps)."""
    noise = torch.randn(shape, generator=generator, device=generator.device if generator else "cpu")
    noise = noise.to(device)
    if callback is not None:  # the starting point, as the samplers report the x after each step
        sigma_max = schedule.sigma_max
        callback({"i": -1, "x": noise * sigma_max, "sigma": None, "sigma_next": sigma_max, "denoised": None})
    # One autocast region for the whole run, so the weights are cast to bf16 once, not at every step
    # (the denoiser's own region nests inside it); the samplers' arithmetic is elementwise and stays fp32.
    with autocast(device, precision):
        return sample(
            sampler,
            denoiser,
            noise,
            schedule,
            steps,
            callback=callback,
            generator=generator,
            sigmas_kind=sigmas_kind,
            **sampler_kwargs,
        )
