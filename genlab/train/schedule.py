"""Learning-rate schedule as a pure function of the step, so resuming needs nothing but the step."""

from __future__ import annotations

import math


def warmup_cosine_lr(
    step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float
) -> float:
    """Linear warm-up to ``base_lr`` over ``warmup_steps``, then cosine decay to ``base_lr * min_ratio``.

    The cosine half-period of SGDR (Loshchilov & Hutter, 2017, eq. 5) without restarts; the warm-up
    follows Goyal et al. (2017). ``step`` counts from 0, the step about to be taken.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    min_lr = base_lr * min_ratio
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))
