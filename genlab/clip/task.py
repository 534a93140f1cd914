"""Training CLIP on the shared engine: image-caption pairs of any data set, contrastive (or matched-only)
loss, and validation by retrieval, zero-shot accuracy and the collapse measure."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.clip.loss import LOSSES, clip_loss, mean_pairwise_cosine
from genlab.clip.model import CLIP, CLIPConfig
from genlab.clip.zero_shot import zero_shot_classify
from genlab.data import DataConfig, ImageDataset, is_clips, load_clips, load_splits, save_clips, save_grid
from genlab.errors import GenlabError
from genlab.nn.pretrained import config_from_dict
from genlab.nn.text import TextEncoderConfig, Tokenizer
from genlab.train.engine import Batch, Task

TEXT_DEFAULTS = dict(width=128, layers=2, heads=4)
RETRIEVAL_CHUNK = 100  # validation retrieval picks among this many captions (or images)
EVAL_BATCH = 500


@dataclass
class ObjectiveConfig:
    """How CLIP is trained; stored as config.json's ``objective``."""

    loss: str = "contrastive"  # or "matched": matched pairs only, no negatives (collapses, a demonstration)

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise GenlabError(f"unknown CLIP loss '{self.loss}'; choose one of {', '.join(LOSSES)}")


@dataclass
class ZeroShotSet:
    images: torch.Tensor
    targets: torch.Tensor  # (N,) index into labels
    labels: list[str]
    templates: tuple[str, ...] = ("{}",)  # the data's prompt templates, ensembled (Radford et al. 3.1.4)


def zero_shot_set(data: ImageDataset) -> ZeroShotSet | None:
    """The zero-shot test of a data set's (held-out) split, or None when it has none.

    shapes: the 18 labels "a {colour} {shape}" on the images holding one shape, judged by their attributes,
    with the templates "{} at the top left", ... "{} in the center", ... (every position phrase of the
    captions): a bare label is shorter than any caption, as a bare class name is for CLIP's "A photo of a
    {}." (one shapes run, widths 16,32,64, text width 64, lr 3e-3, 2000 steps: 100% with the templates,
    37% bare); mnist and digits: "a handwritten {digit}" on every image.
    """
    if data.name == "shapes":
        from genlab.data.shapes import COLORS, POSITIONS, SHAPE_NAMES

        labels = [f"a {color} {shape}" for color in COLORS for shape in SHAPE_NAMES]
        keep, targets = [], []
        for i, attributes in enumerate(data.attributes):
            shapes = attributes.get("shapes", [])
            if len(shapes) == 1:
                keep.append(i)
                targets.append(labels.index(f"a {shapes[0]['color']} {shapes[0]['shape']}"))
        if not keep:
            return None
        templates = tuple(f"{{}} {phrase}" for _, phrase in POSITIONS)
        return ZeroShotSet(data.images[keep], torch.tensor(targets), labels, templates)
    if data.name in ("mnist", "digits") and data.labels is not None and data.class_names:
        return ZeroShotSet(data.images, data.labels, [f"a handwritten {name}" for name in data.class_names])
    return None


