"""`genlab edit ...`: change an image with a trained diffusion model (image-to-image, inpainting)."""

from __future__ import annotations

import click

from genlab.cli import cli
from genlab.cli.common import echo, sampling_options
from genlab.errors import GenlabError


@cli.group()
def edit() -> None:
    """Edit images with a diffusion run: img2img (SDEdit) and inpainting."""


def _pipe_and_image(run: str, image: str, device: str):
    from genlab import rundir
    from genlab.data import load_image
    from genlab.pipelines import DiffusionPipeline, TextToImagePipeline

    text = rundir.read_config(run, kind="diffusion").get("diffusion", {}).get("cond") == "text"
    pipe = (TextToImagePipeline if text else DiffusionPipeline).from_pretrained(run, device=device)
    channels, size = pipe.image_shape
    return pipe, text, load_image(image, size, channels)


def _edit(run, loaded, prompt, class_, n, steps, sampler, guidance, seed, out, **extra):
    """Draw ``n`` edits of the loaded image with the loaded pipeline and write them beside the input."""
    import torch

    from genlab.data import save_grid

    pipe, text, x = loaded
    if n < 1:
        raise GenlabError(f"--n must be at least 1 (got {n})")
    g = torch.Generator().manual_seed(seed)
    init = x[None].expand(n, -1, -1, -1)
    if text:
        if prompt is None:
            raise GenlabError(f"{run} is a text-to-image run: give a prompt")
        result = pipe(prompt, None, steps, guidance, sampler, g, num_images=n, init_images=init, **extra)
    else:
        if prompt is not None:
            raise GenlabError(f"{run} takes no prompt (it was trained without --cond text); use --class")
        labels = torch.tensor([pipe.class_index(class_)]) if class_ is not None else None
        result = pipe(n, labels, steps, guidance, sampler, generator=g, init_images=init, **extra)
    grid = torch.cat([x[None], result.tensors])
    path = save_grid(out, grid, ["input"] + [f"edit {i + 1}" for i in range(n)])
    echo(f"wrote {path}")


@edit.command("img2img")
@click.argument("run", type=click.Path())
@click.argument("image", type=click.Path())
@click.argument("prompt", required=False)
@click.option(
    "--strength", default=0.6, show_default=True, type=float, help="0 keeps the image, 1 ignores it."
)
@click.option("--class", "class_", default=None, help="Class to steer toward (class-conditional runs).")
@click.option("--n", default=4, show_default=True, type=int, help="Edits to draw.")
@sampling_options
@click.option("--out", default="img2img.png", show_default=True)
@click.option("--device", default="auto", show_default=True)
def img2img(run, image, prompt, strength, class_, n, steps, sampler, guidance, seed, out, device) -> None:
    """SDEdit (Meng et al. 2022): noise IMAGE to the timestep round(strength T) - 1 and denoise it with
    the model (toward PROMPT or --class): the layout stays, the details are redrawn.

    \b
    Examples:
      genlab edit img2img runs/diffusion-mnist digit.png --class 8 --strength 0.6
      genlab edit img2img runs/t2i-shapes scene.png "a small blue square at the top left" --strength 0.5
    """
    loaded = _pipe_and_image(run, image, device)
    _edit(run, loaded, prompt, class_, n, steps, sampler, guidance, seed, out, strength=strength)


@edit.command("inpaint")
@click.argument("run", type=click.Path())
@click.argument("image", type=click.Path())
@click.argument("prompt", required=False)
@click.option(
    "--mask", required=True, type=click.Path(), help="Image: white where to repaint, black to keep."
)
@click.option("--class", "class_", default=None, help="Class to paint (class-conditional runs).")
@click.option("--n", default=4, show_default=True, type=int, help="Fillings to draw.")
@sampling_options
@click.option("--out", default="inpaint.png", show_default=True)
@click.option("--device", default="auto", show_default=True)
def inpaint(run, image, prompt, mask, class_, n, steps, sampler, guidance, seed, out, device) -> None:
    """Repaint the white region of MASK in IMAGE and keep the rest exactly: at every step the model's
    estimate takes the known pixels outside the mask, and the result is composited with them.

    \b
    Example:
      genlab edit inpaint runs/diffusion-mnist digit.png --mask lower_half.png --class 3
    """
    from genlab.data import load_image

    loaded = _pipe_and_image(run, image, device)
    keep = (load_image(mask, loaded[2].shape[-1], 1) < 0.5).float()[None]
    if keep.all():
        raise GenlabError(f"the mask {mask} has no white pixels: nothing to repaint")
    _edit(run, loaded, prompt, class_, n, steps, sampler, guidance, seed, out, keep=keep)
