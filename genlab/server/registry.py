"""The runs a server was started with, loaded once and known by name: the client chooses among them
and never names a path."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genlab import rundir
from genlab.errors import GenlabError, param
from genlab.pipelines.auto import PIPELINE_KINDS, load_pipeline, pipeline_kind

GENERATORS = PIPELINE_KINDS  # the kinds that make images or clips; classifiers are the other kind served
FOLDER_PREFIX = "folder:"


@dataclass
class Entry:
    name: str
    run: Path
    kind: str  # diffusion | text-to-image | gan | video | classifier
    model: Any  # a pipeline, or the classifier network
    class_names: list[str] = field(default_factory=list)
    data: Any = None  # a classifier's held-out images, for the attack playground (None: none served)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "classes": self.class_names}
        if self.kind == "video":
            pipe = self.model
            channels, side, _ = pipe.frame_shape
            conditioning = "text" if pipe.text else "class" if pipe.num_classes else "none"
            out.update(channels=channels, image_size=side, steps=True, conditioning=conditioning)
            out.update(frames=pipe.video.sample_frames, max_frames=pipe.max_frames)
        elif self.kind in GENERATORS:
            channels, side = self.model.image_shape
            out.update(channels=channels, image_size=side, steps=self.kind != "gan")
            if self.kind == "diffusion":
                out["upscaler"] = bool(self.model.upscale)
        else:
            cfg = self.model.config
            images = len(self.data) if self.data is not None else 0
            out.update(channels=cfg.in_channels, image_size=cfg.image_size, dataset_images=images)
        return out


def data_folder(spec: str) -> Path | None:
    """The folder a ``folder:PATH`` data spec names, resolved as the loader resolves it (relative to the
    working directory, symbolic links followed); None for a built-in dataset."""
    text = spec.strip()
    if not text.lower().startswith(FOLDER_PREFIX):
        return None
    return Path(text[len(FOLDER_PREFIX) :]).expanduser().resolve()


def may_show(spec: str, run: Path, data_roots: Iterable[str | Path] = ()) -> bool:
    """Whether the server may publish the held-out images of a run trained on ``spec``.

    A run's config.json is written by whoever made the run; served as is, ``folder:/home/you/photos`` in
    it would publish that folder to every client. So only built-in datasets (public anyway) and folders
    inside the run directory, or inside a folder the operator names (``genlab serve --data-root``), are
    shown."""
    folder = data_folder(spec)
    if folder is None:
        return True
    for root in (run, *data_roots):
        top = Path(root).expanduser().resolve()
        if folder == top or top in folder.parents:
            return True
    return False


def _load(run: Path, device: torch.device, data_roots: tuple[Path, ...], notes: list[str]) -> Entry:
    from genlab.diffusion.stable_diffusion import is_checkpoint

    if is_checkpoint(run):  # a Stable Diffusion folder the operator brought
        return Entry(run.name, run, "text-to-image", load_pipeline(run, device=device))
    config = rundir.read_config(run)
    kind = config.get("kind")
    names = list(config.get("class_names") or [])
    if kind == "classifier":
        spec = str((config.get("data") or {}).get("name", ""))
        if may_show(spec, run, data_roots):
            from genlab.classification.evaluate import load_classifier_run

            model, val, names = load_classifier_run(run, device)
            return Entry(run.name, run, "classifier", model, names, val)
        from genlab.nn import Classifier

        model = Classifier.from_pretrained(run, device=device)
        names = list(model.config.class_names) or [str(i) for i in range(model.config.num_classes)]
        notes.append(
            f"{run.name}: its held-out images are not served (its data, {spec}, lies outside the run "
            f"directory; {param('data_roots')} FOLDER serves data inside FOLDER); uploads still work"
        )
        return Entry(run.name, run, "classifier", model, names, None)
    if kind in ("gan", "diffusion", "video"):
        pipe = load_pipeline(run, device=device)
        served = pipeline_kind(config, run)
        offers = served != "text-to-image" and pipe.num_classes  # unconditional models offer no classes
        return Entry(run.name, run, served, pipe, names if offers else [])
    raise GenlabError(f"{run} is a {kind} run; the server shows diffusion, video, GAN and classifier runs")


class Registry:
    """Name -> loaded run. Names are the run directories' names, made unique with -2, -3...

    ``data_roots``: folders whose images a classifier's held-out split may show besides built-in datasets
    and folders inside the run directory (see may_show). ``notes`` says what was left out and why."""

    def __init__(
        self,
        runs: list[str | Path],
        device: str | torch.device = "cpu",
        data_roots: Iterable[str | Path] = (),
    ):
        if not runs:
            raise GenlabError("give at least one run to serve")
        self.entries: dict[str, Entry] = {}
        self.notes: list[str] = []
        roots = tuple(Path(r) for r in data_roots)
        for run in runs:
            entry = _load(Path(run), torch.device(device), roots, self.notes)
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
