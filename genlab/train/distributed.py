"""torch.distributed without a framework: the same script runs alone or under ``torchrun``.

``torchrun --nproc_per_node=N`` sets RANK, WORLD_SIZE and LOCAL_RANK; we start a process group (gloo on
CPU, NCCL on GPU) when WORLD_SIZE > 1 and otherwise do nothing, as nanoGPT's train.py does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from genlab.errors import GenlabError


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenlabError(f"`device` {name} asked for, but this torch sees no CUDA GPU; use `device` cpu")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GenlabError(f"unknown `device` '{name}'; use auto, cpu, cuda or cuda:N") from None


def setup(device: str = "auto", local: bool = False) -> DistInfo:
    """Join the process group when launched by torchrun; pick this process's device. ``local``: this
    process alone, whatever torchrun says (a model trained inside one process of a distributed run,
    such as the feature extractor an evaluation needs)."""
    world = 1 if local else int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0 if local else int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def any_true(flag: bool, info: DistInfo) -> bool:
    """True on every process when ``flag`` is true on any (so all stop at the same step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_int(value: int, info: DistInfo) -> int:
    """Rank 0's ``value`` on every process."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.long, device=info.device)
    dist.broadcast(t, src=0)
    return int(t.item())


def average_gradients(params: list[torch.Tensor], info: DistInfo) -> None:
    """Average ``params``' gradients over the processes, as DDP does after backward; for steps DDP cannot
    wrap (a GAN's alternating players, double backward through a gradient penalty)."""
    if not info.enabled:
        return
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(info.world_size)
