"""The training engine shared by every model kind: loop, EMA, schedule, run directories, DDP."""

from genlab.train.config import TrainConfig
from genlab.train.engine import Batch, Task, Trainer, TrainResult, resolve_train_config, train
from genlab.train.order import BatchOrder, mix_seed, seed_step

__all__ = [
    "Batch",
    "BatchOrder",
    "Task",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "mix_seed",
    "resolve_train_config",
    "seed_step",
    "train",
]
