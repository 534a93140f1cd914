"""The runs a server was started with, loaded once and known by name: the client chooses among them
and never names a path."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genlab import rundir
from genlab.errors import GenlabError

GENERATORS = ("diffusion", "text-to-image", "gan")


@dataclass
class Entry:
    name: str
    run: Path
    kind: str  # diffusion | text-to-image | gan | classifier
    model: Any  # a pipeline, or the classifier network
    class_names: list[str] = field(default_factory=list)
    data: Any = None  # a classifier's validation images, for the attack playground

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "classes": self.class_names}
        if self.kind in GENERATORS:
            channels, side = self.model.image_shape
            out.update(channels=channels, image_size=side, steps=self.kind != "gan")
            if self.kind == "diffusion":
                out["upscaler"] = bool(self.model.upscale)
        else:
            cfg = self.model.config
            out.update(channels=cfg.in_channels, image_size=cfg.image_size, dataset_images=len(self.data))
        return out


def _load(run: Path, device: torch.device) -> Entry:
    config = rundir.read_config(run)
    kind = config.get("kind")
    names = list(config.get("class_names") or [])
    if kind == "classifier":
        from genlab.classification.evaluate import load_classifier_run

        model, val, names = load_classifier_run(run, device)
        return Entry(run.name, run, "classifier", model, names, val)
    if kind == "gan":
        from genlab.pipelines.gan import GANPipeline

        return Entry(run.name, run, "gan", GANPipeline.from_pretrained(run, device=device), names)
    if kind == "diffusion":
        from genlab.pipelines import DiffusionPipeline, TextToImagePipeline

        if config.get("diffusion", {}).get("cond") == "text":
            pipe = TextToImagePipeline.from_pretrained(run, device=device)
            return Entry(run.name, run, "text-to-image", pipe, [])
        pipe = DiffusionPipeline.from_pretrained(run, device=device)
        return Entry(run.name, run, "diffusion", pipe, names if pipe.num_classes else [])
    raise GenlabError(f"{run} is a {kind} run; the server shows diffusion, GAN and classifier runs")


class Registry:
    """Name -> loaded run. Names are the run directories' names, made unique with -2, -3..."""

    def __init__(self, runs: list[str | Path], device: str | torch.device = "cpu"):
        if not runs:
            raise GenlabError("give at least one run to serve")
        self.entries: dict[str, Entry] = {}
        for run in runs:
            entry = _load(Path(run), torch.device(device))
            name, k = entry.name, 2
            while name in self.entries:
                name, k = f"{entry.name}-{k}", k + 1
            entry.name = name
            self.entries[name] = entry

    def get(self, name: str, kinds: tuple[str, ...]) -> Entry:
        entry = self.entries.get(name)
        if entry is None or entry.kind not in kinds:
            known = [n for n, e in self.entries.items() if e.kind in kinds]
            raise LookupError(
                f"no model named {name!r} here; choose one of: {', '.join(known) or '(none of this kind)'}"
            )
        return entry
