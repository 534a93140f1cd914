"""`genlab sample`: draw images from a trained diffusion run."""

from __future__ import annotations

from pathlib import Path

import click

from genlab.cli import cli
from genlab.cli.common import FINITE, load_guide, precision_option, sampling_options


@cli.command(
    "sample",
    flags={"height": "--size", "width": "--size", "size": "--size", "noise_timesteps": "train ... --noisy"},
)
@click.argument("run", type=click.Path())
@click.argument("prompts", nargs=-1)
@click.option("--negative-prompt", default=None, help="Text-to-image: what the images should not show.")
@click.option(
    "--attention-maps", default=None, help="Text-to-image: also write per-token cross-attention maps (PNG)."
)
@click.option(
    "--class", "class_", default=None, help="Class to draw: a name or index, a list 1,2,3, or 'all'."
)
@click.option(
    "--n", default=None, type=int, help="How many images per prompt (default 16; 1 for Stable Diffusion)."
)
@click.option(
    "--size", default=None, help="Stable Diffusion: WIDTHxHEIGHT in pixels, divisible by 8 (e.g. 512x512)."
)
@sampling_options
@click.option(
    "--eta",
    default=None,
    type=FINITE,
    help="ddim, euler-ancestral, dpmpp-2m-sde: noise, 0 none, 1 ancestral.",
)
@click.option("--s-churn", default=None, type=FINITE, help="heun: EDM's stochastic churn S_churn (0: none).")
@click.option("--s-tmin", default=None, type=FINITE, help="heun: churn only at sigma >= S_tmin.")
@click.option("--s-tmax", default=None, type=FINITE, help="heun: churn only at sigma <= S_tmax.")
@click.option("--s-noise", default=None, type=FINITE, help="Stochastic samplers: scale of the fresh noise.")
@click.option(
    "--guidance-type",
    default="cfg",
    show_default=True,
    type=click.Choice(["cfg", "classifier", "clip"]),
    help="Besides classifier-free guidance (--guidance): the gradient of a noise-aware classifier "
    "(Dhariwal & Nichol) or CLIP (GLIDE) given by --guide, scaled by --guide-scale.",
)
@click.option(
    "--guide", default=None, help="The guide's run: `train classifier --noisy` or `train clip --noisy`."
)
@click.option(
    "--guide-scale", default=1.0, show_default=True, type=FINITE, help="Scale of the guide's gradient."
)
@click.option("--out", default="samples.png", show_default=True, help="PNG grid to write.")
@click.option("--nrow", default=None, type=int, help="Images per row of the grid.")
@click.option(
    "--trajectory", default=None, help="Also write the denoising trajectory: .gif animation or .png strip."
)
@click.option("--frames", default=None, type=int, help="Video: frames per clip (default: the run's).")
@click.option("--first-frame", default=None, help="Video: an image the clips start from (image-to-video).")
@click.option(
    "--factorized/--one-stage", default=None, help="Video: a first frame, then the rest (Emu Video)."
)
@click.option(
    "--past-guidance/--no-past-guidance",
    default=None,
    help="Video, autoregressive: guide toward continuing the frames before (default: the run's).",
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@precision_option
def sample_cmd(
    run: str,
    prompts: tuple[str, ...],
    negative_prompt: str | None,
    attention_maps: str | None,
    class_: str | None,
    n: int | None,
    size: str | None,
    steps: int,
    sampler: str,
    guidance: float,
    eta: float | None,
    s_churn: float | None,
    s_tmin: float | None,
    s_tmax: float | None,
    s_noise: float | None,
    guidance_type: str,
    guide: str | None,
    guide_scale: float,
    seed: int,
    out: str,
    nrow: int | None,
    trajectory: str | None,
    frames: int | None,
    first_frame: str | None,
    factorized: bool | None,
    past_guidance: bool | None,
    device: str,
    precision: str,
) -> None:
    """Sample images from the diffusion model or GAN in RUN; a text-to-image run takes one or more PROMPTS
    and says how it read words its captions never used (as [UNK], or with a word-minilm tokenizer as the
    known word MiniLM finds nearest in meaning). RUN may also be a Stable Diffusion checkpoint folder
    (diffusers' layout, or its Hugging Face cache entry).

    \b
    Examples:
      genlab sample runs/diffusion-mnist --class 7 --steps 20 --sampler dpmpp-2m --guidance 3 --out sevens.png
      genlab sample runs/diffusion-mnist --class all --n 40 --out digits.png
      genlab sample runs/diffusion-mnist --sampler ddim --eta 0 --steps 50 --trajectory traj.gif
      genlab sample runs/diffusion-shapes --n 64 --sampler heun --steps 10
      genlab sample runs/t2i-shapes "a small red circle at the top left" --negative-prompt "blue" --n 8
      genlab sample runs/t2i-shapes "a large green square on the right" --attention-maps maps.png
      genlab sample runs/gan-mnist --n 64 --seed 1 --out gan.png
      genlab sample runs/video-moving-shapes "a red circle moving right" --frames 16 --out clip.gif
      genlab sample SD_FOLDER "a photograph of an astronaut riding a horse" --seed 0 --steps 20
        --sampler dpmpp-2m --guidance 7.5 --negative-prompt "blue" --size 512x512
    """
    import time

    import torch

    from genlab.data import save_grid
    from genlab.diffusion.stable_diffusion import is_checkpoint, parse_size
    from genlab.errors import GenlabError
    from genlab.pipelines import kind_of, load_pipeline

    if trajectory is not None and Path(trajectory).suffix.lower() not in (".gif", ".png"):
        raise GenlabError(f"--trajectory must end in .gif or .png (got {trajectory})")
    if (guidance_type == "cfg") != (guide is None):
        raise GenlabError(
            "--guide RUN goes with --guidance-type classifier or clip"
            if guidance_type == "cfg"
            else f"--guidance-type {guidance_type} needs --guide RUN, the noise-aware model to follow"
        )
    options = dict(eta=eta, s_churn=s_churn, s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise)
    kwargs = {name: value for name, value in options.items() if value is not None}
    kind = kind_of(run)
    stable = is_checkpoint(run)
    if size is not None:
        if not stable:
            raise GenlabError(
                "--size applies to Stable Diffusion checkpoints; a genlab run makes its own size"
            )
        kwargs["height"], kwargs["width"] = parse_size(size)
    n = n if n is not None else 1 if stable else 4 if kind == "video" else 16
    if kind == "video":
        if guidance_type != "cfg":
            raise GenlabError(f"{run} is a video run: --guidance-type {guidance_type} guides images")
        if negative_prompt is not None or attention_maps is not None:
            raise GenlabError(f"{run} is a video run: --negative-prompt and --attention-maps are for images")
        from genlab.cli.sample_video import sample_video

        kwargs.update({} if factorized is None else {"factorized": factorized})
        kwargs.update({} if past_guidance is None else {"past_guidance": past_guidance})
        video = dict(prompts=prompts, class_=class_, n=n, frames=frames, first_frame=first_frame, nrow=nrow)
        return sample_video(
            run, device, precision, steps, sampler, guidance, seed, out, trajectory, kwargs, **video
        )
    if any(v is not None for v in (frames, first_frame, factorized, past_guidance)):
        raise GenlabError(
            f"{run} makes images: --frames, --first-frame, --factorized and --past-guidance are for "
            "video runs"
        )
    gan = kind == "gan"
    if gan and (prompts or negative_prompt or attention_maps or trajectory or kwargs):
        raise GenlabError(f"{run} is a GAN: it takes --class, --n, --seed and --out, no prompts or sampler")
    if kind == "text-to-image":
        if class_ is not None:
            raise GenlabError(f"{run} is a text-to-image run: give a prompt instead of --class")
        if not prompts:
            raise GenlabError(
                f'{run} is a text-to-image run: give a prompt, e.g. genlab sample {run} "a red circle"'
            )
        pipe = load_pipeline(run, device=device, precision=precision)
        if guidance_type == "classifier":
            raise GenlabError(f"{run} is a text-to-image run: it is guided by CLIP (--guidance-type clip)")
        if guidance_type == "clip":
            clip = load_guide(guide, next(pipe.model.parameters()).device)
            if clip.kind != "clip":
                raise GenlabError(f"--guide {guide} is a {clip.kind} run; CLIP guidance needs a CLIP run")
            kwargs.update(clip=clip, clip_scale=guide_scale)
        _sample_text(
            pipe,
            prompts=prompts,
            negative_prompt=negative_prompt,
            maps_path=attention_maps,
            n=n,
            steps=steps,
            sampler=sampler,
            guidance=guidance,
            seed=seed,
            out=out,
            nrow=nrow,
            trajectory=trajectory,
            kwargs=kwargs,
            progress=stable,
        )
        return
    if prompts or negative_prompt is not None or attention_maps is not None:
        raise GenlabError(
            f"{run} is not a text-to-image run (trained without --cond text): it takes no prompt"
        )
    pipe = load_pipeline(run, device=device, precision=precision)
    labels = None
    names, num_classes, class_of = pipe.class_names, pipe.num_classes, pipe.class_index
    if guidance_type == "classifier":
        if gan:
            raise GenlabError(f"{run} is a GAN: classifier guidance steers a diffusion sampler")
        from genlab.pipelines.diffusion import class_index

        classifier = load_guide(guide, next(pipe.unet.parameters()).device)
        if classifier.kind != "classifier":
            raise GenlabError(
                f"--guide {guide} is a {classifier.kind} run; classifier guidance needs a classifier"
            )
        kwargs.update(classifier=classifier, classifier_scale=guide_scale)
        if not pipe.num_classes:  # an unconditional model: the classes are the guide's
            num_classes = classifier.config.num_classes
            names = list(classifier.config.class_names) or None
            class_of = lambda name: class_index(name, names, num_classes)  # noqa: E731
        if class_ is None:
            raise GenlabError("--guidance-type classifier needs --class: the classes to guide toward")
    elif guidance_type == "clip":
        raise GenlabError(f"{run} is not a text-to-image run: CLIP guidance follows a prompt")
    if class_ is not None:
        if num_classes == 0:
            raise GenlabError(f"{run} was trained without classes; sample it without --class")
        if class_ == "all":
            per = max(1, n // num_classes)
            labels = torch.arange(num_classes).repeat_interleave(per)
            n, nrow = len(labels), nrow or per
        else:
            labels = torch.tensor([class_of(c.strip()) for c in class_.split(",") if c.strip()])
    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    result = pipe(
        n, labels, steps, guidance, sampler, generator=g, return_trajectory=trajectory is not None, **kwargs
    )
    seconds = time.perf_counter() - t0
    captions = None
    if result.class_labels is not None:
        captions = [names[int(k)] if names else str(int(k)) for k in result.class_labels]
    path = save_grid(out, result.tensors, captions, nrow=nrow)
    how = "one generator pass" if gan else f"{sampler} with {steps} steps"
    click.echo(f"{n} images, {how}, {seconds:.1f} s ({1000 * seconds / n:.0f} ms/image): {path}")
    if trajectory is not None:
        _write_trajectory(trajectory, result.trajectory, nrow)


def _write_trajectory(path: str, frames, nrow: int | None) -> None:
    """The denoising trajectory as an animated GIF (all images) or a PNG strip (frames side by side)."""
    from genlab.data import save_gif, save_grid
    from genlab.diffusion.pictures import trajectory_strip

    if path.lower().endswith(".gif"):
        written = save_gif(path, frames, nrow=nrow)
    else:
        written = save_grid(path, trajectory_strip(frames), nrow=min(9, len(frames)))
    click.echo(f"trajectory: {written}")


def _sample_text(
    pipe,
    *,
    prompts,
    negative_prompt,
    maps_path,
    n,
    steps,
    sampler,
    guidance,
    seed,
    out,
    nrow,
    trajectory,
    kwargs,
    progress: bool = False,
) -> None:
    """`genlab sample` for a text-to-image run: a grid with a row of N images per prompt; ``progress``
    shows a bar of the sampler's steps (Stable Diffusion's take seconds each on a CPU)."""
    import time
    import warnings

    import torch
    from tqdm import tqdm

    from genlab.data import save_grid
    from genlab.diffusion.attention_maps import save_attention_maps

    g = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    bar = tqdm(total=steps, desc="sampling", unit="step", disable=not progress)
    if progress:
        kwargs = {**kwargs, "on_step": lambda i, total, image: bar.update(1) if i > 0 else None}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pipe(
            list(prompts),
            negative_prompt,
            steps,
            guidance,
            sampler,
            generator=g,
            num_images=n,
            return_trajectory=trajectory is not None,
            return_attention_maps=maps_path is not None,
            **kwargs,
        )
    bar.close()
    for warning in caught:
        click.echo(f"warning: {warning.message}")
    seconds = time.perf_counter() - t0
    path = save_grid(out, result.tensors, result.prompts, nrow=nrow or n)
    total = len(result.prompts)
    click.echo(
        f"{total} images of {len(prompts)} prompt(s), {sampler} with {steps} steps, guidance {guidance}"
        + (f", negative prompt {negative_prompt!r}" if negative_prompt else "")
        + f", {seconds:.1f} s: {path}"
    )
    for prompt in dict.fromkeys(prompts):  # words the model never saw, and what it made of them
        read = pipe.read_as(prompt)
        if read is not None:
            click.echo(f"read {prompt!r} as {read!r}")
    if trajectory is not None:
        _write_trajectory(trajectory, result.trajectory, nrow or n)
    if maps_path is not None:
        written = save_attention_maps(maps_path, result, n)
        click.echo(f"cross-attention maps (one row per prompt, one map per token): {written}")
