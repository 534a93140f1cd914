"""From noise to clips: the video networks under every sampler, with classifier-free guidance on the prompt,
the class and the first frame.

A clip (N, T, C, H, W) is one sample to the samplers and to the denoiser wrappers of
``genlab.diffusion.denoiser``, which work on any shape. Image-to-video conditions on a known first frame the
way the network was trained to take it (``VideoConfig.frame_cond``): that frame enters the network clean, at
timestep 0, while the others are noisy (a per-frame noise level, as in Ho et al. 2022's conditional
sampling by training rather than by reconstruction guidance), and the sampler's estimate of it is the known
frame itself, so the clip starts exactly there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from genlab.diffusion.denoiser import ClampedDenoiser, InpaintingDenoiser, VPDenoiser
from genlab.diffusion.generate import (
    check_class_labels,
    check_sampling_args,
    conditions,
    guided,
    run_sampler,
)
from genlab.diffusion.parameterization import network_input
from genlab.diffusion.schedules import NoiseSchedule
from genlab.errors import GenlabError
from genlab.nn.pixels import to_images, to_model_space
from genlab.nn.precision import resolve_precision
from genlab.video.mixed_noise import MixedNoiseDenoiser, correlate
from genlab.video.networks import past_frames


def with_first_frame(
    net: Callable,
    parameterization: str,
    abar0: float,
    x: torch.Tensor,
    t: torch.Tensor,
    first_frame: torch.Tensor | None,
    frame_given: torch.Tensor | None,
    **cond: Any,
) -> torch.Tensor:
    """``net(x, t, **cond)`` on clips x (N, T, C, H, W) at timesteps t (N,), where the clips with
    ``frame_given`` (N,) bool are shown their ``first_frame`` (N, C, H, W, model space [-1, 1]) clean: frame 0
    of the input is that frame as the network takes it at timestep 0 (noise level ``abar0``), and frame 0's
    timestep is 0. Training and sampling both call this, so they condition alike."""
    if first_frame is None or frame_given is None or not bool(frame_given.any()):
        return net(x, t, **cond)
    n, frames = x.shape[:2]
    given = frame_given.to(x.device)
    clean = network_input(parameterization, first_frame.to(x.dtype), torch.full((n,), abar0, device=x.device))
    x = x.clone()
    x[:, 0] = torch.where(given[:, None, None, None], clean, x[:, 0])
    per_frame = t.reshape(-1, 1).expand(n, frames).clone() if t.ndim < 2 else t.clone()
    per_frame[:, 0] = torch.where(given, torch.zeros_like(per_frame[:, 0]), per_frame[:, 0])
    return net(x, per_frame, **cond)


class FrameConditioned(nn.Module):
    """A video network that also takes ``first_frame`` and ``frame_given`` keywords (``with_first_frame``);
    its ``config`` and parameters are the network's, so the pipelines and ``generate_clips`` see it as the
    network."""

    def __init__(self, net: nn.Module, parameterization: str, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.net = net
        self.parameterization = parameterization
        self.abar0 = float(schedule.abar(torch.zeros(1, dtype=torch.long))[0])

    @property
    def config(self) -> Any:
        return self.net.config

    def forward(self, x, t, first_frame=None, frame_given=None, **cond) -> torch.Tensor:
        return with_first_frame(
            self.net, self.parameterization, self.abar0, x, t, first_frame, frame_given, **cond
        )


@torch.no_grad()
def generate_clips(
    net: nn.Module,
    schedule: NoiseSchedule,
    parameterization: str,
    shape: tuple[int, int, int, int, int],
    *,
    class_labels: torch.Tensor | None = None,
    cond: dict[str, torch.Tensor] | None = None,
    uncond: dict[str, torch.Tensor] | None = None,
    first_frame: torch.Tensor | None = None,
    steps: int = 20,
    sampler: str = "dpmpp-2m",
    guidance_scale: float = 1.0,
    generator: torch.Generator | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    sigmas_kind: str | None = None,
    clip_denoised: bool = True,
    precision: str = "fp32",
    noise_correlation: float = 0.0,
    factorized: bool = False,
    past_guidance: bool = False,
    **sampler_kwargs: Any,
) -> torch.Tensor:
    """Sample ``shape`` = (N, T, C, H, W) clips in [0, 1] from a video network.

    As ``genlab.diffusion.generate.generate`` for images: the sampler sees the network's VP adapter,
    guided between ``cond`` and ``uncond`` (or class labels and "no class", Ho & Salimans 2022), the
    estimate clamped to the data range. With ``first_frame`` (N, C, H, W) in [0, 1] the clips continue it
    (image-to-video): it is part of the conditional side only, so guidance pushes toward it as toward the
    prompt (with nothing else to guide by, toward the frame alone), and every estimate of frame 0 is the
    frame itself. ``noise_correlation`` > 0: the network was trained on mixed noise with that correlation
    between frames (``genlab.video.mixed_noise``); the sampler runs on decorrelated clips, and the callback
    sees clips.

    ``factorized`` (without a first frame): Emu Video's two stages (Girdhar et al. 2023, section 3.1): the
    first frame of a clip drawn from the condition alone, then the clips continued from it, both with
    ``steps`` steps; the callback sees the first stage as usual (i = -1 .. steps - 1) and the second's steps
    counted on from there (i = steps .. 2 steps - 1).
    """
    check_sampling_args(sampler, steps, guidance_scale)
    if len(shape) != 5:
        raise GenlabError(f"clips are (N, T, C, H, W), got a shape of {len(shape)} numbers")
    if past_frames(net):
        if noise_correlation:
            raise GenlabError(
                "an autoregressive video U-Net draws one frame at a time: set `noise_correlation` to 0"
            )
        return _frame_by_frame(
            net, schedule, parameterization, shape, class_labels=class_labels, cond=cond, uncond=uncond,
            first_frame=first_frame, steps=steps, sampler=sampler, guidance_scale=guidance_scale,
            generator=generator, callback=callback, sigmas_kind=sigmas_kind, clip_denoised=clip_denoised,
            precision=precision, past_guidance=past_guidance, **sampler_kwargs,
        )  # fmt: skip
    if factorized and first_frame is None:
        args = dict(
            class_labels=class_labels, cond=cond, uncond=uncond, steps=steps, sampler=sampler,
            guidance_scale=guidance_scale, generator=generator, sigmas_kind=sigmas_kind,
            clip_denoised=clip_denoised, precision=precision, noise_correlation=noise_correlation,
            **sampler_kwargs,
        )  # fmt: skip
        first = generate_clips(net, schedule, parameterization, shape, callback=callback, **args)[:, 0]
        later = None if callback is None else _offset_callback(callback, steps)
        return generate_clips(
            net, schedule, parameterization, shape, first_frame=first, callback=later, **args
        )
    device = next(net.parameters()).device
    n = shape[0]
    num_classes = getattr(getattr(net, "config", None), "num_classes", 0)
    check_class_labels(class_labels, num_classes)
    precision = resolve_precision(precision, device)
    wrapped = FrameConditioned(net, parameterization, schedule)
    cond, uncond, guidance_scale = conditions(
        num_classes, n, device, class_labels, cond, uncond, None, guidance_scale
    )
    known = None
    if first_frame is not None:
        if noise_correlation:
            raise GenlabError(
                "a run trained on mixed noise (`noise_correlation` > 0) cannot continue a first frame"
            )
        if tuple(first_frame.shape) != (n, *shape[2:]):
            raise GenlabError(
                f"the first frame must be (N, C, H, W) = {(n, *shape[2:])}, got {tuple(first_frame.shape)}"
            )
        frame = to_model_space(first_frame.to(device))
        cond = {
            **(cond or {}),
            "first_frame": frame,
            "frame_given": torch.ones(n, dtype=torch.bool, device=device),
        }
        unframed = {
            "first_frame": torch.zeros_like(frame),
            "frame_given": torch.zeros(n, dtype=torch.bool, device=device),
        }
        uncond = {**(uncond or {}), **unframed}
        known = torch.zeros(shape, device=device)
        known[:, 0] = frame
    denoiser = guided(
        VPDenoiser(wrapped, schedule, parameterization, precision), cond, uncond, guidance_scale
    )
    if known is not None:
        mask = torch.zeros((1, shape[1], 1, 1, 1), device=device)
        mask[:, 0] = 1.0
        denoiser = InpaintingDenoiser(denoiser, known, mask)
    if clip_denoised:
        if noise_correlation:
            denoiser = MixedNoiseDenoiser(denoiser, noise_correlation)
        else:
            denoiser = ClampedDenoiser(denoiser, -1.0, 1.0)
    if callback is not None and noise_correlation:
        callback = _correlated_callback(callback, noise_correlation)
    x = run_sampler(
        denoiser, schedule, shape, device, sampler, steps, generator, callback, precision, sigmas_kind,
        **sampler_kwargs,
    )  # fmt: skip
    clips = to_images(correlate(x, noise_correlation))
    if first_frame is not None:
        clips[:, 0] = first_frame.to(clips)
    return clips


def past_window(
    drawn: list[torch.Tensor], count: int, frame_shape: tuple[int, ...], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` frames before the next one of a clip drawn so far (``drawn``: its frames in order,
    each (N, C, H, W) in model space), the nearest last, as an autoregressive U-Net takes them: ``past``
    (N, count, C, H, W), zeros where the clip has no such frame, and ``past_given`` (N, count) bool."""
    past = torch.zeros((frame_shape[0], count, *frame_shape[1:]), device=device)
    given = torch.zeros((frame_shape[0], count), dtype=torch.bool, device=device)
    for i, frame in enumerate(drawn[-count:][::-1]):  # i = 0: the frame just before
        past[:, count - 1 - i], given[:, count - 1 - i] = frame, True
    return past, given


