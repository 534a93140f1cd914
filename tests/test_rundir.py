"""Run directories: atomic writes, checkpoints that survive a kill, no pickles, clear errors."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from genlab import rundir
from genlab.errors import GenlabError
from genlab.nn import Classifier, ClassifierConfig
from genlab.train.optim import optimizer_state_from_safe, optimizer_state_to_safe


def weights(value: float) -> dict[str, dict[str, torch.Tensor]]:
    return {"model": {"w": torch.full((64, 64), value)}, "ema": {"w": torch.full((64, 64), value + 0.5)}}


def test_atomic_write_cut_short_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    rundir.atomic_write_json(path, {"v": 1})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the process dies after writing the temporary file, before the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        rundir.atomic_write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # the temporary file was cleaned up


def test_checkpoint_write_interrupted_midway_leaves_the_previous_one(tmp_path, monkeypatch):
    rundir.save_checkpoint(tmp_path, weights(1.0), {"step": 1})
    real_save = rundir.save_weights
    calls = []

    def dies_on_second_file(path, tensors, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_save(path, tensors, metadata)

    monkeypatch.setattr(rundir, "save_weights", dies_on_second_file)
    with pytest.raises(KeyboardInterrupt):
        rundir.save_checkpoint(tmp_path, weights(2.0), {"step": 2})
    w, state = rundir.load_checkpoint(tmp_path)
    assert state == {"step": 1}
    assert torch.equal(w["model"]["w"], torch.full((64, 64), 1.0))
    assert torch.equal(rundir.load_weights(tmp_path / "model.safetensors")["w"], torch.full((64, 64), 1.0))


def test_checkpoint_swap_cut_between_renames_falls_back_to_previous(tmp_path, monkeypatch):
    rundir.save_checkpoint(tmp_path, weights(1.0), {"step": 1})
    real_replace = os.replace

    def dies_after_moving_the_old_one_aside(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(".checkpoint.old"):
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", dies_after_moving_the_old_one_aside)
    with pytest.raises(KeyboardInterrupt):
        rundir.save_checkpoint(tmp_path, weights(2.0), {"step": 2})
    monkeypatch.setattr(os, "replace", real_replace)
    _, state = rundir.load_checkpoint(tmp_path)
    assert state == {"step": 1}
    rundir.save_checkpoint(tmp_path, weights(3.0), {"step": 3})  # and the next save tidies up
    assert rundir.load_checkpoint(tmp_path)[1] == {"step": 3}
    assert not (tmp_path / ".checkpoint.old").exists() and not (tmp_path / ".checkpoint.tmp").exists()


def test_sigkill_at_random_moments_never_corrupts_the_checkpoint(tmp_path):
    """A real process writing checkpoints in a loop, killed with SIGKILL at several moments."""
    script = textwrap.dedent(
        """
        import sys, torch
        from genlab import rundir
        step = 0
        while True:
            step += 1
            full = lambda v: {"w": torch.full((256, 256), v)}
            w = {"model": full(float(step)), "ema": full(-float(step))}
            rundir.save_checkpoint(sys.argv[1], w, {"step": step})
            print(step, flush=True)
        """
    )
    for delay in (0.3, 0.45, 0.6):
        run = tmp_path / f"run{delay}"
        proc = subprocess.Popen([sys.executable, "-c", script, str(run)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "1"  # at least one checkpoint is complete
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        w, state = rundir.load_checkpoint(run)
        step = state["step"]
        assert step >= 1
        assert torch.equal(w["model"]["w"], torch.full((256, 256), float(step)))
        assert torch.equal(w["ema"]["w"], torch.full((256, 256), -float(step)))
        published = rundir.load_weights(run / "model.safetensors")["w"][0, 0].item()
        assert published in (step, step - 1)  # the top-level copy trails the checkpoint by at most one save


def test_save_and_load_pretrained_round_trip(tmp_path):
    model = Classifier(
        ClassifierConfig(widths=(4,), hidden=8, mean=(0.1,), std=(0.3,), class_names=("a",) * 10)
    )
    model.save_pretrained(tmp_path / "run")
    loaded = Classifier.from_pretrained(tmp_path / "run")
    assert loaded.config == model.config
    x = torch.rand(3, 1, 28, 28)
    model.eval()
    assert torch.equal(loaded(x), model(x))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["kind"] == "classifier" and config["genlab_format"] == rundir.FORMAT_VERSION


def test_loading_never_unpickles(tmp_path):
    model = Classifier(ClassifierConfig(widths=(4,), hidden=8))
    model.save_pretrained(tmp_path)
    (tmp_path / "ema.safetensors").write_bytes(pickle.dumps(model.state_dict()))
    with pytest.raises(GenlabError, match="not a safetensors file"):
        Classifier.from_pretrained(tmp_path)


def test_wrong_kind_newer_format_and_missing_runs_are_clear(tmp_path):
    Classifier(ClassifierConfig(widths=(4,), hidden=8)).save_pretrained(tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    rundir.atomic_write_json(tmp_path / "run" / "config.json", {**config, "kind": "diffusion"})
    with pytest.raises(GenlabError, match="holds a 'diffusion' run, not a 'classifier' run"):
        Classifier.from_pretrained(tmp_path / "run")
    rundir.atomic_write_json(tmp_path / "run" / "config.json", {**config, "genlab_format": 99})
    with pytest.raises(GenlabError, match="format 99"):
        Classifier.from_pretrained(tmp_path / "run")
    with pytest.raises(GenlabError, match="does not exist"):
        Classifier.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(GenlabError, match="no config.json"):
        Classifier.from_pretrained(tmp_path / "plain")


def test_weights_that_do_not_fit_are_named(tmp_path):
    Classifier(ClassifierConfig(widths=(4,), hidden=8)).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["hidden"] = 16
    rundir.atomic_write_json(tmp_path / "config.json", config)
    with pytest.raises(GenlabError, match="do not fit"):
        Classifier.from_pretrained(tmp_path)


def test_optimizer_state_survives_safetensors(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = optimizer_state_to_safe(opt)
    rundir.save_weights(tmp_path / "opt.safetensors", tensors)
    meta = json.loads(json.dumps(meta))
    restored = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    restored.load_state_dict(
        optimizer_state_from_safe(rundir.load_weights(tmp_path / "opt.safetensors"), meta)
    )
    a, b = opt.state_dict(), restored.state_dict()
    assert a["param_groups"][0]["betas"] == b["param_groups"][0]["betas"] == (0.8, 0.9)
    for pid in a["state"]:
        for key, value in a["state"][pid].items():
            assert torch.equal(value, b["state"][pid][key])
