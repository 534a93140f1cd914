"""Mixed precision: bfloat16 autocast where the hardware runs it faster than float32, float32 elsewhere.

bfloat16 keeps float32's exponent range, so unlike float16 it needs no loss scaling (Kalamkar et al. 2019,
"A Study of BFLOAT16 for Deep Learning Training"). Under ``torch.autocast`` the matrix products
(convolutions, linear layers, attention) run in bfloat16 while reductions, normalisations and losses stay
in float32; the weights and the optimizer stay float32. It pays only where the hardware has bfloat16 dot
products: NVIDIA GPUs from Ampere on, and CPUs with AVX-512 BF16 or AMX. Elsewhere it is emulated and
slower, so "auto" picks float32 there.
"""

from __future__ import annotations

import contextlib

import torch

from genlab.errors import GenlabError

PRECISIONS = ("auto", "bf16", "fp32")


def bf16_is_fast(device: torch.device | str) -> bool:
    """Whether ``device`` has native bfloat16 matrix units (so autocast to bfloat16 is a speed-up)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)
    return False


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise GenlabError(f"unknown `precision` {name!r}; choose one of {', '.join(PRECISIONS)}")
    return name


def resolve_precision(name: str, device: torch.device | str) -> str:
    """ "bf16" or "fp32": ``name`` itself, or for "auto" bf16 exactly where ``bf16_is_fast``."""
    check_precision(name)
    if name == "auto":
        return "bf16" if bf16_is_fast(device) else "fp32"
    return name


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The context that runs a forward pass in ``precision`` (resolved: "bf16" or "fp32") on ``device``."""
    device = torch.device(device)
    if resolve_precision(precision, device) == "fp32" or device.type not in ("cpu", "cuda"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
