"""``torch.compile`` for the training network, where it can work, and eager PyTorch where it cannot.

Inductor turns the network into fused kernels: on a GPU through Triton, on a CPU through C++ that it
builds with the machine's compiler. Compiling takes time once (about 1.5 minutes for the MNIST U-Net's
training step on 2 CPU cores) and a missing compiler or an unsupported operation only shows at the first
call, so the engine asks here first and falls back to eager, with one line saying why, when compiling
fails: a run never fails for want of a compiler.
"""

from __future__ import annotations

import os
import shutil

import torch
from torch import nn

CXX_CANDIDATES = ("g++", "c++", "clang++")


def cxx_compiler() -> str | None:
    """The C++ compiler inductor's CPU backend would build with ($CXX first), or None."""
    names = [os.environ["CXX"]] if os.environ.get("CXX") else []
    for name in [*names, *CXX_CANDIDATES]:
        path = shutil.which(name)
        if path:
            return path
    return None


def compile_problem(device: torch.device) -> str | None:
    """Why ``torch.compile`` cannot work for ``device`` here, in a few words, or None if it may."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    if device.type == "cpu" and cxx_compiler() is None:
        return "no C++ compiler found (inductor builds CPU kernels with g++ or clang++)"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed (inductor builds GPU kernels with it)"
    if device.type not in ("cpu", "cuda"):
        return f"inductor does not compile for {device.type}"
    return None


def want_compile(setting: bool | None, device: torch.device) -> bool:
    """TrainConfig.compile resolved: None (auto) compiles on CUDA only. On a 2-core CPU compiling the
    MNIST U-Net's step costs about 90 s for about 10% more images/s (bench/README.md), which a run of a
    few minutes never earns back."""
    return device.type == "cuda" if setting is None else setting


def compiled(net: nn.Module) -> nn.Module:
    """``net`` wrapped by ``torch.compile`` (compiles lazily at the first call)."""
    return torch.compile(net)
