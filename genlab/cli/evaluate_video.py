"""`genlab eval RUN` for a video run: clips for held-out prompts or every class, scored from their pixels and
in feature space (genlab.video.evaluation), printed and written to RUN/eval.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from genlab.cli.common import echo
from genlab.errors import GenlabError

VIDEO_N = 200  # clips drawn unless --n says otherwise: the issue scores 200 held-out prompts

# `genlab eval`'s options of image runs that a video run's evaluation has no use for, and why
NOT_FOR_VIDEO = {
    "classifier": "its clips are read by its data's own frame and clip classifiers",
    "features": "FVD and per-frame FID use its data's own clip and frame classifiers",
    "metrics": "it reports every video metric",
    "prompts": "a text run is prompted with the held-out captions",
    "clip_run": "it has no CLIP score",
    "sweep_steps": "it has no step sweep",
    "sweep_samplers": "it has no step sweep",
}


def eval_video(ctx: click.Context, run: str) -> None:
    """Evaluate the video run ``run`` with the options ``ctx`` of `genlab eval` holds."""
    from genlab import rundir
    from genlab.data import DataConfig
    from genlab.nn.precision import resolve_precision
    from genlab.nn.pretrained import config_from_dict
    from genlab.pipelines import load_pipeline
    from genlab.video.evaluation import evaluate_video_run

    p = ctx.params
    for name, why in NOT_FOR_VIDEO.items():
        if ctx.get_parameter_source(name) != ParameterSource.DEFAULT:
            flag = next(o for q in ctx.command.params if q.name == name for o in q.opts if o.startswith("--"))
            raise GenlabError(f"{flag} does not apply to a video run: {why}")
    n = VIDEO_N if ctx.get_parameter_source("n") == ParameterSource.DEFAULT else p["n"]
    data = config_from_dict(DataConfig, rundir.read_config(run).get("data", {}), f"{run}/config.json")
    pipe = load_pipeline(run, device=p["device"], precision=p["precision"])
    out = Path(p["out"]) if p["out"] else Path(run) / "eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "run": str(run),
        **evaluate_video_run(
            pipe,
            data,
            n,
            p["steps"],
            p["sampler"],
            p["guidance"],
            p["seed"],
            preview=out.parent / f"{out.stem}_clips.png",
            progress=not p["no_progress"],
            log=echo,
        ),  # fmt: skip
        "precision": resolve_precision(p["precision"], next(pipe.network.parameters()).device),
    }
    rundir.atomic_write_json(out, report)
    print_video_report(report)
    shown = f" and {out.parent / report['pictures']['clips']}" if "pictures" in report else ""
    click.echo(f"wrote {out}{shown}")


def _floor(value: dict, what: str) -> str:
    if "floor_real_train" not in value:
        return ""
    return f" (floor, {value['generated']} real training {what}: {value['floor_real_train']:.3f})"


def print_video_report(report: dict) -> None:
    """The numbers of a video run's evaluation, one line each."""
    asked = {"text": "held-out prompts", "class": "every class in turn", "none": "no condition"}
    click.echo(
        f"{report['n']} clips of {report['frames']} frames for {asked[report['cond']]} ({report['sampler']} "
        f"{report['steps']} steps, guidance {report['guidance_scale']}, seed {report['seed']}): "
        f"{report['sampling_seconds']:.1f} s, {report['seconds_per_clip']:.3f} s per clip"
    )
    if "motion_adherence" in report:
        a = report["motion_adherence"]
        parts = ", ".join(
            f"{k} {a[k]:.0%}" for k in ("color", "shape", "size", "direction", "speed") if k in a
        )
        click.echo(
            f"motion adherence (read back from the pixels): direction, colour and shape right in "
            f"{a['motion']:.1%} of {a['count']} clips; everything in {a['all']:.1%} ({parts}; "
            f"one object in every frame {a['one_object']:.0%})"
        )
    what = "the digit" if report["data"] == "moving-mnist" else "the colour and shape"
    for key, shows, unit in (
        ("recognised_frames", what, "frames"),
        ("recognised_clips", "the digit" if report["data"] == "moving-mnist" else "the direction", "clips"),
    ):
        if key in report:
            r = report[key]
            click.echo(
                f"{unit} recognised as {shows} asked for: {r['value']:.1%} of {r['generated']} "
                f"(judge: {r['classifier']})"
            )
    for key, name, unit in (("fvd", "FVD", "clips"), ("fid_frames", "per-frame FID", "frames")):
        v = report[key]
        click.echo(
            f"{name}: {v['value']:.3f}{_floor(v, unit)} ({v['real']} real held-out vs {v['generated']} "
            f"generated {unit}, features: {v['features']})"
        )
