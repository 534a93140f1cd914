"""Stable Diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models")
from a checkpoint folder the user brings, in the interfaces every genlab sampler, guidance and pipeline
already uses.

``StableDiffusion`` is to a diffusers folder what ``LatentDiffusion`` is to a genlab run: ``forward(x, t,
context=...)`` is the U-Net's prediction on scaled latents (what ``VPDenoiser`` wraps), ``encode_prompts``
turns prompts into the CLIP text encoder's token states, ``encode_images`` / ``decode_latents`` cross
between images in [0, 1] and latents scaled by the autoencoder's ``scaling_factor`` (Rombach et al.,
appendix G). The noise schedule and the network's parameterization come from
``scheduler/scheduler_config.json``; each network from its own ``config.json`` (genlab.nn.sd_unet,
genlab.nn.clip_text, genlab.nn.sd_vae) and ``.safetensors`` weights (genlab.nn.sd_folder).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genlab.checks import MAX_SIDE, check_range
from genlab.diffusion.schedules import SPACINGS, NoiseSchedule, ScheduleConfig
from genlab.errors import GenlabError
from genlab.nn import sd_folder
from genlab.nn.bpe import CLIPTokenizer
from genlab.nn.clip_text import CLIPTextConfig, CLIPTextTransformer, checkpoint_state
from genlab.nn.pretrained import load_state
from genlab.nn.sd_unet import SDUNet, SDUNetConfig
from genlab.nn.sd_vae import SDAutoencoder, SDVAEConfig, convert_legacy_attention

TILE = 64  # latent pixels on a side of one decoded tile (512 image pixels)

# diffusers' prediction_type -> genlab's parameterization (genlab.diffusion.parameterization)
PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
BETA_SCHEDULES = {"scaled_linear": "scaled_linear", "linear": "linear"}

# A cheap latent -> RGB map for live previews: the colour each of the four channels of the SD 1.x/2.x
# autoencoder's scaled latents stands for, as Kevin Turner published them for SD 1.4 (Hugging Face forum,
# "Decoding latents to RGB without upscaling", 2022). A preview at the latent's resolution, not the decoder.
LATENT_RGB = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))


def schedule_from_config(data: dict[str, Any], source: str) -> tuple[ScheduleConfig, str]:
    """(ScheduleConfig, parameterization) from a diffusers ``scheduler_config.json``: the betas
    (``beta_schedule``, ``beta_start``, ``beta_end``, ``num_train_timesteps``), ``prediction_type`` and the
    timestep spacing (``timestep_spacing``, ``steps_offset``). The scheduler's class does not matter:
    genlab's samplers replace it."""
    kind = data.get("beta_schedule", "linear")
    if kind not in BETA_SCHEDULES:
        raise GenlabError(
            f"{source}: `beta_schedule` {kind!r} is not one genlab knows ({', '.join(BETA_SCHEDULES)})"
        )
    if data.get("trained_betas") is not None:
        raise GenlabError(f"{source}: explicit `trained_betas` are not supported; genlab builds the betas")
    if data.get("rescale_betas_zero_snr"):
        raise GenlabError(f"{source}: `rescale_betas_zero_snr` schedules are not supported")
    prediction = data.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise GenlabError(
            f"{source}: `prediction_type` {prediction!r} is not one of {', '.join(PREDICTIONS)}"
        )
    spacing = data.get("timestep_spacing", "leading")
    if spacing not in SPACINGS:
        raise GenlabError(f"{source}: `timestep_spacing` {spacing!r} is not one of {', '.join(SPACINGS)}")
    values = {}
    for name, field, default in (
        ("num_train_timesteps", "timesteps", 1000),
        ("beta_start", "beta_start", 0.0001),
        ("beta_end", "beta_end", 0.02),
        ("steps_offset", "steps_offset", 0),
    ):
        value = data.get(name, default)
        whole = field in ("timesteps", "steps_offset")
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)):
            raise GenlabError(f"{source}: `{name}` must be {'a whole number' if whole else 'a number'}")
        values[field] = value
    try:
        config = ScheduleConfig(kind=BETA_SCHEDULES[kind], spacing=spacing, **values)
        NoiseSchedule(config)  # checks the ranges now, with the file named
    except GenlabError as e:
        raise GenlabError(f"{source}: {e}") from None
    return config, PREDICTIONS[prediction]


