"""Exponential moving average of a model's weights (Polyak averaging), the copy used for sampling."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow = decay * shadow + (1 - decay) * weights`` after every optimizer step.

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates (as in TensorFlow's
    ExponentialMovingAverage with num_updates), so early averages are not dominated by the random init.
    Buffers (BatchNorm statistics) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, num_updates: int) -> None:
        d = min(self.decay, (1 + num_updates) / (10 + num_updates))
        shadow, params = list(self.model.parameters()), [p.detach() for p in model.parameters()]
        if len(shadow) != len(params):
            raise ValueError("the EMA copy and the model have different parameters")
        torch._foreach_lerp_(shadow, params, 1.0 - d)  # one kernel launch per group, not per tensor
        for s, b in zip(self.model.buffers(), model.buffers(), strict=True):
            s.copy_(b)
