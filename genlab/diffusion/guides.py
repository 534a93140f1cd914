"""Guidance by the gradient of a noise-aware model: classifier guidance (Dhariwal & Nichol 2021) and CLIP
guidance (Nichol et al. 2022, "GLIDE", section 2.3), for every sampler.

A guide is a function of the sampler's state, ``guide(x_t, sigma) -> (N,)``, that scores how well each
noisy image x_t (VP variables, model space [-1, 1] plus noise) fits its condition: log p(y | x_t) for a
classifier, the scaled similarity of the image's and the caption's CLIP embeddings for CLIP. Both models
see x_t and its noise level, because they were trained on noisy images (``NoisyClassifierTask``; a CLIP
trained with ``noisy``): a classifier of clean images says little about x_t at high noise, and its
gradient there is noise.

``GradientGuidedDenoiser`` adds the guide's gradient to a denoiser's estimate, so every sampler gets it
as it gets classifier-free guidance, and the two combine.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from genlab.classification.evaluate import evaluate_classifier
from genlab.classification.task import ClassifierDataConfig, ClassifierTask
from genlab.clip.model import CLIP, CLIPConfig
from genlab.clip.task import EVAL_BATCH, RETRIEVAL_CHUNK, CLIPTask, ObjectiveConfig
from genlab.data import DataConfig
from genlab.diffusion.denoiser import sigma_batch
from genlab.diffusion.schedules import NoiseSchedule, ScheduleConfig
from genlab.errors import GenlabError
from genlab.nn.classifier import Classifier, ClassifierConfig
from genlab.nn.pretrained import config_from_dict
from genlab.train.engine import Batch

Guide = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

NOISE_TIMESTEPS = 1000  # the schedule a noise-aware model is trained on: genlab's default linear one
PROBE_TIMESTEPS = (250, 500, 750)  # where a noise-aware classifier's validation accuracy is reported


def guide_schedule(timesteps: int) -> NoiseSchedule:
    """The forward process a noise-aware model was trained on: the linear schedule of Ho et al. (2020)
    with ``timesteps`` steps. A guide converts the sampler's sigma to a timestep of this schedule, so the
    guide need not share the diffusion model's schedule."""
    return NoiseSchedule(ScheduleConfig(timesteps=timesteps))


def noisy_pixels(
    images: torch.Tensor, t: torch.Tensor, schedule: NoiseSchedule, noise: torch.Tensor
) -> torch.Tensor:
    """Images in [0, 1] noised by the forward process to timesteps ``t`` (N,), returned as pixels
    (x_t + 1) / 2, the range the guide models take: x_t = sqrt(abar_t) (2 x - 1) + sqrt(1 - abar_t) eps
    (Ho et al. 2020, eq. 4)."""
    abar = schedule.abar(t).to(images).reshape(-1, *([1] * (images.ndim - 1)))
    x_t = abar.sqrt() * (2 * images - 1) + (1 - abar).sqrt() * noise
    return (x_t + 1) / 2


