"""Where a training step of the diffusion U-Net spends its time: ``torch.profiler`` over a few steps.

The step is the benchmark's (``diffusion.train_step``: forward, MSE, backward, AdamW) on our U-Net as
`genlab train diffusion` runs it, or in float32 with torch's default AdamW, the way it ran before the
speed work; operators are grouped by kind (convolutions, attention, normalisation, activations, the
optimizer, copies) so the table says what to optimise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from genlab.bench.diffusion import Contender, _inputs, ours, train_step
from genlab.nn.unet import UNetConfig

# operator name fragments -> the kind of work they are; the first match wins
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("convolutions", ("convolution", "conv2d", "mkldnn_conv")),
    ("attention", ("scaled_dot_product", "flash_attention", "bmm", "softmax", "baddbmm")),
    ("linear layers", ("addmm", "aten::mm", "aten::linear")),
    ("normalisation", ("group_norm", "layer_norm", "batch_norm")),
    ("activations", ("silu", "gelu", "relu")),
    ("optimizer", ("adam", "_foreach", "lerp", "Optimizer")),
    ("copies and casts", ("copy_", "_to_copy", "contiguous", "clone")),
)


@dataclass
class ProfileRow:
    kind: str
    ms_per_step: float
    share: float
    top_ops: list[str]


def _event_kind(event: Any) -> str:
    """The kind of a profiled operator: the optimizer's for everything inside ``Optimizer.step`` or
    ``zero_grad`` (torch's default AdamW runs plain sqrt and add operators there), else by its name."""
    parent = event
    while parent is not None:
        if parent.name.startswith("Optimizer."):
            return "optimizer"
        parent = parent.cpu_parent
    return _kind(event.name)


def _kind(name: str) -> str:
    for kind, fragments in KINDS:
        if any(f.lower() in name.lower() for f in fragments):
            return kind
    return "other"


def profile_train_step(
    config: UNetConfig,
    batch_size: int = 32,
    steps: int = 5,
    baseline: bool = False,
    threads: int = 0,
) -> dict[str, Any]:
    """Profile ``steps`` training steps of the U-Net ``config`` (after two untimed ones) and group the
    operators' self CPU time by kind. ``baseline``: float32 and torch's default AdamW."""
    from torch.profiler import ProfilerActivity, profile

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        contender = ours(config, "cpu")
        if baseline:
            contender = Contender("baseline", contender.model, contender.predict, contender.config)
        inputs = _inputs(batch_size, config, torch.device("cpu"), torch.Generator().manual_seed(0))
        step: Callable[[], None] = train_step(contender, inputs)
        step()
        step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        events = [e for e in prof.events() if e.self_cpu_time_total > 0]
    finally:
        torch.set_num_threads(previous)
    total_us = sum(e.self_cpu_time_total for e in events)
    by_kind: dict[str, dict[str, float]] = {}
    for e in events:
        ops = by_kind.setdefault(_event_kind(e), {})
        ops[e.name] = ops.get(e.name, 0.0) + e.self_cpu_time_total
    rows = []
    for kind, ops in by_kind.items():
        us = sum(ops.values())
        top = sorted(ops, key=lambda name: -ops[name])[:3]
        rows.append(ProfileRow(kind, us / steps / 1000, us / total_us, top).__dict__)
    rows.sort(key=lambda r: -r["ms_per_step"])
    return {
        "precision": "fp32" if baseline else contender.precision,
        "optimizer": "AdamW" if baseline else "AdamW (fused)",
        "batch_size": batch_size,
        "steps": steps,
        "threads": torch.get_num_threads() if not threads else threads,
        "ms_per_step": total_us / steps / 1000,
        "rows": rows,
    }


def format_profile(result: dict[str, Any]) -> str:
    lines = [
        f"training step of the U-Net, batch {result['batch_size']}, {result['precision']}, "
        f"{result['optimizer']}, {result['threads']} threads: {result['ms_per_step']:.0f} ms of CPU per step",
        f"{'kind':20}{'ms/step':>10}{'share':>8}  largest operators",
    ]
    for r in result["rows"]:
        ops = ", ".join(o.removeprefix("aten::") for o in r["top_ops"])
        lines.append(f"{r['kind']:20}{r['ms_per_step']:>10.1f}{r['share']:>8.1%}  {ops[:70]}")
    return "\n".join(lines)
