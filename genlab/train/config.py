"""The settings every training run shares, whatever it trains."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    steps: int | None = None  # optimizer steps; also the horizon of the cosine schedule
    minutes: float | None = None  # wall-clock budget; alone, it sets the horizon from the measured speed
    batch_size: int = 128  # global: split evenly over the processes of a distributed run
    lr: float = 1e-3
    min_lr_ratio: float = 0.05  # the cosine ends at lr * min_lr_ratio
    warmup_steps: int = 100  # capped at a tenth of the run, so short runs are not all warm-up
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 1.0  # max global L2 norm of the gradients; 0 disables clipping
    ema_decay: float = 0.999  # 0 disables the EMA copy
    seed: int = 0
    log_every: int = 50
    eval_every: int = 500  # 0: only at the end
    sample_every: int = 500  # 0: only at the end
    checkpoint_every: int = 500  # 0: only at the end (and on Ctrl-C)
    device: str = "auto"
    precision: str = "auto"  # auto | bf16 | fp32: bf16 autocast where the hardware is faster at it
    compile: bool | None = None  # torch.compile the training network; None: on CUDA only
    progress: bool = True

    def __post_init__(self) -> None:
        from genlab.checks import MAX_BATCH, check_fraction, check_range
        from genlab.errors import GenlabError

        if self.steps is not None and self.steps < 1:
            raise GenlabError(f"`steps` must be at least 1 (got {self.steps})")
        if self.minutes is not None and self.minutes <= 0:
            raise GenlabError(f"`minutes` must be positive (got {self.minutes})")
        if self.batch_size < 1:
            raise GenlabError(f"`batch_size` must be at least 1 (got {self.batch_size})")
        if self.lr <= 0:
            raise GenlabError(f"`lr` must be positive (got {self.lr})")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise GenlabError(f"`precision` must be auto, bf16 or fp32 (got {self.precision!r})")
        if not 0 <= self.ema_decay < 1:
            raise GenlabError(f"`ema_decay` must be in [0, 1) (got {self.ema_decay})")
        if self.minutes is not None:
            check_range("minutes", self.minutes, 0)
        check_range("batch_size", self.batch_size, 1, MAX_BATCH)
        check_fraction("min_lr_ratio", self.min_lr_ratio, closed=True)
        check_fraction("beta1", self.beta1)
        check_fraction("beta2", self.beta2)
        for name in ("lr", "warmup_steps", "weight_decay", "grad_clip"):
            check_range(name, getattr(self, name), 0)
        check_range("log_every", self.log_every, 1)
        for name in ("eval_every", "sample_every", "checkpoint_every"):
            check_range(name, getattr(self, name), 0)
