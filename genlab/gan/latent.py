"""Walking the latent space of a generator: interpolation and vector arithmetic (Radford et al. 2016,
sections 6.1 and 6.3), and the exemplars whose latents the arithmetic adds and subtracts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from genlab import rundir
from genlab.checks import check_range
from genlab.classification.evaluate import predict
from genlab.data import DataConfig
from genlab.errors import GenlabError
from genlab.evaluation.features import classifier_extractor, resolve_extractor
from genlab.gan.models import GAN
from genlab.nn.pretrained import config_from_dict

BY = ("class", "index")  # how arithmetic chooses its exemplars
NEARBY = 4  # neighbours of A - B + C drawn beside it (DCGAN's figure 7: the result plus noise)
NEARBY_STD = 0.25


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


@torch.no_grad()
def _images(gan: GAN, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Images in [0, 1], on the CPU, for latents ``z`` (and the labels of a conditional GAN)."""
    y = labels.to(gan.device) if labels is not None else None
    return gan.generate(z.to(gan.device), y).cpu()


def interpolation_grid(gan: GAN, rows: int, steps: int, mode: str = "slerp", seed: int = 0) -> torch.Tensor:
    """``rows`` walks of ``steps`` images between pairs of random latents, row after row: (rows * steps,
    C, H, W). Smooth rows mean the generator learned a space, not a lookup table (Radford et al. 2016,
    section 6.1). A conditional GAN keeps each row's class (row i: class i mod K)."""
    check_range("rows", rows, 1)
    g = torch.Generator().manual_seed(seed)
    a, b = gan.latents(rows, g).cpu(), gan.latents(rows, g).cpu()
    z = interpolate(a, b, steps, mode).transpose(0, 1).reshape(rows * steps, -1)  # row-major strips
    k = gan.config.num_classes
    labels = (torch.arange(rows) % k).repeat_interleave(steps) if k else None
    return _images(gan, z, labels)


@dataclass
class Exemplars:
    """The pool latents chosen for one term of the arithmetic (A, B or C)."""

    latents: torch.Tensor  # (n, z_dim)
    label: torch.Tensor | None  # the class a conditional GAN draws them with
    caption: str


def exemplars_by_index(
    z: torch.Tensor, text: str, name: str, labels: torch.Tensor | None = None
) -> Exemplars:
    """The latents of the pool ``z`` at the indices ``text`` ("3,17,42"), the term ``name`` ("a", "b"
    or "c"); a conditional GAN draws them with the class ``labels`` gives the first index."""
    try:
        idx = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise GenlabError(f"`by` index takes latent indices like 3,17 (got `{name}` {text})") from None
    if not idx or min(idx) < 0 or max(idx) >= len(z):
        raise GenlabError(f"`{name}` indices must lie in 0..{len(z) - 1} (got {text})")
    return Exemplars(z[idx], labels[idx[0]] if labels is not None else None, f"{name.upper()}: #{text}")


def exemplars_by_class(
    z: torch.Tensor, probs: torch.Tensor, class_names: list[str], text: str, name: str, exemplars: int
) -> Exemplars:
    """The ``exemplars`` latents of the pool ``z`` whose samples a classifier (class probabilities
    ``probs``, (pool, K)) is surest are of class ``text``, the term ``name`` ("a", "b" or "c"). Radford et
    al. average three exemplars per concept, since single samples were unstable (section 6.3)."""
    if text not in class_names:
        raise GenlabError(
            f"unknown class '{text}' for `{name}`; the classifier knows {', '.join(class_names)}"
        )
    cls = class_names.index(text)
    top = probs[:, cls].topk(exemplars).indices
    if probs[top].argmax(1).ne(cls).all():
        raise GenlabError(f"none of the {len(z)} samples looks like a {text}; raise `pool`")
    return Exemplars(z[top], None, f"{name.upper()}: {text}")


@dataclass
class ArithmeticFigure:
    """The images of ``latent_arithmetic`` and their captions, in order: the means of A, B and C, A - B +
    C, and its neighbours."""

    images: torch.Tensor  # (3 + 1 + NEARBY, C, H, W) in [0, 1]
    captions: list[str]


def latent_arithmetic(
    gan: GAN,
    a: str,
    b: str,
    c: str,
    *,
    by: str | None = None,
    exemplars: int = 3,
    pool: int = 2000,
    seed: int = 0,
    classifier: Callable[[], nn.Module] | None = None,
) -> ArithmeticFigure:
    """Vector arithmetic on latents, A - B + C (Radford et al. 2016, section 6.3), from a pool of ``pool``
    latents drawn with ``seed``.

    Each of A, B, C is the mean latent of its exemplars, chosen ``by`` class (the ``exemplars`` samples
    ``classifier()`` is surest are of the class named; the default for an unconditional GAN) or by index
    into the pool ("3,17"; the default, and the only way, for a conditional GAN, which draws index i with
    class i mod K and the result with C's class). ``classifier`` is called only when choosing by class,
    since finding one may train it (``run_classifier``). Draws the three means, the result and
    ``NEARBY`` neighbours of it; ``gan`` should be in eval mode, as a GANPipeline holds it."""
    g = torch.Generator().manual_seed(seed)
    if pool < 1 or exemplars < 1:
        raise GenlabError("`pool` and `exemplars` must be at least 1")
    if exemplars > pool:
        raise GenlabError(f"`exemplars` ({exemplars}) are chosen from the `pool` ({pool}): raise `pool`")
    z = gan.latents(pool, g).cpu()
    k = gan.config.num_classes
    by = by or ("index" if k else "class")
    if by not in BY:
        raise GenlabError(f"unknown `by` '{by}'; choose one of {', '.join(BY)}")
    terms = {"a": a, "b": b, "c": c}
    if by == "index":
        labels = torch.arange(pool) % k if k else None
        chosen = [exemplars_by_index(z, text, name, labels) for name, text in terms.items()]
    else:
        if k:
            raise GenlabError("a conditional GAN's class is an input, not a region of z: use `by` index")
        if classifier is None:
            raise GenlabError("choosing exemplars by class needs a `classifier`")
        judge = classifier()
        probs = predict(judge, _images(gan, z))
        names = list(judge.config.class_names) or [str(i) for i in range(judge.config.num_classes)]
        chosen = [exemplars_by_class(z, probs, names, text, name, exemplars) for name, text in terms.items()]
    result = arithmetic(*(e.latents for e in chosen))
    means = torch.stack([e.latents.mean(0) for e in chosen])
    near = result + NEARBY_STD * torch.randn(NEARBY, result.numel(), generator=g)
    latents = torch.cat([means, result[None], near])
    labels = torch.stack([e.label for e in chosen] + [chosen[2].label] * (1 + NEARBY)) if k else None
    captions = [e.caption for e in chosen] + ["A - B + C"] + [f"nearby {i + 1}" for i in range(NEARBY)]
    return ArithmeticFigure(_images(gan, latents, labels), captions)


def run_classifier(run: str | Path, classifier: str | Path | None = None, log=print) -> nn.Module:
    """The classifier that names the classes of a GAN run's samples: the network of the classifier run
    ``classifier``, or by default the run's data's own (trained once and cached,
    genlab.evaluation.features)."""
    if classifier:
        return classifier_extractor(classifier).classifier
    data = config_from_dict(DataConfig, rundir.read_config(run).get("data", {}), f"{run}/config.json")
    return resolve_extractor("auto", data, log=log).classifier