def _frame_by_frame(
    net: nn.Module,
    schedule: NoiseSchedule,
    parameterization: str,
    shape: tuple[int, int, int, int, int],
    *,
    class_labels: torch.Tensor | None,
    cond: dict[str, torch.Tensor] | None,
    uncond: dict[str, torch.Tensor] | None,
    first_frame: torch.Tensor | None,
    steps: int,
    sampler: str,
    guidance_scale: float,
    generator: torch.Generator | None,
    callback: Callable[[dict[str, Any]], None] | None,
    sigmas_kind: str | None,
    clip_denoised: bool,
    precision: str,
    past_guidance: bool,
    **sampler_kwargs: Any,
) -> torch.Tensor:
    """``generate_clips`` for an autoregressive U-Net (MCVD, Voleti et al. 2022, section 3): every frame
    drawn by a sampler of its own given the frames before it (the first from the condition alone, or
    ``first_frame``), which are part of both sides of guidance, as a super-resolution model's
    low-resolution image is: guidance pushes toward the prompt or class only; with ``past_guidance`` the
    unconditional side has no past either, so guidance also pushes toward a frame that continues the
    ones before it. The callback sees the clip so far (frames not yet begun are zeros) and the steps
    counted on from frame to frame."""
    device = next(net.parameters()).device
    n, frames = shape[:2]
    num_classes = getattr(getattr(net, "config", None), "num_classes", 0)
    check_class_labels(class_labels, num_classes)
    precision = resolve_precision(precision, device)
    cond, uncond, guidance_scale = conditions(
        num_classes, n, device, class_labels, cond, uncond, None, guidance_scale
    )
    if uncond is None and not past_guidance:
        guidance_scale = 1.0  # nothing to guide toward but the past frames
    drawn: list[torch.Tensor] = []
    if first_frame is not None:
        if tuple(first_frame.shape) != (n, *shape[2:]):
            raise GenlabError(
                f"the first frame must be (N, C, H, W) = {(n, *shape[2:])}, got {tuple(first_frame.shape)}"
            )
        drawn.append(to_model_space(first_frame.to(device)))
    count = past_frames(net)
    for k in range(len(drawn), frames):
        past, given = past_window(drawn, count, (n, *shape[2:]), device)
        extra = {"past": past, "past_given": given}
        blind = {"past": past, "past_given": torch.zeros_like(given)} if past_guidance else extra
        side = None if uncond is None and not past_guidance else {**(uncond or {}), **blind}
        denoiser = guided(
            VPDenoiser(net, schedule, parameterization, precision), {**(cond or {}), **extra}, side,
            guidance_scale,
        )  # fmt: skip
        if clip_denoised:
            denoiser = ClampedDenoiser(denoiser, -1.0, 1.0)
        report = None if callback is None else _clip_callback(callback, drawn, frames, k * steps)
        x = run_sampler(
            denoiser, schedule, (n, 1, *shape[2:]), device, sampler, steps, generator, report, precision,
            sigmas_kind, **sampler_kwargs,
        )  # fmt: skip
        drawn.append(x[:, 0].clamp(-1.0, 1.0))
    clips = to_images(torch.stack(drawn, dim=1))
    if first_frame is not None:
        clips[:, 0] = first_frame.to(clips)
    return clips


