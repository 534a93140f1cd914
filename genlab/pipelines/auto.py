"""`load_pipeline`: the pipeline that serves a run, read from its ``config.json``, as diffusers'
``AutoPipeline`` picks a pipeline class from ``model_index.json``. Every caller that turns a run
directory into a generator (the CLI's sample, edit and eval, the benchmarks, the web app) goes through
it, so the decision is made once."""

from __future__ import annotations

from pathlib import Path

import torch

from genlab import rundir
from genlab.errors import GenlabError

#: The kinds of run a pipeline serves, as ``pipeline_kind`` names them.
PIPELINE_KINDS = ("diffusion", "text-to-image", "gan", "video")


def pipeline_kind(config: dict, run: str | Path = "this run") -> str:
    """``"diffusion"``, ``"text-to-image"``, ``"gan"`` or ``"video"`` for a run's config; GenlabError for
    a run that makes no images (a classifier, CLIP, a VAE, a segmentation U-Net)."""
    kind = config.get("kind")
    if kind in ("gan", "video"):
        return kind
    if kind == "diffusion":
        diffusion = config.get("diffusion")
        cond = diffusion.get("cond") if isinstance(diffusion, dict) else None
        return "text-to-image" if cond == "text" else "diffusion"
    raise GenlabError(
        f"{run} holds a '{kind}' run, which makes no images; give a diffusion (class, unconditional, "
        "text-to-image, latent, upscaler), video or GAN run"
    )


def kind_of(run: str | Path) -> str:
    """``pipeline_kind`` of the run directory (or Stable Diffusion checkpoint) at ``run``."""
    from genlab.diffusion.stable_diffusion import is_checkpoint

    return "text-to-image" if is_checkpoint(run) else pipeline_kind(rundir.read_config(run), run)


def load_pipeline(
    run: str | Path,
    device: str | torch.device = "auto",
    use_ema: bool = True,
    precision: str = "auto",
):
    """The pipeline for ``run``: a `DiffusionPipeline` (class-conditional, unconditional, latent or
    upscaler), a `TextToImagePipeline` (a text-to-image run, or a Stable Diffusion checkpoint folder:
    ``model_index.json`` rather than a genlab ``config.json``), a `VideoPipeline` or a `GANPipeline`.
    ``precision`` applies to the diffusion pipelines (a GAN draws in one forward pass, in float32)."""
    run = Path(run)
    kind = kind_of(run)
    if kind == "gan":
        from genlab.pipelines.gan import GANPipeline

        return GANPipeline.from_pretrained(run, device=device, use_ema=use_ema)
    if kind == "video":
        from genlab.pipelines.video import VideoPipeline

        return VideoPipeline.from_pretrained(run, device=device, use_ema=use_ema, precision=precision)
    if kind == "text-to-image":
        from genlab.pipelines.text_to_image import TextToImagePipeline

        return TextToImagePipeline.from_pretrained(run, device=device, use_ema=use_ema, precision=precision)
    from genlab.pipelines.diffusion import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(run, device=device, use_ema=use_ema, precision=precision)
