"""`genlab edit ...`: change an image with a trained diffusion model (image-to-image, inpainting,
super-resolution)."""

from __future__ import annotations

import click

from genlab.cli import cli
from genlab.cli.common import echo, sampling_options
from genlab.errors import GenlabError

# A class asked of a run trained without classes is refused by the library in terms of the training's
# `cond` and the pipeline's `class_labels`: here, the options that set them.
TRAINING_CLASSES = {"cond": "--cond", "class_labels": "--class"}


@cli.group()
def edit() -> None:
    """Edit images with a diffusion run: img2img (SDEdit), inpainting, and upscaling (a cascade)."""


def _diffusion_pipeline(run: str, device: str):
    """(the run's pipeline, whether it takes prompts); a GAN is refused: editing denoises a noised image."""
    from genlab.pipelines import kind_of, load_pipeline

    kind = kind_of(run)
    if kind in ("gan", "video"):
        what = "a GAN" if kind == "gan" else "a video run"
        raise GenlabError(
            f"{run} is {what}; editing needs an image diffusion run (it denoises a noised image)"
        )
    return load_pipeline(run, device=device), kind == "text-to-image"


def _pipe_and_image(run: str, image: str, device: str):
    from genlab.data import load_image

    pipe, text = _diffusion_pipeline(run, device)
    channels, size = pipe.image_shape
    return pipe, text, load_image(image, size, channels)


def _edit(run, loaded, prompt, class_, n, steps, sampler, guidance, seed, out, **extra):
    """Draw ``n`` edits of the loaded image with the loaded pipeline and write them beside the input."""
    import torch

    from genlab.data import save_grid
    from genlab.diffusion.stable_diffusion import is_checkpoint

    pipe, text, x = loaded
    n = n if n is not None else 1 if is_checkpoint(run) else 4
    if n < 1:
        raise GenlabError(f"--n must be at least 1 (got {n})")
    init = x[None].expand(n, -1, -1, -1)
    settings = dict(
        num_inference_steps=steps,
        guidance_scale=guidance,
        sampler=sampler,
        generator=torch.Generator().manual_seed(seed),
        init_images=init,
        **extra,
    )
    if text:
        if prompt is None:
            raise GenlabError(f"{run} is a text-to-image run: give a prompt")
        result = pipe(prompt=prompt, num_images=n, **settings)
    else:
        if prompt is not None:
            raise GenlabError(f"{run} takes no prompt (it was trained without --cond text); use --class")
        labels = torch.tensor([pipe.class_index(class_)]) if class_ is not None else None
        result = pipe(num_images=n, class_labels=labels, **settings)
    grid = torch.cat([x[None], result.tensors])
    path = save_grid(out, grid, ["input"] + [f"edit {i + 1}" for i in range(n)])
    echo(f"wrote {path}")