def _clip_callback(
    callback: Callable[[dict[str, Any]], None], drawn: list[torch.Tensor], frames: int, offset: int
) -> Callable[[dict[str, Any]], None]:
    """A sampler callback of one frame of an autoregressive clip that shows the callback the whole clip:
    the frames drawn before it, this frame's state, zeros after it; its steps counted from ``offset``."""
    done = list(drawn)

    def report(info: dict[str, Any]) -> None:
        if offset and info["i"] < 0:  # a later frame's start: its step number is the frame before's last
            return
        shown = {}
        for key in ("x", "denoised"):
            if info.get(key) is not None:
                now = info[key][:, 0]
                rest = [torch.zeros_like(now)] * (frames - len(done) - 1)
                shown[key] = torch.stack([*done, now, *rest], dim=1)
        callback({**info, **shown, "i": info["i"] + offset})

    return report


def _offset_callback(
    callback: Callable[[dict[str, Any]], None], steps: int
) -> Callable[[dict[str, Any]], None]:
    """A sampler callback that counts the steps of a second stage after the ``steps`` of the first."""

    def report(info: dict[str, Any]) -> None:
        if info["i"] >= 0:  # the second start is noise again, and its step number the first's last
            callback({**info, "i": info["i"] + steps})

    return report


def _correlated_callback(
    callback: Callable[[dict[str, Any]], None], rho: float
) -> Callable[[dict[str, Any]], None]:
    """A sampler callback that is shown clips where the sampler holds decorrelated ones (mixed noise)."""

    def report(info: dict[str, Any]) -> None:
        shown = {k: correlate(info[k], rho) for k in ("x", "denoised") if info.get(k) is not None}
        callback({**info, **shown})

    return report
