"""Walking the latent space of a generator: interpolation and vector arithmetic (Radford et al. 2016,
sections 6.1 and 6.3)."""

from __future__ import annotations

import torch

from genlab.errors import GenlabError


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents (White 2016, "Sampling generative networks"): unlike the
    straight line, it keeps the norm a Gaussian latent typically has, so midpoints look like samples.

    ``a`` and ``b`` are (..., D); ``t`` is (T,); returns (T, ..., D). Falls back to the line when a and b
    are (nearly) parallel."""
    t = t.reshape(-1, *([1] * a.dim()))
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1.0, 1.0))
    so = torch.sin(omega)
    line = (1 - t) * a + t * b
    arc = torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b
    return torch.where(so.abs() < 1e-6, line, arc)


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int, mode: str = "slerp") -> torch.Tensor:
    """``steps`` latents from ``a`` to ``b`` (both ends included): (steps, ..., D)."""
    if steps < 2:
        raise GenlabError(f"an interpolation needs at least 2 steps (got {steps})")
    t = torch.linspace(0.0, 1.0, steps)
    if mode == "slerp":
        return slerp(a, b, t)
    if mode == "lerp":
        t = t.reshape(-1, *([1] * a.dim()))
        return (1 - t) * a + t * b
    raise GenlabError(f"unknown interpolation '{mode}'; choose slerp or lerp")


def arithmetic(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """A - B + C on latents, each the mean of its exemplars' latents (rows): Radford et al. average three
    exemplars per concept, since single samples were unstable (section 6.3)."""
    for name, x in (("A", a), ("B", b), ("C", c)):
        if x.dim() != 2 or len(x) == 0:
            raise GenlabError(f"{name} must be a non-empty (exemplars, z_dim) tensor")
    return a.mean(0) - b.mean(0) + c.mean(0)
