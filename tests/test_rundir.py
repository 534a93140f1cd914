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


# ------------------------------------------------------------------------- damaged or hostile run folders


def _classifier_run(path) -> dict:
    Classifier(ClassifierConfig(widths=(4,), hidden=8)).save_pretrained(path)
    return json.loads((path / "config.json").read_text())


@pytest.mark.parametrize(
    "change, fragments",
    [
        ({"model": None}, ["'model'", "JSON object", "null"]),
        ({"model": [1, 2]}, ["'model'", "JSON object"]),
        ({"data": "mnist"}, ["'data'", "JSON object"]),
        ({"class_names": "0123456789"}, ["class_names", "list of strings"]),
        ({"kind": 5}, ["'kind'", "string"]),
        ({"genlab_format": "1"}, ["genlab_format", "whole number", '"1"']),
        ({"genlab_format": True}, ["genlab_format", "whole number"]),
        ({"model": {"widths": [-4]}}, ["'model'", "`widths`", "-4"]),
        ({"model": {"widths": ["4"]}}, ["'model'", "widths[0]", "whole number", '"4"']),
        ({"model": {"widths": [4.5]}}, ["widths[0]", "whole number", "4.5"]),
        ({"model": {"widths": 4}}, ["widths", "list of whole numbers"]),
        ({"model": {"hidden": None}}, ["hidden", "whole number", "null"]),
        ({"model": {"hidden": 1e9}}, ["hidden", "whole number", "1000000000.0"]),
        ({"model": {"hidden": 10**9}}, ["`hidden`", "between 1 and 65536"]),
        ({"model": {"image_size": 0}}, ["image_size", "between 1 and"]),
        ({"model": {"dropout": 5}}, ["`dropout`", "[0, 1)"]),
        ({"model": {"dropout": float("nan")}}, ["dropout", "finite number", "NaN"]),
        ({"model": {"mean": [0.5, 0.5]}}, ["mean and std", "one value per input channel"]),
        ({"model": {"class_names": ["0", "1"]}}, ["class_names", "2 classes", "has 10"]),
        ({"model": {"depth": 3}}, ["does not know", "depth"]),
        ({"model": {"widths": [65536, 65536]}}, ["Classifier", "billion parameters"]),
    ],
)
def test_a_damaged_config_is_one_clear_error_before_anything_is_built(tmp_path, change, fragments):
    """Every section and field of config.json is checked (type, then range, then the size of the whole
    network, counted without allocating it) before a tensor is made."""
    config = _classifier_run(tmp_path)
    for key, value in change.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) and key == "model" else value
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(GenlabError) as info:
        Classifier.from_pretrained(tmp_path)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_networks_are_sized_before_they_are_built():
    """A config of 1.7e11 parameters (700 GB) is refused in a moment, from the command line as from a file."""
    from genlab.nn.pretrained import count_numbers
    from genlab.nn.unet import UNet, UNetConfig

    small = UNetConfig(image_size=8, base_channels=32, channel_mults=(1,), attention_levels=())
    built = UNet(small)
    assert count_numbers(UNet, small) == sum(t.numel() for t in [*built.parameters(), *built.buffers()])
    start = time.perf_counter()
    with pytest.raises(GenlabError, match="billion parameters"):
        UNet(UNetConfig(base_channels=65536, channel_mults=(1, 2), groups=8))
    assert time.perf_counter() - start < 5


def test_a_damaged_checkpoint_is_one_clear_error(tmp_path):
    rundir.save_checkpoint(tmp_path, weights(1.0), {"step": 1})
    (tmp_path / "checkpoint" / "state.json").write_text("[1, 2]")
    with pytest.raises(GenlabError, match="state.json is damaged"):
        rundir.load_checkpoint(tmp_path)


def test_read_metrics_skips_what_is_not_a_record(tmp_path):
    """Only objects with a string event and a whole-number step are records: every reader relies on them."""
    good = [{"event": "train", "step": 1, "loss": 0.5}, {"event": "eval", "step": 2, "acc": 0.9}]
    bad = ["[1, 2]", '"text"', "null", '{"event": "train", "step": "3"}', '{"step": 4}', '{"event": "tr']
    bad += ['{"event": "eval", "step": true}', '{"event": "eval", "step": -1}']
    lines = [json.dumps(good[0]), *bad, json.dumps(good[1])]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert rundir.read_metrics(tmp_path) == good
    rundir.truncate_metrics(tmp_path, 1)
    assert rundir.read_metrics(tmp_path) == good[:1]


def test_a_run_directory_has_one_writer_at_a_time(tmp_path):
    run = tmp_path / "run"
    with rundir.RunLock(run):
        assert (run / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(GenlabError, match=rf"being written by another process \(pid {os.getpid()}\)"):
            with rundir.RunLock(run):
                pass
    with rundir.RunLock(run):  # released: the next writer may go
        pass


def test_a_killed_writer_leaves_no_stale_lock(tmp_path):
    run = tmp_path / "run"
    script = "import sys, time; from genlab import rundir; lock = rundir.RunLock(sys.argv[1]).__enter__(); "
    script += "print('locked', flush=True); time.sleep(60)"
    proc = subprocess.Popen([sys.executable, "-c", script, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(GenlabError, match=f"pid {proc.pid}"):
            rundir.RunLock(run).__enter__()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with rundir.RunLock(run):
        pass


def test_an_unwritable_run_directory_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(GenlabError, match="cannot write the run directory"):
        rundir.RunLock(tmp_path / "file" / "run").__enter__()
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "read-only"
        locked.mkdir(mode=0o555)
        with pytest.raises(GenlabError, match="cannot write the run directory"):
            rundir.RunLock(locked).__enter__()
