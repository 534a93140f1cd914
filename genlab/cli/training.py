"""What every `genlab train KIND` does around its task: choose the run directory, start or resume the run
(holding a resume to the options the run was started with), train it, and report where the results are."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from genlab.cli.common import TRAIN_OPTIONS, echo, fresh_run_dir, is_main_process
from genlab.errors import GenlabError
from genlab.train.config import TrainConfig


def train_config_from(ctx: click.Context, params: dict[str, Any]) -> tuple[TrainConfig, dict[str, Any]]:
    """(TrainConfig from the options, the options the user typed explicitly: the overrides on --resume)."""
    fields = {field: params[field] for _, field, _ in TRAIN_OPTIONS}
    fields["progress"] = not params["no_progress"]
    explicit = {
        field: params[field]
        for _, field, _ in TRAIN_OPTIONS
        if ctx.get_parameter_source(field) == ParameterSource.COMMANDLINE
    }
    if params["no_progress"]:
        explicit["progress"] = False
    if "minutes" in explicit and "steps" not in explicit:
        fields["steps"] = None  # --minutes alone: the engine fits the schedule horizon to the budget
    return TrainConfig(**fields), explicit


def run_options(params: dict[str, Any]) -> dict[str, Any]:
    """The options of a `genlab train KIND` command that are not training settings (those are
    config.json's ``train``), as JSON: what config.json's ``options`` records of a new run."""
    skip = {field for _, field, _ in TRAIN_OPTIONS} | {"out", "resume", "no_progress"}
    return json.loads(json.dumps({k: v for k, v in params.items() if k not in skip}))


def check_resume_options(
    ctx: click.Context, options: dict[str, Any], recorded: dict[str, Any] | None, run: str
) -> None:
    """Refuse an option typed with --resume that differs from the value the run was started with: the
    run's model and data are fixed, so it could only be ignored. The same value again is fine (the
    whole command repeated with --resume)."""
    params = {p.name: p for p in ctx.command.params}
    for name, value in options.items():
        if name not in params or ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        given = _spelled(params[name], value)
        if recorded is None:
            raise GenlabError(
                f"{given}: {run} does not record the options it was started with (an older genlab, or a "
                "run made from Python), so they cannot be checked; drop the option to resume it"
            )
        if name not in recorded or recorded[name] != value:
            was = _spelled(params[name], recorded[name]) if name in recorded else "other options"
            raise GenlabError(
                f"{given} contradicts the run in {run}, started with {was}; drop the option to resume "
                "it, or start a new run"
            )


def _spelled(param: click.Parameter, value: Any) -> str:
    """``value`` of ``param`` as typed on the command line: "--widths 8,16", "--no-augment", "no --latent"."""
    flag = param.opts[0]
    if isinstance(param, click.Option) and param.is_flag:
        if param.secondary_opts:
            return flag if value else param.secondary_opts[0]
        return flag if value else f"no {flag}"
    return f"no {flag}" if value is None else f"{flag} {value}"


def _engine_log(ctx: click.Context) -> Callable[[str], None]:
    """The engine's messages as the command's user reads them: its parameters written as the options
    (genlab.cli.flags), printed once, above the progress bar."""
    from tqdm import tqdm

    from genlab.cli.flags import as_flags, flag_names

    names = flag_names(ctx.command, getattr(ctx.command, "flags", None))
    return lambda message: tqdm.write(as_flags(message, names)) if is_main_process() else None


def report_training(result, metrics_names: dict[str, str]) -> None:
    from genlab import rundir

    state = "stopped early (resume with --resume)" if result.interrupted else "finished"
    echo(f"{state} at step {result.step} after {result.seconds / 60:.1f} min")
    for key, label in metrics_names.items():
        if key in result.metrics:
            echo(f"{label}: {result.metrics[key]:.4f}")
    echo(f"run directory: {result.run_dir}")
    echo(
        f"  weights {result.run_dir / rundir.MODEL_FILE}, metrics {result.run_dir / rundir.METRICS_FILE}, "
        f"grids {result.run_dir / 'samples'}"
    )


def choose_run_dir(out: str | None, resume: bool, kind: str, data: str) -> str:
    """The run directory: --out, or for a new run without it a fresh runs/KIND-DATA[-N], created here."""
    if resume:
        if out is None:
            raise GenlabError("--resume needs --out RUN_DIR, the run to continue")
        return out
    if out is not None:
        return out
    name = data.split(":", 1)[-1].rstrip("/").split("/")[-1] or "data"
    return str(fresh_run_dir(f"runs/{kind}-{name}"))


def run_training(ctx: click.Context, params: dict[str, Any], kind: str, build: Callable, rebuild: Callable):
    """Start a new run with ``build(cfg)`` or resume one with ``rebuild(config)``, then train it.

    A new run records the command's options (besides the training settings, which config.json keeps in
    ``train``) as config.json's ``options``; a resume refuses an option typed again with another value,
    which it could only ignore: the run's model and data are fixed when it starts."""
    from genlab import rundir
    from genlab.train import Trainer, resolve_train_config, seed_step

    cfg, explicit = train_config_from(ctx, params)
    options = run_options(params)
    if params["resume"]:
        out = choose_run_dir(params["out"], True, kind, "")
        config = rundir.read_config(out, kind=kind)
        check_resume_options(ctx, options, config.get("options"), out)
        task = rebuild(config)
        cfg = resolve_train_config(out, explicit)
    else:
        seed_step(cfg.seed, -1)  # the initial weights depend on the seed alone
        task = build(cfg)
        out = choose_run_dir(params["out"], False, kind, params.get("data") or "data")
    echo(
        f"training {kind} on {task.data.name} ({len(task.train_data)} train / {len(task.val_data)} val "
        f"images, {sum(p.numel() for p in task.model.parameters()) / 1e6:.2f}M parameters) into {out}"
    )
    trainer = Trainer(
        task, cfg, out, resume=params["resume"], log=_engine_log(ctx), sections={"options": options}
    )
    return trainer.train()
