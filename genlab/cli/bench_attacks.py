"""`genlab bench attacks`: genlab's APGD, APGD-T and Square against torchattacks' on one classifier."""

from __future__ import annotations

import shlex
import sys
from datetime import datetime, timezone

import click

from genlab.cli.bench import bench
from genlab.cli.common import echo


@bench.command("attacks")
@click.argument("run", type=click.Path())
@click.option("--eps", default=0.3, show_default=True, type=float, help="L-inf radius (pixel units).")
@click.option("--n", default=500, show_default=True, type=int, help="Held-out images attacked.")
@click.option("--steps", default=100, show_default=True, type=int, help="APGD iterations.")
@click.option("--targets", default=9, show_default=True, type=int, help="APGD-T's target classes.")
@click.option("--queries", default=1000, show_default=True, type=int, help="Square's queries per image.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option(
    "--out",
    default="bench/results/attacks-mnist.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Results JSON to write.",
)
def bench_attacks(run, eps, n, steps, targets, queries, seed, out) -> None:
    """Robust accuracy of a classifier run under genlab's APGD-CE, APGD-T and Square and under
    torchattacks' at the same settings, on the same held-out images (a seeded draw, as `genlab attack
    eval` makes it), with the difference in points, the seconds each took and the per-image worst case.
    Without torchattacks (`pip install --no-deps torchattacks`) only ours are measured.

    \b
    Examples:
      genlab bench attacks runs/robust-mnist --eps 0.3      # writes bench/results/attacks-mnist.json
      genlab bench attacks runs/classifier-mnist --eps 0.1 --n 200 --out /tmp/attacks.json
    """
    from genlab import rundir
    from genlab.adversarial.attacks import check_inputs
    from genlab.adversarial.evaluation import spread
    from genlab.bench.attacks import AttackBenchSettings, run_attack_bench
    from genlab.checks import check_range
    from genlab.classification.evaluate import load_classifier_run

    check_range("n", n, 1, 100_000)
    check_range("steps", steps, 1, 10_000)
    check_range("targets", targets, 1, 1000)
    check_range("queries", queries, 1, 1_000_000)
    model, val, _ = load_classifier_run(run)
    check_inputs(val.images, val.labels, eps)
    x, y = spread(val.images, val.labels, n, seed)
    result = run_attack_bench(
        model, x, y, AttackBenchSettings(eps, n, steps, targets, queries, seed), log=echo
    )
    result["run"] = str(run)
    result["command"] = shlex.join(["genlab", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else None
    result["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rundir.atomic_write_json(out, result)
    echo(f"results: {out}")
