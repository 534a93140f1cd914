"""Our Stable Diffusion U-Net against diffusers' ``UNet2DConditionModel`` at the real SD 1.5 architecture.

Both networks are built from SD 1.5's published ``unet/config.json`` with random weights (the timing does
not depend on the values), ours first and the peer given the same weights, so the benchmark also checks
that the two compute the same prediction at full size. One denoising step is what a guided sampler asks
of the U-Net: a batch of two latents (the prompt and the empty or negative prompt) with the text
encoder's (2, 77, 768) states. The calls are timed interleaved (``timing.time_interleaved``) in one
process, at each size and precision; the peak memory of a step is the growth of the process's peak
resident set while it runs (Linux's VmHWM, reset before each measurement), so the weights themselves are
not counted.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from genlab.bench.diffusion import default_threads, load_diffusers
from genlab.bench.flops import forward_flops_per_image
from genlab.bench.timing import time_interleaved
from genlab.nn.precision import autocast
from genlab.nn.sd_unet import SDUNet, SDUNetConfig

PEER = "diffusers"

# runwayml/stable-diffusion-v1-5, unet/config.json (as diffusers 0.6 wrote it)
SD15_UNET = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}


@dataclass
class SDBenchSettings:
    sizes: tuple[int, ...] = (512, 256)  # image sides; the latents are 8 times smaller
    precisions: tuple[str, ...] = ("fp32", "bf16")
    batch: int = 2  # a guided step: prompt and unconditional
    repeats: int = 3
    warmup: int = 1
    threads: int = 0  # 0: all cores
    seed: int = 0
    peer: bool = True
    unet: dict[str, Any] = field(default_factory=lambda: dict(SD15_UNET))  # the architecture timed


def peak_growth(fn) -> int | None:
    """Bytes by which the process's peak resident set grows while ``fn()`` runs (None off Linux): the
    peak is reset first (writing 5 to /proc/self/clear_refs), so it measures this call alone."""
    status = Path("/proc/self/status")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kb(status, "VmRSS")
    except OSError:
        fn()
        return None
    fn()
    return (_status_kb(status, "VmHWM") - before) * 1024


def _status_kb(path: Path, key: str) -> int:
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"{key} not in {path}")


def run_sd_bench(settings: SDBenchSettings = SDBenchSettings()) -> dict[str, Any]:
    """Seconds per U-Net step and peak memory of ours and (where installed) diffusers', per image size
    and precision, with the ratio ours / theirs (below 1: ours is faster) and the largest difference
    between the two predictions."""
    threads = settings.threads or default_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(settings.seed)
    config = SDUNetConfig.from_diffusers(settings.unet, "the benchmark's unet/config.json")
    ours = SDUNet(config).eval().requires_grad_(False)
    diffusers, note = load_diffusers() if settings.peer else (None, "the peer was not asked for")
    theirs = None
    if diffusers is not None:
        theirs = diffusers.UNet2DConditionModel.from_config(settings.unet).eval().requires_grad_(False)
        theirs.load_state_dict(ours.state_dict())
    results = []
    for side in settings.sizes:
        gen = torch.Generator().manual_seed(settings.seed)
        latent = torch.randn(settings.batch, config.in_channels, side // 8, side // 8, generator=gen)
        text = torch.randn(settings.batch, 77, config.cross_attention_dim[0], generator=gen)
        t = torch.tensor([500.0] * settings.batch)
        flops = forward_flops_per_image(ours, latent, t, text) * settings.batch
        for precision in settings.precisions:
            calls = {"genlab": _step(ours, latent, t, text, precision)}
            if theirs is not None:
                calls[PEER] = _step(theirs, latent, t, text, precision, peer=True)
            row: dict[str, Any] = {"side": side, "precision": precision, "gflop_per_step": flops / 1e9}
            outputs = {name: call() for name, call in calls.items()}
            if PEER in outputs:
                row["max_abs_difference"] = (outputs["genlab"] - outputs[PEER]).abs().max().item()
            row["peak_mb"] = {name: _mb(peak_growth(call)) for name, call in calls.items()}
            timings = time_interleaved(calls, settings.repeats, settings.warmup)
            row["seconds_per_step"] = {name: t.median for name, t in timings.items()}
            row["samples"] = {name: t.samples for name, t in timings.items()}
            if PEER in timings:
                row["ratio_ours_over_diffusers"] = timings["genlab"].median / timings[PEER].median
            results.append(row)
    return {
        "benchmark": "sd-unet-step",
        "settings": asdict(settings)
        | {"threads": threads, "unet": "SD 1.5" if settings.unet == SD15_UNET else settings.unet},
        "parameters": sum(p.numel() for p in ours.parameters()),
        "note": note,
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "diffusers": getattr(diffusers, "__version__", None),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "results": results,
    }


def _step(net, latent, t, text, precision: str, peer: bool = False):
    """One guided step's U-Net call under ``precision`` ("fp32", or "bf16" autocast)."""

    def call() -> torch.Tensor:
        with torch.no_grad(), autocast("cpu", precision):
            out = net(latent, t, encoder_hidden_states=text)
            return (out.sample if peer else out).float()

    return call


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def format_sd_table(result: dict[str, Any]) -> str:
    """One line per size and precision: seconds per step and peak MB of each, and the ratio."""
    lines = [
        f"SD 1.5 U-Net ({result['parameters'] / 1e6:.0f}M parameters), batch {result['settings']['batch']}"
    ]
    for row in result["results"]:
        secs, peak = row["seconds_per_step"], row["peak_mb"]
        text = f"{row['side']}x{row['side']} {row['precision']}: genlab {secs['genlab']:.2f} s/step"
        text += f" (peak +{peak['genlab']} MB)"
        if PEER in secs:
            text += f", diffusers {secs[PEER]:.2f} s/step (peak +{peak[PEER]} MB)"
            text += (
                f", ratio {row['ratio_ours_over_diffusers']:.2f}, max |diff| {row['max_abs_difference']:.1e}"
            )
        lines.append(text)
    if result.get("note"):
        lines.append(result["note"])
    return "\n".join(lines)