@edit.command("img2img", flags=TRAINING_CLASSES)
@click.argument("run", type=click.Path())
@click.argument("image", type=click.Path())
@click.argument("prompt", required=False)
@click.option(
    "--strength", default=0.6, show_default=True, type=float, help="0 keeps the image, 1 ignores it."
)
@click.option("--class", "class_", default=None, help="Class to steer toward (class-conditional runs).")
@click.option("--n", default=None, type=int, help="Edits to draw (default 4; 1 for Stable Diffusion).")
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
      genlab edit img2img SD_FOLDER photo.png "a labrador in the style of Vermeer" --guidance 7.5
    """
    loaded = _pipe_and_image(run, image, device)
    _edit(run, loaded, prompt, class_, n, steps, sampler, guidance, seed, out, strength=strength)


@edit.command("inpaint", flags=TRAINING_CLASSES)
@click.argument("run", type=click.Path())
@click.argument("image", type=click.Path())
@click.argument("prompt", required=False)
@click.option(
    "--mask", required=True, type=click.Path(), help="Image: white where to repaint, black to keep."
)
@click.option("--class", "class_", default=None, help="Class to paint (class-conditional runs).")
@click.option("--n", default=None, type=int, help="Fillings to draw (default 4; 1 for Stable Diffusion).")
@sampling_options
@click.option(
    "--resample-jumps",
    default=0,
    show_default=True,
    type=click.IntRange(0, 100),
    help="RePaint (with --sampler ddpm): pass each stretch of --jump-length steps this many times, going "
    "back up by the forward process in between (Lugmayr et al. 2022; they use 10); 0: replacement only.",
)
@click.option(
    "--jump-length",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="RePaint: steps per jump.",
)
@click.option("--out", default="inpaint.png", show_default=True)
@click.option("--device", default="auto", show_default=True)
def inpaint(
    run,
    image,
    prompt,
    mask,
    class_,
    n,
    steps,
    sampler,
    guidance,
    seed,
    resample_jumps,
    jump_length,
    out,
    device,
) -> None:
    """Repaint the white region of MASK in IMAGE and keep the rest exactly: at every step the model's
    estimate takes the known pixels outside the mask, and the result is composited with them. With
    --resample-jumps, RePaint: the kept region of the noisy image is the image itself noised to each
    level, and the sampler goes back and forth so that the new region fits the kept one.

    \b
    Example:
      genlab edit inpaint runs/diffusion-mnist digit.png --mask lower_half.png --class 3
      genlab edit inpaint runs/diffusion-mnist digit.png --mask lower_half.png --sampler ddpm --steps 50
        --resample-jumps 5 --jump-length 5                                     # RePaint
      genlab edit inpaint SD_FOLDER photo.png "a red scarf" --mask scarf.png --guidance 7.5
    """
    from genlab.data import load_image
    from genlab.data.images import image_size

    # Image and mask are cropped and resized to the model's size alike, so they must start alike too:
    # a mask of another size (or shape) would mark other pixels than the ones it was drawn on.
    if image_size(mask) != image_size(image):
        (mw, mh), (iw, ih) = image_size(mask), image_size(image)
        raise GenlabError(
            f"the mask {mask} is {mw}x{mh} pixels but the image {image} is {iw}x{ih}; "
            "draw the mask at the size of the image"
        )
    loaded = _pipe_and_image(run, image, device)
    keep = (load_image(mask, loaded[2].shape[-1], 1) < 0.5).float()[None]
    if keep.all():
        raise GenlabError(f"the mask {mask} has no white pixels: nothing to repaint")
    repaint = dict(resample_jumps=resample_jumps, jump_length=jump_length) if resample_jumps else {}
    _edit(run, loaded, prompt, class_, n, steps, sampler, guidance, seed, out, keep=keep, **repaint)


@edit.command("inpaint-eval", flags={"judge": "--classifier"})
@click.argument("run", type=click.Path())
@click.option(
    "--classifier", required=True, type=click.Path(), help="A classifier run of the data: the judge."
)
@click.option(
    "--mask",
    default="bottom",
    show_default=True,
    type=click.Choice(["bottom", "top", "left", "right", "center"]),
    help="The region inpainted: a half of the image, or the center square of half the side.",
)
@click.option("--n", default=200, show_default=True, type=int, help="Held-out images inpainted.")
@click.option("--steps", default=50, show_default=True, type=click.IntRange(min=1), help="DDPM steps.")
@click.option(
    "--resample-jumps",
    default="0,5",
    show_default=True,
    help="The methods compared: 0 is replacement, r >= 1 RePaint with r passes per jump.",
)
@click.option("--jump-length", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", default=None, help="JSON to write (default: RUN/inpainting.json).")
@click.option("--device", default="auto", show_default=True)
def inpaint_eval(run, classifier, mask, n, steps, resample_jumps, jump_length, seed, out, device) -> None:
    """Measure inpainting on held-out images of RUN's data with MASK's region removed: the share the
    classifier still recognises as the image's class, and the seam where the new region meets the kept
    one (beside the real images'), for replacement and for RePaint (Lugmayr et al. 2022).

    \b
    Example:
      genlab edit inpaint-eval runs/diffusion-mnist --classifier runs/classifier-mnist --mask bottom
        --n 200 --steps 50 --resample-jumps 0,1,5 --jump-length 5
    """
    from pathlib import Path

    from genlab import rundir
    from genlab.classification.evaluate import load_classifier_run
    from genlab.cli.common import number_list
    from genlab.data import DataConfig, load_splits
    from genlab.evaluation.inpainting import inpainting_report
    from genlab.nn.pretrained import config_from_dict

    pipe, text = _diffusion_pipeline(run, device)
    if text or getattr(pipe, "upscale", 0):
        raise GenlabError(f"{run}: inpaint-eval measures a class-conditional or unconditional image model")
    judge = load_classifier_run(classifier)[0]
    config = rundir.read_config(run)
    data = config_from_dict(DataConfig, config.get("data", {}), f"{run}/config.json 'data'")
    _, val = load_splits(data.name, data.split_seed, data.val_fraction, data.image_size)
    methods = number_list(resample_jumps, "--resample-jumps")
    report = inpainting_report(pipe, judge, val, mask, n, steps, methods, jump_length, seed, log=echo)
    path = rundir.atomic_write_json(
        Path(out) if out else Path(run) / "inpainting.json", {"run": run, **report}
    )
    for row in report["rows"]:
        parts = [f"recognised {row['recognised']:.1%}"]
        parts += [f"seam {row['seam']:.3f}"] if "seam" in row else []
        parts += [f"{row['nfe']} model calls per image"] if "nfe" in row else []
        click.echo(f"{row['method']}: " + ", ".join(parts))
    click.echo(f"wrote {path}")


@edit.command("upscale")
@click.argument("run", type=click.Path())
@click.argument("images", nargs=-1, type=click.Path())
@click.option(
    "--base",
    default=None,
    type=click.Path(),
    help="A base diffusion run whose samples are upscaled: the cascade base -> upscaler.",
)
@click.option("--prompt", default=None, help="Prompt of a text-to-image --base.")
@click.option("--class", "class_", default=None, help="Class to draw (class-conditional runs).")
@click.option("--n", default=8, show_default=True, type=int, help="Images the --base draws.")
@sampling_options
@click.option("--out", default="upscaled.png", show_default=True)
@click.option("--device", default="auto", show_default=True)
def upscale(run, images, base, prompt, class_, n, steps, sampler, guidance, seed, out, device) -> None:
    """Enlarge IMAGES, or the samples of a --base run, with the super-resolution diffusion model RUN
    (`genlab train diffusion --upscale 2|4`): a cascade as in Ho et al. (2022). Writes the small images
    (enlarged blockily) above their upscaled versions.

    \b
    Examples:
      genlab edit upscale runs/upscale-mnist small_digit.png
      genlab edit upscale runs/upscale-mnist --base runs/diffusion-mnist-14 --class 7 --n 8
    """
    import torch
    import torch.nn.functional as F

    from genlab.data import load_image, save_grid

    upscaler, _ = _diffusion_pipeline(run, device)
    if not getattr(upscaler, "upscale", 0):
        raise GenlabError(f"{run} is not an upscaler; train one with genlab train diffusion --upscale 2")
    if bool(images) == bool(base):
        raise GenlabError("give either IMAGES to upscale or --base RUN to sample them from, not both")
    if n < 1:
        raise GenlabError(f"--n must be at least 1 (got {n})")
    channels, side = upscaler.image_shape
    small = side // upscaler.upscale
    g = torch.Generator().manual_seed(seed)
    if base:
        low = _sample_base(base, prompt, class_, n, steps, sampler, guidance, g, device)
        if tuple(low.shape[1:]) != (channels, small, small):
            raise GenlabError(
                f"{base} makes {tuple(low.shape[1:])} images; {run} upscales {channels}x{small}x{small} ones"
            )
    else:
        low = torch.stack([load_image(p, small, channels) for p in images])
    labels = None
    if class_ is not None and upscaler.num_classes:
        labels = torch.tensor([upscaler.class_index(class_)])
    result = upscaler(
        num_images=len(low),
        class_labels=labels,
        num_inference_steps=steps,
        guidance_scale=guidance,
        sampler=sampler,
        generator=g,
        lowres=low,
    )
    blocky = F.interpolate(low, size=(side, side), mode="nearest")
    path = save_grid(out, torch.cat([blocky, result.tensors]), nrow=len(low))
    echo(f"{len(low)} images {small}x{small} -> {side}x{side}: {path}")


def _sample_base(base, prompt, class_, n, steps, sampler, guidance, generator, device):
    """n images from the diffusion run ``base`` (a prompt for a text run, or a class)."""
    import torch

    pipe, text = _diffusion_pipeline(base, device)
    settings = dict(num_inference_steps=steps, guidance_scale=guidance, sampler=sampler, generator=generator)
    if text:
        if prompt is None:
            raise GenlabError(f"{base} is a text-to-image run: give --prompt")
        return pipe(prompt=prompt, num_images=n, **settings).tensors
    labels = torch.tensor([pipe.class_index(class_)]) if class_ is not None and pipe.num_classes else None
    return pipe(num_images=n, class_labels=labels, **settings).tensors