class NoisyClassifierTask(ClassifierTask):
    """A noise-aware classifier p(y | x_t, t) (Dhariwal & Nichol 2021, section 4: "we train a classifier
    p_phi(y | x_t, t) on noisy images x_t"): every training image is noised to a timestep drawn uniformly
    from the linear schedule's, and the classifier is told the timestep. Validation reports the accuracy
    on clean images (``val_acc``, t = 0) and at a few noise levels (``val_acc_t500``...)."""

    def __init__(
        self,
        data: ClassifierDataConfig,
        model_config: ClassifierConfig | None = None,
        **model_options: Any,
    ) -> None:
        if data.noise_sigma > 0:
            raise GenlabError("a noise-aware classifier draws its own noise levels; leave `noise_sigma` at 0")
        if model_config is None:
            model_options.setdefault("noise_timesteps", NOISE_TIMESTEPS)
        super().__init__(data, model_config, **model_options)
        if not self.model.config.noise_timesteps:
            raise GenlabError("a noise-aware classifier needs `noise_timesteps` > 0")
        self.schedule = guide_schedule(self.model.config.noise_timesteps)

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> NoisyClassifierTask:
        data = config_from_dict(ClassifierDataConfig, config.get("data", {}), "config.json 'data'")
        return cls(
            data, model_config=config_from_dict(ClassifierConfig, config["model"], "config.json 'model'")
        )

    def loss(self, model: nn.Module, batch: Batch, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        x = self.augmented(batch.images, generator)
        t = torch.randint(0, self.schedule.timesteps, (x.shape[0],), generator=generator)
        noise = torch.randn(x.shape, generator=generator)
        logits = model(noisy_pixels(x, t, self.schedule, noise.to(x)), t.float().to(x.device))
        loss = F.cross_entropy(logits, batch.labels)
        return loss, {"train_acc": (logits.argmax(1) == batch.labels).float().mean().detach()}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        m = evaluate_classifier(model, self.val_data)
        out = {"val_acc": m["accuracy"], "val_loss": m["loss"]}
        images, labels = self.val_data.images, self.val_data.labels
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for step in PROBE_TIMESTEPS:
                    t = torch.full((images.shape[0],), step * self.schedule.timesteps // NOISE_TIMESTEPS)
                    logits = model(noisy_pixels(images, t, self.schedule, noise), t.float())
                    out[f"val_acc_t{step}"] = float((logits.argmax(1) == labels).float().mean())
        finally:
            model.train(was_training)
        return out


class ClassifierGuide:
    """log p(y | x_t) of a noise-aware classifier for the given ``labels`` (N,): the guide of classifier
    guidance (Dhariwal & Nichol 2021, Algorithms 1 and 2)."""

    def __init__(self, classifier: Classifier, labels: torch.Tensor) -> None:
        steps = classifier.config.noise_timesteps
        if not steps:
            raise GenlabError(
                "classifier guidance needs a noise-aware classifier (one with `noise_timesteps`, trained on "
                "noisy images): one trained on clean images cannot read noisy ones"
            )
        num_classes = classifier.config.num_classes
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise GenlabError(f"the guide classifier knows classes 0..{num_classes - 1}")
        self.classifier = classifier.eval()
        self.labels = labels
        self.schedule = guide_schedule(steps)

    def __call__(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        t = self.schedule.sigma_to_t(sigma).to(x_t.device)
        logits = self.classifier((x_t + 1) / 2, t)
        labels = self.labels.to(x_t.device)
        return logits.float().log_softmax(1).gather(1, labels[:, None]).squeeze(1)


class GradientGuidedDenoiser:
    """A denoiser pushed along the gradient of a guide: D'(x; sigma) = D(x; sigma) + s sigma^2 grad_x
    guide(x_t, sigma), with x_t = x / sqrt(1 + sigma^2).

    This is Dhariwal & Nichol's (2021) Algorithm 2, eps' = eps - s sqrt(1 - abar) grad_{x_t} log p(y | x_t),
    in the samplers' variables: D = (x_t - sqrt(1 - abar) eps) / sqrt(abar) moves by s (1 - abar) /
    sqrt(abar) grad_{x_t}, which is s sigma^2 grad_x since sigma^2 = (1 - abar) / abar and grad_x =
    sqrt(abar) grad_{x_t}. On the score it is grad log p(x) + s grad log p(y | x), the score of p(x)
    p(y | x)^s, so every sampler (ODE or SDE) draws from that tilted distribution, and scale 1 from the
    Bayes conditional. CLIP guidance (GLIDE, eq. 5) is the same with the CLIP similarity as the guide.
    The gradient needs autograd, which the samplers turn off: it is switched on here, for the guide only.
    """

    def __init__(self, denoiser: Callable, guide: Guide, scale: float) -> None:
        if not scale >= 0:
            raise GenlabError(f"the guide's scale must be >= 0 (got {scale})")
        self.denoiser = denoiser
        self.guide = guide
        self.scale = float(scale)

    def gradient(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """grad_x of the guide's score at the sampler's x (VE form)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            abar = 1.0 / (1.0 + sigma.to(x.dtype) ** 2)
            x_t = x * abar.sqrt().reshape(-1, *([1] * (x.ndim - 1)))
            (grad,) = torch.autograd.grad(self.guide(x_t, sigma).sum(), x)
        return grad

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        denoised = self.denoiser(x, sigma)
        if self.scale == 0.0:
            return denoised
        sigma = sigma_batch(sigma, x)
        step = self.scale * sigma.to(x.dtype) ** 2
        return denoised + step.reshape(-1, *([1] * (x.ndim - 1))) * self.gradient(x, sigma)


class NoisyCLIPTask(CLIPTask):
    """GLIDE's noised CLIP (Nichol et al. 2022, section 2.3: "we train CLIP models with a noise-aware image
    encoder"): CLIP's contrastive loss with every training image noised to a uniformly drawn timestep of
    the linear schedule, which the image tower is told. Validation adds caption retrieval from images
    noised to t = 500 (``val_i2t_top1_t500``) to CLIP's clean-image figures."""

    def __init__(
        self,
        data: DataConfig,
        objective: ObjectiveConfig | None = None,
        model_config: CLIPConfig | None = None,
        tokenizer: str = "word",
        text_options: dict[str, Any] | None = None,
        **image_options: Any,
    ) -> None:
        if model_config is None:
            image_options.setdefault("noise_timesteps", NOISE_TIMESTEPS)
        super().__init__(data, objective, model_config, tokenizer, text_options, **image_options)
        if not self.model.config.noise_timesteps:
            raise GenlabError("a noised CLIP needs `noise_timesteps` > 0")
        self.schedule = guide_schedule(self.model.config.noise_timesteps)

    @classmethod
    def from_run_config(cls, config: dict[str, Any]) -> NoisyCLIPTask:
        return cls(
            config_from_dict(DataConfig, config.get("data", {}), "config.json 'data'"),
            config_from_dict(ObjectiveConfig, config.get("objective", {}), "config.json 'objective'"),
            model_config=config_from_dict(CLIPConfig, config["model"], "config.json 'model'"),
        )

    def images_seen(
        self, images: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        t = torch.randint(0, self.schedule.timesteps, (images.shape[0],), generator=generator)
        noise = torch.randn(images.shape, generator=generator).to(images)
        return noisy_pixels(images, t, self.schedule, noise), t.float().to(images.device)

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        metrics = super().evaluate(model)
        images, captions = self.val_data.images, self.val_data.captions
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
        t = torch.full((len(images),), 500 * self.schedule.timesteps // NOISE_TIMESTEPS)
        noisy = noisy_pixels(images, t, self.schedule, noise)
        img = torch.cat(
            [
                model.encode_images(noisy[i : i + EVAL_BATCH].to(model.device), t[i : i + EVAL_BATCH].float())
                for i in range(0, len(images), EVAL_BATCH)
            ]
        ).cpu()
        txt = self._embed_val(model)[1]
        hits = 0
        for start in range(0, len(captions), RETRIEVAL_CHUNK):  # as the clean retrieval is scored
            sl = slice(start, start + RETRIEVAL_CHUNK)
            names = captions[sl]
            hits += sum(names[j] == names[i] for i, j in enumerate((img[sl] @ txt[sl].T).argmax(1).tolist()))
        metrics["val_i2t_top1_t500"] = hits / len(captions)
        return metrics


def clip_task_from_run_config(config: dict[str, Any]) -> CLIPTask:
    """The task of a saved CLIP run (to resume it): noised when its image tower takes timesteps."""
    if config.get("model", {}).get("noise_timesteps"):
        return NoisyCLIPTask.from_run_config(config)
    return CLIPTask.from_run_config(config)


class CLIPGuide:
    """The similarity of a noised CLIP's image embedding of x_t and its text embedding of the prompts, as
    logits (the cosine times the CLIP's logit scale): the guide of CLIP guidance (GLIDE, section 2.3:
    mu + s Sigma grad (f(x_t, t) . g(c))). The prompts' embeddings are computed once."""

    def __init__(self, clip: CLIP, prompts: list[str]) -> None:
        if not clip.config.noise_timesteps:
            raise GenlabError(
                "CLIP guidance needs a noised CLIP (one with `noise_timesteps`, trained on noisy images): "
                "one trained on clean images cannot read noisy ones"
            )
        self.clip = clip.eval()
        with torch.no_grad():
            self.text = clip.encode_text(prompts)
            self.logit_scale = clip.scale()
        self.schedule = guide_schedule(clip.config.noise_timesteps)

    def __call__(self, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        t = self.schedule.sigma_to_t(sigma).to(x_t.device)
        image = self.clip.encode_images((x_t + 1) / 2, t)
        return self.logit_scale * (image.float() * self.text.to(image.device)).sum(1)
