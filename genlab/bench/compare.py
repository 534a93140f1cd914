"""Trained generators side by side: what each cost to train, what a denoiser call and an image cost to
sample (FLOPs counted, time measured interleaved in one process), and the quality `genlab eval` measured.

The quality numbers come from each run's eval.json; they compare only when every run was scored on the
same features with the same sample count and sampler settings, which ``compare_runs`` checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from genlab import rundir
from genlab.bench.flops import count_flops
from genlab.bench.timing import time_interleaved
from genlab.errors import GenlabError


def training_record(run: str | Path) -> dict[str, Any]:
    """Steps, images seen and wall-clock minutes of a run's training: from its last checkpoint, else from
    the last training record of metrics.jsonl (which is up to one logging interval short)."""
    batch = rundir.read_config(run)["train"]["batch_size"]
    folder = rundir.checkpoint_dir(run)
    if folder is not None:
        state = json.loads((folder / rundir.STATE_FILE).read_text(encoding="utf-8"))
        step, seconds = int(state["step"]), float(state["elapsed_seconds"])
    else:
        rows = [r for r in rundir.read_metrics(run) if r.get("event") == "train"]
        if not rows:
            raise GenlabError(f"{run} has no checkpoint and no training records in metrics.jsonl")
        step, seconds = rows[-1]["step"], rows[-1]["elapsed_s"]
    return {"steps": step, "minutes": seconds / 60, "images_seen": step * batch}


def describe(run: str | Path) -> dict[str, Any]:
    """What the run is: kind, backbone, space (pixels or latents, with the latent shape), parameters."""
    from genlab.diffusion.networks import LatentDiffusion, load_network, sample_shape

    config = rundir.read_config(run)
    if config.get("kind") == "gan":
        return {"kind": "gan", "backbone": config["model"]["arch"], "space": "pixels"}
    network, diffusion, _ = load_network(run)
    latent = isinstance(network, LatentDiffusion)
    denoiser = network.net if latent else network
    return {
        "kind": "diffusion",
        "backbone": diffusion.backbone,
        "space": "latents " + "x".join(map(str, sample_shape(network))) if latent else "pixels",
        "parameters": sum(p.numel() for p in denoiser.parameters()),
    }


def _pipeline(run: str | Path):
    from genlab.pipelines import load_pipeline

    return load_pipeline(run, device="cpu")


def _sampler(pipe: Any, n: int, steps: int, guidance: float) -> Callable[[], object]:
    """One call that makes ``n`` images with ``pipe`` (classes in turn, or prompt-free for text runs)."""
    from genlab.pipelines.gan import GANPipeline

    g = torch.Generator().manual_seed(0)
    if hasattr(pipe, "text_unet"):
        return lambda: pipe("", num_images=n, num_inference_steps=steps, guidance_scale=guidance, generator=g)
    labels = torch.arange(n) % pipe.num_classes if pipe.num_classes else None
    if isinstance(pipe, GANPipeline):
        return lambda: pipe(n, labels, generator=g)
    return lambda: pipe(n, labels, steps, guidance, generator=g)


def sampling_flops_per_image(pipe: Any, steps: int, guidance: float) -> float:
    """FLOPs to make one image: every denoiser call of a ``steps``-step run (two per step with guidance)
    and, for a latent model, the decoder; counted on a batch of two."""
    return count_flops(_sampler(pipe, 2, steps, guidance)) / 2


def compare_runs(
    runs: list[str], n: int = 32, steps: int = 20, guidance: float = 3.0, repeats: int = 3, log=print
) -> dict[str, Any]:
    """Describe, count, time and score each run; the first is the reference of the ratios."""
    if len(runs) < 2:
        raise GenlabError("compare at least two runs")
    rows: dict[str, dict[str, Any]] = {}
    pipes: dict[str, Any] = {}
    for run in runs:
        pipes[run] = _pipeline(run)
        row = {"run": run, **describe(run), **training_record(run)}
        row["gflops_per_image"] = sampling_flops_per_image(pipes[run], steps, guidance) / 1e9
        row["eval"] = _eval_summary(run)
        rows[run] = row
        log(f"{run}: {row['space']}, {row['backbone']}, {row['gflops_per_image']:.2f} GFLOPs per image")
    timings = time_interleaved({r: _sampler(p, n, steps, guidance) for r, p in pipes.items()}, repeats)
    for run, timing in timings.items():
        rows[run]["ms_per_image"] = 1000 * timing.median / n
    _check_comparable([rows[r]["eval"] for r in runs])
    ref = rows[runs[0]]
    for row in rows.values():
        row["sampling_speedup"] = ref["ms_per_image"] / row["ms_per_image"]
    return {
        "settings": {
            "n": n,
            "steps": steps,
            "guidance": guidance,
            "repeats": repeats,
            "threads": torch.get_num_threads(),
        },
        "runs": [rows[r] for r in runs],
    }


def _eval_summary(run: str | Path) -> dict[str, Any] | None:
    path = Path(run) / "eval.json"
    if not path.is_file():
        return None
    e = json.loads(path.read_text())
    fid = e.get("fid") or {}
    accuracy = e.get("accuracy") or {}
    return {
        "fid": fid.get("value"),
        "features": fid.get("features"),
        "n": e.get("n"),
        "steps": e.get("steps"),
        "sampler": e.get("sampler"),
        "accuracy": accuracy.get("value"),
    }


def _check_comparable(evals: list[dict[str, Any] | None]) -> None:
    scored = [e for e in evals if e is not None and e.get("fid") is not None]
    keys = {(e["features"], e["n"], e["steps"], e["sampler"]) for e in scored}
    if len(keys) > 1:
        raise GenlabError(
            "the runs' eval.json files were scored differently (features, n, steps or sampler differ); "
            "run `genlab eval RUN` on each with the same options"
        )


def format_table(result: dict[str, Any]) -> str:
    """The comparison as a Markdown table."""
    lines = [
        "| run | space | backbone | train min | steps | GFLOPs/image | ms/image | speed-up | FID "
        "| accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        e = r["eval"] or {}
        fid = f"{e['fid']:.1f}" if e.get("fid") is not None else "-"
        acc = f"{100 * e['accuracy']:.1f}%" if e.get("accuracy") is not None else "-"
        lines.append(
            f"| {r['run']} | {r['space']} | {r['backbone']} | {r['minutes']:.1f} | {r['steps']} | "
            f"{r['gflops_per_image']:.2f} | {r['ms_per_image']:.1f} | {r['sampling_speedup']:.2f}x | "
            f"{fid} | {acc} |"
        )
    return "\n".join(lines)
