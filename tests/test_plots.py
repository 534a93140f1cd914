"""The diagnostics picture of a diffusion run, drawn from its run directory (genlab.metrics.plots)."""

from __future__ import annotations

import pytest

from genlab import rundir
from genlab.errors import GenlabError
from genlab.metrics import plots


def test_a_diffusion_runs_diagnostics_are_drawn_from_its_records_and_class_names(tmp_path, monkeypatch):
    rundir.write_config(tmp_path, "diffusion", model={}, class_names=["a", "b"])
    assert plots.plot_diffusion_run(tmp_path) is None  # nothing trained yet
    records = [{"event": "train", "step": s, "loss": 1.0 / s} for s in (1, 2)]
    records.append({"event": "eval", "step": 2, "val_loss": 0.4, "recognised": 0.5})
    for record in records:
        rundir.append_metrics(tmp_path, record)
    assert plots.plot_diffusion_run(tmp_path) == tmp_path / "diagnostics.png"
    assert (tmp_path / "diagnostics.png").is_file()

    seen = []
    monkeypatch.setattr(plots, "plot_diffusion_training", lambda *args: seen.append(args) or args[1])
    assert plots.plot_diffusion_run(tmp_path, tmp_path / "other.png") == tmp_path / "other.png"
    assert seen == [(records, tmp_path / "other.png", ["a", "b"])]

    rundir.write_config(tmp_path / "gan", "gan", model={})
    with pytest.raises(GenlabError, match="'gan'"):
        plots.plot_diffusion_run(tmp_path / "gan")  # not a diffusion run
