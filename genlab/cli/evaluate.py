"""`genlab eval`: measure what a trained generator makes, and `genlab data floor`: what real data scores."""

from __future__ import annotations

from pathlib import Path

import click

from genlab.cli import cli
from genlab.cli.common import SAMPLER_NAMES, echo, number_list, precision_option, sampling_options
from genlab.cli.data import data

METRIC_NAMES = ("accuracy", "fid", "kid", "pr", "coverage", "memorization")
TEXT_METRIC_NAMES = ("adherence", "fid", "kid", "pr", "memorization")  # + clip with --clip RUN
FEATURES_HELP = (
    "Features for FID/KID/precision-recall: 'auto' (a classifier of the run's dataset, trained once and "
    "cached), 'inception' (pip install 'genlab[inception]'), or a classifier run. Default: the --classifier "
    "run when one is given, else auto."
)


@cli.command("eval")
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
    help=f"Comma-separated subset; default {','.join(METRIC_NAMES)} (text-to-image: "
    f"{','.join(TEXT_METRIC_NAMES)}, and clip with --clip).",
)
@click.option(
    "--prompts",
    default="val",
    show_default=True,
    help="Text-to-image: 'val' (validation captions), 'single' (the single-object ones), or a file of "
    "prompts, one per line.",
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

    \b
    Examples:
      genlab eval runs/diffusion-mnist --n 500 --steps 20
      genlab eval runs/diffusion-mnist --metrics fid --n 250 --sweep-steps 5,10,20,50
      genlab eval runs/diffusion-mnist --classifier runs/classifier-mnist --features inception
    """
    from genlab import rundir
    from genlab.data import DataConfig, load_splits
    from genlab.errors import GenlabError
    from genlab.evaluation.evaluation import FEATURE_METRICS, EvalConfig, evaluate_generator
    from genlab.evaluation.features import classifier_extractor, resolve_extractor
    from genlab.metrics.html import write_report
    from genlab.nn.pretrained import config_from_dict
    from genlab.pipelines import load_pipeline

    config = rundir.read_config(run)
    gan = config.get("kind") == "gan"
    if not gan:
        config = rundir.read_config(run, kind="diffusion")
    cond = config.get("diffusion", {}).get("cond")
    text = cond == "text"
    conditional = cond == "class" or config.get("model", {}).get("num_classes", 0) > 0
    if metrics is None:
        names = METRIC_NAMES if conditional else tuple(m for m in METRIC_NAMES if m != "accuracy")
        metrics = ",".join(TEXT_METRIC_NAMES + (("clip",) if clip_run else ())) if text else ",".join(names)
    wanted = tuple(m.strip() for m in metrics.split(",") if m.strip())
    sweep = number_list(sweep_steps, "--sweep-steps")
    samplers = (
        SAMPLER_NAMES if sweep_samplers == "all" else tuple(s.strip() for s in sweep_samplers.split(","))
    )
    bad = sorted(set(samplers) - set(SAMPLER_NAMES))
    if bad:
        raise GenlabError(
            f"unknown --sweep-samplers {', '.join(bad)}; choose from {', '.join(SAMPLER_NAMES)}"
        )
    if gan:  # one generator pass: steps, sampler and guidance do not apply
        if sweep:
            raise GenlabError("--sweep-steps applies to diffusion runs; a GAN makes an image in one pass")
        steps, sampler, guidance = 1, "generator", 1.0
    cfg = EvalConfig(n, steps, sampler, guidance, seed, wanted, sweep, samplers)
    pipe = load_pipeline(run, device=device, precision=precision)
    data_cfg = config_from_dict(DataConfig, rundir.read_config(run).get("data", {}), f"{run}/config.json")
    train, val = load_splits(data_cfg.name, data_cfg.split_seed, data_cfg.val_fraction, data_cfg.image_size)

    judge_extractor = classifier_extractor(classifier) if classifier else None
    extractor = None
    if set(wanted) & FEATURE_METRICS or sweep:
        spec = features or (classifier if classifier else "auto")
        extractor = (
            judge_extractor
            if spec == classifier
            else resolve_extractor(spec, data_cfg, progress=not no_progress, log=echo)
        )
    judge = None
    if set(wanted) & {"accuracy", "coverage"}:
        source = judge_extractor or extractor or resolve_extractor("auto", data_cfg, log=echo)
        judge = source.classifier
        if judge is None:
            raise GenlabError("accuracy/coverage need a classifier: pass --classifier RUN")

    out_path = Path(out) if out else Path(run) / "eval.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    prefix = out_path.stem
    prompt_list = _prompts(prompts, val, n) if text else None
    clip = None
    if clip_run:
        from genlab.clip.model import CLIP

        clip = CLIP.from_pretrained(clip_run)
    how = "one generator pass" if gan else f"{sampler}, {steps} steps, guidance {guidance}"
    echo(f"sampling {cfg.n} images ({how}, seed {seed})")
    report = evaluate_generator(
        pipe, train, val, extractor, judge, cfg, out_path.parent, prefix, echo, prompt_list, clip
    )
    report = {"run": str(run), "data": data_cfg.name, **report}
    if not gan:  # the forward passes' precision, "auto" resolved for the device sampled on
        from genlab.nn.precision import resolve_precision

        report["precision"] = resolve_precision(precision, next(pipe.network.parameters()).device)
    if judge_extractor is not None:
        report["classifier"] = str(classifier)
        report["classifier_val_acc"] = judge_extractor.val_accuracy
    if gan:
        from genlab.gan.plots import plot_gan_training

        curve = plot_gan_training(
            rundir.read_metrics(run), out_path.parent / f"{prefix}_training.png", config.get("class_names")
        )
    else:
        from genlab.metrics.plots import plot_diffusion_training

        curve = plot_diffusion_training(
            rundir.read_metrics(run), out_path.parent / f"{prefix}_training.png", config.get("class_names")
        )
    if curve is not None:
        report["pictures"]["training"] = curve.name
    rundir.atomic_write_json(out_path, report)
    page = write_report(out_path.with_suffix(".html"), report, f"genlab evaluation of {run}")
    _print_report(report)
    click.echo(f"wrote {out_path} and {page}")


def _prompts(spec: str, val, n: int) -> list[str]:
    """``n`` prompts: validation captions spread over the split (``single``: single-object ones only, as
    far as the dataset can tell), or the lines of a file, cycled."""
    from genlab.errors import GenlabError

    if spec in ("val", "single"):
        captions = val.captions
        if spec == "single":
            from genlab.metrics.adherence import single_object_prompts

            captions = single_object_prompts(captions)
            if not captions:
                raise GenlabError("--prompts single: this dataset has no single-object captions (shapes has)")
    else:
        path = Path(spec)
        if not path.is_file():
            raise GenlabError(f"--prompts {spec!r} is neither 'val', 'single' nor a file of prompts")
        captions = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not captions:
            raise GenlabError(f"--prompts file {spec} has no prompts (one per line)")
    if len(captions) >= n:
        idx = [round(i * (len(captions) - 1) / max(1, n - 1)) for i in range(n)]
        return [captions[i] for i in idx]
    return [captions[i % len(captions)] for i in range(n)]


def _sampling(report: dict) -> str:
    if report["sampler"] == "generator":
        return "one generator pass"
    return f"{report['sampler']} {report['steps']} steps, guidance {report['guidance_scale']}"


def _print_report(report: dict) -> None:
    if "adherence" in report:
        a = report["adherence"]
        parts = ", ".join(f"{k} {v:.1%}" for k, v in a["per_attribute"].items())
        click.echo(
            f"prompt adherence (scene read back from the pixels): all attributes right in {a['all']:.1%} of "
            f"{a['checked']} single-object samples ({parts})"
        )
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
    from genlab.data import DataConfig, load_splits
    from genlab.evaluation.evaluation import real_data_floor
    from genlab.evaluation.features import resolve_extractor

    cfg = DataConfig(name=name, split_seed=seed, image_size=image_size)
    train, val = load_splits(cfg.name, cfg.split_seed, cfg.val_fraction, cfg.image_size)
    extractor = resolve_extractor(features, cfg, log=echo)
    result = real_data_floor(train, val, extractor, n)
    fid, kid, pr = result["fid"], result["kid"], result["pr"]
    click.echo(f"real {name}: {n} training images against {len(val)} validation images")
    click.echo(f"features: {extractor.name}")
    click.echo(
        f"FID {fid['value']:.3f}, KID {kid['value']:.5f} +- {kid['std']:.5f}, "
        f"precision {pr['precision']:.3f}, recall {pr['recall']:.3f} (k=3)"
    )