def parse_size(text: str) -> tuple[int, int]:
    """ "512x768" (width x height, as diffusers' pipelines and image editors write it) or "512" ->
    (height, width)."""
    parts = text.lower().split("x")
    try:
        sides = [int(p) for p in parts]
    except ValueError:
        raise GenlabError(
            f"`size` must be WIDTHxHEIGHT like 512x512, or one side like 512 (got {text!r})"
        ) from None
    if len(sides) not in (1, 2):
        raise GenlabError(f"`size` must be WIDTHxHEIGHT like 512x512 (got {text!r})")
    width, height = sides if len(sides) == 2 else sides * 2
    return height, width


class StableDiffusion(nn.Module):
    """A Stable Diffusion checkpoint: tokenizer, CLIP text encoder, U-Net, KL autoencoder and schedule.

    ``size`` (height, width) in pixels is what ``sample_shape`` asks the samplers for; it starts at the
    U-Net's training size (``sample_size`` times the autoencoder's 8: 512 for SD 1.x, 768 for SD 2.x) and
    ``set_size`` changes it (both sides divisible by 8).
    """

    def __init__(
        self,
        unet: SDUNet,
        text_encoder: CLIPTextTransformer,
        tokenizer: CLIPTokenizer,
        vae: SDAutoencoder,
        schedule: ScheduleConfig,
        parameterization: str,
        folder: str = "",
    ):
        super().__init__()
        self.unet, self.text_encoder, self.vae = unet.eval(), text_encoder.eval(), vae.eval()
        self.tokenizer = tokenizer
        self.schedule, self.parameterization, self.folder = schedule, parameterization, folder
        self.requires_grad_(False)
        side = (unet.config.sample_size or 64) * self.factor
        self.size = (side, side)

    @property
    def factor(self) -> int:
        """Pixels per latent pixel on a side (8)."""
        return self.vae.config.downsampling

    def set_size(self, height: int, width: int) -> None:
        """Make images of ``height`` x ``width`` pixels from now on."""
        for name, side in (("height", height), ("width", width)):
            check_range(name, side, self.factor, MAX_SIDE)
            if side % self.factor:
                raise GenlabError(
                    f"`{name}` {side} is not divisible by {self.factor}, the autoencoder's downsampling; "
                    f"use {side // self.factor * self.factor} or {(side // self.factor + 1) * self.factor}"
                )
        self.size = (int(height), int(width))

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        h, w = self.size
        return self.vae.config.latent_channels, h // self.factor, w // self.factor

    @property
    def image_shape(self) -> tuple[int, int]:
        """(channels, height): genlab's own runs make square images; ``size`` has both sides."""
        return self.vae.config.out_channels, self.size[0]

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    # ------------------------------------------------------------------------------------- loading

    @classmethod
    def from_folder(
        cls, path: str | Path, device: str | torch.device = "cpu", progress: bool = False
    ) -> StableDiffusion:
        """Load the checkpoint at ``path`` (genlab.nn.sd_folder.find_sd_folder: a diffusers folder or a
        Hugging Face cache entry). The configs are read and the networks sized before any weight is read;
        the memory the weights take is compared with what the machine has."""
        folder = sd_folder.find_sd_folder(path)
        index = sd_folder.read_json(folder / "model_index.json", "model index")
        for name in ("unet", "text_encoder", "vae", "tokenizer", "scheduler"):
            if name not in index:
                raise GenlabError(
                    f"{folder}/model_index.json names no {name}: it is not a Stable Diffusion checkpoint"
                )
        schedule, parameterization = schedule_from_config(
            sd_folder.read_json(
                sd_folder.component(folder, "scheduler") / "scheduler_config.json", "scheduler config"
            ),
            f"{folder}/scheduler/scheduler_config.json",
        )
        tokenizer = CLIPTokenizer.from_folder(sd_folder.component(folder, "tokenizer"))
        configs = {
            "unet": SDUNetConfig.from_diffusers(_config(folder, "unet"), f"{folder}/unet/config.json"),
            "text_encoder": CLIPTextConfig.from_transformers(
                _config(folder, "text_encoder"), f"{folder}/text_encoder/config.json"
            ),
            "vae": SDVAEConfig.from_diffusers(_config(folder, "vae"), f"{folder}/vae/config.json"),
        }
        files = {name: sd_folder.weight_files(sd_folder.component(folder, name)) for name in configs}
        sd_folder.check_memory(
            sum(sd_folder.weight_bytes(f) for f in files.values()),
            f"the Stable Diffusion checkpoint {folder}",
        )
        steps = _progress(3, progress, "loading Stable Diffusion")
        unet = _load(SDUNet, configs["unet"], files["unet"], lambda s: s)
        steps.update()
        # the text encoder computes its position ids (a buffer no checkpoint holds): built for real
        text = _load(
            CLIPTextTransformer, configs["text_encoder"], files["text_encoder"], checkpoint_state, meta=False
        )
        steps.update()
        vae = _load(SDAutoencoder, configs["vae"], files["vae"], convert_legacy_attention)
        steps.update()
        steps.close()
        if text.config.hidden_size not in set(unet.config.cross_attention_dim):
            raise GenlabError(
                f"{folder}: the text encoder's width {text.config.hidden_size} is not the U-Net's "
                f"`cross_attention_dim` {unet.config.cross_attention_dim[0]}; the parts do not belong "
                "together"
            )
        model = cls(unet, text, tokenizer, vae, schedule, parameterization, str(folder))
        return model.to(device)

    # ------------------------------------------------------------------------ genlab's interfaces

    def encode_prompts(self, prompts: list[str]) -> tuple[dict[str, torch.Tensor], list[bool]]:
        """The text encoder's token states of ``prompts`` ({"context"}) and which prompts were cut to
        the tokenizer's 77 tokens. CLIP attends causally over every position, padding included, so the
        states are used whole, with no mask (as Stable Diffusion was trained)."""
        truncated = [self.tokenizer.encode(p)[1] for p in prompts]
        encoded = self.tokenizer(prompts)
        with torch.no_grad():
            states = self.text_encoder(encoded.ids.to(self.device))
        return {"context": states}, truncated

    def token_strings(self, prompt: str) -> list[str]:
        """The tokens of ``prompt`` as text (start, words and word pieces, end), for attention maps."""
        ids, _ = self.tokenizer.encode(prompt)
        inverse = {i: s for s, i in self.tokenizer.vocab.items()}
        pieces = [inverse.get(i, "?").removesuffix("</w>") for i in ids]
        return ["<start>", *pieces, "<end>"]

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None, **_: Any
    ) -> torch.Tensor:
        if context is None:
            raise GenlabError("Stable Diffusion needs a prompt's token states (`context`)")
        return self.unet(x, t, context)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (N, 3, H, W) -> scaled latents (the posterior means)."""
        return self.vae.encode(images * 2 - 1).mean * self.vae.scaling_factor

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [0, 1]. Beyond 1024 pixels on a side the autoencoder decodes in
        overlapping 512-pixel tiles (genlab.nn.sd_vae, as diffusers' ``enable_tiling``), so its memory stays
        that of a 512 x 512 image; below, whole, exactly as the checkpoint's authors decode."""
        tile = TILE if max(z.shape[-2:]) > 2 * TILE else None
        return ((self.vae.decode(z / self.vae.scaling_factor, tile=tile) + 1) / 2).clamp(0, 1)

    def preview_latents(self, z: torch.Tensor) -> torch.Tensor:
        """A cheap RGB preview in [0, 1] of scaled latents at the latent resolution (a linear map of the
        four channels, see LATENT_RGB), for live previews between steps where decoding would cost more
        than a step."""
        if z.shape[1] != len(LATENT_RGB):
            return (z[:, :3] / 2 + 0.5).clamp(0, 1)  # another autoencoder: its first channels, as grey-ish
        rgb = torch.einsum("nchw,cr->nrhw", z, torch.tensor(LATENT_RGB, dtype=z.dtype, device=z.device))
        return (rgb / 2 + 0.5).clamp(0, 1)


def _config(folder: Path, name: str) -> dict[str, Any]:
    return sd_folder.read_json(sd_folder.component(folder, name) / "config.json", f"{name} config")


def _load(cls: type[nn.Module], config: Any, files: list[Path], convert, meta: bool = True) -> nn.Module:
    """``cls(config)`` with the weights of ``files``. With ``meta`` it is built on the meta device and
    handed the loaded tensors, so no second copy of the weights is allocated (a network whose buffers are
    computed rather than stored is built for real: ``meta=False``). A checkpoint that does not fit its
    config is a one-line error."""
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = cls(config)
    load_state(model, convert(sd_folder.load_weights(files)), files[0].parent, assign=True)
    return model.eval()


def _progress(total: int, enabled: bool, what: str) -> Any:
    """A tqdm bar on stderr, or one that shows nothing."""
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="part", disable=not enabled)


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` names a Stable Diffusion checkpoint (rather than a genlab run)."""
    return sd_folder.is_sd_folder(path)
