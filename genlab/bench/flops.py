"""FLOPs of a computation, counted by ``torch.utils.flop_counter.FlopCounterMode``.

The counter adds up the matrix products: linear layers, convolutions and attention, 2 FLOPs per
multiply-add, biases, normalisations and activations left out (they are a few percent of a U-Net's work).
PyTorch knows no formula for the CPU attention kernel, so one is supplied here: the same two batched
products (Q K^T and P V) that it counts for the GPU kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

aten = torch.ops.aten


def _sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    """Q K^T then P V: 2 b h s_q s_k d_q + 2 b h s_q s_k d_v."""
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * (d_q + d_v)


def _sdpa_backward_flops(
    grad_out_shape: Any, query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any
) -> int:
    """Recomputed scores, then dP = dO V^T, dV = P^T dO, dQ = dS K, dK = dS^T Q: five products."""
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * (3 * d_q + 2 * d_v)


def _extra_formulas() -> dict[Any, Callable[..., int]]:
    mapping: dict[Any, Callable[..., int]] = {}
    for name, formula in [
        ("_scaled_dot_product_flash_attention_for_cpu", _sdpa_flops),
        ("_scaled_dot_product_flash_attention_for_cpu_backward", _sdpa_backward_flops),
    ]:
        if hasattr(aten, name):  # absent from older torch builds
            mapping[getattr(aten, name)] = formula
    return mapping


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of the matrix products that ``fn()`` runs (it runs once, for real)."""
    counter = FlopCounterMode(display=False, custom_mapping=_extra_formulas())
    with counter:
        fn()
    return int(counter.get_total_flops())


def forward_flops_per_image(model: Callable[..., object], *inputs: torch.Tensor) -> float:
    """FLOPs of one forward pass per image: the count for the batch ``inputs`` divided by its size."""
    with torch.no_grad():
        total = count_flops(lambda: model(*inputs))
    return total / inputs[0].shape[0]
