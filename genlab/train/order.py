"""Data order as a pure function of (seed, step): a resumed run draws exactly the batches it would have."""

from __future__ import annotations

import random

import numpy as np
import torch

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """Combine integers into one well-spread 63-bit seed (SplitMix64 finaliser applied after each value)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & _MASK64)) & _MASK64
        h = (h + 0x9E3779B97F4A7C15) & _MASK64
        h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _MASK64
        h ^= h >> 31
    return h >> 1


def seed_step(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """Seed torch, numpy and ``random`` from (seed, step, rank) and return a fresh generator from it.

    Re-seeding every step makes all randomness of a step (dropout, noise, augmentation) a function of the
    step number, so a resumed run reproduces the uninterrupted one without restoring any saved RNG state.
    """
    s = mix_seed(seed, step, rank)
    torch.manual_seed(s)
    np.random.seed(s % (1 << 32))
    random.seed(s)
    return torch.Generator().manual_seed(mix_seed(s, 1))


class BatchOrder:
    """Global batch ``step`` is positions [step*B, (step+1)*B) of the endless sequence of epoch permutations.

    Each epoch is a permutation drawn from a generator seeded by (seed, epoch); process ``rank`` of
    ``world`` takes every world-th example of the global batch, so a distributed run sees the same global
    batches as a single process.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        if num_examples < 1:
            raise ValueError("cannot draw batches from an empty data set")
        self.n, self.batch_size, self.seed = num_examples, batch_size, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(mix_seed(self.seed, epoch, 0xDA7A))
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def global_indices(self, step: int) -> torch.Tensor:
        start = step * self.batch_size
        out = []
        pos = start
        while pos < start + self.batch_size:
            epoch, offset = divmod(pos, self.n)
            take = min(self.n - offset, start + self.batch_size - pos)
            out.append(self._permutation(epoch)[offset : offset + take])
            pos += take
        return torch.cat(out)

    def indices(self, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        return self.global_indices(step)[rank::world]

    def epoch(self, step: int) -> float:
        return step * self.batch_size / self.n
