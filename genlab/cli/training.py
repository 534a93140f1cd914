"""What every `genlab train KIND` does around its task: choose the run directory, start or resume the run
(holding a resume to the options the run was started with), train it, and report where the results are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from genlab.cli.common import (
    check_resume_options,
    echo,
    fresh_run_dir,
    run_options,
    train_config_from,
)
from genlab.errors import GenlabError


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
    return Trainer(task, cfg, out, resume=params["resume"], sections={"options": options}).train()
