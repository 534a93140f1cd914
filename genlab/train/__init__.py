"""The training engine shared by every model kind: loop, EMA, schedule, run directories, DDP.

Names are imported on first use (PEP 562) so that `genlab --help` does not wait for torch to load.
"""

from __future__ import annotations

import importlib
from typing import Any

from genlab.train.config import TrainConfig

_LAZY = {
    "Batch": "genlab.train.engine",
    "Task": "genlab.train.engine",
    "Trainer": "genlab.train.engine",
    "TrainResult": "genlab.train.engine",
    "resolve_train_config": "genlab.train.engine",
    "train": "genlab.train.engine",
    "BatchOrder": "genlab.train.order",
    "mix_seed": "genlab.train.order",
    "seed_step": "genlab.train.order",
}

__all__ = ["TrainConfig", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'genlab.train' has no attribute {name!r}")
