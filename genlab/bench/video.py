"""What a clip costs: the text-to-video U-Net of `genlab train video` against the image U-Net of the same
width (the 2-D U-Net inside it, which makes the clip's frames as independent images), per clip of T frames.

For each: parameters, FLOPs of one denoiser evaluation (``flops.count_flops``), seconds of one sampling
step (a guided batch, no gradients) and of one training step (forward, backward) per clip, timed
interleaved in this process (``timing.time_interleaved``), and the activation memory of a training step:
the bytes of the tensors autograd keeps for the backward pass (``saved_bytes``; the weights, the
optimizer and the allocator's slack not counted, so the number is exact and the same on every machine).
The difference between the two is the temporal attention: what the video network pays to make the
frames agree. The autoregressive U-Net (``past_frames``) is timed on every frame of a clip given the
frames before it: its temporal layers are the past frames' input planes.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from typing import Any

import torch

from genlab.bench.diffusion import default_threads
from genlab.bench.flops import count_flops
from genlab.bench.timing import time_interleaved
from genlab.nn.precision import autocast, resolve_precision
from genlab.nn.unet import UNet
from genlab.nn.video_unet import VideoUNet, VideoUNetConfig


@dataclass
class VideoBenchSettings:
    frames: int = 8
    clips: int = 16  # the training batch of `genlab train video`
    repeats: int = 5
    warmup: int = 1
    threads: int = 0  # 0: all cores
    precision: str = "auto"  # of both networks' passes (genlab.nn.precision)
    context_tokens: int = 12  # prompt tokens the cross-attention reads (a moving-shapes caption's)
    seed: int = 0


def run_video_bench(
    config: VideoUNetConfig, settings: VideoBenchSettings = VideoBenchSettings()
) -> dict[str, Any]:
    """Time and memory per clip of the video U-Net ``config`` and of its image U-Net on the same frames."""
    threads = settings.threads or default_threads()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(config, settings, threads)
    finally:
        torch.set_num_threads(previous)


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd saves for the backward pass while ``fn()`` runs its forward
    pass (``torch.autograd.graph.saved_tensors_hooks``): a training step's activation memory."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def _run(config: VideoUNetConfig, s: VideoBenchSettings, threads: int) -> dict[str, Any]:
    torch.manual_seed(s.seed)
    video = VideoUNet(config)
    image = UNet(config.unet)
    if not config.past_frames:  # the autoregressive U-Net's first layer reads more channels
        image.load_state_dict(video.unet.state_dict())
    cfg = config.unet
    n, t = s.clips, s.frames
    g = torch.Generator().manual_seed(s.seed)
    clips = torch.randn(n, t, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    steps = torch.randint(0, 1000, (n,), generator=g).float()
    width = cfg.context_dim
    context = torch.randn(n, s.context_tokens, width, generator=g) if width else None
    precision = resolve_precision(s.precision, torch.device("cpu"))

    def image_call(x: torch.Tensor) -> torch.Tensor:  # the frames as n * t images, each with its prompt
        ctx = None if context is None else context.repeat_interleave(t, 0)
        return image(x.flatten(0, 1), steps.repeat_interleave(t), context=ctx).unflatten(0, (n, t))

    def video_call(x: torch.Tensor) -> torch.Tensor:
        if not config.past_frames:
            return video(x, steps, context=context)
        # Frame by frame: every frame of every clip once, given the frames before it (an evaluation of the
        # whole clip is t of the sampler's calls; training scores one frame of each of t times the clips).
        ctx = None if context is None else context.repeat_interleave(t, 0)
        p = config.past_frames
        past = torch.stack([x.roll(p - i, dims=1) for i in range(p)], dim=2).flatten(0, 1)
        given = torch.ones(n * t, p, dtype=torch.bool)
        out = video(
            x.flatten(0, 1)[:, None], steps.repeat_interleave(t), context=ctx, past=past, past_given=given
        )
        return out[:, 0].unflatten(0, (n, t))

    def sampling(call):
        def run() -> None:
            with torch.no_grad(), autocast("cpu", precision):
                call(torch.cat([clips[: n // 2], clips[: n // 2]]))  # a guided batch: prompt and empty

        return run

    def training(call, net):
        def run() -> None:
            with autocast("cpu", precision):
                loss = call(clips).float().square().mean()
            loss.backward()
            net.zero_grad(set_to_none=True)

        return run

    candidates = {"image": (image_call, image), "video": (video_call, video)}
    sample_t = time_interleaved({k: sampling(c) for k, (c, _) in candidates.items()}, s.repeats, s.warmup)
    train_t = time_interleaved({k: training(c, m) for k, (c, m) in candidates.items()}, s.repeats, s.warmup)
    rows = {}
    for name, (call, net) in candidates.items():
        with torch.no_grad():
            flops = count_flops(lambda call=call: call(clips))
        with autocast("cpu", precision):
            memory = saved_bytes(lambda call=call: call(clips).float().square().mean())
        rows[name] = {
            "parameters": sum(p.numel() for p in net.parameters()),
            "gflops_per_clip": flops / n / 1e9,
            "sampling_step_s_per_clip": sample_t[name].median / n,
            "training_step_s_per_clip": train_t[name].median / n,
            "activation_mb_per_clip": memory / n / 2**20,
            "samples": {"sampling": sample_t[name].samples, "training": train_t[name].samples},
        }
    ratios = {
        key: rows["video"][key] / rows["image"][key]
        for key in (
            "parameters",
            "gflops_per_clip",
            "sampling_step_s_per_clip",
            "training_step_s_per_clip",
            "activation_mb_per_clip",
        )
    }
    return {
        "benchmark": "video-vs-image-unet",
        "settings": asdict(s) | {"threads": threads, "precision": precision},
        "network": asdict(config),
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "results": rows,
        "ratio_video_over_image": ratios,
    }


def format_video_table(result: dict[str, Any]) -> str:
    rows = result["results"]
    s = result["settings"]
    lines = [
        f"per clip of {s['frames']} frames ({s['clips']} clips a batch, {s['threads']} threads, "
        f"{s['precision']})",
        f"{'':28}{'image U-Net':>14}{'video U-Net':>14}{'video/image':>13}",
    ]
    labels = {
        "parameters": "parameters",
        "gflops_per_clip": "GFLOPs (one evaluation)",
        "sampling_step_s_per_clip": "sampling step (s)",
        "training_step_s_per_clip": "training step (s)",
        "activation_mb_per_clip": "training activations (MB)",
    }
    for key, label in labels.items():
        a, b = rows["image"][key], rows["video"][key]
        ratio = result["ratio_video_over_image"].get(key)
        fmt = (lambda v: f"{v:,.0f}") if key == "parameters" else (lambda v: f"{v:.4g}")
        cells = [fmt(v) if v is not None else "n/a" for v in (a, b)]
        lines.append(f"{label:28}{cells[0]:>14}{cells[1]:>14}{'' if ratio is None else f'{ratio:.2f}':>13}")
    return "\n".join(lines)