class CLIPTask(Task):
    kind = "clip"

    def __init__(
        self,
        data: DataConfig,
        objective: ObjectiveConfig | None = None,
        model_config: CLIPConfig | None = None,
        tokenizer: str = "word",
        text_options: dict[str, Any] | None = None,
        **image_options: Any,
    ):
        """Load the splits of ``data`` and build a CLIP fitted to them (or exactly ``model_config``).

        The tokenizer is trained on the training captions (``tokenizer``: word, word-minilm or byte) with
        room for the longest one; ``text_options`` (width, layers, heads, and backbone "minilm": the tower
        reads the frozen MiniLM's states, through its WordPiece tokenizer) shape the text tower and
        ``image_options`` (widths, image_hidden, embed_dim) the image tower and the joint space.
        """
        self.data, self.objective = data, objective or ObjectiveConfig()
        if is_clips(data.name):  # a clip is seen whole, so that the motion words are learned too
            if data.image_size is not None:
                raise GenlabError("clips keep the size they are made at: drop `image_size`")
            train, val = (
                load_clips(data.name, split, data.split_seed, data.val_fraction) for split in ("train", "val")
            )
            self.train_data, self.val_data, self.frames = train.stacked(), val.stacked(), train.frames
        else:
            self.frames = 0
            self.train_data, self.val_data = load_splits(
                data.name, data.split_seed, data.val_fraction, data.image_size
            )
        if model_config is None:
            captions = self.train_data.captions
            options = {**TEXT_DEFAULTS, **(text_options or {})}
            tok = self._tokenizer(captions, tokenizer, options.get("backbone", ""))
            length = max(len(tok.tokens(c)) for c in set(captions)) + 2  # room for BOS, the longest, EOS
            text = TextEncoderConfig(vocab_size=tok.vocab_size, max_length=length, **options)
            x = self.train_data.images
            model_config = CLIPConfig(
                text=text,
                tokenizer=replace(tok.config, max_length=length),
                in_channels=x.shape[1],
                image_size=x.shape[2],
                mean=tuple(x.mean(dim=(0, 2, 3)).tolist()),
                std=tuple(x.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist()),
                **image_options,
            )
        self.model = CLIP(model_config)
        if self.objective.loss == "matched":
            self.model.logit_scale.requires_grad_(False)  # unused by this loss (and so by DDP)
        val = self.model.tokenizer.encode(self.val_data.captions)
        self.val_ids, self.val_mask = val.ids, val.mask
        self.zero_shot = zero_shot_set(self.val_data)

    @staticmethod
    def _tokenizer(captions: list[str], kind: str, backbone: str) -> Any:
        """The tokenizer trained on ``captions``, or MiniLM's WordPiece under a MiniLM backbone."""
        if not backbone.startswith("minilm"):
            return Tokenizer.train(captions, kind)
        from genlab.nn.minilm import WordPieceTokenizer

        return WordPieceTokenizer.from_package()

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> CLIPTask:
        """Rebuild the task of a saved run (for --resume) from its config.json."""
        return cls(
            config_from_dict(DataConfig, config.get("data", {}), "config.json 'data'"),
            config_from_dict(ObjectiveConfig, config.get("objective", {}), "config.json 'objective'"),
            model_config=config_from_dict(CLIPConfig, config["model"], "config.json 'model'"),
        )

    def config_sections(self) -> dict[str, Any]:
        sections: dict[str, Any] = {"data": asdict(self.data), "objective": asdict(self.objective)}
        if self.zero_shot is not None:  # `genlab clip classify` prompts with the data's templates
            sections["zero_shot"] = {"templates": list(self.zero_shot.templates)}
        return sections

    def images_seen(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The training images as the image tower sees them, and their timesteps (None: clean). A noised
        CLIP (``genlab.diffusion.guides.NoisyCLIPTask``) noises them here."""
        return images, None

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        encoded = self.model.tokenizer.encode(batch.captions)
        device = batch.images.device
        images, t = self.images_seen(batch.images, generator)
        out = model(images, encoded.ids.to(device), encoded.mask.to(device), t)
        loss = LOSSES[self.objective.loss](out.image_embeds, out.text_embeds, out.logit_scale)
        with torch.no_grad():
            logits = out.logits_per_image
            hits = logits.argmax(1) == torch.arange(len(logits), device=device)
        return loss, {
            "temperature": 1.0 / float(out.logit_scale.detach()),
            "batch_i2t_acc": hits.float().mean().item(),
        }

    @torch.no_grad()
    def _embed_val(self, model: CLIP) -> tuple[torch.Tensor, torch.Tensor]:
        device = model.device
        images = torch.cat(
            [
                model.encode_images(self.val_data.images[i : i + EVAL_BATCH].to(device))
                for i in range(0, len(self.val_data), EVAL_BATCH)
            ]
        )
        texts = torch.cat(
            [
                model.encode_tokens(
                    self.val_ids[i : i + EVAL_BATCH].to(device), self.val_mask[i : i + EVAL_BATCH].to(device)
                )
                for i in range(0, len(self.val_data), EVAL_BATCH)
            ]
        )
        return images.cpu(), texts.cpu()

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Retrieval, loss, collapse and zero-shot numbers on the validation split.

        Retrieval runs within consecutive chunks of RETRIEVAL_CHUNK pairs: image -> text is right when the
        nearest caption is the image's caption *text* (an identical caption of another image counts, so
        duplicates are not scored as misses), text -> image when the nearest image carries that caption.
        ``image_cosine`` / ``text_cosine``: mean pairwise cosine of the embeddings of all validation images
        and of the distinct validation captions (near 1: collapsed). ``zero_shot_acc``: zero-shot accuracy
        with the data's prompt templates (see zero_shot_set), ``zero_shot_bare_acc`` with the labels alone.
        """
        assert isinstance(model, CLIP)
        img, txt = self._embed_val(model)
        scale = model.scale().detach().cpu()
        captions = self.val_data.captions
        i2t = t2i = losses = 0.0
        chunks = 0
        for start in range(0, len(captions), RETRIEVAL_CHUNK):
            sl = slice(start, start + RETRIEVAL_CHUNK)
            sims = img[sl] @ txt[sl].T
            names = captions[sl]
            i2t += sum(names[j] == names[i] for i, j in enumerate(sims.argmax(1).tolist()))
            t2i += sum(names[i] == names[j] for j, i in enumerate(sims.argmax(0).tolist()))
            if len(names) > 1:
                losses += float(clip_loss(img[sl], txt[sl], scale)) * len(names)
                chunks += len(names)
        distinct = sorted({c: i for i, c in enumerate(captions)}.values())
        metrics = {
            "val_loss": losses / max(chunks, 1),
            "val_i2t_top1": i2t / len(captions),
            "val_t2i_top1": t2i / len(captions),
            "image_cosine": mean_pairwise_cosine(img) if len(img) > 1 else 1.0,
            "text_cosine": mean_pairwise_cosine(txt[distinct]) if len(distinct) > 1 else 1.0,
            "temperature": model.temperature,
        }
        zs = self.zero_shot
        if zs is not None:
            probs = zero_shot_classify(model, zs.images, zs.labels, zs.templates)
            metrics["zero_shot_acc"] = float((probs.argmax(1) == zs.targets).float().mean())
            if zs.templates != ("{}",):
                bare = zero_shot_classify(model, zs.images, zs.labels).argmax(1)
                metrics["zero_shot_bare_acc"] = float((bare == zs.targets).float().mean())
        return metrics

    @torch.no_grad()
    def sample(self, model: nn.Module, path: Path) -> Path:
        """Validation images captioned with the nearest of all distinct validation captions (retrieval)."""
        assert isinstance(model, CLIP)
        img, txt = self._embed_val(model)
        captions = self.val_data.captions
        distinct = sorted({c: i for i, c in enumerate(captions)}.values())
        chosen = torch.linspace(0, len(captions) - 1, min(16, len(captions))).round().long()
        probs = (model.scale().cpu() * img[chosen] @ txt[distinct].T).softmax(-1)
        p, best = probs.max(1)
        names = [f"{captions[distinct[k]]} ({q:.0%})" for k, q in zip(best.tolist(), p.tolist(), strict=True)]
        if self.frames:  # a strip of frames per clip
            return save_clips(path, self.val_data.images[chosen].unflatten(1, (self.frames, -1)), names)
        return save_grid(path, self.val_data.images[chosen], names, nrow=4)
