"""`genlab eval`: measure what a trained generator makes, and `genlab data floor`: what real data scores."""

from __future__ import annotations

import click

from genlab.cli import cli
from genlab.cli.common import SAMPLER_NAMES, echo, load_guide, number_list, precision_option, sampling_options
from genlab.cli.data import data
from genlab.errors import GenlabError

FEATURES_HELP = (
    "Features for FID/KID/precision-recall: 'auto' (a classifier of the run's dataset, trained once and "
    "cached), 'inception' (pip install 'genlab[inception]'), or a classifier run. Default: the --classifier "
    "run when one is given, else auto."
)


# Parameters of the library that this command sets under other names, or that its messages name as hints
EVAL_FLAGS = {
    "clip": "--clip RUN",
    "classifier": "--classifier RUN",
    "judge": "--classifier RUN",
    "extractor": "--features",
    "cond": "--cond",  # how `genlab train diffusion` makes a class-conditional run
    "guide": "--guide RUN",
    "noise_timesteps": "train ... --noisy",
}


@cli.command("eval", flags=EVAL_FLAGS)
@click.argument("run", type=click.Path())
@click.option(
    "--classifier",
    default=None,
    type=click.Path(),
    help="A classifier run that judges the samples "
    "(accuracy, coverage). Default: the auto feature extractor, itself a classifier of the data.",
)
@click.option("--features", default=None, help=FEATURES_HELP)
@click.option(
    "--n", default=500, show_default=True, type=int, help="Samples in all (split evenly over classes)."
)
@sampling_options
@precision_option
@click.option(
    "--metrics",
    default=None,
    help="Comma-separated subset; default accuracy,fid,kid,pr,coverage,memorization (text-to-image: "
    "adherence,fid,kid,pr,memorization, and clip with --clip).",  # genlab.evaluation.run's defaults
)
@click.option(
    "--prompts",
    default="val",
    show_default=True,
    help="Text-to-image: 'val' (validation captions), 'single' (the single-object ones), 'paraphrase' (the "
    "single-object ones, and the same scenes in phrasings held out of training: adherence of both), or a "
    "file of prompts, one per line.",
)
@click.option("--clip", "clip_run", default=None, type=click.Path(), help="A CLIP run for the CLIP score.")
@click.option("--sweep-steps", default="", help="Also FID at these step counts, e.g. 5,10,20,50 (plot).")
@click.option(
    "--sweep-samplers",
    default="all",
    show_default=True,
    help=f"Samplers of the sweep: 'all' ({', '.join(SAMPLER_NAMES)}) or a comma-separated list.",
)
@click.option(
    "--guidance-sweep",
    default="",
    help="Fidelity against diversity (recall, FID) at these classifier-free guidance scales, e.g. 1,2,3,5 "
    "(plot eval_guidance.png).",
)
@click.option(
    "--guide",
    default=None,
    type=click.Path(),
    help="With --guide-scales: a noise-aware classifier (train classifier --noisy) or a noised CLIP "
    "(train clip --noisy) whose gradient guides the samples, in the same sweep.",
)
@click.option("--guide-scales", default="", help="Scales of the --guide for the sweep, e.g. 1,2,4,8.")
@click.option(
    "--out",
    default=None,
    help="JSON to write (default: RUN/eval.json); pictures and the HTML report go beside it.",
)
@click.option("--device", default="auto", show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bar while an extractor trains.")
def eval_cmd(
    run: str,
    classifier: str | None,
    features: str | None,
    n: int,
    steps: int,
    sampler: str,
    guidance: float,
    seed: int,
    precision: str,
    metrics: str | None,
    prompts: str,
    clip_run: str | None,
    sweep_steps: str,
    sweep_samplers: str,
    guidance_sweep: str,
    guide: str | None,
    guide_scales: str,
    out: str | None,
    device: str,
    no_progress: bool,
) -> None:
    """Sample N images from a diffusion or GAN run and score them: accuracy of the asked class, FID,
    KID, precision/recall (k=3), mode coverage and memorization. Writes RUN/eval.json, an HTML report
    RUN/eval.html with the pictures, and the pictures themselves (eval_*.png).

    FID and KID here use a classifier's penultimate features (by default a classifier of the run's own
    dataset, trained on first use and cached in $GENLAB_CACHE or ~/.cache/genlab): they compare runs
    judged on the same features, not numbers from papers, which use Inception (--features inception).
    Each number names its features and image counts. The FID floor is that of real training images.
    A video run: FVD, per-frame FID, recognition and motion adherence of --n clips (default 200).

    \b
    Examples:
      genlab eval runs/diffusion-mnist --n 500 --steps 20
      genlab eval runs/diffusion-mnist --metrics fid --n 250 --sweep-steps 5,10,20,50
      genlab eval runs/diffusion-mnist --classifier runs/classifier-mnist --features inception
      genlab eval runs/video-shapes --n 200 --steps 20
      genlab eval runs/mnist --n 300 --sampler ddpm --guidance-sweep 1,2,3,5 --guide runs/noisy-classifier
        --guide-scales 1,2,4,8                 # classifier-free against classifier guidance (curves)
    """
    from genlab.evaluation.run import RunEvalOptions, evaluate_run, read_run, run_eval_config
    from genlab.pipelines import kind_of, load_pipeline

    if kind_of(run) == "video":
        from genlab.cli.evaluate_video import eval_video

        return eval_video(click.get_current_context(), run)
    info = read_run(run)
    wanted = tuple(m.strip() for m in metrics.split(",") if m.strip()) if metrics is not None else None
    sweep = number_list(sweep_steps, "--sweep-steps")
    samplers = (
        SAMPLER_NAMES if sweep_samplers == "all" else tuple(s.strip() for s in sweep_samplers.split(","))
    )
    bad = sorted(set(samplers) - set(SAMPLER_NAMES))
    if bad:
        raise GenlabError(
            f"unknown --sweep-samplers {', '.join(bad)}; choose from {', '.join(SAMPLER_NAMES)}"
        )
    cfg = run_eval_config(
        info,
        wanted,
        clip=bool(clip_run),
        n=n,
        steps=steps,
        sampler=sampler,
        guidance_scale=guidance,
        seed=seed,
        sweep_steps=sweep,
        sweep_samplers=samplers,
        guidance_sweep=number_list(guidance_sweep, "--guidance-sweep", float),
        guide_scales=number_list(guide_scales, "--guide-scales", float),
    )
    if (guide is None) != (not cfg.guide_scales):
        raise GenlabError("--guide RUN and --guide-scales go together")
    pipe = load_pipeline(run, device=device, precision=precision)
    clip = None
    if clip_run:
        from genlab.clip.model import CLIP

        clip = CLIP.from_pretrained(clip_run)
    guide_model = None
    if guide is not None:
        if info.gan:
            raise GenlabError(f"{run} is a GAN: a guide steers a diffusion sampler")
        guide_model = load_guide(guide)
    if info.gan:
        from genlab.gan.plots import plot_gan_training as training_plot
    else:
        from genlab.metrics.plots import plot_diffusion_training as training_plot
    options = RunEvalOptions(
        classifier=classifier,
        features=features,
        prompts=prompts,
        out=out,
        precision=precision,
        progress=not no_progress,
        judge_name="the classifier given with --classifier",
    )
    report, path, page = evaluate_run(
        info, pipe, cfg, options, clip, training_plot, log=echo, guide=guide_model
    )
    _print_report(report)
    click.echo(f"wrote {path} and {page}")


def _sampling(report: dict) -> str:
    if report["sampler"] == "generator":
        return "one generator pass"
    return f"{report['sampler']} {report['steps']} steps, guidance {report['guidance_scale']}"


def _print_report(report: dict) -> None:
    for row in report.get("guidance", []):
        parts = [f"{k} {row[k]:.3f}" for k in ("fidelity", "fid", "precision", "recall") if k in row]
        click.echo(f"guidance {row['guidance']} at scale {row['scale']:g}: " + ", ".join(parts))
    for key, what, samples in (
        ("adherence", "prompt adherence (scene read back from the pixels)", "single-object samples"),
        ("adherence_paraphrase", "the same scenes in held-out phrasings", "samples"),
    ):
        if key in report:
            a = report[key]
            parts = ", ".join(f"{k} {v:.1%}" for k, v in a["per_attribute"].items())
            right = f"all attributes right in {a['all']:.1%} of {a['checked']} {samples}"
            click.echo(f"{what}: {right} ({parts})")
    if "clip" in report:
        c = report["clip"]
        click.echo(
            f"CLIP score {c['value']:.2f} (mismatched prompts: {c['mismatched']:.2f}), "
            f"{c['generated']} samples"
        )
    if "accuracy" in report:
        a = report["accuracy"]
        click.echo(
            f"classifier accuracy of class-conditional samples: {a['value']:.1%} ({a['generated']} samples, "
            f"{_sampling(report)}, "
            f"seed {report['seed']}; {report['sampling_seconds']:.0f} s; judge: {a['judge']})"
        )
        click.echo("per class: " + ", ".join(f"{k} {v:.0%}" for k, v in a["per_class"].items()))
    if "pr" in report:
        click.echo(f"precision {report['pr']['precision']:.3f}, recall {report['pr']['recall']:.3f} (k=3)")
    if "coverage" in report:
        c = report["coverage"]
        click.echo(
            f"modes covered {c['modes_covered']}/{c['num_classes']}, "
            f"normalized entropy {c['normalized_entropy']:.3f}"
        )
    if "memorization" in report:
        m = report["memorization"]
        click.echo(
            f"nearest training image: median distance {m['median_distance']:.2f} for samples, "
            f"{m['held_out_median_distance']:.2f} for held-out real images"
        )
    for key in ("fid", "kid"):
        if key in report:
            value = report[key]
            shown = f"{value['value']:.4f}" + (f" +- {value['std']:.4f}" if "std" in value else "")
            if "floor_real_train" in value:
                shown += (
                    f" (floor, {value['generated']} real training images: {value['floor_real_train']:.4f})"
                )
            click.echo(
                f"{key.upper()}: {shown} ({value['real']} real validation vs {value['generated']} generated "
                f"images, features: {value['features']})"
            )


@data.command("floor")
@click.argument("name")
@click.option("--n", default=500, show_default=True, type=int, help="Real training images to score.")
@click.option("--features", default="auto", show_default=True, help=FEATURES_HELP)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the train/validation split.")
@click.option("--image-size", default=None, type=int, help="Resize to this side (folder data: default 32).")
def data_floor(name: str, n: int, features: str, seed: int, image_size: int | None) -> None:
    """FID, KID and precision/recall of N real training images against the validation split: what a
    perfect generator scores with N samples, the floor to read `genlab eval` numbers against.

    \b
    Example:
      genlab data floor mnist --n 500
    """
    from genlab.data import DataConfig
    from genlab.evaluation.evaluation import dataset_floor

    result = dataset_floor(
        DataConfig(name=name, split_seed=seed, image_size=image_size), n, features, log=echo
    )
    fid, kid, pr = result["fid"], result["kid"], result["pr"]
    click.echo(f"real {name}: {n} training images against {fid['real']} validation images")
    click.echo(f"features: {fid['features']}")
    click.echo(
        f"FID {fid['value']:.3f}, KID {kid['value']:.5f} +- {kid['std']:.5f}, "
        f"precision {pr['precision']:.3f}, recall {pr['recall']:.3f} (k=3)"
    )
