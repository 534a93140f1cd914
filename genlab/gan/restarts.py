"""Best of N: train a GAN from several seeds and keep the run of lowest final FID.

A GAN's outcome depends on its seed more than most models' (a collapse early on is rarely undone), so a
cheap way to a good run is a few short ones and the best of them. The runs stay on disk beside the kept
one, and ``restarts.json`` lists every seed's FID.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from genlab import rundir
from genlab.errors import GenlabError
from genlab.train.engine import TrainResult

RESTARTS_FILE = "restarts.json"


def check_restarts(restarts: int, resume: bool = False, features: str = "auto") -> None:
    """Refuse what best-of-N cannot do, before any folder is made: fewer than one run, continuing a run
    (a resume is one run), or choosing by FID without the features that measure it."""
    if restarts < 1:
        raise GenlabError(f"`restarts` must be at least 1 (got {restarts})")
    if restarts > 1 and resume:
        raise GenlabError("`resume` continues one run: drop `restarts`")
    if restarts > 1 and features == "none":
        raise GenlabError(
            "`restarts` keeps the run of best FID: it needs `features` (auto, inception or a run)"
        )


def best_of_restarts(
    train: Callable[[int, Path], TrainResult],
    out: str | Path,
    seed: int,
    restarts: int,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train ``restarts`` runs with ``train(seed, run_dir)`` (seeds ``seed``..``seed + restarts - 1``,
    into OUT/restarts/seed-S) and move the one of lowest final FID (``metrics["fid"]``) up into ``out``.

    The other runs stay under OUT/restarts, and OUT/restarts.json lists them all with the chosen seed.
    Returns the kept run's result, its ``run_dir`` now ``out``."""
    check_restarts(restarts)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise GenlabError(f"{out} already exists and is not empty; choose another `out`")
    results = []
    for i in range(restarts):
        log(f"restart {i + 1}/{restarts}: seed {seed + i}")
        result = train(seed + i, out / "restarts" / f"seed-{seed + i}")
        if result.interrupted:
            raise GenlabError(f"stopped during restart {i + 1}; its run is in {result.run_dir}")
        fid = result.metrics.get("fid")
        if fid is None:
            raise GenlabError("the runs report no FID to choose by; check `features`")
        log(f"  seed {seed + i}: FID {fid:.2f}, classes covered {result.metrics.get('modes_covered', '?')}")
        results.append(result)
    best = min(results, key=lambda r: r.metrics["fid"])
    for entry in list(best.run_dir.iterdir()):
        os.replace(entry, out / entry.name)
    shutil.rmtree(best.run_dir)
    summary = {
        "chosen_seed": seed + results.index(best),
        "chosen_by": "lowest final FID",
        "runs": [
            {
                "seed": seed + i,
                "fid": r.metrics["fid"],
                "modes_covered": r.metrics.get("modes_covered"),
                "run_dir": str(out) if r is best else str(r.run_dir),
            }
            for i, r in enumerate(results)
        ],
    }
    rundir.atomic_write_json(out / RESTARTS_FILE, summary)
    log(
        f"kept seed {summary['chosen_seed']} (FID {best.metrics['fid']:.2f}) in {out}; "
        f"every restart: {out / RESTARTS_FILE}"
    )
    best.run_dir = out
    return best
